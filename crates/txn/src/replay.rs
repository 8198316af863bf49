//! Replay: applying a replicated `Batch` to a store, idempotently and last-writer-wins.

use bytes::Bytes;
use mako_commitlog::{Batch, WriteOp};
use mako_storage::{Stamp, Store, TableId, Vt};

/// Why a batch could not be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// A write names a table this replica does not have.
    #[error("batch writes to unknown table id {0}")]
    UnknownTable(TableId),
    /// A piece's vector timestamp has no component for this shard.
    #[error("piece VT has {len} components, shard {shard} needs more")]
    ShortVt {
        /// Components present.
        len: usize,
        /// This replica's shard id.
        shard: usize,
    },
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    /// Writes that installed a version not seen before.
    pub applied: usize,
    /// Writes already present (a duplicate delivery).
    pub duplicates: usize,
    /// Largest `VT[shard]` in the batch (0 if empty).
    pub max_ts: u64,
}

/// Applies every write of `batch` to `store` (this replica holds shard `shard`).
///
/// Each write becomes a version stamped `(batch.epoch, VT[shard])`; a record keeps
/// the greatest stamp as its newest version, so replaying batches twice or in any
/// order converges to the same store. The whole batch is checked before anything
/// is applied, so an error leaves the store untouched.
pub fn replay(batch: &Batch, store: &Store, shard: usize) -> Result<ReplayStats, ReplayError> {
    let mut tables = Vec::new();
    for piece in &batch.pieces {
        if piece.vt.len() <= shard {
            return Err(ReplayError::ShortVt {
                len: piece.vt.len(),
                shard,
            });
        }
        for w in &piece.writes {
            if !tables.iter().any(|(id, _)| *id == w.table) {
                let t = store
                    .table_by_id(w.table)
                    .ok_or(ReplayError::UnknownTable(w.table))?;
                tables.push((w.table, t));
            }
        }
    }
    let mut stats = ReplayStats::default();
    for piece in &batch.pieces {
        let ts = piece.vt[shard];
        stats.max_ts = stats.max_ts.max(ts);
        let stamp = Stamp {
            epoch: batch.epoch,
            ts,
            vt: Vt::from_slice(&piece.vt),
        };
        for w in &piece.writes {
            let Some((_, table)) = tables.iter().find(|(id, _)| *id == w.table) else {
                return Err(ReplayError::UnknownTable(w.table));
            };
            let value = match &w.op {
                // A compact copy: the decoded value is a slice of the log entry, itself
                // possibly a slice of a whole network message, which a long-lived value
                // would otherwise keep in memory.
                WriteOp::Put(v) => Some(Bytes::copy_from_slice(v)),
                WriteOp::Delete => None,
            };
            if table.apply(&w.key, stamp.clone(), value) {
                stats.applied += 1;
            } else {
                stats.duplicates += 1;
            }
        }
    }
    Ok(stats)
}
