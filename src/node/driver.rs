//! The driver: one task that owns every sans-IO core of the node and does their IO.
//!
//! ```text
//!  peers ──Inbound──┐                      ┌─▶ transport.send (Ready.messages at once)
//!  clients ─Input───┼─▶ handle ─▶ flush ───┼─▶ Store::commit (one txn, one fsync)
//!  timers ──────────┘   (cores)   (loop)   ├─▶ transport.send (persisted_messages)
//!                                          └─▶ client replies (after apply / persist)
//! ```
//!
//! Everything the cores do happens on this one task, in order, so the cores need no locks
//! and the node behaves like the simulator's model of it. While a commit is being fsynced
//! (on a blocking thread) new inputs queue up in the channels; the next round takes them all
//! and their writes share the next transaction and fsync: that is the group commit.
//!
//! Persist-before-send is the cores' rule: [the Ready contract](crate::raft#the-ready-contract)
//! for Raft, and [the persistence contract](crate::eventual#the-persistence-contract) for eventual.
//!
//! A replica that breaks a local invariant as it applies (an entry out of order, a snapshot
//! that does not decode or does not match) ends the driver with [`NodeError::Invariant`]:
//! the node logs the group and the invariant at error level and exits non-zero rather than
//! serve state its group never held (fail-stop; a restart rebuilds from the store).

use super::catalog::{self, CATALOG_GROUP, CATALOG_NAME};
use super::{NodeError, PeerMessage};
use crate::eventual::{self, AntiEntropy, EngineConfig};
use crate::net::peer::{Inbound, Lane, Transport};
use crate::protocol::admin::{FromNode, ToNode};
use crate::protocol::{ClientError, KeyspaceMode};
use crate::raft::{Config as RaftConfig, Ready, Snapshot};
use crate::rng::{self, SeededRng};
use crate::storage::{Batch, Store};
use crate::strong::{ApplyFault, ClientId, DurableState, MachineConfig, Replica, ReplicaConfig};
use crate::types::{GroupId, Instant, KeyspaceId, NodeId, WallMillis};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Inputs drained per round before the round's flush: bounds the time a round takes, and so
/// how long a reply waits behind other inputs.
const INPUTS_PER_ROUND_MAX: usize = 1024;
/// Persist rounds one flush runs before it yields to new inputs (the rest runs at once after).
const FLUSH_ROUNDS_MAX: usize = 16;
/// How long a client request may wait inside the node. Below the client library's default
/// timeout, so the client hears a typed `Timeout` rather than giving up blind.
pub const REQUEST_WAIT_MAX: Duration = Duration::from_secs(4);
/// The Raft election timeout on real links and fsyncs on a loaded machine: wider than the
/// simulator's LAN default.
const ELECTION_TIMEOUT: Duration = Duration::from_millis(500);
/// A learner is promoted to voter once it holds the log to within this many entries.
const LEARNER_LAG_MAX: u64 = 64;
/// Take a snapshot of a strong keyspace (and compact its log) every this many entries.
const COMPACT_EVERY: u64 = 10_000;

/// A request from a client stream, with the channel its answer goes back on.
#[derive(Debug)]
pub struct ClientInput {
    pub request: ToNode,
    pub reply: oneshot::Sender<FromNode>,
}

/// The node's clocks: monotonic for the cores' timers, wall for the HLC of `lww` keyspaces.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: std::time::Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            base: std::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn wall(&self) -> WallMillis {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        WallMillis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }

    fn deadline(&self, at: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.base + Duration::from_nanos(at.as_nanos()))
    }

    pub fn elapsed(&self) -> Duration {
        self.base.elapsed()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// A strong keyspace (or the catalog) on this node.
pub(super) struct StrongKeyspace {
    pub name: String,
    pub replica: Replica<u64>,
}

/// An eventual keyspace on this node.
pub(super) struct EventualKeyspace {
    pub name: String,
    pub engine: AntiEntropy,
    /// When this node last finished an anti-entropy round, for status.
    pub last_round_at: Option<Instant>,
}

/// A client request waiting on a core.
pub(super) struct Pending {
    pub reply: oneshot::Sender<FromNode>,
    /// The keyspace it waits on (`None` for a catalog change), so a drop can answer it.
    pub keyspace: Option<KeyspaceId>,
    pub deadline: Instant,
    pub waiting: super::requests::Waiting,
}

/// Everything the node runs. Only the driver task touches it.
pub(super) struct Driver {
    pub id: NodeId,
    pub address: String,
    pub clock: Clock,
    pub store: Arc<Store>,
    pub transport: Arc<Transport<PeerMessage>>,
    /// Members and their addresses (see [`catalog::members`]).
    pub members: BTreeMap<NodeId, String>,
    /// The members the node was started with, before any catalog change.
    initial_cluster: BTreeMap<NodeId, String>,
    /// The members changed: eventual engines restart with the new set once nothing of
    /// theirs is waiting to be persisted.
    members_changed: bool,
    /// Group 0 and every strong keyspace, by group id (= keyspace id).
    pub groups: BTreeMap<GroupId, StrongKeyspace>,
    pub eventual: BTreeMap<KeyspaceId, EventualKeyspace>,
    /// The keyspaces running here, by name.
    pub names: BTreeMap<String, (KeyspaceId, KeyspaceMode)>,
    pub pending: BTreeMap<u64, Pending>,
    pub next_tag: u64,
    /// Proposal ids start at a random point per incarnation (they must never repeat in a
    /// group, across nodes and restarts).
    pub next_proposal: u64,
    /// The identity under which this node proposes catalog changes.
    pub admin_client: ClientId,
    pub next_admin_seq: u64,
    /// When each peer was last heard from (any message), to tell a minority side.
    pub last_heard: BTreeMap<NodeId, Instant>,
    /// Snapshots taken after apply, persisted with the next batch.
    compactions: Vec<(GroupId, Snapshot)>,
    /// Keyspaces dropped from the catalog whose rows go with the next batch.
    drops: Vec<KeyspaceId>,
    /// Set when a flush stopped with work left: the next round starts at once.
    more_work: bool,
    /// Seeds for the cores and ids, from one OS draw at boot. Only the shell draws randomness;
    /// cores take seeds.
    random: SeededRng,
}

impl Driver {
    /// Builds the driver from the store: group 0 from its durable image, then every keyspace
    /// its catalog holds.
    pub fn boot(
        id: NodeId,
        address: String,
        members: BTreeMap<NodeId, String>,
        store: Arc<Store>,
        transport: Arc<Transport<PeerMessage>>,
    ) -> Result<Driver, NodeError> {
        let mut random = SeededRng::new(rng::os_seed());
        let clock = Clock::new();
        let mut driver = Driver {
            id,
            address,
            clock,
            store,
            transport,
            members: members.clone(),
            initial_cluster: members,
            members_changed: false,
            groups: BTreeMap::new(),
            eventual: BTreeMap::new(),
            names: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_tag: 1,
            next_proposal: random.next_u64() >> 1,
            admin_client: ClientId(random.next_u64()),
            next_admin_seq: 1,
            last_heard: BTreeMap::new(),
            compactions: Vec::new(),
            drops: Vec::new(),
            more_work: false,
            random,
        };
        let voters = driver.members.keys().copied().collect();
        let catalog = driver.boot_replica(CATALOG_GROUP, voters)?;
        let name = CATALOG_NAME.to_string();
        driver.groups.insert(
            CATALOG_GROUP,
            StrongKeyspace {
                name,
                replica: catalog,
            },
        );
        driver.reconcile()?;
        Ok(driver)
    }

    fn raft_config(&self, voters: Vec<NodeId>) -> RaftConfig {
        let mut config = RaftConfig::new(self.id, voters);
        // Real links and fsyncs on a loaded machine: wider margins than the simulator's.
        config.election_timeout = ELECTION_TIMEOUT;
        config.heartbeat_interval = Duration::from_millis(100);
        config.lease_drift_max = Duration::from_millis(50);
        config
    }

    /// A replica of `group` from what the store holds of it; `voters` is the group's first
    /// configuration (the core uses it only while the log holds no membership change).
    fn boot_replica(
        &mut self,
        group: GroupId,
        voters: Vec<NodeId>,
    ) -> Result<Replica<u64>, NodeError> {
        let restored = self.store.raft_restore(group)?;
        let durable = DurableState {
            hard_state: restored.hard_state,
            snapshot: restored.snapshot,
            entries: restored.entries,
        };
        let config = ReplicaConfig {
            raft: self.raft_config(voters),
            machine: MachineConfig::default(),
            compact_every: COMPACT_EVERY,
        };
        let seed = self.random.next_u64();
        Replica::boot(config, durable, seed, self.clock.now())
            .map_err(|error| NodeError::Boot(format!("raft group {}: {error}", group.0)))
    }

    fn boot_engine(
        &mut self,
        id: KeyspaceId,
        value_type: eventual::ValueType,
    ) -> Result<AntiEntropy, NodeError> {
        let restored = self.store.eventual_restore(id)?;
        // A node removed from the members still runs its engines until it is stopped.
        let mut members: Vec<NodeId> = self.members.keys().copied().collect();
        if !members.contains(&self.id) {
            members.push(self.id);
        }
        let config = EngineConfig::new(self.id, members, value_type);
        let seed = self.random.next_u64();
        AntiEntropy::new(config, restored, seed)
            .map_err(|error| NodeError::Boot(format!("eventual keyspace {}: {error}", id.0)))
    }

    /// Starts the keyspaces the catalog has and this node does not run, and drops the ones
    /// it no longer has (see [`catalog`]).
    pub fn reconcile(&mut self) -> Result<(), NodeError> {
        self.sync_members();
        let machine = self.groups[&CATALOG_GROUP].replica.machine();
        let (desired, complete) = catalog::keyspaces_scanned(machine);
        if !complete {
            tracing::warn!("the catalog holds more keyspaces than one scan reads; none is dropped");
        }
        let mut gone: Vec<String> = self
            .names
            .iter()
            .filter(|(name, (id, _))| desired.get(*name).is_none_or(|entry| entry.info.id != *id))
            .map(|(name, _)| name.clone())
            .collect();
        if !complete {
            gone.clear();
        }
        for name in gone {
            if let Some((id, _)) = self.names.remove(&name) {
                self.groups.remove(&GroupId(id.0));
                self.eventual.remove(&id);
                self.drops.push(id);
                self.fail_dropped(id, &name);
                tracing::info!(keyspace = %name, id = id.0, "keyspace dropped");
            }
        }
        for (name, entry) in desired {
            if self.names.contains_key(&name) {
                continue;
            }
            let info = entry.info;
            match info.mode {
                KeyspaceMode::Strong => {
                    let replica = self.boot_replica(GroupId(info.id.0), entry.voters)?;
                    let keyspace = StrongKeyspace {
                        name: name.clone(),
                        replica,
                    };
                    self.groups.insert(GroupId(info.id.0), keyspace);
                }
                KeyspaceMode::Eventual(value_type) => {
                    let engine = self.boot_engine(info.id, value_type)?;
                    let keyspace = EventualKeyspace {
                        name: name.clone(),
                        engine,
                        last_round_at: None,
                    };
                    self.eventual.insert(info.id, keyspace);
                }
            }
            tracing::info!(keyspace = %name, id = info.id.0, mode = %info.mode, "keyspace started");
            self.names.insert(name, (info.id, info.mode));
        }
        Ok(())
    }

    /// Takes the catalog's member list: links to new members at once; the engines follow
    /// (`members_changed`), and group leaders move their voters (`move_voters`).
    fn sync_members(&mut self) {
        let machine = self.groups[&CATALOG_GROUP].replica.machine();
        let members = catalog::members(machine, &self.initial_cluster);
        if members == self.members {
            return;
        }
        for (id, address) in &members {
            match super::resolve_one(address) {
                Some(resolved) => self.transport.add_peer(*id, resolved),
                None => tracing::warn!(member = %id, %address, "cannot resolve a member's address"),
            }
        }
        tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "members changed");
        self.members = members;
        self.members_changed = true;
    }

    /// Every group this node leads takes one step toward the members as voters: add a
    /// missing member as a learner, promote a learner, remove a voter or learner that left.
    /// One change at a time (the core refuses a second while one is uncommitted).
    fn move_voters(&mut self, now: Instant) {
        use crate::raft::{MembershipChange, Role};
        for group in self.groups.values_mut() {
            let status = group.replica.status();
            if status.role != Role::Leader {
                continue;
            }
            let current = &status.membership;
            let wanted = |id: &NodeId| self.members.contains_key(id);
            let change = if let Some(id) = self
                .members
                .keys()
                .find(|id| !current.voters.contains(id) && !current.learners.contains(id))
            {
                MembershipChange::AddLearner(*id)
            } else if let Some(id) = current.learners.iter().find(|id| {
                // Promote only a learner that caught up, so the new quorum does not wait
                // for its snapshot.
                let caught_up = group
                    .replica
                    .raft()
                    .match_index(**id)
                    .is_some_and(|m| m.0 + LEARNER_LAG_MAX >= status.last_index.0);
                wanted(id) && caught_up
            }) {
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
                .propose_membership(now, change)
                .is_ok()
            {
                tracing::info!(group = %group.name, ?change, "membership change proposed");
            }
        }
    }

    /// Restarts every eventual engine with the current members, from the store. Called only
    /// when a flush left nothing to persist, so the store holds exactly the installed state.
    fn restart_engines(&mut self) -> Result<(), NodeError> {
        self.members_changed = false;
        let ids: Vec<(KeyspaceId, eventual::ValueType)> = self
            .eventual
            .iter()
            .map(|(id, keyspace)| (*id, keyspace.engine.config().value_type))
            .collect();
        for (id, value_type) in ids {
            let engine = self.boot_engine(id, value_type)?;
            if let Some(keyspace) = self.eventual.get_mut(&id) {
                keyspace.engine = engine;
            }
        }
        Ok(())
    }

    /// Runs until `shutdown` resolves or storage fails.
    pub async fn run(
        mut self,
        mut clients: mpsc::Receiver<ClientInput>,
        mut peers: mpsc::Receiver<Inbound<PeerMessage>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        tokio::pin!(shutdown);
        loop {
            let wake = self.clock.deadline(self.next_wake());
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                Some(input) = peers.recv() => self.on_peer(input),
                Some(input) = clients.recv() => self.on_client(input),
                _ = tokio::time::sleep_until(wake) => {}
            }
            // Whichever woke the loop, both queues are drained (bounded), so a stream of peer
            // messages never starves clients.
            for _ in 1..INPUTS_PER_ROUND_MAX {
                let Ok(input) = peers.try_recv() else { break };
                self.on_peer(input);
            }
            for _ in 1..INPUTS_PER_ROUND_MAX {
                let Ok(input) = clients.try_recv() else { break };
                self.on_client(input);
            }
            self.tick();
            self.flush().await?;
        }
    }

    /// The earliest moment something is due.
    fn next_wake(&self) -> Instant {
        let now = self.clock.now();
        if self.more_work {
            return now;
        }
        let groups = self
            .groups
            .values()
            .filter_map(|g| g.replica.poll_timeout());
        let engines = self
            .eventual
            .values()
            .filter_map(|e| e.engine.poll_timeout());
        let pending = self.pending.values().map(|p| p.deadline);
        let idle = now + Duration::from_secs(1);
        groups
            .chain(engines)
            .chain(pending)
            .chain([idle])
            .min()
            .unwrap_or(idle)
    }

    /// Fires the timers that are due, and times out requests that waited too long.
    fn tick(&mut self) {
        let now = self.clock.now();
        let wall = self.clock.wall();
        self.move_voters(now);
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
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.deadline <= now)
            .map(|(tag, _)| *tag)
            .collect();
        for tag in expired {
            self.time_out(tag);
        }
    }

    fn on_peer(&mut self, input: Inbound<PeerMessage>) {
        let now = self.clock.now();
        let from = input.from;
        self.last_heard.insert(from, now);
        match input.message {
            PeerMessage::Raft { group, envelope } => {
                // The transport checked the sender's certificate; the envelope must agree.
                if envelope.from != from || envelope.to != self.id {
                    return;
                }
                // A group this node has not started yet (catalog not applied here) or has
                // dropped: Raft resends, so dropping the message is safe.
                if let Some(group) = self.groups.get_mut(&group) {
                    group.replica.handle_message(now, envelope);
                }
            }
            PeerMessage::Gossip { keyspace, message } => {
                let wall = self.clock.wall();
                if let Some(keyspace) = self.eventual.get_mut(&keyspace) {
                    keyspace.engine.handle_message(now, wall, from, message);
                }
            }
        }
    }

    fn on_client(&mut self, input: ClientInput) {
        match input.request {
            ToNode::Data(request) => self.data_request(request, input.reply),
            ToNode::Admin(request) => self.admin_request(request, input.reply),
        }
    }

    /// Registers a waiting request and returns its tag.
    pub fn register(
        &mut self,
        reply: oneshot::Sender<FromNode>,
        keyspace: Option<KeyspaceId>,
        waiting: super::requests::Waiting,
    ) -> u64 {
        let deadline = self.clock.now() + REQUEST_WAIT_MAX;
        self.register_until(reply, keyspace, waiting, deadline)
    }

    /// [`Driver::register`] with the request's own `deadline` (a request that waited on a
    /// catalog look-up keeps the deadline it arrived with).
    pub fn register_until(
        &mut self,
        reply: oneshot::Sender<FromNode>,
        keyspace: Option<KeyspaceId>,
        waiting: super::requests::Waiting,
        deadline: Instant,
    ) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        let pending = Pending {
            reply,
            keyspace,
            deadline,
            waiting,
        };
        self.pending.insert(tag, pending);
        tag
    }

    /// Answers every request waiting on a keyspace that was just dropped: its core is gone.
    fn fail_dropped(&mut self, id: KeyspaceId, name: &str) {
        let tags: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.keyspace == Some(id))
            .map(|(tag, _)| *tag)
            .collect();
        for tag in tags {
            let name = name.to_string();
            self.fail(tag, ClientError::UnknownKeyspace { name });
        }
    }

    /// Ends a waiting request with `error`, in the frame its kind of request expects.
    pub fn fail(&mut self, tag: u64, error: ClientError) {
        if let Some(pending) = self.pending.remove(&tag) {
            let _ = pending.reply.send(pending.waiting.error_reply(error));
        }
    }

    pub fn next_proposal(&mut self) -> crate::raft::ProposalId {
        self.next_proposal = self.next_proposal.wrapping_add(1);
        crate::raft::ProposalId(self.next_proposal)
    }

    /// Persists what the cores asked for, then sends, applies and replies; repeats while
    /// that produced more work, up to a bound.
    async fn flush(&mut self) -> Result<(), NodeError> {
        self.more_work = false;
        for _ in 0..FLUSH_ROUNDS_MAX {
            self.drain_engines();
            let work = self.collect()?;
            if work.is_empty() {
                if self.members_changed {
                    self.restart_engines()?;
                }
                return Ok(());
            }
            let store = self.store.clone();
            let batch = work.batch;
            tokio::task::spawn_blocking(move || store.commit(batch))
                .await
                .map_err(|error| NodeError::Boot(format!("commit task failed: {error}")))??;
            self.after_commit(work.readies, work.persists)?;
        }
        self.more_work = true;
        Ok(())
    }

    /// Gathers one batch: every group's Ready (sending its early messages now) and every
    /// engine's persist batches.
    fn collect(&mut self) -> Result<Work, NodeError> {
        let mut work = Work {
            batch: Batch::new(),
            readies: Vec::new(),
            persists: Vec::new(),
        };
        for (id, snapshot) in self.compactions.drain(..) {
            work.batch.raft_compaction(id, snapshot);
        }
        for id in self.drops.drain(..) {
            work.batch.drop_keyspace(id);
        }
        for (group, keyspace) in &mut self.groups {
            let Some(ready) = keyspace.replica.take_ready() else {
                continue;
            };
            send_raft(&self.transport, *group, &ready.messages);
            work.batch.raft_ready(*group, &ready);
            work.readies.push((*group, ready));
        }
        for (id, keyspace) in &mut self.eventual {
            while let Some(batch) = keyspace.engine.poll_persist() {
                work.batch.eventual_persist(*id, &batch)?;
                work.persists.push((*id, batch.id));
            }
        }
        Ok(work)
    }

    /// The batch is durable: hand every Ready back, apply, reply; report persisted batches.
    fn after_commit(
        &mut self,
        readies: Vec<(GroupId, Ready)>,
        persists: Vec<(KeyspaceId, eventual::PersistId)>,
    ) -> Result<(), NodeError> {
        let now = self.clock.now();
        for (group, ready) in readies {
            let Some(keyspace) = self.groups.get_mut(&group) else {
                continue;
            };
            send_raft(&self.transport, group, &ready.persisted_messages);
            let installed = ready.snapshot.is_some();
            let mut applied = keyspace.replica.on_persisted(ready);
            check_faults(group, std::mem::take(&mut applied.faults))?;
            if let Some(snapshot) = applied.compacted {
                self.compactions.push((group, snapshot));
            }
            // The catalog's new keyspaces must run here before a create is acknowledged
            // (and a snapshot install may change the catalog without entries).
            let changed = installed || !applied.entries.is_empty();
            if group == CATALOG_GROUP && changed {
                self.reconcile()?;
            }
            for completion in applied.replies {
                self.complete_strong(group, completion);
            }
        }
        for (id, batch) in persists {
            if let Some(keyspace) = self.eventual.get_mut(&id) {
                keyspace.engine.persisted(now, batch);
            }
        }
        self.drain_engines();
        Ok(())
    }

    /// Sends what the engines queued and answers the requests they finished.
    fn drain_engines(&mut self) {
        let ids: Vec<KeyspaceId> = self.eventual.keys().copied().collect();
        for id in ids {
            let Some(keyspace) = self.eventual.get_mut(&id) else {
                continue;
            };
            while let Some((to, message)) = keyspace.engine.poll_transmit() {
                let message = PeerMessage::Gossip {
                    keyspace: id,
                    message,
                };
                // A full queue or a lost message is repaired by anti-entropy.
                let _ = self.transport.send(to, Lane::Gossip, &message);
            }
            let mut events = Vec::new();
            while let Some(event) = keyspace.engine.poll_event() {
                events.push(event);
            }
            for event in events {
                self.complete_eventual(id, event);
            }
        }
    }

    /// Whether this node heard from enough peers lately to be on a majority side. Asked only
    /// when no leader is known, which takes an election timeout without a heartbeat: a node
    /// cut off has by then heard from no one within one election timeout, while a node in an
    /// election on the majority side hears its peers' (pre-)votes.
    pub fn majority_reachable(&self) -> bool {
        let now = self.clock.now();
        let recent = ELECTION_TIMEOUT;
        let heard = self
            .last_heard
            .values()
            .filter(|at| now.saturating_duration_since(**at) <= recent)
            .count();
        (heard + 1) * 2 > self.members.len()
    }

    /// Answers a waiting request that ran out of time.
    fn time_out(&mut self, tag: u64) {
        if let Some(pending) = self.pending.get(&tag) {
            let may_have_applied = pending.waiting.is_write();
            self.fail(tag, ClientError::Timeout { may_have_applied });
        }
    }
}

/// One persist round's work.
struct Work {
    batch: Batch,
    readies: Vec<(GroupId, Ready)>,
    persists: Vec<(KeyspaceId, eventual::PersistId)>,
}

impl Work {
    fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.readies.is_empty() && self.persists.is_empty()
    }
}

/// Ends the node on the first fault that breaks a local invariant: an entry applied out of
/// order, or a snapshot that does not decode or does not match, leaves this replica's state
/// diverged from its group's, and serving it would hand clients what the group never held.
/// A malformed committed entry does not: every replica skips it alike (deterministic), and
/// stopping on it would stop every node of the group, again after each restart.
fn check_faults(group: GroupId, faults: Vec<ApplyFault>) -> Result<(), NodeError> {
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
        return Err(NodeError::Invariant { group, fault });
    }
    Ok(())
}

fn send_raft(
    transport: &Transport<PeerMessage>,
    group: GroupId,
    envelopes: &[crate::raft::Envelope],
) {
    for envelope in envelopes {
        let to = envelope.to;
        let message = PeerMessage::Raft {
            group,
            envelope: envelope.clone(),
        };
        // Raft recovers from a lost message (it resends on the next heartbeat).
        let _ = transport.send(to, Lane::Raft, &message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{ProposalId, Role};
    use crate::strong::{Command, Request};
    use crate::types::LogIndex;
    use bytes::Bytes;

    /// Runs a one-voter replica's timers and Readies until `until` holds, checking each
    /// `on_persisted` with `check_faults`; returns how many faults it let pass, or the first
    /// error.
    fn pump(
        replica: &mut Replica<u64>,
        now: &mut Instant,
        until: impl Fn(&Replica<u64>) -> bool,
        tamper: impl Fn(&mut Ready),
    ) -> Result<usize, NodeError> {
        let mut passed = 0;
        for _ in 0..1000 {
            if until(replica) {
                return Ok(passed);
            }
            *now += Duration::from_millis(10);
            if replica.poll_timeout().is_some_and(|at| at <= *now) {
                replica.handle_timeout(*now);
            }
            while let Some(mut ready) = replica.take_ready() {
                tamper(&mut ready);
                let applied = replica.on_persisted(ready);
                passed += applied.faults.len();
                check_faults(GroupId(7), applied.faults)?;
            }
        }
        panic!("the replica never got there");
    }

    /// Issue 9: a replica that applied an entry out of order used to be logged as a
    /// `replica fault` while the node went on serving its diverged state. Now the fault
    /// ends the driver with `NodeError::Invariant` naming the group; a malformed entry,
    /// which every replica skips alike, does not.
    #[test]
    fn an_out_of_order_apply_stops_the_node_and_a_malformed_entry_does_not() {
        let config = ReplicaConfig {
            raft: RaftConfig::new(NodeId(1), vec![NodeId(1)]),
            machine: MachineConfig::default(),
            compact_every: COMPACT_EVERY,
        };
        let mut now = Instant::from_nanos(0);
        let mut replica = Replica::<u64>::boot(config, DurableState::default(), 1, now)
            .expect("a fresh replica boots");
        let leader = |r: &Replica<u64>| r.status().role == Role::Leader && r.status().applied.0 > 0;
        let passed = pump(&mut replica, &mut now, leader, |_| {}).expect("an election");
        assert_eq!(passed, 0, "an election breaks nothing");

        // Bytes that are not a request: applied as a no-op on every replica; not fatal.
        let garbage = Bytes::from_static(b"not a request");
        let index = replica
            .raft_mut()
            .propose(now, ProposalId(1), garbage)
            .expect("the leader takes a proposal");
        let applied_to = |index: LogIndex| move |r: &Replica<u64>| r.status().applied >= index;
        let passed = pump(&mut replica, &mut now, applied_to(index), |_| {})
            .expect("a malformed entry does not stop the node");
        assert_eq!(passed, 1, "the malformed entry is reported, and let pass");

        let request = Request {
            client: ClientId(1),
            seq: 1,
            command: Command::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
            },
        };
        let index = replica
            .submit(now, ProposalId(2), 2, &request)
            .expect("the leader takes a write");
        // The core hands the entry out two indexes ahead of where the machine stands.
        let skip = |ready: &mut Ready| {
            for entry in &mut ready.committed {
                entry.index = LogIndex(entry.index.0 + 2);
            }
        };
        let error = pump(&mut replica, &mut now, applied_to(index), skip)
            .expect_err("an out-of-order apply stops the node");
        match &error {
            NodeError::Invariant {
                group,
                fault: ApplyFault::OutOfOrder { got, expected },
            } => {
                assert_eq!(*group, GroupId(7));
                assert_eq!(*got, index.0 + 2);
                assert_eq!(*expected, index.0);
            }
            other => panic!("expected an invariant error, got {other:?}"),
        }
        assert_eq!(error.to_string(), "raft group 7 broke a local invariant");
    }
}
