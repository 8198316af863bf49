//! The client token: a deployment with `security.client_token` serves a client with the
//! right token and refuses one with a wrong token or none, with a clear error.
//! (Before the fix, a wrong token or none surfaced as `NoLeader` after `leader_wait`:
//! `Client::refresh` discarded every error of its `Topology` calls.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Cluster, show};
use mako_client::{Client, ClientConfig, ClientError};
use mako_deploy::LocalTopology;

#[test]
fn client_token_is_required() {
    let mut topo = LocalTopology::new(1, 1);
    topo.durability = "memory".into();
    topo.extra = "security:\n  client_token: \"right-token-1234567890\"\n".into();
    let c = Cluster::start(&topo);
    let mut ok = c.client();
    ok.put(b"k", b"v").expect("the right token works");
    assert_eq!(ok.get(b"k").expect("get"), Some(b"v".to_vec()));

    let wrong = c.dir.path().join("wrong.yml");
    std::fs::write(
        &wrong,
        "security:\n  client_token: \"wrong-token-0987654321\"\n",
    )
    .expect("write");
    let none = c.dir.path().join("none.yml");
    std::fs::write(&none, "security:\n  client_token: ~\n").expect("write");
    let client_with = |extra: &std::path::Path| {
        let cfg = mako_config::Config::load(&[c.files[0].as_path(), extra]).expect("config");
        let mut cc = ClientConfig::from_config(&Arc::new(cfg)).expect("client config");
        cc.leader_wait = Duration::from_secs(2);
        Client::new(cc)
    };
    let err = client_with(&wrong)
        .get(b"k")
        .expect_err("a wrong token is refused");
    assert!(matches!(&err, ClientError::Auth(_)), "wrong token: {err:?}");
    let err = client_with(&none)
        .get(b"k")
        .expect_err("no token is refused");
    match &err {
        ClientError::Auth(m) => assert!(m.contains("requires a client token"), "{m}"),
        other => panic!("no token: {other:?}"),
    }
    // The CLI reports it clearly.
    let files = vec![c.files[0].clone(), wrong];
    let o = common::mako_with(&files, &["client", "get", "k"], "");
    assert!(!o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("authentication failed"), "{}", show(&o));
    // The server still serves the right client.
    assert_eq!(ok.get(b"k").expect("still serving"), Some(b"v".to_vec()));
}
