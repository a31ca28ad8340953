//! One simulated node: a Raft core and the strong state machine (volatile), a durable image
//! (what the harness persisted from `Ready`s), a drifting clock, and the client requests it
//! is serving.
//!
//! Each `Ready` is carried out as the contract says: `messages` leave at once; the persist
//! takes a simulated fsync time, and only when it completes does the durable image change,
//! `persisted_messages` leave, committed entries apply and `advance` run. A crash during the
//! fsync loses that `Ready`'s persist (and everything else volatile).

use super::checks::Checker;
use super::{Reply, ReplyBody, RequestBody};
use crate::raft::{
    Config, Entry, EntryKind, Envelope, HardState, ProposalId, ProposeError, RaftMessage, RaftNode,
    ReadError, ReadId, Ready, RestoredState, Role, Snapshot,
};
use crate::sim::clock::NodeClock;
use crate::sim::history::ReadLevel;
use crate::sim::net::SimNet;
use crate::sim::rng::SimRng;
use crate::strong::{MachineConfig, MachineSnapshot, StrongMachine};
use crate::types::{Instant, LogIndex, NodeId, Term};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

/// The simulated fsync takes this long at most (at least a tenth of it).
const FSYNC_MAX: Duration = Duration::from_micros(800);

/// What the rest of the run hands a node while it works: the network, the checkers, and
/// where its replies to clients go.
pub(crate) struct World {
    pub(crate) net: SimNet<Envelope>,
    pub(crate) checker: Checker,
    pub(crate) replies: Vec<Reply>,
    pub(crate) proposals: u64,
    /// Nodes that just granted a vote (for the crash-after-vote nemesis).
    pub(crate) votes_granted: Vec<NodeId>,
}

impl World {
    fn send(&mut self, now: Instant, envelope: Envelope) {
        if let RaftMessage::VoteResponse { granted: true, .. } = envelope.msg {
            self.votes_granted.push(envelope.from);
        }
        self.net.send(now, envelope.from, envelope.to, envelope);
    }
}

/// What survives a crash.
#[derive(Clone, Debug, Default)]
pub(crate) struct DurableImage {
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: Option<Snapshot>,
    /// Consecutive entries after the snapshot.
    pub(crate) entries: Vec<Entry>,
}

impl DurableImage {
    fn snapshot_index(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map_or(LogIndex(0), |snapshot| snapshot.meta.index)
    }

    fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index() {
            return Some(
                self.snapshot
                    .as_ref()
                    .map_or(Term(0), |snapshot| snapshot.meta.term),
            );
        }
        let first = self.snapshot_index().0 + 1;
        let offset = index.0.checked_sub(first)?;
        self.entries.get(offset as usize).map(|entry| entry.term)
    }

    fn last_index(&self) -> LogIndex {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |entry| entry.index)
    }
}

/// A client request waiting on something inside the node.
#[derive(Clone, Debug)]
struct Waiter {
    client: usize,
    attempt: u64,
    key: Bytes,
}

/// What dies in a crash.
struct Live {
    core: RaftNode,
    machine: StrongMachine,
    /// Writes proposed here, by proposal id.
    proposals: BTreeMap<ProposalId, Waiter>,
    /// Reads waiting for their read index.
    reads: BTreeMap<ReadId, Waiter>,
    /// Reads with a read index, waiting for the machine to apply up to it.
    confirmed: Vec<(LogIndex, Waiter)>,
    /// The `Ready` whose persist is in flight, and when its fsync completes.
    persisting: Option<(Instant, Ready)>,
    next_read: u64,
}

/// One node of the simulated cluster.
pub(crate) struct SimNode {
    pub(crate) id: NodeId,
    pub(crate) clock: NodeClock,
    pub(crate) durable: DurableImage,
    live: Option<Live>,
    pub(crate) paused_until: Option<Instant>,
    /// Counts restarts.
    pub(crate) incarnation: u64,
    rng: SimRng,
    config: Config,
    machine_config: MachineConfig,
    /// Take a snapshot once this many entries are applied past the last one.
    compact_every: u64,
}

impl SimNode {
    pub(crate) fn new(
        config: Config,
        machine_config: MachineConfig,
        clock: NodeClock,
        mut rng: SimRng,
        now: Instant,
    ) -> SimNode {
        let compact_every = rng.range_u64(20, 120);
        let mut node = SimNode {
            id: config.id,
            clock,
            durable: DurableImage::default(),
            live: None,
            paused_until: None,
            incarnation: 0,
            rng,
            config,
            machine_config,
            compact_every,
        };
        node.boot(now);
        node
    }

    fn boot(&mut self, now: Instant) {
        let machine = match &self.durable.snapshot {
            Some(snapshot) => {
                let state: MachineSnapshot = crate::wire::decode(&snapshot.data)
                    .expect("the harness wrote this snapshot itself")
                    .0;
                StrongMachine::restore(self.machine_config.clone(), state)
            }
            None => StrongMachine::new(self.machine_config.clone()),
        };
        let restored = RestoredState {
            hard_state: self.durable.hard_state,
            snapshot: self.durable.snapshot.clone(),
            entries: self.durable.entries.clone(),
            applied: machine.applied(),
        };
        let local = self.clock.local(now);
        let core = RaftNode::new(self.config.clone(), restored, self.rng.next_u64(), local)
            .expect("the harness builds a valid configuration from a durable image");
        self.live = Some(Live {
            core,
            machine,
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            confirmed: Vec::new(),
            persisting: None,
            next_read: 0,
        });
    }

    pub(crate) fn is_up(&self) -> bool {
        self.live.is_some()
    }

    pub(crate) fn is_paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|until| until > now)
    }

    /// Status of the core, if up.
    pub(crate) fn status(&self) -> Option<crate::raft::Status> {
        self.live.as_ref().map(|live| live.core.status())
    }

    /// The term of the entry at `index` in the core's log, if it holds it.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.live.as_ref().and_then(|live| live.core.term_at(index))
    }

    pub(crate) fn core_mut(&mut self) -> Option<&mut RaftNode> {
        self.live.as_mut().map(|live| &mut live.core)
    }

    /// Everything volatile is lost; the durable image stays.
    pub(crate) fn crash(&mut self) {
        self.live = None;
        self.paused_until = None;
    }

    pub(crate) fn restart(&mut self, now: Instant, checker: &mut Checker) {
        assert!(self.live.is_none(), "only a crashed node restarts");
        self.incarnation += 1;
        checker.restarted(self.id, self.durable.hard_state.commit);
        self.boot(now);
    }

    /// When this node next has something to do on its own (a timer or an fsync), in global
    /// time. A paused node wakes at the end of its pause.
    pub(crate) fn deadline(&self, now: Instant) -> Option<Instant> {
        let live = self.live.as_ref()?;
        if let Some(until) = self.paused_until.filter(|until| *until > now) {
            return Some(until);
        }
        let timer = live
            .core
            .poll_timeout()
            .map(|local| self.clock.global_at(local));
        let fsync = live.persisting.as_ref().map(|(at, _)| *at);
        match (timer, fsync) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs what is due at `now`: a finished fsync, the core's timers.
    pub(crate) fn on_deadline(&mut self, now: Instant, world: &mut World) {
        if self.is_paused(now) {
            return;
        }
        self.paused_until = None;
        let local = self.clock.local(now);
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if live.persisting.as_ref().is_some_and(|(at, _)| *at <= now) {
            self.finish_persist(now, world);
        }
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let due = live
            .core
            .poll_timeout()
            .is_some_and(|at| self.clock.global_at(at) <= now);
        if due {
            live.core.handle_timeout(local);
        }
        self.pump(now, world);
    }

    pub(crate) fn on_message(&mut self, now: Instant, envelope: Envelope, world: &mut World) {
        let local = self.clock.local(now);
        let Some(live) = self.live.as_mut() else {
            return;
        };
        live.core.handle_message(local, envelope);
        self.pump(now, world);
    }

    /// Serves one client request.
    pub(crate) fn on_request(
        &mut self,
        now: Instant,
        client: usize,
        attempt: u64,
        body: RequestBody,
        world: &mut World,
    ) {
        let local = self.clock.local(now);
        let id = self.id;
        let incarnation = self.incarnation;
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let reply = |body| Reply {
            client,
            attempt,
            body,
        };
        match body {
            RequestBody::Write(request) => {
                world.proposals += 1;
                let proposal = ProposalId((id.0 << 48) | world.proposals);
                let bytes = request.encode().expect("a client command encodes");
                let key = request.command.key().clone();
                match live.core.propose(local, proposal, bytes) {
                    Ok(_) => {
                        let waiter = Waiter {
                            client,
                            attempt,
                            key,
                        };
                        live.proposals.insert(proposal, waiter);
                    }
                    Err(ProposeError::NotLeader { leader_hint }) => world
                        .replies
                        .push(reply(ReplyBody::Refused { hint: leader_hint })),
                    Err(_) => world.replies.push(reply(ReplyBody::Refused { hint: None })),
                }
            }
            RequestBody::Read { key, level } => {
                let waiter = Waiter {
                    client,
                    attempt,
                    key,
                };
                if let Some(body) = live.start_read(local, level, waiter, id, incarnation) {
                    world.replies.push(reply(body));
                }
            }
        }
        self.pump(now, world);
    }

    /// Takes `Ready`s until one needs an fsync (or there is none).
    fn pump(&mut self, now: Instant, world: &mut World) {
        loop {
            let Some(live) = self.live.as_mut() else {
                return;
            };
            if live.persisting.is_some() {
                return;
            }
            let Some(mut ready) = live.core.ready() else {
                return;
            };
            for envelope in ready.messages.drain(..) {
                world.send(now, envelope);
            }
            if ready.has_persist_work() {
                let low = FSYNC_MAX / 10;
                let at = now + self.rng.duration_between(low, FSYNC_MAX);
                live.persisting = Some((at, ready));
                return;
            }
            live.persisting = Some((now, ready));
            self.finish_persist(now, world);
        }
    }

    /// The fsync completed: make the persist durable, then send, apply, advance.
    fn finish_persist(&mut self, now: Instant, world: &mut World) {
        let live = self.live.as_mut().expect("only a live node persists");
        let (_, mut ready) = live.persisting.take().expect("a persist is in flight");
        self.persist(&ready, &mut world.checker);
        for envelope in ready.persisted_messages.drain(..) {
            world.send(now, envelope);
        }
        self.apply(&mut ready, world);
        let live = self.live.as_mut().expect("still live");
        live.core.advance(ready.id);
        self.maybe_compact();
    }

    fn persist(&mut self, ready: &Ready, checker: &mut Checker) {
        if let Some(snapshot) = &ready.snapshot {
            self.durable.snapshot = Some(snapshot.clone());
            self.durable.entries.clear();
        }
        if let Some(first) = ready.entries.first() {
            let previous = LogIndex(first.index.0 - 1);
            let Some(previous_term) = self.durable.term_at(previous) else {
                let text = format!(
                    "{}: persisting entries from {} but the durable log ends at {}",
                    self.id,
                    first.index.0,
                    self.durable.last_index().0
                );
                checker.violation(text);
                return;
            };
            checker.persisting(self.id, previous_term, &ready.entries);
            self.durable
                .entries
                .retain(|entry| entry.index < first.index);
            self.durable.entries.extend(ready.entries.iter().cloned());
        }
        if let Some(hard_state) = ready.hard_state {
            checker.term_max = checker.term_max.max(hard_state.term);
            let old = self.durable.hard_state;
            if hard_state.term < old.term
                || (hard_state.term == old.term
                    && old.vote.is_some()
                    && hard_state.vote != old.vote)
            {
                let text = format!("{}: durable hard state {old:?} -> {hard_state:?}", self.id);
                checker.violation(text);
            }
            self.durable.hard_state = hard_state;
        }
    }

    fn apply(&mut self, ready: &mut Ready, world: &mut World) {
        let id = self.id;
        let incarnation = self.incarnation;
        let live = self.live.as_mut().expect("only a live node applies");
        if let Some(snapshot) = &ready.snapshot {
            live.install(snapshot, id, &self.machine_config, &mut world.checker);
        }
        for entry in &ready.committed {
            if !live.apply_entry(entry, id, world) {
                break;
            }
        }
        for read in &ready.read_states {
            if let Some(waiter) = live.reads.remove(&read.id) {
                live.confirmed.push((read.index, waiter));
            }
        }
        for (proposal, _) in &ready.dropped_proposals {
            if let Some(waiter) = live.proposals.remove(proposal) {
                world.replies.push(waiter.reply(ReplyBody::Unknown));
            }
        }
        for (read, error) in &ready.dropped_reads {
            if let Some(waiter) = live.reads.remove(read) {
                let hint = match error {
                    ReadError::NotLeader { leader_hint } => *leader_hint,
                    _ => None,
                };
                world
                    .replies
                    .push(waiter.reply(ReplyBody::Refused { hint }));
            }
        }
        live.serve_confirmed(id, incarnation, &mut world.replies);
    }

    fn maybe_compact(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let applied = live.machine.applied();
        if applied.0 < self.durable.snapshot_index().0 + self.compact_every {
            return;
        }
        let data = crate::wire::encode(&live.machine.snapshot()).expect("a snapshot encodes");
        let Ok(meta) = live.core.compact(applied, Bytes::from(data.clone())) else {
            return;
        };
        self.durable.snapshot = Some(Snapshot {
            meta,
            data: Bytes::from(data),
        });
        self.durable.entries.retain(|entry| entry.index > applied);
    }
}

impl Waiter {
    fn reply(&self, body: ReplyBody) -> Reply {
        Reply {
            client: self.client,
            attempt: self.attempt,
            body,
        }
    }
}

impl Live {
    /// Starts a read; returns the reply at once when there is nothing to wait for.
    fn start_read(
        &mut self,
        local: Instant,
        level: ReadLevel,
        waiter: Waiter,
        id: NodeId,
        incarnation: u64,
    ) -> Option<ReplyBody> {
        let refused = |error: ReadError| match error {
            ReadError::NotLeader { leader_hint } => ReplyBody::Refused { hint: leader_hint },
            _ => ReplyBody::Refused { hint: None },
        };
        match level {
            ReadLevel::Stale => Some(self.read_now(&waiter.key, id, incarnation)),
            ReadLevel::Lease => match self.core.lease_read(local) {
                Ok(index) => {
                    self.confirmed.push((index, waiter));
                    None
                }
                Err(error) => Some(refused(error)),
            },
            ReadLevel::Linearizable | ReadLevel::Follower => {
                let status = self.core.status();
                if level == ReadLevel::Linearizable && status.role != Role::Leader {
                    return Some(ReplyBody::Refused {
                        hint: status.leader,
                    });
                }
                self.next_read += 1;
                let read = ReadId(self.next_read);
                match self.core.read_index(local, read) {
                    Ok(()) => {
                        self.reads.insert(read, waiter);
                        None
                    }
                    Err(error) => Some(refused(error)),
                }
            }
        }
    }

    fn read_now(&self, key: &Bytes, id: NodeId, incarnation: u64) -> ReplyBody {
        ReplyBody::Read {
            current: self.machine.get(key).cloned(),
            node: id,
            applied: self.machine.applied().0,
            incarnation,
        }
    }

    fn serve_confirmed(&mut self, id: NodeId, incarnation: u64, replies: &mut Vec<Reply>) {
        let applied = self.machine.applied();
        let confirmed = std::mem::take(&mut self.confirmed);
        for (index, waiter) in confirmed {
            if index <= applied {
                replies.push(waiter.reply(self.read_now(&waiter.key, id, incarnation)));
            } else {
                self.confirmed.push((index, waiter));
            }
        }
    }

    fn install(
        &mut self,
        snapshot: &Snapshot,
        id: NodeId,
        config: &MachineConfig,
        checker: &mut Checker,
    ) {
        let state = match crate::wire::decode::<MachineSnapshot>(&snapshot.data) {
            Ok((state, _)) => state,
            Err(error) => {
                checker.violation(format!("{id}: snapshot does not decode: {error}"));
                return;
            }
        };
        if state.applied != snapshot.meta.index || state.applied < self.machine.applied() {
            let text = format!(
                "{id}: snapshot at {} holds state applied to {}, machine already at {}",
                snapshot.meta.index.0,
                state.applied.0,
                self.machine.applied().0
            );
            checker.violation(text);
            return;
        }
        self.machine = StrongMachine::restore(config.clone(), state);
        self.core.report_applied(self.machine.applied());
    }

    /// Applies one committed entry; false (and a violation) when it is out of order.
    fn apply_entry(&mut self, entry: &Entry, id: NodeId, world: &mut World) -> bool {
        let expected = LogIndex(self.machine.applied().0 + 1);
        if entry.index != expected {
            let text = format!(
                "{id}: committed entry {} handed out, expected {}",
                entry.index.0, expected.0
            );
            world.checker.violation(text);
            return false;
        }
        let term_now = world.checker.term_max.max(self.core.status().term);
        world.checker.applying(id, entry, term_now);
        match &entry.kind {
            EntryKind::Normal { proposal, command } => {
                let response = self.machine.apply(entry.index, command);
                let waiter = self.proposals.remove(proposal);
                match (response, waiter) {
                    (Ok(response), Some(waiter)) => {
                        world
                            .replies
                            .push(waiter.reply(ReplyBody::Written(response.result)));
                    }
                    (Err(error), _) => world.checker.violation(format!("{id}: {error}")),
                    (Ok(_), None) => {}
                }
            }
            EntryKind::Noop | EntryKind::Membership(_) => self.machine.skip(entry.index),
        }
        self.core.report_applied(entry.index);
        true
    }
}
