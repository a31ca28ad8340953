//! The command line. The only place in the crate that uses `anyhow`: everything below it
//! returns typed errors, and here they become messages for a person.

mod bench;
mod certs;
mod demo;
mod node;
pub mod ops;
mod shell;
mod sim;

use clap::{Parser, Subcommand};

/// capdial: a replicated key-value database where each keyspace picks its place on the CAP
/// dial. `strong` keyspaces are linearizable (Raft); `eventual` keyspaces accept writes on
/// every node and converge (CRDTs, gossip, anti-entropy).
#[derive(Debug, Parser)]
#[command(name = "capdial", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the deterministic simulator: seeded clusters under faults, checked on every seed.
    Sim(sim::SimArgs),
    /// Run one node of a cluster (QUIC with mutual TLS, data in redb) until SIGINT/SIGTERM.
    Node(node::NodeArgs),
    /// Start a local 3-node cluster and walk through the CAP trade-off, then open a shell.
    Demo(demo::DemoArgs),
    /// Measure latency against consistency level under load: one workload (YCSB a-f), a
    /// sweep of the whole dial with plots (`bench sweep`), or t-visibility (`bench staleness`).
    // Boxed: its flags make it far larger than the other variants.
    Bench(Box<bench::BenchArgs>),
    /// Create the cluster CA and certificates for nodes and clients
    Certs(certs::CertsArgs),
    #[command(flatten)]
    Ops(ops::OpsCommand),
}

/// Parses the process arguments and runs the command. Returns the process exit code.
pub fn run() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => sim::run(&args),
        Command::Node(args) => node::run(args),
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Certs(args) => certs::run(&args),
        Command::Ops(command) => ops::run(command),
    }
}
