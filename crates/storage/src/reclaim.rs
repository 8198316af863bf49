//! What install may trim from a version chain: the reclaim bound and the finality test.
//!
//! A chain keeps, of its versions at or below the reclaim bound, only the newest one that is
//! *final*, and every version after it. A version that is not final (a shard leader's
//! speculative commit that a failover may still discard) keeps its predecessors, so that
//! removing it ([`crate::Record::remove_versions`]) leaves the version it overwrote.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::record::Stamp;

/// Decides whether a version can no longer be discarded.
pub trait Finality: Send + Sync {
    /// Whether the version stamped `stamp` is final (never to be removed).
    fn is_final(&self, stamp: &Stamp) -> bool;
}

/// The reclaim policy shared by a store's tables.
#[derive(Default)]
pub struct Reclaim {
    bound: AtomicU64,
    finality: OnceLock<Arc<dyn Finality>>,
}

impl std::fmt::Debug for Reclaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reclaim")
            .field("bound", &self.bound())
            .field("finality", &self.finality.get().is_some())
            .finish()
    }
}

impl Reclaim {
    /// Every version final, bound `u64::MAX`: chains keep only their newest version.
    pub fn new() -> Self {
        Reclaim {
            bound: AtomicU64::new(u64::MAX),
            finality: OnceLock::new(),
        }
    }

    /// Versions at or below this timestamp may be trimmed (if final and not the newest such).
    pub fn bound(&self) -> u64 {
        self.bound.load(Ordering::Relaxed)
    }

    /// Sets the bound.
    pub fn set_bound(&self, ts: u64) {
        self.bound.store(ts, Ordering::Relaxed);
    }

    /// Installs the finality test (once; later calls are refused and return `false`).
    pub fn set_finality(&self, f: Arc<dyn Finality>) -> bool {
        self.finality.set(f).is_ok()
    }

    /// Whether the version stamped `stamp` is final (always, without a finality test).
    pub fn is_final(&self, stamp: &Stamp) -> bool {
        self.finality.get().is_none_or(|f| f.is_final(stamp))
    }
}
