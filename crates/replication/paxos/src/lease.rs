//! The leader lease's bookkeeping for Paxos: rounds stamped with the driver's clock and
//! acknowledged through the lease number every accept carries.
//!
//! # What the lease promises
//!
//! [`crate::PaxosNode::renew_lease`]`(s)` starts round `r` stamped `s` (the driver's clock,
//! read before the output of the call is sent) and broadcasts a heartbeat carrying `r`;
//! every later accept carries the newest round number. A follower echoes the number in
//! its `Accepted` answer to an accept it took (ballot at least its promise). Once a
//! majority, the leader included, echoed `r` or a later round, every member `n` of that
//! majority handled, at some instant `r_n >= s`, an accept of this leader's ballot: the
//! lease lasts until `s + GroupConfig::lease_duration()` = `s + (E - 1) * P - drift`
//! (`E` the minimum election timeout in ticks, `P` the tick).
//!
//! # Why no other leader is elected before then
//!
//! A new leader needs promises from a majority, which contains some `n` of the
//! acknowledging majority (possibly the candidate itself).
//!
//! * An acceptor that took an accept from a leader refuses every prepare not flagged as a
//!   transfer for `E` of its ticks afterwards (the stable-leader rule), and starts no
//!   campaign of its own before its randomized election timeout, at least `E` ticks
//!   without hearing from a leader. The pre-prepare round before a campaign only adds a
//!   condition: a pre-prepare changes no acceptor state (no promise, no timer), so it opens
//!   no window this argument relies on being closed. The leader itself refuses such prepares while it leads,
//!   and after stepping down (check-quorum, a higher ballot) for `E` ticks. A replica
//!   restarted from a durable promise refuses them for `E` ticks after starting.
//! * `E` ticks after `r_n` take at least `(E - 1) * P` (the first may come at once).
//! * Transfer prepares bypass the rule: a leader drops its lease when it starts a transfer
//!   and, once it sent `TimeoutNow` under a ballot, holds none for the rest of that ballot
//!   (a delayed `TimeoutNow` can arrive any time later); if it still leads an election
//!   timeout later, it steps down so that a new ballot, with a lease, comes.
//! * A rejoining replica (memory durability) makes no promise until caught up.
//!
//! So no new leader exists before `s + (E - 1) * P`; the drift margin absorbs clock-rate
//! differences. A new leader starts rounds only once everything it recovered in Phase 1 is
//! committed (so all that was committed before it is in its committed log).

/// A Paxos leader's lease rounds, by ballot (acknowledged through the round number every
/// accept carries and every `Accepted` echoes).
pub(crate) type LeaseState = mako_group::lease::LeaseRounds;
