//! The RESP listener: an accept thread hands connections to a few event loops, each serving
//! many connections on one thread; requests that may block run on a connection's helper thread.
//!
//! A loop reads whatever its connections pipelined and runs their requests in order. Data
//! commands in a row run as one transaction; one whose keys are all served here commits on
//! the loop itself ([`crate::Backend::try_local`]) and its replies wait, without a thread, until
//! [`crate::Release::poll`] says it is released (the store's [`crate::Store::on_progress`] wakes the loop).
//! Everything that may block (a key served by another shard, a retry after a conflict, SCAN,
//! WATCH, EXEC, a site that does not serve) goes to the connection's helper thread, made when
//! first needed, and the connection reads nothing more until that is done, so replies keep
//! their order and every command sees the writes of those before it. No reply leaves before
//! its transaction is released. A malformed request is answered with
//! `-ERR Protocol error: ...` and closes that connection only. [`Server::stop`] ends every
//! connection and joins every thread.

mod event_loop;
mod helper;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Poll, Waker};
use tracing::warn;

use crate::backend::Store;
use crate::conn::Shared;
use crate::resp;
use event_loop::{Loop, WAKER};

/// Settings of a RESP listener.
#[derive(Debug, Clone)]
pub struct Options {
    /// The password clients must give with AUTH or HELLO (`None`: no authentication).
    pub token: Option<Vec<u8>>,
    /// Connections served at once; more are refused.
    pub max_connections: usize,
    /// Bounds on requests.
    pub limits: resp::Limits,
    /// A name for threads and logs.
    pub name: String,
    /// Event-loop threads serving the connections (at least 1).
    pub loops: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            max_connections: 1024,
            limits: resp::Limits::default(),
            name: "redis".into(),
            loops: std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4)),
        }
    }
}

/// A running RESP listener.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    loops: Vec<(Arc<Waker>, JoinHandle<()>)>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Where the accept thread hands a connection to a loop.
struct LoopInbox {
    tx: Sender<(TcpStream, SocketAddr)>,
    waker: Arc<Waker>,
}

impl Server {
    /// Serves `store` on `listener`.
    pub fn start(
        listener: TcpListener,
        store: Arc<dyn Store>,
        opts: Options,
    ) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(opts.token.clone(), addr.port()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut loops = Vec::new();
        let mut inboxes = Vec::new();
        for i in 0..opts.loops.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = channel();
            let mut lp = Loop::new(
                poll,
                Arc::clone(&waker),
                rx,
                Arc::clone(&store),
                Arc::clone(&shared),
                &opts,
                Arc::clone(&stop),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("{}-loop-{i}", opts.name))
                .spawn(move || lp.run());
            match spawned {
                Ok(h) => loops.push((Arc::clone(&waker), h)),
                Err(e) => {
                    end_loops(&stop, loops);
                    return Err(e);
                }
            }
            inboxes.push(LoopInbox { tx, waker });
        }
        let (s2, stop2) = (Arc::clone(&shared), Arc::clone(&stop));
        let accept = std::thread::Builder::new()
            .name(format!("{}-accept", opts.name))
            .spawn(move || accept_loop(listener, inboxes, s2, opts, stop2));
        let accept = match accept {
            Ok(h) => h,
            Err(e) => {
                end_loops(&stop, loops);
                return Err(e);
            }
        };
        Ok(Server {
            addr,
            stop,
            accept: Some(accept),
            loops,
            shared,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters shared by its connections.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, ends every connection and joins every thread.
    pub fn stop(&mut self) {
        if self.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        end_loops(&self.stop, std::mem::take(&mut self.loops));
    }
}

/// Tells the loops to stop, wakes them and joins them.
fn end_loops(stop: &AtomicBool, loops: Vec<(Arc<Waker>, JoinHandle<()>)>) {
    stop.store(true, Ordering::Release);
    for (w, h) in loops {
        let _ = w.wake();
        let _ = h.join();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    loops: Vec<LoopInbox>,
    shared: Arc<Shared>,
    opts: Options,
    stop: Arc<AtomicBool>,
) {
    let mut turn = 0usize;
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!(server = %opts.name, error = %e, "accepting a redis client failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        if shared.connected.load(Ordering::Acquire) >= opts.max_connections as u64 {
            shared.rejected.fetch_add(1, Ordering::Relaxed);
            warn!(server = %opts.name, %peer, limit = opts.max_connections,
                "refusing a redis client: too many connections");
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = stream.write_all(b"-ERR max number of clients reached\r\n");
            continue;
        }
        if let Err(e) = stream.set_nonblocking(true) {
            warn!(server = %opts.name, %peer, error = %e, "cannot serve a redis client");
            continue;
        }
        let _ = stream.set_nodelay(true);
        shared.connected.fetch_add(1, Ordering::AcqRel);
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let Some(lp) = loops.get(turn % loops.len().max(1)) else {
            shared.connected.fetch_sub(1, Ordering::AcqRel);
            continue;
        };
        turn = turn.wrapping_add(1);
        if lp.tx.send((stream, peer)).is_err() {
            shared.connected.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let _ = lp.waker.wake();
    }
}
