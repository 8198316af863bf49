//! Tables: one ordered index of keys to records, with direct (non-transactional) operations.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::error::StorageError;
use crate::index::{Cache, Index};
use crate::reclaim::Reclaim;
use crate::record::{Record, Stamp, Version};
use crate::store::TableId;

/// A byte-string key; keys up to 16 bytes are stored inline.
pub type Key = SmallVec<[u8; 16]>;

/// One table of a store: a name, a stable id and an ordered index of records.
pub struct Table {
    id: TableId,
    name: String,
    index: Index,
    reclaim: Arc<Reclaim>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("keys", &self.index.len())
            .finish()
    }
}

/// Converts borrowed range bounds into the pair form the index takes.
pub(crate) fn bounds<'k>(range: &impl RangeBounds<&'k [u8]>) -> (Bound<&'k [u8]>, Bound<&'k [u8]>) {
    (
        range.start_bound().map(|b| *b),
        range.end_bound().map(|b| *b),
    )
}

impl Table {
    pub(crate) fn new(id: TableId, name: String, reclaim: Arc<Reclaim>) -> Self {
        Table {
            id,
            name,
            index: Index::default(),
            reclaim,
        }
    }

    /// The table's stable id.
    pub fn id(&self) -> TableId {
        self.id
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of indexed keys, tombstoned ones included.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the table has no indexed key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Versions at or below this timestamp are final; only the newest of them is kept.
    pub fn reclaim_bound(&self) -> u64 {
        self.reclaim.bound()
    }

    /// The reclaim policy installs trim by.
    pub fn reclaim(&self) -> &Reclaim {
        &self.reclaim
    }

    /// The record under `key`, if the key is indexed.
    pub fn record(&self, key: &[u8]) -> Option<Arc<Record>> {
        self.index.get(key)
    }

    /// The record under `key`, indexing an absent one first if needed; `true` if it was created.
    ///
    /// For transactions: a created record joins the point look-up hash on its first look-up.
    pub fn record_or_insert(&self, key: &[u8]) -> (Arc<Record>, bool) {
        self.index.get_or_insert(key, Cache::Later)
    }

    /// [`Table::record_or_insert`] for a key expected to be new: tries the insert first.
    pub fn insert_or_record(&self, key: &[u8]) -> (Arc<Record>, bool) {
        self.index.insert_or_get(key, Cache::Later)
    }

    /// The record under `key` for a direct write (loads, replay): one it creates joins the
    /// point look-up hash at once, as the rows of a data set are the ones read.
    fn record_to_write(&self, key: &[u8]) -> Arc<Record> {
        self.index.get_or_insert(key, Cache::Now).0
    }

    /// Calls `f` on each indexed entry in `[lo, hi]` (ascending, or descending if `reverse`) while it returns `true`.
    pub fn visit(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        reverse: bool,
        f: impl FnMut(&[u8], &Arc<Record>) -> bool,
    ) {
        self.index.visit(lo, hi, reverse, f)
    }

    /// The visible value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.record(key)?.read().value().cloned()
    }

    /// The newest version under `key` (tombstones included).
    pub fn get_version(&self, key: &[u8]) -> Option<Version> {
        self.record(key)?.read().version
    }

    /// Writes `value` under `key` as a new newest version.
    pub fn put(&self, key: &[u8], value: Bytes, stamp: Stamp) {
        self.write(key, Some(value), stamp);
    }

    /// Writes `value` under `key` unless a visible value is there.
    pub fn insert(&self, key: &[u8], value: Bytes, stamp: Stamp) -> Result<(), StorageError> {
        let rec = self.record_to_write(key);
        rec.lock_wait();
        if rec.read().value().is_some() {
            rec.unlock();
            return Err(StorageError::KeyExists);
        }
        rec.install(stamp, Some(value), &self.reclaim);
        Ok(())
    }

    /// Writes a tombstone under `key`; returns whether a visible value was there.
    pub fn delete(&self, key: &[u8], stamp: Stamp) -> bool {
        let Some(rec) = self.record(key) else {
            return false;
        };
        rec.lock_wait();
        let existed = rec.read().value().is_some();
        rec.install(stamp, None, &self.reclaim);
        existed
    }

    /// Applies a replicated write last-writer-wins by `(epoch, ts)`; returns whether it was new.
    pub fn apply(&self, key: &[u8], stamp: Stamp, value: Option<Bytes>) -> bool {
        self.record_to_write(key).apply(stamp, value, &self.reclaim)
    }

    /// Removes every version whose stamp `discard` selects, in every record; returns how many.
    pub fn remove_versions(&self, mut discard: impl FnMut(&Stamp) -> bool) -> usize {
        let mut removed = 0;
        self.visit(Bound::Unbounded, Bound::Unbounded, false, |_, rec| {
            removed += rec.remove_versions(&mut discard);
            true
        });
        removed
    }

    fn write(&self, key: &[u8], value: Option<Bytes>, stamp: Stamp) {
        let rec = self.record_to_write(key);
        rec.lock_wait();
        rec.install(stamp, value, &self.reclaim);
    }

    /// Up to `limit` visible `(key, value)` pairs in `range`, ascending.
    pub fn scan<'k>(&self, range: impl RangeBounds<&'k [u8]>, limit: usize) -> Vec<(Key, Bytes)> {
        self.scan_dir(bounds(&range), limit, false)
    }

    /// Up to `limit` visible `(key, value)` pairs in `range`, descending.
    pub fn rscan<'k>(&self, range: impl RangeBounds<&'k [u8]>, limit: usize) -> Vec<(Key, Bytes)> {
        self.scan_dir(bounds(&range), limit, true)
    }

    fn scan_dir(
        &self,
        (lo, hi): (Bound<&[u8]>, Bound<&[u8]>),
        limit: usize,
        reverse: bool,
    ) -> Vec<(Key, Bytes)> {
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        self.visit(lo, hi, reverse, |k, rec| {
            if let Some(v) = rec.read().value() {
                out.push((Key::from_slice(k), v.clone()));
            }
            out.len() < limit
        });
        out
    }

    /// Every indexed key with its newest version, ascending; used to compare replicas.
    pub fn latest(&self) -> Vec<(Key, Version)> {
        let mut out = Vec::with_capacity(self.len());
        self.visit(Bound::Unbounded, Bound::Unbounded, false, |k, rec| {
            if let Some(v) = rec.read().version {
                out.push((Key::from_slice(k), v));
            }
            true
        });
        out
    }
}
