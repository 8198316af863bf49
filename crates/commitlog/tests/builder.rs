//! Tests of `BatchBuilder`: closing rules, linger, flush, epochs and encoding identity.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::arb_piece;
use mako_commitlog::{Batch, BatchBuilder, BatchConfig, Entry, Piece, Write, WriteOp, WriteRef};
use proptest::prelude::*;

fn config(batch_size: usize, max_bytes: usize, linger_ms: u64) -> BatchConfig {
    BatchConfig {
        batch_size,
        max_bytes,
        linger: Duration::from_millis(linger_ms),
        group_commit: true,
    }
}

fn put<'a>(key: &'a [u8], value: &'a [u8]) -> WriteRef<'a> {
    WriteRef {
        table: 1,
        key,
        value: Some(value),
    }
}

fn decode_batch(bytes: &Bytes) -> Batch {
    match Entry::decode(bytes) {
        Ok(Entry::Batch(b)) => b,
        other => panic!("expected a batch, got {other:?}"),
    }
}

/// Pushes `piece` into the builder via borrowed writes.
fn push_piece(b: &mut BatchBuilder, piece: &Piece, now: Instant) -> Option<Bytes> {
    b.push(&piece.vt, piece.writes.iter().map(Write::as_write_ref), now)
}

#[test]
fn defaults() {
    let c = BatchConfig::default();
    assert_eq!(c.batch_size, 100);
    assert_eq!(c.max_bytes, 1 << 20);
    assert_eq!(c.linger, Duration::from_millis(1));
}

#[test]
fn empty_builder_returns_nothing() {
    let mut b = BatchBuilder::new(BatchConfig::default(), 1, 2);
    let now = Instant::now();
    assert!(b.is_empty());
    assert_eq!(b.len(), 0);
    assert_eq!(b.deadline(), None);
    assert_eq!(b.flush(), None);
    assert_eq!(b.poll(now + Duration::from_secs(60)), None);
    assert_eq!(b.encoded_len(), 0);
}

#[test]
fn closes_at_batch_size() {
    let mut b = BatchBuilder::new(config(3, usize::MAX, 1000), 4, 9);
    let t = Instant::now();
    assert_eq!(b.push(&[1], [put(b"a", b"1")], t), None);
    assert_eq!(b.push(&[2], [], t), None);
    assert_eq!(b.len(), 2);
    let out = b
        .push(&[3], [put(b"c", b"3")], t)
        .expect("third piece closes");
    assert!(b.is_empty());
    assert_eq!(b.deadline(), None);
    let batch = decode_batch(&out);
    assert_eq!((batch.epoch, batch.stream), (4, 9));
    let vts: Vec<_> = batch.pieces.iter().map(|p| p.vt.clone()).collect();
    assert_eq!(vts, vec![vec![1], vec![2], vec![3]]);
    assert!(batch.pieces[1].writes.is_empty());

    // The next batch starts fresh.
    assert_eq!(b.push(&[4], [], t), None);
    assert_eq!(decode_batch(&b.flush().unwrap()).pieces.len(), 1);
}

#[test]
fn batch_size_zero_closes_every_piece() {
    let mut b = BatchBuilder::new(config(0, usize::MAX, 1000), 0, 0);
    let out = b.push(&[], [], Instant::now()).expect("closes immediately");
    assert_eq!(decode_batch(&out).pieces.len(), 1);
}

#[test]
fn closes_at_max_bytes() {
    let value = [7u8; 100];
    let mut b = BatchBuilder::new(config(1000, 350, 1000), 1, 1);
    let t = Instant::now();
    let mut pushed = 0;
    let out = loop {
        pushed += 1;
        assert!(pushed < 10, "byte cap never triggered");
        let before = b.encoded_len();
        if let Some(out) = b.push(&[pushed], [put(b"k", &value)], t) {
            break out;
        }
        assert!(b.encoded_len() > before);
        assert!(b.encoded_len() < 350);
    };
    assert!(out.len() >= 350);
    assert!(b.is_empty());
    let batch = decode_batch(&out);
    assert_eq!(batch.pieces.len() as u64, pushed);
    assert_eq!(
        batch.pieces[0].writes[0].op,
        WriteOp::Put(Bytes::copy_from_slice(&value))
    );
}

#[test]
fn oversized_single_piece_closes_alone() {
    let big = vec![1u8; 4096];
    let mut b = BatchBuilder::new(config(100, 1024, 1000), 1, 1);
    let out = b
        .push(&[1], [put(b"k", &big)], Instant::now())
        .expect("one piece past the cap closes the batch");
    assert_eq!(decode_batch(&out).pieces.len(), 1);
}

#[test]
fn closes_at_linger_via_poll_and_deadline() {
    let mut b = BatchBuilder::new(config(100, usize::MAX, 5), 1, 1);
    let t0 = Instant::now();
    assert_eq!(b.push(&[1], [put(b"a", b"")], t0), None);
    let deadline = b.deadline().expect("open batch has a deadline");
    assert_eq!(deadline, t0 + Duration::from_millis(5));

    // Later pieces do not move the deadline.
    assert_eq!(b.push(&[2], [], t0 + Duration::from_millis(3)), None);
    assert_eq!(b.deadline(), Some(deadline));

    assert_eq!(b.poll(t0), None);
    assert_eq!(b.poll(deadline - Duration::from_nanos(1)), None);
    assert_eq!(b.len(), 2);
    let out = b.poll(deadline).expect("due at the deadline");
    assert_eq!(decode_batch(&out).pieces.len(), 2);
    assert!(b.is_empty());
    assert_eq!(b.deadline(), None);
    assert_eq!(b.poll(deadline + Duration::from_secs(1)), None);

    // The next batch's deadline counts from its own first piece.
    let t1 = t0 + Duration::from_millis(20);
    b.push(&[3], [], t1);
    assert_eq!(b.deadline(), Some(t1 + Duration::from_millis(5)));
}

#[test]
fn zero_linger_is_due_immediately() {
    let mut b = BatchBuilder::new(config(100, usize::MAX, 0), 1, 1);
    let t = Instant::now();
    b.push(&[1], [], t);
    assert!(b.poll(t).is_some());
}

#[test]
fn huge_linger_never_panics() {
    let mut b = BatchBuilder::new(
        BatchConfig {
            linger: Duration::MAX,
            ..BatchConfig::default()
        },
        1,
        1,
    );
    let t = Instant::now();
    b.push(&[1], [], t);
    assert_eq!(b.poll(t + Duration::from_secs(3600)), None);
    assert_eq!(b.len(), 1);
    assert!(b.flush().is_some());
}

#[test]
fn flush_closes_regardless_of_size_or_age() {
    let mut b = BatchBuilder::new(BatchConfig::default(), 1, 1);
    let t = Instant::now();
    b.push(&[1], [put(b"x", b"y")], t);
    let out = b.flush().expect("non-empty");
    assert_eq!(decode_batch(&out).pieces.len(), 1);
    assert_eq!(b.flush(), None);
}

#[test]
fn batches_and_heartbeats_of_a_stream_are_numbered_in_order() {
    let mut b = BatchBuilder::new(BatchConfig::default(), 4, 5);
    let t = Instant::now();
    b.push(&[1], [], t);
    let first = decode_batch(&b.flush().unwrap());
    let hb = Entry::decode(&b.heartbeat(9)).unwrap();
    b.push(&[10], [], t);
    b.push(&[11], [], t);
    let second = decode_batch(&b.flush().unwrap());
    assert_eq!((first.epoch, first.stream, first.seq), (4, 5, 0));
    assert_eq!(
        hb,
        Entry::Heartbeat {
            epoch: 4,
            stream: 5,
            seq: 1,
            w: 9
        }
    );
    assert_eq!((second.seq, second.pieces.len()), (2, 2));
    assert_eq!(b.next_seq(), 3);
    // An empty flush takes no number.
    assert_eq!(b.flush(), None);
    assert_eq!(b.next_seq(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the limits, the concatenation of emitted batches is exactly the
    /// pushed pieces, and each emitted batch encodes byte-identically to `Entry::encode`.
    #[test]
    fn output_matches_entry_encoding(
        pieces in prop::collection::vec(arb_piece(3, 10), 0..12),
        batch_size in 1usize..5,
        max_bytes in 40usize..400,
        epoch in any::<u32>(),
        stream in any::<u32>(),
    ) {
        let mut b = BatchBuilder::new(config(batch_size, max_bytes, 1000), epoch, stream);
        let t = Instant::now();
        let mut outputs = Vec::new();
        for p in &pieces {
            outputs.extend(push_piece(&mut b, p, t));
            prop_assert!(b.len() < batch_size);
        }
        outputs.extend(b.flush());
        prop_assert!(b.is_empty());

        let mut seen = Vec::new();
        for out in &outputs {
            let batch = decode_batch(out);
            prop_assert!(!batch.pieces.is_empty());
            prop_assert!(batch.pieces.len() <= batch_size);
            prop_assert_eq!((batch.epoch, batch.stream), (epoch, stream));
            let entry = Entry::Batch(batch.clone());
            prop_assert_eq!(&entry.encode(), out);
            seen.extend(batch.pieces);
        }
        prop_assert_eq!(seen, pieces);
    }
}
