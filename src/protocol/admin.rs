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
