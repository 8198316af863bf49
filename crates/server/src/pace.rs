//! Latency pacing of a leader's commit log: admit new commits while the oldest submitted
//! entry is younger than a target derived from the log's own uncongested commit latency.
//!
//! Speculative commits can outrun replication: every commit then waits for its release
//! behind the backlog, and on a busy machine the threads that would drain it compete with
//! the ones filling it. The count bounds of [`crate::streams::StreamLog`] (entries, bytes)
//! cap the backlog's size, not its age. [`Pace`] caps its age: it remembers when each
//! entry was submitted, and [`Pace::slow`] says the log is behind once the oldest entry not
//! yet committed is older than [`Pace::target`]: `PACE_FACTOR` times the smallest commit
//! latency seen lately (what replication costs when nothing queues: a round trip, plus an
//! `fdatasync` with `fsync` durability), and at least [`PACE_FLOOR`]. Client threads wait
//! while it is behind, which hands the CPU to the replication threads and lets the
//! entries gathering meanwhile grow into larger batches.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The smallest target: below it, pacing would hold commits back for scheduling noise.
pub const PACE_FLOOR: Duration = Duration::from_millis(2);

/// The target as a multiple of the uncongested commit latency.
pub const PACE_FACTOR: u32 = 4;

/// How long a window of the minimum commit latency lasts (the minimum spans two windows).
const WINDOW: Duration = Duration::from_secs(1);

/// Submissions remembered at most (older ones are forgotten: pacing then sees a younger
/// oldest entry, never an older one).
const REMEMBERED: usize = 1 << 14;

/// Submission times of a log's entries in flight, and its recent minimum commit latency.
#[derive(Debug)]
pub struct Pace {
    /// `(n, when)`: the `n`th entry submitted, at `when` (ascending `n`).
    sent: VecDeque<(u64, Instant)>,
    /// Entries up to this one are committed (a submission counted after its commit is not
    /// remembered).
    done: u64,
    /// The smallest commit latency in the current and the previous window.
    min: [Option<Duration>; 2],
    /// When the current window began.
    window: Instant,
}

impl Pace {
    /// Nothing in flight, no latency seen yet.
    pub fn new(now: Instant) -> Self {
        Pace {
            sent: VecDeque::new(),
            done: 0,
            min: [None, None],
            window: now,
        }
    }

    /// The `n`th entry (counting from 1 since the log began) was submitted at `now`.
    pub fn sent(&mut self, n: u64, now: Instant) {
        if n <= self.done {
            return;
        }
        if self.sent.len() == REMEMBERED {
            self.sent.pop_front();
        }
        self.sent.push_back((n, now));
    }

    /// Entries up to the `n`th are committed (or will never be) at `now`.
    pub fn committed(&mut self, n: u64, now: Instant) {
        self.done = self.done.max(n);
        let mut newest = None;
        while let Some(&(m, when)) = self.sent.front() {
            if m > n {
                break;
            }
            newest = Some(when);
            self.sent.pop_front();
        }
        if let Some(when) = newest {
            self.observe(now.saturating_duration_since(when), now);
        }
    }

    /// Forgets every entry in flight: entries up to the `n`th count as committed.
    pub fn clear(&mut self, n: u64) {
        self.sent.clear();
        self.done = self.done.max(n);
    }

    fn observe(&mut self, latency: Duration, now: Instant) {
        if now.saturating_duration_since(self.window) >= WINDOW {
            self.min = [None, self.min[0]];
            self.window = now;
        }
        self.min[0] = Some(self.min[0].map_or(latency, |m| m.min(latency)));
    }

    /// The age the oldest entry in flight may reach before the log is behind.
    pub fn target(&self) -> Duration {
        let base = match self.min {
            [Some(a), Some(b)] => a.min(b),
            [a, b] => a.or(b).unwrap_or_default(),
        };
        (base * PACE_FACTOR).max(PACE_FLOOR)
    }

    /// Whether the oldest entry in flight is older than [`Pace::target`] at `now`.
    pub fn slow(&self, now: Instant) -> bool {
        self.sent
            .front()
            .is_some_and(|&(_, when)| now.saturating_duration_since(when) > self.target())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn behind_once_the_oldest_entry_outlives_the_target() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        assert!(!p.slow(t0 + 100 * MS), "nothing in flight");
        p.sent(1, t0);
        p.sent(2, t0 + MS);
        assert_eq!(p.target(), PACE_FLOOR, "no latency seen: the floor");
        assert!(!p.slow(t0 + PACE_FLOOR));
        assert!(p.slow(t0 + PACE_FLOOR + MS));
        // The first commits after 3 ms: the second is now the oldest.
        p.committed(1, t0 + 3 * MS);
        assert_eq!(p.target(), 3 * MS * PACE_FACTOR);
        assert!(!p.slow(t0 + 12 * MS));
        assert!(p.slow(t0 + 14 * MS));
        p.committed(2, t0 + 14 * MS);
        assert!(!p.slow(t0 + 1000 * MS), "nothing in flight");
    }

    #[test]
    fn the_target_follows_the_smallest_latency_of_the_last_two_windows() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        p.sent(1, t0);
        p.committed(1, t0 + MS);
        p.sent(2, t0 + 10 * MS);
        p.committed(2, t0 + 30 * MS);
        assert_eq!(p.target(), 4 * MS, "the smaller of 1 ms and 20 ms, times 4");
        // A window later the 1 ms is still remembered; two windows later it is gone.
        p.sent(3, t0 + WINDOW);
        p.committed(3, t0 + WINDOW + 20 * MS);
        assert_eq!(p.target(), 4 * MS);
        p.sent(4, t0 + 2 * WINDOW + 30 * MS);
        p.committed(4, t0 + 2 * WINDOW + 50 * MS);
        assert_eq!(p.target(), 80 * MS);
    }

    #[test]
    fn cleared_entries_are_not_waited_for() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        p.sent(1, t0);
        assert!(p.slow(t0 + 50 * MS));
        p.clear(1);
        assert!(!p.slow(t0 + 50 * MS));
        // A commit of a forgotten entry measures nothing.
        p.committed(1, t0 + 60 * MS);
        assert_eq!(p.target(), PACE_FLOOR);
    }

    #[test]
    fn a_submission_counted_after_its_commit_is_not_waited_for() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0);
        // The group committed the entry before its submitter counted it.
        p.committed(1, t0 + MS);
        p.sent(1, t0);
        assert!(!p.slow(t0 + 100 * MS));
    }
}
