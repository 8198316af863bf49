//! `mako bench -f` against real `mako server` processes: a micro run on 1 shard × 3 replicas
//! reports released transactions and the conditions it ran under; TPC-C over the network is
//! refused clearly.

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
    d.shutdown(Duration::from_secs(10));
}

#[test]
fn tpcc_over_the_network_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_mako"))
        .args(["bench", "-f", "nonexistent.yml", "--workload", "tpcc"])
        .output()
        .expect("mako runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TPC-C over the network is not supported"),
        "{stderr}"
    );
}
