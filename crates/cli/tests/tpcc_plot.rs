//! `mako bench --workload tpcc --plot FILE`: single-node and 1x3 cluster runs write one
//! well-formed SVG whose title names the run's parameters and which draws every series.

mod common;
use common::{mako, ok};

/// Point counts of the data lines drawn in `rgb` (legend samples have 2 points).
fn lines(svg: &str, rgb: &str) -> Vec<usize> {
    mako_bench::plot::polylines(svg, rgb)
        .iter()
        .map(Vec::len)
        .filter(|&n| n > 2)
        .collect()
}

/// Line colors (as the plotting crate writes them).
const BLUE: &str = "08519C";
const LIGHT_BLUE: &str = "78AAD2";
const GREEN: &str = "2CA02C";
const ORANGE_RED: &str = "E6550D";
const ORANGE: &str = "E67814";
const P50: &str = "31A354";
const P99: &str = "756BB1";
/// Points of a latency distribution curve (p0 to p99.99).
const CURVE: usize = 41;
/// Buckets of a 0.5 s run.
const BUCKETS: usize = 5;
/// Buckets of the 2 s cluster run (long enough for releases to land in the window on a
/// busy machine, where one can take a few hundred ms).
const CLUSTER_BUCKETS: usize = 20;

/// Runs a small TPC-C bench with `--plot` and returns the picture after checking it is
/// well-formed and that stdout names it.
fn plotted(duration: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tpcc.svg");
    let mut args = vec![
        "bench",
        "--workload",
        "tpcc",
        "--small",
        "--duration",
        duration,
        "--plot",
        path.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let out = mako(&args);
    let stdout = ok(&out);
    // The plot line goes to stdout, or to stderr with --json.
    let said = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains(&path.display().to_string()), "{said}");
    let svg = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    let elements = mako_bench::plot::well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    assert!(
        elements.get("text").copied().unwrap_or(0) > 10,
        "{elements:?}"
    );
    svg
}

fn assert_contains(svg: &str, parts: &[&str]) {
    for p in parts {
        assert!(svg.contains(p), "picture lacks {p:?}");
    }
}

#[test]
fn single_node_tpcc_plot_draws_commits_new_orders_aborts_and_commit_latency() {
    let svg = plotted("0.5", &[]);
    assert_contains(
        &svg,
        &[
            "workload tpcc",
            "1 warehouse(s)",
            "1 worker(s)",
            "single node (1 shard x 1 replica, no replication)",
            "durability none (no log)",
            "cross-shard 0.0% of commits",
            "tpmC",
            "committed/s",
            "NewOrder/s",
            "aborted attempts/s",
            "commit latency (begin of first attempt to commit, all types)",
        ],
    );
    assert_eq!(lines(&svg, BLUE), [BUCKETS], "committed/s");
    assert_eq!(lines(&svg, GREEN), [BUCKETS], "NewOrder/s");
    assert_eq!(lines(&svg, ORANGE_RED), [BUCKETS], "aborted/s");
    assert_eq!(lines(&svg, ORANGE), [CURVE], "commit distribution");
    // No replication: no release latency panel.
    assert!(!svg.contains("release latency per bucket"));
    assert!(lines(&svg, P50).is_empty());
}

#[test]
fn cluster_tpcc_plot_draws_releases_and_release_latency() {
    let svg = plotted("2", &["--shards", "1", "--replicas", "3"]);
    assert_contains(
        &svg,
        &[
            "workload tpcc",
            "1 shard(s) x 3 replicas",
            "raft",
            "durability memory",
            "1 warehouse(s)",
            "1 worker(s)",
            "cross-shard 0.0% of commits",
            "released/s",
            "speculative commits/s",
            "NewOrder/s",
            "aborted attempts/s",
            "release latency per bucket (log scale)",
            "release p50",
            "release p99",
            "commit (begin to speculative commit)",
            "release (begin to release)",
        ],
    );
    // Released per bucket and the release distribution share a color.
    let mut blue = lines(&svg, BLUE);
    blue.sort_unstable();
    assert_eq!(
        blue,
        [CLUSTER_BUCKETS, CURVE],
        "released/s and release distribution"
    );
    assert_eq!(lines(&svg, LIGHT_BLUE), [CLUSTER_BUCKETS], "speculative/s");
    assert_eq!(lines(&svg, GREEN), [CLUSTER_BUCKETS], "NewOrder/s");
    assert_eq!(lines(&svg, ORANGE_RED), [CLUSTER_BUCKETS], "aborted/s");
    assert_eq!(lines(&svg, ORANGE), [CURVE], "commit distribution");
    // Release latency over time: a point per bucket with releases (a bucket without any
    // splits the line, so on a busy machine pieces may be as short as the legend's sample:
    // count every polyline of the color but the legend's).
    for color in [P50, P99] {
        let mut l: Vec<usize> = mako_bench::plot::polylines(&svg, color)
            .iter()
            .map(Vec::len)
            .collect();
        let legend = l.iter().position(|&n| n == 2).expect("a legend sample");
        l.remove(legend);
        let points: usize = l.iter().sum();
        assert!((1..=CLUSTER_BUCKETS).contains(&points), "{l:?}");
    }
}

#[test]
fn cluster_tpcc_plot_names_the_durability_asked_for() {
    let svg = plotted(
        "0.5",
        &[
            "--shards",
            "1",
            "--replicas",
            "3",
            "--durability",
            "buffered",
            "--json",
        ],
    );
    assert_contains(&svg, &["1 shard(s) x 3 replicas", "durability buffered"]);
}
