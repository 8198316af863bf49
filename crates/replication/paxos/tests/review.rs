//! Review findings: each test reproduces a defect found in the Multi-Paxos core (it failed
//! before the fix that came with it), built message by message on the lab or on a bare
//! `PaxosNode`.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{Sim, tick_settle};
use mako_group::{GroupConfig, HardState, InitialState, LogEntry};
use mako_lab::{HEARTBEAT_MS, Packet};
use mako_paxos::PaxosNode;
use mako_paxos::wire::{self, Msg};
use mako_replication::ApplyDispatcher;

/// The decoded message of a whole (unchunked) packet.
fn msg(p: &Packet) -> Option<Msg> {
    if p.payload.first() != Some(&0) {
        return None;
    }
    wire::decode(&p.payload.slice(1..)).ok()
}

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

fn elect(s: &mut Sim, i: usize) {
    assert!(s.live_mut(i).campaign());
    s.drive(i);
    s.settle();
    assert!(s.live(i).is_leader(), "node {} did not win", i + 1);
}

fn propose(s: &mut Sim, i: usize, v: &'static [u8]) {
    s.live_mut(i).propose(Bytes::from_static(v)).unwrap();
    s.drive(i);
    s.settle();
}

/// Encodes a whole (unchunked) message as the transport carries it.
fn payload(m: &Msg) -> Bytes {
    let mut v = wire::encode(m, usize::MAX);
    assert_eq!(v.len(), 1);
    v.remove(0)
}

/// Every message `node` has to send, held ones included (its persist jobs complete at once).
fn drain(node: &mut PaxosNode) -> Vec<(u64, Msg)> {
    let mut msgs = Vec::new();
    loop {
        let out = node.poll();
        if out.is_empty() {
            break;
        }
        let mut all = out.messages;
        if let Some(job) = out.persist {
            all.extend(job.after);
            all.extend(node.on_persisted(job.number));
        }
        for m in all {
            if let Ok(d) = wire::decode(&m.payload.slice(1..)) {
                msgs.push((m.to, d));
            }
        }
    }
    msgs
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
