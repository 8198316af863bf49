//! The replication commit-log format of mako-rs: entries, their wire codec, and a
//! batch builder.
//!
//! # Entries
//!
//! Each shard's replication log is a sequence of [`Entry`] values:
//!
//! - [`Entry::Batch`] carries transaction [`Piece`]s. A piece is the set of
//!   [`Write`]s one transaction made on this shard, stamped with its vector
//!   timestamp `vt` (one `u64` per shard). A batch also names the `epoch` it was
//!   produced in and the `stream` (worker) that produced it; within a stream,
//!   pieces appear in increasing timestamp order.
//! - [`Entry::NoOp`] marks an epoch boundary / watermark sync.
//! - [`Entry::Advancer`] marks the start of the measured phase after loading.
//! - [`Entry::Ending`] retires a stream so it stops holding the watermark back.
//! - [`Entry::Heartbeat`] moves an idle stream's watermark forward.
//!
//! # Encoding and decoding
//!
//! [`Entry::encode`] (or [`Entry::encode_into`] to append to a buffer you own)
//! produces a self-delimiting, versioned, checksummed frame; [`Entry::decode`]
//! turns such a frame back into an entry. Decoding is zero-copy — keys and values
//! are slices of the input [`Bytes`](bytes::Bytes) — and never panics: short, corrupt or
//! unknown-version input is a [`DecodeError`]. [`Entry::decode_stamps`] checks a frame
//! as fully but builds no writes, for readers of a batch's stamps only. The byte layout is
//! specified in one place, the [`codec`] module.
//!
//! ```
//! use bytes::Bytes;
//! use mako_commitlog::{Batch, Entry, EntryKind, Piece, Write};
//!
//! let entry = Entry::Batch(Batch {
//!     epoch: 3,
//!     stream: 0,
//!     seq: 0,
//!     pieces: vec![Piece {
//!         vt: vec![17, 4],
//!         writes: vec![
//!             Write::put(1, Bytes::from_static(b"alice"), Bytes::from_static(b"100")),
//!             Write::delete(1, Bytes::from_static(b"bob")),
//!         ],
//!     }],
//! });
//! let bytes = entry.encode();
//! let decoded = Entry::decode(&bytes)?;
//! assert_eq!(decoded, entry);
//! assert_eq!(decoded.kind(), EntryKind::Batch);
//!
//! // Any damage is detected.
//! assert!(Entry::decode(&bytes.slice(..bytes.len() - 1)).is_err());
//! # Ok::<(), mako_commitlog::DecodeError>(())
//! ```
//!
//! # Batching
//!
//! Workers do not build [`Batch`] values by hand on the hot path. A
//! [`BatchBuilder`] appends each piece, given as borrowed [`WriteRef`]s, directly
//! into the encoded form and hands back a finished entry when the batch reaches
//! [`BatchConfig::batch_size`] pieces or [`BatchConfig::max_bytes`] bytes. Time is
//! passed in, so the caller drives the linger: wait until
//! [`BatchBuilder::deadline`], then call [`BatchBuilder::poll`]. The output is
//! byte-for-byte what [`Entry::encode`] gives for the same batch.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use mako_commitlog::{BatchBuilder, BatchConfig, Entry, WriteRef};
//!
//! let config = BatchConfig { batch_size: 2, ..BatchConfig::default() };
//! let mut builder = BatchBuilder::new(config, 1, 7);
//! let t0 = Instant::now();
//!
//! let put = WriteRef { table: 1, key: b"k1", value: Some(b"v1") };
//! assert!(builder.push(&[5], [put], t0).is_none());
//! let del = WriteRef { table: 1, key: b"k2", value: None };
//! let full = builder.push(&[6], [del], t0).expect("second piece fills the batch");
//!
//! let Entry::Batch(batch) = Entry::decode(&full)? else { unreachable!() };
//! assert_eq!((batch.epoch, batch.stream, batch.pieces.len()), (1, 7, 2));
//!
//! // A lone piece is released by the linger.
//! builder.push(&[7], [put], t0);
//! let due = builder.deadline().expect("a batch is open");
//! assert!(builder.poll(due - Duration::from_nanos(1)).is_none());
//! assert!(builder.poll(due).is_some());
//! assert!(builder.is_empty());
//! # Ok::<(), mako_commitlog::DecodeError>(())
//! ```

mod builder;
pub mod codec;
mod entry;

pub use builder::{BatchBuilder, BatchConfig};
pub use codec::{DecodeError, FORMAT_VERSION, HEADER_LEN};
pub use entry::{Batch, Entry, EntryKind, Piece, TableId, Write, WriteOp, WriteRef};
