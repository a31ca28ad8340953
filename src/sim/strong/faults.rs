//! The fault timeline of a strong run: the shared generator's schedule plus this harness's
//! own nemeses (quick restarts after a vote, the muted leader with slow inbound links,
//! bridge epochs, flapping bursts), and how each fault is carried out.

use super::*;

impl Run {
    /// The seed's fault timeline: the shared generator, plus quick restarts after some
    /// crashes and bursts of flapping partitions. Returns whether jumps may exceed the bound.
    pub(super) fn draw_faults(
        rng: &mut SeededRng,
        ids: &[NodeId],
        horizon: Instant,
    ) -> (Vec<(Instant, FaultEvent)>, bool) {
        let beyond = rng.chance(0.15);
        let jump_max = if beyond { ms(600) } else { JUMP_WITHIN_MAX };
        let mut options = FaultOptions::all(jump_max);
        options.mean_gap = rng.duration_between(ms(150), ms(500));
        let start = Instant::ZERO + ms(200);
        let schedule = FaultSchedule::generate(rng, ids, start, horizon, &options);
        let mut events = schedule.events().to_vec();
        let mut extra = Vec::new();
        for (at, event) in &events {
            if let FaultEvent::Crash(node) = event
                && rng.chance(0.5)
            {
                extra.push((
                    *at + rng.duration_between(ms(5), ms(200)),
                    FaultEvent::Restart(*node),
                ));
            }
        }
        for _ in 0..rng.below(3) {
            let mut at = Instant::ZERO + rng.duration_between(ms(200), horizon - Instant::ZERO);
            for _ in 0..rng.range_u64(4, 12) {
                let event = if rng.chance(0.5) {
                    FaultEvent::Partition(Shape::random(rng, ids))
                } else {
                    FaultEvent::Heal
                };
                extra.push((at, event));
                at += rng.duration_between(ms(10), ms(80));
            }
        }
        if rng.chance(0.3) {
            // A long bridge partition: two sides that each reach only the bridge node, so
            // both sides keep electing through it.
            let at = Instant::ZERO + rng.duration_between(ms(200), horizon - Instant::ZERO);
            let bridge = *rng.pick(ids);
            extra.push((at, FaultEvent::Partition(Shape::Bridge { bridge })));
            extra.push((
                at + rng.duration_between(ms(800), ms(3000)),
                FaultEvent::Heal,
            ));
        }
        // Keep the finale (the generator's last events, at the horizon) last.
        events.extend(extra.into_iter().filter(|(at, _)| *at < horizon));
        let schedule = FaultSchedule::from_events(events);
        (schedule.events().to_vec(), beyond)
    }

    /// The crash-after-vote nemesis: a node that just granted a vote crashes a moment later
    /// (after its fsync) and restarts soon after, while the election may still be running.
    pub(super) fn crash_after_votes(&mut self) {
        let voters = std::mem::take(&mut self.world.votes_granted);
        if !self.vote_nemesis || self.phase != Phase::Safety {
            return;
        }
        for voter in voters {
            let all_up = self.nodes.iter().all(SimNode::is_up);
            if !all_up || !self.rng.chance(0.8) {
                continue;
            }
            // After the vote's fsync (at most 0.8 ms), then back within a millisecond or so.
            let crash_at = self.now + self.rng.duration_between(Duration::from_micros(900), ms(2));
            let restart_at =
                crash_at + self.rng.duration_between(Duration::from_micros(100), ms(2));
            self.quick_restarts.insert(voter);
            self.fault_stats.vote_crashes += 1;
            self.schedule_fault(crash_at, FaultEvent::Crash(voter));
            self.schedule_fault(restart_at, FaultEvent::Restart(voter));
        }
    }

    /// The lease nemesis: everything sent *to* the leader starts arriving late, then its
    /// outbound links are cut (its followers stop hearing it and elect another leader) while
    /// the acks of its last heartbeat rounds, and the new leader's messages, trickle in. A lease must
    /// count from when its round was sent, less the drift bound; one counted from the acks'
    /// arrival outlives the followers' promise.
    pub(super) fn mute_leader(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        // Only when every node is up and awake, so the others can elect a new leader at
        // once; the mute replaces whatever partition was in force.
        let whole = self
            .nodes
            .iter()
            .all(|node| node.is_up() && !node.is_paused(self.now));
        let busy = self.mute_at.is_some() || self.slow_inbound.is_some_and(|s| s.until > self.now);
        let leader = self.current_leader();
        let Some(leader) = leader.filter(|_| whole && !busy) else {
            let retry = self.now + ms(100);
            let position = self.lease_nemesis.partition_point(|at| *at <= retry);
            self.lease_nemesis.insert(position, retry);
            return;
        };
        self.fault_stats.leader_mutes += 1;
        // First only slow: every message to the leader arrives `extra` late (its acks too),
        // then, once a stream of late acks is in flight, its outbound links are cut.
        let extra = self.rng.duration_between(ms(100), ms(400));
        let mute_at = self.now + extra + self.rng.duration_between(ms(10), ms(100));
        let lasting = self.rng.duration_between(ms(800), ms(2000));
        let until = mute_at + lasting;
        self.slow_inbound = Some(SlowInbound {
            node: leader,
            extra,
            until,
        });
        self.mute_at = Some((mute_at, leader));
        // The rest of the schedule waits until the leader is unmuted, so nothing else
        // (a crash, a heal) spoils the scenario.
        let shift = until - self.now;
        for (at, _) in &mut self.faults[self.next_fault..] {
            *at += shift;
        }
        self.schedule_fault(until, FaultEvent::Heal);
    }

    /// The muted phase of the lease nemesis: the leader's outbound links are cut.
    pub(super) fn cut_outbound(&mut self, leader: NodeId) {
        let mut links = crate::sim::faults::Links::full();
        for other in &self.ids {
            links = links.with_cut(leader, *other);
        }
        self.world.net.set_links(links);
    }

    /// Inserts a fault among those still to come, in time order (before the finale).
    pub(super) fn schedule_fault(&mut self, at: Instant, event: FaultEvent) {
        let pending = &self.faults[self.next_fault..];
        let Some(position) = pending.iter().position(|(when, _)| *when > at) else {
            return;
        };
        self.faults.insert(self.next_fault + position, (at, event));
    }

    pub(super) fn apply_fault(&mut self, event: FaultEvent) {
        let now = self.now;
        match event {
            FaultEvent::Partition(shape) => {
                self.fault_stats.partitions += 1;
                let links = shape.links(&self.ids, self.current_leader());
                self.world.net.set_links(links);
            }
            FaultEvent::Heal => self.world.net.heal(),
            FaultEvent::Crash(node) => {
                self.fault_stats.crashes += 1;
                let index = self.index(node);
                self.nodes[index].crash();
                // A quick process restart (the nemesis's) leaves the network alone: what was
                // in flight to the node still arrives if it is back by then, as when the
                // sender's transport resends on reconnect. Other crashes cut every socket.
                if !self.quick_restarts.remove(&node) {
                    self.world.net.drop_node(node);
                }
            }
            FaultEvent::Restart(node) => {
                let index = self.index(node);
                if !self.nodes[index].is_up() {
                    self.nodes[index].restart(now, &mut self.world.checker);
                }
            }
            FaultEvent::Pause { node, duration } => {
                self.fault_stats.pauses += 1;
                let index = self.index(node);
                if self.nodes[index].is_up() {
                    self.nodes[index].paused_until = Some(now + duration);
                }
            }
            FaultEvent::MonotonicJump { node, forward } => self.jump(node, forward),
            FaultEvent::WallStep { node, millis } => {
                let index = self.index(node);
                self.nodes[index].clock.step_wall(millis);
            }
            FaultEvent::NetQuality(config) => self.world.net.set_config(config),
        }
        if self.phase == Phase::Safety && self.next_fault >= self.faults.len() {
            // The generator's finale ran: the safety phase ends here.
            self.finale();
        }
    }

    pub(super) fn jump(&mut self, node: NodeId, forward: Duration) {
        self.fault_stats.jumps += 1;
        let index = self.index(node);
        self.nodes[index].clock.jump_monotonic(forward);
        let now = self.now;
        let recent = self.jumps.entry(node).or_default();
        recent.retain(|(at, _)| now.saturating_duration_since(*at) < JUMP_WINDOW);
        recent.push((now, forward));
        let total: Duration = recent.iter().map(|(_, jump)| *jump).sum();
        if forward > JUMP_WITHIN_MAX || total > JUMP_BUDGET {
            self.fault_stats.jumps_beyond += 1;
        }
    }
}
