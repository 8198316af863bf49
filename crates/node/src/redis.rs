//! The Redis front end's store: each RESP command runs as one transaction coordinated by this
//! site when it serves its shard (operations executed by [`crate::exec::apply`], keys routed by
//! the [`Catalog`]), or forwarded to the shard's leader as an interactive transaction when
//! it does not; retryable aborts are run again in a fresh transaction (at least
//! [`ATTEMPTS`] times, and as long as the release timeout has not passed: a hot key under
//! optimistic concurrency control aborts many attempts).

use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mako_client::{Client, ClientConfig, ClientError};
use mako_config::DEFAULT_TABLE;
use mako_proto::{ErrorCode, OpResult};
use mako_redis::{Backend, Body, Failure, Figures, Release, Store, Txn, Wake};
use mako_server::{DistTxn, ReleaseError, Speculative};
use mako_txn::AbortReason;

use crate::exec::{OpError, OpRef, apply_ref};
use crate::session::Shared;

/// How many times one command runs at least before a retryable abort is its answer (it
/// runs again as long as the release timeout has not passed since its first attempt).
const ATTEMPTS: u32 = 32;

/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_millis(20);

/// Settings of a site's Redis (RESP) listener.
#[derive(Clone)]
pub struct RedisOptions {
    /// Where Redis clients connect.
    pub listen: SocketAddr,
    /// Redis connections served at once; more are refused.
    pub max_connections: usize,
    /// The password (the deployment's client token) AUTH must give (`None`: none).
    pub token: Option<Vec<u8>>,
    /// How to reach the leaders when this site does not serve its shard (`None`: such
    /// commands answer `TRYAGAIN`).
    pub forward: Option<ClientConfig>,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("listen", &self.listen)
            .field("max_connections", &self.max_connections)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// The site as a [`Store`] of the Redis front end.
pub(crate) struct SiteStore {
    pub shared: Arc<Shared>,
    /// How long a commit waits for its release before its outcome is unknown.
    pub release_timeout: Duration,
    pub forward: Option<ClientConfig>,
    pub next_worker: AtomicU32,
}

impl Store for SiteStore {
    fn on_progress(&self, wake: &Wake) {
        self.shared.site.epochs().listen(wake);
    }

    fn connect(&self) -> Box<dyn Backend> {
        let w = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.shared.workers.max(1);
        Box::new(SiteBackend {
            shared: Arc::clone(&self.shared),
            release_timeout: self.release_timeout,
            worker: w,
            forward: self.forward.clone(),
            client: None,
        })
    }
}

/// One Redis connection's way to the store.
struct SiteBackend {
    shared: Arc<Shared>,
    release_timeout: Duration,
    worker: u32,
    forward: Option<ClientConfig>,
    /// Connections to the leaders, made when first needed.
    client: Option<Client>,
}

impl Backend for SiteBackend {
    fn transact(&mut self, body: &mut Body<'_>) -> Result<(), Failure> {
        match self.transact_pipelined(body)? {
            Some(release) => release.wait(),
            None => Ok(()),
        }
    }

    fn transact_pipelined(
        &mut self,
        body: &mut Body<'_>,
    ) -> Result<Option<Box<dyn Release>>, Failure> {
        let mut attempt = 1;
        let give_up = Instant::now() + self.release_timeout;
        loop {
            let r = if self.shared.site.serving() {
                self.local(body)
                    .map(|r| Some(Box::new(r) as Box<dyn Release>))
            } else {
                self.forwarded(body).map(|()| None)
            };
            match r {
                Err(Failure::Aborted {
                    retryable: true, ..
                }) if attempt < ATTEMPTS || Instant::now() < give_up => {
                    // A fresh transaction after a short, growing, jittered pause (conflicts
                    // clear up as the other transaction finishes; an election takes longer).
                    let cap = Duration::from_micros(100 << attempt.min(10)).min(MAX_PAUSE);
                    let us =
                        rand::random_range(cap.as_micros() as u64 / 2..=cap.as_micros() as u64);
                    std::thread::sleep(Duration::from_micros(us));
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// Runs here, once, if this site serves and every key is in its shard.
    fn try_local(
        &mut self,
        keys: &mut dyn Iterator<Item = &[u8]>,
        body: &mut Body<'_>,
    ) -> Option<Result<Option<Box<dyn Release>>, Failure>> {
        let site = &*self.shared.site;
        let me = site.shard_id();
        if !site.serving() {
            return None;
        }
        for k in keys {
            if self.shared.catalog.shard_of(DEFAULT_TABLE, k) != Some(me) {
                return None;
            }
        }
        // Every key is here, so no participant is waited for (whose acknowledgements
        // nothing announces; such a release would be looked at only every 200 ms).
        Some(
            self.local(body)
                .map(|r| Some(Box::new(r) as Box<dyn Release>)),
        )
    }

    fn figures(&mut self) -> Figures {
        let st = crate::status::of(&self.shared);
        let counters = &self.shared.counters;
        let aborts: u64 = st.aborts.iter().map(|(_, n)| n).sum();
        let kv = |k: &str, v: String| (k.to_string(), v);
        let leader = st
            .leaders
            .get(st.shard as usize)
            .copied()
            .flatten()
            .map_or("none".to_string(), |n| n.to_string());
        let mut stats = vec![
            kv("mako_released", st.released.to_string()),
            kv("mako_aborts", aborts.to_string()),
            kv("mako_unknown", counters.unknown_total().to_string()),
        ];
        for (reason, n) in &st.aborts {
            stats.push(kv(&format!("mako_aborts_{reason}"), n.to_string()));
        }
        Figures {
            leader: st.role == "leader",
            server: vec![
                kv("mako_site", st.site.clone()),
                kv("mako_node", st.node.to_string()),
            ],
            replication: vec![
                kv("mako_role", st.role.clone()),
                kv("mako_serving", u8::from(st.serving).to_string()),
                kv("mako_health", st.health.clone()),
                kv("mako_shard", st.shard.to_string()),
                kv("mako_shards", st.leaders.len().to_string()),
                kv("mako_leader", leader),
                kv("mako_term", st.term.to_string()),
                kv("mako_epoch", st.epoch.to_string()),
                kv("mako_commit_index", st.commit_index.to_string()),
                kv("mako_applied_index", st.applied_index.to_string()),
                kv("mako_watermark", st.w.to_string()),
            ],
            stats,
        }
    }
}

impl SiteBackend {
    /// Runs `body` in a transaction coordinated here and commits it speculatively.
    fn local(&self, body: &mut Body<'_>) -> Result<SiteRelease, Failure> {
        let site = &*self.shared.site;
        let mut tx = site
            .begin(self.worker)
            .map_err(|e| Failure::Unavailable(e.to_string()))?;
        let r = body(&mut Ops(LocalTxn {
            tx: &mut tx,
            shared: &self.shared,
        }));
        if let Err(f) = r {
            drop(tx);
            if let Failure::Aborted { .. } = &f {
                self.shared.counters.aborted("redis_op");
            }
            return Err(f);
        }
        let started = Instant::now();
        match tx.commit_speculative() {
            Ok(spec) => Ok(SiteRelease {
                spec,
                started,
                timeout: self.release_timeout,
                shared: Arc::clone(&self.shared),
            }),
            Err(a) => {
                self.shared.counters.aborted(a.reason.name());
                Err(aborted(a.reason))
            }
        }
    }

    /// Runs `body` as an interactive transaction on the leaders.
    fn forwarded(&mut self, body: &mut Body<'_>) -> Result<(), Failure> {
        let Some(cfg) = &self.forward else {
            let shard = self.shared.site.shard_id();
            return Err(Failure::Unavailable(format!(
                "this site does not serve shard {shard} now and cannot forward"
            )));
        };
        let client = self.client.get_or_insert_with(|| {
            let mut cfg = cfg.clone();
            // One attempt per call: retries are this backend's.
            cfg.attempts = 1;
            Client::new(cfg)
        });
        let mut t = client.begin();
        body(&mut Ops(RemoteTxn { tx: &mut t }))?;
        t.commit().map_err(failure)
    }
}

/// A transaction committed here, waiting for its release (as [`DistTxn::commit`] waits).
struct SiteRelease {
    spec: Speculative,
    started: Instant,
    timeout: Duration,
    shared: Arc<Shared>,
}

impl SiteRelease {
    /// Counts and translates the release's outcome.
    fn outcome(&self, r: Result<(), ReleaseError>) -> Result<(), Failure> {
        let counters = &self.shared.counters;
        match r {
            Ok(()) => {
                counters.released(self.started.elapsed());
                Ok(())
            }
            Err(ReleaseError::Aborted(reason)) => {
                counters.aborted(reason.name());
                Err(aborted(reason))
            }
            Err(ReleaseError::Pending(why)) => {
                counters.unknown();
                Err(Failure::Unknown(why.to_string()))
            }
        }
    }
}

impl Release for SiteRelease {
    fn wait(self: Box<Self>) -> Result<(), Failure> {
        let r = self.spec.wait_release(self.timeout);
        self.outcome(r)
    }

    fn poll(&mut self) -> Option<Result<(), Failure>> {
        match self.spec.poll_release() {
            Some(r) => Some(self.outcome(r)),
            None if self.started.elapsed() >= self.timeout => {
                // What `wait_release` answers once its time is up.
                let r = self.spec.wait_release(Duration::ZERO);
                Some(self.outcome(r))
            }
            None => None,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        Some(self.started + self.timeout)
    }
}

fn aborted(reason: AbortReason) -> Failure {
    Failure::Aborted {
        reason: reason.name().into(),
        retryable: !matches!(reason, AbortReason::TooLarge),
    }
}

fn op_failure(e: OpError) -> Failure {
    match e {
        OpError::Abort(a) => aborted(a.reason),
        OpError::Refused(_, message) => Failure::Refused(message),
    }
}

fn failure(e: ClientError) -> Failure {
    match e {
        ClientError::Aborted { reason, retryable } => Failure::Aborted { reason, retryable },
        ClientError::Unknown(why) => Failure::Unknown(why),
        ClientError::Request {
            code: ErrorCode::InvalidValue | ErrorCode::TooLarge,
            message,
        } => Failure::Refused(message),
        other => Failure::Unavailable(other.to_string()),
    }
}

fn get(key: &[u8]) -> OpRef<'_> {
    OpRef::Get {
        table: DEFAULT_TABLE,
        key,
    }
}

fn put<'a>(key: &'a [u8], value: &'a [u8]) -> OpRef<'a> {
    OpRef::Put {
        table: DEFAULT_TABLE,
        key,
        value,
    }
}

fn delete(key: &[u8]) -> OpRef<'_> {
    OpRef::Delete {
        table: DEFAULT_TABLE,
        key,
    }
}

fn add(key: &[u8], delta: i64) -> OpRef<'_> {
    OpRef::Add {
        table: DEFAULT_TABLE,
        key,
        delta,
    }
}

fn append<'a>(key: &'a [u8], value: &'a [u8]) -> OpRef<'a> {
    OpRef::Append {
        table: DEFAULT_TABLE,
        key,
        value,
    }
}

fn scan(after: Option<&[u8]>, limit: usize) -> OpRef<'_> {
    OpRef::Scan {
        table: DEFAULT_TABLE,
        lo: after.map_or(Bound::Unbounded, Bound::Excluded),
        hi: Bound::Unbounded,
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
    }
}

/// The answer an operation's result should have been.
fn unexpected(r: &OpResult) -> Failure {
    Failure::Unavailable(format!("unexpected result {r:?}"))
}

/// Operations on both kinds of transaction, in terms of [`Op`]s.
trait RunOp {
    fn run(&mut self, op: OpRef<'_>) -> Result<OpResult, Failure>;
}

/// A [`Txn`] of either kind.
struct Ops<R>(R);

impl<R: RunOp> Txn for Ops<R> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Failure> {
        match self.0.run(get(key))? {
            OpResult::Value(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Failure> {
        self.0.run(put(key, value)).map(drop)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), Failure> {
        self.0.run(delete(key)).map(drop)
    }

    fn add(&mut self, key: &[u8], delta: i64) -> Result<i64, Failure> {
        match self.0.run(add(key, delta))? {
            OpResult::Int(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    fn append(&mut self, key: &[u8], value: &[u8]) -> Result<i64, Failure> {
        match self.0.run(append(key, value))? {
            OpResult::Int(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    fn scan(&mut self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Vec<u8>>, Failure> {
        match self.0.run(scan(after, limit))? {
            OpResult::Rows(rows) => Ok(rows.into_iter().map(|(k, _)| k).collect()),
            other => Err(unexpected(&other)),
        }
    }

    fn version(&mut self, key: &[u8]) -> Result<mako_redis::backend::KeyVersion, Failure> {
        let op = OpRef::Version {
            table: DEFAULT_TABLE,
            key,
        };
        match self.0.run(op)? {
            OpResult::Version(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }
}

/// A transaction coordinated by this site.
struct LocalTxn<'a, 's> {
    tx: &'a mut DistTxn<'s>,
    shared: &'a Shared,
}

impl RunOp for LocalTxn<'_, '_> {
    fn run(&mut self, op: OpRef<'_>) -> Result<OpResult, Failure> {
        apply_ref(
            self.tx,
            &*self.shared.catalog,
            op,
            self.shared.limits.max_scan_rows,
        )
        .map_err(op_failure)
    }
}

/// A transaction on the leaders, through the client library.
struct RemoteTxn<'a, 'c> {
    tx: &'a mut mako_client::Txn<'c>,
}

impl RunOp for RemoteTxn<'_, '_> {
    fn run(&mut self, op: OpRef<'_>) -> Result<OpResult, Failure> {
        self.tx.op(op.to_op()).map_err(failure)
    }
}
