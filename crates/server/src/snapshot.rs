//! Site snapshots: what a replica's snapshot holds, its encoding, capture and restore.
//!
//! Raft compacts a shard's log once a [`mako_replication::SnapshotHandler`] is installed,
//! and catches a lagging replica up by sending it the leader's last snapshot in chunks.
//! A site's snapshot at log index `I` holds everything replay built from the log up to `I`:
//!
//! - every table's records with **every kept version** (stamp and value or tombstone);
//! - the shard's per-epoch log watermark ([`LogWatermark`]: `W_s`, stream marks, the `FVW`
//!   components its `NoOp`s fixed) and the shard clock;
//! - the epoch history ([`EpochHistory`]) and each open epoch's `VW`;
//! - the group's pending queue at `I` (entries applied but queued, in log order);
//! - the site's finality state (`FinalityState`): which epochs' versions a failover may
//!   still discard (epochs the source led and has not purged) and its purge point.
//!
//! # Why a leader's store may be copied as it is
//!
//! A leader's store holds its own speculative versions: installed before their piece is
//! appended, so at capture some belong to entries after `I`, some to no entry yet, and some
//! will never commit (the leader is deposed or a stream loses an entry) and will be dropped
//! by the discard rule. The snapshot carries them all, and the restoring replica treats them
//! exactly as the source would:
//!
//! 1. *Nothing committed at or below `I` is missing.* A version is installed before its
//!    piece is submitted, so a piece committed at or below `I` was installed before the
//!    callback for `I` ran, hence before capture began (capture begins on the group's thread
//!    right after applying `I`; the walk starts later still). Pieces a follower source queued instead of replaying are in the queue,
//!    which the snapshot carries and the restoring replica re-queues ahead of everything
//!    after `I`, so log order is kept.
//! 2. *Pieces committed after `I` are replayed on top.* The restoring replica is a follower:
//!    it replays every later batch (none is its own), and replay is idempotent and
//!    last-writer-wins by `(epoch, VT[s])`, so a version the snapshot already held is not
//!    installed twice and an older one never hides a newer one.
//! 3. *Versions that will be discarded are not final here either.* The snapshot names the
//!    epochs the source led and has not purged; the restoring site merges them into its
//!    `crate::finality::VersionFinality` (the union with its own, the lower purge point).
//!    Their versions therefore keep their predecessors (chains are only trimmed behind a
//!    final version) until `FVW(e)` is final, and the site's purge then removes those with
//!    `VT > FVW(e)`, uncovering what they overwrote: the same rule that hides a deposed
//!    leader's versions. A version covered by `VW_e` is durable in every shard it touched,
//!    hence kept, so treating it as final is sound on any replica.
//! 4. *Nobody reads them meanwhile.* A follower serves no transaction (participants refuse
//!    with `NotLeader`), and to lead it must establish a new epoch, which waits until every
//!    earlier epoch's `FVW` is final and purges first (see `crate::lead`).
//!
//! Capture is fuzzy on a leader (coordinators keep installing while tables are walked):
//! a version installed during the walk may be missing, but by (1) its piece commits after
//! `I` and (2) replays it. The finality state is read before the tables, so a purge that
//! completes during capture can only make the snapshot more careful than needed.
//!
//! # Capture off the group's thread
//!
//! Walking and encoding a store takes long (0.1–1 s for a few MB), so capture is split
//! ([`SnapshotHandler::begin_snapshot`]): on the group's thread, right after the apply of
//! `I`, `begin` takes the finality state, the epoch history, the `VW` values, the log
//! watermark, the clock and the pending queue, all exactly as they are at `I`; the host's
//! snapshot thread then walks the tables and encodes (`walk`) while the group goes on
//! applying entries after `I`, on a follower as on a leader. The snapshot is still a
//! correct state at `I`:
//!
//! 5. *What is taken at `I` is exact.* The watermark, the queue, the history and the `VW`s
//!    are what replay of the log up to `I` built; the restoring replica feeds every entry
//!    after `I` to exactly that state, as the source did. (They are not re-read after the
//!    walk: that would need feeding the entries after `I` to them a second time to be
//!    idempotent, which nothing here relies on; the queue in particular is not.)
//! 6. *Versions from entries after `I` in the tables are harmless.* On a follower the walk
//!    may copy versions that the replay of entries after `I` installed meanwhile (or queued
//!    pieces of at most `I` that were drained meanwhile). Replay installs kept pieces only,
//!    so these versions are committed and never discarded; the restoring replica replays
//!    the same entries after `I` (and its carried queue) on top, idempotently and
//!    last-writer-wins by `(epoch, VT[s])` (2): a version already there is not installed
//!    twice and an older one never hides a newer one. Such a version's entry may still be
//!    queued on the restoring replica (not judged yet there): its version in the store
//!    is then visible early, but only to nobody, since a follower serves nothing (4), and
//!    the entry is replayed before the replica can lead.
//! 7. *Chains trimmed during the walk lose nothing needed.* Replay (and a leader's
//!    reclamation) trims a chain only behind a *final* version: one no failover removes.
//!    If the walk copies a record after such a trim, the snapshot lacks the trimmed older
//!    versions but holds the final one (or, if the final version came from an entry after
//!    `I` and the walk copied the record before it arrived, holds the untrimmed chain, and
//!    the replay of that entry on the restoring replica trims it likewise). What was
//!    trimmed is hidden behind a version that stays, on every replica, so it is never
//!    visible again.
//! 8. *Epochs opened or purged during the walk are named.* While the walk runs, the source
//!    may open an epoch (a follower at `I` promoted meanwhile, or a leader finishing its
//!    establishment on its ticker) and install speculative versions of it, or finish a purge
//!    (removing discarded versions the walk may already have copied). So the finality state
//!    is read again after the walk and the snapshot names the union (`widen`): every epoch
//!    led at `I` or after the walk, and every epoch purged during the walk, as led and not
//!    purged, with the purge point of `I`. Any version the walk copied whose epoch could
//!    still be discarded is therefore non-final on the restoring replica until its own purge
//!    decides it (3). Naming more epochs than needed only keeps more versions around until
//!    that purge.
//! 9. *A snapshot installed during the walk wins.* If the group installs a newer snapshot
//!    from a peer while the walk runs (replacing records under it), the walk's result is a
//!    mix, but its index is below the installed one and the protocol drops it unused.
//!
//! # Restore is all-or-nothing
//!
//! The snapshot is decoded and checked completely (framing, checksum, shard, vector
//! lengths, key and version order, tables, the history merge) before anything changes; a
//! malformed snapshot is a typed [`SnapshotError`] and leaves the site as it was. The new
//! contents are then installed record by record, each chain replaced in one step under its
//! lock (records the snapshot lacks become absent), while holding the finality lock that
//! purges take. The replica is a follower that serves no read, and its role cannot change
//! during the install (role changes are handled on the same Raft worker thread), so no
//! transaction observes the store half-restored. (A store-wide pointer swap would need the
//! tables' indexes behind an indirection on every read of the hot path; a per-record swap
//! under those guarantees gives the same result without it.)
//!
//! # Encoding and cost
//!
//! `[magic "MKSS"][version u16][reserved u16][body length u64][crc32c u32][body]`, all
//! little-endian; the body is `postcard`. Decoding trusts no length: the header's body
//! length must equal what arrived, the checksum must match, and `postcard` never allocates
//! a byte string longer than the input left (sequence pre-allocation is capped by serde), so
//! memory stays proportional to the snapshot's size. Capture (`capture`) encodes the store
//! table by table straight from its records (no decoded `Body` is built), on the host's
//! snapshot thread (the group's thread spends microseconds on `begin`); at its peak it
//! holds about twice the snapshot's size in buffers (a table's records, the tables, the
//! framed whole). Restore holds the
//! encoding and the decoded contents at once (about twice the store's size) until installed.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use bytes::Bytes;
use mako_replication::{QueuedEntry, SnapshotCapture, SnapshotHandler, SnapshotRefused};
use mako_storage::{Stamp, Table, Version};
use mako_watermark::{Epoch, EpochError, EpochHistory, LogWatermark};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::finality::FinalityState;
use crate::site::Site;

mod capture;
use capture::walk;

/// Opens every site snapshot.
const MAGIC: [u8; 4] = *b"MKSS";
/// The format written; decoding refuses any other.
const VERSION: u16 = 1;
/// Magic, version, reserved, body length, checksum.
const HEADER: usize = 4 + 2 + 2 + 8 + 4;

/// Why a site snapshot was refused (the site's state is unchanged).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Fewer bytes than the header.
    #[error("snapshot of {0} bytes is shorter than its header")]
    Short(usize),
    /// The data does not start with the site snapshot magic.
    #[error("not a site snapshot (bad magic)")]
    Magic,
    /// A format version this build does not read.
    #[error("unknown site snapshot format version {0}")]
    Version(u16),
    /// The body is not as long as the header says.
    #[error("header says {header} body bytes, {actual} arrived")]
    Length {
        /// Length in the header.
        header: u64,
        /// Bytes present.
        actual: usize,
    },
    /// The body's checksum does not match.
    #[error("checksum mismatch: header {expected:#010x}, body {actual:#010x}")]
    Crc {
        /// Checksum in the header.
        expected: u32,
        /// Checksum of the body.
        actual: u32,
    },
    /// The body does not decode.
    #[error("undecodable body: {0}")]
    Decode(#[from] postcard::Error),
    /// The snapshot is of another shard or deployment.
    #[error("snapshot of shard {found} of {found_shards}; this site is shard {shard} of {shards}")]
    Shard {
        /// The snapshot's shard.
        found: u32,
        /// The snapshot's shard count.
        found_shards: u32,
        /// This site's shard.
        shard: u32,
        /// This deployment's shard count.
        shards: u32,
    },
    /// A table this site does not have, or a table twice.
    #[error("table {0} unknown here or repeated")]
    Table(String),
    /// Older than a snapshot this site already installed.
    #[error("snapshot at index {index} is older than the one installed here at {installed}")]
    Stale {
        /// The snapshot's index.
        index: u64,
        /// The index of the installed one.
        installed: u64,
    },
    /// Its log watermark is over other streams than this deployment's.
    #[error("the snapshot's log watermark is over other streams than the configured ones")]
    Streams,
    /// Keys not in strictly ascending order.
    #[error("table {0}: keys out of order or repeated")]
    KeyOrder(String),
    /// A version whose stamp is inconsistent (VT length, `ts != VT[s]`) or out of order.
    #[error("table {table}: bad version chain ({why})")]
    Chain {
        /// The table.
        table: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A queued entry past the snapshot's index or out of order.
    #[error("queued entry {entry} out of order or past the snapshot's index {index}")]
    Pending {
        /// The entry's index.
        entry: u64,
        /// The snapshot's index.
        index: u64,
    },
    /// A `VW` of the wrong length.
    #[error("VW of epoch {0} has the wrong length")]
    Vw(Epoch),
    /// Led epochs out of order.
    #[error("led epochs {0}..={1} out of order")]
    Led(Epoch, Epoch),
    /// The epoch history contradicts this site's or is invalid.
    #[error("epoch history: {0}")]
    History(#[from] EpochError),
    /// The site is gone (shutting down).
    #[error("the site was dropped")]
    Gone,
}

/// A byte string, encoded as one length-prefixed run (not byte by byte).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blob(Bytes);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(Bytes::from(v)))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// One version of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct VersionBody {
    epoch: Epoch,
    ts: u64,
    vt: Vec<u64>,
    value: Option<Blob>,
}

/// One table: its records in key order, each chain oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TableBody {
    name: String,
    records: Vec<(Blob, Vec<VersionBody>)>,
}

/// The body of a site snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    shard: u32,
    shards: u32,
    clock: u64,
    wm: LogWatermark,
    history: EpochHistory,
    vws: Vec<(Epoch, Vec<u64>)>,
    finality: FinalityState,
    pending: Vec<(u64, Blob)>,
    tables: Vec<TableBody>,
}

/// Frames an encoded body: header, then the body.
#[cfg(test)]
fn frame(body: &Body) -> Result<Bytes, postcard::Error> {
    Ok(seal(postcard::to_extend(body, vec![0u8; HEADER])?))
}

/// Fills in the header of `out`: [`HEADER`] reserved bytes, then the encoded body.
fn seal(mut out: Vec<u8>) -> Bytes {
    let len = (out.len() - HEADER) as u64;
    let crc = crc32c::crc32c(&out[HEADER..]);
    out[0..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&VERSION.to_le_bytes());
    out[6..8].copy_from_slice(&0u16.to_le_bytes());
    out[8..16].copy_from_slice(&len.to_le_bytes());
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    Bytes::from(out)
}

/// Checks the framing (magic, version, length, checksum); returns the body's bytes.
fn unframe(data: &[u8]) -> Result<&[u8], SnapshotError> {
    if data.len() < HEADER {
        return Err(SnapshotError::Short(data.len()));
    }
    let (head, body) = data.split_at(HEADER);
    if head[0..4] != MAGIC {
        return Err(SnapshotError::Magic);
    }
    let version = u16::from_le_bytes([head[4], head[5]]);
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[8..16]);
    let len = u64::from_le_bytes(len);
    if len != body.len() as u64 {
        return Err(SnapshotError::Length {
            header: len,
            actual: body.len(),
        });
    }
    let expected = u32::from_le_bytes([head[16], head[17], head[18], head[19]]);
    let actual = crc32c::crc32c(body);
    if expected != actual {
        return Err(SnapshotError::Crc { expected, actual });
    }
    Ok(body)
}

/// Decodes a framed snapshot.
fn decode(data: &[u8]) -> Result<Body, SnapshotError> {
    Ok(postcard::from_bytes(unframe(data)?)?)
}

/// The leading fields of a [`Body`] (same order): whose snapshot it is.
#[derive(Deserialize)]
struct Head {
    shard: u32,
    shards: u32,
    _clock: u64,
    wm: LogWatermark,
}

/// Whether a snapshot of `shard` of `shards`, whose log watermark is `wm`, is one of
/// `site`'s shard in this deployment (same shard, shard count and streams).
fn belongs(site: &Site, shard: u32, shards: u32, wm: &LogWatermark) -> Result<(), SnapshotError> {
    if wm.configured() != site.cfg.streams().as_slice() {
        return Err(SnapshotError::Streams);
    }
    let (me, all) = (site.shard_id, site.cfg.shards);
    if shard != me || shards != all {
        return Err(SnapshotError::Shard {
            found: shard,
            found_shards: shards,
            shard: me,
            shards: all,
        });
    }
    Ok(())
}

/// The check before a snapshot is accepted: its framing, and, reading only its leading
/// fields, that it is one of `site`'s shard in this deployment. A snapshot refused here is
/// dropped like a lost message; one refused later, at restore, stops the group.
fn check(site: Option<&Site>, data: &[u8]) -> Result<(), SnapshotError> {
    let body = unframe(data)?;
    if let Some(site) = site {
        let (head, _) = postcard::take_from_bytes::<Head>(body)?;
        belongs(site, head.shard, head.shards, &head.wm)?;
    }
    Ok(())
}

/// What a capture takes on the group's thread at the snapshot's index `I`: everything but
/// the tables (see the module doc, "Capture off the group's thread").
struct AtIndex {
    finality: FinalityState,
    history: EpochHistory,
    vws: Vec<(Epoch, Vec<u64>)>,
    wm: LogWatermark,
    clock: u64,
    pending: Vec<(u64, Blob)>,
}

/// The cheap half of a capture, on the group's thread right after the apply of `I`.
fn begin(site: &Site, pending: &[QueuedEntry]) -> AtIndex {
    // Finality before the tables (see the module doc), then what the log built.
    AtIndex {
        finality: site.finality.state(),
        history: site.epochs.history(),
        vws: site.epochs.vw_values(),
        wm: site.wm.lock().clone(),
        clock: site.shard.clock(),
        pending: pending
            .iter()
            .map(|e| (e.index, Blob(e.entry.clone())))
            .collect(),
    }
}

/// The led range a snapshot names: the one at `I`, widened by what the walk may have copied
/// of epochs opened or purged after `I` (`after` is the finality state read after the walk).
fn widen(at: FinalityState, after: FinalityState) -> FinalityState {
    let union = |a: Option<(Epoch, Epoch)>, b: Option<(Epoch, Epoch)>| match (a, b) {
        (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
        (a, b) => a.or(b),
    };
    // Epochs purged during the walk may have had discarded versions copied before the purge
    // removed them: named as led (not purged), the restoring site purges them itself.
    let purged_meanwhile =
        (after.purged_below > at.purged_below).then(|| (at.purged_below, after.purged_below - 1));
    FinalityState {
        purged_below: at.purged_below.min(after.purged_below),
        led: union(union(at.led, after.led), purged_meanwhile),
    }
}

/// Captures `site`'s state as of the last entry applied, with the group's queue `pending`.
fn capture(site: &Site, pending: &[QueuedEntry]) -> Result<Bytes, postcard::Error> {
    walk(site, begin(site, pending))
}

/// A table's new records: ascending keys, each with its chain oldest first.
type Records = Vec<(Bytes, Vec<Version>)>;

/// A decoded, checked snapshot, ready to install.
struct Staged {
    tables: Vec<(Arc<Table>, Records)>,
    /// Largest timestamp in the store or the source's clock.
    clock: u64,
    body: Body,
    /// The snapshot's log index.
    index: u64,
}

/// Checks everything in `body` against `site` and builds the new contents.
fn stage(site: &Site, mut body: Body, index: u64) -> Result<Staged, SnapshotError> {
    let installed = site.stats.restored_index.load(Ordering::Acquire);
    if index < installed {
        return Err(SnapshotError::Stale { index, installed });
    }
    belongs(site, body.shard, body.shards, &body.wm)?;
    let (me, shards) = (site.shard_id, site.cfg.shards);
    // The history must merge into this site's (a dry run: nothing changes yet).
    site.epochs.history().merge(body.history.clone())?;
    if let Some((e, _)) = body.vws.iter().find(|(_, v)| v.len() != shards as usize) {
        return Err(SnapshotError::Vw(*e));
    }
    if let Some((lo, hi)) = body.finality.led
        && lo > hi
    {
        return Err(SnapshotError::Led(lo, hi));
    }
    let mut last = None;
    for (i, _) in &body.pending {
        if *i > index || last.is_some_and(|l| l >= *i) {
            return Err(SnapshotError::Pending { entry: *i, index });
        }
        last = Some(*i);
    }
    let mut clock = body.clock;
    let mut seen = HashSet::new();
    let mut tables = Vec::with_capacity(body.tables.len());
    for t in std::mem::take(&mut body.tables) {
        let table = site
            .store
            .table(&t.name)
            .filter(|_| seen.insert(t.name.clone()))
            .ok_or_else(|| SnapshotError::Table(t.name.clone()))?;
        let bad = |why| SnapshotError::Chain {
            table: t.name.clone(),
            why,
        };
        let mut records = Vec::with_capacity(t.records.len());
        let mut prev: Option<Bytes> = None;
        for (Blob(key), chain) in t.records {
            if prev.as_ref().is_some_and(|p| *p >= key) {
                return Err(SnapshotError::KeyOrder(t.name.clone()));
            }
            let mut versions: Vec<Version> = Vec::with_capacity(chain.len());
            for v in chain {
                if v.vt.len() != shards as usize {
                    return Err(bad("VT length"));
                }
                if v.vt.get(me as usize) != Some(&v.ts) {
                    return Err(bad("ts is not VT[s]"));
                }
                if versions
                    .last()
                    .is_some_and(|p| p.stamp.order() >= (v.epoch, v.ts))
                {
                    return Err(bad("versions out of order"));
                }
                clock = clock.max(v.ts);
                versions.push(Version {
                    stamp: Stamp {
                        epoch: v.epoch,
                        ts: v.ts,
                        vt: v.vt.into_iter().collect(),
                    },
                    value: v.value.map(|b| b.0),
                });
            }
            prev = Some(key.clone());
            records.push((key, versions));
        }
        tables.push((table, records));
    }
    Ok(Staged {
        tables,
        clock,
        body,
        index,
    })
}

/// Installs staged contents (see the module doc); returns the queue to resume with.
fn install(site: &Site, staged: Staged) -> Vec<QueuedEntry> {
    let Staged {
        tables,
        clock,
        body,
        index,
    } = staged;
    let me = site.shard_id;
    {
        let _exclusive = site.finality.exclusive();
        // Checked by `stage`; a history that is not newer is simply not taken.
        if let Err(e) = site.epochs.merge(body.history) {
            tracing::error!(shard = me, "snapshot history refused after its check: {e}");
        }
        for (e, vw) in &body.vws {
            for (s, w) in vw.iter().enumerate() {
                site.epochs.learn_w(*e, s as u32, *w);
            }
        }
        site.finality
            .restore(body.finality, site.cfg.shards as usize, |e| {
                site.epochs.vw(e)
            });
        let mut restored: HashSet<Arc<str>> = HashSet::new();
        for (table, records) in tables {
            restored.insert(Arc::from(table.name()));
            replace_table(&table, records);
        }
        // A table the source did not have holds nothing there.
        for t in site.store.tables() {
            if !restored.contains(t.name()) {
                replace_table(&t, Vec::new());
            }
        }
        let wm = body.wm;
        for e in 0..wm.epoch() {
            if let Some(c) = wm.component(e) {
                site.epochs.learn_w(e, me, c);
            }
        }
        if wm.value() != u64::MAX {
            site.epochs.learn_w(wm.epoch(), me, wm.value());
        }
        *site.wm.lock() = wm;
        site.shard.observe(clock);
    }
    // Queue bookkeeping: the carried entries are the site's queue now.
    let now = Instant::now();
    {
        let mut first = site.first_seen.lock();
        first.clear();
        first.extend(body.pending.iter().map(|(i, _)| (*i, now)));
    }
    site.stats
        .queued
        .store(body.pending.len() as u64, Ordering::Relaxed);
    site.stats.restored.fetch_add(1, Ordering::Relaxed);
    site.stats.restored_index.fetch_max(index, Ordering::AcqRel);
    // Versions of closed epochs the restored store holds may be decided already.
    site.purge(&site.epochs.history());
    body.pending
        .into_iter()
        .map(|(index, Blob(entry))| QueuedEntry { index, entry })
        .collect()
}

/// Makes `table` hold exactly `records` (ascending keys, chains oldest first).
fn replace_table(table: &Table, records: Records) {
    // Records the snapshot lacks become absent (an index never drops a record).
    let mut old = Vec::new();
    table.visit(Bound::Unbounded, Bound::Unbounded, false, |k, rec| {
        old.push((Bytes::copy_from_slice(k), Arc::clone(rec)));
        true
    });
    let mut next = records.iter().map(|(k, _)| k).peekable();
    for (k, rec) in old {
        while next.peek().is_some_and(|n| **n < k) {
            next.next();
        }
        if next.peek().is_none_or(|n| **n != k) && rec.chain_len() > 0 {
            rec.replace_versions(Vec::new());
        }
    }
    for (k, versions) in records {
        table.record_or_insert(&k).0.replace_versions(versions);
    }
}

/// Restores `site` from `data` taken at `index`; returns the queue to resume with.
fn restore(site: &Site, data: &[u8], index: u64) -> Result<Vec<QueuedEntry>, SnapshotError> {
    let body = decode(data)?;
    let staged = stage(site, body, index)?;
    Ok(install(site, staged))
}

/// A snapshot restored before its site existed: checked, its queue handed to the group.
type Parked = Arc<Mutex<Option<(Bytes, u64)>>>;

/// The site's [`SnapshotHandler`], installed on its shard's group by [`Site::new`], or
/// created before the site ([`detached`]) for a group that may start from a snapshot.
pub(crate) struct SiteSnapshots {
    site: Arc<OnceLock<Weak<Site>>>,
    parked: Parked,
}

impl SiteSnapshots {
    /// The handler of `site`.
    pub(crate) fn new(site: &Arc<Site>) -> Self {
        let slot = OnceLock::new();
        let _ = slot.set(Arc::downgrade(site));
        SiteSnapshots {
            site: Arc::new(slot),
            parked: Arc::default(),
        }
    }

    fn site(&self) -> Option<Arc<Site>> {
        self.site.get().and_then(Weak::upgrade)
    }

    fn refused(&self, e: SnapshotError) -> SnapshotRefused {
        if let Some(site) = self.site() {
            site.stats.refused.fetch_add(1, Ordering::Relaxed);
        }
        SnapshotRefused(Box::new(e))
    }
}

/// The site's half of a handler made by [`detached`]: `SnapshotSlot::attach` installs a
/// snapshot the group restored before the site existed, then serves the site.
pub struct SnapshotSlot {
    site: Arc<OnceLock<Weak<Site>>>,
    parked: Parked,
}

impl std::fmt::Debug for SnapshotSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotSlot")
            .field("parked", &self.parked.lock().as_ref().map(|(_, i)| *i))
            .finish()
    }
}

/// A site snapshot handler for a group started before its site (a replica restarting from a
/// compacted log): a snapshot the group restores at start is checked and parked, its pending
/// queue goes to the group at once, and its state is installed when the site attaches (before
/// the site takes any entry).
pub fn detached() -> (Box<dyn SnapshotHandler>, SnapshotSlot) {
    let site = Arc::new(OnceLock::new());
    let parked: Parked = Arc::default();
    let handler = SiteSnapshots {
        site: Arc::clone(&site),
        parked: Arc::clone(&parked),
    };
    (Box::new(handler), SnapshotSlot { site, parked })
}

impl SnapshotSlot {
    /// Serves `site` from now on, first installing a parked snapshot into it.
    ///
    /// Holds the handler's lock throughout, so that a newer snapshot the group restores
    /// meanwhile goes in after the parked one, never under it.
    pub(crate) fn attach(self, site: &Arc<Site>) -> Result<(), SnapshotError> {
        let mut parked = self.parked.lock();
        let _ = self.site.set(Arc::downgrade(site));
        if let Some((data, index)) = parked.take() {
            // Its queue is in the group already, in front of every later entry.
            restore(site, &data, index)?;
        }
        Ok(())
    }
}

impl SnapshotHandler for SiteSnapshots {
    fn begin_snapshot(&mut self, pending: &[QueuedEntry]) -> SnapshotCapture {
        let Some(site) = self.site() else {
            // `can_snapshot` said yes, but the site is going away: no snapshot.
            return Box::new(|| None);
        };
        let at = begin(&site, pending);
        Box::new(move || match walk(&site, at) {
            Ok(b) => Some(b),
            Err(e) => {
                // Unreachable for these types; the log is then simply not compacted.
                tracing::error!(shard = site.shard_id, "encoding the site snapshot: {e}");
                None
            }
        })
    }

    fn snapshot(&mut self, pending: &[QueuedEntry]) -> Bytes {
        let Some(site) = self.site() else {
            return Bytes::new();
        };
        match capture(&site, pending) {
            Ok(b) => b,
            Err(e) => {
                // Unreachable for these types; an empty snapshot is refused by any replica.
                tracing::error!(shard = site.shard_id, "encoding the site snapshot: {e}");
                Bytes::new()
            }
        }
    }

    fn check(&self, data: &[u8]) -> Result<(), SnapshotRefused> {
        check(self.site().as_deref(), data).map_err(|e| self.refused(e))
    }

    fn can_snapshot(&self) -> bool {
        self.site().is_some()
    }

    fn restore(&mut self, data: &Bytes, index: u64) -> Result<Vec<QueuedEntry>, SnapshotRefused> {
        let mut parked = self.parked.lock();
        if self.site.get().is_none() {
            // No site yet (a group starting from its log): park it for the site to come.
            let body = decode(data).map_err(|e| self.refused(e))?;
            *parked = Some((data.clone(), index));
            return Ok(body
                .pending
                .into_iter()
                .map(|(index, Blob(entry))| QueuedEntry { index, entry })
                .collect());
        }
        drop(parked.take());
        let site = self.site().ok_or(SnapshotError::Gone);
        let restored = site.and_then(|s| restore(&s, data, index));
        drop(parked);
        restored.map_err(|e| self.refused(e))
    }
}

/// Test access to the codec and to a site's handler (unit and integration tests).
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// Captures `site` with `pending` as its queue.
    pub fn capture(site: &Site, pending: &[QueuedEntry]) -> Bytes {
        super::capture(site, pending).unwrap_or_default()
    }

    /// Begins a capture of `site` now, with `pending` as its queue; the returned closure
    /// walks the tables whenever it is called (as the host's snapshot thread does).
    pub fn begin_capture(
        site: &Arc<Site>,
        pending: &[QueuedEntry],
    ) -> Box<dyn FnOnce() -> Bytes + Send> {
        let at = super::begin(site, pending);
        let site = Arc::clone(site);
        Box::new(move || super::walk(&site, at).unwrap_or_default())
    }

    /// The check a site's group runs on a snapshot before accepting it.
    pub fn check(site: &Site, data: &[u8]) -> Result<(), SnapshotError> {
        super::check(Some(site), data)
    }

    /// Restores `site` from `data` taken at `index`.
    pub fn restore(
        site: &Site,
        data: &[u8],
        index: u64,
    ) -> Result<Vec<QueuedEntry>, SnapshotError> {
        super::restore(site, data, index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn body() -> Body {
        let streams = [0u32, 1];
        Body {
            shard: 0,
            shards: 2,
            clock: 9,
            wm: LogWatermark::new(&streams),
            history: EpochHistory::new(2),
            vws: vec![(0, vec![3, 4])],
            finality: FinalityState {
                purged_below: 0,
                led: Some((0, 1)),
            },
            pending: vec![(7, Blob(Bytes::from_static(b"entry")))],
            tables: vec![TableBody {
                name: "t".into(),
                records: vec![(
                    Blob(Bytes::from_static(b"k")),
                    vec![
                        VersionBody {
                            epoch: 0,
                            ts: 1,
                            vt: vec![1, 0],
                            value: Some(Blob(Bytes::from_static(b"v"))),
                        },
                        VersionBody {
                            epoch: 0,
                            ts: 2,
                            vt: vec![2, 5],
                            value: None,
                        },
                    ],
                )],
            }],
        }
    }

    #[test]
    fn epochs_opened_or_purged_during_the_walk_are_named_led() {
        let at = FinalityState {
            purged_below: 2,
            led: None,
        };
        // Nothing changed during the walk: the state at I.
        assert_eq!(widen(at, at), at);
        // An epoch opened during the walk (a follower promoted meanwhile).
        let opened = FinalityState {
            purged_below: 2,
            led: Some((3, 3)),
        };
        assert_eq!(widen(at, opened).led, Some((3, 3)));
        // Opened and purged within the walk: named led, with the purge point of I.
        let purged = FinalityState {
            purged_below: 4,
            led: None,
        };
        assert_eq!(
            widen(at, purged),
            FinalityState {
                purged_below: 2,
                led: Some((2, 3)),
            }
        );
        // A leader at I whose led range moved on: the union.
        let led = FinalityState {
            purged_below: 2,
            led: Some((2, 3)),
        };
        let after = FinalityState {
            purged_below: 3,
            led: Some((3, 5)),
        };
        assert_eq!(
            widen(led, after),
            FinalityState {
                purged_below: 2,
                led: Some((2, 5)),
            }
        );
    }

    #[test]
    fn encode_decode_round_trip() {
        let b = body();
        let data = frame(&b).expect("encode");
        assert_eq!(decode(&data).expect("decode"), b);
    }

    #[test]
    fn malformed_framing_is_a_typed_error() {
        let data = frame(&body()).expect("encode").to_vec();
        assert!(matches!(decode(&data[..10]), Err(SnapshotError::Short(10))));
        assert!(matches!(
            decode(&data[..data.len() - 1]),
            Err(SnapshotError::Length { .. })
        ));
        let mut bad = data.clone();
        bad[0] = b'X';
        assert!(matches!(decode(&bad), Err(SnapshotError::Magic)));
        let mut bad = data.clone();
        bad[4] = 2;
        assert!(matches!(decode(&bad), Err(SnapshotError::Version(2))));
        let mut bad = data.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(decode(&bad), Err(SnapshotError::Crc { .. })));
        // A body that passes the checksum but does not decode (its own CRC recomputed).
        let mut bad = data[..HEADER].to_vec();
        bad.extend_from_slice(&[0xff; 3]);
        bad[8..16].copy_from_slice(&3u64.to_le_bytes());
        let crc = crc32c::crc32c(&bad[HEADER..]);
        bad[16..20].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode(&bad), Err(SnapshotError::Decode(_))));
    }

    #[test]
    fn a_huge_length_inside_the_body_allocates_nothing() {
        // A record count of u64::MAX-ish in a small body: refused, not allocated.
        let mut body = postcard::to_allocvec(&(0u32, 2u32, 9u64)).expect("prefix");
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        let mut data = vec![0u8; HEADER];
        data.extend_from_slice(&body);
        data[0..4].copy_from_slice(&MAGIC);
        data[4..6].copy_from_slice(&VERSION.to_le_bytes());
        data[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
        data[16..20].copy_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        assert!(matches!(decode(&data), Err(SnapshotError::Decode(_))));
    }
}
