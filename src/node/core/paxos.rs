//! Paxos keyspaces on this node: one [`PaxosNode`] per keyspace, fed by the node core and
//! carried out through its one batch at a time.
//!
//! ```text
//!   client get/put/delete/cas ─▶ paxos_request ─▶ PaxosNode::propose (tag = RequestId)
//!   PeerMessage::Paxos        ─▶ handle_paxos  ─▶ PaxosNode::handle_message
//!   poll_persist: Ready ─▶ persist rows into the Batch, `messages` to transmits,
//!                          `answers` to the waiting requests
//!   persisted:            `persisted_messages` to transmits, advance
//! ```
//!
//! Persist-before-send: a Ready's promises and accepted acks leave only from `persisted`,
//! after the batch that holds its acceptor states is durable. Until the batch with this
//! start's incarnation (see [`crate::storage::tables::META_PAXOS_INCARNATION`]) is durable,
//! even prepares and accepts wait for it: a start whose incarnation a crash lost must not
//! have issued ballots that the next start, reading the same counter, issues again.
//!
//! The cores read acceptor states through [`Durable`] (point reads of the store) and keep a
//! bounded cache each (`CoreConfig::paxos_cache_keys`): a node's memory does not grow with
//! its keys.
//!
//! A paxos keyspace's acceptors are the members when it starts here. Changing members under
//! a running paxos keyspace is not reconfigured (that needs a Paxos-level protocol): a member
//! change reaches it only through restarts of its nodes.
//!
//! Requests wait in the [`WaitTable`](super::waiting) as `Waiting::Strong` (a linearizable
//! read or a majority-chosen write, with the same timeout rule); the tag is the core's
//! [`RequestId`]. A resend by a client is a new operation: paxos keyspaces keep no client
//! sessions, so a write whose answer was lost may apply twice if resent.

use super::waiting::Waiting;
use super::{CoreError, Durable, NodeCore, PeerMessage, ReplyTo, Transmit};
use crate::paxos::{
    self, AcceptorState, AcceptorStore, Config, Envelope, OpError, Operation as PaxosOp, Outcome,
    PaxosNode, ProposeError, ReadyId, RequestId, StoreError, WriteOutcome,
};
use crate::protocol::admin::FromNode;
use crate::protocol::{
    Answer, ClientError, ClientRequest, ClientResponse, Operation, Position, ReadLevel, Receipt,
    Served, UnavailableReason,
};
use crate::strong::Versioned;
use crate::types::{Instant, KeyspaceId, LogIndex};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;

/// A paxos keyspace on this node.
pub(super) struct PaxosKeyspace {
    pub(super) name: String,
    pub(super) node: PaxosNode,
}

/// A paxos Ready taken into the batch in flight: what leaves once it is durable.
pub(super) struct PaxosInFlight {
    keyspace: KeyspaceId,
    ready: ReadyId,
    /// The Ready's `persisted_messages`, and its `messages` too while the incarnation is not
    /// durable yet.
    after_persist: Vec<Envelope>,
}

/// One keyspace's acceptor states, read through the node's store.
struct KeyspaceAcceptors {
    durable: Arc<dyn Durable + Send + Sync>,
    keyspace: KeyspaceId,
}

impl AcceptorStore for KeyspaceAcceptors {
    fn acceptor_state(&self, key: &[u8]) -> Result<Option<AcceptorState>, StoreError> {
        self.durable
            .paxos_acceptor(self.keyspace, key)
            .map_err(|error| StoreError {
                source: Arc::new(error),
            })
    }
}

/// Where a paxos core's envelopes go: to peers through the transport, and those a node
/// addresses to itself (its proposer to its own acceptor) back into the core.
struct Outlet<'a> {
    me: crate::types::NodeId,
    transmits: &'a mut VecDeque<Transmit>,
    loopback: &'a mut VecDeque<(KeyspaceId, Envelope)>,
}

impl Outlet<'_> {
    fn push(&mut self, keyspace: KeyspaceId, envelopes: Vec<Envelope>) {
        for envelope in envelopes {
            if envelope.to == self.me {
                self.loopback.push_back((keyspace, envelope));
                continue;
            }
            let to = envelope.to;
            let message = PeerMessage::Paxos { keyspace, envelope };
            self.transmits.push_back(Transmit { to, message });
        }
    }
}

/// Rounds of handing self-addressed messages back within one `poll_persist`: a proposer's
/// prepare to itself, its promise, its accept and its ack take a few; the rest wait for the
/// next call (`poll_timeout` says it is due at once).
const LOOPBACK_ROUNDS_MAX: usize = 4;

impl NodeCore {
    /// A paxos core for keyspace `id`, reading its acceptor states from the store as it
    /// needs them (nothing is loaded now).
    pub(super) fn boot_paxos(&mut self, id: KeyspaceId) -> Result<PaxosNode, CoreError> {
        let nodes = self.engine_members();
        let mut config = Config::new(self.config.id, self.paxos_incarnation, nodes);
        config.round_timeout = self.config.paxos_round_timeout;
        let store = Arc::new(KeyspaceAcceptors {
            durable: self.durable.clone(),
            keyspace: id,
        });
        let seed = self.random.next_u64();
        let cache = self.config.paxos_cache_keys;
        PaxosNode::with_store(config, store, cache, seed, self.now)
            .map_err(|error| CoreError::Boot(format!("paxos keyspace {}: {error}", id.0)))
    }

    /// A message from a peer for paxos keyspace `keyspace` (a keyspace not running here, not
    /// yet or no more, drops it: the proposer retries).
    pub(super) fn handle_paxos(
        &mut self,
        from: crate::types::NodeId,
        keyspace: KeyspaceId,
        envelope: Envelope,
    ) {
        // The sender's identity is checked by the transport; the envelope must agree.
        if envelope.from != from || envelope.to != self.config.id {
            return;
        }
        if let Some(paxos) = self.paxos.get_mut(&keyspace) {
            paxos.node.handle_message(self.now, envelope);
        }
    }

    /// Starts a checked request on paxos keyspace `id`.
    pub(super) fn paxos_request(
        &mut self,
        id: KeyspaceId,
        request: ClientRequest,
        reply: ReplyTo,
        deadline: Instant,
    ) {
        let Some((key, operation)) = paxos_operation(request.operation) else {
            // `check_request` lets only get, put, delete and cas through.
            let error = ClientError::Malformed {
                reason: "not an operation of a paxos keyspace".to_string(),
            };
            self.answer(reply, FromNode::data_error(error));
            return;
        };
        let write = operation.is_write();
        let served = if write {
            Served::Committed
        } else {
            Served::Read(ReadLevel::Linearizable)
        };
        let waiting = Waiting::Strong { served, write };
        let tag = self.register(reply, Some(id), waiting, deadline);
        let now = self.now;
        let Some(paxos) = self.paxos.get_mut(&id) else {
            return; // Routed here because it runs: unreachable, and the deadline answers.
        };
        if let Err(error) = paxos.node.propose(now, RequestId(tag), key, operation) {
            let error = match error {
                ProposeError::Backpressure { .. } => ClientError::Backpressure,
                ProposeError::TooLarge {
                    key_bytes,
                    value_bytes,
                } => ClientError::TooLarge {
                    what: "key or value".to_string(),
                    bytes: key_bytes.max(value_bytes),
                    bytes_max: paxos::VALUE_BYTES_MAX,
                },
            };
            self.fail(tag, error);
        }
    }

    /// Every paxos keyspace's status, for `NodeStatus`.
    pub(super) fn paxos_status(&self) -> Vec<crate::protocol::admin::PaxosStatus> {
        self.paxos
            .iter()
            .map(|(id, paxos)| crate::protocol::admin::PaxosStatus {
                keyspace: paxos.name.clone(),
                id: *id,
                acceptors: paxos.node.acceptors().to_vec(),
                pending: paxos.node.pending() as u64,
                cached: paxos.node.cached() as u64,
            })
            .collect()
    }

    /// Fires the paxos cores' due timers.
    pub(super) fn paxos_timeouts(&mut self) {
        let now = self.now;
        for paxos in self.paxos.values_mut() {
            if paxos.node.poll_timeout().is_some_and(|at| at <= now) {
                paxos.node.handle_timeout(now);
            }
        }
    }

    /// The earliest paxos timer; now, when messages to this node wait to be handed back.
    pub(super) fn paxos_poll_timeout(&self) -> Option<Instant> {
        let loopback = (!self.paxos_loopback.is_empty()).then_some(self.now);
        self.paxos
            .values()
            .filter_map(|paxos| paxos.node.poll_timeout())
            .chain(loopback)
            .min()
    }

    /// Hands the messages this node addressed to itself back to their cores.
    fn deliver_loopback(&mut self) {
        let now = self.now;
        while let Some((keyspace, envelope)) = self.paxos_loopback.pop_front() {
            if let Some(paxos) = self.paxos.get_mut(&keyspace) {
                paxos.node.handle_message(now, envelope);
            }
        }
    }

    /// Takes every paxos core's Ready: its states go into `batch`, its early messages and
    /// answers go now; what must wait for the batch is returned. A Ready with nothing to
    /// persist rests only on states already durable, so it is carried out and advanced at
    /// once (once the incarnation is durable).
    pub(super) fn paxos_poll_persist(
        &mut self,
        batch: &mut crate::storage::Batch,
    ) -> Result<Vec<PaxosInFlight>, CoreError> {
        let durable = self.paxos_incarnation_durable;
        let mut in_flight: Vec<PaxosInFlight> = Vec::new();
        let mut answers = Vec::new();
        for _ in 0..LOOPBACK_ROUNDS_MAX {
            self.deliver_loopback();
            let mut outlet = Outlet {
                me: self.config.id,
                transmits: &mut self.transmits,
                loopback: &mut self.paxos_loopback,
            };
            for (id, paxos) in &mut self.paxos {
                if let Some(fault) = paxos.node.fault() {
                    return Err(CoreError::PaxosStorage {
                        keyspace: *id,
                        fault: fault.clone(),
                    });
                }
                while let Some(ready) = paxos.node.ready() {
                    answers.extend(ready.answers);
                    if ready.persist.is_empty() && durable {
                        outlet.push(*id, ready.messages);
                        outlet.push(*id, ready.persisted_messages);
                        paxos.node.advance(ready.id);
                        continue;
                    }
                    let mut after_persist = ready.persisted_messages;
                    if durable {
                        outlet.push(*id, ready.messages);
                    } else {
                        after_persist.extend(ready.messages);
                    }
                    batch.paxos_persist(*id, ready.persist);
                    in_flight.push(PaxosInFlight {
                        keyspace: *id,
                        ready: ready.id,
                        after_persist,
                    });
                    break; // One Ready per core per batch: the next waits for `advance`.
                }
            }
            if self.paxos_loopback.is_empty() {
                break;
            }
        }
        for answer in answers {
            self.paxos_answer(answer);
        }
        Ok(in_flight)
    }

    /// The batch holding these Readies is durable: their promises and acks leave.
    pub(super) fn paxos_persisted(&mut self, in_flight: Vec<PaxosInFlight>) {
        for done in in_flight {
            // A keyspace dropped while its batch was in flight has nothing left to send.
            let Some(paxos) = self.paxos.get_mut(&done.keyspace) else {
                continue;
            };
            let mut outlet = Outlet {
                me: self.config.id,
                transmits: &mut self.transmits,
                loopback: &mut self.paxos_loopback,
            };
            outlet.push(done.keyspace, done.after_persist);
            paxos.node.advance(done.ready);
        }
    }

    /// Answers the request a paxos operation ended.
    fn paxos_answer(&mut self, answer: paxos::Answer) {
        let tag = answer.id.0;
        let Some(pending) = self.waiting.remove(tag) else {
            return; // Timed out earlier: the client already has its answer.
        };
        let Waiting::Strong { served, .. } = pending.waiting else {
            self.answer(pending.reply, pending.waiting.error_reply(internal()));
            return;
        };
        let result = match answer.result {
            Ok((outcome, receipt)) => {
                let receipt = Receipt {
                    level: served,
                    node: self.config.id,
                    position: Position::Paxos {
                        ballot: receipt.ballot,
                        acceptors: receipt.acceptors,
                    },
                    behind: None,
                };
                Ok((outcome_answer(outcome), receipt))
            }
            Err(OpError::NotApplied { .. }) => Err(ClientError::Unavailable {
                reason: UnavailableReason::NoQuorum,
            }),
            Err(_) => Err(ClientError::Timeout {
                may_have_applied: true,
            }),
        };
        self.answer(pending.reply, FromNode::Data(ClientResponse { result }));
    }
}

/// An answer for a request whose waiting entry is not a paxos one: a bug, reported to the
/// client rather than panicking on the node.
fn internal() -> ClientError {
    ClientError::Malformed {
        reason: "the paxos answer's request was not a paxos request".to_string(),
    }
}

/// The paxos change function of a checked request, with its key.
fn paxos_operation(operation: Operation) -> Option<(Bytes, PaxosOp)> {
    Some(match operation {
        Operation::Get { key } => (key, PaxosOp::Get),
        Operation::Put { key, value, .. } => (key, PaxosOp::Put { value }),
        Operation::Delete { key, .. } => (key, PaxosOp::Delete),
        Operation::Cas {
            key,
            expected,
            value,
        } => (
            key,
            PaxosOp::Cas {
                expected: expected.map(|revision| revision.0),
                value,
            },
        ),
        _ => return None,
    })
}

/// A register's value in the client protocol's terms. A paxos register does not track when
/// the key was created, so `create_revision` is 0 ("not tracked"); revisions count per key.
fn versioned(current: paxos::Versioned) -> Versioned {
    Versioned {
        value: current.value,
        create_revision: LogIndex(0),
        mod_revision: LogIndex(current.mod_revision),
    }
}

fn outcome_answer(outcome: Outcome) -> Answer {
    match outcome {
        Outcome::Get { current } => Answer::Strong(current.map(versioned)),
        Outcome::Write(WriteOutcome::Put { revision } | WriteOutcome::Delete { revision, .. }) => {
            Answer::Written {
                revision: LogIndex(revision),
            }
        }
        Outcome::Write(WriteOutcome::Cas {
            revision,
            succeeded,
            current,
        }) => Answer::Cas {
            succeeded,
            revision: LogIndex(revision),
            current: current.map(versioned),
        },
    }
}
