//! Server nodes over loopback TCP driven through the client library.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mako_client::{Client, ClientConfig, ClientError, SiteAddr};
use mako_logstore::Durability;
use mako_node::{Catalog, Limits, Node, NodeOptions, ProcError, Procedure, in_txn};
use mako_proto::{
    Auth, AuthResult, Body, ErrorCode, Hello, MAGIC, MAX_FRAME, MAX_HELLO, Reply, Request,
    Response, VERSION, Welcome, decode, read_frame, write_frame,
};
use mako_server::{NodeSpec, Site, SiteConfig, meta_members};
use mako_transport::auth::Secret;
use mako_transport::tcp::TcpConfig;
use mako_transport::tls::{self, TlsSettings};

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

/// `transfer`: args `from\0to\0amount`, moves `amount` between two decimal counters of `kv`.
struct Transfer(Arc<dyn Catalog>);

impl Procedure for Transfer {
    fn call(&self, site: &Site, worker: u32, args: &[u8]) -> Result<Vec<u8>, ProcError> {
        let parts: Vec<&[u8]> = args.split(|&b| b == 0).collect();
        let [from, to, amount] = parts[..] else {
            return Err(ProcError::Invalid("expected from, to, amount".into()));
        };
        let amount: i64 = std::str::from_utf8(amount)
            .ok()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| ProcError::Invalid("amount".into()))?;
        in_txn(site, worker, |tx| {
            for (key, delta) in [(from, -amount), (to, amount)] {
                let s = self.0.shard_of("kv", key).unwrap();
                let old = tx
                    .get(s, 0, key)?
                    .and_then(|v| mako_node::parse_int(&v))
                    .unwrap_or(0);
                tx.put(s, 0, key, bytes::Bytes::from((old + delta).to_string()))?;
            }
            Ok(b"done".to_vec())
        })
    }
}

fn procedures(catalog: &Arc<dyn Catalog>) -> HashMap<String, Arc<dyn Procedure>> {
    let mut m: HashMap<String, Arc<dyn Procedure>> = HashMap::new();
    m.insert("transfer".into(), Arc::new(Transfer(Arc::clone(catalog))));
    m
}

struct TestCluster {
    nodes: Vec<Node>,
    sites: Vec<SiteAddr>,
    _dir: tempfile::TempDir,
}

fn start(shards: u32, replicas: u32, limits: Limits) -> TestCluster {
    start_with(shards, replicas, limits, None, None)
}

fn start_with(
    shards: u32,
    replicas: u32,
    limits: Limits,
    token: Option<Arc<Secret>>,
    tls: Option<TlsSettings>,
) -> TestCluster {
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
                protocol: mako_server::Protocol::Raft,
                heartbeat_ms: 20,
                election_ms: (300, 500),
                preferred: Some(ids[0]),
                compact_after_entries: None,
                compact_log_percent: None,
                control_faults: None,
                rejoin: false,
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
                client_token: token.clone(),
                tls: tls.clone(),
                metrics_listen: Some(any),
                procedures: procedures(&catalog),
                redis: None,
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
        max_scan_rows: 1_000,
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

fn token(b: u8) -> Arc<Secret> {
    Arc::new(Secret::new(vec![b; 24]).unwrap())
}

#[test]
fn clients_prove_the_token_and_the_server_proves_it_back() {
    let c = start_with(1, 1, Limits::default(), Some(token(7)), None);
    let with = |t: Option<Arc<Secret>>| {
        let mut cfg = ClientConfig::new(c.sites.clone());
        cfg.token = t;
        cfg.leader_wait = Duration::from_secs(2);
        Client::new(cfg)
    };
    with(Some(token(7))).put(b"a", b"1").unwrap();
    assert_eq!(with(Some(token(7))).get(b"a").unwrap(), Some(b"1".to_vec()));
    // A wrong token: the server's proof does not verify for the client (and vice versa).
    match with(Some(token(8))).status("s0r0") {
        Err(ClientError::Auth(why)) => assert!(why.contains("could not prove"), "{why}"),
        other => panic!("expected an authentication failure, got {other:?}"),
    }
    // No token at all.
    match with(None).status("s0r0") {
        Err(ClientError::Auth(why)) => assert!(why.contains("requires a client token"), "{why}"),
        other => panic!("expected an authentication failure, got {other:?}"),
    }
    // A raw client sending a forged proof is refused and disconnected.
    let mut s = std::net::TcpStream::connect(c.sites[0].addr).unwrap();
    let nonce = [1u8; 32];
    write_frame(
        &mut s,
        &Hello {
            magic: MAGIC,
            version: VERSION,
            nonce,
        },
    )
    .unwrap();
    let w: Welcome = decode(&read_frame(&mut s, MAX_HELLO).unwrap()).unwrap();
    assert!(w.auth_required);
    write_frame(&mut s, &Auth { proof: [0u8; 32] }).unwrap();
    let r: AuthResult = decode(&read_frame(&mut s, MAX_HELLO).unwrap()).unwrap();
    assert!(matches!(r, AuthResult::Refused(_)));
    write_frame(
        &mut s,
        &Request {
            id: 1,
            body: Body::Topology,
        },
    )
    .ok();
    assert!(
        read_frame(&mut s, MAX_FRAME).is_err(),
        "a refused connection is closed"
    );
    // The right token still works afterwards.
    assert_eq!(with(Some(token(7))).get(b"a").unwrap(), Some(b"1".to_vec()));
}

/// A CA and a certificate naming `mako`, as PEM.
fn tls_pair() -> (TlsSettings, TlsSettings) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issue = || {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["mako".to_string()]).unwrap();
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        tls::from_pem(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            ca_cert.pem().as_bytes(),
            "mako",
        )
        .unwrap()
    };
    (issue(), issue())
}

#[test]
fn client_connections_run_over_tls_and_plain_clients_are_refused() {
    let (server, client) = tls_pair();
    let c = start_with(1, 1, Limits::default(), Some(token(3)), Some(server));
    let mut cfg = ClientConfig::new(c.sites.clone());
    cfg.token = Some(token(3));
    cfg.tls = Some(client);
    let mut cl = Client::new(cfg);
    cl.put(b"t", b"ls").unwrap();
    assert_eq!(cl.get(b"t").unwrap(), Some(b"ls".to_vec()));
    // A client without TLS cannot talk to it.
    let mut plain = ClientConfig::new(c.sites.clone());
    plain.token = Some(token(3));
    plain.connect_timeout = Duration::from_secs(1);
    assert!(Client::new(plain).status("s0r0").is_err());
    // A client with a certificate from another CA is refused too.
    let (_, stranger) = tls_pair();
    let mut other = ClientConfig::new(c.sites.clone());
    other.token = Some(token(3));
    other.tls = Some(stranger);
    assert!(Client::new(other).status("s0r0").is_err());
    assert_eq!(cl.get(b"t").unwrap(), Some(b"ls".to_vec()));
}

#[test]
fn malformed_requests_get_an_error_and_malformed_frames_close_only_their_connection() {
    let c = start(1, 1, Limits::default());
    let addr = c.sites[0].addr;
    let hello = |s: &mut std::net::TcpStream| {
        write_frame(
            s,
            &Hello {
                magic: MAGIC,
                version: VERSION,
                nonce: [0; 32],
            },
        )
        .unwrap();
        let w: Welcome = decode(&read_frame(s, MAX_HELLO).unwrap()).unwrap();
        assert!(w.refused.is_none());
    };
    // An undecodable request in a good frame: an error reply, and the connection stays.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    hello(&mut s);
    s.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).unwrap();
    let r: Response = decode(&read_frame(&mut s, MAX_FRAME).unwrap()).unwrap();
    assert!(
        matches!(
            r.reply,
            Reply::Error {
                code: ErrorCode::Malformed,
                ..
            }
        ),
        "{r:?}"
    );
    write_frame(
        &mut s,
        &Request {
            id: 9,
            body: Body::Topology,
        },
    )
    .unwrap();
    let r: Response = decode(&read_frame(&mut s, MAX_FRAME).unwrap()).unwrap();
    assert_eq!(r.id, 9);
    assert!(matches!(r.reply, Reply::Topology(_)));
    // An oversized length prefix: that connection closes.
    let mut bad = std::net::TcpStream::connect(addr).unwrap();
    hello(&mut bad);
    bad.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
    assert!(read_frame(&mut bad, MAX_FRAME).is_err());
    // Garbage instead of a hello, and a truncated hello: closed.
    let mut g = std::net::TcpStream::connect(addr).unwrap();
    g.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_frame(&mut g, MAX_FRAME).is_err());
    let mut t = std::net::TcpStream::connect(addr).unwrap();
    t.write_all(&[0, 0, 0, 40, b'M']).unwrap();
    drop(t);
    // A client speaking another version is told so.
    let mut v = std::net::TcpStream::connect(addr).unwrap();
    write_frame(
        &mut v,
        &Hello {
            magic: MAGIC,
            version: VERSION + 1,
            nonce: [0; 32],
        },
    )
    .unwrap();
    let w: Welcome = decode(&read_frame(&mut v, MAX_HELLO).unwrap()).unwrap();
    assert!(w.refused.unwrap().contains("version"));
    // The first connection and new clients keep working.
    write_frame(
        &mut s,
        &Request {
            id: 10,
            body: Body::Topology,
        },
    )
    .unwrap();
    let r: Response = decode(&read_frame(&mut s, MAX_FRAME).unwrap()).unwrap();
    assert_eq!(r.id, 10);
    let mut cl = c.client();
    cl.put(b"still", b"ok").unwrap();
    assert_eq!(cl.get(b"still").unwrap(), Some(b"ok".to_vec()));
}

/// `GET path` on `addr`; the whole response.
fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the first sample line of `metric` whose labels contain `labels`.
fn sample(text: &str, metric: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn every_server_serves_prometheus_metrics() {
    let c = start(2, 3, Limits::default());
    let mut cl = c.client();
    for i in 0u8..10 {
        cl.put(&[i], b"v").unwrap();
    }
    // A transaction aborted by the client is counted by reason.
    let mut t = cl.begin();
    t.put(&[0], b"w").unwrap();
    t.abort().unwrap();
    let mut released = 0.0;
    for n in &c.nodes {
        let text = http_get(n.metrics_addr().unwrap(), "/metrics");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let site = format!(
            "site=\"{}\"",
            c.sites
                .iter()
                .find(|s| s.node == n.site().node())
                .unwrap()
                .name
        );
        let term = sample(&text, "mako_term", &site).expect("mako_term");
        assert!(term >= 1.0, "{text}");
        assert!(sample(&text, "mako_applied_index", &site).unwrap() >= 1.0);
        assert!(sample(&text, "mako_epoch", &site).unwrap() >= 1.0);
        let leader = sample(&text, "mako_leader", &site).unwrap();
        assert_eq!(leader == 1.0, n.site().is_leader());
        if let Some(r) = sample(&text, "mako_released_total", &site) {
            released += r;
        }
        if n.site().is_leader() && sample(&text, "mako_aborts_total", "reason=\"client\"").is_some()
        {
            assert!(
                text.contains("mako_release_latency_seconds_bucket"),
                "{text}"
            );
        }
    }
    assert_eq!(
        released, 10.0,
        "every released put is counted once, on its coordinator"
    );
    let nf = http_get(c.nodes[0].metrics_addr().unwrap(), "/nope");
    assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
}

#[test]
fn server_side_procedures_run_as_one_transaction_per_request() {
    let c = start(2, 3, Limits::default());
    let mut cl = c.client();
    cl.put(&[2, b'a'], b"100").unwrap();
    cl.put(&[1, b'b'], b"0").unwrap();
    let args = [&[2, b'a'][..], &[0], &[1, b'b'], &[0], b"30"].concat();
    assert_eq!(cl.call(0, "transfer", &args).unwrap(), b"done".to_vec());
    assert_eq!(cl.get(&[2, b'a']).unwrap(), Some(b"70".to_vec()));
    assert_eq!(cl.get(&[1, b'b']).unwrap(), Some(b"30".to_vec()));
    match cl.call(1, "nope", b"") {
        Err(ClientError::Request {
            code: ErrorCode::UnknownProcedure,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match cl.call(0, "transfer", b"garbage") {
        Err(ClientError::Request {
            code: ErrorCode::InvalidValue,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_client_over_the_connection_limit_is_told_why() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let c = start(1, 1, limits);
    let mut first = c.client();
    first
        .status("s0r0")
        .expect("the first connection is served");
    let mut second = c.client();
    match second.status("s0r0") {
        Err(ClientError::Refused(why)) => {
            assert!(why.contains("too many client connections"), "{why}")
        }
        other => panic!("expected a refusal naming the limit, got {other:?}"),
    }
    drop(first);
    // Once the first connection is gone, a new client is served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if c.client().status("s0r0").is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_scan_returning_more_than_the_row_limit_is_refused_and_the_transaction_stays_usable() {
    let limits = Limits {
        max_scan_rows: 5,
        ..Limits::default()
    };
    let c = start(2, 3, limits);
    let mut cl = c.client();
    for i in 0u8..8 {
        cl.put(&[i, b's'], b"v").unwrap();
    }
    // At most the limit: fine.
    assert_eq!(
        cl.scan(Bound::Unbounded, Bound::Unbounded, 5)
            .unwrap()
            .len(),
        5
    );
    // More than the limit would return: refused, not truncated.
    match cl.scan(Bound::Unbounded, Bound::Unbounded, u32::MAX) {
        Err(ClientError::Request {
            code: ErrorCode::TooLarge,
            message,
        }) => {
            assert!(message.contains("at most 5 rows"), "{message}")
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // A large limit over a small range is fine.
    let few = cl
        .scan(
            Bound::Included(&[0u8][..]),
            Bound::Excluded(&[3u8][..]),
            u32::MAX,
        )
        .unwrap();
    assert_eq!(few.len(), 3);
    // Inside a transaction the refused scan leaves it usable.
    let mut t = cl.begin();
    assert!(
        t.scan(Bound::Unbounded, Bound::Unbounded, u32::MAX)
            .is_err()
    );
    t.put(b"after", b"1").unwrap();
    t.commit().unwrap();
    assert_eq!(cl.get(b"after").unwrap(), Some(b"1".to_vec()));
}

/// `Txn::version` over the client protocol: every write changes it (the same value again
/// and a delete included), and a stale version read aborts the commit.
#[test]
fn client_version_reads_change_with_every_write() {
    let c = start(1, 1, Limits::default());
    let mut cl = c.client();
    let version = |cl: &mut mako_client::Client| {
        let mut t = cl.begin();
        let v = t.version(b"k").unwrap();
        t.commit().unwrap();
        v
    };
    assert_eq!(version(&mut cl), None);
    cl.put(b"k", b"same").unwrap();
    let v1 = version(&mut cl).expect("written");
    cl.put(b"k", b"same").unwrap();
    let v2 = version(&mut cl).expect("written");
    assert_ne!(v1, v2);
    cl.delete(b"k").unwrap();
    let v3 = version(&mut cl).expect("a delete is a version");
    assert_ne!(v2, v3);
    assert_eq!(cl.get(b"k").unwrap(), None);

    let mut t = cl.begin();
    assert_eq!(t.version(b"k").unwrap(), Some(v3));
    t.put(b"other", b"x").unwrap();
    let mut cl2 = c.client();
    cl2.put(b"k", b"again").unwrap();
    match t.commit() {
        Err(ClientError::Aborted { reason, .. }) => assert_eq!(reason, "conflict"),
        other => panic!("a stale version read must abort, got {other:?}"),
    }
    for n in &c.nodes {
        n.shutdown(false);
    }
}
