//! The strong keyspace simulator: a Raft cluster of 3 or 5 nodes, each a [`RaftNode`] with the
//! strong state machine, on a simulated network and clocks, under a seeded fault schedule,
//! driven by concurrent simulated clients, checked after every step and at the end.
//!
//! ```text
//!  run_seed(config)
//!   ├─ safety phase: clients issue `config.steps` operations while faults happen
//!   │    (partitions of every shape, loss/dup/reorder, crashes + restarts, pauses, clock
//!   │    jumps, flapping, membership changes, and two nemeses: a crash right after a
//!   │    vote with a quick restart, and a leader whose inbound is slowed then whose
//!   │    outbound is cut); checkers run after every event
//!   ├─ finale: heal, healthy network, restart every crashed node
//!   ├─ liveness phase: every pending operation, and one final linearizable read per
//!   │    client, must complete within LIVENESS_BOUND of simulated time
//!   └─ end checks: linearizability per key, reads against the reference log
//! ```
//!
//! The event loop jumps global time to the earliest of: the next fault, the next client
//! action, the next client request arrival, the next network delivery and the next node
//! deadline (a core timer through its clock's `global_at`, or an fsync completing). One event
//! runs per step, the step count is bounded, and every choice comes from the seed.
//!
//! Reads are checked this way: linearizable (ReadIndex), follower and lease reads take part
//! in the per-key linearizability check (lease reads are excused, and the report says so,
//! when a clock jumped beyond the drift bound during the run). Every read, stale ones
//! included, must also return exactly the key's state in the reference log (the entries the
//! cluster applied, replayed) at the applied index it reports, and a node's applied index
//! never goes back within one incarnation. Scans are not issued by the simulated clients;
//! the state machine's unit tests cover them.
//!
//! Seeds vary the cores too: some run without PreVote, some replicate one entry per append
//! with one append in flight. A client whose lease read is refused falls back to ReadIndex.
//! Planted bugs (`SimConfig::bug`, feature `sim-bugs`): the core's `commit-old-term`,
//! `vote-without-persist`, `read-index-no-heartbeat`, `lease-ignores-drift`, and the state
//! machine's `no-dedup`.

mod checks;
mod client;
mod faults;
mod membership;
mod node;
mod report;

use crate::raft::{Config, MembershipChange, Role};
use crate::rng::SeededRng;
use crate::sim::clock::NodeClock;
use crate::sim::faults::{FaultEvent, FaultOptions, FaultSchedule, Shape};
use crate::sim::history::{Call, Completion, History, ReadPath, Return};
use crate::sim::linearizability::{STEPS_PER_KEY_DEFAULT, check_history};
use crate::sim::net::{NetConfig, SimNet};
use crate::sim::session::{SESSION_OPEN_WINDOW, SessionGroup};
use crate::sim::{SeedReport, SimConfig, SimError};
use crate::strong::{MachineConfig, Request as StrongRequest, StrongMachine, Versioned};
use crate::types::{Instant, NodeId};
use bytes::Bytes;
use checks::Checker;
use client::Client;
use membership::{MembershipPlan, MembershipStage};
use node::{SimNode, World};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// The cores' election timeout in the simulation.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(150);
/// Heartbeat interval.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(30);
/// The drift bound the cores are configured with (the lease is shorter by this much).
pub const LEASE_DRIFT_MAX: Duration = Duration::from_millis(15);
/// Each node's rate error is drawn within ±this. Two nodes then differ by at most 7.6%, i.e.
/// 11.4 ms over one election timeout: within `LEASE_DRIFT_MAX`, leaving 3.6 ms for jumps.
/// (Close to the bound on purpose: a lease that ignores drift must get caught.)
pub const DRIFT_PPM_MAX: i64 = 38_000;
/// Forward jumps of a monotonic clock "within the bound" are at most this...
pub const JUMP_WITHIN_MAX: Duration = Duration::from_micros(1_500);
/// ...and at most this much in total on one node over any `JUMP_WINDOW`. More is "beyond
/// the bound": lease reads of that run are excused from the check.
pub const JUMP_BUDGET: Duration = Duration::from_millis(3);
const JUMP_WINDOW: Duration = Duration::from_secs(1);
/// Simulated time per client operation of the safety phase (sets the fault horizon).
const TIME_PER_STEP: Duration = Duration::from_millis(25);
/// After the finale, everything pending must complete within this.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(30);
/// The event loop's bound, per configured step.
const LOOP_STEPS_PER_STEP: u64 = 4_000;
/// Client requests reach a node after this much at most.
const REQUEST_DELAY_MAX: Duration = Duration::from_millis(1);

// The drift between two nodes over one election timeout plus the jump budget stays within
// the configured bound, so correct lease reads are safe under "within the bound" faults.
const _: () = assert!(
    (2 * DRIFT_PPM_MAX as u128 * ELECTION_TIMEOUT.as_micros() / 1_000_000)
        + JUMP_BUDGET.as_micros()
        < LEASE_DRIFT_MAX.as_micros()
);
const _: () = assert!(JUMP_WITHIN_MAX.as_micros() <= JUMP_BUDGET.as_micros());

/// The planted bugs this harness knows, by name (the core's and the state machine's).
pub fn bug_names() -> Vec<&'static str> {
    let mut names = crate::raft::PlantedBug::NAMES.to_vec();
    names.push("no-dedup");
    names
}

/// A client's request in flight to a node.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) client: usize,
    pub(crate) attempt: u64,
    pub(crate) node: NodeId,
    pub(crate) body: RequestBody,
}

#[derive(Clone, Debug)]
pub(crate) enum RequestBody {
    Write(StrongRequest),
    Read { key: Bytes, level: ReadPath },
}

/// A node's answer to a client (delivered at once).
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(crate) client: usize,
    pub(crate) attempt: u64,
    pub(crate) body: ReplyBody,
}

#[derive(Clone, Debug)]
pub(crate) enum ReplyBody {
    /// Certainly not in the log through this attempt; maybe a hint where the leader is.
    Refused {
        hint: Option<NodeId>,
    },
    /// The proposal was dropped before commit: it may or may not commit.
    Unknown,
    Written(Result<crate::strong::Outcome, crate::strong::CommandError>),
    Read {
        current: Option<Versioned>,
        node: NodeId,
        applied: u64,
        incarnation: u64,
    },
}

/// Per-seed variations of the core's configuration.
#[derive(Clone, Copy, Debug)]
struct CoreShape {
    /// Some seeds run without PreVote (elections then disrupt more, and split votes abound).
    pre_vote: bool,
    one_entry_appends: bool,
}

struct Bugs {
    core: Option<crate::raft::PlantedBug>,
    machine: MachineConfig,
}

/// Sessions expire after this much idleness by the log clock: short, so a session idle
/// through a partition expires within a run, and far above the clients' opening window plus
/// the clocks' drift over a run (a few percent of its seconds, and the jumps).
const SESSION_TIMEOUT: Duration = Duration::from_secs(5);
const _: () = assert!(SESSION_OPEN_WINDOW.as_millis() * 3 < SESSION_TIMEOUT.as_millis());

/// The machines' configuration, without bugs.
fn sim_machine() -> MachineConfig {
    MachineConfig {
        session_timeout: SESSION_TIMEOUT,
        ..MachineConfig::default()
    }
}

fn parse_bug(bug: &Option<String>) -> Result<Bugs, SimError> {
    let none = Bugs {
        core: None,
        machine: sim_machine(),
    };
    let Some(name) = bug else {
        return Ok(none);
    };
    #[cfg(not(feature = "sim-bugs"))]
    {
        let _ = name;
        Err(SimError::BugsNotBuilt)
    }
    #[cfg(feature = "sim-bugs")]
    {
        if name == "no-dedup" {
            let machine = MachineConfig {
                bug: Some(crate::strong::MachineBug::NoDedup),
                ..sim_machine()
            };
            return Ok(Bugs { machine, ..none });
        }
        match crate::raft::PlantedBug::from_name(name) {
            Some(bug) => Ok(Bugs {
                core: Some(bug),
                ..none
            }),
            None => Err(SimError::UnknownBug {
                name: name.clone(),
                known: bug_names().join(", "),
            }),
        }
    }
}

/// Runs one seed and reports what the checkers found.
pub fn run_seed(config: &SimConfig) -> Result<SeedReport, SimError> {
    if config.nodes != 3 && config.nodes != 5 {
        return Err(SimError::Nodes {
            nodes: config.nodes,
        });
    }
    let bugs = parse_bug(&config.bug)?;
    let mut run = Run::new(config, bugs);
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
    pauses: u64,
    jumps: u64,
    jumps_beyond: u64,
    membership_changes: u64,
    vote_crashes: u64,
    leader_mutes: u64,
}

/// Messages to `node` are delayed by `extra` until `until`.
#[derive(Clone, Copy, Debug)]
struct SlowInbound {
    node: NodeId,
    extra: Duration,
    until: Instant,
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
    jumps: BTreeMap<NodeId, Vec<(Instant, Duration)>>,
    membership: Option<MembershipPlan>,
    keys: Vec<Bytes>,
    machine_config: MachineConfig,
    finished_at: Option<Instant>,
    /// The liveness checker's finding, kept apart: it is reported after the safety ones.
    liveness: Vec<String>,
    /// This seed crashes some nodes right after they grant a vote, and restarts them soon:
    /// the vote must have been durable before the grant left.
    vote_nemesis: bool,
    pre_vote: bool,
    /// Times of the lease nemesis (see `mute_leader`), in order.
    lease_nemesis: Vec<Instant>,
    /// When the lease nemesis cuts the slowed leader's outbound links.
    mute_at: Option<(Instant, NodeId)>,
    /// Messages to this node arrive `extra` late until `until`.
    slow_inbound: Option<SlowInbound>,
    /// Nodes whose next crash is the nemesis's quick restart.
    quick_restarts: std::collections::BTreeSet<NodeId>,
}

impl Run {
    fn new(config: &SimConfig, bugs: Bugs) -> Run {
        let mut rng = SeededRng::new(config.seed);
        let ids: Vec<NodeId> = (1..=config.nodes as u64).map(NodeId).collect();
        let shape = CoreShape {
            pre_vote: !rng.chance(0.5),
            one_entry_appends: rng.chance(0.3),
        };
        let nodes = Self::build_nodes(&mut rng, &ids, &bugs, shape);
        let net = SimNet::new(NetConfig::healthy(), rng.fork(1));
        let horizon = Instant::ZERO + TIME_PER_STEP * config.steps.max(1) as u32;
        let (faults, beyond) = Self::draw_faults(&mut rng.fork(2), &ids, horizon);
        let key_count = rng.range_u64(3, 5);
        let keys: Vec<Bytes> = (0..key_count)
            .map(|k| Bytes::from(format!("k{k}")))
            .collect();
        let client_count = rng.range_u64(3, 6) as usize;
        let think_mean = TIME_PER_STEP * client_count as u32 / 2;
        let lease_share = if rng.chance(0.4) { 0.6 } else { 0.0 };
        // One or two sessions, each shared by several clients with writes in flight.
        let groups: Vec<_> = (1..=rng.range_u64(1, 2))
            .map(|group| SessionGroup::new(group * 1_000_000))
            .collect();
        let clients = (0..client_count)
            .map(|index| {
                let fork = rng.fork(100 + index as u64);
                Client::new(
                    index,
                    fork,
                    keys.clone(),
                    ids.clone(),
                    think_mean,
                    lease_share,
                    Rc::clone(&groups[index % groups.len()]),
                )
            })
            .collect();
        let vote_nemesis = rng.chance(0.6);
        let mut lease_nemesis: Vec<Instant> = (0..rng.range_u64(2, 6))
            .map(|_| Instant::ZERO + rng.duration_between(ms(500), horizon - Instant::ZERO))
            .collect();
        lease_nemesis.sort();
        let membership = rng.chance(0.5).then(|| MembershipPlan {
            target: *rng.pick(&ids),
            stage: MembershipStage::Remove,
            next_at: Instant::ZERO + rng.duration_between(ms(300), ms(1500)),
            cycles_left: 2,
        });
        let _ = beyond;
        Run {
            config: config.clone(),
            rng,
            now: Instant::ZERO,
            ids,
            nodes,
            world: World {
                net,
                checker: Checker::default(),
                replies: Vec::new(),
                proposals: 0,
                votes_granted: Vec::new(),
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
            jumps: BTreeMap::new(),
            membership,
            keys,
            machine_config: bugs.machine,
            finished_at: None,
            liveness: Vec::new(),
            vote_nemesis,
            pre_vote: shape.pre_vote,
            quick_restarts: std::collections::BTreeSet::new(),
            lease_nemesis,
            mute_at: None,
            slow_inbound: None,
        }
    }

    fn build_nodes(
        rng: &mut SeededRng,
        ids: &[NodeId],
        bugs: &Bugs,
        shape: CoreShape,
    ) -> Vec<SimNode> {
        ids.iter()
            .map(|id| {
                let mut config = Config::new(*id, ids.to_vec());
                config.election_timeout = ELECTION_TIMEOUT;
                config.heartbeat_interval = HEARTBEAT_INTERVAL;
                config.lease_drift_max = LEASE_DRIFT_MAX;
                config.max_inflight_appends = 8;
                config.pre_vote = shape.pre_vote;
                if shape.one_entry_appends {
                    // One entry per append, one append in flight: replication creeps,
                    // which widens the windows old-term commit mistakes need.
                    config.max_entries_bytes_per_append = 1;
                    config.max_inflight_appends = 1;
                }
                // A few keys per chunk: a snapshot spans many chunks (and faults).
                config.snapshot_chunk_bytes = 96;
                #[cfg(feature = "sim-bugs")]
                {
                    config.planted_bug = bugs.core;
                }
                #[cfg(not(feature = "sim-bugs"))]
                let _ = bugs.core;
                let drift = rng.range_u64(0, 2 * DRIFT_PPM_MAX as u64) as i64 - DRIFT_PPM_MAX;
                let clock = NodeClock::new(drift);
                let fork = rng.fork(10 + id.0);
                SimNode::new(config, bugs.machine.clone(), clock, fork, Instant::ZERO)
            })
            .collect()
    }

    fn index(&self, node: NodeId) -> usize {
        (node.0 - 1) as usize
    }

    /// The leader of the highest term among live nodes, as the cluster sees it now.
    fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|node| node.status())
            .filter(|status| status.role == Role::Leader)
            .max_by_key(|status| status.term)
            .map(|status| status.id)
    }

    fn run(&mut self) {
        let loop_steps_max = LOOP_STEPS_PER_STEP * self.config.steps.max(50);
        while self.world.checker.violations.is_empty() {
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
                self.world
                    .checker
                    .violation("nothing left to do".to_string());
                break;
            };
            self.now = self.now.max(next);
            self.step();
            self.crash_after_votes();
            self.check_nodes();
        }
        if let Phase::Liveness { .. } = self.phase
            && self.finished_at.is_none()
            && self.world.checker.violations.is_empty()
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
        let stuck = self
            .clients
            .iter()
            .filter(|client| !client.finished)
            .count();
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|node| node.status())
            .map(|s| {
                format!(
                    "{} {:?} t{} commit {} applied {} last {} (t{}) voters {:?}",
                    s.id,
                    s.role,
                    s.term.0,
                    s.commit.0,
                    s.applied.0,
                    s.last_index.0,
                    s.last_term.0,
                    s.membership.voters
                )
            })
            .collect();
        let text = format!(
            "liveness: {stuck} clients still have operations pending {:?} after the faults \
             stopped; nodes: {nodes:?}; pending: {pending:?}",
            LIVENESS_BOUND
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
        let membership = self.membership.as_ref().map(|plan| plan.next_at);
        let lease_nemesis = self.lease_nemesis.first().copied();
        let mute = self.mute_at.map(|(at, _)| at);
        [
            fault,
            delivery,
            request,
            node,
            client,
            membership,
            lease_nemesis,
            mute,
        ]
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
            let index = self.index(delivery.to);
            if let Some(until) = self.nodes[index].paused_until.filter(|until| *until > now) {
                self.world.net.requeue(delivery, until);
                return;
            }
            if let Some(slow) = &self.slow_inbound
                && slow.node == delivery.to
                && now < slow.until
                && now < delivery.sent_at + slow.extra
            {
                let at = delivery.sent_at + slow.extra;
                self.world.net.requeue(delivery, at);
                return;
            }
            self.nodes[index].on_message(now, delivery.message, &mut self.world);
            self.dispatch_replies();
            return;
        }
        if let Some((at, leader)) = self.mute_at
            && at <= now
        {
            self.mute_at = None;
            self.cut_outbound(leader);
            return;
        }
        if self.lease_nemesis.first().is_some_and(|at| *at <= now) {
            self.lease_nemesis.remove(0);
            self.mute_leader();
            return;
        }
        if self
            .membership
            .as_ref()
            .is_some_and(|plan| plan.next_at <= now)
        {
            self.membership_step();
            return;
        }
        for index in 0..self.nodes.len() {
            if self.nodes[index].deadline(now).is_some_and(|at| at <= now) {
                self.nodes[index].on_deadline(now, &mut self.world);
                self.dispatch_replies();
            }
        }
    }

    fn client_act(&mut self, index: usize) {
        let may_issue = self.phase == Phase::Safety && self.issued < self.config.steps;
        let liveness = matches!(self.phase, Phase::Liveness { .. });
        let was_idle = self.clients[index].is_idle();
        let request = self.clients[index].act(self.now, may_issue, liveness, &mut self.history);
        if was_idle && !self.clients[index].is_idle() && !liveness {
            self.issued += 1;
        }
        if let Some(request) = request {
            let delay = self
                .rng
                .duration_between(Duration::from_micros(20), REQUEST_DELAY_MAX);
            self.request_seq += 1;
            self.requests
                .insert((self.now + delay, self.request_seq), request);
        }
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
        let node = &mut self.nodes[index];
        node.on_request(
            self.now,
            request.client,
            request.attempt,
            request.body,
            &mut self.world,
        );
        self.dispatch_replies();
    }

    fn dispatch_replies(&mut self) {
        for reply in std::mem::take(&mut self.world.replies) {
            let client = reply.client;
            if let Some(text) = self.clients[client].on_reply(self.now, reply, &mut self.history) {
                self.world.checker.violation(text);
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
                self.nodes[index].restart(self.now, &mut self.world.checker);
            }
        }
        self.phase = Phase::Liveness { since: self.now };
        for client in &mut self.clients {
            client.enter_liveness();
        }
    }

    /// The per-step checks on every live node.
    fn check_nodes(&mut self) {
        for node in &self.nodes {
            let Some(status) = node.status() else {
                continue;
            };
            let term_at = |index| node.term_at(index);
            self.world.checker.observe(&status, term_at);
        }
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}
