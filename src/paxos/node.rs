//! [`PaxosNode`]: the state, the constructor, the public calls and the `Ready` hand-off. The
//! protocol lives in `acceptor.rs` and `proposer.rs`.

use super::config::{Config, ConfigError, OpError, ProposeError};
use super::message::VALUE_BYTES_MAX;
use super::message::{AcceptorState, Ballot, Envelope, KEY_BYTES_MAX, OpId, PaxosMessage};
use super::proposer::{KeyProposer, Pending, Stage};
use super::register::{Operation, Outcome};
use super::store::{AcceptorStore, NoStore, StoreError};
use crate::types::{Instant, NodeId};
use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

/// Names a client operation, chosen by the caller and handed back in its [`Answer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Numbers each [`Ready`]; `advance` takes it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadyId(pub u64);

/// Who agreed to an answer: the ballot it was chosen under and the acceptors that accepted
/// it (for a read answered after the prepare round alone, those that reported it; `ballot`
/// is [`Ballot::ZERO`] when they reported that nothing was ever accepted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The ballot.
    pub ballot: Ballot,
    /// The acceptors, a majority, in node order.
    pub acceptors: Vec<NodeId>,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The caller's id for it.
    pub id: RequestId,
    /// Its key.
    pub key: Bytes,
    /// What it returned and who agreed, or why it gave up.
    pub result: Result<(Outcome, Receipt), OpError>,
}

/// One batch of work for the shell, carried out as [the Ready contract] says. No other
/// `Ready` is produced until it is advanced.
///
/// [the Ready contract]: crate::paxos#the-ready-contract
#[derive(Clone, Debug, Default)]
#[must_use = "a Ready must be persisted, sent, answered and then advanced"]
pub struct Ready {
    /// Pass back to `advance`.
    pub id: ReadyId,
    /// Acceptor states to persist (each replaces the key's stored state), then fsync.
    pub persist: Vec<(Bytes, AcceptorState)>,
    /// Messages that may be sent at once, even before the persist.
    pub messages: Vec<Envelope>,
    /// Promises and accepted acks: sent only after this Ready's persist is durable.
    pub persisted_messages: Vec<Envelope>,
    /// Operations that ended. They depend on no local state, so they may go at once.
    pub answers: Vec<Answer>,
}

/// What the node has produced for the next [`Ready`].
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) messages: Vec<Envelope>,
    pub(crate) persisted_messages: Vec<Envelope>,
    pub(crate) answers: Vec<Answer>,
}

/// One node's CASPaxos core: an acceptor for every key it has heard of and a proposer for
/// every key with operations queued here. See the module docs for the calling protocol.
#[derive(Debug)]
pub struct PaxosNode {
    pub(crate) config: Config,
    pub(crate) rng: ChaCha8Rng,
    /// The latest time any call passed in (never decreases).
    pub(crate) now: Instant,
    /// The acceptor states this node holds in memory: every key's newest state for the keys
    /// it holds (durable, or in the next persist). A key it does not hold is read through
    /// `store`. At most `cache_max` entries, apart from pinned ones (`dirty`, `unadvanced`).
    pub(crate) acceptors: BTreeMap<Bytes, AcceptorState>,
    /// Keys whose state changed since the last `Ready` took the persist. Pinned in the cache:
    /// the store does not have their newest state.
    pub(crate) dirty: BTreeSet<Bytes>,
    /// The keys of the outstanding `Ready`'s persist: pinned until `advance`, since the store
    /// may not hold them before.
    pub(crate) unadvanced: BTreeSet<Bytes>,
    /// Where states not in `acceptors` are read.
    store: StoreHandle,
    /// The cache's bound; `None`: unbounded (a node built by `new` has no store to fall back
    /// on, so it keeps everything).
    cache_max: Option<usize>,
    /// Eviction goes round the keys from here, so a hot key is not the first to go each time.
    evict_after: Bytes,
    /// Set when the store failed a read: the node hands out no more `Ready`s.
    fault: Option<StoreError>,
    /// Keys with operations queued here.
    pub(crate) proposers: BTreeMap<Bytes, KeyProposer>,
    /// Operations queued or running, over all keys. `<= config.pending_max`.
    pub(crate) pending: usize,
    /// The last operation sequence number issued in this run.
    pub(crate) op_seq: u64,
    /// The last round this run issued a ballot in, over all keys: rounds only rise.
    pub(crate) last_round: u64,
    pub(crate) outbox: Outbox,
    pub(crate) ready_seq: u64,
    /// The `Ready` handed out and not yet advanced.
    pub(crate) inflight_ready: Option<ReadyId>,
}

impl PaxosNode {
    /// Builds a node from its configuration and the acceptor states that were durable at
    /// (re)start, all held in memory (no store, no eviction: for the simulator and tests).
    /// `rng_seed` drives every random choice (backoffs); `now` starts the clock.
    pub fn new(
        config: Config,
        restored: Vec<(Bytes, AcceptorState)>,
        rng_seed: u64,
        now: Instant,
    ) -> Result<PaxosNode, ConfigError> {
        let sane =
            |(key, state): &(Bytes, AcceptorState)| key.len() <= KEY_BYTES_MAX && state.is_sane();
        if !restored.iter().all(sane) {
            return Err(ConfigError::RestoredState);
        }
        let mut node = PaxosNode::build(config, Arc::new(NoStore), None, rng_seed, now)?;
        node.acceptors = restored.into_iter().collect();
        node.check_invariants();
        Ok(node)
    }

    /// Builds a node that reads acceptor states through `store` as it needs them and holds
    /// at most about `cache_max` of them in memory (pinned keys aside: those changed and not
    /// yet advanced). The store must show every advanced `Ready`'s persist (see
    /// [`AcceptorStore`]). Nothing is read at start: a node with a million keys starts at once.
    pub fn with_store(
        config: Config,
        store: Arc<dyn AcceptorStore>,
        cache_max: usize,
        rng_seed: u64,
        now: Instant,
    ) -> Result<PaxosNode, ConfigError> {
        if cache_max == 0 {
            return Err(ConfigError::Limit { name: "cache_max" });
        }
        PaxosNode::build(config, store, Some(cache_max), rng_seed, now)
    }

    fn build(
        config: Config,
        store: Arc<dyn AcceptorStore>,
        cache_max: Option<usize>,
        rng_seed: u64,
        now: Instant,
    ) -> Result<PaxosNode, ConfigError> {
        config.validate()?;
        let node = PaxosNode {
            config,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            now,
            acceptors: BTreeMap::new(),
            dirty: BTreeSet::new(),
            unadvanced: BTreeSet::new(),
            store: StoreHandle(store),
            cache_max,
            evict_after: Bytes::new(),
            fault: None,
            proposers: BTreeMap::new(),
            pending: 0,
            op_seq: 0,
            last_round: 0,
            outbox: Outbox::default(),
            ready_seq: 0,
            inflight_ready: None,
        };
        node.check_invariants();
        Ok(node)
    }

    /// This node.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Queues `operation` on `key`. It runs once the key's earlier operations here are done;
    /// its [`Answer`] comes in a later `Ready`.
    pub fn propose(
        &mut self,
        now: Instant,
        id: RequestId,
        key: Bytes,
        operation: Operation,
    ) -> Result<(), ProposeError> {
        self.observe(now);
        if key.len() > KEY_BYTES_MAX || operation.value_len() > VALUE_BYTES_MAX {
            return Err(ProposeError::TooLarge {
                key_bytes: key.len(),
                value_bytes: operation.value_len(),
            });
        }
        if self.pending >= self.config.pending_max {
            return Err(ProposeError::Backpressure {
                pending: self.pending,
                pending_max: self.config.pending_max,
            });
        }
        self.op_seq += 1;
        let op = OpId {
            proposer: self.config.proposer(),
            seq: self.op_seq,
        };
        let pending = Pending {
            id,
            op,
            operation,
            attempts: 0,
            accept_sent: false,
        };
        self.pending += 1;
        self.enqueue(key, pending);
        self.check_invariants();
        Ok(())
    }

    /// Adds `pending` to `key`'s queue, starting a round if the key was idle here.
    fn enqueue(&mut self, key: Bytes, pending: Pending) {
        if let Some(keyed) = self.proposers.get_mut(&key) {
            keyed.queue.push_back(pending);
            return;
        }
        let keyed = KeyProposer {
            queue: VecDeque::from([pending]),
            ballot: Ballot::ZERO,
            stage: Stage::BackingOff,
            timer: self.now,
            round_seen: 0,
        };
        self.proposers.insert(key.clone(), keyed);
        self.start_round(&key);
    }

    /// Feeds one message from a peer (or from this node's own proposer). Messages that are
    /// misaddressed, from strangers, malformed or stale are ignored.
    pub fn handle_message(&mut self, now: Instant, envelope: Envelope) {
        self.observe(now);
        if !self.accepts_from(&envelope) {
            return;
        }
        let from = envelope.from;
        match envelope.message {
            PaxosMessage::Prepare { key, ballot } => self.on_prepare(from, key, ballot),
            PaxosMessage::Accept {
                key,
                ballot,
                register,
            } => self.on_accept(from, key, ballot, register),
            PaxosMessage::Promise {
                key,
                ballot,
                accepted,
            } => self.on_promise(from, key, ballot, accepted),
            PaxosMessage::Accepted { key, ballot } => self.on_accepted(from, key, ballot),
            PaxosMessage::Reject {
                key,
                ballot,
                phase,
                promised,
            } => self.on_reject(from, key, ballot, phase, promised),
        }
        self.check_invariants();
    }

    /// Whether `envelope` is for this node, from a member, sane, and (for a prepare or an
    /// accept) under the sender's own ballot: a node proposes only its own ballots.
    fn accepts_from(&self, envelope: &Envelope) -> bool {
        let from_member = self.config.nodes.contains(&envelope.from);
        let own_ballot = match &envelope.message {
            PaxosMessage::Prepare { ballot, .. } | PaxosMessage::Accept { ballot, .. } => {
                ballot.proposer.node == envelope.from
            }
            // Answers concern this node's own ballots.
            PaxosMessage::Promise { ballot, .. }
            | PaxosMessage::Accepted { ballot, .. }
            | PaxosMessage::Reject { ballot, .. } => ballot.proposer == self.config.proposer(),
        };
        envelope.to == self.config.id && from_member && own_ballot && envelope.message.is_sane()
    }

    /// Fires every timer due at `now`: round timeouts and ends of backoffs. Early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        let due: Vec<Bytes> = self
            .proposers
            .iter()
            .filter(|(_, keyed)| keyed.timer <= self.now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.on_key_timer(&key);
        }
        self.check_invariants();
    }

    /// When `handle_timeout` is next due, or `None` when no operation is pending. (A scan
    /// over the keys with pending operations, which `pending_max` bounds.)
    #[must_use = "the shell must arm a timer for handle_timeout"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.proposers.values().map(|keyed| keyed.timer).min()
    }

    /// Every acceptor, this node included.
    pub fn acceptors(&self) -> &[NodeId] {
        &self.config.nodes
    }

    /// Operations queued or running here.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// This node's acceptor state for `key`, if it holds it in memory (for tests and
    /// checkers: a node built by `new` holds every key it has).
    pub fn acceptor_state(&self, key: &[u8]) -> Option<&AcceptorState> {
        self.acceptors.get(key)
    }

    /// Acceptor states held in memory.
    pub fn cached(&self) -> usize {
        self.acceptors.len()
    }

    /// Why the store failed a read, if it did. From then on the node hands out no `Ready`:
    /// the shell must stop it (a restart reads the store afresh).
    pub fn fault(&self) -> Option<&StoreError> {
        self.fault.as_ref()
    }

    /// `key`'s acceptor state, read through the store when it is not held; `None` once the
    /// store has failed (the caller then ignores its input: nothing more leaves the node).
    pub(crate) fn acceptor_mut(&mut self, key: &Bytes) -> Option<&mut AcceptorState> {
        if self.fault.is_some() {
            return None;
        }
        if !self.acceptors.contains_key(key) {
            match self.store.0.acceptor_state(key) {
                Ok(state) => {
                    let state = state.unwrap_or_default();
                    if !state.is_sane() {
                        self.fault = Some(StoreError {
                            source: Arc::new(InsaneState),
                        });
                        return None;
                    }
                    self.acceptors.insert(key.clone(), state);
                }
                Err(error) => {
                    self.fault = Some(error);
                    return None;
                }
            }
        }
        self.acceptors.get_mut(key)
    }

    /// Drops unpinned states from the cache until it is back at its bound, going round the
    /// keys from where the last eviction stopped.
    fn evict(&mut self) {
        let Some(cache_max) = self.cache_max else {
            return;
        };
        let excess = self.acceptors.len().saturating_sub(cache_max);
        if excess == 0 {
            return;
        }
        let after = (Bound::Excluded(&self.evict_after[..]), Bound::Unbounded);
        let upto = (Bound::Unbounded, Bound::Included(&self.evict_after[..]));
        let pinned = |key: &&Bytes| self.dirty.contains(*key) || self.unadvanced.contains(*key);
        let victims: Vec<Bytes> = self
            .acceptors
            .range::<[u8], _>(after)
            .chain(self.acceptors.range::<[u8], _>(upto))
            .map(|(key, _)| key)
            .filter(|key| !pinned(key))
            .take(excess)
            .cloned()
            .collect();
        for key in &victims {
            self.acceptors.remove(key);
        }
        if let Some(last) = victims.last() {
            self.evict_after = last.clone();
        }
    }

    /// The next batch of work, or `None` if there is none, the last one is not advanced, or
    /// the store failed.
    pub fn ready(&mut self) -> Option<Ready> {
        if self.inflight_ready.is_some() || self.fault.is_some() {
            return None;
        }
        let outbox = &self.outbox;
        let idle = self.dirty.is_empty()
            && outbox.messages.is_empty()
            && outbox.persisted_messages.is_empty()
            && outbox.answers.is_empty();
        if idle {
            return None;
        }
        self.ready_seq += 1;
        let id = ReadyId(self.ready_seq);
        self.inflight_ready = Some(id);
        let dirty = std::mem::take(&mut self.dirty);
        let persist = dirty
            .iter()
            .map(|key| {
                let state = self.acceptors.get(key).cloned();
                let state = state.expect("invariant: a dirty key is pinned in the cache");
                (key.clone(), state)
            })
            .collect();
        self.unadvanced = dirty;
        let outbox = std::mem::take(&mut self.outbox);
        Some(Ready {
            id,
            persist,
            messages: outbox.messages,
            persisted_messages: outbox.persisted_messages,
            answers: outbox.answers,
        })
    }

    /// The shell carried out `Ready` `id` (persisted, sent, answered). Panics if `id` is not
    /// the outstanding one: that is a bug in the shell.
    pub fn advance(&mut self, id: ReadyId) {
        assert_eq!(
            self.inflight_ready,
            Some(id),
            "advance takes the outstanding Ready's id"
        );
        self.inflight_ready = None;
        // The store holds this Ready's states now: they may go from the cache.
        self.unadvanced.clear();
        self.evict();
    }

    fn observe(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Local invariants, in debug and simulation builds: a breach is a bug here, never a
    /// peer's doing (peer input is checked before it is used).
    pub(crate) fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let queued: usize = self.proposers.values().map(|keyed| keyed.queue.len()).sum();
        assert_eq!(queued, self.pending, "pending counts the queues");
        assert!(
            self.pending <= self.config.pending_max,
            "pending over its limit"
        );
        for keyed in self.proposers.values() {
            assert!(!keyed.queue.is_empty(), "an idle key keeps no proposer");
            assert!(
                keyed.ballot.round <= keyed.round_seen,
                "the ballot's round was seen"
            );
        }
        for state in self.acceptors.values() {
            assert!(state.is_sane(), "an acceptor accepted above its promise");
        }
        for key in self.dirty.iter().chain(&self.unadvanced) {
            assert!(self.acceptors.contains_key(key), "a pinned key is cached");
        }
    }
}

/// The store, behind a `Debug` the node's derive can use.
struct StoreHandle(Arc<dyn AcceptorStore>);

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcceptorStore")
    }
}

/// A stored state that breaks its invariant (accepted above its promise): corrupt storage.
#[derive(Debug, thiserror::Error)]
#[error("a stored acceptor state accepted a ballot above its promise")]
struct InsaneState;
