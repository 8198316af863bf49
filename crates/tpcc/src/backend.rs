//! Where the five transactions run: a [`Backend`] hands out [`TxnOps`] contexts addressed by
//! (warehouse, table, key); [`Db`] is the in-process one-shard backend, the replicated cluster another.

use std::ops::Bound;
use std::sync::atomic::AtomicU32;

use bytes::Bytes;
use mako_storage::{Key, Table};
use mako_txn::Transaction;

use crate::db::Db;
use crate::schema::{TABLE_NAMES, Tables};
use crate::txn::TxnError;

/// One of the schema's tables; its discriminant is its position in [`TABLE_NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tbl {
    /// `warehouse`.
    Warehouse = 0,
    /// `district`.
    District = 1,
    /// `customer`.
    Customer = 2,
    /// `customer_name_idx`.
    CustomerNameIdx = 3,
    /// `history`.
    History = 4,
    /// `new_order`.
    NewOrder = 5,
    /// `oorder`.
    Oorder = 6,
    /// `oorder_c_id_idx`.
    OorderCIdIdx = 7,
    /// `order_line`.
    OrderLine = 8,
    /// `item`.
    Item = 9,
    /// `stock`.
    Stock = 10,
}

impl Tbl {
    /// Position in [`TABLE_NAMES`] (and in a cluster site's configured tables).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The table's name.
    pub fn name(self) -> &'static str {
        TABLE_NAMES[self.index()]
    }
}

impl Tables {
    /// The table `t`.
    pub fn get(&self, t: Tbl) -> &Table {
        match t {
            Tbl::Warehouse => &self.warehouse,
            Tbl::District => &self.district,
            Tbl::Customer => &self.customer,
            Tbl::CustomerNameIdx => &self.customer_name_idx,
            Tbl::History => &self.history,
            Tbl::NewOrder => &self.new_order,
            Tbl::Oorder => &self.oorder,
            Tbl::OorderCIdIdx => &self.oorder_c_id_idx,
            Tbl::OrderLine => &self.order_line,
            Tbl::Item => &self.item,
            Tbl::Stock => &self.stock,
        }
    }
}

/// A key range: (lower bound, upper bound).
pub type KeyRange<'k> = (Bound<&'k [u8]>, Bound<&'k [u8]>);

/// One attempt of a transaction: reads and writes addressed by the warehouse whose data they touch.
///
/// `w` picks the shard (through the [`ShardMap`](crate::ShardMap)); `item`, which
/// every shard holds, is read with the home warehouse.
pub trait TxnOps {
    /// The value under `key` of table `t` of warehouse `w`'s shard.
    fn get(&mut self, w: u32, t: Tbl, key: &[u8]) -> Result<Option<Bytes>, TxnError>;
    /// Writes `value` under `key`.
    fn put(&mut self, w: u32, t: Tbl, key: &[u8], value: Bytes) -> Result<(), TxnError>;
    /// Deletes `key`.
    fn delete(&mut self, w: u32, t: Tbl, key: &[u8]) -> Result<(), TxnError>;
    /// Up to `limit` rows in `range`, ascending.
    fn scan(
        &mut self,
        w: u32,
        t: Tbl,
        range: KeyRange<'_>,
        limit: usize,
    ) -> Result<Vec<(Key, Bytes)>, TxnError>;
    /// Up to `limit` rows in `range`, descending.
    fn rscan(
        &mut self,
        w: u32,
        t: Tbl,
        range: KeyRange<'_>,
        limit: usize,
    ) -> Result<Vec<(Key, Bytes)>, TxnError>;
    /// Commits (speculatively on a replicated backend); an OCC conflict is [`TxnError::Abort`].
    fn commit(self) -> Result<(), TxnError>;
}

/// A TPC-C database as one terminal sees it: metadata plus transactions.
pub trait Backend {
    /// A transaction context.
    type Txn<'a>: TxnOps
    where
        Self: 'a;
    /// Number of warehouses.
    fn warehouses(&self) -> u32;
    /// Whether a transaction of home warehouse `home` may touch warehouse `other`.
    fn reachable(&self, home: u32, other: u32) -> Result<(), TxnError>;
    /// The Delivery scan-start hint of district `(w, d)`.
    fn delivery_hint(&self, w: u32, d: u8) -> Option<&AtomicU32>;
    /// Starts a transaction whose home warehouse is `home`.
    fn begin(&self, home: u32) -> Self::Txn<'_>;
}

impl<B: Backend + ?Sized> Backend for &B {
    type Txn<'a>
        = B::Txn<'a>
    where
        Self: 'a;
    fn warehouses(&self) -> u32 {
        (**self).warehouses()
    }
    fn reachable(&self, home: u32, other: u32) -> Result<(), TxnError> {
        (**self).reachable(home, other)
    }
    fn delivery_hint(&self, w: u32, d: u8) -> Option<&AtomicU32> {
        (**self).delivery_hint(w, d)
    }
    fn begin(&self, home: u32) -> Self::Txn<'_> {
        (**self).begin(home)
    }
}

/// A transaction on the home warehouse's shard of a [`Db`] (every warehouse it touches is there).
pub struct LocalTxn<'s> {
    tx: Transaction<'s>,
    t: &'s Tables,
}

impl TxnOps for LocalTxn<'_> {
    #[inline]
    fn get(&mut self, _w: u32, t: Tbl, key: &[u8]) -> Result<Option<Bytes>, TxnError> {
        Ok(self.tx.get(self.t.get(t), key))
    }
    #[inline]
    fn put(&mut self, _w: u32, t: Tbl, key: &[u8], value: Bytes) -> Result<(), TxnError> {
        self.tx.put(self.t.get(t), key, value);
        Ok(())
    }
    #[inline]
    fn delete(&mut self, _w: u32, t: Tbl, key: &[u8]) -> Result<(), TxnError> {
        self.tx.delete(self.t.get(t), key);
        Ok(())
    }
    #[inline]
    fn scan(
        &mut self,
        _w: u32,
        t: Tbl,
        range: KeyRange<'_>,
        limit: usize,
    ) -> Result<Vec<(Key, Bytes)>, TxnError> {
        Ok(self.tx.scan(self.t.get(t), range, limit))
    }
    #[inline]
    fn rscan(
        &mut self,
        _w: u32,
        t: Tbl,
        range: KeyRange<'_>,
        limit: usize,
    ) -> Result<Vec<(Key, Bytes)>, TxnError> {
        Ok(self.tx.rscan(self.t.get(t), range, limit))
    }
    #[inline]
    fn commit(self) -> Result<(), TxnError> {
        self.tx.commit()?;
        Ok(())
    }
}

impl Backend for Db {
    type Txn<'a> = LocalTxn<'a>;

    fn warehouses(&self) -> u32 {
        self.shard_map().warehouses()
    }

    fn reachable(&self, home: u32, other: u32) -> Result<(), TxnError> {
        let map = self.shard_map();
        if map.shard_of(home) == map.shard_of(other) {
            Ok(())
        } else {
            Err(TxnError::CrossShard { home, other })
        }
    }

    fn delivery_hint(&self, w: u32, d: u8) -> Option<&AtomicU32> {
        Db::delivery_hint(self, w, d)
    }

    fn begin(&self, home: u32) -> LocalTxn<'_> {
        let (shard, t) = self.shard_for(home);
        LocalTxn {
            tx: shard.begin(),
            t,
        }
    }
}
