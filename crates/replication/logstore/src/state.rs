//! The semantics of records applied to a group: shared by recovery and the writer's bookkeeping.

use std::collections::VecDeque;

use std::collections::BTreeMap;

use crate::types::{GroupState, GroupWrite, HardState, LogEntry, Recovered, SnapshotMeta};

/// What the writer remembers of a group (no entries): enough to write a checkpoint and to
/// decide which segments are reclaimable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupMeta {
    /// Last hard state.
    pub hard_state: HardState,
    /// Last snapshot point.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries below this index are dead.
    pub first_index: u64,
}

impl GroupMeta {
    /// Applies a snapshot record.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta) {
        self.snapshot = Some(meta);
        self.first_index = self.first_index.max(meta.index.saturating_add(1));
    }

    /// Applies a compact record.
    pub fn compact(&mut self, to: u64) {
        self.first_index = self.first_index.max(to);
    }
}

/// A group being rebuilt by recovery: meta plus live entries.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReplayGroup {
    /// Hard state, snapshot point and first needed index.
    pub meta: GroupMeta,
    /// Live entries, contiguous and ascending.
    pub entries: VecDeque<LogEntry>,
}

impl ReplayGroup {
    /// Drops entries below the first needed index.
    fn trim_front(&mut self) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.index < self.meta.first_index)
        {
            self.entries.pop_front();
        }
    }

    /// Applies an entries record starting at `first`: existing entries `>= first` are
    /// discarded (and all of them if `first` would leave a gap), then the new ones appended.
    pub fn append(&mut self, first: u64, new: impl IntoIterator<Item = LogEntry>) {
        match (self.entries.front(), self.entries.back()) {
            (Some(f), Some(l)) => {
                if first <= f.index || first > l.index.saturating_add(1) {
                    self.entries.clear();
                } else {
                    let keep = (first - f.index) as usize;
                    self.entries.truncate(keep);
                }
            }
            _ => self.entries.clear(),
        }
        let floor = self.meta.first_index;
        self.entries
            .extend(new.into_iter().filter(|e| e.index >= floor));
    }

    /// Applies an in-place entries record starting at `first`: the new entries replace the
    /// existing ones at their indexes and every later entry stays; existing entries below
    /// `first` stay only if they reach up to it without a gap (as for [`Self::append`]).
    ///
    /// Whether later entries stay never depends on the entries just above the written ones:
    /// recovery replays a segment without the entries of older, reclaimed segments, so those
    /// neighbours may be missing while later entries still matter. For the same reason new
    /// entries that would end below a gap before the later entries are dropped: the indexes
    /// of the gap were in reclaimed segments, so the new entries lie below the first needed
    /// index too (and the live log never has such a gap: its in-place writes replace indexes
    /// it holds).
    pub fn replace(&mut self, first: u64, new: Vec<LogEntry>) {
        let Some(end) = new.last().map(|e| e.index) else {
            return;
        };
        let contiguous = self
            .entries
            .back()
            .is_some_and(|l| l.index.saturating_add(1) >= first);
        if !contiguous {
            self.entries.clear();
            self.entries.extend(new);
            self.trim_front();
            return;
        }
        let later: Vec<LogEntry> = self
            .entries
            .iter()
            .filter(|e| e.index > end)
            .cloned()
            .collect();
        if later
            .first()
            .is_some_and(|e| e.index > end.saturating_add(1))
        {
            return;
        }
        while self.entries.back().is_some_and(|e| e.index >= first) {
            self.entries.pop_back();
        }
        self.entries.extend(new);
        self.entries.extend(later);
        self.trim_front();
    }

    /// Applies a hard-state record.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.meta.hard_state = hs;
    }

    /// Applies a snapshot-installed record: the snapshot replaces the whole log.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta) {
        self.meta.install_snapshot(meta);
        self.entries.clear();
    }

    /// Applies a checkpoint's snapshot-point record: notes the point, keeps later entries.
    pub fn note_snapshot(&mut self, meta: SnapshotMeta) {
        self.meta.install_snapshot(meta);
        self.trim_front();
    }

    /// Applies a compact record.
    pub fn compact(&mut self, to: u64) {
        self.meta.compact(to);
        self.trim_front();
    }

    /// The public form of the recovered group.
    pub fn into_state(self) -> GroupState {
        GroupState {
            hard_state: self.meta.hard_state,
            snapshot: self.meta.snapshot,
            first_index: self.meta.first_index,
            entries: self.entries.into(),
        }
    }
}

impl ReplayGroup {
    /// Applies one group's write, record by record, as recovery would replay it.
    pub fn apply_write(&mut self, w: &GroupWrite) {
        if let Some(s) = w.snapshot {
            self.install_snapshot(s);
        }
        if let Some(first) = w.entries.first() {
            if w.keep_later {
                self.replace(first.index, w.entries.clone());
            } else {
                self.append(first.index, w.entries.iter().cloned());
            }
        }
        if let Some(hs) = w.hard_state {
            self.set_hard_state(hs);
        }
        if let Some(p) = w.snapshot_point {
            self.note_snapshot(p);
        }
        if let Some(c) = w.compact_to {
            self.compact(c);
        }
    }
}

/// The log's semantics in memory: what recovery would return after the writes applied so far.
///
/// It runs the same record-application code as recovery, so a simulator that keeps its
/// "disk" in a `LogModel` cannot drift from the real store (the model test checks both).
#[derive(Clone, Debug, Default)]
pub struct LogModel {
    groups: BTreeMap<u32, ReplayGroup>,
}

impl LogModel {
    /// Applies writes as one durable `write` call.
    pub fn apply(&mut self, writes: &[GroupWrite]) {
        for w in writes.iter().filter(|w| !w.is_empty()) {
            self.groups.entry(w.group).or_default().apply_write(w);
        }
    }

    /// What recovery would return now.
    pub fn recovered(&self) -> Recovered {
        Recovered {
            groups: self
                .groups
                .iter()
                .map(|(g, r)| (*g, r.clone().into_state()))
                .collect(),
        }
    }

    /// One group's state as recovery would return it.
    pub fn group(&self, group: u32) -> Option<GroupState> {
        self.groups.get(&group).map(|r| r.clone().into_state())
    }
}
