//! Raft replication for mako-rs.
//!
//! Each shard's replication group runs Raft (tikv/raft-rs) on every replica.
//! The crate separates the protocol from I/O the way raft-rs's
//! `RawNode`/`Ready` does:
//!
//! * [`RaftNode`] is one replica of one group as a state machine (a
//!   [`mako_group::Core`], driven by the shared [`mako_group::Host`] threads): feed it
//!   ticks ([`RaftNode::tick`]), received payloads ([`RaftNode::step`]) and
//!   proposals ([`RaftNode::propose`]); after each input call
//!   [`RaftNode::poll`], send [`Output::messages`], make the [`PersistJob`]
//!   durable, then send its `after` messages and call
//!   [`RaftNode::on_persisted`]. Committed entries go to the group's
//!   [`mako_replication::ApplyDispatcher`], which calls the leader or follower
//!   apply callback by the replica's current role.
//! * A deterministic simulator drives `RaftNode`s directly on a virtual clock
//!   (see `tests/lab.rs`, the Raft lab suite).
//!
//! ```
//! use std::sync::Arc;
//! use mako_raft::{InitialState, RaftConfig, RaftNode};
//! use mako_replication::ApplyDispatcher;
//!
//! // A one-replica group elects itself and commits on its own.
//! let cfg = RaftConfig::new(1, vec![1], 0);
//! // Entries go to the application's apply callbacks; this one keeps none.
//! let d = Arc::new(ApplyDispatcher::discarding(0));
//! let mut node = RaftNode::new(cfg, InitialState::default(), d.clone(), None).unwrap();
//! node.campaign().unwrap();
//! let mut drive = |node: &mut RaftNode| loop {
//!     let out = node.poll();
//!     if out.is_empty() { break }
//!     if let Some(job) = out.persist { node.on_persisted(job.number); }
//! };
//! drive(&mut node);
//! assert!(node.is_leader());
//! node.propose(bytes::Bytes::from_static(b"entry")).unwrap();
//! drive(&mut node);
//! assert_eq!(d.stats().applied, 1);
//! ```

pub mod lease;
mod node;
mod storage;
pub mod validate;
pub mod wire;

pub use mako_group::durable;
pub use mako_group::{
    ConfigError, HostConfig, InitialState, OutMsg, Output, Paused, PersistJob, StartError,
};
pub use node::{NodeError, NodeStats, ProposeError, REJOIN_CONTEXT, RaftNode};
pub use storage::GroupStorage;

/// Raft's name for the group configuration both protocols take.
pub type RaftConfig = mako_group::GroupConfig;
/// The host that runs Raft groups (and Paxos groups: it is the shared [`mako_group::Host`]).
pub type RaftHost = mako_group::Host;
/// A group's replica driven by its worker thread (the shared [`mako_group::Worker`]).
pub type RaftWorker = mako_group::Worker;
