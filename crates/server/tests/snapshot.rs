//! Site snapshots (issue 10, item 5): a lagging replica is caught up by snapshot with the
//! data, can lead and serve it; queued pieces survive a snapshot; malformed snapshots are
//! refused without changing anything.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_commitlog::{Batch, Entry, Piece, Write};
use mako_replication::{ApplyCtx, ApplyStatus, PendingQueue, QueuedEntry, Role};
use mako_server::msg::Msg;
use mako_server::snapshot::{SnapshotError, testing};
use mako_server::{Cluster, ClusterConfig, ControlFaults, Fate, Protocol, Site, SiteConfig};
use mako_storage::table_id_for;
use mako_watermark::stream_id;

/// Polls `f` every 10 ms until it holds or `limit` passes; whether it held.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

fn value(i: u64, round: u64) -> Bytes {
    Bytes::from(format!("value-{round}-{i:08}-{}", "x".repeat(64)))
}

/// Writes `keys` keys of shard `shard` (and, if `other` is set, one key of that shard in each
/// transaction too) through the shard's current leader, `per_txn` keys a transaction.
fn load(c: &Cluster, shard: u32, other: Option<u32>, keys: std::ops::Range<u64>, round: u64) {
    let per_txn = 100;
    let mut i = keys.start;
    while i < keys.end {
        let end = (i + per_txn).min(keys.end);
        // Puts of fixed values: retrying one that timed out (or aborted) is harmless. A leader
        // may briefly refuse (no lease yet, an epoch being re-established) on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut attempt = 0;
        loop {
            // The leader of the moment: on a loaded machine an election may move it.
            let site = Arc::clone(c.leader(shard));
            let mut tx = site.begin(0).expect("worker 0");
            let mut put = || -> Result<(), String> {
                for k in i..end {
                    tx.put(shard, 0, &key(k), value(k, round))
                        .map_err(|e| format!("{e:?}"))?;
                }
                if let Some(o) = other {
                    tx.put(o, 0, format!("other{i}").as_bytes(), value(i, round))
                        .map_err(|e| format!("{e:?}"))?;
                }
                Ok(())
            };
            let done = put().and_then(|()| tx.commit().map(|_| ()).map_err(|e| e.to_string()));
            match done {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("load transaction at key {i} failed ({e}); retrying");
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("load transaction at key {i} failed {attempt} times: {e}"),
            }
        }
        i = end;
    }
}

/// Raft compacts a log holding this many applied entries.
const COMPACT: u64 = 50;

/// Waits until `leader`'s log was compacted past everything isolated `lagging` may hold
/// (its applied entries and the batches in flight to it when it was cut off), so only a
/// snapshot can catch it up; whether it got there. Compaction runs on a low-priority
/// thread, so it may trail the leader's applied index by far on a loaded machine.
fn lagging_behind_compaction(leader: &Site, lagging: &Site) -> bool {
    eventually(Duration::from_secs(60), || {
        leader.group().snapshot_index() > lagging.group().applied_index() + 3 * COMPACT
    })
}

fn config_on(protocol: Protocol, shards: u32, compact: u64) -> ClusterConfig {
    ClusterConfig {
        protocol,
        preferred_leader: false,
        compact_after_entries: Some(compact),
        // Catch-up by snapshot needs the log compacted often: by entry count alone.
        compact_log_percent: Some(0),
        ..common::config(shards, 3, Duration::from_secs(5))
    }
}

/// Every key of `keys` holds the leader's value on `site` (read from its store).
fn missing(site: &Site, leader: &Site, keys: std::ops::Range<u64>) -> usize {
    let (t, l) = (
        site.table(0).expect("table"),
        leader.table(0).expect("table"),
    );
    keys.filter(|k| t.get(&key(*k)) != l.get(&key(*k)) || t.get(&key(*k)).is_none())
        .count()
}

/// (a) A replica isolated while its leader writes 12,000 keys (the log compacted behind it)
/// is caught up by snapshot: it has every key with the leader's value, agrees with its
/// leader, is then made leader and serves those keys and new writes.
#[test]
fn lagging_replica_caught_up_by_snapshot_has_every_key_and_can_lead() {
    lagging_caught_up(Protocol::Raft);
}

fn lagging_caught_up(protocol: Protocol) {
    const KEYS: u64 = 12_000;
    let c = Cluster::start(config_on(protocol, 1, COMPACT)).expect("cluster");
    let leader = Arc::clone(&c.sites[0][0]);
    let lagging = Arc::clone(&c.sites[0][2]);
    load(&c, 0, None, 0..100, 0);
    assert!(eventually(Duration::from_secs(10), || missing(
        &lagging,
        &leader,
        0..100
    ) == 0));
    c.isolate(0, 2).expect("isolate");
    load(&c, 0, None, 0..KEYS, 1);
    assert!(
        lagging_behind_compaction(&leader, &lagging),
        "setup: the leader's log never got past the isolated replica by compaction periods: {} vs {}",
        leader.group().snapshot_index(),
        lagging.group().applied_index()
    );
    c.reconnect(0, 2).expect("reconnect");
    let caught_up = eventually(Duration::from_secs(30), || {
        lagging.snapshots().0 >= 1 && missing(&lagging, &leader, 0..KEYS) == 0
    });
    assert!(
        caught_up,
        "not caught up by snapshot: {} snapshots restored, {} of {KEYS} keys missing or stale",
        lagging.snapshots().0,
        missing(&lagging, &leader, 0..KEYS)
    );
    assert_eq!(lagging.snapshots().1, 0, "no snapshot refused");
    c.compare_replicas(Duration::from_secs(10))
        .expect("replicas agree after the catch-up");

    c.transfer_leader(0, 2).expect("transfer asked");
    assert!(
        c.wait_leader(0, 2, Duration::from_secs(15)),
        "the restored replica never led and served"
    );
    // It serves reads of the keys it got by snapshot. On a loaded machine leadership may
    // move on meanwhile (the restored replica is not the preferred leader): a read refused
    // as `NotLeader` asks for leadership back and reads again.
    let read_on_restored = |range: std::ops::Range<u64>, round: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut tx = lagging.begin(0).expect("worker 0");
            let got: Result<Vec<_>, _> = range.clone().map(|k| tx.get(0, 0, &key(k))).collect();
            match got.map(|g| (g, tx.commit())) {
                Ok((g, Ok(_))) => {
                    for (k, v) in range.clone().zip(g) {
                        assert_eq!(v, Some(value(k, round)), "key {k} on the new leader");
                    }
                    return;
                }
                other if std::time::Instant::now() < deadline => {
                    eprintln!("read on the restored replica refused ({other:?}), retrying");
                    let _ = c.transfer_leader(0, 2);
                    c.wait_leader(0, 2, Duration::from_secs(15));
                }
                other => panic!("the restored replica did not serve a read: {other:?}"),
            }
        }
    };
    for chunk in (0..KEYS).step_by(500) {
        read_on_restored(chunk..(chunk + 500).min(KEYS), 1);
    }
    // And new writes.
    load(&c, 0, None, 0..200, 2);
    read_on_restored(7..8, 2);
    c.compare_replicas(Duration::from_secs(10))
        .expect("replicas agree under the new leader");
    c.shutdown();
}

/// (b) 2 shards × 3: a follower of shard 0 that does not hear shard 1's watermarks queues
/// cross-shard pieces; isolated while its leader writes on, it is caught up by snapshot; once
/// the watermarks flow again its store equals its leader's (nothing queued was lost).
#[test]
fn follower_with_queued_pieces_caught_up_by_snapshot_ends_equal_to_its_leader() {
    queued_pieces_caught_up(Protocol::Raft);
}

fn queued_pieces_caught_up(protocol: Protocol) {
    let follower = Cluster::node_id(3, 0, 2);
    let hold = Arc::new(AtomicBool::new(true));
    let mut cfg = config_on(protocol, 2, COMPACT);
    let h = Arc::clone(&hold);
    cfg.control_faults = Some(ControlFaults(Arc::new(move |_, dest, m| match m {
        Msg::Watermark { shard: 1, .. } if dest == follower && h.load(Ordering::Relaxed) => {
            Fate::Drop
        }
        _ => Fate::Deliver,
    })));
    let c = Cluster::start(cfg).expect("cluster");
    let leader = Arc::clone(&c.sites[0][0]);
    let f = Arc::clone(&c.sites[0][2]);
    load(&c, 0, Some(1), 0..1_000, 0);
    assert!(
        eventually(Duration::from_secs(10), || f.queued() >= 1),
        "setup: no cross-shard piece queued on the follower"
    );
    c.isolate(0, 2).expect("isolate");
    load(&c, 0, Some(1), 1_000..6_000, 1);
    assert!(
        lagging_behind_compaction(&leader, &f),
        "setup: the leader's log never got past the isolated follower by compaction periods"
    );
    c.reconnect(0, 2).expect("reconnect");
    assert!(
        eventually(Duration::from_secs(30), || f.snapshots().0 >= 1),
        "the follower was not caught up by snapshot"
    );
    hold.store(false, Ordering::Relaxed);
    c.compare_replicas(Duration::from_secs(15))
        .expect("the follower's store equals its leader's");
    assert_eq!(missing(&f, &leader, 0..6_000), 0);
    assert_eq!(f.queued(), 0, "nothing left queued");
    c.shutdown();
}

/// Issue 13: transfers keep committing on a 2-shard cluster whose groups compact every 20
/// entries (captures on the hosts' snapshot threads while the groups apply); a follower is
/// stopped, the log is compacted behind it, it restarts from its own snapshot and log and is
/// caught up (by snapshot); the replicas converge and money is conserved on every replica.
#[test]
fn transfers_commit_through_compactions_and_a_restarted_follower_converges() {
    transfers_through_compactions(Protocol::Raft);
}

fn transfers_through_compactions(protocol: Protocol) {
    const ACCOUNTS: u64 = 10;
    const INITIAL: u64 = 1000;
    let mut cfg = config_on(protocol, 2, 20);
    cfg.durability = mako_logstore::Durability::Buffered;
    let mut c = Cluster::start(cfg).expect("cluster");
    let acct = |a: u64| format!("acct{a:04}").into_bytes();
    let num = |b: &Bytes| {
        let mut n = [0u8; 8];
        n.copy_from_slice(&b[..8]);
        u64::from_le_bytes(n)
    };
    let money = |n: u64| Bytes::copy_from_slice(&n.to_le_bytes());
    // Runs `f` in a transaction on shard `home`'s current leader until one commits.
    let run = |c: &Cluster,
               home: u32,
               f: &dyn Fn(&mut mako_server::DistTxn) -> Result<(), String>| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let site = match c.current_leader(home) {
                Some(s) => Arc::clone(s),
                None => {
                    assert!(Instant::now() < deadline, "no leader of shard {home}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let mut tx = site.begin(0).expect("worker 0");
            let r = f(&mut tx).and_then(|()| tx.commit().map(|_| ()).map_err(|e| e.to_string()));
            match r {
                Ok(()) => return,
                Err(e) => assert!(Instant::now() < deadline, "transaction failed: {e}"),
            }
        }
    };
    for s in 0..2u32 {
        run(&c, s, &|tx| {
            for a in 0..ACCOUNTS {
                tx.put(s, 0, &acct(a), money(INITIAL))
                    .map_err(|e| format!("{e:?}"))?;
            }
            Ok(())
        });
    }
    let transfer = |c: &Cluster, k: u64| {
        let (sa, sb) = ((k % 2) as u32, ((k / 2) % 2) as u32);
        let (a, b) = (k % ACCOUNTS, (k / 3) % ACCOUNTS);
        if sa == sb && a == b {
            return;
        }
        run(c, sa, &|tx| {
            let va = num(&tx
                .get(sa, 0, &acct(a))
                .map_err(|e| format!("{e:?}"))?
                .unwrap_or_default());
            let vb = num(&tx
                .get(sb, 0, &acct(b))
                .map_err(|e| format!("{e:?}"))?
                .unwrap_or_default());
            tx.put(sa, 0, &acct(a), money(va - 1))
                .map_err(|e| format!("{e:?}"))?;
            tx.put(sb, 0, &acct(b), money(vb + 1))
                .map_err(|e| format!("{e:?}"))?;
            Ok(())
        });
    };
    let mut k = 0;
    for _ in 0..150 {
        transfer(&c, k);
        k += 1;
    }
    // A follower of shard 0 stops; the transfers go on past several compactions.
    let leader = c.leader(0).node();
    let f = (0..3u32)
        .find(|r| c.sites[0][*r as usize].node() != leader)
        .expect("a follower");
    let before = c.sites[0][f as usize].group().applied_index();
    c.stop_replica(0, f).expect("stop");
    assert!(
        eventually(Duration::from_secs(60), || {
            transfer(&c, k);
            k += 1;
            c.leader(0).group().applied_index() > before + 4 * 20
        }),
        "shard 0 did not go on"
    );
    let restarted = c.restart_replica(0, f).expect("restart");
    for _ in 0..100 {
        transfer(&c, k);
        k += 1;
    }
    let target = c.leader(0).group().applied_index();
    assert!(
        eventually(Duration::from_secs(30), || restarted
            .group()
            .applied_index()
            >= target),
        "the restarted follower did not catch up"
    );
    if let Err(d) = c.compare_replicas(Duration::from_secs(20)) {
        panic!("replicas differ: {d}");
    }
    // Money is conserved on every replica (replica `r` of each shard, summed).
    for r in 0..3usize {
        let total: u64 = (0..2usize)
            .map(|s| {
                let t = c.sites[s][r].table(0).expect("table");
                (0..ACCOUNTS)
                    .map(|a| t.get(&acct(a)).map_or(0, |v| num(&v)))
                    .sum::<u64>()
            })
            .sum();
        assert_eq!(
            total,
            2 * ACCOUNTS * INITIAL,
            "money conserved on replica {r}"
        );
    }
    assert!(
        restarted.snapshots().0 >= 1 || c.sites[0][f as usize].snapshots().0 >= 1,
        "the restarted follower restored a snapshot"
    );
}

// ---------------------------------------------------------------------------------------------
// (c) The site's handler without Raft: queue carry-over and malformed snapshots.

/// A follower site of shard 0 of 2, one worker per shard.
fn follower_site() -> Arc<Site> {
    common::test_site(
        common::TestGroup::new(Role::Follower),
        mako_commitlog::BatchConfig::default(),
    )
}

fn batch(seq: u64, vt: [u64; 2], k: &str, v: &str) -> Bytes {
    Entry::Batch(Batch {
        epoch: 0,
        stream: stream_id(0, 0),
        seq,
        pieces: vec![Piece {
            vt: vt.to_vec(),
            writes: vec![Write::put(
                table_id_for("t"),
                k.as_bytes().to_vec(),
                v.as_bytes().to_vec(),
            )],
        }],
    })
    .encode()
}

fn hb(stream: u32, seq: u64, w: u64) -> Bytes {
    Entry::Heartbeat {
        epoch: 0,
        stream,
        seq,
        w,
    }
    .encode()
}

/// Applies `entry` at `index` as a follower; a `SafetyFail` entry is queued (as the dispatcher does).
fn apply(site: &Site, entry: &Bytes, index: u64, q: &mut PendingQueue) -> ApplyStatus {
    let status = site
        .follower_apply(ApplyCtx {
            entry,
            index,
            shard: 0,
            queue: q,
        })
        .status;
    if status == ApplyStatus::SafetyFail {
        q.push_back(QueuedEntry {
            index,
            entry: entry.clone(),
        });
    }
    status
}

fn get(site: &Site, k: &str) -> Option<Bytes> {
    site.table(0).and_then(|t| t.get(k.as_bytes()))
}

/// A follower with a queued piece is snapshotted; the restored site gets its data, its `W_s`
/// and the queue, and replays the queued piece once `VW` covers it.
#[test]
fn the_pending_queue_is_carried_over_and_replayed_after_restore() {
    let a = follower_site();
    let mut q = PendingQueue::default();
    apply(&a, &hb(stream_id(1, 0), 0, 100), 1, &mut q);
    assert_eq!(
        apply(&a, &batch(0, [3, 0], "k1", "v1"), 2, &mut q),
        ApplyStatus::Normal
    );
    assert_eq!(
        apply(&a, &batch(1, [4, 7], "k2", "v2"), 3, &mut q),
        ApplyStatus::SafetyFail,
        "setup: VW[1] does not cover 7"
    );
    let pending: Vec<QueuedEntry> = q.iter().cloned().collect();
    let data = testing::capture(&a, &pending);

    let b = follower_site();
    let carried = testing::restore(&b, &data, 3).expect("restored");
    assert_eq!(carried, pending, "the queue comes back, in order");
    assert_eq!(get(&b, "k1").as_deref(), Some(&b"v1"[..]));
    assert_eq!(get(&b, "k2"), None, "a queued piece is not replayed early");
    assert_eq!((b.w(), b.queued()), (a.w(), 1));
    assert!(b.first_difference(&a).is_none());
    assert_eq!(b.snapshots(), (1, 0));

    // The queue resumes ahead of later entries: once VW[1] covers 7, the next entry drains it.
    let mut q = PendingQueue::default();
    for e in carried {
        q.push_back(e);
    }
    b.learn(1, 0, 7);
    assert_eq!(
        apply(&b, &hb(stream_id(0, 0), 2, 5), 4, &mut q),
        ApplyStatus::ReplayDone
    );
    assert_eq!(get(&b, "k2").as_deref(), Some(&b"v2"[..]));
    assert_eq!(b.queued(), 0);
}

/// A follower's capture begun at `I` whose table walk runs only after entries past `I` were
/// applied (as on the host's snapshot thread): overwrites, new keys, a watermark advance and
/// the drain of a queued piece past `I` are in the store the walk sees, yet the snapshot
/// restored at `I`, with the entries past `I` replayed on top, gives the source's state,
/// watermark and queue exactly.
#[test]
fn a_capture_walked_after_later_entries_restores_to_the_same_state() {
    let a = follower_site();
    let mut q = PendingQueue::default();
    let log = [
        hb(stream_id(1, 0), 0, 100),
        batch(0, [3, 0], "k1", "v1"),
        batch(1, [4, 7], "k2", "v2"),
        batch(2, [5, 0], "k3", "v3"),
        // Entries past I = 4:
        batch(3, [6, 0], "k1", "v1b"),
        hb(stream_id(0, 0), 4, 9),
        batch(5, [10, 0], "k4", "v4"),
        hb(stream_id(1, 0), 1, 200),
        batch(6, [11, 8], "k3", "v3b"),
    ];
    let i = 4;
    for (n, e) in log.iter().enumerate().take(i) {
        apply(&a, e, n as u64 + 1, &mut q);
    }
    assert_eq!(a.queued(), 2, "setup: k2 and k3 wait for VW[1] to cover 7");
    let pending: Vec<QueuedEntry> = q.iter().cloned().collect();
    let walk = testing::begin_capture(&a, &pending);
    // The group goes on while the capture waits for the snapshot thread.
    a.learn(1, 0, 8);
    for (n, e) in log.iter().enumerate().skip(i) {
        apply(&a, e, n as u64 + 1, &mut q);
    }
    assert_eq!(a.queued(), 0, "setup: the queue drained past I");
    assert_eq!(get(&a, "k3").as_deref(), Some(&b"v3b"[..]));
    let data = walk();

    let b = follower_site();
    let carried = testing::restore(&b, &data, i as u64).expect("restored");
    assert_eq!(
        carried, pending,
        "the queue at I comes back, not the one after"
    );
    let mut qb = PendingQueue::default();
    for e in carried {
        qb.push_back(e);
    }
    b.learn(1, 0, 8);
    for (n, e) in log.iter().enumerate().skip(i) {
        apply(&b, e, n as u64 + 1, &mut qb);
    }
    assert_eq!(
        (b.w(), b.queued()),
        (a.w(), 0),
        "watermark and queue as the source's"
    );
    assert_eq!(b.first_difference(&a), None);
    assert_eq!(get(&b, "k1").as_deref(), Some(&b"v1b"[..]));
}

/// Truncated, corrupted and foreign snapshots are refused with a typed error; the site keeps
/// its data and watermark.
#[test]
fn malformed_snapshots_are_refused_without_changing_state() {
    let a = follower_site();
    let mut q = PendingQueue::default();
    apply(&a, &hb(stream_id(1, 0), 0, 100), 1, &mut q);
    apply(&a, &batch(0, [3, 0], "k1", "new"), 2, &mut q);
    let good = testing::capture(&a, &[]);

    let b = follower_site();
    let mut q = PendingQueue::default();
    apply(&b, &hb(stream_id(1, 0), 0, 100), 1, &mut q);
    apply(&b, &batch(0, [1, 0], "k0", "old"), 2, &mut q);
    let before = (get(&b, "k0"), get(&b, "k1"), b.w());

    let truncated = &good[..good.len() / 2];
    assert!(matches!(
        testing::restore(&b, truncated, 2),
        Err(SnapshotError::Length { .. })
    ));
    let mut bad_crc = good.to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    assert!(matches!(
        testing::restore(&b, &bad_crc, 2),
        Err(SnapshotError::Crc { .. })
    ));
    let mut bad_version = good.to_vec();
    bad_version[4] = 99;
    assert!(matches!(
        testing::restore(&b, &bad_version, 2),
        Err(SnapshotError::Version(99))
    ));
    // A queue entry past the snapshot's index.
    let queued = testing::capture(
        &a,
        &[QueuedEntry {
            index: 9,
            entry: Bytes::from_static(b"x"),
        }],
    );
    assert!(matches!(
        testing::restore(&b, &queued, 2),
        Err(SnapshotError::Pending { .. })
    ));
    assert_eq!(
        (get(&b, "k0"), get(&b, "k1"), b.w()),
        before,
        "state unchanged"
    );
    assert_eq!(b.snapshots().0, 0);

    // The good one is taken, and replaces the store (k0 was not in it).
    testing::restore(&b, &good, 2).expect("restored");
    assert_eq!(get(&b, "k0"), None);
    assert_eq!(get(&b, "k1").as_deref(), Some(&b"new"[..]));
    assert!(b.first_difference(&a).is_none());
}

/// A snapshot of another deployment (other worker streams, another shard) or a damaged one
/// is refused by the check a group runs before it accepts a snapshot: at restore, after
/// the protocol took it, a refusal would stop the group.
#[test]
fn a_snapshot_of_another_deployment_is_refused_before_it_is_accepted() {
    let site = |workers, shard| {
        let cfg = SiteConfig {
            shards: 2,
            workers,
            tables: vec!["t".into()],
            ..SiteConfig::default()
        };
        common::test_site_with(common::TestGroup::new(Role::Follower), cfg, shard)
    };
    let b = follower_site();
    let good = testing::capture(&follower_site(), &[]);
    testing::check(&b, &good).expect("a snapshot of this deployment's shard passes");
    let other_streams = testing::capture(&site(2, 0), &[]);
    assert!(matches!(
        testing::check(&b, &other_streams),
        Err(SnapshotError::Streams)
    ));
    let other_shard = testing::capture(&site(1, 1), &[]);
    assert!(matches!(
        testing::check(&b, &other_shard),
        Err(SnapshotError::Shard { found: 1, .. })
    ));
    assert!(matches!(
        testing::check(&b, &good[..good.len() - 3]),
        Err(SnapshotError::Length { .. })
    ));
    // And restore refuses them too.
    assert!(matches!(
        testing::restore(&b, &other_streams, 5),
        Err(SnapshotError::Streams)
    ));
    testing::restore(&b, &good, 5).expect("restored");
}

/// Catch-up by snapshot with every group on Multi-Paxos.
mod paxos {
    use super::*;

    #[test]
    fn lagging_replica_caught_up_by_snapshot_has_every_key_and_can_lead() {
        lagging_caught_up(Protocol::Paxos);
    }

    #[test]
    fn follower_with_queued_pieces_caught_up_by_snapshot_ends_equal_to_its_leader() {
        queued_pieces_caught_up(Protocol::Paxos);
    }
}

/// Issue 13: with the default `compact_log_percent` a site compacts once the log since its
/// last snapshot holds about that snapshot's bytes: small entries over a large store do not
/// set off a capture of the whole store every `compact_after_entries` entries, while a log
/// that outgrows the store is compacted.
#[test]
fn the_log_is_compacted_once_it_outweighs_the_last_snapshot() {
    let cfg = ClusterConfig {
        compact_log_percent: None,
        ..config_on(Protocol::Raft, 1, COMPACT)
    };
    let c = Cluster::start(cfg).expect("cluster");
    let leader = Arc::clone(&c.sites[0][0]);
    let g = leader.group();
    // A store of 3,000 keys (about 300 KB), written in entries of 100 keys.
    load(&c, 0, None, 0..3_000, 0);
    assert!(
        eventually(Duration::from_secs(30), || g.snapshot_index() > 0),
        "no snapshot at all"
    );
    // Let a capture begun during the load finish.
    std::thread::sleep(Duration::from_millis(500));
    let before = g.snapshot_index();
    // 4 x COMPACT entries of one key each (about 30 KB): no capture of the store.
    for k in 0..4 * COMPACT {
        load(&c, 0, None, k..k + 1, 1);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        g.snapshot_index(),
        before,
        "compacted after {} small entries (applied {})",
        4 * COMPACT,
        g.applied_index()
    );
    // Rewriting the whole store twice over outweighs the snapshot: compacted.
    load(&c, 0, None, 0..3_000, 2);
    load(&c, 0, None, 0..3_000, 3);
    assert!(
        eventually(Duration::from_secs(30), || g.snapshot_index() > before),
        "never compacted: snapshot at {before}, applied {}",
        g.applied_index()
    );
    c.shutdown();
}
