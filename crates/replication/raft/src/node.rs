//! `RaftNode`: one replica of one group as an I/O-free state machine fed with messages and ticks.
//!
//! The driver (the threaded [`mako_group::Worker`], or a deterministic simulator)
//! calls [`RaftNode::tick`] every `heartbeat_interval_ms`, feeds received
//! payloads to [`RaftNode::step`], and after every input calls
//! [`RaftNode::poll`]. The [`Output`] says what to send now and what to make
//! durable; once a [`PersistJob`] is durable the driver sends its `after`
//! messages and calls [`RaftNode::on_persisted`]. Committed entries are handed
//! to the group's [`ApplyDispatcher`] inside `poll`.
//!
//! # Rejoining after losing the Raft state
//!
//! A replica whose log store runs in `memory` durability loses its term, vote and log
//! when its process dies. Restarted as an ordinary voter it could (a) vote for a
//! candidate lacking entries the old majority committed with its help (it no longer has
//! them, so it cannot refuse), and (b) vote twice in one term (its vote is forgotten).
//! Started with [`RaftConfig::rejoin`], the replica instead *rejoins*:
//!
//! * It never campaigns: [`RaftNode::tick`] does not tick raft-rs while rejoining (for a
//!   follower a raft-rs tick only advances the election clock and campaigns when it runs
//!   out; the leader-side work of a tick does not apply to a replica that cannot lead),
//!   `MsgTimeoutNow` is dropped (a leadership transfer to it goes nowhere) and
//!   [`RaftNode::campaign`] fails with [`NodeError::Rejoining`].
//! * It grants no vote and no pre-vote: such requests never reach raft-rs; the node
//!   answers them with a rejection itself (`votes_refused`).
//! * It catches up like any lagging follower (appends, or the leader's snapshot through
//!   the [`SnapshotHandler`]), and acknowledges what it really stores. Its append
//!   acknowledgements and its heartbeat answers (those not echoing a read index) carry
//!   [`REJOIN_CONTEXT`], so a leader knows it is rejoining even while its progress of the
//!   replica is still the stale one from before the loss: the preferred-leader hand-over
//!   skips it and [`RaftNode::transfer_leader`] to it is refused.
//! * The target is the commit index the leader reported in the first append of the
//!   newest term received after the restart (a snapshot carries no commit index, so the
//!   append that follows it decides). Once the local log holds the target durably and
//!   knows it committed, the replica holds everything committed before it came back; it
//!   turns into an ordinary voter and tells its leader with one more (plain) append
//!   acknowledgement.
//! * From then on it grants votes and pre-votes only for terms strictly above the term in
//!   which it finished (it may have voted in earlier terms before it lost its state).
//!
//! Limits (inherent to losing state): if a deposed leader of an old term reaches the
//! rejoining replica before the current leader, its commit index is the target; and a
//! vote cast before the loss in a term above the finishing term is not remembered. Memory
//! durability survives the loss of a minority only.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use mako_replication::{
    ApplyDispatcher, DropReason, NodeId, Resolution, Role, SnapshotHandler, SubmitError, Unapplied,
};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot};
use raft::{GetEntriesContext, RawNode, StateRole, Storage};

use crate::lease::LeaseState;
use crate::storage::GroupStorage;
use crate::wire::{self, Reassembler, WireError};
use mako_group::{
    AppliedBytes, CaptureRequest, ConfigError, Core, CoreError, GroupConfig as RaftConfig,
    InitialState, LogEntry, OutMsg, Output, PersistJob,
};

/// A Ready's durable work in raft-rs's types, converted to a [`PersistJob`] when handed out.
#[derive(Debug, Default)]
struct ReadyJob {
    number: u64,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    snapshot: Option<Snapshot>,
    snapshot_installed: bool,
    compact_to: Option<u64>,
    after: Vec<OutMsg>,
}

impl ReadyJob {
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.compact_to.is_none()
    }

    /// The protocol-neutral job: entries keep their data as the log-store payload (the
    /// group's entries are all normal entries without context; see [`to_raft_entry`]).
    fn into_job(self) -> PersistJob {
        PersistJob {
            number: self.number,
            entries: self
                .entries
                .into_iter()
                .map(|e| LogEntry {
                    index: e.index,
                    term: e.term,
                    payload: e.data,
                })
                .collect(),
            keep_later: false,
            hard_state: self.hard_state.map(|h| mako_group::HardState {
                term: h.term,
                vote: h.vote,
                commit: h.commit,
            }),
            snapshot: self.snapshot.map(|s| mako_group::Snapshot {
                index: s.get_metadata().index,
                term: s.get_metadata().term,
                data: s.data,
            }),
            snapshot_installed: self.snapshot_installed,
            compact_to: self.compact_to,
            after: self.after,
        }
    }
}

/// A logged entry as raft-rs sees it. The group proposes only normal entries without
/// context (no configuration changes: membership is static), so index, term and data are
/// all of it; an empty one is a leader's no-op.
fn to_raft_entry(e: LogEntry) -> Entry {
    Entry {
        entry_type: EntryType::EntryNormal,
        index: e.index,
        term: e.term,
        data: e.payload,
        ..Default::default()
    }
}

/// Why `propose` refused an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This replica does not lead; the leader it believes in, if any.
    #[error("not the leader (leader hint: {0:?})")]
    NotLeader(Option<NodeId>),
    /// The entry exceeds `max_entry_bytes`.
    #[error("entry of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// raft-rs declined the proposal (a leadership transfer is under way).
    #[error("proposal refused")]
    Refused,
}

impl From<ProposeError> for SubmitError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader(hint) => SubmitError::NotLeader { hint },
            ProposeError::TooLarge(n) => SubmitError::TooLarge(n),
            ProposeError::Refused => SubmitError::Busy,
        }
    }
}

/// Why the node could not start or process input.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// raft-rs refused the operation.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A received payload did not decode.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The recovered log starts from a snapshot, but no handler was given to restore it.
    #[error("the log starts from snapshot {0}: a SnapshotHandler is needed to restore it")]
    NoSnapshotHandler(u64),
    /// A snapshot from the leader is still being made durable; no campaign until it is.
    #[error("a snapshot install is still being persisted")]
    SnapshotPending,
    /// The replica is rejoining (see the module docs): it does not campaign until it has caught up.
    #[error("the replica is rejoining and does not campaign until it has caught up")]
    Rejoining,
    /// The application refused the recovered snapshot.
    #[error("the application refused recovered snapshot {index}: {reason}")]
    SnapshotRefused {
        /// The snapshot's index.
        index: u64,
        /// Why.
        reason: String,
    },
}

/// Counters a node keeps.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeStats {
    /// Entries proposed here.
    pub proposed: u64,
    /// Committed entries applied here.
    pub applied_entries: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Local compactions.
    pub compactions: u64,
    /// Finished captures dropped as stale (a newer snapshot was installed meanwhile).
    pub captures_dropped: u64,
    /// Undecodable payloads dropped.
    pub bad_payloads: u64,
    /// Decoded messages refused by [`crate::validate`] before reaching raft-rs.
    pub rejected_messages: u64,
    /// Entries proposed here that are resolved: applied here as ours, or reported unapplied.
    pub resolved: u64,
    /// Times applying paused because the pending queue was full.
    pub apply_pauses: u64,
    /// Leader lease rounds started.
    pub lease_rounds: u64,
    /// Leader lease rounds a quorum acknowledged.
    pub lease_acks: u64,
    /// (Pre-)vote requests ignored after a restart or a step-down (see [`crate::lease`]).
    pub votes_withheld: u64,
    /// Times this leader stepped down after a transfer gave up (no lease possible in its term).
    pub lease_step_downs: u64,
    /// Snapshots from a leader refused by the application's integrity check.
    pub snapshots_refused: u64,
    /// (Pre-)vote requests answered with a rejection because this replica is rejoining or
    /// the request's term is not above the term in which it finished rejoining.
    pub votes_refused: u64,
}

/// The `context` a rejoining replica puts on its append acknowledgements.
pub const REJOIN_CONTEXT: &[u8] = b"mako-rejoining";

/// Where a replica is in rejoining after losing its Raft state (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejoin {
    /// An ordinary voter.
    Voter,
    /// Catching up; `target` is the leader's commit index from the first append of term
    /// `target_term` (the newest term heard from a leader since the restart).
    CatchingUp {
        target: Option<u64>,
        target_term: u64,
    },
}

/// A persist job handed to the driver and not yet reported durable.
#[derive(Debug)]
struct Unpersisted {
    /// The job's number (the node's own sequence, not raft-rs's Ready number).
    number: u64,
    /// The latest Ready this job acknowledges to raft-rs (its own, or later ones with
    /// nothing to write, acknowledged together with it).
    covers: u64,
    /// Their messages, sent once this job is durable.
    after: Vec<OutMsg>,
    /// Index of the snapshot the job installs, if any.
    snapshot: Option<u64>,
}

/// One replica of one Raft group.
pub struct RaftNode {
    cfg: RaftConfig,
    raw: RawNode<GroupStorage>,
    dispatcher: Arc<ApplyDispatcher>,
    snapshots: Option<Box<dyn SnapshotHandler>>,
    reassembler: Reassembler,
    chunk_stream: u64,
    applied: u64,
    ticks: u64,
    role: Role,
    stats: NodeStats,
    /// Persist jobs not yet durable, oldest first.
    unpersisted: VecDeque<Unpersisted>,
    /// Entries proposed here and not yet resolved: index → [(term, bytes)]. An index can
    /// hold proposals of several terms (proposed, truncated, proposed again as leader
    /// later); the committed entry's term decides which one, if any, is ours.
    proposals: BTreeMap<u64, Vec<(u64, Bytes)>>,
    /// Highest committed (and locally durable) index raft-rs handed over; applying catches up to it.
    commit_target: u64,
    /// Snapshots sent and not yet answered: peer → tick sent.
    snapshots_sent: BTreeMap<NodeId, u64>,
    /// The leader lease's rounds and basis.
    lease: LeaseState,
    /// Until this tick, (pre-)vote requests are ignored: the replica restarted or stepped
    /// down and may have forgotten a leader whose lease still runs.
    votes_barred_until: u64,
    /// Set when the application refused a snapshot raft-rs had already accepted: nothing is
    /// applied any more (the entries after it would build on a state this replica lacks).
    failure: Option<String>,
    /// Rejoining after a loss of the Raft state, or an ordinary voter.
    rejoin: Rejoin,
    /// (Pre-)votes are granted only for terms above this one (the term rejoining finished in).
    vote_floor: u64,
    /// Messages the node made itself (vote refusals, the end-of-rejoin acknowledgement),
    /// sent with the next `poll`.
    own_msgs: Vec<Message>,
    /// Peers whose latest append acknowledgement (of this node's leadership) said they
    /// are rejoining.
    rejoining_peers: std::collections::BTreeSet<NodeId>,
    /// Submitted entries not yet handed to raft-rs: proposed together, in one step, before
    /// the next input or `poll` (so they keep their order relative to every other input).
    submitted: Vec<Bytes>,
    /// Number of the next persist job.
    next_job: u64,
    /// Number of the latest Ready taken from raft-rs.
    last_ready: u64,
    /// A capture began and not yet reported back: its index and term (no other begins).
    capturing: Option<(u64, u64)>,
    /// A capture begun, for the next `poll`'s output.
    capture_out: Option<CaptureRequest>,
    /// A captured snapshot waiting for the next `poll` to compact the log behind it.
    captured: Option<Snapshot>,
    /// Index of the last capture dropped as stale.
    dropped_at: Option<u64>,
    /// Entry bytes applied here, for the compaction rule.
    applied_bytes: AppliedBytes,
    /// Size of the newest snapshot's data.
    snapshot_bytes: u64,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.cfg.id)
            .field("shard", &self.cfg.shard)
            .field("role", &self.role)
            .field("term", &self.term())
            .field("commit", &self.commit_index())
            .field("applied", &self.applied)
            .finish()
    }
}

/// Entries read from storage per step when applying resumes after a pause.
const CATCH_UP_CHUNK: u64 = 256;

impl RaftNode {
    /// Starts a replica from recovered state; entries after the snapshot are re-applied through `dispatcher`.
    pub fn new(
        cfg: RaftConfig,
        init: InitialState,
        dispatcher: Arc<ApplyDispatcher>,
        mut snapshots: Option<Box<dyn SnapshotHandler>>,
    ) -> Result<Self, NodeError> {
        cfg.validate()?;
        let snap_index = init.snapshot.as_ref().map_or(0, |s| s.index);
        let snapshot_bytes = init.snapshot.as_ref().map_or(0, |s| s.data.len() as u64);
        if init.snapshot.is_some() && snapshots.is_none() {
            return Err(NodeError::NoSnapshotHandler(snap_index));
        }
        if let (Some(s), Some(h)) = (&init.snapshot, snapshots.as_mut()) {
            let pending =
                h.restore(&s.data, snap_index)
                    .map_err(|e| NodeError::SnapshotRefused {
                        index: snap_index,
                        reason: e.to_string(),
                    })?;
            dispatcher.restore_pending(pending);
        }
        // A replica restarted from a term may have acknowledged a lease it no longer knows of.
        let restarted = init.hard_state.term > 0;
        let rejoin = if cfg.rejoin && cfg.peers.len() > 1 {
            tracing::info!(
                shard = cfg.shard,
                id = cfg.id,
                "rejoining: no campaign and no vote until caught up with the leader"
            );
            Rejoin::CatchingUp {
                target: None,
                target_term: 0,
            }
        } else {
            if cfg.rejoin {
                tracing::warn!(
                    shard = cfg.shard,
                    "rejoin asked for a one-replica group: nothing to catch up from; starting as voter"
                );
            }
            Rejoin::Voter
        };
        let hard_state = HardState {
            term: init.hard_state.term,
            vote: init.hard_state.vote,
            commit: init.hard_state.commit,
            ..Default::default()
        };
        let snapshot = init.snapshot.map(|s| {
            let mut snap = Snapshot {
                data: s.data,
                ..Default::default()
            };
            snap.mut_metadata().index = s.index;
            snap.mut_metadata().term = s.term;
            snap
        });
        let entries: Vec<Entry> = init.entries.into_iter().map(to_raft_entry).collect();
        let storage = GroupStorage::new(&cfg.peers, hard_state, snapshot, &entries)?;
        let (min, max) = cfg.election_ticks();
        let rc = raft::Config {
            id: cfg.id,
            election_tick: min,
            heartbeat_tick: 1,
            min_election_tick: min,
            max_election_tick: max,
            max_inflight_msgs: cfg.max_inflight,
            max_size_per_msg: cfg.max_append_bytes,
            // The leader lease relies on both (see `crate::lease`).
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            skip_bcast_commit: true,
            batch_append: true,
            applied: snap_index,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&rc, storage, &logger)?;
        Ok(RaftNode {
            cfg,
            raw,
            dispatcher,
            snapshots,
            reassembler: Reassembler::default(),
            chunk_stream: 0,
            applied: snap_index,
            ticks: 0,
            role: Role::Follower,
            stats: NodeStats::default(),
            unpersisted: VecDeque::new(),
            proposals: BTreeMap::new(),
            commit_target: snap_index,
            snapshots_sent: BTreeMap::new(),
            lease: LeaseState::default(),
            votes_barred_until: if restarted { min as u64 } else { 0 },
            failure: None,
            rejoin,
            vote_floor: 0,
            own_msgs: Vec::new(),
            rejoining_peers: std::collections::BTreeSet::new(),
            submitted: Vec::new(),
            next_job: 1,
            last_ready: 0,
            capturing: None,
            capture_out: None,
            captured: None,
            dropped_at: None,
            applied_bytes: AppliedBytes::default(),
            snapshot_bytes,
        })
    }

    /// The node's configuration.
    pub fn config(&self) -> &RaftConfig {
        &self.cfg
    }

    /// Installs the snapshot handler.
    pub fn set_snapshot_handler(&mut self, h: Box<dyn SnapshotHandler>) {
        self.snapshots = Some(h);
    }

    /// Whether a snapshot from the leader is installed in memory but not yet durable.
    ///
    /// raft-rs learns that it is applied only once it is durable; until then a campaign
    /// would ask for the entries the snapshot replaced, so elections wait.
    fn installing_snapshot(&self) -> bool {
        self.unpersisted.iter().any(|u| u.snapshot.is_some())
    }

    /// Advances logical time by one heartbeat interval.
    pub fn tick(&mut self) {
        self.propose_submitted_now();
        let was_leader = self.is_leader();
        // A follower's tick only runs its election clock: none while a snapshot is being
        // made durable or while rejoining (see the module docs).
        if self.is_leader() || !(self.installing_snapshot() || self.rejoining()) {
            self.raw.tick();
        }
        self.reassembler.tick();
        self.ticks += 1;
        self.step_down_without_lease();
        self.after_input(was_leader);
        // Every tick: a periodic check can alias with check-quorum's reset of `recent_active`.
        self.maybe_hand_to_preferred();
        self.expire_snapshots();
        self.catch_up();
    }

    /// A leader that sent `MsgTimeoutNow` in its term can hold no lease for the rest of it
    /// ([`crate::lease`]); if the transfer gave up and it still leads an election timeout
    /// later, it steps down so that a new term, with a lease, comes.
    fn step_down_without_lease(&mut self) {
        let r = &self.raw.raft;
        let stuck = r.state == StateRole::Leader
            && r.lead_transferee.is_none()
            && self.lease.timeout_now_term == r.term
            && self.ticks >= self.lease.timeout_now_tick + self.election_ticks();
        if stuck {
            let term = r.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
            self.stats.lease_step_downs += 1;
        }
    }

    /// Minimum election timeout in ticks.
    fn election_ticks(&self) -> u64 {
        self.cfg.election_ticks().0 as u64
    }

    /// After an input that may have changed the role: a leader that stepped down drops its
    /// lease and withholds votes for one election timeout (see [`crate::lease`]).
    fn after_input(&mut self, was_leader: bool) {
        if was_leader && !self.is_leader() {
            self.lease.drop_lease();
            self.votes_barred_until = self.ticks + self.election_ticks();
        }
    }

    /// Whether a lease may be held or renewed now: leading, no transfer pending, and no
    /// `MsgTimeoutNow` sent in this term.
    fn lease_allowed(&self) -> bool {
        let r = &self.raw.raft;
        r.state == StateRole::Leader
            && r.lead_transferee.is_none()
            && self.lease.timeout_now_term != r.term
    }

    /// Starts a leader-lease round stamped `now` if one is due (every eighth of the minimum
    /// election timeout while leading, with an entry of this term committed).
    ///
    /// `now` is the driver's monotonic clock, in any unit, read before the output of this
    /// call is sent; a lease from a round lasts [`RaftConfig::lease_duration`] from its
    /// stamp. The argument is in [`crate::lease`].
    pub fn renew_lease(&mut self, now: u64) {
        self.lease.enter_term(self.raw.raft.term);
        if !self.lease_allowed() {
            self.lease.drop_lease();
            return;
        }
        // raft-rs ignores read-index requests until then.
        if !self.raw.raft.commit_to_current_term()
            || !self.lease.due(self.ticks, self.election_ticks())
        {
            return;
        }
        let ctx = self.lease.start_round(now, self.ticks);
        self.raw.read_index(ctx);
        self.stats.lease_rounds += 1;
    }

    /// The stamp (as passed to [`RaftNode::renew_lease`]) of the newest lease round a quorum
    /// acknowledged, while this replica may hold a lease; `None` otherwise.
    pub fn lease_basis(&self) -> Option<u64> {
        if !self.lease_allowed() || self.lease.term() != self.raw.raft.term {
            return None;
        }
        self.lease.basis()
    }

    /// Whether a (pre-)vote request must be ignored: the replica restarted or stepped down
    /// less than an election timeout ago. Transfer campaigns pass (the old leader dropped
    /// its lease when it started the transfer).
    fn vote_withheld(&self, msg: &Message) -> bool {
        matches!(
            msg.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        ) && self.ticks < self.votes_barred_until
            && msg.term >= self.raw.raft.term
            && msg.get_context() != raft::CAMPAIGN_TRANSFER
    }

    /// A snapshot whose answer never came (lost on the way) is reported failed after two
    /// election timeouts, so raft-rs probes the peer again and resends.
    fn expire_snapshots(&mut self) {
        if self.snapshots_sent.is_empty() {
            return;
        }
        let limit = 2 * self.cfg.election_ticks().1 as u64;
        let now = self.ticks;
        let mut expired = Vec::new();
        self.snapshots_sent.retain(|&to, &mut sent| {
            let waiting = self
                .raw
                .raft
                .prs()
                .get(to)
                .is_some_and(|pr| pr.state == raft::ProgressState::Snapshot);
            if waiting && now.saturating_sub(sent) > limit {
                expired.push(to);
            }
            waiting && now.saturating_sub(sent) <= limit
        });
        for to in expired {
            self.raw.report_snapshot(to, raft::SnapshotStatus::Failure);
        }
    }

    /// Feeds a payload received from `from`.
    pub fn step(&mut self, from: NodeId, payload: &Bytes) -> Result<(), NodeError> {
        let msg = match self.reassembler.push(from, payload) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.stats.bad_payloads += 1;
                return Err(e.into());
            }
        };
        self.step_checked(Some(from), msg)
    }

    /// Feeds a decoded message (its `from` is trusted as the sender).
    pub fn step_message(&mut self, msg: Message) -> Result<(), NodeError> {
        self.step_checked(None, msg)
    }

    /// Validates a message from `sender` (if known), then hands it to raft-rs.
    fn step_checked(&mut self, sender: Option<NodeId>, mut msg: Message) -> Result<(), NodeError> {
        self.propose_submitted_now();
        if msg.get_msg_type() == MessageType::MsgHeartbeat {
            // A leader's view of our log can be stale (we lost our disk in `memory`
            // durability); raft-rs would abort on a commit index past our last entry.
            msg.commit = msg.commit.min(self.raw.raft.raft_log.last_index());
        }
        if msg.get_msg_type() == MessageType::MsgSnapshot
            && let Some(h) = self.snapshots.as_ref()
            && let Err(e) = h.check(msg.get_snapshot().get_data())
        {
            // Dropped like a lost message: the leader resends after its snapshot timeout.
            self.stats.rejected_messages += 1;
            self.stats.snapshots_refused += 1;
            tracing::warn!(
                shard = self.cfg.shard,
                from = msg.from,
                refused = self.stats.snapshots_refused,
                "snapshot from the leader refused: {e}"
            );
            return Ok(());
        }
        if msg.get_msg_type() == MessageType::MsgTimeoutNow && self.installing_snapshot() {
            // A transfer would make us campaign before the snapshot is durable.
            self.stats.rejected_messages += 1;
            return Ok(());
        }
        if let Err(why) = crate::validate::validate_for(&self.raw, &self.cfg.peers, sender, &msg) {
            // Counted, logged at debug only: a hostile peer must not flood the log.
            self.stats.rejected_messages += 1;
            let t = msg.get_msg_type();
            tracing::debug!(
                shard = self.cfg.shard,
                from = msg.from,
                "rejected {t:?}: {why}"
            );
            return Ok(());
        }
        if !self.rejoin_filter(&mut msg) {
            return Ok(());
        }
        if self.vote_withheld(&msg) {
            self.stats.votes_withheld += 1;
            return Ok(());
        }
        let was_leader = self.is_leader();
        let stepped = self.raw.step(msg);
        self.after_input(was_leader);
        match stepped {
            // Stale or foreign messages are routine in Raft; they are not errors of the node.
            Ok(()) | Err(raft::Error::StepPeerNotFound) | Err(raft::Error::StepLocalMsg) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The rejoin rules for a validated message (see the module docs); false: it must not
    /// reach raft-rs.
    fn rejoin_filter(&mut self, msg: &mut Message) -> bool {
        let term = self.raw.raft.term;
        match msg.get_msg_type() {
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                if self.rejoining() || msg.term <= self.vote_floor =>
            {
                self.refuse_vote(msg);
                false
            }
            MessageType::MsgTimeoutNow if self.rejoining() => {
                self.stats.rejected_messages += 1;
                tracing::info!(
                    shard = self.cfg.shard,
                    from = msg.from,
                    "leadership transfer to a rejoining replica ignored"
                );
                false
            }
            MessageType::MsgAppend if msg.term >= term => {
                if let Rejoin::CatchingUp {
                    target,
                    target_term,
                } = &mut self.rejoin
                    && msg.term > *target_term
                {
                    // The first append of a newer leader: everything committed before the
                    // restart is at or below the commit index it reports.
                    *target = Some(target.unwrap_or(0).max(msg.commit));
                    *target_term = msg.term;
                }
                true
            }
            MessageType::MsgAppendResponse | MessageType::MsgHeartbeatResponse
                if self.is_leader() && msg.term == term =>
            {
                let heartbeat = msg.get_msg_type() == MessageType::MsgHeartbeatResponse;
                if msg.get_context() == REJOIN_CONTEXT {
                    if self.rejoining_peers.insert(msg.from) {
                        // It lost what it acknowledged before: count nothing of it and send
                        // it the log from the start (snapshot if compacted). Without this an
                        // idle log (the `meta` group's) only heartbeats a replica it believes
                        // caught up, so its rejoin never ends.
                        if let Some(pr) = self.raw.raft.mut_prs().get_mut(msg.from) {
                            pr.matched = 0;
                            pr.become_probe();
                        }
                        self.raw.raft.send_append(msg.from);
                    }
                    if heartbeat {
                        // The mark replaced an empty context; raft-rs reads it as a read-index ack.
                        msg.clear_context();
                    }
                } else if !heartbeat || msg.get_context().is_empty() {
                    // A heartbeat answer with a context echoes a read index: it says nothing.
                    self.rejoining_peers.remove(&msg.from);
                }
                true
            }
            _ => true,
        }
    }

    /// Answers a (pre-)vote request with a rejection, without raft-rs seeing it.
    fn refuse_vote(&mut self, msg: &Message) {
        self.stats.votes_refused += 1;
        let vote = msg.get_msg_type() == MessageType::MsgRequestVote;
        // As raft-rs does: a refused pre-vote carries our term (a higher one would push the
        // pre-candidate's term up for nothing); a refused vote carries the candidate's term
        // (so it is counted) or ours if higher.
        let term = if vote {
            self.raw.raft.term.max(msg.term)
        } else {
            self.raw.raft.term
        };
        if term == 0 {
            // Term 0 marks local messages: nothing to say the pre-candidate would count.
            return;
        }
        let mut r = Message::default();
        r.set_msg_type(if vote {
            MessageType::MsgRequestVoteResponse
        } else {
            MessageType::MsgRequestPreVoteResponse
        });
        r.to = msg.from;
        r.from = self.cfg.id;
        r.term = term;
        r.reject = true;
        self.own_msgs.push(r);
    }

    /// Ends rejoining once the log durably holds the target and knows it committed.
    fn maybe_finish_rejoin(&mut self) {
        let Rejoin::CatchingUp {
            target: Some(target),
            ..
        } = self.rejoin
        else {
            return;
        };
        let log = &self.raw.raft.raft_log;
        let held = log.committed.min(log.persisted);
        if held < target || self.failure.is_some() || self.installing_snapshot() {
            return;
        }
        let term = self.raw.raft.term;
        self.rejoin = Rejoin::Voter;
        self.vote_floor = term;
        tracing::info!(
            shard = self.cfg.shard,
            id = self.cfg.id,
            target,
            term,
            "rejoined: caught up; votes again for terms above {term}"
        );
        if let Some(leader) = self.leader() {
            // A plain acknowledgement of committed (hence matching) entries: the leader
            // learns that this replica is no longer rejoining.
            let mut ack = Message::default();
            ack.set_msg_type(MessageType::MsgAppendResponse);
            ack.to = leader;
            ack.from = self.cfg.id;
            ack.term = term;
            ack.index = held;
            ack.commit = log.committed;
            self.own_msgs.push(ack);
        }
    }

    /// Whether this replica is still rejoining (no campaign, no vote; see the module docs).
    pub fn rejoining(&self) -> bool {
        matches!(self.rejoin, Rejoin::CatchingUp { .. })
    }

    /// The term rejoining finished in: votes are granted only for later terms (0: any).
    pub fn vote_floor(&self) -> u64 {
        self.vote_floor
    }

    /// Peers this leader knows to be rejoining (from their latest append acknowledgement).
    pub fn rejoining_peers(&self) -> Vec<NodeId> {
        self.rejoining_peers.iter().copied().collect()
    }

    /// Proposes an entry; fails fast with `NotLeader` on a follower, `TooLarge` past
    /// `max_entry_bytes`, `Refused` while raft-rs declines proposals (e.g. a leader transfer).
    ///
    /// An accepted entry ends in exactly one of: applied here (as ours), or reported to the
    /// dispatcher's unapplied callback.
    pub fn propose(&mut self, entry: Bytes) -> Result<(), ProposeError> {
        self.propose_submitted_now();
        if entry.len() > self.cfg.max_entry_bytes {
            return Err(ProposeError::TooLarge(entry.len()));
        }
        self.propose_all(vec![entry]).map_err(|(e, _)| e)
    }

    /// Proposes `entries` in one raft-rs step: all are taken, or none (returned with why).
    fn propose_all(&mut self, entries: Vec<Bytes>) -> Result<(), (ProposeError, Vec<Bytes>)> {
        if self.raw.raft.state != StateRole::Leader {
            return Err((ProposeError::NotLeader(self.leader()), entries));
        }
        let before = self.raw.raft.raft_log.last_index();
        // `RawNode::propose` takes one `Vec` (a copy of the entry); the same message built
        // here shares the entries' bytes and carries them all.
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.cfg.id;
        m.set_entries(
            entries
                .iter()
                .map(|e| Entry {
                    data: e.clone(),
                    ..Default::default()
                })
                .collect::<Vec<_>>()
                .into(),
        );
        if self.raw.raft.step(m).is_err() {
            return Err((ProposeError::Refused, entries));
        }
        let term = self.raw.raft.term;
        debug_assert_eq!(
            self.raw.raft.raft_log.last_index(),
            before + entries.len() as u64
        );
        for (index, entry) in (before + 1..).zip(entries) {
            self.proposals.entry(index).or_default().push((term, entry));
            self.stats.proposed += 1;
        }
        Ok(())
    }

    /// Takes an entry a caller already had accepted (`submit`); it is proposed together with
    /// the others submitted since the last input. A refusal is reported to the unapplied
    /// callback instead of returned.
    pub fn propose_submitted(&mut self, entry: Bytes) {
        self.submitted.push(entry);
    }

    /// Proposes the submitted entries; reports those refused.
    fn propose_submitted_now(&mut self) {
        if self.submitted.is_empty() {
            return;
        }
        let limit = self.cfg.max_entry_bytes;
        let (fit, too_large): (Vec<Bytes>, Vec<Bytes>) = std::mem::take(&mut self.submitted)
            .into_iter()
            .partition(|e| e.len() <= limit);
        for entry in too_large {
            self.report(entry, Resolution::Dropped(DropReason::Refused));
        }
        if let Err((why, entries)) = self.propose_all(fit) {
            let reason = match why {
                ProposeError::NotLeader(_) => DropReason::NotLeader,
                ProposeError::TooLarge(_) | ProposeError::Refused => DropReason::Refused,
            };
            for entry in entries {
                self.report(entry, Resolution::Dropped(reason));
            }
        }
    }

    fn report(&mut self, entry: Bytes, resolution: Resolution) {
        self.stats.resolved += 1;
        self.dispatcher.unapplied(Unapplied { entry, resolution });
    }

    /// Reports every unresolved proposal as abandoned (the group is stopping).
    pub fn abandon_proposals(&mut self) {
        for entry in std::mem::take(&mut self.submitted) {
            self.report(entry, Resolution::Abandoned);
        }
        for (_, at) in std::mem::take(&mut self.proposals) {
            for (_, entry) in at {
                self.report(entry, Resolution::Abandoned);
            }
        }
    }

    /// Resumes applying committed entries if a full pending queue had paused it.
    pub fn tick_apply(&mut self) {
        self.propose_submitted_now();
        self.catch_up();
    }

    /// Entries proposed here and not yet resolved.
    pub fn unresolved_proposals(&self) -> usize {
        self.submitted.len() + self.proposals.values().map(Vec::len).sum::<usize>()
    }

    /// Asks leadership to move to `to`; refused with `Busy` while `to` is rejoining.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), SubmitError> {
        self.propose_submitted_now();
        if self.raw.raft.state != StateRole::Leader {
            return Err(SubmitError::NotLeader {
                hint: self.leader(),
            });
        }
        if self.rejoining_peers.contains(&to) {
            tracing::info!(
                shard = self.cfg.shard,
                to,
                "leadership transfer refused: the target is rejoining"
            );
            return Err(SubmitError::Busy);
        }
        if to != self.cfg.id {
            // The target will campaign at once, past every follower's lease.
            self.lease.drop_lease();
            self.raw.transfer_leader(to);
        }
        Ok(())
    }

    /// Starts an election now (tests and manual failover).
    pub fn campaign(&mut self) -> Result<(), NodeError> {
        self.propose_submitted_now();
        if self.installing_snapshot() {
            return Err(NodeError::SnapshotPending);
        }
        if self.rejoining() {
            return Err(NodeError::Rejoining);
        }
        Ok(self.raw.campaign()?)
    }

    fn maybe_hand_to_preferred(&mut self) {
        let Some(p) = self.cfg.preferred else { return };
        if p == self.cfg.id
            || self.raw.raft.state != StateRole::Leader
            || self.rejoining_peers.contains(&p)
        {
            return;
        }
        let last = self.raw.raft.raft_log.last_index();
        let caught_up = self
            .raw
            .raft
            .prs()
            .get(p)
            .is_some_and(|pr| pr.recent_active && pr.matched == last);
        if caught_up && self.raw.raft.lead_transferee.is_none() {
            self.lease.drop_lease();
            self.raw.transfer_leader(p);
        }
    }

    fn encode(&mut self, msgs: Vec<Message>, out: &mut Vec<OutMsg>) {
        for m in msgs {
            let to = m.to;
            let mut m = m;
            // A leader may still count us as caught up from before the loss (its progress of
            // us is stale): our first answer, usually to a heartbeat, already says "rejoining".
            // A heartbeat answer echoing a read index keeps it (the leader needs it).
            let mark = match m.get_msg_type() {
                MessageType::MsgAppendResponse => true,
                MessageType::MsgHeartbeatResponse => m.get_context().is_empty(),
                _ => false,
            };
            if mark && self.rejoining() {
                m.set_context(REJOIN_CONTEXT.to_vec().into());
            }
            if m.get_msg_type() == MessageType::MsgTimeoutNow {
                // It may be delivered at any later time: no lease for the rest of the term.
                self.lease.timeout_now_term = m.term;
                self.lease.timeout_now_tick = self.ticks;
                self.lease.drop_lease();
            }
            // Only snapshots are chunked; appends are bounded by `max_append_bytes` (plus
            // at most one oversized entry) and travel whole, with no reassembly copy.
            let chunk = if m.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshots_sent.insert(to, self.ticks);
                self.cfg.snapshot_chunk_bytes
            } else {
                usize::MAX
            };
            self.chunk_stream += 1;
            for payload in wire::encode(&m, chunk, self.chunk_stream) {
                out.push(OutMsg { to, payload });
            }
        }
    }

    /// Collects what the last inputs produced: messages, state to persist, applied entries.
    pub fn poll(&mut self) -> Output {
        self.propose_submitted_now();
        let mut out = Output::default();
        let own = std::mem::take(&mut self.own_msgs);
        self.encode(own, &mut out.messages);
        if !self.raw.has_ready() {
            if self.captured.is_some() {
                // A capture finished with no Ready to carry it: a job of its own, which
                // acknowledges no new Ready.
                let mut job = ReadyJob::default();
                self.take_captured(&mut job);
                let covers = self.last_ready;
                self.finish_job(job, covers, &mut out);
            }
            out.capture = self.capture_out.take();
            return out;
        }
        let mut rd = self.raw.ready();
        self.last_ready = rd.number();
        if let Some(ss) = rd.ss() {
            let role = if ss.raft_state == StateRole::Leader {
                Role::Leader
            } else {
                Role::Follower
            };
            let leader = (ss.leader_id != 0).then_some(ss.leader_id);
            if role != Role::Leader {
                self.lease.drop_lease();
            }
            self.role = role;
            self.dispatcher.set_role(role, self.raw.raft.term, leader);
        }
        for rs in rd.take_read_states() {
            if self.lease_allowed()
                && self.lease.term() == self.raw.raft.term
                && self.lease.acked(&rs.request_ctx)
            {
                self.stats.lease_acks += 1;
            }
        }
        let now = rd.take_messages();
        self.encode(now, &mut out.messages);
        let ready = rd.number();
        let mut job = ReadyJob::default();
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.install_snapshot(&snap);
            job.snapshot = Some(snap);
            job.snapshot_installed = true;
        }
        let entries = rd.take_entries();
        if !entries.is_empty() {
            if let Err(e) = self.raw.mut_store().mem().wl().append(&entries) {
                tracing::error!(shard = self.cfg.shard, "appending entries: {e}");
            }
            job.entries = entries;
        }
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().mem().wl().set_hardstate(hs.clone());
            job.hard_state = Some(hs.clone());
        }
        let committed = rd.take_committed_entries();
        if let Some(last) = committed.last() {
            self.commit_target = self.commit_target.max(last.index);
        }
        self.apply(committed);
        let after = rd.take_persisted_messages();
        self.encode(after, &mut job.after);
        self.raw.advance_append_async(rd);
        self.take_captured(&mut job);
        self.maybe_compact();
        self.finish_job(job, ready, &mut out);
        self.sync_applied();
        self.maybe_finish_rejoin();
        let own = std::mem::take(&mut self.own_msgs);
        self.encode(own, &mut out.messages);
        out.capture = self.capture_out.take();
        out
    }

    /// Hands out `job` (acknowledging Ready `ready` once durable), or, with nothing to
    /// write, attaches Ready `ready` to the job still at the disk.
    fn finish_job(&mut self, mut job: ReadyJob, ready: u64, out: &mut Output) {
        if job.is_empty() {
            match self.unpersisted.back_mut() {
                // Nothing to write, but an earlier job is still at the disk: this Ready is
                // acknowledged (and its messages sent) only once that job is durable.
                Some(u) => {
                    u.covers = u.covers.max(ready);
                    u.after.append(&mut job.after);
                }
                None => {
                    self.raw.on_persist_ready(ready);
                    out.messages.append(&mut job.after);
                }
            }
        } else {
            job.number = self.next_job;
            self.next_job += 1;
            self.unpersisted.push_back(Unpersisted {
                number: job.number,
                covers: ready,
                after: Vec::new(),
                snapshot: job
                    .snapshot
                    .as_ref()
                    .filter(|_| job.snapshot_installed)
                    .map(|s| s.get_metadata().index),
            });
            out.persist = Some(job.into_job());
        }
    }

    /// Takes a snapshot from the leader into the in-memory log and the application.
    fn install_snapshot(&mut self, snap: &Snapshot) {
        let index = snap.get_metadata().index;
        if let Err(e) = self.raw.mut_store().mem().wl().apply_snapshot(snap.clone()) {
            tracing::error!(shard = self.cfg.shard, "installing snapshot: {e}");
            return;
        }
        // Queued entries are at or below the snapshot: its state (and the queue it carries)
        // replaces them.
        self.dispatcher.clear_pending();
        match self.snapshots.as_mut() {
            Some(h) => match h.restore(&snap.data, index) {
                Ok(pending) => self.dispatcher.restore_pending(pending),
                Err(e) => {
                    // raft-rs holds the snapshot already; applying the entries after it on
                    // top of the old state would be wrong: stop applying, report failure.
                    let reason = format!("snapshot {index} could not be restored: {e}");
                    tracing::error!(shard = self.cfg.shard, "{reason}");
                    self.failure = Some(reason);
                    return;
                }
            },
            None => tracing::error!(
                shard = self.cfg.shard,
                index,
                "snapshot from the leader installed with no SnapshotHandler: its state is lost"
            ),
        }
        self.raw.store().set_last_snapshot(snap.clone());
        self.applied_bytes.snapshot_installed();
        self.snapshot_bytes = snap.get_data().len() as u64;
        self.applied = self.applied.max(index);
        self.commit_target = self.commit_target.max(index);
        self.stats.snapshots_installed += 1;
        // Our proposals at or below the snapshot index are decided, but not visible to us.
        let later = self.proposals.split_off(&(index + 1));
        for (_, at) in std::mem::replace(&mut self.proposals, later) {
            for (_, entry) in at {
                self.report(entry, Resolution::InSnapshot);
            }
        }
    }

    /// Whether applying must wait: for the pending queue to drain, or for the application
    /// to register its apply callback (a group starts before its owner can; an entry applied
    /// to nobody would be queued without the application seeing it in log order).
    fn paused(&self) -> bool {
        !self.dispatcher.has_callback() || self.dispatcher.queued() >= self.cfg.max_pending_queue
    }

    /// Why this node stopped applying (the application refused an installed snapshot); the
    /// driver stops the group when it is set.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Applies committed entries handed over by raft-rs, then catches up from storage.
    fn apply(&mut self, committed: Vec<Entry>) {
        if self.failure.is_some() {
            return;
        }
        for e in committed {
            if e.index <= self.applied {
                continue;
            }
            if e.index != self.applied + 1 || self.paused() {
                break;
            }
            self.apply_one(e);
        }
        self.catch_up();
    }

    /// Applies committed entries from the in-memory log up to `commit_target` while not paused.
    fn catch_up(&mut self) {
        while self.failure.is_none() && self.applied < self.commit_target {
            if self.paused() {
                self.stats.apply_pauses += 1;
                return;
            }
            let high = self.commit_target.min(self.applied + CATCH_UP_CHUNK) + 1;
            let got = self.raw.store().entries(
                self.applied + 1,
                high,
                None,
                GetEntriesContext::empty(false),
            );
            let entries = match got {
                Ok(es) if !es.is_empty() => es,
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(shard = self.cfg.shard, "reading committed entries: {e}");
                    return;
                }
            };
            for e in entries {
                if self.paused() {
                    self.stats.apply_pauses += 1;
                    self.sync_applied();
                    return;
                }
                self.apply_one(e);
            }
        }
        self.sync_applied();
    }

    fn apply_one(&mut self, e: Entry) {
        self.applied = e.index;
        for (term, entry) in self.proposals.remove(&e.index).unwrap_or_default() {
            if term == e.term {
                // One leader per term: the committed entry of our term at this index is ours.
                self.stats.resolved += 1;
            } else {
                self.report(entry, Resolution::Dropped(DropReason::Overwritten));
            }
        }
        // Empty entries are the new leader's own term marker; config changes are not used.
        if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
            return;
        }
        self.applied_bytes.applied(e.data.len());
        self.dispatcher.apply(e.index, &e.data);
        self.stats.applied_entries += 1;
    }

    /// Tells raft-rs how far the application got (never past what is committed and durable).
    fn sync_applied(&mut self) {
        let log = &self.raw.raft.raft_log;
        let a = self.applied.min(log.committed).min(log.persisted);
        if a > log.applied {
            self.raw.advance_apply_to(a);
        }
    }

    /// Begins a capture at `applied` when the log has grown past `compact_after_entries`
    /// (and no capture is in flight); the driver runs it and reports it with
    /// [`RaftNode::snapshot_captured`].
    fn maybe_compact(&mut self) {
        // No compaction without a snapshot source: the prefix would be gone for good.
        // Not again at an index whose capture was just dropped (no loop of captures).
        if self.failure.is_some()
            || self.capturing.is_some()
            || self.dropped_at == Some(self.applied)
            || !self.snapshots.as_ref().is_some_and(|h| h.can_snapshot())
        {
            return;
        }
        let Ok(first) = self.raw.store().first_index() else {
            return;
        };
        if self.applied < first
            || !self.cfg.compaction_due(
                self.applied - first,
                &self.applied_bytes,
                self.snapshot_bytes,
            )
        {
            return;
        }
        if self.compact_target(self.applied) <= first {
            return;
        }
        let Ok(term) = self.raw.store().term(self.applied) else {
            return;
        };
        let Some(h) = self.snapshots.as_mut() else {
            return;
        };
        // The queue as of `applied`: entries queued at or below the snapshot's index.
        let pending = self.dispatcher.queue_snapshot();
        self.capturing = Some((self.applied, term));
        self.applied_bytes.capture_began();
        self.capture_out = Some(CaptureRequest::begin(
            h.as_mut(),
            &pending,
            self.applied,
            term,
        ));
    }

    /// How far the log may be compacted behind a snapshot at `index`: a leader keeps what
    /// live followers still need (a dead one will get the snapshot).
    fn compact_target(&self, index: u64) -> u64 {
        let mut target = index;
        if self.raw.raft.state == StateRole::Leader {
            for (id, pr) in self.raw.raft.prs().iter() {
                if *id != self.cfg.id && pr.recent_active {
                    target = target.min(pr.matched);
                }
            }
        }
        target
    }

    /// The capture begun at `index` (term `term`) finished with `data` (`None`: it failed).
    /// Kept for the next `poll`, which records it as the snapshot lagging followers get,
    /// compacts the log behind it and persists both; dropped if it is stale.
    pub fn snapshot_captured(&mut self, index: u64, term: u64, data: Option<Bytes>) {
        if self.capturing != Some((index, term)) {
            tracing::debug!(
                shard = self.cfg.shard,
                index,
                "unexpected capture result dropped"
            );
            return;
        }
        self.capturing = None;
        let Some(data) = data else {
            return;
        };
        let mut snap = Snapshot {
            data,
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(ConfState::from((self.cfg.peers.clone(), vec![])));
        self.captured = Some(snap);
    }

    /// Takes a finished capture into `job`: the in-memory log is compacted behind it now, the
    /// snapshot file and log record follow with the job. A capture overtaken by a snapshot
    /// installed from the leader (in this job or before) or whose entry changed is dropped.
    fn take_captured(&mut self, job: &mut ReadyJob) {
        let Some(snap) = self.captured.take() else {
            return;
        };
        let (index, term) = (snap.get_metadata().index, snap.get_metadata().term);
        let last = self.raw.store().last_snapshot().get_metadata().index;
        let first = self.raw.store().first_index().unwrap_or(0);
        if self.failure.is_some()
            || job.snapshot_installed
            // A snapshot at the same index (taken before, when followers needed more of the
            // log) is simply taken again: the log is compacted further behind it.
            || index < last
            || index < first
            || index > self.applied
            || self.raw.store().term(index).ok() != Some(term)
        {
            tracing::debug!(shard = self.cfg.shard, index, "stale capture dropped");
            self.stats.captures_dropped += 1;
            self.dropped_at = Some(index);
            return;
        }
        self.raw.store().set_last_snapshot(snap.clone());
        self.applied_bytes.capture_kept();
        self.snapshot_bytes = snap.get_data().len() as u64;
        let target = self.compact_target(index);
        if target > first {
            if let Err(e) = self.raw.mut_store().mem().wl().compact(target) {
                tracing::error!(shard = self.cfg.shard, "compacting: {e}");
            } else {
                job.compact_to = Some(target);
            }
        }
        self.stats.compactions += 1;
        job.snapshot = Some(snap);
    }

    /// Reports that persist job `number` is durable; jobs must be reported in the order
    /// `poll` produced them. Returns messages that were waiting for it (send them now).
    ///
    /// A report out of order (or for an unknown job) is refused and logged: acknowledging
    /// it would count entries durable that are not.
    pub fn on_persisted(&mut self, number: u64) -> Vec<OutMsg> {
        self.propose_submitted_now();
        match self.unpersisted.front() {
            Some(u) if u.number == number => {}
            other => {
                tracing::error!(
                    shard = self.cfg.shard,
                    number,
                    expected = other.map(|u| u.number),
                    "persist completion out of order; ignored"
                );
                return Vec::new();
            }
        }
        let Some(u) = self.unpersisted.pop_front() else {
            return Vec::new();
        };
        self.raw.on_persist_ready(u.covers);
        if let Some(index) = u.snapshot
            && index > self.raw.raft.raft_log.applied
            && index <= self.raw.raft.raft_log.persisted
        {
            // raft-rs must know the snapshot is applied, or a later campaign asks for compacted entries.
            self.raw.advance_apply_to(index);
        }
        self.sync_applied();
        self.maybe_finish_rejoin();
        u.after
    }

    /// Persist jobs handed out and not yet reported durable.
    pub fn unpersisted_jobs(&self) -> usize {
        self.unpersisted.len()
    }

    /// The role entries are applied under.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether raft-rs considers this replica the leader right now.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this replica believes in.
    pub fn leader(&self) -> Option<NodeId> {
        let l = self.raw.raft.leader_id;
        (l != 0).then_some(l)
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// Highest index known committed.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Highest index applied.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Last index in the log.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// First index still in the log (after compaction).
    pub fn first_index(&self) -> u64 {
        self.raw.store().first_index().unwrap_or(1)
    }

    /// Entries proposed here and not yet resolved (applied here or reported unapplied).
    pub fn outstanding(&self) -> u64 {
        self.unresolved_proposals() as u64
    }

    /// The in-memory log raft-rs reads (tests check log matching on it).
    pub fn storage(&self) -> &GroupStorage {
        self.raw.store()
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// The dispatcher committed entries go to.
    pub fn dispatcher(&self) -> &Arc<ApplyDispatcher> {
        &self.dispatcher
    }
}

impl Core for RaftNode {
    const NAME: &'static str = "raft";

    fn new(
        cfg: RaftConfig,
        init: InitialState,
        d: Arc<ApplyDispatcher>,
        snapshots: Option<Box<dyn SnapshotHandler>>,
    ) -> Result<Self, CoreError> {
        RaftNode::new(cfg, init, d, snapshots).map_err(CoreError::from)
    }
    fn config(&self) -> &RaftConfig {
        RaftNode::config(self)
    }
    fn set_snapshot_handler(&mut self, h: Box<dyn SnapshotHandler>) {
        RaftNode::set_snapshot_handler(self, h);
    }
    fn tick(&mut self) {
        RaftNode::tick(self);
    }
    fn renew_lease(&mut self, now: u64) {
        RaftNode::renew_lease(self, now);
    }
    fn lease_basis(&self) -> Option<u64> {
        RaftNode::lease_basis(self)
    }
    fn step(&mut self, from: NodeId, payload: &Bytes) -> Result<(), CoreError> {
        RaftNode::step(self, from, payload).map_err(CoreError::from)
    }
    fn propose_submitted(&mut self, entry: Bytes) {
        RaftNode::propose_submitted(self, entry);
    }
    fn abandon_proposals(&mut self) {
        RaftNode::abandon_proposals(self);
    }
    fn tick_apply(&mut self) {
        RaftNode::tick_apply(self);
    }
    fn transfer_leader(&mut self, to: NodeId) -> Result<(), SubmitError> {
        RaftNode::transfer_leader(self, to)
    }
    fn poll(&mut self) -> Output {
        RaftNode::poll(self)
    }
    fn failure(&self) -> Option<&str> {
        RaftNode::failure(self)
    }
    fn snapshot_captured(&mut self, index: u64, term: u64, data: Option<Bytes>) {
        RaftNode::snapshot_captured(self, index, term, data);
    }
    fn on_persisted(&mut self, number: u64) -> Vec<OutMsg> {
        RaftNode::on_persisted(self, number)
    }
    fn is_leader(&self) -> bool {
        RaftNode::is_leader(self)
    }
    fn leader(&self) -> Option<NodeId> {
        RaftNode::leader(self)
    }
    fn term(&self) -> u64 {
        RaftNode::term(self)
    }
    fn commit_index(&self) -> u64 {
        RaftNode::commit_index(self)
    }
    fn applied_index(&self) -> u64 {
        RaftNode::applied_index(self)
    }
    fn resolved(&self) -> u64 {
        self.stats.resolved
    }
    fn rejoining(&self) -> bool {
        RaftNode::rejoining(self)
    }
    fn rejoining_peers(&self) -> Vec<NodeId> {
        RaftNode::rejoining_peers(self)
    }
    fn dispatcher(&self) -> &Arc<ApplyDispatcher> {
        RaftNode::dispatcher(self)
    }
}
