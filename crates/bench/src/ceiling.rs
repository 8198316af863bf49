//! The ceiling of the group benchmark: what the bare log store and the bare transport do
//! with the group bench's entry size, durability, transport kind and batching, measured in
//! the same invocation, so a protocol's figures read as a fraction of what the machine
//! allows (and a Raft/Paxos ratio cannot be met by slowing one side).
//!
//! - The log store ([`run_log_ceiling`]): 3 [`LogStore`]s (one per replica, the group
//!   bench's settings: same durability and segment size), each fed by one writer per group
//!   with one `write` per batch of entries, several batches in flight, group commit in the
//!   store's writer thread, and compaction as the group does it. Throughput is that of the
//!   median store (a quorum of 3 needs 2), latency is `write` to durable.
//! - The transport ([`run_transport_ceiling`]): 3 endpoints of the same kind; per group a
//!   "leader" sends each batch of entries to both followers, each follower acknowledges, and
//!   a batch counts when the first follower's acknowledgement (a quorum with the leader)
//!   arrives; round trip is send to that acknowledgement. A batch is sent again to a
//!   follower only within the same in-flight bound the group uses per follower.
//!
//! Both run alone (one after the other), so the ceiling is the lower of the two: an upper
//! bound for any protocol, which also pays for both at once and for its own logic. The
//! group bench feeds the store batches as large as the largest a protocol achieved in the
//! same configuration ([`CeilingConfig::batch_entries`]), so no protocol batches better than
//! the bare store is fed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use mako_group::GroupConfig;
use mako_logstore::{Durability, GroupWrite, HardState, LogEntry, LogError, LogStore};
use mako_transport::{Envelope, SendError, Transport};
use parking_lot::{Condvar, Mutex};

use crate::driver::new_histogram;
use crate::group::{
    GroupBenchConfig, IDS, Net, NetKind, compact_after, effective_window, log_config, wait_ready,
};

/// Warm-up before the measured phase (the group bench's).
const WARMUP: Duration = Duration::from_millis(500);

/// A stream that makes no progress this long has stalled (the run fails rather than hangs).
const STALL: Duration = Duration::from_secs(5);

/// One ceiling measurement.
#[derive(Debug, Clone)]
pub struct CeilingConfig {
    /// Transport kind (the transport part).
    pub net: NetKind,
    /// Bytes per entry.
    pub entry_bytes: usize,
    /// Streams: one per group of the group bench.
    pub groups: usize,
    /// Log durability (the log store part).
    pub durability: Durability,
    /// Measured time of each part.
    pub duration: Duration,
    /// Entries in flight per group (the group bench's window, capped the same way).
    pub window: usize,
    /// Entries per log write (messages hold at most an append message's bytes of them); 0
    /// derives it ([`CeilingConfig::write_batch`]). The group bench sets it to the batching
    /// the protocols achieved.
    pub batch_entries: usize,
}

impl CeilingConfig {
    /// The ceiling of a group bench configuration (its protocol and rate do not matter).
    pub fn for_group(cfg: &GroupBenchConfig) -> Self {
        CeilingConfig {
            net: cfg.net,
            entry_bytes: cfg.entry_bytes,
            groups: cfg.groups,
            durability: cfg.durability,
            duration: cfg.duration,
            window: cfg.window,
            batch_entries: 0,
        }
    }

    /// Entries per log write: unless set, the window spread over a group's appends in
    /// flight per follower, at most one append message's bytes (the group defaults of
    /// [`GroupConfig`]), at least 1.
    pub fn write_batch(&self) -> usize {
        if self.batch_entries > 0 {
            return self.batch_entries;
        }
        let g = GroupConfig::new(1, vec![1], 0);
        (self.window() / g.max_inflight.max(1)).clamp(1, self.per_message())
    }

    /// Entries per message: the write batch, at most one append message's bytes.
    pub fn message_batch(&self) -> usize {
        self.write_batch().min(self.per_message())
    }

    /// Log writes in flight per store and group: twice the window's worth, so the store is
    /// kept busy while a group commit syncs (a group's replicas together hold more than one
    /// window in writes: the leader's append and the followers' overlap).
    pub fn writes_in_flight(&self) -> usize {
        (2 * self.window()).div_ceil(self.write_batch()).max(1)
    }

    /// Messages in flight per follower and group: the window's worth, at most the group's
    /// appends in flight per follower.
    pub fn messages_in_flight(&self) -> usize {
        let g = GroupConfig::new(1, vec![1], 0);
        self.window()
            .div_ceil(self.message_batch())
            .clamp(1, g.max_inflight.max(1))
    }

    /// Entries of `entry_bytes` one append message holds (at least 1).
    fn per_message(&self) -> usize {
        let g = GroupConfig::new(1, vec![1], 0);
        (g.max_append_bytes as usize / self.entry_bytes.max(1)).max(1)
    }

    fn window(&self) -> usize {
        effective_window(self.window, self.entry_bytes)
    }
}

/// The bare log store's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogCeiling {
    /// Entries per `write` call.
    pub write_batch: usize,
    /// Entries made durable per second by the median store.
    pub entries_per_sec: f64,
    /// The same in payload megabytes per second.
    pub mb_per_sec: f64,
    /// `write` calls per second over the 3 stores.
    pub writes_per_sec: f64,
    /// Syncs per second over the 3 stores.
    pub syncs_per_sec: f64,
    /// `write` to durable, p50 µs (all stores).
    pub write_p50_us: f64,
    /// p99 µs.
    pub write_p99_us: f64,
}

/// The bare transport's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NetCeiling {
    /// Entries acknowledged by a quorum per second (all streams).
    pub entries_per_sec: f64,
    /// The same in payload megabytes per second.
    pub mb_per_sec: f64,
    /// Batches sent per second (each to both followers).
    pub messages_per_sec: f64,
    /// Send to the first follower's acknowledgement, p50 µs.
    pub rtt_p50_us: f64,
    /// p99 µs.
    pub rtt_p99_us: f64,
}

/// Both parts and the ceiling they set.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CeilingReport {
    /// Transport kind.
    pub net: NetKind,
    /// Bytes per entry.
    pub entry_bytes: usize,
    /// Streams (groups).
    pub groups: usize,
    /// Durability mode name.
    pub durability: &'static str,
    /// Entries per log write.
    pub write_batch: usize,
    /// Log writes in flight per store and stream.
    pub writes_in_flight: usize,
    /// Entries per message.
    pub message_batch: usize,
    /// Messages in flight per follower and stream.
    pub messages_in_flight: usize,
    /// The log store part.
    pub log: LogCeiling,
    /// The transport part.
    pub transport: NetCeiling,
    /// The lower of the two, entries/s.
    pub entries_per_sec: f64,
    /// Which part sets it: `log store` or `transport`.
    pub bound: &'static str,
}

/// Why a ceiling measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    /// Temp dirs, sockets.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A log store would not open, or a write failed.
    #[error("log store: {0}")]
    Log(#[from] LogError),
    /// A send failed for another reason than a full queue.
    #[error("transport: {0}")]
    Send(#[from] SendError),
    /// A stream made no progress for 5 s.
    #[error("the {0} ceiling made no progress for 5 s")]
    Stalled(&'static str),
}

/// Measures both parts, one after the other.
pub fn run_ceiling(cfg: &CeilingConfig) -> Result<CeilingReport, CeilingError> {
    let log = run_log_ceiling(cfg)?;
    let transport = run_transport_ceiling(cfg)?;
    let (entries_per_sec, bound) = if log.entries_per_sec <= transport.entries_per_sec {
        (log.entries_per_sec, "log store")
    } else {
        (transport.entries_per_sec, "transport")
    };
    Ok(CeilingReport {
        net: cfg.net,
        entry_bytes: cfg.entry_bytes,
        groups: cfg.groups,
        durability: cfg.durability.as_str(),
        write_batch: log.write_batch,
        writes_in_flight: cfg.writes_in_flight(),
        message_batch: cfg.message_batch(),
        messages_in_flight: cfg.messages_in_flight(),
        log,
        transport,
        entries_per_sec,
        bound,
    })
}

/// One writer's (or sender's) flow control and measurements.
struct Stream {
    /// Batches in flight.
    inflight: Mutex<usize>,
    room: Condvar,
    hist: Mutex<Histogram<u64>>,
    /// Entries completed while measuring.
    done: AtomicU64,
}

impl Stream {
    fn new() -> Arc<Stream> {
        Arc::new(Stream {
            inflight: Mutex::new(0),
            room: Condvar::new(),
            hist: Mutex::new(new_histogram()),
            done: AtomicU64::new(0),
        })
    }
}

/// Measures the bare log store: see the module documentation.
pub fn run_log_ceiling(cfg: &CeilingConfig) -> Result<LogCeiling, CeilingError> {
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let mut stores = Vec::new();
    for id in IDS {
        let lc = log_config(&dir.path().join(format!("log-{id}")), cfg.durability);
        let (log, _recovered) = LogStore::open(lc.clone())?;
        // As in the group bench: the first segment and the spares are ready first.
        wait_ready(&log, &lc, cfg.groups as u32)?;
        stores.push(Arc::new(log));
    }
    // Every stream's group has a hard state before the measurement.
    for log in &stores {
        let first = (0..cfg.groups as u32)
            .map(|g| GroupWrite {
                hard_state: Some(HardState {
                    term: 1,
                    vote: 1,
                    commit: 0,
                }),
                ..GroupWrite::new(g)
            })
            .collect();
        log.write_sync(first)?;
    }
    // A write must fit the store's limit (half of it, to leave room for the rest).
    let fits = (stores[0].max_write_bytes() as usize / 2 / (cfg.entry_bytes + 64)).max(1);
    let (batch, in_flight) = (cfg.write_batch().min(fits), cfg.writes_in_flight());
    let keep = compact_after(cfg.entry_bytes);
    let payload = Bytes::from(vec![0u8; cfg.entry_bytes]);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<CeilingError>> = Mutex::new(None);
    // The first failed write's error, set by the store's callbacks.
    let write_error: Arc<Mutex<Option<LogError>>> = Arc::default();
    let streams: Vec<Vec<Arc<Stream>>> = stores
        .iter()
        .map(|_| (0..cfg.groups).map(|_| Stream::new()).collect())
        .collect();
    let stats = |stores: &[Arc<LogStore>]| {
        stores.iter().fold((0u64, 0u64), |(s, w), l| {
            let st = l.stats();
            (s + st.syncs, w + st.writes)
        })
    };
    let mut during = (0, 0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for (store, per_group) in stores.iter().zip(&streams) {
            for (g, stream) in per_group.iter().enumerate() {
                let (stop, failure, measuring, payload) = (&stop, &failure, &measuring, &payload);
                let write_error = &write_error;
                s.spawn(move || {
                    let mut index = 1u64;
                    let mut compacted = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(e) = write_error.lock().take() {
                            failure.lock().get_or_insert(CeilingError::Log(e));
                            stop.store(true, Ordering::Relaxed);
                            break;
                        }
                        {
                            let mut n = stream.inflight.lock();
                            let since = Instant::now();
                            while *n >= in_flight && !stop.load(Ordering::Relaxed) {
                                if stream.room.wait_for(&mut n, STALL).timed_out()
                                    && since.elapsed() >= STALL
                                {
                                    failure
                                        .lock()
                                        .get_or_insert(CeilingError::Stalled("log store"));
                                    stop.store(true, Ordering::Relaxed);
                                }
                            }
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            *n += 1;
                        }
                        let entries = (0..batch as u64)
                            .map(|i| LogEntry::new(index + i, 1, payload.clone()))
                            .collect();
                        let mut w = GroupWrite {
                            entries,
                            hard_state: Some(HardState {
                                term: 1,
                                vote: 1,
                                commit: index - 1,
                            }),
                            ..GroupWrite::new(g as u32)
                        };
                        // Compact as the group does: keep `keep` entries, in steps of `keep`.
                        if index > compacted + 2 * keep {
                            compacted = index - keep;
                            w.compact_to = Some(compacted);
                        }
                        index += batch as u64;
                        let t0 = Instant::now();
                        let (stream2, measuring) = (Arc::clone(stream), Arc::clone(measuring));
                        let errors = Arc::clone(write_error);
                        store.write(
                            vec![w],
                            Box::new(move |r| {
                                if let Err(e) = r {
                                    errors.lock().get_or_insert(e);
                                } else if measuring.load(Ordering::Relaxed) {
                                    let ns = t0.elapsed().as_nanos() as u64;
                                    let _ = stream2.hist.lock().record(ns.max(1));
                                    stream2.done.fetch_add(batch as u64, Ordering::Relaxed);
                                }
                                let mut n = stream2.inflight.lock();
                                *n = n.saturating_sub(1);
                                stream2.room.notify_all();
                            }),
                        );
                    }
                });
            }
        }
        std::thread::sleep(WARMUP.saturating_sub(started.elapsed()));
        measuring.store(true, Ordering::Relaxed);
        let before = stats(&stores);
        std::thread::sleep(cfg.duration);
        measuring.store(false, Ordering::Relaxed);
        let after = stats(&stores);
        during = (after.0 - before.0, after.1 - before.1);
        stop.store(true, Ordering::Relaxed);
        for st in streams.iter().flatten() {
            let _n = st.inflight.lock();
            st.room.notify_all();
        }
    });
    for l in &stores {
        l.shutdown();
    }
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    if let Some(e) = write_error.lock().take() {
        return Err(e.into());
    }
    let secs = cfg.duration.as_secs_f64();
    let mut per_store: Vec<u64> = streams
        .iter()
        .map(|g| g.iter().map(|s| s.done.load(Ordering::Relaxed)).sum())
        .collect();
    per_store.sort_unstable();
    let median = per_store[per_store.len() / 2];
    let mut hist = new_histogram();
    for st in streams.iter().flatten() {
        let _ = hist.add(&*st.hist.lock());
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(LogCeiling {
        write_batch: batch,
        entries_per_sec: median as f64 / secs,
        mb_per_sec: median as f64 * cfg.entry_bytes as f64 / secs / 1e6,
        writes_per_sec: during.1 as f64 / secs,
        syncs_per_sec: during.0 as f64 / secs,
        write_p50_us: us(0.5),
        write_p99_us: us(0.99),
    })
}

/// Header of a ceiling message: sequence number, 8 bytes reserved.
const MSG_HEADER: usize = 16;

/// A leader stream's progress: batches sent and acknowledged per follower.
struct Flight {
    /// Next batch to send.
    next: u64,
    /// Batches acknowledged by each follower (cumulative: links are FIFO).
    acked: [u64; 2],
    /// Batches acknowledged by a quorum (the first follower).
    quorum: u64,
    /// Send instants (ns from the start) by batch number modulo the ring size.
    sent_at: Vec<u64>,
    /// When the quorum last advanced.
    progress: Instant,
}

/// Measures the bare transport: see the module documentation.
pub fn run_transport_ceiling(cfg: &CeilingConfig) -> Result<NetCeiling, CeilingError> {
    let mut net = Net::start(cfg.net)?;
    let mut endpoints = std::mem::take(&mut net.endpoints).into_iter();
    let (Some(leader), Some(f1), Some(f2)) = (endpoints.next(), endpoints.next(), endpoints.next())
    else {
        return Err(CeilingError::Io(std::io::Error::other(
            "the benchmark network has fewer than 3 endpoints",
        )));
    };
    let (batch, in_flight) = (cfg.message_batch(), cfg.messages_in_flight());
    let ring = in_flight.next_power_of_two() * 2;
    let body = vec![0u8; batch * cfg.entry_bytes];
    let started = Instant::now();
    let ns = move || started.elapsed().as_nanos() as u64;
    let measuring = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<CeilingError>> = Mutex::new(None);
    let fail = |e: CeilingError| {
        failure.lock().get_or_insert(e);
        stop.store(true, Ordering::Relaxed);
    };
    let flights: Vec<(Mutex<Flight>, Condvar)> = (0..cfg.groups)
        .map(|_| {
            (
                Mutex::new(Flight {
                    next: 0,
                    acked: [0; 2],
                    quorum: 0,
                    sent_at: vec![0; ring],
                    progress: Instant::now(),
                }),
                Condvar::new(),
            )
        })
        .collect();
    let hist = Mutex::new(new_histogram());
    let done = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    // Sends, retrying while the queue is full (the group's transports never block either).
    let send = |t: &dyn Transport, env: Envelope, stop: &AtomicBool| -> Result<(), SendError> {
        loop {
            match t.send(env.clone()) {
                Ok(()) => return Ok(()),
                Err(SendError::Full) if !stop.load(Ordering::Relaxed) => std::thread::yield_now(),
                Err(SendError::Full) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    };
    let leader_id = leader.0.local_id();
    let mut during = 0;
    std::thread::scope(|s| {
        // Followers: acknowledge every batch with its header.
        for (t, rx) in [&f1, &f2] {
            let (stop, fail, send) = (&stop, &fail, &send);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let env = match rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(env) => env,
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    };
                    let Some(header) = env.payload.get(..MSG_HEADER) else {
                        continue;
                    };
                    let ack = Envelope {
                        group: env.group,
                        from: t.local_id(),
                        to: env.from,
                        payload: Bytes::copy_from_slice(header),
                    };
                    if let Err(e) = send(t.as_ref(), ack, stop) {
                        fail(e.into());
                    }
                }
            });
        }
        // The leader's inbox: acknowledgements.
        {
            let (stop, flights, hist, done, measuring) =
                (&stop, &flights, &hist, &done, &measuring);
            let (rx, f1_id) = (&leader.1, f1.0.local_id());
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let env = match rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(env) => env,
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    };
                    let Some((fl, cv)) = flights.get(env.group as usize) else {
                        continue;
                    };
                    let Some(seq) = env
                        .payload
                        .get(..8)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(u64::from_le_bytes)
                    else {
                        continue;
                    };
                    let now = ns();
                    let mut f = fl.lock();
                    let i = usize::from(env.from != f1_id);
                    f.acked[i] = f.acked[i].max(seq + 1);
                    let q = f.acked[0].max(f.acked[1]);
                    if q > f.quorum {
                        if measuring.load(Ordering::Relaxed) {
                            let mut h = hist.lock();
                            for b in f.quorum..q {
                                let at = f.sent_at[(b as usize) % f.sent_at.len()];
                                let _ = h.record(now.saturating_sub(at).max(1));
                            }
                            done.fetch_add((q - f.quorum) * batch as u64, Ordering::Relaxed);
                        }
                        f.quorum = q;
                        f.progress = Instant::now();
                    }
                    cv.notify_all();
                }
            });
        }
        // The leader's senders, one per group.
        for (g, (fl, cv)) in flights.iter().enumerate() {
            let (stop, fail, send, body, sent) = (&stop, &fail, &send, &body, &sent);
            let (t, targets) = (&leader.0, [f1.0.local_id(), f2.0.local_id()]);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let seq = {
                        let mut f = fl.lock();
                        while f.next - f.acked[0].min(f.acked[1]) >= in_flight as u64
                            && !stop.load(Ordering::Relaxed)
                        {
                            cv.wait_for(&mut f, Duration::from_millis(50));
                            if f.progress.elapsed() >= STALL {
                                fail(CeilingError::Stalled("transport"));
                            }
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let seq = f.next;
                        f.next += 1;
                        let ring = f.sent_at.len();
                        f.sent_at[(seq as usize) % ring] = ns();
                        seq
                    };
                    // Encoding: one copy of the batch into the message, as a protocol does.
                    let mut m = BytesMut::with_capacity(MSG_HEADER + body.len());
                    m.put_u64_le(seq);
                    m.put_u64_le(0);
                    m.extend_from_slice(body);
                    let payload = m.freeze();
                    for to in targets {
                        let env = Envelope {
                            group: g as u32,
                            from: leader_id,
                            to,
                            payload: payload.clone(),
                        };
                        if let Err(e) = send(t.as_ref(), env, stop) {
                            fail(e.into());
                        }
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(WARMUP.saturating_sub(started.elapsed()));
        measuring.store(true, Ordering::Relaxed);
        let before = sent.load(Ordering::Relaxed);
        std::thread::sleep(cfg.duration);
        measuring.store(false, Ordering::Relaxed);
        during = sent.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        for (fl, cv) in &flights {
            let _f = fl.lock();
            cv.notify_all();
        }
    });
    net.shutdown();
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    let secs = cfg.duration.as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    let hist = hist.into_inner();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(NetCeiling {
        entries_per_sec: done as f64 / secs,
        mb_per_sec: done as f64 * cfg.entry_bytes as f64 / secs / 1e6,
        messages_per_sec: during as f64 / secs,
        rtt_p50_us: us(0.5),
        rtt_p99_us: us(0.99),
    })
}
