//! Errors of the storage layer.

use crate::store::TableId;

/// An error returned by a storage operation.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum StorageError {
    /// `insert` found a visible value under the key.
    #[error("key already exists")]
    KeyExists,
    /// Two different table names hash to the same stable id.
    #[error("table `{name}` collides with table `{existing}` on id {id}")]
    TableIdCollision {
        /// Name being created.
        name: String,
        /// Name already holding the id.
        existing: String,
        /// The colliding id.
        id: TableId,
    },
    /// No table with this id exists on this replica.
    #[error("unknown table id {0}")]
    UnknownTable(TableId),
}
