//! Messages between the engines of one keyspace. All derive serde and round-trip through
//! [`crate::wire`]; the simulator sends every one through `wire::roundtrip`.
//!
//! Anti-entropy session, initiator `A`, responder `B` (B keeps no session state):
//!
//! ```text
//!  A: SyncRoot { root, knowledge }          ──▶  B: same root?  SyncRootReply { children: None }
//!                                           ◀──                  else children of the root
//!  A: SyncChildren { nodes }  (differing)   ──▶  B: SyncChildrenReply { hashes of their children }
//!     ... down to the leaves ...
//!  A: SyncLeafDigests { leaf -> A's entry   ──▶  B: SyncLeafStates { B's states A lacks,
//!                       hashes }            ◀──      entry hashes of A's that B lacks }
//!  A: SyncPush { A's states B asked for }   ──▶  B merges
//! ```
//!
//! Each request carries a fresh id in its `session` field, echoed by the answer; an answer
//! whose id is not the outstanding request's (another session, or a duplicated or late
//! answer to an earlier request) is ignored. Every
//! request is bounded (`*_MAX` constants) and A keeps within `round_bytes_max` per round.

use super::levels::SessionToken;
use super::merkle::{FANOUT, NodeRef};
use super::value::KeyState;
use bytes::Bytes;
use crdts::VClock;
use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// One key and its full state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// The key.
    pub key: Bytes,
    /// Its full CRDT state.
    pub state: KeyState,
}

/// Everything engines say to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMessage {
    /// A local write's new key state, pushed to peers after the writer persisted it.
    Delta {
        /// The key and its state after the write.
        entry: KeyEntry,
        /// The write's dot.
        token: SessionToken,
        /// The writer waits for a `DeltaAck` (quorum / all writes).
        ack_requested: bool,
    },
    /// The sender persisted the delta with this token.
    DeltaAck {
        /// The acknowledged write.
        token: SessionToken,
    },
    /// Anti-entropy: start of a session.
    SyncRoot {
        /// Session id, chosen by the initiator.
        session: u64,
        /// The initiator's Merkle root.
        root: u64,
        /// The initiator's durable knowledge vector.
        knowledge: VClock<NodeId>,
    },
    /// Anti-entropy: the responder's root comparison.
    SyncRootReply {
        /// Echoed session id.
        session: u64,
        /// The responder's durable knowledge vector (as of the session start).
        knowledge: VClock<NodeId>,
        /// `None` if the roots are equal, else the responder's root children.
        children: Option<[u64; FANOUT]>,
    },
    /// Anti-entropy: the initiator asks for the children of differing inner nodes.
    SyncChildren {
        /// Echoed session id.
        session: u64,
        /// Inner nodes whose hashes differ (at most `SYNC_NODES_PER_REQUEST_MAX`).
        nodes: Vec<NodeRef>,
    },
    /// Anti-entropy: children hashes, in request order.
    SyncChildrenReply {
        /// Echoed session id.
        session: u64,
        /// For each requested node, its children's hashes.
        nodes: Vec<(NodeRef, [u64; FANOUT])>,
    },
    /// Anti-entropy: the initiator's entry hashes in differing leaves.
    SyncLeafDigests {
        /// Echoed session id.
        session: u64,
        /// Leaf index and the initiator's entry hashes in it.
        leaves: Vec<(u32, Vec<u64>)>,
        /// Bytes of states the responder may send back.
        bytes_max: u32,
    },
    /// Anti-entropy: the responder's states that differ, and what it wants in return.
    SyncLeafStates {
        /// Echoed session id.
        session: u64,
        /// The responder's keys whose entry hash the initiator does not have.
        states: Vec<KeyEntry>,
        /// Initiator entry hashes the responder does not have: send those states.
        wanted: Vec<u64>,
        /// Leaves whose states did not fit in `bytes_max`: ask again.
        truncated: Vec<u32>,
    },
    /// Anti-entropy: the initiator's states the responder asked for.
    SyncPush {
        /// Echoed session id.
        session: u64,
        /// The states.
        states: Vec<KeyEntry>,
    },
    /// Quorum read: send me your state of `key`.
    ReadRequest {
        /// The reader's id for this read.
        read: u64,
        /// The key.
        key: Bytes,
    },
    /// Quorum read: my state of `key` (None: I hold nothing).
    ReadReply {
        /// Echoed.
        read: u64,
        /// Echoed.
        key: Bytes,
        /// The state.
        state: Option<KeyState>,
    },
    /// Read repair: merge this state.
    Repair {
        /// The key and merged state.
        entry: KeyEntry,
    },
}
