//! The final-state checks, once the liveness phase is over: full-state convergence of every
//! keyspace, then each key's converged state against the op log.

use super::Sim;
use super::checkers::{check_convergence, check_counter, check_lww, check_mvreg, check_set};
use super::cluster::{VALUE_TYPES, mvreg_siblings};
use crate::eventual::{AntiEntropy, Crdt, KeyState, ReadValue};
use crate::types::NodeId;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A key state compared by its canonical encoding (the `crdts` types keep hash maps and
/// merge-ordered vectors, so their derived equality is not the thing to trust) and shown as
/// the value a client would read.
struct Canonical {
    bytes: Vec<u8>,
    shown: ReadValue,
}

impl PartialEq for Canonical {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl fmt::Debug for Canonical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown)
    }
}

fn canonical_states(engine: &AntiEntropy) -> BTreeMap<Vec<u8>, Canonical> {
    engine
        .live_entries()
        .into_iter()
        .map(|(key, state)| {
            let canonical = Canonical {
                bytes: state.canonical_bytes(),
                shown: state.read(),
            };
            (key.to_vec(), canonical)
        })
        .collect()
}

impl Sim {
    pub(super) fn check_final_states(&mut self) {
        if self.nodes.iter().any(|node| !node.is_up()) {
            return; // Already reported: the cluster never came back whole.
        }
        for node in 0..self.nodes.len() {
            self.check_engine_invariants(node, "at the end");
        }
        for (keyspace, value_type) in VALUE_TYPES.iter().enumerate() {
            let replicas: Vec<(NodeId, BTreeMap<Vec<u8>, Canonical>, u64)> = self
                .nodes
                .iter()
                .map(|node| {
                    let engine = &node.engines.as_ref().expect("checked up")[keyspace];
                    (node.id, canonical_states(engine), engine.merkle_root())
                })
                .collect();
            let name = format!("{value_type:?}").to_lowercase();
            let found = check_convergence(&name, &replicas);
            if !found.is_empty() {
                self.violations.extend(found);
                self.violations
                    .extend(self.tombstone_differences(keyspace, &name));
            }
        }
        let states: Vec<BTreeMap<Bytes, KeyState>> = (0..VALUE_TYPES.len())
            .map(|keyspace| {
                let engine = &self.nodes[0].engines.as_ref().expect("checked up")[keyspace];
                engine.entries().into_iter().collect()
            })
            .collect();
        self.check_lww_keys(&states[0]);
        self.check_mvreg_keys(&states[1]);
        self.check_counter_keys(&states[2]);
        self.check_set_keys(&states[3]);
    }

    /// The keys whose stored entries (tombstones included) differ from the first node's: what
    /// the Merkle roots see when the live states agree.
    fn tombstone_differences(&self, keyspace: usize, name: &str) -> Vec<String> {
        let entries = |node: &super::cluster::SimNode| -> BTreeMap<Bytes, Vec<u8>> {
            let engine = &node.engines.as_ref().expect("checked up")[keyspace];
            engine
                .entries()
                .into_iter()
                .map(|(key, state)| (key, state.canonical_bytes()))
                .collect()
        };
        let first = entries(&self.nodes[0]);
        let mut lines = Vec::new();
        for node in &self.nodes[1..] {
            let theirs = entries(node);
            let keys: BTreeSet<&Bytes> = first.keys().chain(theirs.keys()).collect();
            for key in keys.into_iter().filter(|k| first.get(*k) != theirs.get(*k)) {
                let show = |map: &BTreeMap<Bytes, Vec<u8>>, at: &super::cluster::SimNode| {
                    let engine = &at.engines.as_ref().expect("checked up")[keyspace];
                    match map.get(key) {
                        None => "nothing".to_string(),
                        Some(_) => format!(
                            "{:?} context {:?}",
                            engine.key_state(key).map(|s| s.read()),
                            engine.key_state(key).map(|s| s.context)
                        ),
                    }
                };
                lines.push(format!(
                    "convergence: {name} key {}: stored entries differ (tombstones included): \
                     {} holds {}, {} holds {}",
                    super::checkers::show_key(key),
                    self.nodes[0].id,
                    show(&first, &self.nodes[0]),
                    node.id,
                    show(&theirs, node)
                ));
            }
        }
        lines
    }

    fn check_lww_keys(&mut self, states: &BTreeMap<Bytes, KeyState>) {
        for key in all_keys(self.log.lww.keys(), states) {
            let writes = self.log.lww.get(&key).map_or(&[][..], Vec::as_slice);
            let current = states.get(&key).and_then(|state| match &state.crdt {
                Crdt::Lww(reg) => Some((reg.val.as_deref(), &reg.marker)),
                _ => None,
            });
            self.violations.extend(check_lww(&key, writes, current));
        }
    }

    fn check_mvreg_keys(&mut self, states: &BTreeMap<Bytes, KeyState>) {
        for key in all_keys(self.log.mvreg.keys(), states) {
            let writes = self.log.mvreg.get(&key).map_or(&[][..], Vec::as_slice);
            let siblings: Vec<_> = states
                .get(&key)
                .map(mvreg_siblings)
                .unwrap_or_default()
                .into_iter()
                .map(|(clock, value)| (clock, value.map(|v| v.to_vec())))
                .collect();
            self.violations.extend(check_mvreg(&key, writes, &siblings));
        }
    }

    fn check_counter_keys(&mut self, states: &BTreeMap<Bytes, KeyState>) {
        for key in all_keys(self.log.counter.keys(), states) {
            let writes = self.log.counter.get(&key).map_or(&[][..], Vec::as_slice);
            let value = match states.get(&key).map(KeyState::read) {
                Some(ReadValue::Counter(value)) => i128::from(value),
                _ => 0,
            };
            self.violations.extend(check_counter(&key, writes, value));
        }
    }

    fn check_set_keys(&mut self, states: &BTreeMap<Bytes, KeyState>) {
        for key in all_keys(self.log.set.keys(), states) {
            let writes = self.log.set.get(&key).map_or(&[][..], Vec::as_slice);
            let members: BTreeSet<Vec<u8>> = match states.get(&key).map(KeyState::read) {
                Some(ReadValue::Set { members, .. }) => {
                    members.iter().map(|m| m.to_vec()).collect()
                }
                _ => BTreeSet::new(),
            };
            self.violations.extend(check_set(&key, writes, &members));
        }
    }
}

/// Keys written or present: a key present but never written is a phantom the checkers flag.
fn all_keys<'a>(
    logged: impl Iterator<Item = &'a Bytes>,
    states: &BTreeMap<Bytes, KeyState>,
) -> BTreeSet<Bytes> {
    logged.cloned().chain(states.keys().cloned()).collect()
}
