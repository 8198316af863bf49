//! Per-100 ms time series of a TPC-C run (commits, aborts and, where replicated, releases with
//! their latency per bucket) and latency distribution curves: what `mako bench --plot` draws.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::txn::TxnKind;

/// Width of one bucket of the series.
pub const BUCKET: Duration = Duration::from_millis(100);

/// One 100 ms bucket of a TPC-C run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Bucket {
    /// Start of the bucket, ms into the measured phase.
    pub start_ms: u64,
    /// Transactions (all types) committed in this bucket (speculatively, on a cluster).
    pub committed: u64,
    /// NewOrders committed in this bucket.
    pub new_orders: u64,
    /// Aborted attempts in this bucket.
    pub aborted: u64,
    /// Transactions whose release was observed in this bucket (0 where nothing is replicated).
    pub released: u64,
    /// Release latency (first attempt's begin to observed release) p50 of this bucket's
    /// releases, µs; `None` without releases.
    pub release_p50_us: Option<f64>,
    /// Release latency p99, µs.
    pub release_p99_us: Option<f64>,
}

impl Bucket {
    /// Committed transactions per second in this bucket.
    pub fn committed_per_sec(&self) -> f64 {
        self.committed as f64 / BUCKET.as_secs_f64()
    }

    /// Released transactions per second in this bucket.
    pub fn released_per_sec(&self) -> f64 {
        self.released as f64 / BUCKET.as_secs_f64()
    }
}

/// One bucket while a worker records it.
#[derive(Default)]
struct Acc {
    committed: u64,
    new_orders: u64,
    aborted: u64,
    released: u64,
    /// Release latency, µs (allocated at the bucket's first release).
    lat: Option<Histogram<u32>>,
}

/// Release latency histogram of one bucket: 1 µs to 60 s, 2 significant digits, 32-bit
/// counts (a few KB per bucket that has releases).
fn bucket_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant histogram bounds are valid")
}

/// Buckets needed to cover `d`.
pub(crate) fn buckets_for(d: Duration) -> usize {
    d.as_nanos().div_ceil(BUCKET.as_nanos()) as usize
}

/// A worker's recorder of the series (merged with the other workers' after the run).
pub(crate) struct Recorder {
    started: Instant,
    buckets: Vec<Acc>,
    /// Buckets kept at most; later events are dropped (the series covers the measured phase).
    cap: usize,
}

impl Recorder {
    /// A recorder of the buckets from `started` over `span`.
    pub(crate) fn new(started: Instant, span: Duration) -> Self {
        Recorder {
            started,
            buckets: Vec::new(),
            cap: buckets_for(span),
        }
    }

    fn at(&mut self, now: Instant) -> Option<&mut Acc> {
        let i =
            (now.saturating_duration_since(self.started).as_nanos() / BUCKET.as_nanos()) as usize;
        if i >= self.cap {
            return None;
        }
        if self.buckets.len() <= i {
            self.buckets.resize_with(i + 1, Acc::default);
        }
        self.buckets.get_mut(i)
    }

    /// A transaction of type `kind` committed at `now`.
    pub(crate) fn committed(&mut self, now: Instant, kind: TxnKind) {
        if let Some(a) = self.at(now) {
            a.committed += 1;
            a.new_orders += u64::from(kind == TxnKind::NewOrder);
        }
    }

    /// An aborted attempt at `now`.
    pub(crate) fn aborted(&mut self, now: Instant) {
        if let Some(a) = self.at(now) {
            a.aborted += 1;
        }
    }

    /// A release observed at `now` of a transaction that took `latency` from its begin.
    pub(crate) fn released(&mut self, now: Instant, latency: Duration) {
        if let Some(a) = self.at(now) {
            a.released += 1;
            let us = (latency.as_micros() as u64).clamp(1, 60_000_000);
            let _ = a.lat.get_or_insert_with(bucket_histogram).record(us);
        }
    }

    /// Adds another worker's buckets to these.
    pub(crate) fn merge(&mut self, o: Recorder) {
        if self.buckets.len() < o.buckets.len() {
            self.buckets.resize_with(o.buckets.len(), Acc::default);
        }
        for (into, from) in self.buckets.iter_mut().zip(o.buckets) {
            into.committed += from.committed;
            into.new_orders += from.new_orders;
            into.aborted += from.aborted;
            into.released += from.released;
            if let Some(h) = from.lat {
                match &mut into.lat {
                    Some(x) => {
                        let _ = x.add(&h);
                    }
                    None => into.lat = Some(h),
                }
            }
        }
    }

    /// The series of the first `n` buckets (empty buckets where nothing was recorded).
    pub(crate) fn series(&self, n: usize) -> Vec<Bucket> {
        let empty = Acc::default();
        (0..n.min(self.cap))
            .map(|i| {
                let a = self.buckets.get(i).unwrap_or(&empty);
                let q = |p: f64| a.lat.as_ref().map(|h| h.value_at_quantile(p) as f64);
                Bucket {
                    start_ms: i as u64 * BUCKET.as_millis() as u64,
                    committed: a.committed,
                    new_orders: a.new_orders,
                    aborted: a.aborted,
                    released: a.released,
                    release_p50_us: q(0.5),
                    release_p99_us: q(0.99),
                }
            })
            .collect()
    }
}

/// One point of a latency distribution: the latency at a percentile.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Quantile {
    /// Percentile, 0 to 99.99.
    pub pct: f64,
    /// Latency at that percentile, µs.
    pub us: f64,
}

/// Points of a distribution curve, evenly spaced in "nines" (`-log10(1 - p)`) from p0 to p99.99.
const CURVE_STEPS: u32 = 40;

/// The "nines" a distribution curve reaches (4: p99.99).
const CURVE_NINES: f64 = 4.0;

/// The latency distribution of `h` (a histogram of nanoseconds) at percentiles evenly spaced
/// in "nines", p0 to p99.99; empty for an empty histogram.
pub(crate) fn latency_curve(h: &Histogram<u64>) -> Vec<Quantile> {
    if h.is_empty() {
        return Vec::new();
    }
    (0..=CURVE_STEPS)
        .map(|i| {
            let nines = CURVE_NINES * f64::from(i) / f64::from(CURVE_STEPS);
            let pct = 100.0 * (1.0 - 10f64.powf(-nines));
            Quantile {
                pct,
                us: h.value_at_quantile(pct / 100.0) as f64 / 1000.0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_per_100_ms_and_merge() {
        let t0 = Instant::now();
        let span = Duration::from_millis(300);
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut a = Recorder::new(t0, span);
        let mut b = Recorder::new(t0, span);
        a.committed(ms(10), TxnKind::NewOrder);
        a.committed(ms(20), TxnKind::Payment);
        b.committed(ms(250), TxnKind::NewOrder);
        b.aborted(ms(120));
        a.released(ms(260), Duration::from_micros(300));
        b.released(ms(270), Duration::from_micros(300));
        // Past the span: dropped.
        a.committed(ms(310), TxnKind::Payment);
        a.merge(b);
        let s = a.series(buckets_for(span));
        assert_eq!(s.len(), 3);
        assert_eq!(s.iter().map(|b| b.committed).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(
            s.iter().map(|b| b.new_orders).collect::<Vec<_>>(),
            [1, 0, 1]
        );
        assert_eq!(s.iter().map(|b| b.aborted).collect::<Vec<_>>(), [0, 1, 0]);
        assert_eq!(s[2].released, 2);
        assert_eq!(s[0].release_p50_us, None);
        assert!(
            s[2].release_p99_us
                .is_some_and(|p| (298.0..=302.0).contains(&p))
        );
        assert_eq!(
            s.iter().map(|b| b.start_ms).collect::<Vec<_>>(),
            [0, 100, 200]
        );
        assert_eq!(s[0].committed_per_sec(), 20.0);
        assert_eq!(s[2].released_per_sec(), 20.0);
    }

    #[test]
    fn curve_runs_from_p0_to_p9999() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for us in 1..=10_000u64 {
            h.record(us * 1000).unwrap();
        }
        let c = latency_curve(&h);
        assert_eq!(c.len(), CURVE_STEPS as usize + 1);
        assert_eq!(c[0].pct, 0.0);
        assert!((c[c.len() - 1].pct - 99.99).abs() < 1e-9);
        let p90 = c.iter().find(|q| (q.pct - 90.0).abs() < 1e-9).unwrap();
        assert!((8_900.0..=9_100.0).contains(&p90.us), "{p90:?}");
        assert!(c.windows(2).all(|w| w[0].us <= w[1].us));
        assert!(latency_curve(&Histogram::new(3).unwrap()).is_empty());
    }
}
