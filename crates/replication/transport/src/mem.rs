//! An instant in-process network: envelopes go straight into the receiver's inbox.
//!
//! For clusters that live in one process (`mako demo`, benchmarks): no pump
//! thread, no virtual clock, no delay. Nodes can be disconnected and
//! reconnected (messages to or from a disconnected node are dropped), which is
//! enough for partition tests that run in real time. Deterministic fault
//! injection belongs to [`crate::sim`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::RwLock;

use crate::{Envelope, NodeId, SendError, Transport};

#[derive(Default)]
struct Hub {
    inboxes: HashMap<NodeId, Sender<Envelope>>,
    down: HashSet<NodeId>,
}

/// The in-process network; cheap to clone.
#[derive(Clone, Default)]
pub struct MemNetwork {
    hub: Arc<RwLock<Hub>>,
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
    /// An empty network.
    pub fn new() -> Self {
        MemNetwork::default()
    }

    /// Registers `id` (replacing an earlier registration) and returns its endpoint and inbox.
    pub fn endpoint(&self, id: NodeId) -> (MemEndpoint, Receiver<Envelope>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.hub.write().inboxes.insert(id, tx);
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
    fn deliver(&self, hub: &Hub, mut msg: Envelope) -> Result<(), SendError> {
        msg.from = self.id;
        let to = msg.to;
        let Some(tx) = hub.inboxes.get(&to) else {
            return Err(SendError::UnknownPeer(to));
        };
        if hub.down.contains(&self.id) || hub.down.contains(&to) {
            return Ok(()); // lost on the wire, as a real network would
        }
        tx.send(msg).map_err(|_| SendError::Closed)
    }
}

impl Transport for MemEndpoint {
    fn local_id(&self) -> NodeId {
        self.id
    }

    fn send(&self, msg: Envelope) -> Result<(), SendError> {
        let hub = self.hub.read();
        self.deliver(&hub, msg)
    }

    fn send_batch(&self, msgs: Vec<Envelope>) -> Vec<SendError> {
        let hub = self.hub.read();
        msgs.into_iter()
            .filter_map(|m| self.deliver(&hub, m).err())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn delivers_instantly_and_drops_across_a_disconnect() {
        let net = MemNetwork::new();
        let (a, _ra) = net.endpoint(1);
        let (_b, rb) = net.endpoint(2);
        let env = |p: &'static [u8]| Envelope {
            group: 3,
            from: 99,
            to: 2,
            payload: Bytes::from_static(p),
        };
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
}
