//! The seed's callback tests: leader callback advances W_s, follower callback checks safety,
//! queues, replays when VW advances, recognises NO-OPS and Ending.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use mako_commitlog::{Batch, Entry, Piece, Write};
use mako_replication::{ApplyCtx, ApplyStatus, PendingQueue, QueuedEntry, Role};
use mako_server::Site;
use mako_storage::table_id_for;
use mako_watermark::stream_id;

use common::TestGroup;

/// Shard 0 of 2, one worker per shard: streams (0,0) and (1,0).
fn site(role: Role) -> Arc<Site> {
    site_and_group(role).0
}

fn site_and_group(role: Role) -> (Arc<Site>, Arc<TestGroup>) {
    let group = TestGroup::new(role);
    let site = common::test_site(group.clone(), mako_commitlog::BatchConfig::default());
    (site, group)
}

fn batch(stream: u32, seq: u64, vt: [u64; 2], key: &str, value: &str) -> Bytes {
    Entry::Batch(Batch {
        epoch: 0,
        stream,
        seq,
        pieces: vec![Piece {
            vt: vt.to_vec(),
            writes: vec![Write::put(
                table_id_for("t"),
                key.as_bytes().to_vec(),
                value.as_bytes().to_vec(),
            )],
        }],
    })
    .encode()
}

fn apply(site: &Site, role: Role, entry: &Bytes, index: u64, q: &mut PendingQueue) -> ApplyStatus {
    let ctx = ApplyCtx {
        entry,
        index,
        shard: 0,
        queue: q,
    };
    let applied = match role {
        Role::Leader => site.leader_apply(ctx),
        Role::Follower => site.follower_apply(ctx),
    };
    if applied.status == ApplyStatus::SafetyFail {
        q.push_back(QueuedEntry {
            index,
            entry: entry.clone(),
        });
    }
    applied.status
}

const A: u32 = 0; // stream (0,0)

fn b_stream() -> u32 {
    stream_id(1, 0)
}

/// A heartbeat of epoch 0, entry `seq` of `stream`.
fn hb(stream: u32, seq: u64, w: u64) -> Bytes {
    Entry::Heartbeat {
        epoch: 0,
        stream,
        seq,
        w,
    }
    .encode()
}

#[test]
fn leader_callback_updates_the_watermark() {
    let (s, group) = site_and_group(Role::Leader);
    common::establish_by_hand(&s, &|| group.submitted.lock().clone());
    let mut q = PendingQueue::default();
    // The leader's own batch of its open epoch 1: already installed, it only moves W_0.
    let own = Entry::Batch(Batch {
        epoch: 1,
        stream: A,
        seq: 0,
        pieces: vec![Piece {
            vt: vec![5, 0],
            writes: vec![],
        }],
    })
    .encode();
    assert_eq!(
        apply(&s, Role::Leader, &own, 2, &mut q),
        ApplyStatus::Normal
    );
    assert_eq!(s.w(), 0, "stream (1,0) has not committed anything yet");
    let hb = Entry::Heartbeat {
        epoch: 1,
        stream: b_stream(),
        seq: 0,
        w: 9,
    }
    .encode();
    apply(&s, Role::Leader, &hb, 3, &mut q);
    assert_eq!(s.w(), 5);
    assert_eq!(s.epochs().vw(1).map(|v| v.get(0)), Some(5));
    // Entries of another epoch count for nothing in epoch 1.
    apply(&s, Role::Leader, &batch(A, 1, [50, 0], "k", "v"), 4, &mut q);
    assert_eq!(s.w(), 5);
}

#[test]
fn follower_callback_checks_safety_queues_and_replays_when_vw_advances() {
    let s = site(Role::Follower);
    let mut q = PendingQueue::default();
    // Own shard's streams are moved by the log itself.
    apply(&s, Role::Follower, &hb(b_stream(), 0, 100), 1, &mut q);
    // A piece that depends on shard 1 at 7: VW[1] is 0, so it must wait.
    let e = batch(A, 0, [3, 7], "k", "v1");
    assert_eq!(
        apply(&s, Role::Follower, &e, 2, &mut q),
        ApplyStatus::SafetyFail
    );
    assert_eq!(
        s.store().table("t").and_then(|t| t.get(b"k")),
        None,
        "unsafe piece replayed"
    );
    // A later safe entry does not overtake the queued one.
    let e2 = batch(A, 1, [4, 0], "k2", "v2");
    assert_eq!(
        apply(&s, Role::Follower, &e2, 3, &mut q),
        ApplyStatus::SafetyFail
    );
    assert_eq!(q.len(), 2);
    // VW[1] advances: the next entry finds the queue drainable and replays it in order.
    s.learn(1, 0, 7);
    assert_eq!(
        apply(&s, Role::Follower, &hb(A, 2, 4), 4, &mut q),
        ApplyStatus::ReplayDone
    );
    assert!(q.is_empty());
    let t = s.store().table("t").expect("table");
    assert_eq!(t.get(b"k").as_deref(), Some(&b"v1"[..]));
    assert_eq!(t.get(b"k2").as_deref(), Some(&b"v2"[..]));
    // Replay lag was recorded for the queued entries.
    assert_eq!(s.replay_lags().len(), 2);
}

#[test]
fn no_ops_are_recognised_and_close_the_epoch_in_the_log() {
    let s = site(Role::Follower);
    let mut q = PendingQueue::default();
    apply(
        &s,
        Role::Follower,
        &batch(A, 0, [4, 0], "k", "v"),
        1,
        &mut q,
    );
    assert_eq!(s.log_epoch(), 0);
    assert_eq!(
        apply(
            &s,
            Role::Follower,
            &Entry::NoOp { epoch: 0 }.encode(),
            2,
            &mut q
        ),
        ApplyStatus::NoOps
    );
    assert_eq!(s.log_epoch(), 1);
    // Epoch 0's own component is fixed at the NoOp: W over epoch-0 entries before it
    // (stream (1,0) never moved, so 0).
    assert_eq!(s.epochs().vw(0).map(|v| v.get(0)), Some(0));
    let l = site(Role::Leader);
    assert_eq!(
        apply(
            &l,
            Role::Leader,
            &Entry::NoOp { epoch: 3 }.encode(),
            1,
            &mut q
        ),
        ApplyStatus::NoOps
    );
}

#[test]
fn ending_releases_the_minimum() {
    let s = site(Role::Leader);
    let mut q = PendingQueue::default();
    apply(&s, Role::Leader, &batch(A, 0, [6, 0], "k", "v"), 1, &mut q);
    assert_eq!(s.w(), 0, "the idle stream holds W_s at 0");
    let st = apply(
        &s,
        Role::Leader,
        &Entry::Ending { stream: b_stream() }.encode(),
        2,
        &mut q,
    );
    assert_eq!(st, ApplyStatus::Ending);
    assert_eq!(
        s.w(),
        6,
        "with the idle stream ended, W_s is the other stream's"
    );
}

#[test]
fn a_leader_logs_each_worker_stream_and_heartbeats_idle_ones() {
    let (s, group) = site_and_group(Role::Leader);
    common::establish_by_hand(&s, &|| group.submitted.lock().clone());
    group.submitted.lock().clear();
    let t = s.store().table("t").expect("table");
    let decoded = || -> Vec<Entry> {
        group
            .submitted
            .lock()
            .iter()
            .map(|b| Entry::decode(b).expect("valid entry"))
            .collect()
    };
    let commit = |key: &'static [u8]| {
        let mut tx = s.begin_local(0).expect("configured worker");
        tx.put(t.as_ref(), key, Bytes::from_static(b"v"));
        tx.commit().expect("commit").vt.to_vec()
    };
    assert_eq!(commit(b"k"), [1, 0]);
    // Nothing of the stream was in flight: the batch leaves at once, without a tick, and the
    // idle stream is heartbeated up to it so that W_s covers it.
    let entries = decoded();
    assert!(
        matches!(&entries[0], Entry::Batch(b) if b.stream == A && b.epoch == 1 && b.seq == 0 && b.pieces[0].vt == [1, 0]),
        "{entries:?}"
    );
    assert_eq!(
        entries[1..],
        [Entry::Heartbeat {
            epoch: 1,
            stream: b_stream(),
            seq: 0,
            w: 1
        }],
        "the idle stream is heartbeated up to the batch"
    );
    // While that batch is in flight, later pieces gather in one batch (group commit) ...
    assert_eq!(commit(b"k2"), [2, 0]);
    assert_eq!(commit(b"k3"), [3, 0]);
    assert_eq!(
        decoded().len(),
        2,
        "the stream's batch waits for the one in flight"
    );
    // ... which leaves as soon as the one in flight commits, without a tick.
    let first = group.submitted.lock()[0].clone();
    apply(&s, Role::Leader, &first, 100, &mut PendingQueue::default());
    let entries = decoded();
    assert!(
        matches!(&entries[2], Entry::Batch(b) if b.stream == A && b.seq == 1 && b.pieces.len() == 2 && b.pieces[1].vt == [3, 0]),
        "{entries:?}"
    );
}

fn one_stream_log() -> (mako_server::streams::StreamLog, Arc<TestGroup>) {
    let group = TestGroup::new(Role::Leader);
    let log =
        mako_server::streams::StreamLog::new(0, &[A], &mako_commitlog::BatchConfig::default());
    log.set_group(group.clone());
    log.open(0, &[]);
    (log, group)
}

#[test]
fn a_later_piece_on_a_stream_waits_for_an_earlier_reservation() {
    let (log, group) = one_stream_log();
    // Two transactions on the same stream: the first reserves 1, the second 2 and logs first.
    assert_eq!(log.reserve(A, 0, || 1), Some(1));
    assert_eq!(log.reserve(A, 0, || 2), Some(2));
    log.fulfil(A, 0, &[2, 0], std::iter::empty(), || ());
    log.flush();
    log.tick(std::time::Instant::now(), 2);
    assert!(
        group.w(&[A]) < 1,
        "W_0 = {} passed the unlogged reservation 1",
        group.w(&[A])
    );
    log.fulfil(A, 0, &[1, 0], std::iter::empty(), || ());
    log.flush();
    assert_eq!(group.w(&[A]), 2, "both pieces logged, in timestamp order");
}

#[test]
fn a_cancel_ends_only_its_own_reservation_and_heartbeats_stay_below_the_rest() {
    let (log, group) = one_stream_log();
    assert_eq!(log.reserve(A, 0, || 1), Some(1));
    assert_eq!(log.reserve(A, 0, || 2), Some(2));
    log.cancel(A, 0, 1);
    log.tick(std::time::Instant::now(), 5);
    assert!(
        group.w(&[A]) < 2,
        "W_0 = {} passed the outstanding reservation 2",
        group.w(&[A])
    );
    assert_eq!(group.w(&[A]), 1, "the heartbeat went as far as it may");
    log.fulfil(A, 0, &[2, 0], std::iter::empty(), || ());
    log.flush();
    assert_eq!(group.w(&[A]), 2);
}

/// A piece whose epoch ended between its validation and its append is refused by the log
/// before it is stamped: the transaction aborts with nothing installed (before, the log
/// dropped it silently and the commit installed a version no replica would ever have).
#[test]
fn a_piece_of_an_ended_epoch_is_refused_and_nothing_is_installed() {
    let (log, group) = one_stream_log();
    log.seal();
    log.open(1, &[]);
    let store = Arc::new(mako_storage::Store::new());
    let t = store.create_table("t").expect("table");
    // The shard still stamps epoch 0: its epoch moved on under the commit.
    let shard = mako_txn::Shard::new(0, 1, Arc::clone(&store), Arc::new(log));
    let mut tx = shard.begin_on(A);
    tx.put(t.as_ref(), b"k", Bytes::from_static(b"v"));
    let err = tx.commit().expect_err("a piece of an ended epoch");
    assert_eq!(err.reason, mako_txn::AbortReason::Failover);
    assert_eq!(t.get(b"k"), None, "nothing installed");
    assert_eq!(shard.clock(), 0, "nothing stamped");
    assert!(group.submitted.lock().is_empty(), "nothing logged");
    // In its own epoch the same commit goes through.
    shard.set_epoch(1);
    let mut tx = shard.begin_on(A);
    tx.put(t.as_ref(), b"k", Bytes::from_static(b"v"));
    tx.commit().expect("committed in the open epoch");
    assert!(t.get(b"k").is_some());
}

/// `fulfil` installs a piece's versions (its `install`) before the piece can reach the log,
/// and not at all when the piece is refused.
#[test]
fn fulfil_installs_before_the_piece_is_logged_and_never_when_refused() {
    let (log, group) = one_stream_log();
    assert_eq!(log.reserve(A, 0, || 1), Some(1));
    let mut submitted_at_install = None;
    let logged = log.fulfil(A, 0, &[1, 0], std::iter::empty(), || {
        submitted_at_install = Some(group.submitted.lock().len());
    });
    log.flush();
    assert!(logged);
    assert_eq!(
        submitted_at_install,
        Some(0),
        "installed before anything was logged"
    );
    assert_eq!(group.submitted.lock().len(), 1);
    log.seal();
    let mut installed = false;
    assert!(!log.fulfil(A, 0, &[2, 0], std::iter::empty(), || installed = true));
    assert!(!installed, "a refused piece is not installed");
}

/// A stream with a piece reserved is not retired (its transaction could be released without
/// that piece once `Ending` lifts the stream out of `W_s`); once the piece is gone it is.
#[test]
fn a_stream_with_a_reserved_piece_is_not_retired() {
    let (log, group) = one_stream_log();
    assert_eq!(log.reserve(A, 0, || 1), Some(1));
    assert_eq!(log.end(A), Err(mako_server::ServeError::InUse(A)));
    log.cancel(A, 0, 1);
    assert_eq!(log.end(A), Ok(()));
    assert!(
        group
            .submitted
            .lock()
            .iter()
            .any(|b| Entry::decode(b) == Ok(Entry::Ending { stream: A }))
    );
    assert_eq!(log.reserve(A, 0, || 2), None, "retired: takes nothing");
}
