//! The client against servers that misbehave: silent, impostors, garbled replies. Each
//! test runs the client on a thread and bounds it generously, so a hang fails the test.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use mako_client::{Client, ClientConfig, ClientError, SiteAddr};
use mako_proto::{
    Body, Hello, MAX_FRAME, MAX_HELLO, Reply, Request, Response, Topology, VERSION, Welcome,
    decode, read_frame, write_frame,
};
use mako_transport::auth::{self, Secret};

/// Generous bound on a client call that must end (a hang is the failure).
const BOUND: Duration = Duration::from_secs(60);

/// A one-site "deployment" served by `serve` on each accepted connection, in order.
fn fake_server(
    serve: impl Fn(usize, TcpStream) + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for (i, s) in l.incoming().enumerate() {
            let Ok(s) = s else { return };
            if i > 50 {
                return;
            }
            serve(i, s);
        }
    });
    (addr, h)
}

fn config(addr: SocketAddr) -> ClientConfig {
    let mut c = ClientConfig::new(vec![SiteAddr {
        name: "s0r0".into(),
        node: 1,
        shard: 0,
        addr,
    }]);
    c.connect_timeout = Duration::from_millis(300);
    c.reply_timeout = Duration::from_millis(500);
    c.leader_wait = Duration::from_secs(2);
    c.attempts = 1;
    c
}

/// Runs `f` on a thread; its result, or a failure if it does not end within [`BOUND`].
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(BOUND)
        .expect("the client call did not return (it ignores its timeouts)")
}

/// Answers the hello as a plain (token-less) server of node 1, shard 0.
fn welcome(s: &mut TcpStream) -> Hello {
    let hello: Hello = decode(&read_frame(s, MAX_HELLO).unwrap()).unwrap();
    write_frame(
        s,
        &Welcome {
            version: VERSION,
            refused: None,
            site: "s0r0".into(),
            node: 1,
            shard: 0,
            nonce: auth::nonce(),
            auth_required: false,
            proof: None,
        },
    )
    .unwrap();
    hello
}

/// Reads requests, answering `Topology` (node 1 leads shard 0) and handing any other to
/// `other` (which returns the response to send, or `None` to stay silent).
fn serve_requests(mut s: TcpStream, other: impl Fn(&Request) -> Option<Response>) {
    welcome(&mut s);
    while let Ok(f) = read_frame(&mut s, MAX_FRAME) {
        let req: Request = decode(&f).unwrap();
        let resp = match req.body {
            Body::Topology => Some(Response {
                id: req.id,
                reply: Reply::Topology(Topology {
                    shards: 1,
                    leaders: vec![Some(1)],
                }),
            }),
            _ => other(&req),
        };
        match resp {
            Some(r) => write_frame(&mut s, &r).unwrap(),
            // Hold the connection open without answering.
            None => std::thread::sleep(Duration::from_secs(120)),
        }
    }
}

#[test]
fn a_server_that_never_answers_the_hello_does_not_hang_the_client() {
    let (addr, _h) = fake_server(|_, s| {
        // Accept, never answer; keep the connection open.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(120));
            drop(s);
        });
    });
    let r = bounded(move || Client::new(config(addr)).get(b"k"));
    assert!(matches!(r, Err(ClientError::NoLeader { .. })), "{r:?}");
}

#[test]
fn a_commit_whose_reply_never_comes_is_unknown_not_a_hang() {
    let (addr, _h) = fake_server(|_, s| {
        std::thread::spawn(move || serve_requests(s, |_| None));
    });
    let r = bounded(move || Client::new(config(addr)).put(b"k", b"v"));
    assert!(matches!(r, Err(ClientError::Unknown(_))), "{r:?}");
}

#[test]
fn a_client_with_a_token_refuses_a_server_that_asks_for_none() {
    // An impostor that does not know the token cannot prove it, so it claims none is
    // needed: the client must not send it a single request.
    let (seen_tx, seen_rx) = mpsc::channel::<Body>();
    let (addr, _h) = fake_server(move |_, mut s| {
        let seen = seen_tx.clone();
        std::thread::spawn(move || {
            welcome(&mut s);
            while let Ok(f) = read_frame(&mut s, MAX_FRAME) {
                if let Ok(req) = decode::<Request>(&f) {
                    let _ = seen.send(req.body);
                }
            }
        });
    });
    let mut cfg = config(addr);
    cfg.token = Some(Arc::new(Secret::new(vec![7u8; 32]).unwrap()));
    let r = bounded(move || Client::new(cfg).put(b"secret-key", b"secret-value"));
    assert!(matches!(r, Err(ClientError::Auth(_))), "{r:?}");
    assert!(
        seen_rx.try_recv().is_err(),
        "the client sent a request to a server that never proved the token"
    );
}

#[test]
fn a_garbled_reply_to_a_commit_is_unknown() {
    // The reply to the commit-carrying request does not belong to it: whether the
    // transaction committed is unknown, and the client must say so.
    let (addr, _h) = fake_server(|_, s| {
        std::thread::spawn(move || {
            serve_requests(s, |req| {
                Some(Response {
                    id: req.id + 100,
                    reply: Reply::Ran(vec![]),
                })
            })
        });
    });
    let r = bounded(move || Client::new(config(addr)).put(b"k", b"v"));
    assert!(matches!(r, Err(ClientError::Unknown(_))), "{r:?}");
    let (addr, _h) = fake_server(|_, s| {
        std::thread::spawn(move || {
            serve_requests(s, |req| match req.body {
                Body::Begin => Some(Response {
                    id: req.id,
                    reply: Reply::Began { txn: 1 },
                }),
                Body::Op { .. } => Some(Response {
                    id: req.id,
                    reply: Reply::Result(mako_proto::OpResult::Done),
                }),
                _ => Some(Response {
                    id: req.id + 100,
                    reply: Reply::Committed,
                }),
            })
        });
    });
    let r = bounded(move || {
        let mut c = Client::new(config(addr));
        let mut t = c.begin();
        t.put(b"k", b"v").unwrap();
        t.commit()
    });
    assert!(matches!(r, Err(ClientError::Unknown(_))), "{r:?}");
}
