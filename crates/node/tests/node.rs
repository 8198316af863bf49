//! Server nodes over loopback TCP driven through the client library.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mako_client::{Client, ClientConfig, ClientError, SiteAddr};
use mako_logstore::Durability;
use mako_node::{Catalog, Limits, Node, NodeOptions};
use mako_server::{NodeSpec, SiteConfig, meta_members};
use mako_transport::tcp::TcpConfig;

/// Every table hash-partitioned by the first byte of the key (simple and predictable).
struct ByteCatalog {
    shards: u32,
}

impl Catalog for ByteCatalog {
    fn shards(&self) -> u32 {
        self.shards
    }
    fn tables(&self) -> Vec<String> {
        vec!["kv".into()]
    }
    fn shard_of(&self, table: &str, key: &[u8]) -> Option<u32> {
        (table == "kv").then(|| u32::from(key.first().copied().unwrap_or(0)) % self.shards)
    }
    fn shards_in(&self, table: &str, _: Bound<&[u8]>, _: Bound<&[u8]>) -> Option<Vec<u32>> {
        (table == "kv").then(|| (0..self.shards).collect())
    }
}

struct TestCluster {
    nodes: Vec<Node>,
    sites: Vec<SiteAddr>,
    _dir: tempfile::TempDir,
}

fn start(shards: u32, replicas: u32, limits: Limits) -> TestCluster {
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<Vec<u64>> = (0..shards)
        .map(|s| {
            (0..replicas)
                .map(|r| u64::from(s * replicas + r + 1))
                .collect()
        })
        .collect();
    let members = meta_members(&nodes, None);
    let site = SiteConfig {
        shards,
        workers: 2,
        tables: vec!["kv".into()],
        ..SiteConfig::default()
    };
    let catalog: Arc<dyn Catalog> = Arc::new(ByteCatalog { shards });
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut running = Vec::new();
    let mut sites = Vec::new();
    for (s, ids) in nodes.iter().enumerate() {
        for &id in ids {
            let spec = NodeSpec {
                id,
                nodes: nodes.clone(),
                members: members.clone(),
                site: site.clone(),
                log_dir: dir.path().join(format!("log-{id}")),
                snapshot_dir: dir.path().join(format!("snap-{id}")),
                durability: Durability::Memory,
                heartbeat_ms: 20,
                election_ms: (300, 500),
                preferred: Some(ids[0]),
                compact_after_entries: None,
                control_faults: None,
            };
            let node = Node::start(NodeOptions {
                name: format!("s{s}r{}", id - ids[0]),
                spec,
                peer_listen: any,
                peers: HashMap::new(),
                tcp: TcpConfig::default(),
                client_listen: any,
                limits,
                catalog: Arc::clone(&catalog),
                client_token: None,
                tls: None,
            })
            .unwrap();
            sites.push(SiteAddr {
                name: format!("s{s}r{}", id - ids[0]),
                node: id,
                shard: s as u32,
                addr: node.client_addr(),
            });
            running.push(node);
        }
    }
    for a in &running {
        for b in &running {
            if a.site().node() != b.site().node() {
                a.set_peer_addr(b.site().node(), b.peer_addr());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for s in 0..shards {
        while !running
            .iter()
            .any(|n| n.site().shard_id() == s && n.site().serving())
        {
            assert!(Instant::now() < deadline, "no serving leader of shard {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    TestCluster {
        nodes: running,
        sites,
        _dir: dir,
    }
}

impl TestCluster {
    fn client(&self) -> Client {
        Client::new(ClientConfig::new(self.sites.clone()))
    }
}

#[test]
fn put_get_scan_and_transactions_across_shards() {
    let c = start(2, 3, Limits::default());
    let mut cl = c.client();
    for i in 0u8..20 {
        cl.put(&[i, b'k'], &[i]).unwrap();
    }
    assert_eq!(cl.get(&[7, b'k']).unwrap(), Some(vec![7]));
    assert_eq!(cl.get(b"absent").unwrap(), None);
    cl.delete(&[7, b'k']).unwrap();
    assert_eq!(cl.get(&[7, b'k']).unwrap(), None);
    // A scan merges both shards in key order.
    let rows = cl
        .scan(
            Bound::Included(&[2u8][..]),
            Bound::Excluded(&[12u8][..]),
            100,
        )
        .unwrap();
    let keys: Vec<u8> = rows.iter().map(|(k, _)| k[0]).collect();
    assert_eq!(keys, vec![2, 3, 4, 5, 6, 8, 9, 10, 11]);
    let first3 = cl.scan(Bound::Unbounded, Bound::Unbounded, 3).unwrap();
    assert_eq!(
        first3.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    // An interactive transaction across both shards.
    cl.transaction(|t| {
        let a = t.get(&[0, b'k'])?.unwrap_or_default();
        t.put(&[1, b'x'], &a)?;
        t.put(&[2, b'x'], b"two")?;
        Ok(())
    })
    .unwrap();
    assert_eq!(cl.get(&[1, b'x']).unwrap(), Some(vec![0]));
    assert_eq!(cl.get(&[2, b'x']).unwrap(), Some(b"two".to_vec()));
    for n in &c.nodes {
        n.shutdown(false);
    }
}

#[test]
fn interactive_transactions_are_bounded() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        max_open: 2,
        max_ops: 3,
        max_connections: 64,
    };
    let c = start(1, 1, limits);
    let mut cl = c.client();
    // Too many operations.
    let mut t = cl.begin();
    for i in 0..3u8 {
        t.put(&[i], b"v").unwrap();
    }
    match t.put(b"x", b"v") {
        Err(ClientError::Aborted {
            reason,
            retryable: false,
        }) => assert_eq!(reason, "too_many_ops"),
        other => panic!("expected too_many_ops, got {other:?}"),
    }
    drop(t);
    assert_eq!(
        cl.get(&[0]).unwrap(),
        None,
        "an aborted transaction wrote nothing"
    );
    // Idle.
    let mut t = cl.begin();
    t.put(b"idle", b"v").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    match t.commit() {
        Err(ClientError::Aborted { reason, .. }) => assert_eq!(reason, "idle"),
        other => panic!("expected idle abort, got {other:?}"),
    }
    assert_eq!(cl.get(b"idle").unwrap(), None);
    for n in &c.nodes {
        n.shutdown(false);
    }
}
