//! Length-prefixed frames over blocking streams, and their postcard payloads.

use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed or closed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// A length prefix above the cap: the connection must close.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The length the prefix claimed.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The payload is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Encodes `msg` as one frame (length prefix and payload).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(msg, vec![0u8; 4])?;
    let len = u32::try_from(out.len() - 4).map_err(|_| FrameError::TooLarge {
        len: out.len() - 4,
        max: u32::MAX as usize,
    })?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Decodes a frame's payload.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    Ok(postcard::from_bytes(payload)?)
}

/// Writes `msg` as one frame and flushes.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame's payload (blocking), refusing a length above `max`.
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut reader = FrameReader::new(max);
    loop {
        match reader.poll(r)? {
            Some(frame) => return Ok(frame),
            None => continue,
        }
    }
}

/// Reads frames from a stream with a read timeout, keeping a partly received frame across
/// timeouts (so a server can wake up between frames without losing bytes).
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    max: usize,
}

impl FrameReader {
    /// A reader refusing frames longer than `max`.
    pub fn new(max: usize) -> Self {
        FrameReader {
            buf: Vec::new(),
            max,
        }
    }

    /// Changes the cap (e.g. once the handshake is over).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Whether part of a frame has been received.
    pub fn is_mid_frame(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The length the buffered prefix claims, once four bytes are in.
    fn claimed(&self) -> Option<usize> {
        let p: [u8; 4] = self.buf.get(..4)?.try_into().ok()?;
        Some(u32::from_be_bytes(p) as usize)
    }

    /// Reads what is available; returns a complete frame's payload, or `None` when the read
    /// timed out (or was interrupted) first. Never allocates more than the bytes received
    /// plus one read buffer, whatever the prefix claims.
    pub fn poll(&mut self, r: &mut impl Read) -> Result<Option<Vec<u8>>, FrameError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(len) = self.claimed() {
                if len > self.max {
                    return Err(FrameError::TooLarge { len, max: self.max });
                }
                if self.buf.len() >= 4 + len {
                    let rest = self.buf.split_off(4 + len);
                    let frame = std::mem::replace(&mut self.buf, rest).split_off(4);
                    return Ok(Some(frame));
                }
            }
            // Read no further than the current frame, so no byte of the next one is consumed
            // into a buffer a caller might drop.
            let want = match self.claimed() {
                Some(len) => (4 + len - self.buf.len()).min(chunk.len()),
                None => 4 - self.buf.len(),
            };
            match r.read(&mut chunk[..want]) {
                Ok(0) if self.buf.is_empty() => return Err(FrameError::Closed),
                Ok(0) => {
                    return Err(FrameError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a frame",
                    )));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Body, Request};

    #[test]
    fn frames_round_trip_and_split_reads_reassemble() {
        let req = Request {
            id: 7,
            body: Body::Begin,
        };
        let mut bytes = encode(&req).unwrap();
        bytes.extend(
            encode(&Request {
                id: 8,
                body: Body::Topology,
            })
            .unwrap(),
        );
        // One byte at a time.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some((&b, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = b;
                self.0 = rest;
                Ok(1)
            }
        }
        let mut r = Trickle(&bytes);
        let a: Request = decode(&read_frame(&mut r, 1024).unwrap()).unwrap();
        let b: Request = decode(&read_frame(&mut r, 1024).unwrap()).unwrap();
        assert_eq!((a.id, b.id), (7, 8));
        assert!(matches!(read_frame(&mut r, 1024), Err(FrameError::Closed)));
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_any_allocation() {
        let bytes = u32::MAX.to_be_bytes();
        let err = read_frame(&mut &bytes[..], 1024).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, max: 1024 } if len == u32::MAX as usize));
    }

    #[test]
    fn a_truncated_frame_is_an_error_not_a_frame() {
        let mut bytes = encode(&Request {
            id: 1,
            body: Body::Begin,
        })
        .unwrap();
        bytes.pop();
        assert!(matches!(
            read_frame(&mut &bytes[..], 1024),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn garbage_payload_is_malformed() {
        assert!(matches!(
            decode::<Request>(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::Malformed(_))
        ));
    }
}
