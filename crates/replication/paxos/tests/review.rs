//! Review findings: each test reproduces a defect found in the Multi-Paxos core (it failed
//! before the fix that came with it), built message by message on the lab or on a bare
//! `PaxosNode`.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{Sim, elect, msg, propose, tick_settle};
use mako_group::chunk::Reassembler;
use mako_group::{GroupConfig, HardState, InitialState, LogEntry};
use mako_lab::{HEARTBEAT_MS, Packet};
use mako_paxos::PaxosNode;
use mako_paxos::wire::{self, Msg};
use mako_replication::ApplyDispatcher;

fn is_heartbeat(p: &Packet) -> bool {
    matches!(msg(p), Some(Msg::Accept { ref values, .. }) if values.is_empty())
}

/// A lab without clock-driven elections: nodes tick only when told, election timeouts are
/// huge, persistence and network are instant, one value per accept.
fn manual(n: usize, seed: u64) -> Sim {
    let mut s = Sim::with_config(n, seed, |c| {
        c.election_timeout_max_ms = 1_000_000 * HEARTBEAT_MS;
        c.max_append_bytes = 1;
    });
    s.ticking = false;
    s.max_persist_delay_ms = 0;
    s
}

/// Encodes a whole (unchunked) message as the transport carries it.
fn payload(m: &Msg) -> Bytes {
    let mut v = wire::encode(m, usize::MAX);
    assert_eq!(v.len(), 1);
    v.remove(0)
}

/// Every payload `node` has to send, held ones included (its persist jobs complete at once).
fn drain_raw(node: &mut PaxosNode) -> Vec<mako_group::OutMsg> {
    let mut sent = Vec::new();
    loop {
        let out = node.poll();
        if out.is_empty() {
            break;
        }
        if let Some(c) = out.capture {
            let (index, term, data) = c.run_now();
            node.snapshot_captured(index, term, data);
        }
        sent.extend(out.messages);
        if let Some(job) = out.persist {
            sent.extend(job.after);
            sent.extend(node.on_persisted(job.number));
        }
    }
    sent
}

/// Every whole (unchunked) message `node` has to send, decoded, with its addressee.
fn drain(node: &mut PaxosNode) -> Vec<(u64, Msg)> {
    drain_raw(node)
        .into_iter()
        .filter_map(|m| wire::decode(&m.payload.slice(1..)).ok().map(|d| (m.to, d)))
        .collect()
}

/// The leader hands over to a target that holds its whole log but has not yet learned the
/// latest commit index (commit notifications ride on the next accept; `TimeoutNow` goes the
/// moment the target's acknowledgement arrives). The target's prepare names its older commit,
/// so the old leader and every follower that did learn it answered `Behind`: the transfer
/// failed, and the old leader stepped down an election timeout later (no lease, no leader).
#[test]
fn a_transfer_to_a_target_that_lags_on_the_commit_index_succeeds() {
    let mut s = manual(3, 21);
    elect(&mut s, 0);
    propose(&mut s, 0, b"v1");
    tick_settle(&mut s, 0, 1);
    propose(&mut s, 0, b"x");
    assert_eq!(s.live(0).commit_index(), 2);
    // C learns commit 2 from A's heartbeat, B does not (its heartbeats are lost).
    s.filter = Some(Box::new(|p| !(p.from == 1 && p.to == 2 && is_heartbeat(p))));
    tick_settle(&mut s, 0, 1);
    assert_eq!(s.live(1).commit_index(), 1);
    assert_eq!(s.live(2).commit_index(), 2);
    assert_eq!(
        s.live(1).entry(2).map(|e| e.payload.clone()).as_deref(),
        Some(&b"x"[..])
    );
    s.live_mut(0).transfer_leader(2).unwrap();
    s.drive(0);
    s.settle();
    assert!(
        s.live(1).is_leader(),
        "the transfer target did not take over"
    );
    assert_eq!(
        s.live(1).stats().pre_rounds,
        0,
        "a transfer skips the pre-prepare round"
    );
    s.filter = None;
    propose(&mut s, 1, b"y");
    tick_settle(&mut s, 1, 2);
    for i in 0..3 {
        assert_eq!(s.live(i).commit_index(), 3, "node {}", i + 1);
        assert_eq!(s.live(i).leader(), Some(2), "node {}", i + 1);
    }
    s.assert_safe();
}

/// The host splits a persist job larger than a log write into several writes, entries first
/// and the hard state last. A crash between them leaves slots accepted under a new ballot
/// on disk with the older promise. Such an acceptor has accepted the new ballot, so it must
/// not promise a lower one after the restart (nor report an entry whose ballot exceeds the
/// promise, which every candidate refuses as malformed).
#[test]
fn a_restart_from_a_torn_job_does_not_promise_below_a_ballot_it_accepted() {
    let peers = vec![1, 2, 3];
    let mut cfg = GroupConfig::new(2, peers, 0);
    cfg.election_timeout_max_ms = 1_000_000;
    let old = wire::ballot(1, 0);
    let accepted = wire::ballot(3, 0);
    let init = InitialState {
        hard_state: HardState {
            term: old,
            vote: 1,
            commit: 0,
        },
        snapshot: None,
        entries: vec![LogEntry::new(1, accepted, Bytes::from_static(b"x"))],
    };
    let d = Arc::new(ApplyDispatcher::discarding(0));
    let mut node = PaxosNode::new(cfg, init, d, None).unwrap();
    assert_eq!(node.check_invariants(), Ok(()));
    // A transfer prepare (it bypasses the post-restart bar) under a ballot between the two.
    let between = wire::ballot(2, 2);
    let p = payload(&Msg::Prepare {
        ballot: between,
        from: 0,
        transfer: true,
    });
    node.step(3, &p).unwrap();
    let sent = drain(&mut node);
    assert!(
        !sent.iter().any(|(_, m)| matches!(m, Msg::Promise { .. })),
        "promised {between} after accepting under {accepted}: {sent:?}"
    );
    assert!(node.ballot() >= accepted);
}

/// A replica cut off from the group campaigns on its own. It used to promise itself ever
/// higher ballots nobody heard; once the partition healed, its answer to the healthy
/// leader's next heartbeat was `Rejected` with that higher ballot: the leader stepped down at
/// once and the group had no leader until an election timeout ran out, although a majority
/// still followed it (the disturbance the stable-leader rule is there to prevent). Now its
/// pre-prepare rounds find no majority: it keeps its ballot and follows the leader again.
#[test]
fn a_replica_returning_from_a_partition_with_a_higher_ballot_does_not_leave_the_group_leaderless() {
    let mut s = manual(3, 22);
    elect(&mut s, 0);
    propose(&mut s, 0, b"v1");
    tick_settle(&mut s, 0, 1);
    let kept = s.live(2).ballot();
    s.isolate(2);
    for _ in 0..3 {
        assert!(s.live_mut(2).campaign());
        s.drive(2);
        s.settle();
    }
    assert!(!s.live(2).is_leader() && !s.live(2).is_candidate());
    assert_eq!(
        s.live(2).ballot(),
        kept,
        "a cut-off replica does not raise its promise"
    );
    propose(&mut s, 0, b"v2");
    tick_settle(&mut s, 0, 1);
    assert!(s.live(2).ballot() <= s.live(0).ballot());
    s.heal();
    // Its timer runs out once more before a heartbeat reaches it: the healthy group refuses
    // the pre-prepare and changes nothing.
    assert!(s.live_mut(2).campaign());
    s.drive(2);
    s.settle();
    tick_settle(&mut s, 0, 3);
    let l = s.leader().expect("the group has a leader");
    assert_eq!(l, 0, "the healthy leader leads on");
    assert_eq!(
        s.live(0).stats().step_downs,
        0,
        "the leader never stepped down"
    );
    assert_eq!(s.live(0).stats().elections_won, 1);
    propose(&mut s, 0, b"v3");
    tick_settle(&mut s, 0, 2);
    for i in 0..3 {
        assert_eq!(s.live(i).leader(), Some(1), "node {}", i + 1);
        assert!(s.live(i).commit_index() >= 3, "node {}", i + 1);
        assert_eq!(s.live(i).ballot(), s.live(0).ballot(), "node {}", i + 1);
    }
    s.assert_safe();
}

/// Replica 2 of 1..=3 with a fixed election-timeout seed.
fn bare(seed: u64) -> PaxosNode {
    let cfg = GroupConfig::new(2, vec![1, 2, 3], 0);
    let d = Arc::new(ApplyDispatcher::discarding(0));
    let mut node = PaxosNode::new(cfg, InitialState::default(), d, None).unwrap();
    node.set_election_seed(seed);
    node
}

/// Polls `node` once: whether it handed out a persist job, and what it sends (persist jobs
/// complete at once).
fn poll_once(node: &mut PaxosNode) -> (bool, Vec<(u64, Msg)>) {
    let out = node.poll();
    let mut all = out.messages;
    let persisted = out.persist.is_some();
    if let Some(job) = out.persist {
        all.extend(job.after);
        all.extend(node.on_persisted(job.number));
    }
    let msgs = all
        .into_iter()
        .filter_map(|m| wire::decode(&m.payload.slice(1..)).ok().map(|d| (m.to, d)))
        .collect();
    (persisted, msgs)
}

/// Ticks `a` and its twin `b` alike until both have started a pre-prepare round: they must
/// do everything at the same ticks (the same timer) with the same messages (the same ballot).
fn assert_same_timing(a: &mut PaxosNode, b: &mut PaxosNode) {
    let (_, max) = a.config().election_ticks();
    for t in 0..2 * max {
        a.tick();
        b.tick();
        let (pa, ma) = poll_once(a);
        let (pb, mb) = poll_once(b);
        assert_eq!((pa, &ma), (pb, &mb), "tick {t}");
        if ma.iter().any(|(_, m)| matches!(m, Msg::PrePrepare { .. })) {
            assert!(a.is_pre_candidate() && b.is_pre_candidate());
            return;
        }
    }
    panic!("no election timeout ran out");
}

/// A pre-prepare is non-binding: the receiver answers whether it would promise the ballot,
/// and changes nothing: no promise, no persist job (no hard state), no timer reset (it times
/// out at the very tick its twin, which never got the pre-prepare, does), no leader
/// forgotten, no ballot seen. Granted by a replica with no live leader, refused by one that
/// follows a live leader (stable-leader rule).
#[test]
fn a_pre_prepare_changes_nothing_on_the_receiver() {
    for follows in [false, true] {
        let (mut a, mut twin) = (bare(5), bare(5));
        if follows {
            let beat = payload(&Msg::Accept {
                ballot: wire::ballot(1, 0),
                first: 1,
                commit: 0,
                lease: 0,
                values: vec![],
            });
            for n in [&mut a, &mut twin] {
                n.step(1, &beat).unwrap();
                drain(n);
                assert_eq!(n.leader(), Some(1));
            }
        }
        a.tick();
        twin.tick();
        drain(&mut a);
        drain(&mut twin);
        let ballot_before = a.ballot();
        let pre = wire::ballot(wire::round_of(ballot_before) + 3, 2);
        a.step(
            3,
            &payload(&Msg::PrePrepare {
                ballot: pre,
                from: a.commit_index(),
            }),
        )
        .unwrap();
        let (persisted, sent) = poll_once(&mut a);
        assert!(!persisted, "a pre-prepare made a persist job");
        assert_eq!(
            sent,
            vec![(
                3,
                Msg::PrePromise {
                    ballot: pre,
                    granted: !follows
                }
            )]
        );
        assert_eq!(a.ballot(), ballot_before, "no promise");
        assert_eq!(a.leader(), twin.leader(), "no leader forgotten");
        assert!(!a.is_candidate() && !a.is_pre_candidate());
        assert_same_timing(&mut a, &mut twin);
    }
}

/// A leader learns that a follower is rejoining (memory durability, lost its state) from its
/// answers, and counts nothing it acknowledged before. The follower caught up and rejoined,
/// but its answers saying so were lost (or are still on their way), and it lost its state
/// again: the leader, still listing it as rejoining, kept the old acknowledged slots and
/// never sent it the log again (its heartbeats from past the follower's end were answered
/// with a gap forever; the lab run memory_crashes_with_rejoin_many_seeds hit it).
#[test]
fn a_replica_that_loses_its_state_again_before_the_leader_saw_it_rejoin_catches_up() {
    let mut s = common::manual(3, 23, u64::MAX / 2);
    elect(&mut s, 0);
    propose(&mut s, 0, b"v1");
    propose(&mut s, 0, b"v2");
    tick_settle(&mut s, 0, 2);
    assert!(s.all_applied(2));
    s.lose_disk_on_crash = true;
    s.crash(2);
    s.start(2);
    assert!(s.live(2).rejoining());
    // C's answers saying it rejoined never reach A.
    s.filter = Some(Box::new(|p| {
        !(p.from == 3
            && matches!(
                msg(p),
                Some(Msg::Accepted {
                    rejoining: false,
                    ..
                })
            ))
    }));
    tick_settle(&mut s, 0, 3);
    assert!(!s.live(2).rejoining(), "C rejoined");
    assert_eq!(s.live(0).rejoining_peers(), vec![3]);
    // C loses its state again.
    s.crash(2);
    s.start(2);
    s.lose_disk_on_crash = false;
    s.filter = None;
    tick_settle(&mut s, 0, 4);
    assert!(!s.live(2).rejoining(), "C caught up again");
    assert_eq!(s.live(2).commit_index(), 2);
    assert!(s.live(0).rejoining_peers().is_empty());
    s.assert_safe();
}

/// A leader fills an accept up to `max_append_bytes` of values; with small values a backlog
/// went in one accept of any number of values. Receivers refuse accepts of more than
/// `wire::MAX_ACCEPT_VALUES` values (decoding one costs a 32-byte handle per value): the
/// leader must never send one, or a backlog of small entries never commits.
#[test]
fn a_backlog_of_more_small_entries_than_one_accept_carries_commits_everywhere() {
    let mut s = Sim::with_config(3, 24, |c| {
        c.election_timeout_max_ms = 1_000_000 * HEARTBEAT_MS;
    });
    s.ticking = false;
    s.max_persist_delay_ms = 0;
    elect(&mut s, 0);
    // The followers miss the accepts while the backlog builds.
    s.isolate(0);
    let n = wire::MAX_ACCEPT_VALUES as u64 + 100;
    for k in 0..n {
        s.live_mut(0)
            .propose(Bytes::from(vec![(k % 251) as u8]))
            .unwrap();
    }
    s.drive(0);
    s.settle();
    s.heal();
    tick_settle(&mut s, 0, 4);
    for i in 0..3 {
        assert_eq!(s.live(i).commit_index(), n, "node {}", i + 1);
        assert_eq!(s.live(i).stats().bad_payloads, 0, "node {}", i + 1);
    }
    s.assert_safe();
}

/// An acceptor reports in its promise every slot it holds after the candidate's `from`;
/// receivers refuse promises of more than `wire::MAX_PROMISE_ENTRIES` slots. An acceptor
/// holding more used to promise anyway (raising its ballot, refusing the current leader)
/// and send a promise every candidate refused. It withholds its promise instead, and does
/// not grant the pre-prepare either.
#[test]
fn an_acceptor_holding_more_slots_than_a_promise_carries_withholds_its_promise() {
    let cfg = GroupConfig::new(2, vec![1, 2, 3], 0);
    let accepted = wire::ballot(1, 0);
    let n = wire::MAX_PROMISE_ENTRIES as u64 + 1;
    let init = InitialState {
        hard_state: HardState {
            term: accepted,
            vote: 1,
            commit: 0,
        },
        snapshot: None,
        entries: (1..=n)
            .map(|i| LogEntry::new(i, accepted, Bytes::new()))
            .collect(),
    };
    let d = Arc::new(ApplyDispatcher::discarding(0));
    let mut node = PaxosNode::new(cfg, init, d, None).unwrap();
    // Past the bar after a restart (it would grant a pre-prepare of a shorter log).
    for _ in 0..node.config().election_ticks().0 {
        node.tick();
    }
    drain(&mut node);
    let ballot = wire::ballot(2, 2);
    let answers = |node: &mut PaxosNode| -> Vec<Msg> {
        drain(node)
            .into_iter()
            .filter(|(to, m)| *to == 3 && matches!(m, Msg::PrePromise { .. }))
            .map(|(_, m)| m)
            .collect()
    };
    node.step(3, &payload(&Msg::PrePrepare { ballot, from: 0 }))
        .unwrap();
    assert_eq!(
        answers(&mut node),
        vec![Msg::PrePromise {
            ballot,
            granted: false
        }]
    );
    node.step(3, &payload(&Msg::PrePrepare { ballot, from: 1 }))
        .unwrap();
    assert_eq!(
        answers(&mut node),
        vec![Msg::PrePromise {
            ballot,
            granted: true
        }]
    );
    node.step(
        3,
        &payload(&Msg::Prepare {
            ballot,
            from: 0,
            transfer: true,
        }),
    )
    .unwrap();
    let out = node.poll();
    assert!(
        out.messages.is_empty() && out.persist.is_none(),
        "it promised"
    );
    assert_eq!(node.ballot(), accepted);
    // A candidate that knows more of the log (a later `from`) gets its promise.
    node.step(
        3,
        &payload(&Msg::Prepare {
            ballot,
            from: 1,
            transfer: true,
        }),
    )
    .unwrap();
    // The promise travels in chunks.
    let mut r = Reassembler::default();
    let mut promises = Vec::new();
    for m in drain_raw(&mut node).into_iter().filter(|m| m.to == 3) {
        if let Some(body) = r.push(2, &m.payload).unwrap() {
            promises.push(wire::decode(&body).unwrap());
        }
    }
    assert!(
        matches!(&promises[..], [Msg::Promise { entries, .. }] if entries.len() as u64 == n - 1),
        "no promise of slots 2..={n}"
    );
    assert_eq!(node.ballot(), ballot);
}

/// A `Rejected` names the promise the acceptor holds, and the replica bids above it next
/// time. Any member could answer one pre-prepare with `Rejected { promised: MAX_BALLOT }`:
/// the replica then had no ballot left and never campaigned again. A `Rejected` now counts
/// only as an answer to the request in progress and raises the next ballot at most
/// `wire::MAX_REJECTED_ROUNDS` rounds above the refused one (an honest promise is a few
/// rounds ahead; a liar gains that many rounds per election timeout of its victim). The
/// replica keeps serving as a follower throughout.
#[test]
fn a_rejected_naming_the_largest_ballot_does_not_exhaust_the_ballot_space() {
    let mut node = bare(7);
    assert!(node.campaign());
    let pre = drain(&mut node)
        .into_iter()
        .find_map(|(_, m)| match m {
            Msg::PrePrepare { ballot, .. } => Some(ballot),
            _ => None,
        })
        .expect("a pre-prepare");
    let liar = |ballot| {
        payload(&Msg::Rejected {
            ballot,
            promised: wire::MAX_BALLOT,
        })
    };
    node.step(3, &liar(pre)).unwrap();
    // A refusal of a ballot that is not in progress counts for nothing.
    node.step(3, &liar(wire::ballot(wire::round_of(pre) + 5, 1)))
        .unwrap();
    assert!(node.campaign(), "no ballot left to campaign with");
    let next = drain(&mut node)
        .into_iter()
        .find_map(|(_, m)| match m {
            Msg::PrePrepare { ballot, .. } => Some(ballot),
            _ => None,
        })
        .expect("a pre-prepare");
    assert_eq!(
        wire::round_of(next),
        wire::round_of(pre) + wire::MAX_REJECTED_ROUNDS + 1
    );
    // It follows a leader and takes its values.
    let b = wire::ballot(2, 0);
    node.step(
        1,
        &payload(&Msg::Accept {
            ballot: b,
            first: 1,
            commit: 0,
            lease: 0,
            values: vec![Bytes::from_static(b"x")],
        }),
    )
    .unwrap();
    let sent = drain(&mut node);
    assert!(
        sent.iter()
            .any(|(to, m)| *to == 1 && matches!(m, Msg::Accepted { matched: 1, .. })),
        "{sent:?}"
    );
    assert_eq!(node.leader(), Some(1));
    assert_eq!(node.ballot(), b);
}

/// A member may also send requests under a huge ballot of its own (Multi-Paxos tolerates
/// crashed members, not lying ones; see the crate docs): an acceptor that promised the
/// largest ballot cannot campaign any more, but it neither panics nor floods its log, and
/// keeps answering as a follower.
#[test]
fn a_prepare_under_the_largest_ballot_leaves_a_working_follower() {
    let mut node = bare(8);
    // Past the bar after a (re)start, with no leader heard.
    for _ in 0..node.config().election_ticks().0 {
        node.tick();
    }
    drain(&mut node);
    node.step(
        1,
        &payload(&Msg::Prepare {
            ballot: wire::MAX_BALLOT,
            from: 0,
            transfer: true,
        }),
    )
    .unwrap();
    drain(&mut node);
    assert_eq!(node.ballot(), wire::MAX_BALLOT);
    assert!(!node.campaign(), "a ballot above the largest");
    let (_, max) = node.config().election_ticks();
    for _ in 0..4 * max {
        node.tick();
        drain(&mut node);
    }
    assert_eq!(node.stats().pre_rounds, 0);
    node.step(
        1,
        &payload(&Msg::Accept {
            ballot: wire::MAX_BALLOT,
            first: 1,
            commit: 1,
            lease: 0,
            values: vec![Bytes::from_static(b"x")],
        }),
    )
    .unwrap();
    drain(&mut node);
    assert_eq!(node.commit_index(), 1);
    assert_eq!(node.check_invariants(), Ok(()));
}
