//! Replica-to-replica message transport for mako-rs.
//!
//! Replication (Raft) moves opaque messages between replicas. This crate gives it one
//! small trait, [`Transport`], and two implementations of it:
//!
//! - [`sim::SimNetwork`]: an in-memory network on a **virtual clock**, driven by one
//!   seed, that can drop, delay, reorder, duplicate and partition messages. Same seed
//!   and same sequence of calls ⇒ same deliveries, so a failing test can be replayed.
//! - [`tcp::TcpTransport`]: the real thing. One TCP connection per pair of replicas
//!   carries every replication group in both directions, with length-delimited frames,
//!   per-peer bounded queues, batched writes and reconnection with backoff.
//!
//! # The message and the trait
//!
//! An [`Envelope`] names a replication `group` (one per shard), the sender `from`, the
//! receiver `to`, and carries an opaque `payload` (for example a postcard-encoded Raft
//! message). [`Transport::send`] never blocks: when the bounded queue towards a peer is
//! full it returns [`SendError::Full`] and the caller may simply drop the message (Raft
//! retransmits). Inbound envelopes arrive on a bounded [`crossbeam_channel::Receiver`]
//! (the *inbox*) that is handed out when the transport is built. The transport always
//! stamps `from` with its own [`Transport::local_id`].
//!
//! # Bounded inboxes
//!
//! Every inbox holds at most a configured number of envelopes (default
//! [`DEFAULT_INBOX_CAPACITY`]); what happens when the consumer falls behind depends on
//! the transport:
//!
//! - TCP ([`tcp::TcpConfig::inbox_capacity`]): the connection stops reading its socket
//!   until there is room, so TCP flow control fills the sender's queue and its `send`
//!   returns [`SendError::Full`]. Nothing received is lost.
//! - In-memory ([`mem::MemNetwork::with_inbox_capacity`]): the `send` into a full inbox
//!   returns [`SendError::Full`] (never blocks) and is counted in
//!   [`mem::MemStats::inbox_full`].
//! - Simulated ([`sim::SimNetwork::set_inbox_capacity`]): a message due for a full
//!   inbox is lost like on a lossy network and counted in [`sim::SimStats::inbox_full`].
//!
//! A consumer may instead take envelopes on the receiving thread
//! ([`Transport::set_receive`]; TCP and in-memory support it): what it takes never reaches
//! the inbox, and how it bounds its own queues is its business (the replication host drops
//! on a full group inbox; the protocols retransmit).
//!
//! # Simulated network
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use mako_transport::{Envelope, Transport};
//! use mako_transport::sim::{SimConfig, SimNetwork};
//!
//! // Messages take 1–5 ms of virtual time; nothing is dropped.
//! let cfg = SimConfig {
//!     min_delay: Duration::from_millis(1),
//!     max_delay: Duration::from_millis(5),
//!     ..SimConfig::default()
//! };
//! let net = SimNetwork::new(42, cfg);
//! let (a, _a_inbox) = net.endpoint(1);
//! let (_b, b_inbox) = net.endpoint(2);
//!
//! a.send(Envelope { group: 0, from: 1, to: 2, payload: Bytes::from_static(b"hi") }).unwrap();
//! assert!(b_inbox.try_recv().is_err()); // nothing moves until virtual time does
//! net.advance_to(Duration::from_millis(5));
//! assert_eq!(b_inbox.try_recv().unwrap().payload, Bytes::from_static(b"hi"));
//!
//! // Faults: partitions, disconnections and crashes.
//! net.partition(&[&[1], &[2]]);
//! a.send(Envelope { group: 0, from: 1, to: 2, payload: Bytes::new() }).unwrap();
//! net.advance_to(Duration::from_millis(20));
//! assert!(b_inbox.try_recv().is_err());
//! net.heal();
//! assert_eq!(net.stats().sent, 2);
//! ```
//!
//! A deterministic test loops on [`sim::SimNetwork::next_delivery`] and
//! [`sim::SimNetwork::advance_to`], interleaving its own timers (election ticks, ...).
//! Threaded tests can instead call [`sim::SimNetwork::run_realtime`], which advances
//! the virtual clock with the wall clock on a pump thread until the guard is dropped.
//!
//! # TCP
//!
//! ```
//! use std::collections::HashMap;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use mako_transport::{Envelope, Transport};
//! use mako_transport::tcp::{TcpConfig, TcpTransport};
//!
//! let any = "127.0.0.1:0".parse().unwrap();
//! let (t1, _inbox1) = TcpTransport::start(1, any, HashMap::new(), TcpConfig::default()).unwrap();
//! let (t2, inbox2) = TcpTransport::start(2, any, HashMap::new(), TcpConfig::default()).unwrap();
//! // Nodes were bound on OS-assigned ports: tell each the other's address.
//! t1.set_peer_addr(2, t2.local_addr());
//! t2.set_peer_addr(1, t1.local_addr());
//!
//! t1.send(Envelope { group: 7, from: 1, to: 2, payload: Bytes::from_static(b"x") }).unwrap();
//! let got = inbox2.recv_timeout(Duration::from_secs(10)).unwrap();
//! assert_eq!((got.group, got.from), (7, 1));
//! t1.shutdown();
//! t2.shutdown();
//! ```
//!
//! The lower node id dials the higher one; a malformed frame closes only the connection
//! it came on (with one `tracing` warning) and the link is re-established with
//! exponential backoff. [`tcp::TcpTransport::shutdown`] (also run on drop) stops the
//! transport's own tokio runtime and joins all of its tasks and threads.
//!
//! # Authentication and TLS
//!
//! [`tcp::TcpConfig::secret`] makes every peer prove knowledge of a cluster secret in
//! the hello, by the challenge-response of [`auth`] (the secret never goes on the wire);
//! [`tcp::TcpConfig::tls`] wraps every connection in mutual TLS ([`tls`], rustls with
//! the ring provider). Both default to off. The [`auth`] and [`tls`] modules are meant
//! for the client protocol too.

#![warn(missing_docs)]

use bytes::Bytes;

pub mod auth;
pub mod mem;
pub mod sim;
mod stream;
pub mod tcp;
pub mod tls;
mod wire;

/// Default number of envelopes an inbox holds (see each transport for what happens when it is full).
pub const DEFAULT_INBOX_CAPACITY: usize = 1024;

/// Identifier of a replica (a node of the cluster).
pub type NodeId = u64;

/// One message between two replicas, for one replication group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Replication group (one per shard) the message belongs to.
    pub group: u32,
    /// Sending replica; transports overwrite it with their own id.
    pub from: NodeId,
    /// Receiving replica.
    pub to: NodeId,
    /// Opaque message bytes.
    pub payload: Bytes,
}

/// Why an envelope could not be queued for sending.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The destination is not a known peer of this transport.
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// The bounded queue to that peer (or the in-process inbox it feeds) is full
    /// (backpressure); the caller may drop the message.
    #[error("queue to peer is full")]
    Full,
    /// The transport (or this endpoint) has been shut down or crashed.
    #[error("transport closed")]
    Closed,
}

/// Takes a received envelope on the thread that received it; returns one it does not take,
/// which goes on to the inbox (see [`Transport::set_receive`]).
pub type Receive = std::sync::Arc<dyn Fn(Envelope) -> Option<Envelope> + Send + Sync>;

/// Sends envelopes to peers; inbound envelopes arrive on the bounded
/// [`crossbeam_channel::Receiver<Envelope>`] handed out when the transport is built.
pub trait Transport: Send + Sync + 'static {
    /// The id of the replica this transport sends for.
    fn local_id(&self) -> NodeId;

    /// Offers every envelope received from now on to `receive` first, on the receiving
    /// thread, and only what it returns to the inbox (`None`: the inbox alone again). It
    /// saves the consumer a thread hand-off per message; `receive` must not block for long.
    /// Transports that do not support it keep using the inbox alone (the default).
    fn set_receive(&self, _receive: Option<Receive>) {}

    /// Whether the `receive` of [`Transport::set_receive`] runs on the sending thread (an
    /// in-process network): work done there then holds up only the sender, never other
    /// traffic. False by default (a receiving thread carries every message from its peers).
    fn receives_on_sending_thread(&self) -> bool {
        false
    }

    /// Queues one envelope for its destination; never blocks.
    fn send(&self, msg: Envelope) -> Result<(), SendError>;

    /// Queues many envelopes; returns the errors of those that could not be queued.
    fn send_batch(&self, msgs: Vec<Envelope>) -> Vec<SendError> {
        msgs.into_iter()
            .filter_map(|m| self.send(m).err())
            .collect()
    }
}

impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    fn local_id(&self) -> NodeId {
        (**self).local_id()
    }

    fn set_receive(&self, receive: Option<Receive>) {
        (**self).set_receive(receive)
    }

    fn receives_on_sending_thread(&self) -> bool {
        (**self).receives_on_sending_thread()
    }

    fn send(&self, msg: Envelope) -> Result<(), SendError> {
        (**self).send(msg)
    }

    fn send_batch(&self, msgs: Vec<Envelope>) -> Vec<SendError> {
        (**self).send_batch(msgs)
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn local_id(&self) -> NodeId {
        (**self).local_id()
    }

    fn set_receive(&self, receive: Option<Receive>) {
        (**self).set_receive(receive)
    }

    fn receives_on_sending_thread(&self) -> bool {
        (**self).receives_on_sending_thread()
    }

    fn send(&self, msg: Envelope) -> Result<(), SendError> {
        (**self).send(msg)
    }

    fn send_batch(&self, msgs: Vec<Envelope>) -> Vec<SendError> {
        (**self).send_batch(msgs)
    }
}
