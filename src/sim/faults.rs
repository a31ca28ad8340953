//! Faults: which links are cut, and a seeded schedule of what goes wrong when.
//!
//! [`Links`] is a directed cut set: `allows(a, b)` is false when messages from `a` to `b` are
//! cut. [`Shape`] names the partitions we test, and turns into `Links` for a given cluster.
//! [`FaultSchedule`] draws a timeline of [`FaultEvent`]s from a seed; each engine's harness
//! carries them out on its nodes.

use super::net::NetConfig;
use crate::rng::SeededRng;
use crate::types::{Instant, NodeId};
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

/// Directed connectivity between nodes: the set of cut (from, to) pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Links {
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Links {
    /// Every node reaches every other.
    pub fn full() -> Links {
        Links::default()
    }

    /// Messages from `from` to `to` are lost; the other direction is untouched.
    pub fn with_cut(mut self, from: NodeId, to: NodeId) -> Links {
        if from != to {
            self.cut.insert((from, to));
        }
        self
    }

    /// Cuts both directions between `a` and `b`.
    pub fn with_cut_both(self, a: NodeId, b: NodeId) -> Links {
        self.with_cut(a, b).with_cut(b, a)
    }

    /// A node always reaches itself.
    pub fn allows(&self, from: NodeId, to: NodeId) -> bool {
        from == to || !self.cut.contains(&(from, to))
    }

    pub fn is_full(&self) -> bool {
        self.cut.is_empty()
    }

    /// The nodes `node` can exchange messages with in both directions, itself included.
    pub fn reachable_both_ways(&self, node: NodeId, nodes: &[NodeId]) -> Vec<NodeId> {
        let both = |other: &&NodeId| self.allows(node, **other) && self.allows(**other, node);
        nodes.iter().filter(both).copied().collect()
    }
}

/// The partitions the simulator knows how to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Groups that reach each other only within a group (minority/majority when two).
    Sides(Vec<Vec<NodeId>>),
    /// One node cut off from all others in both directions.
    Isolate(NodeId),
    /// The current leader is isolated; the harness says who that is when it applies the shape.
    IsolateLeader,
    /// Nodes in a ring, each reaching only its two neighbours: with five nodes every node sees
    /// a majority, but a different one.
    MajoritiesRing,
    /// Two sides that reach each other only through one bridge node.
    Bridge { bridge: NodeId },
    /// Messages from one node to another are lost; the reverse direction works.
    OneWay { from: NodeId, to: NodeId },
}

impl Shape {
    /// A random shape over `nodes` (at least three).
    pub fn random(rng: &mut SeededRng, nodes: &[NodeId]) -> Shape {
        assert!(
            nodes.len() >= 3,
            "partition shapes need at least three nodes"
        );
        match rng.below(6) {
            0 | 1 => {
                let mut shuffled = nodes.to_vec();
                rng.shuffle(&mut shuffled);
                let minority = rng.range_u64(1, (nodes.len() as u64 - 1) / 2) as usize;
                let majority = shuffled.split_off(minority);
                Shape::Sides(vec![shuffled, majority])
            }
            2 => Shape::Isolate(*rng.pick(nodes)),
            3 => Shape::IsolateLeader,
            4 if rng.chance(0.5) => Shape::MajoritiesRing,
            4 => Shape::Bridge {
                bridge: *rng.pick(nodes),
            },
            _ => {
                let from = *rng.pick(nodes);
                let others: Vec<NodeId> = nodes.iter().copied().filter(|n| *n != from).collect();
                Shape::OneWay {
                    from,
                    to: *rng.pick(&others),
                }
            }
        }
    }

    /// The cut set this shape makes over `nodes`. `leader` resolves [`Shape::IsolateLeader`];
    /// with no leader known it cuts nothing.
    pub fn links(&self, nodes: &[NodeId], leader: Option<NodeId>) -> Links {
        match self {
            Shape::Sides(sides) => sides_links(sides),
            Shape::Isolate(node) => isolate_links(*node, nodes),
            Shape::IsolateLeader => leader.map_or_else(Links::full, |l| isolate_links(l, nodes)),
            Shape::MajoritiesRing => ring_links(nodes),
            Shape::Bridge { bridge } => bridge_links(*bridge, nodes),
            Shape::OneWay { from, to } => Links::full().with_cut(*from, *to),
        }
    }
}

fn sides_links(sides: &[Vec<NodeId>]) -> Links {
    let mut links = Links::full();
    for (index, side) in sides.iter().enumerate() {
        for other in sides.iter().skip(index + 1) {
            for a in side {
                for b in other {
                    links = links.with_cut_both(*a, *b);
                }
            }
        }
    }
    links
}

fn isolate_links(node: NodeId, nodes: &[NodeId]) -> Links {
    let others: Vec<NodeId> = nodes.iter().copied().filter(|n| *n != node).collect();
    sides_links(&[vec![node], others])
}

fn ring_links(nodes: &[NodeId]) -> Links {
    let count = nodes.len();
    let mut links = Links::full();
    for (i, a) in nodes.iter().enumerate() {
        for (j, b) in nodes.iter().enumerate() {
            let distance = i.abs_diff(j).min(count - i.abs_diff(j));
            if distance > 1 {
                links = links.with_cut(*a, *b);
            }
        }
    }
    links
}

fn bridge_links(bridge: NodeId, nodes: &[NodeId]) -> Links {
    let others: Vec<NodeId> = nodes.iter().copied().filter(|n| *n != bridge).collect();
    let (left, right) = others.split_at(others.len() / 2);
    sides_links(&[left.to_vec(), right.to_vec()])
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |nodes: &[NodeId]| nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        match self {
            Shape::Sides(sides) => {
                let sides: Vec<String> = sides.iter().map(|s| list(s).join(",")).collect();
                write!(f, "partition {}", sides.join(" | "))
            }
            Shape::Isolate(node) => write!(f, "isolate {node}"),
            Shape::IsolateLeader => write!(f, "isolate the leader"),
            Shape::MajoritiesRing => write!(f, "majorities ring"),
            Shape::Bridge { bridge } => write!(f, "bridge through {bridge}"),
            Shape::OneWay { from, to } => write!(f, "one-way cut {from}->{to}"),
        }
    }
}

/// One thing that goes wrong (or right again) at a point in simulated time.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultEvent {
    Partition(Shape),
    Heal,
    /// The node stops at once; what it had not persisted is lost.
    Crash(NodeId),
    /// A crashed node starts again from its durable state.
    Restart(NodeId),
    /// The node stops processing for `duration`, then resumes with the beliefs it had. Its
    /// clocks keep running, so it wakes to find its timers long expired.
    Pause {
        node: NodeId,
        duration: Duration,
    },
    /// The node's monotonic clock leaps forward.
    MonotonicJump {
        node: NodeId,
        forward: Duration,
    },
    /// The node's wall clock is stepped, either way.
    WallStep {
        node: NodeId,
        millis: i64,
    },
    /// Loss, duplication and delay change for every link.
    NetQuality(NetConfig),
}

/// Which kinds of fault a schedule may contain and how often they come.
#[derive(Clone, Debug)]
pub struct FaultOptions {
    /// Mean time between two faults.
    pub mean_gap: Duration,
    pub partitions: bool,
    pub crashes: bool,
    pub pauses: bool,
    /// Monotonic jumps up to `clock_jump_max` and wall steps of a few seconds.
    pub clock_jumps: bool,
    pub clock_jump_max: Duration,
    /// Loss up to 20%, duplication up to 10%, delays up to 50 ms.
    pub lossy_network: bool,
}

impl FaultOptions {
    /// Everything on, a fault every 400 ms on average.
    pub fn all(clock_jump_max: Duration) -> FaultOptions {
        FaultOptions {
            mean_gap: Duration::from_millis(400),
            partitions: true,
            crashes: true,
            pauses: true,
            clock_jumps: true,
            clock_jump_max,
            lossy_network: true,
        }
    }
}

/// A timeline of faults drawn from a seed, ending with everything healed and restarted.
#[derive(Clone, Debug, Default)]
pub struct FaultSchedule {
    events: Vec<(Instant, FaultEvent)>,
}

impl FaultSchedule {
    /// Draws faults between `start` and `end`. At `end` the schedule heals every partition,
    /// restores a healthy network and restarts every crashed node, so the liveness phase that
    /// follows runs on a whole cluster.
    pub fn generate(
        rng: &mut SeededRng,
        nodes: &[NodeId],
        start: Instant,
        end: Instant,
        options: &FaultOptions,
    ) -> FaultSchedule {
        let mut draw = ScheduleDraw {
            rng,
            nodes,
            options,
            crashed: BTreeSet::new(),
        };
        let mut events = Vec::new();
        let mut at = start;
        loop {
            let gap_max = options.mean_gap * 2;
            at += draw.rng.duration_between(Duration::from_millis(1), gap_max);
            if at >= end {
                break;
            }
            if let Some(event) = draw.event() {
                events.push((at, event));
            }
        }
        events.extend(draw.finale().into_iter().map(|event| (end, event)));
        FaultSchedule { events }
    }

    /// A schedule with exactly these events, for hand-written scenarios. Sorted by time.
    pub fn from_events(mut events: Vec<(Instant, FaultEvent)>) -> FaultSchedule {
        events.sort_by_key(|(at, _)| *at);
        FaultSchedule { events }
    }

    pub fn events(&self) -> &[(Instant, FaultEvent)] {
        &self.events
    }

    /// When the next event is due.
    pub fn next_at(&self) -> Option<Instant> {
        self.events.first().map(|(at, _)| *at)
    }

    /// The next event due at or before `now`, removed from the schedule.
    pub fn pop_due(&mut self, now: Instant) -> Option<FaultEvent> {
        match self.events.first() {
            Some((at, _)) if *at <= now => Some(self.events.remove(0).1),
            _ => None,
        }
    }
}

struct ScheduleDraw<'a> {
    rng: &'a mut SeededRng,
    nodes: &'a [NodeId],
    options: &'a FaultOptions,
    crashed: BTreeSet<NodeId>,
}

impl ScheduleDraw<'_> {
    fn event(&mut self) -> Option<FaultEvent> {
        let options = self.options;
        match self.rng.below(6) {
            0 | 1 if options.partitions => Some(self.partition()),
            2 if options.crashes => Some(self.crash_or_restart()),
            3 if options.pauses => {
                let node = *self.rng.pick(self.nodes);
                let duration = self.rng.duration_between(ms(50), ms(1_500));
                Some(FaultEvent::Pause { node, duration })
            }
            4 if options.clock_jumps => Some(self.clock_jump()),
            5 if options.lossy_network => Some(FaultEvent::NetQuality(self.net_quality())),
            _ => None,
        }
    }

    fn partition(&mut self) -> FaultEvent {
        if self.rng.chance(0.3) {
            FaultEvent::Heal
        } else {
            FaultEvent::Partition(Shape::random(self.rng, self.nodes))
        }
    }

    // At most a minority is down at once, so the cluster can still make progress.
    fn crash_or_restart(&mut self) -> FaultEvent {
        let minority = (self.nodes.len() - 1) / 2;
        let restart =
            !self.crashed.is_empty() && (self.crashed.len() >= minority || self.rng.chance(0.5));
        if restart {
            let down: Vec<NodeId> = self.crashed.iter().copied().collect();
            let node = *self.rng.pick(&down);
            self.crashed.remove(&node);
            return FaultEvent::Restart(node);
        }
        let up: Vec<NodeId> = self
            .nodes
            .iter()
            .copied()
            .filter(|n| !self.crashed.contains(n))
            .collect();
        let node = *self.rng.pick(&up);
        self.crashed.insert(node);
        FaultEvent::Crash(node)
    }

    fn clock_jump(&mut self) -> FaultEvent {
        let node = *self.rng.pick(self.nodes);
        if self.rng.chance(0.5) {
            let forward = self
                .rng
                .duration_between(ms(1), self.options.clock_jump_max);
            FaultEvent::MonotonicJump { node, forward }
        } else {
            let millis = self.rng.range_u64(0, 10_000) as i64 - 5_000;
            FaultEvent::WallStep { node, millis }
        }
    }

    fn net_quality(&mut self) -> NetConfig {
        if self.rng.chance(0.3) {
            return NetConfig::healthy();
        }
        let delay_max = self.rng.duration_between(ms(2), ms(50));
        NetConfig {
            delay_min: Duration::from_micros(200),
            delay_max,
            drop_rate: self.rng.range_u64(0, 20) as f64 / 100.0,
            duplicate_rate: self.rng.range_u64(0, 10) as f64 / 100.0,
        }
    }

    fn finale(&mut self) -> Vec<FaultEvent> {
        let mut events = vec![
            FaultEvent::Heal,
            FaultEvent::NetQuality(NetConfig::healthy()),
        ];
        events.extend(self.crashed.iter().map(|node| FaultEvent::Restart(*node)));
        events
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(count: u64) -> Vec<NodeId> {
        (1..=count).map(NodeId).collect()
    }

    #[test]
    fn shapes_cut_what_they_say() {
        let five = nodes(5);
        let ring = Shape::MajoritiesRing.links(&five, None);
        for node in &five {
            assert_eq!(
                ring.reachable_both_ways(*node, &five).len(),
                3,
                "{node} sees a majority"
            );
        }
        assert!(!ring.allows(NodeId(1), NodeId(3)) && ring.allows(NodeId(1), NodeId(5)));
        let bridge = Shape::Bridge { bridge: NodeId(3) }.links(&five, None);
        assert_eq!(bridge.reachable_both_ways(NodeId(3), &five).len(), 5);
        assert!(!bridge.allows(NodeId(1), NodeId(5)));
        let isolated = Shape::IsolateLeader.links(&five, Some(NodeId(2)));
        assert_eq!(
            isolated.reachable_both_ways(NodeId(2), &five),
            vec![NodeId(2)]
        );
        assert!(Shape::IsolateLeader.links(&five, None).is_full());
        let one_way = Shape::OneWay {
            from: NodeId(1),
            to: NodeId(2),
        }
        .links(&five, None);
        assert!(!one_way.allows(NodeId(1), NodeId(2)) && one_way.allows(NodeId(2), NodeId(1)));
    }

    #[test]
    fn random_sides_leave_a_strict_minority() {
        let mut rng = SeededRng::new(3);
        for count in [3, 5] {
            for _ in 0..100 {
                if let Shape::Sides(sides) = Shape::random(&mut rng, &nodes(count)) {
                    assert!(sides[0].len() * 2 < count as usize);
                    assert_eq!(sides[0].len() + sides[1].len(), count as usize);
                }
            }
        }
    }

    #[test]
    fn schedules_are_seeded_bounded_and_end_whole() {
        let options = FaultOptions::all(Duration::from_millis(300));
        let (start, end) = (Instant::ZERO, Instant::ZERO + Duration::from_secs(20));
        let draw = |seed| {
            FaultSchedule::generate(&mut SeededRng::new(seed), &nodes(5), start, end, &options)
        };
        let schedule = draw(9);
        assert_eq!(schedule.events(), draw(9).events());
        assert!(schedule.events().len() > 10);
        let mut down = BTreeSet::new();
        for (at, event) in schedule.events() {
            assert!(*at <= end);
            match event {
                FaultEvent::Crash(node) => assert!(down.insert(*node)),
                FaultEvent::Restart(node) => assert!(down.remove(node)),
                _ => {}
            }
            assert!(down.len() <= 2, "a majority of five stays up");
        }
        assert!(down.is_empty(), "every crashed node restarts by the end");
        assert_eq!(schedule.events().last().map(|(at, _)| *at), Some(end));
    }
}
