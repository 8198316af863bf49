//! A shard leader's side of multi-shard commit: one piece per transaction, idempotent per step.
//!
//! A piece moves `Open` (reads, on `Get`/`Scan`) → `Locked` (on `Lock`) →
//! `Prepared` (on `Validate`; the `VT` component reserved) → finished by the
//! coordinator's decision. Every request is idempotent per (transaction, step):
//! a duplicated `Lock` or `Validate` answers as the first did and never drops
//! the state, and finished transactions are remembered (a bounded number) so
//! that a late or repeated message cannot start them again. A locked or
//! prepared piece never aborts on its own: past the timeout it asks the
//! coordinator ([`Participants::overdue`]), whose recorded decision (or Abort,
//! if it has none) ends it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_txn::{Locked, Prepared, Transaction};

use crate::msg::{Op, Refusal, Reply, TxnId};
use crate::site::Site;

/// Finished transactions remembered for idempotency.
const FINISHED_CAP: usize = 1 << 16;

/// How a piece ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finished {
    /// Installed and appended.
    Committed,
    /// Released without effect.
    Aborted,
    /// Validated read-only piece (its answer, for a repeated `Validate`).
    ReadOnly(Vec<u64>),
}

enum State<'a> {
    Open(Transaction<'a>),
    Locked(Locked<'a>),
    Prepared {
        p: Prepared<'a>,
        deps: Vec<u64>,
        ts: u64,
    },
}

struct Piece<'a> {
    stream: u32,
    /// When the piece last moved or last asked the coordinator.
    since: Instant,
    state: State<'a>,
}

/// The pieces of one participant site (owned by its control thread).
pub(crate) struct Participants<'a> {
    site: &'a Site,
    open: HashMap<TxnId, Piece<'a>>,
    finished: HashMap<TxnId, Finished>,
    order: VecDeque<TxnId>,
}

type Writes = Vec<(u32, Vec<u8>, Option<Vec<u8>>)>;

impl<'a> Participants<'a> {
    pub(crate) fn new(site: &'a Site) -> Self {
        Participants {
            site,
            open: HashMap::new(),
            finished: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn finish(&mut self, txn: TxnId, how: Finished) {
        self.open.remove(&txn);
        if self.finished.insert(txn, how).is_none() {
            self.order.push_back(txn);
            if self.order.len() > FINISHED_CAP
                && let Some(old) = self.order.pop_front()
            {
                self.finished.remove(&old);
            }
        }
    }

    /// The open piece of `txn`, started if the transaction is new here.
    fn piece(&mut self, txn: TxnId, stream: u32) -> Option<&mut Piece<'a>> {
        if self.finished.contains_key(&txn) {
            return None;
        }
        let site = self.site;
        Some(self.open.entry(txn).or_insert_with(|| Piece {
            stream,
            since: Instant::now(),
            state: State::Open(site.shard.begin_on(stream)),
        }))
    }

    /// Handles one request of a coordinator.
    pub(crate) fn request(&mut self, epoch: u32, txn: TxnId, stream: u32, op: Op) -> Reply {
        let site = self.site;
        if epoch < site.shard.epoch() {
            return Reply::Refused(Refusal::StaleEpoch(site.shard.epoch()));
        }
        if !site.is_leader() {
            return Reply::Refused(Refusal::NotLeader);
        }
        match op {
            Op::Get { table, key } => {
                let Some(t) = site.table_by_id(table) else {
                    return Reply::Refused(Refusal::Unknown);
                };
                match self.piece(txn, stream).map(|p| &mut p.state) {
                    Some(State::Open(tx)) => Reply::Value(tx.get(t, &key).map(|b| b.to_vec())),
                    _ => Reply::Refused(Refusal::Unknown),
                }
            }
            Op::Scan {
                table,
                lo,
                hi,
                limit,
                reverse,
            } => {
                let Some(t) = site.table_by_id(table) else {
                    return Reply::Refused(Refusal::Unknown);
                };
                let Some(State::Open(tx)) = self.piece(txn, stream).map(|p| &mut p.state) else {
                    return Reply::Refused(Refusal::Unknown);
                };
                let range = (
                    lo.as_ref().map(|k| k.as_slice()),
                    hi.as_ref().map(|k| k.as_slice()),
                );
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                let rows = if reverse {
                    tx.rscan(t, range, limit)
                } else {
                    tx.scan(t, range, limit)
                };
                Reply::Rows(
                    rows.into_iter()
                        .map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .collect(),
                )
            }
            Op::Lock { writes } => self.lock(txn, stream, writes),
            Op::Validate { writes } => self.validate(txn, stream, writes),
        }
    }

    /// Buffers `writes` into an open piece; an unknown table refuses.
    fn buffer(&self, tx: &mut Transaction<'a>, writes: Writes) -> Result<(), Refusal> {
        for (table, key, value) in writes {
            let t = self.site.table_by_id(table).ok_or(Refusal::Unknown)?;
            match value {
                Some(v) => tx.put(t, &key, Bytes::from(v)),
                None => tx.delete(t, &key),
            }
        }
        Ok(())
    }

    fn lock(&mut self, txn: TxnId, stream: u32, writes: Writes) -> Reply {
        if self.finished.contains_key(&txn) {
            return Reply::Refused(Refusal::Unknown);
        }
        let Some(piece) = self.open.remove(&txn) else {
            return self.lock_open(txn, stream, self.site.shard.begin_on(stream), writes);
        };
        match piece.state {
            State::Open(tx) => self.lock_open(txn, piece.stream, tx, writes),
            // A repeated Lock: already done.
            state => {
                self.open.insert(txn, Piece { state, ..piece });
                Reply::Locked
            }
        }
    }

    fn lock_open(
        &mut self,
        txn: TxnId,
        stream: u32,
        mut tx: Transaction<'a>,
        writes: Writes,
    ) -> Reply {
        if let Err(r) = self.buffer(&mut tx, writes) {
            self.finish(txn, Finished::Aborted);
            return Reply::Refused(r);
        }
        match tx.lock() {
            Ok(l) => {
                self.open.insert(
                    txn,
                    Piece {
                        stream,
                        since: Instant::now(),
                        state: State::Locked(l),
                    },
                );
                Reply::Locked
            }
            Err(_) => {
                self.finish(txn, Finished::Aborted);
                Reply::Refused(Refusal::Conflict)
            }
        }
    }

    fn validate(&mut self, txn: TxnId, stream: u32, writes: Writes) -> Reply {
        match self.finished.get(&txn) {
            Some(Finished::ReadOnly(deps)) => {
                return Reply::Prepared {
                    deps: deps.clone(),
                    ts: None,
                };
            }
            Some(_) => return Reply::Refused(Refusal::Unknown),
            None => {}
        }
        let piece = match self.open.remove(&txn) {
            Some(p) => p,
            None => Piece {
                stream,
                since: Instant::now(),
                state: State::Open(self.site.shard.begin_on(stream)),
            },
        };
        let stream = piece.stream;
        let locked = match piece.state {
            State::Open(mut tx) => {
                if let Err(r) = self.buffer(&mut tx, writes) {
                    self.finish(txn, Finished::Aborted);
                    return Reply::Refused(r);
                }
                match tx.lock() {
                    Ok(l) => l,
                    Err(_) => {
                        self.finish(txn, Finished::Aborted);
                        return Reply::Refused(Refusal::Conflict);
                    }
                }
            }
            State::Locked(l) => l,
            // A repeated Validate: the same answer.
            State::Prepared { p, deps, ts } => {
                let reply = Reply::Prepared {
                    deps: deps.clone(),
                    ts: Some(ts),
                };
                self.open.insert(
                    txn,
                    Piece {
                        state: State::Prepared { p, deps, ts },
                        ..piece
                    },
                );
                return reply;
            }
        };
        let p = match locked.validate() {
            Ok(p) => p,
            Err(_) => {
                self.finish(txn, Finished::Aborted);
                return Reply::Refused(Refusal::Conflict);
            }
        };
        let deps = p.deps().to_vec();
        if !p.wrote() {
            p.read_only();
            self.finish(txn, Finished::ReadOnly(deps.clone()));
            return Reply::Prepared { deps, ts: None };
        }
        // Every VT[s] ever observed is at most c_s, so allocating on the local
        // dependency already exceeds the merged one.
        let me = self.site.shard_id as usize;
        let Some(ts) = self.site.log.reserve(stream, || p.allocate(deps[me])) else {
            p.abort();
            self.finish(txn, Finished::Aborted);
            return Reply::Refused(Refusal::Unknown);
        };
        self.open.insert(
            txn,
            Piece {
                stream,
                since: Instant::now(),
                state: State::Prepared {
                    p,
                    deps: deps.clone(),
                    ts,
                },
            },
        );
        Reply::Prepared { deps, ts: Some(ts) }
    }

    /// Applies the coordinator's decision (`Some(vt)`: commit); `None` when done, else why not.
    pub(crate) fn decide(
        &mut self,
        epoch: u32,
        txn: TxnId,
        commit: Option<Vec<u64>>,
    ) -> Option<Refusal> {
        let site = self.site;
        if epoch < site.shard.epoch() {
            return Some(Refusal::StaleEpoch(site.shard.epoch()));
        }
        match (commit.is_some(), self.finished.get(&txn)) {
            // Repeated decisions answer as the first did.
            (true, Some(Finished::Committed)) => return None,
            (true, Some(_)) => return Some(Refusal::Unknown),
            (false, Some(Finished::Committed)) => return Some(Refusal::Conflict),
            (false, Some(_)) => return None,
            (_, None) => {}
        }
        let Some(commit) = commit else {
            if let Some(piece) = self.open.remove(&txn) {
                match piece.state {
                    State::Prepared { p, ts, .. } => {
                        site.log.cancel(piece.stream, ts);
                        p.abort();
                    }
                    State::Locked(l) => l.abort(),
                    State::Open(_) => {}
                }
            }
            self.finish(txn, Finished::Aborted);
            return None;
        };
        if !site.is_leader() {
            // The prepared piece stays: the epoch change decides it.
            return Some(Refusal::NotLeader);
        }
        let Some(piece) = self.open.remove(&txn) else {
            return Some(Refusal::Unknown);
        };
        match piece.state {
            State::Prepared { p, .. } => {
                p.with_writes(|w| site.log.fulfil(piece.stream, &commit, w.iter()));
                p.install(commit.into_iter().collect());
                self.finish(txn, Finished::Committed);
                None
            }
            state => {
                // Commit without a prepared piece: refuse, keep the state for the coordinator.
                self.open.insert(txn, Piece { state, ..piece });
                Some(Refusal::Unknown)
            }
        }
    }

    /// Locked or prepared pieces that waited past `timeout` (each is asked about once per timeout).
    pub(crate) fn overdue(&mut self, now: Instant, timeout: Duration) -> Vec<TxnId> {
        self.open
            .iter_mut()
            .filter(|(_, p)| !matches!(p.state, State::Open(_)))
            .filter(|(_, p)| now.duration_since(p.since) >= timeout)
            .map(|(txn, p)| {
                p.since = now;
                *txn
            })
            .collect()
    }
}
