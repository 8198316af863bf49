//! Epochs (DESIGN.md section 7): the metadata group's history, per-epoch `W_s`, the discard rule.
//!
//! Every leader incarnation of a shard starts a new epoch: its new leader asks the
//! `meta` group for one ([`MetaCommand::NewEpoch`]), and every shard then closes the
//! old epochs in its own log with `NoOp { e }` (meaning "epochs up to `e` end here").
//! A shard's component of the final watermark `FVW(e)` is `W_s` over the epoch-`e`
//! entries before the first `NoOp` closing `e` in its log ([`LogWatermark`]); its
//! leader reports it ([`MetaCommand::Component`]) and `FVW(e)` is final once every
//! shard has. An epoch-`e` transaction is kept iff `VT <= FVW(e)` ([`Fate`]): kept
//! ones are released and replayed, the others are discarded everywhere.
//!
//! ```
//! use mako_watermark::{EpochHistory, Fate, MetaCommand};
//!
//! let mut h = EpochHistory::new(2);
//! // Shard 1's leader (node 4, term 2) asks for a new epoch: epoch 0 closes.
//! h.apply(&MetaCommand::NewEpoch { shard: 1, leader: 4, term: 2, reset: 0 }).unwrap();
//! assert_eq!(h.current(), 1);
//! assert_eq!(h.fate(0, &[5, 3]), Fate::Closing);
//! h.apply(&MetaCommand::Component { epoch: 0, shard: 0, w: 9 }).unwrap();
//! h.apply(&MetaCommand::Component { epoch: 0, shard: 1, w: 3 }).unwrap();
//! assert_eq!(h.fvw(0), Some(vec![9, 3]));
//! assert_eq!(h.fate(0, &[5, 3]), Fate::Kept);
//! assert_eq!(h.fate(0, &[5, 4]), Fate::Discarded);
//! assert_eq!(h.fate(1, &[5, 4]), Fate::Current);
//! ```

use std::collections::BTreeMap;

use mako_commitlog::Entry;
use serde::{Deserialize, Serialize};

use crate::{ShardWatermark, StreamId, covers};

/// A failure epoch number (0 at cluster start).
pub type Epoch = u32;

/// A command of the `meta` group's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// A new leader incarnation of `shard` asks for an epoch of its own.
    ///
    /// Applied only if `(term, reset)` is above the shard's last recorded incarnation
    /// (so a repeated or stale request starts nothing). `reset` counts the epochs one
    /// leader asked for within one term (after losing an entry of its log).
    NewEpoch {
        /// The shard.
        shard: u32,
        /// Its leader.
        leader: u64,
        /// The leader's term.
        term: u64,
        /// Epochs this leader asked for before within `term`.
        reset: u32,
    },
    /// `shard`'s component of `FVW(epoch)`, read off its log (the first report wins; every
    /// replica of the shard computes the same value).
    Component {
        /// The closed epoch.
        epoch: Epoch,
        /// The shard.
        shard: u32,
        /// `W_s` over the epoch's entries before the first `NoOp` closing it.
        w: u64,
    },
}

/// Why a command or a received history is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    /// A shard number outside the deployment.
    #[error("shard {shard} out of range (shards: {shards})")]
    NoSuchShard {
        /// The shard named.
        shard: u32,
        /// Shards configured.
        shards: usize,
    },
    /// A received history that is not internally consistent.
    #[error("inconsistent epoch history: {0}")]
    Inconsistent(&'static str),
}

/// A leader incarnation: who led a shard, in which term, after how many resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incarnation {
    /// The shard.
    pub shard: u32,
    /// The leader's node id.
    pub leader: u64,
    /// Its term.
    pub term: u64,
    /// Its reset count within the term.
    pub reset: u32,
}

/// What becomes of an epoch-`e` transaction with a given `VT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// `e` is the newest epoch: judge it against the epoch's running watermarks.
    Current,
    /// `e` is closed but `FVW(e)` is not final yet: wait.
    Closing,
    /// `VT <= FVW(e)`: it survives (released, replayed).
    Kept,
    /// `VT > FVW(e)` in some component: never released, never replayed, invisible.
    Discarded,
    /// `e` is beyond what this history knows: wait for it.
    Unknown,
}

/// The cluster's epoch history: the state machine of the `meta` group.
///
/// Deterministic: every replica applying the same commands in the same order has the
/// same history, and [`EpochHistory::version`] counts the commands that changed it
/// (a history with a larger version extends one with a smaller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochHistory {
    shards: u32,
    current: Epoch,
    /// The incarnation that started each epoch `>= 1`.
    started: BTreeMap<Epoch, Incarnation>,
    /// Per closed epoch, its `FVW` components as reported so far.
    closed: BTreeMap<Epoch, Vec<Option<u64>>>,
    /// The last incarnation recorded per shard: the leader map.
    leaders: Vec<Option<Incarnation>>,
    version: u64,
}

impl EpochHistory {
    /// The history of a fresh deployment of `shards` shards: epoch 0, no leader known.
    pub fn new(shards: u32) -> Self {
        EpochHistory {
            shards,
            current: 0,
            started: BTreeMap::new(),
            closed: BTreeMap::new(),
            leaders: vec![None; shards as usize],
            version: 0,
        }
    }

    fn check_shard(&self, shard: u32) -> Result<usize, EpochError> {
        if shard < self.shards {
            Ok(shard as usize)
        } else {
            Err(EpochError::NoSuchShard {
                shard,
                shards: self.shards as usize,
            })
        }
    }

    /// Applies one committed command; returns whether the history changed.
    pub fn apply(&mut self, cmd: &MetaCommand) -> Result<bool, EpochError> {
        let changed = match *cmd {
            MetaCommand::NewEpoch {
                shard,
                leader,
                term,
                reset,
            } => {
                let s = self.check_shard(shard)?;
                let newer = self.leaders[s].is_none_or(|l| (term, reset) > (l.term, l.reset));
                if newer {
                    let inc = Incarnation {
                        shard,
                        leader,
                        term,
                        reset,
                    };
                    self.leaders[s] = Some(inc);
                    self.closed
                        .insert(self.current, vec![None; self.shards as usize]);
                    self.current += 1;
                    self.started.insert(self.current, inc);
                }
                newer
            }
            MetaCommand::Component { epoch, shard, w } => {
                let s = self.check_shard(shard)?;
                match self.closed.get_mut(&epoch).and_then(|c| c.get_mut(s)) {
                    Some(slot @ None) => {
                        *slot = Some(w);
                        true
                    }
                    _ => false,
                }
            }
        };
        if changed {
            self.version += 1;
        }
        Ok(changed)
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The newest epoch.
    pub fn current(&self) -> Epoch {
        self.current
    }

    /// Commands that changed the history so far.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The epoch started by `inc`, if the history recorded it.
    pub fn epoch_of(&self, inc: &Incarnation) -> Option<Epoch> {
        self.started
            .iter()
            .find(|(_, i)| *i == inc)
            .map(|(e, _)| *e)
    }

    /// The incarnation that started epoch `e` (`None` for epoch 0 and unknown epochs).
    pub fn started_by(&self, e: Epoch) -> Option<Incarnation> {
        self.started.get(&e).copied()
    }

    /// The node that leads `shard` as far as the history knows.
    pub fn leader(&self, shard: u32) -> Option<u64> {
        self.leaders.get(shard as usize)?.map(|i| i.leader)
    }

    /// `FVW(e)`, once every shard reported its component.
    pub fn fvw(&self, e: Epoch) -> Option<Vec<u64>> {
        self.closed.get(&e)?.iter().copied().collect()
    }

    /// Whether `FVW(e)` is final.
    pub fn is_final(&self, e: Epoch) -> bool {
        self.closed
            .get(&e)
            .is_some_and(|c| c.iter().all(Option::is_some))
    }

    /// Whether every epoch before `e` has a final `FVW`.
    pub fn final_below(&self, e: Epoch) -> bool {
        (0..e).all(|x| self.is_final(x))
    }

    /// `shard`'s reported component of `FVW(e)`, if any.
    pub fn component(&self, e: Epoch, shard: u32) -> Option<u64> {
        self.closed.get(&e)?.get(shard as usize).copied().flatten()
    }

    /// Closed epochs from `from` on whose `FVW` still lacks `shard`'s component.
    pub fn missing(&self, shard: u32, from: Epoch) -> Vec<Epoch> {
        self.closed
            .range(from..)
            .filter(|(_, c)| c.get(shard as usize).is_some_and(Option::is_none))
            .map(|(e, _)| *e)
            .collect()
    }

    /// The discard rule for an epoch-`e` transaction stamped `vt`.
    pub fn fate(&self, e: Epoch, vt: &[u64]) -> Fate {
        if e == self.current {
            return Fate::Current;
        }
        if e > self.current {
            return Fate::Unknown;
        }
        match self.fvw(e) {
            None => Fate::Closing,
            Some(f) if covers(vt, &f) => Fate::Kept,
            Some(_) => Fate::Discarded,
        }
    }

    /// Checks a history received from a peer before it replaces this one.
    pub fn validate(&self) -> Result<(), EpochError> {
        let n = self.shards as usize;
        if self.leaders.len() != n {
            return Err(EpochError::Inconsistent("leader map length"));
        }
        if self.closed.values().any(|c| c.len() != n) {
            return Err(EpochError::Inconsistent("component count"));
        }
        // Sizes first: nothing is allocated from a number the sender chose.
        let n_epochs = self.current as usize;
        if self.closed.len() != n_epochs || !self.closed.keys().copied().eq(0..self.current) {
            return Err(EpochError::Inconsistent("closed epochs"));
        }
        if self.started.len() != n_epochs || !self.started.keys().copied().eq(1..=self.current) {
            return Err(EpochError::Inconsistent("started epochs"));
        }
        if self.started.values().any(|i| i.shard >= self.shards) {
            return Err(EpochError::Inconsistent("incarnation shard"));
        }
        Ok(())
    }

    /// Replaces this history with `other` if `other` is valid, of the same deployment and newer;
    /// returns whether it did.
    ///
    /// Every final component of this history must be unchanged in `other` (a history that
    /// contradicts a final watermark is refused).
    pub fn merge(&mut self, other: EpochHistory) -> Result<bool, EpochError> {
        if other.shards != self.shards {
            return Err(EpochError::Inconsistent("shard count"));
        }
        other.validate()?;
        if other.version <= self.version {
            return Ok(false);
        }
        for (e, comps) in &self.closed {
            let theirs = other
                .closed
                .get(e)
                .ok_or(EpochError::Inconsistent("closed epoch missing"))?;
            let contradicts = comps.iter().zip(theirs).any(|(a, b)| a.is_some() && a != b);
            if contradicts {
                return Err(EpochError::Inconsistent("component changed"));
            }
        }
        *self = other;
        Ok(true)
    }
}

/// `W_s` of one shard per epoch, from its committed log in order; the log's `NoOp`s fix components.
///
/// The log's epoch starts at 0 and moves to `e + 1` at the first `NoOp { e }` with `e`
/// at or above it; that `NoOp` fixes the shard's `FVW` component of every epoch it
/// closes (`W_s` so far for the log's epoch, 0 for epochs with no entry here). Batches
/// and heartbeats of any other epoch than the log's count for nothing. A stream retired by
/// `Ending` stays retired in later epochs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogWatermark {
    streams: Vec<StreamId>,
    epoch: Epoch,
    current: ShardWatermark,
    closed: BTreeMap<Epoch, u64>,
}

impl LogWatermark {
    /// A log at epoch 0 over the configured streams.
    pub fn new(streams: &[StreamId]) -> Self {
        LogWatermark {
            streams: streams.to_vec(),
            epoch: 0,
            current: ShardWatermark::new(streams.iter().copied()),
            closed: BTreeMap::new(),
        }
    }

    /// Feeds one committed entry of shard `shard`'s log; returns `W_s` of the log's epoch.
    pub fn observe(&mut self, shard: usize, entry: &Entry) -> u64 {
        match entry {
            Entry::Batch(b) if b.epoch != self.epoch => {}
            Entry::Heartbeat { epoch, .. } if *epoch != self.epoch => {}
            Entry::NoOp { epoch } if *epoch >= self.epoch => {
                let w = self.current.value();
                for e in self.epoch..=*epoch {
                    self.closed.insert(e, if e == self.epoch { w } else { 0 });
                }
                self.epoch = epoch.saturating_add(1);
                let ended = self.current.ended().to_vec();
                let mut next = ShardWatermark::new(self.streams.iter().copied());
                for s in ended {
                    next.observe_ending(s);
                }
                self.current = next;
            }
            e => {
                self.current.observe(shard, e);
            }
        }
        self.current.value()
    }

    /// The configured streams this watermark is over.
    pub fn configured(&self) -> &[StreamId] {
        &self.streams
    }

    /// The log's epoch: the epoch of entries appended after its last `NoOp`.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// `W_s` over the log's epoch so far.
    pub fn value(&self) -> u64 {
        self.current.value()
    }

    /// The component of `FVW(e)` this log fixed, if a `NoOp` closed `e`.
    pub fn component(&self, e: Epoch) -> Option<u64> {
        self.closed.get(&e).copied()
    }

    /// `W_s` of epoch `e` as far as this log shows (0 for epochs the log has not reached).
    pub fn w_of(&self, e: Epoch) -> u64 {
        match e.cmp(&self.epoch) {
            std::cmp::Ordering::Equal => self.value(),
            std::cmp::Ordering::Less => self.component(e).unwrap_or(0),
            std::cmp::Ordering::Greater => 0,
        }
    }

    /// Streams retired in this log (by `Ending`), in every epoch from then on.
    pub fn ended(&self) -> &[StreamId] {
        self.current.ended()
    }

    /// The running watermark of the log's epoch.
    pub fn running(&self) -> &ShardWatermark {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_id;
    use mako_commitlog::{Batch, Piece};

    fn batch(epoch: Epoch, stream: StreamId, seq: u64, ts: u64) -> Entry {
        Entry::Batch(Batch {
            epoch,
            stream,
            seq,
            pieces: vec![Piece {
                vt: vec![ts],
                writes: vec![],
            }],
        })
    }

    #[test]
    fn a_gap_in_a_stream_holds_w_below_the_lost_entry() {
        let (a, b) = (stream_id(0, 0), stream_id(0, 1));
        let mut w = LogWatermark::new(&[a, b]);
        w.observe(0, &batch(0, a, 0, 5));
        w.observe(
            0,
            &Entry::Heartbeat {
                epoch: 0,
                stream: b,
                seq: 0,
                w: 100,
            },
        );
        assert_eq!(w.value(), 5);
        // Entry 1 of stream a (ts 10) was lost; entry 2 (ts 12) committed.
        assert_eq!(w.observe(0, &batch(0, a, 2, 12)), 5);
        // The stream stays broken even if a later entry looks contiguous again.
        assert_eq!(w.observe(0, &batch(0, a, 3, 14)), 5);
        // A duplicate changes nothing.
        assert_eq!(w.observe(0, &batch(0, a, 0, 50)), 5);
        assert_eq!(w.running().broken().collect::<Vec<_>>(), vec![a]);
    }

    #[test]
    fn noop_fixes_components_and_entries_of_other_epochs_do_not_count() {
        let a = stream_id(0, 0);
        let mut w = LogWatermark::new(&[a]);
        w.observe(0, &batch(0, a, 0, 7));
        assert_eq!(w.w_of(0), 7);
        // A NoOp closing epochs 0..=2 at once.
        w.observe(0, &Entry::NoOp { epoch: 2 });
        assert_eq!(w.epoch(), 3);
        assert_eq!(
            (w.component(0), w.component(1), w.component(2)),
            (Some(7), Some(0), Some(0))
        );
        assert_eq!(w.value(), 0);
        // A late epoch-0 entry and a stale NoOp change nothing.
        w.observe(0, &batch(0, a, 1, 9));
        w.observe(0, &Entry::NoOp { epoch: 1 });
        assert_eq!((w.component(0), w.epoch()), (Some(7), 3));
        // Epoch 3 restarts the stream's numbering.
        assert_eq!(w.observe(0, &batch(3, a, 0, 20)), 20);
        assert_eq!(w.w_of(3), 20);
        assert_eq!(w.w_of(4), 0);
    }

    #[test]
    fn a_retired_stream_stays_retired_in_later_epochs() {
        let (a, b) = (stream_id(0, 0), stream_id(0, 1));
        let mut w = LogWatermark::new(&[a, b]);
        w.observe(0, &batch(0, a, 0, 7));
        assert_eq!(w.value(), 0, "b holds W back");
        assert_eq!(w.observe(0, &Entry::Ending { stream: b }), 7);
        w.observe(0, &Entry::NoOp { epoch: 0 });
        assert_eq!(w.ended(), &[b]);
        assert_eq!(w.observe(0, &batch(1, a, 0, 9)), 9, "b does not come back");
    }

    #[test]
    fn history_orders_epochs_ignores_stale_requests_and_first_component_wins() {
        let mut h = EpochHistory::new(2);
        let req = |shard, leader, term, reset| MetaCommand::NewEpoch {
            shard,
            leader,
            term,
            reset,
        };
        assert_eq!(h.apply(&req(0, 1, 5, 0)), Ok(true));
        // The same request again, and an older term: nothing.
        assert_eq!(h.apply(&req(0, 1, 5, 0)), Ok(false));
        assert_eq!(h.apply(&req(0, 2, 4, 0)), Ok(false));
        // Two shards failing at once: two epochs in sequence, never one number twice.
        assert_eq!(h.apply(&req(1, 4, 2, 0)), Ok(true));
        assert_eq!(h.current(), 2);
        let inc = Incarnation {
            shard: 1,
            leader: 4,
            term: 2,
            reset: 0,
        };
        assert_eq!(h.epoch_of(&inc), Some(2));
        assert_eq!(h.leader(1), Some(4));
        // A reset within the same term starts another epoch.
        assert_eq!(h.apply(&req(0, 1, 5, 1)), Ok(true));
        assert_eq!(h.current(), 3);
        assert_eq!(h.missing(0, 0), vec![0, 1, 2]);
        assert_eq!(h.missing(0, 1), vec![1, 2]);
        let comp = |epoch, shard, w| MetaCommand::Component { epoch, shard, w };
        assert_eq!(h.apply(&comp(0, 0, 4)), Ok(true));
        assert_eq!(h.apply(&comp(0, 0, 9)), Ok(false));
        assert_eq!(h.component(0, 0), Some(4));
        // Components of the current or unknown epochs are not recorded.
        assert_eq!(h.apply(&comp(3, 0, 1)), Ok(false));
        assert_eq!(h.apply(&comp(9, 0, 1)), Ok(false));
        assert_eq!(h.fate(0, &[1, 0]), Fate::Closing);
        assert_eq!(h.apply(&comp(0, 1, 0)), Ok(true));
        assert_eq!(h.fate(0, &[4, 0]), Fate::Kept);
        assert_eq!(h.fate(0, &[5, 0]), Fate::Discarded);
        assert_eq!(h.fate(0, &[1, 1]), Fate::Discarded);
        assert_eq!(h.fate(7, &[1, 1]), Fate::Unknown);
        assert!(!h.final_below(3));
        assert!(h.apply(&req(7, 1, 1, 0)).is_err());
    }

    #[test]
    fn merge_takes_newer_histories_and_refuses_contradictions() {
        let mut a = EpochHistory::new(2);
        let mut b = a.clone();
        let cmds = [
            MetaCommand::NewEpoch {
                shard: 0,
                leader: 1,
                term: 2,
                reset: 0,
            },
            MetaCommand::Component {
                epoch: 0,
                shard: 0,
                w: 3,
            },
        ];
        for c in &cmds {
            b.apply(c).unwrap();
        }
        assert_eq!(a.merge(b.clone()), Ok(true));
        assert_eq!(a, b);
        assert_eq!(a.merge(EpochHistory::new(2)), Ok(false));
        // A history that changes a known component is refused.
        let mut c = EpochHistory::new(2);
        c.apply(&cmds[0]).unwrap();
        c.apply(&MetaCommand::Component {
            epoch: 0,
            shard: 0,
            w: 4,
        })
        .unwrap();
        c.apply(&MetaCommand::Component {
            epoch: 0,
            shard: 1,
            w: 0,
        })
        .unwrap();
        assert!(a.merge(c).is_err());
        // A history claiming a huge epoch count with nothing behind it is refused (cheaply).
        let mut huge = b.clone();
        huge.current = u32::MAX;
        huge.version = 100;
        assert!(a.merge(huge).is_err());
        // Malformed histories are refused.
        let mut bad = b.clone();
        bad.leaders.pop();
        bad.version = 99;
        assert!(a.merge(bad).is_err());
        assert!(a.merge(EpochHistory::new(3)).is_err());
    }
}
