//! Engine configuration and the planted bugs the simulator can switch on.

use super::error::ConfigError;
use super::value::ValueType;
use crate::types::NodeId;
use std::time::Duration;

/// Smallest allowed `round_bytes_max`: one in-sync round must fit (root + knowledge vectors).
pub const ROUND_BYTES_MIN: usize = 1024;

/// How one engine (one node, one keyspace) behaves. All durations are on the caller's
/// monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// This node.
    pub node: NodeId,
    /// Every replica of the keyspace, including `node`. Tombstones are collected only once
    /// all of them have seen the delete.
    pub members: Vec<NodeId>,
    /// The keyspace's value type.
    pub value_type: ValueType,
    /// Time between anti-entropy rounds.
    pub round_interval: Duration,
    /// Bytes one anti-entropy round may send and ask for; a larger repair continues in the
    /// next rounds.
    pub round_bytes_max: usize,
    /// A peer not heard from for this long is `Suspect`.
    pub suspect_after: Duration,
    /// A peer not heard from for this long is `Down` (no deltas pushed to it).
    pub down_after: Duration,
    /// How long a session read waits for its token before failing.
    pub session_wait_max: Duration,
    /// How long a quorum/all write or a quorum read waits for replies, and how long an
    /// anti-entropy request waits for its answer.
    pub request_timeout: Duration,
    /// How far ahead of this node's wall clock a peer's `lww` stamp may be. A state stamped
    /// further ahead is refused (not merged, not acknowledged, counted in
    /// `EngineStats::states_from_future`) until this node's clock catches up: observing it
    /// would drag this node's HLC, and every later write here, that far into the future.
    pub clock_skew_max: Duration,
    /// A deliberate bug, to prove the simulator's checkers catch it.
    #[cfg(feature = "sim-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

impl EngineConfig {
    /// A configuration with the default timings (100 ms rounds, 64 KiB per round, suspect
    /// after 1 s, down after 3 s, 1 s session wait and request timeout, stamps at most 5
    /// minutes ahead).
    pub fn new(node: NodeId, members: Vec<NodeId>, value_type: ValueType) -> EngineConfig {
        EngineConfig {
            node,
            members,
            value_type,
            round_interval: Duration::from_millis(100),
            round_bytes_max: 64 * 1024,
            suspect_after: Duration::from_secs(1),
            down_after: Duration::from_secs(3),
            session_wait_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            clock_skew_max: Duration::from_secs(300),
            #[cfg(feature = "sim-bugs")]
            planted_bug: None,
        }
    }

    /// Checks the configuration; `AntiEntropy::new` calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.members.contains(&self.node) {
            return Err(ConfigError::NodeNotMember { node: self.node });
        }
        let mut sorted = self.members.clone();
        sorted.sort();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(ConfigError::DuplicateMember { node: pair[0] });
        }
        if self.members.len() > super::MEMBERS_MAX {
            return Err(ConfigError::TooManyMembers {
                members: self.members.len(),
                members_max: super::MEMBERS_MAX,
            });
        }
        let durations = [
            ("round_interval", self.round_interval),
            ("suspect_after", self.suspect_after),
            ("down_after", self.down_after),
            ("session_wait_max", self.session_wait_max),
            ("request_timeout", self.request_timeout),
            ("clock_skew_max", self.clock_skew_max),
        ];
        if let Some((field, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::ZeroDuration { field });
        }
        if self.down_after < self.suspect_after {
            return Err(ConfigError::DownBeforeSuspect);
        }
        if self.round_bytes_max < ROUND_BYTES_MIN {
            return Err(ConfigError::RoundBytesTooSmall {
                bytes: self.round_bytes_max,
                bytes_min: ROUND_BYTES_MIN,
            });
        }
        Ok(())
    }

    /// Replicas needed for a quorum: a strict majority of `members`.
    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// True if the planted bug `bug` is switched on.
    #[cfg(feature = "sim-bugs")]
    pub(crate) fn has_bug(&self, bug: PlantedBug) -> bool {
        self.planted_bug == Some(bug)
    }
}

/// Deliberate bugs the eventual simulator's checkers must catch.
#[cfg(feature = "sim-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// `mvreg-drop-sibling`: merging two `mvreg` states with concurrent siblings keeps only
    /// one of them.
    MergeDropsSibling,
    /// `early-tombstone-gc`: tombstones are collected as soon as they are created, without
    /// waiting for every member to have seen them.
    EarlyTombstoneGc,
    /// `merkle-forget-key`: when a local write creates a key, the Merkle tree is not
    /// updated, so if its delta is lost anti-entropy believes the replicas are in sync.
    MerkleForgetsKey,
}

#[cfg(feature = "sim-bugs")]
impl PlantedBug {
    /// All planted bugs.
    pub const ALL: [PlantedBug; 3] = [
        PlantedBug::MergeDropsSibling,
        PlantedBug::EarlyTombstoneGc,
        PlantedBug::MerkleForgetsKey,
    ];

    /// The bug's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::MergeDropsSibling => "mvreg-drop-sibling",
            PlantedBug::EarlyTombstoneGc => "early-tombstone-gc",
            PlantedBug::MerkleForgetsKey => "merkle-forget-key",
        }
    }

    /// The bug named `name` (as in `capdial sim --bug NAME`), if it is an eventual one.
    pub fn from_name(name: &str) -> Option<PlantedBug> {
        PlantedBug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}
