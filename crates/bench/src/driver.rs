//! The in-process benchmark driver: load phase, timed multi-threaded run, report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use mako_storage::{Stamp, Store};
use mako_txn::Shard;
use rand::{SeedableRng, rngs::SmallRng};

use crate::workload::{Workload, key_bytes, run_one};
use crate::zipf::{KeyDist, Zipf};

/// Which key distribution to draw from.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dist {
    /// Uniform over all keys.
    Uniform,
    /// YCSB Zipfian with skew 0.99.
    Zipf,
}

impl Dist {
    /// The distribution's name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Dist::Uniform => "uniform",
            Dist::Zipf => "zipf",
        }
    }
}

/// Name of the table the key-value workloads use.
pub const TABLE: &str = "usertable";

/// Zipfian skew used by `Dist::Zipf` (YCSB's constant).
pub const ZIPF_THETA: f64 = 0.99;

/// Parameters of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Transaction mix.
    pub workload: Workload,
    /// Worker threads.
    pub threads: usize,
    /// Length of the measured phase.
    pub duration: Duration,
    /// Keys loaded before the measured phase.
    pub keys: u64,
    /// Key distribution.
    pub dist: Dist,
    /// Bytes per value.
    pub value_size: usize,
    /// Seed of the workers' random generators.
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            workload: Workload::Micro,
            threads: 1,
            duration: Duration::from_secs(10),
            keys: 1_000_000,
            dist: Dist::Uniform,
            value_size: 64,
            seed: 42,
        }
    }
}

/// Errors in a benchmark configuration.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A parameter is out of range.
    #[error("invalid benchmark parameter `{name}`: {reason}")]
    Invalid {
        /// Parameter name as on the command line.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The store refused to set up the benchmark table.
    #[error("setting up the benchmark table: {0}")]
    Storage(#[from] mako_storage::StorageError),
}

impl BenchConfig {
    /// Checks that the parameters can run.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |name, reason| Err(BenchError::Invalid { name, reason });
        if self.threads == 0 {
            return bad("threads", "must be at least 1");
        }
        if self.keys < 8 {
            return bad("keys", "must be at least 8");
        }
        if self.duration.is_zero() {
            return bad("duration", "must be positive");
        }
        if self.value_size < 8 {
            return bad("value-size", "must be at least 8 bytes");
        }
        Ok(())
    }
}

/// A snapshot of a running benchmark, for progress displays.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Time since the measured phase started.
    pub elapsed: Duration,
    /// The measured phase's length.
    pub total: Duration,
    /// Commits so far.
    pub committed: u64,
    /// Aborts so far.
    pub aborted: u64,
    /// Commits per second over the last interval.
    pub recent_tps: f64,
}

/// Results of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Transaction mix.
    pub workload: Workload,
    /// Worker threads.
    pub threads: usize,
    /// Keys loaded.
    pub keys: u64,
    /// Key distribution.
    pub dist: Dist,
    /// Load phase, seconds.
    pub load_secs: f64,
    /// Measured phase, seconds.
    pub secs: f64,
    /// Committed transactions.
    pub committed: u64,
    /// Aborted transactions.
    pub aborted: u64,
    /// Committed transactions per second.
    pub txn_per_sec: f64,
    /// Aborts as a percentage of attempts.
    pub abort_pct: f64,
    /// Commit latency (begin to commit return) 50th percentile, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, microseconds.
    pub p999_us: f64,
}

/// Per-worker counters, padded so workers never share a cache line.
#[derive(Default)]
struct Counters {
    committed: CachePadded<AtomicU64>,
    aborted: CachePadded<AtomicU64>,
}

/// Builds a one-shard store holding `keys` keys of `value_size` bytes, loading on `threads` threads.
pub fn load(keys: u64, value_size: usize, threads: usize) -> Result<(Shard, Duration), BenchError> {
    let started = Instant::now();
    let store = Arc::new(Store::new());
    let table = store.create_table(TABLE)?;
    let value = Bytes::from(vec![b'x'; value_size]);
    let threads = threads.max(1) as u64;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (table, value) = (&table, &value);
            s.spawn(move || {
                let mut k = t;
                while k < keys {
                    table.put(&key_bytes(k), value.clone(), Stamp::single(0, 1));
                    k += threads;
                }
            });
        }
    });
    let shard = Shard::single(store);
    shard.observe(1);
    Ok((shard, started.elapsed()))
}

/// Loads, runs the measured phase, and reports; `progress` is called about once a second.
pub fn run(
    cfg: &BenchConfig,
    mut progress: impl FnMut(Progress),
) -> Result<BenchReport, BenchError> {
    cfg.validate()?;
    let (shard, load_time) = load(cfg.keys, cfg.value_size, cfg.threads)?;
    let table = shard.store().create_table(TABLE)?;
    let dist = match cfg.dist {
        Dist::Uniform => KeyDist::Uniform { n: cfg.keys },
        Dist::Zipf => KeyDist::Zipf(Zipf::new(cfg.keys, ZIPF_THETA)),
    };
    let template = Bytes::from(vec![b'v'; cfg.value_size]);
    let counters: Vec<Counters> = (0..cfg.threads).map(|_| Counters::default()).collect();
    let stop = AtomicBool::new(false);

    let (hist, secs) = std::thread::scope(|s| {
        let started = Instant::now();
        let workers: Vec<_> = counters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (shard, table, dist, template, stop) =
                    (&shard, &*table, &dist, &template, &stop);
                let seed = cfg.seed.wrapping_add(i as u64);
                let workload = cfg.workload;
                s.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(seed);
                    let mut hist = new_histogram();
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        match run_one(workload, shard, table, dist, template, &mut rng) {
                            Ok(_) => {
                                let ns = t0.elapsed().as_nanos() as u64;
                                hist.saturating_record(ns.max(1));
                                c.committed.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                c.aborted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    hist
                })
            })
            .collect();
        let total = cfg.duration;
        let sum = |f: fn(&Counters) -> u64| counters.iter().map(f).sum::<u64>();
        let mut last = (Instant::now(), 0u64);
        loop {
            let elapsed = started.elapsed();
            if elapsed >= total {
                break;
            }
            std::thread::sleep((total - elapsed).min(Duration::from_secs(1)));
            let committed = sum(|c| c.committed.load(Ordering::Relaxed));
            let now = Instant::now();
            let recent_tps = (committed - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
            last = (now, committed);
            progress(Progress {
                elapsed: started.elapsed().min(total),
                total,
                committed,
                aborted: sum(|c| c.aborted.load(Ordering::Relaxed)),
                recent_tps,
            });
        }
        stop.store(true, Ordering::Relaxed);
        let mut hist = new_histogram();
        for w in workers {
            if let Ok(h) = w.join() {
                let _ = hist.add(&h);
            }
        }
        (hist, started.elapsed().as_secs_f64())
    });
    let committed: u64 = counters
        .iter()
        .map(|c| c.committed.load(Ordering::Relaxed))
        .sum();
    let aborted: u64 = counters
        .iter()
        .map(|c| c.aborted.load(Ordering::Relaxed))
        .sum();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(BenchReport {
        workload: cfg.workload,
        threads: cfg.threads,
        keys: cfg.keys,
        dist: cfg.dist,
        load_secs: load_time.as_secs_f64(),
        secs,
        committed,
        aborted,
        txn_per_sec: committed as f64 / secs,
        abort_pct: if committed + aborted == 0 {
            0.0
        } else {
            100.0 * aborted as f64 / (committed + aborted) as f64
        },
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
    })
}

/// A latency histogram in nanoseconds, 1 ns to 60 s, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant histogram bounds are valid")
}
