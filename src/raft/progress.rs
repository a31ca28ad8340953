//! The leader's view of each follower: how much of the log matches, what to send next, and
//! how many appends are in flight (etcd's `tracker/`).

use super::message::SnapshotMeta;
use crate::types::LogIndex;
use bytes::Bytes;
use std::collections::VecDeque;

/// How the leader is replicating to one follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// Looking for the point where the logs match: one append at a time. `paused` after a
    /// probe is sent, until an answer or a heartbeat response.
    Probe { paused: bool },
    /// The logs match up to `match_index`: appends are pipelined. `inflight` holds the last
    /// index of each unacknowledged append, oldest first; its length is bounded by
    /// `max_inflight_appends`.
    Replicate { inflight: VecDeque<LogIndex> },
    /// The follower needs the snapshot `meta`, sent one chunk at a time: the next starts at
    /// byte `offset` of the stream, read from the source at `cursor`. `sent` is the chunk in
    /// flight: the offset after it and the cursor of the one after (`None` after the last).
    Snapshot {
        meta: SnapshotMeta,
        offset: u64,
        cursor: Bytes,
        sent: Option<(u64, Option<Bytes>)>,
    },
}

/// Invariant: `match_index < next_index`.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) state: ProgressState,
    /// Heard from since the last CheckQuorum round.
    pub(crate) recent_active: bool,
    /// The highest heartbeat round this follower acknowledged in this leadership.
    pub(crate) acked_seq: u64,
    /// The highest commit index this follower can have learned from what we sent.
    pub(crate) commit_sent: LogIndex,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index,
            state: ProgressState::Probe { paused: false },
            recent_active: true,
            acked_seq: 0,
            commit_sent: LogIndex(0),
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.next_index = LogIndex(self.match_index.0 + 1);
        self.state = ProgressState::Probe { paused: false };
    }

    pub(crate) fn become_replicate(&mut self) {
        self.next_index = LogIndex(self.match_index.0 + 1);
        self.state = ProgressState::Replicate {
            inflight: VecDeque::new(),
        };
    }

    /// Records an acknowledged match. Returns whether it moved forward.
    pub(crate) fn update_match(&mut self, index: LogIndex) -> bool {
        let moved = index > self.match_index;
        if moved {
            self.match_index = index;
        }
        if self.next_index <= self.match_index {
            self.next_index = LogIndex(self.match_index.0 + 1);
        }
        match &mut self.state {
            // A probe answered at (or beyond) the match point: the logs match, pipeline.
            ProgressState::Probe { .. } if index >= self.match_index => self.become_replicate(),
            ProgressState::Probe { .. } => {}
            ProgressState::Replicate { inflight } => {
                while inflight.front().is_some_and(|last| *last <= index) {
                    inflight.pop_front();
                }
            }
            ProgressState::Snapshot { .. } => {}
        }
        moved
    }

    /// Backs off after a rejection at `rejected_prev`; `next` is the leader's guess from the
    /// hints. Returns false for a stale rejection (one that says nothing new).
    pub(crate) fn back_off(&mut self, rejected_prev: LogIndex, next: LogIndex) -> bool {
        match &self.state {
            ProgressState::Replicate { .. } if rejected_prev <= self.match_index => return false,
            ProgressState::Probe { .. } if LogIndex(rejected_prev.0 + 1) != self.next_index => {
                return false;
            }
            ProgressState::Snapshot { .. } => return false,
            _ => {}
        }
        let floor = LogIndex(self.match_index.0 + 1);
        let next = next.min(rejected_prev).max(floor);
        self.state = ProgressState::Probe { paused: false };
        self.next_index = next;
        true
    }

    /// Whether a new append may be sent now.
    pub(crate) fn can_send(&self, window: usize) -> bool {
        match &self.state {
            ProgressState::Probe { paused } => !paused,
            ProgressState::Replicate { inflight } => inflight.len() < window,
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// An append ending at `last` was sent.
    pub(crate) fn sent(&mut self, last: LogIndex) {
        match &mut self.state {
            ProgressState::Probe { paused } => *paused = true,
            ProgressState::Replicate { inflight } => {
                if last >= self.next_index {
                    inflight.push_back(last);
                    self.next_index = LogIndex(last.0 + 1);
                }
            }
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// A heartbeat answer arrived: unblock a stalled probe, free one slot of a full window
    /// (an append may have been lost).
    pub(crate) fn heartbeat_acked(&mut self, window: usize) {
        match &mut self.state {
            ProgressState::Probe { paused } => *paused = false,
            ProgressState::Replicate { inflight } if inflight.len() >= window => {
                inflight.pop_front();
            }
            _ => {}
        }
    }
}
