//! TPC-C as server-side procedures of a deployment: loading batches, the five transactions
//! (one request each, run by the shared transaction code over [`DistTxn`]) and the consistency
//! check, registered by name with [`procedures`].
//!
//! Placement: warehouses are spread over the shards by the [`ShardMap`] of the call's
//! `(warehouses, shards)` (contiguous ranges) and every shard holds `item`, whatever the
//! `partition` of the tables in the deployment's config says; the procedures address shards
//! explicitly. The tables are found by name among the site's configured tables (the config
//! lists them in sorted order, next to `kv`), so the config must declare the eleven TPC-C
//! tables (`config/tpcc.yml`).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mako_node::{ProcError, Procedure, in_txn};
use mako_server::{CommitError, DistTxn, Site};
use mako_txn::{Abort, AbortReason};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::cluster::{DistOps, Finish};
use crate::config::{DISTRICTS, ShardMap};
use crate::consistency::{ConsistencyReport, check_consistency};
use crate::schema::TABLE_NAMES;
use crate::txn::{TxnError, TxnInput};

/// Name of the loading procedure: writes a [`LoadArgs`] batch into the called shard.
pub const LOAD: &str = "tpcc.load";
/// Name of the transaction procedure: runs one [`TxnArgs`] and answers a [`TxnReply`].
pub const TXN: &str = "tpcc.txn";
/// Name of the check procedure: consistency conditions 1–4 on the called site, [`CheckReply`].
pub const CHECK: &str = "tpcc.check";

/// Times a transaction that met data breaking the schema is run again on the server before
/// the call fails (under OCC such a read can be transient: another commit half installed).
const DATA_RETRIES: u32 = 3;
/// Warehouses whose Delivery hints one process keeps (a bound on memory, not on correctness).
const MAX_HINTED_WAREHOUSES: usize = 1 << 20;

/// One row of a load batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadRow {
    /// The table, as its position in [`TABLE_NAMES`] ([`crate::backend::Tbl::index`]).
    pub table: u8,
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
}

/// Arguments of [`LOAD`]: rows written into the called shard in one transaction (idempotent:
/// the same batch may be sent again after an unknown outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadArgs {
    /// The rows.
    pub rows: Vec<LoadRow>,
}

/// Arguments of [`TXN`]: the placement and one terminal's generated input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnArgs {
    /// Warehouses `W` of the database.
    pub warehouses: u32,
    /// Shards the warehouses are spread over (`1..=min(W, deployment shards)`).
    pub shards: u32,
    /// The transaction.
    pub input: TxnInput,
}

/// Result of [`TXN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnReply {
    /// Committed and released.
    Committed {
        /// Whether it touched more than one shard.
        distributed: bool,
    },
    /// NewOrder's spec-mandated rollback (unused item id): nothing written.
    RolledBack,
}

/// Arguments of [`CHECK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckArgs {
    /// Warehouses `W`.
    pub warehouses: u32,
    /// Shards the warehouses are spread over.
    pub shards: u32,
}

/// Result of [`CHECK`] on one site: what was checked, or the violations found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckReply {
    /// Conditions 1–4 hold on the site's warehouses.
    Consistent(ConsistencyReport),
    /// The violations, described.
    Violations(Vec<String>),
}

/// The TPC-C procedures by name, to put into `NodeOptions::procedures` before starting a node.
pub fn procedures() -> Vec<(String, Arc<dyn Procedure>)> {
    vec![
        (LOAD.to_owned(), Arc::new(LoadProc) as Arc<dyn Procedure>),
        (TXN.to_owned(), Arc::new(TxnProc::default())),
        (CHECK.to_owned(), Arc::new(CheckProc)),
    ]
}

/// Decodes a procedure's arguments (a malformed request is an invalid call, nothing done).
fn decode<'a, T: Deserialize<'a>>(what: &str, args: &'a [u8]) -> Result<T, ProcError> {
    postcard::from_bytes(args).map_err(|e| ProcError::Invalid(format!("{what} arguments: {e}")))
}

/// Encodes a result.
fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ProcError> {
    postcard::to_stdvec(v).map_err(|e| ProcError::Invalid(format!("encoding the result: {e}")))
}

/// Each TPC-C table's index among the site's configured tables, by [`Tbl::index`].
fn table_indexes(site: &Site) -> Result<[usize; TABLE_NAMES.len()], ProcError> {
    let mut names = Vec::new();
    while let Some(t) = site.table(names.len()) {
        names.push(t.name().to_owned());
    }
    let mut out = [0; TABLE_NAMES.len()];
    for (slot, want) in out.iter_mut().zip(TABLE_NAMES) {
        *slot = names.iter().position(|n| n == want).ok_or_else(|| {
            ProcError::Invalid(format!(
                "table `{want}` is not in the deployment's config (add config/tpcc.yml)"
            ))
        })?;
    }
    Ok(out)
}

/// The placement of a call's `(warehouses, shards)`.
fn shard_map(warehouses: u32, shards: u32) -> Result<ShardMap, ProcError> {
    ShardMap::new(warehouses, shards as usize)
        .map_err(|e| ProcError::Invalid(format!("placement: {e}")))
}

/// [`LOAD`]: writes a batch into the called shard in one transaction.
struct LoadProc;

impl Procedure for LoadProc {
    fn call(&self, site: &Site, worker: u32, args: &[u8]) -> Result<Vec<u8>, ProcError> {
        let args: LoadArgs = decode(LOAD, args)?;
        let idx = table_indexes(site)?;
        let shard = site.shard_id();
        in_txn(site, worker, |tx| {
            for r in args.rows {
                let &t = idx.get(usize::from(r.table)).ok_or_else(|| {
                    ProcError::Invalid(format!("no TPC-C table number {}", r.table))
                })?;
                tx.put(shard, t, &r.key, Bytes::from(r.value))?;
            }
            Ok(())
        })?;
        Ok(Vec::new())
    }
}

/// [`CHECK`]: consistency conditions 1–4 over the called site's store and warehouses.
struct CheckProc;

impl Procedure for CheckProc {
    fn call(&self, site: &Site, _worker: u32, args: &[u8]) -> Result<Vec<u8>, ProcError> {
        let args: CheckArgs = decode(CHECK, args)?;
        let map = shard_map(args.warehouses, args.shards)?;
        let shard = site.shard_id() as usize;
        if shard >= map.shards() {
            return encode(&CheckReply::Violations(vec![format!(
                "shard {shard} holds no warehouse of {} over {} shard(s)",
                args.warehouses, args.shards
            )]));
        }
        let reply = match check_consistency(site.store(), map.warehouses_of(shard)) {
            Ok(r) => CheckReply::Consistent(r),
            Err(v) => CheckReply::Violations(v.iter().map(ToString::to_string).collect()),
        };
        encode(&reply)
    }
}

/// Per warehouse, the ten districts' Delivery scan-start hints (orders below are delivered).
type Hints = Arc<[AtomicU32; DISTRICTS as usize]>;

/// [`TXN`]: one TPC-C transaction, run by the shared transaction code over [`DistTxn`].
#[derive(Default)]
struct TxnProc {
    /// Delivery hints of the warehouses whose Deliveries this process coordinated. They only
    /// advance after a Delivery is released, and start at 0 (always true), so a new leader
    /// or a restarted process is merely slower on its first Delivery of a district.
    hints: Mutex<HashMap<u32, Hints>>,
}

impl TxnProc {
    /// The hints of warehouse `w` (none if the table of hints is full).
    fn hints(&self, w: u32) -> Option<Hints> {
        let mut h = self.hints.lock().ok()?;
        if let Some(x) = h.get(&w) {
            return Some(Arc::clone(x));
        }
        if h.len() >= MAX_HINTED_WAREHOUSES {
            return None;
        }
        let x: Hints = Arc::new(std::array::from_fn(|_| AtomicU32::new(0)));
        h.insert(w, Arc::clone(&x));
        Some(x)
    }
}

impl Procedure for TxnProc {
    fn call(&self, site: &Site, worker: u32, args: &[u8]) -> Result<Vec<u8>, ProcError> {
        let args: TxnArgs = decode(TXN, args)?;
        let map = shard_map(args.warehouses, args.shards)?;
        let idx = table_indexes(site)?;
        let home = match &args.input {
            TxnInput::NewOrder(i) => i.w,
            TxnInput::Payment(i) => i.w,
            TxnInput::OrderStatus(i) => i.w,
            TxnInput::Delivery(i) => i.w,
            TxnInput::StockLevel(i) => i.w,
        };
        let backend = ProcBackend {
            site,
            worker,
            map,
            idx,
            home,
            hints: self.hints(home),
            outcome: Cell::new(None),
        };
        let mut data_errors = 0;
        loop {
            let r = args.input.execute(&backend);
            let distributed = match backend.outcome.take() {
                Some(Err(e)) => return Err(e),
                Some(Ok(d)) => d,
                None => false,
            };
            return match r {
                Ok(()) => encode(&TxnReply::Committed { distributed }),
                Err(TxnError::Rollback) => encode(&TxnReply::RolledBack),
                Err(TxnError::Abort(a)) => Err(ProcError::Aborted(a.reason)),
                Err(TxnError::Data(e)) => {
                    data_errors += 1;
                    if data_errors < DATA_RETRIES {
                        continue;
                    }
                    tracing::warn!(error = %e, "tpcc.txn: data error");
                    Err(ProcError::Invalid(format!("data error: {e}")))
                }
                Err(e @ (TxnError::InvalidInput(_) | TxnError::CrossShard { .. })) => {
                    Err(ProcError::Invalid(e.to_string()))
                }
            };
        }
    }
}

/// The backend of one call: transactions coordinated on the called site by its worker.
struct ProcBackend<'s> {
    site: &'s Site,
    worker: u32,
    map: ShardMap,
    idx: [usize; TABLE_NAMES.len()],
    home: u32,
    hints: Option<Hints>,
    /// What the last commit left that a [`TxnError`] cannot say: `Ok(distributed)` after a
    /// release, or `Err` for an unknown outcome (or a worker out of range).
    outcome: Cell<Option<Result<bool, ProcError>>>,
}

/// A procedure's commit: waits for release, so a Delivery advances its hints only once
/// durable; what a [`TxnError`] cannot say (distributed, or an unknown outcome) goes to
/// the backend's `outcome`.
struct Release<'a>(&'a Cell<Option<Result<bool, ProcError>>>);

impl Finish for Release<'_> {
    fn finish(self, tx: DistTxn<'_>) -> Result<(), TxnError> {
        let distributed = tx.is_distributed();
        match tx.commit() {
            Ok(_) => {
                self.0.set(Some(Ok(distributed)));
                Ok(())
            }
            Err(CommitError::Aborted(r)) => Err(TxnError::Abort(Abort::new(r))),
            Err(e @ CommitError::Unknown { .. }) => {
                self.0.set(Some(Err(ProcError::from(e))));
                // Stops the transaction function; the call answers from `outcome`.
                Err(TxnError::Abort(Abort::new(AbortReason::Timeout)))
            }
        }
    }
}

/// One attempt on a [`ProcBackend`].
type ProcTxn<'a> = DistOps<'a, Release<'a>>;

impl Backend for ProcBackend<'_> {
    type Txn<'a>
        = ProcTxn<'a>
    where
        Self: 'a;

    fn warehouses(&self) -> u32 {
        self.map.warehouses()
    }

    fn reachable(&self, _home: u32, _other: u32) -> Result<(), TxnError> {
        Ok(())
    }

    fn delivery_hint(&self, w: u32, d: u8) -> Option<&AtomicU32> {
        if w != self.home {
            return None;
        }
        self.hints.as_ref()?.get(usize::from(d).checked_sub(1)?)
    }

    fn begin(&self, _home: u32) -> ProcTxn<'_> {
        DistOps {
            tx: self.site.begin(self.worker).ok(),
            map: &self.map,
            idx: &self.idx,
            finish: Release(&self.outcome),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mako_server::{Cluster, ClusterConfig, SiteConfig};

    use super::*;
    use crate::backend::Tbl;
    use crate::config::{Scale, TpccConfig, TpccError};
    use crate::loader::{LoadSink, populate};
    use crate::terminal::Terminal;
    use crate::txn::TxnKind;

    /// A replicated in-process cluster whose sites list the tables as a deployment's config
    /// does: sorted by name, next to `kv` (not in TPC-C's own order).
    fn cluster(shards: u32, tables: &[&str]) -> Cluster {
        let mut tables: Vec<String> = tables.iter().map(|&t| t.to_owned()).collect();
        tables.push("kv".into());
        tables.sort();
        Cluster::start(ClusterConfig {
            replicas: 3,
            site: SiteConfig {
                shards,
                tables,
                timeout: Duration::from_secs(10),
                ..SiteConfig::default()
            },
            ..ClusterConfig::default()
        })
        .unwrap()
    }

    /// Loads through [`LoadProc`] called directly on the shard leaders.
    struct ProcSink<'c> {
        cluster: &'c Cluster,
        rows: Vec<Vec<LoadRow>>,
    }

    impl ProcSink<'_> {
        fn send(&mut self, shard: usize) {
            let rows = std::mem::take(&mut self.rows[shard]);
            let args = postcard::to_stdvec(&LoadArgs { rows }).unwrap();
            LoadProc
                .call(self.cluster.leader(shard as u32), 0, &args)
                .unwrap();
        }
    }

    impl LoadSink for ProcSink<'_> {
        fn put(&mut self, shard: usize, t: Tbl, key: &[u8], value: Bytes) {
            self.rows[shard].push(LoadRow {
                table: t.index() as u8,
                key: key.to_vec(),
                value: value.to_vec(),
            });
            if self.rows[shard].len() >= 500 {
                self.send(shard);
            }
        }
        fn finish(&mut self) -> Result<(), TpccError> {
            for s in 0..self.rows.len() {
                self.send(s);
            }
            Ok(())
        }
    }

    #[test]
    fn the_procedures_load_run_every_type_and_keep_conditions_1_to_4_on_two_shards() {
        let c = cluster(2, &TABLE_NAMES);
        let cfg = TpccConfig {
            warehouses: 2,
            threads: 1,
            shards: 2,
            scale: Scale {
                items: 200,
                customers_per_district: 20,
                orders_per_district: 20,
            },
            remote_item_pct: 30.0,
            ..TpccConfig::default()
        };
        let map = ShardMap::new(2, 2).unwrap();
        let c_load = populate(
            &cfg,
            &map,
            |_| ProcSink {
                cluster: &c,
                rows: vec![Vec::new(), Vec::new()],
            },
            |_| {},
        )
        .unwrap();
        let txn = TxnProc::default();
        let mut done = [0u32; 5];
        let (mut distributed, mut new_orders) = (0, 0);
        for i in 0..2 {
            let mut term = Terminal::build(2, cfg.scale, c_load, 10 + i as u32, &cfg, i);
            let site = c.leader(map.shard_of(term.home()) as u32);
            for _ in 0..60 {
                let kind = term.next_kind();
                let args = TxnArgs {
                    warehouses: 2,
                    shards: 2,
                    input: term.next_input(kind),
                };
                let bytes = postcard::to_stdvec(&args).unwrap();
                // Sequential calls: no conflicts, so every call completes.
                let reply: TxnReply =
                    postcard::from_bytes(&txn.call(site, 0, &bytes).unwrap()).unwrap();
                if let TxnReply::Committed { distributed: d } = reply {
                    distributed += u32::from(d);
                    new_orders += u64::from(kind == TxnKind::NewOrder);
                }
                done[kind.index()] += 1;
            }
        }
        assert!(done.iter().all(|&n| n > 0), "every type ran: {done:?}");
        assert!(distributed > 0, "some transactions spanned both shards");
        let args = postcard::to_stdvec(&CheckArgs {
            warehouses: 2,
            shards: 2,
        })
        .unwrap();
        let mut orders = 0;
        for s in 0..2 {
            let reply: CheckReply =
                postcard::from_bytes(&CheckProc.call(c.leader(s), 0, &args).unwrap()).unwrap();
            match reply {
                CheckReply::Consistent(r) => orders += r.orders,
                CheckReply::Violations(v) => panic!("shard {s}: {v:?}"),
            }
        }
        // The loaded orders plus one per committed NewOrder, each on its warehouse's shard.
        assert_eq!(orders, 2 * 10 * 20 + new_orders);
        c.shutdown();
    }

    #[test]
    fn malformed_arguments_and_missing_tables_are_invalid_calls() {
        let c = cluster(1, &TABLE_NAMES);
        let site = c.leader(0);
        for p in procedures() {
            assert!(
                matches!(
                    p.1.call(site, 0, b"\xff\xff\xff\xff"),
                    Err(ProcError::Invalid(_))
                ),
                "{}",
                p.0
            );
        }
        // A text longer than its field does not decode (it would be cut silently otherwise).
        let long = postcard::to_stdvec(&vec![b'x'; 17]).unwrap();
        assert!(postcard::from_bytes::<crate::schema::Text<16>>(&long).is_err());
        c.shutdown();

        let c = cluster(1, &["warehouse"]);
        let args = postcard::to_stdvec(&LoadArgs { rows: Vec::new() }).unwrap();
        match LoadProc.call(c.leader(0), 0, &args) {
            Err(ProcError::Invalid(m)) => assert!(m.contains("district"), "{m}"),
            other => panic!("{other:?}"),
        }
        c.shutdown();
    }
}
