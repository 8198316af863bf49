//! `mako bench raft` runs with durable logs (a host on an fsync log needs its snapshot directory).

use std::process::Command;

#[test]
fn bench_raft_runs_on_fsync_logs() {
    let out = Command::new(env!("CARGO_BIN_EXE_mako"))
        .args([
            "bench",
            "raft",
            "--net",
            "mem",
            "--entry-size",
            "64",
            "--groups",
            "1",
            "--durability",
            "fsync",
            "--duration",
            "1",
            "--no-paced",
        ])
        .output()
        .expect("mako runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("fsync"));
}

/// `mako bench group --replication raft --json`: a ceiling line, then the group line, both
/// naming their settings, the group line its protocol and its fraction of the ceiling.
#[test]
fn bench_group_json_reports_ceiling_and_protocol() {
    let out = Command::new(env!("CARGO_BIN_EXE_mako"))
        .args([
            "bench",
            "group",
            "--replication",
            "raft",
            "--net",
            "mem",
            "--entry-size",
            "1024",
            "--groups",
            "1",
            "--durability",
            "memory",
            "--duration",
            "0.3",
            "--no-paced",
            "--json",
        ])
        .output()
        .expect("mako runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["kind"], "ceiling");
    assert_eq!(lines[0]["durability"], "memory");
    assert!(lines[0]["entries_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
    assert_eq!(lines[1]["kind"], "group");
    assert_eq!(lines[1]["protocol"], "raft");
    assert_eq!(lines[1]["gaps"], 0);
    assert!(lines[1]["pct_of_ceiling"].as_f64().unwrap_or(0.0) > 0.0);
}

/// `mako bench raft` is Raft only: asking it for Paxos is refused before anything runs.
#[test]
fn bench_raft_refuses_another_protocol() {
    let out = Command::new(env!("CARGO_BIN_EXE_mako"))
        .args(["bench", "raft", "--replication", "paxos"])
        .output()
        .expect("mako runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mako bench group --replication paxos"));
}

/// `--replication` names are checked by the parser.
#[test]
fn unknown_protocol_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_mako"))
        .args(["bench", "--replication", "zab"])
        .output()
        .expect("mako runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown replication protocol"));
}

/// `mako demo --replication paxos` runs, or (before Multi-Paxos is built in) fails with a
/// message naming the cause — never a panic.
#[test]
fn demo_with_paxos_runs_or_fails_cleanly() {
    let out = Command::new(env!("CARGO_BIN_EXE_mako"))
        .args([
            "demo",
            "--replication",
            "paxos",
            "--duration",
            "0.5",
            "--keys",
            "2000",
        ])
        .output()
        .expect("mako runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stdout.contains("3 paxos replicas"), "{stdout}");
    if out.status.success() {
        assert!(stdout.contains("replicas consistent"), "{stdout}");
    } else {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("Multi-Paxos"), "{stderr}");
    }
}
