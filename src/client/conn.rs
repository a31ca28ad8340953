//! The async client library over QUIC (ALPN `capdial-client/2`), used by the CLI, the demo,
//! the integration tests and the benchmark.
//!
//! One [`Client`] holds one quinn endpoint per address family and caches one connection per
//! node address. Every request travels on its own bidirectional stream: the client writes one
//! [`ToNode`] frame and finishes its side, the node answers with one [`FromNode`] frame.
//!
//! Data requests carry the client's session id and a sequence number taken once per
//! [`Client::execute`]; every retry of that call reuses the same `(client, seq)`, so a strong
//! write retried after a lost answer is applied once. Any number of requests may be in flight
//! on one client and its clones: each also carries the session's lowest seq still waiting for
//! an answer, so the cluster keeps exactly the results a retry may still ask for (see
//! [`super::session`]). A write whose outcome stays unknown comes back as
//! [`ConnError::Timeout`] with a [`Resend`] handle; [`Client::resend`] sends it again under
//! its original identity, and it still applies at most once. The library follows `NotLeader` hints,
//! moves to another node when one is unavailable or unreachable, and gives up at the
//! request's deadline ([`ClientOptions::timeout`]) or after [`ATTEMPTS_MAX`] attempts,
//! whichever comes first. The retry policy is the pure function [`retry_after`].

use super::clock::WriteClock;
use super::session::{Sessions, Ticket};
use crate::eventual::{ReadValue, SessionToken};
use crate::net::tls::{self, CertError, Identity, Party};
use crate::protocol::admin::{AdminAnswer, AdminError, AdminRequest, FromNode, MemberInfo, ToNode};
use crate::protocol::{
    Answer, ClientError, ClientRequest, Operation, ReadLevel, Receipt, UnavailableReason,
    WriteLevel,
};
use crate::strong::ClientId;
use crate::wire;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The client certificate name used when none is given.
pub const DEFAULT_CLIENT_NAME: &str = "admin";
/// The overall deadline of one request (all its retries) when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts one request makes at most, whatever its deadline.
pub const ATTEMPTS_MAX: u32 = 24;
/// Backoff between attempts doubles from the first value up to the second.
pub const BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(250));
/// The shortest time one attempt is given before the library tries another node.
pub const ATTEMPT_MIN: Duration = Duration::from_millis(500);

/// The route key admin requests are remembered under: the catalog's Raft group.
const CATALOG_ROUTE: &str = "_catalog";
/// How to reach the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Node addresses as `host:port`, tried in order.
    pub endpoints: Vec<String>,
    /// The certificate directory (`capdial certs init --out DIR`).
    pub certs: PathBuf,
    /// The client certificate to present: `client-<name>.pem` in `certs`.
    pub name: String,
    /// The overall deadline of one request, all retries included.
    pub timeout: Duration,
}

impl ClientOptions {
    /// Options with the default client name (`admin`) and timeout (5 s).
    pub fn new(endpoints: Vec<String>, certs: PathBuf) -> Self {
        ClientOptions {
            endpoints,
            certs,
            name: DEFAULT_CLIENT_NAME.to_string(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Why a request got no answer from the cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The node's typed answer.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The node's typed refusal of an admin request (a refusal any request may meet, like
    /// not the leader, comes as `Client`).
    #[error(transparent)]
    Admin(AdminError),
    #[error("loading the client certificate")]
    Cert(#[source] CertError),
    #[error("no endpoint given")]
    NoEndpoints,
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot reach {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    /// The connection broke while a request was on it.
    #[error("connection to {endpoint} lost: {reason}{}", if *may_have_applied { "; the write may still apply" } else { "" })]
    Lost {
        endpoint: String,
        reason: String,
        may_have_applied: bool,
    },
    /// The node answered something that is not a valid answer to what was asked.
    #[error("protocol error: {reason}")]
    Protocol { reason: String },
    /// No answer before the deadline. When the write may have applied, `resend` (from
    /// [`Client::execute`]) sends it again with its original identity: [`Client::resend`].
    #[error("timed out{}", if *may_have_applied { "; the write may still apply" } else { "" })]
    Timeout {
        may_have_applied: bool,
        resend: Option<Resend>,
    },
}

/// A data request whose outcome is unknown, to send again under its original `(client,
/// seq)` with [`Client::resend`]: applied or not, a strong write then applies at most once.
/// Only writes a resend cannot apply twice get one: strong writes, and eventual writes that
/// are idempotent (never a counter add). While the handle lives, its seq counts as waiting:
/// the cluster keeps the request's result and every later result of the session, up to
/// `strong::UNACKED_RESULTS_MAX` (then new writes are refused `SessionFull`), so resend or
/// drop it soon; dropping it gives the request up.
#[derive(Debug)]
pub struct Resend(Box<Pending>);

impl Resend {
    /// The sequence number the request keeps.
    pub fn seq(&self) -> u64 {
        self.0.ticket.seq()
    }

    /// The client session the request belongs to.
    pub fn client(&self) -> ClientId {
        self.0.ticket.client()
    }
}

/// A data request with its place in its session.
#[derive(Debug)]
struct Pending {
    ticket: Ticket,
    pinned: Option<String>,
    request: ClientRequest,
}

impl ConnError {
    /// Whether the request may have been applied although no success came back.
    pub fn may_have_applied(&self) -> bool {
        match self {
            ConnError::Client(error) => error_may_have_applied(error),
            ConnError::Lost {
                may_have_applied, ..
            }
            | ConnError::Timeout {
                may_have_applied, ..
            } => *may_have_applied,
            _ => false,
        }
    }
}

/// What the library does after a node's typed refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Ask the leader at this address.
    Follow(String),
    /// Wait a little and ask the same node again.
    SameNode,
    /// Wait a little and ask another node.
    OtherNode,
    /// Hand the error to the caller.
    Stop,
}

/// The retry policy for a node's typed answer, for requests that may follow the cluster
/// (not pinned to one node).
pub fn retry_after(error: &ClientError) -> Retry {
    match error {
        ClientError::NotLeader {
            leader_addr: Some(address),
            ..
        } => Retry::Follow(address.clone()),
        // This node knows no leader, or cannot reach a majority: another node may.
        ClientError::NotLeader {
            leader_addr: None, ..
        }
        | ClientError::Unavailable { .. }
        | ClientError::NodeFailed { .. } => Retry::OtherNode,
        ClientError::Backpressure => Retry::SameNode,
        _ => Retry::Stop,
    }
}

/// Whether a node's refusal leaves the request possibly applied: a leader that lost its
/// quorum may still commit what it appended, and a node-side timeout says so itself.
fn error_may_have_applied(error: &ClientError) -> bool {
    match error {
        ClientError::Unavailable { reason } => *reason != UnavailableReason::NoLeader,
        ClientError::Timeout { may_have_applied } => *may_have_applied,
        // An expired session refuses without applying, but an earlier send of the same
        // request may have applied before the session expired.
        ClientError::NotEnoughReplicas { .. }
        | ClientError::NodeFailed { .. }
        | ClientError::SessionExpired { .. } => true,
        _ => false,
    }
}

/// What the failed attempts of one request have shown so far.
#[derive(Debug, Default)]
struct Failures {
    /// Some attempt may have reached a node that could apply it.
    may_have_applied: bool,
    /// The last typed refusal: what a person can act on, so it is reported first.
    refusal: Option<ClientError>,
    /// The last transport failure.
    failure: Option<ConnError>,
}

impl Failures {
    /// Records a node's refusal; `Err` hands it straight back (pinned, or not retryable).
    fn refused(&mut self, error: ClientError, policy: &Policy) -> Result<Retry, ClientError> {
        self.may_have_applied |= error_may_have_applied(&error);
        let next = match policy.pinned {
            Some(_) => Retry::Stop,
            None => retry_after(&error),
        };
        if next == Retry::Stop {
            return Err(error);
        }
        self.refusal = Some(error);
        Ok(next)
    }

    /// Records a transport failure: another node is tried unless the request is pinned or
    /// must not be sent twice.
    fn failed(&mut self, error: ConnError, sent: bool, policy: &Policy) -> Retry {
        self.may_have_applied |= sent;
        self.failure = Some(lost_with(error, policy.write && self.may_have_applied));
        if policy.pinned.is_some() || (sent && !policy.resend_safe) {
            Retry::Stop
        } else {
            Retry::OtherNode
        }
    }

    /// The error a request ends with when it runs out of time or attempts: an indeterminate
    /// write is a `Timeout` that says it may apply; then the last refusal; then the last
    /// transport failure.
    fn give_up(self, write: bool) -> ConnError {
        if write && self.may_have_applied {
            return ConnError::Timeout {
                may_have_applied: true,
                resend: None,
            };
        }
        if let Some(refusal) = self.refusal {
            return ConnError::Client(refusal);
        }
        self.failure.unwrap_or(ConnError::Timeout {
            may_have_applied: false,
            resend: None,
        })
    }
}

/// Whether sending the operation twice has the effect of sending it once. Strong writes are
/// deduplicated by `(client, seq)`; eventual writes are not, but they keep their identity: an
/// `lww` write carries its time (`written_at`), a set removal the context of the adds it
/// removes, so a resend stores what the first attempt stored. A counter add would count
/// twice, and a removal without a context would remove whatever the node it reaches has seen
/// by then.
fn resend_is_safe(operation: &Operation) -> bool {
    !matches!(
        operation,
        Operation::Add { .. } | Operation::SetRemove { context: None, .. }
    )
}

/// How a request's attempts ended without a reply.
struct Ended {
    error: ConnError,
    /// Some attempt before the one that gave `error` may have reached a node that could
    /// apply the request.
    earlier_may_have_applied: bool,
}

/// How one request is routed.
struct Policy {
    /// The node to ask first: the remembered leader for this route or the preferred node.
    route: String,
    /// Ask this node only, and hand back every refusal.
    pinned: Option<String>,
    write: bool,
    resend_safe: bool,
}

/// A successful answer, before it is matched to what was asked.
enum Reply {
    Data(Answer, Receipt),
    Admin(AdminAnswer),
}

/// One attempt's result: a reply, a node's refusal (perhaps retried), an admin request's
/// rejection (final), or a transport failure.
enum Attempt {
    Reply(Reply),
    Refused(ClientError),
    Rejected(AdminError),
    Failed(ConnError),
}

type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// The QUIC side of a client, shared by the clients [`Client::fork`] makes.
struct Connections {
    config: quinn::ClientConfig,
    /// One endpoint per family: `[v4, v6]`, bound on first use.
    endpoints: Mutex<[Option<quinn::Endpoint>; 2]>,
    /// One connection per node address; the slot's lock is held while connecting, so
    /// concurrent requests to one node share one connection.
    slots: Mutex<HashMap<SocketAddr, Slot>>,
}

struct Inner {
    options: ClientOptions,
    /// The session new requests join.
    sessions: Sessions,
    /// The times of `lww` writes.
    clock: WriteClock,
    connections: Arc<Connections>,
    /// Addresses to rotate through: the options' endpoints, then members learned.
    known: Mutex<Vec<String>>,
    /// The node that last served each keyspace (or the catalog).
    routes: Mutex<HashMap<String, String>>,
    /// The node that first answered.
    preferred: Mutex<String>,
}

/// A connection to a capdial cluster. Cheap to clone; clones share connections and the client
/// session (id, sequence, requests in flight): one client may have any number of requests in
/// flight, strong writes included. [`Client::fork`] makes a client that shares only the
/// connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id())
            .field("endpoints", &self.inner.options.endpoints)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these short locks cannot leave the maps inconsistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Resolves `host:port` to its first address.
pub async fn resolve(endpoint: &str) -> Result<SocketAddr, ConnError> {
    let invalid = |reason: String| ConnError::Endpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let mut addresses = tokio::net::lookup_host(endpoint)
        .await
        .map_err(|error| invalid(error.to_string()))?;
    addresses
        .next()
        .ok_or_else(|| invalid("resolves to no address".to_string()))
}

fn client_config(options: &ClientOptions) -> Result<quinn::ClientConfig, ConnError> {
    let identity =
        Identity::load(&options.certs, Party::Client, &options.name).map_err(ConnError::Cert)?;
    // The TLS module's config carries the keep-alive and idle timeout nodes use too, so a
    // cached connection to a node that died is noticed within seconds.
    identity
        .client_config(tls::ALPN_CLIENT)
        .map_err(ConnError::Cert)
}

impl Client {
    /// Loads the client certificate and connects to the first endpoint that answers.
    pub async fn connect(options: ClientOptions) -> Result<Client, ConnError> {
        if options.endpoints.is_empty() {
            return Err(ConnError::NoEndpoints);
        }
        let config = client_config(&options)?;
        let inner = Inner {
            known: Mutex::new(options.endpoints.clone()),
            preferred: Mutex::new(options.endpoints[0].clone()),
            options,
            sessions: Sessions::new(),
            clock: WriteClock::new(),
            connections: Arc::new(Connections {
                config,
                endpoints: Mutex::new([None, None]),
                slots: Mutex::new(HashMap::new()),
            }),
            routes: Mutex::new(HashMap::new()),
        };
        let client = Client {
            inner: Arc::new(inner),
        };
        let mut last = None;
        let endpoints = client.inner.options.endpoints.clone();
        // Each endpoint gets a share of the deadline, so one that is down does not use it up.
        let count = u32::try_from(endpoints.len()).unwrap_or(u32::MAX);
        let share = (client.inner.options.timeout / count).max(ATTEMPT_MIN);
        for endpoint in endpoints {
            let deadline = Instant::now() + share;
            match client.connection(&endpoint, deadline).await {
                Ok(_) => {
                    *lock(&client.inner.preferred) = endpoint;
                    client.learn_members().await;
                    return Ok(client);
                }
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or(ConnError::NoEndpoints))
    }

    /// A client with its own session that shares this one's QUIC connections. It asks
    /// `preferred` first (when given) for requests any node may serve, and learns leaders on
    /// its own. (One client may have many requests in flight; a fork is for a separate
    /// identity or routing, not for concurrency.)
    pub fn fork(&self, preferred: Option<&str>) -> Client {
        let preferred =
            preferred.map_or_else(|| lock(&self.inner.preferred).clone(), str::to_string);
        let inner = Inner {
            options: self.inner.options.clone(),
            sessions: Sessions::new(),
            clock: WriteClock::after(self.inner.clock.last()),
            connections: Arc::clone(&self.inner.connections),
            known: Mutex::new(lock(&self.inner.known).clone()),
            routes: Mutex::new(HashMap::new()),
            preferred: Mutex::new(preferred),
        };
        Client {
            inner: Arc::new(inner),
        }
    }

    /// The id of this client's current session: random per `Client`, and new when the
    /// cluster forgot the session (it expired).
    pub fn id(&self) -> ClientId {
        self.inner.sessions.current().id()
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Runs one data operation, following leader hints and retrying with the same
    /// `(client, seq)` until it is answered, refused for good, or the deadline passes. A key
    /// held by an unresolved transaction across keyspaces (`Locked`) is resolved from the
    /// transaction's record, and the operation sent again as a new request.
    pub async fn execute(
        &self,
        keyspace: &str,
        operation: Operation,
        read: Option<ReadLevel>,
        write: Option<WriteLevel>,
        session: Option<SessionToken>,
    ) -> Result<(Answer, Receipt), ConnError> {
        let deadline = std::time::Instant::now() + self.inner.options.timeout;
        loop {
            let attempt = operation.clone();
            let result = self
                .execute_on(None, keyspace, attempt, read, write, session.clone())
                .await;
            match result {
                // A transaction across keyspaces holds a key: resolve it from its record
                // (boxed: resolving runs `execute` too), then run the request again.
                Err(ConnError::Client(ClientError::Locked { key, txn, anchor }))
                    if !super::txn::is_step(&operation) && std::time::Instant::now() < deadline =>
                {
                    Box::pin(self.resolve_intent(keyspace, key, txn, &anchor, deadline)).await?;
                }
                other => return other,
            }
        }
    }

    /// Like [`Client::execute`], but asks `endpoint` only: a `NotLeader` or `Unavailable`
    /// answer comes back as it is, so a caller sees what that node says.
    pub async fn execute_at(
        &self,
        endpoint: &str,
        keyspace: &str,
        operation: Operation,
        read: Option<ReadLevel>,
        write: Option<WriteLevel>,
        session: Option<SessionToken>,
    ) -> Result<(Answer, Receipt), ConnError> {
        self.execute_on(Some(endpoint), keyspace, operation, read, write, session)
            .await
    }

    async fn execute_on(
        &self,
        pinned: Option<&str>,
        keyspace: &str,
        operation: Operation,
        read: Option<ReadLevel>,
        write: Option<WriteLevel>,
        session: Option<SessionToken>,
    ) -> Result<(Answer, Receipt), ConnError> {
        let operation = self
            .with_removal_context(pinned, keyspace, operation)
            .await?;
        let written_at = operation.is_write().then(|| self.inner.clock.now());
        let ticket = self.inner.sessions.current().begin();
        let request = ClientRequest {
            client: ticket.client(),
            seq: ticket.seq(),
            first_unacked: 0,
            opens_session: false,
            keyspace: keyspace.to_string(),
            operation,
            read,
            write,
            session,
            written_at,
        };
        let pending = Pending {
            ticket,
            pinned: pinned.map(str::to_string),
            request,
        };
        self.send_pending(pending, true).await
    }

    /// A set removal without a context gets the one of a local read of the key first, so that
    /// every attempt of it removes the same adds: a resend through another node, later, must
    /// not remove an add made after the first attempt. (A removal whose context comes from the
    /// caller's own read keeps it.) Other operations pass unchanged.
    async fn with_removal_context(
        &self,
        pinned: Option<&str>,
        keyspace: &str,
        operation: Operation,
    ) -> Result<Operation, ConnError> {
        let Operation::SetRemove {
            key,
            members,
            context: None,
        } = operation
        else {
            return Ok(operation);
        };
        let get = Operation::Get { key: key.clone() };
        let local = Some(ReadLevel::Local);
        // Boxed: this runs inside `execute_on`, and the read is an `execute_on` too.
        let read = Box::pin(self.execute_on(pinned, keyspace, get, local, None, None));
        let context = match read.await?.0 {
            Answer::Eventual(ReadValue::Set { context, .. }) => Some(context),
            // Not a set keyspace: the node refuses the removal with the reason.
            _ => None,
        };
        Ok(Operation::SetRemove {
            key,
            members,
            context,
        })
    }

    /// Sends again a write whose outcome was unknown (its [`ConnError::Timeout`] carried
    /// `resend`), under its original `(client, seq)`: it applies at most once in all. Comes
    /// back like [`Client::execute`], with a new handle if the outcome is still unknown.
    pub async fn resend(&self, resend: Resend) -> Result<(Answer, Receipt), ConnError> {
        self.send_pending(*resend.0, false).await
    }

    /// Runs a data request under its ticket. A `SessionExpired` refusal of a request that no
    /// earlier attempt may have applied means it never applied: when `may_rotate`, it runs
    /// once more as a new request of a new session (an idle client's, or one that reached
    /// a keyspace after its session's opening window).
    async fn send_pending(
        &self,
        mut pending: Pending,
        mut may_rotate: bool,
    ) -> Result<(Answer, Receipt), ConnError> {
        loop {
            pending.request.first_unacked = pending.ticket.first_unacked();
            pending.request.opens_session = pending.ticket.may_open(std::time::Instant::now());
            let policy = Policy {
                route: pending.request.keyspace.clone(),
                pinned: pending.pinned.clone(),
                write: pending.request.operation.is_write(),
                resend_safe: resend_is_safe(&pending.request.operation),
            };
            // A clone shares the key and value bytes; the handle keeps the request.
            let message = ToNode::Data(pending.request.clone());
            let ended = match self.attempts(&message, &policy).await {
                Ok(Reply::Data(answer, receipt)) => {
                    self.inner.clock.observe(&answer, &receipt);
                    return Ok((answer, receipt));
                }
                Ok(Reply::Admin(_)) => return Err(mismatch()),
                Err(ended) => ended,
            };
            match ended.error {
                ConnError::Client(ClientError::SessionExpired { .. })
                    if may_rotate && !ended.earlier_may_have_applied =>
                {
                    may_rotate = false;
                    self.inner.sessions.rotate(pending.ticket.session());
                    pending.ticket = self.inner.sessions.current().begin();
                    pending.request.client = pending.ticket.client();
                    pending.request.seq = pending.ticket.seq();
                }
                ConnError::Timeout {
                    may_have_applied: true,
                    ..
                } if policy.write && policy.resend_safe => {
                    return Err(ConnError::Timeout {
                        may_have_applied: true,
                        resend: Some(Resend(Box::new(pending))),
                    });
                }
                error => return Err(error),
            }
        }
    }

    /// Runs an admin request, following the catalog leader's hints like `execute`.
    pub async fn admin(&self, request: AdminRequest) -> Result<AdminAnswer, ConnError> {
        self.admin_on(None, request).await
    }

    /// Asks `endpoint` only: for status and fault rules, which each node answers for itself.
    pub async fn admin_at(
        &self,
        endpoint: &str,
        request: AdminRequest,
    ) -> Result<AdminAnswer, ConnError> {
        self.admin_on(Some(endpoint), request).await
    }

    async fn admin_on(
        &self,
        pinned: Option<&str>,
        request: AdminRequest,
    ) -> Result<AdminAnswer, ConnError> {
        let write = !matches!(
            request,
            AdminRequest::ListKeyspaces
                | AdminRequest::Members
                | AdminRequest::Faults
                | AdminRequest::Status
                | AdminRequest::BackupOpen { .. }
                | AdminRequest::BackupRead { .. }
        );
        let policy = Policy {
            route: CATALOG_ROUTE.to_string(),
            pinned: pinned.map(str::to_string),
            write,
            // Catalog and member changes are not deduplicated by the node: a blind resend of
            // one that applied would come back `KeyspaceExists` or `MemberExists`. Refusals
            // (not the leader, no leader yet) are still retried; they applied nothing.
            resend_safe: !write,
        };
        match self.request(&ToNode::Admin(request), &policy).await? {
            Reply::Admin(answer) => Ok(answer),
            Reply::Data(..) => Err(mismatch()),
        }
    }

    /// The members and their addresses, as the node asked knows them.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, ConnError> {
        match self.admin(AdminRequest::Members).await? {
            AdminAnswer::Members(members) => Ok(members),
            _ => Err(mismatch()),
        }
    }

    /// Adds the members' addresses to the ones to rotate through. Best effort: a client
    /// still works with only the endpoints it was given.
    async fn learn_members(&self) {
        if let Ok(members) = self.members().await {
            let mut known = lock(&self.inner.known);
            for member in members {
                if !known.contains(&member.address) {
                    known.push(member.address);
                }
            }
        }
    }

    /// The retry loop shared by data and admin requests.
    async fn request(&self, message: &ToNode, policy: &Policy) -> Result<Reply, ConnError> {
        self.attempts(message, policy)
            .await
            .map_err(|ended| ended.error)
    }

    /// The retry loop, saying how it ended when no reply came.
    async fn attempts(&self, message: &ToNode, policy: &Policy) -> Result<Reply, Ended> {
        let deadline = Instant::now() + self.inner.options.timeout;
        let mut target = match &policy.pinned {
            Some(endpoint) => endpoint.clone(),
            None => self.route_start(&policy.route),
        };
        let mut failures = Failures::default();
        let mut backoff = BACKOFF.0;
        let mut followed = false;
        for _ in 0..ATTEMPTS_MAX {
            let attempt_deadline = self.attempt_deadline(deadline, policy);
            let mut sent = false;
            let attempt = self
                .attempt(&target, message, attempt_deadline, &mut sent)
                .await;
            let next = match attempt {
                Attempt::Reply(reply) => {
                    if policy.pinned.is_none() {
                        self.remember(&policy.route, &target);
                    }
                    return Ok(reply);
                }
                Attempt::Refused(error) => {
                    let earlier_may_have_applied = failures.may_have_applied;
                    match failures.refused(error, policy) {
                        Ok(next) => next,
                        Err(error) => {
                            let error = ConnError::Client(error);
                            return Err(Ended {
                                error,
                                earlier_may_have_applied,
                            });
                        }
                    }
                }
                Attempt::Rejected(error) => {
                    return Err(Ended {
                        error: ConnError::Admin(error),
                        earlier_may_have_applied: failures.may_have_applied,
                    });
                }
                Attempt::Failed(error) => failures.failed(error, sent, policy),
            };
            let pause = match next {
                Retry::Stop => break,
                Retry::Follow(address) => {
                    target = address;
                    // A fresh hint is followed at once; a second one may be stale.
                    let pause = if followed { backoff } else { Duration::ZERO };
                    followed = true;
                    pause
                }
                Retry::SameNode => backoff,
                Retry::OtherNode => {
                    target = self.next_after(&target);
                    backoff
                }
            };
            if Instant::now() + pause >= deadline {
                break;
            }
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(BACKOFF.1);
        }
        let earlier_may_have_applied = failures.may_have_applied;
        Err(Ended {
            error: failures.give_up(policy.write),
            earlier_may_have_applied,
        })
    }

    /// An attempt that may be resent gets a share of the deadline, so a node that died
    /// without closing its connection costs one share, not the whole request.
    fn attempt_deadline(&self, deadline: Instant, policy: &Policy) -> Instant {
        if policy.pinned.is_some() || !policy.resend_safe {
            return deadline;
        }
        let share = (self.inner.options.timeout / 3).max(ATTEMPT_MIN);
        deadline.min(Instant::now() + share)
    }

    async fn attempt(
        &self,
        endpoint: &str,
        message: &ToNode,
        deadline: Instant,
        sent: &mut bool,
    ) -> Attempt {
        let exchange = self.exchange(endpoint, message, deadline, sent);
        let answer = match tokio::time::timeout_at(deadline, exchange).await {
            Err(_) => {
                return Attempt::Failed(ConnError::Timeout {
                    may_have_applied: *sent,
                    resend: None,
                });
            }
            Ok(Err(error)) => return Attempt::Failed(error),
            Ok(Ok(answer)) => answer,
        };
        match answer {
            FromNode::Data(response) => match response.result {
                Ok((answer, receipt)) => Attempt::Reply(Reply::Data(answer, receipt)),
                Err(error) => Attempt::Refused(error),
            },
            FromNode::Admin(Ok(answer)) => Attempt::Reply(Reply::Admin(answer)),
            FromNode::Admin(Err(AdminError::Request(error))) => Attempt::Refused(error),
            FromNode::Admin(Err(error)) => Attempt::Rejected(error),
        }
    }

    /// One stream: write the frame, finish, read the answer. `sent` turns true once any
    /// byte of the request may have left.
    async fn exchange(
        &self,
        endpoint: &str,
        message: &ToNode,
        deadline: Instant,
        sent: &mut bool,
    ) -> Result<FromNode, ConnError> {
        let frame = wire::encode(message).map_err(|error| ConnError::Protocol {
            reason: format!("encoding the request: {error}"),
        })?;
        let (mut send, mut recv) = self.open_stream(endpoint, deadline).await?;
        let lost = |reason: String| ConnError::Lost {
            endpoint: endpoint.to_string(),
            reason,
            may_have_applied: false,
        };
        *sent = true;
        send.write_all(&frame)
            .await
            .map_err(|error| lost(error.to_string()))?;
        send.finish().map_err(|error| lost(error.to_string()))?;
        let bytes = recv
            .read_to_end(wire::FRAME_BYTES_MAX + wire::HEADER_BYTES)
            .await
            .map_err(|error| lost(error.to_string()))?;
        let (answer, used) =
            wire::decode::<FromNode>(&bytes).map_err(|error| ConnError::Protocol {
                reason: format!("decoding the answer of {endpoint}: {error}"),
            })?;
        if used != bytes.len() {
            return Err(ConnError::Protocol {
                reason: format!("{endpoint} sent bytes after its answer"),
            });
        }
        Ok(answer)
    }

    /// Opens a stream on the cached connection, reconnecting once if the cached one has
    /// gone away (a node restarted): nothing was sent yet, so that retry is always safe.
    async fn open_stream(
        &self,
        endpoint: &str,
        deadline: Instant,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ConnError> {
        let mut last = None;
        for _ in 0..2 {
            let connection = self.connection(endpoint, deadline).await?;
            match connection.open_bi().await {
                Ok(streams) => return Ok(streams),
                Err(error) => {
                    self.forget(endpoint, &connection).await;
                    last = Some(error.to_string());
                }
            }
        }
        Err(ConnError::Connect {
            endpoint: endpoint.to_string(),
            reason: last.unwrap_or_default(),
        })
    }

    /// The cached connection to `endpoint`, or a new one.
    async fn connection(
        &self,
        endpoint: &str,
        deadline: Instant,
    ) -> Result<quinn::Connection, ConnError> {
        let address = resolve(endpoint).await?;
        let slot = self.slot(address);
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref()
            && connection.close_reason().is_none()
        {
            return Ok(connection.clone());
        }
        let unreachable = |reason: String| ConnError::Connect {
            endpoint: endpoint.to_string(),
            reason,
        };
        let quic = self.quic_endpoint(address)?;
        let connecting = quic
            .connect_with(
                self.inner.connections.config.clone(),
                address,
                tls::ANY_NODE_SERVER_NAME,
            )
            .map_err(|error| unreachable(error.to_string()))?;
        let connection = tokio::time::timeout_at(deadline, connecting)
            .await
            .map_err(|_| unreachable("no answer before the deadline".to_string()))?
            .map_err(|error| unreachable(error.to_string()))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn forget(&self, endpoint: &str, connection: &quinn::Connection) {
        let Ok(address) = resolve(endpoint).await else {
            return;
        };
        let slot = self.slot(address);
        let mut slot = slot.lock().await;
        if slot.as_ref().map(quinn::Connection::stable_id) == Some(connection.stable_id()) {
            *slot = None;
        }
    }

    fn slot(&self, address: SocketAddr) -> Slot {
        lock(&self.inner.connections.slots)
            .entry(address)
            .or_default()
            .clone()
    }

    fn quic_endpoint(&self, target: SocketAddr) -> Result<quinn::Endpoint, ConnError> {
        let family = usize::from(target.is_ipv6());
        let mut endpoints = lock(&self.inner.connections.endpoints);
        if let Some(endpoint) = &endpoints[family] {
            return Ok(endpoint.clone());
        }
        let bind: SocketAddr = if target.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = quinn::Endpoint::client(bind).map_err(|error| ConnError::Connect {
            endpoint: target.to_string(),
            reason: format!("binding a local UDP socket: {error}"),
        })?;
        endpoints[family] = Some(endpoint.clone());
        Ok(endpoint)
    }

    fn route_start(&self, route: &str) -> String {
        if let Some(address) = lock(&self.inner.routes).get(route) {
            return address.clone();
        }
        lock(&self.inner.preferred).clone()
    }

    fn remember(&self, route: &str, endpoint: &str) {
        let mut routes = lock(&self.inner.routes);
        if routes.get(route).map(String::as_str) != Some(endpoint) {
            routes.insert(route.to_string(), endpoint.to_string());
        }
    }

    /// The known address after `endpoint`, round the list.
    fn next_after(&self, endpoint: &str) -> String {
        next_in(&lock(&self.inner.known), endpoint)
    }
}

fn next_in(known: &[String], endpoint: &str) -> String {
    match known.iter().position(|address| address == endpoint) {
        Some(index) => known[(index + 1) % known.len()].clone(),
        None => known
            .first()
            .cloned()
            .unwrap_or_else(|| endpoint.to_string()),
    }
}

fn lost_with(error: ConnError, may_have_applied: bool) -> ConnError {
    match error {
        ConnError::Lost {
            endpoint, reason, ..
        } => ConnError::Lost {
            endpoint,
            reason,
            may_have_applied,
        },
        ConnError::Timeout { .. } => ConnError::Timeout {
            may_have_applied,
            resend: None,
        },
        other => other,
    }
}

fn mismatch() -> ConnError {
    ConnError::Protocol {
        reason: "the node answered a different kind of request".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;
    use bytes::Bytes;

    #[test]
    fn options_default_to_admin_and_five_seconds() {
        let options = ClientOptions::new(vec!["127.0.0.1:7001".into()], PathBuf::from("/c"));
        assert_eq!(options.name, "admin");
        assert_eq!(options.timeout, Duration::from_secs(5));
        assert_eq!(options.endpoints, vec!["127.0.0.1:7001".to_string()]);
    }

    #[test]
    fn retry_follows_hints_and_moves_off_unavailable_nodes() {
        let hinted = ClientError::NotLeader {
            leader_hint: Some(NodeId(2)),
            leader_addr: Some("127.0.0.1:7002".into()),
        };
        assert_eq!(retry_after(&hinted), Retry::Follow("127.0.0.1:7002".into()));
        let unhinted = ClientError::NotLeader {
            leader_hint: None,
            leader_addr: None,
        };
        assert_eq!(retry_after(&unhinted), Retry::OtherNode);
        let election = ClientError::Unavailable {
            reason: UnavailableReason::NoLeader,
        };
        assert_eq!(retry_after(&election), Retry::OtherNode);
        assert_eq!(retry_after(&ClientError::Backpressure), Retry::SameNode);
        let unknown = ClientError::UnknownKeyspace {
            name: "orders".into(),
        };
        assert_eq!(retry_after(&unknown), Retry::Stop);
        assert_eq!(
            retry_after(&ClientError::WriteLevelNotApplicable),
            Retry::Stop
        );
    }

    #[test]
    fn only_refusals_after_a_possible_append_may_have_applied() {
        let election = ClientError::Unavailable {
            reason: UnavailableReason::NoLeader,
        };
        let minority = ClientError::Unavailable {
            reason: UnavailableReason::MinoritySide,
        };
        assert!(!error_may_have_applied(&election));
        assert!(error_may_have_applied(&minority));
        assert!(!error_may_have_applied(&ClientError::Backpressure));
        assert!(ConnError::Client(minority).may_have_applied());
    }

    fn policy(pinned: bool) -> Policy {
        Policy {
            route: "orders".into(),
            pinned: pinned.then(|| "a:1".to_string()),
            write: true,
            resend_safe: true,
        }
    }

    #[test]
    fn giving_up_reports_an_indeterminate_write_as_a_timeout() {
        let election = ClientError::Unavailable {
            reason: UnavailableReason::NoLeader,
        };
        let lost = || ConnError::Connect {
            endpoint: "b:2".into(),
            reason: "no answer".into(),
        };
        // A refusal is reported over a later transport failure.
        let mut failures = Failures::default();
        assert_eq!(
            failures.refused(election.clone(), &policy(false)),
            Ok(Retry::OtherNode)
        );
        assert_eq!(
            failures.failed(lost(), false, &policy(false)),
            Retry::OtherNode
        );
        assert!(matches!(
            failures.give_up(true),
            ConnError::Client(ClientError::Unavailable { .. })
        ));
        // A request that may have reached a node ends as an indeterminate write.
        let mut failures = Failures::default();
        assert_eq!(
            failures.failed(lost(), true, &policy(false)),
            Retry::OtherNode
        );
        assert!(matches!(
            failures.give_up(true),
            ConnError::Timeout {
                may_have_applied: true,
                ..
            }
        ));
        // Pinned: the refusal comes back as it is, and a failure is not retried.
        let mut failures = Failures::default();
        assert_eq!(
            failures.refused(election.clone(), &policy(true)),
            Err(election)
        );
        assert_eq!(failures.failed(lost(), false, &policy(true)), Retry::Stop);
        assert!(matches!(failures.give_up(false), ConnError::Connect { .. }));
        assert!(matches!(
            Failures::default().give_up(false),
            ConnError::Timeout {
                may_have_applied: false,
                ..
            }
        ));
    }

    #[test]
    fn counters_are_not_resent_and_reads_are_not_writes() {
        let key = Bytes::from_static(b"k");
        let add = Operation::Add {
            key: key.clone(),
            by: 1,
        };
        let get = Operation::Get { key: key.clone() };
        let put = Operation::Put {
            key,
            value: Bytes::from_static(b"v"),
            context: None,
        };
        assert!(!resend_is_safe(&add));
        assert!(resend_is_safe(&put));
        assert!(put.is_write() && add.is_write());
        assert!(!get.is_write());
    }

    #[test]
    fn rotation_goes_round_the_known_addresses() {
        let known = vec!["a:1".to_string(), "b:2".to_string(), "c:3".to_string()];
        assert_eq!(next_in(&known, "a:1"), "b:2");
        assert_eq!(next_in(&known, "c:3"), "a:1");
        assert_eq!(next_in(&known, "elsewhere:4"), "a:1");
        assert_eq!(next_in(&[], "x:1"), "x:1");
    }

    #[test]
    fn client_ids_differ() {
        assert_ne!(
            Sessions::new().current().id(),
            Sessions::new().current().id()
        );
    }

    #[tokio::test]
    async fn endpoints_that_do_not_resolve_are_typed_errors() {
        for endpoint in ["no-port", "127.0.0.1:notaport", "127.0.0.1"] {
            let error = resolve(endpoint).await.unwrap_err();
            assert!(
                matches!(&error, ConnError::Endpoint { endpoint: e, .. } if e == endpoint),
                "{endpoint}: {error:?}"
            );
        }
        let address = resolve("127.0.0.1:7001").await.unwrap();
        assert_eq!(address.port(), 7001);
    }

    #[tokio::test]
    async fn connect_needs_endpoints_and_a_certificate() {
        let empty = ClientOptions::new(vec![], PathBuf::from("/nonexistent"));
        assert!(matches!(
            Client::connect(empty).await,
            Err(ConnError::NoEndpoints)
        ));
        let dir = tempfile::tempdir().unwrap();
        let options = ClientOptions::new(vec!["127.0.0.1:9".into()], dir.path().to_path_buf());
        assert!(matches!(
            Client::connect(options).await,
            Err(ConnError::Cert(_))
        ));
    }

    type Seen = Arc<Mutex<Vec<ToNode>>>;

    /// A node stand-in: answers every stream with `answer(request)` and records requests.
    fn fake_node(
        dir: &std::path::Path,
        name: &str,
        answer: impl Fn(&ToNode) -> Option<FromNode> + Send + Sync + 'static,
    ) -> (String, Seen, quinn::Endpoint) {
        let identity = Identity::load(dir, Party::Node, name).unwrap();
        let config = identity.server_config().unwrap();
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let address = endpoint.local_addr().unwrap().to_string();
        let seen: Seen = Arc::default();
        let answer = Arc::new(answer);
        let (accepting, recorded) = (endpoint.clone(), seen.clone());
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let (answer, recorded) = (answer.clone(), recorded.clone());
                tokio::spawn(async move {
                    let Ok(connection) = incoming.await else {
                        return;
                    };
                    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                        let bytes = recv.read_to_end(1 << 20).await.unwrap();
                        let (request, _) = wire::decode::<ToNode>(&bytes).unwrap();
                        let reply = answer(&request);
                        lock(&recorded).push(request);
                        let Some(reply) = reply else {
                            // Silent: keep the stream open, never answer.
                            tokio::spawn(async move {
                                let _held = send;
                                std::future::pending::<()>().await;
                            });
                            continue;
                        };
                        send.write_all(&wire::encode(&reply).unwrap())
                            .await
                            .unwrap();
                        send.finish().unwrap();
                    }
                });
            }
        });
        (address, seen, endpoint)
    }

    /// Answers admin requests with no members, data requests with `data` (None: silence).
    fn admin_or(
        data: Option<FromNode>,
    ) -> impl Fn(&ToNode) -> Option<FromNode> + Send + Sync + 'static {
        move |request| match request {
            ToNode::Admin(_) => Some(FromNode::Admin(Ok(AdminAnswer::Members(vec![])))),
            ToNode::Data(_) => data.clone(),
        }
    }

    fn committed() -> FromNode {
        use crate::protocol::{ClientResponse, Position, Served};
        use crate::types::{LogIndex, Term};
        let receipt = Receipt {
            level: Served::Committed,
            node: NodeId(2),
            position: Position::Raft {
                term: Term(1),
                applied: LogIndex(5),
                known_commit: LogIndex(5),
            },
            behind: None,
        };
        let answer = Answer::Written {
            revision: LogIndex(5),
        };
        FromNode::Data(ClientResponse {
            result: Ok((answer, receipt)),
        })
    }

    fn data_requests(seen: &Seen) -> Vec<(ClientId, u64)> {
        lock(seen)
            .iter()
            .filter_map(|request| match request {
                ToNode::Data(data) => Some((data.client, data.seq)),
                ToNode::Admin(_) => None,
            })
            .collect()
    }

    fn put() -> Operation {
        Operation::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            context: None,
        }
    }

    #[tokio::test]
    async fn a_write_follows_the_leader_hint_with_the_same_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = ["n1".to_string(), "n2".to_string()];
        tls::init(dir.path(), &nodes, &["admin".to_string()]).unwrap();
        let (leader, leader_seen, _l) = fake_node(dir.path(), "n2", admin_or(Some(committed())));
        let not_leader = FromNode::Data(crate::protocol::ClientResponse {
            result: Err(ClientError::NotLeader {
                leader_hint: Some(NodeId(2)),
                leader_addr: Some(leader.clone()),
            }),
        });
        let (follower, follower_seen, _f) = fake_node(dir.path(), "n1", admin_or(Some(not_leader)));
        let options = ClientOptions::new(vec![follower.clone()], dir.path().to_path_buf());
        let client = Client::connect(options).await.unwrap();
        let (answer, _) = client
            .execute("orders", put(), None, None, None)
            .await
            .unwrap();
        assert_eq!(
            answer,
            Answer::Written {
                revision: crate::types::LogIndex(5)
            }
        );
        let first = (client.id(), 1);
        assert_eq!(data_requests(&follower_seen), vec![first]);
        assert_eq!(data_requests(&leader_seen), vec![first]);
        // The next request goes straight to the leader, with the next sequence number.
        client
            .execute("orders", put(), None, None, None)
            .await
            .unwrap();
        assert_eq!(data_requests(&follower_seen), vec![first]);
        assert_eq!(data_requests(&leader_seen), vec![first, (client.id(), 2)]);
        // Pinned to the follower, the hint comes back as it is.
        let pinned = client
            .execute_at(&follower, "orders", put(), None, None, None)
            .await;
        assert!(matches!(
            pinned,
            Err(ConnError::Client(ClientError::NotLeader { .. }))
        ));
    }

    #[tokio::test]
    async fn unknown_keyspace_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        tls::init(dir.path(), &["n1".to_string()], &["admin".to_string()]).unwrap();
        let unknown = FromNode::Data(crate::protocol::ClientResponse {
            result: Err(ClientError::UnknownKeyspace {
                name: "nope".into(),
            }),
        });
        let (node, seen, _n) = fake_node(dir.path(), "n1", admin_or(Some(unknown)));
        let options = ClientOptions::new(vec![node], dir.path().to_path_buf());
        let client = Client::connect(options).await.unwrap();
        let result = client.execute("nope", put(), None, None, None).await;
        assert!(matches!(
            result,
            Err(ConnError::Client(ClientError::UnknownKeyspace { .. }))
        ));
        assert_eq!(data_requests(&seen).len(), 1);
    }

    #[tokio::test]
    async fn a_node_that_never_answers_leaves_writes_indeterminate() {
        let dir = tempfile::tempdir().unwrap();
        tls::init(dir.path(), &["n1".to_string()], &["admin".to_string()]).unwrap();
        let (node, seen, _n) = fake_node(dir.path(), "n1", admin_or(None));
        let mut options = ClientOptions::new(vec![node], dir.path().to_path_buf());
        options.timeout = Duration::from_millis(600);
        let client = Client::connect(options).await.unwrap();
        let put = client.execute("orders", put(), None, None, None).await;
        assert!(
            matches!(
                put,
                Err(ConnError::Timeout {
                    may_have_applied: true,
                    resend: Some(_)
                })
            ),
            "{put:?}"
        );
        let key = Bytes::from_static(b"k");
        let get = Operation::Get { key: key.clone() };
        let read = client.execute("orders", get, None, None, None).await;
        assert!(
            matches!(
                read,
                Err(ConnError::Timeout {
                    may_have_applied: false,
                    resend: None
                })
            ),
            "{read:?}"
        );
        // A counter increment is sent once: a second copy would count twice.
        let before = data_requests(&seen).len();
        let add = Operation::Add { key, by: 1 };
        let incr = client.execute("likes", add, None, None, None).await;
        assert!(
            incr.as_ref().is_err_and(ConnError::may_have_applied),
            "{incr:?}"
        );
        let sent: Vec<_> = data_requests(&seen).split_off(before);
        assert_eq!(sent.len(), 1, "{sent:?}");
    }

    #[tokio::test]
    async fn a_silent_endpoint_fails_by_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        tls::init(dir.path(), &["n1".to_string()], &["admin".to_string()]).unwrap();
        // A bound UDP socket nobody reads: the handshake gets no answer.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let endpoint = silent.local_addr().unwrap().to_string();
        let mut options = ClientOptions::new(vec![endpoint.clone()], dir.path().to_path_buf());
        options.timeout = Duration::from_millis(300);
        match Client::connect(options).await {
            Err(ConnError::Connect { endpoint: e, .. }) => assert_eq!(e, endpoint),
            other => panic!("expected a connect error, got {other:?}"),
        }
    }

    fn data_sent(seen: &Seen) -> Vec<ClientRequest> {
        lock(seen)
            .iter()
            .filter_map(|request| match request {
                ToNode::Data(data) => Some(data.clone()),
                ToNode::Admin(_) => None,
            })
            .collect()
    }

    /// A write whose answer never came keeps its seq waiting (so the cluster keeps its
    /// result) until the application resends it, under the same (client, seq), or drops the
    /// handle; meanwhile other writes of the same client go on.
    #[tokio::test]
    async fn an_uncertain_write_is_resent_under_its_identity() {
        let dir = tempfile::tempdir().unwrap();
        tls::init(dir.path(), &["n1".to_string()], &["admin".to_string()]).unwrap();
        // Silent to the first write's attempts, then answering.
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let quiet = silent.clone();
        let (node, seen, _n) = fake_node(dir.path(), "n1", move |request| match request {
            ToNode::Admin(_) => Some(FromNode::Admin(Ok(AdminAnswer::Members(vec![])))),
            ToNode::Data(_) if quiet.load(std::sync::atomic::Ordering::SeqCst) => None,
            ToNode::Data(_) => Some(committed()),
        });
        let mut options = ClientOptions::new(vec![node], dir.path().to_path_buf());
        options.timeout = Duration::from_millis(600);
        let client = Client::connect(options).await.unwrap();
        let Err(ConnError::Timeout {
            may_have_applied: true,
            resend: Some(resend),
        }) = client.execute("orders", put(), None, None, None).await
        else {
            panic!("an unanswered write is uncertain, with a handle");
        };
        let (client_id, seq) = (resend.client(), resend.seq());
        silent.store(false, std::sync::atomic::Ordering::SeqCst);
        client
            .execute("orders", put(), None, None, None)
            .await
            .unwrap();
        let other = data_sent(&seen).pop().unwrap();
        assert_eq!((other.client, other.seq), (client_id, seq + 1));
        assert_eq!(other.first_unacked, seq, "the uncertain write still waits");
        client.resend(resend).await.unwrap();
        let resent = data_sent(&seen).pop().unwrap();
        assert_eq!((resent.client, resent.seq), (client_id, seq));
        client
            .execute("orders", put(), None, None, None)
            .await
            .unwrap();
        let after = data_sent(&seen).pop().unwrap();
        assert_eq!(after.first_unacked, seq + 2, "answered: acknowledged");
        assert!(data_sent(&seen).iter().all(|request| request.opens_session));
    }

    /// The cluster forgot the session (it expired while the client idled): a write it refused
    /// without any earlier attempt is retried once in a new session, as a new request.
    #[tokio::test]
    async fn a_write_refused_for_an_expired_session_moves_to_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        tls::init(dir.path(), &["n1".to_string()], &["admin".to_string()]).unwrap();
        let forgotten: Arc<Mutex<Option<ClientId>>> = Arc::default();
        let known = forgotten.clone();
        let (node, seen, _n) = fake_node(dir.path(), "n1", move |request| match request {
            ToNode::Admin(_) => Some(FromNode::Admin(Ok(AdminAnswer::Members(vec![])))),
            ToNode::Data(data) if *lock(&known) == Some(data.client) => {
                Some(FromNode::data_error(ClientError::SessionExpired {
                    seq: data.seq,
                }))
            }
            ToNode::Data(_) => Some(committed()),
        });
        let options = ClientOptions::new(vec![node], dir.path().to_path_buf());
        let client = Client::connect(options).await.unwrap();
        let old = client.id();
        *lock(&forgotten) = Some(old);
        client
            .execute("orders", put(), None, None, None)
            .await
            .unwrap();
        let sent = data_sent(&seen);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!((sent[0].client, sent[0].seq), (old, 1));
        assert_ne!(sent[1].client, old);
        assert_eq!((sent[1].seq, sent[1].first_unacked), (1, 1));
        assert!(sent[1].opens_session);
        assert_eq!(
            client.id(),
            sent[1].client,
            "later requests join the new session"
        );
    }
}
