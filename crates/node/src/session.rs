//! One client connection: the handshake, then requests answered in order, with the
//! connection's interactive transactions and their bounds.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mako_proto::{
    Body, ErrorCode, FrameError, FrameReader, MAX_FRAME, MAX_RESULTS, Op, OpResult, Reply, Request,
    Response, Topology, decode, write_frame,
};
use mako_server::{CommitError, DistTxn, Site};
use mako_txn::AbortReason;
use tracing::{debug, warn};

use crate::exec::{Catalog, OpError, apply};
use crate::figures::Counters;

/// Bounds on a connection's interactive transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// An open transaction idle this long is aborted (`idle`).
    pub idle_timeout: Duration,
    /// Transactions one connection may hold open at once.
    pub max_open: usize,
    /// Operations one transaction may run; the next one aborts it (`too_many_ops`).
    pub max_ops: u32,
    /// Client connections served at once; more are refused.
    pub max_connections: usize,
    /// Rows one scan may return (each shard builds up to this many before replying); a
    /// scan that would return more is refused (`TooLarge`): page with a later lower bound.
    pub max_scan_rows: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle_timeout: Duration::from_secs(30),
            max_open: 16,
            max_ops: 10_000,
            max_connections: 1024,
            max_scan_rows: 100_000,
        }
    }
}

/// What a session needs from its server.
pub(crate) struct Shared {
    pub site: Arc<Site>,
    pub catalog: Arc<dyn Catalog>,
    pub limits: Limits,
    pub counters: Arc<Counters>,
    pub name: String,
    pub started: Instant,
    pub workers: u32,
    pub procedures: HashMap<String, Arc<dyn crate::Procedure>>,
}

/// An open interactive transaction.
struct Open<'s> {
    tx: DistTxn<'s>,
    ops: u32,
    last: Instant,
}

/// The request loop of one authenticated connection.
pub(crate) struct Session<'s> {
    shared: &'s Shared,
    worker: u32,
    open: HashMap<u32, Open<'s>>,
    /// Transactions this session aborted on its own (idle, too many operations), so a later
    /// request on them is answered with why.
    ended: HashMap<u32, &'static str>,
    next: u32,
}

impl<'s> Session<'s> {
    pub(crate) fn new(shared: &'s Shared, worker: u32) -> Self {
        Session {
            shared,
            worker,
            open: HashMap::new(),
            ended: HashMap::new(),
            next: 1,
        }
    }

    /// Serves requests until the peer closes, a frame is malformed, or `stopping` says so.
    pub(crate) fn run<S: Read + Write>(
        &mut self,
        stream: &mut S,
        reader: &mut FrameReader,
        stopping: &dyn Fn() -> bool,
    ) -> Result<(), FrameError> {
        reader.set_max(MAX_FRAME);
        loop {
            if stopping() {
                return Ok(());
            }
            let frame = match reader.poll(stream)? {
                Some(f) => f,
                None => {
                    self.expire_idle();
                    continue;
                }
            };
            self.expire_idle();
            let response = match decode::<Request>(&frame) {
                Ok(req) => Response {
                    id: req.id,
                    reply: self.handle(req.body),
                },
                Err(e) => {
                    debug!(site = %self.shared.name, error = %e, "malformed request");
                    self.shared.counters.malformed();
                    Response {
                        id: 0,
                        reply: Reply::Error {
                            code: ErrorCode::Malformed,
                            message: format!("malformed request: {e}"),
                        },
                    }
                }
            };
            write_frame(stream, &response)?;
        }
    }

    /// Aborts transactions idle beyond the limit.
    fn expire_idle(&mut self) {
        let limit = self.shared.limits.idle_timeout;
        let idle: Vec<u32> = self
            .open
            .iter()
            .filter(|(_, o)| o.last.elapsed() >= limit)
            .map(|(&id, _)| id)
            .collect();
        for id in idle {
            self.open.remove(&id);
            self.end(id, "idle");
        }
    }

    fn end(&mut self, id: u32, why: &'static str) {
        self.shared.counters.aborted(why);
        if self.ended.len() >= 1024 {
            self.ended.clear();
        }
        self.ended.insert(id, why);
    }

    fn handle(&mut self, body: Body) -> Reply {
        let site = &*self.shared.site;
        match body {
            Body::Topology => Reply::Topology(Topology {
                shards: self.shared.catalog.shards(),
                leaders: (0..self.shared.catalog.shards())
                    .map(|s| site.leader_of(s))
                    .collect(),
            }),
            Body::Status => Reply::Status(Box::new(crate::status::of(self.shared))),
            Body::Digest { table } => crate::status::digest(site, &table),
            Body::Begin => {
                if self.open.len() >= self.shared.limits.max_open {
                    return Reply::Error {
                        code: ErrorCode::TooManyOpen,
                        message: format!(
                            "{} transactions already open on this connection (the limit)",
                            self.open.len()
                        ),
                    };
                }
                match self.begin() {
                    Ok(tx) => {
                        let id = self.next;
                        self.next = self.next.wrapping_add(1).max(1);
                        self.open.insert(
                            id,
                            Open {
                                tx,
                                ops: 0,
                                last: Instant::now(),
                            },
                        );
                        Reply::Began { txn: id }
                    }
                    Err(r) => r,
                }
            }
            Body::Op { txn, op } => self.op(txn, &op),
            Body::Commit { txn } => match self.open.remove(&txn) {
                Some(o) => self.commit(o.tx, None),
                None => self.missing(txn),
            },
            Body::Abort { txn } => match self.open.remove(&txn) {
                Some(o) => {
                    drop(o.tx);
                    self.shared.counters.aborted("client");
                    Reply::Aborted {
                        reason: "client".into(),
                        retryable: false,
                    }
                }
                None => self.missing(txn),
            },
            Body::Call { name, args } => self.call(&name, &args),
            Body::Run { ops } => {
                if ops.len() > self.shared.limits.max_ops as usize {
                    self.shared.counters.aborted("too_many_ops");
                    return Reply::Aborted {
                        reason: "too_many_ops".into(),
                        retryable: false,
                    };
                }
                let mut tx = match self.begin() {
                    Ok(tx) => tx,
                    Err(r) => return r,
                };
                let mut results = Vec::with_capacity(ops.len());
                let mut bytes = 0usize;
                for op in &ops {
                    match apply(
                        &mut tx,
                        &*self.shared.catalog,
                        op,
                        self.shared.limits.max_scan_rows,
                    ) {
                        Ok(r) => {
                            bytes = bytes.saturating_add(r.wire_size());
                            results.push(r);
                        }
                        Err(e) => return self.failed(e),
                    }
                    // Results that cannot be sent back: refused before the commit.
                    if bytes > MAX_RESULTS {
                        return self.failed(crate::exec::too_large(bytes));
                    }
                }
                self.commit(tx, Some(results))
            }
        }
    }

    /// Runs procedure `name` if this site serves its shard.
    fn call(&self, name: &str, args: &[u8]) -> Reply {
        let Some(p) = self.shared.procedures.get(name) else {
            return Reply::Error {
                code: ErrorCode::UnknownProcedure,
                message: format!("no procedure {name:?}"),
            };
        };
        let site = &*self.shared.site;
        if !site.serving() {
            let shard = site.shard_id();
            return Reply::NotLeader {
                shard,
                leader: site.leader_of(shard),
            };
        }
        let started = Instant::now();
        match p.call(site, self.worker, args) {
            Ok(r) => {
                self.shared.counters.released(started.elapsed());
                Reply::Returned(r)
            }
            Err(crate::ProcError::Aborted(reason)) => self.aborted(reason),
            Err(crate::ProcError::Unknown(why)) => {
                self.shared.counters.unknown();
                Reply::Unknown { why }
            }
            Err(crate::ProcError::Invalid(message)) => Reply::Error {
                code: ErrorCode::InvalidValue,
                message,
            },
        }
    }

    /// A transaction coordinated here, if this site serves its shard.
    fn begin(&self) -> Result<DistTxn<'s>, Reply> {
        let site = &*self.shared.site;
        if !site.serving() {
            let shard = site.shard_id();
            return Err(Reply::NotLeader {
                shard,
                leader: site.leader_of(shard),
            });
        }
        site.begin(self.worker).map_err(|e| Reply::Error {
            code: ErrorCode::ShuttingDown,
            message: e.to_string(),
        })
    }

    fn op(&mut self, txn: u32, op: &Op) -> Reply {
        let catalog = Arc::clone(&self.shared.catalog);
        let max_ops = self.shared.limits.max_ops;
        let Some(open) = self.open.get_mut(&txn) else {
            return self.missing(txn);
        };
        open.ops += 1;
        open.last = Instant::now();
        if open.ops > max_ops {
            self.open.remove(&txn);
            self.end(txn, "too_many_ops");
            return Reply::Aborted {
                reason: "too_many_ops".into(),
                retryable: false,
            };
        }
        let max_scan_rows = self.shared.limits.max_scan_rows;
        match apply(&mut open.tx, &*catalog, op, max_scan_rows) {
            Ok(r) => Reply::Result(r),
            Err(OpError::Refused(code, message)) => Reply::Error { code, message },
            Err(OpError::Abort(a)) => {
                self.open.remove(&txn);
                self.aborted(a.reason)
            }
        }
    }

    fn failed(&self, e: OpError) -> Reply {
        match e {
            OpError::Abort(a) => self.aborted(a.reason),
            OpError::Refused(code, message) => {
                // A one-shot transaction with a refused operation is not committed.
                self.shared.counters.aborted("invalid");
                Reply::Error { code, message }
            }
        }
    }

    fn aborted(&self, reason: AbortReason) -> Reply {
        self.shared.counters.aborted(reason.name());
        Reply::Aborted {
            reason: reason.name().into(),
            retryable: !matches!(reason, AbortReason::TooLarge),
        }
    }

    fn commit(&self, tx: DistTxn<'_>, results: Option<Vec<OpResult>>) -> Reply {
        let started = Instant::now();
        match tx.commit() {
            Ok(_) => {
                self.shared.counters.released(started.elapsed());
                match results {
                    Some(r) => Reply::Ran(r),
                    None => Reply::Committed,
                }
            }
            Err(CommitError::Aborted(reason)) => self.aborted(reason),
            Err(CommitError::Unknown { why, .. }) => {
                self.shared.counters.unknown();
                Reply::Unknown {
                    why: why.to_string(),
                }
            }
        }
    }

    fn missing(&self, txn: u32) -> Reply {
        match self.ended.get(&txn) {
            Some(why) => Reply::Aborted {
                reason: (*why).into(),
                // Idle transactions may be run again; one that hit the operation bound would
                // hit it again.
                retryable: *why != "too_many_ops",
            },
            None => Reply::Error {
                code: ErrorCode::UnknownTxn,
                message: format!("no open transaction {txn} on this connection"),
            },
        }
    }
}

/// Logs a connection's end once, at a level fitting its cause.
pub(crate) fn log_end(name: &str, peer: std::net::SocketAddr, r: &Result<(), FrameError>) {
    match r {
        Ok(()) | Err(FrameError::Closed) => debug!(site = %name, %peer, "client disconnected"),
        Err(e @ FrameError::TooLarge { .. }) => {
            warn!(site = %name, %peer, error = %e, "closing client connection: malformed frame")
        }
        Err(e) => debug!(site = %name, %peer, error = %e, "client connection ended"),
    }
}
