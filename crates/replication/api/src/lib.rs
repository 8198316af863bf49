//! The replication seam: what a shard's replication group offers, whatever protocol runs it.
//!
//! Mako replicates every shard's commit log through a group of `R` replicas.
//! This crate is the one interface callers use; Raft (`mako-raft`) implements
//! it today and Multi-Paxos will implement it behind the same [`Replicator`]
//! trait, chosen in the config. The table below maps Mako's C++ helpers to it:
//!
//! | Mako C++ | mako-rs |
//! |---|---|
//! | `add_log_to_nc(log, len, par_id)` | [`Replicator::submit`] (fails fast with [`SubmitError::NotLeader`]) |
//! | `register_for_leader_par_id_return(cb)` | [`Replicator::on_apply`]`(Role::Leader, cb)` |
//! | `register_for_follower_par_id_return(cb)` | [`Replicator::on_apply`]`(Role::Follower, cb)` |
//! | callback returns `ts * 10 + status` | callback returns [`Applied`] `{ status, ts }` |
//! | `get_outstanding_logs(par_id)` | [`Replicator::outstanding`] |
//! | leader-change callback | [`Replicator::on_role_change`] |
//! | `shutdown_paxos()` | [`Replicator::shutdown`] |
//!
//! Every committed entry is handed, in log order and exactly once per
//! incarnation, to the callback registered for the replica's *current* role,
//! together with its log index, the shard id and the group's [`PendingQueue`]
//! of entries not yet replayed. An entry for which the callback answers
//! [`ApplyStatus::SafetyFail`] is appended to that queue; the callback (or
//! [`Replicator::retry_pending`]) drains it in order once replay is safe.
//! [`ApplyDispatcher`] implements this contract once for every protocol.

mod dispatch;

pub use dispatch::{ApplyDispatcher, ApplyStats};

use bytes::Bytes;
use std::collections::VecDeque;

/// Identifier of a replica (a node) in the cluster.
pub type NodeId = u64;

/// A replica's role in its group, as far as apply callbacks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Executes transactions and proposes entries.
    Leader,
    /// Replays what the leader logged (candidates count as followers).
    Follower,
}

/// What an apply callback did with an entry (Mako's `status` digit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApplyStatus {
    /// Applied (leader bookkeeping or follower replay) normally.
    Normal,
    /// Replayed, and the pending queue was drained behind it.
    ReplayDone,
    /// Not safe to replay yet (`VT > VW`): keep it in the pending queue.
    SafetyFail,
    /// A `NoOp` epoch marker was recognised.
    NoOps,
    /// A stream's `Ending` marker was recognised.
    Ending,
}

/// An apply callback's answer: its status and the timestamp it saw in the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Applied {
    /// What happened to the entry.
    pub status: ApplyStatus,
    /// The entry's timestamp (e.g. its largest `VT[s]`), 0 if none.
    pub ts: u64,
}

impl Applied {
    /// A `Normal` answer with timestamp `ts`.
    pub fn normal(ts: u64) -> Self {
        Applied {
            status: ApplyStatus::Normal,
            ts,
        }
    }
}

/// A committed entry waiting in the pending queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEntry {
    /// Log index of the entry.
    pub index: u64,
    /// The entry's bytes.
    pub entry: Bytes,
}

/// The group's queue of committed entries not yet replayed, in log order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PendingQueue {
    entries: VecDeque<QueuedEntry>,
}

impl PendingQueue {
    /// Number of queued entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The oldest queued entry.
    pub fn front(&self) -> Option<&QueuedEntry> {
        self.entries.front()
    }

    /// Removes and returns the oldest queued entry.
    pub fn pop_front(&mut self) -> Option<QueuedEntry> {
        self.entries.pop_front()
    }

    /// Puts an entry back at the head (it is still not safe).
    pub fn push_front(&mut self, e: QueuedEntry) {
        self.entries.push_front(e);
    }

    /// Appends an entry at the tail.
    pub fn push_back(&mut self, e: QueuedEntry) {
        self.entries.push_back(e);
    }

    /// The queued entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &QueuedEntry> {
        self.entries.iter()
    }
}

/// What an apply callback is given for one committed entry.
pub struct ApplyCtx<'a> {
    /// The entry's bytes (an encoded commit-log entry).
    pub entry: &'a Bytes,
    /// Its log index.
    pub index: u64,
    /// The shard whose group committed it.
    pub shard: u32,
    /// The group's queue of entries not yet replayed.
    pub queue: &'a mut PendingQueue,
}

/// An apply callback.
pub type ApplyFn = Box<dyn FnMut(ApplyCtx<'_>) -> Applied + Send>;

/// A role-change notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleChange {
    /// The group's shard.
    pub shard: u32,
    /// The replica's new role.
    pub role: Role,
    /// The protocol's term (Raft) or ballot (Paxos) at the change.
    pub term: u64,
    /// The leader, if known.
    pub leader: Option<NodeId>,
}

/// A role-change callback.
pub type RoleChangeFn = Box<dyn FnMut(RoleChange) + Send>;

/// Why a submitted entry will never be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Leadership was lost before the entry was proposed.
    NotLeader,
    /// The protocol refused the proposal (e.g. during a leadership transfer).
    Refused,
    /// Another entry was committed at the entry's log index.
    Overwritten,
}

/// How a submitted entry ended, when it did not reach this replica's apply callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// The entry will never be committed.
    Dropped(DropReason),
    /// An installed snapshot covers the entry's index: it may or may not be part of that state.
    InSnapshot,
    /// The group stopped (shutdown or failure) before the entry's fate was known here.
    Abandoned,
}

/// A submitted entry that was not applied through this replica's callbacks, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unapplied {
    /// The entry's bytes, as submitted.
    pub entry: Bytes,
    /// What became of it.
    pub resolution: Resolution,
}

/// A callback told about every submitted entry that ends without being applied here.
pub type UnappliedFn = Box<dyn FnMut(Unapplied) + Send>;

/// Called once the replica has applied a run of entries and has nothing more to apply at
/// once (the group's thread ends its turn): where per-entry work is coalesced.
pub type RoundFn = Box<dyn FnMut() + Send>;

/// Why a group stopped serving, as published in its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupHealth {
    /// Running.
    Running,
    /// Shut down on request.
    Stopped,
    /// Stopped by a failure (log I/O, a panic in the protocol core); the text says why.
    Failed(String),
}

/// Why an application snapshot was refused; the application state is left as it was.
#[derive(Debug, thiserror::Error)]
#[error("snapshot refused: {0}")]
pub struct SnapshotRefused(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// The expensive half of a snapshot capture (walking and encoding the state), begun by
/// [`SnapshotHandler::begin_snapshot`] on the group's thread and run on another thread.
/// `None`: the capture failed (the log is then not compacted).
pub type SnapshotCapture = Box<dyn FnOnce() -> Option<Bytes> + Send>;

/// Produces and installs application snapshots for log compaction and catch-up.
///
/// The group's pending queue (entries handed to a callback that answered
/// [`ApplyStatus::SafetyFail`] and are not replayed yet) is part of the application's
/// replay state at the snapshot's index: an entry queued there is covered by the snapshot's
/// index, so the log after the snapshot no longer holds it, yet it is not in the
/// application's state either. So `snapshot` is handed the queue to store with the state,
/// and `restore` hands back the queue to resume with; the protocol puts it in place of its
/// own queue (in order, ahead of every later entry) before it applies anything after the
/// snapshot. Every protocol implementation calls them this way.
pub trait SnapshotHandler: Send {
    /// The application state as of the last entry handed to an apply callback, together
    /// with `pending`, the group's queue at that point (oldest first).
    fn snapshot(&mut self, pending: &[QueuedEntry]) -> Bytes;
    /// Begins a snapshot at the last entry handed to an apply callback: takes, on the
    /// group's thread, whatever must be read exactly at that entry (and `pending`), and
    /// returns the rest of the capture, which the protocol's driver runs on another thread
    /// while the group keeps applying later entries.
    ///
    /// The returned closure's bytes must restore (with [`SnapshotHandler::restore`] at the
    /// same index, followed by the replay of every later entry) to the state a capture at
    /// the index would. The default captures everything now with
    /// [`SnapshotHandler::snapshot`] and returns it (correct for any handler, and as slow).
    fn begin_snapshot(&mut self, pending: &[QueuedEntry]) -> SnapshotCapture {
        let data = self.snapshot(pending);
        Box::new(move || Some(data))
    }
    /// A cheap integrity check of received snapshot data (framing, version, checksum),
    /// run before the protocol accepts the snapshot: refused data is dropped like a lost
    /// message and the state is untouched. The default accepts everything.
    fn check(&self, data: &[u8]) -> Result<(), SnapshotRefused> {
        let _ = data;
        Ok(())
    }
    /// Replaces the application state with `data`, taken at log index `index`, and returns
    /// the pending queue to resume with.
    ///
    /// Atomic: on `Err` the state is unchanged. The protocol then applies nothing after the
    /// snapshot (the group stops with a failure rather than build on a state it lacks).
    fn restore(&mut self, data: &Bytes, index: u64) -> Result<Vec<QueuedEntry>, SnapshotRefused>;
    /// Whether [`SnapshotHandler::snapshot`] can capture the state now; while it cannot (e.g.
    /// the application is not attached yet), the protocol does not compact its log. The
    /// default is always.
    fn can_snapshot(&self) -> bool {
        true
    }
}

/// Why a submission (or a leadership request) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// This replica is not the leader; `hint` is the leader it believes in.
    #[error("not the leader (leader hint: {hint:?})")]
    NotLeader {
        /// The leader this replica knows of, if any.
        hint: Option<NodeId>,
    },
    /// The group was shut down.
    #[error("replication group stopped")]
    Stopped,
    /// The entry is larger than the group accepts.
    #[error("entry of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Too many submitted entries are not yet committed; retry once some commit.
    #[error("replication group busy: too many entries in flight")]
    Busy,
    /// The group stopped after a failure (see its health).
    #[error("replication group failed")]
    Failed,
}

/// One shard's replication group as seen from one replica.
pub trait Replicator: Send + Sync {
    /// The shard this group replicates.
    fn shard(&self) -> u32;
    /// This replica's id.
    fn id(&self) -> NodeId;
    /// Proposes an entry; fails fast with `NotLeader` on a follower.
    fn submit(&self, entry: Bytes) -> Result<(), SubmitError>;
    /// Registers the callback used for committed entries while in `role` (replacing any
    /// earlier one). Entries committed while no callback was registered wait, in order,
    /// and are offered to it.
    fn on_apply(&self, role: Role, cb: ApplyFn);
    /// Registers a callback told about every role change.
    fn on_role_change(&self, cb: RoleChangeFn);
    /// Registers the callback told about submitted entries that end without being applied
    /// here (dropped, covered by a snapshot, or abandoned at stop); replaces any earlier one.
    ///
    /// Every entry `submit` accepted ends in exactly one of: handed to an apply callback on
    /// this replica, or reported here.
    fn on_unapplied(&self, cb: UnappliedFn);
    /// Registers the callback run after each run of applied entries (see [`RoundFn`]); a
    /// protocol without rounds never calls it.
    fn on_apply_round(&self, _cb: RoundFn) {}
    /// Entries submitted on this replica and not yet resolved (applied here or reported unapplied).
    fn outstanding(&self) -> u64;
    /// Whether the group runs, or why it stopped.
    fn health(&self) -> GroupHealth;
    /// This replica's current role.
    fn role(&self) -> Role;
    /// The leader this replica believes in.
    fn leader(&self) -> Option<NodeId>;
    /// The protocol's current term or ballot.
    fn term(&self) -> u64;
    /// Highest log index known committed.
    fn commit_index(&self) -> u64;
    /// Highest log index handed to a callback.
    fn applied_index(&self) -> u64;
    /// Log index of the newest snapshot this replica's log is compacted to and holds on
    /// its snapshot store (taken here or installed from the leader); 0 before the first.
    /// The default answers 0 (a protocol that never compacts).
    fn snapshot_index(&self) -> u64 {
        0
    }
    /// Asks the group to move leadership to `to` (only meaningful on the leader).
    fn transfer_leader(&self, to: NodeId) -> Result<(), SubmitError>;
    /// Installs the handler that makes and restores snapshots (without one, snapshots carry no data).
    fn set_snapshot_handler(&self, handler: Box<dyn SnapshotHandler>);
    /// Re-offers the pending queue to the current callback (call when replay may have become safe).
    fn retry_pending(&self);
    /// Drains in-flight work, syncs storage and joins every thread; idempotent.
    fn shutdown(&self);
    /// The leader lease: `Some(t)` only on the leader, while it holds a lease, with `t` in
    /// the future.
    ///
    /// Guarantee: no other replica of the group becomes leader (hence commits anything)
    /// before `t`, unless this replica itself hands leadership over, and it then stops
    /// answering `Some` before that hand-over can take effect. So a read released by this
    /// replica at an instant `now < t`, checked by calling this method at release time
    /// (after the read's data was taken), is not stale: everything committed before `now`
    /// was committed by this leader. `None` when not leader, while a leadership transfer is
    /// pending, after a step-down, shutdown or failure, or when no lease is held; the caller
    /// then waits, confirms leadership otherwise, or answers `NotLeader`. The lease is only
    /// as good as the clock-drift margin the protocol was configured with. Call it again for
    /// every release (it is cheap); never cache `t` across a role change or a transfer.
    ///
    /// The default answers `None` (never stale, never a lease): the safe answer for a
    /// protocol that keeps no lease.
    fn lease_until(&self) -> Option<std::time::Instant> {
        None
    }
    /// Whether this replica is rejoining after losing its protocol state (a `memory` log
    /// restarted): it follows and catches up but neither campaigns nor votes yet. The
    /// default answers `false` (a protocol without rejoining).
    fn rejoining(&self) -> bool {
        false
    }
}
