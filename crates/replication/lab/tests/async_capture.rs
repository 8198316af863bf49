//! Snapshot capture runs off the group's thread (issue 13, "release latency under load"):
//! while an application's capture is blocked, the group keeps committing and applying, and
//! its leader keeps leading; once the capture is released the log is compacted behind it
//! and a restarted replica recovers the same state from the snapshot and the log.
//!
//! Real threads, the real log store (`fsync`) and snapshot files, the in-memory transport;
//! Raft and Multi-Paxos alike.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use mako_group::{Core, GroupConfig, Host, HostConfig, Worker};
use mako_logstore::{Durability, LogStore, LogStoreConfig};
use mako_paxos::PaxosNode;
use mako_raft::RaftNode;
use mako_replication::{
    Applied, NodeId, QueuedEntry, Replicator, Role, SnapshotCapture, SnapshotHandler,
    SnapshotRefused,
};
use mako_transport::mem::MemNetwork;
use parking_lot::Mutex;

type Applied_ = Arc<Mutex<Vec<(u64, Bytes)>>>;

fn encode(h: &[(u64, Bytes)], upto: u64) -> Bytes {
    let mut out = Vec::new();
    for (i, b) in h.iter().take_while(|(i, _)| *i <= upto) {
        out.extend_from_slice(&i.to_le_bytes());
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    out.into()
}

/// The test application's snapshots: its applied history. With a gate, every capture first
/// reports its index on `started` and then waits for the test to send on `release` (or
/// drop it).
struct Gated {
    applied: Applied_,
    gate: Option<(Sender<u64>, Receiver<()>)>,
}

impl SnapshotHandler for Gated {
    fn snapshot(&mut self, _pending: &[QueuedEntry]) -> Bytes {
        encode(&self.applied.lock(), u64::MAX)
    }

    fn begin_snapshot(&mut self, _pending: &[QueuedEntry]) -> SnapshotCapture {
        let upto = self.applied.lock().last().map_or(0, |(i, _)| *i);
        let h = Arc::clone(&self.applied);
        let gate = self.gate.clone();
        Box::new(move || {
            if let Some((started, release)) = gate {
                let _ = started.send(upto);
                let _ = release.recv();
            }
            Some(encode(&h.lock(), upto))
        })
    }

    fn restore(&mut self, data: &Bytes, _index: u64) -> Result<Vec<QueuedEntry>, SnapshotRefused> {
        let mut h = Vec::new();
        let mut d = &data[..];
        while d.len() >= 12 {
            let mut i = [0u8; 8];
            i.copy_from_slice(&d[..8]);
            let mut n = [0u8; 4];
            n.copy_from_slice(&d[8..12]);
            let (i, n) = (u64::from_le_bytes(i), u32::from_le_bytes(n) as usize);
            if d.len() < 12 + n {
                break;
            }
            h.push((i, Bytes::copy_from_slice(&d[12..12 + n])));
            d = &d[12 + n..];
        }
        *self.applied.lock() = h;
        Ok(Vec::new())
    }
}

struct Replica {
    host: Host,
    group: Arc<Worker>,
    applied: Applied_,
}

const COMPACT: u64 = 20;

fn start<C: Core>(
    net: &MemNetwork,
    id: NodeId,
    dir: &Path,
    gate: Option<(Sender<u64>, Receiver<()>)>,
) -> Replica {
    let (endpoint, inbox) = net.endpoint(id);
    let mut lcfg = LogStoreConfig::new(dir.join(format!("log-{id}")));
    lcfg.durability = Durability::Fsync;
    lcfg.segment_bytes = 1 << 20;
    let (log, recovered) = LogStore::open(lcfg).expect("log opens");
    let host = Host::new(
        Arc::new(endpoint),
        inbox,
        Arc::new(log),
        recovered,
        HostConfig {
            snapshot_dir: Some(dir.join(format!("snap-{id}"))),
        },
    );
    let mut cfg = GroupConfig::new(id, vec![1, 2, 3], 0);
    cfg.heartbeat_interval_ms = 10;
    cfg.election_timeout_min_ms = 150;
    cfg.election_timeout_max_ms = 300;
    cfg.compact_after_entries = COMPACT;
    cfg.compact_log_percent = 0; // the test application's snapshot is its whole history
    let applied: Applied_ = Arc::default();
    let handler = Gated {
        applied: Arc::clone(&applied),
        gate,
    };
    let group = host
        .start_group_with::<C>(cfg, Some(Box::new(handler)))
        .expect("group starts");
    for role in [Role::Leader, Role::Follower] {
        let a = Arc::clone(&applied);
        group.on_apply(
            role,
            Box::new(move |ctx| {
                a.lock().push((ctx.index, ctx.entry.clone()));
                Applied::normal(ctx.index)
            }),
        );
    }
    Replica {
        host,
        group,
        applied,
    }
}

/// Polls `f` until it holds or `limit` passes (a bound that fails the test, not a speed
/// assertion: on the old code the awaited progress never comes).
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    f()
}

/// Submits `entry` through whoever leads until it is applied on replica `on`.
fn commit(rs: &[Replica], on: usize, entry: Bytes) -> bool {
    let mut submitted = false;
    within(Duration::from_secs(20), || {
        if !submitted {
            if let Some(l) = rs.iter().find(|r| r.group.role() == Role::Leader) {
                submitted = l.group.submit(entry.clone()).is_ok();
            }
            return false;
        }
        rs[on].applied.lock().iter().any(|(_, e)| *e == entry)
    })
}

/// Index of replica 1's newest snapshot file, if any (older ones are removed once a newer
/// one is durable).
fn newest_snapshot(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir.join("snap-1"))
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("snapshot-0-")?
                .strip_suffix(".snap")?
                .parse()
                .ok()
        })
        .max()
}

fn blocked_capture_does_not_block_the_group<C: Core>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = MemNetwork::new();
    // Declared before the gate, so that a failing test drops the gate (releasing a blocked
    // capture) before it shuts the replicas down.
    let mut rs: Vec<Replica> = Vec::new();
    let (started_tx, started) = crossbeam_channel::unbounded::<u64>();
    let (release, release_rx) = crossbeam_channel::unbounded::<()>();
    for id in 1..=3 {
        // Only replica 1 is gated; it is made leader below (the others capture freely).
        let gate = (id == 1).then(|| (started_tx.clone(), release_rx.clone()));
        rs.push(start::<C>(&net, id, dir.path(), gate));
    }
    assert!(
        within(Duration::from_secs(20), || rs
            .iter()
            .any(|r| r.group.role() == Role::Leader)),
        "no leader"
    );
    if rs[0].group.role() != Role::Leader {
        let l = rs.iter().position(|r| r.group.role() == Role::Leader);
        let l = l.expect("a leader");
        let _ = rs[l].group.transfer_leader(1);
        assert!(
            within(Duration::from_secs(20), || rs[0].group.role()
                == Role::Leader),
            "replica 1 never led"
        );
    }
    let term = rs[0].group.term();
    // Enough entries for replica 1 to begin a capture, which then blocks.
    let mut k = 0u64;
    let mut index = None;
    while index.is_none() {
        assert!(
            commit(&rs, 0, Bytes::from(format!("e{k}"))),
            "entry {k} not applied"
        );
        k += 1;
        index = started.try_recv().ok();
        assert!(k < 10 * COMPACT, "no capture began");
    }
    let index = index.expect("capture began");
    // While it is blocked, the group keeps committing and applying (five compaction
    // periods), and replica 1 keeps leading in the same term.
    let before = rs[0].group.applied_index();
    for _ in 0..5 * COMPACT {
        assert!(
            commit(&rs, 0, Bytes::from(format!("e{k}"))),
            "entry {k} not applied while the capture at {index} is blocked"
        );
        k += 1;
    }
    // The applied index is published at the end of the worker's turn, after the callbacks
    // that `commit` watches: wait for it rather than race it.
    assert!(
        within(Duration::from_secs(20), || rs[0].group.applied_index()
            >= before + 5 * COMPACT),
        "applied index {} < {}",
        rs[0].group.applied_index(),
        before + 5 * COMPACT
    );
    assert_eq!(rs[0].group.role(), Role::Leader, "leadership lost");
    assert_eq!(rs[0].group.term(), term, "an election happened");
    assert!(
        started.try_recv().is_err(),
        "a second capture began while one is in flight"
    );
    // Released: the snapshot at `index` is kept (its file, then the log record naming it,
    // which compacts the log behind it).
    drop(release);
    assert!(
        within(Duration::from_secs(20), || newest_snapshot(dir.path())
            .is_some_and(|i| i >= index)),
        "no snapshot at {index} after the release"
    );
    assert!(
        commit(&rs, 0, Bytes::from(format!("e{k}"))),
        "entry {k} not applied"
    );
    // Everyone applied the same; a restart of replica 1 recovers it from snapshot + log.
    let last = rs[0].group.applied_index();
    assert!(within(Duration::from_secs(20), || rs
        .iter()
        .all(|r| r.group.applied_index() >= last)));
    let want = rs[0].applied.lock().clone();
    for r in &rs[1..] {
        assert_eq!(
            r.applied
                .lock()
                .iter()
                .filter(|(i, _)| *i <= last)
                .cloned()
                .collect::<Vec<_>>(),
            want.iter()
                .filter(|(i, _)| *i <= last)
                .cloned()
                .collect::<Vec<_>>()
        );
    }
    let old = rs.remove(0);
    old.host.shutdown();
    drop(old);
    let again = start::<C>(&net, 1, dir.path(), None);
    assert!(
        within(Duration::from_secs(20), || again.group.applied_index()
            >= last),
        "restarted replica does not catch up"
    );
    let got: Vec<_> = again
        .applied
        .lock()
        .iter()
        .filter(|(i, _)| *i <= last)
        .cloned()
        .collect();
    let want: Vec<_> = want.into_iter().filter(|(i, _)| *i <= last).collect();
    assert_eq!(got, want, "restarted replica's state differs");
    again.host.shutdown();
    for r in &rs {
        r.host.shutdown();
    }
}

#[test]
fn raft_blocked_capture_does_not_block_the_group() {
    blocked_capture_does_not_block_the_group::<RaftNode>();
}

#[test]
fn paxos_blocked_capture_does_not_block_the_group() {
    blocked_capture_does_not_block_the_group::<PaxosNode>();
}
