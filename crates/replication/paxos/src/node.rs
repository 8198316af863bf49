//! `PaxosNode`: one replica of one Multi-Paxos group as an I/O-free state machine (the
//! protocol is described in the crate docs).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use mako_group::chunk::{Reassembler, WireError};
use mako_group::{
    AppliedBytes, CaptureRequest, ConfigError, GroupConfig, HardState, InitialState, LogEntry,
    OutMsg, Output, PersistJob, Snapshot,
};
use mako_replication::{
    ApplyDispatcher, DropReason, NodeId, Resolution, Role, SnapshotHandler, SubmitError, Unapplied,
};

use crate::lease::LeaseState;
use crate::wire::{self, DecodeError, MAX_SLOT, Msg};

/// Why the node could not start or refused an input.
#[derive(Debug, thiserror::Error)]
pub enum PaxosError {
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The group has more replicas than a ballot can name.
    #[error("a Paxos group holds at most 65536 replicas, not {0}")]
    TooManyPeers(usize),
    /// A payload's chunk framing is bad.
    #[error(transparent)]
    Chunk(#[from] WireError),
    /// A message body did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A well-formed message that cannot come from a correct peer.
    #[error("message from {from} refused: {why}")]
    Invalid {
        /// The sender.
        from: NodeId,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The recovered log starts from a snapshot, but no handler was given to restore it.
    #[error("the log starts from snapshot {0}: a SnapshotHandler is needed to restore it")]
    NoSnapshotHandler(u64),
    /// The application refused the recovered snapshot.
    #[error("the application refused recovered snapshot {index}: {reason}")]
    SnapshotRefused {
        /// The snapshot's index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// The recovered entries are not contiguous after the snapshot.
    #[error("recovered entries are not contiguous from index {0}")]
    Gap(u64),
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
    /// A leadership transfer is under way.
    #[error("proposal refused during a leadership transfer")]
    Refused,
}

/// Counters a node keeps.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PaxosStats {
    /// Entries proposed here.
    pub proposed: u64,
    /// Committed entries handed to the dispatcher.
    pub applied_entries: u64,
    /// Entries proposed here that are resolved (applied here as ours, or reported unapplied).
    pub resolved: u64,
    /// Pre-prepare rounds started here (an election timeout ran out, or `campaign`).
    pub pre_rounds: u64,
    /// Pre-prepares answered here without a grant (or with `Rejected`).
    pub pre_refused: u64,
    /// Phase 1 runs started here (after a majority granted a pre-prepare, or a transfer).
    pub campaigns: u64,
    /// Phase 1 runs won here.
    pub elections_won: u64,
    /// Promises made.
    pub promises: u64,
    /// Prepares ignored because a live leader was heard from (stable-leader rule), after a
    /// restart or a step-down, or while rejoining.
    pub prepares_withheld: u64,
    /// Accept messages sent.
    pub accepts_sent: u64,
    /// Payloads refused (bad framing, bad body, invalid for the local state).
    pub bad_payloads: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Snapshots from a leader refused by the application's integrity check.
    pub snapshots_refused: u64,
    /// Snapshots sent.
    pub snapshots_sent: u64,
    /// Local compactions.
    pub compactions: u64,
    /// Finished captures dropped as stale (a newer snapshot was installed meanwhile).
    pub captures_dropped: u64,
    /// Times applying paused (pending queue full or no callback).
    pub apply_pauses: u64,
    /// Leader lease rounds started.
    pub lease_rounds: u64,
    /// Leader lease rounds a majority acknowledged.
    pub lease_acks: u64,
    /// Times this node stepped down as leader.
    pub step_downs: u64,
}

/// Where a replica is in rejoining after losing its state (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejoin {
    Voter,
    CatchingUp {
        target: Option<u64>,
        target_ballot: u64,
    },
}

/// A follower as the leader sees it.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Next slot to send.
    next: u64,
    /// Highest slot known to hold this leader's value (or be committed) there.
    matched: u64,
    /// Accepts in flight: (last slot, tick sent).
    inflight: VecDeque<(u64, u64)>,
    /// Tick of the last answer under this ballot.
    heard: Option<u64>,
    /// Highest lease round echoed.
    lease: u64,
    /// Tick a snapshot was sent, while unanswered.
    snapshot_sent: Option<u64>,
}

#[derive(Debug)]
struct Leader {
    progress: BTreeMap<NodeId, Progress>,
    /// Tick it became leader.
    since: u64,
    /// Last slot recovered in Phase 1: the lease waits until it is committed.
    takeover_last: u64,
}

/// A replica asking, before it raises its ballot, whether a majority would promise it.
#[derive(Debug)]
struct PreCandidate {
    /// The ballot it would run Phase 1 under.
    ballot: u64,
    /// Acceptors that would promise it now (this replica included).
    grants: BTreeSet<NodeId>,
}

#[derive(Debug)]
struct Candidate {
    ballot: u64,
    from: u64,
    /// Promises: acceptor → (its commit, its slots after `from`).
    promises: BTreeMap<NodeId, (u64, Vec<LogEntry>)>,
    /// Acceptors that answered Behind.
    behind: BTreeSet<NodeId>,
}

#[derive(Debug)]
enum State {
    Follower,
    PreCandidate(PreCandidate),
    Candidate(Candidate),
    Leader(Leader),
}

#[derive(Debug)]
struct Transfer {
    to: NodeId,
    started: u64,
    sent: bool,
}

/// A persist job handed out and not yet reported durable.
#[derive(Debug)]
struct Unpersisted {
    number: u64,
    /// First slot the job writes (or the slot after an installed snapshot).
    first_written: Option<u64>,
    /// Last slot of the log when the job was made (if it writes entries or a snapshot).
    last_written: Option<u64>,
    /// The promised ballot it writes.
    promised: Option<u64>,
    /// An installed snapshot's index.
    install: Option<u64>,
    /// Messages released once it is durable.
    after: Vec<OutMsg>,
}

/// One replica of one Multi-Paxos group.
pub struct PaxosNode {
    cfg: GroupConfig,
    me: usize,
    majority: usize,
    dispatcher: Arc<ApplyDispatcher>,
    snapshots: Option<Box<dyn SnapshotHandler>>,
    reassembler: Reassembler,

    // Acceptor state (mirrors what is durable, or will be once the jobs complete).
    promised: u64,
    commit: u64,
    /// Slots `first ..= last`.
    log: VecDeque<LogEntry>,
    first: u64,
    /// The latest snapshot (taken or installed), with its data.
    snap: Option<Snapshot>,

    state: State,
    leader: Option<NodeId>,
    ticks: u64,
    elapsed: u64,
    timeout: u64,
    rng: u64,
    /// Tick of the last accept (or snapshot) taken from a leader.
    contact: Option<u64>,
    /// Until this tick no prepare is promised (restart, step-down).
    barred_until: u64,
    /// Highest ballot seen anywhere.
    highest_seen: u64,
    /// Slots `commit+1 ..= run_end` hold values accepted under `run_ballot`.
    run_end: u64,
    run_ballot: u64,
    applied: u64,
    /// Slots up to here are durable as they are in memory.
    durable: u64,
    /// The promise known durable.
    durable_promised: u64,

    next_job: u64,
    dirty_from: Option<u64>,
    hs_dirty: bool,
    new_snapshot: Option<(Snapshot, bool)>,
    new_compact: Option<u64>,
    /// A capture began and not yet reported back: its index and ballot (no other begins).
    capturing: Option<(u64, u64)>,
    /// A capture begun, for the next `poll`'s output.
    capture_out: Option<CaptureRequest>,
    /// A captured snapshot waiting for the next `poll` to compact the log behind it.
    captured: Option<Snapshot>,
    /// Index of the last capture dropped as stale.
    dropped_at: Option<u64>,
    /// Entry bytes applied here, for the compaction rule.
    applied_bytes: AppliedBytes,
    out: Vec<OutMsg>,
    after: Vec<OutMsg>,
    unpersisted: VecDeque<Unpersisted>,

    proposals: BTreeMap<u64, Vec<Bytes>>,
    stats: PaxosStats,
    failure: Option<String>,
    rejoin: Rejoin,
    promise_floor: u64,
    rejoining_peers: BTreeSet<NodeId>,
    lease: LeaseState,
    transfer: Option<Transfer>,
    /// A ballot under which this node sent `TimeoutNow` (no lease in it), and when.
    timeout_now: Option<(u64, u64)>,
}

impl std::fmt::Debug for PaxosNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaxosNode")
            .field("id", &self.cfg.id)
            .field("shard", &self.cfg.shard)
            .field("promised", &self.promised)
            .field("leader", &self.is_leader())
            .field("commit", &self.commit)
            .field("applied", &self.applied)
            .field("last", &self.last_index())
            .finish()
    }
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl PaxosNode {
    /// Starts a replica from recovered state; committed entries after the snapshot are
    /// re-applied through `dispatcher`.
    pub fn new(
        cfg: GroupConfig,
        init: InitialState,
        dispatcher: Arc<ApplyDispatcher>,
        mut snapshots: Option<Box<dyn SnapshotHandler>>,
    ) -> Result<Self, PaxosError> {
        cfg.validate()?;
        if cfg.peers.len() > 1 << wire::PROPOSER_BITS {
            return Err(PaxosError::TooManyPeers(cfg.peers.len()));
        }
        let me = cfg.peers.iter().position(|&p| p == cfg.id).unwrap_or(0);
        let snap_index = init.snapshot.as_ref().map_or(0, |s| s.index);
        if let Some(s) = &init.snapshot {
            let Some(h) = snapshots.as_mut() else {
                return Err(PaxosError::NoSnapshotHandler(snap_index));
            };
            let pending = h
                .restore(&s.data, s.index)
                .map_err(|e| PaxosError::SnapshotRefused {
                    index: s.index,
                    reason: e.to_string(),
                })?;
            dispatcher.restore_pending(pending);
        }
        let first = snap_index + 1;
        let mut log = VecDeque::with_capacity(init.entries.len());
        for e in init.entries.into_iter().filter(|e| e.index > snap_index) {
            if e.index != first + log.len() as u64 {
                return Err(PaxosError::Gap(first + log.len() as u64));
            }
            log.push_back(e);
        }
        let last = snap_index + log.len() as u64;
        let hs = init.hard_state;
        // Taking an accept promises its ballot. The host may split a large persist job into
        // several log writes, the hard state last: a crash between them leaves slots accepted
        // under a ballot above the durable promise. Such a replica must not promise a lower
        // ballot again, so its promise is at least every ballot its log was accepted under.
        let promised = log
            .iter()
            .map(|e| e.term)
            .chain(init.snapshot.as_ref().map(|s| s.term))
            .fold(hs.term, u64::max);
        let commit = hs.commit.max(snap_index).min(last);
        let rejoin = if cfg.rejoin && cfg.peers.len() > 1 {
            tracing::info!(
                shard = cfg.shard,
                id = cfg.id,
                "rejoining: no campaign and no promise until caught up with the leader"
            );
            Rejoin::CatchingUp {
                target: None,
                target_ballot: 0,
            }
        } else {
            Rejoin::Voter
        };
        let (min, _) = cfg.election_ticks();
        let majority = cfg.peers.len() / 2 + 1;
        let mut rng = cfg.id ^ ((cfg.shard as u64) << 32) ^ promised.rotate_left(17);
        splitmix(&mut rng);
        let mut node = PaxosNode {
            me,
            majority,
            dispatcher,
            snapshots,
            reassembler: Reassembler::default(),
            promised,
            commit,
            log,
            first,
            snap: init.snapshot,
            state: State::Follower,
            leader: None,
            ticks: 0,
            elapsed: 0,
            timeout: min as u64,
            rng,
            contact: None,
            // A replica restarted from a promise may have acknowledged a lease it forgot.
            barred_until: if promised > 0 { min as u64 } else { 0 },
            highest_seen: promised,
            run_end: commit,
            run_ballot: promised,
            applied: snap_index,
            durable: last,
            durable_promised: promised,
            next_job: 1,
            dirty_from: None,
            // A promise raised from the log is written back.
            hs_dirty: promised > hs.term,
            new_snapshot: None,
            new_compact: None,
            capturing: None,
            capture_out: None,
            captured: None,
            dropped_at: None,
            applied_bytes: AppliedBytes::default(),
            out: Vec::new(),
            after: Vec::new(),
            unpersisted: VecDeque::new(),
            proposals: BTreeMap::new(),
            stats: PaxosStats::default(),
            failure: None,
            rejoin,
            promise_floor: 0,
            rejoining_peers: BTreeSet::new(),
            lease: LeaseState::default(),
            transfer: None,
            timeout_now: None,
            cfg,
        };
        node.reset_timeout();
        node.extend_run();
        Ok(node)
    }

    /// Fixes the seed of the election-timeout jitter (deterministic simulations).
    pub fn set_election_seed(&mut self, seed: u64) {
        self.rng = seed;
        self.reset_timeout();
    }

    /// The node's configuration.
    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    /// Installs the snapshot handler.
    pub fn set_snapshot_handler(&mut self, h: Box<dyn SnapshotHandler>) {
        self.snapshots = Some(h);
    }

    // ---- the log ----

    /// Last slot in the log.
    pub fn last_index(&self) -> u64 {
        self.first + self.log.len() as u64 - 1
    }

    /// First slot still in the log (after compaction).
    pub fn first_index(&self) -> u64 {
        self.first
    }

    /// The entry at `slot`, if the log holds it.
    pub fn entry(&self, slot: u64) -> Option<&LogEntry> {
        if slot < self.first {
            return None;
        }
        self.log.get((slot - self.first) as usize)
    }

    /// Ballot of the value at `slot` (the snapshot's at its index, 0 at 0).
    fn term_at(&self, slot: u64) -> Option<u64> {
        if let Some(e) = self.entry(slot) {
            return Some(e.term);
        }
        match &self.snap {
            Some(s) if s.index == slot => Some(s.term),
            None if slot == 0 => Some(0),
            _ => None,
        }
    }

    /// Writes `e` at its slot (at most one past the end): replaces that slot only.
    fn put(&mut self, e: LogEntry) {
        let slot = e.index;
        debug_assert!(slot >= self.first && slot <= self.last_index() + 1);
        self.mark_dirty(slot);
        let at = (slot - self.first) as usize;
        if at < self.log.len() {
            self.log[at] = e;
        } else {
            self.log.push_back(e);
        }
    }

    fn mark_dirty(&mut self, slot: u64) {
        self.dirty_from = Some(self.dirty_from.map_or(slot, |d| d.min(slot)));
        self.durable = self.durable.min(slot.saturating_sub(1));
    }

    /// Extends the run of slots after `commit` holding values of the promised ballot.
    fn extend_run(&mut self) {
        if self.run_ballot != self.promised {
            self.run_ballot = self.promised;
            self.run_end = self.commit;
        }
        self.run_end = self.run_end.max(self.commit);
        let last = self.last_index();
        while self.run_end < last && self.term_at(self.run_end + 1) == Some(self.promised) {
            self.run_end += 1;
        }
    }

    fn hard_state(&self) -> HardState {
        let vote = if self.promised == 0 {
            0
        } else {
            self.cfg
                .peers
                .get(wire::proposer_of(self.promised))
                .copied()
                .unwrap_or(0)
        };
        HardState {
            term: self.promised,
            vote,
            commit: self.commit,
        }
    }

    fn set_commit(&mut self, c: u64) {
        let c = c.min(self.last_index());
        if c > self.commit {
            self.commit = c;
            self.hs_dirty = true;
            self.extend_run();
        }
    }

    fn promise(&mut self, ballot: u64) {
        if ballot > self.promised {
            self.promised = ballot;
            self.hs_dirty = true;
            self.extend_run();
        }
        self.highest_seen = self.highest_seen.max(ballot);
    }

    // ---- timing ----

    fn election_ticks(&self) -> u64 {
        self.cfg.election_ticks().0 as u64
    }

    fn reset_timeout(&mut self) {
        let (min, max) = self.cfg.election_ticks();
        let span = (max - min).max(1) as u64;
        self.timeout = min as u64 + splitmix(&mut self.rng) % span;
        self.elapsed = 0;
    }

    /// Whether a snapshot from a leader is installed in memory but not yet durable.
    fn installing_snapshot(&self) -> bool {
        self.unpersisted.iter().any(|u| u.install.is_some())
            || self
                .new_snapshot
                .as_ref()
                .is_some_and(|(_, installed)| *installed)
    }

    /// Advances logical time by one heartbeat interval.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.reassembler.tick();
        if self.failure.is_some() {
            return;
        }
        if matches!(self.state, State::Leader(_)) {
            self.tick_leader();
        } else if !(self.rejoining() || self.installing_snapshot()) {
            self.elapsed += 1;
            if self.elapsed >= self.timeout {
                self.pre_campaign();
            }
        }
        self.apply();
    }

    fn tick_leader(&mut self) {
        let e = self.election_ticks();
        let now = self.ticks;
        let ballot = self.promised;
        // Check-quorum: a leader that has not heard from a majority within an election
        // timeout steps down.
        let State::Leader(l) = &self.state else {
            return;
        };
        let heard = 1 + l
            .progress
            .values()
            .filter(|p| p.heard.is_some_and(|h| now.saturating_sub(h) < e))
            .count();
        if heard < self.majority && now.saturating_sub(l.since) >= e {
            tracing::info!(
                shard = self.cfg.shard,
                id = self.cfg.id,
                "no majority heard: stepping down"
            );
            self.step_down();
            return;
        }
        // A transfer that did not happen within an election timeout is given up; a leader
        // that sent TimeoutNow under this ballot holds no lease in it, so it steps down.
        if let Some(t) = &self.transfer
            && now.saturating_sub(t.started) >= e
        {
            self.transfer = None;
        }
        if let Some((b, at)) = self.timeout_now
            && b == ballot
            && now.saturating_sub(at) >= e
        {
            self.step_down();
            return;
        }
        self.maybe_hand_to_preferred();
        // Heartbeats (carrying the commit index and the lease round), retransmission of
        // accepts whose answers did not come, expiry of unanswered snapshots.
        let retransmit = (e / 4).max(2);
        let snapshot_expiry = 2 * self.cfg.election_ticks().1 as u64;
        let mut beats = Vec::new();
        if let State::Leader(l) = &mut self.state {
            for (&to, p) in l.progress.iter_mut() {
                // An unanswered snapshot is sent again after a while (it may have been
                // lost); meanwhile the follower still gets heartbeats.
                if p.snapshot_sent
                    .is_some_and(|sent| now.saturating_sub(sent) > snapshot_expiry)
                {
                    p.snapshot_sent = None;
                }
                if p.inflight
                    .front()
                    .is_some_and(|&(_, t)| now.saturating_sub(t) >= retransmit)
                {
                    p.inflight.clear();
                    p.next = p.matched + 1;
                }
                beats.push((to, p.matched + 1));
            }
        }
        for (to, first) in beats {
            self.send_accept(to, first, Vec::new());
        }
    }

    fn send_accept(&mut self, to: NodeId, first: u64, values: Vec<Bytes>) {
        self.stats.accepts_sent += 1;
        let m = Msg::Accept {
            ballot: self.promised,
            first,
            commit: self.commit,
            lease: self.lease.seq(),
            values,
        };
        self.send(to, &m, false);
    }

    fn send(&mut self, to: NodeId, m: &Msg, held: bool) {
        if to == self.cfg.id {
            return;
        }
        let chunk = match m {
            Msg::Promise { .. } | Msg::Snapshot { .. } => self.cfg.snapshot_chunk_bytes,
            _ => usize::MAX,
        };
        let dst = if held { &mut self.after } else { &mut self.out };
        for payload in wire::encode(m, chunk) {
            dst.push(OutMsg { to, payload });
        }
    }

    // ---- roles ----

    fn step_down(&mut self) {
        if matches!(self.state, State::Leader(_)) {
            self.stats.step_downs += 1;
            // It may have acknowledged its own lease: no promise for an election timeout.
            self.barred_until = self.ticks + self.election_ticks();
            self.leader = None;
        }
        self.lease.drop_lease();
        self.transfer = None;
        self.state = State::Follower;
        self.reset_timeout();
        self.dispatcher
            .set_role(Role::Follower, self.promised, self.leader);
    }

    /// Follows the proposer of `ballot` (an accept or snapshot of it was taken).
    fn follow(&mut self, from: NodeId) {
        let was_leader = matches!(self.state, State::Leader(_));
        if !matches!(self.state, State::Follower) {
            self.step_down();
        }
        if self.leader != Some(from) {
            self.leader = Some(from);
            if !was_leader {
                self.dispatcher
                    .set_role(Role::Follower, self.promised, self.leader);
            }
        }
        self.contact = Some(self.ticks);
        self.elapsed = 0;
    }

    /// Starts an election now, as an election timeout does (tests and manual failover): the
    /// pre-prepare round, then Phase 1 if a majority grants it. Refused (`false`) while
    /// rejoining or while a snapshot install is being made durable.
    pub fn campaign(&mut self) -> bool {
        self.pre_campaign()
    }

    fn may_campaign(&self) -> bool {
        !(self.rejoining() || self.installing_snapshot() || self.failure.is_some())
    }

    /// The ballot of this replica's next Phase 1: the next round above every ballot seen.
    fn next_ballot(&self) -> Option<u64> {
        let round = wire::round_of(self.highest_seen.max(self.promised)) + 1;
        let ballot = wire::ballot(round, self.me);
        if ballot > wire::MAX_BALLOT {
            tracing::error!(shard = self.cfg.shard, "ballot space exhausted");
            return None;
        }
        Some(ballot)
    }

    /// Starts the pre-prepare round: asks every acceptor whether it would promise the next
    /// ballot now, changing nothing here but the role and the timer (no promise: a replica
    /// that never hears a majority never raises its ballot).
    fn pre_campaign(&mut self) -> bool {
        if !self.may_campaign() {
            return false;
        }
        if matches!(self.state, State::Leader(_)) {
            self.step_down();
        }
        let Some(ballot) = self.next_ballot() else {
            // Logged once per election timeout, not at every tick.
            self.reset_timeout();
            return false;
        };
        self.stats.pre_rounds += 1;
        self.reset_timeout();
        if self.leader.take().is_some() {
            self.dispatcher
                .set_role(Role::Follower, self.promised, None);
        }
        let from = self.commit;
        tracing::debug!(
            shard = self.cfg.shard,
            id = self.cfg.id,
            ballot,
            from,
            "pre-prepare"
        );
        self.state = State::PreCandidate(PreCandidate {
            ballot,
            grants: BTreeSet::from([self.cfg.id]),
        });
        let m = Msg::PrePrepare { ballot, from };
        for to in self.cfg.peers.clone() {
            // Nothing to make durable first.
            self.send(to, &m, false);
        }
        self.maybe_pre_win();
        true
    }

    /// Runs Phase 1 once a majority granted the pre-prepare.
    fn maybe_pre_win(&mut self) {
        let State::PreCandidate(p) = &self.state else {
            return;
        };
        if p.grants.len() < self.majority {
            return;
        }
        self.state = State::Follower;
        self.campaign_inner(false);
    }

    /// Phase 1 under the next ballot (after a granted pre-prepare round, or at once for a
    /// transfer).
    fn campaign_inner(&mut self, transfer: bool) -> bool {
        if !self.may_campaign() {
            return false;
        }
        if matches!(self.state, State::Leader(_)) {
            self.step_down();
        }
        let Some(ballot) = self.next_ballot() else {
            return false;
        };
        self.stats.campaigns += 1;
        self.promise(ballot);
        self.leader = None;
        self.reset_timeout();
        let from = self.commit;
        let own: Vec<LogEntry> = ((from + 1)..=self.last_index())
            .filter_map(|s| self.entry(s).cloned())
            .collect();
        let mut promises = BTreeMap::new();
        promises.insert(self.cfg.id, (self.commit, own));
        self.state = State::Candidate(Candidate {
            ballot,
            from,
            promises,
            behind: BTreeSet::new(),
        });
        tracing::debug!(
            shard = self.cfg.shard,
            id = self.cfg.id,
            ballot,
            from,
            "phase 1"
        );
        let m = Msg::Prepare {
            ballot,
            from,
            transfer,
        };
        for to in self.cfg.peers.clone() {
            // Held back until the promise to ourselves is durable.
            self.send(to, &m, true);
        }
        self.maybe_win();
        true
    }

    /// Becomes leader once a majority promised (our own promise durable).
    fn maybe_win(&mut self) {
        let State::Candidate(c) = &self.state else {
            return;
        };
        if c.promises.len() < self.majority || self.durable_promised < c.ballot {
            return;
        }
        let State::Candidate(c) = std::mem::replace(&mut self.state, State::Follower) else {
            return;
        };
        let ballot = c.ballot;
        let from = c.from.max(self.commit);
        let max_last = c
            .promises
            .values()
            .map(|(_, es)| c.from + es.len() as u64)
            .max()
            .unwrap_or(from)
            .max(self.last_index());
        // For every slot after `from`: the value accepted under the highest ballot among
        // the promises, or a no-op where none holds one. All restamped with our ballot.
        for slot in (from + 1)..=max_last {
            let k = (slot - c.from - 1) as usize;
            let best = c
                .promises
                .values()
                .filter_map(|(_, es)| es.get(k))
                .max_by_key(|e| e.term);
            let payload = best.map(|e| e.payload.clone()).unwrap_or_default();
            self.put(LogEntry {
                index: slot,
                term: ballot,
                payload,
            });
        }
        self.extend_run();
        let mut progress = BTreeMap::new();
        for &p in self.cfg.peers.iter().filter(|&&p| p != self.cfg.id) {
            let pr = match c.promises.get(&p) {
                Some((commit, _)) => Progress {
                    next: commit + 1,
                    matched: *commit,
                    heard: Some(self.ticks),
                    ..Progress::default()
                },
                None => Progress {
                    next: max_last + 1,
                    ..Progress::default()
                },
            };
            progress.insert(p, pr);
        }
        self.state = State::Leader(Leader {
            progress,
            since: self.ticks,
            takeover_last: max_last,
        });
        self.leader = Some(self.cfg.id);
        self.transfer = None;
        self.stats.elections_won += 1;
        self.lease.enter(ballot);
        tracing::info!(
            shard = self.cfg.shard,
            id = self.cfg.id,
            ballot,
            from,
            max_last,
            "leading"
        );
        self.dispatcher
            .set_role(Role::Leader, ballot, Some(self.cfg.id));
        self.maybe_commit();
    }

    // ---- input ----

    /// Feeds a payload received from `from`; a malformed or invalid one is refused with an
    /// error and changes nothing.
    pub fn step(&mut self, from: NodeId, payload: &Bytes) -> Result<(), PaxosError> {
        let r = self.step_inner(from, payload);
        if r.is_err() {
            self.stats.bad_payloads += 1;
        }
        r
    }

    fn step_inner(&mut self, from: NodeId, payload: &Bytes) -> Result<(), PaxosError> {
        if from == self.cfg.id || !self.cfg.peers.contains(&from) {
            return Err(PaxosError::Invalid {
                from,
                why: "sender is not another member of the group",
            });
        }
        let Some(body) = self.reassembler.push(from, payload)? else {
            return Ok(());
        };
        let m = wire::decode(&body)?;
        self.validate(from, &m)?;
        if self.failure.is_some() {
            return Ok(());
        }
        // A pre-prepare round's ballot is nobody's yet: seeing it changes nothing.
        if !matches!(m, Msg::PrePrepare { .. } | Msg::PrePromise { .. }) {
            self.highest_seen = self.highest_seen.max(m.ballot());
        }
        match m {
            Msg::Prepare {
                ballot,
                from: f,
                transfer,
            } => self.on_prepare(from, ballot, f, transfer),
            Msg::Promise {
                ballot,
                commit,
                from: pfrom,
                entries,
            } => self.on_promise(from, ballot, commit, pfrom, entries),
            Msg::Behind { ballot, .. } => self.on_behind(from, ballot),
            Msg::Rejected { ballot, promised } => self.on_rejected(ballot, promised),
            Msg::Accept {
                ballot,
                first,
                commit,
                lease,
                values,
            } => self.on_accept(from, ballot, first, commit, lease, values),
            Msg::Accepted {
                ballot,
                end,
                matched,
                last,
                lease,
                gap,
                rejoining,
            } => self.on_accepted(from, ballot, end, matched, last, lease, gap, rejoining),
            Msg::TimeoutNow { ballot, commit } => self.on_timeout_now(from, ballot, commit),
            Msg::Snapshot {
                ballot,
                index,
                term,
                data,
            } => self.on_snapshot(from, ballot, index, term, data),
            Msg::PrePrepare { ballot, from: f } => self.on_pre_prepare(from, ballot, f),
            Msg::PrePromise { ballot, granted } => self.on_pre_promise(from, ballot, granted),
        }
        Ok(())
    }

    /// What needs the local state: the ballot's proposer is a member, requests come from
    /// their ballot's proposer, answers are about a ballot of ours.
    fn validate(&self, from: NodeId, m: &Msg) -> Result<(), PaxosError> {
        let bad = |why| Err(PaxosError::Invalid { from, why });
        let proposer = |b: u64| self.cfg.peers.get(wire::proposer_of(b)).copied();
        let b = m.ballot();
        let Some(p) = proposer(b) else {
            return bad("ballot names a proposer outside the group");
        };
        if m.is_request() && p != from {
            return bad("request under a ballot that is not the sender's");
        }
        if !m.is_request() && p != self.cfg.id {
            return bad("answer about a ballot that is not ours");
        }
        match m {
            Msg::Rejected { promised, .. } if proposer(*promised).is_none() => {
                bad("promised ballot names a proposer outside the group")
            }
            Msg::Accept { values, .. }
                if values.iter().any(|v| v.len() > self.cfg.max_entry_bytes) =>
            {
                bad("value larger than max_entry_bytes")
            }
            _ => Ok(()),
        }
    }

    fn prepare_withheld(&self, transfer: bool) -> bool {
        if self.rejoining() {
            return true;
        }
        if transfer {
            return false;
        }
        if matches!(self.state, State::Leader(_)) || self.ticks < self.barred_until {
            return true;
        }
        self.leader.is_some()
            && self
                .contact
                .is_some_and(|t| self.ticks.saturating_sub(t) < self.election_ticks())
    }

    fn on_prepare(&mut self, from: NodeId, ballot: u64, cfrom: u64, transfer: bool) {
        if ballot < self.promised
            || (ballot == self.promised && self.leader_of(ballot) != Some(from))
        {
            let m = Msg::Rejected {
                ballot,
                promised: self.promised,
            };
            self.send(from, &m, false);
            return;
        }
        if ballot == self.promised {
            // A duplicate of a prepare already promised (or of a leader already followed):
            // the same answer again.
            if self.commit <= cfrom
                && !self.promise_too_long(cfrom)
                && matches!(self.state, State::Follower | State::PreCandidate(_))
            {
                self.send_promise(from, ballot, cfrom);
            }
            return;
        }
        if self.prepare_withheld(transfer) || ballot <= self.promise_floor {
            self.stats.prepares_withheld += 1;
            return;
        }
        if self.commit > cfrom {
            let m = Msg::Behind {
                ballot,
                commit: self.commit,
            };
            self.send(from, &m, false);
            return;
        }
        if self.promise_too_long(cfrom) {
            self.stats.prepares_withheld += 1;
            tracing::warn!(
                shard = self.cfg.shard,
                id = self.cfg.id,
                ballot,
                from = cfrom,
                last = self.last_index(),
                "prepare withheld: more slots after its `from` than a promise carries"
            );
            return;
        }
        // Promise: durable before the answer leaves.
        if !matches!(self.state, State::Follower) {
            self.step_down();
        }
        self.promise(ballot);
        if self.leader.take().is_some() {
            self.dispatcher.set_role(Role::Follower, ballot, None);
        }
        self.stats.promises += 1;
        self.elapsed = 0;
        self.send_promise(from, ballot, cfrom);
    }

    /// Answers a pre-prepare with whether `on_prepare` would promise its ballot now, and
    /// changes nothing (no promise, nothing durable, no timer reset, no leader forgotten).
    fn on_pre_prepare(&mut self, from: NodeId, ballot: u64, cfrom: u64) {
        if ballot <= self.promised {
            // The sender learns the ballot to outbid (it never proposes at or below it).
            self.stats.pre_refused += 1;
            let m = Msg::Rejected {
                ballot,
                promised: self.promised,
            };
            self.send(from, &m, false);
            return;
        }
        let granted = !self.prepare_withheld(false)
            && ballot > self.promise_floor
            && self.commit <= cfrom
            && !self.promise_too_long(cfrom);
        if !granted {
            self.stats.pre_refused += 1;
        }
        self.send(from, &Msg::PrePromise { ballot, granted }, false);
    }

    fn on_pre_promise(&mut self, from: NodeId, ballot: u64, granted: bool) {
        let State::PreCandidate(p) = &mut self.state else {
            return;
        };
        if p.ballot != ballot || !granted {
            return;
        }
        p.grants.insert(from);
        self.maybe_pre_win();
    }

    /// Whether a promise to a candidate whose commit is `cfrom` would report more slots than
    /// receivers decode ([`wire::MAX_PROMISE_ENTRIES`]): it is withheld (a truncated promise
    /// could hide a chosen value). A candidate that knows more of the log gets it.
    fn promise_too_long(&self, cfrom: u64) -> bool {
        self.last_index().saturating_sub(cfrom) > wire::MAX_PROMISE_ENTRIES as u64
    }

    fn send_promise(&mut self, to: NodeId, ballot: u64, cfrom: u64) {
        let entries: Vec<LogEntry> = ((cfrom + 1)..=self.last_index())
            .filter_map(|s| self.entry(s).cloned())
            .collect();
        let m = Msg::Promise {
            ballot,
            commit: self.commit,
            from: cfrom,
            entries,
        };
        self.send(to, &m, true);
    }

    fn leader_of(&self, ballot: u64) -> Option<NodeId> {
        self.cfg.peers.get(wire::proposer_of(ballot)).copied()
    }

    fn on_promise(
        &mut self,
        from: NodeId,
        ballot: u64,
        commit: u64,
        pfrom: u64,
        entries: Vec<LogEntry>,
    ) {
        let State::Candidate(c) = &mut self.state else {
            return;
        };
        if c.ballot != ballot || c.from != pfrom {
            // Not an answer to our prepare (one prepare per ballot: not from a correct peer).
            return;
        }
        c.promises.insert(from, (commit, entries));
        self.maybe_win();
    }

    fn on_behind(&mut self, from: NodeId, ballot: u64) {
        let n = self.cfg.peers.len();
        let majority = self.majority;
        let State::Candidate(c) = &mut self.state else {
            return;
        };
        if c.ballot != ballot {
            return;
        }
        c.behind.insert(from);
        if c.behind.len() > n - majority {
            // An up-to-date replica should win: back off and let its timer run out first.
            tracing::debug!(
                shard = self.cfg.shard,
                id = self.cfg.id,
                "behind: backing off"
            );
            self.state = State::Follower;
            self.reset_timeout();
            self.elapsed = 0;
            self.timeout += self.election_ticks() / 2;
        }
    }

    fn on_rejected(&mut self, ballot: u64, promised: u64) {
        // Only an answer to the request in progress counts (our pre-prepare, or a prepare or
        // accept under our promise), and it raises our next ballot at most
        // MAX_REJECTED_ROUNDS rounds above the refused one: a lying member cannot exhaust the
        // ballot space with one answer (see the crate docs).
        let in_progress = match &self.state {
            State::PreCandidate(p) => p.ballot == ballot,
            _ => ballot == self.promised,
        };
        if !in_progress {
            return;
        }
        let cap = wire::ballot(
            wire::round_of(ballot).saturating_add(wire::MAX_REJECTED_ROUNDS),
            wire::proposer_of(promised),
        );
        self.highest_seen = self.highest_seen.max(promised.min(cap));
        if ballot != self.promised || promised <= ballot {
            return;
        }
        match &self.state {
            State::Leader(_) => {
                tracing::info!(
                    shard = self.cfg.shard,
                    id = self.cfg.id,
                    promised,
                    "higher ballot seen: stepping down"
                );
                self.step_down();
            }
            State::Candidate(_) => {
                self.state = State::Follower;
                self.reset_timeout();
            }
            State::Follower | State::PreCandidate(_) => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_accept(
        &mut self,
        from: NodeId,
        ballot: u64,
        first: u64,
        commit: u64,
        lease: u64,
        values: Vec<Bytes>,
    ) {
        if ballot < self.promised {
            let m = Msg::Rejected {
                ballot,
                promised: self.promised,
            };
            self.send(from, &m, false);
            return;
        }
        if matches!(self.state, State::Leader(_)) && ballot == self.promised {
            return; // Our own ballot from someone else: impossible for a correct peer.
        }
        self.promise(ballot);
        self.follow(from);
        if let Rejoin::CatchingUp {
            target,
            target_ballot,
        } = &mut self.rejoin
            && ballot > *target_ballot
        {
            // The first accept of a newer leader: everything committed before we came back
            // is at or below the commit index it reports.
            *target = Some(target.unwrap_or(0).max(commit));
            *target_ballot = ballot;
        }
        let n = values.len() as u64;
        // `first >= 1` (decode) and `first + n <= MAX_SLOT`: no overflow either way.
        let end = first + n - 1;
        let last = self.last_index();
        let gap = first > last + 1;
        if !gap {
            for (k, v) in values.into_iter().enumerate() {
                let slot = first + k as u64;
                // Committed slots hold the chosen value already; a slot holding this
                // ballot's value holds this very value (one value per slot per ballot).
                if slot <= self.commit || self.term_at(slot) == Some(ballot) {
                    continue;
                }
                // Overwrites this slot only: later slots keep their values (and ballots).
                self.put(LogEntry {
                    index: slot,
                    term: ballot,
                    payload: v,
                });
            }
            self.extend_run();
            // A slot counts as committed only up to the run of this leader's values.
            self.set_commit(commit.min(self.run_end));
        }
        let m = Msg::Accepted {
            ballot,
            end,
            matched: self.run_end,
            last: self.last_index(),
            lease,
            gap,
            rejoining: self.rejoining(),
        };
        self.send(from, &m, true);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_accepted(
        &mut self,
        from: NodeId,
        ballot: u64,
        end: u64,
        matched: u64,
        their_last: u64,
        lease: u64,
        gap: bool,
        rejoining: bool,
    ) {
        if ballot != self.promised {
            return;
        }
        let last = self.last_index();
        let now = self.ticks;
        let State::Leader(l) = &mut self.state else {
            return;
        };
        let Some(p) = l.progress.get_mut(&from) else {
            return;
        };
        let matched = matched.min(last);
        p.heard = Some(now);
        // Its log ends before what it acknowledged under this ballot: it lost its state (a
        // `memory` log restarted, rejoining or not; possibly again before we saw it finish
        // rejoining). (A reordered older answer does the same harmlessly: the next answer
        // restores the count.)
        let lost = gap && matched < p.matched;
        let newly_rejoining = if rejoining {
            self.rejoining_peers.insert(from)
        } else {
            self.rejoining_peers.remove(&from);
            false
        };
        if lost || newly_rejoining {
            // It lost what it acknowledged: count nothing of it and resend from its log.
            p.matched = matched;
            p.next = matched + 1;
            p.inflight.clear();
        }
        p.matched = p.matched.max(matched);
        p.lease = p.lease.max(lease);
        while p
            .inflight
            .front()
            .is_some_and(|&(e, _)| e <= end.max(matched))
        {
            p.inflight.pop_front();
        }
        // The follower lacks our values after `matched` although nothing sent to it is
        // unanswered (or this accept left a gap): send again from there. This also covers
        // a follower that did not promise: its next slot starts past our log.
        if (gap || matched < end || p.inflight.is_empty()) && p.next > p.matched + 1 {
            p.next = p.matched + 1;
            p.inflight.clear();
        }
        p.next = p.next.max(p.matched + 1);
        if p.snapshot_sent.is_some() && self.snap.as_ref().is_some_and(|s| p.matched >= s.index) {
            p.snapshot_sent = None;
        }
        if their_last > last {
            self.fill_to(their_last);
        }
        self.maybe_commit();
        self.check_lease();
    }

    /// Extends the log with no-ops up to `to` (at most [`wire::MAX_ACCEPT_VALUES`] slots per
    /// call): an acceptor holds values past our log, such as a deposed leader's proposals
    /// nobody else took. Those slots would stay undecided until our own proposals reached them,
    /// and their proposer can only report its proposals dropped once they are decided (a value
    /// one acceptor holds can still be chosen by a later leader's Phase 1). Safe: Phase 1
    /// found no value that can have been chosen past our log (a majority promised us and none
    /// reported one), and under our ballot only we propose, so any value may go there.
    fn fill_to(&mut self, to: u64) {
        let last = self.last_index();
        let to = to
            .min(last.saturating_add(wire::MAX_ACCEPT_VALUES as u64))
            .min(MAX_SLOT);
        for slot in (last + 1)..=to {
            self.put(LogEntry {
                index: slot,
                term: self.promised,
                payload: Bytes::new(),
            });
        }
        self.extend_run();
    }

    fn on_timeout_now(&mut self, from: NodeId, ballot: u64, commit: u64) {
        if ballot != self.promised || self.leader != Some(from) {
            return;
        }
        // The leader sends this once we hold its whole log; its commit index may not have
        // reached us yet. Learn it (as from an accept: only over the run of this ballot's
        // values), or our prepare names an older commit and every replica that knows the
        // newer one, the old leader included, answers `Behind`.
        self.set_commit(commit.min(self.run_end));
        tracing::info!(
            shard = self.cfg.shard,
            id = self.cfg.id,
            "leadership handed over: phase 1"
        );
        self.campaign_inner(true);
    }

    fn on_snapshot(&mut self, from: NodeId, ballot: u64, index: u64, term: u64, data: Bytes) {
        if ballot < self.promised {
            let m = Msg::Rejected {
                ballot,
                promised: self.promised,
            };
            self.send(from, &m, false);
            return;
        }
        if matches!(self.state, State::Leader(_)) && ballot == self.promised {
            return;
        }
        if index > self.commit {
            if let Some(h) = self.snapshots.as_ref()
                && let Err(e) = h.check(&data)
            {
                self.stats.snapshots_refused += 1;
                tracing::warn!(
                    shard = self.cfg.shard,
                    from,
                    "snapshot from the leader refused: {e}"
                );
                return;
            }
            self.promise(ballot);
            self.follow(from);
            self.install_snapshot(Snapshot { index, term, data });
            if self.failure.is_some() {
                return;
            }
        } else {
            self.promise(ballot);
            self.follow(from);
        }
        let m = Msg::Accepted {
            ballot,
            end: index,
            matched: self.run_end,
            last: self.last_index(),
            lease: 0,
            gap: false,
            rejoining: self.rejoining(),
        };
        self.send(from, &m, true);
    }

    fn install_snapshot(&mut self, snap: Snapshot) {
        let index = snap.index;
        self.dispatcher.clear_pending();
        match self.snapshots.as_mut() {
            Some(h) => match h.restore(&snap.data, index) {
                Ok(pending) => self.dispatcher.restore_pending(pending),
                Err(e) => {
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
        // Slots after the snapshot keep their accepted values (an acceptor never forgets
        // one): they are written again after the snapshot record, which replaces the log.
        let kept: VecDeque<LogEntry> = self
            .log
            .iter()
            .filter(|e| e.index > index)
            .cloned()
            .collect();
        let contiguous = kept.front().is_none_or(|e| e.index == index + 1);
        self.log = if contiguous { kept } else { VecDeque::new() };
        self.first = index + 1;
        self.durable = self.durable.min(index);
        if !self.log.is_empty() {
            self.mark_dirty(index + 1);
        }
        self.applied_bytes.snapshot_installed();
        self.snap = Some(snap.clone());
        self.new_snapshot = Some((snap, true));
        self.new_compact = None;
        self.commit = self.commit.max(index);
        self.hs_dirty = true;
        self.applied = self.applied.max(index);
        self.extend_run();
        self.stats.snapshots_installed += 1;
        let later = self.proposals.split_off(&(index + 1));
        for (_, at) in std::mem::replace(&mut self.proposals, later) {
            for entry in at {
                self.report(entry, Resolution::InSnapshot);
            }
        }
    }

    // ---- leader ----

    fn maybe_commit(&mut self) {
        let State::Leader(l) = &self.state else {
            return;
        };
        let last = self.last_index();
        let mut m: Vec<u64> = l.progress.values().map(|p| p.matched.min(last)).collect();
        m.push(self.durable.min(last));
        m.sort_unstable_by(|a, b| b.cmp(a));
        let c = m[self.majority - 1];
        self.set_commit(c);
    }

    fn lease_allowed(&self) -> bool {
        let State::Leader(l) = &self.state else {
            return false;
        };
        self.transfer.is_none()
            && self.timeout_now.is_none_or(|(b, _)| b != self.promised)
            && self.commit >= l.takeover_last
    }

    fn check_lease(&mut self) {
        if !self.lease_allowed() || self.lease.term() != self.promised {
            return;
        }
        let State::Leader(l) = &self.state else {
            return;
        };
        let mut acks: Vec<u64> = l.progress.values().map(|p| p.lease).collect();
        acks.push(self.lease.seq());
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let seq = acks[self.majority - 1];
        if seq > 0 && self.lease.acked(seq) {
            self.stats.lease_acks += 1;
        }
    }

    /// Starts a leader-lease round stamped `now` if one is due (see [`crate::lease`]).
    pub fn renew_lease(&mut self, now: u64) {
        self.lease.enter(self.promised);
        if !self.lease_allowed() {
            self.lease.drop_lease();
            return;
        }
        if !self.lease.due(self.ticks, self.election_ticks()) {
            return;
        }
        self.lease.start_round(now, self.ticks);
        self.stats.lease_rounds += 1;
        if self.majority == 1 {
            self.check_lease();
            return;
        }
        let beats: Vec<(NodeId, u64)> = match &self.state {
            State::Leader(l) => l
                .progress
                .iter()
                .map(|(&to, p)| (to, p.matched + 1))
                .collect(),
            _ => Vec::new(),
        };
        for (to, first) in beats {
            self.send_accept(to, first, Vec::new());
        }
    }

    /// The stamp of the newest lease round a majority acknowledged, while this replica may
    /// hold a lease; `None` otherwise.
    pub fn lease_basis(&self) -> Option<u64> {
        if !self.lease_allowed() || self.lease.term() != self.promised {
            return None;
        }
        self.lease.basis()
    }

    /// Sends accepts (or a snapshot) to every follower with room in its pipeline.
    fn broadcast(&mut self) {
        let last = self.last_index();
        let first = self.first;
        let max_bytes = self.cfg.max_append_bytes;
        let max_inflight = self.cfg.max_inflight;
        let now = self.ticks;
        let mut sends: Vec<(NodeId, u64, u64)> = Vec::new();
        let mut snaps: Vec<NodeId> = Vec::new();
        let State::Leader(l) = &mut self.state else {
            return;
        };
        for (&to, p) in l.progress.iter_mut() {
            while p.snapshot_sent.is_none() && p.inflight.len() < max_inflight && p.next <= last {
                if p.next < first {
                    if self.snap.is_some() {
                        p.snapshot_sent = Some(now);
                        snaps.push(to);
                    }
                    break;
                }
                // Up to `max_append_bytes` of values (at least one), and never more values
                // than a receiver decodes.
                let max_end = p.next + wire::MAX_ACCEPT_VALUES as u64 - 1;
                let mut end = p.next;
                let mut bytes = self.log[(p.next - first) as usize].payload.len() as u64;
                while end < last.min(max_end) {
                    let b = self.log[(end + 1 - first) as usize].payload.len() as u64;
                    if bytes + b > max_bytes {
                        break;
                    }
                    bytes += b;
                    end += 1;
                }
                sends.push((to, p.next, end));
                p.inflight.push_back((end, now));
                p.next = end + 1;
            }
        }
        for (to, from, end) in sends {
            let values = (from..=end)
                .map(|s| self.log[(s - first) as usize].payload.clone())
                .collect();
            self.send_accept(to, from, values);
        }
        for to in snaps {
            if let Some(s) = self.snap.clone() {
                self.stats.snapshots_sent += 1;
                let m = Msg::Snapshot {
                    ballot: self.promised,
                    index: s.index,
                    term: s.term.max(1).min(self.promised),
                    data: s.data,
                };
                self.send(to, &m, false);
            }
        }
        // A pending transfer goes once the target holds everything.
        if let Some(t) = &self.transfer
            && !t.sent
            && let State::Leader(l) = &self.state
            && l.progress.get(&t.to).is_some_and(|p| p.matched >= last)
        {
            let to = t.to;
            let ballot = self.promised;
            self.timeout_now = Some((ballot, self.ticks));
            self.lease.drop_lease();
            if let Some(t) = self.transfer.as_mut() {
                t.sent = true;
            }
            let commit = self.commit;
            self.send(to, &Msg::TimeoutNow { ballot, commit }, false);
        }
    }

    fn maybe_hand_to_preferred(&mut self) {
        let Some(p) = self.cfg.preferred else { return };
        if p == self.cfg.id
            || self.transfer.is_some()
            || self.rejoining_peers.contains(&p)
            || self.timeout_now.is_some_and(|(b, _)| b == self.promised)
        {
            return;
        }
        let last = self.last_index();
        let e = self.election_ticks();
        let now = self.ticks;
        let State::Leader(l) = &self.state else {
            return;
        };
        let caught_up = l.progress.get(&p).is_some_and(|pr| {
            pr.matched >= last && pr.heard.is_some_and(|h| now.saturating_sub(h) < e)
        });
        if caught_up {
            let _ = self.transfer_leader(p);
        }
    }

    /// Asks leadership to move to `to`; refused with `Busy` while `to` is rejoining.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), SubmitError> {
        if !self.is_leader() {
            return Err(SubmitError::NotLeader {
                hint: self.leader(),
            });
        }
        if to == self.cfg.id {
            return Ok(());
        }
        if !self.cfg.peers.contains(&to) || self.rejoining_peers.contains(&to) {
            return Err(SubmitError::Busy);
        }
        self.lease.drop_lease();
        self.transfer = Some(Transfer {
            to,
            started: self.ticks,
            sent: false,
        });
        Ok(())
    }

    // ---- proposals ----

    /// Proposes an entry; fails fast with `NotLeader` on a follower, `TooLarge` past
    /// `max_entry_bytes`, `Refused` during a leadership transfer.
    ///
    /// An accepted entry ends in exactly one of: applied here (as ours), or reported to the
    /// dispatcher's unapplied callback.
    pub fn propose(&mut self, entry: Bytes) -> Result<(), ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader(self.leader()));
        }
        if entry.len() > self.cfg.max_entry_bytes {
            return Err(ProposeError::TooLarge(entry.len()));
        }
        if self.transfer.is_some() || self.last_index() >= MAX_SLOT {
            return Err(ProposeError::Refused);
        }
        let slot = self.last_index() + 1;
        self.put(LogEntry {
            index: slot,
            term: self.promised,
            payload: entry.clone(),
        });
        self.extend_run();
        self.proposals.entry(slot).or_default().push(entry);
        self.stats.proposed += 1;
        Ok(())
    }

    /// Proposes an entry `submit` already accepted: a refusal is reported to the unapplied
    /// callback instead of returned.
    pub fn propose_submitted(&mut self, entry: Bytes) {
        let reason = match self.propose(entry.clone()) {
            Ok(()) => return,
            Err(ProposeError::NotLeader(_)) => DropReason::NotLeader,
            Err(ProposeError::TooLarge(_) | ProposeError::Refused) => DropReason::Refused,
        };
        self.report(entry, Resolution::Dropped(reason));
    }

    fn report(&mut self, entry: Bytes, resolution: Resolution) {
        self.stats.resolved += 1;
        self.dispatcher.unapplied(Unapplied { entry, resolution });
    }

    /// Reports every unresolved proposal as abandoned (the group is stopping).
    pub fn abandon_proposals(&mut self) {
        for (_, at) in std::mem::take(&mut self.proposals) {
            for entry in at {
                self.report(entry, Resolution::Abandoned);
            }
        }
    }

    /// Entries proposed here and not yet resolved.
    pub fn unresolved_proposals(&self) -> usize {
        self.proposals.values().map(Vec::len).sum()
    }

    // ---- applying ----

    fn paused(&self) -> bool {
        !self.dispatcher.has_callback() || self.dispatcher.queued() >= self.cfg.max_pending_queue
    }

    /// Applies committed, locally durable slots while not paused.
    fn apply(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let target = self.commit.min(self.durable);
        while self.applied < target {
            if self.paused() {
                self.stats.apply_pauses += 1;
                return;
            }
            let Some(e) = self.entry(self.applied + 1).cloned() else {
                return;
            };
            self.applied = e.index;
            let mut ours = false;
            // Ours is decided by the bytes, not by the ballot (Raft compares terms): a later
            // leader that recovers our value in Phase 1 writes it under its own ballot, so a
            // ballot check would report an applied proposal dropped. The bytes cannot
            // mis-report: (1) a value only ever sits at the slot it was proposed at (accepts
            // and Phase 1 recovery are slot by slot), so our proposal can be chosen at no other
            // slot than this one; (2) if another proposer's identical bytes were chosen here,
            // the application is handed exactly those bytes at this slot, once, on this
            // replica, which is what "applied here" promises; (3) each slot is applied once
            // (`applied` only grows, a snapshot install reports the slots it covers and
            // removes them), and proposals go to ever later slots, so no proposal is reported
            // twice. (An empty proposal is resolved like a no-op filler: nothing is handed to
            // the application for either, as with `mako-raft`'s empty entries.)
            for entry in self.proposals.remove(&e.index).unwrap_or_default() {
                if !ours && entry == e.payload {
                    // Our value was chosen at its slot (possibly re-proposed by a later leader).
                    ours = true;
                    self.stats.resolved += 1;
                } else {
                    self.report(entry, Resolution::Dropped(DropReason::Overwritten));
                }
            }
            // An empty value is a no-op filler: nothing for the application.
            if e.payload.is_empty() {
                continue;
            }
            self.applied_bytes.applied(e.payload.len());
            self.dispatcher.apply(e.index, &e.payload);
            self.stats.applied_entries += 1;
        }
    }

    /// Resumes applying committed entries after a pause.
    pub fn tick_apply(&mut self) {
        self.apply();
    }

    /// Begins a capture at `applied` when the log has grown past `compact_after_entries`
    /// (and no capture is in flight); the driver runs it and reports it with
    /// [`PaxosNode::snapshot_captured`].
    fn maybe_compact(&mut self) {
        // Not again at an index whose capture was just dropped (no loop of captures).
        if self.failure.is_some()
            || self.capturing.is_some()
            || self.dropped_at == Some(self.applied)
            || !self.snapshots.as_ref().is_some_and(|h| h.can_snapshot())
        {
            return;
        }
        let snapshot_bytes = self.snap.as_ref().map_or(0, |s| s.data.len() as u64);
        if self.applied < self.first
            || !self.cfg.compaction_due(
                self.applied - self.first,
                &self.applied_bytes,
                snapshot_bytes,
            )
        {
            return;
        }
        if self.compact_target(self.applied) <= self.first {
            return;
        }
        let Some(term) = self.term_at(self.applied) else {
            return;
        };
        let pending = self.dispatcher.queue_snapshot();
        let Some(h) = self.snapshots.as_mut() else {
            return;
        };
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
        let e = self.election_ticks();
        if let State::Leader(l) = &self.state {
            for p in l.progress.values() {
                if p.heard.is_some_and(|h| self.ticks.saturating_sub(h) < e) {
                    target = target.min(p.matched.max(1));
                }
            }
        }
        target
    }

    /// The capture begun at `index` (ballot `term`) finished with `data` (`None`: it
    /// failed). Kept for the next `poll`, which records it as the snapshot lagging followers
    /// get, compacts the log behind it and persists both; dropped if it is stale.
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
        if let Some(data) = data {
            self.captured = Some(Snapshot { index, term, data });
        }
    }

    /// Takes a finished capture: compacts the in-memory log behind it and queues it for the
    /// next persist job. A capture overtaken by a snapshot installed from a leader is dropped.
    fn take_captured(&mut self) {
        let Some(mut snap) = self.captured.take() else {
            return;
        };
        let index = snap.index;
        // A committed slot keeps its value, but a later leader may have written it again
        // under its own ballot: the snapshot carries the slot's ballot as it is now.
        let term = (index >= self.first).then(|| self.term_at(index)).flatten();
        let stale = self.failure.is_some()
            || self.new_snapshot.is_some()
            // A snapshot at the same index (taken before, when followers needed more of the
            // log) is simply taken again: the log is compacted further behind it.
            || self.snap.as_ref().is_some_and(|s| s.index > index)
            || index > self.applied;
        let (false, Some(term)) = (stale, term) else {
            tracing::debug!(shard = self.cfg.shard, index, "stale capture dropped");
            self.stats.captures_dropped += 1;
            self.dropped_at = Some(index);
            return;
        };
        snap.term = term;
        let target = self.compact_target(index).max(self.first);
        while self.log.front().is_some_and(|e| e.index < target) {
            self.log.pop_front();
        }
        self.first = target;
        self.applied_bytes.capture_kept();
        self.snap = Some(snap.clone());
        self.new_snapshot = Some((snap, false));
        self.new_compact = Some(target);
        self.stats.compactions += 1;
    }

    // ---- output ----

    /// Collects what the last inputs produced: messages to send, state to persist, and
    /// applies committed entries.
    pub fn poll(&mut self) -> Output {
        if matches!(self.state, State::Leader(_)) {
            self.broadcast();
        }
        self.apply();
        self.take_captured();
        self.maybe_compact();
        self.maybe_finish_rejoin();
        let mut out = Output {
            messages: std::mem::take(&mut self.out),
            persist: None,
            capture: self.capture_out.take(),
        };
        let mut job = PersistJob {
            number: self.next_job,
            // Slots are only ever replaced, never cut off: should the host split this job
            // over several log writes, a crash between them leaves every slot with its old
            // or its new value (a truncating write would lose the later accepted slots).
            keep_later: true,
            ..PersistJob::default()
        };
        let mut first_written = None;
        if let Some(from) = self.dirty_from.take() {
            let from = from.max(self.first);
            job.entries = (from..=self.last_index())
                .filter_map(|s| self.entry(s).cloned())
                .collect();
            first_written = Some(from);
        }
        let mut install = None;
        if let Some((snap, installed)) = self.new_snapshot.take() {
            if installed {
                install = Some(snap.index);
                first_written = Some(first_written.unwrap_or(snap.index + 1).min(snap.index + 1));
            }
            job.snapshot = Some(snap);
            job.snapshot_installed = installed;
        }
        job.compact_to = self.new_compact.take();
        let mut promised = None;
        if std::mem::take(&mut self.hs_dirty) {
            job.hard_state = Some(self.hard_state());
            promised = Some(self.promised);
        }
        let mut after = std::mem::take(&mut self.after);
        if job.is_empty() {
            match self.unpersisted.back_mut() {
                Some(u) => u.after.append(&mut after),
                None => out.messages.append(&mut after),
            }
            return out;
        }
        self.next_job += 1;
        let last_written = first_written.map(|_| self.last_index());
        job.after = after;
        self.unpersisted.push_back(Unpersisted {
            number: job.number,
            first_written,
            last_written,
            promised,
            install,
            after: Vec::new(),
        });
        out.persist = Some(job);
        out
    }

    /// Reports that persist job `number` is durable (jobs in the order `poll` made them);
    /// returns messages that waited for it.
    pub fn on_persisted(&mut self, number: u64) -> Vec<OutMsg> {
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
        if let Some(p) = u.promised {
            self.durable_promised = self.durable_promised.max(p);
        }
        if let Some(last) = u.last_written {
            // Slots rewritten since (by later jobs, or not yet in a job) are not durable yet.
            let mut cap = last;
            for later in &self.unpersisted {
                if let Some(f) = later.first_written {
                    cap = cap.min(f - 1);
                }
            }
            if let Some(d) = self.dirty_from {
                cap = cap.min(d - 1);
            }
            self.durable = self.durable.max(cap.min(self.last_index()));
        }
        self.maybe_commit();
        self.maybe_win();
        self.maybe_finish_rejoin();
        u.after
    }

    fn maybe_finish_rejoin(&mut self) {
        let Rejoin::CatchingUp {
            target: Some(target),
            ..
        } = self.rejoin
        else {
            return;
        };
        let held = self.commit.min(self.durable);
        if held < target || self.failure.is_some() || self.installing_snapshot() {
            return;
        }
        self.rejoin = Rejoin::Voter;
        self.promise_floor = self.promised;
        tracing::info!(
            shard = self.cfg.shard,
            id = self.cfg.id,
            target,
            "rejoined: caught up; promises again for ballots above {}",
            self.promised
        );
        if let Some(leader) = self.leader {
            let m = Msg::Accepted {
                ballot: self.promised,
                end: held,
                matched: self.run_end,
                last: self.last_index(),
                lease: 0,
                gap: false,
                rejoining: false,
            };
            self.send(leader, &m, true);
        }
    }

    // ---- state ----

    /// Why this node stopped applying (the application refused a snapshot).
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        matches!(self.state, State::Leader(_))
    }

    /// Whether this replica runs Phase 1.
    pub fn is_candidate(&self) -> bool {
        matches!(self.state, State::Candidate(_))
    }

    /// Whether this replica runs a pre-prepare round (it has not raised its ballot).
    pub fn is_pre_candidate(&self) -> bool {
        matches!(self.state, State::PreCandidate(_))
    }

    /// The leader this replica believes in.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The promised ballot.
    pub fn ballot(&self) -> u64 {
        self.promised
    }

    /// Highest slot known committed.
    pub fn commit_index(&self) -> u64 {
        self.commit
    }

    /// Highest slot applied.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Highest slot durable as held in memory.
    pub fn durable_index(&self) -> u64 {
        self.durable
    }

    /// The role entries are applied under.
    pub fn role(&self) -> Role {
        if self.is_leader() {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    /// Whether this replica is still rejoining.
    pub fn rejoining(&self) -> bool {
        matches!(self.rejoin, Rejoin::CatchingUp { .. })
    }

    /// Peers this leader knows to be rejoining.
    pub fn rejoining_peers(&self) -> Vec<NodeId> {
        self.rejoining_peers.iter().copied().collect()
    }

    /// Persist jobs handed out and not yet reported durable.
    pub fn unpersisted_jobs(&self) -> usize {
        self.unpersisted.len()
    }

    /// Counters.
    pub fn stats(&self) -> PaxosStats {
        self.stats
    }

    /// The dispatcher committed entries go to.
    pub fn dispatcher(&self) -> &Arc<ApplyDispatcher> {
        &self.dispatcher
    }

    /// The entries held, first to last (tests check agreement on them).
    pub fn entries(&self) -> impl Iterator<Item = &LogEntry> {
        self.log.iter()
    }

    /// Checks the node's internal invariants; `Err` names the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (k, e) in self.log.iter().enumerate() {
            if e.index != self.first + k as u64 {
                return Err(format!("log not contiguous at {}", e.index));
            }
            if e.term > self.promised {
                return Err(format!(
                    "slot {} accepted under {} > promised {}",
                    e.index, e.term, self.promised
                ));
            }
        }
        let snap_index = self.snap.as_ref().map_or(0, |s| s.index);
        if self.first > snap_index + 1 {
            return Err(format!(
                "log starts at {} after snapshot {snap_index}",
                self.first
            ));
        }
        if self.commit > self.last_index() {
            return Err(format!(
                "commit {} past last {}",
                self.commit,
                self.last_index()
            ));
        }
        if self.applied > self.commit {
            return Err(format!(
                "applied {} past commit {}",
                self.applied, self.commit
            ));
        }
        if self.durable > self.last_index() {
            return Err(format!(
                "durable {} past last {}",
                self.durable,
                self.last_index()
            ));
        }
        if self.run_end < self.commit || self.run_end > self.last_index() {
            return Err(format!("run end {} outside [commit, last]", self.run_end));
        }
        if self.is_leader() && self.leader != Some(self.cfg.id) {
            return Err("a leader that does not name itself".into());
        }
        Ok(())
    }
}

impl mako_group::Core for PaxosNode {
    const NAME: &'static str = "paxos";

    fn new(
        cfg: GroupConfig,
        init: InitialState,
        d: Arc<ApplyDispatcher>,
        snapshots: Option<Box<dyn SnapshotHandler>>,
    ) -> Result<Self, mako_group::CoreError> {
        Ok(PaxosNode::new(cfg, init, d, snapshots)?)
    }
    fn config(&self) -> &GroupConfig {
        &self.cfg
    }
    fn set_snapshot_handler(&mut self, h: Box<dyn SnapshotHandler>) {
        PaxosNode::set_snapshot_handler(self, h)
    }
    fn tick(&mut self) {
        PaxosNode::tick(self)
    }
    fn renew_lease(&mut self, now: u64) {
        PaxosNode::renew_lease(self, now)
    }
    fn lease_basis(&self) -> Option<u64> {
        PaxosNode::lease_basis(self)
    }
    fn step(&mut self, from: NodeId, payload: &Bytes) -> Result<(), mako_group::CoreError> {
        Ok(PaxosNode::step(self, from, payload)?)
    }
    fn propose_submitted(&mut self, entry: Bytes) {
        PaxosNode::propose_submitted(self, entry)
    }
    fn abandon_proposals(&mut self) {
        PaxosNode::abandon_proposals(self)
    }
    fn tick_apply(&mut self) {
        PaxosNode::tick_apply(self)
    }
    fn transfer_leader(&mut self, to: NodeId) -> Result<(), SubmitError> {
        PaxosNode::transfer_leader(self, to)
    }
    fn poll(&mut self) -> Output {
        PaxosNode::poll(self)
    }
    fn failure(&self) -> Option<&str> {
        PaxosNode::failure(self)
    }
    fn snapshot_captured(&mut self, index: u64, term: u64, data: Option<Bytes>) {
        PaxosNode::snapshot_captured(self, index, term, data);
    }
    fn on_persisted(&mut self, number: u64) -> Vec<OutMsg> {
        PaxosNode::on_persisted(self, number)
    }
    fn is_leader(&self) -> bool {
        PaxosNode::is_leader(self)
    }
    fn leader(&self) -> Option<NodeId> {
        PaxosNode::leader(self)
    }
    fn term(&self) -> u64 {
        self.promised
    }
    fn commit_index(&self) -> u64 {
        self.commit
    }
    fn applied_index(&self) -> u64 {
        self.applied
    }
    fn resolved(&self) -> u64 {
        self.stats.resolved
    }
    fn rejoining(&self) -> bool {
        PaxosNode::rejoining(self)
    }
    fn rejoining_peers(&self) -> Vec<NodeId> {
        PaxosNode::rejoining_peers(self)
    }
    fn dispatcher(&self) -> &Arc<ApplyDispatcher> {
        &self.dispatcher
    }
}
