//! Key distributions: uniform and YCSB's scrambled Zipfian.

use rand::Rng;

/// How workload keys are drawn from `0..n`.
#[derive(Debug, Clone)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform {
        /// Number of keys.
        n: u64,
    },
    /// Zipfian popularity (YCSB's generator), ranks scattered over the key space by a hash.
    Zipf(Zipf),
}

impl KeyDist {
    /// Draws one key in `0..n`.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        match self {
            KeyDist::Uniform { n } => rng.random_range(0..*n),
            KeyDist::Zipf(z) => z.sample_scrambled(rng),
        }
    }
}

/// Zipfian generator over `0..n` with skew `theta` (Gray et al., as in YCSB).
#[derive(Debug, Clone)]
pub struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    /// A generator over `0..n` (`n >= 1`), skew `theta` in `(0, 1)`; YCSB uses 0.99.
    pub fn new(n: u64, theta: f64) -> Self {
        let n = n.max(1);
        let zeta = |k: u64| (1..=k).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(n);
        let zeta2 = zeta(2.min(n));
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipf {
            n,
            theta,
            alpha,
            zetan,
            eta,
        }
    }

    /// A rank in `0..n`; rank 0 is the most popular.
    pub fn sample_rank(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }

    /// A key in `0..n` whose popularity follows the Zipfian ranks, hot keys spread out.
    pub fn sample_scrambled(&self, rng: &mut impl Rng) -> u64 {
        fnv64(self.sample_rank(rng)) % self.n
    }
}

/// 64-bit FNV-1a of a number's bytes.
fn fnv64(x: u64) -> u64 {
    x.to_le_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::SmallRng};

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let z = Zipf::new(1000, 0.99);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[z.sample_rank(&mut rng) as usize] += 1;
        }
        assert!(counts[0] > counts[10] && counts[10] > counts[500]);
        assert!(counts[0] > 5_000, "rank 0 got {}", counts[0]);
        let d = KeyDist::Zipf(z);
        assert!((0..1000).all(|_| d.sample(&mut rng) < 1000));
    }
}
