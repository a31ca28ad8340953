//! [`RaftNode`]: the state, the constructor and the public calls. The protocol logic lives in
//! `election.rs`, `replication.rs`, `snapshot.rs` and `reads.rs`.

use super::config::{Config, PlantedBug};
use super::error::{CompactError, ConfigError, ProposeError, ReadError};
use super::log::RaftLog;
use super::membership::MembershipLog;
use super::message::{
    Entry, EntryKind, Envelope, HardState, Membership, MembershipChange, ProposalId, RaftMessage,
    ReadId, SnapshotChunk, SnapshotMeta,
};
use super::progress::Progress;
use super::read::ReadTracker;
use super::ready::{ReadState, Ready, ReadyId, RestoredState, Role, StaleStatus, Status};
use super::snapshot::{IncomingSnapshot, SnapshotSource};
use crate::types::{Instant, LogIndex, NodeId, Term};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// What the node has produced for the next [`Ready`].
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) messages: Vec<Envelope>,
    pub(crate) persisted_messages: Vec<Envelope>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) dropped_proposals: Vec<(ProposalId, ProposeError)>,
    pub(crate) dropped_reads: Vec<(ReadId, ReadError)>,
    /// A snapshot whose last chunk arrived: the shell installs what it staged.
    pub(crate) snapshot: Option<SnapshotMeta>,
    pub(crate) snapshot_chunks: Vec<SnapshotChunk>,
}

/// State only a leader has. Dropped when it steps down.
#[derive(Debug)]
pub(crate) struct LeaderState {
    /// One entry per member except the leader itself.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    pub(crate) heartbeat_at: Instant,
    pub(crate) check_quorum_at: Instant,
    pub(crate) reads: ReadTracker,
}

/// A read a follower forwarded to its leader.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteRead {
    pub(crate) id: ReadId,
    pub(crate) deadline: Instant,
}

/// What the outstanding `Ready` handed out, to settle on `advance`.
#[derive(Debug)]
pub(crate) struct InflightReady {
    id: ReadyId,
    snapshot_index: Option<LogIndex>,
}

/// One node's Raft core. See the module docs for the calling protocol.
#[derive(Debug)]
pub struct RaftNode {
    pub(crate) config: Config,
    pub(crate) id: NodeId,
    pub(crate) rng: ChaCha8Rng,
    /// The latest time any call passed in (never decreases).
    pub(crate) now: Instant,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) log: RaftLog,
    pub(crate) members: MembershipLog,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    /// What the shell reported applied. `applied <= handed_commit <= log.commit`.
    pub(crate) applied: LogIndex,
    /// The last committed index handed out in `Ready::committed` (or covered by a snapshot).
    pub(crate) handed_commit: LogIndex,
    pub(crate) election_deadline: Instant,
    /// A candidate re-sends unanswered vote requests at this time.
    pub(crate) vote_retry_at: Instant,
    /// When a follower last heard from its leader in the current term.
    pub(crate) leader_contact: Option<Instant>,
    /// After a restart the node refuses votes until here: it may have promised a leader a
    /// lease before the crash and forgotten it.
    pub(crate) vote_blackout_until: Instant,
    /// Votes received in the current (pre-)election, granted or not.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) leader_state: Option<LeaderState>,
    pub(crate) remote_reads: VecDeque<RemoteRead>,
    pub(crate) incoming_snapshot: Option<IncomingSnapshot>,
    /// The shell's image of its applied state, to send to followers the log no longer
    /// reaches (see [`RaftNode::set_snapshot_source`]).
    pub(crate) snapshot_source: Option<std::sync::Arc<dyn SnapshotSource>>,
    /// A follower needs a snapshot and there is no image to send it from.
    pub(crate) snapshot_wanted: bool,
    /// The hard state as last handed out in a `Ready`.
    pub(crate) handed_hard_state: HardState,
    pub(crate) outbox: Outbox,
    pub(crate) ready_seq: u64,
    pub(crate) inflight_ready: Option<InflightReady>,
}

impl RaftNode {
    /// Builds a node from its configuration and what was durable at (re)start. `now` starts
    /// the timers; `rng_seed` drives every random choice (election timeouts).
    pub fn new(
        config: Config,
        restored: RestoredState,
        rng_seed: u64,
        now: Instant,
    ) -> Result<RaftNode, ConfigError> {
        config.validate()?;
        let (log, members) = restore_log(&config, &restored)?;
        let applied = restored.applied.max(log.snapshot_index()).min(log.commit);
        let mut node = RaftNode {
            id: config.id,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            now,
            term: restored.hard_state.term,
            vote: restored.hard_state.vote,
            log,
            members,
            role: Role::Follower,
            leader: None,
            applied,
            handed_commit: applied,
            election_deadline: now,
            vote_retry_at: now,
            leader_contact: None,
            vote_blackout_until: if config.has_bug(PlantedBug::VoteWithoutPersist) {
                now
            } else {
                now + config.election_timeout
            },
            votes: BTreeMap::new(),
            leader_state: None,
            remote_reads: VecDeque::new(),
            incoming_snapshot: None,
            snapshot_source: None,
            snapshot_wanted: false,
            handed_hard_state: restored.hard_state,
            outbox: Outbox::default(),
            ready_seq: 0,
            inflight_ready: None,
            config,
        };
        node.reset_election_deadline();
        node.check_invariants();
        Ok(node)
    }

    /// Feeds one message from a peer. Malformed or stale messages are ignored.
    pub fn handle_message(&mut self, now: Instant, envelope: Envelope) {
        self.observe(now);
        if envelope.to != self.id || envelope.from == self.id || !envelope.msg.is_sane() {
            return;
        }
        self.step(envelope.from, envelope.msg);
        self.check_invariants();
    }

    /// Fires whatever timers are due at `now`: elections, heartbeats, CheckQuorum, follower
    /// read expiry. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        self.expire_remote_reads();
        if self.role == Role::Leader {
            self.leader_tick();
        } else if self.now >= self.election_deadline {
            self.election_timeout_fired();
        } else if self.role == Role::Candidate && self.now >= self.vote_retry_at {
            self.request_votes();
        }
        self.check_invariants();
    }

    /// When `handle_timeout` is next due. Always `Some` (some timer is always armed).
    #[must_use = "the shell must arm a timer for handle_timeout"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = match &self.leader_state {
            Some(leader) => {
                let mut at = leader.heartbeat_at;
                if self.config.check_quorum {
                    at = at.min(leader.check_quorum_at);
                }
                at
            }
            None if self.role == Role::Candidate => self.election_deadline.min(self.vote_retry_at),
            None => self.election_deadline,
        };
        let read = self.remote_reads.iter().map(|r| r.deadline).min();
        Some(read.map_or(timer, |r| r.min(timer)))
    }

    /// Appends a client command. Only the leader accepts; the entry is sent at the next
    /// `ready`, batched with every other proposal made since.
    pub fn propose(
        &mut self,
        now: Instant,
        id: ProposalId,
        command: Bytes,
    ) -> Result<LogIndex, ProposeError> {
        self.observe(now);
        self.check_can_propose()?;
        Ok(self.append_entry(EntryKind::Normal {
            proposal: id,
            command,
        }))
    }

    /// Proposes one single-server membership change. Refused while another change is
    /// uncommitted or before the leader has committed an entry of its own term.
    pub fn propose_membership(
        &mut self,
        now: Instant,
        change: MembershipChange,
    ) -> Result<LogIndex, ProposeError> {
        self.observe(now);
        self.check_can_propose()?;
        if !self.committed_in_term() || self.members.current_index() > self.log.commit {
            return Err(ProposeError::MembershipChangePending);
        }
        let config = self.members.current().apply(change)?;
        Ok(self.append_entry(EntryKind::Membership { change, config }))
    }

    /// A linearizable read: on the leader, starts (or joins) a heartbeat round; on a
    /// follower, asks the leader. The answer comes as a `ReadState` in a later `Ready`
    /// (or in `dropped_reads`). Serve it once applied >= its index.
    pub fn read_index(&mut self, now: Instant, id: ReadId) -> Result<(), ReadError> {
        self.observe(now);
        self.request_read(id)
    }

    /// A lease read on the leader: returns the index to wait for (applied >= it), with no
    /// round trip, while the lease holds.
    pub fn lease_read(&mut self, now: Instant) -> Result<LogIndex, ReadError> {
        self.observe(now);
        self.check_lease()
    }

    /// What a stale read sees and how far behind it may be.
    pub fn stale_read_status(&self) -> StaleStatus {
        StaleStatus {
            applied: self.applied,
            known_commit: self.log.commit,
            behind: self.log.commit.0 - self.applied.0,
        }
    }

    /// The shell applied committed entries up to `index` (clamped to what was handed out).
    pub fn report_applied(&mut self, index: LogIndex) {
        let index = index.min(self.handed_commit);
        if index > self.applied {
            self.applied = index;
        }
    }

    /// The shell's applied state up to `index` is durable without the log: the core drops
    /// its log up to `index`. Returns the snapshot's metadata, which the shell persists before
    /// it may delete its durable entries up to `index`. To serve followers the log no longer
    /// reaches, the shell also offers an image of its state ([`RaftNode::set_snapshot_source`]).
    pub fn compact(&mut self, index: LogIndex) -> Result<SnapshotMeta, CompactError> {
        if index > self.applied {
            return Err(CompactError::NotApplied {
                index,
                applied: self.applied,
            });
        }
        if index <= self.log.snapshot_index() {
            return Err(CompactError::AlreadyCompacted {
                index,
                snapshot: self.log.snapshot_index(),
            });
        }
        let term = self
            .log
            .term(index)
            .expect("an applied index above the snapshot is in the log");
        let meta = SnapshotMeta {
            index,
            term,
            membership: self.members.at(index).clone(),
        };
        self.log.compact(index);
        self.members.compact(index);
        Ok(meta)
    }

    /// Whether a leader needs an image of the applied state to send a follower the log no
    /// longer reaches: the shell answers with [`RaftNode::set_snapshot_source`].
    pub fn snapshot_wanted(&self) -> bool {
        self.snapshot_wanted
    }

    /// The image of the applied state a leader reads snapshots from, replacing the previous
    /// one (a follower being sent the old one starts over with this). It serves only while
    /// its index is between the log's start and the commit index; the core lets it go once
    /// no follower is being sent it.
    pub fn set_snapshot_source(&mut self, source: std::sync::Arc<dyn SnapshotSource>) {
        self.snapshot_source = Some(source);
        self.snapshot_wanted = false;
        if self.role == Role::Leader {
            self.start_wanted_snapshots();
        }
    }

    /// The next batch of work, or `None` if there is none or the previous `Ready` was not
    /// advanced yet.
    #[must_use = "until it is advanced, no other Ready is produced"]
    pub fn ready(&mut self) -> Option<Ready> {
        if self.inflight_ready.is_some() {
            return None;
        }
        self.flush();
        let ready = self.collect_ready();
        self.check_invariants();
        ready
    }

    /// The shell finished the `Ready` with this id (persisted, sent, applied as it chose).
    pub fn advance(&mut self, done: ReadyId) {
        let inflight = self
            .inflight_ready
            .take()
            .expect("advance needs an outstanding Ready");
        assert_eq!(inflight.id, done, "advance must name the outstanding Ready");
        self.log.mark_handed_stable();
        if let Some(index) = inflight.snapshot_index {
            self.applied = self.applied.max(index.min(self.handed_commit));
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
        self.check_invariants();
    }

    /// The node's current state.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.commit,
            applied: self.applied,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            snapshot_index: self.log.snapshot_index(),
            membership: self.members.current().clone(),
        }
    }

    /// The term of the entry at `index`, if the log still holds it (for checkers).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }

    /// The entry at `index`, if the log still holds it (for checkers).
    pub fn entry_at(&self, index: LogIndex) -> Option<&Entry> {
        self.log.get(index)
    }

    pub(crate) fn observe(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    pub(crate) fn has_bug(&self, bug: PlantedBug) -> bool {
        self.config.has_bug(bug)
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        }
    }

    pub(crate) fn committed_in_term(&self) -> bool {
        self.log.term(self.log.commit) == Some(self.term)
    }

    pub(crate) fn random_election_timeout(&mut self) -> Duration {
        let base = self.config.election_timeout;
        let nanos = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX);
        base + Duration::from_nanos(self.rng.random_range(0..nanos.max(1)))
    }

    pub(crate) fn reset_election_deadline(&mut self) {
        let timeout = self.random_election_timeout();
        self.election_deadline = self.now + timeout;
    }

    pub(crate) fn send(&mut self, to: NodeId, msg: RaftMessage) {
        self.outbox.messages.push(Envelope {
            from: self.id,
            to,
            msg,
        });
    }

    pub(crate) fn send_after_persist(&mut self, to: NodeId, msg: RaftMessage) {
        self.outbox.persisted_messages.push(Envelope {
            from: self.id,
            to,
            msg,
        });
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        let pending = self.log.last_index().0 - self.log.commit.0;
        let pending_max = self.config.max_uncommitted_entries;
        if pending >= pending_max {
            return Err(ProposeError::Backpressure {
                pending,
                pending_max,
            });
        }
        Ok(())
    }

    /// Appends an entry as leader; membership entries take effect at once.
    pub(crate) fn append_entry(&mut self, kind: EntryKind) -> LogIndex {
        let index = LogIndex(self.log.last_index().0 + 1);
        if let EntryKind::Membership { config, .. } = &kind {
            self.members.push(index, config.clone());
            self.sync_progress();
        }
        self.log.push(Entry {
            term: self.term,
            index,
            kind,
        });
        index
    }

    fn collect_ready(&mut self) -> Option<Ready> {
        let hard_state = self.hard_state_to_persist();
        let hard_state_changed = hard_state != self.handed_hard_state;
        let snapshot = self.outbox.snapshot.take();
        let snapshot_chunks = std::mem::take(&mut self.outbox.snapshot_chunks);
        let entries = self.log.take_unhanded();
        let committed = self.take_committed();
        // Staged chunks need no fsync: a crash forgets the transfer, which starts over. The
        // install does.
        let must_sync = !entries.is_empty()
            || snapshot.is_some()
            || hard_state.term != self.handed_hard_state.term
            || hard_state.vote != self.handed_hard_state.vote;
        let outbox = std::mem::take(&mut self.outbox);
        let empty = !hard_state_changed
            && snapshot.is_none()
            && snapshot_chunks.is_empty()
            && entries.is_empty()
            && committed.is_empty()
            && outbox.messages.is_empty()
            && outbox.persisted_messages.is_empty()
            && outbox.read_states.is_empty()
            && outbox.dropped_proposals.is_empty()
            && outbox.dropped_reads.is_empty();
        if empty {
            return None;
        }
        self.ready_seq += 1;
        let id = ReadyId(self.ready_seq);
        let snapshot_index = snapshot.as_ref().map(|meta| meta.index);
        self.inflight_ready = Some(InflightReady { id, snapshot_index });
        self.handed_hard_state = hard_state;
        Some(Ready {
            id,
            hard_state: hard_state_changed.then_some(hard_state),
            snapshot,
            snapshot_chunks,
            entries,
            must_sync,
            messages: outbox.messages,
            persisted_messages: outbox.persisted_messages,
            committed,
            read_states: outbox.read_states,
            dropped_proposals: outbox.dropped_proposals,
            dropped_reads: outbox.dropped_reads,
        })
    }

    /// The hard state as the shell should persist it. With the planted
    /// `VoteWithoutPersist` bug the vote is left out, so a crash forgets it.
    fn hard_state_to_persist(&self) -> HardState {
        let mut hard_state = self.hard_state();
        if self.has_bug(PlantedBug::VoteWithoutPersist) {
            hard_state.vote = if self.handed_hard_state.term == self.term {
                self.handed_hard_state.vote
            } else {
                None
            };
        }
        hard_state
    }

    fn take_committed(&mut self) -> Vec<Entry> {
        let from = LogIndex(self.handed_commit.0 + 1);
        if from > self.log.commit {
            return Vec::new();
        }
        let out = self.log.slice(
            from,
            self.log.commit,
            u64::MAX,
            self.config.max_committed_per_ready,
        );
        if let Some(last) = out.last() {
            self.handed_commit = last.index;
        }
        out
    }

    /// Local invariants; cheap, so they run after every call in debug builds.
    pub(crate) fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        assert!(
            self.log.commit <= self.log.last_index(),
            "commit beyond the log"
        );
        assert!(
            self.applied <= self.handed_commit,
            "applied beyond what was handed out"
        );
        assert!(
            self.handed_commit <= self.log.commit,
            "handed out uncommitted entries"
        );
        assert!(
            self.log.snapshot_index() <= self.log.commit,
            "snapshot beyond commit"
        );
        assert_eq!(
            self.role == Role::Leader,
            self.leader_state.is_some(),
            "leader state iff leader"
        );
        if self.role == Role::Leader {
            assert_eq!(self.leader, Some(self.id), "a leader knows it leads");
            assert_eq!(self.vote, Some(self.id), "a leader voted for itself");
        }
    }
}

/// Rebuilds the log and the membership history from the durable image.
fn restore_log(
    config: &Config,
    restored: &RestoredState,
) -> Result<(RaftLog, MembershipLog), ConfigError> {
    let (base_index, base_term, base_members) = match &restored.snapshot {
        Some(meta) => (meta.index, meta.term, meta.membership.clone()),
        None => {
            // No voters: a node joining a running group, which learns the configuration
            // from its leader's appends or snapshot and never campaigns before.
            let voters: BTreeSet<NodeId> = config.voters.iter().copied().collect();
            (
                LogIndex(0),
                Term(0),
                Membership {
                    voters,
                    learners: BTreeSet::new(),
                },
            )
        }
    };
    let mut members = MembershipLog::new(base_index, base_members);
    let mut entries: Vec<Entry> = Vec::new();
    let after_base = restored.entries.iter().filter(|e| e.index > base_index);
    for (expected, entry) in (base_index.0 + 1..).zip(after_base) {
        let previous_term = entries.last().map_or(base_term, |p| p.term);
        if entry.index.0 != expected || entry.term < previous_term {
            return Err(ConfigError::RestoredLogGap { index: entry.index });
        }
        if let EntryKind::Membership { config, .. } = &entry.kind {
            if !config.is_well_formed() {
                return Err(ConfigError::RestoredMembership { index: entry.index });
            }
            members.push(entry.index, config.clone());
        }
        entries.push(entry.clone());
    }
    let mut log = RaftLog::restored(base_index, base_term, entries);
    let last = log.last_index();
    // What the shell applied was committed, whether or not a later hard state said so.
    let commit = restored.hard_state.commit.max(restored.applied.min(last));
    if commit > last {
        return Err(ConfigError::RestoredIndex {
            what: "commit",
            index: commit,
            last,
        });
    }
    log.commit_to(commit);
    Ok((log, members))
}
