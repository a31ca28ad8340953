//! The result, as the JSON object `capdial bench --json` prints (same field names, so one
//! script reads both) or as a table for a person.

use crate::args::Args;
use crate::run::Outcome;
use crate::stats::{Operation, Recorder};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub target: String,
    pub workload: Workload,
    pub keyspace: Keyspace,
    pub levels: Levels,
    pub elapsed_s: f64,
    pub operations: Vec<OperationReport>,
    pub total: Total,
}

#[derive(Serialize)]
pub struct Workload {
    pub name: &'static str,
    pub read_ratio: f64,
    pub keys: u64,
    pub value_size: usize,
    pub distribution: &'static str,
    pub concurrency: u64,
    pub connections: u64,
    /// Closed loop: no target rate.
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub delay_ms: u64,
}

#[derive(Serialize)]
pub struct Keyspace {
    pub name: &'static str,
    pub mode: &'static str,
    #[serde(rename = "type")]
    pub value_type: Option<&'static str>,
}

#[derive(Serialize)]
pub struct Levels {
    pub read: &'static str,
    /// etcd has one write level (a majority); capdial's eventual write levels do not apply.
    pub write: Option<&'static str>,
}

#[derive(Serialize)]
pub struct OperationReport {
    pub operation: &'static str,
    pub level: &'static str,
    pub ok: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub throughput: f64,
    /// None when nothing succeeded (there is no latency to report).
    pub latency_ms: Option<Latency>,
    /// etcd does not say how far behind a serializable read is.
    pub staleness: Option<()>,
}

#[derive(Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Serialize)]
pub struct Total {
    pub ok: u64,
    pub errors: u64,
    pub throughput: f64,
}

impl Report {
    pub fn new(args: &Args, target: String, outcome: &Outcome) -> Self {
        // As `capdial bench`: successes over the measured window, which ends when the last
        // request begun in it has finished.
        let measured_s = outcome.elapsed.as_secs_f64();
        let mut operations = Vec::new();
        // Only operations that ran (or failed) appear.
        for (operation, level, recorder) in [
            (Operation::Update, "majority", &outcome.update),
            (Operation::Read, args.read.name(), &outcome.read),
        ] {
            if recorder.ok + recorder.errors() > 0 {
                operations.push(operation_report(operation, level, recorder, measured_s));
            }
        }
        let ok = operations.iter().map(|o| o.ok).sum();
        let total = Total {
            ok,
            errors: operations.iter().map(|o| o.errors).sum(),
            throughput: per_second(ok, measured_s),
        };
        Report {
            tool: "etcd",
            target,
            workload: workload(args),
            keyspace: Keyspace {
                name: "etcd",
                mode: "strong",
                value_type: None,
            },
            levels: Levels {
                read: args.read.name(),
                write: None,
            },
            elapsed_s: round(outcome.elapsed.as_secs_f64(), 3),
            operations,
            total,
        }
    }

    /// The table for a person.
    pub fn human(&self) -> String {
        let w = &self.workload;
        let mut out = format!(
            "{}\nread ratio {}, {} keys, {} B values, {}, concurrency {} over {} connections, \
             {} s measured after {} s warm-up (elapsed {:.2} s)\n\n",
            self.target,
            w.read_ratio,
            w.keys,
            w.value_size,
            w.distribution,
            w.concurrency,
            w.connections,
            w.duration_s,
            w.warmup_s,
            self.elapsed_s,
        );
        out += &format!(
            "{:<9} {:<13} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            "operation",
            "level",
            "ok",
            "errors",
            "ops/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p999 ms",
            "max ms",
            "mean ms"
        );
        for op in &self.operations {
            out += &human_row(op);
        }
        out += &format!(
            "{:<23} {:>9} {:>7} {:>10.1}\n",
            "total", self.total.ok, self.total.errors, self.total.throughput
        );
        for op in &self.operations {
            for (kind, count) in &op.errors_by_kind {
                out += &format!("errors: {} {kind} x{count}\n", op.operation);
            }
        }
        out
    }
}

fn workload(args: &Args) -> Workload {
    Workload {
        name: "custom",
        read_ratio: args.read_ratio,
        keys: args.keys,
        value_size: args.value_size,
        distribution: args.distribution.name(),
        concurrency: args.concurrency,
        connections: args.connections(),
        rate: None,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        delay_ms: 0,
    }
}

fn operation_report(
    operation: Operation,
    level: &'static str,
    recorder: &Recorder,
    measured_s: f64,
) -> OperationReport {
    OperationReport {
        operation: operation.name(),
        level,
        ok: recorder.ok,
        errors: recorder.errors(),
        errors_by_kind: recorder.errors_by_kind.clone(),
        throughput: per_second(recorder.ok, measured_s),
        latency_ms: (recorder.ok > 0).then(|| latency(recorder)),
        staleness: None,
    }
}

fn latency(recorder: &Recorder) -> Latency {
    let h = &recorder.latency_us;
    let ms = |us: u64| round(us as f64 / 1000.0, 3);
    Latency {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: round(h.mean() / 1000.0, 3),
    }
}

fn human_row(op: &OperationReport) -> String {
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let l = op.latency_ms.as_ref();
    format!(
        "{:<9} {:<13} {:>9} {:>7} {:>10.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        op.operation,
        op.level,
        op.ok,
        op.errors,
        op.throughput,
        cell(l.map(|l| l.p50)),
        cell(l.map(|l| l.p90)),
        cell(l.map(|l| l.p99)),
        cell(l.map(|l| l.p999)),
        cell(l.map(|l| l.max)),
        cell(l.map(|l| l.mean)),
    )
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        round(count as f64 / seconds, 1)
    } else {
        0.0
    }
}

/// Keeps the JSON short: µs resolution for latencies, 0.1 op/s for throughput.
fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}
