//! `mako bench -f CONFIG`: the micro and YCSB-A workloads driven over the client protocol.
//!
//! Each client thread has its own [`Client`] and runs one transaction per request
//! ([`Client::run`], executed and committed by the coordinator on a shard leader), without
//! client-side retries, so every abort and unknown outcome is counted. Latency is what the
//! client observes: from sending the request to the reply that the transaction is released.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mako_client::{Client, ClientConfig, ClientError, DEFAULT_TABLE, Operation};
use mako_config::Config;
use mako_txn::AbortReason;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{RemoteError, abort_name, error_kind, shard_of};
use crate::series::{BUCKET, Bucket, Quantile, Recorder, buckets_for, latency_curve};
use crate::{Dist, KeyDist, MICRO_KEYS, ZIPF_THETA, Zipf};

/// Keys put per load request.
const LOAD_BATCH: u64 = 100;

/// The workloads a remote bench runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemoteWorkload {
    /// Mako's microbenchmark: read-modify-write of 4 keys (`Add`) or a read of 4 keys
    /// (`Get`), by the read share.
    Micro,
    /// YCSB A: 50% single-key reads, 50% single-key updates.
    YcsbA,
}

impl RemoteWorkload {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            RemoteWorkload::Micro => "micro",
            RemoteWorkload::YcsbA => "ycsb-a",
        }
    }
}

/// One remote bench run.
#[derive(Debug, Clone)]
pub struct RemoteBenchConfig {
    /// The workload.
    pub workload: RemoteWorkload,
    /// Client threads, each with its own connections.
    pub clients: usize,
    /// Measured phase.
    pub duration: Duration,
    /// Keys loaded before the measured phase.
    pub keys: u64,
    /// Percentage of read-only transactions (micro; YCSB-A is always 50).
    pub read_pct: u32,
    /// Key distribution.
    pub dist: Dist,
    /// Bytes per loaded value (YCSB-A; micro stores decimal counters).
    pub value_size: usize,
    /// Seed of the clients' generators.
    pub seed: u64,
    /// Run each transaction interactively (begin, one request per operation, commit)
    /// instead of as one request.
    pub interactive: bool,
}

impl RemoteBenchConfig {
    /// The effective read-only percentage.
    pub fn read_pct(&self) -> u32 {
        match self.workload {
            RemoteWorkload::Micro => self.read_pct,
            RemoteWorkload::YcsbA => 50,
        }
    }

    fn validate(&self) -> Result<(), RemoteError> {
        let bad = |m: &str| Err(RemoteError::Invalid(m.into()));
        if !(1..=1024).contains(&self.clients) {
            return bad("--clients must be between 1 and 1024");
        }
        if self.keys < MICRO_KEYS as u64 {
            return bad("--keys must be at least 4");
        }
        if self.read_pct > 100 {
            return bad("--read-pct must be at most 100");
        }
        if self.duration.is_zero() {
            return bad("--duration must be positive");
        }
        Ok(())
    }
}

/// Progress of a remote bench.
#[derive(Debug, Clone, Copy)]
pub enum BenchProgress {
    /// Loading keys.
    Loading {
        /// Keys put so far.
        done: u64,
        /// Keys to put.
        total: u64,
    },
    /// The measured phase.
    Running {
        /// Time since it started.
        elapsed: Duration,
        /// Its configured length.
        total: Duration,
        /// Released so far.
        released: u64,
        /// Aborted so far.
        aborted: u64,
        /// Unknown so far.
        unknown: u64,
    },
}

/// What a remote bench measured, with the conditions it ran under.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemoteBenchReport {
    /// The workload.
    pub workload: RemoteWorkload,
    /// The config files of the deployment.
    pub config: Vec<String>,
    /// The deployment's durability mode (`fsync`, `buffered`, `memory`).
    pub durability: String,
    /// The deployment's replication protocol (`raft`, `paxos`).
    pub protocol: String,
    /// Shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// Client threads.
    pub clients: usize,
    /// Keys loaded.
    pub keys: u64,
    /// Key distribution.
    pub dist: Dist,
    /// Read-only transactions, percent of the mix.
    pub read_pct: u32,
    /// Whether transactions ran interactively (one request per operation plus the commit)
    /// rather than as one request each.
    pub interactive: bool,
    /// Load time, seconds.
    pub load_secs: f64,
    /// Measured phase, seconds (until the last client's last reply).
    pub secs: f64,
    /// Released transactions.
    pub released: u64,
    /// Released transactions per second.
    pub released_per_sec: f64,
    /// Aborted transactions.
    pub aborted: u64,
    /// Aborts by reason.
    pub aborts: BTreeMap<String, u64>,
    /// Transactions whose outcome the client could not learn.
    pub unknown: u64,
    /// Requests that failed otherwise (no leader found, refused, ...), by kind.
    pub errors: BTreeMap<String, u64>,
    /// Released transactions that touched more than one shard, percent of released.
    pub cross_shard_pct: f64,
    /// Release latency as the client observes it (request sent to released reply), p50 µs.
    pub release_p50_us: f64,
    /// Release latency p90 µs.
    pub release_p90_us: f64,
    /// Release latency p99 µs.
    pub release_p99_us: f64,
    /// Release latency p99.9 µs.
    pub release_p999_us: f64,
    /// Release latency distribution (client-observed), p0 to p99.99 on a "nines" scale.
    pub release_latency: Vec<Quantile>,
    /// Width of a series bucket, ms.
    pub bucket_ms: u64,
    /// Per-bucket series over the measured phase (no speculative commits: a client sees
    /// releases only).
    pub series: Vec<Bucket>,
}

/// The key of bench key number `k` in the default table: `bench/` and `k` big-endian.
pub fn bench_key(k: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(14);
    v.extend_from_slice(b"bench/");
    v.extend_from_slice(&k.to_be_bytes());
    v
}

fn client_of(cfg: &Arc<Config>, attempts: u32) -> Result<Client, RemoteError> {
    let mut cc = ClientConfig::from_config(cfg)?;
    cc.attempts = attempts;
    Ok(Client::new(cc))
}

/// One client thread's results.
struct Worker {
    released: u64,
    cross: u64,
    aborts: BTreeMap<String, u64>,
    unknown: u64,
    errors: BTreeMap<String, u64>,
    hist: Histogram<u64>,
    series: Recorder,
    ended: Instant,
}

/// Counters the progress line reads.
#[derive(Default)]
struct Live {
    released: AtomicU64,
    aborted: AtomicU64,
    unknown: AtomicU64,
    loaded: AtomicU64,
}

/// Loads the keys, runs the workload for `bc.duration` from `bc.clients` threads against the
/// deployment `cfg` describes, and reports. `progress` is called about 4 times a second.
pub fn run_bench(
    cfg: &Arc<Config>,
    bc: &RemoteBenchConfig,
    mut progress: impl FnMut(BenchProgress),
) -> Result<RemoteBenchReport, RemoteError> {
    bc.validate()?;
    if cfg.table(DEFAULT_TABLE).is_none() {
        return Err(RemoteError::NoTable(DEFAULT_TABLE.into()));
    }
    let live = Live::default();
    let load_started = Instant::now();
    load(cfg, bc, &live, &mut progress)?;
    let load_secs = load_started.elapsed().as_secs_f64();
    let dist = match bc.dist {
        Dist::Uniform => KeyDist::Uniform { n: bc.keys },
        Dist::Zipf => KeyDist::Zipf(Zipf::new(bc.keys, ZIPF_THETA)),
    };
    let started = Instant::now();
    let deadline = started + bc.duration;
    let workers: Vec<Result<Worker, RemoteError>> = std::thread::scope(|s| {
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let handles: Vec<_> = (0..bc.clients)
            .map(|i| {
                let (dist, live, done) = (&dist, &live, done_tx.clone());
                s.spawn(move || {
                    let r = worker(cfg, bc, i, dist, started, deadline, live);
                    drop(done);
                    r
                })
            })
            .collect();
        drop(done_tx);
        while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
            done_rx.recv_timeout(Duration::from_millis(250))
        {
            progress(BenchProgress::Running {
                elapsed: started.elapsed(),
                total: bc.duration,
                released: live.released.load(Ordering::Relaxed),
                aborted: live.aborted.load(Ordering::Relaxed),
                unknown: live.unknown.load(Ordering::Relaxed),
            });
        }
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    let workers: Vec<Worker> = workers.into_iter().collect::<Result<_, _>>()?;
    let ended = workers.iter().map(|w| w.ended).max().unwrap_or(deadline);
    let secs = ended.saturating_duration_since(started).as_secs_f64();
    let mut hist = latency_histogram();
    let (mut released, mut cross, mut unknown) = (0, 0, 0);
    let mut aborts = BTreeMap::new();
    let mut errors = BTreeMap::new();
    let mut recs = Vec::with_capacity(workers.len());
    for w in workers {
        released += w.released;
        cross += w.cross;
        unknown += w.unknown;
        for (k, n) in w.aborts {
            *aborts.entry(k).or_insert(0) += n;
        }
        for (k, n) in w.errors {
            *errors.entry(k).or_insert(0) += n;
        }
        let _ = hist.add(&w.hist);
        recs.push(w.series);
    }
    let q = |p: f64| {
        if hist.is_empty() {
            0.0
        } else {
            hist.value_at_quantile(p) as f64
        }
    };
    Ok(RemoteBenchReport {
        interactive: bc.interactive,
        workload: bc.workload,
        config: cfg.sources.clone(),
        durability: cfg.durability.as_str().to_string(),
        protocol: match cfg.replication {
            mako_config::Replication::Raft => "raft",
            mako_config::Replication::Paxos => "paxos",
        }
        .to_string(),
        shards: cfg.shards(),
        replicas: cfg.replicas(),
        clients: bc.clients,
        keys: bc.keys,
        dist: bc.dist,
        read_pct: bc.read_pct(),
        load_secs,
        secs,
        released,
        released_per_sec: released as f64 / secs.max(1e-9),
        aborted: aborts.values().sum(),
        aborts,
        unknown,
        errors,
        cross_shard_pct: 100.0 * cross as f64 / (released.max(1)) as f64,
        release_p50_us: q(0.5),
        release_p90_us: q(0.9),
        release_p99_us: q(0.99),
        release_p999_us: q(0.999),
        release_latency: latency_curve(&hist, 1.0),
        bucket_ms: BUCKET.as_millis() as u64,
        series: Recorder::merge(recs, buckets_for(bc.duration)),
    })
}

/// Release latency: 1 µs to 60 s, 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

/// Puts every key (micro: the counter `0`; YCSB-A: `value_size` bytes), `LOAD_BATCH` keys a
/// request, from `bc.clients` threads.
fn load(
    cfg: &Arc<Config>,
    bc: &RemoteBenchConfig,
    live: &Live,
    progress: &mut impl FnMut(BenchProgress),
) -> Result<(), RemoteError> {
    let value = match bc.workload {
        RemoteWorkload::Micro => b"0".to_vec(),
        RemoteWorkload::YcsbA => vec![b'v'; bc.value_size.max(1)],
    };
    let batches = bc.keys.div_ceil(LOAD_BATCH);
    let next = AtomicU64::new(0);
    let results: Vec<Result<(), RemoteError>> = std::thread::scope(|s| {
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let handles: Vec<_> = (0..bc.clients.min(batches as usize).max(1))
            .map(|_| {
                let (next, value, done) = (&next, &value, done_tx.clone());
                s.spawn(move || {
                    let r = (|| {
                        let mut c = client_of(cfg, 10)?;
                        loop {
                            let b = next.fetch_add(1, Ordering::Relaxed);
                            if b >= batches {
                                return Ok(());
                            }
                            let keys = b * LOAD_BATCH..((b + 1) * LOAD_BATCH).min(bc.keys);
                            let n = keys.end - keys.start;
                            let ops: Vec<Operation> = keys
                                .map(|k| Operation::Put {
                                    table: DEFAULT_TABLE.into(),
                                    key: bench_key(k),
                                    value: value.clone(),
                                })
                                .collect();
                            // Puts are idempotent: an unknown outcome is simply run again.
                            let mut tries = 0;
                            loop {
                                tries += 1;
                                match c.run(ops.clone()) {
                                    Ok(_) => break,
                                    Err(e) if tries < 5 => {
                                        tracing::debug!("load batch {b}: {e}; again");
                                    }
                                    Err(e) => return Err(RemoteError::Load(e.to_string())),
                                }
                            }
                            live.loaded.fetch_add(n, Ordering::Relaxed);
                        }
                    })();
                    drop(done);
                    r
                })
            })
            .collect();
        drop(done_tx);
        while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
            done_rx.recv_timeout(Duration::from_millis(250))
        {
            progress(BenchProgress::Loading {
                done: live.loaded.load(Ordering::Relaxed),
                total: bc.keys,
            });
        }
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    progress(BenchProgress::Loading {
        done: live.loaded.load(Ordering::Relaxed),
        total: bc.keys,
    });
    results.into_iter().collect()
}

/// One client thread of the measured phase.
fn worker(
    cfg: &Arc<Config>,
    bc: &RemoteBenchConfig,
    index: usize,
    dist: &KeyDist,
    started: Instant,
    deadline: Instant,
    live: &Live,
) -> Result<Worker, RemoteError> {
    let mut client = client_of(cfg, 1)?;
    let mut rng = SmallRng::seed_from_u64(bc.seed ^ (index as u64).wrapping_mul(0x9E37_79B9));
    let mut w = Worker {
        released: 0,
        cross: 0,
        aborts: BTreeMap::new(),
        unknown: 0,
        errors: BTreeMap::new(),
        hist: latency_histogram(),
        series: Recorder::new(started, bc.duration),
        ended: started,
    };
    let read_pct = bc.read_pct();
    let table = || DEFAULT_TABLE.to_string();
    while Instant::now() < deadline {
        let read_only = rng.random_range(0..100) < read_pct;
        let keys: Vec<u64> = match bc.workload {
            RemoteWorkload::Micro => {
                let mut ks = Vec::with_capacity(MICRO_KEYS);
                while ks.len() < MICRO_KEYS {
                    let k = dist.sample(&mut rng);
                    if !ks.contains(&k) {
                        ks.push(k);
                    }
                }
                ks
            }
            RemoteWorkload::YcsbA => vec![dist.sample(&mut rng)],
        };
        let ops: Vec<Operation> = keys
            .iter()
            .map(|&k| match (read_only, bc.workload) {
                (true, _) => Operation::Get {
                    table: table(),
                    key: bench_key(k),
                },
                (false, RemoteWorkload::Micro) => Operation::Add {
                    table: table(),
                    key: bench_key(k),
                    delta: 1,
                },
                (false, RemoteWorkload::YcsbA) => Operation::Put {
                    table: table(),
                    key: bench_key(k),
                    value: vec![b'u'; bc.value_size.max(1)],
                },
            })
            .collect();
        let shards: BTreeSet<u32> = keys
            .iter()
            .map(|&k| shard_of(cfg, DEFAULT_TABLE, &bench_key(k)))
            .collect();
        let t0 = Instant::now();
        let r = if bc.interactive {
            interactive(&mut client, ops)
        } else {
            client.run(ops).map(drop)
        };
        let now = Instant::now();
        match r {
            Ok(_) => {
                let lat = now - t0;
                w.released += 1;
                if shards.len() > 1 {
                    w.cross += 1;
                }
                let _ = w.hist.record((lat.as_micros() as u64).clamp(1, 60_000_000));
                w.series.released(now, lat);
                live.released.fetch_add(1, Ordering::Relaxed);
            }
            Err(ClientError::Aborted { reason, .. }) => {
                let name = abort_name(&reason);
                if let Some(r) = AbortReason::ALL.iter().find(|r| r.name() == name) {
                    w.series.aborted(now, *r);
                }
                *w.aborts.entry(name).or_insert(0) += 1;
                live.aborted.fetch_add(1, Ordering::Relaxed);
            }
            Err(ClientError::Unknown(why)) => {
                tracing::debug!("outcome unknown: {why}");
                w.unknown += 1;
                w.series.unknown(now);
                live.unknown.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!("request failed: {e}");
                *w.errors.entry(error_kind(&e)).or_insert(0) += 1;
            }
        }
        w.ended = now;
    }
    Ok(w)
}

/// Runs `ops` as one interactive transaction: a request per operation, then the commit.
fn interactive(client: &mut Client, ops: Vec<Operation>) -> Result<(), ClientError> {
    let mut t = client.begin();
    for op in ops {
        t.op(op)?;
    }
    t.commit()
}

/// The run's picture as SVG ([`crate::plot`]): released and aborted per 100 ms, release
/// latency p50/p99 per bucket and its distribution, titled with the remote run's conditions.
pub fn plot_svg(r: &RemoteBenchReport) -> Result<String, crate::plot::PlotError> {
    crate::plot::render(&crate::plot::remote_figure(r))
}
