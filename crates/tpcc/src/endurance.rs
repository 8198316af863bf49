//! Endurance figures: throughput and NewOrder latency of the first and the last minute of a run.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::txn::TxnKind;

/// Length of each compared window; runs shorter than this have no endurance figures.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The target: the last window's throughput within this fraction of the first's.
pub const TARGET_DRIFT: f64 = 0.10;

/// Throughput and NewOrder latency over one window of the measured phase.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Window {
    /// Start of the window, seconds into the measured phase.
    pub start_secs: f64,
    /// Length of the window, seconds.
    pub secs: f64,
    /// Transactions (all types) committed in the window.
    pub committed: u64,
    /// Committed transactions per second.
    pub txn_per_sec: f64,
    /// NewOrders committed in the window.
    pub new_orders: u64,
    /// NewOrder latency (first attempt's start to commit) p50 in the window, microseconds.
    pub new_order_p50_us: f64,
}

/// The first and the last minute of a run of at least a minute.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Endurance {
    /// The first minute.
    pub first: Window,
    /// The last minute.
    pub last: Window,
    /// Last minute's txn/s over the first's (1.0 = flat).
    pub throughput_ratio: f64,
    /// The target: `throughput_ratio` within `1 ± target_drift`.
    pub target_drift: f64,
}

impl Endurance {
    /// Whether the last minute's throughput is within the target of the first's.
    pub fn within_target(&self) -> bool {
        (self.throughput_ratio - 1.0).abs() <= self.target_drift
    }
}

/// One window while a worker records it.
struct Acc {
    committed: u64,
    new_orders: Histogram<u64>,
}

impl Acc {
    fn new() -> Self {
        Acc {
            committed: 0,
            new_orders: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }

    fn record(&mut self, kind: TxnKind, latency_ns: u64) {
        self.committed += 1;
        if kind == TxnKind::NewOrder {
            self.new_orders.saturating_record(latency_ns.max(1));
        }
    }

    fn add(&mut self, o: &Acc) {
        self.committed += o.committed;
        let _ = self.new_orders.add(&o.new_orders);
    }

    fn window(&self, start: Duration) -> Window {
        let secs = WINDOW.as_secs_f64();
        Window {
            start_secs: start.as_secs_f64(),
            secs,
            committed: self.committed,
            txn_per_sec: self.committed as f64 / secs,
            new_orders: self.new_orders.len(),
            new_order_p50_us: self.new_orders.value_at_quantile(0.5) as f64 / 1000.0,
        }
    }
}

/// A worker's recorder of the first and last minute of a measured phase (merged after the run).
pub(crate) struct Recorder {
    first_end: Instant,
    last_start: Instant,
    last_offset: Duration,
    first: Acc,
    last: Acc,
}

impl Recorder {
    /// A recorder for a measured phase from `started` lasting `total`; `None` if shorter than a window.
    pub(crate) fn new(started: Instant, total: Duration) -> Option<Self> {
        let last_offset = total.checked_sub(WINDOW)?;
        Some(Recorder {
            first_end: started + WINDOW,
            last_start: started + last_offset,
            last_offset,
            first: Acc::new(),
            last: Acc::new(),
        })
    }

    /// A transaction of type `kind` committed at `now` after `latency_ns`.
    pub(crate) fn committed(&mut self, now: Instant, kind: TxnKind, latency_ns: u64) {
        if now < self.first_end {
            self.first.record(kind, latency_ns);
        }
        if now >= self.last_start {
            self.last.record(kind, latency_ns);
        }
    }

    /// Adds another worker's windows to these.
    pub(crate) fn merge(&mut self, o: &Recorder) {
        self.first.add(&o.first);
        self.last.add(&o.last);
    }

    /// The figures.
    pub(crate) fn endurance(&self) -> Endurance {
        let first = self.first.window(Duration::ZERO);
        let last = self.last.window(self.last_offset);
        let throughput_ratio = if first.txn_per_sec > 0.0 {
            last.txn_per_sec / first.txn_per_sec
        } else {
            0.0
        };
        Endurance {
            first,
            last,
            throughput_ratio,
            target_drift: TARGET_DRIFT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_runs_have_no_windows() {
        assert!(Recorder::new(Instant::now(), Duration::from_secs(59)).is_none());
    }

    #[test]
    fn commits_land_in_the_first_and_last_minute() {
        let t0 = Instant::now();
        let mut a = Recorder::new(t0, Duration::from_secs(150)).unwrap();
        let mut b = Recorder::new(t0, Duration::from_secs(150)).unwrap();
        let at = |s: u64| t0 + Duration::from_secs(s);
        a.committed(at(1), TxnKind::NewOrder, 100_000);
        a.committed(at(59), TxnKind::Payment, 5_000);
        b.committed(at(30), TxnKind::NewOrder, 300_000);
        a.committed(at(75), TxnKind::NewOrder, 1); // in neither window
        a.committed(at(90), TxnKind::NewOrder, 200_000);
        b.committed(at(149), TxnKind::Delivery, 9_000);
        a.merge(&b);
        let e = a.endurance();
        assert_eq!((e.first.committed, e.first.new_orders), (3, 2));
        assert_eq!((e.last.committed, e.last.new_orders), (2, 1));
        assert_eq!(e.last.start_secs, 90.0);
        assert!((e.first.new_order_p50_us - 100.0).abs() < 1.0, "{e:?}");
        assert!((e.last.new_order_p50_us - 200.0).abs() < 1.0, "{e:?}");
        assert!((e.throughput_ratio - 2.0 / 3.0).abs() < 1e-9);
        assert!(!e.within_target());
    }
}
