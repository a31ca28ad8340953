//! The node's read paths: ReadIndex on the leader, follower reads forwarded to it, and
//! lease reads. The round bookkeeping is in `read.rs`.

use super::config::PlantedBug;
use super::error::ReadError;
use super::membership::quorum_index;
use super::message::{RaftMessage, ReadId};
use super::node::{RaftNode, RemoteRead};
use super::ready::{ReadState, Role};
use crate::types::{LogIndex, NodeId};

impl RaftNode {
    pub(crate) fn request_read(&mut self, id: ReadId) -> Result<(), ReadError> {
        let pending = self.pending_reads();
        let pending_max = self.config.max_pending_reads;
        if pending >= pending_max {
            return Err(ReadError::Backpressure {
                pending: pending as u64,
                pending_max: pending_max as u64,
            });
        }
        if self.role == Role::Leader {
            self.register_read(id, None);
            return Ok(());
        }
        let Some(leader) = self.leader else {
            return Err(ReadError::NoLeader);
        };
        let deadline = self.now + self.config.election_timeout;
        self.remote_reads.push_back(RemoteRead { id, deadline });
        self.send(
            leader,
            RaftMessage::ReadIndex {
                term: self.term,
                id,
            },
        );
        Ok(())
    }

    fn pending_reads(&self) -> usize {
        let leader = self.leader_state.as_ref().map_or(0, |l| l.reads.len());
        leader + self.remote_reads.len()
    }

    /// Leader: a read for the shell (`from == None`) or for a follower.
    fn register_read(&mut self, id: ReadId, from: Option<NodeId>) {
        let ready = self.committed_in_term();
        let commit = self.log.commit;
        let reads = &mut self
            .leader_state
            .as_mut()
            .expect("register_read runs on a leader")
            .reads;
        if ready {
            reads.register(id, from, commit);
        } else {
            // Our commit index may lag the last leader's until our no-op commits (§6.4).
            reads.waiting_for_commit.push_back((id, from));
        }
        self.confirm_reads();
    }

    /// Leader: a follower asks for a read index.
    pub(crate) fn handle_remote_read(&mut self, from: NodeId, id: ReadId) {
        let full = self.pending_reads() >= self.config.max_pending_reads;
        if self.role != Role::Leader || full {
            return self.send(
                from,
                RaftMessage::ReadIndexResponse {
                    term: self.term,
                    id,
                    index: None,
                },
            );
        }
        self.register_read(id, Some(from));
    }

    /// Follower: the leader answered a forwarded read.
    pub(crate) fn handle_read_index_response(&mut self, id: ReadId, index: Option<LogIndex>) {
        let Some(pos) = self.remote_reads.iter().position(|r| r.id == id) else {
            return;
        };
        self.remote_reads.remove(pos);
        match index {
            Some(index) => self.outbox.read_states.push(ReadState { id, index }),
            None => self
                .outbox
                .dropped_reads
                .push((id, super::error::ReadError::Refused)),
        }
    }

    /// Follower: forwarded reads that got no answer in time are dropped.
    pub(crate) fn expire_remote_reads(&mut self) {
        let now = self.now;
        while self.remote_reads.front().is_some_and(|r| r.deadline <= now) {
            let read = self.remote_reads.pop_front().expect("front checked above");
            self.outbox
                .dropped_reads
                .push((read.id, ReadError::Timeout));
        }
    }

    /// Leader: the first entry of the term committed; reads that waited for it get the
    /// commit index and join the next round.
    pub(crate) fn release_reads_waiting_for_commit(&mut self) {
        if !self.committed_in_term() {
            return;
        }
        let commit = self.log.commit;
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        let waiting: Vec<_> = leader.reads.waiting_for_commit.drain(..).collect();
        if waiting.is_empty() {
            return;
        }
        for (id, from) in waiting {
            leader.reads.register(id, from, commit);
        }
        self.confirm_reads();
    }

    /// Leader: confirms every read whose round a quorum acknowledged, and extends the lease.
    pub(crate) fn confirm_reads(&mut self) {
        let members = self.members.current().clone();
        let bug_no_round = self.has_bug(PlantedBug::ReadIndexWithoutHeartbeat);
        let sole_voter = members.voters.len() == 1 && members.is_voter(self.id);
        let lease = self.lease_duration();
        let now = self.now;
        let me = self.id;
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        let confirmed = if bug_no_round || sole_voter {
            if sole_voter {
                leader.reads.extend_lease(now + lease);
            }
            leader.reads.confirm_all()
        } else {
            let acked = members.voters.iter().map(|v| {
                let seq = if *v == me {
                    u64::MAX
                } else {
                    leader.progress.get(v).map_or(0, |p| p.acked_seq)
                };
                LogIndex(seq)
            });
            let quorum_seq = quorum_index(acked.collect(), members.quorum()).0;
            let newly_acked = quorum_seq > leader.reads.quorum_seq_seen && quorum_seq != u64::MAX;
            if self.config.has_bug(PlantedBug::LeaseIgnoresDrift) && newly_acked {
                leader
                    .reads
                    .extend_lease(now + 2 * self.config.election_timeout);
            }
            leader.reads.quorum_seq_seen = leader.reads.quorum_seq_seen.max(quorum_seq);
            leader.reads.confirm(quorum_seq, lease)
        };
        let term = self.term;
        for read in confirmed {
            match read.from {
                None => self.outbox.read_states.push(ReadState {
                    id: read.id,
                    index: read.index,
                }),
                Some(peer) => self.send(
                    peer,
                    RaftMessage::ReadIndexResponse {
                        term,
                        id: read.id,
                        index: Some(read.index),
                    },
                ),
            }
        }
    }

    /// How long a quorum-confirmed round keeps the lease, from its send time.
    fn lease_duration(&self) -> std::time::Duration {
        if self.has_bug(PlantedBug::LeaseIgnoresDrift) {
            // The planted bug extends from the ack's arrival instead (in `confirm_reads`).
            return std::time::Duration::ZERO;
        }
        self.config
            .election_timeout
            .saturating_sub(self.config.lease_drift_max)
    }

    /// Leader: the index a lease read must wait for, if the lease holds now.
    pub(crate) fn check_lease(&self) -> Result<LogIndex, ReadError> {
        let Some(leader) = self.leader_state.as_ref() else {
            return Err(ReadError::NotLeader {
                leader_hint: self.leader,
            });
        };
        if !self.config.check_quorum {
            return Err(ReadError::LeaseExpired);
        }
        if !self.committed_in_term() {
            return Err(ReadError::LeaderNotReady);
        }
        match leader.reads.lease_until {
            Some(until) if self.now < until => Ok(self.log.commit),
            _ => Err(ReadError::LeaseExpired),
        }
    }
}
