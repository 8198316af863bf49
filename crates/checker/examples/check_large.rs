//! Times the checker on ~100k-transaction histories of every workload (uniform and hot keys)
//! recorded against the in-memory executor: `cargo run --release --example check_large
//! [TXNS] [broken]`. With `broken`, reads are served from a replica that catches up only
//! every 16 transactions (many anomalies: the pathological case for the cycle search).

use std::time::Instant;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mako_checker::{
    ExecResult, KeyDist, MemExecutor, MemStore, Op, RunConfig, TxnExecutor, Value, Workload,
    WorkloadConfig, WorkloadKind, apply_ops, check, run_workload,
};

type Stale = Arc<Mutex<(HashMap<u64, Vec<Value>>, HashMap<u64, Vec<Value>>, u64)>>;

struct StaleExecutor(Stale);

impl TxnExecutor for StaleExecutor {
    fn execute(&mut self, ops: &[Op]) -> ExecResult {
        let Ok(mut g) = self.0.lock() else {
            return ExecResult::aborted("poisoned");
        };
        let (primary, replica, n) = &mut *g;
        *n += 1;
        if n.is_multiple_of(16) {
            *replica = primary.clone();
        }
        let observed = ops
            .iter()
            .map(|&op| match op {
                Op::Read { key } => Some(replica.get(&key).cloned().unwrap_or_default()),
                _ => apply_ops(primary, &[op]).pop().flatten(),
            })
            .collect();
        ExecResult::released(observed)
    }
}

fn main() {
    let broken = std::env::args().any(|a| a == "broken");
    let txns: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    for kind in WorkloadKind::ALL {
        if broken && kind == WorkloadKind::WriteSkew {
            continue; // fresh keys every round: the stale replica's clones would dominate
        }
        for hot in [false, true] {
            let mut config = WorkloadConfig::new(kind);
            if hot {
                config.dist = KeyDist::Hot {
                    hot_keys: 2,
                    hot_percent: 80,
                };
            }
            let store = MemStore::default();
            let workload = Workload::new(config);
            let started = Instant::now();
            let run = RunConfig::for_txns(8, txns / 8, 1);
            let history = if broken {
                let stale = Stale::default();
                run_workload(&workload, &run, |_| StaleExecutor(stale.clone()))
            } else {
                run_workload(&workload, &run, |_| MemExecutor::new(store.clone()))
            };
            let recorded = started.elapsed();
            let started = Instant::now();
            let report = check(&history);
            println!(
                "{kind:<12} hot={hot:<5} {} txns, {} edges: recorded in {:?}, checked in {:?}, {} anomalies {:?}",
                history.len(),
                report.stats.edges,
                recorded,
                started.elapsed(),
                report.anomalies.len(),
                report.classes()
            );
        }
    }
}
