//! The mako-rs client library.
//!
//! A [`Client`] knows every site's client address (from the deployment's config) and the
//! client token. It learns which site leads each shard from any site it reaches
//! ([`mako_proto::Body::Topology`]), sends each transaction to the leader of its first key's
//! shard (that leader coordinates it and reaches the other shards itself), and follows
//! `NotLeader` hints and leader changes, waiting out an election up to
//! [`ClientConfig::leader_wait`].
//!
//! Outcomes are honest: `Ok` means released (durable on a majority of every shard
//! touched); [`ClientError::Aborted`] means the transaction will never be visible;
//! [`ClientError::Unknown`] means it may or may not become durable (the server's release
//! did not arrive in time, or the connection broke during commit).
//!
//! ```no_run
//! use mako_client::{Client, ClientConfig, SiteAddr};
//! let cfg = ClientConfig::new(vec![SiteAddr {
//!     name: "s0r0".into(), node: 1, shard: 0, addr: "127.0.0.1:7101".parse().unwrap(),
//! }]);
//! let mut c = Client::new(cfg);
//! c.put(b"k", b"v").unwrap();
//! assert_eq!(c.get(b"k").unwrap(), Some(b"v".to_vec()));
//! // Several operations as one serializable transaction, retried on conflicts:
//! c.transaction(|t| {
//!     let a = t.get(b"a")?.unwrap_or_default();
//!     t.put(b"b", &a)?;
//!     Ok(())
//! }).unwrap();
//! ```

mod conn;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use mako_proto::Rows;
use mako_proto::{Body, ErrorCode, Op, OpResult, Reply, SiteStatus};
pub use mako_proto::{Op as Operation, OpResult as OperationResult};
use mako_transport::auth::Secret;
use mako_transport::tls::TlsSettings;
use tracing::debug;

use conn::Conn;

/// The table the CLI and the Redis front use.
pub const DEFAULT_TABLE: &str = "kv";

/// Where one site takes clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteAddr {
    /// Site name.
    pub name: String,
    /// Node id.
    pub node: u64,
    /// Shard.
    pub shard: u32,
    /// Client address.
    pub addr: SocketAddr,
}

/// Where a key lives: `(table, key) -> shard` (`None`: unknown table).
pub type Router = Arc<dyn Fn(&str, &[u8]) -> Option<u32> + Send + Sync>;

/// How a client connects and retries.
#[derive(Clone)]
pub struct ClientConfig {
    /// Every site.
    pub sites: Vec<SiteAddr>,
    /// The deployment's partitioning, so that a transaction starts on the leader of its first
    /// key's shard (a one-shard transaction then needs no other shard). `None`: a hash of
    /// the key picks the coordinator (correct, since coordinators reach every shard, but
    /// one-shard transactions may pay a round trip).
    pub router: Option<Router>,
    /// The client token, when the deployment requires one.
    pub token: Option<Arc<Secret>>,
    /// TLS towards the sites (`None`: plain TCP).
    pub tls: Option<TlsSettings>,
    /// Limit on connecting and the handshake.
    pub connect_timeout: Duration,
    /// Limit on waiting for one reply (longer than the servers' release timeout).
    pub reply_timeout: Duration,
    /// How long to keep looking for a shard's leader (elections, restarts).
    pub leader_wait: Duration,
    /// Attempts of [`Client::transaction`] and one-shot calls when a transaction aborts
    /// with a retryable reason (conflicts, failover); 1 = no retry.
    pub attempts: u32,
}

impl ClientConfig {
    /// Defaults for `sites`: no token, 30 s to find a leader, 10 attempts.
    pub fn new(sites: Vec<SiteAddr>) -> Self {
        ClientConfig {
            sites,
            router: None,
            token: None,
            tls: None,
            connect_timeout: Duration::from_secs(2),
            reply_timeout: Duration::from_secs(60),
            leader_wait: Duration::from_secs(30),
            attempts: 10,
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("sites", &self.sites)
            .field("router", &self.router.is_some())
            .field("token", &self.token.is_some())
            .field("leader_wait", &self.leader_wait)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl ClientConfig {
    /// Every site of a deployment's config, its partitioning and its client token.
    pub fn from_config(cfg: &Arc<mako_config::Config>) -> Result<Self, ClientError> {
        let sites = cfg
            .sites
            .iter()
            .map(|s| SiteAddr {
                name: s.name.clone(),
                node: cfg.node_id(s),
                shard: s.shard,
                addr: cfg.client_addr(s),
            })
            .collect();
        let mut c = ClientConfig::new(sites);
        let route = Arc::clone(cfg);
        c.router = Some(Arc::new(move |t: &str, k: &[u8]| route.shard_of(t, k)));
        c.reply_timeout = Duration::from_millis(cfg.timeouts.release_ms.saturating_mul(2))
            .max(Duration::from_secs(10));
        if let Some(t) = &cfg.security.client_token {
            let secret = Secret::new(t.expose().to_vec())
                .map_err(|e| ClientError::Auth(format!("security.client_token: {e}")))?;
            c.token = Some(Arc::new(secret));
        }
        if let Some(t) = &cfg.security.tls {
            c.tls = Some(
                mako_transport::tls::load(&t.cert, &t.key, &t.ca, &t.server_name)
                    .map_err(|e| ClientError::Auth(format!("security.tls: {e}")))?,
            );
        }
        Ok(c)
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Aborted: the transaction will never be visible.
    #[error("aborted ({reason})")]
    Aborted {
        /// The server's reason.
        reason: String,
        /// Whether running it again may succeed.
        retryable: bool,
    },
    /// The outcome is unknown: the transaction may or may not become durable.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// No leader of the shard was found within `leader_wait`.
    #[error("no leader of shard {shard} found within {waited:?}")]
    NoLeader {
        /// The shard.
        shard: u32,
        /// How long the client looked.
        waited: Duration,
    },
    /// A connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A connection failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server refused the connection (e.g. an unsupported protocol version).
    #[error("refused by the server: {0}")]
    Refused(String),
    /// Authentication failed.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server refused the request.
    #[error("{code:?}: {message}")]
    Request {
        /// The kind of error.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The server answered something this client does not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No such site in the configuration.
    #[error("no site {0} in the configuration")]
    NoSuchSite(String),
}

impl ClientError {
    /// Whether no retry can help: authentication, TLS or protocol refusals.
    pub fn is_fatal(&self) -> bool {
        match self {
            ClientError::Auth(_) | ClientError::Refused(_) => true,
            ClientError::Io(e) | ClientError::Connect { source: e, .. } => {
                e.kind() == std::io::ErrorKind::InvalidData
            }
            _ => false,
        }
    }

    /// Whether running the transaction again may succeed (retryable aborts).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Aborted {
                retryable: true,
                ..
            }
        )
    }
}

/// A connection pool to one deployment, used from one thread.
pub struct Client {
    cfg: ClientConfig,
    conns: HashMap<u64, Conn>,
    /// Leaders as last learned, by shard.
    leaders: Vec<Option<u64>>,
}

impl Client {
    /// A client of the deployment `cfg` describes (connects lazily).
    pub fn new(cfg: ClientConfig) -> Self {
        let shards = cfg.sites.iter().map(|s| s.shard + 1).max().unwrap_or(1);
        Client {
            cfg,
            conns: HashMap::new(),
            leaders: vec![None; shards as usize],
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Reads `key` of the default table.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        match self.run_one(Op::Get {
            table: DEFAULT_TABLE.into(),
            key: key.to_vec(),
        })? {
            OpResult::Value(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// Writes `key` of the default table.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        self.run_one(Op::Put {
            table: DEFAULT_TABLE.into(),
            key: key.to_vec(),
            value: value.to_vec(),
        })
        .map(drop)
    }

    /// Deletes `key` of the default table.
    pub fn delete(&mut self, key: &[u8]) -> Result<(), ClientError> {
        self.run_one(Op::Delete {
            table: DEFAULT_TABLE.into(),
            key: key.to_vec(),
        })
        .map(drop)
    }

    /// Up to `limit` rows of the default table in `lo..hi`, in key order across every shard.
    pub fn scan(
        &mut self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        limit: u32,
    ) -> Result<Rows, ClientError> {
        match self.run_one(scan_op(DEFAULT_TABLE, lo, hi, limit))? {
            OpResult::Rows(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    fn run_one(&mut self, op: Op) -> Result<OpResult, ClientError> {
        self.run(vec![op])?
            .pop()
            .ok_or_else(|| ClientError::Protocol("no result".into()))
    }

    /// Runs `ops` as one transaction in one request (retrying retryable aborts up to
    /// [`ClientConfig::attempts`] times); returns each operation's result.
    pub fn run(&mut self, ops: Vec<Op>) -> Result<Vec<OpResult>, ClientError> {
        let shard = self.first_shard(&ops);
        let mut attempt = 1;
        loop {
            // The request carries the commit: once sent, a failure leaves it unknown.
            let r = self.on_leader(shard, |c| {
                c.call(Body::Run { ops: ops.clone() }).map_err(unknown)
            });
            let r = match r {
                Ok(Reply::Ran(results)) => return Ok(results),
                Ok(other) => outcome(other),
                Err(e) => Err(e),
            };
            match r {
                Err(e) if e.is_retryable() && attempt < self.cfg.attempts => {
                    attempt += 1;
                    backoff(attempt);
                }
                Err(e) => return Err(e),
                Ok(()) => return Err(ClientError::Protocol("commit without results".into())),
            }
        }
    }

    /// Calls server-side procedure `name` on the leader of `shard` (one request, one
    /// transaction; retryable aborts retried up to [`ClientConfig::attempts`] times).
    pub fn call(&mut self, shard: u32, name: &str, args: &[u8]) -> Result<Vec<u8>, ClientError> {
        let mut attempt = 1;
        loop {
            let body = Body::Call {
                name: name.into(),
                args: args.to_vec(),
            };
            let e = match self.on_leader(shard, |c| c.call(body.clone()).map_err(unknown)) {
                Ok(Reply::Returned(v)) => return Ok(v),
                Ok(other) => outcome_err(other),
                Err(e) => e,
            };
            if !(e.is_retryable() && attempt < self.cfg.attempts) {
                return Err(e);
            }
            attempt += 1;
            backoff(attempt);
        }
    }

    /// Runs `f` as one interactive transaction and commits it, retrying retryable aborts up
    /// to [`ClientConfig::attempts`] times (so `f` must be safe to run again).
    pub fn transaction<T>(
        &mut self,
        mut f: impl FnMut(&mut Txn<'_>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut attempt = 1;
        loop {
            let mut t = self.begin();
            let r = f(&mut t).and_then(|v| t.commit().map(|()| v));
            match r {
                Err(e) if e.is_retryable() && attempt < self.cfg.attempts => {
                    attempt += 1;
                    backoff(attempt);
                }
                r => return r,
            }
        }
    }

    /// Starts an interactive transaction; it begins on the leader of its first key's shard.
    pub fn begin(&mut self) -> Txn<'_> {
        Txn {
            client: self,
            open: None,
            failed: None,
        }
    }

    /// The status of site `name`.
    pub fn status(&mut self, name: &str) -> Result<SiteStatus, ClientError> {
        let node = self.node_named(name)?;
        match self.call_node(node, Body::Status)? {
            Reply::Status(s) => Ok(*s),
            other => Err(unexpected_reply(&other)),
        }
    }

    /// `(rows, hash, applied index)` of `table` on site `name` (to compare replicas).
    pub fn digest(&mut self, name: &str, table: &str) -> Result<(u64, u64, u64), ClientError> {
        let node = self.node_named(name)?;
        match self.call_node(
            node,
            Body::Digest {
                table: table.into(),
            },
        )? {
            Reply::Digest {
                rows,
                hash,
                applied,
            } => Ok((rows, hash, applied)),
            other => Err(unexpected_reply(&other)),
        }
    }

    fn node_named(&self, name: &str) -> Result<u64, ClientError> {
        self.cfg
            .sites
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.node)
            .ok_or_else(|| ClientError::NoSuchSite(name.into()))
    }

    /// One request to one node (no routing); a broken connection is dropped.
    fn call_node(&mut self, node: u64, body: Body) -> Result<Reply, ClientError> {
        let r = self.conn(node).and_then(|c| c.call(body));
        if r.is_err() {
            self.conns.remove(&node);
        }
        match r? {
            Reply::Error { code, message } => Err(ClientError::Request { code, message }),
            other => Ok(other),
        }
    }

    fn conn(&mut self, node: u64) -> Result<&mut Conn, ClientError> {
        if !self.conns.contains_key(&node) {
            let site = self
                .cfg
                .sites
                .iter()
                .find(|s| s.node == node)
                .ok_or_else(|| ClientError::NoSuchSite(format!("node {node}")))?;
            let c = Conn::open(
                site.addr,
                self.cfg.tls.as_ref(),
                self.cfg.token.as_deref(),
                self.cfg.connect_timeout,
                self.cfg.reply_timeout,
            )?;
            self.conns.insert(node, c);
        }
        self.conns
            .get_mut(&node)
            .ok_or_else(|| ClientError::NoSuchSite(format!("node {node}")))
    }

    /// The shard whose leader coordinates `ops`: the first key's (shard 0 for scans).
    fn first_shard(&self, ops: &[Op]) -> u32 {
        let shards = self.leaders.len() as u32;
        ops.iter()
            .find_map(|o| {
                let k = o.key()?;
                Some(match &self.cfg.router {
                    Some(r) => r(o.table(), k).unwrap_or(0),
                    None => shard_hint(k, shards),
                })
            })
            .unwrap_or(0)
    }

    /// Sends a request that must reach `shard`'s leader, following `NotLeader` hints,
    /// connection failures and elections for up to `leader_wait`. A reply other than
    /// `NotLeader` is returned as is; an I/O error after the request was sent is returned.
    fn on_leader(
        &mut self,
        shard: u32,
        mut send: impl FnMut(&mut Conn) -> Result<Reply, ClientError>,
    ) -> Result<Reply, ClientError> {
        let start = Instant::now();
        let mut tries = 0u32;
        loop {
            if start.elapsed() > self.cfg.leader_wait {
                return Err(ClientError::NoLeader {
                    shard,
                    waited: start.elapsed(),
                });
            }
            tries += 1;
            let node = match self.leaders.get(shard as usize).copied().flatten() {
                Some(n) => n,
                None => {
                    self.refresh(tries)?;
                    match self.leaders.get(shard as usize).copied().flatten() {
                        Some(n) => n,
                        None => {
                            backoff(tries.min(6));
                            continue;
                        }
                    }
                }
            };
            let conn = match self.conn(node) {
                Ok(c) => c,
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    debug!(node, error = %e, "leader unreachable");
                    self.forget(shard, node);
                    backoff(tries.min(6));
                    continue;
                }
            };
            match send(conn) {
                Ok(Reply::NotLeader { leader, .. }) => {
                    self.leaders[shard as usize] = leader.filter(|&l| l != node);
                    if leader.is_none() || leader == Some(node) {
                        backoff(tries.min(6));
                    }
                }
                Ok(Reply::Aborted { reason, .. }) if reason == "not_leader" => {
                    self.forget(shard, node);
                    backoff(tries.min(6));
                }
                Ok(reply) => return Ok(reply),
                Err(e) => {
                    self.conns.remove(&node);
                    self.forget(shard, node);
                    return Err(e);
                }
            }
        }
    }

    fn forget(&mut self, shard: u32, node: u64) {
        self.conns.remove(&node);
        if let Some(l) = self.leaders.get_mut(shard as usize)
            && *l == Some(node)
        {
            *l = None;
        }
    }

    /// Asks sites (starting at a different one each try) which sites lead.
    fn refresh(&mut self, tries: u32) -> Result<(), ClientError> {
        let nodes: Vec<u64> = self.cfg.sites.iter().map(|s| s.node).collect();
        for i in 0..nodes.len() {
            let node = nodes[(i + tries as usize) % nodes.len()];
            match self.call_node(node, Body::Topology) {
                Ok(Reply::Topology(t)) => {
                    if self.leaders.len() < t.shards as usize {
                        self.leaders.resize(t.shards as usize, None);
                    }
                    for (s, l) in t.leaders.into_iter().enumerate() {
                        if let Some(l) = l {
                            self.leaders[s] = Some(l);
                        }
                    }
                    return Ok(());
                }
                // A refusal no retry can heal (wrong token, TLS trust, protocol version).
                Err(e) if e.is_fatal() => return Err(e),
                Ok(_) | Err(_) => continue,
            }
        }
        Ok(())
    }
}

/// An interactive transaction (see [`Client::begin`]); dropping it uncommitted aborts it.
pub struct Txn<'c> {
    client: &'c mut Client,
    /// `(coordinator node, transaction number)` once begun.
    open: Option<(u64, u32)>,
    /// The abort that ended it (reason, retryable), once one did.
    failed: Option<(String, bool)>,
}

impl Txn<'_> {
    /// Reads `key` of the default table.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.get_in(DEFAULT_TABLE, key)
    }

    /// Reads `key` of `table`.
    pub fn get_in(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        match self.op(Op::Get {
            table: table.into(),
            key: key.to_vec(),
        })? {
            OpResult::Value(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// The version of `key` of the default table: `(epoch, timestamp)` of its newest
    /// version, which every write changes (the same value again and a delete included);
    /// `None` if it was never written. Validated at commit; this transaction's own writes
    /// are not seen.
    pub fn version(&mut self, key: &[u8]) -> Result<Option<(u32, u64)>, ClientError> {
        match self.op(Op::Version {
            table: DEFAULT_TABLE.into(),
            key: key.to_vec(),
        })? {
            OpResult::Version(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// Writes `key` of the default table.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        self.put_in(DEFAULT_TABLE, key, value)
    }

    /// Writes `key` of `table`.
    pub fn put_in(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        self.op(Op::Put {
            table: table.into(),
            key: key.to_vec(),
            value: value.to_vec(),
        })
        .map(drop)
    }

    /// Deletes `key` of the default table.
    pub fn delete(&mut self, key: &[u8]) -> Result<(), ClientError> {
        self.op(Op::Delete {
            table: DEFAULT_TABLE.into(),
            key: key.to_vec(),
        })
        .map(drop)
    }

    /// Up to `limit` rows of the default table in `lo..hi`, in key order across shards.
    pub fn scan(
        &mut self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        limit: u32,
    ) -> Result<Rows, ClientError> {
        match self.op(scan_op(DEFAULT_TABLE, lo, hi, limit))? {
            OpResult::Rows(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Adds `delta` to the decimal integer under `key` of the default table; the new value.
    pub fn add(&mut self, key: &[u8], delta: i64) -> Result<i64, ClientError> {
        match self.op(Op::Add {
            table: DEFAULT_TABLE.into(),
            key: key.to_vec(),
            delta,
        })? {
            OpResult::Int(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs one operation.
    pub fn op(&mut self, op: Op) -> Result<OpResult, ClientError> {
        if let Some(e) = self.earlier_abort() {
            return Err(e);
        }
        let (node, txn) = match self.open {
            Some(o) => o,
            None => {
                let shard = self.client.first_shard(std::slice::from_ref(&op));
                let mut began = None;
                let reply = self.client.on_leader(shard, |c| {
                    let r = c.call(Body::Begin)?;
                    began = Some(c.welcome.node);
                    Ok(r)
                });
                match (reply, began) {
                    (Ok(Reply::Began { txn }), Some(node)) => {
                        self.open = Some((node, txn));
                        (node, txn)
                    }
                    (Ok(other), _) => return Err(self.fail(outcome_err(other))),
                    (Err(e), _) => return Err(self.fail(e)),
                }
            }
        };
        match self.client.call_node(node, Body::Op { txn, op }) {
            Ok(Reply::Result(r)) => Ok(r),
            Ok(other) => Err(self.fail(outcome_err(other))),
            Err(ClientError::Request { code, message }) => {
                // Refused operations leave the transaction as it was.
                Err(ClientError::Request { code, message })
            }
            Err(e @ (ClientError::Io(_) | ClientError::Protocol(_))) => {
                // Nothing was committed: the connection is dropped, and the server drops an
                // open transaction with its connection.
                self.open = None;
                Err(self.fail(ClientError::Aborted {
                    reason: format!("connection lost: {e}"),
                    retryable: true,
                }))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn fail(&mut self, e: ClientError) -> ClientError {
        if let ClientError::Aborted { reason, retryable } = &e {
            self.failed = Some((reason.clone(), *retryable));
            self.open = None;
        }
        e
    }

    /// The abort that already ended this transaction, as the error of a later call (as
    /// retryable as the abort itself).
    fn earlier_abort(&self) -> Option<ClientError> {
        let (reason, retryable) = self.failed.as_ref()?;
        Some(ClientError::Aborted {
            reason: format!("an earlier operation aborted the transaction ({reason})"),
            retryable: *retryable,
        })
    }

    /// Commits: `Ok` once released.
    pub fn commit(mut self) -> Result<(), ClientError> {
        if let Some(e) = self.earlier_abort() {
            return Err(e);
        }
        let Some((node, txn)) = self.open.take() else {
            return Ok(()); // nothing read or written
        };
        // Once the commit is sent, a failure to read its verdict leaves it unknown.
        let sent = self
            .client
            .conn(node)
            .map(|c| c.call(Body::Commit { txn }).map_err(unknown));
        let r = match sent {
            Ok(r) => r,
            Err(e) => Err(e),
        };
        if r.is_err() {
            self.client.conns.remove(&node);
        }
        match r? {
            Reply::Committed => Ok(()),
            other => outcome(other),
        }
    }

    /// Aborts the transaction.
    pub fn abort(mut self) -> Result<(), ClientError> {
        if let Some((node, txn)) = self.open.take() {
            self.client.call_node(node, Body::Abort { txn })?;
        }
        Ok(())
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if let Some((node, txn)) = self.open.take() {
            let _ = self.client.call_node(node, Body::Abort { txn });
        }
    }
}

/// A commit reply other than success, as an error (`Ok` only for `Committed`).
fn outcome(reply: Reply) -> Result<(), ClientError> {
    match reply {
        Reply::Committed => Ok(()),
        other => Err(outcome_err(other)),
    }
}

fn outcome_err(reply: Reply) -> ClientError {
    match reply {
        Reply::Aborted { reason, retryable } => ClientError::Aborted { reason, retryable },
        Reply::Unknown { why } => ClientError::Unknown(why),
        Reply::Error { code, message } => ClientError::Request { code, message },
        other => unexpected_reply(&other),
    }
}

/// A failure after a commit-carrying request was sent: its outcome is unknown.
fn unknown(e: ClientError) -> ClientError {
    match e {
        e @ (ClientError::Io(_) | ClientError::Protocol(_)) => {
            ClientError::Unknown(format!("no verdict after the commit was sent: {e}"))
        }
        other => other,
    }
}

fn unexpected(r: &OpResult) -> ClientError {
    ClientError::Protocol(format!("unexpected result {r:?}"))
}

fn unexpected_reply(r: &Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {r:?}"))
}

fn scan_op(table: &str, lo: Bound<&[u8]>, hi: Bound<&[u8]>, limit: u32) -> Op {
    Op::Scan {
        table: table.into(),
        lo: lo.map(<[u8]>::to_vec),
        hi: hi.map(<[u8]>::to_vec),
        limit,
    }
}

/// Which shard's leader should coordinate a transaction starting with `key`: any leader
/// can, so this only spreads coordinators (the server routes keys itself).
fn shard_hint(key: &[u8], shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u32
}

/// Sleeps a little longer on each attempt (10 ms doubling, at most 320 ms).
fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(10u64 << attempt.min(5)));
}
