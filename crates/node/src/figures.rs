//! The server's figures: counters of the client front (released, aborted by reason,
//! unknown, release latency) and the Prometheus text rendering of them together with the
//! site's replication state (term, epoch, indexes, `W_s`, `VW`, queue depth, role, health).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mako_replication::{GroupHealth, Role};
use mako_server::Site;
use metrics::{counter, gauge, histogram, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use parking_lot::Mutex;

/// Bucket bounds of the release latency histogram (seconds).
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256,
    0.512, 1.0, 2.0, 5.0,
];

/// Client-visible outcomes counted by a server, and its Prometheus recorder.
pub struct Counters {
    released: AtomicU64,
    unknown: AtomicU64,
    malformed: AtomicU64,
    aborts: Mutex<BTreeMap<&'static str, u64>>,
    recorder: PrometheusRecorder,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("released", &self.released_total())
            .finish_non_exhaustive()
    }
}

impl Counters {
    /// Counters of site `site` (every metric carries it as the `site` label).
    pub fn new(site: &str) -> Self {
        let builder = PrometheusBuilder::new().add_global_label("site", site);
        let builder = match builder.set_buckets(&LATENCY_BUCKETS) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new().add_global_label("site", site),
        };
        Counters {
            released: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            aborts: Mutex::new(BTreeMap::new()),
            recorder: builder.build_recorder(),
        }
    }

    /// One transaction released after `latency` in commit.
    pub fn released(&self, latency: Duration) {
        self.released.fetch_add(1, Ordering::Relaxed);
        with_local_recorder(&self.recorder, || {
            histogram!("mako_release_latency_seconds").record(latency.as_secs_f64());
        });
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

    /// Prometheus text exposition of these counters and `site`'s state, sampled now.
    pub fn render(&self, site: &Site) -> String {
        with_local_recorder(&self.recorder, || {
            counter!("mako_released_total").absolute(self.released_total());
            counter!("mako_unknown_total").absolute(self.unknown_total());
            counter!("mako_malformed_requests_total").absolute(self.malformed_total());
            for (reason, n) in self.aborts() {
                counter!("mako_aborts_total", "reason" => reason).absolute(n);
            }
            let g = site.group();
            let shard = site.shard_id().to_string();
            let f = |v: u64| v as f64;
            gauge!("mako_term", "shard" => shard.clone()).set(f(g.term()));
            gauge!("mako_epoch", "shard" => shard.clone()).set(f(u64::from(site.log_epoch())));
            gauge!("mako_commit_index", "shard" => shard.clone()).set(f(g.commit_index()));
            gauge!("mako_applied_index", "shard" => shard.clone()).set(f(g.applied_index()));
            gauge!("mako_snapshot_index", "shard" => shard.clone()).set(f(g.snapshot_index()));
            gauge!("mako_shard_watermark", "shard" => shard.clone()).set(f(site.w()));
            gauge!("mako_queue_depth", "shard" => shard.clone()).set(site.queued() as f64);
            gauge!("mako_replayed_total", "shard" => shard.clone()).set(f(site.replayed()));
            let leader = matches!(g.role(), Role::Leader);
            gauge!("mako_leader", "shard" => shard.clone()).set(if leader { 1.0 } else { 0.0 });
            gauge!("mako_serving", "shard" => shard.clone()).set(if site.serving() {
                1.0
            } else {
                0.0
            });
            let healthy = matches!(g.health(), GroupHealth::Running);
            gauge!("mako_healthy", "shard" => shard).set(if healthy { 1.0 } else { 0.0 });
            let epochs = site.epochs();
            if let Some(vw) = epochs.vw(epochs.current()) {
                for (s, w) in vw.load().into_iter().enumerate() {
                    gauge!("mako_visible_watermark", "of_shard" => s.to_string()).set(f(w));
                }
            }
        });
        self.recorder.handle().render()
    }
}
