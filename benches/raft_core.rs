//! The Raft core alone: propose → committed → applied on a 3- and a 5-node in-memory loop, batching
//! on. Messages are passed by value (no codec), persistence is a no-op: this measures the
//! core's CPU cost per proposal. Target (issue 2): >= 500,000 small proposals per second.

use bytes::Bytes;
use capdial::raft::{Config, Envelope, ProposalId, RaftNode, RestoredState, Role};
use capdial::types::{Instant, LogIndex, NodeId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::collections::VecDeque;
use std::time::Duration;

const PROPOSALS_PER_BATCH: u64 = 1000;
const COMMAND_BYTES: usize = 16;

struct Cluster {
    nodes: Vec<RaftNode>,
    applied: Vec<LogIndex>,
    queue: VecDeque<Envelope>,
    now: Instant,
    next_proposal: u64,
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        let voters: Vec<NodeId> = (1..=size).map(NodeId).collect();
        let now = Instant::from_nanos(1_000_000_000);
        let nodes = voters
            .iter()
            .map(|id| {
                let config = Config::new(*id, voters.clone());
                RaftNode::new(config, RestoredState::default(), id.0, now).expect("valid config")
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            applied: vec![LogIndex(0); voters.len()],
            queue: VecDeque::new(),
            now,
            next_proposal: 0,
        };
        cluster.now += Duration::from_secs(1);
        let now = cluster.now;
        cluster.nodes[0].handle_timeout(now);
        cluster.settle(|_| true);
        assert_eq!(cluster.nodes[0].status().role, Role::Leader);
        cluster
    }

    fn index_of(id: NodeId) -> usize {
        (id.0 - 1) as usize
    }

    /// Runs readies and deliveries until `done` holds and the network is quiet.
    fn settle(&mut self, done: impl Fn(&Cluster) -> bool) {
        loop {
            for i in 0..self.nodes.len() {
                while let Some(ready) = self.nodes[i].ready() {
                    if let Some(last) = ready.committed.last() {
                        self.applied[i] = last.index;
                        self.nodes[i].report_applied(last.index);
                    }
                    let id = ready.id();
                    self.queue.extend(ready.messages);
                    self.queue.extend(ready.persisted_messages);
                    self.nodes[i].advance(id);
                }
            }
            if self.queue.is_empty() && done(self) {
                return;
            }
            while let Some(envelope) = self.queue.pop_front() {
                let to = Cluster::index_of(envelope.to);
                self.nodes[to].handle_message(self.now, envelope);
            }
        }
    }

    fn batch(&mut self, command: &Bytes) {
        let mut last = LogIndex(0);
        for _ in 0..PROPOSALS_PER_BATCH {
            self.next_proposal += 1;
            let id = ProposalId(self.next_proposal);
            last = self.nodes[0]
                .propose(self.now, id, command.clone())
                .expect("leader accepts");
        }
        self.settle(|c| c.applied.iter().all(|a| *a >= last));
        for (node, applied) in self.nodes.iter_mut().zip(&self.applied) {
            node.compact(*applied)
                .expect("applied index can be compacted");
        }
    }
}

fn propose_commit_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_core");
    group.throughput(Throughput::Elements(PROPOSALS_PER_BATCH));
    let command = Bytes::from(vec![7u8; COMMAND_BYTES]);
    for size in [3, 5] {
        let mut cluster = Cluster::new(size);
        let name = format!("{size}_nodes_1000x16B_proposals_to_applied");
        group.bench_function(name, |b| b.iter(|| cluster.batch(&command)));
    }
    group.finish();
}

criterion_group!(benches, propose_commit_apply);
criterion_main!(benches);
