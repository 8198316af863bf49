//! `mako cluster`: every site of a config as a child `mako server` process on this machine,
//! with their log lines prefixed by the site's name.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use mako_deploy::{Deployment, Output};
use signal_hook::consts::{SIGINT, SIGTERM};

/// Arguments of `mako cluster`.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Config files, merged in order (later files override earlier ones).
    #[arg(short = 'f', long = "file", required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Only these sites (by name; default: every site of the config).
    #[arg(long, value_delimiter = ',')]
    pub sites: Vec<String>,
}

/// Starts every site and supervises them until Ctrl-C or SIGTERM (then stops them all) or
/// until every child has exited. A child that exits or is killed is reported; the others
/// keep running.
pub fn run(args: &ClusterArgs, log_level: Option<&str>) -> anyhow::Result<()> {
    let cfg = crate::server::load(&args.files)?;
    for n in &args.sites {
        if cfg.site(n).is_none() {
            anyhow::bail!("--sites: no site {n:?} in the config");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGTERM, Arc::clone(&stop)).context("signal handler")?;
    signal_hook::flag::register(SIGINT, Arc::clone(&stop)).context("signal handler")?;
    let exe = std::env::current_exe().context("locating the mako binary")?;
    let mut d = Deployment::start(&exe, &args.files, &args.sites, Output::Inherit, log_level)?;
    let names = d.running();
    println!(
        "mako cluster: started {} sites ({}); Ctrl-C stops them",
        names.len(),
        names.join(", ")
    );
    while !stop.load(Ordering::Acquire) {
        for (name, status) in d.reap() {
            println!("mako cluster: site {name} exited ({status}); the others keep running");
        }
        if d.running().is_empty() {
            println!("mako cluster: every site has exited");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let names = d.running();
    println!("mako cluster: stopping {} sites", names.len());
    for n in names {
        match d.terminate(&n, Duration::from_secs(15)) {
            Some(status) => println!("mako cluster: site {n} stopped ({status})"),
            None => println!("mako cluster: site {n} did not stop in time; killed"),
        }
    }
    Ok(())
}
