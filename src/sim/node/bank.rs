//! The bank workload: transactions across two strong keyspaces, `bank-a` and `bank-b`, each a
//! Raft group of its own, run through the same [`Coordinator`] the client library drives.
//!
//! Each keyspace holds [`ACCOUNTS`] accounts; an absent account holds [`OPENING`]. Bank
//! clients (one operation at a time, through random nodes, following leaders and retrying
//! like the data clients) run two operations:
//! - a **transfer**: read one account of each keyspace (a linearizable get, resolving any
//!   intent it meets from its record), then one transaction that moves an amount between
//!   them if neither changed since (compares on their revisions);
//! - an **audit**: one transaction that reads every account of both keyspaces.
//!
//! What must hold, whatever the faults (crashed coordinators' nodes, partitions, restarts,
//! records that expire and are aborted by whoever meets their intents): every committed
//! audit sees the opening total, so no transfer ever applied in one keyspace and not the
//! other, and none was seen half-applied. In the liveness phase each bank client runs audits
//! until one commits. Records expire fast here ([`RECORD_TTL_MS`]), so aborts by others
//! happen within a run.

use super::ATTEMPT_TIMEOUT;
use super::client::Send as Wire;
use crate::protocol::admin::{FromNode, ToNode};
use crate::protocol::{Answer, ClientError, ClientRequest, Operation};
use crate::rng::SeededRng;
use crate::sim::session::{SessionGroup, Ticket};
use crate::strong::{Compare, Part, StepOutcome, TxnId, TxnOp, Versioned};
use crate::txn::{AbortReason, AfterRecord, Coordinator, CoordinatorBug, Send, StepResult, TxnEnd};
use crate::types::{Instant, NodeId};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

/// The two keyspaces, created by the setup and used by bank clients only.
pub(crate) const KEYSPACES: [&str; 2] = ["bank-a", "bank-b"];
/// Accounts per keyspace: few, so transactions conflict.
const ACCOUNTS: u64 = 3;
/// What an absent account holds.
const OPENING: u64 = 100;
const TOTAL: u64 = OPENING * ACCOUNTS * KEYSPACES.len() as u64;
/// A bank client's records expire this fast: a coordinator slowed by a fault is aborted.
pub(crate) const RECORD_TTL_MS: u64 = 400;
/// A step or read is given up after this long (it may then have applied).
const CALL_DEADLINE: Duration = Duration::from_secs(3);

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BankStats {
    pub(crate) transfers: u64,
    pub(crate) audits: u64,
    pub(crate) aborted: u64,
    pub(crate) unknown: u64,
    pub(crate) resolved: u64,
}

/// One request in flight, retried until answered for good or past its deadline.
#[derive(Debug)]
struct Call {
    keyspace: String,
    operation: Operation,
    ticket: Ticket,
    target: NodeId,
    /// The attempt in flight times out at this (`None`: backing off until `retry_at`).
    waiting: Option<Instant>,
    retry_at: Instant,
    deadline: Instant,
    maybe_applied: bool,
}

/// How a call ended.
#[derive(Debug)]
enum Ended {
    Answer(Answer),
    Locked {
        key: Bytes,
        txn: TxnId,
        anchor: String,
    },
    Refused(String),
    Unknown(String),
}

/// What the client is doing.
#[derive(Debug)]
enum Flow {
    Idle,
    /// A transfer's reads: the accounts, then what they read.
    Reading {
        accounts: [(String, Bytes); 2],
        read: Vec<Option<Versioned>>,
    },
    /// Resolving an intent a get met, then back to `then`.
    Resolving {
        then: Box<Flow>,
        keyspace: String,
        key: Bytes,
        txn: TxnId,
        anchor: String,
    },
    /// Sending a resolve, then back to `then`.
    Resolve {
        then: Box<Flow>,
        send: Send,
    },
    /// Waiting for a pending record to be decided or expire, then back to `then`.
    Paused {
        then: Box<Flow>,
        until: Instant,
    },
    /// A transaction's steps, sent one at a time.
    Txn {
        coordinator: Box<Coordinator>,
        queue: VecDeque<Send>,
        audit: bool,
    },
}

pub(crate) struct BankClient {
    pub(crate) addr: NodeId,
    rng: SeededRng,
    nodes: Vec<NodeId>,
    sessions: Rc<SessionGroup>,
    hints: BTreeMap<String, NodeId>,
    bug: Option<CoordinatorBug>,
    flow: Flow,
    call: Option<Call>,
    attempt: u64,
    next_at: Instant,
    txns: u64,
    liveness: bool,
    pub(crate) finished: bool,
    pub(crate) stats: BankStats,
}

impl BankClient {
    pub(crate) fn new(
        addr: NodeId,
        rng: SeededRng,
        nodes: Vec<NodeId>,
        bug: Option<CoordinatorBug>,
    ) -> BankClient {
        BankClient {
            addr,
            rng,
            nodes,
            sessions: SessionGroup::new(addr.0 * 1_000_000),
            hints: BTreeMap::new(),
            bug,
            flow: Flow::Idle,
            call: None,
            attempt: 0,
            // After the setup has created the keyspaces.
            next_at: Instant::ZERO + Duration::from_millis(500),
            txns: 0,
            liveness: false,
            finished: false,
            stats: BankStats::default(),
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        match &self.call {
            Some(Call {
                waiting: Some(timeout),
                ..
            }) => Some(*timeout),
            Some(call) => Some(call.retry_at),
            None => Some(self.next_at),
        }
    }

    /// From now on: audits until one commits, then stop.
    pub(crate) fn enter_liveness(&mut self) {
        self.liveness = true;
    }

    /// Acts at `now`: an attempt timed out, a retry is due, or the next operation starts.
    pub(crate) fn act(
        &mut self,
        now: Instant,
        may_issue: bool,
        violations: &mut Vec<String>,
    ) -> Vec<Wire> {
        if let Some(call) = &mut self.call {
            match call.waiting {
                Some(timeout) if timeout > now => return Vec::new(),
                Some(_) => {
                    // Silence: the request may be in a log; ask another node.
                    call.maybe_applied |= call.operation.is_write();
                    call.target = *self.rng.pick(&self.nodes);
                    self.hints.remove(&call.keyspace);
                    call.waiting = None;
                }
                None if call.retry_at > now => return Vec::new(),
                None => {}
            }
            return self.send_attempt(now, violations);
        }
        if self.next_at > now {
            return Vec::new();
        }
        if matches!(self.flow, Flow::Idle) {
            if !self.liveness && !may_issue {
                self.next_at = now + Duration::from_millis(50);
                return Vec::new();
            }
            self.start();
        }
        self.advance(now, violations)
    }

    fn start(&mut self) {
        if self.liveness || self.rng.chance(0.3) {
            self.stats.audits += 1;
            let parts = KEYSPACES
                .iter()
                .map(|ks| {
                    let reads = (0..ACCOUNTS).map(account).collect();
                    (
                        ks.to_string(),
                        Part {
                            reads,
                            ..Part::default()
                        },
                    )
                })
                .collect();
            self.begin_txn(parts, true);
            return;
        }
        self.stats.transfers += 1;
        let mut accounts = [
            (KEYSPACES[0].to_string(), account(self.rng.below(ACCOUNTS))),
            (KEYSPACES[1].to_string(), account(self.rng.below(ACCOUNTS))),
        ];
        if self.rng.chance(0.5) {
            accounts.swap(0, 1); // From b to a.
        }
        self.flow = Flow::Reading {
            accounts,
            read: Vec::new(),
        };
    }

    fn begin_txn(&mut self, parts: BTreeMap<String, Part>, audit: bool) {
        self.txns += 1;
        let txn = TxnId {
            client: crate::strong::ClientId(self.addr.0),
            number: self.txns,
        };
        let (coordinator, sends) = Coordinator::with_ttl(txn, parts, RECORD_TTL_MS, self.bug);
        self.flow = Flow::Txn {
            coordinator: Box::new(coordinator),
            queue: sends.into(),
            audit,
        };
    }

    /// Starts the next call the flow needs, or ends the operation.
    fn advance(&mut self, now: Instant, violations: &mut Vec<String>) -> Vec<Wire> {
        let next = match &mut self.flow {
            Flow::Idle => None,
            Flow::Reading { accounts, read } if read.len() < 2 => {
                let (keyspace, key) = accounts[read.len()].clone();
                Some((keyspace, Operation::Get { key }))
            }
            Flow::Reading { .. } => {
                self.transfer();
                return self.advance(now, violations);
            }
            Flow::Resolving { txn, anchor, .. } => {
                let step = crate::txn::resolve_step(*txn);
                Some((anchor.clone(), Operation::TxnStep(step)))
            }
            Flow::Resolve { send, .. } => {
                Some((send.keyspace.clone(), Operation::TxnStep(send.step.clone())))
            }
            Flow::Paused { until, .. } if *until > now => {
                self.next_at = *until;
                return Vec::new();
            }
            Flow::Paused { .. } => {
                let Flow::Paused { then, .. } = std::mem::replace(&mut self.flow, Flow::Idle)
                else {
                    unreachable!("matched above")
                };
                self.flow = *then;
                return self.advance(now, violations);
            }
            Flow::Txn { queue, .. } => queue
                .pop_front()
                .map(|send| (send.keyspace, Operation::TxnStep(send.step))),
        };
        let Some((keyspace, operation)) = next else {
            self.end_operation(now, violations);
            return Vec::new();
        };
        let target = self
            .hints
            .get(&keyspace)
            .copied()
            .unwrap_or_else(|| *self.rng.pick(&self.nodes));
        self.call = Some(Call {
            keyspace,
            operation,
            ticket: self.sessions.begin(),
            target,
            waiting: None,
            retry_at: now,
            deadline: now + CALL_DEADLINE,
            maybe_applied: false,
        });
        self.send_attempt(now, violations)
    }

    /// Both accounts read: the transfer's transaction.
    fn transfer(&mut self) {
        let Flow::Reading { accounts, read } = std::mem::replace(&mut self.flow, Flow::Idle) else {
            return;
        };
        let balance = |v: &Option<Versioned>| {
            v.as_ref()
                .and_then(|v| std::str::from_utf8(&v.value).ok()?.parse::<u64>().ok())
                .unwrap_or(OPENING)
        };
        let (from, to) = (balance(&read[0]), balance(&read[1]));
        let amount = self.rng.range_u64(1, 20).min(from);
        if amount == 0 {
            return; // Flow::Idle: the operation ends.
        }
        let mut parts = BTreeMap::new();
        for (index, ((keyspace, key), balance)) in accounts
            .into_iter()
            .zip([from - amount, to + amount])
            .enumerate()
        {
            let revision = read[index].as_ref().map(|v| v.mod_revision);
            let part = Part {
                compares: vec![Compare::Revision {
                    key: key.clone(),
                    revision,
                }],
                success: vec![TxnOp::Put {
                    key,
                    value: Bytes::from(balance.to_string()),
                }],
                ..Part::default()
            };
            parts.insert(keyspace, part);
        }
        self.begin_txn(parts, false);
    }

    fn end_operation(&mut self, now: Instant, violations: &mut Vec<String>) {
        if let Flow::Txn {
            coordinator, audit, ..
        } = std::mem::replace(&mut self.flow, Flow::Idle)
        {
            self.txn_ended(&coordinator, audit, violations);
            // A transaction that met another's intent resolves it before the next one, so an
            // intent its coordinator left behind does not block every later transaction.
            if let Some(TxnEnd::Aborted(AbortReason::Conflict {
                keyspace,
                key,
                txn,
                anchor,
            })) = coordinator.end().cloned()
            {
                self.flow = Flow::Resolving {
                    then: Box::new(Flow::Idle),
                    keyspace,
                    key,
                    txn,
                    anchor,
                };
            }
        }
        self.next_at = now
            + self
                .rng
                .duration_between(Duration::ZERO, Duration::from_millis(60));
    }

    fn txn_ended(&mut self, coordinator: &Coordinator, audit: bool, violations: &mut Vec<String>) {
        match coordinator.end() {
            Some(TxnEnd::Committed { reads, .. }) if audit => {
                let balances: Vec<u64> = reads
                    .values()
                    .flatten()
                    .map(|(_, v)| {
                        v.as_ref()
                            .and_then(|v| std::str::from_utf8(&v.value).ok()?.parse().ok())
                            .unwrap_or(OPENING)
                    })
                    .collect();
                let total: u64 = balances.iter().sum();
                if total != TOTAL || balances.len() as u64 != 2 * ACCOUNTS {
                    violations.push(format!(
                        "bank: {} audit {} saw balances {balances:?}, total {total}, not {TOTAL}",
                        self.addr,
                        coordinator.txn()
                    ));
                }
                if self.liveness {
                    self.finished = true;
                }
            }
            Some(TxnEnd::Committed { .. }) => {}
            Some(TxnEnd::Aborted(_)) => self.stats.aborted += 1,
            Some(TxnEnd::Unknown(_)) | None => self.stats.unknown += 1,
        }
    }

    fn send_attempt(&mut self, now: Instant, violations: &mut Vec<String>) -> Vec<Wire> {
        let call = self.call.as_mut().expect("a call is active");
        if now >= call.deadline {
            let ended = if call.maybe_applied {
                Ended::Unknown("no answer before the deadline".to_string())
            } else {
                Ended::Refused("no answer before the deadline".to_string())
            };
            return self.call_ended(now, ended, violations);
        }
        self.attempt += 1;
        call.waiting = Some(now + ATTEMPT_TIMEOUT);
        let mut request = ClientRequest::new(
            call.ticket.client(),
            call.ticket.seq(),
            call.keyspace.clone(),
            call.operation.clone(),
        );
        request.first_unacked = call.ticket.first_unacked();
        request.opens_session = call.ticket.may_open(now);
        vec![(call.target, self.attempt, ToNode::Data(request))]
    }

    /// A node answered attempt `id`.
    pub(crate) fn on_answer(
        &mut self,
        now: Instant,
        id: u64,
        answer: FromNode,
        violations: &mut Vec<String>,
    ) -> Vec<Wire> {
        let Some(call) = &mut self.call else {
            return Vec::new();
        };
        if id != self.attempt || call.waiting.is_none() {
            return Vec::new();
        }
        call.waiting = None;
        let FromNode::Data(response) = answer else {
            violations.push(format!("bank: {} got an admin frame for data", self.addr));
            return Vec::new();
        };
        let retry_in = |call: &mut Call, ms: u64| call.retry_at = now + Duration::from_millis(ms);
        let ended = match response.result {
            Ok((answer, _)) => Ended::Answer(answer),
            Err(ClientError::Locked { key, txn, anchor }) => Ended::Locked { key, txn, anchor },
            Err(ClientError::NotLeader { leader_hint, .. }) => {
                call.target = leader_hint.unwrap_or_else(|| *self.rng.pick(&self.nodes));
                if let Some(leader) = leader_hint {
                    self.hints.insert(call.keyspace.clone(), leader);
                }
                retry_in(call, 0);
                return Vec::new();
            }
            Err(ClientError::SessionExpired { .. }) if !call.maybe_applied => {
                self.sessions.rotate(&call.ticket, now);
                call.ticket = self.sessions.begin();
                retry_in(call, 0);
                return Vec::new();
            }
            Err(ClientError::Timeout { may_have_applied }) => {
                call.maybe_applied |= may_have_applied;
                call.target = *self.rng.pick(&self.nodes);
                retry_in(call, 10);
                return Vec::new();
            }
            Err(
                ClientError::Unavailable { .. }
                | ClientError::Backpressure
                | ClientError::UnknownKeyspace { .. },
            ) => {
                call.target = *self.rng.pick(&self.nodes);
                self.hints.remove(&call.keyspace);
                retry_in(call, 20);
                return Vec::new();
            }
            Err(other) if call.maybe_applied => Ended::Unknown(other.to_string()),
            Err(other) => Ended::Refused(other.to_string()),
        };
        self.call_ended(now, ended, violations)
    }

    /// The call is over: feed its end to the flow, then go on.
    fn call_ended(
        &mut self,
        now: Instant,
        ended: Ended,
        violations: &mut Vec<String>,
    ) -> Vec<Wire> {
        let Some(call) = self.call.take() else {
            return Vec::new();
        };
        match std::mem::replace(&mut self.flow, Flow::Idle) {
            Flow::Idle => {}
            Flow::Reading { accounts, mut read } => match ended {
                Ended::Answer(Answer::Strong(value)) => {
                    read.push(value);
                    self.flow = Flow::Reading { accounts, read };
                }
                Ended::Locked { key, txn, anchor } => {
                    self.flow = Flow::Resolving {
                        then: Box::new(Flow::Reading { accounts, read }),
                        keyspace: call.keyspace.clone(),
                        key,
                        txn,
                        anchor,
                    };
                }
                _ => {} // The read failed: the transfer is dropped.
            },
            Flow::Resolving {
                then,
                keyspace,
                key,
                txn,
                anchor,
            } => self.resolving(now, ended, *then, keyspace, key, txn, anchor),
            // Resolved or not, the read runs again (and meets the intent again if it stays).
            Flow::Resolve { then, .. } | Flow::Paused { then, .. } => self.flow = *then,
            Flow::Txn {
                mut coordinator,
                mut queue,
                audit,
            } => {
                let result = match ended {
                    Ended::Answer(Answer::TxnStep { revision, outcome }) => {
                        StepResult::Done { revision, outcome }
                    }
                    Ended::Answer(other) => StepResult::Unknown(format!("answered {other:?}")),
                    Ended::Locked { key, txn, anchor } => StepResult::Locked { key, txn, anchor },
                    Ended::Refused(reason) => StepResult::Refused(reason),
                    Ended::Unknown(reason) => StepResult::Unknown(reason),
                };
                queue.extend(coordinator.on_result(&call.keyspace, result));
                self.flow = Flow::Txn {
                    coordinator,
                    queue,
                    audit,
                };
            }
        }
        drop(call); // Acknowledges its seq.
        self.advance(now, violations)
    }

    /// The record answered (or the ask failed): resolve the key, wait, or go back.
    #[allow(clippy::too_many_arguments)]
    fn resolving(
        &mut self,
        now: Instant,
        ended: Ended,
        then: Flow,
        keyspace: String,
        key: Bytes,
        txn: TxnId,
        anchor: String,
    ) {
        let state = match ended {
            Ended::Answer(Answer::TxnStep {
                outcome: StepOutcome::Record(state),
                ..
            }) => state,
            // Resolving is best effort: the operation goes back to its read, which meets
            // the intent again if it is still there.
            _ => {
                self.flow = then;
                return;
            }
        };
        match crate::txn::after_record(txn, state, &keyspace, &anchor, key.clone()) {
            AfterRecord::Wait => {
                // Ask again after a while: back to the read, which meets it again.
                let until = now + Duration::from_millis(50);
                self.flow = Flow::Paused {
                    then: Box::new(then),
                    until,
                };
            }
            AfterRecord::Resolved => {
                self.stats.resolved += 1;
                self.flow = then;
            }
            AfterRecord::Send(send) => {
                self.stats.resolved += 1;
                self.flow = Flow::Resolve {
                    then: Box::new(then),
                    send,
                };
            }
        }
    }
}

/// The key of account `index`.
fn account(index: u64) -> Bytes {
    Bytes::from(format!("acct-{index}"))
}
