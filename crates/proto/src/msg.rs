//! The messages: handshake, requests and replies.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

/// A random 32-byte challenge.
pub type Nonce = [u8; 32];

/// A 32-byte proof of a shared secret over a nonce.
pub type Proof = [u8; 32];

/// The client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must be [`crate::MAGIC`].
    pub magic: [u8; 4],
    /// The client's protocol version.
    pub version: u16,
    /// The client's challenge to the server.
    pub nonce: Nonce,
}

/// The server's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The server's protocol version.
    pub version: u16,
    /// `Some(reason)`: the server refuses the connection (and closes it).
    pub refused: Option<String>,
    /// The site's name.
    pub site: String,
    /// The site's node id.
    pub node: u64,
    /// The site's shard.
    pub shard: u32,
    /// The server's challenge to the client.
    pub nonce: Nonce,
    /// Whether the client must prove the client token ([`Auth`]) before any request.
    pub auth_required: bool,
    /// With a token configured: the server's proof of it over the client's nonce.
    pub proof: Option<Proof>,
}

/// The client's proof of the client token over the server's nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// The proof.
    pub proof: Proof,
}

/// The server's verdict on [`Auth`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthResult {
    /// Authenticated: requests may follow.
    Ok,
    /// Refused (the connection closes).
    Refused(String),
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Repeated in the response.
    pub id: u64,
    /// What is asked.
    pub body: Body,
}

/// What a request asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// The shard count and the leaders this site knows.
    Topology,
    /// This site's [`SiteStatus`].
    Status,
    /// Opens an interactive transaction coordinated here (a shard leader).
    Begin,
    /// One operation inside an open transaction.
    Op {
        /// The transaction.
        txn: u32,
        /// The operation.
        op: Op,
    },
    /// Commits an open transaction; answered at release.
    Commit {
        /// The transaction.
        txn: u32,
    },
    /// Aborts an open transaction.
    Abort {
        /// The transaction.
        txn: u32,
    },
    /// Runs `ops` in order as one transaction, then commits (one request).
    Run {
        /// The operations.
        ops: Vec<Op>,
    },
    /// Runs a server-side procedure registered under `name` as one transaction coordinated
    /// here (a shard leader); `args` and the result are the procedure's own encoding.
    Call {
        /// The procedure.
        name: String,
        /// Its arguments.
        args: Vec<u8>,
    },
    /// A digest of this replica's rows of a table (newest versions), to compare replicas.
    Digest {
        /// The table.
        table: String,
    },
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Reads a key.
    Get {
        /// The table.
        table: String,
        /// The key.
        key: Vec<u8>,
    },
    /// Writes a key.
    Put {
        /// The table.
        table: String,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Deletes a key.
    Delete {
        /// The table.
        table: String,
        /// The key.
        key: Vec<u8>,
    },
    /// Up to `limit` rows in `lo..hi`, ascending, across every shard of the table.
    Scan {
        /// The table.
        table: String,
        /// Lower bound.
        lo: Bound<Vec<u8>>,
        /// Upper bound.
        hi: Bound<Vec<u8>>,
        /// Most rows returned.
        limit: u32,
    },
    /// Adds `delta` to the decimal integer stored under the key (absent: 0); the result is
    /// the new value. A value that is not a decimal `i64` as Redis writes one (an optional
    /// `-`, no `+`, no leading zeros) is refused with an error.
    Add {
        /// The table.
        table: String,
        /// The key.
        key: Vec<u8>,
        /// The amount added.
        delta: i64,
    },
    /// Appends bytes to the value stored under the key (absent: empty); the result is the
    /// new length.
    Append {
        /// The table.
        table: String,
        /// The key.
        key: Vec<u8>,
        /// The bytes appended.
        value: Vec<u8>,
    },
    /// Reads the version of a key: the `(epoch, timestamp)` of its newest version, a
    /// delete's included (none if it was never written). It changes with every write to the
    /// key, the same value written again included; the transaction's own writes are not seen.
    Version {
        /// The table.
        table: String,
        /// The key.
        key: Vec<u8>,
    },
}

impl Op {
    /// The table the operation addresses.
    pub fn table(&self) -> &str {
        match self {
            Op::Get { table, .. }
            | Op::Put { table, .. }
            | Op::Delete { table, .. }
            | Op::Scan { table, .. }
            | Op::Add { table, .. }
            | Op::Append { table, .. }
            | Op::Version { table, .. } => table,
        }
    }

    /// The key the operation addresses (`None` for a scan).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Op::Get { key, .. }
            | Op::Put { key, .. }
            | Op::Delete { key, .. }
            | Op::Add { key, .. }
            | Op::Append { key, .. }
            | Op::Version { key, .. } => Some(key),
            Op::Scan { .. } => None,
        }
    }
}

impl OpResult {
    /// An upper bound on the bytes this result takes in a reply frame.
    pub fn wire_size(&self) -> usize {
        // A postcard length prefix takes at most 10 bytes.
        match self {
            OpResult::Value(v) => 11 + v.as_ref().map_or(0, Vec::len),
            OpResult::Done => 1,
            OpResult::Rows(rows) => rows
                .iter()
                .fold(11, |n, (k, v)| n.saturating_add(20 + k.len() + v.len())),
            OpResult::Int(_) => 11,
            // Tag, option tag, a u32 and a u64 (varints).
            OpResult::Version(_) => 18,
        }
    }
}

/// Rows of a scan: `(key, value)` in key order.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// The result of one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// A read's value.
    Value(Option<Vec<u8>>),
    /// A write or delete was buffered.
    Done,
    /// A scan's rows.
    Rows(Rows),
    /// An integer result (new value of `Add`, new length of `Append`).
    Int(i64),
    /// A key's version (`Version`): `(epoch, timestamp)`, none if never written.
    Version(Option<(u32, u64)>),
}

/// One response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id (0 when the request was malformed).
    pub id: u64,
    /// The answer.
    pub reply: Reply,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to [`Body::Topology`].
    Topology(Topology),
    /// Answer to [`Body::Status`].
    Status(Box<SiteStatus>),
    /// A transaction was opened.
    Began {
        /// Its number on this connection.
        txn: u32,
    },
    /// An operation's result.
    Result(OpResult),
    /// Released: durable on a majority of every shard it touched.
    Committed,
    /// Answer to [`Body::Run`]: released, with each operation's result.
    Ran(Vec<OpResult>),
    /// Answer to [`Body::Call`]: released (or read-only), with the procedure's result.
    Returned(Vec<u8>),
    /// Aborted: never visible. The transaction (if interactive) is closed.
    Aborted {
        /// Why (`conflict`, `failover`, `not_leader`, `timeout`, `too_large`,
        /// `log_unavailable`, `idle`, `too_many_ops`, `invalid`).
        reason: String,
        /// Whether running the same transaction again may succeed.
        retryable: bool,
    },
    /// Committed speculatively, but its release did not arrive in time: it may or may not
    /// become durable.
    Unknown {
        /// What the server knows.
        why: String,
    },
    /// This site does not lead the shard a transaction must begin on.
    NotLeader {
        /// The shard.
        shard: u32,
        /// The leader this site knows, if any.
        leader: Option<u64>,
    },
    /// Answer to [`Body::Digest`].
    Digest {
        /// Rows in the table on this replica.
        rows: u64,
        /// A hash of every key and newest value, in key order.
        hash: u64,
        /// The applied log index the digest reflects.
        applied: u64,
    },
    /// The request could not be served.
    Error {
        /// The kind of error.
        code: ErrorCode,
        /// A human-readable message.
        message: String,
    },
}

/// Kinds of [`Reply::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request did not decode.
    Malformed,
    /// No such table.
    UnknownTable,
    /// No open transaction with that number.
    UnknownTxn,
    /// Too many transactions open on this connection.
    TooManyOpen,
    /// A value is not what the operation needs (e.g. `Add` on a non-integer).
    InvalidValue,
    /// The server is shutting down.
    ShuttingDown,
    /// No procedure of that name.
    UnknownProcedure,
    /// The reply would exceed the frame limit ([`crate::MAX_FRAME`]); e.g. a scan of too
    /// many rows (ask for fewer).
    TooLarge,
}

/// The shard map as one site knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Shards.
    pub shards: u32,
    /// The leader of each shard this site knows.
    pub leaders: Vec<Option<u64>>,
}

/// One site's view of itself and its shard (`mako status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteStatus {
    /// Site name.
    pub site: String,
    /// Node id.
    pub node: u64,
    /// Shard.
    pub shard: u32,
    /// `leader`, `follower`, `candidate` (or `rejoining`).
    pub role: String,
    /// Whether it serves transactions (a leader with an open epoch and a lease).
    pub serving: bool,
    /// Replication group health (`ok` or why it failed).
    pub health: String,
    /// Raft term.
    pub term: u64,
    /// Epoch of the shard's log.
    pub epoch: u64,
    /// Commit index of the shard's log.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// The shard watermark `W_s`.
    pub w: u64,
    /// The `VW` of the current epoch this site knows, per shard.
    pub vw: Vec<u64>,
    /// Entries queued for replay.
    pub queued: u64,
    /// Entries replayed.
    pub replayed: u64,
    /// The leader of each shard this site knows.
    pub leaders: Vec<Option<u64>>,
    /// Transactions released to clients by this site.
    pub released: u64,
    /// Transactions aborted by this site, by reason.
    pub aborts: Vec<(String, u64)>,
    /// Seconds since the process started.
    pub uptime_s: f64,
}
