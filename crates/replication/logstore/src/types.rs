//! The data types callers hand in and get back: entries, hard state, writes, recovered state.

use std::collections::BTreeMap;

use bytes::Bytes;

/// One log entry of one group: opaque payload with its Raft index and term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Raft log index.
    pub index: u64,
    /// Raft term the entry was proposed in.
    pub term: u64,
    /// Opaque payload.
    pub payload: Bytes,
}

impl LogEntry {
    /// Builds an entry.
    pub fn new(index: u64, term: u64, payload: impl Into<Bytes>) -> Self {
        LogEntry {
            index,
            term,
            payload: payload.into(),
        }
    }
}

/// Raft's hard state of one group.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Hash)]
pub struct HardState {
    /// Current term.
    pub term: u64,
    /// Node voted for in `term` (0 = none).
    pub vote: u64,
    /// Commit index.
    pub commit: u64,
}

/// Marks that a group's state up to `index` came from a snapshot.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// Last index covered by the snapshot.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
}

/// One group's change, applied atomically with the rest of its `write` call.
///
/// Applied in this order: `snapshot`, `entries`, `hard_state`, `snapshot_point`, `compact_to`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupWrite {
    /// Replication group (shard) id.
    pub group: u32,
    /// Contiguous entries; writing index `i` discards the group's entries `>= i` (Raft
    /// overwrite), unless `keep_later` is set.
    pub entries: Vec<LogEntry>,
    /// The entries replace only the group's entries at their own indexes; later entries
    /// stay (a Multi-Paxos acceptor overwriting some slots keeps every later accepted one).
    /// Each write of a job split over several writes stays safe on its own.
    pub keep_later: bool,
    /// New hard state, replacing the previous one.
    pub hard_state: Option<HardState>,
    /// Installs a snapshot: the group's existing entries are all dropped (the snapshot
    /// replaces the log, as Raft's InstallSnapshot does when the log does not match), first
    /// index becomes `index + 1`; `entries` of the same write are applied after it.
    pub snapshot: Option<SnapshotMeta>,
    /// A snapshot taken locally up to `index` became durable elsewhere (the caller's
    /// snapshot file): entries up to `index` are no longer needed, later ones stay.
    /// Applied after `hard_state`, before `compact_to`.
    pub snapshot_point: Option<SnapshotMeta>,
    /// Entries `< compact_to` are no longer needed (log compaction).
    pub compact_to: Option<u64>,
}

impl GroupWrite {
    /// An empty change of `group`.
    pub fn new(group: u32) -> Self {
        GroupWrite {
            group,
            ..Default::default()
        }
    }

    /// Whether this change writes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.snapshot_point.is_none()
            && self.compact_to.is_none()
    }

    /// Bytes this change takes in the log (compare the sum over one `write` call with
    /// [`LogStore::max_write_bytes`](crate::LogStore::max_write_bytes)).
    pub fn encoded_len(&self) -> usize {
        use crate::format::{
            COMPACT_RECORD_LEN, HARD_STATE_RECORD_LEN, SNAPSHOT_RECORD_LEN, entries_record_len,
        };
        entries_record_len(&self.entries)
            + self.hard_state.map_or(0, |_| HARD_STATE_RECORD_LEN)
            + self.snapshot.map_or(0, |_| SNAPSHOT_RECORD_LEN)
            + self.snapshot_point.map_or(0, |_| SNAPSHOT_RECORD_LEN)
            + self.compact_to.map_or(0, |_| COMPACT_RECORD_LEN)
    }
}

/// The recovered durable state of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupState {
    /// Last durable hard state (default if none was written).
    pub hard_state: HardState,
    /// Last snapshot point (installed from a leader or taken locally), if any.
    pub snapshot: Option<SnapshotMeta>,
    /// Lowest index still needed: max of every `compact_to` and snapshot `index + 1` (0 = none).
    pub first_index: u64,
    /// Ascending, contiguous entries at or after `first_index`.
    pub entries: Vec<LogEntry>,
}

/// Everything recovery found, per group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Every group that has ever written a record still relevant, by group id.
    pub groups: BTreeMap<u32, GroupState>,
}

/// Counters of one store since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// `write` calls handled.
    pub writes: u64,
    /// Group-commit batches (writer wake-ups that wrote something or completed writes).
    pub batches: u64,
    /// `fdatasync` calls on the write path.
    pub syncs: u64,
    /// Total time spent in `fdatasync` on the write path, in nanoseconds.
    pub sync_nanos: u64,
    /// Bytes written to segments on the write path (records, headers, checkpoints).
    pub bytes_written: u64,
    /// Records written (excluding segment checkpoints).
    pub records: u64,
    /// Segment switches (a new segment became the active one).
    pub rollovers: u64,
    /// Spare segments created from scratch.
    pub segments_created: u64,
    /// Reclaimed segments re-zeroed and reused as spares.
    pub segments_recycled: u64,
    /// Reclaimed segments deleted (spares were already sufficient).
    pub segments_deleted: u64,
    /// Segments currently holding log data (including the active one).
    pub live_segments: u64,
    /// Pre-zeroed spare segments ready for use.
    pub spare_segments: u64,
}

/// Where [`LogStore::repair`](crate::LogStore::repair) truncated the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairCut {
    /// The segment holding the first damage.
    pub path: std::path::PathBuf,
    /// Byte offset in it of the first damaged record (0: the header or the whole file).
    pub offset: u64,
    /// What was wrong there.
    pub reason: String,
}

/// What [`LogStore::repair`](crate::LogStore::repair) found and dropped (or would drop).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// The first damage in log order, where the log ends after the repair; `None` if intact.
    pub cut: Option<RepairCut>,
    /// Later segment files taken out of the log (newest first).
    pub segments_removed: Vec<std::path::PathBuf>,
    /// Bytes that may have held data and were dropped (past the cut and in removed files).
    pub bytes_dropped: u64,
    /// Records with a valid checksum in the removed segments (writes possibly acknowledged
    /// once and now lost; records after the cut inside its own segment are not counted).
    pub records_dropped: u64,
}

impl RepairReport {
    /// Whether the log was intact (nothing dropped).
    pub fn is_clean(&self) -> bool {
        self.cut.is_none() && self.segments_removed.is_empty() && self.bytes_dropped == 0
    }
}
