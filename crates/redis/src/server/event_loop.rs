//! One event loop: the connections it serves, each a state machine reading requests, running
//! them (on the loop, or on its helper thread) and writing replies once released.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, warn};

use super::helper::{Done, Helper, Item, Job, State, retire, spawn_helper};
use crate::backend::{Failure, Release, Store, Wake};
use crate::command::{Command, Data};
use crate::conn::{Connection, Flow, Request, Shared, run, unknown_replies};
use crate::resp::{self, Parser, Value};

/// The longest a loop sleeps without an event (it then looks at release deadlines and at
/// clients that stopped reading).
const WAKE: Duration = Duration::from_millis(200);

/// How long a client may leave replies unread before it is dropped.
const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// Most bytes read from one connection per loop round (then the others get their turn).
const READ_BUDGET: usize = 256 * 1024;

/// A connection reads no more requests while this many reply bytes wait to be written.
const OUT_LIMIT: usize = 4 << 20;

/// Most pipelined data commands one transaction runs.
const GROUP: usize = 64;

/// The loop's own token (its waker).
pub(super) const WAKER: Token = Token(usize::MAX);

/// Replies held until their transaction is released: the replies (several for pipelined
/// data commands run as one transaction), the protocol to encode them for, the release to
/// wait for (`None`: nothing to wait for).
pub(super) type Held = (Vec<Value>, u8, Option<Box<dyn Release>>);

/// Most commands [`Loop::combine`] runs in one transaction.
const COMBINE: usize = 256;

/// The release of a transaction several connections' commands share, and its outcome once
/// known.
struct Slot {
    release: Option<Box<dyn Release>>,
    outcome: Option<Result<(), Failure>>,
}

/// One connection's share of a [`Slot`]: polled by its loop.
struct Joint(Arc<parking_lot::Mutex<Slot>>);

impl Release for Joint {
    fn wait(self: Box<Self>) -> Result<(), Failure> {
        let inner = {
            let mut s = self.0.lock();
            if let Some(o) = &s.outcome {
                return o.clone();
            }
            s.release.take()
        };
        match inner {
            Some(r) => {
                let o = r.wait();
                self.0.lock().outcome = Some(o.clone());
                o
            }
            // Only the loop polls these; nothing else waits on them.
            None => Err(Failure::Unknown(
                "another command of its transaction awaits the release".into(),
            )),
        }
    }

    fn poll(&mut self) -> Option<Result<(), Failure>> {
        let mut s = self.0.lock();
        if s.outcome.is_none() {
            s.outcome = s.release.as_mut()?.poll();
        }
        s.outcome.clone()
    }

    fn deadline(&self) -> Option<Instant> {
        self.0.lock().release.as_ref()?.deadline()
    }
}

/// One client connection on a loop.
struct Client {
    token: Token,
    stream: mio::net::TcpStream,
    peer: SocketAddr,
    parser: Parser,
    input: Vec<u8>,
    out: Vec<u8>,
    /// `None` while the helper runs a job.
    state: Option<State>,
    /// Replies in order, each waiting for its release.
    pending: VecDeque<Held>,
    /// About how many bytes `pending` will take once encoded.
    pending_bytes: usize,
    /// Data commands that ended its input, to commit together with other connections'
    /// (see [`Loop::combine`]).
    deferred: Vec<Data>,
    helper: Option<Helper>,
    /// May have more to read (an edge-triggered readiness not yet drained).
    readable: bool,
    /// May accept more bytes.
    writable: bool,
    /// The client sent its last byte (or reading failed).
    eof: bool,
    /// Close once what is pending is written (QUIT, a malformed request).
    closing: bool,
    /// Writing failed or the client stopped reading: drop it now.
    dead: bool,
    /// Since when replies wait for the client to read them.
    stalled: Option<Instant>,
    /// Its pipeline stopped at the backlog limit with requests left in `input`.
    held_back: bool,
}

/// One event loop and the connections it serves.
pub(super) struct Loop {
    poll: Poll,
    waker: Arc<Waker>,
    inbox: Receiver<(TcpStream, SocketAddr)>,
    store: Arc<dyn Store>,
    shared: Arc<Shared>,
    limits: resp::Limits,
    name: String,
    stop: Arc<AtomicBool>,
    conns: HashMap<Token, Client>,
    /// Connections gone whose helper still runs a job (dropped when it is done).
    retiring: Vec<(Token, Helper)>,
    next: usize,
    /// Whether a release's progress should wake the loop.
    armed: Arc<AtomicBool>,
    done: (Sender<Done>, Receiver<Done>),
}

impl Loop {
    /// A loop polling `poll` (woken by `waker`), taking connections from `inbox`.
    pub(super) fn new(
        poll: Poll,
        waker: Arc<Waker>,
        inbox: Receiver<(TcpStream, SocketAddr)>,
        store: Arc<dyn Store>,
        shared: Arc<Shared>,
        opts: &super::Options,
        stop: Arc<AtomicBool>,
    ) -> Loop {
        Loop {
            poll,
            waker,
            inbox,
            store,
            shared,
            limits: opts.limits,
            name: opts.name.clone(),
            stop,
            conns: HashMap::new(),
            retiring: Vec::new(),
            next: 0,
            armed: Arc::new(AtomicBool::new(false)),
            done: std::sync::mpsc::channel(),
        }
    }

    /// Serves its connections until the server stops.
    pub(super) fn run(&mut self) {
        let wake: Wake = {
            let (armed, waker) = (Arc::clone(&self.armed), Arc::clone(&self.waker));
            Arc::new(move || {
                // Pairs with the fence after arming: either the loop's last look saw the
                // change this announces, or this sees the loop armed.
                std::sync::atomic::fence(Ordering::SeqCst);
                if armed.swap(false, Ordering::SeqCst) {
                    let _ = waker.wake();
                }
            })
        };
        self.store.on_progress(&wake);
        let mut events = Events::with_capacity(256);
        let mut timeout = WAKE;
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != ErrorKind::Interrupted
            {
                warn!(server = %self.name, error = %e, "redis event loop cannot poll; stopping it");
                break;
            }
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            for ev in events.iter() {
                if let Some(c) = self.conns.get_mut(&ev.token()) {
                    c.readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
                    c.writable |= ev.is_writable() || ev.is_error();
                }
            }
            self.admit();
            self.finish_jobs();
            timeout = self.serve_all();
        }
        self.shutdown();
    }

    /// Registers the connections the accept thread handed over.
    fn admit(&mut self) {
        while let Ok((stream, peer)) = self.inbox.try_recv() {
            let mut stream = mio::net::TcpStream::from_std(stream);
            let token = Token(self.next);
            self.next = (self.next + 1) % (usize::MAX - 1);
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!(server = %self.name, %peer, error = %e, "cannot serve a redis client");
                self.shared.connected.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let state = State {
                conn: Connection::new(&self.shared),
                backend: self.store.connect(),
            };
            self.conns.insert(
                token,
                Client {
                    token,
                    stream,
                    peer,
                    parser: Parser::new(self.limits),
                    input: Vec::with_capacity(16 * 1024),
                    out: Vec::with_capacity(16 * 1024),
                    state: Some(state),
                    pending: VecDeque::new(),
                    pending_bytes: 0,
                    deferred: Vec::new(),
                    helper: None,
                    readable: true,
                    writable: true,
                    eof: false,
                    closing: false,
                    dead: false,
                    stalled: None,
                    held_back: false,
                },
            );
        }
    }

    /// Takes back the state of connections whose helper finished its job.
    fn finish_jobs(&mut self) {
        while let Ok(d) = self.done.1.try_recv() {
            if let Some(c) = self.conns.get_mut(&d.token) {
                c.state = d.state;
                c.dead |= c.state.is_none();
                for (v, p) in d.replies {
                    c.hold((v, p, None));
                }
                c.closing |= d.close;
            } else if let Some(i) = self.retiring.iter().position(|(t, _)| *t == d.token) {
                let (_, h) = self.retiring.swap_remove(i);
                retire(h);
            }
        }
    }

    /// Reads, runs, settles and writes for every connection; drops those that ended.
    /// Returns how long the loop may sleep.
    fn serve_all(&mut self) -> Duration {
        let mut timeout = WAKE;
        let mut gone = Vec::new();
        let ctx = Ctx {
            shared: &self.shared,
            name: &self.name,
            done: &self.done.0,
            waker: &self.waker,
        };
        for c in self.conns.values_mut() {
            c.serve(&ctx);
        }
        Loop::combine(&mut self.conns, &ctx);
        // Armed before the releases are looked at again: one decided after this last look
        // wakes the loop.
        let waiting = self.conns.values().any(|c| !c.pending.is_empty());
        self.armed.store(waiting, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let now = Instant::now();
        for (token, c) in &mut self.conns {
            if waiting {
                c.settle();
                c.write(&ctx);
            }
            if c.ended() {
                gone.push(*token);
                continue;
            }
            if (c.readable || c.held_back) && c.can_read() {
                timeout = Duration::ZERO;
            }
            if let Some(d) = c.pending.front().and_then(|h| h.2.as_ref()?.deadline()) {
                timeout = timeout.min(d.saturating_duration_since(now));
            }
        }
        for token in gone {
            if let Some(mut c) = self.conns.remove(&token) {
                let _ = self.poll.registry().deregister(&mut c.stream);
                self.shared.connected.fetch_sub(1, Ordering::AcqRel);
                debug!(server = %self.name, peer = %c.peer, "redis client connection ended");
                if let Some(h) = c.helper.take() {
                    if c.state.is_some() {
                        retire(h);
                    } else {
                        self.retiring.push((token, h));
                    }
                }
            }
        }
        timeout
    }

    /// Commits the data commands that ended each connection's input this round as few
    /// transactions (up to [`COMBINE`] commands each) instead of one per connection: for
    /// unpipelined clients, one commit per round instead of one per command. One transaction
    /// running several connections' commands one after the other is still one serial order
    /// of them; their replies share its release. If it cannot run on the loop (a key served
    /// elsewhere, a conflict), each connection's commands run on their own as usual.
    fn combine(conns: &mut HashMap<Token, Client>, ctx: &Ctx<'_>) {
        let mut ready: Vec<Token> = conns
            .iter()
            .filter(|(_, c)| !c.deferred.is_empty() && c.state.is_some())
            .map(|(t, _)| *t)
            .collect();
        while !ready.is_empty() {
            let mut take = 0;
            let mut commands = 0;
            for t in &ready {
                let n = conns.get(t).map_or(0, |c| c.deferred.len());
                if take > 0 && commands + n > COMBINE {
                    break;
                }
                take += 1;
                commands += n;
            }
            let batch: Vec<Token> = ready.drain(..take).collect();
            if batch.len() > 1 && Loop::commit_together(conns, &batch, ctx) {
                continue;
            }
            for t in batch {
                if let Some(c) = conns.get_mut(&t) {
                    c.flush_deferred(ctx);
                }
            }
        }
    }

    /// Runs the deferred commands of `batch` as one transaction on the first one's backend;
    /// false if that could not be done (nothing applied, nothing taken).
    fn commit_together(conns: &mut HashMap<Token, Client>, batch: &[Token], ctx: &Ctx<'_>) -> bool {
        let mut parts: Vec<(Token, Vec<Data>, u8)> = Vec::with_capacity(batch.len());
        for t in batch {
            if let Some(c) = conns.get_mut(t)
                && let Some(st) = &c.state
            {
                parts.push((*t, std::mem::take(&mut c.deferred), st.conn.proto()));
            }
        }
        let keys = parts
            .iter()
            .flat_map(|(_, ds, _)| ds)
            .map(Data::keys)
            .collect::<Option<Vec<_>>>()
            .map(|ks| ks.concat());
        let Some(keys) = keys else {
            give_back(conns, parts);
            return false;
        };
        let Some(st) = conns.get_mut(&parts[0].0).and_then(|c| c.state.as_mut()) else {
            give_back(conns, parts);
            return false;
        };
        let mut replies: Vec<Vec<Value>> = vec![Vec::new(); parts.len()];
        let r = st.backend.try_local(&mut keys.into_iter(), &mut |tx| {
            for ((_, ds, _), out) in parts.iter().zip(replies.iter_mut()) {
                out.clear();
                for d in ds {
                    out.push(run(tx, d, &ctx.shared.cursors)?);
                }
            }
            Ok(())
        });
        let release = match r {
            Some(Ok(release)) => release,
            Some(Err(f @ Failure::Unknown(_))) => {
                // It may have been applied: none of it runs again.
                for (t, ds, proto) in parts {
                    ctx.shared
                        .commands
                        .fetch_add(ds.len() as u64, Ordering::Relaxed);
                    if let Some(c) = conns.get_mut(&t) {
                        c.hold((unknown_replies(&f, ds.len()), proto, None));
                    }
                }
                return true;
            }
            _ => {
                give_back(conns, parts);
                return false;
            }
        };
        ctx.shared.loop_txns.fetch_add(1, Ordering::Relaxed);
        let joint = release.map(|r| {
            Arc::new(parking_lot::Mutex::new(Slot {
                release: Some(r),
                outcome: None,
            }))
        });
        for ((t, ds, proto), values) in parts.into_iter().zip(replies) {
            ctx.shared
                .commands
                .fetch_add(ds.len() as u64, Ordering::Relaxed);
            if let Some(c) = conns.get_mut(&t) {
                let rel = joint
                    .as_ref()
                    .map(|j| Box::new(Joint(Arc::clone(j))) as Box<dyn Release>);
                c.hold((values, proto, rel));
            }
        }
        true
    }

    /// Ends every connection and joins every helper (waiting for jobs under way).
    fn shutdown(&mut self) {
        for (_, mut c) in self.conns.drain() {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.shared.connected.fetch_sub(1, Ordering::AcqRel);
            if let Some(h) = c.helper.take() {
                retire(h);
            }
        }
        for (_, h) in self.retiring.drain(..) {
            retire(h);
        }
    }
}

/// What a connection needs of its loop.
pub(super) struct Ctx<'a> {
    pub(super) shared: &'a Arc<Shared>,
    pub(super) name: &'a str,
    pub(super) done: &'a Sender<Done>,
    pub(super) waker: &'a Arc<Waker>,
}

impl Client {
    /// Whether it would take more requests now.
    fn can_read(&self) -> bool {
        self.state.is_some() && !self.closing && !self.eof && !self.backlogged()
    }

    /// Whether its replies not yet written are past [`OUT_LIMIT`] (it then runs and reads
    /// nothing more until they shrink).
    fn backlogged(&self) -> bool {
        self.out.len() + self.pending_bytes >= OUT_LIMIT
    }

    /// Queues replies behind those before them.
    fn hold(&mut self, h: Held) {
        self.pending_bytes += weight(&h.0);
        self.pending.push_back(h);
    }

    /// Whether it can be dropped.
    fn ended(&self) -> bool {
        self.dead
            || ((self.closing || self.eof)
                && self.state.is_some()
                && self.deferred.is_empty()
                && self.pending.is_empty()
                && self.out.is_empty())
    }

    fn serve(&mut self, ctx: &Ctx<'_>) {
        if self.can_read() && self.readable {
            self.read(ctx);
        }
        if self.state.is_some() && !self.closing {
            self.run(ctx);
        }
        self.settle();
        self.write(ctx);
    }

    /// Reads what arrived, up to [`READ_BUDGET`].
    fn read(&mut self, ctx: &Ctx<'_>) {
        let mut got = 0;
        let mut chunk = [0u8; 16 * 1024];
        while got < READ_BUDGET {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    self.readable = false;
                    return;
                }
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    got += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(server = %ctx.name, peer = %self.peer, error = %e, "redis client connection failed");
                    self.eof = true;
                    self.readable = false;
                    return;
                }
            }
        }
    }

    /// Runs every complete request received, in order, until one must go to the helper.
    fn run(&mut self, ctx: &Ctx<'_>) {
        let Some(mut st) = self.state.take() else {
            return;
        };
        let mut parsed = 0;
        let mut group: Vec<Data> = Vec::new();
        let mut slow: Vec<Item> = Vec::new();
        self.held_back = false;
        loop {
            if self.backlogged() {
                self.held_back = true;
                // Too many replies unsent: the rest waits (a pipeline of small requests for
                // large values cannot make the output grow without bound).
                self.run_local(&mut st, &mut group, &mut slow, ctx);
                break;
            }
            self.parser.set_authenticated(st.conn.authenticated());
            match self.parser.next_at(&self.input, &mut parsed) {
                Ok(Some(args)) => match st.conn.request(args) {
                    Request::Data(d) => {
                        group.push(d);
                        if group.len() >= GROUP
                            && !self.run_local(&mut st, &mut group, &mut slow, ctx)
                        {
                            break;
                        }
                    }
                    other => {
                        if !self.run_local(&mut st, &mut group, &mut slow, ctx) {
                            slow.push(Item::Other(other));
                            break;
                        }
                        if blocks(&other) {
                            slow.push(Item::Other(other));
                            break;
                        }
                        let (reply, flow) =
                            st.conn.handle_request(other, ctx.shared, &mut *st.backend);
                        self.hold((vec![reply], st.conn.proto(), None));
                        if flow == Flow::Close {
                            self.closing = true;
                            break;
                        }
                    }
                },
                Ok(None) => {
                    // Committed after every connection had its turn, with theirs.
                    self.deferred = std::mem::take(&mut group);
                    break;
                }
                Err(e) => {
                    self.run_local(&mut st, &mut group, &mut slow, ctx);
                    ctx.shared.malformed.fetch_add(1, Ordering::Relaxed);
                    warn!(server = %ctx.name, peer = %self.peer, error = %e, "closing redis client connection: malformed request");
                    let err = (vec![Value::err(format!("ERR {e}"))], st.conn.proto());
                    self.input.clear();
                    if slow.is_empty() {
                        self.hold((err.0, err.1, None));
                        self.closing = true;
                        self.state = Some(st);
                    } else {
                        // Answered after the helper's replies, which then close the connection.
                        self.dispatch(st, slow, Some(err), ctx);
                    }
                    return;
                }
            }
        }
        self.input.drain(..parsed);
        self.resume(st, slow, ctx);
    }

    /// Keeps `st` if nothing must go to the helper, else hands it `slow` with `st`.
    fn resume(&mut self, st: State, slow: Vec<Item>, ctx: &Ctx<'_>) {
        if slow.is_empty() {
            self.state = Some(st);
        } else {
            self.dispatch(st, slow, None, ctx);
        }
    }

    /// Commits its deferred commands on their own (on the loop if it can, else on the helper).
    fn flush_deferred(&mut self, ctx: &Ctx<'_>) {
        let mut group = std::mem::take(&mut self.deferred);
        let Some(mut st) = self.state.take() else {
            self.deferred = group;
            return;
        };
        let mut slow = Vec::new();
        self.run_local(&mut st, &mut group, &mut slow, ctx);
        self.resume(st, slow, ctx);
    }

    /// Runs `group` on the loop if the backend can without blocking, holding its replies;
    /// if it must go to the helper instead, moves it to `slow` (nothing ran) and returns
    /// false. Either way `group` is left empty.
    fn run_local(
        &mut self,
        st: &mut State,
        group: &mut Vec<Data>,
        slow: &mut Vec<Item>,
        ctx: &Ctx<'_>,
    ) -> bool {
        if group.is_empty() {
            return true;
        }
        let ds: Vec<&Data> = group.iter().collect();
        match st.conn.group_local(&ds, ctx.shared, &mut *st.backend) {
            Some(Ok(values)) => {
                ctx.shared.loop_txns.fetch_add(1, Ordering::Relaxed);
                self.hold((values, st.conn.proto(), st.conn.take_release()));
            }
            // Not applied and not worth a retry: answered as one command would be.
            Some(Err(f)) if ds.len() == 1 && !retryable(&f) => {
                ctx.shared.commands.fetch_add(1, Ordering::Relaxed);
                self.hold((vec![Value::err(f.reply_text())], st.conn.proto(), None));
            }
            _ => {
                slow.push(Item::Group(std::mem::take(group)));
                return false;
            }
        }
        group.clear();
        true
    }

    /// Hands `items` to the helper thread (made now if there is none).
    fn dispatch(
        &mut self,
        state: State,
        items: Vec<Item>,
        last: Option<(Vec<Value>, u8)>,
        ctx: &Ctx<'_>,
    ) {
        if self.helper.is_none() {
            match spawn_helper(ctx, &self.peer) {
                Ok(h) => self.helper = Some(h),
                Err(e) => {
                    warn!(server = %ctx.name, peer = %self.peer, error = %e, "cannot spawn a redis helper thread; closing the connection");
                    self.dead = true;
                    self.state = Some(state);
                    return;
                }
            }
        }
        ctx.shared.helper_jobs.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            token: self.token,
            state,
            items,
            last,
        };
        if let Some(h) = &self.helper
            && let Err(back) = h.jobs.send(job)
        {
            self.state = Some(back.0.state);
            self.dead = true;
        }
    }

    /// Moves released replies, in order, to the output.
    fn settle(&mut self) {
        while let Some((_, _, release)) = self.pending.front_mut() {
            let outcome = match release {
                None => Ok(()),
                Some(r) => match r.poll() {
                    Some(o) => o,
                    None => break,
                },
            };
            let Some((values, proto, _)) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes = self.pending_bytes.saturating_sub(weight(&values));
            encode(values, proto, outcome, &mut self.out);
        }
    }

    /// Writes what it can of the output.
    fn write(&mut self, ctx: &Ctx<'_>) {
        let mut written = 0;
        while written < self.out.len() && self.writable {
            match self.stream.write(&self.out[written..]) {
                Ok(0) => {
                    self.dead = true;
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(server = %ctx.name, peer = %self.peer, error = %e, "cannot answer a redis client");
                    self.dead = true;
                    break;
                }
            }
        }
        self.out.drain(..written);
        if self.out.is_empty() {
            self.stalled = None;
        } else if written > 0 {
            self.stalled = Some(Instant::now());
        } else {
            let since = *self.stalled.get_or_insert_with(Instant::now);
            if since.elapsed() > WRITE_LIMIT {
                debug!(server = %ctx.name, peer = %self.peer, "dropping a redis client that does not read its replies");
                self.dead = true;
            }
        }
        if self.closing && self.out.is_empty() && self.pending.is_empty() && self.state.is_some() {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
    }
}

/// Encodes `values` for `proto`, or, if their transaction failed, the error for each.
fn encode(values: Vec<Value>, proto: u8, outcome: Result<(), Failure>, out: &mut Vec<u8>) {
    match outcome {
        Ok(()) => {
            for v in values {
                v.encode(proto, out);
            }
        }
        Err(f) => {
            let e = Value::err(f.reply_text());
            for _ in &values {
                e.encode(proto, out);
            }
        }
    }
}

/// About how many bytes `values` take encoded.
fn weight(values: &[Value]) -> usize {
    values
        .iter()
        .map(|v| match v {
            Value::Bulk(b) => b.len() + 16,
            Value::Error(t) | Value::Verbatim(t) => t.len() + 16,
            Value::Array(vs) => weight(vs) + 16,
            Value::Map(kvs) => {
                kvs.iter()
                    .map(|(k, v)| weight(std::slice::from_ref(k)) + weight(std::slice::from_ref(v)))
                    .sum::<usize>()
                    + 16
            }
            _ => 16,
        })
        .sum()
}

fn retryable(f: &Failure) -> bool {
    matches!(
        f,
        Failure::Aborted {
            retryable: true,
            ..
        }
    )
}

/// Whether a request other than a data command may wait for the store (it goes to the
/// helper).
fn blocks(r: &Request) -> bool {
    matches!(
        r,
        Request::Other {
            parsed: Ok(Command::Watch(_) | Command::Exec),
            ..
        }
    )
}

/// Returns commands taken for a joint transaction to the connections they came from.
fn give_back(conns: &mut HashMap<Token, Client>, parts: Vec<(Token, Vec<Data>, u8)>) {
    for (t, d, _) in parts {
        if let Some(c) = conns.get_mut(&t) {
            c.deferred = d;
        }
    }
}
