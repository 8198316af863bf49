//! Wire format of the TCP transport: length-delimited frames with a fixed header.
//!
//! Every frame is a 4-byte big-endian length `n` followed by `n` bytes. The first frame
//! each side sends on a new connection is a *hello*: `b"MKT1"`, sender id (u64 LE),
//! intended receiver id (u64 LE). Every later frame is an envelope: group (u32 LE),
//! from (u64 LE), to (u64 LE), then the payload bytes.
//!
//! [`FrameDecoder`] reads frames. Until the hello is verified it accepts no frame longer
//! than a hello; afterwards up to `max_frame_bytes`. It never reserves the length a
//! prefix claims: the buffer grows at most [`READ_CHUNK`] bytes ahead of what arrived
//! (doubling as it fills), so a lying prefix costs nothing.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{Envelope, NodeId};

/// Bytes of the envelope header (group, from, to).
pub(crate) const HEADER_LEN: usize = 4 + 8 + 8;
/// Bytes of the length prefix in front of every frame.
pub(crate) const PREFIX_LEN: usize = 4;
const HELLO_MAGIC: &[u8; 4] = b"MKT1";
/// Bytes of a hello frame's body.
pub(crate) const HELLO_LEN: usize = 4 + 8 + 8;
/// Most bytes the read buffer is grown by ahead of the data that has arrived.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// A frame that does not follow the protocol.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    #[error("envelope frame of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("hello frame malformed ({0} bytes or bad magic)")]
    BadHello(usize),
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("envelope addressed from {from} to {to} on the link {peer} -> {local}")]
    Misaddressed {
        from: NodeId,
        to: NodeId,
        peer: NodeId,
        local: NodeId,
    },
}

/// Splits length-prefixed frames off the read buffer; see the module documentation.
#[derive(Debug)]
pub(crate) struct FrameDecoder {
    max: usize,
    /// Body length of the frame whose prefix was consumed, while its bytes arrive.
    pending: Option<usize>,
}

impl FrameDecoder {
    /// A decoder for a new connection: it accepts a hello-sized frame at most.
    pub(crate) fn before_hello() -> Self {
        FrameDecoder {
            max: HELLO_LEN,
            pending: None,
        }
    }

    /// Raises (or lowers) the largest accepted frame; called once the hello is verified.
    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max;
    }
}

impl Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                let Some(prefix) = src.first_chunk::<PREFIX_LEN>() else {
                    return Ok(None);
                };
                let len = u32::from_be_bytes(*prefix) as usize;
                if len > self.max {
                    let e = WireError::TooLong { len, max: self.max };
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
                src.advance(PREFIX_LEN);
                self.pending = Some(len);
                len
            }
        };
        if src.len() >= len {
            self.pending = None;
            return Ok(Some(src.split_to(len)));
        }
        // Room for what may come next, never the whole claimed length at once.
        src.reserve((len - src.len()).min(READ_CHUNK));
        Ok(None)
    }
}

/// The whole hello frame (length prefix included) announcing `from` to `to`.
pub(crate) fn hello_frame(from: NodeId, to: NodeId) -> BytesMut {
    let mut b = BytesMut::with_capacity(PREFIX_LEN + HELLO_LEN);
    b.put_u32(HELLO_LEN as u32);
    b.put_slice(HELLO_MAGIC);
    b.put_u64_le(from);
    b.put_u64_le(to);
    b
}

/// Parses a hello frame body into (sender, intended receiver).
pub(crate) fn parse_hello(mut frame: &[u8]) -> Result<(NodeId, NodeId), WireError> {
    if frame.len() != HELLO_LEN || &frame[..4] != HELLO_MAGIC {
        return Err(WireError::BadHello(frame.len()));
    }
    frame.advance(4);
    Ok((frame.get_u64_le(), frame.get_u64_le()))
}

/// Parses an envelope frame body; the payload shares the frame's buffer (no copy).
pub(crate) fn parse_envelope(mut frame: BytesMut) -> Result<Envelope, WireError> {
    if frame.len() < HEADER_LEN {
        return Err(WireError::Short(frame.len()));
    }
    let group = frame.get_u32_le();
    let from = frame.get_u64_le();
    let to = frame.get_u64_le();
    Ok(Envelope {
        group,
        from,
        to,
        payload: frame.freeze(),
    })
}

/// Whether `env` fits in one frame of at most `max_frame` bytes.
pub(crate) fn fits(env: &Envelope, max_frame: usize) -> bool {
    HEADER_LEN + env.payload.len() <= max_frame.min(u32::MAX as usize)
}

/// Encodes envelopes into frames that [`decoder`] reads back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EnvelopeEncoder {
    pub(crate) max_frame: usize,
}

impl Encoder<Envelope> for EnvelopeEncoder {
    type Error = io::Error;

    fn encode(&mut self, env: Envelope, dst: &mut BytesMut) -> io::Result<()> {
        if !fits(&env, self.max_frame) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "envelope larger than max_frame_bytes",
            ));
        }
        let len = HEADER_LEN + env.payload.len();
        dst.reserve(PREFIX_LEN + len);
        dst.put_u32(len as u32);
        dst.put_u32_le(env.group);
        dst.put_u64_le(env.from);
        dst.put_u64_le(env.to);
        dst.put_slice(&env.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio_util::codec::Decoder;

    #[test]
    fn envelope_roundtrip_through_length_delimited_codec() {
        let env = Envelope {
            group: 3,
            from: 1,
            to: u64::MAX,
            payload: Bytes::from_static(b"payload"),
        };
        let mut buf = BytesMut::new();
        EnvelopeEncoder { max_frame: 1024 }
            .encode(env.clone(), &mut buf)
            .unwrap();
        let mut dec = FrameDecoder::before_hello();
        dec.set_max(1024);
        let frame = dec.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(parse_envelope(frame).unwrap(), env);
    }

    #[test]
    fn hello_roundtrip_and_rejects() {
        let mut buf = hello_frame(7, 9);
        let frame = FrameDecoder::before_hello()
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(parse_hello(&frame).unwrap(), (7, 9));
        assert!(parse_hello(b"MKT1short").is_err());
        assert!(parse_hello(&[0u8; HELLO_LEN]).is_err());
        assert_eq!(
            parse_envelope(BytesMut::from(&b"tiny"[..])),
            Err(WireError::Short(4))
        );
    }

    #[test]
    fn oversized_is_rejected_both_ways() {
        let env = Envelope {
            group: 0,
            from: 1,
            to: 2,
            payload: Bytes::from(vec![0u8; 100]),
        };
        let mut buf = BytesMut::new();
        assert!(
            EnvelopeEncoder { max_frame: 64 }
                .encode(env.clone(), &mut buf)
                .is_err()
        );
        EnvelopeEncoder { max_frame: 1024 }
            .encode(env, &mut buf)
            .unwrap();
        let mut dec = FrameDecoder::before_hello();
        dec.set_max(64);
        assert!(dec.decode(&mut buf).is_err());
    }

    #[test]
    fn before_the_hello_only_a_hello_sized_frame_is_accepted() {
        let mut buf = BytesMut::from(&(HELLO_LEN as u32 + 1).to_be_bytes()[..]);
        let e = FrameDecoder::before_hello().decode(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_claimed_length_is_not_reserved_up_front() {
        let mut dec = FrameDecoder::before_hello();
        dec.set_max(64 << 20);
        let mut buf = BytesMut::new();
        buf.put_u32(60 << 20);
        buf.put_slice(b"abc");
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= 2 * READ_CHUNK, "{}", buf.capacity());
        // A frame still completes once its bytes are there, split across reads.
        let mut dec = FrameDecoder::before_hello();
        let mut buf = BytesMut::new();
        buf.put_u32(5);
        buf.put_slice(b"he");
        assert!(dec.decode(&mut buf).unwrap().is_none());
        buf.put_slice(b"llo");
        buf.put_u32(0);
        assert_eq!(&dec.decode(&mut buf).unwrap().unwrap()[..], b"hello");
        assert!(dec.decode(&mut buf).unwrap().unwrap().is_empty());
        assert!(dec.decode(&mut buf).unwrap().is_none());
    }
}
