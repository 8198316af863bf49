//! TPC-C on mako-rs: schema, parallel loader, the five transactions, benchmark driver, consistency checks.
//!
//! A run goes through three steps.
//!
//! **Load.** [`Db::load`] takes a [`TpccConfig`] (warehouses, threads, the
//! [`Scale`] of the population, seed, ...) and builds one in-process
//! [`mako_txn::Shard`] per shard of the [`ShardMap`] (warehouses are spread
//! over shards in contiguous ranges; today one shard holds them all). It
//! creates the nine TPC-C tables plus two indexes (customers by last name,
//! orders by customer) in each store, whose key and value layouts are
//! documented in [`schema`], and populates them by the spec's rules (clause
//! 4.3.3.1) on up to `threads` threads, one job per warehouse, with `item`
//! copied to every shard.
//!
//! **Run.** [`run`] loads, then starts `threads` workers for `duration`. Worker
//! `i` is a [`Terminal`] with home warehouse `i % W + 1`; it draws a
//! transaction type from the [`Mix`] (45/43/4/4/4) and its inputs (NURand
//! customers and items, 1% remote order lines, 15% remote-customer payments,
//! 60% customer selection by last name, 1% NewOrder rollbacks), and runs it
//! with [`TxnInput::execute`] — one of [`new_order`], [`payment`],
//! [`order_status`], [`delivery`], [`stock_level`], each a serializable OCC
//! transaction — retrying aborts with the same inputs. The [`TpccReport`]
//! (serde-serializable) has committed transactions per second, tpmC, and per
//! type commits, aborts, rollbacks and latency percentiles.
//!
//! **Check.** [`check_consistency`] verifies TPC-C consistency conditions 1–4
//! over one quiescent store, so it can run on every replica.
//!
//! The five transactions are generic over a [`Backend`] handing out
//! [`TxnOps`] contexts addressed by (warehouse, [`Tbl`], key): [`Db`] runs them
//! as one-shard OCC transactions, and [`run_cluster`] runs them on a replicated
//! in-process cluster (`S` shards × `R` Raft replicas, `mako-server`), where a
//! transaction touching a remote shard's warehouse is a speculative 2PC
//! transaction, and then checks every replica.
//!
//! **Against a deployment.** The [`procedures`](mod@procedures) are what a `mako server`
//! registers ([`procedures()`], `tpcc.load`, `tpcc.txn`, `tpcc.check`; the config needs the tables of
//! `config/tpcc.yml`), and [`run_remote`] drives a running deployment from this process over
//! TCP: it loads through `tpcc.load` in batches, runs one client per terminal with one
//! `tpcc.txn` call per transaction (to the home warehouse's shard leader), and reports
//! released throughput and client-observed release latency ([`RemoteTpccReport`]).
//!
//! ```
//! use std::time::Duration;
//! use mako_tpcc::{Db, Scale, TpccConfig, check_consistency, run_on};
//!
//! let cfg = TpccConfig {
//!     warehouses: 1,
//!     scale: Scale { items: 200, customers_per_district: 10, orders_per_district: 10 },
//!     duration: Duration::from_millis(100),
//!     ..TpccConfig::default()
//! };
//! let db = Db::load(&cfg, |_| {}).unwrap();
//! let report = run_on(&db, &cfg, |_| {}).unwrap();
//! assert!(report.committed > 0);
//! let store = db.shard(0).unwrap().store();
//! check_consistency(store, 1..=1).unwrap();
//! ```

#![warn(missing_docs)]

mod backend;
mod cluster;
mod config;
mod consistency;
mod db;
mod driver;
mod endurance;
mod loader;
mod mem;
mod payload;
pub mod procedures;
pub mod random;
mod remote;
pub mod schema;
mod series;
mod terminal;
mod txn;

pub use backend::{Backend, KeyRange, LocalTxn, Tbl, TxnOps};
pub use cluster::{ClusterTpccError, ClusterTpccReport, ReleaseStats, ReplicaCheck, run_cluster};
pub use config::{DEFAULT_WINDOW, DISTRICTS, Mix, Scale, ShardMap, TpccConfig, TpccError};
pub use consistency::{ConsistencyReport, Violation, check_consistency};
pub use db::Db;
pub use driver::{TpccProgress, TpccReport, TxnStats, run, run_on};
pub use endurance::{Endurance, TARGET_DRIFT, WINDOW, Window};
pub use loader::{INITIAL_D_YTD, INITIAL_W_YTD, LoadProgress};
pub use mem::{MemoryFigures, TARGET_RATIO, rss_bytes};
pub use payload::Payload;
pub use procedures::procedures;
pub use remote::{
    LOAD_BATCH, LOAD_BATCH_BYTES, RemoteCheck, RemoteOptions, RemoteTpccError, RemoteTpccReport,
    RemoteTxnStats, run_remote,
};
pub use series::{BUCKET, Bucket, Quantile};
pub use terminal::Terminal;
pub use txn::{
    CustomerSel, DataError, DeliveryInput, DeliveryOutput, LastOrder, NewOrderInput,
    NewOrderOutput, OrderLineInput, OrderLineStatus, OrderStatusInput, OrderStatusOutput,
    PaymentInput, PaymentOutput, StockLevelInput, StockLevelOutput, TxnError, TxnInput, TxnKind,
    delivery, new_order, order_status, payment, stock_level,
};
