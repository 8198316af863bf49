//! A site: one replica of one shard — store, replication group, watermarks, callbacks, control thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mako_commitlog::BatchConfig;
use mako_replication::{NodeId, Replicator, Role};
use mako_storage::{Store, Table, TableId};
use mako_transport::{Envelope, Transport};
use mako_txn::{Shard, Transaction};
use mako_watermark::{Epoch, LogWatermark, MetaCommand, StreamId, stream_id, stream_shard};
use parking_lot::Mutex;

use crate::coord::Decisions;
use crate::epochs::{EpochView, Verdict};
use crate::finality::VersionFinality;
use crate::lead::Lead;
use crate::msg::{CONTROL_GROUP, Msg, PeerError, Refusal, Reply, TxnId};
use crate::participant::{Desk, Participants};
use crate::streams::StreamLog;

/// A shard leader sends its watermark to other shards' leaders every tick it moved, and to
/// every replica every this many ticks (and when its epoch moves), moved or not.
pub const WATERMARK_TO_ALL_EVERY: u64 = 10;

/// A site that leads neither its shard nor `meta` ticks this many times less often: its
/// tick has little to do (decision resends and purges keep their own periods), and a
/// cluster of `S` shards has `3S` tickers. A new leader is woken at once.
pub const IDLE_TICK_EVERY: u32 = 10;

/// What every site of a cluster agrees on.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// Number of shards.
    pub shards: u32,
    /// Coordinator workers per shard (one commit-log stream each, on every shard).
    pub workers: u32,
    /// Tables every shard holds, created at start (stable ids by name).
    pub tables: Vec<String>,
    /// Batching of the commit log.
    pub batch: BatchConfig,
    /// Period of linger flushes, heartbeats and the watermark exchange.
    pub tick: Duration,
    /// How long `commit` waits for release, and a coordinator for a reply.
    pub timeout: Duration,
    /// Largest commit-log entry submitted; must not exceed what the replication group accepts
    /// (Raft: `max_entry_bytes`, lowered to what its log store holds). A transaction whose piece
    /// on a shard would not fit in one entry aborts with `AbortReason::TooLarge`.
    pub max_entry_bytes: usize,
    /// Finished multi-shard transactions a participant remembers (for idempotency); older ones
    /// are summarised by a per-coordinator horizon below which requests are refused.
    pub finished_cap: usize,
    /// Decision records a coordinator keeps for unacknowledged or refused decisions; beyond it
    /// the oldest is forgotten and its transaction stays pending (`Unknown`) for good.
    pub max_decisions: usize,
    /// Times a decision is resent to a silent participant before the coordinator stops (the
    /// outcome then stays pending; a late acknowledgement or inquiry still completes it).
    pub max_resends: u32,
    /// How long a participant keeps a piece that is still in its read phase without hearing
    /// from its coordinator; then it forgets it (a later Lock or Validate is refused).
    pub read_phase_timeout: Duration,
    /// Members of the `meta` group (`None`: 1 for one site, 5 from 9 sites, else 3).
    pub meta_size: Option<usize>,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            shards: 1,
            workers: 2,
            tables: vec!["usertable".into()],
            batch: BatchConfig::default(),
            tick: Duration::from_millis(1),
            timeout: Duration::from_secs(5),
            max_entry_bytes: crate::streams::DEFAULT_MAX_ENTRY_BYTES,
            finished_cap: 1 << 16,
            max_decisions: 1 << 16,
            max_resends: 100,
            read_phase_timeout: Duration::from_secs(60),
            meta_size: None,
        }
    }
}

impl SiteConfig {
    /// Every stream of the deployment: worker `w` of shard `c` for all `c`, `w`.
    pub fn streams(&self) -> Vec<StreamId> {
        (0..self.shards)
            .flat_map(|c| (0..self.workers).map(move |w| stream_id(c, w)))
            .collect()
    }
}

/// Counters of a site.
#[derive(Debug, Default)]
pub struct SiteStats {
    /// Batches replayed by the follower callback.
    pub replayed: AtomicU64,
    /// Entries currently in the follower queue (`SafetyFail`, not yet replayed).
    pub queued: AtomicU64,
    /// Log entries that failed to decode (logged once each, then skipped).
    pub undecodable: AtomicU64,
    /// Control messages refused as malformed (logged at most once a second).
    pub malformed: AtomicU64,
    /// Pieces the participant side currently holds (open, locked or prepared).
    pub pieces: AtomicU64,
    /// Coordinator requests redirected to a hinted leader after a `NotLeader` refusal.
    pub redirects: AtomicU64,
    /// Pieces the discard rule dropped at replay.
    pub discarded: AtomicU64,
    /// Versions of discarded transactions removed from the store.
    pub purged: AtomicU64,
    /// Epoch histories sent as `meta` leader.
    pub broadcasts: AtomicU64,
    /// Transactions refused because this leader held no lease (its reads could be stale).
    pub no_lease: AtomicU64,
    /// An `Advancer` (end of loading) was applied here.
    pub loaded: AtomicBool,
    /// Snapshots restored into this site (catch-up from its leader).
    pub restored: AtomicU64,
    /// Log index of the newest snapshot restored here (an older one is refused).
    pub restored_index: AtomicU64,
    /// Snapshots refused as malformed (the state was left as it was).
    pub refused: AtomicU64,
    /// Ticks run (see [`IDLE_TICK_EVERY`]).
    pub ticks: AtomicU64,
}

/// One replica of one shard.
pub struct Site {
    pub(crate) cfg: SiteConfig,
    pub(crate) shard_id: u32,
    pub(crate) node: NodeId,
    /// Node ids of every shard's replicas (`[shard][replica]`); replica 0 is the preferred leader.
    pub(crate) nodes: Vec<Vec<NodeId>>,
    /// Per shard, the replica this site believes leads it (coordinators address it).
    pub(crate) leaders: Vec<AtomicU64>,
    pub(crate) store: Arc<Store>,
    pub(crate) shard: Shard,
    pub(crate) tables: Vec<Arc<Table>>,
    pub(crate) log: Arc<StreamLog>,
    pub(crate) group: Arc<dyn Replicator>,
    /// `W_s` per epoch from the committed log prefix applied here.
    pub(crate) wm: Mutex<LogWatermark>,
    /// The epoch history and each open epoch's `VW`.
    pub(crate) epochs: Arc<EpochView>,
    /// Where this site stands as leader.
    pub(crate) lead: Mutex<Lead>,
    /// Which versions of the store a failover may still discard.
    pub(crate) finality: Arc<VersionFinality>,
    /// The `meta` replica this site hosts, if it is a member.
    pub(crate) meta: OnceLock<Arc<dyn Replicator>>,
    /// The members of `meta`.
    pub(crate) meta_members: Vec<NodeId>,
    /// Version and time of the last history broadcast (as `meta` leader).
    pub(crate) history_sent: Mutex<Option<(u64, Instant)>>,
    /// When components were last reported to `meta`.
    pub(crate) component_sent: Mutex<Option<Instant>>,
    /// History version last acted on by the ticker.
    seen_version: AtomicU64,
    /// Leader ticks that sent this shard's watermark (every [`WATERMARK_TO_ALL_EVERY`]th goes to all).
    wm_ticks: AtomicU64,
    /// The epoch of the last watermark sent to every replica.
    wm_epoch_sent: AtomicU32,
    /// The last watermark the ticker sent (to other shards' leaders or to everyone).
    wm_sent: AtomicU64,
    /// The last watermark the apply callback pushed to other shards' leaders (apart from
    /// `wm_sent`: a tick that sent a value does not stop the push of it, nor the reverse).
    wm_pushed: AtomicU64,
    /// Wakes the ticker at once (this site became leader).
    tick_wake: (Sender<()>, Receiver<()>),
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) pending: Mutex<HashMap<u64, Sender<Reply>>>,
    pub(crate) next_req: AtomicU64,
    pub(crate) next_txn: AtomicU64,
    /// The coordinator's decisions not yet acknowledged by every participant.
    pub(crate) decisions: Decisions,
    /// Follower replay lag samples (microseconds from first apply to replay of queued entries).
    pub(crate) lag: Mutex<Vec<u64>>,
    pub(crate) first_seen: Mutex<HashMap<u64, Instant>>,
    pub(crate) stats: SiteStats,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop_tx: Mutex<Option<Sender<()>>>,
    /// When a malformed control message was last logged.
    malformed_logged: Mutex<Option<Instant>>,
    /// The participant's pieces (owned by the control thread; gone once it ended).
    desk: OnceLock<Weak<Desk>>,
    /// Whether peers' messages are received on their senders' threads (one process).
    inline_peers: bool,
    /// Wakes the control thread to end the pieces of an epoch this site stopped serving.
    epoch_left: (Sender<()>, Receiver<()>),
    /// Test hook: the site's threads are frozen while set.
    paused: Mutex<bool>,
    unpaused: parking_lot::Condvar,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("shard", &self.shard_id)
            .field("node", &self.node)
            .field("role", &self.group.role())
            .field("lead", &*self.lead.lock())
            .finish()
    }
}

/// Why a transaction could not begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BeginError {
    /// The worker has no commit-log stream (it is not below the configured `workers`).
    #[error("worker {worker} is not configured (workers: {workers})")]
    NoSuchWorker {
        /// The worker asked for.
        worker: u32,
        /// Configured workers per shard.
        workers: u32,
    },
}

/// Why a site could not start.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// A table could not be created.
    #[error("creating tables: {0}")]
    Storage(#[from] mako_storage::StorageError),
    /// The snapshot the group started from could not be installed.
    #[error("installing the snapshot the group started from: {0}")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
}

impl Site {
    /// Builds a site and wires its callbacks and snapshot handler into `group`; call
    /// [`Site::start`] to run its threads.
    pub fn new(
        cfg: SiteConfig,
        shard_id: u32,
        node: NodeId,
        nodes: Vec<Vec<NodeId>>,
        group: Arc<dyn Replicator>,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<Site>, SiteError> {
        Site::build(cfg, shard_id, node, nodes, group, transport, None)
    }

    /// [`Site::new`] for a group started with the handler of [`crate::snapshot::detached`]
    /// (a replica restarting from a compacted log): `slot` installs what the group restored.
    pub fn with_snapshots(
        cfg: SiteConfig,
        shard_id: u32,
        node: NodeId,
        nodes: Vec<Vec<NodeId>>,
        group: Arc<dyn Replicator>,
        transport: Arc<dyn Transport>,
        slot: crate::snapshot::SnapshotSlot,
    ) -> Result<Arc<Site>, SiteError> {
        Site::build(cfg, shard_id, node, nodes, group, transport, Some(slot))
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        cfg: SiteConfig,
        shard_id: u32,
        node: NodeId,
        nodes: Vec<Vec<NodeId>>,
        group: Arc<dyn Replicator>,
        transport: Arc<dyn Transport>,
        slot: Option<crate::snapshot::SnapshotSlot>,
    ) -> Result<Arc<Site>, SiteError> {
        let store = Arc::new(Store::new());
        let finality = Arc::new(VersionFinality::default());
        store.set_finality(Arc::clone(&finality) as Arc<dyn mako_storage::Finality>);
        let tables = cfg
            .tables
            .iter()
            .map(|t| store.create_table(t))
            .collect::<Result<Vec<_>, _>>()?;
        let streams = cfg.streams();
        let log = Arc::new(
            StreamLog::new(shard_id as usize, &streams, &cfg.batch)
                .with_max_entry_bytes(cfg.max_entry_bytes),
        );
        log.set_group(Arc::clone(&group));
        let l = Arc::clone(&log);
        group.on_unapplied(Box::new(move |u| l.unapplied(&u)));
        let meta_members = crate::meta::meta_members(&nodes, cfg.meta_size);
        let shard = Shard::new(
            shard_id as usize,
            cfg.shards as usize,
            Arc::clone(&store),
            log.clone(),
        );
        let leaders = nodes
            .iter()
            .map(|r| AtomicU64::new(r.first().copied().unwrap_or(0)))
            .collect();
        let site = Arc::new(Site {
            shard_id,
            node,
            leaders,
            nodes,
            store,
            shard,
            tables,
            log,
            group: Arc::clone(&group),
            wm: Mutex::new(LogWatermark::new(&streams)),
            epochs: Arc::new(EpochView::new(cfg.shards)),
            lead: Mutex::new(Lead::Follower),
            finality,
            meta: OnceLock::new(),
            meta_members,
            history_sent: Mutex::new(None),
            component_sent: Mutex::new(None),
            seen_version: AtomicU64::new(0),
            wm_ticks: AtomicU64::new(0),
            wm_epoch_sent: AtomicU32::new(0),
            wm_sent: AtomicU64::new(0),
            wm_pushed: AtomicU64::new(0),
            tick_wake: crossbeam_channel::bounded(1),
            inline_peers: transport.receives_on_sending_thread(),
            transport,
            pending: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
            next_txn: AtomicU64::new(txn_id_seed()),
            decisions: Decisions::default(),
            lag: Mutex::new(Vec::new()),
            first_seen: Mutex::new(HashMap::new()),
            stats: SiteStats::default(),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            stop_tx: Mutex::new(None),
            malformed_logged: Mutex::new(None),
            desk: OnceLock::new(),
            epoch_left: crossbeam_channel::bounded(1),
            paused: Mutex::new(false),
            unpaused: parking_lot::Condvar::new(),
            cfg,
        });
        // A snapshot the group restored before this site existed goes in before any entry.
        let attached = slot.is_some();
        if let Some(slot) = slot {
            slot.attach(&site)?;
        }
        let s = Arc::clone(&site);
        group.on_role_change(Box::new(move |rc| s.on_role(rc)));
        if group.role() == Role::Leader {
            site.on_role(mako_replication::RoleChange {
                shard: shard_id,
                role: Role::Leader,
                term: group.term(),
                leader: Some(node),
            });
        }
        let s = Arc::clone(&site);
        group.on_apply(Role::Leader, Box::new(move |ctx| s.leader_apply(ctx)));
        let s = Arc::clone(&site);
        group.on_apply(Role::Follower, Box::new(move |ctx| s.follower_apply(ctx)));
        let s = Arc::clone(&site);
        group.on_apply_round(Box::new(move || s.applied_round()));
        if !attached {
            group.set_snapshot_handler(Box::new(crate::snapshot::SiteSnapshots::new(&site)));
        }
        Ok(site)
    }

    /// Starts the control thread (fed by `control`) and the ticker (flushes, heartbeats, exchange).
    pub fn start(self: &Arc<Self>, control: Receiver<Envelope>) {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        *self.stop_tx.lock() = Some(stop_tx);
        // The desk holds the site; the control thread owns it, the site only refers to it.
        let desk = Arc::new(Desk::new(Arc::clone(self)));
        let _ = self.desk.set(Arc::downgrade(&desk));
        let s = Arc::clone(self);
        let rx2 = stop_rx.clone();
        let control_thread = std::thread::Builder::new()
            .name(format!("site-ctl-{}", self.node))
            .spawn(move || s.control_loop(&desk, control, rx2));
        let s = Arc::clone(self);
        let ticker = std::thread::Builder::new()
            .name(format!("site-tick-{}", self.node))
            .spawn(move || {
                let wake = s.tick_wake.1.clone();
                let mut next = Instant::now() + s.cfg.tick;
                loop {
                    let wait = next.saturating_duration_since(Instant::now());
                    crossbeam_channel::select! {
                        recv(stop_rx) -> _ => break,
                        recv(wake) -> _ => {}
                        default(wait) => {}
                    }
                    s.wait_while_paused();
                    s.on_tick();
                    let period = if s.ticks_fast() {
                        s.cfg.tick
                    } else {
                        s.cfg.tick * IDLE_TICK_EVERY
                    };
                    // On schedule while on time; after a late tick, a full period from now.
                    next = (next + period).max(Instant::now() + period / 2);
                }
            });
        let mut threads = self.threads.lock();
        threads.extend(control_thread.ok());
        threads.extend(ticker.ok());
    }

    /// Test hook: freezes the site's threads (ticker and control) until [`Site::resume`].
    pub fn pause(&self) {
        *self.paused.lock() = true;
    }

    /// Test hook: lets the site's threads run again after [`Site::pause`].
    pub fn resume(&self) {
        *self.paused.lock() = false;
        self.unpaused.notify_all();
    }

    /// Whether the ticker runs every tick: this site leads (or is becoming leader of) its
    /// shard, or leads `meta`; otherwise every [`IDLE_TICK_EVERY`] ticks.
    fn ticks_fast(&self) -> bool {
        !matches!(*self.lead.lock(), Lead::Follower)
            || self.meta.get().is_some_and(|m| m.role() == Role::Leader)
    }

    /// Has the control thread end the pieces of the epoch this site no longer serves.
    pub(crate) fn left_epoch(&self) {
        let _ = self.epoch_left.0.try_send(());
    }

    /// Runs the ticker now (a role change that needs it).
    pub(crate) fn wake_ticker(&self) {
        let _ = self.tick_wake.0.try_send(());
    }

    fn wait_while_paused(&self) {
        let mut p = self.paused.lock();
        while *p && !self.stop.load(Ordering::Acquire) {
            self.unpaused.wait(&mut p);
        }
    }

    /// Stops the site's threads (the replication group is stopped by its host).
    pub fn stop(&self) {
        self.resume();
        if self.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        self.log.flush();
        drop(self.stop_tx.lock().take());
        for h in std::mem::take(&mut *self.threads.lock()) {
            let _ = h.join();
        }
    }

    /// Node ids of the replicas of `shard` (empty for an unknown shard).
    pub fn replicas_of(&self, shard: u32) -> Vec<NodeId> {
        self.nodes.get(shard as usize).cloned().unwrap_or_default()
    }

    /// The shard this site replicates.
    pub fn shard_id(&self) -> u32 {
        self.shard_id
    }

    /// This site's node id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The site's store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The transaction view of the shard (its clock, epoch and sink).
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// The replication group.
    pub fn group(&self) -> &Arc<dyn Replicator> {
        &self.group
    }

    /// Whether this site leads its shard.
    pub fn is_leader(&self) -> bool {
        self.group.role() == Role::Leader
    }

    /// The replica this site believes leads `shard`: its own group's leader for its shard;
    /// for other shards the last leader learned from watermarks and `NotLeader` hints,
    /// initially the configured preferred replica (replica 0). `None` for an unknown shard.
    pub fn leader_of(&self, shard: u32) -> Option<NodeId> {
        if shard == self.shard_id {
            if self.is_leader() {
                return Some(self.node);
            }
            if let Some(l) = self.group.leader() {
                return Some(l);
            }
        }
        self.leaders
            .get(shard as usize)
            .map(|l| l.load(Ordering::Relaxed))
    }

    /// Notes that `node` leads `shard` (ignored unless it is one of the shard's replicas).
    pub(crate) fn learn_leader(&self, shard: u32, node: NodeId) {
        let member = self
            .nodes
            .get(shard as usize)
            .is_some_and(|r| r.contains(&node));
        if let (true, Some(l)) = (member, self.leaders.get(shard as usize)) {
            l.store(node, Ordering::Relaxed);
        }
    }

    /// Coordinator requests this site redirected to a hinted leader so far.
    pub fn redirects(&self) -> u64 {
        self.stats.redirects.load(Ordering::Relaxed)
    }

    /// The epoch history and per-epoch watermarks known here.
    pub fn epochs(&self) -> &Arc<EpochView> {
        &self.epochs
    }

    /// The verdict, as known here now, on an epoch-`epoch` transaction stamped `vt`.
    pub fn judge(&self, epoch: Epoch, vt: &[u64]) -> Verdict {
        self.epochs.judge(epoch, vt)
    }

    /// Waits until the verdict on (`epoch`, `vt`) is decided or `deadline` passes.
    pub fn wait_verdict(&self, epoch: Epoch, vt: &[u64], deadline: Instant) -> Verdict {
        self.epochs.wait(epoch, vt, deadline)
    }

    /// This shard's `W_s` in the epoch its applied log prefix has reached.
    pub fn w(&self) -> u64 {
        self.wm.lock().value()
    }

    /// The epoch this site's applied log prefix has reached (after its last `NoOp`).
    pub fn log_epoch(&self) -> Epoch {
        self.wm.lock().epoch()
    }

    /// Whether this replica applied an `Advancer`: loading ended ([`Site::mark_loaded`]).
    pub fn loaded(&self) -> bool {
        self.stats.loaded.load(Ordering::Acquire)
    }

    /// Pieces the discard rule dropped at replay here.
    pub fn discarded(&self) -> u64 {
        self.stats.discarded.load(Ordering::Relaxed)
    }

    /// Table number `i` of the configured tables.
    pub fn table(&self, i: usize) -> Option<&Table> {
        self.tables.get(i).map(|t| &**t)
    }

    /// The table with id `id`.
    pub fn table_by_id(&self, id: TableId) -> Option<&Table> {
        self.tables.iter().find(|t| t.id() == id).map(|t| &**t)
    }

    /// The first table whose newest versions differ between this site and `other`, described.
    pub fn first_difference(&self, other: &Site) -> Option<String> {
        for lt in self.store.tables() {
            let Some(ot) = other.store.table(lt.name()) else {
                return Some(format!("table {} missing", lt.name()));
            };
            let (a, b) = (lt.latest(), ot.latest());
            if a != b {
                let first = a
                    .iter()
                    .zip(b.iter())
                    .find(|(x, y)| x != y)
                    .map(|(x, y)| {
                        format!("key {:02x?}: {:?} vs {:?}", &x.0[..], x.1.stamp, y.1.stamp)
                    })
                    .unwrap_or_else(|| format!("{} rows vs {}", a.len(), b.len()));
                return Some(format!("table {}: {first}", lt.name()));
            }
        }
        None
    }

    /// Snapshots restored into this site and refused as malformed, so far.
    pub fn snapshots(&self) -> (u64, u64) {
        (
            self.stats.restored.load(Ordering::Relaxed),
            self.stats.refused.load(Ordering::Relaxed),
        )
    }

    /// Entries waiting in the follower queue.
    pub fn queued(&self) -> usize {
        self.stats.queued.load(Ordering::Relaxed) as usize
    }

    /// Ticks this site's ticker has run.
    pub fn ticks(&self) -> u64 {
        self.stats.ticks.load(Ordering::Relaxed)
    }

    /// Batches replayed by the follower callback.
    pub fn replayed(&self) -> u64 {
        self.stats.replayed.load(Ordering::Relaxed)
    }

    /// Follower replay lag samples, microseconds.
    pub fn replay_lags(&self) -> Vec<u64> {
        self.lag.lock().clone()
    }

    /// The commit-log sink's counters.
    pub fn stream_stats(&self) -> crate::streams::StreamStats {
        self.log.stats()
    }

    /// One ticker step (run every `tick` by the site's thread, every [`IDLE_TICK_EVERY`]th
    /// on a site that leads nothing): on a leader, flush lingering batches, heartbeat idle
    /// streams, and send `W_s` to the sites that need it.
    pub fn on_tick(&self) {
        self.stats.ticks.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if let Some(desk) = self.desk.get().and_then(Weak::upgrade) {
            // The ticker never waits for the desk: a busy one is checked on a later tick.
            self.check_pieces(&desk, now, false);
        }
        self.resend_decisions(now);
        self.broadcast_history(now);
        let version = self.epochs.with(|h| h.version());
        if self.seen_version.swap(version, Ordering::AcqRel) != version {
            // `meta` publishes every shard's leader with each epoch.
            let leaders: Vec<(u32, NodeId)> = self.epochs.with(|h| {
                (0..h.shards())
                    .filter_map(|s| h.leader(s).map(|l| (s, l)))
                    .collect()
            });
            for (s, l) in leaders {
                if s != self.shard_id {
                    self.learn_leader(s, l);
                }
            }
            // New epochs or final watermarks: queued pieces may be decided now, and
            // versions this site installed as leader may have been discarded.
            self.group.retry_pending();
            if !self.is_leader() {
                self.purge(&self.epochs.history());
            }
        }
        self.drive_lead(now);
        if !self.is_leader() {
            return;
        }
        self.report_components(now);
        self.log.tick(now, self.shard.clock());
        let (epoch, w) = self.own_w();
        // Other shards' leaders release with it: every tick it moved (besides the pushes after
        // each round of applied entries, `push_watermark`, O(shards) messages per round).
        // Everyone else (followers, which replay with it, and the whole cluster when leaders
        // change) every few ticks, and at once when this shard's epoch moved. The tick's
        // exchange costs O(replicas) messages per leader per tick instead of O(shards x replicas).
        let n = self.wm_ticks.fetch_add(1, Ordering::Relaxed);
        // Recorded on every tick (pushes wait for the epoch's announcement to everyone).
        let epoch_moved = self.wm_epoch_sent.swap(epoch, Ordering::Relaxed) != epoch;
        let everyone = n.checked_rem(WATERMARK_TO_ALL_EVERY) == Some(0) || epoch_moved;
        // Other shards' leaders already know an unchanged watermark (and everyone hears it
        // again every few ticks, should a message have been lost).
        if self.wm_sent.swap(w, Ordering::Relaxed) == w && !everyone {
            return;
        }
        self.send_watermark(epoch, w, everyone);
    }

    /// Sends `W_s` to the other shards' leaders as soon as it moved: called once per round of
    /// applied entries ([`Site::applied_round`]), so a multi-shard release waits for no tick.
    /// The ticker still sends it to every other replica every few ticks.
    pub(crate) fn push_watermark(&self) {
        let (epoch, w) = self.own_w();
        if self.nodes.len() < 2 || w == u64::MAX {
            return;
        }
        // A new epoch goes to everyone, from the ticker.
        if self.wm_epoch_sent.load(Ordering::Relaxed) != epoch
            || self.wm_pushed.swap(w, Ordering::Relaxed) == w
        {
            return;
        }
        self.send_watermark(epoch, w, false);
    }

    /// Sends `W_s` (`w` in `epoch`) on the control channel to every other replica
    /// (`everyone`), or to the other shards' leaders only.
    fn send_watermark(&self, epoch: Epoch, w: u64, everyone: bool) {
        let to: Vec<NodeId> = if everyone {
            self.nodes
                .iter()
                .flatten()
                .copied()
                .filter(|&n| n != self.node)
                .collect()
        } else {
            (0..self.nodes.len() as u32)
                .filter(|&s| s != self.shard_id)
                .filter_map(|s| self.leader_of(s))
                .filter(|&n| n != self.node)
                .collect()
        };
        let payload = Msg::Watermark {
            shard: self.shard_id,
            epoch,
            w,
        }
        .encode();
        let envs = to
            .into_iter()
            .map(|to| Envelope {
                group: CONTROL_GROUP,
                from: self.node,
                to,
                payload: payload.clone(),
            })
            .collect();
        let _ = self.transport.send_batch(envs);
    }

    pub(crate) fn send(&self, to: NodeId, msg: &Msg) {
        let _ = self.transport.send(Envelope {
            group: CONTROL_GROUP,
            from: self.node,
            to,
            payload: msg.encode(),
        });
    }

    /// Learns another shard's watermark of `epoch`; re-offers the pending queue if `VW` moved.
    pub fn learn(&self, shard: u32, epoch: Epoch, w: u64) {
        if shard != self.shard_id && self.epochs.learn_w(epoch, shard, w) && self.queued() > 0 {
            self.group.retry_pending();
        }
    }

    /// Learns shard `shard`'s watermark from its leader `from`.
    fn on_watermark(&self, from: NodeId, shard: u32, epoch: Epoch, w: u64) {
        // Only a replica that believes it leads sends watermarks.
        self.learn_leader(shard, from);
        self.learn(shard, epoch, w);
    }

    /// Hands a participant's reply to the coordinator waiting for it, learning the `W_s` it carries.
    fn on_reply(&self, req: u64, reply: Reply, shard: u32, epoch: Epoch, w: u64) {
        self.learn(shard, epoch, w);
        if let Reply::Refused(Refusal::NotLeader(Some(hint))) = reply {
            self.learn_leader(shard, hint);
        }
        if let Some(tx) = self.pending.lock().remove(&req) {
            let _ = tx.send(reply);
        }
    }

    /// Serves a peer's message on the thread that received it (the transport's), unless it
    /// is one the control thread serves or the site is paused: a coordinator's round trip
    /// and the watermark exchange then cost no hand-off to another thread. A participant's
    /// requests and decisions (whose work, a long scan say, would hold up every message the
    /// receiving thread carries) are served on receipt only where that thread is the
    /// sender's ([`Transport::receives_on_sending_thread`]: in one process a round trip
    /// between shard leaders then hands nothing to another thread). Returns what the
    /// control thread must serve.
    pub(crate) fn shortcut(&self, env: Envelope) -> Option<Envelope> {
        let cheap = Msg::served_on_receipt(&env.payload);
        let participant = Msg::is_participant_work(&env.payload);
        if !(cheap || participant && self.inline_peers) || *self.paused.lock() {
            return Some(env);
        }
        // The desk is gone once the control thread ended (the site is stopping).
        let Some(desk) = self.desk.get().and_then(Weak::upgrade) else {
            return Some(env);
        };
        self.serve(&desk, env);
        None
    }

    /// Decodes, checks and serves one control message.
    fn serve(&self, desk: &Desk, env: Envelope) {
        let msg = match Msg::decode(&env.payload)
            .map_err(PeerError::Decode)
            .and_then(|m| self.check_peer(env.from, m))
        {
            Ok(m) => m,
            Err(e) => {
                self.malformed(env.from, &e);
                return;
            }
        };
        match msg {
            Msg::Watermark { shard, epoch, w } => self.on_watermark(env.from, shard, epoch, w),
            Msg::Meta { cmd } => self.submit_meta(&cmd),
            Msg::Epochs { history } => {
                if let Err(e) = self.epochs.merge(history) {
                    self.malformed(env.from, &PeerError::Epochs(e));
                }
            }
            Msg::Reply {
                req,
                reply,
                shard,
                epoch,
                w,
            } => self.on_reply(req, reply, shard, epoch, w),
            Msg::Request {
                req,
                epoch,
                txn,
                stream,
                op,
            } => {
                let reply =
                    desk.with(|parts| self.tend(parts, |p| p.request(epoch, txn, stream, op)));
                let (epoch, w) = self.own_w();
                let msg = Msg::Reply {
                    req,
                    reply,
                    shard: self.shard_id,
                    epoch,
                    w,
                };
                self.send(env.from, &msg);
            }
            Msg::Decision { txn, epoch, commit } => {
                let refused = desk.with(|parts| self.tend(parts, |p| p.decide(epoch, txn, commit)));
                let refused = match refused {
                    Ok(r) => r,
                    Err(e) => {
                        self.malformed(env.from, &e);
                        return;
                    }
                };
                let (epoch, w) = self.own_w();
                let msg = Msg::Ack {
                    txn,
                    refused,
                    shard: self.shard_id,
                    epoch,
                    w,
                };
                self.send(env.from, &msg);
            }
            Msg::Ack {
                txn,
                refused,
                shard,
                epoch,
                w,
            } => {
                self.learn(shard, epoch, w);
                if let Some(Refusal::NotLeader(Some(hint))) = refused {
                    self.learn_leader(shard, hint);
                }
                self.acknowledged(txn, env.from, refused);
            }
            Msg::Inquire { txn } => self.inquired(txn, env.from),
        }
    }

    /// Serves what the receiving threads leave to it (see [`Site::shortcut`]), and ends the
    /// pieces of an epoch the site stopped serving as soon as it does (their locks may hold
    /// up a snapshot install or a replay, which the ticker may be waiting for).
    fn control_loop(&self, desk: &Desk, control: Receiver<Envelope>, stop: Receiver<()>) {
        loop {
            let env = crossbeam_channel::select! {
                recv(control) -> e => match e { Ok(e) => e, Err(_) => break },
                recv(self.epoch_left.1) -> _ => {
                    self.check_pieces(desk, Instant::now(), true);
                    continue;
                }
                recv(stop) -> _ => break,
            };
            self.wait_while_paused();
            self.serve(desk, env);
        }
    }

    /// Ends pieces of ended epochs, forgets idle read-phase pieces, asks coordinators about
    /// pieces held too long; with `wait` false, does nothing if the desk is busy (serving a
    /// long scan, say).
    fn check_pieces(&self, desk: &Desk, now: Instant, wait: bool) {
        if self.stats.pieces.load(Ordering::Relaxed) == 0 {
            return;
        }
        let check = |parts: &mut Participants<'_>| {
            self.tend(parts, |p| {
                p.expire(now, self.cfg.read_phase_timeout);
                p.overdue(now, self.cfg.timeout)
            })
        };
        let overdue = if wait {
            desk.with(check)
        } else {
            desk.try_with(check).unwrap_or_default()
        };
        for txn in overdue {
            self.send(txn.0, &Msg::Inquire { txn });
        }
    }

    /// Runs `f` on the participants once the pieces of epochs this site no longer serves are
    /// ended, then counts the pieces held.
    fn tend<'p, R>(
        &self,
        parts: &mut Participants<'p>,
        f: impl FnOnce(&mut Participants<'p>) -> R,
    ) -> R {
        parts.end_epochs(self.open_epoch());
        let r = f(parts);
        self.stats
            .pieces
            .store(parts.len() as u64, Ordering::Relaxed);
        r
    }

    /// This shard's `W_s` and the epoch it counts, read together (for piggybacking and the
    /// exchange).
    fn own_w(&self) -> (Epoch, u64) {
        let wm = self.wm.lock();
        (wm.epoch(), wm.value())
    }

    /// The shard whose replica `node` is, if it is a member.
    pub(crate) fn shard_of(&self, node: NodeId) -> Option<u32> {
        self.nodes
            .iter()
            .position(|r| r.contains(&node))
            .and_then(|s| u32::try_from(s).ok())
    }

    /// Checks every field of a peer's control message that is used as an index, an identity
    /// or a timestamp vector, before the message is handled.
    fn check_peer(&self, from: NodeId, msg: Msg) -> Result<Msg, PeerError> {
        let sender = self.shard_of(from).ok_or(PeerError::UnknownSender(from))?;
        let shards = self.cfg.shards as usize;
        let own_shard = |shard: u32| {
            if shard == sender {
                Ok(())
            } else {
                Err(PeerError::WrongShard {
                    from,
                    claimed: shard,
                })
            }
        };
        let vt_len = |len: usize| {
            if len == shards {
                Ok(())
            } else {
                Err(PeerError::VtLength { len, shards })
            }
        };
        let coordinated_by = |txn: TxnId, node: NodeId| {
            if txn.0 == node {
                Ok(())
            } else {
                Err(PeerError::ForeignTxn { txn, from })
            }
        };
        let hint = |refusal: Option<&Refusal>| match refusal {
            Some(Refusal::NotLeader(Some(h))) if self.shard_of(*h) != Some(sender) => {
                Err(PeerError::BadHint { from, hint: *h })
            }
            _ => Ok(()),
        };
        match &msg {
            Msg::Watermark { shard, .. } => own_shard(*shard)?,
            Msg::Meta { cmd } => match *cmd {
                MetaCommand::NewEpoch { shard, leader, .. } => {
                    own_shard(shard)?;
                    if leader != from {
                        return Err(PeerError::ForeignLeader { from, leader });
                    }
                }
                MetaCommand::Component { shard, .. } => own_shard(shard)?,
            },
            Msg::Epochs { .. } => {
                if !self.meta_members.contains(&from) {
                    return Err(PeerError::NotMeta(from));
                }
            }
            Msg::Reply { shard, reply, .. } => {
                own_shard(*shard)?;
                if let Reply::Refused(r) = reply {
                    hint(Some(r))?;
                }
                if let Reply::Prepared { deps, .. } = reply {
                    vt_len(deps.len())?;
                }
            }
            Msg::Request { txn, stream, .. } => {
                coordinated_by(*txn, from)?;
                let worker = stream & 0xffff;
                if stream_shard(*stream) != sender || worker >= self.cfg.workers {
                    return Err(PeerError::BadStream {
                        stream: *stream,
                        from,
                    });
                }
            }
            Msg::Decision { txn, commit, .. } => {
                coordinated_by(*txn, from)?;
                if let Some(vt) = commit {
                    vt_len(vt.len())?;
                }
            }
            Msg::Ack {
                txn,
                shard,
                refused,
                ..
            } => {
                own_shard(*shard)?;
                hint(refused.as_ref())?;
                coordinated_by(*txn, self.node)?;
            }
            Msg::Inquire { txn } => coordinated_by(*txn, self.node)?,
        }
        Ok(msg)
    }

    /// Counts a malformed peer message; logs at most one a second (with the count).
    pub(crate) fn malformed(&self, from: NodeId, e: &PeerError) {
        let n = self.stats.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.malformed_logged.lock();
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            tracing::warn!(
                node = self.node,
                from,
                total = n,
                "malformed control message: {e}"
            );
        }
    }

    /// Control messages refused as malformed so far.
    pub fn malformed_messages(&self) -> u64 {
        self.stats.malformed.load(Ordering::Relaxed)
    }

    /// Pieces the participant side holds (open, locked or prepared), as of its last step.
    pub fn participant_pieces(&self) -> u64 {
        self.stats.pieces.load(Ordering::Relaxed)
    }

    /// Decision records the coordinator holds (in commit, unacknowledged or refused).
    pub fn decision_records(&self) -> usize {
        self.decisions.len()
    }

    fn check_worker(&self, worker: u32) -> Result<(), BeginError> {
        if worker < self.cfg.workers {
            Ok(())
        } else {
            Err(BeginError::NoSuchWorker {
                worker,
                workers: self.cfg.workers,
            })
        }
    }

    /// Starts a transaction coordinated here by `worker` (which must be below `workers`).
    pub fn begin(&self, worker: u32) -> Result<crate::coord::DistTxn<'_>, BeginError> {
        self.check_worker(worker)?;
        Ok(crate::coord::DistTxn::new(self, worker))
    }

    /// Starts a plain one-shard transaction on this site by `worker` (below `workers`), for
    /// loading: its writes are logged in the open epoch (refused otherwise), but its reads are
    /// not confirmed by the leader lease; clients use [`Site::begin`].
    pub fn begin_local(&self, worker: u32) -> Result<Transaction<'_>, BeginError> {
        self.check_worker(worker)?;
        Ok(self.shard.begin_on(stream_id(self.shard_id, worker)))
    }
}

/// The first transaction number of this incarnation of a node: wall-clock microseconds times
/// 1024, so numbers never repeat across restarts (unless a node ran more than a billion
/// transactions a second, or the clock went back) and stay increasing, which participants'
/// finished-transaction horizons rely on (a clock that went back makes them refuse the new
/// numbers until it catches up: aborts, never a double apply).
fn txn_id_seed() -> u64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX >> 10)
        });
    micros.saturating_mul(1024).max(1)
}
