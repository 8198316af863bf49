//! The lab scenarios (MIT 6.824 / Mako's RaftLabTest), each generic over the protocol core;
//! what each checks is in `LAB-TESTS.md`. `tests/lab.rs` runs them for every protocol.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use mako_group::GroupConfig;
use mako_transport::sim::SimConfig;
use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::{Cluster, ELECTION_MS, LabCore, fast_timing};

/// Lab scenario `initial_election`.
pub fn initial_election<C: LabCore>() {
    let mut c = Cluster::<C>::new(5, 1);
    let leader = c.check_one_leader();
    let term = c.agreed_term().expect("all replicas agree on the term");
    c.run_ms(2 * ELECTION_MS);
    assert_eq!(
        c.check_one_leader(),
        leader,
        "leader changed with no failures"
    );
    assert_eq!(c.agreed_term(), Some(term), "term changed with no failures");
}

/// Lab scenario `re_election`.
pub fn re_election<C: LabCore>() {
    let mut c = Cluster::<C>::new(5, 2);
    let l1 = c.check_one_leader();
    c.disconnect(l1);
    let others: Vec<usize> = (0..5).filter(|&i| i != l1).collect();
    let l2 = c.check_one_leader_among(&others);
    // The old leader rejoining does not disturb the new one.
    c.connect(l1);
    c.run_ms(ELECTION_MS);
    assert_eq!(c.check_one_leader(), l2);
    // Only 2 of 5 connected: no leader among them.
    let cut: Vec<usize> = (0..5).filter(|&i| i != l2).take(3).collect();
    for &i in &cut {
        c.disconnect(i);
    }
    c.disconnect(l2);
    c.run_ms(3 * ELECTION_MS);
    let connected: Vec<usize> = (0..5).filter(|i| !cut.contains(i) && *i != l2).collect();
    assert!(
        connected
            .iter()
            .all(|&i| !c.node(i).expect("alive").is_leader()),
        "a leader arose without a majority"
    );
    // A majority returns.
    for &i in &cut[..2] {
        c.connect(i);
    }
    let majority: Vec<usize> = connected.iter().chain(&cut[..2]).copied().collect();
    c.check_one_leader_among(&majority);
    for i in 0..5 {
        c.connect(i);
    }
    c.check_one_leader();
}

/// Lab scenario `basic_agree`.
pub fn basic_agree<C: LabCore>() {
    let mut c = Cluster::<C>::new(5, 3);
    let l = c.check_one_leader();
    // What the first leader logged by itself (Raft: its empty entry; Paxos: nothing).
    let base = c.node(l).expect("leader alive").last_index();
    for (k, cmd) in [b"a", b"b", b"c"].iter().enumerate() {
        let (nd, _) = c.n_committed(base + k as u64 + 1);
        assert_eq!(nd, 0, "committed before start");
        let index = c.one(*cmd, 5, false);
        assert_eq!(index, base + k as u64 + 1);
    }
}

/// Lab scenario `fail_agree`.
pub fn fail_agree<C: LabCore>() {
    let mut c = Cluster::<C>::new(5, 4);
    c.one(b"101", 5, false);
    let l = c.check_one_leader();
    let f1 = (l + 1) % 5;
    let f2 = (l + 2) % 5;
    c.disconnect(f1);
    c.disconnect(f2);
    c.one(b"102", 3, false);
    c.one(b"103", 3, false);
    c.run_ms(ELECTION_MS);
    c.one(b"104", 3, false);
    c.connect(f1);
    c.connect(f2);
    c.one(b"105", 5, true);
    assert!(c.run_until(2000, |c| {
        (0..5).all(|i| c.applied_len(i) == c.applied_len(l))
    }));
}

/// Lab scenario `fail_no_agree`.
pub fn fail_no_agree<C: LabCore>() {
    let mut c = Cluster::<C>::new(5, 5);
    c.one(b"10", 5, false);
    let l = c.check_one_leader();
    for k in 1..=3 {
        c.disconnect((l + k) % 5);
    }
    let before = c.live(l).commit_index();
    let (index, _) = c.start_cmd(l, b"20").expect("leader accepts");
    c.run_ms(2 * ELECTION_MS);
    assert_eq!(c.n_committed(index).0, 0, "committed without a majority");
    assert!(
        c.run_until(2 * ELECTION_MS, |c| !c.live(l).is_leader()),
        "check-quorum steps the cut-off leader down"
    );
    assert_eq!(c.live(l).commit_index(), before, "nothing committed");
    for k in 1..=3 {
        c.connect((l + k) % 5);
    }
    let l2 = c.check_one_leader();
    let (i2, _) = c.start_cmd(l2, b"30").expect("new leader accepts");
    // 1: first leader's empty entry, 2: "10", 3: maybe "20", then the new leader's empty entry.
    assert!((3..=5).contains(&i2), "unexpected index {i2}");
    c.one(b"1000", 5, true);
}

/// Lab scenario `rejoin`.
pub fn rejoin<C: LabCore>() {
    let mut c = Cluster::<C>::new(5, 6);
    c.one(b"101", 5, true);
    let l1 = c.check_one_leader();
    c.disconnect(l1);
    for cmd in [b"102", b"103", b"104"] {
        c.start_cmd(l1, cmd);
    }
    c.one(b"103", 4, true);
    let l2 = c.check_one_leader_among(&(0..5).filter(|&i| i != l1).collect::<Vec<_>>());
    c.disconnect(l2);
    c.connect(l1);
    c.one(b"104", 4, true);
    c.connect(l2);
    c.one(b"105", 5, true);
    assert!(c.histories_agree());
}

/// Lab scenario `concurrent_starts`.
pub fn concurrent_starts<C: LabCore>() {
    let mut c = Cluster::<C>::new(5, 7);
    'attempt: for _ in 0..5 {
        let l = c.check_one_leader();
        let term = c.node(l).expect("leader alive").term();
        let mut indexes = Vec::new();
        for k in 0..5u8 {
            match c.start_cmd(l, &[b'c', k]) {
                Some((i, t)) if t == term => indexes.push((i, k)),
                _ => continue 'attempt,
            }
        }
        if !c.run_until(3000, |c| {
            indexes.iter().all(|(i, _)| c.n_committed(*i).0 == 5)
        }) {
            continue;
        }
        if c.node(l).map(|n| n.term()) != Some(term) {
            continue; // the term changed: retry, as the lab does
        }
        let mut got: Vec<u8> = indexes
            .iter()
            .map(|(i, _)| c.n_committed(*i).1.expect("committed")[1])
            .collect();
        got.sort();
        assert_eq!(got, [0, 1, 2, 3, 4], "each command exactly once");
        return;
    }
    panic!("term changed too often");
}

/// Lab scenario `backup`.
pub fn backup<C: LabCore>() {
    let mut c = Cluster::<C>::new(5, 8);
    let mut rng = SmallRng::seed_from_u64(8);
    c.one(&rng.random::<u64>().to_le_bytes(), 5, true);
    // Put the leader and one follower in a partition; they take 50 uncommitted entries.
    let l1 = c.check_one_leader();
    let f = (l1 + 1) % 5;
    c.net.partition(&[&[l1 as u64 + 1, f as u64 + 1]]);
    for _ in 0..50 {
        c.start_cmd(l1, &rng.random::<u64>().to_le_bytes());
    }
    c.run_ms(ELECTION_MS / 2);
    // The other three commit 50 of their own.
    let rest: Vec<u64> = (0..5)
        .filter(|&i| i != l1 && i != f)
        .map(|i| i as u64 + 1)
        .collect();
    c.net.partition(&[&rest]);
    c.net.partition(&[&rest, &[l1 as u64 + 1, f as u64 + 1]]);
    for _ in 0..50 {
        c.one(&rng.random::<u64>().to_le_bytes(), 3, true);
    }
    // Now one of the three leaves; the leader of the rest takes 50 more uncommitted.
    let l2 = c.check_one_leader_among(&rest.iter().map(|&i| i as usize - 1).collect::<Vec<_>>());
    let other = rest
        .iter()
        .map(|&i| i as usize - 1)
        .find(|&i| i != l2)
        .expect("a third");
    c.net.partition(&[&[l2 as u64 + 1]]);
    for _ in 0..50 {
        c.start_cmd(l2, &rng.random::<u64>().to_le_bytes());
    }
    c.run_ms(ELECTION_MS / 2);
    // The original leader's pair plus `other` form a majority and must catch up fast.
    c.net
        .partition(&[&[l1 as u64 + 1, f as u64 + 1, other as u64 + 1]]);
    for _ in 0..50 {
        c.one(&rng.random::<u64>().to_le_bytes(), 3, true);
    }
    c.net.heal();
    c.one(&rng.random::<u64>().to_le_bytes(), 5, true);
    assert!(c.histories_agree());
    let len0 = c.applied_len(0);
    assert!((0..5).all(|i| c.applied_len(i) == len0), "final logs equal");
}

/// Lab scenario `count`.
pub fn count<C: LabCore>() {
    let mut c = Cluster::<C>::new(3, 9);
    c.check_one_leader();
    let election = c.rpcs;
    assert!(election <= 30, "election used {election} RPCs");
    c.run_ms(500);
    let before = c.rpcs;
    let start = c.now;
    for k in 0..10u8 {
        c.one(&[b'n', k], 3, false);
    }
    let agreements = c.rpcs - before;
    // (10 + 3) * (n - 1) appends, plus heartbeats (2 per 100 ms) over the time the commits
    // took (asynchronous persistence makes each take a few ms), plus slack.
    let heartbeats = 2 * (c.now - start).as_millis() as u64 / 100;
    assert!(
        agreements <= (10 + 3) * 2 + heartbeats + 10,
        "10 agreements used {agreements} RPCs in {:?}",
        c.now - start
    );
    let idle_start = c.rpcs;
    c.run_ms(1000);
    let idle = c.rpcs - idle_start;
    assert!(idle <= 3 * 20, "one idle second used {idle} RPCs");
}

/// Lab scenario `unreliable_agree`.
pub fn unreliable_agree<C: LabCore>() {
    let mut c = Cluster::<C>::new(5, 10);
    c.set_net(Cluster::<C>::unreliable());
    let mut rng = SmallRng::seed_from_u64(10);
    let mut pending = Vec::new();
    for round in 0..50u32 {
        for _ in 0..4 {
            for i in 0..5 {
                if c.start_cmd(
                    i,
                    &[&round.to_le_bytes()[..], &rng.random::<u32>().to_le_bytes()].concat(),
                )
                .is_some()
                {
                    pending.push(round);
                }
            }
        }
        c.one(&[&round.to_le_bytes()[..], b"one"].concat(), 1, true);
    }
    c.set_net(Default::default());
    c.one(b"final", 5, true);
    assert!(c.histories_agree());
}

fn figure8_run<C: LabCore>(seed: u64, unreliable: bool) {
    let mut c = Cluster::<C>::new(5, seed);
    let mut rng = SmallRng::seed_from_u64(seed);
    if unreliable {
        c.set_net(Cluster::<C>::unreliable());
    }
    c.one(b"start", 1, true);
    let mut up = 5;
    for iter in 0..300u32 {
        if unreliable && iter == 200 {
            c.set_net(Default::default());
        }
        let mut leader = None;
        for i in 0..5 {
            if c.start_cmd(i, &iter.to_le_bytes()).is_some() {
                leader = Some(i);
            }
        }
        let wait = if rng.random_ratio(1, 10) {
            rng.random_range(0..ELECTION_MS / 2)
        } else {
            rng.random_range(0..13)
        };
        c.run_ms(wait);
        if let Some(l) = leader
            && c.alive(l)
            && (!unreliable || rng.random_ratio(1, 2))
        {
            c.crash(l);
            up -= 1;
        }
        if up < 3 {
            let s = rng.random_range(0..5);
            if !c.alive(s) {
                c.start(s);
                up += 1;
            }
        }
    }
    c.set_net(Default::default());
    for i in 0..5 {
        if !c.alive(i) {
            c.start(i);
        }
    }
    c.one(b"end", 5, true);
    assert!(c.histories_agree());
}

/// Lab scenario `figure8`.
pub fn figure8<C: LabCore>() {
    figure8_run::<C>(11, false);
}

/// Lab scenario `figure8_unreliable`.
pub fn figure8_unreliable<C: LabCore>() {
    figure8_run::<C>(12, true);
}

/// Lab scenario `persist1`.
pub fn persist1<C: LabCore>() {
    let mut c = Cluster::<C>::new(3, 13);
    c.one(b"11", 3, true);
    for i in 0..3 {
        c.crash(i);
    }
    for i in 0..3 {
        c.start(i);
    }
    c.one(b"12", 3, true);
    let l = c.check_one_leader();
    c.crash(l);
    c.start(l);
    c.one(b"13", 3, true);
    let l = c.check_one_leader();
    c.one(b"14", 2, true);
    c.crash(l);
    c.start(l);
    c.one(b"15", 3, true);
    let f = (c.check_one_leader() + 1) % 3;
    c.crash(f);
    c.one(b"16", 2, true);
    c.start(f);
    c.one(b"17", 3, true);
    // Everything committed is still there on every replica.
    for cmd in [&b"11"[..], b"12", b"13", b"14", b"15", b"16", b"17"] {
        let idx = *c
            .checker
            .lock()
            .committed
            .iter()
            .find(|(_, b)| &b[..] == cmd)
            .expect("committed")
            .0;
        assert!(
            c.run_until(2000, |c| c.n_committed(idx).0 == 3),
            "{cmd:?} lost"
        );
    }
}

/// Lab scenario `persist2`.
pub fn persist2<C: LabCore>() {
    let mut c = Cluster::<C>::new(5, 14);
    let mut index = 1u8;
    for _ in 0..5 {
        c.one(&[index], 5, true);
        index += 1;
        let l = c.check_one_leader();
        c.crash((l + 1) % 5);
        c.crash((l + 2) % 5);
        c.one(&[index], 3, true);
        index += 1;
        c.crash(l);
        c.crash((l + 3) % 5);
        c.crash((l + 4) % 5);
        c.start((l + 1) % 5);
        c.start((l + 2) % 5);
        c.run_ms(ELECTION_MS);
        c.start((l + 3) % 5);
        c.one(&[index], 3, true);
        index += 1;
        c.start((l + 4) % 5);
        c.start(l);
    }
    c.one(&[200], 5, true);
    assert!(c.histories_agree());
}

/// Lab scenario `persist3`.
pub fn persist3<C: LabCore>() {
    let mut c = Cluster::<C>::new(3, 15);
    c.one(b"101", 3, true);
    let l = c.check_one_leader();
    c.disconnect((l + 2) % 3);
    let (index, _) = c.start_cmd(l, b"102").expect("leader accepts");
    c.run_ms(1); // the entry is in flight
    c.crash(l);
    c.crash((l + 1) % 3);
    c.connect((l + 2) % 3);
    c.start(l);
    c.one(b"103", 2, true);
    c.start((l + 1) % 3);
    c.one(b"104", 3, true);
    // 102 either committed everywhere or nowhere.
    let (n, cmd) = c.n_committed(index);
    assert!(
        n == 0 || n == 3 || cmd.as_deref() != Some(&b"102"[..]),
        "partial commit of 102"
    );
    assert!(c.histories_agree());
}

/// Lab scenario `snapshot_catch_up`.
pub fn snapshot_catch_up<C: LabCore>() {
    let mut c = Cluster::<C>::with_config(3, 16, |cfg| {
        cfg.compact_after_entries = 20;
        cfg.snapshot_chunk_bytes = 512;
    });
    c.one(b"first", 3, true);
    let l = c.check_one_leader();
    let lagger = (l + 1) % 3;
    c.crash(lagger);
    for k in 0..100u32 {
        c.one(&k.to_le_bytes(), 2, true);
    }
    let leader = c.node(l).expect("leader alive");
    assert!(
        leader.first_index() > 5,
        "the leader compacted its log (first {})",
        leader.first_index()
    );
    c.start(lagger);
    let target = c.node(l).expect("leader").commit_index();
    assert!(
        c.run_until(5000, |c| c
            .node(lagger)
            .is_some_and(|n| n.applied_index() >= target)),
        "lagging replica did not catch up"
    );
    let installed = c.node(lagger).expect("alive").snapshots_installed();
    assert!(installed >= 1, "catch-up went through a snapshot");
    c.one(b"after", 3, true);
    assert_eq!(
        c.applied_len(lagger),
        c.applied_len(l),
        "history restored from the snapshot"
    );
    assert!(c.histories_agree());
    // Restarting from the installed snapshot works too.
    c.crash(lagger);
    c.start(lagger);
    c.one(b"after-restart", 3, true);
    c.assert_converged();
}

/// Lab scenario `leader_transfer`.
pub fn leader_transfer<C: LabCore>() {
    let mut c = Cluster::<C>::new(5, 17);
    let l = c.check_one_leader();
    let to = (l + 2) % 5;
    for k in 0..20u8 {
        c.start_cmd(l, &[b't', k]);
    }
    c.node_mut(l)
        .expect("leader")
        .transfer_leader(to as u64 + 1)
        .expect("leader can transfer");
    assert!(
        c.start_cmd(l, b"during-transfer").is_none(),
        "no proposal during a transfer"
    );
    let moved = c.run_until(ELECTION_MS, |c| c.node(to).is_some_and(|n| n.is_leader()));
    assert!(moved, "leadership did not move within an election timeout");
    c.one(b"after-transfer", 5, true);
    assert!(c.histories_agree());
}

/// Lab scenario `preferred_leader`.
pub fn preferred_leader<C: LabCore>() {
    let preferred = 3; // replica index 2
    let mut c = Cluster::<C>::with_config(5, 18, |cfg| cfg.preferred = Some(preferred));
    c.crash(2);
    let l = c.check_one_leader();
    assert_ne!(l, 2);
    for k in 0..10u8 {
        c.one(&[b'p', k], 4, true);
    }
    c.start(2);
    let moved = c.run_until(10 * ELECTION_MS, |c| {
        c.node(2).is_some_and(|n| n.is_leader())
    });
    assert!(
        moved,
        "the preferred replica did not take over once caught up"
    );
    c.one(b"after", 5, true);
    assert_eq!(c.leader(), Some(2), "the preferred replica keeps leading");
}

/// Seeds for the many-seed scenarios: `MAKO_LAB_SEEDS`, else `default`.
fn seeds_or(default: u64) -> u64 {
    std::env::var("MAKO_LAB_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Seeds for `kill_restart_many_seeds` (default 50).
fn lab_seeds() -> u64 {
    seeds_or(50)
}

/// Lab scenario `kill_restart_many_seeds`.
pub fn kill_restart_many_seeds<C: LabCore>() {
    for seed in 0..lab_seeds() {
        kill_restart::<C>(1000 + seed);
    }
}

fn kill_restart<C: LabCore>(seed: u64) {
    // Compaction on: restarts recover from snapshot + log, laggards catch up by snapshot.
    let mut c = Cluster::<C>::with_config(5, seed, |cfg| cfg.compact_after_entries = 16);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut acked: Vec<Vec<u8>> = Vec::new();
    let mut proposed: Vec<(u64, Vec<u8>)> = Vec::new();
    for round in 0..40u32 {
        // Steady load: a few proposals to whoever leads.
        for k in 0..3u32 {
            let cmd = [seed.to_le_bytes(), u64::from(round * 10 + k).to_le_bytes()].concat();
            for i in 0..5 {
                if let Some((idx, _)) = c.start_cmd(i, &cmd) {
                    proposed.push((idx, cmd.clone()));
                    break;
                }
            }
        }
        match rng.random_range(0..10) {
            0 | 1 => {
                let i = rng.random_range(0..5);
                if c.alive(i) {
                    c.crash(i);
                }
            }
            2 | 3 => {
                let i = rng.random_range(0..5);
                if !c.alive(i) {
                    c.start(i);
                }
            }
            4 => {
                let a: Vec<u64> = (1..=5).filter(|_| rng.random_bool(0.5)).collect();
                let b: Vec<u64> = (1..=5).filter(|i| !a.contains(i)).collect();
                c.net.partition(&[&a, &b]);
            }
            5 => c.net.heal(),
            6 => c.set_net(Cluster::<C>::unreliable()),
            7 => c.set_net(Default::default()),
            _ => {}
        }
        c.run_ms(rng.random_range(10..400));
        c.check_log_matching();
        // What the checker saw committed counts as reported committed.
        proposed.retain(|(idx, cmd)| {
            let done = c.checker.lock().committed.get(idx).map(|b| &b[..]) == Some(&cmd[..]);
            if done {
                acked.push(cmd.clone());
            }
            !done
        });
    }
    // Heal everything: every committed entry must reach every replica.
    c.net.heal();
    c.set_net(Default::default());
    for i in 0..5 {
        if !c.alive(i) {
            c.start(i);
        }
    }
    c.one(&[seed.to_le_bytes(), *b"the-end!"].concat(), 5, true);
    let last = *c
        .checker
        .lock()
        .committed
        .keys()
        .next_back()
        .expect("something committed");
    assert!(
        c.run_until(5000, |c| (0..5).all(|i| c.histories[i]
            .lock()
            .last()
            .map(|e| e.0)
            == Some(last))),
        "seed {seed}: replicas did not converge"
    );
    assert!(c.histories_agree(), "seed {seed}: histories diverge");
    let committed = c.checker.lock().committed.clone();
    for cmd in &acked {
        assert!(
            committed.values().any(|b| b[..] == cmd[..]),
            "seed {seed}: an acknowledged entry vanished"
        );
    }
    for h in &c.histories {
        let h = h.lock();
        let idx: Vec<u64> = h.iter().map(|e| e.0).collect();
        let all: Vec<u64> = committed.keys().copied().collect();
        assert_eq!(
            idx, all,
            "seed {seed}: a replica's applied sequence is not the full history"
        );
    }
    eprintln!(
        "seed {seed}: {} committed, {} acked, {} leaders/terms, virtual {:?}",
        committed.len(),
        acked.len(),
        c.checker.lock().leaders.len(),
        c.now
    );
}

/// Lab scenario `memory_durability_crash_loses_the_disk_and_the_replica_catches_up`.
pub fn memory_durability_crash_loses_the_disk_and_the_replica_catches_up<C: LabCore>() {
    let mut c = Cluster::<C>::new(5, 19);
    c.lose_disk_on_crash = true;
    c.one(b"m1", 5, true);
    let l = c.check_one_leader();
    let f = (l + 1) % 5;
    c.crash(f);
    assert!(
        c.disks[f].entries().is_empty(),
        "memory durability keeps nothing"
    );
    for k in 0..20u8 {
        c.one(&[b'm', k], 4, true);
    }
    c.start(f);
    let target = c.node(l).expect("leader").commit_index();
    assert!(c.run_until(5000, |c| {
        c.node(f).is_some_and(|n| n.applied_index() >= target)
    }));
    // Its history was rebuilt from the leader, entry by entry.
    assert_eq!(c.applied_len(f), c.applied_len(l));
    assert!(c.histories_agree());
}

/// Small accept/append batches, a short pipeline and small snapshot chunks: batching,
/// flow control and chunking are exercised by few entries.
fn small_batches(cfg: &mut GroupConfig) {
    cfg.max_inflight = 4;
    cfg.max_append_bytes = 64;
    cfg.snapshot_chunk_bytes = 512;
}

/// Slow, lossy, reordering and often duplicating.
fn lossy() -> SimConfig {
    SimConfig {
        drop_rate: 0.1,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(25),
        reorder: true,
        duplicate_rate: 0.05,
    }
}

/// Unique values, proposed to whoever leads (for scenarios and protocol-specific tests).
#[derive(Default)]
pub struct Values {
    next: u64,
}

impl Values {
    /// A fresh unique value.
    pub fn fresh(&mut self) -> Bytes {
        self.next += 1;
        Bytes::from(format!("v{}", self.next))
    }

    /// Proposes a fresh value to the leader of the highest term, if there is one; returns it.
    pub fn propose<C: LabCore>(&mut self, c: &mut Cluster<C>) -> Option<Bytes> {
        let l = c.leader()?;
        let v = self.fresh();
        c.start_cmd(l, &v)?;
        c.drive(l);
        Some(v)
    }

    /// Proposes `k` values (retrying until a leader takes each) and waits until every live
    /// replica applied them; returns the values. A value taken by a leader that then lost
    /// its office may be dropped: the ones applied anywhere must be applied everywhere,
    /// which every step checks.
    pub fn commit<C: LabCore>(&mut self, c: &mut Cluster<C>, k: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        for _ in 0..k {
            let v = loop {
                if let Some(v) = self.propose(c) {
                    break v;
                }
                c.run_ms(10);
            };
            out.push(v);
            c.run_ms(1);
        }
        let want: BTreeSet<Bytes> = out.iter().cloned().collect();
        c.run_until(20_000, |c| {
            (0..c.n).all(|i| {
                !c.alive(i) || {
                    let h = c.histories[i].lock();
                    want.iter().all(|v| h.iter().any(|(_, e)| e == v))
                }
            })
        });
        out
    }

    /// Commits two more values on a healed, reliable network and checks that the last
    /// reaches every replica and that the group converged on one history.
    pub fn converge<C: LabCore>(&mut self, c: &mut Cluster<C>, seed: u64) {
        c.heal();
        c.set_net(SimConfig::default());
        for i in 0..c.n {
            if !c.alive(i) {
                c.start(i);
            }
        }
        wait_leader(c);
        // A value taken by a leader that then lost its office may be dropped (right after a
        // restart two replicas may both win an election): propose afresh until one value
        // reaches every replica, within 20 s in all.
        let deadline = c.now + std::time::Duration::from_secs(20);
        let mut last = None;
        while c.now < deadline {
            let Some(v) = self.propose(c) else {
                c.run_ms(10);
                continue;
            };
            let reached = c.run_until(3_000, |c| {
                (0..c.n).all(|i| c.histories[i].lock().iter().any(|(_, e)| *e == v))
            });
            last = Some(v);
            if reached {
                c.assert_converged();
                return;
            }
        }
        panic!(
            "seed {seed}: no value reached every replica within 20 s (last tried {last:?}): {:?}",
            (0..c.n)
                .map(|i| c.node(i).map(|n| n.describe()))
                .collect::<Vec<_>>()
        );
    }
}

/// Runs until some replica leads; returns the leader of the highest term.
pub fn wait_leader<C: LabCore>(c: &mut Cluster<C>) -> usize {
    assert!(
        c.run_until(5_000, |c| c.leader().is_some()),
        "no leader elected"
    );
    c.leader().expect("a leader")
}

/// Lab scenario `pipelined_proposals_are_batched`.
pub fn pipelined_proposals_are_batched<C: LabCore>() {
    let mut c = Cluster::<C>::with_config(3, 5, small_batches);
    let l = wait_leader(&mut c);
    let base = c.live(l).last_index();
    let sent_before = c.rpcs;
    let mut v = Values::default();
    for _ in 0..200 {
        let x = v.fresh();
        assert!(c.live_mut(l).propose(x), "the leader takes every proposal");
    }
    c.drive(l);
    assert!(c.run_until(5_000, |c| c.all_applied(base + 200)));
    c.assert_converged();
    // 200 values of ~4 bytes in messages of up to 64 bytes: far fewer requests than values
    // to each follower.
    let sent = c.rpcs - sent_before;
    assert!(sent < 400, "sent {sent} requests");
}

/// Lab scenario `one_replica_group`.
pub fn one_replica_group<C: LabCore>() {
    let mut c = Cluster::<C>::with_config(1, 10, small_batches);
    wait_leader(&mut c);
    let mut v = Values::default();
    let vs = v.commit(&mut c, 10);
    let h: Vec<Bytes> = c.histories[0]
        .lock()
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(h, vs, "it leads and commits alone, in order");
    c.crash(0);
    c.start(0);
    wait_leader(&mut c);
    v.commit(&mut c, 2);
    c.assert_converged();
}

/// Lab scenario `leases_never_overlap`.
pub fn leases_never_overlap<C: LabCore>() {
    for seed in 0..8 {
        let mut c = Cluster::<C>::with_config(3, 200 + seed, |cfg| {
            fast_timing(cfg);
            small_batches(cfg);
        });
        c.leases = true;
        c.set_net(lossy());
        let mut v = Values::default();
        let l = wait_leader(&mut c);
        v.commit(&mut c, 3);
        c.run_ms(500);
        // Cut the leader off: the others elect a new one only after its lease ran out (the
        // lab checks at every step).
        c.isolate(l);
        c.run_ms(3_000);
        c.heal();
        v.commit(&mut c, 3);
        c.assert_safe();
        assert!(c.lease_grants > 0, "seed {seed}: no lease was ever held");
    }
}

/// Lab scenario `random_faults_many_seeds`: many seeds of a lossy network, isolations,
/// crashes and restarts (a majority stays up) with asynchronous persistence and leases,
/// while values are proposed; compaction on in every third seed.
pub fn random_faults_many_seeds<C: LabCore>() {
    for seed in 0..seeds_or(24) {
        let n = if seed % 2 == 0 { 3 } else { 5 };
        let mut c = Cluster::<C>::with_config(n, 100 + seed, |cfg| {
            fast_timing(cfg);
            small_batches(cfg);
            if seed % 3 == 0 {
                cfg.compact_after_entries = 15;
            }
        });
        c.leases = true;
        c.set_net(lossy());
        c.max_persist_delay_ms = 8;
        let mut rng = SmallRng::seed_from_u64(100 + seed);
        let mut v = Values::default();
        let minority = (n - 1) / 2;
        for _ in 0..4_000u64 {
            let r: f64 = rng.random();
            if r < 0.02 {
                let _ = v.propose(&mut c);
            } else if r < 0.0215 {
                let down = (0..n).filter(|&i| !c.alive(i)).count();
                let i = rng.random_range(0..n);
                if c.alive(i) && down < minority {
                    c.crash(i);
                }
            } else if r < 0.024 {
                let i = rng.random_range(0..n);
                if !c.alive(i) {
                    c.start(i);
                }
            } else if r < 0.025 {
                let i = rng.random_range(0..n);
                c.isolate(i);
            } else if r < 0.028 {
                c.heal();
            }
            c.step();
        }
        // Heal everything: the group must converge on one history holding every commit.
        v.converge(&mut c, seed);
    }
}

/// Lab scenario `whole_group_crashes_many_seeds`: every replica crashes at once,
/// repeatedly, with persist jobs still at the disk (lost); what was acknowledged was
/// durable (every committed entry is on a majority of disks, checked every 5 virtual ms
/// and at every crash), so nothing committed is lost or changed.
pub fn whole_group_crashes_many_seeds<C: LabCore>() {
    for seed in 0..seeds_or(24) {
        let n = 3 + 2 * (seed as usize % 2);
        let mut c = Cluster::<C>::with_config(n, 300 + seed, |cfg| {
            fast_timing(cfg);
            small_batches(cfg);
        });
        c.leases = true;
        c.set_net(lossy());
        c.max_persist_delay_ms = 15;
        c.durable_check_every_ms = 5;
        let mut rng = SmallRng::seed_from_u64(300 + seed);
        let mut v = Values::default();
        for _ in 0..6 {
            for _ in 0..400 {
                if rng.random_bool(0.05) {
                    let _ = v.propose(&mut c);
                }
                c.step();
            }
            for i in 0..n {
                c.crash(i);
            }
            c.check_durable_majority();
            c.assert_safe();
            for i in 0..n {
                c.start(i);
            }
            c.assert_safe();
        }
        v.converge(&mut c, seed);
    }
}

/// Lab scenario `memory_crashes_with_rejoin_many_seeds`: memory durability, a crash loses
/// the disk and the replica comes back rejoining. One replica at a time (memory durability
/// survives the loss of a minority only, and a rejoining replica counts as lost until it
/// has caught up).
pub fn memory_crashes_with_rejoin_many_seeds<C: LabCore>() {
    for seed in 0..(seeds_or(24) / 2).max(4) {
        let n = 3 + 2 * (seed as usize % 2);
        let mut c = Cluster::<C>::with_config(n, 400 + seed, |cfg| {
            fast_timing(cfg);
            small_batches(cfg);
        });
        c.leases = true;
        c.lose_disk_on_crash = true;
        c.rejoin_after_disk_loss = true;
        c.set_net(lossy());
        let mut rng = SmallRng::seed_from_u64(400 + seed);
        let mut v = Values::default();
        for _ in 0..4_000u64 {
            let r: f64 = rng.random();
            let settled = (0..n).all(|i| c.node(i).is_some_and(|n| !n.rejoining()));
            if r < 0.02 {
                let _ = v.propose(&mut c);
            } else if r < 0.022 && settled {
                let i = rng.random_range(0..n);
                c.crash(i);
                c.start(i);
            }
            c.step();
        }
        v.converge(&mut c, seed);
        assert!(
            (0..n).all(|i| !c.live(i).rejoining()),
            "seed {seed}: still rejoining"
        );
    }
}

/// Lab scenario `late_captures`: snapshot captures that complete late (they run off the
/// group's thread) after more entries were applied, after a leader change, and after a
/// snapshot from the leader was installed meanwhile (the late one is then stale and
/// dropped). Every replica's history stays a prefix of the one history, the log is
/// compacted, and every replica restarts from its snapshot and log into the same history.
pub fn late_captures<C: LabCore>() {
    let mut c = Cluster::<C>::with_config(3, 23, |cfg| {
        cfg.compact_after_entries = 15;
        cfg.snapshot_chunk_bytes = 512;
    });
    c.one(b"first", 3, true);
    let l = c.check_one_leader();
    let mut k = 0u32;
    let mut one = |c: &mut Cluster<C>, n: usize| {
        k += 1;
        c.one(format!("cmd{k}").as_bytes(), n, true)
    };

    // 1. The leader's capture completes after many more entries.
    c.hold_capture.insert(l);
    while c.capture_in_flight(l).is_none() {
        one(&mut c, 3);
    }
    let first_capture = c.capture_in_flight(l).expect("held");
    for _ in 0..40 {
        one(&mut c, 3);
    }
    assert_eq!(
        c.capture_in_flight(l),
        Some(first_capture),
        "one capture in flight at a time"
    );
    assert!(c.node(l).expect("alive").first_index() <= first_capture);
    c.hold_capture.remove(&l);
    c.run_ms(50);
    assert!(
        c.node(l).expect("alive").first_index() > 1,
        "the leader compacted behind its late capture"
    );

    // 2. A capture begun on the leader completes after it lost leadership.
    c.hold_capture.insert(l);
    while c.capture_in_flight(l).is_none() {
        one(&mut c, 3);
    }
    c.isolate(l);
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let l2 = c.check_one_leader_among(&others);
    for _ in 0..20 {
        one(&mut c, 2);
    }
    c.heal();
    c.run_ms(ELECTION_MS);
    c.hold_capture.remove(&l);
    c.run_ms(50);
    one(&mut c, 3);
    assert!(c.histories_agree());

    // 3. A follower's capture completes after it installed a newer snapshot from the leader.
    let l = c.check_one_leader();
    let f = (l + 1) % 3;
    c.hold_capture.insert(f);
    while c.capture_in_flight(f).is_none() {
        one(&mut c, 3);
    }
    let stale = c.capture_in_flight(f).expect("held");
    c.isolate(f);
    for _ in 0..80 {
        one(&mut c, 2);
    }
    assert!(
        c.node(l).expect("alive").first_index() > stale + 1,
        "the leader compacted past the follower's capture"
    );
    let installed = c.node(f).expect("alive").snapshots_installed();
    c.heal();
    let target = c.node(l).expect("alive").commit_index();
    assert!(
        c.run_until(5000, |c| c
            .node(f)
            .is_some_and(|n| n.applied_index() >= target)),
        "the follower did not catch up"
    );
    assert!(
        c.node(f).expect("alive").snapshots_installed() > installed,
        "the follower caught up by snapshot"
    );
    let dropped = c.node(f).expect("alive").captures_dropped();
    c.hold_capture.remove(&f);
    c.run_ms(50);
    assert_eq!(
        c.node(f).expect("alive").captures_dropped(),
        dropped + 1,
        "the capture overtaken by the installed snapshot is dropped"
    );
    one(&mut c, 3);
    assert!(c.histories_agree());
    let _ = l2;

    // Late captures are the rule from here on; then everyone restarts, one at a time.
    c.max_capture_delay_ms = 30;
    for _ in 0..40 {
        one(&mut c, 3);
    }
    for i in 0..3 {
        c.crash(i);
        c.start(i);
        c.run_ms(ELECTION_MS);
        one(&mut c, 3);
    }
    let last = one(&mut c, 3);
    assert!(
        c.run_until(5000, |c| c.all_applied(last)),
        "not every replica applied {last}"
    );
    c.assert_converged();
    assert!(c.histories_agree());
    let len = c.applied_len(0);
    assert!(
        (1..3).all(|i| c.applied_len(i) == len),
        "histories differ in length"
    );
    assert!(c.captures_done > 0);
}
