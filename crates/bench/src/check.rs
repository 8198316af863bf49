//! The history checker on an in-process cluster (`mako check` and the history tests): an
//! executor that runs the checker's transactions as cross-shard cluster transactions, and a
//! runner that records a history, checks it and summarizes the outcomes.
//!
//! Checker key `k` lives on shard `k % S` (so the write-skew pair `x`, `x + 1` always spans
//! two shards when `S > 1`), under [`encode_key`] in table [`CHECK_TABLE`]. Client `c`
//! coordinates on the leader of shard `c % S` with worker `(c / S) % workers`; several
//! clients may share a worker (its stream admits concurrent transactions).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_checker::{
    ExecResult, GARBAGE, History, Key, KeyDist, Op, Outcome, Report, RunConfig, TxnExecutor, Value,
    Workload, WorkloadConfig, WorkloadKind, append_value, check, decode_values, encode_key,
    encode_values, run_workload,
};
use mako_logstore::Durability;
use mako_server::cluster::ClusterError;
use mako_server::{
    Cluster, ClusterConfig, CommitError, DistTxn, NetKind, Protocol, Site, SiteConfig,
};
use mako_txn::Abort;

/// The table every checker key lives in (table index 0 of the cluster).
pub const CHECK_TABLE: &str = "checker";

/// The hot-key distribution `mako check --dist hot` uses: 80% of picks on 2 keys.
pub const HOT_KEYS: KeyDist = KeyDist::Hot {
    hot_keys: 2,
    hot_percent: 80,
};

/// A deliberate bug in the executor, to show that the harness finds anomalies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reads are served from a per-client snapshot taken at the client's first read of each
    /// key (stale reads; writes still go to the cluster).
    StaleReads,
    /// Each operation runs as its own transaction (no atomicity across operations).
    SplitTxns,
}

/// One checker run on a cluster.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// Coordinator workers (commit-log streams) per shard.
    pub workers: u32,
    /// Client threads (each runs one transaction at a time).
    pub clients: usize,
    /// The workload.
    pub workload: WorkloadKind,
    /// Key distribution.
    pub dist: KeyDist,
    /// Active keys (list slots, registers, accounts); `None` keeps the workload's default.
    pub keys: Option<usize>,
    /// How long the clients run.
    pub duration: Duration,
    /// Seed of the generators.
    pub seed: u64,
    /// Added to every checker key (separates runs that share one cluster).
    pub key_offset: Key,
    /// How long `commit` waits for release before reporting the outcome unknown.
    pub timeout: Duration,
    /// A deliberate executor bug (tests of the harness); `None` in real checks.
    pub fault: Option<Fault>,
    /// The replication protocol of the cluster's groups.
    pub protocol: Protocol,
}

impl CheckConfig {
    /// `workload` on `shards` × `replicas`: 2 workers per shard, 8 clients, uniform keys,
    /// 10 s, seed 1, a 10 s release timeout, no fault.
    pub fn new(workload: WorkloadKind, shards: u32, replicas: u32) -> Self {
        CheckConfig {
            shards,
            replicas,
            workers: 2,
            clients: 8,
            workload,
            dist: KeyDist::Uniform,
            keys: None,
            duration: Duration::from_secs(10),
            seed: 1,
            key_offset: 0,
            timeout: Duration::from_secs(10),
            fault: None,
            protocol: Protocol::Raft,
        }
    }

    /// The checker workload parameters.
    pub fn workload_config(&self) -> WorkloadConfig {
        let mut w = WorkloadConfig::new(self.workload);
        w.dist = self.dist;
        if let Some(k) = self.keys {
            w.keys = k;
        }
        w.key_offset = self.key_offset;
        w
    }

    /// The cluster these checks run on.
    pub fn cluster_config(&self) -> ClusterConfig {
        ClusterConfig {
            protocol: self.protocol,
            replicas: self.replicas,
            site: SiteConfig {
                shards: self.shards,
                workers: self.workers.max(1),
                tables: vec![CHECK_TABLE.into()],
                timeout: self.timeout,
                ..SiteConfig::default()
            },
            net: NetKind::Mem,
            durability: Durability::Memory,
            ..ClusterConfig::default()
        }
    }
}

/// The shard that holds checker key `key` among `shards`.
pub fn shard_of(key: Key, shards: u32) -> u32 {
    (key % u64::from(shards.max(1))) as u32
}

/// Outcome counters shared by a run's executors (read by the progress line).
#[derive(Debug, Default)]
pub struct ExecCounters {
    /// Released transactions.
    pub released: AtomicU64,
    /// Aborted transactions.
    pub aborted: AtomicU64,
    /// Transactions with unknown outcome.
    pub unknown: AtomicU64,
    /// Stored values that did not decode (reported to the checker as [`GARBAGE`]).
    pub undecodable: AtomicU64,
}

impl ExecCounters {
    fn count(&self, outcome: &Outcome) {
        let c = match outcome {
            Outcome::Released => &self.released,
            Outcome::Aborted(_) => &self.aborted,
            Outcome::Unknown => &self.unknown,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs checker transactions as [`DistTxn`]s coordinated by one worker of one site.
///
/// `Read` gets the key (absent = empty list); `Write` puts the encoded value; `Append`
/// reads, appends and puts the encoded list; `Add` reads the counter (absent = 0) and
/// puts the sum. The outcome is what `commit` said: `Ok` = released (commit returns only
/// at release), `Aborted` = aborted, `Unknown` = unknown (observations kept); an abort
/// while executing is an abort.
pub struct ClusterExecutor {
    site: Arc<Site>,
    worker: u32,
    shards: u32,
    fault: Option<Fault>,
    /// [`Fault::StaleReads`]: the first value read of each key.
    snapshot: HashMap<Key, Vec<Value>>,
    counters: Arc<ExecCounters>,
}

impl ClusterExecutor {
    /// An executor coordinating on `site` with `worker`, for a cluster of `shards` shards.
    pub fn new(
        site: Arc<Site>,
        worker: u32,
        shards: u32,
        fault: Option<Fault>,
        counters: Arc<ExecCounters>,
    ) -> Self {
        ClusterExecutor {
            site,
            worker,
            shards: shards.max(1),
            fault,
            snapshot: HashMap::new(),
            counters,
        }
    }

    /// The executor of client `client` on `cluster`: leader of shard `client % S`, worker
    /// `(client / S) % workers`.
    pub fn for_client(
        cluster: &Cluster,
        workers: u32,
        client: usize,
        fault: Option<Fault>,
        counters: Arc<ExecCounters>,
    ) -> Self {
        let shards = cluster.sites.len().max(1) as u32;
        let home = (client % shards as usize) as u32;
        let worker = ((client / shards as usize) % workers.max(1) as usize) as u32;
        Self::new(
            Arc::clone(cluster.leader(home)),
            worker,
            shards,
            fault,
            counters,
        )
    }

    fn decode(&self, stored: Option<Bytes>) -> Vec<Value> {
        match stored {
            None => Vec::new(),
            Some(b) => decode_values(&b).unwrap_or_else(|e| {
                if self.counters.undecodable.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("undecodable checker value: {e}");
                }
                vec![GARBAGE]
            }),
        }
    }

    /// Executes one operation inside `tx`; returns its observation.
    fn apply(&mut self, tx: &mut DistTxn<'_>, op: Op) -> Result<Option<Vec<Value>>, Abort> {
        let key = op.key();
        let (shard, k) = (shard_of(key, self.shards), encode_key(key));
        match op {
            Op::Read { .. } => {
                let stale = self.fault == Some(Fault::StaleReads);
                if let Some(v) = self.snapshot.get(&key).filter(|_| stale) {
                    return Ok(Some(v.clone()));
                }
                let v = self.decode(tx.get(shard, 0, &k)?);
                if stale {
                    self.snapshot.insert(key, v.clone());
                }
                Ok(Some(v))
            }
            Op::Write { value, .. } => {
                tx.put(shard, 0, &k, Bytes::from(encode_values(&[value])))?;
                Ok(None)
            }
            Op::Append { value, .. } => {
                let mut list = tx
                    .get(shard, 0, &k)?
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                append_value(&mut list, value);
                tx.put(shard, 0, &k, Bytes::from(list))?;
                Ok(None)
            }
            Op::Add { delta, .. } => {
                let old = self.decode(tx.get(shard, 0, &k)?);
                let new = old.first().copied().unwrap_or(0).wrapping_add_signed(delta);
                tx.put(shard, 0, &k, Bytes::from(encode_values(&[new])))?;
                Ok(Some(old))
            }
        }
    }

    /// Runs `ops` as one transaction.
    fn run_txn(&mut self, ops: &[Op]) -> ExecResult {
        let site = Arc::clone(&self.site);
        let mut tx = match site.begin(self.worker) {
            Ok(tx) => tx,
            Err(e) => {
                tracing::warn!("{e}");
                return ExecResult::aborted("no_such_worker");
            }
        };
        let mut observed = Vec::with_capacity(ops.len());
        for &op in ops {
            match self.apply(&mut tx, op) {
                Ok(obs) => observed.push(obs),
                Err(abort) => return ExecResult::aborted(abort.reason.name()),
            }
        }
        match tx.commit() {
            Ok(_) => ExecResult::released(observed),
            Err(CommitError::Aborted(reason)) => ExecResult::aborted(reason.name()),
            Err(CommitError::Unknown { why, .. }) => {
                tracing::debug!("outcome unknown: {why}");
                ExecResult::unknown(observed)
            }
        }
    }
}

/// Runs `ops` with `run` as one transaction, or, when `split` (the `SplitTxns` fault, broken
/// on purpose), as one transaction per operation, released only if all were.
pub(crate) fn execute_maybe_split(
    ops: &[Op],
    split: bool,
    mut run: impl FnMut(&[Op]) -> ExecResult,
) -> ExecResult {
    if !split {
        return run(ops);
    }
    let mut observed = Vec::with_capacity(ops.len());
    let mut outcome = Outcome::Released;
    for op in ops {
        let r = run(std::slice::from_ref(op));
        observed.push(r.observed.into_iter().next().flatten());
        if outcome.is_released() {
            outcome = r.outcome;
        }
    }
    ExecResult { outcome, observed }
}

impl TxnExecutor for ClusterExecutor {
    fn execute(&mut self, ops: &[Op]) -> ExecResult {
        let split = self.fault == Some(Fault::SplitTxns);
        let result = execute_maybe_split(ops, split, |ops| self.run_txn(ops));
        self.counters.count(&result.outcome);
        result
    }
}

/// Progress of a run, about twice a second.
#[derive(Debug, Clone, Copy)]
pub struct CheckProgress {
    /// Time since the clients started.
    pub elapsed: Duration,
    /// The configured duration.
    pub total: Duration,
    /// Released so far.
    pub released: u64,
    /// Aborted so far.
    pub aborted: u64,
    /// Unknown so far.
    pub unknown: u64,
}

/// What a run did, from its history.
#[derive(Debug, Clone, Default)]
pub struct CheckStats {
    /// Transactions recorded (including the final reads).
    pub txns: usize,
    /// Released transactions.
    pub released: usize,
    /// Aborted transactions.
    pub aborted: usize,
    /// Transactions with unknown outcome.
    pub unknown: usize,
    /// Aborts by reason.
    pub abort_reasons: BTreeMap<String, usize>,
    /// Released transactions that touched more than one shard.
    pub cross_shard_released: usize,
    /// Stored values that did not decode.
    pub undecodable: u64,
    /// Time the clients ran (final reads included).
    pub elapsed: Duration,
    /// Time the checker took.
    pub check_time: Duration,
    /// After the run: `Some(Err(difference))` if a follower differs from its leader, `None`
    /// if replicas were not compared.
    pub replicas: Option<Result<(), String>>,
}

impl CheckStats {
    fn of(history: &History, shards: u32) -> Self {
        Self::of_with(history, |key| shard_of(key, shards))
    }

    /// Counts a history's outcomes; `shard` says which shard holds a checker key (for the
    /// cross-shard count).
    pub fn of_with(history: &History, shard: impl Fn(Key) -> u32) -> Self {
        let mut s = CheckStats {
            txns: history.len(),
            ..CheckStats::default()
        };
        for t in history.txns() {
            match &t.outcome {
                Outcome::Released => {
                    s.released += 1;
                    let touched: BTreeSet<u32> = t.ops.iter().map(|r| shard(r.op.key())).collect();
                    if touched.len() > 1 {
                        s.cross_shard_released += 1;
                    }
                }
                Outcome::Aborted(reason) => {
                    s.aborted += 1;
                    *s.abort_reasons.entry(reason.clone()).or_insert(0) += 1;
                }
                Outcome::Unknown => s.unknown += 1,
            }
        }
        s
    }
}

/// A recorded and checked run.
#[derive(Debug, Clone)]
pub struct CheckRun {
    /// The history.
    pub history: History,
    /// The checker's report.
    pub report: Report,
    /// Outcome counts and timings.
    pub stats: CheckStats,
}

impl CheckRun {
    /// True if the checker found no anomaly and no replica differs from its leader.
    pub fn is_valid(&self) -> bool {
        self.report.is_valid() && !matches!(self.stats.replicas, Some(Err(_)))
    }
}

/// Runs `cfg`'s workload on an already started `cluster` (whose shape must match `cfg`:
/// shards, and at least `cfg.workers` workers), then checks the history. Runs sharing a
/// cluster need distinct `key_offset`s.
pub fn run_on(
    cluster: &Cluster,
    cfg: &CheckConfig,
    mut progress: impl FnMut(CheckProgress),
) -> CheckRun {
    let workload = Workload::new(cfg.workload_config());
    let run = RunConfig::for_duration(cfg.clients.max(1), cfg.duration, cfg.seed);
    let counters = Arc::new(ExecCounters::default());
    let started = Instant::now();
    let history = std::thread::scope(|s| {
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let counters = &counters;
        let clients = s.spawn(move || {
            let h = run_workload(&workload, &run, |client| {
                ClusterExecutor::for_client(
                    cluster,
                    cfg.workers,
                    client,
                    cfg.fault,
                    Arc::clone(counters),
                )
            });
            drop(done_tx);
            h
        });
        // Progress until the clients finish (the channel disconnects).
        while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
            done_rx.recv_timeout(Duration::from_millis(500))
        {
            progress(CheckProgress {
                elapsed: started.elapsed(),
                total: cfg.duration,
                released: counters.released.load(Ordering::Relaxed),
                aborted: counters.aborted.load(Ordering::Relaxed),
                unknown: counters.unknown.load(Ordering::Relaxed),
            });
        }
        match clients.join() {
            Ok(h) => h,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    let elapsed = started.elapsed();
    let checking = Instant::now();
    let report = check(&history);
    let mut stats = CheckStats::of(&history, cluster.sites.len() as u32);
    stats.elapsed = elapsed;
    stats.check_time = checking.elapsed();
    stats.undecodable = counters.undecodable.load(Ordering::Relaxed);
    CheckRun {
        history,
        report,
        stats,
    }
}

/// Starts a cluster for `cfg`, runs and checks the workload, compares every follower with
/// its leader, and stops the cluster.
pub fn run_check(
    cfg: &CheckConfig,
    progress: impl FnMut(CheckProgress),
) -> Result<CheckRun, ClusterError> {
    let cluster = Cluster::start(cfg.cluster_config())?;
    let mut run = run_on(&cluster, cfg, progress);
    run.stats.replicas = Some(cluster.compare_replicas(Duration::from_secs(20)));
    cluster.shutdown();
    Ok(run)
}
