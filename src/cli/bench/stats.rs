//! What the load generator records while it runs: per operation type, an HDR histogram of
//! latencies, errors by kind, and how far behind the answers of possibly stale reads were.
//! Tasks record into one [`Recorder`] behind a short lock; a progress line and the final
//! [`OpSummary`]s are read from it.

use super::results::{Latency, OpSummary, Staleness};
use super::workload::OpKind;
use crate::client::conn::ConnError;
use crate::protocol::{ClientError, Receipt};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::Duration;

/// Highest latency the histograms record (60 s, in microseconds); longer ones saturate.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Highest "entries behind" recorded; more saturate.
const BEHIND_MAX: u64 = 1 << 40;

fn histogram(high: u64) -> Histogram<u64> {
    Histogram::new_with_bounds(1, high, 3).expect("invariant: 1 < high and 3 significant digits")
}

/// One operation type's record.
#[derive(Clone, Debug)]
pub(crate) struct OpRecord {
    /// The level its requests asked for, as `--json` names it.
    pub(crate) level: String,
    latencies: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    /// Entries (or writes) behind, for answers whose receipt said.
    behind: Histogram<u64>,
    stale: u64,
}

impl OpRecord {
    fn new(level: String) -> OpRecord {
        OpRecord {
            level,
            latencies: histogram(LATENCY_US_MAX),
            // Zero is a legal count: the histogram starts at 1, so counts are stored plus one.
            behind: histogram(BEHIND_MAX),
            errors: BTreeMap::new(),
            stale: 0,
        }
    }

    pub(crate) fn ok(&self) -> u64 {
        self.latencies.len()
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.values().sum()
    }

    fn summary(&self, operation: OpKind, window: Duration) -> OpSummary {
        let seconds = window.as_secs_f64();
        OpSummary {
            operation: operation.name().to_string(),
            level: self.level.clone(),
            ok: self.ok(),
            errors: self.errors(),
            errors_by_kind: self.errors.clone(),
            throughput: if seconds > 0.0 {
                self.ok() as f64 / seconds
            } else {
                0.0
            },
            latency_ms: latency(&self.latencies),
            staleness: (!self.behind.is_empty()).then(|| Staleness {
                reads: self.behind.len(),
                stale: self.stale,
                behind_p50: self.behind.value_at_quantile(0.5).saturating_sub(1),
                behind_p99: self.behind.value_at_quantile(0.99).saturating_sub(1),
                behind_max: self.behind.max().saturating_sub(1),
            }),
        }
    }
}

fn latency(histogram: &Histogram<u64>) -> Latency {
    if histogram.is_empty() {
        return Latency::default();
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    Latency {
        p50: ms(histogram.value_at_quantile(0.5)),
        p90: ms(histogram.value_at_quantile(0.9)),
        p99: ms(histogram.value_at_quantile(0.99)),
        p999: ms(histogram.value_at_quantile(0.999)),
        max: ms(histogram.max()),
        mean: histogram.mean() / 1000.0,
    }
}

fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, LATENCY_US_MAX)
}

/// Everything one run (or one task) recorded, by operation type.
#[derive(Clone, Debug, Default)]
pub(crate) struct Recorder {
    ops: BTreeMap<OpKind, OpRecord>,
}

impl Recorder {
    /// A recorder for these operation types and the levels they ask for.
    pub(crate) fn new(levels: impl IntoIterator<Item = (OpKind, String)>) -> Recorder {
        Recorder {
            ops: levels
                .into_iter()
                .map(|(kind, level)| (kind, OpRecord::new(level)))
                .collect(),
        }
    }

    fn record(&mut self, kind: OpKind) -> &mut OpRecord {
        self.ops
            .entry(kind)
            .or_insert_with(|| OpRecord::new(String::new()))
    }

    /// A success after `latency`; `receipt` tells how far behind the answer was, if at all.
    pub(crate) fn success(&mut self, kind: OpKind, latency: Duration, receipt: Option<&Receipt>) {
        let record = self.record(kind);
        record.latencies.saturating_record(micros(latency));
        if let Some(behind) = receipt.and_then(|receipt| receipt.behind) {
            record
                .behind
                .saturating_record(behind.saturating_add(1).min(BEHIND_MAX));
            record.stale += u64::from(behind > 0);
        }
    }

    pub(crate) fn failure(&mut self, kind: OpKind, error: &str) {
        *self
            .record(kind)
            .errors
            .entry(error.to_string())
            .or_default() += 1;
    }

    pub(crate) fn ok(&self) -> u64 {
        self.ops.values().map(OpRecord::ok).sum()
    }

    pub(crate) fn errors(&self) -> u64 {
        self.ops.values().map(OpRecord::errors).sum()
    }

    /// The highest p99 of any operation type, in milliseconds, for the progress line.
    pub(crate) fn p99_ms(&self) -> f64 {
        self.ops
            .values()
            .filter(|record| !record.latencies.is_empty())
            .map(|record| record.latencies.value_at_quantile(0.99) as f64 / 1000.0)
            .fold(0.0, f64::max)
    }

    /// One summary per operation type that ran or was planned, over a measured `window`.
    pub(crate) fn summaries(&self, window: Duration) -> Vec<OpSummary> {
        self.ops
            .iter()
            .map(|(kind, record)| record.summary(*kind, window))
            .collect()
    }
}

/// A short name for what went wrong, to count errors by: the node's typed refusal
/// (`unavailable`, `not-leader`, `timeout`, ...) or the library's (`connect`, `lost`, ...).
pub(crate) fn error_kind(error: &ConnError) -> String {
    match error {
        ConnError::Client(error) => kebab(variant(error)),
        ConnError::Timeout { .. } => "timeout".to_string(),
        other => kebab(&format!("{other:?}")),
    }
}

fn variant(error: &ClientError) -> &'static str {
    // Debug output starts with the variant's name; keep a static list of the ones that
    // matter under load so the counts read the same in every run.
    match error {
        ClientError::Unavailable { .. } => "Unavailable",
        ClientError::NotLeader { .. } => "NotLeader",
        ClientError::Timeout { .. } => "Timeout",
        ClientError::NotEnoughReplicas { .. } => "NotEnoughReplicas",
        ClientError::Backpressure => "Backpressure",
        ClientError::QuorumNotReached { .. } => "QuorumNotReached",
        ClientError::SessionNotSeen => "SessionNotSeen",
        ClientError::AlreadyAcknowledged { .. } => "AlreadyAcknowledged",
        ClientError::SessionExpired { .. } => "SessionExpired",
        ClientError::TooManySessions { .. } => "TooManySessions",
        ClientError::SessionFull { .. } => "SessionFull",
        ClientError::SessionsFull { .. } => "SessionsFull",
        ClientError::UnknownKeyspace { .. } => "UnknownKeyspace",
        _ => "Refused",
    }
}

/// `NotEnoughReplicas { .. }` → `not-enough-replicas`.
fn kebab(debug: &str) -> String {
    let name = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("error");
    let mut out = String::new();
    for (index, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && index > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Position, Served};
    use crate::types::NodeId;

    fn receipt(behind: Option<u64>) -> Receipt {
        Receipt {
            level: Served::Committed,
            node: NodeId(1),
            position: Position::Eventual {
                token: None,
                stamp: None,
                vector: Vec::new(),
            },
            behind,
        }
    }

    #[test]
    fn summaries_have_percentiles_errors_and_staleness() {
        let mut one = Recorder::new([
            (OpKind::Read, "stale".to_string()),
            (OpKind::Update, "majority".to_string()),
        ]);
        for i in 1..=100u64 {
            one.success(
                OpKind::Read,
                Duration::from_micros(i * 100),
                Some(&receipt(Some(i % 5))),
            );
        }
        one.failure(OpKind::Update, "unavailable");
        one.failure(OpKind::Update, "unavailable");
        one.success(
            OpKind::Update,
            Duration::from_millis(2),
            Some(&receipt(None)),
        );
        assert_eq!((one.ok(), one.errors()), (101, 2));
        let summaries = one.summaries(Duration::from_secs(2));
        let read = &summaries[0];
        assert_eq!(
            (read.operation.as_str(), read.level.as_str()),
            ("read", "stale")
        );
        assert_eq!(read.throughput, 50.0);
        assert!((read.latency_ms.p50 - 5.0).abs() < 0.01, "{read:?}");
        assert!((read.latency_ms.max - 10.0).abs() < 0.02, "{read:?}");
        let staleness = read
            .staleness
            .as_ref()
            .expect("stale reads said how far behind");
        assert_eq!(
            (staleness.reads, staleness.stale, staleness.behind_max),
            (100, 80, 4)
        );
        let update = &summaries[1];
        assert_eq!(update.errors_by_kind["unavailable"], 2);
        assert_eq!(update.staleness, None);
        assert!((one.p99_ms() - 9.9).abs() < 0.02);
    }

    #[test]
    fn error_kinds_are_short_names() {
        let unavailable = ConnError::Client(ClientError::Unavailable {
            reason: crate::protocol::UnavailableReason::NoQuorum,
        });
        assert_eq!(error_kind(&unavailable), "unavailable");
        let replicas = ConnError::Client(ClientError::NotEnoughReplicas {
            acked: 1,
            needed: 2,
        });
        assert_eq!(error_kind(&replicas), "not-enough-replicas");
        let lost = ConnError::Lost {
            endpoint: "x".to_string(),
            reason: "y".to_string(),
            may_have_applied: true,
        };
        assert_eq!(error_kind(&lost), "lost");
        assert_eq!(
            error_kind(&ConnError::Timeout {
                may_have_applied: false,
                resend: None,
            }),
            "timeout"
        );
    }
}
