//! The event loop's moving parts: what is due next, faults, deliveries, timers, the disk,
//! and draining an engine's outputs after every input.

use super::cluster::{DiskWrite, Keyspace, SimMessage, VALUE_TYPES};
use super::history::Outcome;
use super::{Request, Sim};
use crate::eventual::{Event, PersistBatch, WriteError};
use crate::sim::faults::{FaultEvent, Shape};
use crate::types::{Instant, KeyspaceId, NodeId};
use std::time::Duration;

/// Fsync latency range of the simulated disks.
const FSYNC_MIN: Duration = Duration::from_micros(50);
const FSYNC_MAX: Duration = Duration::from_millis(3);

impl Sim {
    /// The earliest time anything is due, if anything is.
    pub(super) fn next_event_at(&self) -> Option<Instant> {
        let mut next = [self.net.next_delivery_at(), self.faults.next_at()]
            .into_iter()
            .flatten()
            .min();
        let mut consider = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));
        for node in &self.nodes {
            let Some(engines) = &node.engines else {
                continue;
            };
            if let Some(until) = node.paused_until.filter(|until| *until > self.now) {
                consider(until);
                continue;
            }
            if let Some(write) = node.disk.front() {
                consider(write.done_at);
            }
            for engine in engines {
                if let Some(deadline) = engine.poll_timeout() {
                    consider(node.clock.global_at(deadline));
                }
            }
        }
        for client in &self.clients {
            if let Some(at) = client.next_at {
                consider(at);
            }
        }
        next
    }

    /// Handles everything due at `self.now`.
    pub(super) fn step(&mut self) {
        while let Some(fault) = self.faults.pop_due(self.now) {
            self.apply_fault(fault);
        }
        for node in 0..self.nodes.len() {
            if self.nodes[node]
                .paused_until
                .is_some_and(|until| until <= self.now)
            {
                self.nodes[node].paused_until = None;
            }
            self.complete_disk_writes(node);
        }
        while let Some(delivery) = self.net.pop_due(self.now) {
            self.deliver(delivery);
        }
        for node in 0..self.nodes.len() {
            self.fire_timeouts(node);
        }
        self.run_clients();
    }

    fn node_index(&self, id: NodeId) -> usize {
        self.nodes
            .iter()
            .position(|node| node.id == id)
            .expect("invariant: messages and faults name cluster members")
    }

    fn apply_fault(&mut self, fault: FaultEvent) {
        self.tally.faults += 1;
        match fault {
            FaultEvent::Partition(shape) => {
                self.tally.partitions += 1;
                let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
                // No leader in an eventual keyspace: isolate a node drawn from the seed.
                let shape = match shape {
                    Shape::IsolateLeader => Shape::Isolate(*self.rng_env.pick(&ids)),
                    shape => shape,
                };
                self.net.set_links(shape.links(&ids, None));
            }
            FaultEvent::Heal => self.net.heal(),
            FaultEvent::Crash(id) => self.crash(self.node_index(id)),
            FaultEvent::Restart(id) => {
                let node = self.node_index(id);
                if !self.nodes[node].is_up() {
                    self.start_node(node);
                }
            }
            FaultEvent::Pause { node, duration } => {
                let index = self.node_index(node);
                let node = &mut self.nodes[index];
                if node.is_up() {
                    let until = self.now + duration;
                    node.paused_until = Some(node.paused_until.map_or(until, |u| u.max(until)));
                }
            }
            FaultEvent::MonotonicJump { node, forward } => {
                let index = self.node_index(node);
                self.nodes[index].clock.jump_monotonic(forward);
            }
            FaultEvent::WallStep { node, millis } => {
                let index = self.node_index(node);
                self.nodes[index].clock.step_wall(millis);
            }
            FaultEvent::NetQuality(config) => self.net.set_config(config),
        }
    }

    /// The node stops: engines and undurable batches are lost, its requests end. Writes it
    /// took and had not answered become indeterminate.
    fn crash(&mut self, node: usize) {
        if !self.nodes[node].is_up() {
            return;
        }
        self.tally.crashes += 1;
        self.check_engine_invariants(node, "before a crash");
        self.tally.sync_bytes_lost_engines += self.nodes[node]
            .engines
            .iter()
            .flatten()
            .map(|e| e.stats().sync_bytes_sent)
            .sum::<u64>();
        let not_durable: Vec<(usize, u64)> = self.nodes[node]
            .disk
            .iter()
            .map(|write| (write.keyspace, write.batch.id.0))
            .collect();
        self.nodes[node].crash();
        self.net.drop_node(self.nodes[node].id);
        let lost: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, request)| request_node(request) == node)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            let request = self.requests.remove(&id).expect("invariant: just listed");
            let client = match request {
                Request::Write { client, write, .. } => {
                    let batch = self.log.meta[self.write_id(&write) as usize].batch;
                    let outcome = if not_durable.contains(&batch) {
                        Outcome::Lost
                    } else {
                        Outcome::Indeterminate
                    };
                    self.log.resolve(&write, outcome);
                    client
                }
                Request::Read(read) => read.client,
            };
            self.client_done(client);
        }
    }

    fn complete_disk_writes(&mut self, node: usize) {
        if !self.nodes[node].is_running(self.now) {
            return;
        }
        while self.nodes[node]
            .disk
            .front()
            .is_some_and(|w| w.done_at <= self.now)
        {
            let write = self.nodes[node]
                .disk
                .pop_front()
                .expect("invariant: just peeked");
            let keyspace = KeyspaceId(write.keyspace as u64);
            self.nodes[node].durable.commit(keyspace, &write.batch);
            let local = self.nodes[node].local(self.now);
            if let Some(engine) = self.nodes[node].engine(write.keyspace) {
                engine.persisted(local, write.batch.id);
            }
            self.drain(node, write.keyspace);
        }
    }

    fn deliver(&mut self, delivery: crate::sim::net::Delivery<SimMessage>) {
        let node = self.node_index(delivery.to);
        if !self.nodes[node].is_up() {
            return;
        }
        if let Some(until) = self.nodes[node].paused_until.filter(|u| *u > self.now) {
            self.net.requeue(delivery, until);
            return;
        }
        let keyspace = usize::from(delivery.message.keyspace);
        assert!(
            keyspace < VALUE_TYPES.len(),
            "invariant: the harness numbers keyspaces"
        );
        let (local, wall) = self.nodes[node].times(self.now);
        let engine = self.nodes[node]
            .engine(keyspace)
            .expect("invariant: node is up");
        engine.handle_message(local, wall, delivery.from, delivery.message.message);
        self.drain(node, keyspace);
    }

    fn fire_timeouts(&mut self, node: usize) {
        if !self.nodes[node].is_running(self.now) {
            return;
        }
        for keyspace in 0..VALUE_TYPES.len() {
            let sim_node = &mut self.nodes[node];
            let (local, wall) = sim_node.times(self.now);
            let clock = sim_node.clock.clone();
            let engine = sim_node.engine(keyspace).expect("invariant: node is up");
            let due = engine
                .poll_timeout()
                .is_some_and(|deadline| clock.global_at(deadline) <= self.now);
            if due {
                engine.handle_timeout(local, wall);
                self.drain(node, keyspace);
            }
        }
    }

    /// Queues a persist batch on the node's disk, behind the ones already there.
    pub(super) fn push_batch(&mut self, node: usize, keyspace: Keyspace, batch: PersistBatch) {
        let last = self.nodes[node].disk.back().map_or(self.now, |w| w.done_at);
        let done_at = last.max(self.now) + self.rng_env.duration_between(FSYNC_MIN, FSYNC_MAX);
        self.nodes[node].disk.push_back(DiskWrite {
            done_at,
            keyspace,
            batch,
        });
    }

    /// Takes everything the engine has for the shell: batches to the disk, messages to the
    /// network, events to the clients.
    pub(super) fn drain(&mut self, node: usize, keyspace: Keyspace) {
        let from = self.nodes[node].id;
        let mut events = Vec::new();
        loop {
            let Some(engine) = self.nodes[node].engine(keyspace) else {
                return;
            };
            let batch = engine.poll_persist();
            let transmit = engine.poll_transmit();
            let event = engine.poll_event();
            if batch.is_none() && transmit.is_none() && event.is_none() {
                break;
            }
            if let Some(batch) = batch {
                self.push_batch(node, keyspace, batch);
            }
            if let Some((to, message)) = transmit {
                let message = SimMessage {
                    keyspace: keyspace as u8,
                    message,
                };
                self.net.send(self.now, from, to, message);
            }
            events.extend(event);
        }
        for event in events {
            self.handle_event(event);
        }
    }

    /// Whether every replica agrees on every keyspace (live states and Merkle roots), with
    /// every node up, nothing on its way to a disk and no request pending.
    pub(super) fn converged(&self) -> bool {
        let quiet = self.requests.is_empty()
            && self
                .nodes
                .iter()
                .all(|n| n.is_running(self.now) && n.disk.is_empty());
        quiet && self.divergence().is_none()
    }

    /// The first keyspace whose replicas disagree, described.
    pub(super) fn divergence(&self) -> Option<String> {
        if let Some(node) = self.nodes.iter().find(|n| !n.is_up()) {
            return Some(format!("{} is down", node.id));
        }
        for (keyspace, value_type) in VALUE_TYPES.iter().enumerate() {
            let views: Vec<(NodeId, u64, u64)> = self
                .nodes
                .iter()
                .map(|node| {
                    let engine = &node.engines.as_ref().expect("checked up")[keyspace];
                    (node.id, engine.state_digest(), engine.merkle_root())
                })
                .collect();
            let (_, digest, root) = views[0];
            if let Some((id, ..)) = views.iter().find(|(_, d, r)| *d != digest || *r != root) {
                return Some(format!(
                    "{value_type:?} keyspace: {} and {id} differ (digest/root {:?})",
                    views[0].0,
                    views.iter().map(|(_, d, r)| (d, r)).collect::<Vec<_>>()
                ));
            }
        }
        None
    }

    /// Routes an engine event to the client that asked.
    fn handle_event(&mut self, event: Event) {
        match event {
            Event::WriteAcked { id, token, .. } => self.write_answered(id.0, token, true, true),
            Event::WriteFailed {
                id, token, error, ..
            } => {
                let persisted = matches!(error, WriteError::QuorumNotReached { .. });
                self.write_answered(id.0, token, false, persisted)
            }
            Event::ReadDone { id, value, .. } => self.read_answered(id.0, Some(value)),
            Event::ReadFailed { id, .. } => self.read_answered(id.0, None),
        }
    }
}

impl Sim {
    /// Runs every engine's own `check_invariants` on `node` (O(keys + tree), so only at
    /// crashes and at the end). A failed invariant becomes a violation line with the seed's
    /// report instead of a bare panic.
    pub(super) fn check_engine_invariants(&mut self, node: usize, when: &str) {
        let Some(engines) = &self.nodes[node].engines else {
            return;
        };
        for (keyspace, engine) in engines.iter().enumerate() {
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                engine.check_invariants();
            }));
            if let Err(panic) = checked {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                self.violations.push(format!(
                    "invariant: {} {:?} engine {when}: {message}",
                    self.nodes[node].id, VALUE_TYPES[keyspace]
                ));
            }
        }
    }
}

fn request_node(request: &Request) -> usize {
    match request {
        Request::Write { node, .. } => *node,
        Request::Read(read) => read.node,
    }
}
