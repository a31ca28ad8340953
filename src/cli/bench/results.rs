//! What a benchmark run measured, in the shapes it is printed and stored in: one
//! [`OpSummary`] per operation type of a run (the `operations` of `capdial bench --json`),
//! one [`Row`] per point of a sweep (results.json, results.csv), and one [`Visibility`] per
//! probe offset of `capdial bench staleness`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Latency percentiles in milliseconds, from an HDR histogram of microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

/// How stale the answers of a read level that may be stale were, by their receipts: entries
/// (strong) or known-missing writes (eventual) the serving node said it was behind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Staleness {
    /// Reads whose receipt said how far behind it was.
    pub(crate) reads: u64,
    /// Of those, reads that were behind by at least one.
    pub(crate) stale: u64,
    pub(crate) behind_p50: u64,
    pub(crate) behind_p99: u64,
    pub(crate) behind_max: u64,
}

/// One operation type of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct OpSummary {
    /// `read`, `update`, `insert`, `scan` or `rmw` (read-modify-write), as YCSB names them.
    pub(crate) operation: String,
    /// The level asked for: a read level, an eventual write level, or `majority` for a strong
    /// write.
    pub(crate) level: String,
    /// Operations answered with success inside the measured window.
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    /// Errors by kind (`unavailable`, `timeout`, ...).
    pub(crate) errors_by_kind: BTreeMap<String, u64>,
    /// Successful operations per second of the measured window.
    pub(crate) throughput: f64,
    pub(crate) latency_ms: Latency,
    /// For read levels that may be stale (`follower`, `stale`, `local`, `session`).
    pub(crate) staleness: Option<Staleness>,
}

/// One point of a sweep: where on the dial, and what one operation type measured there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Row {
    /// `strong` or `eventual`.
    pub(crate) mode: String,
    /// Requests in flight.
    pub(crate) concurrency: u32,
    /// One-way delay added between every two nodes, through the fault path.
    pub(crate) delay_ms: u64,
    #[serde(flatten)]
    pub(crate) op: OpSummary,
}

/// t-visibility at one offset: of the reads made `offset_ms` after a write was acknowledged,
/// at one level, on nodes other than the one that took the write, how many saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Visibility {
    pub(crate) mode: String,
    pub(crate) level: String,
    pub(crate) delay_ms: u64,
    pub(crate) offset_ms: f64,
    /// Probes that were answered.
    pub(crate) probes: u64,
    /// Of those, probes that returned the new value.
    pub(crate) fresh: u64,
    /// `fresh / probes`.
    pub(crate) probability: f64,
    /// Probes that got no answer (an error or a timeout): not counted either way.
    pub(crate) errors: u64,
}

/// The workload of one run, as `--json` reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct WorkloadInfo {
    /// `a`..`f`, or `custom` for `--read-ratio`.
    pub(crate) name: String,
    pub(crate) read_ratio: f64,
    pub(crate) keys: u64,
    pub(crate) value_size: usize,
    pub(crate) distribution: String,
    pub(crate) concurrency: u32,
    pub(crate) connections: u32,
    /// Requests per second of an open loop; `None`: closed loop.
    pub(crate) rate: Option<f64>,
    pub(crate) duration_s: f64,
    pub(crate) warmup_s: f64,
    pub(crate) delay_ms: u64,
}

/// The keyspace a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct KeyspaceInfo {
    pub(crate) name: String,
    /// `strong` or `eventual`.
    pub(crate) mode: String,
    /// The eventual value type (`lww`, `mvreg`, `counter`, `set`).
    #[serde(rename = "type")]
    pub(crate) value_type: Option<String>,
}

/// The levels a run asked for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Levels {
    pub(crate) read: String,
    pub(crate) write: Option<String>,
}

/// Totals over every operation type of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Total {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) throughput: f64,
}

/// What `capdial bench --json` prints: one object per run. `scripts/compare-etcd.sh` reads
/// the same shape from the etcd load generator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunReport {
    pub(crate) tool: String,
    pub(crate) target: String,
    pub(crate) workload: WorkloadInfo,
    pub(crate) keyspace: KeyspaceInfo,
    pub(crate) levels: Levels,
    /// The measured window, in seconds.
    pub(crate) elapsed_s: f64,
    pub(crate) operations: Vec<OpSummary>,
    pub(crate) total: Total,
}
