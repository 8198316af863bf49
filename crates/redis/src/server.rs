//! The RESP listener: accepts connections up to a bound, serves each on its own thread
//! (requests answered in order, pipelines batched into one write), and stops and joins
//! every thread on [`Server::stop`].

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::{debug, warn};

use crate::backend::{Backend, Release, Store};
use crate::command::Data;
use crate::conn::{Connection, Flow, Request, Shared};
use crate::resp::{self, Parser, Value};

/// How often a connection thread wakes up to notice shutdown.
const WAKE: Duration = Duration::from_millis(200);

/// How long one write to a client may block (a client that stops reading is dropped).
const WRITE_LIMIT: Duration = Duration::from_secs(10);

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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            max_connections: 1024,
            limits: resp::Limits::default(),
            name: "redis".into(),
        }
    }
}

/// A running RESP listener.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
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
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (s2, stop2, conns2) = (Arc::clone(&shared), Arc::clone(&stop), Arc::clone(&conns));
        let accept = std::thread::Builder::new()
            .name(format!("{}-accept", opts.name))
            .spawn(move || accept_loop(listener, store, s2, opts, stop2, conns2))?;
        Ok(Server {
            addr,
            stop,
            accept: Some(accept),
            conns,
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
        for h in std::mem::take(&mut *self.conns.lock()) {
            let _ = h.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    store: Arc<dyn Store>,
    shared: Arc<Shared>,
    opts: Options,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
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
        shared.connected.fetch_add(1, Ordering::AcqRel);
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let (store2, shared2, stop2) = (Arc::clone(&store), Arc::clone(&shared), Arc::clone(&stop));
        let (limits, name) = (opts.limits, opts.name.clone());
        let h = std::thread::Builder::new()
            .name(format!("{}-{peer}", opts.name))
            .spawn(move || {
                serve(stream, peer, &*store2, &shared2, limits, &name, &stop2);
                shared2.connected.fetch_sub(1, Ordering::AcqRel);
            });
        let mut conns = conns.lock();
        conns.retain(|h| !h.is_finished());
        match h {
            Ok(h) => conns.push(h),
            Err(e) => {
                shared.connected.fetch_sub(1, Ordering::AcqRel);
                warn!(error = %e, "cannot spawn a redis client thread");
            }
        }
    }
}

/// Replies held until their transaction is released: the replies (several for pipelined
/// data commands run as one transaction), the protocol to encode them for, the release to
/// wait for.
type Held = (Vec<Value>, u8, Option<Box<dyn Release>>);

/// Most pipelined data commands one transaction runs.
const GROUP: usize = 64;

/// Runs the gathered data commands (`args` and their parsed form) as one transaction, or
/// one by one if that fails, and holds their replies.
fn run_group(
    conn: &mut Connection,
    group: &mut Vec<Data>,
    shared: &Shared,
    backend: &mut dyn Backend,
    replies: &mut Vec<Held>,
) {
    if group.is_empty() {
        return;
    }
    let ds: Vec<&Data> = group.iter().collect();
    if ds.len() > 1
        && let Ok(values) = conn.group(&ds, shared, backend)
    {
        replies.push((values, conn.proto(), conn.take_release()));
        group.clear();
        return;
    }
    for d in group.drain(..) {
        let (reply, _) = conn.handle_request(Request::Data(d), shared, backend);
        replies.push((vec![reply], conn.proto(), conn.take_release()));
    }
}

/// One connection until the client leaves, QUIT, a malformed request, or shutdown.
fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    store: &dyn Store,
    shared: &Shared,
    limits: resp::Limits,
    name: &str,
    stop: &AtomicBool,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(WAKE));
    let _ = stream.set_write_timeout(Some(WRITE_LIMIT));
    let mut backend = store.connect();
    let mut conn = Connection::new(shared);
    let mut parser = Parser::new(limits);
    let mut input = Vec::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut replies: Vec<Held> = Vec::new();
    loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                debug!(server = %name, %peer, "redis client disconnected");
                return;
            }
            Ok(n) => input.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                debug!(server = %name, %peer, error = %e, "redis client connection ended");
                return;
            }
        }
        // Run every complete request received, in order; their releases overlap.
        // Consecutive data commands run as one transaction (up to GROUP of them).
        let mut close = false;
        let mut group: Vec<Data> = Vec::new();
        let mut parsed = 0;
        loop {
            match parser.next_at(&input, &mut parsed) {
                Ok(Some(args)) => {
                    let other = match conn.request(args) {
                        Request::Data(d) => {
                            group.push(d);
                            if group.len() >= GROUP {
                                run_group(
                                    &mut conn,
                                    &mut group,
                                    shared,
                                    &mut *backend,
                                    &mut replies,
                                );
                            }
                            continue;
                        }
                        other => other,
                    };
                    run_group(&mut conn, &mut group, shared, &mut *backend, &mut replies);
                    let (reply, flow) = conn.handle_request(other, shared, &mut *backend);
                    replies.push((vec![reply], conn.proto(), conn.take_release()));
                    if flow == Flow::Close {
                        close = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    run_group(&mut conn, &mut group, shared, &mut *backend, &mut replies);
                    shared.malformed.fetch_add(1, Ordering::Relaxed);
                    warn!(server = %name, %peer, error = %e, "closing redis client connection: malformed request");
                    replies.push((vec![Value::err(format!("ERR {e}"))], conn.proto(), None));
                    close = true;
                    break;
                }
            }
        }
        input.drain(..parsed);
        run_group(&mut conn, &mut group, shared, &mut *backend, &mut replies);
        // Each reply once its transaction is released (or the error saying why it is not,
        // for every reply of that transaction).
        for (values, proto, release) in replies.drain(..) {
            match release.map(|r| r.wait()) {
                Some(Err(f)) => {
                    let e = Value::err(f.reply_text());
                    for _ in &values {
                        e.encode(proto, &mut out);
                    }
                }
                _ => {
                    for v in values {
                        v.encode(proto, &mut out);
                    }
                }
            }
        }
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out) {
                debug!(server = %name, %peer, error = %e, "cannot answer a redis client");
                return;
            }
            out.clear();
        }
        if close {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            return;
        }
    }
}
