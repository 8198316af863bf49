//! Serializable optimistic transactions on one shard, after Silo.
//!
//! A [`Shard`] wraps a [`mako_storage::Store`] with the shard's Lamport clock
//! `c_s`, its failure epoch and a [`CommitSink`] that receives the write set of
//! every committed transaction (the replication log, or [`NoopSink`]).
//!
//! [`Shard::begin`] starts a [`Transaction`]. Reads (`get`, `scan`, `rscan`)
//! record the version word of each record they see, absent keys, and the range
//! each scan covered; writes (`put`, `insert`, `delete`) are buffered and visible
//! to the transaction's own later reads. [`Transaction::commit`] then
//!
//! 1. locks the write set in global `(table id, key)` order: a lock held by
//!    someone else for longer than [`LOCK_PATIENCE`] aborts with
//!    [`AbortReason::Conflict`] (multi-shard commits use [`Transaction::lock`],
//!    which never waits);
//! 2. validates: every read version is unchanged and unlocked, every absent key
//!    is still absent, and every scanned range still holds exactly the records
//!    it held (no phantoms);
//! 3. hands the piece to the sink, which allocates `c_s = max(c_s, deps) + 1`
//!    (`deps`: the newest timestamp read or overwritten) and logs the piece in
//!    one step, so each stream's log is in timestamp order;
//! 4. installs the new versions stamped `(epoch, VT)`, unlocking them.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use mako_storage::Store;
//! use mako_txn::Shard;
//!
//! let shard = Shard::single(Arc::new(Store::new()));
//! let t = shard.store().create_table("kv").unwrap();
//! let mut tx = shard.begin();
//! tx.put(&t, b"k", Bytes::from_static(b"v1"));
//! assert_eq!(tx.get(&t, b"k").as_deref(), Some(&b"v1"[..])); // read-your-own-writes
//! let info = tx.commit().unwrap();
//! assert_eq!(info.vt[0], 1);
//! assert_eq!(t.get(b"k").as_deref(), Some(&b"v1"[..]));
//! ```
//!
//! [`replay`] applies a replicated `Batch` of the commit log to a store, the
//! follower side of the same data.

mod error;
mod replay;
mod shard;
mod sink;
mod txn;

pub use error::{Abort, AbortReason, OpError};
pub use replay::{ReplayError, ReplayStats, replay};
pub use shard::Shard;
pub use sink::{CommitSink, NoopSink, PieceWrites};
pub use txn::{CommitInfo, LOCK_PATIENCE, Locked, Prepared, Transaction, merge};
