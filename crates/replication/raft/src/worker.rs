//! `RaftHost` and `RaftWorker`: the threads that drive `RaftNode`s with a transport and a durable log.
//!
//! A host is one replica process's Raft side: it owns the transport's inbox
//! (a router thread hands each envelope to its group's worker) and the node's
//! shared [`LogStore`] (one log stream for every group, so one sync covers
//! many appends). Each group gets a [`RaftWorker`] thread that waits on its
//! channels (commands, inbound messages, the heartbeat ticker, persistence
//! completions) — no polling — feeds the [`RaftNode`], sends what it produces,
//! and queues what must be durable.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, select};
use mako_logstore::{
    GroupState, GroupWrite, HardState as LogHardState, LogEntry, LogStore, SnapshotMeta,
};
use mako_replication::{
    ApplyDispatcher, ApplyFn, NodeId, Replicator, Role, RoleChangeFn, SnapshotHandler, SubmitError,
};
use mako_transport::{Envelope, Transport};
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState, Snapshot};

use crate::config::RaftConfig;
use crate::node::{InitialState, NodeError, OutMsg, PersistJob, RaftNode};

/// Why a host or group could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The node rejected its configuration or recovered state.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A recovered log entry did not decode.
    #[error("recovered log entry {index} of shard {shard} is corrupt: {reason}")]
    CorruptEntry {
        /// The group.
        shard: u32,
        /// Its index.
        index: u64,
        /// The decoder's complaint.
        reason: String,
    },
    /// Reading the snapshot file failed.
    #[error("snapshot file {path}: {source}")]
    Snapshot {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
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
    Persisted(u64, Vec<OutMsg>),
    Shutdown,
}

/// Status the worker publishes for lock-free reads.
#[derive(Default)]
struct Published {
    role: AtomicU8,
    leader: AtomicU64,
    term: AtomicU64,
    commit: AtomicU64,
    applied: AtomicU64,
    outstanding: AtomicU64,
}

/// One group's Raft replica, driven by its own thread; implements [`Replicator`].
pub struct RaftWorker {
    id: NodeId,
    shard: u32,
    tx: Sender<Cmd>,
    dispatcher: Arc<ApplyDispatcher>,
    status: Arc<Published>,
    stopped: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RaftWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftWorker")
            .field("id", &self.id)
            .field("shard", &self.shard)
            .field("role", &self.role())
            .field("term", &self.term())
            .field("commit", &self.commit_index())
            .finish()
    }
}

/// Where a host keeps what Raft needs besides the log store.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Directory for snapshot files (`None` keeps snapshots in memory only).
    pub snapshot_dir: Option<PathBuf>,
}

/// One replica process's Raft side: transport inbox router, shared log store, group workers.
pub struct RaftHost {
    transport: Arc<dyn Transport>,
    log: Arc<LogStore>,
    recovered: Mutex<HashMap<u32, GroupState>>,
    routes: Arc<Mutex<HashMap<u32, Sender<Envelope>>>>,
    workers: Mutex<Vec<Arc<RaftWorker>>>,
    router: Mutex<Option<JoinHandle<()>>>,
    router_stop: Sender<()>,
    cfg: HostConfig,
}

impl std::fmt::Debug for RaftHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftHost")
            .field("node", &self.transport.local_id())
            .field("groups", &self.workers.lock().len())
            .finish()
    }
}

impl RaftHost {
    /// A host over `transport` (whose inbox is `inbox`) and a log store opened with its recovered state.
    pub fn new(
        transport: Arc<dyn Transport>,
        inbox: Receiver<Envelope>,
        log: Arc<LogStore>,
        recovered: mako_logstore::Recovered,
        cfg: HostConfig,
    ) -> Self {
        if let Some(d) = &cfg.snapshot_dir
            && let Err(e) = std::fs::create_dir_all(d)
        {
            tracing::error!("creating snapshot directory {}: {e}", d.display());
        }
        let routes: Arc<Mutex<HashMap<u32, Sender<Envelope>>>> = Arc::default();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let r = Arc::clone(&routes);
        let router = std::thread::Builder::new()
            .name(format!("raft-router-{}", transport.local_id()))
            .spawn(move || {
                loop {
                    select! {
                        recv(inbox) -> env => {
                            let Ok(env) = env else { break };
                            let tx = r.lock().get(&env.group).cloned();
                            match tx {
                                Some(tx) => { let _ = tx.send(env); }
                                None => tracing::debug!(group = env.group, "message for a group not on this host"),
                            }
                        }
                        recv(stop_rx) -> _ => break,
                    }
                }
            })
            .ok();
        RaftHost {
            transport,
            log,
            recovered: Mutex::new(recovered.groups.into_iter().collect()),
            routes,
            workers: Mutex::new(Vec::new()),
            router: Mutex::new(router),
            router_stop: stop_tx,
            cfg,
        }
    }

    /// Starts this host's replica of group `cfg.shard`, recovering it from the log store.
    pub fn start_group(&self, cfg: RaftConfig) -> Result<Arc<RaftWorker>, StartError> {
        self.start_group_with(cfg, None)
    }

    /// Like [`RaftHost::start_group`], with the application's snapshot handler, which restores
    /// the recovered snapshot (if any) before the log after it is re-applied.
    pub fn start_group_with(
        &self,
        cfg: RaftConfig,
        snapshots: Option<Box<dyn SnapshotHandler>>,
    ) -> Result<Arc<RaftWorker>, StartError> {
        let shard = cfg.shard;
        if self.routes.lock().contains_key(&shard) {
            return Err(StartError::Duplicate(shard));
        }
        let recovered = self.recovered.lock().remove(&shard);
        let init = self.initial_state(shard, recovered)?;
        let dispatcher = Arc::new(ApplyDispatcher::new(shard));
        let node = RaftNode::new(cfg.clone(), init, Arc::clone(&dispatcher), snapshots)?;
        let (tx, cmd_rx) = crossbeam_channel::unbounded();
        let (in_tx, in_rx) = crossbeam_channel::unbounded();
        let status = Arc::new(Published::default());
        let mut driver = Driver {
            node,
            shard,
            id: cfg.id,
            transport: Arc::clone(&self.transport),
            log: Arc::clone(&self.log),
            cmd_tx: tx.clone(),
            status: Arc::clone(&status),
            snapshot_path: self.snapshot_path(shard),
        };
        let tick = Duration::from_millis(cfg.heartbeat_interval_ms);
        let thread = std::thread::Builder::new()
            .name(format!("raft-{}-{shard}", cfg.id))
            .spawn(move || driver.run(cmd_rx, in_rx, tick))
            .map_err(|_| StartError::Stopped)?;
        self.routes.lock().insert(shard, in_tx);
        let w = Arc::new(RaftWorker {
            id: cfg.id,
            shard,
            tx,
            dispatcher,
            status,
            stopped: AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
        });
        self.workers.lock().push(Arc::clone(&w));
        Ok(w)
    }

    fn snapshot_path(&self, shard: u32) -> Option<PathBuf> {
        self.cfg
            .snapshot_dir
            .as_ref()
            .map(|d| d.join(format!("snapshot-{shard}.bin")))
    }

    fn initial_state(&self, shard: u32, g: Option<GroupState>) -> Result<InitialState, StartError> {
        let Some(g) = g else {
            return Ok(InitialState::default());
        };
        let mut hs = HardState {
            term: g.hard_state.term,
            vote: g.hard_state.vote,
            commit: g.hard_state.commit,
            ..Default::default()
        };
        let mut entries = Vec::with_capacity(g.entries.len());
        for e in &g.entries {
            let entry =
                Entry::parse_from_bytes(&e.payload).map_err(|err| StartError::CorruptEntry {
                    shard,
                    index: e.index,
                    reason: err.to_string(),
                })?;
            entries.push(entry);
        }
        // The snapshot file holds the newest snapshot taken or installed; use it if the
        // recovered log continues from it.
        let file = match self.snapshot_path(shard) {
            Some(path) if path.exists() => {
                let bytes = std::fs::read(&path).map_err(|source| StartError::Snapshot {
                    path: path.clone(),
                    source,
                })?;
                Some(
                    Snapshot::parse_from_bytes(&bytes).map_err(|e| StartError::Snapshot {
                        path,
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                    })?,
                )
            }
            _ => None,
        };
        let needed_from = g.first_index.max(g.snapshot.map_or(0, |m| m.index + 1));
        let snapshot = file.filter(|s| {
            let i = s.get_metadata().index;
            i + 1 >= needed_from && g.snapshot.is_none_or(|m| i >= m.index)
        });
        // Without usable snapshot data the prefix is gone; rejoin empty and let the leader send a snapshot.
        let from = snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
        if snapshot.is_none() && (needed_from > 1 || g.snapshot.is_some()) {
            entries.clear();
            hs.commit = 0;
        }
        entries.retain(|e| e.index > from);
        Ok(InitialState {
            hard_state: hs,
            snapshot,
            entries,
        })
    }

    /// Routes transport envelopes of `group` (not a Raft group here, e.g. a control channel) to `tx`.
    pub fn add_route(&self, group: u32, tx: Sender<Envelope>) {
        self.routes.lock().insert(group, tx);
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
    pub fn groups(&self) -> Vec<Arc<RaftWorker>> {
        self.workers.lock().clone()
    }

    /// Stops every group, the router, and syncs the log store; idempotent.
    pub fn shutdown(&self) {
        let workers = std::mem::take(&mut *self.workers.lock());
        for w in &workers {
            w.shutdown();
        }
        let _ = self.router_stop.try_send(());
        if let Some(h) = self.router.lock().take() {
            let _ = h.join();
        }
        self.log.shutdown();
    }
}

impl Drop for RaftHost {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Most commands (or messages) taken in one turn of a worker's loop before it looks at the others.
const DRAIN_LIMIT: usize = 1024;

/// The worker thread's state.
struct Driver {
    node: RaftNode,
    shard: u32,
    id: NodeId,
    transport: Arc<dyn Transport>,
    log: Arc<LogStore>,
    cmd_tx: Sender<Cmd>,
    status: Arc<Published>,
    snapshot_path: Option<PathBuf>,
}

impl Driver {
    fn run(&mut self, cmds: Receiver<Cmd>, inbox: Receiver<Envelope>, tick: Duration) {
        let ticker = crossbeam_channel::tick(tick);
        loop {
            // Wait for anything.
            select! {
                recv(cmds) -> c => match c {
                    Ok(Cmd::Shutdown) | Err(_) => break,
                    Ok(c) => self.command(c),
                },
                recv(inbox) -> env => {
                    let Ok(env) = env else { break };
                    self.receive(&env);
                },
                recv(ticker) -> _ => self.node.tick(),
            }
            // Then take what else is ready — a bounded amount of each, so a flood of
            // proposals never starves peers' messages or the heartbeat tick.
            for _ in 0..DRAIN_LIMIT {
                match cmds.try_recv() {
                    Ok(Cmd::Shutdown) => {
                        self.flush();
                        return;
                    }
                    Ok(c) => self.command(c),
                    Err(_) => break,
                }
            }
            for _ in 0..DRAIN_LIMIT {
                match inbox.try_recv() {
                    Ok(env) => self.receive(&env),
                    Err(_) => break,
                }
            }
            if ticker.try_recv().is_ok() {
                self.node.tick();
            }
            self.flush();
        }
        self.flush();
    }

    fn receive(&mut self, env: &Envelope) {
        if let Err(e) = self.node.step(env.from, &env.payload) {
            tracing::warn!(shard = self.shard, from = env.from, "dropping message: {e}");
        }
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Propose(entry) => {
                // A lost leadership drops the entry: callers learn through watermarks, as in Mako.
                let _ = self.node.propose(entry);
            }
            Cmd::Transfer(to) => {
                let _ = self.node.transfer_leader(to);
            }
            Cmd::RetryPending => {
                self.node.dispatcher().retry_pending();
            }
            Cmd::SnapshotHandler(h) => self.node.set_snapshot_handler(h),
            Cmd::Persisted(number, after) => {
                self.send(after);
                self.node.on_persisted(number);
            }
            Cmd::Shutdown => {}
        }
    }

    fn send(&self, msgs: Vec<OutMsg>) {
        if msgs.is_empty() {
            return;
        }
        let envs = msgs
            .into_iter()
            .map(|m| Envelope {
                group: self.shard,
                from: self.id,
                to: m.to,
                payload: m.payload,
            })
            .collect();
        // Full queues or dead peers drop messages; Raft retransmits.
        let _ = self.transport.send_batch(envs);
    }

    fn flush(&mut self) {
        loop {
            let out = self.node.poll();
            if out.is_empty() {
                break;
            }
            self.send(out.messages);
            if let Some(job) = out.persist {
                self.persist(job);
            }
        }
        let s = &self.status;
        s.role
            .store(u8::from(self.node.is_leader()), Ordering::Release);
        s.leader
            .store(self.node.leader().unwrap_or(0), Ordering::Release);
        s.term.store(self.node.term(), Ordering::Release);
        s.commit.store(self.node.commit_index(), Ordering::Release);
        s.applied
            .store(self.node.applied_index(), Ordering::Release);
        s.outstanding
            .store(self.node.outstanding(), Ordering::Release);
    }

    fn persist(&mut self, job: PersistJob) {
        let PersistJob {
            number,
            entries,
            hard_state,
            snapshot,
            snapshot_installed,
            compact_to,
            after,
        } = job;
        // A leader's snapshot replaces the durable log; a local compaction only trims it
        // (the entries after the snapshot index stay durable).
        let snapshot_meta =
            snapshot
                .as_ref()
                .filter(|_| snapshot_installed)
                .map(|s| SnapshotMeta {
                    index: s.get_metadata().index,
                    term: s.get_metadata().term,
                });
        if let (Some(s), Some(path)) = (&snapshot, &self.snapshot_path)
            && let Err(e) = write_atomically(path, &s.write_to_bytes().unwrap_or_default())
        {
            tracing::error!(shard = self.shard, "writing snapshot: {e}");
        }
        let write = GroupWrite {
            group: self.shard,
            entries: entries
                .iter()
                .map(|e| LogEntry {
                    index: e.index,
                    term: e.term,
                    payload: Bytes::from(e.write_to_bytes().unwrap_or_default()),
                })
                .collect(),
            hard_state: hard_state.map(|h| LogHardState {
                term: h.term,
                vote: h.vote,
                commit: h.commit,
            }),
            snapshot: snapshot_meta,
            compact_to,
        };
        let tx = self.cmd_tx.clone();
        let shard = self.shard;
        self.log.write(
            vec![write],
            Box::new(move |res| {
                if let Err(e) = res {
                    // Without durability the node must not acknowledge; it stays silent.
                    tracing::error!(shard, "log write failed: {e}");
                    return;
                }
                let _ = tx.send(Cmd::Persisted(number, after));
            }),
        );
    }
}

/// Writes `data` to `path` via a synced temporary file and a rename.
fn write_atomically(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Replicator for RaftWorker {
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
        if self.role() != Role::Leader {
            return Err(SubmitError::NotLeader {
                hint: self.leader(),
            });
        }
        self.tx
            .send(Cmd::Propose(entry))
            .map_err(|_| SubmitError::Stopped)
    }

    fn on_apply(&self, role: Role, cb: ApplyFn) {
        self.dispatcher.set_callback(role, cb);
    }

    fn on_role_change(&self, cb: RoleChangeFn) {
        self.dispatcher.add_role_listener(cb);
    }

    fn outstanding(&self) -> u64 {
        self.status.outstanding.load(Ordering::Acquire)
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

    fn transfer_leader(&self, to: NodeId) -> Result<(), SubmitError> {
        if self.role() != Role::Leader {
            return Err(SubmitError::NotLeader {
                hint: self.leader(),
            });
        }
        self.tx
            .send(Cmd::Transfer(to))
            .map_err(|_| SubmitError::Stopped)
    }

    fn set_snapshot_handler(&self, handler: Box<dyn SnapshotHandler>) {
        let _ = self.tx.send(Cmd::SnapshotHandler(handler));
    }

    fn retry_pending(&self) {
        let _ = self.tx.send(Cmd::RetryPending);
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

impl Drop for RaftWorker {
    fn drop(&mut self) {
        self.shutdown();
    }
}
