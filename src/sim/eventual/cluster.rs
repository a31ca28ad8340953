//! The simulated nodes: one [`AntiEntropy`] engine per keyspace, a disk that makes persist
//! batches durable after a short delay, and a durable image that survives crashes.
//!
//! A crash drops the engines and every batch still on its way to the disk; a restart builds
//! new engines from the durable image, exactly as a real node would from redb.

use crate::eventual::{
    AntiEntropy, Crdt, EngineConfig, GossipMessage, KeyState, KeyspaceStore, MemoryStates,
    PersistBatch, ValueType,
};
use crate::sim::clock::NodeClock;
use crate::types::{Instant, KeyspaceId, NodeId, WallMillis};
use bytes::Bytes;
use crdts::VClock;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// The keyspaces every run has: one of each value type, numbered by their index here.
pub const VALUE_TYPES: [ValueType; 4] = [
    ValueType::Lww,
    ValueType::MvReg,
    ValueType::Counter,
    ValueType::Set,
];

/// Index of a keyspace in [`VALUE_TYPES`].
pub type Keyspace = usize;

/// What travels between simulated nodes: a gossip message and the keyspace it belongs to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimMessage {
    pub keyspace: u8,
    pub message: GossipMessage,
}

/// A persist batch on its way to the disk.
#[derive(Debug)]
pub struct DiskWrite {
    /// Global time at which the fsync completes.
    pub done_at: Instant,
    pub keyspace: Keyspace,
    pub batch: PersistBatch,
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    pub id: NodeId,
    pub clock: NodeClock,
    /// One engine per keyspace; `None` while crashed.
    pub engines: Option<Vec<AntiEntropy>>,
    /// The node does nothing before this global time (a pause fault).
    pub paused_until: Option<Instant>,
    /// What survives a crash, per keyspace.
    /// Keyspace `k`'s rows are keyspace id `k` here.
    pub durable: Arc<MemoryStates>,
    /// Batches polled but not yet durable, in poll order (so in `done_at` order too).
    pub disk: VecDeque<DiskWrite>,
    /// Restarts so far: part of each engine's seed, so a restarted engine draws anew.
    pub incarnation: u64,
}

impl SimNode {
    pub fn new(id: NodeId, clock: NodeClock) -> SimNode {
        SimNode {
            id,
            clock,
            engines: None,
            paused_until: None,
            durable: Arc::new(MemoryStates::new()),
            disk: VecDeque::new(),
            incarnation: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.engines.is_some()
    }

    /// Up and not paused at `now`.
    pub fn is_running(&self, now: Instant) -> bool {
        self.is_up() && self.paused_until.is_none_or(|until| until <= now)
    }

    pub fn local(&self, now: Instant) -> Instant {
        self.clock.local(now)
    }

    pub fn wall(&self, now: Instant) -> WallMillis {
        self.clock.wall(now)
    }

    /// Both clocks at `now`: what every engine call takes.
    pub fn times(&self, now: Instant) -> (Instant, WallMillis) {
        (self.local(now), self.wall(now))
    }

    /// Starts (or restarts) the engines from the durable image.
    pub fn start(&mut self, configs: Vec<EngineConfig>, seed: u64) {
        assert!(!self.is_up(), "invariant: only a stopped node starts");
        let engines = configs
            .into_iter()
            .enumerate()
            .map(|(keyspace, config)| {
                let engine_seed = seed
                    ^ (self.id.0 << 32)
                    ^ ((keyspace as u64) << 16)
                    ^ self.incarnation.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let store = KeyspaceStore::new(self.durable.clone(), KeyspaceId(keyspace as u64));
                AntiEntropy::new(config, store, engine_seed)
                    .expect("invariant: the simulator builds valid configs and images")
            })
            .collect();
        self.engines = Some(engines);
        self.paused_until = None;
        self.incarnation += 1;
    }

    /// Crashes: the engines and everything not yet durable are gone.
    pub fn crash(&mut self) {
        self.engines = None;
        self.disk.clear();
        self.paused_until = None;
    }

    pub fn engine(&mut self, keyspace: Keyspace) -> Option<&mut AntiEntropy> {
        self.engines.as_mut().map(|engines| &mut engines[keyspace])
    }

    /// The state a local write on `key` would start from: the installed state merged with
    /// the newest state of the key still on its way to the disk (the engine's pending
    /// overlay, which it does not expose).
    pub fn overlay_view(&self, keyspace: Keyspace, key: &[u8]) -> Option<KeyState> {
        let engines = self.engines.as_ref()?;
        let installed = engines[keyspace].key_state(key);
        let pending = self
            .disk
            .iter()
            .rev()
            .filter(|write| write.keyspace == keyspace)
            .find_map(|write| {
                write
                    .batch
                    .keys
                    .iter()
                    .find(|(k, _)| k.as_ref() == key)
                    .and_then(|(_, row)| row.as_ref().map(|row| row.state.clone()))
            });
        match (installed, pending) {
            (Some(mut installed), Some(pending)) => {
                installed
                    .merge(pending)
                    .expect("invariant: one value type per keyspace");
                Some(installed)
            }
            (installed, pending) => installed.or(pending),
        }
    }
}

/// The adds of `member` a remove issued on `state` observes (the `Orswot` remove context).
pub fn set_remove_context(state: Option<&KeyState>, member: &Bytes) -> VClock<NodeId> {
    match state.map(|s| &s.crdt) {
        Some(Crdt::Set(set)) => set.contains(member).rm_clock,
        _ => VClock::new(),
    }
}

/// The (clock, value) siblings of an `mvreg` state, delete siblings included. `MVReg` keeps
/// them private, so read them through its serde shape.
pub fn mvreg_siblings(state: &KeyState) -> Vec<(VClock<NodeId>, Option<Bytes>)> {
    #[derive(Deserialize)]
    struct Mirror {
        vals: Vec<(VClock<NodeId>, Option<Bytes>)>,
    }
    let Crdt::MvReg(reg) = &state.crdt else {
        return Vec::new();
    };
    let frame = crate::wire::encode(reg).expect("invariant: a key state encodes");
    let (mirror, _): (Mirror, usize) =
        crate::wire::decode(&frame).expect("invariant: the mirror has MVReg's serde shape");
    mirror.vals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventual::{Op, WriteStamp};
    use crdts::Dot;

    #[test]
    fn mvreg_siblings_reads_every_sibling_with_its_clock() {
        let mut state = KeyState::new(ValueType::MvReg);
        let hlc = crate::eventual::HlcTimestamp::zero(NodeId(1));
        let put = |value: &'static str| Op::MvPut {
            value: Bytes::from_static(value.as_bytes()),
            context: None,
        };
        let stamp = |node, seq| WriteStamp {
            node: NodeId(node),
            seq,
            hlc,
        };
        state.apply_local(put("a"), stamp(1, 1)).unwrap();
        let mut other = KeyState::new(ValueType::MvReg);
        other.apply_local(put("b"), stamp(2, 1)).unwrap();
        state.merge(other).unwrap();
        let mut siblings = mvreg_siblings(&state);
        siblings.sort_by(|a, b| a.1.cmp(&b.1));
        let dot = |node, seq| VClock::from(Dot::new(NodeId(node), seq));
        assert_eq!(
            siblings,
            vec![
                (dot(1, 1), Some(Bytes::from_static(b"a"))),
                (dot(2, 1), Some(Bytes::from_static(b"b")))
            ]
        );
    }
}
