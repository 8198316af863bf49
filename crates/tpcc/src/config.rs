//! Benchmark parameters: scale, transaction mix, remote percentages, the warehouse → shard map, errors.

use std::ops::RangeInclusive;
use std::time::Duration;

use mako_logstore::Durability;

use crate::txn::{DataError, TxnError};

/// Districts per warehouse (fixed by the spec).
pub const DISTRICTS: u8 = 10;

/// Population sizes; [`Scale::SPEC`] is the spec's, smaller ones make fast tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Scale {
    /// Rows of `item` (spec: 100,000); also the stock rows per warehouse.
    pub items: u32,
    /// Customers per district (spec: 3,000).
    pub customers_per_district: u32,
    /// Orders loaded per district (spec: 3,000); the last 30% are undelivered and in `new_order`.
    pub orders_per_district: u32,
}

impl Scale {
    /// The spec's population: 100,000 items, 3,000 customers and 3,000 orders per district.
    pub const SPEC: Scale = Scale {
        items: 100_000,
        customers_per_district: 3_000,
        orders_per_district: 3_000,
    };

    /// The first undelivered order id: orders `first_new_order()..=orders` are in `new_order`
    /// (2,101 at spec scale, i.e. the last 900 of 3,000).
    pub fn first_new_order(&self) -> u32 {
        self.orders_per_district * 7 / 10 + 1
    }

    /// Orders per district loaded as undelivered (900 at spec scale).
    pub fn new_orders_per_district(&self) -> u32 {
        self.orders_per_district - self.orders_per_district * 7 / 10
    }

    /// The largest last-name number drawn: 999, or fewer if a district has fewer customers.
    pub fn max_last_name(&self) -> u32 {
        self.customers_per_district.clamp(1, 1000) - 1
    }

    /// Checks that the population can be loaded.
    pub fn validate(&self) -> Result<(), TpccError> {
        let bad = |name, reason| Err(TpccError::Invalid { name, reason });
        if self.items == 0 || self.items == u32::MAX {
            return bad("items", "must be in 1..u32::MAX");
        }
        if self.customers_per_district == 0 {
            return bad("customers_per_district", "must be at least 1");
        }
        if self.orders_per_district == 0 || self.orders_per_district > u32::MAX / 2 {
            return bad("orders_per_district", "must be in 1..=2^31");
        }
        Ok(())
    }
}

impl Default for Scale {
    fn default() -> Self {
        Scale::SPEC
    }
}

/// Transaction mix as relative weights (the spec's and Mako's 45/43/4/4/4 by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Mix {
    /// Weight of NewOrder.
    pub new_order: u32,
    /// Weight of Payment.
    pub payment: u32,
    /// Weight of OrderStatus.
    pub order_status: u32,
    /// Weight of Delivery.
    pub delivery: u32,
    /// Weight of StockLevel.
    pub stock_level: u32,
}

impl Mix {
    /// The standard mix: 45% NewOrder, 43% Payment, 4% each of the others.
    pub const STANDARD: Mix = Mix {
        new_order: 45,
        payment: 43,
        order_status: 4,
        delivery: 4,
        stock_level: 4,
    };

    /// The weights in [`TxnKind::ALL`](crate::TxnKind::ALL) order.
    pub fn weights(&self) -> [u32; 5] {
        [
            self.new_order,
            self.payment,
            self.order_status,
            self.delivery,
            self.stock_level,
        ]
    }
}

impl Default for Mix {
    fn default() -> Self {
        Mix::STANDARD
    }
}

/// Parameters of one TPC-C run (loading and measuring).
#[derive(Debug, Clone)]
pub struct TpccConfig {
    /// Number of warehouses `W`.
    pub warehouses: u32,
    /// Worker threads (terminals); worker `i` has home warehouse `i % W + 1`. Also the loader's threads.
    pub threads: usize,
    /// Length of the measured phase.
    pub duration: Duration,
    /// Population sizes.
    pub scale: Scale,
    /// Transaction mix.
    pub mix: Mix,
    /// Percent of NewOrder lines supplied by a remote warehouse (spec and Mako: 1).
    pub remote_item_pct: f64,
    /// Percent of Payments for a customer of a remote warehouse (spec and Mako: 15).
    pub remote_payment_pct: f64,
    /// Percent of Payments and OrderStatus selecting the customer by last name (spec: 60).
    pub by_last_name_pct: f64,
    /// Percent of NewOrders with an invalid item that roll back (spec: 1).
    pub rollback_pct: f64,
    /// Shards the warehouses are spread over (contiguous ranges); `run` needs 1, [`run_cluster`](crate::run_cluster) takes any.
    pub shards: usize,
    /// Seed of the loader's and the workers' random generators.
    pub seed: u64,
    /// Durability of every replica's log in a [`run_cluster`](crate::run_cluster) run (single-node
    /// runs keep no log).
    pub durability: Durability,
    /// In a [`run_cluster`](crate::run_cluster) run: unreleased commits a worker keeps before
    /// it waits for the oldest, as a client with a bounded window does (0: no bound).
    pub window: usize,
}

/// A cluster worker's default window of unreleased commits ([`TpccConfig::window`]).
///
/// Unbounded, a worker commits as fast as its thread runs and release latency is whatever
/// the scheduler makes of a saturated machine (`mako bench --workload tpcc --shards 1
/// --replicas 3`, 2 cores, `fsync`: 11–12k txn/s at p99 10 ms unbounded, 11k at 7.4 ms with
/// 64, 8.4k at 5.6 ms with 32).
pub const DEFAULT_WINDOW: usize = 64;

impl Default for TpccConfig {
    fn default() -> Self {
        TpccConfig {
            warehouses: 1,
            threads: 1,
            duration: Duration::from_secs(10),
            scale: Scale::SPEC,
            mix: Mix::STANDARD,
            remote_item_pct: 1.0,
            remote_payment_pct: 15.0,
            by_last_name_pct: 60.0,
            rollback_pct: 1.0,
            shards: 1,
            seed: 42,
            durability: Durability::Memory,
            window: DEFAULT_WINDOW,
        }
    }
}

impl TpccConfig {
    /// Checks that the parameters can be loaded (not necessarily run: see [`TpccConfig::validate_run`]).
    pub fn validate(&self) -> Result<(), TpccError> {
        let bad = |name, reason| Err(TpccError::Invalid { name, reason });
        if self.warehouses == 0 || self.warehouses > u32::MAX / 2 {
            return bad("warehouses", "must be in 1..=2^31");
        }
        if self.threads == 0 {
            return bad("threads", "must be at least 1");
        }
        if self.shards == 0 || self.shards as u64 > u64::from(self.warehouses) {
            return bad("shards", "must be in 1..=warehouses");
        }
        for (name, pct) in [
            ("remote_item_pct", self.remote_item_pct),
            ("remote_payment_pct", self.remote_payment_pct),
            ("by_last_name_pct", self.by_last_name_pct),
            ("rollback_pct", self.rollback_pct),
        ] {
            if !(0.0..=100.0).contains(&pct) {
                return bad(name, "must be a percentage in 0..=100");
            }
        }
        if self
            .mix
            .weights()
            .iter()
            .map(|&w| u64::from(w))
            .sum::<u64>()
            == 0
        {
            return bad("mix", "needs a positive weight");
        }
        if self
            .mix
            .weights()
            .iter()
            .map(|&w| u64::from(w))
            .sum::<u64>()
            > u64::from(u32::MAX)
        {
            return bad("mix", "weights must add up to less than 2^32");
        }
        self.scale.validate()
    }

    /// Checks that the parameters can also be run by [`run`](crate::run).
    pub fn validate_run(&self) -> Result<(), TpccError> {
        self.validate()?;
        if self.duration.is_zero() {
            return Err(TpccError::Invalid {
                name: "duration",
                reason: "must be positive",
            });
        }
        if self.shards != 1 {
            return Err(TpccError::Invalid {
                name: "shards",
                reason: "multi-shard transactions are not implemented yet; use 1",
            });
        }
        Ok(())
    }
}

/// Which shard holds which warehouses: `S` contiguous ranges of `1..=W`, as even as possible.
///
/// Shard `s` holds warehouses `s*W/S + 1 ..= (s+1)*W/S`. Every shard also holds
/// a full copy of `item`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMap {
    warehouses: u32,
    shards: u32,
}

impl ShardMap {
    /// `warehouses` warehouses over `shards` shards (`1 <= shards <= warehouses`).
    pub fn new(warehouses: u32, shards: usize) -> Result<Self, TpccError> {
        match u32::try_from(shards) {
            Ok(s) if s >= 1 && s <= warehouses => Ok(ShardMap {
                warehouses,
                shards: s,
            }),
            _ => Err(TpccError::Invalid {
                name: "shards",
                reason: "must be in 1..=warehouses",
            }),
        }
    }

    /// Every warehouse on one shard.
    pub fn single(warehouses: u32) -> Self {
        ShardMap {
            warehouses: warehouses.max(1),
            shards: 1,
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards as usize
    }

    /// Number of warehouses.
    pub fn warehouses(&self) -> u32 {
        self.warehouses
    }

    /// The shard holding warehouse `w` (in `1..=W`).
    pub fn shard_of(&self, w: u32) -> usize {
        // Largest s with s*W/S <= w-1, i.e. s = ceil(w*S/W) - 1.
        let (w, s, n) = (
            u64::from(w.clamp(1, self.warehouses)),
            u64::from(self.shards),
            u64::from(self.warehouses),
        );
        ((w * s - 1) / n) as usize
    }

    /// The warehouses of shard `shard`.
    pub fn warehouses_of(&self, shard: usize) -> RangeInclusive<u32> {
        let (s, n) = (shard as u64, u64::from(self.warehouses));
        let k = u64::from(self.shards);
        let lo = s * n / k + 1;
        let hi = (s + 1) * n / k;
        lo as u32..=hi as u32
    }
}

/// Why a TPC-C load or run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum TpccError {
    /// A parameter is out of range.
    #[error("invalid TPC-C parameter `{name}`: {reason}")]
    Invalid {
        /// Parameter name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The store refused to create a table.
    #[error("setting up the TPC-C tables: {0}")]
    Storage(#[from] mako_storage::StorageError),
    /// A store lacks one of the schema's tables.
    #[error("table `{0}` is missing")]
    MissingTable(&'static str),
    /// A transaction found data that breaks the schema (persistently, not a transient OCC race).
    #[error("{0}")]
    Data(#[from] DataError),
    /// A transaction failed for another reason than a conflict (unusable inputs).
    #[error("{0}")]
    Transaction(TxnError),
    /// A worker thread panicked.
    #[error("a benchmark worker panicked")]
    WorkerPanicked,
    /// The replicated cluster failed (start, load or release).
    #[error(transparent)]
    Cluster(Box<crate::cluster::ClusterTpccError>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_map_ranges_are_contiguous_and_agree_with_shard_of() {
        for w in 1..=13u32 {
            for s in 1..=w as usize {
                let map = ShardMap::new(w, s).unwrap();
                let mut next = 1;
                for shard in 0..s {
                    let r = map.warehouses_of(shard);
                    assert_eq!(*r.start(), next, "W={w} S={s} shard={shard}");
                    assert!(!r.is_empty());
                    for x in r.clone() {
                        assert_eq!(map.shard_of(x), shard);
                    }
                    next = r.end() + 1;
                }
                assert_eq!(next, w + 1);
            }
        }
        assert!(ShardMap::new(2, 3).is_err());
        assert!(ShardMap::new(2, 0).is_err());
    }

    #[test]
    fn new_orders_are_the_last_thirty_percent() {
        assert_eq!(Scale::SPEC.first_new_order(), 2101);
        assert_eq!(Scale::SPEC.new_orders_per_district(), 900);
        let small = Scale {
            items: 1000,
            customers_per_district: 30,
            orders_per_district: 30,
        };
        assert_eq!(small.first_new_order(), 22);
        assert_eq!(small.new_orders_per_district(), 9);
        assert_eq!(small.max_last_name(), 29);
        assert_eq!(Scale::SPEC.max_last_name(), 999);
    }
}
