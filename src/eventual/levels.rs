//! Write levels, read modes, session tokens, request ids and the events the engine reports.

use super::error::{ReadError, WriteError};
use super::hlc::HlcTimestamp;
use super::value::ReadValue;
use crate::types::NodeId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The caller's id for one write or read; echoed in its [`Event`]. Ids of pending requests
/// must be unique per engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// When a write is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WriteLevel {
    /// After this node persisted it.
    Local,
    /// After a majority of members (this node included) persisted it.
    Quorum,
    /// After every member persisted it.
    All,
}

/// What a read must reflect, as the engine serves it. Not the user-facing
/// [`ReadLevel`](crate::protocol::ReadLevel): the node maps that one's `Local`,
/// `Session` (with the request's token) and `Quorum` to these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadMode {
    /// This node's current state.
    Local,
    /// This node's state once it has seen the write the token names (waits up to
    /// `session_wait_max`).
    Session(SessionToken),
    /// The merge of a majority of members' states; stale ones are repaired.
    Quorum,
}

/// A write's dot: the writing node and its write counter. Returned when a write is acked;
/// a session read with it sees that write (and, for the same key, everything before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionToken {
    /// The node that took the write.
    pub node: NodeId,
    /// That node's write counter (strictly increasing, persisted, never reused).
    pub seq: u64,
}

/// What the engine reports to its caller, drained with `poll_event`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A write reached its level.
    WriteAcked {
        /// The caller's id.
        id: RequestId,
        /// The write's dot, for session reads.
        token: SessionToken,
        /// Replicas known to have persisted it (this node included).
        acks: usize,
        /// The write's HLC timestamp (`lww` keyspaces only).
        stamp: Option<HlcTimestamp>,
    },
    /// A write did not reach its level. For `QuorumNotReached` the write is applied and
    /// persisted here and keeps spreading: treat it as indeterminate.
    WriteFailed {
        /// The caller's id.
        id: RequestId,
        /// The write's dot (the write exists and may become visible).
        token: SessionToken,
        /// The write's HLC timestamp (`lww` keyspaces only).
        stamp: Option<HlcTimestamp>,
        /// Why.
        error: WriteError,
    },
    /// A read finished.
    ReadDone {
        /// The caller's id.
        id: RequestId,
        /// The key read.
        key: Bytes,
        /// The value (for `mvreg`, with the context to write back).
        value: ReadValue,
    },
    /// A read failed.
    ReadFailed {
        /// The caller's id.
        id: RequestId,
        /// Why.
        error: ReadError,
    },
}
