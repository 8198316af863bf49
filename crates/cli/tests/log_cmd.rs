//! `mako log check|repair` on real log directories.

use mako_logstore::{Durability, GroupWrite, LogEntry, LogStore, LogStoreConfig};

mod common;
use common::mako;

#[test]
fn check_reports_an_intact_log_and_refuses_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogStoreConfig {
        durability: Durability::Fsync,
        segment_bytes: 1 << 20,
        ..LogStoreConfig::new(dir.path())
    };
    let (log, _) = LogStore::open(cfg).unwrap();
    log.write_sync(vec![GroupWrite {
        entries: vec![LogEntry::new(1, 1, &b"a"[..])],
        ..GroupWrite::new(0)
    }])
    .unwrap();
    log.shutdown();
    let out = mako(&["log", "check", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("log intact"));
    let out = mako(&["log", "check", "--dir", "/nonexistent/mako-log"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn check_finds_damage_in_a_sealed_segment_and_repair_cuts_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogStoreConfig {
        durability: Durability::Fsync,
        segment_bytes: 64 << 10,
        ..LogStoreConfig::new(dir.path())
    };
    let (log, _) = LogStore::open(cfg.clone()).unwrap();
    // Enough writes to fill several segments.
    for i in 1..=200u64 {
        log.write_sync(vec![GroupWrite {
            entries: vec![LogEntry::new(i, 1, vec![i as u8; 1000])],
            ..GroupWrite::new(0)
        }])
        .unwrap();
    }
    log.shutdown();
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "{segs:?}");
    // Flip a byte inside the first record of the oldest segment.
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[32 + 20] ^= 0xff;
    std::fs::write(&segs[0], &bytes).unwrap();
    assert!(LogStore::open(cfg.clone()).is_err(), "open refuses");
    let d = dir.path().to_str().unwrap();
    let out = mako(&["log", "check", "--dir", d]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("first damage"));
    let out = mako(&["log", "repair", "--dir", d]);
    assert!(out.status.success(), "{out:?}");
    assert!(LogStore::open(cfg).is_ok(), "repaired log opens");
}
