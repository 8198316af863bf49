//! An instant in-process network: envelopes go straight into the receiver's inbox.
//!
//! For clusters that live in one process (`mako demo`, benchmarks): no pump
//! thread, no virtual clock, no delay. Nodes can be disconnected and
//! reconnected (messages to or from a disconnected node are dropped), which is
//! enough for partition tests that run in real time. Deterministic fault
//! injection belongs to [`crate::sim`].
//!
//! Inboxes are bounded (`MemNetwork::with_inbox_capacity`, default
//! [`crate::DEFAULT_INBOX_CAPACITY`]). [`Transport::send`] never blocks, so a send into
//! a full inbox is refused with [`SendError::Full`], exactly like a full peer queue of
//! the TCP transport, and counted in [`MemStats::inbox_full`]; the sender may drop the
//! message (Raft retransmits). Blocking the sender instead could deadlock two nodes
//! whose consumers each wait to send to the other.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::RwLock;

use crate::{Envelope, NodeId, Receive, SendError, Transport};

/// A node's inbox, and what it takes before the inbox.
type Target = (Sender<Envelope>, Option<Receive>);

struct Hub {
    inboxes: HashMap<NodeId, Sender<Envelope>>,
    /// What each node takes before its inbox ([`Transport::set_receive`]).
    receivers: HashMap<NodeId, Receive>,
    down: HashSet<NodeId>,
    inbox_capacity: usize,
    /// Sends refused because the receiver's inbox was full.
    inbox_full: AtomicU64,
}

/// Message counters of a [`MemNetwork`] since its creation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Sends refused with [`SendError::Full`] because the receiver's inbox was full.
    pub inbox_full: u64,
}

/// The in-process network; cheap to clone.
#[derive(Clone)]
pub struct MemNetwork {
    hub: Arc<RwLock<Hub>>,
}

impl Default for MemNetwork {
    fn default() -> Self {
        MemNetwork::with_inbox_capacity(crate::DEFAULT_INBOX_CAPACITY)
    }
}

impl std::fmt::Debug for MemNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = self.hub.read();
        f.debug_struct("MemNetwork")
            .field("nodes", &h.inboxes.len())
            .field("down", &h.down.len())
            .finish()
    }
}

impl MemNetwork {
    /// An empty network whose inboxes hold [`crate::DEFAULT_INBOX_CAPACITY`] envelopes.
    pub fn new() -> Self {
        MemNetwork::default()
    }

    /// An empty network whose inboxes hold `capacity` envelopes (at least one).
    pub fn with_inbox_capacity(capacity: usize) -> Self {
        let hub = Hub {
            inboxes: HashMap::new(),
            receivers: HashMap::new(),
            down: HashSet::new(),
            inbox_capacity: capacity.max(1),
            inbox_full: AtomicU64::new(0),
        };
        MemNetwork {
            hub: Arc::new(RwLock::new(hub)),
        }
    }

    /// Registers `id` (replacing an earlier registration) and returns its endpoint and inbox.
    pub fn endpoint(&self, id: NodeId) -> (MemEndpoint, Receiver<Envelope>) {
        let mut hub = self.hub.write();
        let (tx, rx) = crossbeam_channel::bounded(hub.inbox_capacity);
        hub.inboxes.insert(id, tx);
        drop(hub);
        (
            MemEndpoint {
                id,
                hub: Arc::clone(&self.hub),
            },
            rx,
        )
    }

    /// Cuts `id` off: nothing it sends or is sent arrives.
    pub fn disconnect(&self, id: NodeId) {
        self.hub.write().down.insert(id);
    }

    /// Undoes [`MemNetwork::disconnect`].
    pub fn connect(&self, id: NodeId) {
        self.hub.write().down.remove(&id);
    }

    /// Message counters.
    pub fn stats(&self) -> MemStats {
        MemStats {
            inbox_full: self.hub.read().inbox_full.load(Ordering::Relaxed),
        }
    }
}

/// One node's handle on a [`MemNetwork`].
#[derive(Clone)]
pub struct MemEndpoint {
    id: NodeId,
    hub: Arc<RwLock<Hub>>,
}

impl std::fmt::Debug for MemEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemEndpoint").field("id", &self.id).finish()
    }
}

impl MemEndpoint {
    /// Where `msg` goes (its inbox, and what its node takes first), or `None` if it is lost
    /// on the wire; stamps the sender.
    fn target(&self, hub: &Hub, msg: &mut Envelope) -> Result<Option<Target>, SendError> {
        msg.from = self.id;
        let to = msg.to;
        let Some(tx) = hub.inboxes.get(&to) else {
            return Err(SendError::UnknownPeer(to));
        };
        if hub.down.contains(&self.id) || hub.down.contains(&to) {
            return Ok(None); // lost on the wire, as a real network would
        }
        Ok(Some((tx.clone(), hub.receivers.get(&to).cloned())))
    }

    /// Hands `msg` to its node, outside the hub's lock (a receiver may send in turn).
    fn deliver(&self, (tx, receive): Target, msg: Envelope) -> Result<(), SendError> {
        let msg = match receive {
            Some(r) => match r(msg) {
                Some(m) => m,
                None => return Ok(()),
            },
            None => msg,
        };
        tx.try_send(msg).map_err(|e| match e {
            TrySendError::Full(_) => {
                self.hub.read().inbox_full.fetch_add(1, Ordering::Relaxed);
                SendError::Full
            }
            TrySendError::Disconnected(_) => SendError::Closed,
        })
    }
}

impl Transport for MemEndpoint {
    fn local_id(&self) -> NodeId {
        self.id
    }

    fn set_receive(&self, receive: Option<Receive>) {
        let mut hub = self.hub.write();
        match receive {
            Some(r) => hub.receivers.insert(self.id, r),
            None => hub.receivers.remove(&self.id),
        };
    }

    fn receives_on_sending_thread(&self) -> bool {
        true
    }

    fn send(&self, mut msg: Envelope) -> Result<(), SendError> {
        let target = self.target(&self.hub.read(), &mut msg)?;
        match target {
            Some(t) => self.deliver(t, msg),
            None => Ok(()),
        }
    }

    fn send_batch(&self, msgs: Vec<Envelope>) -> Vec<SendError> {
        let mut errors = Vec::new();
        let mut out = Vec::with_capacity(msgs.len());
        {
            let hub = self.hub.read();
            for mut m in msgs {
                match self.target(&hub, &mut m) {
                    Ok(Some(t)) => out.push((t, m)),
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
        for (t, m) in out {
            if let Err(e) = self.deliver(t, m) {
                errors.push(e);
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// An envelope of group 3 to node 2 carrying `p` (the sender stamps `from`).
    fn env(p: &'static [u8]) -> Envelope {
        Envelope {
            group: 3,
            from: 99,
            to: 2,
            payload: Bytes::from_static(p),
        }
    }

    #[test]
    fn a_receiver_takes_envelopes_on_the_sending_thread_before_the_inbox() {
        use std::sync::Mutex;
        let net = MemNetwork::new();
        let (a, _ra) = net.endpoint(1);
        let (b, rb) = net.endpoint(2);
        let taken = Arc::new(Mutex::new(Vec::new()));
        let t = Arc::clone(&taken);
        // Takes "take", passes anything else on to the inbox.
        b.set_receive(Some(Arc::new(move |e: Envelope| {
            if &e.payload[..] == b"take" {
                t.lock()
                    .expect("lock")
                    .push((e.from, std::thread::current().id()));
                None
            } else {
                Some(e)
            }
        })));
        a.send(env(b"take")).expect("send");
        a.send(env(b"pass")).expect("send");
        assert!(a.send_batch(vec![env(b"take"), env(b"pass")]).is_empty());
        let me = std::thread::current().id();
        assert_eq!(*taken.lock().expect("lock"), vec![(1, me), (1, me)]);
        let passed: Vec<_> = rb.try_iter().map(|e| e.payload).collect();
        assert_eq!(passed, vec![Bytes::from_static(b"pass"); 2]);
        // A disconnected node receives nothing, not even through its receiver.
        net.disconnect(2);
        a.send(env(b"take")).expect("accepted");
        assert_eq!(taken.lock().expect("lock").len(), 2);
        net.connect(2);
        // Without a receiver everything goes to the inbox again.
        b.set_receive(None);
        a.send(env(b"take")).expect("send");
        assert_eq!(taken.lock().expect("lock").len(), 2);
        assert_eq!(
            rb.try_recv().expect("in the inbox").payload,
            Bytes::from_static(b"take")
        );
    }

    #[test]
    fn delivers_instantly_and_drops_across_a_disconnect() {
        let net = MemNetwork::new();
        let (a, _ra) = net.endpoint(1);
        let (_b, rb) = net.endpoint(2);
        a.send(env(b"x")).expect("send");
        let got = rb.try_recv().expect("delivered without any pump");
        assert_eq!((got.from, got.group, &got.payload[..]), (1, 3, &b"x"[..]));
        net.disconnect(2);
        a.send(env(b"lost")).expect("accepted");
        assert!(rb.try_recv().is_err());
        net.connect(2);
        assert!(a.send_batch(vec![env(b"y"), env(b"z")]).is_empty());
        assert_eq!(rb.try_iter().count(), 2);
        assert_eq!(
            a.send(Envelope { to: 7, ..env(b"?") }),
            Err(SendError::UnknownPeer(7))
        );
    }

    #[test]
    fn a_full_inbox_refuses_and_counts() {
        let net = MemNetwork::with_inbox_capacity(2);
        let (a, _ra) = net.endpoint(1);
        let (_b, rb) = net.endpoint(2);
        let env = |n: u8| Envelope {
            group: 0,
            from: 1,
            to: 2,
            payload: Bytes::from(vec![n]),
        };
        a.send(env(0)).expect("room");
        a.send(env(1)).expect("room");
        assert_eq!(a.send(env(2)), Err(SendError::Full));
        assert_eq!(a.send_batch(vec![env(3), env(4)]).len(), 2);
        assert_eq!(net.stats().inbox_full, 3);
        assert_eq!(rb.len(), 2);
        assert_eq!(rb.recv().expect("first").payload[0], 0);
        a.send(env(5)).expect("room again");
        let rest: Vec<u8> = rb.try_iter().map(|e| e.payload[0]).collect();
        assert_eq!(rest, vec![1, 5]);
    }
}
