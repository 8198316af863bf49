//! What every replication protocol of mako-rs shares.
//!
//! A shard's group runs Raft (`mako-raft`) or Multi-Paxos (`mako-paxos`), chosen in the
//! config. Both are written as I/O-free state machines implementing [`Core`]; everything
//! around the state machine is here, once:
//!
//! * [`core`]: the seam itself, and the protocol-neutral values crossing it: log entries
//!   (index, term or ballot, payload), hard state, [`Snapshot`]s, [`PersistJob`]s.
//! * [`config`]: [`GroupConfig`], the knobs both protocols take (timeouts, batching,
//!   pipelining, compaction, lease, rejoin).
//! * [`durable`]: persist jobs as log-store writes, snapshot files, and recovery of a
//!   group's [`InitialState`] from the log store and the snapshot the log names.
//! * [`lease`]: the leader-lease rounds both protocols keep (each argues its lease itself).
//! * [`chunk`]: framing of large messages (snapshots) in chunks, reassembled within bounds.
//! * [`host`]: the [`Host`] (one per replica process: envelope routing, the shared
//!   log store, snapshot files) and its [`Worker`]s (one thread per group, driving a
//!   [`Core`] and implementing [`mako_replication::Replicator`]).
//!
//! A protocol core is fed ticks, peer payloads and proposals; after each input the driver
//! calls [`Core::poll`], sends the messages, makes the persist job durable, then sends the
//! job's held-back messages and reports it with [`Core::on_persisted`].

mod bell;
pub mod chunk;
pub mod config;
pub mod core;
pub mod durable;
pub mod host;
pub mod lease;

pub use config::{AppliedBytes, ConfigError, GroupConfig};
pub use core::{
    CaptureRequest, Core, CoreError, HardState, InitialState, LogEntry, OutMsg, Output, PersistJob,
    Snapshot,
};
pub use host::{Host, HostConfig, Paused, Shortcut, StartError, Worker};
