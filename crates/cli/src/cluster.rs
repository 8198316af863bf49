//! `mako cluster`: every site of a config as a child `mako server` process on this machine,
//! with their log lines prefixed by the site's name.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
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
    let names: Vec<String> = if args.sites.is_empty() {
        cfg.sites.iter().map(|s| s.name.clone()).collect()
    } else {
        for n in &args.sites {
            if cfg.site(n).is_none() {
                anyhow::bail!("--sites: no site {n:?} in the config");
            }
        }
        args.sites.clone()
    };
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGTERM, Arc::clone(&stop)).context("signal handler")?;
    signal_hook::flag::register(SIGINT, Arc::clone(&stop)).context("signal handler")?;
    let exe = std::env::current_exe().context("locating the mako binary")?;
    let mut children: Vec<(String, Child)> = Vec::new();
    let mut pipes: Vec<JoinHandle<()>> = Vec::new();
    for name in &names {
        let mut cmd = Command::new(&exe);
        if let Some(l) = log_level {
            cmd.args(["--log-level", l]);
        }
        cmd.arg("server");
        for f in &args.files {
            cmd.arg("-f").arg(f);
        }
        cmd.args(["--site", name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting site {name}"))?;
        if let Some(out) = child.stdout.take() {
            pipes.push(prefix(name, out, false));
        }
        if let Some(err) = child.stderr.take() {
            pipes.push(prefix(name, err, true));
        }
        children.push((name.clone(), child));
    }
    println!(
        "mako cluster: started {} sites ({}); Ctrl-C stops them",
        children.len(),
        names.join(", ")
    );
    let mut running = children.len();
    let mut reported = vec![false; children.len()];
    while running > 0 && !stop.load(Ordering::Acquire) {
        for (i, (name, child)) in children.iter_mut().enumerate() {
            if reported[i] {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                reported[i] = true;
                running -= 1;
                println!("mako cluster: site {name} exited ({status}); the others keep running");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if running > 0 {
        println!("mako cluster: stopping {running} sites");
        for (i, (_, child)) in children.iter().enumerate() {
            if !reported[i] {
                terminate(child);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (i, (name, child)) in children.iter_mut().enumerate() {
            if reported[i] {
                continue;
            }
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        println!("mako cluster: site {name} stopped ({status})");
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        println!("mako cluster: site {name} did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
    for p in pipes {
        let _ = p.join();
    }
    Ok(())
}

/// Sends SIGTERM (a graceful stop: hand leadership over, flush, exit 0).
fn terminate(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a pid this process spawned and has not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Copies a child's output line by line, prefixed with its site name.
fn prefix(name: &str, from: impl Read + Send + 'static, stderr: bool) -> JoinHandle<()> {
    let name = name.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if stderr {
                let _ = writeln!(std::io::stderr().lock(), "[{name}] {line}");
            } else {
                let _ = writeln!(std::io::stdout().lock(), "[{name}] {line}");
            }
        }
    })
}
