//! Regressions for the review of the issue-9 commit path (lost log submissions, unconfigured
//! workers, stale duplicates, malformed peer messages, coordinator panics, unbounded state).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_commitlog::{BatchConfig, Entry, WriteRef};
use mako_replication::{
    ApplyCtx, DropReason, NodeId, PendingQueue, Resolution, Role, SubmitError, Unapplied,
};
use mako_server::msg::{Msg, Op, Refusal, Reply};
use mako_server::streams::StreamLog;
use mako_server::{
    BeginError, Cluster, ClusterConfig, CommitError, Fate, Pending, ReleaseError, Site,
};
use mako_txn::AbortReason;
use mako_watermark::stream_id;

mod common;

fn config(shards: u32, replicas: u32) -> ClusterConfig {
    common::config(shards, replicas, Duration::from_secs(2))
}

fn val(n: i64) -> Bytes {
    Bytes::copy_from_slice(&n.to_le_bytes())
}

fn node(c: &ClusterConfig, shard: u32) -> NodeId {
    Cluster::node_id(c.replicas, shard, 0)
}

/// Waits (bounded) until `f` holds; false if it never did.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// Commits on `site` as `worker` one write of `key` on `shard`; whether it was released.
fn released_write(site: &Site, worker: u32, shard: u32, key: &[u8]) -> Result<(), String> {
    let mut tx = site.begin(worker).map_err(|e| e.to_string())?;
    tx.put(shard, 0, key, val(1)).map_err(|e| e.to_string())?;
    tx.commit().map(|_| ()).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// A replication group stand-in with scripted submission answers.

use common::TestGroup as Scripted;

const A: u32 = 0; // stream (0,0)

fn scripted_log(
    script: impl IntoIterator<Item = SubmitError>,
    batch: BatchConfig,
) -> (StreamLog, Arc<Scripted>) {
    let group = Scripted::scripted(Role::Leader, script);
    let log = StreamLog::new(0, &[A], &batch);
    log.set_group(group.clone());
    log.open(0, &[]);
    (log, group)
}

fn write<'a>(key: &'a [u8], value: &'a [u8]) -> WriteRef<'a> {
    WriteRef {
        table: 1,
        key,
        value: Some(value),
    }
}

// ---------------------------------------------------------------------------------------------
// Defect 1: a submission the group did not take must never be covered by W_s.

#[test]
fn a_busy_group_delays_a_batch_in_order_and_never_loses_it() {
    // Three Busy answers: to the submission at once (nothing was in flight), to the flush,
    // and to the first tick.
    let (log, group) = scripted_log(
        [SubmitError::Busy, SubmitError::Busy, SubmitError::Busy],
        BatchConfig::default(),
    );
    log.fulfil(A, 0, &[1, 0], [write(b"k", b"v")], || ());
    log.flush();
    assert!(group.entries().is_empty(), "Busy: not submitted yet");
    let now = Instant::now();
    log.tick(now, 5);
    assert!(
        group.entries().is_empty(),
        "still Busy, and no heartbeat overtakes it"
    );
    log.tick(now, 5);
    log.tick(now, 5);
    let entries = group.entries();
    assert!(
        matches!(&entries[0], Entry::Batch(b) if b.pieces[0].vt == [1, 0]),
        "the batch was retried and went first: {entries:?}"
    );
    assert_eq!(
        entries[1..],
        [Entry::Heartbeat {
            epoch: 0,
            stream: A,
            seq: 1,
            w: 5
        }]
    );
    assert_eq!(log.stats().busy, 3);
    assert!(!log.is_frozen(A));
}

#[test]
fn a_refused_submission_freezes_its_stream_below_the_lost_piece() {
    for refusal in [
        SubmitError::NotLeader { hint: None },
        SubmitError::Stopped,
        SubmitError::Failed,
    ] {
        let (log, group) = scripted_log([refusal], BatchConfig::default());
        log.fulfil(A, 0, &[2, 0], [write(b"k", b"v")], || ());
        log.flush();
        // The batch holding ts 2 was refused: nothing may take W_0 to 2 or beyond.
        log.tick(Instant::now(), 9);
        log.fulfil(A, 0, &[10, 0], [write(b"k", b"w")], || ());
        log.flush();
        log.tick(Instant::now(), 20);
        assert_eq!(group.w(&[A]), 0, "{refusal:?}: {:?}", group.entries());
        assert!(
            group.entries().is_empty(),
            "{refusal:?}: nothing after the refusal"
        );
        assert!(log.is_frozen(A));
        assert_eq!(log.check(A, 2, []), Err(AbortReason::LogUnavailable));
        assert_eq!(
            log.reserve(A, 0, || 30),
            None,
            "a frozen stream takes no reservation"
        );
    }
}

#[test]
fn batches_close_before_the_entry_limit() {
    let batch = BatchConfig {
        batch_size: 1000,
        max_bytes: 1 << 20,
        linger: Duration::from_secs(3600),
        group_commit: true,
    };
    let (log, group) = scripted_log([], batch);
    let log = log.with_max_entry_bytes(64 << 10);
    log.set_group(group.clone());
    let value = vec![7u8; 20 << 10];
    for ts in 1..=10u64 {
        assert_eq!(log.check(A, 2, [write(b"k", &value)]), Ok(()));
        log.fulfil(A, 0, &[ts, 0], [write(b"k", &value)], || ());
    }
    log.flush();
    let sizes: Vec<usize> = group.submitted.lock().iter().map(Bytes::len).collect();
    assert!(
        sizes.iter().all(|&n| n <= 64 << 10),
        "entry sizes {sizes:?}"
    );
    let stamps: Vec<u64> = group
        .entries()
        .iter()
        .flat_map(|e| match e {
            Entry::Batch(b) => b.pieces.iter().map(|p| p.vt[0]).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(
        stamps,
        (1..=10).collect::<Vec<_>>(),
        "every piece, in order"
    );
    let big = vec![7u8; 64 << 10];
    assert_eq!(
        log.check(A, 2, [write(b"k", &big)]),
        Err(AbortReason::TooLarge)
    );
}

#[test]
fn piece_len_is_the_encoded_size_of_a_piece() {
    use mako_commitlog::{Batch, Piece, Write};
    let batch = |pieces: Vec<Piece>| {
        Entry::Batch(Batch {
            epoch: 3,
            stream: A,
            seq: 0,
            pieces,
        })
        .encode()
        .len()
    };
    let writes = vec![
        Write::put(1, b"key".to_vec(), vec![9u8; 300]),
        Write::delete(2, b"gone".to_vec()),
    ];
    let refs: Vec<WriteRef<'_>> = writes.iter().map(Write::as_write_ref).collect();
    let piece = Piece {
        vt: vec![4, 5, 6],
        writes: writes.clone(),
    };
    assert_eq!(
        mako_server::streams::piece_len(3, refs),
        batch(vec![piece]) - batch(Vec::new())
    );
}

/// Shard 0 of 2, one worker each, on a scripted group; linger 0 so a tick submits.
fn scripted_site() -> (Arc<Site>, Arc<Scripted>) {
    let group = Scripted::new(Role::Leader);
    let batch = BatchConfig {
        linger: Duration::ZERO,
        ..BatchConfig::default()
    };
    (common::test_site(group.clone(), batch), group)
}

fn leader_apply(site: &Site, entry: &Bytes, index: u64) {
    let mut q = PendingQueue::default();
    site.leader_apply(ApplyCtx {
        entry,
        index,
        shard: 0,
        queue: &mut q,
    });
}

#[test]
fn an_accepted_batch_the_group_drops_freezes_its_stream() {
    let (site, group) = scripted_site();
    common::establish_by_hand(&site, &|| group.submitted.lock().clone());
    group.submitted.lock().clear();
    let t = site.store().table("t").expect("table");
    let mut tx = site.begin_local(0).expect("worker 0");
    tx.put(t.as_ref(), b"k", Bytes::from_static(b"v"));
    assert_eq!(tx.commit().expect("commit").vt.to_vec(), [1, 0]);
    site.on_tick();
    let batch = group.submitted.lock()[0].clone();
    assert!(matches!(Entry::decode(&batch), Ok(Entry::Batch(_))));
    // Raft drops it (e.g. a proposal refused during a leader transfer).
    let mut cb = group.unapplied.lock().take().expect("callback registered");
    cb(Unapplied {
        entry: batch,
        resolution: Resolution::Dropped(DropReason::Refused),
    });
    // Later entries of that stream (submitted before the drop was known) commit anyway: the
    // gap in the stream's numbering holds W_0 below the dropped piece on every replica.
    let hb_a = Entry::Heartbeat {
        epoch: 1,
        stream: A,
        seq: 1,
        w: 5,
    }
    .encode();
    let hb_b = Entry::Heartbeat {
        epoch: 1,
        stream: stream_id(1, 0),
        seq: 0,
        w: 5,
    }
    .encode();
    leader_apply(&site, &hb_b, 2);
    leader_apply(&site, &hb_a, 3);
    assert_eq!(site.w(), 0, "W_0 passed the dropped piece");
    let before = group.submitted.lock().len();
    site.shard().observe(10);
    site.on_tick();
    let streams: Vec<u32> = group.submitted.lock()[before..]
        .iter()
        .filter_map(|b| match Entry::decode(b) {
            Ok(Entry::Heartbeat { stream, .. }) => Some(stream),
            Ok(Entry::Batch(b)) => Some(b.stream),
            _ => None,
        })
        .collect();
    assert!(
        !streams.contains(&A),
        "the frozen stream submitted {streams:?}"
    );
    let mut tx = site.begin_local(0).expect("worker 0");
    tx.put(t.as_ref(), b"k2", Bytes::from_static(b"v"));
    let err = tx.commit().expect_err("a frozen stream takes no piece");
    assert_eq!(err.reason, AbortReason::LogUnavailable);
    assert_eq!(site.stream_stats().frozen, 1);
    // The leader needs a new epoch of its own (its streams start afresh there).
    assert_eq!(
        site.open_epoch(),
        None,
        "establishing again after a lost entry"
    );
}

#[test]
fn a_piece_larger_than_a_log_entry_aborts_and_is_never_visible() {
    let c = Cluster::start(config(1, 3)).expect("cluster");
    let big = Bytes::from(vec![7u8; 17 << 20]);
    let mut tx = c.leader(0).begin(0).expect("worker");
    tx.put(0, 0, b"big", big).expect("put");
    let r = tx.commit();
    assert!(
        matches!(r, Err(CommitError::Aborted(AbortReason::TooLarge))),
        "{r:?}"
    );
    released_write(c.leader(0), 1, 0, b"other").expect("later commit released");
    c.compare_replicas(Duration::from_secs(10))
        .expect("replicas agree");
    for s in &c.sites[0] {
        assert!(s.store().tables()[0].get(b"big").is_none());
    }
    assert_eq!(c.leader(0).stream_stats().refused, 0);
}

#[test]
fn pieces_above_the_configured_entry_limit_abort_on_every_shard() {
    let mut cfg = config(2, 1);
    cfg.site.max_entry_bytes = 64 << 10;
    let c = Cluster::start(cfg).expect("cluster");
    let big = Bytes::from(vec![7u8; 100 << 10]);
    for (shard, key) in [(0u32, &b"local"[..]), (1, b"remote")] {
        let mut tx = c.leader(0).begin(0).expect("worker");
        tx.put(0, 0, b"small", val(1)).expect("put");
        tx.put(1, 0, b"small", val(1)).expect("put");
        tx.put(shard, 0, key, big.clone()).expect("put");
        let r = tx.commit();
        assert!(
            matches!(r, Err(CommitError::Aborted(AbortReason::TooLarge))),
            "shard {shard}: {r:?}"
        );
        for s in 0..2 {
            assert!(c.leader(s).store().tables()[0].get(b"small").is_none());
        }
    }
    released_write(c.leader(0), 0, 1, b"after").expect("released");
}

// ---------------------------------------------------------------------------------------------
// Defect 2: an unconfigured worker never commits unlogged.

#[test]
fn an_unconfigured_worker_cannot_begin_or_commit() {
    let c = Cluster::start(config(1, 3)).expect("cluster");
    let site = c.leader(0);
    let no = BeginError::NoSuchWorker {
        worker: 7,
        workers: 2,
    };
    assert_eq!(site.begin(7).err(), Some(no));
    assert_eq!(site.begin_local(7).err(), Some(no));
    // The shard's own transactions on an unconfigured stream abort at commit.
    let t = site.store().table("t").expect("table");
    let mut tx = site.shard().begin_on(stream_id(0, 7));
    tx.put(t.as_ref(), b"k", val(1));
    let err = tx.commit().expect_err("unlogged");
    assert_eq!(err.reason, AbortReason::LogUnavailable);
    assert!(t.get(b"k").is_none());
    released_write(site, 1, 0, b"k2").expect("the log still runs");
}

#[test]
fn a_request_on_an_unconfigured_stream_is_refused() {
    let mut cfg = config(2, 1);
    cfg.site.timeout = Duration::from_millis(300);
    let n1 = node(&cfg, 1);
    let (faults, _hook) = common::hook(
        |_, _, _| false,
        move |_, to, m| match m {
            Msg::Request {
                req,
                epoch,
                txn,
                op,
                ..
            } if to == n1 => Fate::Replace(Msg::Request {
                req: *req,
                epoch: *epoch,
                txn: *txn,
                stream: stream_id(0, 7),
                op: op.clone(),
            }),
            _ => Fate::Deliver,
        },
    );
    cfg.control_faults = Some(faults);
    let c = Cluster::start(cfg).expect("cluster");
    let mut tx = c.leader(0).begin(0).expect("worker");
    tx.put(0, 0, b"a", val(1)).expect("put");
    tx.put(1, 0, b"b", val(1)).expect("put");
    let r = tx.commit();
    assert!(
        matches!(r, Err(CommitError::Aborted(AbortReason::Timeout))),
        "{r:?}"
    );
    assert!(c.leader(1).store().tables()[0].get(b"b").is_none());
    assert!(c.leader(1).malformed_messages() >= 1);
}

// ---------------------------------------------------------------------------------------------
// Defect 3: decisions match the prepared incarnation; stale duplicates cannot restart.

#[test]
fn a_stale_duplicate_after_eviction_cannot_restart_a_finished_transaction() {
    let mut cfg = config(3, 1);
    cfg.site.timeout = Duration::from_millis(400);
    cfg.site.finished_cap = 4;
    let (n0, n1, n2) = (node(&cfg, 0), node(&cfg, 1), node(&cfg, 2));
    const REQ: u64 = 1 << 50;
    let (faults, hook) = common::hook(
        move |_, to, m| match m {
            Msg::Request {
                op: Op::Lock { .. } | Op::Validate { .. },
                ..
            } => to == n1,
            Msg::Reply { req, .. } => *req >= REQ,
            _ => false,
        },
        // Shard 2 never hears decisions: the coordinator keeps its records.
        move |_, to, m| match m {
            Msg::Decision { .. } if to == n2 => Fate::Drop,
            _ => Fate::Deliver,
        },
    );
    cfg.control_faults = Some(faults);
    let c = Cluster::start(cfg).expect("cluster");
    let table = c.leader(1).store().tables()[0].clone();

    // T writes k=OLD on shard 1 and z on shard 2 (shard 1 gets Lock, then Validate).
    let mut tx = c.leader(0).begin(0).expect("worker");
    tx.put(1, 0, b"k", Bytes::from_static(b"OLD")).expect("put");
    tx.put(2, 0, b"z", Bytes::from_static(b"z")).expect("put");
    let r = tx.commit();
    assert!(matches!(r, Err(CommitError::Unknown { .. })), "{r:?}");
    let stale: Vec<Msg> = hook.seen.try_iter().map(|(_, _, m)| m).collect();
    assert_eq!(stale.len(), 2, "{stale:?}");
    assert_eq!(table.get(b"k").as_deref(), Some(&b"OLD"[..]));

    // A later transaction overwrites k.
    let mut t2 = c.leader(1).begin(1).expect("worker");
    t2.put(1, 0, b"k", Bytes::from_static(b"NEW")).expect("put");
    t2.commit().expect("NEW released");

    // More transactions of the same coordinator finish on shard 1 and evict T's record.
    for i in 0..6u8 {
        released_write(c.leader(0), 1, 1, &[b'e', i]).expect("released");
    }

    // The stale Lock and Validate of T arrive again, from T's coordinator.
    let _ = hook.seen.try_iter().count();
    for (i, m) in stale.into_iter().enumerate() {
        let Msg::Request {
            epoch,
            txn,
            stream,
            op,
            ..
        } = m
        else {
            unreachable!("watched requests only");
        };
        let req = REQ + i as u64;
        hook.inject(
            n0,
            n1,
            Msg::Request {
                req,
                epoch,
                txn,
                stream,
                op,
            },
        );
        let reply = loop {
            let (_, _, m) = hook
                .seen
                .recv_timeout(Duration::from_secs(10))
                .expect("the participant answers");
            if matches!(m, Msg::Reply { .. }) {
                break m;
            }
        };
        assert!(
            matches!(reply, Msg::Reply { req: r, reply: Reply::Refused(Refusal::Unknown), .. } if r == req),
            "stale request {i} was not refused: {reply:?}"
        );
    }
    assert_eq!(table.get(b"k").as_deref(), Some(&b"NEW"[..]));
    released_write(c.leader(0), 0, 1, b"q").expect("stream (0,0) on shard 1 still releases");
    assert_eq!(c.leader(1).participant_pieces(), 0);
}

/// A two-shard commit whose Decision to shard 1 is rewritten by `rewrite(vt)` while armed.
fn rewritten_decision(
    rewrite: fn(&mut Vec<u64>),
) -> (Cluster, Arc<AtomicBool>, Result<(), CommitError>) {
    let mut cfg = config(2, 1);
    cfg.site.timeout = Duration::from_millis(300);
    let n1 = node(&cfg, 1);
    let armed = Arc::new(AtomicBool::new(true));
    let a = Arc::clone(&armed);
    let (faults, _hook) = common::hook(
        |_, _, _| false,
        move |_, to, m| match m {
            Msg::Decision {
                txn,
                epoch,
                commit: Some(vt),
            } if to == n1 && a.load(Ordering::SeqCst) => {
                let mut vt = vt.clone();
                rewrite(&mut vt);
                Fate::Replace(Msg::Decision {
                    txn: *txn,
                    epoch: *epoch,
                    commit: Some(vt),
                })
            }
            _ => Fate::Deliver,
        },
    );
    cfg.control_faults = Some(faults);
    let c = Cluster::start(cfg).expect("cluster");
    let mut tx = c.leader(0).begin(0).expect("worker");
    tx.put(0, 0, b"a", val(1)).expect("put");
    tx.put(1, 0, b"b", val(1)).expect("put");
    let r = tx.commit().map(|_| ());
    (c, armed, r)
}

#[test]
fn a_commit_decision_for_an_older_incarnation_ends_the_piece_and_gives_back_its_timestamp() {
    let (c, armed, r) = rewritten_decision(|vt| vt[1] -= 1);
    assert!(
        matches!(
            r,
            Err(CommitError::Unknown {
                why: Pending::Refused(Refusal::Mismatch),
                ..
            })
        ),
        "{r:?}"
    );
    assert!(c.leader(1).store().tables()[0].get(b"b").is_none());
    // The reservation was given back: stream (0,0) on shard 1 still releases.
    armed.store(false, Ordering::SeqCst);
    released_write(c.leader(0), 0, 1, b"later").expect("released");
}

#[test]
fn a_commit_decision_above_the_reserved_timestamp_is_ignored_until_the_real_one() {
    let (c, armed, r) = rewritten_decision(|vt| vt[1] += 1000);
    let Err(CommitError::Unknown { spec, .. }) = r else {
        panic!("pending while the decision is mangled: {r:?}");
    };
    assert!(c.leader(1).malformed_messages() >= 1);
    armed.store(false, Ordering::SeqCst);
    spec.wait_release(Duration::from_secs(10))
        .expect("released once the real decision is resent");
    assert_eq!(
        c.leader(1).store().tables()[0].get(b"b").as_deref(),
        Some(&val(1)[..])
    );
    released_write(c.leader(0), 0, 1, b"later").expect("released");
}

#[test]
fn transaction_numbers_do_not_restart_with_the_node() {
    let first_txn = || {
        let mut cfg = config(2, 1);
        let (faults, hook) = common::hook(
            |_, _, m| matches!(m, Msg::Request { .. }),
            |_, _, _| Fate::Deliver,
        );
        cfg.control_faults = Some(faults);
        let c = Cluster::start(cfg).expect("cluster");
        let mut tx = c.leader(0).begin(0).expect("worker");
        tx.get(1, 0, b"x").expect("remote read");
        drop(tx);
        match hook.seen.recv_timeout(Duration::from_secs(5)) {
            Ok((_, _, Msg::Request { txn, .. })) => txn,
            other => panic!("no request seen: {other:?}"),
        }
    };
    let a = first_txn();
    let b = first_txn();
    assert_eq!(a.0, b.0, "same coordinator node");
    assert!(
        b.1 > a.1,
        "restarted node reused transaction number {a:?} -> {b:?}"
    );
}

#[test]
fn refused_decision_records_are_bounded() {
    let mut cfg = config(2, 1);
    cfg.site.timeout = Duration::from_millis(200);
    cfg.site.max_decisions = 4;
    let (faults, _hook) = common::hook(
        |_, _, _| false,
        |_, _, m| match m {
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
        },
    );
    cfg.control_faults = Some(faults);
    let c = Cluster::start(cfg).expect("cluster");
    let mut pending = Vec::new();
    for i in 0..10u8 {
        let mut tx = c.leader(0).begin(0).expect("worker");
        tx.put(1, 0, &[b'r', i], val(1)).expect("put");
        match tx.commit() {
            Err(CommitError::Unknown { spec, .. }) => pending.push(spec),
            other => panic!("a refused commit must stay pending: {other:?}"),
        }
    }
    assert!(
        c.leader(0).decision_records() <= 4,
        "records: {}",
        c.leader(0).decision_records()
    );
    // Forgotten records leave their transactions pending, never released.
    assert!(pending.iter().all(|s| !s.is_released()));
}

// ---------------------------------------------------------------------------------------------
// Defect 4: malformed peer messages are refused; the control thread keeps serving.

#[test]
fn a_decision_with_a_short_vt_is_refused_and_the_participant_keeps_serving() {
    let (c, armed, r) = rewritten_decision(|vt| vt.clear());
    let Err(CommitError::Unknown { spec, .. }) = r else {
        panic!("pending while the decision is mangled: {r:?}");
    };
    assert!(c.leader(1).malformed_messages() >= 1);
    armed.store(false, Ordering::SeqCst);
    spec.wait_release(Duration::from_secs(10))
        .expect("released once the real decision is resent");
    let mut tx = c.leader(0).begin(1).expect("worker");
    assert_eq!(tx.get(1, 0, b"zzz").expect("shard 1 still answers"), None);
    drop(tx);
    released_write(c.leader(1), 1, 1, b"b").expect("b is not locked");
}

#[test]
fn a_prepared_reply_with_a_short_dependency_vector_aborts() {
    let mut cfg = config(2, 1);
    cfg.site.timeout = Duration::from_millis(300);
    let (faults, _hook) = common::hook(
        |_, _, _| false,
        |_, _, m| match m {
            Msg::Reply {
                req,
                reply: Reply::Prepared { ts, .. },
                shard,
                epoch,
                w,
            } => Fate::Replace(Msg::Reply {
                req: *req,
                reply: Reply::Prepared {
                    deps: vec![],
                    ts: *ts,
                },
                shard: *shard,
                epoch: *epoch,
                w: *w,
            }),
            _ => Fate::Deliver,
        },
    );
    cfg.control_faults = Some(faults);
    let c = Cluster::start(cfg).expect("cluster");
    let mut tx = c.leader(0).begin(0).expect("worker");
    tx.put(0, 0, b"a", val(1)).expect("put");
    tx.put(1, 0, b"b", val(1)).expect("put");
    assert!(matches!(tx.commit(), Err(CommitError::Aborted(_))));
    assert!(c.leader(0).malformed_messages() >= 1);
    assert!(eventually(|| c.leader(1).participant_pieces() == 0));
    released_write(c.leader(0), 0, 0, b"a").expect("local stream free");
    released_write(c.leader(1), 0, 1, b"b").expect("b not locked");
}

// ---------------------------------------------------------------------------------------------
// Defect 5: nothing leaks between the local reservation and the decision.

#[test]
fn a_participant_timestamp_not_above_its_dependency_aborts_cleanly() {
    let mut cfg = config(2, 1);
    cfg.site.timeout = Duration::from_millis(300);
    let armed = Arc::new(AtomicBool::new(true));
    let a = Arc::clone(&armed);
    let (faults, _hook) = common::hook(
        |_, _, _| false,
        move |_, _, m| match m {
            Msg::Reply {
                req,
                reply: Reply::Prepared { ts: Some(_), .. },
                shard,
                epoch,
                w,
            } if a.swap(false, Ordering::SeqCst) => Fate::Replace(Msg::Reply {
                req: *req,
                reply: Reply::Prepared {
                    deps: vec![0, 1_000_000],
                    ts: Some(5),
                },
                shard: *shard,
                epoch: *epoch,
                w: *w,
            }),
            _ => Fate::Deliver,
        },
    );
    cfg.control_faults = Some(faults);
    let c = Cluster::start(cfg).expect("cluster");
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut tx = c.leader(0).begin(0).expect("worker");
        tx.put(0, 0, b"a", val(1)).expect("put");
        tx.put(1, 0, b"b", val(1)).expect("put");
        tx.commit().map(|_| ())
    }));
    let r = res.expect("no panic on a wrong participant answer");
    assert!(
        matches!(r, Err(CommitError::Aborted(AbortReason::Conflict))),
        "{r:?}"
    );
    assert!(!armed.load(Ordering::SeqCst), "the fault fired");
    // The local reservation was given back and the participant told to abort.
    released_write(c.leader(0), 0, 0, b"c").expect("stream (0,0) on shard 0 releases");
    released_write(c.leader(1), 1, 1, b"b").expect("b unlocked on shard 1");
    assert!(eventually(|| c.leader(0).decision_records() == 0));
}

// ---------------------------------------------------------------------------------------------
// Defect 6: bounded participant and coordinator state.

#[test]
fn an_orphaned_read_phase_piece_expires() {
    let mut cfg = config(2, 1);
    cfg.site.timeout = Duration::from_millis(200);
    cfg.site.read_phase_timeout = Duration::from_millis(300);
    let n1 = node(&cfg, 1);
    // The coordinator's Abort (sent when the transaction is dropped) is lost.
    let (faults, _hook) = common::hook(
        |_, _, _| false,
        move |_, to, m| match m {
            Msg::Decision { commit: None, .. } if to == n1 => Fate::Drop,
            _ => Fate::Deliver,
        },
    );
    cfg.control_faults = Some(faults);
    let c = Cluster::start(cfg).expect("cluster");
    let mut tx = c.leader(0).begin(0).expect("worker");
    tx.get(1, 0, b"x").expect("remote read");
    assert!(eventually(|| c.leader(1).participant_pieces() == 1));
    drop(tx);
    assert!(
        eventually(|| c.leader(1).participant_pieces() == 0),
        "the orphaned piece was never forgotten"
    );
}

#[test]
fn a_silent_participant_is_resent_a_bounded_number_of_times_and_stays_pending() {
    let mut cfg = config(2, 1);
    cfg.site.timeout = Duration::from_millis(200);
    cfg.site.max_resends = 3;
    let n1 = node(&cfg, 1);
    let sent = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&sent);
    let (faults, _hook) = common::hook(
        |_, _, _| false,
        move |_, to, m| match m {
            Msg::Decision {
                commit: Some(_), ..
            } if to == n1 => {
                s.fetch_add(1, Ordering::SeqCst);
                Fate::Drop
            }
            // No inquiry reaches the coordinator either.
            Msg::Inquire { .. } => Fate::Drop,
            _ => Fate::Deliver,
        },
    );
    cfg.control_faults = Some(faults);
    let c = Cluster::start(cfg).expect("cluster");
    let mut tx = c.leader(0).begin(0).expect("worker");
    tx.put(0, 0, b"a", val(1)).expect("put");
    tx.put(1, 0, b"b", val(1)).expect("put");
    let Err(CommitError::Unknown { spec, .. }) = tx.commit() else {
        panic!("unacknowledged: pending");
    };
    assert!(eventually(|| c.leader(0).decisions_given_up() == 1));
    assert_eq!(sent.load(Ordering::SeqCst), 4, "one send and three resends");
    assert!(!spec.is_released());
    assert_eq!(
        spec.wait_release(Duration::from_millis(10)),
        Err(ReleaseError::Pending(Pending::Unacknowledged))
    );
}

#[test]
fn an_acknowledgement_after_a_refusal_completes_the_transaction() {
    let mut cfg = config(2, 1);
    cfg.site.timeout = Duration::from_millis(300);
    let (n0, n1) = (node(&cfg, 0), node(&cfg, 1));
    let refused_once = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&refused_once);
    let (faults, _hook) = common::hook(
        |_, _, _| false,
        move |_, to, m| match m {
            // The decision arrives twice; the first acknowledgement arrives as a refusal.
            Msg::Decision {
                commit: Some(_), ..
            } if to == n1 => Fate::Duplicate,
            Msg::Ack {
                txn,
                refused: None,
                shard,
                epoch,
                w,
            } if to == n0 && !r.swap(true, Ordering::SeqCst) => Fate::Replace(Msg::Ack {
                txn: *txn,
                refused: Some(Refusal::NotLeader(None)),
                shard: *shard,
                epoch: *epoch,
                w: *w,
            }),
            _ => Fate::Deliver,
        },
    );
    cfg.control_faults = Some(faults);
    let c = Cluster::start(cfg).expect("cluster");
    let mut tx = c.leader(0).begin(0).expect("worker");
    tx.put(0, 0, b"a", val(1)).expect("put");
    tx.put(1, 0, b"b", val(1)).expect("put");
    let r = tx.commit();
    assert!(refused_once.load(Ordering::SeqCst));
    match r {
        Ok(_) => {}
        Err(CommitError::Unknown { spec, .. }) => assert!(
            eventually(|| spec.is_released()),
            "the later acknowledgement was ignored"
        ),
        Err(e) => panic!("{e}"),
    }
    assert!(eventually(|| c.leader(0).decision_records() == 0));
}
