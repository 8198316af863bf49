//! The commit-log sink: where committed write sets go (the replication log, or nowhere).

use bytes::Bytes;
use mako_commitlog::WriteRef;
use mako_storage::Table;

/// One write of a committed transaction, as handed to a sink.
pub(crate) struct LoggedWrite<'a> {
    pub(crate) table: &'a Table,
    pub(crate) key: &'a [u8],
    pub(crate) value: Option<&'a Bytes>,
}

/// The piece of a committed transaction that this shard must log.
pub struct CommittedPiece<'a> {
    /// The transaction's epoch.
    pub epoch: u32,
    /// The transaction's vector timestamp.
    pub vt: &'a [u64],
    pub(crate) writes: &'a [LoggedWrite<'a>],
}

impl CommittedPiece<'_> {
    /// The writes, in global key order.
    pub fn writes(&self) -> impl ExactSizeIterator<Item = WriteRef<'_>> + '_ {
        self.writes.iter().map(|w| WriteRef {
            table: w.table.id(),
            key: w.key,
            value: w.value.map(|v| &v[..]),
        })
    }
}

/// Receives the write set of every committed writing transaction of a shard.
///
/// Called by the committing thread after its versions are installed; keep it short.
pub trait CommitSink: Send + Sync {
    /// Accepts one committed piece.
    fn append(&self, piece: &CommittedPiece<'_>);
}

/// A sink that drops everything (no replication).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopSink;

impl CommitSink for NoopSink {
    fn append(&self, _piece: &CommittedPiece<'_>) {}
}
