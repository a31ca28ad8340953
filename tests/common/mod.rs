//! A real cluster for integration tests: certificates in a temporary directory, free loopback
//! ports, one `capdial node` process per node (its stdout and stderr in files beside its data,
//! printed when a test fails), and admin requests over raw QUIC so the fixture does not depend
//! on the client library it helps to test.
//!
//! Every child process is killed when the [`Cluster`] is dropped, panicking or not. Every wait
//! polls with a deadline; nothing sleeps to wait for a condition.

#![allow(dead_code)]

use capdial::client::conn::{Client, ClientOptions};
use capdial::net::faults::FaultRules;
use capdial::net::tls::{self, Identity, Party};
use capdial::protocol::admin::{
    AdminAnswer, AdminError, AdminRequest, FromNode, KeyspaceInfo, NodeStatus, ToNode,
};
use capdial::protocol::{ClientError, KeyspaceMode};
use capdial::wire;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tempfile::TempDir;

/// A 3-node `LocalCluster` of this build's binary: for tests of the public API, which start
/// their cluster the way an application's tests would.
pub async fn local_cluster() -> capdial::LocalCluster {
    capdial::LocalCluster::builder()
        .nodes(3)
        .binary(env!("CARGO_BIN_EXE_capdial"))
        .start()
        .await
        .expect("a local 3-node cluster starts")
}

/// A runtime for a test that also runs blocking work (a CLI child process) between awaits.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `capdial ARGS --endpoint ... --certs ...` against `cluster`; fails unless it exits 0,
/// and returns what it printed.
pub fn capdial_cli<S: AsRef<std::ffi::OsStr>>(
    cluster: &capdial::LocalCluster,
    args: impl IntoIterator<Item = S>,
) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_capdial"))
        .args(args)
        .args(["--endpoint", &cluster.endpoints().join(",")])
        .arg("--certs")
        .arg(cluster.certs())
        .output()
        .expect("capdial runs");
    assert!(output.status.success(), "capdial: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// How long a cluster may take to elect the catalog's leader, a keyspace to appear, a node
/// to catch up.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
/// One request's bound, connection included.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How often `poll_until` re-checks.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Lines of each log file shown when a test fails.
const LOG_TAIL_LINES: usize = 80;
/// The client certificate every test client uses.
pub const CLIENT_NAME: &str = "admin";

/// Retries `check` until it returns `Some`, or panics naming `what` once `deadline` has passed.
/// A check that hangs is cut off at the deadline too.
pub async fn poll_until<T>(
    deadline: Duration,
    what: &str,
    check: impl AsyncFnMut() -> Option<T>,
) -> T {
    match poll_for(deadline, check).await {
        Some(value) => value,
        None => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}

/// Retries `check` until it returns `Some`; `None` once `deadline` has passed.
pub async fn poll_for<T>(
    deadline: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(end, check()).await {
            Ok(Some(value)) => return Some(value),
            Ok(None) => {}
            Err(_) => return None,
        }
        if tokio::time::Instant::now() + POLL_INTERVAL > end {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Loopback UDP ports nobody holds right now, below the ephemeral range, so no client's
/// socket can take one before the node binds it (see `capdial::local::free_loopback_ports`).
pub fn free_ports(count: usize) -> Vec<u16> {
    capdial::local::free_loopback_ports(count).expect("free loopback UDP ports")
}

/// Node ids `n1..=nN`.
pub fn node_names(count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("n{i}")).collect()
}

/// Makes a CA and certificates for `nodes` and the test client in `dir`.
pub fn make_certs(dir: &Path, nodes: &[String]) {
    tls::init(dir, nodes, &[CLIENT_NAME.to_string()]).expect("tls::init");
}

/// One `capdial node` process and where it keeps its things.
pub struct NodeProcess {
    pub id: String,
    pub address: SocketAddr,
    pub data_dir: PathBuf,
    pub certs: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub initial_cluster: String,
    /// Print the logs when dropped during a panic (a node outside a [`Cluster`]).
    pub logs_on_panic: bool,
    child: Option<Child>,
}

impl NodeProcess {
    /// Describes a node; `spawn` starts it.
    pub fn new(root: &Path, id: &str, address: SocketAddr, certs: &Path, initial: &str) -> Self {
        let home = root.join(id);
        fs::create_dir_all(&home).expect("create the node's directory");
        NodeProcess {
            id: id.to_string(),
            address,
            data_dir: home.join("data"),
            certs: certs.to_path_buf(),
            stdout: home.join("stdout.log"),
            stderr: home.join("stderr.log"),
            initial_cluster: initial.to_string(),
            logs_on_panic: false,
            child: None,
        }
    }

    /// Starts the process (again, after a kill: the logs are appended to).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.id);
        let log = |path: &Path| -> File {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open a log file")
        };
        let child = Command::new(env!("CARGO_BIN_EXE_capdial"))
            .arg("node")
            .args(["--id", &self.id])
            .args(["--listen", &self.address.to_string()])
            .args(["--initial-cluster", &self.initial_cluster])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--certs")
            .arg(&self.certs)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log(&self.stdout))
            .stderr(log(&self.stderr))
            .spawn()
            .expect("spawn capdial node");
        self.child = Some(child);
    }

    /// `kill -9`: `Child::kill` sends SIGKILL on unix. Waits for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (through the `kill` command, no libc needed), then waits up to `deadline` for
    /// the process to exit. `None` if it did not (it is then killed).
    pub fn terminate(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "kill -TERM {}",
            self.id
        );
        let started = std::time::Instant::now();
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if started.elapsed() > deadline {
                break None;
            }
            // Polling a child process: std has no wait with a deadline.
            std::thread::sleep(POLL_INTERVAL);
        };
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Panics with the logs if the process has exited on its own.
    pub fn assert_alive(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "node {} exited on its own with {status}\n{}",
                self.id,
                self.logs()
            );
        }
    }

    /// The tails of the node's stdout and stderr.
    pub fn logs(&self) -> String {
        let tail = |path: &Path| {
            let text = fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[start..].join("\n")
        };
        format!(
            "----- {} stdout ({}) -----\n{}\n----- {} stderr ({}) -----\n{}\n",
            self.id,
            self.stdout.display(),
            tail(&self.stdout),
            self.id,
            self.stderr.display(),
            tail(&self.stderr)
        )
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
        if self.logs_on_panic && std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// A raw QUIC client endpoint that speaks `capdial-client/2` with a certificate from `certs`.
pub fn client_endpoint(certs: &Path, name: &str) -> quinn::Endpoint {
    let identity = Identity::load(certs, Party::Client, name).expect("load the client identity");
    let config = identity
        .client_config(tls::ALPN_CLIENT)
        .expect("client TLS config");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("client endpoint");
    endpoint.set_default_client_config(config);
    endpoint
}

/// Connects to a node by address, as clients do.
pub async fn connect_raw(
    endpoint: &quinn::Endpoint,
    address: SocketAddr,
) -> Result<quinn::Connection, String> {
    let connecting = endpoint
        .connect(address, tls::ANY_NODE_SERVER_NAME)
        .map_err(|e| format!("connect: {e}"))?;
    match tokio::time::timeout(REQUEST_DEADLINE, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(format!("handshake: {e}")),
        Err(_) => Err("handshake timed out".to_string()),
    }
}

/// Sends `bytes` on a new bidirectional stream, finishes it, and reads the whole answer.
pub async fn exchange_raw(connection: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let work = async {
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| format!("open stream: {e}"))?;
        // The node may refuse to read a bad frame to its end; a failed write is not the
        // answer, what the node sends back is.
        let _ = send.write_all(bytes).await;
        let _ = send.finish();
        recv.read_to_end(wire::FRAME_BYTES_MAX + wire::HEADER_BYTES)
            .await
            .map_err(|e| format!("read answer: {e}"))
    };
    tokio::time::timeout(REQUEST_DEADLINE, work)
        .await
        .map_err(|_| "request timed out".to_string())?
}

/// One request, one answer, on a new stream of `connection`.
pub async fn request_raw(
    connection: &quinn::Connection,
    request: &ToNode,
) -> Result<FromNode, String> {
    let frame = wire::encode(request).map_err(|e| format!("encode: {e}"))?;
    let answer = exchange_raw(connection, &frame).await?;
    let (message, _) = wire::decode::<FromNode>(&answer).map_err(|e| format!("decode: {e}"))?;
    Ok(message)
}

/// A cluster of real node processes. Dropping it kills them all.
pub struct Cluster {
    pub nodes: Vec<NodeProcess>,
    pub certs: PathBuf,
    endpoint: quinn::Endpoint,
    connections: Mutex<BTreeMap<usize, quinn::Connection>>,
    // Last, so the processes are gone before their files.
    pub dir: TempDir,
}

impl Cluster {
    /// Starts `count` nodes and waits until the catalog group has a leader.
    pub async fn start(count: usize) -> Cluster {
        let cluster = Cluster::spawn(count);
        cluster.wait_ready().await;
        cluster
    }

    /// Starts `count` nodes without waiting for anything.
    pub fn spawn(count: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let certs = dir.path().join("certs");
        let names = node_names(count);
        make_certs(&certs, &names);
        let ports = free_ports(count);
        let addresses: Vec<SocketAddr> = ports
            .iter()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
            .collect();
        let initial = names
            .iter()
            .zip(&addresses)
            .map(|(name, address)| format!("{name}={address}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<NodeProcess> = names
            .iter()
            .zip(&addresses)
            .map(|(name, address)| NodeProcess::new(dir.path(), name, *address, &certs, &initial))
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        let endpoint = client_endpoint(&certs, CLIENT_NAME);
        Cluster {
            nodes,
            certs,
            endpoint,
            connections: Mutex::new(BTreeMap::new()),
            dir,
        }
    }

    /// Index of node `nX` (1-based, as the ids are).
    fn index(&self, node: usize) -> usize {
        assert!(
            (1..=self.nodes.len()).contains(&node),
            "no node n{node} in a cluster of {}",
            self.nodes.len()
        );
        node - 1
    }

    pub fn node(&self, node: usize) -> &NodeProcess {
        &self.nodes[self.index(node)]
    }

    /// `host:port` of node `nX`.
    pub fn addr(&self, node: usize) -> String {
        self.node(node).address.to_string()
    }

    /// Every node's address, n1 first.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.address.to_string()).collect()
    }

    /// The 1-based numbers of the nodes that run.
    pub fn running(&self) -> Vec<usize> {
        (1..=self.nodes.len())
            .filter(|n| self.nodes[n - 1].is_running())
            .collect()
    }

    /// `kill -9` of node `nX`.
    pub fn kill9(&mut self, node: usize) {
        let index = self.index(node);
        self.nodes[index].kill9();
        self.forget_connection(index);
    }

    /// SIGTERM to node `nX`; its exit status if it stopped within `deadline`.
    pub fn terminate(
        &mut self,
        node: usize,
        deadline: Duration,
    ) -> Option<std::process::ExitStatus> {
        let index = self.index(node);
        self.forget_connection(index);
        self.nodes[index].terminate(deadline)
    }

    /// Starts node `nX` again on the same data directory and address.
    pub fn restart(&mut self, node: usize) {
        let index = self.index(node);
        self.forget_connection(index);
        self.nodes[index].spawn();
    }

    fn forget_connection(&self, index: usize) {
        let mut connections = self.connections.lock().expect("lock");
        if let Some(connection) = connections.remove(&index) {
            connection.close(0u32.into(), b"forgotten");
        }
    }

    /// Every node's logs.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(NodeProcess::logs).collect()
    }

    async fn connection(&self, index: usize) -> Result<quinn::Connection, String> {
        let cached = self
            .connections
            .lock()
            .expect("lock")
            .get(&index)
            .filter(|connection| connection.close_reason().is_none())
            .cloned();
        if let Some(connection) = cached {
            return Ok(connection);
        }
        let connection = connect_raw(&self.endpoint, self.nodes[index].address).await?;
        self.connections
            .lock()
            .expect("lock")
            .insert(index, connection.clone());
        Ok(connection)
    }

    /// One admin request to node `nX`. The outer error is the transport's, the inner the node's.
    pub async fn admin_at(
        &self,
        node: usize,
        request: AdminRequest,
    ) -> Result<Result<AdminAnswer, AdminError>, String> {
        let index = self.index(node);
        let connection = self.connection(index).await?;
        match request_raw(&connection, &ToNode::Admin(request)).await {
            Ok(FromNode::Admin(answer)) => Ok(answer),
            Ok(other) => Err(format!("a data answer to an admin request: {other:?}")),
            Err(e) => {
                self.forget_connection(index);
                Err(e)
            }
        }
    }

    /// Node `nX`'s status, or why it could not be had.
    pub async fn status(&self, node: usize) -> Result<NodeStatus, String> {
        match self.admin_at(node, AdminRequest::Status).await? {
            Ok(AdminAnswer::Status(status)) => Ok(*status),
            Ok(other) => Err(format!("status answered {other:?}")),
            Err(e) => Err(format!("status refused: {e}")),
        }
    }

    /// Panics with the logs if any running node has exited.
    pub fn assert_alive(&mut self) {
        for node in &mut self.nodes {
            node.assert_alive();
        }
    }

    /// Waits until every running node knows a leader of group 0 (the catalog).
    pub async fn wait_ready(&self) {
        let running = self.running();
        poll_until(
            READY_DEADLINE,
            "a catalog leader on every node",
            async || {
                for &node in &running {
                    let status = self.status(node).await.ok()?;
                    status.strong.first()?.leader?;
                }
                Some(())
            },
        )
        .await;
    }

    /// Creates a keyspace through whichever node leads the catalog, then waits until every
    /// running node has applied it and, for a strong keyspace, knows the group's leader.
    pub async fn create_keyspace(&self, name: &str, mode: KeyspaceMode) -> KeyspaceInfo {
        let running = self.running();
        let mut target = running[0];
        let request = AdminRequest::CreateKeyspace {
            name: name.to_string(),
            mode,
        };
        poll_until(READY_DEADLINE, &format!("creating {name}"), async || {
            match self.admin_at(target, request.clone()).await {
                Ok(Ok(_)) | Ok(Err(AdminError::KeyspaceExists { .. })) => Some(()),
                Ok(Err(AdminError::Request(ClientError::NotLeader {
                    leader_hint: Some(leader),
                    ..
                }))) if running.contains(&(leader.0 as usize)) => {
                    target = leader.0 as usize;
                    None
                }
                _ => {
                    // Unavailable, a timeout, a node still starting: try the next one.
                    let at = running.iter().position(|n| *n == target).unwrap_or(0);
                    target = running[(at + 1) % running.len()];
                    None
                }
            }
        })
        .await;
        self.wait_keyspace(name, mode).await
    }

    /// Waits until every running node lists keyspace `name` (and, if strong, knows its leader).
    pub async fn wait_keyspace(&self, name: &str, mode: KeyspaceMode) -> KeyspaceInfo {
        let running = self.running();
        poll_until(
            READY_DEADLINE,
            &format!("{name} on every node"),
            async || {
                let mut found = None;
                for &node in &running {
                    let Ok(Ok(AdminAnswer::Keyspaces(list))) =
                        self.admin_at(node, AdminRequest::ListKeyspaces).await
                    else {
                        return None;
                    };
                    let info = list.into_iter().find(|k| k.name == name)?;
                    assert_eq!(info.mode, mode, "{name} has the mode it was created with");
                    if mode == KeyspaceMode::Strong {
                        let status = self.status(node).await.ok()?;
                        status.strong.iter().find(|g| g.keyspace == name)?.leader?;
                    }
                    found = Some(info);
                }
                found
            },
        )
        .await
    }

    /// Replaces the fault rules on every running node.
    pub async fn set_faults(&self, rules: FaultRules) {
        for node in self.running() {
            let answer = poll_until(REQUEST_DEADLINE * 2, "setting fault rules", async || {
                self.admin_at(node, AdminRequest::SetFaults(rules.clone()))
                    .await
                    .ok()
            })
            .await;
            assert!(
                matches!(answer, Ok(AdminAnswer::Done)),
                "n{node} refused fault rules: {answer:?}"
            );
        }
    }

    /// A client library handle that knows the given nodes.
    pub async fn client_of(&self, nodes: &[usize]) -> Client {
        let endpoints = nodes.iter().map(|n| self.addr(*n)).collect();
        let options = ClientOptions::new(endpoints, self.certs.clone());
        Client::connect(options).await.expect("client connects")
    }

    /// A client library handle that knows every node.
    pub async fn client(&self) -> Client {
        let all: Vec<usize> = (1..=self.nodes.len()).collect();
        self.client_of(&all).await
    }

    /// The node that leads the Raft group of keyspace `name`, as node `asked` sees it.
    pub async fn leader_of(&self, asked: usize, name: &str) -> Option<usize> {
        let status = self.status(asked).await.ok()?;
        let group = status.strong.iter().find(|g| g.keyspace == name)?;
        group.leader.map(|id| id.0 as usize)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill9();
        }
        if std::thread::panicking() {
            eprintln!("===== node logs (test failed) =====\n{}", self.logs());
        }
    }
}

/// Polls a stale read of `key` on the node at `at` (pinned) until it holds `value`, then
/// returns that read's receipt; panics naming `what` at the deadline.
pub async fn stale_read_until(
    client: &Client,
    at: &str,
    keyspace: &str,
    key: &str,
    value: &str,
    what: &str,
) -> capdial::protocol::Receipt {
    use capdial::protocol::{Answer, ReadLevel};
    poll_until(READY_DEADLINE, what, async || {
        let stale = Some(ReadLevel::Stale);
        let (answer, receipt) = client
            .execute_at(at, keyspace, op::get(key), stale, None, None)
            .await
            .ok()?;
        matches!(&answer, Answer::Strong(Some(v)) if v.value == b(value)).then_some(receipt)
    })
    .await
}

/// A data request of client `client` with the keyspace's default levels. It acknowledges
/// nothing (`first_unacked` 1) and may open the client's session.
pub fn request(
    client: u64,
    keyspace: &str,
    seq: u64,
    operation: capdial::protocol::Operation,
) -> capdial::protocol::ClientRequest {
    capdial::protocol::ClientRequest::new(
        capdial::strong::ClientId(client),
        seq,
        keyspace,
        operation,
    )
}

/// Bytes of a string, for keys, values and members.
pub fn b(text: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(text.as_bytes())
}

/// Operations by their CLI names, so tests read like the commands they stand for.
pub mod op {
    use super::b;
    use capdial::protocol::Operation;
    use capdial::types::LogIndex;

    pub fn put(key: &str, value: &str) -> Operation {
        Operation::Put {
            key: b(key),
            value: b(value),
            context: None,
        }
    }

    pub fn get(key: &str) -> Operation {
        Operation::Get { key: b(key) }
    }

    pub fn delete(key: &str) -> Operation {
        Operation::Delete {
            key: b(key),
            context: None,
        }
    }

    pub fn cas(key: &str, expected: Option<LogIndex>, value: &str) -> Operation {
        Operation::Cas {
            key: b(key),
            expected,
            value: Some(b(value)),
        }
    }

    pub fn scan(prefix: &str, limit: u32) -> Operation {
        Operation::Scan {
            prefix: b(prefix),
            limit,
            after: None,
        }
    }

    pub fn incr(key: &str, by: i64) -> Operation {
        Operation::Add { key: b(key), by }
    }

    pub fn srem(key: &str, members: &[&str]) -> Operation {
        Operation::SetRemove {
            key: b(key),
            members: members.iter().map(|m| b(m)).collect(),
            context: None,
        }
    }

    pub fn sadd(key: &str, members: &[&str]) -> Operation {
        Operation::SetAdd {
            key: b(key),
            members: members.iter().map(|m| b(m)).collect(),
        }
    }
}

/// How a `capdial` run that [`run_capdial`] waited for ended.
pub struct Run {
    /// `None`: still running at the deadline (then killed).
    pub status: Option<std::process::ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Both streams, for a failure message.
    pub fn output(&self) -> String {
        format!(
            "----- stdout -----\n{}\n----- stderr -----\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Kills a child if the test ends (or panics) before it does.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `capdial ARGS` with no stdin and `TMPDIR=dir` (whatever it keeps in a temporary
/// directory lands in the test's), its output in files in `dir`, until it exits or
/// `deadline` passes.
pub fn run_capdial(dir: &Path, args: &[&str], deadline: Duration) -> Run {
    run_capdial_with_input(dir, args, None, deadline)
}

/// [`run_capdial`], with `input` written to the command's stdin through a pipe (then closed)
/// when it is `Some`.
pub fn run_capdial_with_input(
    dir: &Path,
    args: &[&str],
    input: Option<Vec<u8>>,
    deadline: Duration,
) -> Run {
    let stdout_path = dir.join("capdial.stdout");
    let stderr_path = dir.join("capdial.stderr");
    let stdin = match input {
        Some(_) => Stdio::piped(),
        None => Stdio::null(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_capdial"))
        .args(args)
        .env("TMPDIR", dir)
        .stdin(stdin)
        .stdout(File::create(&stdout_path).expect("stdout file"))
        .stderr(File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn capdial");
    // A pipe holds only some KiB: a thread writes while the child reads. A child that exits
    // without reading it all breaks the pipe, which its own status then explains.
    let writer = child.stdin.take().zip(input).map(|(mut pipe, bytes)| {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&bytes);
        })
    });
    let mut guard = ChildGuard(child);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("poll the child") {
            break Some(status);
        }
        if started.elapsed() > deadline {
            break None;
        }
        // Polling a child process: std has no wait with a deadline.
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(guard);
    if let Some(writer) = writer {
        // The child is gone, so the pipe is closed and the write has ended.
        let _ = writer.join();
    }
    Run {
        status,
        stdout: fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: fs::read_to_string(&stderr_path).unwrap_or_default(),
    }
}
