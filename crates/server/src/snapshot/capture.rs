//! The expensive half of a capture: a site's tables encoded straight from its records.
//!
//! The bytes are exactly `postcard`'s encoding of the [`Body`] that [`super::decode`] reads
//! (a test checks it against encoding a built `Body`), but no `Body` is built: each record's
//! chain is copied into one reused buffer (its values shared) and encoded from there, so a
//! record costs no allocation of its own (before: a key copy, two vectors and a stamp vector
//! per record, all freed again after encoding).

use std::ops::Bound;

use bytes::Bytes;
use mako_storage::{Table, Version};
use mako_watermark::{Epoch, EpochHistory, LogWatermark};
use serde::Serialize;
use serde::ser::{SerializeStruct, SerializeTuple, Serializer};

#[cfg(test)]
use super::Body;
use super::{AtIndex, Blob, HEADER, seal, widen};
use crate::finality::FinalityState;
use crate::site::Site;

/// A byte string encoded as a [`Blob`] is, borrowed.
struct BytesRef<'a>(&'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// A version encoded as a [`super::VersionBody`] is, borrowed.
struct VersionRef<'a>(&'a Version);

impl Serialize for VersionRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        let mut st = s.serialize_struct("VersionBody", 4)?;
        st.serialize_field("epoch", &v.stamp.epoch)?;
        st.serialize_field("ts", &v.stamp.ts)?;
        st.serialize_field("vt", v.stamp.vt.as_slice())?;
        st.serialize_field("value", &v.value.as_deref().map(BytesRef))?;
        st.end()
    }
}

/// A record encoded as a `(Blob, Vec<VersionBody>)` of [`super::TableBody`] is, borrowed;
/// `chain` oldest first.
struct RecordRef<'a> {
    key: &'a [u8],
    chain: &'a [Version],
}

impl Serialize for RecordRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&BytesRef(self.key))?;
        t.serialize_element(&ChainRef(self.chain))?;
        t.end()
    }
}

/// A chain encoded as a `Vec<VersionBody>` is.
struct ChainRef<'a>(&'a [Version]);

impl Serialize for ChainRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(VersionRef))
    }
}

/// The fields of a [`Body`] before its tables, in its order, borrowed.
#[derive(Serialize)]
struct BodyHead<'a> {
    shard: u32,
    shards: u32,
    clock: u64,
    wm: &'a LogWatermark,
    history: &'a EpochHistory,
    vws: &'a [(Epoch, Vec<u64>)],
    finality: &'a FinalityState,
    pending: &'a [(u64, Blob)],
}

/// Appends `table` to `out` as its [`super::TableBody`] encodes: the name, the number of
/// records that have a version, and those records in key order.
fn encode_table(table: &Table, out: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
    let mut records = Vec::new();
    let mut count = 0usize;
    let mut chain = Vec::new();
    let mut failed = None;
    table.visit(Bound::Unbounded, Bound::Unbounded, false, |key, rec| {
        rec.copy_versions(&mut chain);
        if chain.is_empty() {
            return true;
        }
        let record = RecordRef { key, chain: &chain };
        match postcard::to_extend(&record, std::mem::take(&mut records)) {
            Ok(r) => {
                records = r;
                count += 1;
                true
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    // A sequence's length and a `usize` are both one LEB128 varint in postcard.
    let mut out = postcard::to_extend(&(table.name(), count), out)?;
    out.extend_from_slice(&records);
    Ok(out)
}

/// Walks the tables (possibly while the group applies entries after `I`) and encodes the
/// snapshot: the state taken at `I`, the finality widened by what the walk may have seen,
/// then every table.
pub(super) fn walk(site: &Site, at: AtIndex) -> Result<Bytes, postcard::Error> {
    let tables = site.store.tables();
    let mut encoded = Vec::new();
    for t in &tables {
        encoded = encode_table(t, encoded)?;
    }
    let finality = widen(at.finality, site.finality.state());
    let head = BodyHead {
        shard: site.shard_id,
        shards: site.cfg.shards,
        clock: at.clock,
        wm: &at.wm,
        history: &at.history,
        vws: &at.vws,
        finality: &finality,
        pending: &at.pending,
    };
    let mut out = Vec::with_capacity(HEADER + encoded.len() + 256);
    out.resize(HEADER, 0);
    let mut out = postcard::to_extend(&(head, tables.len()), out)?;
    out.extend_from_slice(&encoded);
    Ok(seal(out))
}

#[cfg(test)]
mod tests {
    use mako_storage::{Stamp, Store};
    use smallvec::smallvec;

    use super::*;
    use crate::snapshot::{TableBody, VersionBody};

    /// A store with a table of records with one version, several versions, a tombstone,
    /// no version at all and a long key, and an empty second table.
    fn store() -> Store {
        let store = Store::new();
        let t = store.create_table("usertable").expect("table");
        store.create_table("empty").expect("table");
        let reclaim = mako_storage::Reclaim::default();
        let stamp = |epoch, ts, vt: &[u64]| Stamp {
            epoch,
            ts,
            vt: vt.iter().copied().collect(),
        };
        t.put(b"a", Bytes::from_static(b"1"), stamp(1, 3, &[3, 0]));
        let (b, _) = t.record_or_insert(b"b");
        b.apply(
            stamp(1, 4, &[4, 9]),
            Some(Bytes::from_static(b"x")),
            &reclaim,
        );
        b.apply(stamp(2, 6, &[6, 1]), None, &reclaim);
        b.apply(
            stamp(2, 8, &[8, 2]),
            Some(Bytes::from(vec![7u8; 300])),
            &reclaim,
        );
        t.record_or_insert(b"c-without-versions");
        let long = vec![b'k'; 40];
        t.put(
            &long,
            Bytes::new(),
            Stamp {
                epoch: 3,
                ts: 9,
                vt: smallvec![9],
            },
        );
        store
    }

    /// The table as a [`TableBody`], built from the public record API.
    fn built(t: &Table) -> TableBody {
        let mut records = Vec::new();
        t.visit(Bound::Unbounded, Bound::Unbounded, false, |k, rec| {
            let mut chain = rec.versions();
            chain.reverse();
            if !chain.is_empty() {
                let chain = chain
                    .into_iter()
                    .map(|v| VersionBody {
                        epoch: v.stamp.epoch,
                        ts: v.stamp.ts,
                        vt: v.stamp.vt.to_vec(),
                        value: v.value.map(Blob),
                    })
                    .collect();
                records.push((Blob(Bytes::copy_from_slice(k)), chain));
            }
            true
        });
        TableBody {
            name: t.name().to_owned(),
            records,
        }
    }

    #[test]
    fn tables_encode_as_their_built_bodies_do() {
        let store = store();
        let mut tables = Vec::new();
        let mut streamed = Vec::new();
        for t in store.tables() {
            streamed = encode_table(&t, streamed).expect("encode");
            tables.push(built(&t));
        }
        let user = tables
            .iter()
            .find(|t| t.name == "usertable")
            .expect("table");
        assert_eq!(user.records.len(), 3, "setup: a, b and the long key");
        assert_eq!(user.records[1].1.len(), 3, "setup: b keeps its chain");
        let expected = postcard::to_stdvec(&tables).expect("encode");
        let mut got = postcard::to_stdvec(&tables.len()).expect("encode");
        got.extend_from_slice(&streamed);
        assert_eq!(got, expected);
    }

    #[test]
    fn the_head_encodes_as_a_bodys_leading_fields_do() {
        let body: Body = crate::snapshot::tests::body();
        let head = BodyHead {
            shard: body.shard,
            shards: body.shards,
            clock: body.clock,
            wm: &body.wm,
            history: &body.history,
            vws: &body.vws,
            finality: &body.finality,
            pending: &body.pending,
        };
        let mut got = postcard::to_stdvec(&(head, body.tables.len())).expect("encode");
        for t in &body.tables {
            got.extend_from_slice(&postcard::to_stdvec(t).expect("encode"));
        }
        assert_eq!(got, postcard::to_stdvec(&body).expect("encode"));
    }
}
