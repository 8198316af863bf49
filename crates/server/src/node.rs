//! Starting one replica: its log store, Raft host and groups, and its site (shared by the
//! in-process [`crate::Cluster`] and the `mako server` process).

use std::path::PathBuf;
use std::sync::Arc;

use mako_logstore::{Durability, LogStore, LogStoreConfig};
use mako_raft::{HostConfig, RaftConfig, RaftHost};
use mako_replication::{NodeId, Replicator};
use mako_transport::{Envelope, Transport};

use crate::cluster::{ClusterError, ControlFaults, Faulty};
use crate::meta::META_GROUP;
use crate::msg::CONTROL_GROUP;
use crate::site::{Site, SiteConfig};

/// Control messages a site's router buffers before it drops a peer's flood.
const CONTROL_INBOX: usize = 16_384;

/// Everything one replica needs to start.
#[derive(Clone)]
pub struct NodeSpec {
    /// This replica's node id.
    pub id: NodeId,
    /// Node ids by `[shard][replica]`.
    pub nodes: Vec<Vec<NodeId>>,
    /// The `meta` group's members.
    pub members: Vec<NodeId>,
    /// What every site agrees on.
    pub site: SiteConfig,
    /// The directory of the replica's log store.
    pub log_dir: PathBuf,
    /// The directory of the replica's snapshot files.
    pub snapshot_dir: PathBuf,
    /// Durability of the log.
    pub durability: Durability,
    /// Raft heartbeat interval (ms).
    pub heartbeat_ms: u64,
    /// Raft election timeout bounds (ms).
    pub election_ms: (u64, u64),
    /// The shard's preferred leader, if any.
    pub preferred: Option<NodeId>,
    /// Raft `compact_after_entries` of the shard group (`None`: Raft's default).
    pub compact_after_entries: Option<u64>,
    /// Fault injection on the control channel (tests).
    pub control_faults: Option<ControlFaults>,
    /// The replica lost its Raft state (an earlier incarnation ran with a `memory` log): its
    /// groups rejoin without voting or campaigning until they have caught up.
    pub rejoin: bool,
}

impl NodeSpec {
    /// The shard this replica belongs to.
    pub fn shard(&self) -> u32 {
        self.nodes
            .iter()
            .position(|ids| ids.contains(&self.id))
            .map_or(0, |s| s as u32)
    }
}

/// Starts one replica: its log store (recovering what the directory holds), Raft host and
/// groups (its shard's, and `meta`'s if it is a member), and its site.
pub fn start_node(
    spec: &NodeSpec,
    transport: Arc<dyn Transport>,
    inbox: crossbeam_channel::Receiver<Envelope>,
) -> Result<(Arc<Site>, RaftHost), ClusterError> {
    let (id, s) = (spec.id, spec.shard());
    let mut lc = LogStoreConfig::new(spec.log_dir.clone());
    lc.durability = spec.durability;
    lc.segment_bytes = 16 << 20;
    let (log, rec) = LogStore::open(lc)?;
    let host = RaftHost::new(
        Arc::clone(&transport),
        inbox,
        Arc::new(log),
        rec,
        HostConfig {
            snapshot_dir: Some(spec.snapshot_dir.clone()),
        },
    );
    let raft = |peers: Vec<NodeId>, group: u32| {
        let mut rc = RaftConfig::new(id, peers, group);
        rc.heartbeat_interval_ms = spec.heartbeat_ms;
        rc.election_timeout_min_ms = spec.election_ms.0;
        rc.election_timeout_max_ms = spec.election_ms.1;
        rc.rejoin = spec.rejoin;
        rc
    };
    let mut rc = raft(spec.nodes[s as usize].clone(), s);
    rc.preferred = spec.preferred;
    if let Some(n) = spec.compact_after_entries {
        rc.compact_after_entries = n;
    }
    // The handler is there from the start: a restarted replica's group may start from a
    // snapshot in its log, which the site installs as it attaches.
    let (handler, slot) = crate::snapshot::detached();
    let group = host.start_group_with::<mako_raft::RaftNode>(rc, Some(handler))?;
    let meta = if spec.members.contains(&id) {
        Some(host.start_group::<mako_raft::RaftNode>(raft(spec.members.clone(), META_GROUP))?)
    } else {
        None
    };
    let transport = match &spec.control_faults {
        Some(f) => Arc::new(Faulty {
            inner: transport,
            faults: f.clone(),
        }) as Arc<dyn Transport>,
        None => transport,
    };
    let site = Site::with_snapshots(
        spec.site.clone(),
        s,
        id,
        spec.nodes.clone(),
        group as Arc<dyn Replicator>,
        transport,
        slot,
    )?;
    if let Some(m) = meta {
        site.host_meta(m as Arc<dyn Replicator>);
    }
    // Bounded: a flood from a peer is dropped at the router (2PC requests time out and abort,
    // decisions are resent, watermarks are periodic), never buffered.
    let (ctl_tx, ctl_rx) = crossbeam_channel::bounded(CONTROL_INBOX);
    host.add_route(CONTROL_GROUP, ctl_tx);
    site.start(ctl_rx);
    Ok((site, host))
}
