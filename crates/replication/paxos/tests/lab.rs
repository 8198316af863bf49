//! The Paxos lab: `PaxosNode`s on the deterministic simulator, through elections, failures,
//! an unreliable network, crashes with asynchronous persistence, snapshot catch-up,
//! rejoining, transfers and leases; every run checks that applied sequences are prefixes
//! of one history, committed slots agree and are never lost, one leader per ballot, and no
//! leader while another's lease runs.

mod common;

use common::Sim;
use rand::Rng;

fn wait_leader(s: &mut Sim) -> usize {
    assert!(
        s.run_until(5_000, |s| s.leader().is_some()),
        "no leader elected"
    );
    s.leader().unwrap_or(0)
}

/// Proposes `k` values (retrying across leader changes) and waits until all live replicas
/// applied them; returns the values.
fn commit_values(s: &mut Sim, k: usize) -> Vec<bytes::Bytes> {
    let mut out = Vec::new();
    for _ in 0..k {
        let v = loop {
            if let Some(v) = s.propose() {
                break v;
            }
            s.run_ms(10);
        };
        out.push(v);
        s.run_ms(1);
    }
    let want: std::collections::BTreeSet<_> = out.iter().cloned().collect();
    let ok = s.run_until(20_000, |s| {
        (0..s.n).all(|i| {
            !s.alive(i) || {
                let h = s.histories[i].lock();
                want.iter().all(|v| h.iter().any(|(_, e)| e == v))
            }
        })
    });
    // A value proposed to a leader that lost its office may be dropped; the ones applied anywhere must be everywhere.
    let _ = ok;
    out
}

/// Every live replica's history is a prefix of the longest one, and holds every applied index
/// up to its applied index (committed entries are never lost).
fn assert_converged(s: &Sim) {
    s.assert_safe();
    let applied = s.checker.lock().applied.clone();
    for i in 0..s.n {
        if !s.alive(i) {
            continue;
        }
        let h = s.histories[i].lock();
        let upto = s.node(i).applied_index();
        let mine: std::collections::BTreeMap<u64, bytes::Bytes> = h.iter().cloned().collect();
        for (idx, v) in applied.range(..=upto) {
            assert_eq!(
                mine.get(idx),
                Some(v),
                "node {} lacks committed index {idx} (applied to {upto})",
                i + 1
            );
        }
    }
}

#[test]
fn a_leader_is_elected_and_entries_commit_everywhere() {
    let mut s = Sim::new(3, 1);
    wait_leader(&mut s);
    let vs = commit_values(&mut s, 30);
    for i in 0..3 {
        let h = s.histories[i].lock();
        let got: Vec<_> = h.iter().map(|(_, e)| e.clone()).collect();
        assert_eq!(got, vs, "node {} applied the values in order", i + 1);
    }
    assert_converged(&s);
    // One Phase 1, then Phase 2 only: the leader keeps its ballot.
    let l = s.leader().unwrap();
    assert_eq!(s.node(l).stats().elections_won, 1);
}

#[test]
fn a_healthy_leader_is_not_disturbed() {
    let mut s = Sim::new(5, 2);
    let l = wait_leader(&mut s);
    let ballot = s.node(l).ballot();
    commit_values(&mut s, 10);
    s.run_ms(3_000);
    assert_eq!(s.leader(), Some(l));
    assert_eq!(s.node(l).ballot(), ballot);
    for i in 0..5 {
        assert_eq!(s.node(i).stats().campaigns, u64::from(i == l));
    }
    s.assert_safe();
}

#[test]
fn the_leader_fails_and_a_majority_goes_on() {
    let mut s = Sim::new(5, 3);
    let l = wait_leader(&mut s);
    commit_values(&mut s, 10);
    s.crash(l);
    let l2 = wait_leader(&mut s);
    assert_ne!(l, l2);
    commit_values(&mut s, 10);
    s.start(l);
    commit_values(&mut s, 5);
    assert!(s.run_until(5_000, |s| s.all_applied(25)));
    assert_converged(&s);
}

#[test]
fn without_a_majority_nothing_commits_and_it_resumes_after() {
    let mut s = Sim::new(3, 4);
    let l = wait_leader(&mut s);
    commit_values(&mut s, 5);
    let others: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    s.crash(others[0]);
    s.crash(others[1]);
    let before = s.node(l).commit_index();
    for _ in 0..5 {
        let v = s.value();
        let _ = s.node_mut(l).propose(v);
    }
    s.run_ms(2_000);
    assert_eq!(s.node(l).commit_index(), before);
    assert!(!s.node(l).is_leader(), "check-quorum steps the leader down");
    s.start(others[0]);
    s.start(others[1]);
    wait_leader(&mut s);
    commit_values(&mut s, 5);
    assert_converged(&s);
}

#[test]
fn concurrent_proposals_are_pipelined_and_batched() {
    let mut s = Sim::new(3, 5);
    let l = wait_leader(&mut s);
    let sent_before = s.sent;
    for _ in 0..200 {
        let v = s.value();
        s.node_mut(l).propose(v).unwrap();
    }
    s.drive(l);
    assert!(s.run_until(5_000, |s| s.all_applied(200)));
    assert_converged(&s);
    // 200 values of ~4 bytes in accepts of up to 64 bytes: far fewer accepts than values.
    assert!(s.sent - sent_before < 400, "sent {}", s.sent - sent_before);
}

/// Many seeds of an unreliable network (drop, delay, reorder, duplicate), partitions,
/// crashes and restarts with asynchronous persistence, while values are proposed.
#[test]
fn random_faults_across_many_seeds() {
    let seeds: u64 = std::env::var("PAXOS_LAB_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    for seed in 0..seeds {
        let n = if seed % 2 == 0 { 3 } else { 5 };
        let mut s = Sim::with_config(n, 100 + seed, |c| {
            if seed % 3 == 0 {
                c.compact_after_entries = 15;
            }
        });
        s.net = common::NetConfig::unreliable();
        s.max_persist_delay_ms = 8;
        let minority = (n - 1) / 2;
        for t in 0..4_000u64 {
            let r: f64 = s.rng.random();
            if r < 0.02 {
                let _ = s.propose();
            } else if r < 0.0215 {
                let down = (0..n).filter(|&i| !s.alive(i)).count();
                let i = s.rng.random_range(0..n);
                if s.alive(i) && down < minority {
                    s.crash(i);
                }
            } else if r < 0.024 {
                let i = s.rng.random_range(0..n);
                if !s.alive(i) {
                    s.start(i);
                }
            } else if r < 0.025 {
                let i = s.rng.random_range(0..n);
                s.isolate(i);
            } else if r < 0.028 {
                s.heal();
            }
            s.step();
            if t % 100 == 0 {
                s.check_durable_majority();
                s.assert_safe();
            }
        }
        // Heal everything: the group must converge on one history holding every commit.
        s.heal();
        s.net = common::NetConfig::perfect();
        for i in 0..n {
            if !s.alive(i) {
                s.start(i);
            }
        }
        wait_leader(&mut s);
        let vs = commit_values(&mut s, 3);
        let last = vs.last().cloned().unwrap();
        assert!(
            s.run_until(20_000, |s| (0..n)
                .all(|i| s.histories[i].lock().iter().any(|(_, e)| *e == last))),
            "seed {seed}: the final value {last:?} did not reach every replica: {:#?}",
            (0..n)
                .map(|i| format!(
                    "{:?} stats {:?} hist_len {}",
                    s.node(i),
                    s.node(i).stats(),
                    s.histories[i].lock().len()
                ))
                .collect::<Vec<_>>()
        );
        assert_converged(&s);
    }
}

#[test]
fn a_replica_that_missed_compacted_slots_catches_up_by_snapshot() {
    let mut s = Sim::with_config(3, 6, |c| c.compact_after_entries = 10);
    let l = wait_leader(&mut s);
    commit_values(&mut s, 5);
    let lagging = (l + 1) % 3;
    s.crash(lagging);
    commit_values(&mut s, 60);
    assert!(s.node(l).first_index() > 6, "the leader compacted");
    s.start(lagging);
    assert!(s.run_until(10_000, |s| s.node(lagging).applied_index() >= 65));
    assert!(s.node(lagging).stats().snapshots_installed >= 1);
    commit_values(&mut s, 5);
    assert_converged(&s);
    // Restarting from an installed snapshot works too.
    s.crash(lagging);
    s.start(lagging);
    commit_values(&mut s, 5);
    assert_converged(&s);
}

#[test]
fn a_replica_that_lost_its_disk_rejoins_without_promising_until_caught_up() {
    let mut s = Sim::new(3, 7);
    s.lose_disk_on_crash = true;
    let l = wait_leader(&mut s);
    commit_values(&mut s, 20);
    let r = (l + 1) % 3;
    s.crash(r);
    s.start(r);
    assert!(s.node(r).rejoining());
    // It does not campaign however long it goes without a leader's message.
    s.isolate(r);
    s.run_ms(2_000);
    assert_eq!(s.node(r).stats().campaigns, 0);
    assert!(s.node(r).rejoining());
    s.heal();
    assert!(s.run_until(5_000, |s| !s.node(r).rejoining()));
    assert!(s.node(r).commit_index() >= 20);
    commit_values(&mut s, 5);
    assert_converged(&s);
}

#[test]
fn leadership_moves_to_the_preferred_replica() {
    let mut s = Sim::with_config(3, 8, |c| c.preferred = Some(3));
    assert!(s.run_until(10_000, |s| s.leader() == Some(2)));
    commit_values(&mut s, 5);
    assert_eq!(s.leader(), Some(2));
    assert_converged(&s);
}

#[test]
fn transfer_leader_hands_over_to_the_target() {
    let mut s = Sim::new(3, 9);
    let l = wait_leader(&mut s);
    commit_values(&mut s, 5);
    let to = (l + 1) % 3;
    s.node_mut(l).transfer_leader(Sim::id(to)).unwrap();
    assert!(
        s.node_mut(l).propose(s_value()).is_err(),
        "no proposal during a transfer"
    );
    assert!(s.run_until(3_000, |s| s.leader() == Some(to)));
    commit_values(&mut s, 5);
    assert_converged(&s);
}

fn s_value() -> bytes::Bytes {
    bytes::Bytes::from_static(b"during-transfer")
}

#[test]
fn no_leader_is_elected_while_another_holds_a_lease() {
    for seed in 0..8 {
        let mut s = Sim::new(3, 200 + seed);
        s.net = common::NetConfig::unreliable();
        let l = wait_leader(&mut s);
        commit_values(&mut s, 3);
        s.run_ms(500);
        // Cut the leader off: the others elect a new one only after its lease ran out.
        s.isolate(l);
        s.run_ms(3_000);
        s.heal();
        commit_values(&mut s, 3);
        s.assert_safe();
        assert!(
            s.checker.lock().lease_grants > 0,
            "seed {seed}: no lease was ever held"
        );
    }
}

#[test]
fn a_one_replica_group_leads_and_commits_alone() {
    let mut s = Sim::new(1, 10);
    wait_leader(&mut s);
    let vs = commit_values(&mut s, 10);
    let h: Vec<_> = s.histories[0]
        .lock()
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(h, vs);
    s.crash(0);
    s.start(0);
    wait_leader(&mut s);
    commit_values(&mut s, 2);
    assert_converged(&s);
}

/// Every replica crashes at once, repeatedly, with persist jobs still at the disk (lost):
/// what was acknowledged was durable, so nothing committed is lost or changed.
#[test]
fn whole_group_crashes_with_writes_in_flight_across_many_seeds() {
    let seeds: u64 = std::env::var("PAXOS_LAB_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    for seed in 0..seeds {
        let n = 3 + 2 * (seed as usize % 2);
        let mut s = Sim::new(n, 300 + seed);
        s.net = common::NetConfig::unreliable();
        s.max_persist_delay_ms = 15;
        for round in 0..6 {
            for t in 0..400 {
                if s.rng.random_bool(0.05) {
                    let _ = s.propose();
                }
                s.step();
                if t % 5 == 0 {
                    s.check_durable_majority();
                    s.assert_safe();
                }
            }
            let _ = round;
            for i in 0..n {
                s.crash(i);
            }
            s.check_durable_majority();
            s.assert_safe();
            for i in 0..n {
                s.start(i);
            }
            s.assert_safe();
        }
        s.net = common::NetConfig::perfect();
        wait_leader(&mut s);
        let vs = commit_values(&mut s, 2);
        let last = vs.last().cloned().unwrap();
        assert!(
            s.run_until(20_000, |s| (0..n)
                .all(|i| s.histories[i].lock().iter().any(|(_, e)| *e == last))),
            "seed {seed}: no convergence"
        );
        assert_converged(&s);
    }
}

/// Memory durability: a crash loses the disk, the replica comes back rejoining. One replica
/// at a time (memory durability survives the loss of a minority only, and a rejoining
/// replica counts as lost until it has caught up).
#[test]
fn memory_mode_crashes_with_rejoin_across_many_seeds() {
    let seeds: u64 = std::env::var("PAXOS_LAB_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
        / 2;
    for seed in 0..seeds.max(4) {
        let n = 3 + 2 * (seed as usize % 2);
        let mut s = Sim::new(n, 400 + seed);
        s.lose_disk_on_crash = true;
        s.net = common::NetConfig::unreliable();
        for t in 0..4_000u64 {
            let r: f64 = s.rng.random();
            let settled = (0..n).all(|i| s.alive(i) && !s.node(i).rejoining());
            if r < 0.02 {
                let _ = s.propose();
            } else if r < 0.022 && settled {
                let i = s.rng.random_range(0..n);
                s.crash(i);
                s.start(i);
            }
            s.step();
            if t % 500 == 0 {
                s.assert_safe();
            }
        }
        s.net = common::NetConfig::perfect();
        wait_leader(&mut s);
        let vs = commit_values(&mut s, 2);
        let last = vs.last().cloned().unwrap();
        assert!(
            s.run_until(20_000, |s| (0..n)
                .all(|i| s.histories[i].lock().iter().any(|(_, e)| *e == last))),
            "seed {seed}: no convergence"
        );
        assert!(
            (0..n).all(|i| !s.node(i).rejoining()),
            "seed {seed}: still rejoining"
        );
        assert_converged(&s);
    }
}
