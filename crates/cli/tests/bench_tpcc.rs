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

/// A 1x3 in-process cluster holds three copies of every row: the memory line says so and
/// compares the growth with the payload of all three.
#[test]
fn cluster_memory_line_counts_every_replica_in_the_process() {
    let stdout = bench_tpcc(&["--shards", "1", "--replicas", "3"]);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("memory per NewOrder: "))
        .unwrap_or_else(|| panic!("no memory line in:\n{stdout}"));
    assert!(
        line.contains(" payload (3 replicas in this process: ")
            && line.contains(" B x3; ")
            && line.contains("target <= 2x"),
        "{line}"
    );
    // The stored payload is three times one copy's.
    let num = |s: &str| -> f64 {
        s.trim()
            .trim_end_matches(" B")
            .replace(',', "")
            .parse()
            .unwrap()
    };
    let stored = line
        .split(" resident growth vs ")
        .nth(1)
        .and_then(|r| r.split(" payload (").next());
    let one = line
        .split("in this process: ")
        .nth(1)
        .and_then(|r| r.split(" x3;").next());
    let (stored, one) = (
        num(stored.expect("stored payload")),
        num(one.expect("one copy")),
    );
    assert!((stored - 3.0 * one).abs() <= 3.0, "{line}");
}

#[test]
fn cluster_json_report_has_the_copies() {
    let stdout = bench_tpcc(&["--shards", "1", "--replicas", "3", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let m = &v["tpcc"]["memory"];
    assert_eq!(m["copies"].as_u64(), Some(3), "{m}");
    let one = m["payload_per_new_order"].as_f64().unwrap();
    let all = m["stored_payload_per_new_order"].as_f64().unwrap();
    assert!((all - 3.0 * one).abs() < 1e-6 * all, "{m}");
}
