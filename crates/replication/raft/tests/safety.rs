//! One test per replication-safety defect: each fails on the code that had the defect.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, ELECTION_MS, HEARTBEAT_MS, wait};
use mako_logstore::{Durability, GroupWrite, LogEntry, LogModel, LogStoreConfig, SnapshotMeta};
use mako_raft::durable::{self, FileSnapshots, SnapshotStep, SnapshotStore};
use mako_raft::{InitialState, OutMsg, PersistJob, RaftConfig, RaftNode};
use mako_replication::{
    Applied, ApplyDispatcher, ApplyStatus, DropReason, NodeId, Resolution, Role, Unapplied,
};
use parking_lot::Mutex;

/// Three bare nodes whose messages and persist jobs the test moves by hand.
struct Manual {
    nodes: Vec<RaftNode>,
    held: Vec<Vec<PersistJob>>,
    wire: Vec<(NodeId, OutMsg)>,
}

impl Manual {
    fn new() -> Self {
        let nodes = (1..=3)
            .map(|id| {
                let cfg = RaftConfig::new(id, vec![1, 2, 3], 0);
                RaftNode::new(
                    cfg,
                    InitialState::default(),
                    Arc::new(ApplyDispatcher::discarding(0)),
                    None,
                )
                .unwrap()
            })
            .collect();
        Manual {
            nodes,
            held: vec![Vec::new(), Vec::new(), Vec::new()],
            wire: Vec::new(),
        }
    }

    /// Polls node `i`; persist jobs are held (not durable) when `hold`, else completed at once.
    fn poll(&mut self, i: usize, hold: bool) {
        loop {
            let out = self.nodes[i].poll();
            if out.is_empty() {
                return;
            }
            if let Some(c) = out.capture {
                let (index, term, data) = c.run_now();
                self.nodes[i].snapshot_captured(index, term, data);
            }
            let from = i as NodeId + 1;
            self.wire
                .extend(out.messages.into_iter().map(|m| (from, m)));
            if let Some(mut job) = out.persist {
                if hold || !self.held[i].is_empty() {
                    self.held[i].push(job);
                } else {
                    let after = std::mem::take(&mut job.after);
                    self.wire.extend(after.into_iter().map(|m| (from, m)));
                    let w = self.nodes[i].on_persisted(job.number);
                    self.wire.extend(w.into_iter().map(|m| (from, m)));
                }
            }
        }
    }

    /// Delivers every message in flight (dropping those to or from `cut`), polling receivers.
    fn pump(&mut self, cut: Option<usize>, hold: &[bool]) {
        for _ in 0..20 {
            for (i, &h) in hold.iter().enumerate() {
                self.poll(i, h);
            }
            let msgs = std::mem::take(&mut self.wire);
            if msgs.is_empty() {
                return;
            }
            for (from, m) in msgs {
                let to = m.to as usize - 1;
                if cut == Some(to) || cut == Some(from as usize - 1) {
                    continue;
                }
                let _ = self.nodes[to].step(from, &m.payload);
            }
        }
    }
}

#[test]
fn a_leader_never_counts_itself_before_its_own_write_is_durable() {
    let mut m = Manual::new();
    m.nodes[0].campaign().unwrap();
    m.pump(None, &[false; 3]);
    assert!(m.nodes[0].is_leader());
    let before = m.nodes[0].commit_index();
    // The leader's write of the new entry stays at the disk; node 3 is cut off; node 2 acks.
    m.nodes[0].propose(Bytes::from_static(b"x")).unwrap();
    let index = m.nodes[0].last_index();
    m.pump(Some(2), &[true, false, false]);
    // Ticks make Readies with nothing to write (heartbeats): they must not acknowledge
    // the leader's outstanding job.
    for _ in 0..5 {
        m.nodes[0].tick();
        m.pump(Some(2), &[true, false, false]);
    }
    assert!(
        m.nodes[1].last_index() >= index,
        "the follower has the entry"
    );
    assert_eq!(
        m.nodes[0].commit_index(),
        before,
        "committed with one durable copy: the leader counted its unsynced write"
    );
    // Once the leader's job is durable, the entry commits.
    let jobs = std::mem::take(&mut m.held[0]);
    for mut job in jobs {
        let after = std::mem::take(&mut job.after);
        m.wire.extend(after.into_iter().map(|x| (1, x)));
        let w = m.nodes[0].on_persisted(job.number);
        m.wire.extend(w.into_iter().map(|x| (1, x)));
    }
    m.pump(Some(2), &[false; 3]);
    assert!(m.nodes[0].commit_index() >= index);
}

#[test]
fn persist_completions_out_of_order_are_refused() {
    let mut m = Manual::new();
    m.nodes[0].campaign().unwrap();
    m.pump(None, &[false; 3]);
    let before = m.nodes[0].commit_index();
    m.nodes[0].propose(Bytes::from_static(b"a")).unwrap();
    m.poll(0, true);
    m.nodes[0].propose(Bytes::from_static(b"b")).unwrap();
    m.poll(0, true);
    assert!(m.held[0].len() >= 2);
    // Reporting the later job while the earlier one is still at the disk does nothing.
    let last = m.held[0].last().unwrap().number;
    assert!(m.nodes[0].on_persisted(last).is_empty());
    assert_eq!(m.nodes[0].unpersisted_jobs(), m.held[0].len());
    m.pump(Some(2), &[true, false, false]);
    assert_eq!(m.nodes[0].commit_index(), before);
}

#[test]
fn oversized_entries_are_refused_at_propose() {
    let mut cfg = RaftConfig::new(1, vec![1], 0);
    cfg.max_entry_bytes = 1000;
    let mut n = RaftNode::new(
        cfg,
        InitialState::default(),
        Arc::new(ApplyDispatcher::discarding(0)),
        None,
    )
    .unwrap();
    n.campaign().unwrap();
    loop {
        let out = n.poll();
        if out.is_empty() {
            break;
        }
        if let Some(j) = out.persist {
            n.on_persisted(j.number);
        }
    }
    assert!(matches!(
        n.propose(Bytes::from(vec![0u8; 1001])),
        Err(mako_raft::ProposeError::TooLarge(1001))
    ));
    assert!(n.propose(Bytes::from(vec![0u8; 1000])).is_ok());
}

#[test]
fn a_host_bounds_entries_by_what_its_log_store_can_hold() {
    let dir = tempfile::tempdir().unwrap();
    let host = common::solo_host(
        LogStoreConfig {
            segment_bytes: 256 << 10,
            durability: Durability::Fsync,
            ..LogStoreConfig::new(dir.path().join("log"))
        },
        Some(dir.path().join("snap")),
    );
    let mut cfg = RaftConfig::new(1, vec![1], 0);
    cfg.heartbeat_interval_ms = 5;
    cfg.election_timeout_min_ms = 20;
    cfg.election_timeout_max_ms = 40;
    let g = host.start_group::<mako_raft::RaftNode>(cfg).unwrap();
    use mako_replication::Replicator;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while g.role() != Role::Leader && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(g.role(), Role::Leader);
    // Larger than a segment: refused with a typed error, never written and acknowledged.
    let big = Bytes::from(vec![7u8; 300 << 10]);
    assert!(matches!(
        g.submit(big),
        Err(mako_replication::SubmitError::TooLarge(_))
    ));
    assert!(g.submit(Bytes::from_static(b"small")).is_ok());
    // A burst whose Ready exceeds one segment is written in several log writes, not refused.
    let applied = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let a = Arc::clone(&applied);
    g.on_apply(
        Role::Leader,
        Box::new(move |ctx| {
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Applied::normal(ctx.index)
        }),
    );
    let mut sent = 0u64;
    while sent < 200 {
        match g.submit(Bytes::from(vec![1u8; 100 << 10])) {
            Ok(()) => sent += 1,
            Err(mako_replication::SubmitError::Busy) => std::thread::yield_now(),
            Err(e) => panic!("submit: {e}"),
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (applied.load(std::sync::atomic::Ordering::SeqCst) < 201 || g.outstanding() > 0)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(g.health(), mako_replication::GroupHealth::Running);
    assert_eq!(
        applied.load(std::sync::atomic::Ordering::SeqCst),
        201,
        "small + 200"
    );
    assert_eq!(g.outstanding(), 0);
    host.shutdown();
}

#[test]
fn a_durable_log_without_a_snapshot_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = common::solo_host(
        LogStoreConfig {
            durability: Durability::Buffered,
            ..LogStoreConfig::new(dir.path())
        },
        None,
    );
    let err = host
        .start_group::<mako_raft::RaftNode>(RaftConfig::new(1, vec![1], 0))
        .unwrap_err();
    assert!(matches!(err, mako_raft::StartError::NoSnapshotDir), "{err}");
}

#[test]
fn a_node_without_a_snapshot_handler_never_compacts() {
    let mut cfg = RaftConfig::new(1, vec![1], 0);
    cfg.compact_after_entries = 5;
    cfg.compact_log_percent = 0; // the test application's snapshot is its whole history
    let mut n = RaftNode::new(
        cfg,
        InitialState::default(),
        Arc::new(ApplyDispatcher::discarding(0)),
        None,
    )
    .unwrap();
    n.campaign().unwrap();
    let drive = |n: &mut RaftNode| loop {
        let out = n.poll();
        if out.is_empty() {
            break;
        }
        if let Some(j) = out.persist {
            assert!(j.compact_to.is_none(), "compacted with no snapshot source");
            n.on_persisted(j.number);
        }
    };
    drive(&mut n);
    for k in 0..50u8 {
        n.propose(Bytes::from(vec![k])).unwrap();
        drive(&mut n);
    }
    assert_eq!(n.first_index(), 1);
    assert_eq!(n.stats().compactions, 0);
}

/// Restart after compaction keeps every acknowledged entry: recovery goes through the
/// snapshot the log names, never "clear the log and start over".
#[test]
fn restart_after_compaction_keeps_what_the_quorum_counted() {
    let mut c = Cluster::with_config(3, 77, |cfg| cfg.compact_after_entries = 8);
    let mut acked = Vec::new();
    for k in 0..40u32 {
        c.one(&k.to_le_bytes(), 3, true);
        acked.push(k.to_le_bytes().to_vec());
    }
    let l = c.check_one_leader();
    // Every replica compacted; restart all of them.
    for i in 0..3 {
        assert!(
            c.node(i).unwrap().first_index() > 1,
            "replica {i} compacted"
        );
    }
    for i in 0..3 {
        c.crash(i);
    }
    for i in 0..3 {
        c.start(i);
        let n = c.node(i).unwrap();
        assert!(
            n.commit_index() > 1 && n.last_index() > 1,
            "replica {i} kept its log"
        );
    }
    // Start a replica alone: it must still hold the whole history (snapshot + log).
    let _ = l;
    c.one(b"after", 3, true);
    for i in 0..3 {
        let h = c.histories[i].lock();
        for a in &acked {
            assert!(
                h.iter().any(|(_, b)| b[..] == a[..]),
                "replica {i} lost an entry"
            );
        }
    }
}

/// A replica caught up by snapshot can campaign (raft-rs's applied index was advanced).
#[test]
fn a_replica_caught_up_by_snapshot_can_campaign() {
    let mut c = Cluster::with_config(3, 5, |cfg| cfg.compact_after_entries = 5);
    c.one(b"first", 3, true);
    let l = c.check_one_leader();
    let f = (l + 1) % 3;
    c.crash(f);
    for k in 0..30u8 {
        c.one(&[b'k', k], 2, true);
    }
    c.start(f);
    let target = c.node(l).unwrap().commit_index();
    assert!(c.run_until(10_000, |c| {
        c.node(f).is_some_and(|n| n.applied_index() >= target)
    }));
    assert!(c.node(f).unwrap().stats().snapshots_installed >= 1);
    c.run_ms(HEARTBEAT_MS * 3);
    c.node_mut(f).unwrap().campaign().unwrap();
    c.run_ms(ELECTION_MS * 2);
    c.one(b"after", 3, true);
}

/// Each crash point of writing a snapshot recovers the old state or the new one.
#[test]
fn snapshot_install_survives_a_crash_at_every_step() {
    let snap = |index: u64, data: &[u8]| mako_group::Snapshot {
        index,
        term: 1,
        data: Bytes::copy_from_slice(data),
    };
    let entries = |lo: u64, hi: u64| {
        (lo..=hi)
            .map(|i| LogEntry::new(i, 1, vec![i as u8]))
            .collect::<Vec<_>>()
    };
    for crash in [
        Some(SnapshotStep::TempWritten),
        Some(SnapshotStep::Renamed),
        Some(SnapshotStep::DirSynced),
        None,
    ] {
        for log_record_durable in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let files = FileSnapshots::new(dir.path()).unwrap();
            // Old state: snapshot 10 named by the log, entries 11..=15.
            let mut model = LogModel::default();
            let old = PersistJob {
                number: 1,
                entries: entries(11, 15),
                snapshot: Some(snap(10, b"old")),
                snapshot_installed: true,
                ..Default::default()
            };
            files.save(0, old.snapshot.as_ref().unwrap()).unwrap();
            model.apply(&[durable::group_write(0, &old)]);
            // New snapshot 20 from the leader: file, then log record, as the worker does.
            let new = PersistJob {
                number: 2,
                snapshot: Some(snap(20, b"new")),
                snapshot_installed: true,
                ..Default::default()
            };
            if let Some(step) = crash {
                files.crash_after(step);
            }
            let saved = files.save(0, new.snapshot.as_ref().unwrap());
            assert_eq!(saved.is_ok(), crash.is_none());
            if saved.is_ok() && log_record_durable {
                model.apply(&[durable::group_write(0, &new)]);
            }
            // Recover as a restarted replica.
            let files = FileSnapshots::new(dir.path()).unwrap();
            let init = durable::recover_group(0, model.group(0), &files)
                .unwrap_or_else(|e| panic!("crash {crash:?}/{log_record_durable}: {e}"));
            let s = init.snapshot.expect("a snapshot");
            if saved.is_ok() && log_record_durable {
                assert_eq!(s.index, 20);
                assert_eq!(&s.data[..], b"new");
                assert!(init.entries.is_empty());
            } else {
                assert_eq!(s.index, 10);
                assert_eq!(&s.data[..], b"old");
                assert_eq!(init.entries.len(), 5);
            }
        }
    }
    // The log naming a snapshot whose file is gone refuses to start (never an empty rejoin).
    let dir = tempfile::tempdir().unwrap();
    let files = FileSnapshots::new(dir.path()).unwrap();
    let mut model = LogModel::default();
    model.apply(&[GroupWrite {
        snapshot: Some(SnapshotMeta { index: 5, term: 1 }),
        entries: vec![LogEntry::new(6, 1, Bytes::new())],
        ..GroupWrite::new(0)
    }]);
    assert!(durable::recover_group(0, model.group(0), &files).is_err());
}

/// An entry submitted on a leader that loses its leadership ends in exactly one of:
/// applied, or reported unapplied (here: overwritten by the new leader's entry).
#[test]
fn a_deposed_leaders_uncommitted_entry_is_reported_overwritten() {
    let mut c = Cluster::new(3, 11);
    c.one(b"base", 3, true);
    let l = c.check_one_leader();
    let reports: Arc<Mutex<Vec<Unapplied>>> = Arc::default();
    let r = Arc::clone(&reports);
    c.node(l)
        .unwrap()
        .dispatcher()
        .set_unapplied_callback(Box::new(move |u| r.lock().push(u)));
    c.disconnect(l);
    let (idx, _) = c.start_cmd(l, b"lost").expect("still believes it leads");
    let others: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    c.check_one_leader_among(&others);
    for k in 0..3u8 {
        c.one(&[b'n', k], 2, true);
    }
    c.connect(l);
    assert!(c.run_until(5000, |c| {
        c.node(l).is_some_and(|n| n.applied_index() >= idx)
    }));
    // (`one` may also have proposed on the cut-off leader: those are overwritten too.)
    let got = reports.lock().clone();
    assert!(got.iter().any(|u| &u.entry[..] == b"lost"), "{got:?}");
    assert!(
        got.iter()
            .all(|u| u.resolution == Resolution::Dropped(DropReason::Overwritten)),
        "{got:?}"
    );
    assert_eq!(c.node(l).unwrap().outstanding(), 0);
}

/// A full pending queue pauses applying; entries resume from the log once it drains.
#[test]
fn a_full_pending_queue_pauses_apply_without_dropping_entries() {
    let mut cfg = RaftConfig::new(1, vec![1], 0);
    cfg.max_pending_queue = 4;
    let d = Arc::new(ApplyDispatcher::discarding(0));
    let safe = Arc::new(Mutex::new(false));
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (s2, seen2) = (Arc::clone(&safe), Arc::clone(&seen));
    // Applied as a "follower" callback whatever the role, to exercise the queue.
    for role in [Role::Leader, Role::Follower] {
        let (s2, seen2) = (Arc::clone(&s2), Arc::clone(&seen2));
        d.set_callback(
            role,
            Box::new(move |ctx| {
                if *s2.lock() {
                    seen2.lock().push(ctx.index);
                    Applied::normal(ctx.index)
                } else {
                    Applied {
                        status: ApplyStatus::SafetyFail,
                        ts: ctx.index,
                    }
                }
            }),
        );
    }
    let _ = (s2, seen2);
    let mut n = RaftNode::new(cfg, InitialState::default(), Arc::clone(&d), None).unwrap();
    n.campaign().unwrap();
    let drive = |n: &mut RaftNode| loop {
        let out = n.poll();
        if out.is_empty() {
            break;
        }
        if let Some(j) = out.persist {
            n.on_persisted(j.number);
        }
    };
    drive(&mut n);
    for k in 0..20u8 {
        n.propose(Bytes::from(vec![k + 1])).unwrap();
        drive(&mut n);
    }
    assert_eq!(d.queued(), 4, "the queue stops at its bound");
    let paused_at = n.applied_index();
    assert!(paused_at < n.commit_index(), "applying paused");
    *safe.lock() = true;
    d.retry_pending();
    n.tick_apply();
    drive(&mut n);
    assert_eq!(n.applied_index(), n.commit_index());
    let got = seen.lock().clone();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(got, sorted, "in log order, once each");
    assert_eq!(got.len(), 20);
}

/// The preferred replica takes over even when the election timeout in ticks is 10
/// (check-quorum's reset of `recent_active` used to alias with a 10-tick check).
#[test]
fn preferred_leader_hand_off_with_ten_tick_election_timeout() {
    let mut c = Cluster::with_config(3, 3, |cfg| {
        cfg.election_timeout_min_ms = 10 * HEARTBEAT_MS;
        cfg.election_timeout_max_ms = 11 * HEARTBEAT_MS;
        cfg.preferred = Some(3);
    });
    c.crash(2);
    let others = [0, 1];
    c.check_one_leader_among(&others);
    c.one(b"x", 2, true);
    c.start(2);
    assert!(
        c.run_until(30 * ELECTION_MS, |c| c
            .node(2)
            .is_some_and(|n| n.is_leader())),
        "the preferred replica never took over"
    );
}

/// A single-replica host with a memory log, and its group once it leads.
fn solo_leader() -> (mako_raft::RaftHost, Arc<mako_raft::RaftWorker>) {
    let dir = tempfile::tempdir().unwrap();
    let host = common::solo_host(
        LogStoreConfig {
            durability: Durability::Memory,
            ..LogStoreConfig::new(dir.path())
        },
        None,
    );
    let mut cfg = RaftConfig::new(1, vec![1], 0);
    cfg.election_timeout_min_ms = 20;
    cfg.election_timeout_max_ms = 40;
    let g = host.start_group::<mako_raft::RaftNode>(cfg).unwrap();
    use mako_replication::Replicator;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while g.role() != Role::Leader && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(g.role(), Role::Leader);
    (host, g)
}

/// A panic inside the group (here: in an apply callback) stops that group visibly: its
/// health says why, it no longer claims to lead, submissions fail, shutdown still joins.
#[test]
fn a_panic_in_the_group_stops_it_visibly() {
    use mako_replication::{GroupHealth, Replicator, SubmitError};
    let (host, g) = solo_leader();
    g.on_apply(
        Role::Leader,
        Box::new(|ctx| {
            if &ctx.entry[..] == b"boom" {
                panic!("callback exploded");
            }
            Applied::normal(ctx.index)
        }),
    );
    g.submit(Bytes::from_static(b"fine")).unwrap();
    g.submit(Bytes::from_static(b"boom")).unwrap();
    assert!(wait(|| g.health() != GroupHealth::Running));
    match g.health() {
        GroupHealth::Failed(why) => assert!(why.contains("callback exploded"), "{why}"),
        h => panic!("unexpected health {h:?}"),
    }
    assert_eq!(g.role(), Role::Follower);
    assert_eq!(g.submit(Bytes::from_static(b"x")), Err(SubmitError::Failed));
    host.shutdown();
}

/// `outstanding()` counts submissions still queued for the worker, not only proposed ones;
/// and every submission is resolved exactly once.
#[test]
fn outstanding_counts_queued_submissions() {
    use mako_replication::Replicator;
    let (host, g) = solo_leader();
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
    let applied = Arc::new(Mutex::new(0u64));
    let a = Arc::clone(&applied);
    g.on_apply(
        Role::Leader,
        Box::new(move |ctx| {
            // The first entry holds the worker thread until the test opens the gate.
            if &ctx.entry[..] == b"hold" {
                let _ = gate_rx.recv();
            }
            *a.lock() += 1;
            Applied::normal(ctx.index)
        }),
    );
    g.submit(Bytes::from_static(b"hold")).unwrap();
    assert!(wait(|| g.applied_index() >= 1 || g.outstanding() == 1));
    // The worker may be blocked in the callback now: these wait in its command queue.
    for k in 0..10u8 {
        g.submit(Bytes::from(vec![k])).unwrap();
    }
    assert!(g.outstanding() >= 10, "outstanding {}", g.outstanding());
    gate_tx.send(()).unwrap();
    assert!(wait(|| g.outstanding() == 0));
    assert_eq!(*applied.lock(), 11);
    host.shutdown();
}
