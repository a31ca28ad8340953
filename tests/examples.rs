//! Runs each program under `examples/` against its own `LocalCluster` and checks that it
//! exits 0 and prints the invariant lines it promises, with numbers that add up.
//!
//! The examples are built by `cargo build --example` first (a no-op when they are fresh:
//! `cargo test --test examples` alone does not build them). Each runs in its own process
//! group with `CAPDIAL_BIN` naming this build's node binary, and is killed with its nodes if
//! it outlives its deadline. The examples run one at a time: each starts three nodes, and
//! three clusters at once on a small machine would test the machine.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How long one example may run: seconds in a debug build, minutes on a busy machine.
const RUN_DEADLINE: Duration = Duration::from_secs(300);
/// How long building the examples may take when they are stale.
const BUILD_DEADLINE: Duration = Duration::from_secs(900);
const EXAMPLES: [&str; 4] = ["shop", "session", "siblings", "watch"];

/// One example at a time (see the module doc).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a finished child printed, and how it ended.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `command` in a new process group, killing the group (the example and the nodes it
/// started) if it has not exited within `deadline`.
fn run(mut command: Command, deadline: Duration) -> Ran {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("starting {command:?}: {error}"));
    let group = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    let stdout = drain(child.stdout.take().expect("piped"));
    let stderr = drain(child.stderr.take().expect("piped"));
    let (done, exited) = mpsc::channel();
    let waiter = std::thread::spawn(move || done.send(child.wait()));
    let status = match exited.recv_timeout(deadline) {
        Ok(status) => status.expect("waiting for the child"),
        Err(_) => {
            kill_group(group);
            let killed = exited.recv().expect("the waiter reports").expect("wait");
            let output = stdout.join().expect("stdout reader");
            panic!(
                "{command:?} ran past {deadline:?} and was killed ({killed}); it printed:\n{output}"
            );
        }
    };
    // The example stops its nodes on exit; this only catches one that it left behind.
    kill_group(group);
    waiter.join().expect("the waiter thread").ok();
    Ran {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

fn kill_group(group: libc::pid_t) {
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory.
    // ESRCH (the group is gone) is fine.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// This build's directory (`target/debug`), from the node binary cargo built for the tests.
fn build_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_capdial"))
        .parent()
        .expect("the binary is in a directory")
}

/// Builds the examples once per test run (a no-op when fresh), in this build's profile.
fn built_examples() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("build")
            .arg("--quiet");
        // Cargo sets these for the test; a dependency's build script (ring's) reruns when
        // CARGO_MANIFEST_DIR changes, so passing them on would make this build and the
        // next `cargo test` rebuild ring and everything above it, each undoing the other.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name == "CARGO_MANIFEST_DIR"
                || name == "CARGO_MANIFEST_PATH"
                || name == "CARGO_CRATE_NAME"
                || name == "CARGO_PRIMARY_PACKAGE"
                || name == "CARGO_TARGET_TMPDIR"
                || name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_")
            {
                command.env_remove(name.as_ref());
            }
        }
        for name in EXAMPLES {
            command.args(["--example", name]);
        }
        if build_dir().ends_with("release") {
            command.arg("--release");
        }
        let built = run(command, BUILD_DEADLINE);
        assert!(
            built.status.success(),
            "building the examples: {}\n{}",
            built.status,
            built.stderr
        );
        build_dir().join("examples")
    })
}

/// Runs example `name` with `args` and returns what it printed; fails unless it exits 0.
fn run_example(name: &str, args: &[&str]) -> String {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let binary = built_examples().join(name);
    let mut command = Command::new(&binary);
    command
        .args(args)
        .env("CAPDIAL_BIN", env!("CARGO_BIN_EXE_capdial"));
    let ran = run(command, RUN_DEADLINE);
    assert!(
        ran.status.success(),
        "{name} exited with {}\nstdout:\n{}\nstderr:\n{}",
        ran.status,
        ran.stdout,
        ran.stderr
    );
    ran.stdout
}

/// The one line that starts with `prefix`.
fn line<'a>(output: &'a str, prefix: &str) -> &'a str {
    let mut lines = output.lines().filter(|line| line.starts_with(prefix));
    let found = lines
        .next()
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{output}"));
    assert!(
        lines.next().is_none(),
        "two lines start {prefix:?}:\n{output}"
    );
    found
}

/// The number after `name=` in `line`.
fn field(line: &str, name: &str) -> u64 {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no {name}=N in {line:?}"))
}

fn assert_checks_passed(output: &str, checks: &[&str]) {
    for check in checks {
        line(output, &format!("check {check}: ok"));
    }
    assert!(!output.contains("FAILED"), "a check failed:\n{output}");
    line(output, "all checks passed");
}

#[test]
fn shop_sells_out_without_overselling_and_converges_after_the_partition() {
    let output = run_example("shop", &[]);
    assert_checks_passed(&output, &["stock", "orders", "carts", "views"]);
    line(&output, "partition after ");
    line(&output, "heal after ");

    // 12 buyers x 8 checkouts for 3 items x 20: every try is accounted for once.
    let checkouts = line(&output, "checkouts: ");
    let ok = field(checkouts, "ok");
    let accounted = ok
        + field(checkouts, "sold_out")
        + field(checkouts, "unavailable")
        + field(checkouts, "gave_up")
        + field(checkouts, "unknown");
    assert_eq!(field(checkouts, "attempts"), 96);
    assert_eq!(accounted, 96, "{checkouts}");
    assert!(ok > 0 && ok <= 60, "{checkouts}");

    // The stock line's own numbers: sold + remaining = 20 per item, and the sold add up to
    // the successful checkouts.
    let stock = line(&output, "check stock: ok");
    let mut sold_total = 0;
    for item in ["book", "pen", "tea"] {
        let part = stock
            .split("; ")
            .find(|part| part.contains(&format!("{item} sold ")))
            .unwrap_or_else(|| panic!("no {item} in {stock:?}"));
        let numbers: Vec<u64> = part
            .split_whitespace()
            .filter_map(|word| word.parse().ok())
            .collect();
        let [sold, remaining, sum] = numbers[..] else {
            panic!("{part:?} is not `ITEM sold S + remaining R = T`");
        };
        assert_eq!(sold + remaining, 20, "{part}");
        assert_eq!(sum, 20, "{part}");
        sold_total += sold;
    }
    assert_eq!(sold_total, ok, "{stock}");
    let orders = line(&output, "check orders: ok");
    assert!(
        orders.contains(&format!("{ok} order records for {ok} successful checkouts")),
        "{orders}"
    );
}

#[test]
fn session_reads_see_their_writes_on_another_node() {
    let output = run_example("session", &["--rounds", "4"]);
    assert_checks_passed(&output, &["session"]);
    line(
        &output,
        "check session: ok — 4/4 reads with the token saw their write",
    );
    let writes: Vec<&str> = output
        .lines()
        .filter(|line| line.starts_with("round "))
        .collect();
    assert_eq!(writes.len(), 4, "{output}");
    assert!(
        writes.iter().all(|line| line.contains("token n1:")),
        "{output}"
    );
    let session_reads: Vec<&str> = output
        .lines()
        .filter(|line| line.trim_start().starts_with("with token"))
        .collect();
    assert_eq!(session_reads.len(), 4, "{output}");
    for read in session_reads {
        assert!(read.contains("(saw it)"), "{read}");
        assert!(read.contains("session read by n2"), "{read}");
    }
}

#[test]
fn siblings_from_both_sides_merge_into_one_value() {
    let output = run_example("siblings", &[]);
    assert_checks_passed(&output, &["siblings", "merged"]);
    line(&output, "partition: n1,n2 | n3");
    let siblings = line(&output, "siblings on n1: ");
    assert!(
        siblings.contains(r#"{"bread,milk", "eggs,milk"}"#),
        "{siblings}"
    );
    for node in ["n1", "n2", "n3"] {
        line(&output, &format!(r#"{node}: {{"bread,eggs,milk"}}"#));
    }
}

#[test]
fn help_says_how_to_run_against_an_existing_cluster() {
    for name in EXAMPLES {
        let output = run_example(name, &["--help"]);
        assert!(output.contains("--endpoint <ADDR>"), "{name}:\n{output}");
        assert!(output.contains("--certs <DIR>"), "{name}:\n{output}");
        assert!(output.contains("admin"), "{name}:\n{output}");
    }
}

#[test]
fn a_watched_view_equals_a_scan_across_a_leader_kill() {
    let output = run_example("watch", &["--writes", "60"]);
    assert_checks_passed(&output, &["order", "view"]);
    line(&output, "killed n");
    let watched = line(&output, "watch: ");
    let events: u64 = watched
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {watched:?}"));
    assert_eq!(events, 60, "every write is one event: {watched}");
}
