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
//!
//! Finished transactions are remembered up to `SiteConfig::finished_cap`; when
//! one is forgotten its number raises its coordinator's **horizon**, and any
//! request about a transaction at or below the horizon that is not open here
//! is refused (transaction numbers of a coordinator only grow, across restarts
//! too), so a stale duplicate can never start a finished transaction again. A
//! commit decision is applied only to the piece whose reserved timestamp it
//! carries. A piece still in its read phase that hears nothing from its
//! coordinator for `SiteConfig::read_phase_timeout` is forgotten
//! ([`Participants::expire`]); it holds no lock, and a later Lock or Validate
//! is refused.
//!
//! Every piece belongs to the epoch its requests carried, which must be the epoch
//! this site serves. When that epoch ends here (another epoch opens, or the site
//! stops leading), every piece of it is ended ([`Participants::end_epochs`]): its
//! reservation is cancelled and its locks released. Its transaction cannot be
//! released any more: its piece never reached the log before the epoch's `NoOp`,
//! and the stream's heartbeats stayed below the reservation, so `VT[s]` is above
//! `FVW(e)[s]` and the discard rule drops it (a crashed coordinator's
//! transactions end this way when its shard changes leader).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_txn::{Locked, Prepared, Transaction};

use mako_replication::NodeId;
use mako_watermark::Epoch;
use parking_lot::Mutex;

use crate::msg::{Op, PeerError, Refusal, Reply, TxnId};
use crate::site::Site;
use crate::streams::piece_len;

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
    /// The epoch of its transaction.
    epoch: Epoch,
    /// When the piece last moved or last asked the coordinator.
    since: Instant,
    state: State<'a>,
}

/// A site's [`Participants`] behind a lock, shared by every thread that receives a
/// coordinator's request or decision (the transport's receiving threads, which serve them
/// on receipt in one process; the control thread otherwise) and the site's ticker, which
/// checks held pieces when the lock is free. It holds the site it belongs to; nothing is
/// ever sent while its lock is held.
pub(crate) struct Desk(DeskCell);

/// The participants, borrowing the site the desk holds.
type Guarded<'a> = Mutex<Participants<'a>>;

self_cell::self_cell!(
    struct DeskCell {
        owner: Arc<Site>,
        #[not_covariant]
        dependent: Guarded,
    }
);

impl Desk {
    /// An empty desk of `site`.
    pub(crate) fn new(site: Arc<Site>) -> Self {
        Desk(DeskCell::new(site, |s| Mutex::new(Participants::new(s))))
    }

    /// Runs `f` on the participants, under their lock (`f` must not send or block).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Participants<'_>) -> R) -> R {
        self.0.with_dependent(|_, m| f(&mut m.lock()))
    }

    /// Like [`Desk::with`] if the lock is free now; `None` (nothing run) if it is held.
    pub(crate) fn try_with<R>(&self, f: impl FnOnce(&mut Participants<'_>) -> R) -> Option<R> {
        self.0
            .with_dependent(|_, m| m.try_lock().map(|mut p| f(&mut p)))
    }
}

/// The pieces of one participant site (behind its [`Desk`]).
pub(crate) struct Participants<'a> {
    site: &'a Site,
    open: HashMap<TxnId, Piece<'a>>,
    finished: HashMap<TxnId, Finished>,
    order: VecDeque<TxnId>,
    /// Per coordinator: the largest transaction number forgotten from `finished`.
    horizon: HashMap<NodeId, u64>,
    /// The epoch of the request being handled.
    epoch: Epoch,
}

type Writes = Vec<(u32, Vec<u8>, Option<Vec<u8>>)>;

impl<'a> Participants<'a> {
    pub(crate) fn new(site: &'a Site) -> Self {
        Participants {
            site,
            open: HashMap::new(),
            finished: HashMap::new(),
            order: VecDeque::new(),
            horizon: HashMap::new(),
            epoch: 0,
        }
    }

    /// Pieces held (open, locked or prepared).
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    fn finish(&mut self, txn: TxnId, how: Finished) {
        self.open.remove(&txn);
        if self.finished.insert(txn, how).is_none() {
            self.order.push_back(txn);
            while self.order.len() > self.site.cfg.finished_cap.max(1) {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.finished.remove(&old);
                let h = self.horizon.entry(old.0).or_insert(0);
                *h = (*h).max(old.1);
            }
        }
    }

    /// Whether `txn` is neither open nor remembered but at or below its coordinator's horizon:
    /// it may have finished here already, so it must not start again.
    fn forgotten(&self, txn: TxnId) -> bool {
        !self.open.contains_key(&txn)
            && !self.finished.contains_key(&txn)
            && self.horizon.get(&txn.0).is_some_and(|&h| txn.1 <= h)
    }

    /// The open piece of `txn`, started if the transaction is new here.
    fn piece(&mut self, txn: TxnId, stream: u32) -> Option<&mut Piece<'a>> {
        if self.finished.contains_key(&txn) || self.forgotten(txn) {
            return None;
        }
        let site = self.site;
        let epoch = self.epoch;
        let p = self.open.entry(txn).or_insert_with(|| Piece {
            stream,
            epoch,
            since: Instant::now(),
            state: State::Open(site.shard.begin_on(stream)),
        });
        p.since = Instant::now();
        Some(p)
    }

    /// Handles one request of a coordinator.
    pub(crate) fn request(&mut self, epoch: u32, txn: TxnId, stream: u32, op: Op) -> Reply {
        let site = self.site;
        match site.open_epoch() {
            Some(e) if e == epoch => {}
            Some(e) => return Reply::Refused(Refusal::StaleEpoch(e)),
            // Refused before anything is done: the hint lets the coordinator retry there.
            None if !site.is_leader() => {
                return Reply::Refused(Refusal::NotLeader(site.group.leader()));
            }
            // Leading, but the epoch is not open yet.
            None => return Reply::Refused(Refusal::StaleEpoch(site.epochs.current())),
        }
        self.epoch = epoch;
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
            Op::Version { table, key } => {
                let Some(t) = site.table_by_id(table) else {
                    return Reply::Refused(Refusal::Unknown);
                };
                match self.piece(txn, stream).map(|p| &mut p.state) {
                    Some(State::Open(tx)) => Reply::Version(tx.version(t, &key)),
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

    /// Buffers `writes` into an open piece; an unknown table, or a piece too large for one
    /// log entry, refuses.
    fn buffer(&self, tx: &mut Transaction<'a>, writes: Writes) -> Result<(), Refusal> {
        let shards = self.site.cfg.shards as usize;
        let refs = writes
            .iter()
            .map(|(table, key, value)| mako_commitlog::WriteRef {
                table: *table,
                key,
                value: value.as_deref(),
            });
        if piece_len(shards, refs) > self.site.log.max_piece_bytes() {
            return Err(Refusal::TooLarge);
        }
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
        if self.finished.contains_key(&txn) || self.forgotten(txn) {
            return Reply::Refused(Refusal::Unknown);
        }
        let Some(piece) = self.open.remove(&txn) else {
            let tx = self.site.shard.begin_on(stream);
            return self.lock_open(txn, stream, tx, writes);
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
                        epoch: self.epoch,
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
            None if self.forgotten(txn) => return Reply::Refused(Refusal::Unknown),
            None => {}
        }
        let piece = match self.open.remove(&txn) {
            Some(p) => p,
            None => Piece {
                stream,
                epoch: self.epoch,
                since: Instant::now(),
                state: State::Open(self.site.shard.begin_on(stream)),
            },
        };
        let (stream, epoch) = (piece.stream, piece.epoch);
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
        if self.site.holds_lease().is_err() {
            // What it read may be stale: another leader may have committed before validation.
            // (Checked without waiting: this thread serves every participant request.)
            p.abort();
            self.finish(txn, Finished::Aborted);
            return Reply::Refused(Refusal::NotLeader(None));
        }
        let deps = p.deps().to_vec();
        if !p.wrote() {
            p.read_only();
            self.finish(txn, Finished::ReadOnly(deps.clone()));
            return Reply::Prepared { deps, ts: None };
        }
        // Every VT[s] ever observed is at most c_s, so allocating on the local
        // dependency already exceeds the merged one.
        let me = self.site.shard_id as usize;
        let dep = deps.get(me).copied().unwrap_or(0);
        let Some(ts) = self.site.log.reserve(stream, epoch, || p.allocate(dep)) else {
            // The stream froze after a lost log entry, or the epoch ended: no new piece.
            p.abort();
            self.finish(txn, Finished::Aborted);
            // No hint: this piece was ended here, so it must not be retried elsewhere.
            return Reply::Refused(Refusal::NotLeader(None));
        };
        self.open.insert(
            txn,
            Piece {
                stream,
                epoch,
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

    /// Applies the coordinator's decision (`Some(vt)`: commit); `Ok(None)` when done, else why
    /// not; `Err` if the decision cannot be about this transaction's piece (ignored).
    pub(crate) fn decide(
        &mut self,
        epoch: u32,
        txn: TxnId,
        commit: Option<Vec<u64>>,
    ) -> Result<Option<Refusal>, PeerError> {
        let site = self.site;
        let shards = site.cfg.shards as usize;
        if let Some(vt) = &commit
            && vt.len() != shards
        {
            return Err(PeerError::VtLength {
                len: vt.len(),
                shards,
            });
        }
        match (commit.is_some(), self.finished.get(&txn)) {
            // Repeated decisions answer as the first did.
            (true, Some(Finished::Committed)) => return Ok(None),
            (true, Some(_)) => return Ok(Some(Refusal::Unknown)),
            (false, Some(Finished::Committed)) => return Ok(Some(Refusal::Conflict)),
            (false, Some(_)) => return Ok(None),
            (_, None) => {}
        }
        let Some(commit) = commit else {
            if self.forgotten(txn) {
                // Finished here long ago: nothing to undo, nothing to remember again.
                return Ok(None);
            }
            if let Some(piece) = self.open.remove(&txn) {
                match piece.state {
                    State::Prepared { p, ts, .. } => {
                        site.log.cancel(piece.stream, piece.epoch, ts);
                        p.abort();
                    }
                    State::Locked(l) => l.abort(),
                    State::Open(_) => {}
                }
            }
            self.finish(txn, Finished::Aborted);
            return Ok(None);
        };
        let Some(piece) = self.open.remove(&txn) else {
            return Ok(Some(Refusal::Unknown));
        };
        if epoch != piece.epoch || site.open_epoch() != Some(piece.epoch) {
            // The piece's epoch ended here (its pieces are ended with it) or the decision
            // names another: the discard rule decides the transaction.
            let current = site.open_epoch().unwrap_or_else(|| site.epochs.current());
            self.end(txn, piece);
            return Ok(Some(Refusal::StaleEpoch(current)));
        }
        let me = site.shard_id as usize;
        let decided = commit.get(me).copied().unwrap_or(0);
        match piece.state {
            State::Prepared { p, ts, .. } if decided == ts => {
                let vt: mako_storage::Vt = commit.iter().copied().collect();
                let logged = p.with_writes(|w| {
                    site.log
                        .fulfil(piece.stream, piece.epoch, &commit, w.iter(), || {
                            p.install_in_place(&vt)
                        })
                });
                if !logged {
                    // The epoch ended under it: not logged, so never visible either.
                    p.abort();
                    self.finish(txn, Finished::Aborted);
                    let current = site.epochs.current();
                    return Ok(Some(Refusal::StaleEpoch(current)));
                }
                self.finish(txn, Finished::Committed);
                Ok(None)
            }
            State::Prepared { p, ts, .. } if decided < ts => {
                // A decision on an older incarnation (timestamps only grow): this piece is a
                // stale restart of a finished transaction. End it and give its timestamp back.
                tracing::warn!(?txn, decided, ts, "commit decision for another incarnation");
                site.log.cancel(piece.stream, piece.epoch, ts);
                p.abort();
                self.finish(txn, Finished::Aborted);
                Ok(Some(Refusal::Mismatch))
            }
            State::Prepared { p, deps, ts } => {
                // No incarnation of this piece has that timestamp: not a real decision.
                self.open.insert(
                    txn,
                    Piece {
                        state: State::Prepared { p, deps, ts },
                        ..piece
                    },
                );
                Err(PeerError::TsMismatch { decided, ts })
            }
            state => {
                // Commit without a prepared piece: refuse, keep the state for the coordinator.
                self.open.insert(txn, Piece { state, ..piece });
                Ok(Some(Refusal::Unknown))
            }
        }
    }

    /// Ends a piece without effect: its reservation is cancelled and its locks released.
    fn end(&mut self, txn: TxnId, piece: Piece<'a>) {
        match piece.state {
            State::Prepared { p, ts, .. } => {
                self.site.log.cancel(piece.stream, piece.epoch, ts);
                p.abort();
            }
            State::Locked(l) => l.abort(),
            State::Open(_) => {}
        }
        self.finish(txn, Finished::Aborted);
    }

    /// Ends every piece whose epoch is not `open` (the epoch this site serves, if any).
    pub(crate) fn end_epochs(&mut self, open: Option<Epoch>) {
        if self.open.values().all(|p| Some(p.epoch) == open) {
            return;
        }
        let ended: Vec<TxnId> = self
            .open
            .iter()
            .filter(|(_, p)| Some(p.epoch) != open)
            .map(|(t, _)| *t)
            .collect();
        for txn in ended {
            if let Some(piece) = self.open.remove(&txn) {
                self.end(txn, piece);
            }
        }
    }

    /// Forgets pieces still in their read phase that heard nothing for `timeout` (they hold no
    /// lock); a later Lock or Validate of them is refused.
    pub(crate) fn expire(&mut self, now: Instant, timeout: Duration) {
        let idle: Vec<TxnId> = self
            .open
            .iter()
            .filter(|(_, p)| matches!(p.state, State::Open(_)))
            .filter(|(_, p)| now.duration_since(p.since) >= timeout)
            .map(|(txn, _)| *txn)
            .collect();
        for txn in idle {
            self.finish(txn, Finished::Aborted);
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
