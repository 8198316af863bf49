//! Wire form of Raft messages: the protobuf body in the shared framing of
//! [`mako_group::chunk`] (whole, or chunks reassembled within memory bounds).

use bytes::Bytes;
use mako_group::chunk;
use protobuf::Message as _;
use raft::eraftpb::Message;

pub use mako_group::chunk::{ReassemblyLimits, ReassemblyStats, WireError, next_stream_id};

/// Encodes `msg`, splitting it into chunks of at most `chunk_bytes` if it is larger.
///
/// `_stream` is unused (kept for callers' sake): a chunked message's stream id comes from
/// [`next_stream_id`], so ids never repeat across restarts of the sender.
pub fn encode(msg: &Message, chunk_bytes: usize, _stream: u64) -> Vec<Bytes> {
    chunk::encode_with(msg.compute_size() as usize, chunk_bytes, |v| {
        let at = v.len();
        if msg.write_to_vec(v).is_err() {
            v.truncate(at);
        }
    })
}

/// Reassembles chunked Raft messages per sender and decodes them.
#[derive(Debug, Default)]
pub struct Reassembler(chunk::Reassembler);

impl Reassembler {
    /// A reassembler with the given limits.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembler(chunk::Reassembler::new(limits))
    }

    /// Counters so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.0.stats()
    }

    /// Bytes held in unfinished streams.
    pub fn buffered_bytes(&self) -> u64 {
        self.0.buffered_bytes()
    }

    /// Unfinished streams held.
    pub fn partial_streams(&self) -> usize {
        self.0.partial_streams()
    }

    /// Advances the idle clock by one tick (see [`chunk::Reassembler::tick`]).
    pub fn tick(&mut self) {
        self.0.tick();
    }

    /// Feeds one payload from `from`; returns the decoded message once complete.
    pub fn push(&mut self, from: u64, payload: &Bytes) -> Result<Option<Message>, WireError> {
        match self.0.push(from, payload)? {
            // Entry data shares `body` (no copy).
            Some(body) => Message::parse_from_carllerche_bytes(&body)
                .map(Some)
                .map_err(|e| WireError::Decode(e.to_string())),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{MessageType, Snapshot};

    #[test]
    fn a_big_snapshot_message_round_trips_in_chunks() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        let mut s = Snapshot {
            data: vec![7u8; 10_000].into(),
            ..Default::default()
        };
        s.mut_metadata().index = 42;
        m.set_snapshot(s);
        let parts = encode(&m, 1000, 0);
        assert!(parts.len() > 10);
        let mut r = Reassembler::default();
        let mut out = None;
        for p in parts.iter().rev() {
            out = r.push(2, p).unwrap();
        }
        assert_eq!(out.map(|m| m.get_snapshot().get_metadata().index), Some(42));
        let garbage = Bytes::from_static(&[0, 0xff, 0xff, 0xff]);
        assert!(matches!(r.push(2, &garbage), Err(WireError::Decode(_))));
    }
}
