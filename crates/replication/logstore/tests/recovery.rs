//! Integration tests: round trips, Raft overwrite, torn tails, garbage, foreign files,
//! rollover and recycling, group commit, memory mode.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use mako_logstore::{
    Durability, GroupState, GroupWrite, HardState, LogEntry, LogError, LogStore, LogStoreConfig,
    SnapshotMeta,
};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::SmallRng};

fn cfg(dir: &Path, segment_bytes: u64) -> LogStoreConfig {
    LogStoreConfig {
        segment_bytes,
        preallocated_segments: 2,
        ..LogStoreConfig::new(dir)
    }
}

fn entries(first: u64, n: u64, term: u64, tag: &str) -> Vec<LogEntry> {
    (first..first + n)
        .map(|i| LogEntry::new(i, term, Bytes::from(format!("{tag}-{i}-t{term}"))))
        .collect()
}

fn put(group: u32, first: u64, n: u64, term: u64) -> GroupWrite {
    GroupWrite {
        entries: entries(first, n, term, &format!("g{group}")),
        ..GroupWrite::new(group)
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|d| d.expect("dirent").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// The file holding the newest data and the offset just past its last non-zero byte.
fn data_end(dir: &Path) -> (PathBuf, usize) {
    let mut best = None;
    for p in segment_files(dir) {
        let data = fs::read(&p).expect("read");
        if data.iter().take(32).all(|&b| b == 0) {
            continue; // spare
        }
        let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        best = Some((p, end));
    }
    best.expect("a segment with data")
}

#[test]
fn round_trip_several_groups_with_overwrite_snapshot_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(dir.path(), 1 << 20);
    {
        let (log, rec) = LogStore::open(c.clone()).expect("open");
        assert!(rec.groups.is_empty());
        log.write_sync(vec![put(1, 1, 10, 1), put(2, 1, 5, 1)])
            .expect("write");
        log.write_sync(vec![GroupWrite {
            hard_state: Some(HardState {
                term: 1,
                vote: 3,
                commit: 4,
            }),
            ..put(1, 11, 2, 1)
        }])
        .expect("write");
        // Raft overwrite: index 8 of group 1 rewritten in term 2 drops 8..=12.
        log.write_sync(vec![GroupWrite {
            hard_state: Some(HardState {
                term: 2,
                vote: 1,
                commit: 7,
            }),
            ..put(1, 8, 2, 2)
        }])
        .expect("write");
        // Group 2 installs a snapshot at 3; group 3 writes only a hard state.
        log.write_sync(vec![
            // Installing a snapshot replaces group 2's log; entries of the same write follow.
            GroupWrite {
                snapshot: Some(SnapshotMeta { index: 3, term: 1 }),
                ..put(2, 4, 3, 2)
            },
            GroupWrite {
                hard_state: Some(HardState {
                    term: 9,
                    vote: 9,
                    commit: 0,
                }),
                ..GroupWrite::new(3)
            },
        ])
        .expect("write");
        log.write_sync(vec![GroupWrite {
            compact_to: Some(5),
            ..GroupWrite::new(1)
        }])
        .expect("write");
        log.shutdown();
        log.shutdown(); // idempotent
        assert!(matches!(
            log.write_sync(vec![put(1, 10, 1, 2)]),
            Err(LogError::Closed)
        ));
    }
    let (_log, rec) = LogStore::open(c).expect("reopen");
    assert_eq!(rec.groups.len(), 3);
    let g1 = &rec.groups[&1];
    assert_eq!(
        g1.hard_state,
        HardState {
            term: 2,
            vote: 1,
            commit: 7
        }
    );
    assert_eq!(g1.first_index, 5);
    let mut want = entries(5, 3, 1, "g1");
    want.extend(entries(8, 2, 2, "g1"));
    assert_eq!(g1.entries, want);
    let g2 = &rec.groups[&2];
    assert_eq!(g2.snapshot, Some(SnapshotMeta { index: 3, term: 1 }));
    assert_eq!(g2.first_index, 4);
    assert_eq!(g2.entries, entries(4, 3, 2, "g2"));
    assert_eq!(
        rec.groups[&3],
        GroupState {
            hard_state: HardState {
                term: 9,
                vote: 9,
                commit: 0
            },
            ..Default::default()
        }
    );
}

#[test]
fn torn_tail_is_cut_and_writing_continues() {
    for truncate in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(dir.path(), 256 << 10);
        {
            let (log, _) = LogStore::open(c.clone()).expect("open");
            for i in 0..20u64 {
                log.write_sync(vec![put(7, i + 1, 1, 1)]).expect("write");
            }
        }
        // Damage the last record: flip its last byte, or cut the file inside it.
        let (path, end) = data_end(dir.path());
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open seg");
        if truncate {
            f.set_len(end as u64 - 3).expect("truncate");
        } else {
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, end as u64 - 1).expect("read");
            f.write_all_at(&[b[0] ^ 0xff], end as u64 - 1)
                .expect("flip");
        }
        drop(f);
        {
            let (log, rec) = LogStore::open(c.clone()).expect("reopen after tear");
            assert_eq!(
                rec.groups[&7].entries,
                entries(1, 19, 1, "g7"),
                "truncate={truncate}"
            );
            // Entry 20 is gone; new writes continue after the last good record.
            log.write_sync(vec![put(7, 20, 3, 2)])
                .expect("write after recovery");
        }
        let (_log, rec) = LogStore::open(c).expect("reopen again");
        let mut want = entries(1, 19, 1, "g7");
        want.extend(entries(20, 3, 2, "g7"));
        assert_eq!(rec.groups[&7].entries, want, "truncate={truncate}");
    }
}

#[test]
fn torn_multi_record_write_is_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(dir.path(), 256 << 10);
    {
        let (log, _) = LogStore::open(c.clone()).expect("open");
        log.write_sync(vec![put(1, 1, 2, 1)]).expect("write");
        // One write touching two groups plus a hard state: four records.
        log.write_sync(vec![
            GroupWrite {
                hard_state: Some(HardState {
                    term: 5,
                    vote: 5,
                    commit: 5,
                }),
                ..put(1, 3, 2, 1)
            },
            put(2, 1, 2, 1),
        ])
        .expect("write");
    }
    // Cut into the last record only: the earlier records of that write must not apply.
    let (path, end) = data_end(dir.path());
    OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .write_all_at(&[0xee], end as u64 - 1)
        .expect("corrupt");
    let (_log, rec) = LogStore::open(c).expect("reopen");
    assert_eq!(rec.groups.len(), 1);
    assert_eq!(rec.groups[&1].entries, entries(1, 2, 1, "g1"));
    assert_eq!(rec.groups[&1].hard_state, HardState::default());
}

#[test]
fn random_garbage_stops_recovery_without_panic() {
    let mut rng = SmallRng::seed_from_u64(7);
    for round in 0..12 {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(dir.path(), 64 << 10);
        let mut written = Vec::new();
        {
            let (log, _) = LogStore::open(c.clone()).expect("open");
            for i in 1..=40u64 {
                log.write_sync(vec![put(0, i, 1, 1)]).expect("write");
                written.extend(entries(i, 1, 1, "g0"));
            }
        }
        let (path, end) = data_end(dir.path());
        let at = rng.random_range(32..end) as u64;
        let len = rng.random_range(1..200usize);
        let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .write_all_at(&junk, at)
            .expect("garbage");
        match LogStore::open(c.clone()) {
            Ok((log, rec)) => {
                let got = rec
                    .groups
                    .get(&0)
                    .map(|g| g.entries.clone())
                    .unwrap_or_default();
                assert!(got.len() < written.len() || junk.iter().all(|&b| b == 0));
                assert_eq!(got[..], written[..got.len()], "round {round}: not a prefix");
                // And the store keeps working after it.
                let next = got.len() as u64 + 1;
                log.write_sync(vec![put(0, next, 1, 3)]).expect("write");
                drop(log);
                let (_l, rec2) = LogStore::open(c).expect("reopen");
                assert_eq!(rec2.groups[&0].entries.len(), got.len() + 1);
            }
            // A checksummed-but-malformed record is a typed error (essentially impossible
            // with random junk, but allowed).
            Err(LogError::Corrupt { .. }) => {}
            Err(e) => panic!("round {round}: unexpected error {e}"),
        }
    }
}

#[test]
fn foreign_files_and_bad_headers_are_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(dir.path(), 64 << 10);
    // Unrelated files are left alone.
    fs::write(dir.path().join("README.txt"), b"hello").expect("write");
    {
        let (log, _) = LogStore::open(c.clone()).expect("open");
        log.write_sync(vec![put(1, 1, 1, 1)]).expect("write");
    }
    // A foreign file named like a segment.
    let foreign = dir.path().join("00000000000000ff.wal");
    fs::write(
        &foreign,
        b"this is definitely not a mako-logstore segment file",
    )
    .expect("write");
    assert!(matches!(
        LogStore::open(c.clone()),
        Err(LogError::BadSegment { .. })
    ));
    fs::remove_file(&foreign).expect("rm");
    // A badly named *.wal file.
    let odd = dir.path().join("notes.wal");
    fs::write(&odd, b"x").expect("write");
    assert!(matches!(
        LogStore::open(c.clone()),
        Err(LogError::BadSegment { .. })
    ));
    fs::remove_file(&odd).expect("rm");
    // A damaged header of the real segment.
    let (seg, _) = data_end(dir.path());
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .write_all_at(b"XX", 0)
        .expect("damage");
    match LogStore::open(c.clone()) {
        Err(LogError::BadSegment { path, .. }) => assert_eq!(path, seg),
        other => panic!("expected BadSegment, got {other:?}"),
    }
    // Unsupported format version (with a valid checksum).
    let mut h = mako_logstore::format::encode_header(1);
    h[8] = 99;
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .write_all_at(&h, 0)
        .expect("write header");
    let err = LogStore::open(c).expect_err("version");
    assert!(err.to_string().contains("version"), "{err}");
}

#[test]
fn rollover_and_recycling_keep_the_segment_count_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = 64u64 << 10;
    let c = LogStoreConfig {
        durability: Durability::Buffered,
        ..cfg(dir.path(), seg)
    };
    let payload = Bytes::from(vec![0xabu8; 1000]);
    let mut max_files = 0;
    {
        let (log, _) = LogStore::open(c.clone()).expect("open");
        // ~3 MB through 64 KiB segments: ~48 segments' worth, three groups.
        for i in 1..=1000u64 {
            let writes = (0..3u32)
                .map(|g| GroupWrite {
                    entries: vec![LogEntry::new(i, 1, payload.clone())],
                    hard_state: Some(HardState {
                        term: 1,
                        vote: 1,
                        commit: i,
                    }),
                    compact_to: i.checked_sub(20),
                    ..GroupWrite::new(g)
                })
                .collect();
            log.write_sync(writes).expect("write");
            if i % 50 == 0 {
                max_files = max_files.max(segment_files(dir.path()).len());
            }
        }
        let st = log.stats();
        assert!(st.rollovers >= 40, "{st:?}");
        assert!(st.segments_recycled >= 30, "{st:?}");
        assert!(st.live_segments <= 3, "{st:?}");
        max_files = max_files.max(segment_files(dir.path()).len());
    }
    assert!(max_files <= 6, "segment files grew to {max_files}");
    let (_log, rec) = LogStore::open(c).expect("reopen");
    for g in 0..3u32 {
        let gs = &rec.groups[&g];
        assert_eq!(gs.first_index, 980);
        assert_eq!(gs.hard_state.commit, 1000);
        let idx: Vec<u64> = gs.entries.iter().map(|e| e.index).collect();
        assert_eq!(idx, (980..=1000).collect::<Vec<_>>());
    }
}

#[test]
fn group_commit_many_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = LogStore::open(cfg(dir.path(), 4 << 20)).expect("open");
    let log = Arc::new(log);
    let threads: Vec<_> = (0..8u32)
        .map(|g| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 1..=40u64 {
                    log.write_sync(vec![put(g, i, 1, 1)]).expect("write");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("join");
    }
    let st = log.stats();
    assert_eq!(st.writes, 320);
    assert!(st.syncs < st.writes, "no group commit: {st:?}");
    log.shutdown();
    let (_log, rec) = LogStore::open(cfg(dir.path(), 4 << 20)).expect("reopen");
    for g in 0..8u32 {
        assert_eq!(rec.groups[&g].entries, entries(1, 40, 1, &format!("g{g}")));
    }
}

#[test]
fn done_callbacks_run_in_submission_order() {
    for durability in [Durability::Fsync, Durability::Buffered, Durability::Memory] {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = LogStoreConfig {
            durability,
            ..cfg(dir.path(), 1 << 20)
        };
        let (log, _) = LogStore::open(c).expect("open");
        let order = Arc::new(Mutex::new(Vec::new()));
        let n = 500usize;
        for i in 0..n {
            let order = order.clone();
            log.write(
                vec![put(1, i as u64 + 1, 1, 1)],
                Box::new(move |r| {
                    r.expect("durable");
                    order.lock().push(i);
                }),
            );
        }
        log.shutdown();
        let order = order.lock();
        assert_eq!(*order, (0..n).collect::<Vec<_>>(), "{durability}");
        let st = log.stats();
        assert_eq!(st.writes, n as u64);
        if durability != Durability::Memory {
            // The writer batches what queued while it wrote (a `Memory` store completes
            // each write on its caller's thread).
            assert!(st.batches < n as u64, "{durability}: {st:?}");
        }
        if durability == Durability::Fsync {
            assert!(st.syncs < n as u64, "{st:?}");
        }
    }
}

#[test]
fn invalid_and_oversized_writes_fail_in_order_without_harm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(dir.path(), 64 << 10);
    let (log, _) = LogStore::open(c.clone()).expect("open");
    let gap = GroupWrite {
        entries: vec![
            LogEntry::new(1, 1, Bytes::new()),
            LogEntry::new(3, 1, Bytes::new()),
        ],
        ..GroupWrite::new(1)
    };
    assert!(matches!(
        log.write_sync(vec![gap]),
        Err(LogError::InvalidWrite(_))
    ));
    let huge = GroupWrite {
        entries: vec![LogEntry::new(1, 1, Bytes::from(vec![1u8; 70 << 10]))],
        ..GroupWrite::new(1)
    };
    assert!(matches!(
        log.write_sync(vec![huge]),
        Err(LogError::TooLarge { .. })
    ));
    log.write_sync(vec![put(1, 1, 1, 1)]).expect("still works");
    log.write_sync(vec![]).expect("empty write");
    drop(log);
    let (_log, rec) = LogStore::open(c).expect("reopen");
    assert_eq!(rec.groups[&1].entries, entries(1, 1, 1, "g1"));
}

#[test]
fn memory_mode_creates_no_files() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("never");
    let c = LogStoreConfig {
        durability: Durability::Memory,
        ..cfg(&dir, 1 << 20)
    };
    let (log, rec) = LogStore::open(c.clone()).expect("open");
    assert!(rec.groups.is_empty());
    let fired = Arc::new(AtomicUsize::new(0));
    for i in 1..=100u64 {
        let fired = fired.clone();
        log.write(
            vec![put(1, i, 1, 1)],
            Box::new(move |r| {
                r.expect("ok");
                fired.fetch_add(1, Ordering::SeqCst);
            }),
        );
    }
    log.write_sync(vec![put(2, 1, 1, 1)]).expect("sync write");
    log.shutdown();
    assert_eq!(fired.load(Ordering::SeqCst), 100);
    assert_eq!(log.stats().syncs, 0);
    assert!(!dir.exists());
    let (_log, rec) = LogStore::open(c).expect("reopen");
    assert!(rec.groups.is_empty());
    assert!(!dir.exists());
}

#[test]
fn write_sync_inside_a_callback_is_refused_not_deadlocked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = LogStore::open(cfg(dir.path(), 1 << 20)).expect("open");
    let log = Arc::new(log);
    let (tx, rx) = crossbeam_channel::bounded(1);
    let inner = log.clone();
    log.write(
        vec![put(1, 1, 1, 1)],
        Box::new(move |_| {
            let r = inner.write_sync(vec![put(1, 2, 1, 1)]);
            let _ = tx.send(matches!(r, Err(LogError::Reentrant)));
        }),
    );
    assert!(rx.recv().expect("callback ran"));
}

#[test]
fn damage_in_an_older_segment_refuses_to_open_until_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(dir.path(), 8 << 10);
    let payload = Bytes::from(vec![7u8; 300]);
    let all: Vec<LogEntry> = (1..=100u64)
        .map(|i| LogEntry::new(i, 1, payload.clone()))
        .collect();
    {
        let (log, _) = LogStore::open(c.clone()).expect("open");
        for e in &all {
            log.write_sync(vec![GroupWrite {
                entries: vec![e.clone()],
                ..GroupWrite::new(4)
            }])
            .expect("write");
        }
        assert!(log.stats().live_segments >= 4);
    }
    // Flip a byte in the middle of the oldest segment: acknowledged data, not a torn write.
    let oldest = segment_files(dir.path())
        .into_iter()
        .find(|p| fs::read(p).expect("read")[..8] == *b"MAKOWAL\0")
        .expect("a segment");
    let before: Vec<(PathBuf, Vec<u8>)> = segment_files(dir.path())
        .into_iter()
        .map(|p| {
            let d = fs::read(&p).expect("read");
            (p, d)
        })
        .collect();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&oldest)
        .expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 4000).expect("read");
    f.write_all_at(&[b[0] ^ 0x40], 4000).expect("flip");
    drop(f);
    // Open refuses, naming the file and the offset of the damaged record, and changes nothing.
    match LogStore::open(c.clone()) {
        Err(LogError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, oldest);
            assert!(offset > 32 && offset <= 4000, "offset {offset}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    for (p, d) in &before {
        let now = fs::read(p).expect("segment still there");
        if *p == oldest {
            assert_eq!(now.len(), d.len());
        } else {
            assert_eq!(&now, d, "{} changed by a refused open", p.display());
        }
    }
    // A dry run reports the cut and changes nothing; the repair truncates there.
    let checked = LogStore::check(&c).expect("check");
    let cut = checked.cut.clone().expect("a cut");
    assert_eq!(cut.path, oldest);
    assert!(!checked.segments_removed.is_empty() && checked.records_dropped > 0);
    assert!(matches!(
        LogStore::open(c.clone()),
        Err(LogError::Corrupt { .. })
    ));
    let report = LogStore::repair(&c).expect("repair");
    assert_eq!(report, checked);
    assert!(LogStore::check(&c).expect("check again").is_clean());
    let kept = {
        let (log, rec) = LogStore::open(c.clone()).expect("reopen after repair");
        let got = rec.groups[&4].entries.clone();
        assert!(!got.is_empty() && got.len() < 20, "kept {}", got.len());
        assert_eq!(got[..], all[..got.len()]);
        assert_eq!(log.stats().live_segments, 1);
        // Continue the log in a different term; the removed later segments never return.
        let next = got.len() as u64 + 1;
        log.write_sync(vec![GroupWrite {
            entries: (next..next + 10)
                .map(|i| LogEntry::new(i, 2, payload.clone()))
                .collect(),
            ..GroupWrite::new(4)
        }])
        .expect("write");
        got.len()
    };
    let (_log, rec) = LogStore::open(c).expect("reopen again");
    let got = &rec.groups[&4].entries;
    assert_eq!(got.len(), kept + 10);
    assert!(got[kept..].iter().all(|e| e.term == 2));
    assert_eq!(got[..kept], all[..kept]);
}

#[test]
fn leftovers_of_interrupted_recycling_are_cleaned_and_gaps_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(dir.path(), 64 << 10);
    {
        let (log, _) = LogStore::open(c.clone()).expect("open");
        log.write_sync(vec![put(1, 1, 3, 1)]).expect("write");
    }
    // A retired segment (header zeroed, stale body) and an unfinished new spare.
    let mut retired = vec![0u8; 64 << 10];
    retired[32..64].fill(0x77);
    let retired_path = dir.path().join("00000000000000aa.wal");
    fs::write(&retired_path, &retired).expect("write");
    let tmp_path = dir.path().join("0000000000000077.wal.tmp");
    fs::write(&tmp_path, b"partial").expect("write");
    {
        let (_log, rec) = LogStore::open(c.clone()).expect("open with leftovers");
        assert_eq!(rec.groups[&1].entries, entries(1, 3, 1, "g1"));
        assert!(!retired_path.exists() && !tmp_path.exists());
    }
    // A valid segment far beyond the others leaves a hole in the sequence.
    let far = dir
        .path()
        .join(mako_logstore::format::segment_file_name(50));
    let mut seg = vec![0u8; 64 << 10];
    seg[..32].copy_from_slice(&mako_logstore::format::encode_header(50));
    fs::write(&far, &seg).expect("write");
    assert!(matches!(LogStore::open(c), Err(LogError::Corrupt { .. })));
}

/// An in-place write below later entries whose earlier neighbours sit in a segment that
/// compaction then reclaims: recovery replays the write without those neighbours and must
/// still keep the later entries (a CI model-test run lost them).
#[test]
fn in_place_write_keeps_later_entries_after_their_neighbours_segment_is_reclaimed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = LogStoreConfig {
        durability: Durability::Buffered,
        segment_bytes: 4096,
        preallocated_segments: 1,
        ..LogStoreConfig::new(dir.path())
    };
    let big = |first: u64, n: u64| GroupWrite {
        entries: (first..first + n)
            .map(|i| LogEntry::new(i, 1, Bytes::from(vec![i as u8; 1400])))
            .collect(),
        ..GroupWrite::new(0)
    };
    let expect: Vec<u64>;
    {
        let (log, _) = LogStore::open(c.clone()).expect("open");
        // Two 1.4 KB entries per 4 KB segment: 1-2, 3-4 and 5-6 land in three segments.
        for first in [1, 3, 5] {
            log.write_sync(vec![big(first, 2)]).expect("write");
        }
        // Entry 3 rewritten in place (its successor 4 lives in an older segment), then
        // compaction to 5 makes the segments of 1-4 reclaimable.
        log.write_sync(vec![GroupWrite {
            entries: vec![LogEntry::new(3, 2, Bytes::from_static(b"three"))],
            keep_later: true,
            ..GroupWrite::new(0)
        }])
        .expect("in-place write");
        log.write_sync(vec![GroupWrite {
            compact_to: Some(5),
            ..GroupWrite::new(0)
        }])
        .expect("compact");
        // More writes roll segments so the reclaimed ones leave the directory.
        for first in [7, 9, 11] {
            log.write_sync(vec![big(first, 2)]).expect("write");
        }
        expect = (5..=12).collect();
    }
    let (_log, rec) = LogStore::open(c).expect("reopen");
    let g = &rec.groups[&0];
    assert_eq!(g.first_index, 5);
    assert_eq!(
        g.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        expect,
        "every entry at or above the first needed index survives"
    );
}
