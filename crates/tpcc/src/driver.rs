//! The benchmark driver: load, run terminals on worker threads for a duration, report per type.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use mako_txn::AbortReason;

use crate::backend::Backend;
use crate::config::{Mix, Scale, TpccConfig, TpccError};
use crate::db::Db;
use crate::endurance::{self, Endurance};
use crate::loader::LoadProgress;
use crate::mem::{MemoryFigures, rss_bytes};
use crate::payload::Payload;
use crate::series::{self, Bucket, Quantile};
use crate::terminal::Terminal;
use crate::txn::{TxnError, TxnInput, TxnKind};

/// Consecutive data errors on one transaction's inputs after which the run fails.
///
/// Under OCC an attempt may see another transaction's half-installed commit
/// (and then fail validation); a real schema violation repeats on every try.
const MAX_DATA_RETRIES: u32 = 100;

/// First pause before retrying a transaction that aborted for a reason other than a
/// conflict (no leader, failover, timeout): retrying at once would spin while the cause lasts.
const FIRST_PAUSE: Duration = Duration::from_micros(500);

/// Longest pause between such retries.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// A snapshot of the benchmark, for progress displays.
#[derive(Debug, Clone, Copy)]
pub enum TpccProgress {
    /// The load phase.
    Loading(LoadProgress),
    /// The measured phase.
    Running {
        /// Time since the measured phase started.
        elapsed: Duration,
        /// The measured phase's length.
        total: Duration,
        /// Committed transactions so far (all types).
        committed: u64,
        /// Aborted attempts so far (all types).
        aborted: u64,
        /// Committed NewOrders so far.
        new_orders: u64,
        /// Commits per second over the last interval.
        recent_tps: f64,
        /// Resident memory of this process now, bytes (`None` where not measured).
        rss_bytes: Option<u64>,
    },
}

/// Results for one transaction type.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TxnStats {
    /// The type.
    pub kind: TxnKind,
    /// Committed transactions.
    pub committed: u64,
    /// Aborted attempts, each retried with the same inputs: OCC conflicts, and reads of
    /// another transaction's half-installed commit that validation would have rejected.
    pub aborts: u64,
    /// Aborts as a percentage of attempts.
    pub abort_pct: f64,
    /// Transactions that rolled themselves back (NewOrder's unused item; 0 for other types).
    pub user_rollbacks: u64,
    /// Latency from the first attempt's start to the successful commit, 50th percentile, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, microseconds.
    pub p999_us: f64,
}

/// Results of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TpccReport {
    /// Warehouses.
    pub warehouses: u32,
    /// Worker threads.
    pub threads: usize,
    /// Population sizes.
    pub scale: Scale,
    /// Transaction mix.
    pub mix: Mix,
    /// Load phase, seconds.
    pub load_secs: f64,
    /// Rows loaded.
    pub rows_loaded: u64,
    /// Measured phase, seconds.
    pub secs: f64,
    /// Committed transactions, all types.
    pub committed: u64,
    /// Aborted attempts, all types.
    pub aborted: u64,
    /// Committed transactions per second, all types.
    pub txn_per_sec: f64,
    /// NewOrders completed per minute (tpmC): committed ones plus the spec's rollbacks.
    pub tpmc: f64,
    /// Per type, in [`TxnKind::ALL`] order.
    pub by_type: Vec<TxnStats>,
    /// Resident memory growth and payload per NewOrder over the measured phase.
    pub memory: MemoryFigures,
    /// First and last minute of the measured phase (`None` for runs shorter than a minute).
    pub endurance: Option<Endurance>,
    /// Width of a bucket of `series`, ms.
    pub bucket_ms: u64,
    /// Commits, aborts and (on a cluster) releases per bucket over the measured phase.
    pub series: Vec<Bucket>,
    /// Latency (first attempt's start to commit) of all types, p0 to p99.99.
    pub commit_latency: Vec<Quantile>,
}

impl TpccReport {
    /// The stats of one type.
    pub fn stats(&self, kind: TxnKind) -> Option<&TxnStats> {
        self.by_type.iter().find(|s| s.kind == kind)
    }
}

/// One worker's live counters, per type.
#[derive(Default)]
struct Counters {
    committed: [AtomicU64; 5],
    aborted: [AtomicU64; 5],
    rollbacks: [AtomicU64; 5],
}

/// A latency histogram in nanoseconds, 1 ns to 60 s, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant histogram bounds are valid")
}

/// Loads the database, runs the measured phase, and reports; `progress` is called a few times a second.
///
/// Aborted attempts are retried with the same inputs until they commit (or the
/// time is up); a transaction still retrying when time runs out is not counted.
pub fn run(
    cfg: &TpccConfig,
    mut progress: impl FnMut(TpccProgress),
) -> Result<TpccReport, TpccError> {
    cfg.validate_run()?;
    let load_started = Instant::now();
    let mut rows_loaded = 0;
    let db = Db::load(cfg, |p| {
        rows_loaded = p.rows;
        progress(TpccProgress::Loading(p));
    })?;
    let load_secs = load_started.elapsed().as_secs_f64();
    let mut report = run_on(&db, cfg, progress)?;
    report.load_secs = load_secs;
    report.rows_loaded = rows_loaded;
    Ok(report)
}

/// One worker thread's view of the backend, with hooks around commits (release tracking).
pub(crate) trait Worker: Send {
    /// The backend the five transactions run against.
    type B: Backend;
    /// The backend.
    fn backend(&self) -> &Self::B;
    /// Called after each committed transaction of type `kind` that started (first attempt) at
    /// `t0`; releases observed here go to `series`.
    fn committed(&mut self, _kind: TxnKind, _t0: Instant, _series: &mut series::Recorder) {}
    /// Called after a transaction aborted for a reason other than a conflict (no leader,
    /// failover, timeout), before it is tried again.
    fn aborted(&mut self, _reason: AbortReason) {}
    /// Called once when the measured phase is over; releases observed here go to `series`.
    fn finish(&mut self, _series: &mut series::Recorder) {}
}

/// The one-shard in-process worker: no hooks.
struct LocalWorker<'a>(&'a Db);

impl Worker for LocalWorker<'_> {
    type B = Db;
    fn backend(&self) -> &Db {
        self.0
    }
}

/// Runs the measured phase of `cfg` on an already loaded `db` (`load_secs` and `rows_loaded` are left 0).
pub fn run_on(
    db: &Db,
    cfg: &TpccConfig,
    progress: impl FnMut(TpccProgress),
) -> Result<TpccReport, TpccError> {
    cfg.validate_run()?;
    let workers = (0..cfg.threads)
        .map(|i| (LocalWorker(db), Terminal::new(db, cfg, i)))
        .collect();
    let (report, _) = run_workers(workers, cfg, db.warehouses(), db.scale(), progress)?;
    Ok(report)
}

/// Runs `workers` (each with its terminal) for `cfg.duration`; returns the report and the workers.
pub(crate) fn run_workers<W: Worker>(
    workers: Vec<(W, Terminal)>,
    cfg: &TpccConfig,
    warehouses: u32,
    scale: Scale,
    mut progress: impl FnMut(TpccProgress),
) -> Result<(TpccReport, Vec<W>), TpccError> {
    let counters: Vec<CachePadded<Counters>> = (0..workers.len())
        .map(|_| CachePadded::new(Counters::default()))
        .collect();
    let threads = workers.len();
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<TpccError>> = Mutex::new(None);

    let rss_after_load = rss_bytes();
    let total = cfg.duration;
    let (outs, secs, workers) = std::thread::scope(|s| {
        let started = Instant::now();
        let handles: Vec<_> = workers
            .into_iter()
            .zip(&counters)
            .map(|((mut w, term), c)| {
                let (stop, failure) = (&stop, &failure);
                s.spawn(move || {
                    let windows = endurance::Recorder::new(started, total);
                    let recorder = series::Recorder::new(started, total);
                    let mut r = worker(&mut w, term, c, stop, windows, recorder);
                    w.finish(&mut r.0.series);
                    if let Err(e) = &r.1 {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert_with(|| match e.clone() {
                                TxnError::Data(d) => TpccError::Data(d),
                                other => TpccError::Transaction(other),
                            });
                        }
                    }
                    (r.0, w)
                })
            })
            .collect();
        let sum = |f: &dyn Fn(&Counters) -> u64| counters.iter().map(|c| f(c)).sum::<u64>();
        let all = |a: &[AtomicU64; 5]| a.iter().map(|x| x.load(Ordering::Relaxed)).sum::<u64>();
        let mut last = (Instant::now(), 0u64);
        while !stop.load(Ordering::Relaxed) {
            let elapsed = started.elapsed();
            if elapsed >= total {
                break;
            }
            std::thread::sleep((total - elapsed).min(Duration::from_secs(1)));
            let committed = sum(&|c| all(&c.committed));
            let now = Instant::now();
            let recent_tps = (committed - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
            last = (now, committed);
            progress(TpccProgress::Running {
                elapsed: started.elapsed().min(total),
                total,
                committed,
                aborted: sum(&|c| all(&c.aborted)),
                new_orders: sum(&|c| c.committed[0].load(Ordering::Relaxed)),
                recent_tps,
                rss_bytes: rss_bytes(),
            });
        }
        stop.store(true, Ordering::Relaxed);
        let mut outs: Option<WorkerOut> =
            Some(WorkerOut::new(None, series::Recorder::new(started, total)));
        let mut done = Vec::with_capacity(threads);
        for h in handles {
            match (h.join(), &mut outs) {
                (Ok((out, w)), Some(acc)) => {
                    acc.merge(out);
                    done.push(w);
                }
                (Ok((_, w)), None) => done.push(w),
                (Err(_), _) => outs = None,
            }
        }
        let secs = started
            .elapsed()
            .as_secs_f64()
            .min(total.as_secs_f64().max(1e-9));
        (outs, secs, done)
    });
    let rss_at_end = rss_bytes();
    let Some(outs) = outs else {
        return Err(TpccError::WorkerPanicked);
    };
    let hists = &outs.hists;
    let mut all_types = new_histogram();
    for h in hists {
        let _ = all_types.add(h);
    }
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    let total = |f: fn(&Counters) -> &[AtomicU64; 5], k: usize| {
        counters
            .iter()
            .map(|c| f(c)[k].load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let by_type: Vec<TxnStats> = TxnKind::ALL
        .iter()
        .map(|&kind| {
            let k = kind.index();
            let committed = total(|c| &c.committed, k);
            let aborts = total(|c| &c.aborted, k);
            let h = &hists[k];
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            TxnStats {
                kind,
                committed,
                aborts,
                abort_pct: if committed + aborts == 0 {
                    0.0
                } else {
                    100.0 * aborts as f64 / (committed + aborts) as f64
                },
                user_rollbacks: total(|c| &c.rollbacks, k),
                p50_us: us(0.5),
                p99_us: us(0.99),
                p999_us: us(0.999),
            }
        })
        .collect();
    let committed: u64 = by_type.iter().map(|s| s.committed).sum();
    let aborted: u64 = by_type.iter().map(|s| s.aborts).sum();
    let new_orders = by_type[0].committed + by_type[0].user_rollbacks;
    let memory = MemoryFigures::new(
        rss_after_load,
        rss_at_end,
        by_type[0].committed,
        outs.payload,
    );
    let report = TpccReport {
        warehouses,
        threads,
        scale,
        mix: cfg.mix,
        load_secs: 0.0,
        rows_loaded: 0,
        secs,
        committed,
        aborted,
        txn_per_sec: committed as f64 / secs,
        tpmc: new_orders as f64 * 60.0 / secs,
        by_type,
        memory,
        endurance: outs.windows.as_ref().map(endurance::Recorder::endurance),
        bucket_ms: series::BUCKET.as_millis() as u64,
        series: outs.series.series(series::buckets_for(cfg.duration)),
        commit_latency: series::latency_curve(&all_types),
    };
    Ok((report, workers))
}

/// What one worker recorded: per-type latency, the payload of its commits, its endurance
/// windows and its per-100 ms series.
struct WorkerOut {
    hists: Vec<Histogram<u64>>,
    payload: Payload,
    windows: Option<endurance::Recorder>,
    series: series::Recorder,
}

impl WorkerOut {
    fn new(windows: Option<endurance::Recorder>, series: series::Recorder) -> Self {
        WorkerOut {
            hists: (0..5).map(|_| new_histogram()).collect(),
            payload: Payload::default(),
            windows,
            series,
        }
    }

    /// Adds another worker's records to these.
    fn merge(&mut self, o: WorkerOut) {
        for (acc, h) in self.hists.iter_mut().zip(&o.hists) {
            let _ = acc.add(h);
        }
        self.payload += o.payload;
        self.series.merge(o.series);
        match (&mut self.windows, o.windows) {
            (Some(mine), Some(theirs)) => mine.merge(&theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }
}

/// One worker: draw a type and inputs, retry until commit, record; returns what it recorded.
fn worker<W: Worker>(
    w: &mut W,
    mut term: Terminal,
    c: &Counters,
    stop: &AtomicBool,
    windows: Option<endurance::Recorder>,
    recorder: series::Recorder,
) -> (WorkerOut, Result<(), TxnError>) {
    let mut out = WorkerOut::new(windows, recorder);
    'txns: while !stop.load(Ordering::Relaxed) {
        let kind = term.next_kind();
        let input: TxnInput = term.next_input(kind);
        let k = kind.index();
        let t0 = Instant::now();
        let mut data_errors = 0;
        let mut pause = FIRST_PAUSE;
        loop {
            match input.execute_tallied(w.backend()) {
                Ok(payload) => {
                    let now = Instant::now();
                    let ns = now.saturating_duration_since(t0).as_nanos() as u64;
                    out.hists[k].saturating_record(ns.max(1));
                    out.payload += payload;
                    if let Some(win) = &mut out.windows {
                        win.committed(now, kind, ns);
                    }
                    out.series.committed(now, kind);
                    c.committed[k].fetch_add(1, Ordering::Relaxed);
                    w.committed(kind, t0, &mut out.series);
                    break;
                }
                Err(TxnError::Rollback) => {
                    c.rollbacks[k].fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(TxnError::Abort(a)) => {
                    c.aborted[k].fetch_add(1, Ordering::Relaxed);
                    out.series.aborted(Instant::now());
                    if a.reason != AbortReason::Conflict {
                        // A conflict clears as soon as the other writer is done; no leader
                        // or a failover lasts until an election ends.
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(MAX_PAUSE);
                        w.aborted(a.reason);
                    }
                }
                Err(TxnError::Data(e)) => {
                    c.aborted[k].fetch_add(1, Ordering::Relaxed);
                    out.series.aborted(Instant::now());
                    data_errors += 1;
                    if data_errors >= MAX_DATA_RETRIES {
                        return (out, Err(TxnError::Data(e)));
                    }
                    std::thread::yield_now();
                }
                Err(e @ (TxnError::InvalidInput(_) | TxnError::CrossShard { .. })) => {
                    return (out, Err(e));
                }
            }
            if stop.load(Ordering::Relaxed) {
                break 'txns;
            }
        }
    }
    (out, Ok(()))
}
