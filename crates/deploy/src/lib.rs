//! Runs the sites of a deployment as local `mako server` child processes.
//!
//! [`Deployment::start`] loads the config files, starts one `mako server -f ... --site NAME`
//! per site (or the ones asked for), and forwards each child's output line by line to a
//! [`Output`] sink, prefixed with the site's name. Sites can then be stopped gracefully
//! ([`Deployment::terminate`], SIGTERM: hand leadership over, flush, exit 0), killed
//! ([`Deployment::kill`], SIGKILL) and started again from their data directory
//! ([`Deployment::restart`]). [`Deployment::leader`] asks the sites which one leads a shard.
//! `mako cluster`, `mako check --kill-leaders` and the process-level tests use it.
//!
//! [`LocalTopology`] writes a config for `S` shards × `R` replicas on 127.0.0.1, for tests
//! and benchmarks, with ports [`ports::reserve`] keeps for this process until it exits.

pub mod ports;
pub mod proxy;
mod topology;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mako_client::{Client, ClientConfig};
use mako_config::Config;

pub use proxy::PeerProxy;
pub use topology::LocalTopology;

/// Where child output goes.
#[derive(Clone)]
pub enum Output {
    /// This process's stdout/stderr, prefixed `[site] `.
    Inherit,
    /// One file per site (`<dir>/<site>.log`, appended across restarts).
    Files(PathBuf),
    /// Dropped.
    Null,
}

/// Why a deployment action failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The config did not load.
    #[error("{0}")]
    Config(#[from] mako_config::ConfigError),
    /// No site of that name.
    #[error("no site {0:?} in the config")]
    NoSuchSite(String),
    /// The site's process is already running.
    #[error("site {0} is already running")]
    Running(String),
    /// A process could not be started.
    #[error("cannot start site {site}: {source}")]
    Spawn {
        /// The site.
        site: String,
        /// Why.
        source: std::io::Error,
    },
    /// The client could not be configured.
    #[error("client: {0}")]
    Client(#[from] mako_client::ClientError),
    /// Sites did not become ready in time.
    #[error("{0}")]
    Timeout(String),
}

/// One site's process.
struct Proc {
    child: Child,
    pipes: Vec<JoinHandle<()>>,
}

/// A deployment's sites running as child processes of this one.
pub struct Deployment {
    exe: PathBuf,
    files: Vec<PathBuf>,
    cfg: Arc<Config>,
    output: Output,
    log_level: Option<String>,
    procs: BTreeMap<String, Proc>,
    /// Extra arguments per site, appended to its `mako server` command line.
    site_args: BTreeMap<String, Vec<String>>,
}

impl Deployment {
    /// Loads `files` and starts `sites` (every site when empty) with the `mako` binary `exe`.
    pub fn start(
        exe: &Path,
        files: &[PathBuf],
        sites: &[String],
        output: Output,
        log_level: Option<&str>,
    ) -> Result<Deployment, DeployError> {
        let mut d = Deployment::prepare(exe, files, output, log_level)?;
        let names: Vec<String> = if sites.is_empty() {
            d.cfg.sites.iter().map(|s| s.name.clone()).collect()
        } else {
            sites.to_vec()
        };
        for n in &names {
            if let Err(e) = d.restart(n) {
                d.shutdown(Duration::from_secs(5));
                return Err(e);
            }
        }
        Ok(d)
    }

    /// Loads `files` and starts no site yet: set per-site arguments with
    /// [`Deployment::set_site_args`], then start sites with [`Deployment::restart`].
    pub fn prepare(
        exe: &Path,
        files: &[PathBuf],
        output: Output,
        log_level: Option<&str>,
    ) -> Result<Deployment, DeployError> {
        let cfg = Arc::new(Config::load(files)?);
        Ok(Deployment {
            exe: exe.to_path_buf(),
            files: files.to_vec(),
            cfg,
            output,
            log_level: log_level.map(str::to_string),
            procs: BTreeMap::new(),
            site_args: BTreeMap::new(),
        })
    }

    /// Extra arguments for site `name`'s `mako server` (e.g. `--peer-listen ADDR`, or
    /// `-f FILE` to override the config for that site only), used from its next start.
    pub fn set_site_args(&mut self, name: &str, args: Vec<String>) {
        self.site_args.insert(name.to_string(), args);
    }

    /// The file site `name`'s output goes to (with [`Output::Files`]).
    pub fn log_file(&self, name: &str) -> Option<PathBuf> {
        match &self.output {
            Output::Files(dir) => Some(dir.join(format!("{name}.log"))),
            _ => None,
        }
    }

    /// The process id of site `name`, while it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs.get(name).map(|p| p.child.id())
    }

    /// The loaded config.
    pub fn config(&self) -> &Arc<Config> {
        &self.cfg
    }

    /// Names of the sites whose process runs.
    pub fn running(&mut self) -> Vec<String> {
        self.reap();
        self.procs.keys().cloned().collect()
    }

    /// A client of the deployment.
    pub fn client(&self) -> Result<Client, DeployError> {
        Ok(Client::new(ClientConfig::from_config(&self.cfg)?))
    }

    /// Starts site `name` (again), from its data directory.
    pub fn restart(&mut self, name: &str) -> Result<(), DeployError> {
        self.reap();
        if self.cfg.site(name).is_none() {
            return Err(DeployError::NoSuchSite(name.into()));
        }
        if self.procs.contains_key(name) {
            return Err(DeployError::Running(name.into()));
        }
        let mut cmd = Command::new(&self.exe);
        if let Some(l) = &self.log_level {
            cmd.args(["--log-level", l]);
        }
        cmd.arg("server");
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        cmd.args(["--site", name]).stdin(Stdio::null());
        if let Some(extra) = self.site_args.get(name) {
            cmd.args(extra);
        }
        let (out, err) = match &self.output {
            Output::Null => (Stdio::null(), Stdio::null()),
            _ => (Stdio::piped(), Stdio::piped()),
        };
        cmd.stdout(out).stderr(err);
        let mut child = cmd.spawn().map_err(|source| DeployError::Spawn {
            site: name.into(),
            source,
        })?;
        let mut pipes = Vec::new();
        if let Some(o) = child.stdout.take() {
            pipes.push(forward(name, o, &self.output, false));
        }
        if let Some(e) = child.stderr.take() {
            pipes.push(forward(name, e, &self.output, true));
        }
        self.procs.insert(name.into(), Proc { child, pipes });
        Ok(())
    }

    /// Kills site `name` with SIGKILL and reaps it; `false` if it was not running.
    pub fn kill(&mut self, name: &str) -> bool {
        let Some(mut p) = self.procs.remove(name) else {
            return false;
        };
        let _ = p.child.kill();
        let _ = p.child.wait();
        for h in p.pipes {
            let _ = h.join();
        }
        true
    }

    /// Sends SIGTERM to site `name` and waits up to `timeout` for it to exit (then kills it);
    /// the exit status, if it exited by itself.
    pub fn terminate(&mut self, name: &str, timeout: Duration) -> Option<ExitStatus> {
        let mut p = self.procs.remove(name)?;
        signal(&p.child, libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        let status = loop {
            match p.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break None;
                }
            }
        };
        for h in p.pipes {
            let _ = h.join();
        }
        status
    }

    /// Sites whose process exited by itself since the last call, with their status.
    pub fn reap(&mut self) -> Vec<(String, ExitStatus)> {
        let mut gone = Vec::new();
        for (name, p) in &mut self.procs {
            if let Ok(Some(s)) = p.child.try_wait() {
                gone.push((name.clone(), s));
            }
        }
        for (name, _) in &gone {
            if let Some(p) = self.procs.remove(name) {
                for h in p.pipes {
                    let _ = h.join();
                }
            }
        }
        gone
    }

    /// The site that leads `shard` and serves (asked of the running sites), if any.
    pub fn leader(&mut self, shard: u32) -> Option<String> {
        let mut c = self.status_client();
        for s in self.cfg.shard_sites(shard) {
            if !self.procs.contains_key(&s.name) {
                continue;
            }
            if let Ok(st) = c.status(&s.name)
                && st.role == "leader"
                && st.serving
            {
                return Some(s.name.clone());
            }
        }
        None
    }

    /// Waits until every shard has a serving leader and every running site answers.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), DeployError> {
        let deadline = Instant::now() + timeout;
        loop {
            let missing: Vec<u32> = (0..self.cfg.shards())
                .filter(|&s| self.leader(s).is_none())
                .collect();
            let mut c = self.status_client();
            let silent: Vec<String> = self
                .procs
                .keys()
                .filter(|n| c.status(n).is_err())
                .cloned()
                .collect();
            if missing.is_empty() && silent.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DeployError::Timeout(format!(
                    "after {timeout:?}: shards without a serving leader {missing:?}, sites not answering {silent:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A client with short timeouts for status calls.
    fn status_client(&self) -> Client {
        let mut cc =
            ClientConfig::from_config(&self.cfg).unwrap_or_else(|_| ClientConfig::new(Vec::new()));
        cc.connect_timeout = Duration::from_millis(300);
        cc.reply_timeout = Duration::from_secs(2);
        Client::new(cc)
    }

    /// Stops every site (SIGTERM, then SIGKILL after `timeout`).
    pub fn shutdown(&mut self, timeout: Duration) {
        let names: Vec<String> = self.procs.keys().cloned().collect();
        for n in &names {
            if let Some(p) = self.procs.get(n) {
                signal(&p.child, libc::SIGTERM);
            }
        }
        for n in names {
            self.terminate(&n, timeout);
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // Never leave servers behind (tests that fail midway included).
        let names: Vec<String> = self.procs.keys().cloned().collect();
        for n in names {
            self.kill(&n);
        }
    }
}

fn signal(child: &Child, sig: i32) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on a child this process spawned and has not reaped.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Copies a child's output line by line to `output`, prefixed with the site's name.
fn forward(
    site: &str,
    from: impl Read + Send + 'static,
    output: &Output,
    stderr: bool,
) -> JoinHandle<()> {
    let site = site.to_string();
    let file = match output {
        Output::Files(dir) => {
            let _ = std::fs::create_dir_all(dir);
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(dir.join(format!("{site}.log")))
                .ok()
        }
        _ => None,
    };
    std::thread::spawn(move || {
        let mut file = file;
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            match &mut file {
                Some(f) => {
                    let _ = writeln!(f, "{line}");
                }
                None if stderr => {
                    let _ = writeln!(std::io::stderr().lock(), "[{site}] {line}");
                }
                None => {
                    let _ = writeln!(std::io::stdout().lock(), "[{site}] {line}");
                }
            }
        }
    })
}
