//! A node's settings: from flags, or from a TOML file with the same names.
//!
//! ```toml
//! id = "n1"
//! listen = "127.0.0.1:7001"
//! initial_cluster = "n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003"
//! data_dir = "/var/lib/capdial/n1"
//! certs = "/etc/capdial/certs"
//! join = false   # true on a node added to a running cluster (see `capdial member add`)
//! cache_mb = 64   # the storage engine's page cache: with it, what a node holds in memory
//! clock_skew_max_secs = 300   # lww states stamped further ahead of this node's clock are refused
//! watch_history = 10000   # changes each keyspace keeps for watches
//! watch_history_mb = 64   # ... and at most this many MiB of their keys and values
//! ```
//!
//! `initial_cluster` may also be a table: `[initial_cluster]` with `n1 = "127.0.0.1:7001"`.

use super::error::NodeError;
use crate::types::NodeId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: NodeId,
    /// The UDP address the QUIC endpoint binds (peers and clients alike).
    pub listen: SocketAddr,
    /// Every member of a new cluster and its address (this node included). Used to
    /// bootstrap; after that the catalog in group 0 is the truth.
    pub initial_cluster: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    pub certs: PathBuf,
    /// The node joins a running cluster (etcd's `initial-cluster-state=existing`): it learns
    /// the voters from the cluster instead of taking `initial_cluster` as the first ones.
    pub join: bool,
    /// The storage engine's page cache, in bytes. The data set lives on disk; this (and a
    /// round's changes) is what of it a node keeps in memory.
    pub cache_bytes: usize,
    /// How far ahead of this node's wall clock an `lww` state from a peer may be stamped;
    /// one stamped further ahead is refused (see `eventual::EngineConfig::clock_skew_max`).
    pub clock_skew_max: std::time::Duration,
    /// What each keyspace keeps of its recent changes for watches.
    pub watch: crate::node::core::WatchLimits,
}

impl NodeConfig {
    /// The page cache of a node not told otherwise.
    pub const CACHE_MB_DEFAULT: usize = 64;
    pub const CLOCK_SKEW_MAX_SECS_DEFAULT: u64 = 300;
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{value:?} is not a node id: use n<number>, e.g. n1")]
    NodeId { value: String },
    #[error("{entry:?} in the initial cluster is not id=host:port")]
    ClusterEntry { entry: String },
    #[error("{id} appears twice in the initial cluster")]
    DuplicateMember { id: NodeId },
    #[error("this node ({id}) is not in the initial cluster")]
    NotInCluster { id: NodeId },
    #[error(
        "{id}'s address in the initial cluster ({address}) is not {listen}, the address it listens on"
    )]
    AddressMismatch {
        id: NodeId,
        address: String,
        listen: SocketAddr,
    },
    #[error("{value:?} is not a socket address (host:port)")]
    Listen { value: String },
    #[error("missing setting {name}: give --{flag} or set it in the config file")]
    Missing {
        name: &'static str,
        flag: &'static str,
    },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Toml { path: PathBuf, message: String },
}

/// Parses `n<digits>` into a node id.
pub fn parse_node_id(value: &str) -> Result<NodeId, ConfigError> {
    NodeId::parse(value).ok_or_else(|| ConfigError::NodeId {
        value: value.to_string(),
    })
}

/// Parses `n1=host:port,n2=host:port,...`.
pub fn parse_cluster(value: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut cluster = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, address) = entry.split_once('=').ok_or(ConfigError::ClusterEntry {
            entry: entry.to_string(),
        })?;
        let id = parse_node_id(id.trim())?;
        if address.trim().is_empty() {
            return Err(ConfigError::ClusterEntry {
                entry: entry.to_string(),
            });
        }
        if cluster.insert(id, address.trim().to_string()).is_some() {
            return Err(ConfigError::DuplicateMember { id });
        }
    }
    Ok(cluster)
}

/// Settings as given, each optional: flags override the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialConfig {
    pub id: Option<String>,
    pub listen: Option<String>,
    pub initial_cluster: Option<ClusterSetting>,
    pub data_dir: Option<PathBuf>,
    pub certs: Option<PathBuf>,
    pub join: Option<bool>,
    pub cache_mb: Option<usize>,
    pub clock_skew_max_secs: Option<u64>,
    pub watch_history: Option<usize>,
    pub watch_history_mb: Option<usize>,
}

/// The initial cluster as a string or as a table.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ClusterSetting {
    Text(String),
    Table(BTreeMap<String, String>),
}

impl PartialConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<PartialConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| ConfigError::Toml {
            path: path.to_path_buf(),
            message: error.to_string(),
        })
    }

    /// `self` with every setting `flags` gives replaced.
    pub fn overridden_by(self, flags: PartialConfig) -> PartialConfig {
        PartialConfig {
            id: flags.id.or(self.id),
            listen: flags.listen.or(self.listen),
            initial_cluster: flags.initial_cluster.or(self.initial_cluster),
            data_dir: flags.data_dir.or(self.data_dir),
            certs: flags.certs.or(self.certs),
            join: flags.join.or(self.join),
            cache_mb: flags.cache_mb.or(self.cache_mb),
            clock_skew_max_secs: flags.clock_skew_max_secs.or(self.clock_skew_max_secs),
            watch_history: flags.watch_history.or(self.watch_history),
            watch_history_mb: flags.watch_history_mb.or(self.watch_history_mb),
        }
    }

    /// Checks every setting and their relations.
    pub fn resolve(self) -> Result<NodeConfig, ConfigError> {
        let missing = |name, flag| ConfigError::Missing { name, flag };
        let id = parse_node_id(&self.id.ok_or(missing("id", "id"))?)?;
        let listen_text = self.listen.ok_or(missing("listen", "listen"))?;
        let listen: SocketAddr = listen_text.parse().map_err(|_| ConfigError::Listen {
            value: listen_text.clone(),
        })?;
        let initial_cluster = match self
            .initial_cluster
            .ok_or(missing("initial_cluster", "initial-cluster"))?
        {
            ClusterSetting::Text(text) => parse_cluster(&text)?,
            ClusterSetting::Table(table) => {
                let text: Vec<String> = table.iter().map(|(k, v)| format!("{k}={v}")).collect();
                parse_cluster(&text.join(","))?
            }
        };
        let address = initial_cluster
            .get(&id)
            .ok_or(ConfigError::NotInCluster { id })?;
        // Listening on every interface (0.0.0.0:PORT) covers any advertised address on PORT.
        let covers = |a: SocketAddr| {
            a == listen || (listen.ip().is_unspecified() && a.port() == listen.port())
        };
        if address.parse::<SocketAddr>().is_ok_and(|a| !covers(a)) {
            return Err(ConfigError::AddressMismatch {
                id,
                address: address.clone(),
                listen,
            });
        }
        Ok(NodeConfig {
            id,
            listen,
            initial_cluster,
            data_dir: self.data_dir.ok_or(missing("data_dir", "data-dir"))?,
            certs: self.certs.ok_or(missing("certs", "certs"))?,
            join: self.join.unwrap_or(false),
            cache_bytes: self.cache_mb.unwrap_or(NodeConfig::CACHE_MB_DEFAULT) << 20,
            clock_skew_max: std::time::Duration::from_secs(
                self.clock_skew_max_secs
                    .unwrap_or(NodeConfig::CLOCK_SKEW_MAX_SECS_DEFAULT),
            ),
            watch: watch_limits(self.watch_history, self.watch_history_mb),
        })
    }
}

fn watch_limits(changes: Option<usize>, mb: Option<usize>) -> crate::node::core::WatchLimits {
    use crate::node::core::WatchLimits;
    WatchLimits {
        changes: changes.unwrap_or(WatchLimits::CHANGES_DEFAULT),
        bytes: mb.map_or(WatchLimits::BYTES_DEFAULT, |mb| mb.saturating_mul(1 << 20)),
    }
}

/// How long an address lookup off the driver may take before the address counts as
/// unresolvable.
const LOOKUP_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// The first socket address `address` (host:port) resolves to, looked up on tokio's blocking
/// pool: a slow DNS server must never hold up the task that runs it.
pub(super) async fn lookup_one(address: &str) -> Option<SocketAddr> {
    let lookup = tokio::net::lookup_host(address);
    match tokio::time::timeout(LOOKUP_WAIT_MAX, lookup).await {
        Ok(Ok(mut all)) => all.next(),
        _ => None,
    }
}

/// Every member's address, resolved once at start.
pub(super) async fn resolve(
    cluster: &BTreeMap<NodeId, String>,
) -> Result<BTreeMap<NodeId, SocketAddr>, NodeError> {
    let mut resolved = BTreeMap::new();
    for (id, address) in cluster {
        let error = || NodeError::Resolve {
            id: *id,
            address: address.clone(),
        };
        resolved.insert(*id, lookup_one(address).await.ok_or_else(error)?);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_and_clusters_parse() {
        assert_eq!(parse_node_id("n12").unwrap(), NodeId(12));
        for bad in ["12", "n", "nx", "n-1", "N1"] {
            assert!(parse_node_id(bad).is_err(), "{bad}");
        }
        let cluster = parse_cluster("n1=127.0.0.1:7001, n2=127.0.0.1:7002").unwrap();
        assert_eq!(cluster.len(), 2);
        assert_eq!(cluster[&NodeId(2)], "127.0.0.1:7002");
        assert!(matches!(
            parse_cluster("n1=a:1,n1=b:2"),
            Err(ConfigError::DuplicateMember { .. })
        ));
        assert!(matches!(
            parse_cluster("n1"),
            Err(ConfigError::ClusterEntry { .. })
        ));
    }

    #[test]
    fn a_file_and_flags_combine_and_are_checked() {
        let file: PartialConfig = toml::from_str(
            r#"
            id = "n1"
            listen = "127.0.0.1:7001"
            data_dir = "/tmp/n1"
            certs = "/tmp/certs"
            [initial_cluster]
            n1 = "127.0.0.1:7001"
            n2 = "127.0.0.1:7002"
            "#,
        )
        .unwrap();
        let config = file.clone().resolve().unwrap();
        assert_eq!(config.id, NodeId(1));
        assert_eq!(config.initial_cluster.len(), 2);
        assert!(
            !config.join,
            "a node founds its cluster unless told to join"
        );
        let join = PartialConfig {
            join: Some(true),
            ..PartialConfig::default()
        };
        assert!(file.clone().overridden_by(join).resolve().unwrap().join);
        let flags = PartialConfig {
            listen: Some("127.0.0.1:7009".to_string()),
            ..PartialConfig::default()
        };
        assert!(matches!(
            file.clone().overridden_by(flags).resolve(),
            Err(ConfigError::AddressMismatch { .. })
        ));
        let everywhere = PartialConfig {
            listen: Some("0.0.0.0:7001".to_string()),
            ..PartialConfig::default()
        };
        assert!(file.clone().overridden_by(everywhere).resolve().is_ok());
        assert!(matches!(
            PartialConfig::default().resolve(),
            Err(ConfigError::Missing { name: "id", .. })
        ));
    }
}
