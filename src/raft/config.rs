//! The core's configuration and the planted bugs the simulator can switch on.

use super::error::ConfigError;
use crate::types::NodeId;
use std::time::Duration;

/// Upper bound on `max_inflight_appends`: a window larger than this only buffers.
pub const INFLIGHT_APPENDS_MAX: usize = 1024;
/// Upper bound on a snapshot chunk, well under the wire's frame limit.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// Upper bound on one append's entry bytes, well under the wire's frame limit.
pub const ENTRIES_BYTES_PER_APPEND_MAX: u64 = 4 * 1024 * 1024;
const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX * 2 <= crate::wire::FRAME_BYTES_MAX);
const _: () = assert!(ENTRIES_BYTES_PER_APPEND_MAX as usize * 2 <= crate::wire::FRAME_BYTES_MAX);

/// Configuration of one node's Raft core. Build with [`Config::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// The initial voters, used only when the restored state holds no membership (no
    /// snapshot and no membership entry). Must include every node of a fresh cluster; empty
    /// for a node that joins a running group, which waits for its leader's configuration.
    pub voters: Vec<NodeId>,
    /// The base election timeout `t`; each wait is drawn uniformly from `[t, 2t)`. A follower
    /// that heard from its leader less than `t` ago refuses (pre-)votes, which is what makes
    /// leases safe.
    pub election_timeout: Duration,
    /// How often a leader sends heartbeats. Must be well under `election_timeout`.
    pub heartbeat_interval: Duration,
    /// The bound on clock drift between nodes over one election timeout. The lease lasts
    /// `election_timeout - lease_drift_max` from the moment its confirming round was sent.
    pub lease_drift_max: Duration,
    /// Appends in flight per follower before the leader waits for acks.
    pub max_inflight_appends: usize,
    /// Entry bytes per append message (at least one entry is always sent).
    pub max_entries_bytes_per_append: u64,
    /// Bytes per snapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// Uncommitted entries a leader accepts before `propose` returns `Backpressure`.
    pub max_uncommitted_entries: u64,
    /// Reads (local and forwarded) pending at once before `read_index` returns
    /// `Backpressure`.
    pub max_pending_reads: usize,
    /// Committed entries handed out per `Ready`.
    pub max_committed_per_ready: usize,
    /// Run a pre-vote round before a real election (thesis §9.6).
    pub pre_vote: bool,
    /// Leader steps down when it has not heard from a majority within an election timeout.
    /// Leases need it (`lease_read` fails without it).
    pub check_quorum: bool,
    /// A deliberately planted bug, for proving that the simulator catches it.
    #[cfg(feature = "sim-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

impl Config {
    /// Defaults suited to the simulator and to a LAN: 150 ms election timeout, 30 ms
    /// heartbeats, 15 ms drift bound, 64 appends in flight, 1 MiB appends, 64 KiB chunks.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            election_timeout: Duration::from_millis(150),
            heartbeat_interval: Duration::from_millis(30),
            lease_drift_max: Duration::from_millis(15),
            max_inflight_appends: 64,
            max_entries_bytes_per_append: 1024 * 1024,
            snapshot_chunk_bytes: 64 * 1024,
            max_uncommitted_entries: 100_000,
            max_pending_reads: 10_000,
            max_committed_per_ready: 16_384,
            pre_vote: true,
            check_quorum: true,
            #[cfg(feature = "sim-bugs")]
            planted_bug: None,
        }
    }

    /// Checks the relations between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.election_timeout {
            return Err(ConfigError::Timing {
                reason: "need 0 < heartbeat < election timeout",
            });
        }
        if self.lease_drift_max >= self.election_timeout {
            return Err(ConfigError::Timing {
                reason: "need drift bound < election timeout",
            });
        }
        let limits: [(&'static str, u64, u64); 6] = [
            (
                "max_inflight_appends",
                self.max_inflight_appends as u64,
                INFLIGHT_APPENDS_MAX as u64,
            ),
            (
                "max_entries_bytes_per_append",
                self.max_entries_bytes_per_append,
                ENTRIES_BYTES_PER_APPEND_MAX,
            ),
            (
                "snapshot_chunk_bytes",
                self.snapshot_chunk_bytes as u64,
                SNAPSHOT_CHUNK_BYTES_MAX as u64,
            ),
            (
                "max_uncommitted_entries",
                self.max_uncommitted_entries,
                u64::MAX,
            ),
            ("max_pending_reads", self.max_pending_reads as u64, u64::MAX),
            (
                "max_committed_per_ready",
                self.max_committed_per_ready as u64,
                u64::MAX,
            ),
        ];
        for (name, value, max) in limits {
            if value == 0 || value > max {
                return Err(ConfigError::Limit { name, value });
            }
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

/// Known Raft mistakes the simulator must catch. Only compiled in with `sim-bugs`; without
/// it the type still exists (so the core's checks compile) but cannot be configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Commit an entry of an earlier term by counting replicas (the Figure 8 mistake).
    CommitOldTermByCounting,
    /// Grant a vote without persisting it: the response goes out at once and the vote is
    /// missing from `hard_state`, so a crash forgets it. The restart blackout (a restarted
    /// node refuses votes for one election timeout) is volatile too, as a node that forgets
    /// its promises would have it: otherwise the blackout hides most re-votes after a crash.
    VoteWithoutPersist,
    /// Answer ReadIndex at once with the commit index, without a heartbeat round.
    ReadIndexWithoutHeartbeat,
    /// A lease that trusts the clocks and the timeouts too much: measured from when the
    /// quorum ack *arrived* (not when the round was sent), lasting the top of the randomized
    /// election timeout (`2t`) with no drift margin. Followers may elect a new leader `t`
    /// after they last heard from this one, so the old leader serves stale lease reads.
    LeaseIgnoresDrift,
}

impl PlantedBug {
    /// Parses the command-line name: `commit-old-term`, `vote-without-persist`,
    /// `read-index-no-heartbeat`, `lease-ignores-drift`.
    pub fn from_name(name: &str) -> Option<PlantedBug> {
        match name {
            "commit-old-term" => Some(PlantedBug::CommitOldTermByCounting),
            "vote-without-persist" => Some(PlantedBug::VoteWithoutPersist),
            "read-index-no-heartbeat" => Some(PlantedBug::ReadIndexWithoutHeartbeat),
            "lease-ignores-drift" => Some(PlantedBug::LeaseIgnoresDrift),
            _ => None,
        }
    }

    /// Every planted bug's command-line name.
    pub const NAMES: [&'static str; 4] = [
        "commit-old-term",
        "vote-without-persist",
        "read-index-no-heartbeat",
        "lease-ignores-drift",
    ];
}
