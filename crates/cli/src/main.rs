//! `mako`: the mako-rs command line.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mako_bench::{BenchConfig, BenchReport, Dist, Progress, Workload};

/// mako-rs: a sharded, replicated, serializable transactional key-value store.
#[derive(Parser, Debug)]
#[command(name = "mako", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a workload in-process on one shard and print throughput, aborts and latency.
    Bench(BenchArgs),
}

/// Workload names accepted by `--workload`.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum WorkloadArg {
    /// Half read-modify-write 4 keys, half read 4 keys (Mako's microbenchmark).
    Micro,
    /// YCSB A: 50% reads, 50% updates.
    YcsbA,
    /// YCSB B: 95% reads, 5% updates.
    YcsbB,
    /// YCSB C: reads only.
    YcsbC,
}

/// Key distributions accepted by `--dist`.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum DistArg {
    /// Every key equally likely.
    Uniform,
    /// YCSB Zipfian, skew 0.99.
    Zipf,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Transaction mix.
    #[arg(long, value_enum, default_value = "micro")]
    workload: WorkloadArg,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Measured phase in seconds (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Keys loaded before the measured phase.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Key distribution.
    #[arg(long, value_enum, default_value = "uniform")]
    dist: DistArg,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Seed of the workers' random generators.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl BenchArgs {
    fn config(&self) -> anyhow::Result<BenchConfig> {
        let duration = Duration::try_from_secs_f64(self.duration)
            .ok()
            .filter(|d| !d.is_zero())
            .with_context(|| {
                format!(
                    "--duration must be a positive number of seconds, got {}",
                    self.duration
                )
            })?;
        Ok(BenchConfig {
            workload: match self.workload {
                WorkloadArg::Micro => Workload::Micro,
                WorkloadArg::YcsbA => Workload::YcsbA,
                WorkloadArg::YcsbB => Workload::YcsbB,
                WorkloadArg::YcsbC => Workload::YcsbC,
            },
            threads: self.threads,
            duration,
            keys: self.keys,
            dist: match self.dist {
                DistArg::Uniform => Dist::Uniform,
                DistArg::Zipf => Dist::Zipf,
            },
            value_size: self.value_size,
            seed: self.seed,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench(&args),
    }
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    cfg.validate()?;
    let live = std::io::stdout().is_terminal() && !args.json;
    if !args.json {
        println!(
            "mako bench: workload={} threads={} keys={} dist={} duration={:.1}s (loading...)",
            cfg.workload.name(),
            cfg.threads,
            cfg.keys,
            cfg.dist.name(),
            cfg.duration.as_secs_f64()
        );
    }
    let report = mako_bench::run(&cfg, |p| {
        if live {
            print_progress(&p);
        }
    })?;
    if live {
        print!("\r\x1b[2K");
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_progress(p: &Progress) {
    let attempts = (p.committed + p.aborted).max(1);
    print!(
        "\r\x1b[2K[{:>5.1}s/{:.0}s] {:>12} txn/s  committed {:>11}  aborts {:.2}%",
        p.elapsed.as_secs_f64(),
        p.total.as_secs_f64(),
        group(p.recent_tps as u64),
        group(p.committed),
        100.0 * p.aborted as f64 / attempts as f64
    );
    let _ = std::io::stdout().flush();
}

fn print_report(r: &BenchReport) {
    println!("load:      {} keys in {:.2} s", group(r.keys), r.load_secs);
    println!(
        "committed: {} txn in {:.2} s = {} txn/s",
        group(r.committed),
        r.secs,
        group(r.txn_per_sec as u64)
    );
    println!("aborts:    {} ({:.3}%)", group(r.aborted), r.abort_pct);
    println!(
        "latency:   p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us",
        r.p50_us, r.p99_us, r.p999_us
    );
}

/// Formats a number with thousands separators.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
