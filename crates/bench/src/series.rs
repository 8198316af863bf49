//! Per-100 ms time series of a cluster run: releases, aborts by reason, unknown outcomes and
//! release latency per bucket, and the failover figures derived from them.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mako_txn::AbortReason;

/// Width of one bucket of the series.
pub const BUCKET: Duration = Duration::from_millis(100);

/// Number of abort reasons counted per bucket (in [`AbortReason::ALL`] order).
pub const REASONS: usize = AbortReason::ALL.len();

/// One 100 ms bucket of a run's time series.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Bucket {
    /// Start of the bucket, ms into the measured phase.
    pub start_ms: u64,
    /// Speculative commits.
    pub spec: u64,
    /// Transactions whose release was observed in this bucket.
    pub released: u64,
    /// Aborts by reason, in [`AbortReason::ALL`] order (speculative commits the failover
    /// discarded count as `failover`).
    pub aborts: [u64; REASONS],
    /// Speculative commits given up as `Unknown` (neither released nor discarded in time).
    pub unknown: u64,
    /// Times a client found no serving leader for its home shard and backed off 1 ms.
    pub backoffs: u64,
    /// Release latency (begin to observed release) p50, µs; `None` without releases.
    pub p50_us: Option<f64>,
    /// Release latency p99, µs.
    pub p99_us: Option<f64>,
}

impl Bucket {
    /// Every abort in the bucket.
    pub fn aborted(&self) -> u64 {
        self.aborts.iter().sum()
    }

    /// Aborts of one reason.
    pub fn aborts_of(&self, r: AbortReason) -> u64 {
        AbortReason::ALL
            .iter()
            .position(|&x| x == r)
            .map_or(0, |i| self.aborts[i])
    }

    /// Released transactions per second in this bucket.
    pub fn released_per_sec(&self) -> f64 {
        self.released as f64 / BUCKET.as_secs_f64()
    }
}

/// One bucket while a worker records it.
#[derive(Default)]
struct Acc {
    spec: u64,
    released: u64,
    aborts: [u64; REASONS],
    unknown: u64,
    backoffs: u64,
    lat: Option<Histogram<u64>>,
}

/// A worker's recorder of the series (merged with the others' after the run).
pub(crate) struct Recorder {
    started: Instant,
    buckets: Vec<Acc>,
    /// Buckets kept at most (later events are dropped: the series covers the measured phase).
    cap: usize,
}

/// Latency histogram of one bucket: 1 µs to 60 s, 2 significant digits.
fn bucket_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant histogram bounds are valid")
}

/// Buckets needed to cover `d`.
pub(crate) fn buckets_for(d: Duration) -> usize {
    d.as_nanos().div_ceil(BUCKET.as_nanos()) as usize
}

impl Recorder {
    /// A recorder of buckets from `started` over `span`.
    pub(crate) fn new(started: Instant, span: Duration) -> Self {
        let cap = buckets_for(span);
        Recorder {
            started,
            buckets: Vec::with_capacity(cap),
            cap,
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

    /// A speculative commit at `now`.
    pub(crate) fn spec(&mut self, now: Instant) {
        if let Some(a) = self.at(now) {
            a.spec += 1;
        }
    }

    /// A release observed at `now` of a transaction that took `latency`.
    pub(crate) fn released(&mut self, now: Instant, latency: Duration) {
        if let Some(a) = self.at(now) {
            a.released += 1;
            let us = (latency.as_micros() as u64).clamp(1, 60_000_000);
            let _ = a.lat.get_or_insert_with(bucket_histogram).record(us);
        }
    }

    /// An abort at `now`.
    pub(crate) fn aborted(&mut self, now: Instant, r: AbortReason) {
        let i = AbortReason::ALL.iter().position(|&x| x == r).unwrap_or(0);
        if let Some(a) = self.at(now) {
            a.aborts[i] += 1;
        }
    }

    /// An outcome given up as unknown at `now`.
    pub(crate) fn unknown(&mut self, now: Instant) {
        if let Some(a) = self.at(now) {
            a.unknown += 1;
        }
    }

    /// A back-off for want of a serving leader at `now`.
    pub(crate) fn backoff(&mut self, now: Instant) {
        if let Some(a) = self.at(now) {
            a.backoffs += 1;
        }
    }

    /// Merges the workers' recorders into one series of `n` buckets.
    pub(crate) fn merge(recs: Vec<Recorder>, n: usize) -> Vec<Bucket> {
        let mut acc: Vec<Acc> = (0..n).map(|_| Acc::default()).collect();
        for r in recs {
            for (into, from) in acc.iter_mut().zip(r.buckets) {
                into.spec += from.spec;
                into.released += from.released;
                into.unknown += from.unknown;
                into.backoffs += from.backoffs;
                for (a, b) in into.aborts.iter_mut().zip(from.aborts) {
                    *a += b;
                }
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
        acc.into_iter()
            .enumerate()
            .map(|(i, a)| Bucket {
                start_ms: i as u64 * BUCKET.as_millis() as u64,
                spec: a.spec,
                released: a.released,
                aborts: a.aborts,
                unknown: a.unknown,
                backoffs: a.backoffs,
                p50_us: a.lat.as_ref().map(|h| h.value_at_quantile(0.5) as f64),
                p99_us: a.lat.as_ref().map(|h| h.value_at_quantile(0.99) as f64),
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

/// Steps of the distribution curve: "nines" (`-log10(1 - p)`) from 0 to [`MAX_NINES`].
const NINE_STEPS: u32 = 40;

/// The highest "nines" a distribution curve reaches (4: p99.99).
pub const MAX_NINES: f64 = 4.0;

/// The percentile at `nines` (`-log10(1 - p)`): 0 -> 0, 1 -> 90, 2 -> 99, 4 -> 99.99.
pub fn pct_of_nines(nines: f64) -> f64 {
    100.0 * (1.0 - 10f64.powf(-nines))
}

/// The "nines" of percentile `pct` (inverse of [`pct_of_nines`]).
pub fn nines_of_pct(pct: f64) -> f64 {
    -(1.0 - pct / 100.0).max(1e-12).log10()
}

/// The latency distribution of `h` (values in units of `unit_us` µs: 0.001 for a histogram
/// of nanoseconds) at percentiles evenly spaced in "nines", p0 to p99.99; empty for an empty
/// histogram.
pub fn latency_curve(h: &Histogram<u64>, unit_us: f64) -> Vec<Quantile> {
    if h.is_empty() {
        return Vec::new();
    }
    (0..=NINE_STEPS)
        .map(|i| {
            let pct = pct_of_nines(MAX_NINES * f64::from(i) / f64::from(NINE_STEPS));
            Quantile {
                pct,
                us: h.value_at_quantile(pct / 100.0) as f64 * unit_us,
            }
        })
        .collect()
}

/// The median of `v` (`None` if empty).
pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Throughput around a crash at `kill_ms`, from the series.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Dip {
    /// Median released/s over the buckets before the crash (the first bucket, warm-up, skipped).
    pub before_median_per_sec: Option<f64>,
    /// Median released/s over every bucket from the crash to the end.
    pub after_median_per_sec: Option<f64>,
    /// Median released/s over the buckets starting 1 s after the first post-crash release.
    pub recovered_median_per_sec: Option<f64>,
    /// Released in the first second after the crash.
    pub released_first_sec_after: u64,
    /// Lowest bucket rate from the crash on, released/s.
    pub min_after_per_sec: f64,
    /// Buckets from the crash's bucket on with no release at all.
    pub zero_buckets_after: u64,
}

impl Dip {
    /// Computes the dip around a crash `kill_ms` into the run; `first_release_ms` is the first
    /// post-crash release of a transaction that began after it.
    pub fn compute(series: &[Bucket], kill_ms: f64, first_release_ms: Option<f64>) -> Dip {
        let w = BUCKET.as_millis() as f64;
        let rates = |f: &dyn Fn(&Bucket) -> bool| -> Vec<f64> {
            series
                .iter()
                .filter(|b| f(b))
                .map(Bucket::released_per_sec)
                .collect()
        };
        let before = rates(&|b| b.start_ms > 0 && (b.start_ms as f64 + w) <= kill_ms);
        let after_buckets: Vec<&Bucket> = series
            .iter()
            .filter(|b| b.start_ms as f64 + w > kill_ms)
            .collect();
        let recovered = first_release_ms.map(|f| rates(&|b| b.start_ms as f64 >= f + 1000.0));
        Dip {
            before_median_per_sec: median(before),
            after_median_per_sec: median(
                after_buckets.iter().map(|b| b.released_per_sec()).collect(),
            ),
            recovered_median_per_sec: recovered.and_then(median),
            released_first_sec_after: after_buckets
                .iter()
                .filter(|b| (b.start_ms as f64) < kill_ms + 1000.0)
                .map(|b| b.released)
                .sum(),
            min_after_per_sec: after_buckets
                .iter()
                .map(|b| b.released_per_sec())
                .fold(f64::INFINITY, f64::min)
                .min(f64::MAX),
            zero_buckets_after: after_buckets.iter().filter(|b| b.released == 0).count() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_buckets_and_merge() {
        let t0 = Instant::now();
        let mut a = Recorder::new(t0, Duration::from_millis(300));
        let mut b = Recorder::new(t0, Duration::from_millis(300));
        a.released(t0 + Duration::from_millis(50), Duration::from_micros(100));
        b.released(t0 + Duration::from_millis(250), Duration::from_micros(300));
        b.aborted(t0 + Duration::from_millis(250), AbortReason::Failover);
        a.unknown(t0 + Duration::from_millis(150));
        // Beyond the span: dropped.
        a.released(t0 + Duration::from_millis(400), Duration::from_micros(1));
        let s = Recorder::merge(vec![a, b], 3);
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.iter().map(|b| b.released).collect::<Vec<_>>(),
            vec![1, 0, 1]
        );
        assert_eq!(s[1].unknown, 1);
        assert_eq!(s[2].aborts_of(AbortReason::Failover), 1);
        assert_eq!(s[1].p50_us, None);
        assert!(s[2].p50_us.is_some_and(|p| (299.0..=301.0).contains(&p)));
        assert_eq!(s[2].start_ms, 200);
    }

    #[test]
    fn latency_curve_spans_p0_to_p9999_on_a_nines_scale() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for ns in 1..=100_000u64 {
            h.record(ns * 1000).unwrap();
        }
        let c = latency_curve(&h, 0.001);
        assert_eq!(c.len(), NINE_STEPS as usize + 1);
        assert_eq!(c[0].pct, 0.0);
        assert!((c[c.len() - 1].pct - 99.99).abs() < 1e-9);
        // 1..=100,000 µs uniformly: p90 is about 90,000 µs.
        let p90 = c.iter().find(|q| (q.pct - 90.0).abs() < 1e-9).unwrap();
        assert!((89_000.0..=91_000.0).contains(&p90.us), "{p90:?}");
        assert!(
            c.windows(2)
                .all(|w| w[0].us <= w[1].us && w[0].pct < w[1].pct)
        );
        assert!((nines_of_pct(pct_of_nines(2.5)) - 2.5).abs() < 1e-9);
        assert!(latency_curve(&Histogram::<u64>::new(3).unwrap(), 1.0).is_empty());
    }

    #[test]
    fn dip_around_a_crash() {
        let series: Vec<Bucket> = [
            10, 10, 12, 10, 0, 0, 5, 10, 11, 10, 10, 10, 10, 10, 10, 10, 10, 10, 9, 10,
        ]
        .iter()
        .enumerate()
        .map(|(i, &r)| Bucket {
            start_ms: i as u64 * 100,
            released: r,
            ..Bucket::default()
        })
        .collect();
        let d = Dip::compute(&series, 400.0, Some(600.0));
        assert_eq!(d.before_median_per_sec, Some(100.0));
        assert_eq!(d.zero_buckets_after, 2);
        assert_eq!(d.min_after_per_sec, 0.0);
        assert_eq!(d.released_first_sec_after, 5 + 10 + 11 + 10 * 5);
        assert_eq!(d.recovered_median_per_sec, Some(100.0));
        assert_eq!(median(vec![3.0, 1.0, 2.0, 4.0]), Some(2.5));
    }
}
