//! TPC-C's random functions (clause 2.1.6 and 4.3.2): NURand, last names, random strings.

use rand::Rng;

use crate::schema::Text;

/// The syllables of customer last names (clause 4.3.2.3), indexed by digit.
pub const SYLLABLES: [&str; 10] = [
    "BAR", "OUGHT", "ABLE", "PRI", "PRES", "ESE", "ANTI", "CALLY", "ATION", "EING",
];

/// NURand's `A` for customer last-name numbers.
pub const A_C_LAST: u32 = 255;
/// NURand's `A` for customer ids.
pub const A_C_ID: u32 = 1023;
/// NURand's `A` for item ids.
pub const A_OL_I_ID: u32 = 8191;

/// The last name of number `n` in `0..=999`: the syllables of its three decimal digits.
pub fn last_name(n: u32) -> Text<16> {
    let n = n % 1000;
    let mut buf = [0u8; 16];
    let mut at = 0;
    for digit in [n / 100, n / 10 % 10, n % 10] {
        let s = SYLLABLES[digit as usize].as_bytes();
        buf[at..at + s.len()].copy_from_slice(s);
        at += s.len();
    }
    Text::new(&buf[..at])
}

/// NURand(A, x, y) = (((random(0, A) | random(x, y)) + C) % (y - x + 1)) + x.
pub fn nurand(rng: &mut impl Rng, a: u32, c: u32, x: u32, y: u32) -> u32 {
    let r = rng.random_range(0..=a) | rng.random_range(x..=y);
    ((u64::from(r) + u64::from(c)) % (u64::from(y - x) + 1)) as u32 + x
}

/// The run-time constants `C` of NURand, one per `A`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NuRandC {
    /// `C` for last-name numbers (`A` = 255).
    pub c_last: u32,
    /// `C` for customer ids (`A` = 1023).
    pub c_id: u32,
    /// `C` for item ids (`A` = 8191).
    pub ol_i_id: u32,
}

impl NuRandC {
    /// Constants for populating the database: each `C` uniform in `0..=A`.
    pub fn for_load(rng: &mut impl Rng) -> Self {
        NuRandC {
            c_last: rng.random_range(0..=A_C_LAST),
            c_id: rng.random_range(0..=A_C_ID),
            ol_i_id: rng.random_range(0..=A_OL_I_ID),
        }
    }

    /// Constants for the measured run: `C` for last names differs from the load's by
    /// a delta in `65..=119` other than 96 and 112 (clause 2.1.6.1); the others are fresh.
    pub fn for_run(load: &NuRandC, rng: &mut impl Rng) -> Self {
        let c_last = loop {
            let c = rng.random_range(0..=A_C_LAST);
            if Self::valid_delta(load.c_last, c) {
                break c;
            }
        };
        NuRandC {
            c_last,
            c_id: rng.random_range(0..=A_C_ID),
            ol_i_id: rng.random_range(0..=A_OL_I_ID),
        }
    }

    /// Whether run constant `run` may go with load constant `load` for last names.
    pub fn valid_delta(load: u32, run: u32) -> bool {
        let delta = load.abs_diff(run);
        (65..=119).contains(&delta) && delta != 96 && delta != 112
    }

    /// A customer id, NURand(1023, 1, customers).
    pub fn customer_id(&self, rng: &mut impl Rng, customers: u32) -> u32 {
        nurand(rng, A_C_ID, self.c_id, 1, customers)
    }

    /// An item id, NURand(8191, 1, items).
    pub fn item_id(&self, rng: &mut impl Rng, items: u32) -> u32 {
        nurand(rng, A_OL_I_ID, self.ol_i_id, 1, items)
    }

    /// A last-name number, NURand(255, 0, max) with `max` = 999 at spec scale.
    pub fn last_name_number(&self, rng: &mut impl Rng, max: u32) -> u32 {
        nurand(rng, A_C_LAST, self.c_last, 0, max)
    }
}

/// A random alphanumeric string ("a-string") of length `min..=max`.
pub fn a_string<const N: usize>(rng: &mut impl Rng, min: usize, max: usize) -> Text<N> {
    const CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let len = rng.random_range(min..=max).min(N);
    let mut buf = [0u8; N];
    for b in &mut buf[..len] {
        *b = CHARS[rng.random_range(0..CHARS.len())];
    }
    Text::new(&buf[..len])
}

/// A random numeric string ("n-string") of length `min..=max`.
pub fn n_string<const N: usize>(rng: &mut impl Rng, min: usize, max: usize) -> Text<N> {
    let len = rng.random_range(min..=max).min(N);
    let mut buf = [0u8; N];
    for b in &mut buf[..len] {
        *b = b'0' + rng.random_range(0..10u8);
    }
    Text::new(&buf[..len])
}

/// A zip code: four random digits followed by `11111`.
pub fn zip(rng: &mut impl Rng) -> Text<9> {
    let mut buf = *n_string::<9>(rng, 4, 4).padded();
    buf[4..].copy_from_slice(b"11111");
    Text::new(&buf)
}

/// I_DATA / S_DATA: an a-string of 26..=50 characters, 10% of them holding `ORIGINAL` somewhere.
pub fn data_with_original(rng: &mut impl Rng) -> Text<50> {
    let s: Text<50> = a_string(rng, 26, 50);
    if !rng.random_bool(0.1) {
        return s;
    }
    let mut buf = *s.padded();
    let len = s.as_bytes().len();
    let at = rng.random_range(0..=len - 8);
    buf[at..at + 8].copy_from_slice(b"ORIGINAL");
    Text::new(&buf[..len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn last_names_follow_the_syllable_table() {
        assert_eq!(last_name(0).as_bytes(), b"BARBARBAR");
        assert_eq!(last_name(371).as_bytes(), b"PRICALLYOUGHT");
        assert_eq!(last_name(999).as_bytes(), b"EINGEINGEING");
    }

    #[test]
    fn run_constant_respects_the_delta_rule() {
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..200 {
            let load = NuRandC::for_load(&mut rng);
            let run = NuRandC::for_run(&load, &mut rng);
            assert!(NuRandC::valid_delta(load.c_last, run.c_last));
        }
        assert!(!NuRandC::valid_delta(100, 196));
        assert!(NuRandC::valid_delta(0, 65));
    }

    #[test]
    fn strings_have_the_asked_lengths() {
        let mut rng = SmallRng::seed_from_u64(2);
        for _ in 0..100 {
            let s: Text<24> = a_string(&mut rng, 14, 24);
            assert!((14..=24).contains(&s.as_bytes().len()));
            let z = zip(&mut rng);
            assert_eq!(&z.as_bytes()[4..], b"11111");
            let d = data_with_original(&mut rng);
            assert!((26..=50).contains(&d.as_bytes().len()));
        }
    }
}
