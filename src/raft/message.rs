//! Everything the core exchanges with its peers and its shell: log entries, hard state,
//! snapshots, membership and the peer-to-peer messages. Every type here derives serde and
//! round-trips through [`crate::wire`]; none uses `#[serde(skip)]` or untagged enums.

use crate::types::{LogIndex, NodeId, Term};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Names a client proposal, chosen by the caller. Opaque to the core, which only carries it in
/// the [`Entry`] so the proposing shell can match the applied result to the waiting client.
/// Make it unique across the cluster (e.g. node id in the high bits) if several nodes' shells
/// watch the same committed entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProposalId(pub u64);

/// Names a read request, chosen by the caller; returned in a [`crate::raft::ReadState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReadId(pub u64);

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A client command for the state machine.
    Normal {
        /// The proposer's id for this command.
        proposal: ProposalId,
        /// The command, opaque to Raft.
        command: Bytes,
    },
    /// The empty entry a new leader appends at the start of its term (Raft §5.4.2, §8).
    Noop,
    /// A single-server membership change. It takes effect when appended (see the module docs).
    Membership {
        /// The change, as the leader validated it.
        change: MembershipChange,
        /// The configuration it produces, which every node adopts as is: a node whose view
        /// before the change differed (a joiner that never saw the first voters) must not
        /// re-derive it from its own base.
        config: Membership,
    },
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created it.
    pub term: Term,
    /// Its position in the log.
    pub index: LogIndex,
    /// Its payload.
    pub kind: EntryKind,
}

impl Entry {
    /// Approximate encoded size, used to cap appends by `max_entries_bytes_per_append`.
    pub fn size_bytes(&self) -> u64 {
        const HEADER_BYTES: u64 = 32;
        match &self.kind {
            EntryKind::Normal { command, .. } => HEADER_BYTES + command.len() as u64,
            EntryKind::Noop => HEADER_BYTES,
            EntryKind::Membership { config, .. } => {
                HEADER_BYTES + 8 * config.members().count() as u64
            }
        }
    }
}

/// The state that must be durable before certain messages leave (Raft Figure 2 "persistent
/// state", plus the commit index so a restart need not relearn it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known committed. Entries up to it are in the persisted log.
    pub commit: LogIndex,
}

/// One single-server membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a node that receives the log but neither votes nor counts for commit.
    AddLearner(NodeId),
    /// Make a learner a voter.
    PromoteLearner(NodeId),
    /// Remove a voter. A leader that removes itself steps down once the removal commits.
    RemoveVoter(NodeId),
    /// Remove a learner.
    RemoveLearner(NodeId),
}

/// A cluster configuration: who votes and who only learns. Disjoint sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Nodes that vote and count for commit.
    pub voters: BTreeSet<NodeId>,
    /// Nodes that receive the log only.
    pub learners: BTreeSet<NodeId>,
}

/// Where a snapshot ends and what configuration held there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last index the snapshot covers.
    pub index: LogIndex,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The membership in force at `index`.
    pub membership: Membership,
}

/// One chunk of a snapshot a follower received, for its shell to stage (see
/// [`Ready::snapshot_chunks`](super::Ready::snapshot_chunks)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Which snapshot.
    pub meta: SnapshotMeta,
    /// Byte position of `data` in the snapshot's stream. A chunk at 0 starts the snapshot
    /// over: whatever was staged before goes.
    pub offset: u64,
    /// The bytes, opaque to the core (the shell's state machine made them).
    pub data: Bytes,
    /// The last chunk: the staged snapshot is complete and replaces the state machine.
    pub last: bool,
}

/// How a follower answers an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The follower's log matches the leader's up to `match_index`.
    Success {
        /// The last index known to match.
        match_index: LogIndex,
    },
    /// The log-matching check failed at `rejected_prev`. The hints let the leader skip a
    /// whole conflicting term at once (Raft thesis §5.3's optimisation).
    Reject {
        /// The `prev_index` of the append that failed.
        rejected_prev: LogIndex,
        /// The term of the follower's entry at `rejected_prev`, if it has one there.
        conflict_term: Option<Term>,
        /// The first index of `conflict_term` in the follower's log, or its last index + 1
        /// when the log is too short.
        hint_index: LogIndex,
    },
}

/// The messages Raft peers exchange. Every one carries the sender's term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftMessage {
    /// "Would you vote for me in `term`?" Changes no state on either side (thesis §9.6).
    PreVote {
        /// The term the sender would campaign in (its term + 1).
        term: Term,
        /// The sender's last log index.
        last_index: LogIndex,
        /// The sender's last log term.
        last_term: Term,
    },
    /// The answer to a pre-vote. `term` is the request's term when granted, else the
    /// responder's term.
    PreVoteResponse {
        /// See above.
        term: Term,
        /// Whether the responder would vote.
        granted: bool,
    },
    /// RequestVote.
    Vote {
        /// The candidate's term.
        term: Term,
        /// The candidate's last log index.
        last_index: LogIndex,
        /// The candidate's last log term.
        last_term: Term,
    },
    /// The answer to a vote request.
    VoteResponse {
        /// The responder's term.
        term: Term,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries. Entries may be empty (used to probe and to carry the commit index).
    Append {
        /// The leader's term.
        term: Term,
        /// The index just before `entries`.
        prev_index: LogIndex,
        /// The term at `prev_index`.
        prev_term: Term,
        /// Consecutive entries starting at `prev_index + 1`.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
    },
    /// The answer to an append.
    AppendResponse {
        /// The responder's term.
        term: Term,
        /// Success or a rejection with back-off hints.
        outcome: AppendOutcome,
    },
    /// A leader's heartbeat. `seq` numbers the round, for ReadIndex, leases and CheckQuorum.
    Heartbeat {
        /// The leader's term.
        term: Term,
        /// `min(leader commit, follower's match index)`: safe for the follower to commit.
        commit: LogIndex,
        /// The round number, echoed in the response.
        seq: u64,
    },
    /// The answer to a heartbeat.
    HeartbeatResponse {
        /// The responder's term.
        term: Term,
        /// The round being acknowledged.
        seq: u64,
    },
    /// One chunk of a snapshot. Chunks go one at a time; `offset` is the byte position of
    /// `data` in the snapshot's stream, whose length nobody needs to know in advance (it is
    /// read from storage as it is sent).
    InstallSnapshot {
        /// The leader's term.
        term: Term,
        /// Which snapshot.
        meta: SnapshotMeta,
        /// Byte offset of `data`.
        offset: u64,
        /// The chunk, about `snapshot_chunk_bytes`.
        data: Bytes,
        /// Whether this is the snapshot's last chunk.
        last: bool,
    },
    /// The answer to a snapshot chunk.
    SnapshotResponse {
        /// The responder's term.
        term: Term,
        /// The snapshot being acknowledged.
        snapshot_index: LogIndex,
        /// The next byte offset the follower expects.
        next_offset: u64,
        /// The follower has installed the snapshot (or already had everything it covers).
        done: bool,
    },
    /// A follower asks the leader for a read index on behalf of its own client.
    ReadIndex {
        /// The follower's term.
        term: Term,
        /// The follower's read id, echoed back.
        id: ReadId,
    },
    /// The leader's answer: the read index, or `None` when it cannot serve reads now.
    ReadIndexResponse {
        /// The leader's term.
        term: Term,
        /// The follower's read id.
        id: ReadId,
        /// The index the follower must apply before serving the read.
        index: Option<LogIndex>,
    },
}

/// Terms and indexes at or beyond this are refused as malformed: no real cluster gets near
/// it (one term per election timeout, one index per entry), and refusing them keeps every
/// `+ 1` in the core free of overflow.
pub const TERM_OR_INDEX_MAX: u64 = u64::MAX / 4;

impl RaftMessage {
    /// Whether every term and index in the message is below [`TERM_OR_INDEX_MAX`], and a
    /// snapshot chunk's offset and size are consistent.
    pub fn is_sane(&self) -> bool {
        let ok = |value: u64| value < TERM_OR_INDEX_MAX;
        let entries_ok = |entries: &[Entry]| entries.iter().all(|e| ok(e.term.0) && ok(e.index.0));
        ok(self.term().0)
            && match self {
                RaftMessage::PreVote {
                    last_index,
                    last_term,
                    ..
                }
                | RaftMessage::Vote {
                    last_index,
                    last_term,
                    ..
                } => ok(last_index.0) && ok(last_term.0),
                RaftMessage::Append {
                    prev_index,
                    prev_term,
                    entries,
                    leader_commit,
                    ..
                } => {
                    ok(prev_index.0)
                        && ok(prev_term.0)
                        && ok(leader_commit.0)
                        && entries_ok(entries)
                }
                RaftMessage::AppendResponse {
                    outcome: AppendOutcome::Success { match_index },
                    ..
                } => ok(match_index.0),
                RaftMessage::AppendResponse {
                    outcome:
                        AppendOutcome::Reject {
                            rejected_prev,
                            conflict_term,
                            hint_index,
                        },
                    ..
                } => {
                    ok(rejected_prev.0) && ok(hint_index.0) && conflict_term.is_none_or(|t| ok(t.0))
                }
                RaftMessage::Heartbeat { commit, .. } => ok(commit.0),
                RaftMessage::InstallSnapshot {
                    meta, offset, data, ..
                } => ok(meta.index.0) && ok(meta.term.0) && ok(*offset) && ok(data.len() as u64),
                RaftMessage::SnapshotResponse {
                    snapshot_index,
                    next_offset,
                    ..
                } => ok(snapshot_index.0) && ok(*next_offset),
                RaftMessage::ReadIndexResponse { index, .. } => index.is_none_or(|i| ok(i.0)),
                RaftMessage::PreVoteResponse { .. }
                | RaftMessage::VoteResponse { .. }
                | RaftMessage::HeartbeatResponse { .. }
                | RaftMessage::ReadIndex { .. } => true,
            }
    }

    /// The term the message carries.
    pub fn term(&self) -> Term {
        match self {
            RaftMessage::PreVote { term, .. }
            | RaftMessage::PreVoteResponse { term, .. }
            | RaftMessage::Vote { term, .. }
            | RaftMessage::VoteResponse { term, .. }
            | RaftMessage::Append { term, .. }
            | RaftMessage::AppendResponse { term, .. }
            | RaftMessage::Heartbeat { term, .. }
            | RaftMessage::HeartbeatResponse { term, .. }
            | RaftMessage::InstallSnapshot { term, .. }
            | RaftMessage::SnapshotResponse { term, .. }
            | RaftMessage::ReadIndex { term, .. }
            | RaftMessage::ReadIndexResponse { term, .. } => *term,
        }
    }
}

/// A message with its addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The message.
    pub msg: RaftMessage,
}
