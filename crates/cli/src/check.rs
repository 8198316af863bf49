//! `mako check`: runs a history-checker workload on an in-process cluster, or with `-f` on a
//! deployment (running, or started here when leaders are to be killed), checks the recorded
//! history for anomalies, and exits non-zero on any.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

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
    /// Config files of a deployment, merged in order: run the workload against it over the
    /// network (interactive client transactions on the default table `kv`) instead of an
    /// in-process cluster. Without --kill-leaders the deployment must be running.
    #[arg(short = 'f', long = "file", value_name = "CONFIG")]
    files: Vec<PathBuf>,
    /// With -f: start the deployment's sites here as child processes and SIGKILL the serving
    /// leader of a random shard this many times (each time awaiting a new leader and
    /// restarting the killed site from its data directory); the run lasts at least
    /// (N + 1) × --kill-every.
    #[arg(long, value_name = "N", requires = "files")]
    kill_leaders: Option<u32>,
    /// Seconds between leader kills.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 4.0,
        requires = "kill_leaders"
    )]
    kill_every: f64,
    /// With -f: added to every checker key (default: derived from the clock, so that runs on
    /// one deployment do not share keys).
    #[arg(long, hide = true, requires = "files")]
    key_offset: Option<u64>,
    /// The workload.
    #[arg(long, value_enum, default_value = "list-append")]
    workload: WorkloadArg,
    /// Shards (in-process runs).
    #[arg(long, default_value_t = 2, conflicts_with = "files")]
    shards: u32,
    /// Raft replicas per shard (1, 3 or 5; in-process runs).
    #[arg(long, default_value_t = 3, conflicts_with = "files")]
    replicas: u32,
    /// Coordinator workers per shard (in-process runs).
    #[arg(long, default_value_t = 2, conflicts_with = "files")]
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
pub fn run(args: &CheckArgs, log_level: Option<&str>) -> anyhow::Result<()> {
    if !args.files.is_empty() {
        return run_remote(args, log_level);
    }
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

/// `mako check -f`: the workload against a deployment, with leader kills if asked.
fn run_remote(args: &CheckArgs, log_level: Option<&str>) -> anyhow::Result<()> {
    use mako_bench::remote::{Event, KillPlan, RemoteCheckConfig};
    // The in-process checks validate the shared flags.
    let base = args.config()?;
    let cfg = crate::server::load(&args.files)?;
    let kills = match args.kill_leaders {
        None => None,
        Some(n) => {
            anyhow::ensure!(n >= 1, "--kill-leaders must be at least 1");
            anyhow::ensure!(
                cfg.replicas() >= 3,
                "--kill-leaders needs 3 or more replicas per shard (the config has {})",
                cfg.replicas()
            );
            let every = Duration::try_from_secs_f64(args.kill_every)
                .ok()
                .filter(|d| *d >= Duration::from_millis(100))
                .with_context(|| {
                    format!(
                        "--kill-every must be at least 0.1 seconds, got {}",
                        args.kill_every
                    )
                })?;
            Some(KillPlan {
                count: n,
                every,
                leader_wait: Duration::from_secs(30),
            })
        }
    };
    let key_offset = args.key_offset.unwrap_or_else(|| {
        // Fresh keys per run: the clock's microseconds, shifted above any run's keys.
        let us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        (us & 0xff_ffff_ffff) << 24
    });
    let rc = RemoteCheckConfig {
        workload: base.workload,
        clients: base.clients,
        dist: base.dist,
        keys: base.keys,
        duration: base.duration,
        seed: base.seed,
        key_offset,
        fault: base.fault,
        kills,
        converge_timeout: Duration::from_secs(60),
    };
    println!(
        "mako check -f {}: workload={} durability={} shards={} replicas={} clients={} dist={} duration={:.1}s seed={} key-offset={}{}{}",
        cfg.sources.join(" -f "),
        rc.workload,
        cfg.durability.as_str(),
        cfg.shards(),
        cfg.replicas(),
        rc.clients,
        match args.dist {
            CheckDist::Uniform => "uniform",
            CheckDist::Hot => "hot",
        },
        rc.effective_duration().as_secs_f64(),
        rc.seed,
        rc.key_offset,
        match kills {
            Some(k) => format!(
                " kill-leaders={} every {:.1}s",
                k.count,
                k.every.as_secs_f64()
            ),
            None => String::new(),
        },
        match rc.fault {
            Some(f) => format!(" (deliberately broken executor: {f:?})"),
            None => String::new(),
        }
    );
    let mut deployment = match kills {
        None => None,
        Some(_) => {
            let exe = std::env::current_exe().context("locating the mako binary")?;
            let logs = cfg.data_dir.join("logs");
            let mut d = mako_deploy::Deployment::start(
                &exe,
                &args.files,
                &[],
                mako_deploy::Output::Files(logs.clone()),
                log_level,
            )?;
            d.wait_ready(Duration::from_secs(60))?;
            println!(
                "started {} sites (logs in {}); every shard has a serving leader",
                d.running().len(),
                logs.display()
            );
            Some(d)
        }
    };
    let live = std::io::stdout().is_terminal();
    let run = mako_bench::remote::run_check(&cfg, deployment.as_mut(), &rc, |e| match e {
        Event::Progress(p) => {
            if live {
                show_progress(&p);
            }
        }
        Event::Killed(k) => {
            if live {
                print!("\r\x1b[2K");
            }
            println!(
                "kill at {:.1} s: shard {} leader {} SIGKILLed; new leader {} after {}; {}{}",
                k.at.as_secs_f64(),
                k.shard,
                k.site,
                k.new_leader.as_deref().unwrap_or("none"),
                k.new_leader_after
                    .map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
                match &k.restart_error {
                    None => format!("{} restarted", k.site),
                    Some(e) => format!("{} NOT restarted: {e}", k.site),
                },
                if k.after_clients {
                    " (after the clients stopped)"
                } else {
                    ""
                }
            );
        }
        Event::KillFailed(f) => {
            if live {
                print!("\r\x1b[2K");
            }
            println!("kill FAILED: {f}");
        }
    })?;
    if live {
        print!("\r\x1b[2K");
    }
    if let Some(d) = deployment.as_mut() {
        d.shutdown(Duration::from_secs(10));
    }
    print_summary(&run.run);
    if !run.kills.is_empty() {
        print_kills(&run.kills, cfg.durability.as_str());
    }
    if run.is_valid() {
        Ok(())
    } else {
        std::process::exit(1);
    }
}

/// Per kill, the time to the first release after it, and their median and maximum.
fn print_kills(kills: &[mako_bench::remote::KillRecord], durability: &str) {
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let show = |v: Option<f64>| v.map_or("none".to_string(), |v| format!("{v:.0} ms"));
    println!(
        "kills: {} (new leader after: {}); first release of a txn on the shard invoked after the kill: {}",
        kills.len(),
        kills
            .iter()
            .map(|k| show(ms(k.new_leader_after)))
            .collect::<Vec<_>>()
            .join(", "),
        kills
            .iter()
            .map(|k| show(ms(k.first_release_after)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut resumed: Vec<f64> = kills
        .iter()
        .filter_map(|k| ms(k.first_release_after))
        .collect();
    resumed.sort_by(f64::total_cmp);
    if let (Some(max), false) = (resumed.last(), resumed.is_empty()) {
        println!(
            "resume after a kill (to the first release, {durability} durability): median {:.0} ms, max {:.0} ms over {} kill(s){}",
            resumed[resumed.len() / 2],
            max,
            resumed.len(),
            match kills.len() - resumed.len() {
                0 => String::new(),
                n => format!("; {n} kill(s) with no such release in the run"),
            }
        );
    }
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
