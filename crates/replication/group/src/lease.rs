//! Lease rounds: the bookkeeping both protocols' leader leases share (each protocol argues
//! its lease, and how a round is acknowledged, in its own `lease` module).
//!
//! A leader starts a round stamped with the driver's clock; once a quorum acknowledged the
//! round (or a later one), the lease runs from that stamp for
//! [`crate::GroupConfig::lease_duration`]. Rounds belong to one term (Raft) or ballot
//! (Paxos): moving to another drops them and the lease.

use std::collections::VecDeque;

/// Lease rounds pending at most (a partitioned leader stops adding them).
const MAX_ROUNDS: usize = 8;

/// Lease rounds started per minimum election timeout while healthy.
const ROUNDS_PER_TIMEOUT: u64 = 8;

/// A leader's lease rounds and the newest one a quorum acknowledged.
#[derive(Debug, Default)]
pub struct LeaseRounds {
    /// The term or ballot the rounds and the basis belong to.
    term: u64,
    /// Number of the last round started (never reused, across terms).
    seq: u64,
    /// Rounds started and not yet acknowledged: (number, stamp), oldest first.
    rounds: VecDeque<(u64, u64)>,
    /// Stamp of the newest acknowledged round.
    basis: Option<u64>,
    /// Tick at which the last round started.
    last_round_tick: Option<u64>,
}

impl LeaseRounds {
    /// Forgets the lease and every pending round.
    pub fn drop_lease(&mut self) {
        self.basis = None;
        self.rounds.clear();
        self.last_round_tick = None;
    }

    /// Moves to `term` (or ballot), dropping whatever belonged to an earlier one.
    pub fn enter(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.drop_lease();
        }
    }

    /// The term (or ballot) the rounds belong to.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The newest round's number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The stamp of the newest acknowledged round.
    pub fn basis(&self) -> Option<u64> {
        self.basis
    }

    /// Whether a new round is due at tick `now_tick` (minimum election timeout
    /// `election_ticks`): a few per timeout, and none while too many are unanswered.
    pub fn due(&self, now_tick: u64, election_ticks: u64) -> bool {
        if self.rounds.len() >= MAX_ROUNDS {
            return false;
        }
        let every = (election_ticks / ROUNDS_PER_TIMEOUT).max(1);
        self.last_round_tick
            .is_none_or(|t| now_tick.saturating_sub(t) >= every)
    }

    /// Starts a round stamped `stamp` at tick `now_tick`; returns its number.
    pub fn start_round(&mut self, stamp: u64, now_tick: u64) -> u64 {
        self.seq += 1;
        self.rounds.push_back((self.seq, stamp));
        self.last_round_tick = Some(now_tick);
        self.seq
    }

    /// A quorum acknowledged round `seq` or a later one: the newest pending round at or
    /// below `seq` and every older one are acknowledged, and the basis moves to its stamp.
    /// Returns whether it did.
    pub fn acked(&mut self, seq: u64) -> bool {
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
    fn an_ack_moves_the_basis_to_its_rounds_stamp_and_clears_older_rounds() {
        let mut l = LeaseRounds::default();
        l.enter(3);
        let a = l.start_round(100, 1);
        let b = l.start_round(200, 2);
        assert!(l.acked(a));
        assert_eq!(l.basis(), Some(100));
        assert!(l.acked(b));
        assert_eq!(l.basis(), Some(200));
        // Nothing is pending any more: a late acknowledgement changes nothing.
        assert!(!l.acked(a));
        assert!(!l.acked(b));
        assert_eq!(l.basis(), Some(200));
    }

    #[test]
    fn a_new_term_gives_no_lease() {
        let mut l = LeaseRounds::default();
        l.enter(3);
        let a = l.start_round(100, 1);
        l.enter(4);
        assert!(!l.acked(a));
        assert_eq!(l.basis(), None);
    }

    #[test]
    fn rounds_are_spaced_and_bounded() {
        let mut l = LeaseRounds::default();
        assert!(l.due(0, 80));
        l.start_round(0, 0);
        assert!(!l.due(5, 80));
        assert!(l.due(10, 80));
        for t in 1..MAX_ROUNDS as u64 {
            l.start_round(t, 10 * t);
        }
        assert!(!l.due(1000, 80), "a partitioned leader stops adding rounds");
    }
}
