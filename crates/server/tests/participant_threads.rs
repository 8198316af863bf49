//! Which thread serves a participant's work (2PC requests and decisions): in one process the
//! coordinator's own (no hand-off, no wake-up), over TCP the participant's control thread
//! (the transport's receiving thread carries Raft traffic, which a long scan must not hold
//! up); and the ticker never waits for participant work.

mod common;

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_server::msg::Msg;
use mako_server::{Cluster, ClusterConfig, ControlFaults, Fate, NetKind};
use parking_lot::Mutex;

/// Names of the threads that sent shard 1's replies and acknowledgements during one
/// multi-shard transaction run on a thread named `coordinator`, over `net`.
fn reply_threads(net: NetKind) -> Vec<String> {
    let mut cfg = ClusterConfig {
        net,
        ..common::config(2, 1, Duration::from_secs(10))
    };
    // Shard 1's one replica.
    let x = Cluster::node_id(1, 1, 0);
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = Arc::clone(&seen);
    cfg.control_faults = Some(ControlFaults(Arc::new(move |from, _, m| {
        if from == x && matches!(m, Msg::Reply { .. } | Msg::Ack { .. }) {
            let name = std::thread::current().name().unwrap_or("").to_string();
            s.lock().push(name);
        }
        Fate::Deliver
    })));
    let c = Cluster::start(cfg).expect("cluster");
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("coordinator".into())
            .spawn_scoped(s, || {
                let mut tx = c.leader(0).begin(0).expect("configured worker");
                tx.get(1, 0, b"k").expect("remote read");
                for shard in 0..2 {
                    tx.put(shard, 0, b"k", Bytes::from_static(b"v"))
                        .expect("put");
                }
                tx.commit().expect("released");
            })
            .expect("spawn")
            .join()
            .expect("coordinator");
    });
    c.shutdown();
    let names = seen.lock().clone();
    // The read's reply, the validation's reply, the decision's acknowledgement.
    assert!(names.len() >= 3, "{names:?}");
    names
}

#[test]
fn in_one_process_the_coordinators_thread_serves_the_participant() {
    let names = reply_threads(NetKind::Mem);
    assert!(
        names.iter().all(|n| n == "coordinator"),
        "shard 1 replied from {names:?}"
    );
}

#[test]
fn over_tcp_the_participants_control_thread_serves_its_work() {
    let names = reply_threads(NetKind::Tcp);
    assert!(
        names.iter().all(|n| n.starts_with("site-ctl-")),
        "shard 1 replied from {names:?}"
    );
}

const ROWS: u32 = 100_000;

/// Longest gap between two ticks of shard 1's leader during one remote scan of every row,
/// and the scan's duration.
fn tick_gap_during_scan(c: &Cluster) -> (Duration, Duration) {
    let p = c.leader(1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let gap = s.spawn(|| {
            let mut last = (p.ticks(), Instant::now());
            let mut max = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_micros(200));
                let n = p.ticks();
                if n != last.0 {
                    last = (n, Instant::now());
                } else {
                    max = max.max(last.1.elapsed());
                }
            }
            max
        });
        let t = Instant::now();
        let mut tx = c.leader(0).begin(1).expect("worker");
        let rows = tx
            .scan(1, 0, (Bound::Unbounded, Bound::Unbounded), ROWS as usize)
            .expect("scan");
        let took = t.elapsed();
        assert_eq!(rows.len(), ROWS as usize);
        drop(tx);
        stop.store(true, Ordering::Relaxed);
        (gap.join().expect("gap"), took)
    })
}

/// A participant holding a piece has its ticker check it; a long request (a scan of every
/// row) holding the participants meanwhile must not stop the ticker (flushes, heartbeats,
/// the watermark exchange).
#[test]
fn a_long_remote_scan_does_not_stop_the_participants_ticker() {
    let c = Cluster::start(common::config(2, 1, Duration::from_secs(30))).expect("cluster");
    for k in (0..ROWS).step_by(500) {
        let mut tx = c.leader(1).begin(0).expect("worker");
        for j in k..k + 500 {
            tx.put(
                1,
                0,
                format!("k{j:08}").as_bytes(),
                Bytes::from_static(b"v"),
            )
            .expect("put");
        }
        tx.commit().expect("load");
    }
    // One piece held (an open remote read): the ticker checks it on every tick.
    let mut held = c.leader(0).begin(0).expect("worker");
    held.get(1, 0, b"k00000001").expect("remote read");
    assert!(c.leader(1).participant_pieces() >= 1);
    let (gap, took) = tick_gap_during_scan(&c);
    drop(held);
    c.shutdown();
    eprintln!("longest tick gap {gap:?} during a {took:?} scan");
    // A ticker waiting for the scan stops for as long as the participant scans (here about
    // half of the request's time; the rest is the reply's encoding, transfer and decoding).
    assert!(
        took >= Duration::from_millis(100),
        "the scan took only {took:?}: too short to tell"
    );
    assert!(
        gap < Duration::from_millis(40),
        "shard 1's leader (tick 1 ms) did not tick for {gap:?} during a {took:?} remote scan"
    );
}
