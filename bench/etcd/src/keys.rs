//! Key names and key choice.

use crate::args::Distribution;
use rand::Rng;

/// The key for index `i`: exactly the name `capdial bench` uses, so both systems hold the
/// same keys (9 bytes for up to 10^8 keys).
pub fn key_name(index: u64) -> String {
    format!("k{index:08}")
}

/// Picks key indexes in 0..keys.
pub enum KeyChooser {
    Uniform { keys: u64 },
    Zipfian(Zipfian),
}

impl KeyChooser {
    pub fn new(distribution: Distribution, keys: u64) -> Self {
        match distribution {
            Distribution::Uniform => KeyChooser::Uniform { keys },
            Distribution::Zipfian => KeyChooser::Zipfian(Zipfian::new(keys, ZIPFIAN_CONSTANT)),
        }
    }

    pub fn pick(&self, rng: &mut impl Rng) -> u64 {
        match self {
            KeyChooser::Uniform { keys } => rng.random_range(0..*keys),
            KeyChooser::Zipfian(zipfian) => {
                scramble(zipfian.sample(rng.random::<f64>())) % zipfian.items
            }
        }
    }
}

/// FNV-1a of a rank, exactly as `capdial bench` scrambles its zipfian ranks (YCSB's
/// scrambled zipfian): the hot keys are spread over the key space instead of being its first
/// keys, and both tools make the same keys hot.
fn scramble(rank: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in rank.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// YCSB's default skew.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// YCSB's ZipfianGenerator (Gray et al., "Quickly generating billion-record synthetic
/// databases"): rank 0 is the most popular. The zeta sum is computed once, O(keys).
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl Zipfian {
    pub fn new(items: u64, theta: f64) -> Self {
        let zeta_n = zeta(items, theta);
        let zeta_2 = zeta(2.min(items), theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n);
        Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta,
        }
    }

    /// Maps a uniform `u` in [0, 1) to an item index.
    pub fn sample(&self, u: f64) -> u64 {
        let uz = u * self.zeta_n;
        if uz < 1.0 || self.items == 1 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let index = self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (index as u64).min(self.items - 1)
    }
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn names_match_capdial() {
        assert_eq!(key_name(0), "k00000000");
        assert_eq!(key_name(9_999), "k00009999");
    }

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let chooser = KeyChooser::new(Distribution::Zipfian, 10_000);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = vec![0u64; 10_000];
        for _ in 0..100_000 {
            counts[chooser.pick(&mut rng) as usize] += 1;
        }
        // With theta 0.99 over 10^4 items, rank 0 gets roughly 1/zeta(10^4) ~ 10 %, and it
        // lands on key scramble(0) % 10^4, not on key 0.
        let hottest = (scramble(0) % 10_000) as usize;
        assert!(
            counts[hottest] > 7_000 && counts[hottest] < 13_000,
            "{}",
            counts[hottest]
        );
        assert_eq!(counts.iter().max(), Some(&counts[hottest]));
        assert!(counts[hottest] > counts[(scramble(1) % 10_000) as usize]);
    }

    #[test]
    fn uniform_covers_the_range() {
        let chooser = KeyChooser::new(Distribution::Uniform, 10);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut seen = [false; 10];
        for _ in 0..1_000 {
            seen[chooser.pick(&mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
