//! A mako-rs server process: one site (one replica of one shard) over TCP, serving clients.
//!
//! [`Node::start`] opens the replica's log store in its data directory (recovering what an
//! earlier run left), starts its Raft groups over a [`TcpTransport`] to its peers, builds
//! its [`Site`], and listens for clients speaking the `mako-proto` protocol. A client
//! connection is authenticated with the client token when one is configured, then each
//! request is served on the connection's thread: interactive transactions (begin, operations,
//! commit) and one-shot ones coordinated here when this site leads its shard, with keys of
//! any shard routed by the deployment's [`Catalog`]. [`Node::shutdown`] hands leadership to a
//! caught-up follower (when asked), flushes, and joins every thread.
//!
//! ```no_run
//! # fn spec() -> mako_node::NodeOptions { unimplemented!() }
//! let node = mako_node::Node::start(spec()).expect("start");
//! println!("clients connect to {}", node.client_addr());
//! node.shutdown(true);
//! ```

mod acceptor;
mod deploy;
mod endpoint;
mod exec;
pub mod figures;
pub mod procedure;
mod redis;
mod server;
mod session;
mod status;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mako_group::Host;
use mako_replication::{NodeId, Role};
use mako_server::cluster::ClusterError;
use mako_server::{NodeSpec, Site, start_node};
use mako_transport::Transport;
use mako_transport::auth::Secret;
use mako_transport::tcp::{TcpConfig, TcpTransport};
use mako_transport::tls::TlsSettings;
use parking_lot::Mutex;
use tracing::info;

pub use deploy::{DataDirLock, options};
pub use exec::{Catalog, parse_int};
pub use figures::Counters;
pub use procedure::{ProcError, Procedure, in_txn};
pub use redis::RedisOptions;
pub use session::Limits;

/// Everything a server process needs.
pub struct NodeOptions {
    /// The site's name (logs, status).
    pub name: String,
    /// The replica: ids, directories, Raft settings, site settings.
    pub spec: NodeSpec,
    /// Where peers connect.
    pub peer_listen: SocketAddr,
    /// Every other replica's peer address (both groups: its shard's and `meta`'s).
    pub peers: HashMap<NodeId, SocketAddr>,
    /// Peer transport settings (secret, TLS).
    pub tcp: TcpConfig,
    /// Where clients connect.
    pub client_listen: SocketAddr,
    /// Bounds on client connections and transactions.
    pub limits: Limits,
    /// Tables and partitioning.
    pub catalog: Arc<dyn Catalog>,
    /// The client token clients must prove (`None`: no client authentication).
    pub client_token: Option<Arc<Secret>>,
    /// TLS for client connections (`None`: plain TCP).
    pub tls: Option<TlsSettings>,
    /// Where the Prometheus metrics endpoint listens (`None`: no endpoint).
    pub metrics_listen: Option<SocketAddr>,
    /// Server-side procedures clients may call, by name.
    pub procedures: HashMap<String, Arc<dyn Procedure>>,
    /// The Redis-compatible (RESP) front end (`None`: off).
    pub redis: Option<RedisOptions>,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A listener could not bind.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        /// Peers or clients.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The replica would not start.
    #[error(transparent)]
    Start(#[from] ClusterError),
    /// The configuration does not describe a startable site.
    #[error("{0}")]
    Config(String),
    /// Other I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A running server process's replica and listeners.
pub struct Node {
    site: Arc<Site>,
    host: Mutex<Option<Host>>,
    transport: Arc<TcpTransport>,
    clients: Mutex<server::ClientServer>,
    counters: Arc<Counters>,
    client_addr: SocketAddr,
    metrics: Mutex<Option<endpoint::Endpoint>>,
    redis: Mutex<Option<mako_redis::Server>>,
}

impl Node {
    /// Starts the replica and its listeners.
    pub fn start(opts: NodeOptions) -> Result<Node, NodeError> {
        // Bind the client and metrics ports first: a port in use fails before anything
        // else starts.
        let listener = TcpListener::bind(opts.client_listen).map_err(|source| NodeError::Bind {
            what: "clients",
            addr: opts.client_listen,
            source,
        })?;
        let metrics_listener = match opts.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).map_err(|source| NodeError::Bind {
                what: "metrics",
                addr,
                source,
            })?),
            None => None,
        };
        let redis_listener = match &opts.redis {
            Some(r) => Some(
                TcpListener::bind(r.listen).map_err(|source| NodeError::Bind {
                    what: "redis clients",
                    addr: r.listen,
                    source,
                })?,
            ),
            None => None,
        };
        let (transport, inbox) = TcpTransport::start(
            opts.spec.id,
            opts.peer_listen,
            opts.peers.clone(),
            opts.tcp.clone(),
        )
        .map_err(|source| NodeError::Bind {
            what: "peers",
            addr: opts.peer_listen,
            source,
        })?;
        let transport = Arc::new(transport);
        let (site, host) = start_node(
            &opts.spec,
            Arc::clone(&transport) as Arc<dyn Transport>,
            inbox,
        )?;
        let counters = Arc::new(Counters::new(&opts.name));
        let shared = Arc::new(session::Shared {
            site: Arc::clone(&site),
            catalog: opts.catalog,
            limits: opts.limits,
            counters: Arc::clone(&counters),
            name: opts.name.clone(),
            started: Instant::now(),
            workers: opts.spec.site.workers,
            procedures: opts.procedures,
        });
        let redis = match (opts.redis, redis_listener) {
            (Some(r), Some(l)) => {
                let store = redis::SiteStore {
                    shared: Arc::clone(&shared),
                    release_timeout: opts.spec.site.timeout,
                    forward: r.forward,
                    next_worker: std::sync::atomic::AtomicU32::new(0),
                };
                let ropts = mako_redis::Options {
                    token: r.token,
                    max_connections: r.max_connections,
                    name: format!("redis-{}", opts.spec.id),
                    // A value must fit in a reply of the native protocol (forwarding, GET).
                    limits: mako_redis::resp::Limits {
                        max_bulk: mako_proto::MAX_RESULTS,
                        ..mako_redis::resp::Limits::default()
                    },
                    ..mako_redis::Options::default()
                };
                Some(mako_redis::Server::start(l, Arc::new(store), ropts)?)
            }
            _ => None,
        };
        let clients = server::ClientServer::start(listener, shared, opts.client_token, opts.tls)?;
        let client_addr = clients.addr();
        let metrics = match metrics_listener {
            Some(l) => Some(endpoint::Endpoint::start(
                l,
                Arc::clone(&site),
                Arc::clone(&counters),
            )?),
            None => None,
        };
        info!(site = %opts.name, node = opts.spec.id, peers = %transport.local_addr(),
            clients = %client_addr, redis = ?redis.as_ref().map(mako_redis::Server::addr), "serving");
        Ok(Node {
            site,
            host: Mutex::new(Some(host)),
            transport,
            clients: Mutex::new(clients),
            counters,
            client_addr,
            metrics: Mutex::new(metrics),
            redis: Mutex::new(redis),
        })
    }

    /// The site.
    pub fn site(&self) -> &Arc<Site> {
        &self.site
    }

    /// The client-visible outcome counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Where clients connect.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where the metrics endpoint listens, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.lock().as_ref().map(endpoint::Endpoint::addr)
    }

    /// Where Redis clients connect, if the RESP front end is on.
    pub fn redis_addr(&self) -> Option<SocketAddr> {
        self.redis.lock().as_ref().map(mako_redis::Server::addr)
    }

    /// Where peers connect.
    pub fn peer_addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// Sets (or changes) the peer address of node `id`.
    pub fn set_peer_addr(&self, id: NodeId, addr: SocketAddr) {
        self.transport.set_peer_addr(id, addr);
    }

    /// Hands this replica's shard leadership to a caught-up follower, waiting up to
    /// `timeout` for it to take over; `true` if this replica no longer leads.
    pub fn hand_over(&self, timeout: Duration) -> bool {
        let g = self.site.group();
        let deadline = Instant::now() + timeout;
        let shard = self.site.shard_id();
        let others: Vec<NodeId> = self
            .site
            .replicas_of(shard)
            .into_iter()
            .filter(|&n| n != self.site.node())
            .collect();
        if others.is_empty() {
            return g.role() != Role::Leader;
        }
        while g.role() == Role::Leader && Instant::now() < deadline {
            // Any other replica of the shard: Raft refuses a transfer to a lagging or
            // rejoining one, so try each in turn.
            for &other in &others {
                if g.transfer_leader(other).is_err() {
                    continue;
                }
                let until = (Instant::now() + Duration::from_millis(500)).min(deadline);
                while g.role() == Role::Leader && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if g.role() != Role::Leader {
                    break;
                }
            }
            if g.role() == Role::Leader {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        g.role() != Role::Leader
    }

    /// Stops serving clients, optionally hands leadership over, flushes the commit log and
    /// joins every thread.
    pub fn shutdown(&self, hand_over: bool) {
        if let Some(mut r) = self.redis.lock().take() {
            r.stop();
        }
        self.clients.lock().stop();
        if let Some(mut m) = self.metrics.lock().take() {
            m.stop();
        }
        if hand_over {
            self.hand_over(Duration::from_secs(3));
        }
        self.site.stop();
        if let Some(h) = self.host.lock().take() {
            h.shutdown();
        }
        self.transport.shutdown();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown(false);
    }
}
