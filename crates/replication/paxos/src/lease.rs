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
//!   without hearing from a leader. The leader itself refuses such prepares while it leads,
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

use std::collections::VecDeque;

/// Lease rounds pending at most (a partitioned leader stops adding them).
const MAX_ROUNDS: usize = 8;

/// Lease rounds started per minimum election timeout while healthy.
const ROUNDS_PER_TIMEOUT: u64 = 8;

/// A leader's lease rounds and the newest one a majority acknowledged.
#[derive(Debug, Default)]
pub(crate) struct LeaseState {
    /// The ballot the rounds and the basis belong to.
    ballot: u64,
    /// Number of the last round started (never reused, across ballots).
    seq: u64,
    /// Rounds started and not yet acknowledged: (number, stamp), oldest first.
    rounds: VecDeque<(u64, u64)>,
    /// Stamp of the newest acknowledged round.
    basis: Option<u64>,
    /// Tick at which the last round started.
    last_round_tick: Option<u64>,
}

impl LeaseState {
    /// Forgets the lease and every pending round.
    pub(crate) fn drop_lease(&mut self) {
        self.basis = None;
        self.rounds.clear();
        self.last_round_tick = None;
    }

    /// Moves the state to `ballot`, dropping whatever belonged to an earlier one.
    pub(crate) fn enter(&mut self, ballot: u64) {
        if self.ballot != ballot {
            self.ballot = ballot;
            self.drop_lease();
        }
    }

    /// The ballot the state belongs to.
    pub(crate) fn ballot(&self) -> u64 {
        self.ballot
    }

    /// The newest round number (carried by every accept).
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The stamp of the newest acknowledged round.
    pub(crate) fn basis(&self) -> Option<u64> {
        self.basis
    }

    /// Whether a new round is due at tick `now_tick`.
    pub(crate) fn due(&self, now_tick: u64, election_ticks: u64) -> bool {
        if self.rounds.len() >= MAX_ROUNDS {
            return false;
        }
        let every = (election_ticks / ROUNDS_PER_TIMEOUT).max(1);
        self.last_round_tick
            .is_none_or(|t| now_tick.saturating_sub(t) >= every)
    }

    /// Starts a round stamped `stamp`; returns its number.
    pub(crate) fn start_round(&mut self, stamp: u64, now_tick: u64) -> u64 {
        self.seq += 1;
        self.rounds.push_back((self.seq, stamp));
        self.last_round_tick = Some(now_tick);
        self.seq
    }

    /// A majority echoed round `seq` or later: it and older rounds are acknowledged.
    pub(crate) fn acked(&mut self, seq: u64) -> bool {
        let Some(&(_, stamp)) = self.rounds.iter().rev().find(|(s, _)| *s <= seq) else {
            return false;
        };
        self.rounds.retain(|(s, _)| *s > seq);
        self.basis = Some(self.basis.map_or(stamp, |b| b.max(stamp)));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_takes_the_newest_round_at_or_below_it() {
        let mut l = LeaseState::default();
        l.enter(7);
        let a = l.start_round(100, 1);
        let b = l.start_round(200, 2);
        assert!(l.acked(a));
        assert_eq!(l.basis(), Some(100));
        assert!(l.acked(b));
        assert_eq!(l.basis(), Some(200));
        assert!(!l.acked(b), "nothing pending any more");
        l.enter(8);
        assert_eq!(l.basis(), None);
    }
}
