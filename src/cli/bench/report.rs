//! The files a sweep or a staleness run leaves in its output directory, and what they say
//! about where they came from: the machine (cores, memory, CPU model, kernel), the commit,
//! the exact command and the date.

use super::results::Row;
use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a result came from.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Provenance {
    pub(crate) machine: Machine,
    /// `git rev-parse HEAD` where the command ran, `+dirty` with uncommitted changes.
    pub(crate) commit: String,
    pub(crate) version: String,
    pub(crate) command: String,
    /// UTC, ISO 8601.
    pub(crate) date: String,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) memory_gib: f64,
    pub(crate) cpu: String,
    pub(crate) kernel: String,
}

fn first_line_with(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.split_once(':'))
        .map(|(_, value)| value.trim().to_string())
}

impl Machine {
    pub(crate) fn here() -> Machine {
        let memory_kib: f64 = first_line_with("/proc/meminfo", "MemTotal")
            .and_then(|value| value.trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib: (memory_kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
            cpu: first_line_with("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |text| text.trim().to_string()),
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} cores ({}), {} GiB, Linux {}",
            self.cores, self.cpu, self.memory_gib, self.kernel
        )
    }
}

fn git(args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn commit() -> String {
    match git(&["rev-parse", "HEAD"]) {
        Some(head)
            if git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty()) =>
        {
            format!("{head}+dirty")
        }
        Some(head) => head,
        None => "unknown (not run in a git checkout)".to_string(),
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Now in UTC: `2026-12-02T04:10:13Z`, and the compact form for directory names.
pub(crate) fn utc_now() -> (String, String) {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64);
    let (year, month, day) = civil(seconds.div_euclid(86_400));
    let rest = seconds.rem_euclid(86_400);
    let (hour, minute, second) = (rest / 3600, rest / 60 % 60, rest % 60);
    (
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z"),
        format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}Z"),
    )
}

impl Provenance {
    pub(crate) fn here() -> Provenance {
        Provenance {
            machine: Machine::here(),
            commit: commit(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            date: utc_now().0,
        }
    }

    /// The lines every Markdown file starts with.
    pub(crate) fn markdown(&self) -> String {
        format!(
            "- command: `{}`\n- date: {}\n- commit: {}\n- machine: {}\n",
            self.command,
            self.date,
            self.commit,
            self.machine.describe()
        )
    }
}

/// The output directory: the one given, or `bench-results/KIND-<date>`; created.
pub(crate) fn output_dir(given: Option<&Path>, kind: &str) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("bench-results").join(format!("{kind}-{}", utc_now().1)),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {dir:?}"))?;
    Ok(dir)
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {path:?}"))
}

pub(crate) fn write_json(dir: &Path, name: &str, value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("encoding JSON")?;
    write(dir, name, &(text + "\n"))
}

/// The columns of results.csv, in order.
pub(crate) const CSV_HEADER: &str = "mode,operation,level,concurrency,delay_ms,ok,errors,\
    throughput,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,mean_ms,stale_reads,reads_with_receipt,\
    behind_p99,behind_max,errors_by_kind";

/// One line of results.csv per row. Error kinds are `kind=count` joined by `;`, so no field
/// holds a comma.
pub(crate) fn csv(rows: &[Row]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for row in rows {
        let op = &row.op;
        let latency = &op.latency_ms;
        let (stale, reads, p99, max) = op.staleness.as_ref().map_or(
            (String::new(), String::new(), String::new(), String::new()),
            |s| {
                (
                    s.stale.to_string(),
                    s.reads.to_string(),
                    s.behind_p99.to_string(),
                    s.behind_max.to_string(),
                )
            },
        );
        let kinds: Vec<String> = op
            .errors_by_kind
            .iter()
            .map(|(kind, count)| format!("{kind}={count}"))
            .collect();
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{:.1},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{stale},{reads},{p99},{max},{}\n",
            row.mode,
            op.operation,
            op.level,
            row.concurrency,
            row.delay_ms,
            op.ok,
            op.errors,
            op.throughput,
            latency.p50,
            latency.p90,
            latency.p99,
            latency.p999,
            latency.max,
            latency.mean,
            kinds.join(";")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench::results::{OpSummary, Staleness};

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_423), (2025, 12, 1));
        assert_eq!(civil(-1), (1969, 12, 31));
        assert_eq!(civil(11_016), (2000, 2, 29));
        let (iso, compact) = utc_now();
        assert_eq!(iso.len(), 20);
        assert!(compact.ends_with('Z') && !compact.contains(':'));
    }

    #[test]
    fn csv_has_one_line_per_row_and_no_stray_commas() {
        let mut op = OpSummary {
            operation: "read".into(),
            level: "stale".into(),
            ok: 10,
            ..OpSummary::default()
        };
        op.errors_by_kind.insert("timeout".into(), 2);
        op.errors_by_kind.insert("unavailable".into(), 1);
        op.staleness = Some(Staleness {
            reads: 10,
            stale: 3,
            behind_p50: 0,
            behind_p99: 2,
            behind_max: 4,
        });
        let rows = vec![Row {
            mode: "strong".into(),
            concurrency: 16,
            delay_ms: 20,
            op,
        }];
        let text = csv(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let columns = CSV_HEADER.split(',').count();
        assert_eq!(lines[1].split(',').count(), columns, "{}", lines[1]);
        assert!(lines[1].starts_with("strong,read,stale,16,20,10,0,"));
        assert!(
            lines[1].ends_with(",3,10,2,4,timeout=2;unavailable=1"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn the_machine_is_described() {
        let machine = Machine::here();
        assert!(machine.cores >= 1);
        assert!(machine.describe().contains("cores"));
    }
}
