//! Group commit in the leader's commit log, attacked with concurrency: client threads reserve,
//! fulfil and cancel pieces on several streams while an applier commits what was submitted
//! (which submits the batches gathered meanwhile and heartbeats idle streams) and a ticker
//! runs. Whatever the interleaving, each stream's entries must keep the `W_s` rule: a piece
//! is logged above every earlier heartbeat and piece of its stream, and every fulfilled
//! piece is logged exactly once.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mako_commitlog::{BatchConfig, Entry, WriteRef};
use mako_replication::Role;
use mako_server::streams::StreamLog;
use parking_lot::Mutex;
use rand::Rng;

use common::TestGroup;

const STREAMS: [u32; 3] = [0, 1, 2];

/// The shard clock: every allocation above every earlier one (as `c_s = max(c_s, dep) + 1`).
fn next(clock: &AtomicU64) -> u64 {
    clock.fetch_add(1, Ordering::AcqRel) + 1
}

#[test]
fn heartbeats_of_idle_streams_never_pass_a_later_piece_under_concurrency() {
    for round in 0..4 {
        one_round(round);
    }
}

fn one_round(round: u32) {
    let group = TestGroup::new(Role::Leader);
    let batch = BatchConfig {
        batch_size: 8,
        linger: Duration::from_millis(2),
        ..BatchConfig::default()
    };
    let log = Arc::new(StreamLog::new(0, &STREAMS, &batch));
    log.set_group(group.clone());
    log.open(0, &[]);
    let clock = Arc::new(AtomicU64::new(0));
    let fulfilled: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    // The applier: commits submitted entries in order, as the leader's apply callback does.
    let applier = {
        let (log, group, stop) = (Arc::clone(&log), group.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut done = 0;
            loop {
                let batch: Vec<bytes::Bytes> = group.submitted.lock()[done..].to_vec();
                for e in &batch {
                    log.committed_one(e.len(), Entry::decode(e).ok().as_ref());
                }
                done += batch.len();
                if batch.is_empty() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::yield_now();
                }
            }
        })
    };
    let ticker = {
        let (log, clock, stop) = (Arc::clone(&log), Arc::clone(&clock), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                log.tick(Instant::now(), clock.load(Ordering::Acquire));
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (log, clock, fulfilled) =
                (Arc::clone(&log), Arc::clone(&clock), Arc::clone(&fulfilled));
            std::thread::spawn(move || {
                let mut rng = rand::rng();
                // Each client mostly uses its own stream, sometimes another: streams go idle
                // and busy in every order.
                for i in 0..1500u32 {
                    let stream = if rng.random_bool(0.8) {
                        STREAMS[c % STREAMS.len()]
                    } else {
                        STREAMS[rng.random_range(0..STREAMS.len())]
                    };
                    let ts = log
                        .reserve(stream, 0, || next(&clock))
                        .expect("the stream is open");
                    // A multi-shard piece waits for its decision; a one-shard piece does not.
                    if rng.random_bool(0.3) {
                        for _ in 0..rng.random_range(0..50) {
                            std::hint::spin_loop();
                        }
                        if i % 7 == 0 {
                            std::thread::yield_now();
                        }
                    }
                    if rng.random_bool(0.1) {
                        log.cancel(stream, 0, ts);
                        continue;
                    }
                    let key = ts.to_be_bytes();
                    let write = WriteRef {
                        table: 1,
                        key: &key,
                        value: Some(b"v"),
                    };
                    assert!(log.fulfil(stream, 0, &[ts, 0], [write], || ()));
                    fulfilled.lock().insert(ts);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    log.flush();
    stop.store(true, Ordering::Release);
    applier.join().expect("applier");
    ticker.join().expect("ticker");
    log.flush();

    // Check every stream's entries in log order.
    let mut floor: HashMap<u32, u64> = HashMap::new();
    let mut logged = BTreeSet::new();
    let mut heartbeats = 0;
    for e in group.entries() {
        match e {
            Entry::Batch(b) => {
                let f = floor.entry(b.stream).or_insert(0);
                for p in &b.pieces {
                    let ts = p.vt[0];
                    assert!(
                        ts > *f,
                        "round {round}: stream {} logged piece {ts} after it had reached {f}",
                        b.stream
                    );
                    *f = ts;
                    assert!(logged.insert(ts), "round {round}: piece {ts} logged twice");
                }
            }
            Entry::Heartbeat { stream, w, .. } => {
                heartbeats += 1;
                let f = floor.entry(stream).or_insert(0);
                *f = (*f).max(w);
            }
            other => panic!("round {round}: unexpected entry {other:?}"),
        }
    }
    assert_eq!(
        logged,
        *fulfilled.lock(),
        "round {round}: every fulfilled piece logged"
    );
    assert!(
        heartbeats > 0,
        "round {round}: idle streams were heartbeated"
    );
}

#[test]
fn without_group_commit_a_batch_waits_for_its_linger_and_idle_streams_for_the_tick() {
    for group_commit in [true, false] {
        let group = TestGroup::new(Role::Leader);
        let batch = BatchConfig {
            linger: Duration::from_millis(50),
            group_commit,
            ..BatchConfig::default()
        };
        let log = StreamLog::new(0, &STREAMS, &batch);
        log.set_group(group.clone());
        log.open(0, &[]);
        let ts = log.reserve(0, 0, || 1).expect("open");
        let write = WriteRef {
            table: 1,
            key: b"k",
            value: Some(b"v"),
        };
        assert!(log.fulfil(0, 0, &[ts, 0], [write], || ()));
        let entries = group.entries();
        if group_commit {
            // The batch and a heartbeat of each idle stream, at once.
            assert_eq!(entries.len(), 3, "{entries:?}");
        } else {
            assert!(entries.is_empty(), "the batch lingers: {entries:?}");
            log.tick(Instant::now() + Duration::from_millis(60), 1);
            let entries = group.entries();
            assert!(
                matches!(&entries[0], Entry::Batch(b) if b.pieces.len() == 1),
                "{entries:?}"
            );
        }
    }
}
