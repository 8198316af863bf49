//! A loaded TPC-C database: its shards, their tables, the warehouse → shard map and shared run state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use mako_storage::Store;
use mako_txn::Shard;

use crate::config::{DISTRICTS, Scale, ShardMap, TpccConfig, TpccError};
use crate::loader::{DirectSink, LoadProgress, populate};
use crate::random::NuRandC;
use crate::schema::Tables;

/// A TPC-C database spread over one or more in-process shards.
///
/// Built by [`Db::load`]. Transactions reach a warehouse's
/// data through [`Db::shard_for`], which consults the [`ShardMap`].
pub struct Db {
    map: ShardMap,
    scale: Scale,
    shards: Vec<Shard>,
    tables: Vec<Tables>,
    c_load: NuRandC,
    /// Per district: every order below this id has been delivered (a scan start for Delivery).
    delivery_hints: Vec<AtomicU32>,
    /// The next terminal id handed out (history keys are unique per terminal).
    next_origin: AtomicU32,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("map", &self.map)
            .field("scale", &self.scale)
            .field("shards", &self.shards)
            .finish()
    }
}

impl Db {
    /// Creates `cfg.shards` stores, populates them on `cfg.threads` threads, and reports progress.
    ///
    /// Shard `s` gets the warehouses [`ShardMap::warehouses_of`]`(s)` and a full
    /// copy of `item`. Every row is written with stamp `(epoch 0, ts 1)` and each
    /// shard's clock is moved past it. `progress` is called from this thread a
    /// few times a second.
    pub fn load(cfg: &TpccConfig, progress: impl FnMut(LoadProgress)) -> Result<Db, TpccError> {
        cfg.validate()?;
        let map = ShardMap::new(cfg.warehouses, cfg.shards)?;
        let mut shards = Vec::with_capacity(map.shards());
        let mut tables = Vec::with_capacity(map.shards());
        for s in 0..map.shards() {
            let store = Arc::new(Store::new());
            tables.push(Tables::create(&store)?);
            shards.push(Shard::new(
                s,
                map.shards(),
                store,
                Arc::new(mako_txn::NoopSink),
            ));
        }
        let c_load = populate(cfg, &map, |_| DirectSink::new(&tables), progress)?;
        for shard in &shards {
            shard.observe(1);
        }
        let first = cfg.scale.first_new_order();
        let delivery_hints = (0..cfg.warehouses as usize * usize::from(DISTRICTS))
            .map(|_| AtomicU32::new(first))
            .collect();
        Ok(Db {
            map,
            scale: cfg.scale,
            shards,
            tables,
            c_load,
            delivery_hints,
            next_origin: AtomicU32::new(1),
        })
    }

    /// The warehouse → shard map.
    pub fn shard_map(&self) -> &ShardMap {
        &self.map
    }

    /// The population sizes it was loaded with.
    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// Number of warehouses.
    pub fn warehouses(&self) -> u32 {
        self.map.warehouses()
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Shard `s`, if it exists.
    pub fn shard(&self, s: usize) -> Option<&Shard> {
        self.shards.get(s)
    }

    /// The tables of shard `s`, if it exists.
    pub fn tables(&self, s: usize) -> Option<&Tables> {
        self.tables.get(s)
    }

    /// The shard holding warehouse `w` and its tables.
    pub fn shard_for(&self, w: u32) -> (&Shard, &Tables) {
        let s = self.map.shard_of(w);
        (&self.shards[s], &self.tables[s])
    }

    /// The NURand constants the loader used (the run's last-name `C` derives from them).
    pub fn nurand_load(&self) -> NuRandC {
        self.c_load
    }

    /// A fresh terminal id (history-key origin), unique within this database.
    pub fn next_origin(&self) -> u32 {
        self.next_origin.fetch_add(1, Ordering::Relaxed)
    }

    /// The Delivery scan-start hint of district `(w, d)`.
    pub(crate) fn delivery_hint(&self, w: u32, d: u8) -> Option<&AtomicU32> {
        let i = (w as usize).checked_sub(1)? * usize::from(DISTRICTS)
            + usize::from(d).checked_sub(1)?;
        self.delivery_hints.get(i)
    }
}
