//! Messages between sites (watermark exchange and speculative 2PC), on the transport's control channel.

use std::ops::Bound;

use mako_watermark::{EpochHistory, MetaCommand};
use serde::{Deserialize, Serialize};

/// Transport group id of the control channel (Raft groups use shard ids).
pub const CONTROL_GROUP: u32 = u32::MAX;

/// Identifies one multi-shard transaction: coordinating node and its counter.
pub type TxnId = (u64, u64);

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// A shard leader's current `W_s` of the epoch its log has reached.
    Watermark {
        /// The shard.
        shard: u32,
        /// The epoch `w` counts.
        epoch: u32,
        /// Its watermark.
        w: u64,
    },
    /// A proposal for the `meta` group (to its members; the one leading it submits).
    Meta {
        /// The command.
        cmd: MetaCommand,
    },
    /// The `meta` group's history, from the member leading it.
    Epochs {
        /// The history.
        history: EpochHistory,
    },
    /// A coordinator's request to a participant shard leader.
    Request {
        /// Correlates the reply.
        req: u64,
        /// The coordinator's epoch (stale epochs are refused).
        epoch: u32,
        /// The transaction.
        txn: TxnId,
        /// The coordinator's stream (worker) on every shard.
        stream: u32,
        /// What to do.
        op: Op,
    },
    /// A coordinator's recorded decision on a transaction (resent until acknowledged; idempotent).
    Decision {
        /// The transaction.
        txn: TxnId,
        /// The coordinator's epoch (stale epochs are refused).
        epoch: u32,
        /// The final `VT` if the decision is commit; `None` means abort.
        commit: Option<Vec<u64>>,
    },
    /// A participant's acknowledgement of a [`Msg::Decision`]: its piece is appended (commit) or
    /// released (abort), or why it refused.
    Ack {
        /// The transaction.
        txn: TxnId,
        /// `None` if done; otherwise why the participant refused.
        refused: Option<Refusal>,
        /// The participant's shard.
        shard: u32,
        /// The epoch `w` counts.
        epoch: u32,
        /// Its `W_s`, piggybacked.
        w: u64,
    },
    /// A participant that waited past its timeout asks the coordinator for its decision.
    Inquire {
        /// The transaction.
        txn: TxnId,
    },
    /// A participant's answer.
    Reply {
        /// The request it answers.
        req: u64,
        /// The outcome.
        reply: Reply,
        /// The participant's `W_s`, piggybacked.
        shard: u32,
        /// The epoch `w` counts.
        epoch: u32,
        /// Its value.
        w: u64,
    },
}

/// An operation a coordinator asks of a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Read `key` of table `table`.
    Get {
        /// Table id.
        table: u32,
        /// Key.
        key: Vec<u8>,
    },
    /// Scan table `table` over `lo..hi` (up to `limit` rows, descending if `reverse`); validated at prepare.
    Scan {
        /// Table id.
        table: u32,
        /// Lower bound.
        lo: Bound<Vec<u8>>,
        /// Upper bound.
        hi: Bound<Vec<u8>>,
        /// Most rows returned.
        limit: u64,
        /// Descending order.
        reverse: bool,
    },
    /// Buffer `writes` and lock the write set (no-wait); reads are validated later.
    Lock {
        /// Writes buffered at the coordinator: (table, key, value or `None` to delete).
        writes: Vec<(u32, Vec<u8>, Option<Vec<u8>>)>,
    },
    /// Validate the reads and, if the piece writes, allocate this shard's `VT` component.
    ///
    /// Sent once every participant's write set is locked. A piece not locked yet
    /// buffers `writes` and locks first (the coordinator does so only when every other
    /// write set is already locked). A read-only piece is finished by it.
    Validate {
        /// Writes of a piece not locked yet (empty after [`Op::Lock`]).
        writes: Vec<(u32, Vec<u8>, Option<Vec<u8>>)>,
    },
    /// Read the `(epoch, timestamp)` of the newest version of `key` of table `table`.
    Version {
        /// Table id.
        table: u32,
        /// Key.
        key: Vec<u8>,
    },
}

/// A participant's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The value read.
    Value(Option<Vec<u8>>),
    /// The rows scanned, in scan order.
    Rows(Vec<(Vec<u8>, Vec<u8>)>),
    /// The write set is locked.
    Locked,
    /// Prepared: read dependencies and, if this shard is written, its `VT` component.
    Prepared {
        /// Component-wise max `VT` of versions read (and overwritten).
        deps: Vec<u64>,
        /// The allocated timestamp if the participant writes.
        ts: Option<u64>,
    },
    /// Refused: conflict, unknown transaction, stale epoch, or not the leader.
    Refused(Refusal),
    /// The version read (`None`: the key never had one).
    Version(Option<(u32, u64)>),
}

/// Why a participant refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// Lock conflict or failed validation.
    Conflict,
    /// The request's epoch is older than the participant's (which it carries).
    StaleEpoch(u32),
    /// This site does not lead its shard; carries the leader it knows of, if any. A request
    /// refused with a hint was refused before anything was done for it here.
    NotLeader(Option<u64>),
    /// No such transaction (already finished, or never started here).
    Unknown,
    /// The piece is larger than one commit-log entry may hold.
    TooLarge,
    /// The decision's `VT` does not match the prepared piece's reserved timestamp (a decision
    /// on another incarnation of the piece).
    Mismatch,
}

/// Why a peer's control message was refused before it was handled.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The payload is not a control message.
    #[error("undecodable: {0}")]
    Decode(#[from] postcard::Error),
    /// The sender is not a member of the cluster.
    #[error("sender {0} is not a member")]
    UnknownSender(u64),
    /// A shard field names another shard than the sender's.
    #[error("node {from} speaks for shard {claimed}, not its own")]
    WrongShard {
        /// The sender.
        from: u64,
        /// The shard it claimed.
        claimed: u32,
    },
    /// The transaction is not coordinated by the node it should be.
    #[error("transaction {txn:?} is not coordinated by {from} / here")]
    ForeignTxn {
        /// The transaction.
        txn: TxnId,
        /// The sender.
        from: u64,
    },
    /// The stream is not one of the sender's configured worker streams.
    #[error("stream {stream:#x} is not a configured worker stream of node {from}'s shard")]
    BadStream {
        /// The stream.
        stream: u32,
        /// The sender.
        from: u64,
    },
    /// A commit decision whose timestamp for this shard is above the prepared piece's.
    #[error("commit decision stamps this shard {decided}, the prepared piece reserved {ts}")]
    TsMismatch {
        /// The decision's `VT[s]`.
        decided: u64,
        /// The piece's reserved timestamp.
        ts: u64,
    },
    /// A leader hint that names a node outside the sender's shard.
    #[error("node {from} hints leader {hint}, not a replica of its shard")]
    BadHint {
        /// The sender.
        from: u64,
        /// The hinted node.
        hint: u64,
    },
    /// A `NewEpoch` proposal for another leader than the sender.
    #[error("node {from} asks an epoch for leader {leader}")]
    ForeignLeader {
        /// The sender.
        from: u64,
        /// The leader named.
        leader: u64,
    },
    /// An epoch history from a node that is not a `meta` member.
    #[error("node {0} sent an epoch history but is not a meta member")]
    NotMeta(u64),
    /// An epoch history that is malformed or contradicts a final watermark.
    #[error("epoch history refused: {0}")]
    Epochs(#[from] mako_watermark::EpochError),
    /// A vector timestamp with the wrong number of components.
    #[error("vector timestamp of {len} components, expected {shards}")]
    VtLength {
        /// Components received.
        len: usize,
        /// Shards configured.
        shards: usize,
    },
}

impl Msg {
    /// Encodes for the transport.
    pub fn encode(&self) -> bytes::Bytes {
        postcard::to_stdvec(self).unwrap_or_default().into()
    }

    /// Decodes a control payload.
    pub fn decode(b: &[u8]) -> Result<Msg, postcard::Error> {
        postcard::from_bytes(b)
    }

    /// Whether an encoded payload is quick to serve wherever it is received (by its variant
    /// tag, without decoding it): [`Msg::Watermark`], [`Msg::Ack`] and [`Msg::Reply`].
    pub fn served_on_receipt(b: &[u8]) -> bool {
        matches!(b.first(), Some(&(WATERMARK_TAG | ACK_TAG | REPLY_TAG)))
    }

    /// Whether an encoded payload is a participant's work: [`Msg::Request`] or
    /// [`Msg::Decision`] (by its variant tag).
    pub fn is_participant_work(b: &[u8]) -> bool {
        matches!(b.first(), Some(&(REQUEST_TAG | DECISION_TAG)))
    }
}

/// Postcard's tag of [`Msg::Watermark`]: its variant index, the payload's first byte.
const WATERMARK_TAG: u8 = 0;

/// Postcard's tag of [`Msg::Request`].
const REQUEST_TAG: u8 = 3;

/// Postcard's tag of [`Msg::Decision`].
const DECISION_TAG: u8 = 4;

/// Postcard's tag of [`Msg::Ack`].
const ACK_TAG: u8 = 5;

/// Postcard's tag of [`Msg::Reply`].
const REPLY_TAG: u8 = 7;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_tags_tell_each_kind_of_message_from_every_other() {
        let quick = [
            Msg::Watermark {
                shard: 7,
                epoch: 7,
                w: 7,
            },
            Msg::Ack {
                txn: (7, 7),
                refused: None,
                shard: 7,
                epoch: 7,
                w: 7,
            },
            Msg::Reply {
                req: 300,
                reply: Reply::Locked,
                shard: 1,
                epoch: 2,
                w: 3,
            },
        ];
        let participant = [
            Msg::Request {
                req: 7,
                epoch: 7,
                txn: (7, 7),
                stream: 7,
                op: Op::Validate { writes: vec![] },
            },
            Msg::Decision {
                txn: (7, 7),
                epoch: 7,
                commit: None,
            },
        ];
        let control = [
            Msg::Meta {
                cmd: MetaCommand::Component {
                    epoch: 1,
                    shard: 0,
                    w: 2,
                },
            },
            Msg::Epochs {
                history: EpochHistory::new(2),
            },
            Msg::Inquire { txn: (7, 7) },
        ];
        for m in &quick {
            assert!(Msg::served_on_receipt(&m.encode()), "{m:?}");
            assert!(!Msg::is_participant_work(&m.encode()), "{m:?}");
        }
        for m in &participant {
            assert!(!Msg::served_on_receipt(&m.encode()), "{m:?}");
            assert!(Msg::is_participant_work(&m.encode()), "{m:?}");
        }
        for m in &control {
            assert!(!Msg::served_on_receipt(&m.encode()), "{m:?}");
            assert!(!Msg::is_participant_work(&m.encode()), "{m:?}");
        }
        assert!(!Msg::served_on_receipt(&[]));
        assert!(!Msg::is_participant_work(&[]));
    }
}
