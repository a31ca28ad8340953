//! `capdial bench` against real local clusters it starts itself (`--cluster`): the JSON of
//! one short run, and the files of a one-delay sweep and a short staleness run. Shapes,
//! counts and zero errors only: timing belongs to the benchmark, never to a test's verdict.

mod common;

use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A debug build on two busy cores, the cluster's start included.
const RUN_DEADLINE: Duration = Duration::from_secs(180);

/// Runs `capdial ARGS` to the end (bounded) and returns its stdout; panics with both
/// streams if it fails.
fn capdial(dir: &Path, args: &[&str]) -> String {
    let run = common::run_capdial(dir, args, RUN_DEADLINE);
    match run.status {
        Some(status) if status.success() => run.stdout,
        Some(status) => panic!("capdial {args:?} exited with {status}\n{}", run.output()),
        None => panic!(
            "capdial {args:?} did not finish within {RUN_DEADLINE:?}\n{}",
            run.output()
        ),
    }
}

fn number(value: &Value, field: &str) -> f64 {
    value[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {value}"))
}

/// Every operation ran, succeeded every time, and has ordered percentiles.
fn check_operations(report: &Value, expected: &[(&str, &str)]) {
    let operations = report["operations"].as_array().expect("operations");
    let found: Vec<(&str, &str)> = operations
        .iter()
        .map(|op| {
            (
                op["operation"].as_str().expect("operation"),
                op["level"].as_str().expect("level"),
            )
        })
        .collect();
    assert_eq!(found, expected, "{report}");
    for op in operations {
        assert!(number(op, "ok") > 0.0, "{op}");
        assert_eq!(number(op, "errors"), 0.0, "{op}");
        assert!(number(op, "throughput") > 0.0, "{op}");
        let latency = &op["latency_ms"];
        let percentiles: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
            .iter()
            .map(|field| number(latency, field))
            .collect();
        assert!(percentiles[0] > 0.0, "{op}");
        assert!(
            percentiles.windows(2).all(|pair| pair[0] <= pair[1]),
            "{op}"
        );
    }
    let total = &report["total"];
    let sum: f64 = operations.iter().map(|op| number(op, "ok")).sum();
    assert_eq!(number(total, "ok"), sum, "{report}");
    assert_eq!(number(total, "errors"), 0.0, "{report}");
}

#[test]
fn one_run_prints_json_with_counts_and_no_errors() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let common = [
        "bench",
        "--cluster",
        "--keys",
        "200",
        "--concurrency",
        "8",
        "--duration",
        "1s",
        "--warmup",
        "300ms",
        "--json",
    ];
    let strong = capdial(dir.path(), &[&common[..], &["--workload", "a"]].concat());
    let report: Value = serde_json::from_str(strong.trim()).expect("one JSON object");
    assert_eq!(report["tool"], "capdial");
    assert_eq!(report["keyspace"]["mode"], "strong");
    assert_eq!(report["workload"]["name"], "a");
    assert_eq!(number(&report["workload"], "concurrency"), 8.0);
    assert_eq!(number(&report["workload"], "connections"), 4.0);
    check_operations(&report, &[("read", "linearizable"), ("update", "majority")]);

    // An eventual keyspace at quorum writes and local reads, whose receipts say how far
    // behind they were.
    let eventual = capdial(
        dir.path(),
        &[
            &common[..],
            &[
                "--mode",
                "eventual",
                "--read-ratio",
                "0.5",
                "--write",
                "quorum",
            ],
        ]
        .concat(),
    );
    let report: Value = serde_json::from_str(eventual.trim()).expect("one JSON object");
    assert_eq!(report["keyspace"]["type"], "lww");
    check_operations(&report, &[("read", "local"), ("update", "quorum")]);
    let staleness = &report["operations"][0]["staleness"];
    assert_eq!(
        number(staleness, "reads"),
        number(&report["operations"][0], "ok"),
        "{report}"
    );
}

#[test]
fn a_level_the_keyspace_does_not_offer_is_refused_before_any_load() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let output = Command::new(env!("CARGO_BIN_EXE_capdial"))
        .args(["bench", "--endpoint", "127.0.0.1:1", "--certs"])
        .arg(dir.path())
        .args(["--mode", "strong", "--read", "quorum"])
        .output()
        .expect("run capdial bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("quorum does not apply to strong"),
        "{stderr}"
    );
}

#[test]
fn a_sweep_writes_every_level_and_its_files() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = dir.path().join("sweep");
    let out_arg = out.to_str().expect("utf-8 path");
    capdial(
        dir.path(),
        &[
            "bench",
            "sweep",
            "--cluster",
            "--concurrency",
            "2",
            "--delay",
            "0ms",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--keys",
            "100",
            "--failover",
            "--failover-window",
            "500ms",
            "--out",
            out_arg,
        ],
    );
    let results: Value =
        serde_json::from_str(&fs::read_to_string(out.join("results.json")).expect("results.json"))
            .expect("results.json is JSON");
    // The failover rows: which node went and how writes fared; the stall is a measurement,
    // reported, never judged here.
    let failover: Value = serde_json::from_str(
        &fs::read_to_string(out.join("failover.json")).expect("failover.json"),
    )
    .expect("failover.json is JSON");
    let modes: Vec<&str> = failover["rows"]
        .as_array()
        .expect("failover rows")
        .iter()
        .map(|row| row["mode"].as_str().expect("mode"))
        .collect();
    assert_eq!(modes, ["strong", "paxos"]);
    for row in failover["rows"].as_array().expect("rows") {
        assert!(number(row, "writes_ok") > 0.0, "{row}");
        assert!(
            row["killed"].as_str().expect("killed").starts_with('n'),
            "{row}"
        );
    }
    assert!(
        results["provenance"]["machine"]["cores"]
            .as_u64()
            .expect("cores")
            >= 1
    );
    let rows = results["rows"].as_array().expect("rows");
    let points: Vec<String> = rows
        .iter()
        .map(|row| {
            format!("{} {} {}", row["mode"], row["operation"], row["level"]).replace('"', "")
        })
        .collect();
    let expected = [
        "strong update majority",
        "strong read linearizable",
        "strong read lease",
        "strong read follower",
        "strong read stale",
        "eventual update local",
        "eventual update quorum",
        "eventual update all",
        "eventual read local",
        "eventual read session",
        "eventual read quorum",
        "paxos update majority",
        "paxos read linearizable",
    ];
    assert_eq!(points, expected);
    for row in rows {
        assert!(number(row, "ok") > 0.0, "{row}");
        assert_eq!(number(row, "errors"), 0.0, "{row}");
    }
    let csv = fs::read_to_string(out.join("results.csv")).expect("results.csv");
    assert_eq!(csv.lines().count(), expected.len() + 1, "{csv}");
    let summary = fs::read_to_string(out.join("summary.md")).expect("summary.md");
    assert!(summary.contains("eventual get session"), "{summary}");
    for plot in [
        "price-of-consistency.svg",
        "latency-0ms.svg",
        "throughput-0ms.svg",
    ] {
        let svg = fs::read_to_string(out.join(plot)).expect(plot);
        assert!(svg.contains("<svg") && svg.contains("strong put"), "{plot}");
    }
}

#[test]
fn staleness_measures_visibility_per_level() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = dir.path().join("staleness");
    let out_arg = out.to_str().expect("utf-8 path");
    capdial(
        dir.path(),
        &[
            "bench",
            "staleness",
            "--cluster",
            "--delay",
            "0ms",
            "--offsets",
            "0ms,50ms",
            "--trials",
            "2",
            "--out",
            out_arg,
        ],
    );
    let file: Value = serde_json::from_str(
        &fs::read_to_string(out.join("visibility.json")).expect("visibility.json"),
    )
    .expect("visibility.json is JSON");
    let points = file["points"].as_array().expect("points");
    // Four levels, two offsets; each probe reads on the two nodes that did not take the write.
    assert_eq!(points.len(), 8, "{file}");
    for point in points {
        // Every probe is counted once: answered (seen or not) or failed.
        assert_eq!(
            number(point, "probes") + number(point, "errors"),
            4.0,
            "{point}"
        );
        assert!(number(point, "probes") > 0.0, "{point}");
        let probability = number(point, "probability");
        assert!((0.0..=1.0).contains(&probability), "{point}");
    }
    // A follower read asks the leader for a read index: it always sees an acknowledged write.
    let follower = points.iter().filter(|point| point["level"] == "follower");
    for point in follower {
        assert_eq!(number(point, "probability"), 1.0, "{point}");
    }
    let svg = fs::read_to_string(out.join("visibility.svg")).expect("visibility.svg");
    assert!(svg.contains("<svg"));
}
