//! Incremental construction of encoded Batch entries, closed by size, bytes or age.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec;
use crate::entry::WriteRef;

/// Limits that decide when an open batch is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Pieces per batch; a batch closes when it holds this many (0 behaves as 1).
    pub batch_size: usize,
    /// Encoded bytes per batch; a batch closes once its encoding reaches this size.
    pub max_bytes: usize,
    /// Longest time a batch stays open after its first piece.
    pub linger: Duration,
    /// Group commit: the log's sink closes a batch at once while its stream has nothing in
    /// flight, and when the stream's entry in flight commits (the builder itself only counts
    /// pieces, bytes and the linger).
    pub group_commit: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            batch_size: 100,
            max_bytes: 1 << 20,
            linger: Duration::from_millis(1),
            group_commit: true,
        }
    }
}

/// Builds Batch entries incrementally straight into the encoded byte form; pure (time is passed in), no I/O, no threads.
///
/// A batch opens with its first piece and closes when it reaches
/// [`BatchConfig::batch_size`] pieces or [`BatchConfig::max_bytes`] encoded bytes
/// (checked after each piece, so one large piece can take a batch past the byte cap),
/// when it has been open for [`BatchConfig::linger`], or on [`BatchBuilder::flush`].
/// Every closed batch is a complete entry that [`Entry::decode`](crate::Entry::decode)
/// accepts.
#[derive(Debug)]
pub struct BatchBuilder {
    config: BatchConfig,
    epoch: u32,
    stream: u32,
    buf: Vec<u8>,
    pieces: u32,
    opened_at: Option<Instant>,
    capacity_hint: usize,
    /// Sequence number of the next entry (batch or heartbeat) of this stream.
    next_seq: u64,
}

impl BatchBuilder {
    /// Creates an empty builder for `stream`, stamping batches with `epoch`.
    pub fn new(config: BatchConfig, epoch: u32, stream: u32) -> Self {
        BatchBuilder {
            config,
            epoch,
            stream,
            buf: Vec::new(),
            pieces: 0,
            opened_at: None,
            capacity_hint: 256,
            next_seq: 0,
        }
    }

    /// Appends one piece; returns a finished encoded Batch entry when the piece count reaches batch_size or the byte size reaches max_bytes.
    ///
    /// # Panics
    ///
    /// If `vt` has more than `u16::MAX` components or a key or value is longer than
    /// `u32::MAX` bytes.
    pub fn push<'a>(
        &mut self,
        vt: &[u64],
        writes: impl IntoIterator<Item = WriteRef<'a>>,
        now: Instant,
    ) -> Option<Bytes> {
        if self.pieces == 0 {
            self.buf = Vec::with_capacity(self.capacity_hint);
            codec::begin_batch(&mut self.buf, self.epoch, self.stream);
            self.opened_at = Some(now);
        }
        codec::put_piece(&mut self.buf, vt, writes);
        self.pieces += 1;
        let full = self.pieces as usize >= self.config.batch_size
            || self.buf.len() >= self.config.max_bytes
            || self.pieces == u32::MAX;
        if full { self.flush() } else { None }
    }

    /// Returns the open batch if its first piece is older than linger at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Bytes> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.flush(),
            _ => None,
        }
    }

    /// When poll() will next have something to return (first piece time + linger), None if empty.
    ///
    /// Also `None` if the linger is too long for the deadline to be representable.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at
            .and_then(|t| t.checked_add(self.config.linger))
    }

    /// Closes the open batch regardless of size/age (None if empty).
    pub fn flush(&mut self) -> Option<Bytes> {
        if self.pieces == 0 {
            return None;
        }
        codec::set_piece_count(&mut self.buf, 0, self.pieces);
        codec::set_seq(&mut self.buf, 0, self.next_seq);
        self.next_seq += 1;
        codec::finish_frame(&mut self.buf, 0);
        self.pieces = 0;
        self.opened_at = None;
        self.capacity_hint = self.buf.len().min(self.config.max_bytes.max(256));
        Some(Bytes::from(std::mem::take(&mut self.buf)))
    }

    /// An encoded heartbeat of this stream (`w`: the stream logs nothing at or below it),
    /// numbered after every entry this builder produced so far.
    ///
    /// Call only while no batch is open (or the heartbeat would overtake its pieces).
    pub fn heartbeat(&mut self, w: u64) -> Bytes {
        let seq = self.next_seq;
        self.next_seq += 1;
        crate::Entry::Heartbeat {
            epoch: self.epoch,
            stream: self.stream,
            seq,
            w,
        }
        .encode()
    }

    /// Sequence number the next entry of this stream gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The epoch the next batch to be opened will carry.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The stream this builder writes batches for.
    pub fn stream(&self) -> u32 {
        self.stream
    }

    /// The limits this builder closes batches by.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Number of pieces in the open batch.
    pub fn len(&self) -> usize {
        self.pieces as usize
    }

    /// Whether no batch is open.
    pub fn is_empty(&self) -> bool {
        self.pieces == 0
    }

    /// Encoded size in bytes the open batch would have if flushed now (0 if empty).
    pub fn encoded_len(&self) -> usize {
        if self.pieces == 0 { 0 } else { self.buf.len() }
    }
}
