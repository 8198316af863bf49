//! TPC-C over TCP against a deployment of `mako` processes started here, for figures:
//!
//! ```text
//! cargo build --release -p mako
//! cargo run --release -p mako-tpcc --example remote_tpcc -- \
//!     --exe target/release/mako -f config/mako_raft.yml -f config/2c2s3r.yml -f config/tpcc.yml \
//!     -f /tmp/overlay.yml --warehouses 2 --clients 8 --secs 10 [--small]
//! ```
//!
//! `--small` loads 10,000 items and 300 customers and orders per district (else the spec's).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mako_deploy::{Deployment, Output};
use mako_tpcc::{RemoteOptions, Scale, TpccProgress, run_remote};

fn main() {
    let mut files = Vec::new();
    let mut exe = PathBuf::from("target/release/mako");
    let mut opts = RemoteOptions {
        load_threads: 4,
        ..RemoteOptions::default()
    };
    let mut json = false;
    let mut log_level = "warn".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("a value after the flag");
        match a.as_str() {
            "-f" => files.push(PathBuf::from(val())),
            "--exe" => exe = PathBuf::from(val()),
            "--warehouses" => opts.warehouses = val().parse().expect("a number"),
            "--clients" => opts.clients = val().parse().expect("a number"),
            "--load-threads" => opts.load_threads = val().parse().expect("a number"),
            "--secs" => opts.duration = Duration::from_secs(val().parse().expect("seconds")),
            "--small" => {
                opts.scale = Scale {
                    items: 10_000,
                    customers_per_district: 300,
                    orders_per_district: 300,
                }
            }
            "--json" => json = true,
            "--log-level" => log_level = val(),
            other => panic!("unknown argument {other}"),
        }
    }
    let logs = std::env::temp_dir().join(format!("remote_tpcc_logs_{}", std::process::id()));
    let mut d = Deployment::start(
        &exe,
        &files,
        &[],
        Output::Files(logs.clone()),
        Some(&log_level),
    )
    .expect("starting the deployment");
    d.wait_ready(Duration::from_secs(60)).expect("ready");
    let cfg = Arc::clone(d.config());
    let mut last = 0.0;
    let r = run_remote(&cfg, &opts, |p| match p {
        TpccProgress::Loading(l) => {
            let f = l.rows as f64 / l.expected_rows.max(1) as f64;
            if f - last >= 0.1 {
                last = f;
                eprintln!(
                    "loading {:.0}% ({} rows, {:.0?})",
                    f * 100.0,
                    l.rows,
                    l.elapsed
                );
            }
        }
        TpccProgress::Running {
            elapsed,
            recent_tps,
            ..
        } => {
            eprintln!("running {elapsed:.0?}: {recent_tps:.0} txn/s")
        }
    });
    d.shutdown(Duration::from_secs(20));
    match r {
        Ok(r) if json => println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default()),
        Ok(r) => println!(
            "{r}\nload {:.1} s, {} rows (logs {})",
            r.load_secs,
            r.rows_loaded,
            logs.display()
        ),
        Err(e) => {
            eprintln!("failed: {e} (logs {})", logs.display());
            std::process::exit(1);
        }
    }
}
