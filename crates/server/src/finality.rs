//! Which versions in a site's store can still be discarded by a failover, and which are final.
//!
//! Only a site that led an epoch holds versions the discard rule may remove: its own
//! speculative commits. Every other version came from replay, which installs only pieces
//! already kept. A version of an epoch this site leads is final once that epoch's `VW`
//! covers its `VT`; a version of an epoch below [`VersionFinality::purged_below`] is final
//! (the epoch's `FVW` is final and its discarded versions are gone). Version chains keep
//! every version after the newest final one (`mako_storage::Reclaim`), so removing a
//! discarded version uncovers the value it overwrote.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use mako_storage::{Finality, Stamp};
use mako_watermark::{Epoch, WatermarkVector, covers};
use parking_lot::{Mutex, MutexGuard, RwLock};

/// The epochs a site led that are not purged yet.
#[derive(Debug)]
struct Led {
    /// The oldest of them.
    lowest: Epoch,
    /// The newest, and its `VW`.
    newest: Epoch,
    vw: Arc<WatermarkVector>,
}

/// A site's finality test for its store's versions.
#[derive(Debug, Default)]
pub(crate) struct VersionFinality {
    /// Epochs below this are final here and their discarded versions removed.
    purged_below: AtomicU32,
    led: RwLock<Option<Led>>,
    /// Held across a purge and across a snapshot restore, so that a purge that began before
    /// a restore never marks the restored versions purged.
    exclusive: Mutex<()>,
}

/// What a snapshot carries of a site's finality: which epochs' versions may still be discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct FinalityState {
    /// Epochs below this are final and purged.
    pub(crate) purged_below: Epoch,
    /// The epochs led and not purged yet (lowest, newest), if any.
    pub(crate) led: Option<(Epoch, Epoch)>,
}

impl VersionFinality {
    /// Epochs below this have final watermarks and no discarded version left here.
    pub(crate) fn purged_below(&self) -> Epoch {
        self.purged_below.load(Ordering::Acquire)
    }

    /// Serialises purges and snapshot restores (see the field).
    pub(crate) fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.exclusive.lock()
    }

    /// The state a snapshot carries.
    pub(crate) fn state(&self) -> FinalityState {
        // `led` first: a purge finishing in between only raises `purged_below`, and a state
        // that names an epoch as led but not purged is the conservative one.
        let led = self.led.read().as_ref().map(|l| (l.lowest, l.newest));
        FinalityState {
            purged_below: self.purged_below(),
            led,
        }
    }

    /// Takes a restored snapshot's state, merged with this site's own (the union of the led
    /// epochs, the lower purge point): every version either may hold is judged as carefully
    /// as it was. `vw(e)` is this site's `VW_e`; an epoch without one (already final) gets an
    /// empty vector, so its versions stay non-final until a purge decides them. Call holding
    /// [`VersionFinality::exclusive`].
    pub(crate) fn restore(
        &self,
        from: FinalityState,
        shards: usize,
        vw: impl FnOnce(Epoch) -> Option<Arc<WatermarkVector>>,
    ) {
        let mut led = self.led.write();
        let mine = led.as_ref().map(|l| (l.lowest, l.newest));
        let merged = match (mine, from.led) {
            (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
            (a, b) => a.or(b),
        };
        *led = merged.map(|(lowest, newest)| Led {
            lowest,
            newest,
            vw: vw(newest).unwrap_or_else(|| Arc::new(WatermarkVector::new(shards))),
        });
        let below = self.purged_below().min(from.purged_below);
        self.purged_below.store(below, Ordering::Release);
    }

    /// Whether this site led an epoch in `from..=upto`.
    pub(crate) fn led_within(&self, from: Epoch, upto: Epoch) -> bool {
        self.led
            .read()
            .as_ref()
            .is_some_and(|l| l.lowest <= upto && l.newest >= from)
    }

    /// This site opens `epoch` as leader; `vw` is the epoch's `VW`.
    pub(crate) fn opened(&self, epoch: Epoch, vw: Arc<WatermarkVector>) {
        let mut led = self.led.write();
        let lowest = led.as_ref().map_or(epoch, |l| l.lowest.min(epoch));
        *led = Some(Led {
            lowest,
            newest: epoch,
            vw,
        });
    }

    /// Every epoch below `below` is final and purged here.
    pub(crate) fn purged(&self, below: Epoch) {
        self.purged_below.fetch_max(below, Ordering::AcqRel);
        let mut led = self.led.write();
        match led.as_mut() {
            Some(l) if l.newest < below => *led = None,
            Some(l) => l.lowest = l.lowest.max(below),
            None => {}
        }
    }
}

impl Finality for VersionFinality {
    fn is_final(&self, stamp: &Stamp) -> bool {
        if stamp.epoch < self.purged_below() {
            return true;
        }
        match &*self.led.read() {
            None => true,
            Some(l) if stamp.epoch < l.lowest => true,
            Some(l) if stamp.epoch == l.newest => covers(&stamp.vt, &l.vw.load()),
            Some(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(epoch: Epoch, vt: &[u64]) -> Stamp {
        Stamp {
            epoch,
            ts: vt[0],
            vt: vt.iter().copied().collect(),
        }
    }

    #[test]
    fn only_versions_of_led_epochs_wait_for_their_watermark() {
        let f = VersionFinality::default();
        // Never led: replayed versions are final.
        assert!(f.is_final(&stamp(3, &[9, 9])));
        let vw = Arc::new(WatermarkVector::new(2));
        f.opened(2, Arc::clone(&vw));
        assert!(f.is_final(&stamp(1, &[9, 9])), "an epoch before any it led");
        assert!(!f.is_final(&stamp(2, &[4, 1])), "not covered yet");
        vw.advance(0, 4);
        vw.advance(1, 1);
        assert!(f.is_final(&stamp(2, &[4, 1])));
        assert!(!f.is_final(&stamp(2, &[5, 1])));
        assert!(
            !f.is_final(&stamp(3, &[1, 1])),
            "after an epoch it led: unknown"
        );
        f.purged(3);
        assert!(f.is_final(&stamp(2, &[5, 1])));
        assert!(f.is_final(&stamp(3, &[1, 1])));
        assert!(!f.led_within(0, 10));
    }
}
