//! Reclamation: a long overwrite-heavy run keeps memory bounded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use bytes::Bytes;
use mako_storage::Store;
use mako_txn::Shard;

/// Counts live heap bytes of this test binary.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The heap counter is process-wide: memory tests run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn overwriting_one_key_a_million_times_keeps_memory_bounded() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let shard = Shard::single(Arc::new(Store::new()));
    let t = shard.store().create_table("t").expect("table");
    let value = Bytes::from(vec![7u8; 100]);
    let write = |n: u64| {
        let mut tx = shard.begin();
        let _ = tx.get(&t, b"hot");
        tx.put(&t, b"hot", value.slice(..(n % 100) as usize));
        tx.commit().expect("single writer");
    };
    for n in 0..1_000 {
        write(n);
    }
    let baseline = LIVE.load(Ordering::Relaxed);
    for n in 0..1_000_000 {
        write(n);
    }
    let grown = LIVE.load(Ordering::Relaxed) - baseline;
    let rec = t.record(b"hot").expect("indexed");
    assert_eq!(
        rec.chain_len(),
        1,
        "every version but the newest is final and trimmed"
    );
    assert!(
        grown < 64 * 1024,
        "live heap grew by {grown} bytes over 1M overwrites"
    );

    // With a reclaim bound held back (a reader or failover may need old versions),
    // versions above it are kept, and released once it moves.
    let bound = shard.clock();
    shard.store().set_reclaim_bound(bound);
    for n in 0..10 {
        write(n);
    }
    assert_eq!(rec.chain_len(), 11);
    shard.store().set_reclaim_bound(u64::MAX);
    write(0);
    assert_eq!(rec.chain_len(), 1);
}

/// A queue-like table (insert the newest key, delete the oldest) with tombstones unlinked:
/// memory stays bounded; without unlinking every deleted key stays indexed.
#[test]
fn inserting_and_deleting_keys_forever_keeps_memory_bounded_once_tombstones_unlink() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const LIVE_KEYS: u64 = 100;
    let run = |unlink: bool, n: u64| -> (isize, usize) {
        let shard = Shard::single(Arc::new(Store::new()));
        if unlink {
            shard.store().set_unlink_bound(u64::MAX);
        }
        let t = shard.store().create_table("queue").expect("table");
        let value = Bytes::from(vec![7u8; 40]);
        let step = |i: u64| {
            let mut tx = shard.begin();
            tx.insert(&t, &i.to_be_bytes(), value.clone())
                .expect("fresh key");
            if i >= LIVE_KEYS {
                tx.delete(&t, &(i - LIVE_KEYS).to_be_bytes());
            }
            tx.commit().expect("single writer");
        };
        for i in 0..10_000 {
            step(i);
        }
        let baseline = LIVE.load(Ordering::Relaxed);
        for i in 10_000..n {
            step(i);
        }
        (LIVE.load(Ordering::Relaxed) - baseline, t.len())
    };
    let (grown, indexed) = run(true, 210_000);
    assert!(
        indexed < (LIVE_KEYS as usize) + 1024,
        "{indexed} keys indexed for {LIVE_KEYS} live ones"
    );
    assert!(
        grown < 1 << 20,
        "live heap grew by {grown} bytes over 200k insert/delete pairs"
    );
    // The same run without unlinking keeps every deleted key (the test can tell the difference).
    let (grown_kept, indexed_kept) = run(false, 60_000);
    assert!(indexed_kept >= 60_000);
    assert!(
        grown_kept > 1 << 20,
        "kept tombstones take memory ({grown_kept} bytes)"
    );
}
