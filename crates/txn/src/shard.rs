//! A shard: its store, its Lamport clock, its epoch and its commit-log sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use mako_storage::Store;

use crate::sink::{CommitSink, NoopSink};
use crate::txn::Transaction;

/// One shard as seen by the transactions that run on its leader.
pub struct Shard {
    id: usize,
    shards: usize,
    store: Arc<Store>,
    clock: AtomicU64,
    epoch: AtomicU32,
    sink: Arc<dyn CommitSink>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("shards", &self.shards)
            .field("clock", &self.clock())
            .field("epoch", &self.epoch())
            .finish()
    }
}

impl Shard {
    /// Shard 0 of a one-shard deployment over `store`, with a no-op sink.
    pub fn single(store: Arc<Store>) -> Self {
        Shard::new(0, 1, store, Arc::new(NoopSink))
    }

    /// Shard `id` of `shards`, logging committed pieces to `sink`.
    ///
    /// # Panics
    /// If `id >= shards` (a programming error, not input).
    pub fn new(id: usize, shards: usize, store: Arc<Store>, sink: Arc<dyn CommitSink>) -> Self {
        assert!(id < shards, "shard id {id} out of range 0..{shards}");
        Shard {
            id,
            shards,
            store,
            clock: AtomicU64::new(0),
            epoch: AtomicU32::new(0),
            sink,
        }
    }

    /// This shard's id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Number of shards in the deployment (the length of every `VT`).
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The shard's store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The current value of the shard clock `c_s`.
    pub fn clock(&self) -> u64 {
        self.clock.load(Ordering::Acquire)
    }

    /// Moves the clock forward to at least `ts` (e.g. after replaying a log).
    pub fn observe(&self, ts: u64) {
        self.clock.fetch_max(ts, Ordering::AcqRel);
    }

    /// Allocates the next timestamp: `c_s = max(c_s, dep) + 1`.
    pub(crate) fn next_ts(&self, dep: u64) -> u64 {
        let mut cur = self.clock.load(Ordering::Acquire);
        loop {
            let next = cur.max(dep) + 1;
            match self
                .clock
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(seen) => cur = seen,
            }
        }
    }

    /// The epoch new transactions are stamped with.
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Sets the epoch for transactions that commit from now on.
    pub fn set_epoch(&self, epoch: u32) {
        self.epoch.store(epoch, Ordering::Release);
    }

    /// The commit-log sink.
    pub fn sink(&self) -> &dyn CommitSink {
        &*self.sink
    }

    /// Starts a transaction on this shard, logged on stream 0.
    pub fn begin(&self) -> Transaction<'_> {
        Transaction::new(self, 0)
    }

    /// Starts a transaction whose piece is logged on `stream` (one stream per worker thread).
    pub fn begin_on(&self, stream: u32) -> Transaction<'_> {
        Transaction::new(self, stream)
    }
}
