//! The child processes of a [`LocalCluster`](super::LocalCluster): where the `capdial`
//! binary is, the ports and the directory layout, starting and killing one node.
//!
//! Layout of a cluster directory: `certs/` (CA, one certificate per node, the `admin` client),
//! `nX/` (node X's redb data), `nX.log` (its stdout and stderr), and `cluster.txt` (the node
//! addresses, so a kept directory restarts on the ports its catalog knows).

use super::LocalClusterError;
use crate::types::NodeId;
use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The environment variable that names the `capdial` binary to run as nodes.
///
/// ```
/// assert_eq!(capdial::local::BINARY_ENV, "CAPDIAL_BIN");
/// ```
pub const BINARY_ENV: &str = "CAPDIAL_BIN";
/// The binary's file name.
const BINARY_NAME: &str = "capdial";
/// File in the cluster directory that remembers the node addresses.
const ADDRESSES_FILE: &str = "cluster.txt";
/// Lines of a node's log shown when it exits early.
const LOG_TAIL_LINES: usize = 20;

/// One node of a local cluster.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cluster = capdial::LocalCluster::start(1).await?;
/// let node = &cluster.nodes()[0];
/// assert_eq!(cluster.status(node.id).await?.address, node.address);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNode {
    /// `n1`, `n2`, ... in the order they were started.
    pub id: NodeId,
    /// `127.0.0.1:PORT`: its QUIC endpoint, for peers and clients alike.
    pub address: String,
}

/// The children, one slot per node (`None`: killed or not started). Shared with whoever
/// must stop them from elsewhere (the CLI's signal watcher). Invariant: after `stop`, every
/// slot is `None` and every child has been waited for.
#[derive(Debug)]
pub(crate) struct Processes {
    children: Mutex<Vec<Option<Child>>>,
    /// A temporary directory to remove once the children are gone.
    remove_dir: Option<PathBuf>,
}

impl Processes {
    pub(crate) fn new(count: usize, remove_dir: Option<PathBuf>) -> Processes {
        Processes {
            children: Mutex::new((0..count).map(|_| None).collect()),
            remove_dir,
        }
    }

    /// A poisoned lock only means another thread panicked while holding it; the children
    /// must still be managed.
    fn children(&self) -> MutexGuard<'_, Vec<Option<Child>>> {
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set(&self, index: usize, child: Child) {
        if let Some(slot) = self.children().get_mut(index) {
            *slot = Some(child);
        }
    }

    pub(crate) fn is_running(&self, index: usize) -> bool {
        self.children().get(index).is_some_and(Option::is_some)
    }

    /// SIGKILLs one child and reaps it; `false` if it was not running.
    pub(crate) fn kill(&self, index: usize) -> bool {
        let Some(mut child) = self.children().get_mut(index).and_then(Option::take) else {
            return false;
        };
        // An error means the child already exited; wait() then reaps it.
        let _ = child.kill();
        let _ = child.wait();
        true
    }

    /// Kills every child, then removes a temporary directory.
    pub(crate) fn stop(&self) {
        let count = self.children().len();
        for index in 0..count {
            self.kill(index);
        }
        if let Some(dir) = &self.remove_dir {
            let _ = fs::remove_dir_all(dir);
        }
    }

    /// The first running child that has exited: its index and exit status.
    pub(crate) fn exited(&self) -> Option<(usize, String)> {
        let mut children = self.children();
        children.iter_mut().enumerate().find_map(|(index, slot)| {
            let status = slot.as_mut()?.try_wait().ok()??;
            Some((index, status.to_string()))
        })
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the `capdial` binary is: `explicit`, else `$CAPDIAL_BIN`, else this executable if it
/// is `capdial`, else a `capdial` beside this executable or one directory up (an integration
/// test runs from `target/PROFILE/deps/`), else this crate's own build
/// (`target/PROFILE/capdial`, for its doc tests), else, when this library was built from a
/// checkout of capdial, that checkout's binary built now (`cargo build --bin capdial`: so
/// `cargo test --doc` and `cargo run --example` work before anything else was built), else
/// `capdial` on the `PATH`.
pub(crate) fn find_binary(explicit: Option<&Path>) -> Result<PathBuf, LocalClusterError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        return Ok(PathBuf::from(path));
    }
    let (built, on_path) = binary_candidates();
    if let Some(found) = built.iter().find(|path| path.is_file()) {
        return Ok(found.clone());
    }
    if let Some(path) = build_in_checkout() {
        return Ok(path);
    }
    on_path
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or(LocalClusterError::BinaryNotFound {
            searched: built.into_iter().chain(on_path).collect(),
        })
}

/// The profile this library was built in, as cargo names its directory.
fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// This crate's checkout, when the library was built from one (not from a registry's copy,
/// where building would write into cargo's cache).
fn own_checkout() -> Option<&'static Path> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let registry = manifest.components().any(|c| c.as_os_str() == "registry");
    (!registry && manifest.join("src/main.rs").is_file()).then_some(manifest)
}

/// The target directory this process was built into: the one its executable sits in
/// (`T/PROFILE/deps/x`, `T/PROFILE/examples/x`), else `$CARGO_TARGET_DIR`, else the
/// checkout's `target`.
fn target_dir(checkout: &Path) -> PathBuf {
    let exe = std::env::current_exe().ok();
    let from_exe = exe.as_deref().and_then(|exe| {
        let kind = exe.parent()?;
        let profile_dir = kind.parent()?;
        let known = matches!(kind.file_name()?.to_str()?, "deps" | "examples");
        (known && profile_dir.file_name()? == profile()).then(|| profile_dir.parent())?
    });
    from_exe
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| checkout.join("target"))
}

/// Builds the checkout's `capdial` in this library's profile, once per process; `None` if
/// there is no checkout or the build failed (cargo's own output says why, on stderr).
fn build_in_checkout() -> Option<PathBuf> {
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.as_ref().filter(|path| path.is_file()) {
        return Some(path.clone());
    }
    let checkout = own_checkout()?;
    let target = target_dir(checkout);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(checkout)
        .args(["build", "--bin", BINARY_NAME, "--target-dir"])
        .arg(&target);
    if profile() == "release" {
        command.arg("--release");
    }
    // What cargo sets for a test or a build script: passed on, a dependency's build script
    // (ring's) would see a changed environment and rebuild, and the next build undo it.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || name == "CARGO_PRIMARY_PACKAGE"
            || name == "CARGO_TARGET_TMPDIR";
        if set_by_cargo {
            command.env_remove(name.as_ref());
        }
    }
    let status = command.status().ok()?;
    let path = target.join(profile()).join(BINARY_NAME);
    (status.success() && path.is_file()).then(|| {
        *built = Some(path.clone());
        path
    })
}

/// Where a built binary may be, and then each directory of the `PATH`.
fn binary_candidates() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if exe.file_stem().is_some_and(|stem| stem == BINARY_NAME) {
            candidates.push(exe.clone());
        }
        for dir in exe.ancestors().skip(1).take(2) {
            candidates.push(dir.join(BINARY_NAME));
        }
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    candidates.push(manifest.join("target").join(profile()).join(BINARY_NAME));
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(BINARY_NAME))
                .collect()
        })
        .unwrap_or_default();
    (candidates, on_path)
}

/// Picks `count` distinct free UDP ports on 127.0.0.1 for nodes to listen on, below the
/// kernel's ephemeral range: the ports a socket bound to port 0 gets (every QUIC client's)
/// come from that range, so a client starting meanwhile, in this process or another, cannot
/// take a port between this pick and the node's bind. (Picked from the ephemeral range, with
/// tests running side by side, a node sometimes found its port taken.) Each port is bound
/// once to see that it is free, then released for the node.
///
/// ```
/// let ports = capdial::local::free_loopback_ports(3)?;
/// assert_eq!(ports.len(), 3);
/// assert!(ports.iter().all(|port| *port >= 10_000));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn free_loopback_ports(count: usize) -> std::io::Result<Vec<u16>> {
    const LOW: u16 = 10_000;
    let high = ephemeral_low()
        .unwrap_or(32_768)
        .saturating_sub(1)
        .max(LOW + 1_000);
    let mut random = crate::rng::SeededRng::new(crate::rng::os_seed());
    let mut held = Vec::new();
    for _ in 0..count.saturating_mul(200) {
        if held.len() == count {
            break;
        }
        let port = random.range_u64(u64::from(LOW), u64::from(high)) as u16;
        if let Ok(socket) = UdpSocket::bind(("127.0.0.1", port)) {
            held.push(socket);
        }
    }
    if held.len() < count {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "found only {} free ports of {count} between {LOW} and {high}",
                held.len()
            ),
        ));
    }
    held.iter()
        .map(|socket| socket.local_addr().map(|address| address.port()))
        .collect()
}

/// The first port of the kernel's ephemeral range (Linux), if it says.
fn ephemeral_low() -> Option<u16> {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// `n1=ADDR,n2=ADDR,...`, the `--initial-cluster` value.
pub(crate) fn initial_cluster(nodes: &[LocalNode]) -> String {
    nodes
        .iter()
        .map(|node| format!("{}={}", node.id, node.address))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses what [`initial_cluster`] wrote (one `id=address` per line or comma): `count` nodes.
pub(crate) fn parse_nodes(text: &str, count: usize) -> Result<Vec<LocalNode>, String> {
    let nodes = text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (id, address) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not id=address"))?;
            let id = NodeId::parse(id).ok_or_else(|| format!("{id:?} is not a node id"))?;
            Ok(LocalNode {
                id,
                address: address.to_string(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if nodes.len() != count {
        return Err(format!("expected {count} nodes, found {}", nodes.len()));
    }
    Ok(nodes)
}

fn fresh_nodes(count: usize) -> std::io::Result<Vec<LocalNode>> {
    let ports = free_loopback_ports(count)?;
    Ok((1..)
        .zip(ports)
        .map(|(number, port)| LocalNode {
            id: NodeId(number),
            address: format!("127.0.0.1:{port}"),
        })
        .collect())
}

/// The nodes of a kept directory, or new ones (remembered in the directory).
pub(crate) fn load_or_pick_nodes(
    dir: &Path,
    count: usize,
) -> Result<Vec<LocalNode>, LocalClusterError> {
    let path = dir.join(ADDRESSES_FILE);
    if path.exists() {
        let text = fs::read_to_string(&path).map_err(io("reading", &path))?;
        return parse_nodes(&text, count)
            .map_err(|reason| LocalClusterError::KeptDirectory { path, reason });
    }
    let nodes = fresh_nodes(count).map_err(io("finding free ports on", Path::new("127.0.0.1")))?;
    fs::write(&path, initial_cluster(&nodes).replace(',', "\n") + "\n")
        .map_err(io("writing", &path))?;
    Ok(nodes)
}

/// A new directory under the system's temporary directory.
pub(crate) fn temporary_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("capdial-local-{}-{nanos:09}", std::process::id()))
}

/// Starts `capdial node` for `node`, its output appended to `DIR/nX.log`.
pub(crate) fn spawn_node(
    exe: &Path,
    node: &LocalNode,
    cluster: &str,
    dir: &Path,
    certs: &Path,
) -> Result<Child, LocalClusterError> {
    let log_path = log_path(dir, node.id);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io("opening", &log_path))?;
    let log_err = log.try_clone().map_err(io("duplicating", &log_path))?;
    Command::new(exe)
        .arg("node")
        .args(["--id", &node.id.to_string(), "--listen", &node.address])
        .args(["--initial-cluster", cluster])
        .arg("--data-dir")
        .arg(dir.join(node.id.to_string()))
        .arg("--certs")
        .arg(certs)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(io("starting", exe))
}

pub(crate) fn log_path(dir: &Path, node: NodeId) -> PathBuf {
    dir.join(format!("{node}.log"))
}

/// The last lines of a node's log.
pub(crate) fn log_tail(dir: &Path, node: NodeId) -> String {
    let log = fs::read_to_string(log_path(dir, node)).unwrap_or_default();
    tail(&log, LOG_TAIL_LINES)
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Wraps an I/O error with what was done to which path.
pub(crate) fn io(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> LocalClusterError {
    let path = path.to_path_buf();
    move |source| LocalClusterError::Io { what, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ports_are_distinct_and_nonzero() {
        let ports = free_loopback_ports(3).expect("loopback sockets bind");
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|port| *port != 0));
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 3, "ports repeat: {ports:?}");
    }

    #[test]
    fn initial_cluster_round_trips_and_rejects_garbage() {
        let nodes = fresh_nodes(3).expect("loopback sockets bind");
        let text = initial_cluster(&nodes);
        assert!(text.starts_with("n1=127.0.0.1:"));
        assert_eq!(text.matches(',').count(), 2);
        assert_eq!(parse_nodes(&text, 3).expect("parses"), nodes);
        assert_eq!(
            parse_nodes(&text.replace(',', "\n"), 3).expect("parses"),
            nodes
        );
        assert!(parse_nodes("n1=127.0.0.1:1", 3).is_err());
        assert!(parse_nodes("n1 127.0.0.1:1,n2=a:1,n3=b:1", 3).is_err());
        assert!(parse_nodes("x1=a:1,n2=a:1,n3=b:1", 3).is_err());
        let five = fresh_nodes(5).expect("loopback sockets bind");
        assert_eq!(
            parse_nodes(&initial_cluster(&five), 5).expect("parses"),
            five
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn an_explicit_binary_wins() {
        let path = Path::new("/opt/capdial/bin/capdial");
        assert_eq!(find_binary(Some(path)).expect("explicit"), path);
    }
}
