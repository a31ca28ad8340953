//! Seeded randomness, and the one place that asks the OS for a seed.
//!
//! Everything random draws from a [`SeededRng`]: the simulator (one seed per run, so a failing
//! seed replays exactly), the transport's fault rules, and the node's ids and core seeds. The
//! cores (`raft`, `strong`, `eventual`) never draw: they take a `u64` seed from their caller.
//! Only the shells (the node and the client library) call [`os_seed`], and only to pick the
//! seed or id they start from.

use rand::{Rng, RngCore, SeedableRng, TryRngCore};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// A seeded, portable random stream (ChaCha8, so the same seed gives the same run on every
/// platform and build).
#[derive(Clone, Debug)]
pub struct SeededRng {
    inner: ChaCha8Rng,
}

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        SeededRng {
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// An independent stream derived from this one. Forking lets one part of the simulation
    /// (say, the network) draw more or fewer numbers without shifting every other part.
    pub fn fork(&mut self, stream: u64) -> SeededRng {
        let seed = self.inner.next_u64() ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        SeededRng::new(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// True with probability `probability` (clamped to 0..=1).
    pub fn chance(&mut self, probability: f64) -> bool {
        let probability = probability.clamp(0.0, 1.0);
        self.inner.random_bool(probability)
    }

    /// A number in `0..bound`; `bound` must be positive.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SeededRng::below needs a positive bound");
        self.inner.random_range(0..bound)
    }

    /// A number in `low..=high`.
    pub fn range_u64(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "SeededRng::range_u64 needs low <= high");
        self.inner.random_range(low..=high)
    }

    /// A duration in `low..=high`, at nanosecond resolution.
    pub fn duration_between(&mut self, low: Duration, high: Duration) -> Duration {
        assert!(low <= high, "SeededRng::duration_between needs low <= high");
        let low_nanos = u64::try_from(low.as_nanos()).unwrap_or(u64::MAX);
        let high_nanos = u64::try_from(high.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.range_u64(low_nanos, high_nanos))
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        assert!(!items.is_empty(), "SeededRng::pick needs a non-empty slice");
        let index = self.below(items.len() as u64) as usize;
        &items[index]
    }

    /// Fisher-Yates, with our own draws so the order depends only on the seed.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for upper in (1..items.len()).rev() {
            let other = self.range_u64(0, upper as u64) as usize;
            items.swap(upper, other);
        }
    }
}

/// A seed from the operating system's random source, for the shells only: a client's id, a
/// node's proposal ids and the seeds of the cores it builds. Cores take seeds, never call this.
///
/// # Panics
///
/// If the OS random source fails, which on the platforms we run on means the kernel cannot
/// provide randomness at all; `rand::rng()` panics in the same case.
pub fn os_seed() -> u64 {
    rand::rngs::OsRng
        .try_next_u64()
        .expect("the OS random source works")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_forks_differ() {
        let mut first = SeededRng::new(42);
        let mut second = SeededRng::new(42);
        let drawn: Vec<u64> = (0..8).map(|_| first.next_u64()).collect();
        assert_eq!(drawn, (0..8).map(|_| second.next_u64()).collect::<Vec<_>>());
        let mut fork_a = first.fork(1);
        let mut fork_b = second.fork(2);
        assert_ne!(fork_a.next_u64(), fork_b.next_u64());
    }

    #[test]
    fn bounded_draws_stay_in_bounds() {
        let mut rng = SeededRng::new(7);
        for _ in 0..1000 {
            assert!(rng.below(3) < 3);
            let value = rng.range_u64(5, 9);
            assert!((5..=9).contains(&value));
            let delay = rng.duration_between(Duration::from_millis(1), Duration::from_millis(2));
            assert!(delay >= Duration::from_millis(1) && delay <= Duration::from_millis(2));
        }
        let mut items = [1, 2, 3, 4, 5];
        rng.shuffle(&mut items);
        items.sort();
        assert_eq!(items, [1, 2, 3, 4, 5]);
    }
}
