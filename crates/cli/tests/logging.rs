//! The binary installs a log subscriber: library events reach stderr at the chosen level.

use std::process::Command;

fn mako(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mako"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run mako")
}

/// At `info`, the server's leadership events (each shard leader opening its epoch) are logged;
/// at the default level they are not, and a bad filter is one clear error.
#[test]
fn library_events_reach_stderr_at_the_chosen_level() {
    let args = ["demo", "--duration", "1", "--keys", "2000"];
    let out = mako(&[&args[..], &["--log-level", "info"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("epoch open"),
        "no server log line on stderr: {err}"
    );

    let out = mako(&[&args[..], &["--log-level", "info", "--log-json"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("epoch open"))
        .expect("a JSON log line");
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
    assert_eq!(v["level"], "INFO");

    let out = mako(&args);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("epoch open"));

    let out = mako(&["demo", "--log-level", "no==such"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--log-level"), "{err}");
}
