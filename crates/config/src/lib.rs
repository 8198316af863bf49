//! YAML deployment configuration of mako-rs: loads and merges `-f` files, validates them, and
//! answers where each site listens and which shard holds a key.
//!
//! # Files and merging
//!
//! `mako server -f config/mako_raft.yml -f config/1c1s3r.yml --site s0r1` loads every file in
//! order; later files override earlier ones. Mappings merge key by key (deep merge); any other
//! value — scalars *and sequences* such as `sites` — replaces the earlier one whole. A key set to
//! null (`~`) in a later file is removed, so it goes back to its default. YAML anchors and `<<`
//! merge keys work inside one file.
//!
//! Every error is one line naming the file and the key path, e.g.
//! `config/1c1s3r.yml: sites[2].shard: expected a non-negative integer, found string "x"`. A rule
//! broken after merging names the last file that set the key (when no file set it, every file).
//! Unknown keys are rejected everywhere. Relative paths (`data_dir`, secret and TLS files) are
//! taken relative to the working directory of the process, not to the config file.
//!
//! # Keys (defaults in brackets)
//!
//! - `replication`: `raft` | `paxos` \[`raft`\]. `paxos` loads and validates; the server refuses
//!   to start with it until a Paxos group exists.
//! - `durability`: `memory` | `buffered` | `fsync` \[`fsync`\] (see [`Durability`]). `memory`
//!   survives the loss of a minority of replicas only.
//! - `data_dir`: base directory \[`./data`\]; a site keeps its files in `<data_dir>/<site name>`
//!   unless it sets its own `data_dir`.
//! - `hosts`: mapping of host name to `{address: IP}`; sites name their host. Addresses are IP
//!   literals (no DNS). Two names may share an address (several "machines" on one box).
//! - `sites`: the replicas, a sequence of mappings:
//!   - `name` (unique; letters, digits, `-`, `_`, `.`), `host` (a key of `hosts`),
//!   - `shard` (shards are numbered `0..S` without gaps), `replica` (`0..R` in every shard, the
//!     same R everywhere),
//!   - `preferred_leader` \[false\] (at most one per shard),
//!   - `peer_port` (replication and coordination between sites), `client_port` (clients),
//!     `metrics_port` (optional Prometheus endpoint), `redis_port` (optional Redis-compatible RESP
//!     front end; off unless set), all non-zero; every (address, port) pair is
//!     unique across all sites and ports, and `0.0.0.0` clashes with every address,
//!   - `data_dir` (optional override of `<data_dir>/<name>`).
//!
//!   A site's node id is `shard * R + replica + 1` ([`Config::node_id`]).
//! - `meta`: `{members: [site names]}` — the sites of the `meta` group (distinct, existing, an
//!   odd number). Optional: absent, [`Config::meta_members`] is empty and the server picks.
//! - `raft`: `heartbeat_ms` \[50\], `election_ms: [min, max]` \[\[400, 700\]\]; `min < max` and
//!   `min >= 2 * heartbeat_ms` (what the Raft group itself requires).
//! - `batch`: commit-log batching: `max_pieces` \[100\], `max_bytes` \[1048576\], `linger_us`
//!   \[1000\], `group_commit` \[true\]. A batch closes when full or `linger_us` after its
//!   first piece (0: every piece at once); with `group_commit` also at once when its stream
//!   has nothing in flight, and when the stream's entry in flight commits (lower latency;
//!   more, smaller log entries, which costs CPU when the CPU is the limit).
//! - `workers`: coordinator workers per shard \[2\], at least 1.
//! - `timeouts`: `release_ms` \[5000\] (a commit waits this long for release before answering
//!   `Unknown`), `request_ms` \[5000\] (a coordinator's wait for a reply); both positive.
//! - `security` (all optional):
//!   - `cluster_secret` (inline string) or `cluster_secret_file` (path) — not both; authenticates
//!     peers (challenge-response, never sent),
//!   - `client_token` or `client_token_file` — not both; authenticates clients,
//!   - `tls: {cert, key, ca, server_name}` — PEM files that must exist; enables TLS for peers
//!     and clients; every site's certificate names `server_name` \[`mako`\].
//!
//!   Secret files are read at load; trailing line breaks and spaces are dropped; an empty secret
//!   is an error.
//! - `client`: limits of interactive client transactions and connections: `idle_timeout_ms`
//!   \[30000\], `max_open_per_connection` \[16\], `max_ops_per_txn` \[10000\], `max_connections`
//!   \[1024\], `max_scan_rows` \[100000\]; all positive.
//! - `tables`: mapping of table name to `{partition: hash}` (the default) or
//!   `{partition: range, splits: ["g", "p"]}` — `S - 1` strictly ascending split points given as
//!   strings (their UTF-8 bytes; shard `i` holds keys in `[splits[i-1], splits[i])`). The table
//!   [`DEFAULT_TABLE`] (`kv`) always exists, hash partitioned unless listed.
//!
//! Hash partitioning places a key on shard [`key_hash`]`(key) % S`, a stable hash (FNV-1a 64
//! followed by the splitmix64 finaliser) that never changes between releases.

mod error;
mod merge;
mod partition;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

pub use error::ConfigError;
pub use mako_logstore::Durability;
pub use partition::{Partition, TableSpec, fnv1a64, key_hash, shard_of_hash, splitmix64_mix};

use merge::{KeyPath, Merged};

/// The table the CLI and the Redis front use; always present.
pub const DEFAULT_TABLE: &str = "kv";

/// The replication protocol of every group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Replication {
    /// Raft.
    #[default]
    Raft,
    /// Multi-Paxos.
    Paxos,
}

/// A machine sites run on.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// The IP address its sites listen on and peers dial.
    pub address: IpAddr,
}

/// One replica of one shard: where it runs and listens.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Unique name (also its directory under `data_dir`).
    pub name: String,
    /// Key into `hosts`.
    pub host: String,
    /// The shard it replicates (`0..S`).
    pub shard: u32,
    /// Its index among the shard's replicas (`0..R`).
    pub replica: u32,
    /// Whether it should lead its shard when healthy.
    #[serde(default)]
    pub preferred_leader: bool,
    /// Port for other sites (replication, coordination).
    pub peer_port: u16,
    /// Port for clients.
    pub client_port: u16,
    /// Port of the Prometheus metrics endpoint, if any.
    #[serde(default)]
    pub metrics_port: Option<u16>,
    /// Port of the Redis-compatible (RESP) front end, if any.
    #[serde(default)]
    pub redis_port: Option<u16>,
    /// Its data directory, overriding `<data_dir>/<name>`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

/// Members of the `meta` group.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaSpec {
    /// Site names, an odd number of distinct existing sites.
    pub members: Vec<String>,
}

/// Raft timing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSpec {
    /// Leader heartbeat period (ms).
    pub heartbeat_ms: u64,
    /// Randomized election timeout bounds `[min, max]` (ms).
    #[serde(deserialize_with = "min_max")]
    pub election_ms: (u64, u64),
}

impl Default for RaftSpec {
    fn default() -> Self {
        RaftSpec {
            heartbeat_ms: 50,
            election_ms: (400, 700),
        }
    }
}

/// Commit-log batching.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSpec {
    /// Pieces per batch.
    pub max_pieces: usize,
    /// Encoded bytes per batch.
    pub max_bytes: usize,
    /// Longest time a batch stays open after its first piece (µs) while its stream has an
    /// entry in flight (0: no batching).
    pub linger_us: u64,
    /// Group commit: a batch closes at once while its stream has nothing in flight, and
    /// when the stream's entry in flight commits (false: only when full or at the linger).
    pub group_commit: bool,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            max_pieces: 100,
            max_bytes: 1 << 20,
            linger_us: 1000,
            group_commit: true,
        }
    }
}

/// Timeouts of commits and requests.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// How long a commit waits for release before answering `Unknown` (ms).
    pub release_ms: u64,
    /// How long a coordinator waits for a reply (ms).
    pub request_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            release_ms: 5000,
            request_ms: 5000,
        }
    }
}

/// Limits the server puts on client connections and interactive transactions.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientLimits {
    /// An open transaction idle this long is aborted (ms).
    pub idle_timeout_ms: u64,
    /// Most transactions open at once on one connection.
    pub max_open_per_connection: u32,
    /// Most operations in one transaction.
    pub max_ops_per_txn: u32,
    /// Most client connections a site accepts at once.
    pub max_connections: u32,
    /// Most rows one scan may return (a larger one is refused; page instead).
    pub max_scan_rows: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            idle_timeout_ms: 30_000,
            max_open_per_connection: 16,
            max_ops_per_txn: 10_000,
            max_connections: 1024,
            max_scan_rows: 100_000,
        }
    }
}

/// Secret bytes; `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// TLS material (PEM files).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// This site's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signs every site's (and, if used, client's) certificate.
    pub ca: PathBuf,
    /// The name every site's certificate carries (as a subject alternative name), checked
    /// by whoever connects \[`mako`\].
    #[serde(default = "default_server_name")]
    pub server_name: String,
}

fn default_server_name() -> String {
    "mako".into()
}

/// Authentication and encryption settings, secrets already read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    /// Authenticates peers to each other (`None`: peers are not authenticated).
    pub cluster_secret: Option<Secret>,
    /// Authenticates clients (`None`: clients are not authenticated).
    pub client_token: Option<Secret>,
    /// TLS for peers and clients (`None`: plain TCP).
    pub tls: Option<TlsSpec>,
}

/// The `security` mapping as written.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawSecurity {
    cluster_secret: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    client_token: Option<String>,
    client_token_file: Option<PathBuf>,
    tls: Option<TlsSpec>,
}

/// Partition kinds as written.
#[derive(Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawPartition {
    #[default]
    Hash,
    Range,
}

/// One `tables` entry as written.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTable {
    partition: RawPartition,
    splits: Option<Vec<String>>,
}

/// The whole document as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    replication: Replication,
    #[serde(default, deserialize_with = "durability")]
    durability: Durability,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    hosts: BTreeMap<String, HostSpec>,
    #[serde(default)]
    sites: Vec<SiteSpec>,
    #[serde(default)]
    meta: Option<MetaSpec>,
    #[serde(default)]
    raft: RaftSpec,
    #[serde(default)]
    batch: BatchSpec,
    #[serde(default)]
    workers: Option<u32>,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    client: ClientLimits,
    #[serde(default)]
    tables: BTreeMap<String, RawTable>,
}

/// Parses a durability name with the log store's own parser.
fn durability<'de, D: Deserializer<'de>>(d: D) -> Result<Durability, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// Parses `[min, max]`: a sequence of exactly two integers.
fn min_max<'de, D: Deserializer<'de>>(d: D) -> Result<(u64, u64), D::Error> {
    match Vec::<u64>::deserialize(d)?[..] {
        [lo, hi] => Ok((lo, hi)),
        ref v => Err(serde::de::Error::custom(format!(
            "expected [min, max] (two integers), found {} value(s)",
            v.len()
        ))),
    }
}

/// The default base data directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// The default number of coordinator workers per shard.
pub const DEFAULT_WORKERS: u32 = 2;

/// A whole deployment, merged and validated. Fields are read-only by convention: a `Config`
/// built or changed by hand skips validation.
#[derive(Clone, Debug)]
pub struct Config {
    /// The files (names) it was loaded from, in merge order.
    pub sources: Vec<String>,
    /// Replication protocol.
    pub replication: Replication,
    /// Durability of every replica's log.
    pub durability: Durability,
    /// Base data directory.
    pub data_dir: PathBuf,
    /// Hosts by name.
    pub hosts: BTreeMap<String, HostSpec>,
    /// Every site, in config order.
    pub sites: Vec<SiteSpec>,
    /// The `meta` group's members as configured (`None`: the server chooses).
    pub meta: Option<MetaSpec>,
    /// Raft timing.
    pub raft: RaftSpec,
    /// Commit-log batching.
    pub batch: BatchSpec,
    /// Coordinator workers per shard.
    pub workers: u32,
    /// Commit and request timeouts.
    pub timeouts: Timeouts,
    /// Authentication and TLS.
    pub security: Security,
    /// Client connection and transaction limits.
    pub client: ClientLimits,
    /// Tables by name; always holds [`DEFAULT_TABLE`].
    pub tables: BTreeMap<String, TableSpec>,
    shards: u32,
    replicas: u32,
}

impl Config {
    /// Loads, merges (later files override earlier ones, deep merge of mappings; sequences
    /// replaced whole) and validates.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Config, ConfigError> {
        let mut docs = Vec::with_capacity(paths.len());
        for p in paths {
            let p = p.as_ref();
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?;
            docs.push((p.display().to_string(), text));
        }
        let refs: Vec<(&str, &str)> = docs.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        Config::from_yaml_strs(&refs)
    }

    /// Like [`Config::load`], from `(name used in errors, YAML text)` pairs.
    pub fn from_yaml_strs(docs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        if docs.is_empty() {
            return Err(ConfigError::NoFiles);
        }
        let mut merged = Merged::default();
        for (name, text) in docs {
            merged.add(name, text)?;
        }
        let de = serde_norway::Value::Mapping(merged.value.clone());
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = KeyPath::from_serde(e.path());
            ConfigError::Invalid {
                file: merged.blame(&key),
                key: key.to_string(),
                message: error::humanize(&e.inner().to_string()),
            }
        })?;
        Builder { merged: &merged }.build(raw)
    }

    /// Number of shards `S`.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Replicas per shard `R` (equal in every shard).
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// The site named `name`.
    pub fn site(&self, name: &str) -> Option<&SiteSpec> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// The site named `name`, or an error naming the files and the sites they define
    /// (for `--site NAME`).
    pub fn require_site(&self, name: &str) -> Result<&SiteSpec, ConfigError> {
        self.site(name).ok_or_else(|| ConfigError::UnknownSite {
            name: name.to_owned(),
            files: self.sources.join(" + "),
            known: self
                .sites
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The sites of `shard`, by replica index.
    pub fn shard_sites(&self, shard: u32) -> Vec<&SiteSpec> {
        let mut v: Vec<&SiteSpec> = self.sites.iter().filter(|s| s.shard == shard).collect();
        v.sort_by_key(|s| s.replica);
        v
    }

    /// The site with node id `id`.
    pub fn site_by_node_id(&self, id: u64) -> Option<&SiteSpec> {
        self.sites.iter().find(|s| self.node_id(s) == id)
    }

    /// The site's node id: `shard * replicas + replica + 1` (the in-process cluster's numbering).
    pub fn node_id(&self, site: &SiteSpec) -> u64 {
        u64::from(site.shard) * u64::from(self.replicas) + u64::from(site.replica) + 1
    }

    /// The preferred leader of `shard`, if one is configured.
    pub fn preferred_leader(&self, shard: u32) -> Option<&SiteSpec> {
        self.sites
            .iter()
            .find(|s| s.shard == shard && s.preferred_leader)
    }

    /// The IP address of the site's host.
    pub fn host_ip(&self, site: &SiteSpec) -> IpAddr {
        // Validation guarantees the host exists; a hand-built config falls back to loopback.
        self.hosts
            .get(&site.host)
            .map(|h| h.address)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }

    /// Where the site listens for (and peers dial) peer connections.
    pub fn peer_addr(&self, site: &SiteSpec) -> SocketAddr {
        SocketAddr::new(self.host_ip(site), site.peer_port)
    }

    /// Where the site listens for clients.
    pub fn client_addr(&self, site: &SiteSpec) -> SocketAddr {
        SocketAddr::new(self.host_ip(site), site.client_port)
    }

    /// Where the site serves metrics, if it does.
    pub fn metrics_addr(&self, site: &SiteSpec) -> Option<SocketAddr> {
        site.metrics_port
            .map(|p| SocketAddr::new(self.host_ip(site), p))
    }

    /// Where the site serves Redis clients (RESP), if it does.
    pub fn redis_addr(&self, site: &SiteSpec) -> Option<SocketAddr> {
        site.redis_port
            .map(|p| SocketAddr::new(self.host_ip(site), p))
    }

    /// The site's data directory: its override, else `<data_dir>/<name>`.
    pub fn site_data_dir(&self, site: &SiteSpec) -> PathBuf {
        site.data_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join(&site.name))
    }

    /// Node ids of the `meta` group's members named in the config (empty: not configured).
    pub fn meta_members(&self) -> Vec<u64> {
        self.meta
            .iter()
            .flat_map(|m| &m.members)
            .filter_map(|n| self.site(n))
            .map(|s| self.node_id(s))
            .collect()
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&TableSpec> {
        self.tables.get(name)
    }

    /// The shard that holds `key` of `table` (`None`: unknown table).
    pub fn shard_of(&self, table: &str, key: &[u8]) -> Option<u32> {
        self.table(table)
            .map(|t| t.partition.shard_of(key, self.shards))
    }
}

/// Turns the deserialized document into a validated [`Config`], naming files in errors.
struct Builder<'a> {
    merged: &'a Merged,
}

impl Builder<'_> {
    /// An error about `key`, blamed on the last file that set it.
    fn err(&self, key: &KeyPath, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.merged.blame(key),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let sites_key = KeyPath::key("sites");
        let site_key = |i: usize| sites_key.idx(i);
        if raw.sites.is_empty() {
            return Err(self.err(&sites_key, "at least one site is required"));
        }
        // Names and hosts.
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for (i, s) in raw.sites.iter().enumerate() {
            let k = site_key(i).at("name");
            if !valid_name(&s.name) {
                return Err(self.err(
                    &k,
                    format!(
                        "invalid site name {:?} (use letters, digits, '-', '_', '.')",
                        s.name
                    ),
                ));
            }
            if let Some(j) = by_name.insert(&s.name, i) {
                return Err(self.err(
                    &k,
                    format!("duplicate site name {:?} (also sites[{j}])", s.name),
                ));
            }
            if !raw.hosts.contains_key(&s.host) {
                let known: Vec<&str> = raw.hosts.keys().map(String::as_str).collect();
                return Err(self.err(
                    &site_key(i).at("host"),
                    format!(
                        "unknown host {:?} (hosts: {})",
                        s.host,
                        if known.is_empty() {
                            "none defined".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        // Shards 0..S, replicas 0..R each, the same R everywhere, one preferred leader at most.
        let shards = raw
            .sites
            .iter()
            .map(|s| s.shard)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        let mut slots: BTreeMap<u32, BTreeMap<u32, usize>> = BTreeMap::new();
        for (i, s) in raw.sites.iter().enumerate() {
            if let Some(j) = slots.entry(s.shard).or_default().insert(s.replica, i) {
                return Err(self.err(
                    &site_key(i).at("replica"),
                    format!(
                        "shard {} replica {} is also sites[{j}] ({})",
                        s.shard, s.replica, raw.sites[j].name
                    ),
                ));
            }
        }
        for shard in 0..shards {
            let Some(reps) = slots.get(&shard) else {
                return Err(self.err(
                    &sites_key,
                    format!(
                        "no site has shard {shard} (shards must be numbered 0..{shards} without gaps)"
                    ),
                ));
            };
            for (want, (&replica, &i)) in reps.iter().enumerate() {
                if replica != want as u32 {
                    return Err(self.err(
                        &site_key(i).at("replica"),
                        format!(
                            "shard {shard} has no replica {want} (replicas must be numbered 0..R without gaps)"
                        ),
                    ));
                }
            }
        }
        let replicas = slots.get(&0).map_or(0, |r| r.len()) as u32;
        for (&shard, reps) in &slots {
            if reps.len() as u32 != replicas {
                let i = *reps.values().next().unwrap_or(&0);
                return Err(self.err(
                    &site_key(i).at("shard"),
                    format!(
                        "shard {shard} has {} replicas but shard 0 has {replicas} (every shard needs the same number)",
                        reps.len()
                    ),
                ));
            }
            let preferred: Vec<usize> = reps
                .values()
                .copied()
                .filter(|&i| raw.sites[i].preferred_leader)
                .collect();
            if let [first, second, ..] = preferred[..] {
                return Err(self.err(
                    &site_key(second).at("preferred_leader"),
                    format!(
                        "shard {shard} already has a preferred leader (sites[{first}], {})",
                        raw.sites[first].name
                    ),
                ));
            }
        }
        // Listen ports: non-zero, no (address, port) used twice.
        let mut listens: Vec<(SocketAddr, KeyPath)> = Vec::new();
        for (i, s) in raw.sites.iter().enumerate() {
            let ip = raw.hosts[&s.host].address;
            let ports = [
                ("peer_port", Some(s.peer_port)),
                ("client_port", Some(s.client_port)),
                ("metrics_port", s.metrics_port),
                ("redis_port", s.redis_port),
            ];
            for (key, port) in ports {
                let Some(port) = port else { continue };
                let k = site_key(i).at(key);
                if port == 0 {
                    return Err(self.err(
                        &k,
                        "port 0 is not allowed (peers and clients must know the port)",
                    ));
                }
                let addr = SocketAddr::new(ip, port);
                if let Some((other, ok)) = listens.iter().find(|(a, _)| clashes(*a, addr)) {
                    let also = if *other == addr {
                        String::new()
                    } else {
                        format!(" ({other})")
                    };
                    return Err(self.err(&k, format!("{addr} is already used by {ok}{also}")));
                }
                listens.push((addr, k));
            }
        }
        // Data directories.
        let data_dir = raw
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let mut dirs: HashMap<PathBuf, usize> = HashMap::new();
        for (i, s) in raw.sites.iter().enumerate() {
            let dir = s.data_dir.clone().unwrap_or_else(|| data_dir.join(&s.name));
            if let Some(j) = dirs.insert(dir.clone(), i) {
                return Err(self.err(
                    &site_key(i).at("data_dir"),
                    format!(
                        "data directory {} is also that of sites[{j}] ({})",
                        dir.display(),
                        raw.sites[j].name
                    ),
                ));
            }
        }
        // Meta group.
        if let Some(meta) = &raw.meta {
            let mk = KeyPath::key("meta").at("members");
            let mut seen = HashMap::new();
            for (i, m) in meta.members.iter().enumerate() {
                if !by_name.contains_key(m.as_str()) {
                    return Err(self.err(&mk.idx(i), format!("no site is named {m:?}")));
                }
                if let Some(j) = seen.insert(m.as_str(), i) {
                    return Err(self.err(
                        &mk.idx(i),
                        format!("{m:?} is listed twice (also meta.members[{j}])"),
                    ));
                }
            }
            if meta.members.len() % 2 == 0 {
                return Err(self.err(
                    &mk,
                    format!(
                        "needs an odd number of members (a majority must survive), has {}",
                        meta.members.len()
                    ),
                ));
            }
        }
        // Raft timing.
        let raft = &raw.raft;
        if raft.heartbeat_ms == 0 {
            return Err(self.err(&KeyPath::key("raft").at("heartbeat_ms"), "must be positive"));
        }
        let (lo, hi) = raft.election_ms;
        let ek = KeyPath::key("raft").at("election_ms");
        if lo >= hi {
            return Err(self.err(&ek, format!("[min, max] needs min < max, got [{lo}, {hi}]")));
        }
        if lo < raft.heartbeat_ms.saturating_mul(2) {
            return Err(self.err(
                &ek,
                format!(
                    "min {lo} must be at least twice raft.heartbeat_ms ({})",
                    raft.heartbeat_ms
                ),
            ));
        }
        // Positive numbers.
        let positive: [(&str, &str, u64); 10] = [
            ("batch", "max_pieces", raw.batch.max_pieces as u64),
            ("batch", "max_bytes", raw.batch.max_bytes as u64),
            ("timeouts", "release_ms", raw.timeouts.release_ms),
            ("timeouts", "request_ms", raw.timeouts.request_ms),
            ("client", "idle_timeout_ms", raw.client.idle_timeout_ms),
            (
                "client",
                "max_open_per_connection",
                u64::from(raw.client.max_open_per_connection),
            ),
            (
                "client",
                "max_ops_per_txn",
                u64::from(raw.client.max_ops_per_txn),
            ),
            (
                "client",
                "max_connections",
                u64::from(raw.client.max_connections),
            ),
            (
                "client",
                "max_scan_rows",
                u64::from(raw.client.max_scan_rows),
            ),
            (
                "workers",
                "",
                u64::from(raw.workers.unwrap_or(DEFAULT_WORKERS)),
            ),
        ];
        for (section, key, v) in positive {
            if v == 0 {
                let k = if key.is_empty() {
                    KeyPath::key(section)
                } else {
                    KeyPath::key(section).at(key)
                };
                return Err(self.err(&k, "must be positive"));
            }
        }
        // Tables.
        let mut tables = BTreeMap::new();
        tables.insert(
            DEFAULT_TABLE.to_owned(),
            TableSpec {
                name: DEFAULT_TABLE.to_owned(),
                partition: Partition::Hash,
            },
        );
        for (name, t) in &raw.tables {
            let tk = KeyPath::key("tables").at(name);
            if !valid_name(name) {
                return Err(self.err(
                    &tk,
                    format!("invalid table name {name:?} (use letters, digits, '-', '_', '.')"),
                ));
            }
            let partition = match (t.partition, &t.splits) {
                (RawPartition::Hash, None) => Partition::Hash,
                (RawPartition::Hash, Some(_)) => {
                    return Err(self.err(
                        &tk.at("splits"),
                        "only a range-partitioned table has split points (set partition: range)",
                    ));
                }
                (RawPartition::Range, None) => {
                    return Err(self.err(
                        &tk.at("partition"),
                        format!(
                            "range partitioning needs splits: {} split point(s) for {shards} shard(s)",
                            shards - 1
                        ),
                    ));
                }
                (RawPartition::Range, Some(splits)) => {
                    let sk = tk.at("splits");
                    if splits.len() != shards as usize - 1 {
                        return Err(self.err(
                            &sk,
                            format!(
                                "has {} split point(s); {shards} shard(s) need {}",
                                splits.len(),
                                shards - 1
                            ),
                        ));
                    }
                    for (i, w) in splits.windows(2).enumerate() {
                        if w[0].as_bytes() >= w[1].as_bytes() {
                            return Err(self.err(
                                &sk.idx(i + 1),
                                format!(
                                    "split points must be strictly ascending: {:?} does not follow {:?}",
                                    w[1], w[0]
                                ),
                            ));
                        }
                    }
                    Partition::Range {
                        splits: splits.iter().map(|s| s.as_bytes().to_vec()).collect(),
                    }
                }
            };
            tables.insert(
                name.clone(),
                TableSpec {
                    name: name.clone(),
                    partition,
                },
            );
        }
        let security = self.security(&raw.security)?;
        Ok(Config {
            sources: self.merged.names.clone(),
            replication: raw.replication,
            durability: raw.durability,
            data_dir,
            hosts: raw.hosts,
            sites: raw.sites,
            meta: raw.meta,
            raft: raw.raft,
            batch: raw.batch,
            workers: raw.workers.unwrap_or(DEFAULT_WORKERS),
            timeouts: raw.timeouts,
            security,
            client: raw.client,
            tables,
            shards,
            replicas,
        })
    }

    /// Reads the secret files and checks the TLS files.
    fn security(&self, raw: &RawSecurity) -> Result<Security, ConfigError> {
        let sec = KeyPath::key("security");
        let cluster_secret = self.secret(
            &sec,
            "cluster_secret",
            &raw.cluster_secret,
            &raw.cluster_secret_file,
        )?;
        let client_token = self.secret(
            &sec,
            "client_token",
            &raw.client_token,
            &raw.client_token_file,
        )?;
        if let Some(tls) = &raw.tls {
            let tk = sec.at("tls");
            for (key, path) in [("cert", &tls.cert), ("key", &tls.key), ("ca", &tls.ca)] {
                if let Err(e) = std::fs::metadata(path) {
                    return Err(
                        self.err(&tk.at(key), format!("cannot read {}: {e}", path.display()))
                    );
                }
                if !path.is_file() {
                    return Err(self.err(&tk.at(key), format!("{} is not a file", path.display())));
                }
            }
        }
        Ok(Security {
            cluster_secret,
            client_token,
            tls: raw.tls.clone(),
        })
    }

    /// One secret given inline (`key`) or as a file (`key_file`), not both.
    fn secret(
        &self,
        sec: &KeyPath,
        key: &str,
        inline: &Option<String>,
        file: &Option<PathBuf>,
    ) -> Result<Option<Secret>, ConfigError> {
        let file_key = format!("{key}_file");
        let bytes = match (inline, file) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(self.err(
                    &sec.at(&file_key),
                    format!("give {key} or {file_key}, not both"),
                ));
            }
            (Some(s), None) => s.trim_end().as_bytes().to_vec(),
            (None, Some(path)) => {
                let mut b = std::fs::read(path).map_err(|e| {
                    self.err(
                        &sec.at(&file_key),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                while b.last().is_some_and(|c| c.is_ascii_whitespace()) {
                    b.pop();
                }
                b
            }
        };
        if bytes.is_empty() {
            let k = if file.is_some() {
                file_key
            } else {
                key.to_owned()
            };
            return Err(self.err(&sec.at(&k), "the secret is empty"));
        }
        Ok(Some(Secret(bytes)))
    }
}

/// Whether two listen addresses cannot both be bound (same port; same IP or one unspecified).
fn clashes(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Site and table names: non-empty, letters, digits, `-`, `_`, `.`, not `.` or `..`.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests;
