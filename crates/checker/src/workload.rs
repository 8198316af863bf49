//! Workloads whose anomalies are visible, the executor trait a driver implements, and a
//! multi-threaded runner that records a [`History`].

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::history::{History, Key, Op, Outcome, Recorder, Value};

/// The workload families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// Each transaction appends unique values to some keys and reads others (whole lists).
    ListAppend,
    /// Read-write registers with unique values (reads, writes, read-then-write).
    Registers,
    /// Transfers between accounts (counter adds) and audits reading every account.
    Bank,
    /// Pairs on fresh keys per round: A reads x and writes y, B reads y and writes x.
    WriteSkew,
}

impl WorkloadKind {
    /// Every kind, in a fixed order.
    pub const ALL: [WorkloadKind; 4] = [
        WorkloadKind::ListAppend,
        WorkloadKind::Registers,
        WorkloadKind::Bank,
        WorkloadKind::WriteSkew,
    ];

    /// The command-line name (`list-append`, `registers`, `bank`, `write-skew`).
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::ListAppend => "list-append",
            WorkloadKind::Registers => "registers",
            WorkloadKind::Bank => "bank",
            WorkloadKind::WriteSkew => "write-skew",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown workload name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown workload {0:?} (expected list-append, registers, bank or write-skew)")]
pub struct UnknownWorkload(pub String);

impl FromStr for WorkloadKind {
    type Err = UnknownWorkload;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "list-append" | "append" => Ok(WorkloadKind::ListAppend),
            "registers" | "rw-register" | "register" => Ok(WorkloadKind::Registers),
            "bank" => Ok(WorkloadKind::Bank),
            "write-skew" => Ok(WorkloadKind::WriteSkew),
            other => Err(UnknownWorkload(other.to_string())),
        }
    }
}

/// How keys (list slots, registers, accounts) are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// `hot_percent`% of picks go to the first `hot_keys` keys, the rest are uniform.
    Hot {
        /// Number of hot keys.
        hot_keys: usize,
        /// Share of picks that go to the hot keys, in percent.
        hot_percent: u32,
    },
}

impl KeyDist {
    fn pick(self, rng: &mut SmallRng, n: usize) -> usize {
        match self {
            KeyDist::Hot {
                hot_keys,
                hot_percent,
            } if hot_keys > 0 && rng.random_range(0..100) < hot_percent => {
                rng.random_range(0..hot_keys.min(n))
            }
            _ => rng.random_range(0..n),
        }
    }
}

/// Parameters of a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// The family.
    pub kind: WorkloadKind,
    /// Active keys: list slots, registers, or bank accounts (unused by write-skew).
    pub keys: usize,
    /// Key distribution.
    pub dist: KeyDist,
    /// Most operations (keys) per transaction, at least 1.
    pub max_ops: usize,
    /// List-append: after this many appends a slot moves on to a fresh key, which keeps
    /// lists short (reads cost O(length)).
    pub max_appends_per_key: u64,
    /// Added to every key, to separate runs that share one database.
    pub key_offset: Key,
}

impl WorkloadConfig {
    /// Defaults for `kind`: 10 keys (8 accounts), uniform, up to 4 operations, lists of 64.
    pub fn new(kind: WorkloadKind) -> Self {
        WorkloadConfig {
            kind,
            keys: if kind == WorkloadKind::Bank { 8 } else { 10 },
            dist: KeyDist::Uniform,
            max_ops: 4,
            max_appends_per_key: 64,
            key_offset: 0,
        }
    }
}

struct GenShared {
    /// List-append: appends handed out per slot (the slot's current key is `count / max`).
    slot_appends: Vec<AtomicU64>,
    /// Write-skew: the next (round, side) ticket.
    skew_ticket: AtomicU64,
}

/// A workload: configuration plus the state its clients share (key rotation, write-skew
/// rounds). Create one per run and give each client its own [`ClientGen`].
pub struct Workload {
    config: WorkloadConfig,
    shared: Arc<GenShared>,
}

impl Workload {
    /// A workload with the given parameters (`keys` and `max_ops` are raised to at least 1,
    /// bank to at least 2 accounts).
    pub fn new(mut config: WorkloadConfig) -> Self {
        config.keys = config.keys.max(if config.kind == WorkloadKind::Bank {
            2
        } else {
            1
        });
        config.max_ops = config.max_ops.max(1);
        config.max_appends_per_key = config.max_appends_per_key.max(1);
        let slot_appends = (0..config.keys).map(|_| AtomicU64::new(0)).collect();
        Workload {
            config,
            shared: Arc::new(GenShared {
                slot_appends,
                skew_ticket: AtomicU64::new(0),
            }),
        }
    }

    /// The parameters.
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// The generator of client `client`, seeded from `seed` and `client`. Values it writes
    /// are unique across clients.
    pub fn client(&self, client: usize, seed: u64) -> ClientGen {
        ClientGen {
            config: self.config.clone(),
            shared: Arc::clone(&self.shared),
            rng: SmallRng::seed_from_u64(splitmix(seed ^ splitmix(client as u64))),
            client: client as u64,
            seq: 0,
        }
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One client's transaction generator (deterministic given seed, client and the shared
/// counters' interleaving).
pub struct ClientGen {
    config: WorkloadConfig,
    shared: Arc<GenShared>,
    rng: SmallRng,
    client: u64,
    seq: u64,
}

impl ClientGen {
    fn fresh_value(&mut self) -> Value {
        self.seq += 1;
        ((self.client + 1) << 40) | self.seq
    }

    fn distinct_slots(&mut self, n: usize) -> Vec<usize> {
        let want = n.min(self.config.keys);
        let mut out = Vec::with_capacity(want);
        let mut tries = 0;
        while out.len() < want && tries < 64 * want {
            let s = self.config.dist.pick(&mut self.rng, self.config.keys);
            if !out.contains(&s) {
                out.push(s);
            }
            tries += 1;
        }
        out
    }

    /// The next transaction's operations.
    pub fn next_txn(&mut self) -> Vec<Op> {
        let off = self.config.key_offset;
        match self.config.kind {
            WorkloadKind::ListAppend => {
                let n = self.rng.random_range(1..=self.config.max_ops);
                let keys = self.config.keys as u64;
                let max = self.config.max_appends_per_key;
                let mut ops = Vec::with_capacity(n);
                for s in self.distinct_slots(n) {
                    let counter = &self.shared.slot_appends[s];
                    if self.rng.random_bool(0.5) {
                        let generation = counter.fetch_add(1, Ordering::Relaxed) / max;
                        let value = self.fresh_value();
                        let key = off + generation * keys + s as u64;
                        ops.push(Op::Append { key, value });
                    } else {
                        let generation = counter.load(Ordering::Relaxed) / max;
                        ops.push(Op::Read {
                            key: off + generation * keys + s as u64,
                        });
                    }
                }
                ops
            }
            WorkloadKind::Registers => {
                let n = self.rng.random_range(1..=self.config.max_ops);
                let mut ops = Vec::with_capacity(n + 1);
                for s in self.distinct_slots(n) {
                    let key = off + s as u64;
                    match self.rng.random_range(0..10) {
                        0..4 => ops.push(Op::Read { key }),
                        4..7 => {
                            let value = self.fresh_value();
                            ops.push(Op::Write { key, value });
                        }
                        _ => {
                            let value = self.fresh_value();
                            ops.push(Op::Read { key });
                            ops.push(Op::Write { key, value });
                        }
                    }
                }
                ops
            }
            WorkloadKind::Bank => {
                if self.rng.random_range(0..5) == 0 {
                    (0..self.config.keys as u64)
                        .map(|k| Op::Read { key: off + k })
                        .collect()
                } else {
                    let slots = self.distinct_slots(2);
                    let amount = self.rng.random_range(1..=5i64);
                    match slots.as_slice() {
                        [a, b] => vec![
                            Op::Add {
                                key: off + *a as u64,
                                delta: -amount,
                            },
                            Op::Add {
                                key: off + *b as u64,
                                delta: amount,
                            },
                        ],
                        // The distribution never yielded a second account: audit instead.
                        _ => (0..self.config.keys as u64)
                            .map(|k| Op::Read { key: off + k })
                            .collect(),
                    }
                }
            }
            WorkloadKind::WriteSkew => {
                let ticket = self.shared.skew_ticket.fetch_add(1, Ordering::Relaxed);
                let x = off + (ticket / 2) * 2;
                let (read, write) = if ticket.is_multiple_of(2) {
                    (x, x + 1)
                } else {
                    (x + 1, x)
                };
                let value = self.fresh_value();
                vec![Op::Read { key: read }, Op::Write { key: write, value }]
            }
        }
    }
}

impl Iterator for ClientGen {
    type Item = Vec<Op>;

    fn next(&mut self) -> Option<Vec<Op>> {
        Some(self.next_txn())
    }
}

/// What an executor reports for one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecResult {
    /// The outcome the client learned.
    pub outcome: Outcome,
    /// One entry per operation, in order: for reads and adds that executed, the values seen
    /// (empty = absent; see [`crate::decode_values`]); `None` otherwise. May be shorter than
    /// the operations (missing entries are `None`).
    pub observed: Vec<Option<Vec<Value>>>,
}

impl ExecResult {
    /// Released with the given observations.
    pub fn released(observed: Vec<Option<Vec<Value>>>) -> Self {
        ExecResult {
            outcome: Outcome::Released,
            observed,
        }
    }

    /// Aborted, without observations.
    pub fn aborted(reason: impl Into<String>) -> Self {
        ExecResult {
            outcome: Outcome::Aborted(reason.into()),
            observed: Vec::new(),
        }
    }

    /// Unknown outcome, with whatever was observed.
    pub fn unknown(observed: Vec<Option<Vec<Value>>>) -> Self {
        ExecResult {
            outcome: Outcome::Unknown,
            observed,
        }
    }
}

/// Runs one transaction against a database. Implemented by drivers; one executor per
/// client thread, used by that thread only.
pub trait TxnExecutor {
    /// Executes `ops` in order as one transaction and reports outcome and observations.
    /// `Read`: the stored values; `Write`: overwrite; `Append`: append to the list;
    /// `Add`: read the counter (absent = 0), write `old.wrapping_add_signed(delta)`, and
    /// observe the old value.
    fn execute(&mut self, ops: &[Op]) -> ExecResult;
}

/// How long and how wide [`run_workload`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunConfig {
    /// Client threads (client ids `0..threads`; the final reads use client `threads`).
    pub threads: usize,
    /// Stop after this long, if set.
    pub duration: Option<Duration>,
    /// Stop after this many transactions per thread, if set (1000 if neither limit is set).
    pub txns_per_thread: Option<u64>,
    /// Seed of the generators.
    pub seed: u64,
    /// After the clients stop, read every written key (retrying aborts), so that lost
    /// writes become visible.
    pub final_reads: bool,
}

impl RunConfig {
    /// Run `threads` clients for `duration`, with final reads.
    pub fn for_duration(threads: usize, duration: Duration, seed: u64) -> Self {
        RunConfig {
            threads,
            duration: Some(duration),
            txns_per_thread: None,
            seed,
            final_reads: true,
        }
    }

    /// Run `threads` clients for `txns` transactions each, with final reads.
    pub fn for_txns(threads: usize, txns: u64, seed: u64) -> Self {
        RunConfig {
            threads,
            duration: None,
            txns_per_thread: Some(txns),
            seed,
            final_reads: true,
        }
    }
}

/// Runs `workload` with `run.threads` client threads, each with its own executor made by
/// `make_executor(client)` inside the thread, and returns the recorded history. All
/// threads are joined before it returns (a panicking client panics the caller).
pub fn run_workload<E, F>(workload: &Workload, run: &RunConfig, make_executor: F) -> History
where
    F: Fn(usize) -> E + Sync,
    E: TxnExecutor,
{
    let recorder = Recorder::new();
    let limit = match (run.duration, run.txns_per_thread) {
        (None, None) => Some(1000),
        (_, n) => n,
    };
    let deadline = run.duration.map(|d| Instant::now() + d);
    let written: Mutex<BTreeSet<Key>> = Mutex::new(BTreeSet::new());
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..run.threads)
            .map(|client| {
                let (recorder, make_executor, written) = (&recorder, &make_executor, &written);
                scope.spawn(move || {
                    let mut exec = make_executor(client);
                    let mut rec = recorder.client(client);
                    let mut generator = workload.client(client, run.seed);
                    let mut keys = BTreeSet::new();
                    let mut done = 0u64;
                    while limit.is_none_or(|n| done < n)
                        && deadline.is_none_or(|d| Instant::now() < d)
                    {
                        let ops = generator.next_txn();
                        keys.extend(
                            ops.iter()
                                .filter(|op| !matches!(op, Op::Read { .. }))
                                .map(Op::key),
                        );
                        let inv = rec.invoke();
                        let result = exec.execute(&ops);
                        rec.complete(inv, &ops, result);
                        done += 1;
                    }
                    written.lock().extend(keys);
                })
            })
            .collect();
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    if run.final_reads {
        let keys: Vec<Key> = written.into_inner().into_iter().collect();
        let chunk = if workload.config().kind == WorkloadKind::Bank {
            keys.len().max(1)
        } else {
            16
        };
        let mut exec = make_executor(run.threads);
        let mut rec = recorder.client(run.threads);
        for part in keys.chunks(chunk) {
            let ops: Vec<Op> = part.iter().map(|&key| Op::Read { key }).collect();
            for _attempt in 0..10 {
                let inv = rec.invoke();
                let result = exec.execute(&ops);
                let released = result.outcome.is_released();
                rec.complete(inv, &ops, result);
                if released {
                    break;
                }
            }
        }
    }
    recorder.finish()
}

/// A store shared by [`MemExecutor`]s: key to stored values.
pub type MemStore = Arc<Mutex<HashMap<Key, Vec<Value>>>>;

/// A reference executor over an in-memory map: each transaction runs atomically under one
/// lock, so histories it produces are strictly serializable. Also a template for drivers.
pub struct MemExecutor {
    store: MemStore,
}

impl MemExecutor {
    /// An executor over `store`.
    pub fn new(store: MemStore) -> Self {
        MemExecutor { store }
    }
}

/// Applies `ops` to `map` in order and returns the observations (shared by test models).
pub fn apply_ops(map: &mut HashMap<Key, Vec<Value>>, ops: &[Op]) -> Vec<Option<Vec<Value>>> {
    ops.iter()
        .map(|op| match *op {
            Op::Read { key } => Some(map.get(&key).cloned().unwrap_or_default()),
            Op::Write { key, value } => {
                map.insert(key, vec![value]);
                None
            }
            Op::Append { key, value } => {
                map.entry(key).or_default().push(value);
                None
            }
            Op::Add { key, delta } => {
                let old = map.get(&key).cloned().unwrap_or_default();
                let base = old.first().copied().unwrap_or(0);
                map.insert(key, vec![base.wrapping_add_signed(delta)]);
                Some(old)
            }
        })
        .collect()
}

impl TxnExecutor for MemExecutor {
    fn execute(&mut self, ops: &[Op]) -> ExecResult {
        let mut map = self.store.lock();
        ExecResult::released(apply_ops(&mut map, ops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn written(ops: &[Op]) -> impl Iterator<Item = Value> + '_ {
        ops.iter().filter_map(|op| match *op {
            Op::Write { value, .. } | Op::Append { value, .. } => Some(value),
            _ => None,
        })
    }

    #[test]
    fn names_round_trip() {
        for kind in WorkloadKind::ALL {
            assert_eq!(kind.name().parse::<WorkloadKind>(), Ok(kind));
        }
        assert!("nope".parse::<WorkloadKind>().is_err());
    }

    #[test]
    fn generators_are_seeded_and_values_unique() {
        for kind in WorkloadKind::ALL {
            let a = Workload::new(WorkloadConfig::new(kind));
            let b = Workload::new(WorkloadConfig::new(kind));
            let ta: Vec<_> = a.client(3, 42).take(200).collect();
            let tb: Vec<_> = b.client(3, 42).take(200).collect();
            assert_eq!(ta, tb, "{kind}");
            let mut seen = HashSet::new();
            for c in 0..3 {
                for ops in a.client(c, 42).take(200) {
                    assert!(!ops.is_empty());
                    for v in written(&ops) {
                        assert!(seen.insert(v), "{kind}: value {v} generated twice");
                        assert_ne!(v, crate::GARBAGE);
                    }
                }
            }
        }
    }

    #[test]
    fn list_keys_rotate_and_hot_keys_dominate() {
        let mut config = WorkloadConfig::new(WorkloadKind::ListAppend);
        config.keys = 4;
        config.max_appends_per_key = 3;
        config.dist = KeyDist::Hot {
            hot_keys: 1,
            hot_percent: 90,
        };
        let w = Workload::new(config);
        let mut appends: HashMap<Key, u64> = HashMap::new();
        let mut per_slot = [0u32; 4];
        for ops in w.client(0, 1).take(500) {
            for op in ops {
                per_slot[(op.key() % 4) as usize] += 1;
                if let Op::Append { key, .. } = op {
                    *appends.entry(key).or_default() += 1;
                }
            }
        }
        assert!(appends.values().all(|&n| n <= 3), "{appends:?}");
        assert!(appends.len() > 4);
        // Slot 0 is in almost every transaction; the others only in some.
        assert!(per_slot[0] >= 450, "{per_slot:?}");
        assert!(per_slot[1..].iter().all(|&n| n < 400), "{per_slot:?}");
    }

    #[test]
    fn write_skew_pairs_alternate_sides() {
        let w = Workload::new(WorkloadConfig::new(WorkloadKind::WriteSkew));
        let (mut a, mut b) = (w.client(0, 1), w.client(1, 1));
        let (ta, tb) = (a.next_txn(), b.next_txn());
        assert!(matches!(
            ta[..],
            [Op::Read { key: 0 }, Op::Write { key: 1, .. }]
        ));
        assert!(matches!(
            tb[..],
            [Op::Read { key: 1 }, Op::Write { key: 0, .. }]
        ));
    }
}
