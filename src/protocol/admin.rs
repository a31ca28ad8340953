//! Admin requests of the client protocol: the catalog, membership, fault rules and status.
//!
//! They travel like data requests, one per bidirectional stream, inside the same frames:
//! a client writes one [`ToNode`] and reads one [`FromNode`]. Catalog and membership changes
//! go through Raft group 0, so they are served by its leader (others answer
//! `ClientError::NotLeader` with the leader's address); fault rules and status are answered
//! by the node asked, and the CLI asks every node.

use super::data::{ClientError, ClientRequest, ClientResponse, KeyspaceMode};
use crate::net::faults::FaultRules;
use crate::types::{GroupId, KeyspaceId, LogIndex, NodeId, Term};

use serde::{Deserialize, Serialize};

/// What a client sends on a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToNode {
    Data(ClientRequest),
    Admin(AdminRequest),
}

/// What a node answers on that stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromNode {
    Data(ClientResponse),
    Admin(Result<AdminAnswer, AdminError>),
}

impl FromNode {
    /// A data request's failure, in its frame.
    pub fn data_error(error: ClientError) -> FromNode {
        FromNode::Data(ClientResponse { result: Err(error) })
    }
}

/// Why an admin request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// What any request may meet: not the leader, unavailable, timed out, malformed, a
    /// failed node. The client library retries these as it does for data requests.
    #[error(transparent)]
    Request(#[from] ClientError),
    #[error("no keyspace named {name:?}")]
    UnknownKeyspace { name: String },
    #[error("a keyspace named {name:?} already exists")]
    KeyspaceExists { name: String },
    #[error("invalid keyspace name {name:?}: {reason}")]
    InvalidKeyspaceName { name: String, reason: String },
    #[error("the catalog holds at most {max} keyspaces")]
    TooManyKeyspaces { max: u32 },
    #[error("a cluster has at most {max} members")]
    TooManyMembers { max: usize },
    #[error("{id} is already a member")]
    MemberExists { id: NodeId },
    #[error("{id} is not a member")]
    UnknownMember { id: NodeId },
    #[error("{id} is the last member; a cluster cannot remove it")]
    LastMember { id: NodeId },
    #[error("{address:?} is not a host:port that resolves")]
    InvalidAddress { address: String },
    #[error("invalid fault rule: {reason}")]
    InvalidFaultRule { reason: String },
    /// A restore into a cluster that already holds keyspaces (or another restore's).
    #[error("the cluster already holds keyspace {name:?}: a restore needs an empty cluster")]
    ClusterNotEmpty { name: String },
    /// A backup handle this node does not hold (never opened here, expired, or the node
    /// restarted): open the keyspace's backup again.
    #[error("backup {backup} is not open on this node (expired or never opened here)")]
    UnknownBackup { backup: u64 },
    #[error("at most {max} backups may be open on a node at once")]
    TooManyBackups { max: u32 },
    /// A restore chunk that is not the one expected next.
    #[error("restore of {name:?} expects chunk {expected}, got {got}")]
    RestoreOutOfOrder {
        name: String,
        expected: u64,
        got: u64,
    },
    /// A restore chunk for a keyspace this node is not restoring.
    #[error("keyspace {name:?} is not being restored on this node")]
    NotRestoring { name: String },
    /// A restore chunk whose content does not decode or does not fit its keyspace.
    #[error("restore chunk for {name:?} refused: {reason}")]
    BadRestoreChunk { name: String, reason: String },
    /// The node could not read a backup's image from its storage.
    #[error("reading the backup on the node failed: {reason}")]
    BackupFailed { reason: String },
}

/// An admin request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Creates a keyspace (group 0 leader). `AdminError::KeyspaceExists` if the name is taken.
    CreateKeyspace { name: String, mode: KeyspaceMode },
    /// Drops a keyspace and its data on every node (group 0 leader).
    DropKeyspace { name: String },
    /// The catalog as this node has applied it.
    ListKeyspaces,
    /// Adds a member (group 0 leader). Answered once the catalog records it; the leader of
    /// every Raft group then adds it as a learner and promotes it to voter, and every node
    /// gossips with it. Start the new node with an initial cluster that lists it.
    AddMember { id: NodeId, address: String },
    /// Removes a member (group 0 leader); group leaders then remove it from their voters.
    RemoveMember { id: NodeId },
    /// The members and their addresses, as this node knows them.
    Members,
    /// Replaces the fault rules of the node asked.
    SetFaults(FaultRules),
    /// The fault rules in force on the node asked.
    Faults,
    /// The node's status.
    Status,
    /// Opens a backup of `keyspace` on the node asked (admin). A strong keyspace is read
    /// at a linearizable read index (its leader answers; others refuse with its address):
    /// the node keeps a point-in-time image at or past that index, which
    /// [`AdminRequest::BackupRead`] pages through, however many writes follow. An eventual
    /// keyspace is paged from the node's merged state.
    BackupOpen { keyspace: String },
    /// The page of an open backup at `cursor` (empty: the first). Ask the node that opened
    /// it (see [`BackupOpened::address`]).
    BackupRead { backup: u64, cursor: bytes::Bytes },
    /// Creates `name` for a restore (admin; group 0 leader). Refused with
    /// [`AdminError::ClusterNotEmpty`] if the catalog holds a keyspace that is not part of
    /// the same restore (`restore`, a number the restoring client picks). A strong keyspace
    /// (with its backed-up `revision`) is held on every node until that node received its
    /// image through [`AdminRequest::RestoreChunk`]; its Raft group then starts from the
    /// image as an installed snapshot at `revision`.
    RestoreKeyspace {
        name: String,
        mode: KeyspaceMode,
        revision: Option<LogIndex>,
        restore: u64,
    },
    /// Chunk `seq` (from 0) of a keyspace's backed-up data, for the node asked only (every
    /// node is sent every chunk). Answered once it is durable there; after the `last` one
    /// of a strong keyspace, once the node runs the group.
    RestoreChunk {
        name: String,
        seq: u64,
        data: bytes::Bytes,
        last: bool,
    },
}

impl AdminRequest {
    /// What the request does, in words.
    pub fn name(&self) -> &'static str {
        match self {
            AdminRequest::CreateKeyspace { .. } => "create keyspace",
            AdminRequest::DropKeyspace { .. } => "drop keyspace",
            AdminRequest::ListKeyspaces => "list keyspaces",
            AdminRequest::AddMember { .. } => "add member",
            AdminRequest::RemoveMember { .. } => "remove member",
            AdminRequest::Members => "list members",
            AdminRequest::SetFaults(_) => "set faults",
            AdminRequest::Faults => "list faults",
            AdminRequest::Status => "status",
            AdminRequest::BackupOpen { .. } => "open backup",
            AdminRequest::BackupRead { .. } => "read backup",
            AdminRequest::RestoreKeyspace { .. } => "restore keyspace",
            AdminRequest::RestoreChunk { .. } => "restore chunk",
        }
    }
}

/// The answer to an admin request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminAnswer {
    /// The change is committed in group 0 (and applied on the node that answered).
    Done,
    Keyspaces(Vec<KeyspaceInfo>),
    Members(Vec<MemberInfo>),
    Faults(FaultRules),
    Status(Box<NodeStatus>),
    BackupOpened(BackupOpened),
    /// A page of an open backup, and the cursor of the next (`None`: this was the last).
    BackupChunk {
        data: bytes::Bytes,
        next: Option<bytes::Bytes>,
    },
}

/// An open backup: its handle on the node that answered, and the point it reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupOpened {
    pub backup: u64,
    pub keyspace: KeyspaceInfo,
    /// A strong keyspace's revision (log index) the image holds: at or past a linearizable
    /// read index taken after the request arrived.
    pub revision: Option<LogIndex>,
    /// The node that holds the backup open, and its address: ask it for the pages.
    pub node: NodeId,
    pub address: String,
}

/// One catalog entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceInfo {
    pub name: String,
    /// Also the Raft group id of a strong keyspace.
    pub id: KeyspaceId,
    pub mode: KeyspaceMode,
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    /// `host:port` of its QUIC endpoint.
    pub address: String,
}

/// A node's view of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub address: String,
    pub uptime_ms: u64,
    /// Group 0 (the catalog, named `_catalog`) first, then every strong keyspace.
    pub strong: Vec<GroupStatus>,
    pub eventual: Vec<EventualStatus>,
    pub faults: FaultRules,
    /// How long the node's driver task held on since it started (filled by the shell).
    pub driver: DriverStats,
    /// Every paxos keyspace this node runs (added last: the wire encodes fields in order).
    pub paxos: Vec<PaxosStatus>,
}

/// A paxos keyspace's state on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaxosStatus {
    pub keyspace: String,
    pub id: KeyspaceId,
    /// The acceptors (the members when the keyspace started here).
    pub acceptors: Vec<NodeId>,
    /// Operations queued or running on this node's proposer.
    pub pending: u64,
    /// Acceptor states held in memory (the rest are on disk).
    pub cached: u64,
}

/// The driver task's longest stretches since the node started: a long one delays every
/// group's heartbeats and every answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverStats {
    /// Rounds run (a round: take the inputs, run the core, write and fsync its batches).
    pub rounds: u64,
    /// The longest round, fsync waits included, in microseconds.
    pub round_max_us: u64,
    /// The longest stretch the task computed without yielding (fsync waits excluded), in
    /// microseconds: what "nothing slow on the driver" bounds.
    pub busy_max_us: u64,
}

/// A Raft group's state on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub keyspace: String,
    pub group: GroupId,
    pub role: RaftRole,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: LogIndex,
    pub applied: LogIndex,
    pub last_index: LogIndex,
    /// The log starts after this index (its last compaction or installed snapshot).
    pub snapshot_index: LogIndex,
    pub voters: Vec<NodeId>,
}

/// A Raft role, as status reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftRole {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl std::fmt::Display for RaftRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RaftRole::Follower => "follower",
            RaftRole::PreCandidate => "pre-candidate",
            RaftRole::Candidate => "candidate",
            RaftRole::Leader => "leader",
        })
    }
}

/// An eventual keyspace's state on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventualStatus {
    pub keyspace: String,
    pub id: KeyspaceId,
    /// Keys held, tombstones included.
    pub keys: u64,
    /// Live keys (tombstones excluded).
    pub live_keys: u64,
    pub merkle_root: u64,
    /// A digest of the live state: equal on two nodes means they hold the same values.
    pub state_digest: u64,
    /// Milliseconds since this node last finished an anti-entropy session (None: never).
    pub last_round_ms_ago: Option<u64>,
    pub rounds: u64,
    /// Writes waiting for persistence or acknowledgements.
    pub pending_writes: u64,
    /// Tombstones not yet collected.
    pub tombstones: u64,
    /// `lww` states from peers refused because they were stamped further ahead of this
    /// node's wall clock than the allowed skew (a peer with a wrong clock).
    pub states_from_future: u64,
    /// Each peer, and whether it is `alive`, `suspect` or `down`.
    pub peers: Vec<(NodeId, String)>,
}
