//! Benchmarks of mako-rs, run in-process: the engine behind `mako bench`.
//!
//! A [`BenchConfig`] names a [`Workload`] (Mako's microbenchmark or YCSB
//! A/B/C), a thread count, a duration, a key count and a key distribution.
//! [`run`] loads the keys (the load phase), runs the workload on that many
//! threads for the duration (the measured phase), and returns a
//! [`BenchReport`]: committed transactions per second, abort percentage and
//! commit latency percentiles from an HDR histogram.
//!
//! ```
//! use std::time::Duration;
//! use mako_bench::{BenchConfig, Workload, run};
//!
//! let cfg = BenchConfig {
//!     workload: Workload::Micro,
//!     keys: 1_000,
//!     duration: Duration::from_millis(50),
//!     ..BenchConfig::default()
//! };
//! let report = run(&cfg, |_| {}).unwrap();
//! assert!(report.committed > 0);
//! ```
//!
//! [`run_group`] measures one shard's replication group alone (either [`Protocol`]), and
//! [`run_ceiling`] what the bare log store and transport allow with the same settings.
//!
//! [`run_cluster`] runs the micro workload on an in-process cluster and can crash a shard
//! leader mid-run, recording a per-100 ms [`Bucket`] series; [`plot`] draws a run (throughput
//! over time and the latency distribution) as one SVG picture (`--plot`). A [`ShardMix`] fixes
//! the cross-shard share, and a [`ScalingReport`] compares runs over shard counts by released
//! transactions per CPU-second (`mako bench --shards 2,4,8`).
//!
//! [`check`] runs the history checker's workloads on an in-process cluster (`mako check`).
//!
//! [`remote`] runs the benches and checks against a running deployment over the client
//! protocol (`mako bench -f`, `mako check -f`).

mod ceiling;
pub mod check;
mod cluster;
mod driver;
mod group;
mod mix;
pub mod plot;
pub mod remote;
mod scaling;
mod series;
mod workload;
mod zipf;

pub use ceiling::{
    CeilingConfig, CeilingError, CeilingReport, LogCeiling, NetCeiling, run_ceiling,
    run_log_ceiling, run_transport_ceiling,
};
pub use cluster::{
    ClusterBenchConfig, ClusterBenchError, ClusterProgress, ClusterReport, DEMO_WINDOW,
    FailoverReport, run_cluster,
};
pub use driver::{
    BenchConfig, BenchError, BenchReport, Dist, Progress, TABLE, ZIPF_THETA, load, run,
};
pub use group::{
    GroupBenchConfig, GroupBenchError, GroupBenchReport, NetKind, RaftBenchConfig, RaftBenchError,
    RaftBenchReport, run_group,
};
pub use mako_server::Protocol;
pub use mako_txn::AbortReason;
pub use mix::{MicroShape, MixError, ShapeGen, ShardMix};
pub use scaling::{SCALING_TARGET, ScalingReport, ScalingRow, process_cpu_time};
pub use series::{
    BUCKET, Bucket, Dip, MAX_NINES, Quantile, latency_curve, nines_of_pct, pct_of_nines,
};
pub use workload::{MICRO_KEYS, Workload, key_bytes, run_one};
pub use zipf::{KeyDist, Zipf};
