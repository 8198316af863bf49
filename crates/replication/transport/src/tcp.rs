//! TCP transport: one connection per replica pair, carrying every group in both directions.
//!
//! Each transport owns a small tokio runtime. For every peer there is a bounded queue
//! (filled by [`Transport::send`] without blocking) and one task that owns the link to
//! that peer: the node with the lower id dials, the higher one accepts. Both sides open
//! with a hello frame naming themselves and the node they expect, then exchange envelope
//! frames (see the private `wire` module). The writer drains the whole queue at once and
//! writes the frames with a single flush; the reader pushes frames into the inbox.
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
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::wire::{self, EnvelopeEncoder, FrameDecoder};
use crate::{Envelope, NodeId, SendError, Transport};

/// Bytes buffered by a connection's writer before it writes them out mid-batch.
const WRITE_BUFFER: usize = 512 * 1024;
/// How long [`TcpTransport::shutdown`] waits for tasks to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Tuning of a [`TcpTransport`].
#[derive(Clone, Debug, PartialEq, Eq)]
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
    reader: FramedRead<OwnedReadHalf, FrameDecoder>,
    writer: FramedWrite<OwnedWriteHalf, EnvelopeEncoder>,
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
    }

    /// A send to this node itself goes straight to the inbox; a full inbox is [`SendError::Full`].
    fn deliver_local(&self, msg: Envelope) -> Result<(), SendError> {
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

/// Checks an inbound connection's hello, answers it, and passes the link to the peer's task.
async fn accept_one(shared: Arc<Shared>, stream: TcpStream, addr: SocketAddr) {
    let local = shared.local;
    let cfg = &shared.cfg;
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = FramedRead::new(read, FrameDecoder::before_hello());
    let first = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        r = tokio::time::timeout(cfg.connect_timeout, reader.next()) => r,
    };
    let frame = match first {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => return report_read_error(local, None, addr, &e),
        Ok(None) => return debug!(local, %addr, "connection closed before hello"),
        Err(_) => return debug!(local, %addr, "no hello in time; closing connection"),
    };
    let (from, to) = match wire::parse_hello(&frame) {
        Ok(ids) => ids,
        Err(e) => return warn!(local, %addr, error = %e, "closing connection: malformed frame"),
    };
    if to != local || from >= local {
        return warn!(local, %addr, from, to, "closing connection: unexpected hello");
    }
    let Some(peer) = shared.peers.read().get(&from).cloned() else {
        return debug!(local, %addr, from, "closing connection from a node that is not a peer");
    };
    reader.decoder_mut().set_max(cfg.max_frame_bytes);
    let reply = async {
        write.write_all(&wire::hello_frame(local, from)).await?;
        write.flush().await
    };
    match tokio::time::timeout(cfg.connect_timeout, reply).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return debug!(local, peer = from, error = %e, "hello reply failed"),
        Err(_) => return debug!(local, peer = from, "hello reply timed out"),
    }
    let mut writer = FramedWrite::new(
        write,
        EnvelopeEncoder {
            max_frame: cfg.max_frame_bytes,
        },
    );
    writer.set_backpressure_boundary(WRITE_BUFFER);
    let link = Link { reader, writer };
    tokio::select! {
        _ = shared.cancel.cancelled() => {}
        _ = peer.accepted.send(link) => {}
    }
}

/// Connects to `peer` at `addr` and exchanges hellos.
async fn dial(shared: &Shared, peer: NodeId, addr: SocketAddr) -> io::Result<Link> {
    let cfg = &shared.cfg;
    let local = shared.local;
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
    let handshake = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        write.write_all(&wire::hello_frame(local, peer)).await?;
        write.flush().await?;
        let mut reader = FramedRead::new(read, FrameDecoder::before_hello());
        let frame = reader
            .next()
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed during hello"))??;
        let ids = wire::parse_hello(&frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if ids != (peer, local) {
            let msg = format!("expected node {peer} at {addr}, got hello {ids:?}");
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        reader.decoder_mut().set_max(cfg.max_frame_bytes);
        let mut writer = FramedWrite::new(
            write,
            EnvelopeEncoder {
                max_frame: cfg.max_frame_bytes,
            },
        );
        writer.set_backpressure_boundary(WRITE_BUFFER);
        Ok(Link { reader, writer })
    };
    tokio::time::timeout(cfg.connect_timeout, handshake)
        .await
        .map_err(|_| timed_out())?
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
                        if e.kind() == io::ErrorKind::InvalidData {
                            warn!(local = shared.local, peer = peer.id, %addr, error = %e, "closing connection: malformed frame");
                        } else {
                            debug!(local = shared.local, peer = peer.id, %addr, error = %e, "connect failed");
                        }
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
    } = link;
    let (local, peer_id, max_frame) = (shared.local, peer.id, shared.cfg.max_frame_bytes);
    let addr = reader
        .get_ref()
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));

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
                Ok(env) if env.from == peer_id && env.to == local => match inbox.try_send(env) {
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
                },
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
