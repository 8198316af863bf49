//! Starting one replica: its log store, replication host and groups (Raft or Multi-Paxos),
//! and its site (shared by the in-process [`crate::Cluster`] and the `mako server` process).

use std::path::PathBuf;
use std::sync::Arc;

use mako_group::{Core, GroupConfig, Host, HostConfig, StartError};
use mako_logstore::{Durability, LogStore, LogStoreConfig};
use mako_raft::RaftNode;
use mako_replication::{NodeId, Replicator, SnapshotHandler};
use mako_transport::{Envelope, Transport};

use crate::cluster::{ClusterError, ControlFaults, Faulty};
use crate::meta::META_GROUP;
use crate::msg::CONTROL_GROUP;
use crate::site::{Site, SiteConfig};

/// Control messages a site's router buffers before it drops a peer's flood.
const CONTROL_INBOX: usize = 16_384;

/// The replication protocol every group of a deployment runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Raft (raft-rs under [`mako_raft::RaftNode`]).
    #[default]
    Raft,
    /// Multi-Paxos ([`mako_paxos::PaxosNode`]).
    Paxos,
}

impl Protocol {
    /// Both protocols, Raft first.
    pub const ALL: [Protocol; 2] = [Protocol::Raft, Protocol::Paxos];

    /// The protocol's name in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Raft => "raft",
            Protocol::Paxos => "paxos",
        }
    }

    /// Starts this host's replica of `cfg.shard` with this protocol.
    pub fn start_group(
        self,
        host: &Host,
        cfg: GroupConfig,
        snapshots: Option<Box<dyn SnapshotHandler>>,
    ) -> Result<Arc<dyn Replicator>, StartError> {
        fn start<C: Core>(
            host: &Host,
            cfg: GroupConfig,
            snapshots: Option<Box<dyn SnapshotHandler>>,
        ) -> Result<Arc<dyn Replicator>, StartError> {
            Ok(host.start_group_with::<C>(cfg, snapshots)? as Arc<dyn Replicator>)
        }
        match self {
            Protocol::Raft => start::<RaftNode>(host, cfg, snapshots),
            Protocol::Paxos => start::<mako_paxos::PaxosNode>(host, cfg, snapshots),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A protocol name that is neither `raft` nor `paxos`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown replication protocol {0:?} (expected raft or paxos)")]
pub struct UnknownProtocol(pub String);

impl std::str::FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "raft" => Ok(Protocol::Raft),
            "paxos" | "multi-paxos" | "multipaxos" => Ok(Protocol::Paxos),
            _ => Err(UnknownProtocol(s.to_string())),
        }
    }
}

/// The file in a replica's log directory naming the protocol that wrote the log.
const PROTOCOL_FILE: &str = "PROTOCOL";

/// Refuses a log directory written by another protocol (their hard states and entries
/// mean different things); marks a fresh one with `protocol`.
fn check_protocol(dir: &std::path::Path, protocol: Protocol) -> Result<(), ClusterError> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(PROTOCOL_FILE);
    match std::fs::read_to_string(&path) {
        Ok(found) if found.trim() == protocol.name() => Ok(()),
        Ok(found) => Err(ClusterError::ProtocolMismatch {
            dir: dir.to_path_buf(),
            found: found.trim().to_string(),
            wanted: protocol,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join(format!("{PROTOCOL_FILE}.tmp"));
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                writeln!(f, "{}", protocol.name())?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

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
    /// The replication protocol of every group.
    pub protocol: Protocol,
    /// Heartbeat interval, the protocols' tick (ms).
    pub heartbeat_ms: u64,
    /// Election timeout bounds (ms).
    pub election_ms: (u64, u64),
    /// The shard's preferred leader, if any.
    pub preferred: Option<NodeId>,
    /// `compact_after_entries` of the shard group (`None`: the default).
    pub compact_after_entries: Option<u64>,
    /// `compact_log_percent` of the shard group (`None`: the default).
    pub compact_log_percent: Option<u64>,
    /// Fault injection on the control channel (tests).
    pub control_faults: Option<ControlFaults>,
    /// The replica lost its replication state (an earlier incarnation ran with a `memory` log): its
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

/// Starts one replica: its log store (recovering what the directory holds), replication
/// host and groups (its shard's, and `meta`'s if it is a member), and its site.
pub fn start_node(
    spec: &NodeSpec,
    transport: Arc<dyn Transport>,
    inbox: crossbeam_channel::Receiver<Envelope>,
) -> Result<(Arc<Site>, Host), ClusterError> {
    let (id, s) = (spec.id, spec.shard());
    check_protocol(&spec.log_dir, spec.protocol)?;
    let mut lc = LogStoreConfig::new(spec.log_dir.clone());
    lc.durability = spec.durability;
    lc.segment_bytes = 16 << 20;
    let (log, rec) = LogStore::open(lc)?;
    let host = Host::new(
        Arc::clone(&transport),
        inbox,
        Arc::new(log),
        rec,
        HostConfig {
            snapshot_dir: Some(spec.snapshot_dir.clone()),
        },
    );
    let group_cfg = |peers: Vec<NodeId>, group: u32| {
        let mut rc = GroupConfig::new(id, peers, group);
        rc.heartbeat_interval_ms = spec.heartbeat_ms;
        rc.election_timeout_min_ms = spec.election_ms.0;
        rc.election_timeout_max_ms = spec.election_ms.1;
        rc.rejoin = spec.rejoin;
        rc
    };
    let mut rc = group_cfg(spec.nodes[s as usize].clone(), s);
    rc.preferred = spec.preferred;
    if let Some(n) = spec.compact_after_entries {
        rc.compact_after_entries = n;
    }
    if let Some(p) = spec.compact_log_percent {
        rc.compact_log_percent = p;
    }
    // The handler is there from the start: a restarted replica's group may start from a
    // snapshot in its log, which the site installs as it attaches.
    let (handler, slot) = crate::snapshot::detached();
    let group = spec.protocol.start_group(&host, rc, Some(handler))?;
    let meta = if spec.members.contains(&id) {
        let cfg = group_cfg(spec.members.clone(), META_GROUP);
        Some(spec.protocol.start_group(&host, cfg, None)?)
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
        group,
        transport,
        slot,
    )?;
    if let Some(m) = meta {
        site.host_meta(m);
    }
    // Bounded: a flood from a peer is dropped at the router (2PC requests time out and abort,
    // decisions are resent, watermarks are periodic), never buffered.
    let (ctl_tx, ctl_rx) = crossbeam_channel::bounded(CONTROL_INBOX);
    // Replies to this site's coordinators are served on the router thread (one thread hop
    // less per round trip); weak, so that the host's routes do not keep the site alive.
    let weak = Arc::downgrade(&site);
    host.add_route_with_shortcut(
        CONTROL_GROUP,
        ctl_tx,
        Arc::new(move |env: Envelope| match weak.upgrade() {
            Some(site) => site.shortcut(env),
            None => Some(env),
        }),
    );
    site.start(ctl_rx);
    Ok((site, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_written_by_one_protocol_is_refused_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        check_protocol(&log, Protocol::Raft).unwrap();
        check_protocol(&log, Protocol::Raft).unwrap();
        let e = check_protocol(&log, Protocol::Paxos)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("written by raft") && e.contains("runs paxos"),
            "{e}"
        );
        let other = dir.path().join("other");
        check_protocol(&other, Protocol::Paxos).unwrap();
        assert!(check_protocol(&other, Protocol::Raft).is_err());
        assert_eq!("Paxos".parse::<Protocol>(), Ok(Protocol::Paxos));
        assert!("zab".parse::<Protocol>().is_err());
    }
}
