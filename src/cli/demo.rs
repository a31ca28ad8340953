//! `capdial demo`: starts a local 3-node cluster, walks through the CAP trade-off with real
//! operations (the tour), then stays up as an interactive shell until Ctrl-D.
//!
//! The exit status says whether every step of the tour behaved as promised, so the demo
//! doubles as an end-to-end check (`capdial demo --no-shell`).

pub(crate) mod cluster;
pub(crate) mod report;
pub(crate) use crate::local::retry;
pub(crate) mod tour;

use anyhow::Context;
use clap::Args;
use cluster::LocalCluster;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long the nodes may take to start and elect a catalog leader.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one of the demo's requests may take before the library gives up (it retries
/// inside): short, so a step that cannot succeed shows up quickly.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the cluster's certificates, data and logs in DIR (kept after exit; reused, with
    /// the same ports, if it already holds a demo cluster). Default: a temporary directory,
    /// removed on exit.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Exit after the tour instead of opening the shell (also when stdin is not a terminal).
    /// The exit status is 0 only if every step behaved as promised.
    #[arg(long)]
    no_shell: bool,
    /// Keep the temporary directory (certificates, data, node logs) after exit.
    #[arg(long)]
    keep: bool,
}

/// Builds the runtime the demo and the benchmark run on.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs `capdial demo`.
pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let runtime = runtime()?;
    let mut builder = LocalCluster::builder()
        .keep(args.keep)
        .ready_timeout(READY_TIMEOUT)
        .request_timeout(CLIENT_TIMEOUT);
    if let Some(dir) = &args.data_dir {
        builder = builder.data_dir(dir);
    }
    println!("capdial demo: a 3-node cluster on 127.0.0.1, every node a child process");
    let launched = builder.launch()?;
    let _guard = runtime.enter();
    cluster::stop_on_signal(launched.processes())?;
    let nodes: Vec<String> = launched
        .nodes()
        .iter()
        .map(|node| format!("{} {}", node.id, node.address))
        .collect();
    println!("  nodes: {}", nodes.join(", "));
    println!(
        "  data, certificates and node logs: {}",
        launched.dir().display()
    );
    let cluster = runtime.block_on(launched.ready())?;
    let client = cluster.client().clone();
    println!(
        "  ready after {:.2}s (every node serves and knows a catalog leader)",
        started.elapsed().as_secs_f64()
    );
    let mut tour = tour::Tour::new(&client, &cluster, started);
    let outcome = runtime.block_on(tour.run());
    let steps = std::mem::take(&mut tour.steps);
    if let Err(error) = &outcome {
        println!("{}", steps_line(&format!("the tour stopped: {error:#}")));
    }
    let passed = outcome.is_ok() && steps.all_passed();
    println!("\n{}", steps.summary());
    for step in steps.failed() {
        println!("  failed: {} {}", step.name, step.detail);
    }
    println!(
        "demo tour took {:.2}s in total",
        started.elapsed().as_secs_f64()
    );
    if !args.no_shell && std::io::stdin().is_terminal() {
        super::shell::run(&runtime, &client, &cluster)?;
    }
    if args.keep || args.data_dir.is_some() {
        println!(
            "cluster stopped; its files stay in {}",
            cluster.dir().display()
        );
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn steps_line(text: &str) -> String {
    format!("  [FAIL] {text}")
}
