//! A real cluster on this machine in one line, for tests and demos: [`LocalCluster`] runs
//! each node as a child process of the `capdial` binary on a free loopback port, with
//! certificates made in a temporary directory, and gives a connected admin [`Client`].
//! `capdial demo` and `capdial bench --cluster` run on it too.
//!
//! ```text
//! LocalCluster::start(3) ── free ports, certificates, `capdial node` x3 (logs in DIR/nX.log)
//!        │
//! ready ─────────────────── every node answers Status and knows a catalog leader (deadline)
//!        │
//! kill / restart / faults ─ SIGKILL a node, start it again on its data; fault rules on
//!        │                  every node through the admin path `capdial fault` uses
//! drop ──────────────────── SIGKILL the children, wait for them, remove the temporary directory
//! ```
//!
//! SIGKILL is enough to stop a node: it loses nothing it acknowledged. The children are
//! killed when the cluster is dropped, also on an error path or a panic; a process that is
//! itself killed with SIGKILL leaves them running.
//!
//! Which binary runs the nodes: see [`LocalClusterBuilder::binary`].

pub(crate) mod ops;
mod process;
pub(crate) mod retry;

pub(crate) use crate::client::conn::{Client, ClientOptions, ConnError};
use crate::net::faults::{FaultRule, FaultRuleError, FaultRules};
use crate::net::tls::{self, CertError};
use crate::protocol::KeyspaceMode;
use crate::protocol::admin::NodeStatus;
use crate::types::NodeId;
pub(crate) use ops::{catalog_leader, node_status};
pub(crate) use process::Processes;
pub use process::{BINARY_ENV, LocalNode, free_loopback_ports};
use retry::RETRY_PAUSE;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Nodes in a local cluster unless asked otherwise.
///
/// ```
/// assert_eq!(capdial::local::NODES_DEFAULT, 3);
/// ```
pub const NODES_DEFAULT: usize = 3;
/// The most nodes a local cluster may have: a cluster's member limit.
///
/// ```
/// assert!(capdial::local::NODES_MAX >= 5);
/// ```
pub const NODES_MAX: usize = crate::eventual::MEMBERS_MAX;
/// The client certificate the cluster makes and its [`LocalCluster::client`] presents.
///
/// ```
/// assert_eq!(capdial::local::CLIENT_NAME, "admin");
/// ```
pub const CLIENT_NAME: &str = "admin";
/// How long the nodes may take to start and elect a catalog leader, by default. Generous:
/// a debug build on two busy cores takes seconds.
///
/// ```
/// assert_eq!(capdial::local::READY_TIMEOUT_DEFAULT.as_secs(), 30);
/// ```
pub const READY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// The deadline of one client request (all its retries), by default: long enough to ride out
/// an election.
///
/// ```
/// assert_eq!(capdial::local::REQUEST_TIMEOUT_DEFAULT.as_secs(), 5);
/// ```
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Why a local cluster could not start or do what it was asked.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use capdial::local::LocalClusterError;
/// let none = capdial::LocalCluster::start(0).await;
/// assert!(matches!(none, Err(LocalClusterError::NodeCount { nodes: 0, .. })));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalClusterError {
    #[error("a local cluster has 1 to {nodes_max} nodes, not {nodes}")]
    NodeCount { nodes: usize, nodes_max: usize },
    #[error(
        "no capdial binary found (looked at {searched:?}); set ${BINARY_ENV} or \
         LocalClusterBuilder::binary, or `cargo build` first"
    )]
    BinaryNotFound { searched: Vec<PathBuf> },
    #[error("{what} {path:?}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating certificates in {path:?}")]
    Certificates {
        path: PathBuf,
        #[source]
        source: CertError,
    },
    #[error("{path:?} does not describe this cluster's nodes: {reason}")]
    KeptDirectory { path: PathBuf, reason: String },
    #[error("node {node} exited ({status}); last lines of its log:\n{log_tail}")]
    NodeExited {
        node: NodeId,
        status: String,
        log_tail: String,
    },
    #[error("node {node} not ready within {timeout:?}; logs in {dir:?}")]
    NotReady {
        node: NodeId,
        timeout: Duration,
        dir: PathBuf,
        #[source]
        last: Option<ConnError>,
    },
    #[error("{node} is not a node of this cluster")]
    UnknownNode { node: NodeId },
    #[error("{node} is running; kill it before restarting it")]
    Running { node: NodeId },
    #[error("keyspace {keyspace} exists as {actual}, not {expected}")]
    KeyspaceExists {
        keyspace: String,
        expected: KeyspaceMode,
        actual: KeyspaceMode,
    },
    #[error("invalid fault rule")]
    FaultRule(#[from] FaultRuleError),
    /// A request to the cluster failed (the node's typed answer, or no answer in time).
    #[error("{what}{}", endpoint.as_deref().map(|endpoint| format!(" on {endpoint}")).unwrap_or_default())]
    Request {
        what: &'static str,
        /// The node asked, when the request was for one node.
        endpoint: Option<String>,
        #[source]
        source: ConnError,
    },
}

/// Options of a [`LocalCluster`]; [`LocalCluster::builder`] makes one.
///
/// ```
/// use std::time::Duration;
/// let builder = capdial::LocalCluster::builder()
///     .nodes(5)
///     .keep(true)
///     .ready_timeout(Duration::from_secs(60));
/// // builder.start().await? starts it.
/// ```
#[derive(Clone, Debug)]
pub struct LocalClusterBuilder {
    nodes: usize,
    binary: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    keep: bool,
    ready_timeout: Duration,
    request_timeout: Duration,
}

impl Default for LocalClusterBuilder {
    fn default() -> Self {
        LocalClusterBuilder {
            nodes: NODES_DEFAULT,
            binary: None,
            data_dir: None,
            keep: false,
            ready_timeout: READY_TIMEOUT_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
        }
    }
}

impl LocalClusterBuilder {
    /// How many nodes to start (default 3, at most [`NODES_MAX`]).
    ///
    /// ```
    /// let builder = capdial::LocalCluster::builder().nodes(5);
    /// ```
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// The `capdial` binary to run as nodes. Without one: `$CAPDIAL_BIN` ([`BINARY_ENV`]),
    /// else the running executable if it is `capdial`, else a `capdial` beside it or one
    /// directory up (so a test under `target/debug/deps/` finds `target/debug/capdial`; an
    /// integration test of this crate can pass `env!("CARGO_BIN_EXE_capdial")`), else this
    /// crate's own `target/PROFILE/capdial`, else, when this library was built from a checkout
    /// of capdial, that checkout's binary built on the spot (`cargo build --bin capdial`, once
    /// per process, blocking: a fresh clone's doc tests and examples need nothing built first),
    /// else `capdial` on the `PATH` (`cargo install capdial`).
    ///
    /// ```
    /// // In an integration test of a crate that builds capdial itself:
    /// // LocalCluster::builder().binary(env!("CARGO_BIN_EXE_capdial"))
    /// let builder = capdial::LocalCluster::builder().binary("/usr/local/bin/capdial");
    /// ```
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Keep certificates, data and logs in `dir`, and leave them there. A directory that
    /// already holds a local cluster of as many nodes restarts it on the same ports, with its
    /// data. Default: a fresh temporary directory, removed when the cluster is dropped.
    ///
    /// ```
    /// let builder = capdial::LocalCluster::builder().data_dir("/tmp/my-app-cluster");
    /// ```
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Keep the temporary directory after the cluster is dropped (to read the node logs).
    ///
    /// ```
    /// let builder = capdial::LocalCluster::builder().keep(true);
    /// ```
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// How long [`start`](Self::start) waits for every node to serve (default 30 s).
    ///
    /// ```
    /// let builder = capdial::LocalCluster::builder().ready_timeout(std::time::Duration::from_secs(60));
    /// ```
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// The deadline of one request of the cluster's clients, retries included (default 5 s).
    ///
    /// ```
    /// let builder = capdial::LocalCluster::builder().request_timeout(std::time::Duration::from_secs(1));
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Starts the nodes and returns once every node serves and knows a catalog leader.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::builder().nodes(1).start().await?;
    /// assert_eq!(cluster.nodes().len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(self) -> Result<LocalCluster, LocalClusterError> {
        self.launch()?.ready().await
    }

    /// Makes the directory, certificates and ports and starts the processes, without waiting
    /// for them to serve (the CLI prints the nodes and watches for Ctrl-C meanwhile).
    pub(crate) fn launch(self) -> Result<Launched, LocalClusterError> {
        if self.nodes == 0 || self.nodes > NODES_MAX {
            return Err(LocalClusterError::NodeCount {
                nodes: self.nodes,
                nodes_max: NODES_MAX,
            });
        }
        let binary = process::find_binary(self.binary.as_deref())?;
        let (dir, temporary) = match &self.data_dir {
            Some(dir) => (dir.clone(), false),
            None => (process::temporary_dir(), true),
        };
        fs::create_dir_all(&dir).map_err(process::io("creating", &dir))?;
        let remove_dir = (temporary && !self.keep).then(|| dir.clone());
        let processes = Arc::new(Processes::new(self.nodes, remove_dir));
        let nodes = process::load_or_pick_nodes(&dir, self.nodes)?;
        let certs = dir.join("certs");
        prepare_certs(&certs, &nodes)?;
        let launched = Launched {
            nodes,
            dir,
            certs,
            binary,
            processes,
            ready_timeout: self.ready_timeout,
            request_timeout: self.request_timeout,
        };
        for index in 0..launched.nodes.len() {
            launched.spawn(index)?;
        }
        Ok(launched)
    }
}

fn prepare_certs(certs: &Path, nodes: &[LocalNode]) -> Result<(), LocalClusterError> {
    if certs.join("ca.pem").exists() {
        return Ok(());
    }
    let ids: Vec<String> = nodes.iter().map(|node| node.id.to_string()).collect();
    tls::init(certs, &ids, &[CLIENT_NAME.to_string()]).map_err(|source| {
        LocalClusterError::Certificates {
            path: certs.to_path_buf(),
            source,
        }
    })
}

/// A cluster whose processes run but may not serve yet. Dropping it (or the
/// [`LocalCluster`] it becomes) kills them.
pub(crate) struct Launched {
    nodes: Vec<LocalNode>,
    dir: PathBuf,
    certs: PathBuf,
    binary: PathBuf,
    processes: Arc<Processes>,
    ready_timeout: Duration,
    request_timeout: Duration,
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.processes.stop();
    }
}

impl Launched {
    pub(crate) fn nodes(&self) -> &[LocalNode] {
        &self.nodes
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The children, for a signal watcher that must stop them.
    pub(crate) fn processes(&self) -> Arc<Processes> {
        Arc::clone(&self.processes)
    }

    fn spawn(&self, index: usize) -> Result<(), LocalClusterError> {
        let node = &self.nodes[index];
        let cluster = process::initial_cluster(&self.nodes);
        let child = process::spawn_node(&self.binary, node, &cluster, &self.dir, &self.certs)?;
        self.processes.set(index, child);
        Ok(())
    }

    fn client_options(&self) -> ClientOptions {
        let endpoints = self.nodes.iter().map(|node| node.address.clone()).collect();
        let mut options = ClientOptions::new(endpoints, self.certs.clone());
        options.name = CLIENT_NAME.to_string();
        options.timeout = self.request_timeout;
        options
    }

    /// The first node process that exited, with the tail of its log.
    fn exited_node(&self) -> Result<(), LocalClusterError> {
        match self.processes.exited() {
            Some((index, status)) => {
                let node = self.nodes[index].id;
                Err(LocalClusterError::NodeExited {
                    node,
                    status,
                    log_tail: process::log_tail(&self.dir, node),
                })
            }
            None => Ok(()),
        }
    }

    /// Connects a client and waits until every node answers `Status` and knows a leader of
    /// the catalog (group 0), so keyspaces can be created. Fails early if a node exits.
    pub(crate) async fn ready(self) -> Result<LocalCluster, LocalClusterError> {
        let deadline = Instant::now() + self.ready_timeout;
        let client = loop {
            self.exited_node()?;
            match Client::connect(self.client_options()).await {
                Ok(client) => break client,
                Err(error) if Instant::now() >= deadline => {
                    return Err(self.not_ready(self.nodes[0].id, Some(error)));
                }
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        };
        for index in 0..self.nodes.len() {
            self.wait_serving(&client, index, deadline).await?;
        }
        Ok(LocalCluster {
            launched: self,
            client,
            faults: Mutex::new(FaultRules::none()),
        })
    }

    /// Waits until node `index` answers `Status` and knows a catalog leader.
    async fn wait_serving(
        &self,
        client: &Client,
        index: usize,
        deadline: Instant,
    ) -> Result<(), LocalClusterError> {
        let node = &self.nodes[index];
        loop {
            self.exited_node()?;
            let last = match node_status(client, &node.address).await {
                Ok(status) if catalog_leader(&status).is_some() => return Ok(()),
                Ok(_) => None,
                Err(error) => Some(error),
            };
            if Instant::now() >= deadline {
                return Err(self.not_ready(node.id, last));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    fn not_ready(&self, node: NodeId, last: Option<ConnError>) -> LocalClusterError {
        LocalClusterError::NotReady {
            node,
            timeout: self.ready_timeout,
            dir: self.dir.clone(),
            last,
        }
    }
}

/// A running cluster of `capdial node` child processes on 127.0.0.1, with an admin client.
/// Dropping it kills the nodes and removes its temporary directory.
///
/// ```
/// use capdial::LocalCluster;
/// use capdial::protocol::KeyspaceMode;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cluster = LocalCluster::start(3).await?;
/// cluster.create_keyspace("orders", KeyspaceMode::Strong).await?;
/// let orders = cluster.client().strong("orders");
/// orders.put("o-1", "paid").await?;
/// // Cut a follower off: the majority side (the leader and the other follower) still
/// // serves the strong keyspace.
/// let leader = cluster.leader("orders").await?.ok_or("no leader")?;
/// let follower = cluster.nodes().iter().map(|node| node.id).find(|id| *id != leader);
/// cluster.isolate(follower.ok_or("one node")?).await?;
/// orders.put("o-2", "paid").await?;
/// cluster.heal().await?;
/// # Ok(())
/// # }
/// ```
pub struct LocalCluster {
    launched: Launched,
    client: Client,
    /// The fault rules last set, given again to a restarted node (a node forgets its rules).
    faults: Mutex<FaultRules>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("nodes", &self.launched.nodes)
            .field("dir", &self.launched.dir)
            .finish_non_exhaustive()
    }
}

impl LocalCluster {
    /// Starts `nodes` nodes with the default options and waits until they serve.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// assert_eq!(cluster.endpoints().len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(nodes: usize) -> Result<LocalCluster, LocalClusterError> {
        Self::builder().nodes(nodes).start().await
    }

    /// Options for a cluster: nodes, binary, directory, timeouts.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let cluster = capdial::LocalCluster::builder()
    ///     .nodes(1)
    ///     .request_timeout(Duration::from_secs(2))
    ///     .start()
    ///     .await?;
    /// assert_eq!(cluster.client_options().timeout, Duration::from_secs(2));
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> LocalClusterBuilder {
        LocalClusterBuilder::default()
    }

    /// The admin client connected to every node. Cheap to clone.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// let db = cluster.client().clone();
    /// assert!(db.members().await?.len() == 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Options for more clients of this cluster (another identity, another timeout).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// let mut options = cluster.client_options();
    /// options.timeout = std::time::Duration::from_secs(1);
    /// let other = capdial::Client::connect(options).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn client_options(&self) -> ClientOptions {
        self.launched.client_options()
    }

    /// The nodes, `n1` first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// let n1 = &cluster.nodes()[0];
    /// assert_eq!(n1.id.to_string(), "n1");
    /// assert!(n1.address.starts_with("127.0.0.1:"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn nodes(&self) -> &[LocalNode] {
        &self.launched.nodes
    }

    /// Every node's `host:port`, `n1` first.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// assert_eq!(cluster.endpoints(), [cluster.nodes()[0].address.clone()]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes()
            .iter()
            .map(|node| node.address.clone())
            .collect()
    }

    /// The `host:port` of `node`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// use capdial::types::NodeId;
    /// assert!(cluster.endpoint(NodeId(1)).is_some());
    /// assert!(cluster.endpoint(NodeId(9)).is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn endpoint(&self, node: NodeId) -> Option<&str> {
        let index = self.index(node).ok()?;
        Some(&self.nodes()[index].address)
    }

    /// The certificate directory: `ca.pem`, `ca-key.pem` (to issue more certificates with
    /// [`tls::issue`]) and the `admin` client's certificate.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// assert!(cluster.certs().join("ca.pem").exists());
    /// assert!(cluster.certs().join("client-admin.pem").exists());
    /// # Ok(())
    /// # }
    /// ```
    pub fn certs(&self) -> &Path {
        &self.launched.certs
    }

    /// The cluster directory: certificates, each node's data and its log (`nX.log`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// assert!(cluster.dir().join("n1.log").exists());
    /// # Ok(())
    /// # }
    /// ```
    pub fn dir(&self) -> &Path {
        &self.launched.dir
    }

    fn index(&self, node: NodeId) -> Result<usize, LocalClusterError> {
        self.nodes()
            .iter()
            .position(|candidate| candidate.id == node)
            .ok_or(LocalClusterError::UnknownNode { node })
    }

    /// Whether `node`'s process runs (it was not killed).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// let n1 = cluster.nodes()[0].id;
    /// assert!(cluster.is_running(n1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_running(&self, node: NodeId) -> bool {
        self.index(node)
            .is_ok_and(|index| self.launched.processes.is_running(index))
    }

    /// Kills `node` with SIGKILL and reaps it. Killing a killed node does nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// let n1 = cluster.nodes()[0].id;
    /// cluster.kill(n1)?;
    /// assert!(!cluster.is_running(n1));
    /// cluster.restart(n1).await?;
    /// assert!(cluster.is_running(n1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn kill(&self, node: NodeId) -> Result<(), LocalClusterError> {
        let index = self.index(node)?;
        self.launched.processes.kill(index);
        Ok(())
    }

    /// Starts a killed `node` again on its data, waits until it serves, and gives it the
    /// cluster's fault rules.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
    /// let orders = cluster.client().strong("orders");
    /// orders.put("o-1", "paid").await?;
    /// let n1 = cluster.nodes()[0].id;
    /// cluster.kill(n1)?;
    /// cluster.restart(n1).await?;
    /// // Acknowledged writes survive SIGKILL.
    /// assert!(orders.get("o-1").await?.value.is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn restart(&self, node: NodeId) -> Result<(), LocalClusterError> {
        let index = self.index(node)?;
        if self.launched.processes.is_running(index) {
            return Err(LocalClusterError::Running { node });
        }
        self.launched.spawn(index)?;
        let deadline = Instant::now() + self.launched.ready_timeout;
        self.launched
            .wait_serving(&self.client, index, deadline)
            .await?;
        let endpoint = self.nodes()[index].address.clone();
        ops::set_faults_at(&self.client, &[endpoint], &self.fault_rules()).await
    }

    /// `node`'s own status: its groups, their leaders and indexes, its fault rules.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// let n1 = cluster.nodes()[0].id;
    /// let status = cluster.status(n1).await?;
    /// assert_eq!(status.node, n1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn status(&self, node: NodeId) -> Result<NodeStatus, LocalClusterError> {
        let index = self.index(node)?;
        let endpoint = &self.nodes()[index].address;
        node_status(&self.client, endpoint)
            .await
            .map_err(|source| LocalClusterError::Request {
                what: "asking the status",
                endpoint: Some(endpoint.clone()),
                source,
            })
    }

    /// Creates keyspace `name` in `mode` (one that exists in that mode is fine) and waits until
    /// every running node serves it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use capdial::local::LocalClusterError;
    /// use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// cluster.create_keyspace("orders", KeyspaceMode::Strong).await?;
    /// cluster.create_keyspace("orders", KeyspaceMode::Strong).await?; // already there: fine
    /// let clash = cluster.create_keyspace("orders", KeyspaceMode::Eventual(ValueType::Set)).await;
    /// assert!(matches!(clash, Err(LocalClusterError::KeyspaceExists { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_keyspace(
        &self,
        name: &str,
        mode: KeyspaceMode,
    ) -> Result<(), LocalClusterError> {
        ops::ensure_keyspace(&self.client, &self.running_endpoints(), name, mode).await
    }

    /// The node that leads strong keyspace `name` now, as the running nodes report it
    /// (`None`: none does, an election is under way).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
    /// assert_eq!(cluster.leader("orders").await?, Some(cluster.nodes()[0].id));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn leader(&self, name: &str) -> Result<Option<NodeId>, LocalClusterError> {
        ops::keyspace_leader(&self.client, &self.running_endpoints(), name).await
    }

    /// The endpoints of the nodes that run (were not killed).
    fn running_endpoints(&self) -> Vec<String> {
        let processes = &self.launched.processes;
        self.nodes()
            .iter()
            .enumerate()
            .filter(|(index, _)| processes.is_running(*index))
            .map(|(_, node)| node.address.clone())
            .collect()
    }

    /// The fault rules last set through this cluster.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// assert!(cluster.fault_rules().rules.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn fault_rules(&self) -> FaultRules {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the fault rules on every running node, as `capdial fault` does. The rules
    /// act on traffic between nodes; clients reach every node still.
    ///
    /// ```
    /// use capdial::net::faults::{FaultRule, FaultRules};
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(2).await?;
    /// let (n1, n2) = (cluster.nodes()[0].id, cluster.nodes()[1].id);
    /// let mut rules = FaultRules::none();
    /// rules.add(FaultRule::Delay { a: n1, b: n2, delay: Duration::from_millis(5), jitter: Duration::ZERO })?;
    /// cluster.set_faults(rules.clone()).await?;
    /// assert_eq!(cluster.status(n2).await?.faults, rules);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_faults(&self, rules: FaultRules) -> Result<(), LocalClusterError> {
        for rule in &rules.rules {
            rule.validate()?;
        }
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = rules.clone();
        ops::set_faults_at(&self.client, &self.running_endpoints(), &rules).await
    }

    /// Splits the nodes into `sides` that cannot reach each other (replacing other rules).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(2).await?;
    /// let (n1, n2) = (cluster.nodes()[0].id, cluster.nodes()[1].id);
    /// cluster.partition(&[&[n1], &[n2]]).await?;
    /// cluster.heal().await?;
    /// assert!(cluster.fault_rules().rules.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn partition(&self, sides: &[&[NodeId]]) -> Result<(), LocalClusterError> {
        let sides = sides.iter().map(|side| side.to_vec()).collect();
        self.set_rule(FaultRule::Partition { sides }).await
    }

    /// Cuts `node` off from every other node (replacing other rules).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(2).await?;
    /// let n2 = cluster.nodes()[1].id;
    /// cluster.isolate(n2).await?;
    /// assert_eq!(cluster.status(n2).await?.faults, cluster.fault_rules());
    /// cluster.heal().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn isolate(&self, node: NodeId) -> Result<(), LocalClusterError> {
        self.index(node)?;
        self.set_rule(FaultRule::Isolate { node }).await
    }

    async fn set_rule(&self, rule: FaultRule) -> Result<(), LocalClusterError> {
        let mut rules = FaultRules::none();
        rules.add(rule)?;
        self.set_faults(rules).await
    }

    /// Removes every fault rule on every running node.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = capdial::LocalCluster::start(2).await?;
    /// let n1 = cluster.nodes()[0].id;
    /// cluster.isolate(n1).await?;
    /// cluster.heal().await?;
    /// assert!(cluster.status(n1).await?.faults.rules.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn heal(&self) -> Result<(), LocalClusterError> {
        self.set_faults(FaultRules::none()).await
    }
}
