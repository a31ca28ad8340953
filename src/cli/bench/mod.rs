//! `capdial bench`: latency against consistency level, under load.
//!
//! - `capdial bench` runs one workload (YCSB a–f or a read ratio) at one read and write level,
//!   with N requests in flight from one process (closed loop) or at a fixed rate (open loop),
//!   and prints throughput, percentiles, errors by kind and how stale reads were.
//! - `capdial bench sweep` runs every point of the dial across concurrencies and inter-node
//!   delays and writes results.json, results.csv, summary.md and SVG plots.
//! - `capdial bench staleness` measures t-visibility: the chance that a read t ms after a
//!   write's acknowledgement, on another node, sees it.
//!
//! ```text
//! mod.rs ── arguments, one run, its table and JSON
//!   ├─ target.rs    the cluster: --endpoint or --cluster, keyspaces, delays
//!   ├─ workload.rs  YCSB mixes and key distributions (pure, seeded)
//!   ├─ load.rs      tasks, sessions over pooled connections, closed and open loops
//!   ├─ stats.rs     histograms, errors by kind, staleness from receipts
//!   ├─ results.rs   the shapes results are printed and stored in
//!   ├─ sweep.rs     the dial × concurrency × delay
//!   ├─ staleness.rs t-visibility probes
//!   ├─ report.rs    files: json, csv, markdown, the machine
//!   └─ plot.rs      SVG plots (plotters)
//! ```

mod failover;
mod load;
mod plot;
mod report;
mod results;
mod staleness;
mod stats;
mod sweep;
mod target;
mod workload;

use crate::cli::demo::report::format_table;
use crate::cli::demo::runtime;
use crate::cli::ops::parse;
use crate::eventual::ValueType;
use crate::protocol::{
    ClientRequest, KeyspaceMode, Operation, ReadLevel, WriteLevel, check_request,
};
use crate::strong::ClientId;
use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use load::{Plan, Stop};
use results::{KeyspaceInfo, Levels, OpSummary, RunReport, Total, WorkloadInfo};
use std::process::ExitCode;
use std::time::Duration;
use target::{Target, TargetArgs};
use workload::{Distribution, Mix, Named, OpKind};

/// Upper bound on a run stopped by `--ops` alone, so every run ends.
const OPS_RUN_SECONDS_MAX: u64 = 600;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Every point of the dial (strong reads at linearizable, lease, follower, stale; strong
    /// writes; eventual writes at local, quorum, all and reads at local, session, quorum)
    /// across concurrencies and inter-node delays; writes results, a summary and SVG plots.
    Sweep(sweep::SweepArgs),
    /// t-visibility: how likely a read on another node sees a write t ms after its
    /// acknowledgement, per level and inter-node delay (Bailis et al., VLDB 2012).
    Staleness(staleness::StalenessArgs),
}

/// The mode of a keyspace the benchmark creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Strong,
    Eventual,
}

/// An eventual keyspace's value type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TypeArg {
    Lww,
    Mvreg,
    Counter,
    Set,
}

/// The workload and its data.
#[derive(Clone, Debug, Args)]
pub(crate) struct WorkloadArgs {
    /// A YCSB core workload: a (50% read, 50% update), b (95/5), c (read only), d (read
    /// latest, 5% insert), e (short scans, strong only, 5% insert), f (read-modify-write).
    #[arg(long, value_enum, conflicts_with = "read_ratio")]
    workload: Option<Named>,
    /// Instead of --workload: reads with this probability (0..=1), updates otherwise.
    #[arg(long, value_name = "R")]
    read_ratio: Option<f64>,
    /// Keys written before measuring (k00000000, k00000001, ...).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256, value_name = "B")]
    value_size: usize,
    /// How keys are picked; default: the workload's own (zipfian; latest for d), or uniform
    /// with --read-ratio.
    #[arg(long, value_enum)]
    distribution: Option<Distribution>,
}

impl WorkloadArgs {
    fn mix(&self) -> anyhow::Result<Mix> {
        match (self.workload, self.read_ratio) {
            (_, Some(ratio)) if !(0.0..=1.0).contains(&ratio) => {
                bail!("--read-ratio {ratio} is outside 0..=1")
            }
            (_, Some(ratio)) => Ok(Mix::read_ratio(
                ratio,
                self.distribution.unwrap_or(Distribution::Uniform),
            )),
            (workload, None) => {
                let mut mix = Mix::named(workload.unwrap_or(Named::A));
                if let Some(distribution) = self.distribution {
                    mix.distribution = distribution;
                }
                Ok(mix)
            }
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.keys == 0 {
            bail!("--keys must be at least 1");
        }
        if self.value_size == 0 || self.value_size > crate::strong::VALUE_BYTES_MAX {
            bail!(
                "--value-size must be within 1..={}",
                crate::strong::VALUE_BYTES_MAX
            );
        }
        Ok(())
    }
}

/// How much load, for how long.
#[derive(Clone, Debug, Args)]
pub(crate) struct LoadArgs {
    /// Requests in flight from this process, each task with its own client session.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Connection pools the tasks share (one QUIC connection per node each); default
    /// min(concurrency, 4).
    #[arg(long, value_name = "C", value_parser = clap::value_parser!(u32).range(1..=256))]
    connections: Option<u32>,
    /// Open loop: this many requests per second in all, each measured from its intended
    /// start (no coordinated omission). Default: closed loop.
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// How long to measure (after the warm-up). Default: 10s; with --ops, up to 600s.
    #[arg(long, value_parser = parse::duration, value_name = "DURATION")]
    duration: Option<Duration>,
    /// Stop after this many measured requests (or at --duration, whichever comes first).
    #[arg(long, value_name = "N")]
    ops: Option<u64>,
    /// Requests begun during this first period are not recorded.
    #[arg(long, default_value = "1s", value_parser = parse::duration, value_name = "DURATION")]
    warmup: Duration,
}

impl LoadArgs {
    fn stop(&self) -> anyhow::Result<Stop> {
        if self.ops == Some(0) {
            bail!("--ops must be at least 1");
        }
        if let Some(rate) = self.rate
            && !(rate > 0.0 && rate.is_finite())
        {
            bail!("--rate must be a positive number of requests per second");
        }
        let duration = match (self.duration, self.ops) {
            (Some(duration), _) => duration,
            (None, Some(_)) => Duration::from_secs(OPS_RUN_SECONDS_MAX),
            (None, None) => Duration::from_secs(10),
        };
        Ok(Stop {
            duration,
            ops: self.ops,
        })
    }

    fn connections(&self) -> u32 {
        self.connections.unwrap_or(self.concurrency.min(4))
    }
}

/// `capdial bench` without a subcommand: one workload.
#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// The keyspace to measure, created if missing; default bench-strong, or bench-TYPE.
    #[arg(long, value_name = "NAME")]
    keyspace: Option<String>,
    /// The mode of the keyspace.
    #[arg(long, value_enum, default_value_t = ModeArg::Strong)]
    mode: ModeArg,
    /// The value type of an eventual keyspace.
    #[arg(long = "type", value_enum, default_value_t = TypeArg::Lww)]
    value_type: TypeArg,
    /// Read level: linearizable, lease, follower, stale (strong); local, session, quorum
    /// (eventual). Default: linearizable, or local.
    #[arg(long, value_parser = parse::read_level, value_name = "LEVEL")]
    read: Option<ReadLevel>,
    /// Write level of an eventual keyspace: local, quorum, all (default local).
    #[arg(long, value_parser = parse::write_level, value_name = "LEVEL")]
    write: Option<WriteLevel>,
    /// One-way delay between every two nodes during the run, through the fault path
    /// (cleared afterwards).
    #[arg(long, default_value = "0ms", value_parser = parse::duration, value_name = "DURATION")]
    delay: Duration,
    /// Skip writing the keys first (they are already there).
    #[arg(long)]
    no_preload: bool,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object (progress lines still go to stderr).
    #[arg(long)]
    json: bool,
}

fn mode_of(mode: ModeArg, value_type: TypeArg) -> KeyspaceMode {
    match (mode, value_type) {
        (ModeArg::Strong, _) => KeyspaceMode::Strong,
        (ModeArg::Eventual, TypeArg::Lww) => KeyspaceMode::Eventual(ValueType::Lww),
        (ModeArg::Eventual, TypeArg::Mvreg) => KeyspaceMode::Eventual(ValueType::MvReg),
        (ModeArg::Eventual, TypeArg::Counter) => KeyspaceMode::Eventual(ValueType::Counter),
        (ModeArg::Eventual, TypeArg::Set) => KeyspaceMode::Eventual(ValueType::Set),
    }
}

/// `strong`, `eventual` or `paxos`, as results name a mode.
pub(crate) fn mode_name(mode: KeyspaceMode) -> &'static str {
    match mode {
        KeyspaceMode::Strong => "strong",
        KeyspaceMode::Eventual(_) => "eventual",
        KeyspaceMode::Paxos => "paxos",
    }
}

fn default_keyspace(mode: KeyspaceMode) -> String {
    match mode {
        KeyspaceMode::Strong => "bench-strong".to_string(),
        KeyspaceMode::Paxos => "bench-paxos".to_string(),
        KeyspaceMode::Eventual(value_type) => format!("bench-{}", type_name(value_type)),
    }
}

fn type_name(value_type: ValueType) -> &'static str {
    match value_type {
        ValueType::Lww => "lww",
        ValueType::MvReg => "mvreg",
        ValueType::Counter => "counter",
        ValueType::Set => "set",
    }
}

/// Refuses a plan the keyspace cannot serve before any load starts, with the node's own
/// typed error: the same check the node would make on every request.
fn check_plan(plan: &Plan) -> anyhow::Result<()> {
    for kind in plan.mix.kinds() {
        let key = Bytes::from_static(b"k");
        let operation = match kind {
            OpKind::Read => Operation::Get { key },
            OpKind::Scan => Operation::Scan {
                prefix: key,
                limit: 1,
                after: None,
            },
            _ if plan.mode == KeyspaceMode::Eventual(ValueType::Counter) => {
                Operation::Add { key, by: 1 }
            }
            _ if plan.mode == KeyspaceMode::Eventual(ValueType::Set) => Operation::SetAdd {
                key,
                members: vec![Bytes::from_static(b"m")],
            },
            _ => Operation::Put {
                key,
                value: Bytes::from(vec![b'v'; plan.value_size]),
                context: None,
            },
        };
        let writes = kind.writes();
        let request = ClientRequest {
            client: ClientId(0),
            seq: 1,
            first_unacked: 1,
            opens_session: true,
            keyspace: plan.keyspace.clone(),
            operation,
            read: (!writes).then(|| plan.read_level()),
            write: if writes { plan.write } else { None },
            // A session read's token comes from the task's first write.
            session: (plan.read_level() == ReadLevel::Session).then_some(
                crate::eventual::SessionToken {
                    node: crate::types::NodeId(1),
                    seq: 1,
                },
            ),
            written_at: None,
        };
        check_request(&request, plan.mode)
            .with_context(|| format!("workload {} on keyspace {}", plan.mix.name, plan.keyspace))?;
    }
    Ok(())
}

impl RunArgs {
    fn plan(&self) -> anyhow::Result<Plan> {
        self.workload.check()?;
        let mode = mode_of(self.mode, self.value_type);
        let plan = Plan {
            keyspace: self
                .keyspace
                .clone()
                .unwrap_or_else(|| default_keyspace(mode)),
            mode,
            mix: self.workload.mix()?,
            keys: self.workload.keys,
            value_size: self.workload.value_size,
            read: self.read,
            write: self.write,
            concurrency: self.load.concurrency,
            connections: self.load.connections(),
            rate: self.load.rate,
            stop: self.load.stop()?,
            warmup: self.load.warmup,
            seed: self.seed,
            progress: true,
        };
        check_plan(&plan)?;
        Ok(plan)
    }
}

/// Runs a plan on a target: the keyspace, the delay, the preload, the load; then clears the
/// delay again, whatever happened. A zero delay touches no fault rules.
pub(crate) async fn measure(
    target: &Target,
    plan: &Plan,
    delay: Duration,
    preload: bool,
) -> anyhow::Result<RunReport> {
    target.ensure_keyspace(&plan.keyspace, plan.mode).await?;
    let pools = target.pools(plan.connections).await?;
    if preload {
        load::preload(plan, &pools, &target.addresses(), !plan.progress).await?;
    }
    let sessions = load::sessions(&pools, &target.addresses(), plan.concurrency);
    // Without a delay the fault rules are left alone: the run measures whatever the user set
    // (and a member that is down does not fail it).
    if delay.is_zero() {
        let outcome = load::run(plan, sessions).await?;
        return Ok(report(target, plan, delay, &outcome));
    }
    target.set_delay(delay).await?;
    let outcome = load::run(plan, sessions).await;
    let healed = target.set_delay(Duration::ZERO).await;
    let outcome = outcome?;
    healed.context("clearing the delay after the run")?;
    Ok(report(target, plan, delay, &outcome))
}

fn report(target: &Target, plan: &Plan, delay: Duration, outcome: &load::Outcome) -> RunReport {
    let operations = outcome.recorder.summaries(outcome.window);
    let ok = outcome.recorder.ok();
    let seconds = outcome.window.as_secs_f64();
    let value_type = match plan.mode {
        KeyspaceMode::Strong | KeyspaceMode::Paxos => None,
        KeyspaceMode::Eventual(value_type) => Some(type_name(value_type).to_string()),
    };
    RunReport {
        tool: "capdial".to_string(),
        target: target.description.clone(),
        workload: WorkloadInfo {
            name: plan.mix.name.clone(),
            read_ratio: plan.mix.read_share(),
            keys: plan.keys,
            value_size: plan.value_size,
            distribution: plan.mix.distribution.name().to_string(),
            concurrency: plan.concurrency,
            connections: plan.connections,
            rate: plan.rate,
            duration_s: plan.stop.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        },
        keyspace: KeyspaceInfo {
            name: plan.keyspace.clone(),
            mode: mode_name(plan.mode).to_string(),
            value_type,
        },
        levels: Levels {
            read: plan.read_level().name().to_string(),
            write: (plan.mode != KeyspaceMode::Strong).then(|| plan.write_name().to_string()),
        },
        elapsed_s: seconds,
        operations,
        total: Total {
            ok,
            errors: outcome.recorder.errors(),
            throughput: if seconds > 0.0 {
                ok as f64 / seconds
            } else {
                0.0
            },
        },
    }
}

/// Milliseconds as the tables print them.
pub(crate) fn ms(value: f64) -> String {
    format!("{value:.2}")
}

/// One table row per operation type.
pub(crate) fn operation_rows(operations: &[OpSummary]) -> Vec<Vec<String>> {
    operations.iter().map(operation_cells).collect()
}

/// The cells of one operation type's row, under [`OPERATION_HEADER`].
pub(crate) fn operation_cells(op: &OpSummary) -> Vec<String> {
    let latency = |value: f64| {
        if op.ok == 0 {
            "-".to_string()
        } else {
            ms(value)
        }
    };
    let stale = op.staleness.as_ref().map_or("-".to_string(), |staleness| {
        format!(
            "{:.0}% behind, p99 {} max {}",
            100.0 * staleness.stale as f64 / staleness.reads.max(1) as f64,
            staleness.behind_p99,
            staleness.behind_max
        )
    });
    vec![
        op.operation.clone(),
        op.level.clone(),
        op.ok.to_string(),
        op.errors.to_string(),
        format!("{:.0}", op.throughput),
        latency(op.latency_ms.p50),
        latency(op.latency_ms.p90),
        latency(op.latency_ms.p99),
        latency(op.latency_ms.p999),
        latency(op.latency_ms.max),
        stale,
    ]
}

pub(crate) const OPERATION_HEADER: [&str; 11] = [
    "operation",
    "level",
    "ok",
    "errors",
    "ops/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "stale reads",
];

/// The human form of one run.
fn render(report: &RunReport) -> String {
    let workload = &report.workload;
    let mut out = format!(
        "capdial bench: workload {} ({:.0}% reads, {} distribution) on {} keyspace {}, {} keys of {} bytes, \
         {} in flight over {} connection pools{}, {} ms between nodes, against {}\n",
        workload.name,
        100.0 * workload.read_ratio,
        workload.distribution,
        report.keyspace.mode,
        report.keyspace.name,
        workload.keys,
        workload.value_size,
        workload.concurrency,
        workload.connections,
        workload
            .rate
            .map_or(String::new(), |rate| format!(", open loop at {rate:.0}/s")),
        workload.delay_ms,
        report.target,
    );
    out.push_str(&format_table(
        &OPERATION_HEADER,
        &operation_rows(&report.operations),
    ));
    out.push_str(&format!(
        "total: {} ok, {} errors, {:.0} ops/s over {:.1}s\n",
        report.total.ok, report.total.errors, report.total.throughput, report.elapsed_s
    ));
    for op in report.operations.iter().filter(|op| op.errors > 0) {
        let kinds: Vec<String> = op
            .errors_by_kind
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        out.push_str(&format!(
            "errors of {}: {}\n",
            op.operation,
            kinds.join(", ")
        ));
    }
    out
}

/// Runs `capdial bench` and its subcommands.
pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        Some(BenchCommand::Sweep(sweep)) => sweep::run(sweep),
        Some(BenchCommand::Staleness(staleness)) => staleness::run(staleness),
        None => run_one(&args.run),
    }
}

fn run_one(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let plan = args.plan()?;
    let runtime = runtime()?;
    let _guard = runtime.enter();
    let target = Target::open(&args.target, &runtime)?;
    let report = runtime.block_on(measure(&target, &plan, args.delay, !args.no_preload))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("encoding the report")?
        );
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.total.ok == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
