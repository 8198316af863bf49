//! An in-process cluster: `S` shards × `R` replicas, each a [`Site`] with its own Raft host.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mako_group::Host;
use mako_logstore::Durability;
use mako_replication::NodeId;
use mako_transport::mem::MemNetwork;
use mako_transport::tcp::{TcpConfig, TcpTransport};
use mako_transport::{Envelope, SendError, Transport};

use crate::meta::{META_GROUP, meta_members};
use crate::msg::{CONTROL_GROUP, Msg};
use crate::node::{NodeSpec, Protocol, start_node};
use crate::site::{Site, SiteConfig, SiteError};

/// Which network connects the sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetKind {
    /// The in-process network (instant delivery; nodes can be disconnected in tests).
    Mem,
    /// Loopback TCP.
    Tcp,
}

/// What the control-channel fault hook does with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Deliver it unchanged.
    Deliver,
    /// Lose it.
    Drop,
    /// Deliver it twice.
    Duplicate,
    /// Deliver this message instead.
    Replace(Msg),
}

/// Decides the fate of one control message `(from, to, msg)`.
pub type FaultFn = dyn Fn(NodeId, NodeId, &Msg) -> Fate + Send + Sync;

/// Test fault injection: decides the fate of every control message a site sends.
#[derive(Clone)]
pub struct ControlFaults(pub Arc<FaultFn>);

impl std::fmt::Debug for ControlFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlFaults")
    }
}

/// A transport that applies [`ControlFaults`] to control messages and passes everything else.
pub(crate) struct Faulty {
    pub(crate) inner: Arc<dyn Transport>,
    pub(crate) faults: ControlFaults,
}

impl Transport for Faulty {
    fn local_id(&self) -> NodeId {
        self.inner.local_id()
    }

    fn receives_on_sending_thread(&self) -> bool {
        self.inner.receives_on_sending_thread()
    }

    fn send(&self, msg: Envelope) -> Result<(), SendError> {
        if msg.group != CONTROL_GROUP {
            return self.inner.send(msg);
        }
        let Ok(m) = Msg::decode(&msg.payload) else {
            return self.inner.send(msg);
        };
        match (self.faults.0)(self.inner.local_id(), msg.to, &m) {
            Fate::Deliver => self.inner.send(msg),
            Fate::Drop => Ok(()),
            Fate::Duplicate => {
                self.inner.send(msg.clone())?;
                self.inner.send(msg)
            }
            Fate::Replace(m) => self.inner.send(Envelope {
                payload: m.encode(),
                ..msg
            }),
        }
    }
}

/// Shape and settings of an in-process cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Number of replicas per shard (1, 3 or 5).
    pub replicas: u32,
    /// What every site agrees on (shards, workers, tables, batching).
    pub site: SiteConfig,
    /// Network.
    pub net: NetKind,
    /// Durability of every replica's log.
    pub durability: Durability,
    /// The replication protocol of every group.
    pub protocol: Protocol,
    /// Raft heartbeat interval (ms).
    pub heartbeat_ms: u64,
    /// Raft election timeout bounds (ms).
    pub election_ms: (u64, u64),
    /// Fault injection on the control channel (tests); `None` delivers everything.
    pub control_faults: Option<ControlFaults>,
    /// Whether Raft hands leadership back to replica 0 whenever it is caught up; `false`
    /// makes [`Cluster::transfer_leader`] moves stick (replica 0 still leads at start).
    pub preferred_leader: bool,
    /// Raft `compact_after_entries` of the shard groups (`None`: Raft's default); tests set
    /// it low to force compaction and catch-up by snapshot.
    pub compact_after_entries: Option<u64>,
    /// `compact_log_percent` of the shard groups (`None`: the default); tests of catch-up by
    /// snapshot set 0 to compact by entry count alone.
    pub compact_log_percent: Option<u64>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            replicas: 3,
            site: SiteConfig::default(),
            net: NetKind::Mem,
            durability: Durability::Memory,
            protocol: Protocol::Raft,
            heartbeat_ms: 5,
            election_ms: (400, 700),
            control_faults: None,
            preferred_leader: true,
            compact_after_entries: None,
            compact_log_percent: None,
        }
    }
}

/// Why a cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Temp directories or sockets.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A log store would not open.
    #[error("log store: {0}")]
    Log(#[from] mako_logstore::LogError),
    /// A replication group would not start.
    #[error("replication group: {0}")]
    Group(#[from] mako_group::StartError),
    /// The log directory was written by the other protocol.
    #[error(
        "{dir} holds a log written by {found}; this deployment runs {wanted} (use a fresh data directory to switch protocols)"
    )]
    ProtocolMismatch {
        /// The log directory.
        dir: std::path::PathBuf,
        /// The protocol named in it.
        found: String,
        /// The protocol asked for.
        wanted: crate::node::Protocol,
    },
    /// A site would not start.
    #[error(transparent)]
    Site(#[from] SiteError),
    /// The preferred leaders did not take over (and open an epoch) in time.
    #[error("shard {0} has no serving leader on replica 0 after 10 s")]
    NoLeader(u32),
}

/// Why a test control of a running [`Cluster`] could not act.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No replica `replica` of shard `shard`.
    #[error("no replica {replica} of shard {shard}")]
    NoSuchReplica {
        /// The shard.
        shard: u32,
        /// The replica.
        replica: u32,
    },
    /// The control needs the in-memory network.
    #[error("only an in-memory network can isolate a replica")]
    NotMemNetwork,
    /// The shard has no running leader to ask.
    #[error("shard {0} has no leader")]
    NoLeader(u32),
    /// The replica was stopped.
    #[error("replica {replica} of shard {shard} is stopped")]
    Stopped {
        /// The shard.
        shard: u32,
        /// The replica.
        replica: u32,
    },
    /// The leader refused the transfer.
    #[error("transfer refused: {0}")]
    Transfer(#[from] mako_replication::SubmitError),
    /// The replica is running (restart needs a stopped one).
    #[error("replica {replica} of shard {shard} is running")]
    Running {
        /// The shard.
        shard: u32,
        /// The replica.
        replica: u32,
    },
    /// A replica with a `memory` log has nothing to restart from.
    #[error("the cluster's logs are not durable (durability: memory)")]
    NotDurable,
    /// The restarted replica would not start.
    #[error("restart failed: {0}")]
    Restart(String),
}

/// `S` × `R` sites in one process.
pub struct Cluster {
    /// Sites by `[shard][replica]`; replica 0 leads.
    pub sites: Vec<Vec<Arc<Site>>>,
    hosts: Vec<Host>,
    tcp: Vec<Arc<TcpTransport>>,
    net: Option<MemNetwork>,
    replicas: u32,
    /// How the cluster was started (for restarts).
    cfg: ClusterConfig,
    /// Node ids by `[shard][replica]`.
    nodes: Vec<Vec<NodeId>>,
    /// The `meta` group's members.
    members: Vec<NodeId>,
    /// Replicas stopped by [`Cluster::stop_replica`], as `(shard, replica)`.
    stopped: parking_lot::Mutex<std::collections::HashSet<(u32, u32)>>,
    /// Replicas frozen by [`Cluster::pause`], with their Raft workers' hold.
    paused: parking_lot::Mutex<HashMap<(u32, u32), mako_group::Paused>>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("shards", &self.sites.len())
            .field("replicas", &self.sites.first().map_or(0, Vec::len))
            .finish()
    }
}

impl Cluster {
    /// Node id of replica `r` of shard `s`.
    pub fn node_id(replicas: u32, s: u32, r: u32) -> NodeId {
        u64::from(s * replicas + r + 1)
    }

    /// Starts every site and waits until replica 0 leads each shard.
    pub fn start(cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        let dir = tempfile::tempdir()?;
        let (shards, replicas) = (cfg.site.shards, cfg.replicas);
        let nodes: Vec<Vec<NodeId>> = (0..shards)
            .map(|s| {
                (0..replicas)
                    .map(|r| Self::node_id(replicas, s, r))
                    .collect()
            })
            .collect();
        let all: Vec<NodeId> = nodes.iter().flatten().copied().collect();
        let members = meta_members(&nodes, cfg.site.meta_size);
        let mut transports = Vec::new();
        let mut tcp = Vec::new();
        let mut net = None;
        match cfg.net {
            NetKind::Mem => {
                let n = MemNetwork::new();
                for &id in &all {
                    let (ep, rx) = n.endpoint(id);
                    transports.push((Arc::new(ep) as Arc<dyn Transport>, rx));
                }
                net = Some(n);
            }
            NetKind::Tcp => {
                let listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
                for &id in &all {
                    let (t, rx) =
                        TcpTransport::start(id, listen, HashMap::new(), TcpConfig::default())?;
                    let t = Arc::new(t);
                    tcp.push(Arc::clone(&t));
                    transports.push((t as Arc<dyn Transport>, rx));
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
        let mut sites: Vec<Vec<Arc<Site>>> = (0..shards).map(|_| Vec::new()).collect();
        for ((transport, inbox), &id) in transports.into_iter().zip(&all) {
            let s = ((id - 1) / u64::from(replicas)) as usize;
            let spec = node_spec(&cfg, dir.path(), &nodes, &members, id);
            let (site, host) = start_node(&spec, transport, inbox)?;
            sites[s].push(site);
            hosts.push(host);
        }
        let cluster = Cluster {
            sites,
            hosts,
            tcp,
            net,
            replicas,
            cfg,
            nodes,
            members,
            stopped: parking_lot::Mutex::new(std::collections::HashSet::new()),
            paused: parking_lot::Mutex::new(HashMap::new()),
            _dir: dir,
        };
        // Leadership: campaign isn't exposed, so wait for the preferred replica to win or be
        // handed leadership (and open its epoch); without a preferred replica, hand it to
        // replica 0 once.
        let deadline = Instant::now() + Duration::from_secs(10);
        for s in 0..shards {
            while !cluster.sites[s as usize][0].serving() {
                if Instant::now() > deadline {
                    cluster.shutdown();
                    return Err(ClusterError::NoLeader(s));
                }
                if !cluster.cfg.preferred_leader
                    && let Some(l) = cluster.current_leader(s)
                {
                    let _ = l.group().transfer_leader(Self::node_id(replicas, s, 0));
                    std::thread::sleep(Duration::from_millis(50));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Coordinators address the leader they believe in: let every site's view settle on
        // replica 0 (an early election may have elected another first), so a test's first
        // cross-shard request does not go to a replica it then isolates.
        let settled = |c: &Cluster| {
            c.sites.iter().flatten().all(|site| {
                (0..shards).all(|s| site.leader_of(s) == Some(Self::node_id(replicas, s, 0)))
            })
        };
        while !settled(&cluster) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(cluster)
    }

    /// The site of shard `s` that currently leads it, else replica 0 (the preferred leader).
    pub fn leader(&self, s: u32) -> &Arc<Site> {
        self.current_leader(s)
            .unwrap_or_else(|| &self.sites[s as usize][0])
    }

    /// The running site of shard `s` that reports leadership in the newest term, if any.
    pub fn current_leader(&self, s: u32) -> Option<&Arc<Site>> {
        let stopped = self.stopped.lock();
        // A deposed leader that has not heard of its successor still reports leadership:
        // the newest term wins.
        self.sites
            .get(s as usize)?
            .iter()
            .enumerate()
            .filter(|(r, site)| !stopped.contains(&(s, *r as u32)) && site.is_leader())
            .max_by_key(|(_, site)| site.group().term())
            .map(|(_, site)| site)
    }

    /// Replica `r` of shard `s`.
    fn replica(&self, s: u32, r: u32) -> Result<&Arc<Site>, ControlError> {
        self.sites
            .get(s as usize)
            .and_then(|v| v.get(r as usize))
            .ok_or(ControlError::NoSuchReplica {
                shard: s,
                replica: r,
            })
    }

    /// Cuts replica `r` of shard `s` off the in-memory network (nothing it sends or is sent arrives).
    pub fn isolate(&self, s: u32, r: u32) -> Result<(), ControlError> {
        let id = self.replica(s, r)?.node();
        self.net
            .as_ref()
            .ok_or(ControlError::NotMemNetwork)?
            .disconnect(id);
        Ok(())
    }

    /// Reconnects replica `r` of shard `s` after [`Cluster::isolate`].
    pub fn reconnect(&self, s: u32, r: u32) -> Result<(), ControlError> {
        let id = self.replica(s, r)?.node();
        self.net
            .as_ref()
            .ok_or(ControlError::NotMemNetwork)?
            .connect(id);
        Ok(())
    }

    /// Asks shard `s`'s current leader to hand leadership to replica `r` (returns once asked;
    /// see [`Cluster::wait_leader`]). With `preferred_leader` set, Raft hands it back later.
    pub fn transfer_leader(&self, s: u32, r: u32) -> Result<(), ControlError> {
        let to = self.replica(s, r)?.node();
        let leader = self.current_leader(s).ok_or(ControlError::NoLeader(s))?;
        leader.group().transfer_leader(to)?;
        Ok(())
    }

    /// Waits up to `timeout` until replica `r` of shard `s` leads and the cluster serves again:
    /// every shard has a running leader serving the newest epoch; whether it happened.
    pub fn wait_leader(&self, s: u32, r: u32, timeout: Duration) -> bool {
        let Ok(site) = self.replica(s, r) else {
            return false;
        };
        let deadline = Instant::now() + timeout;
        loop {
            let current = self.current_leader(s).is_some_and(|l| Arc::ptr_eq(l, site));
            if current && self.serving() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits up to `timeout` until every shard has a running leader serving the newest epoch.
    pub fn wait_serving(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.serving() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Whether every shard has a running leader whose open epoch is the newest any running
    /// site knows.
    fn serving(&self) -> bool {
        let stopped = self.stopped.lock().clone();
        let newest = self
            .sites
            .iter()
            .enumerate()
            .flat_map(|(s, v)| v.iter().enumerate().map(move |(r, x)| ((s, r), x)))
            .filter(|((s, r), _)| !stopped.contains(&(*s as u32, *r as u32)))
            .map(|(_, x)| x.epochs().current())
            .max()
            .unwrap_or(0);
        (0..self.sites.len() as u32).all(|s| {
            self.current_leader(s)
                .is_some_and(|l| l.open_epoch() == Some(newest) && l.serving())
        })
    }

    /// The running site whose `meta` replica leads the `meta` group, if any.
    pub fn meta_leader(&self) -> Option<&Arc<Site>> {
        let stopped = self.stopped.lock();
        self.sites.iter().enumerate().find_map(|(s, v)| {
            v.iter().enumerate().find_map(|(r, site)| {
                let leads = site
                    .meta_group()
                    .is_some_and(|m| m.role() == mako_replication::Role::Leader);
                (leads && !stopped.contains(&(s as u32, r as u32))).then_some(site)
            })
        })
    }

    /// Asks the `meta` leader to hand leadership of `meta` to the member on replica `r` of
    /// shard `s` (returns once asked).
    pub fn transfer_meta_leader(&self, s: u32, r: u32) -> Result<(), ControlError> {
        let to = self.replica(s, r)?.node();
        let leader = self
            .meta_leader()
            .ok_or(ControlError::NoLeader(META_GROUP))?;
        let group = leader
            .meta_group()
            .ok_or(ControlError::NoLeader(META_GROUP))?;
        group.transfer_leader(to)?;
        Ok(())
    }

    /// Freezes replica `r` of shard `s` as a stopped process (`SIGSTOP`): its Raft workers, its
    /// site's threads and its network (cut off the in-memory network) stop until
    /// [`Cluster::resume`]. Clients calling into it are not stopped.
    pub fn pause(&self, s: u32, r: u32) -> Result<(), ControlError> {
        let site = self.replica(s, r)?;
        self.isolate(s, r)?;
        site.pause();
        let host = (s * self.replicas + r) as usize;
        if let Some(h) = self.hosts.get(host) {
            self.paused.lock().insert((s, r), h.pause());
        }
        Ok(())
    }

    /// Lets replica `r` of shard `s` run again after [`Cluster::pause`]; its network stays cut
    /// off until [`Cluster::reconnect`], so it may go on believing it leads for a while.
    pub fn resume(&self, s: u32, r: u32) -> Result<(), ControlError> {
        let site = self.replica(s, r)?;
        drop(self.paused.lock().remove(&(s, r)));
        site.resume();
        Ok(())
    }

    /// Crashes replica `r` of shard `s`: stops its site and Raft host and cuts it off the
    /// in-memory network; it stays down (no restart) and replica comparison skips it.
    pub fn stop_replica(&self, s: u32, r: u32) -> Result<(), ControlError> {
        let site = self.replica(s, r)?;
        if !self.stopped.lock().insert((s, r)) {
            return Ok(());
        }
        if let Some(n) = &self.net {
            n.disconnect(site.node());
        }
        drop(self.paused.lock().remove(&(s, r)));
        site.stop();
        let host = (s * self.replicas + r) as usize;
        if let Some(h) = self.hosts.get(host) {
            h.shutdown();
        }
        Ok(())
    }

    /// Restarts replica `r` of shard `s` after [`Cluster::stop_replica`], from its data
    /// directory: its log store recovers what was durable, its Raft groups resume, and its
    /// site rebuilds its store from the log (and learns epochs from `meta`). Needs a durable
    /// log (`fsync` or `buffered`) and the in-memory network. `sites[s][r]` then holds the
    /// new site.
    pub fn restart_replica(&mut self, s: u32, r: u32) -> Result<Arc<Site>, ControlError> {
        let id = self.replica(s, r)?.node();
        if !self.stopped.lock().contains(&(s, r)) {
            return Err(ControlError::Running {
                shard: s,
                replica: r,
            });
        }
        if self.cfg.durability == Durability::Memory {
            return Err(ControlError::NotDurable);
        }
        let net = self.net.as_ref().ok_or(ControlError::NotMemNetwork)?;
        let (ep, inbox) = net.endpoint(id);
        let spec = node_spec(&self.cfg, self._dir.path(), &self.nodes, &self.members, id);
        let (site, host) = start_node(&spec, Arc::new(ep), inbox)
            .map_err(|e| ControlError::Restart(e.to_string()))?;
        net.connect(id);
        let i = (s * self.replicas + r) as usize;
        self.hosts[i] = host;
        self.sites[s as usize][r as usize] = Arc::clone(&site);
        self.stopped.lock().remove(&(s, r));
        Ok(site)
    }

    /// The in-memory network, for partitions in tests.
    pub fn net(&self) -> Option<&MemNetwork> {
        self.net.as_ref()
    }

    /// Waits until every running follower's tables equal its current leader's (newest version
    /// of every key); on `timeout` returns the first difference found. Call once the workload
    /// has stopped.
    ///
    /// Passes on equal contents only: a follower's `W_s` reaching the leader's just says when
    /// comparing is worth it (a replica can have the leader's `W_s` and lack data).
    pub fn compare_replicas(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        for (s, sites) in self.sites.iter().enumerate() {
            let shard = s as u32;
            let leader = loop {
                match self.current_leader(shard) {
                    Some(l) => break l,
                    None if Instant::now() > deadline => {
                        return Err(format!("shard {s}: no leader"));
                    }
                    None => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            for (r, f) in sites.iter().enumerate() {
                if Arc::ptr_eq(f, leader) || self.stopped.lock().contains(&(shard, r as u32)) {
                    continue;
                }
                loop {
                    // Cheap progress test first: the follower's log has reached the leader's W_s.
                    let caught_up = f.w() >= leader.w();
                    let expired = Instant::now() > deadline;
                    let diff = if caught_up || expired {
                        leader.first_difference(f)
                    } else {
                        Some(String::new())
                    };
                    match diff {
                        None => break,
                        Some(d) if expired => {
                            return Err(format!("shard {s}, node {}: {d}", f.node()));
                        }
                        Some(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops every site, Raft group, log store and transport.
    pub fn shutdown(&self) {
        self.paused.lock().clear();
        for s in self.sites.iter().flatten() {
            s.stop();
        }
        for h in &self.hosts {
            h.shutdown();
        }
        for t in &self.tcp {
            t.shutdown();
        }
    }
}

/// The [`NodeSpec`] of node `id` of an in-process cluster whose data lives under `dir`.
fn node_spec(
    cfg: &ClusterConfig,
    dir: &std::path::Path,
    nodes: &[Vec<NodeId>],
    members: &[NodeId],
    id: NodeId,
) -> NodeSpec {
    let s = ((id - 1) / u64::from(cfg.replicas)) as usize;
    NodeSpec {
        id,
        nodes: nodes.to_vec(),
        members: members.to_vec(),
        site: cfg.site.clone(),
        log_dir: dir.join(format!("log-{id}")),
        snapshot_dir: dir.join(format!("snap-{id}")),
        durability: cfg.durability,
        protocol: cfg.protocol,
        heartbeat_ms: cfg.heartbeat_ms,
        election_ms: cfg.election_ms,
        preferred: cfg.preferred_leader.then_some(nodes[s][0]),
        compact_after_entries: cfg.compact_after_entries,
        compact_log_percent: cfg.compact_log_percent,
        control_faults: cfg.control_faults.clone(),
        rejoin: false,
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
