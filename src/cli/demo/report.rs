//! Pure helpers for what the demo and the benchmark print: percentiles, aligned tables and
//! the bookkeeping of the tour's steps (which decides the exit status).

use std::time::Duration;

/// The `percent` percentile (nearest rank) of `sorted`, which must be sorted ascending.
/// `None` for no samples.
pub(crate) fn percentile(sorted: &[Duration], percent: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds with two decimals, as the tables print them.
pub(crate) fn millis(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

/// Latency samples of one row of the demo's table.
#[derive(Clone, Debug, Default)]
pub(crate) struct LatencyRow {
    pub(crate) label: String,
    /// Which node(s) served, as receipts said.
    pub(crate) served_by: String,
    pub(crate) samples: Vec<Duration>,
    pub(crate) errors: usize,
}

/// The demo's latency table: one row per level, p50 and p99 in milliseconds.
pub(crate) fn latency_table(rows: &[LatencyRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut sorted = row.samples.clone();
            sorted.sort_unstable();
            let cell = |percent| percentile(&sorted, percent).map_or("-".to_string(), millis);
            vec![
                row.label.clone(),
                sorted.len().to_string(),
                row.errors.to_string(),
                cell(50.0),
                cell(99.0),
                row.served_by.clone(),
            ]
        })
        .collect();
    format_table(
        &[
            "operation",
            "ops",
            "errors",
            "p50 ms",
            "p99 ms",
            "served by",
        ],
        &body,
    )
}

/// Aligns `rows` under `header`: the first column left-aligned, numbers right-aligned, the
/// last column left-aligned (free text). Two spaces between columns, no trailing spaces.
pub(crate) fn format_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|title| title.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(index, cell)| {
                let width = widths.get(index).copied().unwrap_or(0);
                if index == 0 || index + 1 == columns {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let rule = widths
        .iter()
        .map(|width| "-".repeat(*width))
        .collect::<Vec<_>>()
        .join("  ");
    let mut out = vec![line(header.to_vec()), rule];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n") + "\n"
}

/// One checked step of the tour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) name: String,
    pub(crate) passed: bool,
    pub(crate) detail: String,
}

/// The steps so far. The demo exits 0 only if there is at least one and all passed.
#[derive(Debug, Default)]
pub(crate) struct Steps {
    steps: Vec<Step>,
}

impl Steps {
    /// Records a step and returns the line to print for it.
    pub(crate) fn record(&mut self, name: &str, passed: bool, detail: impl Into<String>) -> String {
        let step = Step {
            name: name.to_string(),
            passed,
            detail: detail.into(),
        };
        let line = format!(
            "  [{}] {}{}",
            if passed { "ok" } else { "FAIL" },
            step.name,
            if step.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", step.detail)
            }
        );
        self.steps.push(step);
        line
    }

    /// True if every step behaved as promised (and there was one).
    pub(crate) fn all_passed(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|step| step.passed)
    }

    /// The steps that failed.
    pub(crate) fn failed(&self) -> Vec<&Step> {
        self.steps.iter().filter(|step| !step.passed).collect()
    }

    /// `N of M steps behaved as promised`.
    pub(crate) fn summary(&self) -> String {
        let passed = self.steps.iter().filter(|step| step.passed).count();
        format!("{passed} of {} steps behaved as promised", self.steps.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values
            .iter()
            .map(|value| Duration::from_millis(*value))
            .collect()
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples = ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&samples, 90.0), Some(Duration::from_millis(9)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&samples, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&ms(&[7]), 99.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn latency_table_aligns_columns_and_sorts_samples() {
        let rows = vec![
            LatencyRow {
                label: "strong put".to_string(),
                served_by: "n2".to_string(),
                samples: ms(&[3, 1, 2]),
                errors: 0,
            },
            LatencyRow {
                label: "eventual sadd --write all".to_string(),
                served_by: "n1".to_string(),
                samples: Vec::new(),
                errors: 20,
            },
        ];
        let table = latency_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("operation "));
        assert!(lines[1].starts_with("-------"));
        // p50 of {1,2,3} is 2 ms, p99 is 3 ms: the samples were sorted.
        assert!(lines[2].contains("  2.00  "), "{table}");
        assert!(lines[2].contains("  3.00  "), "{table}");
        assert!(lines[3].contains("  20  "), "{table}");
        assert!(lines[3].contains(" -  "), "{table}");
        // Every row is as wide as the header up to the last column.
        let last_column = lines[0].find("served by").expect("header");
        assert!(lines.iter().skip(2).all(|line| line.len() >= last_column));
        assert!(lines.iter().all(|line| !line.ends_with(' ')));
    }

    #[test]
    fn steps_pass_only_when_all_passed() {
        let mut steps = Steps::default();
        assert!(!steps.all_passed(), "no steps is not a success");
        let line = steps.record("write to orders", true, "revision 4");
        assert_eq!(line, "  [ok] write to orders: revision 4");
        assert!(steps.all_passed());
        let line = steps.record("n3 refuses", false, "");
        assert_eq!(line, "  [FAIL] n3 refuses");
        assert!(!steps.all_passed());
        assert_eq!(steps.failed().len(), 1);
        assert_eq!(steps.failed()[0].name, "n3 refuses");
        assert_eq!(steps.summary(), "1 of 2 steps behaved as promised");
    }
}
