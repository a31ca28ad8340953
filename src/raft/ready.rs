//! The work the core hands to its shell, and what the shell may ask about it.

use super::error::{ProposeError, ReadError};
use super::message::{
    Entry, Envelope, HardState, Membership, ProposalId, ReadId, SnapshotChunk, SnapshotMeta,
};
use crate::types::{LogIndex, NodeId, Term};

/// Numbers each [`Ready`]; `advance` takes it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadyId(pub u64);

/// A confirmed read: serve it once the applied index is at least `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id.
    pub id: ReadId,
    /// Serve once applied >= this.
    pub index: LogIndex,
}

/// One batch of work for the shell, carried out as [the Ready contract] says. No other `Ready`
/// is produced until it is advanced.
///
/// [the Ready contract]: crate::raft#the-ready-contract
#[derive(Clone, Debug, Default)]
#[must_use = "a Ready must be persisted, sent, applied and then advanced"]
pub struct Ready {
    /// Pass back to `advance`.
    pub id: ReadyId,
    /// To persist, when it changed.
    pub hard_state: Option<HardState>,
    /// Chunks of a snapshot the leader is sending, in order, for the shell to stage beside
    /// its state machine (a chunk at offset 0 discards what was staged before).
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// The snapshot whose last chunk is in `snapshot_chunks` is complete: persist its meta,
    /// let what was staged replace the state machine, and delete every durable entry.
    pub snapshot: Option<SnapshotMeta>,
    /// Consecutive entries to persist. Before appending, delete every durable entry at an
    /// index >= `entries[0].index` (a conflicting suffix the leader overwrote).
    pub entries: Vec<Entry>,
    /// Whether the persist must be fsynced (term, vote, entries or snapshot changed).
    pub must_sync: bool,
    /// Messages that may be sent at once, even before the persist.
    pub messages: Vec<Envelope>,
    /// Messages that may be sent only after this Ready's persist is durable.
    pub persisted_messages: Vec<Envelope>,
    /// Committed entries to apply, in order, after `snapshot` if any.
    pub committed: Vec<Entry>,
    /// Reads confirmed: serve each once applied >= its index.
    pub read_states: Vec<ReadState>,
    /// Proposals this node will no longer report on (see `ProposeError::LeadershipLost`).
    pub dropped_proposals: Vec<(ProposalId, ProposeError)>,
    /// Reads that will not be confirmed.
    pub dropped_reads: Vec<(ReadId, ReadError)>,
}

impl Ready {
    /// The id to pass to `advance`.
    pub fn id(&self) -> ReadyId {
        self.id
    }

    /// Whether there is anything to persist.
    pub fn has_persist_work(&self) -> bool {
        self.hard_state.is_some()
            || self.snapshot.is_some()
            || !self.snapshot_chunks.is_empty()
            || !self.entries.is_empty()
    }
}

/// What the node was restarted from: exactly what earlier `Ready`s (and `compact`) made
/// durable. A fresh node passes `RestoredState::default()`.
#[derive(Clone, Debug, Default)]
pub struct RestoredState {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// The last persisted snapshot's meta (the log starts after it), if any.
    pub snapshot: Option<SnapshotMeta>,
    /// Persisted entries in index order. Entries at or below the snapshot index are skipped;
    /// the rest must be consecutive from `snapshot.index + 1`.
    pub entries: Vec<Entry>,
    /// The index up to which the shell's state machine is already applied (its snapshot's
    /// index if it rebuilds from the snapshot). Committed entries after it are handed out
    /// again. Raised to the snapshot index if lower.
    pub applied: LogIndex,
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Running a pre-vote.
    PreCandidate,
    /// Running an election.
    Candidate,
    /// Leads its term.
    Leader,
}

/// A snapshot of the node's state, for tests, checkers and operators.
#[derive(Clone, Debug)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// Its vote in `term`.
    pub vote: Option<NodeId>,
    /// The leader it knows of in `term`.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit: LogIndex,
    /// What the shell reported applied.
    pub applied: LogIndex,
    /// Its last log index.
    pub last_index: LogIndex,
    /// Its last log term.
    pub last_term: Term,
    /// Its snapshot's index (the log starts after it).
    pub snapshot_index: LogIndex,
    /// The membership in force (the latest appended change).
    pub membership: Membership,
}

/// What a stale read may tell its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleStatus {
    /// The state the read sees.
    pub applied: LogIndex,
    /// The highest commit index this node knows of.
    pub known_commit: LogIndex,
    /// `known_commit - applied`, in entries.
    pub behind: u64,
}
