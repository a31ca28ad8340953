//! The commands a strong keyspace's state machine applies, what they return, and the limits
//! they are checked against (at submission by [`validate`], and again at apply).

use super::twophase::{self, StepOutcome, TxnId, TxnStep};
use crate::types::{LogIndex, WallMillis};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The largest key, in bytes. Keys are index entries: small keeps the ordered map cheap.
pub const KEY_BYTES_MAX: usize = 4096;
/// The largest value, in bytes. Well below `wire::FRAME_BYTES_MAX`, so an entry carrying one
/// value (plus key and header) always fits one frame.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// The most entries one `Scan` returns; a client asks for the next page after the last key.
pub const SCAN_LIMIT_MAX: u32 = 1000;
/// The most bytes of entries (as [`scan_entry_bytes`] counts them) one scan answer carries,
/// whatever its limit; the first entry is always taken. Half a frame: the answer's other
/// fields (a receipt, the continuation key) and the codec's headers take far less than the
/// other half, and a page this size still moves in well under a second on a LAN.
pub const SCAN_BYTES_MAX: usize = crate::wire::FRAME_BYTES_MAX / 2;
/// What one entry adds to an encoded scan answer besides its key and value: the codec's two
/// 8-byte length prefixes and the two 8-byte revisions.
const SCAN_ENTRY_OVERHEAD_BYTES: usize = 32;

const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX + 1024 < crate::wire::FRAME_BYTES_MAX);
// The largest entry fits a page on its own, so the page rule "stop before passing the budget,
// but take the first" never makes a page larger than the budget.
const _: () =
    assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX + SCAN_ENTRY_OVERHEAD_BYTES <= SCAN_BYTES_MAX);
// A full page, the continuation key and a generous 64 KiB for the rest of the answer fit a frame.
const _: () = assert!(SCAN_BYTES_MAX + KEY_BYTES_MAX + 64 * 1024 <= crate::wire::FRAME_BYTES_MAX);

/// The bytes an entry adds to an encoded scan answer (fixed-width codec: see `wire`).
pub fn scan_entry_bytes(key: &[u8], version: &Versioned) -> usize {
    key.len() + version.value.len() + SCAN_ENTRY_OVERHEAD_BYTES
}

/// The most compares, and the most operations of each branch, one transaction may hold.
pub const TXN_OPS_MAX: usize = 128;
/// The most bytes of keys and values one transaction may hold: like one value, so the entry
/// that carries it fits a frame.
pub const TXN_BYTES_MAX: usize = VALUE_BYTES_MAX;

/// A client session, chosen by the client (unique per client process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// A client's session (Raft thesis §6.3): the results of its applied writes that it has not
/// acknowledged yet, so a retried write answers its first result instead of applying again,
/// whatever order the client's writes arrive in. Reads (gets and scans through the log) leave
/// it alone: they need no at-most-once, and a scan's page must not land here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Result of each applied write with a seq at or above `first_unacked`, by seq. At most
    /// `UNACKED_RESULTS_MAX` of them, and about `SESSION_RESULT_BYTES_MAX` bytes.
    pub results: BTreeMap<u64, Result<Outcome, CommandError>>,
    /// The highest `first_unacked` a request of the client carried: every seq below it has
    /// been answered and acknowledged, so its result is gone and it must never apply again.
    pub first_unacked: u64,
    /// The log clock when a write of the client last applied; the session expires once the
    /// log clock passes it by the machine's session timeout.
    pub active_at: WallMillis,
}

impl Session {
    /// About how many bytes the stored results take (as [`result_bytes`] counts them).
    pub fn result_bytes(&self) -> usize {
        self.results.values().map(result_bytes).sum()
    }
}

/// About how many bytes one stored write result takes, encoded or in memory: a fixed
/// allowance, and the value a cas result carries (a write's result holds nothing else that
/// grows; reads, whose answers can be large, are never stored).
pub fn result_bytes(result: &Result<Outcome, CommandError>) -> usize {
    const RESULT_OVERHEAD_BYTES: usize = 64;
    RESULT_OVERHEAD_BYTES
        + match result {
            Ok(
                Outcome::Cas {
                    current: Some(version),
                    ..
                }
                | Outcome::Get {
                    current: Some(version),
                },
            ) => version.value.len(),
            Ok(Outcome::Scan { entries, .. }) => entries
                .iter()
                .map(|(key, version)| scan_entry_bytes(key, version))
                .sum(),
            Ok(Outcome::TxnStep {
                outcome: StepOutcome::Prepared { reads, .. },
                ..
            }) => reads
                .iter()
                .map(|(key, version)| key.len() + version.as_ref().map_or(0, |v| v.value.len()))
                .sum(),
            _ => 0,
        }
}

/// One operation on the keyspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set `key` to `value`.
    Put { key: Bytes, value: Bytes },
    /// Remove `key` (no change if absent).
    Delete { key: Bytes },
    /// Compare-and-set: apply only if the key's mod revision is `expected` (`None`: the key
    /// must be absent). `value: None` deletes the key.
    Cas {
        key: Bytes,
        expected: Option<LogIndex>,
        value: Option<Bytes>,
    },
    /// Read `key` through the log.
    Get { key: Bytes },
    /// Read up to `limit` keys starting with `prefix`, in key order, through the log: those
    /// after `after` when it is given (the last key of the page before), and no more than
    /// [`SCAN_BYTES_MAX`] of them.
    Scan {
        prefix: Bytes,
        limit: u32,
        after: Option<Bytes>,
    },
    /// A transaction, atomic in one entry: if every compare holds, the `success` operations
    /// apply, else the `failure` ones; all at this entry's revision. A branch names a key at
    /// most once.
    Txn {
        compares: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    /// A step of a transaction across keyspaces (see [`twophase`]).
    TxnStep(TxnStep),
}

/// What a transaction checks of one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    /// The key's mod revision is `revision` (`None`: the key is absent).
    Revision {
        key: Bytes,
        revision: Option<LogIndex>,
    },
    /// The key's value is `value` (`None`: the key is absent).
    Value { key: Bytes, value: Option<Bytes> },
}

impl Compare {
    pub fn key(&self) -> &Bytes {
        match self {
            Compare::Revision { key, .. } | Compare::Value { key, .. } => key,
        }
    }

    /// Whether the key's `current` version passes.
    pub fn holds(&self, current: Option<&Versioned>) -> bool {
        match self {
            Compare::Revision { revision, .. } => current.map(|v| v.mod_revision) == *revision,
            Compare::Value { value, .. } => current.map(|v| &v.value) == value.as_ref(),
        }
    }
}

/// One change of a transaction's branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
}

impl TxnOp {
    pub fn key(&self) -> &Bytes {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } => key,
        }
    }
}

/// What a transaction's "key" is, for the checks that take one: none.
static NO_KEY: Bytes = Bytes::new();

impl Command {
    /// The key this command touches (the prefix, for a scan).
    pub fn key(&self) -> &Bytes {
        match self {
            Command::Put { key, .. }
            | Command::Delete { key }
            | Command::Cas { key, .. }
            | Command::Get { key } => key,
            Command::Scan { prefix, .. } => prefix,
            Command::Txn { .. } | Command::TxnStep(_) => &NO_KEY,
        }
    }

    /// Whether applying it may change the map.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Command::Put { .. }
                | Command::Delete { .. }
                | Command::Cas { .. }
                | Command::Txn { .. }
                | Command::TxnStep(_)
        )
    }
}

/// A command with the session that sent it: what goes into a Raft entry (encoded by
/// [`Request::encode`]). A client numbers its requests from 1 up within a session; a retry
/// reuses the seq of the request it retries. Many may be in flight, and they may apply in any
/// order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub client: ClientId,
    pub seq: u64,
    /// The client's lowest seq still waiting for an answer (at most `seq`): the results of
    /// its writes below it may go.
    pub first_unacked: u64,
    /// The client may start its session with this request: it sends this only while its
    /// session is young (a client-side window well below the session timeout), so a request
    /// of a session that expired, resent later, never starts a new one and applies twice.
    pub opens_session: bool,
    /// The proposing leader's wall clock, set by `Replica::submit`: the log clock that
    /// expires idle sessions on every replica alike.
    pub proposed_at: WallMillis,
    pub command: Command,
}

impl Request {
    /// The bytes to propose to Raft.
    pub fn encode(&self) -> Result<Bytes, crate::wire::EncodeError> {
        crate::wire::encode(self).map(Bytes::from)
    }

    /// Reads the bytes of a Raft entry back.
    pub fn decode(bytes: &[u8]) -> Result<Request, crate::wire::DecodeError> {
        crate::wire::decode(bytes).map(|(request, _)| request)
    }
}

/// A key's stored value and its revisions (log indexes).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Versioned {
    pub value: Bytes,
    /// The index that created the key (since it was last absent).
    pub create_revision: LogIndex,
    /// The index of its latest change.
    pub mod_revision: LogIndex,
}

/// What an applied command returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The put applied at `revision`.
    Put { revision: LogIndex },
    /// The delete applied at `revision`; `existed` says whether there was a key to remove.
    Delete { revision: LogIndex, existed: bool },
    /// The cas applied at `revision`. When it succeeded, `current` is the key after the change
    /// (`None`: deleted); when not, `current` is the unchanged key that failed the comparison.
    Cas {
        revision: LogIndex,
        succeeded: bool,
        current: Option<Versioned>,
    },
    /// The key as of the read.
    Get { current: Option<Versioned> },
    /// Keys in order; `more` says the limit or [`SCAN_BYTES_MAX`] cut the list short, and then
    /// `entries` is not empty and the next page starts after its last key.
    Scan {
        entries: Vec<(Bytes, Versioned)>,
        more: bool,
    },
    /// The transaction applied at `revision`; `succeeded`: its compares held and its
    /// `success` branch ran (else its `failure` branch).
    Txn { revision: LogIndex, succeeded: bool },
    /// A transaction step applied at `revision`.
    TxnStep {
        revision: LogIndex,
        outcome: StepOutcome,
    },
}

/// Which part of a command broke a size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    Key,
    Value,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Key => "key",
            Field::Value => "value",
        })
    }
}

/// Why a command was refused. Every variant is deterministic, so it is a result every replica
/// agrees on: the session table keeps a write's size error as its result, and the session
/// refusals (the last five) are answered without touching the session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CommandError {
    #[error("{what} of {bytes} bytes exceeds the limit of {bytes_max}")]
    TooLarge {
        what: Field,
        bytes: usize,
        bytes_max: usize,
    },
    #[error("scan limit {limit} is outside 1..={limit_max}")]
    ScanLimit { limit: u32, limit_max: u32 },
    /// The write's seq is below what its client said it acknowledged: its answer was already
    /// delivered and dropped. Only a stale or buggy client sends this; it is never applied.
    #[error(
        "{client} resent seq {seq}, which it already acknowledged (it acknowledged every seq \
         below {first_unacked}); not applied"
    )]
    AlreadyAcknowledged {
        client: ClientId,
        seq: u64,
        first_unacked: u64,
    },
    /// The machine knows no session of the client, and the request may not open one: the
    /// session expired (or never was). The write may have applied before; it never applies
    /// twice.
    #[error(
        "the session of {client} expired (seq {seq}); this request was not applied now, an \
         earlier send of it may have been"
    )]
    SessionExpired { client: ClientId, seq: u64 },
    /// A new session would pass the machine's limit on sessions. Not applied.
    #[error("{sessions_max} client sessions are open, the limit; not applied")]
    TooManySessions { sessions_max: usize },
    /// The client's session holds as many unacknowledged results as it may. Not applied.
    #[error(
        "the session of {client} holds {results} unacknowledged results ({bytes} bytes), the \
         limit; not applied"
    )]
    SessionFull {
        client: ClientId,
        results: usize,
        bytes: usize,
    },
    /// All sessions together hold as many result bytes as the machine keeps. Not applied.
    #[error("client sessions hold {bytes} bytes of results, the limit {bytes_max}; not applied")]
    SessionsFull { bytes: usize, bytes_max: usize },
    /// A transaction with more compares, or more operations in a branch, than it may hold.
    #[error("a transaction's {what} holds {count}, more than the limit of {count_max}")]
    TxnTooLong {
        what: TxnPart,
        count: usize,
        count_max: usize,
    },
    /// A transaction's branch names a key twice.
    #[error("a transaction's {branch} changes key {key:?} twice", key = String::from_utf8_lossy(key))]
    TxnDuplicateKey { branch: TxnPart, key: Bytes },
    /// The key is held by a transaction across keyspaces that is not resolved yet: resolve
    /// it from its record on `anchor`, then send the command again (as a new request).
    #[error(
        "key {key:?} is held by {txn}, whose record is on keyspace {anchor}; resolve it and retry",
        key = String::from_utf8_lossy(key)
    )]
    Locked {
        key: Bytes,
        txn: TxnId,
        anchor: String,
    },
    /// The key is under the prefix the machine keeps its own rows in.
    #[error("keys starting with {prefix:?} are reserved", prefix = String::from_utf8_lossy(twophase::RESERVED_PREFIX))]
    ReservedKey { key: Bytes },
    /// A transaction step is out of its bounds.
    #[error("transaction step refused: {reason}")]
    BadTxnStep { reason: String },
}

/// A part of a transaction, for its errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnPart {
    Compares,
    Success,
    Failure,
}

impl fmt::Display for TxnPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TxnPart::Compares => "compares",
            TxnPart::Success => "success branch",
            TxnPart::Failure => "failure branch",
        })
    }
}

/// Checks the limits. Clients call it before submitting; the state machine calls it again at
/// apply, because an entry may come from a node built with other limits.
pub fn validate(command: &Command) -> Result<(), CommandError> {
    check_size(Field::Key, command.key().len(), KEY_BYTES_MAX)?;
    check_keys(command)?;
    if let Command::Scan {
        after: Some(after), ..
    } = command
    {
        check_size(Field::Key, after.len(), KEY_BYTES_MAX)?;
    }
    match command {
        Command::Put { value, .. }
        | Command::Cas {
            value: Some(value), ..
        } => check_size(Field::Value, value.len(), VALUE_BYTES_MAX),
        Command::Scan { limit, .. } if *limit == 0 || *limit > SCAN_LIMIT_MAX => {
            Err(CommandError::ScanLimit {
                limit: *limit,
                limit_max: SCAN_LIMIT_MAX,
            })
        }
        Command::Txn {
            compares,
            success,
            failure,
        } => validate_txn(compares, success, failure),
        Command::TxnStep(step) => validate_step(step),
        _ => Ok(()),
    }
}

/// Refuses a command that names a reserved key (a scan may cover the reserved rows: it skips
/// them).
fn check_keys(command: &Command) -> Result<(), CommandError> {
    let reserved = |key: &Bytes| {
        twophase::is_reserved(key)
            .then(|| CommandError::ReservedKey { key: key.clone() })
            .map_or(Ok(()), Err)
    };
    match command {
        Command::Txn {
            compares,
            success,
            failure,
        } => compares
            .iter()
            .map(Compare::key)
            .chain(success.iter().chain(failure).map(TxnOp::key))
            .try_for_each(reserved),
        Command::TxnStep(TxnStep::Prepare { part, .. }) => {
            part.keys().iter().try_for_each(reserved)
        }
        Command::TxnStep(TxnStep::Resolve { keys, .. }) => keys.iter().try_for_each(reserved),
        Command::TxnStep(TxnStep::Decide { .. }) => Ok(()),
        other => reserved(other.key()),
    }
}

/// A transaction step's bounds: a prepare's part as a transaction's, its reads as many as a
/// branch, a sane record lifetime and anchor name, a resolve's keys.
fn validate_step(step: &TxnStep) -> Result<(), CommandError> {
    let bad = |reason: &str| {
        Err(CommandError::BadTxnStep {
            reason: reason.to_string(),
        })
    };
    match step {
        TxnStep::Prepare {
            anchor,
            ttl_ms,
            part,
            ..
        } => {
            if anchor.is_empty() || anchor.len() > twophase::ANCHOR_BYTES_MAX {
                return bad("the anchor keyspace name is empty or too long");
            }
            if ttl_ms.is_some_and(|ttl| ttl == 0 || ttl > twophase::TTL_MS_MAX) {
                return bad("the record's lifetime is outside 1 ms ..= 10 min");
            }
            if part.reads.len() > TXN_OPS_MAX {
                return Err(CommandError::TxnTooLong {
                    what: TxnPart::Compares,
                    count: part.reads.len(),
                    count_max: TXN_OPS_MAX,
                });
            }
            for key in &part.reads {
                check_size(Field::Key, key.len(), KEY_BYTES_MAX)?;
            }
            validate_txn(&part.compares, &part.success, &part.failure)
        }
        TxnStep::Resolve { keys, .. } => {
            if keys.len() > twophase::RESOLVE_KEYS_MAX {
                return bad("a resolve names more keys than a part can hold");
            }
            keys.iter()
                .try_for_each(|key| check_size(Field::Key, key.len(), KEY_BYTES_MAX))
        }
        TxnStep::Decide { .. } => Ok(()),
    }
}

/// A transaction's limits: counts, sizes, and no key twice in a branch.
fn validate_txn(
    compares: &[Compare],
    success: &[TxnOp],
    failure: &[TxnOp],
) -> Result<(), CommandError> {
    let too_long = |what, count| {
        (count > TXN_OPS_MAX).then_some(CommandError::TxnTooLong {
            what,
            count,
            count_max: TXN_OPS_MAX,
        })
    };
    let parts = [
        (TxnPart::Compares, compares.len()),
        (TxnPart::Success, success.len()),
        (TxnPart::Failure, failure.len()),
    ];
    if let Some(error) = parts.into_iter().find_map(|(what, n)| too_long(what, n)) {
        return Err(error);
    }
    let mut bytes = 0;
    for compare in compares {
        check_size(Field::Key, compare.key().len(), KEY_BYTES_MAX)?;
        bytes += compare.key().len();
        if let Compare::Value {
            value: Some(value), ..
        } = compare
        {
            check_size(Field::Value, value.len(), VALUE_BYTES_MAX)?;
            bytes += value.len();
        }
    }
    for (branch, ops) in [(TxnPart::Success, success), (TxnPart::Failure, failure)] {
        let mut keys = std::collections::BTreeSet::new();
        for op in ops {
            check_size(Field::Key, op.key().len(), KEY_BYTES_MAX)?;
            if !keys.insert(op.key()) {
                let key = op.key().clone();
                return Err(CommandError::TxnDuplicateKey { branch, key });
            }
            bytes += op.key().len();
            if let TxnOp::Put { value, .. } = op {
                check_size(Field::Value, value.len(), VALUE_BYTES_MAX)?;
                bytes += value.len();
            }
        }
    }
    check_size(Field::Value, bytes, TXN_BYTES_MAX)
}

fn check_size(what: Field, bytes: usize, bytes_max: usize) -> Result<(), CommandError> {
    if bytes > bytes_max {
        return Err(CommandError::TooLarge {
            what,
            bytes,
            bytes_max,
        });
    }
    Ok(())
}
