//! `mako bench -f` against real `mako server` processes: a micro run on 1 shard × 3 replicas
//! (one request per transaction, then interactive) reports released transactions and the
//! conditions it ran under; TPC-C runs through the server-side procedures.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mako_deploy::{Deployment, LocalTopology};

#[test]
fn micro_on_1c1s3r_reports_released_and_conditions_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LocalTopology::new(1, 3)
        .write(dir.path())
        .expect("config written");
    let mut d = Deployment::start(
        Path::new(env!("CARGO_BIN_EXE_mako")),
        std::slice::from_ref(&cfg),
        &[],
        mako_deploy::Output::Files(dir.path().join("logs")),
        None,
    )
    .expect("sites start");
    d.wait_ready(Duration::from_secs(60)).expect("leaders");
    let plot = dir.path().join("bench.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_mako"))
        .args(["bench", "-f", &cfg.display().to_string()])
        .args(["--workload", "micro", "--duration", "3", "--clients", "2"])
        .args(["--keys", "1000", "--json", "--plot"])
        .arg(&plot)
        .output()
        .expect("mako runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "{stderr}");
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert!(r["released"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(r["released_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    assert_eq!(r["durability"], "fsync", "{r}");
    assert_eq!(r["shards"], 1, "{r}");
    assert_eq!(r["replicas"], 3, "{r}");
    assert_eq!(r["clients"], 2, "{r}");
    assert_eq!(r["read_pct"], 50, "{r}");
    assert_eq!(r["workload"], "micro", "{r}");
    // One shard: nothing can be cross-shard.
    assert_eq!(r["cross_shard_pct"].as_f64(), Some(0.0), "{r}");
    assert!(r["release_p99_us"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.contains("durability fsync"), "{svg}");
    // The conditions line goes to stderr with --json.
    assert!(
        stderr.contains("durability=fsync shards=1 replicas=3"),
        "{stderr}"
    );
    assert_eq!(r["interactive"], false, "{r}");
    // The same workload as interactive transactions (a request per operation).
    let out = Command::new(env!("CARGO_BIN_EXE_mako"))
        .args(["bench", "-f", &cfg.display().to_string()])
        .args(["--workload", "micro", "--duration", "1", "--clients", "2"])
        .args(["--keys", "1000", "--json", "--interactive"])
        .output()
        .expect("mako runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("transactions=interactive"), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["interactive"], true, "{r}");
    assert!(r["released"].as_u64().unwrap_or(0) > 0, "{r}");
    d.shutdown(Duration::from_secs(10));
}

#[test]
fn tpcc_runs_against_a_deployment_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut topo = mako_deploy::LocalTopology::new(1, 3);
    topo.durability = "memory".into();
    topo.extra = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/tpcc.yml"),
    )
    .expect("config/tpcc.yml");
    let file = topo.write(dir.path()).unwrap();
    let mut d = mako_deploy::Deployment::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_mako")),
        std::slice::from_ref(&file),
        &[],
        mako_deploy::Output::Null,
        None,
    )
    .unwrap();
    d.wait_ready(Duration::from_secs(30)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mako"))
        .arg("bench")
        .arg("-f")
        .arg(&file)
        .args([
            "--workload",
            "tpcc",
            "--small",
            "--warehouses",
            "1",
            "--clients",
            "2",
        ])
        .args(["--duration", "2", "--check", "--json"])
        .output()
        .expect("mako runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("workload=tpcc durability=memory"),
        "{stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(v["durability"], "memory");
    assert!(v["released"].as_u64().unwrap_or(0) > 0, "{v}");
    d.shutdown(Duration::from_secs(10));
}
