//! Typed errors, one enum per operation family.

use crate::types::{LogIndex, NodeId};

/// Why [`crate::raft::RaftNode::new`] refused its inputs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A timing parameter is out of range.
    #[error("bad timing: {reason}")]
    Timing {
        /// Which relation failed.
        reason: &'static str,
    },
    /// A size or window limit is zero or too large.
    #[error("bad limit {name}: {value}")]
    Limit {
        /// The field.
        name: &'static str,
        /// Its value.
        value: u64,
    },
    /// The restored entries are not consecutive after the snapshot.
    #[error("restored log has a gap or disorder at index {index:?}")]
    RestoredLogGap {
        /// The first index out of place.
        index: LogIndex,
    },
    /// A restored membership entry's configuration is ill-formed (no voter, or a node both
    /// voter and learner).
    #[error("restored membership entry at index {index:?} is ill-formed")]
    RestoredMembership {
        /// The entry's index.
        index: LogIndex,
    },
    /// The restored commit or applied index lies outside the restored log.
    #[error("restored index {index:?} ({what}) beyond restored log end {last:?}")]
    RestoredIndex {
        /// Which index.
        what: &'static str,
        /// Its value.
        index: LogIndex,
        /// The last restored index.
        last: LogIndex,
    },
}

/// Why a proposal (command or membership change) was refused or will not complete here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// This node is not the leader. `leader_hint` is the leader it knows of, if any.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The current leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
    /// Too many uncommitted entries; retry later.
    #[error("{pending} entries uncommitted, limit {pending_max}")]
    Backpressure {
        /// Uncommitted entries now.
        pending: u64,
        /// The configured limit.
        pending_max: u64,
    },
    /// A membership change is still uncommitted, or the leader has not yet committed an
    /// entry of its own term (which a new change must wait for, thesis §4.1 erratum).
    #[error("a membership change is in progress")]
    MembershipChangePending,
    /// The change does not apply to the current membership.
    #[error("membership change {reason}")]
    InvalidMembershipChange {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// (In `Ready::dropped_proposals`.) This node stopped leading before the entry
    /// committed: the outcome is unknown. The entry may still commit under a new leader;
    /// watch committed entries for the proposal id, or retry idempotently.
    #[error("leadership lost before commit; outcome unknown (entry at {index:?})")]
    LeadershipLost {
        /// Where the entry was appended.
        index: LogIndex,
    },
}

/// Why a read cannot be served (now, or ever, for a dropped read).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A lease read on a node that is not the leader.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The current leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
    /// A follower read with no known leader to ask.
    #[error("no known leader")]
    NoLeader,
    /// The lease is not valid now (expired, never acquired, or leases are disabled because
    /// CheckQuorum is off).
    #[error("leader lease not valid")]
    LeaseExpired,
    /// The leader has not yet committed an entry in its term, so its commit index may be
    /// stale (thesis §6.4 step 1). Lease reads fail with this; ReadIndex reads wait instead.
    #[error("leader has not committed an entry in its term yet")]
    LeaderNotReady,
    /// Too many reads are pending.
    #[error("{pending} reads pending, limit {pending_max}")]
    Backpressure {
        /// Pending now.
        pending: u64,
        /// The limit.
        pending_max: u64,
    },
    /// (In `Ready::dropped_reads`.) Leadership changed or was lost before the read was
    /// confirmed.
    #[error("leadership lost before the read was confirmed")]
    LeadershipLost,
    /// (In `Ready::dropped_reads`.) A follower read got no answer from the leader in time.
    #[error("the leader did not answer the follower read in time")]
    Timeout,
    /// (In `Ready::dropped_reads`.) The leader refused the follower read.
    #[error("the leader refused the follower read")]
    Refused,
}

/// Why [`crate::raft::RaftNode::compact`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompactError {
    /// The index is not applied yet (the snapshot would cover unapplied state).
    #[error("index {index:?} beyond applied {applied:?}")]
    NotApplied {
        /// Requested.
        index: LogIndex,
        /// Applied now.
        applied: LogIndex,
    },
    /// The index is at or below the current snapshot.
    #[error("index {index:?} already compacted (snapshot at {snapshot:?})")]
    AlreadyCompacted {
        /// Requested.
        index: LogIndex,
        /// Current snapshot index.
        snapshot: LogIndex,
    },
}
