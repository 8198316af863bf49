//! The site's apply callbacks: `W_s` from the committed log, replay in log order, the discard rule.
//!
//! Leader and follower share one rule. Every committed entry first feeds the
//! shard's per-epoch watermark ([`mako_watermark::LogWatermark`]) and the shard
//! clock. A batch that the leader itself logged in its open epoch is already in its
//! store. Any other batch (a follower's, or one a promoted leader inherited from its
//! predecessor) is replayed once every piece is decided ([`EpochView::judge`]):
//! released pieces are replayed, discarded ones skipped; a batch with an undecided
//! piece waits in the pending queue, and everything behind it waits too, so replay
//! follows log order.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use mako_commitlog::{Batch, DecodeError, Entry};
use mako_replication::{Applied, ApplyCtx, ApplyStatus, PendingQueue, QueuedEntry};

use crate::epochs::Verdict;
use crate::site::Site;

/// What to do with one committed batch.
enum BatchVerdict {
    /// Replay the pieces kept (all of them if `None`).
    Replay(Option<Vec<bool>>),
    /// Some piece is undecided: queue the batch.
    Wait,
}

impl Site {
    /// Feeds one committed entry to the shard's watermark and clock.
    fn observe_own(&self, entry: &Entry) {
        let me = self.shard_id as usize;
        let (epoch, w, closed) = {
            let mut wm = self.wm.lock();
            let before = wm.epoch();
            let w = wm.observe(me, entry);
            let closed: Vec<(u32, u64)> = (before..wm.epoch())
                .filter_map(|e| wm.component(e).map(|c| (e, c)))
                .collect();
            (wm.epoch(), w, closed)
        };
        for (e, c) in closed {
            self.epochs.learn_w(e, self.shard_id, c);
        }
        if w != u64::MAX {
            self.epochs.learn_w(epoch, self.shard_id, w);
        }
        match entry {
            Entry::Batch(b) => {
                if let Some(ts) = b.pieces.iter().filter_map(|p| p.vt.get(me)).max() {
                    self.shard.observe(*ts);
                }
            }
            Entry::Heartbeat { w, .. } => self.shard.observe(*w),
            _ => {}
        }
    }

    /// Decodes a committed entry; a malformed one is logged, counted and skipped.
    fn decode(&self, ctx: &ApplyCtx<'_>) -> Option<Entry> {
        self.decoded(ctx, Entry::decode(ctx.entry))
    }

    /// A decode's entry; a malformed one is logged and counted.
    fn decoded(&self, ctx: &ApplyCtx<'_>, entry: Result<Entry, DecodeError>) -> Option<Entry> {
        match entry {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(
                    shard = self.shard_id,
                    index = ctx.index,
                    "undecodable log entry: {e}"
                );
                self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Leader apply callback (Mako's `register_for_leader_par_id_return`).
    ///
    /// A batch this leader logged in its open epoch (most of what it applies) is in its
    /// store already: only its stamps feed the watermark, so its writes are not decoded
    /// (TPC-C 1x3: building and dropping them took about a quarter of the leader's Raft
    /// thread; checking and skipping them, 7%). Anything else is decoded whole and applied
    /// as a follower would.
    pub fn leader_apply(&self, ctx: ApplyCtx<'_>) -> Applied {
        let entry = match self.decoded(&ctx, Entry::decode_stamps(ctx.entry)) {
            Some(Entry::Batch(b)) if self.own_open(&b) => {
                let entry = Entry::Batch(b);
                self.log.committed_one(ctx.entry.len(), Some(&entry));
                self.observe_own(&entry);
                return Applied {
                    status: ApplyStatus::Normal,
                    ts: self.w(),
                };
            }
            // Another epoch's batch is replayed: its writes are needed.
            Some(Entry::Batch(_)) => self.decode(&ctx),
            // Markers decode alike either way; a malformed entry was logged once.
            other => other,
        };
        self.log.committed_one(ctx.entry.len(), entry.as_ref());
        self.apply_entry(ctx, entry)
    }

    /// End of a round of applied entries (the group's thread ends its turn): a leader sends
    /// the `W_s` they moved to the other shards' leaders, once for the whole round.
    pub fn applied_round(&self) {
        if self.is_leader() {
            self.push_watermark();
        }
    }

    /// Follower apply callback (`register_for_follower_par_id_return`): replay or queue.
    pub fn follower_apply(&self, ctx: ApplyCtx<'_>) -> Applied {
        let entry = self.decode(&ctx);
        self.apply_entry(ctx, entry)
    }

    fn apply_entry(&self, ctx: ApplyCtx<'_>, entry: Option<Entry>) -> Applied {
        let Some(entry) = entry else {
            return Applied::normal(0);
        };
        self.observe_own(&entry);
        let status = match &entry {
            Entry::NoOp { .. } => ApplyStatus::NoOps,
            Entry::Ending { .. } => ApplyStatus::Ending,
            Entry::Advancer | Entry::Heartbeat { .. } => {
                if matches!(entry, Entry::Advancer) {
                    self.stats.loaded.store(true, Ordering::Release);
                }
                if self.drain(ctx.queue) {
                    ApplyStatus::ReplayDone
                } else {
                    ApplyStatus::Normal
                }
            }
            Entry::Batch(b) if self.own_open(b) => ApplyStatus::Normal,
            Entry::Batch(b) => {
                let drained = self.drain(ctx.queue);
                let verdict = if ctx.queue.is_empty() {
                    self.judge_batch(b)
                } else {
                    // Keep log order: nothing overtakes an older queued entry.
                    BatchVerdict::Wait
                };
                match verdict {
                    BatchVerdict::Replay(keep) => {
                        self.replay(b, keep.as_deref());
                        self.dequeued(ctx.index);
                        if drained {
                            ApplyStatus::ReplayDone
                        } else {
                            ApplyStatus::Normal
                        }
                    }
                    BatchVerdict::Wait => {
                        // A re-offered entry (retry_pending) is already counted.
                        if let std::collections::hash_map::Entry::Vacant(v) =
                            self.first_seen.lock().entry(ctx.index)
                        {
                            v.insert(Instant::now());
                            self.stats.queued.fetch_add(1, Ordering::Relaxed);
                        }
                        ApplyStatus::SafetyFail
                    }
                }
            }
        };
        Applied {
            status,
            ts: self.w(),
        }
    }

    /// Whether `b` is a batch this site logged as leader of its open epoch (already installed).
    fn own_open(&self, b: &Batch) -> bool {
        self.open_epoch() == Some(b.epoch)
    }

    /// The verdict on every piece of a batch.
    fn judge_batch(&self, b: &Batch) -> BatchVerdict {
        let mut keep = Vec::with_capacity(b.pieces.len());
        for p in &b.pieces {
            match self.epochs.judge(b.epoch, &p.vt) {
                Verdict::Release => keep.push(true),
                Verdict::Discard => keep.push(false),
                Verdict::Wait => return BatchVerdict::Wait,
            }
        }
        if keep.iter().all(|k| *k) {
            BatchVerdict::Replay(None)
        } else {
            BatchVerdict::Replay(Some(keep))
        }
    }

    /// Replays the kept pieces of `b` (all if `keep` is `None`).
    fn replay(&self, b: &Batch, keep: Option<&[bool]>) {
        let me = self.shard_id as usize;
        let filtered;
        let batch = match keep {
            None => b,
            Some(keep) => {
                let discarded = keep.iter().filter(|k| !**k).count();
                self.stats
                    .discarded
                    .fetch_add(discarded as u64, Ordering::Relaxed);
                filtered = Batch {
                    pieces: b
                        .pieces
                        .iter()
                        .zip(keep)
                        .filter(|(_, k)| **k)
                        .map(|(p, _)| p.clone())
                        .collect(),
                    ..b.clone()
                };
                &filtered
            }
        };
        match mako_txn::replay(batch, &self.store, me) {
            Ok(_) => {
                self.stats.replayed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(shard = self.shard_id, "replay failed: {e}"),
        }
    }

    /// Books the replay of entry `index` if it had been queued: queue depth and replay lag.
    fn dequeued(&self, index: u64) {
        let first = self.first_seen.lock().remove(&index);
        if let Some(t) = first {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            self.lag.lock().push(t.elapsed().as_micros() as u64);
        }
    }

    /// Replays queued entries, oldest first, while they are decided; returns whether any was.
    fn drain(&self, queue: &mut PendingQueue) -> bool {
        let mut any = false;
        while let Some(front) = queue.front() {
            let batch = match Entry::decode(&front.entry) {
                Ok(Entry::Batch(b)) => Some(b),
                // Only batches are queued; anything else has nothing to replay.
                Ok(_) | Err(_) => None,
            };
            let verdict = match &batch {
                Some(b) if !self.own_open(b) => self.judge_batch(b),
                _ => BatchVerdict::Replay(None),
            };
            if let BatchVerdict::Wait = verdict {
                break;
            }
            let QueuedEntry { index, .. } = queue.pop_front().unwrap_or(QueuedEntry {
                index: 0,
                entry: Bytes::new(),
            });
            if let (Some(b), BatchVerdict::Replay(keep)) = (&batch, verdict)
                && !self.own_open(b)
            {
                self.replay(b, keep.as_deref());
            }
            self.dequeued(index);
            any = true;
        }
        any
    }
}
