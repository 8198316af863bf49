//! Recovery: scans the log directory, replays every segment in sequence order and leaves
//! the directory ready for appending after the last good record.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::config::LogStoreConfig;
use crate::error::LogError;
use crate::format::{
    Decoded, HEADER_LEN, HeaderCheck, Record, decode_header, decode_record, parse_segment_name,
};
use crate::state::{GroupMeta, ReplayGroup};
use crate::types::Recovered;

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

/// Reads up to a header's worth of bytes from the start of a file.
fn read_header(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(HEADER_LEN);
    File::open(path)?
        .take(HEADER_LEN as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Opens (creating if needed) the log directory, replays it and prepares it for appending.
pub(crate) fn recover(cfg: &LogStoreConfig) -> Result<(DiskState, Recovered), LogError> {
    let dir = &cfg.dir;
    fs::create_dir_all(dir)?;

    // 1. Classify the directory's files.
    let mut valid: Vec<(u64, PathBuf)> = Vec::new();
    for dent in fs::read_dir(dir)? {
        let dent = dent?;
        let path = dent.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if name.ends_with(".wal.tmp") {
            // An unfinished spare: never held data.
            fs::remove_file(&path)?;
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
        match decode_header(&read_header(&path)?) {
            HeaderCheck::Blank => {
                // A spare or a retired segment: holds nothing; spares are made afresh.
                fs::remove_file(&path)?;
            }
            HeaderCheck::Valid(s) if s == seq => valid.push((seq, path)),
            HeaderCheck::Valid(s) => {
                return Err(LogError::BadSegment {
                    path,
                    reason: format!("header says sequence {s}, file name says {seq}"),
                });
            }
            HeaderCheck::Invalid(reason) => return Err(LogError::BadSegment { path, reason }),
        }
    }
    valid.sort_unstable_by_key(|(seq, _)| *seq);
    for pair in valid.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(LogError::Corrupt {
                path: pair[1].1.clone(),
                offset: 0,
                reason: format!(
                    "segments {} to {} are missing",
                    pair[0].0 + 1,
                    pair[1].0 - 1
                ),
            });
        }
    }

    // 2. Replay.
    let mut groups: BTreeMap<u32, ReplayGroup> = BTreeMap::new();
    let mut segments: VecDeque<SegmentInfo> = VecDeque::new();
    let mut active: Option<(File, u64)> = None;
    let mut stopped_at: Option<usize> = None;
    for (i, (seq, path)) in valid.iter().enumerate() {
        let data = fs::read(path)?;
        let mut info = SegmentInfo {
            seq: *seq,
            path: path.clone(),
            len: data.len() as u64,
            used_end: data.len() as u64,
            max_index: HashMap::new(),
        };
        let mut off = HEADER_LEN;
        let mut pending: Vec<Record> = Vec::new();
        let mut pending_start = off;
        let mut torn = false;
        loop {
            match decode_record(&data, off) {
                Err(reason) => {
                    return Err(LogError::Corrupt {
                        path: path.clone(),
                        offset: off as u64,
                        reason,
                    });
                }
                Ok(Decoded::End) => {
                    if !pending.is_empty() {
                        tracing::warn!(segment = %path.display(), offset = pending_start,
                            "log ends inside a write; dropping its partial records");
                        torn = true;
                        off = pending_start;
                    }
                    break;
                }
                Ok(Decoded::Torn(reason)) => {
                    tracing::warn!(segment = %path.display(), offset = off, %reason,
                        "torn log tail; recovery stops here");
                    torn = true;
                    if !pending.is_empty() {
                        off = pending_start;
                    }
                    break;
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
                            apply(&mut groups, &mut info, r);
                        }
                    }
                }
            }
        }
        let last = i + 1 == valid.len();
        if torn || last {
            // This is where appending resumes: re-zero whatever lies past the good records.
            let file = OpenOptions::new().read(true).write(true).open(path)?;
            if let Some(nz) = data[off..].iter().rposition(|&b| b != 0) {
                // Later segments must be gone before this one looks cleanly ended.
                for (_, later) in &valid[i + 1..] {
                    retire_segment(later)?;
                }
                if i + 1 < valid.len() {
                    sync_dir(dir)?;
                }
                zero_range(&file, off as u64, (off + nz + 1) as u64)?;
                file.sync_data()?;
            } else if i + 1 < valid.len() {
                for (_, later) in &valid[i + 1..] {
                    retire_segment(later)?;
                }
                sync_dir(dir)?;
            }
            info.used_end = off as u64;
            segments.push_back(info);
            active = Some((file, off as u64));
            stopped_at = Some(i);
            break;
        }
        segments.push_back(info);
    }
    let next_seq = match stopped_at {
        Some(i) => valid[i].0 + 1,
        None => 1,
    };
    let (active, write_off) = match active {
        Some((f, off)) => (Some(f), off),
        None => (None, 0),
    };
    let metas = groups.iter().map(|(g, r)| (*g, r.meta)).collect();
    let recovered = Recovered {
        groups: groups
            .into_iter()
            .map(|(g, r)| (g, r.into_state()))
            .collect(),
    };
    Ok((
        DiskState {
            segments,
            active,
            write_off,
            groups: metas,
            next_seq,
        },
        recovered,
    ))
}

/// Applies one committed record to the replay state and the segment's bookkeeping.
fn apply(groups: &mut BTreeMap<u32, ReplayGroup>, info: &mut SegmentInfo, r: Record) {
    match r {
        Record::Entries {
            group,
            first,
            entries,
        } => {
            if let Some(last) = entries.last() {
                let m = info.max_index.entry(group).or_insert(last.index);
                *m = (*m).max(last.index);
            }
            groups.entry(group).or_default().append(first, entries);
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
