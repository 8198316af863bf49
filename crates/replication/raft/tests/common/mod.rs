//! Raft test helpers: the lab cluster of `RaftNode`s (the shared `mako_lab` harness), and
//! real hosts whose vote traffic is recorded.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mako_raft::{RaftConfig, RaftNode, wire};
use mako_replication::{Applied, NodeId, Role, SnapshotHandler};
use mako_transport::{Envelope, Transport};
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::MessageType;

#[allow(unused_imports)]
pub use mako_lab::{Checker, Disk, ELECTION_MS, HEARTBEAT_MS, History, HistorySnapshots, ids};

/// The lab cluster of Raft replicas (see `mako_lab::Cluster`).
pub type Cluster = mako_lab::Cluster<RaftNode>;

/// Keeps protobuf's trait in use for callers that decode messages.
pub fn encoded_len(m: &raft::eraftpb::Message) -> usize {
    m.compute_size() as usize
}

/// A map from replica to how many entries it applied, for messages.
pub fn applied_counts(c: &Cluster) -> HashMap<usize, usize> {
    (0..c.n).map(|i| (i, c.applied_len(i))).collect()
}

/// A one-replica `RaftHost` (node 1) over the in-memory network, on a log opened with `log`.
pub fn solo_host(
    log: mako_logstore::LogStoreConfig,
    snapshot_dir: Option<std::path::PathBuf>,
) -> mako_raft::RaftHost {
    let (log, rec) = mako_logstore::LogStore::open(log).expect("log opens");
    let net = mako_transport::mem::MemNetwork::new();
    let (t, inbox) = net.endpoint(1);
    mako_raft::RaftHost::new(
        Arc::new(t),
        inbox,
        Arc::new(log),
        rec,
        mako_raft::HostConfig { snapshot_dir },
    )
}

/// Polls `f` until it holds (true) or 10 s pass (false).
pub fn wait(mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// A vote message some replica sent, as a [`Recording`] transport saw it leave.
#[derive(Debug, Clone)]
pub struct VoteMsg {
    /// Taken just before the message was handed to the network.
    pub at: std::time::Instant,
    pub from: NodeId,
    pub to: NodeId,
    pub kind: MessageType,
    pub term: u64,
    pub reject: bool,
}

/// Vote traffic of a whole group, in send order.
pub type VoteLog = Arc<Mutex<Vec<VoteMsg>>>;

/// A transport that records the (pre-)vote requests and answers it sends.
pub struct Recording<T> {
    pub inner: T,
    pub log: VoteLog,
}

impl<T: Transport> Transport for Recording<T> {
    fn local_id(&self) -> NodeId {
        self.inner.local_id()
    }

    fn send(&self, msg: Envelope) -> Result<(), mako_transport::SendError> {
        let at = std::time::Instant::now();
        if let Ok(Some(m)) = wire::Reassembler::default().push(msg.from, &msg.payload)
            && matches!(
                m.get_msg_type(),
                MessageType::MsgRequestVote
                    | MessageType::MsgRequestVoteResponse
                    | MessageType::MsgRequestPreVote
                    | MessageType::MsgRequestPreVoteResponse
            )
        {
            self.log.lock().push(VoteMsg {
                at,
                from: msg.from,
                to: msg.to,
                kind: m.get_msg_type(),
                term: m.term,
                reject: m.reject,
            });
        }
        self.inner.send(msg)
    }
}

/// `n` real `RaftHost`s (ids 1..=n) over one in-memory network, memory logs, one group
/// each; their vote traffic is recorded. Every replica records what it applies in its
/// `histories` entry, which is also its snapshot (so leaders compact their logs).
pub struct HostGroup {
    pub net: mako_transport::mem::MemNetwork,
    pub hosts: Vec<mako_raft::RaftHost>,
    pub groups: Vec<Arc<mako_raft::RaftWorker>>,
    pub votes: VoteLog,
    /// Per replica, the current incarnation's applied history.
    pub histories: Vec<History>,
    /// Per replica, snapshots the current incarnation restored (installed from a leader).
    pub restores: Vec<Arc<std::sync::atomic::AtomicU64>>,
}

/// [`HistorySnapshots`] that counts its restores.
struct CountingSnapshots(HistorySnapshots, Arc<std::sync::atomic::AtomicU64>);

impl SnapshotHandler for CountingSnapshots {
    fn snapshot(&mut self, pending: &[mako_replication::QueuedEntry]) -> Bytes {
        self.0.snapshot(pending)
    }

    fn restore(
        &mut self,
        data: &Bytes,
        index: u64,
    ) -> Result<Vec<mako_replication::QueuedEntry>, mako_replication::SnapshotRefused> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.restore(data, index)
    }
}

/// One replica incarnation of a [`HostGroup`].
type Replica = (
    mako_raft::RaftHost,
    Arc<mako_raft::RaftWorker>,
    History,
    Arc<std::sync::atomic::AtomicU64>,
);

impl HostGroup {
    /// Starts the group with `tweak` applied to every replica's config.
    pub fn start(n: u64, tweak: impl Fn(&mut RaftConfig)) -> Self {
        let net = mako_transport::mem::MemNetwork::new();
        let votes = VoteLog::default();
        let mut g = HostGroup {
            net,
            hosts: Vec::new(),
            groups: Vec::new(),
            votes,
            histories: Vec::new(),
            restores: Vec::new(),
        };
        for id in 1..=n {
            let mut cfg = RaftConfig::new(id, (1..=n).collect(), 0);
            tweak(&mut cfg);
            let (host, group, history, restores) = g.spawn(cfg);
            g.hosts.push(host);
            g.groups.push(group);
            g.histories.push(history);
            g.restores.push(restores);
        }
        g
    }

    /// A fresh incarnation (empty memory log) of replica `cfg.id`.
    fn spawn(&self, cfg: RaftConfig) -> Replica {
        let id = cfg.id;
        let (t, inbox) = self.net.endpoint(id);
        let transport = Arc::new(Recording {
            inner: t,
            log: self.votes.clone(),
        });
        let (log, rec) = mako_logstore::LogStore::open(mako_logstore::LogStoreConfig {
            durability: mako_logstore::Durability::Memory,
            ..mako_logstore::LogStoreConfig::new(std::env::temp_dir().join("unused"))
        })
        .expect("memory log opens");
        let host = mako_raft::RaftHost::new(
            transport,
            inbox,
            Arc::new(log),
            rec,
            mako_raft::HostConfig { snapshot_dir: None },
        );
        let history = History::default();
        let restores = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let snaps = CountingSnapshots(HistorySnapshots(history.clone()), restores.clone());
        let group = host
            .start_group_with::<mako_raft::RaftNode>(cfg, Some(Box::new(snaps)))
            .expect("group starts");
        use mako_replication::Replicator;
        for role in [Role::Leader, Role::Follower] {
            let h = history.clone();
            group.on_apply(
                role,
                Box::new(move |ctx| {
                    let mut h = h.lock();
                    while let Some(q) = ctx.queue.pop_front() {
                        h.push((q.index, q.entry));
                    }
                    h.push((ctx.index, ctx.entry.clone()));
                    Applied::normal(ctx.index)
                }),
            );
        }
        (host, group, history, restores)
    }

    /// Kills replica `i`: off the network, threads stopped; its memory log is gone.
    pub fn crash(&mut self, i: usize) {
        self.net.disconnect(i as NodeId + 1);
        self.hosts[i].shutdown();
    }

    /// Starts a new incarnation of replica `i` (empty log) with `cfg`, connected.
    pub fn restart(&mut self, i: usize, cfg: RaftConfig) {
        assert_eq!(cfg.id, i as NodeId + 1, "restart keeps the replica's id");
        let (host, group, history, restores) = self.spawn(cfg);
        self.hosts[i] = host;
        self.groups[i] = group;
        self.histories[i] = history;
        self.restores[i] = restores;
        self.net.connect(i as NodeId + 1);
    }

    /// The index of the one replica that reports itself leader, if exactly one does.
    pub fn leader(&self) -> Option<usize> {
        use mako_replication::Replicator;
        let ls: Vec<usize> = (0..self.groups.len())
            .filter(|&i| self.groups[i].role() == Role::Leader)
            .collect();
        (ls.len() == 1).then(|| ls[0])
    }
}

impl Drop for HostGroup {
    fn drop(&mut self) {
        for h in &self.hosts {
            h.shutdown();
        }
    }
}
