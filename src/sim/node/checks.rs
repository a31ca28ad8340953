//! The end of a run: the liveness probe, the final reads, the end checks and the report.
//!
//! ```text
//!  Liveness ──(clients done, admin done, every member agrees on its keyspaces and their
//!             digests)──▶ Quiet ──(QUIET later)──▶ FinalReads ──(all answered)──▶ Done
//! ```
//!
//! The final reads go to every member's core directly (not through the network), one local
//! read per eventual key the clients wrote; their answers feed the convergence check and the
//! per-type checkers of the eventual simulator.

use super::catalog::Stage;
use super::core::ReplyTo;
use super::{CHECKER, LIVENESS_BOUND, Phase, Run};
use crate::eventual::{ReadValue, ValueType};
use crate::protocol::admin::{FromNode, ToNode};
use crate::protocol::{Answer, ClientRequest, KeyspaceMode, Operation, ReadLevel};
use crate::sim::SeedReport;
use crate::sim::eventual::checkers::{check_convergence, check_counter, check_lww, check_set};
use crate::sim::history::{Call, Operation as HistoryOp, ReadPath};
use crate::sim::linearizability::{STEPS_PER_KEY_DEFAULT, check_history};
use crate::strong::ClientId;
use crate::types::{KeyspaceId, NodeId};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The final reads must all be answered within this.
const FINAL_READS_MAX: Duration = Duration::from_secs(5);

/// The final reads in flight: (keyspace, key, node) for each reply.
#[derive(Debug, Default)]
pub(super) struct FinalReads {
    pub(super) asked: BTreeMap<ReplyTo, (String, Bytes, NodeId)>,
}

impl Run {
    /// Liveness: done when every client and the admin finished and every member holds the
    /// same keyspaces with the same eventual digests. A violation past the bound.
    pub(super) fn liveness_probe(&mut self, since: crate::types::Instant) {
        let clients_done = self.clients.iter().all(|client| client.finished)
            && self.banks.iter().all(|bank| bank.finished);
        let watched = self.watcher.caught_up(&self.history);
        if clients_done && watched && self.admin.finished() && self.converged() {
            self.converged_at = Some(self.now);
            self.phase = Phase::Quiet { since: self.now };
            self.watcher.stop();
            return;
        }
        if self.now <= since + LIVENESS_BOUND {
            return;
        }
        let stuck = self.clients.iter().filter(|c| !c.finished).count();
        let text = format!(
            "liveness: {LIVENESS_BOUND:?} after the faults stopped, {stuck} clients still \
             busy, watcher caught up: {watched}, admin {}, members agree: {}; {}",
            if self.admin.finished() {
                "done"
            } else {
                "busy"
            },
            self.converged(),
            self.cluster_line()
        );
        self.world.violation(text);
        self.phase = Phase::Done;
    }

    /// Whether every member is up and runs the same keyspaces, with equal eventual digests.
    fn converged(&self) -> bool {
        let mut views = self.members().into_iter().map(|id| {
            let status = self.hosts.get(&id).and_then(|host| host.status())?;
            let strong: BTreeSet<u64> = status.strong.iter().map(|g| g.group.0).collect();
            let eventual: BTreeMap<KeyspaceId, u64> = status
                .eventual
                .iter()
                .map(|e| (e.id, e.state_digest))
                .collect();
            let pending: u64 = status.eventual.iter().map(|e| e.pending_writes).sum();
            Some((strong, eventual, pending))
        });
        let Some(Some(first)) = views.next() else {
            return false;
        };
        first.2 == 0
            && views.all(|view| view.is_some_and(|v| v.0 == first.0 && v.1 == first.1 && v.2 == 0))
    }

    /// One line per member for a liveness report: its groups and their leaders.
    fn cluster_line(&self) -> String {
        let lines: Vec<String> = self
            .members()
            .into_iter()
            .map(|id| match self.hosts.get(&id).and_then(|h| h.status()) {
                None => format!("{id} down"),
                Some(status) => {
                    let groups: Vec<String> = status
                        .strong
                        .iter()
                        .map(|g| format!("{}:{}/t{}/c{}", g.keyspace, g.role, g.term.0, g.commit.0))
                        .collect();
                    let eventual: Vec<String> = status
                        .eventual
                        .iter()
                        .map(|e| {
                            format!("{}:{:x}/p{}", e.keyspace, e.state_digest, e.pending_writes)
                        })
                        .collect();
                    format!("{id} [{}] [{}]", groups.join(" "), eventual.join(" "))
                }
            })
            .collect();
        lines.join("; ")
    }

    /// Asks every member for every eventual key the clients wrote, in a keyspace that still
    /// exists.
    pub(super) fn start_final_reads(&mut self) {
        let slots: Vec<(String, Bytes)> = self
            .oplog
            .counters
            .keys()
            .chain(self.oplog.sets.keys())
            .chain(self.oplog.lww.keys())
            .filter(|(name, _)| self.catalog.stage(name) == Some(Stage::Live))
            .cloned()
            .collect();
        for id in self.members() {
            for (keyspace, key) in &slots {
                let request = ToNode::Data(ClientRequest {
                    client: ClientId(1),
                    seq: 0,
                    first_unacked: 0,
                    opens_session: false,
                    keyspace: keyspace.clone(),
                    operation: Operation::Get { key: key.clone() },
                    read: Some(ReadLevel::Local),
                    write: None,
                    session: None,
                    written_at: None,
                });
                let Some(host) = self.hosts.get_mut(&id) else {
                    continue;
                };
                let local = host.local(self.now);
                let reply = self.ledger.hand(id, CHECKER, 0, local, host.incarnation);
                self.final_reads
                    .asked
                    .insert(reply, (keyspace.clone(), key.clone(), id));
                host.on_client(self.now, reply, request, &mut self.world);
            }
        }
        self.dispatch_answers();
    }

    /// Whether the final reads are all in, or have had their time.
    pub(super) fn final_reads_done(&self, since: crate::types::Instant) -> bool {
        let answered = self
            .final_reads
            .asked
            .keys()
            .all(|reply| self.checker_answers.contains_key(reply));
        answered || self.now > since + FINAL_READS_MAX
    }

    /// The checks at the end of a run, on a quiet, healed cluster.
    pub(super) fn end_checks(&mut self) {
        let members = self.members();
        for id in &members {
            self.check_member(*id);
        }
        let reads = self.collect_final_reads();
        let watched = self.watcher.check(&self.history);
        self.world.violations.extend(watched);
        self.oplog.close();
        for (name, keyspace) in self.catalog.ever_live() {
            if keyspace.stage != Stage::Live {
                continue;
            }
            let KeyspaceMode::Eventual(value_type) = keyspace.mode else {
                continue;
            };
            let found = self.check_eventual_keyspace(name, value_type, &reads, &members);
            self.world.violations.extend(found);
        }
    }

    /// A member at the end: nothing waits inside it, and its store holds rows only of the
    /// keyspaces its catalog has.
    fn check_member(&mut self, id: NodeId) {
        let Some(host) = self.hosts.get(&id) else {
            return;
        };
        let (Some(core), Some(status)) = (host.core(), host.status()) else {
            self.world
                .violation(format!("liveness: {id} is down at the end"));
            return;
        };
        let waiting = core.waiting();
        let open = self.ledger.open_on(id);
        if waiting != 0 || open != 0 {
            self.world.violation(format!(
                "request-wait: at the end {id} has {waiting} requests waiting and {open} \
                 unanswered"
            ));
        }
        let mut known: BTreeSet<KeyspaceId> = status.eventual.iter().map(|e| e.id).collect();
        known.extend(status.strong.iter().map(|g| KeyspaceId(g.group.0)));
        known.extend(status.paxos.iter().map(|p| p.id));
        known.insert(KeyspaceId(0));
        let names: BTreeSet<&str> = status
            .strong
            .iter()
            .map(|g| g.keyspace.as_str())
            .chain(status.eventual.iter().map(|e| e.keyspace.as_str()))
            .chain(status.paxos.iter().map(|p| p.keyspace.as_str()))
            .collect();
        for (name, keyspace) in &self.catalog.keyspaces {
            if keyspace.stage == Stage::Dropped && names.contains(name.as_str()) {
                self.world
                    .violation(format!("catalog: {id} still runs {name}, dropped long ago"));
            }
        }
        match super::core::Durable::stored_keyspaces(host.store.as_ref()) {
            Ok(stored) => {
                let left: Vec<KeyspaceId> = stored
                    .into_iter()
                    .filter(|stored| !known.contains(stored))
                    .collect();
                if !left.is_empty() {
                    self.world.violation(format!(
                        "drop: {id}'s store still holds rows of keyspaces {left:?}, which its \
                         catalog no longer has (it runs {known:?})"
                    ));
                }
            }
            Err(error) => self
                .world
                .violation(format!("storage: {id} cannot list its keyspaces: {error}")),
        }
    }

    /// The final reads' answers: (keyspace, key) -> node -> value.
    fn collect_final_reads(&mut self) -> BTreeMap<(String, Bytes), BTreeMap<NodeId, ReadValue>> {
        let mut reads: BTreeMap<(String, Bytes), BTreeMap<NodeId, ReadValue>> = BTreeMap::new();
        let asked = std::mem::take(&mut self.final_reads.asked);
        for (reply, (keyspace, key, node)) in asked {
            match self.checker_answers.remove(&reply) {
                Some(FromNode::Data(response)) => match response.result {
                    Ok((Answer::Eventual(value), _)) => {
                        reads
                            .entry((keyspace, key))
                            .or_default()
                            .insert(node, value);
                    }
                    other => self.world.violation(format!(
                        "final read: {node} answered {keyspace}/{} with {other:?}",
                        String::from_utf8_lossy(&key)
                    )),
                },
                Some(other) => self
                    .world
                    .violation(format!("final read: {node} answered {other:?}")),
                None => self.world.violation(format!(
                    "final read: {node} never answered {keyspace}/{}",
                    String::from_utf8_lossy(&key)
                )),
            }
        }
        reads
    }

    /// Convergence across members, then every key against what the clients wrote.
    fn check_eventual_keyspace(
        &self,
        name: &str,
        value_type: ValueType,
        reads: &BTreeMap<(String, Bytes), BTreeMap<NodeId, ReadValue>>,
        members: &[NodeId],
    ) -> Vec<String> {
        let mut violations = Vec::new();
        let replicas: Vec<(NodeId, BTreeMap<Vec<u8>, ReadValue>, ())> = members
            .iter()
            .map(|node| {
                let values = reads
                    .iter()
                    .filter(|((keyspace, _), _)| keyspace == name)
                    .filter_map(|((_, key), by_node)| {
                        by_node.get(node).map(|value| (key.to_vec(), value.clone()))
                    })
                    .collect();
                (*node, values, ())
            })
            .collect();
        violations.extend(check_convergence(name, &replicas));
        let Some((_, values, _)) = replicas.first() else {
            return violations;
        };
        for (key, value) in values {
            let slot = (name.to_string(), Bytes::from(key.clone()));
            let shown = format!("{name}/{}", String::from_utf8_lossy(key));
            let found = match (value_type, value) {
                (ValueType::Counter, ReadValue::Counter(total)) => {
                    let writes = self
                        .oplog
                        .counters
                        .get(&slot)
                        .map_or(&[][..], Vec::as_slice);
                    check_counter(shown.as_bytes(), writes, i128::from(*total))
                }
                (ValueType::Set, ReadValue::Set { members, .. }) => {
                    let writes = self.oplog.sets.get(&slot).map_or(&[][..], Vec::as_slice);
                    let members: BTreeSet<Vec<u8>> = members.iter().map(|m| m.to_vec()).collect();
                    check_set(shown.as_bytes(), writes, &members)
                }
                (ValueType::Lww, ReadValue::Lww { value, stamp }) => {
                    let seen = value.as_deref().zip(*stamp);
                    let writes = self.oplog.lww_writes(&slot, seen);
                    let current = stamp.as_ref().map(|stamp| (value.as_deref(), stamp));
                    check_lww(shown.as_bytes(), &writes, current)
                }
                (_, other) => vec![format!("final read: {shown} read back as {other:?}")],
            };
            violations.extend(found);
        }
        violations
    }

    pub(super) fn report(&mut self) -> SeedReport {
        let excuse_lease = self.world.stats.jumps_beyond > 0;
        let include = |op: &HistoryOp| match op.call {
            Call::Get {
                level: ReadPath::Stale,
            } => false,
            Call::Get {
                level: ReadPath::Lease,
            } => !excuse_lease,
            _ => true,
        };
        let lin = check_history(&self.history, include, STEPS_PER_KEY_DEFAULT);
        let mut violations = std::mem::take(&mut self.world.violations);
        violations.extend(lin.violations.iter().cloned());
        let summary = self.summary(&lin, excuse_lease);
        SeedReport {
            seed: self.config.seed,
            violations,
            summary,
        }
    }

    fn summary(
        &self,
        lin: &crate::sim::linearizability::LinearizabilityReport,
        excuse_lease: bool,
    ) -> String {
        let (ok, indeterminate, failed) = self.history.counts();
        let [acked, maybe, _, refused] = self.oplog.tally();
        let stats = &self.world.stats;
        let net = self.world.peers.stats();
        let mut reads = [0u64; 4];
        let (mut retries, mut timeouts, mut unknown, mut expired) = (0, 0, 0, 0);
        for client in &self.clients {
            for (total, count) in reads.iter_mut().zip(client.stats.reads_by_level) {
                *total += count;
            }
            retries += client.stats.retries;
            timeouts += client.stats.timeouts;
            unknown += client.stats.unknown_keyspace;
            expired += client.stats.sessions_expired;
        }
        let mut bank = super::bank::BankStats::default();
        for client in &self.banks {
            let s = client.stats;
            bank.transfers += s.transfers;
            bank.audits += s.audits;
            bank.aborted += s.aborted;
            bank.unknown += s.unknown;
            bank.resolved += s.resolved;
        }
        format!(
            "node seed {} n={} clients={}: strong ok={ok} indeterminate={indeterminate} \
             failed={failed} reads(lin/lease/follower/stale)={}/{}/{}/{} retries={retries} \
             timeouts={timeouts} unknown-keyspace={unknown} sessions-expired={expired} | eventual acked={acked} \
             indeterminate={maybe} failed={refused} | watch polls={} events={} compacted={} \
             gaps={} | bank transfers={} audits={} aborted={} unknown={} resolved={} | \
             admin actions={} attempts={} spare={} | \
             faults: partitions={} crashes={} pauses={} jumps={} (beyond={}) | requests={} \
             answers={} commits={} spins={} | msgs sent={} delivered={} | converged {} | \
             sim {:.1}s | lin: {} keys {} ops {} inconclusive{}",
            self.config.seed,
            self.config.nodes,
            self.clients.len(),
            reads[0],
            reads[1],
            reads[2],
            reads[3],
            self.watcher.stats.polls,
            self.watcher.stats.events,
            self.watcher.stats.compacted,
            self.watcher.stats.gaps,
            bank.transfers,
            bank.audits,
            bank.aborted,
            bank.unknown,
            bank.resolved,
            self.admin.stats.done,
            self.admin.stats.attempts,
            if self.hosts.contains_key(&self.spare) {
                "used"
            } else {
                "unused"
            },
            stats.partitions,
            stats.crashes,
            stats.pauses,
            stats.jumps,
            stats.jumps_beyond,
            self.ledger.handed_total,
            stats.answers,
            stats.commits,
            stats.timer_spins,
            net.sent,
            net.delivered,
            self.converged_at.map_or_else(
                || "never".to_string(),
                |at| format!("at {:.1}s", at.as_nanos() as f64 / 1e9)
            ),
            self.now.as_nanos() as f64 / 1e9,
            lin.keys,
            lin.operations,
            lin.inconclusive.len(),
            if excuse_lease {
                " (lease reads excused: a clock jumped beyond the bound)"
            } else {
                ""
            }
        )
    }
}
