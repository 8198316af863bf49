//! What a site knows of epochs: the `meta` group's history and each open epoch's `VW`.
//!
//! A transaction of epoch `e` is released, and its piece replayed, when
//! [`EpochView::judge`] says so: at once if `FVW(e)` is final and covers its `VT`
//! (kept), never if `FVW(e)` is final and does not (discarded), and otherwise once
//! the epoch's own `VW_e` covers it. `VW_e` is safe to use before `FVW(e)` is known
//! because every component of it is `W_s` of a committed log prefix up to the `NoOp`
//! closing `e`, which is at most `FVW(e)[s]`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use mako_watermark::{Epoch, EpochError, EpochHistory, Fate, MetaCommand, WatermarkVector};
use parking_lot::Mutex;

/// How far beyond the newest known epoch a watermark may name an epoch and still be kept.
const EPOCHS_AHEAD: Epoch = 8;

/// The verdict on an epoch-`e` transaction (or piece) with a given `VT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Durable and kept: release it, replay it.
    Release,
    /// Discarded by its epoch's final watermark: never release, never replay.
    Discard,
    /// Not decided yet.
    Wait,
}

/// A site's knowledge of epochs.
#[derive(Debug)]
pub struct EpochView {
    shards: u32,
    history: Mutex<EpochHistory>,
    /// `VW_e` for every epoch whose `FVW` is not final yet (and the newest).
    vws: Mutex<BTreeMap<Epoch, Arc<WatermarkVector>>>,
    /// Called whenever a verdict may have changed (see [`EpochView::listen`]).
    listeners: Mutex<Vec<Weak<Listener>>>,
    /// Whether anyone ever listened (spares the lock on every move otherwise).
    listened: AtomicBool,
}

/// A callback run whenever a release verdict may have changed.
pub type Listener = dyn Fn() + Send + Sync;

impl EpochView {
    /// The view of a fresh deployment: epoch 0.
    pub fn new(shards: u32) -> Self {
        EpochView {
            shards,
            history: Mutex::new(EpochHistory::new(shards)),
            vws: Mutex::new(BTreeMap::new()),
            listeners: Mutex::new(Vec::new()),
            listened: AtomicBool::new(false),
        }
    }

    /// Calls `f` whenever a verdict may have changed (a `VW_e` moved or the history changed),
    /// until `f` is dropped; for event loops that poll [`EpochView::judge`] instead of
    /// blocking in [`EpochView::wait`]. `f` runs on the thread that made the change: it must
    /// be quick and must not block.
    pub fn listen(&self, f: &Arc<Listener>) {
        let mut ls = self.listeners.lock();
        ls.retain(|l| l.strong_count() > 0);
        ls.push(Arc::downgrade(f));
        self.listened.store(true, Ordering::Release);
    }

    /// Runs every live listener.
    fn tell_listeners(&self) {
        if !self.listened.load(Ordering::Acquire) {
            return;
        }
        let live: Vec<Arc<Listener>> = {
            let ls = self.listeners.lock();
            if ls.is_empty() {
                return;
            }
            ls.iter().filter_map(Weak::upgrade).collect()
        };
        for f in live {
            f();
        }
    }

    /// A copy of the history.
    pub fn history(&self) -> EpochHistory {
        self.history.lock().clone()
    }

    /// Runs `f` on the history (do not block inside).
    pub fn with<R>(&self, f: impl FnOnce(&EpochHistory) -> R) -> R {
        f(&self.history.lock())
    }

    /// The newest epoch known.
    pub fn current(&self) -> Epoch {
        self.history.lock().current()
    }

    /// `VW_e`; `None` once `FVW(e)` is final (it decides instead) or if `e` is too far ahead.
    pub fn vw(&self, e: Epoch) -> Option<Arc<WatermarkVector>> {
        let (current, decided) = self.with(|h| (h.current(), h.is_final(e)));
        if decided || e > current.saturating_add(EPOCHS_AHEAD) {
            return None;
        }
        let mut vws = self.vws.lock();
        Some(Arc::clone(vws.entry(e).or_insert_with(|| {
            Arc::new(WatermarkVector::new(self.shards as usize))
        })))
    }

    /// Every epoch's `VW_e` known here (epochs not final yet), as values.
    pub(crate) fn vw_values(&self) -> Vec<(Epoch, Vec<u64>)> {
        self.vws
            .lock()
            .iter()
            .map(|(e, v)| (*e, v.load()))
            .collect()
    }

    /// Learns `W_s` of epoch `e`; returns whether `VW_e` moved.
    pub fn learn_w(&self, e: Epoch, shard: u32, w: u64) -> bool {
        let moved = self.vw(e).is_some_and(|v| v.advance(shard as usize, w));
        if moved {
            self.tell_listeners();
        }
        moved
    }

    /// Applies a committed `meta` command (on a member of the group); returns whether it changed.
    pub fn apply(&self, cmd: &MetaCommand) -> Result<bool, EpochError> {
        let changed = self.history.lock().apply(cmd)?;
        if changed {
            self.changed();
        }
        Ok(changed)
    }

    /// Takes a history received from the `meta` group if it is newer; returns whether it did.
    pub fn merge(&self, h: EpochHistory) -> Result<bool, EpochError> {
        let changed = self.history.lock().merge(h)?;
        if changed {
            self.changed();
        }
        Ok(changed)
    }

    /// Wakes every waiter (the history changed) and drops `VW`s of decided epochs.
    ///
    /// Waiters register with their vector before their last check of the history, so a
    /// change after that check wakes them; no vector is notified while the history or map
    /// lock is held.
    fn changed(&self) {
        let h = self.history.lock().clone();
        let all: Vec<Arc<WatermarkVector>> = {
            let mut vws = self.vws.lock();
            let all = vws.values().cloned().collect();
            vws.retain(|e, _| !h.is_final(*e));
            all
        };
        for vw in all {
            vw.notify();
        }
        self.tell_listeners();
    }

    /// The verdict on an epoch-`e` transaction stamped `vt`, as known now.
    pub fn judge(&self, e: Epoch, vt: &[u64]) -> Verdict {
        match self.history.lock().fate(e, vt) {
            Fate::Kept => return Verdict::Release,
            Fate::Discarded => return Verdict::Discard,
            Fate::Current | Fate::Closing | Fate::Unknown => {}
        }
        match self.vw(e) {
            Some(vw) if vw.covers(vt) => Verdict::Release,
            _ => Verdict::Wait,
        }
    }

    /// Waits until `FVW(e)` decides an epoch-`e` transaction stamped `vt` (kept or discarded)
    /// or `deadline` passes; returns its fate then.
    pub fn wait_final(&self, e: Epoch, vt: &[u64], deadline: Instant) -> Fate {
        let fate = || self.history.lock().fate(e, vt);
        let decided = |f: Fate| matches!(f, Fate::Kept | Fate::Discarded);
        let Some(vw) = self.vw(e) else {
            return fate();
        };
        let mut last = Fate::Unknown;
        vw.wait_until(deadline, || {
            last = fate();
            decided(last)
        });
        last
    }

    /// Waits until the verdict on (`e`, `vt`) is decided or `deadline` passes.
    pub fn wait(&self, e: Epoch, vt: &[u64], deadline: Instant) -> Verdict {
        let Some(vw) = self.vw(e) else {
            return self.judge(e, vt);
        };
        let mut verdict = Verdict::Wait;
        // The verdict changes only when `VW` comes to cover `vt` or the history changes.
        vw.wait_for(deadline, vt, || {
            verdict = self.judge(e, vt);
            verdict != Verdict::Wait
        });
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn listeners_hear_every_watermark_move_and_history_change_while_held() {
        let view = EpochView::new(2);
        let heard = Arc::new(AtomicUsize::new(0));
        let f: Arc<Listener> = {
            let heard = Arc::clone(&heard);
            Arc::new(move || {
                heard.fetch_add(1, Ordering::SeqCst);
            })
        };
        view.listen(&f);
        assert_eq!(view.judge(0, &[5, 0]), Verdict::Wait);
        assert!(view.learn_w(0, 0, 5));
        assert_eq!(heard.load(Ordering::SeqCst), 1, "a move is announced");
        assert_eq!(view.judge(0, &[5, 0]), Verdict::Release);
        assert!(!view.learn_w(0, 0, 4));
        assert_eq!(
            heard.load(Ordering::SeqCst),
            1,
            "no move, nothing announced"
        );
        let new = MetaCommand::NewEpoch {
            shard: 1,
            leader: 4,
            term: 2,
            reset: 0,
        };
        assert!(view.apply(&new).expect("applies"));
        assert_eq!(heard.load(Ordering::SeqCst), 2, "a new epoch is announced");
        drop(f);
        assert!(view.learn_w(1, 0, 9));
        assert_eq!(
            heard.load(Ordering::SeqCst),
            2,
            "a dropped listener hears nothing"
        );
        assert!(view.listeners.lock().iter().all(|l| l.strong_count() == 0));
    }
}
