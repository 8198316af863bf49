//! A single-replica shard stopped and restarted from its data directory keeps every released
//! write: the restarted site's watermark sees its whole log, so the new epoch's `FVW` keeps
//! what was released. (Before the fix, entries its group applied before the site had attached
//! its callbacks were queued unseen by the watermark; `FVW` was fixed over a prefix of the
//! log and released writes were discarded, about one restart in ten.)

mod common;

use std::time::{Duration, Instant};

use mako_server::Cluster;

#[test]
fn restarts_keep_every_released_write() {
    // Fresh clusters: the race was with the first restart's replay of the whole log.
    for (round, pause) in [0u64, 10, 50, 200, 0, 100, 0, 300].into_iter().enumerate() {
        let mut cfg = common::config(1, 1, Duration::from_secs(5));
        cfg.durability = mako_logstore::Durability::Fsync;
        cfg.heartbeat_ms = 50;
        cfg.election_ms = (300, 500);
        let mut c = Cluster::start(cfg).expect("cluster");
        let written = 50u64;
        for k in 0..written {
            let site = c.leader(0).clone();
            let mut tx = site.begin(0).expect("begin");
            tx.put(0, 0, &k.to_be_bytes(), bytes::Bytes::from_static(b"v"))
                .expect("put");
            tx.commit().expect("released");
        }
        std::thread::sleep(Duration::from_millis(pause));
        c.stop_replica(0, 0).expect("stop");
        let site = c.restart_replica(0, 0).expect("restart");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !site.serving() {
            assert!(
                Instant::now() < deadline,
                "the restarted replica never served"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let rows = site.table(0).expect("table").latest();
        let missing: Vec<u64> = (0..written)
            .filter(|k| {
                !rows
                    .iter()
                    .any(|(key, v)| key[..] == k.to_be_bytes()[..] && v.value.is_some())
            })
            .collect();
        assert!(
            missing.is_empty(),
            "round {round} (pause {pause} ms): {} of {written} released writes are gone after \
             the restart (discarded {}): {missing:?}",
            missing.len(),
            site.discarded()
        );
    }
}
