//! Admin requests on the node: catalog changes through group 0, listings, status. Fault
//! rules belong to the transport, so the shell answers those.

use super::catalog::{self, CATALOG_GROUP};
use super::waiting::{CatalogChange, Waiting};
use super::{NodeCore, ReplyTo};
use crate::eventual::Liveness;
use crate::protocol::ClientError;
use crate::protocol::admin::{
    AdminAnswer, AdminError, AdminRequest, EventualStatus, FromNode, GroupStatus, KeyspaceInfo,
    MemberInfo, NodeStatus, RaftRole,
};
use crate::raft::Role;
use crate::strong::{self, Command, Outcome, Request};
use crate::types::{GroupId, Instant, WallMillis};

impl NodeCore {
    pub(super) fn admin_request(&mut self, request: AdminRequest, reply: ReplyTo) {
        // A name no keyspace can have is refused before anything waits.
        if let AdminRequest::CreateKeyspace { name, .. } = &request
            && let Err(error) = catalog::check_name(name)
        {
            return self.answer(reply, FromNode::Admin(Err(error)));
        }
        let result = match request {
            // Whether the keyspace exists is decided as the delete applies.
            AdminRequest::DropKeyspace { .. } => {
                let deadline = self.now + self.config.request_wait_max;
                return self.checked_admin(request, reply, deadline);
            }
            AdminRequest::CreateKeyspace { .. }
            | AdminRequest::AddMember { .. }
            | AdminRequest::RemoveMember { .. } => {
                // Checked against the catalog as new as a read index of group 0: a node that
                // lags (or sits on a minority side) must not answer `UnknownMember` for a
                // member the client saw added.
                let deadline = self.now + self.config.request_wait_max;
                let waiting = Waiting::Admin(Box::new(request));
                let key = catalog::keyspace_key("");
                return self.read_catalog(waiting, reply, deadline, key);
            }
            AdminRequest::ListKeyspaces => Ok(AdminAnswer::Keyspaces(self.keyspace_list())),
            AdminRequest::Members => Ok(AdminAnswer::Members(self.member_list())),
            AdminRequest::SetFaults(_) | AdminRequest::Faults => {
                let reason = "fault rules belong to the node's transport".to_string();
                Err(ClientError::Malformed { reason }.into())
            }
            AdminRequest::Status => Ok(AdminAnswer::Status(Box::new(self.status()))),
            AdminRequest::BackupOpen { .. }
            | AdminRequest::BackupRead { .. }
            | AdminRequest::RestoreKeyspace { .. }
            | AdminRequest::RestoreChunk { .. } => return self.backup_request(request, reply),
        };
        self.answer(reply, FromNode::Admin(result));
    }

    /// Checks a catalog change against the catalog, now applied up to a read index taken
    /// after the request arrived, and proposes it. Whether a keyspace exists is decided when
    /// the change applies (a cas or a delete), so two creates of one name cannot both win.
    pub(super) fn checked_admin(
        &mut self,
        request: AdminRequest,
        reply: ReplyTo,
        deadline: Instant,
    ) {
        let (command, change) = match self.admin_change(request) {
            Ok(change) => change,
            Err(error) => return self.answer(reply, FromNode::Admin(Err(error))),
        };
        self.propose_catalog(command, change, reply, deadline);
    }

    /// The catalog command for a change, or why it is refused.
    fn admin_change(&self, request: AdminRequest) -> Result<(Command, CatalogChange), AdminError> {
        match request {
            AdminRequest::CreateKeyspace { .. }
                if self.names.len() >= catalog::KEYSPACES_MAX as usize =>
            {
                Err(AdminError::TooManyKeyspaces {
                    max: catalog::KEYSPACES_MAX,
                })
            }
            AdminRequest::CreateKeyspace { name, mode } => {
                catalog::check_name(&name)?;
                let voters = self.members.keys().copied().collect();
                let command = catalog::create_command(&name, mode, voters);
                Ok((command, CatalogChange::Create { name }))
            }
            AdminRequest::DropKeyspace { name } => {
                let command = catalog::drop_command(&name);
                Ok((command, CatalogChange::Drop { name }))
            }
            AdminRequest::AddMember { id, .. } if self.members.contains_key(&id) => {
                Err(AdminError::MemberExists { id })
            }
            // Every eventual engine keeps per-member vectors, bounded by this.
            AdminRequest::AddMember { .. }
                if self.members.len() >= crate::eventual::MEMBERS_MAX =>
            {
                Err(AdminError::TooManyMembers {
                    max: crate::eventual::MEMBERS_MAX,
                })
            }
            // The shell checked that the address resolves (that is IO).
            AdminRequest::AddMember { id, address } => {
                let command = catalog::member_add_command(id, &address);
                Ok((command, CatalogChange::Member))
            }
            AdminRequest::RemoveMember { id } if !self.members.contains_key(&id) => {
                Err(AdminError::UnknownMember { id })
            }
            AdminRequest::RemoveMember { id } if self.members.len() == 1 => {
                Err(AdminError::LastMember { id })
            }
            AdminRequest::RemoveMember { id } => {
                let command = catalog::member_remove_command(id);
                Ok((command, CatalogChange::Member))
            }
            AdminRequest::RestoreKeyspace {
                name,
                mode,
                revision,
                restore,
            } => self.restore_change(name, mode, revision, restore),
            other => {
                let reason = format!("{other:?} changes nothing in the catalog");
                Err(ClientError::Malformed { reason }.into())
            }
        }
    }

    fn propose_catalog(
        &mut self,
        command: Command,
        change: CatalogChange,
        reply: ReplyTo,
        deadline: Instant,
    ) {
        let now = self.now;
        let tag = self.register(reply, None, Waiting::Catalog(change), deadline);
        // The node never resends a catalog change under its seq (a lost one is reported
        // unknown), so each acknowledges the ones before it, and any may open the session.
        let request = Request {
            client: self.admin_client,
            seq: self.next_admin_seq,
            first_unacked: self.next_admin_seq,
            opens_session: true,
            proposed_at: WallMillis(0),
            command,
        };
        self.next_admin_seq += 1;
        let proposal = self.next_proposal();
        let replica = &mut self
            .groups
            .get_mut(&CATALOG_GROUP)
            .expect("invariant: group 0 always runs")
            .replica;
        if let Err(completion) = replica.submit(now, self.wall, proposal, tag, &request) {
            self.complete_strong(CATALOG_GROUP, completion);
        }
    }

    /// What a committed (or refused) catalog change means to the client that asked.
    pub(super) fn catalog_result(
        &self,
        group: GroupId,
        change: CatalogChange,
        answer: strong::Answer,
    ) -> Result<AdminAnswer, AdminError> {
        use strong::Answer::Written;
        match (change, answer) {
            (CatalogChange::Create { name }, Written(Ok(Outcome::Cas { succeeded, .. }))) => {
                if succeeded {
                    Ok(AdminAnswer::Done)
                } else {
                    Err(AdminError::KeyspaceExists { name })
                }
            }
            (CatalogChange::Drop { name }, Written(Ok(Outcome::Delete { existed, .. }))) => {
                if existed {
                    Ok(AdminAnswer::Done)
                } else {
                    Err(AdminError::UnknownKeyspace { name })
                }
            }
            (CatalogChange::Member, Written(Ok(Outcome::Put { .. }))) => Ok(AdminAnswer::Done),
            (_, answer) => Err(self.strong_error(group, answer).into()),
        }
    }

    fn keyspace_list(&self) -> Vec<KeyspaceInfo> {
        let machine = self.groups[&CATALOG_GROUP].replica.machine();
        catalog::keyspaces(machine)
            .into_values()
            .map(|entry| entry.info)
            .collect()
    }

    fn member_list(&self) -> Vec<MemberInfo> {
        self.members
            .iter()
            .map(|(id, address)| MemberInfo {
                id: *id,
                address: address.clone(),
            })
            .collect()
    }

    /// This node's view of every group and keyspace it runs (`faults` left empty: they are
    /// the shell's).
    pub fn status(&self) -> NodeStatus {
        let now = self.now;
        let strong = self
            .groups
            .iter()
            .map(|(group, keyspace)| {
                let status = keyspace.replica.status();
                GroupStatus {
                    keyspace: keyspace.name.clone(),
                    group: *group,
                    role: raft_role(status.role),
                    term: status.term,
                    leader: status.leader,
                    commit: status.commit,
                    applied: status.applied,
                    last_index: status.last_index,
                    snapshot_index: status.snapshot_index,
                    voters: status.membership.voters.iter().copied().collect(),
                }
            })
            .collect();
        let eventual = self
            .eventual
            .iter()
            .map(|(id, keyspace)| {
                let engine = &keyspace.engine;
                let peers = engine
                    .config()
                    .members
                    .iter()
                    .filter(|member| **member != self.config.id)
                    .map(|peer| {
                        (
                            *peer,
                            liveness_name(engine.liveness(*peer, now)).to_string(),
                        )
                    })
                    .collect();
                EventualStatus {
                    keyspace: keyspace.name.clone(),
                    id: *id,
                    keys: engine.key_count(),
                    live_keys: engine.live_key_count(),
                    merkle_root: engine.merkle_root(),
                    state_digest: engine.state_digest(),
                    last_round_ms_ago: keyspace
                        .last_round_at
                        .map(|at| now.saturating_duration_since(at).as_millis() as u64),
                    rounds: engine.stats().rounds,
                    pending_writes: engine.pending_writes() as u64,
                    tombstones: engine.tombstones_pending() as u64,
                    states_from_future: engine.stats().states_from_future,
                    peers,
                }
            })
            .collect();
        NodeStatus {
            node: self.config.id,
            address: self.config.address.clone(),
            uptime_ms: now.saturating_duration_since(self.booted_at).as_millis() as u64,
            strong,
            eventual,
            // The shell fills in its transport's rules and its own timings.
            faults: Default::default(),
            driver: Default::default(),
            paxos: self.paxos_status(),
        }
    }
}

fn raft_role(role: Role) -> RaftRole {
    match role {
        Role::Follower => RaftRole::Follower,
        Role::PreCandidate => RaftRole::PreCandidate,
        Role::Candidate => RaftRole::Candidate,
        Role::Leader => RaftRole::Leader,
    }
}

fn liveness_name(liveness: Liveness) -> &'static str {
    match liveness {
        Liveness::Alive => "alive",
        Liveness::Suspect => "suspect",
        Liveness::Down => "down",
    }
}
