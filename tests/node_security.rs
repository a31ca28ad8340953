//! Mutual TLS on a real node: a client whose certificate another CA signed is refused, a peer
//! with a foreign certificate cannot connect or join, and a peer whose (valid) certificate
//! names another node than the one it claims to be is cut off. The transport-level checks
//! themselves are in tests/net_tls.rs and tests/net_peer.rs; these run against `capdial node`.

mod common;

use capdial::client::conn::ConnError;
use capdial::client::conn::{Client, ClientOptions};
use capdial::net::faults::FaultRules;
use capdial::net::peer::{Lane, StreamHello};
use capdial::net::tls::{self, Identity, Party, Role};
use capdial::protocol::admin::RaftRole;
use capdial::protocol::admin::{AdminAnswer, AdminRequest, ToNode};
use capdial::protocol::admin::{AdminError, FromNode};
use capdial::protocol::{Answer, KeyspaceMode};
use capdial::protocol::{ClientError, ClientResponse};
use capdial::types::NodeId;
use common::{
    CLIENT_NAME, Cluster, NodeProcess, READY_DEADLINE, REQUEST_DEADLINE, b, client_endpoint,
    connect_raw, free_ports, make_certs, node_names, op, poll_until, request, request_raw,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const ORDERS: &str = "orders";

/// A certificate directory that trusts `ca_from`'s CA but holds `files` (a certificate and
/// its key) from `certs_from`: a party that knows the cluster's CA yet was not signed by it.
fn mixed_dir(root: &Path, ca_from: &Path, certs_from: &Path, files: &[&str]) -> PathBuf {
    let dir = root.join(format!("mixed-{}", files.join("-")));
    std::fs::create_dir_all(&dir).expect("create the mixed directory");
    std::fs::copy(ca_from.join("ca.pem"), dir.join("ca.pem")).expect("copy ca.pem");
    for file in files {
        std::fs::copy(certs_from.join(file), dir.join(file)).expect("copy a certificate");
    }
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_and_misnamed_certificates_are_refused() {
    let cluster = Cluster::start(3).await;
    cluster.create_keyspace(ORDERS, KeyspaceMode::Strong).await;
    let foreign = cluster.dir.path().join("foreign-certs");
    make_certs(&foreign, &node_names(3));

    foreign_client_is_refused(&cluster, &foreign).await;
    foreign_peer_is_refused(&cluster, &foreign).await;
    misnamed_peer_is_cut_off(&cluster).await;
    intruder_process_cannot_join(&cluster, &foreign).await;

    // After all of it, the cluster still serves.
    let client = cluster.client().await;
    let written = client
        .execute(ORDERS, op::put("still", "serving"), None, None, None)
        .await;
    assert!(
        matches!(written, Ok((Answer::Written { .. }, _))),
        "{written:?}"
    );
}

async fn foreign_client_is_refused(cluster: &Cluster, foreign: &Path) {
    // Knows the cluster CA (so it accepts the node) but holds a foreign certificate: only the
    // node can refuse it.
    let mixed = mixed_dir(
        cluster.dir.path(),
        &cluster.certs,
        foreign,
        &["client-admin.pem", "client-admin-key.pem"],
    );
    let endpoint = client_endpoint(&mixed, CLIENT_NAME);
    for node in 1..=3 {
        let outcome = match connect_raw(&endpoint, cluster.node(node).address).await {
            Err(refused) => Err(refused),
            Ok(connection) => request_raw(&connection, &ToNode::Admin(AdminRequest::Status)).await,
        };
        assert!(
            outcome.is_err(),
            "n{node} served a client signed by another CA: {outcome:?}"
        );
    }
    // The client library with an entirely foreign directory gets nowhere either.
    let mut options = ClientOptions::new(cluster.endpoints(), foreign.to_path_buf());
    options.timeout = REQUEST_DEADLINE;
    let outcome = match Client::connect(options).await {
        Err(refused) => Err(refused.to_string()),
        Ok(client) => client
            .admin(AdminRequest::Status)
            .await
            .map_err(|e| e.to_string()),
    };
    assert!(outcome.is_err(), "a foreign client was served: {outcome:?}");
}

/// Dials node `nX` on the peer protocol with `identity`, sends a stream hello claiming to be
/// `claims`, and returns whether the node ended the connection within the deadline.
async fn peer_dial_is_refused(
    cluster: &Cluster,
    node: usize,
    identity: &Identity,
    claims: NodeId,
) -> bool {
    let config = identity
        .client_config(tls::ALPN_PEER)
        .expect("peer TLS config");
    let endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("client endpoint");
    let server_name = tls::node_server_name(&format!("n{node}"));
    let Ok(connecting) = endpoint.connect_with(config, cluster.node(node).address, &server_name)
    else {
        return true;
    };
    let Ok(Ok(connection)) = tokio::time::timeout(REQUEST_DEADLINE, connecting).await else {
        return true;
    };
    let hello = capdial::wire::encode(&StreamHello {
        from: claims,
        lane: Lane::Raft,
    })
    .expect("encode a hello");
    if let Ok(mut stream) = connection.open_uni().await {
        let _ = stream.write_all(&hello).await;
    }
    tokio::time::timeout(READY_DEADLINE, connection.closed())
        .await
        .is_ok()
}

async fn foreign_peer_is_refused(cluster: &Cluster, foreign: &Path) {
    let mixed = mixed_dir(
        cluster.dir.path(),
        &cluster.certs,
        foreign,
        &["node-n3.pem", "node-n3-key.pem"],
    );
    let impostor = Identity::load(&mixed, Party::Node, "n3").expect("load the foreign n3");
    for node in 1..=2 {
        assert!(
            peer_dial_is_refused(cluster, node, &impostor, NodeId(3)).await,
            "n{node} kept a peer connection from a foreign n3"
        );
    }
}

async fn misnamed_peer_is_cut_off(cluster: &Cluster) {
    // A real, CA-signed certificate of n2, claiming to be n3.
    let n2 = Identity::load(&cluster.certs, Party::Node, "n2").expect("load n2");
    assert!(
        peer_dial_is_refused(cluster, 1, &n2, NodeId(3)).await,
        "n1 kept a connection from n2 claiming to be n3"
    );
    // A client certificate on the peer protocol, claiming to be n2.
    let admin = Identity::load(&cluster.certs, Party::Client, CLIENT_NAME).expect("load admin");
    assert!(
        peer_dial_is_refused(cluster, 1, &admin, NodeId(2)).await,
        "n1 kept a peer connection from a client certificate"
    );
}

/// A whole `capdial node n3` process with foreign certificates, pointed at the real n1 and
/// n2: it tries elections but never hears from the cluster, and the cluster never lists it.
async fn intruder_process_cannot_join(cluster: &Cluster, foreign: &Path) {
    let port = free_ports(1)[0];
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let initial = format!("n1={},n2={},n3={address}", cluster.addr(1), cluster.addr(2));
    let root = cluster.dir.path().join("intruder");
    let mut intruder = NodeProcess::new(&root, "n3", address, foreign, &initial);
    intruder.logs_on_panic = true;
    intruder.spawn();
    let endpoint = client_endpoint(foreign, CLIENT_NAME);
    // Once it has tried to get elected, it has sent what it could to n1 and n2.
    let tried = poll_until(READY_DEADLINE, "the intruder to campaign", async || {
        intruder.assert_alive();
        let connection = connect_raw(&endpoint, address).await.ok()?;
        let Ok(capdial::protocol::admin::FromNode::Admin(Ok(AdminAnswer::Status(status)))) =
            request_raw(&connection, &ToNode::Admin(AdminRequest::Status)).await
        else {
            return None;
        };
        let catalog = status.strong.first()?.clone();
        (catalog.role != RaftRole::Follower).then_some(catalog)
    })
    .await;
    assert_eq!(tried.leader, None, "the intruder never learns a leader");
    assert_ne!(
        tried.role,
        RaftRole::Leader,
        "the intruder is never elected"
    );
    for node in 1..=3 {
        let status = cluster.status(node).await.expect("a real node answers");
        let catalog = status.strong.first().expect("the catalog group");
        let leader = catalog.leader.expect("the real cluster keeps its leader");
        assert!((1..=3).contains(&leader.0));
        assert_eq!(catalog.voters, vec![NodeId(1), NodeId(2), NodeId(3)]);
        let members = cluster.admin_at(node, AdminRequest::Members).await;
        let Ok(Ok(AdminAnswer::Members(members))) = members else {
            panic!("n{node} lists its members: {members:?}");
        };
        let addresses: Vec<String> = members.iter().map(|m| m.address.clone()).collect();
        assert!(
            !addresses.contains(&address.to_string()),
            "the intruder's address is no member: {addresses:?}"
        );
    }
}

/// A client library handle that holds the certificate of client `name`.
async fn client_named(cluster: &Cluster, name: &str) -> Client {
    let mut options = ClientOptions::new(cluster.endpoints(), cluster.certs.clone());
    options.name = name.to_string();
    Client::connect(options).await.expect("client connects")
}

fn is_denied(error: &ClientError, role: Role, operation: &str) -> bool {
    matches!(error, ClientError::PermissionDenied { role: r, operation: o, .. }
        if *r == role && o == operation)
}

fn admin_denied(answer: &Result<AdminAnswer, ConnError>, role: Role, operation: &str) -> bool {
    match answer {
        Err(ConnError::Admin(AdminError::Request(error))) | Err(ConnError::Client(error)) => {
            is_denied(error, role, operation)
        }
        _ => false,
    }
}

/// `readonly` reads, `app` reads and writes data, only `admin` changes keyspaces, members
/// and fault rules; a node's certificate may not use the client protocol at all. Every
/// refusal is a typed `PermissionDenied` naming the role and the operation.
#[tokio::test(flavor = "multi_thread")]
async fn roles_limit_what_each_certificate_may_do() {
    let cluster = Cluster::start(3).await;
    tls::issue(&cluster.certs, Role::App, "web").expect("issue web");
    tls::issue(&cluster.certs, Role::Readonly, "dash").expect("issue dash");
    cluster.create_keyspace(ORDERS, KeyspaceMode::Strong).await;
    let web = client_named(&cluster, "web").await;
    let dash = client_named(&cluster, "dash").await;

    let written = web
        .execute(ORDERS, op::put("k", "v"), None, None, None)
        .await;
    assert!(
        matches!(written, Ok((Answer::Written { .. }, _))),
        "{written:?}"
    );
    let read = dash.execute(ORDERS, op::get("k"), None, None, None).await;
    assert!(matches!(read, Ok((Answer::Strong(Some(_)), _))), "{read:?}");
    let refused = dash
        .execute(ORDERS, op::put("k", "w"), None, None, None)
        .await;
    assert!(
        matches!(&refused, Err(ConnError::Client(e)) if is_denied(e, Role::Readonly, "put")),
        "{refused:?}"
    );
    let text = refused.unwrap_err().to_string();
    assert!(text.contains("readonly") && text.contains("put"), "{text}");
    assert!(dash.admin(AdminRequest::Status).await.is_ok());

    let changes = [
        (
            AdminRequest::DropKeyspace {
                name: ORDERS.into(),
            },
            "drop keyspace",
        ),
        (
            AdminRequest::RemoveMember { id: NodeId(3) },
            "remove member",
        ),
        (AdminRequest::SetFaults(FaultRules::none()), "set faults"),
    ];
    for (change, name) in changes {
        let answer = web.admin(change.clone()).await;
        assert!(admin_denied(&answer, Role::App, name), "{answer:?}");
        let answer = dash.admin(change).await;
        assert!(admin_denied(&answer, Role::Readonly, name), "{answer:?}");
    }
    let members = cluster.admin_at(1, AdminRequest::Members).await;
    assert!(
        matches!(&members, Ok(Ok(AdminAnswer::Members(m))) if m.len() == 3),
        "{members:?}"
    );
    let still = web.execute(ORDERS, op::get("k"), None, None, None).await;
    assert!(
        matches!(still, Ok((Answer::Strong(Some(_)), _))),
        "the keyspace stays"
    );

    cli_issues_roles_and_reports_a_refusal(&cluster).await;

    // A node's certificate on the client protocol: refused, whatever it asks.
    let n2 = Identity::load(&cluster.certs, Party::Node, "n2").expect("load n2");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
    endpoint.set_default_client_config(n2.client_config(tls::ALPN_CLIENT).expect("config"));
    let connection = connect_raw(&endpoint, cluster.node(1).address)
        .await
        .expect("the handshake itself succeeds");
    let status = request_raw(&connection, &ToNode::Admin(AdminRequest::Status)).await;
    assert!(
        matches!(&status, Ok(FromNode::Admin(Err(AdminError::Request(e))))
            if is_denied(e, Role::Node, "status")),
        "{status:?}"
    );
    let get = ToNode::Data(request(1, ORDERS, 1, op::get("k")));
    let get = request_raw(&connection, &get).await;
    assert!(
        matches!(&get, Ok(FromNode::Data(ClientResponse { result: Err(e) }))
            if is_denied(e, Role::Node, "get")),
        "{get:?}"
    );
}

/// Two clients that pick the same client id and sequence number are two sessions, because
/// a session is bound to the certificate: the second write applies, it is not answered with
/// the first one's result as a retry of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_cannot_answer_for_another_clients_session() {
    let cluster = Cluster::start(3).await;
    tls::issue(&cluster.certs, Role::App, "web").expect("issue web");
    cluster.create_keyspace(ORDERS, KeyspaceMode::Strong).await;
    let leader = poll_until(READY_DEADLINE, "a leader of orders", async || {
        cluster.leader_of(1, ORDERS).await
    })
    .await;
    let address = cluster.node(leader).address;
    let put = |value: &str| ToNode::Data(request(42, ORDERS, 1, op::put("shared", value)));
    let revision = |answer: Result<FromNode, String>| match answer {
        Ok(FromNode::Data(ClientResponse {
            result: Ok((Answer::Written { revision }, _)),
        })) => revision,
        other => panic!("a write's answer: {other:?}"),
    };
    let admin = connect_raw(&client_endpoint(&cluster.certs, CLIENT_NAME), address)
        .await
        .expect("admin connects");
    let web = connect_raw(&client_endpoint(&cluster.certs, "web"), address)
        .await
        .expect("web connects");
    let first = revision(request_raw(&admin, &put("from-admin")).await);
    let second = revision(request_raw(&web, &put("from-web")).await);
    assert!(
        second > first,
        "web's write applied: {first:?} then {second:?}"
    );
    let again = revision(request_raw(&web, &put("from-web")).await);
    assert_eq!(again, second, "web's own retry is still recognised");

    let client = cluster.client().await;
    let read = client
        .execute(ORDERS, op::get("shared"), None, None, None)
        .await;
    assert!(
        matches!(&read, Ok((Answer::Strong(Some(v)), _)) if v.value == b("from-web")),
        "{read:?}"
    );
}

/// `capdial certs issue --role readonly`, then `capdial put` with that certificate: exit 1,
/// and the message names the role and the operation.
async fn cli_issues_roles_and_reports_a_refusal(cluster: &Cluster) {
    let certs = cluster.certs.to_string_lossy().into_owned();
    let endpoints = cluster.endpoints().join(",");
    let dir = cluster.dir.path().to_path_buf();
    let run = tokio::task::spawn_blocking(move || {
        let issue = [
            "certs", "issue", "--dir", &certs, "--client", "viewer", "--role", "readonly",
        ];
        let issued = common::run_capdial(&dir, &issue, REQUEST_DEADLINE);
        assert!(
            issued.status.is_some_and(|status| status.success()),
            "{}",
            issued.output()
        );
        let put = [
            "put",
            ORDERS,
            "k",
            "x",
            "--certs",
            &certs,
            "--endpoint",
            &endpoints,
            "--client-name",
            "viewer",
        ];
        common::run_capdial(&dir, &put, READY_DEADLINE)
    })
    .await
    .expect("the CLI ran");
    assert_eq!(
        run.status.and_then(|s| s.code()),
        Some(1),
        "{}",
        run.output()
    );
    assert!(
        run.stderr.contains("readonly role, which may not put"),
        "{}",
        run.output()
    );
}
