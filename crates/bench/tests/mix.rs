//! The cluster bench's transaction mix (`--cross-shard PCT`): the configured share of shapes
//! touch exactly two shards (home + one other), the rest only the home shard, and the share
//! does not move with the shard count; bad settings are typed errors.
//!
//! Shares are counted over a seeded sample of `N` shapes (so every count is deterministic) and
//! compared with the configured share within five binomial standard deviations,
//! `5 * sqrt(p (1 - p) / N)` (about 1.1 points at p = 10%, N = 20,000): a generator off by
//! more than that is drawing the wrong mix, not unlucky.

use mako_bench::{KeyDist, MicroShape, MixError, ShapeGen, ShardMix, Zipf};
use rand::{SeedableRng, rngs::SmallRng};

const N: u32 = 20_000;

/// Five binomial standard deviations of a share `p` over `n` draws.
fn tolerance(p: f64, n: u32) -> f64 {
    5.0 * (p * (1.0 - p) / f64::from(n)).sqrt()
}

/// Checks one shape's layout: 4 distinct keys below `keys`, 2 on `home` first, then 2 on
/// `home` (one-shard) or 2 on one other shard (cross-shard). Returns the other shard if any.
fn check_layout(s: &MicroShape, home: u32, shards: u32, keys: u64) -> Option<u32> {
    for (i, k) in s.keys.iter().enumerate() {
        assert!(*k < keys, "{:?}", s.keys);
        assert!(!s.keys[..i].contains(k), "repeated key: {:?}", s.keys);
    }
    let on = |k: u64| (k % u64::from(shards)) as u32;
    assert_eq!(on(s.keys[0]), home, "{:?}", s.keys);
    assert_eq!(on(s.keys[1]), home, "{:?}", s.keys);
    assert_eq!(on(s.keys[2]), on(s.keys[3]), "{:?}", s.keys);
    let touched = s.shards(shards);
    assert!(
        touched.len() == 1 || touched.len() == 2,
        "{touched:?} for {:?}",
        s.keys
    );
    assert_eq!(s.is_cross(shards), touched.len() == 2);
    (touched.len() == 2).then(|| {
        assert_eq!(touched[0], home);
        touched[1]
    })
}

#[test]
fn cross_shard_share_is_as_configured_for_every_shard_count() {
    for shards in [2u32, 3, 4, 8, 16] {
        for pct in [0.0, 10.0, 20.0, 50.0, 100.0] {
            let keys = 10_000;
            let g = ShapeGen::new(
                KeyDist::Uniform { n: keys },
                keys,
                shards,
                50,
                ShardMix::CrossShard(pct),
            )
            .expect("valid mix");
            let mut rng = SmallRng::seed_from_u64(7 + u64::from(shards));
            let mut cross = 0u32;
            let mut writes = 0u32;
            for i in 0..N {
                let home = i % shards;
                let s = g.draw(home, &mut rng);
                if check_layout(&s, home, shards, keys).is_some() {
                    cross += 1;
                }
                writes += u32::from(s.write);
            }
            let p = pct / 100.0;
            let share = f64::from(cross) / f64::from(N);
            assert!(
                (share - p).abs() <= tolerance(p, N),
                "{shards} shards, {pct}% configured: {cross} of {N} cross-shard"
            );
            if pct == 0.0 || pct == 100.0 {
                assert_eq!(
                    f64::from(cross),
                    p * f64::from(N),
                    "{shards} shards, {pct}%"
                );
            }
            let w = f64::from(writes) / f64::from(N);
            assert!(
                (w - 0.5).abs() <= tolerance(0.5, N),
                "{writes} of {N} wrote"
            );
        }
    }
}

#[test]
fn the_other_shard_is_uniform_over_the_rest() {
    let (shards, keys) = (8u32, 8_000u64);
    let g = ShapeGen::new(
        KeyDist::Uniform { n: keys },
        keys,
        shards,
        0,
        ShardMix::CrossShard(100.0),
    )
    .expect("valid mix");
    let mut rng = SmallRng::seed_from_u64(11);
    let home = 3;
    let mut by_other = vec![0u32; shards as usize];
    for _ in 0..N {
        let s = g.draw(home, &mut rng);
        assert!(s.write, "read-pct 0: every shape writes");
        let o = check_layout(&s, home, shards, keys).expect("every shape is cross-shard");
        by_other[o as usize] += 1;
    }
    assert_eq!(by_other[home as usize], 0);
    let p = 1.0 / 7.0;
    for (o, &n) in by_other.iter().enumerate() {
        if o as u32 != home {
            let share = f64::from(n) / f64::from(N);
            assert!(
                (share - p).abs() <= tolerance(p, N),
                "shard {o}: {by_other:?}"
            );
        }
    }
}

#[test]
fn zipf_keys_keep_the_same_layout() {
    let (shards, keys) = (4u32, 1_002u64);
    let g = ShapeGen::new(
        KeyDist::Zipf(Zipf::new(keys, 0.99)),
        keys,
        shards,
        50,
        ShardMix::CrossShard(30.0),
    )
    .expect("valid mix");
    let mut rng = SmallRng::seed_from_u64(5);
    let mut cross = 0;
    for i in 0..N {
        let home = i % shards;
        cross += u32::from(check_layout(&g.draw(home, &mut rng), home, shards, keys).is_some());
    }
    let share = f64::from(cross) / f64::from(N);
    assert!((share - 0.3).abs() <= tolerance(0.3, N), "{cross} of {N}");
}

/// Without a fixed share the keys spread over all shards: the cross-shard share is
/// `1 - (1/S)^3` (uniform keys) and grows with `S`, which is why `--cross-shard` exists.
#[test]
fn spread_mix_grows_with_shards() {
    for shards in [2u32, 4, 8] {
        let keys = 100_000;
        let g = ShapeGen::new(
            KeyDist::Uniform { n: keys },
            keys,
            shards,
            50,
            ShardMix::Spread,
        )
        .expect("valid mix");
        let mut rng = SmallRng::seed_from_u64(3);
        let cross = (0..N)
            .filter(|&i| g.draw(i % shards, &mut rng).is_cross(shards))
            .count() as u32;
        let p = 1.0 - (1.0 / f64::from(shards)).powi(3);
        let share = f64::from(cross) / f64::from(N);
        assert!(
            (share - p).abs() <= tolerance(p, N),
            "{shards} shards: {cross} of {N}"
        );
    }
}

#[test]
fn bad_mixes_are_typed_errors() {
    let g = |keys: u64, shards: u32, mix: ShardMix| {
        ShapeGen::new(KeyDist::Uniform { n: keys }, keys, shards, 50, mix).err()
    };
    assert_eq!(
        g(1_000, 2, ShardMix::CrossShard(150.0)),
        Some(MixError::Percentage(150.0))
    );
    assert_eq!(
        g(1_000, 2, ShardMix::CrossShard(-1.0)),
        Some(MixError::Percentage(-1.0))
    );
    assert!(matches!(
        g(1_000, 2, ShardMix::CrossShard(f64::NAN)),
        Some(MixError::Percentage(_))
    ));
    assert_eq!(
        g(1_000, 1, ShardMix::CrossShard(10.0)),
        Some(MixError::OneShard(1))
    );
    assert_eq!(g(1_000, 1, ShardMix::CrossShard(0.0)), None);
    assert_eq!(
        g(31, 8, ShardMix::CrossShard(10.0)),
        Some(MixError::TooFewKeys {
            keys: 31,
            shards: 8
        })
    );
    assert_eq!(g(32, 8, ShardMix::CrossShard(10.0)), None);
    assert_eq!(
        g(3, 1, ShardMix::Spread),
        Some(MixError::Empty { keys: 3, shards: 1 })
    );
    assert_eq!(
        g(100, 0, ShardMix::Spread),
        Some(MixError::Empty {
            keys: 100,
            shards: 0
        })
    );
}
