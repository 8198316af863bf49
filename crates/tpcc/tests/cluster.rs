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
}
