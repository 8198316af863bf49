//! [`LabCore`] for each protocol core.

use bytes::Bytes;
use mako_group::LogEntry;
use mako_group::chunk::Reassembler;
use mako_paxos::PaxosNode;
use mako_raft::{RaftNode, wire};
use raft::eraftpb::MessageType;

use crate::LabCore;

impl LabCore for RaftNode {
    fn captures_dropped(&self) -> u64 {
        self.stats().captures_dropped
    }

    fn propose(&mut self, entry: Bytes) -> bool {
        RaftNode::propose(self, entry).is_ok()
    }

    fn campaign(&mut self) -> bool {
        RaftNode::campaign(self).is_ok()
    }

    fn first_index(&self) -> u64 {
        RaftNode::first_index(self)
    }

    fn last_index(&self) -> u64 {
        RaftNode::last_index(self)
    }

    fn snapshots_installed(&self) -> u64 {
        self.stats().snapshots_installed
    }

    fn lease_acks(&self) -> u64 {
        self.stats().lease_acks
    }

    fn is_request(payload: &Bytes) -> bool {
        match wire::Reassembler::default().push(0, payload) {
            Ok(Some(m)) => !matches!(
                m.get_msg_type(),
                MessageType::MsgAppendResponse
                    | MessageType::MsgRequestVoteResponse
                    | MessageType::MsgRequestPreVoteResponse
                    | MessageType::MsgHeartbeatResponse
            ),
            _ => true,
        }
    }

    fn describe(&self) -> String {
        format!("unpersisted={} {:?}", self.unpersisted_jobs(), self.stats())
    }

    fn matching_log(&self) -> Option<Vec<LogEntry>> {
        use raft::Storage;
        let (lo, hi) = (RaftNode::first_index(self), RaftNode::last_index(self));
        if hi < lo {
            return Some(Vec::new());
        }
        let entries = self
            .storage()
            .entries(lo, hi + 1, None, raft::GetEntriesContext::empty(false))
            .unwrap_or_default();
        Some(
            entries
                .into_iter()
                .map(|e| LogEntry {
                    index: e.index,
                    term: e.term,
                    payload: e.data,
                })
                .collect(),
        )
    }

    fn payload_at(&self, index: u64) -> Option<Bytes> {
        use raft::Storage;
        let e = self
            .storage()
            .entries(
                index,
                index + 1,
                None,
                raft::GetEntriesContext::empty(false),
            )
            .ok()?;
        e.into_iter().next().map(|e| e.data)
    }
}

impl LabCore for PaxosNode {
    fn captures_dropped(&self) -> u64 {
        self.stats().captures_dropped
    }

    fn propose(&mut self, entry: Bytes) -> bool {
        PaxosNode::propose(self, entry).is_ok()
    }

    fn campaign(&mut self) -> bool {
        PaxosNode::campaign(self)
    }

    fn first_index(&self) -> u64 {
        PaxosNode::first_index(self)
    }

    fn last_index(&self) -> u64 {
        PaxosNode::last_index(self)
    }

    fn snapshots_installed(&self) -> u64 {
        self.stats().snapshots_installed
    }

    fn lease_acks(&self) -> u64 {
        self.stats().lease_acks
    }

    fn is_request(payload: &Bytes) -> bool {
        match Reassembler::default().push(0, payload) {
            Ok(Some(body)) => mako_paxos::wire::decode(&body).map_or(true, |m| m.is_request()),
            _ => true,
        }
    }

    fn describe(&self) -> String {
        format!("unpersisted={} {:?}", self.unpersisted_jobs(), self.stats())
    }

    /// Multi-Paxos has no log matching property: slots are decided one by one.
    fn matching_log(&self) -> Option<Vec<LogEntry>> {
        None
    }

    fn payload_at(&self, index: u64) -> Option<Bytes> {
        self.entry(index).map(|e| e.payload.clone())
    }

    fn check_invariants(&self) -> Result<(), String> {
        PaxosNode::check_invariants(self)
    }
}
