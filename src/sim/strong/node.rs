//! One simulated node: a [`Replica`] (the Raft core, the strong state machine and the client
//! requests waiting on them; volatile), a durable image (what the harness persisted from
//! `Ready`s), a drifting clock, and simulated fsync times. Everything a real node must also
//! do lives in `Replica`; this file keeps only what is simulation.
//!
//! Each `Ready` is carried out as [the Ready contract](crate::raft#the-ready-contract) says;
//! the persist takes a simulated fsync time, and only when it completes does the durable image
//! change, `persisted_messages` leave and `Replica::on_persisted` run (apply, serve, advance,
//! compact). A crash during the fsync loses that `Ready`'s persist (and everything else
//! volatile).

use super::checks::Checker;
use super::{Reply, ReplyBody, RequestBody};
use crate::raft::{
    Config, Entry, Envelope, HardState, ProposalId, RaftMessage, RaftNode, Ready, SnapshotMeta,
};
use crate::rng::SeededRng;
use crate::sim::clock::NodeClock;
use crate::sim::history::ReadPath;
use crate::sim::net::SimNet;
use crate::strong::{
    Answer, Applied, Completion, DurableState, MachineConfig, MemoryMachineStore, Replica,
    ReplicaConfig, ReplicaReady,
};
use crate::types::{GroupId, Instant, LogIndex, NodeId, Term, WallMillis};
use std::sync::Arc;
use std::time::Duration;

/// The group id the simulated keyspace's machine rows are stored under.
const GROUP: GroupId = GroupId(1);

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
#[derive(Debug, Default)]
pub(crate) struct DurableImage {
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: Option<SnapshotMeta>,
    /// Consecutive entries after the snapshot.
    pub(crate) entries: Vec<Entry>,
    /// The state machine's rows, as the persists left them.
    pub(crate) machine: Arc<MemoryMachineStore>,
}

impl DurableImage {
    fn snapshot_index(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map_or(LogIndex(0), |snapshot| snapshot.index)
    }

    fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index() {
            return Some(
                self.snapshot
                    .as_ref()
                    .map_or(Term(0), |snapshot| snapshot.term),
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

/// Who a client request came from: the tag a [`Replica`] hands back with its answer.
#[derive(Clone, Copy, Debug)]
struct Tag {
    client: usize,
    attempt: u64,
}

/// What dies in a crash.
struct Live {
    replica: Replica<Tag>,
    /// The `ReplicaReady` whose persist is in flight, and when its fsync completes.
    persisting: Option<(Instant, ReplicaReady)>,
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
    rng: SeededRng,
    config: ReplicaConfig,
}

impl SimNode {
    pub(crate) fn new(
        config: Config,
        machine_config: MachineConfig,
        clock: NodeClock,
        mut rng: SeededRng,
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
            config: ReplicaConfig {
                raft: config,
                machine: machine_config,
                compact_every,
            },
        };
        node.boot(now);
        node
    }

    fn boot(&mut self, now: Instant) {
        let durable = DurableState {
            hard_state: self.durable.hard_state,
            snapshot: self.durable.snapshot.clone(),
            entries: self.durable.entries.clone(),
        };
        let local = self.clock.local(now);
        let store = self.durable.machine.clone();
        let seed = self.rng.next_u64();
        let replica = Replica::boot(self.config.clone(), durable, store, GROUP, seed, local)
            .expect("the harness boots from a valid configuration and a durable image it wrote");
        self.live = Some(Live {
            replica,
            persisting: None,
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
        self.live.as_ref().map(|live| live.replica.status())
    }

    /// The term of the entry at `index` in the core's log, if it holds it.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.live
            .as_ref()
            .and_then(|live| live.replica.raft().term_at(index))
    }

    pub(crate) fn core_mut(&mut self) -> Option<&mut RaftNode> {
        self.live.as_mut().map(|live| live.replica.raft_mut())
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
            .replica
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
            .replica
            .poll_timeout()
            .is_some_and(|at| self.clock.global_at(at) <= now);
        if due {
            live.replica.handle_timeout(local);
        }
        self.pump(now, world);
    }

    pub(crate) fn on_message(&mut self, now: Instant, envelope: Envelope, world: &mut World) {
        let local = self.clock.local(now);
        let Some(live) = self.live.as_mut() else {
            return;
        };
        live.replica.handle_message(local, envelope);
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
        let (id, incarnation) = (self.id, self.incarnation);
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let tag = Tag { client, attempt };
        let answered = match body {
            RequestBody::Write(request) => {
                world.proposals += 1;
                // Unique across nodes and restarts, as `Replica::submit` asks.
                let proposal = ProposalId((id.0 << 48) | world.proposals);
                // The node's own (skewed) clock stands in for its wall clock.
                let wall = WallMillis(local.as_nanos() / 1_000_000);
                live.replica
                    .submit(local, wall, proposal, tag, &request)
                    .err()
            }
            RequestBody::Read { key, level } => live.replica.read(local, tag, level.into(), key),
        };
        if let Some(done) = answered {
            world.replies.push(to_reply(id, incarnation, done));
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
            let Some(mut ready) = live.replica.take_ready() else {
                return;
            };
            let raft = ready.raft.as_mut();
            for envelope in raft
                .map(|raft| raft.messages.drain(..))
                .into_iter()
                .flatten()
            {
                world.send(now, envelope);
            }
            if ready.raft.as_ref().is_some_and(Ready::has_persist_work) {
                let low = FSYNC_MAX / 10;
                let at = now + self.rng.duration_between(low, FSYNC_MAX);
                live.persisting = Some((at, ready));
                return;
            }
            live.persisting = Some((now, ready));
            self.finish_persist(now, world);
        }
    }

    /// The fsync completed: make the persist durable, then send, and hand the `Ready` back.
    fn finish_persist(&mut self, now: Instant, world: &mut World) {
        let live = self.live.as_mut().expect("only a live node persists");
        let (_, mut ready) = live.persisting.take().expect("a persist is in flight");
        if let Some(raft) = &mut ready.raft {
            self.persist(raft, &mut world.checker);
            for envelope in raft.persisted_messages.drain(..) {
                world.send(now, envelope);
            }
        }
        self.durable.machine.commit(GROUP, &ready.machine);
        let live = self.live.as_mut().expect("still live");
        // The highest term anyone knows as this node applies: what the checker compares
        // applied entries against.
        let term_now = world.checker.term_max.max(live.replica.status().term);
        let done = live.replica.on_persisted(ready);
        self.record(done, term_now, world);
    }

    /// Hands what `on_persisted` did to the checker, the clients and the durable image.
    fn record(&mut self, done: Applied<Tag>, term_now: Term, world: &mut World) {
        for entry in &done.entries {
            world.checker.applying(self.id, entry, term_now);
        }
        for fault in &done.faults {
            world.checker.violation(format!("{}: {fault}", self.id));
        }
        for completion in done.replies {
            let reply = to_reply(self.id, self.incarnation, completion);
            world.replies.push(reply);
        }
        if let Some(snapshot) = done.compacted {
            let index = snapshot.index;
            self.durable.snapshot = Some(snapshot);
            self.durable.entries.retain(|entry| entry.index > index);
        }
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
}

/// A replica's answer as the simulated client sees it.
fn to_reply(id: NodeId, incarnation: u64, done: Completion<Tag>) -> Reply {
    let body = match done.answer {
        Answer::Refused { leader_hint } => ReplyBody::Refused { hint: leader_hint },
        // Nothing started: as certainly not in the log as a refusal.
        Answer::Busy | Answer::Unencodable => ReplyBody::Refused { hint: None },
        Answer::Unknown => ReplyBody::Unknown,
        Answer::Written(result) => ReplyBody::Written(result),
        Answer::Read { current, applied } => ReplyBody::Read {
            current,
            node: id,
            applied: applied.0,
            incarnation,
        },
    };
    Reply {
        client: done.tag.client,
        attempt: done.tag.attempt,
        body,
    }
}

impl From<ReadPath> for crate::strong::ReadMode {
    fn from(level: ReadPath) -> Self {
        match level {
            ReadPath::Linearizable => crate::strong::ReadMode::Linearizable,
            ReadPath::Lease => crate::strong::ReadMode::Lease,
            ReadPath::Follower => crate::strong::ReadMode::Follower,
            ReadPath::Stale => crate::strong::ReadMode::Stale,
        }
    }
}
