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
        &[file],
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
    d.shutdown(Duration::from_secs(10));

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
