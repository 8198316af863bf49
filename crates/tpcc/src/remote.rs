//! TPC-C against a running deployment, from a client process over TCP: loads through the
//! [`LOAD`](crate::procedures::LOAD) procedure, then runs terminals whose transactions are
//! one [`TXN`](crate::procedures::TXN) call each, and reports released throughput and
//! client-observed release latency.
//!
//! Loading reuses the in-process loader's row generation (the same rows for the same seed):
//! each loader thread has its own client and ships the rows of each shard in batches of
//! [`LOAD_BATCH`] rows (at most [`LOAD_BATCH_BYTES`]), one transaction per call. A batch is
//! a set of puts, so one whose outcome was unknown is simply sent again.
//!
//! The measured phase runs `clients` threads, each with its own [`Client`] and a
//! [`Terminal`] whose home warehouse is `i % W + 1`; every call goes to the leader of the
//! home warehouse's shard, which coordinates it (remote order lines and remote-customer
//! payments reach the other shard from there). A retryable abort is retried with the same
//! inputs (and counted); an unknown outcome is counted and not retried (it may have applied).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use mako_client::{Client, ClientConfig, ClientError};
use mako_config::Config;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::backend::Tbl;
use crate::config::{Scale, ShardMap, TpccConfig, TpccError};
use crate::driver::TpccProgress;
use crate::loader::{LoadSink, populate, sub_seed};
use crate::procedures::{
    CHECK, CheckArgs, CheckReply, LOAD, LoadArgs, LoadRow, TXN, TxnArgs, TxnReply,
};
use crate::random::NuRandC;
use crate::series::{self, Bucket, Quantile};
use crate::terminal::Terminal;
use crate::txn::TxnKind;

/// Rows per load call (one transaction).
pub const LOAD_BATCH: usize = 1_000;
/// Bytes of keys and values per load call, at most (well under a log entry and a frame).
pub const LOAD_BATCH_BYTES: usize = 1 << 20;
/// Attempts of one load batch (retryable aborts and unknown outcomes are sent again).
const LOAD_ATTEMPTS: u32 = 20;

/// What to run against the deployment.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Warehouses `W`; they are spread over `min(W, shards)` shards of the deployment.
    pub warehouses: u32,
    /// Terminals (threads, one client each); terminal `i` has home warehouse `i % W + 1`.
    pub clients: usize,
    /// Length of the measured phase.
    pub duration: Duration,
    /// Population sizes ([`Scale::SPEC`] for the spec's; smaller ones load faster).
    pub scale: Scale,
    /// Load first (`false`: the deployment already holds a load of the same `W`, scale and seed).
    pub load: bool,
    /// Loader threads (one client each).
    pub load_threads: usize,
    /// Seed of the loader and the terminals.
    pub seed: u64,
    /// Check consistency conditions 1–4 on every shard leader after the run (over a procedure).
    pub check: bool,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            warehouses: 1,
            clients: 1,
            duration: Duration::from_secs(10),
            scale: Scale::SPEC,
            load: true,
            load_threads: 4,
            seed: 42,
            check: true,
        }
    }
}

/// Why a remote TPC-C run failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteTpccError {
    /// The parameters are invalid.
    #[error(transparent)]
    Tpcc(#[from] TpccError),
    /// The client could not be configured.
    #[error("client: {0}")]
    Client(#[from] ClientError),
    /// A load batch failed for good.
    #[error("loading shard {shard}: {error}")]
    Load {
        /// The shard.
        shard: usize,
        /// The last error.
        error: ClientError,
    },
    /// A transaction failed with an error that is neither an abort nor an unknown outcome.
    #[error("{kind:?} transaction failed: {error}")]
    Txn {
        /// The transaction type.
        kind: TxnKind,
        /// The error.
        error: ClientError,
    },
    /// A reply did not decode.
    #[error("malformed reply of {0}: {1}")]
    Reply(&'static str, postcard::Error),
    /// Arguments did not encode.
    #[error("encoding arguments: {0}")]
    Encode(postcard::Error),
    /// A terminal thread panicked.
    #[error("a terminal thread panicked")]
    Panicked,
}

/// Figures of one transaction type.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemoteTxnStats {
    /// The type.
    pub kind: TxnKind,
    /// Committed and released in the measured phase.
    pub released: u64,
    /// Aborted attempts (retried with the same inputs while time remained).
    pub aborts: u64,
    /// Aborts, percent of attempts.
    pub abort_pct: f64,
    /// NewOrder's spec-mandated rollbacks.
    pub rollbacks: u64,
    /// Outcomes unknown (not retried).
    pub unknown: u64,
    /// Client-observed release latency (first attempt sent to released reply), p50 µs.
    pub p50_us: f64,
    /// p99 µs.
    pub p99_us: f64,
}

/// A shard leader's consistency check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemoteCheck {
    /// The shard.
    pub shard: usize,
    /// What was checked, if conditions 1–4 hold.
    pub report: Option<crate::ConsistencyReport>,
    /// The violations found (empty if they hold).
    pub violations: Vec<String>,
}

/// Results of a remote run, with the conditions they were measured under.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemoteTpccReport {
    /// The deployment's durability mode (`memory`, `buffered`, `fsync`).
    pub durability: String,
    /// The deployment's shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// Shards holding warehouses (`min(W, shards)`).
    pub shards_used: usize,
    /// Warehouses.
    pub warehouses: u32,
    /// Terminals (client threads).
    pub clients: usize,
    /// Population sizes.
    pub scale: Scale,
    /// Load phase, seconds (0 if not loaded).
    pub load_secs: f64,
    /// Rows loaded.
    pub rows_loaded: u64,
    /// Measured phase, seconds.
    pub secs: f64,
    /// Transactions committed and released in the measured phase, all types.
    pub released: u64,
    /// Released transactions per second.
    pub released_per_sec: f64,
    /// NewOrders completed per minute (released plus rollbacks).
    pub tpmc: f64,
    /// Aborted attempts, all types.
    pub aborted: u64,
    /// Aborted attempts by reason.
    pub aborts_by_reason: BTreeMap<String, u64>,
    /// Unknown outcomes, all types.
    pub unknown: u64,
    /// Released transactions that touched more than one shard.
    pub distributed: u64,
    /// Distributed transactions, percent of released ones.
    pub distributed_pct: f64,
    /// Client-observed release latency over all types, p50 µs.
    pub release_p50_us: f64,
    /// p99 µs.
    pub release_p99_us: f64,
    /// p99.9 µs.
    pub release_p999_us: f64,
    /// Per type, in [`TxnKind::ALL`] order.
    pub by_type: Vec<RemoteTxnStats>,
    /// Consistency conditions 1–4 on each shard leader (empty if not asked for).
    pub checks: Vec<RemoteCheck>,
    /// Width of a bucket of `series`, ms.
    pub bucket_ms: u64,
    /// Released (the client saw the commit: `committed` = `released`), aborted attempts and
    /// release latency per bucket.
    pub series: Vec<Bucket>,
    /// Client-observed release latency of all types, p0 to p99.99.
    pub release_latency: Vec<Quantile>,
}

impl RemoteTpccReport {
    /// The stats of one type.
    pub fn stats(&self, kind: TxnKind) -> Option<&RemoteTxnStats> {
        self.by_type.iter().find(|s| s.kind == kind)
    }

    /// Whether every check ran clean.
    pub fn consistent(&self) -> bool {
        self.checks.iter().all(|c| c.violations.is_empty())
    }
}

impl std::fmt::Display for RemoteTpccReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "TPC-C over TCP: {} shard(s) x {} replica(s), durability {}, {} warehouse(s) on {} shard(s), {} client(s), {:.1} s",
            self.shards,
            self.replicas,
            self.durability,
            self.warehouses,
            self.shards_used,
            self.clients,
            self.secs
        )?;
        writeln!(
            f,
            "  released {:.0} txn/s, tpmC {:.0}, release p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us ({})",
            self.released_per_sec,
            self.tpmc,
            self.release_p50_us,
            self.release_p99_us,
            self.release_p999_us,
            self.durability
        )?;
        writeln!(
            f,
            "  released {}, aborted attempts {}, unknown {}, cross-shard {:.1}%",
            self.released, self.aborted, self.unknown, self.distributed_pct
        )?;
        for s in &self.by_type {
            writeln!(
                f,
                "  {:<12} released {:>8}  aborts {:>6} ({:.1}%)  rollbacks {:>4}  unknown {:>3}  p50 {:>8.0} us  p99 {:>8.0} us",
                s.kind.name(),
                s.released,
                s.aborts,
                s.abort_pct,
                s.rollbacks,
                s.unknown,
                s.p50_us,
                s.p99_us
            )?;
        }
        for c in &self.checks {
            if c.violations.is_empty() {
                writeln!(f, "  shard {}: consistency conditions 1-4 hold", c.shard)?;
            } else {
                writeln!(f, "  shard {}: VIOLATIONS {:?}", c.shard, c.violations)?;
            }
        }
        Ok(())
    }
}

/// Loads (if asked), runs the terminals for `opts.duration`, checks (if asked) and reports.
///
/// `progress` sees the load ([`TpccProgress::Loading`]) and, about once a second, the
/// measured phase ([`TpccProgress::Running`]).
pub fn run_remote(
    cfg: &Arc<Config>,
    opts: &RemoteOptions,
    mut progress: impl FnMut(TpccProgress),
) -> Result<RemoteTpccReport, RemoteTpccError> {
    let shards_used = (cfg.shards() as usize).min(opts.warehouses.max(1) as usize);
    let tc = TpccConfig {
        warehouses: opts.warehouses,
        threads: opts.load_threads.max(1),
        duration: opts.duration,
        scale: opts.scale,
        shards: shards_used,
        seed: opts.seed,
        ..TpccConfig::default()
    };
    tc.validate()?;
    if opts.duration.is_zero() || opts.clients == 0 {
        return Err(TpccError::Invalid {
            name: if opts.clients == 0 {
                "clients"
            } else {
                "duration"
            },
            reason: "must be positive",
        }
        .into());
    }
    let map = ShardMap::new(opts.warehouses, shards_used)?;
    let mut ccfg = ClientConfig::from_config(cfg)?;
    ccfg.attempts = 1;

    let load_started = Instant::now();
    let mut rows_loaded = 0;
    let c_load = if opts.load {
        let failure: Mutex<Option<RemoteTpccError>> = Mutex::new(None);
        let r = populate(
            &tc,
            &map,
            |_| RemoteSink::new(Client::new(ccfg.clone()), map.shards(), &failure),
            |p| {
                rows_loaded = p.rows;
                progress(TpccProgress::Loading(p));
            },
        );
        if let Some(e) = failure.into_inner().ok().flatten() {
            return Err(e);
        }
        r?
    } else {
        NuRandC::for_load(&mut SmallRng::seed_from_u64(sub_seed(opts.seed, 0)))
    };
    let load_secs = if opts.load {
        load_started.elapsed().as_secs_f64()
    } else {
        0.0
    };

    let run = measure(&ccfg, &tc, &map, opts, c_load, &mut progress)?;

    let mut checks = Vec::new();
    if opts.check {
        let mut client = Client::new(ccfg.clone());
        let args = postcard::to_stdvec(&CheckArgs {
            warehouses: opts.warehouses,
            shards: shards_used as u32,
        })
        .map_err(RemoteTpccError::Encode)?;
        for shard in 0..shards_used {
            let bytes = client.call(shard as u32, CHECK, &args)?;
            let reply: CheckReply =
                postcard::from_bytes(&bytes).map_err(|e| RemoteTpccError::Reply(CHECK, e))?;
            checks.push(match reply {
                CheckReply::Consistent(r) => RemoteCheck {
                    shard,
                    report: Some(r),
                    violations: Vec::new(),
                },
                CheckReply::Violations(v) => RemoteCheck {
                    shard,
                    report: None,
                    violations: v,
                },
            });
        }
    }

    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let mut all = new_hist();
    let by_type: Vec<RemoteTxnStats> = TxnKind::ALL
        .iter()
        .map(|&kind| {
            let k = kind.index();
            let h = &run.hists[k];
            let _ = all.add(h);
            let (released, aborts) = (run.totals.released[k], run.totals.aborts[k]);
            RemoteTxnStats {
                kind,
                released,
                aborts,
                abort_pct: pct(aborts, released + aborts),
                rollbacks: run.totals.rollbacks[k],
                unknown: run.totals.unknown[k],
                p50_us: q(h, 0.5),
                p99_us: q(h, 0.99),
            }
        })
        .collect();
    let released: u64 = run.totals.released.iter().sum();
    let secs = run.secs.max(1e-9);
    let new_orders = run.totals.released[0] + run.totals.rollbacks[0];
    Ok(RemoteTpccReport {
        durability: cfg.durability.to_string(),
        shards: cfg.shards(),
        replicas: cfg.replicas(),
        shards_used,
        warehouses: opts.warehouses,
        clients: opts.clients,
        scale: opts.scale,
        load_secs,
        rows_loaded,
        secs: run.secs,
        released,
        released_per_sec: released as f64 / secs,
        tpmc: new_orders as f64 * 60.0 / secs,
        aborted: run.totals.aborts.iter().sum(),
        aborts_by_reason: run.totals.reasons,
        unknown: run.totals.unknown.iter().sum(),
        distributed: run.totals.distributed,
        distributed_pct: pct(run.totals.distributed, released),
        release_p50_us: q(&all, 0.5),
        release_p99_us: q(&all, 0.99),
        release_p999_us: q(&all, 0.999),
        by_type,
        checks,
        bucket_ms: series::BUCKET.as_millis() as u64,
        series: run.series.series(series::buckets_for(opts.duration)),
        release_latency: series::latency_curve(&all),
    })
}

/// `part` as a percentage of `whole` (0 for an empty whole).
fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// A latency histogram in nanoseconds, 1 ns to 10 minutes.
fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("constant histogram bounds are valid")
}

/// Ships loader rows to the shard leaders in batches, through [`LOAD`].
struct RemoteSink<'f> {
    client: Client,
    batches: Vec<(Vec<LoadRow>, usize)>,
    failure: &'f Mutex<Option<RemoteTpccError>>,
    failed: bool,
}

impl<'f> RemoteSink<'f> {
    fn new(client: Client, shards: usize, failure: &'f Mutex<Option<RemoteTpccError>>) -> Self {
        RemoteSink {
            client,
            batches: (0..shards).map(|_| (Vec::new(), 0)).collect(),
            failure,
            failed: false,
        }
    }

    fn fail(&mut self, e: RemoteTpccError) {
        self.failed = true;
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(e);
        }
    }

    /// Sends shard `shard`'s batch, again after retryable aborts and unknown outcomes.
    fn send(&mut self, shard: usize) {
        let Some((rows, bytes)) = self.batches.get_mut(shard) else {
            return;
        };
        if rows.is_empty() {
            return;
        }
        let rows = std::mem::take(rows);
        *bytes = 0;
        let args = match postcard::to_stdvec(&LoadArgs { rows }) {
            Ok(a) => a,
            Err(e) => return self.fail(RemoteTpccError::Encode(e)),
        };
        let mut attempt = 1;
        loop {
            match self.client.call(shard as u32, LOAD, &args) {
                Ok(_) => return,
                Err(e)
                    if (e.is_retryable() || matches!(e, ClientError::Unknown(_)))
                        && attempt < LOAD_ATTEMPTS =>
                {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(10u64 << attempt.min(6)));
                }
                Err(error) => return self.fail(RemoteTpccError::Load { shard, error }),
            }
        }
    }
}

impl LoadSink for RemoteSink<'_> {
    fn put(&mut self, shard: usize, t: Tbl, key: &[u8], value: Bytes) {
        if self.failed {
            return;
        }
        let Some((rows, bytes)) = self.batches.get_mut(shard) else {
            return;
        };
        *bytes += key.len() + value.len();
        rows.push(LoadRow {
            table: t.index() as u8,
            key: key.to_vec(),
            value: value.to_vec(),
        });
        if rows.len() >= LOAD_BATCH || *bytes >= LOAD_BATCH_BYTES {
            self.send(shard);
        }
    }

    fn finish(&mut self) -> Result<(), TpccError> {
        for s in 0..self.batches.len() {
            if !self.failed {
                self.send(s);
            }
        }
        if self.failed {
            // The error itself is in `failure`; `run_remote` reports it.
            return Err(TpccError::Invalid {
                name: "load",
                reason: "a load batch failed",
            });
        }
        Ok(())
    }
}

/// Live counters of one terminal.
#[derive(Default)]
struct Live {
    released: AtomicU64,
    aborted: AtomicU64,
    new_orders: AtomicU64,
}

/// Final counts, per type in [`TxnKind::ALL`] order.
#[derive(Default)]
struct Totals {
    released: [u64; 5],
    aborts: [u64; 5],
    rollbacks: [u64; 5],
    unknown: [u64; 5],
    distributed: u64,
    reasons: BTreeMap<String, u64>,
}

impl Totals {
    fn add(&mut self, o: Totals) {
        for k in 0..5 {
            self.released[k] += o.released[k];
            self.aborts[k] += o.aborts[k];
            self.rollbacks[k] += o.rollbacks[k];
            self.unknown[k] += o.unknown[k];
        }
        self.distributed += o.distributed;
        for (r, n) in o.reasons {
            *self.reasons.entry(r).or_default() += n;
        }
    }
}

/// The measured phase's results.
struct Run {
    totals: Totals,
    hists: Vec<Histogram<u64>>,
    series: series::Recorder,
    secs: f64,
}

/// A unique-enough history-key origin base for this run's terminals (origin 0 is the
/// loader's), so that runs against the same load do not overwrite each other's history rows.
fn origin_base(clients: usize) -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let span = u64::from(u32::MAX) - clients as u64 - 1;
    (sub_seed(nanos, 1) % span.max(1)) as u32 + 1
}

/// Runs `opts.clients` terminals for `opts.duration`.
fn measure(
    ccfg: &ClientConfig,
    tc: &TpccConfig,
    map: &ShardMap,
    opts: &RemoteOptions,
    c_load: NuRandC,
    progress: &mut impl FnMut(TpccProgress),
) -> Result<Run, RemoteTpccError> {
    let live: Vec<CachePadded<Live>> = (0..opts.clients)
        .map(|_| CachePadded::new(Live::default()))
        .collect();
    let stop = AtomicBool::new(false);
    let base = origin_base(opts.clients);
    let started = Instant::now();
    let deadline = started + opts.duration;
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..opts.clients)
            .map(|i| {
                let term = Terminal::build(
                    opts.warehouses,
                    opts.scale,
                    c_load,
                    base.wrapping_add(i as u32),
                    tc,
                    i,
                );
                let (live, stop) = (&*live[i], &stop);
                let client = Client::new(ccfg.clone());
                let rec = series::Recorder::new(started, opts.duration);
                s.spawn(move || terminal(client, term, map, live, stop, deadline, rec))
            })
            .collect();
        let total = opts.duration;
        let sum = |f: &dyn Fn(&Live) -> u64| live.iter().map(|l| f(l)).sum::<u64>();
        let mut last = (Instant::now(), 0u64);
        while !stop.load(Ordering::Relaxed) {
            let elapsed = started.elapsed();
            if elapsed >= total {
                break;
            }
            std::thread::sleep((total - elapsed).min(Duration::from_secs(1)));
            let committed = sum(&|l| l.released.load(Ordering::Relaxed));
            let now = Instant::now();
            let recent_tps = (committed - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
            last = (now, committed);
            progress(TpccProgress::Running {
                elapsed: started.elapsed().min(total),
                total,
                committed,
                aborted: sum(&|l| l.aborted.load(Ordering::Relaxed)),
                new_orders: sum(&|l| l.new_orders.load(Ordering::Relaxed)),
                recent_tps,
                // The servers hold the data; this client's memory says nothing about them.
                rss_bytes: None,
            });
        }
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    let secs = opts.duration.as_secs_f64();
    let mut totals = Totals::default();
    let mut hists: Vec<Histogram<u64>> = (0..5).map(|_| new_hist()).collect();
    let mut all_series = series::Recorder::new(started, opts.duration);
    let mut first_error = None;
    for r in results {
        let (t, hs, rec, err) = r.map_err(|_| RemoteTpccError::Panicked)?;
        totals.add(t);
        all_series.merge(rec);
        for (acc, h) in hists.iter_mut().zip(&hs) {
            let _ = acc.add(h);
        }
        if first_error.is_none() {
            first_error = err;
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(Run {
        totals,
        hists,
        series: all_series,
        secs,
    })
}

/// One terminal: draws transactions and calls them on its home shard's leader until `stop`.
/// Completions after `deadline` are not counted as released (outside the measured window);
/// unknown outcomes always are.
fn terminal(
    mut client: Client,
    mut term: Terminal,
    map: &ShardMap,
    live: &Live,
    stop: &AtomicBool,
    deadline: Instant,
    mut rec: series::Recorder,
) -> Outcome {
    let mut t = Totals::default();
    let mut hists: Vec<Histogram<u64>> = (0..5).map(|_| new_hist()).collect();
    let shard = map.shard_of(term.home()) as u32;
    let fail = |t: Totals, hists, rec, e| {
        stop.store(true, Ordering::Relaxed);
        (t, hists, rec, Some(e))
    };
    'txns: while !stop.load(Ordering::Relaxed) {
        let kind = term.next_kind();
        let k = kind.index();
        let args = TxnArgs {
            warehouses: map.warehouses(),
            shards: map.shards() as u32,
            input: term.next_input(kind),
        };
        let args = match postcard::to_stdvec(&args) {
            Ok(a) => a,
            Err(e) => return fail(t, hists, rec, RemoteTpccError::Encode(e)),
        };
        let t0 = Instant::now();
        loop {
            match client.call(shard, TXN, &args) {
                Ok(bytes) => {
                    let reply: TxnReply = match postcard::from_bytes(&bytes) {
                        Ok(r) => r,
                        Err(e) => return fail(t, hists, rec, RemoteTpccError::Reply(TXN, e)),
                    };
                    if Instant::now() > deadline {
                        break 'txns;
                    }
                    match reply {
                        TxnReply::Committed { distributed } => {
                            let now = Instant::now();
                            let latency = now.saturating_duration_since(t0);
                            let ns = (latency.as_nanos() as u64).max(1);
                            hists[k].saturating_record(ns);
                            rec.committed(now, kind);
                            rec.released(now, latency);
                            t.released[k] += 1;
                            t.distributed += u64::from(distributed);
                            live.released.fetch_add(1, Ordering::Relaxed);
                            if kind == TxnKind::NewOrder {
                                live.new_orders.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        TxnReply::RolledBack => {
                            t.rollbacks[k] += 1;
                            if kind == TxnKind::NewOrder {
                                live.new_orders.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    break;
                }
                Err(ClientError::Aborted { reason, retryable }) => {
                    t.aborts[k] += 1;
                    live.aborted.fetch_add(1, Ordering::Relaxed);
                    rec.aborted(Instant::now());
                    let conflict = reason == "conflict";
                    *t.reasons.entry(reason).or_default() += 1;
                    if !retryable {
                        break;
                    }
                    if stop.load(Ordering::Relaxed) {
                        break 'txns;
                    }
                    if !conflict {
                        // Failover or a leader change: give the cluster a moment.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                Err(ClientError::Unknown(_)) => {
                    t.unknown[k] += 1;
                    break;
                }
                Err(error) => return fail(t, hists, rec, RemoteTpccError::Txn { kind, error }),
            }
        }
    }
    (t, hists, rec, None)
}

/// What one terminal hands back: its counts, latency per type, series, and its error if any.
type Outcome = (
    Totals,
    Vec<Histogram<u64>>,
    series::Recorder,
    Option<RemoteTpccError>,
);
