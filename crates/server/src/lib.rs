//! A mako-rs site and an in-process cluster of them: Mako's data path end to end.
//!
//! A [`Site`] is one replica of one shard: its store, its shard's replication
//! group (Raft), its watermark tracker and its coordinator workers. On the
//! shard leader, transactions execute and commit speculatively
//! ([`DistTxn`]: local OCC plus speculative 2PC with other shard leaders);
//! each piece is logged on its worker's stream ([`streams::StreamLog`]) and
//! replicated in the background. The **leader callback** turns committed log
//! entries into the shard watermark `W_s`; a leader sends it to the other shards' leaders
//! as it moves (once per round of entries applied), every tick it moved, and in
//! 2PC replies, forming `VW` (followers hear them every
//! [`WATERMARK_TO_ALL_EVERY`]th tick). A site serves watermarks, 2PC acknowledgements and
//! replies on the thread that receives them, and a participant's requests and decisions
//! too where that thread is the sender's (in one process: a round trip between shard
//! leaders then hands nothing to another thread); otherwise (over TCP, whose receiving
//! thread carries Raft traffic that a long scan must not hold up) its control thread
//! serves them, with epochs, `meta` commands and inquiries. Its ticker checks the pieces
//! it holds. A transaction is **released**
//! (`DistTxn::commit` returns) once `VT <= VW`. The **follower callback**
//! replays a batch only when `VT <= VW` and queues it otherwise, draining the
//! queue in order as `VW` advances.
//!
//! [`Cluster::start`] builds `S` shards × `R` replicas in one process over the
//! in-memory network (or loopback TCP), with Raft groups whose preferred
//! leader is replica 0.

mod apply;
pub mod cluster;
pub mod coord;
pub mod epochs;
mod finality;
mod lead;
pub mod meta;
pub mod msg;
pub mod node;
mod pace;
mod participant;
pub mod site;
pub mod snapshot;
pub mod streams;

pub use cluster::{Cluster, ClusterConfig, ControlError, ControlFaults, Fate, NetKind};
pub use coord::{CommitError, DistTxn, Pending, ReleaseError, Speculative};
pub use epochs::{EpochView, Verdict};
pub use lead::ServeError;
pub use meta::{META_GROUP, meta_members};
pub use node::{NodeSpec, Protocol, UnknownProtocol, start_node};
pub use site::{BeginError, Site, SiteConfig, SiteError, WATERMARK_TO_ALL_EVERY};
