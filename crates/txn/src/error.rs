//! Transaction outcomes that are not success: aborts and operation errors.

/// Why a transaction aborted; every reason means nothing of it is or will ever be visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbortReason {
    /// A lock was held by another writer, or a read, absent read or scan was invalidated.
    Conflict,
    /// The transaction's epoch ended in a failover before it was released.
    Failover,
    /// This replica is not the shard leader.
    NotLeader,
    /// A remote reply did not come in time, before the commit decision.
    ///
    /// Like every abort reason it means "never visible": a transaction that committed
    /// and is merely slow to be released is not an abort (mako-server reports it
    /// as unknown / pending).
    Timeout,
    /// The transaction's piece on a shard is larger than one replication log entry may be.
    TooLarge,
    /// The commit log cannot take the piece (an unconfigured stream, or a stream that stopped
    /// after a lost log submission).
    LogUnavailable,
}

impl AbortReason {
    /// Every reason, in declaration order (handy for per-reason counters).
    pub const ALL: [AbortReason; 6] = [
        AbortReason::Conflict,
        AbortReason::Failover,
        AbortReason::NotLeader,
        AbortReason::Timeout,
        AbortReason::TooLarge,
        AbortReason::LogUnavailable,
    ];

    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            AbortReason::Conflict => "conflict",
            AbortReason::Failover => "failover",
            AbortReason::NotLeader => "not_leader",
            AbortReason::Timeout => "timeout",
            AbortReason::TooLarge => "too_large",
            AbortReason::LogUnavailable => "log_unavailable",
        }
    }
}

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A transaction that did not commit; nothing it wrote is visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("transaction aborted: {reason}")]
pub struct Abort {
    /// Why it aborted.
    pub reason: AbortReason,
}

impl Abort {
    /// An abort for `reason`.
    pub fn new(reason: AbortReason) -> Self {
        Abort { reason }
    }
}

/// An operation inside a transaction that failed without aborting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// `insert` found a visible value under the key.
    #[error("key already exists")]
    KeyExists,
}
