//! Multi-Paxos replication for mako-rs.
//!
//! A shard's group runs Raft (`mako-raft`) or Multi-Paxos (this crate), chosen in the
//! config. [`PaxosNode`] is one replica of one group as an I/O-free state machine that
//! implements [`mako_group::Core`], so the shared worker, log store, snapshot files and
//! transport drive it exactly as they drive Raft: feed it ticks ([`PaxosNode::tick`]),
//! received payloads ([`PaxosNode::step`]) and proposals ([`PaxosNode::propose`]); after each
//! input call [`PaxosNode::poll`], send [`mako_group::Output::messages`], make the
//! [`mako_group::PersistJob`] durable, then send its `after` messages and call
//! [`PaxosNode::on_persisted`]. Committed entries go to the group's
//! [`mako_replication::ApplyDispatcher`].
//!
//! # The protocol
//!
//! **Ballots.** A ballot is one `u64`: `(round << 16) | i`, with `i` the proposer's index in
//! `GroupConfig::peers` (at most 65,536 replicas), so no two replicas ever use the same
//! ballot. The durable [`mako_group::HardState`] holds the promised ballot (`term`), the
//! promised ballot's proposer (`vote`) and the commit index; a [`mako_group::LogEntry`]'s
//! `term` is the ballot its slot's value was accepted under. An empty value is a no-op
//! filler: it is never handed to the application.
//!
//! **Acceptors** keep a contiguous log of slots. `Accept{ballot, first, values, commit}` is
//! taken iff `ballot >= promised` and `first <= last + 1` (no gap); taking it promises
//! `ballot`, makes its proposer the leader, and overwrites the slots `first ..` it names,
//! *keeping* every later slot the acceptor holds (under older ballots): dropping them could
//! lose a value chosen under an older ballot that the new leader has not re-sent yet.
//! Since the log store discards entries at and after a written index, the persist job
//! re-writes that kept suffix unchanged. Committed slots are never rewritten.
//!
//! **Commit rule.** A follower treats slot `s` as committed only if `s <= ` the leader's
//! commit and every slot after its own commit index up to `s` holds a value accepted under
//! the current leader's ballot (a stale older-ballot value must not be applied). Its
//! `Accepted` answer carries that run's end (`matched`). The leader stamps everything it
//! sends with its own ballot, keeps `match`/`next` per follower (`match` only grows; a gap or
//! a short `matched` rewinds `next`), and commits the highest slot a majority matched,
//! counting itself only up to what its own log holds durably.
//!
//! **Pre-prepare round (Raft's pre-vote).** A follower whose randomized election timeout
//! (ticks in `GroupConfig::election_ticks`, jitter seeded per node, see
//! [`PaxosNode::set_election_seed`]) runs out does not raise its ballot yet. It sends
//! `PrePrepare{ballot, from = its commit}`, naming the ballot it would use (the next round
//! above every ballot it has seen). An acceptor answers `PrePromise{granted}`, granted iff it
//! would promise that ballot now by the Phase 1 rules below (above its promise, outside the
//! stable-leader window and the bar after a restart or step-down, not rejoining, not
//! committed past `from`), or `Rejected` with its
//! promise when the ballot is not above it; either way it changes nothing (no promise,
//! nothing durable, no timer reset). Only with a majority of grants, its own included, does
//! the replica run Phase 1; otherwise it keeps its ballot and asks again at its next
//! randomized timeout. So a replica cut off from the group never inflates its promise: on
//! its return it takes the healthy leader's next accept instead of answering it `Rejected`
//! with a higher ballot, which made the leader step down although a majority still followed
//! it. (The leader does not simply outbid such a ballot: two leaders each hearing a majority
//! would outbid each other forever.) A transfer's `TimeoutNow` skips the round, and
//! [`PaxosNode::campaign`] starts it as a timeout does.
//!
//! **Phase 1 (takeover).** A replica whose pre-prepare round a majority granted (or a
//! transfer's target) picks the next round above every ballot it has seen, promises it to
//! itself durably, and sends `Prepare{ballot, from = its commit}`.
//! An acceptor promises (durably, before answering) iff the ballot is above its promise and
//! it has not heard from a live leader within the minimum election timeout (stable-leader
//! rule: healthy leaders are not disturbed; a transfer's prepare bypasses it); its `Promise`
//! carries its commit index and every slot after `from` with the ballot it was accepted
//! under. An acceptor that committed past `from` answers `Behind` instead (the candidate
//! lacks committed slots): a candidate refused by too many backs off, and a replica that is
//! up to date wins. With a majority of promises, the candidate takes for every slot after
//! `from` the value accepted under the highest ballot among the promises (a no-op where no
//! promise holds one), writes them all under its own ballot, becomes leader (the dispatcher's
//! role changes at once; older committed entries not yet applied are then applied under the
//! leader role, as in `mako-raft`) and sends accepts. A value accepted by a minority before
//! the old leader died is thus recovered whenever a promiser holds it, and every chosen value
//! is (the promise majority meets the accepting majority).
//!
//! **Phase 2.** While its ballot stands the leader skips Phase 1: proposals are appended to
//! its log and sent in accepts of up to `max_append_bytes`, `max_inflight` accepts in flight
//! per follower; an empty accept each tick is the heartbeat, and the commit index rides on
//! every accept. Accepts unanswered for a quarter of the election timeout are re-sent. The
//! leader steps down when it has not heard from a majority within the election timeout
//! (check-quorum) or an acceptor answers `Rejected` with a higher ballot.
//!
//! **Proposals end once their slot is decided.** A proposal is applied as ours when its slot
//! commits with its value, and reported dropped (`Overwritten`) when the slot commits with
//! another; never earlier, since a value a single acceptor holds can still be chosen by a
//! later leader's Phase 1. A deposed leader may hold proposals past the new leader's log
//! (nobody else took them): every `Accepted` names the acceptor's last slot, and a leader
//! whose log ends before it fills the slots between with no-ops (safe: its Phase 1 found no
//! value that can have been chosen there). So those slots are decided within a few
//! heartbeats of the deposed leader hearing from the new one, without new proposals.
//!
//! **Leadership transfer and the preferred replica.** [`PaxosNode::transfer_leader`] stops
//! proposals, waits until the target holds the whole log, and sends it `TimeoutNow`; the
//! target runs Phase 1 at once with the transfer flag. A leader that is not
//! `GroupConfig::preferred` hands over to it once it is caught up and heard from.
//!
//! **Leader lease.** See [`lease`]: same guarantee as `mako-raft`'s lease.
//!
//! **Catch-up and compaction.** A follower whose next slot is below the leader's first log
//! slot receives the leader's latest snapshot (chunked with [`mako_group::chunk`]); it checks
//! and restores it through the [`mako_replication::SnapshotHandler`], keeps its slots after
//! the snapshot, and persists the snapshot as installed. Once more than
//! `compact_after_entries` applied slots are held, a replica snapshots the application and
//! compacts its log (a leader keeps what live followers still need).
//!
//! **Rejoining** (`GroupConfig::rejoin`, a `memory` log store that lost its state): the
//! replica neither campaigns nor promises until its durable, committed log reaches the commit
//! index the first leader it hears from reported; from then on it promises only ballots
//! above the one it finished under. Leaders learn it is rejoining from its answers and send
//! it the log again.
//!
//! **Ballot space and lying members.** Ballots have 2^46 rounds; honest replicas use one per
//! election. A `Rejected` is only taken as an answer to the request in progress (our
//! pre-prepare, or a prepare or accept under our promise), and raises the next ballot at most
//! [`wire::MAX_REJECTED_ROUNDS`] rounds above the refused one: an honest promise is a few
//! rounds ahead, while a member lying with `promised = MAX_BALLOT` gains that many rounds per
//! election timeout of its victim (decades to exhaust the space) instead of ending its
//! campaigns at once. Requests are not bounded so: a replica that was down through any
//! number of elections must take the current leader's ballot, however far ahead. So a
//! member that sends a `Prepare` or `Accept` under a huge ballot of its own (it is
//! authenticated: the ballot must name it) makes the acceptors promise it, and they can
//! then never campaign nor take another leader's accepts. Multi-Paxos tolerates crashed
//! members, not lying ones; such a replica does not panic, logs the exhausted ballot space
//! once per election timeout, and keeps serving as a follower of that ballot.
//!
//! **Messages** ([`wire`]) are a compact little-endian encoding, validated field by field
//! before the node acts: a malformed or impossible message makes [`PaxosNode::step`] return
//! an error and changes nothing. Lists are bounded so that decoding allocates little more
//! than the bytes received: an accept carries at most [`wire::MAX_ACCEPT_VALUES`] values
//! (the leader splits larger batches), a promise at most [`wire::MAX_PROMISE_ENTRIES`]
//! slots. An acceptor holding more slots than that after a candidate's `from` neither
//! grants its pre-prepare nor promises (a truncated promise could hide a chosen value): such
//! a tail (over a million uncommitted slots, some sixty times the default pipeline) is
//! beyond what a correct group accumulates, and a candidate with a later commit index gets
//! the promise.
//!
//! ```
//! use std::sync::Arc;
//! use mako_group::{GroupConfig, InitialState};
//! use mako_paxos::PaxosNode;
//! use mako_replication::ApplyDispatcher;
//!
//! // A one-replica group takes over on its own and commits alone.
//! let cfg = GroupConfig::new(1, vec![1], 0);
//! // Entries go to the application's apply callbacks; this one keeps none.
//! let d = Arc::new(ApplyDispatcher::discarding(0));
//! let mut node = PaxosNode::new(cfg, InitialState::default(), d.clone(), None).unwrap();
//! let drive = |node: &mut PaxosNode| loop {
//!     let out = node.poll();
//!     if out.is_empty() { break }
//!     if let Some(job) = out.persist { node.on_persisted(job.number); }
//! };
//! assert!(node.campaign());
//! drive(&mut node);
//! assert!(node.is_leader());
//! node.propose(bytes::Bytes::from_static(b"entry")).unwrap();
//! drive(&mut node);
//! assert_eq!(d.stats().applied, 1);
//! ```

pub mod lease;
mod node;
pub mod wire;

pub use node::{PaxosError, PaxosNode, PaxosStats, ProposeError};
