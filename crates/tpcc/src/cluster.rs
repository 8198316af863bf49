//! TPC-C on a replicated in-process cluster: `S` shards × `R` Raft replicas (`mako-server`).
//!
//! Warehouses are spread over shards by the [`ShardMap`]; every shard holds
//! `item`. [`run_cluster`] starts the cluster, loads each shard through
//! transactions on its leader (1,000 rows each, so followers receive the data
//! through the log), and runs one terminal per worker thread coordinated on
//! its home warehouse's shard leader. A transaction that touches a warehouse
//! on another shard (remote order lines, remote-customer payments) becomes a
//! distributed transaction (speculative 2PC). Commits are speculative; each
//! worker tracks release (`VT <= VW`) between transactions. After the run,
//! every follower's store is compared with its leader's and consistency
//! conditions 1–4 are checked on every replica.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use mako_server::{Cluster, ClusterConfig, DistTxn, ReleaseError, Site, SiteConfig, Speculative};
use mako_storage::Key;
use mako_txn::{Abort, AbortReason, CommitInfo};

use crate::backend::{Backend, KeyRange, Tbl, TxnOps};
use crate::config::{DISTRICTS, ShardMap, TpccConfig, TpccError};
use crate::consistency::{ConsistencyReport, check_consistency};
use crate::driver::{TpccProgress, TpccReport, Worker, run_workers};
use crate::loader::{LoadSink, populate};
use crate::random::NuRandC;
use crate::schema::TABLE_NAMES;
use crate::series::{self, Quantile};
use crate::terminal::Terminal;
use crate::txn::{TxnError, TxnKind};

/// Rows per load transaction.
const LOAD_BATCH: usize = 1_000;
/// How long loading, release at the end of the run, and follower catch-up may take.
const SETTLE: Duration = Duration::from_secs(60);

/// How long a worker whose window is full waits for its oldest commit before it goes on.
const WINDOW_WAIT: Duration = Duration::from_secs(2);

/// Why a cluster run failed (beyond the errors of a local run).
#[derive(Debug, thiserror::Error)]
pub enum ClusterTpccError {
    /// The cluster did not start.
    #[error("starting the cluster: {0}")]
    Start(#[from] mako_server::cluster::ClusterError),
    /// A load transaction aborted.
    #[error("load transaction on shard {shard} aborted: {abort}")]
    Load {
        /// Shard.
        shard: usize,
        /// Why.
        abort: Abort,
    },
    /// Loaded data was not released in time.
    #[error("shard {0}: loaded data not released within {SETTLE:?}")]
    LoadNotReleased(usize),
    /// The parameters do not fit a cluster run.
    #[error("invalid cluster parameter `{name}`: {reason}")]
    Invalid {
        /// Parameter.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Consistency of one replica after the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaCheck {
    /// Shard.
    pub shard: usize,
    /// Replica (0 = leader).
    pub replica: usize,
    /// What was checked, if conditions 1–4 hold.
    pub report: Option<ConsistencyReport>,
    /// The violations found (empty if they hold).
    pub violations: Vec<String>,
}

/// Results of a cluster run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterTpccReport {
    /// Shards.
    pub shards: usize,
    /// Replicas per shard.
    pub replicas: u32,
    /// Durability of every replica's log (`memory`, `buffered`, `fsync`).
    pub durability: String,
    /// The TPC-C figures; latencies are begin-to-speculative-commit, and the series counts
    /// speculative commits and observed releases per bucket.
    pub tpcc: TpccReport,
    /// Committed transactions that spanned more than one shard.
    pub distributed: u64,
    /// Distributed transactions, percent of commits.
    pub distributed_pct: f64,
    /// Release latency (first attempt's begin to `VT <= VW` observed), p50 µs.
    pub release_p50_us: f64,
    /// Release latency p99 µs.
    pub release_p99_us: f64,
    /// Release latency p99.9 µs.
    pub release_p999_us: f64,
    /// Follower replay lag p99 µs (time queued before replay; 0 for batches replayed on arrival).
    pub replay_lag_p99_us: f64,
    /// Release latency per transaction type, in [`TxnKind::ALL`] order.
    pub release_by_type: Vec<ReleaseStats>,
    /// Release latency of all types, p0 to p99.99.
    pub release_latency: Vec<Quantile>,
    /// Commits still unreleased when the measured phase ended.
    pub unreleased_at_end: u64,
    /// Unreleased commits a worker kept at most ([`TpccConfig::window`]; 0: no bound).
    pub window: usize,
    /// The most commits one worker had unreleased at once (at most the window with one,
    /// unless its oldest commit stayed unreleased for 2 s).
    pub max_unreleased: usize,
    /// Commits that were never released (timed out after the run).
    pub never_released: u64,
    /// Whether every follower's store equals its leader's after the run.
    pub replicas_identical: bool,
    /// The first difference between a follower and its leader, if any.
    pub difference: Option<String>,
    /// Conditions 1–4 on every replica.
    pub checks: Vec<ReplicaCheck>,
}

impl ClusterTpccReport {
    /// Whether the replicas are identical and conditions 1–4 hold on every one.
    pub fn consistent(&self) -> bool {
        self.replicas_identical && self.checks.iter().all(|c| c.violations.is_empty())
    }
}

/// Shared state of a TPC-C database on a cluster: the shard map and the Delivery hints.
struct ClusterDb {
    map: ShardMap,
    delivery_hints: Vec<AtomicU32>,
}

/// One terminal's backend: its home shard's leader and its worker (stream) there.
struct ClusterBackend<'c> {
    db: &'c ClusterDb,
    site: &'c Site,
    worker: u32,
    /// The last commit, for release tracking.
    last: Cell<Option<(Speculative, bool)>>,
}

/// How a [`DistOps`] transaction ends.
pub(crate) trait Finish {
    /// Commits `tx`.
    fn finish(self, tx: DistTxn<'_>) -> Result<(), TxnError>;
}

/// A distributed transaction addressed by warehouse: each operation goes to the shard of its
/// warehouse (the [`ShardMap`]) and to the site's index of its table (`idx`).
pub(crate) struct DistOps<'a, F> {
    /// `None` if the transaction could not begin (then every operation fails).
    pub(crate) tx: Option<DistTxn<'a>>,
    pub(crate) map: &'a ShardMap,
    pub(crate) idx: &'a [usize; TABLE_NAMES.len()],
    pub(crate) finish: F,
}

/// The error of an operation on a transaction that could not begin.
pub(crate) const NO_WORKER: TxnError = TxnError::InvalidInput("coordinator worker out of range");

/// Table indexes of a site whose tables are TPC-C's, in TPC-C's order.
pub(crate) const OWN_ORDER: [usize; TABLE_NAMES.len()] = {
    let mut idx = [0; TABLE_NAMES.len()];
    let mut i = 0;
    while i < idx.len() {
        idx[i] = i;
        i += 1;
    }
    idx
};

impl<'a, F> DistOps<'a, F> {
    /// The transaction, the shard of warehouse `w` and the site's index of table `t`.
    fn at(&mut self, w: u32, t: Tbl) -> Result<(&mut DistTxn<'a>, u32, usize), TxnError> {
        let s = self.map.shard_of(w) as u32;
        let i = self.idx[t.index()];
        Ok((self.tx.as_mut().ok_or(NO_WORKER)?, s, i))
    }
}

impl<F: Finish> TxnOps for DistOps<'_, F> {
    fn get(&mut self, w: u32, t: Tbl, key: &[u8]) -> Result<Option<Bytes>, TxnError> {
        let (tx, s, i) = self.at(w, t)?;
        Ok(tx.get(s, i, key)?)
    }

    fn put(&mut self, w: u32, t: Tbl, key: &[u8], value: Bytes) -> Result<(), TxnError> {
        let (tx, s, i) = self.at(w, t)?;
        Ok(tx.put(s, i, key, value)?)
    }

    fn delete(&mut self, w: u32, t: Tbl, key: &[u8]) -> Result<(), TxnError> {
        let (tx, s, i) = self.at(w, t)?;
        Ok(tx.write(s, i, key, None)?)
    }

    fn scan(
        &mut self,
        w: u32,
        t: Tbl,
        range: KeyRange<'_>,
        limit: usize,
    ) -> Result<Vec<(Key, Bytes)>, TxnError> {
        let (tx, s, i) = self.at(w, t)?;
        Ok(tx.scan(s, i, range, limit)?)
    }

    fn rscan(
        &mut self,
        w: u32,
        t: Tbl,
        range: KeyRange<'_>,
        limit: usize,
    ) -> Result<Vec<(Key, Bytes)>, TxnError> {
        let (tx, s, i) = self.at(w, t)?;
        Ok(tx.rscan(s, i, range, limit)?)
    }

    fn commit(self) -> Result<(), TxnError> {
        let tx = self.tx.ok_or(NO_WORKER)?;
        self.finish.finish(tx)
    }
}

/// The in-process driver's commit: speculative; the terminal tracks release.
struct Speculate<'c>(&'c Cell<Option<(Speculative, bool)>>);

impl Finish for Speculate<'_> {
    fn finish(self, tx: DistTxn<'_>) -> Result<(), TxnError> {
        let distributed = tx.is_distributed();
        let spec = tx.commit_speculative()?;
        self.0.set(Some((spec, distributed)));
        Ok(())
    }
}

/// A distributed transaction of the in-process driver.
type ClusterTxn<'c> = DistOps<'c, Speculate<'c>>;

impl Backend for ClusterBackend<'_> {
    type Txn<'a>
        = ClusterTxn<'a>
    where
        Self: 'a;

    fn warehouses(&self) -> u32 {
        self.db.map.warehouses()
    }

    fn reachable(&self, _home: u32, _other: u32) -> Result<(), TxnError> {
        Ok(())
    }

    fn delivery_hint(&self, w: u32, d: u8) -> Option<&AtomicU32> {
        let i = (w as usize).checked_sub(1)? * usize::from(DISTRICTS)
            + usize::from(d).checked_sub(1)?;
        self.db.delivery_hints.get(i)
    }

    fn begin(&self, _home: u32) -> ClusterTxn<'_> {
        DistOps {
            tx: self.site.begin(self.worker).ok(),
            map: &self.db.map,
            idx: &OWN_ORDER,
            finish: Speculate(&self.last),
        }
    }
}

/// Release latency of one transaction type (first attempt's begin to `VT <= VW` observed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReleaseStats {
    /// The transaction type.
    pub kind: TxnKind,
    /// p50, microseconds.
    pub p50_us: f64,
    /// p99, microseconds.
    pub p99_us: f64,
    /// p99.9, microseconds.
    pub p999_us: f64,
}

/// A worker thread on the cluster: tracks release of its speculative commits between transactions.
struct ClusterWorker<'c> {
    backend: ClusterBackend<'c>,
    /// Where the worker's shard leader is looked up again after a leader change.
    cluster: &'c Cluster,
    /// The worker's home shard.
    shard: u32,
    pending: VecDeque<(Instant, TxnKind, Speculative)>,
    /// Commits set aside from `pending` after [`WINDOW_WAIT`] unreleased (they no longer count
    /// against the window; each is recorded once released, or at the end).
    stale: Vec<(Instant, TxnKind, Speculative)>,
    release: Histogram<u64>,
    /// Release latency per transaction type, in [`TxnKind::ALL`] order.
    release_by: Vec<Histogram<u64>>,
    distributed: u64,
    unreleased_at_end: u64,
    never_released: u64,
    /// Unreleased commits kept at most ([`TpccConfig::window`]).
    window: usize,
    /// The most commits unreleased at once.
    max_unreleased: usize,
}

impl ClusterWorker<'_> {
    /// Records the releases observed now, oldest first (until the first unreleased commit),
    /// and those of commits set aside.
    fn settle(&mut self, series: &mut series::Recorder) {
        if !self.stale.is_empty() {
            for (t0, kind, s) in std::mem::take(&mut self.stale) {
                if s.is_released() {
                    self.record(t0, kind, series);
                } else {
                    self.stale.push((t0, kind, s));
                }
            }
        }
        while self
            .pending
            .front()
            .is_some_and(|(_, _, s)| s.is_released())
        {
            if let Some((t0, kind, _)) = self.pending.pop_front() {
                self.record(t0, kind, series);
            }
        }
    }

    /// Waits while `window` (0: no bound) or more commits are unreleased, for the oldest to be
    /// released; one still unreleased [`WINDOW_WAIT`] after it began (say, left at a leader
    /// that lost its shard) is set aside and no longer counts, and one a failover discarded
    /// leaves the window counted as never released.
    fn make_room(&mut self, series: &mut series::Recorder) {
        while self.window > 0 && self.pending.len() >= self.window {
            let Some((t0, _, s)) = self.pending.front() else {
                break;
            };
            let left = (*t0 + WINDOW_WAIT).saturating_duration_since(Instant::now());
            match s.wait_release(left) {
                Ok(()) => self.settle(series),
                Err(ReleaseError::Aborted(_)) => {
                    self.pending.pop_front();
                    self.never_released += 1;
                }
                Err(ReleaseError::Pending(_)) => {
                    if let Some(p) = self.pending.pop_front() {
                        self.stale.push(p);
                    }
                    self.settle(series);
                }
            }
        }
    }

    fn record(&mut self, t0: Instant, kind: TxnKind, series: &mut series::Recorder) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(t0);
        let ns = (latency.as_nanos() as u64).max(1);
        self.release.saturating_record(ns);
        self.release_by[kind.index()].saturating_record(ns);
        series.released(now, latency);
    }
}

impl<'c> Worker for ClusterWorker<'c> {
    type B = ClusterBackend<'c>;

    fn backend(&self) -> &ClusterBackend<'c> {
        &self.backend
    }

    fn committed(&mut self, kind: TxnKind, t0: Instant, series: &mut series::Recorder) {
        if let Some((spec, distributed)) = self.backend.last.take() {
            self.distributed += u64::from(distributed);
            self.pending.push_back((t0, kind, spec));
            self.max_unreleased = self.max_unreleased.max(self.pending.len());
        }
        self.settle(series);
        self.make_room(series);
    }

    fn aborted(&mut self, _reason: AbortReason) {
        // The shard may have a new leader (an election on a busy machine): run there.
        self.backend.site = self.cluster.leader(self.shard);
    }

    fn finish(&mut self, series: &mut series::Recorder) {
        self.settle(series);
        self.unreleased_at_end = (self.pending.len() + self.stale.len()) as u64;
        let mut pending: Vec<_> = std::mem::take(&mut self.stale);
        pending.extend(self.pending.drain(..));
        for (t0, kind, s) in pending {
            if s.wait_release(SETTLE).is_ok() {
                self.record(t0, kind, series);
            } else {
                self.never_released += 1;
            }
        }
    }
}

/// One load row: table, key, value.
type Row = (Tbl, Vec<u8>, Bytes);

/// A committed load batch whose release is not confirmed yet: loaded again if its epoch
/// discards it.
struct Sent<'c> {
    site: &'c Site,
    info: CommitInfo,
    rows: Vec<Row>,
}

/// How often one load batch is tried on the shard's current leader before the load fails.
const LOAD_ATTEMPTS: u32 = 20;

/// How long a load batch that aborted waits for the cluster to serve again.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Loads through transactions on the shard leaders, `LOAD_BATCH` rows each.
///
/// A leader change during the load (an election on a busy machine) aborts a batch on the
/// deposed leader, or discards one it committed that never reached the log: the batch is
/// loaded again on the new leader, so the load ends with every row released.
struct TxnSink<'c> {
    cluster: &'c Cluster,
    worker: u32,
    /// Rows gathered for the next batch, per shard.
    rows: Vec<Vec<Row>>,
    /// Committed batches, oldest first, per shard.
    sent: Vec<VecDeque<Sent<'c>>>,
    error: Option<TpccError>,
}

impl<'c> TxnSink<'c> {
    fn new(cluster: &'c Cluster, shards: usize, worker: u32) -> Self {
        TxnSink {
            cluster,
            worker,
            rows: (0..shards).map(|_| Vec::new()).collect(),
            sent: (0..shards).map(|_| VecDeque::new()).collect(),
            error: None,
        }
    }

    /// Commits `rows` as one transaction on the shard's current leader, trying again on a
    /// new leader after an abort.
    fn send(&mut self, shard: usize, rows: Vec<Row>) -> Result<(), TpccError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let site: &'c Site = self.cluster.leader(shard as u32);
            let mut tx = site
                .begin_local(self.worker)
                .expect("loader workers are below the configured count");
            for (t, key, value) in &rows {
                let table = site
                    .table(t.index())
                    .ok_or(TpccError::MissingTable(t.name()))?;
                tx.put(table, key, value.clone());
            }
            match tx.commit() {
                Ok(info) => {
                    self.sent[shard].push_back(Sent { site, info, rows });
                    return Ok(());
                }
                Err(abort) if abort.reason == AbortReason::TooLarge || attempt >= LOAD_ATTEMPTS => {
                    return Err(ClusterTpccError::Load { shard, abort }.into());
                }
                Err(_) => {
                    self.cluster.wait_serving(LEADER_WAIT);
                }
            }
        }
    }

    /// Settles the shard's committed batches up to `deadline`: released ones are done,
    /// discarded ones are loaded again; stops at the first one still undecided.
    fn settle(&mut self, shard: usize, deadline: Instant) -> Result<(), TpccError> {
        let mut resent = 0;
        while let Some(sent) = self.sent[shard].front() {
            match sent
                .site
                .wait_verdict(sent.info.epoch, &sent.info.vt, deadline)
            {
                mako_server::Verdict::Release => {
                    self.sent[shard].pop_front();
                }
                mako_server::Verdict::Discard if resent < LOAD_ATTEMPTS => {
                    resent += 1;
                    if let Some(sent) = self.sent[shard].pop_front() {
                        self.send(shard, sent.rows)?;
                    }
                }
                mako_server::Verdict::Discard | mako_server::Verdict::Wait => return Ok(()),
            }
        }
        Ok(())
    }
}

impl LoadSink for TxnSink<'_> {
    fn put(&mut self, shard: usize, t: Tbl, key: &[u8], value: Bytes) {
        if self.error.is_some() {
            return;
        }
        let Some(rows) = self.rows.get_mut(shard) else {
            return;
        };
        rows.push((t, key.to_vec(), value));
        if rows.len() >= LOAD_BATCH {
            let rows = std::mem::take(rows);
            // What is already released needs no copy kept.
            let done = self
                .send(shard, rows)
                .and_then(|()| self.settle(shard, Instant::now()));
            if let Err(e) = done {
                self.error = Some(e);
            }
        }
    }

    fn finish(&mut self) -> Result<(), TpccError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        for s in 0..self.rows.len() {
            let rows = std::mem::take(&mut self.rows[s]);
            self.send(s, rows)?;
        }
        let deadline = Instant::now() + SETTLE;
        for s in 0..self.sent.len() {
            self.settle(s, deadline)?;
            if !self.sent[s].is_empty() {
                return Err(ClusterTpccError::LoadNotReleased(s).into());
            }
        }
        Ok(())
    }
}

/// Each terminal's (shard, worker on that shard), and the workers every shard needs.
fn placement(map: &ShardMap, threads: usize) -> (Vec<(usize, u32)>, u32) {
    let mut per_shard = vec![0u32; map.shards()];
    let placed = (0..threads)
        .map(|i| {
            let home = (i % map.warehouses() as usize) as u32 + 1;
            let s = map.shard_of(home);
            let w = per_shard[s];
            per_shard[s] += 1;
            (s, w)
        })
        .collect();
    (placed, per_shard.into_iter().max().unwrap_or(1).max(1))
}

/// Starts `cfg.shards` shards × `replicas` replicas, loads, runs `cfg`, and checks every replica.
///
/// `cfg.threads` terminals run in all (terminal `i` on the leader of the shard of
/// warehouse `i % W + 1`). `progress` sees the load and the measured phase.
pub fn run_cluster(
    cfg: &TpccConfig,
    replicas: u32,
    mut progress: impl FnMut(TpccProgress),
) -> Result<ClusterTpccReport, TpccError> {
    cfg.validate()?;
    if cfg.duration.is_zero() {
        return Err(TpccError::Invalid {
            name: "duration",
            reason: "must be positive",
        });
    }
    if !(1..=7).contains(&replicas) {
        return Err(ClusterTpccError::Invalid {
            name: "replicas",
            reason: "must be in 1..=7",
        }
        .into());
    }
    let map = ShardMap::new(cfg.warehouses, cfg.shards)?;
    let (placed, workers) = placement(&map, cfg.threads);
    let cluster = Cluster::start(ClusterConfig {
        replicas,
        site: SiteConfig {
            shards: map.shards() as u32,
            workers,
            tables: TABLE_NAMES.iter().map(|&n| n.to_owned()).collect(),
            timeout: Duration::from_secs(10),
            ..SiteConfig::default()
        },
        durability: cfg.durability,
        ..ClusterConfig::default()
    })
    .map_err(ClusterTpccError::from)?;

    // Load: through transactions on the leaders; loader thread i is worker i % workers.
    let load_started = Instant::now();
    let mut rows_loaded = 0;
    let c_load: NuRandC = populate(
        cfg,
        &map,
        |i| TxnSink::new(&cluster, map.shards(), i as u32 % workers),
        |p| {
            rows_loaded = p.rows;
            progress(TpccProgress::Loading(p));
        },
    )?;
    let load_secs = load_started.elapsed().as_secs_f64();

    // Run.
    let first = cfg.scale.first_new_order();
    let db = ClusterDb {
        map,
        delivery_hints: (0..cfg.warehouses as usize * usize::from(DISTRICTS))
            .map(|_| AtomicU32::new(first))
            .collect(),
    };
    let workers_v: Vec<(ClusterWorker<'_>, Terminal)> = placed
        .iter()
        .enumerate()
        .map(|(i, &(s, worker))| {
            let w = ClusterWorker {
                backend: ClusterBackend {
                    db: &db,
                    site: cluster.leader(s as u32),
                    worker,
                    last: Cell::new(None),
                },
                cluster: &cluster,
                shard: s as u32,
                pending: VecDeque::new(),
                stale: Vec::new(),
                release: new_hist(),
                release_by: (0..TxnKind::ALL.len()).map(|_| new_hist()).collect(),
                distributed: 0,
                unreleased_at_end: 0,
                never_released: 0,
                window: cfg.window,
                max_unreleased: 0,
            };
            let term = Terminal::build(cfg.warehouses, cfg.scale, c_load, i as u32 + 1, cfg, i);
            (w, term)
        })
        .collect();
    let (mut tpcc, done) = run_workers(workers_v, cfg, cfg.warehouses, cfg.scale, progress)?;
    tpcc.load_secs = load_secs;
    tpcc.rows_loaded = rows_loaded;
    // Every replica of every shard lives in this process: the figures count them all.
    tpcc.memory = tpcc.memory.with_copies(replicas);
    let mut release = new_hist();
    let mut release_by: Vec<Histogram<u64>> = (0..TxnKind::ALL.len()).map(|_| new_hist()).collect();
    let (mut distributed, mut unreleased_at_end, mut never_released) = (0, 0, 0);
    let mut max_unreleased = 0;
    for w in &done {
        let _ = release.add(&w.release);
        for (all, mine) in release_by.iter_mut().zip(&w.release_by) {
            let _ = all.add(mine);
        }
        distributed += w.distributed;
        unreleased_at_end += w.unreleased_at_end;
        never_released += w.never_released;
        max_unreleased = max_unreleased.max(w.max_unreleased);
    }
    drop(done);

    // Replicas: followers catch up and equal their leaders; conditions 1–4 everywhere.
    let difference = cluster.compare_replicas(SETTLE).err();
    let mut checks = Vec::new();
    for (s, sites) in cluster.sites.iter().enumerate() {
        for (r, site) in sites.iter().enumerate() {
            let (report, violations) = match check_consistency(site.store(), map.warehouses_of(s)) {
                Ok(c) => (Some(c), Vec::new()),
                Err(v) => (None, v.iter().map(ToString::to_string).collect()),
            };
            checks.push(ReplicaCheck {
                shard: s,
                replica: r,
                report,
                violations,
            });
        }
    }
    let mut lag = new_hist();
    for site in cluster.sites.iter().flat_map(|s| s.iter().skip(1)) {
        let lags = site.replay_lags();
        for &l in &lags {
            lag.saturating_record(l.max(1));
        }
        let immediate = site.replayed().saturating_sub(lags.len() as u64);
        let _ = lag.record_n(1, immediate);
    }
    cluster.shutdown();
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    Ok(ClusterTpccReport {
        shards: map.shards(),
        replicas,
        durability: cfg.durability.as_str().to_owned(),
        distributed,
        distributed_pct: if tpcc.committed == 0 {
            0.0
        } else {
            100.0 * distributed as f64 / tpcc.committed as f64
        },
        release_p50_us: q(&release, 0.5),
        release_p99_us: q(&release, 0.99),
        release_p999_us: q(&release, 0.999),
        release_by_type: TxnKind::ALL
            .iter()
            .zip(&release_by)
            .map(|(kind, h)| ReleaseStats {
                kind: *kind,
                p50_us: q(h, 0.5),
                p99_us: q(h, 0.99),
                p999_us: q(h, 0.999),
            })
            .collect(),
        release_latency: series::latency_curve(&release),
        replay_lag_p99_us: if lag.is_empty() {
            0.0
        } else {
            lag.value_at_quantile(0.99) as f64
        },
        unreleased_at_end,
        window: cfg.window,
        max_unreleased,
        never_released,
        replicas_identical: difference.is_none(),
        difference,
        checks,
        tpcc,
    })
}

/// A latency histogram in nanoseconds (or microseconds for lags), up to 10 minutes.
fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("constant histogram bounds are valid")
}

impl From<ClusterTpccError> for TpccError {
    fn from(e: ClusterTpccError) -> Self {
        TpccError::Cluster(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One shard of three replicas with the TPC-C tables, its leadership left where a test
    /// moves it.
    fn one_shard_of_three() -> Cluster {
        Cluster::start(ClusterConfig {
            replicas: 3,
            site: SiteConfig {
                shards: 1,
                workers: 1,
                tables: TABLE_NAMES.iter().map(|&n| n.to_owned()).collect(),
                ..SiteConfig::default()
            },
            preferred_leader: false,
            ..ClusterConfig::default()
        })
        .expect("cluster")
    }

    /// Rows loaded before and after the shard's leadership moves all end up released on the
    /// new leader (the sink used to keep committing on the deposed one and fail the load).
    #[test]
    fn a_load_survives_a_leader_change() {
        let cluster = one_shard_of_three();
        let key = |i: usize| format!("item-{i:06}").into_bytes();
        let rows = 3 * LOAD_BATCH;
        let mut sink = TxnSink::new(&cluster, 1, 0);
        for i in 0..rows / 2 {
            sink.put(0, Tbl::Item, &key(i), Bytes::from(vec![1u8; 8]));
        }
        cluster.transfer_leader(0, 1).expect("transfer");
        assert!(
            cluster.wait_leader(0, 1, Duration::from_secs(20)),
            "replica 1 leads"
        );
        for i in rows / 2..rows {
            sink.put(0, Tbl::Item, &key(i), Bytes::from(vec![2u8; 8]));
        }
        sink.finish()
            .expect("the load ends with every row released");
        let leader = cluster.leader(0);
        let table = leader.table(Tbl::Item.index()).expect("item table");
        let mut tx = leader.begin_local(0).expect("begin");
        let missing: Vec<usize> = (0..rows)
            .filter(|&i| tx.get(table, &key(i)).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "{} rows missing, first {:?}",
            missing.len(),
            missing.first()
        );
        cluster.shutdown();
    }

    /// A worker whose transaction aborted for want of a leader runs its next one on the
    /// shard's new leader (it used to stay on the deposed one for the rest of the run).
    #[test]
    fn a_worker_follows_its_shard_leader_after_an_abort() {
        let cluster = one_shard_of_three();
        let db = ClusterDb {
            map: ShardMap::new(1, 1).expect("map"),
            delivery_hints: Vec::new(),
        };
        let mut w = ClusterWorker {
            backend: ClusterBackend {
                db: &db,
                site: cluster.leader(0),
                worker: 0,
                last: Cell::new(None),
            },
            cluster: &cluster,
            shard: 0,
            pending: VecDeque::new(),
            stale: Vec::new(),
            release: new_hist(),
            release_by: Vec::new(),
            distributed: 0,
            unreleased_at_end: 0,
            never_released: 0,
            window: 0,
            max_unreleased: 0,
        };
        cluster.transfer_leader(0, 1).expect("transfer");
        assert!(
            cluster.wait_leader(0, 1, Duration::from_secs(20)),
            "replica 1 leads"
        );
        assert!(!w.backend.site.serving(), "the old leader stopped serving");
        w.aborted(AbortReason::NotLeader);
        assert!(
            std::ptr::eq(w.backend.site, &**cluster.leader(0)),
            "the worker runs on the new leader"
        );
        assert!(w.backend.site.serving());
        drop(w);
        cluster.shutdown();
    }
}
