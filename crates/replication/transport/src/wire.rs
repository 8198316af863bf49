//! Wire format of the TCP transport: length-delimited frames with a fixed header.
//!
//! Every frame is a 4-byte big-endian length `n` followed by `n` bytes. The first frame
//! each side sends on a new connection is a *hello* ([`HELLO_LEN`] bytes): `b"MKT"`, the
//! protocol version byte ([`HELLO_VERSION`], `b'2'`; version 1 was `b"MKT1"` without the
//! fields after the ids), sender id (u64 LE), intended receiver id (u64 LE), an
//! authentication mode byte (0: none, 1: shared secret), the sender's nonce (32 bytes) and
//! a proof (32 bytes; zero when the sender proves nothing). With a secret the dialer then
//! sends one *proof* frame: `b"MKP2"` and 32 proof bytes (see the `tcp` module docs).
//! Every later frame is an envelope: group (u32 LE), from (u64 LE), to (u64 LE), then the
//! payload bytes.
//!
//! [`FrameDecoder`] reads frames. Until the hello (and proof) is verified it accepts no
//! frame longer than a hello; afterwards up to `max_frame_bytes`. It never reserves the
//! length a prefix claims: the buffer grows at most [`READ_CHUNK`] bytes ahead of what
//! arrived (doubling as it fills), so a lying prefix costs nothing.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::auth::{Nonce, PROOF_LEN, Proof};
use crate::{Envelope, NodeId};

/// Bytes of the envelope header (group, from, to).
pub(crate) const HEADER_LEN: usize = 4 + 8 + 8;
/// Bytes of the length prefix in front of every frame.
pub(crate) const PREFIX_LEN: usize = 4;
const HELLO_MAGIC: &[u8; 3] = b"MKT";
/// Version byte of the hello this node speaks (the fourth byte of the hello).
pub(crate) const HELLO_VERSION: u8 = b'2';
/// Bytes of a hello frame's body.
pub(crate) const HELLO_LEN: usize = 4 + 8 + 8 + 1 + 32 + PROOF_LEN;
const PROOF_MAGIC: &[u8; 4] = b"MKP2";
/// Bytes of a proof frame's body.
pub(crate) const PROOF_FRAME_LEN: usize = 4 + PROOF_LEN;
/// Most bytes the read buffer is grown by ahead of the data that has arrived.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// A frame that does not follow the protocol.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    #[error("envelope frame of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("hello frame malformed ({0} bytes or bad magic)")]
    BadHello(usize),
    #[error(
        "hello of protocol version '{}', this node speaks version '{}'",
        char::from(*got).escape_default(),
        char::from(*expected).escape_default()
    )]
    Version { got: u8, expected: u8 },
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

/// A hello frame's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    /// The sender.
    pub(crate) from: NodeId,
    /// The node the sender expects to reach.
    pub(crate) to: NodeId,
    /// Whether the sender authenticates with the shared secret.
    pub(crate) auth: bool,
    /// The sender's fresh nonce (zero without authentication).
    pub(crate) nonce: Nonce,
    /// The sender's proof over the receiver's nonce (zero when it proves nothing).
    pub(crate) proof: Proof,
}

/// The whole hello frame (length prefix included).
pub(crate) fn hello_frame(h: &Hello) -> BytesMut {
    let mut b = BytesMut::with_capacity(PREFIX_LEN + HELLO_LEN);
    b.put_u32(HELLO_LEN as u32);
    b.put_slice(HELLO_MAGIC);
    b.put_u8(HELLO_VERSION);
    b.put_u64_le(h.from);
    b.put_u64_le(h.to);
    b.put_u8(u8::from(h.auth));
    b.put_slice(&h.nonce);
    b.put_slice(&h.proof);
    b
}

/// Parses a hello frame body; a hello of another version is [`WireError::Version`].
pub(crate) fn parse_hello(mut frame: &[u8]) -> Result<Hello, WireError> {
    if frame.len() >= 4 && &frame[..3] == HELLO_MAGIC && frame[3] != HELLO_VERSION {
        return Err(WireError::Version {
            got: frame[3],
            expected: HELLO_VERSION,
        });
    }
    if frame.len() != HELLO_LEN || &frame[..3] != HELLO_MAGIC {
        return Err(WireError::BadHello(frame.len()));
    }
    frame.advance(4);
    let from = frame.get_u64_le();
    let to = frame.get_u64_le();
    let auth = match frame.get_u8() {
        0 => false,
        1 => true,
        _ => return Err(WireError::BadHello(HELLO_LEN)),
    };
    let mut nonce = [0u8; 32];
    frame.copy_to_slice(&mut nonce);
    let mut proof = [0u8; PROOF_LEN];
    frame.copy_to_slice(&mut proof);
    Ok(Hello {
        from,
        to,
        auth,
        nonce,
        proof,
    })
}

/// The whole proof frame (length prefix included).
pub(crate) fn proof_frame(proof: &Proof) -> BytesMut {
    let mut b = BytesMut::with_capacity(PREFIX_LEN + PROOF_FRAME_LEN);
    b.put_u32(PROOF_FRAME_LEN as u32);
    b.put_slice(PROOF_MAGIC);
    b.put_slice(proof);
    b
}

/// Parses a proof frame body; `None` if it is not one.
pub(crate) fn parse_proof(frame: &[u8]) -> Option<Proof> {
    if frame.len() != PROOF_FRAME_LEN || &frame[..4] != PROOF_MAGIC {
        return None;
    }
    frame[4..].try_into().ok()
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
        let h = Hello {
            from: 7,
            to: 9,
            auth: true,
            nonce: [3; 32],
            proof: [4; 32],
        };
        let mut buf = hello_frame(&h);
        let frame = FrameDecoder::before_hello()
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(parse_hello(&frame).unwrap(), h);
        assert!(parse_hello(b"MKT2short").is_err());
        assert!(parse_hello(&[0u8; HELLO_LEN]).is_err());
        let mut bad_mode = frame.clone();
        bad_mode[20] = 2;
        assert_eq!(parse_hello(&bad_mode), Err(WireError::BadHello(HELLO_LEN)));
        assert_eq!(
            parse_envelope(BytesMut::from(&b"tiny"[..])),
            Err(WireError::Short(4))
        );
    }

    #[test]
    fn an_old_hello_is_a_version_error() {
        let mut v1 = b"MKT1".to_vec();
        v1.extend_from_slice(&[0u8; 16]);
        let e = parse_hello(&v1).unwrap_err();
        assert_eq!(
            e,
            WireError::Version {
                got: b'1',
                expected: b'2'
            }
        );
        assert_eq!(
            e.to_string(),
            "hello of protocol version '1', this node speaks version '2'"
        );
    }

    #[test]
    fn proof_roundtrip_and_rejects() {
        let mut buf = proof_frame(&[9; 32]);
        let frame = FrameDecoder::before_hello()
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(parse_proof(&frame), Some([9; 32]));
        assert_eq!(parse_proof(&frame[..35]), None);
        let mut bad = frame.to_vec();
        bad[0] = b'X';
        assert_eq!(parse_proof(&bad), None);
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
