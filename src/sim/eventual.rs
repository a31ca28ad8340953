//! The eventual-consistency simulator: a cluster of [`AntiEntropy`] engines (one per node and
//! keyspace, a keyspace of every value type) under faults, driven by simulated clients, and
//! judged by the [`checkers`].
//!
//! ```text
//!  seed ─┬─ FaultSchedule (partitions, crashes, pauses, clock jumps, lossy network)
//!        ├─ clients: write (local/quorum/all) and read (local/session/quorum) on every side
//!        ├─ SimNet<SimMessage>  (every message through wire::roundtrip)
//!        └─ per node: NodeClock, 4 engines, a disk (persist batches become durable after
//!           a delay; a crash loses what is not durable), a durable image to restart from
//!
//!  safety phase   faults on, clients on  ──  reads are checked as they complete
//!  liveness phase healed, all restarted, clients off  ──  until every replica's full state
//!                 and Merkle root agree (bounded), then the final-state checkers
//! ```
//!
//! The event loop jumps global time to the earliest of: the next delivery, the next engine
//! deadline (`clock.global_at(engine.poll_timeout())`), the next fsync completion, the next
//! fault, the next client action, and (in the liveness phase) the next convergence probe.
//! After every input to an engine the harness drains it: persist batches go to the disk,
//! messages to the network, events to the clients.
//!
//! Every random choice comes from `SeededRng::new(seed)` and its forks, so a run is a pure
//! function of its [`SimConfig`].
//!
//! # What the checkers know, and how
//!
//! - A write's identity is read from the persist batch the engine hands out right after
//!   `local_write` (its dot is `(node, batch.meta.seq)`, its `lww` stamp the key's marker in
//!   the batch), and cross-checked against the token of its ack (`harness:` violation).
//! - A set remove's observed adds are computed as the engine does, from the node's installed
//!   state merged with the newest state of the key still on its way to the disk (the
//!   engine's pending overlay, which it does not expose).
//! - Reads are checked as they complete: a session read must reflect its token's write, a
//!   quorum read every write acked at `quorum`/`all` before it started, a local read every
//!   write its node persisted before it started. Counter reads are not checked (a value cannot
//!   show one increment); counters are judged on their converged value only.
//! - Engine `check_invariants` runs at every crash and at the end (it rebuilds the Merkle
//!   tree, too costly after every input).
//! - Not modelled: disk errors (every fsync succeeds), client retries.

pub mod checkers;
mod clients;
pub mod cluster;
mod driver;
pub mod history;
mod verdict;

use crate::eventual::{AntiEntropy, EngineConfig, HlcTimestamp};
use crate::rng::SeededRng;
use crate::sim::faults::{FaultEvent, FaultOptions, FaultSchedule};
use crate::sim::net::{NetConfig, SimNet};
use crate::sim::{SeedReport, SimConfig, SimError};
use crate::types::{Instant, NodeId};
use cluster::{SimMessage, SimNode, VALUE_TYPES};
use history::{OpLog, WriteRef};
use std::collections::BTreeMap;
use std::time::Duration;

/// The planted bugs this simulator knows, by their command-line names.
pub const BUG_NAMES: [&str; 3] = [
    "mvreg-drop-sibling",
    "early-tombstone-gc",
    "merkle-forget-key",
];

/// How long the faulty phase lasts; the clients spread their `steps` operations over it.
const SAFETY_PHASE: Duration = Duration::from_secs(8);
/// The longest the cluster may take to converge once everything healed.
const CONVERGENCE_MAX: Duration = Duration::from_secs(30);
/// How often the liveness phase compares the replicas.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// After convergence, how long the cluster keeps running to measure in-sync rounds.
const IN_SYNC_PROBE: Duration = Duration::from_millis(300);
/// Share of seeds on which the whole cluster crashes at once.
const WHOLE_CLUSTER_CRASH_CHANCE: f64 = 0.2;
/// Simulated clients per node.
const CLIENTS_PER_NODE: usize = 2;
/// Hot keys per keyspace (80% of operations): few, so that writes conflict.
const KEYS_PER_KEYSPACE: u64 = 3;
/// Cold keys per keyspace (20%): each written rarely, so most replicas first learn of it
/// from a peer (the path `merkle-forget-key` breaks), and Merkle trees branch more.
const COLD_KEYS_PER_KEYSPACE: u64 = 12;
/// Event-loop iterations per run. A healthy run needs far fewer (each iteration handles
/// everything due at one instant); hitting it means an engine spins and is a violation.
const LOOP_ITERATIONS_MAX: u64 = 2_000_000;
/// Largest monotonic clock jump a fault makes.
const CLOCK_JUMP_MAX: Duration = Duration::from_secs(2);

/// Runs one seed and checks it. Errors only for a configuration that cannot run.
pub fn run_seed(config: &SimConfig) -> Result<SeedReport, SimError> {
    if config.nodes != 3 && config.nodes != 5 {
        return Err(SimError::Nodes {
            nodes: config.nodes,
        });
    }
    let bug = planted_bug(config.bug.as_deref())?;
    let mut sim = Sim::new(config, bug);
    sim.run_safety_phase();
    sim.run_liveness_phase();
    Ok(sim.report())
}

#[cfg(feature = "sim-bugs")]
type Bug = Option<crate::eventual::PlantedBug>;
#[cfg(not(feature = "sim-bugs"))]
type Bug = ();

#[cfg(feature = "sim-bugs")]
fn planted_bug(name: Option<&str>) -> Result<Bug, SimError> {
    let Some(name) = name else {
        return Ok(None);
    };
    crate::eventual::PlantedBug::from_name(name)
        .map(Some)
        .ok_or_else(|| SimError::UnknownBug {
            name: name.to_string(),
            known: BUG_NAMES.join(", "),
        })
}

#[cfg(not(feature = "sim-bugs"))]
fn planted_bug(name: Option<&str>) -> Result<Bug, SimError> {
    match name {
        None => Ok(()),
        Some(_) => Err(SimError::BugsNotBuilt),
    }
}

/// A request a client has in flight at one node.
#[derive(Clone, Debug)]
enum Request {
    Write {
        client: usize,
        node: usize,
        write: WriteRef,
    },
    Read(PendingRead),
}

/// A read in flight and the writes it must reflect.
#[derive(Clone, Debug)]
struct PendingRead {
    client: usize,
    node: usize,
    key: bytes::Bytes,
    /// "local", "session" or "quorum", for violation lines.
    level: &'static str,
    expected: Vec<WriteRef>,
}

/// One simulated client: one request at a time, remembering its session tokens and the
/// `mvreg` contexts it read.
#[derive(Clone, Debug)]
struct Client {
    /// The node it usually talks to.
    home: usize,
    /// When it acts next; `None` while it waits for an answer or has stopped.
    next_at: Option<Instant>,
    /// Its last acked write per (keyspace, key): the token for session reads.
    tokens: BTreeMap<(usize, bytes::Bytes), (crate::eventual::SessionToken, WriteRef)>,
    /// The context of its last `mvreg` read per key, used by its next write there.
    contexts: BTreeMap<bytes::Bytes, crate::eventual::ReadContext>,
    /// The clock that times the `lww` writes this client times itself, as the client library
    /// does; its id (above every node's) breaks ties.
    clock: crate::eventual::hlc::Hlc,
    /// A client-timed `lww` write to send once more, through another node, as a client that
    /// lost the first answer would: (key, value, time).
    resend: Option<(
        bytes::Bytes,
        Option<bytes::Bytes>,
        crate::eventual::HlcTimestamp,
    )>,
}

/// Simulated clients' ids in their `lww` tie-breakers start here, above every node id.
const CLIENT_ID_BASE: u64 = 1 << 32;

/// Counters for the summary line.
#[derive(Clone, Debug, Default)]
struct Tally {
    reads: u64,
    reads_failed: u64,
    writes_refused: u64,
    faults: u64,
    crashes: u64,
    partitions: u64,
    /// Every node crashed at once at some point.
    whole_cluster_crash: bool,
    /// Anti-entropy bytes sent by engines that have since crashed.
    sync_bytes_lost_engines: u64,
}

/// The whole simulated world of one run.
struct Sim {
    config: SimConfig,
    // Only read when planted bugs are built.
    #[cfg_attr(not(feature = "sim-bugs"), allow(dead_code))]
    bug: Bug,
    now: Instant,
    nodes: Vec<SimNode>,
    net: SimNet<SimMessage>,
    faults: FaultSchedule,
    clients: Vec<Client>,
    /// Client decisions.
    rng: SeededRng,
    /// Disk latencies and fault details.
    rng_env: SeededRng,
    engine_seed: u64,
    log: OpLog<HlcTimestamp>,
    requests: BTreeMap<u64, Request>,
    next_request: u64,
    /// Client operations issued so far (the run stops issuing at `config.steps`).
    issued: u64,
    /// Set for the liveness phase: clients finish what they have in flight, then idle.
    clients_stopped: bool,
    violations: Vec<String>,
    tally: Tally,
    healed_at: Instant,
    converged_at: Option<Instant>,
    /// See [`Sim::in_sync_session_bytes`]; measured after convergence.
    in_sync_bytes_max: Option<u64>,
}

impl Sim {
    fn new(config: &SimConfig, bug: Bug) -> Sim {
        let mut root = SeededRng::new(config.seed);
        let mut clock_rng = root.fork(1);
        let ids: Vec<NodeId> = (1..=config.nodes as u64).map(NodeId).collect();
        let nodes = ids
            .iter()
            .map(|id| {
                let drift = clock_rng.range_u64(0, 400) as i64 - 200;
                SimNode::new(*id, crate::sim::clock::NodeClock::new(drift))
            })
            .collect();
        let end = Instant::ZERO + SAFETY_PHASE;
        let faults = FaultSchedule::generate(
            &mut root.fork(2),
            &ids,
            Instant::ZERO,
            end,
            &FaultOptions::all(CLOCK_JUMP_MAX),
        );
        let net = SimNet::new(NetConfig::healthy(), root.fork(3));
        let clients = (0..config.nodes * CLIENTS_PER_NODE)
            .map(|index| Client {
                home: index % config.nodes,
                next_at: Some(Instant::ZERO),
                tokens: BTreeMap::new(),
                contexts: BTreeMap::new(),
                clock: crate::eventual::hlc::Hlc::new(NodeId(CLIENT_ID_BASE + index as u64)),
                resend: None,
            })
            .collect();
        let mut sim = Sim {
            config: config.clone(),
            bug,
            now: Instant::ZERO,
            nodes,
            net,
            faults,
            clients,
            rng: root.fork(4),
            rng_env: root.fork(5),
            engine_seed: root.next_u64(),
            log: OpLog::default(),
            requests: BTreeMap::new(),
            next_request: 0,
            issued: 0,
            clients_stopped: false,
            violations: Vec::new(),
            tally: Tally::default(),
            healed_at: end,
            converged_at: None,
            in_sync_bytes_max: None,
        };
        // Drawn after every other stream, so adding it changed no other choice.
        sim.add_whole_cluster_crash(&mut root.fork(6), &ids);
        for node in 0..sim.nodes.len() {
            sim.start_node(node);
        }
        sim
    }

    /// On some seeds every node crashes at once and restarts a little later: acknowledged
    /// writes must survive `kill -9` of the whole cluster, not only of a minority (which is
    /// all the shared schedule does).
    fn add_whole_cluster_crash(&mut self, rng: &mut SeededRng, ids: &[NodeId]) {
        if !rng.chance(WHOLE_CLUSTER_CRASH_CHANCE) {
            return;
        }
        let at = Instant::ZERO + rng.duration_between(SAFETY_PHASE / 4, SAFETY_PHASE * 3 / 4);
        let restart_at =
            at + rng.duration_between(Duration::from_millis(100), Duration::from_millis(500));
        let mut events = self.faults.events().to_vec();
        events.extend(ids.iter().map(|id| (at, FaultEvent::Crash(*id))));
        events.extend(ids.iter().map(|id| (restart_at, FaultEvent::Restart(*id))));
        self.faults = FaultSchedule::from_events(events);
        self.tally.whole_cluster_crash = true;
    }

    fn engine_configs(&self, node: usize) -> Vec<EngineConfig> {
        let members: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        VALUE_TYPES
            .iter()
            .map(|value_type| {
                #[allow(unused_mut)]
                let mut config =
                    EngineConfig::new(self.nodes[node].id, members.clone(), *value_type);
                #[cfg(feature = "sim-bugs")]
                {
                    config.planted_bug = self.bug;
                }
                config
            })
            .collect()
    }

    fn start_node(&mut self, node: usize) {
        let configs = self.engine_configs(node);
        self.nodes[node].start(configs, self.engine_seed);
    }

    fn run_safety_phase(&mut self) {
        self.run_until(Instant::ZERO + SAFETY_PHASE, false);
    }

    /// Clients stop; the schedule's finale healed and restarted everything at the end of
    /// the safety phase. Run until the replicas agree, at most [`CONVERGENCE_MAX`].
    fn run_liveness_phase(&mut self) {
        self.clients_stopped = true;
        for client in &mut self.clients {
            client.next_at = None;
        }
        self.healed_at = self.now;
        self.run_until(self.healed_at + CONVERGENCE_MAX, true);
        if self.converged_at.is_none() {
            let detail = self
                .divergence()
                .unwrap_or_else(|| "requests pending".to_string());
            self.violations.push(format!(
                "convergence: no convergence within {CONVERGENCE_MAX:?} after heal: {detail}"
            ));
        }
        self.log.close();
        self.check_final_states();
        if self.converged_at.is_some() {
            self.run_until(self.now + IN_SYNC_PROBE, false);
            self.in_sync_bytes_max = self.in_sync_session_bytes();
        }
    }

    /// The costliest in-sync anti-entropy session (bytes both ways) among the last sessions
    /// the engines started: the price of a round when there is nothing to repair.
    fn in_sync_session_bytes(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|node| node.engines.as_ref())
            .flatten()
            .filter_map(|engine| engine.stats().last_session)
            .filter(|session| session.in_sync)
            .map(|session| session.bytes_sent + session.bytes_received)
            .max()
    }

    /// The event loop. In the liveness phase it also probes for convergence and stops at it.
    fn run_until(&mut self, end: Instant, probing: bool) {
        let mut next_probe = self.now;
        for _ in 0..LOOP_ITERATIONS_MAX {
            let probe = probing.then_some(next_probe);
            let Some(at) = self.next_event_at().into_iter().chain(probe).min() else {
                self.now = self.now.max(end);
                return;
            };
            if at > end {
                self.now = self.now.max(end);
                return;
            }
            self.now = self.now.max(at);
            self.step();
            if probing && self.now >= next_probe {
                if self.converged() {
                    self.converged_at = Some(self.now);
                    return;
                }
                next_probe = self.now + PROBE_INTERVAL;
            }
        }
        self.violations.push(format!(
            "liveness: event loop hit {LOOP_ITERATIONS_MAX} iterations at {:?}",
            self.now
        ));
    }

    fn engine_stats_sum(&self, field: impl Fn(&AntiEntropy) -> u64) -> u64 {
        self.nodes
            .iter()
            .filter_map(|node| node.engines.as_ref())
            .flatten()
            .map(field)
            .sum()
    }

    fn report(&self) -> SeedReport {
        let [acked, indeterminate, lost, failed] = checkers::tally(self.log.outcomes().into_iter());
        let rounds = self.converged_at.map_or_else(
            || "never".to_string(),
            |at| {
                let interval = self.engine_configs(0)[0].round_interval.as_nanos().max(1);
                let took = (at - self.healed_at).as_nanos();
                format!(
                    "{} rounds ({:?})",
                    took.div_ceil(interval),
                    at - self.healed_at
                )
            },
        );
        let sync_bytes = self.tally.sync_bytes_lost_engines
            + self.engine_stats_sum(|engine| engine.stats().sync_bytes_sent);
        let net = self.net.stats();
        let summary = format!(
            "eventual seed {} nodes {}: writes {acked} acked / {indeterminate} indeterminate / \
             {lost} lost in crashes / {failed} failed ({} refused), reads {} ({} failed), faults {} ({} crashes{}, {} \
             partitions), converged after {rounds}, anti-entropy {sync_bytes} bytes \
             (in-sync session max {} bytes), messages {} sent / {} delivered",
            self.config.seed,
            self.config.nodes,
            self.tally.writes_refused,
            self.tally.reads,
            self.tally.reads_failed,
            self.tally.faults,
            self.tally.crashes,
            if self.tally.whole_cluster_crash {
                " incl. whole cluster"
            } else {
                ""
            },
            self.tally.partitions,
            self.in_sync_bytes_max
                .map_or_else(|| "?".to_string(), |b| b.to_string()),
            net.sent,
            net.delivered,
        );
        SeedReport {
            seed: self.config.seed,
            violations: self.violations.clone(),
            summary,
        }
    }
}
