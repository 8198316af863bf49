//! `mako bench --shards 2,3 --replicas 3 --cross-shard 20`: one cluster run per shard count,
//! a scaling row per count (released/s, CPU-seconds, released per CPU-second, measured
//! cross-shard share) and the ratio line; `--json` carries the rows; bad shard lists and
//! percentages are refused with errors naming the flag.

use std::process::{Command, Output};

fn mako(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mako"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("mako runs")
}

const RUN: [&str; 11] = [
    "bench",
    "--shards",
    "2,3",
    "--replicas",
    "3",
    "--duration",
    "0.3",
    "--keys",
    "2000",
    "--cross-shard",
    "20",
];

/// Whether the measured share `pct` (percent) over `n` transactions is within five binomial
/// standard deviations of the configured 20%.
fn near_20(pct: f64, n: f64) -> bool {
    let p = 0.2;
    (pct / 100.0 - p).abs() <= 5.0 * (p * (1.0 - p) / n.max(1.0)).sqrt()
}

#[test]
fn shard_list_prints_a_row_per_count_and_the_ratio() {
    let out = mako(&RUN);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every run names what it ran under, with the configured share.
    for want in [
        "cluster bench: protocol=raft shards=2 replicas=3 workers/shard=1",
        "cluster bench: protocol=raft shards=3 replicas=3 workers/shard=1",
        "read-only=50% cross-shard 20% (fixed",
        "durability=Memory",
        "scaling in shards (memory durability, 3 replicas, 1 worker(s)/shard, read-only 50%, cross-shard 20% configured",
        "released/cpu-s",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    // The table: header, then one row per shard count, in order.
    let head = stdout
        .lines()
        .position(|l| l.trim_start().starts_with("shards"))
        .expect("table header");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(head + 1)
        .take_while(|l| !l.starts_with("ratio"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for (row, shards) in rows.iter().zip(["2", "3"]) {
        // shards, released/s, cpu-s, cores busy, released/cpu-s, cross-shard %, aborts %, p99
        assert_eq!(row.len(), 8, "{row:?}");
        assert_eq!(row[0], shards);
        let num = |s: &str| -> f64 {
            s.trim_end_matches('%')
                .replace(',', "")
                .parse()
                .unwrap_or_else(|_| panic!("a number: {s} in {row:?}"))
        };
        let (released_per_sec, cpu) = (num(row[1]), num(row[2]));
        assert!(cpu > 0.0, "{row:?}");
        // Released in the 0.3 s phase: a lower bound on the commits the share was measured over.
        let released = released_per_sec * 0.3;
        assert!(
            near_20(num(row[5]), released),
            "measured share far from 20%: {row:?}"
        );
    }
    let ratio = stdout
        .lines()
        .find(|l| l.starts_with("ratio released/cpu-s 3 shards / 2 shards = "))
        .unwrap_or_else(|| panic!("no ratio line in:\n{stdout}"));
    assert!(ratio.contains("(target >= 0.8: "), "{ratio}");
}

#[test]
fn shard_list_json_carries_the_rows() {
    let mut args = RUN.to_vec();
    args.push("--json");
    let out = mako(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let t = &v["scaling"];
    assert_eq!(t["cross_shard_pct"], 20.0);
    assert_eq!(t["replicas"], 3);
    assert_eq!(t["durability"], "memory");
    assert_eq!(t["target"], 0.8);
    assert!(t["ratio"].as_f64().is_some(), "{t}");
    let rows = t["rows"].as_array().expect("rows");
    assert_eq!(
        rows.iter()
            .map(|r| r["shards"].as_u64())
            .collect::<Vec<_>>(),
        [Some(2), Some(3)]
    );
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for (row, run) in rows.iter().zip(runs) {
        assert!(row["cpu_secs"].as_f64().is_some_and(|c| c > 0.0), "{row}");
        assert!(row["released_per_cpu_sec"].as_f64().is_some(), "{row}");
        let commits =
            run["spec_per_sec"].as_f64().unwrap_or(0.0) * run["secs"].as_f64().unwrap_or(0.0);
        let measured = row["cross_shard_measured_pct"]
            .as_f64()
            .expect("measured share");
        assert!(
            near_20(measured, commits),
            "{measured}% over {commits} commits"
        );
    }
}

#[test]
fn bad_shard_lists_and_shares_are_refused() {
    for (args, want) in [
        (
            &["--shards", "0"][..],
            "a shard count is a whole number of at least 1, got `0`",
        ),
        (&["--shards", "2,x"][..], "got `x`"),
        (
            &["--shards", "2,4", "--cross-shard", "150"][..],
            "--cross-shard is a percentage between 0 and 100, got 150",
        ),
        (
            &["--shards", "2", "--replicas", "3", "--cross-shard=-5"][..],
            "--cross-shard is a percentage between 0 and 100, got -5",
        ),
        (
            &["--shards", "2", "--replicas", "3", "--cross-shard", "nan"][..],
            "--cross-shard is a percentage between 0 and 100, got NaN",
        ),
        (&["--shards", "2,2"][..], "--shards lists 2 twice"),
        (
            &["--shards", "1,2", "--cross-shard", "10"][..],
            "--cross-shard above 0 needs at least 2 shards",
        ),
        (
            &["--cross-shard", "10"][..],
            "--cross-shard applies to in-process cluster runs",
        ),
        (
            &["--shards", "2,4", "--workload", "tpcc"][..],
            "a list of shard counts",
        ),
        (
            &["--shards", "2,4", "--keys", "12"][..],
            "at least 4 keys per shard",
        ),
        (
            &["--shards", "2,4", "--kill-leader-at", "0.1"][..],
            "take one shard count, not a list",
        ),
    ] {
        let mut all = vec!["bench", "--duration", "0.1"];
        all.extend_from_slice(args);
        let out = mako(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            stderr.contains(want),
            "{args:?}: want {want:?} in:\n{stderr}"
        );
    }
}
