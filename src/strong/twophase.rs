//! Transactions across strong keyspaces: two-phase commit over their Raft groups, with the
//! decision in a transaction record kept by one of them (Percolator's primary, CockroachDB's
//! transaction record).
//!
//! A transaction touches keys of several keyspaces, each its own Raft group. Its coordinator
//! (the client library, [`crate::txn`]) picks one participant as the *anchor* and sends each
//! participant its [`Part`] as a [`TxnStep::Prepare`], the anchor first:
//!
//! ```text
//!   Prepare(anchor, record) ─▶ Prepare(others…) ─▶ Decide(anchor) ─▶ Resolve(others…)
//!   intents + record Pending    intents             record decided,    intents applied
//!                                                   anchor's intents   or dropped
//!                                                   applied or dropped
//! ```
//!
//! - **Prepare** checks the part's compares and places an [`Intent`] on every key it
//!   compares, reads or writes: the writes each branch would make, or none (a lock). Keys
//!   under another transaction's intent refuse it with [`CommandError::Locked`]. On the
//!   anchor it also creates the [`TxnRecord`], `Pending` until `expires_at` by the log clock.
//! - **Decide** on the anchor is the commit point: one log entry moves the record from
//!   `Pending` to `Committed` (or `Aborted`) and applies (or drops) the anchor's own intents.
//!   Whatever decides first wins; later decides answer the record as it is. An abort asked
//!   `only_if_expired` (by someone who met an intent, not the coordinator) waits for the
//!   record's expiry, so a live coordinator is not aborted under its feet.
//! - **Resolve** on the other participants applies or drops the intents of a decided
//!   transaction. It is safe to send any number of times, by anyone who read the record.
//!
//! Reads and writes that meet a write intent get `Locked` (naming the transaction and its
//! anchor) rather than a value: the coordinator may already have decided, so the value under
//! the intent may be stale. Whoever meets one resolves it from the record (a decide with
//! `only_if_expired`, then a resolve) and retries; nothing waits inside a group. Since every
//! key a transaction compares, reads or writes stays under its intent from its prepare to its
//! decision, transactions are two-phase locked, hence serializable.
//!
//! Intents and records are rows of the keyspace's own map under [`RESERVED_PREFIX`], a prefix
//! no client key may have: they are persisted, snapshotted and replicated like any key, and
//! cost no memory beyond the store's. Scans and watches do not show them.

use super::command::{ClientId, Compare, TxnOp, Versioned};
use crate::types::WallMillis;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Keys under this prefix hold transaction intents and records; clients may not use it.
pub const RESERVED_PREFIX: &[u8] = b"\xff\xff\xff/txn/";
/// The most keys one resolve names (a part's compares, reads and both branches).
pub const RESOLVE_KEYS_MAX: usize = 4 * super::command::TXN_OPS_MAX;
/// The longest anchor keyspace name an intent carries.
pub const ANCHOR_BYTES_MAX: usize = 256;
/// The longest a record may stay pending before someone who meets its intents may abort it.
pub const TTL_MS_MAX: u64 = 10 * 60 * 1000;

/// Names a transaction: the coordinating client's session and its own number for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxnId {
    pub client: ClientId,
    pub number: u64,
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "txn {}.{}", self.client, self.number)
    }
}

/// A write an intent holds until its transaction is decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    Put(Bytes),
    Delete,
}

/// What a prepared transaction holds on one key: the write each branch makes (`None`: the
/// key is only locked, because the transaction compares or reads it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub txn: TxnId,
    /// The keyspace whose group keeps the transaction's record.
    pub anchor: String,
    pub success: Option<Write>,
    pub failure: Option<Write>,
}

impl Intent {
    /// Whether a read of the key must wait for the decision (a lock alone changes nothing).
    pub fn writes(&self) -> bool {
        self.success.is_some() || self.failure.is_some()
    }

    /// The write of the branch that ran.
    pub fn write(&self, succeeded: bool) -> Option<&Write> {
        if succeeded {
            self.success.as_ref()
        } else {
            self.failure.as_ref()
        }
    }
}

/// Where a transaction stands, as its record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    /// Prepared on the anchor, undecided; after `expires_at` (log clock) anyone may abort it.
    Pending {
        expires_at: WallMillis,
    },
    /// Committed: the `success` branch ran if `succeeded` (every compare held), else `failure`.
    Committed {
        succeeded: bool,
    },
    Aborted,
}

/// A transaction's record, on its anchor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub state: TxnState,
    /// The anchor's own intent keys, applied or dropped with the decision.
    pub keys: Vec<Bytes>,
}

/// One participant's share of a transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub compares: Vec<Compare>,
    /// Keys whose values the prepare returns (and locks until the decision).
    pub reads: Vec<Bytes>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Part {
    /// Every key the part touches, once each, in order.
    pub fn keys(&self) -> Vec<Bytes> {
        let mut keys: Vec<Bytes> = self.compares.iter().map(|c| c.key().clone()).collect();
        keys.extend(self.reads.iter().cloned());
        keys.extend(self.success.iter().map(|op| op.key().clone()));
        keys.extend(self.failure.iter().map(|op| op.key().clone()));
        keys.sort();
        keys.dedup();
        keys
    }

    /// The intent the part places on `key`.
    pub fn intent(&self, txn: TxnId, anchor: &str, key: &Bytes) -> Intent {
        let write = |ops: &[TxnOp]| {
            ops.iter().find(|op| op.key() == key).map(|op| match op {
                TxnOp::Put { value, .. } => Write::Put(value.clone()),
                TxnOp::Delete { .. } => Write::Delete,
            })
        };
        Intent {
            txn,
            anchor: anchor.to_string(),
            success: write(&self.success),
            failure: write(&self.failure),
        }
    }
}

/// How a decide wants the record to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// The coordinator saw every participant prepared; `succeeded`: every compare held.
    Commit { succeeded: bool },
    /// Abort; `only_if_expired`: not before the record's expiry (someone met an intent).
    Abort { only_if_expired: bool },
}

/// The decision a resolve carries out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    Commit { succeeded: bool },
    Abort,
}

impl Resolution {
    /// The resolution a decided record calls for (`None`: still pending).
    pub fn of(state: TxnState) -> Option<Resolution> {
        match state {
            TxnState::Pending { .. } => None,
            TxnState::Committed { succeeded } => Some(Resolution::Commit { succeeded }),
            TxnState::Aborted => Some(Resolution::Abort),
        }
    }
}

/// One step of a transaction on one participant's group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnStep {
    /// Place the part's intents; `ttl_ms` is `Some` on the anchor, which also creates the
    /// record, pending for that long.
    Prepare {
        txn: TxnId,
        anchor: String,
        ttl_ms: Option<u64>,
        part: Part,
    },
    /// On the anchor: decide the record (see [`Decision`]).
    Decide { txn: TxnId, decision: Decision },
    /// Carry out a decision on these keys' intents of `txn` (others are left alone).
    Resolve {
        txn: TxnId,
        keys: Vec<Bytes>,
        resolution: Resolution,
    },
}

impl TxnStep {
    pub fn txn(&self) -> TxnId {
        match self {
            TxnStep::Prepare { txn, .. }
            | TxnStep::Decide { txn, .. }
            | TxnStep::Resolve { txn, .. } => *txn,
        }
    }
}

/// What a step did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepOutcome {
    /// The part's intents are placed; `held`: its compares held. `reads`: the values of the
    /// part's `reads`, in order.
    Prepared {
        held: bool,
        reads: Vec<(Bytes, Option<Versioned>)>,
    },
    /// The record after a decide (or the reason an anchor prepare placed nothing: the
    /// transaction was already decided).
    Record(TxnState),
    /// The intents of the transaction among the keys are resolved.
    Resolved,
}

/// The row key of `key`'s intent.
pub fn intent_key(key: &[u8]) -> Bytes {
    let mut row = Vec::with_capacity(RESERVED_PREFIX.len() + 1 + key.len());
    row.extend_from_slice(RESERVED_PREFIX);
    row.push(b'i');
    row.extend_from_slice(key);
    Bytes::from(row)
}

/// The row key of a transaction's record.
pub fn record_key(txn: TxnId) -> Bytes {
    let mut row = Vec::with_capacity(RESERVED_PREFIX.len() + 17);
    row.extend_from_slice(RESERVED_PREFIX);
    row.push(b'r');
    row.extend_from_slice(&txn.client.0.to_be_bytes());
    row.extend_from_slice(&txn.number.to_be_bytes());
    Bytes::from(row)
}

/// Whether `key` is one of the machine's own rows.
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_rows_sort_apart_from_each_other() {
        let txn = TxnId {
            client: ClientId(7),
            number: 1,
        };
        assert!(is_reserved(&intent_key(b"k")) && is_reserved(&record_key(txn)));
        assert!(!intent_key(b"k").starts_with(&record_key(txn)[..RESERVED_PREFIX.len() + 1]));
        assert!(!is_reserved(b"\xff\xff"));
    }
}
