//! `capdial demo --no-shell` walks through the tour on a real 3-node cluster and exits 0 only
//! if every step behaved as promised.

mod common;

use std::time::Duration;

/// The demo on a debug build, two busy cores included.
const DEMO_DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn demo_without_shell_exits_zero() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let run = common::run_capdial(dir.path(), &["demo", "--no-shell"], DEMO_DEADLINE);
    let output = run.output();
    let status = run.status;
    let Some(status) = status else {
        panic!("the demo did not finish within {DEMO_DEADLINE:?}\n{output}");
    };
    assert!(status.success(), "the demo exited with {status}\n{output}");
    assert!(
        output.to_lowercase().contains("unavailable"),
        "the tour shows a strong write refused on the minority side\n{output}"
    );
}
