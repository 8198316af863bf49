//! The ordered concurrent index behind every table (one place to swap it).

use std::ops::Bound;
use std::sync::Arc;

use scc::{Guard, HashIndex, TreeIndex};

use crate::record::Record;
use crate::table::Key;

/// The index's key: a [`Key`] whose order compares the first 8 bytes as one
/// big-endian integer (the same order as byte-wise, without a `memcmp` call).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct IKey(Key);

impl IKey {
    fn of(key: &[u8]) -> Self {
        IKey(Key::from_slice(key))
    }
}

/// The first 8 bytes of `s` as a big-endian integer, if it has them.
#[inline]
fn head(s: &[u8]) -> Option<u64> {
    s.get(..8)
        .and_then(|h| h.try_into().ok())
        .map(u64::from_be_bytes)
}

impl Ord for IKey {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let (a, b) = (self.0.as_slice(), other.0.as_slice());
        match (head(a), head(b)) {
            (Some(x), Some(y)) if x != y => x.cmp(&y),
            (Some(_), Some(_)) => a[8..].cmp(&b[8..]),
            _ => a.cmp(b),
        }
    }
}

impl PartialOrd for IKey {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Ordered map from keys to records; records are never removed while the table lives.
///
/// `scc::TreeIndex` (a B+ tree with lock-free reads) won the index benchmark
/// (`cargo bench -p mako-storage --bench index`) against a skip list, masstree,
/// ferntree and a locked `BTreeMap`. The tree is the one authority on which keys exist;
/// point look-ups go through a hash index of the same records first (micro workload, one
/// worker: about 1.25x the look-ups per second, for about 70 B more per key). A record
/// enters the hash right after the tree, and a look-up that misses the hash falls back to
/// the tree (and fills the hash in). Since records are never removed, a hash entry is
/// always the tree's record for its key.
#[derive(Default)]
pub(crate) struct Index {
    map: TreeIndex<IKey, Arc<Record>>,
    /// The records of `map`, by key, for point look-ups.
    cache: HashIndex<IKey, Arc<Record>, foldhash::fast::RandomState>,
}

impl Index {
    /// The record under `key`, if indexed.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Record>> {
        let k = IKey::of(key);
        if let Some(r) = self.cache.peek_with(&k, |_, v| Arc::clone(v)) {
            return Some(r);
        }
        let r = self.map.peek_with(&k, |_, v| Arc::clone(v))?;
        let _ = self.cache.insert_sync(k, Arc::clone(&r));
        Some(r)
    }

    /// The record under `key`, indexing a fresh absent one if needed; `true` if created.
    pub(crate) fn get_or_insert(&self, key: &[u8]) -> (Arc<Record>, bool) {
        if let Some(r) = self.get(key) {
            return (r, false);
        }
        let fresh = Arc::new(Record::absent());
        loop {
            match self.map.insert_sync(IKey::of(key), Arc::clone(&fresh)) {
                Ok(()) => {
                    let _ = self.cache.insert_sync(IKey::of(key), Arc::clone(&fresh));
                    return (fresh, true);
                }
                Err(_) => {
                    // Lost a race with another inserter: use theirs.
                    if let Some(r) = self.get(key) {
                        return (r, false);
                    }
                }
            }
        }
    }

    /// [`Index::get_or_insert`] for a key expected to be absent: tries the insert first.
    pub(crate) fn insert_or_get(&self, key: &[u8]) -> (Arc<Record>, bool) {
        let fresh = Arc::new(Record::absent());
        match self.map.insert_sync(IKey::of(key), Arc::clone(&fresh)) {
            Ok(()) => {
                let _ = self.cache.insert_sync(IKey::of(key), Arc::clone(&fresh));
                (fresh, true)
            }
            Err(_) => self.get_or_insert(key),
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
        let (lo, hi) = (lo.map(IKey::of), hi.map(IKey::of));
        let range = self.map.range::<IKey, _>((lo, hi), &guard);
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
            }
        }
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    #[test]
    fn scans_with_bounds_beyond_the_keys_return_the_right_rows() {
        let ix = Index::default();
        for k in [10u8, 20, 30] {
            ix.get_or_insert(&[k]);
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
                                if t % 2 == 0 {
                                    ix.insert_or_get(&key)
                                } else {
                                    ix.get_or_insert(&key)
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
}
