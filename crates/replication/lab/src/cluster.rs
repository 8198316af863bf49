//! The lab cluster: `n` protocol cores driven on the simulated network's virtual clock.
//!
//! Every replica applies committed entries into its own history; every apply is
//! checked against one global history (same index, same bytes), every leader
//! is checked to be alone in its term (Raft) or ballot (Paxos), and terms never go
//! backwards. Persistence is asynchronous: a persist job reaches the replica's [`Disk`]
//! (the log store's own model, written through the worker's own conversion) only when it
//! completes, some virtual milliseconds later, and a crash loses what had not. Every
//! replica's committed log agrees slot by slot (no-ops included), every committed entry is
//! on a majority of disks (unless a disk was lost), each core's own invariants hold, and no
//! replica refuses a message a peer sent it.
//!
//! For scenarios built message by message (Paxos recovery, fuzz), replicas can tick only
//! when told ([`Cluster::ticking`]), packets can be filtered ([`Cluster::filter`]), persist
//! jobs held ([`Cluster::hold_persist`]) and the cluster settled ([`Cluster::settle`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use crossbeam_channel::Receiver;
use mako_group::durable::{self, MemSnapshots, SnapshotStore};
use mako_group::{CaptureRequest, Core, GroupConfig, InitialState, LogEntry, OutMsg, PersistJob};
use mako_logstore::LogModel;
use mako_replication::{Applied, ApplyDispatcher, ApplyStatus, NodeId, Role, SnapshotHandler};
use mako_transport::sim::{SimConfig, SimEndpoint, SimNetwork};
use mako_transport::{Envelope, Transport};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::LabCore;

/// The lab's timing: heartbeat 100 ms; election 3 ticks, each node ticking every 100–200 ms.
pub const HEARTBEAT_MS: u64 = 100;
/// An election timeout's upper bound, for waits.
pub const ELECTION_MS: u64 = 600;

/// Ten times the lab's pace (heartbeat 10 ms, election 3 to 4 ticks), for long fault runs
/// that want many elections per virtual second.
pub fn fast_timing(cfg: &mut GroupConfig) {
    cfg.heartbeat_interval_ms = HEARTBEAT_MS / 10;
    cfg.election_timeout_min_ms = 3 * cfg.heartbeat_interval_ms;
    cfg.election_timeout_max_ms = 4 * cfg.heartbeat_interval_ms;
}

/// What survives a crash: the log store's semantics (the same model recovery runs) and the
/// snapshot files. Writes reach it only when their persist job completes.
#[derive(Default, Clone)]
pub struct Disk {
    pub log: LogModel,
    pub snapshots: Arc<MemSnapshots>,
}

impl Disk {
    /// Makes a completed job durable, exactly as the worker hands it to the log store.
    pub fn complete(&mut self, job: &PersistJob) {
        self.log.apply(&[durable::group_write(0, job)]);
    }

    /// What a restarted replica recovers, through the worker's own recovery path.
    pub fn initial(&self) -> InitialState {
        durable::recover_group(0, self.log.group(0), self.snapshots.as_ref())
            .expect("lab disk recovers")
    }

    /// The durable commit index.
    pub fn commit(&self) -> u64 {
        self.log.group(0).map_or(0, |g| g.hard_state.commit)
    }

    /// Durable entries (after the snapshot).
    pub fn entries(&self) -> Vec<mako_logstore::LogEntry> {
        self.log.group(0).map(|g| g.entries).unwrap_or_default()
    }
}

/// One replica's applied history: index → bytes, in apply order.
pub type History = Arc<Mutex<Vec<(u64, Bytes)>>>;

/// Snapshots of the lab application: its whole history.
pub struct HistorySnapshots(pub History);

/// Encodes the entries of `h` up to index `upto`.
fn encode_history(h: &[(u64, Bytes)], upto: u64) -> Bytes {
    let mut b = BytesMut::new();
    for (i, e) in h.iter().take_while(|(i, _)| *i <= upto) {
        b.put_u64_le(*i);
        b.put_u32_le(e.len() as u32);
        b.put_slice(e);
    }
    b.freeze()
}

impl SnapshotHandler for HistorySnapshots {
    fn snapshot(&mut self, _pending: &[mako_replication::QueuedEntry]) -> Bytes {
        encode_history(&self.0.lock(), u64::MAX)
    }

    /// Like the site's: only the position is taken now; the history is read when the capture
    /// runs (it may have grown meanwhile, and the entries past the position are left out).
    fn begin_snapshot(
        &mut self,
        _pending: &[mako_replication::QueuedEntry],
    ) -> mako_replication::SnapshotCapture {
        let upto = self.0.lock().last().map_or(0, |(i, _)| *i);
        let h = Arc::clone(&self.0);
        Box::new(move || Some(encode_history(&h.lock(), upto)))
    }

    fn restore(
        &mut self,
        data: &Bytes,
        _index: u64,
    ) -> Result<Vec<mako_replication::QueuedEntry>, mako_replication::SnapshotRefused> {
        let mut d = data.clone();
        let mut h = Vec::new();
        while d.remaining() >= 12 {
            let i = d.get_u64_le();
            let n = d.get_u32_le() as usize;
            if d.remaining() < n {
                break;
            }
            h.push((i, d.split_to(n)));
        }
        *self.0.lock() = h;
        Ok(Vec::new())
    }
}

/// Facts checked across the whole run.
#[derive(Default)]
pub struct Checker {
    /// The one history every replica's applied sequence must be a prefix of.
    pub committed: BTreeMap<u64, Bytes>,
    /// Leader seen for each term.
    pub leaders: BTreeMap<u64, NodeId>,
    /// Committed log entries, index → payload (no-ops included), from every replica's log:
    /// every replica's committed entries must agree with it.
    pub chosen: BTreeMap<u64, Bytes>,
    /// Safety violations seen (a step fails on the first).
    pub violations: Vec<String>,
}

/// A message on the simulated wire, as a [`Filter`] sees it.
#[derive(Clone, Debug)]
pub struct Packet {
    /// Sender.
    pub from: NodeId,
    /// Addressee.
    pub to: NodeId,
    /// The encoded message (or chunk).
    pub payload: Bytes,
}

/// Decides per packet sent: true lets it onto the network.
pub type Filter = Box<dyn FnMut(&Packet) -> bool>;

/// One live replica of the lab cluster.
pub struct LabNode<C> {
    /// The protocol core.
    pub node: C,
    endpoint: SimEndpoint,
    inbox: Receiver<Envelope>,
    period: Duration,
    next_tick: Duration,
    pub leader_applies: Arc<Mutex<u64>>,
    pub follower_applies: Arc<Mutex<u64>>,
    /// Persist jobs at the disk, in order, with the virtual time each completes.
    pending: std::collections::VecDeque<(Duration, PersistJob)>,
    /// A snapshot capture running "on the snapshot thread", with the virtual time it ends.
    capture: Option<(Duration, CaptureRequest)>,
    /// Committed slots of this incarnation already checked against [`Checker::chosen`].
    checked: u64,
}

/// `n` replicas of one group running protocol `C` on the simulated network.
pub struct Cluster<C: LabCore> {
    pub net: SimNetwork,
    pub n: usize,
    pub nodes: Vec<Option<LabNode<C>>>,
    pub disks: Vec<Disk>,
    pub histories: Vec<History>,
    pub checker: Arc<Mutex<Checker>>,
    pub rng: SmallRng,
    pub now: Duration,
    pub cfg_template: GroupConfig,
    /// Requests (not responses) sent, by message type name.
    pub rpcs: u64,
    max_term: Vec<u64>,
    /// Whether a crash loses the disk (durability `memory`).
    pub lose_disk_on_crash: bool,
    /// Longest time a persist job takes to complete (0: at once).
    pub max_persist_delay_ms: u64,
    /// Whether replicas run leader-lease rounds (stamped with the virtual clock in ms) and
    /// every step checks that no replica leads while another's lease runs.
    pub leases: bool,
    /// Lease rounds a quorum acknowledged, over every incarnation (so a lease test is not vacuous).
    pub lease_acks: u64,
    /// Per replica: the end (virtual ms) and term of the last lease it held, kept after a
    /// step-down or crash (the promise outlives the holder's knowledge of it).
    pub lease_ends: Vec<Option<(u64, u64)>>,
    /// Lease bases observed (so a lease test is not vacuous).
    pub lease_grants: u64,
    /// Whether replicas tick on their own (false: only [`Cluster::tick_node`] ticks them).
    pub ticking: bool,
    /// Optional per-packet filter on every message sent (message-by-message scenarios).
    pub filter: Option<Filter>,
    /// Replicas whose persist jobs are held (never complete while listed).
    pub hold_persist: BTreeSet<usize>,
    /// Longest time a snapshot capture takes to complete (0: within the poll that began it).
    pub max_capture_delay_ms: u64,
    /// Replicas whose snapshot captures are held (never complete while listed).
    pub hold_capture: BTreeSet<usize>,
    /// Captures that completed and were fed back to their core.
    pub captures_done: u64,
    /// Whether a replica restarted after losing its disk (see
    /// [`Cluster::lose_disk_on_crash`]) rejoins ([`GroupConfig::rejoin`]).
    pub rejoin_after_disk_loss: bool,
    /// Per replica: whether it held a term before its disk was wiped (it then rejoins).
    wiped: Vec<bool>,
    /// Whether any disk was ever wiped: committed entries need no longer be on a majority.
    disk_lost: bool,
    /// Every how many virtual ms [`Cluster::check_durable_majority`] runs on its own (and
    /// before every crash), while no disk was lost; 0: never on its own.
    pub durable_check_every_ms: u64,
    last_durable_check: Duration,
}

/// The replica ids of an `n`-replica group: 1..=n.
pub fn ids(n: usize) -> Vec<NodeId> {
    (1..=n as u64).collect()
}

impl<C: LabCore> Cluster<C> {
    pub fn new(n: usize, seed: u64) -> Self {
        Self::with_config(n, seed, |_| {})
    }

    pub fn with_config(n: usize, seed: u64, tweak: impl FnOnce(&mut GroupConfig)) -> Self {
        let mut cfg = GroupConfig::new(1, ids(n), 0);
        cfg.heartbeat_interval_ms = HEARTBEAT_MS;
        cfg.election_timeout_min_ms = 3 * HEARTBEAT_MS;
        cfg.election_timeout_max_ms = 4 * HEARTBEAT_MS; // pinned: jitter comes from per-node tick periods
        cfg.max_inflight = 8;
        cfg.compact_after_entries = u64::MAX / 2;
        // The lab application's state is its whole history, so its snapshots grow with the
        // log: scenarios compact by entry count alone.
        cfg.compact_log_percent = 0;
        tweak(&mut cfg);
        let mut c = Cluster {
            net: SimNetwork::new(seed, SimConfig::default()),
            n,
            nodes: (0..n).map(|_| None).collect(),
            disks: (0..n).map(|_| Disk::default()).collect(),
            histories: (0..n).map(|_| History::default()).collect(),
            checker: Arc::new(Mutex::new(Checker::default())),
            rng: SmallRng::seed_from_u64(seed ^ 0x5eed),
            now: Duration::ZERO,
            cfg_template: cfg,
            rpcs: 0,
            max_term: vec![0; n],
            lose_disk_on_crash: false,
            max_persist_delay_ms: 8,
            leases: false,
            lease_acks: 0,
            lease_ends: vec![None; n],
            lease_grants: 0,
            ticking: true,
            filter: None,
            hold_persist: BTreeSet::new(),
            max_capture_delay_ms: 0,
            hold_capture: BTreeSet::new(),
            captures_done: 0,
            rejoin_after_disk_loss: false,
            wiped: vec![false; n],
            disk_lost: false,
            durable_check_every_ms: 10,
            last_durable_check: Duration::ZERO,
        };
        for i in 0..n {
            c.start(i);
        }
        c
    }

    /// Starts (or restarts) replica `i` from its disk.
    pub fn start(&mut self, i: usize) {
        let id = i as NodeId + 1;
        let mut cfg = self.cfg_template.clone();
        cfg.id = id;
        cfg.rejoin |= self.rejoin_after_disk_loss && self.lose_disk_on_crash && self.wiped[i];
        let d = Arc::new(ApplyDispatcher::discarding(0));
        let history = History::default();
        self.histories[i] = history.clone();
        let leader_applies = Arc::new(Mutex::new(0));
        let follower_applies = Arc::new(Mutex::new(0));
        for (role, counter) in [
            (Role::Leader, leader_applies.clone()),
            (Role::Follower, follower_applies.clone()),
        ] {
            let h = history.clone();
            let checker = self.checker.clone();
            d.set_callback(
                role,
                Box::new(move |ctx| {
                    *counter.lock() += 1;
                    let mut c = checker.lock();
                    match c.committed.get(&ctx.index) {
                        Some(b) if b != ctx.entry => c.violations.push(format!(
                            "node {id} applied a different entry at index {}",
                            ctx.index
                        )),
                        Some(_) => {}
                        None => {
                            c.committed.insert(ctx.index, ctx.entry.clone());
                        }
                    }
                    let mut h = h.lock();
                    if let Some((last, _)) = h.last()
                        && ctx.index <= *last
                    {
                        c.violations.push(format!(
                            "node {id} applied index {} after {last}",
                            ctx.index
                        ));
                    }
                    h.push((ctx.index, ctx.entry.clone()));
                    Applied {
                        status: ApplyStatus::Normal,
                        ts: ctx.index,
                    }
                }),
            );
        }
        let snaps = Box::new(HistorySnapshots(history));
        let node = <C as Core>::new(cfg, self.disks[i].initial(), d, Some(snaps))
            .expect("lab node starts");
        let (endpoint, inbox) = self.net.endpoint(id);
        let hb = self.cfg_template.heartbeat_interval_ms;
        let period = Duration::from_millis(self.rng.random_range(hb..2 * hb));
        let next_tick = self.now + period;
        self.nodes[i] = Some(LabNode {
            node,
            endpoint,
            inbox,
            period,
            next_tick,
            leader_applies,
            follower_applies,
            pending: Default::default(),
            capture: None,
            checked: 0,
        });
    }

    /// Crashes replica `i`: it stops; its disk stays (or is wiped in `memory` durability).
    pub fn crash(&mut self, i: usize) {
        if !self.disk_lost && self.durable_check_every_ms > 0 {
            self.check_durable_majority();
        }
        // Jobs still at the disk are lost with the process.
        let mut term = 0;
        if let Some(ln) = self.nodes[i].take() {
            self.lease_acks += ln.node.lease_acks();
            term = ln.node.term();
        }
        self.net.crash(i as NodeId + 1);
        // Only a durable term must never go back: one still at the disk was never acted on.
        self.max_term[i] = self.disks[i].log.group(0).map_or(0, |g| g.hard_state.term);
        if self.lose_disk_on_crash {
            // A replica without a disk legitimately restarts from term 0.
            self.wiped[i] |= term.max(self.max_term[i]) > 0;
            self.disks[i] = Disk::default();
            self.max_term[i] = 0;
            self.disk_lost = true;
        }
    }

    pub fn disconnect(&mut self, i: usize) {
        self.net.disconnect(i as NodeId + 1);
    }

    pub fn connect(&mut self, i: usize) {
        self.net.connect(i as NodeId + 1);
    }

    pub fn alive(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    /// Polls replica `i` until it has nothing more to say: messages go out, persist jobs
    /// queue at its disk; then checks it.
    pub fn drive(&mut self, i: usize) {
        loop {
            let Some(ln) = self.nodes[i].as_mut() else {
                return;
            };
            let out = ln.node.poll();
            if out.is_empty() {
                break;
            }
            let mut sent = Vec::new();
            sent.extend(out.messages);
            if let Some(job) = out.persist {
                // The worker saves a snapshot's file before queueing the log write that names it.
                if let Some(s) = &job.snapshot {
                    self.disks[i].snapshots.save(0, s).expect("mem snapshot");
                }
                // Jobs complete in order, each some time after the previous one.
                let delay = self.rng.random_range(0..=self.max_persist_delay_ms);
                let at = ln
                    .pending
                    .back()
                    .map_or(self.now, |(t, _)| *t)
                    .max(self.now + Duration::from_millis(delay));
                ln.pending.push_back((at, job));
            }
            if let Some(req) = out.capture {
                let delay = self.rng.random_range(0..=self.max_capture_delay_ms);
                if let Some((_, old)) = &ln.capture {
                    let (index, new) = (old.index, req.index);
                    self.checker.lock().violations.push(format!(
                        "node {} began capture {new} with capture {index} in flight",
                        i + 1
                    ));
                }
                ln.capture = Some((self.now + Duration::from_millis(delay), req));
            }
            self.send_all(i, sent);
            if self.max_capture_delay_ms == 0 {
                self.complete_capture(i);
            }
        }
        self.check_node(i);
    }

    /// Index of replica `i`'s capture still running (held or not yet due), if any.
    pub fn capture_in_flight(&self, i: usize) -> Option<u64> {
        self.nodes[i]
            .as_ref()?
            .capture
            .as_ref()
            .map(|(_, r)| r.index)
    }

    /// Completes replica `i`'s capture if it is due (and not held): runs it and feeds the
    /// result back to the core.
    fn complete_capture(&mut self, i: usize) {
        if self.hold_capture.contains(&i) {
            return;
        }
        let Some(ln) = self.nodes[i].as_mut() else {
            return;
        };
        if ln.capture.as_ref().is_none_or(|(t, _)| *t > self.now) {
            return;
        }
        let Some((_, req)) = ln.capture.take() else {
            return;
        };
        let (index, term, data) = req.run_now();
        ln.node.snapshot_captured(index, term, data);
        self.captures_done += 1;
    }

    /// Completes the persist jobs of replica `i` that are due.
    fn complete_due(&mut self, i: usize) {
        if self.hold_persist.contains(&i) {
            return;
        }
        loop {
            let Some(ln) = self.nodes[i].as_mut() else {
                return;
            };
            if ln.pending.front().is_none_or(|(t, _)| *t > self.now) {
                return;
            }
            let Some((_, mut job)) = ln.pending.pop_front() else {
                return;
            };
            self.disks[i].complete(&job);
            let mut sent = std::mem::take(&mut job.after);
            sent.extend(ln.node.on_persisted(job.number));
            self.send_all(i, sent);
            self.drive(i);
        }
    }

    fn send_all(&mut self, i: usize, sent: Vec<OutMsg>) {
        let id = i as NodeId + 1;
        let Some(ln) = self.nodes[i].as_mut() else {
            return;
        };
        for m in sent {
            if C::is_request(&m.payload) {
                self.rpcs += 1;
            }
            let p = Packet {
                from: id,
                to: m.to,
                payload: m.payload,
            };
            if let Some(f) = self.filter.as_mut()
                && !f(&p)
            {
                continue;
            }
            let _ = ln.endpoint.send(Envelope {
                group: 0,
                from: p.from,
                to: p.to,
                payload: p.payload,
            });
        }
    }

    /// Checks replica `i`'s term, leadership, invariants and committed log against what it
    /// and the others had before.
    fn check_node(&mut self, i: usize) {
        let id = i as NodeId + 1;
        if let Some(ln) = self.nodes[i].as_mut() {
            let mut c = self.checker.lock();
            if let Err(e) = ln.node.check_invariants() {
                c.violations.push(format!("node {id}: {e}"));
            }
            let commit = ln.node.commit_index();
            let from = ln.checked.max(ln.node.first_index().saturating_sub(1));
            for slot in (from + 1)..=commit {
                let Some(payload) = ln.node.payload_at(slot) else {
                    break;
                };
                match c.chosen.get(&slot).cloned() {
                    Some(v) if v != payload => c.violations.push(format!(
                        "node {id} committed {payload:?} at index {slot}, others {v:?}"
                    )),
                    Some(_) => {}
                    None => {
                        c.chosen.insert(slot, payload);
                    }
                }
                ln.checked = slot;
            }
        }
        if let Some(ln) = self.nodes[i].as_ref() {
            let durable_commit = self.disks[i].commit();
            if ln.node.last_index() < durable_commit {
                self.checker.lock().violations.push(format!(
                    "node {id} last index {} fell below its durable commit {durable_commit}",
                    ln.node.last_index()
                ));
            }
            let term = ln.node.term();
            let mut c = self.checker.lock();
            if term < self.max_term[i] {
                c.violations.push(format!(
                    "node {id} term went back {} -> {term}",
                    self.max_term[i]
                ));
            }
            self.max_term[i] = term;
            if ln.node.is_leader() {
                match c.leaders.get(&term) {
                    Some(&l) if l != id => c
                        .violations
                        .push(format!("term {term} has leaders {l} and {id}")),
                    _ => {
                        c.leaders.insert(term, id);
                    }
                }
            }
        }
        if self.leases {
            self.check_leases();
        }
    }

    /// Advances virtual time by one millisecond.
    pub fn step(&mut self) {
        self.now += Duration::from_millis(1);
        self.net.advance_to(self.now);
        for i in 0..self.n {
            let Some(ln) = self.nodes[i].as_mut() else {
                continue;
            };
            while let Ok(env) = ln.inbox.try_recv() {
                if let Err(e) = ln.node.step(env.from, &env.payload) {
                    self.checker.lock().violations.push(format!(
                        "node {} refused a message from {}: {e}",
                        i + 1,
                        env.from
                    ));
                }
            }
            while self.ticking && self.now >= ln.next_tick {
                ln.node.tick();
                if self.leases {
                    ln.node.renew_lease(self.now.as_millis() as u64);
                }
                ln.next_tick += ln.period;
            }
            self.drive(i);
            self.complete_due(i);
            if self.nodes[i]
                .as_ref()
                .is_some_and(|ln| ln.capture.is_some())
            {
                self.complete_capture(i);
                self.drive(i);
            }
        }
        if !self.disk_lost
            && self.durable_check_every_ms > 0
            && self.now
                >= self.last_durable_check + Duration::from_millis(self.durable_check_every_ms)
        {
            self.last_durable_check = self.now;
            self.check_durable_majority();
        }
        self.assert_safe();
    }

    /// Fails on any safety violation seen so far.
    pub fn assert_safe(&self) {
        let v = &self.checker.lock().violations;
        assert!(v.is_empty(), "safety violations: {v:?}");
    }

    /// Every entry committed anywhere holds its payload on a majority of disks (or is
    /// covered by their snapshots): what was acknowledged was durable, so a crash of every
    /// replica loses nothing committed. Not for `memory` durability (a lost disk).
    pub fn check_durable_majority(&mut self) {
        let majority = self.n / 2 + 1;
        let disks: Vec<(u64, BTreeMap<u64, Bytes>)> = self
            .disks
            .iter()
            .map(|d| match d.log.group(0) {
                Some(g) => (
                    g.snapshot.map_or(0, |m| m.index),
                    g.entries
                        .into_iter()
                        .map(|e| (e.index, e.payload))
                        .collect(),
                ),
                None => (0, BTreeMap::new()),
            })
            .collect();
        let mut c = self.checker.lock();
        let mut violations = Vec::new();
        for (slot, v) in &c.chosen {
            let held = disks
                .iter()
                .filter(|(snap, m)| *slot <= *snap || m.get(slot) == Some(v))
                .count();
            if held < majority {
                violations.push(format!(
                    "committed index {slot} is durable on {held} disks only"
                ));
            }
        }
        c.violations.extend(violations);
    }

    /// Delivers everything in flight and completes every persist job not held, with no
    /// ticks; fails if that does not end.
    pub fn settle(&mut self) {
        let was = self.ticking;
        self.ticking = false;
        for _ in 0..10_000 {
            let next_job = (0..self.n)
                .filter(|i| !self.hold_persist.contains(i))
                .filter_map(|i| self.nodes[i].as_ref()?.pending.front().map(|j| j.0))
                .min();
            let Some(target) = self.net.next_delivery().into_iter().chain(next_job).min() else {
                self.ticking = was;
                return;
            };
            while self.now < target {
                self.step();
            }
            self.step();
        }
        panic!("the lab did not settle");
    }

    /// Ticks replica `i` `n` times (message-by-message scenarios), driving it after each.
    pub fn tick_node(&mut self, i: usize, n: usize) {
        for _ in 0..n {
            if let Some(ln) = self.nodes[i].as_mut() {
                ln.node.tick();
            }
            self.drive(i);
        }
    }

    /// Whether every live replica applied at least up to `index`.
    pub fn all_applied(&self, index: u64) -> bool {
        (0..self.n).all(|i| self.node(i).is_none_or(|n| n.applied_index() >= index))
    }

    /// The live leader of the highest term, if any.
    pub fn leader(&self) -> Option<usize> {
        self.leaders()
            .into_iter()
            .max_by_key(|&i| self.node(i).map_or(0, |n| n.term()))
    }

    /// Live replica `i` (panics if it is down).
    pub fn live(&self, i: usize) -> &C {
        self.node(i)
            .unwrap_or_else(|| panic!("replica {} is down", i + 1))
    }

    /// Live replica `i`, mutably (panics if it is down).
    pub fn live_mut(&mut self, i: usize) -> &mut C {
        self.node_mut(i)
            .unwrap_or_else(|| panic!("replica {} is down", i + 1))
    }

    /// Cuts replica `i` off in both directions (until [`Cluster::heal`] or [`Cluster::connect`]).
    pub fn isolate(&mut self, i: usize) {
        self.disconnect(i);
    }

    /// Removes every partition and disconnection.
    pub fn heal(&mut self) {
        self.net.heal();
    }

    /// Every live replica holds every committed entry up to its applied index (committed
    /// entries are never lost), and no safety violation was seen.
    pub fn assert_converged(&self) {
        self.assert_safe();
        let committed = self.checker.lock().committed.clone();
        for i in 0..self.n {
            let Some(n) = self.node(i) else { continue };
            let upto = n.applied_index();
            let mine: BTreeMap<u64, Bytes> = self.histories[i].lock().iter().cloned().collect();
            for (idx, v) in committed.range(..=upto) {
                assert_eq!(
                    mine.get(idx),
                    Some(v),
                    "node {} lacks committed index {idx} (applied to {upto})",
                    i + 1
                );
            }
        }
    }

    /// The lease claim on the one virtual clock: until a lease's end no replica leads a
    /// later term, even if the holder stepped down or crashed meanwhile; only a transfer
    /// (the holder, still leading, drops its lease) voids it. Only leaders hold leases.
    fn check_leases(&mut self) {
        let dur = self.cfg_template.lease_duration().as_millis() as u64;
        let now = self.now.as_millis() as u64;
        let mut violations = Vec::new();
        let mut grants = 0;
        for i in 0..self.n {
            let Some(node) = self.node(i) else { continue };
            match node.lease_basis() {
                Some(_) if !node.is_leader() => {
                    violations.push(format!("node {} holds a lease but does not lead", i + 1));
                }
                Some(b) => {
                    grants += 1;
                    let end = self.lease_ends[i]
                        .filter(|&(_, t)| t == node.term())
                        .map_or(b + dur, |(e, _)| e.max(b + dur));
                    self.lease_ends[i] = Some((end, node.term()));
                }
                // Dropped while still leading the lease's term: a transfer started.
                None if node.is_leader()
                    && self.lease_ends[i].is_some_and(|(_, t)| t == node.term()) =>
                {
                    self.lease_ends[i] = None;
                }
                None => {}
            }
        }
        for (i, rec) in self.lease_ends.iter().enumerate() {
            let Some((end, term)) = *rec else { continue };
            if end <= now {
                continue;
            }
            for j in (0..self.n).filter(|&j| j != i) {
                if let Some(other) = self.node(j)
                    && other.is_leader()
                    && other.term() > term
                {
                    violations.push(format!(
                        "at {now} ms node {} leads term {} while node {}'s lease of term {term} runs until {end} ms",
                        j + 1,
                        other.term(),
                        i + 1,
                    ));
                }
            }
        }
        self.lease_grants += grants;
        self.checker.lock().violations.extend(violations);
    }

    /// Lease rounds acknowledged so far, live replicas included.
    pub fn lease_acks_total(&self) -> u64 {
        self.lease_acks
            + (0..self.n)
                .filter_map(|i| self.node(i))
                .map(|n| n.lease_acks())
                .sum::<u64>()
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    pub fn run_ms(&mut self, ms: u64) {
        self.run_for(Duration::from_millis(ms));
    }

    /// Runs until `f` holds or `ms` pass; returns whether it held.
    pub fn run_until(&mut self, ms: u64, mut f: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now + Duration::from_millis(ms);
        while self.now < end {
            if f(self) {
                return true;
            }
            self.step();
        }
        f(self)
    }

    pub fn node(&self, i: usize) -> Option<&C> {
        self.nodes[i].as_ref().map(|l| &l.node)
    }

    pub fn node_mut(&mut self, i: usize) -> Option<&mut C> {
        self.nodes[i].as_mut().map(|l| &mut l.node)
    }

    /// Leaders among live replicas, by index.
    pub fn leaders(&self) -> Vec<usize> {
        (0..self.n)
            .filter(|&i| self.node(i).is_some_and(|n| n.is_leader()))
            .collect()
    }

    /// Waits for exactly one leader among `among` in the newest term; returns it.
    pub fn check_one_leader_among(&mut self, among: &[usize]) -> usize {
        for _ in 0..10 {
            self.run_ms(ELECTION_MS / 2);
            let mut by_term: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
            for &i in among {
                if let Some(n) = self.node(i)
                    && n.is_leader()
                {
                    by_term.entry(n.term()).or_default().push(i);
                }
            }
            for (t, ls) in &by_term {
                assert!(ls.len() <= 1, "term {t} has {} leaders", ls.len());
            }
            if let Some((_, ls)) = by_term.iter().next_back() {
                return ls[0];
            }
        }
        panic!("no leader elected among {among:?}");
    }

    pub fn check_one_leader(&mut self) -> usize {
        let all: Vec<usize> = (0..self.n).collect();
        self.check_one_leader_among(&all)
    }

    /// The term every live replica agrees on, if they agree.
    pub fn agreed_term(&self) -> Option<u64> {
        let terms: Vec<u64> = (0..self.n)
            .filter_map(|i| self.node(i).map(|n| n.term()))
            .collect();
        terms
            .first()
            .copied()
            .filter(|t| terms.iter().all(|x| x == t))
    }

    /// How many replicas applied `index`, and the bytes they agree on.
    pub fn n_committed(&self, index: u64) -> (usize, Option<Bytes>) {
        let mut count = 0;
        let mut cmd = None;
        for h in &self.histories {
            if let Some((_, b)) = h.lock().iter().find(|(i, _)| *i == index) {
                if let Some(c) = &cmd {
                    assert_eq!(c, b, "replicas disagree at index {index}");
                }
                cmd = Some(b.clone());
                count += 1;
            }
        }
        (count, cmd)
    }

    /// Submits `cmd` until it commits on at least `expected` replicas (MIT 6.824's `one`); returns its index.
    pub fn one(&mut self, cmd: &[u8], expected: usize, retry: bool) -> u64 {
        let deadline = self.now + Duration::from_secs(10);
        while self.now < deadline {
            let mut index = None;
            for i in 0..self.n {
                let Some(n) = self.node_mut(i) else { continue };
                if n.is_leader() && n.propose(Bytes::copy_from_slice(cmd)) {
                    index = Some(n.last_index());
                    break;
                }
            }
            if let Some(index) = index {
                let until = self.now + Duration::from_secs(2);
                while self.now < until {
                    let (nd, got) = self.n_committed(index);
                    if nd >= expected && got.as_deref() == Some(cmd) {
                        return index;
                    }
                    self.step();
                }
                if !retry {
                    panic!("command {cmd:?} did not commit on {expected}");
                }
            } else {
                self.run_ms(50);
            }
        }
        let states: Vec<String> = (0..self.n)
            .map(|i| match self.node(i) {
                Some(n) => format!(
                    "{}: leader={} term={} commit={} applied={} first={} last={} {}",
                    i + 1,
                    n.is_leader(),
                    n.term(),
                    n.commit_index(),
                    n.applied_index(),
                    n.first_index(),
                    n.last_index(),
                    n.describe()
                ),
                None => format!("{}: down", i + 1),
            })
            .collect();
        panic!(
            "one({cmd:?}) failed to reach agreement:\n{}",
            states.join("\n")
        );
    }

    /// Proposes on replica `i` if it leads; returns (index, term).
    pub fn start_cmd(&mut self, i: usize, cmd: &[u8]) -> Option<(u64, u64)> {
        let n = self.node_mut(i)?;
        if !n.propose(Bytes::copy_from_slice(cmd)) {
            return None;
        }
        Some((n.last_index(), n.term()))
    }

    pub fn set_net(&mut self, cfg: SimConfig) {
        self.net.set_config(cfg);
    }

    pub fn unreliable() -> SimConfig {
        SimConfig {
            drop_rate: 0.1,
            min_delay: Duration::ZERO,
            max_delay: Duration::from_millis(26),
            reorder: true,
            duplicate_rate: 0.01,
        }
    }

    /// Every live replica's history is a prefix of the committed history (checked on every apply too).
    pub fn histories_agree(&self) -> bool {
        let c = self.checker.lock();
        self.histories
            .iter()
            .all(|h| h.lock().iter().all(|(i, b)| c.committed.get(i) == Some(b)))
    }

    /// Raft's log matching property over the live replicas' logs: where two logs hold an
    /// entry with the same index and term, they hold the same entries up to it. Protocols
    /// without that property ([`LabCore::matching_log`] is `None`) are not checked.
    pub fn check_log_matching(&self) {
        let logs: Vec<Vec<LogEntry>> = (0..self.n)
            .filter_map(|i| self.node(i).and_then(|n| n.matching_log()))
            .collect();
        for a in 0..logs.len() {
            for b in a + 1..logs.len() {
                let (la, lb) = (&logs[a], &logs[b]);
                let by_index: HashMap<u64, &LogEntry> = lb.iter().map(|e| (e.index, e)).collect();
                // The highest index where both agree on the term.
                let top = la
                    .iter()
                    .rev()
                    .find(|e| by_index.get(&e.index).is_some_and(|o| o.term == e.term));
                let Some(top) = top else { continue };
                for e in la.iter().filter(|e| e.index <= top.index) {
                    if let Some(o) = by_index.get(&e.index) {
                        assert!(
                            o.term == e.term && o.payload == e.payload,
                            "log matching broken at index {} (agreeing up to {})",
                            e.index,
                            top.index
                        );
                    }
                }
            }
        }
    }

    /// Entries replica `i` applied in its current incarnation.
    pub fn applied_len(&self, i: usize) -> usize {
        self.histories[i].lock().len()
    }
}
