//! Connections to the cluster: one `Client::connect` per connection, because each one owns its
//! own HTTP/2 channel (clones of a client share it, which would defeat --connections).

use crate::args::Target;
use etcd_client::{Client, ConnectOptions, KvClient};
use std::time::Duration;

/// How long connecting to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the Status and MemberList RPCs said about the cluster.
pub struct ClusterInfo {
    /// The leader's client endpoint (one of --endpoints).
    pub leader: String,
    /// The server version the leader reports, e.g. "3.4.23".
    pub version: String,
    pub members: usize,
}

/// Connections for puts and for gets (the same ones unless --target split).
pub struct Pools {
    pub writes: Vec<KvClient>,
    pub reads: Vec<KvClient>,
}

/// No per-request timeout on the channel: the load loop bounds each request itself (and
/// tells a timeout from the end of the run), and `cluster_info` bounds its own calls.
async fn connect(endpoint: &str) -> Result<Client, String> {
    let options = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT);
    bounded(CONNECT_TIMEOUT, Client::connect([endpoint], Some(options)))
        .await
        .map_err(|e| format!("connect to {endpoint}: {e}"))
}

/// `call`, or an error once `limit` passed.
async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// Asks every endpoint for its Status to learn which one is the leader. Every member must
/// answer: a benchmark against a cluster with a member down would measure something else.
pub async fn cluster_info(endpoints: &[String], timeout: Duration) -> Result<ClusterInfo, String> {
    let mut own_ids = Vec::new();
    let mut leader_id = 0;
    let mut version = String::new();
    let mut members = 0;
    for endpoint in endpoints {
        let mut client = connect(endpoint).await?;
        let status = bounded(timeout, client.status())
            .await
            .map_err(|e| format!("status of {endpoint}: {e}"))?;
        own_ids.push(status.header().map(|h| h.member_id()).unwrap_or(0));
        leader_id = status.leader();
        version = status.version().to_string();
        if members == 0 {
            let list = bounded(timeout, client.member_list())
                .await
                .map_err(|e| format!("member list from {endpoint}: {e}"))?;
            members = list.members().len();
        }
    }
    let leader = own_ids
        .iter()
        .position(|id| *id == leader_id && leader_id != 0)
        .map(|i| endpoints[i].clone())
        .ok_or_else(|| format!("leader {leader_id:x} is not among --endpoints"))?;
    Ok(ClusterInfo {
        leader,
        version,
        members,
    })
}

/// `count` connections: connection j to endpoint j % n, or all of them to `leader`.
async fn pool(
    endpoints: &[String],
    leader: Option<&str>,
    count: u64,
) -> Result<Vec<KvClient>, String> {
    let mut pool = Vec::new();
    for j in 0..count as usize {
        let endpoint = leader.unwrap_or(&endpoints[j % endpoints.len()]);
        pool.push(connect(endpoint).await?.kv_client());
    }
    Ok(pool)
}

/// Opens the connections the target asks for; with `split`, only the pools the workload
/// uses (a put-only run opens no read connections, and so on).
pub async fn open_pools(
    target: Target,
    endpoints: &[String],
    leader: &str,
    count: u64,
    need_writes: bool,
    need_reads: bool,
) -> Result<Pools, String> {
    let shared = match target {
        Target::All => Some(pool(endpoints, None, count).await?),
        Target::Leader => Some(pool(endpoints, Some(leader), count).await?),
        Target::Split => None,
    };
    if let Some(shared) = shared {
        return Ok(Pools {
            writes: shared.clone(),
            reads: shared,
        });
    }
    let writes = if need_writes {
        pool(endpoints, Some(leader), count).await?
    } else {
        Vec::new()
    };
    let reads = if need_reads {
        pool(endpoints, None, count).await?
    } else {
        Vec::new()
    };
    Ok(Pools { writes, reads })
}
