//! Server-side procedures: named transactions a client runs in one request
//! ([`mako_proto::Body::Call`]), registered by whoever builds the server (e.g. TPC-C).

use mako_server::{CommitError, DistTxn, Site};
use mako_txn::AbortReason;

/// How a procedure call ended, when not with a result.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// Aborted: the transaction will never be visible.
    #[error("aborted ({})", .0.name())]
    Aborted(AbortReason),
    /// Committed speculatively, release not seen in time.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The arguments are invalid (nothing was done).
    #[error("invalid arguments: {0}")]
    Invalid(String),
}

impl From<mako_txn::Abort> for ProcError {
    fn from(a: mako_txn::Abort) -> Self {
        ProcError::Aborted(a.reason)
    }
}

impl From<CommitError> for ProcError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Aborted(r) => ProcError::Aborted(r),
            CommitError::Unknown { why, .. } => ProcError::Unknown(why.to_string()),
        }
    }
}

/// A named server-side transaction.
pub trait Procedure: Send + Sync {
    /// Runs one call coordinated on `site` (serving its shard) by `worker`: begins with
    /// [`Site::begin`], commits, and returns its encoded result once released.
    fn call(&self, site: &Site, worker: u32, args: &[u8]) -> Result<Vec<u8>, ProcError>;
}

/// Runs `body` in a transaction of `site` by `worker` and commits it (waiting for release).
pub fn in_txn<T>(
    site: &Site,
    worker: u32,
    body: impl FnOnce(&mut DistTxn<'_>) -> Result<T, ProcError>,
) -> Result<T, ProcError> {
    let mut tx = site
        .begin(worker)
        .map_err(|e| ProcError::Invalid(e.to_string()))?;
    let v = body(&mut tx)?;
    tx.commit()?;
    Ok(v)
}
