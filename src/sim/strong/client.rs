//! Simulated clients: each runs one operation at a time on a handful of keys, at every read
//! level, through a random node; follows `NotLeader` hints; times out an attempt and retries
//! (a write with the *same* client id and seq, possibly on another node); gives up after a
//! deadline (the operation stays indeterminate if it may have reached the log). Every
//! operation goes into the [`History`].
//!
//! Clients share client sessions ([`SessionGroup`](crate::sim::session::SessionGroup)), as the tasks of one application share a
//! `Client`: one session has as many writes in flight as its clients, they commit in any
//! order, and each carries the session's lowest seq still waiting, as the client library
//! does. A session the machines forgot (expired) is replaced, and a write it refused that no
//! earlier attempt may have applied runs again in the new one. Any other session refusal is
//! reported as a violation.

use super::{Reply, ReplyBody, Request as SimRequest, RequestBody};
use crate::rng::SeededRng;
use crate::sim::history::{Call, History, ReadPath, Return, Seen};
use crate::sim::session::{SessionGroup, Ticket};
use crate::strong::{ClientId, Command, CommandError, Outcome, Request, Versioned};
use crate::types::{Instant, LogIndex, NodeId, WallMillis};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// An attempt with no answer after this long is retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(150);
/// In the faulty phase an operation is abandoned after this long.
const OPERATION_DEADLINE: Duration = Duration::from_secs(3);
/// The pause after a refusal before trying again (a hint is followed sooner).
const BACKOFF_MAX: Duration = Duration::from_millis(40);

/// The operation a client is running.
#[derive(Debug)]
struct Active {
    history: usize,
    body: RequestBody,
    /// Give up after this (None: never, in the liveness phase).
    deadline: Option<Instant>,
    /// The attempt in flight and when it times out; None while backing off.
    waiting: Option<Instant>,
    /// Some attempt may have put the write in the log.
    maybe_applied: bool,
    target: NodeId,
    /// A write's session and seq, acknowledged when the operation ends (answered or
    /// abandoned: never resent).
    ticket: Option<Ticket>,
}

/// Counters for the summary.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClientStats {
    pub(crate) retries: u64,
    pub(crate) reads_by_level: [u64; 4],
    /// Writes refused because their session expired (then moved to a new one, or left
    /// indeterminate if an earlier attempt may have applied them).
    pub(crate) sessions_expired: u64,
}

pub(crate) struct Client {
    index: usize,
    /// The process this client is in the history (not its session).
    id: ClientId,
    sessions: Rc<SessionGroup>,
    rng: SeededRng,
    keys: Vec<Bytes>,
    nodes: Vec<NodeId>,
    seq: u64,
    attempt: u64,
    leader_hint: Option<NodeId>,
    /// The mod revision this client last saw per key (None: absent), for cas expectations.
    revisions: BTreeMap<Bytes, Option<u64>>,
    active: Option<Active>,
    /// When to start the next operation or the next attempt.
    next_at: Instant,
    /// Mean pause between two operations.
    think_mean: Duration,
    /// Extra share of reads sent as lease reads (some seeds lean on leases).
    lease_share: f64,
    /// The client runs one final linearizable read in the liveness phase, then stops.
    pub(crate) finished: bool,
    final_issued: bool,
    pub(crate) stats: ClientStats,
}

impl Client {
    pub(crate) fn new(
        index: usize,
        rng: SeededRng,
        keys: Vec<Bytes>,
        nodes: Vec<NodeId>,
        think_mean: Duration,
        lease_share: f64,
        sessions: Rc<SessionGroup>,
    ) -> Client {
        Client {
            index,
            id: ClientId(index as u64 + 1),
            sessions,
            rng,
            keys,
            nodes,
            seq: 0,
            attempt: 0,
            leader_hint: None,
            revisions: BTreeMap::new(),
            active: None,
            next_at: Instant::ZERO,
            think_mean,
            lease_share,
            finished: false,
            final_issued: false,
            stats: ClientStats::default(),
        }
    }

    /// When this client next acts on its own.
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

    /// Acts at `now`: times out an attempt, retries, or starts a new operation when `may_issue`
    /// (faulty phase) or `liveness` allows. Returns the request to send, if any.
    pub(crate) fn act(
        &mut self,
        now: Instant,
        may_issue: bool,
        liveness: bool,
        history: &mut History,
    ) -> Option<SimRequest> {
        if let Some(active) = &mut self.active {
            if let Some(timeout) = active.waiting {
                if timeout > now {
                    return None;
                }
                // Timed out: a write may be in the log; retry somewhere else.
                active.waiting = None;
                active.maybe_applied |= matches!(active.body, RequestBody::Write(_));
                active.target = *self.rng.pick(&self.nodes);
                self.leader_hint = None;
                self.stats.retries += 1;
            }
            if self.next_at > now {
                return None;
            }
            return self.attempt(now, history);
        }
        if self.next_at > now {
            return None;
        }
        if liveness {
            if self.final_issued {
                self.finished = true;
                return None;
            }
            self.final_issued = true;
            let key = self.rng.pick(&self.keys).clone();
            let level = ReadPath::Linearizable;
            self.start(now, RequestBody::Read { key, level }, None, history);
            return self.attempt(now, history);
        }
        if !may_issue {
            self.next_at = now + Duration::from_millis(50);
            return None;
        }
        let body = self.draw_operation();
        self.start(now, body, Some(now + OPERATION_DEADLINE), history);
        self.attempt(now, history)
    }

    /// In the liveness phase nothing is abandoned any more.
    pub(crate) fn enter_liveness(&mut self) {
        if let Some(active) = &mut self.active {
            active.deadline = None;
        }
    }

    fn draw_operation(&mut self) -> RequestBody {
        let key = self.rng.pick(&self.keys).clone();
        let roll = self.rng.below(100);
        if roll < 45 {
            let level = if self.rng.chance(self.lease_share) {
                ReadPath::Lease
            } else {
                *self.rng.pick(&ReadPath::ALL)
            };
            self.stats.reads_by_level[level as usize] += 1;
            return RequestBody::Read { key, level };
        }
        self.seq += 1;
        let value = Bytes::from(format!("c{}-s{}", self.id.0, self.seq));
        let command = match roll {
            45..=69 => Command::Put { key, value },
            70..=79 => Command::Delete { key },
            _ => {
                let expected = self.revisions.get(&key).copied().flatten();
                let value = (!self.rng.chance(0.15)).then_some(value);
                Command::Cas {
                    key,
                    expected: expected.map(LogIndex),
                    value,
                }
            }
        };
        // The session fields are set by `start` and each attempt.
        RequestBody::Write(Request {
            client: ClientId(0),
            seq: 0,
            first_unacked: 0,
            opens_session: false,
            proposed_at: WallMillis(0),
            command,
        })
    }

    fn start(
        &mut self,
        now: Instant,
        body: RequestBody,
        deadline: Option<Instant>,
        history: &mut History,
    ) {
        let (key, call) = match &body {
            RequestBody::Read { key, level } => (key.clone(), Call::Get { level: *level }),
            RequestBody::Write(request) => {
                (request.command.key().clone(), call_of(&request.command))
            }
        };
        let history_id = history.invoke(self.id.0, key, call, now);
        let target = self.pick_target(&body);
        let mut active = Active {
            history: history_id,
            body,
            deadline,
            waiting: None,
            maybe_applied: false,
            target,
            ticket: None,
        };
        self.join_session(&mut active);
        self.active = Some(active);
    }

    /// Gives a write a seq in the current session.
    fn join_session(&self, active: &mut Active) {
        let RequestBody::Write(request) = &mut active.body else {
            return;
        };
        let ticket = self.sessions.begin();
        request.client = ticket.client();
        request.seq = ticket.seq();
        // Dropping the old ticket (a rotation) ends its seq in the old session.
        active.ticket = Some(ticket);
    }

    fn pick_target(&mut self, body: &RequestBody) -> NodeId {
        let wants_leader = !matches!(
            body,
            RequestBody::Read {
                level: ReadPath::Stale | ReadPath::Follower,
                ..
            }
        );
        match self.leader_hint {
            Some(leader) if wants_leader && self.rng.chance(0.9) => leader,
            _ => *self.rng.pick(&self.nodes),
        }
    }

    fn attempt(&mut self, now: Instant, history: &mut History) -> Option<SimRequest> {
        let active = self.active.as_mut().expect("an operation is active");
        if active.deadline.is_some_and(|deadline| now >= deadline) {
            self.give_up(now, history);
            return None;
        }
        self.attempt += 1;
        active.waiting = Some(now + ATTEMPT_TIMEOUT);
        if let (RequestBody::Write(request), Some(ticket)) = (&mut active.body, &active.ticket) {
            request.first_unacked = ticket.first_unacked();
            request.opens_session = ticket.may_open(now);
        }
        Some(SimRequest {
            client: self.index,
            attempt: self.attempt,
            node: active.target,
            body: active.body.clone(),
        })
    }

    fn give_up(&mut self, now: Instant, history: &mut History) {
        let active = self.active.take().expect("an operation is active");
        if !active.maybe_applied {
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

    /// A node answered. Answers to old attempts are ignored.
    pub(crate) fn on_reply(
        &mut self,
        now: Instant,
        reply: Reply,
        history: &mut History,
    ) -> Option<String> {
        let Some(active) = &mut self.active else {
            return None;
        };
        if reply.attempt != self.attempt || active.waiting.is_none() {
            return None;
        }
        active.waiting = None;
        match reply.body {
            ReplyBody::Refused { hint } => {
                // A lease the leader cannot vouch for: fall back to ReadIndex, as a real
                // client would, rather than spin on leases.
                if let RequestBody::Read { level, .. } = &mut active.body
                    && *level == ReadPath::Lease
                    && hint.is_none()
                {
                    *level = ReadPath::Linearizable;
                }
                self.leader_hint = hint;
                active.target = hint.unwrap_or(*self.rng.pick(&self.nodes));
                let backoff = if hint.is_some() {
                    self.rng
                        .duration_between(Duration::from_micros(500), Duration::from_millis(2))
                } else {
                    self.rng
                        .duration_between(Duration::from_millis(1), BACKOFF_MAX)
                };
                self.next_at = now + backoff;
                None
            }
            ReplyBody::Unknown => {
                active.maybe_applied = true;
                active.target = *self.rng.pick(&self.nodes);
                self.leader_hint = None;
                self.next_at = now + Duration::from_millis(5);
                None
            }
            ReplyBody::Read {
                current,
                node,
                applied,
                incarnation,
            } => {
                self.remember(&current);
                let returned = Return::Get {
                    current: current.as_ref().map(seen),
                    node,
                    applied,
                    incarnation,
                };
                self.complete(now, returned, history);
                None
            }
            ReplyBody::Written(Err(CommandError::SessionExpired { .. })) => {
                self.session_expired(now);
                None
            }
            ReplyBody::Written(result) => self.written(now, result, history),
        }
    }

    /// The machines forgot the write's session. If no earlier attempt may have applied the
    /// write, it never applied: it runs again in a new session. Otherwise it may have, and
    /// can never be confirmed: it stays indeterminate.
    fn session_expired(&mut self, now: Instant) {
        self.stats.sessions_expired += 1;
        let mut active = self.active.take().expect("an operation is active");
        if let Some(ticket) = &active.ticket {
            self.sessions.rotate(ticket, now);
        }
        if active.maybe_applied {
            drop(active);
            self.schedule_next(now);
            return;
        }
        self.join_session(&mut active);
        self.active = Some(active);
        self.next_at = now;
    }

    fn written(
        &mut self,
        now: Instant,
        result: Result<Outcome, CommandError>,
        history: &mut History,
    ) -> Option<String> {
        let active = self.active.as_ref().expect("an operation is active");
        let key = match &active.body {
            RequestBody::Write(request) => request.command.key().clone(),
            RequestBody::Read { key, .. } => key.clone(),
        };
        let returned = match result {
            Ok(Outcome::Put { revision }) => {
                self.revisions.insert(key, Some(revision.0));
                Return::Put {
                    revision: revision.0,
                }
            }
            Ok(Outcome::Delete { revision, existed }) => {
                self.revisions.insert(key, None);
                Return::Delete {
                    revision: revision.0,
                    existed,
                }
            }
            Ok(Outcome::Cas {
                revision,
                succeeded,
                current,
            }) => {
                self.remember_key(key, &current);
                Return::Cas {
                    revision: revision.0,
                    succeeded,
                    current: current.as_ref().map(seen),
                }
            }
            other => {
                let text = format!("client {}: unexpected write result {other:?}", self.id);
                self.active = None;
                self.schedule_next(now);
                return Some(text);
            }
        };
        self.complete(now, returned, history);
        None
    }

    fn remember(&mut self, current: &Option<Versioned>) {
        if let Some(RequestBody::Read { key, .. }) = self.active.as_ref().map(|a| &a.body) {
            let key = key.clone();
            self.remember_key(key, current);
        }
    }

    fn remember_key(&mut self, key: Bytes, current: &Option<Versioned>) {
        let revision = current.as_ref().map(|version| version.mod_revision.0);
        self.revisions.insert(key, revision);
    }

    fn complete(&mut self, now: Instant, returned: Return, history: &mut History) {
        let active = self.active.take().expect("an operation is active");
        history.complete(active.history, returned, now);
        self.schedule_next(now);
    }
}

fn seen(version: &Versioned) -> Seen {
    Seen {
        value: version.value.clone(),
        mod_revision: version.mod_revision.0,
    }
}

fn call_of(command: &Command) -> Call {
    match command {
        Command::Put { value, .. } => Call::Put {
            value: value.clone(),
        },
        Command::Delete { .. } => Call::Delete,
        Command::Cas {
            expected, value, ..
        } => Call::Cas {
            expected: expected.map(|revision| revision.0),
            value: value.clone(),
        },
        // The strong simulator's clients issue neither; a scan is recorded as a read.
        Command::Get { .. } | Command::Scan { .. } | Command::Txn { .. } | Command::TxnStep(_) => {
            Call::Get {
                level: ReadPath::Linearizable,
            }
        }
    }
}
