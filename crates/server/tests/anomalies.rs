//! Anomalies that serializable cross-shard commit must exclude, on in-process clusters.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use bytes::Bytes;
use mako_server::msg::{Msg, Op, Refusal, Reply};
use mako_server::{Cluster, ClusterConfig, CommitError, ControlFaults, Fate, Pending};
use parking_lot::Mutex;

mod common;

fn config(shards: u32, replicas: u32) -> ClusterConfig {
    common::config(shards, replicas, Duration::from_secs(5))
}

const ON: &[u8] = b"on";
const OFF: &[u8] = b"off";

/// Write skew across shards: A reads x (shard 1) and turns y (shard 0) off if x is on;
/// B reads y (shard 0) and turns x (shard 1) off if y is on. Serializable executions keep
/// at least one of them on.
#[test]
fn cross_shard_write_skew_is_never_committed() {
    write_skew(2);
}

/// The same with a third shard coordinating both (two remote participants: lock round, then validation round).
#[test]
fn cross_shard_write_skew_is_never_committed_with_two_remote_participants() {
    write_skew(3);
}

fn write_skew(shards: u32) {
    let c = Cluster::start(config(shards, 1)).expect("cluster");
    let (x, y) = ((1u32, b"x"), (0u32, b"y"));
    let barrier = Barrier::new(2);
    let mut broken = 0;
    let mut both_committed = 0;
    for trial in 0..200u32 {
        // Reset: both on.
        // The losers' pieces may still hold their locks on a participant (their abort
        // decisions travel after the coordinator returned), so a conflict is retried.
        until_not_conflict("reset", || {
            let mut tx = c.leader(0).begin(0).expect("configured worker");
            tx.put(x.0, 0, x.1, Bytes::from_static(ON)).expect("put x");
            tx.put(y.0, 0, y.1, Bytes::from_static(ON)).expect("put y");
            tx.commit().map(|_| ())
        });
        // Each is coordinated on the shard it reads (its remote participant only writes),
        // on the shard it writes (its remote participant only reads), or on shard 2 if any.
        let home_of = move |read: u32, write: u32| match trial % shards {
            0 => read,
            1 => write,
            _ => 2,
        };
        let results = std::thread::scope(|s| {
            let run = |read: (u32, &'static [u8]), write: (u32, &'static [u8])| {
                let (c, barrier) = (&c, &barrier);
                let home = home_of(read.0, write.0);
                s.spawn(move || -> Result<(), String> {
                    let mut tx = c.leader(home).begin(1).expect("configured worker");
                    barrier.wait();
                    let seen = tx.get(read.0, 0, read.1).map_err(|e| e.to_string())?;
                    if seen.as_deref() == Some(ON) {
                        tx.put(write.0, 0, write.1, Bytes::from_static(OFF))
                            .map_err(|e| e.to_string())?;
                    }
                    tx.commit().map(|_| ()).map_err(|e| e.to_string())
                })
            };
            let a = run((x.0, &x.1[..]), (y.0, &y.1[..]));
            let b = run((y.0, &y.1[..]), (x.0, &x.1[..]));
            (a.join().expect("A"), b.join().expect("B"))
        });
        if results.0.is_ok() && results.1.is_ok() {
            both_committed += 1;
        }
        let (vx, vy) = until_not_conflict("check", || {
            let mut check = c.leader(0).begin(0).expect("configured worker");
            let vx = check.get(x.0, 0, x.1).expect("read x");
            let vy = check.get(y.0, 0, y.1).expect("read y");
            check.commit().map(|_| (vx, vy))
        });
        if vx.as_deref() == Some(OFF) && vy.as_deref() == Some(OFF) {
            broken += 1;
        }
    }
    eprintln!("write skew: {broken} of 200 broke the invariant; both committed {both_committed}");
    assert_eq!(broken, 0, "write skew committed {broken} times out of 200");
}

/// Runs `f` until it ends other than in a lock conflict (at most 100 tries); panics on any other error.
fn until_not_conflict<T>(what: &str, mut f: impl FnMut() -> Result<T, CommitError>) -> T {
    for _ in 0..100 {
        match f() {
            Ok(v) => return v,
            Err(CommitError::Aborted(mako_txn::AbortReason::Conflict)) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{what}: {e:?}"),
        }
    }
    panic!("{what}: still conflicting after 100 tries");
}

fn val(n: i64) -> Bytes {
    Bytes::copy_from_slice(&n.to_le_bytes())
}

fn num(b: &[u8]) -> i64 {
    i64::from_le_bytes(b.try_into().expect("8-byte balance"))
}

/// A transport that may duplicate messages must not turn a commit into a partial one:
/// every control message is delivered twice, and transfers between shards still conserve money.
#[test]
fn duplicated_control_messages_do_not_break_cross_shard_commits() {
    let mut cfg = config(2, 1);
    cfg.control_faults = Some(ControlFaults(Arc::new(|_, _, _| Fate::Duplicate)));
    let c = Cluster::start(cfg).expect("cluster");
    for s in 0..2u32 {
        let mut tx = c.leader(s).begin(0).expect("configured worker");
        for a in 0..4u64 {
            tx.put(s, 0, &a.to_be_bytes(), val(100)).expect("load");
        }
        tx.commit().expect("load released");
    }
    let mut committed = 0;
    for i in 0..50u64 {
        let (a, b) = (i % 4, (i + 1) % 4);
        let mut tx = c.leader(0).begin(0).expect("configured worker");
        let va = num(&tx.get(0, 0, &a.to_be_bytes()).expect("get").expect("a"));
        let vb = num(&tx.get(1, 0, &b.to_be_bytes()).expect("get").expect("b"));
        tx.put(0, 0, &a.to_be_bytes(), val(va - 1)).expect("put");
        tx.put(1, 0, &b.to_be_bytes(), val(vb + 1)).expect("put");
        if tx.commit().is_ok() {
            committed += 1;
        }
    }
    let mut sum = 0;
    for s in 0..2u32 {
        for (_, v) in c.leader(s).store().tables()[0].scan(.., 100) {
            sum += num(&v);
        }
    }
    assert_eq!(sum, 800, "money created or destroyed by a partial commit");
    assert!(committed > 40, "only {committed} of 50 transfers committed");
}

/// A participant that refuses the Commit (here: `NotLeader`) leaves the outcome pending:
/// `commit()` reports it neither released nor aborted.
#[test]
fn a_commit_refused_by_a_participant_is_never_reported_released() {
    let mut cfg = config(2, 1);
    cfg.control_faults = Some(ControlFaults(Arc::new(|_, _, m| match m {
        Msg::Ack {
            txn,
            refused: None,
            shard,
            epoch,
            w,
        } => Fate::Replace(Msg::Ack {
            txn: *txn,
            refused: Some(Refusal::NotLeader(None)),
            shard: *shard,
            epoch: *epoch,
            w: *w,
        }),
        _ => Fate::Deliver,
    })));
    cfg.site.timeout = Duration::from_millis(300);
    let c = Cluster::start(cfg).expect("cluster");
    let mut tx = c.leader(0).begin(0).expect("configured worker");
    tx.put(0, 0, b"a", val(1)).expect("put");
    tx.put(1, 0, b"b", val(1)).expect("put");
    match tx.commit() {
        Err(CommitError::Unknown { why, spec }) => {
            assert_eq!(why, Pending::Refused(Refusal::NotLeader(None)));
            assert!(!spec.is_released());
            assert!(spec.wait_release(Duration::from_millis(50)).is_err());
        }
        other => panic!("a refused commit must stay pending: {other:?}"),
    }
}

/// The coordinator resends its decision until acknowledged: a lost Commit delays the
/// release, it does not lose the participant's piece.
#[test]
fn a_lost_commit_is_resent_until_acknowledged() {
    let dropped = Arc::new(Mutex::new(0u32));
    let d = Arc::clone(&dropped);
    let mut cfg = config(2, 1);
    cfg.control_faults = Some(ControlFaults(Arc::new(move |_, _, m| match m {
        Msg::Decision {
            commit: Some(_), ..
        } if *d.lock() < 3 => {
            *d.lock() += 1;
            Fate::Drop
        }
        _ => Fate::Deliver,
    })));
    cfg.site.timeout = Duration::from_millis(200);
    let c = Cluster::start(cfg).expect("cluster");
    let mut tx = c.leader(0).begin(0).expect("configured worker");
    tx.put(0, 0, b"a", val(1)).expect("put");
    tx.put(1, 0, b"b", val(2)).expect("put");
    let spec = match tx.commit() {
        Ok(info) => {
            assert!(info.wrote);
            None
        }
        Err(CommitError::Unknown { spec, .. }) => Some(spec),
        Err(e) => panic!("aborted after a commit decision: {e}"),
    };
    if let Some(spec) = spec {
        spec.wait_release(Duration::from_secs(10))
            .expect("released once the resent Commit is acknowledged");
    }
    assert_eq!(*dropped.lock(), 3);
    let mut check = c.leader(1).begin(0).expect("configured worker");
    assert_eq!(check.get(1, 0, b"b").expect("get"), Some(val(2)));
}

/// A participant holding locks for a coordinator that never decides asks it; a coordinator
/// with no record of the transaction answers Abort, and the locks go.
#[test]
fn a_waiting_participant_asks_and_a_coordinator_without_record_aborts() {
    let mut cfg = config(2, 1);
    cfg.site.timeout = Duration::from_millis(200);
    const REQ: u64 = 1 << 50;
    let (faults, hook) = common::hook(
        |_, _, m| matches!(m, Msg::Reply { req: REQ, .. }),
        |_, _, _| Fate::Deliver,
    );
    cfg.control_faults = Some(faults);
    let c = Cluster::start(cfg).expect("cluster");
    // Shard 0's leader "sends" a Lock for a transaction it never started.
    let (n0, n1) = (c.leader(0).node(), c.leader(1).node());
    let txn = (n0, 1 << 40);
    let lock = Msg::Request {
        req: REQ,
        epoch: c.leader(1).open_epoch().expect("shard 1 serves an epoch"),
        txn,
        stream: mako_watermark::stream_id(0, 0),
        op: Op::Lock {
            writes: vec![(
                mako_storage::table_id_for("t"),
                b"k".to_vec(),
                Some(b"v".to_vec()),
            )],
        },
    };
    hook.inject(n0, n1, lock);
    let (_, _, reply) = hook
        .seen
        .recv_timeout(Duration::from_secs(5))
        .expect("reply to the Lock");
    assert!(matches!(
        reply,
        Msg::Reply {
            reply: Reply::Locked,
            ..
        }
    ));
    // The key is locked: a writer conflicts until the participant learns the decision.
    let writable = || {
        let mut tx = c.leader(1).begin(1).expect("configured worker");
        tx.put(1, 0, b"k", val(7)).is_ok() && tx.commit().is_ok()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !writable() {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphaned lock was never released"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
