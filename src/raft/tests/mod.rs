//! Scripted tests for the core, on a tiny in-memory network that passes every message
//! through `crate::wire::roundtrip`. Time is simulated; nothing sleeps.

mod chaos;
mod election;
mod fuzz;
mod membership;
mod reads;
mod replication;
mod snapshot;

use super::*;
use crate::types::{Instant, LogIndex, NodeId};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// What a node's shell made durable, as `Ready` described it.
#[derive(Clone, Debug, Default)]
pub(super) struct Durable {
    pub(super) hard_state: HardState,
    /// The last snapshot: its meta and the state it holds.
    pub(super) snapshot: Option<(SnapshotMeta, Bytes)>,
    /// The chunks of a snapshot being received.
    pub(super) staging: Vec<u8>,
    pub(super) entries: Vec<Entry>,
}

pub(super) struct TestNode {
    pub(super) raft: RaftNode,
    pub(super) durable: Durable,
    /// Applied entries by index, over the node's whole life (a restart replays them).
    pub(super) applied: BTreeMap<LogIndex, Entry>,
    pub(super) applied_index: LogIndex,
    pub(super) read_states: Vec<ReadState>,
    pub(super) dropped_reads: Vec<(ReadId, ReadError)>,
    pub(super) dropped_proposals: Vec<(ProposalId, ProposeError)>,
    pub(super) installed_snapshots: Vec<SnapshotMeta>,
}

pub(super) struct Cluster {
    pub(super) nodes: BTreeMap<NodeId, TestNode>,
    pub(super) now: Instant,
    pub(super) in_flight: VecDeque<Envelope>,
    /// Directed links that drop everything.
    pub(super) cut: BTreeSet<(NodeId, NodeId)>,
    pub(super) down: BTreeSet<NodeId>,
    pub(super) delivered: Vec<Envelope>,
    /// Rewrites (or drops, returning `None`) every message sent.
    pub(super) mangle: Option<Box<dyn Fn(Envelope) -> Option<Envelope>>>,
    config: Box<dyn Fn(NodeId) -> Config>,
}

pub(super) fn n(id: u64) -> NodeId {
    NodeId(id)
}

pub(super) fn cmd(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

pub(super) const T: Duration = Duration::from_millis(150);

impl Cluster {
    /// `size` voters n1..=n`size` with default configs adjusted by `tweak`.
    pub(super) fn new(size: u64, tweak: impl Fn(&mut Config) + 'static) -> Cluster {
        let voters: Vec<NodeId> = (1..=size).map(n).collect();
        let config = move |id: NodeId| {
            let mut config = Config::new(id, voters.clone());
            tweak(&mut config);
            config
        };
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            now: Instant::from_nanos(1_000_000_000),
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            down: BTreeSet::new(),
            delivered: Vec::new(),
            mangle: None,
            config: Box::new(config),
        };
        for id in 1..=size {
            cluster.start(n(id), Durable::default());
        }
        cluster
    }

    /// Starts (or restarts) `id` from a durable image.
    pub(super) fn start(&mut self, id: NodeId, durable: Durable) {
        let config = (self.config)(id);
        self.start_with(config, durable);
    }

    /// Starts (or restarts) a node with `config` instead of the cluster's.
    pub(super) fn start_with(&mut self, config: Config, durable: Durable) {
        let id = config.id;
        let restored = RestoredState {
            hard_state: durable.hard_state,
            snapshot: durable.snapshot.as_ref().map(|(meta, _)| meta.clone()),
            entries: durable.entries.clone(),
            applied: durable
                .snapshot
                .as_ref()
                .map_or(LogIndex(0), |(meta, _)| meta.index),
        };
        let raft = RaftNode::new(config, restored, id.0 * 7919, self.now).expect("valid config");
        let applied_index = raft.status().applied;
        let old = self.nodes.remove(&id);
        let applied = old.map(|o| o.applied).unwrap_or_default();
        let node = TestNode {
            raft,
            durable,
            applied,
            applied_index,
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            dropped_proposals: Vec::new(),
            installed_snapshots: Vec::new(),
        };
        self.nodes.insert(id, node);
        self.down.remove(&id);
    }

    /// Crashes `id`: what was not persisted is lost; messages to it are dropped.
    pub(super) fn crash(&mut self, id: NodeId) {
        self.down.insert(id);
    }

    pub(super) fn restart(&mut self, id: NodeId) {
        let durable = self.node(id).durable.clone();
        self.start(id, durable);
    }

    pub(super) fn node(&self, id: NodeId) -> &TestNode {
        self.nodes.get(&id).expect("node exists")
    }

    pub(super) fn raft(&mut self, id: NodeId) -> &mut RaftNode {
        &mut self.nodes.get_mut(&id).expect("node exists").raft
    }

    pub(super) fn status(&self, id: NodeId) -> Status {
        self.node(id).raft.status()
    }

    pub(super) fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(id, node)| !self.down.contains(id) && node.raft.status().role == Role::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    pub(super) fn isolate(&mut self, id: NodeId) {
        for other in self.nodes.keys().copied().collect::<Vec<_>>() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub(super) fn heal(&mut self) {
        self.cut.clear();
    }

    /// Runs `id`'s readies until it has none: persist, send, apply, advance.
    pub(super) fn drain_ready(&mut self, id: NodeId) {
        if self.down.contains(&id) {
            return;
        }
        for _ in 0..1000 {
            let node = self.nodes.get_mut(&id).expect("node exists");
            if node.raft.snapshot_wanted() {
                offer_snapshot(&mut node.raft, &node.durable);
            }
            let Some(ready) = node.raft.ready() else {
                return;
            };
            persist(&mut node.durable, &ready);
            if let Some(meta) = &ready.snapshot {
                node.installed_snapshots.push(meta.clone());
                node.applied_index = meta.index;
            }
            for entry in &ready.committed {
                assert_eq!(
                    entry.index.0,
                    node.applied_index.0 + 1,
                    "{id} applies in order"
                );
                node.applied_index = entry.index;
                if let Some(previous) = node.applied.insert(entry.index, entry.clone()) {
                    assert_eq!(
                        previous, *entry,
                        "{id} applied two different entries at one index"
                    );
                }
            }
            let applied = node.applied_index;
            node.raft.report_applied(applied);
            node.read_states.extend(ready.read_states.iter().copied());
            node.dropped_reads
                .extend(ready.dropped_reads.iter().cloned());
            node.dropped_proposals
                .extend(ready.dropped_proposals.iter().cloned());
            let id_done = ready.id();
            node.raft.advance(id_done);
            for envelope in ready.messages.into_iter().chain(ready.persisted_messages) {
                self.transmit(envelope);
            }
        }
        panic!("{id} kept producing readies");
    }

    fn transmit(&mut self, envelope: Envelope) {
        if self.cut.contains(&(envelope.from, envelope.to)) || self.down.contains(&envelope.to) {
            return;
        }
        let envelope = match &self.mangle {
            Some(mangle) => match mangle(envelope) {
                Some(envelope) => envelope,
                None => return,
            },
            None => envelope,
        };
        self.in_flight.push_back(crate::wire::roundtrip(&envelope));
    }

    /// Delivers messages (and runs readies) until the network is quiet.
    pub(super) fn stabilize(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in &ids {
            self.drain_ready(*id);
        }
        for _ in 0..100_000 {
            let Some(envelope) = self.in_flight.pop_front() else {
                return;
            };
            self.deliver(envelope);
        }
        for e in self.delivered.iter().rev().take(12) {
            eprintln!("{} -> {}: {:?}", e.from, e.to, e.msg);
        }
        panic!("the network never went quiet");
    }

    /// Delivers one message now and runs the receiver's readies.
    pub(super) fn deliver(&mut self, envelope: Envelope) {
        let to = envelope.to;
        if self.down.contains(&to) || self.cut.contains(&(envelope.from, to)) {
            return;
        }
        self.delivered.push(envelope.clone());
        let now = self.now;
        self.raft(to).handle_message(now, envelope);
        self.drain_ready(to);
    }

    /// Advances time by `duration`, firing every due timer in order and stabilizing after each.
    pub(super) fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        for _ in 0..100_000 {
            let next = self
                .nodes
                .iter()
                .filter(|(id, _)| !self.down.contains(id))
                .filter_map(|(id, node)| node.raft.poll_timeout().map(|at| (at, *id)))
                .min();
            match next {
                Some((at, id)) if at <= end => {
                    self.now = self.now.max(at);
                    let now = self.now;
                    self.raft(id).handle_timeout(now);
                    self.stabilize();
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
        panic!("timers never settled");
    }

    /// Lets `id`'s election timer fire alone (after every node's restart blackout), then
    /// stabilizes.
    pub(super) fn elect(&mut self, id: NodeId) {
        self.now += 2 * T;
        let deadline = self.node(id).raft.poll_timeout().expect("a timer is armed");
        self.now = self.now.max(deadline);
        let now = self.now;
        self.raft(id).handle_timeout(now);
        self.stabilize();
        assert_eq!(self.status(id).role, Role::Leader, "{id} should have won");
    }

    pub(super) fn propose(
        &mut self,
        id: NodeId,
        proposal: u64,
        text: &str,
    ) -> Result<LogIndex, ProposeError> {
        let now = self.now;
        self.raft(id).propose(now, ProposalId(proposal), cmd(text))
    }

    /// Commands applied on `id`, in order.
    pub(super) fn applied_commands(&self, id: NodeId) -> Vec<String> {
        self.node(id)
            .applied
            .values()
            .filter_map(|e| match &e.kind {
                EntryKind::Normal { command, .. } => {
                    Some(String::from_utf8_lossy(command).into_owned())
                }
                _ => None,
            })
            .collect()
    }
}

/// Offers the core the durable snapshot as the image it sends followers.
fn offer_snapshot(raft: &mut RaftNode, durable: &Durable) {
    if let Some((meta, data)) = &durable.snapshot {
        let source = SnapshotBytes {
            index: meta.index,
            data: data.clone(),
        };
        raft.set_snapshot_source(std::sync::Arc::new(source));
    }
}

impl Cluster {
    /// Compacts `id`'s log at `index` as a shell would: `data` stands for its state there.
    pub(super) fn compact(&mut self, id: NodeId, index: LogIndex, data: Bytes) -> SnapshotMeta {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let meta = node.raft.compact(index).expect("an applied index compacts");
        node.durable.entries.retain(|e| e.index > meta.index);
        node.durable.snapshot = Some((meta.clone(), data));
        meta
    }
}

/// Carries out the persist step of the Ready contract.
pub(super) fn persist(durable: &mut Durable, ready: &Ready) {
    for chunk in &ready.snapshot_chunks {
        if chunk.offset == 0 {
            durable.staging.clear();
        }
        assert_eq!(
            chunk.offset,
            durable.staging.len() as u64,
            "chunks stage in order"
        );
        durable.staging.extend_from_slice(&chunk.data);
    }
    if let Some(meta) = &ready.snapshot {
        let data = Bytes::from(std::mem::take(&mut durable.staging));
        durable.snapshot = Some((meta.clone(), data));
        durable.entries.clear();
    }
    if let Some(first) = ready.entries.first() {
        durable.entries.retain(|e| e.index < first.index);
        durable.entries.extend(ready.entries.iter().cloned());
    }
    if let Some(hard_state) = ready.hard_state {
        durable.hard_state = hard_state;
    }
}

/// An entry for building logs by hand.
pub(super) fn entry(term: u64, index: u64) -> Entry {
    Entry {
        term: crate::types::Term(term),
        index: LogIndex(index),
        kind: EntryKind::Noop,
    }
}

#[test]
fn every_message_kind_round_trips_through_the_wire() {
    let meta = SnapshotMeta {
        index: LogIndex(4),
        term: crate::types::Term(2),
        membership: Membership::with_voters([n(1)]),
    };
    let entries = vec![
        Entry {
            term: crate::types::Term(1),
            index: LogIndex(1),
            kind: EntryKind::Normal {
                proposal: ProposalId(9),
                command: cmd("x"),
            },
        },
        Entry {
            term: crate::types::Term(1),
            index: LogIndex(2),
            kind: EntryKind::Membership {
                change: MembershipChange::AddLearner(n(4)),
                config: Membership {
                    voters: [n(1)].into(),
                    learners: [n(4)].into(),
                },
            },
        },
    ];
    let term = crate::types::Term(3);
    let messages = vec![
        RaftMessage::PreVote {
            term,
            last_index: LogIndex(1),
            last_term: term,
        },
        RaftMessage::Append {
            term,
            prev_index: LogIndex(0),
            prev_term: term,
            entries,
            leader_commit: LogIndex(1),
        },
        RaftMessage::AppendResponse {
            term,
            outcome: AppendOutcome::Reject {
                rejected_prev: LogIndex(3),
                conflict_term: Some(term),
                hint_index: LogIndex(2),
            },
        },
        RaftMessage::InstallSnapshot {
            term,
            meta,
            offset: 0,
            data: cmd("abc"),
            last: true,
        },
        RaftMessage::ReadIndexResponse {
            term,
            id: ReadId(1),
            index: Some(LogIndex(2)),
        },
    ];
    for msg in messages {
        let envelope = Envelope {
            from: n(1),
            to: n(2),
            msg,
        };
        assert_eq!(crate::wire::roundtrip(&envelope), envelope);
    }
}
