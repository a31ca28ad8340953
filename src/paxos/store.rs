//! Where a [`PaxosNode`](super::PaxosNode) reads the acceptor states it does not hold in
//! memory: the seam that keeps a node's memory bounded by its cache, not by its key count.
//!
//! The node keeps a bounded cache of states. A key it has not cached is read through an
//! [`AcceptorStore`] the first time a message or a round needs it. The store must show every
//! state of every `Ready` the shell has advanced (persisted, then `advance`): the node keeps
//! the states of an unadvanced `Ready`, and the changes not yet handed out, pinned in its
//! cache, so it never reads a key whose newest state is still on its way to the store.

use super::message::AcceptorState;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why an [`AcceptorStore`] could not read a state. The node stops using the store (see
/// [`PaxosNode::fault`](super::PaxosNode::fault)): an acceptor that answers from a wrong
/// read could break a promise.
#[derive(Clone, Debug, thiserror::Error)]
#[error("reading an acceptor state failed")]
pub struct StoreError {
    /// The store's own error.
    #[source]
    pub source: Arc<dyn std::error::Error + Send + Sync>,
}

/// The durable acceptor states, as the shell has persisted them.
pub trait AcceptorStore: Send + Sync {
    /// The state stored for `key`, or `None` when the key was never persisted (a fresh
    /// acceptor: nothing promised, nothing accepted).
    fn acceptor_state(&self, key: &[u8]) -> Result<Option<AcceptorState>, StoreError>;
}

/// A store that holds nothing: every key is fresh. With it the node's cache is all it has,
/// so [`PaxosNode::new`](super::PaxosNode::new) uses it with an unbounded cache.
#[derive(Debug, Default)]
pub(crate) struct NoStore;

impl AcceptorStore for NoStore {
    fn acceptor_state(&self, _key: &[u8]) -> Result<Option<AcceptorState>, StoreError> {
        Ok(None)
    }
}

/// A fixed map of states, for tests of the cache: what a shell would have persisted.
#[derive(Debug, Default)]
pub struct MemoryAcceptors {
    states: std::sync::Mutex<BTreeMap<Vec<u8>, AcceptorState>>,
}

impl MemoryAcceptors {
    /// Writes `state` for `key`, as a shell does when it persists a `Ready`.
    pub fn put(&self, key: &[u8], state: AcceptorState) {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_vec(), state);
    }
}

impl AcceptorStore for MemoryAcceptors {
    fn acceptor_state(&self, key: &[u8]) -> Result<Option<AcceptorState>, StoreError> {
        Ok(self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::{Config, Envelope, Operation, Outcome, PaxosNode, RequestId, Versioned};
    use crate::types::{Instant, NodeId};
    use bytes::Bytes;
    use std::collections::VecDeque;
    use std::time::Duration;

    const CACHE_MAX: usize = 2;

    /// Three cores reading through stores that the harness writes as a shell would.
    struct Cluster {
        nodes: Vec<PaxosNode>,
        stores: Vec<Arc<MemoryAcceptors>>,
        in_flight: VecDeque<Envelope>,
        answers: Vec<crate::paxos::Answer>,
        now: Instant,
    }

    fn boot(id: u64, incarnation: u64, store: &Arc<MemoryAcceptors>) -> PaxosNode {
        let nodes = (1..=3).map(NodeId).collect();
        let config = Config::new(NodeId(id), incarnation, nodes);
        let store: Arc<dyn AcceptorStore> = store.clone();
        PaxosNode::with_store(config, store, CACHE_MAX, id, Instant::ZERO).expect("valid")
    }

    impl Cluster {
        fn new() -> Cluster {
            let stores: Vec<_> = (0..3)
                .map(|_| Arc::new(MemoryAcceptors::default()))
                .collect();
            let nodes = (1..=3).map(|id| boot(id, 1, &stores[id as usize - 1]));
            Cluster {
                nodes: nodes.collect(),
                stores,
                in_flight: VecDeque::new(),
                answers: Vec::new(),
                now: Instant::ZERO,
            }
        }

        /// Persists into the store before the promises leave, then advances.
        fn pump(&mut self) {
            for (node, store) in self.nodes.iter_mut().zip(&self.stores) {
                while let Some(ready) = node.ready() {
                    for (key, state) in ready.persist {
                        store.put(&key, state);
                    }
                    self.in_flight.extend(ready.messages);
                    self.in_flight.extend(ready.persisted_messages);
                    self.answers.extend(ready.answers);
                    node.advance(ready.id);
                }
            }
        }

        fn run(&mut self, id: u64, key: &str, operation: Operation) -> Outcome {
            let request = RequestId(self.answers.len() as u64 + 1_000);
            let key = Bytes::copy_from_slice(key.as_bytes());
            self.nodes[id as usize - 1]
                .propose(self.now, request, key, operation)
                .expect("room");
            for _ in 0..10_000 {
                self.pump();
                if let Some(answer) = self.answers.iter().find(|a| a.id == request) {
                    let (outcome, _) = answer.result.clone().expect("a quorum answers");
                    return outcome;
                }
                match self.in_flight.pop_front() {
                    Some(envelope) => {
                        let to = envelope.to.0 as usize - 1;
                        self.nodes[to].handle_message(self.now, envelope);
                    }
                    None => {
                        self.now += Duration::from_millis(5);
                        for node in &mut self.nodes {
                            node.handle_timeout(self.now);
                        }
                    }
                }
            }
            panic!("the operation did not finish");
        }
    }

    fn value(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    #[test]
    fn states_beyond_the_cache_are_read_back_from_the_store() {
        let mut cluster = Cluster::new();
        let keys: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
        for (i, key) in keys.iter().enumerate() {
            let node = (i % 3) as u64 + 1;
            let put = Operation::Put { value: value(key) };
            cluster.run(node, key, put);
        }
        for node in &cluster.nodes {
            assert!(
                node.cached() <= CACHE_MAX,
                "cache over its bound: {}",
                node.cached()
            );
        }
        // Every key's register must come back from the stores: a node that forgot an
        // evicted key's promise or accepted register would answer absent or old values.
        for (i, key) in keys.iter().enumerate() {
            let node = ((i + 1) % 3) as u64 + 1;
            let Outcome::Get { current } = cluster.run(node, key, Operation::Get) else {
                panic!("a get answers a get");
            };
            let expected = Versioned {
                value: value(key),
                mod_revision: 1,
            };
            assert_eq!(current, Some(expected), "key {key}");
        }
        // A restarted node starts with nothing in memory and serves from its store.
        cluster.nodes[0] = boot(1, 2, &cluster.stores[0]);
        assert_eq!(cluster.nodes[0].cached(), 0);
        let cas = Operation::Cas {
            expected: Some(1),
            value: Some(value("after restart")),
        };
        let Outcome::Write(crate::paxos::WriteOutcome::Cas { succeeded, .. }) =
            cluster.run(1, "k0", cas)
        else {
            panic!("a cas answers a cas");
        };
        assert!(
            succeeded,
            "the restarted node saw k0's revision through its store"
        );
    }

    #[test]
    fn a_failed_read_stops_the_node() {
        #[derive(Debug)]
        struct Broken;
        impl AcceptorStore for Broken {
            fn acceptor_state(&self, _key: &[u8]) -> Result<Option<AcceptorState>, StoreError> {
                Err(StoreError {
                    source: Arc::new(std::io::Error::other("disk gone")),
                })
            }
        }
        let nodes = (1..=3).map(NodeId).collect();
        let config = Config::new(NodeId(1), 1, nodes);
        let mut node =
            PaxosNode::with_store(config, Arc::new(Broken), 4, 1, Instant::ZERO).expect("valid");
        let put = Operation::Put { value: value("v") };
        node.propose(Instant::ZERO, RequestId(1), value("k"), put)
            .expect("room");
        assert!(node.fault().is_some());
        assert!(
            node.ready().is_none(),
            "nothing leaves a node whose store failed"
        );
    }
}
