//! `mako`: the mako-rs command line.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

mod alloc;
mod check;
mod client;
mod cluster;
mod group_bench;
mod log;
mod server;
mod status;
mod tpcc_plot;
use mako_bench::{
    AbortReason, BenchConfig, BenchReport, ClusterBenchConfig, ClusterReport, Dist, FailoverReport,
    Progress, Protocol, ScalingReport, ShardMix, Workload,
};
use mako_logstore::Durability;

/// mako-rs: a sharded, replicated, serializable transactional key-value store.
#[derive(Parser, Debug)]
#[command(name = "mako", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter: a level (`error`, `warn`, `info`, `debug`, `trace`) or a `RUST_LOG`-style
    /// directive list such as `mako_server=info,warn`; `RUST_LOG`, when set, wins. Logs go to
    /// stderr. Default: `warn`.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// Write log lines as JSON objects (one per line) instead of text.
    #[arg(long, global = true)]
    log_json: bool,
}

/// Installs the process's log subscriber: every `tracing` event the libraries emit at or above
/// the filter reaches stderr (without one they are all dropped).
fn init_logging(level: Option<&str>, json: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(&env)
            .map_err(|e| anyhow::anyhow!("RUST_LOG={env:?} is not a log filter: {e}"))?,
        _ => {
            let level = level.unwrap_or("warn");
            EnvFilter::try_new(level)
                .map_err(|e| anyhow::anyhow!("--log-level {level:?} is not a log filter: {e}"))?
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    installed.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a workload in-process, or with -f against a running deployment, and print
    /// throughput, aborts and latency.
    Bench(Box<BenchCmd>),
    /// The embedded demo: 2 shards x 3 replicas (Raft, or --replication paxos) in one process, 10 s of the micro workload.
    Demo(DemoArgs),
    /// Run a history-checker workload on an in-process cluster, or with -f on a deployment, and report anomalies (exit 1 on any).
    Check(check::CheckArgs),
    /// Check or repair a node's durable Raft log.
    #[command(subcommand)]
    Log(log::LogCmd),
    /// Run one site (replica) of a deployment: `mako server -f config/mako_raft.yml -f config/1c1s3r.yml --site s0r0`.
    Server(server::ServerArgs),
    /// Run every site of a config as child processes on this machine.
    Cluster(cluster::ClusterArgs),
    /// Read and write a running deployment.
    Client(client::ClientArgs),
    /// Print every site's status (leader, term, epoch, indexes, watermarks, health).
    Status(status::StatusArgs),
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
    /// Replication protocol: raft or paxos.
    #[arg(long, default_value = "raft", value_name = "PROTOCOL")]
    replication: Protocol,
    /// Unreleased commits a worker keeps in flight before it waits for the oldest (0: no bound).
    #[arg(long, default_value_t = mako_bench::DEMO_WINDOW, value_name = "N")]
    window: usize,
    /// Draw the run as an SVG picture: released/s over time, release latency over time, and
    /// the commit and release latency distributions.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "mako-demo.svg")]
    plot: Option<std::path::PathBuf>,
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
    /// Replication alone, each protocol in turn (--replication raft,paxos): 3 replicas per
    /// group in one process, entries/s and commit latency, against the ceiling of the bare
    /// log store and transport measured in the same run.
    Group(group_bench::GroupArgs),
    /// `bench group` with Raft only.
    Raft(group_bench::GroupArgs),
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
    /// Config files of a running deployment, merged in order: drive it over the network from
    /// client threads (workloads micro, ycsb-a and tpcc; each transaction one request run as
    /// a server-side procedure; tpcc needs the TPC-C tables: add `-f config/tpcc.yml` to the
    /// servers' and the bench's files).
    #[arg(short = 'f', long = "file", value_name = "CONFIG")]
    files: Vec<std::path::PathBuf>,
    /// With -f: client threads, each with its own connections (default 8).
    #[arg(long)]
    clients: Option<usize>,
    /// Transaction mix.
    #[arg(long, value_enum, default_value = "micro")]
    workload: WorkloadArg,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Measured phase in seconds (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Keys loaded before the measured phase (default 1,000,000; 100,000 with -f).
    #[arg(long)]
    keys: Option<u64>,
    /// Key distribution.
    #[arg(long, value_enum, default_value = "uniform")]
    dist: DistArg,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Seed of the workers' random generators.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Shards; with more than 1 (or with --replicas) the run uses an in-process cluster. A
    /// comma-separated list (e.g. 2,4,8; micro workload) runs one cluster per count in turn and
    /// prints, per count, released txn/s, process CPU-seconds and released txn per CPU-second,
    /// with the cross-shard share held fixed (--cross-shard, 10% unless given), then the ratio
    /// of txn per CPU-second at the most shards to that at the fewest (target >= 0.8).
    #[arg(
        long = "shards",
        value_delimiter = ',',
        default_value = "1",
        value_name = "N[,N...]",
        value_parser = shard_count
    )]
    shard_counts: Vec<u32>,
    /// The shard count of a single run (the first of `--shards`), set by `resolve_shards`.
    #[arg(skip)]
    shards: u32,
    /// Cluster runs (micro workload): this percentage of transactions touch exactly two shards
    /// (2 keys on the worker's home shard, 2 on one other chosen uniformly), the rest only the
    /// home shard. Without it a single --shards N run draws 4 keys over all shards (cross-shard
    /// share 1-(1/N)^3, growing with N); a list of shard counts defaults to 10.
    #[arg(long, value_name = "PCT")]
    cross_shard: Option<f64>,
    /// Replicas per shard; the cluster run is repeated with 1 replica (replication off) for comparison.
    #[arg(long)]
    replicas: Option<u32>,
    /// Cluster runs: replication protocols, run in turn and printed side by side
    /// (comma-separated: raft, paxos; default raft). Implies a cluster run (1 shard x 3
    /// replicas unless --shards / --replicas say otherwise).
    #[arg(long, value_delimiter = ',', value_name = "PROTOCOLS")]
    replication: Vec<Protocol>,
    /// Cluster runs: runs per protocol, interleaved across protocols; the run with the
    /// median released/s is reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Cluster runs: skip the 1-replica comparison run.
    #[arg(long)]
    no_baseline: bool,
    /// TPC-C warehouses (with --workload tpcc).
    #[arg(long, default_value_t = 1)]
    warehouses: u32,
    /// TPC-C: check consistency conditions 1-4 after the run; a violation exits non-zero.
    #[arg(long)]
    check: bool,
    /// With -f (micro, ycsb-a): run each transaction interactively (begin, one request per
    /// operation, commit) instead of as one request, to measure interactive transactions.
    #[arg(long)]
    interactive: bool,
    /// TPC-C: a reduced population (10,000 items, 300 customers and orders per district)
    /// that loads quickly; the default is the spec's.
    #[arg(long)]
    small: bool,
    /// Percentage of read-only transactions in cluster runs (50, 80, 95, ...).
    #[arg(long, default_value_t = 50)]
    read_pct: u32,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Cluster runs: crash shard 0's leader this many seconds into the measured phase
    /// (needs 3 or 5 replicas; skips the 1-replica comparison run) and print the failover.
    #[arg(long, value_name = "SECS")]
    kill_leader_at: Option<f64>,
    /// Cluster runs: election timeout bounds in ms, `MIN,MAX`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "400,700",
        value_name = "MIN,MAX"
    )]
    election_ms: Vec<u64>,
    /// Cluster runs: how long a coordinator waits for a participant's reply, ms.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    request_timeout_ms: u64,
    /// Cluster runs: a commit neither released nor discarded this long counts as unknown, ms.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    unknown_after_ms: u64,
    /// Cluster runs: unreleased commits a worker keeps in flight before it waits for the
    /// oldest, as a client with a bounded window does (0: no bound; the default for the micro
    /// workload, for the highest throughput; 64 for TPC-C).
    #[arg(long, value_name = "N")]
    window: Option<usize>,
    /// Cluster runs: log durability.
    #[arg(long, value_enum, default_value = "memory")]
    durability: DurabilityArg,
    /// Cluster runs: print the whole per-100 ms time series (with --kill-leader-at it is
    /// printed from 1 s before the crash to 3 s after by default).
    #[arg(long)]
    series: bool,
    /// Cluster runs (micro workload, in-process or -f) and TPC-C runs (single node, cluster or
    /// -f): draw the run as one SVG picture: throughput per 100 ms, release latency over time,
    /// and the commit and release latency distributions (log scale), with a leader crash marked.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "mako-bench-series.svg")]
    plot: Option<std::path::PathBuf>,
}

/// Parses one shard count of `--shards`.
fn shard_count(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "a shard count is a whole number of at least 1, got `{s}`"
        )),
    }
}

/// Cross-shard percentage of a list of shard counts when `--cross-shard` is not given.
const SCALING_CROSS_PCT: f64 = 10.0;

impl BenchArgs {
    /// Sets `shards` from `--shards` and refuses a shard list or `--cross-shard` where they do
    /// not apply.
    fn resolve_shards(&mut self) -> anyhow::Result<()> {
        self.shards = self.shard_counts.first().copied().unwrap_or(1);
        let micro = matches!(self.workload, WorkloadArg::Micro);
        if self.shard_counts.len() > 1 {
            anyhow::ensure!(
                micro && self.files.is_empty(),
                "a list of shard counts (--shards 2,4,8) runs the micro workload on in-process clusters (not -f, not TPC-C or YCSB)"
            );
            for (i, n) in self.shard_counts.iter().enumerate() {
                anyhow::ensure!(
                    !self.shard_counts[..i].contains(n),
                    "--shards lists {n} twice"
                );
            }
        }
        if let Some(p) = self.cross_shard {
            anyhow::ensure!(
                p.is_finite() && (0.0..=100.0).contains(&p),
                "--cross-shard is a percentage between 0 and 100, got {p}"
            );
            anyhow::ensure!(
                micro
                    && self.files.is_empty()
                    && (self.shards > 1
                        || self.shard_counts.len() > 1
                        || self.replicas.is_some()
                        || !self.replication.is_empty()),
                "--cross-shard applies to in-process cluster runs of the micro workload (--shards > 1)"
            );
            anyhow::ensure!(
                p == 0.0 || self.shard_counts.iter().all(|&n| n >= 2),
                "--cross-shard above 0 needs at least 2 shards in every run (--shards {})",
                self.shard_counts
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
        Ok(())
    }

    /// Refuses the flags only the micro workload's cluster run honours.
    fn micro_cluster_only(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.kill_leader_at.is_none() && self.plot.is_none() && !self.series,
            "--kill-leader-at, --series and --plot need a cluster run of the micro workload (--shards > 1 or --replicas)"
        );
        Ok(())
    }

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
            keys: self.keys.unwrap_or(1_000_000),
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
    let mut cli = Cli::parse();
    init_logging(cli.log_level.as_deref(), cli.log_json)?;
    alloc::tune();
    if let Command::Bench(cmd) = &mut cli.command {
        cmd.kv.resolve_shards()?;
    }
    match cli.command {
        Command::Bench(cmd) => match *cmd {
            BenchCmd {
                target: Some(BenchTarget::Group(args)),
                ..
            } => group_bench::run(&args, false),
            BenchCmd {
                target: Some(BenchTarget::Raft(args)),
                ..
            } => group_bench::run(&args, true),
            BenchCmd { kv, .. } if !kv.files.is_empty() && !kv.replication.is_empty() => {
                anyhow::bail!(
                    "--replication applies to in-process runs; a deployment's config chooses its protocol (replication: raft | paxos)"
                )
            }
            BenchCmd { kv, .. } if !kv.files.is_empty() => bench_remote(&kv),
            BenchCmd { kv, .. } if kv.clients.is_some() => {
                anyhow::bail!("--clients applies to -f runs; in-process runs take --threads")
            }
            BenchCmd { kv, .. }
                if matches!(kv.workload, WorkloadArg::Tpcc)
                    && kv.replication.iter().any(|&p| p != Protocol::Raft) =>
            {
                anyhow::bail!(
                    "TPC-C cluster runs use Raft; --replication applies to the micro workload"
                )
            }
            BenchCmd { kv, .. } if matches!(kv.workload, WorkloadArg::Tpcc) => bench_tpcc(&kv),
            BenchCmd { kv, .. } if kv.shard_counts.len() > 1 => bench_scaling(&kv),
            BenchCmd { kv, .. }
                if kv.shards > 1 || kv.replicas.is_some() || !kv.replication.is_empty() =>
            {
                bench_cluster(&kv)
            }
            BenchCmd { kv, .. } => bench(&kv),
        },
        Command::Demo(args) => demo(&args),
        Command::Check(args) => check::run(&args, cli.log_level.as_deref()),
        Command::Log(cmd) => log::run(&cmd),
        Command::Server(args) => server::run(&args),
        Command::Cluster(args) => cluster::run(&args, cli.log_level.as_deref()),
        Command::Client(args) => client::run(&args),
        Command::Status(args) => status::run(&args),
    }
}

/// Prints a progress or side line: to stdout in text mode, to stderr with `--json` (whose
/// stdout carries only the report).
pub(crate) fn progress_line(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// Writes a rendered picture to `path`.
pub(crate) fn write_plot(
    path: &std::path::Path,
    svg: Result<String, mako_bench::plot::PlotError>,
) -> anyhow::Result<()> {
    let svg = svg.context("drawing the plot")?;
    std::fs::write(path, svg).with_context(|| format!("writing the plot to {}", path.display()))
}

/// The TPC-C population of `--small` (10,000 items, 300 customers and orders per district) or the spec's.
fn tpcc_scale(args: &BenchArgs) -> mako_tpcc::Scale {
    if args.small {
        mako_tpcc::Scale {
            items: 10_000,
            customers_per_district: 300,
            orders_per_district: 300,
        }
    } else {
        mako_tpcc::Scale::SPEC
    }
}

/// `mako bench -f CONFIG --workload tpcc`: TPC-C against a running deployment whose config
/// includes the TPC-C tables (`-f config/tpcc.yml`), each transaction one server-side
/// procedure call.
fn bench_remote_tpcc(args: &BenchArgs) -> anyhow::Result<()> {
    let cfg = crate::server::load(&args.files)?;
    let opts = mako_tpcc::RemoteOptions {
        warehouses: args.warehouses,
        clients: args.clients.unwrap_or(args.warehouses as usize),
        duration: duration_arg(args.duration)?,
        scale: tpcc_scale(args),
        load: true,
        load_threads: 4,
        seed: args.seed,
        check: args.check,
    };
    let conditions = format!(
        "mako bench -f {}: workload=tpcc durability={} shards={} replicas={} warehouses={} clients={} scale={} duration={:.1}s",
        cfg.sources.join(" -f "),
        cfg.durability.as_str(),
        cfg.shards(),
        cfg.replicas(),
        opts.warehouses,
        opts.clients,
        if args.small { "small" } else { "spec" },
        opts.duration.as_secs_f64()
    );
    if args.json {
        eprintln!("{conditions}");
    } else {
        println!("{conditions}");
    }
    let hidden = !std::io::stderr().is_terminal();
    let loading = if hidden {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("loading {bar:30} {pos}/{len} rows ({elapsed})")
    {
        loading.set_style(style);
    }
    let report = mako_tpcc::run_remote(&cfg, &opts, |p| match p {
        mako_tpcc::TpccProgress::Loading(l) => {
            loading.set_length(l.expected_rows);
            loading.set_position(l.rows);
        }
        mako_tpcc::TpccProgress::Running { .. } => loading.finish_and_clear(),
    })?;
    loading.finish_and_clear();
    if let Some(path) = &args.plot {
        write_tpcc_plot(
            path,
            &tpcc_plot::remote_figure(&report, &cfg.sources),
            args.json,
        )?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    if args.check && !report.consistent() {
        anyhow::bail!("TPC-C consistency conditions violated");
    }
    Ok(())
}

/// `mako bench -f CONFIG`: the workload against a running deployment, from client threads.
fn bench_remote(args: &BenchArgs) -> anyhow::Result<()> {
    use mako_bench::remote::{BenchProgress, RemoteBenchConfig, RemoteWorkload};
    let workload = match args.workload {
        WorkloadArg::Micro => RemoteWorkload::Micro,
        WorkloadArg::YcsbA => RemoteWorkload::YcsbA,
        WorkloadArg::Tpcc => return bench_remote_tpcc(args),
        WorkloadArg::YcsbB | WorkloadArg::YcsbC => {
            anyhow::bail!("-f runs take --workload micro or ycsb-a")
        }
    };
    anyhow::ensure!(
        args.kill_leader_at.is_none()
            && !args.series
            && args.replicas.is_none()
            && args.shards == 1,
        "--kill-leader-at, --series, --shards and --replicas are for in-process runs; with -f the config gives the deployment (use `mako check -f ... --kill-leaders N` for leader kills)"
    );
    let cfg = crate::server::load(&args.files)?;
    let bc = RemoteBenchConfig {
        workload,
        clients: args.clients.unwrap_or(8),
        duration: duration_arg(args.duration)?,
        keys: args.keys.unwrap_or(100_000),
        read_pct: args.read_pct,
        dist: match args.dist {
            DistArg::Uniform => Dist::Uniform,
            DistArg::Zipf => Dist::Zipf,
        },
        value_size: args.value_size,
        seed: args.seed,
        interactive: args.interactive,
    };
    let conditions = format!(
        "mako bench -f {}: durability={} shards={} replicas={} workload={} transactions={} read-only={}% clients={} keys={} dist={} duration={:.1}s",
        cfg.sources.join(" -f "),
        cfg.durability.as_str(),
        cfg.shards(),
        cfg.replicas(),
        workload.name(),
        if bc.interactive {
            "interactive"
        } else {
            "one-request"
        },
        bc.read_pct(),
        bc.clients,
        group(bc.keys),
        bc.dist.name(),
        bc.duration.as_secs_f64()
    );
    if args.json {
        eprintln!("{conditions}");
    } else {
        println!("{conditions}");
    }
    // Progress bars on a terminal (stderr); nothing when it is not one.
    let hidden = !std::io::stderr().is_terminal();
    let bar = |len: u64, template: &str| {
        let b = if hidden {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(len)
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            b.set_style(style);
        }
        b
    };
    let loading = bar(bc.keys, "loading {bar:30} {pos}/{len} keys ({elapsed})");
    let running = bar(bc.duration.as_millis() as u64, "running {bar:30} {msg}");
    let report = mako_bench::remote::run_bench(&cfg, &bc, |p| match p {
        BenchProgress::Loading { done, .. } => loading.set_position(done),
        BenchProgress::Running {
            elapsed,
            released,
            aborted,
            unknown,
            ..
        } => {
            loading.finish_and_clear();
            running.set_position(elapsed.as_millis() as u64);
            running.set_message(format!(
                "{:.1}s released {} aborted {} unknown {}",
                elapsed.as_secs_f64(),
                group(released),
                group(aborted),
                group(unknown)
            ));
        }
    })?;
    loading.finish_and_clear();
    running.finish_and_clear();
    if let Some(path) = &args.plot {
        write_plot(path, mako_bench::remote::plot_svg(&report))?;
        let line = format!(
            "plot (released/s per {} ms, release latency per bucket and its distribution): {}",
            report.bucket_ms,
            path.display()
        );
        progress_line(args.json, &line);
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let r = &report;
    let counts = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, n)| format!("{k} {}", group(*n)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("load:      {} keys in {:.2} s", group(r.keys), r.load_secs);
    println!(
        "released:  {} txn in {:.2} s = {} txn/s ({} durability); cross-shard {:.1}% of released",
        group(r.released),
        r.secs,
        group(r.released_per_sec as u64),
        r.durability,
        r.cross_shard_pct
    );
    println!(
        "aborts:    {}{}; unknown {}{}",
        group(r.aborted),
        if r.aborts.is_empty() {
            String::new()
        } else {
            format!(" ({})", counts(&r.aborts))
        },
        group(r.unknown),
        if r.errors.is_empty() {
            String::new()
        } else {
            format!("; failed requests: {}", counts(&r.errors))
        }
    );
    println!(
        "release latency (client-observed, {} durability): p50 {:.0} us  p90 {:.0} us  p99 {:.0} us  p99.9 {:.0} us",
        r.durability, r.release_p50_us, r.release_p90_us, r.release_p99_us, r.release_p999_us
    );
    Ok(())
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    args.micro_cluster_only()?;
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
    // The transaction mix must be drawable (cross-shard share, shards and keys agree).
    mako_bench::ShapeGen::new(
        mako_bench::KeyDist::Uniform { n: cfg.keys },
        cfg.keys,
        cfg.shards,
        cfg.read_pct,
        cfg.mix,
    )
    .map_err(|e| anyhow::anyhow!("{e} (see --shards, --keys and --cross-shard)"))?;
    Ok(())
}

/// The cluster run `args` ask for, on `shards` shards, checked.
fn cluster_config(args: &BenchArgs, shards: u32) -> anyhow::Result<ClusterBenchConfig> {
    let base = args.config()?;
    anyhow::ensure!(
        base.workload == Workload::Micro,
        "cluster runs use the micro workload with --read-pct"
    );
    let election_ms = match args.election_ms[..] {
        [lo, hi] if lo > 0 && lo < hi => (lo, hi),
        _ => anyhow::bail!("--election-ms takes MIN,MAX with 0 < MIN < MAX"),
    };
    anyhow::ensure!(
        args.request_timeout_ms > 0,
        "--request-timeout-ms must be positive"
    );
    anyhow::ensure!(
        args.unknown_after_ms > 0,
        "--unknown-after-ms must be positive"
    );
    let kill_leader_at = match args.kill_leader_at {
        None => None,
        Some(k) => {
            let k = Duration::try_from_secs_f64(k)
                .ok()
                .filter(|k| *k < base.duration)
                .with_context(|| {
                    format!("--kill-leader-at must be between 0 and --duration seconds, got {k}")
                })?;
            Some(k)
        }
    };
    let mix = match args.cross_shard {
        Some(p) => ShardMix::CrossShard(p),
        None if args.shard_counts.len() > 1 => ShardMix::CrossShard(SCALING_CROSS_PCT),
        None => ShardMix::Spread,
    };
    let cfg = ClusterBenchConfig {
        shards,
        replicas: args.replicas.unwrap_or(3),
        threads: args.threads as u32,
        duration: base.duration,
        keys: base.keys,
        read_pct: args.read_pct,
        mix,
        dist: base.dist,
        value_size: base.value_size,
        durability: durability(args.durability),
        protocol: Protocol::Raft,
        seed: base.seed,
        kill_leader_at,
        election_ms,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        unknown_after: Duration::from_millis(args.unknown_after_ms),
        window: args.window.unwrap_or(0),
    };
    check_cluster(&cfg)?;
    anyhow::ensure!(
        kill_leader_at.is_none() || cfg.replicas >= 3,
        "--kill-leader-at needs --replicas 3 or 5 (a shard of one replica cannot fail over)"
    );
    anyhow::ensure!(
        (1..=15).contains(&args.repeat),
        "--repeat must be between 1 and 15"
    );
    Ok(cfg)
}

fn bench_cluster(args: &BenchArgs) -> anyhow::Result<()> {
    let mut cfg = cluster_config(args, args.shards)?;
    let kill_leader_at = cfg.kill_leader_at;
    let protocols = {
        let mut v: Vec<Protocol> = Vec::new();
        for &p in &args.replication {
            if !v.contains(&p) {
                v.push(p);
            }
        }
        if v.is_empty() {
            v.push(Protocol::Raft);
        }
        v
    };
    anyhow::ensure!(
        args.plot.is_none() || protocols.len() == 1,
        "--plot draws one run: give one protocol with --replication"
    );
    // Progress goes to stdout in text mode, to stderr with --json.
    let json = args.json;
    let say = move |line: &str| progress_line(json, line);
    // Every protocol in turn, repeats interleaved so drift hits all alike; a protocol that
    // fails to start is reported and skipped.
    let mut runs: Vec<(Protocol, Vec<ClusterReport>, Option<String>)> =
        protocols.iter().map(|&p| (p, Vec::new(), None)).collect();
    for rep in 0..args.repeat {
        for (p, reports, error) in runs.iter_mut() {
            if error.is_some() {
                continue;
            }
            cfg.protocol = *p;
            if rep == 0 {
                say(&conditions(&cfg));
            }
            match run_cluster_logged(&cfg, &say) {
                Ok(r) => reports.push(r),
                Err(e) => {
                    say(&format!("{p}: FAILED: {e}"));
                    *error = Some(e.to_string());
                }
            }
        }
    }
    let results: Vec<(Protocol, Result<ClusterReport, String>)> = runs
        .into_iter()
        .map(|(p, reports, error)| {
            let r = match error {
                Some(e) => Err(e),
                None => group_bench::median_by(&reports, |r: &ClusterReport| r.released_per_sec)
                    .ok_or_else(|| "no run".to_owned()),
            };
            (p, r)
        })
        .collect();
    // A crash run is about the failover: no 1-replica comparison.
    let off = if kill_leader_at.is_none() && !args.no_baseline {
        cfg.replicas = 1;
        cfg.protocol = protocols[0];
        Some(run_cluster_logged(&cfg, &say)?)
    } else {
        None
    };
    let ok: Vec<&ClusterReport> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .collect();
    if let (Some(path), Some(on)) = (&args.plot, ok.first()) {
        write_plot(path, mako_bench::plot::svg(on))?;
        say(&format!(
            "plot (throughput per {} ms, release latency over time, commit and release latency distributions): {}",
            on.bucket_ms,
            path.display()
        ));
    }
    if args.json {
        for on in &ok {
            println!("{}", serde_json::to_string(on)?);
        }
        if let Some(off) = &off {
            println!("{}", serde_json::to_string(off)?);
        }
    } else {
        for (p, r) in &results {
            let on = match r {
                Ok(on) => on,
                Err(e) => {
                    println!("{p}: FAILED: {e}");
                    continue;
                }
            };
            if kill_leader_at.is_some() || args.series {
                print_series(on, args.series);
            }
            print_cluster(on);
            if let Some(f) = &on.failover {
                print_failover(on, f);
            }
        }
        if let Some(off) = &off {
            print_cluster(off);
            for on in &ok {
                println!(
                    "released/s with {} {} replicas = {:.1}% of the 1-replica run",
                    on.replicas,
                    on.protocol,
                    100.0 * on.released_per_sec / off.released_per_sec.max(1e-9)
                );
            }
        }
        if ok.len() > 1 {
            print_side_by_side(&ok, args.repeat);
        }
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(p, r)| r.as_ref().err().map(|e| format!("{p}: {e}")))
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("cluster run(s) failed: {}", failed.join("; "));
    }
    if let Some(e) = ok.iter().find_map(|on| on.kill_error.as_ref()) {
        anyhow::bail!("the leader crash did not happen: {e}");
    }
    Ok(())
}

/// Scaling in shards (`--shards 2,4,8`): one cluster run per shard count (repeats interleaved),
/// each printed, then the table of released txn/s and txn per CPU-second and the ratio of its
/// ends against the target.
fn bench_scaling(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.kill_leader_at.is_none() && args.plot.is_none() && !args.series,
        "--kill-leader-at, --series and --plot take one shard count, not a list"
    );
    anyhow::ensure!(
        args.replication.len() <= 1,
        "a list of shard counts runs one protocol: give at most one with --replication"
    );
    let protocol = args.replication.first().copied().unwrap_or(Protocol::Raft);
    let mut configs = Vec::with_capacity(args.shard_counts.len());
    for &n in &args.shard_counts {
        let mut cfg =
            cluster_config(args, n).with_context(|| format!("the run on --shards {n}"))?;
        cfg.protocol = protocol;
        configs.push(cfg);
    }
    let json = args.json;
    let say = move |line: &str| progress_line(json, line);
    if let Some(first) = configs.first() {
        say(&format!(
            "scaling in shards {}: {} runs in turn, each its own in-process cluster (no 1-replica comparison run){}",
            args.shard_counts
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            configs.len() * args.repeat,
            if args.repeat > 1 {
                format!(
                    "; {} runs per count, interleaved, the median by released/cpu-s reported",
                    args.repeat
                )
            } else {
                String::new()
            }
        ));
        say(&format!(
            "  cross-shard share held at {}% for every count; CPU-seconds are the whole process's (getrusage RUSAGE_SELF, user+sys) over each measured phase",
            first.mix.cross_pct().unwrap_or(SCALING_CROSS_PCT)
        ));
    }
    let mut runs: Vec<Vec<ClusterReport>> = vec![Vec::new(); configs.len()];
    for rep in 0..args.repeat {
        for (cfg, reports) in configs.iter().zip(runs.iter_mut()) {
            if rep == 0 {
                say(&conditions(cfg));
            }
            let r = run_cluster_logged(cfg, &say)
                .with_context(|| format!("the run on --shards {}", cfg.shards))?;
            reports.push(r);
        }
    }
    let chosen: Vec<ClusterReport> = runs
        .iter()
        .filter_map(|reports| {
            group_bench::median_by(reports, |r: &ClusterReport| r.released_per_cpu_sec)
        })
        .collect();
    let table = ScalingReport::new(&chosen.iter().collect::<Vec<_>>(), args.repeat);
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "scaling": table, "runs": chosen }))?
        );
    } else {
        for r in &chosen {
            print_cluster(r);
        }
        print_scaling(&table);
    }
    if let Some(r) = chosen.iter().find(|r| !r.consistent) {
        anyhow::bail!(
            "replicas differ after the run on {} shards: {}",
            r.shards,
            r.difference.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

/// The scaling table and the ratio line.
fn print_scaling(t: &ScalingReport) {
    println!(
        "scaling in shards ({} durability, {} replicas, {} worker(s)/shard, read-only {}%, cross-shard {} configured, {} {:.1} s per run{}):",
        t.durability,
        t.replicas,
        t.threads,
        t.read_pct,
        t.cross_shard_pct
            .map_or_else(|| "spread".to_owned(), |p| format!("{p}%")),
        t.protocol,
        t.secs,
        if t.repeat > 1 {
            format!(", median of {} by released/cpu-s", t.repeat)
        } else {
            String::new()
        }
    );
    println!(
        "  {:>6}  {:>12}  {:>9}  {:>10}  {:>14}  {:>19}  {:>8}  {:>14}",
        "shards",
        "released/s",
        "cpu-s",
        "cores busy",
        "released/cpu-s",
        "cross-shard measured",
        "aborts",
        "release p99 us"
    );
    for r in &t.rows {
        println!(
            "  {:>6}  {:>12}  {:>9.2}  {:>10.2}  {:>14}  {:>19.1}%  {:>7.2}%  {:>14}",
            r.shards,
            group(r.released_per_sec as u64),
            r.cpu_secs,
            r.cores_busy,
            group(r.released_per_cpu_sec as u64),
            r.cross_shard_measured_pct,
            r.abort_pct,
            group(r.release_p99_us as u64)
        );
    }
    match (t.ratio, t.rows.first(), t.rows.last()) {
        (Some(ratio), Some(lo), Some(hi)) => println!(
            "ratio released/cpu-s {} shards / {} shards = {:.2} (target >= {:.1}: {})",
            hi.shards,
            lo.shards,
            ratio,
            t.target,
            if ratio >= t.target { "met" } else { "NOT met" }
        ),
        _ => println!("ratio released/cpu-s: not available (no CPU time measured)"),
    }
}

/// The protocols' cluster figures in columns, with Raft/Paxos ratios when both ran.
fn print_side_by_side(runs: &[&ClusterReport], repeat: usize) {
    let Some(first) = runs.first() else {
        return;
    };
    println!(
        "side by side ({} durability, {} shard(s) x {} replicas, {} worker(s)/shard, read-only {}%, cross-shard {}{}):",
        first.durability,
        first.shards,
        first.replicas,
        first.threads,
        first.read_pct,
        runs.iter()
            .map(|r| format!("{} {:.0}%", r.protocol, r.distributed_pct))
            .collect::<Vec<_>>()
            .join(" / "),
        if repeat > 1 {
            format!("; median of {repeat} runs by released/s")
        } else {
            String::new()
        }
    );
    let find = |p: Protocol| runs.iter().find(|r| r.protocol == p.name());
    let pair = find(Protocol::Raft).zip(find(Protocol::Paxos));
    let mut head = format!("  {:<22}", "");
    for r in runs {
        head.push_str(&format!("{:>14}", r.protocol));
    }
    if pair.is_some() {
        head.push_str(&format!("{:>12}", "raft/paxos"));
    }
    println!("{head}");
    type Figure = fn(&ClusterReport) -> f64;
    let rows: [(&str, Figure); 6] = [
        ("speculative commits/s", |r| r.spec_per_sec),
        ("released/s", |r| r.released_per_sec),
        ("release p50 us", |r| r.release_p50_us),
        ("release p99 us", |r| r.release_p99_us),
        ("aborts %", |r| r.abort_pct),
        ("unknown", |r| r.unknown as f64),
    ];
    for (name, f) in rows {
        let mut line = format!("  {name:<22}");
        for r in runs {
            let v = f(r);
            if name == "aborts %" {
                line.push_str(&format!("{v:>14.2}"));
            } else {
                line.push_str(&format!("{:>14}", group(v as u64)));
            }
        }
        if let Some((raft, paxos)) = pair {
            let (a, b) = (f(raft), f(paxos));
            if b > 0.0 {
                line.push_str(&format!("{:>12.2}", a / b));
            } else {
                line.push_str(&format!("{:>12}", "-"));
            }
        }
        println!("{line}");
    }
    if let Some((raft, paxos)) = pair {
        let r = raft.released_per_sec / paxos.released_per_sec.max(1e-9);
        println!(
            "  raft released/s = {:.0}% of paxos ({}within 90-110%)",
            100.0 * r,
            if (0.9..=1.1).contains(&r) { "" } else { "NOT " }
        );
    }
}

/// The run conditions, one line.
fn conditions(cfg: &ClusterBenchConfig) -> String {
    let cross = match cfg.mix {
        ShardMix::Spread => format!(
            "cross-shard ~{:.1}% (4 uniform keys over {} shards; measured below)",
            100.0 * (1.0 - (1.0 / f64::from(cfg.shards)).powi(3)),
            cfg.shards
        ),
        ShardMix::CrossShard(p) => format!(
            "cross-shard {p}% (fixed: 2 keys on the home shard + 2 on one other; the rest 4 keys on the home shard; measured below)"
        ),
    };
    format!(
        "cluster bench: protocol={} shards={} replicas={} workers/shard={} window={} keys={} read-only={}% {cross} dist={} durability={:?} election timeout {}-{} ms request timeout {} ms unknown after {} ms duration {:.1} s{}",
        cfg.protocol,
        cfg.shards,
        cfg.replicas,
        cfg.threads,
        window_text(cfg.window),
        group(cfg.keys),
        cfg.read_pct,
        cfg.dist.name(),
        cfg.durability,
        cfg.election_ms.0,
        cfg.election_ms.1,
        cfg.request_timeout.as_millis(),
        cfg.unknown_after.as_millis(),
        cfg.duration.as_secs_f64(),
        match cfg.kill_leader_at {
            Some(k) => format!(", crash of shard 0's leader at {:.2} s", k.as_secs_f64()),
            None => String::new(),
        }
    )
}

/// Runs a cluster bench printing a progress line a second.
fn run_cluster_logged(
    cfg: &ClusterBenchConfig,
    say: &dyn Fn(&str),
) -> anyhow::Result<ClusterReport> {
    say(&format!(
        "loading {} keys on {} shard(s) x {} replica(s)...",
        group(cfg.keys),
        cfg.shards,
        cfg.replicas
    ));
    let mut last = (Duration::ZERO, 0u64, 0u64);
    let mut told = false;
    let r = mako_bench::run_cluster(cfg, |p| {
        if let (Some(at), false) = (p.crashed_at, told) {
            told = true;
            say(&format!(
                "  crashed shard 0's leader at {:.3} s",
                at.as_secs_f64()
            ));
        }
        let dt = (p.elapsed - last.0).as_secs_f64().max(1e-9);
        say(&format!(
            "[{:>5.1}s/{:.1}s] released {:>9}/s  speculative {:>9}/s  aborts {} unknown {}",
            p.elapsed.as_secs_f64(),
            p.total.as_secs_f64(),
            group(((p.released - last.1) as f64 / dt) as u64),
            group(((p.spec - last.2) as f64 / dt) as u64),
            group(p.aborted),
            group(p.unknown)
        ));
        last = (p.elapsed, p.released, p.spec);
    })?;
    Ok(r)
}

/// The per-bucket series: the whole run, or from 1 s before the crash to 3 s after.
fn print_series(r: &ClusterReport, all: bool) {
    let crash = r.failover.as_ref().map(|f| f.at_ms);
    let span = r.series.len() as f64 * r.bucket_ms as f64;
    let (from, to) = match crash {
        Some(at) if !all && span > 4000.0 => (at - 1000.0, at + 3000.0),
        _ => (f64::MIN, f64::MAX),
    };
    let w = r.bucket_ms as f64;
    let mark = |ms: Option<f64>| crash.zip(ms).map(|(a, m)| a + m);
    let f = r.failover.as_ref();
    let marks = [
        (crash, "crash of shard 0's leader"),
        (
            mark(f.and_then(|f| f.serving_after_ms)),
            "all shards serving the new epoch",
        ),
        (
            mark(f.and_then(|f| f.first_release_ms)),
            "first release of a txn begun after the crash",
        ),
        (
            mark(f.and_then(|f| f.first_cross_release_ms)),
            "first release of a cross-shard txn begun after the crash",
        ),
    ];
    println!(
        "time series ({} ms buckets; latency = begin to observed release; aborts include speculative commits the failover discarded):",
        r.bucket_ms
    );
    println!(
        "{:>7} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} {:>7} {:>9} {:>9}  events",
        "t s",
        "spec",
        "released",
        "released/s",
        "conflict",
        "failover",
        "notleadr",
        "timeout",
        "other",
        "unknown",
        "backoff",
        "p50 ms",
        "p99 ms"
    );
    for b in &r.series {
        let t = b.start_ms as f64;
        if t + w <= from || t >= to {
            continue;
        }
        use AbortReason::{Conflict, Failover, NotLeader, Timeout};
        let other = b.aborted()
            - b.aborts_of(Conflict)
            - b.aborts_of(Failover)
            - b.aborts_of(NotLeader)
            - b.aborts_of(Timeout);
        let events: Vec<String> = marks
            .iter()
            .filter_map(|(m, what)| {
                m.filter(|m| *m >= t && *m < t + w)
                    .map(|m| format!("{what} ({:.3} s)", m / 1e3))
            })
            .collect();
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |us| format!("{:.2}", us / 1e3));
        println!(
            "{:>7.1} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} {:>7} {:>9} {:>9}  {}",
            t / 1e3,
            b.spec,
            b.released,
            group(b.released_per_sec() as u64),
            b.aborts_of(Conflict),
            b.aborts_of(Failover),
            b.aborts_of(NotLeader),
            b.aborts_of(Timeout),
            other,
            b.unknown,
            b.backoffs,
            ms(b.p50_us),
            ms(b.p99_us),
            events.join("; ")
        );
    }
}

/// The failover figures.
fn print_failover(r: &ClusterReport, f: &FailoverReport) {
    let opt = |v: Option<f64>| {
        v.map_or("never (within the run)".to_owned(), |v| {
            format!("{v:.1} ms")
        })
    };
    println!(
        "failover: replica {} of shard {} (its leader) crashed at {:.3} s into the measured phase (stop took {:.1} ms); new leader: {}",
        f.replica,
        f.shard,
        f.at_ms / 1e3,
        f.stop_ms,
        f.new_leader
            .map_or("none seen".to_owned(), |r| format!("replica {r}"))
    );
    println!(
        "  election timeout {}-{} ms (target for the first release: max + 50 ms = {} ms); request timeout {} ms",
        r.election_ms.0,
        r.election_ms.1,
        r.election_ms.1 + 50,
        r.request_timeout_ms
    );
    println!(
        "  crash -> every shard serving the new epoch:                {}",
        opt(f.serving_after_ms)
    );
    println!(
        "  crash -> first release of a txn begun after the crash:     {}",
        opt(f.first_release_ms)
    );
    println!(
        "  crash -> first release of a cross-shard txn begun after:   {}",
        opt(f.first_cross_release_ms)
    );
    println!(
        "  crash -> first release observed (any txn):                 {}",
        opt(f.first_any_release_ms)
    );
    let rate = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{}/s", group(v as u64)));
    let d = &f.dip;
    println!(
        "  released/s, median of {} ms buckets: before the crash {}, crash to end {}, from 1 s after the first release {}",
        r.bucket_ms,
        rate(d.before_median_per_sec),
        rate(d.after_median_per_sec),
        rate(d.recovered_median_per_sec)
    );
    println!(
        "  dip: {} bucket(s) after the crash with no release ({} ms); lowest bucket {}/s; released in the first second after the crash {} ({})",
        d.zero_buckets_after,
        d.zero_buckets_after * r.bucket_ms,
        group(d.min_after_per_sec as u64),
        group(d.released_first_sec_after),
        d.before_median_per_sec.map_or("-".to_owned(), |b| format!(
            "{:.0}% of a median second before",
            100.0 * d.released_first_sec_after as f64 / b.max(1e-9)
        ))
    );
    println!(
        "  released transactions begun after the crash, by the client's home shard: {}",
        f.released_after_by_home
            .iter()
            .enumerate()
            .map(|(s, n)| format!("shard {s}: {}", group(*n)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  aborts by reason: {}; unknown {} (later released {}, discarded {})",
        r.aborts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {}", group(*n)))
            .collect::<Vec<_>>()
            .join(", "),
        r.unknown,
        r.unknown_later_released,
        r.unknown_later_discarded
    );
    for u in &r.unknown_samples {
        println!("    unknown: {u}");
    }
}

fn durability(d: DurabilityArg) -> Durability {
    match d {
        DurabilityArg::Fsync => Durability::Fsync,
        DurabilityArg::Buffered => Durability::Buffered,
        DurabilityArg::Memory => Durability::Memory,
    }
}

/// A worker's window as printed: its size, or "unbounded" for 0.
fn window_text(w: usize) -> String {
    if w == 0 {
        "unbounded".into()
    } else {
        w.to_string()
    }
}

fn print_cluster(r: &ClusterReport) {
    println!(
        "[{} {} {}x{} workers/shard={} window={} read-only={}% cross-shard={:.0}%]  speculative {:>9}/s  released {:>9}/s  aborts {:.2}% (unknown {})  commit p50 {:.0} us  release p50/p99/p99.9 {:.0}/{:.0}/{:.0} us  replay lag p99 {:.0} us  cpu {:.2} s in {:.2} s ({} released/cpu-s)  {}",
        r.protocol,
        r.durability,
        r.shards,
        r.replicas,
        r.threads,
        window_text(r.window),
        r.read_pct,
        r.distributed_pct,
        group(r.spec_per_sec as u64),
        group(r.released_per_sec as u64),
        r.abort_pct,
        r.unknown,
        r.commit_p50_us,
        r.release_p50_us,
        r.release_p99_us,
        r.release_p999_us,
        r.replay_lag_p99_us,
        r.cpu_secs,
        r.wall_secs,
        group(r.released_per_cpu_sec as u64),
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
        protocol: args.replication,
        seed: 42,
        window: args.window,
        ..ClusterBenchConfig::default()
    };
    check_cluster(&cfg)?;
    let live = std::io::stdout().is_terminal();
    println!(
        "mako demo: 2 shards x 3 {} replicas (memory durability) in one process, {} keys, {} worker(s) per shard leader keeping {} unreleased commits at most, {:.0} s of the micro workload",
        cfg.protocol,
        group(cfg.keys),
        cfg.threads,
        window_text(cfg.window),
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
    if let Some(path) = &args.plot {
        write_plot(
            path,
            mako_bench::plot::render(&mako_bench::plot::cluster_figure(&r, "mako demo")),
        )?;
        println!("plot:                {}", path.display());
    }
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

/// Writes a TPC-C run's picture to `path` and says so (on stderr with `--json`).
fn write_tpcc_plot(
    path: &std::path::Path,
    figure: &mako_bench::plot::Figure,
    json: bool,
) -> anyhow::Result<()> {
    write_plot(path, mako_bench::plot::render(figure))?;
    let line = format!(
        "plot (throughput per {} ms, {}): {}",
        figure.bucket_ms,
        figure.latency_name,
        path.display()
    );
    progress_line(json, &line);
    Ok(())
}

fn bench_tpcc(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.kill_leader_at.is_none() && !args.series,
        "--kill-leader-at and --series need a cluster run of the micro workload (--shards > 1 or --replicas)"
    );
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
        scale: tpcc_scale(args),
        durability: durability(args.durability),
        ..mako_tpcc::TpccConfig::default()
    };
    let live = std::io::stdout().is_terminal() && !args.json;
    // Every 10 s of the measured phase: throughput over those 10 s and resident memory, to
    // stderr (even with --json), so long runs show progress.
    let ten_s = std::cell::Cell::new((Duration::ZERO, 0u64));
    let show = |p: mako_tpcc::TpccProgress| {
        if let mako_tpcc::TpccProgress::Running {
            elapsed,
            committed,
            rss_bytes,
            ..
        } = p
        {
            let (at, then) = ten_s.get();
            let mark = Duration::from_secs(elapsed.as_secs() / 10 * 10);
            if mark > at {
                let tps = (committed - then) as f64 / (elapsed - at).as_secs_f64().max(1e-9);
                if live {
                    print!("\r\x1b[2K");
                    let _ = std::io::stdout().flush();
                }
                eprintln!(
                    "[t={}s] {} txn/s, RSS {}",
                    mark.as_secs(),
                    group(tps as u64),
                    megabytes(rss_bytes)
                );
                ten_s.set((elapsed, committed));
            }
        }
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
            window: args.window.unwrap_or(mako_tpcc::DEFAULT_WINDOW),
            ..cfg
        };
        let r = mako_tpcc::run_cluster(&cfg, replicas, show)?;
        if live {
            print!("\r\x1b[2K");
        }
        if let Some(path) = &args.plot {
            write_tpcc_plot(path, &tpcc_plot::cluster_figure(&r), args.json)?;
        }
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "cluster: {} shard(s) x {} replica(s), window {} unreleased commits per worker; latencies below are begin to speculative commit",
                r.shards,
                r.replicas,
                window_text(r.window)
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
    if let Some(path) = &args.plot {
        write_tpcc_plot(path, &tpcc_plot::local_figure(&report), args.json)?;
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

/// Resident bytes as `430 MB`, or `n/a`.
fn megabytes(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "n/a".to_string(),
        |b| format!("{} MB", group(b / 1_000_000)),
    )
}

/// A signed byte count per NewOrder as `3,612 B`, or `n/a`.
fn per_new_order(bytes: Option<f64>) -> String {
    match bytes {
        Some(b) if b < 0.0 => format!("-{} B", group((-b).round() as u64)),
        Some(b) => format!("{} B", group(b.round() as u64)),
        None => "n/a".to_string(),
    }
}

/// The memory-per-NewOrder line and, for runs of a minute or more, the endurance lines.
fn print_tpcc_memory(r: &mako_tpcc::TpccReport) {
    let m = &r.memory;
    // In-process clusters hold every replica: compare with the payload of all of them.
    let copies = if m.copies > 1 {
        format!(
            "{} replicas in this process: {} x{}; ",
            m.copies,
            per_new_order(m.payload_per_new_order),
            m.copies
        )
    } else {
        String::new()
    };
    println!(
        "memory per NewOrder: {} resident growth vs {} payload ({copies}{}; target <= {}x), RSS {} after load -> {} at end",
        per_new_order(m.resident_per_new_order),
        per_new_order(m.stored_payload_per_new_order),
        m.ratio
            .map_or_else(|| "n/a".to_string(), |x| format!("{x:.1}x")),
        m.target_ratio,
        megabytes(m.rss_after_load),
        megabytes(m.rss_at_end)
    );
    if let Some(e) = &r.endurance {
        println!(
            "endurance: first minute {} txn/s (NewOrder p50 {:.0} us), last minute {} txn/s (NewOrder p50 {:.0} us): \
             last/first {:.2} (target within {:.0}%: {})",
            group(e.first.txn_per_sec as u64),
            e.first.new_order_p50_us,
            group(e.last.txn_per_sec as u64),
            e.last.new_order_p50_us,
            e.throughput_ratio,
            100.0 * e.target_drift,
            if e.within_target() { "met" } else { "MISSED" }
        );
    }
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
    print_tpcc_memory(r);
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
