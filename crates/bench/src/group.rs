//! `mako bench group` (alias `mako bench raft` for Raft alone): one shard's replication group
//! of 3 replicas in one process, run with either protocol ([`Protocol`]), measured.
//!
//! Groups start through [`Protocol::start_group`] on [`mako_group::Host`]s, so both protocols
//! run on the same log store, transport, batching and flow control. Each of `groups` groups
//! gets a submitter thread that proposes numbered entries to its leader, either as fast as a
//! window of outstanding entries allows (unthrottled) or at a fixed rate (paced). The leader's
//! apply callback records submit-to-commit latency; every replica's callbacks check the
//! sequence numbers they apply for gaps, duplicates and reordering.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;
use mako_group::{GroupConfig, Host, HostConfig};
use mako_logstore::{Durability, LogStore, LogStoreConfig};
use mako_replication::{Applied, ApplyStatus, NodeId, Replicator, Role};
use mako_server::Protocol;
use mako_transport::sim::{RealtimeGuard, SimConfig, SimNetwork};
use mako_transport::tcp::{TcpConfig, TcpTransport};
use mako_transport::{Envelope, Transport};
use parking_lot::{Condvar, Mutex};

use crate::driver::new_histogram;
use crate::series::{BUCKET, Quantile, buckets_for, latency_curve};

/// Which transport carries the group's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetKind {
    /// The in-memory network (simulated, real time, no faults).
    Mem,
    /// Loopback TCP.
    Tcp,
}

impl NetKind {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            NetKind::Mem => "mem",
            NetKind::Tcp => "tcp",
        }
    }
}

/// One group benchmark run.
#[derive(Debug, Clone)]
pub struct GroupBenchConfig {
    /// Replication protocol of every group.
    pub protocol: Protocol,
    /// Transport.
    pub net: NetKind,
    /// Bytes per entry.
    pub entry_bytes: usize,
    /// Groups (shards), each with 3 replicas.
    pub groups: usize,
    /// Log durability.
    pub durability: Durability,
    /// Measured time.
    pub duration: Duration,
    /// Total entries per second to submit; `None` submits as fast as the window allows.
    pub rate: Option<f64>,
    /// Entries in flight per group when unthrottled.
    pub window: usize,
}

/// The Raft-only name of [`GroupBenchConfig`] (`mako bench raft`).
pub type RaftBenchConfig = GroupBenchConfig;

/// Results of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupBenchReport {
    /// Replication protocol.
    pub protocol: &'static str,
    /// Transport.
    pub net: NetKind,
    /// Bytes per entry.
    pub entry_bytes: usize,
    /// Groups.
    pub groups: usize,
    /// Durability mode name.
    pub durability: &'static str,
    /// Target rate (entries/s), 0 when unthrottled.
    pub target_rate: f64,
    /// Committed entries per second (all groups).
    pub entries_per_sec: f64,
    /// Committed payload megabytes per second.
    pub mb_per_sec: f64,
    /// Submit-to-commit latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Entries missing from some replica's applied sequence.
    pub gaps: u64,
    /// Entries applied twice by some replica.
    pub duplicates: u64,
    /// Entries applied out of order by some replica.
    pub reordered: u64,
    /// Log syncs per second over all replicas.
    pub syncs_per_sec: f64,
    /// Log store `write` calls per second over all replicas.
    pub log_writes_per_sec: f64,
    /// Committed entries per log store write (every replica stores every entry): the
    /// batching the protocol achieved.
    pub entries_per_log_write: f64,
    /// Leader changes after every group had its first leader (replicas taking the lead;
    /// lost proposals show as gaps).
    pub leader_changes: u64,
    /// Submit-to-commit latency distribution, p0 to p99.99 on a "nines" scale.
    pub commit_latency: Vec<Quantile>,
    /// Width of a series bucket, ms.
    pub bucket_ms: u64,
    /// Entries committed (all groups) in each bucket of the measured phase.
    pub committed_per_bucket: Vec<u64>,
}

/// The Raft-only name of [`GroupBenchReport`].
pub type RaftBenchReport = GroupBenchReport;

/// Header of a benchmark entry: group, sequence number.
const HEADER: usize = 12;

fn entry(group: u32, seq: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(HEADER));
    b.put_u32_le(group);
    b.put_u64_le(seq);
    b.resize(size.max(HEADER), 0);
    b.freeze()
}

fn parse(e: &[u8]) -> Option<(u32, u64)> {
    let g = u32::from_le_bytes(e.get(..4)?.try_into().ok()?);
    let s = u64::from_le_bytes(e.get(4..12)?.try_into().ok()?);
    Some((g, s))
}

/// Per-group measurement state shared by the submitter and the callbacks.
struct GroupMeter {
    /// Submit time (ns since start) by sequence number modulo the ring size.
    submitted_at: Vec<AtomicU64>,
    committed: AtomicU64,
    window: Mutex<()>,
    room: Condvar,
    hist: Mutex<Histogram<u64>>,
    measuring: AtomicBool,
    measured: AtomicU64,
    /// When the measured phase began, ns since the run started.
    measure_from: AtomicU64,
    /// Commits per [`BUCKET`] of the measured phase.
    buckets: Vec<AtomicU64>,
}

#[derive(Default)]
struct Integrity {
    next: Mutex<HashMap<(NodeId, u32), u64>>,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    reordered: AtomicU64,
}

impl Integrity {
    fn check(&self, node: NodeId, group: u32, seq: u64) {
        let mut next = self.next.lock();
        let expected = next.entry((node, group)).or_insert(0);
        if seq == *expected {
            *expected += 1;
        } else if seq > *expected {
            self.gaps.fetch_add(seq - *expected, Ordering::Relaxed);
            *expected = seq + 1;
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            self.reordered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Errors setting up a benchmark cluster.
#[derive(Debug, thiserror::Error)]
pub enum GroupBenchError {
    /// I/O (temp dirs, sockets).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The log store would not open.
    #[error("log store: {0}")]
    Log(#[from] mako_logstore::LogError),
    /// A group would not start (e.g. a protocol not built in).
    #[error("{protocol} group: {source}")]
    Start {
        /// The protocol asked for.
        protocol: Protocol,
        /// Why it did not start.
        source: mako_group::StartError,
    },
    /// No leader emerged.
    #[error("{protocol} group {group} elected no leader within 10 s")]
    NoLeader {
        /// The protocol.
        protocol: Protocol,
        /// The group.
        group: u32,
    },
}

/// The Raft-only name of [`GroupBenchError`].
pub type RaftBenchError = GroupBenchError;

/// The settings of a replica's log store in the group bench (and in the ceiling, which must
/// use the same segment size and batching caps).
pub(crate) fn log_config(dir: &Path, durability: Durability) -> LogStoreConfig {
    let mut lc = LogStoreConfig::new(dir);
    lc.durability = durability;
    lc
}

/// Waits (at most 30 s) until a freshly opened store has its first segment and its
/// pre-zeroed spares ready, so a measurement does not compete with their preparation (a
/// fresh store zeroes them in the background). Probes with hard-state writes of `group`,
/// a group id the caller does not otherwise use (the store's gauges move after writes).
pub(crate) fn wait_ready(
    log: &LogStore,
    cfg: &LogStoreConfig,
    group: u32,
) -> Result<(), mako_logstore::LogError> {
    if cfg.durability == Durability::Memory {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        log.write_sync(vec![mako_logstore::GroupWrite {
            hard_state: Some(mako_logstore::HardState::default()),
            ..mako_logstore::GroupWrite::new(group)
        }])?;
        if log.stats().spare_segments >= cfg.preallocated_segments as u64 {
            return Ok(());
        }
        if Instant::now() > deadline {
            tracing::warn!("log store spares not ready after 30 s; measuring anyway");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Log entries a group keeps before compacting: 64 MiB worth, at least 1,000.
pub(crate) fn compact_after(entry_bytes: usize) -> u64 {
    ((64 << 20) / entry_bytes.max(1)).max(1000) as u64
}

/// Entries in flight per group: the asked window, at most 64 MiB worth, at least 8.
pub(crate) fn effective_window(window: usize, entry_bytes: usize) -> usize {
    window.min((64 << 20) / entry_bytes.max(1)).max(8)
}

/// The replica ids of a benchmark group.
pub(crate) const IDS: [NodeId; 3] = [1, 2, 3];

/// A benchmark network of 3 endpoints: transports with their inboxes, and what must live
/// as long as they do.
pub(crate) struct Net {
    /// One transport and inbox per id of [`IDS`].
    pub endpoints: Vec<(Arc<dyn Transport>, Receiver<Envelope>)>,
    /// TCP transports, shut down by [`Net::shutdown`].
    pub tcp: Vec<Arc<TcpTransport>>,
    /// The in-memory network's pump.
    pub _pump: Option<RealtimeGuard>,
}

impl Net {
    /// Three connected endpoints of kind `kind`.
    pub fn start(kind: NetKind) -> std::io::Result<Net> {
        let mut endpoints: Vec<(Arc<dyn Transport>, Receiver<Envelope>)> = Vec::new();
        let mut tcp = Vec::new();
        let mut pump = None;
        match kind {
            NetKind::Mem => {
                let net = SimNetwork::new(1, SimConfig::default());
                for id in IDS {
                    let (ep, rx) = net.endpoint(id);
                    endpoints.push((Arc::new(ep), rx));
                }
                pump = Some(net.run_realtime());
            }
            NetKind::Tcp => {
                let listen: SocketAddr = "127.0.0.1:0".parse().map_err(std::io::Error::other)?;
                for id in IDS {
                    let tc = TcpConfig {
                        queue_capacity: 1 << 16,
                        ..TcpConfig::default()
                    };
                    let (t, rx) = TcpTransport::start(id, listen, HashMap::new(), tc)?;
                    let t = Arc::new(t);
                    tcp.push(t.clone());
                    endpoints.push((t, rx));
                }
                for a in &tcp {
                    for b in &tcp {
                        if a.local_id() != b.local_id() {
                            a.set_peer_addr(b.local_id(), b.local_addr());
                        }
                    }
                }
            }
        }
        Ok(Net {
            endpoints,
            tcp,
            _pump: pump,
        })
    }

    /// Stops the TCP transports (the pump stops when dropped).
    pub fn shutdown(&self) {
        for t in &self.tcp {
            t.shutdown();
        }
    }
}

struct Cluster {
    hosts: Vec<Host>,
    groups: Vec<Vec<Arc<dyn Replicator>>>,
    net: Net,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(
        cfg: &GroupBenchConfig,
        integrity: &Arc<Integrity>,
    ) -> Result<Cluster, GroupBenchError> {
        let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
        let mut net = Net::start(cfg.net)?;
        let mut hosts = Vec::new();
        for ((t, rx), id) in std::mem::take(&mut net.endpoints).into_iter().zip(IDS) {
            let lc = log_config(&dir.path().join(format!("log-{id}")), cfg.durability);
            let (log, rec) = LogStore::open(lc.clone())?;
            wait_ready(&log, &lc, cfg.groups as u32)?;
            hosts.push(Host::new(
                t,
                rx,
                Arc::new(log),
                rec,
                HostConfig {
                    snapshot_dir: Some(dir.path().join(format!("snap-{id}"))),
                },
            ));
        }
        let mut cluster = Cluster {
            hosts,
            groups: Vec::new(),
            net,
            _dir: dir,
        };
        for g in 0..cfg.groups as u32 {
            let mut replicas = Vec::new();
            for (h, id) in cluster.hosts.iter().zip(IDS) {
                let mut gc = GroupConfig::new(id, IDS.to_vec(), g);
                gc.compact_after_entries = compact_after(cfg.entry_bytes);
                // The bench's application state is the next sequence number it expects: a
                // replica caught up by snapshot continues from there (no false gaps), and
                // the log compacts (memory stays bounded on long runs).
                let snap = SeqSnapshot {
                    integrity: Arc::clone(integrity),
                    node: id,
                    group: g,
                };
                match cfg.protocol.start_group(h, gc, Some(Box::new(snap))) {
                    Ok(r) => replicas.push(r),
                    Err(source) => {
                        cluster.groups.push(replicas);
                        cluster.shutdown();
                        return Err(GroupBenchError::Start {
                            protocol: cfg.protocol,
                            source,
                        });
                    }
                }
            }
            cluster.groups.push(replicas);
        }
        Ok(cluster)
    }

    fn leader(&self, g: usize) -> Option<Arc<dyn Replicator>> {
        self.groups[g]
            .iter()
            .find(|r| r.role() == Role::Leader)
            .cloned()
    }

    fn shutdown(&self) {
        for h in &self.hosts {
            h.shutdown();
        }
        self.net.shutdown();
    }
}

/// Runs one configuration: start 3 replicas per group, submit, measure, check integrity.
pub fn run_group(cfg: &GroupBenchConfig) -> Result<GroupBenchReport, GroupBenchError> {
    let integrity = Arc::new(Integrity::default());
    let cluster = Cluster::start(cfg, &integrity)?;
    let started = Instant::now();
    let window = effective_window(cfg.window, cfg.entry_bytes);
    let ring = window.next_power_of_two() * 4;
    let mut meters = Vec::new();
    // Leader changes: replicas taking the lead (group, term or ballot), counted at the end
    // for terms above the first leader's (terms and ballots are numbered differently, so
    // their rise would not compare across the protocols).
    let took_lead: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    for (g, replicas) in cluster.groups.iter().enumerate() {
        let meter = Arc::new(GroupMeter {
            submitted_at: (0..ring).map(|_| AtomicU64::new(0)).collect(),
            committed: AtomicU64::new(0),
            window: Mutex::new(()),
            room: Condvar::new(),
            hist: Mutex::new(new_histogram()),
            measuring: AtomicBool::new(false),
            measured: AtomicU64::new(0),
            measure_from: AtomicU64::new(0),
            buckets: (0..buckets_for(cfg.duration))
                .map(|_| AtomicU64::new(0))
                .collect(),
        });
        for r in replicas {
            let node = r.id();
            let took = Arc::clone(&took_lead);
            r.on_role_change(Box::new(move |c| {
                if c.role == Role::Leader {
                    took.lock().push((c.shard, c.term));
                }
            }));
            for role in [Role::Leader, Role::Follower] {
                let (m, integ) = (meter.clone(), integrity.clone());
                r.on_apply(
                    role,
                    Box::new(move |ctx| {
                        let Some((group, seq)) = parse(ctx.entry) else {
                            return Applied::normal(0);
                        };
                        integ.check(node, group, seq);
                        if role == Role::Leader {
                            let at = m.submitted_at[(seq as usize) % m.submitted_at.len()]
                                .load(Ordering::Acquire);
                            let now = started.elapsed().as_nanos() as u64;
                            if m.measuring.load(Ordering::Acquire) {
                                let _ = m.hist.lock().record(now.saturating_sub(at).max(1));
                                m.measured.fetch_add(1, Ordering::Relaxed);
                                let from = m.measure_from.load(Ordering::Relaxed);
                                let i = now.saturating_sub(from) / BUCKET.as_nanos() as u64;
                                if let Some(b) = m.buckets.get(i as usize) {
                                    b.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            m.committed.fetch_add(1, Ordering::Release);
                            let _guard = m.window.lock();
                            m.room.notify_all();
                        }
                        Applied {
                            status: ApplyStatus::Normal,
                            ts: seq,
                        }
                    }),
                );
            }
        }
        meters.push(meter);
        let deadline = Instant::now() + Duration::from_secs(10);
        while cluster.leader(g).is_none() {
            if Instant::now() > deadline {
                cluster.shutdown();
                return Err(GroupBenchError::NoLeader {
                    protocol: cfg.protocol,
                    group: g as u32,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let first_terms: Vec<u64> = (0..cluster.groups.len())
        .map(|g| cluster.leader(g).map_or(0, |l| l.term()))
        .collect();
    let stop = AtomicBool::new(false);
    let warmup = Duration::from_millis(500);
    let per_group_rate = cfg.rate.map(|r| r / cfg.groups as f64);
    // (syncs, write calls) over every replica's log store.
    let log_counts = |c: &Cluster| {
        c.hosts.iter().fold((0u64, 0u64), |(s, w), h| {
            let st = h.log_stats();
            (s + st.syncs, w + st.writes)
        })
    };
    let mut log_before = (0, 0);
    let mut log_during = (0, 0);
    std::thread::scope(|s| {
        for (g, meter) in meters.iter().enumerate() {
            let (cluster, stop) = (&cluster, &stop);
            s.spawn(move || {
                let mut seq = 0u64;
                let t0 = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rate) = per_group_rate {
                        // Open-loop pacing: entry k is due at t0 + k / rate.
                        let due = t0 + Duration::from_secs_f64(seq as f64 / rate);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    } else {
                        let mut guard = meter.window.lock();
                        while seq - meter.committed.load(Ordering::Acquire) >= window as u64
                            && !stop.load(Ordering::Relaxed)
                        {
                            meter.room.wait_for(&mut guard, Duration::from_millis(50));
                        }
                    }
                    let Some(leader) = cluster.leader(g) else {
                        std::thread::yield_now();
                        continue;
                    };
                    meter.submitted_at[(seq as usize) % meter.submitted_at.len()]
                        .store(started.elapsed().as_nanos() as u64, Ordering::Release);
                    if leader.submit(entry(g as u32, seq, cfg.entry_bytes)).is_ok() {
                        seq += 1;
                    }
                }
            });
        }
        std::thread::sleep(warmup);
        let from = started.elapsed().as_nanos() as u64;
        for m in &meters {
            m.measure_from.store(from, Ordering::Relaxed);
            m.measuring.store(true, Ordering::Release);
        }
        log_before = log_counts(&cluster);
        std::thread::sleep(cfg.duration);
        for m in &meters {
            m.measuring.store(false, Ordering::Relaxed);
        }
        let after = log_counts(&cluster);
        log_during = (after.0 - log_before.0, after.1 - log_before.1);
        stop.store(true, Ordering::Relaxed);
        for m in &meters {
            let _g = m.window.lock();
            m.room.notify_all();
        }
    });
    // Let followers finish applying before reading the integrity counters.
    std::thread::sleep(Duration::from_millis(300));
    let leader_changes = took_lead
        .lock()
        .iter()
        .filter(|(g, term)| first_terms.get(*g as usize).is_some_and(|t| term > t))
        .count() as u64;
    let mut hist = new_histogram();
    let mut measured = 0;
    let mut committed_per_bucket = vec![0u64; buckets_for(cfg.duration)];
    for m in &meters {
        let _ = hist.add(&*m.hist.lock());
        measured += m.measured.load(Ordering::Relaxed);
        for (into, b) in committed_per_bucket.iter_mut().zip(&m.buckets) {
            *into += b.load(Ordering::Relaxed);
        }
    }
    cluster.shutdown();
    let secs = cfg.duration.as_secs_f64();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let log_writes_per_sec = log_during.1 as f64 / secs;
    Ok(GroupBenchReport {
        protocol: cfg.protocol.name(),
        net: cfg.net,
        entry_bytes: cfg.entry_bytes,
        groups: cfg.groups,
        durability: cfg.durability.as_str(),
        target_rate: cfg.rate.unwrap_or(0.0),
        entries_per_sec: measured as f64 / secs,
        mb_per_sec: measured as f64 * cfg.entry_bytes as f64 / secs / 1e6,
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        gaps: integrity.gaps.load(Ordering::Relaxed),
        duplicates: integrity.duplicates.load(Ordering::Relaxed),
        reordered: integrity.reordered.load(Ordering::Relaxed),
        syncs_per_sec: log_during.0 as f64 / secs,
        log_writes_per_sec,
        entries_per_log_write: if log_during.1 == 0 {
            0.0
        } else {
            (measured * IDS.len() as u64) as f64 / log_during.1 as f64
        },
        leader_changes,
        commit_latency: latency_curve(&hist, 0.001),
        bucket_ms: BUCKET.as_millis() as u64,
        committed_per_bucket,
    })
}

/// Snapshots of the bench's application: the next sequence number a replica expects.
struct SeqSnapshot {
    integrity: Arc<Integrity>,
    node: NodeId,
    group: u32,
}

impl mako_replication::SnapshotHandler for SeqSnapshot {
    fn snapshot(&mut self, _pending: &[mako_replication::QueuedEntry]) -> bytes::Bytes {
        let next = self
            .integrity
            .next
            .lock()
            .get(&(self.node, self.group))
            .copied()
            .unwrap_or(0);
        bytes::Bytes::copy_from_slice(&next.to_le_bytes())
    }

    fn restore(
        &mut self,
        data: &bytes::Bytes,
        _index: u64,
    ) -> Result<Vec<mako_replication::QueuedEntry>, mako_replication::SnapshotRefused> {
        if let Ok(b) = <[u8; 8]>::try_from(&data[..]) {
            self.integrity
                .next
                .lock()
                .insert((self.node, self.group), u64::from_le_bytes(b));
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_counts_gaps_duplicates_and_reordering_per_replica() {
        let i = Integrity::default();
        for seq in [0, 1, 3] {
            i.check(1, 0, seq);
        }
        assert_eq!(i.gaps.load(Ordering::Relaxed), 1);
        i.check(1, 0, 3);
        assert_eq!(i.duplicates.load(Ordering::Relaxed), 1);
        // Another replica and another group keep their own sequences.
        i.check(2, 0, 0);
        i.check(1, 1, 0);
        assert_eq!(i.gaps.load(Ordering::Relaxed), 1);
        assert_eq!(i.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(parse(&entry(7, 42, 64)), Some((7, 42)));
        assert_eq!(entry(7, 42, 64).len(), 64);
        assert_eq!(parse(&[0u8; 5]), None);
    }
}
