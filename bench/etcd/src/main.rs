//! `capdial-etcd-bench`: the etcd half of `scripts/compare-etcd.sh`. It lives outside the
//! `capdial` binary so that capdial takes on no gRPC stack.
//!
//! Exit status: 0 if at least one operation was measured (or, with `--preload --duration 0s`,
//! the keys were written), 1 otherwise or on a failure, 2 on bad usage.

mod args;
mod conn;
mod keys;
mod report;
mod run;
mod stats;

use args::{Args, Target};
use clap::Parser;
use keys::KeyChooser;
use report::Report;
use run::{Outcome, Plan};
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("tokio runtime: {e}")),
    };
    match runtime.block_on(bench(&args)) {
        Ok(code) => code,
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("capdial-etcd-bench: {message}");
    ExitCode::from(1)
}

async fn bench(args: &Args) -> Result<ExitCode, String> {
    let measuring = !args.duration.is_zero();
    if !measuring && !args.preload {
        return Err("--duration 0s measures nothing (it goes with --preload)".into());
    }
    let info = conn::cluster_info(&args.endpoints, args.request_timeout).await?;
    let pools = conn::open_pools(
        args.target,
        &args.endpoints,
        &info.leader,
        args.connections(),
        args.preload || (measuring && args.read_ratio < 1.0),
        measuring && args.read_ratio > 0.0,
    )
    .await?;
    let plan = Arc::new(plan(args));
    if args.preload {
        run::preload(plan.clone(), &pools.writes).await?;
    }
    if !measuring {
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = run::measure(
        plan,
        &pools.writes,
        &pools.reads,
        args.concurrency,
        args.warmup,
        args.duration,
    )
    .await?;
    warn_about_misses(&outcome);
    let report = Report::new(args, describe_target(args, &info), &outcome);
    print(args, &report)?;
    Ok(if report.total.ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn plan(args: &Args) -> Plan {
    Plan {
        keys: KeyChooser::new(args.distribution, args.keys),
        key_count: args.keys,
        read_ratio: args.read_ratio,
        serializable: args.read == args::ReadLevel::Serializable,
        // A different stream than the tasks' key choice (which uses the seed itself).
        value: run::make_value(args.value_size, args.seed ^ 0x5641_4c55_4553),
        request_timeout: args.request_timeout,
        seed: args.seed,
    }
}

/// The `target` field: what was measured and how the connections were spread.
fn describe_target(args: &Args, info: &conn::ClusterInfo) -> String {
    let spread = match args.target {
        Target::All => "connections spread over all endpoints".to_string(),
        Target::Leader => format!("all connections to the leader {}", info.leader),
        Target::Split => format!(
            "puts to the leader {}, gets spread over all endpoints",
            info.leader
        ),
    };
    format!(
        "etcd {} {}-member cluster at {} ({spread})",
        info.version,
        info.members,
        args.endpoints.join(",")
    )
}

/// Gets that found nothing still count (etcd answered), but they are cheaper than real reads.
fn warn_about_misses(outcome: &Outcome) {
    if outcome.read.misses > 0 {
        eprintln!(
            "warning: {} of {} gets found no value (run with --preload to write every key)",
            outcome.read.misses, outcome.read.ok
        );
    }
}

fn print(args: &Args, report: &Report) -> Result<(), String> {
    if args.json {
        let line = serde_json::to_string(report).map_err(|e| format!("json: {e}"))?;
        println!("{line}");
    } else {
        print!("{}", report.human());
    }
    Ok(())
}
