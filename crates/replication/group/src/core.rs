//! The protocol-core seam: what a replication protocol's I/O-free state machine offers the
//! shared worker, and the protocol-neutral values (log entries, hard state, snapshots,
//! persist jobs, messages) that cross it.
//!
//! Raft (`mako-raft`'s `RaftNode`) and Multi-Paxos (`mako-paxos`'s `PaxosNode`) each
//! implement [`Core`]; the [`crate::Host`] drives either with the same threads, log store,
//! snapshot files and transport. A core never does I/O: it is fed ticks, received payloads
//! and proposals, and after every input the driver calls [`Core::poll`], sends
//! [`Output::messages`], makes the [`PersistJob`] durable, then sends the job's `after`
//! messages and calls [`Core::on_persisted`] with its number (jobs complete in order).
//!
//! Log compaction needs the application's snapshot, whose capture can take long: a core
//! never runs it. It begins one ([`mako_replication::SnapshotHandler::begin_snapshot`], the
//! cheap part at the snapshot's index) and hands it out as [`Output::capture`]; the driver
//! runs it off the group's thread and reports the bytes with [`Core::snapshot_captured`],
//! after which a later `poll` records the snapshot and compacts in its persist job.

use std::sync::Arc;

use bytes::Bytes;
use mako_replication::{ApplyDispatcher, NodeId, SnapshotCapture, SnapshotHandler, SubmitError};

pub use mako_logstore::{HardState, LogEntry};

use crate::config::GroupConfig;

/// An application snapshot with the log position it covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Last log index the snapshot covers.
    pub index: u64,
    /// Term (Raft) or accepted ballot (Paxos) of the entry at `index`.
    pub term: u64,
    /// The application's snapshot bytes.
    pub data: Bytes,
}

/// A replica's durable state as recovered, handed to [`Core::new`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// Hard state: term or promised ballot, vote, commit index.
    pub hard_state: HardState,
    /// The snapshot the log starts after, if any.
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot, ascending and contiguous.
    pub entries: Vec<LogEntry>,
}

/// A message for one peer: the protocol's encoded payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutMsg {
    /// Destination replica.
    pub to: NodeId,
    /// Encoded message (possibly one chunk of a larger one).
    pub payload: Bytes,
}

/// What must be made durable, in order, before the messages it holds back may leave.
#[derive(Clone, Debug, Default)]
pub struct PersistJob {
    /// Sequence number; completions are reported with [`Core::on_persisted`] in this order.
    pub number: u64,
    /// Entries to write (writing index `i` replaces the log from `i` on, unless
    /// `keep_later`).
    pub entries: Vec<LogEntry>,
    /// The entries replace only the log's entries at their own indexes; later entries stay
    /// (a Multi-Paxos acceptor overwriting slots keeps every later accepted one).
    pub keep_later: bool,
    /// New hard state, if it changed.
    pub hard_state: Option<HardState>,
    /// A snapshot to keep: installed from a peer (`snapshot_installed`, it replaces the
    /// log) or taken locally (the entries after it stay).
    pub snapshot: Option<Snapshot>,
    /// Whether `snapshot` came from a peer and replaces the log.
    pub snapshot_installed: bool,
    /// Entries below this index are no longer needed.
    pub compact_to: Option<u64>,
    /// Messages that may be sent only once this job is durable.
    pub after: Vec<OutMsg>,
}

impl PersistJob {
    /// Whether the job writes nothing (it may still hold back messages).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.compact_to.is_none()
    }
}

/// A snapshot capture a core began at `index`: the driver runs `run` off the group's thread
/// and reports its bytes with [`Core::snapshot_captured`] (at most one is in flight per core).
pub struct CaptureRequest {
    /// Log index the snapshot covers (the last applied entry when it began).
    pub index: u64,
    /// Term (Raft) or ballot (Paxos) of the entry at `index`.
    pub term: u64,
    /// The expensive half of the capture.
    pub run: SnapshotCapture,
    /// Time the group's thread spent beginning it (the handler's cheap half).
    pub begin: std::time::Duration,
}

impl CaptureRequest {
    /// Begins a capture at `index` (term or ballot `term`) with `h`'s cheap half, handing it
    /// `pending`, the group's queue at `index`; times that half.
    pub fn begin(
        h: &mut dyn SnapshotHandler,
        pending: &[mako_replication::QueuedEntry],
        index: u64,
        term: u64,
    ) -> Self {
        let started = std::time::Instant::now();
        let run = h.begin_snapshot(pending);
        CaptureRequest {
            index,
            term,
            run,
            begin: started.elapsed(),
        }
    }
}

impl std::fmt::Debug for CaptureRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureRequest")
            .field("index", &self.index)
            .field("term", &self.term)
            .field("begin", &self.begin)
            .finish_non_exhaustive()
    }
}

impl CaptureRequest {
    /// Runs the capture here and now (simple drivers and tests): `(index, term, bytes)`.
    pub fn run_now(self) -> (u64, u64, Option<Bytes>) {
        (self.index, self.term, (self.run)())
    }
}

/// What one [`Core::poll`] produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to send now.
    pub messages: Vec<OutMsg>,
    /// Durable work, if any.
    pub persist: Option<PersistJob>,
    /// A snapshot capture to run off the group's thread, if one began.
    pub capture: Option<CaptureRequest>,
}

impl Output {
    /// Whether there is nothing to send, persist or capture.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.persist.is_none() && self.capture.is_none()
    }
}

/// Why a core could not be built or refused an input.
pub type CoreError = Box<dyn std::error::Error + Send + Sync>;

/// One replica of one group as an I/O-free state machine, driven by [`crate::Host`].
///
/// Time is counted in ticks of `heartbeat_interval_ms`; the lease clock (`renew_lease`,
/// `lease_basis`) is in nanoseconds of the driver's monotonic clock.
pub trait Core: Send + Sized + 'static {
    /// The protocol's name in thread names and logs (`"raft"`, `"paxos"`).
    const NAME: &'static str;

    /// A replica from its configuration and recovered state; committed entries go to `d`.
    fn new(
        cfg: GroupConfig,
        init: InitialState,
        d: Arc<ApplyDispatcher>,
        snapshots: Option<Box<dyn SnapshotHandler>>,
    ) -> Result<Self, CoreError>;
    /// The configuration it runs with.
    fn config(&self) -> &GroupConfig;
    /// Installs (or replaces) the application's snapshot handler.
    fn set_snapshot_handler(&mut self, h: Box<dyn SnapshotHandler>);
    /// Advances logical time by one tick (elections, heartbeats, retransmission).
    fn tick(&mut self);
    /// Stamps the current lease round with `now` (called on every tick).
    fn renew_lease(&mut self, now: u64);
    /// Start of the lease this leader holds (`None`: no lease); the lease lasts
    /// [`GroupConfig::lease_duration`] from it.
    fn lease_basis(&self) -> Option<u64>;
    /// Feeds a payload received from peer `from`; a malformed or unacceptable one is
    /// refused with an error and changes nothing.
    fn step(&mut self, from: NodeId, payload: &Bytes) -> Result<(), CoreError>;
    /// Proposes an entry `submit` accepted; one that cannot be proposed is reported to the
    /// dispatcher's unapplied callback.
    fn propose_submitted(&mut self, entry: Bytes);
    /// Reports every submitted entry not yet resolved as abandoned (the group stops).
    fn abandon_proposals(&mut self);
    /// Resumes applying committed entries after a pause (a full pending queue or a missing
    /// callback).
    fn tick_apply(&mut self);
    /// Starts moving leadership to `to`.
    fn transfer_leader(&mut self, to: NodeId) -> Result<(), SubmitError>;
    /// Collects messages to send and the next persist job.
    fn poll(&mut self) -> Output;
    /// Why the core stopped working (it then produces nothing more).
    fn failure(&self) -> Option<&str>;
    /// The capture of [`Output::capture`] at `index` (term `term`) finished: `Some(bytes)`,
    /// or `None` if it failed. The core keeps it as its latest snapshot and compacts its log
    /// (in a later [`Core::poll`]'s persist job), or drops it if it is stale (a newer
    /// snapshot was installed meanwhile, or the entry at `index` is no longer of `term`).
    fn snapshot_captured(&mut self, index: u64, term: u64, data: Option<Bytes>);
    /// Persist job `number` (and every earlier one) is durable; returns messages it released.
    fn on_persisted(&mut self, number: u64) -> Vec<OutMsg>;
    /// Whether this replica leads.
    fn is_leader(&self) -> bool;
    /// The leader this replica believes in.
    fn leader(&self) -> Option<NodeId>;
    /// Current term (Raft) or ballot (Paxos).
    fn term(&self) -> u64;
    /// Highest index known committed.
    fn commit_index(&self) -> u64;
    /// Highest index handed to the dispatcher.
    fn applied_index(&self) -> u64;
    /// Submitted entries resolved so far (applied here as ours, or reported unapplied).
    fn resolved(&self) -> u64;
    /// Whether this replica is still rejoining (see [`GroupConfig::rejoin`]).
    fn rejoining(&self) -> bool;
    /// Peers this replica, as leader, knows to be rejoining.
    fn rejoining_peers(&self) -> Vec<NodeId>;
    /// The group's apply dispatcher.
    fn dispatcher(&self) -> &Arc<ApplyDispatcher>;
}
