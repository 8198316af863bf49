//! The replication lab: the MIT 6.824 / Mako `RaftLabTest` scenarios on a deterministic
//! simulated network, run against every protocol core.
//!
//! * [`LabCore`] is what the lab needs from a protocol core beyond [`mako_group::Core`]:
//!   proposing directly, its log bounds, a few counters, and how to tell a request from
//!   a response on the wire. Raft and Multi-Paxos implement it here.
//! * [`Cluster`] drives `n` cores on one virtual clock with asynchronous persistence
//!   (jobs reach the [`Disk`] only when they complete; a crash loses the rest) and checks
//!   on every step that applied sequences are prefixes of one history, that every
//!   replica's committed entries agree (no-ops included) and sit on a majority of disks,
//!   that no term or ballot has two leaders, that no replica's term goes back, that no
//!   replica refuses a peer's message, the core's own invariants, and (with leases) that no
//!   replica leads while another's lease runs. It also runs message-by-message scenarios:
//!   manual ticks, per-packet filters, held persist jobs, [`Cluster::settle`].
//! * [`scenarios`] holds every lab scenario as a function generic over the core;
//!   `tests/lab.rs` runs each for Raft and for Multi-Paxos.
//!
//! ```
//! use mako_lab::{Cluster, ELECTION_MS};
//! use mako_raft::RaftNode;
//!
//! let mut c: Cluster<RaftNode> = Cluster::new(3, 7);
//! let leader = c.check_one_leader();
//! let index = c.one(b"x", 3, false);
//! c.run_ms(ELECTION_MS);
//! assert_eq!(c.check_one_leader(), leader);
//! assert_eq!(c.n_committed(index).0, 3);
//! ```

mod cluster;
mod protocols;
pub mod scenarios;

use bytes::Bytes;
use mako_group::{Core, LogEntry};

pub use cluster::{
    Checker, Cluster, Disk, ELECTION_MS, Filter, HEARTBEAT_MS, History, HistorySnapshots, LabNode,
    Packet, fast_timing, ids,
};

/// What the lab needs of a protocol core beyond [`Core`].
pub trait LabCore: Core {
    /// Proposes `entry` directly if this replica leads; whether it was taken.
    fn propose(&mut self, entry: Bytes) -> bool;
    /// Starts an election (Raft campaign, Paxos Phase 1) now.
    fn campaign(&mut self) -> bool;
    /// First index still in the in-memory log.
    fn first_index(&self) -> u64;
    /// Last index in the log.
    fn last_index(&self) -> u64;
    /// Snapshots installed from a leader so far.
    fn snapshots_installed(&self) -> u64;
    /// Finished snapshot captures dropped as stale so far.
    fn captures_dropped(&self) -> u64;
    /// Lease rounds a quorum acknowledged so far.
    fn lease_acks(&self) -> u64;
    /// Whether an encoded payload is a request rather than a response (the `count` scenario
    /// counts requests).
    fn is_request(payload: &Bytes) -> bool;
    /// Protocol counters, for failure messages.
    fn describe(&self) -> String;
    /// The in-memory log, if the protocol keeps Raft's log matching property (checked by
    /// [`Cluster::check_log_matching`]); `None` otherwise.
    fn matching_log(&self) -> Option<Vec<LogEntry>>;
    /// The payload of the entry at `index` if the in-memory log holds it (for the check
    /// that every replica's committed entries agree, no-ops included).
    fn payload_at(&self, index: u64) -> Option<Bytes>;
    /// The core's own consistency check, run after every step ([`Cluster`] records a
    /// failure as a violation).
    fn check_invariants(&self) -> Result<(), String> {
        Ok(())
    }
}
