//! What acceptors store and what nodes exchange: ballots, registers, acceptor states and the
//! four-plus-one peer messages. Every type here derives serde and round-trips through
//! [`crate::wire`]; none uses `#[serde(skip)]` or untagged enums.

use crate::types::NodeId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Keys longer than this are refused by `propose` and ignored in peer messages.
pub const KEY_BYTES_MAX: usize = 4 * 1024;
/// Values longer than this are refused by `propose` and ignored in peer messages.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// A register remembers at most this many proposing nodes' last writes (see
/// [`Register::writers`]); a peer message carrying more is ignored. Far above any cluster
/// size we run, so only a malformed message reaches it.
pub const WRITERS_MAX: usize = 64;

/// One run of a node's proposer: the node and which start of it (the shell passes a number
/// no earlier start of the node used). Ballots and operation ids carry it, so two starts of
/// one node never issue the same ballot or the same operation id, even though neither keeps
/// its counters across a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProposerId {
    /// The node.
    pub node: NodeId,
    /// Which start of the node.
    pub incarnation: u64,
}

/// A Paxos ballot: ordered by round, then by proposer, so ballots of different proposers
/// never tie. [`Ballot::ZERO`] is below every ballot a proposer issues (rounds start at 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// Rises with every attempt; a proposer picks one above every round it has seen.
    pub round: u64,
    /// Who issued it.
    pub proposer: ProposerId,
}

impl Ballot {
    /// Below every issued ballot: what a fresh acceptor has promised.
    pub const ZERO: Ballot = Ballot {
        round: 0,
        proposer: ProposerId {
            node: NodeId(0),
            incarnation: 0,
        },
    };
}

impl Default for Ballot {
    fn default() -> Ballot {
        Ballot::ZERO
    }
}

/// Names one client operation across the cluster: the proposer that runs it and its
/// sequence number within that proposer's run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId {
    /// The proposer running it.
    pub proposer: ProposerId,
    /// Its number within that run, from 1.
    pub seq: u64,
}

/// A key's value with the revision that set it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Versioned {
    /// The bytes.
    pub value: Bytes,
    /// The key's version when this value was written.
    pub mod_revision: u64,
}

/// What a write returned, as a proposer's answer and as a register remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// The put took the key to `revision`.
    Put {
        /// The key's version after the put.
        revision: u64,
    },
    /// The delete took the key to `revision`; `existed` says whether it held a value.
    Delete {
        /// The key's version after the delete.
        revision: u64,
        /// Whether the key held a value before.
        existed: bool,
    },
    /// The cas took the key to `revision`. `current` is the key after the change when it
    /// succeeded, the key it failed against otherwise.
    Cas {
        /// The key's version after the cas (a failed cas is a write too: it raises it).
        revision: u64,
        /// Whether the comparison held.
        succeeded: bool,
        /// The key after the change, or the key that failed the comparison.
        current: Option<Versioned>,
    },
}

/// A proposing node's last write applied to a register, and what it returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterRecord {
    /// The operation.
    pub op: OpId,
    /// What it returned when it was applied.
    pub outcome: WriteOutcome,
}

/// One key's replicated state: what a ballot's accept carries and what acceptors store.
///
/// Invariants (checked by [`Register::is_sane`] on peer input): `mod_revision <= version`;
/// `writers` is sorted by node, one record per node, at most [`WRITERS_MAX`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// The value; `None` when the key was never written or was deleted. A deleted key
    /// keeps its register (a tombstone, with its version): there is no collection of keys
    /// yet, so a key's version never goes back.
    pub value: Option<Bytes>,
    /// The version at which `value` was last set (by a put, a delete or a successful cas).
    pub mod_revision: u64,
    /// Counts every write applied to the key, failed cas and deletes of absent keys too: each
    /// write returns the version it produced, so a write's revision is above every write
    /// before it on the key. Revisions are per key and mean nothing across keys.
    pub version: u64,
    /// Per proposing node, its last write applied here. A proposer that retries a write
    /// looks for its own operation id here: if an earlier attempt was chosen, even if others
    /// wrote over it since, the write is not applied twice and its first answer is returned.
    /// A node runs one operation per key at a time, so its last write is the one to check.
    pub writers: Vec<WriterRecord>,
}

impl Register {
    /// The value with its revision, as a read returns it.
    pub fn current(&self) -> Option<Versioned> {
        self.value.as_ref().map(|value| Versioned {
            value: value.clone(),
            mod_revision: self.mod_revision,
        })
    }

    /// The record of `node`'s last write here, if any.
    pub fn writer(&self, node: NodeId) -> Option<&WriterRecord> {
        self.writers
            .binary_search_by_key(&node, |record| record.op.proposer.node)
            .ok()
            .map(|index| &self.writers[index])
    }

    /// Whether a register from a peer keeps the invariants above.
    pub fn is_sane(&self) -> bool {
        let sorted = self
            .writers
            .windows(2)
            .all(|pair| pair[0].op.proposer.node < pair[1].op.proposer.node);
        let small = self
            .value
            .as_ref()
            .is_none_or(|v| v.len() <= VALUE_BYTES_MAX);
        self.mod_revision <= self.version && sorted && small && self.writers.len() <= WRITERS_MAX
    }
}

/// What one acceptor keeps per key, and what the shell persists for it.
///
/// Invariant: `accepted`'s ballot is at most `promised`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptorState {
    /// The highest ballot this acceptor promised (or accepted): it refuses anything lower.
    pub promised: Ballot,
    /// The last register it accepted, with the ballot it came under.
    pub accepted: Option<(Ballot, Register)>,
}

impl AcceptorState {
    /// Whether a restored or received state keeps the invariant.
    pub fn is_sane(&self) -> bool {
        self.accepted
            .as_ref()
            .is_none_or(|(ballot, register)| *ballot <= self.promised && register.is_sane())
    }
}

/// Which phase a rejected message belonged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Phase 1: prepare / promise.
    Prepare,
    /// Phase 2: accept / accepted.
    Accept,
}

/// The peer-to-peer messages. Every one names its key, so one node hosts any number of
/// keys' instances over one connection; the node layer prefixes keys with their keyspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaxosMessage {
    /// Phase 1a: promise to refuse ballots below `ballot`, and say what you accepted.
    Prepare {
        /// The key.
        key: Bytes,
        /// The proposer's ballot.
        ballot: Ballot,
    },
    /// Phase 1b: the acceptor promised `ballot` (durably, before this left).
    Promise {
        /// The key.
        key: Bytes,
        /// The ballot promised.
        ballot: Ballot,
        /// What the acceptor had accepted when it promised.
        accepted: Option<(Ballot, Register)>,
    },
    /// Phase 2a: accept `register` under `ballot`.
    Accept {
        /// The key.
        key: Bytes,
        /// The proposer's ballot.
        ballot: Ballot,
        /// The register the proposer computed.
        register: Register,
    },
    /// Phase 2b: the acceptor accepted `ballot`'s register (durably, before this left).
    Accepted {
        /// The key.
        key: Bytes,
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// The acceptor refused `ballot` because it promised `promised`, which is higher.
    Reject {
        /// The key.
        key: Bytes,
        /// The ballot refused.
        ballot: Ballot,
        /// Which phase was refused.
        phase: Phase,
        /// What the acceptor has promised: the proposer's next round goes above it.
        promised: Ballot,
    },
}

impl PaxosMessage {
    /// The key the message is about.
    pub fn key(&self) -> &Bytes {
        match self {
            PaxosMessage::Prepare { key, .. }
            | PaxosMessage::Promise { key, .. }
            | PaxosMessage::Accept { key, .. }
            | PaxosMessage::Accepted { key, .. }
            | PaxosMessage::Reject { key, .. } => key,
        }
    }

    /// Whether the message keeps the limits and invariants a correct peer keeps. An insane
    /// message is ignored, never trusted and never a panic.
    pub fn is_sane(&self) -> bool {
        if self.key().len() > KEY_BYTES_MAX {
            return false;
        }
        match self {
            PaxosMessage::Promise {
                ballot,
                accepted: Some((accepted, register)),
                ..
            } => accepted <= ballot && register.is_sane(),
            PaxosMessage::Accept { register, .. } => register.is_sane(),
            PaxosMessage::Reject {
                ballot, promised, ..
            } => promised > ballot,
            _ => true,
        }
    }
}

/// A message with its sender and its addressee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender.
    pub from: NodeId,
    /// The addressee. A node addresses its own acceptor too: the shell delivers that one
    /// back to it like any other.
    pub to: NodeId,
    /// The message.
    pub message: PaxosMessage,
}
