//! On-disk format of the log: segment files, segment header, records, and their codec.
//!
//! # Segments
//!
//! The log is a directory of segment files named `NNNNNNNNNNNNNNNN.wal`, the 16 lower-case
//! hex digits being the segment's sequence number. Every segment is `segment_bytes` long
//! and is created by writing zeros (never `fallocate` or extending writes: on ext4 a sync
//! after writing into unwritten extents or past EOF costs milliseconds, overwriting already
//! written blocks a tenth of one). New segments are built as `NNNN.wal.tmp` and renamed
//! when fully zeroed and synced; leftover `.tmp` files are deleted at open.
//!
//! A segment starts with a 32-byte header, all little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `MAKOWAL\0` |
//! | 8..12 | format version (`2`) |
//! | 12..16 | reserved, zero |
//! | 16..24 | sequence number (must equal the file name's) |
//! | 24..28 | crc32c of bytes 0..24 |
//! | 28..32 | reserved, zero |
//!
//! An all-zero header marks a spare (pre-zeroed, not yet used, or being recycled); spares
//! hold no data and are deleted by recovery. Any other header that is not exactly the
//! above is [`LogError::BadSegment`](crate::LogError::BadSegment), except on the segment
//! that was being activated at a crash (the successor of the newest valid one, whose first
//! record is damaged too): that is a torn write and the segment is dropped.
//!
//! # Records
//!
//! Records follow the header back to back:
//!
//! ```text
//! [len u32][crc32c u32 over the len bytes that follow][kind u8][group u32][body ...]
//! ```
//!
//! `len` counts `kind`, `group` and the body. The low 7 bits of `kind` say what it is; the
//! high bit ([`END_OF_WRITE`]) marks the last record of one `write` call, which makes the
//! call atomic: recovery applies a write's records only once it has seen its last one.
//!
//! | kind | body |
//! |---|---|
//! | 1 entries | `first_index u64, count u32`, then per entry `term u64, payload_len u32, payload` |
//! | 2 hard state | `term u64, vote u64, commit u64` |
//! | 3 snapshot installed | `index u64, term u64` (discards the group's entries) |
//! | 4 compact | `compact_to u64` |
//! | 5 snapshot point | `index u64, term u64` (a local snapshot, or a checkpoint's copy: keeps later entries) |
//! | 6 entries in place | as 1, but the entries replace only their own indexes: later entries stay (Multi-Paxos acceptance) |
//!
//! A zero `len` (or too little room for a record header) ends the segment's data; every
//! byte after it is zero. A `len` running past the end of the file, a checksum mismatch, a
//! malformed body, a write without its end-of-write record or non-zero bytes after the end
//! of the data are *damage*. Damage in the newest segment is a torn write: recovery keeps
//! the complete writes before it and re-zeroes the rest. Damage in any older (sealed)
//! segment is corruption of acknowledged data: recovery refuses to start with
//! [`LogError::Corrupt`](crate::LogError::Corrupt) naming the file and offset, and only
//! [`LogStore::repair`](crate::LogStore::repair) truncates there. The exact rules, including
//! the garbled header of a just-activated segment, are in the `recovery` module.
//!
//! # Checkpoints, ordering and reclamation
//!
//! One `write` never spans two segments. When the writer switches to a new segment it
//! first writes a checkpoint: for every group it knows, a hard-state, an optional
//! snapshot-point and a compact record carrying the group's current hard state, snapshot
//! point and first needed index (one atomic unit). Replaying a checkpoint over the state it
//! was taken from changes nothing. Hence every segment but the first is self-sufficient for
//! metadata, and an old segment can be reclaimed as soon as every entry it holds lies
//! below its group's first needed index. Segments are reclaimed oldest first, so the
//! segments on disk always form a contiguous run of sequence numbers (a gap is
//! [`LogError::Corrupt`](crate::LogError::Corrupt)). Replaying a suffix of the history that
//! starts at a checkpoint yields the same state as replaying all of it.
//!
//! A quarter of every segment ([`checkpoint_reserve`]) is kept for its checkpoint: the log
//! accepts at most [`max_groups`] groups, and a write of up to [`max_write_bytes`] always
//! fits into a fresh segment after the checkpoint. [`max_entry_bytes`] is the largest
//! payload of a single-entry, single-group write (with hard state, snapshot and compaction
//! point) that is never refused as too large.
//!
//! # Activation and sealing
//!
//! A new segment is activated by taking a spare (all zero, synced, renamed into place) and
//! writing header, checkpoint and the first records in **one** write, synced before any of
//! them is acknowledged. A segment is synced completely (in every durability mode) before
//! the first byte of the next one is written, so once its successor holds anything it is
//! *sealed* and can never have a torn tail. A reclaimed segment is retired by zeroing (and
//! syncing) its header first, then its body, then renaming it to a future sequence number
//! (or deleting it).

use bytes::Bytes;

use crate::types::{GroupWrite, HardState, LogEntry, SnapshotMeta};

/// Magic bytes opening every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"MAKOWAL\0";
/// The format version written by this code. `2`: an entry's payload is the replication
/// protocol's value itself (a Raft entry's data, a Paxos slot's value); `1` held
/// protobuf-framed Raft entries, and is refused rather than misread.
pub const FORMAT_VERSION: u32 = 2;
/// Size of the segment header.
pub const HEADER_LEN: usize = 32;
/// Size of `[len][crc]` in front of every record.
pub const RECORD_PREFIX_LEN: usize = 8;
/// Size of `[kind][group]`.
const KIND_GROUP_LEN: usize = 5;
/// Flag bit on `kind` marking the last record of one write.
pub const END_OF_WRITE: u8 = 0x80;
/// Kind: a run of entries.
pub const KIND_ENTRIES: u8 = 1;
/// Kind: a hard state.
pub const KIND_HARD_STATE: u8 = 2;
/// Kind: a snapshot was installed (the group's log is replaced).
pub const KIND_SNAPSHOT: u8 = 3;
/// Kind: a compaction point.
pub const KIND_COMPACT: u8 = 4;
/// Kind: a checkpoint's copy of the snapshot point (does not discard entries).
pub const KIND_SNAPSHOT_POINT: u8 = 5;
/// Record kind: entries that replace only their own indexes (later entries stay).
pub const KIND_ENTRIES_IN_PLACE: u8 = 6;

/// Encoded size of a hard-state record.
pub const HARD_STATE_RECORD_LEN: usize = RECORD_PREFIX_LEN + KIND_GROUP_LEN + 24;
/// Encoded size of a snapshot record.
pub const SNAPSHOT_RECORD_LEN: usize = RECORD_PREFIX_LEN + KIND_GROUP_LEN + 16;
/// Encoded size of a compact record.
pub const COMPACT_RECORD_LEN: usize = RECORD_PREFIX_LEN + KIND_GROUP_LEN + 8;

/// Largest checkpoint share of one group: hard state, snapshot point and compact record.
pub const GROUP_CHECKPOINT_LEN: usize =
    HARD_STATE_RECORD_LEN + SNAPSHOT_RECORD_LEN + COMPACT_RECORD_LEN;
/// Encoded size of a single-group write of one empty entry with hard state, snapshot and
/// compaction point: what a write needs besides the entry's payload.
pub const ONE_ENTRY_WRITE_OVERHEAD: usize = RECORD_PREFIX_LEN
    + KIND_GROUP_LEN
    + 12
    + 12
    + HARD_STATE_RECORD_LEN
    + SNAPSHOT_RECORD_LEN
    + COMPACT_RECORD_LEN;

/// Bytes of every segment kept for its checkpoint (a quarter).
pub fn checkpoint_reserve(segment_bytes: u64) -> u64 {
    segment_bytes / 4
}

/// Most groups a log with this segment size accepts (their checkpoint fits the reserve).
pub fn max_groups(segment_bytes: u64) -> usize {
    (checkpoint_reserve(segment_bytes) / GROUP_CHECKPOINT_LEN as u64) as usize
}

/// Largest encoded size of one `write` call (sum of [`GroupWrite::encoded_len`]).
pub fn max_write_bytes(segment_bytes: u64) -> u64 {
    segment_bytes.saturating_sub(HEADER_LEN as u64 + checkpoint_reserve(segment_bytes))
}

/// Largest entry payload a single-group, single-entry write can carry (with hard state,
/// snapshot and compaction point).
pub fn max_entry_bytes(segment_bytes: u64) -> u64 {
    max_write_bytes(segment_bytes)
        .saturating_sub(ONE_ENTRY_WRITE_OVERHEAD as u64)
        .min(u64::from(u32::MAX))
}

/// The file name of segment `seq`.
pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

/// The sequence number in a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 16 || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

/// The header of segment `seq`.
pub fn encode_header(seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a segment header says.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderCheck {
    /// All zero (or an empty file): a spare.
    Blank,
    /// A valid header of this sequence number.
    Valid(u64),
    /// Not a header of this format; the reason.
    Invalid(String),
}

/// Checks the first bytes of a segment file (`buf` may be shorter than a header).
pub fn decode_header(buf: &[u8]) -> HeaderCheck {
    if buf.iter().all(|&b| b == 0) {
        return HeaderCheck::Blank;
    }
    if buf.len() < HEADER_LEN {
        return HeaderCheck::Invalid(format!("file too short for a header ({} bytes)", buf.len()));
    }
    if buf[0..8] != SEGMENT_MAGIC {
        return HeaderCheck::Invalid("wrong magic (not a mako-logstore segment)".into());
    }
    let version = le_u32(&buf[8..12]);
    if version != FORMAT_VERSION {
        return HeaderCheck::Invalid(format!("unsupported format version {version}"));
    }
    let stored = le_u32(&buf[24..28]);
    if crc32c::crc32c(&buf[0..24]) != stored {
        return HeaderCheck::Invalid("header checksum mismatch".into());
    }
    HeaderCheck::Valid(le_u64(&buf[16..24]))
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Builds the records of one write (or checkpoint) in a buffer; [`RecordWriter::finish`]
/// flags the last record [`END_OF_WRITE`] and fills in every length and checksum.
pub struct RecordWriter<'a> {
    buf: &'a mut Vec<u8>,
    starts: Vec<usize>,
}

impl<'a> RecordWriter<'a> {
    /// Starts appending records to `buf`.
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        RecordWriter {
            buf,
            starts: Vec::new(),
        }
    }

    fn begin(&mut self, kind: u8, group: u32) {
        self.starts.push(self.buf.len());
        self.buf.extend_from_slice(&[0u8; RECORD_PREFIX_LEN]);
        self.buf.push(kind);
        self.buf.extend_from_slice(&group.to_le_bytes());
    }

    /// Appends an entries record (`entries` must be non-empty and contiguous); with
    /// `keep_later` the entries replace only their own indexes.
    pub fn entries(&mut self, group: u32, entries: &[LogEntry], keep_later: bool) {
        let Some(first) = entries.first() else {
            return;
        };
        let kind = if keep_later {
            KIND_ENTRIES_IN_PLACE
        } else {
            KIND_ENTRIES
        };
        self.begin(kind, group);
        self.buf.extend_from_slice(&first.index.to_le_bytes());
        self.buf
            .extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            self.buf.extend_from_slice(&e.term.to_le_bytes());
            self.buf
                .extend_from_slice(&(e.payload.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(&e.payload);
        }
    }

    /// Appends a hard-state record.
    pub fn hard_state(&mut self, group: u32, hs: HardState) {
        self.begin(KIND_HARD_STATE, group);
        self.buf.extend_from_slice(&hs.term.to_le_bytes());
        self.buf.extend_from_slice(&hs.vote.to_le_bytes());
        self.buf.extend_from_slice(&hs.commit.to_le_bytes());
    }

    /// Appends a snapshot-installed record.
    pub fn snapshot(&mut self, group: u32, meta: SnapshotMeta) {
        self.begin(KIND_SNAPSHOT, group);
        self.buf.extend_from_slice(&meta.index.to_le_bytes());
        self.buf.extend_from_slice(&meta.term.to_le_bytes());
    }

    /// Appends a snapshot-point record (checkpoints).
    pub fn snapshot_point(&mut self, group: u32, meta: SnapshotMeta) {
        self.begin(KIND_SNAPSHOT_POINT, group);
        self.buf.extend_from_slice(&meta.index.to_le_bytes());
        self.buf.extend_from_slice(&meta.term.to_le_bytes());
    }

    /// Appends a compact record.
    pub fn compact(&mut self, group: u32, to: u64) {
        self.begin(KIND_COMPACT, group);
        self.buf.extend_from_slice(&to.to_le_bytes());
    }

    /// Appends the records of one group's change, in application order.
    pub fn group_write(&mut self, w: &GroupWrite) {
        if let Some(s) = w.snapshot {
            self.snapshot(w.group, s);
        }
        self.entries(w.group, &w.entries, w.keep_later);
        if let Some(hs) = w.hard_state {
            self.hard_state(w.group, hs);
        }
        if let Some(p) = w.snapshot_point {
            self.snapshot_point(w.group, p);
        }
        if let Some(c) = w.compact_to {
            self.compact(w.group, c);
        }
    }

    /// Seals the records; returns how many were written.
    pub fn finish(self) -> usize {
        let n = self.starts.len();
        for (i, &start) in self.starts.iter().enumerate() {
            let end = self.starts.get(i + 1).copied().unwrap_or(self.buf.len());
            if i + 1 == n {
                self.buf[start + RECORD_PREFIX_LEN] |= END_OF_WRITE;
            }
            let body = start + RECORD_PREFIX_LEN;
            let len = (end - body) as u32;
            let crc = crc32c::crc32c(&self.buf[body..end]);
            self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
            self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        }
        n
    }
}

/// Encoded size of an entries record for `entries` (0 if empty).
pub fn entries_record_len(entries: &[LogEntry]) -> usize {
    if entries.is_empty() {
        return 0;
    }
    RECORD_PREFIX_LEN
        + KIND_GROUP_LEN
        + 12
        + entries.iter().map(|e| 12 + e.payload.len()).sum::<usize>()
}

/// One decoded record.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// A run of entries.
    Entries {
        /// Group.
        group: u32,
        /// Index of the first entry.
        first: u64,
        /// The entries (payloads copied out of the segment buffer).
        entries: Vec<LogEntry>,
        /// Whether later entries stay (kind 6) rather than being discarded (kind 1).
        keep_later: bool,
    },
    /// A hard state.
    HardState {
        /// Group.
        group: u32,
        /// The state.
        hs: HardState,
    },
    /// A snapshot was installed.
    Snapshot {
        /// Group.
        group: u32,
        /// The point.
        meta: SnapshotMeta,
    },
    /// A checkpoint's snapshot point.
    SnapshotPoint {
        /// Group.
        group: u32,
        /// The point.
        meta: SnapshotMeta,
    },
    /// A compaction point.
    Compact {
        /// Group.
        group: u32,
        /// First index still needed.
        to: u64,
    },
}

/// Outcome of reading the record at one offset.
#[derive(Debug)]
pub enum Decoded {
    /// A good record; `next` is the offset after it.
    Record {
        /// The record.
        record: Record,
        /// Whether it is the last record of its write.
        end_of_write: bool,
        /// Offset of the following record.
        next: usize,
    },
    /// Zero length or no room: the segment's data ends here.
    End,
    /// A torn or damaged record (length out of range or checksum mismatch).
    Torn(String),
}

/// A bounds-checked little-endian reader over a record body.
struct Body<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("record body too short at byte {}", self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.take(4).map(le_u32)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.take(8).map(le_u64)
    }

    fn done(&self) -> Result<(), String> {
        if self.pos == self.b.len() {
            Ok(())
        } else {
            Err(format!(
                "{} trailing bytes in record",
                self.b.len() - self.pos
            ))
        }
    }
}

/// Reads the record at `off` of a segment's contents. `Err` is a checksummed record whose
/// body is malformed (corruption that the checksum cannot explain).
pub fn decode_record(seg: &[u8], off: usize) -> Result<Decoded, String> {
    let Some(prefix) = seg.get(off..off.saturating_add(RECORD_PREFIX_LEN)) else {
        return Ok(Decoded::End);
    };
    if prefix.len() < RECORD_PREFIX_LEN {
        return Ok(Decoded::End);
    }
    let len = le_u32(&prefix[0..4]) as usize;
    let crc = le_u32(&prefix[4..8]);
    if len == 0 {
        return Ok(Decoded::End);
    }
    let body_start = off + RECORD_PREFIX_LEN;
    let avail = seg.len() - body_start;
    if len < KIND_GROUP_LEN || len > avail {
        return Ok(Decoded::Torn(format!(
            "record length {len} out of range ({avail} bytes left)"
        )));
    }
    let body = &seg[body_start..body_start + len];
    if crc32c::crc32c(body) != crc {
        return Ok(Decoded::Torn("record checksum mismatch".into()));
    }
    let kind = body[0];
    let end_of_write = kind & END_OF_WRITE != 0;
    let group = le_u32(&body[1..5]);
    let mut r = Body { b: body, pos: 5 };
    let record = match kind & !END_OF_WRITE {
        k @ (KIND_ENTRIES | KIND_ENTRIES_IN_PLACE) => {
            let first = r.u64()?;
            let count = r.u32()? as usize;
            // Each entry needs at least 12 bytes: bound the allocation by what is there.
            let mut entries = Vec::with_capacity(count.min(len / 12));
            for i in 0..count {
                let term = r.u64()?;
                let plen = r.u32()? as usize;
                let payload = Bytes::copy_from_slice(r.take(plen)?);
                let index = first
                    .checked_add(i as u64)
                    .ok_or_else(|| "entry index overflows u64".to_string())?;
                entries.push(LogEntry {
                    index,
                    term,
                    payload,
                });
            }
            Record::Entries {
                group,
                first,
                entries,
                keep_later: k == KIND_ENTRIES_IN_PLACE,
            }
        }
        KIND_HARD_STATE => Record::HardState {
            group,
            hs: HardState {
                term: r.u64()?,
                vote: r.u64()?,
                commit: r.u64()?,
            },
        },
        KIND_SNAPSHOT => Record::Snapshot {
            group,
            meta: SnapshotMeta {
                index: r.u64()?,
                term: r.u64()?,
            },
        },
        KIND_SNAPSHOT_POINT => Record::SnapshotPoint {
            group,
            meta: SnapshotMeta {
                index: r.u64()?,
                term: r.u64()?,
            },
        },
        KIND_COMPACT => Record::Compact {
            group,
            to: r.u64()?,
        },
        other => return Err(format!("unknown record kind {other}")),
    };
    r.done()?;
    Ok(Decoded::Record {
        record,
        end_of_write,
        next: body_start + len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_rejects() {
        let h = encode_header(42);
        assert_eq!(decode_header(&h), HeaderCheck::Valid(42));
        assert_eq!(decode_header(&[0u8; 32]), HeaderCheck::Blank);
        assert_eq!(decode_header(&[]), HeaderCheck::Blank);
        let mut bad = h;
        bad[17] ^= 1;
        assert!(matches!(decode_header(&bad), HeaderCheck::Invalid(_)));
        assert!(matches!(
            decode_header(b"hello, I am not a segment at all!"),
            HeaderCheck::Invalid(_)
        ));
        assert!(matches!(decode_header(b"x"), HeaderCheck::Invalid(_)));
    }

    #[test]
    fn names() {
        assert_eq!(segment_file_name(255), "00000000000000ff.wal");
        assert_eq!(parse_segment_name("00000000000000ff.wal"), Some(255));
        assert_eq!(parse_segment_name("ff.wal"), None);
        assert_eq!(parse_segment_name("00000000000000ff.wal.tmp"), None);
        assert_eq!(parse_segment_name("000000000000zzff.wal"), None);
    }

    #[test]
    fn records_round_trip() {
        let mut buf = vec![0u8; HEADER_LEN];
        let w = GroupWrite {
            group: 7,
            entries: vec![
                LogEntry::new(5, 2, &b"ab"[..]),
                LogEntry::new(6, 2, &b""[..]),
            ],
            hard_state: Some(HardState {
                term: 2,
                vote: 1,
                commit: 4,
            }),
            snapshot: Some(SnapshotMeta { index: 4, term: 1 }),
            snapshot_point: None,
            compact_to: Some(3),
            keep_later: false,
        };
        let mut rw = RecordWriter::new(&mut buf);
        rw.group_write(&w);
        assert_eq!(rw.finish(), 4);
        assert_eq!(
            buf.len() - HEADER_LEN,
            entries_record_len(&w.entries)
                + HARD_STATE_RECORD_LEN
                + SNAPSHOT_RECORD_LEN
                + COMPACT_RECORD_LEN
        );
        let mut off = HEADER_LEN;
        let mut got = Vec::new();
        loop {
            match decode_record(&buf, off).expect("well formed") {
                Decoded::Record {
                    record,
                    end_of_write,
                    next,
                } => {
                    got.push((record, end_of_write));
                    off = next;
                }
                Decoded::End => break,
                Decoded::Torn(r) => panic!("torn: {r}"),
            }
        }
        assert_eq!(got.len(), 4);
        assert!(got[3].1 && !got[0].1 && !got[1].1 && !got[2].1);
        assert_eq!(
            got[1].0,
            Record::Entries {
                group: 7,
                first: 5,
                entries: w.entries.clone(),
                keep_later: false,
            }
        );
        // Any single flipped byte is detected (torn) or, at worst, reported as malformed.
        for i in HEADER_LEN..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x5a;
            let _ = decode_record(&b, HEADER_LEN);
        }
    }
}
