//! The leader's commit log: one batch builder per stream, heartbeats for idle streams.
//!
//! Within a stream, a piece's timestamp is allocated under the stream's lock,
//! and each stream reaches the log in timestamp order (the precondition of the
//! `W_s` rule in `mako-watermark`). A piece of a multi-shard transaction
//! allocates first ([`StreamLog::reserve`]) and appends later
//! ([`StreamLog::fulfil`]) or gives its timestamp up ([`StreamLog::cancel`]).
//! Any number of transactions may use one stream at once: the stream keeps
//! its reservations as a set, a piece with a larger timestamp than an
//! outstanding reservation is held back until that reservation is fulfilled
//! or cancelled, and heartbeats stay below the smallest outstanding
//! reservation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_commitlog::{BatchBuilder, BatchConfig, Entry, WriteRef};
use mako_replication::Replicator;
use mako_storage::Vt;
use mako_txn::{CommitSink, PieceWrites};
use mako_watermark::StreamId;
use parking_lot::{Condvar, Mutex};

/// Entries submitted by this log and not yet committed beyond which submitting waits.
///
/// Without it a burst of small batches can queue seconds of work in front of the
/// Raft thread, delaying heartbeats until followers start an election.
pub const MAX_IN_FLIGHT: u64 = 2048;

/// Bytes of submitted, uncommitted entries beyond which submitting waits (the same bound, for large entries).
pub const MAX_IN_FLIGHT_BYTES: u64 = 4 << 20;

/// A piece waiting for an older reservation of its stream, with its own copy of the writes.
struct HeldPiece {
    vt: Vec<u64>,
    writes: Vec<(u32, Bytes, Option<Bytes>)>,
}

struct StreamState {
    builder: BatchBuilder,
    /// Reserved timestamps whose pieces are neither appended nor cancelled yet.
    outstanding: BTreeSet<u64>,
    /// Pieces above the smallest outstanding reservation, by timestamp.
    held: BTreeMap<u64, HeldPiece>,
    /// Largest timestamp this stream has put in the log (piece or heartbeat).
    last: u64,
}

impl StreamState {
    /// Whether a piece stamped `ts` must wait for an older reservation.
    fn must_hold(&self, ts: u64) -> bool {
        self.outstanding.first().is_some_and(|&o| o < ts)
    }

    /// The largest timestamp a heartbeat may carry now (below every outstanding reservation).
    fn heartbeat_cap(&self, clock: u64) -> u64 {
        match self.outstanding.first() {
            Some(&o) => clock.min(o.saturating_sub(1)),
            None => clock,
        }
    }
}

/// Counters of what the log sink did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamStats {
    /// Batches submitted.
    pub batches: u64,
    /// Heartbeats submitted.
    pub heartbeats: u64,
    /// Submissions refused (not leader).
    pub refused: u64,
    /// Most entries ever in flight (submitted, not yet committed).
    pub max_in_flight: u64,
}

/// The commit-log sink of a shard leader; implements [`CommitSink`].
pub struct StreamLog {
    shard: usize,
    streams: Vec<(StreamId, Mutex<StreamState>)>,
    group: OnceLock<Arc<dyn Replicator>>,
    stats: Mutex<StreamStats>,
    submitted: AtomicU64,
    committed: AtomicU64,
    submitted_bytes: AtomicU64,
    committed_bytes: AtomicU64,
    room: Mutex<()>,
    room_cv: Condvar,
}

impl std::fmt::Debug for StreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLog")
            .field("streams", &self.streams.len())
            .field("stats", &*self.stats.lock())
            .finish()
    }
}

impl StreamLog {
    /// A log over the configured streams.
    pub fn new(shard: usize, streams: &[StreamId], cfg: &BatchConfig, epoch: u32) -> Self {
        StreamLog {
            shard,
            streams: streams
                .iter()
                .map(|&s| {
                    (
                        s,
                        Mutex::new(StreamState {
                            builder: BatchBuilder::new(cfg.clone(), epoch, s),
                            outstanding: BTreeSet::new(),
                            held: BTreeMap::new(),
                            last: 0,
                        }),
                    )
                })
                .collect(),
            group: OnceLock::new(),
            stats: Mutex::new(StreamStats::default()),
            submitted: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            submitted_bytes: AtomicU64::new(0),
            committed_bytes: AtomicU64::new(0),
            room: Mutex::new(()),
            room_cv: Condvar::new(),
        }
    }

    /// Connects the replication group entries are submitted to.
    pub fn set_group(&self, group: Arc<dyn Replicator>) {
        let _ = self.group.set(group);
    }

    fn state(&self, stream: StreamId) -> Option<&Mutex<StreamState>> {
        self.streams
            .iter()
            .find(|(s, _)| *s == stream)
            .map(|(_, m)| m)
    }

    /// Counts one committed entry of `len` bytes (called by the leader apply callback); wakes a waiting submitter.
    pub fn committed_one(&self, len: usize) {
        self.committed.fetch_add(1, Ordering::AcqRel);
        self.committed_bytes.fetch_add(len as u64, Ordering::AcqRel);
        if self.in_flight() + 64 >= MAX_IN_FLIGHT
            || self.in_flight_bytes() + (256 << 10) >= MAX_IN_FLIGHT_BYTES
        {
            let _g = self.room.lock();
            self.room_cv.notify_all();
        }
    }

    fn in_flight(&self) -> u64 {
        self.submitted
            .load(Ordering::Acquire)
            .saturating_sub(self.committed.load(Ordering::Acquire))
    }

    fn in_flight_bytes(&self) -> u64 {
        self.submitted_bytes
            .load(Ordering::Acquire)
            .saturating_sub(self.committed_bytes.load(Ordering::Acquire))
    }

    fn full(&self) -> bool {
        self.in_flight() >= MAX_IN_FLIGHT || self.in_flight_bytes() >= MAX_IN_FLIGHT_BYTES
    }

    /// Waits (bounded) while too many submitted entries or bytes are uncommitted.
    fn wait_for_room(&self) {
        if !self.full() {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut g = self.room.lock();
        while self.full() {
            // Bounded: after a leader change the counts may never meet again.
            if self.room_cv.wait_until(&mut g, deadline).timed_out() {
                self.committed
                    .store(self.submitted.load(Ordering::Acquire), Ordering::Release);
                self.committed_bytes.store(
                    self.submitted_bytes.load(Ordering::Acquire),
                    Ordering::Release,
                );
                break;
            }
        }
    }

    fn submit(&self, bytes: Bytes, heartbeat: bool) {
        self.wait_for_room();
        let len = bytes.len() as u64;
        let ok = self.group.get().is_some_and(|g| g.submit(bytes).is_ok());
        if ok {
            self.submitted.fetch_add(1, Ordering::AcqRel);
            self.submitted_bytes.fetch_add(len, Ordering::AcqRel);
        }
        let in_flight = self.in_flight();
        let mut st = self.stats.lock();
        st.max_in_flight = st.max_in_flight.max(in_flight);
        match (ok, heartbeat) {
            (false, _) => st.refused += 1,
            (true, true) => st.heartbeats += 1,
            (true, false) => st.batches += 1,
        }
    }

    /// Allocates a timestamp on `stream` with `alloc`; it stays outstanding until `fulfil` or `cancel`.
    pub fn reserve(&self, stream: StreamId, alloc: impl FnOnce() -> u64) -> Option<u64> {
        let mut s = self.state(stream)?.lock();
        let ts = alloc();
        s.outstanding.insert(ts);
        Some(ts)
    }

    /// Appends the piece reserved on `stream` with its final `vt` (its timestamp is `vt[shard]`);
    /// it reaches the log once no older reservation of the stream is outstanding.
    pub fn fulfil<'a>(
        &self,
        stream: StreamId,
        vt: &[u64],
        writes: impl IntoIterator<Item = WriteRef<'a>>,
    ) {
        let Some(m) = self.state(stream) else { return };
        let ts = vt.get(self.shard).copied().unwrap_or(0);
        let mut s = m.lock();
        s.outstanding.remove(&ts);
        self.push_or_hold(&mut s, ts, vt, writes);
        self.drain_held(&mut s);
    }

    /// Gives up the reservation `ts` of `stream` (its transaction aborted); other reservations stay.
    pub fn cancel(&self, stream: StreamId, ts: u64) {
        if let Some(m) = self.state(stream) {
            let mut s = m.lock();
            s.outstanding.remove(&ts);
            self.drain_held(&mut s);
        }
    }

    /// Puts a piece stamped `ts` in the stream's batch, or holds it behind an older reservation.
    fn push_or_hold<'a>(
        &self,
        s: &mut StreamState,
        ts: u64,
        vt: &[u64],
        writes: impl IntoIterator<Item = WriteRef<'a>>,
    ) {
        if s.must_hold(ts) {
            let writes = writes
                .into_iter()
                .map(|w| {
                    (
                        w.table,
                        Bytes::copy_from_slice(w.key),
                        w.value.map(Bytes::copy_from_slice),
                    )
                })
                .collect();
            s.held.insert(
                ts,
                HeldPiece {
                    vt: vt.to_vec(),
                    writes,
                },
            );
            return;
        }
        s.last = s.last.max(ts);
        if let Some(b) = s.builder.push(vt, writes, Instant::now()) {
            self.submit(b, false);
        }
    }

    /// Appends held pieces, oldest first, that no outstanding reservation precedes any more.
    fn drain_held(&self, s: &mut StreamState) {
        while let Some((&ts, _)) = s.held.first_key_value() {
            if s.must_hold(ts) {
                break;
            }
            let Some((_, p)) = s.held.pop_first() else {
                break;
            };
            s.last = s.last.max(ts);
            let writes = p.writes.iter().map(|(table, key, value)| WriteRef {
                table: *table,
                key,
                value: value.as_deref(),
            });
            if let Some(b) = s.builder.push(&p.vt, writes, Instant::now()) {
                self.submit(b, false);
            }
        }
    }

    /// Flushes batches past their linger; then, if `clock` moved, heartbeats every idle stream at `clock`.
    pub fn tick(&self, now: Instant, clock: u64) {
        for (id, m) in &self.streams {
            let mut s = m.lock();
            if let Some(b) = s.builder.poll(now) {
                self.submit(b, false);
            }
            let w = s.heartbeat_cap(clock);
            if s.builder.is_empty() && w > s.last {
                s.last = w;
                self.submit(Entry::Heartbeat { stream: *id, w }.encode(), true);
            }
        }
    }

    /// Flushes every open batch now.
    pub fn flush(&self) {
        for (_, m) in &self.streams {
            if let Some(b) = m.lock().builder.flush() {
                self.submit(b, false);
            }
        }
    }

    /// Counters.
    pub fn stats(&self) -> StreamStats {
        *self.stats.lock()
    }
}

impl CommitSink for StreamLog {
    fn append(
        &self,
        stream: u32,
        _epoch: u32,
        stamp: &mut dyn FnMut() -> Vt,
        writes: &PieceWrites<'_>,
    ) -> Vt {
        let Some(m) = self.state(stream) else {
            tracing::error!(stream, "commit on an unconfigured stream; piece not logged");
            return stamp();
        };
        let mut s = m.lock();
        let vt = stamp();
        let ts = vt.get(self.shard).copied().unwrap_or(0);
        self.push_or_hold(&mut s, ts, &vt, writes.iter());
        vt
    }
}
