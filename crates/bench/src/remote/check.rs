//! `mako check -f CONFIG`: the history checker's workloads as interactive client
//! transactions against a deployment, optionally with leader kills.
//!
//! Checker key `k` is stored under [`encode_key`]`(k)` in the default table `kv` (the
//! deployment's partitioning places it). With a [`KillPlan`], the deployment's sites are this
//! process's children: every `every` a random shard's serving leader is SIGKILLed, a new
//! leader awaited, and the killed site restarted from its data directory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mako_checker::{
    ExecResult, GARBAGE, Key, KeyDist, Op, Outcome, RunConfig, TxnExecutor, Value, Workload,
    WorkloadConfig, WorkloadKind, append_value, check, decode_values, encode_key, encode_values,
    run_workload,
};
use mako_client::{Client, ClientConfig, ClientError, DEFAULT_TABLE, Txn};
use mako_config::Config;
use mako_deploy::Deployment;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{RemoteError, abort_name, shard_of};
use crate::check::{CheckProgress, CheckRun, CheckStats, ExecCounters, Fault};

/// Leader kills during a check.
#[derive(Debug, Clone, Copy)]
pub struct KillPlan {
    /// Kills to carry out.
    pub count: u32,
    /// Time between kills (the first one this long after the clients start).
    pub every: Duration,
    /// How long to wait for a new leader after a kill.
    pub leader_wait: Duration,
}

/// One remote check run.
#[derive(Debug, Clone)]
pub struct RemoteCheckConfig {
    /// The workload.
    pub workload: WorkloadKind,
    /// Client threads, each with its own connections.
    pub clients: usize,
    /// Key distribution.
    pub dist: KeyDist,
    /// Active keys; `None` keeps the workload's default.
    pub keys: Option<usize>,
    /// How long the clients run (raised to cover every kill, see [`RemoteCheckConfig::effective_duration`]).
    pub duration: Duration,
    /// Seed of the generators and of the kill schedule.
    pub seed: u64,
    /// Added to every checker key, so that runs on one deployment do not share keys.
    pub key_offset: Key,
    /// A deliberate executor bug (tests of the harness).
    pub fault: Option<Fault>,
    /// Leader kills (needs the deployment's sites as children).
    pub kills: Option<KillPlan>,
    /// How long to wait for every replica to reach its leader's digest after the run.
    pub converge_timeout: Duration,
}

impl RemoteCheckConfig {
    /// The clients' run time: `duration`, at least `(kills + 1) × every` with kills.
    pub fn effective_duration(&self) -> Duration {
        match self.kills {
            Some(k) => self.duration.max(k.every * (k.count + 1)),
            None => self.duration,
        }
    }

    fn workload_config(&self) -> WorkloadConfig {
        let mut w = WorkloadConfig::new(self.workload);
        w.dist = self.dist;
        if let Some(k) = self.keys {
            w.keys = k;
        }
        w.key_offset = self.key_offset;
        w
    }
}

/// One leader kill.
#[derive(Debug, Clone)]
pub struct KillRecord {
    /// The shard.
    pub shard: u32,
    /// The killed site (its leader).
    pub site: String,
    /// When, since the clients started.
    pub at: Duration,
    /// The next serving leader, if one appeared within the wait.
    pub new_leader: Option<String>,
    /// Kill to the new leader serving.
    pub new_leader_after: Option<Duration>,
    /// Why the killed site could not be started again, if it could not.
    pub restart_error: Option<String>,
    /// Kill to the first release of a transaction invoked after the kill that touched the
    /// shard (filled in after the run).
    pub first_release_after: Option<Duration>,
    /// Whether the clients had already stopped when the kill happened.
    pub after_clients: bool,
}

/// Something that happened during a run.
#[derive(Debug, Clone)]
pub enum Event {
    /// Progress, about twice a second.
    Progress(CheckProgress),
    /// A leader was killed (and the site restarted).
    Killed(KillRecord),
    /// A kill could not be carried out.
    KillFailed(String),
}

/// A recorded and checked remote run.
#[derive(Debug, Clone)]
pub struct RemoteCheckRun {
    /// History, report and outcome counts (with the replica comparison).
    pub run: CheckRun,
    /// The kills, in order.
    pub kills: Vec<KillRecord>,
    /// Kills that could not be carried out.
    pub kill_failures: Vec<String>,
    /// The key offset used.
    pub key_offset: Key,
}

impl RemoteCheckRun {
    /// No anomaly, every replica converged, and every planned kill happened.
    pub fn is_valid(&self) -> bool {
        self.run.is_valid()
            && self.kill_failures.is_empty()
            && self.kills.iter().all(|k| k.restart_error.is_none())
    }
}

/// When a released transaction was invoked and released, and which shards it touched.
#[derive(Debug, Clone, Copy)]
struct ReleaseMark {
    invoked: Instant,
    released: Instant,
    shards: u64,
}

/// Runs checker transactions as interactive transactions of a [`Client`].
///
/// `Read` gets the key (absent = empty); `Write` puts the encoded value; `Append` gets, appends
/// and puts; `Add` gets the counter (absent = 0) and puts the sum. The outcome: `commit` `Ok` =
/// released, `Aborted` = aborted with the server's reason, anything else at commit = unknown;
/// a failure before commit = aborted (the server drops an uncommitted transaction).
pub struct RemoteExecutor {
    client: Client,
    cfg: Arc<Config>,
    fault: Option<Fault>,
    snapshot: HashMap<Key, Vec<Value>>,
    counters: Arc<ExecCounters>,
    releases: Option<Arc<Mutex<Vec<ReleaseMark>>>>,
}

/// What went wrong inside a transaction, before or at commit.
enum Failed {
    Aborted(String),
    Unknown,
}

impl RemoteExecutor {
    /// An executor with its own client of the deployment `cfg` (no client-side retries).
    pub fn new(
        cfg: &Arc<Config>,
        fault: Option<Fault>,
        counters: Arc<ExecCounters>,
    ) -> Result<Self, RemoteError> {
        let mut cc = ClientConfig::from_config(cfg)?;
        cc.attempts = 1;
        Ok(RemoteExecutor {
            client: Client::new(cc),
            cfg: Arc::clone(cfg),
            fault,
            snapshot: HashMap::new(),
            counters,
            releases: None,
        })
    }

    /// Executes one operation inside `tx`; returns its observation.
    fn apply(
        decode: &dyn Fn(Option<Vec<u8>>) -> Vec<Value>,
        snapshot: &mut HashMap<Key, Vec<Value>>,
        stale: bool,
        tx: &mut Txn<'_>,
        op: Op,
    ) -> Result<Option<Vec<Value>>, ClientError> {
        let key = op.key();
        let k = encode_key(key);
        match op {
            Op::Read { .. } => {
                if let Some(v) = snapshot.get(&key).filter(|_| stale) {
                    return Ok(Some(v.clone()));
                }
                let v = decode(tx.get(&k)?);
                if stale {
                    snapshot.insert(key, v.clone());
                }
                Ok(Some(v))
            }
            Op::Write { value, .. } => {
                tx.put(&k, &encode_values(&[value]))?;
                Ok(None)
            }
            Op::Append { value, .. } => {
                let mut list = tx.get(&k)?.unwrap_or_default();
                append_value(&mut list, value);
                tx.put(&k, &list)?;
                Ok(None)
            }
            Op::Add { delta, .. } => {
                let old = decode(tx.get(&k)?);
                let new = old.first().copied().unwrap_or(0).wrapping_add_signed(delta);
                tx.put(&k, &encode_values(&[new]))?;
                Ok(Some(old))
            }
        }
    }

    /// Runs `ops` as one transaction.
    fn run_txn(&mut self, ops: &[Op]) -> ExecResult {
        let invoked = Instant::now();
        let stale = self.fault == Some(Fault::StaleReads);
        let counters = Arc::clone(&self.counters);
        let decode = |stored: Option<Vec<u8>>| -> Vec<Value> {
            match stored {
                None => Vec::new(),
                Some(b) => decode_values(&b).unwrap_or_else(|e| {
                    if counters.undecodable.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!("undecodable checker value: {e}");
                    }
                    vec![GARBAGE]
                }),
            }
        };
        let mut observed = Vec::with_capacity(ops.len());
        let mut tx = self.client.begin();
        let mut failed = None;
        for &op in ops {
            match Self::apply(&decode, &mut self.snapshot, stale, &mut tx, op) {
                Ok(obs) => observed.push(obs),
                Err(e) => {
                    failed = Some(before_commit(&e));
                    break;
                }
            }
        }
        let outcome = match failed {
            Some(f) => {
                // Dropping the transaction aborts it on the server.
                drop(tx);
                f
            }
            None => match tx.commit() {
                Ok(()) => {
                    if let Some(marks) = &self.releases {
                        let shards = ops.iter().fold(0u64, |m, op| {
                            let s = shard_of(&self.cfg, DEFAULT_TABLE, &encode_key(op.key()));
                            m | (1u64 << s.min(63))
                        });
                        marks.lock().push(ReleaseMark {
                            invoked,
                            released: Instant::now(),
                            shards,
                        });
                    }
                    return ExecResult::released(observed);
                }
                Err(ClientError::Aborted { reason, .. }) => Failed::Aborted(abort_name(&reason)),
                Err(e) => {
                    tracing::debug!("commit outcome unknown: {e}");
                    Failed::Unknown
                }
            },
        };
        match outcome {
            Failed::Aborted(reason) => ExecResult::aborted(reason),
            Failed::Unknown => ExecResult::unknown(observed),
        }
    }
}

/// The outcome of a failure before commit: nothing was committed, so an abort, unless the
/// server itself said the outcome is unknown.
fn before_commit(e: &ClientError) -> Failed {
    match e {
        ClientError::Aborted { reason, .. } => Failed::Aborted(abort_name(reason)),
        ClientError::Unknown(_) => Failed::Unknown,
        other => Failed::Aborted(super::error_kind(other)),
    }
}

impl TxnExecutor for RemoteExecutor {
    fn execute(&mut self, ops: &[Op]) -> ExecResult {
        let split = self.fault == Some(Fault::SplitTxns);
        let result = crate::check::execute_maybe_split(ops, split, |ops| self.run_txn(ops));
        let c = match &result.outcome {
            Outcome::Released => &self.counters.released,
            Outcome::Aborted(_) => &self.counters.aborted,
            Outcome::Unknown => &self.counters.unknown,
        };
        c.fetch_add(1, Ordering::Relaxed);
        result
    }
}

/// A client with short timeouts for status and digest calls.
fn admin_client(cfg: &Arc<Config>) -> Result<Client, RemoteError> {
    let mut cc = ClientConfig::from_config(cfg)?;
    cc.connect_timeout = Duration::from_millis(500);
    cc.reply_timeout = Duration::from_secs(3);
    cc.attempts = 1;
    Ok(Client::new(cc))
}

/// The site that leads `shard` and serves, asked of the shard's sites.
pub fn serving_leader(cfg: &Arc<Config>, shard: u32) -> Option<String> {
    let mut c = admin_client(cfg).ok()?;
    cfg.shard_sites(shard).into_iter().find_map(|s| {
        c.status(&s.name)
            .ok()
            .filter(|st| st.role == "leader" && st.serving)
            .map(|_| s.name.clone())
    })
}

/// Waits up to `timeout` until every site's `(rows, hash)` of `table` equals its shard
/// leader's; the first difference left at the deadline otherwise.
pub fn compare_replicas(
    cfg: &Arc<Config>,
    table: &str,
    timeout: Duration,
) -> Result<(), RemoteError> {
    let mut c = admin_client(cfg)?;
    let deadline = Instant::now() + timeout;
    loop {
        let diff = (|| {
            for shard in 0..cfg.shards() {
                let Some(leader) = serving_leader(cfg, shard) else {
                    return Some(format!("shard {shard} has no serving leader"));
                };
                let want = match c.digest(&leader, table) {
                    Ok((rows, hash, _)) => (rows, hash),
                    Err(e) => return Some(format!("digest of {leader}: {e}")),
                };
                for s in cfg.shard_sites(shard) {
                    match c.digest(&s.name, table) {
                        Ok((rows, hash, applied)) if (rows, hash) != want => {
                            return Some(format!(
                                "{} has {rows} rows (hash {hash:016x}, applied {applied}), its leader {leader} {} rows (hash {:016x})",
                                s.name, want.0, want.1
                            ));
                        }
                        Ok(_) => {}
                        Err(e) => return Some(format!("digest of {}: {e}", s.name)),
                    }
                }
            }
            None
        })();
        match diff {
            None => return Ok(()),
            Some(d) if Instant::now() >= deadline => return Err(RemoteError::Invalid(d)),
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Kills a random shard's leader `plan.count` times, every `plan.every`, each time waiting for
/// a new leader and restarting the killed site.
fn kill_loop(
    d: &mut Deployment,
    plan: KillPlan,
    seed: u64,
    started: Instant,
    clients_done: &std::sync::atomic::AtomicBool,
    events: &crossbeam_channel::Sender<Event>,
) {
    let cfg = Arc::clone(d.config());
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6b69_6c6c);
    for k in 1..=plan.count {
        let due = started + plan.every * k;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let shard = rng.random_range(0..cfg.shards().max(1));
        // The shard's leader may still be settling after the previous kill.
        let find = Instant::now();
        let leader = loop {
            if let Some(l) = d.leader(shard) {
                break Some(l);
            }
            if find.elapsed() > plan.leader_wait {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let Some(site) = leader else {
            let _ = events.send(Event::KillFailed(format!(
                "kill {k}: shard {shard} had no serving leader within {:?}",
                plan.leader_wait
            )));
            continue;
        };
        let after_clients = clients_done.load(Ordering::Relaxed);
        d.kill(&site);
        let at = Instant::now();
        let new_leader = loop {
            if let Some(l) = d.leader(shard) {
                break Some(l);
            }
            if at.elapsed() > plan.leader_wait {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let new_leader_after = new_leader.as_ref().map(|_| at.elapsed());
        let restart_error = d.restart(&site).err().map(|e| e.to_string());
        let _ = events.send(Event::Killed(KillRecord {
            shard,
            site,
            at: at.saturating_duration_since(started),
            new_leader,
            new_leader_after,
            restart_error,
            first_release_after: None,
            after_clients,
        }));
    }
}

/// Runs `rc`'s workload against the deployment `cfg` describes, checks the history, and
/// compares every replica's digest of `kv` with its leader's. With `rc.kills`, `deployment`
/// must hold the running sites (their processes are killed and restarted); `events` receives
/// progress and kills as they happen.
pub fn run_check(
    cfg: &Arc<Config>,
    deployment: Option<&mut Deployment>,
    rc: &RemoteCheckConfig,
    mut events: impl FnMut(Event),
) -> Result<RemoteCheckRun, RemoteError> {
    if cfg.table(DEFAULT_TABLE).is_none() {
        return Err(RemoteError::NoTable(DEFAULT_TABLE.into()));
    }
    if rc.kills.is_some() && deployment.is_none() {
        return Err(RemoteError::Invalid(
            "leader kills need the deployment's sites as child processes".into(),
        ));
    }
    // Fail early (and clearly) if the client cannot be configured.
    drop(RemoteExecutor::new(cfg, None, Arc::default())?);
    let duration = rc.effective_duration();
    let workload = Workload::new(rc.workload_config());
    let run = RunConfig::for_duration(rc.clients.max(1), duration, rc.seed);
    let counters = Arc::new(ExecCounters::default());
    let releases = Arc::new(Mutex::new(Vec::<ReleaseMark>::new()));
    let clients_done = std::sync::atomic::AtomicBool::new(false);
    let mut kills = Vec::new();
    let mut kill_failures = Vec::new();
    let started = Instant::now();
    let history = std::thread::scope(|s| {
        // Disconnects when both the clients and the killer are done.
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded::<Event>();
        let (counters, releases, clients_done, workload, run) =
            (&counters, &releases, &clients_done, &workload, &run);
        let client_ev = ev_tx.clone();
        let clients = s.spawn(move || {
            let h = run_workload(workload, run, |_client| {
                // The config was checked above; a client cannot fail to configure now.
                let mut e = match RemoteExecutor::new(cfg, rc.fault, Arc::clone(counters)) {
                    Ok(e) => e,
                    Err(err) => panic!("client configuration failed after it succeeded: {err}"),
                };
                e.releases = Some(Arc::clone(releases));
                e
            });
            clients_done.store(true, Ordering::Relaxed);
            drop(client_ev);
            h
        });
        let killer = match (deployment, rc.kills) {
            (Some(d), Some(plan)) => {
                let ev = ev_tx.clone();
                Some(s.spawn(move || kill_loop(d, plan, rc.seed, started, clients_done, &ev)))
            }
            _ => None,
        };
        drop(ev_tx);
        loop {
            match ev_rx.recv_timeout(Duration::from_millis(500)) {
                Ok(Event::Killed(k)) => {
                    kills.push(k.clone());
                    events(Event::Killed(k));
                }
                Ok(Event::KillFailed(f)) => {
                    kill_failures.push(f.clone());
                    events(Event::KillFailed(f));
                }
                Ok(Event::Progress(_)) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    events(Event::Progress(CheckProgress {
                        elapsed: started.elapsed(),
                        total: duration,
                        released: counters.released.load(Ordering::Relaxed),
                        aborted: counters.aborted.load(Ordering::Relaxed),
                        unknown: counters.unknown.load(Ordering::Relaxed),
                    }));
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        if let Some(k) = killer
            && let Err(panic) = k.join()
        {
            std::panic::resume_unwind(panic);
        }
        match clients.join() {
            Ok(h) => h,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    let elapsed = started.elapsed();
    let checking = Instant::now();
    let report = check(&history);
    let mut stats = CheckStats::of_with(&history, |key| {
        shard_of(cfg, DEFAULT_TABLE, &encode_key(key))
    });
    stats.elapsed = elapsed;
    stats.check_time = checking.elapsed();
    stats.undecodable = counters.undecodable.load(Ordering::Relaxed);
    stats.replicas =
        Some(compare_replicas(cfg, DEFAULT_TABLE, rc.converge_timeout).map_err(|e| e.to_string()));
    let marks = releases.lock();
    for k in &mut kills {
        let at = started + k.at;
        k.first_release_after = marks
            .iter()
            .filter(|m| m.invoked >= at && m.shards & (1u64 << k.shard.min(63)) != 0)
            .map(|m| m.released - at)
            .min();
    }
    drop(marks);
    Ok(RemoteCheckRun {
        run: CheckRun {
            history,
            report,
            stats,
        },
        kills,
        kill_failures,
        key_offset: rc.key_offset,
    })
}
