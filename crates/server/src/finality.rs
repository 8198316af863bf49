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
use mako_watermark::{Epoch, WatermarkVector};
use parking_lot::{Mutex, MutexGuard};
use scc::{AtomicShared, Guard, Shared, Tag};

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
///
/// [`Finality::is_final`] runs on every install that trims, on every writer thread, so it
/// takes no lock: the led epochs are an immutable [`Led`] behind an atomic pointer that
/// changes swap whole (under `writing`); a reader sees the old one or the new one.
#[derive(Default)]
pub(crate) struct VersionFinality {
    /// Epochs below this are final here and their discarded versions removed.
    purged_below: AtomicU32,
    /// The epochs led and not purged yet; null if none.
    led: AtomicShared<Led>,
    /// Serialises the changes of `led` (each reads the current one to make the next).
    writing: Mutex<()>,
    /// Held across a purge and across a snapshot restore, so that a purge that began before
    /// a restore never marks the restored versions purged.
    exclusive: Mutex<()>,
}

impl std::fmt::Debug for VersionFinality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionFinality")
            .field("purged_below", &self.purged_below())
            .field("led", &self.state().led)
            .finish()
    }
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

    /// Calls `f` on the current led epochs.
    fn with_led<R>(&self, f: impl FnOnce(Option<&Led>) -> R) -> R {
        let guard = Guard::new();
        f(self.led.load(Ordering::Acquire, &guard).as_ref())
    }

    /// Replaces the led epochs by `next(current)`, one change at a time.
    fn update_led(&self, next: impl FnOnce(Option<&Led>) -> Option<Led>) {
        let _writing = self.writing.lock();
        let led = self.with_led(next);
        self.led
            .swap((led.map(Shared::new), Tag::None), Ordering::AcqRel);
    }

    /// The state a snapshot carries.
    pub(crate) fn state(&self) -> FinalityState {
        // `led` first: a purge finishing in between only raises `purged_below`, and a state
        // that names an epoch as led but not purged is the conservative one.
        let led = self.with_led(|l| l.map(|l| (l.lowest, l.newest)));
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
        self.update_led(|led| {
            let mine = led.map(|l| (l.lowest, l.newest));
            let merged = match (mine, from.led) {
                (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
                (a, b) => a.or(b),
            };
            merged.map(|(lowest, newest)| Led {
                lowest,
                newest,
                vw: vw(newest).unwrap_or_else(|| Arc::new(WatermarkVector::new(shards))),
            })
        });
        let below = self.purged_below().min(from.purged_below);
        self.purged_below.store(below, Ordering::Release);
    }

    /// Whether this site led an epoch in `from..=upto`.
    pub(crate) fn led_within(&self, from: Epoch, upto: Epoch) -> bool {
        self.with_led(|l| l.is_some_and(|l| l.lowest <= upto && l.newest >= from))
    }

    /// This site opens `epoch` as leader; `vw` is the epoch's `VW`.
    pub(crate) fn opened(&self, epoch: Epoch, vw: Arc<WatermarkVector>) {
        self.update_led(|led| {
            let lowest = led.map_or(epoch, |l| l.lowest.min(epoch));
            Some(Led {
                lowest,
                newest: epoch,
                vw,
            })
        });
    }

    /// Every epoch below `below` is final and purged here.
    pub(crate) fn purged(&self, below: Epoch) {
        self.purged_below.fetch_max(below, Ordering::AcqRel);
        self.update_led(|led| match led {
            Some(l) if l.newest < below => None,
            Some(l) => Some(Led {
                lowest: l.lowest.max(below),
                newest: l.newest,
                vw: Arc::clone(&l.vw),
            }),
            None => None,
        });
    }
}

impl Finality for VersionFinality {
    fn is_final(&self, stamp: &Stamp) -> bool {
        if stamp.epoch < self.purged_below() {
            return true;
        }
        self.with_led(|led| match led {
            None => true,
            Some(l) if stamp.epoch < l.lowest => true,
            // `VW` covers `VT`, read in place (no copy of the vector).
            Some(l) if stamp.epoch == l.newest => l.vw.covers(&stamp.vt),
            Some(_) => false,
        })
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

    /// The finality rule as written first, over a plain state under no concurrency: the
    /// reference the lock-free [`VersionFinality`] must agree with.
    #[derive(Default)]
    struct Model {
        purged_below: Epoch,
        led: Option<(Epoch, Epoch, Arc<WatermarkVector>)>,
    }

    impl Model {
        fn is_final(&self, s: &Stamp) -> bool {
            if s.epoch < self.purged_below {
                return true;
            }
            match &self.led {
                None => true,
                Some((lowest, _, _)) if s.epoch < *lowest => true,
                Some((_, newest, vw)) if s.epoch == *newest => {
                    mako_watermark::covers(&s.vt, &vw.load())
                }
                Some(_) => false,
            }
        }
    }

    #[test]
    fn the_lock_free_test_agrees_with_the_rule_under_every_change() {
        let f = VersionFinality::default();
        let mut m = Model::default();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let (mut finals, mut not) = (0, 0);
        // Whether the model's `VW` is the site's (so advancing it advances both).
        let mut shared = true;
        for _ in 0..5_000 {
            match next(8) {
                0 => {
                    let e = next(10) as Epoch;
                    let vw = Arc::new(WatermarkVector::new(2));
                    f.opened(e, Arc::clone(&vw));
                    shared = true;
                    let lowest = m.led.as_ref().map_or(e, |l| l.0.min(e));
                    m.led = Some((lowest, e, vw));
                }
                1 => {
                    let below = next(10) as Epoch;
                    f.purged(below);
                    m.purged_below = m.purged_below.max(below);
                    match &mut m.led {
                        Some(l) if l.1 < below => m.led = None,
                        Some(l) => l.0 = l.0.max(below),
                        None => {}
                    }
                }
                2 => {
                    let from = FinalityState {
                        purged_below: next(10) as Epoch,
                        led: match next(3) {
                            0 => None,
                            _ => {
                                let a = next(10) as Epoch;
                                Some((a, a + next(3) as Epoch))
                            }
                        },
                    };
                    let given = (next(2) == 0).then(|| Arc::new(WatermarkVector::new(2)));
                    let _x = f.exclusive();
                    f.restore(from, 2, |_| given.clone());
                    let mine = m.led.as_ref().map(|l| (l.0, l.1));
                    let merged = match (mine, from.led) {
                        (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
                        (a, b) => a.or(b),
                    };
                    // Without a given `VW` each side makes its own empty one, which no
                    // later step advances (the model's stands in for the site's).
                    shared = given.is_some();
                    m.led = merged.map(|(lo, hi)| {
                        (
                            lo,
                            hi,
                            given.unwrap_or_else(|| Arc::new(WatermarkVector::new(2))),
                        )
                    });
                    m.purged_below = m.purged_below.min(from.purged_below);
                }
                3 => {
                    if let Some((_, _, vw)) = m.led.as_ref().filter(|_| shared) {
                        vw.advance(next(3) as usize, next(8));
                    }
                }
                _ => {
                    let s = stamp(next(11) as Epoch, &[next(8), next(8)]);
                    let want = m.is_final(&s);
                    assert_eq!(f.is_final(&s), want, "{s:?}");
                    if want {
                        finals += 1;
                    } else {
                        not += 1;
                    }
                }
            }
            let led = m.led.as_ref().map(|l| (l.0, l.1));
            assert_eq!(
                f.state(),
                FinalityState {
                    purged_below: m.purged_below,
                    led
                }
            );
            let (a, b) = (next(10) as Epoch, next(10) as Epoch);
            let within = led.is_some_and(|(lo, hi)| lo <= b && hi >= a);
            assert_eq!(f.led_within(a, b), within);
        }
        assert!(
            finals > 100 && not > 100,
            "both answers exercised: {finals} {not}"
        );
    }

    #[test]
    fn readers_racing_changes_never_see_a_missing_state() {
        // The led epochs go (1..=1) -> (1..=2) -> ... with each epoch's VW covering [5, 5].
        // A version of an epoch above every led one is never final; a reader that saw no led
        // epochs in the middle of a change (a torn swap) would call it final.
        let f = VersionFinality::default();
        let full = || {
            let vw = Arc::new(WatermarkVector::new(2));
            vw.advance_all(&[5, 5]);
            vw
        };
        f.opened(1, full());
        std::thread::scope(|s| {
            let f = &f;
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(move || {
                        for _ in 0..20_000 {
                            assert!(!f.is_final(&stamp(1_000, &[1, 1])));
                            assert!(f.is_final(&stamp(0, &[9, 9])), "below every led epoch");
                        }
                    })
                })
                .collect();
            for e in 2..500 {
                f.opened(e, full());
            }
            for r in readers {
                r.join().unwrap();
            }
        });
        assert!(!f.is_final(&stamp(1, &[1, 1])));
        assert!(f.is_final(&stamp(499, &[1, 1])));
    }
}
