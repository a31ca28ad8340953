//! The deterministic simulator.
//!
//! One seed drives everything: the cores' own randomness, the network's delays, losses,
//! duplicates and reordering, the fault schedule (partitions of every shape, crashes that lose
//! what was not persisted, pauses, clock jumps) and the simulated clients. A run is a pure
//! function of its [`SimConfig`], so a failing seed replays exactly from the command line.
//!
//! The shared parts live here: [`clock`], [`net`] and [`faults`]; the seeded stream they draw
//! from is [`crate::rng::SeededRng`]. Each engine has a harness that builds a cluster of its
//! cores on them, runs a safety phase under faults and a liveness phase after everything heals,
//! and returns a [`SeedReport`] from its checkers.

pub mod clock;
pub mod eventual;
pub mod faults;
pub mod history;
pub mod linearizability;
pub mod net;
pub mod node;
pub mod paxos;
pub(crate) mod session;
pub mod strong;

/// What one simulated run is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    pub seed: u64,
    /// Cluster size: 3 or 5.
    pub nodes: usize,
    /// Length of the faulty phase, in client operations issued across all clients.
    pub steps: u64,
    /// A planted bug to switch on, by name (needs the `sim-bugs` feature).
    pub bug: Option<String>,
}

impl SimConfig {
    pub const NODES_DEFAULT: usize = 3;
    pub const STEPS_DEFAULT: u64 = 300;

    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes: Self::NODES_DEFAULT,
            steps: Self::STEPS_DEFAULT,
            bug: None,
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self, mode: &str) -> String {
        let mut command = format!(
            "capdial sim --mode {mode} --seed {} --nodes {} --steps {}",
            self.seed, self.nodes, self.steps
        );
        if let Some(bug) = &self.bug {
            command.push_str(&format!(" --bug {bug}"));
        }
        command
    }
}

/// What the checkers found in one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub seed: u64,
    /// One line per violation, saying which checker and what it saw. Empty when the run passed.
    pub violations: Vec<String>,
    /// A one-line account of the run (operations, faults, messages) for the verbose output.
    pub summary: String,
}

impl SeedReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Why a simulation could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("unknown planted bug {name:?}; known: {known}")]
    UnknownBug { name: String, known: String },
    #[error("planted bugs need a build with the `sim-bugs` feature")]
    BugsNotBuilt,
    #[error("{nodes} nodes: the simulator runs 3 or 5")]
    Nodes { nodes: usize },
}
