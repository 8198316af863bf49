//! Simulated and threaded executions: correct executors yield no anomaly, broken ones
//! (snapshot isolation, lost writes, stale reads, visible aborts) are caught.

use std::collections::{BTreeSet, HashMap};

use mako_checker::{
    AnomalyClass, ExecResult, History, KeyDist, MemExecutor, MemStore, Op, OpRecord, Outcome,
    RunConfig, Txn, TxnExecutor, Value, Workload, WorkloadConfig, WorkloadKind, apply_ops, check,
    run_workload,
};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

type State = HashMap<u64, Vec<Value>>;

/// A database model driven step by step: `start` when the transaction takes its snapshot,
/// `commit` when it takes effect (between invocation and completion).
trait Model {
    type Snap;
    fn start(&mut self) -> Self::Snap;
    fn commit(&mut self, ops: &[Op], snap: Self::Snap, rng: &mut SmallRng) -> ExecResult;
    fn read_all(&mut self, ops: &[Op]) -> ExecResult;
}

/// Serializable: everything happens atomically at commit. Some transactions abort (not
/// applied), some end unknown (applied or not). With `visible_aborts`, some aborted
/// transactions are applied anyway (a broken store).
struct Serial {
    state: State,
    visible_aborts: bool,
}

impl Model for Serial {
    type Snap = ();
    fn start(&mut self) {}
    fn commit(&mut self, ops: &[Op], _: (), rng: &mut SmallRng) -> ExecResult {
        match rng.random_range(0..100) {
            0..8 => {
                if self.visible_aborts {
                    apply_ops(&mut self.state, ops);
                }
                ExecResult::aborted("model abort")
            }
            8..14 => ExecResult::unknown(apply_ops(&mut self.state, ops)),
            14..20 => ExecResult::unknown(Vec::new()),
            _ => ExecResult::released(apply_ops(&mut self.state, ops)),
        }
    }
    fn read_all(&mut self, ops: &[Op]) -> ExecResult {
        ExecResult::released(apply_ops(&mut self.state, ops))
    }
}

/// Snapshot isolation: reads from the snapshot taken at start, first committer wins on
/// write-write conflicts, no read validation (allows write skew).
struct SnapshotIsolation {
    state: State,
    version: HashMap<u64, u64>,
    clock: u64,
}

impl Model for SnapshotIsolation {
    type Snap = (State, u64);
    fn start(&mut self) -> (State, u64) {
        (self.state.clone(), self.clock)
    }
    fn commit(&mut self, ops: &[Op], (mut snap, at): (State, u64), _: &mut SmallRng) -> ExecResult {
        let observed = apply_ops(&mut snap, ops);
        let written: BTreeSet<u64> = ops
            .iter()
            .filter(|op| !matches!(op, Op::Read { .. }))
            .map(Op::key)
            .collect();
        if written
            .iter()
            .any(|k| self.version.get(k).copied().unwrap_or(0) > at)
        {
            return ExecResult::aborted("first committer wins");
        }
        self.clock += 1;
        for k in written {
            self.state.insert(k, snap[&k].clone());
            self.version.insert(k, self.clock);
        }
        ExecResult::released(observed)
    }
    fn read_all(&mut self, ops: &[Op]) -> ExecResult {
        ExecResult::released(apply_ops(&mut self.state, ops))
    }
}

enum Stage<S> {
    Idle,
    Invoked(Vec<Op>, u64),
    Started(Vec<Op>, u64, S),
    Done(Vec<Op>, u64, ExecResult),
}

/// Runs `txns` transactions of `clients` interleaved clients against `model`, then a final
/// read of every written key, and returns the history.
fn simulate<M: Model>(
    model: &mut M,
    config: WorkloadConfig,
    clients: usize,
    txns: usize,
    seed: u64,
) -> History {
    let workload = Workload::new(config);
    let mut gens: Vec<_> = (0..clients).map(|c| workload.client(c, seed)).collect();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut stages: Vec<Stage<M::Snap>> = (0..clients).map(|_| Stage::Idle).collect();
    let mut out: Vec<Txn> = Vec::new();
    let mut written = BTreeSet::new();
    let (mut clock, mut generated) = (0u64, 0usize);
    while generated < txns || stages.iter().any(|s| !matches!(s, Stage::Idle)) {
        let c = rng.random_range(0..clients);
        stages[c] = match std::mem::replace(&mut stages[c], Stage::Idle) {
            Stage::Idle if generated < txns => {
                generated += 1;
                clock += 1;
                let ops = gens[c].next_txn();
                written.extend(
                    ops.iter()
                        .filter(|o| !matches!(o, Op::Read { .. }))
                        .map(Op::key),
                );
                Stage::Invoked(ops, clock)
            }
            Stage::Idle => Stage::Idle,
            Stage::Invoked(ops, inv) => {
                let snap = model.start();
                Stage::Started(ops, inv, snap)
            }
            Stage::Started(ops, inv, snap) => {
                let result = model.commit(&ops, snap, &mut rng);
                Stage::Done(ops, inv, result)
            }
            Stage::Done(ops, inv, result) => {
                clock += 1;
                out.push(record(c, inv, clock, &ops, result));
                Stage::Idle
            }
        };
    }
    let ops: Vec<Op> = written.into_iter().map(|key| Op::Read { key }).collect();
    let result = model.read_all(&ops);
    out.push(record(clients, clock + 1, clock + 2, &ops, result));
    History::from_txns(out)
}

fn record(client: usize, invoke: u64, complete: u64, ops: &[Op], r: ExecResult) -> Txn {
    let mut obs = r.observed.into_iter();
    Txn {
        id: 0,
        client,
        invoke,
        complete,
        outcome: r.outcome,
        ops: ops
            .iter()
            .map(|&op| OpRecord {
                op,
                observed: obs.next().flatten(),
            })
            .collect(),
    }
}

fn config(kind: WorkloadKind, hot: bool) -> WorkloadConfig {
    let mut c = WorkloadConfig::new(kind);
    c.max_appends_per_key = 16;
    if hot {
        c.dist = KeyDist::Hot {
            hot_keys: 2,
            hot_percent: 80,
        };
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A serializable store, observed with random concurrency, aborts and unknown outcomes,
    /// never produces an anomaly.
    #[test]
    fn serial_model_is_never_flagged(
        seed in any::<u64>(),
        clients in 1usize..6,
        kind in 0usize..4,
        hot in any::<bool>(),
    ) {
        let mut model = Serial { state: State::new(), visible_aborts: false };
        let h = simulate(&mut model, config(WorkloadKind::ALL[kind], hot), clients, 150, seed);
        let r = check(&h);
        prop_assert!(r.is_valid(), "{}", r);
    }
}

#[test]
fn snapshot_isolation_write_skew_is_caught() {
    for seed in 0..5 {
        let mut model = SnapshotIsolation {
            state: State::new(),
            version: HashMap::new(),
            clock: 0,
        };
        let h = simulate(
            &mut model,
            config(WorkloadKind::WriteSkew, false),
            4,
            200,
            seed,
        );
        let r = check(&h);
        assert!(r.has(AnomalyClass::WriteSkew), "seed {seed}:\n{r}");
        assert!(r.has(AnomalyClass::G2), "seed {seed}:\n{r}");
    }
}

#[test]
fn snapshot_isolation_is_caught_on_lists_and_registers() {
    for kind in [WorkloadKind::ListAppend, WorkloadKind::Registers] {
        let mut model = SnapshotIsolation {
            state: State::new(),
            version: HashMap::new(),
            clock: 0,
        };
        let h = simulate(&mut model, config(kind, true), 5, 400, 1);
        let r = check(&h);
        assert!(r.has(AnomalyClass::G2), "{kind}:\n{r}");
    }
}

#[test]
fn visible_aborts_are_caught() {
    let mut model = Serial {
        state: State::new(),
        visible_aborts: true,
    };
    let h = simulate(
        &mut model,
        config(WorkloadKind::ListAppend, true),
        3,
        300,
        2,
    );
    let r = check(&h);
    assert!(r.has(AnomalyClass::G1a), "{r}");
}

/// Drops every `every`-th append or write while reporting the transaction released.
struct LosingExecutor {
    inner: MemExecutor,
    count: u64,
    every: u64,
}

impl TxnExecutor for LosingExecutor {
    fn execute(&mut self, ops: &[Op]) -> ExecResult {
        let kept: Vec<Op> = ops
            .iter()
            .map(|&op| match op {
                Op::Append { key, .. } | Op::Write { key, .. } => {
                    self.count += 1;
                    if self.count.is_multiple_of(self.every) {
                        Op::Read { key }
                    } else {
                        op
                    }
                }
                other => other,
            })
            .collect();
        let mut r = self.inner.execute(&kept);
        for (o, op) in r.observed.iter_mut().zip(ops) {
            if !op.observes() {
                *o = None;
            }
        }
        r
    }
}

#[test]
fn lost_writes_are_caught() {
    let store = MemStore::default();
    let workload = Workload::new(config(WorkloadKind::ListAppend, false));
    let h = run_workload(&workload, &RunConfig::for_txns(3, 300, 5), |_| {
        LosingExecutor {
            inner: MemExecutor::new(store.clone()),
            count: 0,
            every: 10,
        }
    });
    let r = check(&h);
    assert!(r.has(AnomalyClass::LostWrite), "{r}");
}

/// Serves reads from a replica that catches up with the primary only every few
/// transactions (writes go to the primary).
struct StaleExecutor {
    primary: State,
    replica: State,
    n: u64,
}

impl TxnExecutor for StaleExecutor {
    fn execute(&mut self, ops: &[Op]) -> ExecResult {
        self.n += 1;
        if self.n.is_multiple_of(4) {
            self.replica = self.primary.clone();
        }
        let observed = ops
            .iter()
            .map(|&op| match op {
                Op::Read { key } => Some(self.replica.get(&key).cloned().unwrap_or_default()),
                _ => apply_ops(&mut self.primary, &[op]).pop().flatten(),
            })
            .collect();
        ExecResult::released(observed)
    }
}

#[test]
fn stale_reads_are_caught_as_realtime_violations() {
    let workload = Workload::new(config(WorkloadKind::Registers, false));
    let exec = std::sync::Mutex::new(Some(StaleExecutor {
        primary: State::new(),
        replica: State::new(),
        n: 0,
    }));
    // One client: the history is sequential, so only real-time order can expose staleness.
    let mut run = RunConfig::for_txns(1, 200, 3);
    run.final_reads = false;
    let h = run_workload(&workload, &run, |_| {
        exec.lock()
            .ok()
            .and_then(|mut e| e.take())
            .expect("one executor")
    });
    let r = check(&h);
    assert!(
        r.anomalies.iter().any(|a| a.class().is_realtime_only()),
        "{r}"
    );
}

#[test]
fn threaded_runs_against_a_serializable_store_are_valid() {
    for kind in WorkloadKind::ALL {
        for hot in [false, true] {
            let store = MemStore::default();
            let workload = Workload::new(config(kind, hot));
            let h = run_workload(&workload, &RunConfig::for_txns(4, 250, 11), |_| {
                MemExecutor::new(store.clone())
            });
            assert!(h.len() >= 1000);
            assert!(h.txns().iter().all(|t| t.outcome == Outcome::Released));
            let r = check(&h);
            assert!(r.is_valid(), "{kind} hot={hot}:\n{r}");
        }
    }
}
