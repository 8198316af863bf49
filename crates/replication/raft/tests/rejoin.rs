//! Rejoining after a `memory` log lost the Raft state ([`RaftConfig::rejoin`]): no vote, no
//! campaign and no leadership until the replica holds what was committed before it came back.
//!
//! Host-level scenarios run real `RaftHost`s over the in-memory network with memory log
//! stores (a crash loses everything); node-level ones drive one `RaftNode` with crafted
//! messages, where raft-rs alone would grant the vote or campaign.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{HostGroup, wait};
use mako_raft::{InitialState, NodeError, RaftConfig, RaftNode, wire};
use mako_replication::{ApplyDispatcher, NodeId, Replicator, Role, RoleChange, SubmitError};
use parking_lot::Mutex;
use raft::eraftpb::{Entry, Message, MessageType};

/// Short Raft timing so that elections come quickly.
fn timing(cfg: &mut RaftConfig) {
    cfg.heartbeat_interval_ms = 5;
    cfg.election_timeout_min_ms = 60;
    cfg.election_timeout_max_ms = 120;
}

fn config(id: NodeId, rejoin: bool, compact: u64) -> RaftConfig {
    let mut cfg = RaftConfig::new(id, vec![1, 2, 3], 0);
    timing(&mut cfg);
    cfg.compact_after_entries = compact;
    cfg.compact_log_percent = 0; // the test application's snapshot is its whole history
    cfg.rejoin = rejoin;
    cfg
}

fn entry(n: u64) -> Bytes {
    Bytes::from(format!("entry-{n}"))
}

/// Entry numbers in a replica's applied history, in apply order.
fn applied(g: &HostGroup, i: usize) -> Vec<u64> {
    g.histories[i]
        .lock()
        .iter()
        .filter_map(|(_, b)| {
            std::str::from_utf8(b)
                .ok()?
                .strip_prefix("entry-")?
                .parse()
                .ok()
        })
        .collect()
}

/// Submits entries `ns` on replica `l` and waits until it applied them (committed).
fn commit(g: &HostGroup, l: usize, ns: std::ops::RangeInclusive<u64>) {
    let last = *ns.end();
    for n in ns {
        assert!(
            wait(|| match g.groups[l].submit(entry(n)) {
                Ok(()) => true,
                Err(SubmitError::Busy) => false,
                Err(e) => panic!("submit {n} on replica {l}: {e}"),
            }),
            "entry {n} accepted"
        );
    }
    assert!(
        wait(|| applied(g, l).contains(&last)),
        "replica {l} applies entry {last}"
    );
}

/// Role changes of replica `i` to leader, from now on.
fn leader_changes(g: &HostGroup, i: usize) -> Arc<Mutex<Vec<RoleChange>>> {
    let seen: Arc<Mutex<Vec<RoleChange>>> = Arc::default();
    let s = seen.clone();
    g.groups[i].on_role_change(Box::new(move |rc| {
        if rc.role == Role::Leader {
            s.lock().push(rc);
        }
    }));
    seen
}

/// The scenario of the safety argument: entries committed by {A, B} while C lags (cut
/// off); B loses its state and comes back (rejoining or not); A goes away, leaving C and
/// the new B. Returns the group, A, B, C, C's leader changes since B came back, and the
/// length of the vote log when it came back.
fn lagging_replica_left_with_a_restarted_one(
    rejoin: bool,
) -> (
    HostGroup,
    usize,
    usize,
    usize,
    Arc<Mutex<Vec<RoleChange>>>,
    usize,
) {
    let mut g = HostGroup::start(3, timing);
    let c = 2;
    g.net.disconnect(c as NodeId + 1);
    assert!(wait(|| g.leader().is_some_and(|l| l != c)), "A or B leads");
    let a = g.leader().expect("leader");
    let b = 1 - a;
    commit(&g, a, 1..=20);
    g.crash(b);
    g.net.disconnect(a as NodeId + 1);
    let mark = g.votes.lock().len();
    g.restart(b, config(b as NodeId + 1, rejoin, 10_000));
    assert_eq!(g.groups[b].rejoining(), rejoin);
    let c_leads = leader_changes(&g, c);
    g.net.connect(c as NodeId + 1);
    (g, a, b, c, c_leads, mark)
}

/// Pre-vote requests C sent to B so far.
fn prevotes_c_to_b(g: &HostGroup, b: usize, c: usize) -> usize {
    g.votes
        .lock()
        .iter()
        .filter(|v| {
            v.kind == MessageType::MsgRequestPreVote
                && v.from == c as NodeId + 1
                && v.to == b as NodeId + 1
        })
        .count()
}

#[test]
fn a_rejoining_replica_never_elects_a_candidate_lacking_committed_entries() {
    let (g, a, b, c, c_leads, mark) = lagging_replica_left_with_a_restarted_one(true);
    let before = prevotes_c_to_b(&g, b, c);
    // C campaigns again and again (each campaign one pre-vote request to B).
    assert!(wait(|| prevotes_c_to_b(&g, b, c) >= before + 5));
    assert!(
        c_leads.lock().is_empty(),
        "C, which lacks committed entries, was elected: {:?}",
        c_leads.lock()
    );
    let granted: Vec<_> = g
        .votes
        .lock()
        .iter()
        .skip(mark)
        .filter(|v| v.from == b as NodeId + 1 && !v.reject)
        .cloned()
        .collect();
    assert!(
        granted.is_empty(),
        "the rejoining replica granted {granted:?}"
    );
    assert!(g.groups[b].rejoining(), "no leader to catch up from yet");
    assert_ne!(g.groups[b].role(), Role::Leader);

    // A comes back: a leader with the committed entries emerges, B catches up and rejoins.
    g.net.connect(a as NodeId + 1);
    assert!(wait(|| !g.groups[b].rejoining()), "B finishes rejoining");
    let l = g.leader().expect("a leader");
    let all: Vec<u64> = (1..=20).collect();
    assert_eq!(
        applied(&g, l)[..20],
        all[..],
        "the leader has every committed entry"
    );
    assert!(wait(|| applied(&g, b).len() >= 20));
    assert_eq!(applied(&g, b)[..20], all[..]);
}

/// The same scenario without the option: B and C, neither holding the committed entries,
/// elect one of them (C, usually; B too when its own election timer fires first on a loaded
/// machine, with C's vote), and the entries are gone.
#[test]
fn without_rejoin_a_restarted_replica_elects_a_leader_that_lost_committed_entries() {
    let (g, _a, b, c, _c_leads, _) = lagging_replica_left_with_a_restarted_one(false);
    let leader = || {
        [b, c]
            .into_iter()
            .find(|&i| g.groups[i].role() == Role::Leader)
    };
    assert!(wait(|| leader().is_some()), "B or C is elected");
    let n = leader().expect("leader");
    commit(&g, n, 21..=21);
    let h = applied(&g, n);
    assert!(
        (1..=20).all(|n| !h.contains(&n)),
        "committed entries 1..=20 are lost on the new leader: {h:?}"
    );
}

#[test]
fn a_rejoined_replica_catches_up_by_snapshot_then_votes_for_a_complete_leader() {
    const COMPACT: u64 = 10;
    let mut g = HostGroup::start(3, |c| {
        timing(c);
        c.compact_after_entries = COMPACT;
        c.compact_log_percent = 0;
    });
    assert!(wait(|| g.leader().is_some()));
    let l = g.leader().expect("leader");
    let (b, f) = ((l + 1) % 3, (l + 2) % 3);
    commit(&g, l, 1..=30);
    g.crash(b);
    commit(&g, l, 31..=80);
    g.restart(b, config(b as NodeId + 1, true, COMPACT));
    assert!(g.groups[b].rejoining(), "starts rejoining");
    assert!(wait(|| !g.groups[b].rejoining()), "B finishes rejoining");
    assert!(
        g.restores[b].load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the leader's log was compacted: B caught up by snapshot"
    );
    let all: Vec<u64> = (1..=80).collect();
    assert!(wait(|| applied(&g, b).len() >= 80));
    assert_eq!(applied(&g, b)[..80], all[..]);

    // The leader dies: B and F must elect a leader between them (B's vote is needed).
    g.crash(l);
    assert!(
        wait(|| g.leader().is_some_and(|n| n != l)),
        "B and F elect a leader"
    );
    let n = g.leader().expect("new leader");
    assert!(n == b || n == f);
    commit(&g, n, 81..=81);
    let all: Vec<u64> = (1..=81).collect();
    assert_eq!(
        applied(&g, n)[..81],
        all[..],
        "the new leader has every entry"
    );
}

/// A log with nothing new to replicate (the `meta` group between epoch changes): the leader
/// believes the restarted replica still holds what it acknowledged and only heartbeats it,
/// so it must learn from the rejoin mark to send the log again, or the replica never
/// finishes rejoining and a later leader loss leaves no majority that votes (found by the
/// process test `memory_rejoin`: a restarted `meta` member blocked every new epoch).
#[test]
fn a_replica_rejoins_an_idle_group() {
    let mut g = HostGroup::start(3, timing);
    assert!(wait(|| g.leader().is_some()));
    let l = g.leader().expect("leader");
    let (b, f) = ((l + 1) % 3, (l + 2) % 3);
    commit(&g, l, 1..=20);
    assert!(wait(|| applied(&g, b).len() >= 20), "B had everything");
    g.crash(b);
    g.restart(b, config(b as NodeId + 1, true, u64::MAX / 2));
    assert!(g.groups[b].rejoining(), "starts rejoining");
    // Nothing new is proposed.
    assert!(
        wait(|| !g.groups[b].rejoining()),
        "B finishes rejoining an idle group"
    );
    assert!(wait(|| applied(&g, b).len() >= 20));
    let all: Vec<u64> = (1..=20).collect();
    assert_eq!(applied(&g, b)[..20], all[..]);
    // The leader dies: B and F elect one (B's vote is needed) that has every entry.
    g.crash(l);
    assert!(
        wait(|| g.leader().is_some_and(|n| n != l)),
        "B and F elect a leader"
    );
    let n = g.leader().expect("new leader");
    assert!(n == b || n == f);
    commit(&g, n, 21..=21);
}

// ---- node level -------------------------------------------------------------------------

fn node(id: NodeId, rejoin: bool, preferred: Option<NodeId>) -> RaftNode {
    let mut cfg = RaftConfig::new(id, vec![1, 2, 3], 0);
    cfg.rejoin = rejoin;
    cfg.preferred = preferred;
    RaftNode::new(
        cfg,
        InitialState::default(),
        Arc::new(ApplyDispatcher::discarding(0)),
        None,
    )
    .expect("node starts")
}

fn msg(t: MessageType, from: NodeId, to: NodeId, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(t);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

fn vote_request(
    pre: bool,
    from: NodeId,
    to: NodeId,
    term: u64,
    index: u64,
    log_term: u64,
) -> Message {
    let t = if pre {
        MessageType::MsgRequestPreVote
    } else {
        MessageType::MsgRequestVote
    };
    let mut m = msg(t, from, to, term);
    m.index = index;
    m.log_term = log_term;
    m
}

/// Polls until idle, making every persist job durable at once; the messages sent, decoded.
fn drain(n: &mut RaftNode) -> Vec<Message> {
    let mut sent = Vec::new();
    loop {
        let out = n.poll();
        if out.is_empty() {
            break;
        }
        if let Some(c) = out.capture {
            let (index, term, data) = c.run_now();
            n.snapshot_captured(index, term, data);
        }
        sent.extend(out.messages);
        if let Some(job) = out.persist {
            sent.extend(job.after);
            sent.extend(n.on_persisted(job.number));
        }
    }
    sent.into_iter()
        .map(|m| {
            wire::Reassembler::default()
                .push(n.config().id, &m.payload)
                .expect("decodes")
                .expect("whole")
        })
        .collect()
}

/// The vote answers (kind, term, reject) among `ms`.
fn vote_answers(ms: &[Message]) -> Vec<(MessageType, u64, bool)> {
    ms.iter()
        .filter(|m| {
            matches!(
                m.get_msg_type(),
                MessageType::MsgRequestVoteResponse | MessageType::MsgRequestPreVoteResponse
            )
        })
        .map(|m| (m.get_msg_type(), m.term, m.reject))
        .collect()
}

/// An append from leader 1 in `term` carrying entry 1 (of `term`) and commit 1.
fn first_append(to: NodeId, term: u64) -> Message {
    let mut m = msg(MessageType::MsgAppend, 1, to, term);
    let e = Entry {
        term,
        index: 1,
        data: b"x".to_vec().into(),
        ..Default::default()
    };
    m.set_entries(vec![e].into());
    m.commit = 1;
    m
}

#[test]
fn a_rejoining_replica_grants_no_vote_and_does_not_campaign() {
    use MessageType::*;
    // Control: an ordinary replica with an empty log grants the up-to-date candidate.
    let mut plain = node(2, false, None);
    plain
        .step_message(vote_request(false, 3, 2, 1, 0, 0))
        .expect("steps");
    assert_eq!(
        vote_answers(&drain(&mut plain)),
        [(MsgRequestVoteResponse, 1, false)]
    );

    let mut n = node(2, true, None);
    assert!(n.rejoining());
    assert!(matches!(n.campaign(), Err(NodeError::Rejoining)));
    n.step_message(vote_request(false, 3, 2, 1, 0, 0))
        .expect("steps");
    n.step_message(vote_request(true, 3, 2, 1, 0, 0))
        .expect("steps");
    // The vote is refused; the pre-vote gets no answer (a term-0 answer would be local).
    assert_eq!(
        vote_answers(&drain(&mut n)),
        [(MsgRequestVoteResponse, 1, true)]
    );
    assert_eq!(n.stats().votes_refused, 2);
    // No election timeout while rejoining, however long.
    for _ in 0..1000 {
        n.tick();
    }
    let out = drain(&mut n);
    assert!(
        out.iter()
            .all(|m| !matches!(m.get_msg_type(), MsgRequestVote | MsgRequestPreVote)),
        "a rejoining replica campaigned: {out:?}"
    );
    // A leader's transfer (MsgTimeoutNow) is ignored while rejoining.
    n.step_message(first_append(2, 5)).expect("steps");
    n.step_message(msg(MsgTimeoutNow, 1, 2, 5)).expect("steps");
    let out = drain(&mut n);
    assert!(
        out.iter()
            .all(|m| !matches!(m.get_msg_type(), MsgRequestVote | MsgRequestPreVote)),
        "a rejoining replica took a transfer: {out:?}"
    );
    assert_eq!(n.term(), 5);
    assert!(!n.is_leader());
    // Entry 1 is committed and durable: rejoined. Its acknowledgement while rejoining was
    // marked; a plain one tells the leader it is done.
    assert!(!n.rejoining());
    assert_eq!(n.vote_floor(), 5);
    assert_eq!(ack_marks(&out), [true, false]);
}

/// For each append acknowledgement among `ms`: whether it says "rejoining".
fn ack_marks(ms: &[Message]) -> Vec<bool> {
    ms.iter()
        .filter(|m| m.get_msg_type() == MessageType::MsgAppendResponse)
        .map(|m| m.get_context() == mako_raft::REJOIN_CONTEXT)
        .collect()
}

#[test]
fn a_rejoined_replica_votes_only_in_terms_after_the_one_it_finished_in() {
    use MessageType::*;
    let mut n = node(2, true, None);
    n.step_message(first_append(2, 5)).expect("steps");
    // A response of a later term makes it a follower of term 6 with no leader and no vote
    // (so raft-rs alone would grant a vote of term 6).
    n.step_message(msg(MsgHeartbeatResponse, 3, 2, 6))
        .expect("steps");
    let out = drain(&mut n);
    assert!(!n.rejoining(), "entry 1 committed and durable: rejoined");
    assert_eq!((n.term(), n.vote_floor()), (6, 6));
    assert_eq!(
        ack_marks(&out),
        [true],
        "no leader known: no final acknowledgement"
    );
    // A rejoining replica's heartbeat answers are marked too, unless they echo a read index.
    let mut r = node(2, true, None);
    let mut hb = msg(MsgHeartbeat, 1, 2, 3);
    r.step_message(hb.clone()).expect("steps");
    hb.set_context(b"read".to_vec().into());
    r.step_message(hb).expect("steps");
    let ctx: Vec<Vec<u8>> = drain(&mut r)
        .iter()
        .filter(|m| m.get_msg_type() == MsgHeartbeatResponse)
        .map(|m| m.get_context().to_vec())
        .collect();
    assert_eq!(ctx, [mako_raft::REJOIN_CONTEXT.to_vec(), b"read".to_vec()]);

    // It may have voted in term 6 before it lost its state: no vote or pre-vote in term 6.
    n.step_message(vote_request(false, 3, 2, 6, 1, 5))
        .expect("steps");
    n.step_message(vote_request(true, 1, 2, 6, 1, 5))
        .expect("steps");
    assert_eq!(
        vote_answers(&drain(&mut n)),
        [
            (MsgRequestVoteResponse, 6, true),
            (MsgRequestPreVoteResponse, 6, true)
        ]
    );
    // Term 7 is new to it: granted.
    n.step_message(vote_request(false, 3, 2, 7, 1, 5))
        .expect("steps");
    assert_eq!(
        vote_answers(&drain(&mut n)),
        [(MsgRequestVoteResponse, 7, false)]
    );
}

/// Node 1 as the leader of term 1 (node 2 voted for it), its first entry not yet acknowledged by 3.
fn leader(preferred: Option<NodeId>) -> RaftNode {
    use MessageType::*;
    let mut n = node(1, false, preferred);
    n.campaign().expect("campaigns");
    drain(&mut n);
    n.step_message(msg(MsgRequestPreVoteResponse, 2, 1, 1))
        .expect("steps");
    drain(&mut n);
    n.step_message(msg(MsgRequestVoteResponse, 2, 1, 1))
        .expect("steps");
    drain(&mut n);
    assert!(n.is_leader());
    n
}

fn ack(from: NodeId, index: u64, rejoining: bool) -> Message {
    let mut m = msg(MessageType::MsgAppendResponse, from, 1, 1);
    m.index = index;
    if rejoining {
        m.set_context(mako_raft::REJOIN_CONTEXT.to_vec().into());
    }
    m
}

fn timeout_now_sent(ms: &[Message]) -> bool {
    ms.iter()
        .any(|m| m.get_msg_type() == MessageType::MsgTimeoutNow && m.to == 3)
}

#[test]
fn leadership_never_moves_to_a_rejoining_replica() {
    // Preferred leader 3 is caught up but rejoining: no hand-over.
    let mut n = leader(Some(3));
    let last = n.last_index();
    n.step_message(ack(3, last, true)).expect("steps");
    let mut out = drain(&mut n);
    for _ in 0..20 {
        n.tick();
        out.extend(drain(&mut n));
    }
    assert!(
        !timeout_now_sent(&out),
        "handed over to a rejoining replica"
    );
    assert_eq!(n.rejoining_peers(), [3]);
    assert_eq!(n.transfer_leader(3), Err(SubmitError::Busy));
    assert!(!timeout_now_sent(&drain(&mut n)));
    // Once it says it rejoined, the hand-over goes ahead.
    n.step_message(ack(3, last, false)).expect("steps");
    let mut out = drain(&mut n);
    n.tick();
    out.extend(drain(&mut n));
    assert!(n.rejoining_peers().is_empty());
    assert!(
        timeout_now_sent(&out),
        "preferred replica 3 gets leadership"
    );

    // A leader may count a restarted replica as caught up from before its loss: its first
    // heartbeat answer already says it is rejoining.
    let mut hb = msg(MessageType::MsgHeartbeatResponse, 3, 1, 1);
    hb.set_context(mako_raft::REJOIN_CONTEXT.to_vec().into());
    n.step_message(hb).expect("steps");
    drain(&mut n);
    assert_eq!(n.rejoining_peers(), [3]);
    assert_eq!(n.transfer_leader(3), Err(SubmitError::Busy));
    n.step_message(msg(MessageType::MsgHeartbeatResponse, 3, 1, 1))
        .expect("steps");
    drain(&mut n);
    assert!(n.rejoining_peers().is_empty());

    // An explicit transfer too.
    let mut n = leader(None);
    let last = n.last_index();
    n.step_message(ack(3, last, true)).expect("steps");
    drain(&mut n);
    assert_eq!(n.transfer_leader(3), Err(SubmitError::Busy));
    n.step_message(ack(3, last, false)).expect("steps");
    drain(&mut n);
    assert_eq!(n.transfer_leader(3), Ok(()));
    assert!(timeout_now_sent(&drain(&mut n)));
}

/// In the seeded lab: a replica that lost its disk rejoins, catches up entry by entry, and
/// the cluster goes on (its history matches everyone's, and it can lead afterwards).
#[test]
fn lab_a_replica_that_lost_its_disk_rejoins_and_can_lead_again() {
    let mut c = common::Cluster::new(3, 23);
    c.lose_disk_on_crash = true;
    c.one(b"r0", 3, true);
    let l = c.check_one_leader();
    let f = (l + 1) % 3;
    c.crash(f);
    for k in 0..10u8 {
        c.one(&[b'r', k], 2, true);
    }
    c.cfg_template.rejoin = true;
    c.start(f);
    c.cfg_template.rejoin = false;
    assert!(c.node(f).is_some_and(RaftNode::rejoining));
    assert!(c.run_until(5000, |c| c.node(f).is_some_and(|n| !n.rejoining())));
    assert_eq!(c.applied_len(f), c.applied_len(l));
    // The old leader goes: the rejoined replica and the third elect a leader with everything.
    c.crash(l);
    let n = c.check_one_leader();
    assert_ne!(n, l);
    c.one(b"after", 2, true);
    assert!(c.histories_agree());
}
