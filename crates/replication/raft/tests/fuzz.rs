//! Crafted-message fuzz: a peer's messages, however inconsistent, never panic a `RaftNode` nor break its log invariants.
//!
//! Each case builds a replica in some state (fresh follower, leader or follower of a
//! 3-replica group with a committed log, pre-candidate, candidate, a follower with an
//! uncommitted tail, a leader whose log was compacted) by driving real `RaftNode`s
//! in-process, then feeds it a few crafted messages through `RaftNode::step`, exactly
//! as the transport would. A panic fails the test (nothing catches it). After every
//! message the checks are: the term and the commit index never decrease, the last index
//! never drops below the commit index, no persist job rewrites an entry that was
//! committed before the message, and every applied entry is the one committed at that index.
//!
//! `PROPTEST_CASES` sets the number of cases per state (default 400).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use mako_raft::{InitialState, PersistJob, RaftConfig, RaftNode, wire};
use mako_replication::{Applied, ApplyDispatcher, NodeId, Role};
use parking_lot::Mutex;
use proptest::prelude::*;
use protobuf::ProtobufEnum;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};

const PEERS: [NodeId; 3] = [1, 2, 3];
const BIG_CHUNK: usize = 64 << 20;

type Applies = Arc<Mutex<Vec<(u64, Bytes)>>>;

/// One replica plus a model of what it made durable and what it applied.
struct Peer {
    node: RaftNode,
    /// Durable log model: index → (term, bytes), from persist jobs.
    disk: BTreeMap<u64, (u64, Bytes)>,
    applies: Applies,
    /// Never report persist jobs durable (a disk that has not finished writing).
    hold: bool,
}

fn config(id: NodeId, compact_after: u64) -> RaftConfig {
    let mut cfg = RaftConfig::new(id, PEERS.to_vec(), 0);
    cfg.heartbeat_interval_ms = 100;
    cfg.election_timeout_min_ms = 300;
    cfg.election_timeout_max_ms = 400;
    cfg.max_inflight = 4;
    cfg.compact_after_entries = compact_after;
    cfg.compact_log_percent = 0; // the test application's snapshot is its whole history
    cfg.snapshot_chunk_bytes = BIG_CHUNK;
    cfg
}

impl Peer {
    fn new(id: NodeId, compact_after: u64) -> Self {
        let d = Arc::new(ApplyDispatcher::discarding(0));
        let applies = Applies::default();
        for role in [Role::Leader, Role::Follower] {
            let a = applies.clone();
            d.set_callback(
                role,
                Box::new(move |ctx| {
                    a.lock().push((ctx.index, ctx.entry.clone()));
                    Applied::normal(0)
                }),
            );
        }
        // A snapshot source (empty state) so that compaction can happen at all.
        struct Empty;
        impl mako_replication::SnapshotHandler for Empty {
            fn snapshot(&mut self, _pending: &[mako_replication::QueuedEntry]) -> bytes::Bytes {
                bytes::Bytes::new()
            }
            fn restore(
                &mut self,
                _data: &bytes::Bytes,
                _index: u64,
            ) -> Result<Vec<mako_replication::QueuedEntry>, mako_replication::SnapshotRefused>
            {
                Ok(Vec::new())
            }
        }
        let handler: Box<dyn mako_replication::SnapshotHandler> = Box::new(Empty);
        let node = match RaftNode::new(
            config(id, compact_after),
            InitialState::default(),
            d,
            Some(handler),
        ) {
            Ok(n) => n,
            Err(e) => panic!("starting node {id}: {e}"),
        };
        Peer {
            node,
            disk: BTreeMap::new(),
            applies,
            hold: false,
        }
    }

    fn persist(&mut self, job: &PersistJob) {
        if job.snapshot_installed
            && let Some(s) = &job.snapshot
        {
            let idx = s.index;
            self.disk.clear();
            self.disk
                .insert(idx, (s.term, Bytes::from_static(b"<snapshot>")));
        }
        if let Some(first) = job.entries.first() {
            let _ = self.disk.split_off(&first.index);
            for e in &job.entries {
                self.disk.insert(e.index, (e.term, e.payload.clone()));
            }
        }
    }

    /// Polls until quiet, persisting every job at once; returns the messages it sent.
    fn drain(&mut self) -> Vec<(NodeId, Bytes)> {
        let mut sent = Vec::new();
        for _ in 0..100 {
            let out = self.node.poll();
            if out.is_empty() {
                break;
            }
            if let Some(c) = out.capture {
                let (index, term, data) = c.run_now();
                self.node.snapshot_captured(index, term, data);
            }
            sent.extend(out.messages.into_iter().map(|m| (m.to, m.payload)));
            if let Some(job) = out.persist {
                self.persist(&job);
                if !self.hold {
                    self.node.on_persisted(job.number);
                    sent.extend(job.after.into_iter().map(|m| (m.to, m.payload)));
                }
            }
        }
        sent
    }
}

fn decode(payload: &Bytes) -> Option<Message> {
    wire::Reassembler::default().push(0, payload).ok().flatten()
}

/// Delivers messages among `peers` until quiet; `pass` decides which get through.
fn settle(peers: &mut [Peer], pass: &dyn Fn(NodeId, NodeId, &Message) -> bool) {
    for _ in 0..200 {
        let mut queue = Vec::new();
        for (i, p) in peers.iter_mut().enumerate() {
            for (to, payload) in p.drain() {
                queue.push((i as NodeId + 1, to, payload));
            }
        }
        if queue.is_empty() {
            return;
        }
        for (from, to, payload) in queue {
            let Some(m) = decode(&payload) else { continue };
            if !pass(from, to, &m) {
                continue;
            }
            if let Some(p) = peers.get_mut(to as usize - 1) {
                let _ = p.node.step(from, &payload);
            }
        }
    }
}

fn all(_: NodeId, _: NodeId, _: &Message) -> bool {
    true
}

fn group(compact_after: u64) -> Vec<Peer> {
    PEERS
        .iter()
        .map(|&id| Peer::new(id, compact_after))
        .collect()
}

/// A group where node 1 leads and `n` entries are committed everywhere.
fn committed_group(n: usize, compact_after: u64) -> Vec<Peer> {
    let mut g = group(compact_after);
    if let Err(e) = g[0].node.campaign() {
        panic!("campaign: {e}");
    }
    settle(&mut g, &all);
    assert!(g[0].node.is_leader(), "node 1 did not win");
    for i in 0..n {
        if let Err(e) = g[0].node.propose(Bytes::from(format!("entry-{i}"))) {
            panic!("propose: {e}");
        }
        settle(&mut g, &all);
    }
    // One more round so followers learn the last commit index.
    g[0].node.tick();
    settle(&mut g, &all);
    g
}

/// The replica states the fuzz starts from.
#[derive(Debug, Clone, Copy)]
enum Start {
    FreshFollower,
    Leader,
    Follower,
    PreCandidate,
    Candidate,
    FollowerWithTail,
    CompactedLeader,
    /// A candidate whose log (entries just received, its vote) is not durable yet.
    CandidateNotDurable,
}

/// Node 3 grants node 2's pre-vote (as it would once its lease ran out): node 2 campaigns.
fn grant_pre_vote(p: &mut Peer) {
    let mut grant = Message::default();
    grant.set_msg_type(MessageType::MsgRequestPreVoteResponse);
    grant.from = 3;
    grant.to = 2;
    grant.term = p.node.term() + 1;
    for payload in wire::encode(&grant, BIG_CHUNK, 1) {
        let _ = p.node.step(3, &payload);
    }
    p.drain();
}

fn build(start: Start) -> Peer {
    match start {
        Start::FreshFollower => Peer::new(1, u64::MAX / 2),
        Start::Leader => committed_group(6, u64::MAX / 2).swap_remove(0),
        Start::Follower => committed_group(6, u64::MAX / 2).swap_remove(1),
        Start::PreCandidate | Start::Candidate => {
            let mut g = committed_group(4, u64::MAX / 2);
            let mut p = g.swap_remove(1);
            drop(g);
            if let Err(e) = p.node.campaign() {
                panic!("campaign: {e}");
            }
            p.drain();
            if let Start::Candidate = start {
                grant_pre_vote(&mut p);
            }
            p
        }
        Start::FollowerWithTail => {
            let mut g = committed_group(4, u64::MAX / 2);
            // Node 3 receives the leader's appends but its acks are lost: an uncommitted tail.
            for i in 0..3 {
                if let Err(e) = g[0].node.propose(Bytes::from(format!("tail-{i}"))) {
                    panic!("propose: {e}");
                }
            }
            settle(&mut g, &|from, to, _| from == 1 && to == 3);
            g.swap_remove(2)
        }
        Start::CompactedLeader => committed_group(12, 4).swap_remove(0),
        Start::CandidateNotDurable => {
            let mut g = committed_group(4, u64::MAX / 2);
            if let Err(e) = g[0].node.propose(Bytes::from_static(b"not yet durable")) {
                panic!("propose: {e}");
            }
            let appends = g[0].drain();
            let mut p = g.swap_remove(1);
            drop(g);
            p.hold = true;
            // The entry arrives and node 2 campaigns before polling: one Ready writes both.
            for (to, payload) in appends {
                if to == 2 {
                    let _ = p.node.step(1, &payload);
                }
            }
            if let Err(e) = p.node.campaign() {
                panic!("campaign: {e}");
            }
            p.drain();
            grant_pre_vote(&mut p);
            p
        }
    }
}

/// A number chosen relative to the replica's state when the message is sent.
#[derive(Debug, Clone, Copy)]
enum Num {
    Abs(u64),
    Term(i64),
    Last(i64),
    Commit(i64),
    Huge(u64),
}

fn num() -> impl Strategy<Value = Num> {
    prop_oneof![
        2 => (0u64..6).prop_map(Num::Abs),
        2 => (-2i64..4).prop_map(Num::Term),
        3 => (-3i64..4).prop_map(Num::Last),
        3 => (-3i64..3).prop_map(Num::Commit),
        1 => prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), Just(1u64 << 40)].prop_map(Num::Huge),
    ]
}

#[derive(Debug, Clone, Copy)]
struct View {
    term: u64,
    last: u64,
    commit: u64,
}

impl Num {
    fn at(self, v: View) -> u64 {
        let rel = |base: u64, d: i64| base.saturating_add_signed(d);
        match self {
            Num::Abs(x) | Num::Huge(x) => x,
            Num::Term(d) => rel(v.term, d),
            Num::Last(d) => rel(v.last, d),
            Num::Commit(d) => rel(v.commit, d),
        }
    }
}

#[derive(Debug, Clone)]
struct EntrySpec {
    index: Num,
    term: Num,
    kind: i32,
    data: Vec<u8>,
}

#[derive(Debug, Clone)]
struct SnapSpec {
    index: Num,
    term: Num,
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
}

#[derive(Debug, Clone)]
struct MsgSpec {
    kind: i32,
    from: NodeId,
    to: NodeId,
    term: Num,
    index: Num,
    log_term: Num,
    commit: Num,
    commit_term: Num,
    /// Entry indexes follow `index` contiguously (the realistic case) rather than their own `index`.
    contiguous: bool,
    entries: Vec<EntrySpec>,
    reject: bool,
    reject_hint: Num,
    request_snapshot: Option<Num>,
    snapshot: Option<SnapSpec>,
    context: Vec<u8>,
}

fn entry_spec() -> impl Strategy<Value = EntrySpec> {
    (
        num(),
        num(),
        prop_oneof![8 => Just(0), 1 => Just(1), 1 => Just(2)],
        proptest::collection::vec(any::<u8>(), 0..6),
    )
        .prop_map(|(index, term, kind, data)| EntrySpec {
            index,
            term,
            kind,
            data,
        })
}

fn ids() -> impl Strategy<Value = Vec<NodeId>> {
    proptest::collection::vec(0u64..5, 0..4)
}

fn snap_spec() -> impl Strategy<Value = SnapSpec> {
    (
        num(),
        num(),
        prop_oneof![3 => Just(PEERS.to_vec()), 1 => ids()],
        prop_oneof![3 => Just(vec![]), 1 => ids()],
    )
        .prop_map(|(index, term, voters, learners)| SnapSpec {
            index,
            term,
            voters,
            learners,
        })
}

fn msg_spec() -> impl Strategy<Value = MsgSpec> {
    (
        (
            0i32..=18,
            prop_oneof![6 => 2u64..4, 1 => Just(1u64), 1 => Just(0u64), 1 => Just(4u64)],
            prop_oneof![8 => Just(0u64), 1 => 0u64..5],
            num(),
            num(),
            num(),
            num(),
            num(),
        ),
        (
            any::<bool>(),
            proptest::collection::vec(entry_spec(), 0..4),
            any::<bool>(),
            num(),
            proptest::option::weighted(0.2, num()),
            proptest::option::weighted(0.3, snap_spec()),
            proptest::collection::vec(any::<u8>(), 0..3),
        ),
    )
        .prop_map(
            |(
                (kind, from, to, term, index, log_term, commit, commit_term),
                (contiguous, entries, reject, reject_hint, request_snapshot, snapshot, context),
            )| MsgSpec {
                kind,
                from,
                to,
                term,
                index,
                log_term,
                commit,
                commit_term,
                contiguous,
                entries,
                reject,
                reject_hint,
                request_snapshot,
                snapshot,
                context,
            },
        )
}

fn entry_type(kind: i32) -> EntryType {
    EntryType::from_i32(kind).unwrap_or(EntryType::EntryNormal)
}

impl MsgSpec {
    /// The message, with numbers resolved against `v`; `to == 0` in the spec means "the target".
    fn build(&self, v: View, target: NodeId) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::from_i32(self.kind).unwrap_or(MessageType::MsgHeartbeat));
        m.from = self.from;
        m.to = if self.to == 0 { target } else { self.to };
        m.term = self.term.at(v);
        m.index = self.index.at(v);
        m.log_term = self.log_term.at(v);
        m.commit = self.commit.at(v);
        m.commit_term = self.commit_term.at(v);
        m.reject = self.reject;
        m.reject_hint = self.reject_hint.at(v);
        m.request_snapshot = self.request_snapshot.map_or(0, |n| n.at(v));
        m.context = self.context.clone().into();
        let mut entries = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let mut en = Entry {
                index: if self.contiguous {
                    m.index.saturating_add(i as u64 + 1)
                } else {
                    e.index.at(v)
                },
                term: e.term.at(v),
                data: e.data.clone().into(),
                ..Entry::default()
            };
            en.set_entry_type(entry_type(e.kind));
            entries.push(en);
        }
        m.set_entries(entries.into());
        if let Some(s) = &self.snapshot {
            let mut snap = Snapshot::default();
            let meta = snap.mut_metadata();
            meta.index = s.index.at(v);
            meta.term = s.term.at(v);
            meta.set_conf_state(ConfState::from((s.voters.clone(), s.learners.clone())));
            snap.data = vec![1u8, 2, 3].into();
            m.set_snapshot(snap);
        }
        m
    }
}

fn view(n: &RaftNode) -> View {
    View {
        term: n.term(),
        last: n.last_index(),
        commit: n.commit_index(),
    }
}

/// Feeds `msgs` to `p` and checks the invariants after each; returns the first broken one.
fn run(mut p: Peer, msgs: &[MsgSpec]) -> Result<(), String> {
    let target = p.node.config().id;
    p.drain();
    // Entries known committed: index → (term, bytes).
    let mut committed: BTreeMap<u64, (u64, Bytes)> = BTreeMap::new();
    let record = |p: &Peer, committed: &mut BTreeMap<u64, (u64, Bytes)>| {
        let c = p.node.commit_index();
        for (i, e) in p.disk.range(..=c) {
            committed.entry(*i).or_insert_with(|| e.clone());
        }
    };
    record(&p, &mut committed);
    let mut applied_seen = p.applies.lock().len();
    for spec in msgs {
        let before = view(&p.node);
        let m = spec.build(before, target);
        let desc = format!(
            "{:?} from {} (term {}, index {}, log_term {}, commit {}, {} entries)",
            m.get_msg_type(),
            m.from,
            m.term,
            m.index,
            m.log_term,
            m.commit,
            m.entries.len()
        );
        for payload in wire::encode(&m, BIG_CHUNK, 1) {
            let _ = p.node.step(spec.from, &payload);
        }
        for _ in 0..100 {
            let out = p.node.poll();
            if out.is_empty() {
                break;
            }
            if let Some(job) = out.persist {
                for e in &job.entries {
                    if e.index <= before.commit
                        && let Some((t, b)) = committed.get(&e.index)
                        && (*t != e.term || b.as_ref() != e.payload.as_ref())
                    {
                        return Err(format!(
                            "{desc}: rewrote committed entry {} (term {t} -> {})",
                            e.index, e.term
                        ));
                    }
                }
                if job.snapshot_installed
                    && let Some(s) = &job.snapshot
                    && s.index < before.commit
                {
                    return Err(format!(
                        "{desc}: installed a snapshot at {} below commit {}",
                        s.index, before.commit
                    ));
                }
                p.persist(&job);
                if !p.hold {
                    p.node.on_persisted(job.number);
                }
            }
        }
        let after = view(&p.node);
        if after.term < before.term {
            return Err(format!(
                "{desc}: term went back {} -> {}",
                before.term, after.term
            ));
        }
        if after.commit < before.commit {
            return Err(format!(
                "{desc}: commit went back {} -> {}",
                before.commit, after.commit
            ));
        }
        if after.last < after.commit {
            return Err(format!(
                "{desc}: last index {} below commit {}",
                after.last, after.commit
            ));
        }
        record(&p, &mut committed);
        let applies = p.applies.lock();
        for (i, b) in &applies[applied_seen..] {
            if let Some((_, c)) = committed.get(i)
                && c != b
            {
                return Err(format!("{desc}: applied a different entry at {i}"));
            }
        }
        applied_seen = applies.len();
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400)
}

fn fuzz(start: Start) {
    let cfg = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(cfg, |(msgs in proptest::collection::vec(msg_spec(), 1..5))| {
        let p = build(start);
        if let Err(e) = run(p, &msgs) {
            prop_assert!(false, "{:?}: {}", start, e);
        }
    });
}

#[test]
fn fuzz_fresh_follower() {
    fuzz(Start::FreshFollower);
}

#[test]
fn fuzz_leader_with_committed_log() {
    fuzz(Start::Leader);
}

#[test]
fn fuzz_follower_with_committed_log() {
    fuzz(Start::Follower);
}

#[test]
fn fuzz_pre_candidate() {
    fuzz(Start::PreCandidate);
}

#[test]
fn fuzz_candidate() {
    fuzz(Start::Candidate);
}

#[test]
fn fuzz_follower_with_uncommitted_tail() {
    fuzz(Start::FollowerWithTail);
}

#[test]
fn fuzz_candidate_whose_log_is_not_durable() {
    fuzz(Start::CandidateNotDurable);
}

#[test]
fn fuzz_leader_with_compacted_log() {
    fuzz(Start::CompactedLeader);
}

/// The starting states really are what the fuzz claims (so the fuzz covers them).
#[test]
fn starting_states_are_as_named() {
    let l = build(Start::Leader);
    assert!(l.node.is_leader());
    assert!(l.node.commit_index() >= 7);
    let f = build(Start::Follower);
    assert!(!f.node.is_leader());
    assert!(f.node.commit_index() >= 7);
    let t = build(Start::FollowerWithTail);
    assert!(t.node.last_index() > t.node.commit_index());
    let c = build(Start::CompactedLeader);
    assert!(c.node.first_index() > 1);
    let pc = build(Start::PreCandidate);
    let cand = build(Start::Candidate);
    assert!(cand.node.term() > pc.node.term());
    let nd = build(Start::CandidateNotDurable);
    assert_eq!(nd.node.term(), cand.node.term());
    assert!(nd.node.last_index() > cand.node.last_index());
}

/// raft-rs asserts a new leader's log is durable; a vote granted early must not get there.
#[test]
fn a_vote_granted_before_the_candidates_log_is_durable_is_refused() {
    let mut p = build(Start::CandidateNotDurable);
    let before = p.node.stats().rejected_messages;
    let mut vote = Message::default();
    vote.set_msg_type(MessageType::MsgRequestVoteResponse);
    vote.from = 3;
    vote.to = 2;
    vote.term = p.node.term();
    for payload in wire::encode(&vote, BIG_CHUNK, 1) {
        let _ = p.node.step(3, &payload);
    }
    assert!(!p.node.is_leader());
    assert_eq!(p.node.stats().rejected_messages, before + 1);
}

/// Feeds `m` (from the sender given, to the replica) to a replica in state `start`; it must be refused and counted.
fn assert_refused(start: Start, from: NodeId, make: impl Fn(View) -> Message) {
    let mut p = build(start);
    let mut m = make(view(&p.node));
    m.from = from;
    m.to = p.node.config().id;
    let t = m.get_msg_type();
    for payload in wire::encode(&m, BIG_CHUNK, 1) {
        let _ = p.node.step(from, &payload);
    }
    p.drain();
    assert_eq!(p.node.stats().rejected_messages, 1, "{t:?} was not refused");
}

fn msg(t: MessageType, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(t);
    m.term = term;
    m
}

// One test per message kind that panicked raft-rs before validation (each panics without it).

#[test]
fn refuses_a_vote_request_with_term_0() {
    assert_refused(Start::FreshFollower, 3, |_| {
        msg(MessageType::MsgRequestVote, 0)
    });
}

#[test]
fn refuses_a_pre_vote_request_with_term_0() {
    assert_refused(Start::FreshFollower, 3, |_| {
        msg(MessageType::MsgRequestPreVote, 0)
    });
}

#[test]
fn refuses_proposals_from_peers() {
    assert_refused(Start::Leader, 2, |_| msg(MessageType::MsgPropose, 0));
    assert_refused(Start::Follower, 3, |v| msg(MessageType::MsgPropose, v.term));
}

#[test]
fn refuses_read_index_from_peers() {
    assert_refused(Start::Leader, 2, |_| msg(MessageType::MsgReadIndex, 0));
}

#[test]
fn refuses_read_index_responses() {
    assert_refused(Start::Follower, 1, |v| {
        let mut m = msg(MessageType::MsgReadIndexResp, 0);
        m.index = v.last + 5;
        m.set_entries(vec![Entry::default()].into());
        m
    });
}

#[test]
fn refuses_leader_transfer_requests_from_peers() {
    assert_refused(Start::Follower, 3, |v| {
        msg(MessageType::MsgTransferLeader, v.term)
    });
}

#[test]
fn refuses_timeout_now_at_the_largest_term() {
    assert_refused(Start::Follower, 1, |_| {
        msg(MessageType::MsgTimeoutNow, u64::MAX)
    });
}

#[test]
fn refuses_term_0_appends_heartbeats_and_snapshots_to_a_candidate() {
    for t in [
        MessageType::MsgAppend,
        MessageType::MsgHeartbeat,
        MessageType::MsgSnapshot,
    ] {
        assert_refused(Start::Candidate, 1, |_| msg(t, 0));
    }
}

#[test]
fn refuses_an_append_rewriting_committed_entries() {
    assert_refused(Start::Follower, 1, |v| {
        let mut m = msg(MessageType::MsgAppend, v.term + 1);
        m.index = v.commit;
        m.log_term = v.term;
        m.commit = v.commit;
        // Not contiguous: claims index 2, below the commit, with another term.
        let e = Entry {
            index: 2,
            term: v.term + 1,
            ..Entry::default()
        };
        m.set_entries(vec![e].into());
        m
    });
}

#[test]
fn refuses_an_append_with_a_gap_after_the_log() {
    assert_refused(Start::FreshFollower, 2, |v| {
        let mut m = msg(MessageType::MsgAppend, v.term + 1);
        m.index = 5;
        m.log_term = 0;
        m.commit = 6;
        let e = Entry {
            index: 6,
            term: 1,
            ..Entry::default()
        };
        m.set_entries(vec![e].into());
        m
    });
}

#[test]
fn refuses_a_snapshot_with_a_foreign_configuration() {
    assert_refused(Start::FreshFollower, 2, |v| {
        let mut m = msg(MessageType::MsgSnapshot, v.term + 1);
        let mut s = Snapshot::default();
        s.mut_metadata().index = 20;
        s.mut_metadata().term = v.term + 1;
        s.mut_metadata()
            .set_conf_state(ConfState::from((PEERS.to_vec(), vec![3])));
        m.set_snapshot(s);
        m
    });
}

#[test]
fn refuses_a_snapshot_with_term_0_past_the_log() {
    assert_refused(Start::Follower, 1, |v| {
        let mut m = msg(MessageType::MsgSnapshot, v.term);
        let mut s = Snapshot::default();
        s.mut_metadata().index = v.last + 3;
        s.mut_metadata()
            .set_conf_state(ConfState::from((PEERS.to_vec(), vec![])));
        m.set_snapshot(s);
        m
    });
}

#[test]
fn refuses_an_append_ack_past_the_leaders_log() {
    assert_refused(Start::Leader, 2, |v| {
        let mut m = msg(MessageType::MsgAppendResponse, v.term);
        m.index = u64::MAX;
        m
    });
}

/// Bytes this thread has allocated and not freed, and the peak of that since the last reset.
mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static NET: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn add(d: isize) {
        let _ = NET.try_with(|n| {
            n.set(n.get() + d);
            let _ = PEAK.try_with(|p| p.set(p.get().max(n.get())));
        });
    }

    /// The system allocator, counting per thread.
    pub struct Counting;

    // SAFETY: forwards every call to `System` unchanged; only counts sizes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            add(l.size() as isize);
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(l) }
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            add(l.size() as isize);
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc_zeroed(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            add(-(l.size() as isize));
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            add(new as isize - l.size() as isize);
            // SAFETY: same contract as the caller's.
            unsafe { System.realloc(p, l, new) }
        }
    }

    /// Starts a measurement: the peak is reset to the current level, which is returned.
    pub fn reset() -> isize {
        let now = NET.with(|n| n.get());
        PEAK.with(|p| p.set(now));
        now
    }

    /// The peak since `reset`.
    pub fn peak() -> isize {
        PEAK.with(|p| p.get())
    }
}

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

/// A chunk frame: tag 1, stream id, chunk index, chunk count, body length (little-endian), data.
fn chunk_frame(stream: u64, index: u32, count: u32, len: u64, data: &[u8]) -> Bytes {
    let mut b = Vec::new();
    b.push(1u8);
    b.extend_from_slice(&stream.to_le_bytes());
    b.extend_from_slice(&index.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(data);
    b.into()
}

/// Reassembly memory follows the bytes received, not the sizes claimed, however many streams.
/// (Before the bound, 60 such 26-byte frames made the reassembler allocate about 2 GiB.)
#[test]
fn reassembly_memory_follows_bytes_received_not_claimed_sizes() {
    let mut r = wire::Reassembler::default();
    let frames: Vec<(u64, Bytes)> = (0..60u64)
        .flat_map(|s| {
            [
                (2, chunk_frame(s, 0, 1 << 20, 1 << 30, b"x")),
                (s + 10, chunk_frame(s, 7, 1 << 20, 1 << 30, b"y")),
            ]
        })
        .collect();
    let base = alloc_count::reset();
    for (from, f) in &frames {
        let _ = r.push(*from, f);
    }
    let grew = alloc_count::peak() - base;
    assert!(
        grew < 256 << 10,
        "reassembly allocated {grew} bytes for 120 tiny chunks"
    );
    assert!(r.partial_streams() <= 16);
}
