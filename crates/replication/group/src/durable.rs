//! What a replica keeps durable and how it comes back: persist jobs as log-store writes,
//! snapshot files, and recovery of a group from both.
//!
//! The log store is the one source of truth: a snapshot file is used only when the log
//! names it (a `snapshot` or `snapshot_point` record with its index and term). Writing a
//! new snapshot goes: file (to a temporary name, synced, renamed, directory synced), then
//! the log record that names it, then deletion of older files. A crash after any step
//! recovers the old state (the log still names the old file, which still exists) or the
//! new one (the log names the new file, which is complete); files the log does not name
//! are deleted at recovery.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use mako_logstore::{GroupState, GroupWrite, SnapshotMeta};

use crate::core::{InitialState, PersistJob, Snapshot};

/// Converts a persist job into the log-store write that makes it durable.
///
/// A snapshot from a peer replaces the log (`snapshot`); a local one is a
/// `snapshot_point` (the entries after it stay). Either way the snapshot's file must be
/// durable before this write is queued.
pub fn group_write(shard: u32, job: &PersistJob) -> GroupWrite {
    let meta = job.snapshot.as_ref().map(|s| SnapshotMeta {
        index: s.index,
        term: s.term,
    });
    GroupWrite {
        group: shard,
        entries: job.entries.clone(),
        keep_later: job.keep_later,
        hard_state: job.hard_state,
        snapshot: meta.filter(|_| job.snapshot_installed),
        snapshot_point: meta.filter(|_| !job.snapshot_installed),
        compact_to: job.compact_to,
    }
}

/// Why a group's durable state could not be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The log names a snapshot that cannot be read.
    #[error("shard {shard}: the log names snapshot {index} (term {term}), but {reason}")]
    Snapshot {
        /// The group.
        shard: u32,
        /// The snapshot's index.
        index: u64,
        /// The snapshot's term.
        term: u64,
        /// What is wrong.
        reason: String,
    },
    /// The entries do not continue the snapshot (e.g. after an operator repair).
    #[error("shard {shard}: the log's entries start at {first}, not right after {after}")]
    Gap {
        /// The group.
        shard: u32,
        /// Index the entries should continue from.
        after: u64,
        /// Index they start at.
        first: u64,
    },
    /// The log was compacted but names no snapshot.
    #[error("shard {shard}: the log starts at index {first} but names no snapshot")]
    MissingSnapshot {
        /// The group.
        shard: u32,
        /// The first index the log holds.
        first: u64,
    },
}

/// Rebuilds a group's initial state from its recovered log and the snapshot the log names.
pub fn recover_group(
    shard: u32,
    g: Option<GroupState>,
    snapshots: &dyn SnapshotStore,
) -> Result<InitialState, RecoverError> {
    let Some(g) = g else {
        return Ok(InitialState::default());
    };
    // Files the log does not name are leftovers of a crash mid-snapshot.
    let named = g.snapshot.map(|m| m.index);
    if let Err(e) = snapshots.remove(shard, &|i| Some(i) != named) {
        tracing::warn!(shard, "removing unreferenced snapshot files: {e}");
    }
    let mut hs = g.hard_state;
    let snapshot = match g.snapshot {
        Some(meta) => {
            let bad = |reason: String| RecoverError::Snapshot {
                shard,
                index: meta.index,
                term: meta.term,
                reason,
            };
            let s = snapshots
                .load(shard, meta.index)
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| bad("its file is missing".into()))?;
            if s.index != meta.index || s.term != meta.term {
                return Err(bad(format!(
                    "the file holds index {} term {}",
                    s.index, s.term
                )));
            }
            // A snapshot holds committed state only.
            hs.commit = hs.commit.max(meta.index);
            Some(s)
        }
        None if g.first_index > 1 => {
            return Err(RecoverError::MissingSnapshot {
                shard,
                first: g.first_index,
            });
        }
        None => None,
    };
    let from = snapshot.as_ref().map_or(0, |s| s.index);
    let entries: Vec<_> = g.entries.into_iter().filter(|e| e.index > from).collect();
    // The entries continue the snapshot (or start the log) without a gap.
    if let Some(first) = entries.first()
        && first.index != from + 1
        && !(snapshot.is_none() && first.index <= g.first_index.max(1))
    {
        return Err(RecoverError::Gap {
            shard,
            after: from,
            first: first.index,
        });
    }
    // The commit index never points past what the log holds.
    let last = entries.last().map_or(from, |e| e.index);
    hs.commit = hs.commit.min(last).max(from);
    Ok(InitialState {
        hard_state: hs,
        snapshot,
        entries,
    })
}

/// Where snapshots (with their data) are kept, by shard and index.
pub trait SnapshotStore: Send + Sync {
    /// Makes `snap` durable under its index (atomically: complete or absent).
    fn save(&self, shard: u32, snap: &Snapshot) -> io::Result<()>;
    /// The snapshot of `shard` at `index`, if kept.
    fn load(&self, shard: u32, index: u64) -> io::Result<Option<Snapshot>>;
    /// Whether a snapshot of `shard` at `index` is kept (complete; without reading it).
    fn contains(&self, shard: u32, index: u64) -> io::Result<bool>;
    /// Deletes the snapshots of `shard` whose index `drop` selects.
    fn remove(&self, shard: u32, drop: &dyn Fn(u64) -> bool) -> io::Result<()>;
}

/// Snapshots in memory (durability `memory`, simulations).
#[derive(Debug, Default)]
pub struct MemSnapshots {
    snaps: parking_lot::Mutex<HashMap<(u32, u64), Snapshot>>,
}

impl SnapshotStore for MemSnapshots {
    fn save(&self, shard: u32, snap: &Snapshot) -> io::Result<()> {
        self.snaps.lock().insert((shard, snap.index), snap.clone());
        Ok(())
    }

    fn load(&self, shard: u32, index: u64) -> io::Result<Option<Snapshot>> {
        Ok(self.snaps.lock().get(&(shard, index)).cloned())
    }

    fn contains(&self, shard: u32, index: u64) -> io::Result<bool> {
        Ok(self.snaps.lock().contains_key(&(shard, index)))
    }

    fn remove(&self, shard: u32, drop: &dyn Fn(u64) -> bool) -> io::Result<()> {
        self.snaps
            .lock()
            .retain(|(s, i), _| *s != shard || !drop(*i));
        Ok(())
    }
}

/// Magic opening a snapshot file.
const SNAP_MAGIC: &[u8; 8] = b"MKSNAP02";

/// The steps of writing a snapshot file, for crash-point tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStep {
    /// The temporary file is written and synced.
    TempWritten,
    /// It is renamed to its final name.
    Renamed,
    /// The directory is synced.
    DirSynced,
}

/// Snapshot files in a directory: `snapshot-<shard>-<index>.snap`, each
/// `[magic 8][len u64][crc32c u32][index u64][term u64][data]`, the checksum and length
/// covering everything after the crc.
pub struct FileSnapshots {
    dir: PathBuf,
    /// Test hook: stop (as a crash would) right after this step.
    crash_after: parking_lot::Mutex<Option<SnapshotStep>>,
    /// Numbers the temporary files, so that two saves of one index at once (the snapshot
    /// thread's capture, the group thread's install) never write the same one.
    tmp_seq: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for FileSnapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSnapshots")
            .field("dir", &self.dir)
            .finish()
    }
}

impl FileSnapshots {
    /// Snapshot files in `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(FileSnapshots {
            dir,
            crash_after: parking_lot::Mutex::new(None),
            tmp_seq: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Makes the next `save` fail right after `step`, leaving the files as a crash would.
    pub fn crash_after(&self, step: SnapshotStep) {
        *self.crash_after.lock() = Some(step);
    }

    fn path(&self, shard: u32, index: u64) -> PathBuf {
        self.dir.join(format!("snapshot-{shard}-{index:020}.snap"))
    }

    fn check_step(&self, step: SnapshotStep) -> io::Result<()> {
        let mut c = self.crash_after.lock();
        if *c == Some(step) {
            *c = None;
            return Err(io::Error::other(format!("injected crash after {step:?}")));
        }
        Ok(())
    }

    /// Files of `shard` with their indexes.
    fn files(&self, shard: u32) -> io::Result<Vec<(u64, PathBuf)>> {
        let prefix = format!("snapshot-{shard}-");
        let mut out = Vec::new();
        for dent in std::fs::read_dir(&self.dir)? {
            let dent = dent?;
            let name = dent.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(idx) = rest.strip_suffix(".snap").and_then(|i| i.parse().ok()) {
                out.push((idx, dent.path()));
            } else if rest.ends_with(".tmp") {
                out.push((u64::MAX, dent.path()));
            }
        }
        Ok(out)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl SnapshotStore for FileSnapshots {
    fn save(&self, shard: u32, snap: &Snapshot) -> io::Result<()> {
        let index = snap.index;
        let mut body = Vec::with_capacity(16 + snap.data.len());
        body.extend_from_slice(&snap.index.to_le_bytes());
        body.extend_from_slice(&snap.term.to_le_bytes());
        body.extend_from_slice(&snap.data);
        let path = self.path(shard, index);
        let n = self
            .tmp_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("{n}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(SNAP_MAGIC)?;
            f.write_all(&(body.len() as u64).to_le_bytes())?;
            f.write_all(&crc32c::crc32c(&body).to_le_bytes())?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        self.check_step(SnapshotStep::TempWritten)?;
        std::fs::rename(&tmp, &path)?;
        self.check_step(SnapshotStep::Renamed)?;
        sync_dir(&self.dir)?;
        self.check_step(SnapshotStep::DirSynced)
    }

    fn contains(&self, shard: u32, index: u64) -> io::Result<bool> {
        // A file under the final name is complete: saves rename it there last.
        self.path(shard, index).try_exists()
    }

    fn load(&self, shard: u32, index: u64) -> io::Result<Option<Snapshot>> {
        let path = self.path(shard, index);
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let invalid = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {what}", path.display()),
            )
        };
        let mut head = [0u8; 20];
        f.read_exact(&mut head)
            .map_err(|_| invalid("short header"))?;
        if &head[..8] != SNAP_MAGIC {
            return Err(invalid("bad magic"));
        }
        let len = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(head[16..20].try_into().unwrap_or_default());
        let file_len = f.metadata()?.len();
        if len != file_len.saturating_sub(20) {
            return Err(invalid("length does not match the file"));
        }
        let mut body = Vec::with_capacity(len as usize);
        f.read_to_end(&mut body)?;
        if crc32c::crc32c(&body) != crc {
            return Err(invalid("checksum mismatch"));
        }
        if body.len() < 16 {
            return Err(invalid("shorter than its index and term"));
        }
        let word = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or_default());
        let (index, term) = (word(0), word(8));
        let data = Bytes::from(body).slice(16..);
        Ok(Some(Snapshot { index, term, data }))
    }

    fn remove(&self, shard: u32, drop: &dyn Fn(u64) -> bool) -> io::Result<()> {
        let mut removed = false;
        for (idx, path) in self.files(shard)? {
            if drop(idx) {
                std::fs::remove_file(&path)?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(index: u64, term: u64, data: &[u8]) -> Snapshot {
        Snapshot {
            index,
            term,
            data: Bytes::copy_from_slice(data),
        }
    }

    /// The host's snapshot thread saves captures while the group's thread saves installed
    /// snapshots: two saves of one index at once each complete, and the file is one of them.
    #[test]
    fn concurrent_saves_of_one_index_leave_one_whole_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let fs = std::sync::Arc::new(FileSnapshots::new(dir.path()).unwrap());
        let a = vec![b'a'; 256 << 10];
        let b = vec![b'b'; 200 << 10];
        for index in 0..40 {
            let saves: Vec<_> = [a.clone(), b.clone()]
                .into_iter()
                .map(|data| {
                    let fs = std::sync::Arc::clone(&fs);
                    std::thread::spawn(move || fs.save(0, &snap(index, 1, &data)))
                })
                .collect();
            for s in saves {
                s.join().unwrap().expect("each save completes");
            }
            let got = fs.load(0, index).unwrap().expect("the snapshot").data;
            assert!(got[..] == a[..] || got[..] == b[..], "index {index}: a mix");
        }
    }

    #[test]
    fn files_round_trip_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FileSnapshots::new(dir.path()).unwrap();
        fs.save(3, &snap(10, 2, b"state")).unwrap();
        let got = fs.load(3, 10).unwrap().unwrap();
        assert_eq!(&got.data[..], b"state");
        assert!(fs.load(3, 11).unwrap().is_none());
        let path = fs.path(3, 10);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(fs.load(3, 10).is_err());
        fs.save(3, &snap(20, 2, b"later")).unwrap();
        fs.remove(3, &|i| i != 20).unwrap();
        assert_eq!(fs.files(3).unwrap().len(), 1);
    }

    #[test]
    fn recovery_refuses_a_compacted_log_without_its_snapshot() {
        let g = GroupState {
            hard_state: mako_logstore::HardState {
                term: 2,
                vote: 1,
                commit: 30,
            },
            snapshot: Some(SnapshotMeta { index: 20, term: 2 }),
            first_index: 21,
            entries: vec![],
        };
        let store = MemSnapshots::default();
        let err = recover_group(0, Some(g.clone()), &store).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let g2 = GroupState {
            snapshot: None,
            ..g.clone()
        };
        assert!(matches!(
            recover_group(0, Some(g2), &store),
            Err(RecoverError::MissingSnapshot { .. })
        ));
        store.save(0, &snap(20, 2, b"x")).unwrap();
        let init = recover_group(0, Some(g), &store).unwrap();
        assert_eq!(init.hard_state.commit, 20, "commit clamped to what is held");
        assert_eq!(init.hard_state.term, 2);
    }
}
