//! Checks a peer's Raft message against the local replica's state before raft-rs steps it.
//!
//! raft-rs trusts its peers: a message inconsistent with the local log makes it panic
//! (`fatal!`, failed asserts, slice indexing, integer overflow) or silently corrupt its
//! state. [`validate`] refuses every such message. The rules (each guards a panic or an
//! invariant reachable from `RawNode::step` with peer input in raft-rs 0.7):
//!
//! * Only peer-to-peer types are accepted: `MsgHup`, `MsgBeat`, `MsgUnreachable`,
//!   `MsgSnapStatus`, `MsgCheckQuorum` are local; `MsgPropose`, `MsgReadIndex`,
//!   `MsgReadIndexResp` and `MsgTransferLeader` are never sent between our replicas
//!   (proposals are not forwarded, leadership moves only by the leader's own decision).
//! * `to` is this replica; `from` is another member of the group and equals the
//!   transport's sender when that is known; `term` is non-zero (raft-rs treats term 0
//!   as a local message); no snapshot requests (`request_snapshot`), which we never send.
//! * Every term and index is below [`MAX_TERM_OR_INDEX`] (raft-rs adds 1 to them).
//! * `log_term <= term`; entries only on `MsgAppend`.
//! * `MsgAppend`: `index == 0` exactly when `log_term == 0` (raft-rs's term lookup says 0
//!   beyond the log, so a zero log term would "match" anywhere); entries are
//!   `EntryNormal`, contiguous from `index + 1`, with non-decreasing terms in
//!   `[max(log_term, 1), term]`. If the message is current (not from an older term):
//!   an anchor at or past the local commit has `log_term` at least the committed
//!   entry's term, and no entry at or below the commit differs in term from the local one.
//! * `MsgHeartbeat` (current): `commit` within the local log.
//! * `MsgSnapshot`: non-zero index and term, a term not above the message term, and a
//!   `conf_state` equal to the group (same voters, no learners, not joint). If current:
//!   a snapshot at or below the commit matches the local term there, and one above it
//!   has a term at least the committed entry's term.
//! * `MsgAppendResponse` / `MsgHeartbeatResponse` at the leader (same term): `index`
//!   and `commit` within the leader's log, and `reject_hint <= index` on a rejection.
//! * `MsgRequestVote` / `MsgRequestPreVote`: `log_term < term`, `index == 0` exactly when
//!   `log_term == 0`, `commit <= index`, `commit_term <= log_term`.
//! * A granted `MsgRequestVoteResponse` for a candidate of this term: the candidate's
//!   log is durable (`last_index == persisted_index`); raft-rs asserts it on winning.
//! * `MsgTimeoutNow`: only from the leader of the current term.

use mako_replication::NodeId;
use raft::eraftpb::{EntryType, Message, MessageType};
use raft::{RawNode, StateRole, Storage};

/// Largest term or index accepted (leaves raft-rs headroom for its `+ 1`s).
pub const MAX_TERM_OR_INDEX: u64 = 1 << 62;

/// The local replica's role, as the validator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalRole {
    /// Following (or no leader known).
    Follower,
    /// Asking for pre-votes.
    PreCandidate,
    /// Asking for votes.
    Candidate,
    /// Leading.
    Leader,
}

/// A read-only view of the local replica, enough to judge a peer's message.
pub struct LocalView<'a> {
    /// This replica's id.
    pub id: NodeId,
    /// Every member of the group, this one included.
    pub peers: &'a [NodeId],
    /// Current term.
    pub term: u64,
    /// Current role.
    pub role: LocalRole,
    /// The leader of the current term, if known.
    pub leader: Option<NodeId>,
    /// Last index in the log.
    pub last_index: u64,
    /// Highest index known durable.
    pub persisted_index: u64,
    /// Highest index known committed.
    pub commit: u64,
    /// Term of the entry at an index, if the log still holds it.
    pub term_at: &'a dyn Fn(u64) -> Option<u64>,
}

/// Why a peer's message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A type never accepted from a peer.
    #[error("{0:?} is not accepted from a peer")]
    NotFromPeer(MessageType),
    /// Addressed to another replica.
    #[error("addressed to {0}, not this replica")]
    WrongRecipient(NodeId),
    /// The sender is not another member of the group.
    #[error("sender {0} is not a peer")]
    UnknownSender(NodeId),
    /// The message names a sender other than the connection it came on.
    #[error("message claims sender {claimed} but came from {transport}")]
    SenderMismatch {
        /// `from` in the message.
        claimed: NodeId,
        /// The transport's sender.
        transport: NodeId,
    },
    /// Term 0 (raft-rs's marker of a local message).
    #[error("term 0")]
    ZeroTerm,
    /// A term or index beyond [`MAX_TERM_OR_INDEX`].
    #[error("{field} {value} out of range")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The message contradicts itself.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// The message contradicts the local log or state.
    #[error("conflicts with local state: {0}")]
    Conflict(&'static str),
}

fn in_range(field: &'static str, value: u64) -> Result<(), Rejection> {
    if value >= MAX_TERM_OR_INDEX {
        return Err(Rejection::OutOfRange { field, value });
    }
    Ok(())
}

fn malformed(cond: bool, why: &'static str) -> Result<(), Rejection> {
    if cond {
        return Err(Rejection::Malformed(why));
    }
    Ok(())
}

fn conflict(cond: bool, why: &'static str) -> Result<(), Rejection> {
    if cond {
        return Err(Rejection::Conflict(why));
    }
    Ok(())
}

/// Checks `m`, received from `sender` (the transport's peer id, if known), against `v`.
pub fn validate(v: &LocalView<'_>, sender: Option<NodeId>, m: &Message) -> Result<(), Rejection> {
    use MessageType::*;
    let t = m.get_msg_type();
    if !matches!(
        t,
        MsgAppend
            | MsgAppendResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
            | MsgSnapshot
            | MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgTimeoutNow
    ) {
        return Err(Rejection::NotFromPeer(t));
    }
    if m.to != v.id {
        return Err(Rejection::WrongRecipient(m.to));
    }
    if m.from == v.id || !v.peers.contains(&m.from) {
        return Err(Rejection::UnknownSender(m.from));
    }
    if let Some(s) = sender
        && s != m.from
    {
        return Err(Rejection::SenderMismatch {
            claimed: m.from,
            transport: s,
        });
    }
    if m.term == 0 {
        return Err(Rejection::ZeroTerm);
    }
    in_range("term", m.term)?;
    in_range("log_term", m.log_term)?;
    in_range("index", m.index)?;
    in_range("commit", m.commit)?;
    in_range("commit_term", m.commit_term)?;
    in_range("reject_hint", m.reject_hint)?;
    malformed(m.request_snapshot != 0, "snapshot request")?;
    malformed(m.log_term > m.term, "log term above the message term")?;
    malformed(
        t != MsgAppend && !m.entries.is_empty(),
        "entries on a message that carries none",
    )?;
    // raft-rs acts on the content of messages of the current or a newer term only;
    // older ones just get a reply carrying the local term.
    let current = m.term >= v.term;
    let leader_of_term = v.role == LocalRole::Leader && m.term == v.term;
    let committed_term = (v.term_at)(v.commit);
    match t {
        MsgAppend => check_append(v, m, current, committed_term),
        MsgHeartbeat => conflict(
            current && m.commit > v.last_index,
            "heartbeat commit beyond the local log",
        ),
        MsgSnapshot => check_snapshot(v, m, current, committed_term),
        MsgAppendResponse => {
            if !leader_of_term {
                return Ok(());
            }
            conflict(m.index > v.last_index, "ack beyond the leader's log")?;
            conflict(m.commit > v.last_index, "commit beyond the leader's log")?;
            malformed(
                m.reject && m.reject_hint > m.index,
                "reject hint above the index",
            )
        }
        MsgHeartbeatResponse => conflict(
            leader_of_term && m.commit > v.last_index,
            "commit beyond the leader's log",
        ),
        MsgRequestVote | MsgRequestPreVote => {
            malformed(
                m.log_term >= m.term,
                "candidate's last term not below its term",
            )?;
            malformed(
                (m.index == 0) != (m.log_term == 0),
                "last index and term disagree",
            )?;
            malformed(m.commit > m.index, "commit above the last index")?;
            malformed(
                m.commit_term > m.log_term,
                "commit term above the last term",
            )
        }
        MsgRequestVoteResponse => conflict(
            !m.reject
                && v.role == LocalRole::Candidate
                && m.term == v.term
                && v.last_index != v.persisted_index,
            "vote granted before the candidate's log is durable",
        ),
        MsgTimeoutNow => conflict(
            m.term != v.term || v.leader != Some(m.from),
            "timeout-now not from the current leader",
        ),
        _ => Ok(()),
    }
}

fn check_append(
    v: &LocalView<'_>,
    m: &Message,
    current: bool,
    committed_term: Option<u64>,
) -> Result<(), Rejection> {
    malformed(
        (m.index == 0) != (m.log_term == 0),
        "anchor index and term disagree",
    )?;
    let mut prev_term = m.log_term.max(1);
    for (i, e) in m.entries.iter().enumerate() {
        in_range("entry index", e.index)?;
        in_range("entry term", e.term)?;
        malformed(
            e.get_entry_type() != EntryType::EntryNormal,
            "configuration change entry",
        )?;
        malformed(e.index != m.index + 1 + i as u64, "entries not contiguous")?;
        malformed(e.term < prev_term, "entry terms decrease")?;
        malformed(e.term > m.term, "entry term above the message term")?;
        prev_term = e.term;
    }
    if !current {
        return Ok(());
    }
    if m.index >= v.commit
        && let Some(ct) = committed_term
    {
        conflict(
            m.log_term < ct,
            "anchor term below the committed entry's term",
        )?;
    }
    for e in m.entries.iter().take_while(|e| e.index <= v.commit) {
        if let Some(local) = (v.term_at)(e.index) {
            conflict(local != e.term, "rewrites a committed entry")?;
        }
    }
    Ok(())
}

fn check_snapshot(
    v: &LocalView<'_>,
    m: &Message,
    current: bool,
    committed_term: Option<u64>,
) -> Result<(), Rejection> {
    let meta = m.get_snapshot().get_metadata();
    in_range("snapshot index", meta.index)?;
    in_range("snapshot term", meta.term)?;
    malformed(meta.index == 0 || meta.term == 0, "empty snapshot")?;
    malformed(meta.term > m.term, "snapshot term above the message term")?;
    let cs = meta.get_conf_state();
    let mut voters = cs.voters.clone();
    voters.sort_unstable();
    voters.dedup();
    let mut peers = v.peers.to_vec();
    peers.sort_unstable();
    peers.dedup();
    let same_group = voters == peers
        && cs.voters.len() == voters.len()
        && cs.learners.is_empty()
        && cs.voters_outgoing.is_empty()
        && cs.learners_next.is_empty()
        && !cs.auto_leave;
    conflict(!same_group, "snapshot configuration differs from the group")?;
    if !current {
        return Ok(());
    }
    if meta.index <= v.commit {
        if let Some(local) = (v.term_at)(meta.index) {
            conflict(local != meta.term, "snapshot contradicts a committed entry")?;
        }
    } else if let Some(ct) = committed_term {
        conflict(
            meta.term < ct,
            "snapshot term below the committed entry's term",
        )?;
    }
    Ok(())
}

/// Checks `m` against the state of `raw` (a replica of the group `peers`); see [`validate`].
pub fn validate_for<T: Storage>(
    raw: &RawNode<T>,
    peers: &[NodeId],
    sender: Option<NodeId>,
    m: &Message,
) -> Result<(), Rejection> {
    let r = &raw.raft;
    let log = &r.raft_log;
    let (first, last) = (log.first_index(), log.last_index());
    let term_at = |i: u64| {
        if i.saturating_add(1) < first || i > last {
            None
        } else {
            log.term(i).ok()
        }
    };
    let view = LocalView {
        id: r.id,
        peers,
        term: r.term,
        role: match r.state {
            StateRole::Follower => LocalRole::Follower,
            StateRole::PreCandidate => LocalRole::PreCandidate,
            StateRole::Candidate => LocalRole::Candidate,
            StateRole::Leader => LocalRole::Leader,
        },
        leader: (r.leader_id != 0).then_some(r.leader_id),
        last_index: last,
        persisted_index: log.persisted,
        commit: log.committed,
        term_at: &term_at,
    };
    validate(&view, sender, m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{ConfState, Entry, Snapshot};

    /// Node 2 of {1,2,3}, follower of 1 at term 3; log 1..=10 with terms 1,1,2,2,2,3,3,3,3,3; commit 8.
    fn with_view<R>(f: impl FnOnce(&LocalView<'_>) -> R) -> R {
        let terms = [0u64, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3];
        let term_at = |i: u64| terms.get(i as usize).copied();
        let v = LocalView {
            id: 2,
            peers: &[1, 2, 3],
            term: 3,
            role: LocalRole::Follower,
            leader: Some(1),
            last_index: 10,
            persisted_index: 10,
            commit: 8,
            term_at: &term_at,
        };
        f(&v)
    }

    fn msg(t: MessageType, term: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = 1;
        m.to = 2;
        m.term = term;
        m
    }

    fn append(term: u64, index: u64, log_term: u64, entries: &[(u64, u64)]) -> Message {
        let mut m = msg(MessageType::MsgAppend, term);
        m.index = index;
        m.log_term = log_term;
        let es: Vec<Entry> = entries
            .iter()
            .map(|&(index, term)| Entry {
                index,
                term,
                ..Entry::default()
            })
            .collect();
        m.set_entries(es.into());
        m
    }

    fn snapshot(term: u64, index: u64, snap_term: u64, voters: Vec<u64>) -> Message {
        let mut m = msg(MessageType::MsgSnapshot, term);
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = snap_term;
        s.mut_metadata()
            .set_conf_state(ConfState::from((voters, vec![])));
        m.set_snapshot(s);
        m
    }

    #[test]
    fn ordinary_messages_pass() {
        with_view(|v| {
            assert_eq!(
                validate(v, Some(1), &append(3, 10, 3, &[(11, 3), (12, 3)])),
                Ok(())
            );
            assert_eq!(validate(v, Some(1), &append(4, 9, 3, &[(10, 4)])), Ok(()));
            assert_eq!(
                validate(v, Some(1), &snapshot(3, 20, 3, vec![3, 1, 2])),
                Ok(())
            );
            let mut hb = msg(MessageType::MsgHeartbeat, 3);
            hb.commit = 10;
            assert_eq!(validate(v, Some(1), &hb), Ok(()));
            let mut vote = msg(MessageType::MsgRequestVote, 4);
            vote.from = 3;
            vote.index = 10;
            vote.log_term = 3;
            vote.commit = 8;
            vote.commit_term = 3;
            assert_eq!(validate(v, Some(3), &vote), Ok(()));
        });
    }

    #[test]
    fn sender_and_recipient_must_match() {
        with_view(|v| {
            let m = append(3, 10, 3, &[]);
            assert_eq!(
                validate(v, Some(3), &m),
                Err(Rejection::SenderMismatch {
                    claimed: 1,
                    transport: 3
                })
            );
            let mut m2 = m.clone();
            m2.from = 9;
            assert_eq!(validate(v, None, &m2), Err(Rejection::UnknownSender(9)));
            m2.from = 2;
            assert_eq!(validate(v, None, &m2), Err(Rejection::UnknownSender(2)));
            let mut m3 = m;
            m3.to = 3;
            assert_eq!(validate(v, None, &m3), Err(Rejection::WrongRecipient(3)));
        });
    }

    #[test]
    fn appends_that_contradict_the_committed_log_are_refused() {
        with_view(|v| {
            // Anchored past the commit with a term below the committed entry's (would walk into the compacted prefix).
            assert!(matches!(
                validate(v, None, &append(3, 9, 2, &[])),
                Err(Rejection::Conflict(_))
            ));
            // Entry terms above the message term, decreasing, or not contiguous.
            for m in [
                append(3, 10, 3, &[(11, 4)]),
                append(3, 10, 3, &[(11, 3), (12, 2)]),
                append(3, 10, 3, &[(12, 3)]),
                append(3, 5, 0, &[]),
            ] {
                assert!(
                    matches!(validate(v, None, &m), Err(Rejection::Malformed(_))),
                    "{m:?}"
                );
            }
            // A stale append (older term) is not judged against the log: raft-rs only answers it.
            assert_eq!(validate(v, None, &append(2, 9, 2, &[(10, 2)])), Ok(()));
        });
    }

    #[test]
    fn snapshots_that_contradict_the_committed_log_or_group_are_refused() {
        with_view(|v| {
            for m in [
                snapshot(3, 8, 2, vec![1, 2, 3]),
                snapshot(3, 20, 2, vec![1, 2, 3]),
                snapshot(3, 20, 3, vec![1, 2]),
                snapshot(3, 20, 3, vec![1, 2, 3, 4]),
                snapshot(3, 20, 3, vec![1, 2, 2, 3]),
            ] {
                assert!(
                    matches!(validate(v, None, &m), Err(Rejection::Conflict(_))),
                    "{m:?}"
                );
            }
            assert!(matches!(
                validate(v, None, &snapshot(3, 20, 4, vec![1, 2, 3])),
                Err(Rejection::Malformed(_))
            ));
        });
    }

    #[test]
    fn timeout_now_only_from_the_current_leader() {
        with_view(|v| {
            assert_eq!(
                validate(v, None, &msg(MessageType::MsgTimeoutNow, 3)),
                Ok(())
            );
            let mut m = msg(MessageType::MsgTimeoutNow, 3);
            m.from = 3;
            assert!(validate(v, None, &m).is_err());
            assert!(validate(v, None, &msg(MessageType::MsgTimeoutNow, 4)).is_err());
        });
    }

    #[test]
    fn terms_and_indexes_near_the_top_are_refused() {
        with_view(|v| {
            let mut m = append(3, 10, 3, &[]);
            m.commit = MAX_TERM_OR_INDEX;
            assert!(matches!(
                validate(v, None, &m),
                Err(Rejection::OutOfRange { .. })
            ));
            assert!(matches!(
                validate(v, None, &msg(MessageType::MsgHeartbeat, u64::MAX)),
                Err(Rejection::OutOfRange { .. })
            ));
        });
    }
}
