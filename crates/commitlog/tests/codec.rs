//! Property tests of the wire codec: round trips, truncation, bit flips and garbage.

mod common;

use bytes::Bytes;
use common::{arb_batch, arb_entry};
use mako_commitlog::{DecodeError, Entry, EntryKind, FORMAT_VERSION, HEADER_LEN};
use proptest::prelude::*;

/// Wraps `body` in a header with the right version, length and checksum.
fn frame(body: &[u8]) -> Bytes {
    let mut out = vec![FORMAT_VERSION];
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    Bytes::from(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_kind_round_trips(entry in arb_entry(4, 4, 12)) {
        let bytes = entry.encode();
        prop_assert_eq!(bytes.len(), entry.encoded_len());
        let decoded = Entry::decode(&bytes);
        prop_assert_eq!(decoded.as_ref(), Ok(&entry));
        prop_assert_eq!(decoded.map(|e| e.kind()), Ok(entry.kind()));
    }

    #[test]
    fn encode_into_appends(prefix in prop::collection::vec(any::<u8>(), 0..16),
                           entry in arb_entry(2, 2, 8)) {
        let mut out = prefix.clone();
        entry.encode_into(&mut out);
        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        prop_assert_eq!(&out[prefix.len()..], &entry.encode()[..]);
    }

    #[test]
    fn decoding_stamps_is_decoding_without_the_writes(entry in arb_entry(4, 4, 12)) {
        let mut expected = entry.clone();
        if let Entry::Batch(b) = &mut expected {
            for p in &mut b.pieces {
                p.writes.clear();
            }
        }
        prop_assert_eq!(Entry::decode_stamps(&entry.encode()), Ok(expected));
    }

    #[test]
    fn decoding_random_garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..128)) {
        let data = Bytes::from(data);
        prop_assert_eq!(Entry::decode(&data).is_ok(), Entry::decode_stamps(&data).is_ok());
    }

    #[test]
    fn decoding_well_framed_garbage_never_panics(
        kind in 0u8..8,
        payload in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut body = vec![kind];
        body.extend_from_slice(&payload);
        // The stamps-only decode refuses exactly what the full one refuses.
        prop_assert_eq!(
            Entry::decode(&frame(&body)).err(),
            Entry::decode_stamps(&frame(&body)).err()
        );
        match Entry::decode(&frame(&body)) {
            Ok(entry) => {
                prop_assert_eq!(Some(entry.kind()), EntryKind::from_tag(kind));
                prop_assert_eq!(&entry.encode()[HEADER_LEN..], &body[..]);
            }
            Err(DecodeError::UnknownKind(k)) => prop_assert_eq!(k, kind),
            Err(DecodeError::Malformed(_)) => {}
            Err(e) => prop_assert!(false, "framing error on a well-framed body: {e}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_truncation_is_an_error(entry in arb_entry(3, 3, 8)) {
        let bytes = entry.encode();
        for len in 0..bytes.len() {
            let err = Entry::decode(&bytes.slice(..len));
            let stamps = Entry::decode_stamps(&bytes.slice(..len)).err();
            prop_assert_eq!(err.as_ref().err(), stamps.as_ref());
            prop_assert!(
                matches!(err, Err(DecodeError::Truncated { .. })),
                "prefix of {} / {} bytes gave {:?}", len, bytes.len(), err
            );
        }
    }

    #[test]
    fn every_bit_flip_is_an_error(entry in arb_entry(2, 2, 6)) {
        let bytes = entry.encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut v = bytes.to_vec();
                v[i] ^= 1 << bit;
                let v = Bytes::from(v);
                let res = Entry::decode(&v);
                prop_assert!(res.is_err(), "flip of byte {} bit {} decoded to {:?}", i, bit, res);
                prop_assert!(Entry::decode_stamps(&v).is_err());
            }
        }
    }

    #[test]
    fn batch_keys_and_values_survive_concatenated_buffers(
        a in arb_batch(2, 2, 8),
        b in arb_batch(2, 2, 8),
    ) {
        // Decoding one frame out of a larger buffer (as a log reader would) works.
        let (ea, eb) = (Entry::Batch(a), Entry::Batch(b));
        let mut log = Vec::new();
        ea.encode_into(&mut log);
        let split = log.len();
        eb.encode_into(&mut log);
        let log = Bytes::from(log);
        prop_assert_eq!(Entry::decode(&log.slice(..split)), Ok(ea));
        prop_assert_eq!(Entry::decode(&log.slice(split..)), Ok(eb));
        prop_assert!(Entry::decode(&log).is_err());
    }
}

#[test]
fn marker_entries_have_fixed_sizes() {
    let cases = [
        (Entry::NoOp { epoch: 1 }, 5),
        (Entry::Advancer, 1),
        (Entry::Ending { stream: 1 }, 5),
        (
            Entry::Heartbeat {
                epoch: 1,
                stream: 1,
                seq: 3,
                w: 2,
            },
            25,
        ),
    ];
    for (entry, body) in cases {
        assert_eq!(entry.encode().len(), HEADER_LEN + body, "{}", entry.kind());
    }
}

#[test]
fn errors_display() {
    let e = DecodeError::ChecksumMismatch {
        expected: 1,
        actual: 2,
    };
    assert!(e.to_string().contains("checksum"));
    assert_eq!(
        DecodeError::UnknownVersion(7).to_string(),
        "unknown commit-log format version 7"
    );
}
