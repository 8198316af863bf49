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
