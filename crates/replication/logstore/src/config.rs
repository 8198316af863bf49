//! Configuration: directory, durability mode and segment sizing.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// How far a write must get before its `done` callback fires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Written and `fdatasync`ed: survives power loss.
    #[default]
    Fsync,
    /// Written to the page cache, not synced: survives a process crash; an OS crash may lose recent writes (not necessarily a suffix).
    Buffered,
    /// Not written anywhere: no files, recovery always returns nothing.
    Memory,
}

impl Durability {
    /// The lower-case name used by [`FromStr`] and [`Display`](fmt::Display).
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Buffered => "buffered",
            Durability::Memory => "memory",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of parsing a [`Durability`] from a string.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("unknown durability {0:?} (expected fsync, buffered or memory)")]
pub struct ParseDurabilityError(pub String);

impl FromStr for Durability {
    type Err = ParseDurabilityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fsync" => Ok(Durability::Fsync),
            "buffered" => Ok(Durability::Buffered),
            "memory" => Ok(Durability::Memory),
            _ => Err(ParseDurabilityError(s.to_owned())),
        }
    }
}

/// Smallest accepted `segment_bytes`.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// Settings of one [`LogStore`](crate::LogStore).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStoreConfig {
    /// Directory holding the segment files (created if missing; unused in `Memory` mode).
    pub dir: PathBuf,
    /// Durability mode; default `Fsync`.
    pub durability: Durability,
    /// Size of every segment file; default 64 MiB.
    pub segment_bytes: u64,
    /// How many pre-zeroed spare segments to keep ready; default 2.
    pub preallocated_segments: usize,
    /// Cap on the bytes gathered into one group-commit write; default 4 MiB.
    pub max_batch_bytes: usize,
    /// Most writes waiting for the writer thread; default 4096. A full queue makes
    /// [`LogStore::write`](crate::LogStore::write) wait and
    /// [`LogStore::try_write`](crate::LogStore::try_write) return `Busy`.
    pub max_queued_writes: usize,
    /// Most encoded bytes waiting for the writer thread; default 64 MiB (one write larger
    /// than this is still accepted when nothing else is queued).
    pub max_queued_bytes: usize,
}

impl LogStoreConfig {
    /// Default settings for a log in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogStoreConfig {
            dir: dir.into(),
            ..Default::default()
        }
    }

    /// Checks the settings for values the store cannot work with.
    pub(crate) fn validate(&self) -> Result<(), crate::LogError> {
        if self.max_queued_writes == 0 || self.max_queued_bytes == 0 {
            return Err(crate::LogError::Config(
                "max_queued_writes and max_queued_bytes must be > 0".into(),
            ));
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(crate::LogError::Config(format!(
                "segment_bytes {} is below the minimum {MIN_SEGMENT_BYTES}",
                self.segment_bytes
            )));
        }
        if self.segment_bytes > u64::from(u32::MAX) * 4 {
            return Err(crate::LogError::Config(format!(
                "segment_bytes {} is too large",
                self.segment_bytes
            )));
        }
        if self.max_batch_bytes == 0 {
            return Err(crate::LogError::Config(
                "max_batch_bytes must be > 0".into(),
            ));
        }
        // Memory mode writes no files, but refuses the same oversized writes as the others.
        if self.durability == Durability::Memory {
            return Ok(());
        }
        if self.dir.as_os_str().is_empty() {
            return Err(crate::LogError::Config("dir is empty".into()));
        }
        Ok(())
    }
}

impl Default for LogStoreConfig {
    fn default() -> Self {
        LogStoreConfig {
            dir: PathBuf::new(),
            durability: Durability::Fsync,
            segment_bytes: 64 << 20,
            preallocated_segments: 2,
            max_batch_bytes: 4 << 20,
            max_queued_writes: 4096,
            max_queued_bytes: 64 << 20,
        }
    }
}
