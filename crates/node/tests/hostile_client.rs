//! A server against clients that misbehave: trickling bytes, never reading, slow metrics
//! scrapers. A hang is the failure: every wait is bounded generously.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use mako_client::{Client, ClientConfig, ClientError, SiteAddr};
use mako_logstore::Durability;
use mako_node::{Catalog, Limits, Node, NodeOptions};
use mako_proto::{
    Body, ErrorCode, Hello, MAGIC, MAX_HELLO, Op, Request, VERSION, Welcome, decode, encode,
    read_frame, write_frame,
};
use mako_server::{NodeSpec, SiteConfig, meta_members};
use mako_transport::tcp::TcpConfig;

/// Generous bound on something that must end (a hang is the failure).
const BOUND: Duration = Duration::from_secs(60);

struct OneShard;

impl Catalog for OneShard {
    fn shards(&self) -> u32 {
        1
    }
    fn tables(&self) -> Vec<String> {
        vec!["kv".into()]
    }
    fn shard_of(&self, table: &str, _: &[u8]) -> Option<u32> {
        (table == "kv").then_some(0)
    }
    fn shards_in(&self, table: &str, _: Bound<&[u8]>, _: Bound<&[u8]>) -> Option<Vec<u32>> {
        (table == "kv").then(|| vec![0])
    }
}

/// One single-replica site, serving.
fn one_node(dir: &std::path::Path) -> Node {
    one_node_with(dir, Limits::default())
}

/// One single-replica site with `limits`, serving.
fn one_node_with(dir: &std::path::Path, limits: Limits) -> Node {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let nodes = vec![vec![1u64]];
    let node = Node::start(NodeOptions {
        name: "s0r0".into(),
        spec: NodeSpec {
            id: 1,
            nodes: nodes.clone(),
            members: meta_members(&nodes, None),
            site: SiteConfig {
                shards: 1,
                workers: 2,
                tables: vec!["kv".into()],
                ..SiteConfig::default()
            },
            log_dir: dir.join("log"),
            snapshot_dir: dir.join("snap"),
            durability: Durability::Memory,
            protocol: mako_server::Protocol::Raft,
            heartbeat_ms: 20,
            election_ms: (300, 500),
            preferred: Some(1),
            compact_after_entries: None,
            compact_log_percent: None,
            control_faults: None,
            rejoin: false,
        },
        peer_listen: any,
        peers: HashMap::new(),
        tcp: TcpConfig::default(),
        client_listen: any,
        limits,
        catalog: Arc::new(OneShard),
        client_token: None,
        tls: None,
        metrics_listen: Some(any),
        procedures: HashMap::new(),
        redis: None,
    })
    .unwrap();
    let deadline = Instant::now() + BOUND;
    while !node.site().serving() {
        assert!(Instant::now() < deadline, "the site never served");
        std::thread::sleep(Duration::from_millis(20));
    }
    node
}

fn client(node: &Node) -> Client {
    Client::new(ClientConfig::new(vec![SiteAddr {
        name: "s0r0".into(),
        node: 1,
        shard: 0,
        addr: node.client_addr(),
    }]))
}

/// A raw connection past the (token-less) handshake.
fn handshaken(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write_frame(
        &mut s,
        &Hello {
            magic: MAGIC,
            version: VERSION,
            nonce: [3u8; 32],
        },
    )
    .unwrap();
    let w: Welcome = decode(&read_frame(&mut s, MAX_HELLO).unwrap()).unwrap();
    assert!(w.refused.is_none());
    s
}

/// Writes `prefix`, then one byte every `gap` until told to stop or the write fails;
/// the number of bytes written after the prefix.
fn trickle(
    mut s: TcpStream,
    prefix: Vec<u8>,
    gap: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        if s.write_all(&prefix).is_err() {
            return 0;
        }
        let mut sent = 0;
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(gap);
            if s.write_all(&[0]).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    })
}

/// Shuts `node` down on a thread; fails the test if that does not end within [`BOUND`].
fn shutdown_bounded(node: Node) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        node.shutdown(false);
        drop(node);
        let _ = tx.send(());
    });
    rx.recv_timeout(BOUND)
        .expect("Node::shutdown did not return: a client holds a thread");
}

#[test]
fn a_hello_trickled_byte_by_byte_is_cut_at_the_handshake_bound() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path());
    // A hello claiming 1000 bytes (under the hello cap), sent one byte per 100 ms: each
    // byte arrives within the server's read timeout, so only a handshake deadline cuts it.
    let s = TcpStream::connect(node.client_addr()).unwrap();
    let mut watch = s.try_clone().unwrap();
    watch.set_read_timeout(Some(BOUND * 3)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let t = trickle(
        s,
        1000u32.to_be_bytes().to_vec(),
        Duration::from_millis(100),
        Arc::clone(&stop),
    );
    // The server closes the connection (or answers and closes) before the hello is whole.
    let mut buf = [0u8; 64];
    while matches!(watch.read(&mut buf), Ok(n) if n > 0) {}
    stop.store(true, Ordering::Release);
    let sent = t.join().unwrap();
    assert!(
        sent < 1000,
        "the server waited for the whole trickled hello ({sent} bytes)"
    );
    // The server still serves others.
    client(&node).put(b"k", b"v").unwrap();
    shutdown_bounded(node);
}

#[test]
fn shutdown_is_not_held_by_a_client_trickling_a_frame() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path());
    let s = handshaken(node.client_addr());
    let stop = Arc::new(AtomicBool::new(false));
    let t = trickle(
        s,
        100_000u32.to_be_bytes().to_vec(),
        Duration::from_millis(100),
        Arc::clone(&stop),
    );
    shutdown_bounded(node);
    stop.store(true, Ordering::Release);
    t.join().unwrap();
}

#[test]
fn shutdown_is_not_held_by_a_client_that_never_reads() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path());
    let mut c = client(&node);
    let value = vec![b'x'; 8 * 1024];
    for i in 0..256u32 {
        c.put(&i.to_be_bytes(), &value).unwrap();
    }
    // Pipelined scans of ~2 MiB each, never read: the server's writes block once the
    // socket buffers fill.
    let mut s = handshaken(node.client_addr());
    let scan = Request {
        id: 1,
        body: Body::Run {
            ops: vec![Op::Scan {
                table: "kv".into(),
                lo: Bound::Unbounded,
                hi: Bound::Unbounded,
                limit: 1000,
            }],
        },
    };
    let frame = encode(&scan).unwrap();
    for _ in 0..100 {
        s.write_all(&frame).unwrap();
    }
    // Give the server time to fill the buffers (not an assertion).
    std::thread::sleep(Duration::from_millis(500));
    shutdown_bounded(node);
    drop(s);
}

#[test]
fn a_slow_metrics_client_blocks_neither_other_scrapes_nor_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path());
    let addr = node.metrics_addr().unwrap();
    // Headers sent one byte per 500 ms, never ending.
    let stop = Arc::new(AtomicBool::new(false));
    let slow = trickle(
        TcpStream::connect(addr).unwrap(),
        b"GET /metrics HTTP/1.1\r\nX-Slow: ".to_vec(),
        Duration::from_millis(500),
        Arc::clone(&stop),
    );
    // Let the endpoint take the slow client first (not an assertion).
    std::thread::sleep(Duration::from_millis(300));
    let (tx, rx) = mpsc::channel();
    let answered = Arc::new(AtomicUsize::new(0));
    let a2 = Arc::clone(&answered);
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(BOUND * 3)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        if text.starts_with("HTTP/1.1 200") {
            a2.fetch_add(1, Ordering::Release);
        }
        let _ = tx.send(text);
    });
    let text = rx
        .recv_timeout(BOUND)
        .expect("a slow metrics client held the endpoint for everyone");
    assert!(text.contains("mako_term"), "{text}");
    assert_eq!(answered.load(Ordering::Acquire), 1);
    shutdown_bounded(node);
    stop.store(true, Ordering::Release);
    slow.join().unwrap();
}

#[test]
fn a_scan_too_large_for_a_reply_is_refused_and_a_run_carrying_it_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path());
    let mut c = client(&node);
    let value = vec![b'v'; 512 * 1024];
    for i in 0..40u32 {
        c.put(&i.to_be_bytes(), &value).unwrap();
    }
    // 20 MiB of rows do not fit in one reply: a clear refusal, not a broken connection
    // (which the client must report as an unknown outcome).
    match c.scan(Bound::Unbounded, Bound::Unbounded, u32::MAX) {
        Err(ClientError::Request { code, .. }) => assert_eq!(code, ErrorCode::TooLarge),
        other => panic!(
            "expected a too-large refusal, got {:?}",
            other.map(|r| r.len())
        ),
    }
    // A one-shot transaction writing and scanning too much is refused before its commit.
    let r = c.run(vec![
        Op::Put {
            table: "kv".into(),
            key: b"written".to_vec(),
            value: b"1".to_vec(),
        },
        Op::Scan {
            table: "kv".into(),
            lo: Bound::Unbounded,
            hi: Bound::Unbounded,
            limit: u32::MAX,
        },
    ]);
    assert!(
        matches!(
            &r,
            Err(ClientError::Request {
                code: ErrorCode::TooLarge,
                ..
            })
        ),
        "{:?}",
        r.map(|v| v.len())
    );
    assert_eq!(c.get(b"written").unwrap(), None, "a refused Run committed");
    // Inside an interactive transaction the refusal leaves the transaction usable.
    let mut t = c.begin();
    t.put(b"inside", b"1").unwrap();
    assert!(matches!(
        t.scan(Bound::Unbounded, Bound::Unbounded, u32::MAX),
        Err(ClientError::Request {
            code: ErrorCode::TooLarge,
            ..
        })
    ));
    assert_eq!(
        t.scan(Bound::Unbounded, Bound::Unbounded, 3).unwrap().len(),
        3
    );
    t.commit().unwrap();
    assert_eq!(c.get(b"inside").unwrap(), Some(b"1".to_vec()));
    shutdown_bounded(node);
}

#[test]
fn a_transaction_aborted_for_good_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node_with(
        dir.path(),
        Limits {
            max_ops: 1,
            ..Limits::default()
        },
    );
    let mut c = client(&node);
    // The closure ignores the second operation's failure; the abort (too many operations)
    // is final, so the commit must say so and `transaction` must not run it again.
    let mut runs = 0;
    let r = c.transaction(|t| {
        runs += 1;
        t.put(b"a", b"1")?;
        let _ = t.put(b"b", b"2");
        Ok(())
    });
    match r {
        Err(ClientError::Aborted {
            retryable: false, ..
        }) => {}
        other => panic!("expected a final abort, got {other:?}"),
    }
    assert_eq!(runs, 1, "a non-retryable abort was retried");
    assert_eq!(c.get(b"a").unwrap(), None);
    shutdown_bounded(node);
}
