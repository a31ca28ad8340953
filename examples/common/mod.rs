//! What the examples share: the `--endpoint`/`--certs` flags, a cluster that is either a
//! fresh `LocalCluster` or one that already runs, polling with a deadline, receipts on one
//! line, and the `check NAME: ok` lines the examples end with.
//!
//! Against a cluster that already runs, keyspaces are created and fault rules set through the
//! admin path, as `capdial keyspace create` and `capdial fault` do: the client certificate
//! must have the `admin` role for that.

// Each example uses its own part of this module.
#![allow(dead_code)]

use anyhow::{Context, bail};
use capdial::LocalCluster;
use capdial::client::{Client, ClientOptions, ConnError};
use capdial::eventual::WriteLevel;
use capdial::net::faults::{FaultRule, FaultRules};
use capdial::protocol::admin::{AdminAnswer, AdminError, AdminRequest, RaftRole};
use capdial::protocol::{
    ClientError, KeyspaceMode, Operation, Position, ReadLevel, Receipt, Served,
};
use capdial::types::NodeId;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a keyspace, a fault rule or a converging value may take to reach every node.
/// Generous: a debug build on two busy cores is slow.
pub const SETTLE: Duration = Duration::from_secs(30);
/// Pause between two looks while polling: short next to gossip rounds (100 ms).
const POLL_PAUSE: Duration = Duration::from_millis(50);
/// Nodes of the cluster an example starts when no `--endpoint` is given.
const LOCAL_NODES: usize = 3;

/// Where the example runs.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// A node of a cluster that already runs, as host:port (repeat the flag or give a comma
    /// list). Without it the example starts its own 3-node LocalCluster on 127.0.0.1 and
    /// stops it at the end.
    #[arg(long = "endpoint", value_name = "ADDR", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// The certificate directory of that cluster (`capdial certs init --out DIR`).
    #[arg(long, value_name = "DIR", requires = "endpoints")]
    pub certs: Option<PathBuf>,
    /// The client certificate to present (`client-NAME.pem` in --certs). Keyspace creation
    /// and fault rules need one with the admin role.
    #[arg(long, value_name = "NAME", default_value = "admin")]
    pub client_name: String,
}

/// One node: its id and the address clients reach it at.
#[derive(Clone, Debug)]
pub struct Node {
    pub id: NodeId,
    pub endpoint: String,
}

/// A cluster to run against: one this process started, or one that was already running.
pub struct Cluster {
    /// `Some` when the example started the cluster; dropping it stops the nodes.
    local: Option<LocalCluster>,
    client: Client,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts a local cluster, or connects to the one `args` names.
    pub async fn open(args: &ClusterArgs) -> anyhow::Result<Cluster> {
        if args.endpoints.is_empty() {
            return Self::start_local().await;
        }
        let certs = args.certs.clone().context("--endpoint needs --certs DIR")?;
        let mut options = ClientOptions::new(args.endpoints.clone(), certs);
        options.name = args.client_name.clone();
        let client = Client::connect(options).await.context("connecting")?;
        let mut nodes: Vec<Node> = client
            .members()
            .await
            .context("listing the members")?
            .into_iter()
            .map(|member| Node {
                id: member.id,
                endpoint: member.address,
            })
            .collect();
        nodes.sort_by_key(|node| node.id);
        println!("cluster: {} nodes at {}", nodes.len(), node_list(&nodes));
        Ok(Cluster {
            local: None,
            client,
            nodes,
        })
    }

    async fn start_local() -> anyhow::Result<Cluster> {
        // The `capdial` binary is found beside the example (target/PROFILE/capdial), through
        // $CAPDIAL_BIN, or built on the spot in this checkout (see LocalClusterBuilder::binary).
        let local = LocalCluster::start(LOCAL_NODES)
            .await
            .context("starting a local cluster")?;
        let nodes: Vec<Node> = local
            .nodes()
            .iter()
            .map(|node| Node {
                id: node.id,
                endpoint: node.address.clone(),
            })
            .collect();
        println!(
            "cluster: local, {} nodes at {}",
            nodes.len(),
            node_list(&nodes)
        );
        Ok(Cluster {
            client: local.client().clone(),
            local: Some(local),
            nodes,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The nodes, ordered by id.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Fails unless the cluster has at least `count` nodes.
    pub fn need_nodes(&self, count: usize, why: &str) -> anyhow::Result<()> {
        if self.nodes.len() < count {
            bail!(
                "this example needs {count} nodes ({why}); the cluster has {}",
                self.nodes.len()
            );
        }
        Ok(())
    }

    /// Creates keyspace `name` unless it exists in `mode`, and waits until every node serves it.
    pub async fn create_keyspace(&self, name: &str, mode: KeyspaceMode) -> anyhow::Result<()> {
        if let Some(local) = &self.local {
            return Ok(local.create_keyspace(name, mode).await?);
        }
        // Ask first: a keyspace that exists needs no admin certificate.
        if !self.exists(name, mode).await? {
            let create = AdminRequest::CreateKeyspace {
                name: name.to_string(),
                mode,
            };
            match self.client.admin(create).await {
                Ok(_) => {}
                // Created meanwhile by someone else: fine if in the same mode.
                Err(ConnError::Admin(AdminError::KeyspaceExists { .. })) => {
                    self.exists(name, mode).await?;
                }
                Err(error) => return Err(error).context(format!("creating keyspace {name}")),
            }
        }
        for node in &self.nodes {
            self.wait_served(node, name, mode).await?;
        }
        Ok(())
    }

    /// Whether keyspace `name` exists in `mode`; an error if it exists in another mode.
    async fn exists(&self, name: &str, mode: KeyspaceMode) -> anyhow::Result<bool> {
        let listed = self.client.admin(AdminRequest::ListKeyspaces).await;
        let AdminAnswer::Keyspaces(keyspaces) = listed.context("listing the keyspaces")? else {
            bail!("listing the keyspaces gave another answer");
        };
        match keyspaces.iter().find(|keyspace| keyspace.name == name) {
            Some(keyspace) if keyspace.mode != mode => {
                bail!("keyspace {name} exists as {}, not {mode}", keyspace.mode)
            }
            found => Ok(found.is_some()),
        }
    }

    /// Waits until `node` answers a read of keyspace `name` (for a strong keyspace, a stale
    /// one: the node has the group, whoever leads it).
    async fn wait_served(&self, node: &Node, name: &str, mode: KeyspaceMode) -> anyhow::Result<()> {
        let level = match mode {
            KeyspaceMode::Strong => ReadLevel::Stale,
            KeyspaceMode::Eventual(_) => ReadLevel::Local,
            // A paxos read is a round of its own: linearizable is its one level.
            KeyspaceMode::Paxos => ReadLevel::Linearizable,
        };
        let probe = || Operation::Get {
            key: "examples-probe".into(),
        };
        poll(SETTLE, &format!("{name} on {}", node.id), async || {
            let read =
                self.client
                    .execute_at(&node.endpoint, name, probe(), Some(level), None, None);
            read.await.ok()
        })
        .await
        .map(drop)
    }

    /// The node that leads strong keyspace `name` now, if one does.
    pub async fn leader(&self, name: &str) -> anyhow::Result<Option<NodeId>> {
        if let Some(local) = &self.local {
            return Ok(local.leader(name).await?);
        }
        let mut leader: Option<(capdial::types::Term, NodeId)> = None;
        for node in &self.nodes {
            let answer = self
                .client
                .admin_at(&node.endpoint, AdminRequest::Status)
                .await?;
            let AdminAnswer::Status(status) = answer else {
                bail!("a status request to {} gave another answer", node.id);
            };
            let leads = status
                .strong
                .iter()
                .find(|group| group.keyspace == name && group.role == RaftRole::Leader);
            if let Some(group) = leads
                && leader.is_none_or(|(term, _)| group.term > term)
            {
                leader = Some((group.term, node.id));
            }
        }
        Ok(leader.map(|(_, node)| node))
    }

    /// Kills `node` (SIGKILL) if this example started the cluster; `false` if it did not (a
    /// cluster that already runs is not the example's to kill).
    pub fn kill(&self, node: NodeId) -> anyhow::Result<bool> {
        let Some(local) = &self.local else {
            return Ok(false);
        };
        local.kill(node)?;
        Ok(true)
    }

    /// Starts a node [`Cluster::kill`] killed again, on its data.
    pub async fn restart(&self, node: NodeId) -> anyhow::Result<()> {
        if let Some(local) = &self.local {
            local.restart(node).await?;
        }
        Ok(())
    }

    /// Splits the nodes into sides that cannot reach each other: the `capdial fault` path.
    /// Clients still reach every node.
    pub async fn partition(&self, sides: &[&[NodeId]]) -> anyhow::Result<()> {
        if let Some(local) = &self.local {
            return Ok(local.partition(sides).await?);
        }
        let sides = sides.iter().map(|side| side.to_vec()).collect();
        self.set_faults(&[FaultRule::Partition { sides }]).await
    }

    /// Replaces the fault rules on every node.
    pub async fn set_faults(&self, rules: &[FaultRule]) -> anyhow::Result<()> {
        let mut set = FaultRules::none();
        for rule in rules {
            set.add(rule.clone())?;
        }
        if let Some(local) = &self.local {
            return Ok(local.set_faults(set).await?);
        }
        // One request per node: the client library retries what a wait can cure (a node
        // not reachable yet); a refusal, such as a certificate without the admin role, is final.
        for node in &self.nodes {
            let request = AdminRequest::SetFaults(set.clone());
            self.client
                .admin_at(&node.endpoint, request)
                .await
                .with_context(|| format!("setting the fault rules on {}", node.id))?;
        }
        Ok(())
    }

    /// Removes every fault rule.
    pub async fn heal(&self) -> anyhow::Result<()> {
        self.set_faults(&[]).await
    }
}

fn node_list(nodes: &[Node]) -> String {
    let list: Vec<String> = nodes
        .iter()
        .map(|node| format!("{} {}", node.id, node.endpoint))
        .collect();
    list.join(", ")
}

/// A tag for this run's keys, so that runs against one long-lived cluster do not meet.
pub fn run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:x}", now.as_millis())
}

/// Asks `check` again until it gives `Some`, or fails naming `what` once `within` has passed.
pub async fn poll<T>(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("gave up after {within:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
}

/// A receipt on one line: the level served, by which node, and where that node stood.
pub fn receipt_line(receipt: &Receipt) -> String {
    let level = match receipt.level {
        Served::Read(level) => format!("{level} read"),
        Served::Committed => "committed".to_string(),
        Served::Write(WriteLevel::Local) => "local write".to_string(),
        Served::Write(WriteLevel::Quorum) => "quorum write".to_string(),
        Served::Write(WriteLevel::All) => "all write".to_string(),
    };
    let mut parts = vec![format!("{level} by {}", receipt.node)];
    match &receipt.position {
        Position::Raft { term, applied, .. } => {
            parts.push(format!("term {} applied {}", term.0, applied.0));
        }
        Position::Eventual {
            token,
            stamp,
            vector,
        } => {
            if let Some(token) = token {
                parts.push(format!("token {}:{}", token.node, token.seq));
            }
            if let Some(stamp) = stamp {
                // The stamp's tie-breaker is the writer's id, not a node's: left out.
                parts.push(format!("stamp {}.{}", stamp.physical_ms, stamp.logical));
            }
            if !vector.is_empty() {
                let seen: Vec<String> = vector
                    .iter()
                    .map(|(node, n)| format!("{node}={n}"))
                    .collect();
                parts.push(format!("has {}", seen.join(",")));
            }
        }
        Position::Paxos { acceptors, .. } => {
            let acceptors: Vec<String> = acceptors.iter().map(ToString::to_string).collect();
            parts.push(format!("accepted by {}", acceptors.join(",")));
        }
    }
    parts.join(" · ")
}

/// The node's own refusal inside a client error, if the node answered.
pub fn refusal(error: &ConnError) -> Option<&ClientError> {
    match error {
        ConnError::Client(refusal) => Some(refusal),
        _ => None,
    }
}

/// The invariant checks an example ends with: each prints `check NAME: ok — DETAIL` or
/// `check NAME: FAILED — DETAIL`, and the exit code says whether all held.
#[derive(Debug, Default)]
pub struct Checks {
    failed: Vec<String>,
}

impl Checks {
    pub fn check(&mut self, name: &str, held: bool, detail: impl std::fmt::Display) {
        let verdict = if held { "ok" } else { "FAILED" };
        println!("check {name}: {verdict} — {detail}");
        if !held {
            self.failed.push(name.to_string());
        }
    }

    /// Exit 0 if every check held, 1 if one failed.
    pub fn finish(self) -> std::process::ExitCode {
        if self.failed.is_empty() {
            println!("all checks passed");
            std::process::ExitCode::SUCCESS
        } else {
            println!("checks failed: {}", self.failed.join(", "));
            std::process::ExitCode::FAILURE
        }
    }
}
