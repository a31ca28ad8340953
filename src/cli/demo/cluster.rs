//! A local 3-node cluster on loopback, run as child processes of this binary: what
//! `capdial demo` and `capdial bench --cluster` talk to.
//!
//! ```text
//! LocalCluster::start ── free ports, certificates, `capdial node` x3 (logs in DIR/nX.log)
//!        │
//! wait_ready ────────── every node answers Status and knows a catalog leader (deadline)
//!        │
//! drop / signal ─────── SIGKILL the children, wait for them, remove a temporary directory
//! ```
//!
//! The children are killed when the cluster is dropped (also on an error path or a panic) and
//! by a signal watcher on Ctrl-C / SIGTERM, which then exits the process. SIGKILL is enough:
//! a node loses nothing it acknowledged, and `--keep` leaves the data for a restart.

use super::retry::{RETRY_PAUSE, client_error};
use crate::client::conn::{Client, ClientOptions};
use crate::net::tls;
use crate::protocol::admin::{AdminAnswer, AdminRequest, NodeStatus};
use anyhow::{Context, bail};
use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Nodes in a local cluster unless asked otherwise (`capdial bench --cluster --nodes 5`).
pub(crate) const NODE_COUNT: usize = 3;
/// The client certificate the demo, the shell and the benchmark use.
pub(crate) const CLIENT_NAME: &str = "admin";
/// How long a client request may take before the library gives up (it retries inside).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// File in the cluster directory that remembers the node addresses, so a kept directory
/// (`--data-dir`) restarts with the same ports its catalog knows.
const ADDRESSES_FILE: &str = "cluster.txt";
/// Lines of a node's log shown when it exits early.
const LOG_TAIL_LINES: usize = 20;

/// Where the cluster lives, how many nodes it has and whether it outlives the process.
#[derive(Clone, Debug)]
pub(crate) struct LaunchOptions {
    /// Use (and keep) this directory; otherwise a fresh temporary one.
    pub(crate) data_dir: Option<PathBuf>,
    /// Keep a temporary directory after exit.
    pub(crate) keep: bool,
    /// Nodes to start; a kept directory must have been made with as many.
    pub(crate) nodes: usize,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            data_dir: None,
            keep: false,
            nodes: NODE_COUNT,
        }
    }
}

/// One node of the local cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LocalNode {
    /// `n1`, `n2`, ...
    pub(crate) id: String,
    /// `127.0.0.1:PORT`.
    pub(crate) address: String,
}

/// A running local cluster. Dropping it stops the nodes.
pub(crate) struct LocalCluster {
    pub(crate) nodes: Vec<LocalNode>,
    /// Holds `certs/`, one data directory per node and their logs.
    pub(crate) dir: PathBuf,
    pub(crate) certs: PathBuf,
    processes: Arc<Processes>,
}

/// The children, shared between the cluster and the signal watcher. Invariant: after
/// `stop`, `children` is empty and every child has been waited for.
struct Processes {
    children: Mutex<Vec<Child>>,
    /// A temporary directory to remove once the children are gone.
    remove_dir: Option<PathBuf>,
}

impl Processes {
    fn stop(&self) {
        // A poisoned lock only means another thread panicked while holding it; the children
        // must still be killed.
        let mut children = self
            .children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for child in children.iter_mut() {
            // Errors mean the child already exited; wait() then reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
        let had_children = !children.is_empty();
        children.clear();
        if had_children && let Some(dir) = &self.remove_dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Picks `count` distinct free UDP ports on 127.0.0.1: binds that many sockets to port 0,
/// reads the ports, and releases them. Another process could take a port in between; the
/// node then fails to bind and the launcher reports it.
pub(crate) fn pick_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let sockets = (0..count)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    sockets
        .iter()
        .map(|socket| socket.local_addr().map(|address| address.port()))
        .collect()
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
pub(crate) fn parse_nodes(text: &str, count: usize) -> anyhow::Result<Vec<LocalNode>> {
    let nodes = text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (id, address) = item
                .split_once('=')
                .with_context(|| format!("{item:?} is not id=address"))?;
            Ok(LocalNode {
                id: id.to_string(),
                address: address.to_string(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if nodes.len() != count {
        bail!("expected {count} nodes, found {}", nodes.len());
    }
    Ok(nodes)
}

fn fresh_nodes(count: usize) -> anyhow::Result<Vec<LocalNode>> {
    let ports = pick_ports(count).context("finding free ports on 127.0.0.1")?;
    Ok(ports
        .iter()
        .enumerate()
        .map(|(index, port)| LocalNode {
            id: format!("n{}", index + 1),
            address: format!("127.0.0.1:{port}"),
        })
        .collect())
}

/// The nodes of a kept directory, or new ones (remembered in the directory).
fn load_or_pick_nodes(dir: &Path, count: usize) -> anyhow::Result<Vec<LocalNode>> {
    let path = dir.join(ADDRESSES_FILE);
    if path.exists() {
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?;
        return parse_nodes(&text, count).with_context(|| format!("parsing {path:?}"));
    }
    let nodes = fresh_nodes(count)?;
    fs::write(&path, initial_cluster(&nodes).replace(',', "\n") + "\n")
        .with_context(|| format!("writing {path:?}"))?;
    Ok(nodes)
}

fn temporary_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("capdial-demo-{}-{nanos:09}", std::process::id()))
}

fn prepare_certs(certs: &Path, nodes: &[LocalNode]) -> anyhow::Result<()> {
    if certs.join("ca.pem").exists() {
        return Ok(());
    }
    let ids: Vec<String> = nodes.iter().map(|node| node.id.clone()).collect();
    tls::init(certs, &ids, &[CLIENT_NAME.to_string()])
        .with_context(|| format!("creating certificates in {certs:?}"))
}

fn spawn_node(
    exe: &Path,
    node: &LocalNode,
    cluster: &str,
    dir: &Path,
    certs: &Path,
) -> anyhow::Result<Child> {
    let log_path = dir.join(format!("{}.log", node.id));
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {log_path:?}"))?;
    let log_err = log.try_clone().context("duplicating the log handle")?;
    Command::new(exe)
        .arg("node")
        .args(["--id", &node.id, "--listen", &node.address])
        .args(["--initial-cluster", cluster])
        .arg("--data-dir")
        .arg(dir.join(&node.id))
        .arg("--certs")
        .arg(certs)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .with_context(|| format!("starting {exe:?} node --id {}", node.id))
}

impl LocalCluster {
    /// Creates the directory, certificates and ports, and starts the nodes. Returns once the
    /// processes run; [`LocalCluster::wait_ready`] waits until they serve.
    pub(crate) fn start(options: &LaunchOptions) -> anyhow::Result<LocalCluster> {
        let (dir, temporary) = match &options.data_dir {
            Some(dir) => (dir.clone(), false),
            None => (temporary_dir(), true),
        };
        fs::create_dir_all(&dir).with_context(|| format!("creating {dir:?}"))?;
        let processes = Arc::new(Processes {
            children: Mutex::new(Vec::new()),
            remove_dir: (temporary && !options.keep).then(|| dir.clone()),
        });
        let nodes = load_or_pick_nodes(&dir, options.nodes)?;
        let certs = dir.join("certs");
        prepare_certs(&certs, &nodes)?;
        let exe = std::env::current_exe().context("finding this executable")?;
        let cluster = initial_cluster(&nodes);
        for node in &nodes {
            let child = spawn_node(&exe, node, &cluster, &dir, &certs)?;
            processes
                .children
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(child);
        }
        Ok(LocalCluster {
            nodes,
            dir,
            certs,
            processes,
        })
    }

    /// Client options for all nodes of this cluster.
    pub(crate) fn client_options(&self) -> ClientOptions {
        let endpoints = self.nodes.iter().map(|node| node.address.clone()).collect();
        let mut options = ClientOptions::new(endpoints, self.certs.clone());
        options.name = CLIENT_NAME.to_string();
        options.timeout = CLIENT_TIMEOUT;
        options
    }

    /// The address of node `id` (`n1`...).
    pub(crate) fn address_of(&self, id: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .map(|node| node.address.as_str())
    }

    /// Stops the nodes and exits the process on Ctrl-C or SIGTERM. Call inside the runtime.
    pub(crate) fn stop_on_signal(&self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("watching SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
        let processes = Arc::clone(&self.processes);
        tokio::spawn(async move {
            let code = tokio::select! {
                _ = interrupt.recv() => 130,
                _ = terminate.recv() => 143,
            };
            processes.stop();
            eprintln!("\ncapdial: interrupted; the cluster is stopped");
            std::process::exit(code);
        });
        Ok(())
    }

    /// The first node process that exited, with the tail of its log.
    fn exited_node(&self) -> Option<String> {
        let mut children = self
            .processes
            .children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (node, child) in self.nodes.iter().zip(children.iter_mut()) {
            if let Ok(Some(status)) = child.try_wait() {
                let log = fs::read_to_string(self.dir.join(format!("{}.log", node.id)))
                    .unwrap_or_default();
                return Some(format!(
                    "node {} exited ({status}); last lines of its log:\n{}",
                    node.id,
                    tail(&log, LOG_TAIL_LINES)
                ));
            }
        }
        None
    }

    /// Connects a client and waits until every node answers `Status` and knows a leader of
    /// the catalog (group 0), so keyspaces can be created. Fails early if a node exits.
    pub(crate) async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<Client> {
        let deadline = Instant::now() + timeout;
        let client = loop {
            if let Some(exited) = self.exited_node() {
                bail!(exited);
            }
            match Client::connect(self.client_options()).await {
                Ok(client) => break client,
                Err(error) if Instant::now() >= deadline => {
                    return Err(error).context("connecting to the local cluster");
                }
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        };
        for node in &self.nodes {
            loop {
                if let Some(exited) = self.exited_node() {
                    bail!(exited);
                }
                let status = node_status(&client, &node.address).await;
                match status {
                    Ok(status) if catalog_leader(&status).is_some() => break,
                    _ if Instant::now() >= deadline => bail!(
                        "node {} not ready within {timeout:?} (last answer: {status:?}); logs in {:?}",
                        node.id,
                        self.dir
                    ),
                    _ => tokio::time::sleep(RETRY_PAUSE).await,
                }
            }
        }
        Ok(client)
    }
}

/// A node's status, asked of that node.
pub(crate) async fn node_status(client: &Client, address: &str) -> anyhow::Result<NodeStatus> {
    match client.admin_at(address, AdminRequest::Status).await {
        Ok(AdminAnswer::Status(status)) => Ok(*status),
        Ok(other) => bail!("unexpected answer to Status: {other:?}"),
        Err(error) => {
            let message = match client_error(&error) {
                Some(client_error) => client_error.to_string(),
                None => format!("{error:#}"),
            };
            bail!("status of {address}: {message}")
        }
    }
}

/// The catalog's leader as `status` knows it.
pub(crate) fn catalog_leader(status: &NodeStatus) -> Option<crate::types::NodeId> {
    status.strong.first().and_then(|group| group.leader)
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ports_are_distinct_and_nonzero() {
        let ports = pick_ports(NODE_COUNT).expect("loopback sockets bind");
        assert_eq!(ports.len(), NODE_COUNT);
        assert!(ports.iter().all(|port| *port != 0));
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), NODE_COUNT, "ports repeat: {ports:?}");
    }

    #[test]
    fn initial_cluster_round_trips_and_rejects_garbage() {
        let nodes = fresh_nodes(NODE_COUNT).expect("loopback sockets bind");
        let text = initial_cluster(&nodes);
        assert!(text.starts_with("n1=127.0.0.1:"));
        assert_eq!(text.matches(',').count(), NODE_COUNT - 1);
        assert_eq!(parse_nodes(&text, NODE_COUNT).expect("parses"), nodes);
        assert_eq!(
            parse_nodes(&text.replace(',', "\n"), NODE_COUNT).expect("parses"),
            nodes
        );
        assert!(parse_nodes("n1=127.0.0.1:1", NODE_COUNT).is_err());
        assert!(parse_nodes("n1 127.0.0.1:1,n2=a:1,n3=b:1", NODE_COUNT).is_err());
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
}
