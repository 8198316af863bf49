//! The connection state machine: authentication, protocol version, client name, MULTI
//! queueing and WATCH, and the execution of each command as one transaction of a [`Backend`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::backend::{Backend, Failure, KeyVersion, Release, Txn};
use crate::command::{self, Command, Data, ParseError, SetCond};
use crate::glob;
use crate::resp::Value;

/// The version this front end reports as `redis_version` (what it answers like).
pub const REDIS_VERSION: &str = "7.2.0";

/// Most keys one SCAN examines, whatever its COUNT.
pub const MAX_SCAN_COUNT: usize = 10_000;

/// SCAN cursors kept at once; older ones are forgotten (`ERR invalid cursor`).
const MAX_CURSORS: usize = 100_000;

/// `NOAUTH Authentication required.`
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// `WRONGPASS ...`.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// `EXECABORT ...`.
pub const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// What every connection of one server shares.
#[derive(Debug)]
pub struct Shared {
    /// The password clients must give (`None`: no authentication).
    pub token: Option<Vec<u8>>,
    /// The port INFO reports.
    pub port: u16,
    /// SCAN positions by cursor number.
    pub cursors: Cursors,
    /// Connections open now.
    pub connected: AtomicU64,
    /// Connections accepted so far.
    pub accepted: AtomicU64,
    /// Connections refused (over the limit).
    pub rejected: AtomicU64,
    /// Commands answered so far.
    pub commands: AtomicU64,
    /// Requests that were not RESP.
    pub malformed: AtomicU64,
    /// Transactions committed on an event loop (keys all served here).
    pub loop_txns: AtomicU64,
    /// Runs of requests handed to a connection's helper thread (they might block).
    pub helper_jobs: AtomicU64,
    next_id: AtomicU64,
    started: Instant,
}

impl Shared {
    /// Shared state of a server requiring `token` (if any), reporting `port`.
    pub fn new(token: Option<Vec<u8>>, port: u16) -> Self {
        Shared {
            token,
            port,
            cursors: Cursors::default(),
            connected: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            loop_txns: AtomicU64::new(0),
            helper_jobs: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
        }
    }
}

/// Keys by cursor number, and cursor numbers oldest first.
type CursorMap = (HashMap<u64, Vec<u8>>, VecDeque<u64>);

/// SCAN positions: a cursor number stands for the last key a SCAN returned (its position
/// in the key order of every shard merged). Cursors are numbers because clients parse them
/// as such; this registry maps them to keys, forgetting the oldest beyond a bound.
#[derive(Debug)]
pub struct Cursors {
    inner: Mutex<CursorMap>,
    next: AtomicU64,
}

impl Default for Cursors {
    fn default() -> Self {
        // Start somewhere unlikely to match a cursor an earlier process handed out.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Cursors {
            inner: Mutex::default(),
            next: AtomicU64::new((seed % (1 << 40)) << 12 | 1),
        }
    }
}

impl Cursors {
    /// A new cursor standing for `key`.
    pub fn register(&self, key: Vec<u8>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed).max(1);
        let mut g = self.inner.lock();
        let (map, order) = &mut *g;
        map.insert(id, key);
        order.push_back(id);
        while order.len() > MAX_CURSORS {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        id
    }

    /// The key cursor `id` stands for.
    pub fn get(&self, id: u64) -> Option<Vec<u8>> {
        self.inner.lock().0.get(&id).cloned()
    }
}

/// One request, parsed in its connection's state by [`Connection::request`].
#[derive(Debug)]
pub enum Request {
    /// A well-formed data command on an authenticated connection outside MULTI.
    Data(Data),
    /// Anything else: the command or why it is not one.
    Other {
        /// The parsed command, or the parse error.
        parsed: Result<Command, ParseError>,
        /// Whether it names a command allowed before authentication (AUTH, HELLO, QUIT).
        may_authenticate: bool,
    },
}

/// Whether the connection goes on after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next request.
    Continue,
    /// Send the reply, then close (QUIT).
    Close,
}

/// A command queued by MULTI, or the error it will answer at EXEC.
type Queued = Result<Command, String>;

/// One client connection's state.
pub struct Connection {
    id: u64,
    proto: u8,
    authed: bool,
    name: Option<Vec<u8>>,
    /// Inside MULTI: the queue, and whether queueing failed (EXEC answers EXECABORT).
    multi: Option<(Vec<Queued>, bool)>,
    /// WATCHed keys and their versions at WATCH ([`Txn::version`]).
    watched: Vec<(Vec<u8>, KeyVersion)>,
    /// The release the last reply waits for (see [`Connection::take_release`]).
    release: Option<Box<dyn Release>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("proto", &self.proto)
            .field("authed", &self.authed)
            .field("in_multi", &self.multi.is_some())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A new connection of `shared`'s server (authenticated if no token is required).
    pub fn new(shared: &Shared) -> Self {
        Connection {
            id: shared.next_id.fetch_add(1, Ordering::Relaxed),
            proto: 2,
            authed: shared.token.is_none(),
            name: None,
            multi: None,
            watched: Vec::new(),
            release: None,
        }
    }

    /// The release the reply of the last [`Connection::handle`] waits for, if its transaction
    /// was committed and not yet released: the reply must not be sent before
    /// [`Release::wait`] succeeds (on failure, send [`Failure::reply_text`] instead).
    pub fn take_release(&mut self) -> Option<Box<dyn Release>> {
        self.release.take()
    }

    /// Answers one request and waits for its release: the reply to send.
    pub fn answer(
        &mut self,
        args: &[Vec<u8>],
        shared: &Shared,
        backend: &mut dyn Backend,
    ) -> (Value, Flow) {
        let (reply, flow) = self.handle(args, shared, backend);
        match self.take_release().map(|r| r.wait()) {
            Some(Err(f)) => (Value::err(f.reply_text()), flow),
            _ => (reply, flow),
        }
    }

    /// Whether the client has authenticated (always, without a token).
    pub fn authenticated(&self) -> bool {
        self.authed
    }

    /// The protocol version replies are encoded for (2 or 3).
    pub fn proto(&self) -> u8 {
        self.proto
    }

    /// Whether the connection is inside MULTI.
    pub fn in_multi(&self) -> bool {
        self.multi.is_some()
    }

    /// Answers one request; the reply waits for [`Connection::take_release`].
    pub fn handle(
        &mut self,
        args: &[Vec<u8>],
        shared: &Shared,
        backend: &mut dyn Backend,
    ) -> (Value, Flow) {
        let request = self.request(args.to_vec());
        self.handle_request(request, shared, backend)
    }

    /// Parses one request (taking its arguments) in the connection's current state: a
    /// [`Request::Data`] may run in one transaction with its pipelined neighbours (see
    /// [`Connection::group`]).
    pub fn request(&self, args: Vec<Vec<u8>>) -> Request {
        let may_authenticate = args.first().is_some_and(|n| {
            [&b"auth"[..], b"hello", b"quit"]
                .iter()
                .any(|c| n.eq_ignore_ascii_case(c))
        });
        match command::parse(args) {
            Ok(Command::Data(d)) if self.authed && self.multi.is_none() => Request::Data(d),
            parsed => Request::Other {
                parsed,
                may_authenticate,
            },
        }
    }

    /// Answers one parsed request; the reply waits for [`Connection::take_release`].
    pub fn handle_request(
        &mut self,
        request: Request,
        shared: &Shared,
        backend: &mut dyn Backend,
    ) -> (Value, Flow) {
        shared.commands.fetch_add(1, Ordering::Relaxed);
        self.release = None;
        let (parsed, may_authenticate) = match request {
            Request::Data(d) => (Ok(Command::Data(d)), false),
            Request::Other {
                parsed,
                may_authenticate,
            } => (parsed, may_authenticate),
        };
        if let Err(ParseError::Rejected(e)) = &parsed {
            if let Some((_, failed)) = &mut self.multi {
                *failed = true;
            }
            return (Value::err(e.clone()), Flow::Continue);
        }
        if !self.authed && !may_authenticate {
            return (Value::err(NOAUTH), Flow::Continue);
        }
        if let Some((queue, _)) = &mut self.multi {
            match &parsed {
                Ok(Command::Multi) => {
                    return (
                        Value::err("ERR MULTI calls can not be nested"),
                        Flow::Continue,
                    );
                }
                Ok(Command::Watch(_)) => {
                    return (
                        Value::err("ERR WATCH inside MULTI is not allowed"),
                        Flow::Continue,
                    );
                }
                Ok(Command::Exec | Command::Discard | Command::Quit) => {}
                Ok(c) => {
                    queue.push(Ok(c.clone()));
                    return (Value::Simple("QUEUED".into()), Flow::Continue);
                }
                Err(e) => {
                    queue.push(Err(e.text().to_string()));
                    return (Value::Simple("QUEUED".into()), Flow::Continue);
                }
            }
        }
        match parsed {
            Err(e) => (Value::err(e.text()), Flow::Continue),
            Ok(Command::Quit) => (Value::ok(), Flow::Close),
            Ok(Command::Data(d)) => (self.single(&d, shared, backend), Flow::Continue),
            Ok(Command::Multi) => {
                self.multi = Some((Vec::new(), false));
                (Value::ok(), Flow::Continue)
            }
            Ok(Command::Discard) => match self.multi.take() {
                Some(_) => {
                    self.watched.clear();
                    (Value::ok(), Flow::Continue)
                }
                None => (Value::err("ERR DISCARD without MULTI"), Flow::Continue),
            },
            Ok(Command::Exec) => (self.exec(shared, backend), Flow::Continue),
            Ok(Command::Watch(keys)) => (self.watch(keys, backend), Flow::Continue),
            Ok(Command::Unwatch) => {
                self.watched.clear();
                (Value::ok(), Flow::Continue)
            }
            Ok(other) => (self.meta(other, shared, backend), Flow::Continue),
        }
    }

    /// Runs pipelined data commands as one transaction: the same as running them one
    /// after another with nothing in between, which is one serial order of them as
    /// separate transactions. Their replies share the transaction's release
    /// ([`Connection::take_release`]). An unknown outcome (it may have been applied) is
    /// every command's reply: nothing of it may run again. On `Err` nothing of them was
    /// applied (e.g. the transaction would be too large): answer them one by one instead.
    pub fn group(
        &mut self,
        ds: &[&Data],
        shared: &Shared,
        backend: &mut dyn Backend,
    ) -> Result<Vec<Value>, Failure> {
        self.release = None;
        let mut replies = Vec::with_capacity(ds.len());
        let r = backend.transact_pipelined(&mut |tx| {
            replies.clear();
            for d in ds {
                replies.push(run(tx, d, &shared.cursors)?);
            }
            Ok(())
        });
        let release = unknown_answered(r, &mut replies, ds.len())?;
        shared
            .commands
            .fetch_add(ds.len() as u64, Ordering::Relaxed);
        self.release = release;
        Ok(replies)
    }

    /// [`Connection::group`] through [`Backend::try_local`]: `None` if it cannot run without
    /// blocking (a key served elsewhere, SCAN), and nothing ran. An unknown outcome is
    /// answered as in [`Connection::group`].
    pub fn group_local(
        &mut self,
        ds: &[&Data],
        shared: &Shared,
        backend: &mut dyn Backend,
    ) -> Option<Result<Vec<Value>, Failure>> {
        self.release = None;
        let mut keys = Vec::new();
        for d in ds {
            keys.extend(d.keys()?);
        }
        let mut replies = Vec::with_capacity(ds.len());
        let r = backend.try_local(&mut keys.into_iter(), &mut |tx| {
            replies.clear();
            for d in ds {
                replies.push(run(tx, d, &shared.cursors)?);
            }
            Ok(())
        })?;
        Some(unknown_answered(r, &mut replies, ds.len()).map(|release| {
            shared
                .commands
                .fetch_add(ds.len() as u64, Ordering::Relaxed);
            self.release = release;
            replies
        }))
    }

    /// One data command as its own transaction.
    fn single(&mut self, d: &Data, shared: &Shared, backend: &mut dyn Backend) -> Value {
        let mut reply = Value::Nil;
        let r = backend.transact_pipelined(&mut |tx| {
            reply = run(tx, d, &shared.cursors)?;
            Ok(())
        });
        match r {
            Ok(release) => {
                self.release = release;
                reply
            }
            Err(f) => Value::err(f.reply_text()),
        }
    }

    /// WATCH: remembers each key's version now (read in a transaction).
    fn watch(&mut self, keys: Vec<Vec<u8>>, backend: &mut dyn Backend) -> Value {
        let mut seen = Vec::new();
        let r = backend.transact(&mut |tx| {
            seen.clear();
            for k in &keys {
                seen.push((k.clone(), tx.version(k)?));
            }
            Ok(())
        });
        match r {
            Ok(()) => {
                for (k, v) in seen {
                    if !self.watched.iter().any(|(w, _)| *w == k) {
                        self.watched.push((k, v));
                    }
                }
                Value::ok()
            }
            Err(f) => Value::err(f.reply_text()),
        }
    }

    /// EXEC: the queue as one transaction, unless a WATCHed key changed.
    fn exec(&mut self, shared: &Shared, backend: &mut dyn Backend) -> Value {
        let Some((queue, failed)) = self.multi.take() else {
            return Value::err("ERR EXEC without MULTI");
        };
        let watched = std::mem::take(&mut self.watched);
        if failed {
            return Value::err(EXECABORT);
        }
        let data: Vec<&Data> = queue
            .iter()
            .filter_map(|q| match q {
                Ok(Command::Data(d)) => Some(d),
                _ => None,
            })
            .collect();
        let mut replies = Vec::with_capacity(data.len());
        let r = backend.transact_pipelined(&mut |tx| {
            // Any write since WATCH, even of the same value, changed the version.
            for (k, v) in &watched {
                if tx.version(k)? != *v {
                    return Err(Failure::Cancelled);
                }
            }
            replies.clear();
            for d in &data {
                replies.push(run(tx, d, &shared.cursors)?);
            }
            Ok(())
        });
        match r {
            Ok(release) => self.release = release,
            Err(Failure::Cancelled) => return Value::NilArray,
            Err(f) => return Value::err(f.reply_text()),
        }
        let mut data_replies = replies.into_iter();
        let mut out = Vec::with_capacity(queue.len());
        for q in queue {
            out.push(match q {
                Err(e) => Value::err(e),
                Ok(Command::Data(_)) => data_replies.next().unwrap_or(Value::Nil),
                Ok(other) => self.meta(other, shared, backend),
            });
        }
        Value::Array(out)
    }

    /// Commands that do not touch keys.
    fn meta(&mut self, c: Command, shared: &Shared, backend: &mut dyn Backend) -> Value {
        match c {
            Command::Ping(None) => Value::Simple("PONG".into()),
            Command::Ping(Some(m)) | Command::Echo(m) => Value::Bulk(m),
            Command::Info(sections) => Value::Verbatim(info(&sections, shared, backend)),
            Command::ConfigGet(params) => config_get(&params),
            Command::ConfigOther(sub) => Value::err(format!(
                "ERR CONFIG {} is not supported by mako-rs (its configuration is its YAML files)",
                sub.to_ascii_uppercase()
            )),
            Command::Select(0) => Value::ok(),
            Command::Select(_) => Value::err("ERR DB index is out of range"),
            Command::Command(sub, args) => command_info(sub.as_deref(), &args),
            Command::ClientSetName(n) => self.set_name(n),
            Command::ClientGetName => self.name.clone().map_or(Value::Nil, Value::Bulk),
            Command::ClientId => Value::Int(self.id as i64),
            Command::ClientOk => Value::ok(),
            Command::Hello {
                proto,
                auth,
                setname,
            } => self.hello(proto, auth, setname, shared, backend),
            Command::Auth(user, pass) => self.auth(user.as_deref(), &pass, shared),
            // Handled by `handle`; inside EXEC they were never queued.
            Command::Quit
            | Command::Multi
            | Command::Exec
            | Command::Discard
            | Command::Watch(_)
            | Command::Unwatch
            | Command::Data(_) => Value::ok(),
        }
    }

    fn set_name(&mut self, n: Vec<u8>) -> Value {
        if n.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
            return Value::err(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            );
        }
        self.name = (!n.is_empty()).then_some(n);
        Value::ok()
    }

    /// Checks a user and password; `Err` is the error reply.
    fn check(&mut self, user: Option<&[u8]>, pass: &[u8], shared: &Shared) -> Result<(), Value> {
        let Some(token) = &shared.token else {
            return match user {
                // The default user has no password: any password is accepted.
                Some(b"default") => Ok(()),
                Some(_) => Err(Value::err(WRONGPASS)),
                None => Err(Value::err(
                    "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                )),
            };
        };
        if user.is_some_and(|u| u != b"default") || !same(token, pass) {
            tracing::debug!("redis client: wrong password");
            return Err(Value::err(WRONGPASS));
        }
        self.authed = true;
        Ok(())
    }

    fn auth(&mut self, user: Option<&[u8]>, pass: &[u8], shared: &Shared) -> Value {
        match self.check(user, pass, shared) {
            Ok(()) => Value::ok(),
            Err(e) => e,
        }
    }

    fn hello(
        &mut self,
        proto: Option<i64>,
        auth: Option<(Vec<u8>, Vec<u8>)>,
        setname: Option<Vec<u8>>,
        shared: &Shared,
        backend: &mut dyn Backend,
    ) -> Value {
        if let Some(p) = proto
            && !(2..=3).contains(&p)
        {
            return Value::err("NOPROTO unsupported protocol version");
        }
        if let Some((user, pass)) = &auth
            && let Err(e) = self.check(Some(user), pass, shared)
        {
            return e;
        }
        if !self.authed {
            return Value::err(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        if let Some(n) = setname {
            let r = self.set_name(n);
            if r.is_error() {
                return r;
            }
        }
        if let Some(p) = proto {
            self.proto = p as u8;
        }
        let leader = backend.figures().leader;
        let s = |t: &str| Value::bulk(t);
        Value::Map(vec![
            (s("server"), s("redis")),
            (s("version"), s(REDIS_VERSION)),
            (s("proto"), Value::Int(i64::from(self.proto))),
            (s("id"), Value::Int(self.id as i64)),
            (s("mode"), s("standalone")),
            (s("role"), s(if leader { "master" } else { "replica" })),
            (s("modules"), Value::Array(Vec::new())),
        ])
    }
}

/// Constant-time comparison of secrets.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs a data command in `tx`. A refused operation is an error reply (the transaction
/// goes on); an abort ends the transaction.
pub fn run(tx: &mut dyn Txn, d: &Data, cursors: &Cursors) -> Result<Value, Failure> {
    let refused = |r: Result<Value, Failure>| match r {
        Err(Failure::Refused(m)) => Ok(Value::err(format!("ERR {m}"))),
        other => other,
    };
    let bulk = |v: Option<Vec<u8>>| v.map_or(Value::Nil, Value::Bulk);
    refused((|| {
        Ok(match d {
            Data::Get(k) => bulk(tx.get(k)?),
            Data::Set {
                key,
                value,
                cond: SetCond::Always,
                get: false,
            } => {
                tx.put(key, value)?;
                Value::ok()
            }
            Data::Set {
                key,
                value,
                cond,
                get,
            } => {
                let old = tx.get(key)?;
                let skip = match cond {
                    SetCond::Always => false,
                    SetCond::Nx => old.is_some(),
                    SetCond::Xx => old.is_none(),
                };
                if !skip {
                    tx.put(key, value)?;
                }
                match (get, skip) {
                    (true, _) => bulk(old),
                    (false, true) => Value::Nil,
                    (false, false) => Value::ok(),
                }
            }
            Data::Del(keys) => {
                let mut n = 0;
                for k in keys {
                    if tx.get(k)?.is_some() {
                        tx.delete(k)?;
                        n += 1;
                    }
                }
                Value::Int(n)
            }
            Data::Exists(keys) => {
                let mut n = 0;
                for k in keys {
                    if tx.get(k)?.is_some() {
                        n += 1;
                    }
                }
                Value::Int(n)
            }
            Data::MGet(keys) => {
                let mut out = Vec::with_capacity(keys.len());
                for k in keys {
                    out.push(bulk(tx.get(k)?));
                }
                Value::Array(out)
            }
            Data::MSet(pairs) => {
                for (k, v) in pairs {
                    tx.put(k, v)?;
                }
                Value::ok()
            }
            Data::IncrBy(k, by) => Value::Int(tx.add(k, *by)?),
            Data::Append(k, v) => Value::Int(tx.append(k, v)?),
            Data::Strlen(k) => Value::Int(tx.get(k)?.map_or(0, |v| v.len() as i64)),
            Data::GetSet(k, v) => {
                let old = tx.get(k)?;
                tx.put(k, v)?;
                bulk(old)
            }
            Data::GetDel(k) => {
                let old = tx.get(k)?;
                if old.is_some() {
                    tx.delete(k)?;
                }
                bulk(old)
            }
            Data::Scan {
                cursor,
                pattern,
                count,
            } => {
                let after = match cursor {
                    0 => None,
                    c => match cursors.get(*c) {
                        Some(k) => Some(k),
                        None => return Ok(Value::err("ERR invalid cursor")),
                    },
                };
                let count = (*count).min(MAX_SCAN_COUNT);
                let keys = tx.scan(after.as_deref(), count)?;
                let next = match keys.last() {
                    Some(last) if keys.len() >= count => cursors.register(last.clone()),
                    _ => 0,
                };
                let keys = keys
                    .into_iter()
                    .filter(|k| pattern.as_ref().is_none_or(|p| glob::matches(p, k)))
                    .map(Value::Bulk)
                    .collect();
                Value::Array(vec![Value::bulk(next.to_string()), Value::Array(keys)])
            }
        })
    })())
}

/// The parameters CONFIG GET answers (what redis-benchmark and common tools ask).
const CONFIG: &[(&str, &str)] = &[
    ("save", ""),
    ("appendonly", "no"),
    ("databases", "1"),
    ("maxmemory", "0"),
    ("maxmemory-policy", "noeviction"),
    ("timeout", "0"),
    ("cluster-enabled", "no"),
];

fn config_get(params: &[Vec<u8>]) -> Value {
    let mut pairs = Vec::new();
    for p in params {
        let p = p.to_ascii_lowercase();
        for (name, value) in CONFIG {
            if glob::matches(&p, name.as_bytes()) && !pairs.iter().any(|(n, _)| n == name) {
                pairs.push((*name, *value));
            }
        }
    }
    Value::Map(
        pairs
            .into_iter()
            .map(|(n, v)| (Value::bulk(n), Value::bulk(v)))
            .collect(),
    )
}

fn command_info(sub: Option<&str>, args: &[Vec<u8>]) -> Value {
    let entry = |name: &str, arity: i32| {
        let (flags, (first, last, step)) = command::describe(name);
        Value::Array(vec![
            Value::bulk(name),
            Value::Int(i64::from(arity)),
            Value::Array(flags.iter().map(|f| Value::Simple((*f).into())).collect()),
            Value::Int(first),
            Value::Int(last),
            Value::Int(step),
        ])
    };
    let lower = sub.map(str::to_ascii_lowercase);
    match lower.as_deref() {
        None => Value::Array(command::TABLE.iter().map(|(n, a)| entry(n, *a)).collect()),
        Some("count") if !args.is_empty() => {
            Value::err("ERR wrong number of arguments for 'command|count' command")
        }
        Some("count") => Value::Int(command::TABLE.len() as i64),
        Some("list") => Value::Array(command::TABLE.iter().map(|(n, _)| Value::bulk(n)).collect()),
        Some("docs") => Value::Map(Vec::new()),
        Some("info") => Value::Array(
            args.iter()
                .map(|a| {
                    let a = String::from_utf8_lossy(a).to_ascii_lowercase();
                    command::TABLE
                        .iter()
                        .find(|(n, _)| *n == a)
                        .map_or(Value::Nil, |(n, ar)| entry(n, *ar))
                })
                .collect(),
        ),
        Some(_) => Value::err(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            sub.unwrap_or_default()
        )),
    }
}

fn info(sections: &[String], shared: &Shared, backend: &mut dyn Backend) -> String {
    let all = sections.is_empty()
        || sections
            .iter()
            .any(|s| matches!(s.as_str(), "all" | "default" | "everything"));
    let want = |s: &str| all || sections.iter().any(|x| x == s);
    let f = backend.figures();
    let uptime = shared.started.elapsed().as_secs();
    let mut out = String::new();
    let mut section = |title: &str, lines: Vec<(String, String)>| {
        if !want(&title.to_ascii_lowercase()) {
            return;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        out.push_str(&format!("# {title}\r\n"));
        for (k, v) in lines {
            out.push_str(&format!("{k}:{v}\r\n"));
        }
    };
    let kv = |k: &str, v: String| (k.to_string(), v);
    let mut server = vec![
        kv("redis_version", REDIS_VERSION.into()),
        kv("mako_version", env!("CARGO_PKG_VERSION").into()),
        kv("redis_mode", "standalone".into()),
        kv("arch_bits", (usize::BITS).to_string()),
        kv("process_id", std::process::id().to_string()),
        kv("tcp_port", shared.port.to_string()),
        kv("uptime_in_seconds", uptime.to_string()),
        kv("uptime_in_days", (uptime / 86_400).to_string()),
    ];
    server.extend(f.server);
    section("Server", server);
    section(
        "Clients",
        vec![kv(
            "connected_clients",
            shared.connected.load(Ordering::Relaxed).to_string(),
        )],
    );
    let mut repl = vec![
        kv("role", if f.leader { "master" } else { "slave" }.into()),
        kv("connected_slaves", "0".into()),
    ];
    repl.extend(f.replication);
    section("Replication", repl);
    let mut stats = vec![
        kv(
            "total_connections_received",
            shared.accepted.load(Ordering::Relaxed).to_string(),
        ),
        kv(
            "total_commands_processed",
            shared.commands.load(Ordering::Relaxed).to_string(),
        ),
        kv(
            "rejected_connections",
            shared.rejected.load(Ordering::Relaxed).to_string(),
        ),
        kv(
            "mako_malformed_requests",
            shared.malformed.load(Ordering::Relaxed).to_string(),
        ),
        kv(
            "mako_loop_transactions",
            shared.loop_txns.load(Ordering::Relaxed).to_string(),
        ),
        kv(
            "mako_helper_jobs",
            shared.helper_jobs.load(Ordering::Relaxed).to_string(),
        ),
    ];
    stats.extend(f.stats);
    section("Stats", stats);
    section("Keyspace", Vec::new());
    out
}

/// The replies to `n` commands of one transaction whose outcome is unknown (`f`): it may
/// have been applied, so no command of it may run again.
pub(crate) fn unknown_replies(f: &Failure, n: usize) -> Vec<Value> {
    vec![Value::err(f.reply_text()); n]
}

/// A group's commit result with an unknown outcome turned into its answer: `replies` become
/// the `n` commands' `-UNKNOWN` errors and no release is waited for. Other failures stay
/// failures (nothing applied).
fn unknown_answered<R>(
    r: Result<Option<R>, Failure>,
    replies: &mut Vec<Value>,
    n: usize,
) -> Result<Option<R>, Failure> {
    match r {
        Err(f @ Failure::Unknown(_)) => {
            *replies = unknown_replies(&f, n);
            Ok(None)
        }
        r => r,
    }
}
