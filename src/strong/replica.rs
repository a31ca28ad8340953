//! One replica of a strong keyspace: the Raft core, the strong state machine, and the client
//! requests waiting on them. Sans-IO like the core: time comes in as a parameter, nothing
//! is persisted or sent from here. The deterministic simulator and the networked node both
//! drive this one type, so the simulator checks the code users run.
//!
//! # Calling protocol
//!
//! ```text
//! boot(config, durable image, rng_seed, now)             (at start and after every crash)
//! loop:
//!     handle_message(now, envelope) | handle_timeout(now) when poll_timeout() is due
//!     | submit(now, wall, proposal, tag, request) | read(now, tag, level, key)
//!     while let Some(ready) = take_ready():
//!         send ready.raft.messages (may go at once)
//!         persist ready.raft (snapshot chunks and meta, entries, hard state) and
//!             ready.machine (the machine's writes) together (fsync if ready.must_sync())
//!         send ready.raft.persisted_messages (only after the persist is durable)
//!         let done = on_persisted(ready)
//!         persist done.compacted if any; hand done.replies to their clients
//! ```
//!
//! `take_ready` hands out one [`ReplicaReady`] at a time: it returns `None` until that one
//! came back through `on_persisted`. Persist-before-send: see
//! [the Ready contract](crate::raft#the-ready-contract).
//!
//! The machine's keys live in the [`MachineStore`] the replica is booted on; the shell
//! commits each `ReplicaReady`'s machine writes into it (and nothing else does). Compaction
//! needs no copy of the state: once the machine's writes up to an index are durable the log
//! up to it may go, and a follower the log no longer reaches is sent a snapshot streamed from
//! an image of the store.
//!
//! Every client request carries a caller-chosen `tag` (a client and attempt in the
//! simulator, a reply channel in the node) and ends in exactly one [`Completion`] with that
//! tag: returned at once by `submit`/`read`, or later in [`Applied::replies`]. A crash drops
//! the replica and with it every waiting tag: their outcome is unknown to the client.

use crate::raft::{
    Config, ConfigError, Entry, EntryKind, Envelope, HardState, ProposalId, ProposeError,
    RaftMessage, RaftNode, ReadError, ReadId, Ready, RestoredState, Role, SnapshotChunk,
    SnapshotMeta, Status,
};
use crate::strong::store::{ImageChunk, MachineStore, MachineWrites, StagedChunk, StoreError};
use crate::strong::{
    ApplyError, CommandError, MachineConfig, MalformedEntry, Outcome, ReadFailure, Request,
    StrongMachine, Versioned,
};
use crate::types::{GroupId, Instant, LogIndex, NodeId, WallMillis};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;

/// At most this many reads wait for the machine to apply up to their index. Reads waiting
/// for their read index are bounded by the core (`Config::max_pending_reads`), proposals by
/// `Config::max_uncommitted_entries`; lease reads skip the core's queue, so this bounds them.
pub const CONFIRMED_READS_MAX: usize = 65_536;

/// How a replica is built.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// The Raft core's configuration.
    pub raft: Config,
    /// The state machine's configuration.
    pub machine: MachineConfig,
    /// Take a snapshot (and compact the log) once this many entries are applied past the
    /// last snapshot. At least 1.
    pub compact_every: u64,
}

/// What survived of the log: exactly what earlier `Ready`s and [`Applied::compacted`] made
/// durable. (The machine's state is in the [`MachineStore`].)
#[derive(Clone, Debug, Default)]
pub struct DurableState {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// The meta of the last persisted snapshot or compaction: the log starts after it.
    pub snapshot: Option<SnapshotMeta>,
    /// Persisted entries after the snapshot, consecutive.
    pub entries: Vec<Entry>,
}

/// Why a replica could not be built from its durable image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The machine's store cannot be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store's machine is behind the log's start: entries it needs are gone.
    #[error("the machine is applied to {applied}, behind the log's start after {snapshot}")]
    Behind {
        /// The store's applied index.
        applied: u64,
        /// The durable snapshot's index.
        snapshot: u64,
    },
    /// The core refused the configuration or the durable image.
    #[error(transparent)]
    Core(#[from] ConfigError),
}

/// Something the core handed over that breaks the replica's invariants: a bug in the core or
/// corrupt durable data. The replica skips the offending item and keeps going; the shell
/// decides (the simulator records a violation, a node should stop).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyFault {
    /// A committed entry arrived out of order; it and the rest of its batch were not applied.
    #[error("committed entry {got} handed out, expected {expected}")]
    OutOfOrder {
        /// The entry's index.
        got: u64,
        /// The index the machine needed next.
        expected: u64,
    },
    /// A staged snapshot chunk does not decode (the replica checks chunks as they arrive, so
    /// this is a bug).
    #[error("snapshot chunk does not decode: {0}")]
    SnapshotDecode(#[source] crate::wire::DecodeError),
    /// An installed snapshot does not match its index or is behind the machine.
    #[error("snapshot at {index} holds state applied to {state}, machine already at {machine}")]
    SnapshotMismatch {
        /// The snapshot's log index.
        index: u64,
        /// The index its machine state is applied to.
        state: u64,
        /// The machine's applied index.
        machine: u64,
    },
    /// A committed entry is not a request (it was applied as a no-op).
    #[error(transparent)]
    Malformed(#[from] MalformedEntry),
    /// The machine's storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ApplyError> for ApplyFault {
    fn from(error: ApplyError) -> ApplyFault {
        match error {
            ApplyError::Malformed(error) => ApplyFault::Malformed(error),
            ApplyError::Store(error) => ApplyFault::Store(error),
        }
    }
}

/// One batch of work for the shell: the Raft core's `Ready` (if it had one) and what the
/// machine asks to make durable with it. Persist both in one transaction.
#[derive(Debug)]
#[must_use = "a ReplicaReady must be persisted, sent, and handed back to on_persisted"]
pub struct ReplicaReady {
    id: u64,
    /// The core's work.
    pub raft: Option<Ready>,
    /// The machine's writes (and the snapshot chunks to stage, decoded).
    pub machine: MachineWrites,
}

impl ReplicaReady {
    /// Whether the persist must be fsynced.
    pub fn must_sync(&self) -> bool {
        self.raft.as_ref().is_some_and(|ready| ready.must_sync)
    }
}

/// How a replica serves a read of a strong keyspace. Not the user-facing
/// [`ReadLevel`](crate::protocol::ReadLevel): the node maps that one's first four
/// levels to these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex on the leader: a heartbeat round confirms leadership.
    Linearizable,
    /// The leader's lease, without a round trip.
    Lease,
    /// A follower asks the leader for a read index, then serves locally.
    Follower,
    /// Whatever this replica has applied.
    Stale,
}

/// How a client request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Certainly not in the log through this request (not the leader, no quorum, too many
    /// uncommitted entries); `leader_hint` says where the leader may be.
    Refused {
        /// The leader this replica knows of.
        leader_hint: Option<NodeId>,
    },
    /// Too many reads waiting here; retry later. Nothing was started.
    Busy,
    /// The request does not encode (it cannot be in the log).
    Unencodable,
    /// The proposal was dropped before commit: it may or may not commit.
    Unknown,
    /// The write committed and applied; the machine's result (a retry gets the first one).
    Written(Result<Outcome, CommandError>),
    /// A read: the key as of `applied`.
    Read {
        /// The key's value, if present.
        current: Option<Versioned>,
        /// The index the machine was applied to when it served the read.
        applied: LogIndex,
    },
}

/// The end of one client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion<T> {
    /// The caller's tag from `submit` or `read`.
    pub tag: T,
    /// How it ended.
    pub answer: Answer,
}

/// What `on_persisted` did.
#[derive(Debug)]
pub struct Applied<T> {
    /// Client requests that ended.
    pub replies: Vec<Completion<T>>,
    /// The committed entries applied, in order (for checkers and metrics).
    pub entries: Vec<Entry>,
    /// What those entries changed, in order (for watches). After an installed snapshot, only
    /// the changes of entries applied after it.
    pub changes: Vec<crate::strong::machine::Change>,
    /// Anything that broke the replica's invariants.
    pub faults: Vec<ApplyFault>,
    /// A compaction to persist: its meta replaces the durable snapshot's, and durable
    /// entries at or below its index may go (the machine's state up to it is durable).
    pub compacted: Option<SnapshotMeta>,
}

/// A read waiting inside the replica.
#[derive(Debug)]
struct Waiter<T> {
    tag: T,
    key: Bytes,
}

/// One replica of a strong keyspace. See the module docs for the calling protocol.
#[derive(Debug)]
pub struct Replica<T> {
    core: RaftNode,
    machine: StrongMachine,
    compact_every: u64,
    /// The index of the newest snapshot made durable (installed or compacted).
    snapshot_index: LogIndex,
    /// Writes proposed here, by the log index each took. One proposal per index: a later
    /// proposal at the same index means the earlier entry was overwritten.
    proposals: BTreeMap<LogIndex, (ProposalId, T)>,
    /// Completions decided outside `on_persisted` (a proposal whose index was reused),
    /// handed out by the next `on_persisted`.
    orphans: Vec<Completion<T>>,
    /// Reads waiting for their read index.
    reads: BTreeMap<ReadId, Waiter<T>>,
    /// Reads with a read index, waiting for the machine to apply up to it.
    confirmed: Vec<(LogIndex, Waiter<T>)>,
    /// Faults met outside `on_persisted` (a read the store failed), reported by the next.
    faults: Vec<ApplyFault>,
    /// The `ReplicaReady` handed out and not yet back through `on_persisted`.
    outstanding: Option<u64>,
    next_ready: u64,
    next_read: u64,
}

impl<T> Replica<T> {
    /// Builds a replica from its durable log image (`DurableState::default()` for a fresh
    /// one) and the state `store` holds for `group`. `now` starts the core's timers;
    /// `rng_seed` drives its random choices.
    pub fn boot(
        config: ReplicaConfig,
        durable: DurableState,
        store: Arc<dyn MachineStore>,
        group: GroupId,
        rng_seed: u64,
        now: Instant,
    ) -> Result<Replica<T>, BootError> {
        assert!(config.compact_every >= 1, "compact_every is at least 1");
        let machine = StrongMachine::open(config.machine, group, store)?;
        let snapshot_index = durable
            .snapshot
            .as_ref()
            .map_or(LogIndex(0), |snapshot| snapshot.index);
        if machine.applied() < snapshot_index {
            return Err(BootError::Behind {
                applied: machine.applied().0,
                snapshot: snapshot_index.0,
            });
        }
        let restored = RestoredState {
            hard_state: durable.hard_state,
            snapshot: durable.snapshot,
            entries: durable.entries,
            applied: machine.applied(),
        };
        let core = RaftNode::new(config.raft, restored, rng_seed, now)?;
        Ok(Replica {
            core,
            machine,
            compact_every: config.compact_every,
            snapshot_index,
            proposals: BTreeMap::new(),
            orphans: Vec::new(),
            reads: BTreeMap::new(),
            confirmed: Vec::new(),
            faults: Vec::new(),
            outstanding: None,
            next_ready: 0,
            next_read: 0,
        })
    }

    /// The core's status.
    pub fn status(&self) -> Status {
        self.core.status()
    }

    /// The Raft core, for inspection (terms, entries).
    pub fn raft(&self) -> &RaftNode {
        &self.core
    }

    /// The Raft core, for what the replica does not wrap (membership changes). Do not call
    /// `ready`, `advance` or `report_applied` on it: the replica does.
    pub fn raft_mut(&mut self) -> &mut RaftNode {
        &mut self.core
    }

    /// The state machine, for inspection.
    pub fn machine(&self) -> &StrongMachine {
        &self.machine
    }

    /// Feeds a message from a peer. A snapshot chunk that is not a chunk of this machine's
    /// image at its meta's index is dropped here, before the core could stage it.
    pub fn handle_message(&mut self, now: Instant, envelope: Envelope) {
        if let RaftMessage::InstallSnapshot { meta, data, .. } = &envelope.msg
            && decode_chunk(data).is_none_or(|chunk| chunk.applied != meta.index)
        {
            return;
        }
        self.core.handle_message(now, envelope);
    }

    /// Runs the core's timers; call when `poll_timeout` is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }

    /// When `handle_timeout` is next due.
    #[must_use = "the shell must arm a timer for handle_timeout"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Proposes a client write (or a read through the log). `proposal` must be unique among
    /// every proposal the group ever sees (across nodes and restarts): a committed entry with
    /// this id completes `tag`. Returns the log index the proposal took; refused at once
    /// (`Err`) when it cannot enter the log here. The entry carries `wall`, this node's wall
    /// clock, as the request's `proposed_at`: only a leader's proposal enters the log, so the
    /// machines' log clock is made of leaders' clocks.
    pub fn submit(
        &mut self,
        now: Instant,
        wall: WallMillis,
        proposal: ProposalId,
        tag: T,
        request: &Request,
    ) -> Result<LogIndex, Completion<T>> {
        let stamped = Request {
            proposed_at: wall,
            ..request.clone()
        };
        let Ok(bytes) = stamped.encode() else {
            return Err(Completion {
                tag,
                answer: Answer::Unencodable,
            });
        };
        match self.core.propose(now, proposal, bytes) {
            Ok(index) => {
                if let Some((_, stale)) = self.proposals.insert(index, (proposal, tag)) {
                    // Its entry was overwritten before this node reported it.
                    let answer = Answer::Unknown;
                    self.orphans.push(Completion { tag: stale, answer });
                }
                Ok(index)
            }
            Err(ProposeError::NotLeader { leader_hint }) => Err(Completion {
                tag,
                answer: Answer::Refused { leader_hint },
            }),
            Err(_) => Err(Completion {
                tag,
                answer: Answer::Refused { leader_hint: None },
            }),
        }
    }

    /// Starts a read of `key` at `level`. Returns the completion when there is nothing to
    /// wait for (a stale read, or a refusal); otherwise it comes from a later `on_persisted`.
    pub fn read(
        &mut self,
        now: Instant,
        tag: T,
        level: ReadMode,
        key: Bytes,
    ) -> Option<Completion<T>> {
        let waiter = Waiter { tag, key };
        let answer = match level {
            ReadMode::Stale => self.read_now(&waiter.key),
            ReadMode::Lease if self.confirmed.len() >= CONFIRMED_READS_MAX => Answer::Busy,
            ReadMode::Lease => match self.core.lease_read(now) {
                // Already applied: serve now rather than at the next `on_persisted`, which
                // on an idle group is the next heartbeat away.
                Ok(index) if index <= self.machine.applied() => self.read_now(&waiter.key),
                Ok(index) => {
                    self.confirmed.push((index, waiter));
                    return None;
                }
                Err(error) => refused(error),
            },
            ReadMode::Linearizable | ReadMode::Follower => {
                let status = self.core.status();
                if level == ReadMode::Linearizable && status.role != Role::Leader {
                    Answer::Refused {
                        leader_hint: status.leader,
                    }
                } else {
                    self.next_read += 1;
                    let read = ReadId(self.next_read);
                    match self.core.read_index(now, read) {
                        Ok(()) => {
                            self.reads.insert(read, waiter);
                            return None;
                        }
                        Err(error) => refused(error),
                    }
                }
            }
        };
        Some(Completion {
            tag: waiter.tag,
            answer,
        })
    }

    /// The next batch of work, if any (see the module docs). `None` while an earlier one
    /// has not come back through `on_persisted`.
    #[must_use = "until it comes back through on_persisted, no other ReplicaReady is produced"]
    pub fn take_ready(&mut self) -> Option<ReplicaReady> {
        if self.outstanding.is_some() {
            return None;
        }
        // The store holds exactly the machine's durable state now (no writes in flight).
        if self.core.snapshot_wanted() {
            match self.machine.image() {
                Ok(image) => self.core.set_snapshot_source(image),
                Err(error) => self.faults.push(ApplyFault::Store(error)),
            }
        }
        let raft = self.core.ready();
        let mut machine = self.machine.take_writes();
        if let Some(ready) = &raft {
            machine.install = ready.snapshot.is_some();
            for chunk in &ready.snapshot_chunks {
                match stage(chunk) {
                    Ok(staged) => machine.staged.push(staged),
                    // Checked on arrival (`handle_message`): not reached.
                    Err(fault) => self.faults.push(fault),
                }
            }
        }
        if raft.is_none() && machine.is_empty() {
            return None;
        }
        self.next_ready += 1;
        self.outstanding = Some(self.next_ready);
        Some(ReplicaReady {
            id: self.next_ready,
            raft,
            machine,
        })
    }

    /// The shell made `ready`'s persist durable and sent its messages: install its snapshot,
    /// apply its committed entries, serve the reads they unblock, report dropped requests,
    /// advance the core, and compact when due.
    pub fn on_persisted(&mut self, ready: ReplicaReady) -> Applied<T> {
        assert_eq!(
            self.outstanding.take(),
            Some(ready.id),
            "on_persisted takes back the ReplicaReady that take_ready handed out"
        );
        self.machine.writes_persisted();
        let mut done = Applied {
            replies: std::mem::take(&mut self.orphans),
            entries: Vec::new(),
            changes: Vec::new(),
            faults: std::mem::take(&mut self.faults),
            compacted: None,
        };
        if let Some(ready) = ready.raft {
            self.raft_persisted(ready, &mut done);
        }
        self.serve_confirmed(&mut done.replies);
        done.changes = self.machine.take_changes();
        done.compacted = self.maybe_compact();
        done
    }

    fn raft_persisted(&mut self, ready: Ready, done: &mut Applied<T>) {
        done.entries.reserve(ready.committed.len());
        if let Some(meta) = &ready.snapshot {
            self.snapshot_index = meta.index;
            if let Err(fault) = self.install(meta) {
                done.faults.push(fault);
            }
            // Whatever was proposed up to the snapshot is inside it or was overwritten.
            self.take_proposal(meta.index, None, &mut done.replies);
        }
        for entry in ready.committed {
            if let Err(fault) = self.apply_entry(&entry, &mut done.replies) {
                done.faults.push(fault);
                if matches!(done.faults.last(), Some(ApplyFault::OutOfOrder { .. })) {
                    break;
                }
            }
            done.entries.push(entry);
        }
        self.settle_reads(&ready.read_states, &ready.dropped_reads, &mut done.replies);
        self.drop_proposals(&ready.dropped_proposals, &mut done.replies);
        self.core.advance(ready.id);
    }

    /// Moves confirmed reads to wait for the machine; refuses dropped ones.
    fn settle_reads(
        &mut self,
        read_states: &[crate::raft::ReadState],
        dropped: &[(ReadId, ReadError)],
        replies: &mut Vec<Completion<T>>,
    ) {
        for read in read_states {
            if let Some(waiter) = self.reads.remove(&read.id) {
                self.confirmed.push((read.index, waiter));
            }
        }
        for (read, error) in dropped {
            if let Some(waiter) = self.reads.remove(read) {
                let leader_hint = match error {
                    ReadError::NotLeader { leader_hint } => *leader_hint,
                    _ => None,
                };
                let answer = Answer::Refused { leader_hint };
                replies.push(Completion {
                    tag: waiter.tag,
                    answer,
                });
            }
        }
    }

    fn read_now(&mut self, key: &Bytes) -> Answer {
        match self.machine.read(key) {
            Ok(current) => Answer::Read {
                current,
                applied: self.machine.applied(),
            },
            Err(ReadFailure::Command(error)) => Answer::Written(Err(error)),
            Err(ReadFailure::Store(error)) => {
                self.faults.push(ApplyFault::Store(error));
                Answer::Refused { leader_hint: None }
            }
        }
    }

    /// A page of a scan of what this replica has applied, outside the log (a stale read). A
    /// storage failure is reported with the next `on_persisted` and refuses the scan.
    pub fn scan_now(&mut self, prefix: &[u8], after: Option<&[u8]>, limit: u32) -> Answer {
        match self.machine.scan(prefix, after, limit) {
            Ok((entries, more)) => Answer::Written(Ok(Outcome::Scan { entries, more })),
            Err(ReadFailure::Command(error)) => Answer::Written(Err(error)),
            Err(ReadFailure::Store(error)) => {
                self.faults.push(ApplyFault::Store(error));
                Answer::Refused { leader_hint: None }
            }
        }
    }

    /// Serves every confirmed read whose index the machine has reached.
    fn serve_confirmed(&mut self, replies: &mut Vec<Completion<T>>) {
        let applied = self.machine.applied();
        let confirmed = std::mem::take(&mut self.confirmed);
        for (index, waiter) in confirmed {
            if index <= applied {
                let answer = self.read_now(&waiter.key);
                replies.push(Completion {
                    tag: waiter.tag,
                    answer,
                });
            } else {
                self.confirmed.push((index, waiter));
            }
        }
    }

    /// The staged snapshot replaced the machine's state in the store: take it up.
    fn install(&mut self, meta: &SnapshotMeta) -> Result<(), ApplyFault> {
        let before = self.machine.applied();
        self.machine.reload()?;
        if self.machine.applied() != meta.index || meta.index < before {
            return Err(ApplyFault::SnapshotMismatch {
                index: meta.index.0,
                state: self.machine.applied().0,
                machine: before.0,
            });
        }
        self.core.report_applied(self.machine.applied());
        Ok(())
    }

    /// Applies one committed entry and completes the proposal waiting on it, if any.
    fn apply_entry(
        &mut self,
        entry: &Entry,
        replies: &mut Vec<Completion<T>>,
    ) -> Result<(), ApplyFault> {
        let expected = LogIndex(self.machine.applied().0 + 1);
        if entry.index != expected {
            return Err(ApplyFault::OutOfOrder {
                got: entry.index.0,
                expected: expected.0,
            });
        }
        let mut outcome = Ok(());
        match &entry.kind {
            EntryKind::Normal { proposal, command } => {
                let response = self.machine.apply(entry.index, command);
                let waiter = self.take_proposal(entry.index, Some(*proposal), replies);
                match (response, waiter) {
                    (Ok(response), Some(tag)) => {
                        let answer = Answer::Written(response.result);
                        replies.push(Completion { tag, answer });
                    }
                    (Err(error), waiter) => {
                        // The request's outcome here is unknown: the node stops on the fault.
                        if let Some(tag) = waiter {
                            let answer = Answer::Unknown;
                            replies.push(Completion { tag, answer });
                        }
                        outcome = Err(error.into());
                    }
                    (Ok(_), None) => {}
                }
            }
            EntryKind::Noop | EntryKind::Membership { .. } => {
                self.take_proposal(entry.index, None, replies);
                self.machine.skip(entry.index);
            }
        }
        self.core.report_applied(entry.index);
        outcome
    }

    /// The log at `index` is settled (applied, or inside a snapshot) and holds `proposal`:
    /// takes its waiter if it was proposed here. Proposals waiting at or below `index` under
    /// another id were overwritten without a report from the core; they end as `Unknown`
    /// (never `Refused`: the shell cannot tell whether a retry of theirs got in elsewhere).
    fn take_proposal(
        &mut self,
        index: LogIndex,
        proposal: Option<ProposalId>,
        replies: &mut Vec<Completion<T>>,
    ) -> Option<T> {
        while let Some(waiting) = self.proposals.first_entry() {
            if *waiting.key() > index {
                break;
            }
            let at = *waiting.key();
            let (id, tag) = waiting.remove();
            if at == index && Some(id) == proposal {
                return Some(tag);
            }
            let answer = Answer::Unknown;
            replies.push(Completion { tag, answer });
        }
        None
    }

    /// The core will no longer report on these proposals: they may or may not commit.
    fn drop_proposals(
        &mut self,
        dropped: &[(ProposalId, ProposeError)],
        replies: &mut Vec<Completion<T>>,
    ) {
        for (proposal, error) in dropped {
            let index = match error {
                ProposeError::LeadershipLost { index } => Some(*index),
                _ => None,
            };
            // The core names the index; fall back to a search if it ever does not.
            let index = index
                .filter(|at| self.proposals.get(at).is_some_and(|(id, _)| id == proposal))
                .or_else(|| {
                    let mut waiting = self.proposals.iter();
                    waiting
                        .find(|(_, (id, _))| id == proposal)
                        .map(|(at, _)| *at)
                });
            if let Some((_, tag)) = index.and_then(|at| self.proposals.remove(&at)) {
                let answer = Answer::Unknown;
                replies.push(Completion { tag, answer });
            }
        }
    }

    /// Compacts the log once the machine's durable state is `compact_every` entries past the
    /// last snapshot. Nothing is copied: a follower the log no longer reaches is sent an
    /// image of the store, opened when the core asks for one.
    fn maybe_compact(&mut self) -> Option<SnapshotMeta> {
        let durable = self.machine.durable_applied();
        if durable.0 < self.snapshot_index.0 + self.compact_every {
            return None;
        }
        // The core may refuse (the durable state is ahead of what it reported applied, after
        // a restart); the next `on_persisted` tries again.
        let meta = self.core.compact(durable).ok()?;
        self.snapshot_index = meta.index;
        Some(meta)
    }
}

/// A snapshot chunk's data as this machine's image chunk, if it is one.
fn decode_chunk(data: &[u8]) -> Option<ImageChunk> {
    crate::wire::unframed::decode_bounded::<ImageChunk>(data).ok()
}

/// A chunk the core accepted, decoded for the store to stage.
fn stage(chunk: &SnapshotChunk) -> Result<StagedChunk, ApplyFault> {
    let decoded = crate::wire::unframed::decode_bounded::<ImageChunk>(&chunk.data)
        .map_err(ApplyFault::SnapshotDecode)?;
    Ok(StagedChunk {
        restart: chunk.offset == 0,
        chunk: decoded,
    })
}

fn refused(error: ReadError) -> Answer {
    match error {
        ReadError::NotLeader { leader_hint } => Answer::Refused { leader_hint },
        _ => Answer::Refused { leader_hint: None },
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
