//! What a data client does next: the operation mix, over the keyspaces the admin client
//! has made live, and where each request goes first.

use super::{Active, Context, DataClient, Send, Work};
use super::{EVENTUAL_KEYS, OPERATION_DEADLINE, READ_EXPECTED_MAX, SET_POOL, STRONG_KEYS};
use crate::eventual::{SessionToken, ValueType, WriteLevel};
use crate::protocol::{ClientRequest, KeyspaceMode, Operation, ReadLevel};
use crate::sim::history::{self, Call};
use crate::sim::node::oplog::{EventualLog, Slot, WriteRef};
use crate::sim::session::Ticket;
use crate::types::{LogIndex, NodeId};
use bytes::Bytes;
use std::collections::VecDeque;

impl DataClient {
    /// The liveness phase: one linearizable read per strong key (this client's share of
    /// them), then the client stops.
    pub(super) fn final_read(&mut self, cx: &mut Context<'_>) -> Vec<Send> {
        if self.final_reads.is_none() {
            let mut keys = VecDeque::new();
            let mut n = 0;
            for (name, mode, _) in cx.catalog.live() {
                if !matches!(mode, KeyspaceMode::Strong | KeyspaceMode::Paxos) {
                    continue;
                }
                for key in 0..STRONG_KEYS {
                    if n % self.clients == self.index {
                        keys.push_back((name.to_string(), strong_key(key)));
                    }
                    n += 1;
                }
            }
            self.final_reads = Some(keys);
        }
        let next = self.final_reads.as_mut().and_then(VecDeque::pop_front);
        let Some((keyspace, key)) = next else {
            self.finished = true;
            return Vec::new();
        };
        let operation = Operation::Get { key: key.clone() };
        self.start_strong(cx, keyspace, key, operation, Some(ReadLevel::Linearizable));
        self.attempt(cx)
    }

    /// Draws the next operation on a live keyspace; false when there is none yet.
    pub(super) fn start_operation(&mut self, cx: &mut Context<'_>) -> bool {
        let live = cx.catalog.live();
        if live.is_empty() {
            return false;
        }
        // Base keyspaces carry most of the load; extras get enough to leave rows behind.
        let weights: Vec<u64> = live
            .iter()
            .map(|(_, _, base)| if *base { 3 } else { 2 })
            .collect();
        let mut roll = self.rng.below(weights.iter().sum());
        let mut chosen = 0;
        for (index, weight) in weights.iter().enumerate() {
            if roll < *weight {
                chosen = index;
                break;
            }
            roll -= weight;
        }
        let (name, mode, _) = live[chosen];
        let name = name.to_string();
        match mode {
            KeyspaceMode::Strong => self.draw_strong(cx, name),
            KeyspaceMode::Eventual(value_type) => self.draw_eventual(cx, name, value_type),
            KeyspaceMode::Paxos => self.draw_paxos(cx, name),
        }
        true
    }

    fn draw_strong(&mut self, cx: &mut Context<'_>, keyspace: String) {
        self.stats.strong_ops += 1;
        let key = strong_key(self.rng.below(STRONG_KEYS));
        let roll = self.rng.below(100);
        if roll < 45 {
            let level = match self.rng.below(100) {
                0..35 => ReadLevel::Lease,
                35..60 => ReadLevel::Linearizable,
                60..80 => ReadLevel::Follower,
                _ => ReadLevel::Stale,
            };
            let operation = Operation::Get { key: key.clone() };
            return self.start_strong(cx, keyspace, key, operation, Some(level));
        }
        self.written += 1;
        let value = Bytes::from(format!("c{}-v{}", self.index, self.written));
        let operation = match roll {
            45..=69 => Operation::Put {
                key: key.clone(),
                value,
                context: None,
            },
            70..=74 => Operation::Delete {
                key: key.clone(),
                context: None,
            },
            _ => {
                let slot = (keyspace.clone(), key.clone());
                let expected = self.revisions.get(&slot).copied().flatten();
                Operation::Cas {
                    key: key.clone(),
                    expected: expected.map(LogIndex),
                    value: (!self.rng.chance(0.15)).then_some(value),
                }
            }
        };
        self.start_strong(cx, keyspace, key, operation, None);
    }

    pub(super) fn start_strong(
        &mut self,
        cx: &mut Context<'_>,
        keyspace: String,
        key: Bytes,
        operation: Operation,
        read: Option<ReadLevel>,
    ) {
        let call = match (&operation, read) {
            (Operation::Put { value, .. }, _) => Call::Put {
                value: value.clone(),
            },
            (Operation::Delete { .. }, _) => Call::Delete,
            (
                Operation::Cas {
                    expected, value, ..
                },
                _,
            ) => Call::Cas {
                expected: expected.map(|revision| revision.0),
                value: value.clone(),
            },
            (_, level) => {
                let level = history_level(level.unwrap_or(ReadLevel::Linearizable));
                self.stats.reads_by_level[level as usize] += 1;
                Call::Get { level }
            }
        };
        let write = call.is_write();
        let history_key = Bytes::from(format!("{keyspace}/{}", String::from_utf8_lossy(&key)));
        let history = cx
            .history
            .invoke(self.index as u64, history_key, call, cx.now);
        let target = self.strong_target(&keyspace, read);
        let (request, ticket) = self.request(keyspace, operation, read, None, None);
        let deadline = Some(cx.now + OPERATION_DEADLINE).filter(|_| self.final_reads.is_none());
        self.active = Some(Active {
            work: Work::Strong {
                history,
                write,
                maybe_applied: false,
            },
            request,
            ticket,
            target,
            waiting: None,
            deadline,
            protected: false,
        });
    }

    /// Reads that need the leader go to the last hint, mostly; lease reads go elsewhere
    /// often enough that a node serving a lease it does not hold is caught.
    fn strong_target(&mut self, keyspace: &str, read: Option<ReadLevel>) -> NodeId {
        let leader_share = match read {
            None | Some(ReadLevel::Linearizable) => 0.9,
            Some(ReadLevel::Lease) => 0.5,
            Some(_) => 0.0,
        };
        match self.hints.get(keyspace) {
            Some(leader) if self.rng.chance(leader_share) => *leader,
            _ => *self.rng.pick(&self.nodes),
        }
    }

    fn request(
        &self,
        keyspace: String,
        operation: Operation,
        read: Option<ReadLevel>,
        write: Option<WriteLevel>,
        session: Option<SessionToken>,
    ) -> (ClientRequest, Ticket) {
        // Every data request takes a seq of the shared session (eventual keyspaces ignore
        // it); `attempt` fills in first_unacked and opens_session as each attempt leaves.
        let ticket = self.sessions.begin();
        let request = ClientRequest {
            client: ticket.client(),
            seq: ticket.seq(),
            first_unacked: 0,
            opens_session: false,
            keyspace,
            operation,
            read,
            write,
            session,
            written_at: None,
        };
        (request, ticket)
    }

    fn draw_eventual(&mut self, cx: &mut Context<'_>, keyspace: String, value_type: ValueType) {
        self.stats.eventual_ops += 1;
        let key = Bytes::from(format!("e{}", self.rng.below(EVENTUAL_KEYS)));
        let slot = (keyspace.clone(), key.clone());
        let read_share = match value_type {
            ValueType::Counter => 0.3,
            ValueType::Set => 0.35,
            _ => 0.4,
        };
        if self.rng.chance(read_share) {
            return self.start_eventual_read(cx, slot);
        }
        self.written += 1;
        let (operation, write) = match value_type {
            ValueType::Counter => {
                let by = *self.rng.pick(&[-3, -1, 1, 2, 5]);
                let write = cx.oplog.counter_add(slot, by);
                (Operation::Add { key, by }, write)
            }
            ValueType::Set if self.rng.chance(0.3) => {
                let member = Bytes::from_static(self.rng.pick(&SET_POOL).as_bytes());
                let write = cx.oplog.set_remove(slot, &member);
                let members = vec![member];
                let context = None;
                let remove = Operation::SetRemove {
                    key,
                    members,
                    context,
                };
                (remove, write)
            }
            ValueType::Set => {
                // Half the adds use a fresh member nobody removes: their loss is never
                // excused.
                let member = if self.rng.chance(0.5) {
                    Bytes::from(format!("c{}-m{}", self.index, self.written))
                } else {
                    Bytes::from_static(self.rng.pick(&SET_POOL).as_bytes())
                };
                let write = cx.oplog.set_add(slot, &member);
                let members = vec![member];
                (Operation::SetAdd { key, members }, write)
            }
            _ => {
                let value = Bytes::from(format!("c{}-v{}", self.index, self.written));
                let write = cx.oplog.lww_put(slot, &value);
                let operation = Operation::Put {
                    key,
                    value,
                    context: None,
                };
                (operation, write)
            }
        };
        let level = match self.rng.below(10) {
            0..7 => WriteLevel::Local,
            7..9 => WriteLevel::Quorum,
            _ => WriteLevel::All,
        };
        let (request, ticket) = self.request(keyspace, operation, None, Some(level), None);
        let target = self.eventual_target();
        self.active = Some(Active {
            work: Work::EventualWrite {
                write,
                quorum: level != WriteLevel::Local,
            },
            request,
            ticket,
            target,
            waiting: None,
            deadline: None,
            protected: false,
        });
    }

    fn eventual_target(&mut self) -> NodeId {
        if self.rng.chance(0.7) {
            self.home
        } else {
            *self.rng.pick(&self.nodes)
        }
    }

    fn start_eventual_read(&mut self, cx: &mut Context<'_>, slot: Slot) {
        let token = self.tokens.get(&slot).cloned();
        let (level, session, label, expected) = match (self.rng.below(4), token) {
            (0, Some((token, write))) => (ReadLevel::Session, Some(token), "session", vec![write]),
            (1, _) => {
                let expected = quorum_expected(cx.oplog, &slot);
                (ReadLevel::Quorum, None, "quorum", expected)
            }
            _ => (ReadLevel::Local, None, "local", Vec::new()),
        };
        let (keyspace, key) = slot.clone();
        let operation = Operation::Get { key };
        let (request, ticket) = self.request(keyspace, operation, Some(level), None, session);
        let target = self.eventual_target();
        self.active = Some(Active {
            work: Work::EventualRead {
                slot,
                level: label,
                expected,
            },
            request,
            ticket,
            target,
            waiting: None,
            deadline: None,
            protected: false,
        });
    }
}

/// The writes acknowledged at `quorum` or `all` on `slot` so far (the latest few).
fn quorum_expected(oplog: &EventualLog, slot: &Slot) -> Vec<WriteRef> {
    let mut expected: Vec<WriteRef> = Vec::new();
    if let Some(puts) = oplog.lww.get(slot) {
        expected.extend(
            (0..puts.len())
                .filter(|index| oplog.quorum_acked.contains(&puts[*index].id))
                .map(|index| WriteRef::Lww(slot.clone(), index)),
        );
    }
    if let Some(writes) = oplog.sets.get(slot) {
        expected.extend(
            (0..writes.len())
                .map(|index| WriteRef::Set(slot.clone(), index))
                .filter(|write| oplog.quorum_acked.contains(&oplog.write_id(write))),
        );
    }
    let skip = expected.len().saturating_sub(READ_EXPECTED_MAX);
    expected.drain(..skip);
    expected
}

pub(super) fn strong_key(index: u64) -> Bytes {
    Bytes::from(format!("k{index}"))
}

fn history_level(level: ReadLevel) -> history::ReadPath {
    match level {
        ReadLevel::Lease => history::ReadPath::Lease,
        ReadLevel::Follower => history::ReadPath::Follower,
        ReadLevel::Stale => history::ReadPath::Stale,
        _ => history::ReadPath::Linearizable,
    }
}
