//! The cluster a benchmark measures: one behind `--endpoint`, or a local one of `--nodes`
//! child processes that `--cluster` starts and stops. Also what a benchmark asks of the
//! cluster itself: its keyspaces, and a delay between every two nodes through the fault path.

use crate::cli::demo::READY_TIMEOUT;
use crate::cli::demo::cluster::{LaunchOptions, LocalCluster};
use crate::cli::demo::retry::{describe, retry_until};
use crate::client::conn::{Client, ClientOptions, ConnError, DEFAULT_CLIENT_NAME};
use crate::net::faults::{FaultRule, FaultRules};
use crate::protocol::admin::{AdminAnswer, AdminError, AdminRequest, MemberInfo};
use crate::protocol::{KeyspaceMode, Operation, ReadLevel, default_read};
use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a keyspace may take to be created and served by every node.
const KEYSPACE_READY: Duration = Duration::from_secs(20);
/// Per-request deadline of the benchmark's clients: long enough to ride out an election,
/// short enough that a stuck request shows up as an error, not a stall.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to measure.
#[derive(Clone, Debug, Args)]
pub(crate) struct TargetArgs {
    /// Nodes to measure through (HOST:PORT), repeatable or comma-separated; the client learns
    /// the other members from them. Ignored with --cluster.
    #[arg(
        long,
        env = "CAPDIAL_ENDPOINT",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    endpoint: Vec<String>,
    /// The directory holding ca.pem and the client certificate. Ignored with --cluster.
    #[arg(long, env = "CAPDIAL_CERTS", value_name = "DIR")]
    certs: Option<PathBuf>,
    /// The client certificate to present (client-NAME.pem in --certs).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CLIENT_NAME)]
    client_name: String,
    /// Start a local cluster of child processes (temporary directory) and measure it.
    #[arg(long)]
    cluster: bool,
    /// Nodes of the local cluster (--cluster): 3 to 5.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(3..=5))]
    nodes: u8,
}

/// A connected cluster. Dropping it stops a local one.
pub(crate) struct Target {
    /// Kept so the local cluster's processes live as long as the target.
    _cluster: Option<LocalCluster>,
    pub(crate) client: Client,
    pub(crate) members: Vec<MemberInfo>,
    /// What was measured, for the output: "a local 3-node cluster" or the endpoints.
    pub(crate) description: String,
    options: ClientOptions,
}

impl Target {
    /// Starts or reaches the cluster; the runtime must be entered (signal handling).
    pub(crate) fn open(
        args: &TargetArgs,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Target> {
        let (cluster, options, description) = if args.cluster {
            let launch = LaunchOptions {
                nodes: usize::from(args.nodes),
                ..LaunchOptions::default()
            };
            let cluster = LocalCluster::start(&launch)?;
            cluster.stop_on_signal()?;
            let mut options = cluster.client_options();
            options.timeout = REQUEST_TIMEOUT;
            let description = format!("a local {}-node cluster on 127.0.0.1", args.nodes);
            (Some(cluster), options, description)
        } else {
            let endpoints = args.endpoint.clone();
            if endpoints.is_empty() {
                bail!("give --endpoint (or $CAPDIAL_ENDPOINT), or use --cluster");
            }
            let certs = args
                .certs
                .clone()
                .context("give --certs (or $CAPDIAL_CERTS), or use --cluster")?;
            let mut options = ClientOptions::new(endpoints.clone(), certs);
            options.name = args.client_name.clone();
            options.timeout = REQUEST_TIMEOUT;
            (None, options, endpoints.join(","))
        };
        let client = match &cluster {
            Some(cluster) => runtime.block_on(cluster.wait_ready(READY_TIMEOUT))?,
            None => runtime
                .block_on(Client::connect(options.clone()))
                .map_err(|error| anyhow::anyhow!(describe(&error)))
                .context("connecting")?,
        };
        let members = runtime
            .block_on(client.members())
            .map_err(|error| anyhow::anyhow!(describe(&error)))
            .context("listing the members")?;
        Ok(Target {
            _cluster: cluster,
            client,
            members,
            description,
            options,
        })
    }

    pub(crate) fn addresses(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| member.address.clone())
            .collect()
    }

    /// `count` clients with connections of their own (one per node each), for the tasks'
    /// sessions to share.
    pub(crate) async fn pools(&self, count: u32) -> anyhow::Result<Vec<Client>> {
        let mut pools = vec![self.client.clone()];
        while pools.len() < count.max(1) as usize {
            let client = Client::connect(self.options.clone())
                .await
                .map_err(|error| anyhow::anyhow!(describe(&error)))
                .context("opening a connection pool")?;
            pools.push(client);
        }
        Ok(pools)
    }

    /// Creates `name` in `mode` unless it exists, refuses one of another mode, and waits
    /// until every node serves it.
    pub(crate) async fn ensure_keyspace(
        &self,
        name: &str,
        mode: KeyspaceMode,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + KEYSPACE_READY;
        let create = || {
            self.client.admin(AdminRequest::CreateKeyspace {
                name: name.to_string(),
                mode,
            })
        };
        match retry_until(deadline, create).await {
            Ok(_) => {}
            Err(ConnError::Admin(AdminError::KeyspaceExists { .. })) => {
                self.check_mode(name, mode).await?;
            }
            Err(error) => bail!("creating keyspace {name}: {}", describe(&error)),
        }
        for address in self.addresses() {
            let read = || {
                let operation = Operation::Get {
                    key: Bytes::from_static(b"bench-probe"),
                };
                let level = match mode {
                    KeyspaceMode::Strong => ReadLevel::Stale,
                    KeyspaceMode::Eventual(_) => default_read(mode),
                };
                self.client
                    .execute_at(&address, name, operation, Some(level), None, None)
            };
            retry_until(deadline, read)
                .await
                .map_err(|error| anyhow::anyhow!(describe(&error)))
                .with_context(|| format!("waiting for {address} to serve keyspace {name}"))?;
        }
        Ok(())
    }

    async fn check_mode(&self, name: &str, mode: KeyspaceMode) -> anyhow::Result<()> {
        let answer = self
            .client
            .admin(AdminRequest::ListKeyspaces)
            .await
            .map_err(|error| anyhow::anyhow!(describe(&error)))?;
        let AdminAnswer::Keyspaces(keyspaces) = answer else {
            bail!("unexpected answer to a keyspace list: {answer:?}");
        };
        match keyspaces.iter().find(|keyspace| keyspace.name == name) {
            Some(keyspace) if keyspace.mode != mode => bail!(
                "keyspace {name} exists as {}, not {mode}: pick another --keyspace",
                keyspace.mode
            ),
            _ => Ok(()),
        }
    }

    /// Adds `delay` each way between every two members (zero: no rules), on every member,
    /// through the same fault path `capdial fault delay` uses.
    pub(crate) async fn set_delay(&self, delay: Duration) -> anyhow::Result<()> {
        let mut rules = FaultRules::none();
        if !delay.is_zero() {
            for (index, a) in self.members.iter().enumerate() {
                for b in &self.members[index + 1..] {
                    rules
                        .add(FaultRule::Delay {
                            a: a.id,
                            b: b.id,
                            delay,
                            jitter: Duration::ZERO,
                        })
                        .with_context(|| format!("a delay of {delay:?}"))?;
                }
            }
        }
        for member in &self.members {
            self.client
                .admin_at(&member.address, AdminRequest::SetFaults(rules.clone()))
                .await
                .map_err(|error| anyhow::anyhow!(describe(&error)))
                .with_context(|| format!("setting the delay on {}", member.id))?;
        }
        Ok(())
    }
}
