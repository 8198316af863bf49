//! Tests of the TCP transport on 127.0.0.1 with OS-assigned ports.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use mako_transport::tcp::{TcpConfig, TcpTransport};
use mako_transport::{Envelope, SendError, Transport};

#[path = "common/closed.rs"]
mod closed;
#[path = "common/log.rs"]
#[allow(dead_code)]
mod log;

const WAIT: Duration = Duration::from_secs(10);

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn env(from: u64, to: u64, group: u32, n: u64) -> Envelope {
    Envelope {
        group,
        from,
        to,
        payload: Bytes::from(n.to_le_bytes().to_vec()),
    }
}

fn num(e: &Envelope) -> u64 {
    u64::from_le_bytes(e.payload[..8].try_into().unwrap())
}

/// Starts one transport per id and tells every node every other node's address.
fn cluster(ids: &[u64], cfg: TcpConfig) -> Vec<(TcpTransport, Receiver<Envelope>)> {
    log::install();
    let nodes: Vec<_> = ids
        .iter()
        .map(|&id| TcpTransport::start(id, any(), HashMap::new(), cfg.clone()).unwrap())
        .collect();
    for (t, _) in &nodes {
        for (u, _) in &nodes {
            t.set_peer_addr(u.local_id(), u.local_addr());
        }
    }
    nodes
}

/// Sends probes from `a` to `b` until one arrives.
fn wait_link(a: &TcpTransport, b_rx: &Receiver<Envelope>, to: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let _ = a.send(env(a.local_id(), to, 0, u64::MAX));
        match b_rx.recv_timeout(Duration::from_millis(20)) {
            Ok(_) => break,
            Err(_) => assert!(
                Instant::now() < deadline,
                "link {} -> {to} never came up",
                a.local_id()
            ),
        }
    }
}

/// Receives the next envelope that is not a [`wait_link`] probe.
fn recv_data(rx: &Receiver<Envelope>) -> Envelope {
    loop {
        let e = rx.recv_timeout(WAIT).expect("envelope");
        if num(&e) != u64::MAX {
            return e;
        }
    }
}

#[test]
fn three_nodes_exchange_groups_both_ways() {
    let nodes = cluster(&[1, 2, 3], TcpConfig::default());
    const N: u64 = 100;
    for (t, _) in &nodes {
        let me = t.local_id();
        for (u, _) in &nodes {
            let to = u.local_id();
            if to == me {
                continue;
            }
            for g in 0..4u32 {
                // Half one by one, half as one batch.
                for i in 0..N / 2 {
                    t.send(env(me, to, g, i)).unwrap();
                }
                let batch = (N / 2..N).map(|i| env(me, to, g, i)).collect();
                assert!(t.send_batch(batch).is_empty());
            }
        }
    }
    for (t, rx) in &nodes {
        let mut next: HashMap<(u64, u32), u64> = HashMap::new();
        for _ in 0..2 * 4 * N {
            let e = rx.recv_timeout(WAIT).expect("envelope");
            assert_eq!(e.to, t.local_id());
            assert_ne!(e.from, t.local_id());
            let expect = next.entry((e.from, e.group)).or_default();
            assert_eq!(num(&e), *expect, "in order per sender and group");
            *expect += 1;
        }
        assert_eq!(next.len(), 8);
        assert!(next.values().all(|&n| n == N));
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    }
    for (t, _) in &nodes {
        t.shutdown();
    }
    assert_eq!(
        log::warn_count(1) + log::warn_count(2) + log::warn_count(3),
        0
    );
}

#[test]
fn large_payloads() {
    let nodes = cluster(&[11, 12], TcpConfig::default());
    let big: Bytes = (0..(1 << 20))
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    for (t, _) in &nodes {
        let to = 23 - t.local_id();
        for g in 0..3 {
            t.send(Envelope {
                group: g,
                from: t.local_id(),
                to,
                payload: big.clone(),
            })
            .unwrap();
        }
    }
    for (_, rx) in &nodes {
        for g in 0..3 {
            let e = rx.recv_timeout(WAIT).expect("1 MiB envelope");
            assert_eq!(e.group, g);
            assert_eq!(e.payload, big);
        }
    }
}

#[test]
fn oversized_send_is_dropped_not_fatal() {
    let cfg = TcpConfig {
        max_frame_bytes: 1024,
        ..TcpConfig::default()
    };
    let nodes = cluster(&[21, 22], cfg);
    let (a, _) = &nodes[0];
    let (_, b_rx) = &nodes[1];
    a.send(Envelope {
        group: 0,
        from: 21,
        to: 22,
        payload: Bytes::from(vec![0u8; 2048]),
    })
    .unwrap();
    a.send(env(21, 22, 0, 5)).unwrap();
    assert_eq!(num(&recv_data(b_rx)), 5);
    assert_eq!(
        log::warn_count(21),
        1,
        "one warning for the dropped envelope"
    );
    assert_eq!(log::warn_count(22), 0);
}

#[test]
fn reconnects_after_drop_connections() {
    let cfg = TcpConfig {
        reconnect_min: Duration::from_millis(5),
        reconnect_max: Duration::from_millis(50),
        ..TcpConfig::default()
    };
    let nodes = cluster(&[31, 32], cfg);
    let (a, a_rx) = &nodes[0];
    let (b, b_rx) = &nodes[1];
    wait_link(a, b_rx, 32);
    wait_link(b, a_rx, 31);
    // Drop from the dialing side, then from the accepting side.
    for dropper in [a, b] {
        dropper.drop_connections();
        wait_link(a, b_rx, 32);
        wait_link(b, a_rx, 31);
        // Ordinary traffic flows again, in order.
        for i in 0..50 {
            a.send(env(31, 32, 1, i)).unwrap();
        }
        let got: Vec<u64> = (0..50).map(|_| num(&recv_data(b_rx))).collect();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }
    assert_eq!(
        log::warn_count(31) + log::warn_count(32),
        0,
        "a dropped link is not a warning"
    );
}

#[test]
fn restarted_peer_is_reached_again() {
    let cfg = TcpConfig {
        reconnect_min: Duration::from_millis(5),
        reconnect_max: Duration::from_millis(50),
        ..TcpConfig::default()
    };
    let mut nodes = cluster(&[41, 42], cfg.clone());
    let (b, _) = nodes.pop().unwrap();
    let (a, a_rx) = nodes.pop().unwrap();
    let b_addr = b.local_addr();
    drop(b);
    // Node 2 comes back on the same address: node 1 redials it.
    let (b, b_rx) = TcpTransport::start(42, b_addr, HashMap::new(), cfg).unwrap();
    b.set_peer_addr(41, a.local_addr());
    wait_link(&a, &b_rx, 42);
    wait_link(&b, &a_rx, 41);
    assert_eq!(log::warn_count(41) + log::warn_count(42), 0);
}

/// Sends `bytes` on a raw connection and checks the transport closes it.
fn assert_closed_after(addr: SocketAddr, prefix: &[u8], bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    if !prefix.is_empty() {
        s.write_all(prefix).unwrap();
        let mut reply = [0u8; 4 + HELLO_LEN];
        s.read_exact(&mut reply).expect("hello reply");
        assert_eq!(&reply[4..8], b"MKT2");
    }
    let _ = s.write_all(bytes);
    let start = Instant::now();
    closed::wait_closed(&mut s);
    assert!(start.elapsed() < WAIT);
}

/// Bytes of a hello frame's body (version 2: magic, version, ids, mode, nonce, proof).
const HELLO_LEN: usize = 4 + 8 + 8 + 1 + 32 + 32;

/// An unauthenticated version-2 hello frame, length prefix included.
fn hello(from: u64, to: u64) -> Vec<u8> {
    let mut v = (HELLO_LEN as u32).to_be_bytes().to_vec();
    v.extend_from_slice(b"MKT2");
    v.extend_from_slice(&from.to_le_bytes());
    v.extend_from_slice(&to.to_le_bytes());
    v.push(0);
    v.extend_from_slice(&[0u8; 64]);
    v
}

#[test]
fn garbage_closes_only_that_connection() {
    let nodes = cluster(&[50, 90], TcpConfig::default());
    let (a, a_rx) = &nodes[0];
    let (b, b_rx) = &nodes[1];
    // Node 90 also expects a node 10 that never shows up; a raw client will pose as it.
    b.set_peer_addr(10, "127.0.0.1:9".parse().unwrap());
    wait_link(a, b_rx, 90);
    let addr = b.local_addr();

    let mut garbage = 11u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(b"hello world");
    assert_closed_after(addr, &[], &garbage); // bad hello
    assert_closed_after(addr, &[], &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]); // oversized
    assert_closed_after(addr, &[], &hello(90, 90)); // hello in the wrong direction
    assert_closed_after(addr, &hello(10, 90), &[0, 0, 0, 3, 1, 2, 3]); // short header
    assert_closed_after(addr, &hello(10, 90), &[0x7f, 0xff, 0xff, 0xff]); // oversized
    let mut wrong_from = 20u32.to_be_bytes().to_vec();
    wrong_from.extend_from_slice(&0u32.to_le_bytes());
    wrong_from.extend_from_slice(&50u64.to_le_bytes()); // claims node 50 on node 10's link
    wrong_from.extend_from_slice(&90u64.to_le_bytes());
    assert_closed_after(addr, &hello(10, 90), &wrong_from);

    // The real link keeps working in both directions.
    for i in 0..10 {
        a.send(env(50, 90, 2, i)).unwrap();
        b.send(env(90, 50, 3, i)).unwrap();
    }
    for rx in [a_rx, b_rx] {
        let got: Vec<u64> = (0..10).map(|_| num(&recv_data(rx))).collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }
    assert_eq!(
        log::warn_count(90),
        6,
        "exactly one warning per bad connection"
    );
    assert_eq!(log::warn_count(50), 0);
}

#[test]
fn a_frame_longer_than_a_hello_before_the_hello_closes_the_connection() {
    // The hello timeout is far beyond the read timeout of `assert_closed_after`: only
    // the length prefix itself can get these connections closed in time.
    let cfg = TcpConfig {
        connect_timeout: Duration::from_secs(600),
        ..TcpConfig::default()
    };
    log::install();
    let (t, _rx) = TcpTransport::start(95, any(), HashMap::new(), cfg).unwrap();
    let addr = t.local_addr();
    assert_closed_after(addr, &[], &(HELLO_LEN as u32 + 1).to_be_bytes()); // one byte longer than a hello
    assert_closed_after(addr, &[], &(1u32 << 20).to_be_bytes());
    assert_eq!(log::warn_count(95), 2, "one warning per bad connection");
}

#[test]
fn unknown_peer_self_send_and_full_queue() {
    let cfg = TcpConfig {
        queue_capacity: 4,
        ..TcpConfig::default()
    };
    log::install();
    let (t, rx) = TcpTransport::start(60, any(), HashMap::new(), cfg).unwrap();
    assert_eq!(t.send(env(60, 42, 0, 0)), Err(SendError::UnknownPeer(42)));
    t.send(env(0, 60, 1, 7)).unwrap();
    let e = rx.recv_timeout(WAIT).unwrap();
    assert_eq!((e.from, e.to, e.group, num(&e)), (60, 60, 1, 7));

    // Peer 55 should dial us but never does: its queue fills up.
    t.set_peer_addr(55, "127.0.0.1:9".parse().unwrap());
    for i in 0..4 {
        t.send(env(60, 55, 0, i)).unwrap();
    }
    assert_eq!(t.send(env(60, 55, 0, 4)), Err(SendError::Full));
    let errs = t.send_batch(vec![
        env(60, 55, 0, 5),
        env(60, 42, 0, 6),
        env(60, 60, 0, 7),
    ]);
    assert_eq!(errs, vec![SendError::Full, SendError::UnknownPeer(42)]);
    assert_eq!(num(&recv_data(&rx)), 7);
}

#[test]
fn shutdown_is_clean_and_idempotent() {
    let nodes = cluster(&[71, 72, 73], TcpConfig::default());
    let mut nodes = nodes.into_iter();
    let (a, a_rx) = nodes.next().unwrap();
    let (b, b_rx) = nodes.next().unwrap();
    let (c, c_rx) = nodes.next().unwrap();
    wait_link(&a, &b_rx, 72);
    wait_link(&c, &a_rx, 71);

    let start = Instant::now();
    a.shutdown();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    a.shutdown();
    assert_eq!(a.send(env(71, 72, 0, 0)), Err(SendError::Closed));
    assert_eq!(
        a.send_batch(vec![env(71, 72, 0, 0)]),
        vec![SendError::Closed]
    );
    assert_eq!(
        a_rx.recv_timeout(Duration::from_millis(100)),
        Err(RecvTimeoutError::Disconnected)
    );

    // The others keep talking; node 1 is just unreachable.
    b.send(env(72, 71, 0, 0)).unwrap();
    b.send(env(72, 73, 0, 1)).unwrap();
    assert_eq!(num(&recv_data(&c_rx)), 1);

    // Shutting down from inside another tokio runtime works too (Drop may run there).
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async move {
        b.shutdown();
        drop(c);
    });
    assert_eq!(
        b_rx.recv_timeout(Duration::from_millis(100)),
        Err(RecvTimeoutError::Disconnected)
    );
}

#[test]
fn slow_consumer_backpressures_the_sender_and_loses_nothing() {
    const CAP: usize = 16;
    let cfg = TcpConfig {
        inbox_capacity: CAP,
        queue_capacity: 8,
        ..TcpConfig::default()
    };
    let nodes = cluster(&[81, 82], cfg);
    let (a, _) = &nodes[0];
    let (b, b_rx) = &nodes[1];
    wait_link(a, b_rx, 82);
    while b_rx.try_recv().is_ok() {}
    // 64 KiB payloads: the socket buffers (tens of MiB at most on loopback) fill after a
    // few hundred; the limit is far beyond that.
    let big = |n: u64| {
        let mut p = vec![0u8; 64 << 10];
        p[..8].copy_from_slice(&n.to_le_bytes());
        Envelope {
            group: 1,
            from: 81,
            to: 82,
            payload: Bytes::from(p),
        }
    };
    const LIMIT: u64 = 20_000;
    let mut accepted = 0u64;
    loop {
        assert!(b_rx.len() <= CAP, "inbox grew to {} > {CAP}", b_rx.len());
        match a.send(big(accepted)) {
            Ok(()) => accepted += 1,
            // Backpressure has reached the sender. It is the real thing once the reader
            // waits for room in the full inbox (nobody reads it, so it keeps waiting);
            // before that the writer may just lag behind.
            Err(SendError::Full) if b.stats().inbox_full_waits > 0 => break,
            Err(SendError::Full) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("send failed: {e}"),
        }
        assert!(accepted < LIMIT, "the sender never saw backpressure");
    }
    assert_eq!(b_rx.len(), CAP, "the inbox is full and no fuller");
    // The consumer resumes: every accepted envelope arrives, in order.
    for n in 0..accepted {
        let e = recv_data(b_rx);
        assert_eq!(num(&e), n);
        assert_eq!(e.payload.len(), 64 << 10);
    }
    // And the link still carries traffic afterwards.
    a.send(env(81, 82, 0, 7)).unwrap();
    assert_eq!(num(&recv_data(b_rx)), 7);
    assert_eq!(b.stats().inbound_dropped, 0);
    assert_eq!(log::warn_count(81) + log::warn_count(82), 0);
}

#[test]
fn self_send_to_a_full_inbox_reports_full() {
    let cfg = TcpConfig {
        inbox_capacity: 2,
        ..TcpConfig::default()
    };
    log::install();
    let (t, rx) = TcpTransport::start(85, any(), HashMap::new(), cfg).unwrap();
    t.send(env(85, 85, 0, 0)).unwrap();
    t.send(env(85, 85, 0, 1)).unwrap();
    assert_eq!(t.send(env(85, 85, 0, 2)), Err(SendError::Full));
    assert_eq!(t.send_batch(vec![env(85, 85, 0, 3)]), vec![SendError::Full]);
    assert_eq!(num(&rx.recv().unwrap()), 0);
    t.send(env(85, 85, 0, 4)).unwrap();
    let rest: Vec<u64> = rx.try_iter().map(|e| num(&e)).collect();
    assert_eq!(rest, vec![1, 4]);
}

#[test]
fn shutdown_releases_a_reader_waiting_for_inbox_room() {
    let cfg = TcpConfig {
        inbox_capacity: 1,
        ..TcpConfig::default()
    };
    let nodes = cluster(&[86, 87], cfg);
    let mut nodes = nodes.into_iter();
    let (a, _a_rx) = nodes.next().unwrap();
    let (b, b_rx) = nodes.next().unwrap();
    wait_link(&a, &b_rx, 87);
    // The inbox holds the probe (or a later envelope); the reader waits with the next one.
    for i in 0..4 {
        a.send(env(86, 87, 0, i)).unwrap();
    }
    let deadline = Instant::now() + WAIT;
    while b.stats().inbox_full_waits == 0 {
        assert!(Instant::now() < deadline, "reader never waited for room");
        std::thread::sleep(Duration::from_millis(1));
    }
    b.shutdown(); // returns: the waiting reader is released, not left blocked
    assert!(b.stats().inbound_dropped >= 1, "{:?}", b.stats());
    drop(b_rx);
}

#[test]
fn a_receiver_takes_envelopes_on_the_reading_task_before_the_inbox() {
    let nodes = cluster(&[1, 2], TcpConfig::default());
    let (a, _ra) = &nodes[0];
    let (b, rb) = &nodes[1];
    wait_link(a, rb, 2);
    // Even numbers are taken by the receiver (and forwarded to `taken`), odd ones pass on
    // to the inbox; a send to the node itself goes through the receiver too.
    let (tx, taken) = crossbeam_channel::unbounded();
    b.set_receive(Some(std::sync::Arc::new(move |e: Envelope| {
        if num(&e) % 2 == 0 {
            let _ = tx.send(e);
            None
        } else {
            Some(e)
        }
    })));
    for n in 0..10 {
        a.send(env(1, 2, 5, n)).unwrap();
    }
    b.send(env(2, 2, 5, 100)).unwrap();
    let mut got: Vec<u64> = (0..6)
        .map(|_| num(&taken.recv_timeout(WAIT).expect("taken")))
        .collect();
    // The peer's in their order; the local one at some point among them.
    let local = got
        .iter()
        .position(|&n| n == 100)
        .expect("the local envelope");
    got.remove(local);
    assert_eq!(got, vec![0, 2, 4, 6, 8]);
    let passed: Vec<u64> = (0..5).map(|_| num(&recv_data(rb))).collect();
    assert_eq!(passed, vec![1, 3, 5, 7, 9]);
    // Without a receiver the inbox gets everything again.
    b.set_receive(None);
    a.send(env(1, 2, 5, 42)).unwrap();
    assert_eq!(num(&recv_data(rb)), 42);
    assert!(taken.try_recv().is_err());
}
