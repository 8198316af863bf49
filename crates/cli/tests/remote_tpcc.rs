//! TPC-C against real `mako` processes: 2 shards × 3 replicas with the TPC-C tables, loaded
//! and driven over TCP through the server-side procedures (`mako_tpcc::run_remote`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mako_deploy::{Deployment, LocalTopology, Output};
use mako_tpcc::{RemoteOptions, Scale, TxnKind, run_remote};

/// The tables of `config/tpcc.yml`, as the test topology's extra YAML.
fn tpcc_tables() -> String {
    let overlay = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/tpcc.yml");
    std::fs::read_to_string(overlay).expect("config/tpcc.yml")
}

fn dump_logs(logs: &Path) {
    for e in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        eprintln!(
            "== {}\n{}",
            e.path().display(),
            std::fs::read_to_string(e.path()).unwrap_or_default()
        );
    }
}

#[test]
fn tpcc_runs_over_tcp_as_server_side_procedures_on_two_shards() {
    let dir = tempfile::tempdir().unwrap();
    let mut topo = LocalTopology::new(2, 3);
    topo.durability = "memory".into();
    topo.extra = tpcc_tables();
    let file = topo.write(dir.path()).unwrap();
    let logs = dir.path().join("logs");
    let mut d = Deployment::start(
        Path::new(env!("CARGO_BIN_EXE_mako")),
        std::slice::from_ref(&file),
        &[],
        Output::Files(logs.clone()),
        Some("info"),
    )
    .unwrap();
    if let Err(e) = d.wait_ready(Duration::from_secs(30)) {
        dump_logs(&logs);
        panic!("{e}");
    }
    let cfg = Arc::clone(d.config());
    let opts = RemoteOptions {
        warehouses: 2,
        clients: 2,
        duration: Duration::from_secs(3),
        scale: Scale {
            items: 500,
            customers_per_district: 30,
            orders_per_district: 30,
        },
        load: true,
        load_threads: 2,
        seed: 7,
        check: true,
    };
    let mut loaded = 0;
    let r = run_remote(&cfg, &opts, |p| {
        if let mako_tpcc::TpccProgress::Loading(l) = p {
            loaded = l.rows;
        }
    });
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            dump_logs(&logs);
            panic!("remote TPC-C failed: {e}");
        }
    };
    eprintln!("{r}");
    // `mako bench -f ... --workload tpcc --plot`: the picture of a run against the deployment.
    let svg_path = dir.path().join("remote-tpcc.svg");
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_mako"))
        .arg("bench")
        .arg("-f")
        .arg(&file)
        .args([
            "--workload",
            "tpcc",
            "--warehouses",
            "2",
            "--clients",
            "2",
            "--small",
            "--duration",
            "0.5",
            "--plot",
        ])
        .arg(&svg_path)
        .output()
        .expect("mako runs");
    let svg = std::fs::read_to_string(&svg_path).unwrap_or_default();
    d.shutdown(Duration::from_secs(10));
    assert!(
        cli.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&cli.stdout),
        String::from_utf8_lossy(&cli.stderr)
    );
    for p in [
        "workload tpcc, 2 shard(s) x 3 replicas, durability memory, 2 warehouse(s), 2 client(s)",
        "cross-shard",
        "released/s",
        "NewOrder/s",
        "release latency per bucket (log scale)",
        "release latency (client-observed): distribution (log scale)",
    ] {
        assert!(svg.contains(p), "picture lacks {p:?}: {svg}");
    }
    assert!(svg.trim_end().ends_with("</svg>"));

    // The series: released (= committed) and release latency per 100 ms over the 3 s.
    assert_eq!((r.series.len(), r.bucket_ms), (30, 100));
    let released: u64 = r.series.iter().map(|b| b.released).sum();
    let committed: u64 = r.series.iter().map(|b| b.committed).sum();
    assert_eq!(released, committed);
    assert!(released > 0 && released <= r.released, "{released}");
    assert_eq!(r.release_latency.len(), 41);

    assert_eq!(r.shards_used, 2, "two warehouses over two shards");
    assert!(
        loaded > 0 && r.rows_loaded == loaded,
        "load progress was reported"
    );
    assert!(r.released > 0, "nothing released: {r:#?}");
    for kind in TxnKind::ALL {
        let s = r.stats(kind).unwrap();
        assert!(
            s.released + s.rollbacks > 0,
            "{kind:?} never completed: {r:#?}"
        );
    }
    assert_eq!(r.unknown, 0, "unknown outcomes without faults: {r:#?}");
    assert_eq!(r.durability, "memory");
    assert_eq!((r.shards, r.replicas), (2, 3));
    assert_eq!(r.checks.len(), 2);
    assert!(r.consistent(), "consistency conditions 1-4: {r:#?}");
    let orders: u64 = r
        .checks
        .iter()
        .filter_map(|c| c.report.map(|x| x.orders))
        .sum();
    // Every shard's loaded orders, plus the released NewOrders (all in the shards' orders).
    assert!(orders >= 2 * 10 * 30 + r.stats(TxnKind::NewOrder).unwrap().released);
}
