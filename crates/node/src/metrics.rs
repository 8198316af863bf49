//! Counters of the client front (released, aborted by reason, unknown, release latency),
//! read by `Status` and the metrics endpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Client-visible outcomes counted by a server.
#[derive(Debug, Default)]
pub struct Counters {
    released: AtomicU64,
    unknown: AtomicU64,
    malformed: AtomicU64,
    aborts: Mutex<BTreeMap<&'static str, u64>>,
    /// Release latency histogram: counts per power-of-two microsecond bucket.
    latency: [AtomicU64; 32],
}

impl Counters {
    /// One transaction released after `latency` in commit.
    pub fn released(&self, latency: Duration) {
        self.released.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let bucket = (63 - us.leading_zeros() as usize).min(31);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// One transaction aborted for `reason`.
    pub fn aborted(&self, reason: &'static str) {
        *self.aborts.lock().entry(reason).or_insert(0) += 1;
    }

    /// One commit whose release did not arrive in time.
    pub fn unknown(&self) {
        self.unknown.fetch_add(1, Ordering::Relaxed);
    }

    /// One malformed request.
    pub fn malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Released so far.
    pub fn released_total(&self) -> u64 {
        self.released.load(Ordering::Relaxed)
    }

    /// Unknown outcomes so far.
    pub fn unknown_total(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }

    /// Malformed requests so far.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Aborts by reason.
    pub fn aborts(&self) -> Vec<(String, u64)> {
        self.aborts
            .lock()
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect()
    }

    /// Release latency histogram: `(upper bound in µs, count)` per bucket, ascending.
    pub fn latency_buckets(&self) -> Vec<(u64, u64)> {
        self.latency
            .iter()
            .enumerate()
            .map(|(i, c)| (2u64 << i, c.load(Ordering::Relaxed)))
            .collect()
    }
}
