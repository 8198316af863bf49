//! The test-support hooks `LogStore::crash` (a simulated power loss: the writer stops, unsynced
//! bytes are discarded) and `LogStore::inject_io_failure` (the next flush fails).
//!
//! After a crash in `Fsync` mode a reopen recovers exactly the acknowledged writes; in
//! `Buffered` mode exactly what the last sync covered. Writes still queued or in flight
//! get `Crashed`, later ones `Closed`, always in submission order.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mako_logstore::{
    Durability, GroupWrite, HardState, LogEntry, LogError, LogModel, LogStore, LogStoreConfig,
};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::SmallRng};

/// What a write's `done` callback got.
type WriteResult = Result<(), LogError>;

const SEGMENT: u64 = 64 << 10;
const GROUPS: u32 = 3;

fn config(dir: &std::path::Path, durability: Durability) -> LogStoreConfig {
    LogStoreConfig {
        segment_bytes: SEGMENT,
        durability,
        ..LogStoreConfig::new(dir)
    }
}

/// Write number `n` (1-based): one entry for group `n % GROUPS`, a hard state, and now and
/// then a compaction (so old segments are reclaimed while the crash may come).
fn nth_write(n: u64, rng: &mut SmallRng) -> Vec<GroupWrite> {
    nth_write_with(n, rng, true)
}

/// [`nth_write`], with or without its compactions.
fn nth_write_with(n: u64, rng: &mut SmallRng, compact: bool) -> Vec<GroupWrite> {
    let group = (n % u64::from(GROUPS)) as u32;
    let index = n / u64::from(GROUPS) + 1;
    let len = rng.random_range(10..3000);
    let payload: Vec<u8> = (0..len).map(|k| (n as u8).wrapping_add(k as u8)).collect();
    vec![GroupWrite {
        entries: vec![LogEntry::new(index, 1, Bytes::from(payload))],
        hard_state: Some(HardState {
            term: 1,
            vote: 1,
            commit: index,
        }),
        compact_to: (compact && index % 16 == 0).then(|| index - 8),
        ..GroupWrite::new(group)
    }]
}

/// Submits writes from another thread while this one crashes the store after `delay`.
/// Returns the writes in submission order with their results.
fn write_and_crash(
    log: Arc<LogStore>,
    seed: u64,
    delay: Duration,
    compact: bool,
) -> Vec<(Vec<GroupWrite>, Result<(), LogError>)> {
    let results: Arc<Mutex<Vec<Option<WriteResult>>>> = Arc::default();
    let writes: Arc<Mutex<Vec<Vec<GroupWrite>>>> = Arc::default();
    let writer = {
        let (log, results, writes) = (log.clone(), results.clone(), writes.clone());
        std::thread::spawn(move || {
            let mut rng = SmallRng::seed_from_u64(seed);
            for n in 1..=20_000u64 {
                let w = nth_write_with(n, &mut rng, compact);
                let slot = {
                    let mut r = results.lock();
                    r.push(None);
                    r.len() - 1
                };
                writes.lock().push(w.clone());
                let res = results.clone();
                log.write(
                    w,
                    Box::new(move |r| {
                        res.lock()[slot] = Some(r);
                    }),
                );
                if matches!(results.lock()[slot], Some(Err(LogError::Closed))) {
                    break;
                }
            }
        })
    };
    std::thread::sleep(delay);
    log.crash();
    writer.join().expect("writer thread");
    let results = std::mem::take(&mut *results.lock());
    let writes = std::mem::take(&mut *writes.lock());
    writes
        .into_iter()
        .zip(results)
        .map(|(w, r)| (w, r.expect("every write completed once crash() returned")))
        .collect()
}

/// Checks the completion pattern: acknowledged prefix, then `Crashed`, then `Closed`.
/// Returns how many writes were acknowledged.
fn check_pattern(results: &[(Vec<GroupWrite>, Result<(), LogError>)]) -> usize {
    let acked = results.iter().take_while(|(_, r)| r.is_ok()).count();
    let mut seen_closed = false;
    for (k, (_, r)) in results.iter().enumerate().skip(acked) {
        match r {
            Err(LogError::Crashed) if !seen_closed => {}
            Err(LogError::Closed) => seen_closed = true,
            other => panic!("write {k} after the acknowledged prefix of {acked}: {other:?}"),
        }
    }
    acked
}

/// Fsync: whatever the moment of the crash, a reopen sees exactly the acknowledged writes.
#[test]
fn fsync_crash_recovers_exactly_the_acknowledged_writes() {
    for seed in 0..12u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), Durability::Fsync);
        let (log, _) = LogStore::open(cfg.clone()).expect("open");
        let log = Arc::new(log);
        let delay = Duration::from_millis(SmallRng::seed_from_u64(seed).random_range(0..60));
        let results = write_and_crash(log.clone(), seed, delay, true);
        let acked = check_pattern(&results);
        // The store is shut down now.
        assert!(matches!(
            log.write_sync(vec![GroupWrite::new(0)]),
            Err(LogError::Closed)
        ));
        drop(log);
        let mut model = LogModel::default();
        for (w, _) in &results[..acked] {
            model.apply(w);
        }
        let (_log, recovered) = LogStore::open(cfg).expect("reopen after crash");
        assert_eq!(
            recovered,
            model.recovered(),
            "seed {seed}: {acked} of {} writes acknowledged",
            results.len()
        );
    }
}

/// Buffered: the crash loses everything since the last sync. With no segment switch since
/// open nothing was synced, so nothing comes back, though every write was acknowledged.
#[test]
fn buffered_crash_loses_the_writes_since_the_last_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), Durability::Buffered);
    let mut rng = SmallRng::seed_from_u64(7);
    let (log, _) = LogStore::open(cfg.clone()).expect("open");
    for n in 1..=5 {
        log.write_sync(nth_write(n, &mut rng))
            .expect("acknowledged");
    }
    log.crash();
    drop(log);
    let (log, recovered) = LogStore::open(cfg.clone()).expect("reopen");
    assert!(recovered.groups.is_empty(), "{recovered:?}");

    // A segment switch syncs the segment it leaves: the writes in it survive, the one that
    // opened the new segment (and everything after) does not.
    let mut model = LogModel::default();
    let mut n = 100;
    let rolls = log.stats().rollovers;
    loop {
        let w = nth_write(n, &mut rng);
        n += 1;
        log.write_sync(w.clone()).expect("acknowledged");
        if log.stats().rollovers > rolls + 1 {
            break;
        }
        model.apply(&w);
    }
    for _ in 0..3 {
        log.write_sync(nth_write(n, &mut rng))
            .expect("acknowledged");
        n += 1;
    }
    log.crash();
    drop(log);
    let (_log, recovered) = LogStore::open(cfg).expect("reopen");
    assert!(!recovered.groups.is_empty());
    assert_eq!(recovered, model.recovered());
}

/// Buffered under load: what comes back is always a prefix of the submitted writes (an
/// acknowledged write may be lost, and a write synced by a segment switch just before the
/// crash may be back without having been acknowledged).
#[test]
fn buffered_crash_recovers_a_prefix_of_the_writes() {
    for seed in 0..6u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        // No compaction here: in `Buffered` mode a reclaimed segment may outlive the
        // unsynced compaction record that freed it (as after an OS crash).
        let cfg = config(dir.path(), Durability::Buffered);
        let (log, _) = LogStore::open(cfg.clone()).expect("open");
        let log = Arc::new(log);
        let delay = Duration::from_millis(SmallRng::seed_from_u64(seed).random_range(0..40));
        let results = write_and_crash(log.clone(), seed + 100, delay, false);
        check_pattern(&results);
        drop(log);
        let (_log, recovered) = LogStore::open(cfg).expect("reopen after crash");
        let mut model = LogModel::default();
        let mut found = recovered.groups.is_empty();
        for (w, _) in &results {
            if found {
                break;
            }
            model.apply(w);
            found = model.recovered() == recovered;
        }
        assert!(
            found,
            "seed {seed}: recovered state is no prefix of the writes: {:?}",
            recovered
                .groups
                .iter()
                .map(|(g, s)| (*g, s.first_index, s.entries.len(), s.hard_state))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn crash_is_idempotent_and_a_no_op_after_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), Durability::Fsync);
    let mut rng = SmallRng::seed_from_u64(1);
    let (log, _) = LogStore::open(cfg.clone()).expect("open");
    log.write_sync(nth_write(1, &mut rng)).expect("write");
    log.shutdown();
    log.crash();
    log.crash();
    drop(log);
    let (log, recovered) = LogStore::open(cfg.clone()).expect("reopen");
    assert_eq!(recovered.groups.len(), 1);
    log.crash();
    log.crash();
    assert!(matches!(
        log.write_sync(nth_write(2, &mut rng)),
        Err(LogError::Closed)
    ));
}

/// Memory mode has nothing to discard; queued writes still end as `Crashed` or `Closed`.
#[test]
fn memory_mode_crash_stops_the_store() {
    let cfg = LogStoreConfig {
        durability: Durability::Memory,
        ..LogStoreConfig::new("")
    };
    let (log, _) = LogStore::open(cfg).expect("open");
    let log = Arc::new(log);
    let results = write_and_crash(log, 3, Duration::from_millis(2), true);
    check_pattern(&results);
}

/// An injected I/O failure fails the flush it hits and stops the store (fail-stop); the
/// failed write never reaches the disk.
#[test]
fn an_injected_io_failure_stops_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), Durability::Fsync);
    let mut rng = SmallRng::seed_from_u64(2);
    let (log, _) = LogStore::open(cfg.clone()).expect("open");
    let first = nth_write(1, &mut rng);
    log.write_sync(first.clone()).expect("write");
    log.inject_io_failure();
    assert!(matches!(
        log.write_sync(nth_write(2, &mut rng)),
        Err(LogError::Io(_))
    ));
    assert!(matches!(
        log.write_sync(nth_write(3, &mut rng)),
        Err(LogError::Failed(_))
    ));
    drop(log);
    let (_log, recovered) = LogStore::open(cfg).expect("reopen");
    let mut model = LogModel::default();
    model.apply(&first);
    assert_eq!(recovered, model.recovered());
}

/// A write whose encoding is empty does not consume the injected failure: it hits the next
/// flush that has bytes.
#[test]
fn the_injected_failure_waits_for_a_flush_with_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), Durability::Fsync);
    let mut rng = SmallRng::seed_from_u64(3);
    let (log, _) = LogStore::open(cfg).expect("open");
    log.inject_io_failure();
    log.write_sync(vec![GroupWrite::new(0)])
        .expect("an empty write does not flush");
    assert!(matches!(
        log.write_sync(nth_write(1, &mut rng)),
        Err(LogError::Io(_))
    ));
}
