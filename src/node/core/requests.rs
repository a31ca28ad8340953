//! Data requests: from a client's [`ClientRequest`] to a core and back to a receipt.
//!
//! Strong keyspaces go through their [`Replica`](crate::strong::Replica): writes and scans
//! through the log, gets at the requested read level. Eventual keyspaces go through their
//! engine. Either way the request waits in the core's [`WaitTable`](super::waiting) under a
//! tag until its core completes it, and is answered with what was actually served.
//!
//! A request naming a keyspace this node does not run is not refused at once: the client may
//! have seen it created through a node that applied the create first. It waits for a read
//! index of group 0 (the catalog), applied and reconciled here, and is then routed again:
//! served if the keyspace now runs here, `UnknownKeyspace` if not, `Unavailable` if the
//! catalog cannot be read. It keeps the deadline it arrived with.

use super::catalog::{self, CATALOG_GROUP};
use super::translate::{
    client_stamp, command_error, eventual_ops, outcome_answer, read_error, strong_command,
    write_error,
};
use super::waiting::{EventualWait, Waiting};
use super::{NodeCore, ReplyTo};
use crate::eventual::{self, Event, HlcTimestamp, RequestId, SessionToken, WriteLevel};
use crate::protocol::admin::FromNode;
use crate::protocol::{
    Answer, ClientError, ClientRequest, ClientResponse, KeyspaceMode, Operation, Position,
    ReadLevel, Receipt, Served, UnavailableReason, check_request,
};
use crate::raft::Role;
use crate::strong::{self, Completion, Request};
use crate::types::{GroupId, Instant, KeyspaceId, LogIndex, NodeId, WallMillis};

/// A data request's result, in its frame.
fn data_answer(result: Result<(Answer, Receipt), ClientError>) -> FromNode {
    FromNode::Data(ClientResponse { result })
}

impl NodeCore {
    /// Starts `request` on its keyspace's core, to be answered by `deadline`. A keyspace this
    /// node does not run is looked up in the catalog first (unless `looked_up` already):
    /// the client may have seen it created through another node that applied the create
    /// before this one did.
    pub(super) fn route(
        &mut self,
        request: ClientRequest,
        reply: ReplyTo,
        deadline: Instant,
        looked_up: bool,
    ) {
        let Some(&(id, mode)) = self.names.get(&request.keyspace) else {
            // A name no keyspace can have needs no look-up.
            if looked_up || catalog::check_name(&request.keyspace).is_err() {
                let name = request.keyspace.clone();
                self.answer(
                    reply,
                    FromNode::data_error(ClientError::UnknownKeyspace { name }),
                );
            } else {
                self.look_up(request, reply, deadline);
            }
            return;
        };
        if let Err(error) = check_request(&request, mode) {
            self.answer(reply, FromNode::data_error(error));
            return;
        }
        if let Operation::Watch { .. } = request.operation {
            self.watch_request(id, request, reply, deadline);
            return;
        }
        match mode {
            KeyspaceMode::Strong => self.strong_request(GroupId(id.0), request, reply, deadline),
            KeyspaceMode::Eventual(_) => self.eventual_request(id, request, reply, deadline),
            KeyspaceMode::Paxos => self.paxos_request(id, request, reply, deadline),
        }
    }

    /// Reads the catalog at least as new as anything a client has seen: a read index through
    /// group 0 (from its leader, served here once applied, as a follower read), and the
    /// catalog reconciled up to it. `complete_strong` then routes the request again.
    fn look_up(&mut self, request: ClientRequest, reply: ReplyTo, deadline: Instant) {
        let key = catalog::keyspace_key(&request.keyspace);
        self.read_catalog(Waiting::Lookup(Box::new(request)), reply, deadline, key);
    }

    /// Makes `waiting` wait for a read index of group 0, applied here; `complete_strong`
    /// takes it up from there.
    pub(super) fn read_catalog(
        &mut self,
        waiting: Waiting,
        reply: ReplyTo,
        deadline: Instant,
        key: bytes::Bytes,
    ) {
        let now = self.now;
        let tag = self.register(reply, None, waiting, deadline);
        let replica = &mut self
            .groups
            .get_mut(&CATALOG_GROUP)
            .expect("invariant: group 0 always runs")
            .replica;
        if let Some(completion) = replica.read(now, tag, strong::ReadMode::Follower, key) {
            self.complete_strong(CATALOG_GROUP, completion);
        }
    }

    /// Why a catalog look-up did not finish: without a catalog read this node cannot tell
    /// whether the keyspace exists, so it says it is unavailable rather than unknown.
    fn look_up_error(&self, answer: strong::Answer) -> ClientError {
        match answer {
            strong::Answer::Refused { .. } => self.refusal(CATALOG_GROUP, None),
            other => self.strong_error(CATALOG_GROUP, other),
        }
    }

    fn strong_request(
        &mut self,
        group: GroupId,
        request: ClientRequest,
        reply: ReplyTo,
        deadline: Instant,
    ) {
        let now = self.now;
        let level = request.read.unwrap_or(ReadLevel::Linearizable);
        let (served, write) = match &request.operation {
            Operation::Get { .. } => (Served::Read(level), false),
            // Scans go through the log (or read the local state when stale is asked).
            Operation::Scan { .. } if level == ReadLevel::Stale => (Served::Read(level), false),
            Operation::Scan { .. } => (Served::Read(ReadLevel::Linearizable), false),
            _ => (Served::Committed, true),
        };
        let keyspace = Some(KeyspaceId(group.0));
        let waiting = Waiting::Strong { served, write };
        let tag = self.register(reply, keyspace, waiting, deadline);
        let Some(keyspace) = self.groups.get_mut(&group) else {
            return;
        };
        let replica = &mut keyspace.replica;
        let done = match request.operation {
            Operation::Get { key } => {
                let level = match level {
                    // The planted bug serves a lease read from whatever this node holds.
                    ReadLevel::Lease if self.config.planted(super::NodeBug::LeaseReadStale) => {
                        strong::ReadMode::Stale
                    }
                    ReadLevel::Lease => strong::ReadMode::Lease,
                    ReadLevel::Follower => strong::ReadMode::Follower,
                    ReadLevel::Stale => strong::ReadMode::Stale,
                    _ => strong::ReadMode::Linearizable,
                };
                replica.read(now, tag, level, key)
            }
            Operation::Scan {
                prefix,
                limit,
                after,
            } if level == ReadLevel::Stale => {
                let answer = replica.scan_now(&prefix, after.as_deref(), limit);
                Some(Completion { tag, answer })
            }
            operation => {
                let command = strong_command(operation);
                let request = Request {
                    client: request.client,
                    seq: request.seq,
                    first_unacked: request.first_unacked,
                    opens_session: request.opens_session,
                    proposed_at: WallMillis(0),
                    command,
                };
                let proposal = self.next_proposal();
                let replica = &mut self
                    .groups
                    .get_mut(&group)
                    .expect("looked up above")
                    .replica;
                replica
                    .submit(now, self.wall, proposal, tag, &request)
                    .err()
            }
        };
        if let Some(completion) = done {
            self.complete_strong(group, completion);
        }
    }

    /// Answers a strong request (or a catalog change) its replica finished.
    pub(super) fn complete_strong(&mut self, group: GroupId, completion: Completion<u64>) {
        let Some(pending) = self.waiting.remove(completion.tag) else {
            return; // Timed out earlier: the client already has its answer.
        };
        let served = match pending.waiting {
            Waiting::Strong { served, .. } => served,
            Waiting::Catalog(change) => {
                let result = self.catalog_result(group, change, completion.answer);
                self.answer(pending.reply, FromNode::Admin(result));
                return;
            }
            Waiting::Lookup(request) => {
                match completion.answer {
                    // The catalog is applied (and reconciled) up to the read index.
                    strong::Answer::Read { .. } => {
                        self.route(*request, pending.reply, pending.deadline, true);
                    }
                    other => {
                        let error = self.look_up_error(other);
                        self.answer(pending.reply, FromNode::data_error(error));
                    }
                }
                return;
            }
            Waiting::Admin(request) => {
                match completion.answer {
                    strong::Answer::Read { .. } => {
                        self.checked_admin(*request, pending.reply, pending.deadline);
                    }
                    other => {
                        let error = self.look_up_error(other);
                        self.answer(pending.reply, FromNode::Admin(Err(error.into())));
                    }
                }
                return;
            }
            Waiting::Backup => {
                let pending = super::waiting::Pending {
                    waiting: Waiting::Backup,
                    ..pending
                };
                self.backup_read_index(group, pending, completion.answer);
                return;
            }
            Waiting::Eventual(_) | Waiting::Watch(_) => return,
        };
        let result = self.strong_result(group, served, completion.answer);
        self.answer(pending.reply, data_answer(result));
    }

    fn strong_result(
        &self,
        group: GroupId,
        served: Served,
        answer: strong::Answer,
    ) -> Result<(Answer, Receipt), ClientError> {
        let (answer, applied) = match answer {
            strong::Answer::Read { current, applied } => (Answer::Strong(current), Some(applied)),
            strong::Answer::Written(Ok(outcome)) => outcome_answer(outcome),
            other => return Err(self.strong_error(group, other)),
        };
        Ok((answer, self.strong_receipt(group, served, applied)))
    }

    /// Maps a replica's refusal to what a client can act on.
    pub(super) fn strong_error(&self, group: GroupId, answer: strong::Answer) -> ClientError {
        match answer {
            strong::Answer::Refused { leader_hint } => self.refusal(group, leader_hint),
            strong::Answer::Busy => ClientError::Backpressure,
            strong::Answer::Unknown => ClientError::Timeout {
                may_have_applied: true,
            },
            strong::Answer::Written(Err(error)) => command_error(error),
            strong::Answer::Unencodable
            | strong::Answer::Written(Ok(_))
            | strong::Answer::Read { .. } => ClientError::Malformed {
                reason: "the request cannot be encoded into the log".to_string(),
            },
        }
    }

    /// Why this node did not serve a request that needs the leader.
    pub(super) fn refusal(&self, group: GroupId, leader_hint: Option<NodeId>) -> ClientError {
        if let Some(leader) = leader_hint.filter(|leader| *leader != self.config.id) {
            return ClientError::NotLeader {
                leader_hint: Some(leader),
                leader_addr: self.members.get(&leader).cloned(),
            };
        }
        let role = self.groups.get(&group).map(|g| g.replica.status().role);
        let reason = if role == Some(Role::Leader) {
            UnavailableReason::NoQuorum
        } else if !self.majority_reachable() {
            UnavailableReason::MinoritySide
        } else {
            UnavailableReason::NoLeader
        };
        ClientError::Unavailable { reason }
    }

    pub(super) fn strong_receipt(
        &self,
        group: GroupId,
        served: Served,
        applied: Option<LogIndex>,
    ) -> Receipt {
        // The highest commit this node knows of (a follower learns it from heartbeats), so
        // a stale or follower read can say how far behind it served.
        let (term, commit, machine_applied) = self
            .groups
            .get(&group)
            .map(|g| {
                let stale = g.replica.raft().stale_read_status();
                (g.replica.status().term, stale.known_commit, stale.applied)
            })
            .unwrap_or_default();
        let applied = applied.unwrap_or(machine_applied);
        let behind = match served {
            Served::Read(ReadLevel::Stale | ReadLevel::Follower) => {
                Some(commit.0.saturating_sub(applied.0))
            }
            _ => None,
        };
        Receipt {
            level: served,
            node: self.config.id,
            position: Position::Raft {
                term,
                applied,
                known_commit: commit,
            },
            behind,
        }
    }

    fn eventual_request(
        &mut self,
        id: KeyspaceId,
        request: ClientRequest,
        reply: ReplyTo,
        deadline: Instant,
    ) {
        let now = self.now;
        let wall = self.wall;
        let level = request.write.unwrap_or(WriteLevel::Local);
        if let Operation::Get { key } = request.operation {
            let read = request.read.unwrap_or(ReadLevel::Local);
            let mode = match (read, request.session) {
                (ReadLevel::Session, Some(token)) => eventual::ReadMode::Session(token),
                (ReadLevel::Quorum, _) => eventual::ReadMode::Quorum,
                _ => eventual::ReadMode::Local,
            };
            let wait = EventualWait::new(Served::Read(read), 0);
            let tag = self.register(reply, Some(id), Waiting::Eventual(wait), deadline);
            let engine = &mut self
                .eventual
                .get_mut(&id)
                .expect("named keyspace runs")
                .engine;
            if let Err(error) = engine.read(now, RequestId(tag), key, mode) {
                self.fail(tag, read_error(error));
            }
            return;
        }
        let value_type = self.eventual[&id].engine.config().value_type;
        let at = request
            .written_at
            .map(|time| client_stamp(time, request.client));
        let ops = eventual_ops(request.operation, value_type);
        let count = u32::try_from(ops.len()).unwrap_or(u32::MAX);
        let wait = EventualWait::new(Served::Write(level), count);
        let tag = self.register(reply, Some(id), Waiting::Eventual(wait), deadline);
        let engine = &mut self
            .eventual
            .get_mut(&id)
            .expect("named keyspace runs")
            .engine;
        let mut started = 0;
        let mut refused = None;
        for (key, op) in ops {
            let request = RequestId(tag);
            if let Err(error) = engine.local_write_at(now, wall, request, key, op, level, at) {
                refused = Some(write_error(error));
                break;
            }
            started += 1;
        }
        if let Some(error) = refused {
            self.refuse_rest(tag, started, error);
        }
    }

    /// A part of a multi-part write was refused: the parts already started still complete,
    /// and the request answers with the error once they have (at once if none started).
    fn refuse_rest(&mut self, tag: u64, started: u32, error: ClientError) {
        if started == 0 {
            self.fail(tag, error);
            return;
        }
        if let Some(Waiting::Eventual(wait)) = self.waiting.get_mut(tag).map(|p| &mut p.waiting) {
            wait.writes_left = started;
            wait.failed = Some(error);
        }
    }

    /// Answers (or counts down) the request an engine event belongs to.
    pub(super) fn complete_eventual(&mut self, id: KeyspaceId, event: Event) {
        let tag = match &event {
            Event::WriteAcked { id, .. }
            | Event::WriteFailed { id, .. }
            | Event::ReadDone { id, .. }
            | Event::ReadFailed { id, .. } => id.0,
        };
        let Some(pending) = self.waiting.get_mut(tag) else {
            return;
        };
        let Waiting::Eventual(wait) = &mut pending.waiting else {
            return;
        };
        match event {
            Event::WriteAcked {
                token, acks, stamp, ..
            } => {
                let acks = u32::try_from(acks).unwrap_or(u32::MAX);
                wait.acks = Some(wait.acks.map_or(acks, |a| a.min(acks)));
                wait.token = Some(token);
                wait.stamp = stamp.or(wait.stamp);
                wait.writes_left = wait.writes_left.saturating_sub(1);
            }
            Event::WriteFailed { token, error, .. } => {
                wait.token = Some(token);
                wait.failed.get_or_insert(write_error(error));
                wait.writes_left = wait.writes_left.saturating_sub(1);
            }
            Event::ReadDone { value, .. } => {
                let served = wait.served;
                let receipt = self.eventual_receipt(id, served, None, None);
                let pending = self.waiting.remove(tag).expect("looked up above");
                let result = Ok((Answer::Eventual(value), receipt));
                self.answer(pending.reply, data_answer(result));
                return;
            }
            Event::ReadFailed { error, .. } => {
                self.fail(tag, read_error(error));
                return;
            }
        }
        if wait.writes_left == 0 {
            self.finish_eventual_at(id, tag);
        }
    }

    fn finish_eventual_at(&mut self, id: KeyspaceId, tag: u64) {
        let Some(pending) = self.waiting.remove(tag) else {
            return;
        };
        let Waiting::Eventual(wait) = pending.waiting else {
            return;
        };
        let result = match wait.failed {
            Some(error) => Err(error),
            None => {
                let receipt = self.eventual_receipt(id, wait.served, wait.token, wait.stamp);
                let acks = wait.acks.unwrap_or(1);
                Ok((Answer::Acknowledged { acks }, receipt))
            }
        };
        self.answer(pending.reply, data_answer(result));
    }

    pub(super) fn eventual_receipt(
        &self,
        id: KeyspaceId,
        served: Served,
        token: Option<SessionToken>,
        stamp: Option<HlcTimestamp>,
    ) -> Receipt {
        let behind = match served {
            Served::Read(ReadLevel::Local) => self
                .eventual
                .get(&id)
                .map(|keyspace| keyspace.engine.writes_known_missing()),
            _ => None,
        };
        let vector = self
            .eventual
            .get(&id)
            .map(|keyspace| {
                let knowledge = &keyspace.engine.durable_meta().knowledge;
                knowledge
                    .iter()
                    .map(|dot| (*dot.actor, dot.counter))
                    .collect()
            })
            .unwrap_or_default();
        Receipt {
            level: served,
            node: self.config.id,
            position: Position::Eventual {
                token,
                stamp,
                vector,
            },
            behind,
        }
    }
}
