//! `mako bench --workload tpcc` (in-process) prints memory per NewOrder against the payload, in text and JSON.

use std::process::Command;

fn bench_tpcc(extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mako"))
        .args(["bench", "--workload", "tpcc", "--small", "--duration", "1"])
        .args(extra)
        .output()
        .expect("mako runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn text_report_has_the_memory_per_new_order_line() {
    let stdout = bench_tpcc(&[]);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("memory per NewOrder: "))
        .unwrap_or_else(|| panic!("no memory line in:\n{stdout}"));
    assert!(
        line.contains(" resident growth vs ")
            && line.contains(" B payload (")
            && line.contains("target <= 2x")
            && line.contains(" after load -> "),
        "{line}"
    );
    #[cfg(target_os = "linux")]
    assert!(!line.contains("n/a"), "{line}");
    // Shorter than a minute: no endurance line.
    assert!(!stdout.contains("endurance:"), "{stdout}");
}

#[test]
fn json_report_has_memory_figures() {
    let stdout = bench_tpcc(&["--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let m = &v["memory"];
    assert!(m["payload_per_new_order"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["payload"]["inserted"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["target_ratio"].as_f64(), Some(2.0));
    assert_eq!(
        m["new_orders"].as_u64(),
        v["by_type"][0]["committed"].as_u64()
    );
    #[cfg(target_os = "linux")]
    assert!(m["rss_after_load"].as_u64().unwrap() > 0, "{m}");
    assert!(v["endurance"].is_null(), "{v}");
}
