//! `mako check`: runs a history-checker workload on an in-process cluster, checks the
//! recorded history for anomalies, and exits non-zero on any.

use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use mako_bench::check::{CheckConfig, CheckProgress, CheckRun, Fault, HOT_KEYS, run_check};
use mako_checker::{KeyDist, WorkloadKind};

/// Workloads accepted by `--workload`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum WorkloadArg {
    /// Appends of unique values to lists and whole-list reads.
    ListAppend,
    /// Read-write registers with unique values.
    Registers,
    /// Transfers between accounts and audits of the total.
    Bank,
    /// Pairs that each read one key and write the other.
    WriteSkew,
}

impl From<WorkloadArg> for WorkloadKind {
    fn from(w: WorkloadArg) -> Self {
        match w {
            WorkloadArg::ListAppend => WorkloadKind::ListAppend,
            WorkloadArg::Registers => WorkloadKind::Registers,
            WorkloadArg::Bank => WorkloadKind::Bank,
            WorkloadArg::WriteSkew => WorkloadKind::WriteSkew,
        }
    }
}

/// Key distributions accepted by `--dist`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum CheckDist {
    /// Every key equally likely.
    Uniform,
    /// 80% of picks on 2 hot keys.
    Hot,
}

/// Deliberate executor bugs accepted by the hidden `--inject-fault` (tests of the harness).
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FaultArg {
    /// Reads repeat the client's first read of each key.
    StaleReads,
    /// Each operation runs as its own transaction.
    SplitTxns,
}

/// Arguments of `mako check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The workload.
    #[arg(long, value_enum, default_value = "list-append")]
    workload: WorkloadArg,
    /// Shards.
    #[arg(long, default_value_t = 2)]
    shards: u32,
    /// Raft replicas per shard (1, 3 or 5).
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// Coordinator workers per shard.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Client threads.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Key distribution.
    #[arg(long, value_enum, default_value = "uniform")]
    dist: CheckDist,
    /// Active keys (list slots, registers, accounts); the workload's default if unset.
    #[arg(long)]
    keys: Option<usize>,
    /// Seconds the clients run (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seed of the workload generators.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run a deliberately broken executor (shows that the checker catches it).
    #[arg(long, value_enum, hide = true)]
    inject_fault: Option<FaultArg>,
}

impl CheckArgs {
    fn config(&self) -> anyhow::Result<CheckConfig> {
        anyhow::ensure!(
            (1..=16).contains(&self.shards),
            "--shards must be between 1 and 16"
        );
        anyhow::ensure!(
            [1, 3, 5].contains(&self.replicas),
            "--replicas must be 1, 3 or 5"
        );
        anyhow::ensure!(
            (1..=64).contains(&self.threads),
            "--threads must be between 1 and 64"
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.clients),
            "--clients must be between 1 and 1024"
        );
        anyhow::ensure!(
            self.keys.is_none_or(|k| (1..=1_000_000).contains(&k)),
            "--keys must be between 1 and 1,000,000"
        );
        let mut cfg = CheckConfig::new(self.workload.into(), self.shards, self.replicas);
        cfg.workers = self.threads;
        cfg.clients = self.clients;
        cfg.dist = match self.dist {
            CheckDist::Uniform => KeyDist::Uniform,
            CheckDist::Hot => HOT_KEYS,
        };
        cfg.keys = self.keys;
        cfg.duration = crate::duration_arg(self.duration)?;
        cfg.seed = self.seed;
        cfg.fault = self.inject_fault.map(|f| match f {
            FaultArg::StaleReads => Fault::StaleReads,
            FaultArg::SplitTxns => Fault::SplitTxns,
        });
        Ok(cfg)
    }
}

/// Runs `mako check`; exits with status 1 if the checker found an anomaly or a follower
/// differs from its leader.
pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    println!(
        "mako check: workload={} shards={} replicas={} workers/shard={} clients={} dist={} duration={:.1}s seed={}{}",
        cfg.workload,
        cfg.shards,
        cfg.replicas,
        cfg.workers,
        cfg.clients,
        match args.dist {
            CheckDist::Uniform => "uniform",
            CheckDist::Hot => "hot",
        },
        cfg.duration.as_secs_f64(),
        cfg.seed,
        match cfg.fault {
            Some(f) => format!(" (deliberately broken executor: {f:?})"),
            None => String::new(),
        }
    );
    let live = std::io::stdout().is_terminal();
    let run = run_check(&cfg, |p| {
        if live {
            show_progress(&p);
        }
    })?;
    if live {
        print!("\r\x1b[2K");
    }
    print_summary(&run);
    if run.is_valid() {
        Ok(())
    } else {
        std::process::exit(1);
    }
}

fn show_progress(p: &CheckProgress) {
    let width = 30;
    let frac = p.elapsed.as_secs_f64() / p.total.as_secs_f64().max(1e-9);
    let done = ((frac * width as f64) as usize).min(width);
    print!(
        "\r\x1b[2K[{}{}] {:>5.1}s  released {}  aborted {}  unknown {}",
        "#".repeat(done),
        " ".repeat(width - done),
        p.elapsed.as_secs_f64(),
        crate::group(p.released),
        crate::group(p.aborted),
        crate::group(p.unknown)
    );
    let _ = std::io::stdout().flush();
}

fn print_summary(run: &CheckRun) {
    let s = &run.stats;
    let reasons = s
        .abort_reasons
        .iter()
        .map(|(r, n)| format!("{r}: {}", crate::group(*n as u64)))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "txns: {} released ({} cross-shard), {} aborted{}, {} unknown; ran {:.1} s, checked in {:.2} s",
        crate::group(s.released as u64),
        crate::group(s.cross_shard_released as u64),
        crate::group(s.aborted as u64),
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({reasons})")
        },
        crate::group(s.unknown as u64),
        s.elapsed.as_secs_f64(),
        s.check_time.as_secs_f64()
    );
    if s.undecodable > 0 {
        println!("undecodable stored values: {}", s.undecodable);
    }
    match &s.replicas {
        Some(Ok(())) => println!("replicas: every follower equals its leader"),
        Some(Err(d)) => println!("replicas DIFFER: {d}"),
        None => {}
    }
    let classes = run.report.classes();
    if classes.is_empty() {
        println!("anomalies: none");
    } else {
        let by_class = classes
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!("anomalies: {} ({by_class})", run.report.anomalies.len());
    }
    println!("{}", run.report);
}
