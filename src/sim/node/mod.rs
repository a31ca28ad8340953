//! The node simulator: 3 or 5 [`NodeCore`](core::NodeCore)s (catalog, many Raft groups and
//! eventual engines per node, routing, the waiting-request table) on a simulated network and
//! drifting clocks, each over a real in-memory redb [`Store`](crate::storage::Store) that
//! survives its crashes, driven by simulated clients that speak the real client protocol
//! ([`ToNode`] in, [`FromNode`] out).
//!
//! ```text
//!  run_seed(config)
//!   ├─ setup: the admin client creates the base keyspaces (strong, counter, set, lww)
//!   ├─ safety phase: data clients issue `config.steps` operations through the network
//!   │    (following NotLeader hints, retrying strong writes with the same (client, seq),
//!   │    timing out), the admin client creates and drops extra keyspaces and adds and
//!   │    removes a spare node, while the fault schedule partitions, crashes (losing the
//!   │    batch being fsynced), pauses and skews clocks
//!   ├─ finale: heal, healthy network, restart every crashed node
//!   ├─ liveness phase: pending operations finish, the admin finishes its plan, one final
//!   │    linearizable read per strong key, eventual digests agree on every node, then a
//!   │    quiet period so the last drops are persisted
//!   └─ end checks: linearizability per strong key; convergence and no lost acknowledged
//!        write per eventual key; the node's own invariants (below)
//! ```
//!
//! The event loop jumps global time to the earliest of: the next fault, the next client or
//! admin action, the next delivery (peer messages on one network, client requests and
//! answers on another), the next node deadline (a core timer through its clock's
//! `global_at`, an fsync completing, a pause ending), the next watchdog and probe. One event
//! runs per step, in a fixed order of sources, and every choice comes from the seed.
//!
//! The node's own invariants, checked as the run goes and at the end:
//! - every [`ReplyTo`](core::ReplyTo) handed to a core is answered exactly once, within
//!   `request_wait_max` and a little slack of that node's time, unless the node crashed
//!   first; no answer names an unknown `ReplyTo`; at the end no request waits inside a live
//!   core;
//! - a data request on a keyspace whose create was acknowledged before the request left,
//!   and whose drop had not been sent when the answer came back, is never answered
//!   `UnknownKeyspace`;
//! - after the quiet period each member's store holds rows only of group 0 and of keyspaces
//!   its catalog still has: a dropped keyspace left nothing behind;
//! - no core call returns a [`CoreError`](core::CoreError) (fail-stop must not fire in a
//!   correct run).
//!
//! Client traffic is not duplicated by the network (a QUIC stream delivers once), so a
//! strong write refused on every attempt certainly did not apply. It can be lost or delayed;
//! a client that hears nothing times out and retries elsewhere. What the protocol does not
//! tell a client is not checked: a strong delete's answer does not say whether the key
//! existed, so a completed delete stays indeterminate in the history; a set add's dot and a
//! remove's observed adds are unknown (see [`oplog`]). Planted bugs
//! (`SimConfig::bug`, feature `sim-bugs`): the core's `node-lease-read-stale` and
//! `node-drop-keeps-rows`.

mod admin;
mod bank;
mod catalog;
mod checks;
mod client;
mod faults;
mod host;
mod ledger;
mod oplog;
mod watcher;

use crate::node::core;
use crate::protocol::admin::{FromNode, ToNode};
use crate::rng::SeededRng;
use crate::sim::faults::FaultEvent;
use crate::sim::history::History;
use crate::sim::net::{NetConfig, SimNet};
use crate::sim::session::SessionGroup;
use crate::sim::{SeedReport, SimConfig, SimError};
use crate::types::{Instant, NodeId};
use admin::AdminClient;
use bank::BankClient;
use catalog::Catalog;
use client::DataClient;
use host::Host;
use ledger::Ledger;
use oplog::EventualLog;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use watcher::Watcher;

pub use crate::sim::strong::{
    DRIFT_PPM_MAX, ELECTION_TIMEOUT, HEARTBEAT_INTERVAL, JUMP_BUDGET, JUMP_WITHIN_MAX,
    LEASE_DRIFT_MAX,
};

/// How long a client request may wait inside a simulated node before it is answered
/// `Timeout`: a few election timeouts, so a request survives one failover.
pub const REQUEST_WAIT_MAX: Duration = Duration::from_secs(1);
/// What the request-wait invariant allows beyond `REQUEST_WAIT_MAX`, in the node's own time:
/// a timeout fires at its deadline, so this only absorbs event ordering at one instant.
pub const ANSWER_SLACK: Duration = Duration::from_millis(100);
/// A client gives an attempt this long before it tries another node: longer than the node's
/// own wait, so a node that is up answers `Timeout` first.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1_200);
/// Simulated time per client operation of the safety phase (sets the fault horizon).
const TIME_PER_STEP: Duration = Duration::from_millis(25);
/// After the finale, everything pending must complete and converge within this.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(30);
/// After convergence the cluster runs this long before the end checks, so the rows of the
/// last drop are persisted everywhere.
const QUIET: Duration = Duration::from_millis(1_000);
/// How often the request-wait watchdog and the convergence probe run.
const WATCHDOG_INTERVAL: Duration = Duration::from_millis(50);
/// The event loop's bound, per configured step.
const LOOP_STEPS_PER_STEP: u64 = 20_000;
/// Compaction period of the strong groups: small, so snapshots are taken and installed.
const COMPACT_EVERY: u64 = 16;
/// Snapshots go in chunks of a few keys, so a transfer spans many chunks (and crashes).
const SNAPSHOT_CHUNK_BYTES: usize = 160;
/// A paxos keyspace holds so few acceptor states in memory that most rounds read through
/// the store, so an eviction that loses a promise shows up as a checker violation.
const PAXOS_CACHE_KEYS: usize = 3;
/// The sim's links answer within a few ms: a round timeout of a third of the election
/// timeout retries lost rounds as fast as Raft would notice a lost leader.
const PAXOS_ROUND_TIMEOUT: Duration = Duration::from_millis(50);
/// Client sessions expire after this much idleness by the log clock: short, so some expire
/// within a run, and far above the clients' opening window plus the clocks' drift.
const SESSION_TIMEOUT: Duration = Duration::from_secs(5);
const _: () =
    assert!(crate::sim::session::SESSION_OPEN_WINDOW.as_millis() * 3 < SESSION_TIMEOUT.as_millis());
/// Address of the harness itself when it asks a core directly (final reads, catalog lists).
const CHECKER: NodeId = NodeId(99);
/// Data clients have node ids from here up; the admin client has `ADMIN`.
const CLIENT_BASE: u64 = 100;
const ADMIN: NodeId = NodeId(98);
const WATCHER: NodeId = NodeId(97);
/// Bank clients have node ids from here up (below the admin).
const BANK_BASE: u64 = 80;
const BANK_CLIENTS: u64 = 2;
/// What each keyspace keeps for watches: small, so the history is trimmed within a run.
const WATCH_LIMITS: core::WatchLimits = core::WatchLimits {
    changes: 8,
    bytes: 16 * 1024,
};

/// What travels between clients and nodes: a request with the client's own id for it, or the
/// answer to one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ClientWire {
    Request { id: u64, request: ToNode },
    Answer { id: u64, answer: FromNode },
}

/// The planted bugs this harness knows, by name: the node core's and the transaction
/// coordinator's.
pub fn bug_names() -> Vec<&'static str> {
    #[cfg(feature = "sim-bugs")]
    return core::NodeBug::NAMES
        .iter()
        .chain(crate::txn::CoordinatorBug::NAMES)
        .copied()
        .collect();
    #[cfg(not(feature = "sim-bugs"))]
    Vec::new()
}

#[cfg(feature = "sim-bugs")]
type Bug = Option<core::NodeBug>;
#[cfg(not(feature = "sim-bugs"))]
type Bug = ();

#[cfg(feature = "sim-bugs")]
fn parse_bug(name: Option<&str>) -> Result<Bug, SimError> {
    let Some(name) = name else {
        return Ok(None);
    };
    if crate::txn::CoordinatorBug::from_name(name).is_some() {
        return Ok(None); // The bank clients' coordinators carry it.
    }
    core::NodeBug::from_name(name)
        .map(Some)
        .ok_or_else(|| SimError::UnknownBug {
            name: name.to_string(),
            known: bug_names().join(", "),
        })
}

#[cfg(not(feature = "sim-bugs"))]
fn parse_bug(name: Option<&str>) -> Result<Bug, SimError> {
    match name {
        None => Ok(()),
        Some(_) => Err(SimError::BugsNotBuilt),
    }
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
    /// Healed: pending work must finish by `since + LIVENESS_BOUND`.
    Liveness {
        since: Instant,
    },
    /// Converged at `since`: the cluster idles until `since + QUIET`.
    Quiet {
        since: Instant,
    },
    /// The harness reads every eventual key on every member (asked at `since`).
    FinalReads {
        since: Instant,
    },
    Done,
}

/// Counters for the summary.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    pub(crate) partitions: u64,
    pub(crate) crashes: u64,
    pub(crate) pauses: u64,
    pub(crate) jumps: u64,
    pub(crate) jumps_beyond: u64,
    pub(crate) commits: u64,
    pub(crate) answers: u64,
    /// Core timers that were due again right after they fired (see `Host::deadline`).
    pub(crate) timer_spins: u64,
}

/// What every part of the run may touch while a node works: the peer network, answers on
/// their way out, findings, counters, and the randomness of the environment (fsync times).
pub(crate) struct World {
    pub(crate) peers: SimNet<crate::node::PeerMessage>,
    /// (node, reply, answer) as the cores handed them out, for `Run::dispatch_answers`.
    pub(crate) answers: Vec<(NodeId, core::ReplyTo, FromNode)>,
    pub(crate) violations: Vec<String>,
    pub(crate) stats: Stats,
    pub(crate) rng: SeededRng,
}

impl World {
    pub(crate) fn violation(&mut self, text: String) {
        self.violations.push(text);
    }
}

struct Run {
    config: SimConfig,
    bug: Bug,
    rng: SeededRng,
    now: Instant,
    /// The initial members, 1..=nodes.
    ids: Vec<NodeId>,
    /// The node the admin client adds and removes again.
    spare: NodeId,
    hosts: BTreeMap<NodeId, Host>,
    world: World,
    /// Client requests and answers (never duplicated, never partitioned).
    wires: SimNet<ClientWire>,
    ledger: Ledger,
    faults: Vec<(Instant, FaultEvent)>,
    next_fault: usize,
    /// Monotonic jumps per node within the last second, for the lease excuse.
    jumps: BTreeMap<NodeId, Vec<(Instant, Duration)>>,
    clients: Vec<DataClient>,
    admin: AdminClient,
    watcher: Watcher,
    banks: Vec<BankClient>,
    catalog: Catalog,
    history: History,
    oplog: EventualLog,
    phase: Phase,
    issued: u64,
    loop_steps: u64,
    next_watchdog: Instant,
    /// Answers to the harness's own requests (final reads), by reply.
    checker_answers: BTreeMap<core::ReplyTo, FromNode>,
    final_reads: checks::FinalReads,
    converged_at: Option<Instant>,
}

impl Run {
    fn new(config: &SimConfig, bug: Bug) -> Run {
        let mut rng = SeededRng::new(config.seed);
        let ids: Vec<NodeId> = (1..=config.nodes as u64).map(NodeId).collect();
        let spare = NodeId(config.nodes as u64 + 1);
        let horizon = Instant::ZERO + TIME_PER_STEP * config.steps.max(1) as u32;
        let faults = faults::draw(&mut rng.fork(2), &ids, horizon);
        let world = World {
            peers: SimNet::new(NetConfig::healthy(), rng.fork(3)),
            answers: Vec::new(),
            violations: Vec::new(),
            stats: Stats::default(),
            rng: rng.fork(4),
        };
        let catalog = Catalog::new();
        let client_count = rng.range_u64(4, 6) as usize;
        let think_mean = TIME_PER_STEP * client_count as u32 / 2;
        // One or two client sessions, each shared by several clients with requests in flight.
        let groups: Vec<_> = (1..=rng.range_u64(1, 2))
            .map(|group| SessionGroup::new(group * 1_000_000))
            .collect();
        let clients = (0..client_count)
            .map(|index| {
                let fork = rng.fork(100 + index as u64);
                let sessions = std::rc::Rc::clone(&groups[index % groups.len()]);
                DataClient::new(index, client_count, fork, ids.clone(), think_mean, sessions)
            })
            .collect();
        let admin = AdminClient::new(rng.fork(5), ids.clone(), spare, horizon);
        let watcher = Watcher::new(WATCHER, rng.fork(6), ids.clone());
        let txn_bug = txn_bug(config);
        let banks = (0..BANK_CLIENTS)
            .map(|i| {
                BankClient::new(
                    NodeId(BANK_BASE + i),
                    rng.fork(200 + i),
                    ids.clone(),
                    txn_bug,
                )
            })
            .collect();
        let mut run = Run {
            config: config.clone(),
            bug,
            rng,
            now: Instant::ZERO,
            ids: ids.clone(),
            spare,
            hosts: BTreeMap::new(),
            world,
            wires: SimNet::new(NetConfig::healthy(), SeededRng::new(config.seed ^ 0x5EED)),
            ledger: Ledger::default(),
            faults,
            next_fault: 0,
            jumps: BTreeMap::new(),
            clients,
            admin,
            watcher,
            banks,
            catalog,
            history: History::new(),
            oplog: EventualLog::default(),
            phase: Phase::Safety,
            issued: 0,
            loop_steps: 0,
            next_watchdog: Instant::ZERO,
            checker_answers: BTreeMap::new(),
            final_reads: checks::FinalReads::default(),
            converged_at: None,
        };
        for id in ids {
            let members = run.initial_cluster(false);
            run.add_host(id, members, false);
        }
        run
    }

    /// The initial cluster a node boots with: the first members, and the spare too when it
    /// is the spare booting (a new node is started with a cluster that lists it).
    fn initial_cluster(&self, with_spare: bool) -> BTreeMap<NodeId, String> {
        let mut members: BTreeMap<NodeId, String> =
            self.ids.iter().map(|id| (*id, address(*id))).collect();
        if with_spare {
            members.insert(self.spare, address(self.spare));
        }
        members
    }

    /// Starts a node; `join`: the spare, which joins the running cluster.
    fn add_host(&mut self, id: NodeId, members: BTreeMap<NodeId, String>, join: bool) {
        let drift = self.rng.range_u64(0, 2 * DRIFT_PPM_MAX as u64) as i64 - DRIFT_PPM_MAX;
        let mut config = core::CoreConfig::new(id, address(id), members);
        config.join = join;
        config.election_timeout = ELECTION_TIMEOUT;
        config.heartbeat_interval = HEARTBEAT_INTERVAL;
        config.lease_drift_max = LEASE_DRIFT_MAX;
        config.request_wait_max = REQUEST_WAIT_MAX;
        config.compact_every = COMPACT_EVERY;
        config.snapshot_chunk_bytes = SNAPSHOT_CHUNK_BYTES;
        config.session_timeout = SESSION_TIMEOUT;
        config.watch = WATCH_LIMITS;
        config.paxos_cache_keys = PAXOS_CACHE_KEYS;
        config.paxos_round_timeout = PAXOS_ROUND_TIMEOUT;
        #[cfg(feature = "sim-bugs")]
        {
            config.bug = self.bug;
        }
        #[cfg(not(feature = "sim-bugs"))]
        let _ = self.bug;
        let clock = crate::sim::clock::NodeClock::new(drift);
        let seed = self.rng.next_u64();
        let host = Host::new(config, clock, seed, self.now, &mut self.world);
        self.hosts.insert(id, host);
    }

    fn run(&mut self) {
        let loop_steps_max = LOOP_STEPS_PER_STEP * self.config.steps.max(50);
        while self.phase != Phase::Done {
            self.loop_steps += 1;
            if self.loop_steps > loop_steps_max {
                let text = format!("liveness: event loop exceeded {loop_steps_max} steps");
                self.world.violation(text);
                break;
            }
            if self.world.violations.len() > 20 {
                break; // Enough to go on; the rest would repeat.
            }
            let Some(next) = self.next_event_at() else {
                self.world
                    .violation("liveness: nothing left to do".to_string());
                break;
            };
            self.now = self.now.max(next);
            self.step();
        }
    }

    fn next_event_at(&self) -> Option<Instant> {
        let fault = self.faults.get(self.next_fault).map(|(at, _)| *at);
        let hosts = self
            .hosts
            .values()
            .filter_map(|h| h.deadline(self.now))
            .min();
        let clients = self.clients.iter().filter_map(DataClient::deadline).min();
        let banks = self.banks.iter().filter_map(BankClient::deadline).min();
        [
            banks,
            fault,
            self.wires.next_delivery_at(),
            self.world.peers.next_delivery_at(),
            hosts,
            clients,
            self.admin.deadline(),
            self.watcher.deadline(),
            Some(self.next_watchdog),
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
        if self.admin.deadline().is_some_and(|at| at <= now) {
            self.admin_act();
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
        if let Some(index) = self
            .banks
            .iter()
            .position(|b| b.deadline().is_some_and(|at| at <= now))
        {
            let may_issue = self.phase == Phase::Safety;
            let bank = &mut self.banks[index];
            let sends = bank.act(now, may_issue, &mut self.world.violations);
            let from = bank.addr;
            for (to, id, request) in sends {
                self.wires
                    .send(now, from, to, ClientWire::Request { id, request });
            }
            return;
        }
        if self.watcher.deadline().is_some_and(|at| at <= now) {
            for (to, id, request) in self.watcher.act(now) {
                let wire = ClientWire::Request { id, request };
                self.wires.send(now, WATCHER, to, wire);
            }
            return;
        }
        if let Some(delivery) = self.wires.pop_due(now) {
            self.deliver_wire(delivery);
            return;
        }
        if let Some(delivery) = self.world.peers.pop_due(now) {
            self.deliver_peer(delivery);
            return;
        }
        let due: Vec<NodeId> = self
            .hosts
            .iter()
            .filter(|(_, host)| host.deadline(now).is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        if !due.is_empty() {
            for id in due {
                if let Some(host) = self.hosts.get_mut(&id) {
                    host.on_deadline(now, &mut self.world);
                }
            }
            self.dispatch_answers();
            return;
        }
        if self.next_watchdog <= now {
            self.next_watchdog = now + WATCHDOG_INTERVAL;
            self.watchdog();
        }
    }

    fn client_act(&mut self, index: usize) {
        let may_issue = self.phase == Phase::Safety && self.issued < self.config.steps;
        let liveness = !matches!(self.phase, Phase::Safety);
        let client = &mut self.clients[index];
        let was_idle = client.is_idle();
        let context = client::Context {
            now: self.now,
            catalog: &self.catalog,
            history: &mut self.history,
            oplog: &mut self.oplog,
            violations: &mut self.world.violations,
        };
        let sends = client.act(context, may_issue, liveness);
        if was_idle && !client.is_idle() && !liveness {
            self.issued += 1;
        }
        let from = client.addr;
        for (to, id, request) in sends {
            self.wires
                .send(self.now, from, to, ClientWire::Request { id, request });
        }
    }

    fn admin_act(&mut self) {
        let out = self.admin.act(self.now, &mut self.catalog);
        self.carry_out_admin(out);
    }

    /// What the admin client asked of the harness: requests to send, the spare to boot or
    /// to stop.
    fn carry_out_admin(&mut self, out: admin::Outcome) {
        if out.boot_spare && !self.hosts.contains_key(&self.spare) {
            let members = self.initial_cluster(true);
            self.add_host(self.spare, members, true);
        }
        if out.stop_spare
            && let Some(host) = self.hosts.get_mut(&self.spare)
        {
            host.crash();
            self.ledger.crashed(self.spare);
            self.world.peers.drop_node(self.spare);
            self.wires.drop_node(self.spare);
        }
        for (to, id, request) in out.sends {
            self.wires
                .send(self.now, ADMIN, to, ClientWire::Request { id, request });
        }
        for (node, text) in out.violations {
            let view = node.map_or_else(String::new, |node| self.node_view(node));
            self.world.violation(format!("{text}{view}"));
        }
    }

    fn deliver_wire(&mut self, delivery: crate::sim::net::Delivery<ClientWire>) {
        match delivery.message {
            ClientWire::Request { id, request } => {
                let Some(host) = self.hosts.get_mut(&delivery.to) else {
                    return;
                };
                if !host.is_up() {
                    return; // Lost with the node's sockets: the client times out.
                }
                if let Some(until) = host.paused_until(self.now) {
                    let delivery = crate::sim::net::Delivery {
                        message: ClientWire::Request { id, request },
                        ..delivery
                    };
                    self.wires.requeue(delivery, until);
                    return;
                }
                let local = host.local(self.now);
                let reply =
                    self.ledger
                        .hand(delivery.to, delivery.from, id, local, host.incarnation);
                host.on_client(self.now, reply, request, &mut self.world);
                self.dispatch_answers();
            }
            ClientWire::Answer { id, answer } => self.answer_arrived(delivery.to, id, answer),
        }
    }

    fn answer_arrived(&mut self, to: NodeId, id: u64, answer: FromNode) {
        if to == WATCHER {
            let violations = &mut self.world.violations;
            self.watcher.on_answer(self.now, id, answer, violations);
            return;
        }
        if let Some(bank) = self.banks.iter_mut().find(|bank| bank.addr == to) {
            let sends = bank.on_answer(self.now, id, answer, &mut self.world.violations);
            for (node, id, request) in sends {
                self.wires
                    .send(self.now, to, node, ClientWire::Request { id, request });
            }
            return;
        }
        if to == ADMIN {
            let out = self
                .admin
                .on_answer(self.now, id, answer, &mut self.catalog);
            self.carry_out_admin(out);
            return;
        }
        let Some(client) = self.clients.iter_mut().find(|client| client.addr == to) else {
            return;
        };
        let context = client::Context {
            now: self.now,
            catalog: &self.catalog,
            history: &mut self.history,
            oplog: &mut self.oplog,
            violations: &mut self.world.violations,
        };
        let sends = client.on_answer(context, id, answer);
        let from = client.addr;
        for (to, id, request) in sends {
            self.wires
                .send(self.now, from, to, ClientWire::Request { id, request });
        }
    }

    fn deliver_peer(&mut self, delivery: crate::sim::net::Delivery<crate::node::PeerMessage>) {
        let Some(host) = self.hosts.get_mut(&delivery.to) else {
            return;
        };
        if !host.is_up() {
            return;
        }
        if let Some(until) = host.paused_until(self.now) {
            self.world.peers.requeue(delivery, until);
            return;
        }
        host.on_peer(self.now, delivery.from, delivery.message, &mut self.world);
        self.dispatch_answers();
    }

    /// Sends what the cores answered to the clients, checking each answer against the
    /// ledger on the way.
    fn dispatch_answers(&mut self) {
        for (node, reply, answer) in std::mem::take(&mut self.world.answers) {
            self.world.stats.answers += 1;
            let handed = match self.ledger.answered(node, reply) {
                Ok(handed) => handed,
                Err(text) => {
                    self.world.violation(text);
                    continue;
                }
            };
            if handed.client == CHECKER {
                self.checker_answers.insert(reply, answer);
                continue;
            }
            let message = ClientWire::Answer {
                id: handed.request,
                answer,
            };
            self.wires.send(self.now, node, handed.client, message);
        }
    }

    /// The request-wait invariant on every running node, and the phase transitions that
    /// depend on the whole cluster.
    fn watchdog(&mut self) {
        for (id, host) in &self.hosts {
            if !host.is_up() || host.paused_until(self.now).is_some() {
                continue;
            }
            let local = host.local(self.now);
            let limit = REQUEST_WAIT_MAX + ANSWER_SLACK;
            for text in self.ledger.overdue(*id, local, limit) {
                self.world.violation(text);
            }
        }
        match self.phase {
            Phase::Liveness { since } => self.liveness_probe(since),
            Phase::Quiet { since } if self.now >= since + QUIET => {
                self.phase = Phase::FinalReads { since: self.now };
                self.start_final_reads();
            }
            Phase::FinalReads { since } if self.final_reads_done(since) => {
                self.end_checks();
                self.phase = Phase::Done;
            }
            _ => {}
        }
    }

    /// Everything heals: the safety phase is over.
    fn finale(&mut self) {
        self.faults.truncate(self.next_fault);
        self.world.peers.heal();
        self.world.peers.set_config(NetConfig::healthy());
        self.wires.set_config(NetConfig::healthy());
        let down: Vec<NodeId> = self
            .ids
            .iter()
            .copied()
            .filter(|id| self.hosts.get(id).is_some_and(|h| !h.is_up()))
            .collect();
        for id in down {
            self.restart(id);
        }
        self.phase = Phase::Liveness { since: self.now };
        for client in &mut self.clients {
            client.enter_liveness();
        }
        for bank in &mut self.banks {
            bank.enter_liveness();
        }
        self.admin.enter_liveness(self.now);
    }

    fn restart(&mut self, id: NodeId) {
        let seed = self.rng.next_u64();
        if let Some(host) = self.hosts.get_mut(&id)
            && !host.is_up()
        {
            host.restart(self.now, seed, &mut self.world);
            self.dispatch_answers();
        }
    }

    /// The members the run's checks look at: the first nodes, and the spare while the
    /// admin client has it in the cluster.
    fn members(&self) -> Vec<NodeId> {
        let mut members = self.ids.clone();
        if self.admin.spare_is_member() {
            members.push(self.spare);
        }
        members
    }
}

impl Run {
    /// How `node` sees the cluster now, for a violation line: members and the catalog's
    /// group as it has applied it.
    fn node_view(&self, node: NodeId) -> String {
        let Some(host) = self.hosts.get(&node) else {
            return String::new();
        };
        let (Some(core), Some(status)) = (host.core(), host.status()) else {
            return format!(" ({node} is down)");
        };
        let members: Vec<NodeId> = core.members().keys().copied().collect();
        let catalog = status.strong.first().map_or_else(String::new, |g| {
            format!(
                "; its catalog: {} in term {}, leader {:?}, commit {}, applied {}",
                g.role, g.term.0, g.leader, g.commit.0, g.applied.0
            )
        });
        format!(" ({node} knows members {members:?}{catalog})")
    }
}

/// The planted coordinator bug the seed's config names, if any.
fn txn_bug(config: &SimConfig) -> Option<crate::txn::CoordinatorBug> {
    #[cfg(feature = "sim-bugs")]
    return config
        .bug
        .as_deref()
        .and_then(crate::txn::CoordinatorBug::from_name);
    #[cfg(not(feature = "sim-bugs"))]
    {
        let _ = config;
        None
    }
}

/// A node's advertised address. The core does not resolve it.
fn address(id: NodeId) -> String {
    format!("n{}.sim:7000", id.0)
}
