//! Typed errors, one enum per operation family.

use super::levels::SessionToken;
use super::value::ValueType;
use crate::types::NodeId;
use std::time::Duration;

/// Why an engine could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `node` is not in `members`.
    #[error("node {node} is not among the keyspace's members")]
    NodeNotMember {
        /// This node.
        node: NodeId,
    },
    /// A member is listed twice.
    #[error("member {node} is listed twice")]
    DuplicateMember {
        /// The repeated member.
        node: NodeId,
    },
    /// Too many members for the bounded per-member state.
    #[error("{members} members, limit {members_max}")]
    TooManyMembers {
        /// Members configured.
        members: usize,
        /// The limit.
        members_max: usize,
    },
    /// A duration that must be positive is zero.
    #[error("{field} must be positive")]
    ZeroDuration {
        /// The configuration field.
        field: &'static str,
    },
    /// `down_after` is shorter than `suspect_after`.
    #[error("down_after must be at least suspect_after")]
    DownBeforeSuspect,
    /// `round_bytes_max` cannot hold even an in-sync round.
    #[error("round_bytes_max {bytes} is below the minimum {bytes_min}")]
    RoundBytesTooSmall {
        /// Configured.
        bytes: usize,
        /// Minimum.
        bytes_min: usize,
    },
    /// The keyspace's store could not be read at start.
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
}

/// Why a write was refused (returned by `local_write`) or failed later (`Event::WriteFailed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The operation does not fit the keyspace's value type. Nothing was applied.
    #[error("a {got:?} operation on a {expected:?} keyspace")]
    WrongType {
        /// The keyspace's type.
        expected: ValueType,
        /// The operation's type.
        got: ValueType,
    },
    /// The key is too long. Nothing was applied.
    #[error("key of {bytes} bytes, limit {bytes_max}")]
    KeyTooLarge {
        /// Key length.
        bytes: usize,
        /// Limit.
        bytes_max: usize,
    },
    /// The value (or set member) is too long. Nothing was applied.
    #[error("value of {bytes} bytes, limit {bytes_max}")]
    ValueTooLarge {
        /// Value length.
        bytes: usize,
        /// Limit.
        bytes_max: usize,
    },
    /// The write would grow the key's encoded state past `KEY_STATE_BYTES_MAX` (writes that
    /// do not grow it are always accepted). Nothing was applied.
    #[error("key state would grow to {bytes} bytes, limit {bytes_max}")]
    StateTooLarge {
        /// The state's encoded size after the write.
        bytes: usize,
        /// Limit.
        bytes_max: usize,
    },
    /// A counter write would take the value out of the `i64` range reads report (a read
    /// would saturate and the write would look lost). Nothing was applied.
    #[error("counter at {value} cannot change by {by}: the result would leave the i64 range")]
    CounterOverflow {
        /// The counter's value before the write, as a read reports it.
        value: i64,
        /// The amount refused.
        by: i64,
    },
    /// An `lww` write's client chose a time more than `clock_skew_max` ahead of this node's
    /// wall clock (its clock is wrong): stored, it would win every later write for that long.
    /// Nothing was applied.
    #[error(
        "the write's time is {ahead_ms} ms ahead of this node's clock, more than the {skew_max_ms} ms allowed"
    )]
    StampAhead {
        /// How far ahead of this node's wall clock the time is.
        ahead_ms: u64,
        /// `clock_skew_max`.
        skew_max_ms: u64,
    },
    /// An `lww` write's client chose a time more than `clock_skew_max` behind this node's
    /// clock: a delete that much later may already be forgotten, and the write must not come
    /// back over it (a resend long after its first attempt, or a client's clock far behind).
    /// Nothing was applied.
    #[error(
        "the write's time is {behind_ms} ms behind this node's clock, more than the {skew_max_ms} ms allowed"
    )]
    StampBehind {
        /// How far behind this node's clock the time is.
        behind_ms: u64,
        /// `clock_skew_max`.
        skew_max_ms: u64,
    },
    /// An `mvreg` write's context names a write this node has not seen (a forged context, or
    /// one read on another node before the write reached this one). Taking it would let the
    /// context claim writes that do not exist here yet: with a counter above what a node
    /// ever issued, every later write of that node would be dominated and dropped while
    /// acknowledged. Nothing was applied; read the key here, or retry once it has spread.
    #[error(
        "the context names write {counter} of {node}, which this node has not seen (it has seen up to {seen})"
    )]
    ContextAhead {
        /// The node the context's entry names.
        node: NodeId,
        /// The counter the context claims.
        counter: u64,
        /// The highest counter of `node` this node knows of.
        seen: u64,
    },
    /// This node's running total of the counter's increments (or decrements), a `u64` in
    /// the PN-counter, cannot take the amount. Nothing was applied; another node can.
    #[error("this node's running total of the counter's changes cannot take {by} more")]
    CounterExhausted {
        /// The amount refused.
        by: i64,
    },
    /// Too many writes are waiting for persistence or acknowledgements. Nothing was applied.
    #[error("{pending} writes pending, limit {pending_max}")]
    Backpressure {
        /// Writes pending.
        pending: usize,
        /// Limit.
        pending_max: usize,
    },
    /// Not enough replicas persisted the write within `request_timeout`. The write IS applied
    /// and persisted locally and keeps spreading: its outcome is indeterminate, not undone.
    #[error("{acked} of {needed} replicas persisted the write in time")]
    QuorumNotReached {
        /// Replicas (including this one) that persisted it.
        acked: usize,
        /// Replicas the write level needed.
        needed: usize,
    },
}

/// Why a read was refused (returned by `read`) or failed later (`Event::ReadFailed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The key is too long.
    #[error("key of {bytes} bytes, limit {bytes_max}")]
    KeyTooLarge {
        /// Key length.
        bytes: usize,
        /// Limit.
        bytes_max: usize,
    },
    /// Too many reads are waiting.
    #[error("{pending} reads pending, limit {pending_max}")]
    Backpressure {
        /// Reads pending.
        pending: usize,
        /// Limit.
        pending_max: usize,
    },
    /// The session token's write did not reach this node within `session_wait_max`.
    #[error("write {token:?} not seen here after {waited:?}")]
    SessionTimeout {
        /// The token the read waited for.
        token: SessionToken,
        /// How long it waited.
        waited: Duration,
    },
    /// Not enough replicas answered within `request_timeout`.
    #[error("{answered} of {needed} replicas answered in time")]
    QuorumNotReached {
        /// Replicas (including this one) that answered.
        answered: usize,
        /// Replicas needed.
        needed: usize,
    },
}
