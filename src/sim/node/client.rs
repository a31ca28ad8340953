//! Simulated data clients. Each runs one operation at a time on the keyspaces the admin
//! client has created: strong puts, deletes, cas and reads at every strong level; counter
//! adds, set adds and removes, `lww` puts, and eventual reads at every eventual level.
//!
//! Strong operations retry as the client library does: a `NotLeader` hint is followed, an
//! `Unavailable` node or a silent one is left for another, and a write keeps its
//! `(client, seq)` across attempts so the node applies it once. A write that some attempt
//! may have put in the log (a timeout, silence, a leader without quorum) stays indeterminate
//! in the [`History`] if the client gives up. Eventual operations are sent once: a counter
//! add is not idempotent, and the checkers take an unanswered write as indeterminate.
//!
//! Reads are checked as they complete where the protocol lets a client know what to expect:
//! a session read must reflect the write its token names, a quorum read every write
//! acknowledged at `quorum` or `all` before it started. Counters are judged on their final
//! value only. Every answer is also checked against the catalog invariant.

use super::ATTEMPT_TIMEOUT;
use super::catalog::{Catalog, Stage};
use super::oplog::{EventualLog, Slot, WriteRef};
use crate::eventual::SessionToken;
use crate::protocol::admin::{FromNode, ToNode};
use crate::protocol::{
    Answer, ClientError, ClientRequest, Operation, Position, ReadLevel, Receipt, UnavailableReason,
};
use crate::rng::SeededRng;
use crate::sim::eventual::checkers::{lww_reflects, render, set_reflects, show_key};
use crate::sim::eventual::history::Outcome;
use crate::sim::history::{History, Return, Seen};
use crate::sim::session::{SessionGroup, Ticket};
use crate::strong::Versioned;
use crate::types::{Instant, NodeId};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

mod paxos;
mod workload;

/// In the faulty phase a strong operation is abandoned after this long (the client
/// library's default deadline).
const OPERATION_DEADLINE: Duration = Duration::from_secs(5);
/// Keys per strong keyspace, counter and `lww` keyspace: few, so operations conflict.
const STRONG_KEYS: u64 = 3;
const EVENTUAL_KEYS: u64 = 3;
/// Members set adds draw from when they do not use a fresh one; only these are removed.
const SET_POOL: [&str; 3] = ["a", "b", "c"];
/// A quorum read checks at most this many of the latest writes it must reflect.
const READ_EXPECTED_MAX: usize = 8;

/// Where a client stands with the world when it acts.
pub(crate) struct Context<'a> {
    pub(crate) now: Instant,
    pub(crate) catalog: &'a Catalog,
    pub(crate) history: &'a mut History,
    pub(crate) oplog: &'a mut EventualLog,
    pub(crate) violations: &'a mut Vec<String>,
}

/// A request to send: (node, the client's id for it, the request).
pub(crate) type Send = (NodeId, u64, ToNode);

/// What the operation in progress is, for the checkers.
#[derive(Debug)]
enum Work {
    Strong {
        history: usize,
        write: bool,
        /// Some attempt may have put the write in the log.
        maybe_applied: bool,
    },
    EventualWrite {
        write: WriteRef,
        quorum: bool,
    },
    EventualRead {
        slot: Slot,
        /// "local", "session" or "quorum", for violation lines.
        level: &'static str,
        expected: Vec<WriteRef>,
    },
}

#[derive(Debug)]
struct Active {
    work: Work,
    request: ClientRequest,
    /// The request's seq in its session, acknowledged when the operation ends.
    ticket: Ticket,
    target: NodeId,
    /// The attempt in flight times out at this; `None` while backing off.
    waiting: Option<Instant>,
    /// Give up after this (`None`: never, in the liveness phase).
    deadline: Option<Instant>,
    /// The keyspace was acknowledged and not being dropped when the attempt left.
    protected: bool,
}

/// Counters for the summary.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClientStats {
    pub(crate) strong_ops: u64,
    pub(crate) eventual_ops: u64,
    pub(crate) retries: u64,
    pub(crate) timeouts: u64,
    /// Strong reads by level: linearizable, lease, follower, stale.
    pub(crate) reads_by_level: [u64; 4],
    pub(crate) unknown_keyspace: u64,
    /// Strong writes refused because their session expired (or had not opened in time).
    pub(crate) sessions_expired: u64,
}

pub(crate) struct DataClient {
    pub(crate) addr: NodeId,
    index: usize,
    /// The client session this client shares with others.
    sessions: Rc<SessionGroup>,
    rng: SeededRng,
    nodes: Vec<NodeId>,
    home: NodeId,
    attempt: u64,
    /// The leader each strong keyspace last named.
    hints: BTreeMap<String, NodeId>,
    /// The mod revision last seen per strong key (None: absent), for cas expectations.
    revisions: BTreeMap<Slot, Option<u64>>,
    /// The token of the last acknowledged write per eventual key, for session reads.
    tokens: BTreeMap<Slot, (SessionToken, WriteRef)>,
    active: Option<Active>,
    next_at: Instant,
    think_mean: Duration,
    /// Fresh values and members.
    written: u64,
    /// The liveness phase's final linearizable reads, once drawn.
    final_reads: Option<VecDeque<(String, Bytes)>>,
    clients: usize,
    pub(crate) finished: bool,
    pub(crate) stats: ClientStats,
}

impl DataClient {
    pub(crate) fn new(
        index: usize,
        clients: usize,
        mut rng: SeededRng,
        nodes: Vec<NodeId>,
        think_mean: Duration,
        sessions: Rc<SessionGroup>,
    ) -> DataClient {
        let home = *rng.pick(&nodes);
        DataClient {
            addr: NodeId(super::CLIENT_BASE + index as u64),
            index,
            sessions,
            rng,
            nodes,
            home,
            attempt: 0,
            hints: BTreeMap::new(),
            revisions: BTreeMap::new(),
            tokens: BTreeMap::new(),
            active: None,
            next_at: Instant::ZERO,
            think_mean,
            written: 0,
            final_reads: None,
            clients,
            finished: false,
            stats: ClientStats::default(),
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        match &self.active {
            Some(Active {
                waiting: Some(timeout),
                ..
            }) => Some(*timeout),
            _ => Some(self.next_at),
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.active.is_none()
    }

    /// In the liveness phase nothing is abandoned any more.
    pub(crate) fn enter_liveness(&mut self) {
        if let Some(active) = &mut self.active {
            active.deadline = None;
        }
    }

    /// Acts at `now`: times out an attempt, retries, or starts an operation when `may_issue`
    /// (faulty phase) or the liveness phase's final reads allow.
    pub(crate) fn act(
        &mut self,
        mut cx: Context<'_>,
        may_issue: bool,
        liveness: bool,
    ) -> Vec<Send> {
        let now = cx.now;
        if let Some(active) = &self.active {
            if let Some(timeout) = active.waiting
                && (timeout > now || !self.timed_out(&mut cx))
            {
                return Vec::new();
            }
            if self.next_at > now {
                return Vec::new();
            }
            return self.attempt(&mut cx);
        }
        if self.next_at > now {
            return Vec::new();
        }
        if liveness {
            return self.final_read(&mut cx);
        }
        if !may_issue {
            self.next_at = now + Duration::from_millis(50);
            return Vec::new();
        }
        if !self.start_operation(&mut cx) {
            self.next_at = now + Duration::from_millis(20);
            return Vec::new();
        }
        self.attempt(&mut cx)
    }

    /// The attempt in flight went unanswered. Returns whether the operation goes on (a
    /// strong one is retried elsewhere; an eventual one ends indeterminate).
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        self.stats.timeouts += 1;
        let active = self.active.as_mut().expect("an operation is active");
        active.waiting = None;
        match &mut active.work {
            Work::Strong {
                write,
                maybe_applied,
                ..
            } => {
                *maybe_applied |= *write;
                active.target = *self.rng.pick(&self.nodes);
                self.hints.remove(&active.request.keyspace);
                true
            }
            Work::EventualWrite { write, .. } => {
                cx.oplog.resolve(write, Outcome::Indeterminate, None, false);
                self.end(cx.now);
                false
            }
            Work::EventualRead { .. } => {
                self.end(cx.now);
                false
            }
        }
    }

    /// Sends the next attempt of the active operation, or gives up past its deadline.
    fn attempt(&mut self, cx: &mut Context<'_>) -> Vec<Send> {
        let active = self.active.as_mut().expect("an operation is active");
        if active.deadline.is_some_and(|deadline| cx.now >= deadline) {
            self.give_up(cx);
            return Vec::new();
        }
        if self.paxos_resend_unsafe(cx) {
            // Indeterminate, as the client library leaves it (see `draw_paxos`).
            self.abandon(cx);
            return Vec::new();
        }
        let active = self.active.as_mut().expect("an operation is active");
        self.attempt += 1;
        active.waiting = Some(cx.now + ATTEMPT_TIMEOUT);
        active.protected = cx.catalog.stage(&active.request.keyspace) == Some(Stage::Live);
        active.request.first_unacked = active.ticket.first_unacked();
        active.request.opens_session = active.ticket.may_open(cx.now);
        let request = ToNode::Data(active.request.clone());
        vec![(active.target, self.attempt, request)]
    }

    /// A strong operation past its deadline: failed for sure unless an attempt may have
    /// put it in the log (then it stays indeterminate).
    fn give_up(&mut self, cx: &mut Context<'_>) {
        if let Some(Active {
            work:
                Work::Strong {
                    history,
                    maybe_applied: false,
                    ..
                },
            ..
        }) = &self.active
        {
            cx.history.fail(*history, cx.now);
        }
        self.end(cx.now);
    }

    /// The operation is over: think, then start the next.
    fn end(&mut self, now: Instant) {
        self.active = None;
        let think = self
            .rng
            .duration_between(Duration::ZERO, self.think_mean * 2);
        self.next_at = now + think;
    }

    /// A node answered attempt `id`. Answers to older attempts are ignored.
    pub(crate) fn on_answer(
        &mut self,
        mut cx: Context<'_>,
        id: u64,
        answer: FromNode,
    ) -> Vec<Send> {
        let Some(active) = &mut self.active else {
            return Vec::new();
        };
        if id != self.attempt || active.waiting.is_none() {
            return Vec::new();
        }
        active.waiting = None;
        let result = match answer {
            FromNode::Data(response) => response.result,
            FromNode::Admin(result) => {
                cx.violations.push(format!(
                    "protocol: a data request was answered with an admin frame {result:?}"
                ));
                self.abandon(&mut cx);
                return Vec::new();
            }
        };
        if let Err(ClientError::UnknownKeyspace { name }) = &result {
            self.unknown_keyspace(&mut cx, name.clone());
            return Vec::new();
        }
        let strong = matches!(
            self.active.as_ref().map(|a| &a.work),
            Some(Work::Strong { .. })
        );
        if strong {
            self.strong_answered(&mut cx, result)
        } else {
            self.eventual_answered(&mut cx, result);
            Vec::new()
        }
    }

    /// `UnknownKeyspace`: fine once a drop was sent, a violation of the catalog invariant
    /// if the create was acknowledged before the attempt left and no drop was sent since.
    fn unknown_keyspace(&mut self, cx: &mut Context<'_>, name: String) {
        self.stats.unknown_keyspace += 1;
        let active = self.active.as_ref().expect("an operation is active");
        let still_live = cx.catalog.stage(&active.request.keyspace) == Some(Stage::Live);
        if active.protected && still_live {
            cx.violations.push(format!(
                "catalog: {} answered UnknownKeyspace {name:?} to client {} ({:?} seq {}), \
                 though its create was acknowledged before the request left and no drop \
                 was sent",
                active.target, self.index, active.request.operation, active.request.seq
            ));
        }
        match &active.work {
            Work::Strong {
                history,
                maybe_applied: false,
                ..
            } => cx.history.fail(*history, cx.now),
            Work::Strong { .. } | Work::EventualRead { .. } => {}
            Work::EventualWrite { write, .. } => {
                cx.oplog.resolve(write, Outcome::Failed, None, false)
            }
        }
        self.end(cx.now);
    }

    /// Ends the operation without a verdict: a strong one stays indeterminate, an eventual
    /// write too.
    fn abandon(&mut self, cx: &mut Context<'_>) {
        if let Some(Active {
            work: Work::EventualWrite { write, .. },
            ..
        }) = &self.active
        {
            cx.oplog.resolve(write, Outcome::Indeterminate, None, false);
        }
        self.end(cx.now);
    }

    fn strong_answered(
        &mut self,
        cx: &mut Context<'_>,
        result: Result<(Answer, Receipt), ClientError>,
    ) -> Vec<Send> {
        match result {
            Ok((answer, receipt)) => {
                self.strong_done(cx, answer, receipt);
                Vec::new()
            }
            Err(error) => {
                self.strong_refused(cx, error);
                Vec::new()
            }
        }
    }

    fn strong_done(&mut self, cx: &mut Context<'_>, answer: Answer, receipt: Receipt) {
        let active = self.active.as_ref().expect("an operation is active");
        let Work::Strong { history, .. } = active.work else {
            return;
        };
        let slot = (
            active.request.keyspace.clone(),
            active.request.operation.key().clone(),
        );
        let returned = match (&active.request.operation, answer) {
            (Operation::Get { .. }, Answer::Strong(current)) => {
                let applied = match receipt.position {
                    Position::Raft { applied, .. } => applied.0,
                    Position::Eventual { .. } | Position::Paxos { .. } => 0,
                };
                self.revisions.insert(slot, revision_of(&current));
                Return::Get {
                    current: current.as_ref().map(seen),
                    node: receipt.node,
                    applied,
                    incarnation: 0,
                }
            }
            (Operation::Put { .. }, Answer::Written { revision }) => {
                self.revisions.insert(slot, Some(revision.0));
                Return::Put {
                    revision: revision.0,
                }
            }
            (Operation::Delete { .. }, Answer::Written { .. }) => {
                // The answer does not say whether the key existed, which the checker's
                // model needs: the delete stays indeterminate (it took effect or not).
                self.revisions.insert(slot, None);
                self.end(cx.now);
                return;
            }
            (
                Operation::Cas { .. },
                Answer::Cas {
                    succeeded,
                    revision,
                    current,
                },
            ) => {
                self.revisions.insert(slot, revision_of(&current));
                Return::Cas {
                    revision: revision.0,
                    succeeded,
                    current: current.as_ref().map(seen),
                }
            }
            (operation, answer) => {
                cx.violations.push(format!(
                    "protocol: client {} {operation:?} was answered {answer:?}",
                    self.index
                ));
                self.end(cx.now);
                return;
            }
        };
        cx.history.complete(history, returned, cx.now);
        self.end(cx.now);
    }

    /// A refusal: follow the hint, move on, or wait, as the client library does.
    fn strong_refused(&mut self, cx: &mut Context<'_>, error: ClientError) {
        self.stats.retries += 1;
        let active = self.active.as_mut().expect("an operation is active");
        let Work::Strong {
            write,
            maybe_applied,
            ..
        } = &mut active.work
        else {
            return;
        };
        let keyspace = active.request.keyspace.clone();
        let (low, high) = match &error {
            ClientError::NotLeader {
                leader_hint: Some(leader),
                ..
            } => {
                self.hints.insert(keyspace, *leader);
                active.target = *leader;
                (Duration::from_micros(500), Duration::from_millis(2))
            }
            ClientError::NotLeader { .. } | ClientError::Unavailable { .. } => {
                if let ClientError::Unavailable { reason } = &error {
                    // A leader without quorum may still commit what it appended.
                    *maybe_applied |= *write && *reason != UnavailableReason::NoLeader;
                    // A leader that cannot vouch for its lease: fall back to ReadIndex.
                    if *reason == UnavailableReason::NoQuorum
                        && active.request.read == Some(ReadLevel::Lease)
                    {
                        active.request.read = Some(ReadLevel::Linearizable);
                    }
                }
                self.hints.remove(&keyspace);
                active.target = *self.rng.pick(&self.nodes);
                (Duration::from_millis(5), Duration::from_millis(40))
            }
            ClientError::Timeout { may_have_applied } => {
                *maybe_applied |= *write && *may_have_applied;
                self.hints.remove(&keyspace);
                active.target = *self.rng.pick(&self.nodes);
                (Duration::from_millis(1), Duration::from_millis(10))
            }
            ClientError::Backpressure => (Duration::from_millis(10), Duration::from_millis(40)),
            ClientError::SessionExpired { .. } => {
                // Forgotten, or reached this keyspace after its opening window: a new
                // session; the write runs in it unless an earlier attempt may have applied
                // it (then it stays indeterminate, as the client library reports it).
                self.stats.sessions_expired += 1;
                self.sessions.rotate(&active.ticket, cx.now);
                if *maybe_applied {
                    self.abandon(cx);
                    return;
                }
                active.ticket = self.sessions.begin();
                active.request.client = active.ticket.client();
                active.request.seq = active.ticket.seq();
                (Duration::ZERO, Duration::from_millis(1))
            }
            other => {
                cx.violations.push(format!(
                    "protocol: client {} {:?} was refused with {other:?}",
                    self.index, active.request.operation
                ));
                self.abandon(cx);
                return;
            }
        };
        self.next_at = cx.now + self.rng.duration_between(low, high);
    }

    fn eventual_answered(
        &mut self,
        cx: &mut Context<'_>,
        result: Result<(Answer, Receipt), ClientError>,
    ) {
        let active = self.active.take().expect("an operation is active");
        match active.work {
            Work::EventualWrite { write, quorum } => {
                let (outcome, stamp) = match result {
                    Ok((Answer::Acknowledged { .. }, receipt)) => {
                        let (token, stamp) = match receipt.position {
                            Position::Eventual { token, stamp, .. } => (token, stamp),
                            Position::Raft { .. } | Position::Paxos { .. } => (None, None),
                        };
                        if let Some(token) = token {
                            let slot = slot_of(&active.request);
                            self.tokens.insert(slot, (token, write.clone()));
                        }
                        (Outcome::Acked, stamp)
                    }
                    Err(ClientError::NotEnoughReplicas { .. } | ClientError::Timeout { .. }) => {
                        (Outcome::Indeterminate, None)
                    }
                    // Refused before the engine saw it: busy, or a catalog look-up that
                    // could not reach group 0's leader.
                    Err(ClientError::Backpressure | ClientError::Unavailable { .. }) => {
                        (Outcome::Failed, None)
                    }
                    other => {
                        cx.violations.push(format!(
                            "protocol: client {} {:?} was answered {other:?}",
                            self.index, active.request.operation
                        ));
                        (Outcome::Indeterminate, None)
                    }
                };
                cx.oplog.resolve(&write, outcome, stamp, quorum);
            }
            Work::EventualRead {
                slot,
                level,
                expected,
            } => match result {
                Ok((Answer::Eventual(value), receipt)) => {
                    check_read(cx, &slot, level, receipt.node, &expected, &value);
                }
                Ok((answer, _)) => cx.violations.push(format!(
                    "protocol: client {} eventual read was answered {answer:?}",
                    self.index
                )),
                // Not seen yet, no quorum in time, busy: nothing to judge.
                Err(_) => {}
            },
            Work::Strong { .. } => unreachable!("strong answers go to strong_answered"),
        }
        self.end(cx.now);
    }
}

/// Whether an eventual read reflects every write it must; a violation line per miss.
fn check_read(
    cx: &mut Context<'_>,
    slot: &Slot,
    level: &str,
    node: NodeId,
    expected: &[WriteRef],
    value: &crate::eventual::ReadValue,
) {
    use crate::eventual::ReadValue;
    for write in expected {
        let reflected = match (write, value) {
            (WriteRef::Lww(slot, index), ReadValue::Lww { stamp, .. }) => {
                let puts = cx.oplog.lww_writes(slot, None);
                let id = cx.oplog.lww[slot][*index].id;
                match puts.iter().find(|put| put.id == id) {
                    Some(put) => lww_reflects(&puts, &put.stamp, stamp.as_ref()),
                    None => true, // No stamp known: nothing to compare with.
                }
            }
            (WriteRef::Set(slot, index), ReadValue::Set { members, .. }) => {
                let writes = &cx.oplog.sets[slot];
                let members: Vec<Vec<u8>> = members.iter().map(|m| m.to_vec()).collect();
                set_reflects(writes, &writes[*index], &members)
            }
            (WriteRef::Counter(..), _) => true,
            _ => false,
        };
        if !reflected {
            let id = cx.oplog.write_id(write);
            cx.violations.push(format!(
                "read-{level}: {}/{} on {node}: read {} misses write #{id} (acknowledged \
                 before the read started)",
                slot.0,
                show_key(&slot.1),
                render(value)
            ));
        }
    }
}

fn slot_of(request: &ClientRequest) -> Slot {
    (request.keyspace.clone(), request.operation.key().clone())
}

fn revision_of(current: &Option<Versioned>) -> Option<u64> {
    current.as_ref().map(|version| version.mod_revision.0)
}

fn seen(version: &Versioned) -> Seen {
    Seen {
        value: version.value.clone(),
        mod_revision: version.mod_revision.0,
    }
}
