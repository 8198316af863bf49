//! Authenticated and TLS peer links of the TCP transport, on 127.0.0.1 with OS-assigned ports.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use mako_transport::auth::{self, Nonce, Secret};
use mako_transport::tcp::{TcpConfig, TcpStats, TcpTransport};
use mako_transport::tls::{self, TlsSettings};
use mako_transport::{Envelope, Transport};

#[path = "common/closed.rs"]
mod closed;
#[path = "common/log.rs"]
#[allow(dead_code)]
mod log;

const WAIT: Duration = Duration::from_secs(10);
const SERVER_NAME: &str = "mako-cluster";

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn secret(fill: u8) -> Option<Arc<Secret>> {
    Some(Arc::new(Secret::new(vec![fill; 32]).unwrap()))
}

fn cfg(secret: Option<Arc<Secret>>, tls: Option<TlsSettings>) -> TcpConfig {
    TcpConfig {
        secret,
        tls,
        reconnect_min: Duration::from_millis(5),
        reconnect_max: Duration::from_millis(20),
        ..TcpConfig::default()
    }
}

fn env(from: u64, to: u64, n: u64) -> Envelope {
    Envelope {
        group: 1,
        from,
        to,
        payload: Bytes::from(n.to_le_bytes().to_vec()),
    }
}

fn num(e: &Envelope) -> u64 {
    u64::from_le_bytes(e.payload[..8].try_into().unwrap())
}

/// Starts one transport per (id, config) and tells every node every other node's address.
fn cluster(nodes: Vec<(u64, TcpConfig)>) -> Vec<(TcpTransport, Receiver<Envelope>)> {
    log::install();
    let nodes: Vec<_> = nodes
        .into_iter()
        .map(|(id, cfg)| TcpTransport::start(id, any(), HashMap::new(), cfg).unwrap())
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
        let _ = a.send(env(a.local_id(), to, u64::MAX));
        if b_rx.recv_timeout(Duration::from_millis(20)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "link {} -> {to} never came up",
            a.local_id()
        );
    }
}

/// Waits until `t`'s counters satisfy `cond`.
fn wait_stats(t: &TcpTransport, what: &str, cond: impl Fn(&TcpStats) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond(&t.stats()) {
        assert!(
            Instant::now() < deadline,
            "node {}: {what} never happened: {:?}",
            t.local_id(),
            t.stats()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `n` numbered envelopes both ways between two nodes and checks they all arrive in order.
fn exchange(a: &(TcpTransport, Receiver<Envelope>), b: &(TcpTransport, Receiver<Envelope>)) {
    let (ta, ra) = a;
    let (tb, rb) = b;
    wait_link(ta, rb, tb.local_id());
    wait_link(tb, ra, ta.local_id());
    for i in 0..20 {
        ta.send(env(ta.local_id(), tb.local_id(), i)).unwrap();
        tb.send(env(tb.local_id(), ta.local_id(), i)).unwrap();
    }
    for (rx, from) in [(rb, ta.local_id()), (ra, tb.local_id())] {
        let mut got = Vec::new();
        while got.len() < 20 {
            let e = rx.recv_timeout(WAIT).expect("envelope");
            assert_eq!(e.from, from);
            if num(&e) != u64::MAX {
                got.push(num(&e));
            }
        }
        assert_eq!(got, (0..20).collect::<Vec<_>>());
    }
}

fn auth_warns(local: u64) -> Vec<String> {
    log::warns(local)
        .into_iter()
        .filter(|w| w.contains("authentication failed"))
        .collect()
}

#[test]
fn same_secret_exchanges_envelopes() {
    let nodes = cluster(vec![
        (101, cfg(secret(1), None)),
        (102, cfg(secret(1), None)),
    ]);
    exchange(&nodes[0], &nodes[1]);
    for (t, _) in &nodes {
        assert_eq!(t.stats().auth_failures, 0);
    }
    assert!(log::warns(101).is_empty() && log::warns(102).is_empty());
}

#[test]
fn different_secrets_pass_nothing_and_a_good_peer_is_still_served() {
    // 111 and 113 share a secret; 112 has another one.
    let nodes = cluster(vec![
        (111, cfg(secret(1), None)),
        (112, cfg(secret(2), None)),
        (113, cfg(secret(1), None)),
    ]);
    let (a, a_rx) = &nodes[0];
    let (b, b_rx) = &nodes[1];
    let (c, c_rx) = &nodes[2];
    for i in 0..5 {
        a.send(env(111, 112, i)).unwrap();
        b.send(env(112, 111, i)).unwrap();
        b.send(env(112, 113, i)).unwrap();
    }
    // Several attempts on every bad pair, after the envelopes were queued: each side of
    // each attempt counts it (the dialer 111 or 112, the acceptor 112 or 113).
    wait_stats(a, "auth failures", |s| s.auth_failures >= 3);
    wait_stats(b, "auth failures", |s| s.auth_failures >= 6);
    wait_stats(c, "auth failures", |s| s.auth_failures >= 3);
    exchange(&nodes[0], &nodes[2]);
    assert!(a_rx.try_iter().all(|e| e.from != 112), "nothing from 112");
    assert!(c_rx.try_iter().all(|e| e.from != 112), "nothing from 112");
    assert_eq!(b_rx.try_iter().count(), 0, "nothing reaches 112");
    // The warning names the address: the dialer's names the node it dialled.
    let dialer_warns = auth_warns(111);
    assert!(!dialer_warns.is_empty());
    let b_addr = b.local_addr().to_string();
    assert!(
        dialer_warns.iter().any(|w| w.contains(&b_addr)),
        "{dialer_warns:?}"
    );
    assert!(
        auth_warns(112)
            .iter()
            .all(|w| w.contains("addr=127.0.0.1:"))
    );
    // One warning per failed connection, nothing else logged.
    assert_eq!(log::warns(111).len(), auth_warns(111).len());
    assert_eq!(log::warns(113).len(), auth_warns(113).len());
}

#[test]
fn a_node_without_a_secret_never_links_with_one_that_has_it() {
    // The lower id dials: 121 (secret) dials 122 (none); 131 (none) dials 132 (secret).
    for (low, high) in [
        ((121, secret(3)), (122, None)),
        ((131, None), (132, secret(3))),
    ] {
        let nodes = cluster(vec![(low.0, cfg(low.1, None)), (high.0, cfg(high.1, None))]);
        for (t, _) in &nodes {
            let other = low.0 + high.0 - t.local_id();
            t.send(env(t.local_id(), other, 0)).unwrap();
        }
        for (t, _) in &nodes {
            wait_stats(t, "auth failures", |s| s.auth_failures >= 2);
        }
        for (t, rx) in &nodes {
            let me = t.local_id();
            assert_eq!(rx.try_iter().count(), 0, "node {me} got an envelope");
            assert!(!auth_warns(me).is_empty());
            assert_eq!(log::warns(me).len(), auth_warns(me).len());
        }
    }
}

/// Bytes of a hello frame's body (version 2).
const HELLO_LEN: usize = 4 + 8 + 8 + 1 + 32 + 32;

/// A version-2 hello frame, length prefix included.
fn hello(from: u64, to: u64, auth: bool, nonce: &Nonce) -> Vec<u8> {
    let mut v = (HELLO_LEN as u32).to_be_bytes().to_vec();
    v.extend_from_slice(b"MKT2");
    v.extend_from_slice(&from.to_le_bytes());
    v.extend_from_slice(&to.to_le_bytes());
    v.push(u8::from(auth));
    v.extend_from_slice(nonce);
    v.extend_from_slice(&[0u8; 32]);
    v
}

/// The transcript of the peer hello (see the `tcp` module docs).
fn transcript(dialer: u64, acceptor: u64) -> Vec<u8> {
    let mut t = b"mako peer hello v2".to_vec();
    t.extend_from_slice(&dialer.to_le_bytes());
    t.extend_from_slice(&acceptor.to_le_bytes());
    t
}

fn proof_frame(proof: &[u8; 32]) -> Vec<u8> {
    let mut v = 36u32.to_be_bytes().to_vec();
    v.extend_from_slice(b"MKP2");
    v.extend_from_slice(proof);
    v
}

fn envelope_frame(from: u64, to: u64, n: u64) -> Vec<u8> {
    let mut v = 28u32.to_be_bytes().to_vec();
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&from.to_le_bytes());
    v.extend_from_slice(&to.to_le_bytes());
    v.extend_from_slice(&n.to_le_bytes());
    v
}

/// Reads until the transport closes the connection.
fn wait_closed(s: &mut TcpStream) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    closed::wait_closed(s);
}

/// A raw client that knows the secret completes the handshake as node 150 and sends one
/// envelope; the exact bytes it sent, replayed on a new connection, are refused, and so
/// are garbage, a missing or zero proof, and an old-version hello.
#[test]
fn a_replayed_handshake_and_garbage_are_refused() {
    log::install();
    let s = secret(5).unwrap();
    let (t, rx) =
        TcpTransport::start(190, any(), HashMap::new(), cfg(Some(s.clone()), None)).unwrap();
    // Node 150 would dial us; a raw client poses as it.
    t.set_peer_addr(150, "127.0.0.1:9".parse().unwrap());
    let addr = t.local_addr();

    // An honest handshake, recorded.
    let mut sent = Vec::new();
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let n_d = auth::nonce();
    sent.extend(hello(150, 190, true, &n_d));
    c.write_all(&sent).unwrap();
    let mut reply = [0u8; 4 + HELLO_LEN];
    c.read_exact(&mut reply).expect("hello reply");
    assert_eq!(&reply[4..8], b"MKT2");
    assert_eq!(reply[24], 1, "the acceptor authenticates");
    let n_a: Nonce = reply[25..57].try_into().unwrap();
    let p_a: [u8; 32] = reply[57..89].try_into().unwrap();
    let t_ids = transcript(150, 190);
    assert!(auth::verify(
        &s,
        b"mako/peer/acceptor",
        &n_d,
        &n_a,
        &t_ids,
        &p_a
    ));
    let p_d = auth::prove(&s, b"mako/peer/dialer", &n_a, &n_d, &t_ids);
    let rest = [proof_frame(&p_d), envelope_frame(150, 190, 1)].concat();
    c.write_all(&rest).unwrap();
    sent.extend(rest);
    assert_eq!(num(&rx.recv_timeout(WAIT).expect("envelope")), 1);
    drop(c);

    let refused = |bytes: &[u8], failures: u64| {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(bytes).unwrap();
        wait_closed(&mut c);
        assert_eq!(t.stats().auth_failures, failures);
    };
    // The same bytes again: the acceptor's nonce is new, so the old proof fails.
    refused(&sent, 1);
    // A proof made without the secret, a zero proof, no proof at all.
    let wrong = auth::prove(
        &Secret::new(vec![6u8; 32]).unwrap(),
        b"mako/peer/dialer",
        &n_a,
        &n_d,
        &t_ids,
    );
    refused(
        &[hello(150, 190, true, &auth::nonce()), proof_frame(&wrong)].concat(),
        2,
    );
    refused(
        &[hello(150, 190, true, &auth::nonce()), proof_frame(&[0; 32])].concat(),
        3,
    );
    refused(
        &[
            hello(150, 190, true, &auth::nonce()),
            b"\0\0\0\x03abc".to_vec(),
        ]
        .concat(),
        4,
    );
    // The acceptor's own proof reflected back as the dialer's.
    refused(
        &[hello(150, 190, true, &n_a), proof_frame(&p_a)].concat(),
        5,
    );
    // A hello without authentication.
    refused(&hello(150, 190, false, &[0; 32]), 6);
    // Garbage, an old-version hello, and a frame longer than a hello where the proof
    // belongs (the pre-hello cap holds until the proof is verified): malformed, not
    // authentication failures.
    refused(b"\0\0\0\x0bhello world", 6);
    let mut v1 = 20u32.to_be_bytes().to_vec();
    v1.extend_from_slice(b"MKT1");
    v1.extend_from_slice(&150u64.to_le_bytes());
    v1.extend_from_slice(&190u64.to_le_bytes());
    refused(&v1, 6);
    let big = (1u32 << 20).to_be_bytes().to_vec();
    refused(&[hello(150, 190, true, &auth::nonce()), big].concat(), 6);

    assert_eq!(
        rx.try_iter().count(),
        0,
        "no refused connection delivered anything"
    );
    let warns = log::warns(190);
    assert_eq!(
        warns.len(),
        9,
        "one warning per refused connection: {warns:?}"
    );
    assert_eq!(auth_warns(190).len(), 6);
    assert!(
        warns
            .iter()
            .any(|w| w.contains("protocol version '1', this node speaks version '2'")),
        "{warns:?}"
    );
    assert!(
        warns
            .iter()
            .any(|w| w.contains("frame of 1048576 bytes exceeds the limit of 85")),
        "{warns:?}"
    );
}

/// A CA and certificates it signs for [`SERVER_NAME`].
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// (certificate PEM, key PEM) of a node certificate issued by this CA.
    fn issue(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).unwrap();
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn settings(&self) -> TlsSettings {
        let (cert, key) = self.issue();
        tls::from_pem(
            cert.as_bytes(),
            key.as_bytes(),
            self.cert.pem().as_bytes(),
            SERVER_NAME,
        )
        .unwrap()
    }
}

#[test]
fn tls_nodes_exchange_envelopes() {
    let ca = Ca::new();
    let nodes = cluster(vec![
        (201, cfg(None, Some(ca.settings()))),
        (202, cfg(None, Some(ca.settings()))),
    ]);
    exchange(&nodes[0], &nodes[1]);
    for (t, _) in &nodes {
        assert_eq!(t.stats().tls_failures, 0);
    }
    assert!(log::warns(201).is_empty() && log::warns(202).is_empty());
}

#[test]
fn tls_refuses_a_certificate_from_another_ca_and_serves_the_others() {
    let (ca, other) = (Ca::new(), Ca::new());
    // 212 has a certificate (and trust) from another CA.
    let nodes = cluster(vec![
        (211, cfg(None, Some(ca.settings()))),
        (212, cfg(None, Some(other.settings()))),
        (213, cfg(None, Some(ca.settings()))),
    ]);
    let (a, a_rx) = &nodes[0];
    let (b, b_rx) = &nodes[1];
    let (c, c_rx) = &nodes[2];
    for i in 0..5 {
        a.send(env(211, 212, i)).unwrap();
        b.send(env(212, 211, i)).unwrap();
        b.send(env(212, 213, i)).unwrap();
    }
    wait_stats(a, "TLS failures", |s| s.tls_failures >= 2);
    wait_stats(b, "TLS failures", |s| s.tls_failures >= 4);
    wait_stats(c, "TLS failures", |s| s.tls_failures >= 2);
    exchange(&nodes[0], &nodes[2]);
    assert!(a_rx.try_iter().all(|e| e.from != 212));
    assert!(c_rx.try_iter().all(|e| e.from != 212));
    assert_eq!(b_rx.try_iter().count(), 0);
    let warns = log::warns(212);
    assert!(
        warns.iter().all(|w| w.contains("TLS handshake failed")),
        "{warns:?}"
    );
}

#[test]
fn tls_and_secret_together() {
    let ca = Ca::new();
    let nodes = cluster(vec![
        (221, cfg(secret(9), Some(ca.settings()))),
        (222, cfg(secret(9), Some(ca.settings()))),
        (223, cfg(secret(8), Some(ca.settings()))),
    ]);
    exchange(&nodes[0], &nodes[1]);
    // A valid certificate does not make up for a wrong secret.
    let (c, c_rx) = &nodes[2];
    c.send(env(223, 221, 0)).unwrap();
    wait_stats(c, "auth failures", |s| s.auth_failures >= 2);
    wait_stats(&nodes[0].0, "auth failures", |s| s.auth_failures >= 2);
    assert!(nodes[0].1.try_iter().all(|e| e.from != 223));
    assert_eq!(c_rx.try_iter().count(), 0);
    for (t, _) in &nodes {
        assert_eq!(t.stats().tls_failures, 0);
    }
}

/// The public rustls configurations serve a blocking (std::net) server and client, as
/// the client protocol will use them; the settings are loaded from PEM files.
#[test]
fn blocking_tls_with_settings_loaded_from_files() {
    let ca = Ca::new();
    let dir = std::env::temp_dir().join(format!("mako-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = ca.issue();
    let paths = ["node.pem", "node.key", "ca.pem"].map(|n| dir.join(n));
    std::fs::write(&paths[0], cert).unwrap();
    std::fs::write(&paths[1], key).unwrap();
    std::fs::write(&paths[2], ca.cert.pem()).unwrap();
    let settings = tls::load(&paths[0], &paths[1], &paths[2], SERVER_NAME).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let listener = std::net::TcpListener::bind(any()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server_cfg = settings.server.clone();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(server_cfg).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        s.flush().unwrap();
    });
    let conn = rustls::ClientConnection::new(settings.client.clone(), settings.server_name.clone())
        .unwrap();
    let mut s = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    s.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    server.join().unwrap();
}

#[test]
fn a_self_signed_certificate_can_be_its_own_ca() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let settings = || {
        tls::from_pem(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            cert.pem().as_bytes(),
            SERVER_NAME,
        )
        .unwrap()
    };
    let nodes = cluster(vec![
        (231, cfg(None, Some(settings()))),
        (232, cfg(None, Some(settings()))),
    ]);
    exchange(&nodes[0], &nodes[1]);
}

#[test]
fn bad_tls_inputs_are_typed_errors_naming_the_input() {
    let ca = Ca::new();
    let (cert, key) = ca.issue();
    let (_, other_key) = ca.issue();
    let ca_pem = ca.cert.pem();
    let err = |c: &str, k: &str, a: &str, name: &str| {
        tls::from_pem(c.as_bytes(), k.as_bytes(), a.as_bytes(), name)
            .unwrap_err()
            .to_string()
    };
    let e = err("", &key, &ca_pem, SERVER_NAME);
    assert!(e.contains("certificate PEM"), "{e}");
    let e = err(&cert, "junk", &ca_pem, SERVER_NAME);
    assert!(e.contains("key PEM"), "{e}");
    let e = err(&cert, &key, "", SERVER_NAME);
    assert!(e.contains("CA PEM"), "{e}");
    let e = err(&cert, &other_key, &ca_pem, SERVER_NAME);
    assert!(e.contains("key PEM"), "{e}");
    let e = err(&cert, &key, &ca_pem, "not a name!");
    assert!(e.contains("not a name!"), "{e}");
    let e = tls::load(
        std::path::Path::new("/nonexistent/cert.pem"),
        std::path::Path::new("/nonexistent/key.pem"),
        std::path::Path::new("/nonexistent/ca.pem"),
        SERVER_NAME,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("/nonexistent/cert.pem"), "{e}");
}
