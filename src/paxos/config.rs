//! The core's configuration, its planted bugs and its typed errors.

use super::message::ProposerId;
use crate::types::NodeId;
use std::time::Duration;

/// How a [`crate::paxos::PaxosNode`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Which start of this node: a number no earlier start used (the shell keeps a durable
    /// counter and raises it before each start). Ballots and operation ids carry it, so a
    /// restarted node, which remembers no counters, cannot reuse either.
    pub incarnation: u64,
    /// Every acceptor, this node included. A majority of them is a quorum.
    pub nodes: Vec<NodeId>,
    /// A round with no quorum of answers after this long is retried.
    pub round_timeout: Duration,
    /// Before a retry the proposer waits a random time below `backoff_base * 2^(attempt-1)`,
    /// at most `backoff_max`: proposers that collide on a key draw apart.
    pub backoff_base: Duration,
    /// The cap on one backoff.
    pub backoff_max: Duration,
    /// An operation gives up after this many rounds (see [`OpError`]).
    pub attempts_max: u32,
    /// Operations queued or running on this node, over all keys, at most.
    pub pending_max: usize,
    /// Answer a read after the prepare round alone when the promise quorum reports one and
    /// the same accepted ballot (that register is chosen) or nothing accepted at all.
    pub read_fast_path: bool,
    /// A deliberately planted bug, for proving that the simulator catches it.
    #[cfg(feature = "sim-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

impl Config {
    /// Defaults for a LAN: 50 ms rounds, 2-32 ms backoff, 10 attempts, 10,000 pending.
    pub fn new(id: NodeId, incarnation: u64, nodes: Vec<NodeId>) -> Config {
        Config {
            id,
            incarnation,
            nodes,
            round_timeout: Duration::from_millis(50),
            backoff_base: Duration::from_millis(2),
            backoff_max: Duration::from_millis(32),
            attempts_max: 10,
            pending_max: 10_000,
            read_fast_path: true,
            #[cfg(feature = "sim-bugs")]
            planted_bug: None,
        }
    }

    /// This start's proposer identity.
    pub fn proposer(&self) -> ProposerId {
        ProposerId {
            node: self.id,
            incarnation: self.incarnation,
        }
    }

    /// A majority of `nodes`.
    pub fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// Checks the relations between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.nodes.contains(&self.id) {
            return Err(ConfigError::NotAMember { id: self.id });
        }
        let mut sorted = self.nodes.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.nodes.len() || self.nodes.contains(&NodeId(0)) {
            return Err(ConfigError::Nodes);
        }
        if self.round_timeout.is_zero() || self.backoff_base.is_zero() {
            return Err(ConfigError::Timing {
                reason: "round timeout and backoff base must be positive",
            });
        }
        if self.backoff_max < self.backoff_base {
            return Err(ConfigError::Timing {
                reason: "backoff max below backoff base",
            });
        }
        if self.attempts_max == 0 || self.pending_max == 0 {
            return Err(ConfigError::Limit {
                name: "attempts_max and pending_max",
            });
        }
        Ok(())
    }

    /// Whether `bug` is planted. Always false without the `sim-bugs` feature.
    #[allow(unused_variables)]
    pub(crate) fn has_bug(&self, bug: PlantedBug) -> bool {
        #[cfg(feature = "sim-bugs")]
        {
            self.planted_bug == Some(bug)
        }
        #[cfg(not(feature = "sim-bugs"))]
        {
            false
        }
    }
}

/// Known Paxos mistakes the simulator must catch. Only configurable with `sim-bugs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// The proposer moves to the accept phase on the first promise instead of a majority:
    /// it builds on what one acceptor accepted and can miss a chosen register, so writes
    /// are lost and reads go back in time.
    AcceptWithoutPromiseQuorum,
}

impl PlantedBug {
    /// Parses the command-line name.
    pub fn from_name(name: &str) -> Option<PlantedBug> {
        match name {
            "paxos-accept-without-promise-quorum" => Some(PlantedBug::AcceptWithoutPromiseQuorum),
            _ => None,
        }
    }

    /// Every planted bug's command-line name.
    pub const NAMES: [&'static str; 1] = ["paxos-accept-without-promise-quorum"];
}

/// Why [`crate::paxos::PaxosNode::new`] refused its inputs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `id` is not among `nodes`.
    #[error("{id} is not among the configured nodes")]
    NotAMember {
        /// This node.
        id: NodeId,
    },
    /// `nodes` repeats a node or names node 0 (reserved for `Ballot::ZERO`).
    #[error("nodes must be distinct and non-zero")]
    Nodes,
    /// A timing parameter is out of range.
    #[error("bad timing: {reason}")]
    Timing {
        /// Which relation failed.
        reason: &'static str,
    },
    /// A limit is zero.
    #[error("bad limit {name}: must be positive")]
    Limit {
        /// The field.
        name: &'static str,
    },
    /// A restored acceptor state breaks its invariant (an accepted ballot above the promise)
    /// or the limits.
    #[error("restored acceptor state is ill-formed")]
    RestoredState,
}

/// Why `propose` refused an operation. Nothing was started: it certainly did not take effect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// Too many operations queued or running on this node; retry later.
    #[error("{pending} operations pending, limit {pending_max}")]
    Backpressure {
        /// Operations pending now.
        pending: usize,
        /// The configured limit.
        pending_max: usize,
    },
    /// The key or the value is over its limit.
    #[error("key of {key_bytes} bytes or value of {value_bytes} bytes over the limit")]
    TooLarge {
        /// The key's length.
        key_bytes: usize,
        /// The value's length.
        value_bytes: usize,
    },
}

/// Why an operation ended without an answer (in [`crate::paxos::Answer::result`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The proposer gave up before any accept of this operation left it: the operation
    /// certainly did not take effect and may be retried as a new one.
    #[error("no quorum after {attempts} attempts; not applied")]
    NotApplied {
        /// Rounds tried.
        attempts: u32,
    },
    /// The proposer gave up after an accept left: another proposer may still adopt that
    /// register, so the write may or may not take effect. Read the key to find out.
    #[error("no quorum after {attempts} attempts; the write may or may not take effect")]
    Unknown {
        /// Rounds tried.
        attempts: u32,
    },
}
