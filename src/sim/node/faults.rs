//! The fault timeline of a node run (the shared generator's schedule over the first members,
//! plus quick restarts after some crashes) and how each fault is carried out on the hosts.

use super::{JUMP_BUDGET, JUMP_WITHIN_MAX, Run};
use crate::protocol::admin::RaftRole;
use crate::rng::SeededRng;
use crate::sim::faults::{FaultEvent, FaultOptions, FaultSchedule, Shape};
use crate::types::{Instant, NodeId};
use std::time::Duration;

/// Monotonic jumps are summed over this window for the lease excuse (see the strong sim).
const JUMP_WINDOW: Duration = Duration::from_secs(1);

/// The seed's faults between the first client operations and `horizon`, ending with the
/// generator's finale (heal, healthy network, restarts) at `horizon`.
pub(super) fn draw(
    rng: &mut SeededRng,
    ids: &[NodeId],
    horizon: Instant,
) -> Vec<(Instant, FaultEvent)> {
    // Mostly within the drift bound, so lease reads must hold; sometimes far beyond it
    // (lease reads of such a run are excused).
    let beyond = rng.chance(0.15);
    let jump_max = if beyond { ms(600) } else { JUMP_WITHIN_MAX };
    let mut options = FaultOptions::all(jump_max);
    options.mean_gap = rng.duration_between(ms(200), ms(600));
    let start = Instant::ZERO + ms(300);
    let schedule = FaultSchedule::generate(rng, ids, start, horizon.max(start + ms(1)), &options);
    let mut events = schedule.events().to_vec();
    let mut extra = Vec::new();
    for (at, event) in &events {
        if let FaultEvent::Crash(node) = event
            && rng.chance(0.5)
        {
            // A quick restart: the node comes back while its groups still remember it.
            let restart_at = *at + rng.duration_between(ms(5), ms(300));
            extra.push((restart_at, FaultEvent::Restart(*node)));
        }
    }
    // Keep the finale (the generator's last events, at the horizon) last.
    events.extend(extra.into_iter().filter(|(at, _)| *at < horizon));
    FaultSchedule::from_events(events).events().to_vec()
}

impl Run {
    pub(super) fn apply_fault(&mut self, event: FaultEvent) {
        match event {
            FaultEvent::Partition(shape) => {
                self.world.stats.partitions += 1;
                let leader = self.catalog_leader();
                let links = match shape {
                    Shape::IsolateLeader => Shape::IsolateLeader.links(&self.ids, leader),
                    shape => shape.links(&self.ids, leader),
                };
                self.world.peers.set_links(links);
            }
            FaultEvent::Heal => self.world.peers.heal(),
            FaultEvent::Crash(node) => self.crash(node),
            FaultEvent::Restart(node) => self.restart(node),
            FaultEvent::Pause { node, duration } => {
                self.world.stats.pauses += 1;
                let until = self.now + duration;
                if let Some(host) = self.hosts.get_mut(&node) {
                    host.pause(until);
                }
            }
            FaultEvent::MonotonicJump { node, forward } => self.jump(node, forward),
            FaultEvent::WallStep { node, millis } => {
                if let Some(host) = self.hosts.get_mut(&node) {
                    host.clock.step_wall(millis);
                }
            }
            FaultEvent::NetQuality(config) => {
                // Client traffic shares the loss and delays, never duplication: a QUIC
                // stream delivers its request once.
                let mut wires = config.clone();
                wires.duplicate_rate = 0.0;
                wires.drop_rate /= 4.0;
                self.world.peers.set_config(config);
                self.wires.set_config(wires);
            }
        }
        if self.phase == super::Phase::Safety && self.next_fault >= self.faults.len() {
            // The generator's finale ran: the safety phase ends here.
            self.finale();
        }
    }

    fn crash(&mut self, node: NodeId) {
        let Some(host) = self.hosts.get_mut(&node) else {
            return;
        };
        if !host.is_up() {
            return;
        }
        self.world.stats.crashes += 1;
        host.crash();
        self.ledger.crashed(node);
        self.world.peers.drop_node(node);
        self.wires.drop_node(node);
    }

    fn jump(&mut self, node: NodeId, forward: Duration) {
        self.world.stats.jumps += 1;
        if let Some(host) = self.hosts.get_mut(&node) {
            host.clock.jump_monotonic(forward);
        }
        let now = self.now;
        let recent = self.jumps.entry(node).or_default();
        recent.retain(|(at, _)| now.saturating_duration_since(*at) < JUMP_WINDOW);
        recent.push((now, forward));
        let total: Duration = recent.iter().map(|(_, jump)| *jump).sum();
        if forward > JUMP_WITHIN_MAX || total > JUMP_BUDGET {
            self.world.stats.jumps_beyond += 1;
        }
    }

    /// The leader of group 0 with the highest term among live nodes.
    pub(super) fn catalog_leader(&self) -> Option<NodeId> {
        self.hosts
            .values()
            .filter_map(|host| host.status())
            .filter_map(|status| {
                let catalog = status.strong.first()?.clone();
                (catalog.role == RaftRole::Leader).then_some((catalog.term, status.node))
            })
            .max()
            .map(|(_, node)| node)
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}
