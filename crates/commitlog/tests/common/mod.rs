//! Proptest strategies for commit-log entries, shared by the integration tests.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use bytes::Bytes;
use mako_commitlog::{Batch, Entry, Piece, Write, WriteOp};
use proptest::prelude::*;

/// Byte strings of up to `max` bytes, including empty ones.
pub fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

/// A Put or Delete write with a key and value of up to `max` bytes.
pub fn arb_write(max: usize) -> impl Strategy<Value = Write> {
    let op = prop_oneof![arb_bytes(max).prop_map(WriteOp::Put), Just(WriteOp::Delete),];
    (any::<u32>(), arb_bytes(max), op).prop_map(|(table, key, op)| Write { table, key, op })
}

/// A piece with a vector timestamp of 0..4 components and up to `max_writes` writes.
pub fn arb_piece(max_writes: usize, max_bytes: usize) -> impl Strategy<Value = Piece> {
    (
        prop::collection::vec(any::<u64>(), 0..4),
        prop::collection::vec(arb_write(max_bytes), 0..=max_writes),
    )
        .prop_map(|(vt, writes)| Piece { vt, writes })
}

/// A batch of up to `max_pieces` pieces.
pub fn arb_batch(
    max_pieces: usize,
    max_writes: usize,
    max_bytes: usize,
) -> impl Strategy<Value = Batch> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        prop::collection::vec(arb_piece(max_writes, max_bytes), 0..=max_pieces),
    )
        .prop_map(|(epoch, stream, seq, pieces)| Batch {
            epoch,
            stream,
            seq,
            pieces,
        })
}

/// Any entry kind; batches bounded by the given sizes.
pub fn arb_entry(
    max_pieces: usize,
    max_writes: usize,
    max_bytes: usize,
) -> impl Strategy<Value = Entry> {
    prop_oneof![
        arb_batch(max_pieces, max_writes, max_bytes).prop_map(Entry::Batch),
        any::<u32>().prop_map(|epoch| Entry::NoOp { epoch }),
        Just(Entry::Advancer),
        any::<u32>().prop_map(|stream| Entry::Ending { stream }),
        (any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
            |(epoch, stream, seq, w)| Entry::Heartbeat {
                epoch,
                stream,
                seq,
                w
            }
        ),
    ]
}
