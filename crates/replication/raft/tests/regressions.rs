//! Regressions found by review of the replication-safety fixes, one test each.
mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, ELECTION_MS, wait};
use mako_replication::{Applied, Role, Unapplied};
use parking_lot::Mutex;

/// A deposed leader whose log is truncated below its proposals, then leads again and proposes
/// at the same indexes: the old proposals must still be reported exactly once.
#[test]
fn proposals_at_a_reused_index_are_each_reported() {
    let mut c = Cluster::new(3, 11);
    c.one(b"base", 3, true);
    let a = c.check_one_leader();
    let reports: Arc<Mutex<Vec<Unapplied>>> = Arc::default();
    let r = Arc::clone(&reports);
    c.node(a)
        .unwrap()
        .dispatcher()
        .set_unapplied_callback(Box::new(move |u| r.lock().push(u)));
    c.disconnect(a);
    let mut idx = Vec::new();
    for k in 0..5u8 {
        idx.push(c.start_cmd(a, &[b'x', k]).expect("a still leads").0);
    }
    let others: Vec<usize> = (0..3).filter(|&i| i != a).collect();
    let b = c.check_one_leader_among(&others);
    c.one(b"n0", 2, true);
    let b_last = c.node(b).unwrap().last_index();
    eprintln!("a proposals at {idx:?}; b last {b_last}");
    c.connect(a);
    assert!(c.run_until(5000, |c| !c.node(a).unwrap().is_leader()
        && c.node(a).unwrap().last_index() == c.node(b).unwrap().last_index()
        && c.node(a).unwrap().commit_index() == c.node(b).unwrap().last_index()));
    eprintln!(
        "a last after truncation {}",
        c.node(a).unwrap().last_index()
    );
    c.node_mut(b)
        .unwrap()
        .transfer_leader(a as u64 + 1)
        .unwrap();
    assert!(
        c.run_until(5000, |c| c.node(a).unwrap().is_leader()),
        "a leads again"
    );
    let proposed_before = c.node(a).unwrap().stats().proposed;
    for k in 0..4u8 {
        c.start_cmd(a, &[b'y', k]).expect("a leads");
    }
    c.run_ms(3 * ELECTION_MS);
    let n = c.node(a).unwrap();
    let st = n.stats();
    eprintln!(
        "stats {st:?} outstanding {} applied {}",
        n.outstanding(),
        n.applied_index()
    );
    let got = reports.lock().clone();
    eprintln!("reports {got:?}");
    let xs = got.iter().filter(|u| u.entry[0] == b'x').count();
    assert_eq!(st.proposed - proposed_before, 4);
    assert_eq!(
        xs, 5,
        "every x proposal must be reported; proposed {} resolved {}",
        st.proposed, st.resolved
    );
}

struct Rec {
    state: Arc<Mutex<Vec<Bytes>>>,
    restores: Arc<Mutex<Vec<u64>>>,
}
impl mako_replication::SnapshotHandler for Rec {
    fn snapshot(&mut self, _pending: &[mako_replication::QueuedEntry]) -> Bytes {
        let mut out = Vec::new();
        for b in self.state.lock().iter() {
            out.push(b.len() as u8);
            out.extend_from_slice(b);
        }
        out.into()
    }
    fn restore(
        &mut self,
        data: &Bytes,
        index: u64,
    ) -> Result<Vec<mako_replication::QueuedEntry>, mako_replication::SnapshotRefused> {
        self.restores.lock().push(index);
        let mut v = Vec::new();
        let mut d = &data[..];
        while !d.is_empty() {
            let n = d[0] as usize;
            v.push(Bytes::copy_from_slice(&d[1..1 + n]));
            d = &d[1 + n..];
        }
        *self.state.lock() = v;
        Ok(Vec::new())
    }
}

fn solo_durable(
    dir: &std::path::Path,
    handler_at_start: bool,
    state: Arc<Mutex<Vec<Bytes>>>,
    restores: Arc<Mutex<Vec<u64>>>,
) -> Result<(mako_raft::RaftHost, Arc<mako_raft::RaftWorker>), mako_raft::StartError> {
    use mako_logstore::{Durability, LogStoreConfig};
    use mako_replication::Replicator;
    let host = common::solo_host(
        LogStoreConfig {
            durability: Durability::Fsync,
            segment_bytes: 1 << 20,
            ..LogStoreConfig::new(dir.join("log"))
        },
        Some(dir.join("snap")),
    );
    let mut cfg = mako_raft::RaftConfig::new(1, vec![1], 0);
    cfg.election_timeout_min_ms = 20;
    cfg.election_timeout_max_ms = 40;
    cfg.compact_after_entries = 5;
    cfg.compact_log_percent = 0; // the test application's snapshot is its whole history
    let h = Box::new(Rec {
        state: state.clone(),
        restores: restores.clone(),
    });
    let g = if handler_at_start {
        host.start_group_with::<mako_raft::RaftNode>(cfg, Some(h))?
    } else {
        host.start_group::<mako_raft::RaftNode>(cfg)?
    };
    let s = state.clone();
    for role in [Role::Leader, Role::Follower] {
        let s = s.clone();
        g.on_apply(
            role,
            Box::new(move |ctx| {
                s.lock().push(ctx.entry.clone());
                Applied::normal(ctx.index)
            }),
        );
    }
    Ok((host, g))
}

/// Restart of a compacted group without a snapshot handler is refused: starting would
/// lose the application's prefix (and a later compaction would spread the empty state).
#[test]
fn restarting_a_compacted_group_without_a_handler_is_refused() {
    use mako_replication::Replicator;
    let dir = tempfile::tempdir().unwrap();
    {
        let state: Arc<Mutex<Vec<Bytes>>> = Arc::default();
        let (host, g) =
            solo_durable(dir.path(), true, state.clone(), Arc::default()).expect("first start");
        assert!(wait(|| g.role() == Role::Leader));
        for k in 0..30u8 {
            while g.submit(Bytes::from(vec![b'e', k])).is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert!(wait(|| state.lock().len() == 30));
        assert!(wait(|| std::fs::read_dir(dir.path().join("snap"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)));
        host.shutdown();
    }
    let err = solo_durable(dir.path(), false, Arc::default(), Arc::default()).expect_err("refused");
    assert!(
        matches!(
            &err,
            mako_raft::StartError::Core(e) if matches!(
                e.downcast_ref::<mako_raft::NodeError>(),
                Some(mako_raft::NodeError::NoSnapshotHandler(_))
            )
        ),
        "{err}"
    );
    // With its handler the replica restores the snapshot and re-applies the rest.
    let state: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let restores: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (host, g) =
        solo_durable(dir.path(), true, state.clone(), restores.clone()).expect("restart");
    assert!(wait(|| g.role() == Role::Leader));
    assert!(wait(|| state.lock().len() == 30), "{}", state.lock().len());
    assert_eq!(restores.lock().len(), 1);
    host.shutdown();
}

/// Tiny chunks claiming a huge message are refused: a claimed count is bounded by the
/// length and the minimum chunk size, and bookkeeping is charged with the data.
#[test]
fn tiny_chunks_are_refused_and_charged() {
    use bytes::{BufMut, BytesMut};
    let mut r = mako_raft::wire::Reassembler::default();
    let chunk = |i: u32, count: u32, len: u64, data: &[u8]| {
        let mut b = BytesMut::with_capacity(25 + data.len());
        b.put_u8(1);
        b.put_u64_le(42);
        b.put_u32_le(i);
        b.put_u32_le(count);
        b.put_u64_le(len);
        b.put_slice(data);
        b.freeze()
    };
    for i in 0..100_000u32 {
        assert!(r.push(2, &chunk(i, 1 << 30, 1 << 30, &[7])).is_err());
    }
    assert_eq!(r.buffered_bytes(), 0);
    // A plausible count but 1-byte chunks: refused too.
    for i in 0..1000u32 {
        assert!(r.push(2, &chunk(i, 1 << 21, 1 << 30, &[7])).is_err());
    }
    assert_eq!(r.buffered_bytes(), 0);
    // Proper chunks are accepted and charged more than their data.
    assert!(
        r.push(2, &chunk(0, 4, 4096, &[1u8; 1024]))
            .unwrap()
            .is_none()
    );
    assert!(r.buffered_bytes() > 1024);
}

/// A role-change listener that re-registers an apply callback (Mako's re-wiring on leader
/// change) must not deadlock the group.
#[test]
fn a_role_change_listener_may_rewire_apply_callbacks() {
    use mako_logstore::{Durability, LogStoreConfig};
    use mako_replication::Replicator;
    let dir = tempfile::tempdir().unwrap();
    let host = common::solo_host(
        LogStoreConfig {
            durability: Durability::Memory,
            ..LogStoreConfig::new(dir.path())
        },
        None,
    );
    let mut cfg = mako_raft::RaftConfig::new(1, vec![1], 0);
    cfg.election_timeout_min_ms = 200;
    cfg.election_timeout_max_ms = 300;
    let g = host.start_group::<mako_raft::RaftNode>(cfg).unwrap();
    let slot: Arc<std::sync::OnceLock<std::sync::Weak<mako_raft::RaftWorker>>> = Arc::default();
    slot.set(Arc::downgrade(&g)).unwrap();
    let s = slot.clone();
    g.on_role_change(Box::new(move |rc| {
        if let Some(w) = s.get().and_then(|w| w.upgrade()) {
            w.on_apply(rc.role, Box::new(|ctx| Applied::normal(ctx.index)));
        }
    }));
    let ok = wait(|| g.role() == Role::Leader);
    if !ok {
        std::mem::forget(g);
        std::mem::forget(host);
    }
    assert!(
        ok,
        "group never reported leadership: worker deadlocked in the role-change callback"
    );
}

/// Between installing a leader's snapshot (poll) and its persist job completing, raft-rs's
/// applied index is still below the snapshot: an election timeout in that window must not
/// campaign (it would ask for the compacted entries and panic).
#[test]
fn no_campaign_while_an_installed_snapshot_is_being_persisted() {
    let mut c = Cluster::with_config(3, 5, |cfg| cfg.compact_after_entries = 5);
    c.max_persist_delay_ms = 60;
    c.one(b"first", 3, true);
    let l = c.check_one_leader();
    let f = (l + 1) % 3;
    c.crash(f);
    for k in 0..30u8 {
        c.one(&[b'k', k], 2, true);
    }
    c.start(f);
    let hit = c.run_until(10_000, |c| {
        c.node(f)
            .is_some_and(|n| n.stats().snapshots_installed >= 1 && n.unpersisted_jobs() > 0)
    });
    assert!(hit, "window reached");
    // The leader goes quiet (e.g. crashes) now; f's election timer runs out before its disk answers.
    let n = c.node_mut(f).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..20 {
            n.tick();
            let _ = n.poll();
        }
    }));
    if let Err(p) = r {
        let msg = p.downcast_ref::<String>().cloned().unwrap_or_default();
        panic!("campaign in the window panicked: {msg}");
    }
}

/// A recovered log whose entries do not continue the snapshot (what `LogStore::repair`
/// documents it may leave) is a typed error, not a panic at start.
#[test]
fn a_gap_after_the_snapshot_is_a_typed_error() {
    use mako_logstore::{GroupState, HardState, LogEntry, SnapshotMeta};
    use mako_raft::durable::{self, MemSnapshots, SnapshotStore};
    let store = MemSnapshots::default();
    let s = mako_group::Snapshot {
        index: 5,
        term: 1,
        data: Bytes::new(),
    };
    store.save(0, &s).unwrap();
    let e = |i: u64| LogEntry::new(i, 1, Bytes::new());
    let g = GroupState {
        hard_state: HardState {
            term: 1,
            vote: 1,
            commit: 9,
        },
        snapshot: Some(SnapshotMeta { index: 5, term: 1 }),
        first_index: 6,
        entries: vec![e(9), e(10)],
    };
    assert!(matches!(
        durable::recover_group(0, Some(g), &store),
        Err(durable::RecoverError::Gap {
            after: 5,
            first: 9,
            ..
        })
    ));
}

/// Entries submitted between two inputs go to raft-rs in one step: each follower gets them
/// in one append. They keep their place among other inputs: submitted before a transfer,
/// they are proposed (not refused by it); submitted after, they are reported refused; on
/// a follower, reported `NotLeader`.
#[test]
fn submitted_entries_are_proposed_together_and_in_order_with_other_inputs() {
    use mako_raft::wire::Reassembler;
    use mako_replication::{DropReason, Resolution};
    use raft::eraftpb::MessageType;

    let mut c = Cluster::new(3, 12);
    c.one(b"base", 3, true);
    let a = c.check_one_leader();
    let reports: Arc<Mutex<Vec<Unapplied>>> = Arc::default();
    for i in 0..3 {
        let r = Arc::clone(&reports);
        c.node(i)
            .unwrap()
            .dispatcher()
            .set_unapplied_callback(Box::new(move |u| r.lock().push(u)));
    }
    // Record the appends the leader sends.
    let appends: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    let seen = Arc::clone(&appends);
    let mut decoders: std::collections::HashMap<u64, Reassembler> = Default::default();
    c.filter = Some(Box::new(move |p| {
        let r = decoders.entry(p.to).or_default();
        if let Ok(Some(m)) = r.push(p.from, &p.payload)
            && m.get_msg_type() == MessageType::MsgAppend
            && !m.get_entries().is_empty()
        {
            seen.lock().push((p.to, m.get_entries().len()));
        }
        true
    }));
    let last = c.node(a).unwrap().last_index();
    for k in 0..5u8 {
        c.node_mut(a)
            .unwrap()
            .propose_submitted(Bytes::from(vec![b's', k]));
    }
    assert_eq!(
        c.node(a).unwrap().outstanding(),
        5,
        "submitted, not yet proposed"
    );
    c.drive(a);
    assert_eq!(c.node(a).unwrap().last_index(), last + 5);
    let sent = appends.lock().clone();
    let others: Vec<u64> = (0..3u64)
        .filter(|&i| i as usize != a)
        .map(|i| i + 1)
        .collect();
    for to in &others {
        let to_it: Vec<usize> = sent
            .iter()
            .filter(|(t, _)| t == to)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            to_it,
            vec![5],
            "follower {to} gets the five entries in one append"
        );
    }
    assert!(c.run_until(5_000, |c| c.all_applied(last + 5)));

    // Before a transfer: proposed. After it (in the same turn): refused, and reported.
    let target = others[0];
    let last = c.node(a).unwrap().last_index();
    let n = c.node_mut(a).unwrap();
    n.propose_submitted(Bytes::from_static(b"before"));
    n.transfer_leader(target).expect("a leads");
    n.propose_submitted(Bytes::from_static(b"after"));
    c.drive(a);
    assert_eq!(
        c.node(a).unwrap().last_index(),
        last + 1,
        "only `before` is in the log"
    );
    assert!(
        reports.lock().iter().any(|u| &u.entry[..] == b"after"
            && u.resolution == Resolution::Dropped(DropReason::Refused))
    );
    assert!(!reports.lock().iter().any(|u| &u.entry[..] == b"before"));

    // On a follower: NotLeader.
    let f = (0..3).find(|&i| i != a && i as u64 + 1 != target).unwrap();
    c.node_mut(f)
        .unwrap()
        .propose_submitted(Bytes::from_static(b"to a follower"));
    c.drive(f);
    assert!(
        reports
            .lock()
            .iter()
            .any(|u| &u.entry[..] == b"to a follower"
                && u.resolution == Resolution::Dropped(DropReason::NotLeader))
    );
    assert_eq!(c.node(f).unwrap().outstanding(), 0);
    c.assert_safe();
}
