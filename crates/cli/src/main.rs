//! `mako`: the mako-rs command line.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

mod check;
mod log;
use mako_bench::{
    BenchConfig, BenchReport, ClusterBenchConfig, ClusterReport, Dist, NetKind, Progress,
    RaftBenchConfig, RaftBenchReport, Workload,
};
use mako_logstore::Durability;

/// mako-rs: a sharded, replicated, serializable transactional key-value store.
#[derive(Parser, Debug)]
#[command(name = "mako", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a workload in-process and print throughput, aborts and latency.
    Bench(BenchCmd),
    /// The embedded demo: 2 shards x 3 Raft replicas in one process, 10 s of the micro workload.
    Demo(DemoArgs),
    /// Run a history-checker workload on an in-process cluster and report anomalies (exit 1 on any).
    Check(check::CheckArgs),
    /// Check or repair a node's durable Raft log.
    #[command(subcommand)]
    Log(log::LogCmd),
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Keys over both shards.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Coordinator workers per shard leader.
    #[arg(long, default_value_t = 1)]
    threads: u32,
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchCmd {
    #[command(subcommand)]
    target: Option<BenchTarget>,
    #[command(flatten)]
    kv: BenchArgs,
}

#[derive(Subcommand, Debug)]
enum BenchTarget {
    /// Raft replication alone: 3 replicas per group in one process, entries/s and commit latency.
    Raft(RaftArgs),
}

/// Transports accepted by `--net`.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum NetArg {
    /// In-memory network.
    Mem,
    /// Loopback TCP.
    Tcp,
}

/// Durability modes accepted by `--durability`.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum DurabilityArg {
    /// fdatasync before acknowledging.
    Fsync,
    /// Write without sync.
    Buffered,
    /// Keep nothing on disk.
    Memory,
}

#[derive(clap::Args, Debug)]
struct RaftArgs {
    /// Transports to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "mem,tcp")]
    net: Vec<NetArg>,
    /// Entry sizes in bytes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "64,4096,262144")]
    entry_size: Vec<usize>,
    /// Group counts (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,6")]
    groups: Vec<usize>,
    /// Durability modes (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "memory,fsync"
    )]
    durability: Vec<DurabilityArg>,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Entries in flight per group when unthrottled.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Skip the paced run at half the unthrottled rate.
    #[arg(long)]
    no_paced: bool,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    json: bool,
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
    /// TPC-C: the five-transaction mix, one home warehouse per worker.
    Tpcc,
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
    /// Shards; with more than 1 (or with --replicas) the run uses an in-process cluster.
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// Raft replicas per shard; the cluster run is repeated with 1 replica (replication off) for comparison.
    #[arg(long)]
    replicas: Option<u32>,
    /// TPC-C warehouses (with --workload tpcc).
    #[arg(long, default_value_t = 1)]
    warehouses: u32,
    /// TPC-C: check consistency conditions 1-4 after the run; a violation exits non-zero.
    #[arg(long)]
    check: bool,
    /// Percentage of read-only transactions in cluster runs (50, 80, 95, ...).
    #[arg(long, default_value_t = 50)]
    read_pct: u32,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl BenchArgs {
    fn config(&self) -> anyhow::Result<BenchConfig> {
        let duration = duration_arg(self.duration)?;
        Ok(BenchConfig {
            workload: match self.workload {
                WorkloadArg::Micro => Workload::Micro,
                WorkloadArg::YcsbA => Workload::YcsbA,
                WorkloadArg::YcsbB => Workload::YcsbB,
                WorkloadArg::YcsbC => Workload::YcsbC,
                WorkloadArg::Tpcc => anyhow::bail!("TPC-C runs through its own driver"),
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
        Command::Bench(BenchCmd {
            target: Some(BenchTarget::Raft(args)),
            ..
        }) => bench_raft(&args),
        Command::Bench(BenchCmd { kv, .. }) if matches!(kv.workload, WorkloadArg::Tpcc) => {
            bench_tpcc(&kv)
        }
        Command::Bench(BenchCmd { kv, .. }) if kv.shards > 1 || kv.replicas.is_some() => {
            bench_cluster(&kv)
        }
        Command::Bench(BenchCmd { kv, .. }) => bench(&kv),
        Command::Demo(args) => demo(&args),
        Command::Check(args) => check::run(&args),
        Command::Log(cmd) => log::run(&cmd),
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

/// Checks a cluster run's parameters, naming the bad flag.
fn check_cluster(cfg: &ClusterBenchConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=16).contains(&cfg.shards),
        "--shards must be between 1 and 16"
    );
    anyhow::ensure!(
        [1, 3, 5].contains(&cfg.replicas),
        "--replicas must be 1, 3 or 5"
    );
    anyhow::ensure!(
        (1..=64).contains(&cfg.threads),
        "--threads must be between 1 and 64"
    );
    anyhow::ensure!(cfg.read_pct <= 100, "--read-pct must be at most 100");
    anyhow::ensure!(cfg.keys >= 8, "--keys must be at least 8");
    Ok(())
}

fn bench_cluster(args: &BenchArgs) -> anyhow::Result<()> {
    let base = args.config()?;
    anyhow::ensure!(
        base.workload == Workload::Micro,
        "cluster runs use the micro workload with --read-pct"
    );
    let mut cfg = ClusterBenchConfig {
        shards: args.shards,
        replicas: args.replicas.unwrap_or(3),
        threads: args.threads as u32,
        duration: base.duration,
        keys: base.keys,
        read_pct: args.read_pct,
        dist: base.dist,
        value_size: base.value_size,
        durability: Durability::Memory,
        seed: base.seed,
    };
    check_cluster(&cfg)?;
    let on = mako_bench::run_cluster(&cfg, |_| {})?;
    cfg.replicas = 1;
    let off = mako_bench::run_cluster(&cfg, |_| {})?;
    if args.json {
        println!("{}", serde_json::to_string(&on)?);
        println!("{}", serde_json::to_string(&off)?);
        return Ok(());
    }
    println!(
        "cluster bench: shards={} threads/shard={} keys={} read-only={}% dist={}",
        cfg.shards,
        cfg.threads,
        cfg.keys,
        cfg.read_pct,
        cfg.dist.name()
    );
    for r in [&on, &off] {
        print_cluster(r);
    }
    println!(
        "released/s with {} replicas = {:.1}% of the 1-replica run",
        on.replicas,
        100.0 * on.released_per_sec / off.released_per_sec.max(1e-9)
    );
    Ok(())
}

fn print_cluster(r: &ClusterReport) {
    println!(
        "replicas={}  speculative {:>9}/s  released {:>9}/s  aborts {:.2}%  distributed {:.0}%  commit p50 {:.0} us  release p50/p99/p99.9 {:.0}/{:.0}/{:.0} us  replay lag p99 {:.0} us  {}",
        r.replicas,
        group(r.spec_per_sec as u64),
        group(r.released_per_sec as u64),
        r.abort_pct,
        r.distributed_pct,
        r.commit_p50_us,
        r.release_p50_us,
        r.release_p99_us,
        r.release_p999_us,
        r.replay_lag_p99_us,
        if r.consistent {
            "replicas consistent"
        } else {
            "REPLICAS DIFFER"
        }
    );
}

fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    let duration = duration_arg(args.duration)?;
    let cfg = ClusterBenchConfig {
        shards: 2,
        replicas: 3,
        threads: args.threads,
        duration,
        keys: args.keys,
        read_pct: 50,
        dist: Dist::Uniform,
        value_size: 64,
        durability: Durability::Memory,
        seed: 42,
    };
    check_cluster(&cfg)?;
    let live = std::io::stdout().is_terminal();
    println!(
        "mako demo: 2 shards x 3 Raft replicas in one process, {} keys, {} worker(s) per shard leader, {:.0} s of the micro workload",
        group(cfg.keys),
        cfg.threads,
        duration.as_secs_f64()
    );
    println!("loading and electing leaders...");
    let r = mako_bench::run_cluster(&cfg, |p| {
        let width = 30;
        let done = ((p.elapsed.as_secs_f64() / p.total.as_secs_f64()) * width as f64) as usize;
        let line = format!(
            "[{}{}] {:>4.1}s  speculative {}  released {}",
            "#".repeat(done.min(width)),
            " ".repeat(width - done.min(width)),
            p.elapsed.as_secs_f64(),
            group(p.spec),
            group(p.released)
        );
        if live {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().flush();
        } else {
            println!("{line}");
        }
    })?;
    if live {
        println!();
    }
    println!("load:                {:.2} s", r.load_secs);
    println!(
        "speculative commits: {} txn/s",
        group(r.spec_per_sec as u64)
    );
    println!(
        "released:            {} txn/s",
        group(r.released_per_sec as u64)
    );
    println!(
        "release latency:     p50 {:.0} us  p99 {:.0} us",
        r.release_p50_us, r.release_p99_us
    );
    println!("follower replay lag: p99 {:.0} us", r.replay_lag_p99_us);
    println!(
        "aborts:              {:.2}%  (distributed: {:.0}% of commits)",
        r.abort_pct, r.distributed_pct
    );
    if r.consistent {
        println!("replicas consistent");
        Ok(())
    } else {
        println!(
            "replicas DIFFER: {}",
            r.difference.as_deref().unwrap_or("unknown difference")
        );
        std::process::exit(1);
    }
}

fn bench_tpcc(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=1000).contains(&args.warehouses),
        "--warehouses must be between 1 and 1000"
    );
    anyhow::ensure!(
        (1..=256).contains(&args.threads),
        "--threads must be between 1 and 256"
    );
    let duration = duration_arg(args.duration)?;
    let cfg = mako_tpcc::TpccConfig {
        warehouses: args.warehouses,
        threads: args.threads,
        duration,
        seed: args.seed,
        ..mako_tpcc::TpccConfig::default()
    };
    let live = std::io::stdout().is_terminal() && !args.json;
    let show = |p: mako_tpcc::TpccProgress| {
        if !live {
            return;
        }
        match p {
            mako_tpcc::TpccProgress::Loading(l) => print!(
                "\r\x1b[2Kloading {} / ~{} rows ({:.1} s)",
                group(l.rows),
                group(l.expected_rows),
                l.elapsed.as_secs_f64()
            ),
            mako_tpcc::TpccProgress::Running {
                elapsed,
                committed,
                recent_tps,
                ..
            } => print!(
                "\r\x1b[2K[{:>5.1}s] {:>10} txn/s  committed {}",
                elapsed.as_secs_f64(),
                group(recent_tps as u64),
                group(committed)
            ),
        }
        let _ = std::io::stdout().flush();
    };
    if args.shards > 1 || args.replicas.is_some() {
        // The replicated in-process cluster: S shards x R Raft replicas, speculative 2PC.
        let replicas = args.replicas.unwrap_or(3);
        anyhow::ensure!(
            (1..=7).contains(&replicas),
            "--replicas must be between 1 and 7"
        );
        anyhow::ensure!(
            args.shards >= 1 && args.shards <= args.warehouses,
            "--shards must be between 1 and --warehouses ({})",
            args.warehouses
        );
        let cfg = mako_tpcc::TpccConfig {
            shards: args.shards as usize,
            ..cfg
        };
        let r = mako_tpcc::run_cluster(&cfg, replicas, show)?;
        if live {
            print!("\r\x1b[2K");
        }
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "cluster: {} shard(s) x {} replica(s); latencies below are begin to speculative commit",
                r.shards, r.replicas
            );
            print_tpcc(&r.tpcc);
            println!(
                "distributed {} ({:.1}% of commits); release latency p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us; \
                 follower replay lag p99 {:.0} us; unreleased at end {} (never released {})",
                group(r.distributed),
                r.distributed_pct,
                r.release_p50_us,
                r.release_p99_us,
                r.release_p999_us,
                r.replay_lag_p99_us,
                r.unreleased_at_end,
                r.never_released
            );
            println!(
                "{:<13}{:>14}{:>14}{:>14}",
                "release", "p50 us", "p99 us", "p99.9 us"
            );
            for t in &r.release_by_type {
                println!(
                    "{:<13}{:>14.0}{:>14.0}{:>14.0}",
                    t.kind.name(),
                    t.p50_us,
                    t.p99_us,
                    t.p999_us
                );
            }
            match &r.difference {
                None => println!("replicas identical to their leaders"),
                Some(d) => println!("replicas DIFFER: {d}"),
            }
        }
        if args.check {
            let mut bad = !r.replicas_identical;
            for c in &r.checks {
                match (&c.report, c.violations.first()) {
                    (_, Some(v)) => {
                        bad = true;
                        println!(
                            "shard {} replica {}: consistency VIOLATED ({} violations); first: {v}",
                            c.shard,
                            c.replica,
                            c.violations.len()
                        );
                    }
                    (Some(rep), None) => println!(
                        "shard {} replica {}: consistency conditions 1-4 hold ({} warehouses, {} orders)",
                        c.shard, c.replica, rep.warehouses, rep.orders
                    ),
                    (None, None) => {}
                }
            }
            if bad {
                std::process::exit(1);
            }
        }
        return Ok(());
    }
    let started = std::time::Instant::now();
    let db = mako_tpcc::Db::load(&cfg, |l| show(mako_tpcc::TpccProgress::Loading(l)))?;
    let load_secs = started.elapsed().as_secs_f64();
    let mut report = mako_tpcc::run_on(&db, &cfg, show)?;
    report.load_secs = load_secs;
    if live {
        print!("\r\x1b[2K");
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_tpcc(&report);
    }
    if args.check {
        let store = db
            .shard(0)
            .context("TPC-C database has no shard 0")?
            .store();
        match mako_tpcc::check_consistency(store, 1..=cfg.warehouses) {
            Ok(c) => println!("consistency conditions 1-4 hold on the leader: {c:?}"),
            Err(v) => {
                println!(
                    "consistency VIOLATED ({} violations); first: {:?}",
                    v.len(),
                    v.first()
                );
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

fn print_tpcc(r: &mako_tpcc::TpccReport) {
    println!(
        "TPC-C: {} warehouse(s), {} worker(s), load {:.1} s, run {:.1} s",
        r.warehouses, r.threads, r.load_secs, r.secs
    );
    println!(
        "committed {} = {} txn/s, tpmC {} (NewOrder/min), aborted attempts {}",
        group(r.committed),
        group(r.txn_per_sec as u64),
        group(r.tpmc as u64),
        group(r.aborted)
    );
    println!(
        "{:<13}{:>10}{:>9}{:>9}{:>10}{:>10}{:>10}{:>10}",
        "type", "committed", "aborts", "abort%", "rollbacks", "p50 us", "p99 us", "p99.9 us"
    );
    for s in &r.by_type {
        println!(
            "{:<13}{:>10}{:>9}{:>9.3}{:>10}{:>10.1}{:>10.1}{:>10.1}",
            s.kind.name(),
            s.committed,
            s.aborts,
            s.abort_pct,
            s.user_rollbacks,
            s.p50_us,
            s.p99_us,
            s.p999_us
        );
    }
}

fn bench_raft(args: &RaftArgs) -> anyhow::Result<()> {
    let duration = duration_arg(args.duration)?;
    anyhow::ensure!(args.window > 0, "--window must be positive");
    anyhow::ensure!(
        args.entry_size
            .iter()
            .all(|&s| (12..=(16 << 20)).contains(&s)),
        "--entry-size must be between 12 bytes and 16 MiB"
    );
    anyhow::ensure!(
        args.groups.iter().all(|&g| (1..=64).contains(&g)),
        "--groups must be between 1 and 64"
    );
    if !args.json {
        println!(
            "{:<4} {:>7} {:>6} {:>8} {:>10} {:>11} {:>8} {:>9} {:>9} {:>9} {:>8} {:>9}",
            "net",
            "entry",
            "groups",
            "durable",
            "target/s",
            "entries/s",
            "MB/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "syncs/s",
            "gap/dup/ro"
        );
        println!(
            "(gaps count proposals lost to a leader change; a row with elections is flagged below it)"
        );
    }
    for &net in &args.net {
        for &durability in &args.durability {
            for &groups in &args.groups {
                for &entry_bytes in &args.entry_size {
                    let mut cfg = RaftBenchConfig {
                        net: match net {
                            NetArg::Mem => NetKind::Mem,
                            NetArg::Tcp => NetKind::Tcp,
                        },
                        entry_bytes,
                        groups,
                        durability: match durability {
                            DurabilityArg::Fsync => Durability::Fsync,
                            DurabilityArg::Buffered => Durability::Buffered,
                            DurabilityArg::Memory => Durability::Memory,
                        },
                        duration,
                        rate: None,
                        window: args.window,
                    };
                    let full = mako_bench::run_raft(&cfg)?;
                    print_raft(&full, args.json)?;
                    if !args.no_paced && full.entries_per_sec > 0.0 {
                        cfg.rate = Some(full.entries_per_sec / 2.0);
                        print_raft(&mako_bench::run_raft(&cfg)?, args.json)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn print_raft(r: &RaftBenchReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    println!(
        "{:<4} {:>7} {:>6} {:>8} {:>10} {:>11} {:>8.1} {:>9.0} {:>9.0} {:>9.0} {:>8.0} {:>9}",
        match r.net {
            NetKind::Mem => "mem",
            NetKind::Tcp => "tcp",
        },
        r.entry_bytes,
        r.groups,
        r.durability,
        if r.target_rate > 0.0 {
            group(r.target_rate as u64)
        } else {
            "max".to_owned()
        },
        group(r.entries_per_sec as u64),
        r.mb_per_sec,
        r.p50_us,
        r.p99_us,
        r.p999_us,
        r.syncs_per_sec,
        format!("{}/{}/{}", r.gaps, r.duplicates, r.reordered)
    );
    if r.leader_changes > 0 {
        println!("     ^ elections during the run: {}", r.leader_changes);
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

/// The `--duration` flag as a positive `Duration`.
fn duration_arg(secs: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--duration must be a positive number of seconds, got {secs}"))
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
