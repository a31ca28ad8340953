//! `capdial bench`: latency at ONE client, one request at a time, for each level a keyspace
//! offers: strong put and get (linearizable, lease), eventual lww put (write local, quorum,
//! all) and get (local). Percentiles come from an HDR histogram in microseconds.
//!
//! With `--cluster` it starts its own local 3-node cluster (the demo's launcher) and stops
//! it at the end; otherwise it measures the cluster behind `--endpoint`.

use super::demo::cluster::{LaunchOptions, LocalCluster};
use super::demo::report::format_table;
use super::demo::retry::{describe, ensure_keyspace, retry_until};
use super::demo::{READY_TIMEOUT, runtime};
use crate::client::conn::{Client, ClientOptions};
use crate::client::protocol::{KeyspaceMode, Operation, ReadLevel, WriteLevel};
use crate::eventual::ValueType;
use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const STRONG_KEYSPACE: &str = "benchstrong";
const EVENTUAL_KEYSPACE: &str = "benchlww";
/// Value size, as in the etcd baseline (`etcd-bench --value-size 256`).
const VALUE_BYTES: usize = 256;
/// Distinct keys, as in the etcd baseline (`k00000..k09999`).
const KEYS: u64 = 10_000;
/// Unrecorded operations before each case (connections, caches, leader discovery).
const WARMUP_OPS_MAX: u64 = 50;
/// How long the first operations may wait for a leader and the catalog to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Highest latency the histogram records (60 s, in microseconds); longer ones saturate.
const LATENCY_US_MAX: u64 = 60_000_000;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A node to measure through (HOST:PORT). Default: $CAPDIAL_ENDPOINT. Ignored with
    /// --cluster.
    #[arg(long, value_name = "HOST:PORT")]
    endpoint: Option<String>,
    /// The directory holding ca.pem and the admin client certificate. Default:
    /// $CAPDIAL_CERTS. Ignored with --cluster.
    #[arg(long, value_name = "DIR")]
    certs: Option<PathBuf>,
    /// Measured operations per case (after a short unrecorded warm-up).
    #[arg(long, default_value_t = 1000)]
    ops: u64,
    /// Upper bound on each case's measured time, in seconds: a case stops at --ops or here.
    #[arg(long, default_value_t = 60)]
    case_seconds: u64,
    /// Start a local 3-node cluster (child processes, temporary directory) and measure it.
    #[arg(long)]
    cluster: bool,
}

/// What one case sends.
#[derive(Clone, Copy, Debug)]
struct Case {
    /// Short name, also the RESULT line's label.
    name: &'static str,
    keyspace: &'static str,
    put: bool,
    read: Option<ReadLevel>,
    write: Option<WriteLevel>,
}

const CASES: [Case; 7] = [
    Case {
        name: "strong-put",
        keyspace: STRONG_KEYSPACE,
        put: true,
        read: None,
        write: None,
    },
    Case {
        name: "strong-get-linearizable",
        keyspace: STRONG_KEYSPACE,
        put: false,
        read: Some(ReadLevel::Linearizable),
        write: None,
    },
    Case {
        name: "strong-get-lease",
        keyspace: STRONG_KEYSPACE,
        put: false,
        read: Some(ReadLevel::Lease),
        write: None,
    },
    Case {
        name: "eventual-put-local",
        keyspace: EVENTUAL_KEYSPACE,
        put: true,
        read: None,
        write: Some(WriteLevel::Local),
    },
    Case {
        name: "eventual-put-quorum",
        keyspace: EVENTUAL_KEYSPACE,
        put: true,
        read: None,
        write: Some(WriteLevel::Quorum),
    },
    Case {
        name: "eventual-put-all",
        keyspace: EVENTUAL_KEYSPACE,
        put: true,
        read: None,
        write: Some(WriteLevel::All),
    },
    Case {
        name: "eventual-get-local",
        keyspace: EVENTUAL_KEYSPACE,
        put: false,
        read: Some(ReadLevel::Local),
        write: None,
    },
];

/// The outcome of one case.
struct Measured {
    case: Case,
    histogram: Histogram<u64>,
    errors: u64,
    elapsed: Duration,
    served_by: BTreeSet<String>,
    last_error: Option<String>,
}

fn key(index: u64) -> Bytes {
    Bytes::from(format!("k{:05}", index % KEYS))
}

fn operation(case: &Case, index: u64, value: &Bytes) -> Operation {
    if case.put {
        Operation::Put {
            key: key(index),
            value: value.clone(),
            context: None,
        }
    } else {
        Operation::Get { key: key(index) }
    }
}

async fn measure(
    client: &Client,
    case: Case,
    ops: u64,
    budget: Duration,
) -> anyhow::Result<Measured> {
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let settle = Instant::now() + SETTLE_TIMEOUT;
    for index in 0..ops.clamp(1, WARMUP_OPS_MAX) {
        let request = || {
            client.execute(
                case.keyspace,
                operation(&case, index, &value),
                case.read,
                case.write,
                None,
            )
        };
        retry_until(settle, request)
            .await
            .map_err(|error| anyhow::anyhow!(describe(&error)))
            .with_context(|| format!("warming up {}", case.name))?;
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3)
        .context("creating the latency histogram")?;
    let mut measured = Measured {
        case,
        histogram: histogram.clone(),
        errors: 0,
        elapsed: Duration::ZERO,
        served_by: BTreeSet::new(),
        last_error: None,
    };
    let started = Instant::now();
    for index in 0..ops {
        if started.elapsed() >= budget {
            break;
        }
        let sent = Instant::now();
        let result = client
            .execute(
                case.keyspace,
                operation(&case, index, &value),
                case.read,
                case.write,
                None,
            )
            .await;
        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok((_, receipt)) => {
                histogram.saturating_record(micros.clamp(1, LATENCY_US_MAX));
                measured.served_by.insert(receipt.node.to_string());
            }
            Err(error) => {
                measured.errors += 1;
                measured.last_error = Some(describe(&error));
            }
        }
    }
    measured.elapsed = started.elapsed();
    measured.histogram = histogram;
    Ok(measured)
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

fn ops_per_second(measured: &Measured) -> f64 {
    let seconds = measured.elapsed.as_secs_f64();
    if seconds > 0.0 {
        measured.histogram.len() as f64 / seconds
    } else {
        0.0
    }
}

/// The human table and the machine-readable `RESULT,capdial,...` lines.
fn render(results: &[Measured]) -> String {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|m| {
            let h = &m.histogram;
            let cell = |micros: u64| {
                if h.is_empty() {
                    "-".to_string()
                } else {
                    ms(micros)
                }
            };
            vec![
                m.case.name.to_string(),
                h.len().to_string(),
                m.errors.to_string(),
                format!("{:.0}", ops_per_second(m)),
                cell(h.value_at_quantile(0.5)),
                cell(h.value_at_quantile(0.9)),
                cell(h.value_at_quantile(0.99)),
                cell(h.max()),
                m.served_by.iter().cloned().collect::<Vec<_>>().join(","),
            ]
        })
        .collect();
    let header = [
        "case",
        "ops",
        "errors",
        "ops/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "served by",
    ];
    let mut out = format_table(&header, &rows);
    out.push_str(
        "\n# RESULT,capdial,case,ok_ops,errors,secs,ops_per_s,p50_us,p90_us,p99_us,max_us\n",
    );
    for m in results {
        let h = &m.histogram;
        out.push_str(&format!(
            "RESULT,capdial,{},{},{},{:.2},{:.1},{},{},{},{}\n",
            m.case.name,
            h.len(),
            m.errors,
            m.elapsed.as_secs_f64(),
            ops_per_second(m),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.max()
        ));
    }
    for m in results.iter().filter(|m| m.errors > 0) {
        let last = m.last_error.as_deref().unwrap_or("-");
        out.push_str(&format!(
            "# {}: {} errors, the last: {last}\n",
            m.case.name, m.errors
        ));
    }
    out
}

fn options_from(args: &BenchArgs) -> anyhow::Result<ClientOptions> {
    let endpoint = match &args.endpoint {
        Some(endpoint) => endpoint.clone(),
        None => std::env::var("CAPDIAL_ENDPOINT")
            .context("--endpoint (or $CAPDIAL_ENDPOINT) is needed without --cluster")?,
    };
    let certs = match &args.certs {
        Some(certs) => certs.clone(),
        None => std::env::var_os("CAPDIAL_CERTS")
            .map(PathBuf::from)
            .context("--certs (or $CAPDIAL_CERTS) is needed without --cluster")?,
    };
    Ok(ClientOptions::new(vec![endpoint], certs))
}

async fn run_cases(client: &Client, args: &BenchArgs) -> anyhow::Result<Vec<Measured>> {
    ensure_keyspace(
        client,
        STRONG_KEYSPACE,
        KeyspaceMode::Strong,
        SETTLE_TIMEOUT,
    )
    .await?;
    let lww = KeyspaceMode::Eventual(ValueType::Lww);
    ensure_keyspace(client, EVENTUAL_KEYSPACE, lww, SETTLE_TIMEOUT).await?;
    let budget = Duration::from_secs(args.case_seconds);
    let mut results = Vec::new();
    for case in CASES {
        eprintln!("capdial bench: {} ...", case.name);
        results.push(measure(client, case, args.ops, budget).await?);
    }
    Ok(results)
}

/// Runs `capdial bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.ops == 0 {
        bail!("--ops must be at least 1");
    }
    let runtime = runtime()?;
    let _guard = runtime.enter();
    let started = Instant::now();
    let cluster = if args.cluster {
        let cluster = LocalCluster::start(&LaunchOptions::default())?;
        cluster.stop_on_signal()?;
        Some(cluster)
    } else {
        None
    };
    let client = match &cluster {
        Some(cluster) => runtime.block_on(cluster.wait_ready(READY_TIMEOUT))?,
        None => runtime
            .block_on(Client::connect(options_from(args)?))
            .map_err(|error| anyhow::anyhow!(describe(&error)))
            .context("connecting")?,
    };
    let target = match &cluster {
        Some(cluster) => format!("a local 3-node cluster in {}", cluster.dir.display()),
        None => args
            .endpoint
            .clone()
            .unwrap_or_else(|| "$CAPDIAL_ENDPOINT".to_string()),
    };
    println!(
        "capdial bench: one client, sequential, {VALUE_BYTES}-byte values over {KEYS} keys, \
         up to {} ops per case, against {target}",
        args.ops
    );
    let results = runtime.block_on(run_cases(&client, args))?;
    print!("{}", render(&results));
    println!("# bench took {:.1}s", started.elapsed().as_secs_f64());
    let failed = results.iter().any(|m| m.histogram.is_empty());
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(name: &'static str, micros: &[u64], errors: u64) -> Measured {
        let mut histogram =
            Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).expect("bounds");
        for value in micros {
            histogram.record(*value).expect("in range");
        }
        Measured {
            case: Case { name, ..CASES[0] },
            histogram,
            errors,
            elapsed: Duration::from_secs(2),
            served_by: ["n1".to_string()].into(),
            last_error: (errors > 0).then(|| "unavailable: no leader known".to_string()),
        }
    }

    #[test]
    fn render_prints_percentiles_and_result_lines() {
        let samples: Vec<u64> = (1..=100).map(|i| i * 100).collect();
        let out = render(&[
            measured("strong-put", &samples, 0),
            measured("eventual-put-all", &[], 3),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("case"), "{out}");
        // 100 samples of 0.1..10 ms: p50 5 ms, max 10 ms, 50 ops/s over 2 s. The histogram
        // reports the highest value equivalent to a bucket (3 significant digits).
        assert!(lines[2].contains("  5.00  "), "{out}");
        assert!(lines[2].contains("  10.01  "), "{out}");
        // No successful operation: no percentiles rather than zeros.
        assert!(
            lines[3].contains("  0       3      0       -       -"),
            "{out}"
        );
        assert!(lines[2].contains("  50  "), "{out}");
        assert!(
            out.contains("RESULT,capdial,strong-put,100,0,2.00,50.0,5003,9007,9903,10007\n"),
            "{out}"
        );
        assert!(
            out.contains("RESULT,capdial,eventual-put-all,0,3,"),
            "{out}"
        );
        assert!(
            out.contains("# eventual-put-all: 3 errors, the last: unavailable"),
            "{out}"
        );
    }

    #[test]
    fn keys_stay_in_the_key_space() {
        assert_eq!(key(7), Bytes::from("k00007"));
        assert_eq!(key(KEYS + 3), Bytes::from("k00003"));
    }
}
