//! The periodic watermark exchange: other shards' leaders every tick the watermark moved,
//! every replica every few ticks whether it moved or not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_server::msg::Msg;
use mako_server::{Cluster, ControlFaults, Fate, WATERMARK_TO_ALL_EVERY};

mod common;

#[test]
fn a_leader_sends_a_moving_watermark_to_other_leaders_every_tick_and_to_followers_less_often() {
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
    let write = |i: u64| {
        let mut tx = c.leader(0).begin(0).expect("configured worker");
        tx.put(0, 0, format!("k{i}").as_bytes(), Bytes::from_static(b"v"))
            .expect("put");
        tx.commit().expect("released");
    };
    // Count from a settled cluster on: leaders elected, epoch opened.
    write(0);
    let reset = || {
        to_leader.store(0, Ordering::Relaxed);
        to_follower.store(0, Ordering::Relaxed);
    };
    let counts = || {
        (
            to_leader.load(Ordering::Relaxed),
            to_follower.load(Ordering::Relaxed),
        )
    };
    // Idle: the watermark does not move, so the other leader hears it no more often than
    // the followers (every few ticks, in case a message was lost).
    std::thread::sleep(Duration::from_millis(100));
    reset();
    while to_follower.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (l, f) = counts();
    assert!(
        l <= f + 2,
        "an unchanged watermark was sent to the other leader {l} times, to a follower {f} times"
    );
    // Busy: the watermark moves, and the other leader hears it every tick it moved.
    let busy = AtomicBool::new(true);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 1;
            while busy.load(Ordering::Relaxed) {
                write(i);
                i += 1;
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        reset();
        let deadline = Instant::now() + Duration::from_secs(30);
        while to_leader.load(Ordering::Relaxed) < 20 * WATERMARK_TO_ALL_EVERY
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        busy.store(false, Ordering::Relaxed);
    });
    let (l, f) = counts();
    assert!(
        f > 0,
        "followers still hear the watermark ({l} to the leader)"
    );
    assert!(
        f * 2 < l,
        "while it moves, followers hear it about every {WATERMARK_TO_ALL_EVERY}th tick: {f} to a follower, {l} to the other leader"
    );
    // Followers still replay with what they hear: every replica ends equal to its leader.
    c.compare_replicas(Duration::from_secs(10))
        .expect("replicas equal to their leaders");
    c.shutdown();
}
