//! The ordered concurrent index behind every table (one place to swap it).

use std::ops::Bound;
use std::sync::Arc;

use scc::{Guard, TreeIndex};

use crate::record::Record;
use crate::table::Key;

/// Ordered map from keys to records; records are never removed while the table lives.
///
/// `scc::TreeIndex` (a B+ tree with lock-free reads) won the index benchmark
/// (`cargo bench -p mako-storage --bench index`) against a skip list, masstree,
/// ferntree and a locked `BTreeMap`.
#[derive(Default)]
pub(crate) struct Index {
    map: TreeIndex<Key, Arc<Record>>,
}

impl Index {
    /// The record under `key`, if indexed.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Record>> {
        self.map.peek_with(key, |_, v| Arc::clone(v))
    }

    /// The record under `key`, indexing a fresh absent one if needed; `true` if created.
    pub(crate) fn get_or_insert(&self, key: &[u8]) -> (Arc<Record>, bool) {
        if let Some(r) = self.get(key) {
            return (r, false);
        }
        let fresh = Arc::new(Record::absent());
        loop {
            match self
                .map
                .insert_sync(Key::from_slice(key), Arc::clone(&fresh))
            {
                Ok(()) => return (fresh, true),
                Err(_) => {
                    // Lost a race with another inserter: use theirs.
                    if let Some(r) = self.get(key) {
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
            let last = self.map.iter(&guard).next_back().map(|(k, _)| &k[..]);
            match (hi, last) {
                (Bound::Included(h) | Bound::Excluded(h), Some(l)) if h > l => {
                    (lo, Bound::Unbounded)
                }
                _ => (lo, hi),
            }
        } else {
            let first = self.map.iter(&guard).next().map(|(k, _)| &k[..]);
            match (lo, first) {
                (Bound::Included(b) | Bound::Excluded(b), Some(f)) if b < f => {
                    (Bound::Unbounded, hi)
                }
                _ => (lo, hi),
            }
        };
        let range = self.map.range::<[u8], _>((lo, hi), &guard);
        if reverse {
            for (k, v) in range.rev() {
                if !f(k, v) {
                    break;
                }
            }
        } else {
            for (k, v) in range {
                if !f(k, v) {
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
