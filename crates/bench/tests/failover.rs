//! `run_cluster` with a leader crash (`mako bench --kill-leader-at`): shard 0's leader is
//! crashed mid-run on a 2 × 3 cluster; the crash must happen, the clients must move to the new
//! leader, releases must resume after the crash, and the series must cover the run.

use std::time::Duration;

use mako_bench::{BUCKET, ClusterBenchConfig, run_cluster};

#[test]
fn leader_crash_mid_run_then_releases_resume() {
    let cfg = ClusterBenchConfig {
        shards: 2,
        replicas: 3,
        threads: 2,
        duration: Duration::from_millis(3000),
        keys: 2_000,
        kill_leader_at: Some(Duration::from_millis(800)),
        election_ms: (150, 300),
        request_timeout: Duration::from_millis(200),
        unknown_after: Duration::from_secs(1),
        ..ClusterBenchConfig::default()
    };
    let mut crash_seen = false;
    let r = run_cluster(&cfg, |p| crash_seen |= p.crashed_at.is_some()).expect("cluster run");
    assert_eq!(r.kill_error, None);
    let f = r.failover.as_ref().expect("the leader was crashed");
    assert!(crash_seen, "progress reports the crash");
    assert_eq!(f.shard, 0);
    assert!(f.replica < 3);
    assert!(
        f.new_leader.is_some_and(|n| n != f.replica),
        "another replica leads shard 0: {:?}",
        f.new_leader
    );
    // The series covers the whole measured phase, bucket by bucket.
    let n = (cfg.duration.as_nanos() / BUCKET.as_nanos()) as usize;
    assert_eq!(r.series.len(), n);
    for (i, b) in r.series.iter().enumerate() {
        assert_eq!(b.start_ms, i as u64 * BUCKET.as_millis() as u64);
    }
    let released = (r.released_per_sec * r.secs).round() as u64;
    let in_series: u64 = r.series.iter().map(|b| b.released).sum();
    assert!(
        in_series > 0 && in_series <= released,
        "{in_series} of {released}"
    );
    // Releases before the crash, and again in buckets wholly after it.
    let before: u64 = r
        .series
        .iter()
        .filter(|b| (b.start_ms + r.bucket_ms) as f64 <= f.at_ms)
        .map(|b| b.released)
        .sum();
    let after: u64 = r
        .series
        .iter()
        .filter(|b| b.start_ms as f64 > f.at_ms)
        .map(|b| b.released)
        .sum();
    assert!(before > 0, "released before the crash");
    assert!(after > 0, "released after the crash: {:?}", r.series);
    // Transactions begun after the crash were released, cross-shard ones included, and
    // shard 0's clients (whose leader died) moved to its new leader and got releases too.
    assert!(f.first_release_ms.is_some());
    assert!(f.first_cross_release_ms.is_some());
    assert!(
        f.released_after_by_home.iter().all(|&n| n > 0),
        "{:?}",
        f.released_after_by_home
    );
    assert!(
        r.consistent,
        "replicas differ after the failover: {:?}",
        r.difference
    );
}
