//! A deterministic lab for `PaxosNode`s: a simulated network on a virtual clock (drop,
//! delay, reorder, duplicate, partition, per-message filters), asynchronous persistence
//! into a model of the log store, crash and restart from exactly what was durable, and
//! checkers: applied sequences are prefixes of one history, every replica's committed slots
//! agree (no-ops included), committed slots are never lost, one leader per ballot.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use mako_group::durable::{self, MemSnapshots, SnapshotStore};
use mako_group::{GroupConfig, InitialState, PersistJob};
use mako_logstore::LogModel;
use mako_paxos::{PaxosNode, wire};
use mako_replication::{
    Applied, ApplyDispatcher, NodeId, QueuedEntry, Role, SnapshotHandler, SnapshotRefused,
};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::SmallRng};

/// Tick length (virtual ms).
pub const HEARTBEAT_MS: u64 = 10;

/// What survives a crash: the log store's semantics and the snapshot files.
#[derive(Default, Clone)]
pub struct Disk {
    pub log: LogModel,
    pub snapshots: Arc<MemSnapshots>,
}

impl Disk {
    fn complete(&mut self, job: &PersistJob) {
        self.log.apply(&[durable::group_write(0, job)]);
    }

    /// What a restarted replica recovers, through the shared recovery path.
    pub fn initial(&self) -> InitialState {
        durable::recover_group(0, self.log.group(0), self.snapshots.as_ref())
            .expect("lab disk recovers")
    }

    /// Durable entries (after the snapshot).
    pub fn entries(&self) -> Vec<mako_logstore::LogEntry> {
        self.log.group(0).map(|g| g.entries).unwrap_or_default()
    }
}

/// One replica's applied history: (index, bytes) in apply order.
pub type History = Arc<Mutex<Vec<(u64, Bytes)>>>;

/// Snapshots of the lab application: its whole history.
struct HistorySnapshots(History);

impl SnapshotHandler for HistorySnapshots {
    fn snapshot(&mut self, _pending: &[QueuedEntry]) -> Bytes {
        let h = self.0.lock();
        let mut b = BytesMut::new();
        for (i, e) in h.iter() {
            b.put_u64_le(*i);
            b.put_u32_le(e.len() as u32);
            b.put_slice(e);
        }
        b.freeze()
    }

    fn restore(&mut self, data: &Bytes, _index: u64) -> Result<Vec<QueuedEntry>, SnapshotRefused> {
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
    /// Applied history: index → bytes (every replica's applies must agree with it).
    pub applied: BTreeMap<u64, Bytes>,
    /// Chosen values: slot → value (no-ops included), from replicas' committed logs.
    pub chosen: BTreeMap<u64, Bytes>,
    /// Leader seen for each ballot.
    pub leaders: BTreeMap<u64, NodeId>,
    /// Per replica: the end (virtual ms) and ballot of the latest lease it held (kept past
    /// a crash or step-down: the promise outlives the holder's knowledge of it).
    pub leases: BTreeMap<NodeId, (u64, u64)>,
    /// Lease bases observed (so lease tests are not vacuous).
    pub lease_grants: u64,
    pub violations: Vec<String>,
}

/// A message on the simulated wire.
#[derive(Clone, Debug)]
pub struct Packet {
    pub from: NodeId,
    pub to: NodeId,
    pub payload: Bytes,
}

/// Decides per packet: true delivers it.
pub type Filter = Box<dyn FnMut(&Packet) -> bool>;

/// Network behaviour.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    pub drop: f64,
    pub duplicate: f64,
}

impl NetConfig {
    /// Instant and reliable.
    pub fn perfect() -> Self {
        NetConfig {
            min_delay_ms: 0,
            max_delay_ms: 0,
            drop: 0.0,
            duplicate: 0.0,
        }
    }

    /// Slow, lossy, reordering and duplicating.
    pub fn unreliable() -> Self {
        NetConfig {
            min_delay_ms: 1,
            max_delay_ms: 25,
            drop: 0.1,
            duplicate: 0.05,
        }
    }
}

pub struct SimNode {
    pub node: PaxosNode,
    /// Persist jobs at the disk, in order, with the virtual time each completes.
    pending: VecDeque<(u64, PersistJob)>,
    period: u64,
    next_tick: u64,
    /// Slots of this incarnation already checked against `chosen`.
    checked: u64,
}

pub struct Sim {
    pub n: usize,
    pub nodes: Vec<Option<SimNode>>,
    pub disks: Vec<Disk>,
    pub histories: Vec<History>,
    pub checker: Arc<Mutex<Checker>>,
    pub rng: SmallRng,
    pub now: u64,
    pub cfg: GroupConfig,
    pub net: NetConfig,
    /// In flight: (deliver at, sequence) → packet.
    queue: BTreeMap<(u64, u64), Packet>,
    seq: u64,
    /// Blocked directed links.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Optional per-packet filter (deterministic scenarios).
    pub filter: Option<Filter>,
    /// Longest time a persist job takes (0: at once).
    pub max_persist_delay_ms: u64,
    /// Whether nodes tick on their own.
    pub ticking: bool,
    /// Whether a crash loses the disk (durability `memory`): restart with `rejoin`.
    pub lose_disk_on_crash: bool,
    /// Replicas whose persist jobs are held (never complete while set).
    pub hold_persist: BTreeSet<usize>,
    /// Every value proposed, in order (values are unique).
    pub proposed: Vec<Bytes>,
    next_value: u64,
    max_ballot: Vec<u64>,
    /// Requests (not responses) sent.
    pub sent: u64,
}

pub fn ids(n: usize) -> Vec<NodeId> {
    (1..=n as u64).collect()
}

impl Sim {
    pub fn new(n: usize, seed: u64) -> Self {
        Self::with_config(n, seed, |_| {})
    }

    pub fn with_config(n: usize, seed: u64, tweak: impl FnOnce(&mut GroupConfig)) -> Self {
        let mut cfg = GroupConfig::new(1, ids(n), 0);
        cfg.heartbeat_interval_ms = HEARTBEAT_MS;
        cfg.election_timeout_min_ms = 5 * HEARTBEAT_MS;
        cfg.election_timeout_max_ms = 10 * HEARTBEAT_MS;
        cfg.max_inflight = 4;
        cfg.max_append_bytes = 64;
        cfg.compact_after_entries = u64::MAX / 2;
        cfg.snapshot_chunk_bytes = 512;
        tweak(&mut cfg);
        let mut s = Sim {
            n,
            nodes: (0..n).map(|_| None).collect(),
            disks: (0..n).map(|_| Disk::default()).collect(),
            histories: (0..n).map(|_| History::default()).collect(),
            checker: Arc::new(Mutex::new(Checker::default())),
            rng: SmallRng::seed_from_u64(seed),
            now: 0,
            cfg,
            net: NetConfig::perfect(),
            queue: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            filter: None,
            max_persist_delay_ms: 5,
            ticking: true,
            lose_disk_on_crash: false,
            hold_persist: BTreeSet::new(),
            proposed: Vec::new(),
            next_value: 0,
            max_ballot: vec![0; n],
            sent: 0,
        };
        for i in 0..n {
            s.start(i);
        }
        s
    }

    pub fn id(i: usize) -> NodeId {
        i as NodeId + 1
    }

    /// Starts (or restarts) replica `i` from its disk.
    pub fn start(&mut self, i: usize) {
        let id = Self::id(i);
        let mut cfg = self.cfg.clone();
        cfg.id = id;
        cfg.rejoin = self.lose_disk_on_crash && self.max_ballot[i] > 0;
        let d = Arc::new(ApplyDispatcher::new(0));
        let history = History::default();
        self.histories[i] = history.clone();
        for role in [Role::Leader, Role::Follower] {
            let h = history.clone();
            let checker = self.checker.clone();
            d.set_callback(
                role,
                Box::new(move |ctx| {
                    let mut c = checker.lock();
                    match c.applied.get(&ctx.index) {
                        Some(b) if b != ctx.entry => c.violations.push(format!(
                            "node {id} applied a different entry at index {}",
                            ctx.index
                        )),
                        Some(_) => {}
                        None => {
                            c.applied.insert(ctx.index, ctx.entry.clone());
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
                    Applied::normal(ctx.index)
                }),
            );
        }
        let snaps = Box::new(HistorySnapshots(history));
        let mut node =
            PaxosNode::new(cfg, self.disks[i].initial(), d, Some(snaps)).expect("lab node starts");
        node.set_election_seed(self.rng.random());
        let period = HEARTBEAT_MS + self.rng.random_range(0..HEARTBEAT_MS / 2);
        self.nodes[i] = Some(SimNode {
            node,
            pending: VecDeque::new(),
            period,
            next_tick: self.now + period,
            checked: 0,
        });
    }

    /// Crashes replica `i`: jobs still at the disk are lost; the disk stays (or is wiped).
    pub fn crash(&mut self, i: usize) {
        if let Some(sn) = &self.nodes[i] {
            self.max_ballot[i] = self.max_ballot[i].max(sn.node.ballot());
        }
        self.nodes[i] = None;
        if self.lose_disk_on_crash {
            self.disks[i] = Disk::default();
        }
    }

    pub fn alive(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    pub fn node(&self, i: usize) -> &PaxosNode {
        &self.nodes[i].as_ref().expect("node alive").node
    }

    pub fn node_mut(&mut self, i: usize) -> &mut PaxosNode {
        &mut self.nodes[i].as_mut().expect("node alive").node
    }

    /// Isolates replica `i` (both directions).
    pub fn isolate(&mut self, i: usize) {
        for j in 0..self.n {
            if j != i {
                self.cut.insert((Self::id(i), Self::id(j)));
                self.cut.insert((Self::id(j), Self::id(i)));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    fn send(&mut self, from: NodeId, msgs: Vec<mako_group::OutMsg>) {
        for m in msgs {
            if m.payload.len() > 1
                && let Ok(msg) = wire::decode(&m.payload.slice(1..))
                && msg.is_request()
            {
                self.sent += 1;
            }
            let p = Packet {
                from,
                to: m.to,
                payload: m.payload,
            };
            if self.cut.contains(&(p.from, p.to)) {
                continue;
            }
            if let Some(f) = self.filter.as_mut()
                && !f(&p)
            {
                continue;
            }
            if self.net.drop > 0.0 && self.rng.random_bool(self.net.drop) {
                continue;
            }
            let copies = if self.net.duplicate > 0.0 && self.rng.random_bool(self.net.duplicate) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay = self
                    .rng
                    .random_range(self.net.min_delay_ms..=self.net.max_delay_ms);
                self.seq += 1;
                self.queue.insert((self.now + delay, self.seq), p.clone());
            }
        }
    }

    /// Polls replica `i` until it has nothing more to say.
    pub fn drive(&mut self, i: usize) {
        loop {
            let Some(sn) = self.nodes[i].as_mut() else {
                return;
            };
            let out = sn.node.poll();
            if out.is_empty() {
                break;
            }
            if let Some(job) = out.persist {
                // The worker saves a snapshot's file before queueing the write naming it.
                if let Some(s) = &job.snapshot {
                    self.disks[i].snapshots.save(0, s).expect("mem snapshot");
                }
                let delay = if self.max_persist_delay_ms == 0 {
                    0
                } else {
                    self.rng.random_range(0..=self.max_persist_delay_ms)
                };
                let at = sn
                    .pending
                    .back()
                    .map_or(self.now, |(t, _)| *t)
                    .max(self.now + delay);
                sn.pending.push_back((at, job));
            }
            self.send(Self::id(i), out.messages);
        }
        self.check_node(i);
    }

    /// Completes replica `i`'s persist jobs that are due.
    fn complete_due(&mut self, i: usize) {
        if self.hold_persist.contains(&i) {
            return;
        }
        loop {
            let Some(sn) = self.nodes[i].as_mut() else {
                return;
            };
            if sn.pending.front().is_none_or(|(t, _)| *t > self.now) {
                return;
            }
            let Some((_, mut job)) = sn.pending.pop_front() else {
                return;
            };
            self.disks[i].complete(&job);
            let mut msgs = std::mem::take(&mut job.after);
            msgs.extend(sn.node.on_persisted(job.number));
            self.send(Self::id(i), msgs);
            self.drive(i);
        }
    }

    /// Checks replica `i`'s invariants, its committed slots, its ballot and leadership.
    pub fn check_node(&mut self, i: usize) {
        let id = Self::id(i);
        let Some(sn) = self.nodes[i].as_mut() else {
            return;
        };
        let node = &sn.node;
        let mut c = self.checker.lock();
        if let Err(e) = node.check_invariants() {
            c.violations.push(format!("node {id}: {e}"));
        }
        let ballot = node.ballot();
        if node.is_leader() {
            match c.leaders.get(&ballot) {
                Some(&l) if l != id => c
                    .violations
                    .push(format!("ballot {ballot} has leaders {l} and {id}")),
                _ => {
                    c.leaders.insert(ballot, id);
                }
            }
        }
        match node.lease_basis() {
            Some(basis) => {
                let end = basis + node.config().lease_duration().as_millis() as u64;
                c.lease_grants += 1;
                c.leases.insert(id, (end, ballot));
            }
            // Dropped while still leading the lease's ballot: it started a transfer, and
            // answers None from before the hand-over can take effect.
            None if node.is_leader() && c.leases.get(&id).is_some_and(|&(_, b)| b == ballot) => {
                c.leases.remove(&id);
            }
            None => {}
        }
        if node.is_leader() {
            for (&other, &(end, b)) in c.leases.clone().iter() {
                if other != id && b < ballot && self.now < end {
                    c.violations.push(format!(
                        "node {id} leads ballot {ballot} at {} while node {other}'s lease of ballot {b} runs until {end}",
                        self.now
                    ));
                }
            }
        }
        let commit = node.commit_index();
        let from = sn.checked.max(node.first_index().saturating_sub(1));
        for slot in (from + 1)..=commit {
            let Some(e) = node.entry(slot) else { break };
            match c.chosen.get(&slot).cloned() {
                Some(v) if v != e.payload => c.violations.push(format!(
                    "node {id} committed {:?} at slot {slot}, chosen was {v:?}",
                    e.payload
                )),
                Some(_) => {}
                None => {
                    c.chosen.insert(slot, e.payload.clone());
                }
            }
        }
        sn.checked = sn.checked.max(commit);
    }

    /// Advances virtual time by one millisecond.
    pub fn step(&mut self) {
        self.now += 1;
        while let Some((&(at, s), _)) = self.queue.first_key_value() {
            if at > self.now {
                break;
            }
            let Some(p) = self.queue.remove(&(at, s)) else {
                break;
            };
            self.deliver(p);
        }
        for i in 0..self.n {
            if self.ticking {
                let now = self.now;
                if let Some(sn) = self.nodes[i].as_mut() {
                    while now >= sn.next_tick {
                        sn.node.tick();
                        sn.node.renew_lease(now);
                        sn.next_tick += sn.period;
                    }
                }
            }
            self.drive(i);
            self.complete_due(i);
        }
    }

    /// Delivers one packet now (if its destination lives).
    pub fn deliver(&mut self, p: Packet) {
        let i = (p.to - 1) as usize;
        let Some(sn) = self.nodes.get_mut(i).and_then(|n| n.as_mut()) else {
            return;
        };
        if let Err(e) = sn.node.step(p.from, &p.payload) {
            self.checker.lock().violations.push(format!(
                "node {} refused a message from {}: {e}",
                p.to, p.from
            ));
        }
        self.drive(i);
    }

    pub fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    /// Runs until `f` holds or `ms` pass; returns whether it held.
    pub fn run_until(&mut self, ms: u64, mut f: impl FnMut(&Sim) -> bool) -> bool {
        for _ in 0..ms {
            if f(self) {
                return true;
            }
            self.step();
        }
        f(self)
    }

    /// The live leader with the highest ballot, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.n)
            .filter(|&i| self.nodes[i].as_ref().is_some_and(|s| s.node.is_leader()))
            .max_by_key(|&i| self.node(i).ballot())
    }

    /// A fresh unique value.
    pub fn value(&mut self) -> Bytes {
        self.next_value += 1;
        Bytes::from(format!("v{}", self.next_value))
    }

    /// Proposes a fresh value on the leader (if any); returns it.
    pub fn propose(&mut self) -> Option<Bytes> {
        let l = self.leader()?;
        let v = self.value();
        self.node_mut(l).propose(v.clone()).ok()?;
        self.proposed.push(v.clone());
        self.drive(l);
        Some(v)
    }

    /// Whether every live replica applied at least up to `index`.
    pub fn all_applied(&self, index: u64) -> bool {
        (0..self.n).all(|i| !self.alive(i) || self.node(i).applied_index() >= index)
    }

    /// Every slot committed anywhere holds its value on a majority of disks (or is covered
    /// by their snapshots): what was acknowledged was durable, so a crash of everyone loses
    /// nothing committed. Not for `memory` durability.
    pub fn check_durable_majority(&mut self) {
        let chosen = self.checker.lock().chosen.clone();
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
        for (slot, v) in chosen {
            let held = disks
                .iter()
                .filter(|(snap, m)| slot <= *snap || m.get(&slot) == Some(&v))
                .count();
            if held < majority {
                c.violations.push(format!(
                    "committed slot {slot} is durable on {held} disks only"
                ));
            }
        }
    }

    pub fn violations(&self) -> Vec<String> {
        self.checker.lock().violations.clone()
    }

    pub fn assert_safe(&self) {
        let v = self.violations();
        assert!(v.is_empty(), "violations: {v:#?}");
    }

    /// Delivers everything in flight and completes every persist job (no ticks).
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            let busy = !self.queue.is_empty()
                || (0..self.n).any(|i| {
                    !self.hold_persist.contains(&i)
                        && self.nodes[i]
                            .as_ref()
                            .is_some_and(|s| !s.pending.is_empty())
                });
            if !busy {
                return;
            }
            let was = self.ticking;
            self.ticking = false;
            // Jump to the next event.
            let next_packet = self.queue.keys().next().map(|k| k.0);
            let next_job = (0..self.n)
                .filter(|i| !self.hold_persist.contains(i))
                .filter_map(|i| {
                    self.nodes[i]
                        .as_ref()
                        .and_then(|s| s.pending.front().map(|j| j.0))
                })
                .min();
            let target = next_packet
                .into_iter()
                .chain(next_job)
                .min()
                .unwrap_or(self.now);
            while self.now < target {
                self.step();
            }
            self.step();
            self.ticking = was;
        }
        panic!("the lab did not settle");
    }

    /// Ticks replica `i` `n` times (manual scenarios), driving it after each.
    pub fn tick_node(&mut self, i: usize, n: usize) {
        for _ in 0..n {
            if let Some(sn) = self.nodes[i].as_mut() {
                sn.node.tick();
            }
            self.drive(i);
        }
    }
}
