//! The periodic watermark exchange: other shards' leaders every tick, every replica less often.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mako_server::msg::Msg;
use mako_server::{Cluster, ControlFaults, Fate, WATERMARK_TO_ALL_EVERY};

mod common;

#[test]
fn a_leader_sends_its_watermark_to_other_leaders_every_tick_and_to_followers_less_often() {
    let mut cfg = common::config(2, 3, Duration::from_secs(5));
    let (leader0, leader1, follower0) = (
        Cluster::node_id(3, 0, 0),
        Cluster::node_id(3, 1, 0),
        Cluster::node_id(3, 0, 1),
    );
    let to_leader = Arc::new(AtomicU64::new(0));
    let to_follower = Arc::new(AtomicU64::new(0));
    let (l, f) = (Arc::clone(&to_leader), Arc::clone(&to_follower));
    cfg.control_faults = Some(ControlFaults(Arc::new(move |from, to, m| {
        if from == leader0 && matches!(m, Msg::Watermark { shard: 0, .. }) {
            if to == leader1 {
                l.fetch_add(1, Ordering::Relaxed);
            } else if to == follower0 {
                f.fetch_add(1, Ordering::Relaxed);
            }
        }
        Fate::Deliver
    })));
    let c = Cluster::start(cfg).expect("cluster");
    // Count from a settled cluster on: leaders elected, epoch opened.
    let mut tx = c.leader(0).begin(0).expect("configured worker");
    tx.put(0, 0, b"k", Bytes::from_static(b"v")).expect("put");
    tx.commit().expect("released");
    to_leader.store(0, Ordering::Relaxed);
    to_follower.store(0, Ordering::Relaxed);
    while to_leader.load(Ordering::Relaxed) < 20 * WATERMARK_TO_ALL_EVERY {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (l, f) = (
        to_leader.load(Ordering::Relaxed),
        to_follower.load(Ordering::Relaxed),
    );
    assert!(
        f > 0,
        "followers still hear the watermark ({l} to the leader)"
    );
    assert!(
        f * 3 < l,
        "followers hear it about every {WATERMARK_TO_ALL_EVERY}th tick: {f} to a follower, {l} to the other leader"
    );
    // Followers still replay with what they hear: every replica ends equal to its leader.
    c.compare_replicas(Duration::from_secs(10))
        .expect("replicas equal to their leaders");
    c.shutdown();
}
