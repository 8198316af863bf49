//! `mako log check|repair`: operator commands for a node's durable Raft log.

use std::path::PathBuf;

use anyhow::Context;
use mako_logstore::{Durability, LogStore, LogStoreConfig, RepairReport};

/// What to do with the log.
#[derive(clap::Subcommand, Debug)]
pub enum LogCmd {
    /// Report damage (a bad record in a sealed segment, a bad header) without changing anything.
    Check(LogArgs),
    /// Truncate the log at its first damage and remove every later segment (drops data: read `check` first).
    Repair(LogArgs),
}

/// Where the log is.
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// The log directory (the node's `log` directory, holding `*.wal` segments).
    #[arg(long)]
    pub dir: PathBuf,
}

/// Runs `mako log ...`; exits non-zero when `check` finds damage.
pub fn run(cmd: &LogCmd) -> anyhow::Result<()> {
    let (args, repair) = match cmd {
        LogCmd::Check(a) => (a, false),
        LogCmd::Repair(a) => (a, true),
    };
    anyhow::ensure!(
        args.dir.is_dir(),
        "log directory {} does not exist",
        args.dir.display()
    );
    let cfg = LogStoreConfig {
        durability: Durability::Fsync,
        ..LogStoreConfig::new(&args.dir)
    };
    let report = if repair {
        LogStore::repair(&cfg)
    } else {
        LogStore::check(&cfg)
    }
    .with_context(|| format!("log in {}", args.dir.display()))?;
    print_report(&report, repair);
    if !repair && !report.is_clean() {
        anyhow::bail!("the log is damaged; `mako log repair` truncates it at the damage");
    }
    Ok(())
}

fn print_report(r: &RepairReport, repaired: bool) {
    if r.is_clean() {
        println!("log intact");
        return;
    }
    let verb = if repaired { "dropped" } else { "would drop" };
    if let Some(cut) = &r.cut {
        println!(
            "first damage: {} at offset {}: {}",
            cut.path.display(),
            cut.offset,
            cut.reason
        );
    }
    for s in &r.segments_removed {
        println!("{verb} segment {}", s.display());
    }
    println!(
        "{verb} {} bytes, {} records with a valid checksum (possibly acknowledged writes)",
        r.bytes_dropped, r.records_dropped
    );
}
