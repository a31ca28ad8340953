//! `capdial bench sweep`: one workload at every point of the dial, across concurrencies and
//! inter-node delays, on one cluster in one run, so the numbers compare side by side.
//!
//! Each point is a pure workload (all reads at one level, or all writes at one level) with
//! `concurrency` requests in flight. The delay is set once per delay value on every node
//! through the fault path and cleared at the end, also on an error.

use super::load::{self, Plan, Stop};
use super::results::Row;
use super::target::{Target, TargetArgs};
use super::workload::{Distribution, Mix, OpKind};
use super::{mode_name, plot, report};
use crate::cli::demo::report::format_table;
use crate::cli::demo::runtime;
use crate::cli::ops::parse;
use crate::client::conn::Client;
use crate::eventual::ValueType;
use crate::protocol::{KeyspaceMode, ReadLevel, WriteLevel};
use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const STRONG_KEYSPACE: &str = "sweep-strong";
const EVENTUAL_KEYSPACE: &str = "sweep-lww";
const PAXOS_KEYSPACE: &str = "sweep-paxos";

#[derive(Debug, Args)]
pub(crate) struct SweepArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Requests in flight at each point, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64", value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: Vec<u32>,
    /// One-way delays between every two nodes, comma-separated (through the fault path).
    #[arg(long, value_delimiter = ',', default_value = "0ms,5ms,50ms", value_parser = parse::duration)]
    delay: Vec<Duration>,
    /// Measured time per point.
    #[arg(long, default_value = "3s", value_parser = parse::duration)]
    duration: Duration,
    /// Unrecorded time at the start of each point.
    #[arg(long, default_value = "500ms", value_parser = parse::duration)]
    warmup: Duration,
    /// Keys written to each keyspace before the first point.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// How keys are picked.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    distribution: Distribution,
    /// Connection pools the tasks share; default min(concurrency, 4).
    #[arg(long)]
    connections: Option<u32>,
    /// Where to write results (default bench-results/sweep-<date>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Seed of the key choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// After the points, kill the node serving writes mid-run, for strong (its leader) and
    /// paxos, and report the longest write stall (needs --cluster).
    #[arg(long)]
    failover: bool,
    /// Writes before and after the kill, each, in the failover measurement.
    #[arg(long, default_value = "3s", value_parser = parse::duration)]
    failover_window: Duration,
}

/// One point of the dial, before concurrency and delay.
#[derive(Clone, Copy, Debug)]
struct Point {
    mode: KeyspaceMode,
    kind: OpKind,
    read: Option<ReadLevel>,
    write: Option<WriteLevel>,
}

/// Every level a keyspace offers: strong writes, strong reads at four levels; eventual
/// writes at three and reads at three.
fn points() -> Vec<Point> {
    let lww = KeyspaceMode::Eventual(ValueType::Lww);
    let strong_read = |level| Point {
        mode: KeyspaceMode::Strong,
        kind: OpKind::Read,
        read: Some(level),
        write: None,
    };
    let eventual_write = |level| Point {
        mode: lww,
        kind: OpKind::Update,
        read: None,
        write: Some(level),
    };
    let eventual_read = |level| Point {
        mode: lww,
        kind: OpKind::Read,
        read: Some(level),
        write: None,
    };
    vec![
        Point {
            mode: KeyspaceMode::Strong,
            kind: OpKind::Update,
            read: None,
            write: None,
        },
        strong_read(ReadLevel::Linearizable),
        strong_read(ReadLevel::Lease),
        strong_read(ReadLevel::Follower),
        strong_read(ReadLevel::Stale),
        eventual_write(WriteLevel::Local),
        eventual_write(WriteLevel::Quorum),
        eventual_write(WriteLevel::All),
        eventual_read(ReadLevel::Local),
        eventual_read(ReadLevel::Session),
        eventual_read(ReadLevel::Quorum),
        // Leaderless Paxos: a write and a read are each a round (or two) of a majority.
        Point {
            mode: KeyspaceMode::Paxos,
            kind: OpKind::Update,
            read: None,
            write: None,
        },
        Point {
            mode: KeyspaceMode::Paxos,
            kind: OpKind::Read,
            read: Some(ReadLevel::Linearizable),
            write: None,
        },
    ]
}

impl SweepArgs {
    fn check(&self) -> anyhow::Result<()> {
        if self.concurrency.is_empty() || self.delay.is_empty() {
            bail!("--concurrency and --delay each need at least one value");
        }
        if self.keys == 0 || self.value_size == 0 {
            bail!("--keys and --value-size must be at least 1");
        }
        if self.failover && !self.target.is_local() {
            bail!("--failover kills a node: it needs the bench's own cluster (--cluster)");
        }
        Ok(())
    }

    fn plan(&self, point: &Point, concurrency: u32) -> Plan {
        let ratio = if point.kind == OpKind::Read { 1.0 } else { 0.0 };
        Plan {
            keyspace: keyspace_of(point.mode).to_string(),
            mode: point.mode,
            mix: Mix::read_ratio(ratio, self.distribution),
            keys: self.keys,
            value_size: self.value_size,
            read: point.read,
            write: point.write,
            concurrency,
            connections: self.connections.unwrap_or(concurrency.min(4)),
            rate: None,
            stop: Stop {
                duration: self.duration,
                ops: None,
            },
            warmup: self.warmup,
            seed: self.seed,
            progress: false,
        }
    }
}

fn keyspace_of(mode: KeyspaceMode) -> &'static str {
    match mode {
        KeyspaceMode::Strong => STRONG_KEYSPACE,
        KeyspaceMode::Eventual(_) => EVENTUAL_KEYSPACE,
        KeyspaceMode::Paxos => PAXOS_KEYSPACE,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Creates and preloads each mode's keyspace once, at no delay.
async fn prepare(target: &Target, args: &SweepArgs, pools: &[Client]) -> anyhow::Result<()> {
    let mut modes: Vec<KeyspaceMode> = Vec::new();
    for point in points() {
        if modes.contains(&point.mode) {
            continue;
        }
        modes.push(point.mode);
        let plan = args.plan(&point, 1);
        target.ensure_keyspace(&plan.keyspace, plan.mode).await?;
        load::preload(&plan, pools, &target.addresses(), false).await?;
    }
    Ok(())
}

async fn sweep(target: &Target, args: &SweepArgs) -> anyhow::Result<Vec<Row>> {
    // One set of pools for the preload and every point: the points fork sessions from it.
    let connections = args
        .concurrency
        .iter()
        .map(|c| args.connections.unwrap_or((*c).min(4)))
        .max();
    let pools = target.pools(connections.unwrap_or(1)).await?;
    prepare(target, args, &pools).await?;
    let total = args.delay.len() * args.concurrency.len() * points().len();
    let mut rows = Vec::new();
    for delay in &args.delay {
        target.set_delay(*delay).await?;
        for &concurrency in &args.concurrency {
            for point in points() {
                let plan = args.plan(&point, concurrency);
                let sessions = load::sessions(&pools, &target.addresses(), concurrency);
                let outcome = load::run(&plan, sessions).await?;
                let op = outcome
                    .recorder
                    .summaries(outcome.window)
                    .into_iter()
                    .find(|op| op.operation == point.kind.name())
                    .unwrap_or_default();
                let row = Row {
                    mode: mode_name(point.mode).to_string(),
                    concurrency,
                    delay_ms: millis(*delay),
                    op,
                };
                eprintln!("  [{}/{total}] {}", rows.len() + 1, describe(&row));
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

fn describe(row: &Row) -> String {
    let op = &row.op;
    format!(
        "{} {} {}, {} in flight, {} ms: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        row.mode,
        op.operation,
        op.level,
        row.concurrency,
        row.delay_ms,
        op.throughput,
        op.latency_ms.p50,
        op.latency_ms.p99,
        op.errors
    )
}

/// What results.json holds.
#[derive(Serialize)]
struct SweepFile<'a> {
    provenance: &'a report::Provenance,
    target: &'a str,
    keys: u64,
    value_size: usize,
    distribution: &'a str,
    duration_s: f64,
    warmup_s: f64,
    rows: &'a [Row],
}

/// summary.md: one table per delay, a row per level and concurrency.
fn summary(rows: &[Row], provenance: &report::Provenance, target: &str) -> String {
    let mut out = format!("# capdial bench sweep\n\nAgainst {target}.\n\n");
    out.push_str(&provenance.markdown());
    out.push_str("\n![the price of consistency](price-of-consistency.svg)\n");
    let mut delays: Vec<u64> = rows.iter().map(|row| row.delay_ms).collect();
    delays.dedup();
    for delay in delays {
        out.push_str(&format!(
            "\n## {delay} ms between nodes\n\n![latency percentiles](latency-{delay}ms.svg)\n\
             ![throughput](throughput-{delay}ms.svg)\n\n"
        ));
        // The same cells as the printed table, the level's name and concurrency first.
        let mut header = vec!["level", "in flight"];
        header.extend(&super::OPERATION_HEADER[2..]);
        out.push_str(&format!("| {} |\n", header.join(" | ")));
        out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
        // Each level's concurrencies side by side, levels in the sweep's order.
        let mut at_delay: Vec<&Row> = rows.iter().filter(|row| row.delay_ms == delay).collect();
        let labels: Vec<String> = at_delay.iter().map(|row| plot::series_label(row)).collect();
        let rank = |row: &Row| {
            labels
                .iter()
                .position(|label| *label == plot::series_label(row))
        };
        at_delay.sort_by_key(|row| (rank(row), row.concurrency));
        for row in at_delay {
            let mut cells = vec![plot::series_label(row), row.concurrency.to_string()];
            cells.extend(super::operation_cells(&row.op).into_iter().skip(2));
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
    }
    out
}

/// Writes every file of a sweep into `dir`.
fn write_all(
    dir: &Path,
    rows: &[Row],
    args: &SweepArgs,
    target: &str,
) -> anyhow::Result<Vec<String>> {
    let provenance = report::Provenance::here();
    let file = SweepFile {
        provenance: &provenance,
        target,
        keys: args.keys,
        value_size: args.value_size,
        distribution: args.distribution.name(),
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        rows,
    };
    report::write_json(dir, "results.json", &file)?;
    report::write(dir, "results.csv", &report::csv(rows))?;
    report::write(dir, "summary.md", &summary(rows, &provenance, target))?;
    let mut written = vec![
        "results.json".to_string(),
        "results.csv".to_string(),
        "summary.md".to_string(),
    ];
    let lowest = args.concurrency.iter().copied().min().unwrap_or(1);
    let highest = args.concurrency.iter().copied().max().unwrap_or(1);
    let price = "price-of-consistency.svg".to_string();
    plot::price_of_consistency(rows, lowest, &dir.join(&price))?;
    written.push(price);
    for delay in &args.delay {
        let delay = millis(*delay);
        let latency = format!("latency-{delay}ms.svg");
        plot::latency_percentiles(rows, delay, highest, &dir.join(&latency))?;
        let throughput = format!("throughput-{delay}ms.svg");
        plot::throughput(rows, delay, &dir.join(&throughput))?;
        written.extend([latency, throughput]);
    }
    Ok(written)
}

pub(crate) fn run(args: &SweepArgs) -> anyhow::Result<ExitCode> {
    args.check()?;
    let dir = report::output_dir(args.out.as_deref(), "sweep")?;
    let runtime = runtime()?;
    let _guard = runtime.enter();
    let started = std::time::Instant::now();
    let target = Target::open(&args.target, &runtime)?;
    eprintln!(
        "capdial bench sweep: {} points × {} concurrencies × {} delays against {}",
        points().len(),
        args.concurrency.len(),
        args.delay.len(),
        target.description
    );
    let rows = runtime.block_on(sweep(&target, args));
    let healed = runtime.block_on(target.set_delay(Duration::ZERO));
    let rows = rows?;
    healed.context("clearing the delay after the sweep")?;
    let failover = if args.failover {
        runtime.block_on(failovers(&target, args))?
    } else {
        Vec::new()
    };
    let mut written = write_all(&dir, &rows, args, &target.description)?;
    if !failover.is_empty() {
        let provenance = report::Provenance::here();
        let file = FailoverFile {
            provenance: &provenance,
            target: &target.description,
            window_s: args.failover_window.as_secs_f64(),
            rows: &failover,
        };
        report::write_json(&dir, "failover.json", &file)?;
        report::write(
            &dir,
            "failover.md",
            &failover_summary(&failover, &provenance),
        )?;
        written.extend(["failover.json".to_string(), "failover.md".to_string()]);
        for row in &failover {
            println!(
                "failover {}: killed {}, longest write stall {:.0} ms (longest gap before the \
                 kill {:.0} ms), {} writes, {} failed",
                row.mode,
                row.killed,
                row.longest_stall_ms,
                row.longest_gap_before_ms,
                row.writes_ok,
                row.writes_failed
            );
        }
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![
                row.mode.clone(),
                row.delay_ms.to_string(),
                row.concurrency.to_string(),
            ];
            cells.extend(super::operation_cells(&row.op));
            cells
        })
        .collect();
    let mut header = vec!["mode", "delay ms", "in flight"];
    header.extend(super::OPERATION_HEADER);
    print!("{}", format_table(&header, &table));
    println!(
        "capdial bench sweep: {} rows in {:.0}s; wrote {} in {}",
        rows.len(),
        started.elapsed().as_secs_f64(),
        written.join(", "),
        dir.display()
    );
    let failed = rows.iter().any(|row| row.op.ok == 0);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Keyspaces of the failover measurement: fresh ones, so the sweep's rows do not matter.
const FAILOVER_KEYSPACES: [(&str, KeyspaceMode); 2] = [
    ("failover-strong", KeyspaceMode::Strong),
    ("failover-paxos", KeyspaceMode::Paxos),
];

/// Runs the failover measurement for strong, then paxos.
async fn failovers(
    target: &Target,
    args: &SweepArgs,
) -> anyhow::Result<Vec<super::failover::FailoverRow>> {
    let cluster = target
        .local()
        .context("--failover needs the bench's own cluster")?;
    let mut rows = Vec::new();
    for (keyspace, mode) in FAILOVER_KEYSPACES {
        let window = args.failover_window;
        let row = super::failover::measure(target, cluster, keyspace, mode, window, window)
            .await
            .with_context(|| format!("failover of {keyspace}"))?;
        rows.push(row);
    }
    Ok(rows)
}

/// What failover.json holds.
#[derive(Serialize)]
struct FailoverFile<'a> {
    provenance: &'a report::Provenance,
    target: &'a str,
    window_s: f64,
    rows: &'a [super::failover::FailoverRow],
}

/// failover.md: one row per mode.
fn failover_summary(
    rows: &[super::failover::FailoverRow],
    provenance: &report::Provenance,
) -> String {
    let mut out = "# capdial bench sweep --failover\n\n".to_string();
    out.push_str(&provenance.markdown());
    out.push_str(
        "\nThe node serving the writes (strong: the leader) is killed with SIGKILL mid-run; \
         the stall is the longest time from the kill on with no write completing.\n\n",
    );
    out.push_str(
        "| mode | killed | longest stall ms | longest gap before ms | writes | failed |\n",
    );
    out.push_str("|---|---|---|---|---|---|\n");
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {} | {} |\n",
            row.mode,
            row.killed,
            row.longest_stall_ms,
            row.longest_gap_before_ms,
            row.writes_ok,
            row.writes_failed
        ));
    }
    out
}
