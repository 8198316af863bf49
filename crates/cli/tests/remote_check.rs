//! `mako check -f` against real `mako server` processes on 127.0.0.1: a clean list-append run
//! on 2 shards × 3 replicas finds no anomaly, a deliberately broken executor over the same
//! network path is caught, and a bank run with leader kills (sites started by `mako check`
//! itself) conserves money and ends with every replica equal to its leader.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use mako_deploy::{Deployment, LocalTopology};

fn mako(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mako"))
        .args(args)
        .output()
        .expect("mako runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The number after `label` in the summary line (`txns: N released ...`).
fn released(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("txns: "))
        .and_then(|l| l.split_whitespace().next())
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn start(dir: &Path, shards: u32, replicas: u32) -> (Deployment, String) {
    let cfg = LocalTopology::new(shards, replicas)
        .write(dir)
        .expect("config written");
    let mut d = Deployment::start(
        Path::new(env!("CARGO_BIN_EXE_mako")),
        std::slice::from_ref(&cfg),
        &[],
        mako_deploy::Output::Files(dir.join("logs")),
        None,
    )
    .expect("sites start");
    d.wait_ready(Duration::from_secs(60)).expect("leaders");
    (d, cfg.display().to_string())
}

#[test]
fn list_append_on_2c2s3r_finds_no_anomaly_and_a_broken_executor_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut d, cfg) = start(dir.path(), 2, 3);

    let out = mako(&[
        "check",
        "-f",
        &cfg,
        "--workload",
        "list-append",
        "--duration",
        "5",
        "--clients",
        "4",
    ]);
    let t = text(&out);
    println!("{t}");
    assert!(out.status.success(), "{t}");
    assert!(t.contains("durability=fsync shards=2 replicas=3"), "{t}");
    assert!(released(&t) > 0, "{t}");
    assert!(t.contains("anomalies: none"), "{t}");
    assert!(t.contains("every follower equals its leader"), "{t}");

    // The same network path with each operation run as its own transaction: the write-skew
    // pairs then both read their key unwritten, and the checker must say so.
    let out = mako(&[
        "check",
        "-f",
        &cfg,
        "--workload",
        "write-skew",
        "--duration",
        "3",
        "--clients",
        "4",
        "--inject-fault",
        "split-txns",
    ]);
    let t = text(&out);
    println!("{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(released(&t) > 0, "{t}");
    assert!(!t.contains("anomalies: none"), "{t}");
    assert!(t.contains("write-skew: T"), "{t}");
    d.shutdown(Duration::from_secs(10));
}

#[test]
fn bank_with_leader_kills_conserves_money_and_replicas_converge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LocalTopology::new(2, 3)
        .write(dir.path())
        .expect("config written");
    let cfg = cfg.display().to_string();
    let out = mako(&[
        "check",
        "-f",
        &cfg,
        "--workload",
        "bank",
        "--kill-leaders",
        "2",
        "--kill-every",
        "3",
        "--duration",
        "5",
        "--clients",
        "4",
    ]);
    let t = text(&out);
    println!("{t}");
    assert!(out.status.success(), "{t}");
    assert_eq!(t.matches("SIGKILLed").count(), 2, "{t}");
    assert_eq!(t.matches(" restarted").count(), 2, "{t}");
    assert!(t.contains("kills: 2"), "{t}");
    assert!(released(&t) > 0, "{t}");
    // Bank totals are part of the check: "none" means every audit summed to zero.
    assert!(t.contains("anomalies: none"), "{t}");
    assert!(t.contains("every follower equals its leader"), "{t}");
}

#[test]
fn kill_leaders_needs_a_config_and_replicas() {
    let out = mako(&["check", "--kill-leaders", "2", "--duration", "1"]);
    assert!(!out.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LocalTopology::new(1, 1)
        .write(dir.path())
        .expect("config written");
    let out = mako(&[
        "check",
        "-f",
        &cfg.display().to_string(),
        "--kill-leaders",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--kill-leaders needs 3 or more replicas"),
        "{}",
        text(&out)
    );
}
