//! Certificates and TLS configuration: mutual TLS with one cluster CA.
//!
//! Every node and every client holds a certificate signed by the cluster CA. A node's
//! certificate names it as `<id>.node.capdial` (say `n1.node.capdial`), a client's as
//! `<name>.client.capdial`. Both sides of every connection present a certificate:
//! - dialling a node, we verify its certificate against the CA *and* the name of the node we
//!   meant to reach, so a node cannot answer for another;
//! - accepting, the TLS layer verifies the chain against the CA, and [`peer_is_node`] /
//!   [`peer_is_client`] then check the name the peer claims once it says who it is.
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
/// ALPN protocol between a client and a node.
pub const ALPN_CLIENT: &[u8] = b"capdial-client/1";

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

/// Which kind of party a certificate belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Node,
    Client,
}

impl Role {
    fn suffix(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
        }
    }
}

/// The DNS name a certificate carries for `name` in `role`.
pub fn subject_name(role: Role, name: &str) -> String {
    format!("{name}.{}.capdial", role.suffix())
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

fn file_name(role: Role, name: &str, key: bool) -> String {
    let kind = if key { "-key" } else { "" };
    format!("{}-{name}{kind}.pem", role.suffix())
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
    if !(1..=LEAF_DAYS_MAX).contains(&days) {
        return Err(CertError::Days {
            days,
            days_max: LEAF_DAYS_MAX,
        });
    }
    check_name(name)?;
    let subject = subject_name(role, name);
    let mut names = vec![subject.clone()];
    if role == Role::Node {
        names.push(ANY_NODE_SERVER_NAME.to_string());
    }
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, subject);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // A node is a server to its peers and clients, and a client of its peers.
    params.extended_key_usages = match role {
        Role::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
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
/// [`LEAF_DAYS_DEFAULT`] days.
pub fn init(dir: &Path, nodes: &[String], clients: &[String]) -> Result<(), CertError> {
    init_for_days(dir, nodes, clients, LEAF_DAYS_DEFAULT)
}

/// [`init`] with leaf certificates valid for `days` days.
pub fn init_for_days(
    dir: &Path,
    nodes: &[String],
    clients: &[String],
    days: u32,
) -> Result<(), CertError> {
    for name in nodes.iter().chain(clients) {
        check_name(name)?;
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
    for name in clients {
        issue_into(dir, dir, Role::Client, name, days)?;
    }
    Ok(())
}

/// Signs a new certificate for `name` with the CA kept in `dir`, into `dir`.
pub fn issue(dir: &Path, role: Role, name: &str) -> Result<(), CertError> {
    issue_into(dir, dir, role, name, LEAF_DAYS_DEFAULT)
}

/// Signs a new certificate for `name`, valid for `days` days, with the CA kept in `ca_dir`,
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
    write_new(&out.join(file_name(role, name, false)), &cert.pem(), false)?;
    write_new(
        &out.join(file_name(role, name, true)),
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
    pub role: Role,
    pub name: String,
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
}

impl Identity {
    /// Loads `<role>-<name>.pem`, its key and `ca.pem` from `dir`.
    pub fn load(dir: &Path, role: Role, name: &str) -> Result<Identity, CertError> {
        check_name(name)?;
        let pem = |path: PathBuf, source| CertError::Pem { path, source };
        let cert_path = dir.join(file_name(role, name, false));
        let key_path = dir.join(file_name(role, name, true));
        let ca_path = dir.join(CA_CERT);
        let certificate =
            CertificateDer::from_pem_file(&cert_path).map_err(|e| pem(cert_path, e))?;
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| pem(key_path, e))?;
        let ca = CertificateDer::from_pem_file(&ca_path).map_err(|e| pem(ca_path, e))?;
        Ok(Identity {
            role,
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
        let usage = match self.role {
            Role::Node => webpki::KeyUsage::server_auth(),
            Role::Client => webpki::KeyUsage::client_auth(),
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
    subject_name(Role::Node, id)
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
    peer_has_name(connection, &subject_name(Role::Node, id))
}

/// Checks that the peer on `connection` holds a node certificate, of any node.
pub fn peer_is_any_node(connection: &quinn::Connection) -> Result<(), PeerIdentityError> {
    peer_has_name(connection, ANY_NODE_SERVER_NAME)
}

/// Checks that the peer on `connection` holds a client certificate for `name`.
pub fn peer_is_client(connection: &quinn::Connection, name: &str) -> Result<(), PeerIdentityError> {
    peer_has_name(connection, &subject_name(Role::Client, name))
}

fn peer_has_name(connection: &quinn::Connection, expected: &str) -> Result<(), PeerIdentityError> {
    let identity = connection
        .peer_identity()
        .ok_or(PeerIdentityError::NoCertificate)?;
    let chain = identity
        .downcast_ref::<Vec<CertificateDer<'static>>>()
        .ok_or(PeerIdentityError::NoCertificate)?;
    let leaf = chain.first().ok_or(PeerIdentityError::NoCertificate)?;
    let wrong = || PeerIdentityError::WrongName {
        expected: expected.to_string(),
    };
    let parsed = webpki::EndEntityCert::try_from(leaf).map_err(|_| wrong())?;
    let name = ServerName::try_from(expected).map_err(|_| wrong())?;
    parsed
        .verify_is_valid_for_subject_name(&name)
        .map_err(|_| wrong())
}
