//! The client listener: accepts connections (up to a limit), runs the handshake, and gives
//! each authenticated connection a thread with its [`Session`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mako_proto::{
    Auth, AuthResult, CLIENT_LABEL, FrameError, FrameReader, Hello, MAGIC, MAX_HELLO, SERVER_LABEL,
    VERSION, Welcome, decode, write_frame,
};
use mako_transport::tls::TlsSettings;
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::acceptor::Acceptor;
use crate::session::{Session, Shared, log_end};

/// How often a connection thread wakes up to expire idle transactions and notice shutdown.
const WAKE: Duration = Duration::from_millis(200);

/// How long a client may take to complete the handshake.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// How long one write to a client may block (a client that stops reading is dropped, so
/// its thread ends and shutdown can join it).
const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// A running client listener.
pub(crate) struct ClientServer {
    accept: Acceptor,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl ClientServer {
    /// Listens on `listen` and serves clients of `shared.site`.
    pub(crate) fn start(
        listener: TcpListener,
        shared: Arc<Shared>,
        token: Option<Arc<mako_transport::auth::Secret>>,
        tls: Option<TlsSettings>,
    ) -> std::io::Result<ClientServer> {
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let conns2 = Arc::clone(&conns);
        let accept = Acceptor::start(
            listener,
            format!("client-accept-{}", shared.site.node()),
            move |listener, stop| accept_loop(listener, shared, token, tls, stop, conns2),
        )?;
        Ok(ClientServer { accept, conns })
    }

    /// The address clients connect to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.accept.addr()
    }

    /// Stops accepting, ends every connection (open transactions abort) and joins threads.
    pub(crate) fn stop(&mut self) {
        if !self.accept.stop() {
            return;
        }
        for h in std::mem::take(&mut *self.conns.lock()) {
            let _ = h.join();
        }
    }
}

impl Drop for ClientServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    token: Option<Arc<mako_transport::auth::Secret>>,
    tls: Option<TlsSettings>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let live = Arc::new(AtomicUsize::new(0));
    let worker = AtomicU32::new(0);
    let workers = shared.workers.max(1);
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!(site = %shared.name, error = %e, "accepting a client failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        if live.load(Ordering::Acquire) >= shared.limits.max_connections {
            warn!(site = %shared.name, %peer, limit = shared.limits.max_connections,
                "refusing a client: too many connections");
            refuse(stream, shared.limits.max_connections);
            continue;
        }
        live.fetch_add(1, Ordering::AcqRel);
        let w = worker.fetch_add(1, Ordering::Relaxed) % workers;
        let tls = tls.as_ref().map(|t| Arc::clone(&t.server));
        let (shared2, token2, stop2, live2) = (
            Arc::clone(&shared),
            token.clone(),
            Arc::clone(&stop),
            Arc::clone(&live),
        );
        let h = std::thread::Builder::new()
            .name(format!("client-{peer}"))
            .spawn(move || {
                serve(stream, peer, &shared2, token2.as_deref(), tls, w, &stop2);
                live2.fetch_sub(1, Ordering::AcqRel);
            });
        let mut conns = conns.lock();
        conns.retain(|h| !h.is_finished());
        match h {
            Ok(h) => conns.push(h),
            Err(e) => {
                // The connection went with the closure; it no longer counts.
                live.fetch_sub(1, Ordering::AcqRel);
                warn!(error = %e, "cannot spawn a client thread");
            }
        }
    }
}

/// Tells a client over the connection limit why it is refused (a `Welcome` it reads after its
/// hello), then closes.
fn refuse(mut stream: TcpStream, limit: usize) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    // Read the hello first: closing with it unread would reset the connection and lose the
    // answer.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut hello = [0u8; MAX_HELLO];
    let _ = std::io::Read::read(&mut stream, &mut hello);
    let welcome = Welcome {
        version: VERSION,
        refused: Some(format!(
            "too many client connections (the server's limit is {limit})"
        )),
        site: String::new(),
        node: 0,
        shard: 0,
        nonce: [0; 32],
        auth_required: false,
        proof: None,
    };
    let _ = write_frame(&mut stream, &welcome);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// One connection from handshake to close.
fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    token: Option<&mako_transport::auth::Secret>,
    tls: Option<Arc<rustls::ServerConfig>>,
    worker: u32,
    stop: &AtomicBool,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(WAKE));
    let _ = stream.set_write_timeout(Some(WRITE_LIMIT));
    let r = match tls {
        None => converse(stream, shared, token, worker, stop),
        Some(cfg) => match rustls::ServerConnection::new(cfg) {
            Ok(conn) => converse(
                rustls::StreamOwned::new(conn, stream),
                shared,
                token,
                worker,
                stop,
            ),
            Err(e) => {
                warn!(site = %shared.name, %peer, error = %e, "cannot start TLS");
                return;
            }
        },
    };
    log_end(&shared.name, peer, &r);
}

/// The handshake, then the session, over a plain or TLS stream.
fn converse<S: Read + Write>(
    mut stream: S,
    shared: &Shared,
    token: Option<&mako_transport::auth::Secret>,
    worker: u32,
    stop: &AtomicBool,
) -> Result<(), FrameError> {
    let mut reader = FrameReader::new(MAX_HELLO);
    let stopping = || stop.load(Ordering::Acquire);
    let ok = handshake(&mut stream, &mut reader, shared, token, &stopping)?;
    if !ok {
        return Ok(());
    }
    Session::new(shared, worker).run(&mut stream, &mut reader, &stopping)
}

/// Runs the handshake; `Ok(false)` when the client was refused (and told why).
fn handshake<S: Read + Write>(
    stream: &mut S,
    reader: &mut FrameReader,
    shared: &Shared,
    token: Option<&mako_transport::auth::Secret>,
    stopping: &dyn Fn() -> bool,
) -> Result<bool, FrameError> {
    use mako_transport::auth;
    let deadline = Instant::now() + HANDSHAKE;
    let frame = next_frame(stream, reader, stopping, deadline)?;
    let hello: Hello = decode(&frame)?;
    let nonce = auth::nonce();
    let site = &shared.site;
    let mut welcome = Welcome {
        version: VERSION,
        refused: None,
        site: shared.name.clone(),
        node: site.node(),
        shard: site.shard_id(),
        nonce,
        auth_required: token.is_some(),
        proof: token.map(|t| auth::prove(t, SERVER_LABEL, &hello.nonce, &nonce, &[])),
    };
    if hello.magic != MAGIC || hello.version != VERSION {
        let why = format!(
            "unsupported protocol (magic {:?}, version {}; this server speaks version {VERSION})",
            hello.magic, hello.version
        );
        warn!(site = %shared.name, "refusing a client: {why}");
        welcome.refused = Some(why);
        welcome.proof = None;
        write_frame(stream, &welcome)?;
        return Ok(false);
    }
    write_frame(stream, &welcome)?;
    let Some(token) = token else {
        return Ok(true);
    };
    let frame = next_frame(stream, reader, stopping, deadline)?;
    let a: Auth = decode(&frame)?;
    if auth::verify(token, CLIENT_LABEL, &nonce, &hello.nonce, &[], &a.proof) {
        write_frame(stream, &AuthResult::Ok)?;
        info!(site = %shared.name, "client authenticated");
        Ok(true)
    } else {
        warn!(site = %shared.name, "closing client connection: authentication failed");
        write_frame(stream, &AuthResult::Refused("authentication failed".into()))?;
        Ok(false)
    }
}

/// The next frame, before `deadline` (a handshake must not stall, however the bytes come).
fn next_frame<S: Read>(
    stream: &mut S,
    reader: &mut FrameReader,
    stopping: &dyn Fn() -> bool,
    deadline: Instant,
) -> Result<Vec<u8>, FrameError> {
    while !stopping() && Instant::now() < deadline {
        if let Some(f) = reader.poll(stream)? {
            return Ok(f);
        }
    }
    Err(FrameError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no handshake in time",
    )))
}
