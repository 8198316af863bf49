//! `mako check` end to end: a clean run exits 0 with a summary; a deliberately broken
//! executor makes it exit 1 and name the anomalies; bad flags are refused.

use std::process::{Command, Output};

fn mako(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mako"))
        .args(args)
        .output()
        .expect("mako runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_clean_run_exits_zero_with_a_summary() {
    let out = mako(&[
        "check",
        "--workload",
        "list-append",
        "--shards",
        "2",
        "--replicas",
        "1",
        "--clients",
        "4",
        "--duration",
        "1",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("mako check: workload=list-append shards=2"),
        "{text}"
    );
    assert!(text.contains("released"), "{text}");
    assert!(text.contains("anomalies: none"), "{text}");
    assert!(text.contains("no anomalies"), "{text}");
    assert!(text.contains("every follower equals its leader"), "{text}");
}

#[test]
fn an_anomaly_exits_non_zero_and_is_printed() {
    let out = mako(&[
        "check",
        "--workload",
        "write-skew",
        "--shards",
        "1",
        "--replicas",
        "1",
        "--clients",
        "4",
        "--duration",
        "1",
        "--inject-fault",
        "split-txns",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text.contains("anomalies: "), "{text}");
    assert!(text.contains("write-skew: T"), "{text}");
}

#[test]
fn bad_flags_are_refused() {
    let out = mako(&["check", "--workload", "nope"]);
    assert!(!out.status.success());
    let out = mako(&["check", "--replicas", "2", "--duration", "1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--replicas must be 1, 3 or 5"),
        "{out:?}"
    );
}
