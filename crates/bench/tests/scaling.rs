//! A cluster run with a fixed cross-shard share reports its CPU time and the share it measured;
//! the scaling table orders runs by shard count and compares its ends.

use std::time::Duration;

use mako_bench::{ClusterBenchConfig, ScalingReport, ShardMix, run_cluster};

#[test]
fn fixed_cross_shard_run_reports_cpu_and_measured_share() {
    let cfg = ClusterBenchConfig {
        shards: 2,
        replicas: 3,
        threads: 1,
        duration: Duration::from_millis(400),
        keys: 2_000,
        mix: ShardMix::CrossShard(20.0),
        ..ClusterBenchConfig::default()
    };
    let r = run_cluster(&cfg, |_| {}).expect("cluster run");
    assert!(r.consistent, "{:?}", r.difference);
    assert_eq!(r.cross_shard_pct, Some(20.0));
    // Sanity of the getrusage figure, not a timing: some CPU was used, and no more than every
    // core of the machine could give over the phase (one core and 50 ms of slack for the
    // accounting's granularity).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert!(r.wall_secs >= cfg.duration.as_secs_f64(), "{}", r.wall_secs);
    assert!(r.cpu_secs > 0.0, "no CPU time measured");
    assert!(
        r.cpu_secs <= r.wall_secs * (cores + 1.0) + 0.05,
        "{} CPU-s in {} s on {cores} cores",
        r.cpu_secs,
        r.wall_secs
    );
    let released = r.released_per_sec * r.secs;
    assert!(
        (r.released_per_cpu_sec - released / r.cpu_secs).abs() < 1e-6 * released.max(1.0),
        "{} released/cpu-s",
        r.released_per_cpu_sec
    );
    // The measured share over the run's commits: within five binomial standard deviations of
    // the configured 20% (the shapes are drawn independently per transaction; retries of
    // aborted ones keep their shape).
    let commits = (r.spec_per_sec * r.secs).round();
    assert!(commits > 0.0, "nothing committed");
    let p = 0.2;
    let tol = 5.0 * (p * (1.0 - p) / commits).sqrt();
    assert!(
        (r.distributed_pct / 100.0 - p).abs() <= tol,
        "{}% cross-shard over {commits} commits (tolerance {:.1} points)",
        r.distributed_pct,
        100.0 * tol
    );

    // The table: rows by shard count, the ratio of released/CPU-s at the most shards to that
    // at the fewest (the second row is this run relabelled with half the efficiency).
    let mut half = r.clone();
    half.shards = 4;
    half.released_per_cpu_sec = r.released_per_cpu_sec / 2.0;
    let t = ScalingReport::new(&[&half, &r], 1);
    assert_eq!(t.rows.iter().map(|x| x.shards).collect::<Vec<_>>(), [2, 4]);
    let ratio = t.ratio.expect("two rows with CPU time");
    assert!((ratio - 0.5).abs() < 1e-9, "{ratio}");
    assert_eq!(t.cross_shard_pct, Some(20.0));
    assert!((t.rows[0].cross_shard_measured_pct - r.distributed_pct).abs() < 1e-9);
    assert!(ScalingReport::new(&[&r], 1).ratio.is_none());
}

/// A worker with a window keeps no more commits unreleased than the window; without one it
/// runs ahead of replication.
#[test]
fn a_worker_keeps_at_most_its_window_of_commits_unreleased() {
    let run = |window: usize| {
        let cfg = ClusterBenchConfig {
            shards: 2,
            replicas: 3,
            threads: 1,
            duration: Duration::from_millis(600),
            keys: 2_000,
            window,
            ..ClusterBenchConfig::default()
        };
        let r = run_cluster(&cfg, |_| {}).expect("cluster run");
        assert!(r.consistent, "{:?}", r.difference);
        assert!(
            r.released_per_sec > 0.0,
            "released nothing with window {window}"
        );
        r.max_unreleased
    };
    let bounded = run(3);
    assert!(
        (1..=3).contains(&bounded),
        "{bounded} unreleased at once with a window of 3"
    );
    let unbounded = run(0);
    assert!(
        unbounded > 3,
        "without a window a worker runs ahead of replication: at most {unbounded} unreleased"
    );
}
