//! The commit-log sink: where committed write sets go (the replication log, or nowhere).

use bytes::Bytes;
use mako_commitlog::WriteRef;
use mako_storage::{Table, Vt};

use crate::error::AbortReason;

/// One write of a committed transaction, as handed to a sink.
pub(crate) struct LoggedWrite<'a> {
    pub(crate) table: &'a Table,
    pub(crate) key: &'a [u8],
    pub(crate) value: Option<&'a Bytes>,
}

/// The writes of one committed piece, in global key order.
pub struct PieceWrites<'a> {
    pub(crate) writes: &'a [LoggedWrite<'a>],
}

impl PieceWrites<'_> {
    /// The writes as commit-log write references.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = WriteRef<'_>> + '_ {
        self.writes.iter().map(|w| WriteRef {
            table: w.table.id(),
            key: w.key,
            value: w.value.map(|v| &v[..]),
        })
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// Receives the write set of every committed writing transaction of a shard.
///
/// `append` is called after validation. It must call `stamp` exactly once, which
/// allocates the piece's vector timestamp and installs the piece's versions, and
/// log the piece in the same step, so that within one `stream` pieces reach the
/// log in timestamp order (DESIGN.md section 4, realization (b)) and no piece
/// reaches the log before its versions are in the store; or refuse without
/// calling `stamp`, and the transaction aborts with nothing visible.
pub trait CommitSink: Send + Sync {
    /// Waits while the sink is behind (back-pressure), before a writing transaction takes its
    /// first lock: a commit held back here keeps no other transaction waiting. The default
    /// never waits.
    fn pace(&self) {}

    /// Checks, before the piece is stamped, that `stream` can log it (`vt_len` components);
    /// an `Err` aborts the transaction with nothing visible. The default admits everything.
    fn admit(
        &self,
        _stream: u32,
        _vt_len: usize,
        _writes: &PieceWrites<'_>,
    ) -> Result<(), AbortReason> {
        Ok(())
    }

    /// Allocates the piece's timestamp and installs it through `stamp`, logs the piece on
    /// `stream`, returns the timestamp; or refuses (without calling `stamp`) if the piece
    /// cannot be logged in `epoch`.
    fn append(
        &self,
        stream: u32,
        epoch: u32,
        stamp: &mut dyn FnMut() -> Vt,
        writes: &PieceWrites<'_>,
    ) -> Result<Vt, AbortReason>;
}

/// A sink that drops everything (no replication).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopSink;

impl CommitSink for NoopSink {
    fn append(
        &self,
        _stream: u32,
        _epoch: u32,
        stamp: &mut dyn FnMut() -> Vt,
        _writes: &PieceWrites<'_>,
    ) -> Result<Vt, AbortReason> {
        Ok(stamp())
    }
}
