//! The [`AntiEntropy`] state machine: one per (node, eventual keyspace). See the module docs
//! of [`crate::eventual`] for the calling protocol.

use super::config::EngineConfig;
use super::error::{ConfigError, ReadError, WriteError};
use super::gc::{FENCES_MAX, Knowledge};
use super::hash::key_hash;
use super::hlc::{Hlc, HlcTimestamp};
use super::levels::{Event, ReadMode, RequestId, SessionToken, WriteLevel};
use super::liveness::{Liveness, LivenessView};
use super::merkle::MerkleTree;
use super::message::{GossipMessage, KeyEntry};
use super::reads::PendingRead;
use super::store::{
    DurableMeta, KeyspaceStore, PersistBatch, PersistId, StoreError, StoredKey, Summary,
};
use super::sync::SyncSession;
use super::value::{KeyState, ReadValue, WriteStamp};
use super::writes::refused_apply;
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
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Local writes applied but not yet persisted, per key. Invariant: `state` is the stored
/// state (if any) merged with every pending write, and `pending >= 1`.
#[derive(Clone, Debug)]
pub(super) struct Overlay {
    pub(super) state: KeyState,
    pub(super) pending: u32,
    /// The last batch that carried `state` to the store and the row it wrote (`None` until
    /// one did).
    pub(super) carried: Option<(PersistId, StoredKey)>,
}

/// An installed row the store may not hold yet: changed since the last batch, or pinned
/// while a batch that writes another state for the key (a pending local write) is in flight.
#[derive(Clone, Debug)]
pub(super) struct Fresh {
    /// The installed row (`None`: the key is not held).
    pub(super) row: Option<StoredKey>,
    /// The batch that leaves exactly this row in the store; the entry goes once it is
    /// persisted. `None` while no polled batch carries it.
    pub(super) carried_by: Option<PersistId>,
}

/// What merging a peer's state did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Merged {
    /// Not taken (another value type, a key too long, a stamp too far ahead): nothing is
    /// persisted, so nothing may be acknowledged.
    Refused,
    /// Taken; the installed state already held it.
    Unchanged,
    /// Taken; the installed state changed.
    Changed,
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
    /// `lww` states from peers refused because their stamp was more than `clock_skew_max`
    /// ahead of this node's wall clock (see `EngineConfig::clock_skew_max`).
    pub states_from_future: u64,
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
    /// The persisted rows, ordered by `(key_hash, key)` so a Merkle node is a range.
    pub(super) store: KeyspaceStore,
    /// Installed rows the store may not hold yet; they shadow the store's. The installed
    /// view is `fresh` over `store`.
    pub(super) fresh: BTreeMap<(u64, Bytes), Fresh>,
    /// Invariant: equals the tree built from the installed view's entry hashes.
    pub(super) tree: MerkleTree,
    /// Invariant: the summary of the installed view, kept as states install so status
    /// never walks the keys.
    pub(super) summary: Summary,
    /// The first storage failure met (see [`AntiEntropy::fault`]).
    pub(super) fault: RefCell<Option<StoreError>>,
    pub(super) overlay: BTreeMap<Bytes, Overlay>,
    pub(super) knowledge: Knowledge,
    /// The meta of the last persisted batch: what this node reports to peers.
    pub(super) durable: DurableMeta,
    /// Each peer's last reported durable knowledge vector.
    pub(super) peer_knowledge: BTreeMap<NodeId, VClock<NodeId>>,
    /// Tombstoned keys whose phase-1 barrier is recorded (at most `FENCES_MAX`).
    pub(super) fences: BTreeMap<Bytes, VClock<NodeId>>,
    /// Where the next tombstone collection pass starts in the store's tombstone index.
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
    /// The wall clock as of the last input that passed one (`None` before any).
    pub(super) wall: Option<WallMillis>,
    pub(super) stats: EngineStats,
}

impl AntiEntropy {
    /// Creates the engine from its configuration and its keyspace's store, which holds
    /// everything persisted before a restart (nothing for a new node). It reads the meta, the
    /// summary and the Merkle leaves, never the keys. `rng_seed` drives partner choice and
    /// the starting point of request ids: give each incarnation (each restart) its own seed,
    /// so answers still in flight to the previous incarnation cannot match new requests.
    pub fn new(
        config: EngineConfig,
        store: KeyspaceStore,
        rng_seed: u64,
    ) -> Result<AntiEntropy, ConfigError> {
        config.validate()?;
        let node = config.node;
        let image = store.load().map_err(ConfigError::Store)?;
        // The meta's HLC covers every stamp persisted with or before it, so the clock
        // restarts above every stored `lww` stamp without reading a key.
        let meta = image.meta.unwrap_or(DurableMeta {
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
            store,
            fresh: BTreeMap::new(),
            tree: MerkleTree::from_leaves(image.leaves),
            summary: image.summary,
            fault: RefCell::new(None),
            overlay: BTreeMap::new(),
            knowledge: Knowledge::new(meta.knowledge.clone()),
            durable: meta,
            peer_knowledge: BTreeMap::new(),
            fences: BTreeMap::new(),
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
            wall: None,
            stats: EngineStats::default(),
            config,
        };
        engine.batched_knowledge = engine.durable.knowledge.clone();
        // Request ids start at a random point, so answers addressed to an earlier incarnation
        // of this node (still in flight across a restart) do not match new requests.
        engine.next_session = rand::Rng::random_range(&mut engine.rng, 1..u64::MAX / 2);
        engine.next_read = rand::Rng::random_range(&mut engine.rng, 1..u64::MAX / 2);
        Ok(engine)
    }

    /// Takes a client write. The write is applied at once to a pending overlay, handed to the
    /// shell in the next [`PersistBatch`], and only after [`AntiEntropy::persisted`] installed,
    /// acknowledged (`Local`) and pushed to peers. Errors mean nothing was applied.
    pub fn local_write(
        &mut self,
        now: Instant,
        wall: WallMillis,
        id: RequestId,
        key: Bytes,
        op: super::value::Op,
        level: WriteLevel,
    ) -> Result<(), WriteError> {
        self.local_write_at(now, wall, id, key, op, level, None)
    }

    /// [`AntiEntropy::local_write`] of a write whose client chose its time: an `lww` write is
    /// stamped `at` instead of by this node's clock, so each attempt of one write, through any
    /// node, stores the same `(time, value)` and a resend cannot overwrite a newer write. The
    /// clock moves past `at`. A time more than `clock_skew_max` ahead of the wall clock, or
    /// that far behind this node's clock, is refused (see `check_client_time`). Other value
    /// types ignore `at`.
    #[allow(clippy::too_many_arguments)]
    pub fn local_write_at(
        &mut self,
        now: Instant,
        wall: WallMillis,
        id: RequestId,
        key: Bytes,
        op: super::value::Op,
        level: WriteLevel,
        at: Option<HlcTimestamp>,
    ) -> Result<(), WriteError> {
        self.start(now);
        self.wall = Some(wall);
        self.check_write(&key, &op)?;
        let at = at.filter(|_| self.config.value_type == super::ValueType::Lww);
        if let Some(at) = at {
            self.check_client_time(wall, at)?;
        }
        // Stamp and apply on copies: a refused write must leave the counter and HLC alone.
        let seq = self.seq + 1;
        let mut hlc = self.hlc.clone();
        let stamp = WriteStamp {
            node: self.config.node,
            seq,
            hlc: match at {
                Some(at) => {
                    hlc.observe(at);
                    at
                }
                None => hlc.now(wall),
            },
        };
        // Without an overlay the installed row is read here; it goes into `fresh` once the
        // write is taken, so the batch that carries the write need not read it again.
        let mut installed = None;
        let before = match self.overlay.get(&key) {
            Some(overlay) => Cow::Borrowed(&overlay.state),
            None => {
                let row = self.stored_row(&key);
                let state = row.as_ref().map(|row| row.state.clone());
                installed = Some(row);
                Cow::Owned(state.unwrap_or_else(|| KeyState::new(self.config.value_type)))
            }
        };
        let mut state = before.clone().into_owned();
        state.apply_local(op, stamp).map_err(refused_apply)?;
        Self::check_state_size(&before, &state)?;
        self.seq = seq;
        self.hlc = hlc;
        let lww_stamp = state.lww_stamp().map(|_| stamp.hlc);
        if let Some(row) = installed {
            let at = (key_hash(&key), key.clone());
            let carried_by = None;
            self.fresh.entry(at).or_insert(Fresh { row, carried_by });
        }
        let overlay = self.overlay.entry(key.clone()).or_insert(Overlay {
            state: state.clone(),
            pending: 0,
            carried: None,
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
    /// barriers name the old members, so every tombstone starts its collection over (the
    /// barriers go: at most `FENCES_MAX`, no store access). Writes and reads in flight keep
    /// waiting for acks and answers, and time out as usual if they no longer can.
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
        self.fences.clear();
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
        // Remote timestamps move the HLC when their states merge, within the skew bound.
        self.wall = Some(wall);
        self.liveness.heard_from(from, now);
        match message {
            GossipMessage::Delta {
                entry,
                token,
                ack_requested,
            } => {
                let KeyEntry { key, state } = entry;
                let merged = self.merge_remote(key, state, ack_requested);
                // A refused delta is not persisted, so not acknowledged: the writer times out.
                if ack_requested && token.node == from && merged != Merged::Refused {
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
                if self.merge_remote(entry.key, entry.state, false) == Merged::Changed {
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
        self.wall = Some(wall);
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
        let id = PersistId(self.next_persist_id);
        self.next_persist_id += 1;
        let keys = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|key| {
                let hash = key_hash(&key);
                let installed = self.pin(hash, &key, id);
                let row = match self.overlay.get_mut(&key) {
                    // A pending local write is made durable before it is installed.
                    Some(overlay) => {
                        let row = StoredKey::new(hash, overlay.state.clone());
                        overlay.carried = Some((id, row.clone()));
                        Some(row)
                    }
                    None => installed,
                };
                (key, row)
            })
            .collect();
        let meta = DurableMeta {
            seq: self.seq,
            hlc: self.hlc.last(),
            knowledge: self.knowledge.vector().clone(),
        };
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
        // The store now holds these rows: reads may go there.
        self.fresh.retain(|_, fresh| fresh.carried_by != Some(id));
        self.recheck_session_reads();
    }

    /// Keeps `key`'s installed row in `fresh` until `batch` is persisted (the batch may
    /// write a pending local write's state, which is not installed yet) and returns it.
    fn pin(&mut self, hash: u64, key: &Bytes, batch: PersistId) -> Option<StoredKey> {
        let at = (hash, key.clone());
        let row = match self.fresh.get(&at) {
            Some(fresh) => fresh.row.clone(),
            None => self.read_store(|store| store.get(key)).flatten(),
        };
        let carried_by = Some(batch);
        let pinned = Fresh {
            row: row.clone(),
            carried_by,
        };
        self.fresh.insert(at, pinned);
        row
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
        self.stored(key).map_or_else(
            || ReadValue::empty(self.config.value_type),
            |state| state.read(),
        )
    }

    /// The installed state of `key`, if any.
    pub fn key_state(&self, key: &[u8]) -> Option<KeyState> {
        self.stored(key)
    }

    /// Every installed key and state, in `(key_hash, key)` order (tombstones included).
    /// Reads every row: for tests and the simulator.
    pub fn entries(&self) -> Vec<(Bytes, KeyState)> {
        self.installed_rows()
            .into_iter()
            .map(|((_, key), row)| (key, row.state))
            .collect()
    }

    /// Installed keys that are not tombstones: compare these across replicas for
    /// convergence (tombstones disappear at different times on different nodes). Reads
    /// every row: for tests and the simulator.
    pub fn live_entries(&self) -> BTreeMap<Bytes, KeyState> {
        self.entries()
            .into_iter()
            .filter(|(_, state)| !state.is_tombstone())
            .collect()
    }

    /// A hash of every live key and its state digest (equal live states, equal digests).
    /// O(1): kept up to date as states are installed.
    pub fn state_digest(&self) -> u64 {
        self.summary.live_digest
    }

    /// Installed keys, tombstones included. O(1).
    pub fn key_count(&self) -> u64 {
        self.summary.keys
    }

    /// Installed keys that are not tombstones. O(1).
    pub fn live_key_count(&self) -> u64 {
        self.summary.live_keys
    }

    /// The first storage failure this engine met, if any. A read that failed was taken as
    /// "no such key", so the shell must stop the engine (fail-stop) before it persists,
    /// sends or answers anything more.
    pub fn fault(&self) -> Option<StoreError> {
        self.fault.borrow().clone()
    }

    /// Rows the engine holds in memory beyond the store (changed since the last persisted
    /// batch or pinned by one in flight): bounded by what one batch carries.
    pub fn fresh_rows(&self) -> usize {
        self.fresh.len()
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

    /// Number of keys with tombstones awaiting collection. O(1).
    pub fn tombstones_pending(&self) -> usize {
        (self.summary.keys - self.summary.live_keys) as usize
    }

    /// Checks the Merkle tree, the summary and the HLC against every installed row: O(keys),
    /// for tests and the simulator.
    pub fn check_invariants(&self) {
        let (last, durable) = (self.hlc.last(), self.durable.hlc);
        assert!(
            (last.physical_ms, last.logical) >= (durable.physical_ms, durable.logical),
            "invariant: the HLC never falls below its persisted high-water mark"
        );
        let rows = self.installed_rows();
        let mut recounted = Summary::default();
        for ((hash, key), row) in &rows {
            if let Some(stamp) = row.state.lww_stamp() {
                assert!(
                    (last.physical_ms, last.logical) >= (stamp.physical_ms, stamp.logical),
                    "invariant: the HLC is at or above every stored lww stamp"
                );
            }
            assert_eq!(
                *hash,
                key_hash(key),
                "invariant: keys are stored under their hash"
            );
            assert_eq!(
                row.state.value_type(),
                self.config.value_type,
                "invariant: one value type"
            );
            let expected = StoredKey::new(*hash, row.state.clone());
            assert_eq!(row.live, expected.live, "invariant: live terms are current");
            // Under `merkle-forget-key` a created key's entry is knowingly left at 0.
            if !self.bug_merkle_forgets_key() {
                assert_eq!(
                    row.entry, expected.entry,
                    "invariant: entry hashes are current"
                );
            }
            recounted.replace(None, Some(row));
        }
        assert!(
            recounted == self.summary,
            "invariant: the summary matches the installed rows"
        );
        let rebuilt =
            MerkleTree::from_entries(rows.iter().map(|((hash, _), row)| (*hash, row.entry)));
        assert!(
            rebuilt == self.tree,
            "invariant: the Merkle tree matches the installed rows"
        );
        for overlay in self.overlay.values() {
            assert!(
                overlay.pending >= 1,
                "invariant: overlays exist only for pending writes"
            );
        }
        assert!(
            self.fences.len() <= FENCES_MAX,
            "invariant: tombstone barriers stay bounded"
        );
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

    /// The installed state of `key`: its fresh row if it has one, else the store's.
    pub(super) fn stored(&self, key: &[u8]) -> Option<KeyState> {
        self.stored_row(key).map(|row| row.state)
    }

    /// The installed row of `key`. A storage failure reads as "no row" and is kept as the
    /// engine's [`AntiEntropy::fault`].
    pub(super) fn stored_row(&self, key: &[u8]) -> Option<StoredKey> {
        let at = (key_hash(key), Bytes::copy_from_slice(key));
        match self.fresh.get(&at) {
            Some(fresh) => fresh.row.clone(),
            None => self.read_store(|store| store.get(key)).flatten(),
        }
    }

    /// Runs one store read, keeping its failure.
    pub(super) fn read_store<T>(
        &self,
        read: impl FnOnce(&KeyspaceStore) -> Result<T, StoreError>,
    ) -> Option<T> {
        match read(&self.store) {
            Ok(value) => Some(value),
            Err(error) => {
                self.fault.borrow_mut().get_or_insert(error);
                None
            }
        }
    }

    /// The installed rows whose key hash is in `[start, end)` (`end` `None`: to the last),
    /// at most `limit` from the store, in `(key_hash, key)` order.
    pub(super) fn installed_range(
        &self,
        start: u64,
        end: Option<u64>,
        limit: usize,
    ) -> BTreeMap<(u64, Bytes), StoredKey> {
        let stored = self
            .read_store(|store| store.range((start, &[]), end, limit))
            .unwrap_or_default();
        let mut rows: BTreeMap<(u64, Bytes), StoredKey> = stored
            .into_iter()
            .map(|(key, row)| ((key_hash(&key), key), row))
            .collect();
        let lower = std::ops::Bound::Included((start, Bytes::new()));
        let upper = end.map_or(std::ops::Bound::Unbounded, |end| {
            std::ops::Bound::Excluded((end, Bytes::new()))
        });
        for (at, fresh) in self.fresh.range((lower, upper)) {
            match &fresh.row {
                Some(row) => rows.insert(at.clone(), row.clone()),
                None => rows.remove(at),
            };
        }
        rows
    }

    /// Every installed row.
    fn installed_rows(&self) -> BTreeMap<(u64, Bytes), StoredKey> {
        self.installed_range(0, None, usize::MAX)
    }

    /// Installs `row` for `key` in place of its installed row `old` (read by the caller, who
    /// merged into it), keeping the tree, the summary and the barriers in step.
    /// `local_write` marks the install of this node's own write (the planted Merkle bug's
    /// trigger: forgetting it means a lost delta is never repaired).
    pub(super) fn set_row(
        &mut self,
        key: Bytes,
        old: Option<StoredKey>,
        mut row: StoredKey,
        local_write: bool,
    ) {
        let hash = key_hash(&key);
        if old.is_none() && local_write && self.bug_merkle_forgets_key() {
            row.entry = 0;
        }
        // A tombstone keeps its barrier only while its delete is the same one.
        let same_delete = old
            .as_ref()
            .is_some_and(|old| old.state.context == row.state.context);
        if !(row.state.is_tombstone() && same_delete) {
            self.fences.remove(&key);
        }
        self.install_row(hash, key, old, Some(row));
    }

    /// Replaces the installed row `old` of `key` by `row`.
    fn install_row(
        &mut self,
        hash: u64,
        key: Bytes,
        old: Option<StoredKey>,
        row: Option<StoredKey>,
    ) {
        self.tree.update(
            hash,
            old.as_ref().map_or(0, |old| old.entry),
            row.as_ref().map_or(0, |row| row.entry),
        );
        self.summary.replace(old.as_ref(), row.as_ref());
        let fresh = Fresh {
            row,
            carried_by: None,
        };
        self.fresh.insert((hash, key), fresh);
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
        if let Some(old) = self.stored_row(key) {
            self.install_row(hash, key.clone(), Some(old), None);
        }
        self.fences.remove(key);
        self.dirty.insert(key.clone());
    }

    /// Merges a state from a peer. `force_persist` puts the key in the next batch even if
    /// nothing changed (a delta ack needs it durable).
    pub(super) fn merge_remote(
        &mut self,
        key: Bytes,
        state: KeyState,
        force_persist: bool,
    ) -> Merged {
        if state.value_type() != self.config.value_type || key.len() > KEY_BYTES_MAX {
            return Merged::Refused;
        }
        if self.stamped_too_far_ahead(&state) {
            return Merged::Refused;
        }
        if let Some(stamp) = state.lww_stamp() {
            self.hlc.observe(stamp);
        }
        // Knowledge is recorded after the collected-key check below, which relies on it.
        let context = state.context.clone();
        if let Some(overlay) = self.overlay.get_mut(&key) {
            let _ = overlay.state.merge(state.clone());
        }
        let existing = self.stored_row(&key);
        let merged = match &existing {
            None if self.knowledge_covers_collected(&state) => None,
            None => Some(state),
            Some(existing) => {
                let mut merged = existing.state.clone();
                if merged.merge(state).is_err() {
                    return Merged::Refused;
                }
                self.plant_merge_bug(&mut merged);
                (merged != existing.state).then_some(merged)
            }
        };
        self.knowledge.record_context(&context);
        match merged {
            Some(merged) => {
                let row = StoredKey::new(key_hash(&key), merged);
                self.set_row(key.clone(), existing, row, false);
                self.dirty.insert(key);
                Merged::Changed
            }
            None => {
                if force_persist && existing.is_some() {
                    self.dirty.insert(key);
                }
                Merged::Unchanged
            }
        }
    }

    /// Refuses a client's write time more than `clock_skew_max` ahead of the wall clock, the
    /// bound states from peers are held to, or that far behind this node's clock: `lww`
    /// tombstones that old may be collected, and the write must not outlive its delete (see
    /// `gc`).
    fn check_client_time(&self, wall: WallMillis, at: HlcTimestamp) -> Result<(), WriteError> {
        let skew_max_ms = self.config.clock_skew_max.as_millis() as u64;
        let ahead_ms = at.physical_ms.saturating_sub(wall.0);
        if ahead_ms > skew_max_ms {
            return Err(WriteError::StampAhead {
                ahead_ms,
                skew_max_ms,
            });
        }
        let behind_ms = self.hlc.last().physical_ms.saturating_sub(at.physical_ms);
        if behind_ms > skew_max_ms {
            return Err(WriteError::StampBehind {
                behind_ms,
                skew_max_ms,
            });
        }
        Ok(())
    }

    /// True (and counted) if `state` is an `lww` state stamped more than `clock_skew_max`
    /// ahead of this node's wall clock.
    pub(super) fn stamped_too_far_ahead(&mut self, state: &KeyState) -> bool {
        let (Some(stamp), Some(wall)) = (state.lww_stamp(), self.wall) else {
            return false;
        };
        let skew_ms = self.config.clock_skew_max.as_millis() as u64;
        let ahead = stamp.physical_ms > wall.0.saturating_add(skew_ms);
        if ahead {
            self.stats.states_from_future += 1;
        }
        ahead
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
