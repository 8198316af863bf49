//! `mako bench --workload tpcc --plot FILE.svg`: the TPC-C run's picture, drawn with
//! [`mako_bench::plot`]: committed (and, replicated, released) transactions and NewOrders per
//! 100 ms, release latency per bucket, and the commit and release latency distributions.

use mako_bench::Quantile;
use mako_bench::plot::{Figure, Line, colors};
use mako_tpcc::{Bucket, ClusterTpccReport, RemoteTpccReport, TpccReport};

/// Color of the NewOrders-per-second line.
pub(crate) const NEW_ORDERS: (u8, u8, u8) = (44, 160, 44);

/// A TPC-C latency curve in the plotting crate's terms.
fn curve(q: &[mako_tpcc::Quantile]) -> Vec<Quantile> {
    q.iter()
        .map(|q| Quantile {
            pct: q.pct,
            us: q.us,
        })
        .collect()
}

/// A line through `f` of every bucket, per second, at the bucket's middle.
fn rate_line(
    name: &str,
    color: (u8, u8, u8),
    series: &[Bucket],
    bucket_ms: u64,
    f: fn(&Bucket) -> u64,
) -> Line {
    let w = bucket_ms as f64 / 1e3;
    Line::new(
        name,
        color,
        series
            .iter()
            .map(|b| (b.start_ms as f64 / 1e3 + w / 2.0, f(b) as f64 / w))
            .collect(),
    )
}

/// NewOrders and aborted attempts per second: lines of every picture.
fn new_orders_and_aborts(series: &[Bucket], bucket_ms: u64) -> [Line; 2] {
    [
        rate_line("NewOrder/s", NEW_ORDERS, series, bucket_ms, |b| {
            b.new_orders
        }),
        rate_line(
            "aborted attempts/s",
            colors::ABORTED,
            series,
            bucket_ms,
            |b| b.aborted,
        ),
    ]
}

/// Release latency p50 and p99 per bucket (ms; gaps where nothing was released).
fn release_over_time(series: &[Bucket], bucket_ms: u64) -> Vec<Line> {
    let w = bucket_ms as f64 / 1e3;
    let line = |name: &str, color, f: fn(&Bucket) -> Option<f64>| Line {
        name: name.to_owned(),
        color,
        width: 2,
        points: series
            .iter()
            .map(|b| (b.start_ms as f64 / 1e3 + w / 2.0, f(b).map(|us| us / 1e3)))
            .collect(),
    };
    vec![
        line("release p50", colors::P50, |b| b.release_p50_us),
        line("release p99", colors::P99, |b| b.release_p99_us),
    ]
}

/// The title's second and third lines: the mix, then the throughput and latency figures of
/// a local or cluster run.
fn figures_lines(r: &TpccReport, cross_shard_pct: f64, release: Option<(f64, f64)>) -> [String; 2] {
    let commit = r
        .by_type
        .iter()
        .take(2)
        .map(|s| format!("{} {:.0} us", s.kind.name(), s.p50_us))
        .collect::<Vec<_>>()
        .join(", ");
    [
        format!(
            "standard mix 45/43/4/4/4, cross-shard {cross_shard_pct:.1}% of commits, {:.1} s measured",
            r.secs
        ),
        format!(
            "committed {:.0} txn/s, tpmC {:.0}; commit p50 {commit}{}",
            r.txn_per_sec,
            r.tpmc,
            release.map_or_else(String::new, |(p50, p99)| format!(
                "; release p50 {p50:.0} us p99 {p99:.0} us"
            ))
        ),
    ]
}

/// The picture of a single-node run (`mako bench --workload tpcc`): one in-process shard, no
/// replication and no log, so commit is the end of a transaction.
pub(crate) fn local_figure(r: &TpccReport) -> Figure {
    let [mix, figures] = figures_lines(r, 0.0, None);
    Figure {
        title: vec![
            format!(
                "mako bench: workload tpcc, {} warehouse(s), {} worker(s), single node (1 shard x 1 replica, no replication), durability none (no log)",
                r.warehouses, r.threads
            ),
            mix,
            figures,
        ],
        bucket_ms: r.bucket_ms,
        secs: r.series.len() as f64 * r.bucket_ms as f64 / 1e3,
        rate_unit: "txn/s".to_owned(),
        rates: [Line {
            width: 3,
            ..rate_line(
                "committed/s",
                colors::RELEASED,
                &r.series,
                r.bucket_ms,
                |b| b.committed,
            )
        }]
        .into_iter()
        .chain(new_orders_and_aborts(&r.series, r.bucket_ms))
        .collect(),
        latency_over_time: Vec::new(),
        latency_name: "commit latency (begin of first attempt to commit, all types)".to_owned(),
        distributions: vec![Line {
            width: 3,
            ..Line::distribution("commit", colors::COMMIT, &curve(&r.commit_latency))
        }],
        markers: Vec::new(),
    }
}

/// The picture of an in-process cluster run (`--shards/--replicas`): speculative commits,
/// releases, NewOrders and aborts per bucket, release latency per bucket, and the commit and
/// release distributions.
pub(crate) fn cluster_figure(r: &ClusterTpccReport) -> Figure {
    let t = &r.tpcc;
    let [mix, figures] = figures_lines(
        t,
        r.distributed_pct,
        Some((r.release_p50_us, r.release_p99_us)),
    );
    Figure {
        title: vec![
            format!(
                "mako bench: workload tpcc, {} shard(s) x {} replicas, raft, durability {}, {} warehouse(s), {} worker(s), window {}",
                r.shards,
                r.replicas,
                r.durability,
                t.warehouses,
                t.threads,
                crate::window_text(r.window)
            ),
            mix,
            figures,
        ],
        bucket_ms: t.bucket_ms,
        secs: t.series.len() as f64 * t.bucket_ms as f64 / 1e3,
        rate_unit: "txn/s".to_owned(),
        rates: [
            Line {
                width: 3,
                ..rate_line(
                    "released/s",
                    colors::RELEASED,
                    &t.series,
                    t.bucket_ms,
                    |b| b.released,
                )
            },
            rate_line(
                "speculative commits/s",
                colors::SPECULATIVE,
                &t.series,
                t.bucket_ms,
                |b| b.committed,
            ),
        ]
        .into_iter()
        .chain(new_orders_and_aborts(&t.series, t.bucket_ms))
        .collect(),
        latency_over_time: release_over_time(&t.series, t.bucket_ms),
        latency_name: "commit and release latency".to_owned(),
        distributions: vec![
            Line::distribution(
                "commit (begin to speculative commit)",
                colors::COMMIT,
                &curve(&t.commit_latency),
            ),
            Line {
                width: 3,
                ..Line::distribution(
                    "release (begin to release)",
                    colors::RELEASE,
                    &curve(&r.release_latency),
                )
            },
        ],
        markers: Vec::new(),
    }
}

/// The picture of a run against a deployment (`-f`): released transactions, NewOrders and
/// aborts per bucket, and client-observed release latency per bucket and its distribution.
pub(crate) fn remote_figure(r: &RemoteTpccReport, sources: &[String]) -> Figure {
    Figure {
        title: vec![
            format!(
                "mako bench -f {}: workload tpcc, {} shard(s) x {} replicas, durability {}, {} warehouse(s), {} client(s)",
                sources.join(" -f "),
                r.shards,
                r.replicas,
                r.durability,
                r.warehouses,
                r.clients
            ),
            format!(
                "standard mix 45/43/4/4/4, cross-shard {:.1}% of released, {:.1} s measured",
                r.distributed_pct, r.secs
            ),
            format!(
                "released {:.0} txn/s, tpmC {:.0}; release p50 {:.0} us p99 {:.0} us (client-observed)",
                r.released_per_sec, r.tpmc, r.release_p50_us, r.release_p99_us
            ),
        ],
        bucket_ms: r.bucket_ms,
        secs: r.series.len() as f64 * r.bucket_ms as f64 / 1e3,
        rate_unit: "txn/s".to_owned(),
        rates: [Line {
            width: 3,
            ..rate_line(
                "released/s",
                colors::RELEASED,
                &r.series,
                r.bucket_ms,
                |b| b.released,
            )
        }]
        .into_iter()
        .chain(new_orders_and_aborts(&r.series, r.bucket_ms))
        .collect(),
        latency_over_time: release_over_time(&r.series, r.bucket_ms),
        latency_name: "release latency (client-observed)".to_owned(),
        distributions: vec![Line {
            width: 3,
            ..Line::distribution("release", colors::RELEASE, &curve(&r.release_latency))
        }],
        markers: Vec::new(),
    }
}
