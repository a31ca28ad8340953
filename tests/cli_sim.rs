//! `capdial sim` as a user runs it: the real binary, its output shape and its exit status.
//! A passing run ends with one summary line per engine and exits 0; a run that finds a
//! violation prints the replay command and exits 1; a bad argument exits 2 with a reason.

use std::process::{Command, Output};

fn capdial(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capdial"))
        .args(args)
        .output()
        .expect("capdial runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_clean_run_prints_one_summary_per_engine_and_exits_zero() {
    let output = capdial(&["sim", "--mode", "all", "--seeds", "4", "--seed", "100"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("strong: 4 seeds, 0 violations"), "{text}");
    assert!(text.contains("eventual: 4 seeds, 0 violations"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn verbose_prints_every_seed_and_a_replay_is_exact() {
    let first = capdial(&[
        "sim", "--mode", "strong", "--seed", "7", "--nodes", "5", "-v",
    ]);
    let again = capdial(&[
        "sim", "--mode", "strong", "--seed", "7", "--nodes", "5", "-v",
    ]);
    assert_eq!(first.status.code(), Some(0));
    assert!(
        stdout(&first).starts_with("ok   strong seed 7: "),
        "{}",
        stdout(&first)
    );
    assert_eq!(
        stdout(&first),
        stdout(&again),
        "the same seed must give the same run"
    );
}

#[test]
fn bad_arguments_exit_two_with_a_reason() {
    let output = capdial(&["sim", "--nodes", "4", "--seeds", "1"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("3 or 5"));
    let unknown = capdial(&[
        "sim",
        "--mode",
        "strong",
        "--seeds",
        "1",
        "--bug",
        "no-such-bug",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[cfg(feature = "sim-bugs")]
#[test]
fn a_planted_bug_fails_the_run_with_a_replay_command() {
    let output = capdial(&[
        "sim", "--mode", "strong", "--seeds", "20", "--bug", "no-dedup",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL strong seed"), "{text}");
    assert!(text.contains("violation: "), "{text}");
    assert!(
        text.contains("replay: capdial sim --mode strong --seed "),
        "{text}"
    );
    assert!(text.contains("--bug no-dedup"), "{text}");
}
