//! Tests of the connection state machine and the listener over a [`MemStore`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use crate::backend::{Backend, Body, Failure, Figures, MemStore};
use crate::conn::{Connection, EXECABORT, Flow, NOAUTH, Shared, WRONGPASS};
use crate::resp::{Value, decode_reply};
use crate::{Options, Server};

struct Fixture {
    shared: Shared,
    conn: Connection,
    store: MemStore,
}

impl Fixture {
    fn new(token: Option<&str>) -> Self {
        let shared = Shared::new(token.map(|t| t.as_bytes().to_vec()), 6379);
        let conn = Connection::new(&shared);
        Fixture {
            shared,
            conn,
            store: MemStore::new(),
        }
    }

    fn cmd_on(&mut self, other: &mut Connection, line: &str) -> Value {
        let args: Vec<Vec<u8>> = line.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        other.handle(&args, &self.shared, &mut self.store.clone()).0
    }

    fn cmd(&mut self, line: &str) -> Value {
        let args: Vec<Vec<u8>> = line.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        self.conn
            .handle(&args, &self.shared, &mut self.store.clone())
            .0
    }
}

fn bulk(s: &str) -> Value {
    Value::bulk(s)
}

fn ok() -> Value {
    Value::ok()
}

#[test]
fn string_commands() {
    let mut f = Fixture::new(None);
    assert_eq!(f.cmd("GET k"), Value::Nil);
    assert_eq!(f.cmd("SET k v"), ok());
    assert_eq!(f.cmd("GET k"), bulk("v"));
    assert_eq!(f.cmd("SET k w NX"), Value::Nil);
    assert_eq!(f.cmd("SET k w XX GET"), bulk("v"));
    assert_eq!(f.cmd("SET n 1 XX"), Value::Nil);
    assert_eq!(f.cmd("GET n"), Value::Nil);
    assert_eq!(f.cmd("SET n 1 NX"), ok());
    assert_eq!(f.cmd("INCR n"), Value::Int(2));
    assert_eq!(f.cmd("INCRBY n 10"), Value::Int(12));
    assert_eq!(f.cmd("DECR n"), Value::Int(11));
    assert_eq!(f.cmd("DECRBY n 20"), Value::Int(-9));
    assert_eq!(
        f.cmd("INCR k"),
        Value::err("ERR value is not an integer or out of range")
    );
    assert_eq!(f.cmd("SET big 9223372036854775807"), ok());
    assert_eq!(
        f.cmd("INCR big"),
        Value::err("ERR increment or decrement would overflow")
    );
    assert_eq!(f.cmd("APPEND k xyz"), Value::Int(4));
    assert_eq!(f.cmd("STRLEN k"), Value::Int(4));
    assert_eq!(f.cmd("STRLEN none"), Value::Int(0));
    assert_eq!(f.cmd("GETSET k new"), bulk("wxyz"));
    assert_eq!(f.cmd("GETDEL k"), bulk("new"));
    assert_eq!(f.cmd("GETDEL k"), Value::Nil);
    assert_eq!(f.cmd("MSET a 1 b 2"), ok());
    assert_eq!(
        f.cmd("MGET a b c"),
        Value::Array(vec![bulk("1"), bulk("2"), Value::Nil])
    );
    assert_eq!(f.cmd("EXISTS a b c a"), Value::Int(3));
    assert_eq!(f.cmd("DEL a c"), Value::Int(1));
    assert_eq!(f.store.value(b"a"), None);
    assert_eq!(f.store.value(b"b"), Some(b"2".to_vec()));
}

#[test]
fn connection_commands() {
    let mut f = Fixture::new(None);
    assert_eq!(f.cmd("PING"), Value::Simple("PONG".into()));
    assert_eq!(f.cmd("PING hi"), bulk("hi"));
    assert_eq!(f.cmd("ECHO hi"), bulk("hi"));
    assert_eq!(f.cmd("SELECT 0"), ok());
    assert_eq!(
        f.cmd("SELECT 1"),
        Value::err("ERR DB index is out of range")
    );
    assert_eq!(f.cmd("CLIENT GETNAME"), Value::Nil);
    assert_eq!(f.cmd("CLIENT SETNAME me"), ok());
    assert_eq!(f.cmd("CLIENT GETNAME"), bulk("me"));
    assert!(f.cmd("CLIENT SETNAME a\nb").is_error());
    assert_eq!(
        f.cmd("CONFIG GET save"),
        Value::Map(vec![(bulk("save"), bulk(""))])
    );
    assert_eq!(
        f.cmd("CONFIG GET appendonly"),
        Value::Map(vec![(bulk("appendonly"), bulk("no"))])
    );
    assert_eq!(f.cmd("CONFIG GET nothing"), Value::Map(Vec::new()));
    assert!(matches!(f.cmd("COMMAND COUNT"), Value::Int(n) if n > 20));
    assert_eq!(f.cmd("COMMAND DOCS"), Value::Map(Vec::new()));
    assert!(f.cmd("COMMAND COUNT x").is_error());
    assert!(matches!(f.cmd("command count"), Value::Int(_)));
    assert_eq!(
        f.cmd("COMMAND FOO"),
        Value::err("ERR unknown subcommand 'FOO'. Try COMMAND HELP.")
    );
    // Key positions as Redis gives them (cluster-aware clients route by them).
    let mut positions = |name: &str| {
        let Value::Array(entries) = f.cmd(&format!("COMMAND INFO {name}")) else {
            panic!("COMMAND INFO answers an array");
        };
        let Value::Array(e) = &entries[0] else {
            panic!("{entries:?}")
        };
        (e[3].clone(), e[4].clone(), e[5].clone())
    };
    assert_eq!(
        positions("get"),
        (Value::Int(1), Value::Int(1), Value::Int(1))
    );
    assert_eq!(
        positions("mset"),
        (Value::Int(1), Value::Int(-1), Value::Int(2))
    );
    assert_eq!(
        positions("ping"),
        (Value::Int(0), Value::Int(0), Value::Int(0))
    );
    let Value::Verbatim(info) = f.cmd("INFO") else {
        panic!("INFO is text");
    };
    for needle in [
        "# Server\r\n",
        "redis_version:",
        "# Replication\r\nrole:master",
        "# Stats\r\n",
        "keys:",
    ] {
        assert!(info.contains(needle), "{needle} in {info}");
    }
    let Value::Verbatim(repl) = f.cmd("INFO replication") else {
        panic!("INFO is text");
    };
    assert!(
        repl.contains("role:") && !repl.contains("# Server"),
        "{repl}"
    );
    assert_eq!(
        f.cmd("FOO x"),
        Value::err("ERR unknown command 'FOO', with args beginning with: 'x' ")
    );
    let args = vec![b"QUIT".to_vec()];
    let (r, flow) = f.conn.handle(&args, &f.shared, &mut f.store.clone());
    assert_eq!((r, flow), (ok(), Flow::Close));
}

#[test]
fn auth_gates_every_command_but_auth_hello_quit() {
    let mut f = Fixture::new(Some("sesame"));
    assert_eq!(f.cmd("PING"), Value::err(NOAUTH));
    assert_eq!(f.cmd("GET k"), Value::err(NOAUTH));
    assert_eq!(f.cmd("SET k v EX 1"), Value::err(NOAUTH));
    // Unknown commands and wrong arity are found before authentication, as in Redis.
    assert!(f.cmd("GET").text_contains("wrong number"));
    assert!(
        f.cmd("HELLO 3")
            .text_contains("NOAUTH HELLO must be called")
    );
    assert_eq!(f.cmd("AUTH wrong"), Value::err(WRONGPASS));
    assert_eq!(f.cmd("AUTH someone sesame"), Value::err(WRONGPASS));
    assert_eq!(f.cmd("GET k"), Value::err(NOAUTH));
    assert_eq!(f.cmd("AUTH sesame"), ok());
    assert_eq!(f.cmd("GET k"), Value::Nil);

    let mut other = Connection::new(&f.shared);
    assert_eq!(f.cmd_on(&mut other, "AUTH default sesame"), ok());
    assert_eq!(f.cmd_on(&mut other, "PING"), Value::Simple("PONG".into()));

    let mut third = Connection::new(&f.shared);
    assert_eq!(
        f.cmd_on(&mut third, "HELLO 3 AUTH default wrong"),
        Value::err(WRONGPASS)
    );
    assert_eq!(third.proto(), 2);
    let Value::Map(m) = f.cmd_on(&mut third, "HELLO 3 AUTH default sesame SETNAME x") else {
        panic!("HELLO answers a map");
    };
    assert!(m.contains(&(bulk("proto"), Value::Int(3))));
    assert_eq!(third.proto(), 3);
    assert_eq!(f.cmd_on(&mut third, "CLIENT GETNAME"), bulk("x"));
}

#[test]
fn auth_without_a_token() {
    let mut f = Fixture::new(None);
    assert!(
        f.cmd("AUTH x")
            .text_contains("without any password configured")
    );
    assert_eq!(f.cmd("AUTH default x"), ok());
    assert_eq!(
        f.cmd("HELLO 4"),
        Value::err("NOPROTO unsupported protocol version")
    );
    assert!(matches!(f.cmd("HELLO"), Value::Map(_)));
    assert_eq!(f.conn.proto(), 2);
}

#[test]
fn multi_exec_runs_the_queue_in_one_transaction() {
    let mut f = Fixture::new(None);
    assert_eq!(f.cmd("EXEC"), Value::err("ERR EXEC without MULTI"));
    assert_eq!(f.cmd("DISCARD"), Value::err("ERR DISCARD without MULTI"));
    assert_eq!(f.cmd("SET s notanint"), ok());
    assert_eq!(f.cmd("MULTI"), ok());
    assert_eq!(
        f.cmd("MULTI"),
        Value::err("ERR MULTI calls can not be nested")
    );
    assert_eq!(
        f.cmd("WATCH a"),
        Value::err("ERR WATCH inside MULTI is not allowed")
    );
    assert_eq!(f.cmd("SET a 1"), Value::Simple("QUEUED".into()));
    assert_eq!(f.cmd("INCR s"), Value::Simple("QUEUED".into()));
    assert_eq!(f.cmd("INCR a"), Value::Simple("QUEUED".into()));
    assert_eq!(f.cmd("SET x y NX XX"), Value::Simple("QUEUED".into()));
    assert_eq!(f.cmd("PING"), Value::Simple("QUEUED".into()));
    assert_eq!(f.store.value(b"a"), None, "nothing runs before EXEC");
    assert_eq!(
        f.cmd("EXEC"),
        Value::Array(vec![
            ok(),
            Value::err("ERR value is not an integer or out of range"),
            Value::Int(2),
            Value::err("ERR syntax error"),
            Value::Simple("PONG".into()),
        ])
    );
    assert_eq!(f.store.value(b"a"), Some(b"2".to_vec()));
    assert!(!f.conn.in_multi());

    // Queueing errors discard the whole block.
    assert_eq!(f.cmd("MULTI"), ok());
    assert_eq!(f.cmd("SET a 100"), Value::Simple("QUEUED".into()));
    assert!(f.cmd("NOSUCH x").is_error());
    assert!(f.cmd("GET").is_error());
    assert_eq!(f.cmd("EXEC"), Value::err(EXECABORT));
    assert_eq!(f.store.value(b"a"), Some(b"2".to_vec()));

    assert_eq!(f.cmd("MULTI"), ok());
    assert_eq!(f.cmd("SET a 100"), Value::Simple("QUEUED".into()));
    assert_eq!(f.cmd("DISCARD"), ok());
    assert_eq!(f.cmd("EXEC"), Value::err("ERR EXEC without MULTI"));
    assert_eq!(f.store.value(b"a"), Some(b"2".to_vec()));
}

#[test]
fn watch_aborts_exec_when_a_key_changed() {
    let mut f = Fixture::new(None);
    let mut other = Connection::new(&f.shared);
    assert_eq!(f.cmd("SET w 1"), ok());
    assert_eq!(f.cmd("WATCH w"), ok());
    assert_eq!(f.cmd_on(&mut other, "SET w 2"), ok());
    assert_eq!(f.cmd("MULTI"), ok());
    assert_eq!(f.cmd("SET w 10"), Value::Simple("QUEUED".into()));
    assert_eq!(f.cmd("EXEC"), Value::NilArray);
    assert_eq!(f.store.value(b"w"), Some(b"2".to_vec()));

    // EXEC unwatched: the next block applies.
    assert_eq!(f.cmd("MULTI"), ok());
    assert_eq!(f.cmd("SET w 10"), Value::Simple("QUEUED".into()));
    assert_eq!(f.cmd("EXEC"), Value::Array(vec![ok()]));

    // Unchanged watched keys (one of them absent) let EXEC apply.
    assert_eq!(f.cmd("WATCH w absent"), ok());
    assert_eq!(f.cmd_on(&mut other, "GET w"), bulk("10"));
    assert_eq!(f.cmd("MULTI"), ok());
    assert_eq!(f.cmd("INCR w"), Value::Simple("QUEUED".into()));
    assert_eq!(f.cmd("EXEC"), Value::Array(vec![Value::Int(11)]));

    // A key created after WATCH counts as changed; UNWATCH forgets.
    assert_eq!(f.cmd("WATCH fresh"), ok());
    assert_eq!(f.cmd_on(&mut other, "SET fresh 1"), ok());
    assert_eq!(f.cmd("UNWATCH"), ok());
    assert_eq!(f.cmd("MULTI"), ok());
    assert_eq!(f.cmd("GET fresh"), Value::Simple("QUEUED".into()));
    assert_eq!(f.cmd("EXEC"), Value::Array(vec![bulk("1")]));
}

/// As in Redis, any write to a watched key since WATCH aborts EXEC, also one that leaves
/// the value as it was.
#[test]
fn watch_notices_writes_that_leave_the_value_unchanged() {
    let mut f = Fixture::new(None);
    let mut other = Connection::new(&f.shared);
    let cases: [&[&str]; 4] = [
        &["SET w A"],
        &["SET w B", "SET w A"],
        &["DEL w", "SET w A"],
        &["GETSET w A"],
    ];
    for writes in cases {
        assert_eq!(f.cmd("SET w A"), ok());
        assert_eq!(f.cmd("WATCH w"), ok());
        for w in writes {
            assert!(!f.cmd_on(&mut other, w).is_error(), "{w}");
        }
        assert_eq!(f.store.value(b"w"), Some(b"A".to_vec()));
        assert_eq!(f.cmd("MULTI"), ok());
        assert_eq!(f.cmd("SET w mine"), Value::Simple("QUEUED".into()));
        assert_eq!(f.cmd("EXEC"), Value::NilArray, "after {writes:?}");
        assert_eq!(f.store.value(b"w"), Some(b"A".to_vec()));
    }
    // A key absent at WATCH, then written and deleted: it changed.
    assert_eq!(f.cmd("WATCH gone"), ok());
    assert_eq!(f.cmd_on(&mut other, "SET gone 1"), ok());
    assert_eq!(f.cmd_on(&mut other, "DEL gone"), Value::Int(1));
    assert_eq!(f.cmd("MULTI"), ok());
    assert_eq!(f.cmd("SET gone mine"), Value::Simple("QUEUED".into()));
    assert_eq!(f.cmd("EXEC"), Value::NilArray);
    // Untouched watched keys (one absent) let EXEC apply.
    assert_eq!(f.cmd("WATCH w never"), ok());
    assert_eq!(f.cmd_on(&mut other, "GET w"), Value::bulk("A"));
    assert_eq!(f.cmd("MULTI"), ok());
    assert_eq!(f.cmd("SET w mine"), Value::Simple("QUEUED".into()));
    assert_eq!(f.cmd("EXEC"), Value::Array(vec![ok()]));
}

#[test]
fn scan_walks_every_key_with_match_and_count() {
    let mut f = Fixture::new(None);
    for i in 0..25 {
        assert_eq!(f.cmd(&format!("SET key:{i:02} v")), ok());
    }
    assert_eq!(f.cmd("SET other v"), ok());
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let Value::Array(r) = f.cmd(&format!("SCAN {cursor} MATCH key:* COUNT 7")) else {
            panic!("SCAN answers an array");
        };
        let [Value::Bulk(c), Value::Array(keys)] = &r[..] else {
            panic!("{r:?}");
        };
        seen.extend(keys.iter().cloned());
        cursor = String::from_utf8(c.clone()).unwrap();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(rounds, 4, "26 keys, 7 per call");
    let want: Vec<Value> = (0..25).map(|i| bulk(&format!("key:{i:02}"))).collect();
    assert_eq!(seen, want);
    assert_eq!(f.cmd("SCAN 12345"), Value::err("ERR invalid cursor"));
}

/// A backend whose commits always end as `fail`.
struct Failing(Failure);

impl Backend for Failing {
    fn transact(&mut self, body: &mut Body<'_>) -> Result<(), Failure> {
        let store = MemStore::new();
        store.clone().transact(body)?;
        Err(self.0.clone())
    }

    fn figures(&mut self) -> Figures {
        Figures::default()
    }
}

#[test]
fn unknown_and_aborted_outcomes_are_errors_not_successes() {
    let shared = Shared::new(None, 1);
    let mut c = Connection::new(&shared);
    let set = vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()];
    let (r, _) = c.handle(
        &set,
        &shared,
        &mut Failing(Failure::Unknown("release timed out".into())),
    );
    let Value::Error(e) = r else { panic!("{r:?}") };
    assert!(
        e.starts_with("UNKNOWN ") && e.contains("may or may not"),
        "{e}"
    );
    let (r, _) = c.handle(
        &set,
        &shared,
        &mut Failing(Failure::Aborted {
            reason: "conflict".into(),
            retryable: true,
        }),
    );
    let Value::Error(e) = r else { panic!("{r:?}") };
    assert!(
        e.starts_with("ABORTED ") && e.contains("nothing was applied"),
        "{e}"
    );
}

/// A backend that commits into a [`MemStore`] and hands back a release ending as `fail`.
struct Deferred(MemStore, Failure);

struct FailingRelease(Failure);

impl crate::Release for FailingRelease {
    fn wait(self: Box<Self>) -> Result<(), Failure> {
        Err(self.0)
    }
}

impl Backend for Deferred {
    fn transact(&mut self, body: &mut Body<'_>) -> Result<(), Failure> {
        self.0.transact(body)
    }

    fn transact_pipelined(
        &mut self,
        body: &mut Body<'_>,
    ) -> Result<Option<Box<dyn crate::Release>>, Failure> {
        self.0.transact(body)?;
        Ok(Some(Box::new(FailingRelease(self.1.clone()))))
    }

    fn figures(&mut self) -> Figures {
        Figures::default()
    }
}

#[test]
fn a_reply_waits_for_its_release_and_reports_its_failure() {
    let shared = Shared::new(None, 1);
    let mut c = Connection::new(&shared);
    let mut b = Deferred(
        MemStore::new(),
        Failure::Unknown("release timed out".into()),
    );
    let set = vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()];
    let (r, _) = c.handle(&set, &shared, &mut b);
    assert_eq!(r, ok(), "the reply, once released");
    assert!(c.take_release().is_some(), "a release to wait for");
    let (r, _) = c.answer(&set, &shared, &mut b);
    assert!(r.text_contains("UNKNOWN"), "{r:?}");
    let mut b = Deferred(
        MemStore::new(),
        Failure::Aborted {
            reason: "failover".into(),
            retryable: true,
        },
    );
    let (r, _) = c.answer(&[b"INCR".to_vec(), b"n".to_vec()], &shared, &mut b);
    assert!(r.text_contains("ABORTED"), "{r:?}");
    // Commands without a transaction have nothing to wait for.
    let (r, _) = c.handle(&[b"PING".to_vec()], &shared, &mut b);
    assert_eq!(r, Value::Simple("PONG".into()));
    assert!(c.take_release().is_none());
}

/// Hands out [`Deferred`] backends whose releases end as `Unknown`.
struct DeferredStore(MemStore);

impl crate::Store for DeferredStore {
    fn connect(&self) -> Box<dyn Backend> {
        Box::new(Deferred(
            self.0.clone(),
            Failure::Unknown("release timed out".into()),
        ))
    }
}

#[test]
fn the_server_sends_a_pipelined_reply_only_once_released() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let store = MemStore::new();
    let mut server = Server::start(
        listener,
        Arc::new(DeferredStore(store.clone())),
        Options::default(),
    )
    .unwrap();
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.write_all(b"SET k v\r\nPING\r\nGET k\r\n").unwrap();
    let r = read_replies(&mut c, 3);
    assert!(r[0].text_contains("UNKNOWN"), "{r:?}");
    assert_eq!(r[1], Value::Simple("PONG".into()));
    assert!(r[2].text_contains("UNKNOWN"), "{r:?}");
    server.stop();
}

#[test]
fn pipelined_data_commands_share_their_transaction_s_fate() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut server = Server::start(
        listener,
        Arc::new(DeferredStore(MemStore::new())),
        Options::default(),
    )
    .unwrap();
    let mut c = TcpStream::connect(server.addr()).unwrap();
    // One transaction for the three: its release fails, so must every reply.
    c.write_all(b"SET a 1\r\nSET b 2\r\nGET a\r\n").unwrap();
    let r = read_replies(&mut c, 3);
    assert!(r.iter().all(|v| v.text_contains("UNKNOWN")), "{r:?}");
    server.stop();
}

/// A [`MemStore`] backend counting its transactions.
struct Counting(MemStore, Arc<std::sync::atomic::AtomicUsize>);

impl Backend for Counting {
    fn transact(&mut self, body: &mut Body<'_>) -> Result<(), Failure> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.transact(body)
    }

    fn figures(&mut self) -> Figures {
        Figures::default()
    }
}

struct CountingStore(MemStore, Arc<std::sync::atomic::AtomicUsize>);

impl crate::Store for CountingStore {
    fn connect(&self) -> Box<dyn Backend> {
        Box::new(Counting(self.0.clone(), Arc::clone(&self.1)))
    }
}

#[test]
fn a_pipeline_of_data_commands_runs_in_few_transactions_with_every_reply_in_order() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut server = Server::start(
        listener,
        Arc::new(CountingStore(MemStore::new(), Arc::clone(&count))),
        Options::default(),
    )
    .unwrap();
    let mut c = TcpStream::connect(server.addr()).unwrap();
    let n = 200;
    let mut req = Vec::new();
    for i in 0..n {
        req.extend_from_slice(b"INCR n\r\n");
        if i == n / 2 {
            // A command that is not data splits the run; the order still holds.
            req.extend_from_slice(b"PING\r\n");
        }
    }
    c.write_all(&req).unwrap();
    let r = read_replies(&mut c, n + 1);
    let mut expect: Vec<Value> = (1..=n as i64).map(Value::Int).collect();
    expect.insert(n / 2 + 1, Value::Simple("PONG".into()));
    assert_eq!(r, expect);
    let txns = count.load(std::sync::atomic::Ordering::Relaxed);
    assert!(txns < n, "{txns} transactions for {n} pipelined commands");
    server.stop();
}

impl Value {
    fn text_contains(&self, s: &str) -> bool {
        matches!(self, Value::Error(e) if e.contains(s))
    }
}

fn read_replies(c: &mut TcpStream, n: usize) -> Vec<Value> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while out.len() < n {
        while let Some((v, used)) = decode_reply(&buf) {
            buf.drain(..used);
            out.push(v);
        }
        if out.len() >= n {
            break;
        }
        let k = c.read(&mut chunk).expect("reply");
        assert!(k > 0, "closed after {} replies", out.len());
        buf.extend_from_slice(&chunk[..k]);
    }
    out
}

#[test]
fn server_pipelines_and_closes_only_a_malformed_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut server =
        Server::start(listener, Arc::new(MemStore::new()), Options::default()).unwrap();
    let mut good = TcpStream::connect(server.addr()).unwrap();
    let mut pipeline = Vec::new();
    for i in 0..1000 {
        pipeline.extend(crate::resp::encode_request(&[b"INCR", b"n"]));
        if i % 100 == 0 {
            pipeline.extend(b"PING\r\n");
        }
    }
    good.write_all(&pipeline).unwrap();
    let replies = read_replies(&mut good, 1010);
    let ints: Vec<i64> = replies
        .iter()
        .filter_map(|v| {
            if let Value::Int(i) = v {
                Some(*i)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(ints, (1..=1000).collect::<Vec<_>>(), "answered in order");

    for garbage in [
        &b"*1\r\n$-5\r\n"[..],
        b"*2\r\n$999999999999\r\n",
        b"*1\r\n+hi\r\n",
        b"*-7x\r\n",
    ] {
        let mut bad = TcpStream::connect(server.addr()).unwrap();
        bad.write_all(garbage).unwrap();
        let r = read_replies(&mut bad, 1);
        assert!(r[0].text_contains("Protocol error"), "{r:?}");
        let mut rest = Vec::new();
        assert_eq!(
            bad.read_to_end(&mut rest).unwrap(),
            0,
            "closed after the error"
        );
    }
    good.write_all(b"GET n\r\n").unwrap();
    assert_eq!(read_replies(&mut good, 1), vec![bulk("1000")]);
    assert_eq!(
        server
            .shared()
            .malformed
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    server.stop();
}

#[test]
fn server_refuses_connections_over_its_limit() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let opts = Options {
        max_connections: 1,
        ..Options::default()
    };
    let mut server = Server::start(listener, Arc::new(MemStore::new()), opts).unwrap();
    let mut first = TcpStream::connect(server.addr()).unwrap();
    first.write_all(b"PING\r\n").unwrap();
    assert_eq!(
        read_replies(&mut first, 1),
        vec![Value::Simple("PONG".into())]
    );
    let mut second = TcpStream::connect(server.addr()).unwrap();
    assert_eq!(
        read_replies(&mut second, 1),
        vec![Value::err("ERR max number of clients reached")]
    );
    first.write_all(b"PING\r\n").unwrap();
    assert_eq!(
        read_replies(&mut first, 1),
        vec![Value::Simple("PONG".into())]
    );
    server.stop();
}

type WeakWake = std::sync::Weak<dyn Fn() + Send + Sync>;

/// Releases the test decides: pending until [`Gate::open`], announced to the server's
/// loops through [`crate::Store::on_progress`]; then released, or (with `fails`) ended as
/// an abort (a failover).
#[derive(Clone, Default)]
struct Gate {
    open: Arc<std::sync::atomic::AtomicBool>,
    wakes: Arc<parking_lot::Mutex<Vec<WeakWake>>>,
    store: MemStore,
    fails: bool,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        for w in self.wakes.lock().iter() {
            if let Some(w) = w.upgrade() {
                w();
            }
        }
    }
}

struct GateRelease(Arc<std::sync::atomic::AtomicBool>, bool);

impl GateRelease {
    fn outcome(&self) -> Result<(), Failure> {
        if self.1 {
            Err(Failure::Aborted {
                reason: "failover".into(),
                retryable: true,
            })
        } else {
            Ok(())
        }
    }
}

impl crate::Release for GateRelease {
    fn wait(self: Box<Self>) -> Result<(), Failure> {
        while !self.0.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.outcome()
    }

    fn poll(&mut self) -> Option<Result<(), Failure>> {
        self.0
            .load(std::sync::atomic::Ordering::SeqCst)
            .then(|| self.outcome())
    }
}

impl Backend for Gate {
    fn transact(&mut self, body: &mut Body<'_>) -> Result<(), Failure> {
        self.store.transact(body)
    }

    fn try_local(
        &mut self,
        _keys: &mut dyn Iterator<Item = &[u8]>,
        body: &mut Body<'_>,
    ) -> Option<Result<Option<Box<dyn crate::Release>>, Failure>> {
        Some(
            self.store
                .transact(body)
                .map(|()| Some(Box::new(GateRelease(Arc::clone(&self.open), self.fails)) as _)),
        )
    }

    fn figures(&mut self) -> Figures {
        Figures::default()
    }
}

impl crate::Store for Gate {
    fn connect(&self) -> Box<dyn Backend> {
        Box::new(self.clone())
    }

    fn on_progress(&self, wake: &crate::Wake) {
        self.wakes.lock().push(Arc::downgrade(wake));
    }
}

/// A store handing each connection a clone of one backend.
struct Each<B>(B);

impl<B: Backend + Clone + Sync + 'static> crate::Store for Each<B> {
    fn connect(&self) -> Box<dyn Backend> {
        Box::new(self.0.clone())
    }
}

/// A server of `store` on `loops` event loops, its threads named after `name`.
fn start(store: Arc<dyn crate::Store>, loops: usize, name: &str) -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let opts = Options {
        loops,
        name: name.into(),
        ..Options::default()
    };
    Server::start(listener, store, opts).unwrap()
}

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .filter(|n| n.starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

/// Threads named `prefix…` left once they have all been joined: a joined thread's
/// `/proc/self/task` entry can outlive `join` by a moment, so this waits up to 2 s for none.
fn threads_left_after_join(prefix: &str) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let n = threads_named(prefix);
        if n == 0 || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn read_timeout(c: &TcpStream) {
    c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
}

#[test]
fn many_connections_wait_for_their_releases_without_a_thread_each() {
    let gate = Gate::default();
    let mut server = start(Arc::new(gate.clone()), 2, "rgate");
    let mut clients: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        read_timeout(c);
        c.write_all(format!("SET k{i} v\r\nGET k{i}\r\n").as_bytes())
            .unwrap();
    }
    // Every transaction is committed (its writes visible to others) but none released.
    let mut probe = TcpStream::connect(server.addr()).unwrap();
    read_timeout(&probe);
    probe.write_all(b"PING\r\n").unwrap();
    assert_eq!(
        read_replies(&mut probe, 1),
        vec![Value::Simple("PONG".into())]
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while gate.store.value(b"k39").is_none() {
        assert!(std::time::Instant::now() < deadline, "commands not run");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // No reply left before its release.
    clients[0].set_nonblocking(true).unwrap();
    let mut b = [0u8; 16];
    assert!(
        matches!(clients[0].read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a reply before its release"
    );
    clients[0].set_nonblocking(false).unwrap();
    // 41 connections, and the loops, the acceptor: no thread per connection.
    let n = threads_named("rgate");
    assert!(n <= 4, "{n} server threads for 41 connections");
    gate.open();
    for (i, c) in clients.iter_mut().enumerate() {
        let r = read_replies(c, 2);
        assert_eq!(r, vec![ok(), bulk("v")], "connection {i}");
    }
    server.stop();
    assert_eq!(threads_left_after_join("rgate"), 0, "every thread joined");
}

/// A backend that cannot run anything without blocking: every command waits until
/// `go` is set (as a transaction waiting for another shard would).
#[derive(Clone, Default)]
struct Blocking {
    go: Arc<std::sync::atomic::AtomicBool>,
    store: MemStore,
}

impl Backend for Blocking {
    fn transact(&mut self, body: &mut Body<'_>) -> Result<(), Failure> {
        while !self.go.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.store.transact(body)
    }

    fn figures(&mut self) -> Figures {
        Figures::default()
    }
}

#[test]
fn a_command_that_blocks_holds_up_only_its_own_connection() {
    let store = Blocking::default();
    let mut server = start(Arc::new(Each(store.clone())), 1, "rblock");
    let mut stuck = TcpStream::connect(server.addr()).unwrap();
    read_timeout(&stuck);
    stuck.write_all(b"SET a 1\r\nPING\r\nGET a\r\n").unwrap();
    // The same loop still answers another connection.
    let mut other = TcpStream::connect(server.addr()).unwrap();
    read_timeout(&other);
    for _ in 0..3 {
        other.write_all(b"PING\r\nECHO x\r\n").unwrap();
        assert_eq!(
            read_replies(&mut other, 2),
            vec![Value::Simple("PONG".into()), bulk("x")]
        );
    }
    store.go.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        read_replies(&mut stuck, 3),
        vec![ok(), Value::Simple("PONG".into()), bulk("1")],
        "in order, the later commands after the one that blocked"
    );
    server.stop();
}

#[test]
fn replies_keep_their_order_across_commands_run_on_the_loop_and_off_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut server =
        Server::start(listener, Arc::new(MemStore::new()), Options::default()).unwrap();
    let mut c = TcpStream::connect(server.addr()).unwrap();
    read_timeout(&c);
    // SCAN and WATCH run on the helper thread; the rest on the loop.
    let mut req = Vec::new();
    for i in 0..50 {
        req.extend_from_slice(format!("SET k{i:02} {i}\r\n").as_bytes());
        if i % 10 == 9 {
            req.extend_from_slice(b"SCAN 0 COUNT 1000\r\nWATCH k00\r\nUNWATCH\r\n");
        }
    }
    req.extend_from_slice(b"GET k49\r\nDBSIZE\r\n\x00\r\n");
    c.write_all(&req).unwrap();
    let r = read_replies(&mut c, 50 + 5 * 3 + 3);
    let mut at = 0;
    for i in 0..50 {
        assert_eq!(r[at], ok(), "SET {i}");
        at += 1;
        if i % 10 == 9 {
            let Value::Array(scan) = &r[at] else {
                panic!("SCAN: {:?}", r[at]);
            };
            let Value::Array(keys) = &scan[1] else {
                panic!("{scan:?}")
            };
            assert_eq!(keys.len(), i + 1, "SCAN sees every SET before it");
            assert_eq!(r[at + 1], ok());
            assert_eq!(r[at + 2], ok());
            at += 3;
        }
    }
    assert_eq!(r[at], bulk("49"));
    assert!(
        r[at + 1].text_contains("unknown command"),
        "{:?}",
        r[at + 1]
    );
    server.stop();
}

#[test]
fn a_client_that_never_reads_holds_up_neither_others_nor_shutdown() {
    let mut server = start(Arc::new(MemStore::new()), 1, "rdeaf");
    // 1 MiB values asked for again and again, replies never read: the server's output to it
    // fills up and it stops reading from it.
    let mut deaf = TcpStream::connect(server.addr()).unwrap();
    let big = vec![b'x'; 1 << 20];
    let mut set = crate::resp::encode_request(&[b"SET", b"big", &big]);
    deaf.write_all(&set).unwrap();
    set.clear();
    for _ in 0..64 {
        set.extend_from_slice(b"GET big\r\n");
    }
    deaf.set_write_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    for _ in 0..8 {
        if deaf.write_all(&set).is_err() {
            break;
        }
    }
    let mut other = TcpStream::connect(server.addr()).unwrap();
    read_timeout(&other);
    for i in 0..20 {
        other
            .write_all(format!("SET k{i} v\r\nGET k{i}\r\n").as_bytes())
            .unwrap();
        assert_eq!(read_replies(&mut other, 2), vec![ok(), bulk("v")]);
    }
    let t = std::time::Instant::now();
    server.stop();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "stopped in {:?}",
        t.elapsed()
    );
    assert_eq!(threads_left_after_join("rdeaf"), 0, "every thread joined");
}

#[test]
fn a_client_gone_while_its_command_blocks_leaves_nothing_behind() {
    let store = Blocking::default();
    let mut server = start(Arc::new(Each(store.clone())), 1, "rgone");
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.write_all(b"SET a 1\r\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Its helper thread runs the command, which blocks.
    while threads_named("rgone") < 3 {
        assert!(std::time::Instant::now() < deadline, "no helper thread");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(c);
    // Others are still served, and once the command ends its helper goes too.
    let mut other = TcpStream::connect(server.addr()).unwrap();
    read_timeout(&other);
    other.write_all(b"PING\r\n").unwrap();
    assert_eq!(
        read_replies(&mut other, 1),
        vec![Value::Simple("PONG".into())]
    );
    store.go.store(true, std::sync::atomic::Ordering::SeqCst);
    while threads_named("rgone") > 2
        || server
            .shared()
            .connected
            .load(std::sync::atomic::Ordering::SeqCst)
            > 1
    {
        assert!(std::time::Instant::now() < deadline, "the helper stayed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(
        store.store.value(b"a"),
        Some(b"1".to_vec()),
        "it ran to its end"
    );
    server.stop();
    assert_eq!(threads_left_after_join("rgone"), 0);
}

#[test]
fn a_request_trickled_byte_by_byte_is_answered_once_whole() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut server =
        Server::start(listener, Arc::new(MemStore::new()), Options::default()).unwrap();
    let mut c = TcpStream::connect(server.addr()).unwrap();
    read_timeout(&c);
    let req = [
        crate::resp::encode_request(&[b"SET", b"slow", b"value"]),
        crate::resp::encode_request(&[b"GET", b"slow"]),
    ]
    .concat();
    for b in &req {
        c.write_all(std::slice::from_ref(b)).unwrap();
        c.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    assert_eq!(read_replies(&mut c, 2), vec![ok(), bulk("value")]);
    server.stop();
}

/// A [`MemStore`] that commits on the loop and counts its transactions.
#[derive(Clone, Default)]
struct CountingLocal(MemStore, Arc<std::sync::atomic::AtomicUsize>);

impl Backend for CountingLocal {
    fn transact(&mut self, body: &mut Body<'_>) -> Result<(), Failure> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.transact(body)
    }

    fn try_local(
        &mut self,
        _keys: &mut dyn Iterator<Item = &[u8]>,
        body: &mut Body<'_>,
    ) -> Option<Result<Option<Box<dyn crate::Release>>, Failure>> {
        Some(self.transact(body).map(|()| None))
    }

    fn figures(&mut self) -> Figures {
        Figures::default()
    }
}

#[test]
fn unpipelined_commands_of_many_connections_share_transactions_and_stay_serial() {
    let store = CountingLocal::default();
    let mut server = start(Arc::new(Each(store.clone())), 1, "rcount");
    let mut conns: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    for c in &conns {
        read_timeout(c);
    }
    let mut seen = Vec::new();
    for round in 0..50 {
        for (i, c) in conns.iter_mut().enumerate() {
            // One connection scans (which cannot share a transaction) every other round.
            let req: &[u8] = if i == 0 && round % 2 == 0 {
                b"SCAN 0 MATCH n COUNT 100\r\n"
            } else {
                b"INCR n\r\n"
            };
            c.write_all(req).unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            match read_replies(c, 1).pop() {
                Some(Value::Int(n)) => seen.push(n),
                Some(Value::Array(_)) if i == 0 => {}
                other => panic!("connection {i}: {other:?}"),
            }
        }
    }
    seen.sort_unstable();
    let n = seen.len() as i64;
    assert_eq!(
        seen,
        (1..=n).collect::<Vec<i64>>(),
        "every INCR saw the ones before it"
    );
    assert_eq!(store.0.value(b"n"), Some(n.to_string().into_bytes()));
    let txns = store.1.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        txns < seen.len(),
        "{txns} transactions for {} INCRs",
        seen.len()
    );
    server.stop();
}

// ---------------------------------------------------------------- outcomes, backlog, panics

/// A backend that cannot run on the loop (as a site that forwards to the leaders) and whose
/// first commit of several commands is applied but answered `Unknown` (the verdict was
/// lost, as `ClientError::Unknown` → `Failure::Unknown` in node/src/redis.rs).
#[derive(Clone, Default)]
struct LostVerdict {
    store: MemStore,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl Backend for LostVerdict {
    fn transact(&mut self, body: &mut Body<'_>) -> Result<(), Failure> {
        self.store.transact(body)?;
        if !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(Failure::Unknown(
                "no verdict after the commit was sent".into(),
            ));
        }
        Ok(())
    }

    fn figures(&mut self) -> Figures {
        Figures::default()
    }
}

/// [`LostVerdict`] on the loop: its first local commit of several commands is applied but
/// answered `Unknown`.
#[derive(Clone, Default)]
struct LostLocalVerdict(LostVerdict);

impl Backend for LostLocalVerdict {
    fn transact(&mut self, body: &mut Body<'_>) -> Result<(), Failure> {
        self.0.store.transact(body)
    }

    fn try_local(
        &mut self,
        _keys: &mut dyn Iterator<Item = &[u8]>,
        body: &mut Body<'_>,
    ) -> Option<Result<Option<Box<dyn crate::Release>>, Failure>> {
        Some(self.0.transact(body).map(|()| None))
    }

    fn figures(&mut self) -> Figures {
        Figures::default()
    }
}

/// A group of commands answered `Unknown` (applied, its verdict lost) is answered so and
/// never run again, whether it ran on a helper (`LostVerdict`) or on the loop; the
/// connection goes on.
#[test]
fn a_group_whose_outcome_is_unknown_is_not_run_again() {
    let helper = LostVerdict::default();
    let on_loop = LostLocalVerdict::default();
    let cases: [(Arc<dyn crate::Store>, &MemStore, &str); 2] = [
        (Arc::new(Each(helper.clone())), &helper.store, "rlost"),
        (Arc::new(Each(on_loop.clone())), &on_loop.0.store, "rlostl"),
    ];
    for (store, data, name) in cases {
        let mut server = start(store, 1, name);
        let mut c = TcpStream::connect(server.addr()).unwrap();
        read_timeout(&c);
        c.write_all(b"INCR n\r\nINCR n\r\n").unwrap();
        let r = read_replies(&mut c, 2);
        // Two INCRs sent: n is 2, and no reply may claim a value above it.
        assert_eq!(
            data.value(b"n"),
            Some(b"2".to_vec()),
            "{name}: replies {r:?}: the group was applied, then run again"
        );
        assert!(
            r.iter().all(|v| v.text_contains("UNKNOWN")),
            "{name}: {r:?}"
        );
        c.write_all(b"INCR n\r\n").unwrap();
        assert_eq!(read_replies(&mut c, 1), vec![Value::Int(3)], "{name}");
        server.stop();
    }
}

#[test]
fn a_pipeline_held_back_by_its_backlog_resumes_once_the_backlog_is_gone() {
    let gate = Gate {
        fails: true,
        ..Gate::default()
    };
    let big = vec![b'x'; 1 << 20];
    gate.store
        .clone()
        .transact(&mut |tx| tx.put(b"big", &big))
        .unwrap();
    let mut server = start(Arc::new(gate.clone()), 1, "rback");
    let mut c = TcpStream::connect(server.addr()).unwrap();
    read_timeout(&c);
    // 64 GETs run as one transaction whose replies (64 MiB, not released) exceed the
    // backlog limit: the GET and PING after them wait.
    let mut req = Vec::new();
    for _ in 0..65 {
        req.extend_from_slice(b"GET big\r\n");
    }
    req.extend_from_slice(b"PING\r\n");
    c.write_all(&req).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server
        .shared()
        .loop_txns
        .load(std::sync::atomic::Ordering::SeqCst)
        < 1
    {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The release fails: the 64 replies are 64 short errors, written at once; nothing is
    // backlogged any more and the rest of the pipeline can run.
    let t = std::time::Instant::now();
    gate.open();
    let r = read_replies(&mut c, 66);
    let took = t.elapsed();
    assert!(
        r[..65].iter().all(|v| v.text_contains("ABORTED")),
        "{:?}",
        &r[60..]
    );
    assert_eq!(r[65], Value::Simple("PONG".into()));
    assert!(
        took < std::time::Duration::from_millis(150),
        "the rest of the pipeline waited {took:?} (the loop's 200 ms tick)"
    );
    server.stop();
}

/// A backend that panics on the key `boom` (a bug in a backend, or an unexpected result).
#[derive(Clone, Default)]
struct Panicky(MemStore);

impl Backend for Panicky {
    fn transact(&mut self, body: &mut Body<'_>) -> Result<(), Failure> {
        struct Check<'a>(&'a mut dyn crate::Txn);
        impl crate::Txn for Check<'_> {
            fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Failure> {
                assert_ne!(key, b"boom", "backend bug");
                self.0.get(key)
            }
            fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Failure> {
                self.0.put(key, value)
            }
            fn delete(&mut self, key: &[u8]) -> Result<(), Failure> {
                self.0.delete(key)
            }
            fn add(&mut self, key: &[u8], delta: i64) -> Result<i64, Failure> {
                self.0.add(key, delta)
            }
            fn append(&mut self, key: &[u8], value: &[u8]) -> Result<i64, Failure> {
                self.0.append(key, value)
            }
            fn scan(&mut self, a: Option<&[u8]>, l: usize) -> Result<Vec<Vec<u8>>, Failure> {
                self.0.scan(a, l)
            }
            fn version(&mut self, key: &[u8]) -> Result<crate::backend::KeyVersion, Failure> {
                self.0.version(key)
            }
        }
        self.0.transact(&mut |tx| body(&mut Check(tx)))
    }

    fn figures(&mut self) -> Figures {
        Figures::default()
    }
}

#[test]
fn a_connection_whose_helper_panicked_is_closed_not_leaked() {
    let mut server = start(Arc::new(Each(Panicky::default())), 1, "rpanic");
    let mut c = TcpStream::connect(server.addr()).unwrap();
    read_timeout(&c);
    c.write_all(b"GET boom\r\n").unwrap();
    // The client gives up and goes.
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(c);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while server
        .shared()
        .connected
        .load(std::sync::atomic::Ordering::SeqCst)
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the connection stays served forever (no state, no helper)"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.stop();
}

/// With a token configured, a client that has not authenticated is held to small requests
/// (as Redis: 10 arguments, 16 KiB strings), so it cannot make the server buffer large ones;
/// once authenticated, the configured limits apply.
#[test]
fn an_unauthenticated_client_cannot_send_large_requests() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let opts = Options {
        loops: 1,
        name: "rauth".into(),
        token: Some(b"secret".to_vec()),
        ..Options::default()
    };
    let mut server = Server::start(listener, Arc::new(Each(MemStore::default())), opts).unwrap();
    let big = format!("SET k {}\r\n", "x".repeat(20_000));
    // An inline line is refused once it passes 16 KiB without its end: exactly one byte more
    // is sent (all of it read by the server, so its close carries no reset).
    let long_line = format!("SET k {}", "x".repeat(16 * 1024 + 1 - 6));
    let big_bulk = {
        let mut r = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20000\r\n".to_vec();
        r.extend(std::iter::repeat_n(b'x', 20_000));
        r.extend_from_slice(b"\r\n");
        r
    };
    let many = format!("*11\r\n{}", "$1\r\na\r\n".repeat(11));
    // The bulk string's header alone is refused: only its first bytes are sent.
    for (request, error) in [
        (
            long_line.as_bytes(),
            "Protocol error: too big inline request",
        ),
        (
            &big_bulk[..200],
            "Protocol error: unauthenticated bulk length",
        ),
        (
            many.as_bytes(),
            "Protocol error: unauthenticated multibulk length",
        ),
    ] {
        let mut c = TcpStream::connect(server.addr()).unwrap();
        read_timeout(&c);
        c.write_all(request).unwrap();
        let r = read_replies(&mut c, 1);
        assert!(r[0].text_contains(error), "{r:?}");
        // The connection is closed after the error.
        let mut rest = Vec::new();
        assert_eq!(c.read_to_end(&mut rest).unwrap_or(0), 0, "{rest:?}");
    }
    // Authenticated, the same requests are served.
    let mut c = TcpStream::connect(server.addr()).unwrap();
    read_timeout(&c);
    c.write_all(b"AUTH secret\r\n").unwrap();
    assert_eq!(read_replies(&mut c, 1), vec![Value::Simple("OK".into())]);
    c.write_all(&big_bulk).unwrap();
    assert_eq!(read_replies(&mut c, 1), vec![Value::Simple("OK".into())]);
    c.write_all(big.as_bytes()).unwrap();
    assert_eq!(read_replies(&mut c, 1), vec![Value::Simple("OK".into())]);
    c.write_all(many.as_bytes()).unwrap();
    let r = read_replies(&mut c, 1);
    assert!(r[0].text_contains("unknown command"), "{r:?}");
    server.stop();
}
