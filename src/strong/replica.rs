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
//!     | submit(now, proposal, tag, request) | read(now, tag, level, key)
//!     while let Some(ready) = take_ready():
//!         send ready.messages (may go at once)
//!         persist ready.snapshot / entries / hard_state (fsync if must_sync)
//!         send ready.persisted_messages (only after the persist is durable)
//!         let done = on_persisted(ready)
//!         persist done.compacted if any; hand done.replies to their clients
//! ```
//!
//! `take_ready` hands out one `Ready` at a time: it returns `None` until that `Ready` came
//! back through `on_persisted`. Persist-before-send: see
//! [the Ready contract](crate::raft#the-ready-contract).
//!
//! Every client request carries a caller-chosen `tag` (a client and attempt in the
//! simulator, a reply channel in the node) and ends in exactly one [`Completion`] with that
//! tag: returned at once by `submit`/`read`, or later in [`Applied::replies`]. A crash drops
//! the replica and with it every waiting tag: their outcome is unknown to the client.

use crate::raft::{
    Config, ConfigError, Entry, EntryKind, Envelope, HardState, ProposalId, ProposeError, RaftNode,
    ReadError, ReadId, Ready, ReadyId, RestoredState, Role, Snapshot, Status,
};
use crate::strong::{
    CommandError, MachineConfig, MachineSnapshot, MalformedEntry, Outcome, Request, StrongMachine,
    Versioned,
};
use crate::types::{Instant, LogIndex, NodeId};
use bytes::Bytes;
use std::collections::BTreeMap;

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

/// What survived: exactly what earlier `Ready`s and [`Applied::compacted`] made durable.
#[derive(Clone, Debug, Default)]
pub struct DurableState {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// The last persisted snapshot (its data is an encoded [`MachineSnapshot`]).
    pub snapshot: Option<Snapshot>,
    /// Persisted entries after the snapshot, consecutive.
    pub entries: Vec<Entry>,
}

/// Why a replica could not be built from its durable image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The durable snapshot's data is not a machine snapshot.
    #[error("the durable snapshot does not decode: {0}")]
    Snapshot(#[source] crate::wire::DecodeError),
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
    /// An installed snapshot's data does not decode; it was not installed.
    #[error("snapshot does not decode: {0}")]
    SnapshotDecode(#[source] crate::wire::DecodeError),
    /// An installed snapshot does not match its index or is behind the machine; it was not
    /// installed.
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
    /// Anything that broke the replica's invariants.
    pub faults: Vec<ApplyFault>,
    /// A new snapshot to persist: it replaces the durable snapshot, and durable entries at or
    /// below its index may go.
    pub compacted: Option<Snapshot>,
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
    machine_config: MachineConfig,
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
    /// The `Ready` handed out and not yet back through `on_persisted`.
    outstanding: Option<ReadyId>,
    next_read: u64,
}

impl<T> Replica<T> {
    /// Builds a replica from its durable image (`DurableState::default()` for a fresh one).
    /// `now` starts the core's timers; `rng_seed` drives its random choices.
    pub fn boot(
        config: ReplicaConfig,
        durable: DurableState,
        rng_seed: u64,
        now: Instant,
    ) -> Result<Replica<T>, BootError> {
        assert!(config.compact_every >= 1, "compact_every is at least 1");
        let machine = match &durable.snapshot {
            Some(snapshot) => {
                let state = crate::wire::unframed::decode::<MachineSnapshot>(&snapshot.data)
                    .map_err(BootError::Snapshot)?;
                StrongMachine::restore(config.machine.clone(), state)
            }
            None => StrongMachine::new(config.machine.clone()),
        };
        let snapshot_index = durable
            .snapshot
            .as_ref()
            .map_or(LogIndex(0), |snapshot| snapshot.meta.index);
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
            machine_config: config.machine,
            compact_every: config.compact_every,
            snapshot_index,
            proposals: BTreeMap::new(),
            orphans: Vec::new(),
            reads: BTreeMap::new(),
            confirmed: Vec::new(),
            outstanding: None,
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

    /// Feeds a message from a peer.
    pub fn handle_message(&mut self, now: Instant, envelope: Envelope) {
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
    /// (`Err`) when it cannot enter the log here.
    pub fn submit(
        &mut self,
        now: Instant,
        proposal: ProposalId,
        tag: T,
        request: &Request,
    ) -> Result<LogIndex, Completion<T>> {
        let Ok(bytes) = request.encode() else {
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
    #[must_use = "until it comes back through on_persisted, no other Ready is produced"]
    pub fn take_ready(&mut self) -> Option<Ready> {
        if self.outstanding.is_some() {
            return None;
        }
        let ready = self.core.ready()?;
        self.outstanding = Some(ready.id);
        Some(ready)
    }

    /// The shell made `ready`'s persist durable and sent its messages: install its snapshot,
    /// apply its committed entries, serve the reads they unblock, report dropped requests,
    /// advance the core, and compact when due.
    pub fn on_persisted(&mut self, ready: Ready) -> Applied<T> {
        assert_eq!(
            self.outstanding.take(),
            Some(ready.id),
            "on_persisted takes back the Ready that take_ready handed out"
        );
        let mut done = Applied {
            replies: std::mem::take(&mut self.orphans),
            entries: Vec::with_capacity(ready.committed.len()),
            faults: Vec::new(),
            compacted: None,
        };
        if let Some(snapshot) = &ready.snapshot {
            self.snapshot_index = snapshot.meta.index;
            if let Err(fault) = self.install(snapshot) {
                done.faults.push(fault);
            }
            // Whatever was proposed up to the snapshot is inside it or was overwritten.
            let index = snapshot.meta.index;
            self.take_proposal(index, None, &mut done.replies);
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
        self.serve_confirmed(&mut done.replies);
        self.core.advance(ready.id);
        done.compacted = self.maybe_compact();
        done
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

    fn read_now(&self, key: &Bytes) -> Answer {
        Answer::Read {
            current: self.machine.get(key).cloned(),
            applied: self.machine.applied(),
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

    /// Replaces the machine with a snapshot the leader sent.
    fn install(&mut self, snapshot: &Snapshot) -> Result<(), ApplyFault> {
        let state = crate::wire::unframed::decode::<MachineSnapshot>(&snapshot.data)
            .map_err(ApplyFault::SnapshotDecode)?;
        if state.applied != snapshot.meta.index || state.applied < self.machine.applied() {
            return Err(ApplyFault::SnapshotMismatch {
                index: snapshot.meta.index.0,
                state: state.applied.0,
                machine: self.machine.applied().0,
            });
        }
        self.machine = StrongMachine::restore(self.machine_config.clone(), state);
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
                    (Err(error), _) => outcome = Err(ApplyFault::Malformed(error)),
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

    /// Takes a snapshot once `compact_every` entries are applied past the last one.
    fn maybe_compact(&mut self) -> Option<Snapshot> {
        let applied = self.machine.applied();
        if applied.0 < self.snapshot_index.0 + self.compact_every {
            return None;
        }
        // Unframed: a snapshot may outgrow a network frame (the core sends it in chunks).
        let data = crate::wire::unframed::encode(&self.machine.snapshot())
            .expect("invariant: a machine snapshot (maps of bytes) always serializes");
        let data = Bytes::from(data);
        // The core may refuse (e.g. it is sending a snapshot from this point); the next
        // `on_persisted` tries again.
        let Ok(meta) = self.core.compact(applied, data.clone()) else {
            return None;
        };
        self.snapshot_index = meta.index;
        Some(Snapshot { meta, data })
    }
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
