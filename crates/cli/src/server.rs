//! `mako server`: one site of a deployment as a process, until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use mako_config::Config;
use mako_node::Node;
use signal_hook::consts::{SIGINT, SIGTERM};

/// Arguments of `mako server`.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Config files, merged in order (later files override earlier ones).
    #[arg(short = 'f', long = "file", required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The site (replica) this process runs, by name.
    #[arg(long)]
    pub site: String,
    /// Listen for peers here instead of the config's address (which peers keep dialing:
    /// for a proxy or NAT in between).
    #[arg(long, value_name = "ADDR")]
    pub peer_listen: Option<std::net::SocketAddr>,
}

/// Loads the config files (one clear error naming the file and key on failure).
pub fn load(files: &[PathBuf]) -> anyhow::Result<Arc<Config>> {
    Config::load(files)
        .map(Arc::new)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs the site until SIGTERM/SIGINT, then hands leadership over, flushes and exits.
pub fn run(args: &ServerArgs) -> anyhow::Result<()> {
    let cfg = load(&args.files)?;
    let (mut opts, _lock) = mako_node::options(&cfg, &args.site)?;
    if let Some(a) = args.peer_listen {
        opts.peer_listen = a;
    }
    // TPC-C as server-side procedures (`mako bench --workload tpcc`).
    opts.procedures.extend(mako_tpcc::procedures());
    let (name, id, shard) = (opts.name.clone(), opts.spec.id, opts.spec.shard());
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("installing signal handlers")?;
    let node = Node::start(opts).with_context(|| format!("starting site {name}"))?;
    let redis = node
        .redis_addr()
        .map(|a| format!(", redis {a}"))
        .unwrap_or_default();
    println!(
        "mako server: site {name} (node {id}, shard {shard}) ready; peers {}, clients {}{redis}, durability {}",
        node.peer_addr(),
        node.client_addr(),
        cfg.durability
    );
    let stop_progress = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let catch_up = show_catch_up(&node, std::sync::Arc::clone(&stop_progress));
    let handle = signals.handle();
    if let Some(sig) = signals.forever().next() {
        tracing::info!(site = %name, signal = sig, "stopping: handing leadership over and flushing");
        // A second signal during the graceful stop exits at once.
        let impatient = std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                eprintln!("mako server: second signal: exiting without finishing the stop");
                std::process::exit(1);
            }
        });
        node.shutdown(true);
        handle.close();
        let _ = impatient.join();
        println!("mako server: site {name} stopped");
    }
    stop_progress.store(true, std::sync::atomic::Ordering::Release);
    if let Some(h) = catch_up {
        let _ = h.join();
    }
    Ok(())
}

/// On a terminal, a progress bar of the replica catching up with its group's commit index
/// (recovery from its log, or replication from the leader); nothing when stderr is piped.
fn show_catch_up(
    node: &Node,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let site = std::sync::Arc::clone(node.site());
    std::thread::Builder::new()
        .name("catch-up-progress".into())
        .spawn(move || {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "catching up {bar:30} {pos}/{len} log entries ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let started = std::time::Instant::now();
            loop {
                let g = site.group();
                let (applied, commit) = (g.applied_index(), g.commit_index());
                bar.set_length(commit.max(applied));
                bar.set_position(applied);
                // Caught up once the group knows its commit index (a leader is known) and
                // has applied it; give up drawing after a minute without a leader.
                let leader_known = g.leader().is_some();
                if leader_known && applied >= commit {
                    bar.finish_and_clear();
                    break;
                }
                let stopping = stop.load(std::sync::atomic::Ordering::Acquire);
                if stopping
                    || (!leader_known && started.elapsed() > std::time::Duration::from_secs(60))
                {
                    bar.abandon();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
        .ok()
}
