//! Leadership of a shard across epochs: a new leader establishes its epoch before it serves.
//!
//! DESIGN.md section 7. On becoming leader (term `t`) a site serves nothing until:
//! 1. the `meta` group has started an epoch for its incarnation (`NewEpoch`);
//! 2. its log closes every earlier epoch: it appends `NoOp { current - 1 }` and waits
//!    for it to commit (which also commits everything its predecessor left);
//! 3. every earlier epoch has its final watermark `FVW` (each shard leader reports its
//!    component once its own `NoOp` committed);
//! 4. its pending queue is empty (queued pieces are replayed or discarded by the rule);
//! 5. the versions of discarded transactions are gone from its store.
//!
//! It then opens the newest epoch: fresh streams, the clock above everything logged,
//! transactions stamped with that epoch. A leader whose epoch is overtaken (another
//! shard changed leader) or whose stream lost an entry seals its log and establishes
//! again, with the same incarnation or a reset one. Losing leadership closes the log.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mako_commitlog::Entry;
use mako_replication::{Role, RoleChange};
use mako_watermark::{Epoch, EpochHistory, Fate, MetaCommand};

use crate::site::Site;

pub use mako_watermark::epoch::Incarnation;

/// How long a leader without a lease waits for one before refusing a read.
const LEASE_WAIT: Duration = Duration::from_millis(200);

/// How often an unanswered request to `meta` (or an uncommitted `NoOp`) is repeated.
const RETRY: Duration = Duration::from_millis(100);

/// Why a request only a serving leader may handle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    /// This site does not serve an epoch (it does not lead, or is establishing one).
    #[error("this site does not serve an epoch (not the leader, or establishing one)")]
    NotServing,
    /// No such configured stream.
    #[error("stream {0:#x} is not configured")]
    NoSuchStream(u32),
    /// The stream has a piece reserved or waiting (a transaction in commit): retry later.
    #[error("stream {0:#x} has a transaction in commit")]
    InUse(u32),
}

/// Where a site stands as leader of its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lead {
    /// Not the leader.
    Follower,
    /// Leader, establishing an epoch: serves nothing yet.
    Establishing {
        /// This leadership.
        inc: Incarnation,
        /// The last `NoOp` submitted and when.
        noop: Option<(Epoch, Instant)>,
        /// When `meta` was last asked for the incarnation's epoch.
        asked: Option<Instant>,
    },
    /// Leader serving transactions of `epoch`.
    Open {
        /// This leadership.
        inc: Incarnation,
        /// The epoch its transactions carry.
        epoch: Epoch,
    },
}

impl Site {
    /// The epoch this site serves transactions in, if it leads and its epoch is open.
    pub fn open_epoch(&self) -> Option<Epoch> {
        match *self.lead.lock() {
            Lead::Open { epoch, .. } => Some(epoch),
            _ => None,
        }
    }

    /// Waits (bounded by [`LEASE_WAIT`]) until this leader holds a lease: a leader just
    /// elected gets its first one after a quorum round. Call before taking locks.
    pub(crate) fn await_lease(&self) -> Result<(), mako_txn::Abort> {
        let deadline = Instant::now() + LEASE_WAIT;
        loop {
            if self.holds_lease().is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline || !self.is_leader() {
                self.stats.no_lease.fetch_add(1, Ordering::Relaxed);
                return Err(mako_txn::Abort::new(mako_txn::AbortReason::NotLeader));
            }
            // Cold path (a new leader's first lease round): short waits, bounded.
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether this site leads under a lease now: until it ends no other replica can have
    /// been elected and have committed anything. Checked *after* a transaction's reads are
    /// validated, so that what it read was current then.
    pub(crate) fn holds_lease(&self) -> Result<(), mako_txn::AbortReason> {
        let now = Instant::now();
        if self.group.lease_until().is_some_and(|t| t > now) {
            Ok(())
        } else {
            Err(mako_txn::AbortReason::NotLeader)
        }
    }

    /// Retires `stream` in this shard's log (`Ending`): from then on it neither holds `W_s`
    /// back nor takes pieces, in this and every later epoch (e.g. a worker that stopped).
    pub fn retire_stream(&self, stream: mako_watermark::StreamId) -> Result<(), ServeError> {
        let lead = self.lead.lock();
        if !matches!(*lead, Lead::Open { .. }) {
            return Err(ServeError::NotServing);
        }
        self.log.end(stream)
    }

    /// Appends `Advancer` to this shard's log: the end of loading, seen by every replica in log
    /// order ([`Site::loaded`]).
    pub fn mark_loaded(&self) -> Result<(), ServeError> {
        if self.open_epoch().is_none() {
            return Err(ServeError::NotServing);
        }
        self.group
            .submit(Entry::Advancer.encode())
            .map_err(|_| ServeError::NotServing)
    }

    /// Whether this site serves transactions now: it leads, its epoch is open, and it holds a
    /// lease (without one it refuses reads; a new leader gets one after a quorum round).
    pub fn serving(&self) -> bool {
        self.open_epoch().is_some() && self.holds_lease().is_ok()
    }

    /// Role-change listener: a new leader starts establishing; a deposed one closes its log.
    pub(crate) fn on_role(&self, rc: RoleChange) {
        let mut lead = self.lead.lock();
        match rc.role {
            Role::Leader => {
                self.log.close();
                *lead = Lead::Establishing {
                    inc: Incarnation {
                        shard: self.shard_id,
                        leader: self.node,
                        term: rc.term,
                        reset: 0,
                    },
                    noop: None,
                    asked: None,
                };
                drop(lead);
                self.wake_ticker();
            }
            Role::Follower => {
                self.log.close();
                *lead = Lead::Follower;
            }
        }
        self.left_epoch();
    }

    /// One step of the leadership state machine (run by the ticker).
    ///
    /// The work (asking `meta`, submitting the `NoOp`, replaying the queue, purging) runs
    /// without the leadership lock, which apply callbacks take; the epoch is opened under
    /// it, and only if no role change came in between.
    pub(crate) fn drive_lead(&self, now: Instant) {
        // Cheap checks first: this runs on every tick of every site.
        match *self.lead.lock() {
            Lead::Follower => return,
            Lead::Open { epoch, .. }
                if self.epochs.current() <= epoch && !self.log.any_frozen() =>
            {
                return;
            }
            _ => {}
        }
        let h = self.epochs.history();
        let seen = {
            let mut lead = self.lead.lock();
            if let Lead::Open { inc, epoch } = *lead {
                let overtaken = h.current() > epoch;
                if !overtaken && !self.log.any_frozen() {
                    return;
                }
                // Another shard started an epoch, or a stream lost an entry (then this
                // leader needs an epoch of its own again).
                self.log.seal();
                let reset = if overtaken { inc.reset } else { inc.reset + 1 };
                tracing::info!(
                    shard = self.shard_id,
                    node = self.node,
                    epoch,
                    current = h.current(),
                    "epoch {epoch} ends here; establishing again"
                );
                *lead = Lead::Establishing {
                    inc: Incarnation { reset, ..inc },
                    noop: None,
                    asked: None,
                };
                self.left_epoch();
            }
            *lead
        };
        let Lead::Establishing {
            inc,
            mut noop,
            mut asked,
        } = seen
        else {
            return;
        };
        let ready = self.establish(&h, inc, &mut noop, &mut asked, now);
        let mut lead = self.lead.lock();
        if *lead != seen {
            // A role change came in meanwhile: it decides.
            return;
        }
        *lead = match ready {
            Some(epoch) => {
                match self.epochs.vw(epoch) {
                    Some(vw) => self.finality.opened(epoch, vw),
                    None => {
                        // Unreachable: the newest epoch is never final. Open nothing.
                        tracing::error!(epoch, "no watermark vector for the epoch to open");
                        return;
                    }
                }
                let ended = self.wm.lock().ended().to_vec();
                self.log.open(epoch, &ended);
                self.shard.set_epoch(epoch);
                tracing::info!(shard = self.shard_id, node = self.node, epoch, "epoch open");
                Lead::Open { inc, epoch }
            }
            None => Lead::Establishing { inc, noop, asked },
        };
    }

    /// Steps 1–5 of establishing; returns the epoch once it may open.
    fn establish(
        &self,
        h: &EpochHistory,
        inc: Incarnation,
        noop: &mut Option<(Epoch, Instant)>,
        asked: &mut Option<Instant>,
        now: Instant,
    ) -> Option<Epoch> {
        let due = |t: Option<Instant>| t.is_none_or(|t| now.duration_since(t) >= RETRY);
        // 1. An epoch of this incarnation.
        if h.epoch_of(&inc).is_none() {
            if due(*asked) {
                *asked = Some(now);
                self.propose_meta(MetaCommand::NewEpoch {
                    shard: inc.shard,
                    leader: inc.leader,
                    term: inc.term,
                    reset: inc.reset,
                });
            }
            return None;
        }
        // 2. The log closes every earlier epoch.
        let target = h.current();
        let log_epoch = self.wm.lock().epoch();
        if log_epoch < target {
            let stale = noop.is_none_or(|(e, t)| e + 1 != target || due(Some(t)));
            if stale {
                *noop = Some((target - 1, now));
                let entry = Entry::NoOp { epoch: target - 1 }.encode();
                if let Err(e) = self.group.submit(entry) {
                    tracing::debug!(shard = self.shard_id, "NoOp not submitted: {e}");
                }
            }
            return None;
        }
        if log_epoch > target {
            // A predecessor closed an epoch this site has not heard of yet.
            return None;
        }
        // 3. Every earlier epoch final.
        if !h.final_below(target) {
            return None;
        }
        // 4. The pending queue decided.
        self.group.retry_pending();
        if self.queued() > 0 {
            return None;
        }
        // 5. No discarded version left here.
        self.purge(h);
        Some(target)
    }

    /// Removes, from every table, the versions of closed epochs that the discard rule drops.
    ///
    /// Only a site that led an epoch can hold such versions (its own speculative commits);
    /// followers replay kept pieces only.
    pub(crate) fn purge(&self, h: &EpochHistory) {
        let _exclusive = self.finality.exclusive();
        let upto = (0..h.current()).take_while(|e| h.is_final(*e)).last();
        let Some(upto) = upto else { return };
        let from = self.finality.purged_below();
        if from > upto {
            return;
        }
        let mut removed = 0;
        if self.finality.led_within(from, upto) {
            for t in self.store.tables() {
                removed += t.remove_versions(|s| {
                    s.epoch <= upto && matches!(h.fate(s.epoch, &s.vt), Fate::Discarded)
                });
            }
        }
        self.finality.purged(upto + 1);
        if removed > 0 {
            self.stats
                .purged
                .fetch_add(removed as u64, Ordering::Relaxed);
            tracing::info!(
                shard = self.shard_id,
                node = self.node,
                removed,
                "removed versions of discarded transactions"
            );
        }
    }

    /// On a leader: reports the `FVW` components its log fixed that `meta` lacks.
    pub(crate) fn report_components(&self, now: Instant) {
        if !self.is_leader() {
            return;
        }
        let from = self.finality.purged_below();
        let missing = self.epochs.with(|h| h.missing(self.shard_id, from));
        if missing.is_empty() {
            return;
        }
        {
            let mut last = self.component_sent.lock();
            if last.is_some_and(|t| now.duration_since(t) < RETRY / 4) {
                return;
            }
            *last = Some(now);
        }
        let wm = self.wm.lock().clone();
        for e in missing {
            if let Some(w) = wm.component(e) {
                self.propose_meta(MetaCommand::Component {
                    epoch: e,
                    shard: self.shard_id,
                    w,
                });
            }
        }
    }
}
