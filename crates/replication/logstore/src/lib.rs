//! `mako-logstore`: the node's durable Raft log, shared by every replication group on a node.
//!
//! All groups' records go into **one** log stream, written by one writer thread, so a
//! single `fdatasync` covers whatever every group queued meanwhile (group commit). The
//! store is Raft-agnostic: entries are opaque payloads with an index and a term, plus a
//! per-group hard state, snapshot point and compaction point. It does not keep entries in
//! memory for reading (the Raft layer keeps its own in-memory log); it only remembers what
//! it needs to decide which segments can be reclaimed.
//!
//! # Open
//!
//! [`LogStore::open`] takes a [`LogStoreConfig`] (directory, [`Durability`], segment size,
//! spare count, batch cap). It replays the directory and returns the store together with
//! [`Recovered`]: for every group its [`GroupState`] — hard state, snapshot point, first
//! needed index and the live entries. Torn tails (a crash in the middle of a write) are
//! cut off cleanly; a file that is not a segment of this format is an error, never a
//! panic.
//!
//! ```
//! use mako_logstore::{Durability, GroupWrite, HardState, LogEntry, LogStore, LogStoreConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let cfg = LogStoreConfig { segment_bytes: 1 << 20, ..LogStoreConfig::new(dir.path()) };
//! let (log, recovered) = LogStore::open(cfg.clone())?;
//! assert!(recovered.groups.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Write
//!
//! A [`LogStore::write`] call carries one [`GroupWrite`] per group it changes; all of them
//! become durable atomically (recovery sees all or none). Writes become durable in
//! submission order and their `done` callbacks run on the writer thread, in that order,
//! once durable per the durability mode. [`LogStore::write_sync`] blocks instead.
//!
//! ```
//! # use mako_logstore::*;
//! # let dir = tempfile::tempdir()?;
//! # let cfg = LogStoreConfig { segment_bytes: 1 << 20, ..LogStoreConfig::new(dir.path()) };
//! # let (log, _) = LogStore::open(cfg.clone())?;
//! log.write_sync(vec![GroupWrite {
//!     group: 3,
//!     entries: vec![LogEntry::new(1, 1, &b"put a=1"[..]), LogEntry::new(2, 1, &b"put b=2"[..])],
//!     hard_state: Some(HardState { term: 1, vote: 7, commit: 1 }),
//!     ..GroupWrite::new(3)
//! }])?;
//! // Raft overwrite: a new leader replaces index 2; compaction drops index 1.
//! log.write_sync(vec![GroupWrite {
//!     entries: vec![LogEntry::new(2, 2, &b"put c=3"[..])],
//!     compact_to: Some(2),
//!     ..GroupWrite::new(3)
//! }])?;
//! log.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Recover
//!
//! Reopening replays every segment in sequence order, applying overwrite, snapshot and
//! compaction semantics, and continues appending after the last good record:
//!
//! ```
//! # use mako_logstore::*;
//! # let dir = tempfile::tempdir()?;
//! # let cfg = LogStoreConfig { segment_bytes: 1 << 20, ..LogStoreConfig::new(dir.path()) };
//! # let (log, _) = LogStore::open(cfg.clone())?;
//! # log.write_sync(vec![GroupWrite { entries: vec![LogEntry::new(1, 1, &b"put a=1"[..]),
//! #     LogEntry::new(2, 1, &b"put b=2"[..])], hard_state: Some(HardState { term: 1, vote: 7,
//! #     commit: 1 }), ..GroupWrite::new(3) }])?;
//! # log.write_sync(vec![GroupWrite { entries: vec![LogEntry::new(2, 2, &b"put c=3"[..])],
//! #     compact_to: Some(2), ..GroupWrite::new(3) }])?;
//! # drop(log);
//! let (_log, recovered) = LogStore::open(cfg)?;
//! let g = &recovered.groups[&3];
//! assert_eq!(g.hard_state, HardState { term: 1, vote: 7, commit: 1 });
//! assert_eq!(g.first_index, 2);
//! assert_eq!(g.entries, vec![LogEntry::new(2, 2, &b"put c=3"[..])]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The on-disk format, checkpoints and segment reclamation are described in [`mod@format`].

#![warn(missing_docs)]

mod config;
mod error;
pub mod format;
mod recovery;
mod state;
mod types;
mod writer;

use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

pub use config::{Durability, LogStoreConfig, MIN_SEGMENT_BYTES, ParseDurabilityError};
pub use error::LogError;
pub use state::LogModel;
pub use types::{GroupState, GroupWrite, HardState, LogEntry, LogStats, Recovered, SnapshotMeta};

use crate::format::{HEADER_LEN, RecordWriter, entries_record_len};
use crate::writer::{Counters, Disk, Job, Summary};

/// The node's durable log: one writer thread, one log stream for all groups.
pub struct LogStore {
    tx: RwLock<Option<crossbeam_channel::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    writer_id: ThreadId,
    stats: Arc<Counters>,
    durability: Durability,
    segment_bytes: u64,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("durability", &self.durability)
            .field("segment_bytes", &self.segment_bytes)
            .finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (or creates) the log in `cfg.dir`, recovers it, and starts the writer thread.
    pub fn open(cfg: LogStoreConfig) -> Result<(LogStore, Recovered), LogError> {
        cfg.validate()?;
        let stats = Arc::new(Counters::default());
        let (disk, recovered) = match cfg.durability {
            Durability::Memory => (None, Recovered::default()),
            Durability::Fsync | Durability::Buffered => {
                let (state, recovered) = recovery::recover(&cfg)?;
                let disk = Disk::new(
                    state,
                    cfg.dir.clone(),
                    cfg.durability,
                    cfg.segment_bytes,
                    cfg.preallocated_segments,
                    stats.clone(),
                )?;
                (Some(disk), recovered)
            }
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let max_batch = cfg.max_batch_bytes;
        let writer = {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("logstore-writer".into())
                .spawn(move || writer::run_writer(rx, disk, stats, max_batch))?
        };
        let store = LogStore {
            tx: RwLock::new(Some(tx)),
            writer_id: writer.thread().id(),
            writer: Mutex::new(Some(writer)),
            stats,
            durability: cfg.durability,
            segment_bytes: cfg.segment_bytes,
        };
        Ok((store, recovered))
    }

    /// Queues a write; `done` runs (on the writer thread) once it is durable per the
    /// durability mode. Writes become durable in submission order; one sync covers every
    /// write queued meanwhile. After shutdown `done` gets [`LogError::Closed`] at once.
    pub fn write(
        &self,
        writes: Vec<GroupWrite>,
        done: Box<dyn FnOnce(Result<(), LogError>) + Send>,
    ) {
        let job = self.encode(writes, done);
        let guard = self.tx.read();
        let unsent = match guard.as_ref() {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        drop(guard);
        if let Some(job) = unsent {
            (job.done)(Err(LogError::Closed));
        }
    }

    /// Convenience: write and block until durable.
    pub fn write_sync(&self, writes: Vec<GroupWrite>) -> Result<(), LogError> {
        if std::thread::current().id() == self.writer_id {
            return Err(LogError::Reentrant);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.write(
            writes,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(LogError::Closed))
    }

    /// Counters since open: syncs, bytes written, records, segments recycled, etc.
    pub fn stats(&self) -> LogStats {
        self.stats.load()
    }

    /// The largest payload of a single entry one write can hold (a write never spans segments).
    pub fn max_entry_bytes(&self) -> usize {
        let empty = entries_record_len(&[LogEntry::new(0, 0, Bytes::new())]);
        (self.segment_bytes as usize).saturating_sub(
            HEADER_LEN
                + empty
                + format::HARD_STATE_RECORD_LEN
                + 2 * format::SNAPSHOT_RECORD_LEN
                + format::COMPACT_RECORD_LEN,
        )
    }

    /// The durability mode the store was opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Drains queued writes, syncs, joins the writer thread. Idempotent. Drop also does it.
    pub fn shutdown(&self) {
        drop(self.tx.write().take());
        if std::thread::current().id() == self.writer_id {
            // Called from a done callback: the writer exits on its own once it returns.
            return;
        }
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("log writer thread panicked");
            }
        }
    }

    /// Validates and encodes a write on the caller's thread.
    fn encode(&self, writes: Vec<GroupWrite>, done: writer::Done) -> Job {
        let mut job = Job {
            bytes: Vec::new(),
            records: 0,
            summary: Vec::with_capacity(writes.len()),
            invalid: None,
            done,
        };
        if let Err(e) = validate(&writes) {
            job.invalid = Some(e);
            return job;
        }
        if self.durability == Durability::Memory {
            return job;
        }
        let size: usize = writes
            .iter()
            .map(|w| {
                entries_record_len(&w.entries)
                    + w.hard_state.map_or(0, |_| format::HARD_STATE_RECORD_LEN)
                    + w.snapshot.map_or(0, |_| format::SNAPSHOT_RECORD_LEN)
                    + w.snapshot_point.map_or(0, |_| format::SNAPSHOT_RECORD_LEN)
                    + w.compact_to.map_or(0, |_| format::COMPACT_RECORD_LEN)
            })
            .sum();
        let max = self.segment_bytes - HEADER_LEN as u64;
        if size as u64 > max {
            job.invalid = Some(LogError::TooLarge {
                size: size as u64,
                max,
            });
            return job;
        }
        job.bytes.reserve_exact(size);
        let mut rw = RecordWriter::new(&mut job.bytes);
        for w in &writes {
            if w.is_empty() {
                continue;
            }
            rw.group_write(w);
            job.summary.push(Summary {
                group: w.group,
                max_index: w.entries.last().map(|e| e.index),
                hard_state: w.hard_state,
                snapshot: w.snapshot,
                snapshot_point: w.snapshot_point,
                compact_to: w.compact_to,
            });
        }
        job.records = rw.finish() as u64;
        job
    }
}

/// Rejects writes the format cannot represent or whose entries are not contiguous.
fn validate(writes: &[GroupWrite]) -> Result<(), LogError> {
    for w in writes {
        let Some(first) = w.entries.first() else {
            continue;
        };
        if w.entries.len() > u32::MAX as usize {
            return Err(LogError::InvalidWrite(format!(
                "group {}: too many entries in one write",
                w.group
            )));
        }
        for (k, e) in w.entries.iter().enumerate() {
            if first.index.checked_add(k as u64) != Some(e.index) {
                return Err(LogError::InvalidWrite(format!(
                    "group {}: entry indexes not contiguous ({} at position {k} after first {})",
                    w.group, e.index, first.index
                )));
            }
            if e.payload.len() > u32::MAX as usize {
                return Err(LogError::InvalidWrite(format!(
                    "group {}: payload of entry {} too large",
                    w.group, e.index
                )));
            }
        }
    }
    Ok(())
}

impl Drop for LogStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn store_is_send_sync() {
        assert_send_sync::<LogStore>();
    }

    #[test]
    fn durability_parse_display() {
        for d in [Durability::Fsync, Durability::Buffered, Durability::Memory] {
            assert_eq!(d.to_string().parse::<Durability>(), Ok(d));
        }
        assert_eq!(Durability::default(), Durability::Fsync);
        assert!("sometimes".parse::<Durability>().is_err());
    }
}
