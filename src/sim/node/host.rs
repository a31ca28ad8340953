//! One simulated node: a [`NodeCore`] (volatile), a real redb store in memory (durable: it
//! survives the core's crashes), a drifting clock, and the batch being fsynced.
//!
//! After every input the host drains the core: messages to the peer network, answers to the
//! run, and the next persist batch to the simulated disk. A batch becomes durable (is
//! committed to the store) only when its fsync completes; then the core hears `persisted`.
//! A crash before that loses the batch with everything else volatile, as `kill -9` would.

use super::World;
use super::core::{CoreConfig, NodeCore, ReplyTo, admit};
use crate::net::tls::{Caller, Role};
use crate::node::PeerMessage;
use crate::protocol::admin::{NodeStatus, ToNode};
use crate::sim::clock::NodeClock;
use crate::storage::{Batch, Store};
use crate::types::{Instant, NodeId, WallMillis};
use std::sync::Arc;
use std::time::Duration;

/// A batch that must be fsynced takes this long at most (at least a tenth of it).
const FSYNC_MAX: Duration = Duration::from_micros(800);
/// Rounds of draining one input may take (each persist that needs no fsync is one).
const DRAIN_ROUNDS_MAX: usize = 64;
/// When a core timer is still due right after it fired, the host looks again this much
/// later instead of spinning at one instant.
const SPIN_BACKOFF: Duration = Duration::from_micros(100);

/// What dies in a crash.
struct Live {
    core: NodeCore,
    /// The batch being fsynced and when the fsync completes.
    persisting: Option<(Instant, Batch)>,
    /// When the core's timers last fired, for the spin guard.
    fired_at: Option<Instant>,
}

pub(crate) struct Host {
    pub(crate) id: NodeId,
    pub(crate) clock: NodeClock,
    config: CoreConfig,
    pub(crate) store: Arc<Store>,
    live: Option<Live>,
    paused_until: Option<Instant>,
    /// Boots so far (the first is 1); the ledger tells incarnations apart with it.
    pub(crate) incarnation: u64,
}

impl Host {
    pub(crate) fn new(
        config: CoreConfig,
        clock: NodeClock,
        seed: u64,
        now: Instant,
        world: &mut World,
    ) -> Host {
        let id = config.id;
        let store = Store::in_memory(id).expect("an in-memory redb store opens");
        let mut host = Host {
            id,
            clock,
            config,
            store: Arc::new(store),
            live: None,
            paused_until: None,
            incarnation: 0,
        };
        host.boot(now, seed, world);
        host
    }

    fn boot(&mut self, now: Instant, seed: u64, world: &mut World) {
        self.incarnation += 1;
        let durable: Arc<dyn super::core::Durable + Send + Sync> = self.store.clone();
        let local = self.clock.local(now);
        match NodeCore::boot(self.config.clone(), durable, seed, local) {
            Ok(core) => {
                self.live = Some(Live {
                    core,
                    persisting: None,
                    fired_at: None,
                });
                self.drain(now, world);
            }
            Err(error) => world.violation(format!("core: {} failed to boot: {error}", self.id)),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.live.is_some()
    }

    /// The end of the pause the node is in at `now`, if any.
    pub(crate) fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|until| *until > now)
    }

    pub(crate) fn pause(&mut self, until: Instant) {
        if self.is_up() {
            self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
        }
    }

    pub(crate) fn local(&self, now: Instant) -> Instant {
        self.clock.local(now)
    }

    fn times(&self, now: Instant) -> (Instant, WallMillis) {
        (self.clock.local(now), self.clock.wall(now))
    }

    pub(crate) fn core(&self) -> Option<&NodeCore> {
        self.live.as_ref().map(|live| &live.core)
    }

    /// The core's status, as of the last input it had (the core keeps its own time).
    pub(crate) fn status(&self) -> Option<NodeStatus> {
        self.core().map(NodeCore::status)
    }

    /// Everything volatile is lost, the batch being fsynced included; the store stays.
    pub(crate) fn crash(&mut self) {
        self.live = None;
        self.paused_until = None;
    }

    pub(crate) fn restart(&mut self, now: Instant, seed: u64, world: &mut World) {
        assert!(self.live.is_none(), "only a crashed node restarts");
        self.boot(now, seed, world);
    }

    /// When this node next has something to do on its own, in global time: a pause ending,
    /// an fsync completing, a core timer.
    pub(crate) fn deadline(&self, now: Instant) -> Option<Instant> {
        let live = self.live.as_ref()?;
        if let Some(until) = self.paused_until(now) {
            return Some(until);
        }
        let mut timer = self.clock.global_at(live.core.poll_timeout());
        if live.fired_at == Some(now) && timer <= now {
            timer = now + SPIN_BACKOFF;
        }
        let fsync = live.persisting.as_ref().map(|(at, _)| *at);
        Some(fsync.map_or(timer, |at| at.min(timer)))
    }

    /// Runs what is due at `now`: the end of a pause, a finished fsync, the core's timers.
    pub(crate) fn on_deadline(&mut self, now: Instant, world: &mut World) {
        if self.paused_until(now).is_some() {
            return;
        }
        self.paused_until = None;
        let (local, wall) = self.times(now);
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if live.persisting.as_ref().is_some_and(|(at, _)| *at <= now) {
            self.finish_persist(now, world);
        }
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if self.clock.global_at(live.core.poll_timeout()) <= now {
            if live.fired_at == Some(now) {
                world.stats.timer_spins += 1;
            }
            live.fired_at = Some(now);
            live.core.handle_timeout(local, wall);
        }
        self.drain(now, world);
    }

    pub(crate) fn on_peer(
        &mut self,
        now: Instant,
        from: NodeId,
        message: PeerMessage,
        world: &mut World,
    ) {
        let (local, wall) = self.times(now);
        let Some(live) = self.live.as_mut() else {
            return;
        };
        live.core.handle_peer(local, wall, from, message);
        self.drain(now, world);
    }

    pub(crate) fn on_client(
        &mut self,
        now: Instant,
        reply: ReplyTo,
        request: ToNode,
        world: &mut World,
    ) {
        let (local, wall) = self.times(now);
        let Some(live) = self.live.as_mut() else {
            return;
        };
        // Through the same door as a real node's client streams, with an admin's certificate.
        match admit(&sim_caller(), request) {
            Ok(request) => live.core.handle_client(local, wall, reply, request),
            Err(refused) => world.answers.push((self.id, reply, *refused)),
        }
        self.drain(now, world);
    }

    /// Takes what the core has for the world: messages, answers, and the next batch.
    fn drain(&mut self, now: Instant, world: &mut World) {
        for _ in 0..DRAIN_ROUNDS_MAX {
            let Some(live) = self.live.as_mut() else {
                return;
            };
            while let Some(transmit) = live.core.poll_transmit() {
                world
                    .peers
                    .send(now, self.id, transmit.to, transmit.message);
            }
            while let Some((reply, answer)) = live.core.poll_answer() {
                world.answers.push((self.id, reply, answer));
            }
            if live.persisting.is_some() {
                return;
            }
            let batch = match live.core.poll_persist() {
                Ok(Some(batch)) => batch,
                Ok(None) => return,
                Err(error) => return self.fail_stop("poll_persist", &error, world),
            };
            if batch.needs_sync() {
                let at = now + world.rng.duration_between(FSYNC_MAX / 10, FSYNC_MAX);
                live.persisting = Some((at, batch));
                return;
            }
            live.persisting = Some((now, batch));
            self.finish_persist(now, world);
        }
    }

    /// The fsync completed: the batch is committed to the store, then the core hears it.
    fn finish_persist(&mut self, now: Instant, world: &mut World) {
        let (local, wall) = self.times(now);
        let live = self.live.as_mut().expect("only a live node persists");
        let (_, batch) = live.persisting.take().expect("a persist is in flight");
        if let Err(error) = self.store.commit(batch) {
            world.violation(format!("storage: {} commit failed: {error}", self.id));
            self.crash();
            return;
        }
        world.stats.commits += 1;
        if let Err(error) = live.core.persisted(local, wall) {
            self.fail_stop("persisted", &error, world);
        }
    }

    /// A core error is fail-stop: the node halts (a correct run never gets here).
    fn fail_stop(&mut self, call: &str, error: &super::core::CoreError, world: &mut World) {
        let mut text = format!("core: {} stopped on {call}: {error}", self.id);
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        world.violation(text);
        self.crash();
    }
}

/// The certificate the simulated clients hold: an admin's, since they also change keyspaces
/// and members.
fn sim_caller() -> Caller {
    Caller {
        name: "sim".to_string(),
        role: Role::Admin,
    }
}
