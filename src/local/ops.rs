//! What a local cluster, the demo and the benchmark ask of a running cluster through its
//! admin path: a keyspace every node serves, the same fault rules on every node, a node's
//! status. They take a client and endpoints, so they work on any cluster, local or not.

use super::LocalClusterError;
use super::retry::retry_until;
use crate::client::conn::{Client, ConnError};
use crate::net::faults::FaultRules;
use crate::protocol::admin::{AdminAnswer, AdminError, AdminRequest, NodeStatus, RaftRole};
use crate::protocol::{KeyspaceMode, Operation, ReadLevel, default_read};
use crate::types::NodeId;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// How long a keyspace or a fault rule may take to reach every node.
pub(crate) const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

fn request_error(
    what: &'static str,
    endpoint: Option<&str>,
) -> impl FnOnce(ConnError) -> LocalClusterError {
    let endpoint = endpoint.map(str::to_string);
    move |source| LocalClusterError::Request {
        what,
        endpoint,
        source,
    }
}

/// Creates keyspace `name` in `mode` unless it exists in that mode, refuses one of another
/// mode, and waits until every node in `endpoints` serves it.
pub(crate) async fn ensure_keyspace(
    client: &Client,
    endpoints: &[String],
    name: &str,
    mode: KeyspaceMode,
) -> Result<(), LocalClusterError> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let create = || {
        client.admin(AdminRequest::CreateKeyspace {
            name: name.to_string(),
            mode,
        })
    };
    match retry_until(deadline, create).await {
        Ok(_) => {}
        Err(ConnError::Admin(AdminError::KeyspaceExists { .. })) => {
            check_mode(client, name, mode).await?;
        }
        Err(error) => return Err(request_error("creating a keyspace", None)(error)),
    }
    for endpoint in endpoints {
        wait_keyspace(client, endpoint, name, mode, deadline).await?;
    }
    if mode == KeyspaceMode::Strong {
        // A stale read needs only the group on the node asked; a write needs its leader.
        let read = || client.execute(name, probe(), None, None, None);
        retry_until(deadline, read)
            .await
            .map_err(request_error("waiting for the keyspace's leader", None))?;
    }
    Ok(())
}

/// A read of a key nobody writes.
fn probe() -> Operation {
    Operation::Get {
        key: Bytes::from_static(b"local-cluster-probe"),
    }
}

async fn check_mode(
    client: &Client,
    name: &str,
    mode: KeyspaceMode,
) -> Result<(), LocalClusterError> {
    let actual = crate::client::typed::keyspace_mode(client, name)
        .await
        .map_err(request_error("listing the keyspaces", None))?;
    match actual {
        Some(actual) if actual != mode => Err(LocalClusterError::KeyspaceExists {
            keyspace: name.to_string(),
            expected: mode,
            actual,
        }),
        _ => Ok(()),
    }
}

/// Waits until `endpoint` serves a read of `name` (a stale one for a strong keyspace: the
/// node has the group, whoever leads it).
async fn wait_keyspace(
    client: &Client,
    endpoint: &str,
    name: &str,
    mode: KeyspaceMode,
    deadline: Instant,
) -> Result<(), LocalClusterError> {
    let level = match mode {
        KeyspaceMode::Strong => ReadLevel::Stale,
        // A paxos read runs a round: it answers once a majority runs the keyspace.
        KeyspaceMode::Eventual(_) | KeyspaceMode::Paxos => default_read(mode),
    };
    let read = || client.execute_at(endpoint, name, probe(), Some(level), None, None);
    retry_until(deadline, read)
        .await
        .map(drop)
        .map_err(request_error("waiting for the keyspace", Some(endpoint)))
}

/// Replaces the fault rules on every node in `endpoints`, as `capdial fault` does.
pub(crate) async fn set_faults_at(
    client: &Client,
    endpoints: &[String],
    rules: &FaultRules,
) -> Result<(), LocalClusterError> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    for endpoint in endpoints {
        let request = || client.admin_at(endpoint, AdminRequest::SetFaults(rules.clone()));
        retry_until(deadline, request)
            .await
            .map_err(request_error("setting the fault rules", Some(endpoint)))?;
    }
    Ok(())
}

/// A node's status, asked of that node.
pub(crate) async fn node_status(client: &Client, address: &str) -> Result<NodeStatus, ConnError> {
    match client.admin_at(address, AdminRequest::Status).await? {
        AdminAnswer::Status(status) => Ok(*status),
        other => Err(ConnError::Protocol {
            reason: format!("a status request was answered with {other:?}"),
        }),
    }
}

/// The leader of keyspace `name`'s Raft group among the nodes at `endpoints`: the node that
/// says it leads, in the highest term if two do (one of them on the minority side of a
/// partition). `None`: no node leads it now (or `name` is not a strong keyspace).
pub(crate) async fn keyspace_leader(
    client: &Client,
    endpoints: &[String],
    name: &str,
) -> Result<Option<NodeId>, LocalClusterError> {
    let mut leader = None;
    for endpoint in endpoints {
        let status = node_status(client, endpoint)
            .await
            .map_err(request_error("asking the status", Some(endpoint)))?;
        let leads = status
            .strong
            .iter()
            .find(|group| group.keyspace == name && group.role == RaftRole::Leader);
        if let Some(group) = leads
            && leader.is_none_or(|(term, _)| group.term > term)
        {
            leader = Some((group.term, status.node));
        }
    }
    Ok(leader.map(|(_, node)| node))
}

/// The catalog's leader as `status` knows it.
pub(crate) fn catalog_leader(status: &NodeStatus) -> Option<NodeId> {
    status.strong.first().and_then(|group| group.leader)
}
