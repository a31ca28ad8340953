//! The simulated clients: what they write and read, how each request is logged, and the
//! checks on every read as it completes.
//!
//! A client has one request in flight at a time. It talks to its home node most of the time
//! and to a random node otherwise, so during a partition there are writers on every side.
//! Values are unique (`c<client>-w<write>`), so a value in a state names its write.

use super::checkers::{lww_reflects, mv_reflects, render, set_reflects, show_key};
use super::cluster::{Keyspace, set_remove_context};
use super::history::{CounterWrite, LwwWrite, MvWrite, Outcome, SetWrite, WriteMeta, WriteRef};
use super::{
    CLIENTS_PER_NODE, COLD_KEYS_PER_KEYSPACE, KEYS_PER_KEYSPACE, PendingRead, Request,
    SAFETY_PHASE, Sim,
};
use crate::eventual::{
    HlcTimestamp, Op, PersistBatch, ReadContext, ReadMode, ReadValue, RequestId, SessionToken,
    WriteLevel,
};
use bytes::Bytes;
use crdts::{CmRDT, Dot, VClock};
use std::time::Duration;

/// The keyspace of `lww` values (the index of `ValueType::Lww` in `VALUE_TYPES`).
const LWW_KEYSPACE: Keyspace = 0;

/// Members the set clients add and remove: few, so adds and removes collide.
const SET_MEMBERS: [&str; 4] = ["a", "b", "c", "d"];
/// A read checks at most this many of the latest writes it must reflect.
const READ_EXPECTED_MAX: usize = 8;

/// The operation a client chose, with what the log needs to know about it before it is sent.
enum Planned {
    /// A put (or a delete, `None`), timed by the node, or by the client (`at`).
    Lww {
        value: Option<Bytes>,
        at: Option<HlcTimestamp>,
    },
    MvReg {
        value: Option<Bytes>,
        context: Option<ReadContext>,
    },
    Counter(i64),
    SetAdd(Bytes),
    SetRemove {
        member: Bytes,
        observed: VClock<crate::types::NodeId>,
    },
}

impl Sim {
    pub(super) fn run_clients(&mut self) {
        for client in 0..self.clients.len() {
            if self.clients[client]
                .next_at
                .is_some_and(|at| at <= self.now)
            {
                self.client_act(client);
            }
        }
    }

    /// The client is free again: it acts after a think time.
    pub(super) fn client_done(&mut self, client: usize) {
        if self.clients_stopped {
            self.clients[client].next_at = None;
            return;
        }
        let think = self.think_time();
        self.clients[client].next_at = Some(self.now + think);
    }

    /// Think times spread the run's `steps` operations over the safety phase.
    fn think_time(&mut self) -> Duration {
        let clients = (self.config.nodes * CLIENTS_PER_NODE) as u32;
        let steps = u32::try_from(self.config.steps.max(1)).unwrap_or(u32::MAX);
        let mean = SAFETY_PHASE * clients / steps;
        self.rng.duration_between(Duration::ZERO, mean * 2)
    }

    fn client_act(&mut self, client: usize) {
        if self.issued >= self.config.steps {
            self.clients[client].next_at = None;
            return;
        }
        let resending = self.clients[client].resend.is_some();
        let node = if self.rng.chance(0.7) && !resending {
            self.clients[client].home
        } else {
            self.rng.below(self.nodes.len() as u64) as usize
        };
        if !self.nodes[node].is_up() {
            self.tally.writes_refused += 1;
            self.client_done(client);
            return;
        }
        if let Some(until) = self.nodes[node].paused_until.filter(|u| *u > self.now) {
            // The request sits in the paused node's socket buffer.
            self.clients[client].next_at = Some(until);
            return;
        }
        self.issued += 1;
        self.clients[client].next_at = None;
        if self.issue_resend(client, node) {
            return;
        }
        let keyspace = self.rng.below(4) as usize;
        let key = if self.rng.chance(0.8) {
            Bytes::from(format!("k{}", self.rng.below(KEYS_PER_KEYSPACE)))
        } else {
            Bytes::from(format!("cold{}", self.rng.below(COLD_KEYS_PER_KEYSPACE)))
        };
        if self.rng.chance(0.65) {
            self.issue_write(client, node, keyspace, key);
        } else {
            self.issue_read(client, node, keyspace, key);
        }
    }

    fn plan_write(
        &mut self,
        client: usize,
        node: usize,
        keyspace: Keyspace,
        key: &Bytes,
    ) -> Option<Planned> {
        let value = Bytes::from(format!("c{client}-w{}", self.log.meta.len()));
        let planned = match keyspace {
            LWW_KEYSPACE => {
                let value = self.rng.chance(0.8).then_some(value);
                let at = self.rng.chance(0.4).then(|| {
                    let (_, wall) = self.nodes[node].times(self.now);
                    self.clients[client].clock.now(wall)
                });
                Planned::Lww { value, at }
            }
            1 => {
                let context = self.clients[client].contexts.remove(key);
                if context.is_none() && self.rng.chance(0.75) {
                    return None; // read first, to write with a context
                }
                let delete = context.is_some() && self.rng.chance(0.15);
                Planned::MvReg {
                    value: (!delete).then_some(value),
                    context,
                }
            }
            2 => Planned::Counter(*self.rng.pick(&[-5, -2, -1, 1, 2, 3, 7, 10])),
            _ => {
                let member = Bytes::from_static(self.rng.pick(&SET_MEMBERS).as_bytes());
                if self.rng.chance(0.6) {
                    Planned::SetAdd(member)
                } else {
                    let view = self.nodes[node].overlay_view(keyspace, key);
                    let observed = set_remove_context(view.as_ref(), &member);
                    Planned::SetRemove { member, observed }
                }
            }
        };
        Some(planned)
    }

    fn issue_write(&mut self, client: usize, node: usize, keyspace: Keyspace, key: Bytes) {
        let Some(planned) = self.plan_write(client, node, keyspace, &key) else {
            return self.issue_read(client, node, keyspace, key);
        };
        if let Planned::Lww {
            value,
            at: Some(at),
        } = &planned
            && self.rng.chance(0.3)
        {
            self.clients[client].resend = Some((key.clone(), value.clone(), *at));
        }
        self.issue_planned(client, node, keyspace, key, planned);
    }

    /// Sends a client-timed `lww` write again, as the client library does after a lost answer:
    /// the same key, value and time, through whichever node the client picked now.
    fn issue_resend(&mut self, client: usize, node: usize) -> bool {
        let Some((key, value, at)) = self.clients[client].resend.take() else {
            return false;
        };
        let planned = Planned::Lww {
            value,
            at: Some(at),
        };
        self.issue_planned(client, node, LWW_KEYSPACE, key, planned);
        true
    }

    fn issue_planned(
        &mut self,
        client: usize,
        node: usize,
        keyspace: Keyspace,
        key: Bytes,
        planned: Planned,
    ) {
        let level = match self.rng.below(10) {
            0..6 => WriteLevel::Local,
            6..9 => WriteLevel::Quorum,
            _ => WriteLevel::All,
        };
        let op = match &planned {
            Planned::Lww {
                value: Some(value), ..
            } => Op::LwwPut(value.clone()),
            Planned::Lww { value: None, .. } => Op::LwwDelete,
            Planned::MvReg {
                value: Some(value),
                context,
            } => Op::MvPut {
                value: value.clone(),
                context: context.clone(),
            },
            Planned::MvReg {
                value: None,
                context,
            } => Op::MvDelete {
                context: context.clone(),
            },
            Planned::Counter(amount) => Op::CounterAdd(*amount),
            Planned::SetAdd(member) => Op::SetAdd(member.clone()),
            // Half the removals carry the context of what they remove, as the client library's
            // do; the other half leave it to the node. Both remove the adds it has observed.
            Planned::SetRemove { member, observed } => Op::SetRemove {
                member: member.clone(),
                seen: self.rng.chance(0.5).then(|| ReadContext(observed.clone())),
            },
        };
        let request = self.next_request;
        self.next_request += 1;
        let (local, wall) = self.nodes[node].times(self.now);
        let engine = self.nodes[node]
            .engine(keyspace)
            .expect("invariant: node is up");
        let at = match planned {
            Planned::Lww { at, .. } => at,
            _ => None,
        };
        let id = RequestId(request);
        if engine
            .local_write_at(local, wall, id, key.clone(), op, level, at)
            .is_err()
        {
            // Refused before anything was applied: nothing to log.
            self.tally.writes_refused += 1;
            return self.client_done(client);
        }
        let batch = engine
            .poll_persist()
            .expect("engine contract: a local write is handed out in the next persist batch");
        let write = self.log_write(node, keyspace, &key, planned, &batch, level);
        self.requests.insert(
            request,
            Request::Write {
                client,
                node,
                write,
            },
        );
        self.push_batch(node, keyspace, batch);
        self.drain(node, keyspace);
    }

    /// Logs a write the engine took, with the identity its persist batch reveals: the dot is
    /// `(node, batch.meta.seq)`, the `lww` stamp the key's marker in the batch.
    fn log_write(
        &mut self,
        node: usize,
        keyspace: Keyspace,
        key: &Bytes,
        planned: Planned,
        batch: &PersistBatch,
        level: WriteLevel,
    ) -> WriteRef {
        let id = self.log.meta.len() as u64;
        let node_id = self.nodes[node].id;
        let dot = Dot::new(node_id, batch.meta.seq);
        let state = batch
            .keys
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, state)| state.as_ref());
        self.log.meta.push(WriteMeta {
            node,
            quorum: level != WriteLevel::Local,
            persisted_at: None,
            acked_at: None,
            dot: (node_id, batch.meta.seq),
            batch: (keyspace, batch.id.0),
        });
        let key_owned = key.clone();
        let index = match planned {
            Planned::Lww { value, at } => {
                // A client-timed write may lose to the key's newer value at once: the batch
                // then holds that value's stamp, not the write's.
                let stamp = at
                    .or_else(|| state.and_then(|s| s.state.lww_stamp()))
                    .expect("engine contract: an lww write's batch holds its stamped state");

                push(
                    &mut self.log.lww,
                    key_owned,
                    LwwWrite {
                        id,
                        value: value.map(|v| v.to_vec()),
                        stamp,
                        outcome: Outcome::Pending,
                    },
                )
            }
            Planned::MvReg { value, context } => {
                let mut clock = context.map_or_else(VClock::new, |c| c.0);
                clock.apply(dot);
                push(
                    &mut self.log.mvreg,
                    key_owned,
                    MvWrite {
                        id,
                        value: value.map(|v| v.to_vec()),
                        clock,
                        outcome: Outcome::Pending,
                    },
                )
            }
            Planned::Counter(amount) => push(
                &mut self.log.counter,
                key_owned,
                CounterWrite {
                    id,
                    amount,
                    outcome: Outcome::Pending,
                },
            ),
            Planned::SetAdd(member) => push(
                &mut self.log.set,
                key_owned,
                SetWrite::Add {
                    id,
                    member: member.to_vec(),
                    dot: Some(dot),
                    outcome: Outcome::Pending,
                },
            ),
            Planned::SetRemove { member, observed } => push(
                &mut self.log.set,
                key_owned,
                SetWrite::Remove {
                    id,
                    member: member.to_vec(),
                    observed,
                    outcome: Outcome::Pending,
                },
            ),
        };
        WriteRef {
            keyspace,
            key: key.clone(),
            index,
        }
    }

    /// A write's answer from its node: acked, or failed (`persisted`: after it was persisted
    /// there, so it is indeterminate and local reads there must reflect it).
    pub(super) fn write_answered(
        &mut self,
        request: u64,
        token: SessionToken,
        acked: bool,
        persisted: bool,
    ) {
        let Some(Request::Write {
            client,
            node,
            write,
        }) = self.requests.remove(&request)
        else {
            return;
        };
        let id = self.write_id(&write);
        let meta = &mut self.log.meta[id as usize];
        if (token.node, token.seq) != meta.dot || node != meta.node {
            self.violations.push(format!(
                "harness: write #{id} answered with token {token:?}, but its persist batch \
                 showed dot {:?}",
                meta.dot
            ));
        }
        if persisted {
            meta.persisted_at = Some(self.now);
        }
        if acked {
            meta.acked_at = Some(self.now);
            let slot = (write.keyspace, write.key.clone());
            self.clients[client]
                .tokens
                .insert(slot, (token, write.clone()));
        }
        let outcome = if acked {
            Outcome::Acked
        } else {
            Outcome::Indeterminate
        };
        self.log.resolve(&write, outcome);
        self.client_done(client);
    }

    pub(super) fn write_id(&self, write: &WriteRef) -> u64 {
        let key = &write.key;
        match write.keyspace {
            0 => self.log.lww[key][write.index].id,
            1 => self.log.mvreg[key][write.index].id,
            2 => self.log.counter[key][write.index].id,
            _ => match &self.log.set[key][write.index] {
                SetWrite::Add { id, .. } | SetWrite::Remove { id, .. } => *id,
            },
        }
    }

    /// Every logged write on one key, as references.
    fn writes_on(&self, keyspace: Keyspace, key: &Bytes) -> Vec<WriteRef> {
        let count = match keyspace {
            0 => self.log.lww.get(key).map_or(0, Vec::len),
            1 => self.log.mvreg.get(key).map_or(0, Vec::len),
            2 => 0, // A counter's value cannot show one write: nothing to expect.
            _ => self.log.set.get(key).map_or(0, Vec::len),
        };
        (0..count)
            .map(|index| WriteRef {
                keyspace,
                key: key.clone(),
                index,
            })
            .collect()
    }

    fn issue_read(&mut self, client: usize, node: usize, keyspace: Keyspace, key: Bytes) {
        let token = self.clients[client]
            .tokens
            .get(&(keyspace, key.clone()))
            .cloned();
        let choice = self.rng.below(10);
        let (level, label, expected) = match (choice, token) {
            (4..7, Some((token, write))) => (ReadMode::Session(token), "session", vec![write]),
            (7.., _) => {
                let expected = self.expected_writes(keyspace, &key, |meta| {
                    meta.quorum && meta.acked_at.is_some()
                });
                (ReadMode::Quorum, "quorum", expected)
            }
            _ => {
                let expected = self.expected_writes(keyspace, &key, |meta| {
                    meta.node == node && meta.persisted_at.is_some()
                });
                (ReadMode::Local, "local", expected)
            }
        };
        let request = self.next_request;
        self.next_request += 1;
        let read = PendingRead {
            client,
            node,
            key: key.clone(),
            level: label,
            expected,
        };
        self.requests.insert(request, Request::Read(read));
        let local = self.nodes[node].local(self.now);
        let engine = self.nodes[node]
            .engine(keyspace)
            .expect("invariant: node is up");
        if engine.read(local, RequestId(request), key, level).is_err() {
            self.requests.remove(&request);
            self.tally.reads_failed += 1;
            return self.client_done(client);
        }
        self.drain(node, keyspace);
    }

    fn expected_writes(
        &self,
        keyspace: Keyspace,
        key: &Bytes,
        qualifies: impl Fn(&WriteMeta) -> bool,
    ) -> Vec<WriteRef> {
        let mut expected: Vec<WriteRef> = self
            .writes_on(keyspace, key)
            .into_iter()
            .filter(|write| qualifies(&self.log.meta[self.write_id(write) as usize]))
            .collect();
        let skip = expected.len().saturating_sub(READ_EXPECTED_MAX);
        expected.drain(..skip);
        expected
    }

    /// A read's answer: check it reflects every write it must, keep an `mvreg` context.
    pub(super) fn read_answered(&mut self, request: u64, value: Option<ReadValue>) {
        let Some(Request::Read(read)) = self.requests.remove(&request) else {
            return;
        };
        self.tally.reads += 1;
        let Some(value) = value else {
            self.tally.reads_failed += 1;
            return self.client_done(read.client);
        };
        for write in &read.expected {
            if !self.reflects(write, &value) {
                let id = self.write_id(write);
                self.violations.push(format!(
                    "read-{}: key {} on {}: read {} misses write #{id} (acked or persisted \
                     there before the read)",
                    read.level,
                    show_key(&read.key),
                    self.nodes[read.node].id,
                    render(&value)
                ));
            }
        }
        if let ReadValue::MvReg { context, .. } = value {
            self.clients[read.client]
                .contexts
                .insert(read.key.clone(), context);
        }
        self.client_done(read.client);
    }

    fn reflects(&self, write: &WriteRef, value: &ReadValue) -> bool {
        let key = &write.key;
        match value {
            ReadValue::Lww { stamp, .. } => {
                let writes = &self.log.lww[key];
                lww_reflects(writes, &writes[write.index].stamp, stamp.as_ref())
            }
            ReadValue::MvReg { siblings, context } => {
                let writes = &self.log.mvreg[key];
                let siblings: Vec<Vec<u8>> = siblings.iter().map(|s| s.to_vec()).collect();
                mv_reflects(writes, &writes[write.index], &siblings, &context.0)
            }
            ReadValue::Set { members, .. } => {
                let writes = &self.log.set[key];
                let members: Vec<Vec<u8>> = members.iter().map(|m| m.to_vec()).collect();
                set_reflects(writes, &writes[write.index], &members)
            }
            ReadValue::Counter(_) => true,
        }
    }
}

fn push<T>(log: &mut std::collections::BTreeMap<Bytes, Vec<T>>, key: Bytes, write: T) -> usize {
    let writes = log.entry(key).or_default();
    writes.push(write);
    writes.len() - 1
}
