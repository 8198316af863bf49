//! The error type of the log store.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong opening or writing the log.
#[derive(thiserror::Error, Debug)]
pub enum LogError {
    /// An operating-system I/O error.
    #[error("log store I/O error: {0}")]
    Io(#[from] io::Error),
    /// A segment holds a record whose checksum is valid but whose contents make no sense, or
    /// segments are missing from the middle of the sequence.
    #[error("corrupt log segment {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the offending record inside the file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A `*.wal` file in the log directory is not a segment of this format (foreign file,
    /// damaged header, unsupported format version, name that is not a sequence number).
    #[error("bad log segment {path}: {reason}")]
    BadSegment {
        /// The offending file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The configuration is unusable.
    #[error("invalid log store config: {0}")]
    Config(String),
    /// The write is malformed (e.g. entry indexes not contiguous).
    #[error("invalid log write: {0}")]
    InvalidWrite(String),
    /// One write does not fit into a single segment.
    #[error("log write of {size} bytes does not fit into a segment ({max} bytes available)")]
    TooLarge {
        /// Encoded size of the write.
        size: u64,
        /// Room in an empty segment.
        max: u64,
    },
    /// The write would give the log more groups than a segment's checkpoint can describe
    /// (see [`LogStore::max_groups`](crate::LogStore::max_groups)).
    #[error("log write would make {groups} groups; at most {max} fit the segment size")]
    TooManyGroups {
        /// Groups the log would know after the write.
        groups: usize,
        /// The limit.
        max: usize,
    },
    /// An earlier I/O error stopped the store; nothing is written any more (fail-stop).
    #[error("log store stopped after an earlier error: {0}")]
    Failed(String),
    /// The store was shut down.
    #[error("log store is shut down")]
    Closed,
    /// The write was lost in a simulated power loss ([`LogStore::crash`](crate::LogStore::crash)).
    #[error("log store crashed before the write was durable")]
    Crashed,
    /// `write_sync` was called from a `done` callback, where it would wait for itself.
    #[error("write_sync called on the log writer thread (would deadlock)")]
    Reentrant,
}

impl LogError {
    /// A copy of this error for handing to several callbacks (I/O errors keep kind and text).
    pub(crate) fn duplicate(&self) -> LogError {
        match self {
            LogError::Io(e) => LogError::Io(io::Error::new(e.kind(), e.to_string())),
            LogError::Corrupt {
                path,
                offset,
                reason,
            } => LogError::Corrupt {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            LogError::BadSegment { path, reason } => LogError::BadSegment {
                path: path.clone(),
                reason: reason.clone(),
            },
            LogError::Config(s) => LogError::Config(s.clone()),
            LogError::InvalidWrite(s) => LogError::InvalidWrite(s.clone()),
            LogError::TooLarge { size, max } => LogError::TooLarge {
                size: *size,
                max: *max,
            },
            LogError::TooManyGroups { groups, max } => LogError::TooManyGroups {
                groups: *groups,
                max: *max,
            },
            LogError::Failed(s) => LogError::Failed(s.clone()),
            LogError::Closed => LogError::Closed,
            LogError::Crashed => LogError::Crashed,
            LogError::Reentrant => LogError::Reentrant,
        }
    }
}
