//! The [`AntiEntropy`] state machine: one per (node, eventual keyspace). See the module docs
//! of [`crate::eventual`] for the calling protocol.

use super::config::EngineConfig;
use super::error::{ConfigError, ReadError, WriteError};
use super::gc::Knowledge;
use super::hash::{entry_hash, key_hash, mix64};
use super::hlc::{Hlc, HlcTimestamp};
use super::levels::{Event, ReadMode, RequestId, SessionToken, WriteLevel};
use super::liveness::{Liveness, LivenessView};
use super::merkle::MerkleTree;
use super::message::{
    DurableMeta, GossipMessage, KeyEntry, PersistBatch, PersistId, RestoredState,
};
use super::reads::PendingRead;
use super::sync::SyncSession;
use super::value::{KeyState, ReadValue, WriteStamp};
use super::{
    ENTRY_BYTES_MAX, EVENTS_MAX, EVENTS_UNDRAINED_MAX, KEY_BYTES_MAX, READS_PENDING_MAX,
    TRANSMIT_QUEUE_MAX,
};
use crate::types::{Instant, NodeId, WallMillis};
use bytes::Bytes;
use crdts::VClock;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One key as stored: its state and its entry hash in the Merkle tree.
#[derive(Clone, Debug)]
pub(super) struct StoredKey {
    pub(super) state: KeyState,
    /// The entry hash this key contributes to the tree (0 only under `merkle-forget-key`).
    pub(super) entry: u64,
}

/// Local writes applied but not yet persisted, per key. Invariant: `state` is the stored
/// state (if any) merged with every pending write, and `pending >= 1`.
#[derive(Clone, Debug)]
pub(super) struct Overlay {
    pub(super) state: KeyState,
    pub(super) pending: u32,
}

/// What to do once a persist batch is durable.
#[derive(Clone, Debug)]
pub(super) enum AfterPersist {
    /// Install a local write's state into the store, acknowledge and push it.
    InstallWrite {
        key: Bytes,
        seq: u64,
        state: KeyState,
    },
    /// Tell `to` that its delta is durable here.
    SendDeltaAck { to: NodeId, token: SessionToken },
}

#[derive(Clone, Debug)]
pub(super) struct InFlightBatch {
    pub(super) id: PersistId,
    pub(super) meta: DurableMeta,
    pub(super) actions: Vec<AfterPersist>,
}

/// A write from `local_write` until its final event.
#[derive(Clone, Debug)]
pub(super) struct PendingWrite {
    pub(super) id: RequestId,
    pub(super) level: WriteLevel,
    pub(super) stamp: Option<HlcTimestamp>,
    /// Members known to have persisted it; empty until this node persisted it.
    pub(super) acked: BTreeSet<NodeId>,
    /// When it fails, once waiting for peers (`None` while persisting locally).
    pub(super) deadline: Option<Instant>,
}

/// Counters for status output and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Anti-entropy rounds run.
    pub rounds: u64,
    /// Sessions this node started.
    pub sessions_started: u64,
    /// Sessions that found the roots equal.
    pub sessions_in_sync: u64,
    /// Sessions that finished (in sync or repaired).
    pub sessions_completed: u64,
    /// Sessions abandoned (timeout, peer unreachable).
    pub sessions_aborted: u64,
    /// Encoded bytes of anti-entropy messages sent (as initiator and responder).
    pub sync_bytes_sent: u64,
    /// Encoded bytes of anti-entropy messages received.
    pub sync_bytes_received: u64,
    /// Key states changed here by anti-entropy or read repair.
    pub keys_repaired: u64,
    /// Deltas pushed to peers.
    pub deltas_sent: u64,
    /// Tombstones collected.
    pub tombstones_collected: u64,
    /// Outgoing messages dropped because the transmit queue was full.
    pub transmit_dropped: u64,
    /// Key states not sent (delta, anti-entropy, quorum read reply, read repair) because
    /// their entry encodes to more than `ENTRY_BYTES_MAX`: such a key cannot converge until
    /// it shrinks (see "Large states" in [`crate::eventual`]).
    pub states_too_large: u64,
    /// Bytes (sent + received) of the last session this node started, and whether it found
    /// the replicas in sync.
    pub last_session: Option<SessionSummary>,
}

/// The cost of one finished anti-entropy session, seen from its initiator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionSummary {
    /// The responder.
    pub peer: Option<NodeId>,
    /// Encoded bytes the initiator sent.
    pub bytes_sent: u64,
    /// Encoded bytes the initiator received.
    pub bytes_received: u64,
    /// Key states changed at the initiator.
    pub keys_repaired: u64,
    /// True if the roots were equal.
    pub in_sync: bool,
    /// Rounds the session spanned.
    pub rounds: u64,
}

/// The sans-IO eventual engine for one (node, keyspace). See [`crate::eventual`].
#[derive(Debug)]
pub struct AntiEntropy {
    pub(super) config: EngineConfig,
    /// Members other than this node, in id order.
    pub(super) peers: Vec<NodeId>,
    pub(super) rng: ChaCha8Rng,
    pub(super) hlc: Hlc,
    /// The last write counter allocated (persisted with the batch holding that write).
    pub(super) seq: u64,
    /// Installed key states, ordered by `(key_hash, key)` so a Merkle node is a range.
    pub(super) store: BTreeMap<(u64, Bytes), StoredKey>,
    /// Invariant: equals the tree built from `store`'s entry hashes.
    pub(super) tree: MerkleTree,
    /// Invariant: the live (not tombstone) keys of `store`, kept as writes install them
    /// so status never walks the store.
    pub(super) live: LiveSummary,
    pub(super) overlay: BTreeMap<Bytes, Overlay>,
    pub(super) knowledge: Knowledge,
    /// The meta of the last persisted batch: what this node reports to peers.
    pub(super) durable: DurableMeta,
    /// Each peer's last reported durable knowledge vector.
    pub(super) peer_knowledge: BTreeMap<NodeId, VClock<NodeId>>,
    /// Keys holding tombstones, with their phase-1 barrier once recorded.
    pub(super) tombstones: BTreeMap<Bytes, Option<VClock<NodeId>>>,
    /// Where the next tombstone collection pass starts (round-robin over `tombstones`).
    pub(super) gc_cursor: Option<Bytes>,
    pub(super) liveness: LivenessView,
    /// Keys changed since the last batch.
    pub(super) dirty: BTreeSet<Bytes>,
    /// The knowledge vector of the last batch created. The knowledge vector also grows
    /// without any key changing (a completed session, a dot seen in an already-held state);
    /// a batch must then still carry it to disk, or peers would never see it grow and no
    /// tombstone would ever become stable.
    pub(super) batched_knowledge: VClock<NodeId>,
    pub(super) unbatched: Vec<AfterPersist>,
    pub(super) in_flight: VecDeque<InFlightBatch>,
    pub(super) next_persist_id: u64,
    /// Writes by their counter.
    pub(super) writes: BTreeMap<u64, PendingWrite>,
    pub(super) reads: BTreeMap<u64, PendingRead>,
    pub(super) next_read: u64,
    pub(super) transmit: VecDeque<(NodeId, GossipMessage)>,
    pub(super) events: VecDeque<Event>,
    pub(super) sync: Option<SyncSession>,
    pub(super) next_session: u64,
    /// Anti-entropy bytes this round may still use.
    pub(super) budget_left: usize,
    /// `None` until the first call that passes `now`.
    pub(super) next_round_at: Option<Instant>,
    pub(super) stats: EngineStats,
}

impl AntiEntropy {
    /// Creates the engine from its configuration and everything persisted before a restart
    /// (`RestoredState::default()` for a new node). `rng_seed` drives partner choice and the
    /// starting point of request ids: give each incarnation (each restart) its own seed, so
    /// answers still in flight to the previous incarnation cannot match new requests.
    pub fn new(
        config: EngineConfig,
        restored: RestoredState,
        rng_seed: u64,
    ) -> Result<AntiEntropy, ConfigError> {
        config.validate()?;
        let node = config.node;
        let meta = restored.meta.unwrap_or(DurableMeta {
            seq: 0,
            hlc: HlcTimestamp::zero(node),
            knowledge: VClock::new(),
        });
        let peers = peers_of(&config);
        let liveness = LivenessView::new(
            peers.iter().copied(),
            Instant::ZERO,
            config.suspect_after,
            config.down_after,
        );
        let mut engine = AntiEntropy {
            peers,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            hlc: Hlc::restored(node, meta.hlc),
            seq: meta.seq,
            store: BTreeMap::new(),
            tree: MerkleTree::new(),
            live: LiveSummary::default(),
            overlay: BTreeMap::new(),
            knowledge: Knowledge::new(meta.knowledge.clone()),
            durable: meta,
            peer_knowledge: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            gc_cursor: None,
            liveness,
            dirty: BTreeSet::new(),
            batched_knowledge: VClock::new(),
            unbatched: Vec::new(),
            in_flight: VecDeque::new(),
            next_persist_id: 1,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read: 1,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            sync: None,
            next_session: 1,
            budget_left: config.round_bytes_max,
            next_round_at: None,
            stats: EngineStats::default(),
            config,
        };
        engine.batched_knowledge = engine.durable.knowledge.clone();
        // Request ids start at a random point, so answers addressed to an earlier incarnation
        // of this node (still in flight across a restart) do not match new requests.
        engine.next_session = rand::Rng::random_range(&mut engine.rng, 1..u64::MAX / 2);
        engine.next_read = rand::Rng::random_range(&mut engine.rng, 1..u64::MAX / 2);
        for (key, state) in restored.keys {
            if state.value_type() != engine.config.value_type {
                return Err(ConfigError::RestoredWrongType {
                    expected: engine.config.value_type,
                    found: state.value_type(),
                });
            }
            if let Some(stamp) = state.lww_stamp() {
                engine.hlc.observe(stamp);
            }
            engine.set_state(key, state, false);
        }
        Ok(engine)
    }

    /// Takes a client write. The write is applied at once to a pending overlay, handed to the
    /// shell in the next [`PersistBatch`], and only after [`AntiEntropy::persisted`] installed,
    /// acknowledged (`Local`) and pushed to peers. Errors mean nothing was applied.
    #[allow(clippy::too_many_arguments)]
    pub fn local_write(
        &mut self,
        now: Instant,
        wall: WallMillis,
        id: RequestId,
        key: Bytes,
        op: super::value::Op,
        level: WriteLevel,
    ) -> Result<(), WriteError> {
        self.start(now);
        self.check_write(&key, &op)?;
        // Stamp and apply on copies: a refused write must leave the counter and HLC alone.
        let seq = self.seq + 1;
        let mut hlc = self.hlc.clone();
        let stamp = WriteStamp {
            node: self.config.node,
            seq,
            hlc: hlc.now(wall),
        };
        let before = match self.overlay.get(&key) {
            Some(overlay) => Cow::Borrowed(&overlay.state),
            None => self.stored(&key).map_or_else(
                || Cow::Owned(KeyState::new(self.config.value_type)),
                Cow::Borrowed,
            ),
        };
        let mut state = before.clone().into_owned();
        state
            .apply_local(op, stamp)
            .expect("invariant: the operation's type was checked against the keyspace");
        Self::check_state_size(&before, &state)?;
        self.seq = seq;
        self.hlc = hlc;
        let lww_stamp = state.lww_stamp().map(|_| stamp.hlc);
        let overlay = self.overlay.entry(key.clone()).or_insert(Overlay {
            state: state.clone(),
            pending: 0,
        });
        overlay.state = state.clone();
        overlay.pending += 1;
        self.knowledge.record_dot(self.config.node, seq);
        self.dirty.insert(key.clone());
        self.unbatched
            .push(AfterPersist::InstallWrite { key, seq, state });
        let pending = PendingWrite {
            id,
            level,
            stamp: lww_stamp,
            acked: BTreeSet::new(),
            deadline: None,
        };
        self.writes.insert(seq, pending);
        Ok(())
    }

    /// Starts a read. The answer comes as `Event::ReadDone` / `Event::ReadFailed` (for
    /// `Local`, and for a `Session` token already seen, before this call returns).
    pub fn read(
        &mut self,
        now: Instant,
        id: RequestId,
        key: Bytes,
        mode: ReadMode,
    ) -> Result<(), ReadError> {
        self.start(now);
        if key.len() > KEY_BYTES_MAX {
            return Err(ReadError::KeyTooLarge {
                bytes: key.len(),
                bytes_max: KEY_BYTES_MAX,
            });
        }
        if self.events.len() >= EVENTS_UNDRAINED_MAX {
            return Err(ReadError::Backpressure {
                pending: self.events.len(),
                pending_max: EVENTS_UNDRAINED_MAX,
            });
        }
        if self.reads.len() >= READS_PENDING_MAX {
            return Err(ReadError::Backpressure {
                pending: self.reads.len(),
                pending_max: READS_PENDING_MAX,
            });
        }
        match mode {
            ReadMode::Local => {
                let value = self.value(&key);
                self.push_event(Event::ReadDone { id, key, value });
            }
            ReadMode::Session(token) => self.start_session_read(now, id, key, token),
            ReadMode::Quorum => self.start_quorum_read(now, id, key),
        }
        Ok(())
    }

    /// Changes the members in place (the node's member list changed), without touching the
    /// stored keys: a new peer starts as just heard from and with no reported knowledge, so
    /// no tombstone is collected until it reports; a removed one no longer counts. Phase-1
    /// barriers name the old members, so every tombstone starts its collection over (O(its
    /// tombstones), no store access). Writes and reads in flight keep waiting for acks and
    /// answers, and time out as usual if they no longer can.
    pub fn set_members(&mut self, now: Instant, members: Vec<NodeId>) -> Result<(), ConfigError> {
        let config = EngineConfig {
            members,
            ..self.config.clone()
        };
        config.validate()?;
        self.config = config;
        self.peers = peers_of(&self.config);
        self.liveness.set_peers(&self.peers, now);
        let members = &self.config.members;
        self.peer_knowledge.retain(|peer, _| members.contains(peer));
        for fence in self.tombstones.values_mut() {
            *fence = None;
        }
        Ok(())
    }

    /// Feeds a message from a peer (after `wire::decode`). Malformed or unexpected content is
    /// dropped, never a panic.
    pub fn handle_message(
        &mut self,
        now: Instant,
        wall: WallMillis,
        from: NodeId,
        message: GossipMessage,
    ) {
        self.start(now);
        if !self.peers.contains(&from) {
            return;
        }
        let _ = wall; // Remote timestamps move the HLC when their states merge.
        self.liveness.heard_from(from, now);
        match message {
            GossipMessage::Delta {
                entry,
                token,
                ack_requested,
            } => {
                let KeyEntry { key, state } = entry;
                self.merge_remote(key, state, ack_requested);
                if ack_requested && token.node == from {
                    self.unbatched
                        .push(AfterPersist::SendDeltaAck { to: from, token });
                }
            }
            GossipMessage::DeltaAck { token } => self.handle_delta_ack(now, from, token),
            GossipMessage::ReadRequest { read, key } => self.handle_read_request(from, read, key),
            GossipMessage::ReadReply { read, key, state } => {
                self.handle_read_reply(now, from, read, key, state)
            }
            GossipMessage::Repair { entry } => {
                if self.merge_remote(entry.key, entry.state, false) {
                    self.stats.keys_repaired += 1;
                }
            }
            sync => self.handle_sync_message(now, from, sync),
        }
        self.recheck_session_reads();
    }

    /// Fires whatever is due at `now`: anti-entropy rounds, tombstone collection, write and
    /// read deadlines. Call it when `poll_timeout` says so (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Instant, wall: WallMillis) {
        self.start(now);
        let _ = wall;
        self.expire_writes(now);
        self.expire_reads(now);
        self.expire_sync(now);
        if self.next_round_at.is_some_and(|at| now >= at) {
            self.run_round(now);
            self.next_round_at = Some(now + self.config.round_interval);
        }
    }

    /// When `handle_timeout` is next due. `Instant::ZERO` before the engine has seen a time.
    #[must_use = "the shell must arm a timer for handle_timeout"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let Some(round) = self.next_round_at else {
            return Some(Instant::ZERO);
        };
        let writes = self.writes.values().filter_map(|write| write.deadline);
        let reads = self.reads.values().map(PendingRead::deadline);
        let sync = self.sync.as_ref().and_then(SyncSession::deadline);
        writes.chain(reads).chain(sync).chain(Some(round)).min()
    }

    /// The next message to send. Messages may be sent in any order, lost or duplicated.
    #[must_use = "a dropped message is lost (gossip repairs it, but only later)"]
    pub fn poll_transmit(&mut self) -> Option<(NodeId, GossipMessage)> {
        self.transmit.pop_front()
    }

    /// The next batch to persist, holding every key changed since the previous batch and the
    /// new meta. Persist batches in order; then call `persisted(batch.id)`.
    #[must_use = "a batch must be persisted, then reported with persisted(batch.id)"]
    pub fn poll_persist(&mut self) -> Option<PersistBatch> {
        let knowledge_changed = self.knowledge.vector() != &self.batched_knowledge;
        if self.dirty.is_empty() && !knowledge_changed && self.unbatched.is_empty() {
            return None;
        }
        let keys = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|key| {
                let state = match self.overlay.get(&key) {
                    Some(overlay) => Some(overlay.state.clone()),
                    None => self.stored(&key).cloned(),
                };
                (key, state)
            })
            .collect();
        let meta = DurableMeta {
            seq: self.seq,
            hlc: self.hlc.last(),
            knowledge: self.knowledge.vector().clone(),
        };
        let id = PersistId(self.next_persist_id);
        self.next_persist_id += 1;
        self.batched_knowledge = meta.knowledge.clone();
        let actions = std::mem::take(&mut self.unbatched);
        self.in_flight.push_back(InFlightBatch {
            id,
            meta: meta.clone(),
            actions,
        });
        Some(PersistBatch { id, keys, meta })
    }

    /// The shell made batch `id` durable. Batches must be reported in the order polled.
    pub fn persisted(&mut self, now: Instant, id: PersistId) {
        self.start(now);
        let batch = self
            .in_flight
            .pop_front()
            .expect("invariant: persisted() follows poll_persist()");
        assert_eq!(
            batch.id, id,
            "invariant: batches are persisted in the order they were polled"
        );
        self.durable = batch.meta;
        for action in batch.actions {
            match action {
                AfterPersist::InstallWrite { key, seq, state } => {
                    self.install_write(now, key, seq, state)
                }
                AfterPersist::SendDeltaAck { to, token } => {
                    self.send(to, GossipMessage::DeltaAck { token })
                }
            }
        }
        self.recheck_session_reads();
    }

    /// Writes this node knows exist but has not seen: for each node, how far the durable
    /// knowledge peers last reported runs ahead of ours. A lower bound on how stale a local
    /// read may be (peers report at their anti-entropy rounds).
    pub fn writes_known_missing(&self) -> u64 {
        let ours = self.knowledge.vector();
        let mut ahead: BTreeMap<NodeId, u64> = BTreeMap::new();
        for vector in self.peer_knowledge.values() {
            for dot in vector.iter() {
                let best = ahead.entry(*dot.actor).or_insert(0);
                *best = (*best).max(dot.counter);
            }
        }
        ahead
            .into_iter()
            .map(|(node, counter)| counter.saturating_sub(ours.get(&node)))
            .sum()
    }

    /// Writes waiting for persistence or acknowledgements.
    pub fn pending_writes(&self) -> usize {
        self.writes.len()
    }

    /// The next event for the caller.
    #[must_use = "a dropped event is a request whose caller never hears back"]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The installed (acknowledged-or-merged) value of `key` here. Pending local writes are
    /// not visible until persisted.
    pub fn value(&self, key: &[u8]) -> ReadValue {
        self.stored(key)
            .map_or_else(|| ReadValue::empty(self.config.value_type), KeyState::read)
    }

    /// The installed state of `key`, if any.
    pub fn key_state(&self, key: &[u8]) -> Option<&KeyState> {
        self.stored(key)
    }

    /// Every installed key and state, in `(key_hash, key)` order (tombstones included).
    pub fn entries(&self) -> impl Iterator<Item = (&Bytes, &KeyState)> {
        self.store
            .iter()
            .map(|((_, key), stored)| (key, &stored.state))
    }

    /// Installed keys that are not tombstones: compare these across replicas for
    /// convergence (tombstones disappear at different times on different nodes).
    pub fn live_entries(&self) -> BTreeMap<Bytes, KeyState> {
        self.entries()
            .filter(|(_, state)| !state.is_tombstone())
            .map(|(key, state)| (key.clone(), state.clone()))
            .collect()
    }

    /// A hash of every live key and its state digest (equal live states, equal digests).
    /// O(1): kept up to date as states are installed.
    pub fn state_digest(&self) -> u64 {
        self.live.digest
    }

    /// Installed keys, tombstones included. O(1).
    pub fn key_count(&self) -> u64 {
        self.store.len() as u64
    }

    /// Installed keys that are not tombstones. O(1).
    pub fn live_key_count(&self) -> u64 {
        self.live.keys
    }

    /// The Merkle root (covers tombstones too).
    pub fn merkle_root(&self) -> u64 {
        self.tree.root()
    }

    /// This node's view of `peer` at `now`.
    pub fn liveness(&self, peer: NodeId, now: Instant) -> Liveness {
        self.liveness.of(peer, now)
    }

    /// The in-memory knowledge vector (see [`super::gc`]).
    pub fn knowledge(&self) -> &VClock<NodeId> {
        self.knowledge.vector()
    }

    /// True if the write `token` names is reflected here.
    pub fn has_seen(&self, token: SessionToken) -> bool {
        self.knowledge.has_seen(token)
    }

    /// The meta as last persisted.
    pub fn durable_meta(&self) -> &DurableMeta {
        &self.durable
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Number of keys with tombstones awaiting collection.
    pub fn tombstones_pending(&self) -> usize {
        self.tombstones.len()
    }

    /// Checks the Merkle tree against the store: O(keys), for tests and the simulator.
    pub fn check_invariants(&self) {
        let (last, durable) = (self.hlc.last(), self.durable.hlc);
        assert!(
            (last.physical_ms, last.logical) >= (durable.physical_ms, durable.logical),
            "invariant: the HLC never falls below its persisted high-water mark"
        );
        for stored in self.store.values() {
            if let Some(stamp) = stored.state.lww_stamp() {
                assert!(
                    (last.physical_ms, last.logical) >= (stamp.physical_ms, stamp.logical),
                    "invariant: the HLC is at or above every stored lww stamp"
                );
            }
        }
        let mut recounted = LiveSummary::default();
        for ((hash, _), stored) in &self.store {
            recounted.add(*hash, &stored.state);
        }
        assert!(
            recounted == self.live,
            "invariant: the live summary matches the stored states"
        );
        let rebuilt = MerkleTree::from_entries(
            self.store
                .iter()
                .map(|((hash, _), stored)| (*hash, stored.entry)),
        );
        assert!(
            rebuilt == self.tree,
            "invariant: the Merkle tree matches the stored entries"
        );
        for ((hash, key), stored) in &self.store {
            assert_eq!(
                *hash,
                key_hash(key),
                "invariant: keys are stored under their hash"
            );
            assert_eq!(
                stored.state.value_type(),
                self.config.value_type,
                "invariant: one value type"
            );
        }
        // Under `merkle-forget-key` a created key's entry is knowingly left at 0.
        if !self.bug_merkle_forgets_key() {
            for ((hash, _), stored) in &self.store {
                let expected = entry_hash(*hash, stored.state.digest());
                assert_eq!(
                    stored.entry, expected,
                    "invariant: entry hashes are current"
                );
            }
        }
        for overlay in self.overlay.values() {
            assert!(
                overlay.pending >= 1,
                "invariant: overlays exist only for pending writes"
            );
        }
    }

    // ---- internals shared by the submodules ----

    /// Initializes time-dependent state on the first call that passes `now`.
    pub(super) fn start(&mut self, now: Instant) {
        if self.next_round_at.is_some() {
            return;
        }
        for peer in self.peers.clone() {
            self.liveness.heard_from(peer, now);
        }
        // Spread the first round over one interval so nodes do not all sync at once.
        let interval = self.config.round_interval.as_nanos().max(1) as u64;
        let offset = rand::Rng::random_range(&mut self.rng, 0..interval);
        self.next_round_at = Some(now + std::time::Duration::from_nanos(offset));
    }

    pub(super) fn stored(&self, key: &[u8]) -> Option<&KeyState> {
        let hash = key_hash(key);
        self.store
            .get(&(hash, Bytes::copy_from_slice(key)))
            .map(|stored| &stored.state)
    }

    /// Installs `state` for `key`, keeping the tree and the tombstone set in step.
    /// `local_write` marks the install of this node's own write (the planted Merkle bug's
    /// trigger: forgetting it means a lost delta is never repaired).
    pub(super) fn set_state(&mut self, key: Bytes, state: KeyState, local_write: bool) {
        let hash = key_hash(&key);
        let entry = entry_hash(hash, state.digest());
        if state.is_tombstone() {
            let barrier_still_valid = self
                .stored(&key)
                .is_some_and(|old| old.context == state.context);
            if !barrier_still_valid {
                self.tombstones.insert(key.clone(), None);
            }
        } else {
            self.tombstones.remove(&key);
        }
        self.live.add(hash, &state);
        match self.store.get_mut(&(hash, key.clone())) {
            Some(stored) => {
                self.live.remove(hash, &stored.state);
                self.tree.update(hash, stored.entry, entry);
                stored.entry = entry;
                stored.state = state;
            }
            None => {
                let forget = local_write && self.bug_merkle_forgets_key();
                let entry = if forget { 0 } else { entry };
                self.tree.update(hash, 0, entry);
                self.store.insert((hash, key), StoredKey { state, entry });
            }
        }
    }

    fn bug_merkle_forgets_key(&self) -> bool {
        #[cfg(feature = "sim-bugs")]
        {
            self.config
                .has_bug(super::config::PlantedBug::MerkleForgetsKey)
        }
        #[cfg(not(feature = "sim-bugs"))]
        {
            false
        }
    }

    /// Removes a collected tombstone.
    pub(super) fn remove_key(&mut self, key: &Bytes) {
        let hash = key_hash(key);
        if let Some(stored) = self.store.remove(&(hash, key.clone())) {
            self.live.remove(hash, &stored.state);
            self.tree.update(hash, stored.entry, 0);
        }
        self.tombstones.remove(key);
        self.dirty.insert(key.clone());
    }

    /// Merges a state from a peer. Returns true if the stored state changed. `force_persist`
    /// puts the key in the next batch even if nothing changed (a delta ack needs it durable).
    pub(super) fn merge_remote(
        &mut self,
        key: Bytes,
        state: KeyState,
        force_persist: bool,
    ) -> bool {
        if state.value_type() != self.config.value_type || key.len() > KEY_BYTES_MAX {
            return false;
        }
        if let Some(stamp) = state.lww_stamp() {
            self.hlc.observe(stamp);
        }
        // Knowledge is recorded after the collected-key check below, which relies on it.
        let context = state.context.clone();
        if let Some(overlay) = self.overlay.get_mut(&key) {
            let _ = overlay.state.merge(state.clone());
        }
        let merged = match self.stored(&key) {
            None if self.knowledge_covers_collected(&state) => None,
            None => Some(state),
            Some(existing) => {
                let mut merged = existing.clone();
                if merged.merge(state).is_err() {
                    return false;
                }
                self.plant_merge_bug(&mut merged);
                (merged != *existing).then_some(merged)
            }
        };
        let changed = merged.is_some();
        self.knowledge.record_context(&context);
        if let Some(merged) = merged {
            self.set_state(key.clone(), merged, false);
            self.dirty.insert(key);
        } else if force_persist && self.stored(&key).is_some() {
            self.dirty.insert(key);
        }
        changed
    }

    /// A state for a key not held here whose every dot this node already incorporated: the
    /// key was collected, and the state is old news (see `gc`).
    fn knowledge_covers_collected(&self, state: &KeyState) -> bool {
        !state.context.is_empty() && self.knowledge.covers(&state.context)
    }

    #[allow(unused_variables)]
    fn plant_merge_bug(&self, merged: &mut KeyState) {
        #[cfg(feature = "sim-bugs")]
        if self
            .config
            .has_bug(super::config::PlantedBug::MergeDropsSibling)
        {
            merged.drop_one_sibling();
        }
    }

    pub(super) fn push_event(&mut self, event: Event) {
        // Bounded by the pending writes and reads that produce events.
        assert!(
            self.events.len() < EVENTS_MAX,
            "invariant: the caller drains poll_event"
        );
        self.events.push_back(event);
    }

    /// Queues a message; drops it if the queue is full (gossip is lossy by design, and every
    /// request that needs an answer has a timeout).
    pub(super) fn send(&mut self, to: NodeId, message: GossipMessage) {
        if self.transmit.len() >= TRANSMIT_QUEUE_MAX {
            self.stats.transmit_dropped += 1;
            return;
        }
        self.transmit.push_back((to, message));
    }

    /// Pushes a delta to `to` unless it would be too large (anti-entropy carries those).
    pub(super) fn send_delta(&mut self, to: NodeId, message: GossipMessage) {
        self.stats.deltas_sent += 1;
        self.send(to, message);
    }

    /// A pseudo-random index below `n` from the engine's seeded generator.
    pub(super) fn random_below(&mut self, n: usize) -> usize {
        assert!(n > 0, "invariant: choosing from a non-empty set");
        rand::Rng::random_range(&mut self.rng, 0..n)
    }

    /// The encoded bytes of `key`'s entry if it may be sent (at most `ENTRY_BYTES_MAX`);
    /// `None`, counted in `states_too_large`, if it may not (see "Large states").
    pub(super) fn entry_bytes_to_ship(&mut self, key: &[u8], state: &KeyState) -> Option<usize> {
        let bytes = super::value::entry_bytes(key, state);
        if bytes > ENTRY_BYTES_MAX {
            self.stats.states_too_large += 1;
            return None;
        }
        Some(bytes)
    }
}

/// The members other than this node, in id order.
fn peers_of(config: &EngineConfig) -> Vec<NodeId> {
    let mut peers: Vec<NodeId> = config
        .members
        .iter()
        .copied()
        .filter(|m| *m != config.node)
        .collect();
    peers.sort();
    peers
}

/// The live keys' count and an order-free digest of them: a wrapping sum of one term per
/// key, so installing or replacing one state updates it in O(1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LiveSummary {
    keys: u64,
    digest: u64,
}

impl LiveSummary {
    fn term(key_hash: u64, state: &KeyState) -> u64 {
        mix64(key_hash ^ state.digest().rotate_left(7))
    }

    fn add(&mut self, key_hash: u64, state: &KeyState) {
        if !state.is_tombstone() {
            self.keys += 1;
            self.digest = self.digest.wrapping_add(Self::term(key_hash, state));
        }
    }

    fn remove(&mut self, key_hash: u64, state: &KeyState) {
        if !state.is_tombstone() {
            self.keys -= 1;
            self.digest = self.digest.wrapping_sub(Self::term(key_hash, state));
        }
    }
}
