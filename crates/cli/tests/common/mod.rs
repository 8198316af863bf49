//! Shared helpers of the process-level deployment tests: a deployment of real `mako server`
//! processes in a temporary directory (their logs printed when a test fails), polling with
//! deadlines, replica convergence.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output as ProcOutput, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mako_client::{Client, ClientConfig};
use mako_config::Config;
use mako_deploy::{Deployment, LocalTopology, Output};

/// The `mako` binary under test.
pub fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mako"))
}

/// Runs `mako` with `args` to completion.
pub fn mako(args: &[&str]) -> ProcOutput {
    Command::new(exe()).args(args).output().expect("mako runs")
}

/// The stdout of a run that must have succeeded (both streams shown if it did not).
pub fn ok(out: &ProcOutput) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A deployment of `mako server` processes with its files in a temporary directory.
pub struct Cluster {
    /// Running sites (dropped first: kills them).
    pub dep: Deployment,
    /// The config files, in order.
    pub files: Vec<PathBuf>,
    /// Per-site logs.
    pub logs: PathBuf,
    /// The directory (removed last).
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Writes `topo` and starts every site, then waits until every shard serves.
    ///
    /// The topology's ports are reserved for this test process (`mako_deploy::ports`), so no
    /// other test or ephemeral socket can take one before its site binds it.
    pub fn start(topo: &LocalTopology) -> Cluster {
        Cluster::boot(Cluster::prepare(topo, None), |_| Vec::new())
    }

    /// Writes `topo` and loads it without starting any site (`log_level` for the servers).
    pub fn prepare(topo: &LocalTopology, log_level: Option<&str>) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = topo.write(dir.path()).expect("config written");
        let logs = dir.path().join("logs");
        let dep = Deployment::prepare(
            exe(),
            std::slice::from_ref(&file),
            Output::Files(logs.clone()),
            log_level,
        )
        .expect("config loads");
        Cluster {
            dep,
            files: vec![file],
            logs,
            dir,
        }
    }

    /// Starts every site with `args(site)` appended, then waits until every shard serves.
    pub fn boot(mut c: Cluster, args: impl Fn(&str) -> Vec<String>) -> Cluster {
        let names: Vec<String> = c.cfg().sites.iter().map(|s| s.name.clone()).collect();
        for n in &names {
            c.dep.set_site_args(n, args(n));
            c.dep.restart(n).expect("site starts");
        }
        if let Err(e) = c.dep.wait_ready(Duration::from_secs(60)) {
            panic!("deployment not ready: {e}\n{}", c.all_logs());
        }
        c
    }

    /// The config.
    pub fn cfg(&self) -> Arc<Config> {
        Arc::clone(self.dep.config())
    }

    /// A client of the whole deployment.
    pub fn client(&self) -> Client {
        self.dep.client().expect("client config")
    }

    /// A client that knows only the sites named (so it cannot be redirected elsewhere).
    pub fn client_of(&self, sites: &[&str], leader_wait: Duration, attempts: u32) -> Client {
        let mut cc = ClientConfig::from_config(self.dep.config()).expect("client config");
        cc.sites.retain(|s| sites.contains(&s.name.as_str()));
        cc.leader_wait = leader_wait;
        cc.attempts = attempts;
        Client::new(cc)
    }

    /// Site `name`'s log so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Every site's log, each under a header.
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        for s in &self.cfg().sites {
            out.push_str(&format!("===== {} =====\n{}", s.name, self.log(&s.name)));
        }
        out
    }

    /// `mako ARGS -f <config files>...` with `stdin`, waited for.
    pub fn mako(&self, args: &[&str], stdin: &str) -> ProcOutput {
        mako_with(&self.files, args, stdin)
    }

    /// Waits until every running replica of `shard` has the same digest of `table`
    /// (rows and hash) and the same applied index; returns `(rows, hash)`.
    pub fn converge(&mut self, shard: u32, table: &str, timeout: Duration) -> (u64, u64) {
        let names: Vec<String> = self
            .cfg()
            .shard_sites(shard)
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let running = self.dep.running();
        let names: Vec<String> = names.into_iter().filter(|n| running.contains(n)).collect();
        let mut c = self.client();
        let mut last = Vec::new();
        let r = poll(timeout, || {
            last = names
                .iter()
                .map(|n| (n.clone(), c.digest(n, table).map_err(|e| e.to_string())))
                .collect::<Vec<_>>();
            let ds: Vec<(u64, u64, u64)> = last
                .iter()
                .filter_map(|(_, d)| d.as_ref().ok().copied())
                .collect();
            (ds.len() == names.len() && ds.windows(2).all(|w| w[0] == w[1]))
                .then(|| (ds[0].0, ds[0].1))
        });
        match r {
            Some(d) => d,
            None => panic!(
                "shard {shard}'s replicas did not converge within {timeout:?}: {last:?}\n{}",
                self.all_logs()
            ),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- server logs -----\n{}", self.all_logs());
        }
    }
}

/// `mako ARGS` with `-f FILE` for each of `files` inserted after the subcommand path.
pub fn mako_with(files: &[PathBuf], args: &[&str], stdin: &str) -> ProcOutput {
    let mut cmd = mako_cmd(files, args);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mako runs");
    if let Some(mut i) = child.stdin.take() {
        use std::io::Write;
        let _ = i.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("mako finishes")
}

/// The command `mako SUB -f FILES... REST` where `args = [SUB, REST...]`.
pub fn mako_cmd(files: &[PathBuf], args: &[&str]) -> Command {
    let mut cmd = Command::new(exe());
    cmd.env_remove("RUST_LOG");
    cmd.arg(args[0]);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    cmd.args(&args[1..]);
    cmd
}

/// Stdout and stderr of a finished process, for messages.
pub fn show(o: &ProcOutput) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Calls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The site of `shard` that is a serving leader, asking only `among`.
pub fn serving_leader(c: &mut Client, among: &[String]) -> Option<(String, u64)> {
    among.iter().find_map(|n| match c.status(n) {
        Ok(st) if st.role == "leader" && st.serving => Some((n.clone(), st.epoch)),
        _ => None,
    })
}
