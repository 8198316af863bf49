//! Replication group configuration (Raft or Multi-Paxos): who is in the group, timing in milliseconds, batching limits.

use mako_replication::NodeId;

/// A log this many times [`GroupConfig::compact_after_entries`] long is compacted whatever
/// its bytes (the entry count bounds the log's bookkeeping too).
pub const COMPACT_ENTRIES_CAP: u64 = 16;

/// The entry bytes a replica applied, as [`GroupConfig::compaction_due`] counts them: each
/// protocol core keeps one and tells it what happens to its log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppliedBytes {
    total: u64,
    /// `total` when the newest snapshot (taken or installed) began.
    at_snapshot: u64,
    /// `total` when the capture in flight began.
    at_capture: u64,
}

impl AppliedBytes {
    /// An entry of `n` bytes was handed to the application.
    pub fn applied(&mut self, n: usize) {
        self.total += n as u64;
    }

    /// A capture began at the entry applied last.
    pub fn capture_began(&mut self) {
        self.at_capture = self.total;
    }

    /// The capture begun last became the newest snapshot.
    pub fn capture_kept(&mut self) {
        self.at_snapshot = self.at_capture;
    }

    /// A snapshot from the leader replaced the state.
    pub fn snapshot_installed(&mut self) {
        self.at_snapshot = self.total;
    }

    /// Bytes applied since the newest snapshot began.
    pub fn since_snapshot(&self) -> u64 {
        self.total - self.at_snapshot
    }
}

/// Configuration of one replica of one replication group (either protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// This replica's id (non-zero).
    pub id: NodeId,
    /// Every replica of the group, this one included.
    pub peers: Vec<NodeId>,
    /// The shard the group replicates.
    pub shard: u32,
    /// Leader heartbeat period; also the tick length.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Appends in flight per follower (pipelining depth).
    pub max_inflight: usize,
    /// Byte limit of one append message.
    pub max_append_bytes: u64,
    /// The replica that should lead when healthy and caught up.
    pub preferred: Option<NodeId>,
    /// Compact the log once it holds more than this many applied entries (and see
    /// [`GroupConfig::compact_log_percent`]).
    pub compact_after_entries: u64,
    /// Compact only once the entries applied since the last snapshot hold at least this
    /// percentage of that snapshot's bytes, so that capturing (which walks the whole state)
    /// costs at most about as much as the log it frees (0: by entry count alone). A log of
    /// [`COMPACT_ENTRIES_CAP`] × `compact_after_entries` entries is compacted regardless.
    pub compact_log_percent: u64,
    /// Size of the chunks a snapshot is sent in.
    pub snapshot_chunk_bytes: usize,
    /// Largest entry `submit` accepts (the host lowers it to what its log store can hold).
    pub max_entry_bytes: usize,
    /// Submitted entries not yet resolved beyond which `submit` answers `Busy`.
    pub max_unresolved_entries: u64,
    /// Committed entries the pending queue may hold; beyond it applying pauses (the log keeps them).
    pub max_pending_queue: usize,
    /// Clock-drift margin taken off the leader lease (`None`: a tenth of
    /// `election_timeout_min_ms`, at least 1 ms); see [`GroupConfig::lease_duration`].
    pub lease_drift_ms: Option<u64>,
    /// Start as a rejoining replica: one that lost its protocol state (a `memory` log store
    /// restarted) and must neither campaign nor vote until it holds everything committed
    /// before it came back (see the `node` module's "Rejoining" section). Ignored in a
    /// one-replica group, which has no one to catch up from.
    pub rejoin: bool,
}

impl GroupConfig {
    /// A configuration with the seed's defaults (5 / 400 / 700 ms, 16 appends in flight).
    pub fn new(id: NodeId, peers: Vec<NodeId>, shard: u32) -> Self {
        GroupConfig {
            id,
            peers,
            shard,
            heartbeat_interval_ms: 5,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 700,
            max_inflight: 16,
            max_append_bytes: 1 << 20,
            preferred: None,
            compact_after_entries: 10_000,
            compact_log_percent: 100,
            snapshot_chunk_bytes: 1 << 20,
            max_entry_bytes: 16 << 20,
            max_unresolved_entries: 8192,
            max_pending_queue: 65_536,
            lease_drift_ms: None,
            rejoin: false,
        }
    }

    /// Whether a log holding `entries` applied entries, with `applied` counting the bytes
    /// since the last snapshot began (which took `snapshot_bytes`; 0 without one), is due
    /// for compaction (the one rule both protocols follow).
    pub fn compaction_due(
        &self,
        entries: u64,
        applied: &AppliedBytes,
        snapshot_bytes: u64,
    ) -> bool {
        let bytes = applied.since_snapshot();
        entries >= self.compact_after_entries
            && (u128::from(bytes) * 100
                >= u128::from(snapshot_bytes) * u128::from(self.compact_log_percent)
                || entries
                    >= self
                        .compact_after_entries
                        .saturating_mul(COMPACT_ENTRIES_CAP))
    }

    /// Checks the configuration, naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: &'static str| Err(ConfigError { key, reason });
        if self.id == 0 {
            return bad("id", "must be non-zero");
        }
        if !self.peers.contains(&self.id) {
            return bad("peers", "must include this replica's id");
        }
        if self.peers.contains(&0) {
            return bad("peers", "ids must be non-zero");
        }
        if self.heartbeat_interval_ms == 0 {
            return bad("heartbeat_interval_ms", "must be positive");
        }
        if self.election_timeout_min_ms < 2 * self.heartbeat_interval_ms {
            return bad(
                "election_timeout_min_ms",
                "must be at least twice heartbeat_interval_ms",
            );
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return bad(
                "election_timeout_max_ms",
                "must exceed election_timeout_min_ms",
            );
        }
        if self.max_inflight == 0 {
            return bad("max_inflight", "must be positive");
        }
        if let Some(p) = self.preferred
            && !self.peers.contains(&p)
        {
            return bad("preferred", "must be one of peers");
        }
        if self.snapshot_chunk_bytes < 512 {
            return bad(
                "snapshot_chunk_bytes",
                "must be at least 512 (receivers refuse smaller chunks)",
            );
        }
        let mut ids = self.peers.clone();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.peers.len() {
            return bad("peers", "ids must be distinct");
        }
        if self.max_entry_bytes == 0 {
            return bad("max_entry_bytes", "must be positive");
        }
        if self.max_unresolved_entries == 0 {
            return bad("max_unresolved_entries", "must be positive");
        }
        if self.max_pending_queue == 0 {
            return bad("max_pending_queue", "must be positive");
        }
        if self.lease_duration().is_zero() {
            return bad(
                "lease_drift_ms",
                "must be less than election_timeout_min_ms less one heartbeat_interval_ms \
                 (the lease would be empty)",
            );
        }
        Ok(())
    }

    /// The clock-drift margin in milliseconds (`lease_drift_ms`, or its default).
    pub fn lease_drift(&self) -> u64 {
        self.lease_drift_ms
            .unwrap_or((self.election_timeout_min_ms / 10).max(1))
    }

    /// How long a leader lease lasts from the instant its quorum round was started:
    /// `(E - 1) * heartbeat_interval_ms - drift`, with `E` the minimum election timeout in
    /// ticks. A follower refuses votes for `E` of its ticks after hearing from the leader;
    /// ticks are at least a heartbeat interval apart but the first may come at once, hence
    /// `E - 1`. Zero when the drift margin eats it all (the config is then invalid).
    pub fn lease_duration(&self) -> std::time::Duration {
        if self.heartbeat_interval_ms == 0 {
            return std::time::Duration::ZERO;
        }
        let (min, _) = self.election_ticks();
        let ms = (min as u64)
            .saturating_sub(1)
            .saturating_mul(self.heartbeat_interval_ms)
            .saturating_sub(self.lease_drift());
        std::time::Duration::from_millis(ms)
    }

    /// Election timeout bounds in ticks (`[min, max)`).
    pub fn election_ticks(&self) -> (usize, usize) {
        let t = self.heartbeat_interval_ms;
        let min = self.election_timeout_min_ms.div_ceil(t) as usize;
        let max = (self.election_timeout_max_ms.div_ceil(t) as usize).max(min + 1);
        (min, max)
    }
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid replication group config `{key}`: {reason}")]
pub struct ConfigError {
    /// The offending key.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_waits_for_entries_and_for_log_bytes_worth_the_snapshot() {
        let mut c = GroupConfig::new(1, vec![1], 0);
        let bytes = |n: usize| {
            let mut b = AppliedBytes::default();
            b.applied(n);
            b
        };
        c.compact_after_entries = 100;
        // Too few entries, whatever the bytes.
        assert!(!c.compaction_due(99, &bytes(usize::MAX), 0));
        // No snapshot yet: entries alone.
        assert!(c.compaction_due(100, &bytes(0), 0));
        // A 1 MB snapshot: not before 1 MB of entries since it (100%)...
        assert!(!c.compaction_due(100, &bytes((1 << 20) - 1), 1 << 20));
        assert!(c.compaction_due(100, &bytes(1 << 20), 1 << 20));
        // ... unless the log is 16 times the entry count long.
        assert!(!c.compaction_due(100 * COMPACT_ENTRIES_CAP - 1, &bytes(0), 1 << 20));
        assert!(c.compaction_due(100 * COMPACT_ENTRIES_CAP, &bytes(0), 1 << 20));
        // 50%: half the snapshot's bytes; 0: entries alone.
        c.compact_log_percent = 50;
        assert!(c.compaction_due(100, &bytes(1 << 19), 1 << 20));
        assert!(!c.compaction_due(100, &bytes((1 << 19) - 1), 1 << 20));
        c.compact_log_percent = 0;
        assert!(c.compaction_due(100, &bytes(0), u64::MAX));
    }

    #[test]
    fn applied_bytes_count_from_the_start_of_the_newest_snapshot() {
        let mut b = AppliedBytes::default();
        b.applied(10);
        b.capture_began();
        b.applied(5);
        assert_eq!(b.since_snapshot(), 15, "no snapshot kept yet");
        b.capture_kept();
        assert_eq!(
            b.since_snapshot(),
            5,
            "counted from where the capture began"
        );
        b.applied(7);
        b.snapshot_installed();
        assert_eq!(
            b.since_snapshot(),
            0,
            "an installed snapshot covers everything applied"
        );
        b.applied(3);
        assert_eq!(b.since_snapshot(), 3);
    }

    #[test]
    fn the_default_drift_leaves_a_lease_shorter_than_the_election_timeout() {
        let mut c = GroupConfig::new(1, vec![1], 0);
        // 80 ticks of 5 ms: (80 - 1) * 5 - 40.
        assert_eq!(c.lease_duration().as_millis(), 355);
        c.heartbeat_interval_ms = 10;
        c.election_timeout_min_ms = 20;
        c.election_timeout_max_ms = 30;
        assert!(c.validate().is_ok());
        assert_eq!(c.lease_duration().as_millis(), 8);
    }

    #[test]
    fn a_drift_that_eats_the_lease_is_refused() {
        let mut c = GroupConfig::new(1, vec![1], 0);
        c.lease_drift_ms = Some(395);
        assert_eq!(c.validate().map_err(|e| e.key), Err("lease_drift_ms"));
        c.lease_drift_ms = Some(394);
        assert!(c.validate().is_ok());
    }
}
