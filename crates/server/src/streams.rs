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
//!
//! With [`BatchConfig::group_commit`] (the default) batching is group commit (without it,
//! a batch waits until it is full or its linger ends, and only the tick heartbeats idle
//! streams): a stream whose entries are all committed closes its batch
//! with the first piece, so an idle system adds no linger to a commit; while one of its
//! entries is in flight, pieces gather in the open batch, which closes when that entry
//! commits ([`StreamLog::committed_one`], from the leader's apply callback), when it is full,
//! or at the linger's end (the next tick), whichever is first. When a stream submits a
//! batch, every idle stream (nothing open, queued or held below) is heartbeated at once up
//! to that batch's largest timestamp, capped below its outstanding reservations: that
//! timestamp was already allocated, so every later piece is stamped above it, and `W_s`
//! covers the batch without waiting for the next tick.
//!
//! Encoded entries leave a stream through its outbox, in order, submitted by
//! whoever holds the stream's pump (never under the stream's state lock). A
//! submission the group answers `Busy` stays at the head of the outbox and is
//! retried on the next tick; nothing is ever dropped and later entries never
//! overtake it. Every entry of a stream carries the next sequence number of the
//! epoch, so a lost entry is a visible gap in the log, which stops the stream's
//! part of `W_s` on every replica (`mako_watermark::ShardWatermark`). A
//! submission refused for good (`NotLeader`, `Stopped`, `Failed`, `TooLarge`),
//! and an accepted entry the group later reports unapplied
//! ([`StreamLog::unapplied`]), **freezes** the stream: it submits nothing more and
//! takes no new piece; the site then asks for a new epoch, whose
//! [`StreamLog::open`] starts every stream afresh. The transactions with lost
//! pieces are decided by the discard rule (never released).
//!
//! The log serves one epoch at a time: [`StreamLog::open`] starts it (fresh
//! streams, no reservation, batch or sequence number survives), [`StreamLog::seal`]
//! ends it on a leader that stays leader (what was batched is still submitted, no
//! piece or heartbeat is added), [`StreamLog::close`] ends it when leadership is
//! lost (nothing more is submitted). Reservations, pieces and appends name their
//! epoch; one of another epoch than the open one is refused or not logged.
//!
//! No entry exceeds the log's entry limit ([`StreamLog::with_max_entry_bytes`]):
//! a batch closes before a piece would take it past the limit, and a single
//! piece larger than one entry may hold is refused at commit
//! ([`StreamLog::check`], `AbortReason::TooLarge`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mako_commitlog::{BatchBuilder, BatchConfig, Entry, HEADER_LEN, WriteRef};
use mako_replication::{Replicator, SubmitError, Unapplied};
use mako_storage::Vt;
use mako_txn::{AbortReason, CommitSink, PieceWrites};
use mako_watermark::{Epoch, StreamId};
use parking_lot::{Condvar, Mutex};

use crate::pace::Pace;

/// Entries submitted by this log and not yet committed beyond which submitting waits.
///
/// Without it a burst of small batches can queue seconds of work in front of the
/// Raft thread, delaying heartbeats until followers start an election.
pub const MAX_IN_FLIGHT: u64 = 2048;

/// Bytes of submitted, uncommitted entries beyond which submitting waits (the same bound, for large entries).
pub const MAX_IN_FLIGHT_BYTES: u64 = 4 << 20;

/// How long the in-flight bound may stay reached before the counts are reset.
const FULL_RESET: Duration = Duration::from_millis(200);

/// Default largest encoded log entry (below the Raft group's 16 MiB cap minus log-store overhead).
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 8 << 20;

/// Bytes a Batch entry takes besides its pieces: frame header, kind, epoch, stream, piece count.
const BATCH_OVERHEAD: usize = HEADER_LEN + 1 + 4 + 4 + 4;

/// Encoded size of one piece with a `vt_len`-component `VT` and `writes` (the commit-log format:
/// `vt_len u16 | vt u64* | write_count u32 | (table u32 | key_len u32 | key | op u8 | [value_len u32 | value])*`).
pub fn piece_len<'a>(vt_len: usize, writes: impl IntoIterator<Item = WriteRef<'a>>) -> usize {
    let writes: usize = writes
        .into_iter()
        .map(|w| 4 + 4 + w.key.len() + 1 + w.value.map_or(0, |v| 4 + v.len()))
        .sum();
    2 + 8 * vt_len + 4 + writes
}

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
    /// Encoded entries not submitted yet, in stream order (`true`: a heartbeat).
    outbox: VecDeque<(Bytes, bool)>,
    /// Entries of this stream and epoch submitted and not yet committed (group commit: an
    /// open batch closes at once while this is zero, else when it drops to zero).
    in_flight: u64,
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

/// One stream: its state, the pump that submits its outbox, and whether it froze.
struct Stream {
    id: StreamId,
    state: Mutex<StreamState>,
    /// Held while submitting the outbox (keeps submissions in stream order).
    pump: Mutex<()>,
    /// Set once an entry of the stream was lost; the stream then submits nothing more.
    frozen: AtomicBool,
    /// Retired by `Ending`: takes nothing, heartbeats nothing, in every epoch.
    ended: AtomicBool,
}

/// Counters of what the log sink did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamStats {
    /// Batches submitted.
    pub batches: u64,
    /// Heartbeats submitted.
    pub heartbeats: u64,
    /// Submissions refused for good (not leader, stopped, failed, too large); each freezes its stream.
    pub refused: u64,
    /// `Busy` answers (the entry stayed queued and was retried).
    pub busy: u64,
    /// Accepted entries the group reported unapplied (dropped, in a snapshot, abandoned).
    pub unapplied: u64,
    /// Streams frozen after a lost entry.
    pub frozen: u64,
    /// Most entries ever in flight (submitted, not yet committed).
    pub max_in_flight: u64,
}

/// The commit-log sink of a shard leader; implements [`CommitSink`].
pub struct StreamLog {
    shard: usize,
    streams: Vec<Stream>,
    batch: BatchConfig,
    /// The epoch the streams serve.
    epoch: AtomicU32,
    /// Whether the epoch takes new pieces (opened and neither sealed nor closed).
    accepting: AtomicBool,
    group: OnceLock<Arc<dyn Replicator>>,
    stats: Mutex<StreamStats>,
    submitted: AtomicU64,
    committed: AtomicU64,
    submitted_bytes: AtomicU64,
    committed_bytes: AtomicU64,
    room: Mutex<()>,
    room_cv: Condvar,
    /// Since when the in-flight bound has been reached (cleared once there is room).
    full_since: Mutex<Option<Instant>>,
    /// When the entries in flight were submitted: the log is behind once the oldest is too old.
    pace: Mutex<Pace>,
    /// A submitter was refused for being behind (a commit then wakes the waiting ones).
    paced: AtomicBool,
    max_entry: usize,
}

impl std::fmt::Debug for StreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLog")
            .field("streams", &self.streams.len())
            .field("stats", &*self.stats.lock())
            .finish()
    }
}

impl StreamState {
    fn fresh(cfg: &BatchConfig, epoch: Epoch, stream: StreamId) -> Self {
        StreamState {
            builder: BatchBuilder::new(cfg.clone(), epoch, stream),
            outstanding: BTreeSet::new(),
            held: BTreeMap::new(),
            last: 0,
            outbox: VecDeque::new(),
            in_flight: 0,
        }
    }
}

impl StreamLog {
    /// A log over the configured streams (entries up to [`DEFAULT_MAX_ENTRY_BYTES`]), not
    /// accepting anything until [`StreamLog::open`].
    pub fn new(shard: usize, streams: &[StreamId], cfg: &BatchConfig) -> Self {
        StreamLog {
            shard,
            streams: streams
                .iter()
                .map(|&s| Stream {
                    id: s,
                    state: Mutex::new(StreamState::fresh(cfg, 0, s)),
                    pump: Mutex::new(()),
                    frozen: AtomicBool::new(true),
                    ended: AtomicBool::new(false),
                })
                .collect(),
            batch: cfg.clone(),
            epoch: AtomicU32::new(0),
            accepting: AtomicBool::new(false),
            group: OnceLock::new(),
            stats: Mutex::new(StreamStats::default()),
            submitted: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            submitted_bytes: AtomicU64::new(0),
            committed_bytes: AtomicU64::new(0),
            room: Mutex::new(()),
            room_cv: Condvar::new(),
            full_since: Mutex::new(None),
            pace: Mutex::new(Pace::new(Instant::now())),
            paced: AtomicBool::new(false),
            max_entry: DEFAULT_MAX_ENTRY_BYTES,
        }
    }

    /// Sets the largest entry submitted (at most what the replication group accepts).
    pub fn with_max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry = bytes.max(BATCH_OVERHEAD + 64);
        self
    }

    /// The largest piece one entry holds.
    pub fn max_piece_bytes(&self) -> usize {
        self.max_entry - BATCH_OVERHEAD
    }

    /// Connects the replication group entries are submitted to.
    pub fn set_group(&self, group: Arc<dyn Replicator>) {
        let _ = self.group.set(group);
    }

    fn stream(&self, stream: StreamId) -> Option<&Stream> {
        self.streams.iter().find(|s| s.id == stream)
    }

    /// Starts epoch `epoch`: every stream afresh (nothing of the previous epoch survives),
    /// except the streams `ended` (retired in the log), which stay retired.
    pub fn open(&self, epoch: Epoch, ended: &[StreamId]) {
        for s in &self.streams {
            let _pump = s.pump.lock();
            let mut st = s.state.lock();
            *st = StreamState::fresh(&self.batch, epoch, s.id);
            s.ended.store(ended.contains(&s.id), Ordering::Release);
            s.frozen.store(false, Ordering::Release);
        }
        self.epoch.store(epoch, Ordering::Release);
        self.accepting.store(true, Ordering::Release);
    }

    /// Ends the epoch on a leader that stays leader: open batches are submitted, nothing is
    /// added (no piece, no heartbeat) until the next [`StreamLog::open`].
    pub fn seal(&self) {
        self.accepting.store(false, Ordering::Release);
        self.flush();
    }

    /// Ends the epoch when leadership is lost: nothing more is submitted.
    pub fn close(&self) {
        self.accepting.store(false, Ordering::Release);
        for s in &self.streams {
            s.frozen.store(true, Ordering::Release);
            let mut st = s.state.lock();
            st.outbox.clear();
            st.held.clear();
        }
    }

    /// The epoch the streams serve (or last served).
    pub fn epoch(&self) -> Epoch {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether the log takes pieces of `epoch` now.
    pub fn accepts(&self, epoch: Epoch) -> bool {
        self.accepting.load(Ordering::Acquire) && self.epoch() == epoch
    }

    /// Whether some stream froze after a lost entry while the epoch is open.
    pub fn any_frozen(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
            && self
                .streams
                .iter()
                .any(|s| s.frozen.load(Ordering::Acquire))
    }

    /// Whether `stream` is configured, the epoch open and the stream neither frozen nor retired.
    pub fn is_open(&self, stream: StreamId) -> bool {
        self.accepting.load(Ordering::Acquire)
            && self.stream(stream).is_some_and(|s| {
                !s.frozen.load(Ordering::Acquire) && !s.ended.load(Ordering::Acquire)
            })
    }

    /// Retires `stream`: what it batched is submitted, then `Ending`, and it takes nothing more
    /// in this or any later epoch. Refused while a piece of it is reserved or held (its
    /// transaction could then be released without it).
    pub fn end(&self, stream: StreamId) -> Result<(), crate::lead::ServeError> {
        use crate::lead::ServeError;
        let s = self
            .stream(stream)
            .ok_or(ServeError::NoSuchStream(stream))?;
        {
            let mut st = s.state.lock();
            if s.ended.load(Ordering::Acquire) {
                return Ok(());
            }
            if !st.outstanding.is_empty() || !st.held.is_empty() {
                return Err(ServeError::InUse(stream));
            }
            s.ended.store(true, Ordering::Release);
            if let Some(b) = st.builder.flush() {
                st.outbox.push_back((b, false));
            }
            st.outbox
                .push_back((Entry::Ending { stream }.encode(), true));
        }
        self.pump(s);
        Ok(())
    }

    /// Whether `stream` froze after a lost entry (unconfigured streams count as frozen).
    pub fn is_frozen(&self, stream: StreamId) -> bool {
        !self.is_open(stream)
    }

    /// Checks that a piece of `writes` (with a `vt_len`-component `VT`) can be logged on `stream`.
    pub fn check<'a>(
        &self,
        stream: StreamId,
        vt_len: usize,
        writes: impl IntoIterator<Item = WriteRef<'a>>,
    ) -> Result<(), AbortReason> {
        if !self.is_open(stream) {
            return Err(AbortReason::LogUnavailable);
        }
        if piece_len(vt_len, writes) > self.max_piece_bytes() {
            return Err(AbortReason::TooLarge);
        }
        Ok(())
    }

    fn freeze(&self, s: &Stream, why: &str) {
        if !s.frozen.swap(true, Ordering::AcqRel) {
            self.stats.lock().frozen += 1;
            tracing::error!(
                shard = self.shard,
                stream = s.id,
                "stream frozen: {why}; its unlogged transactions stay pending"
            );
        }
    }

    /// A submitted entry the group will not apply here: freezes its stream (its later entries
    /// would follow a gap). Called by the site's unapplied callback.
    pub fn unapplied(&self, u: &Unapplied) {
        self.resolved(u.entry.len());
        self.stats.lock().unapplied += 1;
        let why = format!("an accepted entry ended unapplied ({:?})", u.resolution);
        let stream = match Entry::decode(&u.entry) {
            Ok(Entry::Batch(b)) => Some(b.stream),
            Ok(Entry::Heartbeat { stream, .. }) => Some(stream),
            // Markers are the site's own entries, not a stream's.
            Ok(_) => return,
            Err(_) => None,
        };
        match stream.and_then(|id| self.stream(id)) {
            Some(s) => self.freeze(s, &why),
            None => self.freeze_all(&why),
        }
    }

    fn freeze_all(&self, why: &str) {
        for s in &self.streams {
            self.freeze(s, why);
        }
    }

    /// Counts one committed entry of `len` bytes (`entry` decoded, if it decodes; called by
    /// the leader apply callback); wakes a waiting submitter, and submits the batch its stream
    /// gathered while the entry was in flight.
    pub fn committed_one(&self, len: usize, entry: Option<&Entry>) {
        self.resolved(len);
        let (epoch, stream) = match entry {
            Some(Entry::Batch(b)) => (b.epoch, b.stream),
            Some(Entry::Heartbeat { epoch, stream, .. }) => (*epoch, *stream),
            _ => return,
        };
        let Some(s) = self.stream(stream) else {
            return;
        };
        {
            let mut st = s.state.lock();
            if epoch != self.epoch() || !self.accepting.load(Ordering::Acquire) {
                return;
            }
            st.in_flight = st.in_flight.saturating_sub(1);
            if !self.batch.group_commit
                || st.in_flight > 0
                || !st.outbox.is_empty()
                || s.frozen.load(Ordering::Acquire)
            {
                return;
            }
            match st.builder.flush() {
                Some(b) => st.outbox.push_back((b, false)),
                None => return,
            }
        }
        self.pump(s);
    }

    fn resolved(&self, len: usize) {
        let n = self.committed.fetch_add(1, Ordering::AcqRel) + 1;
        self.committed_bytes.fetch_add(len as u64, Ordering::AcqRel);
        self.pace.lock().committed(n, Instant::now());
        if self.paced.swap(false, Ordering::AcqRel)
            || self.in_flight() + 64 >= MAX_IN_FLIGHT
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

    /// Whether an entry may be submitted now: the in-flight bound is not reached, and the
    /// log is not behind ([`Pace::slow`]: its oldest entry in flight is not too old).
    ///
    /// A bound reached (or the log behind) for longer than [`FULL_RESET`] resets the counts:
    /// entries this replica submitted and then applied as a follower (after a leader change)
    /// are never counted, so the counts may never meet again. The bound only paces
    /// submissions; nothing is dropped.
    fn room(&self) -> bool {
        let mut since = self.full_since.lock();
        let now = Instant::now();
        let behind = self.pace.lock().slow(now);
        if !behind && !self.full() {
            *since = None;
            return true;
        }
        if behind {
            self.paced.store(true, Ordering::Release);
        }
        match *since {
            None => {
                *since = Some(now);
                false
            }
            Some(t) if now.duration_since(t) >= FULL_RESET => {
                let submitted = self.submitted.load(Ordering::Acquire);
                self.committed.store(submitted, Ordering::Release);
                self.pace.lock().clear(submitted);
                self.committed_bytes.store(
                    self.submitted_bytes.load(Ordering::Acquire),
                    Ordering::Release,
                );
                *since = None;
                true
            }
            Some(_) => false,
        }
    }

    /// Waits (bounded, holding no stream lock) while too many submitted entries or bytes are
    /// uncommitted: back-pressure for client threads before they commit.
    pub fn throttle(&self) {
        if self.room() {
            return;
        }
        let deadline = Instant::now() + FULL_RESET;
        let mut g = self.room.lock();
        while !self.room() {
            if self.room_cv.wait_until(&mut g, deadline).timed_out() {
                let _ = self.room();
                break;
            }
        }
    }

    /// Submits `s`'s outbox in order, unless someone else is already doing so.
    ///
    /// `Busy` leaves the entry at the head (the next tick retries); a refusal for good freezes
    /// the stream and discards what it had not submitted.
    fn pump(&self, s: &Stream) {
        loop {
            let Some(guard) = s.pump.try_lock() else {
                // The holder re-checks the outbox after releasing the pump.
                return;
            };
            loop {
                let next = {
                    let mut st = s.state.lock();
                    if s.frozen.load(Ordering::Acquire) {
                        st.outbox.clear();
                        None
                    } else {
                        let next = st.outbox.pop_front();
                        if next.is_some() {
                            // Counted before it is submitted: its commit may come first.
                            st.in_flight += 1;
                        }
                        next.map(|(bytes, heartbeat)| (bytes, heartbeat, st.last))
                    }
                };
                let Some((bytes, heartbeat, last)) = next else {
                    break;
                };
                let put_back = |bytes: Bytes| {
                    let mut st = s.state.lock();
                    st.in_flight = st.in_flight.saturating_sub(1);
                    st.outbox.push_front((bytes, heartbeat));
                };
                if !self.room() {
                    // Paced: the next tick (or a committing client) submits it.
                    put_back(bytes);
                    return;
                }
                match self.submit(bytes.clone(), heartbeat) {
                    Ok(()) if !heartbeat => self.heartbeat_idle(s.id, last),
                    Ok(()) => {}
                    Err(SubmitError::Busy) => {
                        put_back(bytes);
                        self.stats.lock().busy += 1;
                        return;
                    }
                    Err(e) => {
                        self.stats.lock().refused += 1;
                        self.freeze(s, &format!("submission refused: {e}"));
                    }
                }
            }
            drop(guard);
            if s.frozen.load(Ordering::Acquire) || s.state.lock().outbox.is_empty() {
                return;
            }
        }
    }

    fn submit(&self, bytes: Bytes, heartbeat: bool) -> Result<(), SubmitError> {
        let len = bytes.len() as u64;
        let group = self.group.get().ok_or(SubmitError::Stopped)?;
        let now = Instant::now();
        group.submit(bytes)?;
        let n = self.submitted.fetch_add(1, Ordering::AcqRel) + 1;
        self.pace.lock().sent(n, now);
        self.submitted_bytes.fetch_add(len, Ordering::AcqRel);
        let in_flight = self.in_flight();
        let mut st = self.stats.lock();
        st.max_in_flight = st.max_in_flight.max(in_flight);
        if heartbeat {
            st.heartbeats += 1;
        } else {
            st.batches += 1;
        }
        Ok(())
    }

    /// Allocates a timestamp on `stream` for a piece of `epoch` with `alloc`; it stays
    /// outstanding until `fulfil` or `cancel`. `None` if the stream is unconfigured or frozen,
    /// or `epoch` is not the open epoch.
    pub fn reserve(
        &self,
        stream: StreamId,
        epoch: Epoch,
        alloc: impl FnOnce() -> u64,
    ) -> Option<u64> {
        let s = self.stream(stream)?;
        let mut st = s.state.lock();
        if s.frozen.load(Ordering::Acquire)
            || s.ended.load(Ordering::Acquire)
            || !self.accepts(epoch)
        {
            return None;
        }
        let ts = alloc();
        st.outstanding.insert(ts);
        Some(ts)
    }

    /// Appends the piece reserved on `stream` in `epoch` with its final `vt` (its timestamp is
    /// `vt[shard]`); it reaches the log once no older reservation of the stream is outstanding.
    /// `install` puts its versions in the store first, under the stream's lock, so that no
    /// piece reaches the log before its versions. Returns whether it will be logged (false
    /// once the epoch ended or the stream froze: then `install` was not called).
    pub fn fulfil<'a>(
        &self,
        stream: StreamId,
        epoch: Epoch,
        vt: &[u64],
        writes: impl IntoIterator<Item = WriteRef<'a>>,
        install: impl FnOnce(),
    ) -> bool {
        let Some(s) = self.stream(stream) else {
            return false;
        };
        let ts = vt.get(self.shard).copied().unwrap_or(0);
        {
            let mut st = s.state.lock();
            if !self.accepts(epoch)
                || s.frozen.load(Ordering::Acquire)
                || s.ended.load(Ordering::Acquire)
            {
                return false;
            }
            install();
            st.outstanding.remove(&ts);
            self.push_or_hold(&mut st, ts, vt, writes.into_iter().collect());
            self.drain_held(&mut st);
        }
        self.pump(s);
        true
    }

    /// Gives up the reservation `ts` of `stream` made in `epoch` (its transaction aborted);
    /// other reservations stay.
    pub fn cancel(&self, stream: StreamId, epoch: Epoch, ts: u64) {
        if let Some(s) = self.stream(stream) {
            {
                let mut st = s.state.lock();
                if self.epoch() != epoch {
                    return;
                }
                st.outstanding.remove(&ts);
                if self.accepts(epoch) {
                    self.drain_held(&mut st);
                }
            }
            self.pump(s);
        }
    }

    /// Puts a piece stamped `ts` in the stream's batch, or holds it behind an older reservation.
    fn push_or_hold(&self, s: &mut StreamState, ts: u64, vt: &[u64], writes: Vec<WriteRef<'_>>) {
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
        self.push(s, ts, vt, writes);
    }

    /// Adds a piece to the open batch, closing the batch first if the piece would take it past
    /// the entry limit; closed batches go to the outbox.
    fn push(&self, s: &mut StreamState, ts: u64, vt: &[u64], writes: Vec<WriteRef<'_>>) {
        s.last = s.last.max(ts);
        let len = piece_len(vt.len(), writes.iter().copied());
        if s.builder.encoded_len() + len > self.max_entry
            && let Some(b) = s.builder.flush()
        {
            s.outbox.push_back((b, false));
        }
        if let Some(b) = s.builder.push(vt, writes, Instant::now()) {
            s.outbox.push_back((b, false));
        }
        // Group commit: nothing of the stream in flight or queued, so nothing to wait for
        // (and a zero linger waits for nothing).
        if (self.batch.linger.is_zero()
            || self.batch.group_commit && s.in_flight == 0 && s.outbox.is_empty())
            && let Some(b) = s.builder.flush()
        {
            s.outbox.push_back((b, false));
        }
    }

    /// Heartbeats every idle stream other than `busy` up to `ts` (a timestamp already
    /// allocated, so every later piece is stamped above it; capped below each stream's
    /// outstanding reservations), so that `W_s` covers a batch of `busy` without waiting
    /// for the next tick.
    fn heartbeat_idle(&self, busy: StreamId, ts: u64) {
        if !self.batch.group_commit || !self.accepting.load(Ordering::Acquire) {
            return;
        }
        for s in &self.streams {
            if s.id == busy || s.frozen.load(Ordering::Acquire) || s.ended.load(Ordering::Acquire) {
                continue;
            }
            {
                let mut st = s.state.lock();
                let w = st.heartbeat_cap(ts);
                if !st.builder.is_empty() || !st.outbox.is_empty() || w <= st.last {
                    continue;
                }
                st.last = w;
                let hb = st.builder.heartbeat(w);
                st.outbox.push_back((hb, true));
            }
            self.pump(s);
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
            let writes = p
                .writes
                .iter()
                .map(|(table, key, value)| WriteRef {
                    table: *table,
                    key,
                    value: value.as_deref(),
                })
                .collect();
            self.push(s, ts, &p.vt, writes);
        }
    }

    /// Flushes batches past their linger; then, if `clock` moved, heartbeats every idle stream
    /// at `clock`; submits (or retries) every outbox.
    pub fn tick(&self, now: Instant, clock: u64) {
        for s in &self.streams {
            if s.frozen.load(Ordering::Acquire) {
                continue;
            }
            if self.accepting.load(Ordering::Acquire) && !s.ended.load(Ordering::Acquire) {
                let mut st = s.state.lock();
                if let Some(b) = st.builder.poll(now) {
                    st.outbox.push_back((b, false));
                }
                let w = st.heartbeat_cap(clock);
                if st.builder.is_empty() && st.outbox.is_empty() && w > st.last {
                    st.last = w;
                    let hb = st.builder.heartbeat(w);
                    st.outbox.push_back((hb, true));
                }
            }
            self.pump(s);
        }
    }

    /// Flushes every open batch now.
    pub fn flush(&self) {
        for s in &self.streams {
            {
                let mut st = s.state.lock();
                if let Some(b) = st.builder.flush() {
                    st.outbox.push_back((b, false));
                }
            }
            self.pump(s);
        }
    }

    /// Counters.
    pub fn stats(&self) -> StreamStats {
        *self.stats.lock()
    }
}

impl CommitSink for StreamLog {
    fn pace(&self) {
        self.throttle();
    }

    fn admit(
        &self,
        stream: u32,
        vt_len: usize,
        writes: &PieceWrites<'_>,
    ) -> Result<(), AbortReason> {
        self.check(stream, vt_len, writes.iter())
    }

    fn append(
        &self,
        stream: u32,
        epoch: u32,
        stamp: &mut dyn FnMut() -> Vt,
        writes: &PieceWrites<'_>,
    ) -> Result<Vt, AbortReason> {
        let s = self.stream(stream).ok_or(AbortReason::LogUnavailable)?;
        let vt = {
            let mut st = s.state.lock();
            if s.frozen.load(Ordering::Acquire) || s.ended.load(Ordering::Acquire) {
                return Err(AbortReason::LogUnavailable);
            }
            if !self.accepts(epoch) {
                // Its epoch ended between validation and here: not logged, not stamped.
                return Err(AbortReason::Failover);
            }
            let vt = stamp();
            let ts = vt.get(self.shard).copied().unwrap_or(0);
            self.push_or_hold(&mut st, ts, &vt, writes.iter().collect());
            vt
        };
        self.pump(s);
        Ok(vt)
    }
}
