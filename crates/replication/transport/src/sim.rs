//! Deterministic simulated network on a virtual clock, for reproducible replication tests.
//!
//! Every random choice (drop, delay, duplicate) comes from one [`SmallRng`] seeded at
//! [`SimNetwork::new`], so the same seed and the same sequence of calls produce the same
//! deliveries. Sent messages wait "in flight" until the virtual clock reaches their
//! delivery time: [`SimNetwork::advance_to`] moves them into the inboxes in order of
//! delivery time, then send order. Connectivity is checked both when a message is sent
//! and when it is delivered.
//!
//! Inboxes are bounded ([`SimNetwork::set_inbox_capacity`], default
//! [`crate::DEFAULT_INBOX_CAPACITY`]). A message due for a full inbox is lost, as on a
//! lossy network, and counted in [`SimStats::inbox_full`] (and in `dropped`); whether an
//! inbox is full depends only on the calls made, so runs stay deterministic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::{Condvar, Mutex};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::{Envelope, NodeId, SendError, Transport};

/// Fault and latency model of a [`SimNetwork`]; the default is reliable, instant and FIFO.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Probability in `[0, 1]` that a sent message is lost.
    pub drop_rate: f64,
    /// Smallest one-way delay (virtual time).
    pub min_delay: Duration,
    /// Largest one-way delay (virtual time); delays are uniform in `[min_delay, max_delay]`.
    pub max_delay: Duration,
    /// If false, messages between one (from, to) pair are delivered in send order even with random delays.
    pub reorder: bool,
    /// Probability in `[0, 1]` that a sent message is delivered twice.
    pub duplicate_rate: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            drop_rate: 0.0,
            min_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            reorder: false,
            duplicate_rate: 0.0,
        }
    }
}

/// Message counters of a [`SimNetwork`] since creation or the last [`SimNetwork::reset_stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Accepted `send` calls (each counts once, whatever became of the message).
    pub sent: u64,
    /// Accepted `send` calls per sending node.
    pub sent_by: BTreeMap<NodeId, u64>,
    /// Messages placed into an inbox (duplicates included).
    pub delivered: u64,
    /// Messages placed into an inbox, per receiving node.
    pub delivered_to: BTreeMap<NodeId, u64>,
    /// Messages lost: random drops, connectivity, crashes and restarts, full inboxes.
    pub dropped: u64,
    /// Messages lost because the receiver's inbox was full (also counted in `dropped`).
    pub inbox_full: u64,
    /// Extra copies created by `duplicate_rate`.
    pub duplicated: u64,
}

struct NodeState {
    inbox: Option<Sender<Envelope>>,
    incarnation: u64,
}

struct InFlight {
    env: Envelope,
    to_incarnation: u64,
}

struct State {
    rng: SmallRng,
    cfg: SimConfig,
    now: Duration,
    seq: u64,
    nodes: HashMap<NodeId, NodeState>,
    disconnected: HashSet<NodeId>,
    /// Side index of every node when partitioned; `None` when healed.
    sides: Option<HashMap<NodeId, usize>>,
    in_flight: BTreeMap<(Duration, u64), InFlight>,
    /// Latest delivery time scheduled per (from, to), for FIFO mode.
    last_delivery: HashMap<(NodeId, NodeId), Duration>,
    stats: SimStats,
    /// Capacity of inboxes registered from now on.
    inbox_capacity: usize,
}

impl State {
    fn alive(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.inbox.is_some())
    }

    fn can_talk(&self, a: NodeId, b: NodeId) -> bool {
        if self.disconnected.contains(&a) || self.disconnected.contains(&b) {
            return false;
        }
        if a == b {
            return true;
        }
        match &self.sides {
            None => true,
            Some(sides) => match (sides.get(&a), sides.get(&b)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            },
        }
    }

    fn draw_delay(&mut self) -> Duration {
        let (lo, hi) = (self.cfg.min_delay, self.cfg.max_delay);
        if hi <= lo {
            return lo;
        }
        let span = u64::try_from((hi - lo).as_nanos()).unwrap_or(u64::MAX);
        lo + Duration::from_nanos(self.rng.random_range(0..=span))
    }

    fn schedule(&mut self, env: Envelope, to_incarnation: u64) {
        let mut at = self.now + self.draw_delay();
        if !self.cfg.reorder {
            let last = self.last_delivery.entry((env.from, env.to)).or_default();
            at = at.max(*last);
            *last = at;
        }
        self.seq += 1;
        self.in_flight.insert(
            (at, self.seq),
            InFlight {
                env,
                to_incarnation,
            },
        );
    }

    fn send(&mut self, env: Envelope) -> Result<(), SendError> {
        let Some(to_incarnation) = self.nodes.get(&env.to).map(|n| n.incarnation) else {
            return Err(SendError::UnknownPeer(env.to));
        };
        self.stats.sent += 1;
        *self.stats.sent_by.entry(env.from).or_default() += 1;
        if !self.can_talk(env.from, env.to) {
            self.stats.dropped += 1;
            return Ok(());
        }
        let drop_rate = self.cfg.drop_rate.clamp(0.0, 1.0);
        if drop_rate > 0.0 && self.rng.random_bool(drop_rate) {
            self.stats.dropped += 1;
            return Ok(());
        }
        let dup_rate = self.cfg.duplicate_rate.clamp(0.0, 1.0);
        if dup_rate > 0.0 && self.rng.random_bool(dup_rate) {
            self.stats.duplicated += 1;
            self.schedule(env.clone(), to_incarnation);
        }
        self.schedule(env, to_incarnation);
        Ok(())
    }

    fn advance_to(&mut self, t: Duration) {
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > t {
                break;
            }
            let (at, _) = *entry.key();
            let msg = entry.remove();
            self.now = self.now.max(at);
            self.deliver(msg);
        }
        self.now = self.now.max(t);
    }

    fn deliver(&mut self, msg: InFlight) {
        let (from, to) = (msg.env.from, msg.env.to);
        let ok = self.alive(from) && self.can_talk(from, to);
        let inbox = match self.nodes.get(&to) {
            Some(n) if ok && n.incarnation == msg.to_incarnation => n.inbox.as_ref(),
            _ => None,
        };
        match inbox.map(|tx| tx.try_send(msg.env)) {
            Some(Ok(())) => {
                self.stats.delivered += 1;
                *self.stats.delivered_to.entry(to).or_default() += 1;
            }
            Some(Err(TrySendError::Full(_))) => {
                self.stats.inbox_full += 1;
                self.stats.dropped += 1;
            }
            _ => self.stats.dropped += 1,
        }
    }

    /// Removes in-flight messages matching `pred`, counting them as dropped.
    fn purge(&mut self, pred: impl Fn(&Envelope) -> bool) {
        let before = self.in_flight.len();
        self.in_flight.retain(|_, m| !pred(&m.env));
        self.stats.dropped += (before - self.in_flight.len()) as u64;
    }
}

struct Inner {
    state: Mutex<State>,
    /// Wakes realtime pumps on a new send or on stop.
    wake: Condvar,
}

/// A simulated network shared by all simulated replicas; cheap to clone.
#[derive(Clone)]
pub struct SimNetwork {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.state.lock();
        f.debug_struct("SimNetwork")
            .field("now", &st.now)
            .field("in_flight", &st.in_flight.len())
            .field("nodes", &st.nodes.len())
            .finish()
    }
}

impl SimNetwork {
    /// Creates an empty network whose randomness is drawn from `seed`.
    pub fn new(seed: u64, cfg: SimConfig) -> Self {
        let state = State {
            rng: SmallRng::seed_from_u64(seed),
            cfg,
            now: Duration::ZERO,
            seq: 0,
            nodes: HashMap::new(),
            disconnected: HashSet::new(),
            sides: None,
            in_flight: BTreeMap::new(),
            last_delivery: HashMap::new(),
            stats: SimStats::default(),
            inbox_capacity: crate::DEFAULT_INBOX_CAPACITY,
        };
        SimNetwork {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                wake: Condvar::new(),
            }),
        }
    }

    /// Replaces the fault and latency model for messages sent from now on.
    pub fn set_config(&self, cfg: SimConfig) {
        self.inner.state.lock().cfg = cfg;
    }

    /// The current fault and latency model.
    pub fn config(&self) -> SimConfig {
        self.inner.state.lock().cfg.clone()
    }

    /// Sets how many envelopes (at least one) the inboxes of nodes registered from now on
    /// hold; messages due for a full inbox are dropped.
    pub fn set_inbox_capacity(&self, capacity: usize) {
        self.inner.state.lock().inbox_capacity = capacity.max(1);
    }

    /// Registers node `id` and returns its endpoint and inbox.
    ///
    /// Re-registering an id (a restart) replaces the old inbox: messages in flight to
    /// the old incarnation are dropped and the old endpoint's sends fail with
    /// [`SendError::Closed`]. A crashed node comes back this way.
    pub fn endpoint(&self, id: NodeId) -> (SimEndpoint, Receiver<Envelope>) {
        let mut st = self.inner.state.lock();
        let (tx, rx) = crossbeam_channel::bounded(st.inbox_capacity);
        let incarnation = st.nodes.get(&id).map_or(0, |n| n.incarnation + 1);
        if incarnation > 0 {
            st.purge(|e| e.to == id);
        }
        st.nodes.insert(
            id,
            NodeState {
                inbox: Some(tx),
                incarnation,
            },
        );
        let ep = SimEndpoint {
            net: self.clone(),
            id,
            incarnation,
        };
        (ep, rx)
    }

    /// Current virtual time.
    pub fn now(&self) -> Duration {
        self.inner.state.lock().now
    }

    /// Moves the clock to `t` (never backwards), delivering every in-flight message due by
    /// then, ordered by delivery time and then send order.
    pub fn advance_to(&self, t: Duration) {
        self.inner.state.lock().advance_to(t);
    }

    /// Moves the clock forward by `d`; see [`SimNetwork::advance_to`].
    pub fn advance_by(&self, d: Duration) {
        let mut st = self.inner.state.lock();
        let t = st.now + d;
        st.advance_to(t);
    }

    /// Delivery time of the earliest in-flight message, if any.
    pub fn next_delivery(&self) -> Option<Duration> {
        self.inner
            .state
            .lock()
            .in_flight
            .first_key_value()
            .map(|(k, _)| k.0)
    }

    /// Number of messages in flight (not yet delivered or dropped).
    pub fn in_flight(&self) -> usize {
        self.inner.state.lock().in_flight.len()
    }

    /// Cuts `id` off: its sends are dropped, as are messages to or from it at delivery time.
    pub fn disconnect(&self, id: NodeId) {
        self.inner.state.lock().disconnected.insert(id);
    }

    /// Undoes [`SimNetwork::disconnect`] (a partition stays until [`SimNetwork::heal`]).
    pub fn connect(&self, id: NodeId) {
        self.inner.state.lock().disconnected.remove(&id);
    }

    /// Splits the network: only nodes of the same side can talk; unlisted nodes are isolated.
    pub fn partition(&self, sides: &[&[NodeId]]) {
        let map = sides
            .iter()
            .enumerate()
            .flat_map(|(i, side)| side.iter().map(move |&id| (id, i)))
            .collect();
        self.inner.state.lock().sides = Some(map);
    }

    /// Removes any partition and disconnection (crashed nodes stay crashed).
    pub fn heal(&self) {
        let mut st = self.inner.state.lock();
        st.sides = None;
        st.disconnected.clear();
    }

    /// Crashes `id`: drops its inbox and everything in flight to or from it until
    /// [`SimNetwork::endpoint`] is called for it again.
    pub fn crash(&self, id: NodeId) {
        let mut st = self.inner.state.lock();
        if let Some(n) = st.nodes.get_mut(&id) {
            n.inbox = None;
        }
        st.purge(|e| e.to == id || e.from == id);
    }

    /// Whether `id` is registered and not crashed.
    pub fn is_alive(&self, id: NodeId) -> bool {
        self.inner.state.lock().alive(id)
    }

    /// Message counters.
    pub fn stats(&self) -> SimStats {
        self.inner.state.lock().stats.clone()
    }

    /// Resets every message counter to zero.
    pub fn reset_stats(&self) {
        self.inner.state.lock().stats = SimStats::default();
    }

    /// Starts a pump thread that advances the virtual clock with the wall clock, so
    /// messages arrive without explicit [`SimNetwork::advance_to`] calls; the returned
    /// guard stops and joins the thread on drop.
    pub fn run_realtime(&self) -> RealtimeGuard {
        let stop = Arc::new(AtomicBool::new(false));
        let inner = self.inner.clone();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sim-pump".into())
            .spawn(move || pump(&inner, &stop2))
            .expect("spawn sim pump thread");
        RealtimeGuard {
            inner: self.inner.clone(),
            stop,
            thread: Some(thread),
        }
    }

    fn send_from(&self, ep: &SimEndpoint, mut msg: Envelope) -> Result<(), SendError> {
        msg.from = ep.id;
        let mut st = self.inner.state.lock();
        match st.nodes.get(&ep.id) {
            Some(n) if n.incarnation == ep.incarnation && n.inbox.is_some() => {}
            _ => return Err(SendError::Closed),
        }
        st.send(msg)?;
        drop(st);
        self.inner.wake.notify_all();
        Ok(())
    }
}

/// Body of the realtime pump thread: sleeps on the condition variable until the next
/// delivery is due (or a send / stop wakes it), then delivers what is due.
fn pump(inner: &Inner, stop: &AtomicBool) {
    let mut st = inner.state.lock();
    let wall0 = Instant::now();
    let virt0 = st.now;
    while !stop.load(Ordering::Acquire) {
        // Someone may have advanced the clock past the wall clock: never go back.
        let target = (virt0 + wall0.elapsed()).max(st.now);
        st.advance_to(target);
        match st.in_flight.first_key_value().map(|(k, _)| k.0) {
            Some(at) => {
                let deadline = wall0 + at.saturating_sub(virt0);
                inner.wake.wait_until(&mut st, deadline);
            }
            None => inner.wake.wait(&mut st),
        }
    }
}

/// Keeps a realtime pump running; dropping it stops and joins the pump thread.
pub struct RealtimeGuard {
    inner: Arc<Inner>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RealtimeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeGuard").finish_non_exhaustive()
    }
}

impl Drop for RealtimeGuard {
    fn drop(&mut self) {
        {
            // Set the flag under the lock so the pump cannot miss the wake-up.
            let _st = self.inner.state.lock();
            self.stop.store(true, Ordering::Release);
        }
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One simulated replica's handle on a [`SimNetwork`]; implements [`Transport`].
#[derive(Clone)]
pub struct SimEndpoint {
    net: SimNetwork,
    id: NodeId,
    incarnation: u64,
}

impl std::fmt::Debug for SimEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimEndpoint")
            .field("id", &self.id)
            .field("incarnation", &self.incarnation)
            .finish()
    }
}

impl SimEndpoint {
    /// The network this endpoint belongs to.
    pub fn network(&self) -> &SimNetwork {
        &self.net
    }
}

impl Transport for SimEndpoint {
    fn local_id(&self) -> NodeId {
        self.id
    }

    fn send(&self, msg: Envelope) -> Result<(), SendError> {
        self.net.send_from(self, msg)
    }

    fn send_batch(&self, msgs: Vec<Envelope>) -> Vec<SendError> {
        msgs.into_iter()
            .filter_map(|m| self.net.send_from(self, m).err())
            .collect()
    }
}
