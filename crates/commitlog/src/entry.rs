//! The in-memory shape of commit-log entries: batches of pieces, markers and heartbeats.

use std::fmt;

use bytes::Bytes;

/// Identifier of a table within a shard.
pub type TableId = u32;

/// What a single write does to its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WriteOp {
    /// Install this value as the key's new version.
    Put(Bytes),
    /// Remove the key (install a tombstone).
    Delete,
}

/// One key write inside a piece.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Write {
    /// Table the key belongs to.
    pub table: TableId,
    /// The key being written.
    pub key: Bytes,
    /// The operation applied to the key.
    pub op: WriteOp,
}

impl Write {
    /// Builds a `Put` write.
    pub fn put(table: TableId, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Write {
            table,
            key: key.into(),
            op: WriteOp::Put(value.into()),
        }
    }

    /// Builds a `Delete` write.
    pub fn delete(table: TableId, key: impl Into<Bytes>) -> Self {
        Write {
            table,
            key: key.into(),
            op: WriteOp::Delete,
        }
    }

    /// Borrows this write as a [`WriteRef`].
    pub fn as_write_ref(&self) -> WriteRef<'_> {
        WriteRef::from(self)
    }
}

/// The writes one transaction made on this shard, stamped with its vector timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Piece {
    /// Vector timestamp: one `u64` per shard.
    pub vt: Vec<u64>,
    /// The writes, in the order they are to be applied.
    pub writes: Vec<Write>,
}

/// A group of pieces replicated as one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Batch {
    /// Epoch the batch was produced in.
    pub epoch: u32,
    /// Stream (worker) the batch belongs to.
    pub stream: u32,
    /// Position of this entry among its stream's entries of the epoch (from 0, no gaps).
    pub seq: u64,
    /// The pieces, in stream order.
    pub pieces: Vec<Piece>,
}

/// One replication-log entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Entry {
    /// A batch of transaction pieces.
    Batch(Batch),
    /// Epoch boundary / watermark-sync marker.
    NoOp {
        /// The epoch being closed or synchronised.
        epoch: u32,
    },
    /// Start of the measured phase after loading.
    Advancer,
    /// A stream has finished and no longer holds the watermark back.
    Ending {
        /// The stream that ended.
        stream: u32,
    },
    /// Keeps an idle stream's watermark component advancing.
    Heartbeat {
        /// Epoch of the stream.
        epoch: u32,
        /// The stream the heartbeat speaks for.
        stream: u32,
        /// Position among the stream's entries of the epoch (shared with its batches).
        seq: u64,
        /// The stream's new watermark value.
        w: u64,
    },
}

impl Entry {
    /// The kind of this entry, without its payload.
    pub fn kind(&self) -> EntryKind {
        match self {
            Entry::Batch(_) => EntryKind::Batch,
            Entry::NoOp { .. } => EntryKind::NoOp,
            Entry::Advancer => EntryKind::Advancer,
            Entry::Ending { .. } => EntryKind::Ending,
            Entry::Heartbeat { .. } => EntryKind::Heartbeat,
        }
    }
}

impl From<Batch> for Entry {
    fn from(batch: Batch) -> Self {
        Entry::Batch(batch)
    }
}

/// The kind of an [`Entry`], as a small copyable tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    /// [`Entry::Batch`].
    Batch,
    /// [`Entry::NoOp`].
    NoOp,
    /// [`Entry::Advancer`].
    Advancer,
    /// [`Entry::Ending`].
    Ending,
    /// [`Entry::Heartbeat`].
    Heartbeat,
}

impl EntryKind {
    /// Every kind, in tag order.
    pub const ALL: [EntryKind; 5] = [
        EntryKind::Batch,
        EntryKind::NoOp,
        EntryKind::Advancer,
        EntryKind::Ending,
        EntryKind::Heartbeat,
    ];

    /// The kind's tag byte on the wire.
    pub const fn tag(self) -> u8 {
        match self {
            EntryKind::Batch => 1,
            EntryKind::NoOp => 2,
            EntryKind::Advancer => 3,
            EntryKind::Ending => 4,
            EntryKind::Heartbeat => 5,
        }
    }

    /// The kind with this wire tag, if any.
    pub const fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(EntryKind::Batch),
            2 => Some(EntryKind::NoOp),
            3 => Some(EntryKind::Advancer),
            4 => Some(EntryKind::Ending),
            5 => Some(EntryKind::Heartbeat),
            _ => None,
        }
    }

    /// A short lowercase name, for logs.
    pub const fn name(self) -> &'static str {
        match self {
            EntryKind::Batch => "batch",
            EntryKind::NoOp => "noop",
            EntryKind::Advancer => "advancer",
            EntryKind::Ending => "ending",
            EntryKind::Heartbeat => "heartbeat",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A borrowed write used when building batches without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriteRef<'a> {
    /// Table the key belongs to.
    pub table: TableId,
    /// The key being written.
    pub key: &'a [u8],
    /// The value to put, or `None` for a delete.
    pub value: Option<&'a [u8]>,
}

impl<'a> From<&'a Write> for WriteRef<'a> {
    fn from(w: &'a Write) -> Self {
        WriteRef {
            table: w.table,
            key: &w.key,
            value: match &w.op {
                WriteOp::Put(v) => Some(v),
                WriteOp::Delete => None,
            },
        }
    }
}
