//! Coordinators follow a participant shard's leader across a leadership transfer; the
//! cluster's test controls (transfer, isolate, reconnect, stop) keep commits going.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mako_server::msg::{Msg, Refusal, Reply};
use mako_server::{Cluster, ClusterConfig, CommitError, ControlFaults, Fate};
use mako_txn::AbortReason;

const LEADER_WAIT: Duration = Duration::from_secs(10);

mod common;

fn config(shards: u32, replicas: u32) -> ClusterConfig {
    ClusterConfig {
        // Transfers stick: Raft does not hand leadership back to replica 0.
        preferred_leader: false,
        ..common::config(shards, replicas, Duration::from_secs(3))
    }
}

fn val(n: u64) -> Bytes {
    Bytes::copy_from_slice(&n.to_le_bytes())
}

/// A cross-shard transaction coordinated on shard 0's leader, writing `k` on both shards.
///
/// An abort (never visible) is retried a few times: on a loaded machine a leader may lose its
/// lease or an election may happen for a moment; a pending outcome is waited on. What the
/// callers assert is that the transaction is released.
fn transfer(c: &Cluster, k: u64) -> Result<mako_txn::CommitInfo, CommitError> {
    let mut attempts = 0;
    loop {
        let mut tx = c.leader(0).begin(0).expect("configured worker");
        let key = k.to_be_bytes();
        tx.put(0, 0, &key, val(k)).expect("put");
        tx.put(1, 0, &key, val(k)).expect("put");
        match tx.commit() {
            Err(CommitError::Aborted(_)) if attempts < 5 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(CommitError::Unknown { spec, why }) => {
                return match spec.wait_release(Duration::from_secs(10)) {
                    Ok(()) => Ok(spec.info.clone()),
                    Err(_) => Err(CommitError::Unknown { spec, why }),
                };
            }
            other => return other,
        }
    }
}

/// Moves shard 1's leadership to replica 1 and waits until the cluster serves the new epoch.
fn move_shard1_leader(c: &Cluster) {
    c.transfer_leader(1, 1).expect("transfer asked");
    assert!(
        c.wait_leader(1, 1, LEADER_WAIT),
        "replica 1 never led shard 1"
    );
}

fn assert_consistent(c: &Cluster) {
    if let Err(d) = c.compare_replicas(Duration::from_secs(20)) {
        panic!("replicas differ: {d}");
    }
}

/// After shard 1's leadership moves from replica 0 to replica 1, cross-shard transactions
/// coordinated on shard 0 (writes only, and reads then writes) commit and are released on the
/// new leader, and every replica agrees. Before leader routing, requests went to replica 0 and
/// every such transaction aborted with `NotLeader`.
#[test]
fn cross_shard_commits_follow_a_leader_transfer() {
    let c = Cluster::start(config(2, 3)).expect("cluster");
    for k in 0..5 {
        transfer(&c, k).expect("released before the transfer");
    }
    move_shard1_leader(&c);
    let new_leader = Arc::clone(&c.sites[1][1]);
    for k in 5..25 {
        transfer(&c, k).unwrap_or_else(|e| panic!("transaction {k} after the transfer: {e}"));
    }
    // Read on shard 1 (first request), then write there: one participant, one Validate.
    for k in 25..30u64 {
        let mut tx = c.leader(0).begin(1).expect("configured worker");
        let key = k.to_be_bytes();
        let prev = (k - 20).to_be_bytes();
        assert_eq!(tx.get(1, 0, &prev).expect("read"), Some(val(k - 20)));
        tx.put(1, 0, &key, val(k)).expect("put");
        tx.put(0, 0, &key, val(k)).expect("put");
        tx.commit()
            .unwrap_or_else(|e| panic!("read-write transaction {k}: {e}"));
    }
    assert_eq!(
        c.leader(0).leader_of(1),
        Some(new_leader.node()),
        "shard 0 routes to shard 1's new leader"
    );
    let t = new_leader.table(0).expect("table");
    for k in 0..30u64 {
        let got = t.get(&k.to_be_bytes());
        assert_eq!(got, Some(val(k)), "key {k} on shard 1's new leader");
    }
    assert_consistent(&c);
}

/// Keeps the coordinator's view of shard 1's leader stale while `hold` is set: the new
/// leader's watermarks and `meta`'s epoch histories (which publish every shard's leader) do
/// not reach it. (Without the new epoch the coordinator's shard cannot close the old one, so
/// the new leader does not serve meanwhile.)
fn stale_view(hold: &Arc<AtomicBool>, coordinator: u64, newcomer: u64) -> ControlFaults {
    let h = Arc::clone(hold);
    ControlFaults(Arc::new(move |from, to, m| {
        let held = match m {
            Msg::Watermark { .. } => from == newcomer,
            Msg::Epochs { .. } => true,
            _ => false,
        };
        if held && to == coordinator && h.load(Ordering::Relaxed) {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    }))
}

/// Transfers shard 1's leadership to replica 1 and waits until it leads (not until it serves).
fn hand_shard1_to_replica_1(c: &Cluster) {
    c.transfer_leader(1, 1).expect("transfer asked");
    let deadline = std::time::Instant::now() + LEADER_WAIT;
    // ...and the old leader knows it (so that it hints a request on).
    let newcomer = c.sites[1][1].node();
    while !c.sites[1][1].is_leader() || c.sites[1][0].group().leader() != Some(newcomer) {
        assert!(
            std::time::Instant::now() < deadline,
            "replica 1 never led shard 1"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A first request that reaches a replica which no longer leads is refused with a hint and
/// sent once more to the hinted leader within the same timeout. (The coordinator's view is
/// kept stale by withholding what would tell it; the redirected request then meets a leader
/// still establishing its epoch, so the transaction aborts honestly; once the view can move,
/// transactions go straight to the new leader.)
#[test]
fn a_refused_first_request_is_redirected_to_the_hinted_leader() {
    let hold = Arc::new(AtomicBool::new(false));
    let coordinator = Cluster::node_id(3, 0, 0);
    let newcomer = Cluster::node_id(3, 1, 1);
    let mut cfg = config(2, 3);
    cfg.control_faults = Some(stale_view(&hold, coordinator, newcomer));
    let c = Cluster::start(cfg).expect("cluster");
    transfer(&c, 0).expect("released before the transfer");
    hold.store(true, Ordering::Relaxed);
    hand_shard1_to_replica_1(&c);
    let site = Arc::clone(&c.sites[0][0]);
    assert_eq!(
        site.leader_of(1),
        Some(Cluster::node_id(3, 1, 0)),
        "stale view"
    );
    let mut tx = site.begin(0).expect("configured worker");
    tx.put(0, 0, b"a", val(1)).expect("put");
    tx.put(1, 0, b"a", val(1)).expect("put");
    match tx.commit() {
        Ok(_) | Err(CommitError::Aborted(_)) => {}
        other => panic!("an honest outcome was expected, got {other:?}"),
    }
    assert_eq!(site.redirects(), 1);
    assert_eq!(site.leader_of(1), Some(newcomer), "learned from the hint");
    hold.store(false, Ordering::Relaxed);
    assert!(c.wait_serving(LEADER_WAIT), "the cluster serves again");
    transfer(&c, 1).expect("released through the new leader");
    assert_consistent(&c);
}

/// A request that is not the transaction's first on that shard is never redirected: its
/// earlier requests (here a read) live on the old leader, so the transaction aborts.
#[test]
fn a_participant_contacted_before_a_transfer_aborts_instead_of_moving() {
    let c = Cluster::start(config(2, 3)).expect("cluster");
    transfer(&c, 7).expect("released before the transfer");
    let site = Arc::clone(c.leader(0));
    let mut tx = site.begin(0).expect("configured worker");
    assert_eq!(
        tx.get(1, 0, &7u64.to_be_bytes()).expect("read"),
        Some(val(7))
    );
    tx.put(1, 0, b"x", val(1)).expect("put");
    tx.put(0, 0, b"x", val(1)).expect("put");
    move_shard1_leader(&c);
    match tx.commit() {
        // The old leader refuses it (NotLeader) or the epoch it began in ended (Failover).
        Err(CommitError::Aborted(AbortReason::NotLeader | AbortReason::Failover)) => {}
        other => panic!("expected an abort, got {other:?}"),
    }
    assert_eq!(site.redirects(), 0);
    // Nothing of it is anywhere; the next transaction goes to the new leader.
    transfer(&c, 8).expect("released after the transfer");
    for r in &c.sites[1] {
        assert!(r.table(0).expect("table").get(b"x").is_none());
    }
    assert_consistent(&c);
}

/// A follower cut off the network does not stop commits; reconnected, it catches up.
#[test]
fn an_isolated_follower_catches_up_after_reconnecting() {
    let c = Cluster::start(config(2, 3)).expect("cluster");
    c.isolate(1, 2).expect("mem network");
    for k in 0..30 {
        transfer(&c, k).unwrap_or_else(|e| panic!("transaction {k} with a follower cut off: {e}"));
    }
    let lagging = &c.sites[1][2];
    assert!(
        lagging
            .table(0)
            .expect("table")
            .get(&29u64.to_be_bytes())
            .is_none(),
        "the isolated follower received nothing"
    );
    c.reconnect(1, 2).expect("mem network");
    for k in 30..40 {
        transfer(&c, k).unwrap_or_else(|e| panic!("transaction {k} after reconnecting: {e}"));
    }
    assert_consistent(&c);
    assert!(
        lagging
            .table(0)
            .expect("table")
            .get(&29u64.to_be_bytes())
            .is_some()
    );
}

/// A stopped follower does not stop commits; the comparison skips it.
#[test]
fn commits_continue_with_a_stopped_follower() {
    let c = Cluster::start(config(2, 3)).expect("cluster");
    transfer(&c, 0).expect("released");
    c.stop_replica(1, 2).expect("stopped");
    for k in 1..20 {
        transfer(&c, k).unwrap_or_else(|e| panic!("transaction {k} with a follower stopped: {e}"));
    }
    assert!(c.current_leader(1).is_some());
    assert_consistent(&c);
}

/// A `NotLeader` hint naming a node of another shard is refused as malformed: the view does
/// not move there and the request is not redirected (the transaction times out and aborts).
#[test]
fn a_hint_outside_the_shard_is_malformed_and_ignored() {
    let coordinator = Cluster::node_id(3, 0, 0);
    let newcomer = Cluster::node_id(3, 1, 1);
    let old = Cluster::node_id(3, 1, 0);
    let mut cfg = config(2, 3);
    cfg.site.timeout = Duration::from_millis(500);
    let hold = Arc::new(AtomicBool::new(false));
    let stale = stale_view(&hold, coordinator, newcomer);
    cfg.control_faults = Some(ControlFaults(Arc::new(move |from, to, m| match m {
        // Keep the coordinator's view stale, so its first request reaches the old leader.
        Msg::Watermark { .. } | Msg::Epochs { .. } if to == coordinator => (stale.0)(from, to, m),
        Msg::Reply {
            req,
            reply: Reply::Refused(Refusal::NotLeader(Some(_))),
            shard,
            epoch,
            w,
        } => Fate::Replace(Msg::Reply {
            req: *req,
            reply: Reply::Refused(Refusal::NotLeader(Some(coordinator))),
            shard: *shard,
            epoch: *epoch,
            w: *w,
        }),
        _ => Fate::Deliver,
    })));
    let c = Cluster::start(cfg).expect("cluster");
    hold.store(true, Ordering::Relaxed);
    hand_shard1_to_replica_1(&c);
    let site = Arc::clone(&c.sites[0][0]);
    let before = site.malformed_messages();
    let mut tx = site.begin(0).expect("configured worker");
    tx.put(0, 0, b"a", val(1)).expect("put");
    tx.put(1, 0, b"a", val(1)).expect("put");
    match tx.commit() {
        Err(CommitError::Aborted(AbortReason::Timeout)) => {}
        other => panic!("expected a timeout abort, got {other:?}"),
    }
    assert!(site.malformed_messages() > before);
    assert_eq!(site.redirects(), 0);
    assert_eq!(site.leader_of(1), Some(old));
}
