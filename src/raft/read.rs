//! ReadIndex rounds and the leader lease (thesis §6.4).
//!
//! Every heartbeat broadcast is a numbered round. A read registered while `next_seq` is `s`
//! is confirmed once a quorum of voters (the leader counting itself) acknowledged a round
//! numbered `>= s`: such a round was sent after the read arrived, so a quorum still
//! accepted this leader then. All reads waiting on the same round share it.
//!
//! The lease: when round `q` is quorum-acknowledged, the leader knows that a quorum heard
//! from it at or after `sent_at(q)`, and those voters refuse votes for `election_timeout`
//! after hearing from it (their own clocks). So no other leader can exist before
//! `sent_at(q) + election_timeout - lease_drift_max` on the leader's clock.

use super::message::ReadId;
use crate::types::{Instant, LogIndex, NodeId};
use std::collections::VecDeque;

/// Rounds whose send time is remembered; older ones cannot extend the lease.
pub(crate) const ROUNDS_TRACKED_MAX: usize = 256;

/// One read waiting for confirmation. `from` is `None` for a local read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingRead {
    pub(crate) id: ReadId,
    pub(crate) from: Option<NodeId>,
    pub(crate) index: LogIndex,
    pub(crate) round: u64,
}

/// The leader's ReadIndex state for one leadership.
#[derive(Debug, Default)]
pub(crate) struct ReadTracker {
    /// The number the next broadcast round carries. Starts at 1.
    pub(crate) next_seq: u64,
    /// A pending read waits for round `next_seq`: broadcast it at the next flush.
    pub(crate) round_wanted: bool,
    /// Recent rounds and when they were sent (the leader's clock), oldest first.
    sent: VecDeque<(u64, Instant)>,
    /// Reads with an index, waiting for their round; in registration order.
    pub(crate) pending: VecDeque<PendingRead>,
    /// Reads that arrived before the leader committed an entry of its term.
    pub(crate) waiting_for_commit: VecDeque<(ReadId, Option<NodeId>)>,
    /// The highest round a quorum has acknowledged so far.
    pub(crate) quorum_seq_seen: u64,
    /// The lease holds before this instant.
    pub(crate) lease_until: Option<Instant>,
}

impl ReadTracker {
    pub(crate) fn new() -> ReadTracker {
        ReadTracker {
            next_seq: 1,
            ..ReadTracker::default()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len() + self.waiting_for_commit.len()
    }

    /// Registers a read at `index`, to be confirmed by the next round.
    pub(crate) fn register(&mut self, id: ReadId, from: Option<NodeId>, index: LogIndex) {
        self.pending.push_back(PendingRead {
            id,
            from,
            index,
            round: self.next_seq,
        });
        self.round_wanted = true;
    }

    /// Starts a round sent at `now`; returns its number.
    pub(crate) fn start_round(&mut self, now: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.round_wanted = false;
        if self.sent.len() == ROUNDS_TRACKED_MAX {
            self.sent.pop_front();
        }
        self.sent.push_back((seq, now));
        seq
    }

    /// A quorum acknowledged rounds up to `quorum_seq`: returns the reads it confirms, and
    /// extends the lease by `lease` from the round's send time.
    pub(crate) fn confirm(
        &mut self,
        quorum_seq: u64,
        lease: std::time::Duration,
    ) -> Vec<PendingRead> {
        while self.sent.front().is_some_and(|(seq, _)| *seq < quorum_seq) {
            self.sent.pop_front();
        }
        if let Some((seq, sent_at)) = self.sent.front()
            && *seq == quorum_seq
        {
            self.extend_lease(*sent_at + lease);
        }
        let mut confirmed = Vec::new();
        while self
            .pending
            .front()
            .is_some_and(|read| read.round <= quorum_seq)
        {
            confirmed.push(self.pending.pop_front().expect("front checked above"));
        }
        confirmed
    }

    pub(crate) fn extend_lease(&mut self, until: Instant) {
        self.lease_until = Some(self.lease_until.map_or(until, |old| old.max(until)));
    }

    /// Confirms every pending read at once (a sole voter, or the planted bug).
    pub(crate) fn confirm_all(&mut self) -> Vec<PendingRead> {
        self.pending.drain(..).collect()
    }
}
