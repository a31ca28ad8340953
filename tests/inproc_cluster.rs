//! Three nodes in one process on loopback (real QUIC, real redb files), spoken to with raw
//! protocol frames: the node's own contract, below the client library.

mod common;

use capdial::eventual::{ReadValue, ValueType, WriteLevel};
use capdial::net::tls::{self, Identity, Party};
use capdial::node::{self, NodeConfig};
use capdial::protocol::admin::{AdminAnswer, AdminError, AdminRequest, FromNode, ToNode};
use capdial::protocol::{
    Answer, ClientError, ClientRequest, KeyspaceMode, Operation, ReadLevel, Served,
};
use capdial::types::NodeId;
use common::{b, poll_until};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;

struct Cluster {
    addresses: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// Ports below the ephemeral range, which no client socket can take before a node binds them.
fn free_addresses(count: u64) -> Vec<SocketAddr> {
    let ports = capdial::local::free_loopback_ports(count as usize).unwrap();
    ports
        .into_iter()
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .collect()
}

/// Starts nodes n1..=n`nodes`; certificates are made for `certified` nodes, so more can
/// join later with [`Cluster::join`].
async fn start(nodes: u64, certified: u64) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let names: Vec<String> = (1..=certified).map(|i| format!("n{i}")).collect();
    tls::init(&certs, &names, &["admin".to_string()]).unwrap();
    let addresses = free_addresses(certified);
    let (stop, _) = watch::channel(false);
    let cluster = Cluster {
        addresses,
        stop,
        _dir: dir,
    };
    for i in 1..=nodes {
        cluster.run(i, cluster.initial(nodes), false);
    }
    cluster
}

impl Cluster {
    fn initial(&self, nodes: u64) -> BTreeMap<NodeId, String> {
        (1..=nodes)
            .map(|i| (NodeId(i), self.addresses[i as usize - 1].to_string()))
            .collect()
    }

    /// Starts node `i`; `join`: it joins the running cluster.
    fn run(&self, i: u64, initial_cluster: BTreeMap<NodeId, String>, join: bool) {
        let config = NodeConfig {
            id: NodeId(i),
            listen: self.addresses[i as usize - 1],
            initial_cluster,
            data_dir: self._dir.path().join(format!("n{i}")),
            certs: self._dir.path().join("certs"),
            join,
            cache_bytes: 8 << 20,
            clock_skew_max: std::time::Duration::from_secs(300),
            watch: Default::default(),
        };
        let mut stopped = self.stop.subscribe();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            node::run(config, shutdown).await.unwrap();
        });
    }
}

struct RawClient {
    endpoint: quinn::Endpoint,
}

impl RawClient {
    fn new(certs: &Path) -> RawClient {
        let identity = Identity::load(certs, Party::Client, "admin").unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(identity.client_config(tls::ALPN_CLIENT).unwrap());
        RawClient { endpoint }
    }

    async fn ask(&self, node: SocketAddr, request: &ToNode) -> FromNode {
        let connection = self
            .endpoint
            .connect(node, tls::ANY_NODE_SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        send.write_all(&capdial::wire::encode(request).unwrap())
            .await
            .unwrap();
        send.finish().unwrap();
        let bytes = recv.read_to_end(16 << 20).await.unwrap();
        capdial::wire::decode::<FromNode>(&bytes).unwrap().0
    }

    async fn admin(
        &self,
        node: SocketAddr,
        request: AdminRequest,
    ) -> Result<AdminAnswer, AdminError> {
        match self.ask(node, &ToNode::Admin(request)).await {
            FromNode::Admin(result) => result,
            other => panic!("expected an admin answer, got {other:?}"),
        }
    }

    async fn data(
        &self,
        node: SocketAddr,
        request: ClientRequest,
    ) -> Result<(Answer, capdial::protocol::Receipt), ClientError> {
        match self.ask(node, &ToNode::Data(request)).await {
            FromNode::Data(response) => response.result,
            other => panic!("expected a data answer, got {other:?}"),
        }
    }
}

fn request(keyspace: &str, seq: u64, operation: Operation) -> ClientRequest {
    common::request(7, keyspace, seq, operation)
}

/// The leader of group 0, found through status.
async fn catalog_leader(client: &RawClient, cluster: &Cluster) -> SocketAddr {
    poll_until(Duration::from_secs(20), "a catalog leader", async || {
        for address in &cluster.addresses[..3] {
            if let Ok(AdminAnswer::Status(status)) =
                client.admin(*address, AdminRequest::Status).await
                && status.strong[0].role == capdial::protocol::admin::RaftRole::Leader
            {
                return Some(*address);
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_both_modes() {
    let cluster = start(3, 3).await;
    let client = RawClient::new(&cluster._dir.path().join("certs"));
    let leader = catalog_leader(&client, &cluster).await;
    let create = |name: &str, mode| AdminRequest::CreateKeyspace {
        name: name.to_string(),
        mode,
    };
    assert_eq!(
        client
            .admin(leader, create("orders", KeyspaceMode::Strong))
            .await,
        Ok(AdminAnswer::Done)
    );
    let set = KeyspaceMode::Eventual(ValueType::Set);
    assert_eq!(
        client.admin(leader, create("carts", set)).await,
        Ok(AdminAnswer::Done)
    );
    assert_eq!(
        client.admin(leader, create("carts", set)).await,
        Err(AdminError::KeyspaceExists {
            name: "carts".to_string()
        })
    );

    // A strong put: on the group's leader once it has one; followers redirect.
    let put = Operation::Put {
        key: b("o1"),
        value: b("paid"),
        context: None,
    };
    let (answer, receipt) = poll_until(Duration::from_secs(20), "a strong put", async || {
        for address in &cluster.addresses {
            match client
                .data(*address, request("orders", 1, put.clone()))
                .await
            {
                Ok(done) => return Some(done),
                Err(ClientError::NotLeader { .. } | ClientError::Unavailable { .. })
                | Err(ClientError::UnknownKeyspace { .. }) => {}
                Err(other) => panic!("strong put: {other}"),
            }
        }
        None
    })
    .await;
    assert!(matches!(answer, Answer::Written { .. }), "{answer:?}");
    assert_eq!(receipt.level, Served::Committed);

    // Eventual: accepted on every node, converges.
    for (i, address) in cluster.addresses.iter().enumerate() {
        let add = Operation::SetAdd {
            key: b("cart:1"),
            members: vec![b(&format!("item{i}"))],
        };
        let written =
            poll_until(
                Duration::from_secs(10),
                "carts on every node",
                async || match client
                    .data(*address, request("carts", 10 + i as u64, add.clone()))
                    .await
                {
                    Err(ClientError::UnknownKeyspace { .. }) => None,
                    other => Some(other),
                },
            )
            .await;
        let (answer, receipt) = written.unwrap();
        assert_eq!(answer, Answer::Acknowledged { acks: 1 });
        assert_eq!(receipt.level, Served::Write(WriteLevel::Local));
    }
    // Dropping a keyspace removes it everywhere; a second drop finds nothing.
    let leader = catalog_leader(&client, &cluster).await;
    let drop = AdminRequest::DropKeyspace {
        name: "orders".to_string(),
    };
    assert_eq!(
        client.admin(leader, drop.clone()).await,
        Ok(AdminAnswer::Done)
    );
    assert_eq!(
        client.admin(leader, drop).await,
        Err(AdminError::UnknownKeyspace {
            name: "orders".to_string()
        })
    );
    for address in &cluster.addresses {
        poll_until(Duration::from_secs(10), "orders gone", async || {
            let get = request("orders", 50, Operation::Get { key: b("o1") });
            match client.data(*address, get).await {
                Err(ClientError::UnknownKeyspace { .. }) => Some(()),
                _ => None,
            }
        })
        .await;
    }
    for address in &cluster.addresses {
        poll_until(Duration::from_secs(10), "carts converge", async || {
            let mut get = request("carts", 99, Operation::Get { key: b("cart:1") });
            get.read = Some(ReadLevel::Local);
            match client.data(*address, get).await {
                Ok((Answer::Eventual(ReadValue::Set { members, .. }), _)) if members.len() == 3 => {
                    Some(())
                }
                _ => None,
            }
        })
        .await;
    }
    let _ = cluster.stop.send(true);
}

async fn status(
    client: &RawClient,
    node: SocketAddr,
) -> Option<Box<capdial::protocol::admin::NodeStatus>> {
    match client.admin(node, AdminRequest::Status).await {
        Ok(AdminAnswer::Status(status)) => Some(status),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joins_every_group_and_the_gossip() {
    let cluster = start(3, 4).await;
    let client = RawClient::new(&cluster._dir.path().join("certs"));
    let leader = catalog_leader(&client, &cluster).await;
    let create = AdminRequest::CreateKeyspace {
        name: "orders".to_string(),
        mode: KeyspaceMode::Strong,
    };
    assert_eq!(client.admin(leader, create).await, Ok(AdminAnswer::Done));
    let create = AdminRequest::CreateKeyspace {
        name: "tags".to_string(),
        mode: KeyspaceMode::Eventual(ValueType::Set),
    };
    assert_eq!(client.admin(leader, create).await, Ok(AdminAnswer::Done));
    // n4 starts knowing the whole cluster, then is added.
    cluster.run(4, cluster.initial(4), true);
    let n4 = cluster.addresses[3];
    // An address that does not resolve is refused before it reaches the catalog.
    let unresolvable = AdminRequest::AddMember {
        id: NodeId(4),
        address: "no-port-here".to_string(),
    };
    assert_eq!(
        client.admin(leader, unresolvable).await,
        Err(AdminError::InvalidAddress {
            address: "no-port-here".to_string()
        })
    );
    let add = AdminRequest::AddMember {
        id: NodeId(4),
        address: n4.to_string(),
    };
    assert_eq!(
        client.admin(leader, add.clone()).await,
        Ok(AdminAnswer::Done)
    );
    assert_eq!(
        client.admin(leader, add).await,
        Err(AdminError::MemberExists { id: NodeId(4) })
    );
    // Every group, catalog and orders alike, ends with n4 as a voter, seen from n4.
    poll_until(
        Duration::from_secs(30),
        "n4 votes in every group",
        async || {
            let status = status(&client, n4).await?;
            let groups = &status.strong;
            let all = groups.len() == 2
                && groups
                    .iter()
                    .all(|g| g.voters.len() == 4 && g.leader.is_some());
            all.then_some(())
        },
    )
    .await;
    // The eventual keyspace gossips with n4 both ways.
    let add = Operation::SetAdd {
        key: b("t"),
        members: vec![b("from-n4")],
    };
    poll_until(Duration::from_secs(10), "a write on n4", async || {
        client.data(n4, request("tags", 1, add.clone())).await.ok()
    })
    .await;
    poll_until(Duration::from_secs(10), "n1 sees n4's write", async || {
        let get = request("tags", 2, Operation::Get { key: b("t") });
        match client.data(cluster.addresses[0], get).await {
            Ok((Answer::Eventual(ReadValue::Set { members, .. }), _)) if !members.is_empty() => {
                Some(())
            }
            _ => None,
        }
    })
    .await;
    let remove = AdminRequest::RemoveMember { id: NodeId(4) };
    let leader = catalog_leader(&client, &cluster).await;
    assert_eq!(client.admin(leader, remove).await, Ok(AdminAnswer::Done));
    poll_until(
        Duration::from_secs(30),
        "n4 leaves every group",
        async || {
            let status = status(&client, cluster.addresses[0]).await?;
            status
                .strong
                .iter()
                .all(|g| g.voters.len() == 3 && !g.voters.contains(&NodeId(4)))
                .then_some(())
        },
    )
    .await;
    let _ = cluster.stop.send(true);
}
