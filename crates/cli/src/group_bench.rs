//! `mako bench group` (and `mako bench raft`): the raw replication group benchmark, each
//! protocol against the ceiling of the bare log store and transport measured in the same run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mako_bench::{
    CeilingConfig, CeilingReport, GroupBenchConfig, GroupBenchReport, NetKind, Protocol,
};

use crate::{DurabilityArg, NetArg, duration_arg, group};

/// Flags of `mako bench group` and `mako bench raft`.
#[derive(clap::Args, Debug)]
pub(crate) struct GroupArgs {
    /// Replication protocols to run, in turn (comma-separated: raft, paxos). Default for
    /// `bench group`: raft,paxos; `bench raft` runs Raft only.
    #[arg(long, value_delimiter = ',', value_name = "PROTOCOLS")]
    replication: Vec<Protocol>,
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
    /// Measured seconds per run (after 0.5 s of warm-up).
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Entries in flight per group when unthrottled.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Runs per protocol (and of the ceiling) for each configuration, interleaved across
    /// protocols; the run with the median entries/s is reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Skip the ceiling (bare log store and transport) runs.
    #[arg(long)]
    no_ceiling: bool,
    /// Ceiling: entries per log write (default: the most the protocols achieved in the same
    /// configuration; messages hold at most one append message's bytes of them).
    #[arg(long, value_name = "ENTRIES")]
    ceiling_batch: Option<usize>,
    /// Skip the paced runs (every protocol at half the lowest unthrottled median rate).
    #[arg(long)]
    no_paced: bool,
    /// Print one JSON object per line (kind: ceiling, group, error, ratio) instead of a table.
    #[arg(long)]
    json: bool,
    /// Draw each unthrottled run (the median one with --repeat) as an SVG picture: committed
    /// entries/s per 100 ms and the commit latency distribution. With one protocol and one
    /// value of each of --net, --durability, --groups and --entry-size the picture goes to
    /// FILE; otherwise one picture per run, FILE's name suffixed with the values that vary
    /// (`g.svg` -> `g-raft.svg`, `g-paxos.svg`, ...).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "mako-bench-group.svg")]
    plot: Option<PathBuf>,
}

/// Where the picture of run `r` goes: `base` itself, or with the varying settings appended
/// to its name.
fn plot_path(
    base: &Path,
    args: &GroupArgs,
    protocols: &[Protocol],
    r: &GroupBenchReport,
) -> PathBuf {
    let mut suffix = String::new();
    if protocols.len() > 1 {
        suffix.push_str(&format!("-{}", r.protocol));
    }
    if args.net.len() > 1 {
        suffix.push_str(&format!("-{}", r.net.name()));
    }
    if args.durability.len() > 1 {
        suffix.push_str(&format!("-{}", r.durability));
    }
    if args.groups.len() > 1 {
        suffix.push_str(&format!("-{}g", r.groups));
    }
    if args.entry_size.len() > 1 {
        suffix.push_str(&format!("-{}B", r.entry_bytes));
    }
    if suffix.is_empty() {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mako-bench-group".to_owned());
    let name = match base.extension() {
        Some(ext) => format!("{stem}{suffix}.{}", ext.to_string_lossy()),
        None => format!("{stem}{suffix}"),
    };
    base.with_file_name(name)
}

/// Runs `mako bench group` (`raft_only`: `mako bench raft`).
pub(crate) fn run(args: &GroupArgs, raft_only: bool) -> anyhow::Result<()> {
    let protocols = protocols(&args.replication, raft_only)?;
    let duration = duration_arg(args.duration)?;
    anyhow::ensure!(args.window > 0, "--window must be positive");
    anyhow::ensure!(
        (1..=15).contains(&args.repeat),
        "--repeat must be between 1 and 15"
    );
    anyhow::ensure!(
        args.ceiling_batch.is_none_or(|b| (1..=65_536).contains(&b)),
        "--ceiling-batch must be between 1 and 65536"
    );
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
    let json = args.json;
    if !json {
        println!(
            "group bench: {} per group of 3 replicas in one process; window {} entries/group; 0.5 s warm-up + {:.1} s measured per run{}; ceiling = the lower of the bare log store and the bare transport with the same settings",
            protocols
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(" then "),
            args.window,
            duration.as_secs_f64(),
            if args.repeat > 1 {
                format!(", median of {} runs by entries/s", args.repeat)
            } else {
                String::new()
            }
        );
        println!(
            "{:<6} {:<4} {:>7} {:>6} {:>8} {:>10} {:>11} {:>8} {:>9} {:>9} {:>9} {:>8} {:>7} {:>6} {:>9} {:>5}",
            "proto",
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
            "ent/wr",
            "%ceil",
            "gap/dup/ro",
            "elect"
        );
    }
    let mut failures: Vec<String> = Vec::new();
    for &net in &args.net {
        for &durability in &args.durability {
            for &groups in &args.groups {
                for &entry_bytes in &args.entry_size {
                    let base = GroupBenchConfig {
                        protocol: Protocol::Raft,
                        net: match net {
                            NetArg::Mem => NetKind::Mem,
                            NetArg::Tcp => NetKind::Tcp,
                        },
                        entry_bytes,
                        groups,
                        durability: crate::durability(durability),
                        duration,
                        rate: None,
                        window: args.window,
                    };
                    one_config(args, &protocols, &base, &mut failures)?;
                }
            }
        }
    }
    if !failures.is_empty() {
        anyhow::bail!(
            "{} group bench run(s) failed; first: {}",
            failures.len(),
            failures[0]
        );
    }
    Ok(())
}

/// The protocols to run: `bench raft` runs Raft only; `bench group` defaults to both.
fn protocols(asked: &[Protocol], raft_only: bool) -> anyhow::Result<Vec<Protocol>> {
    if raft_only {
        anyhow::ensure!(
            asked.iter().all(|&p| p == Protocol::Raft),
            "`mako bench raft` runs Raft only; use `mako bench group --replication {}`",
            asked.iter().map(|p| p.name()).collect::<Vec<_>>().join(",")
        );
        return Ok(vec![Protocol::Raft]);
    }
    if asked.is_empty() {
        return Ok(Protocol::ALL.to_vec());
    }
    let mut out = Vec::new();
    for &p in asked {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// The run whose value of `key` is the median (the lower middle of an even count).
pub(crate) fn median_by<T: Clone>(runs: &[T], key: impl Fn(&T) -> f64) -> Option<T> {
    let mut v: Vec<&T> = runs.iter().collect();
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v.get(v.len().saturating_sub(1) / 2).map(|r| (*r).clone())
}

/// Ceiling, unthrottled runs of every protocol, ratios, paced runs: one configuration.
fn one_config(
    args: &GroupArgs,
    protocols: &[Protocol],
    base: &GroupBenchConfig,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let json = args.json;
    let label = format!(
        "{} {} B x {} group(s), {} durability",
        base.net.name(),
        base.entry_bytes,
        base.groups,
        base.durability.as_str()
    );
    // Unthrottled: every protocol in turn, repeats interleaved so drift hits all alike.
    let mut runs: Vec<(Protocol, Vec<GroupBenchReport>, Option<String>)> =
        protocols.iter().map(|&p| (p, Vec::new(), None)).collect();
    for _ in 0..args.repeat {
        for (p, reports, error) in runs.iter_mut() {
            if error.is_some() {
                continue;
            }
            match mako_bench::run_group(&GroupBenchConfig {
                protocol: *p,
                ..base.clone()
            }) {
                Ok(r) => reports.push(r),
                Err(e) => *error = Some(e.to_string()),
            }
        }
    }
    let medians: Vec<GroupBenchReport> = runs
        .iter()
        .filter_map(|(_, reports, _)| median_by(reports, |r: &GroupBenchReport| r.entries_per_sec))
        .collect();
    // The ceiling, with the largest batches the protocols achieved per log write (so no
    // protocol batches better than the bare store is fed).
    let ceiling = if args.no_ceiling || medians.is_empty() {
        None
    } else {
        let achieved = medians
            .iter()
            .map(|r| r.entries_per_log_write.round() as usize)
            .max()
            .unwrap_or(0);
        let cc = CeilingConfig {
            batch_entries: args.ceiling_batch.unwrap_or(achieved),
            ..CeilingConfig::for_group(base)
        };
        let mut runs = Vec::new();
        for _ in 0..args.repeat {
            runs.push(
                mako_bench::run_ceiling(&cc)
                    .with_context(|| format!("measuring the ceiling ({label})"))?,
            );
        }
        let c =
            median_by(&runs, |c: &CeilingReport| c.entries_per_sec).context("no ceiling run")?;
        print_ceiling(&c, json)?;
        Some(c)
    };
    for (p, reports, error) in &runs {
        if let Some(e) = error {
            print_error(*p, &label, e, json)?;
            failures.push(format!("{p} ({label}): {e}"));
            continue;
        }
        if let Some(r) = medians.iter().find(|r| r.protocol == p.name()) {
            print_group(r, ceiling.as_ref(), reports.len(), json)?;
            if let Some(base) = &args.plot {
                let path = plot_path(base, args, protocols, r);
                crate::write_plot(&path, mako_bench::plot::group_svg(r))?;
                let line = format!(
                    "  plot ({} {label}: entries/s per {} ms, commit latency distribution): {}",
                    r.protocol,
                    r.bucket_ms,
                    path.display()
                );
                crate::progress_line(json, &line);
            }
        }
    }
    print_ratio(&medians, &label, "unthrottled", json)?;
    // Paced: every protocol at the same rate, half the lowest unthrottled median.
    let lowest = medians
        .iter()
        .map(|r| r.entries_per_sec)
        .fold(f64::INFINITY, f64::min);
    if args.no_paced || medians.is_empty() || !(lowest > 0.0 && lowest.is_finite()) {
        return Ok(());
    }
    let mut paced = Vec::new();
    for r in &medians {
        let p: Protocol = r.protocol.parse()?;
        let cfg = GroupBenchConfig {
            protocol: p,
            rate: Some(lowest / 2.0),
            ..base.clone()
        };
        match mako_bench::run_group(&cfg) {
            Ok(r) => {
                print_group(&r, ceiling.as_ref(), 1, json)?;
                paced.push(r);
            }
            Err(e) => {
                print_error(p, &label, &e.to_string(), json)?;
                failures.push(format!("{p} paced ({label}): {e}"));
            }
        }
    }
    print_ratio(&paced, &label, "paced", json)
}

fn print_ceiling(c: &CeilingReport, json: bool) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(c)?;
        v["kind"] = "ceiling".into();
        println!("{v}");
        return Ok(());
    }
    println!(
        "{:<6} {:<4} {:>7} {:>6} {:>8} log store {} entries/s ({:.1} MB/s, {} entries/write, {} writes in flight, write p50/p99 {:.0}/{:.0} us, {:.0} syncs/s) | transport {} entries/s ({:.1} MB/s, {} entries/message, {} in flight per follower, rtt p50/p99 {:.0}/{:.0} us) => ceiling {} entries/s ({})",
        "CEIL",
        c.net.name(),
        c.entry_bytes,
        c.groups,
        c.durability,
        group(c.log.entries_per_sec as u64),
        c.log.mb_per_sec,
        c.write_batch,
        c.writes_in_flight,
        c.log.write_p50_us,
        c.log.write_p99_us,
        c.log.syncs_per_sec,
        group(c.transport.entries_per_sec as u64),
        c.transport.mb_per_sec,
        c.message_batch,
        c.messages_in_flight,
        c.transport.rtt_p50_us,
        c.transport.rtt_p99_us,
        group(c.entries_per_sec as u64),
        c.bound
    );
    Ok(())
}

fn print_group(
    r: &GroupBenchReport,
    ceiling: Option<&CeilingReport>,
    runs: usize,
    json: bool,
) -> anyhow::Result<()> {
    let pct = ceiling
        .filter(|c| c.entries_per_sec > 0.0)
        .map(|c| 100.0 * r.entries_per_sec / c.entries_per_sec);
    if json {
        let mut v = serde_json::to_value(r)?;
        v["kind"] = "group".into();
        v["median_of"] = runs.into();
        if let Some(c) = ceiling {
            v["ceiling_entries_per_sec"] = c.entries_per_sec.into();
            v["ceiling_bound"] = c.bound.into();
        }
        if let Some(p) = pct {
            v["pct_of_ceiling"] = p.into();
        }
        println!("{v}");
        return Ok(());
    }
    println!(
        "{:<6} {:<4} {:>7} {:>6} {:>8} {:>10} {:>11} {:>8.1} {:>9.0} {:>9.0} {:>9.0} {:>8.0} {:>7.1} {:>6} {:>9} {:>5}",
        r.protocol,
        r.net.name(),
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
        r.entries_per_log_write,
        pct.map_or("-".to_owned(), |p| format!("{p:.0}%")),
        format!("{}/{}/{}", r.gaps, r.duplicates, r.reordered),
        r.leader_changes
    );
    Ok(())
}

fn print_error(p: Protocol, label: &str, e: &str, json: bool) -> anyhow::Result<()> {
    if json {
        let v =
            serde_json::json!({"kind": "error", "protocol": p.name(), "config": label, "error": e});
        println!("{v}");
    } else {
        println!("{:<6} FAILED ({label}): {e}", p.name());
    }
    Ok(())
}

/// Raft over Paxos figures, when both ran.
fn print_ratio(
    runs: &[GroupBenchReport],
    label: &str,
    kind: &str,
    json: bool,
) -> anyhow::Result<()> {
    let find = |p: Protocol| runs.iter().find(|r| r.protocol == p.name());
    let (Some(raft), Some(paxos)) = (find(Protocol::Raft), find(Protocol::Paxos)) else {
        return Ok(());
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let tput = ratio(raft.entries_per_sec, paxos.entries_per_sec);
    let (p50, p99) = (
        ratio(raft.p50_us, paxos.p50_us),
        ratio(raft.p99_us, paxos.p99_us),
    );
    let within = (0.9..=1.1).contains(&tput);
    if json {
        let v = serde_json::json!({
            "kind": "ratio", "run": kind, "config": label,
            "raft_over_paxos_entries_per_sec": tput,
            "raft_over_paxos_p50": p50, "raft_over_paxos_p99": p99,
            "within_90_110_pct": within,
        });
        println!("{v}");
    } else {
        println!(
            "  raft/paxos {kind} ({label}): entries/s {:.2} ({}within 90-110%), p50 {:.2}, p99 {:.2}",
            tput,
            if within { "" } else { "NOT " },
            p50,
            p99
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_picks_the_middle_run() {
        let runs = [3.0, 1.0, 2.0];
        assert_eq!(median_by(&runs, |x| *x), Some(2.0));
        let even = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(median_by(&even, |x| *x), Some(2.0));
        assert_eq!(median_by(&[] as &[f64], |x| *x), None);
    }

    #[test]
    fn bench_raft_refuses_paxos_and_group_defaults_to_both() {
        assert!(protocols(&[Protocol::Paxos], true).is_err());
        assert_eq!(protocols(&[], true).unwrap(), vec![Protocol::Raft]);
        assert_eq!(protocols(&[], false).unwrap(), Protocol::ALL.to_vec());
        assert_eq!(
            protocols(&[Protocol::Paxos, Protocol::Paxos, Protocol::Raft], false).unwrap(),
            vec![Protocol::Paxos, Protocol::Raft]
        );
    }
}
