//! Paxos-specific scenarios, constructed message by message on the lab (no clock-driven
//! elections): a value accepted by a minority is recovered by the next leader; an acceptor
//! keeps the slots after an accept (or a chosen value is lost after two leader changes);
//! a follower never commits a stale older-ballot value.

mod common;

use bytes::Bytes;
use common::{Sim, age, elect, msg, propose, tick_settle};
use mako_lab::Packet;
use mako_paxos::wire::{self, Msg};

fn is_accept_with_values(p: &Packet) -> bool {
    matches!(msg(p), Some(Msg::Accept { ref values, .. }) if !values.is_empty())
}

fn value_at(s: &Sim, i: usize, slot: u64) -> Option<Bytes> {
    s.live(i).entry(slot).map(|e| e.payload.clone())
}

/// The old leader sent `x` (slot 2) to `holders` only and died before making it durable
/// itself; the new leader, `new`, holds no copy: it must recover `x` at slot 2.
fn minority_value_is_recovered(n: usize, holders: &'static [usize], new: usize) {
    let mut s = common::manual(n, 11, u64::MAX / 2);
    elect(&mut s, 0);
    propose(&mut s, 0, b"v1");
    tick_settle(&mut s, 0, 1);
    assert!(s.all_applied(1));
    // Slot 2 reaches the holders only; the leader's own write never completes.
    s.hold_persist.insert(0);
    s.filter = Some(Box::new(move |p| {
        !(p.from == 1 && is_accept_with_values(p) && !holders.contains(&((p.to - 1) as usize)))
    }));
    propose(&mut s, 0, b"x");
    for &h in holders {
        assert_eq!(value_at(&s, h, 2).as_deref(), Some(&b"x"[..]));
    }
    assert_eq!(value_at(&s, new, 2), None);
    assert_eq!(s.live(0).commit_index(), 1, "x is not chosen");
    s.crash(0);
    s.hold_persist.clear();
    s.filter = None;
    age(&mut s);
    elect(&mut s, new);
    assert_eq!(
        value_at(&s, new, 2).as_deref(),
        Some(&b"x"[..]),
        "recovered at its slot"
    );
    propose(&mut s, new, b"after");
    s.start(0);
    age(&mut s);
    tick_settle(&mut s, new, 4);
    for i in 0..n {
        assert!(s.live(i).commit_index() >= 3, "node {} commit", i + 1);
        assert_eq!(
            value_at(&s, i, 2).as_deref(),
            Some(&b"x"[..]),
            "node {}",
            i + 1
        );
        assert_eq!(
            value_at(&s, i, 3).as_deref(),
            Some(&b"after"[..]),
            "node {}",
            i + 1
        );
        let h: Vec<Bytes> = s.histories[i]
            .lock()
            .iter()
            .map(|(_, e)| e.clone())
            .collect();
        assert_eq!(h, [&b"v1"[..], b"x", b"after"], "node {}", i + 1);
    }
    s.assert_safe();
}

#[test]
fn a_value_accepted_by_one_of_three_is_recovered_by_the_next_leader() {
    minority_value_is_recovered(3, &[1], 2);
}

#[test]
fn a_value_accepted_by_two_of_five_is_recovered_by_the_next_leader() {
    minority_value_is_recovered(5, &[1, 2], 4);
}

/// Five replicas A..E. A's slots 2 and 3 are accepted by A, B and C (chosen; A commits and
/// applies them) but nobody else learns the commit. A dies; B takes over (recovering 2 and
/// 3) and re-sends slot 2 to C, but not slot 3. B dies; D takes over with C and E. C must
/// still hold slot 3 (its older-ballot value) for D to recover it: an acceptor that dropped
/// the slots after an accept would lose the chosen value.
#[test]
fn an_accept_keeps_the_later_slots_so_a_chosen_value_survives_two_leader_changes() {
    let mut s = common::manual(5, 12, u64::MAX / 2);
    elect(&mut s, 0);
    propose(&mut s, 0, b"v1");
    tick_settle(&mut s, 0, 1);
    assert!(s.all_applied(1));
    // A's slots 2 and 3 go to B and C only.
    s.filter = Some(Box::new(|p| {
        !(p.from == 1 && is_accept_with_values(p) && p.to > 3)
    }));
    // Both accepts leave before any answer: they carry commit 1.
    s.live_mut(0).propose(Bytes::from_static(b"x2")).unwrap();
    s.live_mut(0).propose(Bytes::from_static(b"x3")).unwrap();
    s.drive(0);
    s.settle();
    assert_eq!(s.live(0).commit_index(), 3, "x2 and x3 are chosen");
    assert_eq!(s.live(0).applied_index(), 3);
    assert_eq!(s.live(2).commit_index(), 1, "C does not know");
    s.crash(0);
    // B takes over; of its accepts only the one for slot 2 reaches C, none D or E.
    s.filter = Some(Box::new(|p| match msg(p) {
        Some(Msg::Accept {
            first, ref values, ..
        }) if p.from == 2 && !values.is_empty() => p.to == 3 && first == 2,
        _ => true,
    }));
    age(&mut s);
    elect(&mut s, 1);
    assert_eq!(
        s.live(2).entry(2).map(|e| e.term),
        Some(s.live(1).ballot()),
        "C took B's accept for slot 2"
    );
    assert_eq!(
        value_at(&s, 2, 3).as_deref(),
        Some(&b"x3"[..]),
        "C keeps slot 3"
    );
    s.crash(1);
    s.filter = None;
    age(&mut s);
    elect(&mut s, 3);
    propose(&mut s, 3, b"v4");
    tick_settle(&mut s, 3, 1);
    for i in 2..5 {
        assert_eq!(
            value_at(&s, i, 2).as_deref(),
            Some(&b"x2"[..]),
            "node {}",
            i + 1
        );
        assert_eq!(
            value_at(&s, i, 3).as_deref(),
            Some(&b"x3"[..]),
            "node {}",
            i + 1
        );
        assert!(s.live(i).commit_index() >= 4);
    }
    s.assert_safe();
}

/// C holds an older-ballot value at slot 2 that was never chosen; the new leader B
/// committed other values at slots 2 and 3 without C. A heartbeat telling C "commit 3"
/// must not make C commit (and apply) its stale slot 2.
#[test]
fn a_follower_does_not_commit_a_stale_older_ballot_value() {
    let mut s = common::manual(3, 13, u64::MAX / 2);
    elect(&mut s, 0);
    propose(&mut s, 0, b"v1");
    tick_settle(&mut s, 0, 1);
    assert!(s.all_applied(1));
    // A's slot 2 reaches C only, and A never makes it durable.
    s.hold_persist.insert(0);
    s.filter = Some(Box::new(|p| {
        !(p.from == 1 && is_accept_with_values(p) && p.to != 3)
    }));
    propose(&mut s, 0, b"stale");
    assert_eq!(value_at(&s, 2, 2).as_deref(), Some(&b"stale"[..]));
    s.crash(0);
    s.hold_persist.clear();
    s.start(0);
    // B takes over with A's promise only; C hears nothing from B.
    s.filter = Some(Box::new(|p| p.from != 2 || p.to != 3));
    age(&mut s);
    elect(&mut s, 1);
    propose(&mut s, 1, b"y2");
    propose(&mut s, 1, b"y3");
    assert_eq!(s.live(1).commit_index(), 3);
    // Now C gets B's heartbeats (commit 3) but none of its values.
    s.filter = Some(Box::new(|p| {
        !(p.from == 2 && p.to == 3 && is_accept_with_values(p))
    }));
    tick_settle(&mut s, 1, 1);
    assert_eq!(s.live(2).ballot(), s.live(1).ballot(), "C follows B");
    assert_eq!(
        s.live(2).commit_index(),
        1,
        "C must not commit its stale slot 2"
    );
    assert_eq!(s.live(2).applied_index(), 1);
    s.filter = None;
    tick_settle(&mut s, 1, 4);
    assert_eq!(s.live(2).commit_index(), 3);
    let h: Vec<Bytes> = s.histories[2]
        .lock()
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(h, [&b"v1"[..], b"y2", b"y3"]);
    s.assert_safe();
}

/// A replica behind one that committed more is refused (its pre-prepare is not granted; in
/// Phase 1 it would get `Behind`) and does not raise its ballot; the up-to-date replica wins.
#[test]
fn a_candidate_behind_a_committed_replica_backs_off() {
    let mut s = common::manual(3, 14, u64::MAX / 2);
    elect(&mut s, 0);
    propose(&mut s, 0, b"v1");
    // B learns commit 2, C stays at commit 1 (it gets slot 2 but no later commit).
    propose(&mut s, 0, b"v2");
    s.filter = Some(Box::new(|p| !(p.from == 1 && p.to == 3)));
    tick_settle(&mut s, 0, 1);
    assert_eq!(s.live(1).commit_index(), 2);
    assert_eq!(s.live(2).commit_index(), 1);
    s.crash(0);
    s.filter = None;
    age(&mut s);
    let ballot = s.live(2).ballot();
    assert!(s.live_mut(2).campaign());
    s.drive(2);
    s.settle();
    assert!(!s.live(2).is_leader(), "C lacks a committed slot: refused");
    assert!(s.live(1).stats().pre_refused > 0);
    assert_eq!(s.live(2).ballot(), ballot);
    elect(&mut s, 1);
    s.assert_safe();
}

/// A replica that lost its disk (memory durability) and helped choose a value must not
/// promise while rejoining: otherwise a candidate lacking the value could win with it and
/// decide another value for the slot.
#[test]
fn a_rejoining_replica_does_not_promise() {
    let mut s = common::manual(3, 15, u64::MAX / 2);
    elect(&mut s, 0);
    propose(&mut s, 0, b"v1");
    tick_settle(&mut s, 0, 1);
    // x is chosen by A and C; B never sees it.
    s.filter = Some(Box::new(|p| {
        !(p.from == 1 && p.to == 2 && is_accept_with_values(p))
    }));
    propose(&mut s, 0, b"x");
    assert_eq!(s.live(0).commit_index(), 2);
    // C loses its disk and comes back rejoining; then A dies (its disk survives).
    s.lose_disk_on_crash = true;
    s.crash(2);
    s.start(2);
    s.lose_disk_on_crash = false;
    assert!(s.live(2).rejoining());
    s.crash(0);
    s.filter = None;
    age(&mut s);
    assert!(s.live_mut(1).campaign());
    s.drive(1);
    s.settle();
    assert!(
        !s.live(1).is_leader(),
        "B won with the promise of a replica that forgot x"
    );
    assert!(
        s.live(2).stats().pre_refused > 0,
        "C granted B's pre-prepare"
    );
    // Nor does C promise in Phase 1 (as to a B whose pre-prepare round a majority granted).
    let c_ballot = s.live(2).ballot();
    let b = wire::ballot(wire::round_of(s.live(1).ballot().max(c_ballot)) + 1, 1);
    let prepare = Msg::Prepare {
        ballot: b,
        from: s.live(1).commit_index(),
        transfer: false,
    };
    let mut p = wire::encode(&prepare, usize::MAX);
    s.live_mut(2).step(2, &p.remove(0)).unwrap();
    s.drive(2);
    s.settle();
    assert!(s.live(2).stats().prepares_withheld > 0);
    assert_eq!(s.live(2).ballot(), c_ballot);
    // A comes back: B, behind A's commit, cannot win; A wins with B's promise, C catches
    // up and rejoins.
    s.start(0);
    age(&mut s);
    assert!(s.live_mut(1).campaign());
    s.drive(1);
    s.settle();
    assert!(!s.live(1).is_leader());
    elect(&mut s, 0);
    propose(&mut s, 0, b"v3");
    tick_settle(&mut s, 0, 4);
    assert!(!s.live(2).rejoining());
    for i in 0..3 {
        assert_eq!(
            value_at(&s, i, 2).as_deref(),
            Some(&b"x"[..]),
            "node {}",
            i + 1
        );
        assert_eq!(s.live(i).commit_index(), 3, "node {}", i + 1);
    }
    s.assert_safe();
}

/// Every proposal ends exactly once: applied here as ours, or reported unapplied (here:
/// overwritten by the next leader's value at its slot; refused on a follower).
#[test]
fn a_proposal_overwritten_by_the_next_leader_is_reported_once() {
    let mut s = common::manual(3, 16, u64::MAX / 2);
    elect(&mut s, 0);
    propose(&mut s, 0, b"v1");
    tick_settle(&mut s, 0, 1);
    assert_eq!(s.live(0).stats().resolved, 1);
    // A proposes p while cut off; B takes over and decides q at p's slot.
    s.isolate(0);
    propose(&mut s, 0, b"p");
    age(&mut s);
    elect(&mut s, 1);
    propose(&mut s, 1, b"q");
    s.heal();
    tick_settle(&mut s, 1, 4);
    let a = s.live(0);
    assert_eq!(a.leader(), Some(2));
    assert_eq!(value_at(&s, 0, 2).as_deref(), Some(&b"q"[..]));
    assert_eq!(a.applied_index(), 2);
    assert_eq!(a.unresolved_proposals(), 0);
    assert_eq!(a.stats().resolved, 2, "v1 applied as ours, p reported");
    assert_eq!(a.dispatcher().stats().unapplied, 1);
    // A follower refuses and reports a submitted entry.
    s.live_mut(0).propose_submitted(Bytes::from_static(b"late"));
    assert_eq!(s.live(0).dispatcher().stats().unapplied, 2);
    assert_eq!(s.live(0).stats().resolved, 3);
    s.assert_safe();
}

/// A deposed leader's proposals at slots past the new leader's log were never decided (the
/// new leader's log had to grow that far with proposals of its own): they stayed unresolved,
/// `outstanding()` above zero for good. A proposal of ours may be reported dropped only once
/// its slot is decided with another value (a value only we hold can still be chosen by a
/// later leader's Phase 1), so the slots must be decided: the new leader learns from the
/// deposed leader's answers how far its log reaches and fills the slots past its own with
/// no-ops. No client proposal follows the takeover here.
#[test]
fn a_deposed_leaders_proposals_past_the_new_leaders_log_are_resolved_without_new_proposals() {
    let mut s = common::manual(3, 25, u64::MAX / 2);
    elect(&mut s, 0);
    propose(&mut s, 0, b"v1");
    tick_settle(&mut s, 0, 1);
    // A proposes p1..p3 while cut off: only A holds them (slots 2..=4).
    s.isolate(0);
    propose(&mut s, 0, b"p1");
    propose(&mut s, 0, b"p2");
    propose(&mut s, 0, b"p3");
    assert_eq!(s.live(0).unresolved_proposals(), 3);
    age(&mut s);
    elect(&mut s, 1);
    assert_eq!(
        s.live(1).last_index(),
        1,
        "B's log ends before A's proposals"
    );
    s.heal();
    tick_settle(&mut s, 1, 4);
    let a = s.live(0);
    assert_eq!(a.leader(), Some(2));
    assert_eq!(a.unresolved_proposals(), 0, "A's proposals stay unresolved");
    assert_eq!(a.dispatcher().stats().unapplied, 3);
    assert_eq!(a.stats().resolved, 4, "v1 applied as ours, p1..p3 reported");
    for i in 0..3 {
        assert!(s.live(i).commit_index() >= 4, "node {}", i + 1);
        for slot in 2..=4 {
            assert_eq!(
                value_at(&s, i, slot).as_deref(),
                Some(&b""[..]),
                "node {} slot {slot}",
                i + 1
            );
        }
    }
    s.assert_safe();
}

/// A proposal is "ours" when its slot commits with its bytes, whatever ballot the slot ends
/// under: the next leader recovers a value a minority accepted and writes it under its own
/// ballot. Comparing ballots, as Raft compares terms, would report such a proposal dropped
/// although it is applied (and a retry would apply it twice).
#[test]
fn a_proposal_recovered_by_the_next_leader_under_its_ballot_is_applied_as_ours() {
    let mut s = common::manual(3, 26, u64::MAX / 2);
    elect(&mut s, 0);
    propose(&mut s, 0, b"v1");
    tick_settle(&mut s, 0, 1);
    // p reaches C only, and C's answer does not reach A: A does not commit it.
    s.filter = Some(Box::new(|p| {
        !(p.from == 1 && p.to == 2 || p.from == 3 && p.to == 1)
    }));
    propose(&mut s, 0, b"p");
    assert_eq!(s.live(0).commit_index(), 1);
    assert_eq!(value_at(&s, 2, 2).as_deref(), Some(&b"p"[..]));
    let first_ballot = s.live(0).ballot();
    s.filter = None;
    s.isolate(0);
    age(&mut s);
    elect(&mut s, 1);
    s.heal();
    tick_settle(&mut s, 1, 4);
    let a = s.live(0);
    assert_eq!(a.applied_index(), 2);
    assert_eq!(value_at(&s, 0, 2).as_deref(), Some(&b"p"[..]));
    assert_ne!(a.entry(2).map(|e| e.term), Some(first_ballot));
    assert_eq!(a.unresolved_proposals(), 0);
    assert_eq!(a.stats().resolved, 2, "v1 and p applied as ours");
    assert_eq!(a.dispatcher().stats().unapplied, 0, "p reported dropped");
    s.assert_safe();
}
