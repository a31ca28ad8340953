//! Keeps the cores honest: nothing under `src/raft/`, `src/eventual/`, `src/strong/` (the
//! strong state machine and `Replica`), `src/node/core/` (the node core) or `src/paxos/`, which the
//! simulators drive, may reach for IO, a clock or the process RNG. Those are what make a core untestable in the simulator, and they
//! creep in one convenient call at a time. Comment lines are skipped, so docs may name them.
//! The shells draw OS randomness in one place, `capdial::rng::os_seed`; cores take seeds.

use std::fs;
use std::path::{Path, PathBuf};

const CORES: [&str; 5] = [
    "src/raft",
    "src/eventual",
    "src/strong",
    "src/node/core",
    "src/paxos",
];

const FORBIDDEN: [&str; 17] = [
    "tokio",
    "quinn",
    "redb",
    "Instant::now",
    "SystemTime::now",
    "thread_rng",
    "rand::rng(",
    "OsRng",
    "from_entropy",
    "from_os_rng",
    "os_seed",
    "getrandom",
    "RandomState",
    "std::env",
    "std::fs",
    "std::net",
    "async fn",
];

fn rust_files(directory: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

fn violations_in(text: &str) -> Vec<(usize, &'static str)> {
    let mut violations = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for word in FORBIDDEN {
            if code.contains(word) {
                violations.push((number + 1, word));
            }
        }
    }
    violations
}

#[test]
fn cores_name_no_io_clock_or_process_rng() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for core in CORES {
        rust_files(&root.join(core), &mut files);
    }
    let mut report = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("core source is readable");
        for (line, word) in violations_in(&text) {
            report.push(format!("{}:{line}: names `{word}`", file.display()));
        }
    }
    assert!(
        report.is_empty(),
        "cores must stay sans-IO:\n{}",
        report.join("\n")
    );
}

// The check itself must be able to fail, or it proves nothing.
#[test]
fn the_check_catches_a_clock_read_but_not_a_comment() {
    let source = "// Instant::now is banned here\nlet t = std::time::Instant::now();\n";
    assert_eq!(violations_in(source), vec![(2, "Instant::now")]);
}
