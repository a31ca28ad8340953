//! Knowledge vectors and tombstone collection by causal stability.
//!
//! Each node keeps a *knowledge vector* `K`: `K[n] = s` means every write of node `n` with a
//! counter `<= s` is reflected in this node's key states (merged, possibly superseded). It
//! grows three ways: this node's own writes; dots seen in merged states, as long as they are
//! contiguous; and a completed anti-entropy session, after which the initiator holds
//! everything the responder held at the session start, so it may take the responder's `K`.
//! Nodes report their *durable* `K` (the one persisted with their states) in every session.
//!
//! A tombstone (see `KeyState::is_tombstone`) with context `C` is collected in two phases:
//!
//! 1. once the *stable vector* `S` (pointwise minimum of every member's reported `K`)
//!    covers `C`, every member has incorporated the delete. Record the *barrier*
//!    `B[m] = K_m[m]`: every write a member made before it incorporated the delete has a
//!    counter `<= B[m]`.
//! 2. once `S` covers `B`, every such concurrent write is incorporated everywhere too, so no
//!    member and no message in flight can carry a state of the key that is not covered by
//!    the receiver's `K`. Collect.
//!
//! After collection, a state arriving for a key this node does not hold is dropped if its
//! context is covered by `K` (it was merged here before, so it is old news), and merged
//! otherwise (a genuinely new write). Hence a delete never resurrects, even when a node
//! returns from a long partition with an old value: its value is either covered (dropped)
//! or the node has not reported a `K` covering the delete, and then nothing was collected.
//!
//! An `lww` write timed by its client (a resend keeps its first attempt's time) is a new
//! write with an old time, which a collected delete could no longer outrank. So an `lww`
//! tombstone also waits until its time is `clock_skew_max` behind this node's clock, and a
//! client's time that far behind is refused (`WriteError::StampBehind`): a write taken after
//! a collection is then later than the delete everywhere. (Clocks only move forward: the
//! node's HLC, not its wall clock, is the measure.)

use super::hlc::HlcTimestamp;
use super::levels::SessionToken;
use super::value::KeyState;
use crate::types::NodeId;
use bytes::Bytes;
use crdts::{CmRDT, CvRDT, Dot, VClock};
use std::collections::{BTreeMap, BTreeSet};

/// Dots remembered above the contiguous prefix, per node. Forgetting some is safe (they only
/// speed up session reads); a completed session advances the prefix anyway.
pub const SEEN_DOTS_PER_NODE_MAX: usize = 4096;

/// A node's knowledge vector plus the dots it has seen beyond it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Knowledge {
    /// Contiguous prefix per node (see the module docs).
    vector: VClock<NodeId>,
    /// Seen dots above `vector[n]`, per node; never contains a dot `<= vector[n]`.
    above: BTreeMap<NodeId, BTreeSet<u64>>,
}

impl Knowledge {
    /// Knowledge restored from a persisted vector.
    pub fn new(vector: VClock<NodeId>) -> Knowledge {
        Knowledge {
            vector,
            above: BTreeMap::new(),
        }
    }

    /// The contiguous vector.
    pub fn vector(&self) -> &VClock<NodeId> {
        &self.vector
    }

    /// Records that the write `(node, seq)` is reflected in the states.
    pub fn record_dot(&mut self, node: NodeId, seq: u64) {
        let prefix = self.vector.get(&node);
        if seq <= prefix {
            return;
        }
        let above = self.above.entry(node).or_default();
        above.insert(seq);
        let mut next = prefix;
        while above.remove(&(next + 1)) {
            next += 1;
        }
        if next > prefix {
            self.vector.apply(Dot::new(node, next));
        }
        while above.len() > SEEN_DOTS_PER_NODE_MAX {
            above.pop_last();
        }
    }

    /// Records every dot of a merged state's context.
    pub fn record_context(&mut self, context: &VClock<NodeId>) {
        for dot in context.iter() {
            self.record_dot(*dot.actor, dot.counter);
        }
    }

    /// Takes in a vector known to be reflected here (a completed session's peer vector).
    pub fn merge_vector(&mut self, vector: &VClock<NodeId>) {
        self.vector.merge(vector.clone());
        for (node, above) in &mut self.above {
            let prefix = self.vector.get(node);
            above.retain(|seq| *seq > prefix);
        }
        let dots: Vec<(NodeId, u64)> = self
            .above
            .iter()
            .flat_map(|(node, seqs)| seqs.iter().map(move |seq| (*node, *seq)))
            .collect();
        for (node, seq) in dots {
            self.record_dot(node, seq);
        }
    }

    /// True if the write the token names is reflected here.
    pub fn has_seen(&self, token: SessionToken) -> bool {
        self.vector.get(&token.node) >= token.seq
            || self
                .above
                .get(&token.node)
                .is_some_and(|seqs| seqs.contains(&token.seq))
    }

    /// The highest write counter of `node` this node has seen (contiguous or not).
    pub fn highest_seen(&self, node: NodeId) -> u64 {
        let above = self.above.get(&node).and_then(|seqs| seqs.last().copied());
        self.vector.get(&node).max(above.unwrap_or(0))
    }

    /// True if every dot of `context` is within the contiguous vector.
    pub fn covers(&self, context: &VClock<NodeId>) -> bool {
        covers(&self.vector, context)
    }
}

/// True if `vector` is pointwise `>=` `context`.
pub fn covers(vector: &VClock<NodeId>, context: &VClock<NodeId>) -> bool {
    context
        .iter()
        .all(|dot| vector.get(dot.actor) >= dot.counter)
}

/// Pointwise minimum of every member's reported vector (`own` for this node). A member that
/// never reported counts as the empty vector, so nothing is stable until all have.
pub fn stable_vector(
    members: &[NodeId],
    this_node: NodeId,
    own: &VClock<NodeId>,
    reported: &BTreeMap<NodeId, VClock<NodeId>>,
) -> VClock<NodeId> {
    let empty = VClock::new();
    let mut stable: Option<VClock<NodeId>> = None;
    for member in members {
        let vector = if *member == this_node {
            own
        } else {
            reported.get(member).unwrap_or(&empty)
        };
        match &mut stable {
            None => stable = Some(vector.clone()),
            Some(stable) => stable.glb(vector),
        }
    }
    stable.unwrap_or_default()
}

/// The phase-1 barrier: each member's own counter as it last reported it (`own_seq` for this
/// node).
pub fn barrier(
    members: &[NodeId],
    this_node: NodeId,
    own_seq: u64,
    reported: &BTreeMap<NodeId, VClock<NodeId>>,
) -> VClock<NodeId> {
    members
        .iter()
        .map(|member| {
            let seq = if *member == this_node {
                own_seq
            } else {
                reported.get(member).map_or(0, |vector| vector.get(member))
            };
            Dot::new(*member, seq)
        })
        .filter(|dot| dot.counter > 0)
        .collect()
}

/// Phase-1 tombstone barriers kept at most. Past it a stable tombstone waits for room (a
/// later pass records its barrier): memory stays bounded, collection only slows down.
pub const FENCES_MAX: usize = 64 * 1024;

/// Tombstones examined per anti-entropy round.
pub const GC_KEYS_PER_ROUND_MAX: usize = 1024;

impl super::engine::AntiEntropy {
    /// Collects tombstones that are causally stable (two phases, see the module docs).
    /// Examines at most `GC_KEYS_PER_ROUND_MAX` keys per call.
    pub(super) fn collect_tombstones(&mut self) {
        if self.tombstones_pending() == 0 {
            return;
        }
        let members = self.config.members.clone();
        let node = self.config.node;
        let stable = stable_vector(
            &members,
            node,
            &self.durable.knowledge,
            &self.peer_knowledge,
        );
        let early = self.bug_early_tombstone_gc();
        // The clock's time counts toward a tombstone's age even while this node stamps
        // nothing; observed here, it is persisted with the batch that collects (see `hlc`).
        if let Some(wall) = self.wall {
            self.hlc.observe(HlcTimestamp {
                physical_ms: wall.0,
                logical: 0,
                node,
            });
        }
        for key in self.tombstone_candidates() {
            if self.overlay.contains_key(&key) {
                continue; // A local write on it is still being persisted.
            }
            // The store's index may lag the installed view by a batch.
            let Some(state) = self.stored(&key).filter(KeyState::is_tombstone) else {
                continue;
            };
            let collect = early
                || match self.fences.get(&key) {
                    Some(fence) => covers(&stable, fence),
                    None if covers(&stable, &state.context) => {
                        let fence = barrier(&members, node, self.seq, &self.peer_knowledge);
                        let ready = covers(&stable, &fence);
                        if !ready && self.fences.len() < FENCES_MAX {
                            self.fences.insert(key.clone(), fence);
                        }
                        ready
                    }
                    None => false,
                };
            if collect && (early || self.past_client_times(&state)) {
                self.remove_key(&key);
                self.stats.tombstones_collected += 1;
            }
        }
    }

    /// Whether an `lww` tombstone's time is older than any client time this node still takes
    /// (see the module docs). Other types' deletes carry no time.
    fn past_client_times(&self, state: &KeyState) -> bool {
        state.lww_stamp().is_none_or(|stamp| {
            let window_ms = self.config.clock_skew_max.as_millis() as u64;
            stamp.physical_ms.saturating_add(window_ms) < self.hlc.last().physical_ms
        })
    }

    /// The next `GC_KEYS_PER_ROUND_MAX` tombstoned keys of the store's index, round-robin
    /// from where the last pass stopped, so keys late in the order are not starved by early
    /// ones that stay uncollectable.
    fn tombstone_candidates(&mut self) -> Vec<Bytes> {
        let after = self.gc_cursor.take();
        let mut keys = self
            .read_store(|store| store.tombstones_after(after.as_deref(), GC_KEYS_PER_ROUND_MAX))
            .unwrap_or_default();
        if let Some(after) = &after
            && keys.len() < GC_KEYS_PER_ROUND_MAX
        {
            let room = GC_KEYS_PER_ROUND_MAX - keys.len();
            let wrapped = self
                .read_store(|store| store.tombstones_after(None, room))
                .unwrap_or_default();
            keys.extend(wrapped.into_iter().take_while(|key| key <= after));
        }
        if keys.len() == GC_KEYS_PER_ROUND_MAX {
            self.gc_cursor = keys.last().cloned();
        }
        keys
    }

    fn bug_early_tombstone_gc(&self) -> bool {
        #[cfg(feature = "sim-bugs")]
        {
            self.config
                .has_bug(super::config::PlantedBug::EarlyTombstoneGc)
        }
        #[cfg(not(feature = "sim-bugs"))]
        {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knowledge_advances_only_over_contiguous_dots() {
        let mut knowledge = Knowledge::default();
        knowledge.record_dot(NodeId(1), 2);
        assert_eq!(knowledge.vector().get(&NodeId(1)), 0);
        assert!(knowledge.has_seen(SessionToken {
            node: NodeId(1),
            seq: 2
        }));
        assert!(!knowledge.has_seen(SessionToken {
            node: NodeId(1),
            seq: 1
        }));
        knowledge.record_dot(NodeId(1), 1);
        assert_eq!(knowledge.vector().get(&NodeId(1)), 2);
        knowledge.record_dot(NodeId(1), 4);
        knowledge.merge_vector(&VClock::from(Dot::new(NodeId(1), 3)));
        assert_eq!(
            knowledge.vector().get(&NodeId(1)),
            4,
            "3 from the vector, then 4 seen"
        );
    }

    #[test]
    fn stable_vector_is_the_minimum_and_needs_every_member() {
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let own: VClock<NodeId> = [Dot::new(NodeId(1), 5), Dot::new(NodeId(2), 3)]
            .into_iter()
            .collect();
        let mut reported = BTreeMap::new();
        reported.insert(
            NodeId(2),
            [Dot::new(NodeId(1), 4), Dot::new(NodeId(2), 7)]
                .into_iter()
                .collect(),
        );
        assert!(stable_vector(&members, NodeId(1), &own, &reported).is_empty());
        reported.insert(
            NodeId(3),
            [Dot::new(NodeId(1), 9), Dot::new(NodeId(2), 9)]
                .into_iter()
                .collect(),
        );
        let stable = stable_vector(&members, NodeId(1), &own, &reported);
        assert_eq!(stable.get(&NodeId(1)), 4);
        assert_eq!(stable.get(&NodeId(2)), 3);
        let fence = barrier(&members, NodeId(1), 6, &reported);
        assert_eq!(
            (
                fence.get(&NodeId(1)),
                fence.get(&NodeId(2)),
                fence.get(&NodeId(3))
            ),
            (6, 7, 0)
        );
    }
}
