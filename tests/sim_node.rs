//! The node simulator on a bounded run of seeds: correct code passes every checker (the
//! strong and eventual checkers and the node's own invariants), a run is a pure function of
//! its seed, and (with `sim-bugs`) each planted node bug is caught within a bounded number
//! of seeds.

use capdial::sim::node::run_seed;
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
                config.replay_command("node"),
                report.summary,
                report.violations.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn three_node_seeds_pass_every_checker() {
    assert_seeds_pass(3, 0..24);
}

#[test]
fn five_node_seeds_pass_every_checker() {
    assert_seeds_pass(5, 1_000..1_010);
}

#[test]
fn a_seed_replays_exactly_and_does_real_work() {
    let config = config(42, 3);
    let first = run(&config);
    let second = run(&config);
    assert_eq!(first, second, "same seed, same run");
    // The run must have exercised what it claims to check: strong operations completed,
    // eventual writes acknowledged, the admin plan carried out, and the cluster converged.
    let summary = &first.summary;
    assert!(!summary.contains("strong ok=0 "), "{summary}");
    assert!(!summary.contains("eventual acked=0 "), "{summary}");
    assert!(!summary.contains("converged never"), "{summary}");
    assert!(!summary.contains("bank transfers=0 "), "{summary}");
    assert!(!summary.contains(" audits=0 "), "{summary}");
    let other = run(&SimConfig {
        seed: 43,
        ..config.clone()
    });
    assert_ne!(first.summary, other.summary, "another seed, another run");
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

/// Runs seeds from 0 with `bug` planted (alternating 3 and 5 nodes) until one fails; returns
/// that seed and its violations. Panics if none of `seeds_max` seeds catches it.
#[cfg(feature = "sim-bugs")]
fn first_catch(bug: &str, seeds_max: u64) -> (u64, Vec<String>) {
    for seed in 0..seeds_max {
        let nodes = if seed % 2 == 0 { 3 } else { 5 };
        let config = SimConfig {
            bug: Some(bug.to_string()),
            ..config(seed, nodes)
        };
        let report = run(&config);
        if !report.passed() {
            return (seed, report.violations);
        }
    }
    panic!("planted bug {bug} not caught in {seeds_max} seeds");
}

#[cfg(feature = "sim-bugs")]
mod planted {
    use super::first_catch;

    // A follower (or a leader without a lease) answers a lease read from whatever it has
    // applied: a read that started after a write completed can miss it. Only the
    // linearizability checker sees this.
    #[test]
    fn a_lease_read_served_anywhere_is_caught_by_linearizability() {
        let (seed, violations) = first_catch("node-lease-read-stale", 50);
        assert!(
            violations.iter().any(|v| v.starts_with("linearizability")),
            "seed {seed}: {violations:?}"
        );
    }

    // The watch history leaves out every fifth revision's change: the watcher's gap check
    // finds a completed write its watch never showed.
    #[test]
    fn a_watch_history_that_skips_changes_is_caught_by_the_gap_check() {
        let (seed, violations) = first_catch("node-watch-skips-change", 50);
        assert!(
            violations.iter().any(|v| v.starts_with("watch gap")),
            "seed {seed}: {violations:?}"
        );
    }

    // The coordinator commits as soon as the anchor prepared: a transfer whose other
    // prepare was refused (its key held by another transaction) applies on one keyspace
    // only, and a later audit sees money made or lost.
    #[test]
    fn a_commit_without_every_prepare_is_caught_by_the_bank_audit() {
        let (seed, violations) = first_catch("txn-commit-without-prepares", 50);
        assert!(
            violations.iter().any(|v| v.starts_with("bank:")),
            "seed {seed}: {violations:?}"
        );
    }

    // The coordinator resolves the other participants before the anchor's decide answered:
    // a transfer whose record was aborted (it expired) applies on one keyspace only.
    #[test]
    fn a_release_before_the_decision_is_caught_by_the_bank_audit() {
        let (seed, violations) = first_catch("txn-release-before-decision", 50);
        assert!(
            violations.iter().any(|v| v.starts_with("bank:")),
            "seed {seed}: {violations:?}"
        );
    }

    // A dropped keyspace's rows stay in the store: every seed drops a keyspace that held
    // data, and the end check lists each member's stored keyspaces.
    #[test]
    fn a_drop_that_keeps_rows_is_caught_by_the_row_check() {
        let (seed, violations) = first_catch("node-drop-keeps-rows", 50);
        assert!(
            violations.iter().any(|v| v.starts_with("drop:")),
            "seed {seed}: {violations:?}"
        );
    }
}
