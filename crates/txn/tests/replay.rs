//! Replay of commit-log batches: any order, any number of times, converges; sink captures real write sets.

use std::sync::Arc;

use bytes::Bytes;
use capture::CaptureSink;
use mako_commitlog::{Batch, BatchBuilder, BatchConfig, Entry, Piece, Write, WriteOp};
use mako_storage::Store;
use mako_txn::{CommitSink, PieceWrites, ReplayError, Shard, replay};
use proptest::prelude::*;

mod capture {
    //! A sink that records committed pieces into batches, as the replication layer will.
    use super::*;
    use std::sync::Mutex;
    use std::time::Instant;

    pub struct CaptureSink(pub Mutex<BatchBuilder>, pub Mutex<Vec<Bytes>>);

    impl CaptureSink {
        pub fn new(batch_size: usize) -> Self {
            let cfg = BatchConfig {
                batch_size,
                ..BatchConfig::default()
            };
            CaptureSink(
                Mutex::new(BatchBuilder::new(cfg, 0, 0)),
                Mutex::new(Vec::new()),
            )
        }

        pub fn finish(&self) -> Vec<Bytes> {
            let mut out = self.1.lock().expect("sink lock").clone();
            out.extend(self.0.lock().expect("builder lock").flush());
            out
        }
    }

    impl CommitSink for CaptureSink {
        fn append(
            &self,
            _stream: u32,
            _epoch: u32,
            stamp: &mut dyn FnMut() -> mako_storage::Vt,
            writes: &PieceWrites<'_>,
        ) -> Result<mako_storage::Vt, mako_txn::AbortReason> {
            let mut builder = self.0.lock().expect("builder lock");
            let vt = stamp();
            if let Some(b) = builder.push(&vt, writes.iter(), Instant::now()) {
                self.1.lock().expect("sink lock").push(b);
            }
            Ok(vt)
        }
    }
}

/// One row of a store dump: table id, key, epoch, timestamp, value.
type Row = (u32, Vec<u8>, u32, u64, Option<Bytes>);

fn dump(store: &Store) -> Vec<Row> {
    store
        .tables()
        .iter()
        .flat_map(|t| {
            t.latest()
                .into_iter()
                .map(move |(k, v)| (t.id(), k.to_vec(), v.stamp.epoch, v.stamp.ts, v.value))
        })
        .collect()
}

fn store_with(tables: &[&str]) -> Store {
    let s = Store::new();
    for t in tables {
        s.create_table(t).expect("create table");
    }
    s
}

/// Batches of random pieces over a small key space (so keys collide across batches).
fn arb_batches() -> impl Strategy<Value = Vec<Batch>> {
    let write = (0usize..2, 0u8..6, proptest::option::of(any::<u16>())).prop_map(|(t, k, v)| {
        let table = mako_storage::table_id_for(["a", "b"][t]);
        match v {
            Some(v) => Write::put(table, vec![k], v.to_le_bytes().to_vec()),
            None => Write::delete(table, vec![k]),
        }
    });
    let piece = proptest::collection::vec(write, 1..4);
    let batch = (0u32..2, proptest::collection::vec(piece, 1..4));
    proptest::collection::vec(batch, 1..6).prop_map(|bs| {
        // Distinct timestamps per epoch, as one shard's clock hands them out.
        let mut ts = 0;
        bs.into_iter()
            .map(|(epoch, pieces)| Batch {
                epoch,
                stream: 0,
                seq: 0,
                pieces: pieces
                    .into_iter()
                    .map(|writes| {
                        ts += 1;
                        Piece {
                            vt: vec![ts],
                            writes,
                        }
                    })
                    .collect(),
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn replay_in_any_order_once_or_twice_converges(batches in arb_batches(), seed in any::<u64>()) {
        let reference = store_with(&["a", "b"]);
        for b in &batches {
            replay(b, &reference, 0).expect("replay");
        }
        let mut order: Vec<usize> = (0..batches.len()).collect();
        // A seeded shuffle, then every batch a second time in reverse.
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let other = store_with(&["a", "b"]);
        for &i in order.iter().chain(order.iter().rev()) {
            replay(&batches[i], &other, 0).expect("replay");
        }
        prop_assert_eq!(dump(&reference), dump(&other));
    }
}

#[test]
fn replay_counts_duplicates_and_rejects_bad_batches_without_applying() {
    let store = store_with(&["a"]);
    let a = mako_storage::table_id_for("a");
    let batch = Batch {
        epoch: 0,
        stream: 0,
        seq: 0,
        pieces: vec![Piece {
            vt: vec![3],
            writes: vec![Write::put(a, &b"k"[..], &b"v"[..])],
        }],
    };
    let s = replay(&batch, &store, 0).expect("replay");
    assert_eq!((s.applied, s.duplicates, s.max_ts), (1, 0, 3));
    let s = replay(&batch, &store, 0).expect("replay");
    assert_eq!((s.applied, s.duplicates), (0, 1));

    let mut bad = batch.clone();
    bad.pieces[0].writes.push(Write {
        table: 999,
        key: Bytes::from_static(b"x"),
        op: WriteOp::Delete,
    });
    bad.pieces[0].vt = vec![4];
    assert_eq!(replay(&bad, &store, 0), Err(ReplayError::UnknownTable(999)));
    assert_eq!(
        store
            .table("a")
            .and_then(|t| t.get_version(b"k"))
            .map(|v| v.stamp.ts),
        Some(3)
    );
    assert!(matches!(
        replay(&batch, &store, 1),
        Err(ReplayError::ShortVt { .. })
    ));
}

#[test]
fn a_leader_and_a_replica_fed_its_log_hold_the_same_store() {
    let leader_store = Arc::new(store_with(&["a", "b"]));
    let sink = Arc::new(CaptureSink::new(4));
    let shard = Shard::new(0, 1, Arc::clone(&leader_store), sink.clone());
    let (ta, tb) = (
        leader_store.table("a").expect("a"),
        leader_store.table("b").expect("b"),
    );
    for i in 0..50u32 {
        let mut tx = shard.begin();
        tx.put(&ta, &(i % 7).to_be_bytes(), Bytes::from(i.to_string()));
        if i % 3 == 0 {
            tx.delete(&tb, &(i % 5).to_be_bytes());
        } else {
            tx.put(&tb, &(i % 5).to_be_bytes(), Bytes::from(format!("b{i}")));
        }
        tx.commit().expect("single thread never conflicts");
    }
    let replica = store_with(&["a", "b"]);
    let log = sink.finish();
    assert_eq!(log.len(), 13, "50 pieces in batches of 4");
    for bytes in log.iter().rev() {
        let Entry::Batch(batch) = Entry::decode(bytes).expect("valid entry") else {
            panic!("sink produced a non-batch entry");
        };
        replay(&batch, &replica, 0).expect("replay");
    }
    assert_eq!(dump(&leader_store), dump(&replica));
}

#[test]
fn replayed_values_do_not_keep_the_log_entry_in_memory() {
    // A big entry (a network message's worth) with one small value: the stored value must
    // own its bytes, or one long-lived key pins the whole entry on every follower.
    let t = mako_storage::table_id_for("a");
    let mut writes = vec![Write::put(t, b"small".to_vec(), b"v".to_vec())];
    writes.extend((0..64u32).map(|i| Write::put(t, i.to_le_bytes().to_vec(), vec![7u8; 16384])));
    let batch = Batch {
        epoch: 0,
        stream: 0,
        seq: 0,
        pieces: vec![Piece {
            vt: vec![1],
            writes,
        }],
    };
    let encoded = Entry::Batch(batch).encode();
    let Entry::Batch(decoded) = Entry::decode(&encoded).expect("decode") else {
        panic!("not a batch");
    };
    let store = store_with(&["a"]);
    replay(&decoded, &store, 0).expect("replay");
    let value = store
        .table("a")
        .expect("table")
        .get(b"small")
        .expect("value");
    assert_eq!(&value[..], b"v");
    let entry = encoded.as_ptr_range();
    assert!(
        !entry.contains(&value.as_ptr()),
        "the stored value is a slice of the replicated entry"
    );
}
