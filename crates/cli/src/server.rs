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
    println!(
        "mako server: site {name} (node {id}, shard {shard}) ready; peers {}, clients {}, durability {}",
        node.peer_addr(),
        node.client_addr(),
        cfg.durability
    );
    if let Some(sig) = signals.forever().next() {
        tracing::info!(site = %name, signal = sig, "stopping: handing leadership over and flushing");
        node.shutdown(true);
        println!("mako server: site {name} stopped");
    }
    Ok(())
}
