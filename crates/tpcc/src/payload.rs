//! Payload accounting: the key and value bytes that committed TPC-C transactions add to the database.
//!
//! Each transaction runs its writes through a [`Tally`], saying for each write whether it
//! inserts a fresh row, overwrites a row whose old value it read, or deletes a row it read;
//! the tally is handed out only by a successful [`Tally::commit`], so aborted attempts and
//! rolled-back transactions contribute nothing.

use std::ops::AddAssign;

use bytes::Bytes;
use mako_storage::Key;

use crate::backend::{KeyRange, Tbl, TxnOps};
use crate::txn::TxnError;

/// Key and value bytes written by committed transactions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Payload {
    /// Key + value bytes of inserted rows.
    pub inserted: u64,
    /// Key + value bytes (the value before the delete) of deleted rows.
    pub deleted: u64,
    /// Growth of updated rows' values: new length minus old length, summed (may be negative).
    pub updated_growth: i64,
}

impl Payload {
    /// Net bytes added: inserted + updated growth - deleted.
    pub fn net(&self) -> i64 {
        (self.inserted as i64)
            .saturating_add(self.updated_growth)
            .saturating_sub(self.deleted as i64)
    }
}

impl AddAssign for Payload {
    fn add_assign(&mut self, o: Payload) {
        self.inserted = self.inserted.saturating_add(o.inserted);
        self.deleted = self.deleted.saturating_add(o.deleted);
        self.updated_growth = self.updated_growth.saturating_add(o.updated_growth);
    }
}

/// One transaction attempt whose writes are tallied; the tally is returned by a successful commit only.
pub(crate) struct Tally<T> {
    tx: T,
    payload: Payload,
}

impl<T: TxnOps> Tally<T> {
    /// Tallies the writes of `tx`.
    pub(crate) fn new(tx: T) -> Self {
        Tally {
            tx,
            payload: Payload::default(),
        }
    }

    /// The value under `key` of table `t` of warehouse `w`'s shard.
    pub(crate) fn get(&mut self, w: u32, t: Tbl, key: &[u8]) -> Result<Option<Bytes>, TxnError> {
        self.tx.get(w, t, key)
    }

    /// Up to `limit` rows in `range`, ascending.
    pub(crate) fn scan(
        &mut self,
        w: u32,
        t: Tbl,
        range: KeyRange<'_>,
        limit: usize,
    ) -> Result<Vec<(Key, Bytes)>, TxnError> {
        self.tx.scan(w, t, range, limit)
    }

    /// Up to `limit` rows in `range`, descending.
    pub(crate) fn rscan(
        &mut self,
        w: u32,
        t: Tbl,
        range: KeyRange<'_>,
        limit: usize,
    ) -> Result<Vec<(Key, Bytes)>, TxnError> {
        self.tx.rscan(w, t, range, limit)
    }

    /// Writes a row under a key that holds none: key + value bytes inserted.
    pub(crate) fn insert(
        &mut self,
        w: u32,
        t: Tbl,
        key: &[u8],
        value: Bytes,
    ) -> Result<(), TxnError> {
        let bytes = (key.len() + value.len()) as u64;
        self.tx.put(w, t, key, value)?;
        self.payload.inserted += bytes;
        Ok(())
    }

    /// Overwrites a row whose current value (as this transaction read it) is `old_len` bytes.
    pub(crate) fn update(
        &mut self,
        w: u32,
        t: Tbl,
        key: &[u8],
        old_len: usize,
        value: Bytes,
    ) -> Result<(), TxnError> {
        let growth = value.len() as i64 - old_len as i64;
        self.tx.put(w, t, key, value)?;
        self.payload.updated_growth += growth;
        Ok(())
    }

    /// Deletes a row whose current value (as this transaction read it) is `old_len` bytes.
    pub(crate) fn delete(
        &mut self,
        w: u32,
        t: Tbl,
        key: &[u8],
        old_len: usize,
    ) -> Result<(), TxnError> {
        self.tx.delete(w, t, key)?;
        self.payload.deleted += (key.len() + old_len) as u64;
        Ok(())
    }

    /// Commits; the tally of the writes if the commit succeeded.
    pub(crate) fn commit(self) -> Result<Payload, TxnError> {
        self.tx.commit()?;
        Ok(self.payload)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mako_txn::{Abort, AbortReason};

    use super::*;

    /// A scripted transaction: writes go to a private map, published by a commit that may fail.
    struct Script<'m> {
        store: &'m mut BTreeMap<Vec<u8>, Bytes>,
        writes: Vec<(Vec<u8>, Option<Bytes>)>,
        fail_commit: bool,
    }

    impl TxnOps for Script<'_> {
        fn get(&mut self, _w: u32, _t: Tbl, key: &[u8]) -> Result<Option<Bytes>, TxnError> {
            Ok(self.store.get(key).cloned())
        }
        fn put(&mut self, _w: u32, _t: Tbl, key: &[u8], value: Bytes) -> Result<(), TxnError> {
            self.writes.push((key.to_vec(), Some(value)));
            Ok(())
        }
        fn delete(&mut self, _w: u32, _t: Tbl, key: &[u8]) -> Result<(), TxnError> {
            self.writes.push((key.to_vec(), None));
            Ok(())
        }
        fn scan(
            &mut self,
            _w: u32,
            _t: Tbl,
            _r: KeyRange<'_>,
            _l: usize,
        ) -> Result<Vec<(Key, Bytes)>, TxnError> {
            Ok(Vec::new())
        }
        fn rscan(
            &mut self,
            _w: u32,
            _t: Tbl,
            _r: KeyRange<'_>,
            _l: usize,
        ) -> Result<Vec<(Key, Bytes)>, TxnError> {
            Ok(Vec::new())
        }
        fn commit(self) -> Result<(), TxnError> {
            if self.fail_commit {
                return Err(TxnError::Abort(Abort::new(AbortReason::Conflict)));
            }
            for (k, v) in self.writes {
                match v {
                    Some(v) => self.store.insert(k, v),
                    None => self.store.remove(&k),
                };
            }
            Ok(())
        }
    }

    fn bytes_of(store: &BTreeMap<Vec<u8>, Bytes>) -> i64 {
        store.iter().map(|(k, v)| (k.len() + v.len()) as i64).sum()
    }

    /// Runs `f` as one tallied transaction over `store`.
    fn run(
        store: &mut BTreeMap<Vec<u8>, Bytes>,
        fail_commit: bool,
        f: impl FnOnce(&mut Tally<Script<'_>>) -> Result<(), TxnError>,
    ) -> Result<Payload, TxnError> {
        let mut t = Tally::new(Script {
            store,
            writes: Vec::new(),
            fail_commit,
        });
        f(&mut t)?;
        t.commit()
    }

    #[test]
    fn counts_inserted_deleted_and_updated_bytes_of_committed_writes() {
        let mut store = BTreeMap::new();
        store.insert(b"old".to_vec(), Bytes::from_static(b"0123456789"));
        store.insert(b"upd".to_vec(), Bytes::from_static(b"12345"));
        let before = bytes_of(&store);
        let p = run(&mut store, false, |t| {
            // Insert 4 + 6 bytes.
            t.insert(1, Tbl::History, b"hist", Bytes::from_static(b"abcdef"))?;
            // Grow a 5-byte value to 8 bytes.
            let old = t.get(1, Tbl::Customer, b"upd")?.unwrap().len();
            t.update(
                1,
                Tbl::Customer,
                b"upd",
                old,
                Bytes::from_static(b"12345678"),
            )?;
            // Delete 3 + 10 bytes.
            let old = t.get(1, Tbl::NewOrder, b"old")?.unwrap().len();
            t.delete(1, Tbl::NewOrder, b"old", old)
        })
        .unwrap();
        assert_eq!(
            p,
            Payload {
                inserted: 10,
                deleted: 13,
                updated_growth: 3,
            }
        );
        assert_eq!(p.net(), 0);
        assert_eq!(bytes_of(&store) - before, p.net());

        // Shrinking an update counts negative growth.
        let p = run(&mut store, false, |t| {
            t.update(1, Tbl::Customer, b"upd", 8, Bytes::from_static(b"1"))
        })
        .unwrap();
        assert_eq!(p.updated_growth, -7);
        assert_eq!(p.net(), -7);
    }

    #[test]
    fn an_aborted_commit_yields_no_tally() {
        let mut store = BTreeMap::new();
        let r = run(&mut store, true, |t| {
            t.insert(1, Tbl::History, b"hist", Bytes::from_static(b"abcdef"))
        });
        assert!(matches!(r, Err(TxnError::Abort(_))), "{r:?}");
        assert!(store.is_empty());
    }

    #[test]
    fn sums_add_up() {
        let mut a = Payload {
            inserted: 5,
            deleted: 2,
            updated_growth: -1,
        };
        a += Payload {
            inserted: 1,
            deleted: 1,
            updated_growth: 4,
        };
        assert_eq!(
            a,
            Payload {
                inserted: 6,
                deleted: 3,
                updated_growth: 3,
            }
        );
        assert_eq!(a.net(), 6);
    }
}
