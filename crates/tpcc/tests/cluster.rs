//! TPC-C on replicated in-process clusters: every replica passes conditions 1–4 and equals its leader.

use std::time::Duration;

use mako_tpcc::{ClusterTpccReport, Scale, TpccConfig, TxnKind, run_cluster};

const SMALL: Scale = Scale {
    items: 1_000,
    customers_per_district: 30,
    orders_per_district: 30,
};

fn run(shards: usize, warehouses: u32, threads: usize) -> ClusterTpccReport {
    let cfg = TpccConfig {
        warehouses,
        threads,
        shards,
        scale: SMALL,
        duration: Duration::from_secs(2),
        ..TpccConfig::default()
    };
    let r = run_cluster(&cfg, 3, |_| {}).expect("cluster run");
    eprintln!(
        "{shards}x3: committed {} ({:.0}/s), distributed {}, aborted {}, release p50 {:.0} us, unreleased at end {}",
        r.tpcc.committed,
        r.tpcc.txn_per_sec,
        r.distributed,
        r.tpcc.aborted,
        r.release_p50_us,
        r.unreleased_at_end
    );
    assert!(r.replicas_identical, "replicas differ: {:?}", r.difference);
    assert_eq!(r.checks.len(), shards * 3);
    for c in &r.checks {
        assert!(
            c.violations.is_empty(),
            "shard {} replica {}: {:?}",
            c.shard,
            c.replica,
            c.violations
        );
        let rep = c.report.expect("a report when conditions hold");
        assert!(rep.orders > 0 && rep.order_lines > 0);
    }
    assert!(r.consistent());
    assert_eq!(r.never_released, 0);
    for kind in TxnKind::ALL {
        let s = r.tpcc.stats(kind).expect("stats per type");
        assert!(s.committed > 0, "no {} committed", kind.name());
    }
    r
}

#[test]
fn two_shards_three_replicas_distributed_run_is_consistent_everywhere() {
    let r = run(2, 2, 2);
    assert!(r.distributed > 0, "no distributed transaction committed");
    assert!(r.release_p50_us > 0.0);
}

#[test]
fn one_shard_three_replicas_run_is_consistent_everywhere() {
    let r = run(1, 2, 2);
    assert_eq!(r.distributed, 0);
    assert!(r.release_p50_us > 0.0);
    assert_eq!(r.durability, "memory");
    // The series: speculative commits and observed releases per 100 ms over the 2 s run.
    let s = &r.tpcc.series;
    assert_eq!(s.len(), 20);
    let released: u64 = s.iter().map(|b| b.released).sum();
    let committed: u64 = s.iter().map(|b| b.committed).sum();
    assert!(released > 0 && released <= r.tpcc.committed, "{released}");
    assert!(
        committed > 0 && committed <= r.tpcc.committed,
        "{committed}"
    );
    // Every bucket with releases has its release latency, and p50 <= p99.
    for b in s {
        assert_eq!(b.released > 0, b.release_p50_us.is_some(), "{b:?}");
        if let (Some(p50), Some(p99)) = (b.release_p50_us, b.release_p99_us) {
            assert!(p50 <= p99, "{b:?}");
        }
    }
    let c = &r.release_latency;
    assert_eq!(c.len(), 41);
    assert!(c.windows(2).all(|w| w[0].us <= w[1].us));
    assert_eq!(r.tpcc.commit_latency.len(), 41);
}

/// A worker with a window keeps no more commits unreleased than the window.
#[test]
fn a_cluster_worker_keeps_at_most_its_window_of_commits_unreleased() {
    let run = |window: usize| {
        let cfg = TpccConfig {
            warehouses: 1,
            threads: 1,
            shards: 1,
            scale: SMALL,
            duration: Duration::from_millis(800),
            window,
            ..TpccConfig::default()
        };
        let r = run_cluster(&cfg, 3, |_| {}).expect("cluster run");
        assert!(r.replicas_identical, "replicas differ: {:?}", r.difference);
        assert!(r.tpcc.committed > 0);
        r.max_unreleased
    };
    let bounded = run(2);
    assert!(
        (1..=2).contains(&bounded),
        "{bounded} unreleased at once with a window of 2"
    );
    let unbounded = run(0);
    assert!(
        unbounded > 2,
        "without a window a worker runs ahead of replication: at most {unbounded} unreleased"
    );
}
