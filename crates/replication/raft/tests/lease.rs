//! The leader lease: renewed while healthy, never overlapping a newer leader (partition,
//! transfer, preferred-leader hand-off, crashes), held by leaders only.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, HostGroup, wait};
use mako_raft::RaftConfig;
use mako_replication::{Applied, Replicator, Role};
use parking_lot::Mutex;
use raft::eraftpb::MessageType;
use rand::{Rng, SeedableRng, rngs::SmallRng};

/// Threaded timing: 10 ms ticks, elections after 300–600 ms (lease 29 × 10 − 30 = 260 ms).
fn timing(cfg: &mut RaftConfig) {
    cfg.heartbeat_interval_ms = 10;
    cfg.election_timeout_min_ms = 300;
    cfg.election_timeout_max_ms = 600;
}

/// Checks, on every replica, that one not reporting itself leader reports no lease.
///
/// Reads term, role, lease, role, term: a follower that became leader (and got a lease)
/// meanwhile shows a new role or term, so only a real violation is flagged.
fn assert_only_leaders_hold_leases(g: &HostGroup) {
    for (i, r) in g.groups.iter().enumerate() {
        let (t1, r1) = (r.term(), r.role());
        let lease = r.lease_until();
        let (r2, t2) = (r.role(), r.term());
        assert!(
            !(r1 == Role::Follower && r2 == Role::Follower && t1 == t2 && lease.is_some()),
            "replica {} is a follower in term {t1} but reports a lease until {lease:?}",
            i + 1
        );
    }
}

/// Waits for a leader holding a lease; returns its index.
fn leader_with_lease(g: &HostGroup) -> usize {
    let mut found = None;
    assert!(
        wait(|| {
            assert_only_leaders_hold_leases(g);
            found = g.leader().filter(|&l| g.groups[l].lease_until().is_some());
            found.is_some()
        }),
        "no leader with a lease"
    );
    found.expect("found")
}

#[test]
fn a_healthy_leader_keeps_renewing_its_lease() {
    let g = HostGroup::start(3, timing);
    let l = leader_with_lease(&g);
    let first = g.groups[l].lease_until().expect("lease held");
    let mut cfg = RaftConfig::new(1, vec![1], 0);
    timing(&mut cfg);
    let len = cfg.lease_duration();
    assert!(
        first - Instant::now() <= len,
        "a lease never exceeds its duration"
    );
    // Renewed past the first lease's end by more than one lease length: several renewals.
    let mut term = g.groups[l].term();
    assert!(
        wait(|| {
            assert_only_leaders_hold_leases(&g);
            assert_eq!(g.leader(), Some(l), "leadership moved in a healthy group");
            term = g.groups[l].term();
            g.groups[l].lease_until().is_some_and(|t| t > first + len)
        }),
        "the lease was not renewed"
    );
    assert_eq!(term, g.groups[l].term());
}

#[test]
fn a_partitioned_leaders_lease_ends_before_any_new_leader_is_elected() {
    let g = HostGroup::start(3, timing);
    // The new leader's applies, with the instant each was seen.
    let applied: Arc<Mutex<Vec<(usize, Instant, u64)>>> = Arc::default();
    for (i, r) in g.groups.iter().enumerate() {
        let a = applied.clone();
        r.on_apply(
            Role::Leader,
            Box::new(move |ctx| {
                a.lock().push((i, Instant::now(), ctx.index));
                Applied::normal(ctx.index)
            }),
        );
        r.on_apply(Role::Follower, Box::new(|ctx| Applied::normal(ctx.index)));
    }
    let l = leader_with_lease(&g);
    let old_term = g.groups[l].term();
    g.groups[l]
        .submit(Bytes::from_static(b"before"))
        .expect("leader accepts");
    assert!(wait(|| g.groups.iter().all(|r| r.applied_index() >= 2)));

    let mut last = g.groups[l].lease_until().expect("lease held");
    g.net.disconnect(l as u64 + 1);
    // Follow the lease until it is gone; its last value is the one that counts.
    assert!(
        wait(|| match g.groups[l].lease_until() {
            Some(t) => {
                last = last.max(t);
                false
            }
            None => true,
        }),
        "the cut-off leader kept its lease"
    );
    // It stops moving: nothing renews it while the leader is cut off.
    let followers: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let mut new_leader = None;
    assert!(
        wait(|| {
            assert_eq!(
                g.groups[l].lease_until(),
                None,
                "the cut-off leader renewed"
            );
            assert_only_leaders_hold_leases(&g);
            new_leader = followers
                .iter()
                .copied()
                .find(|&i| g.groups[i].role() == Role::Leader && g.groups[i].term() > old_term);
            new_leader.is_some()
        }),
        "the followers elected no new leader"
    );
    let nl = new_leader.expect("new leader");
    let new_term = g.groups[nl].term();
    g.groups[nl]
        .submit(Bytes::from_static(b"after"))
        .expect("new leader accepts");
    assert!(wait(|| applied.lock().iter().any(|&(i, _, _)| i == nl)));

    // A lower bound on when the new leader was elected (hence on its first commit): a
    // vote request of a later term can only leave its candidate after a pre-vote
    // quorum, and it is timestamped before it left.
    let votes = g.votes.lock().clone();
    let requests: Vec<_> = votes
        .iter()
        .filter(|v| v.kind == MessageType::MsgRequestVote && v.term > old_term)
        .collect();
    assert!(
        requests
            .iter()
            .any(|v| v.from == nl as u64 + 1 && v.term == new_term),
        "the new leader's vote requests were recorded"
    );
    for v in &requests {
        assert!(
            v.at > last,
            "node {} asked for votes in term {} {:?} before the old leader's lease ended",
            v.from,
            v.term,
            last - v.at
        );
    }
    let (_, first_commit, _) = applied
        .lock()
        .iter()
        .copied()
        .find(|&(i, _, _)| i == nl)
        .expect("new leader applied");
    assert!(first_commit > last);
}

#[test]
fn transfer_leader_drops_the_lease_at_once_and_the_target_leads() {
    let g = HostGroup::start(3, timing);
    let l = leader_with_lease(&g);
    let old_term = g.groups[l].term();
    let target = (l + 1) % 3;
    // First a transfer that cannot finish: the target is cut off, so its MsgTimeoutNow is
    // lost (or, on a real network, could arrive much later) and the transfer aborts.
    g.net.disconnect(target as u64 + 1);
    g.groups[l]
        .transfer_leader(target as u64 + 1)
        .expect("transfer accepted");
    assert_eq!(
        g.groups[l].lease_until(),
        None,
        "lease kept after transfer_leader"
    );
    // No lease for the rest of the old term. The old leader keeps leading it for an
    // election timeout, then steps down: a new term, with a lease, comes (without the
    // target, the other two replicas elect).
    let mut stepped_down = false;
    assert!(
        wait(|| {
            if g.groups[l].term() == old_term {
                assert_eq!(
                    g.groups[l].lease_until(),
                    None,
                    "lease renewed in the old term"
                );
            }
            assert_only_leaders_hold_leases(&g);
            stepped_down |= g.groups[l].role() != Role::Leader;
            g.leader().is_some_and(|n| {
                g.groups[n].term() > old_term && g.groups[n].lease_until().is_some()
            })
        }),
        "no leader with a lease in a newer term after the transfer gave up"
    );
    assert!(
        stepped_down || g.leader() != Some(l),
        "the old leader never stepped down"
    );
    let cur = leader_with_lease(&g);
    let cur_term = g.groups[cur].term();
    // Then a transfer that can finish: the target takes over and may lead with a lease.
    g.net.connect(target as u64 + 1);
    let target = if cur == target { (cur + 1) % 3 } else { target };
    // (The target accepts MsgTimeoutNow only from the leader it knows.)
    assert!(wait(|| g.groups[target].leader() == Some(cur as u64 + 1)
        && g.groups[target].applied_index()
            >= g.groups[cur].commit_index()));
    g.groups[cur]
        .transfer_leader(target as u64 + 1)
        .expect("transfer accepted");
    assert_eq!(g.groups[cur].lease_until(), None);
    assert!(
        wait(|| {
            if g.groups[cur].term() == cur_term {
                assert_eq!(
                    g.groups[cur].lease_until(),
                    None,
                    "lease renewed in the transferring term"
                );
            }
            assert_only_leaders_hold_leases(&g);
            g.groups[target].role() == Role::Leader
        }),
        "the target did not take over"
    );
    assert!(g.groups[target].term() > cur_term);
    assert_eq!(leader_with_lease(&g), target);
}

#[test]
fn followers_and_candidates_report_no_lease() {
    let g = HostGroup::start(3, timing);
    let l = leader_with_lease(&g);
    // A cut-off follower campaigns (pre-candidate, no lease) while the others keep theirs.
    let f = (l + 1) % 3;
    g.net.disconnect(f as u64 + 1);
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_only_leaders_hold_leases(&g);
        assert_eq!(g.groups[f].lease_until(), None);
        std::thread::sleep(Duration::from_millis(1));
    }
    g.net.connect(f as u64 + 1);
    let _ = leader_with_lease(&g);
    for (i, r) in g.groups.iter().enumerate() {
        if i != g.leader().unwrap_or(usize::MAX) && r.role() == Role::Follower {
            assert_eq!(r.lease_until(), None);
        }
    }
}

/// One deterministic chaos run on the lab: partitions, crashes and restarts, transfers
/// and a preferred leader, with the lease checked at every virtual millisecond.
fn lab_chaos(seed: u64, n: usize) -> Cluster {
    let mut c = Cluster::with_config(n, seed, |cfg| cfg.preferred = Some(1));
    c.leases = true;
    c.set_net(Cluster::unreliable());
    let mut rng = SmallRng::seed_from_u64(seed);
    for round in 0..60 {
        match rng.random_range(0..10) {
            0 | 1 => {
                let i = rng.random_range(0..n);
                c.disconnect(i);
            }
            2 | 3 => {
                for i in 0..n {
                    c.connect(i);
                }
            }
            4 => {
                let i = rng.random_range(0..n);
                if c.alive(i) {
                    c.crash(i);
                } else {
                    c.start(i);
                }
            }
            5 | 6 => {
                let to = rng.random_range(1..=n as u64);
                for i in c.leaders() {
                    if let Some(node) = c.node_mut(i) {
                        let _ = node.transfer_leader(to);
                    }
                }
            }
            _ => {
                for i in c.leaders() {
                    let _ = c.start_cmd(i, format!("cmd {round}").as_bytes());
                }
            }
        }
        let ms = rng.random_range(20..600);
        c.run_ms(ms);
    }
    for i in 0..n {
        if !c.alive(i) {
            c.start(i);
        }
        c.connect(i);
    }
    c.run_ms(3000);
    c
}

#[test]
fn lab_no_replica_leads_while_another_holds_a_lease() {
    let mut terms = 0;
    let mut acks = 0;
    for seed in 0..12 {
        let c = lab_chaos(seed, if seed % 2 == 0 { 3 } else { 5 });
        terms += c.agreed_term().unwrap_or(0);
        acks += c.lease_acks_total();
    }
    // Not vacuous: leases were held and leadership changed many times.
    assert!(acks > 100, "only {acks} lease rounds acknowledged");
    assert!(terms > 24, "only {terms} terms in all runs");
}

/// Runs the lab until replica `i` holds a lease from a round acknowledged in the last
/// tick or so; returns the lease's end (virtual ms).
fn fresh_lease(c: &mut Cluster, i: usize) -> u64 {
    let dur = c.cfg_template.lease_duration().as_millis() as u64;
    let hb = c.cfg_template.heartbeat_interval_ms;
    assert!(
        c.run_until(5000, |c| {
            let now = c.now.as_millis() as u64;
            c.node(i)
                .and_then(|n| n.lease_basis())
                .is_some_and(|b| b + 2 * hb >= now)
        }),
        "no fresh lease"
    );
    c.node(i).and_then(|n| n.lease_basis()).expect("lease") + dur
}

#[test]
fn lab_a_restarted_replica_withholds_its_vote_while_a_lease_it_acknowledged_may_run() {
    for seed in 0..8 {
        let mut c = Cluster::new(3, seed);
        c.leases = true;
        let a = c.check_one_leader();
        let (b, x) = ((a + 1) % 3, (a + 2) % 3);
        // `x` is cut off: `a`'s lease rests on `b` alone.
        c.disconnect(x);
        c.run_ms(300);
        let end = fresh_lease(&mut c, a);
        // `a` vanishes; `b` restarts at once, forgetting whom it heard from; `x` is back
        // and campaigns (it acknowledged nothing, so it may).
        c.disconnect(a);
        c.crash(b);
        c.start(b);
        c.connect(x);
        c.node_mut(x).expect("x").campaign().expect("campaign");
        // The lab fails the run if `x` (or `b`) leads before `end`; they do lead after it.
        let others = [b, x];
        assert!(
            c.run_until(5000, |c| others
                .iter()
                .any(|&i| c.node(i).is_some_and(|n| n.is_leader()))),
            "no new leader"
        );
        assert!(c.now.as_millis() as u64 > end);
        assert!(
            c.node(b).expect("b").stats().votes_withheld > 0,
            "seed {seed}: vacuous"
        );
    }
}

#[test]
fn lab_a_deposed_leader_withholds_its_vote_while_its_lease_may_run() {
    use raft::eraftpb::{Message, MessageType};
    for seed in 0..8 {
        let mut c = Cluster::new(3, seed);
        c.leases = true;
        let a = c.check_one_leader();
        let x = (a + 2) % 3;
        c.disconnect(x);
        c.run_ms(300);
        let end = fresh_lease(&mut c, a);
        // A replica stuck in a failed campaign of a later term answers `a` with that term
        // (raft-rs then steps `a` down, forgetting its own lease)...
        let term = c.node(a).expect("a").term();
        let m = Message {
            msg_type: MessageType::MsgAppendResponse,
            from: x as u64 + 1,
            to: a as u64 + 1,
            term: term + 1,
            ..Default::default()
        };
        c.node_mut(a).expect("a").step_message(m).expect("step");
        assert!(!c.node(a).expect("a").is_leader());
        // ...and `x`, back, campaigns: `a` must not help it before the lease's end.
        c.connect(x);
        c.node_mut(x).expect("x").campaign().expect("campaign");
        assert!(
            c.run_until(5000, |c| (0..3)
                .any(|i| c.node(i).is_some_and(|n| n.is_leader()))),
            "no new leader"
        );
        assert!(c.now.as_millis() as u64 > end);
        assert!(
            c.node(a).expect("a").stats().votes_withheld > 0,
            "seed {seed}: vacuous"
        );
    }
}
