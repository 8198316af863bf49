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
//! needed index and the live entries. A torn tail of the newest segment (a crash in the
//! middle of an unacknowledged write) is cut off cleanly; damage to acknowledged data
//! (anywhere in an older segment) makes open fail with a typed error naming the file and
//! offset, and [`LogStore::repair`] is the explicit operator step past it. A file that is
//! not a segment of this format is an error, never a panic.
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
mod queue;
mod recovery;
mod state;
mod types;
mod writer;

use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};

use parking_lot::Mutex;

pub use config::{Durability, LogStoreConfig, MIN_SEGMENT_BYTES, ParseDurabilityError};
pub use error::LogError;
pub use state::LogModel;
pub use types::{
    GroupState, GroupWrite, HardState, LogEntry, LogStats, Recovered, RepairCut, RepairReport,
    SnapshotMeta,
};

use crate::format::RecordWriter;
use crate::queue::{JobQueue, Refused};
use crate::writer::{Counters, Disk, Faults, Job, Summary};

/// Completion callback of one write: runs on the writer thread, in submission order.
pub type WriteDone = Box<dyn FnOnce(Result<(), LogError>) + Send>;

/// [`LogStore::try_write`] found the queue full; the write and its callback are handed
/// back untouched (nothing was queued, `done` has not run).
pub struct Busy {
    /// The refused write.
    pub writes: Vec<GroupWrite>,
    /// Its callback, not yet called.
    pub done: WriteDone,
}

impl std::fmt::Debug for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Busy")
            .field("writes", &self.writes.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("log store write queue is full")
    }
}

impl std::error::Error for Busy {}

/// The node's durable log: one writer thread, one log stream for all groups.
pub struct LogStore {
    queue: Arc<JobQueue>,
    writer: Mutex<Option<JoinHandle<()>>>,
    writer_id: ThreadId,
    stats: Arc<Counters>,
    durability: Durability,
    segment_bytes: u64,
    faults: Arc<Faults>,
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
    ///
    /// A torn tail of the newest segment (a crash during an unacknowledged write) is cut
    /// off. Damage anywhere else is corruption of acknowledged data: open fails with
    /// [`LogError::Corrupt`] (file and byte offset) or [`LogError::BadSegment`] and changes
    /// nothing; [`LogStore::repair`] is the explicit way past it.
    pub fn open(cfg: LogStoreConfig) -> Result<(LogStore, Recovered), LogError> {
        Self::open_inner(cfg, Arc::default())
    }

    fn open_inner(
        cfg: LogStoreConfig,
        faults: Arc<Faults>,
    ) -> Result<(LogStore, Recovered), LogError> {
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
                    faults.clone(),
                )?;
                (Some(disk), recovered)
            }
        };
        let queue = Arc::new(JobQueue::new(cfg.max_queued_writes, cfg.max_queued_bytes));
        let max_batch = cfg.max_batch_bytes;
        let writer = {
            let stats = stats.clone();
            let queue = queue.clone();
            let faults = faults.clone();
            std::thread::Builder::new()
                .name("logstore-writer".into())
                .spawn(move || writer::run_writer(queue, disk, stats, max_batch, faults))?
        };
        let store = LogStore {
            queue,
            writer_id: writer.thread().id(),
            writer: Mutex::new(Some(writer)),
            stats,
            durability: cfg.durability,
            segment_bytes: cfg.segment_bytes,
            faults,
        };
        Ok((store, recovered))
    }

    /// Queues a write; `done` runs (on the writer thread) once it is durable per the
    /// durability mode, or with the error that stopped it. Writes become durable in
    /// submission order and `done` callbacks run in that order; one sync covers every write
    /// queued meanwhile. After shutdown `done` gets [`LogError::Closed`] at once.
    ///
    /// # Failures
    ///
    /// A write the store refuses up front ([`LogError::InvalidWrite`],
    /// [`LogError::TooLarge`], [`LogError::TooManyGroups`]) gets the error in its `done`
    /// and writes nothing; the store goes on, so later writes may still succeed: a later
    /// success never covers a refused write. An I/O error is fail-stop: the write that hit
    /// it gets [`LogError::Io`], and every write after it (in submission order)
    /// [`LogError::Io`] or [`LogError::Failed`]; nothing is acknowledged any more.
    ///
    /// # Backpressure
    ///
    /// The queue to the writer thread is bounded ([`LogStoreConfig::max_queued_writes`],
    /// [`LogStoreConfig::max_queued_bytes`]). While it is full, `write` **blocks** the
    /// calling thread until the writer takes its next batch (it takes a whole batch off the
    /// queue before doing that batch's I/O). Blocking, rather than failing, keeps the
    /// caller's ordering simple: a write is never refused for lack of room, so a caller
    /// never has to hold back later writes behind a refused one. Use [`LogStore::try_write`]
    /// where the caller must not block.
    ///
    /// Why this cannot deadlock: the writer thread only ever waits for the disk, never for
    /// the queue or for a caller, so a blocked `write` always makes progress — provided the
    /// `done` callbacks do not block either. **`done` must not wait** for anything a
    /// `write`-blocked thread would provide: in particular it must not do a blocking send
    /// on a bounded channel drained by a thread that calls `write` (use an unbounded
    /// channel or `try_send`; such a completion channel holds at most the writes that were
    /// queued or in the writer's batch, plus those its owner submitted since its last
    /// drain). A `write` issued from a `done` callback (on the writer thread) never blocks:
    /// it is queued beyond the bound, since the writer cannot wait for itself.
    ///
    /// In `Memory` mode nothing is written: `done` runs at once, on the calling thread.
    pub fn write(&self, writes: Vec<GroupWrite>, done: WriteDone) {
        let job = self.encode(&writes, done);
        let Some(job) = self.in_memory(job) else {
            return;
        };
        let on_writer = std::thread::current().id() == self.writer_id;
        match self.queue.push(job, true, on_writer) {
            Ok(()) => {}
            Err(Refused::Closed(job) | Refused::Full(job)) => {
                (job.done)(Err(LogError::Closed));
            }
        }
    }

    /// Like [`LogStore::write`], but never blocks: if the queue is full, returns
    /// [`Busy`] with the write and `done` untouched (retry later, e.g. after one of your
    /// earlier writes completed). `Ok` means queued (or, after shutdown, already completed
    /// with [`LogError::Closed`]). From a `done` callback it always queues.
    pub fn try_write(&self, writes: Vec<GroupWrite>, done: WriteDone) -> Result<(), Busy> {
        let job = self.encode(&writes, done);
        let Some(job) = self.in_memory(job) else {
            return Ok(());
        };
        let on_writer = std::thread::current().id() == self.writer_id;
        match self.queue.push(job, false, on_writer) {
            Ok(()) => Ok(()),
            Err(Refused::Full(job)) => Err(Busy {
                writes,
                done: job.done,
            }),
            Err(Refused::Closed(job)) => {
                (job.done)(Err(LogError::Closed));
                Ok(())
            }
        }
    }

    /// Completes a write of a `Memory` store at once, on the calling thread, with what the
    /// writer would answer (it writes nothing; handing it over would only cost two thread
    /// wake-ups); hands back any other.
    fn in_memory(&self, mut job: Job) -> Option<Job> {
        if self.durability != Durability::Memory {
            return Some(job);
        }
        let r = if self.queue.is_closed() {
            Err(LogError::Closed)
        } else if self.faults.is_crashed() {
            Err(LogError::Crashed)
        } else {
            job.invalid.take().map_or(Ok(()), Err)
        };
        writer::complete_now(&self.stats, job.done, r);
        None
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

    /// The durability mode the store was opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Largest entry payload a write of one group with one entry (plus hard state,
    /// snapshot and compaction point) can carry: such a write is never refused as
    /// [`LogError::TooLarge`]. Fixed for the store's segment size (a quarter of each
    /// segment is reserved for its checkpoint); larger entries must be refused before they
    /// reach the log.
    pub fn max_entry_bytes(&self) -> u64 {
        format::max_entry_bytes(self.segment_bytes)
    }

    /// Largest encoded size of one `write` call (the sum of [`GroupWrite::encoded_len`]
    /// over its changes); larger writes get [`LogError::TooLarge`]. Split bigger batches of
    /// entries into several writes.
    pub fn max_write_bytes(&self) -> u64 {
        format::max_write_bytes(self.segment_bytes)
    }

    /// Most groups the log accepts (checkpoints must fit the segment's reserve); a write
    /// that would add more gets [`LogError::TooManyGroups`]. Not enforced in `Memory` mode.
    pub fn max_groups(&self) -> usize {
        format::max_groups(self.segment_bytes)
    }

    /// Operator repair of a log that [`LogStore::open`] refuses: truncates the log at its
    /// first damage in log order (a bad record in any segment, a bad header, missing
    /// segments), keeping every complete write before it, and removes every later segment.
    /// Returns what was dropped; a clean log is left as it is (apart from removing spares
    /// and cutting a torn tail, as open would). The store must not be open on `cfg.dir`.
    ///
    /// The result is the log as of the cut, with one loss beyond the dropped writes: a
    /// group whose later compaction (now dropped) had let older segments be reclaimed keeps
    /// its older, lower first needed index, so its surviving entries may start above it.
    /// The caller must treat the missing entries as compacted (e.g. fetch a snapshot).
    /// Foreign files named like segments are still [`LogError::BadSegment`]. Does nothing
    /// in `Memory` mode.
    pub fn repair(cfg: &LogStoreConfig) -> Result<RepairReport, LogError> {
        if cfg.durability == Durability::Memory {
            return Ok(RepairReport::default());
        }
        recovery::repair(cfg, false)
    }

    /// What [`LogStore::repair`] would drop, without changing anything.
    pub fn check(cfg: &LogStoreConfig) -> Result<RepairReport, LogError> {
        if cfg.durability == Durability::Memory {
            return Ok(RepairReport::default());
        }
        recovery::repair(cfg, true)
    }

    /// Drains queued writes, syncs, joins the writer thread. Idempotent. Drop also does it.
    /// Threads blocked in [`LogStore::write`] get [`LogError::Closed`].
    pub fn shutdown(&self) {
        self.queue.close();
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

    /// **Test support**: simulates a power loss of this node. The writer stops at once:
    /// no further write reaches the disk, every write not yet acknowledged gets
    /// [`LogError::Crashed`] (in submission order, on the writer thread), and the bytes
    /// written to the active segment since its last sync are discarded (zeroed), so
    /// reopening the directory with [`LogStore::open`] sees exactly the synced data. In
    /// `Fsync` mode that is exactly the acknowledged writes (a batch whose sync completed
    /// as the crash came may still be acknowledged before `crash` returns); in `Buffered`
    /// mode it is what the last sync covered, which may be less than was acknowledged.
    /// Files outside the log (spares being prepared, segments being retired) keep whatever
    /// their own syncs made durable.
    ///
    /// Returns once the writer thread has stopped (from a `done` callback: at once; the
    /// writer stops after that callback). Afterwards the store behaves as shut down:
    /// writes get [`LogError::Closed`]. Idempotent; a no-op after a clean shutdown.
    #[doc(hidden)]
    pub fn crash(&self) {
        if self.writer.lock().is_some() {
            self.faults
                .crashed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.shutdown();
    }

    /// **Test support**: makes the next flush that has bytes to write fail with an I/O
    /// error, as a failing disk would. The store then fails stop: the writes of that flush
    /// get [`LogError::Io`], later ones [`LogError::Failed`]. No effect in `Memory` mode
    /// (nothing is flushed there).
    #[doc(hidden)]
    pub fn inject_io_failure(&self) {
        self.faults
            .fail_next_flush
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Validates and encodes a write on the caller's thread.
    fn encode(&self, writes: &[GroupWrite], done: WriteDone) -> Job {
        let mut job = Job {
            bytes: Vec::new(),
            records: 0,
            size: 0,
            summary: Vec::with_capacity(writes.len()),
            invalid: None,
            done,
        };
        if let Err(e) = validate(writes) {
            job.invalid = Some(e);
            return job;
        }
        let size: usize = writes.iter().map(GroupWrite::encoded_len).sum();
        let max = self.max_write_bytes();
        if size as u64 > max {
            job.invalid = Some(LogError::TooLarge {
                size: size as u64,
                max,
            });
            return job;
        }
        job.size = size;
        if self.durability == Durability::Memory {
            return job;
        }
        job.bytes.reserve_exact(size);
        let mut rw = RecordWriter::new(&mut job.bytes);
        for w in writes {
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

    /// After an I/O failure the failed write's `done` gets the error and every later write
    /// fails too: nothing after it is ever acknowledged, and nothing of it reaches the log.
    #[test]
    fn io_failure_fails_the_write_and_every_later_one() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogStoreConfig {
            segment_bytes: 1 << 20,
            ..LogStoreConfig::new(dir.path())
        };
        let faults = Arc::new(writer::Faults::default());
        faults.fail_flush_at.store(3, Ordering::SeqCst);
        let (log, _) = LogStore::open_inner(cfg.clone(), faults.clone()).expect("open");
        let w = |i: u64| {
            vec![GroupWrite {
                entries: vec![LogEntry::new(i, 1, vec![i as u8; 100])],
                ..GroupWrite::new(1)
            }]
        };
        log.write_sync(w(1)).expect("flush 1");
        log.write_sync(w(2)).expect("flush 2");
        // Flush 3 fails. Queue several writes at once: whichever batch they land in, the
        // first one to fail is followed only by failures, in submission order.
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 3..=12u64 {
            let tx = tx.clone();
            log.write(
                w(i),
                Box::new(move |r| {
                    let _ = tx.send((i, r));
                }),
            );
        }
        let results: Vec<(u64, Result<(), LogError>)> =
            (3..=12).map(|_| rx.recv().expect("completion")).collect();
        assert_eq!(
            results.iter().map(|r| r.0).collect::<Vec<_>>(),
            (3..=12).collect::<Vec<_>>()
        );
        assert!(
            matches!(results[0].1, Err(LogError::Io(_))),
            "{:?}",
            results[0]
        );
        for (i, r) in &results[1..] {
            assert!(
                matches!(r, Err(LogError::Io(_) | LogError::Failed(_))),
                "write {i}: {r:?}"
            );
        }
        assert!(matches!(log.write_sync(w(13)), Err(LogError::Failed(_))));
        assert_eq!(
            faults.flushes.load(Ordering::SeqCst),
            3,
            "no flush after the failure"
        );
        drop(log);
        let (_log, rec) = LogStore::open(cfg).expect("reopen");
        let idx: Vec<u64> = rec.groups[&1].entries.iter().map(|e| e.index).collect();
        assert_eq!(idx, vec![1, 2]);
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
