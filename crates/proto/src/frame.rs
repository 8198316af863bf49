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

/// Reads one frame's payload (blocking), refusing a length above `max`. A read that times
/// out (the stream's read timeout) is an error of kind [`io::ErrorKind::TimedOut`].
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut reader = FrameReader::new(max);
    loop {
        match reader.step(r)? {
            Step::Frame(frame) => return Ok(frame),
            Step::Partial => continue,
            Step::TimedOut => {
                return Err(FrameError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timed out waiting for a frame",
                )));
            }
        }
    }
}

/// What one read brought.
enum Step {
    /// A complete frame's payload.
    Frame(Vec<u8>),
    /// Bytes (or an interruption), but no complete frame yet.
    Partial,
    /// The read timed out.
    TimedOut,
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

    /// The buffered frame if it is complete (an error if its prefix is above the cap).
    fn complete(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(len) = self.claimed() else {
            return Ok(None);
        };
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let rest = self.buf.split_off(4 + len);
        Ok(Some(std::mem::replace(&mut self.buf, rest).split_off(4)))
    }

    /// At most one read.
    fn step(&mut self, r: &mut impl Read) -> Result<Step, FrameError> {
        if let Some(frame) = self.complete()? {
            return Ok(Step::Frame(frame));
        }
        let mut chunk = [0u8; 16 * 1024];
        // Read no further than the current frame, so no byte of the next one is consumed
        // into a buffer a caller might drop.
        let want = match self.claimed() {
            Some(len) => (4 + len - self.buf.len()).min(chunk.len()),
            None => 4 - self.buf.len(),
        };
        match r.read(&mut chunk[..want]) {
            Ok(0) if self.buf.is_empty() => Err(FrameError::Closed),
            Ok(0) => Err(FrameError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a frame",
            ))),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(match self.complete()? {
                    Some(frame) => Step::Frame(frame),
                    None => Step::Partial,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Step::Partial),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(Step::TimedOut)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads once (at most one read call, so a peer trickling bytes cannot keep the caller
    /// from its deadlines); returns a complete frame's payload, or `None` when no frame is
    /// complete yet (the read timed out, was interrupted, or brought part of one). Never
    /// allocates more than the bytes received plus one read buffer, whatever the prefix
    /// claims.
    pub fn poll(&mut self, r: &mut impl Read) -> Result<Option<Vec<u8>>, FrameError> {
        Ok(match self.step(r)? {
            Step::Frame(frame) => Some(frame),
            Step::Partial | Step::TimedOut => None,
        })
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

    /// Yields its bytes one per read, then reports a read timeout forever.
    struct ThenTimeout<'a> {
        bytes: &'a [u8],
        reads: usize,
    }
    impl Read for ThenTimeout<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            assert!(self.reads < 1000, "read_frame kept reading past a timeout");
            let Some((&b, rest)) = self.bytes.split_first() else {
                return Err(io::Error::new(io::ErrorKind::WouldBlock, "timed out"));
            };
            buf[0] = b;
            self.bytes = rest;
            Ok(1)
        }
    }

    #[test]
    fn a_blocking_read_that_times_out_is_an_error_not_a_wait() {
        // Nothing arrives: the socket's read timeout must surface.
        let mut r = ThenTimeout {
            bytes: &[],
            reads: 0,
        };
        let e = read_frame(&mut r, 1024).unwrap_err();
        assert!(
            matches!(&e, FrameError::Io(e) if e.kind() == io::ErrorKind::TimedOut),
            "{e}"
        );
        // Part of a frame, then silence.
        let bytes = encode(&Request {
            id: 1,
            body: Body::Begin,
        })
        .unwrap();
        let mut r = ThenTimeout {
            bytes: &bytes[..bytes.len() - 1],
            reads: 0,
        };
        assert!(matches!(read_frame(&mut r, 1024), Err(FrameError::Io(_))));
    }

    #[test]
    fn poll_returns_after_one_read_so_a_trickle_cannot_hold_it() {
        // A peer sending one byte just inside every read timeout: each poll must come back
        // (so the caller can check its deadline and shutdown) instead of reading on.
        let bytes = encode(&Request {
            id: 3,
            body: Body::Topology,
        })
        .unwrap();
        let mut r = ThenTimeout {
            bytes: &bytes,
            reads: 0,
        };
        let mut reader = FrameReader::new(1024);
        let mut polls = 0;
        let frame = loop {
            polls += 1;
            if let Some(f) = reader.poll(&mut r).unwrap() {
                break f;
            }
            assert!(reader.is_mid_frame() || polls == 1);
        };
        assert_eq!(r.reads, polls, "one read per poll");
        assert_eq!(polls, bytes.len());
        assert_eq!(decode::<Request>(&frame).unwrap().id, 3);
        // A frame of zero bytes is complete once its prefix is in.
        let mut empty = &[0u8, 0, 0, 0][..];
        let mut reader = FrameReader::new(1024);
        let mut got = None;
        for _ in 0..4 {
            if let Some(f) = reader.poll(&mut empty).unwrap() {
                got = Some(f);
                break;
            }
        }
        assert_eq!(got, Some(Vec::new()));
    }

    #[test]
    fn garbage_payload_is_malformed() {
        assert!(matches!(
            decode::<Request>(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::Malformed(_))
        ));
    }
}
