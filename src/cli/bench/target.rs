//! The cluster a benchmark measures: one behind `--endpoint`, or a local one of `--nodes`
//! child processes that `--cluster` starts and stops. Also what a benchmark asks of the
//! cluster itself: its keyspaces, and a delay between every two nodes through the fault path.

use crate::cli::demo::READY_TIMEOUT;
use crate::cli::demo::cluster::{LocalCluster, stop_on_signal};
use crate::cli::demo::retry::describe;
use crate::client::conn::{Client, ClientOptions, DEFAULT_CLIENT_NAME};
use crate::local::LocalClusterError;
use crate::local::ops::{ensure_keyspace, set_faults_at};
use crate::net::faults::{FaultRule, FaultRules};
use crate::protocol::KeyspaceMode;
use crate::protocol::admin::MemberInfo;
use anyhow::{Context, bail};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
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

impl TargetArgs {
    /// Whether the bench starts its own local cluster.
    pub(crate) fn is_local(&self) -> bool {
        self.cluster
    }
}

impl Target {
    /// Starts or reaches the cluster; the runtime must be entered (signal handling).
    pub(crate) fn open(
        args: &TargetArgs,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Target> {
        let (cluster, options, description) = if args.cluster {
            let launched = LocalCluster::builder()
                .nodes(usize::from(args.nodes))
                .ready_timeout(READY_TIMEOUT)
                .request_timeout(REQUEST_TIMEOUT)
                .launch()?;
            stop_on_signal(launched.processes())?;
            let cluster = runtime.block_on(launched.ready())?;
            let options = cluster.client_options();
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
            Some(cluster) => cluster.client().clone(),
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

    /// The bench's own local cluster (`--cluster`), which can kill and restart nodes.
    pub(crate) fn local(&self) -> Option<&LocalCluster> {
        self._cluster.as_ref()
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
        ensure_keyspace(&self.client, &self.addresses(), name, mode)
            .await
            .map_err(|error| match error {
                LocalClusterError::KeyspaceExists { actual, .. } => anyhow::anyhow!(
                    "keyspace {name} exists as {actual}, not {mode}: pick another --keyspace"
                ),
                error => anyhow::Error::new(error),
            })
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
        set_faults_at(&self.client, &self.addresses(), &rules)
            .await
            .with_context(|| format!("setting a delay of {delay:?}"))
    }
}
