//! Records: the version word and the version chain of one key.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use smallvec::{SmallVec, smallvec};

use crate::reclaim::Reclaim;

/// Bit of the version word that marks a record locked by a committing writer.
pub const LOCK_BIT: u64 = 1 << 63;

/// A vector timestamp: one `u64` per shard (index = shard id).
pub type Vt = SmallVec<[u64; 2]>;

/// When a version was written: failure epoch, this shard's timestamp, and the full `VT`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// Failure epoch of the writing transaction.
    pub epoch: u32,
    /// This shard's component of `vt`; orders versions of one record.
    pub ts: u64,
    /// The writing transaction's vector timestamp.
    pub vt: Vt,
}

impl Clone for Stamp {
    /// Copies the stamp (the `VT` by one `memcpy`, not element by element: every read clones one).
    #[inline]
    fn clone(&self) -> Self {
        Stamp {
            epoch: self.epoch,
            ts: self.ts,
            vt: Vt::from_slice(&self.vt),
        }
    }
}

impl Stamp {
    /// A stamp for a one-shard deployment: `VT = [ts]`.
    pub fn single(epoch: u32, ts: u64) -> Self {
        Stamp {
            epoch,
            ts,
            vt: smallvec![ts],
        }
    }

    /// The last-writer-wins order key `(epoch, ts)`.
    pub fn order(&self) -> (u32, u64) {
        (self.epoch, self.ts)
    }
}

/// One version of a record: its stamp and a value, or `None` for a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// When the version was written.
    pub stamp: Stamp,
    /// The value, `None` if the key was deleted.
    pub value: Option<Bytes>,
}

/// A consistent read of a record: the version word and the newest version it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadView {
    /// Timestamp part of the version word (0 if the record never had a version).
    pub ts: u64,
    /// Whether a writer held the lock at the time of the read.
    pub locked: bool,
    /// The newest version, `None` if the record has none yet.
    pub version: Option<Version>,
}

impl ReadView {
    /// The visible value: `None` for a tombstone or a record without versions.
    pub fn value(&self) -> Option<&Bytes> {
        self.version.as_ref().and_then(|v| v.value.as_ref())
    }
}

/// A record's versions, oldest first; the usual single version lives inline (no allocation).
type Chain = SmallVec<[Version; 1]>;

/// The stored state of one key: a version word and a chain of versions.
///
/// The chain is kept oldest-first in memory (so installing is a push); readers
/// see it newest-first through [`Record::read`] and [`Record::versions`].
#[derive(Debug, Default)]
pub struct Record {
    word: AtomicU64,
    chain: Mutex<Chain>,
}

impl Record {
    /// A record with no version (the state of a freshly indexed key).
    pub fn absent() -> Self {
        Record::default()
    }

    /// The current version word (lock bit | timestamp of the newest version).
    pub fn word(&self) -> u64 {
        self.word.load(Ordering::Acquire)
    }

    /// Tries to set the lock bit; returns the timestamp it held, or `None` if already locked.
    pub fn try_lock(&self) -> Option<u64> {
        let w = self.word.load(Ordering::Acquire);
        if w & LOCK_BIT != 0 {
            return None;
        }
        self.word
            .compare_exchange(w, w | LOCK_BIT, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| w)
    }

    /// Takes the lock if it is free, or once its holder lets it go within `patience`
    /// (spinning, then yielding); `None` if it stayed held. Returns the word as
    /// [`Record::try_lock`] does.
    pub fn try_lock_for(&self, patience: std::time::Duration) -> Option<u64> {
        if let Some(ts) = self.try_lock() {
            return Some(ts);
        }
        if patience.is_zero() {
            return None;
        }
        let deadline = std::time::Instant::now() + patience;
        let mut spins = 0u32;
        loop {
            spins += 1;
            back_off(spins);
            if let Some(ts) = self.try_lock() {
                return Some(ts);
            }
            if spins & 15 == 0 && std::time::Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Takes the lock, waiting for the current holder; for non-transactional writers only.
    pub fn lock_wait(&self) -> u64 {
        let mut spins = 0u32;
        loop {
            if let Some(ts) = self.try_lock() {
                return ts;
            }
            spins += 1;
            back_off(spins);
        }
    }

    /// Clears the lock bit without installing anything (abort path).
    pub fn unlock(&self) {
        self.word.fetch_and(!LOCK_BIT, Ordering::Release);
    }

    /// Reads the version word and the newest version consistently.
    pub fn read(&self) -> ReadView {
        let chain = self.chain.lock();
        let w = self.word.load(Ordering::Acquire);
        ReadView {
            ts: w & !LOCK_BIT,
            locked: w & LOCK_BIT != 0,
            version: chain.last().cloned(),
        }
    }

    /// Installs `value` as the newest version and releases the lock the caller holds.
    ///
    /// Of the versions at or below the reclaim bound, those older than the newest final one
    /// are trimmed.
    pub fn install(&self, stamp: Stamp, value: Option<Bytes>, reclaim: &Reclaim) {
        let mut chain = self.chain.lock();
        let ts = stamp.ts;
        chain.push(Version { stamp, value });
        let trimmed = trim(&mut chain, reclaim);
        self.word.store(ts & !LOCK_BIT, Ordering::Release);
        drop(chain);
        // Freeing the trimmed values (often cold, often another thread's allocation) waits
        // until the record is released.
        drop(trimmed);
    }

    /// Applies a replicated version last-writer-wins by `(epoch, ts)`; returns whether it was new.
    ///
    /// Idempotent and order-insensitive: applying the same set of versions in any
    /// order, any number of times, leaves the same newest version.
    pub fn apply(&self, stamp: Stamp, value: Option<Bytes>, reclaim: &Reclaim) -> bool {
        let key = stamp.order();
        // A duplicate is answered without waiting for a writer that holds the record.
        if self.chain.lock().iter().any(|v| v.stamp.order() == key) {
            return false;
        }
        let held = self.lock_wait();
        let mut chain = self.chain.lock();
        let pos = chain.partition_point(|v| v.stamp.order() < key);
        if chain.get(pos).is_some_and(|v| v.stamp.order() == key) {
            drop(chain);
            self.unlock();
            return false;
        }
        chain.insert(pos, Version { stamp, value });
        let trimmed = trim(&mut chain, reclaim);
        let newest = chain.last().map_or(held, |v| v.stamp.ts);
        self.word.store(newest & !LOCK_BIT, Ordering::Release);
        drop(chain);
        drop(trimmed);
        true
    }

    /// Removes every version whose stamp `discard` selects; returns how many went.
    ///
    /// For versions that must never have existed (a failover's discarded transactions):
    /// the version word then names the newest remaining version. Never waits for a writer
    /// holding the record (its lock bit is kept; its own version is not installed yet).
    pub fn remove_versions(&self, discard: &mut dyn FnMut(&Stamp) -> bool) -> usize {
        let mut chain = self.chain.lock();
        let before = chain.len();
        chain.retain(|v| !discard(&v.stamp));
        let removed = before - chain.len();
        if removed > 0 {
            let newest = chain.last().map_or(0, |v| v.stamp.ts) & !LOCK_BIT;
            // Installs store the word under the chain lock too, so only the lock bit moves.
            let mut w = self.word.load(Ordering::Acquire);
            while let Err(seen) = self.word.compare_exchange_weak(
                w,
                (w & LOCK_BIT) | newest,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                w = seen;
            }
        }
        removed
    }

    /// Replaces the whole chain with `versions` (oldest first, ascending by `(epoch, ts)`;
    /// empty leaves the record absent), in one step under the chain lock: a reader sees the
    /// old chain or the new one. For installing a snapshot; trims nothing.
    pub fn replace_versions(&self, versions: Vec<Version>) {
        let _held = self.lock_wait();
        let mut chain = self.chain.lock();
        *chain = Chain::from_vec(versions);
        let newest = chain.last().map_or(0, |v| v.stamp.ts);
        self.word.store(newest & !LOCK_BIT, Ordering::Release);
    }

    /// Number of versions currently kept.
    pub fn chain_len(&self) -> usize {
        self.chain.lock().len()
    }

    /// A copy of the kept versions, newest first.
    pub fn versions(&self) -> Vec<Version> {
        self.chain.lock().iter().rev().cloned().collect()
    }

    /// Replaces `out`'s contents with a copy of the kept versions, oldest first (values
    /// shared): [`Record::versions`] into a buffer the caller reuses across records.
    pub fn copy_versions(&self, out: &mut Vec<Version>) {
        out.clear();
        out.extend(self.chain.lock().iter().cloned());
    }
}

/// Removes every version older than the newest final one at or below the reclaim bound;
/// returns them, for the caller to drop once it has released the record.
fn trim(chain: &mut Chain, reclaim: &Reclaim) -> Chain {
    let at_or_below = chain.partition_point(|v| v.stamp.ts <= reclaim.bound());
    if at_or_below <= 1 {
        return Chain::new();
    }
    let Some(keep) = (0..at_or_below)
        .rev()
        .find(|&i| reclaim.is_final(&chain[i].stamp))
    else {
        return Chain::new();
    };
    let trimmed: Chain = chain.drain(..keep).collect();
    if chain.spilled() && chain.len() <= chain.inline_size() {
        // Back inline: a record that had several versions for a while keeps no heap block.
        chain.shrink_to_fit();
    }
    trimmed
}

/// One step of waiting for a record lock: spin for the first 64 tries, then yield.
fn back_off(spins: u32) {
    if spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy that trims nothing (bound 0).
    fn keep_all() -> Reclaim {
        let r = Reclaim::new();
        r.set_bound(0);
        r
    }

    #[test]
    fn lock_is_exclusive_and_install_unlocks() {
        let r = Record::absent();
        assert_eq!(r.try_lock(), Some(0));
        assert_eq!(r.try_lock(), None);
        r.install(
            Stamp::single(0, 5),
            Some(Bytes::from_static(b"v")),
            &Reclaim::new(),
        );
        assert_eq!(r.word(), 5);
        let view = r.read();
        assert_eq!(view.ts, 5);
        assert!(!view.locked);
        assert_eq!(view.value().map(|b| &b[..]), Some(&b"v"[..]));
    }

    #[test]
    fn a_record_back_to_one_version_holds_it_inline() {
        let r = Record::absent();
        let reclaim = Reclaim::new();
        reclaim.set_bound(0);
        for ts in 1..=5 {
            r.lock_wait();
            r.install(Stamp::single(0, ts), None, &reclaim);
        }
        assert_eq!(r.chain_len(), 5);
        assert!(r.chain.lock().spilled());
        reclaim.set_bound(u64::MAX);
        r.lock_wait();
        r.install(
            Stamp::single(0, 6),
            Some(Bytes::from_static(b"v")),
            &reclaim,
        );
        assert_eq!(r.chain_len(), 1);
        assert!(!r.chain.lock().spilled(), "no heap block for one version");
        assert_eq!(r.read().value().map(|b| &b[..]), Some(&b"v"[..]));
    }

    #[test]
    fn stamps_clone_equal() {
        let inline = Stamp::single(3, 9);
        assert_eq!(inline.clone(), inline);
        let spilled = Stamp {
            epoch: 1,
            ts: 4,
            vt: Vt::from_slice(&[4, 7, 0, 2]),
        };
        let copy = spilled.clone();
        assert_eq!(copy, spilled);
        assert!(copy.vt.spilled());
    }

    /// A value that notes, when freed, whether its record was released by then.
    struct Watched {
        rec: std::sync::Weak<Record>,
        seen: std::sync::Arc<Mutex<Option<(bool, bool)>>>,
    }

    impl AsRef<[u8]> for Watched {
        fn as_ref(&self) -> &[u8] {
            b"watched"
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            let released = self.rec.upgrade().map(|rec| {
                let chain_free = rec.chain.try_lock().is_some();
                (chain_free, rec.word() & LOCK_BIT == 0)
            });
            *self.seen.lock() = released;
        }
    }

    #[test]
    fn trimmed_values_are_freed_after_the_record_is_released() {
        let reclaim = Reclaim::new();
        for via_apply in [false, true] {
            let rec = std::sync::Arc::new(Record::absent());
            let seen = std::sync::Arc::new(Mutex::new(None));
            let value = Bytes::from_owner(Watched {
                rec: std::sync::Arc::downgrade(&rec),
                seen: std::sync::Arc::clone(&seen),
            });
            rec.lock_wait();
            rec.install(Stamp::single(0, 1), Some(value), &reclaim);
            let next = Some(Bytes::from_static(b"next"));
            if via_apply {
                rec.apply(Stamp::single(0, 2), next, &reclaim);
            } else {
                rec.lock_wait();
                rec.install(Stamp::single(0, 2), next, &reclaim);
            }
            assert_eq!(rec.chain_len(), 1);
            assert_eq!(
                *seen.lock(),
                Some((true, true)),
                "freed with the chain lock free and the record unlocked (apply: {via_apply})"
            );
        }
    }

    #[test]
    fn trim_keeps_versions_above_bound() {
        let r = Record::absent();
        let reclaim = Reclaim::new();
        reclaim.set_bound(6);
        for ts in 1..=10 {
            r.lock_wait();
            r.install(Stamp::single(0, ts), None, &reclaim);
        }
        // 6 (newest at or below the bound) and 7..=10.
        assert_eq!(r.chain_len(), 5);
        assert_eq!(r.versions().last().map(|v| v.stamp.ts), Some(6));
    }

    #[test]
    fn removed_versions_leave_the_newest_remaining_one_visible() {
        // Version 9 is not final: version 3 stays behind it.
        struct UpTo(u64);
        impl crate::reclaim::Finality for UpTo {
            fn is_final(&self, s: &Stamp) -> bool {
                s.ts <= self.0
            }
        }
        let reclaim = Reclaim::new();
        reclaim.set_finality(std::sync::Arc::new(UpTo(5)));
        let r = Record::absent();
        r.apply(
            Stamp::single(0, 3),
            Some(Bytes::from_static(b"a")),
            &reclaim,
        );
        r.apply(
            Stamp::single(0, 9),
            Some(Bytes::from_static(b"b")),
            &reclaim,
        );
        assert_eq!(r.chain_len(), 2);
        assert_eq!(r.remove_versions(&mut |s| s.ts == 9), 1);
        assert_eq!(r.word(), 3);
        assert_eq!(r.read().value().map(|b| &b[..]), Some(&b"a"[..]));
        assert_eq!(r.remove_versions(&mut |_| true), 1);
        assert_eq!((r.word(), r.read().version), (0, None));
        // A writer holding the record keeps its lock; removal does not wait for it.
        r.apply(
            Stamp::single(0, 4),
            Some(Bytes::from_static(b"c")),
            &Reclaim::new(),
        );
        r.apply(
            Stamp::single(0, 6),
            Some(Bytes::from_static(b"d")),
            &Reclaim::new(),
        );
        assert_eq!(r.try_lock(), Some(6));
        assert_eq!(r.remove_versions(&mut |s| s.ts == 6), 1);
        assert_eq!(r.word(), LOCK_BIT, "the holder's lock bit stays");
        r.unlock();
        assert_eq!(r.try_lock(), Some(0));
        r.unlock();
    }

    #[test]
    fn replace_versions_swaps_the_whole_chain_and_unlocks() {
        let r = Record::absent();
        r.apply(
            Stamp::single(0, 3),
            Some(Bytes::from_static(b"a")),
            &keep_all(),
        );
        let chain = vec![
            Version {
                stamp: Stamp::single(0, 5),
                value: Some(Bytes::from_static(b"b")),
            },
            Version {
                stamp: Stamp::single(1, 2),
                value: None,
            },
        ];
        r.replace_versions(chain.clone());
        assert_eq!(r.word(), 2);
        assert_eq!(r.versions(), chain.into_iter().rev().collect::<Vec<_>>());
        r.replace_versions(Vec::new());
        assert_eq!((r.word(), r.read().version), (0, None));
        assert_eq!(r.try_lock(), Some(0), "unlocked afterwards");
    }

    #[test]
    fn apply_is_last_writer_wins_and_idempotent() {
        let a = Record::absent();
        let b = Record::absent();
        let versions = [(0, 3), (1, 1), (0, 7)];
        for &(e, ts) in &versions {
            a.apply(
                Stamp::single(e, ts),
                Some(Bytes::from(format!("{e}.{ts}"))),
                &keep_all(),
            );
        }
        for &(e, ts) in versions.iter().rev().chain(versions.iter()) {
            b.apply(
                Stamp::single(e, ts),
                Some(Bytes::from(format!("{e}.{ts}"))),
                &keep_all(),
            );
        }
        assert_eq!(a.read(), b.read());
        assert_eq!(a.read().version.map(|v| v.stamp.order()), Some((1, 1)));
    }
}
