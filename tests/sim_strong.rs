//! The strong keyspace simulator on many seeds: correct code passes every checker, a run is
//! a pure function of its seed, and (with `sim-bugs`) each planted bug is caught within a
//! bounded number of seeds.

use capdial::sim::strong::run_seed;
use capdial::sim::{SeedReport, SimConfig, SimError};

fn config(seed: u64, nodes: usize) -> SimConfig {
    SimConfig {
        nodes,
        ..SimConfig::new(seed)
    }
}

fn run(config: &SimConfig) -> SeedReport {
    run_seed(config).expect("a valid configuration runs")
}

fn assert_seeds_pass(nodes: usize, seeds: std::ops::Range<u64>) {
    let mut failures = Vec::new();
    for seed in seeds {
        let config = config(seed, nodes);
        let report = run(&config);
        if !report.passed() {
            failures.push(format!(
                "{}\n  {}\n  {}",
                config.replay_command("strong"),
                report.summary,
                report.violations.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn three_node_seeds_pass_every_checker() {
    assert_seeds_pass(3, 0..200);
}

#[test]
fn five_node_seeds_pass_every_checker() {
    assert_seeds_pass(5, 1_000..1_150);
}

#[test]
fn a_seed_replays_exactly() {
    for nodes in [3, 5] {
        let config = config(42, nodes);
        let first = run(&config);
        let second = run(&config);
        assert_eq!(first, second, "same seed, same run");
        assert!(first.summary.contains("ops ok="), "{}", first.summary);
        let other = run(&SimConfig {
            seed: 43,
            ..config.clone()
        });
        assert_ne!(first.summary, other.summary, "another seed, another run");
    }
}

#[test]
fn bad_configurations_are_typed_errors() {
    assert!(matches!(
        run_seed(&config(1, 4)),
        Err(SimError::Nodes { nodes: 4 })
    ));
    let unknown = SimConfig {
        bug: Some("no-such-bug".to_string()),
        ..config(1, 3)
    };
    let error = run_seed(&unknown).expect_err("an unknown bug is refused");
    if cfg!(feature = "sim-bugs") {
        assert!(matches!(error, SimError::UnknownBug { .. }), "{error}");
    } else {
        assert!(matches!(error, SimError::BugsNotBuilt), "{error}");
    }
}

/// Runs seeds from 0 with `bug` planted until one fails; returns that seed and what caught
/// it. Panics if none of `seeds_max` seeds (alternating 3 and 5 nodes) catches it.
///
/// Measured catch rates over seeds 0..400 (first catching seed in brackets): no-dedup 60%
/// [0], commit-old-term 8% [7], read-index-no-heartbeat 6% [6], vote-without-persist 1.75%
/// [30], lease-ignores-drift 1.5% [25]. Each bound leaves the chance of a miss, should the
/// core's behaviour shift the seeds, well under 1%.
#[cfg(feature = "sim-bugs")]
fn first_catch(bug: &str, seeds_max: u64) -> (u64, String) {
    for seed in 0..seeds_max {
        let nodes = if seed % 2 == 0 { 3 } else { 5 };
        let config = SimConfig {
            bug: Some(bug.to_string()),
            ..config(seed, nodes)
        };
        let report = run(&config);
        if let Some(first) = report.violations.first() {
            return (seed, first.clone());
        }
    }
    panic!("planted bug {bug} not caught in {seeds_max} seeds");
}

#[cfg(feature = "sim-bugs")]
mod planted {
    use super::first_catch;

    // A retried cas is applied twice: the retry fails against the first application's own
    // write and that failure is what the client hears; a read then sees a value whose write
    // "failed". Only the linearizability checker can see this.
    #[test]
    fn no_dedup_is_caught_by_linearizability() {
        let (seed, violation) = first_catch("no-dedup", 20);
        assert!(
            violation.starts_with("linearizability"),
            "seed {seed}: {violation}"
        );
    }

    // A deposed leader that still believes it leads answers ReadIndex from its own commit
    // index, without checking with a quorum.
    #[test]
    fn read_index_without_heartbeat_is_caught() {
        let (seed, violation) = first_catch("read-index-no-heartbeat", 150);
        assert!(
            violation.starts_with("linearizability"),
            "seed {seed}: {violation}"
        );
    }

    // A node grants a vote, crashes (the nemesis) and restarts having forgotten it, then
    // grants another candidate the same term: two leaders in one term.
    #[test]
    fn vote_without_persist_is_caught_by_election_safety() {
        let (seed, violation) = first_catch("vote-without-persist", 400);
        assert!(
            violation.starts_with("election safety"),
            "seed {seed}: {violation}"
        );
    }

    // Without the no-op (the planted bug skips it) a new leader commits old-term entries by
    // counting. Caught by leader completeness (a later leader lacks an entry applied
    // earlier) or, first here, by liveness: ReadIndex waits forever for an entry of the
    // leader's own term when no client writes.
    #[test]
    fn commit_old_term_is_caught() {
        first_catch("commit-old-term", 100);
    }

    // A lease counted from the acks' arrival, a full election timeout long: the muted-leader
    // nemesis (outbound cut, inbound slow) lets it outlive the followers' promise while a
    // new leader commits. The weakest catch: about 6 seeds in 400 (first: seed 25).
    #[test]
    fn lease_ignoring_drift_is_caught_by_linearizability() {
        let (seed, violation) = first_catch("lease-ignores-drift", 600);
        assert!(
            violation.starts_with("linearizability"),
            "seed {seed}: {violation}"
        );
    }
}
