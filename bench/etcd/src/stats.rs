//! What a task records per operation: successes with their latency, errors by kind.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::Duration;

/// Highest latency the histogram holds (60 s in µs); longer ones are clamped to it.
const LATENCY_US_MAX: u64 = 60_000_000;

/// The two operations this tool sends, by the names `capdial bench` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A put (etcd acks it after a majority fsynced it).
    Update,
    /// A single-key Range.
    Read,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Update => "update",
            Operation::Read => "read",
        }
    }
}

pub struct Recorder {
    pub latency_us: Histogram<u64>,
    pub ok: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Gets that found no value (the key was never written: run with --preload).
    pub misses: u64,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            // 3 significant digits, as `capdial bench`; 1 µs resolution at the low end.
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds"),
            ok: 0,
            errors_by_kind: BTreeMap::new(),
            misses: 0,
        }
    }

    pub fn record_ok(&mut self, latency: Duration) {
        self.ok += 1;
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(us.max(1));
    }

    pub fn record_error(&mut self, kind: String) {
        *self.errors_by_kind.entry(kind).or_insert(0) += 1;
    }

    pub fn errors(&self) -> u64 {
        self.errors_by_kind.values().sum()
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        self.latency_us
            .add(&other.latency_us)
            .expect("same histogram bounds");
        self.ok += other.ok;
        self.misses += other.misses;
        for (kind, count) in &other.errors_by_kind {
            *self.errors_by_kind.entry(kind.clone()).or_insert(0) += count;
        }
    }
}

/// A short, stable name for an error, for `errors_by_kind`: `grpc-<code>` for a gRPC status
/// (e.g. grpc-unavailable, grpc-deadline-exceeded), otherwise the client's error class.
pub fn error_kind(error: &etcd_client::Error) -> String {
    use etcd_client::Error;
    match error {
        Error::GRpcStatus(status) => format!("grpc-{}", kebab(&format!("{:?}", status.code()))),
        Error::TransportError(_) => "transport".into(),
        Error::IoError(_) => "io".into(),
        Error::InvalidArgs(_) | Error::InvalidUri(_) => "invalid-args".into(),
        _ => "other".into(),
    }
}

/// "DeadlineExceeded" -> "deadline-exceeded".
fn kebab(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kebab_case() {
        assert_eq!(kebab("DeadlineExceeded"), "deadline-exceeded");
        assert_eq!(kebab("Unavailable"), "unavailable");
    }

    #[test]
    fn merge_adds_up() {
        let mut a = Recorder::new();
        a.record_ok(Duration::from_micros(100));
        a.record_error("timeout".into());
        let mut b = Recorder::new();
        b.record_ok(Duration::from_micros(300));
        b.record_error("timeout".into());
        b.record_error("grpc-unavailable".into());
        a.merge(&b);
        assert_eq!(a.ok, 2);
        assert_eq!(a.errors(), 3);
        assert_eq!(a.errors_by_kind["timeout"], 2);
        assert_eq!(a.latency_us.max(), 300);
    }
}
