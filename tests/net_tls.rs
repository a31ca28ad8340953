//! Mutual TLS over real QUIC sockets on 127.0.0.1: a node accepts peers and clients signed by
//! the cluster CA, refuses a certificate from another CA, and tells a peer that claims the
//! wrong node id from the right one. Deadlines bound every wait; nothing sleeps.

use capdial::net::tls::{self, ALPN_CLIENT, ALPN_PEER, Identity, Party, Role};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| name.to_string()).collect()
}

fn server(dir: &Path, id: &str) -> quinn::Endpoint {
    let identity = Identity::load(dir, Party::Node, id).expect("node identity");
    let config = identity.server_config().expect("server config");
    quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).expect("bind")
}

async fn dial(
    dir: &Path,
    party: Party,
    name: &str,
    alpn: &[u8],
    to: SocketAddr,
    server_id: &str,
) -> Result<quinn::Connection, String> {
    let identity = Identity::load(dir, party, name).expect("dialler identity");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("bind");
    endpoint.set_default_client_config(identity.client_config(alpn).expect("client config"));
    let connecting = endpoint
        .connect(to, &tls::node_server_name(server_id))
        .map_err(|error| error.to_string())?;
    let connection = tokio::time::timeout(DEADLINE, connecting)
        .await
        .map_err(|_| "handshake deadline".to_string())?
        .map_err(|error| error.to_string())?;
    Ok(connection)
}

async fn accept(endpoint: &quinn::Endpoint) -> Result<quinn::Connection, String> {
    let incoming = tokio::time::timeout(DEADLINE, endpoint.accept())
        .await
        .map_err(|_| "accept deadline".to_string())?
        .ok_or("endpoint closed")?;
    tokio::time::timeout(DEADLINE, incoming)
        .await
        .map_err(|_| "handshake deadline".to_string())?
        .map_err(|error| error.to_string())
}

#[tokio::test]
async fn peers_and_clients_of_the_cluster_ca_are_accepted_and_named() {
    let dir = tempfile::tempdir().unwrap();
    tls::init(dir.path(), &names(&["n1", "n2"]), &names(&["admin"])).unwrap();
    let node = server(dir.path(), "n1");
    let address = node.local_addr().unwrap();

    let (dialled, accepted) = tokio::join!(
        dial(dir.path(), Party::Node, "n2", ALPN_PEER, address, "n1"),
        accept(&node)
    );
    let (dialled, accepted) = (dialled.unwrap(), accepted.unwrap());
    assert!(tls::peer_is_node(&dialled, "n1").is_ok());
    assert!(tls::peer_is_node(&accepted, "n2").is_ok());
    assert!(
        tls::peer_is_node(&accepted, "n1").is_err(),
        "n2 cannot pass for n1"
    );
    assert!(tls::peer_is_client(&accepted, "n2").is_err());
    let alpn = accepted.handshake_data().unwrap();
    let alpn = alpn
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap()
        .protocol;
    assert_eq!(alpn.as_deref(), Some(ALPN_PEER));

    let (client, accepted) = tokio::join!(
        dial(
            dir.path(),
            Party::Client,
            "admin",
            ALPN_CLIENT,
            address,
            "n1"
        ),
        accept(&node)
    );
    assert!(client.is_ok());
    assert!(tls::peer_is_client(&accepted.unwrap(), "admin").is_ok());
}

#[tokio::test]
async fn a_node_answering_for_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tls::init(dir.path(), &names(&["n1", "n2", "n3"]), &[]).unwrap();
    let node = server(dir.path(), "n1");
    let address = node.local_addr().unwrap();
    // We meant to reach n3, but n1 answers: its certificate does not name n3.
    let (dialled, _accepted) = tokio::join!(
        dial(dir.path(), Party::Node, "n2", ALPN_PEER, address, "n3"),
        accept(&node)
    );
    let error = dialled.expect_err("must not connect to the wrong node");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    tls::init(ours.path(), &names(&["n1"]), &[]).unwrap();
    tls::init(theirs.path(), &names(&["n2"]), &names(&["admin"])).unwrap();
    let node = server(ours.path(), "n1");
    let address = node.local_addr().unwrap();
    // The foreign client trusts only its own CA, so give it ours to get as far as it can:
    // it then fails on its own certificate, which our node does not accept.
    std::fs::copy(
        ours.path().join("ca.pem"),
        theirs.path().join("ca.pem.ours"),
    )
    .unwrap();
    std::fs::rename(
        theirs.path().join("ca.pem.ours"),
        theirs.path().join("ca.pem"),
    )
    .unwrap();
    let (_dialled, accepted) = tokio::join!(
        dial(
            theirs.path(),
            Party::Client,
            "admin",
            ALPN_CLIENT,
            address,
            "n1"
        ),
        accept(&node)
    );
    let error = accepted.expect_err("a foreign client certificate must be refused");
    assert!(
        error.to_lowercase().contains("certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );
}

#[test]
fn init_refuses_bad_names_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let bad = tls::init(dir.path(), &names(&["n1/../x"]), &[]);
    assert!(matches!(bad, Err(tls::CertError::InvalidName { .. })));
    tls::init(dir.path(), &names(&["n1"]), &[]).unwrap();
    let again = tls::init(dir.path(), &names(&["n1"]), &[]);
    assert!(matches!(again, Err(tls::CertError::Exists { .. })));
    tls::issue(dir.path(), Role::Node, "n4").unwrap();
    assert!(Identity::load(dir.path(), Party::Node, "n4").is_ok());
    let mode = std::fs::metadata(dir.path().join("ca-key.pem")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
}

/// Leaf certificates carry a real validity period (one year unless `--days` says otherwise),
/// and `issue_into` signs from a CA directory into another one that gets only `ca.pem`, the
/// certificate and its key: the CA key stays apart from what a node is given.
#[test]
fn certificates_expire_and_the_ca_key_stays_apart() {
    use std::time::{Duration, SystemTime};
    let day = Duration::from_secs(86_400);
    let ca = tempfile::tempdir().unwrap();
    tls::init(ca.path(), &names(&["n1"]), &[]).unwrap();
    let n1 = Identity::load(ca.path(), Party::Node, "n1").unwrap();
    let now = SystemTime::now();
    assert!(n1.is_valid_at(now));
    assert!(n1.is_valid_at(now + 360 * day));
    assert!(!n1.is_valid_at(now + 370 * day), "valid for a year");

    let node_dir = tempfile::tempdir().unwrap();
    let out = node_dir.path().join("n4");
    tls::issue_into(ca.path(), &out, Role::Node, "n4", 30).unwrap();
    let mut given: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    given.sort();
    assert_eq!(given, ["ca.pem", "node-n4-key.pem", "node-n4.pem"]);
    let n4 = Identity::load(&out, Party::Node, "n4").unwrap();
    assert!(n4.is_valid_at(now));
    assert!(
        !n4.is_valid_at(now + 31 * day),
        "valid for the 30 days asked"
    );
    // A second certificate into the same directory shares its ca.pem; one from another CA is
    // refused rather than mixed in.
    tls::issue_into(ca.path(), &out, Role::App, "app", 30).unwrap();
    let other = tempfile::tempdir().unwrap();
    tls::init(other.path(), &names(&["x"]), &[]).unwrap();
    let mixed = tls::issue_into(other.path(), &out, Role::App, "intruder", 30);
    assert!(matches!(mixed, Err(tls::CertError::OtherCa { .. })));
    let too_long = tls::issue_into(ca.path(), &out, Role::App, "forever", 100_000);
    assert!(matches!(too_long, Err(tls::CertError::Days { .. })));
}

/// A client certificate carries the role it was issued with, signed by the CA, and the node
/// reads it (with the certificate's name) from the connection; a node's certificate reads as
/// the `node` role. `certs init` makes admins.
#[tokio::test]
async fn a_connection_names_its_caller_and_role() {
    let dir = tempfile::tempdir().unwrap();
    tls::init(dir.path(), &names(&["n1", "n2"]), &names(&["ops"])).unwrap();
    tls::issue(dir.path(), Role::App, "web").unwrap();
    tls::issue(dir.path(), Role::Readonly, "dash").unwrap();
    let node = server(dir.path(), "n1");
    let address = node.local_addr().unwrap();
    let expected = [
        (Party::Client, "ops", Role::Admin),
        (Party::Client, "web", Role::App),
        (Party::Client, "dash", Role::Readonly),
        (Party::Node, "n2", Role::Node),
    ];
    for (party, name, role) in expected {
        let (dialled, accepted) = tokio::join!(
            dial(dir.path(), party, name, ALPN_CLIENT, address, "n1"),
            accept(&node)
        );
        assert!(dialled.is_ok(), "{name}: {dialled:?}");
        let caller = tls::peer_caller(&accepted.unwrap()).expect("a named caller");
        let want = tls::Caller {
            name: name.to_string(),
            role,
        };
        assert_eq!(caller, want);
    }
    // A client cannot be issued the node role, and `--role` spells only client roles.
    let clients = [("rogue".to_string(), Role::Node)];
    let refused = tls::init_for_days(&dir.path().join("other"), &[], &clients, 30);
    assert!(matches!(
        refused,
        Err(tls::CertError::NodeRoleForClient { .. })
    ));
    assert_eq!("readonly".parse::<Role>(), Ok(Role::Readonly));
    assert!("node".parse::<Role>().is_err());
}
