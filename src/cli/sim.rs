//! `capdial sim`: runs seeds of the deterministic simulator and reports violations.

use crate::sim::{SeedReport, SimConfig, SimError};
use anyhow::Context;
use clap::{Args, ValueEnum};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Which engine to simulate.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    mode: Mode,
    /// How many seeds to run. Defaults to 100, or to 1 when --seed is given.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed (seeds run from here upwards). Alone, it replays exactly that seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Length of each run's faulty phase, in client operations.
    #[arg(long, default_value_t = SimConfig::STEPS_DEFAULT)]
    steps: u64,
    /// Switch on a planted bug by name (builds with the `sim-bugs` feature only). Strong:
    /// commit-old-term, vote-without-persist, read-index-no-heartbeat, lease-ignores-drift,
    /// no-dedup. Eventual: mvreg-drop-sibling, early-tombstone-gc, merkle-forget-key. Node:
    /// node-lease-read-stale, node-drop-keeps-rows, node-watch-skips-change. Paxos:
    /// paxos-accept-without-promise-quorum.
    #[arg(long)]
    bug: Option<String>,
    /// Print every seed's one-line summary, not only the failing ones.
    #[arg(long, short)]
    verbose: bool,
    /// Worker threads (each seed is single-threaded and deterministic on its own).
    #[arg(long)]
    jobs: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Strong,
    Eventual,
    /// The node layer: catalog, many groups and engines per node, routing, waiting requests.
    Node,
    /// Leaderless per-key Paxos (CASPaxos): every key a linearizable register.
    Paxos,
    All,
}

type RunSeed = fn(&SimConfig) -> Result<SeedReport, SimError>;

pub fn run(args: &SimArgs) -> anyhow::Result<ExitCode> {
    let engines: Vec<(&str, RunSeed)> = match args.mode {
        Mode::Strong => vec![("strong", crate::sim::strong::run_seed)],
        Mode::Eventual => vec![("eventual", crate::sim::eventual::run_seed)],
        Mode::Node => vec![("node", crate::sim::node::run_seed)],
        Mode::Paxos => vec![("paxos", crate::sim::paxos::run_seed)],
        Mode::All => vec![
            ("strong", crate::sim::strong::run_seed),
            ("eventual", crate::sim::eventual::run_seed),
            ("node", crate::sim::node::run_seed),
            ("paxos", crate::sim::paxos::run_seed),
        ],
    };
    let mut violations_total = 0;
    for (name, run_seed) in engines {
        violations_total += run_engine(args, name, run_seed)?;
    }
    Ok(if violations_total == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs every seed of one engine, printing failures as they come in seed order, then the
/// summary line. Returns the number of violations.
fn run_engine(args: &SimArgs, name: &str, run_seed: RunSeed) -> anyhow::Result<usize> {
    if args.nodes != 3 && args.nodes != 5 {
        return Err(SimError::Nodes { nodes: args.nodes }).context("--nodes");
    }
    let first = args.seed.unwrap_or(0);
    let count = args
        .seeds
        .unwrap_or(if args.seed.is_some() { 1 } else { 100 });
    let config_for = |seed| SimConfig {
        seed,
        nodes: args.nodes,
        steps: args.steps,
        bug: args.bug.clone(),
    };
    let reports = run_parallel(args.jobs, first, count, |seed| run_seed(&config_for(seed)))
        .with_context(|| format!("running the {name} simulator"))?;
    let mut violations = 0;
    let mut failing_seeds = 0;
    let mut out = std::io::stdout().lock();
    for report in &reports {
        if args.verbose || !report.passed() {
            let verdict = if report.passed() { "ok  " } else { "FAIL" };
            writeln!(
                out,
                "{verdict} {name} seed {}: {}",
                report.seed, report.summary
            )?;
        }
        if !report.passed() {
            failing_seeds += 1;
            violations += report.violations.len();
            for violation in &report.violations {
                writeln!(out, "    violation: {violation}")?;
            }
            writeln!(
                out,
                "    replay: {}",
                config_for(report.seed).replay_command(name)
            )?;
        }
    }
    writeln!(
        out,
        "{name}: {count} seeds, {violations} violations ({failing_seeds} failing seeds)"
    )?;
    Ok(violations)
}

/// Runs one seed, turning a panic into a failed report: a core that trips one of its own
/// assertions under simulation has a bug, and the seed that shows it must be printed.
fn run_caught<F>(run_one: &F, seed: u64) -> Result<SeedReport, SimError>
where
    F: Fn(u64) -> Result<SeedReport, SimError>,
{
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_one(seed))) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("a panic without a message");
            Ok(SeedReport {
                seed,
                violations: vec![format!("panicked: {message}")],
                summary: "the run panicked".to_string(),
            })
        }
    }
}

/// Runs `count` seeds from `first` on worker threads and returns the reports in seed order.
fn run_parallel<F>(
    jobs: Option<usize>,
    first: u64,
    count: u64,
    run_one: F,
) -> anyhow::Result<Vec<SeedReport>>
where
    F: Fn(u64) -> Result<SeedReport, SimError> + Sync,
{
    let workers = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    let next = AtomicU64::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(count as usize));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let offset = next.fetch_add(1, Ordering::Relaxed);
                    if offset >= count {
                        break;
                    }
                    let seed = first.wrapping_add(offset);
                    let result = run_caught(&run_one, seed);
                    results
                        .lock()
                        .expect("no worker panics holding the lock")
                        .push((seed, result));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("workers have finished");
    results.sort_by_key(|(seed, _)| *seed);
    results
        .into_iter()
        .map(|(seed, result)| result.with_context(|| format!("seed {seed}")))
        .collect()
}
