//! The driver: the node's one task, a thin loop that feeds the [`NodeCore`] and carries out
//! what it returns.
//!
//! ```text
//!  peers ──Inbound──┐                          ┌─▶ transport.send (poll_transmit)
//!  clients ─Input───┼─▶ NodeCore::handle_* ────┼─▶ Store::commit (poll_persist: one txn, one
//!  timers ──────────┘   (poll_timeout)         │       fsync) ─▶ NodeCore::persisted
//!                                              └─▶ client replies (poll_answer)
//! ```
//!
//! Everything the core does happens on this task, in order, so it needs no locks and runs
//! here as it runs in the simulator. While a commit is being fsynced (on the driver's own
//! thread, the runtime's other tasks moved off it) new inputs queue up in the channels; the
//! next round takes them all and their writes share the next transaction and fsync: that is
//! the group commit.
//!
//! What the core cannot do without IO stays here: the transport's fault rules, linking to
//! members (their addresses are looked up by one spawned task, never on this one), and the
//! uptime and fault rules in a status.
//! An error from the core (storage, or a replica that broke a local invariant) ends the loop,
//! and the node exits non-zero (fail-stop).

use super::config::lookup_one;
use super::core::{Admitted, CoreConfig, Durable, NodeCore, PeerMessage, ReplyTo};
use super::error::NodeError;
use crate::net::faults::FaultRules;
use crate::net::peer::{Inbound, Lane, Transport};
use crate::protocol::admin::{
    AdminAnswer, AdminError, AdminRequest, DriverStats, FromNode, ToNode,
};
use crate::rng;
use crate::storage::{Batch, StorageError, Store};
use crate::types::{GroupId, Instant, KeyspaceId, NodeId, WallMillis};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Inputs drained per round before the round's flush: bounds the time a round takes, and so
/// how long a reply waits behind other inputs.
const INPUTS_PER_ROUND_MAX: usize = 1024;
/// Persist rounds one flush runs before it yields to new inputs (the rest runs at once after).
const FLUSH_ROUNDS_MAX: usize = 16;

/// A request from a client stream, admitted, with the channel its answer goes back on.
#[derive(Debug)]
pub struct ClientInput {
    pub request: Admitted,
    pub reply: oneshot::Sender<FromNode>,
}

/// The node's clocks: monotonic for the core's timers, wall for the HLC of `lww` keyspaces.
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

/// The core, and the IO it is driven by. Only the driver task touches it.
pub(super) struct Driver {
    core: NodeCore,
    clock: Clock,
    store: Arc<Store>,
    transport: Arc<Transport<PeerMessage>>,
    /// Where each answer the core owes goes.
    replies: HashMap<ReplyTo, oneshot::Sender<FromNode>>,
    next_reply: u64,
    /// The members the transport has (or is getting) links to.
    linked: BTreeMap<NodeId, String>,
    /// To [`link_loop`]. Unbounded, but fed only by committed catalog changes.
    links: mpsc::UnboundedSender<(NodeId, String)>,
    /// Set when a flush stopped with work left: the next round starts at once.
    more_work: bool,
    timing: RoundTiming,
}

/// Measures the driver's rounds and its stretches of computing without yielding.
#[derive(Debug, Default)]
struct RoundTiming {
    stats: DriverStats,
    round_since: Option<std::time::Instant>,
    busy_since: Option<std::time::Instant>,
}

impl RoundTiming {
    fn round_starts(&mut self) {
        let now = std::time::Instant::now();
        self.round_since = Some(now);
        self.busy_since = Some(now);
    }

    /// The task is about to wait (an fsync).
    fn busy_ends(&mut self) {
        if let Some(since) = self.busy_since.take() {
            let busy = since.elapsed().as_micros() as u64;
            self.stats.busy_max_us = self.stats.busy_max_us.max(busy);
        }
    }

    fn busy_starts(&mut self) {
        self.busy_since = Some(std::time::Instant::now());
    }

    fn round_ends(&mut self) {
        self.busy_ends();
        if let Some(since) = self.round_since.take() {
            let round = since.elapsed().as_micros() as u64;
            self.stats.round_max_us = self.stats.round_max_us.max(round);
            self.stats.rounds += 1;
        }
    }
}

impl Driver {
    /// Boots the core from the store, with a seed from the one OS draw (cores take seeds).
    pub fn boot(
        config: CoreConfig,
        store: Arc<Store>,
        transport: Arc<Transport<PeerMessage>>,
    ) -> Result<Driver, NodeError> {
        let clock = Clock::new();
        let linked = config.initial_cluster.clone();
        let core = NodeCore::boot(config, store.clone(), rng::os_seed(), clock.now())?;
        let (links, links_rx) = mpsc::unbounded_channel();
        tokio::spawn(link_loop(transport.clone(), links_rx));
        let mut driver = Driver {
            core,
            clock,
            store,
            transport,
            replies: HashMap::new(),
            next_reply: 0,
            linked,
            links,
            more_work: false,
            timing: RoundTiming::default(),
        };
        driver.link_members();
        Ok(driver)
    }

    /// Runs until `shutdown` resolves or the core stops.
    pub async fn run(
        mut self,
        mut clients: mpsc::Receiver<ClientInput>,
        mut peers: mpsc::Receiver<Inbound<PeerMessage>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        tokio::pin!(shutdown);
        loop {
            let due = if self.more_work {
                self.clock.now()
            } else {
                self.core.poll_timeout()
            };
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                Some(input) = peers.recv() => self.on_peer(input),
                Some(input) = clients.recv() => self.on_client(input),
                _ = tokio::time::sleep_until(self.clock.deadline(due)) => {}
            }
            self.timing.round_starts();
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
            self.core
                .handle_timeout(self.clock.now(), self.clock.wall());
            self.flush().await?;
            self.timing.round_ends();
        }
    }

    fn on_peer(&mut self, input: Inbound<PeerMessage>) {
        let (now, wall) = (self.clock.now(), self.clock.wall());
        self.core.handle_peer(now, wall, input.from, input.message);
    }

    fn on_client(&mut self, input: ClientInput) {
        if let Some(result) = self.shell_answer(input.request.request()) {
            let _ = input.reply.send(FromNode::Admin(result));
            return;
        }
        let reply = ReplyTo(self.next_reply);
        self.next_reply += 1;
        self.replies.insert(reply, input.reply);
        let (now, wall) = (self.clock.now(), self.clock.wall());
        self.core.handle_client(now, wall, reply, input.request);
    }

    /// Answers what only the shell can: the transport's fault rules. `None` for what the
    /// core answers. (A new member's address was checked on its client stream.)
    fn shell_answer(&self, request: &ToNode) -> Option<Result<AdminAnswer, AdminError>> {
        let ToNode::Admin(admin) = request else {
            return None;
        };
        match admin {
            AdminRequest::SetFaults(rules) => Some(self.set_faults(rules)),
            AdminRequest::Faults => Some(Ok(AdminAnswer::Faults(self.transport.faults()))),
            _ => None,
        }
    }

    fn set_faults(&self, rules: &FaultRules) -> Result<AdminAnswer, AdminError> {
        let mut checked = FaultRules::none();
        for rule in &rules.rules {
            checked
                .add(rule.clone())
                .map_err(|error| AdminError::InvalidFaultRule {
                    reason: error.to_string(),
                })?;
        }
        tracing::info!(rules = checked.rules.len(), "fault rules set");
        self.transport.set_faults(checked);
        Ok(AdminAnswer::Done)
    }

    /// Commits what the core asks to persist, then hands it back; repeats while that produced
    /// more work, up to a bound.
    async fn flush(&mut self) -> Result<(), NodeError> {
        self.more_work = false;
        for _ in 0..FLUSH_ROUNDS_MAX {
            let batch = self.core.poll_persist()?;
            // A Ready's early messages go before its fsync.
            self.carry_out();
            let Some(batch) = batch else {
                return Ok(());
            };
            self.timing.busy_ends();
            commit(&self.store, batch).await?;
            self.timing.busy_starts();
            self.core.persisted(self.clock.now(), self.clock.wall())?;
        }
        self.carry_out();
        self.more_work = true;
        Ok(())
    }

    /// Sends what the core queued and delivers its answers.
    fn carry_out(&mut self) {
        while let Some(transmit) = self.core.poll_transmit() {
            let lane = match transmit.message {
                PeerMessage::Raft { .. } => Lane::Raft,
                PeerMessage::Gossip { .. } => Lane::Gossip,
                // Latency-bound like Raft: the client waits on every round.
                PeerMessage::Paxos { .. } => Lane::Raft,
            };
            // Raft resends and anti-entropy repairs: a full queue or a lost message is safe.
            let _ = self.transport.send(transmit.to, lane, &transmit.message);
        }
        while let Some((reply, mut answer)) = self.core.poll_answer() {
            if let FromNode::Admin(Ok(AdminAnswer::Status(status))) = &mut answer {
                status.uptime_ms = self.clock.elapsed().as_millis() as u64;
                status.faults = self.transport.faults();
                status.driver = self.timing.stats;
            }
            // A client that went away is no longer waiting.
            if let Some(sender) = self.replies.remove(&reply) {
                let _ = sender.send(answer);
            }
        }
        self.link_members();
    }

    /// Links the transport to members the catalog added. The addresses are looked up by
    /// [`link_loop`], in order: DNS must not hold up the driver.
    fn link_members(&mut self) {
        if self.core.members() == &self.linked {
            return;
        }
        for (id, address) in self.core.members() {
            if self.linked.get(id) != Some(address) {
                // The loop ends only with the runtime.
                let _ = self.links.send((*id, address.clone()));
            }
        }
        self.linked = self.core.members().clone();
    }
}

/// Commits `batch`, an fsync: never on a worker thread other tasks wait for. On a
/// multi-threaded runtime the driver's own thread does it and the runtime moves the thread's
/// other tasks to another worker (`block_in_place`): the driver waits for the commit anyway,
/// and handing it to a blocking thread and back cost two thread wake-ups per round.
async fn commit(store: &Arc<Store>, batch: Batch) -> Result<(), NodeError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        return Ok(tokio::task::block_in_place(|| store.commit(batch))?);
    }
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.commit(batch))
        .await
        .map_err(|error| NodeError::Boot(format!("commit task failed: {error}")))?
        .map_err(NodeError::from)
}

/// Looks up each member address the driver hands over, in the order given (a member re-added
/// at a new address ends at the new one), and links the transport to it.
async fn link_loop(
    transport: Arc<Transport<PeerMessage>>,
    mut links: mpsc::UnboundedReceiver<(NodeId, String)>,
) {
    while let Some((id, address)) = links.recv().await {
        match lookup_one(&address).await {
            Some(resolved) => transport.add_peer(id, resolved),
            None => tracing::warn!(member = %id, %address, "cannot resolve a member's address"),
        }
    }
}

/// The core reads the store through this (the store itself knows nothing of the node).
impl Durable for Store {
    fn raft_restore(&self, group: GroupId) -> Result<crate::raft::RestoredState, StorageError> {
        Store::raft_restore(self, group)
    }

    fn stored_keyspaces(&self) -> Result<BTreeSet<KeyspaceId>, StorageError> {
        Ok(self.stored_ids()?.into_iter().map(KeyspaceId).collect())
    }

    fn paxos_acceptor(
        &self,
        keyspace: KeyspaceId,
        key: &[u8],
    ) -> Result<Option<crate::paxos::AcceptorState>, StorageError> {
        Store::paxos_acceptor(self, keyspace, key)
    }

    fn paxos_incarnation(&self) -> Result<u64, StorageError> {
        Store::paxos_incarnation(self)
    }
}
