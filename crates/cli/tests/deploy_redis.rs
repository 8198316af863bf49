//! The Redis front end on real deployments of `mako server` processes, driven by the `redis`
//! client library and by raw RESP bytes: every command on one shard × three replicas (also
//! through a follower, which forwards to the leader), pipelining, WATCH conflicts, RESP3,
//! malformed frames, AUTH with the deployment's token, and MULTI/EXEC atomicity across two
//! shards × three replicas.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Cluster;
use mako_deploy::LocalTopology;
use mako_redis::resp::{Value as Reply, decode_reply, encode_request};
use redis::Value;

fn topo(shards: u32, replicas: u32) -> LocalTopology {
    let mut t = LocalTopology::new(shards, replicas);
    t.durability = "memory".into();
    t.redis = true;
    t
}

/// The Redis address of site `name`.
fn redis_addr(c: &Cluster, name: &str) -> SocketAddr {
    let cfg = c.cfg();
    let site = cfg.site(name).expect("site");
    cfg.redis_addr(site).expect("a redis port")
}

/// The name of the serving leader of `shard`.
fn leader(c: &Cluster, shard: u32) -> String {
    let names: Vec<String> = c
        .cfg()
        .shard_sites(shard)
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let mut client = c.client();
    common::poll(Duration::from_secs(30), || {
        common::serving_leader(&mut client, &names)
    })
    .expect("a serving leader")
    .0
}

fn connect(addr: SocketAddr, query: &str) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{addr}/{query}")).expect("url");
    client
        .get_connection_with_timeout(Duration::from_secs(30))
        .expect("connects")
}

/// A raw RESP connection, for exact replies and malformed frames.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn new(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).expect("connects");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Raw { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send");
    }

    fn reply(&mut self) -> Option<Reply> {
        loop {
            if let Some((v, used)) = decode_reply(&self.buf) {
                self.buf.drain(..used);
                return Some(v);
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// `line` split at spaces, sent as an array; its reply.
    fn cmd(&mut self, line: &str) -> Reply {
        let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        self.send(&encode_request(&words));
        self.reply().expect("a reply")
    }

    /// Whether the server closed the connection (nothing more to read).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.s.read_to_end(&mut rest), Ok(0))
    }
}

fn bulk(s: &str) -> Reply {
    Reply::bulk(s)
}

fn err(s: &str) -> Reply {
    Reply::err(s)
}

#[test]
fn redis_on_one_shard_three_replicas() {
    let mut c = Cluster::start(&topo(1, 3));
    let lead = leader(&c, 0);
    let addr = redis_addr(&c, &lead);
    let mut r = Raw::new(addr);

    // Every command, with Redis's exact replies.
    assert_eq!(r.cmd("PING"), Reply::Simple("PONG".into()));
    assert_eq!(r.cmd("PING hello"), bulk("hello"));
    assert_eq!(r.cmd("ECHO hi"), bulk("hi"));
    assert_eq!(r.cmd("GET missing"), Reply::Nil);
    assert_eq!(r.cmd("SET k v"), Reply::ok());
    assert_eq!(r.cmd("GET k"), bulk("v"));
    assert_eq!(r.cmd("SET k w NX"), Reply::Nil);
    assert_eq!(r.cmd("SET k w XX GET"), bulk("v"));
    assert_eq!(r.cmd("SET nope x XX"), Reply::Nil);
    assert_eq!(r.cmd("SET k v nx xx"), err("ERR syntax error"));
    let Reply::Error(e) = r.cmd("SET k v EX 10") else {
        panic!("SET EX is refused");
    };
    assert!(e.contains("expiry") && e.contains("not supported"), "{e}");
    assert_eq!(r.cmd("GET k"), bulk("w"));
    assert_eq!(r.cmd("MSET a 1 b 2 c 3"), Reply::ok());
    assert_eq!(
        r.cmd("MGET a b zz c"),
        Reply::Array(vec![bulk("1"), bulk("2"), Reply::Nil, bulk("3")])
    );
    assert_eq!(r.cmd("EXISTS a b zz a"), Reply::Int(3));
    assert_eq!(r.cmd("DEL a zz"), Reply::Int(1));
    assert_eq!(r.cmd("EXISTS a"), Reply::Int(0));
    assert_eq!(r.cmd("INCR n"), Reply::Int(1));
    assert_eq!(r.cmd("INCRBY n 41"), Reply::Int(42));
    assert_eq!(r.cmd("DECR n"), Reply::Int(41));
    assert_eq!(r.cmd("DECRBY n 50"), Reply::Int(-9));
    assert_eq!(
        r.cmd("INCR k"),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(
        r.cmd("INCRBY n x"),
        err("ERR value is not an integer or out of range")
    );
    // Stored values Redis does not read as integers either.
    for v in ["+5", "007", "-0", "1e3"] {
        assert_eq!(r.cmd(&format!("SET odd {v}")), Reply::ok());
        assert_eq!(
            r.cmd("INCR odd"),
            err("ERR value is not an integer or out of range"),
            "INCR of {v:?}"
        );
    }
    assert_eq!(r.cmd("DEL odd"), Reply::Int(1));
    assert_eq!(r.cmd("APPEND k xyz"), Reply::Int(4));
    assert_eq!(r.cmd("STRLEN k"), Reply::Int(4));
    assert_eq!(r.cmd("GETSET k new"), bulk("wxyz"));
    assert_eq!(r.cmd("GETDEL k"), bulk("new"));
    assert_eq!(r.cmd("GETDEL k"), Reply::Nil);
    assert_eq!(r.cmd("SELECT 0"), Reply::ok());
    assert_eq!(r.cmd("SELECT 1"), err("ERR DB index is out of range"));
    assert_eq!(
        r.cmd("CONFIG GET save"),
        Reply::Array(vec![bulk("save"), bulk("")])
    );
    assert_eq!(
        r.cmd("CONFIG GET appendonly"),
        Reply::Array(vec![bulk("appendonly"), bulk("no")])
    );
    assert!(matches!(r.cmd("COMMAND COUNT"), Reply::Int(n) if n >= 30));
    assert_eq!(r.cmd("COMMAND DOCS"), Reply::Array(Vec::new()));
    assert_eq!(r.cmd("CLIENT SETNAME tester"), Reply::ok());
    assert_eq!(r.cmd("CLIENT GETNAME"), bulk("tester"));
    assert_eq!(
        r.cmd("FOO bar"),
        err("ERR unknown command 'FOO', with args beginning with: 'bar' ")
    );
    assert_eq!(
        r.cmd("GET"),
        err("ERR wrong number of arguments for 'get' command")
    );
    let Reply::Bulk(info) = r.cmd("INFO") else {
        panic!("INFO is a bulk string in RESP2");
    };
    let info = String::from_utf8(info).expect("utf-8");
    for needle in [
        "# Server\r\n",
        "# Replication\r\nrole:master\r\n",
        "mako_role:leader\r\n",
        "mako_shard:0\r\n",
        "mako_term:",
        "mako_epoch:",
        "# Stats\r\n",
    ] {
        assert!(info.contains(needle), "{needle:?} in {info}");
    }
    let released: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("mako_released:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("mako_released");
    assert!(
        released >= 20,
        "the commands above were released: {released}"
    );

    // SCAN walks the whole key space in key order with MATCH and COUNT.
    let mut con = connect(addr, "");
    let keys: Vec<String> = (0..30).map(|i| format!("scan:{i:02}")).collect();
    for k in &keys {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg("x")
            .query(&mut con)
            .expect("set");
    }
    let mut cursor = 0u64;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("scan:*")
            .arg("COUNT")
            .arg(7)
            .query(&mut con)
            .expect("scan");
        seen.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen, keys);

    // Pipelining: 1,000 commands in one write, answered in order.
    let mut pipe = redis::pipe();
    for _ in 0..1000 {
        pipe.cmd("INCR").arg("pipelined");
    }
    let counts: Vec<i64> = pipe.query(&mut con).expect("pipeline");
    assert_eq!(counts, (1..=1000).collect::<Vec<i64>>());

    // A follower forwards to the leader: its writes are the leader's.
    let follower = c
        .cfg()
        .shard_sites(0)
        .iter()
        .map(|s| s.name.clone())
        .find(|n| *n != lead)
        .expect("a follower");
    let mut f = connect(redis_addr(&c, &follower), "");
    let _: () = redis::cmd("SET")
        .arg("via")
        .arg("follower")
        .query(&mut f)
        .expect("set on a follower");
    let got: String = redis::cmd("GET").arg("via").query(&mut con).expect("get");
    assert_eq!(got, "follower");
    let n: i64 = redis::cmd("INCR")
        .arg("pipelined")
        .query(&mut f)
        .expect("incr");
    assert_eq!(n, 1001);
    // The leader committed the pipeline on its event loops; the follower, which serves no
    // key itself, handed its commands to a helper thread.
    let stat = |con: &mut redis::Connection, name: &str| -> u64 {
        let info: String = redis::cmd("INFO").arg("stats").query(con).expect("info");
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {info}"))
    };
    assert!(stat(&mut con, "mako_loop_transactions") >= 1000 / 64);
    assert_eq!(stat(&mut f, "mako_loop_transactions"), 0);
    assert!(stat(&mut f, "mako_helper_jobs") >= 2);

    // WATCH: a key changed by another connection makes EXEC answer nil; unchanged, it applies.
    let mut other = Raw::new(addr);
    assert_eq!(r.cmd("SET w 1"), Reply::ok());
    assert_eq!(r.cmd("WATCH w"), Reply::ok());
    assert_eq!(other.cmd("SET w 2"), Reply::ok());
    assert_eq!(r.cmd("MULTI"), Reply::ok());
    assert_eq!(r.cmd("SET w mine"), Reply::Simple("QUEUED".into()));
    assert_eq!(r.cmd("EXEC"), Reply::NilArray);
    assert_eq!(r.cmd("GET w"), bulk("2"));
    assert_eq!(r.cmd("WATCH w"), Reply::ok());
    assert_eq!(other.cmd("GET w"), bulk("2"));
    assert_eq!(r.cmd("MULTI"), Reply::ok());
    assert_eq!(r.cmd("SET w mine"), Reply::Simple("QUEUED".into()));
    assert_eq!(r.cmd("INCR w"), Reply::Simple("QUEUED".into()));
    assert_eq!(
        r.cmd("EXEC"),
        Reply::Array(vec![
            Reply::ok(),
            err("ERR value is not an integer or out of range")
        ])
    );
    assert_eq!(other.cmd("GET w"), bulk("mine"));
    // MULTI errors as Redis gives them.
    assert_eq!(r.cmd("EXEC"), err("ERR EXEC without MULTI"));
    assert_eq!(r.cmd("DISCARD"), err("ERR DISCARD without MULTI"));
    assert_eq!(r.cmd("MULTI"), Reply::ok());
    assert_eq!(r.cmd("MULTI"), err("ERR MULTI calls can not be nested"));
    assert_eq!(
        r.cmd("WATCH x"),
        err("ERR WATCH inside MULTI is not allowed")
    );
    assert_eq!(r.cmd("SET w lost"), Reply::Simple("QUEUED".into()));
    assert!(matches!(r.cmd("NOSUCH"), Reply::Error(_)));
    assert_eq!(
        r.cmd("EXEC"),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(r.cmd("GET w"), bulk("mine"));
    assert_eq!(r.cmd("MULTI"), Reply::ok());
    assert_eq!(r.cmd("SET w lost"), Reply::Simple("QUEUED".into()));
    assert_eq!(r.cmd("DISCARD"), Reply::ok());
    assert_eq!(r.cmd("GET w"), bulk("mine"));

    // RESP3 through HELLO 3: maps and the RESP3 null.
    let mut three = connect(addr, "?protocol=resp3");
    let hello: Value = redis::cmd("HELLO").arg(3).query(&mut three).expect("hello");
    let Value::Map(fields) = hello else {
        panic!("HELLO 3 answers a map: {hello:?}");
    };
    assert!(fields.contains(&(Value::BulkString(b"proto".to_vec()), Value::Int(3))));
    let v: Value = redis::cmd("GET")
        .arg("missing")
        .query(&mut three)
        .expect("get");
    assert_eq!(v, Value::Nil);
    let mut r3 = Raw::new(addr);
    let Reply::Map(_) = r3.cmd("HELLO 3") else {
        panic!("HELLO 3 answers a map");
    };
    assert_eq!(r3.cmd("GET missing"), Reply::Nil);
    r3.send(b"CONFIG GET save\r\n");
    assert_eq!(r3.reply(), Some(Reply::Map(vec![(bulk("save"), bulk(""))])));

    // Malformed frames close only their connection.
    for bad in [
        &b"*1\r\n$-5\r\n"[..],
        b"*2\r\n$99999999999\r\n",
        b"*-7x\r\n",
        b"*1\r\n:12\r\n",
        b"\x00\x01\x02 \"unbalanced\r\n",
    ] {
        let mut b = Raw::new(addr);
        b.send(bad);
        let reply = b.reply();
        assert!(
            matches!(&reply, Some(Reply::Error(e)) if e.starts_with("ERR Protocol error")),
            "{bad:?}: {reply:?}"
        );
        assert!(b.closed(), "{bad:?} closes the connection");
    }
    let got: String = redis::cmd("GET")
        .arg("via")
        .query(&mut con)
        .expect("still served");
    assert_eq!(got, "follower");

    // QUIT answers OK and closes.
    assert_eq!(r.cmd("QUIT"), Reply::ok());
    assert!(r.closed());

    // Every replica holds what the Redis clients wrote.
    c.converge(0, "kv", Duration::from_secs(30));
}

#[test]
fn redis_auth_with_the_client_token() {
    let mut t = topo(1, 1);
    t.extra = "security:\n  client_token: \"redis-token-1234567890\"\n".into();
    let c = Cluster::start(&t);
    let addr = redis_addr(&c, "s0r0");
    let mut r = Raw::new(addr);
    assert_eq!(r.cmd("PING"), err("NOAUTH Authentication required."));
    assert_eq!(r.cmd("GET k"), err("NOAUTH Authentication required."));
    assert_eq!(
        r.cmd("AUTH wrong-token"),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(r.cmd("SET k v"), err("NOAUTH Authentication required."));
    assert_eq!(r.cmd("AUTH redis-token-1234567890"), Reply::ok());
    assert_eq!(r.cmd("SET k v"), Reply::ok());

    let mut d = Raw::new(addr);
    assert_eq!(d.cmd("AUTH default redis-token-1234567890"), Reply::ok());
    assert_eq!(d.cmd("GET k"), bulk("v"));
    let mut h = Raw::new(addr);
    assert_eq!(
        h.cmd("HELLO 3 AUTH default nope"),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    let Reply::Map(_) = h.cmd("HELLO 3 AUTH default redis-token-1234567890") else {
        panic!("HELLO with the token answers a map");
    };
    assert_eq!(h.cmd("GET k"), bulk("v"));

    // The redis client library with the password in the URL, both protocols.
    for q in ["", "?protocol=resp3"] {
        let client = redis::Client::open(format!("redis://:redis-token-1234567890@{addr}/{q}"))
            .expect("url");
        let mut con = client.get_connection().expect("authenticated");
        let v: String = redis::cmd("GET").arg("k").query(&mut con).expect("get");
        assert_eq!(v, "v");
    }
    let client = redis::Client::open(format!("redis://:wrong@{addr}/")).expect("url");
    assert!(
        client.get_connection().is_err(),
        "a wrong password is refused"
    );
}

/// Two keys on different shards.
fn keys_on_two_shards(c: &Cluster) -> (String, String) {
    let cfg = c.cfg();
    let on = |shard: u32, prefix: &str| {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|k| cfg.shard_of("kv", k.as_bytes()) == Some(shard))
            .expect("a key")
    };
    (on(0, "x"), on(1, "y"))
}

#[test]
fn redis_multi_exec_is_atomic_across_shards() {
    let c = Cluster::start(&topo(2, 3));
    let addr = redis_addr(&c, &leader(&c, 0));
    let (x, y) = keys_on_two_shards(&c);
    let mut con = connect(addr, "");
    let _: () = redis::cmd("MSET")
        .arg(&x)
        .arg(100)
        .arg(&y)
        .arg(0)
        .query(&mut con)
        .expect("mset");

    // Transfers from x to y in MULTI/EXEC while readers check the sum, by MGET and by a
    // read-only MULTI block: they never see half a transfer.
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|i| {
            let (x, y, done) = (x.clone(), y.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut con = connect(addr, "");
                let mut reads = 0;
                while !done.load(Ordering::Acquire) {
                    let r: redis::RedisResult<(i64, i64)> = if i == 0 {
                        redis::cmd("MGET").arg(&x).arg(&y).query(&mut con)
                    } else {
                        redis::pipe()
                            .atomic()
                            .cmd("GET")
                            .arg(&x)
                            .cmd("GET")
                            .arg(&y)
                            .query(&mut con)
                    };
                    match r {
                        Ok((a, b)) => {
                            assert_eq!(a + b, 100, "a read saw half a transfer: {a} + {b}");
                            reads += 1;
                        }
                        // An honest abort under contention (after the server's retries).
                        Err(e) if e.code() == Some("ABORTED") => {}
                        Err(e) => panic!("read: {e}"),
                    }
                }
                reads
            })
        })
        .collect();
    let mut moved = 0;
    while moved < 40 {
        let r: redis::RedisResult<(i64, i64)> = redis::pipe()
            .atomic()
            .cmd("DECRBY")
            .arg(&x)
            .arg(1)
            .cmd("INCRBY")
            .arg(&y)
            .arg(1)
            .query(&mut con);
        match r {
            Ok((a, b)) => {
                assert_eq!(a + b, 100);
                moved += 1;
                assert_eq!(b, moved, "every transfer applied exactly once");
            }
            Err(e) if e.code() == Some("ABORTED") => {}
            Err(e) => panic!("transfer: {e}"),
        }
    }
    // MSET across shards is one transaction too.
    let mut i = 0;
    while i < 20 {
        let r: redis::RedisResult<()> = redis::cmd("MSET")
            .arg(&x)
            .arg(100 - i)
            .arg(&y)
            .arg(i)
            .query(&mut con);
        match r {
            Ok(()) => i += 1,
            Err(e) if e.code() == Some("ABORTED") => {}
            Err(e) => panic!("mset: {e}"),
        }
    }
    done.store(true, Ordering::Release);
    for r in readers {
        let reads = r.join().expect("reader");
        assert!(reads > 0, "each reader read");
    }
    let (a, b): (i64, i64) = redis::cmd("MGET")
        .arg(&x)
        .arg(&y)
        .query(&mut con)
        .expect("mget");
    assert_eq!((a, b), (81, 19));
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut con)
        .expect("info");
    eprintln!(
        "{}",
        info.lines()
            .filter(|l| l.starts_with("mako_aborts"))
            .collect::<Vec<_>>()
            .join(" ")
    );

    // WATCH across shards: a change on the other shard aborts the block.
    let mut other = connect(addr, "");
    let watch_both = |con: &mut redis::Connection| {
        let _: () = redis::cmd("WATCH")
            .arg(&x)
            .arg(&y)
            .query(con)
            .expect("watch");
    };
    // EXEC of a block that sets x to 0: nil if a watched key changed.
    let exec_set_x = |con: &mut redis::Connection| -> Value {
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&x)
            .arg(0)
            .query(con)
            .expect("exec")
    };
    watch_both(&mut con);
    let _: () = redis::cmd("SET")
        .arg(&y)
        .arg(50)
        .query(&mut other)
        .expect("set");
    assert_eq!(
        exec_set_x(&mut con),
        Value::Nil,
        "EXEC after a watched key changed answers nil"
    );
    let v: i64 = redis::cmd("GET").arg(&x).query(&mut con).expect("get");
    assert_eq!(v, 81);

    // A write that leaves the value as it was counts too, on either shard (one of the
    // two version reads is a remote one).
    for k in [&x, &y] {
        watch_both(&mut con);
        let now: i64 = redis::cmd("GET").arg(k).query(&mut other).expect("get");
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg(now)
            .query(&mut other)
            .expect("set");
        assert_eq!(
            exec_set_x(&mut con),
            Value::Nil,
            "EXEC after {k} was rewritten answers nil"
        );
    }
    // Untouched, the block applies.
    watch_both(&mut con);
    assert_ne!(exec_set_x(&mut con), Value::Nil);
    let v: i64 = redis::cmd("GET").arg(&x).query(&mut con).expect("get");
    assert_eq!(v, 0);
}
