//! Command-line flags. They mirror `capdial bench` (same names, same defaults where both have
//! them) so that `scripts/compare-etcd.sh` passes one set of values to both tools.
//!
//! Every check happens in a clap value parser, so a bad value is a usage error (exit 2).

use clap::{Parser, ValueEnum};
use std::time::Duration;

/// Closed-loop load generator for an etcd v3 cluster, the etcd half of
/// `scripts/compare-etcd.sh`. Each of --concurrency tasks keeps one request outstanding;
/// latency goes into an HDR histogram (µs, 3 significant digits). Requests begun during
/// --warmup are not recorded; none begins after warmup + duration, and the ones in flight
/// then finish and count (as in `capdial bench`). Throughput = successes / (measured window
/// up to the last answer).
#[derive(Debug, Parser)]
#[command(name = "capdial-etcd-bench", version)]
pub struct Args {
    /// etcd client endpoints, HOST:PORT, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793",
        value_parser = parse_endpoint
    )]
    pub endpoints: Vec<String>,

    /// Fraction of operations that are gets (0.0 = all puts, 1.0 = all gets).
    #[arg(long, default_value_t = 0.5, value_parser = parse_ratio)]
    pub read_ratio: f64,

    /// How gets read: linearizable (etcd's default Range, a ReadIndex round through the
    /// leader) or serializable (answered from the local member's state, may be stale).
    #[arg(long, value_enum, default_value_t = ReadLevel::Linearizable)]
    pub read: ReadLevel,

    /// Distinct keys, named k00000000, k00000001, ... (`k` + 8 digits, as capdial names them).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,

    /// Bytes per value written.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,

    /// Which key an operation picks: uniform, or zipfian (YCSB's scrambled zipfian, constant
    /// 0.99, the same hot keys as `capdial bench --distribution zipfian`).
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,

    /// Tasks, each with exactly one request outstanding (closed loop).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,

    /// gRPC (HTTP/2) connections shared by the tasks: task i uses connection i % C.
    /// Default: min(concurrency, 4). More connections than tasks are cut to --concurrency.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub connections: Option<u64>,

    /// Where connections go. `all` (default): connection j goes to endpoint j % n, like
    /// capdial's client spreads its connections over the nodes; puts that reach a follower
    /// are forwarded to the leader by etcd. `leader`: every connection goes to the leader
    /// (found with the Status RPC), what a leader-aware etcd client does. `split`: puts on
    /// connections to the leader, gets on connections spread over all endpoints.
    #[arg(long, value_enum, default_value_t = Target::All)]
    pub target: Target,

    /// Measured time, e.g. 10s, 500ms, 2m (a bare number means seconds). With --preload,
    /// 0s only writes the keys and measures nothing.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Time before the measured window; requests begun in it are not recorded.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Limit on each request; a request that takes longer counts as a `timeout` error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Write every key once (64 tasks) before the warm-up, so that every get finds a value.
    #[arg(long)]
    pub preload: bool,

    /// Seed for key choice, read/write choice and the value bytes (runs repeat).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Print exactly one JSON object on stdout (the schema of `capdial bench --json`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadLevel {
    Linearizable,
    Serializable,
}

impl ReadLevel {
    pub fn name(self) -> &'static str {
        match self {
            ReadLevel::Linearizable => "linearizable",
            ReadLevel::Serializable => "serializable",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Distribution {
    Uniform,
    Zipfian,
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    All,
    Leader,
    Split,
}

impl Args {
    /// The connection count actually used: the flag, or min(concurrency, 4); never more
    /// connections than tasks (an idle connection would only skew the spread over members).
    pub fn connections(&self) -> u64 {
        self.connections.unwrap_or(4).min(self.concurrency).max(1)
    }
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    let ratio: f64 = text.parse().map_err(|_| format!("not a number: {text}"))?;
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(format!("{ratio} is outside 0.0..=1.0"))
    }
}

fn parse_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(text.to_string())
        }
        _ => Err(format!("expected HOST:PORT, got {text:?}")),
    }
}

/// "10s", "500ms", "1.5s", "2m", "1h", or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 10s or 500ms, got {text:?}"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m, h)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn ratios_and_endpoints() {
        assert_eq!(parse_ratio("0"), Ok(0.0));
        assert_eq!(parse_ratio("1.0"), Ok(1.0));
        assert!(parse_ratio("1.1").is_err());
        assert!(parse_endpoint("127.0.0.1:23791").is_ok());
        assert!(parse_endpoint("127.0.0.1").is_err());
    }

    #[test]
    fn connections_default_and_cap() {
        let args = Args::parse_from(["x", "--concurrency", "64"]);
        assert_eq!(args.connections(), 4);
        let args = Args::parse_from(["x", "--concurrency", "2", "--connections", "8"]);
        assert_eq!(args.connections(), 2);
    }
}
