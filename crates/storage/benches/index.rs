//! Ordered concurrent index candidates for mako-storage tables.
//!
//! Compares, with 2 worker threads, `scc::TreeIndex`, `crossbeam_skiplist::SkipMap`,
//! `masstree::MassTree15`, `ferntree::Tree` and a `parking_lot::RwLock<BTreeMap>` baseline.
//! Keys are byte strings (an 8-byte big-endian `u64`, optionally behind a constant prefix)
//! stored as `SmallVec<[u8; 16]>` (a newtype over it for ferntree, `&[u8]` for masstree);
//! values are `Arc<u64>`, as the store keeps `Arc<Record>`.
//!
//! One run of a candidate loads 1,000,000 keys in shuffled order (2 threads; wall time and
//! RSS growth, which includes the 1M `Arc`s, are recorded), then runs three phases of
//! uniform random keys on 2 threads for `INDEX_BENCH_SECS` each:
//!
//! * reads:  point lookup + clone of the `Arc` (every key exists);
//! * writes: 50% replace the value of an existing key, 50% insert a new key (an id between
//!   two loaded ids, so new keys are spread uniformly over the key space);
//! * scans:  100 ascending entries from a random start key, cloning each `Arc`.
//!
//! Every run is a separate child process (clean RSS and allocator state); 3 runs per
//! candidate, interleaved across candidates to spread out interference from other work,
//! and the table shows per-column medians. A run during which other processes used more
//! than 10% of the machine's CPUs (from `/proc/stat`) is retried up to 3 times; the "busy %"
//! column shows the worst such share among the kept runs: well above 10 means the numbers
//! are unreliable. After each load, point reads and 100-key scans from every 997th key are
//! checked against the loaded data; "results" says WRONG if any check failed (details on
//! stderr), and the throughput numbers are still reported.
//!
//! Run: `cargo bench -p mako-storage --bench index [-- FILTER...]`, where a FILTER is a
//! substring of a candidate id (`scc`, `skipmap`, `masstree`, `ferntree`, `btree`).
//! Environment: `INDEX_BENCH_SECS` (seconds per phase run, default 1) and
//! `INDEX_BENCH_KEY_PREFIX` (constant prefix bytes before the 8-byte id, 0..=8, default 0).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::ops::Bound;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use smallvec::SmallVec;

const KEYS: u64 = 1_000_000;
const THREADS: usize = 2;
const REPS: usize = 3;
const SCAN_LEN: usize = 100;
/// Operations between two checks of the stop flag.
const BATCH: u64 = 16;
/// Loaded key `i` has id `i << ID_SHIFT`; keys inserted by the write phase fill the low bits,
/// so they are new, unique and spread uniformly between the loaded ones.
const ID_SHIFT: u32 = 32;
const MAX_KEY: usize = 16;
const PREFIX: &[u8; 8] = b"mako/tb/";
const CHILD_ENV: &str = "INDEX_BENCH_CHILD";
/// A run during which other processes used more than this share of the CPUs is retried...
const BUSY_LIMIT: f64 = 0.10;
/// ...up to this many times in all; the least disturbed attempt is kept.
const MAX_ATTEMPTS: usize = 4;

type Key = SmallVec<[u8; MAX_KEY]>;
type Val = Arc<u64>;

/// The operations the benchmark needs from a candidate index.
trait Index: Send + Sync {
    fn create() -> Self;
    fn point_get(&self, key: &[u8]) -> Option<Val>;
    /// Insert, or replace the value of an existing key.
    fn upsert(&self, key: &[u8], val: Val);
    /// Append the values of up to `n` entries with keys `>= start`, ascending, to `out`.
    fn scan_n(&self, start: &[u8], n: usize, out: &mut Vec<Val>);
}

impl Index for scc::TreeIndex<Key, Val> {
    fn create() -> Self {
        Self::new()
    }
    fn point_get(&self, key: &[u8]) -> Option<Val> {
        self.peek(key, &scc::Guard::new()).cloned()
    }
    fn upsert(&self, key: &[u8], val: Val) {
        self.upsert_sync(Key::from_slice(key), val);
    }
    fn scan_n(&self, start: &[u8], n: usize, out: &mut Vec<Val>) {
        let guard = scc::Guard::new();
        let range = (Bound::Included(start), Bound::Unbounded);
        out.extend(
            self.range::<[u8], _>(range, &guard)
                .take(n)
                .map(|(_, v)| v.clone()),
        );
    }
}

impl Index for crossbeam_skiplist::SkipMap<Key, Val> {
    fn create() -> Self {
        Self::new()
    }
    fn point_get(&self, key: &[u8]) -> Option<Val> {
        self.get(key).map(|e| e.value().clone())
    }
    fn upsert(&self, key: &[u8], val: Val) {
        self.insert(Key::from_slice(key), val);
    }
    fn scan_n(&self, start: &[u8], n: usize, out: &mut Vec<Val>) {
        let range = (Bound::Included(start), Bound::Unbounded);
        out.extend(
            self.range::<[u8], _>(range)
                .take(n)
                .map(|e| e.value().clone()),
        );
    }
}

/// `MassTree15` is the boxed-value variant (the inline one only takes `Copy` values).
impl Index for masstree::MassTree15<Val> {
    fn create() -> Self {
        Self::new()
    }
    fn point_get(&self, key: &[u8]) -> Option<Val> {
        let guard = self.guard();
        self.get_ref(key, &guard).map(|v| Val::clone(&v))
    }
    fn upsert(&self, key: &[u8], val: Val) {
        let guard = self.guard();
        self.insert_with_guard(key, val, &guard);
    }
    fn scan_n(&self, start: &[u8], n: usize, out: &mut Vec<Val>) {
        let guard = self.guard();
        let end = out.len() + n;
        self.scan_intra_leaf_batch_ref(
            masstree::RangeBound::Included(start),
            masstree::RangeBound::Unbounded,
            |_, v| {
                out.push(v.clone());
                out.len() < end
            },
            &guard,
        );
    }
}

/// ferntree keys must implement its `OptimisticRead`; a newtype lets `SmallVec` opt in
/// through the crate's boxed-slot macro.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FernKey(Key);

impl Borrow<[u8]> for FernKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

ferntree::impl_optimistic_read_boxed!(FernKey);

/// Uses the optimistic read path, so writes must go through `insert_defer`.
impl Index for ferntree::Tree<FernKey, Val> {
    fn create() -> Self {
        Self::new()
    }
    fn point_get(&self, key: &[u8]) -> Option<Val> {
        self.get_optimistic(key)
    }
    fn upsert(&self, key: &[u8], val: Val) {
        self.insert_defer(FernKey(Key::from_slice(key)), val);
    }
    fn scan_n(&self, start: &[u8], n: usize, out: &mut Vec<Val>) {
        let mut range = self.range(Bound::Included(start), Bound::Unbounded);
        for _ in 0..n {
            let Some((_, v)) = range.next() else { break };
            out.push(v.clone());
        }
    }
}

impl Index for RwLock<BTreeMap<Key, Val>> {
    fn create() -> Self {
        Self::new(BTreeMap::new())
    }
    fn point_get(&self, key: &[u8]) -> Option<Val> {
        self.read().get(key).cloned()
    }
    fn upsert(&self, key: &[u8], val: Val) {
        self.write().insert(Key::from_slice(key), val);
    }
    fn scan_n(&self, start: &[u8], n: usize, out: &mut Vec<Val>) {
        let map = self.read();
        let range = (Bound::Included(start), Bound::Unbounded);
        out.extend(map.range::<[u8], _>(range).take(n).map(|(_, v)| v.clone()));
    }
}

/// One index under test.
struct Candidate {
    /// Short id, matched by the CLI filter and used to select the child process.
    id: &'static str,
    label: &'static str,
    run: fn(&Config, u64) -> Summary,
}

const CANDIDATES: [Candidate; 5] = [
    Candidate {
        id: "scc",
        label: "scc::TreeIndex",
        run: bench::<scc::TreeIndex<Key, Val>>,
    },
    Candidate {
        id: "skipmap",
        label: "crossbeam SkipMap",
        run: bench::<crossbeam_skiplist::SkipMap<Key, Val>>,
    },
    Candidate {
        id: "masstree",
        label: "masstree::MassTree15",
        run: bench::<masstree::MassTree15<Val>>,
    },
    Candidate {
        id: "ferntree",
        label: "ferntree::Tree",
        run: bench::<ferntree::Tree<FernKey, Val>>,
    },
    Candidate {
        id: "btree",
        label: "RwLock<BTreeMap>",
        run: bench::<RwLock<BTreeMap<Key, Val>>>,
    },
];

struct Config {
    secs: f64,
    prefix: usize,
}

impl Config {
    fn from_env() -> Self {
        let secs = std::env::var("INDEX_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .unwrap_or(1.0);
        let prefix = std::env::var("INDEX_BENCH_KEY_PREFIX")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0)
            .min(PREFIX.len());
        Self { secs, prefix }
    }
}

/// Encodes key ids as `PREFIX[..prefix] ++ id.to_be_bytes()` into a stack buffer.
struct KeyBuf {
    buf: [u8; MAX_KEY],
    len: usize,
}

impl KeyBuf {
    fn new(prefix: usize) -> Self {
        let mut buf = [0; MAX_KEY];
        buf[..prefix].copy_from_slice(&PREFIX[..prefix]);
        Self {
            buf,
            len: prefix + 8,
        }
    }
    fn key(&mut self, id: u64) -> &[u8] {
        self.buf[self.len - 8..self.len].copy_from_slice(&id.to_be_bytes());
        &self.buf[..self.len]
    }
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Reads,
    Writes,
    Scans,
}

/// Per-thread state of a phase run.
struct Worker {
    rng: SmallRng,
    key: KeyBuf,
    /// Low-half bit that keeps the two threads' new keys apart.
    thread_bit: u64,
    /// Number of new keys this thread has inserted.
    fresh: u64,
    out: Vec<Val>,
}

impl Worker {
    /// Runs one operation; returns the number of items it found (for sanity checks).
    fn op<I: Index>(&mut self, idx: &I, phase: Phase) -> u64 {
        match phase {
            Phase::Reads => {
                let id = self.rng.random_range(0..KEYS) << ID_SHIFT;
                u64::from(black_box(idx.point_get(self.key.key(id))).is_some())
            }
            Phase::Writes => {
                let i = self.rng.random_range(0..KEYS);
                let id = if self.rng.random_bool(0.5) {
                    i << ID_SHIFT
                } else {
                    self.fresh += 1;
                    (i << ID_SHIFT) | self.thread_bit | self.fresh
                };
                idx.upsert(self.key.key(id), Arc::new(i));
                0
            }
            Phase::Scans => {
                let id = self.rng.random_range(0..KEYS - SCAN_LEN as u64) << ID_SHIFT;
                self.out.clear();
                idx.scan_n(self.key.key(id), SCAN_LEN, &mut self.out);
                black_box(&self.out);
                self.out.len() as u64
            }
        }
    }
}

/// Measures wall time and how busy the rest of the machine was meanwhile.
struct Meter {
    start: Instant,
    own_cpu: f64,
    machine_busy: f64,
}

impl Meter {
    fn start() -> Self {
        Self {
            start: Instant::now(),
            own_cpu: own_cpu_secs(),
            machine_busy: machine_busy_secs(),
        }
    }

    /// Returns (elapsed seconds, share of all CPUs used by other processes).
    fn stop(&self) -> (f64, f64) {
        let secs = self.start.elapsed().as_secs_f64();
        let own = own_cpu_secs() - self.own_cpu;
        let others = machine_busy_secs() - self.machine_busy - own;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        (secs, (others / (secs * cpus)).max(0.0))
    }
}

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// User + system CPU time of this process (all threads), in seconds.
fn own_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name start at field 3; utime and stime are
    // fields 14 and 15.
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_comm
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / USER_HZ
}

/// Non-idle CPU time of the whole machine (all CPUs, including steal), in seconds.
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    // cpu  user nice system idle iowait irq softirq steal ...
    let ticks: u64 = cpu
        .split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .filter_map(|(_, f)| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / USER_HZ
}

/// Throughput of one phase run, and how busy other processes kept the machine.
struct PhaseResult {
    ops_per_s: f64,
    busy: f64,
}

/// Runs `phase` on `THREADS` threads for `cfg.secs`.
fn run_phase<I: Index>(idx: &I, cfg: &Config, phase: Phase, seed: u64) -> PhaseResult {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(THREADS + 1);
    let (ops, items, (secs, busy)) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS as u64)
            .map(|t| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || {
                    let mut w = Worker {
                        rng: SmallRng::seed_from_u64(seed * 1000 + t),
                        key: KeyBuf::new(cfg.prefix),
                        thread_bit: t << (ID_SHIFT - 1),
                        fresh: 0,
                        out: Vec::with_capacity(SCAN_LEN),
                    };
                    barrier.wait();
                    let (mut ops, mut items) = (0, 0);
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..BATCH {
                            items += w.op(idx, phase);
                        }
                        ops += BATCH;
                    }
                    (ops, items)
                })
            })
            .collect();
        barrier.wait();
        let meter = Meter::start();
        std::thread::sleep(Duration::from_secs_f64(cfg.secs));
        stop.store(true, Ordering::Relaxed);
        let (ops, items) = workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .fold((0, 0), |(o, i), (wo, wi)| (o + wo, i + wi));
        (ops, items, meter.stop())
    });
    let expected = match phase {
        Phase::Reads => ops,
        Phase::Writes => 0,
        Phase::Scans => ops * SCAN_LEN as u64,
    };
    assert_eq!(items, expected, "{phase:?}: wrong number of items found");
    PhaseResult {
        ops_per_s: ops as f64 / secs,
        busy,
    }
}

/// Resident set size of this process in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    kib as f64 / 1024.0
}

/// Loads `ids` into `idx` with `THREADS` threads; returns the wall time in seconds and the
/// share of the machine used by other processes.
fn load<I: Index>(idx: &I, cfg: &Config, ids: &[u64]) -> (f64, f64) {
    let meter = Meter::start();
    std::thread::scope(|s| {
        for chunk in ids.chunks(ids.len().div_ceil(THREADS)) {
            s.spawn(move || {
                let mut key = KeyBuf::new(cfg.prefix);
                for &i in chunk {
                    idx.upsert(key.key(i << ID_SHIFT), Arc::new(i));
                }
            });
        }
    });
    meter.stop()
}

/// Checks that point reads and scans from every 997th loaded key return the loaded values,
/// scans in key order. Reports failures on stderr and returns how many checks failed.
fn verify<I: Index>(idx: &I, cfg: &Config) -> u64 {
    let mut key = KeyBuf::new(cfg.prefix);
    let mut out = Vec::new();
    let mut failures = 0;
    let mut report = |what: String| {
        if failures < 3 {
            eprintln!("  WRONG RESULT: {what}");
        }
        failures += 1;
    };
    for start in (0..=KEYS - SCAN_LEN as u64).step_by(997) {
        out.clear();
        idx.scan_n(key.key(start << ID_SHIFT), SCAN_LEN, &mut out);
        let got: Vec<u64> = out.iter().map(|v| **v).collect();
        if !got.iter().copied().eq(start..start + SCAN_LEN as u64) {
            let shown = &got[..got.len().min(3)];
            report(format!("scan from {start} returned {shown:?}..."));
        }
        let got = idx.point_get(key.key(start << ID_SHIFT));
        if got.as_deref() != Some(&start) {
            report(format!("get({start}) returned {got:?}"));
        }
    }
    failures
}

/// Results of one run of one candidate (or the medians of several runs).
#[derive(Clone, Copy)]
struct Summary {
    load_s: f64,
    rss_mib: f64,
    reads: f64,
    writes: f64,
    scans: f64,
    /// Highest share of the machine's CPUs used by other processes during load or a phase.
    busy: f64,
    /// Number of failed result checks after the load.
    failures: f64,
}

impl Summary {
    const FIELDS: usize = 7;

    fn to_array(self) -> [f64; Self::FIELDS] {
        [
            self.load_s,
            self.rss_mib,
            self.reads,
            self.writes,
            self.scans,
            self.busy,
            self.failures,
        ]
    }

    fn from_array(a: [f64; Self::FIELDS]) -> Self {
        let [load_s, rss_mib, reads, writes, scans, busy, failures] = a;
        Self {
            load_s,
            rss_mib,
            reads,
            writes,
            scans,
            busy,
            failures,
        }
    }

    /// Field-wise median (upper median for an even count).
    fn median(runs: &[Self]) -> Self {
        Self::from_array(std::array::from_fn(|f| {
            let mut xs: Vec<f64> = runs.iter().map(|r| r.to_array()[f]).collect();
            xs.sort_by(f64::total_cmp);
            xs[xs.len() / 2]
        }))
    }
}

/// One run of one candidate: a fresh load, then each phase once.
fn bench<I: Index>(cfg: &Config, run: u64) -> Summary {
    let mut ids: Vec<u64> = (0..KEYS).collect();
    ids.shuffle(&mut SmallRng::seed_from_u64(run));
    let rss_before = rss_mib();
    let idx = I::create();
    let (load_s, mut busy) = load(&idx, cfg, &ids);
    let rss = rss_mib() - rss_before;
    drop(ids);
    let failures = verify(&idx, cfg) as f64;
    let mut rates = [0.0; 3];
    for (p, phase) in [Phase::Reads, Phase::Writes, Phase::Scans]
        .into_iter()
        .enumerate()
    {
        let r = run_phase(&idx, cfg, phase, run * 3 + p as u64);
        rates[p] = r.ops_per_s;
        busy = busy.max(r.busy);
    }
    let [reads, writes, scans] = rates;
    Summary {
        load_s,
        rss_mib: rss,
        reads,
        writes,
        scans,
        busy,
        failures,
    }
}

/// Child mode (`INDEX_BENCH_CHILD="<id> <run>"`): one run, printed as one `RESULT` line.
fn child(spec: &str) -> ExitCode {
    let mut parts = spec.split(' ');
    let (Some(c), Some(run)) = (
        parts
            .next()
            .and_then(|id| CANDIDATES.iter().find(|c| c.id == id)),
        parts.next().and_then(|r| r.parse::<u64>().ok()),
    ) else {
        eprintln!("bad {CHILD_ENV} value {spec:?}");
        return ExitCode::FAILURE;
    };
    let s = (c.run)(&Config::from_env(), run);
    eprintln!(
        "  {:<20} run {}: load {:.2} s (+{:.0} MiB), reads {:.2} M/s, writes {:.2} M/s, \
         scans {:.1} k/s, others busy <= {:.0}%, {} failed checks",
        c.label,
        run + 1,
        s.load_s,
        s.rss_mib,
        s.reads / 1e6,
        s.writes / 1e6,
        s.scans / 1e3,
        s.busy * 100.0,
        s.failures
    );
    let fields: Vec<String> = s.to_array().iter().map(f64::to_string).collect();
    println!("RESULT {}", fields.join(" "));
    ExitCode::SUCCESS
}

fn spawn_child(id: &str, run: usize) -> Option<Summary> {
    let out = Command::new(std::env::current_exe().ok()?)
        .env(CHILD_ENV, format!("{id} {run}"))
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "))?;
    let v: Vec<f64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
    Some(Summary::from_array(v.try_into().ok()?))
}

fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec);
    }
    // `cargo bench` passes flags such as `--bench`; everything else is a filter.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.to_lowercase())
        .collect();
    let selected: Vec<&Candidate> = CANDIDATES
        .iter()
        .filter(|c| {
            let label = c.label.to_lowercase();
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| c.id.contains(f.as_str()) || label.contains(f.as_str()))
        })
        .collect();
    let cfg = Config::from_env();
    eprintln!(
        "{KEYS} keys of {} bytes, {THREADS} threads, {REPS} runs x {} s per phase",
        cfg.prefix + 8,
        cfg.secs
    );

    // Runs are interleaved across candidates so that interference from other work on the
    // machine is spread over all of them rather than hitting one candidate's runs, and a
    // run during which other processes were busy is retried.
    let mut runs: Vec<Vec<Summary>> = vec![Vec::new(); selected.len()];
    let mut failed = vec![false; selected.len()];
    for run in 0..REPS {
        for (i, c) in selected.iter().enumerate() {
            let mut best: Option<Summary> = None;
            for attempt in 0..MAX_ATTEMPTS {
                let Some(s) = spawn_child(c.id, run) else {
                    failed[i] = true;
                    break;
                };
                if best.is_none_or(|b| s.busy < b.busy) {
                    best = Some(s);
                }
                if s.busy <= BUSY_LIMIT {
                    break;
                }
                if attempt + 1 < MAX_ATTEMPTS {
                    eprintln!("  (machine busy, retrying)");
                }
            }
            runs[i].extend(best);
        }
    }

    println!(
        "\nmedians of {REPS} runs ({} s per phase, {}-byte keys, {THREADS} threads)",
        cfg.secs,
        cfg.prefix + 8
    );
    println!(
        "{:<20} | {:>6} | {:>7} | {:>12} | {:>13} | {:>9} | {:>6} | results",
        "index", "load s", "RSS MiB", "reads Mops/s", "writes Mops/s", "scans k/s", "busy %"
    );
    println!(
        "{:-<20}-+-{:->6}-+-{:->7}-+-{:->12}-+-{:->13}-+-{:->9}-+-{:->6}-+-{:-<7}",
        "", "", "", "", "", "", "", ""
    );
    for ((c, runs), failed) in selected.iter().zip(&runs).zip(&failed) {
        if *failed {
            println!("{:<20} | failed (see stderr above)", c.label);
            continue;
        }
        let s = Summary::median(runs);
        let busy = runs.iter().map(|r| r.busy).fold(0.0, f64::max);
        let wrong = runs.iter().any(|r| r.failures > 0.0);
        println!(
            "{:<20} | {:>6.3} | {:>7.0} | {:>12.2} | {:>13.2} | {:>9.1} | {:>6.0} | {}",
            c.label,
            s.load_s,
            s.rss_mib,
            s.reads / 1e6,
            s.writes / 1e6,
            s.scans / 1e3,
            busy * 100.0,
            if wrong { "WRONG" } else { "ok" }
        );
    }
    if failed.contains(&true) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
