//! From a deployment's [`Config`] to one site's [`NodeOptions`], and the config's tables as a
//! [`Catalog`].

use std::collections::HashMap;
use std::fs::File;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mako_config::{Config, Partition, Replication};
use mako_server::{NodeSpec, Protocol, SiteConfig, meta_members};
use mako_transport::auth::Secret;
use mako_transport::tcp::TcpConfig;

use crate::{Catalog, Limits, NodeError, NodeOptions};

impl Catalog for Config {
    fn shards(&self) -> u32 {
        Config::shards(self)
    }

    fn tables(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    fn table_index(&self, table: &str) -> Option<usize> {
        self.tables.keys().position(|t| t == table)
    }

    fn shard_of(&self, table: &str, key: &[u8]) -> Option<u32> {
        Config::shard_of(self, table, key)
    }

    fn shards_in(&self, table: &str, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Option<Vec<u32>> {
        let t = self.table(table)?;
        let all = 0..Config::shards(self);
        Some(match &t.partition {
            Partition::Hash => all.collect(),
            Partition::Range { .. } => {
                // Shards from the one holding `lo` to the one holding `hi`.
                let first = match lo {
                    Bound::Included(k) | Bound::Excluded(k) => t.partition.shard_of(k, all.end),
                    Bound::Unbounded => 0,
                };
                let last = match hi {
                    Bound::Included(k) | Bound::Excluded(k) => t.partition.shard_of(k, all.end),
                    Bound::Unbounded => all.end.saturating_sub(1),
                };
                (first..=last.max(first)).collect()
            }
        })
    }
}

/// The options of site `name` of `cfg` (directories created, the data directory locked).
pub fn options(cfg: &Arc<Config>, name: &str) -> Result<(NodeOptions, DataDirLock), NodeError> {
    let site = cfg.site(name).ok_or_else(|| {
        let names: Vec<&str> = cfg.sites.iter().map(|s| s.name.as_str()).collect();
        NodeError::Config(format!(
            "no site {name:?} in the config (sites: {})",
            names.join(", ")
        ))
    })?;
    let (shards, replicas) = (cfg.shards(), cfg.replicas());
    let nodes: Vec<Vec<u64>> = (0..shards)
        .map(|s| {
            cfg.shard_sites(s)
                .into_iter()
                .map(|x| cfg.node_id(x))
                .collect()
        })
        .collect();
    let mut members = cfg.meta_members();
    if members.is_empty() {
        members = meta_members(&nodes, None);
    }
    let id = cfg.node_id(site);
    let dir = cfg.site_data_dir(site);
    std::fs::create_dir_all(&dir).map_err(|e| {
        NodeError::Config(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })?;
    let lock = DataDirLock::take(&dir)?;
    // A `memory` replica that ran here before lost its vote and log: it rejoins as a
    // non-voter until caught up. The marker records that an incarnation ran.
    let marker = dir.join("INCARNATION");
    let rejoin = cfg.durability == mako_config::Durability::Memory && marker.exists();
    std::fs::write(&marker, format!("{}\n", cfg.durability))
        .map_err(|e| NodeError::Config(format!("cannot write {}: {e}", marker.display())))?;
    if rejoin {
        tracing::info!(site = %site.name, "memory durability and an earlier incarnation: rejoining without a vote until caught up");
    }
    let site_cfg = SiteConfig {
        shards,
        workers: cfg.workers,
        tables: cfg.tables.keys().cloned().collect(),
        batch: mako_commitlog::BatchConfig {
            batch_size: cfg.batch.max_pieces,
            max_bytes: cfg.batch.max_bytes,
            linger: Duration::from_micros(cfg.batch.linger_us),
            group_commit: cfg.batch.group_commit,
        },
        timeout: Duration::from_millis(cfg.timeouts.release_ms),
        ..SiteConfig::default()
    };
    let spec = NodeSpec {
        id,
        nodes,
        members,
        site: site_cfg,
        log_dir: dir.join("log"),
        snapshot_dir: dir.join("snap"),
        durability: cfg.durability,
        protocol: match cfg.replication {
            Replication::Raft => Protocol::Raft,
            Replication::Paxos => Protocol::Paxos,
        },
        heartbeat_ms: cfg.raft.heartbeat_ms,
        election_ms: cfg.raft.election_ms,
        preferred: cfg.preferred_leader(site.shard).map(|p| cfg.node_id(p)),
        compact_after_entries: None,
        compact_log_percent: None,
        control_faults: None,
        rejoin,
    };
    let peers: HashMap<u64, std::net::SocketAddr> = cfg
        .sites
        .iter()
        .filter(|s| s.name != site.name)
        .map(|s| (cfg.node_id(s), cfg.peer_addr(s)))
        .collect();
    let mut tcp = TcpConfig::default();
    let tls = match &cfg.security.tls {
        Some(t) => Some(
            mako_transport::tls::load(&t.cert, &t.key, &t.ca, &t.server_name)
                .map_err(|e| NodeError::Config(format!("security.tls: {e}")))?,
        ),
        None => None,
    };
    tcp.tls = tls.clone();
    if let Some(s) = &cfg.security.cluster_secret {
        tcp.secret = Some(Arc::new(secret(s.expose(), "security.cluster_secret")?));
    }
    let client_token = match &cfg.security.client_token {
        Some(t) => Some(Arc::new(secret(t.expose(), "security.client_token")?)),
        None => None,
    };
    let limits = Limits {
        idle_timeout: Duration::from_millis(cfg.client.idle_timeout_ms),
        max_open: cfg.client.max_open_per_connection as usize,
        max_ops: cfg.client.max_ops_per_txn,
        max_connections: cfg.client.max_connections as usize,
        max_scan_rows: cfg.client.max_scan_rows,
    };
    let redis = match cfg.redis_addr(site) {
        Some(listen) => Some(crate::RedisOptions {
            listen,
            max_connections: cfg.client.max_connections as usize,
            token: cfg
                .security
                .client_token
                .as_ref()
                .map(|t| t.expose().to_vec()),
            forward: Some(
                mako_client::ClientConfig::from_config(cfg)
                    .map_err(|e| NodeError::Config(format!("redis forwarding: {e}")))?,
            ),
        }),
        None => None,
    };
    let _ = replicas;
    Ok((
        NodeOptions {
            name: site.name.clone(),
            spec,
            peer_listen: cfg.peer_addr(site),
            peers,
            tcp,
            client_listen: cfg.client_addr(site),
            limits,
            catalog: Arc::clone(cfg) as Arc<dyn Catalog>,
            client_token,
            tls,
            metrics_listen: cfg.metrics_addr(site),
            procedures: HashMap::new(),
            redis,
        },
        lock,
    ))
}

fn secret(bytes: &[u8], key: &str) -> Result<Secret, NodeError> {
    Secret::new(bytes.to_vec()).map_err(|e| NodeError::Config(format!("{key}: {e}")))
}

/// An exclusive lock on a site's data directory, held while the process runs (two servers
/// on one directory would corrupt its log).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Locks `dir` (creating its lock file), or says who holds it.
    pub fn take(dir: &Path) -> Result<DataDirLock, NodeError> {
        let path = dir.join("LOCK");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| NodeError::Config(format!("cannot open {}: {e}", path.display())))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor this function owns; the lock lives as long as it.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(DataDirLock { _file: file });
        }
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Err(NodeError::Config(format!(
                "data directory {} is in use by another server process",
                dir.display()
            )))
        } else {
            Err(NodeError::Config(format!(
                "cannot lock {}: {e}",
                path.display()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPO: &str = "
hosts: {h: {address: 127.0.0.1}}
sites:
  - {name: a, host: h, shard: 0, replica: 0, peer_port: 9001, client_port: 9002}
  - {name: b, host: h, shard: 1, replica: 0, peer_port: 9003, client_port: 9004}
  - {name: c, host: h, shard: 2, replica: 0, peer_port: 9005, client_port: 9006}
tables:
  events: {partition: range, splits: [g, p]}
";

    #[test]
    fn the_config_routes_keys_and_scans_by_each_tables_partitioning() {
        let cfg = Config::from_yaml_strs(&[("t.yml", TOPO)]).unwrap();
        let c: &dyn Catalog = &cfg;
        assert_eq!(c.tables(), vec!["events".to_string(), "kv".to_string()]);
        assert_eq!(
            (
                c.table_index("events"),
                c.table_index("kv"),
                c.table_index("nope")
            ),
            (Some(0), Some(1), None)
        );
        assert_eq!(c.shard_of("events", b"apple"), Some(0));
        assert_eq!(c.shard_of("events", b"g"), Some(1));
        assert_eq!(c.shard_of("events", b"zebra"), Some(2));
        assert_eq!(c.shard_of("nope", b"x"), None);
        let r = |lo: &[u8], hi: &[u8]| {
            c.shards_in("events", Bound::Included(lo), Bound::Excluded(hi))
                .unwrap()
        };
        assert_eq!(r(b"a", b"b"), vec![0]);
        assert_eq!(r(b"h", b"q"), vec![1, 2]);
        assert_eq!(r(b"a", b"z"), vec![0, 1, 2]);
        assert_eq!(
            c.shards_in("events", Bound::Unbounded, Bound::Unbounded),
            Some(vec![0, 1, 2])
        );
        // A hash table's scan reaches every shard.
        assert_eq!(
            c.shards_in("kv", Bound::Included(b"a"), Bound::Excluded(b"b")),
            Some(vec![0, 1, 2])
        );
    }

    #[test]
    fn the_config_picks_the_protocol_and_unknown_sites_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let data = format!("data_dir: {}", dir.path().display());
        for (yml, want) in [
            ("replication: paxos", Protocol::Paxos),
            ("replication: raft", Protocol::Raft),
        ] {
            let cfg = Arc::new(
                Config::from_yaml_strs(&[("t.yml", TOPO), ("d.yml", &data), ("p.yml", yml)])
                    .unwrap(),
            );
            let (o, lock) = options(&cfg, "a").unwrap();
            assert_eq!(o.spec.protocol, want);
            drop(lock);
        }
        let cfg = Arc::new(Config::from_yaml_strs(&[("t.yml", TOPO)]).unwrap());
        let e = options(&cfg, "zz").err().unwrap().to_string();
        assert!(e.contains("no site \"zz\"") && e.contains("a, b, c"), "{e}");
    }
}
