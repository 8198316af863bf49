//! Crafted-message fuzz: a peer's messages, however malformed or inconsistent, never panic a
//! `PaxosNode` nor break its invariants.
//!
//! Each case builds a replica in some state on the lab (a follower or a leader with a
//! committed log, a candidate, a replica in a pre-prepare round, a follower holding a stale
//! older-ballot slot, a leader whose log was compacted), cuts it off, then feeds it crafted payloads through
//! `PaxosNode::step`, as the transport would: structured messages with fields picked around
//! the replica's own numbers and at the extremes, random bytes, mutated valid encodings,
//! bogus chunks, duplicates, from members, non-members and itself. A panic fails the test.
//! After every payload: the node's own invariant check passes, the promised ballot and the
//! commit index never decrease, no slot committed before changes value (in memory or in a
//! persist job), every applied entry is the committed value at its slot, and a pre-prepare
//! changes nothing (promise, leader, role, commit, log).
//!
//! `PAXOS_FUZZ_CASES` sets the number of cases per state (default 150).

mod common;

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes};
use common::{Sim, age, manual, tick_settle};
use mako_group::LogEntry;
use mako_lab::Packet;
use mako_paxos::wire::{self, MAX_SLOT, Msg};
use rand::{Rng, SeedableRng, rngs::SmallRng};

fn committed_group(seed: u64, compact_after: u64, values: usize) -> Sim {
    let mut s = manual(3, seed, compact_after);
    assert!(s.live_mut(0).campaign());
    s.drive(0);
    s.settle();
    for k in 0..values {
        s.live_mut(0).propose(Bytes::from(format!("v{k}"))).unwrap();
        s.drive(0);
        s.settle();
    }
    tick_settle(&mut s, 0, 2);
    s
}

/// The decoded message of a whole (unchunked) packet.
fn msg(p: &Packet) -> Option<Msg> {
    if p.payload.first() != Some(&0) {
        return None;
    }
    wire::decode(&p.payload.slice(1..)).ok()
}

#[derive(Debug, Clone, Copy)]
enum Start {
    Follower,
    Leader,
    Candidate,
    PreCandidate,
    StaleFollower,
    CompactedLeader,
}

/// Builds the lab and returns it with the index of the replica under test (isolated).
fn build(start: Start, seed: u64) -> (Sim, usize) {
    let (mut s, target) = match start {
        Start::Follower => (committed_group(seed, u64::MAX / 2, 4), 1),
        Start::Leader => (committed_group(seed, u64::MAX / 2, 4), 0),
        Start::CompactedLeader => (committed_group(seed, 3, 10), 0),
        Start::Candidate | Start::PreCandidate => {
            let mut s = committed_group(seed, u64::MAX / 2, 3);
            s.crash(0);
            age(&mut s);
            if matches!(start, Start::PreCandidate) {
                // Nobody hears its pre-prepare.
                s.isolate(2);
            } else {
                // B grants its pre-prepare; its prepare reaches nobody.
                s.filter = Some(Box::new(|p| {
                    p.from != 3 || !matches!(msg(p), Some(Msg::Prepare { .. }))
                }));
            }
            assert!(s.live_mut(2).campaign());
            s.drive(2);
            s.settle();
            s.filter = None;
            (s, 2)
        }
        Start::StaleFollower => {
            let mut s = committed_group(seed, u64::MAX / 2, 2);
            // The leader's next slot reaches node 3 only and never becomes durable at the leader.
            s.hold_persist.insert(0);
            s.filter = Some(Box::new(|p| p.from != 1 || p.to == 3));
            s.live_mut(0).propose(Bytes::from_static(b"stale")).unwrap();
            s.drive(0);
            s.settle();
            s.crash(0);
            s.hold_persist.clear();
            s.filter = None;
            (s, 2)
        }
    };
    s.isolate(target);
    // From here on the crafted messages speak for the peers (a leader's accept with its
    // commit index, say): the lab's check that committed slots are durable on a majority of
    // disks assumes truthful peers, so it is off; the node's own checks in `run` stay.
    s.durable_check_every_ms = 0;
    (s, target)
}

/// Numbers around the replica's own, and extremes.
fn num(rng: &mut SmallRng, around: &[u64]) -> u64 {
    match rng.random_range(0..10) {
        0 => 0,
        1 => MAX_SLOT,
        2 => u64::MAX,
        3 => rng.random(),
        _ => {
            let base = around[rng.random_range(0..around.len())];
            base.wrapping_add(rng.random_range(0..5)).wrapping_sub(2)
        }
    }
}

fn ballot(rng: &mut SmallRng, promised: u64) -> u64 {
    match rng.random_range(0..8) {
        0 => promised,
        1 => rng.random(),
        2 => 0,
        _ => {
            let round = (wire::round_of(promised) + rng.random_range(0..3)).saturating_sub(1);
            wire::ballot(round, rng.random_range(0..5))
        }
    }
}

fn value(rng: &mut SmallRng) -> Bytes {
    let n = rng.random_range(0..6);
    Bytes::from((0..n).map(|_| rng.random::<u8>()).collect::<Vec<u8>>())
}

fn structured(rng: &mut SmallRng, view: &View) -> Msg {
    let around = [view.commit, view.last, view.first, 1];
    let kind = rng.random_range(0..10);
    // Answers are mostly about our own ballot (a pre-promise about the one a pre-prepare
    // round of ours would use), requests mostly at or above our promise.
    let b = match kind {
        9 if rng.random_range(0..3) > 0 => wire::ballot(
            wire::round_of(view.promised) + rng.random_range(1..3),
            view.me,
        ),
        1 | 2 | 3 | 6 if rng.random_range(0..3) > 0 => view.promised,
        0 | 4 | 5 | 7 | 8 if rng.random_range(0..3) > 0 => {
            let round = wire::round_of(view.promised) + rng.random_range(0..2);
            wire::ballot(round, rng.random_range(0..3))
        }
        _ => ballot(rng, view.promised),
    };
    match kind {
        0 => Msg::Prepare {
            ballot: b,
            from: num(rng, &around),
            transfer: rng.random(),
        },
        1 => {
            let from = num(rng, &around);
            let k = rng.random_range(0..4);
            Msg::Promise {
                ballot: b,
                commit: num(rng, &around),
                from,
                entries: (0..k)
                    .map(|i| LogEntry {
                        index: from.wrapping_add(1 + i),
                        term: ballot(rng, view.promised),
                        payload: value(rng),
                    })
                    .collect(),
            }
        }
        2 => Msg::Behind {
            ballot: b,
            commit: num(rng, &around),
        },
        3 => Msg::Rejected {
            ballot: b,
            promised: ballot(rng, view.promised),
        },
        4 | 5 => Msg::Accept {
            ballot: b,
            first: num(rng, &around),
            commit: num(rng, &around),
            lease: rng.random(),
            values: (0..rng.random_range(0..4)).map(|_| value(rng)).collect(),
        },
        6 => Msg::Accepted {
            ballot: b,
            end: num(rng, &around),
            matched: num(rng, &around),
            last: num(rng, &around),
            lease: rng.random(),
            gap: rng.random(),
            rejoining: rng.random(),
        },
        8 => Msg::PrePrepare {
            ballot: b,
            from: num(rng, &around),
        },
        9 => Msg::PrePromise {
            ballot: b,
            granted: rng.random(),
        },
        _ => {
            if rng.random() {
                Msg::TimeoutNow {
                    ballot: b,
                    commit: num(rng, &around),
                }
            } else {
                Msg::Snapshot {
                    ballot: b,
                    index: num(rng, &around),
                    term: ballot(rng, view.promised),
                    data: value(rng),
                }
            }
        }
    }
}

/// A payload, with the message it encodes when it is well-formed.
fn payload(rng: &mut SmallRng, view: &View) -> (Option<Msg>, Bytes) {
    let m = structured(rng, view);
    let mut body = Vec::new();
    wire::encode_body(&m, &mut body);
    let p = match rng.random_range(0..10) {
        // Random bytes.
        0 => Bytes::from(
            (0..rng.random_range(0..48))
                .map(|_| rng.random())
                .collect::<Vec<u8>>(),
        ),
        // A mutated encoding: flipped byte, truncated or extended.
        1 | 2 => {
            let mut v = vec![0u8];
            v.extend_from_slice(&body);
            match rng.random_range(0..3) {
                0 => {
                    let at = rng.random_range(0..v.len());
                    v[at] ^= 1 << rng.random_range(0..8);
                }
                1 => v.truncate(rng.random_range(0..v.len())),
                _ => v.push(rng.random()),
            }
            Bytes::from(v)
        }
        // A bogus chunk.
        3 => {
            let mut v = vec![1u8];
            v.put_u64_le(rng.random_range(0..3));
            v.put_u32_le(rng.random_range(0..3));
            v.put_u32_le(rng.random_range(0..4));
            v.put_u64_le(num(rng, &[600, 1 << 40]));
            v.extend((0..rng.random_range(0..700)).map(|_| rng.random::<u8>()));
            Bytes::from(v)
        }
        // A well-formed message, possibly chunked.
        _ => {
            let chunk = if rng.random_range(0..4) == 0 {
                512
            } else {
                usize::MAX
            };
            let mut parts = wire::encode(&m, chunk);
            return (Some(m), parts.swap_remove(0));
        }
    };
    (None, p)
}

struct View {
    me: usize,
    promised: u64,
    commit: u64,
    last: u64,
    first: u64,
}

fn view(s: &Sim, i: usize) -> View {
    let n = s.live(i);
    View {
        me: i,
        promised: n.ballot(),
        commit: n.commit_index(),
        last: n.last_index(),
        first: n.first_index(),
    }
}

fn run(start: Start, seed: u64) -> Result<(), String> {
    let (mut s, t) = build(start, seed);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xf022);
    let mut sent: Vec<(u64, Bytes)> = Vec::new();
    for step in 0..8 {
        let before = view(&s, t);
        let committed: BTreeMap<u64, Bytes> = (before.first..=before.commit)
            .filter_map(|slot| s.live(t).entry(slot).map(|e| (slot, e.payload.clone())))
            .collect();
        let applied_before = s.histories[t].lock().len();
        // A fresh payload, or a duplicate of an earlier one (reordering and duplication).
        let mut pre_prepare = false;
        let (from, p) = if !sent.is_empty() && rng.random_range(0..4) == 0 {
            sent[rng.random_range(0..sent.len())].clone()
        } else {
            let (m, p) = payload(&mut rng, &before);
            pre_prepare = matches!(m, Some(Msg::PrePrepare { .. }));
            // Mostly the sender a correct peer would be: a request's proposer, another
            // member for an answer; sometimes anyone (non-members, itself).
            let me = t as u64 + 1;
            let from = match m {
                Some(m) if rng.random_range(0..4) > 0 => {
                    if m.is_request() {
                        wire::proposer_of(m.ballot()) as u64 + 1
                    } else {
                        let others: Vec<u64> = (1..=3).filter(|&i| i != me).collect();
                        others[rng.random_range(0..others.len())]
                    }
                }
                _ => rng.random_range(0..6),
            };
            (from, p)
        };
        sent.push((from, p.clone()));
        let role = |n: &mut mako_paxos::PaxosNode| {
            (
                format!("{n:?}"),
                n.leader(),
                n.is_leader(),
                n.is_candidate(),
                n.is_pre_candidate(),
            )
        };
        let role_before = role(s.live_mut(t));
        let _ = s.live_mut(t).step(from, &p);
        if pre_prepare {
            let node = s.live_mut(t);
            let role_after = role(node);
            let out = node.poll();
            if role_after != role_before || out.persist.is_some() {
                return Err(format!(
                    "{start:?} seed {seed} step {step}: a pre-prepare changed {role_before:?} \
                     into {role_after:?} (persist job: {})",
                    out.persist.is_some()
                ));
            }
        } else if rng.random_range(0..3) == 0 {
            s.tick_node(t, 1);
        }
        // Outputs go nowhere (isolated); persist jobs complete.
        s.drive(t);
        s.settle();
        let after = view(&s, t);
        let node = s.live(t);
        let ctx = || format!("{start:?} seed {seed} step {step} from {from} payload {p:?}");
        node.check_invariants()
            .map_err(|e| format!("{}: {e}", ctx()))?;
        if after.promised < before.promised {
            return Err(format!("{}: promised went back", ctx()));
        }
        if after.commit < before.commit {
            return Err(format!("{}: commit went back", ctx()));
        }
        for (slot, v) in &committed {
            if let Some(e) = node.entry(*slot)
                && e.payload != *v
            {
                return Err(format!("{}: committed slot {slot} changed", ctx()));
            }
        }
        for e in s.disks[t].entries() {
            if let Some(v) = committed.get(&e.index)
                && e.payload != *v
            {
                return Err(format!(
                    "{}: durable committed slot {} changed",
                    ctx(),
                    e.index
                ));
            }
        }
        // A restored snapshot replaces the history (then there is nothing new to compare).
        let h = s.histories[t].lock();
        for (idx, e) in h.get(applied_before..).unwrap_or_default() {
            if let Some(v) = committed
                .get(idx)
                .cloned()
                .or_else(|| node.entry(*idx).map(|e| e.payload.clone()))
                && v != *e
            {
                return Err(format!(
                    "{}: applied {e:?} at {idx}, committed {v:?}",
                    ctx()
                ));
            }
        }
    }
    Ok(())
}

fn cases() -> u64 {
    std::env::var("PAXOS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

fn fuzz(start: Start) {
    for seed in 0..cases() {
        if let Err(e) = run(start, seed) {
            panic!("{e}");
        }
    }
}

#[test]
fn fuzz_follower_with_committed_log() {
    fuzz(Start::Follower);
}

#[test]
fn fuzz_leader_with_committed_log() {
    fuzz(Start::Leader);
}

#[test]
fn fuzz_candidate() {
    fuzz(Start::Candidate);
}

#[test]
fn fuzz_pre_candidate() {
    fuzz(Start::PreCandidate);
}

#[test]
fn fuzz_follower_with_a_stale_slot() {
    fuzz(Start::StaleFollower);
}

#[test]
fn fuzz_leader_with_compacted_log() {
    fuzz(Start::CompactedLeader);
}

#[test]
fn starting_states_are_as_named() {
    let (s, t) = build(Start::Leader, 1);
    assert!(s.live(t).is_leader() && s.live(t).commit_index() == 4);
    let (s, t) = build(Start::Follower, 1);
    assert!(!s.live(t).is_leader() && s.live(t).commit_index() == 4);
    let (s, t) = build(Start::Candidate, 1);
    assert!(s.live(t).is_candidate());
    let (s, t) = build(Start::PreCandidate, 1);
    assert!(s.live(t).is_pre_candidate());
    let (s, t) = build(Start::StaleFollower, 1);
    assert!(s.live(t).last_index() > s.live(t).commit_index());
    let (s, t) = build(Start::CompactedLeader, 1);
    assert!(s.live(t).is_leader() && s.live(t).first_index() > 1);
}

/// Malformed payloads are refused with an error and change nothing.
#[test]
fn malformed_payloads_are_typed_errors_and_change_nothing() {
    let (mut s, t) = build(Start::Follower, 2);
    let before = format!("{:?}", s.live(t));
    let good = {
        let mut v = vec![0u8];
        wire::encode_body(
            &Msg::Accept {
                ballot: s.live(t).ballot(),
                first: 1,
                commit: 0,
                lease: 0,
                values: vec![],
            },
            &mut v,
        );
        v
    };
    // From a non-member, from itself, with a ballot naming a proposer outside the group,
    // and a request under another member's ballot.
    let me = t as u64 + 1;
    assert!(s.live_mut(t).step(9, &Bytes::from(good.clone())).is_err());
    assert!(s.live_mut(t).step(me, &Bytes::from(good.clone())).is_err());
    let mut foreign = vec![0u8];
    wire::encode_body(
        &Msg::TimeoutNow {
            ballot: wire::ballot(5, 7),
            commit: 0,
        },
        &mut foreign,
    );
    assert!(s.live_mut(t).step(1, &Bytes::from(foreign)).is_err());
    let mut forged = vec![0u8];
    wire::encode_body(
        &Msg::TimeoutNow {
            ballot: wire::ballot(5, 2),
            commit: 0,
        },
        &mut forged,
    );
    assert!(
        s.live_mut(t).step(1, &Bytes::from(forged)).is_err(),
        "node 1 under node 3's ballot"
    );
    for cut in 0..good.len() {
        assert!(
            s.live_mut(t)
                .step(1, &Bytes::copy_from_slice(&good[..cut]))
                .is_err()
        );
    }
    assert!(
        s.live_mut(t)
            .step(1, &Bytes::from_static(&[0, 9, 9]))
            .is_err()
    );
    s.drive(t);
    assert_eq!(format!("{:?}", s.live(t)), before);
    assert!(s.live(t).stats().bad_payloads > 0);
}
