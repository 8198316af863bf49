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

#[test]
fn overwriting_one_key_a_million_times_keeps_memory_bounded() {
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
