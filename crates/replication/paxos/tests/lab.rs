//! The Paxos-specific lab runs: what only Multi-Paxos promises, on mako-lab's cluster
//! (every generic scenario, the many-seed fault and crash runs included, runs for Paxos
//! and Raft alike from `mako-lab`'s `tests/lab.rs`).

use bytes::Bytes;
use mako_lab::scenarios::{Values, wait_leader};
use mako_lab::{Cluster, fast_timing};
use mako_paxos::PaxosNode;

/// The lab's cluster at ten times its pace, with leases.
fn cluster(n: usize, seed: u64) -> Cluster<PaxosNode> {
    let mut c = Cluster::with_config(n, seed, fast_timing);
    c.leases = true;
    c
}

/// One Phase 1, then Phase 2 only: the leader keeps its ballot while values commit, in
/// order, everywhere.
#[test]
fn a_leader_is_elected_once_and_entries_commit_everywhere() {
    let mut c = cluster(3, 1);
    wait_leader(&mut c);
    let vs = Values::default().commit(&mut c, 30);
    for i in 0..3 {
        let got: Vec<_> = c.histories[i]
            .lock()
            .iter()
            .map(|(_, e)| e.clone())
            .collect();
        assert_eq!(got, vs, "node {} applied the values in order", i + 1);
    }
    c.assert_converged();
    let l = c.leader().expect("a leader");
    assert_eq!(c.live(l).stats().elections_won, 1);
}

/// The stable-leader rule: nobody else campaigns while a healthy leader is heard from (no
/// election timeout runs out: not even a pre-prepare round starts).
///
/// (The first election may see two Phase 1 runs: pre-prepares change nothing, so two
/// replicas whose timers run out together can both be granted, as with Raft's pre-vote.)
#[test]
fn a_healthy_leader_is_not_disturbed() {
    let mut c = cluster(5, 2);
    wait_leader(&mut c);
    Values::default().commit(&mut c, 10);
    let l = c.leader().expect("a leader");
    let ballot = c.live(l).ballot();
    let rounds = |c: &Cluster<PaxosNode>| -> Vec<(u64, u64)> {
        (0..5)
            .map(|i| (c.live(i).stats().pre_rounds, c.live(i).stats().campaigns))
            .collect()
    };
    let before = rounds(&c);
    c.run_ms(3_000);
    assert_eq!(c.leader(), Some(l));
    assert_eq!(c.live(l).ballot(), ballot);
    assert_eq!(rounds(&c), before, "an election timeout ran out");
    assert_eq!(c.live(l).stats().step_downs, 0);
    c.assert_safe();
}

#[test]
fn a_replica_that_lost_its_disk_rejoins_without_promising_until_caught_up() {
    let mut c = cluster(3, 7);
    c.lose_disk_on_crash = true;
    c.rejoin_after_disk_loss = true;
    let mut v = Values::default();
    let l = wait_leader(&mut c);
    v.commit(&mut c, 20);
    let r = (l + 1) % 3;
    c.crash(r);
    c.start(r);
    assert!(c.live(r).rejoining());
    // It does not campaign however long it goes without a leader's message.
    c.isolate(r);
    c.run_ms(2_000);
    assert_eq!(c.live(r).stats().campaigns, 0);
    assert!(c.live(r).rejoining());
    c.heal();
    assert!(c.run_until(5_000, |c| !c.live(r).rejoining()));
    assert!(c.live(r).commit_index() >= 20);
    v.commit(&mut c, 5);
    c.assert_converged();
}

/// A leader cut off from the group takes proposals nobody else hears; a new leader takes
/// over, the partition heals and no client proposes again. The old leader's proposals sit
/// past the new leader's log: they stayed unresolved for good (`outstanding()` above zero).
/// The new leader fills the slots the old one holds with no-ops: each proposal is decided
/// and reported dropped, once, on the old leader, and nothing is lost or applied twice.
#[test]
fn a_deposed_leaders_proposals_are_resolved_without_further_proposals() {
    let mut c = cluster(3, 9);
    let l = wait_leader(&mut c);
    Values::default().commit(&mut c, 5);
    c.isolate(l);
    for k in 0..3 {
        c.live_mut(l)
            .propose(Bytes::from(format!("lost{k}")))
            .expect("it still leads");
    }
    assert!(
        c.run_until(5_000, |c| c.leader().is_some_and(|n| n != l)),
        "no new leader"
    );
    c.heal();
    assert!(
        c.run_until(5_000, |c| (0..3)
            .all(|i| c.live(i).unresolved_proposals() == 0)),
        "unresolved: {:?}",
        (0..3)
            .map(|i| c.live(i).unresolved_proposals())
            .collect::<Vec<_>>()
    );
    let old = c.live(l);
    assert_eq!(old.dispatcher().stats().unapplied, 3);
    assert_eq!(old.stats().resolved, old.stats().proposed);
    c.assert_converged();
}
