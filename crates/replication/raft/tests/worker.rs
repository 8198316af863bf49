//! RaftWorker over real TCP on 127.0.0.1 with a durable log: election, replication,
//! callbacks by role, a broken leader connection, a restart from disk.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_logstore::{Durability, LogStore, LogStoreConfig};
use mako_raft::{HostConfig, RaftConfig, RaftHost, RaftWorker};
use mako_replication::{Applied, ApplyStatus, NodeId, Replicator, Role};
use mako_transport::tcp::{TcpConfig, TcpTransport};
use parking_lot::Mutex;

struct Replica {
    id: NodeId,
    transport: Arc<TcpTransport>,
    host: RaftHost,
    group: Arc<RaftWorker>,
    /// (index, entry, role the callback ran under)
    applied: Arc<Mutex<Vec<(u64, Bytes, Role)>>>,
}

fn raft_config(id: NodeId, n: u64) -> RaftConfig {
    let mut cfg = RaftConfig::new(id, (1..=n).collect(), 7);
    cfg.heartbeat_interval_ms = 10;
    cfg.election_timeout_min_ms = 150;
    cfg.election_timeout_max_ms = 300;
    cfg
}

fn start_replica(id: NodeId, n: u64, dir: &Path, durability: Durability) -> Replica {
    start_replica_with(id, n, dir, durability, u64::MAX / 2)
}

/// The test application's snapshots: its applied history, `(index, entry)` pairs.
struct History(Arc<Mutex<Vec<(u64, Bytes, Role)>>>);

impl mako_replication::SnapshotHandler for History {
    fn snapshot(&mut self, _pending: &[mako_replication::QueuedEntry]) -> Bytes {
        let mut out = Vec::new();
        for (i, b, _) in self.0.lock().iter() {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        out.into()
    }

    fn restore(
        &mut self,
        data: &Bytes,
        _index: u64,
    ) -> Result<Vec<mako_replication::QueuedEntry>, mako_replication::SnapshotRefused> {
        let mut h = Vec::new();
        let mut d = &data[..];
        while d.len() >= 12 {
            let i = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
            let n = u32::from_le_bytes(d[8..12].try_into().expect("4 bytes")) as usize;
            if d.len() < 12 + n {
                break;
            }
            h.push((i, Bytes::copy_from_slice(&d[12..12 + n]), Role::Follower));
            d = &d[12 + n..];
        }
        *self.0.lock() = h;
        Ok(Vec::new())
    }
}

fn start_replica_with(
    id: NodeId,
    n: u64,
    dir: &Path,
    durability: Durability,
    compact: u64,
) -> Replica {
    let r = start_replica_unwired(id, n, dir, durability, compact);
    register(&r);
    r
}

/// The apply callbacks of the test application: record every entry with its role.
fn register(r: &Replica) {
    for role in [Role::Leader, Role::Follower] {
        let a = r.applied.clone();
        r.group.on_apply(
            role,
            Box::new(move |ctx| {
                assert_eq!(ctx.shard, 7);
                a.lock().push((ctx.index, ctx.entry.clone(), role));
                Applied {
                    status: ApplyStatus::Normal,
                    ts: ctx.index,
                }
            }),
        );
    }
    r.group.retry_pending();
}

/// A replica whose group runs with no apply callback yet.
fn start_replica_unwired(
    id: NodeId,
    n: u64,
    dir: &Path,
    durability: Durability,
    compact: u64,
) -> Replica {
    let (transport, inbox) = TcpTransport::start(
        id,
        "127.0.0.1:0".parse().expect("addr"),
        HashMap::new(),
        TcpConfig::default(),
    )
    .expect("transport starts");
    let transport = Arc::new(transport);
    let mut lcfg = LogStoreConfig::new(dir.join(format!("log-{id}")));
    lcfg.durability = durability;
    lcfg.segment_bytes = 1 << 20;
    let (log, recovered) = LogStore::open(lcfg).expect("log opens");
    let host = RaftHost::new(
        transport.clone(),
        inbox,
        Arc::new(log),
        recovered,
        HostConfig {
            snapshot_dir: Some(dir.join(format!("node-{id}"))),
        },
    );
    let applied: Arc<Mutex<Vec<(u64, Bytes, Role)>>> = Arc::default();
    let mut rc = raft_config(id, n);
    rc.compact_after_entries = compact;
    rc.compact_log_percent = 0; // the test application's snapshot is its whole history
    let group = host
        .start_group_with::<mako_raft::RaftNode>(rc, Some(Box::new(History(applied.clone()))))
        .expect("group starts");
    Replica {
        id,
        transport,
        host,
        group,
        applied,
    }
}

fn wire_up(rs: &[Replica]) {
    let addrs: Vec<(NodeId, SocketAddr)> = rs
        .iter()
        .map(|r| (r.id, r.transport.local_addr()))
        .collect();
    for r in rs {
        for (id, a) in &addrs {
            if *id != r.id {
                r.transport.set_peer_addr(*id, *a);
            }
        }
    }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

fn leader_of(rs: &[Replica]) -> Option<usize> {
    let ls: Vec<usize> = (0..rs.len())
        .filter(|&i| rs[i].group.role() == Role::Leader)
        .collect();
    (ls.len() == 1).then(|| ls[0])
}

fn wait_leader(rs: &[Replica]) -> usize {
    let mut l = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            l = leader_of(rs);
            l.is_some()
        }),
        "no single leader"
    );
    l.expect("leader")
}

fn submit_all(rs: &[Replica], entries: &[Bytes]) {
    for e in entries {
        let mut done = false;
        let ok = wait_until(Duration::from_secs(10), || {
            if let Some(l) = leader_of(rs) {
                done = rs[l].group.submit(e.clone()).is_ok();
            }
            done
        });
        assert!(ok, "could not submit");
    }
}

fn has_all(r: &Replica, entries: &[Bytes]) -> bool {
    let a = r.applied.lock();
    entries.iter().all(|e| a.iter().any(|(_, b, _)| b == e))
}

#[test]
fn tcp_group_elects_replicates_and_survives_losing_the_leaders_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rs: Vec<Replica> = (1..=3)
        .map(|id| start_replica(id, 3, dir.path(), Durability::Fsync))
        .collect();
    wire_up(&rs);
    let l = wait_leader(&rs);
    let follower = (l + 1) % 3;
    // The follower learns who leads from the leader's first message.
    assert!(wait_until(Duration::from_secs(10), || rs[follower]
        .group
        .leader()
        == Some(rs[l].id)));
    assert!(matches!(
        rs[follower].group.submit(Bytes::from_static(b"x")),
        Err(mako_replication::SubmitError::NotLeader { hint: Some(h) }) if h == rs[l].id
    ));
    let first: Vec<Bytes> = (0..200).map(|i| Bytes::from(format!("a{i}"))).collect();
    submit_all(&rs, &first);
    assert!(wait_until(Duration::from_secs(10), || rs
        .iter()
        .all(|r| has_all(r, &first))));
    // The leader applied under the leader callback, the others under the follower callback.
    assert!(
        rs[l]
            .applied
            .lock()
            .iter()
            .all(|(_, _, role)| *role == Role::Leader)
    );
    assert!(
        rs[follower]
            .applied
            .lock()
            .iter()
            .all(|(_, _, role)| *role == Role::Follower)
    );

    // Break every connection of the leader; the group keeps going.
    rs[l].transport.drop_connections();
    let second: Vec<Bytes> = (0..100).map(|i| Bytes::from(format!("b{i}"))).collect();
    submit_all(&rs, &second);
    assert!(wait_until(Duration::from_secs(10), || rs
        .iter()
        .all(|r| has_all(r, &second))));
    // Everyone applied the same sequence.
    let seq = |r: &Replica| {
        r.applied
            .lock()
            .iter()
            .map(|(i, b, _)| (*i, b.clone()))
            .collect::<Vec<_>>()
    };
    assert!(wait_until(Duration::from_secs(5), || seq(&rs[0])
        == seq(&rs[1])
        && seq(&rs[1]) == seq(&rs[2])));
    for r in &rs {
        r.host.shutdown();
    }
}

#[test]
fn callbacks_are_rewired_when_leadership_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rs: Vec<Replica> = (1..=3)
        .map(|id| start_replica(id, 3, dir.path(), Durability::Memory))
        .collect();
    wire_up(&rs);
    let l = wait_leader(&rs);
    submit_all(&rs, &[Bytes::from_static(b"before")]);
    let to = (l + 1) % 3;
    assert!(wait_until(Duration::from_secs(5), || has_all(
        &rs[to],
        &[Bytes::from_static(b"before")]
    )));
    let changes: Arc<Mutex<Vec<Role>>> = Arc::default();
    let c = changes.clone();
    rs[to]
        .group
        .on_role_change(Box::new(move |rc| c.lock().push(rc.role)));
    rs[l]
        .group
        .transfer_leader(rs[to].id)
        .expect("leader transfers");
    assert!(wait_until(Duration::from_secs(5), || rs[to].group.role()
        == Role::Leader));
    submit_all(&rs, &[Bytes::from_static(b"after")]);
    assert!(wait_until(Duration::from_secs(5), || rs
        .iter()
        .all(|r| has_all(r, &[Bytes::from_static(b"after")]))));
    let role_of = |r: &Replica, e: &[u8]| {
        r.applied
            .lock()
            .iter()
            .find(|(_, b, _)| &b[..] == e)
            .map(|x| x.2)
    };
    assert_eq!(role_of(&rs[to], b"before"), Some(Role::Follower));
    assert_eq!(role_of(&rs[to], b"after"), Some(Role::Leader));
    assert_eq!(role_of(&rs[l], b"after"), Some(Role::Follower));
    assert_eq!(changes.lock().first(), Some(&Role::Leader));
    for r in &rs {
        r.host.shutdown();
    }
}

#[test]
fn a_restarted_replica_recovers_its_log_and_rejoins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rs: Vec<Replica> = (1..=3)
        .map(|id| start_replica(id, 3, dir.path(), Durability::Fsync))
        .collect();
    wire_up(&rs);
    let l = wait_leader(&rs);
    let first: Vec<Bytes> = (0..50).map(|i| Bytes::from(format!("p{i}"))).collect();
    submit_all(&rs, &first);
    let victim = (l + 1) % 3;
    assert!(wait_until(Duration::from_secs(10), || has_all(
        &rs[victim],
        &first
    )));
    let term_before = rs[victim].group.term();
    let r = rs.remove(victim);
    r.host.shutdown();
    r.transport.shutdown();
    drop(r);
    let second: Vec<Bytes> = (0..50).map(|i| Bytes::from(format!("q{i}"))).collect();
    submit_all(&rs, &second);
    let back = start_replica(victim as NodeId + 1, 3, dir.path(), Durability::Fsync);
    // Not yet connected to anyone: what it applies comes from its own durable log.
    assert!(
        wait_until(Duration::from_secs(5), || has_all(&back, &first)),
        "the restarted replica did not re-apply its durable committed prefix"
    );
    assert!(!has_all(&back, &second));
    rs.insert(victim, back);
    wire_up(&rs);
    assert!(wait_until(Duration::from_secs(10), || has_all(
        &rs[victim],
        &second
    )));
    assert!(
        rs[victim].group.term() >= term_before,
        "term survived the restart"
    );
    for r in &rs {
        r.host.shutdown();
    }
}

#[test]
fn a_replica_restarts_from_its_snapshot_file_and_compacted_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rs: Vec<Replica> = (1..=3)
        .map(|id| start_replica_with(id, 3, dir.path(), Durability::Fsync, 20))
        .collect();
    wire_up(&rs);
    let l = wait_leader(&rs);
    let first: Vec<Bytes> = (0..120).map(|i| Bytes::from(format!("s{i}"))).collect();
    submit_all(&rs, &first);
    let victim = (l + 1) % 3;
    assert!(wait_until(Duration::from_secs(10), || has_all(
        &rs[victim],
        &first
    )));
    // 120 entries compacted every 20: the replica reports a snapshot it holds on disk.
    assert!(
        wait_until(Duration::from_secs(10), || rs[victim]
            .group
            .snapshot_index()
            >= 20),
        "no snapshot reported: {}",
        rs[victim].group.snapshot_index()
    );
    let r = rs.remove(victim);
    r.host.shutdown();
    r.transport.shutdown();
    let held = r.group.snapshot_index();
    drop(r);
    // Alone, the restarted replica rebuilds its history from the snapshot file plus the log after it.
    let back = start_replica_with(victim as NodeId + 1, 3, dir.path(), Durability::Fsync, 20);
    assert!(
        back.group.snapshot_index() >= held,
        "the restarted replica reports the snapshot it recovered: {} < {held}",
        back.group.snapshot_index()
    );
    assert!(
        wait_until(Duration::from_secs(5), || has_all(&back, &first)),
        "history not rebuilt from snapshot + compacted log"
    );
    rs.insert(victim, back);
    wire_up(&rs);
    let second: Vec<Bytes> = (0..10).map(|i| Bytes::from(format!("t{i}"))).collect();
    submit_all(&rs, &second);
    assert!(wait_until(Duration::from_secs(10), || rs
        .iter()
        .all(|r| has_all(r, &second))));
    for r in &rs {
        r.host.shutdown();
    }
}

/// A replica's own compactions are saved to disk by the host's snapshot thread: the group's
/// thread, which replicates, never copies, writes and syncs a snapshot file in its turn (it
/// did for every compaction, and release latency in `mako demo` doubled while it did).
#[test]
fn compactions_are_saved_off_the_groups_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rs: Vec<Replica> = (1..=3)
        .map(|id| start_replica_with(id, 3, dir.path(), Durability::Fsync, 20))
        .collect();
    wire_up(&rs);
    wait_leader(&rs);
    let entries: Vec<Bytes> = (0..120).map(|i| Bytes::from(format!("c{i}"))).collect();
    submit_all(&rs, &entries);
    assert!(
        wait_until(Duration::from_secs(10), || rs.iter().all(|r| has_all(
            r, &entries
        ) && r
            .group
            .snapshot_index()
            >= 60)),
        "no compaction: {:?}",
        rs.iter()
            .map(|r| r.group.snapshot_index())
            .collect::<Vec<_>>()
    );
    for r in &rs {
        assert_eq!(r.group.snapshot_saves_in_turn(), 0, "replica {}", r.id);
    }
    // What was saved off the group's thread is what a restart recovers.
    let r = &rs[0];
    r.host.shutdown();
    let held = r.group.snapshot_index();
    let files = std::fs::read_dir(dir.path().join("node-1"))
        .expect("snapshot dir")
        .filter_map(|d| d.ok())
        .filter(|d| d.file_name().to_string_lossy().starts_with("snapshot-"))
        .count();
    assert!(files >= 1, "no snapshot file at index {held}");
    for r in &rs[1..] {
        r.host.shutdown();
    }
}

/// An application attaches its callbacks just after its group starts (a site is built around
/// a running group). A group restarted from its log must not apply anything in between:
/// entries applied to nobody were queued unobserved, and a site then fed its watermark only
/// from the entries after them (found as acknowledged writes lost on a single-replica
/// restart: the new epoch's `FVW` was fixed over a prefix of the log).
#[test]
fn a_restarted_group_applies_nothing_before_its_callbacks_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start_replica(1, 1, dir.path(), Durability::Fsync);
    let entries: Vec<Bytes> = (0..40).map(|i| Bytes::from(format!("e{i}"))).collect();
    assert!(wait_until(Duration::from_secs(10), || r.group.role() == Role::Leader));
    submit_all(std::slice::from_ref(&r), &entries);
    assert!(wait_until(Duration::from_secs(10), || has_all(
        &r, &entries
    )));
    r.host.shutdown();
    r.transport.shutdown();
    drop(r);
    let back = start_replica_unwired(1, 1, dir.path(), Durability::Fsync, u64::MAX / 2);
    // The group elects itself and commits; with no callback it must hold every entry back.
    assert!(wait_until(Duration::from_secs(10), || back.group.role()
        == Role::Leader));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        back.group.applied_index(),
        0,
        "entries were applied before any callback was registered"
    );
    register(&back);
    assert!(
        wait_until(Duration::from_secs(10), || has_all(&back, &entries)),
        "the callbacks did not receive the recovered entries"
    );
    // In log order, each once.
    let got: Vec<u64> = back.applied.lock().iter().map(|(i, _, _)| *i).collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(got, sorted, "entries re-offered out of order or twice");
    back.host.shutdown();
}
