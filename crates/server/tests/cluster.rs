//! End-to-end: speculative execution, replication, watermarks and release on in-process clusters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mako_server::{
    Cluster, ClusterConfig, CommitError, Pending, Protocol, ReleaseError, Site, SiteConfig, Verdict,
};
use rand::{Rng, SeedableRng, rngs::SmallRng};

fn config(shards: u32, replicas: u32) -> ClusterConfig {
    config_on(Protocol::Raft, shards, replicas)
}

fn config_on(protocol: Protocol, shards: u32, replicas: u32) -> ClusterConfig {
    ClusterConfig {
        protocol,
        replicas,
        site: SiteConfig {
            shards,
            workers: 4,
            tables: vec!["accounts".into()],
            timeout: Duration::from_secs(5),
            ..SiteConfig::default()
        },
        election_ms: (150, 300),
        ..ClusterConfig::default()
    }
}

fn val(n: i64) -> Bytes {
    Bytes::copy_from_slice(&n.to_le_bytes())
}

fn num(b: &[u8]) -> i64 {
    i64::from_le_bytes(b.try_into().expect("8-byte balance"))
}

/// Every follower's store equals its leader's (the run is over, so everything is below VW once released).
fn assert_replicas_consistent(c: &Cluster) {
    if let Err(d) = c.compare_replicas(Duration::from_secs(5)) {
        panic!("replicas differ: {d}");
    }
}

#[test]
fn single_shard_single_replica_releases_at_local_commit() {
    let c = Cluster::start(config(1, 1)).expect("cluster");
    let site = c.leader(0);
    let mut tx = site.begin(0).expect("configured worker");
    tx.put(0, 0, b"k", val(1)).expect("put");
    let info = tx.commit().expect("released");
    assert!(info.wrote && info.vt[0] > 0);
    assert_eq!(site.judge(info.epoch, &info.vt), Verdict::Release);
    let mut tx = site.begin(0).expect("configured worker");
    assert_eq!(tx.get(0, 0, b"k").expect("get"), Some(val(1)));
}

#[test]
fn cross_shard_bank_conserves_money_and_replicas_agree() {
    bank(Protocol::Raft);
}

fn bank(protocol: Protocol) {
    const ACCOUNTS: u64 = 20; // per shard
    const INITIAL: i64 = 100;
    let c = Cluster::start(config_on(protocol, 2, 3)).expect("cluster");
    // Load: each shard's leader writes its accounts.
    for s in 0..2u32 {
        let mut tx = c.leader(s).begin(0).expect("configured worker");
        for a in 0..ACCOUNTS {
            tx.put(s, 0, &a.to_be_bytes(), val(INITIAL)).expect("load");
        }
        tx.commit().expect("load released");
    }
    let total = 2 * ACCOUNTS as i64 * INITIAL;
    let stop = AtomicBool::new(false);
    let (transfers, audits, aborts) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for w in 0..4u32 {
            let (c, stop) = (&c, &stop);
            let (transfers, audits, aborts) = (&transfers, &audits, &aborts);
            s.spawn(move || {
                let home = w % 2;
                let site = c.leader(home);
                let mut rng = SmallRng::seed_from_u64(u64::from(w));
                while !stop.load(Ordering::Relaxed) {
                    let mut tx = site.begin(w / 2).expect("configured worker");
                    if rng.random_ratio(1, 4) {
                        let mut sum = 0;
                        let mut ok = true;
                        'audit: for sh in 0..2u32 {
                            for a in 0..ACCOUNTS {
                                match tx.get(sh, 0, &a.to_be_bytes()) {
                                    Ok(Some(v)) => sum += num(&v),
                                    _ => {
                                        ok = false;
                                        break 'audit;
                                    }
                                }
                            }
                        }
                        if ok && tx.commit().is_ok() {
                            assert_eq!(sum, total, "a released audit saw a wrong total");
                            audits.fetch_add(1, Ordering::Relaxed);
                        } else {
                            aborts.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    let (sa, sb) = (rng.random_range(0..2u32), rng.random_range(0..2u32));
                    let (a, b) = (rng.random_range(0..ACCOUNTS), rng.random_range(0..ACCOUNTS));
                    if sa == sb && a == b {
                        continue;
                    }
                    let amount = rng.random_range(1..10);
                    let r = (|| {
                        let va = num(&tx.get(sa, 0, &a.to_be_bytes())?.unwrap_or_default());
                        let vb = num(&tx.get(sb, 0, &b.to_be_bytes())?.unwrap_or_default());
                        tx.put(sa, 0, &a.to_be_bytes(), val(va - amount))?;
                        tx.put(sb, 0, &b.to_be_bytes(), val(vb + amount))?;
                        tx.commit()
                    })();
                    match r {
                        Ok(_) => transfers.fetch_add(1, Ordering::Relaxed),
                        Err(_) => aborts.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!(
        "transfers {} audits {} aborts {}",
        transfers.load(Ordering::Relaxed),
        audits.load(Ordering::Relaxed),
        aborts.load(Ordering::Relaxed)
    );
    assert!(transfers.load(Ordering::Relaxed) > 50);
    assert!(audits.load(Ordering::Relaxed) > 5);
    let mut sum = 0;
    for s in 0..2u32 {
        for (_, v) in c.leader(s).store().tables()[0].scan(.., 1000) {
            sum += num(&v);
        }
    }
    assert_eq!(sum, total);
    assert_replicas_consistent(&c);
}

/// A cluster whose leaders outlast a short partition (no check-quorum step-down within 1 s).
fn patient(protocol: Protocol, shards: u32) -> Cluster {
    let mut cfg = config_on(protocol, shards, 3);
    cfg.election_ms = (1500, 2500);
    Cluster::start(cfg).expect("cluster")
}

#[test]
fn no_release_without_a_majority_of_every_touched_shard() {
    no_release_without_majority(Protocol::Raft);
}

fn no_release_without_majority(protocol: Protocol) {
    let c = patient(protocol, 2);
    let net = c.net().expect("in-memory network");
    let (s0, s1) = (c.leader(0), c.leader(1));
    // Cut both followers of shard 1 off.
    for r in 1..3 {
        net.disconnect(c.sites[1][r].node());
    }
    let mut tx = s0.begin(0).expect("configured worker");
    tx.put(1, 0, b"x", val(1))
        .expect("remote put reaches the leader");
    let spec = tx.commit_speculative().expect("speculative commit");
    assert!(!spec.is_released());
    assert_eq!(
        spec.wait_release(Duration::from_millis(500))
            .expect_err("no majority"),
        ReleaseError::Pending(Pending::ReleaseTimeout)
    );
    // A shard-0-only transaction that reads nothing from shard 1 is still released.
    let mut tx = s0.begin(1).expect("configured worker");
    tx.put(0, 0, b"y", val(2)).expect("local put");
    tx.commit().expect("shard-0-only transaction released");
    // Heal: the stuck one is released too.
    for r in 1..3 {
        net.connect(c.sites[1][r].node());
    }
    spec.wait_release(Duration::from_secs(10))
        .expect("released after healing");
    let _ = s1;
}

#[test]
fn a_dependent_transaction_is_not_released_before_its_dependency() {
    dependent_waits(Protocol::Raft);
}

fn dependent_waits(protocol: Protocol) {
    let c = patient(protocol, 2);
    let net = c.net().expect("in-memory network");
    for r in 1..3 {
        net.disconnect(c.sites[1][r].node());
    }
    // T1 on shard 1 writes k1; shard 1 cannot replicate it.
    let mut t1 = c.leader(1).begin(0).expect("configured worker");
    t1.put(1, 0, b"k1", val(41)).expect("put");
    let t1 = t1.commit_speculative().expect("T1 speculative");
    // T2 on shard 0 reads T1's write and writes shard 0 only.
    let mut t2 = c.leader(0).begin(0).expect("configured worker");
    assert_eq!(
        t2.get(1, 0, b"k1").expect("speculative read"),
        Some(val(41))
    );
    t2.put(0, 0, b"k2", val(42)).expect("put");
    let t2 = t2.commit_speculative().expect("T2 speculative");
    assert!(
        t2.info.vt[1] >= t1.info.vt[1],
        "T2 depends on T1 through VT[1]"
    );
    assert!(
        t2.wait_release(Duration::from_millis(500)).is_err(),
        "T2 released before T1"
    );
    for r in 1..3 {
        net.connect(c.sites[1][r].node());
    }
    t1.wait_release(Duration::from_secs(10))
        .expect("T1 released");
    t2.wait_release(Duration::from_secs(10))
        .expect("T2 released");
}

#[test]
fn small_batches_under_load_keep_the_leader_and_the_replicas_consistent() {
    // Tiny batches mean many log entries; the log's in-flight bound keeps the Raft
    // threads responsive, so no election interrupts the run and followers converge.
    let mut cfg = config(1, 3);
    cfg.site.batch.max_bytes = 512;
    cfg.election_ms = (400, 700);
    let c = Cluster::start(cfg).expect("cluster");
    let term = c.leader(0).group().term();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..2u32 {
            let (c, stop) = (&c, &stop);
            s.spawn(move || {
                let site = c.leader(0);
                let t = site.store().table("accounts").expect("table");
                let mut rng = SmallRng::seed_from_u64(u64::from(w));
                while !stop.load(Ordering::Relaxed) {
                    let mut tx = site.begin_local(w).expect("configured worker");
                    for _ in 0..4 {
                        let k = rng.random_range(0..200u64).to_be_bytes();
                        let n = tx.get(&t, &k).map_or(0, |v| num(&v));
                        tx.put(&t, &k, val(n + 1));
                    }
                    let _ = tx.commit();
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
    });
    let stats = c.leader(0).stream_stats();
    assert!(stats.batches > 1000, "small batches: {stats:?}");
    // Submitters racing past the check overshoot by at most one entry each (2 workers, 1 ticker).
    assert!(
        stats.max_in_flight <= mako_server::streams::MAX_IN_FLIGHT + 3,
        "the in-flight bound held: {stats:?}"
    );
    assert_eq!(
        c.leader(0).group().term(),
        term,
        "an election interrupted the run"
    );
    assert_replicas_consistent(&c);
}

#[test]
fn a_committed_transaction_whose_release_is_late_is_unknown_not_aborted() {
    let mut cfg = config(2, 3);
    cfg.election_ms = (1500, 2500);
    cfg.site.timeout = Duration::from_millis(400);
    let c = Cluster::start(cfg).expect("cluster");
    let net = c.net().expect("in-memory network");
    for r in 1..3 {
        net.disconnect(c.sites[1][r].node());
    }
    let mut tx = c.leader(0).begin(0).expect("configured worker");
    tx.put(0, 0, b"a", val(1)).expect("put");
    tx.put(1, 0, b"b", val(1)).expect("put");
    let spec = match tx.commit() {
        Err(CommitError::Unknown { why, spec }) => {
            assert_eq!(why, Pending::ReleaseTimeout);
            spec
        }
        other => panic!("installed but unreplicated: must be Unknown, got {other:?}"),
    };
    for r in 1..3 {
        net.connect(c.sites[1][r].node());
    }
    spec.wait_release(Duration::from_secs(10))
        .expect("released after healing: it was never aborted");
}

/// A cluster on durable (fdatasync'd) logs starts, commits and replicates.
#[test]
fn a_cluster_on_fsync_logs_starts_and_releases() {
    fsync_cluster(Protocol::Raft);
}

fn fsync_cluster(protocol: Protocol) {
    let c = Cluster::start(ClusterConfig {
        durability: mako_logstore::Durability::Fsync,
        ..config_on(protocol, 1, 3)
    })
    .expect("an fsync cluster starts");
    let site = c.leader(0);
    let mut tx = site.begin(0).expect("worker 0");
    tx.put(0, 0, b"durable", val(7)).expect("put");
    tx.commit().expect("released");
    assert_replicas_consistent(&c);
}

/// `Ending` retires a stream for good: after a leader change (a new epoch, fresh streams) the
/// retired stream still holds nothing back (it is never heartbeated again, so if it came back
/// into `W_s` nothing would be released) and takes no piece; `Advancer` reaches every replica.
#[test]
fn a_retired_stream_stays_retired_across_a_leader_change() {
    let mut cfg = config(1, 3);
    cfg.preferred_leader = false;
    let c = Cluster::start(cfg).expect("cluster");
    let leader = Arc::clone(c.leader(0));
    leader
        .retire_stream(mako_watermark::stream_id(0, 1))
        .expect("retired");
    leader.mark_loaded().expect("advancer");
    let commit = |site: &Site, worker: u32, k: i64| {
        let mut tx = site.begin(worker).expect("configured worker");
        tx.put(0, 0, &k.to_be_bytes(), val(k)).expect("put");
        tx.commit()
    };
    commit(&leader, 0, 1).expect("released with the stream retired");
    assert!(
        matches!(
            commit(&leader, 1, 2),
            Err(CommitError::Aborted(mako_txn::AbortReason::LogUnavailable))
        ),
        "a retired stream takes no piece"
    );
    c.transfer_leader(0, 1).expect("transfer");
    assert!(
        c.wait_leader(0, 1, Duration::from_secs(10)),
        "new leader serves"
    );
    let new = Arc::clone(&c.sites[0][1]);
    commit(&new, 0, 3).expect("released in the new epoch: the retired stream holds nothing");
    assert!(
        matches!(
            commit(&new, 1, 4),
            Err(CommitError::Aborted(mako_txn::AbortReason::LogUnavailable))
        ),
        "still retired under the new leader"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !c.sites[0].iter().all(|s| s.loaded()) {
        assert!(
            std::time::Instant::now() < deadline,
            "Advancer not applied everywhere"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The same end-to-end claims with every group on Multi-Paxos.
mod paxos {
    use super::*;

    #[test]
    fn cross_shard_bank_conserves_money_and_replicas_agree() {
        bank(Protocol::Paxos);
    }

    #[test]
    fn no_release_without_a_majority_of_every_touched_shard() {
        no_release_without_majority(Protocol::Paxos);
    }

    #[test]
    fn a_dependent_transaction_is_not_released_before_its_dependency() {
        dependent_waits(Protocol::Paxos);
    }

    #[test]
    fn a_cluster_on_fsync_logs_starts_and_releases() {
        fsync_cluster(Protocol::Paxos);
    }
}
