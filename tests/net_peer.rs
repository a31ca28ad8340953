//! Peer links over real QUIC on 127.0.0.1: messages flow between three nodes, fault rules
//! drop what they should, a peer that claims another node's name is cut off, a client
//! certificate on the peer protocol is turned away, and a malformed frame ends only its own
//! stream. Every wait has a deadline; nothing sleeps.

use capdial::net::faults::{FaultRule, FaultRules};
use capdial::net::peer::{Inbound, Lane, StreamHello, Transport, TransportConfig};
use capdial::net::tls::{self, Identity, Party};
use capdial::types::NodeId;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(10);

type Message = (u64, String);

struct TestNode {
    transport: Arc<Transport<Message>>,
    inbound: mpsc::Receiver<Inbound<Message>>,
    endpoint: quinn::Endpoint,
}

fn bind(dir: &Path, id: NodeId) -> quinn::Endpoint {
    let identity = Identity::load(dir, Party::Node, &id.to_string()).unwrap();
    quinn::Endpoint::server(
        identity.server_config().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap()
}

async fn cluster(dir: &Path, count: u64) -> Vec<TestNode> {
    let names: Vec<String> = (1..=count).map(|i| NodeId(i).to_string()).collect();
    tls::init(dir, &names, &["admin".to_string()]).unwrap();
    let endpoints: Vec<quinn::Endpoint> = (1..=count).map(|i| bind(dir, NodeId(i))).collect();
    let addresses: BTreeMap<NodeId, _> = endpoints
        .iter()
        .enumerate()
        .map(|(i, endpoint)| (NodeId(i as u64 + 1), endpoint.local_addr().unwrap()))
        .collect();
    let mut nodes = Vec::new();
    for (i, endpoint) in endpoints.into_iter().enumerate() {
        let id = NodeId(i as u64 + 1);
        let identity = Identity::load(dir, Party::Node, &id.to_string()).unwrap();
        let config = TransportConfig {
            id,
            peers: addresses.clone(),
            rng_seed: i as u64,
        };
        let transport = Transport::start(config, &identity, endpoint.clone()).unwrap();
        let (inbound_tx, inbound) = mpsc::channel(64);
        tokio::spawn(accept_peers(
            endpoint.clone(),
            transport.clone(),
            inbound_tx,
        ));
        nodes.push(TestNode {
            transport,
            inbound,
            endpoint,
        });
    }
    nodes
}

async fn accept_peers(
    endpoint: quinn::Endpoint,
    transport: Arc<Transport<Message>>,
    inbound: mpsc::Sender<Inbound<Message>>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(connection) = incoming.await else {
            continue;
        };
        if capdial::net::alpn_of(&connection).as_deref() == Some(tls::ALPN_PEER) {
            tokio::spawn(
                transport
                    .clone()
                    .serve_connection(connection, inbound.clone()),
            );
        }
    }
}

async fn receive(node: &mut TestNode) -> Inbound<Message> {
    tokio::time::timeout(DEADLINE, node.inbound.recv())
        .await
        .expect("a message within the deadline")
        .expect("inbound channel open")
}

fn text(id: u64, body: &str) -> Message {
    (id, body.to_string())
}

#[tokio::test]
async fn messages_flow_between_peers_on_both_lanes() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), 3).await;
    nodes[0]
        .transport
        .send(NodeId(2), Lane::Raft, &text(1, "append"))
        .unwrap();
    nodes[0]
        .transport
        .send(NodeId(2), Lane::Gossip, &text(2, "delta"))
        .unwrap();
    nodes[2]
        .transport
        .send(NodeId(2), Lane::Raft, &text(3, "vote"))
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let inbound = receive(&mut nodes[1]).await;
        got.push((inbound.from, inbound.message.0));
    }
    got.sort();
    assert_eq!(got, vec![(NodeId(1), 1), (NodeId(1), 2), (NodeId(3), 3)]);
    let unknown = nodes[0]
        .transport
        .send(NodeId(9), Lane::Raft, &text(4, "?"));
    assert!(unknown.is_err());
}

#[tokio::test]
async fn fault_rules_drop_then_heal() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), 3).await;
    let mut isolate = FaultRules::none();
    isolate.add(FaultRule::Isolate { node: NodeId(3) }).unwrap();
    for node in &nodes {
        node.transport.set_faults(isolate.clone());
    }
    nodes[0]
        .transport
        .send(NodeId(3), Lane::Raft, &text(1, "lost"))
        .unwrap();
    nodes[0]
        .transport
        .send(NodeId(2), Lane::Raft, &text(2, "kept"))
        .unwrap();
    assert_eq!(receive(&mut nodes[1]).await.message.0, 2);
    for node in &nodes {
        node.transport.set_faults(FaultRules::none());
    }
    nodes[0]
        .transport
        .send(NodeId(3), Lane::Raft, &text(3, "after heal"))
        .unwrap();
    // Same lane, same stream: had message 1 been sent, it would arrive first.
    assert_eq!(receive(&mut nodes[2]).await.message.0, 3);
}

#[tokio::test]
async fn a_peer_claiming_another_name_is_cut_off_and_garbage_ends_one_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), 3).await;
    let address = nodes[0].endpoint.local_addr().unwrap();
    // n2's certificate, but a hello that claims to be n3.
    let n2 = Identity::load(dir.path(), Party::Node, "n2").unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(n2.client_config(tls::ALPN_PEER).unwrap());
    let connection = endpoint
        .connect(address, "n1.node.capdial")
        .unwrap()
        .await
        .unwrap();
    let mut garbage = connection.open_uni().await.unwrap();
    garbage.write_all(&[0xFF; 16]).await.unwrap();
    let mut liar = connection.open_uni().await.unwrap();
    let hello = capdial::wire::encode(&StreamHello {
        from: NodeId(3),
        lane: Lane::Raft,
    })
    .unwrap();
    liar.write_all(&hello).await.unwrap();
    let closed = tokio::time::timeout(DEADLINE, connection.closed())
        .await
        .unwrap();
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );
    // The node still serves honest peers.
    nodes[1]
        .transport
        .send(NodeId(1), Lane::Raft, &text(7, "still here"))
        .unwrap();
    assert_eq!(receive(&mut nodes[0]).await.message.0, 7);
}

/// A delay rule holds messages in the link's queue until their time (no task per message):
/// each arrives, none before its delay, and a later undelayed message on another link is not
/// held up by them.
#[tokio::test]
async fn delayed_messages_wait_in_the_queue_and_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), 3).await;
    let delay = Duration::from_millis(100);
    let mut slow = FaultRules::none();
    let rule = FaultRule::Delay {
        a: NodeId(1),
        b: NodeId(2),
        delay,
        jitter: Duration::ZERO,
    };
    slow.add(rule).unwrap();
    nodes[0].transport.set_faults(slow);
    let sent = tokio::time::Instant::now();
    for i in 0..200 {
        nodes[0]
            .transport
            .send(NodeId(2), Lane::Gossip, &text(i, "delayed"))
            .unwrap();
    }
    nodes[0]
        .transport
        .send(NodeId(3), Lane::Raft, &text(500, "not delayed"))
        .unwrap();
    assert_eq!(receive(&mut nodes[2]).await.message.0, 500);
    let mut seen = Vec::new();
    for _ in 0..200 {
        seen.push(receive(&mut nodes[1]).await.message.0);
    }
    assert!(sent.elapsed() >= delay, "none arrived before its delay");
    seen.sort();
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
}

/// A client certificate (signed by the same CA) on the peer protocol is turned away before
/// any stream is read: each stream could otherwise make the node buffer a frame of up to the
/// wire's limit before its hello was checked.
#[tokio::test]
async fn a_client_certificate_on_the_peer_protocol_is_closed_before_any_frame_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 1).await;
    let address = nodes[0].endpoint.local_addr().unwrap();
    let admin = Identity::load(dir.path(), Party::Client, "admin").unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(admin.client_config(tls::ALPN_PEER).unwrap());
    let connection = endpoint
        .connect(address, tls::ANY_NODE_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    // A header announcing a frame at the limit, whose payload never comes.
    let mut header = vec![capdial::wire::encode(&()).unwrap()[0]];
    header.extend_from_slice(&(capdial::wire::FRAME_BYTES_MAX as u32).to_le_bytes());
    let mut stream = connection.open_uni().await.unwrap();
    let _ = stream.write_all(&header).await;
    let closed = tokio::time::timeout(DEADLINE, connection.closed())
        .await
        .expect("the node closes the connection");
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );
}

#[tokio::test]
async fn a_peer_moved_to_a_new_address_is_reached_there() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), 3).await;
    // n3 comes back on another port, with a transport of its own.
    let moved = bind(dir.path(), NodeId(3));
    let identity = Identity::load(dir.path(), Party::Node, "n3").unwrap();
    let config = TransportConfig {
        id: NodeId(3),
        peers: BTreeMap::new(),
        rng_seed: 9,
    };
    let transport = Transport::start(config, &identity, moved.clone()).unwrap();
    let (inbound_tx, inbound) = mpsc::channel(64);
    tokio::spawn(accept_peers(moved.clone(), transport.clone(), inbound_tx));
    let mut moved_node = TestNode {
        transport,
        inbound,
        endpoint: moved.clone(),
    };
    nodes[0]
        .transport
        .add_peer(NodeId(3), moved.local_addr().unwrap());
    nodes[0]
        .transport
        .send(NodeId(3), Lane::Raft, &text(7, "to the new address"))
        .unwrap();
    let inbound = receive(&mut moved_node).await;
    assert_eq!((inbound.from, inbound.message.0), (NodeId(1), 7));
}
