//! The metrics endpoint: Prometheus text over a minimal HTTP/1.1 server (`GET /metrics`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mako_server::Site;
use tracing::debug;

use crate::acceptor::Acceptor;
use crate::figures::Counters;

/// A running metrics endpoint.
pub(crate) struct Endpoint {
    accept: Acceptor,
}

impl Endpoint {
    /// Serves `counters` and `site`'s state on `listener`.
    pub(crate) fn start(
        listener: TcpListener,
        site: Arc<Site>,
        counters: Arc<Counters>,
    ) -> std::io::Result<Endpoint> {
        let name = format!("metrics-{}", site.node());
        let accept = Acceptor::start(listener, name, move |listener, stop| {
            serve(listener, &site, &counters, &stop)
        })?;
        Ok(Endpoint { accept })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.accept.addr()
    }

    /// Stops and joins it.
    pub(crate) fn stop(&mut self) {
        self.accept.stop();
    }
}

/// Accepts scrapes, answering each on its own thread (at most [`MAX_SCRAPES`] at once, each
/// within [`REQUEST_LIMIT`]) so a slow client holds up no other; joins them before returning.
fn serve(listener: TcpListener, site: &Arc<Site>, counters: &Arc<Counters>, stop: &AtomicBool) {
    let mut scrapes: Vec<JoinHandle<()>> = Vec::new();
    for conn in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let Ok(conn) = conn else { continue };
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut scrapes)
            .into_iter()
            .partition(|h| h.is_finished());
        scrapes = running;
        for h in done {
            let _ = h.join();
        }
        if scrapes.len() >= MAX_SCRAPES {
            debug!("refusing a metrics request: too many in progress");
            continue; // dropping it closes it
        }
        let (site, counters) = (Arc::clone(site), Arc::clone(counters));
        let h = std::thread::Builder::new()
            .name("metrics-scrape".into())
            .spawn(move || {
                if let Err(e) = answer(conn, &site, &counters) {
                    debug!(error = %e, "metrics request failed");
                }
            });
        match h {
            Ok(h) => scrapes.push(h),
            Err(e) => debug!(error = %e, "cannot spawn a metrics thread"),
        }
    }
    for h in scrapes {
        let _ = h.join();
    }
}

/// Scrapes answered at once.
const MAX_SCRAPES: usize = 4;

/// How long a client may take to send its request (all of it, however the bytes come).
const REQUEST_LIMIT: Duration = Duration::from_secs(2);

/// Reads from a connection until a deadline, whatever pace the bytes come at.
struct Until<'a> {
    conn: &'a TcpStream,
    deadline: Instant,
}

impl Read for Until<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "metrics request not received in time",
            ));
        }
        self.conn.set_read_timeout(Some(left))?;
        let mut conn = self.conn;
        conn.read(buf)
    }
}

/// Answers one request: the metrics for `GET /metrics`, 404 otherwise, 400 for garbage.
fn answer(mut conn: TcpStream, site: &Site, counters: &Counters) -> std::io::Result<()> {
    conn.set_write_timeout(Some(REQUEST_LIMIT))?;
    let until = Until {
        conn: &conn,
        deadline: Instant::now() + REQUEST_LIMIT,
    };
    let mut reader = BufReader::new(until.take(16 * 1024));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Skip the headers (bounded by `take` and the deadline).
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    drop(reader);
    let mut parts = line.split_whitespace();
    let (status, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", counters.render(site)),
        (Some(_), Some(_)) => ("404 Not Found", "not found; try /metrics\n".to_string()),
        _ => ("400 Bad Request", "bad request\n".to_string()),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}
