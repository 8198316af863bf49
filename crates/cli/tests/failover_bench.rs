//! `mako bench --shards 2 --replicas 3 --kill-leader-at SECS --plot FILE`: the crash happens,
//! the per-100 ms series and the failover figures are printed, the SVG is written, and the
//! JSON report carries the same.

use std::process::Command;

fn bench(extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mako"))
        .args([
            "bench",
            "--shards",
            "2",
            "--replicas",
            "3",
            "--threads",
            "2",
            "--keys",
            "2000",
            "--duration",
            "2.5",
            "--kill-leader-at",
            "0.8",
            "--election-ms",
            "150,300",
            "--request-timeout-ms",
            "200",
        ])
        .args(extra)
        .output()
        .expect("mako runs")
}

#[test]
fn kill_leader_bench_prints_series_and_plots() {
    let dir = tempfile::tempdir().expect("temp dir");
    let svg = dir.path().join("series.svg");
    let out = bench(&["--plot", svg.to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "durability=Memory",
        "election timeout 150-300 ms",
        "crashed shard 0's leader at",
        "crash of shard 0's leader (",
        "failover: replica",
        "crash -> first release of a txn begun after the crash",
        "replicas consistent",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    // A row per 100 ms bucket of the 2.5 s run (short: the whole run is printed).
    let rows = stdout
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|t| t.contains('.') && t.parse::<f64>().is_ok())
        })
        .count();
    assert_eq!(rows, 25, "{stdout}");
    let plot = std::fs::read_to_string(&svg).expect("the plot was written");
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    assert!(plot.contains("crashed"), "the crash is marked");
    assert!(plot.contains("<polyline"), "the series is drawn");
}

#[test]
fn kill_leader_bench_json_report() {
    let out = bench(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON report");
    assert_eq!(v["series"].as_array().map(Vec::len), Some(25));
    assert!(v["failover"]["at_ms"].as_f64().is_some());
    assert_eq!(v["election_ms"], serde_json::json!([150, 300]));
    // Only the crash run: no 1-replica comparison line.
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}

#[test]
fn kill_leader_needs_a_cluster_run() {
    let out = Command::new(env!("CARGO_BIN_EXE_mako"))
        .args(["bench", "--kill-leader-at", "1", "--duration", "2"])
        .output()
        .expect("mako runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("need a cluster run"));
    let out = Command::new(env!("CARGO_BIN_EXE_mako"))
        .args(["bench", "--shards", "2", "--replicas", "1"])
        .args(["--kill-leader-at", "1", "--duration", "2"])
        .output()
        .expect("mako runs");
    assert!(!out.status.success(), "a 1-replica shard cannot fail over");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replicas 3 or 5"));
}
