//! The commit-log wire format: encoding entries to bytes and decoding them back.
//!
//! # Wire format
//!
//! All integers are little-endian. Every entry is framed as
//!
//! ```text
//! version u8 | crc32c u32 | body_len u32 | body (exactly body_len bytes)
//! ```
//!
//! `version` is [`FORMAT_VERSION`]; the CRC32C (Castagnoli) checksum covers the body
//! only. The body starts with a `kind u8` followed by that kind's payload:
//!
//! | kind | tag | payload |
//! |------|-----|---------|
//! | Batch     | 1 | `epoch u32, stream u32, seq u64, piece_count u32, piece*` |
//! | NoOp      | 2 | `epoch u32` |
//! | Advancer  | 3 | (empty) |
//! | Ending    | 4 | `stream u32` |
//! | Heartbeat | 5 | `epoch u32, stream u32, seq u64, w u64` |
//!
//! `seq` numbers a stream's entries (batches and heartbeats together) from 0 within one
//! epoch, so a gap in a committed log (a lost entry) is visible to every replica.
//!
//! ```text
//! piece = vt_len u16 | vt u64 * vt_len | write_count u32 | write * write_count
//! write = table u32 | key_len u32 | key bytes | op u8 (0 = Put, 1 = Delete)
//!         | if Put: value_len u32 | value bytes
//! ```
//!
//! # Decoding rules
//!
//! Decoding checks, in order: the buffer holds a full header, the version is known
//! (before the checksum, so a future format is reported as such), `body_len` equals
//! the number of remaining bytes exactly, the checksum matches, and then parses the
//! body. Every count is checked against the bytes left before anything is allocated,
//! and bytes left over at the end of the body are an error. Decoding never panics.

use bytes::Bytes;

use crate::entry::{Batch, Entry, EntryKind, Piece, Write, WriteOp, WriteRef};

/// Version byte written at the start of every entry.
pub const FORMAT_VERSION: u8 = 2;

/// Size in bytes of the frame header (`version`, `crc32c`, `body_len`).
pub const HEADER_LEN: usize = 1 + 4 + 4;

const OP_PUT: u8 = 0;
const OP_DELETE: u8 = 1;

/// Smallest possible encoded piece: `vt_len` plus `write_count`.
const MIN_PIECE_LEN: usize = 2 + 4;
/// Smallest possible encoded write: `table`, `key_len` and `op`.
const MIN_WRITE_LEN: usize = 4 + 4 + 1;

/// Offset of the crc field within the frame.
const CRC_OFFSET: usize = 1;
/// Offset of the body_len field within the frame.
const BODY_LEN_OFFSET: usize = 5;
/// Offset of a batch's `piece_count` field from the start of its frame.
pub(crate) const PIECE_COUNT_OFFSET: usize = HEADER_LEN + 1 + 4 + 4 + 8;
/// Offset of a batch's `seq` field from the start of its frame.
pub(crate) const SEQ_OFFSET: usize = HEADER_LEN + 1 + 4 + 4;

/// Why a byte buffer is not a valid commit-log entry.
#[derive(thiserror::Error, Debug, PartialEq, Eq, Clone)]
pub enum DecodeError {
    /// The buffer ends before the header or the declared body does.
    #[error("entry truncated: needed {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the entry needs.
        needed: usize,
        /// Bytes actually present.
        available: usize,
    },
    /// The version byte is not one this crate understands.
    #[error("unknown commit-log format version {0}")]
    UnknownVersion(u8),
    /// The body's checksum does not match the header.
    #[error("checksum mismatch: header says {expected:#010x}, body hashes to {actual:#010x}")]
    ChecksumMismatch {
        /// Checksum stored in the header.
        expected: u32,
        /// Checksum computed over the body.
        actual: u32,
    },
    /// The body's kind byte is not a known entry kind.
    #[error("unknown entry kind {0}")]
    UnknownKind(u8),
    /// The buffer holds more bytes than the header declares.
    #[error("length mismatch: header declares a {declared}-byte body, buffer holds {actual}")]
    LengthMismatch {
        /// Body length declared in the header.
        declared: usize,
        /// Bytes present after the header.
        actual: usize,
    },
    /// The body passed its checksum but does not parse.
    #[error("malformed entry: {0}")]
    Malformed(&'static str),
}

impl Entry {
    /// Encodes the entry into a fresh buffer.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        Bytes::from(out)
    }

    /// Appends the encoded entry to `out`.
    ///
    /// # Panics
    ///
    /// If a vector timestamp has more than `u16::MAX` components, or a count, key,
    /// value or the whole body exceeds `u32::MAX`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = begin_frame(out);
        out.push(self.kind().tag());
        match self {
            Entry::Batch(batch) => {
                put_u32(out, batch.epoch);
                put_u32(out, batch.stream);
                put_u64(out, batch.seq);
                put_u32(out, len_u32(batch.pieces.len(), "piece count"));
                for piece in &batch.pieces {
                    put_piece(out, &piece.vt, piece.writes.iter().map(WriteRef::from));
                }
            }
            Entry::NoOp { epoch } => put_u32(out, *epoch),
            Entry::Advancer => {}
            Entry::Ending { stream } => put_u32(out, *stream),
            Entry::Heartbeat {
                epoch,
                stream,
                seq,
                w,
            } => {
                put_u32(out, *epoch);
                put_u32(out, *stream);
                put_u64(out, *seq);
                put_u64(out, *w);
            }
        }
        finish_frame(out, start);
    }

    /// Number of bytes [`Entry::encode`] produces for this entry.
    pub fn encoded_len(&self) -> usize {
        let payload = match self {
            Entry::Batch(batch) => {
                20 + batch
                    .pieces
                    .iter()
                    .map(|p| {
                        MIN_PIECE_LEN
                            + 8 * p.vt.len()
                            + p.writes
                                .iter()
                                .map(|w| {
                                    MIN_WRITE_LEN
                                        + w.key.len()
                                        + match &w.op {
                                            WriteOp::Put(v) => 4 + v.len(),
                                            WriteOp::Delete => 0,
                                        }
                                })
                                .sum::<usize>()
                    })
                    .sum::<usize>()
            }
            Entry::NoOp { .. } | Entry::Ending { .. } => 4,
            Entry::Advancer => 0,
            Entry::Heartbeat { .. } => 24,
        };
        HEADER_LEN + 1 + payload
    }

    /// Decodes one entry that fills `buf` exactly; keys and values borrow from `buf`.
    pub fn decode(buf: &Bytes) -> Result<Entry, DecodeError> {
        Self::decode_with(buf, Writes::Keep)
    }

    /// [`Entry::decode`] without the writes: a batch's pieces keep their vector timestamps
    /// and come with no writes. The entry is checked as fully (checksum, every length) as
    /// `decode` checks it; for readers of stamps only (a leader feeding its watermark with
    /// the batches it already installed).
    pub fn decode_stamps(buf: &Bytes) -> Result<Entry, DecodeError> {
        Self::decode_with(buf, Writes::Skip)
    }

    fn decode_with(buf: &Bytes, writes: Writes) -> Result<Entry, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let expected = r.u32()?;
        let declared = r.u32()? as usize;
        let actual = r.remaining();
        if declared > actual {
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN.saturating_add(declared),
                available: buf.len(),
            });
        }
        if declared < actual {
            return Err(DecodeError::LengthMismatch { declared, actual });
        }
        let computed = crc32c::crc32c(r.rest());
        if computed != expected {
            return Err(DecodeError::ChecksumMismatch {
                expected,
                actual: computed,
            });
        }
        let entry = parse_body(&mut r, writes)?;
        if r.remaining() != 0 {
            return Err(DecodeError::Malformed("trailing bytes after entry payload"));
        }
        Ok(entry)
    }
}

/// Whether decoding a batch builds its writes or only checks and skips them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writes {
    Keep,
    Skip,
}

/// Parses the body (kind byte and payload) at the reader's position.
fn parse_body(r: &mut Reader<'_>, writes: Writes) -> Result<Entry, DecodeError> {
    let tag = r.u8()?;
    let kind = EntryKind::from_tag(tag).ok_or(DecodeError::UnknownKind(tag))?;
    Ok(match kind {
        EntryKind::Batch => Entry::Batch(parse_batch(r, writes)?),
        EntryKind::NoOp => Entry::NoOp { epoch: r.u32()? },
        EntryKind::Advancer => Entry::Advancer,
        EntryKind::Ending => Entry::Ending { stream: r.u32()? },
        EntryKind::Heartbeat => Entry::Heartbeat {
            epoch: r.u32()?,
            stream: r.u32()?,
            seq: r.u64()?,
            w: r.u64()?,
        },
    })
}

fn parse_batch(r: &mut Reader<'_>, keep: Writes) -> Result<Batch, DecodeError> {
    let epoch = r.u32()?;
    let stream = r.u32()?;
    let seq = r.u64()?;
    let piece_count = r.count(MIN_PIECE_LEN, "piece count exceeds remaining bytes")?;
    let mut pieces = Vec::with_capacity(piece_count);
    for _ in 0..piece_count {
        let vt_len = r.count_u16(8, "vector timestamp length exceeds remaining bytes")?;
        let mut vt = Vec::with_capacity(vt_len);
        for _ in 0..vt_len {
            vt.push(r.u64()?);
        }
        let write_count = r.count(MIN_WRITE_LEN, "write count exceeds remaining bytes")?;
        let mut writes = Vec::with_capacity(if keep == Writes::Keep { write_count } else { 0 });
        for _ in 0..write_count {
            let table = r.u32()?;
            let key_len = r.u32()? as usize;
            if keep == Writes::Skip {
                r.take(key_len)?;
                match r.u8()? {
                    OP_PUT => {
                        let value_len = r.u32()? as usize;
                        r.take(value_len)?;
                    }
                    OP_DELETE => {}
                    _ => return Err(DecodeError::Malformed("unknown write op tag")),
                }
                continue;
            }
            let key = r.bytes(key_len)?;
            let op = match r.u8()? {
                OP_PUT => {
                    let value_len = r.u32()? as usize;
                    WriteOp::Put(r.bytes(value_len)?)
                }
                OP_DELETE => WriteOp::Delete,
                _ => return Err(DecodeError::Malformed("unknown write op tag")),
            };
            writes.push(Write { table, key, op });
        }
        pieces.push(Piece { vt, writes });
    }
    Ok(Batch {
        epoch,
        stream,
        seq,
        pieces,
    })
}

/// A bounds-checked cursor over an entry buffer.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The unread bytes, without consuming them.
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Consumes `n` bytes and returns them as a slice.
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Malformed("length overflows"))?;
        let slice = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Malformed("field runs past end of body"))?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    /// Consumes `n` bytes as a zero-copy slice of the underlying buffer.
    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.buf.slice(start..self.pos))
    }

    /// Reads a u32 count of items at least `min_item` bytes each, rejecting counts
    /// that cannot fit in what is left.
    fn count(&mut self, min_item: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        self.check_count(n, min_item, what)
    }

    /// Like [`Reader::count`] for a u16 count.
    fn count_u16(&mut self, min_item: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.u16()? as usize;
        self.check_count(n, min_item, what)
    }

    fn check_count(
        &self,
        n: usize,
        min_item: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        if n > self.remaining() / min_item {
            Err(DecodeError::Malformed(what))
        } else {
            Ok(n)
        }
    }
}

/// Writes a header placeholder and returns the frame's start offset.
pub(crate) fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&[0u8; HEADER_LEN - 1]);
    start
}

/// Fills in `body_len` and the checksum of the frame starting at `start`.
pub(crate) fn finish_frame(out: &mut [u8], start: usize) {
    let body_start = start + HEADER_LEN;
    let body_len = len_u32(out.len() - body_start, "entry body length");
    let crc = crc32c::crc32c(&out[body_start..]);
    out[start + CRC_OFFSET..start + CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    out[start + BODY_LEN_OFFSET..start + BODY_LEN_OFFSET + 4]
        .copy_from_slice(&body_len.to_le_bytes());
}

/// Starts a Batch frame with zero pieces and returns the frame's start offset.
pub(crate) fn begin_batch(out: &mut Vec<u8>, epoch: u32, stream: u32) -> usize {
    let start = begin_frame(out);
    out.push(EntryKind::Batch.tag());
    put_u32(out, epoch);
    put_u32(out, stream);
    put_u64(out, 0);
    put_u32(out, 0);
    start
}

/// Overwrites the sequence number of the Batch frame starting at `start`.
pub(crate) fn set_seq(out: &mut [u8], start: usize, seq: u64) {
    let at = start + SEQ_OFFSET;
    out[at..at + 8].copy_from_slice(&seq.to_le_bytes());
}

/// Overwrites the piece count of the Batch frame starting at `start`.
pub(crate) fn set_piece_count(out: &mut [u8], start: usize, count: u32) {
    let at = start + PIECE_COUNT_OFFSET;
    out[at..at + 4].copy_from_slice(&count.to_le_bytes());
}

/// Appends one encoded piece.
pub(crate) fn put_piece<'a>(
    out: &mut Vec<u8>,
    vt: &[u64],
    writes: impl IntoIterator<Item = WriteRef<'a>>,
) {
    let vt_len = u16::try_from(vt.len()).expect("vector timestamp longer than u16::MAX");
    out.extend_from_slice(&vt_len.to_le_bytes());
    for c in vt {
        put_u64(out, *c);
    }
    let count_at = out.len();
    put_u32(out, 0);
    let mut count: usize = 0;
    for w in writes {
        put_u32(out, w.table);
        put_u32(out, len_u32(w.key.len(), "key length"));
        out.extend_from_slice(w.key);
        match w.value {
            Some(v) => {
                out.push(OP_PUT);
                put_u32(out, len_u32(v.len(), "value length"));
                out.extend_from_slice(v);
            }
            None => out.push(OP_DELETE),
        }
        count += 1;
    }
    let count = len_u32(count, "write count");
    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn len_u32(n: usize, what: &str) -> u32 {
    match u32::try_from(n) {
        Ok(v) => v,
        Err(_) => panic!("{what} {n} does not fit in u32"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames an arbitrary body with a correct header.
    fn frame(body: &[u8]) -> Bytes {
        let mut out = Vec::new();
        let start = begin_frame(&mut out);
        out.extend_from_slice(body);
        finish_frame(&mut out, start);
        Bytes::from(out)
    }

    fn batch_body(piece_count: u32, pieces: &[u8]) -> Vec<u8> {
        let mut b = vec![EntryKind::Batch.tag()];
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&11u64.to_le_bytes());
        b.extend_from_slice(&piece_count.to_le_bytes());
        b.extend_from_slice(pieces);
        b
    }

    #[test]
    fn header_layout() {
        let e = Entry::Heartbeat {
            epoch: 6,
            stream: 2,
            seq: 9,
            w: 0x0102_0304_0506_0708,
        };
        let b = e.encode();
        assert_eq!(b.len(), HEADER_LEN + 1 + 4 + 4 + 8 + 8);
        assert_eq!(b[0], FORMAT_VERSION);
        assert_eq!(&b[5..9], &25u32.to_le_bytes());
        assert_eq!(&b[1..5], &crc32c::crc32c(&b[9..]).to_le_bytes());
        assert_eq!(b[9], 5);
        assert_eq!(&b[10..14], &6u32.to_le_bytes());
        assert_eq!(&b[14..18], &2u32.to_le_bytes());
        assert_eq!(&b[18..26], &9u64.to_le_bytes());
        assert_eq!(&b[26..], &0x0102_0304_0506_0708u64.to_le_bytes());
    }

    #[test]
    fn empty_and_short_buffers_are_truncated() {
        for n in 0..HEADER_LEN {
            let b = Bytes::from(vec![FORMAT_VERSION; n]);
            assert_eq!(
                Entry::decode(&b),
                Err(DecodeError::Truncated {
                    needed: HEADER_LEN,
                    available: n
                })
            );
        }
    }

    #[test]
    fn unknown_version_is_reported_before_checksum() {
        let mut v = Entry::Advancer.encode().to_vec();
        v[0] = 9;
        v[1] ^= 0xff;
        assert_eq!(
            Entry::decode(&Bytes::from(v)),
            Err(DecodeError::UnknownVersion(9))
        );
    }

    #[test]
    fn extra_bytes_after_body_are_a_length_mismatch() {
        let mut v = Entry::NoOp { epoch: 1 }.encode().to_vec();
        v.push(0);
        assert_eq!(
            Entry::decode(&Bytes::from(v)),
            Err(DecodeError::LengthMismatch {
                declared: 5,
                actual: 6
            })
        );
    }

    #[test]
    fn checksum_mismatch_reports_both_values() {
        let mut v = Entry::Ending { stream: 4 }.encode().to_vec();
        let expected = u32::from_le_bytes([v[1], v[2], v[3], v[4]]);
        v[10] ^= 1;
        let actual = crc32c::crc32c(&v[9..]);
        assert_eq!(
            Entry::decode(&Bytes::from(v)),
            Err(DecodeError::ChecksumMismatch { expected, actual })
        );
    }

    #[test]
    fn unknown_kind() {
        assert_eq!(
            Entry::decode(&frame(&[0])),
            Err(DecodeError::UnknownKind(0))
        );
        assert_eq!(
            Entry::decode(&frame(&[6, 0, 0])),
            Err(DecodeError::UnknownKind(6))
        );
    }

    #[test]
    fn empty_body_is_malformed() {
        assert!(matches!(
            Entry::decode(&frame(&[])),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn trailing_bytes_in_body() {
        assert_eq!(
            Entry::decode(&frame(&[3, 0])),
            Err(DecodeError::Malformed("trailing bytes after entry payload"))
        );
    }

    #[test]
    fn short_payload_is_malformed() {
        assert!(matches!(
            Entry::decode(&frame(&[2, 1, 0])),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn huge_counts_are_rejected_before_allocating() {
        let body = batch_body(u32::MAX, &[0; 64]);
        assert_eq!(
            Entry::decode(&frame(&body)),
            Err(DecodeError::Malformed(
                "piece count exceeds remaining bytes"
            ))
        );
        // One piece: vt_len = 65535 with only a few bytes behind it.
        let body = batch_body(1, &[0xff, 0xff, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Entry::decode(&frame(&body)),
            Err(DecodeError::Malformed(
                "vector timestamp length exceeds remaining bytes"
            ))
        );
        // One piece, empty vt, write_count = u32::MAX.
        let body = batch_body(
            1,
            &[0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(
            Entry::decode(&frame(&body)),
            Err(DecodeError::Malformed(
                "write count exceeds remaining bytes"
            ))
        );
        // One write whose key_len is u32::MAX.
        let mut piece = vec![0, 0, 1, 0, 0, 0];
        piece.extend_from_slice(&1u32.to_le_bytes());
        piece.extend_from_slice(&u32::MAX.to_le_bytes());
        piece.push(1);
        assert!(matches!(
            Entry::decode(&frame(&batch_body(1, &piece))),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn bad_op_tag() {
        let mut piece = vec![0, 0, 1, 0, 0, 0];
        piece.extend_from_slice(&1u32.to_le_bytes());
        piece.extend_from_slice(&1u32.to_le_bytes());
        piece.push(b'k');
        piece.push(2);
        assert_eq!(
            Entry::decode(&frame(&batch_body(1, &piece))),
            Err(DecodeError::Malformed("unknown write op tag"))
        );
    }

    #[test]
    fn decode_is_zero_copy() {
        let e = Entry::Batch(Batch {
            epoch: 1,
            stream: 0,
            seq: 0,
            pieces: vec![Piece {
                vt: vec![1],
                writes: vec![Write::put(1, &b"key"[..], &b"value"[..])],
            }],
        });
        let buf = e.encode();
        let Ok(Entry::Batch(b)) = Entry::decode(&buf) else {
            panic!("decode failed")
        };
        let range = buf.as_ptr_range();
        let key = &b.pieces[0].writes[0].key;
        assert!(range.contains(&key.as_ptr()));
        let WriteOp::Put(v) = &b.pieces[0].writes[0].op else {
            panic!("expected put")
        };
        assert!(range.contains(&v.as_ptr()));
    }

    #[test]
    fn kind_tags_round_trip() {
        for k in EntryKind::ALL {
            assert_eq!(EntryKind::from_tag(k.tag()), Some(k));
        }
        assert_eq!(EntryKind::from_tag(0), None);
        assert_eq!(EntryKind::from_tag(6), None);
    }
}
