//! Certificates and TLS configuration: mutual TLS with one cluster CA.
//!
//! Every node and every client holds a certificate signed by the cluster CA. A node's
//! certificate names it as `<id>.node.capdial` (say `n1.node.capdial`), a client's as
//! `<name>.client.capdial`. Both sides of every connection present a certificate:
//! - dialling a node, we verify its certificate against the CA *and* the name of the node we
//!   meant to reach, so a node cannot answer for another;
//! - accepting, the TLS layer verifies the chain against the CA, and [`peer_is_node`] /
//!   [`peer_is_client`] then check the name the peer claims once it says who it is; on the
//!   client protocol [`peer_caller`] reads who the client is and its [`Role`], which a client
//!   certificate carries as one more name, `<role>.role.capdial`.
//!
//! `capdial certs init` writes the CA and every certificate into one directory; a deployment
//! gives each node only `ca.pem` and its own certificate and key, and keeps `ca-key.pem` apart:
//! `capdial certs issue --dir CA_DIR --out DIR` signs a new one from there into another
//! directory. Leaf certificates are valid for [`LEAF_DAYS_DEFAULT`] days unless told otherwise,
//! the CA for [`CA_DAYS`].

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A name every node certificate carries besides its own: a client that knows only an
/// address dials it by this name, and still reaches only a CA-signed node (client
/// certificates cannot serve: they lack the server-auth usage).
pub const ANY_NODE_SERVER_NAME: &str = "node.capdial";

/// ALPN protocol between nodes.
pub const ALPN_PEER: &[u8] = b"capdial-peer/1";
/// ALPN protocol between a client and a node. The number changes with the shape of the
/// client protocol's frames, so a client built for another shape is refused at the handshake
/// (no common protocol) instead of sending frames the node cannot decode. 2: requests carry
/// `written_at`, set removals a context, set reads their context.
pub const ALPN_CLIENT: &[u8] = b"capdial-client/2";

/// How long a node or client certificate is valid unless `--days` says otherwise.
pub const LEAF_DAYS_DEFAULT: u32 = 365;
/// The longest validity `--days` may ask for: as long as the CA's.
pub const LEAF_DAYS_MAX: u32 = CA_DAYS;
/// How long the cluster CA is valid.
pub const CA_DAYS: u32 = 3650;
/// How far back `not_before` is set: a peer whose clock is a little behind still accepts a
/// certificate issued just now.
const BACKDATE: time::Duration = time::Duration::hours(1);

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const CA_COMMON_NAME: &str = "capdial cluster CA";

/// Which kind of party a certificate belongs to: it names the certificate's files and the
/// DNS name that identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    Node,
    Client,
}

impl Party {
    fn suffix(self) -> &'static str {
        match self {
            Party::Node => "node",
            Party::Client => "client",
        }
    }
}

/// The DNS name a certificate carries for `name` as a `party`.
pub fn subject_name(party: Party, name: &str) -> String {
    format!("{name}.{}.capdial", party.suffix())
}

/// What a certificate may do on the client protocol (see `protocol::access`): `readonly`
/// reads, `app` reads and writes data, `admin` also changes keyspaces, members and fault
/// rules. A node's certificate has the role `node`, which serves no client request.
///
/// A client certificate carries its role as one more DNS name, `<role>.role.capdial`, signed
/// by the CA with the rest, so a client cannot claim another. A client certificate issued
/// before roles carries none and counts as [`Role::LEGACY_CLIENT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Readonly,
    App,
    Admin,
    Node,
}

impl Role {
    /// The roles a client certificate may have, least privileged first: a certificate that
    /// somehow matched two would get the lesser.
    pub const CLIENT_ROLES: [Role; 3] = [Role::Readonly, Role::App, Role::Admin];
    /// The role of a client certificate that names none: data, as every client had before
    /// roles, but no longer the cluster's keyspaces, members or fault rules.
    pub const LEGACY_CLIENT: Role = Role::App;

    pub fn name(self) -> &'static str {
        match self {
            Role::Readonly => "readonly",
            Role::App => "app",
            Role::Admin => "admin",
            Role::Node => "node",
        }
    }

    /// Whether this role may do all that `needed` may. `node` includes no client role.
    pub fn includes(self, needed: Role) -> bool {
        let rank = |role| match role {
            Role::Readonly => Some(0),
            Role::App => Some(1),
            Role::Admin => Some(2),
            Role::Node => None,
        };
        match (rank(self), rank(needed)) {
            (Some(has), Some(needs)) => has >= needs,
            _ => false,
        }
    }

    fn party(self) -> Party {
        match self {
            Role::Node => Party::Node,
            Role::Readonly | Role::App | Role::Admin => Party::Client,
        }
    }

    /// The DNS name that gives a client certificate this role.
    fn dns_name(self) -> String {
        format!("{}.role.capdial", self.name())
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a client role, as `--role` and `--clients NAME:ROLE` spell it.
impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        Role::CLIENT_ROLES
            .into_iter()
            .find(|role| role.name() == text)
            .ok_or_else(|| format!("{text:?} is not a client role: give admin, app or readonly"))
    }
}

/// Who is at the other end of a client connection, as its certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The certificate's name: `admin` for `admin.client.capdial`, `n1` for a node's.
    pub name: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("{name:?} is not a valid name: use letters, digits and '-', at most 63 characters")]
    InvalidName { name: String },
    #[error("{path} already exists; refusing to overwrite a certificate or key")]
    Exists { path: PathBuf },
    #[error("{path} holds another CA's certificate than the one signing")]
    OtherCa { path: PathBuf },
    #[error("client {name:?} cannot have the node role: issue a node certificate instead")]
    NodeRoleForClient { name: String },
    #[error("a validity of {days} days: give 1 to {days_max}")]
    Days { days: u32, days_max: u32 },
    #[error("reading or writing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM item")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("generating or signing a certificate")]
    Generate(#[from] rcgen::Error),
    #[error("building the TLS configuration")]
    Tls(#[from] rustls::Error),
    #[error("building the client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the TLS configuration does not suit QUIC")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// Names become DNS labels, so they are restricted to what a label may hold.
fn check_name(name: &str) -> Result<(), CertError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(CertError::InvalidName {
            name: name.to_string(),
        })
    }
}

fn file_name(party: Party, name: &str, key: bool) -> String {
    let kind = if key { "-key" } else { "" };
    format!("{}-{name}{kind}.pem", party.suffix())
}

fn ca_params() -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    valid_for(&mut params, CA_DAYS);
    Ok(params)
}

/// Makes `params` valid from a little before now for `days` days.
fn valid_for(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn leaf_params(role: Role, name: &str, days: u32) -> Result<CertificateParams, CertError> {
    let party = role.party();
    if !(1..=LEAF_DAYS_MAX).contains(&days) {
        return Err(CertError::Days {
            days,
            days_max: LEAF_DAYS_MAX,
        });
    }
    check_name(name)?;
    let subject = subject_name(party, name);
    let names = vec![
        subject.clone(),
        match party {
            Party::Node => ANY_NODE_SERVER_NAME.to_string(),
            Party::Client => role.dns_name(),
        },
    ];
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, subject);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // A node is a server to its peers and clients, and a client of its peers.
    params.extended_key_usages = match party {
        Party::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Party::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    valid_for(&mut params, days);
    Ok(params)
}

/// Writes a new file, refusing to replace one: overwriting a CA key would orphan every
/// certificate it signed. Keys are readable by the owner only.
fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    if path.exists() {
        return Err(CertError::Exists {
            path: path.to_path_buf(),
        });
    }
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mode = if secret { 0o600 } else { 0o644 };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Creates a cluster CA in `dir` and a certificate for every node and client named, valid for
/// [`LEAF_DAYS_DEFAULT`] days. The clients are admins: they run the cluster.
pub fn init(dir: &Path, nodes: &[String], clients: &[String]) -> Result<(), CertError> {
    let admins: Vec<(String, Role)> = clients
        .iter()
        .map(|name| (name.clone(), Role::Admin))
        .collect();
    init_for_days(dir, nodes, &admins, LEAF_DAYS_DEFAULT)
}

/// [`init`] with each client's role given, and leaf certificates valid for `days` days.
pub fn init_for_days(
    dir: &Path,
    nodes: &[String],
    clients: &[(String, Role)],
    days: u32,
) -> Result<(), CertError> {
    for name in nodes.iter().chain(clients.iter().map(|(name, _)| name)) {
        check_name(name)?;
    }
    if let Some((name, _)) = clients.iter().find(|(_, role)| *role == Role::Node) {
        return Err(CertError::NodeRoleForClient { name: name.clone() });
    }
    fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params()?.self_signed(&ca_key)?;
    write_new(&dir.join(CA_CERT), &ca_cert.pem(), false)?;
    write_new(&dir.join(CA_KEY), &ca_key.serialize_pem(), true)?;
    for name in nodes {
        issue_into(dir, dir, Role::Node, name, days)?;
    }
    for (name, role) in clients {
        issue_into(dir, dir, *role, name, days)?;
    }
    Ok(())
}

/// Signs a new certificate for `name` in `role` (a node's for [`Role::Node`], else a
/// client's) with the CA kept in `dir`, into `dir`.
pub fn issue(dir: &Path, role: Role, name: &str) -> Result<(), CertError> {
    issue_into(dir, dir, role, name, LEAF_DAYS_DEFAULT)
}

/// Signs a new certificate for `name` in `role`, valid for `days` days, with the CA kept in `ca_dir`,
/// and writes it, its key and `ca.pem` (unless there already) into `out`: the CA key need not
/// be where the certificates go.
pub fn issue_into(
    ca_dir: &Path,
    out: &Path,
    role: Role,
    name: &str,
    days: u32,
) -> Result<(), CertError> {
    let ca_key = KeyPair::from_pem(&read_text(&ca_dir.join(CA_KEY))?)?;
    let ca_pem = read_text(&ca_dir.join(CA_CERT))?;
    let params = leaf_params(role, name, days)?;
    fs::create_dir_all(out).map_err(|source| CertError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let out_ca = out.join(CA_CERT);
    match fs::read_to_string(&out_ca) {
        Ok(existing) if existing == ca_pem => {}
        Ok(_) => return Err(CertError::OtherCa { path: out_ca }),
        Err(_) => write_new(&out_ca, &ca_pem, false)?,
    }
    let issuer = Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let party = role.party();
    write_new(&out.join(file_name(party, name, false)), &cert.pem(), false)?;
    write_new(
        &out.join(file_name(party, name, true)),
        &key.serialize_pem(),
        true,
    )
}

fn read_text(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A party's certificate, key and the CA it trusts, loaded from a certificate directory.
#[derive(Debug)]
pub struct Identity {
    pub party: Party,
    pub name: String,
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
}

impl Identity {
    /// Loads `<role>-<name>.pem`, its key and `ca.pem` from `dir`.
    pub fn load(dir: &Path, party: Party, name: &str) -> Result<Identity, CertError> {
        check_name(name)?;
        let pem = |path: PathBuf, source| CertError::Pem { path, source };
        let cert_path = dir.join(file_name(party, name, false));
        let key_path = dir.join(file_name(party, name, true));
        let ca_path = dir.join(CA_CERT);
        let certificate =
            CertificateDer::from_pem_file(&cert_path).map_err(|e| pem(cert_path, e))?;
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| pem(key_path, e))?;
        let ca = CertificateDer::from_pem_file(&ca_path).map_err(|e| pem(ca_path, e))?;
        Ok(Identity {
            party,
            name: name.to_string(),
            certificate,
            key,
            ca,
        })
    }

    /// Whether this certificate chains to the CA and is valid at `at`.
    pub fn is_valid_at(&self, at: std::time::SystemTime) -> bool {
        let Ok(since_epoch) = at.duration_since(std::time::UNIX_EPOCH) else {
            return false;
        };
        let Ok(anchor) = webpki::anchor_from_trusted_cert(&self.ca) else {
            return false;
        };
        let Ok(leaf) = webpki::EndEntityCert::try_from(&self.certificate) else {
            return false;
        };
        let algorithms = rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all;
        let usage = match self.party {
            Party::Node => webpki::KeyUsage::server_auth(),
            Party::Client => webpki::KeyUsage::client_auth(),
        };
        let time = rustls::pki_types::UnixTime::since_unix_epoch(since_epoch);
        leaf.verify_for_usage(algorithms, &[anchor], &[], time, usage, None, None)
            .is_ok()
    }

    fn roots(&self) -> Result<rustls::RootCertStore, CertError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(roots)
    }

    /// The QUIC server side of a node: TLS 1.3, a CA-signed client certificate required,
    /// both ALPN protocols offered.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider.clone(),
        )
        .build()?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.certificate.clone()], self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN_PEER.to_vec(), ALPN_CLIENT.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(transport_config());
        Ok(config)
    }

    /// The QUIC client side, speaking `alpn`: verifies the server against the CA and
    /// presents our certificate. Connect with [`node_server_name`] as the server name.
    pub fn client_config(&self, alpn: &[u8]) -> Result<quinn::ClientConfig, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(vec![self.certificate.clone()], self.key.clone_key())?;
        tls.alpn_protocols = vec![alpn.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(transport_config());
        Ok(config)
    }
}

/// A peer that stops answering (killed, or cut off) is declared gone after this long, so
/// links reconnect to its next incarnation within seconds rather than quinn's default 30 s.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Keep-alives keep a quiet but healthy connection under the idle timeout.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_millis(500);
const _: () = assert!(KEEP_ALIVE.as_millis() * 3 <= IDLE_TIMEOUT.as_millis());

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    let idle = quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
        .expect("invariant: the idle timeout fits QUIC's varint");
    transport.max_idle_timeout(Some(idle));
    Arc::new(transport)
}

/// The server name to dial node `id` by: TLS then refuses any other node's certificate.
pub fn node_server_name(id: &str) -> String {
    subject_name(Party::Node, id)
}

/// Why a connected peer is not who it claims to be.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIdentityError {
    #[error("the peer presented no certificate")]
    NoCertificate,
    #[error("the peer's certificate does not name {expected}")]
    WrongName { expected: String },
}

/// Checks that the peer on `connection` holds the certificate of node `id`. The chain was
/// already verified against the CA during the handshake; this checks the name.
pub fn peer_is_node(connection: &quinn::Connection, id: &str) -> Result<(), PeerIdentityError> {
    peer_has_name(connection, &subject_name(Party::Node, id))
}

/// Checks that the peer on `connection` holds a node certificate, of any node.
pub fn peer_is_any_node(connection: &quinn::Connection) -> Result<(), PeerIdentityError> {
    peer_has_name(connection, ANY_NODE_SERVER_NAME)
}

/// Checks that the peer on `connection` holds a client certificate for `name`.
pub fn peer_is_client(connection: &quinn::Connection, name: &str) -> Result<(), PeerIdentityError> {
    peer_has_name(connection, &subject_name(Party::Client, name))
}

/// Who the peer on a client connection is, and so what it may do. The chain was verified
/// against the CA during the handshake; this reads the names the CA signed into it.
pub fn peer_caller(connection: &quinn::Connection) -> Result<Caller, PeerIdentityError> {
    caller_of(&peer_leaf(connection)?)
}

/// The caller a (CA-verified) leaf certificate names: a node's (role `node`), or a client's
/// with the role its certificate carries.
pub fn caller_of(leaf: &CertificateDer<'_>) -> Result<Caller, PeerIdentityError> {
    let unnamed = || PeerIdentityError::WrongName {
        expected: "a node or client name".to_string(),
    };
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|_| unnamed())?;
    // The name a DNS name `<name>.<party>.capdial` gives, if the certificate is valid for it.
    let name_of = |party: Party| {
        let suffix = format!(".{}.capdial", party.suffix());
        cert.valid_dns_names()
            .filter_map(|dns| dns.strip_suffix(suffix.as_str()))
            .find(|name| check_name(name).is_ok() && has_name(&cert, &subject_name(party, name)))
            .map(str::to_string)
    };
    if has_name(&cert, ANY_NODE_SERVER_NAME) {
        let name = name_of(Party::Node).ok_or_else(unnamed)?;
        let role = Role::Node;
        return Ok(Caller { name, role });
    }
    let name = name_of(Party::Client).ok_or_else(unnamed)?;
    let role = Role::CLIENT_ROLES
        .into_iter()
        .find(|role| has_name(&cert, &role.dns_name()))
        .unwrap_or(Role::LEGACY_CLIENT);
    Ok(Caller { name, role })
}

/// Whether the certificate is valid for the DNS name `name`, by webpki's own matching.
fn has_name(cert: &webpki::EndEntityCert<'_>, name: &str) -> bool {
    ServerName::try_from(name)
        .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
}

/// The leaf certificate the peer on `connection` presented; the handshake verified its chain.
fn peer_leaf(connection: &quinn::Connection) -> Result<CertificateDer<'static>, PeerIdentityError> {
    let identity = connection
        .peer_identity()
        .ok_or(PeerIdentityError::NoCertificate)?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| PeerIdentityError::NoCertificate)?;
    chain
        .into_iter()
        .next()
        .ok_or(PeerIdentityError::NoCertificate)
}

fn peer_has_name(connection: &quinn::Connection, expected: &str) -> Result<(), PeerIdentityError> {
    let leaf = peer_leaf(connection)?;
    let valid = webpki::EndEntityCert::try_from(&leaf).is_ok_and(|cert| has_name(&cert, expected));
    if valid {
        Ok(())
    } else {
        Err(PeerIdentityError::WrongName {
            expected: expected.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leaf with exactly `names`, signed by a fresh CA.
    fn leaf_with(names: &[&str]) -> CertificateDer<'static> {
        let ca_key = KeyPair::generate().unwrap();
        let issuer = Issuer::new(ca_params().unwrap(), ca_key);
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let params = CertificateParams::new(names).unwrap();
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &issuer).unwrap().der().clone()
    }

    #[test]
    fn a_client_certificate_from_before_roles_gets_the_legacy_role() {
        let caller = caller_of(&leaf_with(&["web.client.capdial"])).unwrap();
        assert_eq!(caller.name, "web");
        assert_eq!(caller.role, Role::LEGACY_CLIENT);
    }

    #[test]
    fn two_role_names_give_the_lesser_and_no_name_gives_no_caller() {
        let both = leaf_with(&[
            "x.client.capdial",
            "admin.role.capdial",
            "readonly.role.capdial",
        ]);
        assert_eq!(caller_of(&both).unwrap().role, Role::Readonly);
        assert!(caller_of(&leaf_with(&["example.com"])).is_err());
        assert!(caller_of(&leaf_with(&["a.b.client.capdial"])).is_err());
    }

    #[test]
    fn only_client_roles_include_others() {
        assert!(Role::Admin.includes(Role::App));
        assert!(Role::App.includes(Role::Readonly));
        assert!(!Role::Readonly.includes(Role::App));
        assert!(!Role::Node.includes(Role::Readonly));
        assert!(!Role::Admin.includes(Role::Node));
    }
}
