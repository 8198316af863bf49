//! Review findings: each test reproduces a defect found in the Multi-Paxos core (it failed
//! before the fix that came with it), built message by message on the lab or on a bare
//! `PaxosNode`.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use mako_group::{GroupConfig, HardState, InitialState, LogEntry};
use mako_paxos::PaxosNode;
use mako_paxos::wire::{self, Msg};
use mako_replication::ApplyDispatcher;

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
