//! `capdial bench staleness`: t-visibility, measured. How long after a write is acknowledged
//! do reads on the other nodes see it? (Bailis et al., "Probabilistically Bounded Staleness
//! for Practical Partial Quorums", VLDB 2012.)
//!
//! A trial writes a fresh value to a fresh key, waits `t` after the acknowledgement, then
//! reads the key at one level on every node other than the one that took the write, and
//! counts the reads that saw it. Each key is probed at one offset only, so an earlier probe
//! (a quorum read repairs what it reads) cannot help a later one. The trials of one round,
//! one per offset, run at once on distinct keys.

use super::plot;
use super::results::Visibility;
use super::target::{Target, TargetArgs};
use super::{mode_name, report};
use crate::cli::demo::runtime;
use crate::cli::ops::parse;
use crate::client::conn::ConnError;
use crate::eventual::{ReadValue, ValueType};
use crate::protocol::{Answer, KeyspaceMode, Operation, ReadLevel, WriteLevel};
use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::time::Instant;

const STRONG_KEYSPACE: &str = "visibility-strong";
const EVENTUAL_KEYSPACE: &str = "visibility-lww";
const PAXOS_KEYSPACE: &str = "visibility-paxos";

#[derive(Debug, Args)]
pub(crate) struct StalenessArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// One-way delays between every two nodes, comma-separated (through the fault path).
    #[arg(long, value_delimiter = ',', default_value = "0ms,5ms,50ms", value_parser = parse::duration)]
    delay: Vec<Duration>,
    /// Times after the acknowledgement at which reads probe, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0ms,1ms,2ms,5ms,10ms,20ms,50ms,100ms,200ms", value_parser = parse::duration)]
    offsets: Vec<Duration>,
    /// Writes probed at each offset, per level and delay.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    trials: u32,
    /// Where to write results (default bench-results/staleness-<date>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// A level whose reads may miss a write acknowledged elsewhere.
#[derive(Clone, Copy, Debug)]
struct Probe {
    mode: KeyspaceMode,
    level: ReadLevel,
}

/// Eventual `local` and `quorum` reads (after a `local` write), strong `stale` and
/// `follower` reads on the followers.
fn probes() -> [Probe; 4] {
    let lww = KeyspaceMode::Eventual(ValueType::Lww);
    [
        Probe {
            mode: lww,
            level: ReadLevel::Local,
        },
        Probe {
            mode: lww,
            level: ReadLevel::Quorum,
        },
        Probe {
            mode: KeyspaceMode::Strong,
            level: ReadLevel::Stale,
        },
        Probe {
            mode: KeyspaceMode::Strong,
            level: ReadLevel::Follower,
        },
    ]
}

fn keyspace_of(mode: KeyspaceMode) -> &'static str {
    match mode {
        KeyspaceMode::Strong => STRONG_KEYSPACE,
        KeyspaceMode::Eventual(_) => EVENTUAL_KEYSPACE,
        KeyspaceMode::Paxos => PAXOS_KEYSPACE,
    }
}

/// The value a read returned, if any.
fn read_value(answer: &Answer) -> Option<&Bytes> {
    match answer {
        Answer::Strong(Some(versioned)) => Some(&versioned.value),
        Answer::Eventual(ReadValue::Lww { value, .. }) => value.as_ref(),
        _ => None,
    }
}

/// What the probes at one offset found.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// Answered probes.
    probes: u64,
    fresh: u64,
    /// Probes that got no answer: a failure says nothing about visibility.
    errors: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.probes += other.probes;
        self.fresh += other.fresh;
        self.errors += other.errors;
    }
}

/// One trial: write, wait `offset` after the ack, read on the other nodes.
async fn trial(
    target: &Target,
    probe: Probe,
    key: String,
    offset: Duration,
    writer: &str,
) -> Result<Tally, ConnError> {
    let keyspace = keyspace_of(probe.mode);
    let value = Bytes::from(key.clone().into_bytes());
    let put = Operation::Put {
        key: Bytes::from(key.clone()),
        value: value.clone(),
        context: None,
    };
    // The trials of a round run at once, and one client's strong writes must commit in
    // sequence order: each trial has a session of its own.
    let client = target.client.fork(None);
    // An eventual write is taken by one chosen node at `local`; a strong one by the leader.
    let (_, receipt) = match probe.mode {
        KeyspaceMode::Strong | KeyspaceMode::Paxos => {
            client.execute(keyspace, put, None, None, None).await?
        }
        KeyspaceMode::Eventual(_) => {
            client
                .execute_at(writer, keyspace, put, None, Some(WriteLevel::Local), None)
                .await?
        }
    };
    tokio::time::sleep_until(Instant::now() + offset).await;
    let others = target
        .members
        .iter()
        .filter(|member| member.id != receipt.node);
    let reads = others.map(|member| {
        let get = Operation::Get {
            key: Bytes::from(key.clone()),
        };
        client.execute_at(
            &member.address,
            keyspace,
            get,
            Some(probe.level),
            None,
            None,
        )
    });
    let mut tally = Tally::default();
    for answer in join_all(reads.collect()).await {
        match answer {
            Ok((answer, _)) => {
                tally.probes += 1;
                tally.fresh += u64::from(read_value(&answer) == Some(&value));
            }
            Err(_) => tally.errors += 1,
        }
    }
    Ok(tally)
}

/// Every offset at one level and delay: `trials` rounds, each one trial per offset at once.
async fn measure(
    target: &Target,
    args: &StalenessArgs,
    probe: Probe,
    delay: Duration,
    round_base: &mut u64,
) -> anyhow::Result<Vec<Visibility>> {
    let mut counts = vec![Tally::default(); args.offsets.len()];
    let addresses = target.addresses();
    for round in 0..args.trials {
        *round_base += 1;
        let writer = &addresses[round as usize % addresses.len()];
        let trials = args.offsets.iter().enumerate().map(|(index, offset)| {
            let key = format!("vis-{}-{index}", *round_base);
            trial(target, probe, key, *offset, writer)
        });
        let results = join_all(trials.collect()).await;
        for (index, result) in results.into_iter().enumerate() {
            let tally = result
                .map_err(|error| anyhow::anyhow!(crate::cli::demo::retry::describe(&error)))
                .context("a visibility trial's write failed")?;
            counts[index].add(tally);
        }
    }
    Ok(args
        .offsets
        .iter()
        .zip(counts)
        .map(|(offset, tally)| Visibility {
            mode: mode_name(probe.mode).to_string(),
            level: probe.level.name().to_string(),
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            offset_ms: offset.as_secs_f64() * 1000.0,
            probes: tally.probes,
            fresh: tally.fresh,
            probability: if tally.probes == 0 {
                0.0
            } else {
                tally.fresh as f64 / tally.probes as f64
            },
            errors: tally.errors,
        })
        .collect())
}

/// Runs futures concurrently on the current task and collects their outputs in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

async fn visibility(target: &Target, args: &StalenessArgs) -> anyhow::Result<Vec<Visibility>> {
    for keyspace in [KeyspaceMode::Strong, KeyspaceMode::Eventual(ValueType::Lww)] {
        target
            .ensure_keyspace(keyspace_of(keyspace), keyspace)
            .await?;
    }
    let mut points = Vec::new();
    let mut round = 0;
    for delay in &args.delay {
        target.set_delay(*delay).await?;
        for probe in probes() {
            let measured = measure(target, args, probe, *delay, &mut round).await?;
            let line: Vec<String> = measured
                .iter()
                .map(|point| format!("{:.0}ms {:.2}", point.offset_ms, point.probability))
                .collect();
            eprintln!(
                "  {} {} at {} ms between nodes: {}",
                mode_name(probe.mode),
                probe.level.name(),
                delay.as_millis(),
                line.join(", ")
            );
            points.extend(measured);
        }
    }
    Ok(points)
}

/// visibility.md: a row per (level, delay), a column per offset.
fn table(points: &[Visibility], offsets: &[Duration]) -> String {
    let mut out = String::from("| level | delay ms |");
    for offset in offsets {
        out.push_str(&format!(" t={} ms |", offset.as_millis()));
    }
    out.push_str(&format!("\n|---|---|{}\n", "---|".repeat(offsets.len())));
    for chunk in points.chunks(offsets.len().max(1)) {
        let first = &chunk[0];
        out.push_str(&format!(
            "| {} {} | {} |",
            first.mode, first.level, first.delay_ms
        ));
        for point in chunk {
            out.push_str(&format!(" {:.2} |", point.probability));
        }
        out.push('\n');
    }
    out
}

#[derive(Serialize)]
struct VisibilityFile<'a> {
    provenance: &'a report::Provenance,
    target: &'a str,
    trials_per_offset: u32,
    points: &'a [Visibility],
}

pub(crate) fn run(args: &StalenessArgs) -> anyhow::Result<ExitCode> {
    if args.delay.is_empty() || args.offsets.is_empty() {
        bail!("--delay and --offsets each need at least one value");
    }
    let dir = report::output_dir(args.out.as_deref(), "staleness")?;
    let runtime = runtime()?;
    let _guard = runtime.enter();
    let target = Target::open(&args.target, &runtime)?;
    if target.members.len() < 2 {
        bail!(
            "t-visibility needs at least two nodes; the cluster has {}",
            target.members.len()
        );
    }
    eprintln!(
        "capdial bench staleness: {} trials per offset, {} offsets, {} delays against {}",
        args.trials,
        args.offsets.len(),
        args.delay.len(),
        target.description
    );
    let points = runtime.block_on(visibility(&target, args));
    let healed = runtime.block_on(target.set_delay(Duration::ZERO));
    let points = points?;
    healed.context("clearing the delay")?;
    let provenance = report::Provenance::here();
    let file = VisibilityFile {
        provenance: &provenance,
        target: &target.description,
        trials_per_offset: args.trials,
        points: &points,
    };
    let markdown = table(&points, &args.offsets);
    report::write_json(&dir, "visibility.json", &file)?;
    report::write(&dir, "visibility.csv", &csv(&points))?;
    report::write(
        &dir,
        "visibility.md",
        &format!(
            "# capdial bench staleness\n\nProbability that a read on another node sees a write t ms after its \
             acknowledgement, against {}.\n\n{}\n{markdown}",
            target.description,
            provenance.markdown()
        ),
    )?;
    plot::visibility(&points, &dir.join("visibility.svg"))?;
    print!("{markdown}");
    println!(
        "capdial bench staleness: wrote visibility.json, visibility.csv, visibility.md, visibility.svg in {}",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn csv(points: &[Visibility]) -> String {
    let mut out = String::from("mode,level,delay_ms,offset_ms,probes,fresh,probability,errors\n");
    for point in points {
        out.push_str(&format!(
            "{},{},{},{},{},{},{:.4},{}\n",
            point.mode,
            point.level,
            point.delay_ms,
            point.offset_ms,
            point.probes,
            point.fresh,
            point.probability,
            point.errors
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(level: &str, offset_ms: f64, probability: f64) -> Visibility {
        Visibility {
            mode: "eventual".into(),
            level: level.into(),
            delay_ms: 5,
            offset_ms,
            probes: 40,
            fresh: (probability * 40.0) as u64,
            probability,
            errors: 0,
        }
    }

    #[test]
    fn the_table_has_a_row_per_level_and_a_column_per_offset() {
        let offsets = [Duration::ZERO, Duration::from_millis(10)];
        let points = [
            point("local", 0.0, 0.25),
            point("local", 10.0, 1.0),
            point("quorum", 0.0, 0.5),
            point("quorum", 10.0, 1.0),
        ];
        let text = table(&points, &offsets);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "| level | delay ms | t=0 ms | t=10 ms |");
        assert_eq!(lines[2], "| eventual local | 5 | 0.25 | 1.00 |");
        assert_eq!(lines[3], "| eventual quorum | 5 | 0.50 | 1.00 |");
        assert_eq!(csv(&points).lines().count(), 5);
    }

    #[test]
    fn join_all_keeps_the_order() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let outputs = runtime.block_on(join_all(
            [30u64, 10, 20]
                .into_iter()
                .map(|ms| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    ms
                })
                .collect(),
        ));
        assert_eq!(outputs, vec![30, 10, 20]);
    }
}
