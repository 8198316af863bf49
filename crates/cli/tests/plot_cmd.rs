//! `--plot FILE` on `mako bench group` and `mako demo`: the SVG picture is written and its
//! title names the run's parameters; runs that cannot plot say so.

use std::path::Path;

mod common;
use common::{mako, ok};

fn picture(path: &Path) -> String {
    let svg = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    svg
}

fn group_bench(protocols: &str, plot: &Path) -> std::process::Output {
    mako(&[
        "bench",
        "group",
        "--replication",
        protocols,
        "--net",
        "mem",
        "--entry-size",
        "256",
        "--groups",
        "1",
        "--durability",
        "memory",
        "--duration",
        "0.3",
        "--no-paced",
        "--no-ceiling",
        "--plot",
        plot.to_str().expect("utf-8 path"),
    ])
}

/// One protocol: the picture goes to FILE; two: one picture per protocol, FILE suffixed.
#[test]
fn bench_group_plot_writes_the_picture() {
    let dir = tempfile::tempdir().expect("temp dir");
    let one = dir.path().join("group.svg");
    let stdout = ok(&group_bench("raft", &one));
    assert!(stdout.contains(&one.display().to_string()), "{stdout}");
    let svg = picture(&one);
    for p in [
        "mako bench group: raft",
        "1 group(s) x 3 replicas",
        "256 B entries",
        "durability memory",
        "mem transport",
        "committed entries/s",
        "commit latency",
    ] {
        assert!(svg.contains(p), "picture lacks {p:?}");
    }

    let base = dir.path().join("both.svg");
    ok(&group_bench("raft,paxos", &base));
    assert!(!base.exists(), "two runs go to suffixed files");
    for p in ["raft", "paxos"] {
        let svg = picture(&dir.path().join(format!("both-{p}.svg")));
        assert!(svg.contains(&format!("mako bench group: {p}")), "{p}");
    }
}

#[test]
fn demo_plot_writes_the_picture() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("demo.svg");
    let stdout = ok(&mako(&[
        "demo",
        "--duration",
        "0.5",
        "--keys",
        "2000",
        "--plot",
        path.to_str().expect("utf-8 path"),
    ]));
    assert!(stdout.contains(&path.display().to_string()), "{stdout}");
    let svg = picture(&path);
    for p in [
        "mako demo: 2 shard(s) x 3 replicas",
        "raft",
        "durability memory",
        "1 worker(s)/shard",
        "50% read-only",
        "cross-shard",
        "released/s",
        "release (begin to release)",
        "commit (begin to speculative commit)",
    ] {
        assert!(svg.contains(p), "picture lacks {p:?}");
    }
}

/// Single-process micro runs keep no per-100 ms series: `--plot` is refused up front (TPC-C
/// runs plot: tests/tpcc_plot.rs).
#[test]
fn plot_is_refused_where_no_series_is_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("micro.svg");
    let out = mako(&[
        "bench",
        "--workload",
        "micro",
        "--duration",
        "0.1",
        "--plot",
        path.to_str().expect("utf-8 path"),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--plot need"), "{stderr}");
    assert!(!path.exists());
}
