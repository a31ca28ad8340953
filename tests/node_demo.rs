//! `capdial demo --no-shell` walks through the tour on a real 3-node cluster and exits 0 only
//! if every step behaved as promised.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The demo on a debug build, two busy cores included.
const DEMO_DEADLINE: Duration = Duration::from_secs(120);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Kills the demo if the test ends before it does.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_without_shell_exits_zero() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let stdout = dir.path().join("demo.stdout");
    let stderr = dir.path().join("demo.stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_capdial"))
        .args(["demo", "--no-shell"])
        // Whatever the demo keeps in a temporary directory lands in ours.
        .env("TMPDIR", dir.path())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout).expect("stdout file"))
        .stderr(fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("spawn capdial demo");
    let mut guard = Guard(child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("poll the demo") {
            break Some(status);
        }
        if started.elapsed() > DEMO_DEADLINE {
            break None;
        }
        // Polling a child process: there is no async wait with a deadline in std.
        std::thread::sleep(POLL_INTERVAL);
    };
    let output = format!(
        "----- stdout -----\n{}\n----- stderr -----\n{}",
        fs::read_to_string(&stdout).unwrap_or_default(),
        fs::read_to_string(&stderr).unwrap_or_default()
    );
    let Some(status) = status else {
        panic!("the demo did not finish within {DEMO_DEADLINE:?}\n{output}");
    };
    assert!(status.success(), "the demo exited with {status}\n{output}");
    assert!(
        output.to_lowercase().contains("unavailable"),
        "the tour shows a strong write refused on the minority side\n{output}"
    );
}
