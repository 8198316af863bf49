//! Bad input against real `mako server` processes: malformed client frames (truncated,
//! garbage, an oversized length prefix, an undecodable request), a peer with the wrong
//! cluster secret, and bad server command lines (unknown config key, missing file, port
//! in use, unknown site). Each gets one clear error or log line, and the server keeps
//! serving everyone else.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{Cluster, poll, show};
use mako_deploy::LocalTopology;
use mako_proto::{
    Body, ErrorCode, Hello, MAGIC, MAX_FRAME, MAX_HELLO, Reply, Request, Response, VERSION,
    Welcome, decode, read_frame, write_frame,
};

fn connect(addr: SocketAddr) -> (TcpStream, String) {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let local = s.local_addr().expect("local addr").to_string();
    (s, local)
}

fn handshake(s: &mut TcpStream) -> Welcome {
    write_frame(
        s,
        &Hello {
            magic: MAGIC,
            version: VERSION,
            nonce: [7; 32],
        },
    )
    .expect("hello");
    let w: Welcome = decode(&read_frame(s, MAX_HELLO).expect("welcome")).expect("decode");
    assert!(w.refused.is_none() && !w.auth_required, "{w:?}");
    w
}

/// Whether the server closed the connection (reads end without data).
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

/// Waits for the site's log lines about connection `peer` to contain `want`; returns them.
fn log_lines(c: &Cluster, site: &str, peer: &str, want: &str) -> Vec<String> {
    let tag = format!("peer={peer}");
    let found = poll(Duration::from_secs(10), || {
        let lines: Vec<String> = c
            .log(site)
            .lines()
            .filter(|l| l.contains(&tag))
            .map(String::from)
            .collect();
        lines.iter().any(|l| l.contains(want)).then_some(lines)
    });
    found.unwrap_or_else(|| panic!("no log line about {peer} saying {want:?}"))
}

#[test]
fn malformed_client_input_closes_only_that_connection() {
    let mut topo = LocalTopology::new(1, 1);
    topo.durability = "memory".into();
    let c = Cluster::boot(
        Cluster::prepare(&topo, Some("info,mako_node=debug")),
        |_| Vec::new(),
    );
    let cfg = c.cfg();
    let addr = cfg.client_addr(&cfg.sites[0]);
    let mut good = c.client();
    let mut n = 0;
    let mut still_serves = |what: &str| {
        n += 1;
        let k = format!("after-{n}");
        good.put(k.as_bytes(), what.as_bytes())
            .unwrap_or_else(|e| panic!("after {what}: {e}"));
        assert_eq!(
            good.get(k.as_bytes()).expect("get").as_deref(),
            Some(what.as_bytes())
        );
    };
    still_serves("start");

    // An oversized length prefix (after the handshake): the connection closes, one warning.
    let (mut s, local) = connect(addr);
    handshake(&mut s);
    s.write_all(&[0xFF; 4]).expect("write");
    assert!(closed_by_server(&mut s), "oversized frame: still open");
    let lines = log_lines(&c, "s0r0", &local, "exceeds the limit");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("malformed frame"),
        "{lines:?}"
    );
    still_serves("oversized");

    // Garbage instead of a hello.
    let (mut s, local) = connect(addr);
    s.write_all(b"\x00\x00\x00\x08garbage!").expect("write");
    assert!(closed_by_server(&mut s), "garbage: still open");
    let lines = log_lines(&c, "s0r0", &local, "malformed");
    assert_eq!(lines.len(), 1, "{lines:?}");
    still_serves("garbage");

    // An HTTP request (its first bytes read as a huge length) before the handshake.
    let (mut s, local) = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    assert!(closed_by_server(&mut s), "http: still open");
    let lines = log_lines(&c, "s0r0", &local, "exceeds the limit");
    assert_eq!(lines.len(), 1, "{lines:?}");
    still_serves("http");

    // A truncated frame: the client hangs up inside it.
    let (mut s, local) = connect(addr);
    handshake(&mut s);
    s.write_all(&[0, 0, 0, 100, 1, 2, 3]).expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    assert!(closed_by_server(&mut s), "truncated: still open");
    let lines = log_lines(&c, "s0r0", &local, "inside a frame");
    assert_eq!(lines.len(), 1, "{lines:?}");
    still_serves("truncated");

    // A well-framed request that does not decode: an error reply, the connection stays.
    let (mut s, _) = connect(addr);
    handshake(&mut s);
    s.write_all(&[0, 0, 0, 3, 0xFF, 0xFF, 0xFF]).expect("write");
    let r: Response = decode(&read_frame(&mut s, MAX_FRAME).expect("a reply")).expect("decode");
    match &r.reply {
        Reply::Error { code, message } => {
            assert_eq!(*code, ErrorCode::Malformed);
            assert!(message.contains("malformed request"), "{message}");
        }
        other => panic!("undecodable request answered {other:?}"),
    }
    write_frame(
        &mut s,
        &Request {
            id: 7,
            body: Body::Status,
        },
    )
    .expect("write");
    let r: Response = decode(&read_frame(&mut s, MAX_FRAME).expect("a reply")).expect("decode");
    assert_eq!(r.id, 7);
    assert!(matches!(r.reply, Reply::Status(_)), "{r:?}");
    still_serves("undecodable");
}

#[test]
fn peer_with_a_wrong_secret_is_refused_and_logged() {
    let mut topo = LocalTopology::new(1, 3);
    topo.durability = "memory".into();
    topo.extra = "security:\n  cluster_secret: \"the-right-cluster-secret-0123456789\"\n".into();
    let c = Cluster::prepare(&topo, None);
    let wrong = c.dir.path().join("wrong.yml");
    std::fs::write(
        &wrong,
        "security:\n  cluster_secret: \"a-wrong-cluster-secret-9876543210\"\n",
    )
    .expect("write");
    let w = wrong.to_string_lossy().into_owned();
    let c = Cluster::boot(c, |site| {
        if site == "s0r2" {
            vec!["-f".into(), w.clone()]
        } else {
            Vec::new()
        }
    });
    let mut c = c;
    let leader = c.dep.leader(0).expect("a leader");
    assert_ne!(leader, "s0r2");
    let mut cl = c.client_of(&["s0r0", "s0r1"], Duration::from_secs(30), 10);
    for i in 0..10 {
        cl.put(format!("k{i}").as_bytes(), b"v")
            .expect("the two right sites serve");
    }
    let refused = poll(Duration::from_secs(20), || {
        ["s0r0", "s0r1", "s0r2"]
            .iter()
            .find(|s| c.log(s).contains("authentication failed"))
            .copied()
    });
    assert!(refused.is_some(), "no site logged the refused peer");
    assert!(
        c.log("s0r0").contains("wrong secret") || c.log("s0r1").contains("wrong secret"),
        "the right sites say why"
    );
    let mut st = c.client();
    let (rows, _, _) = st.digest("s0r2", "kv").expect("s0r2 answers");
    assert_eq!(rows, 0, "s0r2 (wrong secret) received data");
    let (lrows, _, _) = st.digest(&leader, "kv").expect("leader digest");
    assert_eq!(lrows, 10);
}

#[test]
fn bad_server_command_lines_fail_with_one_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut topo = LocalTopology::new(1, 1);
    topo.durability = "memory".into();
    let file = topo.write(dir.path()).expect("config");
    let files = |extra: Option<&std::path::Path>| {
        let mut v = vec![file.clone()];
        v.extend(extra.map(|p| p.to_path_buf()));
        v
    };
    let check = |o: &std::process::Output, wants: &[&str]| {
        assert!(!o.status.success(), "{}", show(o));
        let err = String::from_utf8_lossy(&o.stderr);
        for w in wants {
            assert!(err.contains(w), "missing {w:?}: {}", show(o));
        }
        assert_eq!(err.matches("Error:").count(), 1, "{}", show(o));
        assert!(!err.contains("panicked"), "{}", show(o));
    };

    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "raft:\n  heartbeat_ms: 50\n  bogus_key: 1\n").expect("write");
    let o = common::mako_with(&files(Some(&bad)), &["server", "--site", "s0r0"], "");
    check(&o, &["bad.yml", "raft.bogus_key", "unknown key"]);

    let missing = dir.path().join("missing.yml");
    let o = common::mako_with(&files(Some(&missing)), &["server", "--site", "s0r0"], "");
    check(&o, &["missing.yml", "cannot read"]);

    let o = common::mako_with(&files(None), &["server", "--site", "nosuch"], "");
    check(&o, &["\"nosuch\"", "s0r0"]);

    let cfg = mako_config::Config::load(&[&file]).expect("config");
    let client = cfg.client_addr(&cfg.sites[0]);
    let _taken = TcpListener::bind(client).expect("take the client port");
    let o = common::mako_with(&files(None), &["server", "--site", "s0r0"], "");
    check(&o, &[&client.to_string(), "in use"]);
}
