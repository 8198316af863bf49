//! The group's in-memory Raft log (raft-rs `Storage`), plus the latest snapshot to send.

use std::sync::Arc;

use parking_lot::Mutex;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage};

/// Raft's read view of the log: raft-rs's `MemStorage` for entries and state, and the
/// snapshot made at the last compaction (what a replica behind the compacted prefix gets).
#[derive(Clone)]
pub struct GroupStorage {
    mem: MemStorage,
    last_snapshot: Arc<Mutex<Snapshot>>,
}

impl GroupStorage {
    /// A storage for voters `peers`, restored from a snapshot and entries if given.
    pub fn new(
        peers: &[u64],
        hard_state: HardState,
        snapshot: Option<Snapshot>,
        entries: &[Entry],
    ) -> raft::Result<Self> {
        let mem = MemStorage::new_with_conf_state(ConfState::from((peers.to_vec(), vec![])));
        let mut last = Snapshot::default();
        {
            let mut w = mem.wl();
            if let Some(mut s) = snapshot {
                s.mut_metadata()
                    .set_conf_state(ConfState::from((peers.to_vec(), vec![])));
                w.apply_snapshot(s.clone())?;
                last = s;
            }
            let from = last.get_metadata().index;
            let keep: Vec<Entry> = entries.iter().filter(|e| e.index > from).cloned().collect();
            if !keep.is_empty() {
                w.append(&keep)?;
            }
            w.set_hardstate(hard_state);
        }
        Ok(GroupStorage {
            mem,
            last_snapshot: Arc::new(Mutex::new(last)),
        })
    }

    /// The underlying in-memory log.
    pub fn mem(&self) -> &MemStorage {
        &self.mem
    }

    /// Records the snapshot to hand to replicas behind the compacted prefix.
    pub fn set_last_snapshot(&self, s: Snapshot) {
        *self.last_snapshot.lock() = s;
    }

    /// The snapshot replicas behind the compacted prefix get.
    pub fn last_snapshot(&self) -> Snapshot {
        self.last_snapshot.lock().clone()
    }
}

impl Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let s = self.last_snapshot.lock();
        if idx == s.get_metadata().index && idx != 0 {
            return Ok(s.get_metadata().term);
        }
        drop(s);
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let s = self.last_snapshot.lock().clone();
        if s.get_metadata().index < request_index || s.get_metadata().index == 0 {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(s)
    }
}
