//! Simulated clients: each runs one operation at a time on a small key set (put, get, delete,
//! cas on the revision it last saw) through a random node, and records it in the
//! [`History`]. There is no leader to find, so a client never redirects: it waits for the
//! node's answer, or gives up after `CLIENT_TIMEOUT` (the node crashed or stayed paused).
//!
//! How an operation ends in the history:
//! * an answer: completed with what it returned;
//! * `NotApplied` or a refusal: failed (it certainly did not take effect); in the liveness
//!   phase the client sends it again instead, as a new proposal of the same operation;
//! * `Unknown`, or no answer in time: a write stays indeterminate (it may take effect at any
//!   later point, or never); a read is failed (it has no effect either way).
//!
//! In the liveness phase every client writes once and reads once more, retrying until both
//! are answered: after the faults heal, every operation must complete.

use super::Request;
use crate::paxos::{OpError, Operation, Outcome, Receipt, RequestId, WriteOutcome};
use crate::rng::SeededRng;
use crate::sim::history::{Call, History, ReadPath, Return, Seen};
use crate::types::{Instant, NodeId};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

/// An operation with no answer after this long is abandoned. About twice the core's own
/// bound on one operation (10 attempts x (a round timeout of at most 80 ms + a backoff of at
/// most 32 ms)), so it fires when the node crashed, stayed paused, or had several operations
/// queued ahead on the key; an abandoned write stays indeterminate.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// The liveness phase's operations: one write, then one read.
const FINAL_OPERATIONS: u32 = 2;

/// The operation a client is running.
#[derive(Debug)]
struct Active {
    history: usize,
    request: RequestId,
    key: Bytes,
    operation: Operation,
    node: NodeId,
    deadline: Instant,
    /// One of the liveness phase's final operations.
    last: bool,
}

/// Counters for the summary.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClientStats {
    pub(crate) not_applied: u64,
    pub(crate) unknown: u64,
    pub(crate) timed_out: u64,
    pub(crate) refused: u64,
}

pub(crate) struct Client {
    index: usize,
    rng: SeededRng,
    keys: Vec<Bytes>,
    nodes: Vec<NodeId>,
    quorum: usize,
    /// Numbers this client's requests; the request id also names the client.
    requests: u64,
    /// Numbers the values this client writes, so every written value is unique.
    writes: u64,
    /// The mod revision this client last saw per key (None: absent), for cas expectations.
    revisions: BTreeMap<Bytes, Option<u64>>,
    active: Option<Active>,
    /// When to start the next operation.
    next_at: Instant,
    think_mean: Duration,
    /// Liveness-phase operations answered so far.
    finals_done: u32,
    pub(crate) finished: bool,
    pub(crate) stats: ClientStats,
}

/// The client a request id belongs to (its high bits).
pub(crate) fn client_of(request: RequestId) -> usize {
    (request.0 >> 40) as usize
}

impl Client {
    pub(crate) fn new(
        index: usize,
        rng: SeededRng,
        keys: Vec<Bytes>,
        nodes: Vec<NodeId>,
        think_mean: Duration,
    ) -> Client {
        let quorum = nodes.len() / 2 + 1;
        Client {
            index,
            rng,
            keys,
            nodes,
            quorum,
            requests: 0,
            writes: 0,
            revisions: BTreeMap::new(),
            active: None,
            next_at: Instant::ZERO,
            think_mean,
            finals_done: 0,
            finished: false,
            stats: ClientStats::default(),
        }
    }

    /// The client's id in the history.
    fn id(&self) -> u64 {
        self.index as u64 + 1
    }

    /// When this client next acts on its own.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        Some(self.active.as_ref().map_or(self.next_at, |a| a.deadline))
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.active.is_none()
    }

    /// Acts at `now`: abandons an operation past its deadline, or starts a new one when
    /// `may_issue` (faulty phase) or `liveness` allows. Returns the request to send, if any.
    pub(crate) fn act(
        &mut self,
        now: Instant,
        may_issue: bool,
        liveness: bool,
        history: &mut History,
    ) -> Option<Request> {
        if let Some(active) = &self.active {
            if active.deadline > now {
                return None;
            }
            self.stats.timed_out += 1;
            self.abandon(now, history);
        }
        if self.next_at > now {
            return None;
        }
        if liveness {
            return self.act_liveness(now, history);
        }
        if !may_issue {
            self.next_at = now + Duration::from_millis(50);
            return None;
        }
        let key = self.rng.pick(&self.keys).clone();
        let operation = self.draw_operation(&key);
        Some(self.start(now, key, operation, false, history))
    }

    /// The liveness phase: a write, then a read, then done.
    fn act_liveness(&mut self, now: Instant, history: &mut History) -> Option<Request> {
        if self.finals_done >= FINAL_OPERATIONS {
            self.finished = true;
            return None;
        }
        let key = self.rng.pick(&self.keys).clone();
        let operation = if self.finals_done == 0 {
            self.next_put()
        } else {
            Operation::Get
        };
        Some(self.start(now, key, operation, true, history))
    }

    fn next_put(&mut self) -> Operation {
        self.writes += 1;
        let value = Bytes::from(format!("c{}-w{}", self.id(), self.writes));
        Operation::Put { value }
    }

    fn draw_operation(&mut self, key: &Bytes) -> Operation {
        let roll = self.rng.below(100);
        match roll {
            0..=39 => Operation::Get,
            40..=64 => self.next_put(),
            65..=74 => Operation::Delete,
            _ => {
                let expected = self.revisions.get(key).copied().flatten();
                let deletes = self.rng.chance(0.15);
                let value = match self.next_put() {
                    Operation::Put { value } if !deletes => Some(value),
                    _ => None,
                };
                Operation::Cas { expected, value }
            }
        }
    }

    /// Records the invocation and builds the request to a random node.
    fn start(
        &mut self,
        now: Instant,
        key: Bytes,
        operation: Operation,
        last: bool,
        history: &mut History,
    ) -> Request {
        let call = call_of(&operation);
        let history_id = history.invoke(self.id(), key.clone(), call, now);
        self.send(now, history_id, key, operation, last)
    }

    /// A new request (a new id, a random node) for an operation already in the history.
    fn send(
        &mut self,
        now: Instant,
        history: usize,
        key: Bytes,
        operation: Operation,
        last: bool,
    ) -> Request {
        self.requests += 1;
        let id = RequestId(((self.index as u64) << 40) | self.requests);
        let node = *self.rng.pick(&self.nodes);
        self.active = Some(Active {
            history,
            request: id,
            key: key.clone(),
            operation: operation.clone(),
            node,
            deadline: now + CLIENT_TIMEOUT,
            last,
        });
        Request {
            id,
            node,
            key,
            operation,
        }
    }

    /// Gives up waiting: a write may still take effect, a read never has one.
    fn abandon(&mut self, now: Instant, history: &mut History) {
        let active = self.active.take().expect("an operation is active");
        if !active.operation.is_write() {
            history.fail(active.history, now);
        }
        self.schedule_next(now);
    }

    fn schedule_next(&mut self, now: Instant) {
        let think = self
            .rng
            .duration_between(Duration::ZERO, self.think_mean * 2);
        self.next_at = now + think;
    }

    /// The node refused the operation outright (backpressure, size): it never started.
    pub(crate) fn on_refused(
        &mut self,
        now: Instant,
        request: RequestId,
        liveness: bool,
        history: &mut History,
    ) -> Option<Request> {
        self.stats.refused += 1;
        self.not_applied(now, request, liveness, history)
    }

    /// The node answered `request`. Returns a violation if the answer is malformed, and the
    /// request to resend when a liveness-phase operation must be tried again.
    pub(crate) fn on_answer(
        &mut self,
        now: Instant,
        request: RequestId,
        result: Result<(Outcome, Receipt), OpError>,
        liveness: bool,
        history: &mut History,
    ) -> (Option<String>, Option<Request>) {
        if self.active.as_ref().is_none_or(|a| a.request != request) {
            return (None, None);
        }
        match result {
            Ok((outcome, receipt)) => (self.answered(now, outcome, &receipt, history), None),
            Err(OpError::NotApplied { .. }) => {
                self.stats.not_applied += 1;
                (None, self.not_applied(now, request, liveness, history))
            }
            Err(_) => {
                self.stats.unknown += 1;
                // A read has no effect to wonder about; a write may take effect later.
                self.abandon(now, history);
                (None, None)
            }
        }
    }

    /// The operation certainly did not take effect: failed, or (liveness) sent again.
    fn not_applied(
        &mut self,
        now: Instant,
        request: RequestId,
        liveness: bool,
        history: &mut History,
    ) -> Option<Request> {
        let active = self.active.take()?;
        debug_assert_eq!(active.request, request);
        if liveness {
            let (key, operation) = (active.key, active.operation);
            return Some(self.send(now, active.history, key, operation, active.last));
        }
        history.fail(active.history, now);
        self.schedule_next(now);
        None
    }

    fn answered(
        &mut self,
        now: Instant,
        outcome: Outcome,
        receipt: &Receipt,
        history: &mut History,
    ) -> Option<String> {
        let active = self.active.take().expect("an operation is active");
        let returned = self.returned(&active, outcome);
        history.complete(active.history, returned, now);
        self.finals_done += u32::from(active.last);
        self.schedule_next(now);
        let majority = receipt.acceptors.len() >= self.quorum
            && receipt.acceptors.windows(2).all(|pair| pair[0] < pair[1]);
        (!majority).then(|| {
            format!(
                "receipt: client {} got an answer from {} agreed by {:?}, not a majority",
                self.id(),
                active.node,
                receipt.acceptors
            )
        })
    }

    /// Converts an answer to what the history records, remembering revisions seen.
    fn returned(&mut self, active: &Active, outcome: Outcome) -> Return {
        let key = active.key.clone();
        match outcome {
            Outcome::Get { current } => {
                let seen = current.map(|versioned| Seen {
                    value: versioned.value,
                    mod_revision: versioned.mod_revision,
                });
                let revision = seen.as_ref().map(|seen| seen.mod_revision);
                self.revisions.insert(key, revision);
                Return::Get {
                    current: seen,
                    node: active.node,
                    applied: 0,
                    incarnation: 0,
                }
            }
            Outcome::Write(WriteOutcome::Put { revision }) => {
                self.revisions.insert(key, Some(revision));
                Return::Put { revision }
            }
            Outcome::Write(WriteOutcome::Delete { revision, existed }) => {
                self.revisions.insert(key, None);
                Return::Delete { revision, existed }
            }
            Outcome::Write(WriteOutcome::Cas {
                revision,
                succeeded,
                current,
            }) => {
                let seen = current.map(|versioned| Seen {
                    value: versioned.value,
                    mod_revision: versioned.mod_revision,
                });
                self.revisions
                    .insert(key, seen.as_ref().map(|seen| seen.mod_revision));
                Return::Cas {
                    revision,
                    succeeded,
                    current: seen,
                }
            }
        }
    }
}

fn call_of(operation: &Operation) -> Call {
    match operation {
        Operation::Put { value } => Call::Put {
            value: value.clone(),
        },
        Operation::Delete => Call::Delete,
        Operation::Cas { expected, value } => Call::Cas {
            expected: *expected,
            value: value.clone(),
        },
        Operation::Get => Call::Get {
            level: ReadPath::Linearizable,
        },
    }
}
