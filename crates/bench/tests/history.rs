//! The history checker's workloads on in-process clusters (1×1, 1×3, 2×3, 3×3): every
//! recorded history must be free of anomalies; and a deliberately broken executor, run
//! through the same runner, must be caught.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_bench::check::{
    CheckConfig, CheckRun, ClusterExecutor, ExecCounters, Fault, HOT_KEYS, run_on, shard_of,
};
use mako_checker::{
    Anomaly, AnomalyClass, ExecResult, GARBAGE, KeyDist, Op, Outcome, TxnExecutor, WorkloadKind,
    encode_key,
};
use mako_server::msg::{Msg, Op as ServerOp};
use mako_server::{Cluster, ControlFaults, Fate};

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

/// The same histories with every group on Multi-Paxos.
#[test]
fn every_workload_on_2x3_with_paxos() {
    let mut cfg = config(2, 3, 2, 6);
    cfg.protocol = mako_server::Protocol::Paxos;
    check_all(
        cfg,
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

/// The executor maps each operation onto the cluster and reports outcomes as `commit` did:
/// released, aborted (at commit or while executing), and unknown with its observations.
#[test]
fn executor_maps_operations_and_outcomes() {
    const DELIVER: u8 = 0;
    const DROP_ACKS: u8 = 1;
    const DROP_VALIDATE: u8 = 2;
    const DROP_GETS: u8 = 3;
    let mode = Arc::new(AtomicU8::new(DELIVER));
    let mut cfg = config(2, 1, 2, 1);
    cfg.timeout = Duration::from_millis(500);
    let mut cc = cfg.cluster_config();
    let m = Arc::clone(&mode);
    cc.control_faults = Some(ControlFaults(Arc::new(move |_, _, msg: &Msg| {
        let drop = matches!(
            (m.load(Ordering::SeqCst), msg),
            (DROP_ACKS, Msg::Ack { .. })
                | (
                    DROP_VALIDATE,
                    Msg::Request {
                        op: ServerOp::Validate { .. },
                        ..
                    },
                )
                | (
                    DROP_GETS,
                    Msg::Request {
                        op: ServerOp::Get { .. },
                        ..
                    },
                )
        );
        if drop { Fate::Drop } else { Fate::Deliver }
    })));
    let cluster = Cluster::start(cc).expect("cluster starts");
    let counters = Arc::new(ExecCounters::default());
    // Client 0 coordinates on shard 0; odd keys live on shard 1.
    let mut exec = ClusterExecutor::for_client(&cluster, 2, 0, None, Arc::clone(&counters));
    let released = |r: ExecResult| {
        assert_eq!(r.outcome, Outcome::Released, "{r:?}");
        r.observed
    };
    released(exec.execute(&[
        Op::Append { key: 0, value: 1 },
        Op::Append { key: 1, value: 2 },
    ]));
    released(exec.execute(&[Op::Append { key: 0, value: 3 }]));
    released(exec.execute(&[Op::Add { key: 3, delta: 5 }, Op::Write { key: 4, value: 9 }]));
    let obs = released(exec.execute(&[Op::Add { key: 3, delta: -2 }]));
    assert_eq!(obs, vec![Some(vec![5])]);
    // Unreadable bytes under a checker key read as GARBAGE.
    let mut tx = cluster.leader(0).begin(0).expect("configured worker");
    tx.put(
        shard_of(7, 2),
        0,
        &encode_key(7),
        Bytes::from_static(b"abc"),
    )
    .expect("put");
    tx.commit().expect("released");
    let reads: Vec<Op> = [0, 1, 3, 4, 7, 9].map(|key| Op::Read { key }).to_vec();
    let obs = released(exec.execute(&reads));
    let expect = |v: &[u64]| Some(v.to_vec());
    assert_eq!(
        obs,
        vec![
            expect(&[1, 3]),
            expect(&[2]),
            expect(&[3]),
            expect(&[9]),
            expect(&[GARBAGE]),
            expect(&[]),
        ]
    );
    assert_eq!(counters.undecodable.load(Ordering::Relaxed), 1);

    // The participant's acknowledgement is lost: committed, not released in time: unknown,
    // with the reads it made; the write is visible afterwards.
    mode.store(DROP_ACKS, Ordering::SeqCst);
    let r = exec.execute(&[Op::Read { key: 0 }, Op::Write { key: 5, value: 11 }]);
    assert_eq!(r.outcome, Outcome::Unknown, "{r:?}");
    assert_eq!(r.observed.first(), Some(&Some(vec![1, 3])));
    mode.store(DELIVER, Ordering::SeqCst);
    let obs = released(exec.execute(&[Op::Read { key: 5 }]));
    assert_eq!(obs, vec![Some(vec![11])]);

    // The participant never gets the validation: aborted at commit, never visible.
    mode.store(DROP_VALIDATE, Ordering::SeqCst);
    let r = exec.execute(&[Op::Read { key: 0 }, Op::Write { key: 9, value: 12 }]);
    assert_eq!(r.outcome, Outcome::Aborted("timeout".into()), "{r:?}");
    // A remote read that gets no reply aborts the transaction while it executes.
    mode.store(DROP_GETS, Ordering::SeqCst);
    let r = exec.execute(&[Op::Read { key: 1 }]);
    assert_eq!(r.outcome, Outcome::Aborted("timeout".into()), "{r:?}");
    mode.store(DELIVER, Ordering::SeqCst);
    let obs = released(exec.execute(&[Op::Read { key: 9 }]));
    assert_eq!(obs, vec![Some(vec![])]);
    assert_eq!(counters.released.load(Ordering::Relaxed), 7);
    assert_eq!(counters.aborted.load(Ordering::Relaxed), 2);
    assert_eq!(counters.unknown.load(Ordering::Relaxed), 1);
    cluster.shutdown();
}
