//! Versioned, ordered, concurrent record store for one shard replica.
//!
//! A [`Store`] holds named [`Table`]s. Every table has a stable numeric
//! [`TableId`] derived from its name, so every replica that creates the same
//! tables agrees on the ids that the commit log carries. A table is an ordered,
//! concurrent index from byte-string keys to [`Record`]s.
//!
//! A record carries a Silo-style *version word* (a lock bit and the timestamp
//! of its latest version) and a chain of [`Version`]s `(epoch, VT, value |
//! tombstone)`. The transaction layer (`mako-txn`) reads the word to build its
//! read set and locks it to install new versions; versions no reader can need
//! any more (at or below the store's reclaim bound, except the newest such one)
//! are trimmed on every install, so chains stay short under overwrite-heavy
//! load.
//!
//! ```
//! use mako_storage::{Stamp, Store};
//!
//! let store = Store::new();
//! let accounts = store.create_table("accounts").unwrap();
//! accounts.put(b"alice", b"10".as_slice().into(), Stamp::single(0, 1));
//! accounts.insert(b"bob", b"5".as_slice().into(), Stamp::single(0, 2)).unwrap();
//! assert!(accounts.insert(b"bob", b"7".as_slice().into(), Stamp::single(0, 3)).is_err());
//! accounts.delete(b"alice", Stamp::single(0, 4));
//! assert_eq!(accounts.get(b"alice"), None);
//! let rows = accounts.scan(.., 10);
//! assert_eq!(rows.len(), 1);
//! assert_eq!(&rows[0].0[..], b"bob");
//! ```
//!
//! The store itself never allocates timestamps: callers (transactions, log
//! replay, loaders) pass a [`Stamp`].

mod error;
mod index;
mod reclaim;
mod record;
mod store;
mod table;

pub use error::StorageError;
pub use reclaim::{Finality, Reclaim};
pub use record::{LOCK_BIT, ReadView, Record, Stamp, Version, Vt};
pub use store::{Store, TableId, table_id_for};
pub use table::{Key, Table};
