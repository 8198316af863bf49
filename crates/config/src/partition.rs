//! Key partitioning: which shard holds a key of a table (stable hash or range split points).

/// How a table's keys are spread over the shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    /// Shard = [`key_hash`]`(key) % shards`: even spread, scans visit every shard.
    Hash,
    /// Shard = number of split points `<= key` in byte order; `splits` holds `shards - 1`
    /// strictly ascending split points, so shard `i` holds `[splits[i-1], splits[i])`.
    Range {
        /// The `shards - 1` split points, strictly ascending.
        splits: Vec<Vec<u8>>,
    },
}

impl Partition {
    /// The shard in `0..shards` that holds `key` (`shards` must be at least 1).
    pub fn shard_of(&self, key: &[u8], shards: u32) -> u32 {
        match self {
            Partition::Hash => shard_of_hash(key, shards),
            Partition::Range { splits } => {
                let n = splits.partition_point(|s| s.as_slice() <= key);
                // Validation makes `splits.len() == shards - 1`; the min guards a hand-built one.
                (n as u32).min(shards.saturating_sub(1))
            }
        }
    }
}

/// A table and its partitioning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// Table name.
    pub name: String,
    /// How its keys map to shards.
    pub partition: Partition,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits, over `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The splitmix64 finaliser (Stafford's Mix13 variant): a bijection that spreads every input bit.
pub fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stable 64-bit key hash of hash partitioning: `splitmix64_mix(fnv1a64(key))`.
///
/// Part of the on-disk and on-wire contract (every process must agree where a key lives):
/// it never changes between releases; a test pins known values.
pub fn key_hash(key: &[u8]) -> u64 {
    splitmix64_mix(fnv1a64(key))
}

/// The shard of `key` under hash partitioning: `key_hash(key) % shards` (`shards` 0 counts as 1).
pub fn shard_of_hash(key: &[u8], shards: u32) -> u32 {
    (key_hash(key) % u64::from(shards.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn splitmix64_matches_the_reference_generator() {
        // The reference splitmix64 generator seeded with 0 outputs mix(0x9e3779b97f4a7c15) first.
        assert_eq!(splitmix64_mix(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
        assert_eq!(
            splitmix64_mix(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(2)),
            0x6e78_9e6a_a1b9_65f4
        );
    }

    #[test]
    fn key_hash_is_pinned() {
        // These values are the contract: if this test fails, keys would move between shards.
        let pinned: [(&[u8], u64); 4] = [
            (b"", PIN_EMPTY),
            (b"a", PIN_A),
            (b"user:42", PIN_USER42),
            (b"\x00\xff", PIN_BYTES),
        ];
        for (k, want) in pinned {
            assert_eq!(key_hash(k), want, "key {k:?}");
        }
        assert_eq!(shard_of_hash(b"user:42", 3), (PIN_USER42 % 3) as u32);
    }

    // Cross-checked against an independent implementation of the same definition.
    const PIN_EMPTY: u64 = 0xf52a_15e9_a9b5_e89b;
    const PIN_A: u64 = 0x02c0_bdbf_4814_20f8;
    const PIN_USER42: u64 = 0xd68c_b863_fc5e_0c34;
    const PIN_BYTES: u64 = 0xa70b_ee94_c6c8_447b;

    fn spread(shards: u32) -> Vec<usize> {
        let mut counts = vec![0usize; shards as usize];
        for i in 0..10_000u32 {
            let key = format!("key{i}");
            counts[Partition::Hash.shard_of(key.as_bytes(), shards) as usize] += 1;
        }
        counts
    }

    #[test]
    fn hash_spreads_sequential_keys_evenly() {
        for shards in [2u32, 3] {
            let counts = spread(shards);
            let even = 10_000 / shards as usize;
            for (s, &c) in counts.iter().enumerate() {
                assert!(
                    c.abs_diff(even) * 10 <= even,
                    "shard {s} of {shards} got {c} of 10000 keys (even: {even})"
                );
            }
        }
        // Big-endian integer keys too (the TPC-C and bench style).
        let mut counts = [0usize; 3];
        for i in 0..10_000u64 {
            counts[shard_of_hash(&i.to_be_bytes(), 3) as usize] += 1;
        }
        for c in counts {
            assert!(c.abs_diff(3333) * 10 <= 3333, "{counts:?}");
        }
    }

    #[test]
    fn one_shard_takes_every_key() {
        assert_eq!(shard_of_hash(b"x", 1), 0);
        let r = Partition::Range { splits: vec![] };
        assert_eq!(r.shard_of(b"anything", 1), 0);
    }

    #[test]
    fn range_counts_the_split_points_at_or_below_the_key() {
        let r = Partition::Range {
            splits: vec![b"g".to_vec(), b"p".to_vec()],
        };
        assert_eq!(r.shard_of(b"", 3), 0);
        assert_eq!(r.shard_of(b"a", 3), 0);
        assert_eq!(r.shard_of(b"f\xff\xff", 3), 0);
        assert_eq!(r.shard_of(b"g", 3), 1, "a split point starts its shard");
        assert_eq!(r.shard_of(b"g\x00", 3), 1);
        assert_eq!(r.shard_of(b"oz", 3), 1);
        assert_eq!(r.shard_of(b"p", 3), 2);
        assert_eq!(r.shard_of(b"zzz", 3), 2);
        assert_eq!(r.shard_of(b"\xff", 3), 2);
    }
}
