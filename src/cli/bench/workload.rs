//! What a benchmark asks, as a pure function of a seeded random stream: the YCSB core
//! workloads (Cooper et al., "Benchmarking Cloud Serving Systems with YCSB", SoCC 2010), the
//! key each request touches, and the distributions that pick it.
//!
//! | workload | mix | keys |
//! |---|---|---|
//! | a | 50% read, 50% update | zipfian |
//! | b | 95% read, 5% update | zipfian |
//! | c | 100% read | zipfian |
//! | d | 95% read, 5% insert | latest |
//! | e | 95% scan (1..=100 keys), 5% insert | zipfian |
//! | f | 50% read, 50% read-modify-write | zipfian |
//!
//! Nothing here does IO: the load generator draws a [`Step`] per request from a [`Chooser`]
//! and turns it into an operation for the keyspace's type.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// YCSB's zipfian constant.
pub(crate) const ZIPFIAN_THETA: f64 = 0.99;
/// Longest YCSB short scan.
pub(crate) const SCAN_LENGTH_MAX: u32 = 100;

/// An operation type, as YCSB names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum OpKind {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
}

impl OpKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Scan => "scan",
            OpKind::ReadModifyWrite => "rmw",
        }
    }

    /// Whether the operation writes (and so takes a write level, not a read level).
    pub(crate) fn writes(self) -> bool {
        !matches!(self, OpKind::Read | OpKind::Scan)
    }
}

/// How keys are picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// A few keys are hot (YCSB's scrambled zipfian, constant 0.99).
    Zipfian,
    /// The most recently inserted keys are hot.
    Latest,
}

impl Distribution {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
            Distribution::Latest => "latest",
        }
    }
}

/// A YCSB core workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Named {
    A,
    B,
    C,
    D,
    E,
    F,
}

/// The mix of operation types, as weights that add up to 1.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Mix {
    /// `a`..`f`, or `custom` for `--read-ratio`.
    pub(crate) name: String,
    pub(crate) weights: Vec<(OpKind, f64)>,
    pub(crate) distribution: Distribution,
}

impl Mix {
    /// A core workload with its own distribution.
    pub(crate) fn named(workload: Named) -> Mix {
        use OpKind::{Insert, Read, ReadModifyWrite, Scan, Update};
        let (name, weights, distribution) = match workload {
            Named::A => ("a", vec![(Read, 0.5), (Update, 0.5)], Distribution::Zipfian),
            Named::B => (
                "b",
                vec![(Read, 0.95), (Update, 0.05)],
                Distribution::Zipfian,
            ),
            Named::C => ("c", vec![(Read, 1.0)], Distribution::Zipfian),
            Named::D => (
                "d",
                vec![(Read, 0.95), (Insert, 0.05)],
                Distribution::Latest,
            ),
            Named::E => (
                "e",
                vec![(Scan, 0.95), (Insert, 0.05)],
                Distribution::Zipfian,
            ),
            Named::F => (
                "f",
                vec![(Read, 0.5), (ReadModifyWrite, 0.5)],
                Distribution::Zipfian,
            ),
        };
        Mix {
            name: name.to_string(),
            weights,
            distribution,
        }
    }

    /// Reads with probability `ratio`, updates otherwise (`--read-ratio`).
    pub(crate) fn read_ratio(ratio: f64, distribution: Distribution) -> Mix {
        let weights = [(OpKind::Read, ratio), (OpKind::Update, 1.0 - ratio)]
            .into_iter()
            .filter(|(_, weight)| *weight > 0.0)
            .collect();
        Mix {
            name: "custom".to_string(),
            weights,
            distribution,
        }
    }

    /// The share of reads (YCSB "read proportion"), as `--json` reports it.
    pub(crate) fn read_share(&self) -> f64 {
        self.weights
            .iter()
            .filter(|(kind, _)| *kind == OpKind::Read)
            // A fold from +0.0: an empty f64 sum is -0.0, which JSON would print as such.
            .fold(0.0, |share, (_, weight)| share + weight)
    }

    pub(crate) fn kinds(&self) -> impl Iterator<Item = OpKind> + '_ {
        self.weights.iter().map(|(kind, _)| *kind)
    }

    fn pick(&self, draw: f64) -> OpKind {
        let mut left = draw;
        for (kind, weight) in &self.weights {
            if left < *weight {
                return *kind;
            }
            left -= weight;
        }
        // Rounding left a sliver past the last weight.
        self.weights.last().map_or(OpKind::Read, |(kind, _)| *kind)
    }
}

/// The name of key `index`: fixed width, so keys sort as their indexes and a scan of a
/// prefix covers a run of consecutive indexes.
pub(crate) fn key_name(index: u64) -> String {
    format!("k{index:08}")
}

/// The prefix a scan starting at key `index` uses: its name without the last two digits,
/// which covers the 100 keys around it (a prefix scan is capdial's range read).
pub(crate) fn scan_prefix(index: u64) -> String {
    let name = key_name(index);
    name[..name.len() - 2].to_string()
}

/// Gray et al.'s zipfian generator over `0..items` ("Quickly Generating Billion-Record
/// Synthetic Databases", SIGMOD 1994), as YCSB uses it: O(items) set-up, O(1) per draw.
#[derive(Clone, Debug)]
pub(crate) struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

fn zeta(items: u64, theta: f64) -> f64 {
    (1..=items).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    pub(crate) fn new(items: u64, theta: f64) -> Zipfian {
        let items = items.max(1);
        let zetan = zeta(items, theta);
        let zeta2 = zeta(2.min(items), theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
        }
    }

    /// A rank in `0..items`: 0 is the most popular.
    pub(crate) fn draw(&self, uniform: f64) -> u64 {
        let uz = uniform * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let rank =
            (self.items as f64 * (self.eta * uniform - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }
}

/// FNV-1a of a rank: YCSB scrambles zipfian ranks so the hot keys are spread over the key
/// space instead of being its first keys.
fn scramble(rank: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in rank.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// One request's plan: what to do and to which key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) kind: OpKind,
    pub(crate) key: u64,
    /// Keys a scan reads, `1..=SCAN_LENGTH_MAX`; 0 for other operations.
    pub(crate) scan_length: u32,
}

/// The keys inserted so far, shared by every task of one run, so `latest` follows the
/// newest and inserts never collide.
#[derive(Clone, Debug)]
pub(crate) struct KeyCount(Arc<AtomicU64>);

impl KeyCount {
    pub(crate) fn new(preloaded: u64) -> KeyCount {
        KeyCount(Arc::new(AtomicU64::new(preloaded)))
    }

    pub(crate) fn current(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Draws the steps of one task: its own seeded stream, the shared key count.
#[derive(Clone, Debug)]
pub(crate) struct Chooser {
    mix: Mix,
    rng: ChaCha8Rng,
    zipfian: Zipfian,
    /// Keys loaded before measuring: the range `uniform` and `zipfian` pick from.
    loaded: u64,
    count: KeyCount,
}

impl Chooser {
    /// `zipfian` is shared set-up (it costs O(keys)); `seed` makes the task's stream.
    pub(crate) fn new(
        mix: Mix,
        zipfian: Zipfian,
        loaded: u64,
        count: KeyCount,
        seed: u64,
    ) -> Chooser {
        Chooser {
            mix,
            rng: ChaCha8Rng::seed_from_u64(seed),
            zipfian,
            loaded: loaded.max(1),
            count,
        }
    }

    pub(crate) fn next_step(&mut self) -> Step {
        let kind = self.mix.pick(self.rng.random::<f64>());
        let key = if kind == OpKind::Insert {
            self.count.next()
        } else {
            self.existing_key()
        };
        let scan_length = if kind == OpKind::Scan {
            self.rng.random_range(1..=SCAN_LENGTH_MAX)
        } else {
            0
        };
        Step {
            kind,
            key,
            scan_length,
        }
    }

    fn existing_key(&mut self) -> u64 {
        let uniform = self.rng.random::<f64>();
        match self.mix.distribution {
            Distribution::Uniform => self.rng.random_range(0..self.loaded),
            Distribution::Zipfian => scramble(self.zipfian.draw(uniform)) % self.loaded,
            // The newest key is the most popular: ranks count back from the last insert. The
            // ranks are drawn over the preloaded count (whose zeta is computed once), which
            // is YCSB's skew over a window as wide as the initial data set.
            Distribution::Latest => {
                let newest = self.count.current().max(1) - 1;
                newest.saturating_sub(self.zipfian.draw(uniform))
            }
        }
    }
}

/// A value of `bytes` bytes that says which task wrote it when: readable in a dump, and
/// different per write so a stale read can be told from a fresh one.
pub(crate) fn value(bytes: usize, task: u64, sequence: u64) -> Vec<u8> {
    let mut value = format!("t{task}-s{sequence}-").into_bytes();
    value.resize(bytes, b'v');
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn chooser(mix: Mix, keys: u64, seed: u64) -> Chooser {
        let zipfian = Zipfian::new(keys, ZIPFIAN_THETA);
        Chooser::new(mix, zipfian, keys, KeyCount::new(keys), seed)
    }

    fn shares(mix: Mix, draws: u32) -> HashMap<OpKind, f64> {
        let mut chooser = chooser(mix, 1000, 7);
        let mut counts = HashMap::new();
        for _ in 0..draws {
            *counts.entry(chooser.next_step().kind).or_insert(0u32) += 1;
        }
        counts
            .into_iter()
            .map(|(kind, count)| (kind, f64::from(count) / f64::from(draws)))
            .collect()
    }

    #[test]
    fn core_workloads_have_their_mix() {
        let a = shares(Mix::named(Named::A), 20_000);
        assert!((a[&OpKind::Read] - 0.5).abs() < 0.02, "{a:?}");
        let b = shares(Mix::named(Named::B), 20_000);
        assert!((b[&OpKind::Update] - 0.05).abs() < 0.01, "{b:?}");
        let c = shares(Mix::named(Named::C), 1000);
        assert_eq!(c.len(), 1);
        let e = shares(Mix::named(Named::E), 20_000);
        assert!((e[&OpKind::Scan] - 0.95).abs() < 0.01, "{e:?}");
        let f = shares(Mix::named(Named::F), 20_000);
        assert!((f[&OpKind::ReadModifyWrite] - 0.5).abs() < 0.02, "{f:?}");
        let custom = shares(Mix::read_ratio(0.0, Distribution::Uniform), 1000);
        assert_eq!(custom.keys().collect::<Vec<_>>(), vec![&OpKind::Update]);
    }

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let keys = 10_000;
        let mut chooser = chooser(Mix::named(Named::C), keys, 1);
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for _ in 0..100_000 {
            let key = chooser.next_step().key;
            assert!(key < keys);
            *counts.entry(key).or_default() += 1;
        }
        let mut sorted: Vec<u32> = counts.values().copied().collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        // With theta 0.99 over 10,000 keys the hottest key takes about 10% of requests and
        // the hottest 1% of keys about half; uniform would give 0.01% and 1%.
        let top: u32 = sorted.iter().take(100).sum();
        assert!(sorted[0] > 5_000, "hottest {}", sorted[0]);
        assert!(top > 40_000, "top 1% {top}");
    }

    #[test]
    fn uniform_spreads_and_latest_follows_inserts() {
        let keys = 1000;
        let mut uniform = chooser(Mix::read_ratio(1.0, Distribution::Uniform), keys, 3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20_000 {
            seen.insert(uniform.next_step().key);
        }
        assert!(seen.len() > 990, "{}", seen.len());

        let mut latest = chooser(Mix::named(Named::D), keys, 4);
        let mut inserted = Vec::new();
        let mut recent = 0;
        let mut reads = 0;
        for _ in 0..20_000 {
            let step = latest.next_step();
            match step.kind {
                OpKind::Insert => inserted.push(step.key),
                _ => {
                    reads += 1;
                    let newest = keys + inserted.len() as u64;
                    assert!(step.key < newest);
                    if step.key + 10 >= newest {
                        recent += 1;
                    }
                }
            }
        }
        // Inserts take fresh, consecutive keys after the preloaded ones.
        assert_eq!(inserted.first(), Some(&keys));
        assert!(inserted.windows(2).all(|pair| pair[1] == pair[0] + 1));
        assert!(
            recent * 4 > reads,
            "{recent} of {reads} reads near the newest key"
        );
    }

    #[test]
    fn same_seed_same_steps() {
        let mut one = chooser(Mix::named(Named::A), 500, 9);
        let mut two = chooser(Mix::named(Named::A), 500, 9);
        for _ in 0..100 {
            assert_eq!(one.next_step(), two.next_step());
        }
    }

    #[test]
    fn scans_and_names() {
        assert_eq!(key_name(1234), "k00001234");
        assert_eq!(scan_prefix(1234), "k000012");
        let mut scans = chooser(Mix::named(Named::E), 100, 5);
        for _ in 0..1000 {
            let step = scans.next_step();
            if step.kind == OpKind::Scan {
                assert!((1..=SCAN_LENGTH_MAX).contains(&step.scan_length));
            }
        }
        assert_eq!(value(16, 3, 9).len(), 16);
        assert!(value(256, 3, 9).starts_with(b"t3-s9-"));
        assert_eq!(value(2, 3, 9).len(), 2);
    }
}
