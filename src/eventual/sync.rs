//! Merkle anti-entropy sessions (the message flow is drawn in `message.rs`).
//!
//! Each round (`round_interval`) this node collects stable tombstones, then either continues
//! its open session or starts one with a partner: an `Alive` peer three times in four, any
//! peer otherwise (so a peer believed down is probed and a healed partition noticed). Only
//! one session is open at a time and it has at most one request outstanding; as soon as an
//! answer arrives the next request goes out, while the round's byte budget lasts. A repair
//! larger than the budget continues in the next rounds. A request unanswered within two
//! rounds (or `request_timeout`, if shorter) abandons the session.
//!
//! A state too large for any message (`ENTRY_BYTES_MAX`) is left out of replies and pushes
//! (counted in `states_too_large`): its leaf keeps differing, the rest is repaired. Replies
//! and pushes stop taking states past `STATES_BYTES_MAX`, so every message fits a frame; a
//! leaf cut short comes back as `truncated` and is asked again.
//!
//! When a session completes, this node holds everything the responder held when it answered
//! the root, so it takes the responder's reported knowledge vector into its own.

use super::engine::{AntiEntropy, Merged, SessionSummary};
use super::hash::key_hash;
use super::liveness::Liveness;
use super::merkle::{LEAVES, NodeRef};
use super::message::{GossipMessage, KeyEntry};
use super::value::entry_bytes;
use super::{ENTRY_BYTES_MAX, STATES_BYTES_MAX};
use crate::types::{Instant, NodeId};
use bytes::Bytes;
use crdts::VClock;
use std::collections::{BTreeSet, VecDeque};

/// Inner nodes per `SyncChildren` request (a reply is ~140 bytes per node).
pub const SYNC_NODES_PER_REQUEST_MAX: usize = 256;
/// Leaves per `SyncLeafDigests` request.
pub const SYNC_LEAVES_PER_REQUEST_MAX: usize = 256;
/// Entry hashes accepted per leaf in a digest request (a leaf holds ~15 keys at 1M keys).
pub const LEAF_DIGESTS_MAX: usize = 4096;
/// Entry hashes a `SyncLeafStates` reply asks for; the rest wait for a later session.
pub const WANTED_PER_REPLY_MAX: usize = 64 * 1024;
/// Approximate encoded bytes of one node in a `SyncChildrenReply` (ref + 16 hashes).
const CHILDREN_REPLY_BYTES_PER_NODE: usize = 8 + 16 * 8;

// A reply's hash and leaf lists fit the room a frame keeps besides the states.
const _: () = assert!(
    WANTED_PER_REPLY_MAX * 8 + SYNC_LEAVES_PER_REQUEST_MAX * 4 + 1024
        <= super::MESSAGE_OVERHEAD_BYTES_MAX
);

/// What the initiator is waiting for.
#[derive(Clone, Debug)]
pub(super) enum Outstanding {
    Root,
    Children(Vec<NodeRef>),
    Leaves(Vec<u32>),
}

/// The session this node started. Invariant: `deadline` is set iff `outstanding` is.
#[derive(Clone, Debug)]
pub(super) struct SyncSession {
    pub(super) id: u64,
    pub(super) peer: NodeId,
    /// The responder's knowledge vector from its root reply.
    pub(super) peer_knowledge: Option<VClock<NodeId>>,
    /// Differing inner nodes still to expand.
    pub(super) inner: VecDeque<NodeRef>,
    /// Differing leaves still to exchange.
    pub(super) leaves: VecDeque<u32>,
    pub(super) outstanding: Option<Outstanding>,
    pub(super) deadline: Option<Instant>,
    pub(super) summary: SessionSummary,
}

impl SyncSession {
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

fn encoded_len<T: serde::Serialize>(value: &T) -> usize {
    crate::wire::encode(value).map_or(0, |frame| frame.len())
}

impl AntiEntropy {
    /// One anti-entropy round.
    pub(super) fn run_round(&mut self, now: Instant) {
        self.stats.rounds += 1;
        self.budget_left = self.config.round_bytes_max;
        self.collect_tombstones();
        if let Some(session) = &mut self.sync {
            session.summary.rounds += 1;
            self.continue_session(now);
            return;
        }
        if self.peers.is_empty() {
            return;
        }
        let peer = self.choose_partner(now);
        let id = self.next_session;
        self.next_session += 1;
        let summary = SessionSummary {
            peer: Some(peer),
            rounds: 1,
            ..SessionSummary::default()
        };
        self.sync = Some(SyncSession {
            id,
            peer,
            peer_knowledge: None,
            inner: VecDeque::new(),
            leaves: VecDeque::new(),
            outstanding: Some(Outstanding::Root),
            deadline: Some(now + self.sync_step_timeout()),
            summary,
        });
        self.stats.sessions_started += 1;
        let message = GossipMessage::SyncRoot {
            session: id,
            root: self.tree.root(),
            knowledge: self.durable.knowledge.clone(),
        };
        self.send_sync(peer, message, true);
    }

    /// How long one session step waits for its answer: two rounds, or `request_timeout` if
    /// shorter. A lost message then costs two rounds of anti-entropy, not a client timeout.
    fn sync_step_timeout(&self) -> std::time::Duration {
        self.config
            .request_timeout
            .min(self.config.round_interval * 2)
    }

    fn choose_partner(&mut self, now: Instant) -> NodeId {
        let alive = self.liveness.peers_in(Liveness::Alive, now);
        if !alive.is_empty() && self.random_below(4) != 0 {
            return alive[self.random_below(alive.len())];
        }
        let index = self.random_below(self.peers.len());
        self.peers[index]
    }

    /// Queues an anti-entropy message, charging it to the round's budget if this node is the
    /// session's initiator.
    fn send_sync(&mut self, to: NodeId, message: GossipMessage, initiator: bool) {
        let bytes = encoded_len(&message);
        self.stats.sync_bytes_sent += bytes as u64;
        if initiator {
            self.budget_left = self.budget_left.saturating_sub(bytes);
            if let Some(session) = &mut self.sync {
                session.summary.bytes_sent += bytes as u64;
            }
        }
        self.send(to, message);
    }

    pub(super) fn expire_sync(&mut self, now: Instant) {
        if self
            .sync
            .as_ref()
            .and_then(SyncSession::deadline)
            .is_some_and(|deadline| now >= deadline)
        {
            self.sync = None;
            self.stats.sessions_aborted += 1;
        }
    }

    pub(super) fn handle_sync_message(
        &mut self,
        now: Instant,
        from: NodeId,
        message: GossipMessage,
    ) {
        let bytes = encoded_len(&message);
        self.stats.sync_bytes_received += bytes as u64;
        match message {
            GossipMessage::SyncRoot {
                session,
                root,
                knowledge,
            } => {
                self.record_peer_knowledge(from, &knowledge);
                let children =
                    (root != self.tree.root()).then(|| self.tree.children(NodeRef::ROOT));
                let knowledge = self.durable.knowledge.clone();
                self.send_sync(
                    from,
                    GossipMessage::SyncRootReply {
                        session,
                        knowledge,
                        children,
                    },
                    false,
                );
            }
            GossipMessage::SyncChildren { session, nodes } => {
                let nodes = nodes
                    .into_iter()
                    .filter(|node| node.is_valid() && !node.is_leaf())
                    .take(SYNC_NODES_PER_REQUEST_MAX)
                    .map(|node| (node, self.tree.children(node)))
                    .collect();
                self.send_sync(
                    from,
                    GossipMessage::SyncChildrenReply { session, nodes },
                    false,
                );
            }
            GossipMessage::SyncLeafDigests {
                session,
                leaves,
                bytes_max,
            } => {
                self.answer_leaf_digests(from, session, leaves, bytes_max as usize);
            }
            GossipMessage::SyncPush { session: _, states } => {
                for KeyEntry { key, state } in states {
                    if self.merge_remote(key, state, false) == Merged::Changed {
                        self.stats.keys_repaired += 1;
                    }
                }
            }
            answer => self.handle_sync_answer(now, from, answer, bytes),
        }
    }

    /// An answer to this node's own session.
    fn handle_sync_answer(
        &mut self,
        now: Instant,
        from: NodeId,
        answer: GossipMessage,
        bytes: usize,
    ) {
        let session_of = |message: &GossipMessage| match message {
            GossipMessage::SyncRootReply { session, .. }
            | GossipMessage::SyncChildrenReply { session, .. }
            | GossipMessage::SyncLeafStates { session, .. } => Some(*session),
            _ => None,
        };
        let Some(session) = &mut self.sync else {
            return;
        };
        if session.peer != from || Some(session.id) != session_of(&answer) {
            return;
        }
        // A duplicated or late answer to an earlier request of this session carries the same
        // session id: taking it for the current request's answer would skip that request and
        // could finish the session, adopting the peer's knowledge vector without its states.
        if !session
            .outstanding
            .as_ref()
            .is_some_and(|outstanding| answers_request(outstanding, &answer))
        {
            return;
        }
        let Some(outstanding) = session.outstanding.take() else {
            return;
        };
        session.deadline = None;
        session.summary.bytes_received += bytes as u64;
        self.budget_left = self.budget_left.saturating_sub(bytes);
        match (outstanding, answer) {
            (
                Outstanding::Root,
                GossipMessage::SyncRootReply {
                    knowledge,
                    children,
                    ..
                },
            ) => {
                self.record_peer_knowledge(from, &knowledge);
                let Some(session) = &mut self.sync else {
                    return;
                };
                session.peer_knowledge = Some(knowledge);
                match children {
                    None => return self.finish_session(true),
                    Some(theirs) => {
                        let differing = self.tree.differing_children(NodeRef::ROOT, &theirs);
                        self.enqueue(differing);
                    }
                }
            }
            (Outstanding::Children(asked), GossipMessage::SyncChildrenReply { nodes, .. }) => {
                if nodes.len() != asked.len() {
                    // A node left unanswered would never be compared: the session could not
                    // claim the peer's knowledge. Start over next round.
                    self.sync = None;
                    self.stats.sessions_aborted += 1;
                    return;
                }
                for (node, hashes) in nodes {
                    if asked.contains(&node) {
                        let differing = self.tree.differing_children(node, &hashes);
                        self.enqueue(differing);
                    }
                }
            }
            (
                Outstanding::Leaves(asked),
                GossipMessage::SyncLeafStates {
                    states,
                    wanted,
                    truncated,
                    ..
                },
            ) => {
                self.take_leaf_states(from, &asked, states, wanted, truncated);
            }
            _ => {
                // An answer of the wrong kind: a confused peer. Abandon the session.
                self.sync = None;
                self.stats.sessions_aborted += 1;
                return;
            }
        }
        self.continue_session(now);
    }

    fn enqueue(&mut self, nodes: Vec<NodeRef>) {
        let Some(session) = &mut self.sync else {
            return;
        };
        for node in nodes {
            if node.is_leaf() {
                session.leaves.push_back(node.index);
            } else {
                session.inner.push_back(node);
            }
        }
    }

    /// Sends the session's next request if the budget allows, or completes it.
    fn continue_session(&mut self, now: Instant) {
        let budget = self.budget_left;
        let Some(session) = &mut self.sync else {
            return;
        };
        if session.outstanding.is_some() || budget == 0 {
            return;
        }
        // Every request gets a fresh id (sent as `session`), so a duplicated or late answer to
        // an earlier request of this session can never be taken for this one's.
        let id = self.next_session;
        self.next_session += 1;
        session.id = id;
        let peer = session.peer;
        let message = if !session.inner.is_empty() {
            let count =
                (budget / CHILDREN_REPLY_BYTES_PER_NODE).clamp(1, SYNC_NODES_PER_REQUEST_MAX);
            let count = count.min(session.inner.len());
            let nodes: Vec<NodeRef> = session.inner.drain(..count).collect();
            session.outstanding = Some(Outstanding::Children(nodes.clone()));
            GossipMessage::SyncChildren { session: id, nodes }
        } else if !session.leaves.is_empty() {
            let leaves = self.leaves_for_request(budget);
            let Some(session) = &mut self.sync else {
                return;
            };
            session.outstanding = Some(Outstanding::Leaves(
                leaves.iter().map(|(leaf, _)| *leaf).collect(),
            ));
            let bytes_max = u32::try_from(budget / 2).unwrap_or(u32::MAX).max(1);
            GossipMessage::SyncLeafDigests {
                session: id,
                leaves,
                bytes_max,
            }
        } else {
            return self.finish_session(false);
        };
        let deadline = now + self.sync_step_timeout();
        let Some(session) = &mut self.sync else {
            return;
        };
        session.deadline = Some(deadline);
        self.send_sync(peer, message, true);
    }

    /// Takes leaves off the session queue with this node's entry hashes, using at most about
    /// half the budget for the digests (the other half is for the answer). At least one.
    fn leaves_for_request(&mut self, budget: usize) -> Vec<(u32, Vec<u64>)> {
        let mut request = Vec::new();
        let mut bytes = 0;
        while request.len() < SYNC_LEAVES_PER_REQUEST_MAX {
            let Some(session) = &mut self.sync else { break };
            let Some(leaf) = session.leaves.front().copied() else {
                break;
            };
            let digests: Vec<u64> = self
                .leaf_entries(leaf)
                .into_iter()
                .map(|(_, _, entry)| entry)
                .take(LEAF_DIGESTS_MAX)
                .collect();
            let cost = 12 + digests.len() * 8;
            if !request.is_empty() && bytes + cost > budget / 2 {
                break;
            }
            bytes += cost;
            if let Some(session) = &mut self.sync {
                session.leaves.pop_front();
            }
            request.push((leaf, digests));
        }
        request
    }

    /// This node's keys in `leaf` (at most `LEAF_DIGESTS_MAX` of them from the store, in
    /// key hash order): key, state and entry hash.
    pub(super) fn leaf_entries(&self, leaf: u32) -> Vec<(Bytes, super::value::KeyState, u64)> {
        let node = NodeRef {
            level: super::merkle::DEPTH,
            index: leaf,
        };
        let (start, end) = node.hash_range();
        self.installed_range(start, end, LEAF_DIGESTS_MAX)
            .into_iter()
            .map(|((_, key), row)| (key, row.state, row.entry))
            .collect()
    }

    fn answer_leaf_digests(
        &mut self,
        from: NodeId,
        session: u64,
        leaves: Vec<(u32, Vec<u64>)>,
        bytes_max: usize,
    ) {
        let mut states = Vec::new();
        let mut wanted = Vec::new();
        let mut truncated = Vec::new();
        let mut bytes = 0;
        let mut too_large = 0;
        for (leaf, theirs) in leaves.into_iter().take(SYNC_LEAVES_PER_REQUEST_MAX) {
            if leaf as usize >= LEAVES {
                continue;
            }
            if bytes >= bytes_max {
                truncated.push(leaf);
                continue;
            }
            let theirs: BTreeSet<u64> = theirs.into_iter().take(LEAF_DIGESTS_MAX).collect();
            let mut mine = BTreeSet::new();
            let mut leaf_cut = false;
            for (key, state, entry) in self.leaf_entries(leaf) {
                mine.insert(entry);
                if theirs.contains(&entry) || leaf_cut {
                    continue;
                }
                let size = entry_bytes(&key, &state);
                if size > ENTRY_BYTES_MAX {
                    too_large += 1;
                } else if bytes >= STATES_BYTES_MAX {
                    // The frame is full: the initiator asks for this leaf again.
                    leaf_cut = true;
                } else {
                    bytes += size;
                    states.push(KeyEntry { key, state });
                }
            }
            if leaf_cut {
                truncated.push(leaf);
            }
            let room = WANTED_PER_REPLY_MAX - wanted.len();
            wanted.extend(theirs.difference(&mine).copied().take(room));
        }
        self.stats.states_too_large += too_large;
        self.send_sync(
            from,
            GossipMessage::SyncLeafStates {
                session,
                states,
                wanted,
                truncated,
            },
            false,
        );
    }

    fn take_leaf_states(
        &mut self,
        from: NodeId,
        asked: &[u32],
        states: Vec<KeyEntry>,
        wanted: Vec<u64>,
        truncated: Vec<u32>,
    ) {
        let asked_set: BTreeSet<u32> = asked.iter().copied().collect();
        let mut repaired = 0;
        for KeyEntry { key, state } in states {
            if asked_set.contains(&super::merkle::leaf_of(key_hash(&key)))
                && self.merge_remote(key, state, false) == Merged::Changed
            {
                repaired += 1;
            }
        }
        self.stats.keys_repaired += repaired;
        let wanted: BTreeSet<u64> = wanted.into_iter().collect();
        let mut push = Vec::new();
        let (mut bytes, mut too_large) = (0, 0);
        let bytes_max = self.budget_left.min(STATES_BYTES_MAX);
        for leaf in asked {
            for (key, state, entry) in self.leaf_entries(*leaf) {
                if !wanted.contains(&entry) || (!push.is_empty() && bytes >= bytes_max) {
                    continue;
                }
                let size = entry_bytes(&key, &state);
                if size > ENTRY_BYTES_MAX {
                    too_large += 1;
                    continue;
                }
                bytes += size;
                push.push(KeyEntry { key, state });
            }
        }
        self.stats.states_too_large += too_large;
        let Some(session) = &mut self.sync else {
            return;
        };
        session.summary.keys_repaired += repaired;
        let id = session.id;
        for leaf in truncated {
            if asked_set.contains(&leaf) {
                session.leaves.push_back(leaf);
            }
        }
        if !push.is_empty() {
            self.send_sync(
                from,
                GossipMessage::SyncPush {
                    session: id,
                    states: push,
                },
                true,
            );
        }
    }

    fn finish_session(&mut self, in_sync: bool) {
        let Some(session) = self.sync.take() else {
            return;
        };
        if let Some(knowledge) = &session.peer_knowledge {
            // The next batch carries the grown vector to disk (see `batched_knowledge`).
            self.knowledge.merge_vector(knowledge);
        }
        self.stats.sessions_completed += 1;
        if in_sync {
            self.stats.sessions_in_sync += 1;
        }
        self.stats.last_session = Some(SessionSummary {
            in_sync,
            ..session.summary
        });
    }

    fn record_peer_knowledge(&mut self, peer: NodeId, knowledge: &VClock<NodeId>) {
        if self.peers.contains(&peer) {
            let entry = self.peer_knowledge.entry(peer).or_default();
            crdts::CvRDT::merge(entry, knowledge.clone());
        }
    }
}

/// Whether `answer` can be the answer to `outstanding`: the right kind, and (for children and
/// leaves) only about the nodes or leaves that request asked for. Nodes are asked once per
/// session, so an answer about other ones is a duplicate of an earlier answer. (An empty
/// leaf answer cannot be told apart; it makes the session re-ask nothing, which is safe only
/// because it is rare: see the simulator's notes.)
fn answers_request(outstanding: &Outstanding, answer: &GossipMessage) -> bool {
    match (outstanding, answer) {
        (Outstanding::Root, GossipMessage::SyncRootReply { .. }) => true,
        (Outstanding::Children(asked), GossipMessage::SyncChildrenReply { nodes, .. }) => {
            !nodes.is_empty() && nodes.iter().all(|(node, _)| asked.contains(node))
        }
        (
            Outstanding::Leaves(asked),
            GossipMessage::SyncLeafStates {
                states, truncated, ..
            },
        ) => {
            let in_asked = |leaf: u32| asked.contains(&leaf);
            states
                .iter()
                .all(|entry| in_asked(super::merkle::leaf_of(key_hash(&entry.key))))
                && truncated.iter().all(|leaf| in_asked(*leaf))
        }
        _ => false,
    }
}
