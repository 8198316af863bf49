//! The history checker's workloads on in-process clusters (1×1, 1×3, 2×3, 3×3): every
//! recorded history must be free of anomalies; and a deliberately broken executor, run
//! through the same runner, must be caught.

use std::time::{Duration, Instant};

use mako_bench::check::{CheckConfig, CheckRun, Fault, HOT_KEYS, run_on};
use mako_checker::{Anomaly, AnomalyClass, KeyDist, WorkloadKind};
use mako_server::Cluster;

/// Client run time of each workload.
const RUN: Duration = Duration::from_secs(2);
/// Released transactions a run must reach to count as exercised.
const MIN_RELEASED: usize = 20;

fn config(shards: u32, replicas: u32, workers: u32, clients: usize) -> CheckConfig {
    let mut cfg = CheckConfig::new(WorkloadKind::ListAppend, shards, replicas);
    cfg.workers = workers;
    cfg.clients = clients;
    cfg.duration = RUN;
    cfg
}

/// Runs each `(workload, dist)` on one cluster (distinct key ranges), asserts every history
/// valid and exercised, then that every follower equals its leader.
fn check_all(base: CheckConfig, runs: &[(WorkloadKind, KeyDist)]) {
    let started = Instant::now();
    let cluster = Cluster::start(base.cluster_config()).expect("cluster starts");
    for (i, &(workload, dist)) in runs.iter().enumerate() {
        let cfg = CheckConfig {
            workload,
            dist,
            key_offset: (i as u64 + 1) << 40,
            seed: base.seed + i as u64,
            ..base.clone()
        };
        let run = run_on(&cluster, &cfg, |_| {});
        expect_valid(&cfg, &run);
    }
    if let Err(d) = cluster.compare_replicas(Duration::from_secs(30)) {
        panic!(
            "{}x{}: a follower differs from its leader: {d}",
            base.shards, base.replicas
        );
    }
    cluster.shutdown();
    println!(
        "{}x{}: {} runs in {:.1?}",
        base.shards,
        base.replicas,
        runs.len(),
        started.elapsed()
    );
}

fn expect_valid(cfg: &CheckConfig, run: &CheckRun) {
    let s = &run.stats;
    let what = format!(
        "{} on {}x{} ({} workers/shard, {} clients, {:?}, seed {})",
        cfg.workload, cfg.shards, cfg.replicas, cfg.workers, cfg.clients, cfg.dist, cfg.seed
    );
    println!(
        "{what}: {} released ({} cross-shard), {} aborted {:?}, {} unknown; ran {:.1?}, checked in {:.1?}",
        s.released,
        s.cross_shard_released,
        s.aborted,
        s.abort_reasons,
        s.unknown,
        s.elapsed,
        s.check_time
    );
    assert!(
        run.report.is_valid(),
        "{what}: anomalies found\n{}",
        run.report
    );
    assert!(
        s.released >= MIN_RELEASED,
        "{what}: only {} transactions released\n{}",
        s.released,
        run.report
    );
    assert_eq!(s.undecodable, 0, "{what}: undecodable stored values");
    if cfg.shards > 1 {
        assert!(
            s.cross_shard_released > 0,
            "{what}: no cross-shard transaction was released"
        );
    }
}

#[test]
fn list_append_on_1x1() {
    check_all(
        config(1, 1, 2, 4),
        &[(WorkloadKind::ListAppend, KeyDist::Uniform)],
    );
}

#[test]
fn registers_and_bank_on_1x3() {
    check_all(
        config(1, 3, 3, 6),
        &[
            (WorkloadKind::Registers, HOT_KEYS),
            (WorkloadKind::Bank, KeyDist::Uniform),
        ],
    );
}

#[test]
fn every_workload_on_2x3() {
    check_all(
        config(2, 3, 2, 6),
        &[
            (WorkloadKind::ListAppend, HOT_KEYS),
            (WorkloadKind::Registers, KeyDist::Uniform),
            (WorkloadKind::Bank, HOT_KEYS),
            (WorkloadKind::WriteSkew, KeyDist::Uniform),
        ],
    );
}

#[test]
fn every_workload_on_3x3() {
    check_all(
        config(3, 3, 2, 8),
        &[
            (WorkloadKind::ListAppend, KeyDist::Uniform),
            (WorkloadKind::Registers, HOT_KEYS),
            (WorkloadKind::Bank, KeyDist::Uniform),
            (WorkloadKind::WriteSkew, KeyDist::Uniform),
        ],
    );
}

/// The harness can fail: the same runner over a broken executor is caught.
#[test]
fn broken_executors_are_caught() {
    let base = config(2, 1, 2, 4);
    let cluster = Cluster::start(base.cluster_config()).expect("cluster starts");

    // Stale reads: a client's reads of a key repeat its first read, missing later appends
    // (its own included) that were released before the read began.
    let stale = CheckConfig {
        workload: WorkloadKind::ListAppend,
        dist: HOT_KEYS,
        fault: Some(Fault::StaleReads),
        key_offset: 1 << 40,
        ..base.clone()
    };
    let run = run_on(&cluster, &stale, |_| {});
    println!("stale reads: {:?}", run.report.classes());
    assert!(
        run.stats.released >= MIN_RELEASED,
        "too few released: {}",
        run.report
    );
    assert!(!run.report.is_valid(), "stale reads not caught");
    assert!(
        run.report
            .anomalies
            .iter()
            .any(|a| matches!(a, Anomaly::Cycle(_))),
        "stale reads should show as cycles: {}",
        run.report
    );

    // No atomicity: each half of a write-skew pair reads and writes in separate
    // transactions, so both halves can read their key unwritten.
    let split = CheckConfig {
        workload: WorkloadKind::WriteSkew,
        fault: Some(Fault::SplitTxns),
        key_offset: 2 << 40,
        ..base
    };
    let run = run_on(&cluster, &split, |_| {});
    println!("split transactions: {:?}", run.report.classes());
    assert!(
        run.report.has(AnomalyClass::WriteSkew),
        "split write-skew pairs not caught: {}",
        run.report
    );
    cluster.shutdown();
}
