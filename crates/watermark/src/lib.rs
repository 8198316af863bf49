//! The watermark rules of mako-rs, in one place.
//!
//! * **`W_s`** ([`ShardWatermark`]): every transaction with `VT[s] <= W_s` has its
//!   shard-`s` piece committed in group `s`. It is a function of the shard's
//!   committed log prefix alone (DESIGN.md section 4, realization (b)): the log
//!   multiplexes a fixed set of *streams* (one per coordinator worker of every
//!   shard), each stream's pieces arrive in increasing `VT[s]`, and
//!   `W_s = min over live streams of the stream's largest committed VT[s]`.
//!   `Heartbeat { stream, w }` moves an idle stream, `Ending { stream }` retires
//!   one. A stream's entries are numbered; a gap (a lost entry) stops the stream
//!   for the rest of the epoch. Any replica, and a new leader, feeding the same
//!   committed entries in log order computes the same `W_s`.
//! * **Epochs** ([`epoch`]): `W_s` is counted per epoch ([`LogWatermark`]); the
//!   `meta` group's [`EpochHistory`] fixes each closed epoch's final watermark
//!   `FVW(e)`, and the discard rule ([`Fate`]) keeps exactly the epoch-`e`
//!   transactions with `VT <= FVW(e)`.
//! * **`VW`** ([`WatermarkVector`]): the vector `[W_0 .. W_{S-1}]` known at a
//!   replica. Each component only grows (`advance` is a per-component max); a max
//!   is never taken across different shards.
//! * **Release** ([`covers`]): a transaction may be acknowledged, and a follower
//!   may replay its piece, once `VT <= VW` component-wise.
//!
//! ```
//! use mako_commitlog::Entry;
//! use mako_watermark::{ShardWatermark, WatermarkVector, covers, stream_id};
//!
//! let (a, b) = (stream_id(0, 0), stream_id(1, 0));
//! let mut w = ShardWatermark::new([a, b]);
//! w.observe(0, &Entry::Heartbeat { epoch: 0, stream: a, seq: 0, w: 5 });
//! assert_eq!(w.value(), 0);          // stream b has committed nothing yet
//! w.observe(0, &Entry::Heartbeat { epoch: 0, stream: b, seq: 0, w: 7 });
//! assert_eq!(w.value(), 5);
//! let vw = WatermarkVector::new(2);
//! vw.advance(0, w.value());
//! assert!(covers(&[5, 0], &vw.load()));
//! assert!(!covers(&[5, 1], &vw.load()));
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::Thread;
use std::time::Instant;

use mako_commitlog::Entry;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub mod epoch;

pub use epoch::{Epoch, EpochError, EpochHistory, Fate, LogWatermark, MetaCommand};

/// Identifier of a commit-log stream: the coordinating shard and its worker.
pub type StreamId = u32;

/// The stream of worker `worker` of shard `shard`.
pub fn stream_id(shard: u32, worker: u32) -> StreamId {
    (shard << 16) | (worker & 0xffff)
}

/// The shard whose worker owns `stream`.
pub fn stream_shard(stream: StreamId) -> u32 {
    stream >> 16
}

/// Whether `vt <= vw` component-wise (missing components of `vw` count as 0).
pub fn covers(vt: &[u64], vw: &[u64]) -> bool {
    vt.iter()
        .enumerate()
        .all(|(i, t)| *t == 0 || vw.get(i).is_some_and(|w| t <= w))
}

/// One stream's standing in `W_s`: its largest committed timestamp and the next entry expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StreamMark {
    /// Largest `VT[s]` (or heartbeat `w`) committed contiguously on the stream.
    w: u64,
    /// `seq` of the next entry of the stream.
    next: u64,
    /// An entry of the stream is missing from the log: it no longer moves.
    broken: bool,
}

/// `W_s` of one shard within one epoch, computed from its committed log entries in order.
///
/// A stream's entries carry consecutive sequence numbers from 0 within the epoch.
/// An entry whose number skips one (a lost submission) **breaks** the stream: it
/// stays at the timestamp it had reached for the rest of the epoch, so `W_s` never
/// passes a piece that is missing from the log. A repeated number is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardWatermark {
    streams: BTreeMap<StreamId, StreamMark>,
    ended: Vec<StreamId>,
}

impl ShardWatermark {
    /// A watermark over the given (fixed, configured) set of streams, all at 0.
    pub fn new(streams: impl IntoIterator<Item = StreamId>) -> Self {
        ShardWatermark {
            streams: streams
                .into_iter()
                .map(|s| {
                    (
                        s,
                        StreamMark {
                            w: 0,
                            next: 0,
                            broken: false,
                        },
                    )
                })
                .collect(),
            ended: Vec::new(),
        }
    }

    /// The current `W_s`: the minimum over live streams (`u64::MAX` once all ended).
    pub fn value(&self) -> u64 {
        self.streams.values().map(|m| m.w).min().unwrap_or(u64::MAX)
    }

    /// Entry number `seq` of `stream`, committing timestamps up to `ts` (`None`: no timestamp).
    fn observe_seq(&mut self, stream: StreamId, seq: u64, ts: Option<u64>) {
        let Some(m) = self.streams.get_mut(&stream) else {
            return;
        };
        if m.broken || seq < m.next {
            return;
        }
        if seq > m.next {
            m.broken = true;
            return;
        }
        m.next = seq + 1;
        if let Some(ts) = ts {
            m.w = m.w.max(ts);
        }
    }

    /// A committed `Ending`: `stream` no longer holds the minimum back.
    pub fn observe_ending(&mut self, stream: StreamId) {
        if self.streams.remove(&stream).is_some() {
            self.ended.push(stream);
        }
    }

    /// Feeds one committed entry of shard `shard`'s log (of this watermark's epoch); returns `W_s`.
    ///
    /// Epochs are not checked here: [`LogWatermark`] routes entries by epoch.
    pub fn observe(&mut self, shard: usize, entry: &Entry) -> u64 {
        match entry {
            Entry::Batch(b) => {
                let ts = b.pieces.iter().filter_map(|p| p.vt.get(shard)).max();
                self.observe_seq(b.stream, b.seq, ts.copied());
            }
            Entry::Heartbeat { stream, seq, w, .. } => self.observe_seq(*stream, *seq, Some(*w)),
            Entry::Ending { stream } => self.observe_ending(*stream),
            Entry::NoOp { .. } | Entry::Advancer => {}
        }
        self.value()
    }

    /// The live streams and their largest committed timestamps.
    pub fn streams(&self) -> impl Iterator<Item = (StreamId, u64)> + '_ {
        self.streams.iter().map(|(s, m)| (*s, m.w))
    }

    /// Streams retired by a committed `Ending`.
    pub fn ended(&self) -> &[StreamId] {
        &self.ended
    }

    /// Streams broken by a missing entry.
    pub fn broken(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.streams
            .iter()
            .filter(|(_, m)| m.broken)
            .map(|(s, _)| *s)
    }
}

/// `VW` as known at one replica: component-wise monotonic, with waiting for coverage.
///
/// A waiter for a stamp sleeps until the first component it is not covered by reaches its
/// value (or [`WatermarkVector::notify`]): a move wakes only the waiters it may release,
/// not every waiter (hundreds of client threads would otherwise wake at every move).
#[derive(Debug)]
pub struct WatermarkVector {
    comps: Box<[AtomicU64]>,
    waiters: Mutex<Waiters>,
}

/// Sleeping waiters: by the component and value each waits for, and those woken by any change.
#[derive(Debug, Default)]
struct Waiters {
    next: u64,
    /// Per component: (value waited for, waiter id) -> its thread.
    on: Vec<BTreeMap<(u64, u64), Thread>>,
    /// Woken by every move and every notify.
    any: BTreeMap<u64, Thread>,
}

/// Where a waiter is registered.
#[derive(Debug, Clone, Copy)]
enum WaitKey {
    On(usize, u64, u64),
    Any(u64),
}

impl WatermarkVector {
    /// A vector of `shards` zeros.
    pub fn new(shards: usize) -> Self {
        WatermarkVector {
            comps: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            waiters: Mutex::new(Waiters {
                on: vec![BTreeMap::new(); shards],
                ..Waiters::default()
            }),
        }
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.comps.len()
    }

    /// Whether the vector has no component.
    pub fn is_empty(&self) -> bool {
        self.comps.is_empty()
    }

    /// Raises component `shard` to `w` if that is higher; returns whether it moved.
    pub fn advance(&self, shard: usize, w: u64) -> bool {
        let Some(c) = self.comps.get(shard) else {
            return false;
        };
        if c.fetch_max(w, Ordering::AcqRel) >= w {
            return false;
        }
        // Registration happens before a waiter's last check, both under this lock's order:
        // a waiter that missed this move is in the map below.
        let (due, any) = {
            let mut g = self.waiters.lock();
            let due = match w.checked_add(1) {
                Some(above) => {
                    let rest = g.on[shard].split_off(&(above, 0));
                    std::mem::replace(&mut g.on[shard], rest)
                }
                None => std::mem::take(&mut g.on[shard]),
            };
            let any: Vec<Thread> = g.any.values().cloned().collect();
            (due, any)
        };
        // Woken after the lock is released: an unpark is a system call, and every waiter
        // takes this lock to register and unregister.
        for t in due.into_values().chain(any) {
            t.unpark();
        }
        true
    }

    /// Raises every component to the matching one of `other`.
    pub fn advance_all(&self, other: &[u64]) -> bool {
        let mut moved = false;
        for (i, w) in other.iter().enumerate() {
            moved |= self.advance(i, *w);
        }
        moved
    }

    /// Component `shard`.
    pub fn get(&self, shard: usize) -> u64 {
        self.comps
            .get(shard)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// A copy of the vector.
    pub fn load(&self) -> Vec<u64> {
        self.comps
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .collect()
    }

    /// Whether `vt <= VW` now.
    pub fn covers(&self, vt: &[u64]) -> bool {
        vt.iter()
            .enumerate()
            .all(|(i, t)| *t == 0 || *t <= self.get(i))
    }

    /// Wakes every waiter without moving the vector (something else they wait on changed).
    pub fn notify(&self) {
        let all: Vec<Thread> = {
            let g = self.waiters.lock();
            g.on.iter()
                .flat_map(BTreeMap::values)
                .chain(g.any.values())
                .cloned()
                .collect()
        };
        for t in all {
            t.unpark();
        }
    }

    /// Waits until `done()` holds, re-checking whenever the vector moves or [`Self::notify`]
    /// is called, or until `deadline`; returns the last answer of `done`.
    pub fn wait_until(&self, deadline: Instant, done: impl FnMut() -> bool) -> bool {
        self.wait(deadline, None, done)
    }

    /// Waits until `done()` holds or `deadline` passes, for a `done` that can only turn true
    /// once `vt <= VW` or after [`Self::notify`]: re-checks when the first component not
    /// covering `vt` reaches it, or on a notify. Returns the last answer of `done`.
    pub fn wait_for(&self, deadline: Instant, vt: &[u64], done: impl FnMut() -> bool) -> bool {
        self.wait(deadline, Some(vt), done)
    }

    /// Waits until `vt <= VW` or `deadline` passes; returns whether it is covered.
    pub fn wait_covers(&self, vt: &[u64], deadline: Instant) -> bool {
        self.wait_for(deadline, vt, || self.covers(vt))
    }

    fn wait(&self, deadline: Instant, vt: Option<&[u64]>, mut done: impl FnMut() -> bool) -> bool {
        if done() {
            return true;
        }
        loop {
            let key = self.register(vt);
            // Checked after registering: a change after this check wakes this thread.
            let d = done();
            let now = Instant::now();
            if d || now >= deadline {
                self.unregister(key);
                return d;
            }
            std::thread::park_timeout(deadline - now);
            self.unregister(key);
        }
    }

    /// Registers the calling thread to be woken when the first component not covering `vt`
    /// reaches it (by any change if `vt` is `None` or covered).
    fn register(&self, vt: Option<&[u64]>) -> WaitKey {
        let first = vt.and_then(|vt| {
            vt.iter()
                .enumerate()
                .find(|(i, t)| **t != 0 && **t > self.get(*i))
                .map(|(i, t)| (i, *t))
        });
        let me = std::thread::current();
        let mut g = self.waiters.lock();
        g.next += 1;
        let id = g.next;
        match first {
            Some((i, t)) if i < g.on.len() => {
                g.on[i].insert((t, id), me);
                WaitKey::On(i, t, id)
            }
            _ => {
                g.any.insert(id, me);
                WaitKey::Any(id)
            }
        }
    }

    fn unregister(&self, key: WaitKey) {
        let mut g = self.waiters.lock();
        match key {
            WaitKey::On(i, t, id) => {
                g.on[i].remove(&(t, id));
            }
            WaitKey::Any(id) => {
                g.any.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mako_commitlog::{Batch, Piece};
    use std::sync::Arc;
    use std::time::Duration;

    /// Waiters registered on component `i` and waiting for any change.
    fn registered(vw: &WatermarkVector, i: usize) -> (usize, usize) {
        let g = vw.waiters.lock();
        (g.on[i].len(), g.any.len())
    }

    fn until(mut f: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < end, "condition not reached");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_waiter_is_woken_only_by_the_move_that_may_cover_it() {
        let vw = Arc::new(WatermarkVector::new(2));
        vw.advance(1, 2);
        let deadline = Instant::now() + Duration::from_secs(30);
        let w = {
            let vw = Arc::clone(&vw);
            std::thread::spawn(move || vw.wait_covers(&[5, 2], deadline))
        };
        until(|| registered(&vw, 0) == (1, 0));
        // Moves that cannot cover it leave it asleep and registered.
        vw.advance(0, 4);
        vw.advance(1, 9);
        assert_eq!(registered(&vw, 0), (1, 0));
        assert!(!w.is_finished());
        vw.advance(0, 5);
        assert!(
            w.join().expect("waiter"),
            "covered once component 0 reached 5"
        );
        assert_eq!(registered(&vw, 0), (0, 0), "nothing left registered");
    }

    #[test]
    fn a_general_waiter_is_woken_by_notify_and_times_out_otherwise() {
        let vw = Arc::new(WatermarkVector::new(1));
        let flag = Arc::new(AtomicU64::new(0));
        let w = {
            let (vw, flag) = (Arc::clone(&vw), Arc::clone(&flag));
            std::thread::spawn(move || {
                vw.wait_until(Instant::now() + Duration::from_secs(30), || {
                    flag.load(Ordering::Acquire) == 1
                })
            })
        };
        until(|| registered(&vw, 0) == (0, 1));
        flag.store(1, Ordering::Release);
        vw.notify();
        assert!(w.join().expect("waiter"));
        let start = Instant::now();
        assert!(!vw.wait_covers(&[1], start + Duration::from_millis(50)));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(registered(&vw, 0), (0, 0));
    }

    #[test]
    fn w_s_is_the_minimum_over_live_streams_and_ending_releases_it() {
        let (a, b) = (stream_id(0, 0), stream_id(0, 1));
        let mut w = ShardWatermark::new([a, b]);
        let mut seqs = std::collections::HashMap::new();
        let mut batch = |stream, ts: &[u64]| {
            let seq = seqs.entry(stream).or_insert(0u64);
            *seq += 1;
            Entry::Batch(Batch {
                epoch: 0,
                stream,
                seq: *seq - 1,
                pieces: ts
                    .iter()
                    .map(|t| Piece {
                        vt: vec![*t, 0],
                        writes: vec![],
                    })
                    .collect(),
            })
        };
        assert_eq!(w.observe(0, &batch(a, &[3, 9])), 0);
        assert_eq!(w.observe(0, &batch(b, &[4])), 4);
        let hb = Entry::Heartbeat {
            epoch: 0,
            stream: b,
            seq: 1,
            w: 20,
        };
        assert_eq!(w.observe(0, &hb), 9);
        assert_eq!(w.observe(0, &Entry::Ending { stream: a }), 20);
        assert_eq!(w.observe(0, &Entry::Ending { stream: b }), u64::MAX);
        // Unknown streams and markers change nothing.
        let mut w2 = ShardWatermark::new([a]);
        w2.observe(0, &batch(stream_id(5, 5), &[100]));
        w2.observe(0, &Entry::NoOp { epoch: 1 });
        assert_eq!(w2.value(), 0);
    }

    #[test]
    fn vw_is_componentwise_monotonic_and_wakes_waiters() {
        let vw = std::sync::Arc::new(WatermarkVector::new(2));
        assert!(vw.advance(1, 5));
        assert!(!vw.advance(1, 3));
        assert_eq!(vw.load(), [0, 5]);
        assert!(vw.covers(&[0, 5]));
        assert!(!vw.covers(&[1, 5]));
        let v2 = vw.clone();
        let t = std::thread::spawn(move || {
            v2.wait_covers(&[2, 5], Instant::now() + std::time::Duration::from_secs(5))
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        vw.advance(0, 2);
        assert!(t.join().expect("waiter"));
        assert!(!vw.wait_covers(&[9, 9], Instant::now()));
    }
}
