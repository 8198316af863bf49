//! TCP transport: one connection per replica pair, carrying every group in both directions.
//!
//! Each transport owns a small tokio runtime. For every peer there is a bounded queue
//! (filled by [`Transport::send`] without blocking) and one task that owns the link to
//! that peer: the node with the lower id dials, the higher one accepts. Both sides open
//! with a hello frame naming themselves and the node they expect, then exchange envelope
//! frames (see the private `wire` module). The writer drains the whole queue at once and
//! writes the frames with a single flush; the reader offers each envelope to the consumer's
//! receiver ([`Transport::set_receive`]), if set, and pushes what it leaves into the inbox.
//!
//! The inbox is a bounded crossbeam channel ([`TcpConfig::inbox_capacity`]). When it is
//! full, the reader that holds the next envelope hands it to a blocking-pool task that
//! waits for room (a `select!` on the send and on shutdown, no polling) and stops reading
//! its socket until the envelope is in, so TCP flow control pushes back on the sender,
//! whose per-peer queue then fills and its `send` returns [`SendError::Full`]. Nothing
//! received is dropped while the inbox has a receiver; envelopes dropped because it has
//! none (or at shutdown) are counted in [`TcpStats::inbound_dropped`]. Per peer, order
//! is kept across reconnections: a new link's reader first waits for the old one's
//! pending envelope.
//!
//! Until the hello is verified a connection accepts no frame longer than a hello, and the
//! decoder never reserves the length a prefix claims (see the private `wire` module).
//! A malformed frame closes its connection with one `tracing` warning; the dialer then
//! reconnects with exponential backoff. No lock is ever held across an `.await`.
//!
//! # Authentication and TLS
//!
//! With [`TcpConfig::tls`] set, every connection is wrapped in mutual TLS (see
//! [`crate::tls`]) before the hello; a failed TLS handshake closes it with one warning
//! and counts in [`TcpStats::tls_failures`].
//!
//! With [`TcpConfig::secret`] set, the hello is a challenge-response (the protocol of
//! [`crate::auth`]); the secret never goes on the wire:
//!
//! 1. dialer → acceptor: hello(dialer id, acceptor id, mode 1, nonce `n_D`);
//! 2. acceptor → dialer: hello(acceptor id, dialer id, mode 1, nonce `n_A`,
//!    proof `prove(secret, "mako/peer/acceptor", n_D, n_A, T)`);
//! 3. the dialer verifies it, then sends a proof frame with
//!    `prove(secret, "mako/peer/dialer", n_A, n_D, T)`, which the acceptor verifies;
//!
//! where the transcript `T` is `b"mako peer hello v2"`, the dialer's id and the
//! acceptor's id (u64 LE each): it names the hello version and both nodes. Each side proves
//! over the other's fresh nonce, so a recorded hello and proof replayed on a new
//! connection fail; the role labels differ, so a proof cannot be reflected. Only after
//! both checks does a connection accept frames longer than a hello. A check that fails,
//! a peer that closes instead of proving, or a mode mismatch (one side has a secret, the
//! other has none) closes the connection with one warning "authentication failed"
//! naming the address, counted in [`TcpStats::auth_failures`]. The acceptor answers a
//! mismatched hello with its own (without a proof) before closing, so both ends can
//! tell. Without a secret (tests, in-process clusters) both sides send mode 0 and no
//! proofs. A hello of another protocol version is refused with a warning naming both
//! versions.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures::{SinkExt, StreamExt};
use parking_lot::{Mutex, RwLock};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::auth::{self, Secret};
use crate::stream::{self, ReadSide, WriteSide};
use crate::tls::TlsSettings;
use crate::wire::{self, EnvelopeEncoder, FrameDecoder, Hello};
use crate::{Envelope, NodeId, Receive, SendError, Transport};

/// Bytes buffered by a connection's writer before it writes them out mid-batch.
const WRITE_BUFFER: usize = 512 * 1024;
/// How long [`TcpTransport::shutdown`] waits for tasks to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Role label of the acceptor's proof.
const LABEL_ACCEPTOR: &[u8] = b"mako/peer/acceptor";
/// Role label of the dialer's proof.
const LABEL_DIALER: &[u8] = b"mako/peer/dialer";

/// The authentication transcript of a link: hello version and both node ids.
fn transcript(dialer: NodeId, acceptor: NodeId) -> Vec<u8> {
    let mut t = b"mako peer hello v".to_vec();
    t.push(wire::HELLO_VERSION);
    t.extend_from_slice(&dialer.to_le_bytes());
    t.extend_from_slice(&acceptor.to_le_bytes());
    t
}

/// Tuning and security of a [`TcpTransport`].
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Envelopes queued per peer before `send` returns [`SendError::Full`].
    pub queue_capacity: usize,
    /// Envelopes the inbox holds; when it is full, connections stop reading their sockets.
    pub inbox_capacity: usize,
    /// First reconnection delay.
    pub reconnect_min: Duration,
    /// Largest reconnection delay (the delay doubles after every failed attempt).
    pub reconnect_max: Duration,
    /// Largest frame (header + payload) sent or accepted; bigger incoming frames close the connection.
    pub max_frame_bytes: usize,
    /// Limit on establishing a connection, hello exchange included.
    pub connect_timeout: Duration,
    /// Worker threads of the transport's own tokio runtime.
    pub worker_threads: usize,
    /// Cluster secret every peer must prove knowledge of in the hello; `None` (the
    /// default): no authentication, for tests and in-process clusters.
    pub secret: Option<Arc<Secret>>,
    /// Mutual TLS around every peer connection; `None` (the default): plain TCP.
    pub tls: Option<TlsSettings>,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            queue_capacity: 4096,
            inbox_capacity: crate::DEFAULT_INBOX_CAPACITY,
            reconnect_min: Duration::from_millis(10),
            reconnect_max: Duration::from_secs(1),
            max_frame_bytes: 64 << 20,
            connect_timeout: Duration::from_secs(2),
            worker_threads: 1,
            secret: None,
            tls: None,
        }
    }
}

/// Counters of a [`TcpTransport`] since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Times a connection found the inbox full and stopped reading its socket until there was room.
    pub inbox_full_waits: u64,
    /// Received envelopes discarded because the inbox was closed (its receiver dropped, or shutdown).
    pub inbound_dropped: u64,
    /// Queued envelopes dropped because they exceed `max_frame_bytes`.
    pub oversized_dropped: u64,
    /// Connections closed because the peer failed authentication (wrong or missing secret).
    pub auth_failures: u64,
    /// Connections closed because the TLS handshake failed (e.g. a certificate from another CA).
    pub tls_failures: u64,
}

/// Bounded FIFO of envelopes waiting for a peer's writer.
struct PeerQueue {
    q: Mutex<VecDeque<Envelope>>,
    cap: usize,
    /// Signalled on every push; `notify_one` keeps a permit, so no wake-up is lost.
    ready: Notify,
}

impl PeerQueue {
    fn push(&self, env: Envelope) -> Result<(), SendError> {
        {
            let mut q = self.q.lock();
            if q.len() >= self.cap {
                return Err(SendError::Full);
            }
            q.push_back(env);
        }
        self.ready.notify_one();
        Ok(())
    }

    fn push_many(&self, envs: Vec<Envelope>, errors: &mut Vec<SendError>) {
        {
            let mut q = self.q.lock();
            for env in envs {
                if q.len() >= self.cap {
                    errors.push(SendError::Full);
                } else {
                    q.push_back(env);
                }
            }
        }
        self.ready.notify_one();
    }

    /// Waits until the queue is non-empty, then moves all of it into `out` (which is empty).
    async fn take_all(&self, out: &mut VecDeque<Envelope>) {
        loop {
            {
                let mut q = self.q.lock();
                if !q.is_empty() {
                    std::mem::swap(&mut *q, out);
                    return;
                }
            }
            self.ready.notified().await;
        }
    }
}

/// An established, hello-checked connection to one peer.
struct Link {
    reader: FramedRead<ReadSide, FrameDecoder>,
    writer: FramedWrite<WriteSide, EnvelopeEncoder>,
    addr: SocketAddr,
}

/// Why a connection was closed during its handshake.
#[derive(Debug)]
enum HandshakeError {
    /// The socket failed or closed (debug log only).
    Io(io::Error),
    /// A frame did not follow the protocol (one warning).
    Malformed(String),
    /// The hello named other nodes than expected (one warning).
    Unexpected(String),
    /// The hello came from a node that is not a peer (debug log only).
    NotPeer(NodeId),
    /// The TLS handshake failed (one warning, counted).
    Tls(io::Error),
    /// The peer failed authentication (one warning, counted).
    Auth(&'static str),
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        if stream::is_tls_error(&e) {
            HandshakeError::Tls(e)
        } else if e.kind() == io::ErrorKind::InvalidData {
            HandshakeError::Malformed(e.to_string())
        } else {
            HandshakeError::Io(e)
        }
    }
}

impl From<wire::WireError> for HandshakeError {
    fn from(e: wire::WireError) -> Self {
        HandshakeError::Malformed(e.to_string())
    }
}

struct Peer {
    id: NodeId,
    queue: PeerQueue,
    /// Where to dial (used when the local id is the lower one).
    addr: watch::Sender<Option<SocketAddr>>,
    /// Accepted connections from this peer (used when the local id is the higher one).
    accepted: mpsc::Sender<Link>,
}

/// Live counters behind [`TcpStats`].
#[derive(Default)]
struct Counters {
    inbox_full_waits: AtomicU64,
    inbound_dropped: AtomicU64,
    oversized_dropped: AtomicU64,
    auth_failures: AtomicU64,
    tls_failures: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct Shared {
    local: NodeId,
    cfg: TcpConfig,
    peers: RwLock<HashMap<NodeId, Arc<Peer>>>,
    inbox: Mutex<Option<Sender<Envelope>>>,
    /// What the consumer takes before the inbox ([`Transport::set_receive`]).
    receive: RwLock<Option<Receive>>,
    /// Dropped at shutdown, which releases every task waiting for inbox room.
    release: Mutex<Option<Sender<()>>>,
    release_rx: Receiver<()>,
    counters: Arc<Counters>,
    closed: AtomicBool,
    cancel: CancellationToken,
    /// Bumped by `drop_connections`; every live link closes when it changes.
    drops: watch::Sender<u64>,
    tracker: TaskTracker,
}

impl Shared {
    /// Offers `env` to the consumer's receiver, if one is set; what it does not take goes
    /// on to the inbox.
    fn offer(&self, env: Envelope) -> Option<Envelope> {
        let receive = self.receive.read().clone();
        match receive {
            Some(r) => r(env),
            None => Some(env),
        }
    }
}

/// Replica transport over TCP; implements [`Transport`]. Shut down on drop.
pub struct TcpTransport {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    handle: Handle,
    runtime: Mutex<Option<Runtime>>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("local", &self.shared.local)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl TcpTransport {
    /// Binds `listen` (use `127.0.0.1:0` in tests) and connects to `peers`; returns the
    /// transport and its inbox, which holds at most [`TcpConfig::inbox_capacity`]
    /// envelopes. The bound address is [`TcpTransport::local_addr`].
    pub fn start(
        local: NodeId,
        listen: SocketAddr,
        peers: HashMap<NodeId, SocketAddr>,
        cfg: TcpConfig,
    ) -> io::Result<(TcpTransport, Receiver<Envelope>)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.worker_threads.max(1))
            .thread_name(format!("mako-tcp-{local}"))
            .enable_all()
            .build()?;
        let listener = {
            let _ctx = runtime.enter();
            let socket = if listen.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.bind(listen)?;
            socket.listen(1024)?
        };
        let local_addr = listener.local_addr()?;
        let (tx, rx) = crossbeam_channel::bounded(cfg.inbox_capacity.max(1));
        let (release, release_rx) = crossbeam_channel::bounded(0);
        let shared = Arc::new(Shared {
            local,
            cfg,
            peers: RwLock::new(HashMap::new()),
            inbox: Mutex::new(Some(tx)),
            receive: RwLock::new(None),
            release: Mutex::new(Some(release)),
            release_rx,
            counters: Arc::default(),
            closed: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            drops: watch::Sender::new(0),
            tracker: TaskTracker::new(),
        });
        let handle = runtime.handle().clone();
        shared
            .tracker
            .spawn_on(accept_loop(shared.clone(), listener), &handle);
        let transport = TcpTransport {
            shared,
            local_addr,
            handle,
            runtime: Mutex::new(Some(runtime)),
        };
        for (id, addr) in peers {
            transport.set_peer_addr(id, addr);
        }
        Ok((transport, rx))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Adds peer `id` or changes its address (a live link to it is re-dialled).
    pub fn set_peer_addr(&self, id: NodeId, addr: SocketAddr) {
        if id == self.shared.local {
            return;
        }
        let mut peers = self.shared.peers.write();
        if self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        if let Some(peer) = peers.get(&id) {
            peer.addr.send_if_modified(|a| {
                let changed = *a != Some(addr);
                *a = Some(addr);
                changed
            });
            return;
        }
        let (addr_tx, addr_rx) = watch::channel(Some(addr));
        let (acc_tx, acc_rx) = mpsc::channel(2);
        let peer = Arc::new(Peer {
            id,
            queue: PeerQueue {
                q: Mutex::new(VecDeque::new()),
                cap: self.shared.cfg.queue_capacity,
                ready: Notify::new(),
            },
            addr: addr_tx,
            accepted: acc_tx,
        });
        peers.insert(id, peer.clone());
        drop(peers);
        let task = peer_task(self.shared.clone(), peer, addr_rx, acc_rx);
        self.shared.tracker.spawn_on(task, &self.handle);
    }

    /// Message counters.
    pub fn stats(&self) -> TcpStats {
        let c = &self.shared.counters;
        TcpStats {
            inbox_full_waits: c.inbox_full_waits.load(Ordering::Relaxed),
            inbound_dropped: c.inbound_dropped.load(Ordering::Relaxed),
            oversized_dropped: c.oversized_dropped.load(Ordering::Relaxed),
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
            tls_failures: c.tls_failures.load(Ordering::Relaxed),
        }
    }

    /// Closes every connection (tests use it to simulate a broken link); they come back
    /// with the usual reconnection backoff.
    pub fn drop_connections(&self) {
        self.shared.drops.send_modify(|g| *g += 1);
    }

    /// Stops the runtime and joins every task and thread; idempotent, also run on drop.
    /// Afterwards sends fail with [`SendError::Closed`] and the inbox disconnects.
    pub fn shutdown(&self) {
        let Some(runtime) = self.runtime.lock().take() else {
            return;
        };
        {
            let _peers = self.shared.peers.write();
            self.shared.closed.store(true, Ordering::Release);
        }
        self.shared.cancel.cancel();
        self.shared.release.lock().take();
        self.shared.tracker.close();
        let tracker = self.shared.tracker.clone();
        let join = move || {
            runtime.block_on(async {
                if tokio::time::timeout(SHUTDOWN_WAIT, tracker.wait())
                    .await
                    .is_err()
                {
                    warn!("transport tasks did not stop within {SHUTDOWN_WAIT:?}");
                }
            });
            runtime.shutdown_timeout(SHUTDOWN_WAIT);
        };
        if Handle::try_current().is_ok() {
            // Blocking on (or dropping) a runtime is not allowed inside another one.
            let _ = std::thread::spawn(join).join();
        } else {
            join();
        }
        self.shared.peers.write().clear();
        self.shared.inbox.lock().take();
        self.shared.receive.write().take();
    }

    /// A send to this node itself goes straight to the inbox; a full inbox is [`SendError::Full`].
    fn deliver_local(&self, msg: Envelope) -> Result<(), SendError> {
        let Some(msg) = self.shared.offer(msg) else {
            return Ok(());
        };
        match self.shared.inbox.lock().as_ref() {
            Some(tx) => tx.try_send(msg).map_err(|e| match e {
                TrySendError::Full(_) => SendError::Full,
                TrySendError::Disconnected(_) => SendError::Closed,
            }),
            None => Err(SendError::Closed),
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Transport for TcpTransport {
    fn local_id(&self) -> NodeId {
        self.shared.local
    }

    fn set_receive(&self, receive: Option<Receive>) {
        if self.shared.closed.load(Ordering::Acquire) && receive.is_some() {
            return;
        }
        *self.shared.receive.write() = receive;
    }

    fn send(&self, mut msg: Envelope) -> Result<(), SendError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        msg.from = self.shared.local;
        if msg.to == self.shared.local {
            return self.deliver_local(msg);
        }
        let peers = self.shared.peers.read();
        match peers.get(&msg.to) {
            Some(peer) => peer.queue.push(msg),
            None => Err(SendError::UnknownPeer(msg.to)),
        }
    }

    fn send_batch(&self, msgs: Vec<Envelope>) -> Vec<SendError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return vec![SendError::Closed; msgs.len()];
        }
        let local = self.shared.local;
        let mut errors = Vec::new();
        // Group per destination, keeping each destination's order.
        let mut groups: Vec<(NodeId, Vec<Envelope>)> = Vec::new();
        for mut msg in msgs {
            msg.from = local;
            if msg.to == local {
                if let Err(e) = self.deliver_local(msg) {
                    errors.push(e);
                }
                continue;
            }
            match groups.iter_mut().find(|(to, _)| *to == msg.to) {
                Some((_, v)) => v.push(msg),
                None => groups.push((msg.to, vec![msg])),
            }
        }
        let peers = self.shared.peers.read();
        for (to, envs) in groups {
            match peers.get(&to) {
                Some(peer) => peer.queue.push_many(envs, &mut errors),
                None => errors.extend(envs.iter().map(|_| SendError::UnknownPeer(to))),
            }
        }
        errors
    }
}

/// Accepts connections and hands each to a hello-checking task.
async fn accept_loop(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            res = listener.accept() => match res {
                Ok((stream, addr)) => {
                    shared.tracker.spawn(accept_one(shared.clone(), stream, addr));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off briefly instead of spinning.
                    debug!(local = shared.local, error = %e, "accept failed");
                    tokio::time::sleep(shared.cfg.reconnect_min).await;
                }
            },
        }
    }
}

/// Checks an inbound connection's TLS and hello, answers it, and passes the link to the peer's task.
async fn accept_one(shared: Arc<Shared>, stream: TcpStream, addr: SocketAddr) {
    let (local, cfg) = (shared.local, &shared.cfg);
    let _ = stream.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
    let late = || debug!(local, %addr, "no hello in time; closing connection");
    let opened = async {
        match &cfg.tls {
            Some(tls) => stream::tls_accept(tls, stream).await.map_err(tls_error),
            None => Ok(stream::plain(stream)),
        }
    };
    let res = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        r = tokio::time::timeout_at(deadline, opened) => r,
    };
    let (read, mut write) = match res {
        Ok(Ok(halves)) => halves,
        Ok(Err(e)) => return report_handshake(&shared, None, addr, e),
        Err(_) => return late(),
    };
    let mut reader = FramedRead::new(read, FrameDecoder::before_hello());
    let res = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        r = tokio::time::timeout_at(deadline, accept_hello(&shared, &mut reader, &mut write)) => r,
    };
    // Reported while the connection is still open: it closes after the log line.
    let peer = match res {
        Ok(Ok(peer)) => peer,
        Ok(Err(e)) => return report_handshake(&shared, None, addr, e),
        Err(_) => return late(),
    };
    let link = into_link(cfg, reader, write, addr);
    tokio::select! {
        _ = shared.cancel.cancelled() => {}
        _ = peer.accepted.send(link) => {}
    }
}

/// Classifies a failed TLS handshake: a connection closed early is not a TLS failure.
fn tls_error(e: io::Error) -> HandshakeError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => HandshakeError::Io(e),
        _ => HandshakeError::Tls(e),
    }
}

/// Reads the next handshake frame; the end of the stream is an I/O error.
async fn next_frame(
    reader: &mut FramedRead<ReadSide, FrameDecoder>,
) -> Result<bytes::BytesMut, HandshakeError> {
    match reader.next().await {
        Some(Ok(frame)) => Ok(frame),
        Some(Err(e)) => Err(e.into()),
        None => Err(HandshakeError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed during hello",
        ))),
    }
}

/// Writes one handshake frame.
async fn write_frame(write: &mut WriteSide, frame: &[u8]) -> io::Result<()> {
    write.write_all(frame).await?;
    write.flush().await
}

/// Makes a verified connection into a link that accepts full-size frames.
fn into_link(
    cfg: &TcpConfig,
    mut reader: FramedRead<ReadSide, FrameDecoder>,
    write: WriteSide,
    addr: SocketAddr,
) -> Link {
    reader.decoder_mut().set_max(cfg.max_frame_bytes);
    let mut writer = FramedWrite::new(
        write,
        EnvelopeEncoder {
            max_frame: cfg.max_frame_bytes,
        },
    );
    writer.set_backpressure_boundary(WRITE_BUFFER);
    Link {
        reader,
        writer,
        addr,
    }
}

/// The acceptor's side of the handshake (see the module docs).
async fn accept_hello(
    shared: &Shared,
    reader: &mut FramedRead<ReadSide, FrameDecoder>,
    write: &mut WriteSide,
) -> Result<Arc<Peer>, HandshakeError> {
    let (local, cfg) = (shared.local, &shared.cfg);
    let hello = wire::parse_hello(&next_frame(reader).await?)?;
    if hello.to != local || hello.from >= local {
        return Err(HandshakeError::Unexpected(format!(
            "hello from {} to {}",
            hello.from, hello.to
        )));
    }
    let from = hello.from;
    let Some(peer) = shared.peers.read().get(&from).cloned() else {
        return Err(HandshakeError::NotPeer(from));
    };
    let secret = cfg.secret.as_deref();
    let mut reply = Hello {
        from: local,
        to: from,
        auth: secret.is_some(),
        nonce: [0; 32],
        proof: [0; 32],
    };
    match (secret, hello.auth) {
        (None, false) => write_frame(write, &wire::hello_frame(&reply)).await?,
        (Some(secret), true) => {
            reply.nonce = auth::nonce();
            let t = transcript(from, local);
            reply.proof = auth::prove(secret, LABEL_ACCEPTOR, &hello.nonce, &reply.nonce, &t);
            write_frame(write, &wire::hello_frame(&reply)).await?;
            let proof = match next_frame(reader).await {
                Ok(frame) => wire::parse_proof(&frame)
                    .ok_or(HandshakeError::Auth("the peer sent no proof frame"))?,
                Err(HandshakeError::Io(_)) => {
                    return Err(HandshakeError::Auth(
                        "the peer closed the connection instead of proving",
                    ));
                }
                Err(e) => return Err(e),
            };
            if !auth::verify(secret, LABEL_DIALER, &reply.nonce, &hello.nonce, &t, &proof) {
                return Err(HandshakeError::Auth(
                    "the peer's proof does not verify (wrong secret?)",
                ));
            }
        }
        (Some(_), false) => {
            // Tell the peer why (our hello carries no proof), then close.
            let _ = write_frame(write, &wire::hello_frame(&reply)).await;
            return Err(HandshakeError::Auth(
                "the peer does not authenticate but this node requires the cluster secret",
            ));
        }
        (None, true) => {
            let _ = write_frame(write, &wire::hello_frame(&reply)).await;
            return Err(HandshakeError::Auth(
                "the peer authenticates but this node has no cluster secret",
            ));
        }
    }
    Ok(peer)
}

/// Connects to `peer` at `addr`, wraps the connection in TLS if configured and runs the
/// dialer's side of the handshake (see the module docs).
async fn dial(shared: &Shared, peer: NodeId, addr: SocketAddr) -> Result<Link, HandshakeError> {
    let (local, cfg) = (shared.local, &shared.cfg);
    let handshake = async {
        let stream = TcpStream::connect(addr).await.map_err(HandshakeError::Io)?;
        stream.set_nodelay(true).map_err(HandshakeError::Io)?;
        let (read, mut write) = match &cfg.tls {
            Some(tls) => stream::tls_connect(tls, stream).await.map_err(tls_error)?,
            None => stream::plain(stream),
        };
        let secret = cfg.secret.as_deref();
        let hello = Hello {
            from: local,
            to: peer,
            auth: secret.is_some(),
            nonce: if secret.is_some() {
                auth::nonce()
            } else {
                [0; 32]
            },
            proof: [0; 32],
        };
        write_frame(&mut write, &wire::hello_frame(&hello)).await?;
        let mut reader = FramedRead::new(read, FrameDecoder::before_hello());
        let reply = wire::parse_hello(&next_frame(&mut reader).await?)?;
        if (reply.from, reply.to) != (peer, local) {
            return Err(HandshakeError::Unexpected(format!(
                "expected node {peer}, got hello from {} to {}",
                reply.from, reply.to
            )));
        }
        match (secret, reply.auth) {
            (None, false) => {}
            (Some(secret), true) => {
                let t = transcript(local, peer);
                if !auth::verify(
                    secret,
                    LABEL_ACCEPTOR,
                    &hello.nonce,
                    &reply.nonce,
                    &t,
                    &reply.proof,
                ) {
                    return Err(HandshakeError::Auth(
                        "the peer's proof does not verify (wrong secret?)",
                    ));
                }
                let proof = auth::prove(secret, LABEL_DIALER, &reply.nonce, &hello.nonce, &t);
                write_frame(&mut write, &wire::proof_frame(&proof)).await?;
            }
            (Some(_), false) => {
                return Err(HandshakeError::Auth(
                    "the peer does not authenticate but this node requires the cluster secret",
                ));
            }
            (None, true) => {
                return Err(HandshakeError::Auth(
                    "the peer requires a cluster secret but this node has none",
                ));
            }
        }
        Ok(into_link(cfg, reader, write, addr))
    };
    tokio::time::timeout(cfg.connect_timeout, handshake)
        .await
        .map_err(|_| {
            HandshakeError::Io(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
        })?
}

/// Logs (once) and counts why a handshake closed its connection.
fn report_handshake(shared: &Shared, peer: Option<NodeId>, addr: SocketAddr, e: HandshakeError) {
    let local = shared.local;
    match e {
        HandshakeError::Io(e) => match peer {
            Some(peer) => debug!(local, peer, %addr, error = %e, "connect failed"),
            None => debug!(local, %addr, error = %e, "connection closed during hello"),
        },
        HandshakeError::NotPeer(from) => {
            debug!(local, %addr, from, "closing connection from a node that is not a peer")
        }
        HandshakeError::Malformed(e) => {
            warn!(local, ?peer, %addr, error = %e, "closing connection: malformed frame")
        }
        HandshakeError::Unexpected(e) => {
            warn!(local, ?peer, %addr, error = %e, "closing connection: unexpected hello")
        }
        HandshakeError::Tls(e) => {
            Counters::bump(&shared.counters.tls_failures);
            warn!(local, ?peer, %addr, error = %e, "closing connection: TLS handshake failed")
        }
        HandshakeError::Auth(reason) => {
            Counters::bump(&shared.counters.auth_failures);
            warn!(local, ?peer, %addr, reason, "closing connection: authentication failed")
        }
    }
}

/// Logs a failed read: one warning for a malformed (e.g. oversized) frame, else a debug line.
fn report_read_error(local: NodeId, peer: Option<NodeId>, addr: SocketAddr, e: &io::Error) {
    match (e.kind() == io::ErrorKind::InvalidData, peer) {
        (true, Some(peer)) => {
            warn!(local, peer, %addr, error = %e, "closing connection: malformed frame")
        }
        (true, None) => warn!(local, %addr, error = %e, "closing connection: malformed frame"),
        (false, _) => debug!(local, ?peer, %addr, error = %e, "connection read failed"),
    }
}

/// How a link ended.
enum LinkEnd {
    /// The connection broke, was dropped on request, or its peer moved.
    Closed,
    /// A newer inbound connection from the same peer replaces it.
    Replaced(Link),
    /// The transport is shutting down.
    Shutdown,
}

/// Owns the link to one peer for the transport's lifetime: (re)connects and runs it.
async fn peer_task(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    mut addr_rx: watch::Receiver<Option<SocketAddr>>,
    mut accepted: mpsc::Receiver<Link>,
) {
    let dialer = shared.local < peer.id;
    let (min, max) = (shared.cfg.reconnect_min, shared.cfg.reconnect_max);
    let mut backoff = min;
    let mut drops = shared.drops.subscribe();
    let mut spare = VecDeque::new();
    let mut waiting: Option<JoinHandle<()>> = None;
    let mut next: Option<Link> = None;
    loop {
        let link = match next.take() {
            Some(link) => link,
            None if dialer => {
                let addr = *addr_rx.borrow_and_update();
                let Some(addr) = addr else {
                    tokio::select! {
                        _ = shared.cancel.cancelled() => return,
                        r = addr_rx.changed() => if r.is_err() { return },
                    }
                    continue;
                };
                let res = tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    r = dial(&shared, peer.id, addr) => r,
                };
                match res {
                    Ok(link) => {
                        backoff = min;
                        link
                    }
                    Err(e) => {
                        report_handshake(&shared, Some(peer.id), addr, e);
                        tokio::select! {
                            _ = shared.cancel.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                            _ = addr_rx.changed() => {}
                        }
                        backoff = (backoff * 2).min(max);
                        continue;
                    }
                }
            }
            None => tokio::select! {
                _ = shared.cancel.cancelled() => return,
                l = accepted.recv() => match l {
                    Some(link) => link,
                    None => return,
                },
            },
        };
        debug!(local = shared.local, peer = peer.id, "link up");
        drops.borrow_and_update();
        let end = run_link(
            &shared,
            &peer,
            link,
            &mut spare,
            &mut waiting,
            &mut drops,
            &mut addr_rx,
            &mut accepted,
            dialer,
        )
        .await;
        match end {
            LinkEnd::Shutdown => return,
            LinkEnd::Replaced(link) => next = Some(link),
            LinkEnd::Closed if dialer => {
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = tokio::time::sleep(min) => {}
                }
            }
            LinkEnd::Closed => {}
        }
    }
}

/// Delivers `env` into the full `inbox` from a blocking-pool thread, waiting for room
/// (or for shutdown, which drops it) without polling and without holding up the runtime.
fn wait_for_room(shared: &Shared, inbox: Sender<Envelope>, env: Envelope) -> JoinHandle<()> {
    Counters::bump(&shared.counters.inbox_full_waits);
    let release = shared.release_rx.clone();
    let counters = shared.counters.clone();
    shared.tracker.spawn_blocking(move || {
        crossbeam_channel::select! {
            send(inbox, env) -> res => if res.is_err() {
                Counters::bump(&counters.inbound_dropped);
            },
            recv(release) -> _ => Counters::bump(&counters.inbound_dropped),
        }
    })
}

/// Moves envelopes both ways over one link until it breaks or is replaced.
#[allow(clippy::too_many_arguments)]
async fn run_link(
    shared: &Shared,
    peer: &Peer,
    link: Link,
    spare: &mut VecDeque<Envelope>,
    waiting: &mut Option<JoinHandle<()>>,
    drops: &mut watch::Receiver<u64>,
    addr_rx: &mut watch::Receiver<Option<SocketAddr>>,
    accepted: &mut mpsc::Receiver<Link>,
    dialer: bool,
) -> LinkEnd {
    let Some(inbox) = shared.inbox.lock().clone() else {
        return LinkEnd::Shutdown;
    };
    let Link {
        mut reader,
        mut writer,
        addr,
    } = link;
    let (local, peer_id, max_frame) = (shared.local, peer.id, shared.cfg.max_frame_bytes);

    let read = async {
        // An envelope from an earlier link still waiting for room goes first.
        if let Some(task) = waiting.as_mut() {
            let _ = task.await;
        }
        *waiting = None;
        while let Some(item) = reader.next().await {
            let frame = match item {
                Ok(frame) => frame,
                Err(e) => return report_read_error(local, Some(peer_id), addr, &e),
            };
            match wire::parse_envelope(frame) {
                Ok(env) if env.from == peer_id && env.to == local => {
                    let Some(env) = shared.offer(env) else {
                        continue;
                    };
                    match inbox.try_send(env) {
                        Ok(()) => {}
                        Err(TrySendError::Full(env)) => {
                            // Read nothing more from this socket until the envelope is in.
                            let task = waiting.insert(wait_for_room(shared, inbox.clone(), env));
                            let _ = task.await;
                            *waiting = None;
                        }
                        // Nobody listens any more: discard quietly, but count it.
                        Err(TrySendError::Disconnected(_)) => {
                            Counters::bump(&shared.counters.inbound_dropped);
                        }
                    }
                }
                Ok(env) => {
                    let e = wire::WireError::Misaddressed {
                        from: env.from,
                        to: env.to,
                        peer: peer_id,
                        local,
                    };
                    return warn!(local, peer = peer_id, %addr, error = %e, "closing connection: malformed frame");
                }
                Err(e) => {
                    return warn!(local, peer = peer_id, %addr, error = %e, "closing connection: malformed frame");
                }
            }
        }
        debug!(local, peer = peer_id, "connection closed by peer");
    };

    let write = async {
        loop {
            peer.queue.take_all(spare).await;
            for env in spare.drain(..) {
                if !wire::fits(&env, max_frame) {
                    Counters::bump(&shared.counters.oversized_dropped);
                    warn!(
                        local,
                        peer = peer_id,
                        bytes = env.payload.len(),
                        "dropping envelope larger than max_frame_bytes"
                    );
                    continue;
                }
                if let Err(e) = writer.feed(env).await {
                    return debug!(local, peer = peer_id, error = %e, "write failed");
                }
            }
            if let Err(e) = writer.flush().await {
                return debug!(local, peer = peer_id, error = %e, "write failed");
            }
        }
    };

    let end = tokio::select! {
        _ = shared.cancel.cancelled() => LinkEnd::Shutdown,
        _ = read => LinkEnd::Closed,
        _ = write => LinkEnd::Closed,
        Ok(()) = drops.changed() => LinkEnd::Closed,
        Some(link) = accepted.recv(), if !dialer => LinkEnd::Replaced(link),
        Ok(()) = addr_rx.changed(), if dialer => LinkEnd::Closed,
    };
    spare.clear();
    end
}
