//! One simulated node: a [`PaxosNode`] (volatile), its durable acceptor states (what the
//! harness persisted from `Ready`s), a drifting clock and simulated fsync times.
//!
//! Each `Ready` is carried out as [the Ready contract](crate::paxos#the-ready-contract)
//! says: `messages` and `answers` go at once; the persist takes a simulated fsync time, and
//! only when it completes does the durable image change and `persisted_messages` leave. A
//! crash during the fsync loses that persist, and everything else volatile.

use super::checks::Checker;
use crate::paxos::{AcceptorState, Answer, Config, Envelope, PaxosMessage, PaxosNode, Ready};
use crate::rng::SeededRng;
use crate::sim::clock::NodeClock;
use crate::sim::net::SimNet;
use crate::types::{Instant, NodeId};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

/// The simulated fsync takes this long at most (at least a tenth of it).
pub(crate) const FSYNC_MAX: Duration = Duration::from_micros(800);

/// What the rest of the run hands a node while it works.
pub(crate) struct World {
    pub(crate) net: SimNet<Envelope>,
    pub(crate) checker: Checker,
    pub(crate) answers: Vec<Answer>,
    /// Nodes that just started an fsync (for the crash-during-persist nemesis).
    pub(crate) persists_started: Vec<NodeId>,
}

impl World {
    fn send(&mut self, now: Instant, envelope: Envelope) {
        if let PaxosMessage::Accept {
            key,
            ballot,
            register,
        } = &envelope.message
        {
            self.checker.accept_sent(key, *ballot, register);
        }
        self.net.send(now, envelope.from, envelope.to, envelope);
    }
}

/// What dies in a crash.
struct Live {
    core: PaxosNode,
    /// The `Ready` whose persist is in flight, and when its fsync completes.
    persisting: Option<(Instant, Ready)>,
}

/// One node of the simulated cluster.
pub(crate) struct SimNode {
    pub(crate) id: NodeId,
    pub(crate) clock: NodeClock,
    pub(crate) durable: BTreeMap<Bytes, AcceptorState>,
    live: Option<Live>,
    pub(crate) paused_until: Option<Instant>,
    /// Counts starts; the core's incarnation, so no two starts share ballots or op ids.
    pub(crate) incarnation: u64,
    rng: SeededRng,
    config: Config,
}

impl SimNode {
    pub(crate) fn new(config: Config, clock: NodeClock, rng: SeededRng, now: Instant) -> SimNode {
        let mut node = SimNode {
            id: config.id,
            clock,
            durable: BTreeMap::new(),
            live: None,
            paused_until: None,
            incarnation: 0,
            rng,
            config,
        };
        node.boot(now);
        node
    }

    fn boot(&mut self, now: Instant) {
        self.incarnation += 1;
        let mut config = self.config.clone();
        config.incarnation = self.incarnation;
        let restored = self
            .durable
            .iter()
            .map(|(key, state)| (key.clone(), state.clone()))
            .collect();
        let local = self.clock.local(now);
        let seed = self.rng.next_u64();
        let core = PaxosNode::new(config, restored, seed, local)
            .expect("the harness boots from a valid configuration and a durable image it wrote");
        self.live = Some(Live {
            core,
            persisting: None,
        });
    }

    pub(crate) fn is_up(&self) -> bool {
        self.live.is_some()
    }

    pub(crate) fn is_paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|until| until > now)
    }

    /// Operations queued or running on the core, if up.
    pub(crate) fn pending(&self) -> Option<usize> {
        self.live.as_ref().map(|live| live.core.pending())
    }

    /// Everything volatile is lost; the durable image stays.
    pub(crate) fn crash(&mut self) {
        self.live = None;
        self.paused_until = None;
    }

    pub(crate) fn restart(&mut self, now: Instant) {
        assert!(self.live.is_none(), "only a crashed node restarts");
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
        [timer, fsync].into_iter().flatten().min()
    }

    /// Runs what is due at `now`: a finished fsync, the core's timers.
    pub(crate) fn on_deadline(&mut self, now: Instant, world: &mut World) {
        if self.is_paused(now) {
            return;
        }
        self.paused_until = None;
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if live.persisting.as_ref().is_some_and(|(at, _)| *at <= now) {
            self.finish_persist(now, world);
        }
        let local = self.clock.local(now);
        if let Some(live) = self.live.as_mut() {
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

    /// Hands a client's operation to the core; a refusal is answered at once.
    pub(crate) fn on_request(
        &mut self,
        now: Instant,
        request: &super::Request,
        world: &mut World,
    ) -> Option<crate::paxos::ProposeError> {
        let local = self.clock.local(now);
        let live = self.live.as_mut()?;
        let refused = live
            .core
            .propose(
                local,
                request.id,
                request.key.clone(),
                request.operation.clone(),
            )
            .err();
        self.pump(now, world);
        refused
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
            world.answers.append(&mut ready.answers);
            if !ready.persist.is_empty() {
                let low = FSYNC_MAX / 10;
                let at = now + self.rng.duration_between(low, FSYNC_MAX);
                live.persisting = Some((at, ready));
                world.persists_started.push(self.id);
                return;
            }
            live.persisting = Some((now, ready));
            self.finish_persist(now, world);
        }
    }

    /// The fsync completed: make the persist durable, then send, and advance.
    fn finish_persist(&mut self, now: Instant, world: &mut World) {
        let live = self.live.as_mut().expect("only a live node persists");
        let (_, mut ready) = live.persisting.take().expect("a persist is in flight");
        for (key, state) in &ready.persist {
            let before = self.durable.get(key);
            world.checker.persisted(self.id, key, before, state);
            self.durable.insert(key.clone(), state.clone());
        }
        for envelope in ready.persisted_messages.drain(..) {
            world.send(now, envelope);
        }
        let live = self.live.as_mut().expect("still live");
        live.core.advance(ready.id);
    }
}
