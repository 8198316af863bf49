//! The ordered concurrent index behind every table (one place to swap it).

use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::sync::Arc;

use scc::{Comparable, Equivalent, Guard, HashIndex, TreeIndex};

use crate::record::Record;
use crate::table::Key;

/// The index's key: a [`Key`] whose order compares the first 8 bytes as one
/// big-endian integer (the same order as byte-wise, without a `memcmp` call).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct IKey(Key);

impl IKey {
    fn of(key: &[u8]) -> Self {
        IKey(Key::from_slice(key))
    }
}

impl Hash for IKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The same hash as [`Probe`]'s, so a borrowed key finds an owned one.
        self.0.as_slice().hash(state)
    }
}

/// A borrowed key for look-ups: hashes and orders as the [`IKey`] it names, without a copy.
#[derive(Clone, Copy)]
struct Probe<'a>(&'a [u8]);

impl Hash for Probe<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl Equivalent<IKey> for Probe<'_> {
    #[inline]
    fn equivalent(&self, key: &IKey) -> bool {
        self.0 == key.0.as_slice()
    }
}

impl Comparable<IKey> for Probe<'_> {
    #[inline]
    fn compare(&self, key: &IKey) -> std::cmp::Ordering {
        order(self.0, key.0.as_slice())
    }
}

/// The first 8 bytes of `s` as a big-endian integer, if it has them.
#[inline]
fn head(s: &[u8]) -> Option<u64> {
    s.get(..8)
        .and_then(|h| h.try_into().ok())
        .map(u64::from_be_bytes)
}

/// Byte-wise order of `a` and `b`, comparing their first 8 bytes as one integer.
#[inline]
fn order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (head(a), head(b)) {
        (Some(x), Some(y)) if x != y => x.cmp(&y),
        (Some(_), Some(_)) => a[8..].cmp(&b[8..]),
        _ => a.cmp(b),
    }
}

impl Ord for IKey {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        order(self.0.as_slice(), other.0.as_slice())
    }
}

impl PartialOrd for IKey {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Whether a record an insert creates enters the point look-up hash at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cache {
    /// At once (bulk loads, replay).
    Now,
    /// On the key's first look-up (rows transactions insert).
    Later,
}

/// Ordered map from keys to records; records are never removed while the table lives.
///
/// `scc::TreeIndex` (a B+ tree with lock-free reads) won the index benchmark
/// (`cargo bench -p mako-storage --bench index`) against a skip list, masstree,
/// ferntree and a locked `BTreeMap`. The tree is the one authority on which keys exist;
/// point look-ups go through a hash index of the same records first (micro workload, one
/// worker: about 1.25x the look-ups per second, for about 70 B more per key). A look-up
/// that misses the hash and finds the key in the tree adds it. A key inserted enters the
/// hash at once only if the inserter asks ([`Cache::Now`]: loaders and replay, whose rows
/// are the data set that transactions read); a row a transaction inserts enters it on its
/// first look-up ([`Cache::Later`]: most such rows, like TPC-C order lines, are never looked
/// up by key). Since records are never removed, a hash entry is always the tree's record
/// for its key. Look-ups borrow the caller's key ([`Probe`]) instead of copying it.
#[derive(Default)]
pub(crate) struct Index {
    map: TreeIndex<IKey, Arc<Record>>,
    /// Records of `map` that were looked up, by key, for point look-ups.
    cache: HashIndex<IKey, Arc<Record>, foldhash::fast::RandomState>,
}

impl Index {
    /// The record under `key`, if indexed.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Record>> {
        let probe = Probe(key);
        let r = {
            let guard = Guard::new();
            if let Some(r) = self.cache.peek(&probe, &guard) {
                return Some(Arc::clone(r));
            }
            Arc::clone(self.map.peek(&probe, &guard)?)
        };
        self.remember(key, &r);
        Some(r)
    }

    /// Adds the tree's record `r` for `key` to the hash (another thread may have already).
    fn remember(&self, key: &[u8], r: &Arc<Record>) {
        let _ = self.cache.insert_sync(IKey::of(key), Arc::clone(r));
    }

    /// The record under `key`, indexing a fresh absent one if needed; `true` if created.
    ///
    /// A key the hash does not know is tried as an insert straight away: one tree descent
    /// for a new key instead of two (TPC-C: NewOrder p50 about 10% lower than looking in
    /// the tree first). A key present but not in the hash yet pays a second, warm descent
    /// once and enters the hash.
    pub(crate) fn get_or_insert(&self, key: &[u8], cache: Cache) -> (Arc<Record>, bool) {
        let cached = self.cache.peek_with(&Probe(key), |_, r| Arc::clone(r));
        match cached {
            Some(r) => (r, false),
            None => self.insert_or_get(key, cache),
        }
    }

    /// [`Index::get_or_insert`] for a key expected to be absent: tries the insert first.
    ///
    /// A created record enters the hash as `cache` says; one found enters it as through
    /// [`Index::get`].
    pub(crate) fn insert_or_get(&self, key: &[u8], cache: Cache) -> (Arc<Record>, bool) {
        let fresh = Arc::new(Record::absent());
        loop {
            match self.map.insert_sync(IKey::of(key), Arc::clone(&fresh)) {
                Ok(()) => {
                    if cache == Cache::Now {
                        self.remember(key, &fresh);
                    }
                    return (fresh, true);
                }
                Err(_) => {
                    // Present already (or lost a race with another inserter): use theirs.
                    // The tree holds it (records are never removed); the hash may not yet.
                    let found = self.map.peek_with(&Probe(key), |_, r| Arc::clone(r));
                    if let Some(r) = found {
                        self.remember(key, &r);
                        return (r, false);
                    }
                }
            }
        }
    }

    /// Calls `f` on each entry in the range, ascending or descending, while it returns `true`.
    pub(crate) fn visit(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        reverse: bool,
        mut f: impl FnMut(&[u8], &Arc<Record>) -> bool,
    ) {
        if range_is_empty(lo, hi) {
            return;
        }
        let guard = Guard::new();
        // scc's range iterator walks most of the tree to find its start when the
        // starting bound lies beyond the keys present; start unbounded instead.
        let (lo, hi) = if reverse {
            let last = self.map.iter(&guard).next_back().map(|(k, _)| &k.0[..]);
            match (hi, last) {
                (Bound::Included(h) | Bound::Excluded(h), Some(l)) if h > l => {
                    (lo, Bound::Unbounded)
                }
                _ => (lo, hi),
            }
        } else {
            let first = self.map.iter(&guard).next().map(|(k, _)| &k.0[..]);
            match (lo, first) {
                (Bound::Included(b) | Bound::Excluded(b), Some(f)) if b < f => {
                    (Bound::Unbounded, hi)
                }
                _ => (lo, hi),
            }
        };
        let range = self
            .map
            .range::<Probe<'_>, _>((lo.map(Probe), hi.map(Probe)), &guard);
        if reverse {
            for (k, v) in range.rev() {
                if !f(&k.0, v) {
                    break;
                }
            }
        } else {
            for (k, v) in range {
                if !f(&k.0, v) {
                    break;
                }
            }
        }
    }

    /// Number of indexed keys (tombstoned ones included).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Whether a range selects nothing (start after end); such ranges would panic in `BTreeMap`-style APIs.
pub(crate) fn range_is_empty(lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ikey_order_is_byte_order() {
        let keys: [&[u8]; 9] = [
            b"",
            b"\x00",
            b"abc",
            b"abcdefgh",
            b"abcdefgh\x00",
            b"abcdefgi",
            b"abcdefghzzzzzzzzzz",
            b"\xff\xff\xff\xff\xff\xff\xff\xff",
            b"b",
        ];
        for a in keys {
            for b in keys {
                assert_eq!(IKey::of(a).cmp(&IKey::of(b)), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(Probe(a).compare(&IKey::of(b)), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(Probe(a).equivalent(&IKey::of(b)), a == b, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn a_probe_hashes_as_its_key() {
        use std::hash::BuildHasher;
        let s = foldhash::fast::RandomState::default();
        for k in [&b""[..], b"a", b"0123456789abcdef", b"0123456789abcdefg"] {
            assert_eq!(s.hash_one(Probe(k)), s.hash_one(IKey::of(k)), "{k:?}");
        }
    }

    #[test]
    fn the_hash_learns_a_key_on_its_first_look_up_unless_its_insert_asks() {
        let ix = Index::default();
        let (a, created) = ix.insert_or_get(b"a", Cache::Later);
        assert!(created);
        let (b, created) = ix.get_or_insert(b"b", Cache::Later);
        assert!(created);
        assert_eq!(ix.cache.len(), 0, "inserts for later leave the hash alone");
        assert!(Arc::ptr_eq(&ix.get(b"a").unwrap(), &a));
        assert_eq!(ix.cache.len(), 1);
        let (again, created) = ix.get_or_insert(b"b", Cache::Now);
        assert!(!created && Arc::ptr_eq(&again, &b));
        let (again, created) = ix.insert_or_get(b"a", Cache::Later);
        assert!(!created && Arc::ptr_eq(&again, &a));
        assert_eq!(ix.cache.len(), 2);
        assert!(ix.get(b"c").is_none());
        let (c, created) = ix.get_or_insert(b"c", Cache::Now);
        assert!(created);
        let cached = ix.cache.peek_with(&Probe(b"c"), |_, v| Arc::clone(v));
        assert!(
            Arc::ptr_eq(&cached.unwrap(), &c),
            "an insert for now fills the hash"
        );
        let (d, _) = ix.insert_or_get(b"d", Cache::Now);
        assert!(Arc::ptr_eq(
            &ix.cache
                .peek_with(&Probe(b"d"), |_, v| Arc::clone(v))
                .unwrap(),
            &d
        ));
        assert_eq!((ix.cache.len(), ix.len()), (4, 4));
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    #[test]
    fn scans_with_bounds_beyond_the_keys_return_the_right_rows() {
        let ix = Index::default();
        for k in [10u8, 20, 30] {
            ix.get_or_insert(&[k], Cache::Later);
        }
        let collect = |lo: Bound<&[u8]>, hi: Bound<&[u8]>, rev: bool| {
            let mut out = Vec::new();
            ix.visit(lo, hi, rev, |k, _| {
                out.push(k[0]);
                true
            });
            out
        };
        let (below, above, mid) = ([0u8], [255u8, 255], [25u8]);
        assert_eq!(
            collect(Bound::Included(&below), Bound::Included(&above), false),
            [10, 20, 30]
        );
        assert_eq!(
            collect(Bound::Included(&below), Bound::Included(&above), true),
            [30, 20, 10]
        );
        assert_eq!(
            collect(Bound::Excluded(&below), Bound::Excluded(&mid), false),
            [10, 20]
        );
        assert_eq!(
            collect(Bound::Included(&mid), Bound::Excluded(&above), true),
            [30]
        );
        assert!(collect(Bound::Included(&above), Bound::Unbounded, false).is_empty());
        assert!(collect(Bound::Unbounded, Bound::Excluded(&below), true).is_empty());
    }
}

#[cfg(test)]
mod race_tests {
    use super::*;

    #[test]
    fn concurrent_inserts_of_one_key_create_one_record() {
        let ix = Index::default();
        const KEYS: u64 = 20_000;
        let got: Vec<Vec<(Arc<Record>, bool)>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let ix = &ix;
                    s.spawn(move || {
                        (0..KEYS)
                            .map(|k| {
                                let key = k.to_be_bytes();
                                let cache = if t < 2 { Cache::Now } else { Cache::Later };
                                if t % 2 == 0 {
                                    ix.insert_or_get(&key, cache)
                                } else {
                                    ix.get_or_insert(&key, cache)
                                }
                            })
                            .collect()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for k in 0..KEYS as usize {
            let created = got.iter().filter(|g| g[k].1).count();
            assert_eq!(created, 1, "key {k}");
            let first = &got[0][k].0;
            assert!(got.iter().all(|g| Arc::ptr_eq(&g[k].0, first)), "key {k}");
            assert!(Arc::ptr_eq(
                &ix.get(&(k as u64).to_be_bytes()).unwrap(),
                first
            ));
        }
    }

    /// What one reader thread found, by key.
    type Seen = Vec<Option<Arc<Record>>>;

    #[test]
    fn look_ups_racing_inserts_see_the_one_record_of_each_key() {
        let ix = Index::default();
        const KEYS: u64 = 20_000;
        let (inserted, seen): (Vec<Arc<Record>>, Vec<Seen>) = std::thread::scope(|s| {
            let ix = &ix;
            let readers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(move || {
                        (0..KEYS)
                            .map(|k| ix.get(&k.to_be_bytes()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let inserted = (0..KEYS)
                .map(|k| {
                    let (r, created) = ix.insert_or_get(&k.to_be_bytes(), Cache::Later);
                    assert!(created);
                    r
                })
                .collect();
            (
                inserted,
                readers.into_iter().map(|h| h.join().unwrap()).collect(),
            )
        });
        for (k, rec) in inserted.iter().enumerate() {
            for got in seen.iter().filter_map(|s| s[k].as_ref()) {
                assert!(Arc::ptr_eq(got, rec), "key {k}");
            }
            let key = (k as u64).to_be_bytes();
            assert!(Arc::ptr_eq(&ix.get(&key).unwrap(), rec), "key {k}");
            let cached = ix.cache.peek_with(&Probe(&key), |_, v| Arc::clone(v));
            assert!(
                Arc::ptr_eq(&cached.unwrap(), rec),
                "key {k}: the hash holds the tree's record"
            );
        }
    }
}
