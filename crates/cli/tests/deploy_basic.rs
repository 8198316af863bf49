//! Real `mako server` processes on 127.0.0.1: one replica (client library and CLI), three
//! replicas (followers equal their leader after a load; `mako status --json`).

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Duration;

use common::{Cluster, show};
use mako_client::{Client, Operation, OperationResult};
use mako_deploy::LocalTopology;

const KV: &str = "kv";

/// Every row of the default table.
fn all_rows(c: &mut Client) -> BTreeMap<Vec<u8>, Vec<u8>> {
    c.scan(Bound::Unbounded, Bound::Unbounded, u32::MAX)
        .expect("scan")
        .into_iter()
        .collect()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn one_replica_client_library_and_cli() {
    let c = Cluster::start(&LocalTopology::new(1, 1));
    // The model: every acknowledged write (None: deleted).
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut cl = c.client();

    // Library: put, get, delete, scan, a one-shot transaction, an interactive one.
    cl.put(b"a", b"1").expect("put a");
    model.insert(b"a".to_vec(), b"1".to_vec());
    assert_eq!(cl.get(b"a").expect("get a"), Some(b"1".to_vec()));
    assert_eq!(cl.get(b"nope").expect("get nope"), None);
    cl.put(b"b", b"2").expect("put b");
    cl.delete(b"b").expect("del b");
    assert_eq!(cl.get(b"b").expect("get b"), None);
    for k in ["c1", "c2", "c3"] {
        cl.put(k.as_bytes(), k.as_bytes()).expect("put c");
        model.insert(k.as_bytes().to_vec(), k.as_bytes().to_vec());
    }
    let rows = cl
        .scan(Bound::Included(b"c1"), Bound::Excluded(b"c3"), 100)
        .expect("scan");
    assert_eq!(
        rows,
        vec![
            (b"c1".to_vec(), b"c1".to_vec()),
            (b"c2".to_vec(), b"c2".to_vec())
        ]
    );
    let res = cl
        .run(vec![
            Operation::Put {
                table: KV.into(),
                key: b"t1".to_vec(),
                value: b"x".to_vec(),
            },
            Operation::Get {
                table: KV.into(),
                key: b"t1".to_vec(),
            },
            Operation::Add {
                table: KV.into(),
                key: b"n".to_vec(),
                delta: 5,
            },
            Operation::Add {
                table: KV.into(),
                key: b"n".to_vec(),
                delta: -2,
            },
        ])
        .expect("run");
    assert_eq!(
        res,
        vec![
            OperationResult::Done,
            OperationResult::Value(Some(b"x".to_vec())),
            OperationResult::Int(5),
            OperationResult::Int(3)
        ]
    );
    model.insert(b"t1".to_vec(), b"x".to_vec());
    model.insert(b"n".to_vec(), b"3".to_vec());
    let got = cl
        .transaction(|t| {
            let n = t.add(b"n", 10)?;
            let a = t.get(b"a")?.unwrap_or_default();
            t.put(b"a2", &a)?;
            Ok(n)
        })
        .expect("interactive transaction");
    assert_eq!(got, 13);
    model.insert(b"n".to_vec(), b"13".to_vec());
    model.insert(b"a2".to_vec(), b"1".to_vec());

    // CLI, as a separate process.
    let o = c.mako(&["client", "put", "cli1", "v1"], "");
    assert!(
        o.status.success() && stdout(&o).trim() == "OK",
        "{}",
        show(&o)
    );
    model.insert(b"cli1".to_vec(), b"v1".to_vec());
    let o = c.mako(&["client", "get", "cli1"], "");
    assert_eq!(stdout(&o).trim(), "v1", "{}", show(&o));
    let o = c.mako(&["client", "get", "cli-missing"], "");
    assert_eq!(stdout(&o).trim(), "(nil)", "{}", show(&o));
    let o = c.mako(&["client", "put", "cli2", "v2"], "");
    assert!(o.status.success(), "{}", show(&o));
    let o = c.mako(&["client", "del", "cli2"], "");
    assert!(
        o.status.success() && stdout(&o).trim() == "OK",
        "{}",
        show(&o)
    );
    let o = c.mako(&["client", "scan", "c", "d"], "");
    assert_eq!(
        stdout(&o),
        "c1\tc1\nc2\tc2\nc3\tc3\ncli1\tv1\n(4 rows)\n",
        "{}",
        show(&o)
    );
    let o = c.mako(
        &["client", "txn"],
        "# a script\nput tx1 hello\nget tx1\nadd n 7\nget cli2\nscan a a3\n",
    );
    assert!(o.status.success(), "{}", show(&o));
    let out = stdout(&o);
    for want in [
        "tx1 OK\n",
        "tx1 = hello\n",
        "n = 20\n",
        "cli2 = (nil)\n",
        "a\t1\na2\t1\n(2 rows)\n",
        "COMMITTED\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in {}", show(&o));
    }
    model.insert(b"tx1".to_vec(), b"hello".to_vec());
    model.insert(b"n".to_vec(), b"20".to_vec());
    // A bad script runs nothing.
    let o = c.mako(&["client", "txn"], "put z 1\nfrob z\n");
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("line 2"),
        "{}",
        show(&o)
    );
    assert_eq!(cl.get(b"z").expect("get z"), None);

    assert_eq!(all_rows(&mut cl), model);
}

#[test]
fn three_replicas_equal_their_leader_after_a_load() {
    let mut c = Cluster::start(&LocalTopology::new(1, 3));
    let threads = 4;
    let txns = 60;
    let per = 10;
    let loaders: Vec<_> = (0..threads)
        .map(|t| {
            let mut cl = c.client();
            std::thread::spawn(move || {
                for i in 0..txns {
                    let ops = (0..per)
                        .map(|j| Operation::Put {
                            table: KV.into(),
                            key: format!("load/{t}/{i:03}/{j}").into_bytes(),
                            value: format!("{t}-{i}-{j}").into_bytes(),
                        })
                        .collect();
                    cl.run(ops).expect("load transaction released");
                }
            })
        })
        .collect();
    for l in loaders {
        l.join().expect("loader");
    }
    let (rows, _) = c.converge(0, KV, Duration::from_secs(60));
    assert_eq!(rows, (threads * txns * per) as u64);
    let leader = c.dep.leader(0).expect("a leader");
    let mut cl = c.client();
    let (lrows, lhash, _) = cl.digest(&leader, KV).expect("leader digest");
    for s in ["s0r0", "s0r1", "s0r2"] {
        let (r, h, _) = cl.digest(s, KV).expect("digest");
        assert_eq!(
            (r, h),
            (lrows, lhash),
            "{s} differs from the leader {leader}"
        );
    }

    // `mako status --json`: every site up, exactly one leader, indexes consistent.
    let o = c.mako(&["status", "--json"], "");
    assert!(o.status.success(), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status JSON");
    let sites = v["sites"].as_array().expect("sites");
    assert_eq!(sites.len(), 3);
    assert!(sites.iter().all(|s| s["up"] == true), "{v:#}");
    let leaders: Vec<&serde_json::Value> = sites.iter().filter(|s| s["role"] == "leader").collect();
    assert_eq!(leaders.len(), 1, "{v:#}");
    assert_eq!(leaders[0]["site"], leader.as_str(), "{v:#}");
    assert_eq!(v["durability"], "fsync");
    for s in sites {
        let (ci, ai) = (
            s["commit_index"].as_u64().expect("commit_index"),
            s["applied_index"].as_u64().expect("applied_index"),
        );
        assert!(ai <= ci || s["role"] != "leader", "{s}");
        assert!(ci > 0, "{s}");
    }
    // The table form names every site.
    let o = c.mako(&["status"], "");
    let out = stdout(&o);
    assert!(
        ["s0r0", "s0r1", "s0r2", "durability: fsync"]
            .iter()
            .all(|w| out.contains(w)),
        "{}",
        show(&o)
    );
}
