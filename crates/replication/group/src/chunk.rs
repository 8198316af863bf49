//! Message framing shared by every protocol: a message body goes whole or, when large, in
//! chunks that are reassembled within memory bounds.
//!
//! A payload is either one whole message (`WHOLE` tag, then the body) or one
//! chunk of a larger message (`CHUNK` tag, then stream id u64, chunk index u32, chunk
//! count u32, total body length u64, then the chunk's bytes; all little-endian).
//!
//! The [`Reassembler`] never trusts the claimed sizes for allocation: it keeps only the
//! chunks it has received (memory proportional to bytes actually received), refuses
//! messages above [`ReassemblyLimits::max_message_bytes`], keeps at most
//! [`ReassemblyLimits::max_streams_per_sender`] unfinished streams per sender and
//! [`ReassemblyLimits::max_buffered_bytes`] in all, evicting the least recently active
//! stream first, and drops streams idle for [`ReassemblyLimits::max_idle_ticks`] ticks.
//! Stream ids come from a process-wide counter seeded at random, so a restarted sender
//! does not reuse the ids of its previous life, and the receiver does not order ids:
//! any id it has no partial stream for starts a new stream.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};

const WHOLE: u8 = 0;
const CHUNK: u8 = 1;
/// Chunk header: tag, stream id u64, chunk index u32, chunk count u32, total body length u64.
const CHUNK_HEADER: usize = 1 + 8 + 4 + 4 + 8;

/// A payload that could not be decoded or reassembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Empty payload.
    #[error("empty message payload")]
    Empty,
    /// The first byte is not a known tag.
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// A chunk shorter than its header.
    #[error("chunk of {0} bytes is shorter than its header")]
    ShortChunk(usize),
    /// A chunk index outside its count, a zero count, or a count above the body length.
    #[error("bad chunk numbering: chunk {index} of {count} for a {len}-byte message")]
    BadNumbering {
        /// The chunk's index.
        index: u32,
        /// The claimed chunk count.
        count: u32,
        /// The claimed body length.
        len: u64,
    },
    /// A chunk without data (the encoder never sends one).
    #[error("empty chunk")]
    EmptyChunk,
    /// The claimed message size exceeds the configured limit.
    #[error("chunked message of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The claimed body length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A chunk disagrees with earlier chunks of its stream (count, length, duplicate, overflow).
    #[error("inconsistent chunk in stream {stream}: {what}")]
    Inconsistent {
        /// The stream id.
        stream: u64,
        /// What disagreed.
        what: &'static str,
    },
    /// The body did not decode as a message of the protocol.
    #[error("bad message body: {0}")]
    Decode(String),
}

/// A seed that differs between processes and between runs: the std hasher's random keys, the clock and the pid.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()))
}

/// The next chunk stream id: unique in this process, and (random seed) across restarts.
pub fn next_stream_id() -> u64 {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    NEXT.get_or_init(|| AtomicU64::new(random_seed()))
        .fetch_add(1, Ordering::Relaxed)
}

/// Frames a message body of about `size` bytes, which `write` appends to the buffer it is
/// given: one payload if the body fits `chunk_bytes`, else chunks of at most that size
/// under a fresh stream id ([`next_stream_id`]).
pub fn encode_with(
    size: usize,
    chunk_bytes: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> Vec<Bytes> {
    // Tag and body in one buffer: no second copy of a body that goes whole. One spare byte:
    // protobuf's final flush reserves one more byte, which at exact capacity reallocates
    // (copies) the whole message.
    let mut v = Vec::with_capacity(size + 2);
    v.push(WHOLE);
    write(&mut v);
    if v.len() - 1 <= chunk_bytes {
        return vec![Bytes::from(v)];
    }
    let body = &v[1..];
    let stream = next_stream_id();
    let chunks: Vec<&[u8]> = body.chunks(chunk_bytes.max(1)).collect();
    let count = chunks.len() as u32;
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut b = BytesMut::with_capacity(CHUNK_HEADER + c.len());
            b.put_u8(CHUNK);
            b.put_u64_le(stream);
            b.put_u32_le(i as u32);
            b.put_u32_le(count);
            b.put_u64_le(body.len() as u64);
            b.put_slice(c);
            b.freeze()
        })
        .collect()
}

/// Frames `body` (see [`encode_with`]).
pub fn encode(body: &[u8], chunk_bytes: usize) -> Vec<Bytes> {
    encode_with(body.len(), chunk_bytes, |v| v.extend_from_slice(body))
}

/// Bounds on chunk reassembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Largest reassembled message accepted (the snapshot size limit).
    pub max_message_bytes: u64,
    /// Bytes held in unfinished streams of all senders together.
    pub max_buffered_bytes: u64,
    /// Unfinished streams kept per sender.
    pub max_streams_per_sender: usize,
    /// Unfinished streams kept in all.
    pub max_streams: usize,
    /// Ticks a stream may go without a new chunk before it is dropped.
    pub max_idle_ticks: u64,
    /// Smallest chunk accepted except a message's last (tiny chunks would cost more in
    /// bookkeeping than in data).
    pub min_chunk_bytes: u64,
}

/// Bytes of bookkeeping charged per buffered chunk on top of its data.
const CHUNK_COST: u64 = 128;

impl Default for ReassemblyLimits {
    /// 1 GiB messages and buffer, 2 streams per sender, 16 in all, 2,000 idle ticks,
    /// chunks of at least 512 bytes.
    fn default() -> Self {
        ReassemblyLimits {
            max_message_bytes: 1 << 30,
            max_buffered_bytes: 1 << 30,
            max_streams_per_sender: 2,
            max_streams: 16,
            max_idle_ticks: 2_000,
            min_chunk_bytes: 512,
        }
    }
}

/// Counters of a reassembler.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Chunked messages completed.
    pub completed: u64,
    /// Unfinished streams dropped to stay within the limits or for being idle.
    pub evicted: u64,
    /// Chunks refused (bad numbering, size, inconsistency).
    pub rejected_chunks: u64,
}

/// Chunks received so far of one message.
#[derive(Debug)]
struct Partial {
    count: u32,
    len: u64,
    received: u64,
    /// Bytes charged to the buffer budget (data plus bookkeeping).
    charged: u64,
    chunks: BTreeMap<u32, Bytes>,
    /// Tick of the last chunk (for idle eviction).
    touched_tick: u64,
    /// Push sequence number of the last chunk (least recently active goes first).
    touched_seq: u64,
}

/// Reassembles chunked messages per sender; whole messages pass straight through.
#[derive(Debug, Default)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    partial: HashMap<(u64, u64), Partial>,
    buffered: u64,
    tick: u64,
    seq: u64,
    stats: ReassemblyStats,
}

struct Header {
    stream: u64,
    index: u32,
    count: u32,
    len: u64,
}

fn header(payload: &[u8]) -> Result<Header, WireError> {
    if payload.len() < CHUNK_HEADER {
        return Err(WireError::ShortChunk(payload.len()));
    }
    let mut b8 = [0u8; 8];
    let mut b4 = [0u8; 4];
    b8.copy_from_slice(&payload[1..9]);
    let stream = u64::from_le_bytes(b8);
    b4.copy_from_slice(&payload[9..13]);
    let index = u32::from_le_bytes(b4);
    b4.copy_from_slice(&payload[13..17]);
    let count = u32::from_le_bytes(b4);
    b8.copy_from_slice(&payload[17..25]);
    let len = u64::from_le_bytes(b8);
    Ok(Header {
        stream,
        index,
        count,
        len,
    })
}

impl Reassembler {
    /// A reassembler with the given limits.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembler {
            limits,
            ..Reassembler::default()
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Bytes held in unfinished streams.
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered
    }

    /// Unfinished streams held.
    pub fn partial_streams(&self) -> usize {
        self.partial.len()
    }

    /// Advances the idle clock by one tick, dropping streams idle for longer than the limit.
    pub fn tick(&mut self) {
        self.tick += 1;
        let (now, max) = (self.tick, self.limits.max_idle_ticks);
        let stale: Vec<(u64, u64)> = self
            .partial
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.touched_tick) > max)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.evict(k);
        }
    }

    fn evict(&mut self, key: (u64, u64)) {
        if let Some(p) = self.partial.remove(&key) {
            self.buffered -= p.charged;
            self.stats.evicted += 1;
        }
    }

    /// Evicts the least recently active stream among those `pick` selects (other than `keep`).
    fn evict_oldest(&mut self, keep: (u64, u64), pick: impl Fn(&(u64, u64)) -> bool) -> bool {
        let oldest = self
            .partial
            .iter()
            .filter(|(k, _)| **k != keep && pick(k))
            .min_by_key(|(_, p)| p.touched_seq)
            .map(|(k, _)| *k);
        match oldest {
            Some(k) => {
                self.evict(k);
                true
            }
            None => false,
        }
    }

    /// Feeds one payload from `from`; returns a message body once complete.
    pub fn push(&mut self, from: u64, payload: &Bytes) -> Result<Option<Bytes>, WireError> {
        match payload.first() {
            Some(&WHOLE) => Ok(Some(payload.slice(1..))),
            Some(&CHUNK) => {
                let r = self.push_chunk(from, payload);
                if r.is_err() {
                    self.stats.rejected_chunks += 1;
                }
                r
            }
            Some(&t) => Err(WireError::UnknownTag(t)),
            None => Err(WireError::Empty),
        }
    }

    fn push_chunk(&mut self, from: u64, payload: &Bytes) -> Result<Option<Bytes>, WireError> {
        let h = header(payload)?;
        let data = payload.slice(CHUNK_HEADER..);
        if h.count == 0 || h.index >= h.count || u64::from(h.count) > h.len {
            return Err(WireError::BadNumbering {
                index: h.index,
                count: h.count,
                len: h.len,
            });
        }
        if data.is_empty() {
            return Err(WireError::EmptyChunk);
        }
        // Every chunk but the last carries at least `min_chunk_bytes` (so a claimed count is
        // bounded by the length), and bookkeeping is charged with the data.
        let min = self.limits.min_chunk_bytes.max(1);
        if u64::from(h.count) > h.len.div_ceil(min).max(1)
            || (h.index + 1 < h.count && (data.len() as u64) < min)
        {
            return Err(WireError::BadNumbering {
                index: h.index,
                count: h.count,
                len: h.len,
            });
        }
        let cost = data.len() as u64 + CHUNK_COST;
        // A copy: a slice would pin the whole receive buffer it came from.
        let data = Bytes::copy_from_slice(&data);
        let limit = self
            .limits
            .max_message_bytes
            .min(self.limits.max_buffered_bytes);
        if h.len > limit {
            return Err(WireError::TooLarge { len: h.len, limit });
        }
        let key = (from, h.stream);
        self.seq += 1;
        if !self.partial.contains_key(&key) {
            // Room for a new stream: per sender, then in all.
            while self.partial.keys().filter(|(f, _)| *f == from).count()
                >= self.limits.max_streams_per_sender.max(1)
                && self.evict_oldest(key, |(f, _)| *f == from)
            {}
            while self.partial.len() >= self.limits.max_streams.max(1)
                && self.evict_oldest(key, |_| true)
            {}
            self.partial.insert(
                key,
                Partial {
                    count: h.count,
                    len: h.len,
                    received: 0,
                    charged: 0,
                    chunks: BTreeMap::new(),
                    touched_tick: self.tick,
                    touched_seq: self.seq,
                },
            );
        }
        let inconsistent = |what| WireError::Inconsistent {
            stream: h.stream,
            what,
        };
        let bad = match self.partial.get(&key) {
            None => Some("stream vanished"),
            Some(p) if p.count != h.count => Some("chunk count changed"),
            Some(p) if p.len != h.len => Some("message length changed"),
            // A network may deliver a chunk twice: the same bytes again change nothing.
            Some(p) if p.chunks.get(&h.index).is_some_and(|c| *c == data) => {
                return Ok(None);
            }
            Some(p) if p.chunks.contains_key(&h.index) => Some("chunk differs from its duplicate"),
            Some(p) if p.received + data.len() as u64 > p.len => Some("more bytes than the length"),
            Some(_) => None,
        };
        if let Some(what) = bad {
            self.evict(key);
            return Err(inconsistent(what));
        }
        // Room for the bytes: evict other streams, least recently active first.
        while self.buffered + cost > self.limits.max_buffered_bytes
            && self.evict_oldest(key, |_| true)
        {}
        if self.buffered + cost > self.limits.max_buffered_bytes {
            self.evict(key);
            return Err(WireError::TooLarge {
                len: h.len,
                limit: self.limits.max_buffered_bytes,
            });
        }
        let (tick, seq) = (self.tick, self.seq);
        let Some(p) = self.partial.get_mut(&key) else {
            return Err(inconsistent("stream vanished"));
        };
        p.received += data.len() as u64;
        p.touched_tick = tick;
        p.touched_seq = seq;
        p.chunks.insert(h.index, data);
        p.charged += cost;
        self.buffered += cost;
        if p.chunks.len() < p.count as usize {
            return Ok(None);
        }
        let Some(p) = self.partial.remove(&key) else {
            return Err(inconsistent("stream vanished"));
        };
        self.buffered -= p.charged;
        if p.received != p.len {
            return Err(inconsistent("chunks do not add up to the length"));
        }
        let mut body = BytesMut::with_capacity(p.received as usize);
        for c in p.chunks.values() {
            body.put_slice(c);
        }
        self.stats.completed += 1;
        Ok(Some(body.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of `bytes` bytes whose first 8 carry `index`.
    fn snapshot_msg(bytes: usize, index: u64) -> Vec<u8> {
        let mut v = vec![7u8; bytes.max(8)];
        v[..8].copy_from_slice(&index.to_le_bytes());
        v
    }

    fn index_of(b: &Bytes) -> u64 {
        u64::from_le_bytes(b[..8].try_into().unwrap())
    }

    fn chunk(stream: u64, index: u32, count: u32, len: u64, data: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(CHUNK);
        b.put_u64_le(stream);
        b.put_u32_le(index);
        b.put_u32_le(count);
        b.put_u64_le(len);
        b.put_slice(data);
        b.freeze()
    }

    #[test]
    fn big_snapshots_round_trip_in_chunks_small_messages_whole() {
        let parts = encode(&snapshot_msg(10_000, 42), 1000);
        assert!(parts.len() >= 10);
        let mut r = Reassembler::default();
        let mut out = None;
        for p in parts.iter().rev() {
            out = r.push(2, p).unwrap();
        }
        assert_eq!(out.as_ref().map(index_of), Some(42));
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.partial_streams(), 0);
        let small = encode(b"", 1000);
        assert_eq!(small.len(), 1);
        assert!(r.push(2, &small[0]).unwrap().is_some());
        assert_eq!(
            r.push(2, &Bytes::from_static(&[9, 1, 2])),
            Err(WireError::UnknownTag(9))
        );
        assert_eq!(
            r.push(2, &Bytes::from_static(&[CHUNK, 1])),
            Err(WireError::ShortChunk(2))
        );
        assert_eq!(r.push(2, &Bytes::new()), Err(WireError::Empty));
    }

    #[test]
    fn stream_ids_are_fresh_for_every_message_and_every_sender_life() {
        let m = snapshot_msg(3_000, 1);
        let id = |p: &Bytes| header(p).map(|h| h.stream).unwrap();
        let a = encode(&m, 1000);
        let b = encode(&m, 1000);
        assert!(a.iter().all(|p| id(p) == id(&a[0])));
        assert_ne!(
            id(&a[0]),
            id(&b[0]),
            "same caller counter, distinct wire ids"
        );
        assert_ne!(random_seed(), random_seed());
    }

    #[test]
    fn claimed_huge_counts_and_lengths_allocate_nothing() {
        // Minimum chunk size off: this test is about claimed counts and lengths.
        let mut r = Reassembler::new(ReassemblyLimits {
            min_chunk_bytes: 1,
            ..ReassemblyLimits::default()
        });
        // The old reassembler allocated a slot per claimed chunk: 60 of these took 1.9 GiB.
        for s in 0..60u64 {
            let p = chunk(s, 0, 1 << 20, 1 << 30, b"x");
            assert_eq!(r.push(1, &p).unwrap(), None);
        }
        assert!(
            r.buffered_bytes() <= 2 * (1 + CHUNK_COST),
            "{}",
            r.buffered_bytes()
        );
        assert!(r.partial_streams() <= 2);
        assert_eq!(r.stats().evicted, 58);
        // A length above the limit is refused outright.
        let p = chunk(99, 0, 2, (1 << 30) + 1, b"x");
        assert!(matches!(r.push(1, &p), Err(WireError::TooLarge { .. })));
        // More chunks than bytes, index past count, zero count.
        for (i, c, l) in [(0, 10, 5), (3, 3, 10), (0, 0, 10)] {
            let p = chunk(7, i, c, l, b"x");
            assert!(matches!(r.push(1, &p), Err(WireError::BadNumbering { .. })));
        }
        assert_eq!(
            r.push(1, &chunk(7, 0, 2, 10, b"")),
            Err(WireError::EmptyChunk)
        );
    }

    #[test]
    fn many_senders_and_streams_stay_within_the_byte_and_stream_bounds() {
        let limits = ReassemblyLimits {
            max_buffered_bytes: 10_000,
            max_message_bytes: 4_000,
            max_streams: 4,
            ..ReassemblyLimits::default()
        };
        let mut r = Reassembler::new(limits);
        for from in 0..50u64 {
            for s in 0..5u64 {
                let p = chunk(s, 0, 4, 4_000, &[1u8; 1_000]);
                assert_eq!(r.push(from, &p).unwrap(), None);
                assert!(r.buffered_bytes() <= 10_000);
                assert!(r.partial_streams() <= 4);
            }
        }
        assert_eq!(r.stats().evicted, 250 - 4);
        // The survivors are the most recent streams; one of them still completes.
        let mut out = None;
        let m = snapshot_msg(2_000, 5);
        let parts = encode(&m, 700);
        for p in &parts {
            out = r.push(49, p).unwrap();
        }
        assert_eq!(out.as_ref().map(index_of), Some(5));
    }

    #[test]
    fn old_streams_are_evicted_by_age_and_by_newer_streams_of_the_same_sender() {
        let mut r = Reassembler::new(ReassemblyLimits {
            max_idle_ticks: 3,
            min_chunk_bytes: 1,
            ..ReassemblyLimits::default()
        });
        r.push(1, &chunk(10, 0, 2, 2, b"a")).unwrap();
        r.push(2, &chunk(20, 0, 2, 2, b"a")).unwrap();
        for _ in 0..3 {
            r.tick();
        }
        assert_eq!(
            r.partial_streams(),
            2,
            "not idle for longer than the limit yet"
        );
        r.push(2, &chunk(21, 0, 2, 2, b"a")).unwrap();
        r.tick();
        assert_eq!(
            r.partial_streams(),
            1,
            "1's stream and 2's stream 20 were idle too long"
        );
        assert_eq!(r.stats().evicted, 2);
        assert_eq!(r.buffered_bytes(), 1 + CHUNK_COST);
        // A restarted sender whose ids are smaller is not refused: any new id starts a stream.
        r.push(2, &chunk(5, 0, 2, 2, b"a")).unwrap();
        r.push(2, &chunk(1, 0, 2, 2, b"a")).unwrap();
        assert_eq!(r.partial_streams(), 2, "at most two streams per sender");
        assert_eq!(
            r.stats().evicted,
            3,
            "stream 21, the least recently active, made room"
        );
    }

    #[test]
    fn inconsistent_chunks_are_refused_and_drop_their_stream() {
        let mut r = Reassembler::new(ReassemblyLimits {
            min_chunk_bytes: 1,
            ..ReassemblyLimits::default()
        });
        r.push(1, &chunk(3, 0, 3, 30, &[0u8; 10])).unwrap();
        let e = r.push(1, &chunk(3, 1, 4, 30, &[0u8; 10]));
        assert!(matches!(
            e,
            Err(WireError::Inconsistent {
                what: "chunk count changed",
                ..
            })
        ));
        assert_eq!(r.partial_streams(), 0);
        // A chunk delivered twice (a duplicating network) is taken once; the stream goes on.
        r.push(1, &chunk(3, 0, 3, 30, &[0u8; 10])).unwrap();
        assert_eq!(r.push(1, &chunk(3, 0, 3, 30, &[0u8; 10])), Ok(None));
        assert_eq!(r.partial_streams(), 1);
        assert_eq!(r.stats().rejected_chunks, 1, "only the count change above");
        // The same index with other bytes is refused and drops the stream.
        let e = r.push(1, &chunk(3, 0, 3, 30, &[1u8; 10]));
        assert!(matches!(
            e,
            Err(WireError::Inconsistent {
                what: "chunk differs from its duplicate",
                ..
            })
        ));
        r.push(1, &chunk(3, 0, 3, 30, &[0u8; 10])).unwrap();
        let e = r.push(1, &chunk(3, 1, 3, 31, &[0u8; 10]));
        assert!(matches!(e, Err(WireError::Inconsistent { .. })));
        r.push(1, &chunk(3, 0, 3, 30, &[0u8; 10])).unwrap();
        let e = r.push(1, &chunk(3, 1, 3, 30, &[0u8; 25]));
        assert!(matches!(e, Err(WireError::Inconsistent { .. })));
        r.push(1, &chunk(3, 0, 3, 30, &[0u8; 10])).unwrap();
        r.push(1, &chunk(3, 1, 3, 30, &[0u8; 10])).unwrap();
        let e = r.push(1, &chunk(3, 2, 3, 30, &[0u8; 5]));
        assert!(matches!(e, Err(WireError::Inconsistent { .. })));
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.partial_streams(), 0);
    }
}
