//! The coordinator: a transaction over any shards, speculative 2PC, release at `VT <= VW`.
//!
//! Reads and writes on the coordinator's own shard run in a local OCC
//! transaction; on another shard they run in a participant transaction on that
//! shard's leader, reached over the control channel. The leader is the site's view
//! ([`Site::leader_of`]); a transaction's first request to a shard that a non-leader
//! refuses with a hint (it did nothing there) is sent once more to the hinted
//! replica, within the same timeout; a later refused request aborts the transaction
//! (its earlier requests live on the replica first addressed). `commit` then
//! (1) locks every write set — the local one without a message, the remote
//! ones with `Lock` — and only then (2) validates reads on every participant
//! (`Validate`, also on read-only shards, which are contacted only then); each
//! written shard allocates its `VT` component (`c_s = max(c_s, deps[s]) + 1`)
//! as it validates. With a single remote participant, (1) and (2) are one
//! message: it locks and validates after the local lock and before the local
//! validation. (3) The coordinator records its decision, sends it (Commit with
//! the final `VT`, or Abort) and resends it until every participant
//! acknowledged; each participant installs and logs its piece (speculative:
//! others may read it now). (4) The transaction is released once every
//! participant acknowledged and `VT <= VW`. A participant that refuses a
//! Commit leaves the outcome pending (never released, never reported aborted).
//!
//! Between the local reservation and the recorded decision every exit, a panic
//! included, cancels the reservation and records Abort (drop guards); after
//! the commit decision is recorded nothing is cancelled any more (a lost local
//! piece then keeps its stream below it: pending, never released).
//!
//! Decision records are bounded (`SiteConfig::max_decisions`): past the bound
//! the oldest record is forgotten, its transaction stays pending for good
//! (`Unknown`), and inquiries about transactions at or below the largest
//! forgotten number get no answer (never Abort, which could contradict a
//! forgotten Commit). A silent participant is sent a decision at most
//! `1 + SiteConfig::max_resends` times; after that the outcome stays pending
//! unless it acknowledges late or inquires.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_replication::NodeId;
use mako_storage::Key;
use mako_txn::{Abort, AbortReason, CommitInfo, Locked, Prepared, Transaction, merge};
use mako_watermark::{Epoch, Fate, stream_id};
use parking_lot::{Condvar, Mutex};

use crate::epochs::{EpochView, Verdict};
use crate::msg::{Msg, Op, Refusal, Reply, TxnId};
use crate::site::Site;

/// Why a speculatively committed transaction is not released (yet): its outcome is pending, not aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Pending {
    /// A participant has not acknowledged its piece yet (the coordinator keeps resending).
    #[error("a participant has not acknowledged its piece")]
    Unacknowledged,
    /// A participant refused the commit (e.g. it no longer leads); the epoch change decides.
    #[error("a participant refused the commit ({0:?}); the epoch change decides")]
    Refused(Refusal),
    /// `VT <= VW` did not happen in time.
    #[error("not released within the timeout")]
    ReleaseTimeout,
}

/// Why [`Speculative::wait_release`] returned without a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// Not released yet; it may still be.
    #[error(transparent)]
    Pending(#[from] Pending),
    /// Aborted after all: its epoch's final watermark discards it (never visible).
    #[error("transaction aborted: {0}")]
    Aborted(AbortReason),
}

/// Why [`DistTxn::commit`] did not return a released transaction.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// Aborted: nothing of it is or will ever be visible; the caller may retry.
    #[error("transaction aborted: {0}")]
    Aborted(AbortReason),
    /// Committed speculatively, outcome pending: it may still be released. Retrying it
    /// could apply it twice; wait on the handle or ask later instead.
    #[error("transaction outcome unknown: {why}")]
    Unknown {
        /// Why it is not released yet.
        why: Pending,
        /// The commit, to wait on ([`Speculative::wait_release`]).
        spec: Box<Speculative>,
    },
}

impl CommitError {
    /// The abort reason, if it aborted.
    pub fn abort_reason(&self) -> Option<AbortReason> {
        match self {
            CommitError::Aborted(r) => Some(*r),
            CommitError::Unknown { .. } => None,
        }
    }
}

impl From<Abort> for CommitError {
    fn from(a: Abort) -> Self {
        CommitError::Aborted(a.reason)
    }
}

/// A committed transaction not yet known durable: await [`Speculative::wait_release`] before acknowledging.
#[derive(Debug, Clone)]
pub struct Speculative {
    /// The commit's outcome (epoch, `VT`).
    pub info: CommitInfo,
    epochs: Arc<EpochView>,
    /// The participants' acknowledgements, if any remote piece was committed.
    acks: Option<Arc<Decision>>,
}

/// How long a wait for acknowledgements runs before the epoch's verdict is looked at again.
const ACK_SLICE: Duration = Duration::from_millis(20);

/// How long a wait for a participant's reply runs before the epoch is looked at again.
const EPOCH_CHECK: Duration = Duration::from_millis(10);

impl Speculative {
    /// The final watermark's verdict, once its epoch has one.
    fn fate(&self) -> Fate {
        self.epochs.with(|h| h.fate(self.info.epoch, &self.info.vt))
    }

    /// Whether it is released now: its epoch's final watermark keeps it, or every participant
    /// acknowledged and the epoch's `VW` covers its `VT`.
    pub fn is_released(&self) -> bool {
        match self.fate() {
            Fate::Kept => true,
            Fate::Discarded => false,
            _ => {
                self.acks.as_ref().is_none_or(|d| d.acked().is_ok())
                    && self.epochs.judge(self.info.epoch, &self.info.vt) == Verdict::Release
            }
        }
    }

    /// The outcome [`Speculative::wait_release`] would return now, without waiting: `None`
    /// while it is pending. Changes of it are announced by [`EpochView::listen`], except the
    /// arrival of participants' acknowledgements (a commit with remote pieces).
    pub fn poll_release(&self) -> Option<Result<(), ReleaseError>> {
        let failover = ReleaseError::Aborted(AbortReason::Failover);
        match self.fate() {
            Fate::Kept => return Some(Ok(())),
            Fate::Discarded => return Some(Err(failover)),
            _ => {}
        }
        if self.acks.as_ref().is_some_and(|d| d.acked().is_err()) {
            return None;
        }
        match self.epochs.judge(self.info.epoch, &self.info.vt) {
            Verdict::Release => Some(Ok(())),
            Verdict::Discard => Some(Err(failover)),
            Verdict::Wait => None,
        }
    }

    /// Waits for release; if it does not come within `timeout`, says why the outcome is still
    /// pending, or that the failover discarded it (`Aborted(Failover)`: never visible).
    pub fn wait_release(&self, timeout: Duration) -> Result<(), ReleaseError> {
        let deadline = Instant::now() + timeout;
        let failover = ReleaseError::Aborted(AbortReason::Failover);
        if let Some(d) = &self.acks {
            // Acknowledgements, unless the epoch's final watermark decides first (a refusing
            // or silent participant leaves only that).
            loop {
                match self.fate() {
                    Fate::Kept => return Ok(()),
                    Fate::Discarded => return Err(failover),
                    _ => {}
                }
                match d.acked() {
                    Ok(()) => break,
                    Err(Pending::Refused(r)) => {
                        // Only the final watermark can decide it now.
                        let (e, vt) = (self.info.epoch, &self.info.vt);
                        return match self.epochs.wait_final(e, vt, deadline) {
                            Fate::Kept => Ok(()),
                            Fate::Discarded => Err(failover),
                            _ => Err(Pending::Refused(r).into()),
                        };
                    }
                    Err(_) => {}
                }
                let slice = deadline.min(Instant::now() + ACK_SLICE);
                match d.wait_acked(slice) {
                    Ok(()) => break,
                    Err(why) if Instant::now() >= deadline => return Err(why.into()),
                    Err(_) => {}
                }
            }
        }
        match self.epochs.wait(self.info.epoch, &self.info.vt, deadline) {
            Verdict::Release => Ok(()),
            Verdict::Discard => Err(failover),
            Verdict::Wait => Err(Pending::ReleaseTimeout.into()),
        }
    }
}

/// Where one participant stands with a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerAck {
    /// Not acknowledged: when the decision was last sent, and how many times it was.
    Waiting {
        /// Last send.
        last: Instant,
        /// Sends so far.
        sends: u32,
    },
    /// Not acknowledged and no longer resent (the outcome stays pending).
    GaveUp,
    /// Refused (the outcome stays pending unless it later acknowledges).
    Refused(Refusal),
    /// Acknowledged.
    Done,
}

/// Acknowledgements of a decision, per participant.
#[derive(Debug, Default)]
struct AckState {
    peers: BTreeMap<NodeId, PeerAck>,
}

impl AckState {
    /// `Ok` once every participant acknowledged; else why the outcome is pending.
    fn status(&self) -> Result<(), Pending> {
        let mut waiting = false;
        for a in self.peers.values() {
            match a {
                PeerAck::Refused(r) => return Err(Pending::Refused(*r)),
                PeerAck::Waiting { .. } | PeerAck::GaveUp => waiting = true,
                PeerAck::Done => {}
            }
        }
        if waiting {
            Err(Pending::Unacknowledged)
        } else {
            Ok(())
        }
    }
}

/// A coordinator's recorded decision on one multi-shard transaction.
#[derive(Debug)]
pub(crate) struct Decision {
    txn: TxnId,
    epoch: u32,
    /// The final `VT` if the decision is commit; `None` means abort.
    commit: Option<Vec<u64>>,
    acks: Mutex<AckState>,
    cv: Condvar,
}

impl Decision {
    fn msg(&self) -> Msg {
        Msg::Decision {
            txn: self.txn,
            epoch: self.epoch,
            commit: self.commit.clone(),
        }
    }

    /// `Ok` once every participant acknowledged.
    fn acked(&self) -> Result<(), Pending> {
        self.acks.lock().status()
    }

    /// Waits until every participant acknowledged, one refused, or `deadline`.
    fn wait_acked(&self, deadline: Instant) -> Result<(), Pending> {
        let mut a = self.acks.lock();
        loop {
            match a.status() {
                Err(Pending::Unacknowledged) => {}
                done => return done,
            }
            if self.cv.wait_until(&mut a, deadline).timed_out() {
                return a.status();
            }
        }
    }
}

/// The coordinator's records, bounded.
#[derive(Debug, Default)]
struct DecisionTable {
    /// `None`: in commit, not decided yet; `Some`: recorded and not acknowledged by all.
    records: HashMap<TxnId, Option<Arc<Decision>>>,
    /// Recorded decisions, oldest first (may still name removed ones; compacted now and then).
    order: VecDeque<TxnId>,
    /// Decisions (not placeholders) in `records`.
    decided: usize,
    /// Largest transaction number whose record was forgotten for room.
    forgotten: Option<u64>,
}

/// A coordinator's transactions in commit: undecided ones, and decisions not yet acknowledged by all.
#[derive(Debug, Default)]
pub(crate) struct Decisions {
    table: Mutex<DecisionTable>,
    /// Participants given up on (decision no longer resent).
    gave_up: AtomicU64,
}

impl Decisions {
    /// Records held (placeholders and decisions).
    pub(crate) fn len(&self) -> usize {
        self.table.lock().records.len()
    }

    /// Participants given up on so far.
    pub(crate) fn gave_up(&self) -> u64 {
        self.gave_up.load(Ordering::Relaxed)
    }

    fn placeholder(&self, txn: TxnId) {
        self.table.lock().records.insert(txn, None);
    }

    fn remove(&self, txn: TxnId) {
        let mut t = self.table.lock();
        if let Some(Some(_)) = t.records.remove(&txn) {
            t.decided -= 1;
        }
    }

    /// Records `d`, forgetting the oldest decisions beyond `cap`.
    fn record(&self, d: Arc<Decision>, cap: usize) {
        let mut t = self.table.lock();
        let txn = d.txn;
        if !matches!(t.records.insert(txn, Some(d)), Some(Some(_))) {
            t.decided += 1;
        }
        t.order.push_back(txn);
        while t.decided > cap.max(1) {
            let Some(old) = t.order.pop_front() else {
                break;
            };
            if let Some(Some(_)) = t.records.get(&old) {
                t.records.remove(&old);
                t.decided -= 1;
                t.forgotten = Some(t.forgotten.map_or(old.1, |f| f.max(old.1)));
                tracing::warn!(txn = ?old, "decision record forgotten for room; it stays pending");
            }
        }
        if t.order.len() > 2 * t.records.len() + 64 {
            let DecisionTable { records, order, .. } = &mut *t;
            order.retain(|id| matches!(records.get(id), Some(Some(_))));
        }
    }
}

/// A remote write buffered at the coordinator until prepare: (table, key, value or `None`).
type RemoteWrite = (u32, Vec<u8>, Option<Vec<u8>>);

/// A participant shard of a transaction: the replica addressed and the writes buffered for it.
struct Remote {
    /// The replica its piece lives on (the shard's leader as known when first addressed).
    node: NodeId,
    /// Whether a request was sent to `node`; only the first request may be redirected.
    contacted: bool,
    /// Writes buffered until prepare.
    writes: Vec<RemoteWrite>,
}

/// One request of a coordinator: where, whether it may be redirected, and what.
struct Route {
    /// The replica addressed.
    node: NodeId,
    /// The transaction's first request to this shard: a `NotLeader` refusal with a hint did
    /// nothing anywhere, so it is retried once at the hinted replica.
    fresh: bool,
    /// The operation.
    op: Op,
}

/// A transaction coordinated by one worker of a shard leader.
pub struct DistTxn<'a> {
    site: &'a Site,
    worker: u32,
    id: u64,
    /// The epoch the site served when the transaction began (`None`: it served none).
    epoch: Option<Epoch>,
    local: Option<Transaction<'a>>,
    /// Participant shards.
    remotes: BTreeMap<u32, Remote>,
}

impl<'a> DistTxn<'a> {
    pub(crate) fn new(site: &'a Site, worker: u32) -> Self {
        DistTxn {
            site,
            worker,
            id: site.next_txn.fetch_add(1, Ordering::Relaxed),
            epoch: site.open_epoch(),
            local: None,
            remotes: BTreeMap::new(),
        }
    }

    fn stream(&self) -> u32 {
        stream_id(self.site.shard_id, self.worker)
    }

    fn local(&mut self) -> &mut Transaction<'a> {
        let (site, stream) = (self.site, self.stream());
        self.local
            .get_or_insert_with(|| site.shard.begin_on(stream))
    }

    fn remote(&mut self, shard: u32) -> Result<&mut Remote, Abort> {
        if !self.remotes.contains_key(&shard) {
            // The shard's leader as this site knows it; a refusal's hint may redirect it.
            let node = self
                .site
                .leader_of(shard)
                .ok_or(Abort::new(AbortReason::NotLeader))?;
            self.remotes.insert(
                shard,
                Remote {
                    node,
                    contacted: false,
                    writes: Vec::new(),
                },
            );
        }
        self.remotes
            .get_mut(&shard)
            .ok_or(Abort::new(AbortReason::NotLeader))
    }

    /// Configured table number `i` (an unknown one aborts the transaction).
    fn table(&self, i: usize) -> Result<&'a mako_storage::Table, Abort> {
        self.site.table(i).ok_or(Abort::new(AbortReason::Conflict))
    }

    fn txn(&self) -> (u64, u64) {
        (self.site.node, self.id)
    }

    /// The transaction's epoch (a site that served no epoch at begin uses one no peer serves).
    fn epoch(&self) -> Epoch {
        self.epoch.unwrap_or(Epoch::MAX)
    }

    /// Reads `key` of table `table` (an index into the configured tables) on `shard`.
    pub fn get(&mut self, shard: u32, table: usize, key: &[u8]) -> Result<Option<Bytes>, Abort> {
        let t = self.table(table)?;
        if shard == self.site.shard_id {
            return Ok(self.local().get(t, key));
        }
        let id = t.id();
        let (txn, stream, site, epoch) = (self.txn(), self.stream(), self.site, self.epoch());
        let r = self.remote(shard)?;
        // Read-your-own-writes for buffered remote writes.
        if let Some((_, _, v)) = r.writes.iter().rev().find(|(t, k, _)| *t == id && k == key) {
            return Ok(v.clone().map(Bytes::from));
        }
        let op = Op::Get {
            table: id,
            key: key.to_vec(),
        };
        match site.ask(txn, stream, epoch, r, op)? {
            Reply::Value(v) => Ok(v.map(Bytes::from)),
            other => Err(refused(other)),
        }
    }

    /// The `(epoch, timestamp)` of the newest version of `key` of table `table` on `shard`
    /// (`None`: never written); it changes with every write, and is validated at commit.
    /// The transaction's own buffered writes are not seen.
    pub fn version(
        &mut self,
        shard: u32,
        table: usize,
        key: &[u8],
    ) -> Result<Option<(u32, u64)>, Abort> {
        let t = self.table(table)?;
        if shard == self.site.shard_id {
            return Ok(self.local().version(t, key));
        }
        let op = Op::Version {
            table: t.id(),
            key: key.to_vec(),
        };
        let (txn, stream, site, epoch) = (self.txn(), self.stream(), self.site, self.epoch());
        let r = self.remote(shard)?;
        match site.ask(txn, stream, epoch, r, op)? {
            Reply::Version(v) => Ok(v),
            other => Err(refused(other)),
        }
    }

    /// Up to `limit` rows of `table` on `shard` in `range`, ascending; the range is validated at commit.
    pub fn scan(
        &mut self,
        shard: u32,
        table: usize,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        limit: usize,
    ) -> Result<Vec<(Key, Bytes)>, Abort> {
        self.scan_dir(shard, table, range, limit, false)
    }

    /// Up to `limit` rows of `table` on `shard` in `range`, descending; the range is validated at commit.
    pub fn rscan(
        &mut self,
        shard: u32,
        table: usize,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        limit: usize,
    ) -> Result<Vec<(Key, Bytes)>, Abort> {
        self.scan_dir(shard, table, range, limit, true)
    }

    fn scan_dir(
        &mut self,
        shard: u32,
        table: usize,
        (lo, hi): (Bound<&[u8]>, Bound<&[u8]>),
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Key, Bytes)>, Abort> {
        let t = self.table(table)?;
        if shard == self.site.shard_id {
            let tx = self.local();
            return Ok(if reverse {
                tx.rscan(t, (lo, hi), limit)
            } else {
                tx.scan(t, (lo, hi), limit)
            });
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let id = t.id();
        let (txn, stream, site, epoch) = (self.txn(), self.stream(), self.site, self.epoch());
        let r = self.remote(shard)?;
        let writes = &r.writes;
        // Buffered writes in range overlay the participant's rows (read-your-own-writes):
        // ask for one more row per buffered delete so the overlay still fills `limit`.
        let own: Vec<(Vec<u8>, Option<Vec<u8>>)> = writes
            .iter()
            .filter(|(wt, k, _)| *wt == id && in_range(lo, hi, k))
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect();
        let deletes = own.iter().filter(|(_, v)| v.is_none()).count();
        let op = Op::Scan {
            table: id,
            lo: lo.map(<[u8]>::to_vec),
            hi: hi.map(<[u8]>::to_vec),
            limit: u64::try_from(limit.saturating_add(deletes)).unwrap_or(u64::MAX),
            reverse,
        };
        let rows = match site.ask(txn, stream, epoch, r, op)? {
            Reply::Rows(rows) => rows,
            other => return Err(refused(other)),
        };
        if own.is_empty() {
            return Ok(rows
                .into_iter()
                .map(|(k, v)| (Key::from_slice(&k), Bytes::from(v)))
                .collect());
        }
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            rows.into_iter().map(|(k, v)| (k, Some(v))).collect();
        merged.extend(own);
        let live = merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (Key::from_slice(&k), Bytes::from(v))));
        Ok(if reverse {
            live.rev().take(limit).collect()
        } else {
            live.take(limit).collect()
        })
    }

    /// Whether the transaction has touched a shard other than the coordinator's.
    pub fn is_distributed(&self) -> bool {
        !self.remotes.is_empty()
    }

    /// Writes `value` under `key` of `table` on `shard` (`None` deletes).
    pub fn write(
        &mut self,
        shard: u32,
        table: usize,
        key: &[u8],
        value: Option<Bytes>,
    ) -> Result<(), Abort> {
        let t = self.table(table)?;
        if shard == self.site.shard_id {
            let tx = self.local();
            match value {
                Some(v) => tx.put(t, key, v),
                None => tx.delete(t, key),
            }
            return Ok(());
        }
        let id = t.id();
        let writes = &mut self.remote(shard)?.writes;
        writes.retain(|(t, k, _)| !(*t == id && k == key));
        writes.push((id, key.to_vec(), value.map(|v| v.to_vec())));
        Ok(())
    }

    /// Writes `value` under `key` of `table` on `shard`.
    pub fn put(&mut self, shard: u32, table: usize, key: &[u8], value: Bytes) -> Result<(), Abort> {
        self.write(shard, table, key, Some(value))
    }

    /// Commits and waits for release (every participant acknowledged and `VT <= VW`).
    ///
    /// `Aborted` means never visible. If the release does not come within the
    /// configured timeout the outcome is `Unknown` (committed speculatively, pending):
    /// the error carries the handle to wait on.
    pub fn commit(self) -> Result<CommitInfo, CommitError> {
        let timeout = self.site.cfg.timeout;
        let s = self.commit_speculative()?;
        match s.wait_release(timeout) {
            Ok(()) => Ok(s.info),
            Err(ReleaseError::Aborted(r)) => Err(CommitError::Aborted(r)),
            Err(ReleaseError::Pending(why)) => Err(CommitError::Unknown {
                why,
                spec: Box::new(s),
            }),
        }
    }

    /// Commits speculatively: visible to other transactions now, durable only once released.
    ///
    /// `Err` means aborted (never visible); `Ok` means the decision is commit.
    pub fn commit_speculative(mut self) -> Result<Speculative, Abort> {
        let site = self.site;
        let epochs = Arc::clone(&site.epochs);
        let shards_n = site.cfg.shards as usize;
        match (site.open_epoch(), self.epoch) {
            (Some(now), Some(began)) if now == began => {}
            // The epoch ended since the transaction began: what it read may be gone.
            (Some(_), Some(_)) => return Err(Abort::new(AbortReason::Failover)),
            // Not serving: a deposed leader installs no more speculative versions.
            _ => return Err(Abort::new(AbortReason::NotLeader)),
        }
        let epoch = self.epoch();
        // A leader just elected waits for its first lease before taking any lock.
        site.await_lease()?;
        if self.remotes.is_empty() {
            // One shard: the local commit logs its piece on this worker's stream; what it read
            // was current at validation (the lease held then).
            let info = match self.local.take() {
                Some(tx) => tx.commit_confirmed(|| site.holds_lease())?,
                None => CommitInfo {
                    epoch,
                    vt: smallvec::smallvec![0; shards_n],
                    wrote: false,
                },
            };
            if info.epoch != epoch {
                // The shard moved to another epoch under the commit: its piece is not logged
                // (the discard rule decides it), and it may be waited on in its own epoch.
                tracing::debug!(
                    began = epoch,
                    committed = info.epoch,
                    "epoch moved under a commit"
                );
            }
            return Ok(Speculative {
                info,
                epochs,
                acks: None,
            });
        }
        let txn = self.txn();
        // Back-pressure before any lock is taken.
        site.log.throttle();
        // From here an inquiring participant waits for the decision instead of getting Abort.
        site.decisions.placeholder(txn);
        let parts: Vec<(u32, Remote)> = std::mem::take(&mut self.remotes).into_iter().collect();
        // Every exit before the commit decision is recorded (a panic included) records Abort.
        let mut undecided = Undecided {
            site,
            txn,
            nodes: parts.iter().map(|p| p.1.node).collect(),
            armed: true,
        };
        let ready = self.prepare_all(parts, &mut undecided)?;
        Ok(self.commit_prepared(ready, epochs, undecided))
    }

    /// Locks every write set, then validates every read set; on success every piece is prepared.
    ///
    /// A participant's first request that is refused by a non-leader with a hint is redirected
    /// once to the hinted replica; `undecided` follows the redirect (it tells that replica).
    fn prepare_all(
        &mut self,
        mut parts: Vec<(u32, Remote)>,
        undecided: &mut Undecided<'_>,
    ) -> Result<Ready<'a>, Abort> {
        let site = self.site;
        let (txn, stream, epoch) = (self.txn(), self.stream(), self.epoch());
        let me = site.shard_id as usize;
        // A redirected piece lives on the hinted replica from now on.
        let moved = |p: &mut Remote, node: NodeId, u: &mut Undecided<'_>| {
            if node != p.node {
                if let Some(n) = u.nodes.iter_mut().find(|n| **n == p.node) {
                    *n = node;
                }
                p.node = node;
            }
            p.contacted = true;
        };
        // 1. The local write set (no message).
        let local: Option<Locked<'a>> = self.local.take().map(Transaction::lock).transpose()?;
        let replies = if let [(_, p)] = &mut parts[..] {
            // One remote participant: it locks and validates in one step, after the
            // local lock and before the local validation.
            let route = Route {
                node: p.node,
                fresh: !p.contacted,
                op: Op::Validate {
                    writes: std::mem::take(&mut p.writes),
                },
            };
            let (node, r) = site
                .routed(txn, stream, epoch, vec![route])
                .pop()
                .unwrap_or((p.node, Err(Abort::new(AbortReason::Timeout))));
            moved(p, node, undecided);
            vec![r]
        } else {
            // Round 1: remote writers lock; round 2: everyone validates.
            let writers: Vec<usize> = (0..parts.len())
                .filter(|&i| !parts[i].1.writes.is_empty())
                .collect();
            let locks = writers
                .iter()
                .map(|&i| Route {
                    node: parts[i].1.node,
                    fresh: !parts[i].1.contacted,
                    op: Op::Lock {
                        writes: parts[i].1.writes.clone(),
                    },
                })
                .collect();
            let mut failure = None;
            for (&i, (node, r)) in writers.iter().zip(site.routed(txn, stream, epoch, locks)) {
                moved(&mut parts[i].1, node, undecided);
                match r {
                    Ok(Reply::Locked) => {}
                    Ok(other) => failure = failure.or(Some(refused(other))),
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
            let validates = parts
                .iter()
                .map(|p| Route {
                    node: p.1.node,
                    fresh: !p.1.contacted,
                    op: Op::Validate { writes: Vec::new() },
                })
                .collect();
            let replies = site.routed(txn, stream, epoch, validates);
            parts
                .iter_mut()
                .zip(replies)
                .map(|(p, (node, r))| {
                    moved(&mut p.1, node, undecided);
                    r
                })
                .collect()
        };
        let shards: Vec<(u32, NodeId)> = parts.iter().map(|p| (p.0, p.1.node)).collect();
        // 2. The local reads, once every write set is locked.
        let local: Option<Prepared<'a>> = local.map(Locked::validate).transpose()?;
        // What it read here was current at validation: no other leader had committed then.
        site.holds_lease().map_err(Abort::new)?;
        let mut deps = local
            .as_ref()
            .map(|p| p.deps())
            .unwrap_or_else(|| smallvec::smallvec![0; site.cfg.shards as usize]);
        let mut own: Vec<(usize, u64)> = Vec::new();
        let mut writers = Vec::new();
        let mut failure = None;
        for (&(s, node), r) in shards.iter().zip(replies) {
            match r {
                Ok(Reply::Prepared { deps: d, ts }) => {
                    merge(&mut deps, &d);
                    if let Some(ts) = ts {
                        own.push((s as usize, ts));
                        writers.push(node);
                    }
                }
                Ok(other) => failure = Some(refused(other)),
                Err(e) => failure = Some(e),
            }
        }
        let mut ready = Ready {
            local,
            reservation: None,
            deps,
            own,
            writers,
        };
        if let Some(e) = failure {
            return Err(e);
        }
        if let Some(p) = ready.local.as_ref().filter(|p| p.wrote()) {
            let shards = site.cfg.shards as usize;
            p.with_writes(|w| site.log.check(stream, shards, w.iter()))
                .map_err(Abort::new)?;
            let dep = ready.deps.get(me).copied().unwrap_or(0);
            match site.log.reserve(stream, epoch, || p.allocate(dep)) {
                Some(ts) => {
                    // Cancelled on every exit until the commit decision is recorded.
                    ready.reservation = Some(Reservation {
                        site,
                        stream,
                        epoch,
                        ts: Some(ts),
                    });
                    ready.own.push((me, ts));
                }
                None => return Err(Abort::new(AbortReason::LogUnavailable)),
            }
        }
        // The VT: read dependencies, with each written shard's allocated component.
        for &(s, ts) in &ready.own {
            // c_s bounds every observed VT[s], so a shard's own timestamp exceeds them; a
            // participant's answer that breaks this is wrong: abort (the guards clean up).
            let dep = ready.deps.get(s).copied().unwrap_or(u64::MAX);
            if ts <= dep {
                tracing::error!(
                    ?txn,
                    shard = s,
                    ts,
                    dep,
                    "VT component not above its dependency"
                );
                return Err(Abort::new(AbortReason::Conflict));
            }
        }
        Ok(ready)
    }

    /// Records the commit decision, sends it, installs the local piece, waits (bounded) for the acknowledgements.
    fn commit_prepared(
        &mut self,
        mut ready: Ready<'a>,
        epochs: Arc<EpochView>,
        mut undecided: Undecided<'_>,
    ) -> Speculative {
        let site = self.site;
        let (txn, stream, epoch) = (self.txn(), self.stream(), self.epoch());
        let mut vt = ready.deps.clone();
        for &(s, ts) in &ready.own {
            if let Some(c) = vt.get_mut(s) {
                *c = ts;
            }
        }
        // Each written piece's replica (the one it was prepared on).
        let writers = std::mem::take(&mut ready.writers);
        let decision = site.record(txn, epoch, Some(vt.to_vec()), &writers);
        // Decided commit: from here nothing aborts or cancels (a lost local piece keeps its
        // stream below it, so the transaction stays pending, never released).
        undecided.armed = false;
        if let Some(r) = ready.reservation.as_mut() {
            r.ts = None;
        }
        if let Some(d) = &decision {
            site.send_decision(d, &writers);
        }
        if let Some(p) = ready.local {
            if !p.wrote() {
                p.read_only();
            } else if p.with_writes(|w| {
                site.log
                    .fulfil(stream, epoch, &vt, w.iter(), || p.install_in_place(&vt))
            }) {
                // Installed as it was handed to the log.
            } else {
                // The epoch ended under the commit: the piece is not logged, so it is not
                // installed either; the discard rule drops the transaction.
                p.abort();
            }
        }
        if let Some(d) = &decision {
            // Bounded: a missing acknowledgement leaves the outcome pending, not aborted.
            let _ = d.wait_acked(Instant::now() + site.cfg.timeout);
        }
        Speculative {
            info: CommitInfo {
                epoch,
                vt,
                wrote: !ready.own.is_empty(),
            },
            epochs,
            acks: decision,
        }
    }
}

/// A transaction whose every piece is prepared (locked and validated).
struct Ready<'a> {
    local: Option<Prepared<'a>>,
    /// The local piece's reserved timestamp (cancelled when dropped armed).
    reservation: Option<Reservation<'a>>,
    /// Merged read dependencies.
    deps: mako_storage::Vt,
    /// Each written shard's allocated timestamp.
    own: Vec<(usize, u64)>,
    /// Replicas of the remote pieces that write (and must acknowledge the commit).
    writers: Vec<NodeId>,
}

/// A local reserved timestamp; dropped while it still holds `ts`, it gives it back.
struct Reservation<'s> {
    site: &'s Site,
    stream: u32,
    epoch: Epoch,
    ts: Option<u64>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(ts) = self.ts.take() {
            self.site.log.cancel(self.stream, self.epoch, ts);
        }
    }
}

/// A transaction in commit with no decision recorded; dropped armed, it records and sends Abort.
struct Undecided<'s> {
    site: &'s Site,
    txn: TxnId,
    nodes: Vec<NodeId>,
    armed: bool,
}

impl Drop for Undecided<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.armed = false;
            self.site
                .decide(self.txn, None, std::mem::take(&mut self.nodes));
        }
    }
}

impl Drop for DistTxn<'_> {
    fn drop(&mut self) {
        if !self.remotes.is_empty() {
            let nodes = self.remotes.values().map(|r| r.node).collect();
            self.site.decide(self.txn(), None, nodes);
            self.remotes.clear();
        }
    }
}

/// Whether `key` lies within `lo..hi`.
fn in_range(lo: Bound<&[u8]>, hi: Bound<&[u8]>, key: &[u8]) -> bool {
    let above = match lo {
        Bound::Included(b) => key >= b,
        Bound::Excluded(b) => key > b,
        Bound::Unbounded => true,
    };
    let below = match hi {
        Bound::Included(b) => key <= b,
        Bound::Excluded(b) => key < b,
        Bound::Unbounded => true,
    };
    above && below
}

fn refused(r: Reply) -> Abort {
    Abort::new(match r {
        Reply::Refused(Refusal::NotLeader(_)) => AbortReason::NotLeader,
        Reply::Refused(Refusal::StaleEpoch(_)) => AbortReason::Failover,
        Reply::Refused(Refusal::TooLarge) => AbortReason::TooLarge,
        _ => AbortReason::Conflict,
    })
}

impl Site {
    /// Records the decision on `txn` (`Some(vt)`: commit) and sends it to `participants`;
    /// it is resent until each acknowledged. `None` if there is no one to tell.
    pub(crate) fn decide(
        &self,
        txn: TxnId,
        commit: Option<Vec<u64>>,
        participants: Vec<NodeId>,
    ) -> Option<Arc<Decision>> {
        let d = self.record(txn, self.shard.epoch(), commit, &participants)?;
        self.send_decision(&d, &participants);
        Some(d)
    }

    /// Records the decision on `txn` (replacing its placeholder) before anyone is told.
    fn record(
        &self,
        txn: TxnId,
        epoch: Epoch,
        commit: Option<Vec<u64>>,
        participants: &[NodeId],
    ) -> Option<Arc<Decision>> {
        if participants.is_empty() {
            self.decisions.remove(txn);
            return None;
        }
        let now = Instant::now();
        let d = Arc::new(Decision {
            txn,
            epoch,
            commit,
            acks: Mutex::new(AckState {
                peers: participants
                    .iter()
                    .map(|&n| {
                        (
                            n,
                            PeerAck::Waiting {
                                last: now,
                                sends: 1,
                            },
                        )
                    })
                    .collect(),
            }),
            cv: Condvar::new(),
        });
        self.decisions
            .record(Arc::clone(&d), self.cfg.max_decisions);
        Some(d)
    }

    fn send_decision(&self, d: &Decision, participants: &[NodeId]) {
        let msg = d.msg();
        for &n in participants {
            self.send(n, &msg);
        }
    }

    /// A participant acknowledged (or refused) the decision on `txn`.
    ///
    /// An acknowledgement counts even after a refusal from the same participant (it applied
    /// the decision later, e.g. after inquiring); a refusal after its acknowledgement is stale.
    pub(crate) fn acknowledged(&self, txn: TxnId, from: NodeId, refused: Option<Refusal>) {
        let d = match self.decisions.table.lock().records.get(&txn) {
            Some(Some(d)) => Arc::clone(d),
            _ => return,
        };
        let done = {
            let mut a = d.acks.lock();
            let Some(peer) = a.peers.get_mut(&from) else {
                return;
            };
            match (refused, *peer) {
                (_, PeerAck::Done) => return,
                (None, _) => *peer = PeerAck::Done,
                (Some(r), _) => {
                    // Never ignored: the outcome stays pending until the epoch change decides it.
                    tracing::warn!(?txn, from, "participant refused the decision: {r:?}");
                    *peer = PeerAck::Refused(r);
                }
            }
            d.cv.notify_all();
            a.status().is_ok()
        };
        if done {
            self.decisions.remove(txn);
        }
    }

    /// A participant asks for the decision on `txn`: the recorded one, or Abort if there is none
    /// (and none was forgotten for room, which leaves the question unanswered).
    pub(crate) fn inquired(&self, txn: TxnId, from: NodeId) {
        let msg = {
            let t = self.decisions.table.lock();
            match t.records.get(&txn) {
                // Still deciding: the participant asks again later.
                Some(None) => return,
                Some(Some(d)) => d.msg(),
                // A forgotten record may have been Commit: stay silent (pending).
                None if t.forgotten.is_some_and(|f| txn.1 <= f) => return,
                // No record: commit was never decided.
                None => Msg::Decision {
                    txn,
                    epoch: self.shard.epoch(),
                    commit: None,
                },
            }
        };
        self.send(from, &msg);
    }

    /// Resends decisions to participants that have not acknowledged them for a while; after
    /// `1 + max_resends` sends it gives up on a participant (the outcome stays pending).
    pub(crate) fn resend_decisions(&self, now: Instant) {
        let every = (self.cfg.timeout / 10).max(self.cfg.tick);
        let mut sends = Vec::new();
        for d in self.decisions.table.lock().records.values().flatten() {
            let mut a = d.acks.lock();
            for (n, peer) in a.peers.iter_mut() {
                let PeerAck::Waiting { last, sends: count } = peer else {
                    continue;
                };
                if now.duration_since(*last) < every {
                    continue;
                }
                if *count > self.cfg.max_resends {
                    tracing::warn!(txn = ?d.txn, node = n, "participant silent; decision no longer resent, outcome pending");
                    *peer = PeerAck::GaveUp;
                    self.decisions.gave_up.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                *last = now;
                *count += 1;
                sends.push((*n, d.msg()));
            }
        }
        for (n, m) in sends {
            self.send(n, &m);
        }
    }

    /// Participants the coordinator gave up resending a decision to.
    pub fn decisions_given_up(&self) -> u64 {
        self.decisions.gave_up()
    }

    /// Sends `op` on `remote`'s piece (redirected once if it is the first request and the
    /// replica is not the leader) and waits for the reply; a refusal aborts.
    fn ask(
        &self,
        txn: TxnId,
        stream: u32,
        epoch: Epoch,
        remote: &mut Remote,
        op: Op,
    ) -> Result<Reply, Abort> {
        let route = Route {
            node: remote.node,
            fresh: !remote.contacted,
            op,
        };
        remote.contacted = true;
        let (node, r) = self
            .routed(txn, stream, epoch, vec![route])
            .pop()
            .unwrap_or((remote.node, Err(Abort::new(AbortReason::Timeout))));
        remote.node = node;
        r
    }

    /// Sends every route at once and waits for the replies, all within one timeout; a fresh
    /// route refused by a non-leader that names another leader is sent once more there.
    /// Returns, per route, the replica that answered last and its reply (a refusal aborts).
    fn routed(
        &self,
        txn: TxnId,
        stream: u32,
        epoch: Epoch,
        routes: Vec<Route>,
    ) -> Vec<(NodeId, Result<Reply, Abort>)> {
        let deadline = Instant::now() + self.cfg.timeout;
        let mut nodes: Vec<NodeId> = routes.iter().map(|r| r.node).collect();
        // Only a fresh request can be redirected; keep its operation for the retry.
        let mut kept: Vec<Option<Op>> = routes
            .iter()
            .map(|r| r.fresh.then(|| r.op.clone()))
            .collect();
        let mut replies = self.call_until(
            txn,
            stream,
            epoch,
            routes.into_iter().map(|r| (r.node, r.op)).collect(),
            deadline,
        );
        let mut again = Vec::new();
        let mut retry = Vec::new();
        for (i, r) in replies.iter().enumerate() {
            if let Ok(Reply::Refused(Refusal::NotLeader(Some(hint)))) = r
                && *hint != nodes[i]
                && let Some(op) = kept[i].take()
            {
                again.push(i);
                retry.push((*hint, op));
            }
        }
        if !retry.is_empty() {
            self.stats
                .redirects
                .fetch_add(retry.len() as u64, Ordering::Relaxed);
            for (&i, &(hint, _)) in again.iter().zip(&retry) {
                tracing::debug!(
                    ?txn,
                    from = nodes[i],
                    to = hint,
                    "participant redirected to its leader"
                );
                nodes[i] = hint;
            }
            for (i, r) in again
                .into_iter()
                .zip(self.call_until(txn, stream, epoch, retry, deadline))
            {
                replies[i] = r;
            }
        }
        nodes
            .into_iter()
            .zip(replies)
            .map(|(n, r)| {
                let r = match r {
                    Ok(Reply::Refused(x)) => Err(refused(Reply::Refused(x))),
                    other => other,
                };
                (n, r)
            })
            .collect()
    }

    /// Sends each `(node, op)` for transaction `txn` at once, then waits until `deadline` for
    /// every reply (refusals included; a missing reply is a timeout).
    fn call_until(
        &self,
        txn: TxnId,
        stream: u32,
        epoch: Epoch,
        requests: Vec<(NodeId, Op)>,
        deadline: Instant,
    ) -> Vec<Result<Reply, Abort>> {
        let waits: Vec<(u64, crossbeam_channel::Receiver<Reply>)> = requests
            .into_iter()
            .map(|(node, op)| {
                let req = self.next_req.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = crossbeam_channel::bounded(1);
                self.pending.lock().insert(req, tx);
                self.send(
                    node,
                    &Msg::Request {
                        req,
                        epoch,
                        txn,
                        stream,
                        op,
                    },
                );
                (req, rx)
            })
            .collect();
        waits
            .into_iter()
            .map(|(req, rx)| {
                let r = self.await_reply(&rx, epoch, deadline);
                if r.is_err() {
                    self.pending.lock().remove(&req);
                }
                r
            })
            .collect()
    }

    /// Waits for one reply until `deadline`, or until the transaction's epoch ends here (its
    /// locks must not outlive the epoch: a new leader's purge and replay would wait on them).
    fn await_reply(
        &self,
        rx: &crossbeam_channel::Receiver<Reply>,
        epoch: Epoch,
        deadline: Instant,
    ) -> Result<Reply, Abort> {
        loop {
            let slice = deadline.min(Instant::now() + EPOCH_CHECK);
            match rx.recv_deadline(slice) {
                Ok(r) => return Ok(r),
                Err(_) if Instant::now() >= deadline => {
                    return Err(Abort::new(AbortReason::Timeout));
                }
                Err(_) if self.open_epoch() != Some(epoch) => {
                    return Err(Abort::new(AbortReason::Failover));
                }
                Err(_) => {}
            }
        }
    }
}
