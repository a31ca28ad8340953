//! Terms, roles and elections: message dispatch, PreVote, RequestVote, becoming leader or
//! follower, and CheckQuorum.

use super::config::PlantedBug;
use super::error::{ProposeError, ReadError};
use super::message::{EntryKind, RaftMessage};
use super::node::{LeaderState, RaftNode};
use super::progress::Progress;
use super::read::ReadTracker;
use super::ready::Role;
use crate::types::{LogIndex, NodeId, Term};
use std::collections::BTreeMap;

impl RaftNode {
    /// Dispatches one message after the term checks of Raft §5.1.
    pub(crate) fn step(&mut self, from: NodeId, msg: RaftMessage) {
        let term = msg.term();
        match &msg {
            RaftMessage::PreVote {
                term,
                last_index,
                last_term,
            } => {
                return self.handle_pre_vote(from, *term, *last_index, *last_term);
            }
            RaftMessage::PreVoteResponse { term, granted } => {
                return self.handle_pre_vote_response(from, *term, *granted);
            }
            RaftMessage::Vote { .. } if term > self.term && self.in_lease() => return,
            _ => {}
        }
        if term > self.term {
            let leader = match msg {
                RaftMessage::Append { .. }
                | RaftMessage::Heartbeat { .. }
                | RaftMessage::InstallSnapshot { .. } => Some(from),
                _ => None,
            };
            self.become_follower(term, leader);
        }
        if term < self.term {
            return self.answer_stale(from, &msg);
        }
        self.dispatch(from, msg);
    }

    fn dispatch(&mut self, from: NodeId, msg: RaftMessage) {
        match msg {
            RaftMessage::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote(from, last_index, last_term),
            RaftMessage::VoteResponse { granted, .. } => self.handle_vote_response(from, granted),
            RaftMessage::Append {
                prev_index,
                prev_term,
                entries,
                leader_commit,
                ..
            } => self.handle_append(from, prev_index, prev_term, entries, leader_commit),
            RaftMessage::AppendResponse { outcome, .. } => {
                self.handle_append_response(from, outcome)
            }
            RaftMessage::Heartbeat { commit, seq, .. } => self.handle_heartbeat(from, commit, seq),
            RaftMessage::HeartbeatResponse { seq, .. } => self.handle_heartbeat_response(from, seq),
            RaftMessage::InstallSnapshot {
                meta,
                offset,
                data,
                last,
                ..
            } => self.handle_snapshot_chunk(from, meta, offset, data, last),
            RaftMessage::SnapshotResponse {
                snapshot_index,
                next_offset,
                done,
                ..
            } => self.handle_snapshot_response(from, snapshot_index, next_offset, done),
            RaftMessage::ReadIndex { id, .. } => self.handle_remote_read(from, id),
            RaftMessage::ReadIndexResponse { id, index, .. } => {
                self.handle_read_index_response(id, index)
            }
            RaftMessage::PreVote { .. } | RaftMessage::PreVoteResponse { .. } => {}
        }
    }

    /// A message from an older term: tell a stale leader or candidate our term so it steps
    /// down; ignore the rest.
    fn answer_stale(&mut self, from: NodeId, msg: &RaftMessage) {
        let term = self.term;
        match msg {
            RaftMessage::Append { .. }
            | RaftMessage::Heartbeat { .. }
            | RaftMessage::InstallSnapshot { .. } => {
                self.send(from, RaftMessage::HeartbeatResponse { term, seq: 0 });
            }
            RaftMessage::Vote { .. } => self.send(
                from,
                RaftMessage::VoteResponse {
                    term,
                    granted: false,
                },
            ),
            RaftMessage::ReadIndex { id, .. } => {
                self.send(
                    from,
                    RaftMessage::ReadIndexResponse {
                        term,
                        id: *id,
                        index: None,
                    },
                );
            }
            _ => {}
        }
    }

    /// Whether this node believes a leader is alive: it leads, or heard from its leader
    /// within the (minimum) election timeout, or it restarted less than that ago. Such a
    /// node refuses to help elect anyone else: this is what leases rely on (thesis §4.2.3).
    pub(crate) fn in_lease(&self) -> bool {
        if self.role == Role::Leader || self.now < self.vote_blackout_until {
            return true;
        }
        let timeout = self.config.election_timeout;
        self.leader.is_some()
            && self
                .leader_contact
                .is_some_and(|at| self.now - at < timeout)
    }

    fn handle_pre_vote(&mut self, from: NodeId, term: Term, last_index: LogIndex, last_term: Term) {
        let granted =
            term > self.term && !self.in_lease() && self.log.is_up_to_date(last_term, last_index);
        let reply_term = if granted { term } else { self.term };
        self.send(
            from,
            RaftMessage::PreVoteResponse {
                term: reply_term,
                granted,
            },
        );
    }

    fn handle_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        if !granted && term > self.term {
            return self.become_follower(term, None);
        }
        if self.role != Role::PreCandidate || term != Term(self.term.0 + 1) {
            return;
        }
        self.votes.insert(from, granted);
        match self.tally() {
            Some(true) => self.campaign(),
            Some(false) => self.become_follower(self.term, None),
            None => {}
        }
    }

    fn handle_vote(&mut self, from: NodeId, last_index: LogIndex, last_term: Term) {
        let free = self.vote.is_none_or(|v| v == from) && self.leader.is_none();
        let granted = free && self.log.is_up_to_date(last_term, last_index);
        let reply = RaftMessage::VoteResponse {
            term: self.term,
            granted,
        };
        if !granted {
            return self.send(from, reply);
        }
        self.vote = Some(from);
        self.reset_election_deadline();
        if self.has_bug(PlantedBug::VoteWithoutPersist) {
            self.send(from, reply);
        } else {
            self.send_after_persist(from, reply);
        }
    }

    fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        if self.role != Role::Candidate {
            return;
        }
        self.votes.insert(from, granted);
        match self.tally() {
            Some(true) => self.become_leader(),
            Some(false) => self.become_follower(self.term, None),
            None => {}
        }
    }

    /// `Some(true)` once a quorum of voters granted, `Some(false)` once a quorum refused.
    fn tally(&self) -> Option<bool> {
        let members = self.members.current();
        let count = |want: bool| {
            members
                .voters
                .iter()
                .filter(|v| self.votes.get(v) == Some(&want))
                .count()
        };
        if count(true) >= members.quorum() {
            Some(true)
        } else if count(false) >= members.quorum() {
            Some(false)
        } else {
            None
        }
    }

    /// The election timer fired on a follower or candidate.
    pub(crate) fn election_timeout_fired(&mut self) {
        self.reset_election_deadline();
        if !self.members.current().is_voter(self.id) {
            return;
        }
        if self.config.pre_vote {
            self.pre_campaign();
        } else {
            self.campaign();
        }
    }

    fn pre_campaign(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes = BTreeMap::from([(self.id, true)]);
        if self.tally() == Some(true) {
            return self.campaign();
        }
        let msg = RaftMessage::PreVote {
            term: Term(self.term.0 + 1),
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
        };
        for voter in self.other_voters() {
            self.send(voter, msg.clone());
        }
    }

    /// Starts a real election: a new term, a vote for itself, vote requests that leave only
    /// after that vote is durable.
    pub(crate) fn campaign(&mut self) {
        self.term = Term(self.term.0 + 1);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.leader_contact = None;
        self.votes = BTreeMap::from([(self.id, true)]);
        self.reset_election_deadline();
        if self.tally() == Some(true) {
            return self.become_leader();
        }
        self.request_votes();
    }

    /// Asks every voter that has not answered yet. A candidate repeats this each heartbeat
    /// interval, so one lost request does not cost a whole election timeout. Requests are
    /// idempotent: a voter that already voted in this term answers the same way again.
    pub(crate) fn request_votes(&mut self) {
        self.vote_retry_at = self.now + self.config.heartbeat_interval;
        let msg = RaftMessage::Vote {
            term: self.term,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
        };
        for voter in self.other_voters() {
            if !self.votes.contains_key(&voter) {
                self.send_after_persist(voter, msg.clone());
            }
        }
    }

    pub(crate) fn other_voters(&self) -> Vec<NodeId> {
        self.members
            .current()
            .voters
            .iter()
            .copied()
            .filter(|v| *v != self.id)
            .collect()
    }

    /// Steps down (or stays) as follower of `term`, knowing `leader` if given.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(term >= self.term, "the term must never go backwards");
        // Clean up before raising the term: the cleanup reports the proposals of the term
        // this node led, and answers pending follower reads in that term.
        if self.role == Role::Leader {
            self.step_down_cleanup();
        }
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.leader_contact = leader.map(|_| self.now);
        self.votes.clear();
        self.reset_election_deadline();
    }

    /// Reports every uncommitted proposal of this leadership and every pending read as
    /// dropped, since this node will no longer see them through.
    fn step_down_cleanup(&mut self) {
        let state = self.leader_state.take().expect("a leader has leader state");
        self.snapshot_source = None;
        self.snapshot_wanted = false;
        let commit = self.log.commit;
        let term = self.term;
        for entry in self.log.iter_from(LogIndex(commit.0 + 1)) {
            if let (true, EntryKind::Normal { proposal, .. }) = (entry.term == term, &entry.kind) {
                let error = ProposeError::LeadershipLost { index: entry.index };
                self.outbox.dropped_proposals.push((*proposal, error));
            }
        }
        let reads = state.reads;
        let waiting = reads.pending.iter().map(|r| (r.id, r.from));
        for (id, from) in waiting.chain(reads.waiting_for_commit.iter().copied()) {
            match from {
                None => self
                    .outbox
                    .dropped_reads
                    .push((id, ReadError::LeadershipLost)),
                Some(peer) => self.send(
                    peer,
                    RaftMessage::ReadIndexResponse {
                        term,
                        id,
                        index: None,
                    },
                ),
            }
        }
    }

    pub(crate) fn become_leader(&mut self) {
        assert_eq!(
            self.vote,
            Some(self.id),
            "a leader must have voted for itself"
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        let now = self.now;
        self.leader_state = Some(LeaderState {
            progress: BTreeMap::new(),
            heartbeat_at: now + self.config.heartbeat_interval,
            check_quorum_at: now + self.config.election_timeout,
            reads: ReadTracker::new(),
        });
        self.sync_progress();
        // The no-op lets the leader commit its term's first entry, and with it everything
        // before (§5.4.2). The planted Figure 8 bug skips it so old-term entries get counted.
        if !self.has_bug(PlantedBug::CommitOldTermByCounting) {
            self.append_entry(EntryKind::Noop);
        }
        self.maybe_commit();
    }

    /// Makes the leader's progress map match the current membership.
    pub(crate) fn sync_progress(&mut self) {
        let next = LogIndex(self.log.last_index().0 + 1);
        let members: Vec<NodeId> = self
            .members
            .current()
            .members()
            .filter(|m| *m != self.id)
            .collect();
        let Some(leader) = self.leader_state.as_mut() else {
            return;
        };
        leader.progress.retain(|id, _| members.contains(id));
        for id in members {
            leader
                .progress
                .entry(id)
                .or_insert_with(|| Progress::new(next));
        }
    }

    /// Heartbeats and CheckQuorum, on the leader's timer.
    pub(crate) fn leader_tick(&mut self) {
        let now = self.now;
        let heartbeat_due = self
            .leader_state
            .as_ref()
            .is_some_and(|l| now >= l.heartbeat_at);
        if heartbeat_due {
            let interval = self.config.heartbeat_interval;
            if let Some(leader) = self.leader_state.as_mut() {
                leader.heartbeat_at = now + interval;
            }
            self.broadcast_heartbeat();
            self.resend_snapshot_chunks();
        }
        let check_due = self
            .leader_state
            .as_ref()
            .is_some_and(|l| now >= l.check_quorum_at);
        if self.config.check_quorum && check_due {
            self.check_quorum();
        }
    }

    /// Steps down unless a quorum of voters was heard from since the last check.
    fn check_quorum(&mut self) {
        let members = self.members.current().clone();
        let timeout = self.config.election_timeout;
        let now = self.now;
        let me = self.id;
        let leader = self
            .leader_state
            .as_mut()
            .expect("check_quorum runs on a leader");
        leader.check_quorum_at = now + timeout;
        let active = members
            .voters
            .iter()
            .filter(|v| **v == me || leader.progress.get(v).is_some_and(|p| p.recent_active))
            .count();
        for progress in leader.progress.values_mut() {
            progress.recent_active = false;
        }
        if active < members.quorum() {
            self.become_follower(self.term, None);
        }
    }
}
