//! Workloads: the Mako microbenchmark and YCSB A/B/C, as transactions on one shard.

use bytes::Bytes;
use mako_storage::Table;
use mako_txn::{Abort, Shard};
use rand::Rng;

use crate::zipf::KeyDist;

/// A transaction mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Mako's microbenchmark: half read-modify-write 4 keys, half read 4 keys.
    Micro,
    /// YCSB A: 50% single-key reads, 50% single-key updates.
    YcsbA,
    /// YCSB B: 95% reads, 5% updates.
    YcsbB,
    /// YCSB C: reads only.
    YcsbC,
}

impl Workload {
    /// The workload's name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Micro => "micro",
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::YcsbC => "ycsb-c",
        }
    }
}

/// Keys touched by one micro transaction.
pub const MICRO_KEYS: usize = 4;

/// The 8-byte big-endian form of key number `k`.
pub fn key_bytes(k: u64) -> [u8; 8] {
    k.to_be_bytes()
}

/// Draws `N` distinct keys.
fn distinct_keys<const N: usize>(dist: &KeyDist, rng: &mut impl Rng) -> [u64; N] {
    let mut keys = [0u64; N];
    let mut i = 0;
    while i < N {
        let k = dist.sample(rng);
        if !keys[..i].contains(&k) {
            keys[i] = k;
            i += 1;
        }
    }
    keys
}

/// A new value derived from an old one: the first 8 bytes count updates.
fn bump(old: Option<&Bytes>, template: &Bytes) -> Bytes {
    let base = old.unwrap_or(template);
    let mut v = base.to_vec();
    if v.len() >= 8 {
        let n = u64::from_le_bytes(v[..8].try_into().unwrap_or([0; 8])).wrapping_add(1);
        v[..8].copy_from_slice(&n.to_le_bytes());
    }
    Bytes::from(v)
}

/// Runs one transaction of `workload`; returns whether it wrote, or why it aborted.
pub fn run_one(
    workload: Workload,
    shard: &Shard,
    table: &Table,
    dist: &KeyDist,
    template: &Bytes,
    rng: &mut impl Rng,
) -> Result<bool, Abort> {
    let mut tx = shard.begin();
    let write = match workload {
        Workload::Micro => {
            let keys = distinct_keys::<MICRO_KEYS>(dist, rng);
            let rmw = rng.random_bool(0.5);
            for k in keys {
                let kb = key_bytes(k);
                let v = tx.get(table, &kb);
                if rmw {
                    tx.put(table, &kb, bump(v.as_ref(), template));
                }
            }
            rmw
        }
        Workload::YcsbA | Workload::YcsbB | Workload::YcsbC => {
            let update = match workload {
                Workload::YcsbA => rng.random_bool(0.5),
                Workload::YcsbB => rng.random_bool(0.05),
                _ => false,
            };
            let kb = key_bytes(dist.sample(rng));
            if update {
                tx.put(table, &kb, template.clone());
            } else {
                let _ = tx.get(table, &kb);
            }
            update
        }
    };
    tx.commit().map(|_| write)
}
