//! Benchmarks and history checks against a running deployment, over the client protocol
//! (`mako bench -f CONFIG` and `mako check -f CONFIG`).
//!
//! [`run_bench`] drives a deployment from client threads, each with its own
//! [`mako_client::Client`], every transaction one request run server-side
//! ([`mako_client::Client::run`]). [`run_check`] runs the history checker's workloads as
//! interactive client transactions ([`RemoteExecutor`]), optionally SIGKILLing the serving
//! leader of a random shard at intervals (the deployment's sites are then child processes of
//! this one, [`mako_deploy::Deployment`]), checks the history, and compares every replica's
//! digest of the checker's table with its leader's.

mod bench;
mod check;

pub use bench::{
    BenchProgress, RemoteBenchConfig, RemoteBenchReport, RemoteWorkload, bench_key, plot_svg,
    run_bench,
};
pub use check::{
    Event, KillPlan, KillRecord, RemoteCheckConfig, RemoteCheckRun, RemoteExecutor,
    compare_replicas, run_check, serving_leader,
};

/// Why a remote run failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The client could not be configured.
    #[error("client: {0}")]
    Client(#[from] mako_client::ClientError),
    /// The deployment's sites could not be managed.
    #[error("deployment: {0}")]
    Deploy(#[from] mako_deploy::DeployError),
    /// The deployment has no default table `kv`.
    #[error("the deployment has no table {0:?}")]
    NoTable(String),
    /// Loading the keys failed.
    #[error("loading keys: {0}")]
    Load(String),
    /// Bad parameters.
    #[error("{0}")]
    Invalid(String),
}

/// `(table, key) -> shard` per the deployment's partitioning (shard 0 for unknown tables).
fn shard_of(cfg: &mako_config::Config, table: &str, key: &[u8]) -> u32 {
    cfg.shard_of(table, key).unwrap_or(0)
}

/// A short name for a client-side failure (for per-reason counts).
fn error_kind(e: &mako_client::ClientError) -> String {
    use mako_client::ClientError as E;
    match e {
        E::Aborted { reason, .. } => abort_name(reason),
        E::Unknown(_) => "unknown".into(),
        E::NoLeader { .. } => "no_leader".into(),
        E::Connect { .. } => "connect".into(),
        E::Io(_) => "io".into(),
        E::Refused(_) => "refused".into(),
        E::Auth(_) => "auth".into(),
        E::Request { code, .. } => format!("request_{code:?}").to_lowercase(),
        E::Protocol(_) => "protocol".into(),
        E::NoSuchSite(_) => "no_such_site".into(),
    }
}

/// An abort reason as a short name: the server's reason (`conflict`, `failover`, ...) as is,
/// a client-side one (`connection lost: ...`) cut at its first `:` and spaces turned to `_`.
fn abort_name(reason: &str) -> String {
    reason
        .split([':', '('])
        .next()
        .unwrap_or(reason)
        .trim()
        .replace(' ', "_")
}

#[cfg(test)]
mod tests {
    use super::abort_name;

    #[test]
    fn abort_names_are_short() {
        assert_eq!(abort_name("conflict"), "conflict");
        assert_eq!(
            abort_name("connection lost: broken pipe (os error 32)"),
            "connection_lost"
        );
    }
}
