//! The node core: everything a node decides, without IO, the way `quinn-proto` is to `quinn`.
//!
//! ```text
//!   handle_peer ─────┐                         ┌─▶ poll_transmit   (send at once)
//!   handle_client ───┼─▶ NodeCore ─────────────┼─▶ poll_persist    (one Batch in flight)
//!   handle_timeout ──┘   catalog (group 0),    │      persisted ◀── the shell committed it
//!   (now, wall)          strong replicas,      └─▶ poll_answer     (ReplyTo, FromNode)
//!                        eventual engines,
//!                        waiting requests
//! ```
//!
//! The core owns the catalog, every strong keyspace's [`Replica`], every eventual engine, the
//! table of waiting client requests, routing and the membership policy. It takes time as an
//! argument, draws randomness from a seed, reads the store only through [`Durable`] (when a
//! keyspace starts), and writes nothing itself: what must be durable leaves as one
//! [`Batch`] at a time, and the messages and answers that depend on it leave only after
//! [`NodeCore::persisted`] (persist-before-send: [the Ready contract](crate::raft#the-ready-contract)
//! for Raft, [the persistence contract](crate::eventual#the-persistence-contract) for eventual).
//! The shell (`node::driver`) feeds it sockets, a clock and redb; the simulator (`sim::node`)
//! feeds it a simulated network, drifting clocks and an in-memory store with crashes.
//!
//! Inputs may arrive while a batch is in flight. A replica that breaks a local invariant as it
//! applies ends the core with [`CoreError::Invariant`] (fail-stop: the node exits rather than
//! serve state its group never held; a restart rebuilds from the store).

mod admin;
mod admit;
pub mod backup;
pub mod catalog;
mod paxos;
mod requests;
mod translate;
mod waiting;
pub mod watch;

use crate::eventual::{self, AntiEntropy, EngineConfig, GossipMessage, KeyspaceStore, StateStore};
use crate::protocol::KeyspaceMode;
use crate::protocol::admin::{FromNode, ToNode};
use crate::raft::{Config as RaftConfig, Envelope, RestoredState, SnapshotMeta};
use crate::rng::SeededRng;
use crate::storage::{Batch, StorageError};
use crate::strong::{
    ApplyFault, ClientId, DurableState, MachineConfig, MachineStore, Replica, ReplicaConfig,
    ReplicaReady,
};
use crate::types::{GroupId, Instant, KeyspaceId, NodeId, WallMillis};
pub use admit::{Admitted, admit, session_of};
use catalog::{CATALOG_GROUP, CATALOG_NAME};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
pub use waiting::ReplyTo;
use waiting::WaitTable;
pub use watch::WatchLimits;

/// What nodes send each other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerMessage {
    Raft {
        group: GroupId,
        envelope: Envelope,
    },
    Gossip {
        keyspace: KeyspaceId,
        message: GossipMessage,
    },
    /// A paxos keyspace's message (added last: the wire encodes the variant's index).
    Paxos {
        keyspace: KeyspaceId,
        envelope: crate::paxos::Envelope,
    },
}

/// A message for a peer.
#[derive(Clone, Debug, PartialEq)]
pub struct Transmit {
    pub to: NodeId,
    pub message: PeerMessage,
}

/// What the core reads of the store: the durable image of a group when it starts, and which
/// keyspaces have rows at all (so a drop a crash interrupted is finished). The strong state
/// machines ([`MachineStore`]) and the eventual engines ([`StateStore`]) read their keys
/// through it as they run.
pub trait Durable: MachineStore + StateStore {
    fn raft_restore(&self, group: GroupId) -> Result<RestoredState, StorageError>;
    /// Every group, eventual and paxos keyspace id that has a row (group 0 included).
    fn stored_keyspaces(&self) -> Result<BTreeSet<KeyspaceId>, StorageError>;
    /// `key`'s acceptor state in paxos keyspace `keyspace`, as the last persisted batch left
    /// it (`None`: never persisted).
    fn paxos_acceptor(
        &self,
        keyspace: KeyspaceId,
        key: &[u8],
    ) -> Result<Option<crate::paxos::AcceptorState>, StorageError>;
    /// The highest paxos incarnation a start made durable (0: none).
    fn paxos_incarnation(&self) -> Result<u64, StorageError>;
}

/// A deliberate bug at the node layer, to prove the node simulator's checkers catch it.
/// Only a build with the `sim-bugs` feature can switch one on ([`CoreConfig`]'s `bug`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeBug {
    /// A lease read is served from the local state on whatever node took it.
    LeaseReadStale,
    /// A dropped keyspace's rows are never deleted.
    DropKeepsRows,
    /// A strong keyspace's watch history leaves out every fifth revision's change.
    WatchSkipsChange,
}

impl NodeBug {
    pub const NAMES: &'static [&'static str] = &[
        "node-lease-read-stale",
        "node-drop-keeps-rows",
        "node-watch-skips-change",
    ];

    pub fn from_name(name: &str) -> Option<NodeBug> {
        match name {
            "node-lease-read-stale" => Some(NodeBug::LeaseReadStale),
            "node-drop-keeps-rows" => Some(NodeBug::DropKeepsRows),
            "node-watch-skips-change" => Some(NodeBug::WatchSkipsChange),
            _ => None,
        }
    }
}

/// How one node is set up.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub id: NodeId,
    /// This node's advertised address (for status).
    pub address: String,
    /// The members the node was started with, before any catalog change.
    pub initial_cluster: BTreeMap<NodeId, String>,
    /// This node joins a running cluster: group 0's voters come from the cluster's leader
    /// (its log or snapshot), never from `initial_cluster`, so the node cannot campaign on a
    /// configuration the founders never had. Moot once the node holds group 0's configuration.
    pub join: bool,
    pub election_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub lease_drift_max: Duration,
    /// How long a client request may wait inside the node before it is answered `Timeout`.
    pub request_wait_max: Duration,
    /// Take a snapshot of a strong keyspace (and compact its log) every this many entries.
    pub compact_every: u64,
    /// A learner is promoted to voter once it holds the log to within this many entries.
    pub learner_lag_max: u64,
    /// Snapshots stream to followers in chunks of about this many bytes.
    pub snapshot_chunk_bytes: usize,
    /// Bytes one anti-entropy round of an eventual keyspace may move: how fast a new or
    /// returning member is repaired (the engine's own default suits a LAN of small keyspaces).
    pub gossip_round_bytes: usize,
    /// How far ahead of this node's wall clock a peer's `lww` stamp may be.
    pub clock_skew_max: Duration,
    /// A strong keyspace forgets a client session idle this long by the log clock (the
    /// leaders' wall clocks). Every node of a cluster must use the same value.
    pub session_timeout: Duration,
    /// What each keyspace keeps for watches.
    pub watch: WatchLimits,
    /// A paxos round with no quorum of answers after this long is retried.
    pub paxos_round_timeout: Duration,
    /// Acceptor states each paxos keyspace holds in memory, at most (about: those changed
    /// and not yet persisted come on top); the rest are read from the store.
    pub paxos_cache_keys: usize,
    #[cfg(feature = "sim-bugs")]
    pub bug: Option<NodeBug>,
}

impl CoreConfig {
    /// How long a client request may wait inside a real node. Below the client library's
    /// default timeout, so the client hears a typed `Timeout` rather than giving up blind.
    pub const REQUEST_WAIT_MAX: Duration = Duration::from_secs(4);

    /// The settings of a real node: Raft margins for real links and fsyncs on a loaded
    /// machine, wider than the simulator's LAN defaults.
    pub fn new(
        id: NodeId,
        address: String,
        initial_cluster: BTreeMap<NodeId, String>,
    ) -> CoreConfig {
        CoreConfig {
            id,
            address,
            initial_cluster,
            join: false,
            election_timeout: Duration::from_millis(500),
            heartbeat_interval: Duration::from_millis(100),
            lease_drift_max: Duration::from_millis(50),
            request_wait_max: Self::REQUEST_WAIT_MAX,
            compact_every: 10_000,
            learner_lag_max: 64,
            snapshot_chunk_bytes: RaftConfig::new(id, Vec::new()).snapshot_chunk_bytes,
            gossip_round_bytes: 1024 * 1024,
            clock_skew_max: Duration::from_secs(300),
            session_timeout: crate::strong::SESSION_TIMEOUT_DEFAULT,
            watch: WatchLimits::default(),
            // Room for two fsyncs and a round trip on a loaded machine: a shorter round
            // retries rounds that were about to succeed, and retries collide.
            paxos_round_timeout: Duration::from_millis(200),
            // About 100 bytes a state plus the value: tens of MB for small values.
            paxos_cache_keys: 100_000,
            #[cfg(feature = "sim-bugs")]
            bug: None,
        }
    }

    /// Whether `bug` is planted.
    fn planted(&self, bug: NodeBug) -> bool {
        #[cfg(feature = "sim-bugs")]
        return self.bug == Some(bug);
        #[cfg(not(feature = "sim-bugs"))]
        {
            let _ = bug;
            false
        }
    }
}

/// Why the core stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    #[error("storage")]
    Storage(#[from] StorageError),
    #[error("starting: {0}")]
    Boot(String),
    /// A replica broke a local invariant (an entry applied out of order, a snapshot that does
    /// not decode or does not match): its state may have diverged from its group's, so the
    /// node stops instead of serving it. A restart rebuilds the group from the store.
    #[error("raft group {} broke a local invariant", group.0)]
    Invariant {
        group: GroupId,
        #[source]
        fault: ApplyFault,
    },
    /// An eventual keyspace could not read its rows: what it did since may rest on a wrong
    /// read, so nothing more of it is persisted, sent or answered; the node stops.
    #[error("eventual keyspace {} cannot read its storage", keyspace.0)]
    EventualStorage {
        keyspace: KeyspaceId,
        #[source]
        fault: eventual::StoreError,
    },
    /// A paxos keyspace could not read an acceptor state: an acceptor that answers from a
    /// wrong read could break a promise, so the node stops.
    #[error("paxos keyspace {} cannot read its storage", keyspace.0)]
    PaxosStorage {
        keyspace: KeyspaceId,
        #[source]
        fault: crate::paxos::StoreError,
    },
}

/// A strong keyspace (or the catalog) on this node.
struct StrongKeyspace {
    name: String,
    replica: Replica<u64>,
    /// Recent changes, for watches.
    history: watch::History,
}

/// An eventual keyspace on this node.
struct EventualKeyspace {
    name: String,
    engine: AntiEntropy,
    /// When this node last finished an anti-entropy round, for status.
    last_round_at: Option<Instant>,
    /// The keys that changed here lately, for watches.
    feed: watch::Feed,
}

/// The batch in flight: what to hand back to the cores once it is durable.
struct InFlight {
    readies: Vec<(GroupId, ReplicaReady)>,
    /// Each engine batch, with the keys it changes (for the keyspace's feed).
    persists: Vec<(KeyspaceId, eventual::PersistId, Vec<bytes::Bytes>)>,
    /// Restore chunks the batch carries.
    restore: backup::RestoreBatch,
    /// Paxos Readies whose states the batch holds.
    paxos: Vec<paxos::PaxosInFlight>,
    /// Whether the batch holds this start's paxos incarnation.
    incarnation: bool,
}

/// Everything a node decides.
pub struct NodeCore {
    config: CoreConfig,
    durable: Arc<dyn Durable + Send + Sync>,
    /// The latest time an input brought, and the wall clock with it.
    now: Instant,
    wall: WallMillis,
    booted_at: Instant,
    /// Members and their addresses (see [`catalog::members`]).
    members: BTreeMap<NodeId, String>,
    /// Group 0 and every strong keyspace, by group id (= keyspace id).
    groups: BTreeMap<GroupId, StrongKeyspace>,
    eventual: BTreeMap<KeyspaceId, EventualKeyspace>,
    paxos: BTreeMap<KeyspaceId, paxos::PaxosKeyspace>,
    /// This start's paxos incarnation: one above the durable counter at boot.
    paxos_incarnation: u64,
    /// Whether a persisted batch holds `paxos_incarnation`: until then no paxos message
    /// leaves (a crash before would let the next start reuse its ballots).
    paxos_incarnation_durable: bool,
    /// Paxos messages this node addressed to itself, handed back by the next
    /// `poll_persist` (persisted ones only once their batch is durable).
    paxos_loopback: VecDeque<(KeyspaceId, crate::paxos::Envelope)>,
    /// The keyspaces running here, by name.
    names: BTreeMap<String, (KeyspaceId, KeyspaceMode)>,
    waiting: WaitTable,
    /// The watch polls in `waiting`, by keyspace.
    watchers: BTreeSet<(KeyspaceId, u64)>,
    /// Proposal ids start at a random point per incarnation (they must never repeat in a
    /// group, across nodes and restarts).
    next_proposal: u64,
    /// The identity under which this node proposes catalog changes.
    admin_client: ClientId,
    next_admin_seq: u64,
    /// When each peer was last heard from (any message), to tell a minority side.
    last_heard: BTreeMap<NodeId, Instant>,
    /// Compactions decided after apply, persisted with the next batch.
    compactions: Vec<(GroupId, SnapshotMeta)>,
    /// Keyspaces whose rows go with the next batch.
    drops: BTreeSet<KeyspaceId>,
    in_flight: Option<InFlight>,
    transmits: VecDeque<Transmit>,
    answers: VecDeque<(ReplyTo, FromNode)>,
    random: SeededRng,
    /// Open backups and keyspaces being restored.
    backups: backup::Backups,
}

impl NodeCore {
    /// Builds the core from the store: group 0 from its durable image, then every keyspace
    /// its catalog holds.
    pub fn boot(
        config: CoreConfig,
        durable: Arc<dyn Durable + Send + Sync>,
        seed: u64,
        now: Instant,
    ) -> Result<NodeCore, CoreError> {
        let mut random = SeededRng::new(seed);
        let members = config.initial_cluster.clone();
        let paxos_incarnation = durable.paxos_incarnation()? + 1;
        let mut core = NodeCore {
            config,
            durable,
            now,
            wall: WallMillis(0),
            booted_at: now,
            members,
            groups: BTreeMap::new(),
            eventual: BTreeMap::new(),
            paxos: BTreeMap::new(),
            paxos_incarnation,
            paxos_incarnation_durable: false,
            paxos_loopback: VecDeque::new(),
            names: BTreeMap::new(),
            waiting: WaitTable::new(),
            watchers: BTreeSet::new(),
            next_proposal: random.next_u64() >> 1,
            admin_client: ClientId(random.next_u64()),
            next_admin_seq: 1,
            last_heard: BTreeMap::new(),
            compactions: Vec::new(),
            drops: BTreeSet::new(),
            in_flight: None,
            transmits: VecDeque::new(),
            answers: VecDeque::new(),
            random,
            backups: backup::Backups::default(),
        };
        // A joiner waits for the leader's configuration (see `CoreConfig::join`).
        let voters = if core.config.join {
            Vec::new()
        } else {
            core.members.keys().copied().collect()
        };
        let replica = core.boot_replica(CATALOG_GROUP, voters)?;
        let name = CATALOG_NAME.to_string();
        let history = watch::History::new(replica.machine().applied());
        let catalog = StrongKeyspace {
            name,
            replica,
            history,
        };
        core.groups.insert(CATALOG_GROUP, catalog);
        core.reconcile()?;
        Ok(core)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Members and their addresses, as the catalog has them.
    pub fn members(&self) -> &BTreeMap<NodeId, String> {
        &self.members
    }

    /// Client requests waiting inside the core.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn advance(&mut self, now: Instant, wall: WallMillis) {
        self.now = self.now.max(now);
        self.wall = wall;
    }

    /// A message from a peer (whose identity the transport checked).
    pub fn handle_peer(
        &mut self,
        now: Instant,
        wall: WallMillis,
        from: NodeId,
        message: PeerMessage,
    ) {
        self.advance(now, wall);
        self.last_heard.insert(from, self.now);
        match message {
            PeerMessage::Raft { group, envelope } => {
                // The sender's identity is checked; the envelope must agree.
                if envelope.from != from || envelope.to != self.config.id {
                    return;
                }
                // A group this node has not started yet (catalog not applied here) or has
                // dropped: Raft resends, so dropping the message is safe.
                if let Some(group) = self.groups.get_mut(&group) {
                    group.replica.handle_message(self.now, envelope);
                }
            }
            PeerMessage::Gossip { keyspace, message } => {
                if let Some(engine) = self.eventual.get_mut(&keyspace) {
                    engine.engine.handle_message(self.now, wall, from, message);
                    self.drain_engine(keyspace);
                }
            }
            PeerMessage::Paxos { keyspace, envelope } => {
                self.handle_paxos(from, keyspace, envelope);
            }
        }
    }

    /// A request from a client, let in by [`admit`]; its answer comes out of
    /// [`NodeCore::poll_answer`] with `reply`.
    pub fn handle_client(
        &mut self,
        now: Instant,
        wall: WallMillis,
        reply: ReplyTo,
        request: Admitted,
    ) {
        self.advance(now, wall);
        match request.into_request() {
            ToNode::Data(request) => {
                let deadline = self.now + self.config.request_wait_max;
                self.route(request, reply, deadline, false);
            }
            ToNode::Admin(request) => self.admin_request(request, reply),
        }
    }

    /// The earliest moment something is due.
    #[must_use = "the driver must arm a timer for handle_timeout"]
    pub fn poll_timeout(&self) -> Instant {
        let groups = self
            .groups
            .values()
            .filter_map(|g| g.replica.poll_timeout());
        let engines = self
            .eventual
            .values()
            .filter_map(|e| e.engine.poll_timeout());
        let idle = self.now + Duration::from_secs(1);
        groups
            .chain(engines)
            .chain(self.paxos_poll_timeout())
            .chain(self.waiting.next_deadline())
            .fold(idle, Instant::min)
    }

    /// Fires the timers that are due, moves voters, and times out requests that waited too long.
    pub fn handle_timeout(&mut self, now: Instant, wall: WallMillis) {
        self.advance(now, wall);
        let now = self.now;
        self.move_voters();
        for group in self.groups.values_mut() {
            if group.replica.poll_timeout().is_some_and(|at| at <= now) {
                group.replica.handle_timeout(now);
            }
        }
        for keyspace in self.eventual.values_mut() {
            if keyspace.engine.poll_timeout().is_some_and(|at| at <= now) {
                let rounds = keyspace.engine.stats().rounds;
                keyspace.engine.handle_timeout(now, wall);
                if keyspace.engine.stats().rounds != rounds {
                    keyspace.last_round_at = Some(now);
                }
            }
        }
        self.drain_engines();
        self.close_idle_backups();
        self.paxos_timeouts();
        for tag in self.waiting.expired(now) {
            self.time_out(tag);
        }
    }

    #[must_use = "a transmit left unsent is a lost message"]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use = "a client waits for this answer"]
    pub fn poll_answer(&mut self) -> Option<(ReplyTo, FromNode)> {
        self.answers.pop_front()
    }

    /// What must be durable next, as one batch (one transaction, one fsync): every group's
    /// Ready (its early messages go out now), every engine's persist batches, compactions and
    /// dropped keyspaces' rows. `None` while a batch is in flight or when there is nothing.
    #[must_use = "the batch must be written, then `persisted` called"]
    pub fn poll_persist(&mut self) -> Result<Option<Batch>, CoreError> {
        if self.in_flight.is_some() {
            return Ok(None);
        }
        let mut batch = Batch::new();
        for (id, snapshot) in self.compactions.drain(..) {
            batch.raft_compaction(id, snapshot);
        }
        for id in std::mem::take(&mut self.drops) {
            batch.drop_keyspace(id);
        }
        let restore = self.take_restore_batch(&mut batch);
        let mut in_flight = InFlight {
            readies: Vec::new(),
            persists: Vec::new(),
            restore,
            paxos: Vec::new(),
            incarnation: false,
        };
        // The first batch of a start makes its incarnation durable (see `paxos`).
        if !self.paxos_incarnation_durable {
            batch.paxos_incarnation(self.paxos_incarnation);
            in_flight.incarnation = true;
        }
        in_flight.paxos = self.paxos_poll_persist(&mut batch)?;
        for (group, keyspace) in &mut self.groups {
            let Some(mut ready) = keyspace.replica.take_ready() else {
                continue;
            };
            if let Some(raft) = &ready.raft {
                push_raft(&mut self.transmits, *group, &raft.messages);
                batch.raft_ready(*group, raft);
            }
            batch.machine_writes(*group, std::mem::take(&mut ready.machine));
            in_flight.readies.push((*group, ready));
        }
        for (id, keyspace) in &mut self.eventual {
            if let Some(fault) = keyspace.engine.fault() {
                return Err(CoreError::EventualStorage {
                    keyspace: *id,
                    fault,
                });
            }
            while let Some(persist) = keyspace.engine.poll_persist() {
                // A row deleted is a collected tombstone: no change a reader sees.
                let changed = persist
                    .keys
                    .iter()
                    .filter(|(_, row)| row.is_some())
                    .map(|(key, _)| key.clone())
                    .collect();
                in_flight.persists.push((*id, persist.id, changed));
                batch.eventual_persist(*id, persist);
            }
        }
        let nothing = in_flight.readies.is_empty()
            && in_flight.persists.is_empty()
            && in_flight.paxos.is_empty();
        if batch.is_empty() && nothing {
            // Restore chunks that changed nothing durable are answered now.
            self.restore_persisted(in_flight.restore)?;
            return Ok(None);
        }
        self.in_flight = Some(in_flight);
        Ok(Some(batch))
    }

    /// The batch [`NodeCore::poll_persist`] handed out is durable: hand every Ready back
    /// (its promises leave now), apply, answer; report the engines' persisted batches.
    pub fn persisted(&mut self, now: Instant, wall: WallMillis) -> Result<(), CoreError> {
        self.advance(now, wall);
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(());
        };
        if in_flight.incarnation {
            self.paxos_incarnation_durable = true;
        }
        self.paxos_persisted(in_flight.paxos);
        for (group, ready) in in_flight.readies {
            self.ready_persisted(group, ready)?;
        }
        for (id, batch, changed) in in_flight.persists {
            if let Some(keyspace) = self.eventual.get_mut(&id) {
                keyspace.engine.persisted(self.now, batch);
                self.record_feed(id, changed);
            }
        }
        self.drain_engines();
        self.restore_persisted(in_flight.restore)?;
        self.open_ready_backups();
        Ok(())
    }

    fn ready_persisted(&mut self, group: GroupId, ready: ReplicaReady) -> Result<(), CoreError> {
        let Some(keyspace) = self.groups.get_mut(&group) else {
            return Ok(()); // Dropped while its batch was in flight.
        };
        let installed = ready.raft.as_ref().and_then(|raft| {
            push_raft(&mut self.transmits, group, &raft.persisted_messages);
            raft.snapshot.as_ref().map(|meta| meta.index)
        });
        let mut applied = keyspace.replica.on_persisted(ready);
        check_faults(group, std::mem::take(&mut applied.faults))?;
        if let Some(snapshot) = applied.compacted {
            self.compactions.push((group, snapshot));
        }
        // The catalog's new keyspaces must run here before a create is acknowledged (and a
        // snapshot install may change the catalog without entries).
        if group == CATALOG_GROUP && (installed.is_some() || !applied.entries.is_empty()) {
            self.reconcile()?;
        }
        for completion in applied.replies {
            self.complete_strong(group, completion);
        }
        self.record_changes(group, applied.changes, installed);
        Ok(())
    }

    fn raft_config(&self, voters: Vec<NodeId>) -> RaftConfig {
        let mut config = RaftConfig::new(self.config.id, voters);
        config.election_timeout = self.config.election_timeout;
        config.heartbeat_interval = self.config.heartbeat_interval;
        config.lease_drift_max = self.config.lease_drift_max;
        config.snapshot_chunk_bytes = self.config.snapshot_chunk_bytes;
        config
    }

    /// A replica of `group` from what the store holds of it; `voters` is the group's first
    /// configuration (the core uses it only while the log holds no membership change).
    fn boot_replica(
        &mut self,
        group: GroupId,
        voters: Vec<NodeId>,
    ) -> Result<Replica<u64>, CoreError> {
        let restored = self.durable.raft_restore(group)?;
        let durable = DurableState {
            hard_state: restored.hard_state,
            snapshot: restored.snapshot,
            entries: restored.entries,
        };
        let config = ReplicaConfig {
            raft: self.raft_config(voters),
            machine: MachineConfig {
                session_timeout: self.config.session_timeout,
                ..MachineConfig::default()
            },
            compact_every: self.config.compact_every,
        };
        let seed = self.random.next_u64();
        let store: Arc<dyn MachineStore> = self.durable.clone();
        Replica::boot(config, durable, store, group, seed, self.now)
            .map_err(|error| CoreError::Boot(format!("raft group {}: {error}", group.0)))
    }

    fn boot_engine(
        &mut self,
        id: KeyspaceId,
        value_type: eventual::ValueType,
    ) -> Result<AntiEntropy, CoreError> {
        let mut config = EngineConfig::new(self.config.id, self.engine_members(), value_type);
        config.round_bytes_max = self.config.gossip_round_bytes;
        config.clock_skew_max = self.config.clock_skew_max;
        let seed = self.random.next_u64();
        let store: Arc<dyn StateStore> = self.durable.clone();
        AntiEntropy::new(config, KeyspaceStore::new(store, id), seed)
            .map_err(|error| CoreError::Boot(format!("eventual keyspace {}: {error}", id.0)))
    }

    /// Starts the keyspaces the catalog has and this node does not run, and drops the ones
    /// it no longer has (see [`catalog`]).
    fn reconcile(&mut self) -> Result<(), CoreError> {
        self.sync_members();
        let machine = self.groups[&CATALOG_GROUP].replica.machine();
        let (desired, complete) = catalog::keyspaces_scanned(machine);
        if !complete {
            tracing::warn!("the catalog holds more keyspaces than one scan reads; none is dropped");
        }
        // An incomplete scan cannot tell a dropped keyspace from one it did not reach.
        if complete {
            let gone: Vec<String> = self
                .names
                .iter()
                .filter(|(name, (id, _))| {
                    desired.get(*name).is_none_or(|entry| entry.info.id != *id)
                })
                .map(|(name, _)| name.clone())
                .collect();
            for name in gone {
                self.stop_keyspace(&name);
            }
        }
        if complete {
            self.release_held(&desired);
        }
        for (name, entry) in &desired {
            if !self.names.contains_key(name) && !self.hold_restored(name, entry)? {
                self.start_keyspace(name, entry)?;
            }
        }
        if !complete {
            return Ok(());
        }
        let desired_ids = desired.values().map(|entry| entry.info.id).collect();
        self.sweep_rows(&desired_ids)
    }

    fn start_keyspace(&mut self, name: &str, entry: &catalog::Entry) -> Result<(), CoreError> {
        let info = &entry.info;
        match info.mode {
            KeyspaceMode::Strong => {
                let replica = self.boot_replica(GroupId(info.id.0), entry.voters.clone())?;
                let name = name.to_string();
                let history = watch::History::new(replica.machine().applied());
                let keyspace = StrongKeyspace {
                    name,
                    replica,
                    history,
                };
                self.groups.insert(GroupId(info.id.0), keyspace);
            }
            KeyspaceMode::Eventual(value_type) => {
                let engine = self.boot_engine(info.id, value_type)?;
                let keyspace = EventualKeyspace {
                    name: name.to_string(),
                    engine,
                    last_round_at: None,
                    feed: watch::Feed::new(self.random.next_u64()),
                };
                self.eventual.insert(info.id, keyspace);
            }
            KeyspaceMode::Paxos => {
                let node = self.boot_paxos(info.id)?;
                let name = name.to_string();
                self.paxos
                    .insert(info.id, paxos::PaxosKeyspace { name, node });
            }
        }
        tracing::info!(keyspace = %name, id = info.id.0, mode = %info.mode, "keyspace started");
        self.names.insert(name.to_string(), (info.id, info.mode));
        Ok(())
    }

    /// Stops a keyspace the catalog dropped: its core goes, its waiting requests are answered,
    /// and its rows go with the next batch.
    fn stop_keyspace(&mut self, name: &str) {
        let Some((id, _)) = self.names.remove(name) else {
            return;
        };
        self.groups.remove(&GroupId(id.0));
        self.eventual.remove(&id);
        self.paxos.remove(&id);
        self.watchers.retain(|(keyspace, _)| *keyspace != id);
        if !self.config.planted(NodeBug::DropKeepsRows) {
            self.drops.insert(id);
        }
        for tag in self.waiting.on_keyspace(id) {
            // A write may have been applied (a strong entry committed, a paxos accept sent,
            // an eventual write stored) before the drop: it must not be answered as refused.
            let write = self.waiting.get(tag).is_some_and(|p| p.waiting.is_write());
            let error = match write {
                true => crate::protocol::ClientError::Timeout {
                    may_have_applied: true,
                },
                false => crate::protocol::ClientError::UnknownKeyspace {
                    name: name.to_string(),
                },
            };
            self.fail(tag, error);
        }
        tracing::info!(keyspace = %name, id = id.0, "keyspace dropped");
    }

    /// Deletes the rows of keyspaces the catalog no longer has that this node never stopped
    /// itself: a crash before the drop's batch was durable, or a create and drop applied in
    /// one batch. A keyspace's id is the catalog revision that created it, so an id at or
    /// below the catalog's applied index that the catalog lacks was dropped; a higher id may
    /// be a create this node has not applied yet.
    fn sweep_rows(&mut self, desired: &BTreeSet<KeyspaceId>) -> Result<(), CoreError> {
        if self.config.planted(NodeBug::DropKeepsRows) {
            return Ok(());
        }
        let applied = self.groups[&CATALOG_GROUP].replica.status().applied;
        for id in self.durable.stored_keyspaces()? {
            let running = self.groups.contains_key(&GroupId(id.0))
                || self.eventual.contains_key(&id)
                || self.holds(id)
                || self.paxos.contains_key(&id);
            let catalog = GroupId(id.0) == CATALOG_GROUP;
            if !catalog && !running && !desired.contains(&id) && id.0 <= applied.0 {
                self.drops.insert(id);
            }
        }
        Ok(())
    }

    /// The members an eventual engine gossips with. A node removed from the members still
    /// runs its engines until it is stopped.
    fn engine_members(&self) -> Vec<NodeId> {
        let mut members: Vec<NodeId> = self.members.keys().copied().collect();
        if !members.contains(&self.config.id) {
            members.push(self.config.id);
        }
        members
    }

    /// Takes the catalog's member list: the engines change theirs in place (no restore from
    /// the store), and group leaders move their voters (`move_voters`).
    fn sync_members(&mut self) {
        let machine = self.groups[&CATALOG_GROUP].replica.machine();
        let members = catalog::members(machine, &self.config.initial_cluster);
        if members == self.members {
            return;
        }
        tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "members changed");
        self.members = members;
        let engine_members = self.engine_members();
        for keyspace in self.eventual.values_mut() {
            let changed = keyspace
                .engine
                .set_members(self.now, engine_members.clone());
            if let Err(error) = changed {
                // Only a catalog past the member bound (racing adds) gets here: the engine
                // keeps gossiping with the members it had.
                tracing::error!(keyspace = %keyspace.name, %error, "members not changed");
            }
        }
    }

    /// Every group this node leads takes one step toward the members as voters: add a
    /// missing member as a learner, promote a learner, remove a voter or learner that left.
    /// One change at a time (the core refuses a second while one is uncommitted).
    fn move_voters(&mut self) {
        use crate::raft::{MembershipChange, Role};
        let lag_max = self.config.learner_lag_max;
        for group in self.groups.values_mut() {
            let status = group.replica.status();
            if status.role != Role::Leader {
                continue;
            }
            let current = &status.membership;
            let wanted = |id: &NodeId| self.members.contains_key(id);
            let caught_up = |id: &NodeId| {
                group
                    .replica
                    .raft()
                    .match_index(*id)
                    .is_some_and(|m| m.0 + lag_max >= status.last_index.0)
            };
            let missing = self
                .members
                .keys()
                .find(|id| !current.voters.contains(id) && !current.learners.contains(id));
            let change = if let Some(id) = missing {
                MembershipChange::AddLearner(*id)
            } else if let Some(id) = current
                .learners
                .iter()
                .find(|id| wanted(id) && caught_up(id))
            {
                // Promote only a learner that caught up, so the new quorum does not wait
                // for its snapshot.
                MembershipChange::PromoteLearner(*id)
            } else if let Some(id) = current.voters.iter().find(|id| !wanted(id)) {
                MembershipChange::RemoveVoter(*id)
            } else if let Some(id) = current.learners.iter().find(|id| !wanted(id)) {
                MembershipChange::RemoveLearner(*id)
            } else {
                continue;
            };
            // Refused while the previous change is uncommitted: the next tick tries again.
            if group
                .replica
                .raft_mut()
                .propose_membership(self.now, change)
                .is_ok()
            {
                tracing::info!(group = %group.name, ?change, "membership change proposed");
            }
        }
    }

    /// Queues what every engine sent and answers the requests they finished.
    fn drain_engines(&mut self) {
        let ids: Vec<KeyspaceId> = self.eventual.keys().copied().collect();
        for id in ids {
            self.drain_engine(id);
        }
    }

    fn drain_engine(&mut self, id: KeyspaceId) {
        let Some(keyspace) = self.eventual.get_mut(&id) else {
            return;
        };
        if keyspace.engine.fault().is_some() {
            return; // Fail-stop: poll_persist reports it, and nothing of it leaves first.
        }
        while let Some((to, message)) = keyspace.engine.poll_transmit() {
            let message = PeerMessage::Gossip {
                keyspace: id,
                message,
            };
            self.transmits.push_back(Transmit { to, message });
        }
        let mut events = Vec::new();
        while let Some(event) = keyspace.engine.poll_event() {
            events.push(event);
        }
        for event in events {
            self.complete_eventual(id, event);
        }
    }

    /// Whether this node heard from enough peers lately to be on a majority side. Asked only
    /// when no leader is known, which takes an election timeout without a heartbeat: a node
    /// cut off has by then heard from no one within one election timeout, while a node in an
    /// election on the majority side hears its peers' (pre-)votes.
    fn majority_reachable(&self) -> bool {
        let recent = self.config.election_timeout;
        let heard = self
            .last_heard
            .values()
            .filter(|at| self.now.saturating_duration_since(**at) <= recent)
            .count();
        (heard + 1) * 2 > self.members.len()
    }

    fn next_proposal(&mut self) -> crate::raft::ProposalId {
        self.next_proposal = self.next_proposal.wrapping_add(1);
        crate::raft::ProposalId(self.next_proposal)
    }

    /// Registers a waiting request, answered by `deadline` at the latest; returns its tag.
    fn register(
        &mut self,
        reply: ReplyTo,
        keyspace: Option<KeyspaceId>,
        waiting: waiting::Waiting,
        deadline: Instant,
    ) -> u64 {
        let pending = waiting::Pending {
            reply,
            keyspace,
            deadline,
            waiting,
        };
        self.waiting.insert(pending)
    }

    fn answer(&mut self, reply: ReplyTo, answer: FromNode) {
        self.answers.push_back((reply, answer));
    }

    /// Ends a waiting request with `error`, in the frame its kind of request expects.
    fn fail(&mut self, tag: u64, error: crate::protocol::ClientError) {
        if let Some(pending) = self.waiting.remove(tag) {
            let answer = pending.waiting.error_reply(error);
            self.answer(pending.reply, answer);
        }
    }

    /// Answers a waiting request that ran out of time (a watch poll whose wait is over
    /// answers with no events).
    fn time_out(&mut self, tag: u64) {
        if let Some(pending) = self.waiting.get_mut(tag) {
            if let (waiting::Waiting::Watch(_), Some(id)) = (&pending.waiting, pending.keyspace) {
                self.serve_watch(id, tag, true);
                return;
            }
            let may_have_applied = pending.waiting.is_write();
            self.fail(
                tag,
                crate::protocol::ClientError::Timeout { may_have_applied },
            );
        }
    }
}

/// Ends the node on the first fault that breaks a local invariant: an entry applied out of
/// order, or a snapshot that does not decode or does not match, leaves this replica's state
/// diverged from its group's, and serving it would hand clients what the group never held.
/// A malformed committed entry does not: every replica skips it alike (deterministic), and
/// stopping on it would stop every node of the group, again after each restart.
fn check_faults(group: GroupId, faults: Vec<ApplyFault>) -> Result<(), CoreError> {
    for fault in faults {
        if let ApplyFault::Malformed(_) = &fault {
            tracing::error!(
                group = group.0,
                %fault,
                "skipped a committed entry that is not a request (every replica skips it)"
            );
            continue;
        }
        tracing::error!(
            group = group.0,
            invariant = %fault,
            "stopping the node: raft group {} broke a local invariant",
            group.0
        );
        return Err(CoreError::Invariant { group, fault });
    }
    Ok(())
}

fn push_raft(transmits: &mut VecDeque<Transmit>, group: GroupId, envelopes: &[Envelope]) {
    for envelope in envelopes {
        let message = PeerMessage::Raft {
            group,
            envelope: envelope.clone(),
        };
        transmits.push_back(Transmit {
            to: envelope.to,
            message,
        });
    }
}

#[cfg(test)]
mod tests;
