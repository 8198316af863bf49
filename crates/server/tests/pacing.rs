//! Latency pacing of the leader's commit log: a client committing while the oldest entry in
//! flight is older than the pace target waits until it commits; with the log keeping up it
//! does not wait at all.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mako_commitlog::{BatchConfig, Entry, WriteRef};
use mako_replication::Role;
use mako_server::streams::StreamLog;

use common::TestGroup;

/// A log with one stream, open, over a group that records submissions (and commits nothing
/// by itself).
fn log() -> (Arc<StreamLog>, Arc<TestGroup>) {
    let group = TestGroup::new(Role::Leader);
    let log = Arc::new(StreamLog::new(0, &[0], &BatchConfig::default()));
    log.set_group(group.clone());
    log.open(0, &[]);
    (log, group)
}

/// Logs one piece at `ts` (its entry is submitted at once: nothing else is in flight).
fn piece(log: &StreamLog, ts: u64) {
    let t = log.reserve(0, 0, || ts).expect("open stream");
    let key = t.to_be_bytes();
    let w = WriteRef {
        table: 1,
        key: &key,
        value: Some(b"v"),
    };
    assert!(log.fulfil(0, 0, &[t], [w], || ()));
}

/// Commits every submitted entry from the `done`th on, as the leader's apply callback does.
fn commit(log: &StreamLog, group: &TestGroup, done: &mut usize) {
    let entries: Vec<bytes::Bytes> = group.submitted.lock()[*done..].to_vec();
    for e in &entries {
        log.committed_one(e.len(), Entry::decode(e).ok().as_ref());
    }
    *done += entries.len();
}

#[test]
fn a_commit_waits_while_the_oldest_entry_in_flight_is_too_old() {
    let (log, group) = log();
    let mut done = 0;
    // A first entry commits at once: the log's uncongested latency is tiny, the target
    // is its floor.
    piece(&log, 1);
    commit(&log, &group, &mut done);
    // Nothing in flight: no wait.
    let t = Instant::now();
    log.throttle();
    assert!(t.elapsed() < Duration::from_millis(50));
    piece(&log, 2);
    assert_eq!(
        group.submitted.lock().len(),
        2,
        "the second entry is in flight"
    );
    // Too old: a client waits until it commits.
    std::thread::sleep(Duration::from_millis(20));
    let returned = Arc::new(AtomicBool::new(false));
    let client = {
        let (log, returned) = (Arc::clone(&log), Arc::clone(&returned));
        std::thread::spawn(move || {
            log.throttle();
            returned.store(true, Ordering::Release);
        })
    };
    std::thread::sleep(Duration::from_millis(60));
    assert!(
        !returned.load(Ordering::Acquire),
        "a client committed while the log was 80 ms behind"
    );
    let t = Instant::now();
    commit(&log, &group, &mut done);
    client.join().expect("client");
    assert!(returned.load(Ordering::Acquire));
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "the commit woke the waiting client late: {:?}",
        t.elapsed()
    );
}

#[test]
fn a_log_that_never_commits_paces_for_a_bounded_time_only() {
    let (log, group) = log();
    piece(&log, 1);
    std::thread::sleep(Duration::from_millis(20));
    // Nothing will commit (say, the entry was lost in a leader change and never counted):
    // the wait ends after the reset period, not never.
    let t = Instant::now();
    log.throttle();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_secs(2),
        "waited {waited:?}"
    );
    // After the reset the log is not behind any more.
    let t = Instant::now();
    log.throttle();
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(group.submitted.lock().len(), 1);
}
