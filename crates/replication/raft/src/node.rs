//! `RaftNode`: one replica of one group as an I/O-free state machine fed with messages and ticks.
//!
//! The driver (the threaded [`crate::RaftWorker`], or a deterministic simulator)
//! calls [`RaftNode::tick`] every `heartbeat_interval_ms`, feeds received
//! payloads to [`RaftNode::step`], and after every input calls
//! [`RaftNode::poll`]. The [`Output`] says what to send now and what to make
//! durable; once a [`PersistJob`] is durable the driver sends its `after`
//! messages and calls [`RaftNode::on_persisted`]. Committed entries are handed
//! to the group's [`ApplyDispatcher`] inside `poll`.

use std::sync::Arc;

use bytes::Bytes;
use mako_replication::{ApplyDispatcher, NodeId, Role, SnapshotHandler, SubmitError};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot};
use raft::{RawNode, StateRole, Storage};

use crate::config::{ConfigError, RaftConfig};
use crate::storage::GroupStorage;
use crate::wire::{self, Reassembler, WireError};

/// What a replica recovered from its durable log.
#[derive(Debug, Clone, Default)]
pub struct InitialState {
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// The last snapshot taken or installed, with its data.
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot, ascending.
    pub entries: Vec<Entry>,
}

/// An encoded message for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMsg {
    /// Destination replica.
    pub to: NodeId,
    /// Encoded message (or chunk).
    pub payload: Bytes,
}

/// State to make durable before `after` may be sent and `on_persisted(number)` called.
#[derive(Debug, Default)]
pub struct PersistJob {
    /// Ready number to report back through `on_persisted`.
    pub number: u64,
    /// New entries; writing index `i` replaces any durable entries from `i` on.
    pub entries: Vec<Entry>,
    /// New term / vote / commit.
    pub hard_state: Option<HardState>,
    /// A snapshot installed from the leader or taken at compaction (with data).
    pub snapshot: Option<Snapshot>,
    /// Whether `snapshot` came from the leader (it replaces the whole log) rather than a local compaction.
    pub snapshot_installed: bool,
    /// Entries below this index are no longer needed.
    pub compact_to: Option<u64>,
    /// Messages that may only leave once this job is durable (votes, append acks).
    pub after: Vec<OutMsg>,
}

impl PersistJob {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.compact_to.is_none()
    }
}

/// What `poll` produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to send right away.
    pub messages: Vec<OutMsg>,
    /// State to persist (then send its `after` messages and call `on_persisted`).
    pub persist: Option<PersistJob>,
}

impl Output {
    /// Whether the output asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.persist.is_none()
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
    /// Undecodable payloads dropped.
    pub bad_payloads: u64,
    /// Decoded messages refused by [`crate::validate`] before reaching raft-rs.
    pub rejected_messages: u64,
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

/// How often (in ticks) the leader checks whether the preferred replica should take over.
const PREFERRED_CHECK_TICKS: u64 = 10;

impl RaftNode {
    /// Starts a replica from recovered state; entries after the snapshot are re-applied through `dispatcher`.
    pub fn new(
        cfg: RaftConfig,
        init: InitialState,
        dispatcher: Arc<ApplyDispatcher>,
        mut snapshots: Option<Box<dyn SnapshotHandler>>,
    ) -> Result<Self, NodeError> {
        cfg.validate()?;
        let snap_index = init.snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
        if let (Some(s), Some(h)) = (&init.snapshot, snapshots.as_mut()) {
            h.restore(&s.data, snap_index);
        }
        let storage = GroupStorage::new(&cfg.peers, init.hard_state, init.snapshot, &init.entries)?;
        let (min, max) = cfg.election_ticks();
        let rc = raft::Config {
            id: cfg.id,
            election_tick: min,
            heartbeat_tick: 1,
            min_election_tick: min,
            max_election_tick: max,
            max_inflight_msgs: cfg.max_inflight,
            max_size_per_msg: cfg.max_append_bytes,
            check_quorum: true,
            pre_vote: true,
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

    /// Advances logical time by one heartbeat interval.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.ticks += 1;
        if self.ticks.is_multiple_of(PREFERRED_CHECK_TICKS) {
            self.maybe_hand_to_preferred();
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
        self.step_message(msg)
    }

    /// Feeds a decoded message.
    pub fn step_message(&mut self, mut msg: Message) -> Result<(), NodeError> {
        if msg.get_msg_type() == MessageType::MsgHeartbeat {
            // A leader's view of our log can be stale (we lost our disk in `memory`
            // durability); raft-rs would abort on a commit index past our last entry.
            msg.commit = msg.commit.min(self.raw.raft.raft_log.last_index());
        }
        if let Err(why) = crate::validate::validate_for(&self.raw, &self.cfg.peers, None, &msg) {
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
        match self.raw.step(msg) {
            // Stale or foreign messages are routine in Raft; they are not errors of the node.
            Ok(()) | Err(raft::Error::StepPeerNotFound) | Err(raft::Error::StepLocalMsg) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Proposes an entry; fails fast with `NotLeader` on a follower.
    pub fn propose(&mut self, entry: Bytes) -> Result<(), SubmitError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(SubmitError::NotLeader {
                hint: self.leader(),
            });
        }
        if entry.len() as u64 > self.cfg.max_append_bytes.max(64 << 20) {
            return Err(SubmitError::TooLarge(entry.len()));
        }
        match self.raw.propose(vec![], entry.to_vec()) {
            Ok(()) => {
                self.stats.proposed += 1;
                Ok(())
            }
            Err(_) => Err(SubmitError::NotLeader {
                hint: self.leader(),
            }),
        }
    }

    /// Asks leadership to move to `to`.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), SubmitError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(SubmitError::NotLeader {
                hint: self.leader(),
            });
        }
        if to != self.cfg.id {
            self.raw.transfer_leader(to);
        }
        Ok(())
    }

    /// Starts an election now (tests and manual failover).
    pub fn campaign(&mut self) -> Result<(), NodeError> {
        Ok(self.raw.campaign()?)
    }

    fn maybe_hand_to_preferred(&mut self) {
        let Some(p) = self.cfg.preferred else { return };
        if p == self.cfg.id || self.raw.raft.state != StateRole::Leader {
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
            self.raw.transfer_leader(p);
        }
    }

    fn encode(&mut self, msgs: Vec<Message>, out: &mut Vec<OutMsg>) {
        for m in msgs {
            let to = m.to;
            self.chunk_stream += 1;
            for payload in wire::encode(&m, self.cfg.snapshot_chunk_bytes, self.chunk_stream) {
                out.push(OutMsg { to, payload });
            }
        }
    }

    /// Collects what the last inputs produced: messages, state to persist, applied entries.
    pub fn poll(&mut self) -> Output {
        let mut out = Output::default();
        if !self.raw.has_ready() {
            return out;
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            let role = if ss.raft_state == StateRole::Leader {
                Role::Leader
            } else {
                Role::Follower
            };
            let leader = (ss.leader_id != 0).then_some(ss.leader_id);
            if role != self.role {
                self.role = role;
            }
            self.dispatcher.set_role(role, self.raw.raft.term, leader);
        }
        let now = rd.take_messages();
        self.encode(now, &mut out.messages);
        let mut job = PersistJob {
            number: rd.number(),
            ..PersistJob::default()
        };
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            let index = snap.get_metadata().index;
            if let Err(e) = self.raw.mut_store().mem().wl().apply_snapshot(snap.clone()) {
                tracing::error!(shard = self.cfg.shard, "installing snapshot: {e}");
            } else {
                if let Some(h) = self.snapshots.as_mut() {
                    h.restore(&snap.data, index);
                }
                self.raw.store().set_last_snapshot(snap.clone());
                self.applied = index;
                self.stats.snapshots_installed += 1;
                job.snapshot = Some(snap);
                job.snapshot_installed = true;
            }
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
        self.apply(committed);
        let after = rd.take_persisted_messages();
        self.encode(after, &mut job.after);
        self.raw.advance_append_async(rd);
        self.maybe_compact(&mut job);
        if job.is_empty() {
            self.raw.on_persist_ready(job.number);
            out.messages.append(&mut job.after);
        } else {
            out.persist = Some(job);
        }
        out
    }

    fn apply(&mut self, committed: Vec<Entry>) {
        let mut last = None;
        for e in committed {
            last = Some(e.index);
            if e.index <= self.applied {
                continue;
            }
            self.applied = e.index;
            // Empty entries are the new leader's own term marker; config changes are not used.
            if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                continue;
            }
            let data = Bytes::from(e.data.to_vec());
            self.dispatcher.apply(e.index, &data);
            self.stats.applied_entries += 1;
        }
        if let Some(i) = last {
            self.raw.advance_apply_to(i);
        }
    }

    fn maybe_compact(&mut self, job: &mut PersistJob) {
        let Ok(first) = self.raw.store().first_index() else {
            return;
        };
        if self.applied < first || self.applied - first < self.cfg.compact_after_entries {
            return;
        }
        let mut target = self.applied;
        if self.raw.raft.state == StateRole::Leader {
            // Keep what live followers still need; a dead one will get the snapshot.
            for (id, pr) in self.raw.raft.prs().iter() {
                if *id != self.cfg.id && pr.recent_active {
                    target = target.min(pr.matched);
                }
            }
        }
        if target <= first || job.snapshot_installed {
            return;
        }
        let Ok(term) = self.raw.store().term(self.applied) else {
            return;
        };
        let mut snap = Snapshot {
            data: self
                .snapshots
                .as_mut()
                .map(|h| h.snapshot().to_vec())
                .unwrap_or_default()
                .into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = self.applied;
        meta.term = term;
        meta.set_conf_state(ConfState::from((self.cfg.peers.clone(), vec![])));
        self.raw.store().set_last_snapshot(snap.clone());
        if let Err(e) = self.raw.mut_store().mem().wl().compact(target) {
            tracing::error!(shard = self.cfg.shard, "compacting: {e}");
            return;
        }
        self.stats.compactions += 1;
        job.snapshot = Some(snap);
        job.compact_to = Some(target);
    }

    /// Reports that the persist job numbered `number` (and all before it) is durable.
    pub fn on_persisted(&mut self, number: u64) {
        self.raw.on_persist_ready(number);
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

    /// Proposed here and not yet committed (leader only; 0 elsewhere).
    pub fn outstanding(&self) -> u64 {
        if self.is_leader() {
            self.last_index().saturating_sub(self.commit_index())
        } else {
            0
        }
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
