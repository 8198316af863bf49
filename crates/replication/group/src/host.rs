//! [`Host`] and [`Worker`]: the threads that drive protocol cores (Raft or Multi-Paxos) with a
//! transport and a durable log.
//!
//! A host is one replica process's replication side: it routes the transport's envelopes
//! to their groups' workers (on the thread that receives them where the transport supports
//! [`Transport::set_receive`], else through a router thread serving the inbox) and owns the node's
//! shared [`LogStore`] (one log stream for every group, so one sync covers
//! many appends). Each group gets a [`Worker`] thread that takes what its channels hold
//! (commands, inbound messages, persistence completions, captures), ticks when its heartbeat
//! is due, and otherwise sleeps until a sender rings it (see `bell.rs`; it never blocks on a
//! channel). It feeds the group's [`Core`], sends what it produces, and queues what must be
//! durable. Which protocol a group runs is the type parameter of
//! [`Host::start_group`]; groups of both protocols can share a host. Snapshot captures the
//! cores begin run on the host's one snapshot thread, one at a time, which also saves them
//! to the snapshot store, and come back to their group's worker as an input (a group has at
//! most one in flight).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, select};
use mako_logstore::{Durability, GroupState, LogError, LogStore};
use mako_replication::{
    ApplyDispatcher, ApplyFn, GroupHealth, NodeId, Replicator, Resolution, Role, RoleChangeFn,
    RoundFn, SnapshotHandler, SubmitError, Unapplied, UnappliedFn,
};
use mako_transport::{Envelope, Transport};
use parking_lot::Mutex;

use crate::bell::{Bell, Mailbox};
use crate::config::GroupConfig;
use crate::core::{CaptureRequest, Core, CoreError, OutMsg, PersistJob, Snapshot};
use crate::durable::{self, FileSnapshots, MemSnapshots, RecoverError, SnapshotStore};

/// Why a host or group could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The protocol core rejected its configuration or recovered state.
    #[error("starting the group's protocol core: {0}")]
    Core(#[source] CoreError),
    /// The group's durable state could not be recovered.
    #[error(transparent)]
    Recover(#[from] RecoverError),
    /// Opening the snapshot directory failed.
    #[error("snapshot directory {path}: {source}")]
    SnapshotDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A durable log needs a snapshot directory (compaction would otherwise lose the prefix).
    #[error("a durable log (fsync or buffered) needs HostConfig::snapshot_dir")]
    NoSnapshotDir,
    /// A group for this shard already runs on the host.
    #[error("shard {0} already has a group on this host")]
    Duplicate(u32),
    /// The host was shut down.
    #[error("host stopped")]
    Stopped,
}

enum Cmd {
    Propose(Bytes),
    Transfer(NodeId),
    RetryPending,
    SnapshotHandler(Box<dyn SnapshotHandler>),
    /// Test hook: stop working until the sender sends or is dropped.
    Pause(Receiver<()>),
    Shutdown,
}

/// A persist job's completion, from the log store's writer thread.
struct Done {
    number: u64,
    after: Vec<OutMsg>,
    /// Index of the snapshot this job made durable (older files may go).
    snapshot: Option<u64>,
    result: Result<(), LogError>,
}

/// A capture for the host's snapshot thread.
struct CaptureJob {
    shard: u32,
    req: CaptureRequest,
    /// Where the snapshot is saved once captured (see [`Captured::saved`]).
    store: Arc<dyn SnapshotStore>,
    /// Where the result goes (the group's worker).
    reply: Mailbox<Captured>,
}

/// A capture's result, for the group's worker.
struct Captured {
    index: u64,
    term: u64,
    /// `None`: the capture failed or panicked.
    data: Option<Bytes>,
    /// Time the group's thread spent beginning it.
    begin: Duration,
    /// Time the snapshot thread spent running it.
    took: Duration,
    /// Whether `data` is already saved in the group's snapshot store. A snapshot thread saves
    /// what it captured, so that the group's thread, which must save a snapshot before the
    /// log record naming it, does not copy, checksum, write and sync megabytes in its turn
    /// (`mako demo`: release p99 from 14–20 ms to 9–11 ms).
    saved: bool,
}

/// Runs one capture, on whatever thread calls it; a panic in it is a failed capture.
///
/// With a `store`, a captured snapshot is also saved in it (a failure is logged, and the
/// group's thread saves it again when it persists the compaction), unless the store already
/// holds a snapshot at its index: that one may be the one the log names (a capture taken
/// again at the same index), and a capture the core will drop (one a snapshot install
/// overtook mid-walk) must never replace it.
fn run_capture(shard: u32, req: CaptureRequest, store: Option<&dyn SnapshotStore>) -> Captured {
    let (index, term, begin) = (req.index, req.term, req.begin);
    let started = Instant::now();
    let data = catch_unwind(AssertUnwindSafe(req.run)).unwrap_or_else(|_| {
        tracing::error!(shard, index, "snapshot capture panicked");
        None
    });
    if data.is_none() {
        tracing::error!(
            shard,
            index,
            "snapshot capture failed; the log is not compacted"
        );
    }
    let saved = match (&data, store) {
        (Some(data), Some(store)) if matches!(store.contains(shard, index), Ok(false)) => {
            let snap = Snapshot {
                index,
                term,
                data: data.clone(),
            };
            store
                .save(shard, &snap)
                .inspect_err(|e| tracing::warn!(shard, index, "saving a captured snapshot: {e}"))
                .is_ok()
        }
        _ => false,
    };
    Captured {
        index,
        term,
        data,
        begin,
        saved,
        took: started.elapsed(),
    }
}

/// The host's snapshot thread: runs captures one at a time, in the order groups began them.
fn snapshot_thread(jobs: Receiver<CaptureJob>, stop: Arc<AtomicBool>) {
    lower_priority();
    while let Ok(job) = jobs.recv() {
        if stop.load(Ordering::Acquire) {
            // Shutting down: the groups are gone, nobody would take the result.
            continue;
        }
        let done = run_capture(job.shard, job.req, Some(&*job.store));
        // The group may have stopped meanwhile: its result is simply dropped.
        let _ = job.reply.send(done);
    }
}

/// How much lower than the other threads the snapshot thread runs (a `nice` increment).
///
/// A capture walks the whole store; several replicas of one process reach their compaction
/// point together, and at the default priority their walks would take every core from the
/// threads that commit and replicate (`mako demo`: release p99 from 3 ms to 300 ms).
const SNAPSHOT_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority by [`SNAPSHOT_NICE`] (Linux; elsewhere nothing).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers; on Linux,
        // PRIO_PROCESS with a thread id sets that thread's nice value.
        let r = unsafe {
            let tid = libc::gettid();
            let now = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            libc::setpriority(
                libc::PRIO_PROCESS,
                tid as libc::id_t,
                now.saturating_add(SNAPSHOT_NICE).min(19),
            )
        };
        if r != 0 {
            tracing::debug!(
                "could not lower the snapshot thread's priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Status the worker publishes for lock-free reads.
struct Published {
    role: AtomicU8,
    leader: AtomicU64,
    term: AtomicU64,
    commit: AtomicU64,
    applied: AtomicU64,
    /// Index of the newest snapshot made durable (the log is compacted to it).
    snapshot: AtomicU64,
    /// Submitted entries resolved (applied here as ours, or reported unapplied).
    resolved: AtomicU64,
    /// Inbound messages dropped because the group's inbox was full.
    inbox_drops: AtomicU64,
    /// Snapshots the group's own thread saved (installed ones, and captures the snapshot
    /// thread did not save).
    saves_in_turn: AtomicU64,
    /// End of the leader lease in nanoseconds after the worker's clock origin; 0: none.
    /// Published before any message leaves the worker, so it never shows a lease the
    /// node's state no longer holds once a message could have acted on that state.
    lease: AtomicU64,
    /// `transfer_leader` calls whose command the worker has not yet handled: no lease
    /// is reported while there are any.
    transfers_pending: AtomicU64,
    /// Whether the replica is still rejoining (see [`GroupConfig::rejoin`]).
    rejoining: AtomicBool,
    /// Peers the replica, as leader, knows to be rejoining.
    rejoining_peers: Mutex<Vec<NodeId>>,
    /// Held for reading by `submit` across its check and send, so that a stopping group
    /// (which takes it for writing) finds every accepted submission in its queue.
    health: parking_lot::RwLock<GroupHealth>,
}

impl Published {
    fn new() -> Self {
        Published {
            role: AtomicU8::new(0),
            leader: AtomicU64::new(0),
            term: AtomicU64::new(0),
            commit: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            snapshot: AtomicU64::new(0),
            resolved: AtomicU64::new(0),
            inbox_drops: AtomicU64::new(0),
            saves_in_turn: AtomicU64::new(0),
            lease: AtomicU64::new(0),
            transfers_pending: AtomicU64::new(0),
            rejoining: AtomicBool::new(false),
            rejoining_peers: Mutex::new(Vec::new()),
            health: parking_lot::RwLock::new(GroupHealth::Running),
        }
    }
}

/// One group's replica (either protocol), driven by its own thread; implements [`Replicator`].
pub struct Worker {
    id: NodeId,
    shard: u32,
    tx: Mailbox<Cmd>,
    dispatcher: Arc<ApplyDispatcher>,
    status: Arc<Published>,
    /// Entries `submit` accepted.
    submitted: AtomicU64,
    max_unresolved: u64,
    max_entry_bytes: usize,
    stopped: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Origin of the published lease instant.
    origin: Instant,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("shard", &self.shard)
            .field("role", &self.role())
            .field("term", &self.term())
            .field("commit", &self.commit_index())
            .finish()
    }
}

/// Where a host keeps what the protocols need besides the log store.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Directory for snapshot files; required with a durable log (`None` keeps snapshots
    /// in memory, which only a `memory` log may do).
    pub snapshot_dir: Option<PathBuf>,
}

/// Holds a host's workers frozen ([`Host::pause`]); dropping it resumes them.
#[derive(Debug)]
pub struct Paused(#[allow(dead_code)] Vec<Sender<()>>);

/// Messages a group's inbox holds before the router drops further ones (the protocols retransmit).
const GROUP_INBOX: usize = 4096;

/// One replica process's replication side: envelope routing, shared log store, group workers.
pub struct Host {
    transport: Arc<dyn Transport>,
    log: Arc<LogStore>,
    recovered: Mutex<HashMap<u32, GroupState>>,
    routes: Arc<Mutex<HashMap<u32, Route>>>,
    workers: Mutex<Vec<Arc<Worker>>>,
    router: Mutex<Option<JoinHandle<()>>>,
    router_stop: Sender<()>,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    /// Captures for the snapshot thread (`None` once shut down).
    capture_tx: Mutex<Option<Sender<CaptureJob>>>,
    /// The snapshot thread, joined on shutdown.
    capture_thread: Mutex<Option<JoinHandle<()>>>,
    /// Tells the snapshot thread to skip what is still queued.
    capture_stop: Arc<AtomicBool>,
}

/// Serves an envelope on the thread routing it, or returns it for the route's inbox.
pub type Shortcut = Arc<dyn Fn(Envelope) -> Option<Envelope> + Send + Sync>;

/// Where the router sends a group's envelopes.
#[derive(Clone)]
struct Route {
    tx: Sender<Envelope>,
    /// Rung after each envelope queued on `tx` (a group's worker, which never blocks on it).
    bell: Option<Arc<Bell>>,
    /// Serves some envelopes on the thread routing them; what it returns goes on to `tx`.
    shortcut: Option<Shortcut>,
    /// Counts envelopes dropped on a full inbox.
    drops: Option<Arc<Published>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("node", &self.transport.local_id())
            .field("groups", &self.workers.lock().len())
            .finish()
    }
}

/// Hands one incoming envelope to its group's inbox (or serves it on this thread through
/// the route's shortcut).
fn route(routes: &Mutex<HashMap<u32, Route>>, env: Envelope) {
    let route = routes.lock().get(&env.group).cloned();
    let Some(route) = route else {
        tracing::debug!(group = env.group, "message for a group not on this host");
        return;
    };
    let env = match &route.shortcut {
        Some(serve) => match serve(env) {
            Some(env) => env,
            None => return,
        },
        None => env,
    };
    // A full group inbox drops (the protocols retransmit) rather than stalling every other
    // group behind one slow worker.
    match route.tx.try_send(env) {
        Ok(()) => {
            if let Some(b) = &route.bell {
                b.ring();
            }
        }
        Err(TrySendError::Full(_)) => {
            if let Some(p) = &route.drops {
                p.inbox_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}

impl Host {
    /// A host over `transport` (whose inbox is `inbox`) and a log store opened with its recovered state.
    pub fn new(
        transport: Arc<dyn Transport>,
        inbox: Receiver<Envelope>,
        log: Arc<LogStore>,
        recovered: mako_logstore::Recovered,
        cfg: HostConfig,
    ) -> Self {
        let snapshots: Option<Arc<dyn SnapshotStore>> = match &cfg.snapshot_dir {
            Some(d) => match FileSnapshots::new(d) {
                Ok(f) => Some(Arc::new(f)),
                Err(e) => {
                    tracing::error!("snapshot directory {}: {e}", d.display());
                    None
                }
            },
            None if log.durability() == Durability::Memory => {
                Some(Arc::new(MemSnapshots::default()))
            }
            None => None,
        };
        let routes: Arc<Mutex<HashMap<u32, Route>>> = Arc::default();
        // Envelopes are routed on the thread that receives them where the transport allows
        // it (one hand-off less per message); the router serves the inbox otherwise.
        let r = Arc::clone(&routes);
        transport.set_receive(Some(Arc::new(move |env| {
            route(&r, env);
            None
        })));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let r = Arc::clone(&routes);
        let router = std::thread::Builder::new()
            .name(format!("repl-router-{}", transport.local_id()))
            .spawn(move || {
                loop {
                    select! {
                        recv(inbox) -> env => {
                            let Ok(env) = env else { break };
                            route(&r, env);
                            // Take what else is queued without selecting again: every select
                            // registers with the inbox's waker, whose lock the senders take.
                            for _ in 0..DRAIN_LIMIT {
                                match inbox.try_recv() {
                                    Ok(env) => route(&r, env),
                                    Err(_) => break,
                                }
                            }
                        }
                        recv(stop_rx) -> _ => break,
                    }
                }
            })
            .ok();
        // One snapshot thread per host: captures run off the groups' threads, one at a time
        // (each group has at most one in flight). Unbounded: bounded by the groups.
        let (capture_tx, capture_rx) = crossbeam_channel::unbounded::<CaptureJob>();
        let capture_stop = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&capture_stop);
        let capture_thread = std::thread::Builder::new()
            .name(format!("repl-snap-{}", transport.local_id()))
            .spawn(move || snapshot_thread(capture_rx, stop))
            .map_err(|e| {
                tracing::error!(
                    "starting the snapshot thread: {e}; captures run on the groups' threads"
                )
            })
            .ok();
        Host {
            capture_tx: Mutex::new(capture_thread.as_ref().map(|_| capture_tx)),
            capture_thread: Mutex::new(capture_thread),
            capture_stop,
            transport,
            log,
            recovered: Mutex::new(recovered.groups.into_iter().collect()),
            routes,
            workers: Mutex::new(Vec::new()),
            router: Mutex::new(router),
            router_stop: stop_tx,
            snapshots,
        }
    }

    /// Starts this host's replica of group `cfg.shard` running protocol `C`, recovering it
    /// from the log store.
    pub fn start_group<C: Core>(&self, cfg: GroupConfig) -> Result<Arc<Worker>, StartError> {
        self.start_group_with::<C>(cfg, None)
    }

    /// Like [`Host::start_group`], with the application's snapshot handler, which restores
    /// the recovered snapshot (if any) before the log after it is re-applied. Without a
    /// handler the group never compacts its log.
    pub fn start_group_with<C: Core>(
        &self,
        mut cfg: GroupConfig,
        snapshots: Option<Box<dyn SnapshotHandler>>,
    ) -> Result<Arc<Worker>, StartError> {
        let shard = cfg.shard;
        if self.routes.lock().contains_key(&shard) {
            return Err(StartError::Duplicate(shard));
        }
        let Some(store) = self.snapshots.clone() else {
            return Err(StartError::NoSnapshotDir);
        };
        let recovered = self.recovered.lock().remove(&shard);
        let init = durable::recover_group(shard, recovered, store.as_ref())?;
        let recovered_snapshot = init.snapshot.as_ref().map_or(0, |s| s.index);
        // An entry must fit one log-store write (with the protocol's framing).
        cfg.max_entry_bytes = cfg
            .max_entry_bytes
            .min((self.log.max_entry_bytes() as usize).saturating_sub(ENTRY_OVERHEAD));
        let dispatcher = Arc::new(ApplyDispatcher::new(shard));
        let node = C::new(cfg.clone(), init, Arc::clone(&dispatcher), snapshots)
            .map_err(StartError::Core)?;
        let bell = Arc::new(Bell::default());
        let (tx, cmd_rx) = crossbeam_channel::bounded(cfg.max_unresolved_entries as usize + 1024);
        let (in_tx, in_rx) = crossbeam_channel::bounded(GROUP_INBOX);
        // Completions are bounded by the persist jobs in flight, which the log store bounds.
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        // Bounded by the captures in flight: at most one per group.
        let (captured_tx, captured_rx) = crossbeam_channel::unbounded();
        let status = Arc::new(Published::new());
        status.rejoining.store(node.rejoining(), Ordering::Release);
        status.snapshot.store(recovered_snapshot, Ordering::Release);
        let origin = Instant::now();
        let mut driver = Driver::<C> {
            origin,
            lease_nanos: u64::try_from(cfg.lease_duration().as_nanos()).unwrap_or(u64::MAX),
            node,
            shard,
            id: cfg.id,
            transport: Arc::clone(&self.transport),
            log: Arc::clone(&self.log),
            done_tx: Mailbox::new(done_tx, Arc::clone(&bell)),
            status: Arc::clone(&status),
            snapshots: store,
            capture_tx: self.capture_tx.lock().clone(),
            captured_tx: Mailbox::new(captured_tx, Arc::clone(&bell)),
            bell: Arc::clone(&bell),
            capture_pending: false,
            presaved: None,
            rejoin_watch: RejoinWatch::default(),
        };
        let tick = Duration::from_millis(cfg.heartbeat_interval_ms);
        let thread = std::thread::Builder::new()
            .name(format!("{}-{}-{shard}", C::NAME, cfg.id))
            .spawn(move || driver.run(cmd_rx, in_rx, done_rx, captured_rx, tick))
            .map_err(|_| StartError::Stopped)?;
        self.routes.lock().insert(
            shard,
            Route {
                tx: in_tx,
                bell: Some(Arc::clone(&bell)),
                shortcut: None,
                drops: Some(Arc::clone(&status)),
            },
        );
        let w = Arc::new(Worker {
            id: cfg.id,
            shard,
            tx: Mailbox::new(tx, bell),
            dispatcher,
            status,
            submitted: AtomicU64::new(0),
            max_unresolved: cfg.max_unresolved_entries,
            max_entry_bytes: cfg.max_entry_bytes,
            stopped: AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
            origin,
        });
        self.workers.lock().push(Arc::clone(&w));
        Ok(w)
    }

    /// Routes transport envelopes of `group` (not a replication group here, e.g. a control channel) to `tx`.
    pub fn add_route(&self, group: u32, tx: Sender<Envelope>) {
        self.routes.lock().insert(
            group,
            Route {
                tx,
                bell: None,
                shortcut: None,
                drops: None,
            },
        );
    }

    /// [`Host::add_route`], with `shortcut` serving envelopes on the thread routing them (the
    /// transport's receiving thread, or the router) first: it returns the ones it leaves to
    /// `tx`. It must not block (the traffic of every group on that thread waits on it).
    pub fn add_route_with_shortcut(&self, group: u32, tx: Sender<Envelope>, shortcut: Shortcut) {
        self.routes.lock().insert(
            group,
            Route {
                tx,
                bell: None,
                shortcut: Some(shortcut),
                drops: None,
            },
        );
    }

    /// The transport this host sends with.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The shared log store's counters.
    pub fn log_stats(&self) -> mako_logstore::LogStats {
        self.log.stats()
    }

    /// Every group started on this host.
    pub fn groups(&self) -> Vec<Arc<Worker>> {
        self.workers.lock().clone()
    }

    /// Test hook: freezes every group's worker (no tick, no message, no write) until the
    /// returned handle is dropped, as if the process were stopped (e.g. `SIGSTOP`).
    ///
    /// Drop the handle before [`Host::shutdown`], which waits for the workers.
    pub fn pause(&self) -> Paused {
        Paused(
            self.workers
                .lock()
                .iter()
                .filter_map(|w| w.pause())
                .collect(),
        )
    }

    /// Stops every group, the router, and syncs the log store; idempotent.
    pub fn shutdown(&self) {
        self.transport.set_receive(None);
        let workers = std::mem::take(&mut *self.workers.lock());
        for w in &workers {
            w.shutdown();
        }
        let _ = self.router_stop.try_send(());
        if let Some(h) = self.router.lock().take() {
            let _ = h.join();
        }
        // The workers are gone: the snapshot thread skips what is queued and ends once
        // the last sender is dropped (a capture running now is finished first).
        self.capture_stop.store(true, Ordering::Release);
        drop(self.capture_tx.lock().take());
        if let Some(h) = self.capture_thread.lock().take() {
            let _ = h.join();
        }
        self.log.shutdown();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Bytes a protocol's message framing adds around an entry's data (index, term, lengths), with margin.
const ENTRY_OVERHEAD: usize = 64;

/// Most commands (or messages) taken in one turn of a worker's loop before it looks at the others.
const DRAIN_LIMIT: usize = 1024;

/// The worker thread's state.
struct Driver<C: Core> {
    node: C,
    shard: u32,
    id: NodeId,
    transport: Arc<dyn Transport>,
    log: Arc<LogStore>,
    done_tx: Mailbox<Done>,
    status: Arc<Published>,
    snapshots: Arc<dyn SnapshotStore>,
    /// Origin of the lease clock (shared with the `Worker`).
    origin: Instant,
    /// The lease duration in nanoseconds.
    lease_nanos: u64,
    /// The host's snapshot thread (`None`: captures run on this thread).
    capture_tx: Option<Sender<CaptureJob>>,
    /// Where the snapshot thread reports this group's captures.
    captured_tx: Mailbox<Captured>,
    /// Wakes this group's thread (rung by every sender to it).
    bell: Arc<Bell>,
    /// Whether a capture handed to the snapshot thread has not reported back yet.
    capture_pending: bool,
    /// The newest capture, if the snapshot thread saved it: its index, its term and its
    /// data's address and length (the persist of that very snapshot skips saving it again).
    presaved: Option<(u64, u64, usize, usize)>,
    /// Whether this replica rejoins with no leader in sight (see [`RejoinWatch`]).
    rejoin_watch: RejoinWatch,
}

/// How long a rejoining replica may see no leader before it warns (and then twice as long
/// between warnings).
const REJOIN_WARN_AFTER: Duration = Duration::from_secs(30);

/// Watches a rejoining replica that knows no leader. It must not vote until it has caught
/// up with one, so if every replica of its shard rejoins (all restarted with `memory`
/// durability, which lost the shard's data), none ever leads: that deserves a warning that
/// says so, not silence.
#[derive(Debug, Default)]
struct RejoinWatch {
    /// Since when it has been rejoining without a leader.
    alone_since: Option<Instant>,
    /// When the next warning is due.
    next_warning: Option<Instant>,
}

impl RejoinWatch {
    /// The seconds without a leader to warn about at `now`, if a warning is due.
    fn check(&mut self, rejoining: bool, leader_known: bool, now: Instant) -> Option<u64> {
        if !rejoining || leader_known {
            *self = RejoinWatch::default();
            return None;
        }
        let since = *self.alone_since.get_or_insert(now);
        let due = *self.next_warning.get_or_insert(since + REJOIN_WARN_AFTER);
        if now < due {
            return None;
        }
        self.next_warning = Some(now + 2 * REJOIN_WARN_AFTER);
        Some(now.saturating_duration_since(since).as_secs())
    }
}

/// Whether the loop goes on.
enum Flow {
    Continue,
    Stop,
}

impl<C: Core> Driver<C> {
    fn run(
        &mut self,
        cmds: Receiver<Cmd>,
        inbox: Receiver<Envelope>,
        done: Receiver<Done>,
        captured: Receiver<Captured>,
        tick: Duration,
    ) {
        self.bell.attach();
        let mut next_tick = Instant::now() + tick;
        loop {
            // A panic in the protocol core stops this group, visibly; never a silent dead thread.
            let turn = catch_unwind(AssertUnwindSafe(|| {
                self.turn(&cmds, &inbox, &done, &captured, tick, &mut next_tick)
            }));
            match turn {
                Ok(Ok(Flow::Continue)) => {}
                Ok(Ok(Flow::Stop)) => {
                    self.finish_capture(&captured);
                    self.stop(&cmds, GroupHealth::Stopped);
                    return;
                }
                Ok(Err(reason)) => {
                    tracing::error!(shard = self.shard, "{} group stopped: {reason}", C::NAME);
                    self.stop(&cmds, GroupHealth::Failed(reason));
                    return;
                }
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    let reason = format!("panic in the {} core: {msg}", C::NAME);
                    tracing::error!(shard = self.shard, "{} group stopped: {reason}", C::NAME);
                    self.stop(&cmds, GroupHealth::Failed(reason));
                    return;
                }
            }
        }
    }

    /// One turn: take a bounded amount of everything ready, tick when due, and park until
    /// rung or the next tick if there was nothing to do.
    ///
    /// Senders ring the thread's [`Bell`]; the thread never blocks on a channel (see
    /// `bell.rs` for why).
    fn turn(
        &mut self,
        cmds: &Receiver<Cmd>,
        inbox: &Receiver<Envelope>,
        done: &Receiver<Done>,
        captured: &Receiver<Captured>,
        tick: Duration,
        next_tick: &mut Instant,
    ) -> Result<Flow, String> {
        let mut busy = false;
        // A flood of proposals never starves peers' messages, completions or the tick.
        while let Ok(d) = done.try_recv() {
            busy = true;
            self.persisted(d)?;
        }
        while let Ok(c) = captured.try_recv() {
            busy = true;
            self.captured(c);
        }
        for _ in 0..DRAIN_LIMIT {
            match cmds.try_recv() {
                Ok(Cmd::Shutdown) => {
                    self.flush()?;
                    return Ok(Flow::Stop);
                }
                Ok(c) => {
                    busy = true;
                    self.command(c);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Ok(Flow::Stop),
            }
        }
        for _ in 0..DRAIN_LIMIT {
            match inbox.try_recv() {
                Ok(env) => {
                    busy = true;
                    self.receive(&env);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Ok(Flow::Stop),
            }
        }
        let now = Instant::now();
        if now >= *next_tick {
            busy = true;
            self.tick();
            // Ticks missed while busy are not made up: after a late tick the next is half a
            // period away at least.
            *next_tick = (*next_tick + tick).max(now + tick / 2);
        }
        self.flush()?;
        // What this turn applied is one round (the site pushes its watermark once per round).
        self.node.dispatcher().end_round();
        if !busy {
            std::thread::park_timeout(next_tick.saturating_duration_since(Instant::now()));
        }
        Ok(Flow::Continue)
    }

    /// Stops the group: steps down as far as callers can see, reports every unresolved
    /// submission, publishes why.
    fn stop(&mut self, cmds: &Receiver<Cmd>, health: GroupHealth) {
        self.status.lease.store(0, Ordering::SeqCst);
        *self.status.health.write() = health;
        self.status.role.store(0, Ordering::Release);
        self.node
            .dispatcher()
            .set_role(Role::Follower, self.node.term(), None);
        let _ = catch_unwind(AssertUnwindSafe(|| self.node.abandon_proposals()));
        let d = Arc::clone(self.node.dispatcher());
        let mut abandoned = 0;
        while let Ok(c) = cmds.try_recv() {
            if let Cmd::Propose(entry) = c {
                abandoned += 1;
                d.unapplied(Unapplied {
                    entry,
                    resolution: Resolution::Abandoned,
                });
            }
        }
        self.status
            .resolved
            .store(self.node.resolved() + abandoned, Ordering::Release);
    }

    /// The lease clock: nanoseconds since the worker's origin.
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Publishes the node's lease (or its absence) for `lease_until`.
    fn publish_lease(&self) {
        let until = self
            .node
            .lease_basis()
            .map_or(0, |b| b.saturating_add(self.lease_nanos).max(1));
        self.status.lease.store(until, Ordering::SeqCst);
    }

    fn tick(&mut self) {
        self.node.tick();
        // Stamped before the round's heartbeats leave (they go at the end of this turn).
        let now = self.now();
        self.node.renew_lease(now);
        // Queued entries are re-offered now and then even if a `retry_pending` was dropped
        // on a full command queue; the callback decides whether replay is safe. Only on a
        // follower: what a promoted leader does with its queue is the application's call
        // (it asks with `retry_pending`).
        if !self.node.is_leader() && self.node.dispatcher().queued() > 0 {
            self.node.dispatcher().retry_pending();
            self.node.tick_apply();
        }
    }

    fn receive(&mut self, env: &Envelope) {
        if let Err(e) = self.node.step(env.from, &env.payload) {
            tracing::debug!(shard = self.shard, from = env.from, "dropping message: {e}");
        }
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Propose(entry) => self.node.propose_submitted(entry),
            Cmd::Transfer(to) => {
                let _ = self.node.transfer_leader(to);
                // The node dropped its lease; publish that before the caller's hold is lifted.
                self.publish_lease();
                self.status.transfers_pending.fetch_sub(1, Ordering::SeqCst);
            }
            Cmd::RetryPending => {
                self.node.dispatcher().retry_pending();
                // Applying may have paused on a full queue; resume from the log.
                self.node.tick_apply();
            }
            Cmd::SnapshotHandler(h) => self.node.set_snapshot_handler(h),
            Cmd::Pause(until) => {
                // Frozen as a stopped process would be: no tick, no message, no write.
                let _ = until.recv();
            }
            Cmd::Shutdown => {}
        }
    }

    /// Hands a capture the core began to the snapshot thread (or runs it here if there is none).
    fn capture(&mut self, req: CaptureRequest) {
        let job = CaptureJob {
            shard: self.shard,
            req,
            store: Arc::clone(&self.snapshots),
            reply: self.captured_tx.clone(),
        };
        let job = match &self.capture_tx {
            Some(tx) => match tx.send(job) {
                Ok(()) => {
                    self.capture_pending = true;
                    return;
                }
                Err(e) => e.into_inner(),
            },
            None => job,
        };
        // On this thread, the save waits for the compaction's persist as before.
        let done = run_capture(self.shard, job.req, None);
        self.captured(done);
    }

    /// On an orderly stop: waits for a capture in flight and keeps its snapshot (persisted
    /// with the log's last writes), so a restart finds the compaction it began.
    fn finish_capture(&mut self, captured: &Receiver<Captured>) {
        if !self.capture_pending {
            return;
        }
        // Only the capture's own reply sender may keep the channel open now: a capture the
        // snapshot thread skips (or a thread that is gone) ends the wait with a disconnect.
        let (closed, _) = crossbeam_channel::unbounded();
        let closed = Mailbox::new(closed, Arc::clone(&self.bell));
        drop(std::mem::replace(&mut self.captured_tx, closed));
        if let Ok(c) = captured.recv() {
            let flushed = catch_unwind(AssertUnwindSafe(|| {
                self.captured(c);
                self.flush()
            }));
            if !matches!(flushed, Ok(Ok(()))) {
                tracing::warn!(shard = self.shard, "the last capture was not kept at stop");
            }
        }
    }

    /// A capture finished: report it, and feed it to the core.
    fn captured(&mut self, c: Captured) {
        self.capture_pending = false;
        let cfg = self.node.config();
        let bytes = c.data.as_ref().map_or(0, Bytes::len);
        // A slow capture no longer stalls the group (it ran on the snapshot thread), but it
        // delays compaction and holds a second copy of the store: say so.
        if c.took.as_millis() as u64 * 4 >= cfg.election_timeout_min_ms {
            tracing::warn!(
                shard = self.shard,
                index = c.index,
                bytes,
                capture_ms = c.took.as_millis() as u64,
                group_thread_us = c.begin.as_micros() as u64,
                "slow snapshot capture (on the snapshot thread; the group's thread spent group_thread_us on it)"
            );
        } else {
            tracing::debug!(
                shard = self.shard,
                index = c.index,
                bytes,
                capture_us = c.took.as_micros() as u64,
                group_thread_us = c.begin.as_micros() as u64,
                "snapshot captured"
            );
        }
        self.presaved = c
            .data
            .as_ref()
            .filter(|_| c.saved)
            .map(|d| (c.index, c.term, d.as_ptr() as usize, d.len()));
        self.node.snapshot_captured(c.index, c.term, c.data);
    }

    /// A persist job is durable (or failed): acknowledge it, in order, or stop the group.
    fn persisted(&mut self, d: Done) -> Result<(), String> {
        if let Err(e) = d.result {
            // Nothing after a failed write may be acknowledged: this replica stops.
            return Err(format!("log write failed: {e}"));
        }
        self.send(d.after);
        let waiting = self.node.on_persisted(d.number);
        self.send(waiting);
        if let Some(index) = d.snapshot {
            self.status.snapshot.fetch_max(index, Ordering::AcqRel);
            if let Err(e) = self.snapshots.remove(self.shard, &|i| i < index) {
                tracing::warn!(shard = self.shard, "removing old snapshot files: {e}");
            }
        }
        Ok(())
    }

    fn send(&self, msgs: Vec<OutMsg>) {
        if msgs.is_empty() {
            return;
        }
        // A step-down or a transfer's `MsgTimeoutNow` must not leave while the old lease shows.
        self.publish_lease();
        let envs = msgs
            .into_iter()
            .map(|m| Envelope {
                group: self.shard,
                from: self.id,
                to: m.to,
                payload: m.payload,
            })
            .collect();
        // Full queues or dead peers drop messages; the protocols retransmit.
        let _ = self.transport.send_batch(envs);
    }

    fn flush(&mut self) -> Result<(), String> {
        loop {
            let out = self.node.poll();
            if let Some(reason) = self.node.failure() {
                // Nothing of this Ready is sent or persisted: the group stops as it was.
                return Err(reason.to_string());
            }
            if out.is_empty() {
                break;
            }
            self.send(out.messages);
            if let Some(job) = out.persist {
                self.persist(job)?;
            }
            if let Some(req) = out.capture {
                self.capture(req);
            }
        }
        // The lease first: a reader that sees the new role also sees a dropped lease.
        self.publish_lease();
        let s = &self.status;
        s.role
            .store(u8::from(self.node.is_leader()), Ordering::Release);
        s.leader
            .store(self.node.leader().unwrap_or(0), Ordering::Release);
        s.term.store(self.node.term(), Ordering::Release);
        s.commit.store(self.node.commit_index(), Ordering::Release);
        s.applied
            .store(self.node.applied_index(), Ordering::Release);
        s.resolved.store(self.node.resolved(), Ordering::Release);
        let rejoining = self.node.rejoining();
        if s.rejoining.swap(rejoining, Ordering::AcqRel) != rejoining {
            tracing::debug!(shard = self.shard, rejoining, "rejoin state published");
        }
        if (rejoining || self.rejoin_watch.alone_since.is_some())
            && let Some(secs) =
                self.rejoin_watch
                    .check(rejoining, self.node.leader().is_some(), Instant::now())
        {
            tracing::warn!(
                shard = self.shard,
                "still rejoining after {secs} s without a leader: this replica lost its log \
                 (memory durability) and may not vote until it catches up with one; if every \
                 replica of this shard restarted, the shard's data is gone and none can lead: \
                 stop them and remove their data directories to start the shard empty"
            );
        }
        if self.node.is_leader() || !s.rejoining_peers.lock().is_empty() {
            let peers = if self.node.is_leader() {
                self.node.rejoining_peers()
            } else {
                Vec::new()
            };
            let mut published = s.rejoining_peers.lock();
            if *published != peers {
                *published = peers;
            }
        }
        Ok(())
    }

    fn persist(&mut self, mut job: PersistJob) -> Result<(), String> {
        // The snapshot file first: the log record that names it follows. A local capture is
        // usually saved already (by the snapshot thread, before it reported back).
        let presaved = !job.snapshot_installed
            && job.snapshot.as_ref().is_some_and(|s| {
                self.presaved == Some((s.index, s.term, s.data.as_ptr() as usize, s.data.len()))
            });
        if let Some(s) = job.snapshot.as_ref().filter(|_| !presaved) {
            self.status.saves_in_turn.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.snapshots.save(self.shard, s) {
                if job.snapshot_installed {
                    // The leader's snapshot replaced our state; without it on disk we cannot
                    // go on.
                    return Err(format!("saving the installed snapshot: {e}"));
                }
                // A local compaction just does not happen on disk; the log keeps the entries.
                tracing::error!(
                    shard = self.shard,
                    "saving snapshot, compaction skipped: {e}"
                );
                job.snapshot = None;
                job.compact_to = None;
            }
        }
        let snapshot = job.snapshot.as_ref().map(|s| s.index);
        let number = job.number;
        let after = std::mem::take(&mut job.after);
        // One log-store write never spans segments: a job larger than that goes as several
        // writes, entries first, the rest last. A crash between them keeps a prefix of the
        // job's entries: with Raft's truncating writes it loses the entries the job
        // overwrote from its first write on (never acknowledged as part of this job, which
        // Raft tolerates); with `keep_later` (Multi-Paxos) every write replaces only its own
        // slots, so each slot holds its old or its new value, never nothing.
        let limit = (self.log.max_write_bytes() as usize / 2).max(1);
        let mut parts: Vec<Vec<_>> = Vec::new();
        let mut size = 0usize;
        for e in std::mem::take(&mut job.entries) {
            let n = e.payload.len() + ENTRY_OVERHEAD;
            if parts.is_empty() || size + n > limit {
                parts.push(Vec::new());
                size = 0;
            }
            size += n;
            if let Some(p) = parts.last_mut() {
                p.push(e);
            }
        }
        let last_part = parts.pop().unwrap_or_default();
        for (k, part) in parts.into_iter().enumerate() {
            // An installed snapshot replaces the log: it goes before any entry after it.
            let installed = k == 0 && job.snapshot_installed;
            let head = PersistJob {
                number,
                entries: part,
                keep_later: job.keep_later,
                snapshot: if installed { job.snapshot.take() } else { None },
                snapshot_installed: installed,
                ..PersistJob::default()
            };
            let tx = self.done_tx.clone();
            self.log.write(
                vec![durable::group_write(self.shard, &head)],
                Box::new(move |result| {
                    // Only a failure matters: the job's last write acknowledges it.
                    if result.is_err() {
                        let _ = tx.send(Done {
                            number,
                            after: Vec::new(),
                            snapshot: None,
                            result,
                        });
                    }
                }),
            );
        }
        job.entries = last_part;
        if job.snapshot.is_none() {
            job.snapshot_installed = false;
        }
        let write = durable::group_write(self.shard, &job);
        let tx = self.done_tx.clone();
        self.log.write(
            vec![write],
            Box::new(move |result| {
                let _ = tx.send(Done {
                    number,
                    after,
                    snapshot,
                    result,
                });
            }),
        );
        Ok(())
    }
}

impl Replicator for Worker {
    fn shard(&self) -> u32 {
        self.shard
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn submit(&self, entry: Bytes) -> Result<(), SubmitError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped);
        }
        let health = self.status.health.read();
        if !matches!(*health, GroupHealth::Running) {
            return Err(SubmitError::Failed);
        }
        if self.role() != Role::Leader {
            return Err(SubmitError::NotLeader {
                hint: self.leader(),
            });
        }
        if entry.len() > self.max_entry_bytes {
            return Err(SubmitError::TooLarge(entry.len()));
        }
        if self.outstanding() >= self.max_unresolved {
            return Err(SubmitError::Busy);
        }
        self.submitted.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(Cmd::Propose(entry)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.submitted.fetch_sub(1, Ordering::AcqRel);
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Busy,
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }

    fn on_apply(&self, role: Role, cb: ApplyFn) {
        self.dispatcher.set_callback(role, cb);
        // Entries committed before any callback was registered wait in the queue.
        self.retry_pending();
    }

    fn on_role_change(&self, cb: RoleChangeFn) {
        self.dispatcher.add_role_listener(cb);
    }

    fn on_unapplied(&self, cb: UnappliedFn) {
        self.dispatcher.set_unapplied_callback(cb);
    }

    fn on_apply_round(&self, cb: RoundFn) {
        self.dispatcher.set_round_callback(cb);
    }

    fn outstanding(&self) -> u64 {
        self.submitted
            .load(Ordering::Acquire)
            .saturating_sub(self.status.resolved.load(Ordering::Acquire))
    }

    fn health(&self) -> GroupHealth {
        self.status.health.read().clone()
    }

    fn role(&self) -> Role {
        if self.status.role.load(Ordering::Acquire) == 1 {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    fn leader(&self) -> Option<NodeId> {
        let l = self.status.leader.load(Ordering::Acquire);
        (l != 0).then_some(l)
    }

    fn term(&self) -> u64 {
        self.status.term.load(Ordering::Acquire)
    }

    fn commit_index(&self) -> u64 {
        self.status.commit.load(Ordering::Acquire)
    }

    fn applied_index(&self) -> u64 {
        self.status.applied.load(Ordering::Acquire)
    }

    fn snapshot_index(&self) -> u64 {
        self.status.snapshot.load(Ordering::Acquire)
    }

    fn transfer_leader(&self, to: NodeId) -> Result<(), SubmitError> {
        if self.role() != Role::Leader {
            return Err(SubmitError::NotLeader {
                hint: self.leader(),
            });
        }
        if self.status.rejoining_peers.lock().contains(&to) {
            // A rejoining replica neither campaigns nor takes over (see `GroupConfig::rejoin`).
            return Err(SubmitError::Busy);
        }
        // No lease from here until the worker has handled the command (and dropped the
        // node's lease): `lease_until` reads this counter first.
        self.status.transfers_pending.fetch_add(1, Ordering::SeqCst);
        self.tx.try_send(Cmd::Transfer(to)).map_err(|e| {
            self.status.transfers_pending.fetch_sub(1, Ordering::SeqCst);
            match e {
                TrySendError::Full(_) => SubmitError::Busy,
                TrySendError::Disconnected(_) => SubmitError::Stopped,
            }
        })
    }

    /// The leader lease (see [`Replicator::lease_until`]); each protocol argues its lease
    /// in its own crate. Lock-free: two atomic loads and a clock read.
    fn lease_until(&self) -> Option<Instant> {
        // The pending-transfer count first: once it reads zero after a transfer command
        // was handled, the worker's dropping of the lease is visible below.
        if self.status.transfers_pending.load(Ordering::SeqCst) != 0 {
            return None;
        }
        let until = self.status.lease.load(Ordering::SeqCst);
        if until == 0 {
            return None;
        }
        let t = self.origin + Duration::from_nanos(until);
        (Instant::now() < t).then_some(t)
    }

    fn set_snapshot_handler(&self, handler: Box<dyn SnapshotHandler>) {
        let _ = self.tx.send(Cmd::SnapshotHandler(handler));
    }

    fn rejoining(&self) -> bool {
        self.status.rejoining.load(Ordering::Acquire)
    }

    fn retry_pending(&self) {
        let _ = self.tx.try_send(Cmd::RetryPending);
    }

    fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.tx.send(Cmd::Shutdown);
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

impl Worker {
    /// Test hook: freezes the worker until the returned sender is dropped (`None` if the
    /// worker stopped or its command queue is full).
    pub fn pause(&self) -> Option<Sender<()>> {
        let (tx, rx) = crossbeam_channel::bounded(0);
        self.tx.try_send(Cmd::Pause(rx)).ok().map(|()| tx)
    }

    /// Peers this replica, as leader, knows to be rejoining (never picked for a transfer).
    pub fn rejoining_peers(&self) -> Vec<NodeId> {
        self.status.rejoining_peers.lock().clone()
    }

    /// Snapshots this group's thread saved itself: installed ones, and local captures only
    /// when the snapshot thread could not save them.
    pub fn snapshot_saves_in_turn(&self) -> u64 {
        self.status.saves_in_turn.load(Ordering::Relaxed)
    }

    /// Inbound messages dropped because this group's inbox was full.
    pub fn inbox_drops(&self) -> u64 {
        self.status.inbox_drops.load(Ordering::Relaxed)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's nice value.
    fn nice() -> i32 {
        // SAFETY: plain integer arguments (see `lower_priority`).
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    fn request(index: u64, data: &'static [u8]) -> CaptureRequest {
        CaptureRequest {
            index,
            term: 1,
            run: Box::new(move || Some(Bytes::from_static(data))),
            begin: Duration::ZERO,
        }
    }

    /// A capture is saved off the group's thread, but never over a snapshot already kept at
    /// its index: that may be the one the log names, and the capture one the core drops.
    #[test]
    fn a_capture_is_saved_unless_its_index_is_already_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshots::new(dir.path()).unwrap();
        let done = run_capture(0, request(7, b"fresh"), Some(&store));
        assert!(done.saved);
        assert_eq!(&store.load(0, 7).unwrap().unwrap().data[..], b"fresh");

        let named = Snapshot {
            index: 9,
            term: 1,
            data: Bytes::from_static(b"named by the log"),
        };
        store.save(0, &named).unwrap();
        let again = run_capture(0, request(9, b"a mix the core will drop"), Some(&store));
        assert!(!again.saved, "not saved over the kept snapshot");
        assert_eq!(
            again.data.as_deref(),
            Some(&b"a mix the core will drop"[..])
        );
        assert_eq!(store.load(0, 9).unwrap().unwrap(), named);
    }

    #[test]
    fn a_replica_rejoining_without_a_leader_warns_after_a_while_and_then_less_often() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = RejoinWatch::default();
        assert_eq!(w.check(true, false, at(0)), None);
        assert_eq!(w.check(true, false, at(29)), None);
        assert_eq!(w.check(true, false, at(30)), Some(30));
        assert_eq!(w.check(true, false, at(31)), None);
        assert_eq!(w.check(true, false, at(89)), None);
        assert_eq!(w.check(true, false, at(90)), Some(90));
        // A leader seen (or the rejoin over) starts the count again.
        assert_eq!(w.check(true, true, at(91)), None);
        assert_eq!(w.check(true, false, at(100)), None);
        assert_eq!(w.check(true, false, at(129)), None);
        assert_eq!(w.check(true, false, at(130)), Some(30));
        assert_eq!(w.check(false, false, at(131)), None);
        assert_eq!(w.check(true, false, at(170)), None);
    }

    #[test]
    fn the_snapshot_thread_runs_at_a_lower_priority_than_its_parent() {
        let parent = nice();
        let child = std::thread::spawn(|| {
            lower_priority();
            nice()
        })
        .join()
        .expect("thread");
        assert_eq!(child, (parent + SNAPSHOT_NICE).min(19));
        // Only that thread: the caller's priority is unchanged.
        assert_eq!(nice(), parent);
    }
}
