//! Log replication: the leader's sends and acks (with pipelining and back-off), the
//! follower's log-matching check, heartbeats and the commit rule.

use super::config::PlantedBug;
use super::membership::quorum_index;
use super::message::{AppendOutcome, Entry, RaftMessage};
use super::node::RaftNode;
use super::progress::{Progress, ProgressState};
use super::ready::Role;
use crate::types::{LogIndex, NodeId, Term};

/// Appends sent to one follower per flush; with the in-flight window this bounds a flush.
const APPENDS_PER_FLUSH_MAX: usize = 64;

impl RaftNode {
    /// Leader: sends what each follower can take now, a read round if one is wanted, and
    /// the new commit index. Called at `ready`, so proposals made since the last `ready`
    /// share appends.
    pub(crate) fn flush(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let peers: Vec<NodeId> = self
            .leader_state
            .as_ref()
            .map(|l| l.progress.keys().copied().collect())
            .unwrap_or_default();
        for peer in peers {
            if !self.send_appends(peer) {
                self.send_commit(peer);
            }
        }
        if self
            .leader_state
            .as_ref()
            .is_some_and(|l| l.reads.round_wanted)
        {
            self.broadcast_heartbeat();
        }
    }

    /// Sends as many appends to `peer` as its state and window allow. Returns whether any
    /// was sent.
    pub(crate) fn send_appends(&mut self, peer: NodeId) -> bool {
        let window = self.config.max_inflight_appends;
        let mut sent = false;
        for _ in 0..APPENDS_PER_FLUSH_MAX {
            let Some(progress) = self
                .leader_state
                .as_ref()
                .and_then(|l| l.progress.get(&peer))
            else {
                break;
            };
            if !progress.can_send(window) {
                break;
            }
            let next = progress.next_index;
            let probing = matches!(progress.state, ProgressState::Probe { .. });
            if next > self.log.last_index() && !probing {
                break;
            }
            if !self.send_append_from(peer, next) {
                break;
            }
            sent = true;
            if probing {
                break;
            }
        }
        sent
    }

    /// One append to `peer` starting at `next`, or a switch to snapshot mode if the log
    /// no longer holds `next - 1`. Returns whether an append went out.
    fn send_append_from(&mut self, peer: NodeId, next: LogIndex) -> bool {
        let prev_index = LogIndex(next.0 - 1);
        let Some(prev_term) = self.log.term(prev_index) else {
            self.start_snapshot(peer);
            return false;
        };
        let entries = self.log.slice(
            next,
            self.log.last_index(),
            self.config.max_entries_bytes_per_append,
            usize::MAX,
        );
        let last = entries.last().map_or(prev_index, |e| e.index);
        let msg = RaftMessage::Append {
            term: self.term,
            prev_index,
            prev_term,
            entries,
            leader_commit: self.log.commit,
        };
        self.send(peer, msg);
        let commit = self.log.commit;
        let progress = self.progress_mut(peer).expect("peer has progress");
        progress.sent(last);
        progress.commit_sent = progress.commit_sent.max(commit.min(last));
        true
    }

    /// An empty append at the follower's match index, when that would teach it a higher
    /// commit index: uses no window slot and cannot be rejected (the follower holds that
    /// prefix).
    fn send_commit(&mut self, peer: NodeId) {
        let commit = self.log.commit;
        let Some(progress) = self.progress_mut(peer) else {
            return;
        };
        let prev_index = progress.match_index;
        let learns = commit.min(prev_index) > progress.commit_sent;
        let replicating = matches!(progress.state, ProgressState::Replicate { .. });
        if !learns || !replicating {
            return;
        }
        progress.commit_sent = commit.min(prev_index);
        let Some(prev_term) = self.log.term(prev_index) else {
            return;
        };
        let msg = RaftMessage::Append {
            term: self.term,
            prev_index,
            prev_term,
            entries: Vec::new(),
            leader_commit: commit,
        };
        self.send(peer, msg);
    }

    /// Leader: the highest index `peer` is known to hold (`None` on a follower, or for a
    /// node that is not a member). Operators and the shell use it to promote a learner only
    /// once it has caught up.
    pub fn match_index(&self, peer: NodeId) -> Option<LogIndex> {
        self.leader_state
            .as_ref()
            .and_then(|l| l.progress.get(&peer))
            .map(|progress| progress.match_index)
    }

    pub(crate) fn progress_mut(&mut self, peer: NodeId) -> Option<&mut Progress> {
        self.leader_state
            .as_mut()
            .and_then(|l| l.progress.get_mut(&peer))
    }

    /// Leader: the progress of a follower that just answered, marked active for CheckQuorum.
    /// `None` when this node no longer leads or `from` is not a member.
    pub(crate) fn progress_heard_from(&mut self, from: NodeId) -> Option<&mut Progress> {
        let progress = self.progress_mut(from)?;
        progress.recent_active = true;
        Some(progress)
    }

    /// Follower: the log-matching check, conflict truncation and commit (Raft Figure 2).
    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        mut prev_index: LogIndex,
        mut prev_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        self.follow(from);
        let original_prev = prev_index;
        let commit = self.log.commit;
        if prev_index < commit {
            // Everything up to our commit index matches every leader's log; skip it.
            entries.retain(|e| e.index > commit);
            prev_index = commit;
            prev_term = self
                .log
                .term(commit)
                .expect("the commit index is at or above the snapshot");
        }
        if self.log.term(prev_index) != Some(prev_term) {
            let outcome = self.reject_hint(original_prev);
            return self.send_after_persist(
                from,
                RaftMessage::AppendResponse {
                    term: self.term,
                    outcome,
                },
            );
        }
        if !entries_are_well_formed(prev_index, prev_term, self.term, &entries) {
            return;
        }
        let last_new = LogIndex(prev_index.0 + entries.len() as u64);
        if !self.append_as_follower(entries) {
            return;
        }
        self.log.commit_to(leader_commit.min(last_new));
        let outcome = AppendOutcome::Success {
            match_index: last_new,
        };
        self.send_after_persist(
            from,
            RaftMessage::AppendResponse {
                term: self.term,
                outcome,
            },
        );
    }

    /// Accepts `from` as leader of the current term.
    pub(crate) fn follow(&mut self, from: NodeId) {
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(self.term, Some(from));
        }
        self.leader_contact = Some(self.now);
        self.reset_election_deadline();
    }

    fn reject_hint(&self, rejected_prev: LogIndex) -> AppendOutcome {
        match self.log.term(rejected_prev) {
            Some(term) => AppendOutcome::Reject {
                rejected_prev,
                conflict_term: Some(term),
                hint_index: self.log.first_index_of_run(rejected_prev, term),
            },
            None => AppendOutcome::Reject {
                rejected_prev,
                conflict_term: None,
                hint_index: LogIndex(self.log.last_index().0 + 1),
            },
        }
    }

    /// Appends entries after the first conflict, truncating our suffix there. Returns
    /// false (changing nothing) if the leader would have us drop a committed entry.
    fn append_as_follower(&mut self, entries: Vec<Entry>) -> bool {
        let conflict = entries
            .iter()
            .position(|e| self.log.term(e.index) != Some(e.term));
        let Some(start) = conflict else { return true };
        let first_new = entries[start].index;
        if first_new <= self.log.commit {
            return false;
        }
        if first_new <= self.log.last_index() {
            self.log.truncate_from(first_new);
            self.members.truncate_from(first_new);
        }
        for entry in entries.into_iter().skip(start) {
            self.record_membership(&entry);
            self.log.push(entry);
        }
        true
    }

    fn record_membership(&mut self, entry: &Entry) {
        if let super::message::EntryKind::Membership { config, .. } = &entry.kind {
            // The leader's configuration, as is; an ill-formed one (a broken peer) is
            // ignored rather than obeyed or panicked on.
            if config.is_well_formed() {
                self.members.push(entry.index, config.clone());
            }
        }
    }

    /// Leader: a follower answered an append.
    pub(crate) fn handle_append_response(&mut self, from: NodeId, outcome: AppendOutcome) {
        if self.role != Role::Leader {
            return;
        }
        let next_guess = match outcome {
            AppendOutcome::Reject {
                conflict_term: Some(term),
                hint_index,
                ..
            } => self
                .log
                .last_index_of_term(term)
                .map_or(hint_index, |i| LogIndex(i.0 + 1)),
            AppendOutcome::Reject { hint_index, .. } => hint_index,
            AppendOutcome::Success { .. } => LogIndex(0),
        };
        let last = self.log.last_index();
        let next_guess = next_guess.min(LogIndex(last.0 + 1));
        let Some(progress) = self.progress_heard_from(from) else {
            return;
        };
        match outcome {
            AppendOutcome::Success { match_index } => {
                // A follower cannot match beyond our log; a claim that it does is malformed.
                if progress.update_match(match_index.min(last)) {
                    self.maybe_commit();
                }
            }
            AppendOutcome::Reject { rejected_prev, .. } => {
                progress.back_off(rejected_prev, next_guess);
            }
        }
    }

    /// Leader: raises the commit index to what a quorum of voters holds, counting only
    /// entries of the current term (Raft §5.4.2; Figure 8).
    pub(crate) fn maybe_commit(&mut self) {
        let Some(leader) = self.leader_state.as_ref() else {
            return;
        };
        let members = self.members.current();
        let matches: Vec<LogIndex> = members
            .voters
            .iter()
            .map(|v| {
                if *v == self.id {
                    self.log.stable_last()
                } else {
                    leader
                        .progress
                        .get(v)
                        .map_or(LogIndex(0), |p| p.match_index)
                }
            })
            .collect();
        if matches.is_empty() {
            return;
        }
        let index = quorum_index(matches, members.quorum());
        let counts = self.log.term(index) == Some(self.term)
            || self.has_bug(PlantedBug::CommitOldTermByCounting);
        if index > self.log.commit && counts && self.log.commit_to(index) {
            self.on_leader_commit();
        }
    }

    fn on_leader_commit(&mut self) {
        self.release_reads_waiting_for_commit();
        let removed = !self.members.current().is_voter(self.id);
        if removed && self.log.commit >= self.members.current_index() {
            // Our removal is committed: lead no more (thesis §4.2.2).
            self.become_follower(self.term, None);
        }
    }

    /// Leader: a heartbeat round, numbered for reads and leases.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        let now = self.now;
        let commit = self.log.commit;
        let term = self.term;
        let leader = self
            .leader_state
            .as_mut()
            .expect("only a leader sends heartbeats");
        let seq = leader.reads.start_round(now);
        let targets: Vec<(NodeId, LogIndex)> = leader
            .progress
            .iter()
            .map(|(id, p)| (*id, p.match_index.min(commit)))
            .collect();
        for (peer, commit) in targets {
            self.send(peer, RaftMessage::Heartbeat { term, commit, seq });
        }
        self.confirm_reads();
    }

    /// Follower: a heartbeat from the leader of our term.
    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, commit: LogIndex, seq: u64) {
        self.follow(from);
        self.log.commit_to(commit);
        self.send(
            from,
            RaftMessage::HeartbeatResponse {
                term: self.term,
                seq,
            },
        );
    }

    /// Leader: a heartbeat answer. Confirms reads, extends the lease, unblocks replication.
    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, seq: u64) {
        if self.role != Role::Leader {
            return;
        }
        let window = self.config.max_inflight_appends;
        let last = self.log.last_index();
        let Some(progress) = self.progress_heard_from(from) else {
            return;
        };
        progress.acked_seq = progress.acked_seq.max(seq);
        progress.heartbeat_acked(window);
        let behind = progress.match_index < last;
        let replicating = matches!(progress.state, ProgressState::Replicate { .. });
        if behind && replicating && progress.next_index > last {
            // Everything was sent but not all acknowledged: an append may be lost. Probe at
            // the end; a rejection sends us back to probing from the match index.
            let next = progress.next_index;
            self.send_append_from(from, next);
        }
        self.confirm_reads();
    }
}

/// What a correct leader sends: consecutive indexes after `prev_index`, terms from
/// `prev_term` up to the leader's own term, never decreasing. Anything else is dropped rather
/// than allowed to break the log's invariants.
fn entries_are_well_formed(
    prev_index: LogIndex,
    prev_term: Term,
    leader_term: Term,
    entries: &[Entry],
) -> bool {
    let mut term = prev_term;
    for (expected, entry) in (prev_index.0 + 1..).zip(entries) {
        if entry.index.0 != expected || entry.term < term || entry.term > leader_term {
            return false;
        }
        term = entry.term;
    }
    true
}
