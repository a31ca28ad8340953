//! Data requests: what a client asks of a keyspace and what the node answers.
//!
//! One request per bidirectional QUIC stream: the client writes one [`ClientRequest`] frame
//! (through [`crate::wire`]) and finishes its side; the node answers with one
//! [`ClientResponse`] frame. Every answer that served data carries a [`Receipt`]: the level
//! actually served, the node that served it, and where that node stood.
//!
//! Which operations and levels apply to which keyspace is decided here, once, by
//! [`check_request`], so the node, the client library and the CLI all refuse the same things
//! with the same typed [`ClientError`].

use super::watch::{FeedPosition, WatchEvent, WatchFrom};
use crate::eventual::{HlcTimestamp, ReadContext, ReadValue, SessionToken, ValueType};
use crate::net::tls::Role;
use crate::strong::{
    ClientId, CommandError, Compare, KEY_BYTES_MAX, SCAN_LIMIT_MAX, StepOutcome, TxnId, TxnOp,
    TxnPart, TxnStep, VALUE_BYTES_MAX, Versioned,
};
use crate::types::{LogIndex, NodeId, Term};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest keyspace name, in bytes.
pub const KEYSPACE_NAME_BYTES_MAX: usize = 64;
/// Members one `sadd` / `srem` may carry.
pub const SET_MEMBERS_MAX: usize = 1024;

/// Where a keyspace sits on the dial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyspaceMode {
    /// Raft, linearizable.
    Strong,
    /// CRDT values of one type, gossip and anti-entropy.
    Eventual(ValueType),
    /// Leaderless per-key Paxos (CASPaxos), linearizable: every key a register, any node
    /// proposes, no election. Strong's operations but `scan`, `txn` and `watch`.
    Paxos,
}

impl fmt::Display for KeyspaceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyspaceMode::Strong => f.write_str("strong"),
            KeyspaceMode::Eventual(ValueType::Lww) => f.write_str("eventual lww"),
            KeyspaceMode::Eventual(ValueType::MvReg) => f.write_str("eventual mvreg"),
            KeyspaceMode::Eventual(ValueType::Counter) => f.write_str("eventual counter"),
            KeyspaceMode::Eventual(ValueType::Set) => f.write_str("eventual set"),
            KeyspaceMode::Paxos => f.write_str("paxos"),
        }
    }
}

/// How fresh a read must be. The first four apply to strong keyspaces, the last three to
/// eventual ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadLevel {
    /// ReadIndex on the leader: the default for strong keyspaces.
    Linearizable,
    /// The leader's lease, no round trip.
    Lease,
    /// A follower asks the leader for a read index, then serves locally.
    Follower,
    /// Any replica's applied state, saying how far behind it is.
    Stale,
    /// The receiving node's state: the default for eventual keyspaces.
    Local,
    /// Read-your-writes: served once the node has seen the request's session token.
    Session,
    /// Merge a majority's states, repairing stale ones.
    Quorum,
}

impl ReadLevel {
    /// The level's name, as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            ReadLevel::Linearizable => "linearizable",
            ReadLevel::Lease => "lease",
            ReadLevel::Follower => "follower",
            ReadLevel::Stale => "stale",
            ReadLevel::Local => "local",
            ReadLevel::Session => "session",
            ReadLevel::Quorum => "quorum",
        }
    }
}

impl fmt::Display for ReadLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When an eventual write is acknowledged: the engine's own levels. Strong writes are always
/// acknowledged after a majority committed them, so they take none.
pub use crate::eventual::WriteLevel;

/// One data operation on one keyspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Strong, `lww`, `mvreg` (with the context of an earlier read, it replaces those siblings).
    Put {
        key: Bytes,
        value: Bytes,
        context: Option<ReadContext>,
    },
    /// Strong, `lww`, `mvreg`, `counter`, `set`.
    Get { key: Bytes },
    /// Strong, `lww`, `mvreg` (with a context, only the siblings it saw).
    Delete {
        key: Bytes,
        context: Option<ReadContext>,
    },
    /// Strong only: set (or delete, `value: None`) if the mod revision is `expected` (`None`:
    /// the key must be absent).
    Cas {
        key: Bytes,
        expected: Option<LogIndex>,
        value: Option<Bytes>,
    },
    /// Strong only: one page of the keys starting with `prefix`, in order: at most `limit`
    /// of them and at most [`SCAN_BYTES_MAX`](crate::strong::SCAN_BYTES_MAX) of entries, starting after `after`
    /// (the `next` of the page before) when it is given. [`Answer::Scan`] says where the next
    /// page starts.
    Scan {
        prefix: Bytes,
        limit: u32,
        after: Option<Bytes>,
    },
    /// `counter`: add `by` (negative: decrement).
    Add { key: Bytes, by: i64 },
    /// `set`: add members.
    SetAdd { key: Bytes, members: Vec<Bytes> },
    /// `set`: remove members: the adds an earlier read of the key saw (`context`, from its
    /// answer), or without one those the serving node has observed. The client library reads
    /// the context first when it is not given, so that every attempt removes the same adds.
    SetRemove {
        key: Bytes,
        members: Vec<Bytes>,
        context: Option<ReadContext>,
    },
    /// Strong and eventual: the changes to keys starting with `prefix` from `from` on, at most
    /// `limit` of them; held by the node up to `wait_ms` (at most
    /// [`WATCH_WAIT_MAX_MS`](super::WATCH_WAIT_MAX_MS)) while there are none. See
    /// [`super::watch`].
    Watch {
        prefix: Bytes,
        from: WatchFrom,
        limit: u32,
        wait_ms: u32,
    },
    /// Strong only: a transaction in one log entry: if every compare holds the `success`
    /// changes apply, else the `failure` ones, all at one revision; [`Answer::Txn`] says which.
    /// At most [`TXN_OPS_MAX`](crate::strong::TXN_OPS_MAX) compares and changes per branch,
    /// no key twice in a branch.
    Txn {
        compares: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    /// Strong only: one step of a transaction across keyspaces, as its coordinator (the
    /// client library's [`crate::txn`]) or whoever resolves its intents sends it. See
    /// [`crate::strong::twophase`].
    TxnStep(TxnStep),
}

impl Operation {
    /// The command's name, as the CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Put { .. } => "put",
            Operation::Get { .. } => "get",
            Operation::Delete { .. } => "delete",
            Operation::Cas { .. } => "cas",
            Operation::Scan { .. } => "scan",
            Operation::Add { by, .. } if *by < 0 => "decr",
            Operation::Add { .. } => "incr",
            Operation::SetAdd { .. } => "sadd",
            Operation::SetRemove { .. } => "srem",
            Operation::Watch { .. } => "watch",
            Operation::Txn { .. } => "txn",
            Operation::TxnStep(_) => "txn step",
        }
    }

    /// Whether the operation changes data (and so needs a role that may write).
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            Operation::Get { .. } | Operation::Scan { .. } | Operation::Watch { .. }
        )
    }

    /// The key the operation names (a scan's or a watch's prefix).
    pub fn key(&self) -> &Bytes {
        match self {
            Operation::Put { key, .. }
            | Operation::Get { key }
            | Operation::Delete { key, .. }
            | Operation::Cas { key, .. }
            | Operation::Add { key, .. }
            | Operation::SetAdd { key, .. }
            | Operation::SetRemove { key, .. } => key,
            Operation::Scan { prefix, .. } | Operation::Watch { prefix, .. } => prefix,
            Operation::Txn { .. } | Operation::TxnStep(_) => &NO_KEY,
        }
    }

    /// Whether the operation exists for a keyspace in `mode`.
    fn applies_to(&self, mode: KeyspaceMode) -> bool {
        use KeyspaceMode::{Eventual, Paxos, Strong};
        use ValueType::{Counter, Lww, MvReg, Set};
        match self {
            Operation::Get { .. } => true,
            Operation::Put { context, .. } | Operation::Delete { context, .. } => match mode {
                Strong | Paxos | Eventual(Lww) => context.is_none(),
                Eventual(MvReg) => true,
                Eventual(Counter | Set) => false,
            },
            Operation::Cas { .. } => matches!(mode, Strong | Paxos),
            // A paxos keyspace has no order across keys to scan, commit or watch in, and no
            // log for a transaction's steps.
            Operation::Scan { .. } | Operation::Txn { .. } | Operation::TxnStep(_) => {
                mode == Strong
            }
            Operation::Add { .. } => mode == Eventual(Counter),
            Operation::SetAdd { .. } | Operation::SetRemove { .. } => mode == Eventual(Set),
            // A strong watch counts revisions, an eventual one a node's feed.
            Operation::Watch { from, .. } => matches!(
                (from, mode),
                (WatchFrom::Now, Strong | Eventual(_))
                    | (WatchFrom::Revision(_), Strong)
                    | (WatchFrom::Feed(_), Eventual(_))
            ),
        }
    }
}

/// A data request. `(client, seq)` makes a retry recognisable: a strong write retried with the
/// same pair is applied once and answered with its first result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// The client's session: its id, this request's seq (a retry reuses it), the lowest seq
    /// of the session still waiting for an answer (at most `seq`), and whether this request
    /// may open the session (see `strong::Request`). Eventual keyspaces ignore them.
    pub client: ClientId,
    pub seq: u64,
    pub first_unacked: u64,
    pub opens_session: bool,
    pub keyspace: String,
    pub operation: Operation,
    /// `None`: the keyspace's default (linearizable, or local).
    pub read: Option<ReadLevel>,
    /// `None`: local for eventual keyspaces; must be `None` for strong ones.
    pub write: Option<WriteLevel>,
    /// The token of an earlier write, for `ReadLevel::Session`.
    pub session: Option<SessionToken>,
    /// The time the client gave this write, the same in every attempt of it. An `lww`
    /// keyspace stamps the write with it (tie-broken by the client's session id) instead of
    /// with the node's clock, so a resend through any node stores what the first attempt
    /// stored and cannot overwrite a newer write; other keyspaces ignore it. As with
    /// Cassandra's client-side timestamps, a client whose clock is slow loses races it should
    /// win; one more than the keyspace's clock skew bound ahead is refused.
    pub written_at: Option<WriteTime>,
}

impl ClientRequest {
    /// Request `seq` of session `client`, as a raw client sends it: it acknowledges nothing
    /// (`first_unacked` 1), may open the session, takes the keyspace's default levels and
    /// carries no write time. The client library fills these from its session instead.
    pub fn new(
        client: ClientId,
        seq: u64,
        keyspace: impl Into<String>,
        operation: Operation,
    ) -> ClientRequest {
        ClientRequest {
            client,
            seq,
            first_unacked: 1,
            opens_session: true,
            keyspace: keyspace.into(),
            operation,
            read: None,
            write: None,
            session: None,
            written_at: None,
        }
    }
}

/// A client's hybrid-logical time for a write: wall-clock milliseconds, then a counter within
/// one millisecond (see [`crate::eventual::hlc`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WriteTime {
    pub physical_ms: u64,
    pub logical: u32,
}

/// Where the serving node stood when it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Position {
    /// Strong: the node's applied index and the commit index it knew, in `term`.
    Raft {
        term: Term,
        applied: LogIndex,
        known_commit: LogIndex,
    },
    /// Eventual: the session token of the write (for writes), its HLC stamp (`lww`), and the
    /// serving node's durable version vector: for each node, the writes of it this node holds.
    Eventual {
        token: Option<SessionToken>,
        stamp: Option<HlcTimestamp>,
        vector: Vec<(NodeId, u64)>,
    },
    /// Paxos: the ballot the answer was chosen under and the acceptors (a majority) that
    /// agreed to it. Revisions of a paxos keyspace count per key.
    Paxos {
        ballot: crate::paxos::Ballot,
        acceptors: Vec<NodeId>,
    },
}

/// What every answer that served data carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The level actually served (a write's level, or a read's).
    pub level: Served,
    pub node: NodeId,
    pub position: Position,
    /// For stale, follower and local reads: entries (strong) the node knows it lags behind.
    pub behind: Option<u64>,
}

/// The level a receipt reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Served {
    Read(ReadLevel),
    /// A strong write: committed by a majority.
    Committed,
    /// An eventual write, acknowledged at this level.
    Write(WriteLevel),
}

/// The data an answer carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// Strong: the key's value and revisions (None: absent).
    Strong(Option<Versioned>),
    /// Strong: a write applied at `revision`.
    Written { revision: LogIndex },
    /// Strong: a cas, applied or not, with the key as it is after it.
    Cas {
        succeeded: bool,
        revision: LogIndex,
        current: Option<Versioned>,
    },
    /// Strong: one page of a scan's keys, in order. `next` is `Some` when more keys follow:
    /// the last key of this page, to send as the next request's `after`.
    Scan {
        entries: Vec<(Bytes, Versioned)>,
        next: Option<Bytes>,
    },
    /// Eventual: a read's value.
    Eventual(ReadValue),
    /// Eventual: a write was acknowledged; `acks` replicas have stored it.
    Acknowledged { acks: u32 },
    /// A watch poll's changes, in order, and where the next poll starts.
    Watch {
        events: Vec<WatchEvent>,
        next: WatchFrom,
    },
    /// A transaction applied at `revision`; `succeeded`: its compares held and its success
    /// branch ran, else its failure branch did.
    Txn { succeeded: bool, revision: LogIndex },
    /// Strong: a transaction step applied at `revision`.
    TxnStep {
        revision: LogIndex,
        outcome: StepOutcome,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResponse {
    pub result: Result<(Answer, Receipt), ClientError>,
}

/// Why this node cannot serve a strong keyspace now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnavailableReason {
    /// No leader is known (an election is under way, or this side has no majority).
    NoLeader,
    /// The leader cannot reach a quorum of voters.
    NoQuorum,
    /// This node sits on the minority side of a partition.
    MinoritySide,
}

impl fmt::Display for UnavailableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnavailableReason::NoLeader => "no leader known",
            UnavailableReason::NoQuorum => "no quorum reachable",
            UnavailableReason::MinoritySide => "this node is on the minority side",
        })
    }
}

/// Why a data request was refused; each says what to do differently or what to wait for.
/// The refusals any request may meet (not the leader, unavailable, timed out, malformed) are
/// here too, and an admin request's [`AdminError`](super::admin::AdminError) carries them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("unavailable: {reason}")]
    Unavailable { reason: UnavailableReason },
    /// The request must go to the group's leader. The client library follows the hint.
    #[error("not the leader (leader: {})", leader_addr.as_deref().unwrap_or("unknown"))]
    NotLeader {
        leader_hint: Option<NodeId>,
        /// The leader's `host:port`, when this node knows it.
        leader_addr: Option<String>,
    },
    #[error("no keyspace named {name:?}")]
    UnknownKeyspace { name: String },
    #[error("`{command}` does not apply to {mode} keyspaces")]
    WrongType { command: String, mode: KeyspaceMode },
    #[error("read level {level} does not apply to {mode} keyspaces")]
    ReadLevelNotApplicable {
        level: ReadLevel,
        mode: KeyspaceMode,
    },
    #[error(
        "write levels do not apply to a strong keyspace: its writes are always committed by a majority"
    )]
    WriteLevelNotApplicable,
    #[error("a session read needs the token of an earlier write")]
    SessionTokenMissing,
    #[error("{what} of {bytes} bytes exceeds the limit of {bytes_max}")]
    TooLarge {
        what: String,
        bytes: usize,
        bytes_max: usize,
    },
    #[error("scan limit {limit} is outside 1..={limit_max}")]
    ScanLimit { limit: u32, limit_max: u32 },
    #[error("timed out; the write {}", if *may_have_applied { "may still apply" } else { "was not applied" })]
    Timeout { may_have_applied: bool },
    #[error(
        "the write reached {acked} of the {needed} replicas it needed; it is applied locally and will spread"
    )]
    NotEnoughReplicas { acked: u32, needed: u32 },
    #[error("the node is overloaded; retry later")]
    Backpressure,
    /// A quorum read heard from too few replicas in time.
    #[error("{answered} of the {needed} replicas a quorum read needs answered in time")]
    QuorumNotReached { answered: u32, needed: u32 },
    /// A session read waited in vain for the node to see the session's write.
    #[error(
        "this node has not yet seen the session's write; retry, or read on the node that took it"
    )]
    SessionNotSeen,
    /// A strong write was resent after the client acknowledged its answer (every seq below
    /// `first_unacked`): a stale or buggy client. It was not applied now.
    #[error(
        "sequence number {seq} was already answered and acknowledged by this client (it \
         acknowledged everything below {first_unacked}); not applied"
    )]
    AlreadyAcknowledged { seq: u64, first_unacked: u64 },
    #[error("sadd and srem need at least one member")]
    NoMembers,
    /// A request that does not decode, or a stream that broke the protocol.
    #[error("malformed request: {reason}")]
    Malformed { reason: String },
    /// The node hit an error of its own (storage); it stops serving.
    #[error("the node failed: {reason}")]
    NodeFailed { reason: String },
    /// An `incr`/`decr` whose result would leave the range a counter reads in (i64).
    /// Nothing was written. (New variants go last: the wire encodes the variant's index.)
    #[error(
        "counter at {value} cannot change by {by}: the result would be outside the counter's \
         range, {} to {}; nothing was written",
        i64::MIN,
        i64::MAX
    )]
    CounterOverflow { value: i64, by: i64 },
    /// The node's own running total of a counter's increments (or decrements), kept as a
    /// u64, cannot take the amount. Nothing was written; another node can take it.
    #[error(
        "this node's running total of the counter's changes cannot take {by} more (it is an \
         unsigned 64-bit number); nothing was written, another node can take the change"
    )]
    CounterExhausted { by: i64 },
    /// An `lww` write's time (`ClientRequest::written_at`) is further ahead of the node's
    /// clock than the keyspace allows: the client's clock is wrong. Nothing was written.
    #[error(
        "the write's time is {ahead_ms} ms ahead of this node's clock, more than the \
         {skew_max_ms} ms the keyspace allows; nothing was written: fix the client's clock"
    )]
    WriteTimeAhead { ahead_ms: u64, skew_max_ms: u64 },
    /// An `lww` write's time is further behind the node's clock than the keyspace allows: a
    /// resend long after its first attempt, or a client whose clock is far behind. A delete
    /// that much later may be forgotten already, so the write is not taken. Nothing was
    /// written.
    #[error(
        "the write's time is {behind_ms} ms behind this node's clock, more than the \
         {skew_max_ms} ms the keyspace allows; nothing was written: send it as a new write"
    )]
    WriteTimeBehind { behind_ms: u64, skew_max_ms: u64 },
    /// An `mvreg` write's or a `set` removal's context names a write of `node` this node has
    /// not seen yet (read through another node, or forged). Nothing was written.
    #[error(
        "the context names write {counter} of {node}, which this node has not seen yet (it has \
         seen up to {seen}); nothing was written: read the key through this node, or retry \
         once the write has spread"
    )]
    ContextAhead {
        node: NodeId,
        counter: u64,
        seen: u64,
    },
    /// The keyspace no longer keeps this client's session (it expired by time, or never
    /// was). The request was not applied now; an earlier send of it may have been, and it
    /// will never apply twice. The client library opens a new session for later requests.
    #[error(
        "the client session expired: this write was not applied now; an earlier attempt may \
         have applied it, and it will never apply twice"
    )]
    SessionExpired { seq: u64 },
    /// The keyspace keeps as many client sessions as it may; a new one must wait for others
    /// to expire. Not applied.
    #[error("the keyspace has {sessions_max} client sessions, its limit; not applied, retry later")]
    TooManySessions { sessions_max: usize },
    /// The client has as many answered but unacknowledged writes as its session keeps. Not
    /// applied.
    #[error(
        "the client session holds {results} unacknowledged results ({bytes} bytes), its limit; \
         not applied"
    )]
    SessionFull { results: usize, bytes: usize },
    /// The keyspace's client sessions together hold as many unacknowledged results as it
    /// keeps. Not applied; retry once clients acknowledge or sessions expire.
    #[error(
        "the keyspace's client sessions hold {bytes} bytes of unacknowledged results, its \
         limit of {bytes_max}; not applied, retry later"
    )]
    SessionsFull { bytes: usize, bytes_max: usize },
    /// The certificate's role does not allow the operation (see `protocol::access`).
    #[error("{}", permission_denied(*role, operation, *needs))]
    PermissionDenied {
        role: Role,
        operation: String,
        /// The least role that may.
        needs: Role,
    },
    // Added with watches: at the end, so the frames of the errors above keep their shape.
    /// A watch poll asked for no events, or more than one answer carries.
    #[error("watch limit {limit} is outside 1..={limit_max}")]
    WatchLimit { limit: u32, limit_max: u32 },
    /// A strong watch's revision is older than the serving node's watch history.
    #[error(
        "revision {from} is no longer in this node's watch history, which starts at revision \
         {oldest}: read the keys again (scan) and watch on from the scan's revision",
        from = from.0,
        oldest = oldest.0
    )]
    Compacted { from: LogIndex, oldest: LogIndex },
    /// An eventual watch's feed position is of another feed (the node restarted) or older
    /// than what the node keeps.
    #[error(
        "{from} is no longer in this node's change feed, which now starts at {oldest}: changes \
         may have been missed; read the keys again and follow the feed from there"
    )]
    FeedGap {
        from: FeedPosition,
        oldest: FeedPosition,
    },
    /// A transaction holds more compares, or more changes in a branch, than it may.
    #[error("a transaction's {what} holds {count}, more than the limit of {count_max}")]
    TxnTooLong {
        what: TxnPart,
        count: usize,
        count_max: usize,
    },
    /// A transaction's branch changes one key twice.
    #[error("a transaction's {branch} changes key {key:?} twice", key = String::from_utf8_lossy(key))]
    TxnDuplicateKey { branch: TxnPart, key: Bytes },
    /// A transaction across keyspaces holds the key and is not resolved yet. The client
    /// library resolves it from the transaction's record on `anchor` and retries.
    #[error(
        "key {key:?} is held by {txn} (its record is on keyspace {anchor}); resolve it and retry",
        key = String::from_utf8_lossy(key)
    )]
    Locked {
        key: Bytes,
        txn: TxnId,
        anchor: String,
    },
    /// The key starts with the prefix strong keyspaces keep transaction rows under.
    #[error("key {key:?} is under a reserved prefix (\\xff\\xff\\xff/txn/)", key = String::from_utf8_lossy(key))]
    ReservedKey { key: Bytes },
}

fn permission_denied(role: Role, operation: &str, needs: Role) -> String {
    if role == Role::Node {
        return format!(
            "a node certificate cannot use the client protocol (asked to {operation}); \
             use a client certificate"
        );
    }
    format!(
        "this client's certificate has the {role} role, which may not {operation}; \
         that takes a certificate with the {needs} role{}",
        if needs == Role::Admin {
            ""
        } else {
            " or above"
        }
    )
}

fn check_size(what: &str, bytes: usize, bytes_max: usize) -> Result<(), ClientError> {
    if bytes > bytes_max {
        return Err(ClientError::TooLarge {
            what: what.to_string(),
            bytes,
            bytes_max,
        });
    }
    Ok(())
}

/// Checks a request against the mode of its keyspace before anything is proposed or written:
/// the operation must exist for the mode, the levels must apply, sizes must fit.
pub fn check_request(request: &ClientRequest, mode: KeyspaceMode) -> Result<(), ClientError> {
    let operation = &request.operation;
    if !operation.applies_to(mode) {
        return Err(ClientError::WrongType {
            command: operation.name().to_string(),
            mode,
        });
    }
    check_levels(request, mode)?;
    check_size("key", operation.key().len(), KEY_BYTES_MAX)?;
    if mode == KeyspaceMode::Strong && crate::strong::twophase::is_reserved(operation.key()) {
        let key = operation.key().clone();
        return Err(ClientError::ReservedKey { key });
    }
    match operation {
        Operation::Put { value, .. }
        | Operation::Cas {
            value: Some(value), ..
        } => check_size("value", value.len(), VALUE_BYTES_MAX),
        Operation::SetAdd { members, .. } | Operation::SetRemove { members, .. } => {
            if members.is_empty() {
                return Err(ClientError::NoMembers);
            }
            check_size("member list", members.len(), SET_MEMBERS_MAX)?;
            let total = members.iter().map(Bytes::len).sum();
            check_size("members", total, VALUE_BYTES_MAX)
        }
        Operation::Scan { limit, .. } if *limit == 0 || *limit > SCAN_LIMIT_MAX => {
            Err(ClientError::ScanLimit {
                limit: *limit,
                limit_max: SCAN_LIMIT_MAX,
            })
        }
        Operation::Scan {
            after: Some(after), ..
        } => check_size("key", after.len(), KEY_BYTES_MAX),
        Operation::Watch { prefix, limit, .. } => super::watch::check_watch(prefix, *limit),
        Operation::Txn {
            compares,
            success,
            failure,
        } => check_txn(compares, success, failure),
        Operation::TxnStep(step) => {
            crate::strong::validate(&crate::strong::Command::TxnStep(step.clone()))
                .map_err(txn_error)
        }
        _ => Ok(()),
    }
}

/// A transaction's limits, as the state machine checks them, refused before it is proposed.
fn check_txn(
    compares: &[Compare],
    success: &[TxnOp],
    failure: &[TxnOp],
) -> Result<(), ClientError> {
    let command = crate::strong::Command::Txn {
        compares: compares.to_vec(),
        success: success.to_vec(),
        failure: failure.to_vec(),
    };
    crate::strong::validate(&command).map_err(txn_error)
}

/// A strong command's refusal of a transaction's shape, in the client protocol's terms.
pub fn txn_error(error: CommandError) -> ClientError {
    match error {
        CommandError::TxnTooLong {
            what,
            count,
            count_max,
        } => ClientError::TxnTooLong {
            what,
            count,
            count_max,
        },
        CommandError::TxnDuplicateKey { branch, key } => {
            ClientError::TxnDuplicateKey { branch, key }
        }
        CommandError::Locked { key, txn, anchor } => ClientError::Locked { key, txn, anchor },
        CommandError::ReservedKey { key } => ClientError::ReservedKey { key },
        CommandError::TooLarge {
            what,
            bytes,
            bytes_max,
        } => ClientError::TooLarge {
            what: what.to_string(),
            bytes,
            bytes_max,
        },
        other => ClientError::Malformed {
            reason: other.to_string(),
        },
    }
}

/// What a transaction's "key" is, for the checks that take one: none.
static NO_KEY: Bytes = Bytes::new();

fn check_levels(request: &ClientRequest, mode: KeyspaceMode) -> Result<(), ClientError> {
    let strong = mode == KeyspaceMode::Strong;
    let paxos = mode == KeyspaceMode::Paxos;
    if (strong || paxos) && request.write.is_some() {
        return Err(ClientError::WriteLevelNotApplicable);
    }
    let Some(level) = request.read else {
        return Ok(());
    };
    // Every paxos read runs a round: it has one level.
    if paxos {
        if level != ReadLevel::Linearizable {
            return Err(ClientError::ReadLevelNotApplicable { level, mode });
        }
        return Ok(());
    }
    // A watch follows what the serving node applied: it has no read levels.
    if matches!(request.operation, Operation::Watch { .. }) {
        return Err(ClientError::ReadLevelNotApplicable { level, mode });
    }
    let strong_level = matches!(
        level,
        ReadLevel::Linearizable | ReadLevel::Lease | ReadLevel::Follower | ReadLevel::Stale
    );
    if strong != strong_level || (request.operation.is_write() && level != default_read(mode)) {
        return Err(ClientError::ReadLevelNotApplicable { level, mode });
    }
    if level == ReadLevel::Session && request.session.is_none() {
        return Err(ClientError::SessionTokenMissing);
    }
    Ok(())
}

/// The read level a keyspace serves when a request names none.
/// The read level a request gets when it names none.
pub fn default_read(mode: KeyspaceMode) -> ReadLevel {
    match mode {
        KeyspaceMode::Strong | KeyspaceMode::Paxos => ReadLevel::Linearizable,
        KeyspaceMode::Eventual(_) => ReadLevel::Local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(operation: Operation) -> ClientRequest {
        ClientRequest::new(ClientId(1), 1, "orders", operation)
    }

    fn key(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    const STRONG: KeyspaceMode = KeyspaceMode::Strong;
    const SET: KeyspaceMode = KeyspaceMode::Eventual(ValueType::Set);
    const COUNTER: KeyspaceMode = KeyspaceMode::Eventual(ValueType::Counter);
    const MVREG: KeyspaceMode = KeyspaceMode::Eventual(ValueType::MvReg);

    #[test]
    fn operations_exist_only_for_their_modes() {
        let put = request(Operation::Put {
            key: key("k"),
            value: key("v"),
            context: None,
        });
        let add = request(Operation::Add {
            key: key("k"),
            by: -2,
        });
        let cas = request(Operation::Cas {
            key: key("k"),
            expected: None,
            value: None,
        });
        let sadd = request(Operation::SetAdd {
            key: key("k"),
            members: vec![key("m")],
        });
        assert_eq!(check_request(&put, STRONG), Ok(()));
        assert_eq!(check_request(&add, COUNTER), Ok(()));
        assert_eq!(check_request(&sadd, SET), Ok(()));
        assert_eq!(
            check_request(&add, STRONG),
            Err(ClientError::WrongType {
                command: "decr".to_string(),
                mode: STRONG
            })
        );
        assert!(matches!(
            check_request(&cas, MVREG),
            Err(ClientError::WrongType { .. })
        ));
        assert!(matches!(
            check_request(&put, SET),
            Err(ClientError::WrongType { .. })
        ));
        let with_context = Operation::Put {
            key: key("k"),
            value: key("v"),
            context: Some(ReadContext(Default::default())),
        };
        assert!(matches!(
            check_request(&request(with_context.clone()), STRONG),
            Err(ClientError::WrongType { .. })
        ));
        assert_eq!(check_request(&request(with_context), MVREG), Ok(()));
    }

    #[test]
    fn set_writes_need_a_member() {
        let empty = request(Operation::SetAdd {
            key: key("k"),
            members: Vec::new(),
        });
        assert_eq!(check_request(&empty, SET), Err(ClientError::NoMembers));
    }

    #[test]
    fn levels_are_checked_against_the_mode() {
        let mut get = request(Operation::Get { key: key("k") });
        get.read = Some(ReadLevel::Lease);
        assert_eq!(check_request(&get, STRONG), Ok(()));
        assert_eq!(
            check_request(&get, SET),
            Err(ClientError::ReadLevelNotApplicable {
                level: ReadLevel::Lease,
                mode: SET
            })
        );
        get.read = Some(ReadLevel::Quorum);
        assert_eq!(check_request(&get, SET), Ok(()));
        assert!(matches!(
            check_request(&get, STRONG),
            Err(ClientError::ReadLevelNotApplicable {
                level: ReadLevel::Quorum,
                ..
            })
        ));
        get.read = Some(ReadLevel::Session);
        assert_eq!(
            check_request(&get, SET),
            Err(ClientError::SessionTokenMissing)
        );
        get.session = Some(SessionToken {
            node: NodeId(1),
            seq: 4,
        });
        assert_eq!(check_request(&get, SET), Ok(()));
        let mut put = request(Operation::Put {
            key: key("k"),
            value: key("v"),
            context: None,
        });
        put.write = Some(WriteLevel::Quorum);
        assert_eq!(
            check_request(&put, STRONG),
            Err(ClientError::WriteLevelNotApplicable)
        );
        assert_eq!(
            check_request(&put, KeyspaceMode::Eventual(ValueType::Lww)),
            Ok(())
        );
    }

    #[test]
    fn sizes_and_limits_are_typed_errors() {
        let long_key = Bytes::from(vec![b'k'; KEY_BYTES_MAX + 1]);
        let get = request(Operation::Get { key: long_key });
        assert!(matches!(
            check_request(&get, STRONG),
            Err(ClientError::TooLarge {
                bytes_max: KEY_BYTES_MAX,
                ..
            })
        ));
        let scan = request(Operation::Scan {
            prefix: key("a"),
            limit: 0,
            after: None,
        });
        assert!(matches!(
            check_request(&scan, STRONG),
            Err(ClientError::ScanLimit { .. })
        ));
        let many = vec![key("m"); SET_MEMBERS_MAX + 1];
        let sadd = request(Operation::SetAdd {
            key: key("k"),
            members: many,
        });
        assert!(matches!(
            check_request(&sadd, SET),
            Err(ClientError::TooLarge { .. })
        ));
    }

    #[test]
    fn requests_and_responses_round_trip_through_the_codec() {
        let mut get = request(Operation::Get { key: key("k") });
        get.read = Some(ReadLevel::Stale);
        assert_eq!(crate::wire::roundtrip(&get), get);
        let response = ClientResponse {
            result: Err(ClientError::Unavailable {
                reason: UnavailableReason::MinoritySide,
            }),
        };
        assert_eq!(crate::wire::roundtrip(&response), response);
        let message = response.result.unwrap_err().to_string();
        assert_eq!(message, "unavailable: this node is on the minority side");
    }

    /// The machine fills a scan page up to SCAN_BYTES_MAX as `scan_entry_bytes` counts; if
    /// the codec spent more per entry than that counts, a full page could pass the frame.
    #[test]
    fn a_full_scan_page_fits_a_frame() {
        use crate::strong::{SCAN_BYTES_MAX, scan_entry_bytes};
        let entry = |key: Bytes, value_bytes: usize| {
            let version = Versioned {
                value: Bytes::from(vec![b'v'; value_bytes]),
                create_revision: LogIndex(1),
                mod_revision: LogIndex(2),
            };
            (key, version)
        };
        let encoded =
            |entries: &Vec<(Bytes, Versioned)>| crate::wire::encode(entries).unwrap().len();
        let largest = entry(Bytes::from(vec![b'k'; KEY_BYTES_MAX]), VALUE_BYTES_MAX);
        let counted = scan_entry_bytes(&largest.0, &largest.1);
        assert_eq!(
            encoded(&vec![largest.clone()]) - encoded(&Vec::new()),
            counted
        );
        let fitting = SCAN_BYTES_MAX / counted;
        let mut entries = vec![largest.clone(); fitting];
        let filler = entry(key("z"), SCAN_BYTES_MAX - fitting * counted - 33);
        entries.push(filler);
        let page: usize = entries.iter().map(|(k, v)| scan_entry_bytes(k, v)).sum();
        assert_eq!(page, SCAN_BYTES_MAX, "a page exactly at the budget");
        let receipt = Receipt {
            level: Served::Read(ReadLevel::Linearizable),
            node: NodeId(1),
            position: Position::Raft {
                term: Term(1),
                applied: LogIndex(2),
                known_commit: LogIndex(2),
            },
            behind: None,
        };
        let answer = Answer::Scan {
            entries,
            next: Some(largest.0),
        };
        let response = ClientResponse {
            result: Ok((answer, receipt)),
        };
        assert!(crate::wire::encode(&response).is_ok());
    }
}
