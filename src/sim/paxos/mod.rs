//! The leaderless Paxos simulator: 3 or 5 nodes, each a [`PaxosNode`](crate::paxos::PaxosNode)
//! with its durable acceptor states, on the simulated network and clocks, under a seeded
//! fault schedule, driven by concurrent clients on a small key set, checked as it goes and
//! at the end.
//!
//! ```text
//!  run_seed(config)
//!   ├─ safety phase: clients issue `config.steps` operations (put, get, delete, cas) through
//!   │    random nodes while faults happen: partitions of every shape, loss/dup/reorder and
//!   │    delays, crashes that lose what was not persisted (some restarted at once, with
//!   │    messages still in flight; some in the middle of an fsync), pauses, clock jumps;
//!   │    the running checks (one register per ballot, durable promises only rise, chosen
//!   │    registers form one chain) run on every persist and accept
//!   ├─ finale: heal, healthy network, restart every crashed node
//!   ├─ liveness phase: every client writes once and reads once more, retrying what was
//!   │    certainly not applied; all must be answered within LIVENESS_BOUND
//!   └─ end check: linearizability per key over the whole history
//! ```
//!
//! The event loop jumps global time to the earliest of: the next fault, the next client
//! action, the next request arrival, the next network delivery and the next node deadline
//! (a core timer through its clock's `global_at`, an fsync completing, a pause ending). One
//! event runs per step, the step count is bounded, and every choice comes from the seed.
//!
//! Seeds vary the core: with or without the one-round-trip read, and the round timeout.
//! Planted bug (`SimConfig::bug`, feature `sim-bugs`): `paxos-accept-without-promise-quorum`.

mod checks;
mod client;
mod node;

use crate::paxos::{Config, Envelope, Operation, RequestId};
use crate::rng::SeededRng;
use crate::sim::clock::NodeClock;
use crate::sim::faults::{FaultEvent, FaultOptions, FaultSchedule};
use crate::sim::history::{Completion, History};
use crate::sim::linearizability::{LinearizabilityReport, STEPS_PER_KEY_DEFAULT, check_history};
use crate::sim::net::{NetConfig, SimNet};
use crate::sim::{SeedReport, SimConfig, SimError};
use crate::types::{Instant, NodeId};
use bytes::Bytes;
use checks::Checker;
use client::Client;
use node::{SimNode, World};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Simulated time per client operation of the safety phase (sets the fault horizon).
const TIME_PER_STEP: Duration = Duration::from_millis(25);
/// After the finale, every client's final operations must complete within this.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(30);
/// The event loop's bound, per configured step.
const LOOP_STEPS_PER_STEP: u64 = 4_000;
/// Client requests reach a node after this much at most.
const REQUEST_DELAY_MAX: Duration = Duration::from_millis(1);
/// Forward jumps of a node's monotonic clock are at most this. Paxos trusts no clock for
/// safety, so any size would do; these only shift timers.
const CLOCK_JUMP_MAX: Duration = Duration::from_millis(300);
/// Each node's rate error is drawn within ±this.
const DRIFT_PPM_MAX: i64 = 50_000;
/// At most this many crash-during-fsync nemeses per run.
const PERSIST_CRASHES_MAX: u64 = 8;

/// The planted bugs this harness knows, by name.
pub fn bug_names() -> Vec<&'static str> {
    crate::paxos::PlantedBug::NAMES.to_vec()
}

#[cfg(feature = "sim-bugs")]
type Bug = Option<crate::paxos::PlantedBug>;
/// Without `sim-bugs` no bug can be named: the type has no value but `None`.
#[cfg(not(feature = "sim-bugs"))]
type Bug = Option<std::convert::Infallible>;

#[cfg(feature = "sim-bugs")]
fn parse_bug(name: Option<&str>) -> Result<Bug, SimError> {
    let Some(name) = name else {
        return Ok(None);
    };
    crate::paxos::PlantedBug::from_name(name)
        .map(Some)
        .ok_or_else(|| SimError::UnknownBug {
            name: name.to_string(),
            known: bug_names().join(", "),
        })
}

#[cfg(not(feature = "sim-bugs"))]
fn parse_bug(name: Option<&str>) -> Result<Bug, SimError> {
    match name {
        None => Ok(None),
        Some(_) => Err(SimError::BugsNotBuilt),
    }
}

/// A client's operation on its way to a node.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) id: RequestId,
    pub(crate) node: NodeId,
    pub(crate) key: Bytes,
    pub(crate) operation: Operation,
}

/// Runs one seed and reports what the checkers found.
pub fn run_seed(config: &SimConfig) -> Result<SeedReport, SimError> {
    if config.nodes != 3 && config.nodes != 5 {
        return Err(SimError::Nodes {
            nodes: config.nodes,
        });
    }
    let bug = parse_bug(config.bug.as_deref())?;
    let mut run = Run::new(config, bug);
    run.run();
    Ok(run.report())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Safety,
    Liveness { since: Instant },
}

/// Fault counters for the summary.
#[derive(Clone, Copy, Debug, Default)]
struct FaultStats {
    partitions: u64,
    crashes: u64,
    persist_crashes: u64,
    pauses: u64,
    jumps: u64,
}

struct Run {
    config: SimConfig,
    rng: SeededRng,
    now: Instant,
    ids: Vec<NodeId>,
    nodes: Vec<SimNode>,
    world: World,
    clients: Vec<Client>,
    history: History,
    requests: BTreeMap<(Instant, u64), Request>,
    request_seq: u64,
    faults: Vec<(Instant, FaultEvent)>,
    /// Faults applied so far (index into `faults`).
    next_fault: usize,
    phase: Phase,
    issued: u64,
    loop_steps: u64,
    fault_stats: FaultStats,
    finished_at: Option<Instant>,
    /// The liveness checker's finding, kept apart: it is reported after the safety ones.
    liveness: Vec<String>,
    /// This seed crashes some nodes in the middle of an fsync.
    persist_nemesis: bool,
    /// Nodes whose next crash is the nemesis's quick restart (in-flight messages survive).
    quick_restarts: BTreeSet<NodeId>,
    fast_reads: bool,
}

impl Run {
    fn new(config: &SimConfig, bug: Bug) -> Run {
        let mut rng = SeededRng::new(config.seed);
        let ids: Vec<NodeId> = (1..=config.nodes as u64).map(NodeId).collect();
        let fast_reads = rng.chance(0.5);
        let nodes = Self::build_nodes(&mut rng, &ids, bug, fast_reads);
        let net = SimNet::new(NetConfig::healthy(), rng.fork(1));
        let horizon = Instant::ZERO + TIME_PER_STEP * config.steps.max(1) as u32;
        let faults = Self::draw_faults(&mut rng.fork(2), &ids, horizon);
        let keys: Vec<Bytes> = (0..rng.range_u64(2, 4))
            .map(|k| Bytes::from(format!("k{k}")))
            .collect();
        let client_count = rng.range_u64(3, 6) as usize;
        let think_mean = TIME_PER_STEP * client_count as u32 / 2;
        let clients = (0..client_count)
            .map(|index| {
                let fork = rng.fork(100 + index as u64);
                Client::new(index, fork, keys.clone(), ids.clone(), think_mean)
            })
            .collect();
        let persist_nemesis = rng.chance(0.5);
        let quorum = ids.len() / 2 + 1;
        Run {
            config: config.clone(),
            rng,
            now: Instant::ZERO,
            ids,
            nodes,
            world: World {
                net,
                checker: Checker::new(quorum),
                answers: Vec::new(),
                persists_started: Vec::new(),
            },
            clients,
            history: History::new(),
            requests: BTreeMap::new(),
            request_seq: 0,
            faults,
            next_fault: 0,
            phase: Phase::Safety,
            issued: 0,
            loop_steps: 0,
            fault_stats: FaultStats::default(),
            finished_at: None,
            liveness: Vec::new(),
            persist_nemesis,
            quick_restarts: BTreeSet::new(),
            fast_reads,
        }
    }

    #[cfg_attr(not(feature = "sim-bugs"), allow(unused_variables))]
    fn build_nodes(rng: &mut SeededRng, ids: &[NodeId], bug: Bug, fast: bool) -> Vec<SimNode> {
        let round_timeout = rng.duration_between(ms(20), ms(80));
        ids.iter()
            .map(|id| {
                let mut config = Config::new(*id, 0, ids.to_vec());
                config.round_timeout = round_timeout;
                config.read_fast_path = fast;
                #[cfg(feature = "sim-bugs")]
                {
                    config.planted_bug = bug;
                }
                let drift = rng.range_u64(0, 2 * DRIFT_PPM_MAX as u64) as i64 - DRIFT_PPM_MAX;
                let fork = rng.fork(10 + id.0);
                SimNode::new(config, NodeClock::new(drift), fork, Instant::ZERO)
            })
            .collect()
    }

    /// The shared generator's schedule, plus quick restarts after half the crashes.
    fn draw_faults(
        rng: &mut SeededRng,
        ids: &[NodeId],
        horizon: Instant,
    ) -> Vec<(Instant, FaultEvent)> {
        let mut options = FaultOptions::all(CLOCK_JUMP_MAX);
        options.mean_gap = rng.duration_between(ms(150), ms(500));
        let start = Instant::ZERO + ms(100);
        let schedule = FaultSchedule::generate(rng, ids, start, horizon, &options);
        let mut events = schedule.events().to_vec();
        let mut extra = Vec::new();
        for (at, event) in &events {
            if let FaultEvent::Crash(node) = event
                && rng.chance(0.5)
            {
                let restart_at = *at + rng.duration_between(ms(5), ms(200));
                extra.push((restart_at, FaultEvent::Restart(*node)));
            }
        }
        // Keep the finale (the generator's last events, at the horizon) last.
        events.extend(extra.into_iter().filter(|(at, _)| *at < horizon));
        FaultSchedule::from_events(events).events().to_vec()
    }

    fn index(&self, node: NodeId) -> usize {
        (node.0 - 1) as usize
    }

    /// Runs to the end even after a running check fired: a broken chain does not stop the
    /// harness, and the report then shows whether linearizability caught it too.
    fn run(&mut self) {
        let loop_steps_max = LOOP_STEPS_PER_STEP * self.config.steps.max(50);
        loop {
            self.loop_steps += 1;
            if self.loop_steps > loop_steps_max {
                let text = format!("event loop exceeded {loop_steps_max} steps");
                self.world.checker.violation(text);
                break;
            }
            if self.liveness_done() {
                break;
            }
            let Some(next) = self.next_event_at() else {
                let text = "nothing left to do".to_string();
                self.world.checker.violation(text);
                break;
            };
            self.now = self.now.max(next);
            self.step();
            self.crash_during_persists();
        }
        if let Phase::Liveness { .. } = self.phase
            && self.finished_at.is_none()
        {
            self.liveness_failure();
        }
    }

    fn liveness_done(&mut self) -> bool {
        let Phase::Liveness { since } = self.phase else {
            return false;
        };
        if self.clients.iter().all(|client| client.finished) {
            self.finished_at = Some(self.now);
            return true;
        }
        self.now > since + LIVENESS_BOUND
    }

    fn liveness_failure(&mut self) {
        let pending: Vec<String> = self
            .history
            .operations()
            .iter()
            .filter(|op| op.completion == Completion::Indeterminate)
            .rev()
            .take(3)
            .map(|op| op.to_string())
            .collect();
        let stuck = self.clients.iter().filter(|c| !c.finished).count();
        let queued: Vec<Option<usize>> = self.nodes.iter().map(SimNode::pending).collect();
        let text = format!(
            "liveness: {stuck} clients still have operations pending {LIVENESS_BOUND:?} after \
             the faults stopped; operations queued per node: {queued:?}; pending: {pending:?}"
        );
        self.liveness.push(text);
    }

    fn next_event_at(&self) -> Option<Instant> {
        let fault = self.faults.get(self.next_fault).map(|(at, _)| *at);
        let delivery = self.world.net.next_delivery_at();
        let request = self.requests.keys().next().map(|(at, _)| *at);
        let node = self
            .nodes
            .iter()
            .filter_map(|node| node.deadline(self.now))
            .min();
        let client = self.clients.iter().filter_map(Client::deadline).min();
        [fault, delivery, request, node, client]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs one event due at `self.now`, in a fixed order of sources.
    fn step(&mut self) {
        let now = self.now;
        if self
            .faults
            .get(self.next_fault)
            .is_some_and(|(at, _)| *at <= now)
        {
            let event = self.faults[self.next_fault].1.clone();
            self.next_fault += 1;
            self.apply_fault(event);
            return;
        }
        if self.phase == Phase::Safety && self.issued >= self.config.steps {
            self.finale();
            return;
        }
        if let Some(index) = self
            .clients
            .iter()
            .position(|c| c.deadline().is_some_and(|at| at <= now))
        {
            self.client_act(index);
            return;
        }
        if let Some(entry) = self.requests.first_entry()
            && entry.key().0 <= now
        {
            let request = entry.remove();
            self.deliver_request(request);
            return;
        }
        if let Some(delivery) = self.world.net.pop_due(now) {
            self.deliver_message(delivery);
            return;
        }
        for index in 0..self.nodes.len() {
            if self.nodes[index].deadline(now).is_some_and(|at| at <= now) {
                self.nodes[index].on_deadline(now, &mut self.world);
                self.dispatch_answers();
            }
        }
    }

    fn deliver_message(&mut self, delivery: crate::sim::net::Delivery<Envelope>) {
        let now = self.now;
        let index = self.index(delivery.to);
        if let Some(until) = self.nodes[index].paused_until.filter(|until| *until > now) {
            self.world.net.requeue(delivery, until);
            return;
        }
        self.nodes[index].on_message(now, delivery.message, &mut self.world);
        self.dispatch_answers();
    }

    fn liveness(&self) -> bool {
        matches!(self.phase, Phase::Liveness { .. })
    }

    fn client_act(&mut self, index: usize) {
        let may_issue = self.phase == Phase::Safety && self.issued < self.config.steps;
        let liveness = self.liveness();
        let was_idle = self.clients[index].is_idle();
        let request = self.clients[index].act(self.now, may_issue, liveness, &mut self.history);
        if was_idle && !self.clients[index].is_idle() && !liveness {
            self.issued += 1;
        }
        if let Some(request) = request {
            self.send_request(request);
        }
    }

    fn send_request(&mut self, request: Request) {
        let delay = self
            .rng
            .duration_between(Duration::from_micros(20), REQUEST_DELAY_MAX);
        self.request_seq += 1;
        self.requests
            .insert((self.now + delay, self.request_seq), request);
    }

    fn deliver_request(&mut self, request: Request) {
        let index = self.index(request.node);
        if let Some(until) = self.nodes[index]
            .paused_until
            .filter(|until| *until > self.now)
        {
            self.request_seq += 1;
            self.requests.insert((until, self.request_seq), request);
            return;
        }
        let refused = self.nodes[index].on_request(self.now, &request, &mut self.world);
        if refused.is_some() {
            let client = client::client_of(request.id);
            let liveness = self.liveness();
            let resend =
                self.clients[client].on_refused(self.now, request.id, liveness, &mut self.history);
            if let Some(resend) = resend {
                self.send_request(resend);
            }
        }
        self.dispatch_answers();
    }

    fn dispatch_answers(&mut self) {
        let liveness = self.liveness();
        for answer in std::mem::take(&mut self.world.answers) {
            let client = client::client_of(answer.id);
            let (violation, resend) = self.clients[client].on_answer(
                self.now,
                answer.id,
                answer.result,
                liveness,
                &mut self.history,
            );
            if let Some(text) = violation {
                self.world.checker.violation(text);
            }
            if let Some(resend) = resend {
                self.send_request(resend);
            }
        }
    }

    /// Everything heals: the safety phase is over.
    fn finale(&mut self) {
        self.faults.truncate(self.next_fault);
        self.world.net.heal();
        self.world.net.set_config(NetConfig::healthy());
        for index in 0..self.nodes.len() {
            if !self.nodes[index].is_up() {
                self.nodes[index].restart(self.now);
            }
            self.nodes[index].paused_until = None;
        }
        self.phase = Phase::Liveness { since: self.now };
    }

    /// The crash-during-fsync nemesis: a node that just started a persist crashes before or
    /// just after it completes, and restarts soon, with messages still in flight. What it
    /// had not made durable is gone; what it promised must have been.
    fn crash_during_persists(&mut self) {
        let started = std::mem::take(&mut self.world.persists_started);
        let room = self.fault_stats.persist_crashes < PERSIST_CRASHES_MAX;
        if !self.persist_nemesis || self.phase != Phase::Safety || !room {
            return;
        }
        for node in started {
            let all_up = self.nodes.iter().all(SimNode::is_up);
            if !all_up || !self.rng.chance(0.02) {
                continue;
            }
            let fsync = node::FSYNC_MAX;
            let crash_at = self.now + self.rng.duration_between(Duration::ZERO, fsync);
            let restart_at = crash_at + self.rng.duration_between(ms(1), ms(20));
            self.quick_restarts.insert(node);
            self.fault_stats.persist_crashes += 1;
            self.schedule_fault(crash_at, FaultEvent::Crash(node));
            self.schedule_fault(restart_at, FaultEvent::Restart(node));
            return;
        }
    }

    /// Inserts a fault among those still to come, in time order (before the finale).
    fn schedule_fault(&mut self, at: Instant, event: FaultEvent) {
        let pending = &self.faults[self.next_fault..];
        let Some(position) = pending.iter().position(|(when, _)| *when > at) else {
            return;
        };
        self.faults.insert(self.next_fault + position, (at, event));
    }

    fn apply_fault(&mut self, event: FaultEvent) {
        let now = self.now;
        match event {
            FaultEvent::Partition(shape) => {
                self.fault_stats.partitions += 1;
                // No leader here: "isolate the leader" isolates a random node.
                let someone = *self.rng.pick(&self.ids);
                let links = shape.links(&self.ids, Some(someone));
                self.world.net.set_links(links);
            }
            FaultEvent::Heal => self.world.net.heal(),
            FaultEvent::Crash(node) => self.crash(node),
            FaultEvent::Restart(node) => {
                let index = self.index(node);
                if !self.nodes[index].is_up() {
                    self.nodes[index].restart(now);
                }
            }
            FaultEvent::Pause { node, duration } => {
                self.fault_stats.pauses += 1;
                let index = self.index(node);
                if self.nodes[index].is_up() {
                    self.nodes[index].paused_until = Some(now + duration);
                }
            }
            FaultEvent::MonotonicJump { node, forward } => {
                self.fault_stats.jumps += 1;
                let index = self.index(node);
                self.nodes[index].clock.jump_monotonic(forward);
            }
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

    fn crash(&mut self, node: NodeId) {
        self.fault_stats.crashes += 1;
        let index = self.index(node);
        self.nodes[index].crash();
        // A quick process restart (the nemesis's) leaves the network alone: what was in
        // flight to and from the node still arrives. Other crashes cut every socket.
        if !self.quick_restarts.remove(&node) {
            self.world.net.drop_node(node);
        }
    }

    fn report(&mut self) -> SeedReport {
        let lin = check_history(&self.history, |_| true, STEPS_PER_KEY_DEFAULT);
        let mut violations = std::mem::take(&mut self.world.checker.violations);
        violations.extend(lin.violations.iter().cloned());
        violations.append(&mut self.liveness);
        SeedReport {
            seed: self.config.seed,
            violations,
            summary: self.summary(&lin),
        }
    }

    fn summary(&self, lin: &LinearizabilityReport) -> String {
        let (ok, indeterminate, failed) = self.history.counts();
        let stats = self.world.net.stats();
        let faults = &self.fault_stats;
        let mut not_applied = 0;
        let mut unknown = 0;
        let mut timed_out = 0;
        for client in &self.clients {
            not_applied += client.stats.not_applied + client.stats.refused;
            unknown += client.stats.unknown;
            timed_out += client.stats.timed_out;
        }
        format!(
            "seed {} n={} clients={} keys={}{}: ops ok={ok} indeterminate={indeterminate} \
             failed={failed} (not-applied={not_applied} unknown={unknown} timed-out={timed_out}) \
             | chosen={} rounds<={} | faults: partitions={} crashes={} (in fsync={}) pauses={} \
             jumps={} | msgs sent={} delivered={} lost={} cut={} | sim {:.1}s | lin: {} keys \
             {} ops {} inconclusive",
            self.config.seed,
            self.config.nodes,
            self.clients.len(),
            self.keys_count(),
            if self.fast_reads { " fast-reads" } else { "" },
            self.world.checker.chosen_count(),
            self.world.checker.highest_round,
            faults.partitions,
            faults.crashes,
            faults.persist_crashes,
            faults.pauses,
            faults.jumps,
            stats.sent,
            stats.delivered,
            stats.lost,
            stats.cut_by_partition,
            self.now.as_nanos() as f64 / 1e9,
            lin.keys,
            lin.operations,
            lin.inconclusive.len()
        )
    }

    fn keys_count(&self) -> usize {
        let keys: BTreeSet<&Bytes> = self.history.operations().iter().map(|op| &op.key).collect();
        keys.len()
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}
