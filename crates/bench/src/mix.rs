//! How a cluster run's micro transactions pick their keys: four keys drawn over all keys (the
//! default), or a fixed share of two-shard transactions with the rest on the worker's home
//! shard (`--cross-shard PCT`), so the cross-shard share stays put as shards are added.
//!
//! Key `k` lives on shard `k % S`. With [`ShardMix::CrossShard`], a cross-shard transaction
//! puts its first two keys on the worker's home shard and the last two on one other shard
//! chosen uniformly; every other transaction puts all four keys on the home shard. Within a
//! shard, keys follow the run's distribution (uniform over the shard's keys, or the Zipfian
//! rank folded onto the shard).

use rand::Rng;

use crate::zipf::KeyDist;

/// Keys per micro transaction.
const KEYS: usize = crate::workload::MICRO_KEYS;

/// How transactions spread over shards.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShardMix {
    /// Four distinct keys from the distribution over all keys: under a uniform distribution
    /// `1 - (1/S)^3` of the transactions touch more than one shard, a share that grows with `S`.
    Spread,
    /// This percentage (0 to 100) of transactions touch exactly two shards (the home shard and
    /// one other); the rest touch only the home shard.
    CrossShard(f64),
}

impl ShardMix {
    /// The configured cross-shard percentage, if fixed.
    pub fn cross_pct(self) -> Option<f64> {
        match self {
            ShardMix::Spread => None,
            ShardMix::CrossShard(p) => Some(p),
        }
    }
}

/// Why a mix cannot be drawn with the given settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MixError {
    /// The cross-shard percentage is not a number in 0..=100.
    #[error("the cross-shard percentage must be between 0 and 100, got {0}")]
    Percentage(f64),
    /// Cross-shard transactions need a second shard.
    #[error("a cross-shard share above 0% needs at least 2 shards, got {0}")]
    OneShard(u32),
    /// Each shard must hold four keys for a one-shard transaction's four distinct keys.
    #[error("{keys} keys over {shards} shards: a fixed cross-shard share needs at least 4 keys per shard ({} keys)", 4 * u64::from(*shards))]
    TooFewKeys {
        /// Keys over all shards.
        keys: u64,
        /// Shards.
        shards: u32,
    },
    /// No shards, or fewer than 4 keys in all.
    #[error("{keys} keys over {shards} shards: need at least 1 shard and 4 keys")]
    Empty {
        /// Keys over all shards.
        keys: u64,
        /// Shards.
        shards: u32,
    },
}

/// One micro transaction: four distinct keys, and whether it writes them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicroShape {
    /// The keys; key `k` lives on shard `k % S`.
    pub keys: [u64; KEYS],
    /// Read-modify-write (else read-only).
    pub write: bool,
}

impl MicroShape {
    /// The distinct shards the keys live on, in the order first touched.
    pub fn shards(&self, shards: u32) -> Vec<u32> {
        let mut v: Vec<u32> = Vec::with_capacity(2);
        for k in self.keys {
            let s = (k % u64::from(shards.max(1))) as u32;
            if !v.contains(&s) {
                v.push(s);
            }
        }
        v
    }

    /// Whether the keys live on more than one shard.
    pub fn is_cross(&self, shards: u32) -> bool {
        let s = u64::from(shards.max(1));
        let first = self.keys[0] % s;
        self.keys.iter().any(|k| k % s != first)
    }
}

/// Draws micro transaction shapes for a cluster run.
#[derive(Debug, Clone)]
pub struct ShapeGen {
    dist: KeyDist,
    keys: u64,
    shards: u32,
    read_pct: u32,
    mix: ShardMix,
}

impl ShapeGen {
    /// A generator over `keys` keys on `shards` shards; `read_pct` of the transactions are
    /// read-only (values above 100 count as 100).
    pub fn new(
        dist: KeyDist,
        keys: u64,
        shards: u32,
        read_pct: u32,
        mix: ShardMix,
    ) -> Result<Self, MixError> {
        if shards == 0 || keys < KEYS as u64 {
            return Err(MixError::Empty { keys, shards });
        }
        if let ShardMix::CrossShard(p) = mix {
            if !(0.0..=100.0).contains(&p) {
                return Err(MixError::Percentage(p));
            }
            if p > 0.0 && shards < 2 {
                return Err(MixError::OneShard(shards));
            }
            if keys < KEYS as u64 * u64::from(shards) {
                return Err(MixError::TooFewKeys { keys, shards });
            }
        }
        Ok(ShapeGen {
            dist,
            keys,
            shards,
            read_pct,
            mix,
        })
    }

    /// The mix drawn.
    pub fn mix(&self) -> ShardMix {
        self.mix
    }

    /// The next shape for a worker whose home shard is `home` (taken modulo the shards).
    pub fn draw(&self, home: u32, rng: &mut impl Rng) -> MicroShape {
        let mut keys = [0u64; KEYS];
        match self.mix {
            ShardMix::Spread => {
                let mut n = 0;
                while n < KEYS {
                    let k = self.dist.sample(rng);
                    if !keys[..n].contains(&k) {
                        keys[n] = k;
                        n += 1;
                    }
                }
            }
            ShardMix::CrossShard(p) => {
                let home = home % self.shards;
                let cross = rng.random_bool(p / 100.0);
                let other = if cross {
                    let o = rng.random_range(0..self.shards - 1);
                    if o >= home { o + 1 } else { o }
                } else {
                    home
                };
                for n in 0..KEYS {
                    let s = if n < KEYS / 2 { home } else { other };
                    keys[n] = loop {
                        let k = self.key_on(s, rng);
                        if !keys[..n].contains(&k) {
                            break k;
                        }
                    };
                }
            }
        }
        MicroShape {
            keys,
            write: rng.random_range(0..100) >= self.read_pct,
        }
    }

    /// A key on shard `s`: uniform over the shard's keys, or a Zipfian draw folded onto it
    /// (the key of the same block of `S` keys that lives on `s`).
    fn key_on(&self, s: u32, rng: &mut impl Rng) -> u64 {
        let (s, n_shards) = (u64::from(s), u64::from(self.shards));
        match &self.dist {
            KeyDist::Uniform { .. } => {
                // Keys s, s + S, s + 2S, ... below `keys`: at least 4 of them (checked in `new`).
                let on_shard = (self.keys - s).div_ceil(n_shards);
                s + rng.random_range(0..on_shard) * n_shards
            }
            KeyDist::Zipf(_) => {
                let k = self.dist.sample(rng);
                let folded = k - k % n_shards + s;
                if folded >= self.keys {
                    folded - n_shards
                } else {
                    folded
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::SmallRng};

    use super::*;
    use crate::zipf::Zipf;

    #[test]
    fn spread_draws_four_distinct_keys_in_range() {
        let g =
            ShapeGen::new(KeyDist::Uniform { n: 40 }, 40, 4, 50, ShardMix::Spread).expect("valid");
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..1000 {
            let s = g.draw(0, &mut rng);
            assert!(s.keys.iter().all(|&k| k < 40));
            for i in 0..KEYS {
                assert!(!s.keys[..i].contains(&s.keys[i]), "{:?}", s.keys);
            }
        }
    }

    #[test]
    fn zipf_keys_fold_onto_the_shard_in_range() {
        // 42 keys over 8 shards: the last block is partial, so folding must step back.
        let n = 42;
        let g = ShapeGen::new(
            KeyDist::Zipf(Zipf::new(n, 0.99)),
            n,
            8,
            0,
            ShardMix::CrossShard(50.0),
        )
        .expect("valid");
        let mut rng = SmallRng::seed_from_u64(2);
        for i in 0..5000u32 {
            let home = i % 8;
            let s = g.draw(home, &mut rng);
            assert!(s.keys.iter().all(|&k| k < n), "{:?}", s.keys);
            assert_eq!(s.keys[0] % 8, u64::from(home));
            assert_eq!(s.keys[1] % 8, u64::from(home));
            assert!(s.write);
        }
    }
}
