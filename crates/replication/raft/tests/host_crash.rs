//! Kill/restart and log-failure scenarios on the real `RaftHost` and the real log store (not
//! bit-reproducible; the seeded lab suite is the deterministic counterpart).
//!
//! A replica lives in a temp directory (log with 256 KiB segments, fsync durability,
//! snapshot files) and talks over an in-process `MemNetwork`. A crash is a process-level
//! stop: the node is cut off the network, its log store loses every write not yet synced
//! (`LogStore::crash`), and its threads are stopped; the restarted replica reopens the same
//! directory. Every apply on every replica is checked against one global history (same
//! index, same entry), and every entry a leader applied (acknowledged to its client) must
//! be on every replica at the end.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_logstore::{Durability, LogStore, LogStoreConfig};
use mako_raft::{HostConfig, RaftConfig, RaftHost, RaftWorker};
use mako_replication::{
    Applied, GroupHealth, NodeId, QueuedEntry, Replicator, Resolution, Role, SnapshotHandler,
    SubmitError,
};
use mako_transport::mem::MemNetwork;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::SmallRng};

const SHARD: u32 = 3;

/// Entry `n`: its number, then padding derived from it (checked at every apply).
fn entry(n: u64, pad: usize) -> Bytes {
    let mut v = n.to_le_bytes().to_vec();
    v.extend((0..pad).map(|k| (n as u8).wrapping_add(k as u8)));
    Bytes::from(v)
}

/// The entry's number, if the entry is intact.
fn entry_number(b: &[u8]) -> Option<u64> {
    let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    b[8..]
        .iter()
        .enumerate()
        .all(|(k, &x)| x == (n as u8).wrapping_add(k as u8))
        .then_some(n)
}

/// What every replica's applies are checked against.
#[derive(Default)]
struct Oracle {
    /// index → entry number, as first applied anywhere.
    history: Mutex<BTreeMap<u64, u64>>,
    /// Entries a leader applied (the client would have been told "committed").
    acked: Mutex<HashSet<u64>>,
    /// Broken invariants, with what saw them.
    violations: Mutex<Vec<String>>,
    /// Snapshots restored (at restart or installed from a leader), for the summary.
    restores: AtomicU64,
    /// Snapshots taken while entries waited in the pending queue, for the summary.
    queued_in_snapshots: AtomicU64,
    /// Snapshots taken.
    taken: AtomicU64,
}

impl Oracle {
    fn check(&self, node: NodeId, index: u64, n: u64, via: &str) {
        let mut h = self.history.lock();
        match h.get(&index) {
            Some(&m) if m != n => self.violations.lock().push(format!(
                "node {node} {via} entry {n} at index {index}, where entry {m} was applied"
            )),
            Some(_) => {}
            None => {
                h.insert(index, n);
            }
        }
    }

    fn violate(&self, v: String) {
        self.violations.lock().push(v);
    }
}

/// One incarnation's applied history `(index, entry number)`; also its snapshot handler.
///
/// A snapshot holds the history and the group's pending queue (entries committed before
/// the apply callbacks were registered, e.g. replayed from the log at a restart); a restore
/// hands that queue back, and the callbacks drain it ahead of every later entry.
#[derive(Clone)]
struct History {
    node: NodeId,
    applied: Arc<Mutex<Vec<(u64, u64)>>>,
    oracle: Arc<Oracle>,
}

/// Reads a little-endian `u64` at `*at`, advancing it.
fn read_u64(data: &[u8], at: &mut usize) -> Option<u64> {
    let v = u64::from_le_bytes(data.get(*at..*at + 8)?.try_into().ok()?);
    *at += 8;
    Some(v)
}

/// A decoded [`History`] snapshot: the history `(index, entry number)` and the pending queue.
type Decoded = (Vec<(u64, u64)>, Vec<QueuedEntry>);

/// Decodes a [`History`] snapshot: the history, then the pending queue.
fn decode_snapshot(data: &[u8]) -> Option<Decoded> {
    let mut at = 0;
    let n = read_u64(data, &mut at)?;
    let mut h = Vec::new();
    for _ in 0..n {
        h.push((read_u64(data, &mut at)?, read_u64(data, &mut at)?));
    }
    let mut pending = Vec::new();
    while at < data.len() {
        let index = read_u64(data, &mut at)?;
        let len = usize::try_from(read_u64(data, &mut at)?).ok()?;
        let entry = Bytes::copy_from_slice(data.get(at..at.checked_add(len)?)?);
        at += len;
        pending.push(QueuedEntry { index, entry });
    }
    Some((h, pending))
}

impl SnapshotHandler for History {
    fn snapshot(&mut self, pending: &[QueuedEntry]) -> Bytes {
        self.oracle.taken.fetch_add(1, Ordering::Relaxed);
        let a = self.applied.lock();
        let mut out = Vec::with_capacity(8 + a.len() * 16);
        out.extend_from_slice(&(a.len() as u64).to_le_bytes());
        for (i, n) in a.iter() {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        if !pending.is_empty() {
            self.oracle
                .queued_in_snapshots
                .fetch_add(1, Ordering::Relaxed);
        }
        for q in pending {
            out.extend_from_slice(&q.index.to_le_bytes());
            out.extend_from_slice(&(q.entry.len() as u64).to_le_bytes());
            out.extend_from_slice(&q.entry);
        }
        out.into()
    }

    fn restore(
        &mut self,
        data: &Bytes,
        index: u64,
    ) -> Result<Vec<QueuedEntry>, mako_replication::SnapshotRefused> {
        self.oracle.restores.fetch_add(1, Ordering::Relaxed);
        let Some((h, pending)) = decode_snapshot(data) else {
            self.oracle
                .violate(format!("node {}: malformed snapshot", self.node));
            return Ok(Vec::new());
        };
        let mut last = 0;
        for &(i, n) in &h {
            self.oracle.check(self.node, i, n, "restored");
            last = i;
        }
        for q in &pending {
            if q.index <= last {
                self.oracle.violate(format!(
                    "node {}: snapshot queues index {} after {last}",
                    self.node, q.index
                ));
            }
            last = q.index;
        }
        if last > index {
            self.oracle.violate(format!(
                "node {}: snapshot at {index} holds index {last}",
                self.node
            ));
        }
        *self.applied.lock() = h;
        Ok(pending)
    }
}

/// Records one entry handed to replica `id`'s apply callback (in the role `role`).
fn record(id: NodeId, role: Role, h: &History, alive: &AtomicBool, index: u64, entry: &[u8]) {
    let oracle = &h.oracle;
    let Some(num) = entry_number(entry) else {
        oracle.violate(format!("node {id}: entry at index {index} is damaged"));
        return;
    };
    oracle.check(id, index, num, "applied");
    let mut a = h.applied.lock();
    if let Some(&(last, _)) = a.last()
        && last >= index
    {
        oracle.violate(format!("node {id}: applied index {index} after {last}"));
    }
    a.push((index, num));
    drop(a);
    if role == Role::Leader && alive.load(Ordering::SeqCst) {
        oracle.acked.lock().insert(num);
    }
}

/// A running replica.
struct Incarnation {
    host: RaftHost,
    log: Arc<LogStore>,
    group: Arc<RaftWorker>,
    history: History,
    /// Cleared at the crash: later callbacks of this incarnation no longer count as acks.
    alive: Arc<AtomicBool>,
    unapplied: Arc<Mutex<Vec<(u64, Resolution)>>>,
}

/// Raft timing for the threaded tests: short, so elections happen often.
fn raft_config(id: NodeId, n: u64, compact: u64) -> RaftConfig {
    let mut cfg = RaftConfig::new(id, (1..=n).collect(), SHARD);
    cfg.heartbeat_interval_ms = 5;
    cfg.election_timeout_min_ms = 60;
    cfg.election_timeout_max_ms = 120;
    cfg.compact_after_entries = compact;
    cfg.compact_log_percent = 0; // the test application's snapshot is its whole history
    cfg.max_unresolved_entries = 1024;
    cfg
}

fn log_config(dir: &Path) -> LogStoreConfig {
    LogStoreConfig {
        segment_bytes: 256 << 10,
        durability: Durability::Fsync,
        preallocated_segments: 1,
        ..LogStoreConfig::new(dir.join("log"))
    }
}

/// Starts (or restarts, from its directory) replica `id`. The node stays cut off the
/// network until the caller connects it.
fn start(
    net: &MemNetwork,
    id: NodeId,
    n: u64,
    dir: &Path,
    compact: u64,
    oracle: &Arc<Oracle>,
) -> Result<Incarnation, String> {
    start_with(net, id, n, dir, compact, oracle, true)
}

/// [`start`], with the apply callbacks registered only if `attach` (otherwise committed
/// entries wait in the group's pending queue until [`attach_callbacks`], as they do while
/// an application attaches late).
fn start_with(
    net: &MemNetwork,
    id: NodeId,
    n: u64,
    dir: &Path,
    compact: u64,
    oracle: &Arc<Oracle>,
    attach: bool,
) -> Result<Incarnation, String> {
    net.disconnect(id);
    let (transport, inbox) = net.endpoint(id);
    let (log, recovered) =
        LogStore::open(log_config(dir)).map_err(|e| format!("log store of node {id}: {e}"))?;
    let log = Arc::new(log);
    let host = RaftHost::new(
        Arc::new(transport),
        inbox,
        log.clone(),
        recovered,
        HostConfig {
            snapshot_dir: Some(dir.join("snap")),
        },
    );
    let history = History {
        node: id,
        applied: Arc::default(),
        oracle: oracle.clone(),
    };
    let group = host
        .start_group_with::<mako_raft::RaftNode>(
            raft_config(id, n, compact),
            Some(Box::new(history.clone())),
        )
        .map_err(|e| format!("group of node {id} did not start: {e}"))?;
    let alive = Arc::new(AtomicBool::new(true));
    let unapplied: Arc<Mutex<Vec<(u64, Resolution)>>> = Arc::default();
    let u = unapplied.clone();
    group.on_unapplied(Box::new(move |un| {
        if let Some(num) = entry_number(&un.entry) {
            u.lock().push((num, un.resolution));
        }
    }));
    let inc = Incarnation {
        host,
        log,
        group,
        history,
        alive,
        unapplied,
    };
    if attach {
        attach_callbacks(&inc);
    }
    Ok(inc)
}

/// Registers a replica's apply callbacks.
fn attach_callbacks(inc: &Incarnation) {
    let id = inc.history.node;
    for role in [Role::Leader, Role::Follower] {
        let (h, alive) = (inc.history.clone(), inc.alive.clone());
        inc.group.on_apply(
            role,
            Box::new(move |ctx| {
                // Entries queued before the callbacks came (or restored with a snapshot)
                // go first, in log order.
                while let Some(q) = ctx.queue.pop_front() {
                    record(id, role, &h, &alive, q.index, &q.entry);
                }
                record(id, role, &h, &alive, ctx.index, ctx.entry);
                Applied::normal(ctx.index)
            }),
        );
    }
}

/// A process-level stop: off the network, unsynced log writes lost, threads stopped.
fn crash(net: &MemNetwork, id: NodeId, inc: Incarnation) {
    net.disconnect(id);
    inc.alive.store(false, Ordering::SeqCst);
    inc.log.crash();
    inc.host.shutdown();
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// The index of the one running replica that leads, if exactly one does.
fn leader_of(nodes: &[Option<Incarnation>]) -> Option<usize> {
    let ls: Vec<usize> = (0..nodes.len())
        .filter(|&i| {
            nodes[i]
                .as_ref()
                .is_some_and(|r| r.group.role() == Role::Leader)
        })
        .collect();
    (ls.len() == 1).then(|| ls[0])
}

fn applied_numbers(inc: &Incarnation) -> HashSet<u64> {
    inc.history.applied.lock().iter().map(|&(_, n)| n).collect()
}

/// Found by `kill_restart_real_hosts` (seed 46 of a 60-seed run: "replica 3 lacks 137
/// acknowledged entries"). A replica restarted with more than `compact_after_entries`
/// committed entries in its log replayed them in its first turn, before its owner had
/// registered apply callbacks, into the pending queue, and compacted at their index. A group
/// now applies nothing until a callback exists (an entry applied to nobody reaches the
/// application out of turn: a site's watermark never saw it), so it cannot compact past
/// entries its application has not seen; once the callbacks come it replays and compacts,
/// and a restart from that snapshot has every entry.
#[test]
fn entries_queued_when_a_snapshot_is_taken_survive_a_restart_from_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = MemNetwork::new();
    let oracle = Arc::new(Oracle::default());
    let dirs: Vec<PathBuf> = (1..=3u64)
        .map(|id| dir.path().join(format!("n{id}")))
        .collect();
    // Three replicas commit 120 entries, with no compaction.
    let mut nodes: Vec<Option<Incarnation>> = (1..=3u64)
        .map(|id| {
            Some(start(&net, id, 3, &dirs[id as usize - 1], 10_000, &oracle).expect("starts"))
        })
        .collect();
    for id in 1..=3 {
        net.connect(id);
    }
    let mut l = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            l = leader_of(&nodes);
            l.is_some()
        }),
        "no leader"
    );
    let leader = nodes[l.expect("leader")].as_ref().expect("running");
    let all: HashSet<u64> = (0..120).collect();
    for &k in &all {
        leader.group.submit(entry(k, 50)).expect("submit");
    }
    assert!(
        wait_until(Duration::from_secs(20), || nodes
            .iter()
            .flatten()
            .all(|r| applied_numbers(r).is_superset(&all))),
        "entries not applied everywhere"
    );
    // Replica 3 stops and restarts alone, compacting after 50 entries, with no apply
    // callbacks: it holds its committed log back.
    let r = nodes[2].take().expect("running");
    r.host.shutdown();
    let applied = r.group.applied_index();
    let r = start_with(&net, 3, 3, &dirs[2], 50, &oracle, false).expect("restarts");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.group.applied_index(), 0, "no callback, nothing applied");
    // The callbacks come: it replays everything, in order, and compacts.
    let taken = oracle.taken.load(Ordering::Relaxed);
    attach_callbacks(&r);
    assert!(
        wait_until(Duration::from_secs(20), || r.group.applied_index()
            >= applied
            && applied_numbers(&r).is_superset(&all)
            && oracle.taken.load(Ordering::Relaxed) > taken),
        "replica 3 did not replay its log and compact"
    );
    r.host.shutdown();
    // Restarted from that snapshot (still alone), it has every entry.
    let restores = oracle.restores.load(Ordering::Relaxed);
    let r = start(&net, 3, 3, &dirs[2], 50, &oracle).expect("restarts");
    assert!(
        oracle.restores.load(Ordering::Relaxed) > restores,
        "setup: replica 3 restarted from its snapshot"
    );
    assert!(
        wait_until(Duration::from_secs(20), || applied_numbers(&r)
            .is_superset(&all)),
        "replica 3 lost entries that were queued when its snapshot was taken: has {} of {}",
        applied_numbers(&r).len(),
        all.len()
    );
    assert!(
        oracle.violations.lock().is_empty(),
        "{:?}",
        oracle.violations.lock()
    );
    r.host.shutdown();
    for r in nodes.iter_mut().filter_map(Option::take) {
        r.host.shutdown();
    }
}

/// A leader whose log fails steps down and stops, says why, resolves its in-flight
/// submission exactly once, and the others elect a new leader and keep committing.
#[test]
fn a_log_io_failure_stops_the_group_and_a_new_leader_takes_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = MemNetwork::new();
    let oracle = Arc::new(Oracle::default());
    let mut nodes: Vec<Option<Incarnation>> = (1..=3u64)
        .map(|id| {
            let d = dir.path().join(format!("n{id}"));
            Some(start(&net, id, 3, &d, 10_000, &oracle).expect("starts"))
        })
        .collect();
    for id in 1..=3 {
        net.connect(id);
    }
    let mut l = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            l = leader_of(&nodes);
            l.is_some()
        }),
        "no leader"
    );
    let l = l.expect("leader");
    let leader = nodes[l].as_ref().expect("running");
    for k in 0..20 {
        leader.group.submit(entry(k, 50)).expect("submit");
    }
    let first: HashSet<u64> = (0..20).collect();
    assert!(
        wait_until(Duration::from_secs(20), || nodes
            .iter()
            .flatten()
            .all(|r| applied_numbers(r).is_superset(&first))),
        "first entries not applied everywhere"
    );

    // The leader's disk fails on its next flush: the append of entry 100.
    leader.log.inject_io_failure();
    leader
        .group
        .submit(entry(100, 50))
        .expect("in-flight submit");
    assert!(
        wait_until(Duration::from_secs(20), || matches!(
            leader.group.health(),
            GroupHealth::Failed(_)
        )),
        "the leader's group did not stop"
    );
    let GroupHealth::Failed(reason) = leader.group.health() else {
        unreachable!()
    };
    assert!(reason.contains("log"), "reason names the log: {reason}");
    assert_eq!(leader.group.role(), Role::Follower);
    assert!(matches!(
        leader.group.submit(entry(101, 50)),
        Err(SubmitError::Failed | SubmitError::Stopped)
    ));
    assert_eq!(leader.group.outstanding(), 0, "every submission resolved");
    let applied_here = applied_numbers(leader).contains(&100);
    let reported: Vec<Resolution> = leader
        .unapplied
        .lock()
        .iter()
        .filter(|(n, _)| *n == 100)
        .map(|(_, r)| *r)
        .collect();
    match (applied_here, reported.as_slice()) {
        (true, []) | (false, [Resolution::Abandoned]) => {}
        other => panic!("entry 100 must end exactly once (applied xor abandoned): {other:?}"),
    }

    // The other two elect a leader among themselves and commit.
    let others: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let mut new_leader = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            new_leader = others.iter().copied().find(|&i| {
                nodes[i]
                    .as_ref()
                    .is_some_and(|r| r.group.role() == Role::Leader)
            });
            new_leader.is_some()
        }),
        "no new leader after the old one's log failed"
    );
    let nl = nodes[new_leader.expect("new leader")]
        .as_ref()
        .expect("running");
    assert!(nl.group.term() > leader.group.term());
    let second: HashSet<u64> = (200..220).collect();
    for &k in &second {
        nl.group
            .submit(entry(k, 50))
            .expect("submit to the new leader");
    }
    assert!(
        wait_until(Duration::from_secs(20), || others.iter().all(|&i| {
            nodes[i]
                .as_ref()
                .is_some_and(|r| applied_numbers(r).is_superset(&second))
        })),
        "the new leader does not commit"
    );
    if applied_here {
        assert!(
            others.iter().all(|&i| nodes[i]
                .as_ref()
                .is_some_and(|r| applied_numbers(r).contains(&100))),
            "entry 100 was applied by the old leader, so it is committed"
        );
    }
    assert!(
        oracle.violations.lock().is_empty(),
        "{:?}",
        oracle.violations.lock()
    );
    for r in nodes.iter_mut().filter_map(Option::take) {
        r.host.shutdown();
    }
}

/// The replicas of one kill/restart run and the faults on them.
struct Cluster {
    net: MemNetwork,
    dirs: Vec<PathBuf>,
    oracle: Arc<Oracle>,
    nodes: Vec<Option<Incarnation>>,
    /// Running replicas cut off the network.
    cut: Vec<bool>,
    /// The client's view of the running groups.
    groups: Arc<Mutex<Vec<Option<Arc<RaftWorker>>>>>,
    crashes: usize,
    /// Draws the delays before a restarted replica's callbacks are registered.
    rng: SmallRng,
}

impl Cluster {
    const COMPACT: u64 = 50;

    fn n(&self) -> usize {
        self.nodes.len()
    }

    /// Replicas crashed or cut off.
    fn faulty(&self) -> Vec<usize> {
        (0..self.n())
            .filter(|&i| self.nodes[i].is_none() || self.cut[i])
            .collect()
    }

    fn restart(&mut self, i: usize) -> Result<(), String> {
        let id = i as NodeId + 1;
        // Now and then the application attaches late: the entries the restarted replica
        // replays and catches up on meanwhile wait in the pending queue, and may be in a
        // snapshot's.
        let late = self.rng.random_bool(0.25);
        let inc = start_with(
            &self.net,
            id,
            self.n() as u64,
            &self.dirs[i],
            Self::COMPACT,
            &self.oracle,
            !late,
        )?;
        self.groups.lock()[i] = Some(inc.group.clone());
        self.nodes[i] = Some(inc);
        self.cut[i] = true;
        self.reconnect(i);
        if late {
            std::thread::sleep(Duration::from_millis(self.rng.random_range(1..100)));
            if let Some(inc) = self.nodes[i].as_ref() {
                attach_callbacks(inc);
            }
        }
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        self.groups.lock()[i] = None;
        if let Some(inc) = self.nodes[i].take() {
            crash(&self.net, i as NodeId + 1, inc);
            self.crashes += 1;
        }
        self.cut[i] = false;
    }

    fn disconnect(&mut self, i: usize) {
        if self.nodes[i].is_some() {
            self.net.disconnect(i as NodeId + 1);
            self.cut[i] = true;
        }
    }

    fn reconnect(&mut self, i: usize) {
        if self.cut[i] {
            self.net.connect(i as NodeId + 1);
            self.cut[i] = false;
        }
    }

    /// Repairs one faulty replica (restart or reconnect).
    fn repair(&mut self, i: usize) -> Result<(), String> {
        if self.nodes[i].is_none() {
            self.restart(i)
        } else {
            self.reconnect(i);
            Ok(())
        }
    }

    /// Directed: a follower lags (cut off), the leader crashes with entries it acknowledged,
    /// the other follower (which has them) goes away, and the restarted leader and the
    /// lagging follower form a majority without it. Safe only if the leader never counted
    /// an entry before its own copy was durable.
    fn lagging_majority(&mut self, rng: &mut SmallRng) -> Result<(), String> {
        let Some(l) = leader_of(&self.nodes) else {
            return Ok(());
        };
        let lag = (l + rng.random_range(1..self.n())) % self.n();
        let other = (0..self.n()).find(|&i| i != l && i != lag).unwrap_or(lag);
        self.disconnect(lag);
        std::thread::sleep(Duration::from_millis(rng.random_range(5..60)));
        self.crash(l);
        self.disconnect(other);
        self.restart(l)?;
        self.reconnect(lag);
        std::thread::sleep(Duration::from_millis(rng.random_range(50..250)));
        self.reconnect(other);
        Ok(())
    }

    /// One random fault or repair; at most two replicas faulty at a time.
    fn step(&mut self, rng: &mut SmallRng) -> Result<(), String> {
        let faulty = self.faulty();
        if faulty.is_empty() && rng.random_bool(0.2) {
            return self.lagging_majority(rng);
        }
        if !faulty.is_empty() && (faulty.len() >= 2 || rng.random_bool(0.6)) {
            return self.repair(faulty[rng.random_range(0..faulty.len())]);
        }
        let healthy: Vec<usize> = (0..self.n()).filter(|i| !faulty.contains(i)).collect();
        let victim = match leader_of(&self.nodes) {
            Some(l) if !faulty.contains(&l) && rng.random_bool(0.5) => l,
            _ => healthy[rng.random_range(0..healthy.len())],
        };
        if rng.random_bool(0.7) {
            self.crash(victim);
        } else {
            self.disconnect(victim);
        }
        Ok(())
    }
}

/// One seed of the kill/restart run. Returns the seed's failure, if any.
fn kill_restart_run(seed: u64, chaos: Duration) -> Result<Tally, String> {
    const N: u64 = 3;
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let oracle = Arc::new(Oracle::default());
    let mut c = Cluster {
        net: MemNetwork::new(),
        dirs: (1..=N)
            .map(|id| dir.path().join(format!("n{id}")))
            .collect(),
        oracle: oracle.clone(),
        nodes: (0..N).map(|_| None).collect(),
        cut: vec![false; N as usize],
        groups: Arc::new(Mutex::new(vec![None; N as usize])),
        crashes: 0,
        rng: SmallRng::seed_from_u64(seed ^ 0xa77ac4),
    };
    for i in 0..N as usize {
        c.restart(i)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(1));
    let client = {
        let (groups, stop, next) = (c.groups.clone(), stop.clone(), next.clone());
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
        std::thread::spawn(move || {
            let mut at = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let g = groups.lock()[at % N as usize].clone();
                let Some(g) = g else {
                    at += 1;
                    std::thread::yield_now();
                    continue;
                };
                let n = next.load(Ordering::SeqCst);
                match g.submit(entry(n, rng.random_range(0..600))) {
                    Ok(()) => {
                        next.fetch_add(1, Ordering::SeqCst);
                        if n % 8 == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    Err(SubmitError::Busy) => std::thread::sleep(Duration::from_millis(2)),
                    Err(SubmitError::NotLeader { hint: Some(h) }) if (1..=N).contains(&h) => {
                        at = h as usize - 1;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => {
                        at += 1;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        })
    };

    let end = Instant::now() + chaos;
    let mut failure = None;
    while Instant::now() < end && failure.is_none() {
        std::thread::sleep(Duration::from_millis(rng.random_range(20..120)));
        if let Err(e) = c.step(&mut rng) {
            failure = Some(e);
        }
    }
    // Heal: every replica back and connected; stop the load.
    for i in 0..N as usize {
        if failure.is_none()
            && let Err(e) = c.repair(i)
        {
            failure = Some(format!("at heal: {e}"));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = client.join();
    if failure.is_none() {
        failure = converge(&c.nodes, &oracle, next.load(Ordering::SeqCst) + 1_000_000);
    }
    for (i, r) in c.nodes.iter().enumerate() {
        if let Some(r) = r
            && let GroupHealth::Failed(why) = r.group.health()
        {
            failure.get_or_insert(format!("node {} failed: {why}", i + 1));
        }
    }
    let tally = Tally {
        acked: oracle.acked.lock().len(),
        crashes: c.crashes,
        restores: oracle.restores.load(Ordering::Relaxed),
        queued_in_snapshots: oracle.queued_in_snapshots.load(Ordering::Relaxed),
    };
    for r in c.nodes.iter_mut().filter_map(Option::take) {
        r.host.shutdown();
    }
    let violations = oracle.violations.lock().clone();
    if !violations.is_empty() {
        return Err(format!("{violations:?}"));
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(tally),
    }
}

/// What one seed exercised.
#[derive(Debug, Default)]
struct Tally {
    acked: usize,
    crashes: usize,
    restores: u64,
    queued_in_snapshots: u64,
}

/// After healing: a marker entry commits, every replica applies up to it, every
/// acknowledged entry is on every replica, and the histories are prefixes of one another.
fn converge(nodes: &[Option<Incarnation>], oracle: &Oracle, marker: u64) -> Option<String> {
    // (replica, marker number) of the marker in flight. One whose replica lost office is
    // replaced by a new one: a deposed leader's entry beyond the new leader's log is
    // resolved only once the group commits up to its index, which an idle group never does.
    let mut sent: Option<(usize, u64)> = None;
    let mut all_sent: Vec<u64> = Vec::new();
    let mut next = marker;
    let done = wait_until(Duration::from_secs(30), || {
        if let Some((i, m)) = sent
            && nodes[i].as_ref().is_none_or(|r| {
                r.group.role() != Role::Leader || r.unapplied.lock().iter().any(|(n, _)| *n == m)
            })
        {
            sent = None;
        }
        if sent.is_none()
            && let Some(l) = leader_of(nodes)
            && nodes[l]
                .as_ref()
                .is_some_and(|r| r.group.submit(entry(next, 8)).is_ok())
        {
            sent = Some((l, next));
            all_sent.push(next);
            next += 1;
        }
        all_sent.iter().any(|m| {
            nodes
                .iter()
                .flatten()
                .all(|r| applied_numbers(r).contains(m))
        })
    });
    let tries = all_sent.len();
    if !done {
        let state: Vec<String> = nodes
            .iter()
            .flatten()
            .map(|r| {
                format!(
                    "role {:?} term {} commit {} applied {} outstanding {} health {:?}",
                    r.group.role(),
                    r.group.term(),
                    r.group.commit_index(),
                    r.group.applied_index(),
                    r.group.outstanding(),
                    r.group.health()
                )
            })
            .collect();
        let fate = sent.map(|(i, m)| {
            let r = nodes[i].as_ref();
            (
                i + 1,
                m,
                r.map(|r| applied_numbers(r).contains(&m)),
                r.map(|r| {
                    r.unapplied
                        .lock()
                        .iter()
                        .filter(|(n, _)| *n == m)
                        .map(|(_, res)| *res)
                        .collect::<Vec<_>>()
                }),
            )
        });
        return Some(format!(
            "no convergence on a marker ({tries} submitted; last (replica, entry, applied \
             there, reported unapplied there): {fate:?}): {state:?}"
        ));
    }
    let acked = oracle.acked.lock().clone();
    let histories: Vec<Vec<(u64, u64)>> = nodes
        .iter()
        .flatten()
        .map(|r| r.history.applied.lock().clone())
        .collect();
    for (k, h) in histories.iter().enumerate() {
        let have: HashSet<u64> = h.iter().map(|&(_, n)| n).collect();
        let mut missing: Vec<u64> = acked.difference(&have).copied().collect();
        if !missing.is_empty() {
            missing.sort_unstable();
            return Some(format!(
                "replica {} lacks {} acknowledged entries, e.g. {:?}",
                k + 1,
                missing.len(),
                &missing[..missing.len().min(10)]
            ));
        }
    }
    let longest = histories.iter().max_by_key(|h| h.len())?;
    for (k, h) in histories.iter().enumerate() {
        if longest[..h.len()] != h[..] {
            return Some(format!(
                "replica {}'s history is not a prefix of the longest",
                k + 1
            ));
        }
    }
    None
}

/// Kill/restart on real hosts: seeds from `MAKO_HOST_SEEDS` (default 24).
#[test]
fn kill_restart_real_hosts() {
    let seeds: u64 = std::env::var("MAKO_HOST_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let first: u64 = std::env::var("MAKO_HOST_SEED_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chaos = Duration::from_millis(
        std::env::var("MAKO_HOST_CHAOS_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000),
    );
    let mut failures = Vec::new();
    let mut total = Tally::default();
    let t = Instant::now();
    for seed in first..first + seeds {
        match kill_restart_run(seed, chaos) {
            Ok(t) => {
                total.acked += t.acked;
                total.crashes += t.crashes;
                total.restores += t.restores;
                total.queued_in_snapshots += t.queued_in_snapshots;
            }
            Err(e) => {
                eprintln!("seed {seed}: {e}");
                failures.push((seed, e));
            }
        }
    }
    eprintln!(
        "kill_restart_real_hosts: {seeds} seeds, {total:?}, {:?}",
        t.elapsed()
    );
    assert!(failures.is_empty(), "failed seeds: {failures:?}");
    // Not a result, a check that the run did something: entries were acknowledged and
    // replicas crashed.
    assert!(
        seeds == 0 || (total.acked > 0 && total.crashes > 0),
        "{total:?}"
    );
}

/// Three bare `RaftNode`s whose messages and persist jobs the test moves by hand.
struct Bare {
    nodes: Vec<mako_raft::RaftNode>,
    /// Persist jobs handed out and not yet completed, per node (completed in order).
    held: Vec<Vec<mako_raft::PersistJob>>,
    /// Whether a node's persist jobs stay at the "disk" for now.
    hold: Vec<bool>,
    wire: Vec<(NodeId, mako_raft::OutMsg)>,
    /// A node cut off the network.
    cut: Option<NodeId>,
}

/// A snapshot handler with a fixed state.
struct Fixed;

impl SnapshotHandler for Fixed {
    fn snapshot(&mut self, _pending: &[mako_replication::QueuedEntry]) -> Bytes {
        Bytes::from_static(b"state")
    }

    fn restore(
        &mut self,
        _data: &Bytes,
        _index: u64,
    ) -> Result<Vec<mako_replication::QueuedEntry>, mako_replication::SnapshotRefused> {
        Ok(Vec::new())
    }
}

impl Bare {
    fn new(compact: u64) -> Self {
        let nodes = (1..=3)
            .map(|id| {
                let mut cfg = RaftConfig::new(id, vec![1, 2, 3], 0);
                cfg.heartbeat_interval_ms = 5;
                cfg.election_timeout_min_ms = 20;
                cfg.election_timeout_max_ms = 40;
                cfg.compact_after_entries = compact;
                cfg.compact_log_percent = 0; // the test application's snapshot is its whole history
                mako_raft::RaftNode::new(
                    cfg,
                    mako_raft::InitialState::default(),
                    Arc::new(mako_replication::ApplyDispatcher::discarding(0)),
                    Some(Box::new(Fixed)),
                )
                .expect("node")
            })
            .collect();
        Bare {
            nodes,
            held: (0..3).map(|_| Vec::new()).collect(),
            hold: vec![false; 3],
            wire: Vec::new(),
            cut: None,
        }
    }

    fn poll(&mut self, i: usize) {
        let from = i as NodeId + 1;
        loop {
            let out = self.nodes[i].poll();
            if out.is_empty() {
                return;
            }
            if let Some(c) = out.capture {
                let (index, term, data) = c.run_now();
                self.nodes[i].snapshot_captured(index, term, data);
            }
            self.wire
                .extend(out.messages.into_iter().map(|m| (from, m)));
            if let Some(job) = out.persist {
                self.held[i].push(job);
            }
            if !self.hold[i] {
                self.release(i);
            }
        }
    }

    /// Completes node `i`'s held persist jobs, in order.
    fn release(&mut self, i: usize) {
        let from = i as NodeId + 1;
        for mut job in std::mem::take(&mut self.held[i]) {
            let after = std::mem::take(&mut job.after);
            self.wire.extend(after.into_iter().map(|m| (from, m)));
            let w = self.nodes[i].on_persisted(job.number);
            self.wire.extend(w.into_iter().map(|m| (from, m)));
        }
    }

    fn pump(&mut self) {
        for _ in 0..50 {
            for i in 0..3 {
                self.poll(i);
            }
            let msgs = std::mem::take(&mut self.wire);
            if msgs.is_empty() {
                return;
            }
            for (from, m) in msgs {
                if self.cut == Some(from) || self.cut == Some(m.to) {
                    continue;
                }
                let _ = self.nodes[m.to as usize - 1].step(from, &m.payload);
            }
        }
    }

    fn tick(&mut self, i: usize, n: usize) {
        for _ in 0..n {
            self.nodes[i].tick();
            self.pump();
        }
    }
}

/// Found by `kill_restart_real_hosts` (seed 208 of one run: "panic in the raft core:
/// unexpected error getting unapplied entries [1764, 1899): Store(Compacted)"), on the code
/// before the node stopped campaigning while installing a snapshot.
/// A follower that installed a leader's snapshot has the snapshot in its storage at once,
/// but raft-rs advances its applied index only once the snapshot's persist job is durable.
/// If its election timer fires in between (the leader died, the disk is slow), raft-rs
/// reads the entries after its old applied index to campaign, finds them compacted and
/// panics, which stops the group. The node must not campaign before the snapshot is durable.
#[test]
fn a_follower_does_not_campaign_while_its_installed_snapshot_is_not_durable() {
    let mut b = Bare::new(5);
    b.nodes[0].campaign().expect("campaign");
    b.pump();
    assert!(b.nodes[0].is_leader());
    // Node 3 is away while the leader and node 2 commit and compact well past it.
    b.cut = Some(3);
    for k in 0..40u8 {
        b.nodes[0].propose(Bytes::from(vec![k])).expect("propose");
        b.pump();
        // Check-quorum ticks let the leader see node 3 is gone, so it compacts past it.
        b.tick(0, 1);
    }
    assert!(
        b.nodes[0].first_index() > b.nodes[2].last_index() + 1,
        "the leader compacted past node 3"
    );
    // Node 3 comes back and gets a snapshot, whose write stays at its disk.
    b.cut = None;
    b.hold[2] = true;
    b.tick(0, 2);
    assert!(b.nodes[2].stats().snapshots_installed >= 1, "snapshot sent");
    assert!(!b.held[2].is_empty(), "its write is still pending");
    // The leader goes away; node 3's election timer fires many times over.
    b.cut = Some(1);
    let term = b.nodes[2].term();
    b.tick(2, 30);
    assert_eq!(
        b.nodes[2].term(),
        term,
        "no campaign before the snapshot is durable"
    );
    // Once durable, node 3 campaigns (and with node 2, wins).
    b.hold[2] = false;
    b.release(2);
    b.tick(2, 30);
    b.tick(1, 30);
    assert!(
        b.nodes[2].is_leader() || b.nodes[1].is_leader(),
        "nodes 2 and 3 elect a leader"
    );
}

/// A snapshot handler that refuses: at the integrity check (`check_fails`), or only when
/// restoring.
struct Refusing {
    check_fails: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("refused by the test")]
struct TestRefusal;

impl SnapshotHandler for Refusing {
    fn snapshot(&mut self, _pending: &[mako_replication::QueuedEntry]) -> Bytes {
        Bytes::from_static(b"state")
    }

    fn check(&self, _data: &[u8]) -> Result<(), mako_replication::SnapshotRefused> {
        if self.check_fails {
            Err(mako_replication::SnapshotRefused(Box::new(TestRefusal)))
        } else {
            Ok(())
        }
    }

    fn restore(
        &mut self,
        _data: &Bytes,
        _index: u64,
    ) -> Result<Vec<mako_replication::QueuedEntry>, mako_replication::SnapshotRefused> {
        Err(mako_replication::SnapshotRefused(Box::new(TestRefusal)))
    }
}

/// Node 3 is cut off while the leader commits and compacts past it, then comes back.
fn lagging_node_3(b: &mut Bare) {
    b.nodes[0].campaign().expect("campaign");
    b.pump();
    assert!(b.nodes[0].is_leader());
    b.cut = Some(3);
    for k in 0..40u8 {
        b.nodes[0].propose(Bytes::from(vec![k])).expect("propose");
        b.pump();
        b.tick(0, 1);
    }
    assert!(
        b.nodes[0].first_index() > b.nodes[2].last_index() + 1,
        "setup: the leader compacted past node 3"
    );
    b.cut = None;
}

/// A snapshot whose data the application's check refuses is dropped like a lost message:
/// never installed, nothing applied, the node keeps running (and keeps asking).
#[test]
fn a_snapshot_refused_by_the_check_is_never_installed() {
    let mut b = Bare::new(5);
    b.nodes[2].set_snapshot_handler(Box::new(Refusing { check_fails: true }));
    lagging_node_3(&mut b);
    let applied = b.nodes[2].applied_index();
    b.tick(0, 20);
    let n = &b.nodes[2];
    assert!(n.stats().snapshots_refused >= 1, "the snapshot was offered");
    assert_eq!(n.stats().snapshots_installed, 0);
    assert_eq!(n.applied_index(), applied, "nothing applied past the gap");
    assert!(n.failure().is_none());
}

/// A snapshot the application fails to restore after raft-rs accepted it: the node applies
/// nothing after it (the entries would build on a state it lacks) and reports a failure, which
/// the worker turns into a stopped group.
#[test]
fn a_snapshot_that_fails_to_restore_stops_applying() {
    let mut b = Bare::new(5);
    b.nodes[2].set_snapshot_handler(Box::new(Refusing { check_fails: false }));
    lagging_node_3(&mut b);
    let dispatched = b.nodes[2].dispatcher().stats().applied;
    b.tick(0, 5);
    for k in 0..10u8 {
        b.nodes[0]
            .propose(Bytes::from(vec![100 + k]))
            .expect("propose");
        b.pump();
    }
    let n = &b.nodes[2];
    assert_eq!(
        n.dispatcher().stats().applied,
        dispatched,
        "no entry applied on top of the unrestored state"
    );
    assert!(n.failure().is_some(), "the refusal is reported");
}
