//! The writer thread (group commit, segment switching, reclamation) and its helper thread
//! that prepares pre-zeroed spare segments off the sync path.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::queue::JobQueue;

use crate::config::Durability;
use crate::error::LogError;
use crate::format::{
    COMPACT_RECORD_LEN, HARD_STATE_RECORD_LEN, HEADER_LEN, RecordWriter, SNAPSHOT_RECORD_LEN,
    encode_header, max_groups, segment_file_name,
};
use crate::recovery::{DiskState, SegmentInfo, retire_segment, sync_dir, zero_range_until};
use crate::state::GroupMeta;
use crate::types::{HardState, LogStats, SnapshotMeta};

/// Completion callback of one write.
pub(crate) type Done = Box<dyn FnOnce(Result<(), LogError>) + Send>;

/// What one group's change does to the writer's bookkeeping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    /// Group.
    pub group: u32,
    /// Highest entry index written, if any entries.
    pub max_index: Option<u64>,
    /// New hard state.
    pub hard_state: Option<HardState>,
    /// New snapshot point (installed).
    pub snapshot: Option<SnapshotMeta>,
    /// New snapshot point (taken locally).
    pub snapshot_point: Option<SnapshotMeta>,
    /// New compaction point.
    pub compact_to: Option<u64>,
}

/// One queued `write` call, already encoded by the caller's thread.
pub(crate) struct Job {
    /// The write's records (empty in `Memory` mode or for an empty write).
    pub bytes: Vec<u8>,
    /// Number of records in `bytes`.
    pub records: u64,
    /// Encoded size of the write (also in `Memory` mode, where `bytes` stays empty).
    pub size: usize,
    /// Bookkeeping per group change.
    pub summary: Vec<Summary>,
    /// Set if the write was rejected up front; `done` gets it, in order.
    pub invalid: Option<LogError>,
    /// Completion callback.
    pub done: Done,
}

/// Shared counters behind [`LogStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub writes: AtomicU64,
    pub batches: AtomicU64,
    pub syncs: AtomicU64,
    pub sync_nanos: AtomicU64,
    pub bytes_written: AtomicU64,
    pub records: AtomicU64,
    pub rollovers: AtomicU64,
    pub segments_created: AtomicU64,
    pub segments_recycled: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub live_segments: AtomicU64,
    pub spare_segments: AtomicU64,
}

impl Counters {
    /// A snapshot of the counters.
    pub fn load(&self) -> LogStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LogStats {
            writes: l(&self.writes),
            batches: l(&self.batches),
            syncs: l(&self.syncs),
            sync_nanos: l(&self.sync_nanos),
            bytes_written: l(&self.bytes_written),
            records: l(&self.records),
            rollovers: l(&self.rollovers),
            segments_created: l(&self.segments_created),
            segments_recycled: l(&self.segments_recycled),
            segments_deleted: l(&self.segments_deleted),
            live_segments: l(&self.live_segments),
            spare_segments: l(&self.spare_segments),
        }
    }
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// Completes one write outside the writer thread (a `Memory` store), counted as the writer
/// counts a batch of one.
pub(crate) fn complete_now(stats: &Counters, done: Done, r: Result<(), LogError>) {
    add(&stats.writes, 1);
    add(&stats.batches, 1);
    complete(done, r);
}

/// Runs `done` with `r`, containing a panic so the writer thread survives it.
fn complete(done: Done, r: Result<(), LogError>) {
    if catch_unwind(AssertUnwindSafe(move || done(r))).is_err() {
        tracing::error!("a log write's done callback panicked");
    }
}

/// The writer thread's main loop: takes every queued write (up to `max_batch` bytes),
/// writes and syncs them as one batch, completes them in order. Returns when the queue is
/// closed and empty.
///
/// After a simulated crash ([`Faults::crashed`]) it writes nothing more: every write not
/// yet durable gets [`LogError::Crashed`] (in order), and on the way out the bytes written
/// since the last sync are discarded from the active segment.
pub(crate) fn run_writer(
    queue: Arc<JobQueue>,
    mut disk: Option<Disk>,
    stats: Arc<Counters>,
    max_batch: usize,
    faults: Arc<Faults>,
) {
    let mut jobs: Vec<Job> = Vec::new();
    while queue.pop_batch(&mut jobs, max_batch) {
        if faults.is_crashed() {
            for job in jobs.drain(..) {
                complete(job.done, Err(LogError::Crashed));
            }
            continue;
        }
        let results = match disk.as_mut() {
            Some(d) => d.write_batch(&jobs),
            None => jobs
                .iter_mut()
                .map(|j| j.invalid.take().map_or(Ok(()), Err))
                .collect::<Vec<_>>(),
        };
        // After a crash (during the batch, or from one of its callbacks) a write is
        // acknowledged only if its sync completed (`Fsync`); everything else never happened.
        let synced = disk
            .as_ref()
            .is_some_and(|d| d.durability == Durability::Fsync);
        add(&stats.writes, jobs.len() as u64);
        add(&stats.batches, 1);
        for (job, r) in jobs.drain(..).zip(results) {
            let r = if faults.is_crashed() && !(synced && r.is_ok()) {
                Err(LogError::Crashed)
            } else {
                r
            };
            complete(job.done, r);
        }
        if !faults.is_crashed()
            && let Some(d) = disk.as_mut()
        {
            d.after_batch();
        }
    }
    if let Some(mut d) = disk {
        if faults.is_crashed() {
            d.discard_unsynced();
        }
        d.close();
    }
}

/// A request to the helper thread.
enum HelperReq {
    /// Make segment `seq` a ready spare, recycling a retired segment if one is pooled.
    Prepare { seq: u64 },
    /// Take a reclaimed segment out of the log (header zeroed and synced) and pool it for
    /// recycling; `used_end` bytes of it may be non-zero.
    Retire { path: PathBuf, used_end: u64 },
}

/// An answer of the helper thread.
enum HelperResp {
    /// Segment `seq` is zeroed, synced and in place.
    Ready { seq: u64, file: File },
    /// Preparing segment `seq` failed.
    Failed { seq: u64, err: String },
}

/// The writer's view of the files: live segments, the active one, spares, group metadata.
pub(crate) struct Disk {
    dir: PathBuf,
    durability: Durability,
    segment_bytes: u64,
    preallocated: usize,
    segments: VecDeque<SegmentInfo>,
    active: Option<File>,
    write_off: u64,
    groups: BTreeMap<u32, GroupMeta>,
    next_seq: u64,
    next_prep_seq: u64,
    ready: BTreeMap<u64, File>,
    preparing: usize,
    failed_preps: BTreeMap<u64, String>,
    helper_tx: Option<Sender<HelperReq>>,
    helper_rx: Receiver<HelperResp>,
    helper: Option<JoinHandle<()>>,
    helper_stop: Arc<AtomicBool>,
    buf: Vec<u8>,
    /// Bytes of the active segment known durable (synced); what a crash keeps.
    synced_off: u64,
    /// End of the bytes ever written to the active segment (may pass `write_off` after a
    /// failed flush); a crash discards `synced_off..dirty_end`.
    dirty_end: u64,
    failed: Option<String>,
    stats: Arc<Counters>,
    /// Most groups the checkpoint reserve of a segment can describe.
    max_groups: usize,
    /// Fault injection and crash simulation (test support).
    faults: Arc<Faults>,
}

/// Fault injection and crash simulation, shared by the store handle and its writer
/// (test support: see [`LogStore::crash`](crate::LogStore::crash) and
/// [`LogStore::inject_io_failure`](crate::LogStore::inject_io_failure)).
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// The flush (1-based, counting every flush that has bytes) that fails; 0 = none.
    pub fail_flush_at: AtomicU64,
    /// Flushes so far.
    pub flushes: AtomicU64,
    /// The next flush that has bytes fails (then the flag clears).
    pub fail_next_flush: AtomicBool,
    /// A simulated power loss happened: nothing more is written.
    pub crashed: AtomicBool,
}

impl Faults {
    /// Whether a simulated crash happened.
    pub fn is_crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Counts a flush; an error if this flush is to fail (injected fault or crash).
    fn check_flush(&self) -> io::Result<()> {
        if self.is_crashed() {
            return Err(io::Error::other(CRASHED));
        }
        let n = self.flushes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_flush_at.load(Ordering::SeqCst)
            || self.fail_next_flush.swap(false, Ordering::SeqCst)
        {
            return Err(io::Error::other("injected flush failure"));
        }
        Ok(())
    }
}

/// Text of the error a flush gets after a simulated crash.
const CRASHED: &str = "log store crashed (simulated)";

impl Disk {
    /// Takes over the recovered directory and starts the helper thread.
    pub fn new(
        state: DiskState,
        dir: PathBuf,
        durability: Durability,
        segment_bytes: u64,
        preallocated: usize,
        stats: Arc<Counters>,
        faults: Arc<Faults>,
    ) -> io::Result<Disk> {
        let (req_tx, req_rx) = crossbeam_channel::unbounded();
        let (resp_tx, resp_rx) = crossbeam_channel::unbounded();
        let helper_stop = Arc::new(AtomicBool::new(false));
        let helper = {
            let dir = dir.clone();
            let stop = helper_stop.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("logstore-prep".into())
                .spawn(move || {
                    run_helper(
                        dir,
                        segment_bytes,
                        preallocated.max(1),
                        req_rx,
                        resp_tx,
                        stop,
                        stats,
                    )
                })?
        };
        let mut d = Disk {
            dir,
            durability,
            segment_bytes,
            preallocated,
            segments: state.segments,
            active: state.active,
            write_off: state.write_off,
            groups: state.groups,
            next_seq: state.next_seq,
            next_prep_seq: state.next_seq,
            ready: BTreeMap::new(),
            preparing: 0,
            failed_preps: BTreeMap::new(),
            helper_tx: Some(req_tx),
            helper_rx: resp_rx,
            helper: Some(helper),
            helper_stop,
            buf: Vec::new(),
            // What recovery found is taken as durable.
            synced_off: state.write_off,
            dirty_end: state.write_off,
            failed: None,
            stats,
            max_groups: max_groups(segment_bytes),
            faults,
        };
        d.after_batch();
        Ok(d)
    }

    /// Writes every job's bytes (switching segments where needed), syncs per the
    /// durability mode, and returns each job's result, in order.
    fn write_batch(&mut self, jobs: &[Job]) -> Vec<Result<(), LogError>> {
        let mut results: Vec<Result<(), LogError>> = Vec::with_capacity(jobs.len());
        // Jobs whose bytes sit in `buf`, not yet written and synced.
        let mut unflushed: Vec<usize> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            results.push(Ok(()));
            if let Some(f) = &self.failed {
                results[i] = Err(LogError::Failed(f.clone()));
                continue;
            }
            if let Some(e) = &job.invalid {
                results[i] = Err(e.duplicate());
                continue;
            }
            if job.bytes.is_empty() {
                continue;
            }
            let new_groups = self.new_groups(&job.summary);
            if new_groups > 0 && self.groups.len() + new_groups > self.max_groups {
                results[i] = Err(LogError::TooManyGroups {
                    groups: self.groups.len() + new_groups,
                    max: self.max_groups,
                });
                continue;
            }
            let need = job.bytes.len() as u64;
            let fits = match (&self.active, self.segments.back()) {
                (Some(_), Some(seg)) => self.write_off + self.buf.len() as u64 + need <= seg.len,
                _ => false,
            };
            if !fits {
                let room = self
                    .segment_bytes
                    .saturating_sub((HEADER_LEN + self.checkpoint_len()) as u64);
                if need > room {
                    results[i] = Err(LogError::TooLarge {
                        size: need,
                        max: room,
                    });
                    continue;
                }
                let step = self.flush().and_then(|()| {
                    unflushed.clear();
                    self.roll()
                });
                if let Err(e) = step {
                    self.fail(&e, &unflushed, &mut results);
                    unflushed.clear();
                    results[i] = Err(LogError::Io(e));
                    continue;
                }
            }
            self.buf.extend_from_slice(&job.bytes);
            add(&self.stats.records, job.records);
            self.apply(&job.summary);
            unflushed.push(i);
        }
        if let Err(e) = self.flush() {
            self.fail(&e, &unflushed, &mut results);
        }
        results
    }

    /// Enters the failed state after an I/O error; the jobs in `lost` get the error.
    fn fail(&mut self, e: &io::Error, lost: &[usize], results: &mut [Result<(), LogError>]) {
        self.buf.clear();
        self.failed = Some(e.to_string());
        let crashed = self.faults.is_crashed();
        if !crashed {
            tracing::error!(error = %e, "log store write failed; the store stops accepting writes");
        }
        for &j in lost {
            results[j] = Err(if crashed {
                // Not an I/O error: the writer stopped at a simulated crash.
                LogError::Crashed
            } else {
                LogError::Io(io::Error::new(e.kind(), e.to_string()))
            });
        }
    }

    /// How many distinct groups of `summary` the log does not know yet.
    fn new_groups(&self, summary: &[Summary]) -> usize {
        let mut new: Vec<u32> = summary
            .iter()
            .map(|s| s.group)
            .filter(|g| !self.groups.contains_key(g))
            .collect();
        new.sort_unstable();
        new.dedup();
        new.len()
    }

    /// Records one job's effects on group metadata and the active segment.
    fn apply(&mut self, summary: &[Summary]) {
        for s in summary {
            let meta = self.groups.entry(s.group).or_default();
            if let Some(snap) = s.snapshot {
                meta.install_snapshot(snap);
            }
            if let Some(hs) = s.hard_state {
                meta.hard_state = hs;
            }
            if let Some(p) = s.snapshot_point {
                meta.install_snapshot(p);
            }
            if let Some(c) = s.compact_to {
                meta.compact(c);
            }
            if let (Some(m), Some(seg)) = (s.max_index, self.segments.back_mut()) {
                let e = seg.max_index.entry(s.group).or_insert(m);
                *e = (*e).max(m);
            }
        }
    }

    /// Encoded size of a checkpoint of the current group metadata.
    fn checkpoint_len(&self) -> usize {
        self.groups
            .values()
            .map(|m| {
                HARD_STATE_RECORD_LEN
                    + COMPACT_RECORD_LEN
                    + if m.snapshot.is_some() {
                        SNAPSHOT_RECORD_LEN
                    } else {
                        0
                    }
            })
            .sum()
    }

    /// Writes `buf` at the end of the active segment and syncs it (in `Fsync` mode).
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.faults.check_flush()?;
        let file = self
            .active
            .as_ref()
            .ok_or_else(|| io::Error::other("no active segment"))?;
        self.dirty_end = self.dirty_end.max(self.write_off + self.buf.len() as u64);
        file.write_all_at(&self.buf, self.write_off)?;
        if self.durability == Durability::Fsync {
            let t = Instant::now();
            file.sync_data()?;
            add(&self.stats.sync_nanos, t.elapsed().as_nanos() as u64);
            add(&self.stats.syncs, 1);
            self.synced_off = self.write_off + self.buf.len() as u64;
        }
        self.write_off += self.buf.len() as u64;
        add(&self.stats.bytes_written, self.buf.len() as u64);
        if let Some(seg) = self.segments.back_mut() {
            seg.used_end = self.write_off;
        }
        self.buf.clear();
        Ok(())
    }

    /// Switches to the next segment and puts its header and a checkpoint of all groups into
    /// `buf`. The previous segment is synced first in every durability mode (`Fsync`
    /// flushes already did): a segment with a written successor is sealed, and recovery
    /// treats damage in it as corruption, never as a torn write.
    fn roll(&mut self) -> io::Result<()> {
        if self.durability != Durability::Fsync
            && let Some(f) = &self.active
        {
            f.sync_data()?;
            add(&self.stats.syncs, 1);
        }
        let seq = self.next_seq;
        let file = self.take_spare(seq)?;
        let len = file.metadata()?.len();
        self.active = Some(file);
        self.write_off = 0;
        // A spare is zeroed and synced: nothing of it is unsynced yet.
        self.synced_off = 0;
        self.dirty_end = 0;
        self.next_seq += 1;
        self.segments.push_back(SegmentInfo {
            seq,
            path: self.dir.join(segment_file_name(seq)),
            len,
            used_end: 0,
            max_index: Default::default(),
        });
        self.buf.extend_from_slice(&encode_header(seq));
        let mut rw = RecordWriter::new(&mut self.buf);
        for (&g, m) in &self.groups {
            rw.hard_state(g, m.hard_state);
            if let Some(s) = m.snapshot {
                rw.snapshot_point(g, s);
            }
            rw.compact(g, m.first_index);
        }
        rw.finish();
        add(&self.stats.rollovers, 1);
        self.update_gauges();
        tracing::debug!(seq, "log switched to a new segment");
        Ok(())
    }

    /// The prepared spare for sequence `seq`, waiting for the helper if need be.
    fn take_spare(&mut self, seq: u64) -> io::Result<File> {
        let mut retried = false;
        loop {
            if let Some(f) = self.ready.remove(&seq) {
                return Ok(f);
            }
            if let Some(err) = self.failed_preps.remove(&seq) {
                if retried {
                    return Err(io::Error::other(format!(
                        "could not prepare log segment {seq}: {err}"
                    )));
                }
                retried = true;
                self.send_prep(seq);
            } else if seq >= self.next_prep_seq {
                self.request_prep();
            }
            match self.helper_rx.recv() {
                Ok(resp) => self.on_helper(resp),
                Err(_) => return Err(io::Error::other("log segment helper thread is gone")),
            }
        }
    }

    fn on_helper(&mut self, resp: HelperResp) {
        self.preparing = self.preparing.saturating_sub(1);
        match resp {
            HelperResp::Ready { seq, file } => {
                self.ready.insert(seq, file);
            }
            HelperResp::Failed { seq, err } => {
                tracing::error!(seq, %err, "preparing a spare log segment failed");
                self.failed_preps.insert(seq, err);
            }
        }
    }

    /// Asks the helper for the next spare sequence number.
    fn request_prep(&mut self) {
        let seq = self.next_prep_seq;
        self.next_prep_seq += 1;
        self.send_prep(seq);
    }

    fn send_prep(&mut self, seq: u64) {
        if let Some(tx) = &self.helper_tx {
            if tx.send(HelperReq::Prepare { seq }).is_ok() {
                self.preparing += 1;
            }
        }
    }

    /// After a batch: collect helper results, reclaim segments no group needs, and keep
    /// enough spares in preparation.
    fn after_batch(&mut self) {
        while let Ok(resp) = self.helper_rx.try_recv() {
            self.on_helper(resp);
        }
        if self.failed.is_none() {
            while self.segments.len() > 1 && self.reclaimable(0) {
                let Some(seg) = self.segments.pop_front() else {
                    break;
                };
                tracing::debug!(seq = seg.seq, "log segment reclaimed");
                if let Some(tx) = &self.helper_tx {
                    let _ = tx.send(HelperReq::Retire {
                        path: seg.path,
                        used_end: seg.used_end,
                    });
                }
            }
            while self.ready.len() + self.preparing < self.preallocated {
                self.request_prep();
            }
        }
        self.update_gauges();
    }

    /// Whether every entry in live segment `i` lies below its group's first needed index.
    fn reclaimable(&self, i: usize) -> bool {
        self.segments.get(i).is_some_and(|seg| {
            seg.max_index
                .iter()
                .all(|(g, &m)| self.groups.get(g).is_some_and(|meta| m < meta.first_index))
        })
    }

    fn update_gauges(&self) {
        self.stats
            .live_segments
            .store(self.segments.len() as u64, Ordering::Relaxed);
        self.stats
            .spare_segments
            .store(self.ready.len() as u64, Ordering::Relaxed);
    }

    /// Simulated power loss: the bytes of the active segment written since its last sync
    /// are lost. They are zeroed (and that is synced), so a reopen sees exactly the synced
    /// data: in `Fsync` mode every acknowledged write, in `Buffered` mode what the last
    /// sync (a segment switch) covered. Earlier segments were synced before their
    /// successor was written, so only the active one can hold unsynced bytes.
    fn discard_unsynced(&mut self) {
        self.buf.clear();
        self.failed.get_or_insert_with(|| CRASHED.to_owned());
        let (from, to) = (self.synced_off, self.dirty_end);
        let Some(f) = &self.active else { return };
        if to <= from {
            return;
        }
        let res = zero_range_until(f, from, to, false, &|| false).and_then(|()| f.sync_data());
        if let Err(e) = res {
            tracing::error!(error = %e, "discarding unsynced log bytes at a simulated crash");
        }
        self.write_off = from;
        self.dirty_end = from;
    }

    /// Final sync, then stops and joins the helper.
    fn close(mut self) {
        if self.failed.is_none() && self.durability == Durability::Buffered {
            if let Some(f) = &self.active {
                match f.sync_data() {
                    Ok(()) => add(&self.stats.syncs, 1),
                    Err(e) => tracing::error!(error = %e, "final log sync failed"),
                }
            }
        }
        self.helper_stop.store(true, Ordering::Relaxed);
        self.helper_tx = None;
        if let Some(h) = self.helper.take() {
            let _ = h.join();
        }
    }
}

/// The helper thread: retires reclaimed segments (pooling up to `pool_cap` of them for
/// reuse, deleting the rest) and prepares spares, recycling pooled segments before creating
/// new ones. Requests are handled strictly in order, so segments leave the log oldest first.
fn run_helper(
    dir: PathBuf,
    segment_bytes: u64,
    pool_cap: usize,
    rx: Receiver<HelperReq>,
    tx: Sender<HelperResp>,
    stop: Arc<AtomicBool>,
    stats: Arc<Counters>,
) {
    let stopping = || stop.load(Ordering::Relaxed);
    let mut pool: VecDeque<(PathBuf, u64)> = VecDeque::new();
    while let Ok(req) = rx.recv() {
        if stopping() {
            // Skipping a suffix of the requests keeps the on-disk segments contiguous.
            break;
        }
        match req {
            HelperReq::Prepare { seq } => {
                let res = prepare(&dir, seq, segment_bytes, &mut pool, &stats, &stopping);
                let resp = match res {
                    Ok(file) => HelperResp::Ready { seq, file },
                    Err(e) => HelperResp::Failed {
                        seq,
                        err: e.to_string(),
                    },
                };
                if tx.send(resp).is_err() {
                    break;
                }
            }
            HelperReq::Retire { path, used_end } => {
                let res = if pool.len() < pool_cap {
                    zero_header(&path).map(|()| pool.push_back((path.clone(), used_end)))
                } else {
                    retire_segment(&path).map(|()| add(&stats.segments_deleted, 1))
                };
                if let Err(e) = res {
                    tracing::warn!(path = %path.display(), error = %e,
                        "could not retire a reclaimed log segment");
                }
            }
        }
    }
}

/// Zeroes and syncs a segment's header: from then on it is a spare, never replayed.
fn zero_header(path: &Path) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.write_all_at(&[0u8; HEADER_LEN], 0)?;
    f.sync_data()
}

/// Makes a zeroed, synced segment file named for `seq`, from the pool if possible.
fn prepare(
    dir: &Path,
    seq: u64,
    len: u64,
    pool: &mut VecDeque<(PathBuf, u64)>,
    stats: &Counters,
    stop: &dyn Fn() -> bool,
) -> io::Result<File> {
    let path = dir.join(segment_file_name(seq));
    while let Some((old, used_end)) = pool.pop_front() {
        match recycle(dir, &old, used_end, len, &path, stop) {
            Ok(f) => {
                add(&stats.segments_recycled, 1);
                return Ok(f);
            }
            Err(e) => {
                if stop() {
                    return Err(e);
                }
                tracing::warn!(path = %old.display(), error = %e,
                    "could not recycle a log segment; deleting it");
                let _ = fs::remove_file(&old);
            }
        }
    }
    let tmp = dir.join(format!("{}.tmp", segment_file_name(seq)));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    zero_range_until(&f, 0, len, true, stop)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    add(&stats.segments_created, 1);
    Ok(f)
}

/// Turns a retired (header already zeroed) segment into the spare `path`: the used part
/// zeroed and synced, then renamed.
fn recycle(
    dir: &Path,
    old: &Path,
    used_end: u64,
    len: u64,
    path: &Path,
    stop: &dyn Fn() -> bool,
) -> io::Result<File> {
    let f = OpenOptions::new().read(true).write(true).open(old)?;
    if f.metadata()?.len() != len {
        return Err(io::Error::other("segment has a different size"));
    }
    zero_range_until(&f, HEADER_LEN as u64, used_end.min(len), true, stop)?;
    f.sync_data()?;
    fs::rename(old, path)?;
    sync_dir(dir)?;
    Ok(f)
}
