//! Size limits (largest entry, most groups) and the bounded write queue (backpressure,
//! `try_write`, writes from `done` callbacks never blocking).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use mako_logstore::{
    Durability, GroupWrite, HardState, LogEntry, LogError, LogStore, LogStoreConfig, SnapshotMeta,
    WriteDone,
};

/// Generous bound for "this must happen": a deadlock fails the test instead of hanging it.
const DEADLOCK: Duration = Duration::from_secs(60);

fn entry_write(group: u32, index: u64, payload_len: usize) -> GroupWrite {
    GroupWrite {
        entries: vec![LogEntry::new(index, 1, Bytes::from(vec![7u8; payload_len]))],
        ..GroupWrite::new(group)
    }
}

/// A write with one entry and every optional part, the shape `max_entry_bytes` is about.
fn full_write(group: u32, index: u64, payload_len: usize) -> GroupWrite {
    GroupWrite {
        snapshot: Some(SnapshotMeta {
            index: index - 1,
            term: 1,
        }),
        hard_state: Some(HardState {
            term: 1,
            vote: 1,
            commit: index,
        }),
        compact_to: Some(index),
        ..entry_write(group, index, payload_len)
    }
}

#[test]
fn max_entry_always_fits_even_with_the_most_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogStoreConfig {
        segment_bytes: 64 << 10,
        preallocated_segments: 1,
        ..LogStoreConfig::new(dir.path())
    };
    let (log, _) = LogStore::open(cfg.clone()).expect("open");
    let max_entry = log.max_entry_bytes() as usize;
    let max_groups = log.max_groups();
    assert!(max_entry > 32 << 10 && max_entry < 64 << 10, "{max_entry}");
    assert_eq!(
        full_write(0, 2, max_entry).encoded_len() as u64,
        log.max_write_bytes()
    );
    // Every group the log accepts, each with a snapshot point: the largest checkpoint.
    for g in 0..max_groups as u32 {
        log.write_sync(vec![full_write(g, 1, 1)]).expect("group");
    }
    // One group more is refused, and the store goes on.
    match log.write_sync(vec![entry_write(max_groups as u32, 1, 1)]) {
        Err(LogError::TooManyGroups { groups, max }) => {
            assert_eq!((groups, max), (max_groups + 1, max_groups))
        }
        other => panic!("expected TooManyGroups, got {other:?}"),
    }
    // Entries of the largest size fit, including into fresh segments after a checkpoint.
    for i in 2..6u64 {
        log.write_sync(vec![full_write(0, i, max_entry)])
            .expect("largest entry");
    }
    assert!(log.stats().rollovers >= 3);
    match log.write_sync(vec![full_write(0, 6, max_entry + 1)]) {
        Err(LogError::TooLarge { size, max }) => {
            assert_eq!((size, max), (max + 1, log.max_write_bytes()))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    log.write_sync(vec![entry_write(0, 6, 10)]).expect("works");
    drop(log);
    let (_log, rec) = LogStore::open(cfg).expect("reopen");
    assert_eq!(rec.groups.len(), max_groups);
    let g0 = &rec.groups[&0];
    assert_eq!(g0.first_index, 5);
    let idx: Vec<u64> = g0.entries.iter().map(|e| e.index).collect();
    assert_eq!(idx, vec![5, 6]);
}

/// A `Memory` store with 64 KiB segments (its directory is never created).
fn memory_store() -> LogStore {
    let cfg = LogStoreConfig {
        durability: Durability::Memory,
        segment_bytes: 64 << 10,
        ..LogStoreConfig::new("/nonexistent/never-created")
    };
    LogStore::open(cfg).expect("open").0
}

#[test]
fn memory_mode_refuses_the_same_oversized_writes() {
    let log = memory_store();
    let max = log.max_entry_bytes() as usize;
    log.write_sync(vec![full_write(0, 2, max)]).expect("fits");
    assert!(matches!(
        log.write_sync(vec![full_write(0, 3, max + 1)]),
        Err(LogError::TooLarge { .. })
    ));
}

#[test]
fn memory_mode_completes_each_write_on_the_calling_thread() {
    let log = memory_store();
    let max = log.max_entry_bytes() as usize;
    let me = std::thread::current().id();
    let seen: std::sync::Arc<parking_lot::Mutex<Vec<(bool, bool)>>> = Default::default();
    for (i, size) in [(1, 10), (2, max + 1), (3, 10)] {
        let s = seen.clone();
        log.write(
            vec![full_write(0, i, size)],
            Box::new(move |r| {
                s.lock()
                    .push((std::thread::current().id() == me, r.is_ok()))
            }),
        );
        assert_eq!(
            seen.lock().len(),
            i as usize,
            "write {i} completed before returning"
        );
    }
    assert_eq!(
        *seen.lock(),
        [(true, true), (true, false), (true, true)],
        "in order, here, the oversized one refused"
    );
    log.shutdown();
    let seen2 = seen.clone();
    log.write(
        vec![full_write(0, 4, 10)],
        Box::new(move |r| {
            seen2
                .lock()
                .push((true, matches!(r, Err(LogError::Closed))))
        }),
    );
    assert_eq!(seen.lock().last(), Some(&(true, true)), "closed: refused");
}

/// A `done` callback that reports its result and then waits for `gate` (stalling the
/// writer thread, which runs callbacks).
fn gated(gate: Receiver<()>, results: Sender<(u64, bool)>, id: u64) -> WriteDone {
    Box::new(move |r| {
        let _ = results.send((id, r.is_ok()));
        let _ = gate.recv_timeout(DEADLOCK);
    })
}

fn reporting(results: Sender<(u64, bool)>, id: u64) -> WriteDone {
    Box::new(move |r| {
        let _ = results.send((id, r.is_ok()));
    })
}

#[test]
fn queue_is_bounded_try_write_is_busy_and_write_waits_for_room() {
    // (A `Memory` store queues nothing: each write completes on its caller's thread.)
    for durability in [Durability::Fsync, Durability::Buffered] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogStoreConfig {
            durability,
            segment_bytes: 1 << 20,
            max_queued_writes: 8,
            ..LogStoreConfig::new(dir.path())
        };
        let (log, _) = LogStore::open(cfg).expect("open");
        let log = Arc::new(log);
        let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
        let (res_tx, res_rx) = crossbeam_channel::unbounded();
        // Write 0 holds the writer thread in its callback.
        log.write(
            vec![entry_write(1, 1, 10)],
            gated(gate_rx, res_tx.clone(), 0),
        );
        assert_eq!(res_rx.recv_timeout(DEADLOCK), Ok((0, true)));
        // Now exactly `max_queued_writes` more fit; the next is Busy, handed back intact.
        let mut next = 1u64;
        for _ in 0..8 {
            log.try_write(
                vec![entry_write(1, next + 1, 10)],
                reporting(res_tx.clone(), next),
            )
            .expect("room in the queue");
            next += 1;
        }
        let busy = log
            .try_write(
                vec![entry_write(1, next + 1, 10)],
                reporting(res_tx.clone(), next),
            )
            .expect_err("queue is full");
        assert_eq!(busy.writes, vec![entry_write(1, next + 1, 10)]);
        // A blocking write from another thread waits for room, then goes through.
        let blocked = {
            let log = log.clone();
            let res_tx = res_tx.clone();
            std::thread::spawn(move || {
                log.write(
                    vec![entry_write(1, next + 2, 10)],
                    reporting(res_tx, next + 1),
                );
            })
        };
        // Nothing completed while the writer was held.
        assert!(res_rx.try_recv().is_err());
        gate_tx.send_timeout((), DEADLOCK).expect("release writer");
        blocked.join().expect("blocked writer returns");
        // The refused write is retried after room was made.
        log.write(busy.writes, busy.done);
        let mut got = Vec::new();
        for _ in 0..next + 1 {
            got.push(res_rx.recv_timeout(DEADLOCK).expect("completion"));
        }
        got.sort_unstable();
        let want: Vec<(u64, bool)> = (1..=next + 1).map(|i| (i, true)).collect();
        assert_eq!(got, want, "{durability}");
        log.shutdown();
    }
}

#[test]
fn byte_bound_admits_one_oversized_write_when_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogStoreConfig {
        segment_bytes: 1 << 20,
        max_queued_bytes: 4096,
        ..LogStoreConfig::new(dir.path())
    };
    let (log, _) = LogStore::open(cfg).expect("open");
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
    let (res_tx, res_rx) = crossbeam_channel::unbounded();
    log.write(
        vec![entry_write(1, 1, 10)],
        gated(gate_rx, res_tx.clone(), 0),
    );
    assert_eq!(res_rx.recv_timeout(DEADLOCK), Ok((0, true)));
    // Larger than the byte bound, but the queue is empty: accepted.
    log.try_write(vec![entry_write(1, 2, 8000)], reporting(res_tx.clone(), 1))
        .expect("alone in the queue");
    // Anything more waits for the byte bound.
    let busy = log
        .try_write(vec![entry_write(1, 3, 10)], reporting(res_tx.clone(), 2))
        .expect_err("byte bound reached");
    gate_tx.send_timeout((), DEADLOCK).expect("release writer");
    log.write(busy.writes, busy.done);
    assert_eq!(res_rx.recv_timeout(DEADLOCK), Ok((1, true)));
    assert_eq!(res_rx.recv_timeout(DEADLOCK), Ok((2, true)));
}

/// The writer thread cannot wait for room it would have to make itself: a `write` from a
/// `done` callback is queued even when the queue is full.
#[test]
fn write_from_a_callback_never_blocks_on_a_full_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogStoreConfig {
        segment_bytes: 1 << 20,
        max_queued_writes: 2,
        ..LogStoreConfig::new(dir.path())
    };
    let (log, _) = LogStore::open(cfg).expect("open");
    let log = Arc::new(log);
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(0);
    let (res_tx, res_rx) = crossbeam_channel::unbounded();
    let (inner_tx, inner_rx) = crossbeam_channel::unbounded();
    {
        let log2 = log.clone();
        let res_tx = res_tx.clone();
        log.write(
            vec![entry_write(1, 1, 10)],
            Box::new(move |r| {
                let _ = res_tx.send((0, r.is_ok()));
                // Wait until the queue is full, then write from here.
                let _ = go_rx.recv_timeout(DEADLOCK);
                log2.write(vec![entry_write(1, 4, 10)], reporting(res_tx, 3));
                let _ = inner_tx.send(());
            }),
        );
    }
    assert_eq!(res_rx.recv_timeout(DEADLOCK), Ok((0, true)));
    for i in 1..=2u64 {
        log.try_write(
            vec![entry_write(1, i + 1, 10)],
            reporting(res_tx.clone(), i),
        )
        .expect("room");
    }
    assert!(
        log.try_write(vec![entry_write(1, 9, 10)], reporting(res_tx.clone(), 9))
            .is_err()
    );
    go_tx.send_timeout((), DEADLOCK).expect("go");
    inner_rx
        .recv_timeout(DEADLOCK)
        .expect("the callback's write returned (no deadlock)");
    let mut got: Vec<(u64, bool)> = (0..3)
        .map(|_| res_rx.recv_timeout(DEADLOCK).expect("completion"))
        .collect();
    got.sort_unstable();
    assert_eq!(got, vec![(1, true), (2, true), (3, true)]);
}
