//! Wire form of Raft messages: protobuf bytes, large snapshots split into chunks.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use protobuf::Message as _;
use raft::eraftpb::Message;

const WHOLE: u8 = 0;
const CHUNK: u8 = 1;
/// Chunk header: tag, stream id u64, chunk index u32, chunk count u32.
const CHUNK_HEADER: usize = 1 + 8 + 4 + 4;

/// A message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Empty payload or unknown tag.
    #[error("bad message frame: {0}")]
    Frame(&'static str),
    /// The protobuf body did not parse.
    #[error("bad raft message: {0}")]
    Protobuf(String),
}

/// Encodes `msg`, splitting it into chunks of at most `chunk_bytes` if it is larger.
pub fn encode(msg: &Message, chunk_bytes: usize, stream: u64) -> Vec<Bytes> {
    let body = msg.write_to_bytes().unwrap_or_default();
    if body.len() <= chunk_bytes {
        let mut b = BytesMut::with_capacity(body.len() + 1);
        b.put_u8(WHOLE);
        b.put_slice(&body);
        return vec![b.freeze()];
    }
    let chunks: Vec<&[u8]> = body.chunks(chunk_bytes.max(1)).collect();
    let total = chunks.len() as u32;
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut b = BytesMut::with_capacity(CHUNK_HEADER + c.len());
            b.put_u8(CHUNK);
            b.put_u64_le(stream);
            b.put_u32_le(i as u32);
            b.put_u32_le(total);
            b.put_slice(c);
            b.freeze()
        })
        .collect()
}

fn parse(body: &[u8]) -> Result<Message, WireError> {
    Message::parse_from_bytes(body).map_err(|e| WireError::Protobuf(e.to_string()))
}

/// Chunks received so far of one message: expected count and slots.
type Partial = (u32, Vec<Option<Bytes>>);

/// Reassembles chunked messages per sender; whole messages pass straight through.
#[derive(Debug, Default)]
pub struct Reassembler {
    partial: HashMap<(u64, u64), Partial>,
}

impl Reassembler {
    /// Feeds one payload from `from`; returns a message once complete.
    pub fn push(&mut self, from: u64, payload: &Bytes) -> Result<Option<Message>, WireError> {
        match payload.first() {
            Some(&WHOLE) => parse(&payload[1..]).map(Some),
            Some(&CHUNK) => {
                if payload.len() < CHUNK_HEADER {
                    return Err(WireError::Frame("short chunk header"));
                }
                let rd = |a: usize, b: usize| &payload[a..b];
                let stream = u64::from_le_bytes(rd(1, 9).try_into().unwrap_or_default());
                let idx = u32::from_le_bytes(rd(9, 13).try_into().unwrap_or_default());
                let total = u32::from_le_bytes(rd(13, 17).try_into().unwrap_or_default());
                if total == 0 || idx >= total || total > 1 << 20 {
                    return Err(WireError::Frame("bad chunk numbering"));
                }
                // A newer stream from the same sender supersedes an unfinished one.
                self.partial.retain(|(f, s), _| *f != from || *s >= stream);
                let slot = self
                    .partial
                    .entry((from, stream))
                    .or_insert_with(|| (total, vec![None; total as usize]));
                if slot.0 != total {
                    self.partial.remove(&(from, stream));
                    return Err(WireError::Frame("chunk count changed"));
                }
                slot.1[idx as usize] = Some(payload.slice(CHUNK_HEADER..));
                if slot.1.iter().any(Option::is_none) {
                    return Ok(None);
                }
                let Some((_, parts)) = self.partial.remove(&(from, stream)) else {
                    return Ok(None);
                };
                let mut body = BytesMut::new();
                for p in parts.into_iter().flatten() {
                    body.put_slice(&p);
                }
                parse(&body).map(Some)
            }
            _ => Err(WireError::Frame("unknown tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{MessageType, Snapshot};

    #[test]
    fn big_snapshots_round_trip_in_chunks_small_messages_whole() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        let mut s = Snapshot {
            data: vec![7u8; 10_000].into(),
            ..Default::default()
        };
        s.mut_metadata().index = 42;
        m.set_snapshot(s);
        let parts = encode(&m, 1000, 9);
        assert!(parts.len() > 10);
        let mut r = Reassembler::default();
        let mut out = None;
        for p in parts.iter().rev() {
            out = r.push(2, p).unwrap();
        }
        assert_eq!(
            out.as_ref().map(|m| m.get_snapshot().get_metadata().index),
            Some(42)
        );
        let small = encode(&Message::default(), 1000, 10);
        assert_eq!(small.len(), 1);
        assert!(r.push(2, &small[0]).unwrap().is_some());
        assert!(r.push(2, &Bytes::from_static(&[9, 1, 2])).is_err());
        assert!(r.push(2, &Bytes::from_static(&[CHUNK, 1])).is_err());
    }
}
