//! The leader lease's bookkeeping: quorum rounds stamped with the driver's clock.
//!
//! # What the lease promises
//!
//! The leader starts a *lease round* at driver time `s` (a stamp the driver passes in; the
//! protocol core reads no clock): a raft-rs read-index request (`ReadOnlyOption::Safe`)
//! whose context names the round. raft-rs broadcasts a heartbeat carrying that context
//! (and attaches it to every later heartbeat while it is pending) and hands back a
//! `ReadState` with the context once a quorum, the leader included, answered a heartbeat
//! carrying it. Every such heartbeat left after `s`. The lease then lasts until
//! `s + RaftConfig::lease_duration()`, that is `s + (E - 1) * P - drift`, where `P` is the
//! tick (heartbeat interval) and `E` the minimum election timeout in ticks.
//!
//! Claim: no other replica becomes leader of a later term before that instant (on the
//! leader's clock, up to `drift`), as long as this leader starts no leadership transfer.
//!
//! # Why (raft-rs 0.7, `check_quorum` and `pre_vote` on)
//!
//! Let `Q` be the acknowledging quorum; each member `n` handled a message of the leader's
//! term `T` at an instant `r_n >= s`. A new leader of a term above `T` needs a quorum of
//! (pre-)votes, which contains some `n` in `Q` (its own vote if it is the candidate).
//!
//! * A follower resets `election_elapsed` on every `MsgAppend`, `MsgHeartbeat` and
//!   `MsgSnapshot` of its leader and sets `leader_id` (`Raft::step_follower`). While
//!   `leader_id` is set and `election_elapsed < election_timeout` (= `E`), `Raft::step`
//!   ignores a `MsgRequestVote` or `MsgRequestPreVote` of a higher term unless its context
//!   is `CAMPAIGN_TRANSFER`, without even adopting the term. A follower starts its own
//!   (pre-)campaign only once `election_elapsed` reaches its randomized timeout, which is
//!   at least `E` (`Raft::tick_election`).
//! * The leader itself has `leader_id` = itself and `election_elapsed < E` at all times
//!   (`tick_heartbeat` resets it at `E`), so it ignores such requests too. It steps down by
//!   check-quorum only after a whole check interval (`E` ticks) without hearing from a
//!   quorum, i.e. at least `E` ticks after `Q`'s acknowledgement reached it.
//! * Ticks: the worker's ticker (crossbeam's `tick`, which schedules the next tick a full
//!   period after delivering one) ticks a node at most once per `P`; `E` ticks after `r_n`
//!   therefore take at least `(E - 1) * P`, the first possibly coming at once.
//! * The first replica to reach a term above `T` does so by campaigning: after a
//!   successful pre-vote (a quorum of grants, so one from `Q`) or forced by a
//!   `MsgTimeoutNow` from a leader of its current term (only this leader is in `T`; older
//!   leaders' `MsgTimeoutNow` lead to terms at most `T`). Until then no higher-term message
//!   exists that could make a member of `Q` forget its leader.
//!
//! So no member of `Q` grants a pre-vote or vote, or campaigns, before `r_n + (E-1)P >=
//! s + (E-1)P`, and no replica reaches a term above `T` before then: no new leader before
//! `s + (E-1)P`, and the lease ends `drift` earlier to absorb clock-rate differences.
//!
//! # What breaks it, and what is done about it
//!
//! * **Leadership transfer**: `MsgTimeoutNow` makes the target campaign with
//!   `CAMPAIGN_TRANSFER`, which voters grant regardless of their lease. The lease is dropped
//!   when a transfer starts (explicit, or the preferred-leader hand-off), none is granted
//!   while one is pending, and once a `MsgTimeoutNow` was sent none for the rest of the
//!   term (a delayed `MsgTimeoutNow` can arrive at any later time). A leader left in that
//!   term after the transfer gave up steps down once an election timeout passed, so that a
//!   new term (and a new lease) comes: without it the shard would serve no read until the
//!   next election, however long.
//! * **Restart**: a restarted replica forgets `leader_id`, so raft-rs would vote at once.
//!   [`crate::RaftNode`] ignores (pre-)vote requests for `E` ticks after starting from a
//!   recovered term.
//! * **Step-down**: a leader that steps down (say on a higher-term answer from a replica
//!   stuck in a failed campaign) forgets `leader_id` too and could then vote before its old
//!   lease ends; it ignores (pre-)vote requests for `E` ticks after stepping down.
//! * **`RaftNode::campaign`** on another replica (a test or manual-failover hook) starts a
//!   campaign regardless of leases; it is not used on the serving path.

use mako_group::lease::LeaseRounds;

/// Context prefix of lease rounds' read-index requests.
const CTX_PREFIX: &[u8] = b"mako-lease:";

/// A Raft leader's lease rounds (acknowledged through read-index contexts) and its
/// leadership-transfer guard.
#[derive(Debug, Default)]
pub(crate) struct LeaseState {
    /// The rounds, by term.
    rounds: LeaseRounds,
    /// A term in which this replica sent `MsgTimeoutNow` (0: none): no lease in it.
    pub(crate) timeout_now_term: u64,
    /// Tick at which that `MsgTimeoutNow` was sent.
    pub(crate) timeout_now_tick: u64,
}

impl LeaseState {
    /// Forgets the lease and every pending round.
    pub(crate) fn drop_lease(&mut self) {
        self.rounds.drop_lease();
    }

    /// Moves the state to `term`, dropping whatever belonged to an earlier one.
    pub(crate) fn enter_term(&mut self, term: u64) {
        self.rounds.enter(term);
    }

    /// The term the state belongs to.
    pub(crate) fn term(&self) -> u64 {
        self.rounds.term()
    }

    /// The stamp of the newest acknowledged round.
    pub(crate) fn basis(&self) -> Option<u64> {
        self.rounds.basis()
    }

    /// Whether a new round is due at tick `now_tick` (minimum election timeout `election_ticks`).
    pub(crate) fn due(&self, now_tick: u64, election_ticks: u64) -> bool {
        self.rounds.due(now_tick, election_ticks)
    }

    /// Starts a round stamped `stamp` at tick `now_tick`; returns its read-index context.
    pub(crate) fn start_round(&mut self, stamp: u64, now_tick: u64) -> Vec<u8> {
        let seq = self.rounds.start_round(stamp, now_tick);
        let mut ctx = Vec::with_capacity(CTX_PREFIX.len() + 8);
        ctx.extend_from_slice(CTX_PREFIX);
        ctx.extend_from_slice(&seq.to_be_bytes());
        ctx
    }

    /// A read state came back with `ctx`: if it names a pending round, that round and every
    /// older one are acknowledged and the basis moves to its stamp. Returns whether it did.
    pub(crate) fn acked(&mut self, ctx: &[u8]) -> bool {
        ctx.strip_prefix(CTX_PREFIX)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_be_bytes)
            .is_some_and(|seq| self.rounds.acked(seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_contexts_name_rounds_and_foreign_contexts_ack_nothing() {
        let mut l = LeaseState::default();
        l.enter_term(3);
        let a = l.start_round(100, 1);
        let b = l.start_round(200, 2);
        assert!(!l.acked(b"someone else's read"));
        assert!(l.acked(&b));
        assert_eq!(l.basis(), Some(200));
        assert!(!l.acked(&a), "the older round was acknowledged with it");
        l.enter_term(4);
        assert_eq!(l.basis(), None);
    }
}
