//! Configs for local test and benchmark deployments, on ports this process owns ([`crate::ports`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `S` shards × `R` replicas on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct LocalTopology {
    /// Shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// `memory`, `buffered` or `fsync`.
    pub durability: String,
    /// Raft election timeout bounds (ms).
    pub election_ms: (u64, u64),
    /// Raft heartbeat (ms).
    pub heartbeat_ms: u64,
    /// Extra YAML appended to the file (e.g. a `security:` block).
    pub extra: String,
    /// Whether each site also gets a `redis_port` (the RESP front end).
    pub redis: bool,
}

impl LocalTopology {
    /// `shards` × `replicas`, fsync, election 300–500 ms, heartbeat 50 ms.
    pub fn new(shards: u32, replicas: u32) -> Self {
        LocalTopology {
            shards,
            replicas,
            durability: "fsync".into(),
            election_ms: (300, 500),
            heartbeat_ms: 50,
            extra: String::new(),
            redis: false,
        }
    }

    /// Writes `dir/deploy.yml` (data under `dir/data`) and returns its path. Its ports are
    /// reserved for this process ([`crate::ports::reserve`]): neither another test nor a
    /// socket bound to any port can take them before the sites bind them.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let per_site = if self.redis { 4 } else { 3 };
        let ports = crate::ports::reserve((self.shards * self.replicas * per_site) as usize)?;
        let mut y = String::new();
        let _ = writeln!(y, "durability: {}", self.durability);
        let _ = writeln!(y, "data_dir: {}", dir.join("data").display());
        let _ = writeln!(
            y,
            "raft:\n  heartbeat_ms: {}\n  election_ms: [{}, {}]",
            self.heartbeat_ms, self.election_ms.0, self.election_ms.1
        );
        let _ = writeln!(y, "hosts:\n  local: {{address: 127.0.0.1}}\nsites:");
        let mut i = 0;
        for s in 0..self.shards {
            for r in 0..self.replicas {
                let redis = if self.redis {
                    format!(", redis_port: {}", ports[i + 3])
                } else {
                    String::new()
                };
                let _ = writeln!(
                    y,
                    "  - {{name: s{s}r{r}, host: local, shard: {s}, replica: {r}, preferred_leader: {}, peer_port: {}, client_port: {}, metrics_port: {}{redis}}}",
                    r == 0,
                    ports[i],
                    ports[i + 1],
                    ports[i + 2]
                );
                i += per_site as usize;
            }
        }
        y.push_str(&self.extra);
        let path = dir.join("deploy.yml");
        std::fs::write(&path, y)?;
        Ok(path)
    }
}
