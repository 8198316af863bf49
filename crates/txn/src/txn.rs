//! Silo-style optimistic transactions: read set, buffered writes, lock–validate–install commit.

use std::collections::{HashMap, VecDeque};
use std::ops::{Bound, Range, RangeBounds};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mako_storage::{Key, LOCK_BIT, Record, Stamp, Table, TableId, Version, Vt};

use crate::error::{Abort, AbortReason, OpError};
use crate::shard::Shard;
use crate::sink::{LoggedWrite, PieceWrites};

/// Write sets larger than this get a hash index for read-your-own-writes look-ups.
const WRITE_INDEX_THRESHOLD: usize = 16;

/// How long a one-shard commit waits for a record lock another commit holds before it aborts
/// with a conflict (a commit holds its locks for microseconds; aborting and running the
/// transaction again costs far more). Multi-shard locking never waits: a shard's locks are
/// held across a round trip, and waiting there could deadlock across shards.
pub const LOCK_PATIENCE: Duration = Duration::from_micros(100);

/// How many recently read keys (point reads and scanned rows) keep their record handy for a
/// following write to the same key.
const RECENT_READS: usize = 16;

/// A record read, with the version-word timestamp it had.
struct ReadEntry {
    record: Arc<Record>,
    ts: u64,
}

/// A key read as absent because the index had no record for it.
struct AbsentEntry<'s> {
    table: &'s Table,
    key: Key,
}

/// A scan: its range, how far it got, and the records it visited (a slice of the read set).
struct ScanEntry<'s> {
    table: &'s Table,
    lo: Bound<Key>,
    hi: Bound<Key>,
    reverse: bool,
    reads: Range<usize>,
}

/// A buffered write.
struct WriteEntry<'s> {
    table: &'s Table,
    key: Key,
    value: Option<Bytes>,
    /// Set at commit: the locked record, and whether commit created it in the index.
    record: Option<(Arc<Record>, bool)>,
    /// What a read of the key already found in the index, if it was read.
    known: Option<Known>,
}

/// What a point read found in the index, kept so that a write to the key skips a look-up.
#[derive(Clone)]
enum Known {
    /// The key's record.
    Record(Arc<Record>),
    /// No record: the key was read as absent, so the commit inserts one straight away.
    Absent,
}

/// What a committed transaction is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// Epoch the transaction belongs to.
    pub epoch: u32,
    /// Vector timestamp: this shard's new clock value if it wrote, else its read dependencies.
    pub vt: Vt,
    /// Whether it wrote anything (read-only transactions allocate no timestamp).
    pub wrote: bool,
}

/// An optimistic transaction on one shard; dropping it without committing aborts it.
pub struct Transaction<'s> {
    shard: &'s Shard,
    reads: Vec<ReadEntry>,
    absent: Vec<AbsentEntry<'s>>,
    scans: Vec<ScanEntry<'s>>,
    writes: Vec<WriteEntry<'s>>,
    write_index: Option<HashMap<(TableId, Key), usize, foldhash::fast::RandomState>>,
    /// The commit-log stream this transaction's piece goes to (its worker).
    stream: u32,
    /// What the last few reads found (point reads, and rows a scan returned), so a write to
    /// a key just read skips a second index look-up.
    recent: VecDeque<(TableId, Key, Known)>,
    /// Component-wise maximum `VT` of every version read (the read dependencies).
    deps: Vt,
}

impl<'s> Transaction<'s> {
    pub(crate) fn new(shard: &'s Shard, stream: u32) -> Self {
        Transaction {
            shard,
            reads: Vec::new(),
            absent: Vec::new(),
            scans: Vec::new(),
            writes: Vec::new(),
            write_index: None,
            stream,
            // Allocated by the first read: a blind write (SET, MSET) reads nothing.
            recent: VecDeque::new(),
            deps: smallvec::smallvec![0; shard.shards()],
        }
    }

    fn find_write(&self, table: TableId, key: &[u8]) -> Option<usize> {
        match &self.write_index {
            Some(ix) => ix.get(&(table, Key::from_slice(key))).copied(),
            None => self
                .writes
                .iter()
                .position(|w| w.table.id() == table && w.key[..] == *key),
        }
    }

    fn buffer_write(&mut self, table: &'s Table, key: &[u8], value: Option<Bytes>) {
        if let Some(i) = self.find_write(table.id(), key) {
            self.writes[i].value = value;
            return;
        }
        let i = self.writes.len();
        let known = self
            .recent
            .iter()
            .position(|(t, k, _)| *t == table.id() && k[..] == *key)
            .and_then(|j| self.recent.swap_remove_back(j))
            .map(|(_, _, known)| known);
        self.writes.push(WriteEntry {
            table,
            key: Key::from_slice(key),
            value,
            record: None,
            known,
        });
        if let Some(ix) = &mut self.write_index {
            ix.insert((table.id(), Key::from_slice(key)), i);
        } else if self.writes.len() > WRITE_INDEX_THRESHOLD {
            let ix = self
                .writes
                .iter()
                .enumerate()
                .map(|(i, w)| ((w.table.id(), w.key.clone()), i))
                .collect();
            self.write_index = Some(ix);
        }
    }

    fn track_read(&mut self, record: &Arc<Record>) -> Option<Version> {
        let view = record.read();
        add_dependency(&mut self.deps, &view, self.shard.epoch(), self.shard.id());
        self.reads.push(ReadEntry {
            record: Arc::clone(record),
            ts: view.ts,
        });
        view.version
    }

    /// The value under `key`, seeing this transaction's own writes.
    pub fn get(&mut self, table: &'s Table, key: &[u8]) -> Option<Bytes> {
        if let Some(i) = self.find_write(table.id(), key) {
            return self.writes[i].value.clone();
        }
        self.read_committed(table, key).and_then(|v| v.value)
    }

    /// The `(epoch, timestamp)` of the newest committed version under `key`, a delete's
    /// included (`None` if the key never had one): it changes with every write to the key.
    /// Validated at commit as [`Transaction::get`] is; this transaction's own writes are
    /// not seen.
    pub fn version(&mut self, table: &'s Table, key: &[u8]) -> Option<(u32, u64)> {
        self.read_committed(table, key).map(|v| v.stamp.order())
    }

    /// Reads the newest committed version under `key` into the read set.
    fn read_committed(&mut self, table: &'s Table, key: &[u8]) -> Option<Version> {
        let rec = table.record(key);
        let known = match &rec {
            Some(rec) => Known::Record(Arc::clone(rec)),
            None => Known::Absent,
        };
        remember(&mut self.recent, table.id(), Key::from_slice(key), known);
        match rec {
            Some(rec) => self.track_read(&rec),
            None => {
                self.absent.push(AbsentEntry {
                    table,
                    key: Key::from_slice(key),
                });
                None
            }
        }
    }

    /// Writes `value` under `key` (insert or overwrite).
    pub fn put(&mut self, table: &'s Table, key: &[u8], value: Bytes) {
        self.buffer_write(table, key, Some(value));
    }

    /// Writes `value` under `key` if no value is visible there, else fails (the transaction goes on).
    pub fn insert(&mut self, table: &'s Table, key: &[u8], value: Bytes) -> Result<(), OpError> {
        if self.get(table, key).is_some() {
            return Err(OpError::KeyExists);
        }
        self.buffer_write(table, key, Some(value));
        Ok(())
    }

    /// Deletes `key` (a no-op at commit if nothing is there).
    pub fn delete(&mut self, table: &'s Table, key: &[u8]) {
        self.buffer_write(table, key, None);
    }

    /// Up to `limit` visible pairs in `range`, ascending, seeing this transaction's own writes.
    pub fn scan<'k>(
        &mut self,
        table: &'s Table,
        range: impl RangeBounds<&'k [u8]>,
        limit: usize,
    ) -> Vec<(Key, Bytes)> {
        self.scan_dir(table, &range, limit, false)
    }

    /// Up to `limit` visible pairs in `range`, descending, seeing this transaction's own writes.
    pub fn rscan<'k>(
        &mut self,
        table: &'s Table,
        range: impl RangeBounds<&'k [u8]>,
        limit: usize,
    ) -> Vec<(Key, Bytes)> {
        self.scan_dir(table, &range, limit, true)
    }

    fn scan_dir<'k>(
        &mut self,
        table: &'s Table,
        range: &impl RangeBounds<&'k [u8]>,
        limit: usize,
        reverse: bool,
    ) -> Vec<(Key, Bytes)> {
        let mut out: Vec<(Key, Bytes)> = Vec::new();
        if limit == 0 {
            return out;
        }
        let lo = range.start_bound().map(|b| *b);
        let hi = range.end_bound().map(|b| *b);
        // This transaction's own writes in range, in scan order.
        let mut own: Vec<(Key, Option<Bytes>)> = self
            .writes
            .iter()
            .filter(|w| w.table.id() == table.id() && in_range(lo, hi, &w.key))
            .map(|w| (w.key.clone(), w.value.clone()))
            .collect();
        own.sort_by(|a, b| {
            if reverse {
                b.0.cmp(&a.0)
            } else {
                a.0.cmp(&b.0)
            }
        });
        let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };

        let first_read = self.reads.len();
        let mut next_own = 0;
        // Last key (in scan order) up to which the index was fully visited, if the limit stopped the scan.
        let mut stopped_at: Option<Key> = None;
        let mut deps = std::mem::take(&mut self.deps);
        let me = self.shard.id();
        let epoch = self.shard.epoch();
        let reads = &mut self.reads;
        let recent = &mut self.recent;
        // Only a scan's first rows are remembered: a long scan (TPC-C StockLevel) would
        // otherwise pay a copy per row to keep the last few.
        let mut remembered = 0;
        table.visit(lo, hi, reverse, |k, rec| {
            while let Some((ok, ov)) = own.get(next_own) {
                if !before(ok, k) {
                    break;
                }
                if let Some(v) = ov {
                    out.push((ok.clone(), v.clone()));
                }
                next_own += 1;
                if out.len() == limit {
                    stopped_at = Some(ok.clone());
                    return false;
                }
            }
            let view = rec.read();
            add_dependency(&mut deps, &view, epoch, me);
            reads.push(ReadEntry {
                record: Arc::clone(rec),
                ts: view.ts,
            });
            match own.get(next_own) {
                Some((ok, ov)) if ok[..] == *k => {
                    if let Some(v) = ov {
                        out.push((ok.clone(), v.clone()));
                    }
                    next_own += 1;
                }
                _ => {
                    if let Some(v) = view.value() {
                        out.push((Key::from_slice(k), v.clone()));
                        // A returned row is often written next (TPC-C Delivery).
                        if remembered < RECENT_READS {
                            remembered += 1;
                            let known = Known::Record(Arc::clone(rec));
                            remember(recent, table.id(), Key::from_slice(k), known);
                        }
                    }
                }
            }
            if out.len() == limit {
                stopped_at = Some(Key::from_slice(k));
                return false;
            }
            true
        });
        self.deps = deps;
        if stopped_at.is_none() {
            for (ok, ov) in &own[next_own..] {
                if out.len() == limit {
                    break;
                }
                if let Some(v) = ov {
                    out.push((ok.clone(), v.clone()));
                }
            }
        }
        // The part of the range the scan vouches for: up to where it stopped.
        let owned = |b: Bound<&[u8]>| b.map(Key::from_slice);
        let (lo, hi) = match (stopped_at, reverse) {
            (None, _) => (owned(lo), owned(hi)),
            (Some(k), false) => (owned(lo), Bound::Included(k)),
            (Some(k), true) => (Bound::Included(k), owned(hi)),
        };
        self.scans.push(ScanEntry {
            table,
            lo,
            hi,
            reverse,
            reads: first_read..self.reads.len(),
        });
        out
    }

    /// Number of buffered writes.
    pub fn write_count(&self) -> usize {
        self.writes.len()
    }

    /// Abandons the transaction (same as dropping it).
    pub fn abort(self) {}

    /// Commits: lock the write set in key order, take a timestamp, validate, install, log.
    ///
    /// On success every write is visible to later transactions and has been handed
    /// to the shard's commit-log sink. On failure nothing is visible.
    pub fn commit(self) -> Result<CommitInfo, Abort> {
        self.commit_confirmed(|| Ok(()))
    }

    /// [`Transaction::commit`], asking `confirm` once the reads are validated (and the write
    /// set locked) whether to go on: an `Err` aborts with nothing visible. A shard leader
    /// confirms its leadership lease there, so that what it read was current.
    pub fn commit_confirmed(
        self,
        confirm: impl FnOnce() -> Result<(), AbortReason>,
    ) -> Result<CommitInfo, Abort> {
        let shard = self.shard;
        if !self.writes.is_empty() {
            shard.sink().pace();
        }
        let prepared = self.prepare()?;
        if let Err(reason) = confirm() {
            prepared.abort();
            return Err(Abort::new(reason));
        }
        if !prepared.wrote() {
            return Ok(prepared.read_only());
        }
        let me = shard.id();
        let stream = prepared.tx.stream;
        let epoch = prepared.epoch;
        let logged = prepared.tx.logged();
        let admitted = shard
            .sink()
            .admit(stream, shard.shards(), &PieceWrites { writes: &logged });
        if let Err(reason) = admitted {
            drop(logged);
            prepared.abort();
            return Err(Abort::new(reason));
        }
        let (deps, dep) = (&prepared.tx.deps, prepared.dep);
        // The versions are installed as the piece is stamped, before it can reach the log:
        // a replica's snapshot taken once the piece committed must find them in the store.
        let appended = shard.sink().append(
            stream,
            epoch,
            &mut || {
                let mut vt = deps.clone();
                vt[me] = shard.next_ts(dep);
                prepared.install_in_place(&vt);
                vt
            },
            &PieceWrites { writes: &logged },
        );
        drop(logged);
        match appended {
            Ok(vt) => Ok(prepared.info(vt)),
            Err(reason) => {
                // Refused before stamping: nothing was installed.
                prepared.abort();
                Err(Abort::new(reason))
            }
        }
    }

    /// First half of commit: lock the write set in key order (waiting up to
    /// [`LOCK_PATIENCE`] for each lock) and validate.
    ///
    /// The returned [`Prepared`] holds the locks; finish with [`Prepared::install`]
    /// (after choosing the `VT`) or [`Prepared::abort`]. [`Transaction::commit`]
    /// does both halves. Multi-shard coordinators use [`Transaction::lock`] and
    /// [`Locked::validate`] instead, so that every shard's write set is locked
    /// before any shard's reads are validated.
    pub fn prepare(self) -> Result<Prepared<'s>, Abort> {
        self.lock_within(LOCK_PATIENCE)?.validate()
    }

    /// Locks the write set in key order (no-wait) without validating the reads yet.
    ///
    /// A lock held by someone else aborts with [`AbortReason::Conflict`] (nothing
    /// stays locked). Finish with [`Locked::validate`] or [`Locked::abort`].
    pub fn lock(self) -> Result<Locked<'s>, Abort> {
        self.lock_within(Duration::ZERO)
    }

    /// [`Transaction::lock`], waiting up to `patience` for each lock another commit holds.
    /// Locks are taken in key order, so waiting cannot deadlock among one-shard commits.
    fn lock_within(mut self, patience: Duration) -> Result<Locked<'s>, Abort> {
        let epoch = self.shard.epoch();
        let me = self.shard.id();
        let mut dep = self.deps[me];
        self.writes
            .sort_unstable_by(|a, b| (a.table.id(), &a.key).cmp(&(b.table.id(), &b.key)));
        for i in 0..self.writes.len() {
            let w = &mut self.writes[i];
            let (rec, created) = match w.known.take() {
                Some(Known::Record(rec)) => (rec, false),
                Some(Known::Absent) => w.table.insert_or_record(&w.key),
                None => w.table.record_or_insert(&w.key),
            };
            match rec.try_lock_for(patience) {
                Some(ts) => {
                    dep = dep.max(ts);
                    w.record = Some((rec, created));
                }
                None => {
                    self.unlock_writes();
                    return Err(Abort::new(AbortReason::Conflict));
                }
            }
        }
        Ok(Locked {
            inner: Some((self, epoch, dep)),
        })
    }

    fn logged(&self) -> Vec<LoggedWrite<'_>> {
        self.writes
            .iter()
            .map(|w| LoggedWrite {
                table: w.table,
                key: &w.key,
                value: w.value.as_ref(),
            })
            .collect()
    }

    /// Releases every lock taken so far (abort path).
    fn unlock_writes(&mut self) {
        for w in &mut self.writes {
            if let Some((rec, _)) = w.record.take() {
                rec.unlock();
            }
        }
    }

    /// Whether this transaction holds the lock of `rec`.
    fn locked_by_me(&self, rec: &Record) -> bool {
        self.writes.iter().any(|w| {
            w.record
                .as_ref()
                .is_some_and(|(r, _)| std::ptr::eq(&**r, rec))
        })
    }

    /// Whether `rec` was put into the index by this transaction's commit.
    fn created_by_me(&self, rec: &Record) -> bool {
        self.writes.iter().any(|w| {
            w.record
                .as_ref()
                .is_some_and(|(r, created)| *created && std::ptr::eq(&**r, rec))
        })
    }

    /// Checks that every read, absent read and scan still holds.
    fn validate(&self) -> Result<(), Abort> {
        let conflict = Err(Abort::new(AbortReason::Conflict));
        for r in &self.reads {
            let w = r.record.word();
            if w & !LOCK_BIT != r.ts {
                return conflict;
            }
            if w & LOCK_BIT != 0 && !self.locked_by_me(&r.record) {
                return conflict;
            }
        }
        for a in &self.absent {
            // A key this transaction writes has its record locked in the write set (`lock`
            // sorted it), and it is the index's record for the key (records are never removed
            // from the index), so no second look-up. Even a record this commit created must
            // be checked: another writer may have found it and installed a version before
            // this transaction locked it.
            let rec = match self
                .writes
                .binary_search_by(|w| (w.table.id(), &w.key[..]).cmp(&(a.table.id(), &a.key[..])))
                .ok()
                .and_then(|i| self.writes[i].record.as_ref())
            {
                Some((rec, _)) => Some(Arc::clone(rec)),
                None => a.table.record(&a.key),
            };
            if let Some(rec) = rec {
                // A record appeared: fine only if it is still version-less and not another writer's.
                let w = rec.word();
                if w & !LOCK_BIT != 0 || (w & LOCK_BIT != 0 && !self.locked_by_me(&rec)) {
                    return conflict;
                }
            }
        }
        for s in &self.scans {
            let seen = &self.reads[s.reads.clone()];
            let mut i = 0;
            let mut ok = true;
            s.table
                .visit(borrow(&s.lo), borrow(&s.hi), s.reverse, |_, rec| {
                    if self.created_by_me(rec) {
                        return true;
                    }
                    match seen.get(i) {
                        Some(r) if Arc::ptr_eq(&r.record, rec) => {
                            i += 1;
                            true
                        }
                        _ => {
                            ok = false;
                            false
                        }
                    }
                });
            if !ok || i != seen.len() {
                return conflict;
            }
        }
        Ok(())
    }
}

/// Values up to this size are copied into the store rather than shared with the write set.
const COPY_VALUE_BYTES: usize = 512;

/// The store's copy of a written value. A small value is copied: sharing a `Bytes` built
/// from a `Vec` (how clients, parsers and TPC-C build values) allocates a shared header,
/// which then lives as long as the version (32 bytes a row) and is freed, often by another
/// thread, when the version is trimmed; the write set's buffer is freed with the
/// transaction instead. A large value is shared (no copy).
fn stored(v: &Bytes) -> Bytes {
    if v.len() <= COPY_VALUE_BYTES {
        Bytes::copy_from_slice(v)
    } else {
        v.clone()
    }
}

/// Keeps what a read of `key` found among the last [`RECENT_READS`], dropping the oldest.
fn remember(recent: &mut VecDeque<(TableId, Key, Known)>, table: TableId, key: Key, known: Known) {
    if recent.len() == RECENT_READS {
        recent.pop_front();
    } else if recent.capacity() == 0 {
        recent.reserve_exact(RECENT_READS);
    }
    recent.push_back((table, key, known));
}

/// Whether `key` lies within `(lo, hi)`.
fn in_range(lo: Bound<&[u8]>, hi: Bound<&[u8]>, key: &[u8]) -> bool {
    RangeBounds::<[u8]>::contains(&(lo, hi), key)
}

/// Borrows an owned key bound.
fn borrow(b: &Bound<Key>) -> Bound<&[u8]> {
    b.as_ref().map(|k| &k[..])
}

/// A transaction that holds its write locks and has not validated its reads yet.
pub struct Locked<'s> {
    /// The transaction, its epoch and this shard's dependency; `None` once finished.
    inner: Option<(Transaction<'s>, u32, u64)>,
}

impl<'s> Locked<'s> {
    /// Whether the transaction writes on this shard.
    pub fn wrote(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|(tx, _, _)| !tx.writes.is_empty())
    }

    /// Validates the reads; on failure releases the locks (nothing becomes visible).
    pub fn validate(mut self) -> Result<Prepared<'s>, Abort> {
        let Some((mut tx, epoch, dep)) = self.inner.take() else {
            return Err(Abort::new(AbortReason::Conflict));
        };
        if let Err(e) = tx.validate() {
            tx.unlock_writes();
            return Err(e);
        }
        Ok(Prepared {
            tx,
            epoch,
            dep,
            done: std::cell::Cell::new(false),
        })
    }

    /// Releases the locks; nothing becomes visible.
    pub fn abort(mut self) {
        if let Some((mut tx, _, _)) = self.inner.take() {
            tx.unlock_writes();
        }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some((tx, _, _)) = &mut self.inner {
            tx.unlock_writes();
        }
    }
}

/// A transaction that holds its write locks and passed validation; install or abort it.
pub struct Prepared<'s> {
    tx: Transaction<'s>,
    epoch: u32,
    /// This shard's dependency: newest timestamp read or overwritten.
    dep: u64,
    /// Installed, aborted or finished read-only: the locks are no longer this one's to release.
    done: std::cell::Cell<bool>,
}

impl<'s> Prepared<'s> {
    /// Whether the transaction writes on this shard.
    pub fn wrote(&self) -> bool {
        !self.tx.writes.is_empty()
    }

    /// The read dependencies `VT` (component-wise max of versions read), with this shard's
    /// component raised to the newest timestamp overwritten.
    pub fn deps(&self) -> Vt {
        let mut d = self.tx.deps.clone();
        let me = self.tx.shard.id();
        d[me] = d[me].max(self.dep);
        d
    }

    /// Allocates this shard's component of the `VT`: `c_s = max(c_s, dep) + 1`.
    pub fn allocate(&self, dep: u64) -> u64 {
        self.tx.shard.next_ts(dep.max(self.dep))
    }

    /// The piece's writes, for logging.
    pub fn with_writes<R>(&self, f: impl FnOnce(&PieceWrites<'_>) -> R) -> R {
        let logged = self.tx.logged();
        f(&PieceWrites { writes: &logged })
    }

    /// The epoch the transaction commits in.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Installs the writes stamped `(epoch, vt)` and unlocks them.
    pub fn install(self, vt: Vt) -> CommitInfo {
        self.install_in_place(&vt);
        self.info(vt)
    }

    /// Installs the writes stamped `(epoch, vt)` and unlocks them, through a shared reference
    /// (so that a commit-log sink can install a piece in the same step that logs it); once
    /// installed, nothing else of this `Prepared` touches the locks. Installs at most once.
    pub fn install_in_place(&self, vt: &Vt) {
        if self.done.replace(true) {
            return;
        }
        let me = self.tx.shard.id();
        let stamp = Stamp {
            epoch: self.epoch,
            ts: vt[me],
            vt: vt.clone(),
        };
        for w in &self.tx.writes {
            if let Some((rec, _)) = &w.record {
                rec.install(
                    stamp.clone(),
                    w.value.as_ref().map(stored),
                    w.table.reclaim(),
                );
            }
        }
    }

    /// The commit's outcome once installed with `vt`.
    pub fn info(&self, vt: Vt) -> CommitInfo {
        CommitInfo {
            epoch: self.epoch,
            vt,
            wrote: !self.tx.writes.is_empty(),
        }
    }

    /// The outcome of a read-only transaction (nothing to install).
    pub fn read_only(self) -> CommitInfo {
        self.done.set(true);
        CommitInfo {
            epoch: self.epoch,
            vt: self.tx.deps.clone(),
            wrote: false,
        }
    }

    /// Releases the locks; nothing becomes visible. (After an install it does nothing.)
    pub fn abort(mut self) {
        if !self.done.replace(true) {
            self.tx.unlock_writes();
        }
    }
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        if !self.done.get() {
            self.tx.unlock_writes();
        }
    }
}

/// Adds the dependency of a read version to `deps`, for a transaction of `epoch` on shard `me`.
///
/// Only versions of the transaction's own epoch (or a newer one) carry a dependency: a
/// version of a closed epoch is final (a leader opens an epoch only once every earlier one
/// has its final watermark and its discarded versions are gone), so waiting for it is moot.
fn add_dependency(deps: &mut Vt, view: &mako_storage::ReadView, epoch: u32, me: usize) {
    match &view.version {
        Some(v) if v.stamp.epoch < epoch => {}
        Some(v) => {
            merge(deps, &v.stamp.vt);
            deps[me] = deps[me].max(view.ts);
        }
        None => deps[me] = deps[me].max(view.ts),
    }
}

/// Raises `into` to the component-wise maximum of itself and `from`.
pub fn merge(into: &mut Vt, from: &[u64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a = (*a).max(*b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mako_storage::Store;

    /// The record a buffered write of `key` already knows, if any.
    fn known_record<'a>(tx: &'a Transaction<'_>, key: &[u8]) -> Option<&'a Arc<Record>> {
        let i = tx.find_write(tx.writes[0].table.id(), key)?;
        match &tx.writes[i].known {
            Some(Known::Record(r)) => Some(r),
            _ => None,
        }
    }

    #[test]
    fn a_write_to_a_key_just_read_or_scanned_reuses_its_record() {
        let store = Arc::new(Store::new());
        let t = store.create_table("t").expect("table");
        for k in [b"a", b"b", b"c", b"d"] {
            t.put(k, Bytes::from_static(b"v"), Stamp::single(0, 1));
        }
        let shard = Shard::single(Arc::clone(&store));
        let mut tx = shard.begin();
        assert_eq!(tx.scan(&t, &b"a"[..]..&b"c"[..], 10).len(), 2);
        tx.get(&t, b"d");
        for k in [b"a", b"b", b"d"] {
            tx.put(&t, k, Bytes::from_static(b"w"));
            let rec = t.record(k).expect("indexed");
            let known = known_record(&tx, k).unwrap_or_else(|| panic!("{k:?} not known"));
            assert!(Arc::ptr_eq(known, &rec), "{k:?} known as another record");
        }
        // A key neither read nor scanned is looked up at commit.
        tx.put(&t, b"c", Bytes::from_static(b"w"));
        assert!(known_record(&tx, b"c").is_none());
        tx.commit().expect("commits");
        assert_eq!(t.get(b"b"), Some(Bytes::from_static(b"w")));
        assert_eq!(t.get(b"c"), Some(Bytes::from_static(b"w")));
    }

    #[test]
    fn small_values_are_copied_into_the_store_and_large_ones_shared() {
        let store = Arc::new(Store::new());
        let t = store.create_table("t").expect("table");
        let shard = Shard::single(Arc::clone(&store));
        let small = Bytes::from(vec![7u8; COPY_VALUE_BYTES]);
        let large = Bytes::from(vec![8u8; COPY_VALUE_BYTES + 1]);
        let mut tx = shard.begin();
        tx.put(&t, b"small", small.clone());
        tx.put(&t, b"large", large.clone());
        tx.commit().expect("commits");
        let got = |k: &[u8]| t.get(k).expect("stored");
        assert_eq!(got(b"small"), small);
        assert_ne!(
            got(b"small").as_ptr(),
            small.as_ptr(),
            "a small value is copied"
        );
        assert_eq!(got(b"large"), large);
        assert_eq!(
            got(b"large").as_ptr(),
            large.as_ptr(),
            "a large value is shared"
        );
    }

    #[test]
    fn a_long_scan_remembers_only_its_first_rows() {
        let store = Arc::new(Store::new());
        let t = store.create_table("t").expect("table");
        let key = |i: usize| format!("k{i:03}").into_bytes();
        for i in 0..RECENT_READS + 4 {
            t.put(&key(i), Bytes::from_static(b"v"), Stamp::single(0, 1));
        }
        let shard = Shard::single(Arc::clone(&store));
        let mut tx = shard.begin();
        assert_eq!(tx.scan(&t, .., usize::MAX).len(), RECENT_READS + 4);
        tx.put(&t, &key(0), Bytes::from_static(b"w"));
        tx.put(&t, &key(RECENT_READS + 3), Bytes::from_static(b"w"));
        assert!(
            known_record(&tx, &key(0)).is_some(),
            "the first row is known"
        );
        assert!(
            known_record(&tx, &key(RECENT_READS + 3)).is_none(),
            "a row past the first {RECENT_READS} is looked up at commit"
        );
        tx.commit().expect("commits");
        assert_eq!(
            t.get(&key(RECENT_READS + 3)),
            Some(Bytes::from_static(b"w"))
        );
    }
}
