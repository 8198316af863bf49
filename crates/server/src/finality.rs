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
use parking_lot::RwLock;

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
}

impl VersionFinality {
    /// Epochs below this have final watermarks and no discarded version left here.
    pub(crate) fn purged_below(&self) -> Epoch {
        self.purged_below.load(Ordering::Acquire)
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
