//! Scaling in shards (`mako bench --shards 2,4,8`): the process's CPU time during a measured
//! phase, and the table of released transactions per CPU-second over several cluster runs.
//!
//! On a machine with fewer cores than shards, throughput cannot grow with shards; linear
//! scaling then shows as constant released transactions per CPU-second, so the figure compared
//! across shard counts is that one: [`ScalingReport::ratio`] is its value at the largest shard
//! count over its value at the smallest, against [`SCALING_TARGET`].

use std::time::Duration;

use crate::cluster::ClusterReport;

/// The ratio (released/CPU-s at the most shards) / (at the fewest) the issue asks for.
pub const SCALING_TARGET: f64 = 0.8;

/// CPU time (user + system) the whole process has used so far, from
/// `getrusage(RUSAGE_SELF)`; `None` if the call fails.
pub fn process_cpu_time() -> Option<Duration> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` points to writable memory of the size of `rusage`, which `getrusage` fills;
    // it is only read after the call reported success.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: `getrusage` returned 0, so it wrote the whole struct (and it was zeroed before).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Some(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// One shard count's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScalingRow {
    /// Shards.
    pub shards: u32,
    /// Released transactions per second.
    pub released_per_sec: f64,
    /// Process CPU-seconds (user + system) used during the measured phase.
    pub cpu_secs: f64,
    /// Wall-clock seconds of the measured phase.
    pub wall_secs: f64,
    /// Cores kept busy on average: `cpu_secs / wall_secs`.
    pub cores_busy: f64,
    /// Released transactions per CPU-second.
    pub released_per_cpu_sec: f64,
    /// Cross-shard transactions measured, percent of speculative commits.
    pub cross_shard_measured_pct: f64,
    /// Aborts, percent of attempts.
    pub abort_pct: f64,
    /// Release latency p99, µs.
    pub release_p99_us: f64,
    /// Whether every follower matched its leader after the run.
    pub consistent: bool,
}

/// The scaling table over shard counts, and the ratio of its ends.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScalingReport {
    /// Replicas per shard.
    pub replicas: u32,
    /// Coordinator workers per shard.
    pub threads: u32,
    /// Read-only percentage.
    pub read_pct: u32,
    /// Log durability.
    pub durability: String,
    /// Replication protocol.
    pub protocol: String,
    /// Configured cross-shard percentage (`None`: four keys spread over all shards).
    pub cross_shard_pct: Option<f64>,
    /// Measured seconds per run.
    pub secs: f64,
    /// Runs per shard count (the median by released/CPU-s is in the table).
    pub repeat: usize,
    /// One row per shard count, fewest shards first.
    pub rows: Vec<ScalingRow>,
    /// Released/CPU-s at the most shards over that at the fewest (`None` with one row or
    /// no CPU time at the fewest).
    pub ratio: Option<f64>,
    /// The target for `ratio`.
    pub target: f64,
}

impl ScalingRow {
    /// The row of one run.
    pub fn of(r: &ClusterReport) -> Self {
        ScalingRow {
            shards: r.shards,
            released_per_sec: r.released_per_sec,
            cpu_secs: r.cpu_secs,
            wall_secs: r.wall_secs,
            cores_busy: if r.wall_secs > 0.0 {
                r.cpu_secs / r.wall_secs
            } else {
                0.0
            },
            released_per_cpu_sec: r.released_per_cpu_sec,
            cross_shard_measured_pct: r.distributed_pct,
            abort_pct: r.abort_pct,
            release_p99_us: r.release_p99_us,
            consistent: r.consistent,
        }
    }
}

impl ScalingReport {
    /// The table of `runs` (one per shard count, any order; conditions taken from the first).
    pub fn new(runs: &[&ClusterReport], repeat: usize) -> Self {
        let mut rows: Vec<ScalingRow> = runs.iter().map(|r| ScalingRow::of(r)).collect();
        rows.sort_by_key(|r| r.shards);
        let ratio = match (rows.first(), rows.last()) {
            (Some(lo), Some(hi)) if rows.len() > 1 && lo.released_per_cpu_sec > 0.0 => {
                Some(hi.released_per_cpu_sec / lo.released_per_cpu_sec)
            }
            _ => None,
        };
        let first = runs.first();
        ScalingReport {
            replicas: first.map_or(0, |r| r.replicas),
            threads: first.map_or(0, |r| r.threads),
            read_pct: first.map_or(0, |r| r.read_pct),
            durability: first.map_or_else(String::new, |r| r.durability.clone()),
            protocol: first.map_or_else(String::new, |r| r.protocol.clone()),
            cross_shard_pct: first.and_then(|r| r.cross_shard_pct),
            secs: first.map_or(0.0, |r| r.secs),
            repeat,
            rows,
            ratio,
            target: SCALING_TARGET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_moves_forward_with_work() {
        let a = process_cpu_time().expect("getrusage works");
        // Burn CPU on this thread until the counter moves (it must, and never backwards);
        // the 10 s bound only keeps a broken counter from hanging the test.
        let mut x = 0u64;
        let t = std::time::Instant::now();
        let mut b = a;
        while b <= a && t.elapsed() < Duration::from_secs(10) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            b = process_cpu_time().expect("getrusage works");
        }
        assert!(b > a, "{a:?} then {b:?}");
    }
}
