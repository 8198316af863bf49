//! The micro workload on an in-process cluster (`mako demo`, `mako bench --shards/--replicas`),
//! optionally crashing shard 0's leader mid-run (`--kill-leader-at`).
//!
//! Keys are spread over shards (`key % S`); worker `i` coordinates on the current leader of
//! shard `i % S`, re-resolved for every new transaction (after a crash it moves to the shard's
//! new leader). Each transaction reads four distinct keys and, unless it is read-only, writes
//! all four back; the keys are drawn over all shards, or with a fixed cross-shard share
//! ([`ShardMix`], `--cross-shard`). Commits are speculative; each worker keeps its unreleased
//! commits in order and records release latency as `VW` covers them, so execution never
//! waits for replication. The process's CPU time over the measured phase (`getrusage`) is
//! reported next to the throughput.
//! Aborts, and speculative commits the failover discards, are retried as new transactions on
//! the same keys (after a 1 ms back-off when the abort was `Failover` or `NotLeader`, or when
//! the home shard has no serving leader); a commit neither released nor discarded within
//! `unknown_after` counts as `Unknown`. Every event also lands in a per-100 ms [`Bucket`]
//! series.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use mako_logstore::Durability;
use mako_server::{
    Cluster, ClusterConfig, NetKind, Pending, Protocol, ReleaseError, Site, SiteConfig, Speculative,
};
use mako_txn::AbortReason;
use rand::{SeedableRng, rngs::SmallRng};

use crate::driver::{Dist, ZIPF_THETA};
use crate::mix::{MicroShape, MixError, ShapeGen, ShardMix};
use crate::scaling::process_cpu_time;
use crate::series::{BUCKET, Bucket, Dip, Quantile, REASONS, Recorder, buckets_for, latency_curve};
use crate::zipf::{KeyDist, Zipf};

/// One cluster run.
#[derive(Debug, Clone)]
pub struct ClusterBenchConfig {
    /// Shards.
    pub shards: u32,
    /// Replicas per shard (1 = no replication).
    pub replicas: u32,
    /// Coordinator worker threads per shard leader.
    pub threads: u32,
    /// Measured time.
    pub duration: Duration,
    /// Keys over all shards.
    pub keys: u64,
    /// Percentage of read-only transactions (the rest read-modify-write).
    pub read_pct: u32,
    /// How transactions spread over shards.
    pub mix: ShardMix,
    /// Key distribution.
    pub dist: Dist,
    /// Bytes per value.
    pub value_size: usize,
    /// Log durability.
    pub durability: Durability,
    /// Replication protocol of every shard's group.
    pub protocol: Protocol,
    /// Seed.
    pub seed: u64,
    /// Crash shard 0's current leader this far into the measured phase (`None`: no crash).
    pub kill_leader_at: Option<Duration>,
    /// Election timeout bounds, ms.
    pub election_ms: (u64, u64),
    /// How long a coordinator waits for a participant's reply (the sites' `timeout`).
    pub request_timeout: Duration,
    /// A speculative commit neither released nor discarded this long after it began is
    /// counted `Unknown` (and checked again at the end of the run).
    pub unknown_after: Duration,
    /// Speculative commits a worker keeps unreleased before it waits for the oldest, as a
    /// client with a bounded window of outstanding requests does (0: no bound). Stragglers a
    /// worker set aside (commits left at a replica that lost leadership) are not counted.
    pub window: usize,
}

/// The window of unreleased commits `mako demo` gives each worker ([`ClusterBenchConfig::window`]).
///
/// Without a bound (the default of [`ClusterBenchConfig`], for the highest throughput) every
/// worker commits as fast as its thread runs and leaves replication the rest of the CPU;
/// release latency is then whatever the scheduler makes of a saturated machine. With a
/// window, throughput is lower (replication gets smaller batches and more wake-ups) and so
/// is the tail: `mako demo`, 2 cores, 39–43k released/s at p99 7.4–9 ms unbounded, 37–38k at
/// p99 3.6–3.8 ms with 32.
pub const DEMO_WINDOW: usize = 32;

impl Default for ClusterBenchConfig {
    fn default() -> Self {
        let c = ClusterConfig::default();
        ClusterBenchConfig {
            shards: 2,
            replicas: 3,
            threads: 1,
            duration: Duration::from_secs(10),
            keys: 100_000,
            read_pct: 50,
            mix: ShardMix::Spread,
            dist: Dist::Uniform,
            value_size: 64,
            durability: Durability::Memory,
            protocol: Protocol::Raft,
            seed: 42,
            kill_leader_at: None,
            election_ms: c.election_ms,
            request_timeout: Duration::from_secs(1),
            unknown_after: Duration::from_secs(2),
            window: 0,
        }
    }
}

/// The crash of a leader during a run, and how the cluster came back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailoverReport {
    /// The crashed shard.
    pub shard: u32,
    /// The crashed replica (its index in the shard).
    pub replica: u32,
    /// When the crash began, ms into the measured phase.
    pub at_ms: f64,
    /// How long `stop_replica` took, ms.
    pub stop_ms: f64,
    /// The replica that leads the shard afterwards, if one took over during the run.
    pub new_leader: Option<u32>,
    /// Crash to every shard serving the newest epoch again (`Cluster::wait_serving`, 5 ms polls), ms.
    pub serving_after_ms: Option<f64>,
    /// Crash to the first release of a transaction that began after the crash, ms.
    pub first_release_ms: Option<f64>,
    /// The same for a cross-shard transaction, ms.
    pub first_cross_release_ms: Option<f64>,
    /// Crash to the first release observed of any transaction (also ones begun before), ms.
    pub first_any_release_ms: Option<f64>,
    /// Released transactions that began after the crash, by their client's home shard
    /// (shard 0's clients had to move to its new leader).
    pub released_after_by_home: Vec<u64>,
    /// Throughput around the crash.
    pub dip: Dip,
}

/// Results of a cluster run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterReport {
    /// Shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// Workers per shard.
    pub threads: u32,
    /// Unreleased commits a worker kept at most (0: no bound).
    pub window: usize,
    /// The most commits one worker ever had unreleased at once, stragglers set aside not
    /// counted (at most `window` with one).
    pub max_unreleased: usize,
    /// Read-only percentage.
    pub read_pct: u32,
    /// Configured cross-shard percentage (`None`: four keys spread over all shards).
    pub cross_shard_pct: Option<f64>,
    /// Log durability.
    pub durability: String,
    /// Replication protocol.
    pub protocol: String,
    /// Election timeout bounds, ms.
    pub election_ms: (u64, u64),
    /// Coordinator request timeout, ms.
    pub request_timeout_ms: u64,
    /// Commits pending longer than this count as unknown, ms.
    pub unknown_after_ms: u64,
    /// Measured phase, seconds.
    pub secs: f64,
    /// Load time, seconds.
    pub load_secs: f64,
    /// Speculative commits per second.
    pub spec_per_sec: f64,
    /// Released transactions per second.
    pub released_per_sec: f64,
    /// Wall-clock seconds of the measured phase as run (start of the workers to their stop).
    pub wall_secs: f64,
    /// CPU-seconds (user + system, every thread of the process, `getrusage(RUSAGE_SELF)`)
    /// used over the measured phase; 0 if `getrusage` failed.
    pub cpu_secs: f64,
    /// Released transactions per CPU-second (0 without a CPU figure).
    pub released_per_cpu_sec: f64,
    /// Aborts as a percentage of attempts.
    pub abort_pct: f64,
    /// Aborts by reason (speculative commits the failover discarded count as `failover`).
    pub aborts: BTreeMap<&'static str, u64>,
    /// Speculative commits given up as `Unknown` during the run.
    pub unknown: u64,
    /// Of those, released by the end of the run's drain.
    pub unknown_later_released: u64,
    /// Of those, discarded by the failover by the end of the drain.
    pub unknown_later_discarded: u64,
    /// A few unknown outcomes described (when the transaction began, its epoch and `VT`, why
    /// it was pending, and what became of it after the run).
    pub unknown_samples: Vec<String>,
    /// Transactions touching more than one shard, percent of commits.
    pub distributed_pct: f64,
    /// Speculative commit latency (begin to commit return), p50 µs.
    pub commit_p50_us: f64,
    /// Release latency (begin to release), p50 µs.
    pub release_p50_us: f64,
    /// Release latency p99 µs.
    pub release_p99_us: f64,
    /// Release latency p99.9 µs.
    pub release_p999_us: f64,
    /// Speculative commit latency distribution, p0 to p99.99 on a "nines" scale.
    pub commit_latency: Vec<Quantile>,
    /// Release latency distribution, p0 to p99.99 on a "nines" scale.
    pub release_latency: Vec<Quantile>,
    /// Follower replay lag p99 µs (time queued before replay; 0 for batches replayed on arrival).
    pub replay_lag_p99_us: f64,
    /// Commits still unreleased when the run ended (released afterwards or timed out).
    pub unreleased_at_end: u64,
    /// Whether every follower's store equals its leader's after the run.
    pub consistent: bool,
    /// The first difference found, if any.
    pub difference: Option<String>,
    /// Width of a series bucket, ms.
    pub bucket_ms: u64,
    /// The per-bucket time series over the measured phase.
    pub series: Vec<Bucket>,
    /// The leader crash, with `kill_leader_at`.
    pub failover: Option<FailoverReport>,
    /// Why the crash could not be carried out, if it could not.
    pub kill_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    spec: CachePadded<AtomicU64>,
    released: CachePadded<AtomicU64>,
    /// Released transactions that began after the crash.
    released_after: CachePadded<AtomicU64>,
    aborted: CachePadded<[AtomicU64; REASONS]>,
    unknown: CachePadded<AtomicU64>,
    distributed: CachePadded<AtomicU64>,
}

impl Counters {
    fn aborted_total(&self) -> u64 {
        self.aborted.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }
}

use crate::driver::new_histogram as hist;

/// Progress of a cluster run, about once a second.
#[derive(Debug, Clone, Copy)]
pub struct ClusterProgress {
    /// Time into the measured phase.
    pub elapsed: Duration,
    /// The measured phase's length.
    pub total: Duration,
    /// Speculative commits so far.
    pub spec: u64,
    /// Released so far.
    pub released: u64,
    /// Aborts so far.
    pub aborted: u64,
    /// Unknown outcomes so far.
    pub unknown: u64,
    /// When shard 0's leader was crashed, if it was.
    pub crashed_at: Option<Duration>,
}

/// Not yet known: `u64::MAX` in the instants below.
const NONE: u64 = u64::MAX;

/// State every worker shares with the driver.
struct Shared {
    started: Instant,
    stop: AtomicBool,
    /// Nanoseconds from `started` to the crash (`NONE` before it).
    killed: AtomicU64,
    /// Node id of the crashed replica (0 before the crash).
    killed_node: AtomicU64,
    /// First release after the crash (ns from `started`): of any transaction, of one begun
    /// after the crash, of a cross-shard one begun after it.
    first_any: AtomicU64,
    first: AtomicU64,
    first_cross: AtomicU64,
}

impl Shared {
    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.started).as_nanos() as u64
    }

    fn killed(&self) -> Option<u64> {
        Some(self.killed.load(Ordering::Acquire)).filter(|&k| k != NONE)
    }

    /// Notes the release at `now` of a transaction begun at `t0` for the first-release
    /// figures; whether the transaction began after the crash.
    fn note_release(&self, t0: Instant, now: Instant, cross: bool) -> bool {
        let Some(k) = self.killed() else {
            return false;
        };
        let n = self.ns(now);
        if n >= k {
            self.first_any.fetch_min(n, Ordering::Relaxed);
        }
        if self.ns(t0) >= k {
            self.first.fetch_min(n, Ordering::Relaxed);
            if cross {
                self.first_cross.fetch_min(n, Ordering::Relaxed);
            }
            return true;
        }
        false
    }

    /// Whether a release of a transaction begun at `t0` (cross-shard or not) would still set
    /// a first-release figure; such commits are waited on at once so the figure is exact.
    fn probe(&self, t0: Instant, cross: bool) -> bool {
        self.killed().is_some_and(|k| self.ns(t0) >= k)
            && (self.first.load(Ordering::Relaxed) == NONE
                || (cross && self.first_cross.load(Ordering::Relaxed) == NONE))
    }

    fn ms_after_kill(&self, a: &AtomicU64) -> Option<f64> {
        let k = self.killed()?;
        Some(a.load(Ordering::Relaxed))
            .filter(|&v| v != NONE)
            .map(|v| (v - k) as f64 / 1e6)
    }
}

/// One transaction's shape: its keys and whether it writes them.
type Shape = MicroShape;

/// A speculative commit awaiting release.
struct Inflight {
    t0: Instant,
    /// The coordinating replica.
    node: u64,
    spec: Speculative,
    shape: Shape,
    cross: bool,
}

/// A pending commit's front is re-checked for a discard verdict once it is this old.
const CHECK_AFTER: Duration = Duration::from_millis(10);

/// How often commits set aside as stragglers are looked at again.
const SLOW_SCAN: Duration = Duration::from_millis(2);

/// Unknown outcomes described per worker in the report.
const UNKNOWN_SAMPLES: usize = 4;

/// What the driver learned while crashing the leader.
struct Kill {
    replica: u32,
    at: Instant,
    stop: Duration,
}

/// Why a cluster run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ClusterBenchError {
    /// The cluster would not start.
    #[error(transparent)]
    Cluster(#[from] mako_server::cluster::ClusterError),
    /// The transaction mix cannot be drawn with these settings.
    #[error(transparent)]
    Mix(#[from] MixError),
}

/// Starts a cluster, loads, runs (crashing shard 0's leader if asked), checks replicas;
/// returns the report.
pub fn run_cluster(
    cfg: &ClusterBenchConfig,
    mut progress: impl FnMut(ClusterProgress),
) -> Result<ClusterReport, ClusterBenchError> {
    let dist = match cfg.dist {
        Dist::Uniform => KeyDist::Uniform { n: cfg.keys },
        Dist::Zipf => KeyDist::Zipf(Zipf::new(cfg.keys, ZIPF_THETA)),
    };
    let shapes = ShapeGen::new(dist, cfg.keys, cfg.shards, cfg.read_pct, cfg.mix)?;
    let cluster = Cluster::start(ClusterConfig {
        replicas: cfg.replicas,
        site: SiteConfig {
            shards: cfg.shards,
            workers: cfg.threads.max(1),
            tables: vec![crate::TABLE.into()],
            timeout: cfg.request_timeout,
            ..SiteConfig::default()
        },
        net: NetKind::Mem,
        durability: cfg.durability,
        protocol: cfg.protocol,
        election_ms: cfg.election_ms,
        ..ClusterConfig::default()
    })?;
    let s_count = u64::from(cfg.shards);
    let value = Bytes::from(vec![b'x'; cfg.value_size]);
    // Load phase: each shard's leader loads its keys in transactions of 1,000 writes.
    let loaded = Instant::now();
    std::thread::scope(|sc| {
        for s in 0..cfg.shards {
            let (cluster, value) = (&cluster, &value);
            sc.spawn(move || {
                let site = cluster.leader(s);
                let mut k = u64::from(s);
                while k < cfg.keys {
                    let Ok(mut tx) = site.begin(0) else {
                        tracing::warn!("worker 0 is not configured; nothing loaded");
                        return;
                    };
                    for _ in 0..1000 {
                        if k >= cfg.keys {
                            break;
                        }
                        let _ = tx.put(s, 0, &k.to_be_bytes(), value.clone());
                        k += s_count;
                    }
                    if let Err(e) = tx.commit() {
                        tracing::warn!("load transaction failed: {e}");
                    }
                }
            });
        }
    });
    let load_secs = loaded.elapsed().as_secs_f64();
    let workers = cfg.shards * cfg.threads;
    let counters: Vec<Counters> = (0..workers).map(|_| Counters::default()).collect();
    let total = cfg.duration;
    let kill_at = cfg.kill_leader_at.filter(|k| *k < total);
    let cpu_start = process_cpu_time();
    let shared = Shared {
        started: Instant::now(),
        stop: AtomicBool::new(false),
        killed: AtomicU64::new(NONE),
        killed_node: AtomicU64::new(0),
        first_any: AtomicU64::new(NONE),
        first: AtomicU64::new(NONE),
        first_cross: AtomicU64::new(NONE),
    };
    let mut kill: Option<Kill> = None;
    let mut kill_error = None;
    let mut serving: Option<(Instant, Option<u32>)> = None;
    let out = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..workers)
            .map(|i| {
                let (cluster, shapes, shared) = (&cluster, &shapes, &shared);
                let (c, value) = (&counters[i as usize], &value);
                sc.spawn(move || worker(cfg, cluster, shapes, shared, c, value, i))
            })
            .collect();
        let mut watcher = None;
        let mut next_tick = Duration::from_secs(1);
        loop {
            let el = shared.started.elapsed();
            if el >= total {
                break;
            }
            let mut wake = next_tick.min(total);
            if let (Some(k), None) = (kill_at, &kill) {
                wake = wake.min(k);
            }
            std::thread::sleep(wake.saturating_sub(el));
            let el = shared.started.elapsed();
            if let (Some(k), None) = (kill_at, &kill)
                && el >= k
                && kill_error.is_none()
            {
                match crash_leader(&cluster, &shared) {
                    Ok(k) => {
                        kill = Some(k);
                        let (cluster, shared) = (&cluster, &shared);
                        watcher = Some(sc.spawn(move || watch_serving(cluster, shared)));
                    }
                    Err(e) => kill_error = Some(e),
                }
            }
            if el >= next_tick || el >= total {
                next_tick += Duration::from_secs(1);
                let sum = |f: &dyn Fn(&Counters) -> u64| counters.iter().map(f).sum::<u64>();
                progress(ClusterProgress {
                    elapsed: el.min(total),
                    total,
                    spec: sum(&|c| c.spec.load(Ordering::Relaxed)),
                    released: sum(&|c| c.released.load(Ordering::Relaxed)),
                    aborted: sum(&|c| c.aborted_total()),
                    unknown: sum(&|c| c.unknown.load(Ordering::Relaxed)),
                    crashed_at: kill.as_ref().map(|k| k.at - shared.started),
                });
            }
        }
        // The measured phase ends here: CPU time and wall time up to the stop (the drain and
        // the replica check after it are not counted).
        let cpu = cpu_start
            .zip(process_cpu_time())
            .map(|(a, b)| b.saturating_sub(a));
        let wall = shared.started.elapsed();
        shared.stop.store(true, Ordering::Relaxed);
        let mut out = WorkerOut::new(&shared, total);
        let mut recs = Vec::new();
        for h in handles {
            if let Ok(w) = h.join() {
                let _ = out.commit.add(&w.commit);
                let _ = out.release.add(&w.release);
                out.left += w.left;
                out.max_unreleased = out.max_unreleased.max(w.max_unreleased);
                out.unknown_released += w.unknown_released;
                out.unknown_discarded += w.unknown_discarded;
                out.samples.extend(w.samples);
                recs.push(w.series);
            }
        }
        if let Some(w) = watcher {
            serving = w.join().ok().flatten();
        }
        (out, recs, cpu, wall)
    });
    let (out, recs, cpu, wall) = out;
    let cpu_secs = cpu.map_or(0.0, |c| c.as_secs_f64());
    let series = Recorder::merge(recs, buckets_for(total));
    let secs = cfg.duration.as_secs_f64();
    let sum = |f: &dyn Fn(&Counters) -> u64| counters.iter().map(f).sum::<u64>();
    let (spec, released, aborted, distributed, unknown) = (
        sum(&|c| c.spec.load(Ordering::Relaxed)),
        sum(&|c| c.released.load(Ordering::Relaxed)),
        sum(&|c| c.aborted_total()),
        sum(&|c| c.distributed.load(Ordering::Relaxed)),
        sum(&|c| c.unknown.load(Ordering::Relaxed)),
    );
    let aborts = AbortReason::ALL
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name(), sum(&|c| c.aborted[i].load(Ordering::Relaxed))))
        .collect();
    let failover = kill.map(|k| {
        let at_ms = (k.at - shared.started).as_secs_f64() * 1e3;
        let first_release_ms = shared.ms_after_kill(&shared.first);
        FailoverReport {
            shard: 0,
            replica: k.replica,
            at_ms,
            stop_ms: k.stop.as_secs_f64() * 1e3,
            new_leader: serving.and_then(|s| s.1),
            serving_after_ms: serving.map(|s| (s.0 - k.at).as_secs_f64() * 1e3),
            first_release_ms,
            first_cross_release_ms: shared.ms_after_kill(&shared.first_cross),
            first_any_release_ms: shared.ms_after_kill(&shared.first_any),
            released_after_by_home: (0..cfg.shards)
                .map(|h| {
                    counters
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i as u32 % cfg.shards == h)
                        .map(|(_, c)| c.released_after.load(Ordering::Relaxed))
                        .sum()
                })
                .collect(),
            dip: Dip::compute(&series, at_ms, first_release_ms.map(|f| f + at_ms)),
        }
    });
    // Replicas: wait for followers to catch up, then compare every follower with its leader.
    let difference = cluster.compare_replicas(Duration::from_secs(20)).err();
    let consistent = difference.is_none();
    let mut lag = hist();
    for site in cluster.sites.iter().flat_map(|s| s.iter().skip(1)) {
        for l in site.replay_lags() {
            let _ = lag.record(l.max(1));
        }
        let immediate = site
            .replayed()
            .saturating_sub(site.replay_lags().len() as u64);
        let _ = lag.record_n(1, immediate);
    }
    cluster.shutdown();
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    Ok(ClusterReport {
        shards: cfg.shards,
        replicas: cfg.replicas,
        threads: cfg.threads,
        window: cfg.window,
        max_unreleased: out.max_unreleased,
        read_pct: cfg.read_pct,
        cross_shard_pct: cfg.mix.cross_pct(),
        durability: format!("{:?}", cfg.durability).to_lowercase(),
        protocol: cfg.protocol.name().to_owned(),
        election_ms: cfg.election_ms,
        request_timeout_ms: cfg.request_timeout.as_millis() as u64,
        unknown_after_ms: cfg.unknown_after.as_millis() as u64,
        secs,
        load_secs,
        spec_per_sec: spec as f64 / secs,
        released_per_sec: released as f64 / secs,
        wall_secs: wall.as_secs_f64(),
        cpu_secs,
        released_per_cpu_sec: if cpu_secs > 0.0 {
            released as f64 / cpu_secs
        } else {
            0.0
        },
        abort_pct: if spec + aborted == 0 {
            0.0
        } else {
            100.0 * aborted as f64 / (spec + aborted) as f64
        },
        aborts,
        unknown,
        unknown_later_released: out.unknown_released,
        unknown_later_discarded: out.unknown_discarded,
        unknown_samples: out.samples,
        distributed_pct: if spec == 0 {
            0.0
        } else {
            100.0 * distributed as f64 / spec as f64
        },
        commit_p50_us: q(&out.commit, 0.5),
        release_p50_us: q(&out.release, 0.5),
        release_p99_us: q(&out.release, 0.99),
        release_p999_us: q(&out.release, 0.999),
        commit_latency: latency_curve(&out.commit, 0.001),
        release_latency: latency_curve(&out.release, 0.001),
        replay_lag_p99_us: if lag.is_empty() {
            0.0
        } else {
            lag.value_at_quantile(0.99) as f64
        },
        unreleased_at_end: out.left,
        consistent,
        difference,
        bucket_ms: BUCKET.as_millis() as u64,
        series,
        failover,
        kill_error,
    })
}

/// Crashes shard 0's current leader; records the instant in `shared`.
fn crash_leader(cluster: &Cluster, shared: &Shared) -> Result<Kill, String> {
    let leader = cluster
        .current_leader(0)
        .ok_or_else(|| "shard 0 has no leader to crash".to_owned())?;
    let replica = cluster.sites[0]
        .iter()
        .position(|s| Arc::ptr_eq(s, leader))
        .ok_or_else(|| "shard 0's leader is not one of its replicas".to_owned())?
        as u32;
    shared.killed_node.store(leader.node(), Ordering::Relaxed);
    let at = Instant::now();
    shared.killed.store(shared.ns(at), Ordering::Release);
    cluster
        .stop_replica(0, replica)
        .map_err(|e| format!("crashing replica {replica} of shard 0: {e}"))?;
    tracing::info!(replica, "crashed shard 0's leader");
    Ok(Kill {
        replica,
        at,
        stop: at.elapsed(),
    })
}

/// Waits (until the run stops) for every shard to serve the newest epoch again; returns when
/// it did and which replica then leads shard 0.
fn watch_serving(cluster: &Cluster, shared: &Shared) -> Option<(Instant, Option<u32>)> {
    while !shared.stop.load(Ordering::Relaxed) {
        if cluster.wait_serving(Duration::from_millis(100)) {
            let at = Instant::now();
            let new = cluster.current_leader(0).and_then(|l| {
                cluster.sites[0]
                    .iter()
                    .position(|s| Arc::ptr_eq(s, l))
                    .map(|r| r as u32)
            });
            return Some((at, new));
        }
    }
    None
}

/// What a worker hands back.
struct WorkerOut {
    commit: Histogram<u64>,
    release: Histogram<u64>,
    left: u64,
    /// The most commits this worker had unreleased at once.
    max_unreleased: usize,
    unknown_released: u64,
    unknown_discarded: u64,
    samples: Vec<String>,
    series: Recorder,
}

impl WorkerOut {
    fn new(shared: &Shared, span: Duration) -> Self {
        WorkerOut {
            commit: hist(),
            release: hist(),
            left: 0,
            max_unreleased: 0,
            unknown_released: 0,
            unknown_discarded: 0,
            samples: Vec::new(),
            series: Recorder::new(shared.started, span),
        }
    }
}

/// A worker's in-flight state: pending commits, shapes to retry, given-up commits.
struct Flight<'a> {
    shared: &'a Shared,
    c: &'a Counters,
    unknown_after: Duration,
    pending: VecDeque<Inflight>,
    /// Stragglers set aside from `pending` (commits behind them were released, or the worker
    /// moved to another coordinator).
    slow: Vec<Inflight>,
    /// The replica the worker coordinates on now.
    node: u64,
    scanned: Instant,
    retry: VecDeque<Shape>,
    limbo: Vec<Inflight>,
    out: WorkerOut,
}

impl Flight<'_> {
    fn released(&mut self, f: &Inflight, now: Instant) {
        let lat = now.saturating_duration_since(f.t0);
        let _ = self.out.release.record((lat.as_nanos() as u64).max(1));
        self.out.series.released(now, lat);
        self.c.released.fetch_add(1, Ordering::Relaxed);
        if self.shared.note_release(f.t0, now, f.cross) {
            self.c.released_after.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn aborted(&mut self, r: AbortReason, shape: Shape, now: Instant) {
        let i = AbortReason::ALL.iter().position(|&x| x == r).unwrap_or(0);
        self.c.aborted[i].fetch_add(1, Ordering::Relaxed);
        self.out.series.aborted(now, r);
        self.retry.push_back(shape);
    }

    /// Adds a commit to the pending queue.
    fn push(&mut self, f: Inflight) {
        self.pending.push_back(f);
        self.out.max_unreleased = self.out.max_unreleased.max(self.pending.len());
    }

    /// Waits, while `window` (0: no bound) or more commits are pending, for the oldest to be
    /// settled (released, discarded, or pending so long that it counts as `Unknown`). It does
    /// not wait once another replica leads the worker's home shard (`leader`): the worker's
    /// move to it sets the pending commits aside. Commits left at a crashed coordinator are
    /// set aside at once. The window thus never holds up the failover figures.
    fn make_room(&mut self, window: usize, leader: &dyn Fn() -> Option<u64>) {
        while window > 0
            && self.pending.len() >= window
            && !self.shared.stop.load(Ordering::Relaxed)
        {
            if leader().is_some_and(|l| l != self.node) {
                return;
            }
            let crashed = self.shared.killed_node.load(Ordering::Relaxed);
            if self.pending.iter().any(|f| f.node == crashed) {
                for f in std::mem::take(&mut self.pending) {
                    if f.node == crashed {
                        self.slow.push(f);
                    } else {
                        self.pending.push_back(f);
                    }
                }
                continue;
            }
            if let Some(f) = self.pending.front() {
                let waited = Instant::now().saturating_duration_since(f.t0);
                let left = self.unknown_after.saturating_sub(waited);
                // At least 1 ms: a commit not yet old enough to be settled is not spun on.
                let _ = f
                    .spec
                    .wait_release(left.clamp(Duration::from_millis(1), CHECK_AFTER));
            }
            self.settle();
        }
    }

    /// Settles the pending queue: releases and discards at its front, commits pending too
    /// long (`Unknown`), and stragglers that hold up released commits behind them (set aside
    /// and re-checked every [`SLOW_SCAN`]).
    fn settle(&mut self) {
        while let Some(f) = self.pending.front() {
            let now = Instant::now();
            if f.spec.is_released() {
                if let Some(f) = self.pending.pop_front() {
                    self.released(&f, now);
                }
                continue;
            }
            let age = now.saturating_duration_since(f.t0);
            if age < CHECK_AFTER {
                break;
            }
            let verdict = f.spec.wait_release(Duration::ZERO);
            let Some(f) = self.pending.pop_front() else {
                break;
            };
            match verdict {
                Ok(()) => self.released(&f, now),
                Err(ReleaseError::Aborted(r)) => self.aborted(r, f.shape, now),
                Err(ReleaseError::Pending(why)) if age >= self.unknown_after => {
                    self.unknown(f, why, now)
                }
                Err(ReleaseError::Pending(_)) => {
                    if self.pending.front().is_some_and(|n| n.spec.is_released()) {
                        self.slow.push(f);
                    } else {
                        self.pending.push_front(f);
                        break;
                    }
                }
            }
        }
        let now = Instant::now();
        if self.slow.is_empty() || now.saturating_duration_since(self.scanned) < SLOW_SCAN {
            return;
        }
        self.scanned = now;
        for f in std::mem::take(&mut self.slow) {
            match f.spec.wait_release(Duration::ZERO) {
                Ok(()) => self.released(&f, now),
                Err(ReleaseError::Aborted(r)) => self.aborted(r, f.shape, now),
                Err(ReleaseError::Pending(why))
                    if now.saturating_duration_since(f.t0) >= self.unknown_after =>
                {
                    self.unknown(f, why, now)
                }
                Err(ReleaseError::Pending(_)) => self.slow.push(f),
            }
        }
    }

    /// Gives up on `f` as `Unknown` (its outcome is looked at again after the run).
    fn unknown(&mut self, f: Inflight, why: Pending, now: Instant) {
        self.c.unknown.fetch_add(1, Ordering::Relaxed);
        self.out.series.unknown(now);
        if self.out.samples.len() < UNKNOWN_SAMPLES {
            let began = match self.shared.killed() {
                Some(k) => format!(
                    "began {:+.1} ms from the crash",
                    (self.shared.ns(f.t0) as f64 - k as f64) / 1e6
                ),
                None => format!("began at {:.3} s", self.shared.ns(f.t0) as f64 / 1e9),
            };
            let crashed = self.shared.killed_node.load(Ordering::Relaxed) == f.node;
            self.out.samples.push(format!(
                "{began}, {}, coordinator node {}{}, epoch {}, vt {:?}: {why}",
                if f.cross { "cross-shard" } else { "one shard" },
                f.node,
                if crashed { " (the crashed leader)" } else { "" },
                f.spec.info.epoch,
                f.spec.info.vt.as_slice()
            ));
        }
        self.limbo.push(f);
    }

    /// After the run: waits for what is still pending and for the unknown commits' outcomes.
    fn drain(mut self) -> WorkerOut {
        self.pending.extend(std::mem::take(&mut self.slow));
        self.out.left = self.pending.len() as u64;
        let crashed = self.shared.killed_node.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        for f in std::mem::take(&mut self.pending) {
            let wait = if f.node == crashed {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            if f.spec.wait_release(wait).is_ok() {
                let lat = f.t0.elapsed();
                let _ = self.out.release.record((lat.as_nanos() as u64).max(1));
            }
        }
        for (i, f) in std::mem::take(&mut self.limbo).into_iter().enumerate() {
            // A crashed coordinator's view of the outcome never moves again: no use waiting.
            let wait = if f.node == crashed {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            let end = match f.spec.wait_release(wait) {
                Ok(()) => {
                    self.out.unknown_released += 1;
                    "released later".to_owned()
                }
                Err(ReleaseError::Aborted(r)) => {
                    self.out.unknown_discarded += 1;
                    format!("aborted later ({r})")
                }
                Err(ReleaseError::Pending(why)) => format!("still pending after the run: {why}"),
            };
            if let Some(s) = self.out.samples.get_mut(i) {
                s.push_str(&format!("; {end}"));
            }
        }
        self.out
    }
}

/// One client worker: home shard `i % S`, commit-log stream `i / S` on whichever replica leads.
fn worker(
    cfg: &ClusterBenchConfig,
    cluster: &Cluster,
    shapes: &ShapeGen,
    shared: &Shared,
    c: &Counters,
    value: &Bytes,
    i: u32,
) -> WorkerOut {
    let s_count = u64::from(cfg.shards);
    let home = i % cfg.shards;
    let stream = i / cfg.shards;
    let mut rng = SmallRng::seed_from_u64(cfg.seed + u64::from(i));
    let mut fl = Flight {
        shared,
        c,
        unknown_after: cfg.unknown_after,
        pending: VecDeque::new(),
        slow: Vec::new(),
        node: 0,
        scanned: Instant::now(),
        retry: VecDeque::new(),
        limbo: Vec::new(),
        out: WorkerOut::new(shared, cfg.duration),
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let shape = fl
            .retry
            .pop_front()
            .unwrap_or_else(|| shapes.draw(home, &mut rng));
        // The home shard's current leader, re-resolved for every transaction; none serving
        // (an election or epoch change under way): back off 1 ms, as a client would.
        let site: &Arc<Site> = match cluster
            .current_leader(home)
            .filter(|s| s.open_epoch().is_some())
        {
            Some(s) => s,
            None => {
                fl.out.series.backoff(Instant::now());
                fl.retry.push_front(shape);
                fl.settle();
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        if site.node() != fl.node {
            // Moved to another replica (the old one crashed or lost leadership): what is
            // pending at the old one must not hold up releases here.
            fl.node = site.node();
            let moved = std::mem::take(&mut fl.pending);
            fl.slow.extend(moved);
        }
        let t0 = Instant::now();
        let Ok(mut tx) = site.begin(stream) else {
            tracing::warn!("worker {stream} is not configured");
            break;
        };
        let r = (|| {
            for k in shape.keys {
                let s = (k % s_count) as u32;
                let v = tx.get(s, 0, &k.to_be_bytes())?;
                if shape.write {
                    let mut nv = v.map(|b| b.to_vec()).unwrap_or_else(|| value.to_vec());
                    if let Some(b) = nv.first_mut() {
                        *b = b.wrapping_add(1);
                    }
                    tx.put(s, 0, &k.to_be_bytes(), Bytes::from(nv))?;
                }
            }
            tx.commit_speculative()
        })();
        let now = Instant::now();
        match r {
            Ok(spec) => {
                let _ = fl
                    .out
                    .commit
                    .record((now.duration_since(t0).as_nanos() as u64).max(1));
                c.spec.fetch_add(1, Ordering::Relaxed);
                fl.out.series.spec(now);
                let cross = shape.is_cross(cfg.shards);
                if cross {
                    c.distributed.fetch_add(1, Ordering::Relaxed);
                }
                let f = Inflight {
                    t0,
                    node: site.node(),
                    spec,
                    shape,
                    cross,
                };
                if shared.probe(t0, cross) {
                    // One of the first transactions after the crash: wait for its outcome now,
                    // so the time to the first release is measured, not sampled.
                    match f.spec.wait_release(cfg.unknown_after) {
                        Ok(()) => fl.released(&f, Instant::now()),
                        Err(ReleaseError::Aborted(r)) => fl.aborted(r, f.shape, Instant::now()),
                        Err(ReleaseError::Pending(_)) => fl.push(f),
                    }
                } else {
                    fl.push(f);
                }
            }
            Err(a) => {
                fl.aborted(a.reason, shape, now);
                if matches!(a.reason, AbortReason::Failover | AbortReason::NotLeader) {
                    // The shard's leader or epoch is changing: back off 1 ms before the retry
                    // rather than spin on refusals.
                    fl.out.series.backoff(now);
                    fl.settle();
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        fl.settle();
        fl.make_room(cfg.window, &|| {
            cluster.current_leader(home).map(|s| s.node())
        });
    }
    fl.drain()
}
