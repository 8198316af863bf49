//! `mako bench raft`: one shard's Raft group of 3 replicas in one process, measured.
//!
//! Each of `groups` groups gets a submitter thread that proposes numbered
//! entries to its leader, either as fast as a window of outstanding entries
//! allows (unthrottled) or at a fixed rate (paced). The leader's apply callback
//! records submit-to-commit latency; every replica's callbacks check the
//! sequence numbers they apply for gaps, duplicates and reordering.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use mako_logstore::{Durability, LogStore, LogStoreConfig};
use mako_raft::{HostConfig, RaftConfig, RaftHost, RaftWorker};
use mako_replication::{Applied, ApplyStatus, NodeId, Replicator, Role};
use mako_transport::Transport;
use mako_transport::sim::{RealtimeGuard, SimConfig, SimNetwork};
use mako_transport::tcp::{TcpConfig, TcpTransport};
use parking_lot::{Condvar, Mutex};

use crate::driver::new_histogram;

/// Which transport carries the group's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetKind {
    /// The in-memory network (simulated, real time, no faults).
    Mem,
    /// Loopback TCP.
    Tcp,
}

/// One Raft benchmark run.
#[derive(Debug, Clone)]
pub struct RaftBenchConfig {
    /// Transport.
    pub net: NetKind,
    /// Bytes per entry.
    pub entry_bytes: usize,
    /// Raft groups (shards), each with 3 replicas.
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

/// Results of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RaftBenchReport {
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
    /// Elections won during the run beyond the first leader of each group (lost proposals show as gaps).
    pub leader_changes: u64,
}

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
pub enum RaftBenchError {
    /// I/O (temp dirs, sockets).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The log store would not open.
    #[error("log store: {0}")]
    Log(#[from] mako_logstore::LogError),
    /// A group would not start.
    #[error("raft: {0}")]
    Start(#[from] mako_raft::StartError),
    /// No leader emerged.
    #[error("group {0} elected no leader within 10 s")]
    NoLeader(u32),
}

struct Cluster {
    hosts: Vec<RaftHost>,
    groups: Vec<Vec<Arc<RaftWorker>>>,
    tcp: Vec<Arc<TcpTransport>>,
    _pump: Option<RealtimeGuard>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(cfg: &RaftBenchConfig, integrity: &Arc<Integrity>) -> Result<Cluster, RaftBenchError> {
        let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
        let ids: Vec<NodeId> = vec![1, 2, 3];
        let mut transports: Vec<(Arc<dyn Transport>, crossbeam_channel::Receiver<_>)> = Vec::new();
        let mut tcp = Vec::new();
        let mut pump = None;
        match cfg.net {
            NetKind::Mem => {
                let net = SimNetwork::new(1, SimConfig::default());
                for &id in &ids {
                    let (ep, rx) = net.endpoint(id);
                    transports.push((Arc::new(ep), rx));
                }
                pump = Some(net.run_realtime());
            }
            NetKind::Tcp => {
                let listen: SocketAddr = "127.0.0.1:0".parse().map_err(std::io::Error::other)?;
                for &id in &ids {
                    let tc = TcpConfig {
                        queue_capacity: 1 << 16,
                        ..TcpConfig::default()
                    };
                    let (t, rx) = TcpTransport::start(id, listen, HashMap::new(), tc)?;
                    let t = Arc::new(t);
                    tcp.push(t.clone());
                    transports.push((t, rx));
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
        let mut hosts = Vec::new();
        for ((t, rx), &id) in transports.into_iter().zip(&ids) {
            let mut lc = LogStoreConfig::new(dir.path().join(format!("log-{id}")));
            lc.durability = cfg.durability;
            let (log, rec) = LogStore::open(lc)?;
            hosts.push(RaftHost::new(
                t,
                rx,
                Arc::new(log),
                rec,
                HostConfig {
                    snapshot_dir: Some(dir.path().join(format!("snap-{id}"))),
                },
            ));
        }
        let mut groups = Vec::new();
        for g in 0..cfg.groups as u32 {
            let mut replicas = Vec::new();
            for (h, &id) in hosts.iter().zip(&ids) {
                let mut rc = RaftConfig::new(id, ids.clone(), g);
                rc.compact_after_entries = ((64 << 20) / cfg.entry_bytes.max(1)).max(1000) as u64;
                // The bench's application state is the next sequence number it expects: a
                // replica caught up by snapshot continues from there (no false gaps), and
                // the log compacts (memory stays bounded on long runs).
                let snap = SeqSnapshot {
                    integrity: Arc::clone(integrity),
                    node: id,
                    group: g,
                };
                replicas.push(h.start_group_with::<mako_raft::RaftNode>(rc, Some(Box::new(snap)))?);
            }
            groups.push(replicas);
        }
        Ok(Cluster {
            hosts,
            groups,
            tcp,
            _pump: pump,
            _dir: dir,
        })
    }

    fn leader(&self, g: usize) -> Option<Arc<RaftWorker>> {
        self.groups[g]
            .iter()
            .find(|r| r.role() == Role::Leader)
            .cloned()
    }

    fn shutdown(&self) {
        for h in &self.hosts {
            h.shutdown();
        }
        for t in &self.tcp {
            t.shutdown();
        }
    }
}

/// Runs one configuration: start 3 replicas per group, submit, measure, check integrity.
pub fn run_raft(cfg: &RaftBenchConfig) -> Result<RaftBenchReport, RaftBenchError> {
    let integrity = Arc::new(Integrity::default());
    let cluster = Cluster::start(cfg, &integrity)?;
    let started = Instant::now();
    // At most 64 MiB in flight per group, whatever the entry size.
    let window = cfg.window.min((64 << 20) / cfg.entry_bytes.max(1)).max(8);
    let ring = window.next_power_of_two() * 4;
    let mut meters = Vec::new();
    for (g, replicas) in cluster.groups.iter().enumerate() {
        let meter = Arc::new(GroupMeter {
            submitted_at: (0..ring).map(|_| AtomicU64::new(0)).collect(),
            committed: AtomicU64::new(0),
            window: Mutex::new(()),
            room: Condvar::new(),
            hist: Mutex::new(new_histogram()),
            measuring: AtomicBool::new(false),
            measured: AtomicU64::new(0),
        });
        for r in replicas {
            let node = r.id();
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
                            if m.measuring.load(Ordering::Relaxed) {
                                let _ = m.hist.lock().record(now.saturating_sub(at).max(1));
                                m.measured.fetch_add(1, Ordering::Relaxed);
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
                return Err(RaftBenchError::NoLeader(g as u32));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let terms = |c: &Cluster| -> u64 {
        c.groups
            .iter()
            .map(|g| g.iter().map(|r| r.term()).max().unwrap_or(0))
            .sum()
    };
    let terms_before = terms(&cluster);
    let stop = AtomicBool::new(false);
    let warmup = Duration::from_millis(500);
    let per_group_rate = cfg.rate.map(|r| r / cfg.groups as f64);
    let syncs = |c: &Cluster| c.hosts.iter().map(|h| h.log_stats().syncs).sum::<u64>();
    let mut syncs_before = 0;
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
        for m in &meters {
            m.measuring.store(true, Ordering::Relaxed);
        }
        syncs_before = syncs(&cluster);
        std::thread::sleep(cfg.duration);
        for m in &meters {
            m.measuring.store(false, Ordering::Relaxed);
        }
        syncs_before = syncs(&cluster) - syncs_before;
        stop.store(true, Ordering::Relaxed);
        for m in &meters {
            let _g = m.window.lock();
            m.room.notify_all();
        }
    });
    // Let followers finish applying before reading the integrity counters.
    std::thread::sleep(Duration::from_millis(300));
    let terms_after = terms(&cluster);
    let mut hist = new_histogram();
    let mut measured = 0;
    for m in &meters {
        let _ = hist.add(&*m.hist.lock());
        measured += m.measured.load(Ordering::Relaxed);
    }
    cluster.shutdown();
    let secs = cfg.duration.as_secs_f64();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(RaftBenchReport {
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
        syncs_per_sec: syncs_before as f64 / secs,
        leader_changes: terms_after.saturating_sub(terms_before),
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
