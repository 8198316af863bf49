//! Recovery: scans the log directory, decides which damage is a torn write (cut off) and
//! which is corruption (refuse to start), replays the segments in sequence order and leaves
//! the directory ready for appending after the last good record. The same scan, in repair
//! mode, backs the operator's [`LogStore::repair`](crate::LogStore::repair).
//!
//! # What may be torn
//!
//! The writer syncs a segment completely before it writes the first byte of the next one
//! (see [`mod@crate::format`]), and a write is acknowledged only after its sync. Hence after a
//! crash only the **newest** segment can hold unacknowledged bytes, and only after its last
//! acknowledged write. Recovery therefore classifies:
//!
//! * a bad record (checksum mismatch, impossible length, malformed body, a write without
//!   its end-of-write record, non-zero bytes after the end of the data) in the newest
//!   segment: a torn tail. Replay stops there; the prefix is kept and the rest re-zeroed.
//! * the same in any **sealed** segment — one that has a successor which was written to
//!   (a valid header, or a torn activation as below): corruption of acknowledged data.
//!   Open fails with [`LogError::Corrupt`] naming the file and byte offset, and touches
//!   nothing. Only an explicit repair truncates there.
//! * a garbled (non-zero, invalid) header on the file that would be the next segment (the
//!   successor of the newest valid one, or segment 1 of an empty log) whose first record
//!   does not decode either: a torn activation. The header is written in the same write
//!   as the segment's first records, in the same disk sector (every sector is at least 512
//!   bytes, the first record starts at byte 32), so a torn sector there damages both, and
//!   such a segment never held an acknowledged write. It is removed; its predecessor is
//!   sealed. A garbled header anywhere else, or one followed by an intact first record
//!   (the sector was written completely, the header damaged later), is
//!   [`LogError::BadSegment`].
//! * an all-zero header is a spare (or a retired segment) and holds nothing. If it is the
//!   successor of the newest valid segment and holds non-zero bytes, it is a torn
//!   activation whose header sector stayed unwritten: it seals its predecessor too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::config::LogStoreConfig;
use crate::error::LogError;
use crate::format::{
    Decoded, HEADER_LEN, HeaderCheck, RECORD_PREFIX_LEN, Record, decode_header, decode_record,
    parse_segment_name,
};
use crate::state::{GroupMeta, ReplayGroup};
use crate::types::{Recovered, RepairCut, RepairReport};

/// A live segment as the writer tracks it.
#[derive(Debug)]
pub(crate) struct SegmentInfo {
    /// Sequence number.
    pub seq: u64,
    /// Path of the file.
    pub path: PathBuf,
    /// File length (its capacity).
    pub len: u64,
    /// Bytes from the start that may be non-zero (what recycling has to re-zero).
    pub used_end: u64,
    /// Highest entry index written here, per group.
    pub max_index: HashMap<u32, u64>,
}

/// What recovery hands to the writer.
#[derive(Debug)]
pub(crate) struct DiskState {
    /// Live segments, oldest first; the last one is the active one.
    pub segments: VecDeque<SegmentInfo>,
    /// The active segment, opened for writing.
    pub active: Option<File>,
    /// Where the next record goes in the active segment.
    pub write_off: u64,
    /// Metadata of every group.
    pub groups: BTreeMap<u32, GroupMeta>,
    /// Sequence number of the next segment to activate.
    pub next_seq: u64,
}

/// `fsync`s a directory so that creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Takes a segment out of the log for good: zeroes and syncs its header (so it can never
/// be replayed again, even if the unlink is lost), then deletes it.
pub(crate) fn retire_segment(path: &Path) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.write_all_at(&[0u8; HEADER_LEN], 0)?;
    f.sync_data()?;
    drop(f);
    fs::remove_file(path)
}

/// Reads up to `n` bytes from the start of a file.
fn read_prefix(path: &Path, n: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(n).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Whether a file holds any non-zero byte at or after `from` (read in chunks).
fn has_data(path: &Path, from: u64) -> io::Result<bool> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut buf = vec![0u8; ZERO_CHUNK.min(len.saturating_sub(from) as usize)];
    let mut pos = from;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(true);
        }
        pos += n as u64;
    }
    Ok(false)
}

/// Offset just past the last non-zero byte of `data` at or after `from` (`from` if none).
fn nonzero_end(data: &[u8], from: usize) -> usize {
    data.get(from..)
        .and_then(|t| t.iter().rposition(|&b| b != 0))
        .map_or(from, |i| from + i + 1)
}

/// How recovery treats damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Opening the store: cut torn tails of the newest segment, refuse on corruption.
    Open,
    /// Operator repair: truncate the log at the first damage, wherever it is.
    Repair,
}

/// A `*.wal` file, classified by its header.
#[derive(Debug)]
enum Header {
    /// A valid header matching the file name.
    Valid,
    /// All zero: a spare or a retired segment.
    Blank,
    /// Anything else; `first_record_ok` says whether a checksummed record follows at
    /// `HEADER_LEN` (the header's sector was once written completely).
    Garbled {
        reason: String,
        first_record_ok: bool,
    },
    /// A valid header of another sequence number (never produced by a crash).
    Misnamed(String),
}

/// The segment files of the directory.
#[derive(Debug, Default)]
struct Files {
    /// By sequence number.
    segs: BTreeMap<u64, (PathBuf, Header)>,
    /// Unfinished spares (`*.wal.tmp`).
    tmp: Vec<PathBuf>,
}

/// Lists and classifies the directory's files. Reads only.
fn classify(dir: &Path) -> Result<Files, LogError> {
    let mut files = Files::default();
    for dent in fs::read_dir(dir)? {
        let dent = dent?;
        let path = dent.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if name.ends_with(".wal.tmp") {
            files.tmp.push(path);
            continue;
        }
        if !name.ends_with(".wal") {
            continue;
        }
        if !dent.file_type()?.is_file() {
            return Err(LogError::BadSegment {
                path,
                reason: "not a regular file".into(),
            });
        }
        let Some(seq) = parse_segment_name(&name) else {
            return Err(LogError::BadSegment {
                path,
                reason: "file name is not a 16-hex-digit sequence number".into(),
            });
        };
        let header = match decode_header(&read_prefix(&path, HEADER_LEN as u64)?) {
            HeaderCheck::Blank => Header::Blank,
            HeaderCheck::Valid(s) if s == seq => Header::Valid,
            HeaderCheck::Valid(s) => {
                Header::Misnamed(format!("header says sequence {s}, file name says {seq}"))
            }
            HeaderCheck::Invalid(reason) => {
                let first_record_ok = first_record_intact(&path)?;
                Header::Garbled {
                    reason,
                    first_record_ok,
                }
            }
        };
        files.segs.insert(seq, (path, header));
    }
    Ok(files)
}

/// Whether a checksummed record starts right after the header.
fn first_record_intact(path: &Path) -> io::Result<bool> {
    let start = (HEADER_LEN + RECORD_PREFIX_LEN) as u64;
    let head = read_prefix(path, start)?;
    if head.len() < start as usize {
        return Ok(false);
    }
    let mut l = [0u8; 4];
    l.copy_from_slice(&head[HEADER_LEN..HEADER_LEN + 4]);
    let need = start + u64::from(u32::from_le_bytes(l));
    if need > fs::metadata(path)?.len() {
        return Ok(false);
    }
    let buf = read_prefix(path, need)?;
    Ok(matches!(
        decode_record(&buf, HEADER_LEN),
        Ok(Decoded::Record { .. })
    ))
}

/// The outcome of replaying one segment.
struct SegScan {
    /// Offset after the last complete write (where appending would resume).
    end: usize,
    /// The first damage: offset and what is wrong.
    bad: Option<(usize, String)>,
}

/// Replays the complete writes of one segment into `groups`, stopping at the first damage.
fn replay_segment(
    data: &[u8],
    path: &Path,
    info: &mut SegmentInfo,
    groups: &mut BTreeMap<u32, ReplayGroup>,
) -> SegScan {
    let mut off = HEADER_LEN;
    let mut pending: Vec<Record> = Vec::new();
    let mut pending_start = off;
    loop {
        let bad = match decode_record(data, off) {
            Err(reason) => format!("malformed record: {reason}"),
            Ok(Decoded::Torn(reason)) => reason,
            Ok(Decoded::End) => {
                if !pending.is_empty() {
                    return SegScan {
                        end: pending_start,
                        bad: Some((
                            pending_start,
                            "write without its end-of-write record".into(),
                        )),
                    };
                }
                if nonzero_end(data, off) > off {
                    return SegScan {
                        end: off,
                        bad: Some((off, "non-zero bytes after the end of the data".into())),
                    };
                }
                return SegScan {
                    end: off,
                    bad: None,
                };
            }
            Ok(Decoded::Record {
                record,
                end_of_write,
                next,
            }) => {
                if pending.is_empty() {
                    pending_start = off;
                }
                pending.push(record);
                off = next;
                if end_of_write {
                    for r in pending.drain(..) {
                        apply(groups, info, r);
                    }
                }
                continue;
            }
        };
        tracing::debug!(segment = %path.display(), offset = off, %bad, "bad log record");
        let end = if pending.is_empty() {
            off
        } else {
            pending_start
        };
        return SegScan {
            end,
            bad: Some((off, bad)),
        };
    }
}

/// Counts the records of a segment that decode (for the repair report).
fn count_records(data: &[u8]) -> u64 {
    let mut off = HEADER_LEN;
    let mut n = 0;
    while let Ok(Decoded::Record { next, .. }) = decode_record(data, off) {
        n += 1;
        off = next;
    }
    n
}

/// Everything a scan decided, before any file is changed.
struct Plan {
    groups: BTreeMap<u32, ReplayGroup>,
    /// Kept segments; the last one is where appending resumes.
    segments: VecDeque<SegmentInfo>,
    /// Write offset in the last kept segment.
    end: u64,
    /// `[from, to)` of the last kept segment to re-zero.
    zero_tail: Option<(u64, u64)>,
    /// Files holding (possibly) data that must leave the log, retired newest first.
    remove: Vec<PathBuf>,
    /// Files holding nothing (spares, unfinished spares): deleted.
    delete: Vec<PathBuf>,
    report: RepairReport,
}

/// Scans and replays the directory per `mode`; reads only.
fn scan(cfg: &LogStoreConfig, mode: Mode) -> Result<Plan, LogError> {
    let open = mode == Mode::Open;
    let files = classify(&cfg.dir)?;
    let mut report = RepairReport::default();
    let mut remove: Vec<(u64, PathBuf)> = Vec::new();
    let mut delete: Vec<PathBuf> = files.tmp.clone();
    let cut = |report: &mut RepairReport, path: &Path, offset: u64, reason: String| {
        if report.cut.is_none() {
            report.cut = Some(RepairCut {
                path: path.to_owned(),
                offset,
                reason,
            });
        }
    };

    // 1. The run of segments to replay: contiguous valid headers, in sequence order.
    let mut run: Vec<(u64, PathBuf)> = Vec::new();
    // Whether the file after the run was written to (a torn activation): seals the run.
    let mut successor_written = false;
    let mut broken = false;
    for (&seq, (path, header)) in &files.segs {
        let follows = run.last().is_none_or(|(last, _)| seq == last + 1);
        match header {
            Header::Blank => delete.push(path.clone()),
            _ if broken => remove.push((seq, path.clone())),
            Header::Valid if follows => run.push((seq, path.clone())),
            Header::Valid => {
                let reason = format!(
                    "segments {} to {} are missing",
                    run.last().map_or(0, |(l, _)| l + 1),
                    seq - 1
                );
                if open {
                    return Err(LogError::Corrupt {
                        path: path.clone(),
                        offset: 0,
                        reason,
                    });
                }
                cut(&mut report, path, 0, reason);
                broken = true;
                remove.push((seq, path.clone()));
            }
            Header::Garbled {
                reason,
                first_record_ok,
            } => {
                let successor = match run.last() {
                    Some((last, _)) => seq == last + 1,
                    None => seq == 1,
                };
                let last_file = files
                    .segs
                    .range(seq + 1..)
                    .all(|(_, (_, h))| matches!(h, Header::Blank));
                if open && !(successor && last_file && !first_record_ok) {
                    let why = if *first_record_ok {
                        format!("{reason} (the record after it is intact: not a torn write)")
                    } else {
                        format!("{reason} (not the segment after the newest one: not a torn write)")
                    };
                    return Err(LogError::BadSegment {
                        path: path.clone(),
                        reason: why,
                    });
                }
                if open {
                    tracing::warn!(segment = %path.display(), %reason,
                        "garbled header of a just-activated segment: torn write, dropping it");
                    successor_written = true;
                } else {
                    cut(
                        &mut report,
                        path,
                        0,
                        format!("bad segment header: {reason}"),
                    );
                }
                broken = true;
                remove.push((seq, path.clone()));
            }
            Header::Misnamed(reason) => {
                if open {
                    return Err(LogError::BadSegment {
                        path: path.clone(),
                        reason: reason.clone(),
                    });
                }
                cut(
                    &mut report,
                    path,
                    0,
                    format!("bad segment header: {reason}"),
                );
                broken = true;
                remove.push((seq, path.clone()));
            }
        }
    }

    // 2. Replay.
    let mut groups: BTreeMap<u32, ReplayGroup> = BTreeMap::new();
    let mut segments: VecDeque<SegmentInfo> = VecDeque::new();
    let mut end = 0u64;
    let mut zero_tail = None;
    for (i, (seq, path)) in run.iter().enumerate() {
        let data = fs::read(path)?;
        let mut info = SegmentInfo {
            seq: *seq,
            path: path.clone(),
            len: data.len() as u64,
            used_end: data.len() as u64,
            max_index: HashMap::new(),
        };
        let s = replay_segment(&data, path, &mut info, &mut groups);
        let newest = i + 1 == run.len();
        if let Some((offset, reason)) = s.bad {
            if open {
                let sealed = !newest
                    || successor_written
                    || match files.segs.get(&(seq + 1)) {
                        // A blank successor with data: a torn activation (spares are zero).
                        Some((p, Header::Blank)) => has_data(p, 0)?,
                        _ => false,
                    };
                if sealed {
                    return Err(LogError::Corrupt {
                        path: path.clone(),
                        offset: offset as u64,
                        reason: format!(
                            "{reason}, in a sealed segment (a later segment was written, so \
                             this is not a torn write); refusing to start: an explicit log \
                             repair truncates the log here"
                        ),
                    });
                }
                tracing::warn!(segment = %path.display(), offset, %reason,
                    "torn tail of the newest log segment; recovery keeps the writes before it");
            } else {
                // Earlier in the log than any damage found while classifying.
                report.cut = None;
                cut(&mut report, path, offset as u64, reason);
                for (seq, later) in &run[i + 1..] {
                    remove.push((*seq, later.clone()));
                }
            }
            let nz = nonzero_end(&data, s.end);
            report.bytes_dropped += (nz - s.end) as u64;
            if nz > s.end {
                zero_tail = Some((s.end as u64, nz as u64));
            }
            info.used_end = s.end as u64;
            end = s.end as u64;
            segments.push_back(info);
            break;
        }
        if newest {
            info.used_end = s.end as u64;
            end = s.end as u64;
        }
        segments.push_back(info);
    }

    // 3. What leaves the log.
    remove.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    for (_, p) in &remove {
        let data = fs::read(p)?;
        report.bytes_dropped += nonzero_end(&data, 0) as u64;
        if matches!(
            decode_header(&data[..data.len().min(HEADER_LEN)]),
            HeaderCheck::Valid(_)
        ) {
            report.records_dropped += count_records(&data);
        }
        report.segments_removed.push(p.clone());
    }
    Ok(Plan {
        groups,
        segments,
        end,
        zero_tail,
        remove: remove.into_iter().map(|(_, p)| p).collect(),
        delete,
        report,
    })
}

/// Carries out a plan's file changes: later segments go first (newest first, so a crash
/// midway leaves a contiguous run), then the kept tail is re-zeroed, then spares deleted.
fn execute(dir: &Path, plan: &Plan) -> Result<(), LogError> {
    for p in &plan.remove {
        retire_segment(p)?;
    }
    if !plan.remove.is_empty() {
        sync_dir(dir)?;
    }
    if let (Some((from, to)), Some(seg)) = (plan.zero_tail, plan.segments.back()) {
        let file = OpenOptions::new().write(true).open(&seg.path)?;
        zero_range(&file, from, to)?;
        file.sync_data()?;
    }
    for p in &plan.delete {
        fs::remove_file(p)?;
    }
    Ok(())
}

/// Opens (creating if needed) the log directory, replays it and prepares it for appending.
pub(crate) fn recover(cfg: &LogStoreConfig) -> Result<(DiskState, Recovered), LogError> {
    fs::create_dir_all(&cfg.dir)?;
    let plan = scan(cfg, Mode::Open)?;
    execute(&cfg.dir, &plan)?;
    let active = match plan.segments.back() {
        Some(seg) => Some(OpenOptions::new().read(true).write(true).open(&seg.path)?),
        None => None,
    };
    let next_seq = plan.segments.back().map_or(1, |s| s.seq + 1);
    let metas = plan.groups.iter().map(|(g, r)| (*g, r.meta)).collect();
    let recovered = Recovered {
        groups: plan
            .groups
            .into_iter()
            .map(|(g, r)| (g, r.into_state()))
            .collect(),
    };
    Ok((
        DiskState {
            segments: plan.segments,
            write_off: if active.is_some() { plan.end } else { 0 },
            active,
            groups: metas,
            next_seq,
        },
        recovered,
    ))
}

/// Truncates the log at its first damage (see [`crate::LogStore::repair`]).
pub(crate) fn repair(cfg: &LogStoreConfig, dry_run: bool) -> Result<RepairReport, LogError> {
    if !cfg.dir.exists() {
        return Ok(RepairReport::default());
    }
    let plan = scan(cfg, Mode::Repair)?;
    if !dry_run {
        execute(&cfg.dir, &plan)?;
        if let Some(c) = &plan.report.cut {
            tracing::warn!(segment = %c.path.display(), offset = c.offset, reason = %c.reason,
                segments_removed = plan.report.segments_removed.len(),
                bytes_dropped = plan.report.bytes_dropped, "log repaired: truncated");
        }
    }
    Ok(plan.report)
}

/// Applies one committed record to the replay state and the segment's bookkeeping.
fn apply(groups: &mut BTreeMap<u32, ReplayGroup>, info: &mut SegmentInfo, r: Record) {
    match r {
        Record::Entries {
            group,
            first,
            entries,
            keep_later,
        } => {
            if let Some(last) = entries.last() {
                let m = info.max_index.entry(group).or_insert(last.index);
                *m = (*m).max(last.index);
            }
            let g = groups.entry(group).or_default();
            if keep_later {
                g.replace(first, entries);
            } else {
                g.append(first, entries);
            }
        }
        Record::HardState { group, hs } => groups.entry(group).or_default().set_hard_state(hs),
        Record::Snapshot { group, meta } => groups.entry(group).or_default().install_snapshot(meta),
        Record::SnapshotPoint { group, meta } => {
            groups.entry(group).or_default().note_snapshot(meta)
        }
        Record::Compact { group, to } => groups.entry(group).or_default().compact(to),
    }
}

/// Size of the zero buffer used to clear file ranges.
const ZERO_CHUNK: usize = 1 << 20;

/// Overwrites `[from, to)` of `file` with zeros.
pub(crate) fn zero_range(file: &File, from: u64, to: u64) -> io::Result<()> {
    zero_range_until(file, from, to, false, &|| false)
}

/// Overwrites `[from, to)` of `file` with zeros, giving up with `Interrupted` once `stop`
/// returns true (checked between chunks). With `paced`, every chunk is synced before the
/// next is written, so background zeroing never piles up a large writeback that would
/// stall the write path's own `fdatasync`.
pub(crate) fn zero_range_until(
    file: &File,
    from: u64,
    to: u64,
    paced: bool,
    stop: &dyn Fn() -> bool,
) -> io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK.min(to.saturating_sub(from) as usize)];
    let mut pos = from;
    while pos < to {
        if stop() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopping"));
        }
        let n = (to - pos).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], pos)?;
        if paced {
            file.sync_data()?;
        }
        pos += n as u64;
    }
    Ok(())
}
