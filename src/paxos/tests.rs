//! Scripted exchanges between a few cores: a tiny shell that persists, delivers (or drops)
//! and restarts, with every step under the test's control.

use super::*;
use crate::types::{Instant, NodeId};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// A cluster of cores with a hand-cranked network and durable images.
struct Cluster {
    nodes: Vec<PaxosNode>,
    durable: Vec<BTreeMap<Bytes, AcceptorState>>,
    incarnations: Vec<u64>,
    in_flight: VecDeque<Envelope>,
    answers: Vec<(NodeId, Answer)>,
    now: Instant,
    next_request: u64,
}

fn ids(count: u64) -> Vec<NodeId> {
    (1..=count).map(NodeId).collect()
}

fn config(id: NodeId, incarnation: u64, count: u64) -> Config {
    let mut config = Config::new(id, incarnation, ids(count));
    config.attempts_max = 4;
    config
}

fn put(text: &str) -> Operation {
    Operation::Put {
        value: Bytes::copy_from_slice(text.as_bytes()),
    }
}

fn key() -> Bytes {
    Bytes::from_static(b"k")
}

impl Cluster {
    fn new(count: u64) -> Cluster {
        let nodes = ids(count)
            .into_iter()
            .map(|id| PaxosNode::new(config(id, 1, count), Vec::new(), id.0, Instant::ZERO))
            .collect::<Result<Vec<_>, _>>()
            .expect("valid configuration");
        Cluster {
            nodes,
            durable: vec![BTreeMap::new(); count as usize],
            incarnations: vec![1; count as usize],
            in_flight: VecDeque::new(),
            answers: Vec::new(),
            now: Instant::ZERO,
            next_request: 0,
        }
    }

    fn node(&mut self, id: u64) -> &mut PaxosNode {
        &mut self.nodes[(id - 1) as usize]
    }

    fn propose(&mut self, id: u64, operation: Operation) -> RequestId {
        self.next_request += 1;
        let request = RequestId(self.next_request);
        let now = self.now;
        self.node(id)
            .propose(now, request, key(), operation)
            .expect("room to propose");
        self.pump();
        request
    }

    /// Carries out every node's `Ready`s as the contract says.
    fn pump(&mut self) {
        for index in 0..self.nodes.len() {
            while let Some(ready) = self.nodes[index].ready() {
                for (key, state) in &ready.persist {
                    self.durable[index].insert(key.clone(), state.clone());
                }
                self.in_flight.extend(ready.messages.iter().cloned());
                self.in_flight
                    .extend(ready.persisted_messages.iter().cloned());
                let id = self.nodes[index].id();
                self.answers
                    .extend(ready.answers.iter().cloned().map(|answer| (id, answer)));
                self.nodes[index].advance(ready.id);
            }
        }
    }

    /// Delivers messages until none is left, dropping those `drop` picks.
    fn settle(&mut self, drop: impl Fn(&Envelope) -> bool) {
        for _ in 0..10_000 {
            let Some(envelope) = self.in_flight.pop_front() else {
                return;
            };
            if drop(&envelope) {
                continue;
            }
            let now = self.now;
            self.node(envelope.to.0).handle_message(now, envelope);
            self.pump();
        }
        panic!("the exchange did not settle");
    }

    /// Moves time forward by `step` and fires the timers, then settles, until nothing is
    /// pending anywhere.
    fn run(&mut self, drop: impl Fn(&Envelope) -> bool + Copy) {
        self.settle(drop);
        for _ in 0..1_000 {
            if self.nodes.iter().all(|node| node.pending() == 0) {
                return;
            }
            self.now += Duration::from_millis(5);
            for node in &mut self.nodes {
                node.handle_timeout(self.now);
            }
            self.pump();
            self.settle(drop);
        }
        panic!("operations still pending");
    }

    fn answer(&self, request: RequestId) -> &Answer {
        self.answers
            .iter()
            .map(|(_, answer)| answer)
            .find(|answer| answer.id == request)
            .expect("answered")
    }

    fn outcome(&self, request: RequestId) -> Outcome {
        match &self.answer(request).result {
            Ok((outcome, _)) => outcome.clone(),
            Err(error) => panic!("request {request:?} failed: {error}"),
        }
    }

    /// The node loses everything volatile and restarts from its durable image.
    fn restart(&mut self, id: u64) {
        let index = (id - 1) as usize;
        self.incarnations[index] += 1;
        let count = self.nodes.len() as u64;
        let restored = self.durable[index].clone().into_iter().collect();
        let config = config(NodeId(id), self.incarnations[index], count);
        self.nodes[index] = PaxosNode::new(config, restored, id + 100, self.now).expect("valid");
        self.in_flight
            .retain(|envelope| envelope.to.0 != id && envelope.from.0 != id);
    }
}

fn never(_: &Envelope) -> bool {
    false
}

fn get_value(outcome: &Outcome) -> Option<(Bytes, u64)> {
    match outcome {
        Outcome::Get { current } => current
            .as_ref()
            .map(|versioned| (versioned.value.clone(), versioned.mod_revision)),
        other => panic!("not a read: {other:?}"),
    }
}

// A write through one node is read through another, with its revision; the receipts name
// a majority and the write's ballot.
#[test]
fn a_write_is_read_through_another_node() {
    let mut cluster = Cluster::new(3);
    let written = cluster.propose(1, put("a"));
    cluster.run(never);
    assert_eq!(
        cluster.outcome(written),
        Outcome::Write(WriteOutcome::Put { revision: 1 })
    );
    let Ok((_, receipt)) = &cluster.answer(written).result else {
        panic!("the put succeeded");
    };
    assert!(receipt.acceptors.len() >= 2);
    assert_eq!(receipt.ballot.proposer.node, NodeId(1));
    let read = cluster.propose(3, Operation::Get);
    cluster.run(never);
    assert_eq!(
        get_value(&cluster.outcome(read)),
        Some((Bytes::from_static(b"a"), 1))
    );
}

// Two nodes write the same key at once: one's prepare or accept is refused, it backs off and
// retries above the other's round, and both writes land with distinct revisions.
#[test]
fn concurrent_proposers_both_finish_with_distinct_revisions() {
    let mut cluster = Cluster::new(5);
    let first = cluster.propose(1, put("a"));
    let second = cluster.propose(2, put("b"));
    cluster.run(never);
    let revision = |outcome| match outcome {
        Outcome::Write(WriteOutcome::Put { revision }) => revision,
        other => panic!("{other:?}"),
    };
    let mut revisions = [
        revision(cluster.outcome(first)),
        revision(cluster.outcome(second)),
    ];
    revisions.sort();
    assert_eq!(revisions, [1, 2]);
}

// The persist-before-send rule in the type: a promise is a persisted message, and the
// state that backs it is in the same Ready's persist; a refusal goes at once.
#[test]
fn a_promise_waits_for_the_persist_that_backs_it() {
    let mut node =
        PaxosNode::new(config(NodeId(2), 1, 3), Vec::new(), 7, Instant::ZERO).expect("valid");
    let ballot = Ballot {
        round: 5,
        proposer: ProposerId {
            node: NodeId(1),
            incarnation: 1,
        },
    };
    let prepare = |ballot| Envelope {
        from: NodeId(1),
        to: NodeId(2),
        message: PaxosMessage::Prepare { key: key(), ballot },
    };
    node.handle_message(Instant::ZERO, prepare(ballot));
    let ready = node.ready().expect("work to do");
    assert!(ready.messages.is_empty());
    assert_eq!(ready.persisted_messages.len(), 1);
    assert_eq!(ready.persist.len(), 1);
    assert_eq!(ready.persist[0].1.promised, ballot);
    // Outstanding: no second Ready until advanced, whatever arrives meanwhile.
    let stale = Ballot { round: 4, ..ballot };
    node.handle_message(Instant::ZERO, prepare(stale));
    assert!(node.ready().is_none());
    node.advance(ready.id);
    let ready = node.ready().expect("the refusal");
    assert!(ready.persist.is_empty() && ready.persisted_messages.is_empty());
    assert!(matches!(
        ready.messages[0].message,
        PaxosMessage::Reject { promised, .. } if promised == ballot
    ));
}

// The story: node 1's accept is chosen but every ack to it is lost; node 2 writes over it;
// node 1 times out and retries. Applying its put again would make one write take effect
// twice. It finds its own record in the register and returns the first answer.
#[test]
fn a_retry_after_lost_acks_does_not_apply_twice() {
    let mut cluster = Cluster::new(3);
    let first = cluster.propose(1, put("a"));
    let lost_acks =
        |e: &Envelope| e.to == NodeId(1) && matches!(e.message, PaxosMessage::Accepted { .. });
    cluster.settle(lost_acks);
    // Node 2's write needs no timer: delivering messages finishes it.
    let second = cluster.propose(2, put("b"));
    cluster.settle(lost_acks);
    assert_eq!(
        cluster.outcome(second),
        Outcome::Write(WriteOutcome::Put { revision: 2 })
    );
    // Node 1 is still waiting; now its acks get through.
    cluster.run(never);
    assert_eq!(
        cluster.outcome(first),
        Outcome::Write(WriteOutcome::Put { revision: 1 })
    );
    let read = cluster.propose(3, Operation::Get);
    cluster.run(never);
    assert_eq!(
        get_value(&cluster.outcome(read)),
        Some((Bytes::from_static(b"b"), 2))
    );
}

// Cut off from every other node, a proposer gives up after attempts_max rounds. With no
// accept sent the write certainly did not happen; once an accept left, it may have.
#[test]
fn an_isolated_proposer_gives_up_with_a_typed_error() {
    let mut cluster = Cluster::new(3);
    let isolated = |e: &Envelope| (e.from == NodeId(1)) != (e.to == NodeId(1));
    let request = cluster.propose(1, put("a"));
    cluster.run(isolated);
    assert_eq!(
        cluster.answer(request).result,
        Err(OpError::NotApplied { attempts: 4 })
    );
    // Promises get through, but acks of the accept never come back.
    let no_acks = |e: &Envelope| {
        e.to == NodeId(1)
            && e.from != NodeId(1)
            && matches!(e.message, PaxosMessage::Accepted { .. })
    };
    let request = cluster.propose(1, put("b"));
    cluster.run(no_acks);
    assert_eq!(
        cluster.answer(request).result,
        Err(OpError::Unknown { attempts: 4 })
    );
}

// A node that crashes after accepting and restarts remembers what it made durable, and
// its new run's ballots are new ones (another incarnation), so it can write again.
#[test]
fn a_restarted_node_keeps_its_acceptor_state_and_proposes_again() {
    let mut cluster = Cluster::new(3);
    let first = cluster.propose(1, put("a"));
    cluster.run(never);
    let before = cluster.node(1).acceptor_state(b"k").cloned();
    cluster.restart(1);
    assert_eq!(cluster.node(1).acceptor_state(b"k").cloned(), before);
    let second = cluster.propose(1, put("b"));
    cluster.run(never);
    assert_eq!(
        cluster.outcome(first),
        Outcome::Write(WriteOutcome::Put { revision: 1 })
    );
    assert_eq!(
        cluster.outcome(second),
        Outcome::Write(WriteOutcome::Put { revision: 2 })
    );
    let Ok((_, receipt)) = &cluster.answer(second).result else {
        panic!("written");
    };
    assert_eq!(receipt.ballot.proposer.incarnation, 2);
}

// With the fast path, a read whose promise quorum agrees on the accepted ballot answers
// after one round trip: no accept is sent.
#[test]
fn a_read_of_a_settled_key_takes_one_round_trip() {
    let mut cluster = Cluster::new(3);
    cluster.propose(1, put("a"));
    cluster.run(never);
    let read = cluster.propose(2, Operation::Get);
    let mut accepts = 0;
    for _ in 0..100 {
        let Some(envelope) = cluster.in_flight.pop_front() else {
            break;
        };
        accepts += usize::from(matches!(envelope.message, PaxosMessage::Accept { .. }));
        let now = cluster.now;
        cluster.node(envelope.to.0).handle_message(now, envelope);
        cluster.pump();
    }
    assert_eq!(accepts, 0);
    assert_eq!(
        get_value(&cluster.outcome(read)),
        Some((Bytes::from_static(b"a"), 1))
    );
}

// Peer input is checked, never trusted: strangers, misaddressed messages, ballots that are
// not the sender's, answers about ballots this node never issued and refusals that refuse
// nothing are all ignored.
#[test]
fn malformed_and_foreign_messages_are_ignored() {
    let mut node =
        PaxosNode::new(config(NodeId(1), 1, 3), Vec::new(), 7, Instant::ZERO).expect("valid");
    let ballot = |node| Ballot {
        round: 1,
        proposer: ProposerId {
            node: NodeId(node),
            incarnation: 1,
        },
    };
    let prepare = |from, to, ballot| Envelope {
        from: NodeId(from),
        to: NodeId(to),
        message: PaxosMessage::Prepare { key: key(), ballot },
    };
    node.handle_message(Instant::ZERO, prepare(9, 1, ballot(9)));
    node.handle_message(Instant::ZERO, prepare(2, 3, ballot(2)));
    node.handle_message(Instant::ZERO, prepare(2, 1, ballot(3)));
    let reject = Envelope {
        from: NodeId(2),
        to: NodeId(1),
        message: PaxosMessage::Reject {
            key: key(),
            ballot: ballot(1),
            phase: Phase::Prepare,
            promised: Ballot::ZERO,
        },
    };
    node.handle_message(Instant::ZERO, reject);
    let long_key = Bytes::from(vec![0u8; KEY_BYTES_MAX + 1]);
    let long = Envelope {
        from: NodeId(2),
        to: NodeId(1),
        message: PaxosMessage::Prepare {
            key: long_key,
            ballot: ballot(2),
        },
    };
    node.handle_message(Instant::ZERO, long);
    assert!(node.ready().is_none(), "nothing was acted on");
    assert!(node.acceptor_state(b"k").is_none());
}

#[test]
fn limits_and_configurations_are_typed_errors() {
    let mut config_small = config(NodeId(1), 1, 3);
    config_small.pending_max = 1;
    let mut node = PaxosNode::new(config_small, Vec::new(), 1, Instant::ZERO).expect("valid");
    node.propose(Instant::ZERO, RequestId(1), key(), put("a"))
        .expect("room for one");
    assert_eq!(
        node.propose(Instant::ZERO, RequestId(2), key(), put("b")),
        Err(ProposeError::Backpressure {
            pending: 1,
            pending_max: 1
        })
    );
    let too_long = Bytes::from(vec![0u8; KEY_BYTES_MAX + 1]);
    assert!(matches!(
        node.propose(Instant::ZERO, RequestId(3), too_long, Operation::Get),
        Err(ProposeError::TooLarge { .. })
    ));
    let stranger = Config::new(NodeId(4), 1, ids(3));
    assert!(matches!(
        PaxosNode::new(stranger, Vec::new(), 1, Instant::ZERO),
        Err(ConfigError::NotAMember { .. })
    ));
    let insane = AcceptorState {
        promised: Ballot::ZERO,
        accepted: Some((
            Ballot {
                round: 3,
                ..Ballot::ZERO
            },
            Register::default(),
        )),
    };
    assert_eq!(
        PaxosNode::new(
            config(NodeId(1), 1, 3),
            vec![(key(), insane)],
            1,
            Instant::ZERO
        )
        .err(),
        Some(ConfigError::RestoredState)
    );
}

// The story (found by the simulator's ballot-uniqueness check, seed 1016 with 5 nodes): a
// key's proposer is dropped when its queue empties, and the next operation took its round
// from the node's own acceptor. When the prepare to itself had been lost, that acceptor
// had never seen the round, so the next operation reissued the same ballot with another
// register: two values under one ballot. Rounds now come from a node-wide counter too.
#[test]
fn consecutive_operations_never_share_a_ballot() {
    let mut cluster = Cluster::new(3);
    let to_itself = |e: &Envelope| e.from == NodeId(1) && e.to == NodeId(1);
    let first = cluster.propose(1, put("a"));
    cluster.run(to_itself);
    let second = cluster.propose(1, put("b"));
    cluster.run(to_itself);
    let ballot = |request| match &cluster.answer(request).result {
        Ok((_, receipt)) => receipt.ballot,
        Err(error) => panic!("{error}"),
    };
    assert!(ballot(second) > ballot(first));
}
