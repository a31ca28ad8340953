//! A small randomized stress test of the core alone (the full simulator lives in
//! `src/sim/`): random delivery order, loss, duplication, partitions, crashes and restarts,
//! compaction and membership changes, with safety checks after every step. Clocks are
//! shared (no drift), so lease reads must be exactly as safe as ReadIndex reads.

use super::*;
use crate::types::Term;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Chaos {
    cluster: Cluster,
    rng: ChaCha8Rng,
    leaders_by_term: BTreeMap<Term, NodeId>,
    /// Every entry applied anywhere, by index.
    applied: BTreeMap<LogIndex, Entry>,
    /// For each pending ReadIndex: the highest commit index anywhere when it was asked.
    read_floor: BTreeMap<(NodeId, ReadId), LogIndex>,
    next_id: u64,
    reads_confirmed: usize,
    lease_reads: usize,
    /// Paused nodes get no timers and no messages (they wait in flight); a client request
    /// may still reach them, as the first thing a resumed process handles.
    paused: BTreeSet<NodeId>,
}

impl Chaos {
    fn new(seed: u64, voters: u64, bug: Option<&'static str>) -> Chaos {
        let mut cluster = Cluster::new(voters, move |c| {
            c.max_entries_bytes_per_append = 200;
            c.max_inflight_appends = 4;
            c.snapshot_chunk_bytes = 8;
            #[cfg(feature = "sim-bugs")]
            {
                c.planted_bug = bug.and_then(PlantedBug::from_name);
            }
            #[cfg(not(feature = "sim-bugs"))]
            let _ = bug;
        });
        cluster.start(n(voters + 1), Durable::default());
        Chaos {
            cluster,
            rng: ChaCha8Rng::seed_from_u64(seed),
            leaders_by_term: BTreeMap::new(),
            applied: BTreeMap::new(),
            read_floor: BTreeMap::new(),
            next_id: 0,
            reads_confirmed: 0,
            lease_reads: 0,
            paused: BTreeSet::new(),
        }
    }

    fn ids(&self) -> Vec<NodeId> {
        self.cluster.nodes.keys().copied().collect()
    }

    fn pick(&mut self) -> NodeId {
        let ids = self.ids();
        ids[self.rng.random_range(0..ids.len())]
    }

    fn max_commit(&self) -> LogIndex {
        self.cluster
            .nodes
            .values()
            .map(|node| node.raft.status().commit)
            .max()
            .unwrap_or_default()
    }

    fn step(&mut self) {
        let roll = self.rng.random_range(0..1000);
        match roll {
            0..450 => (0..8).for_each(|_| self.deliver_one()),
            450..600 => self.tick(),
            600..750 => self.propose(),
            750..860 => self.read(),
            860..870 => self.crash_or_restart(),
            870..875 => self.pause_or_resume(),
            875..885 => self.partition(),
            885..905 => self.compact(),
            905..920 => self.change_membership(),
            _ => self.drain_all(),
        }
        // Check before collecting this step's applies: a leader seen for the first time was
        // elected before those, so it must hold everything applied earlier.
        self.check();
        self.collect();
    }

    fn deliver_one(&mut self) {
        if self.cluster.in_flight.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.cluster.in_flight.len());
        if self.paused.contains(&self.cluster.in_flight[i].to) {
            return;
        }
        let envelope = self.cluster.in_flight.remove(i).expect("index in range");
        let roll = self.rng.random_range(0..100);
        if roll < 5 {
            return; // lost
        }
        if roll < 10 {
            self.cluster.in_flight.push_back(envelope.clone()); // duplicated
        }
        self.cluster.deliver(envelope);
    }

    fn tick(&mut self) {
        self.cluster.now += Duration::from_millis(self.rng.random_range(1..20));
        let now = self.cluster.now;
        for id in self.ids() {
            if self.cluster.down.contains(&id) || self.paused.contains(&id) {
                continue;
            }
            if self
                .cluster
                .node(id)
                .raft
                .poll_timeout()
                .is_some_and(|at| at <= now)
            {
                self.cluster.raft(id).handle_timeout(now);
                self.cluster.drain_ready(id);
            }
        }
    }

    /// Usually the leader (if any), sometimes anyone.
    fn pick_leaderish(&mut self) -> NodeId {
        let leaders = self.cluster.leaders();
        match leaders.first() {
            Some(leader) if self.rng.random_bool(0.7) => *leader,
            _ => self.pick(),
        }
    }

    fn propose(&mut self) {
        let id = self.pick_leaderish();
        if self.cluster.down.contains(&id) {
            return;
        }
        self.next_id += 1;
        let text = format!("p{}", self.next_id);
        let _ = self.cluster.propose(id, self.next_id, &text);
        self.cluster.drain_ready(id);
    }

    fn read(&mut self) {
        let id = self.pick_leaderish();
        if self.cluster.down.contains(&id) {
            return;
        }
        let now = self.cluster.now;
        let floor = self.max_commit();
        if self.rng.random_bool(0.5) {
            if let Ok(index) = self.cluster.raft(id).lease_read(now) {
                assert!(
                    index >= floor,
                    "lease read on {id} at {index:?} misses commit {floor:?}"
                );
                self.lease_reads += 1;
            }
            return;
        }
        self.next_id += 1;
        let read = ReadId(self.next_id);
        if self.cluster.raft(id).read_index(now, read).is_ok() {
            self.read_floor.insert((id, read), floor);
        }
        self.cluster.drain_ready(id);
    }

    /// At most one node is down at a time.
    fn crash_or_restart(&mut self) {
        if let Some(id) = self.cluster.down.iter().next().copied() {
            self.cluster.restart(id);
        } else {
            let id = self.pick_leaderish();
            self.cluster.crash(id);
        }
    }

    /// At most one node is paused at a time.
    fn pause_or_resume(&mut self) {
        if self.paused.is_empty() {
            let id = self.pick_leaderish();
            self.paused.insert(id);
        } else {
            self.paused.clear();
        }
    }

    fn partition(&mut self) {
        self.cluster.heal();
        if self.rng.random_bool(0.5) {
            let id = self.pick();
            self.cluster.isolate(id);
        }
    }

    fn compact(&mut self) {
        let id = self.pick();
        if self.cluster.down.contains(&id) {
            return;
        }
        let status = self.cluster.status(id);
        if status.applied <= status.snapshot_index {
            return;
        }
        let data = Bytes::from(format!(
            "snapshot of {id} at {:?} padded to several chunks",
            status.applied
        ));
        self.cluster.compact(id, status.applied, data);
    }

    fn change_membership(&mut self) {
        let leaders = self.cluster.leaders();
        let Some(leader) = leaders.first().copied() else {
            return;
        };
        let membership = self.cluster.status(leader).membership;
        let learner = self
            .ids()
            .into_iter()
            .find(|id| !membership.voters.contains(id));
        let change = match learner {
            Some(id) if membership.learners.contains(&id) => MembershipChange::PromoteLearner(id),
            Some(id) => MembershipChange::AddLearner(id),
            None => {
                let voters: Vec<NodeId> = membership
                    .voters
                    .iter()
                    .copied()
                    .filter(|v| *v != leader)
                    .collect();
                MembershipChange::RemoveVoter(voters[self.rng.random_range(0..voters.len())])
            }
        };
        let now = self.cluster.now;
        let _ = self.cluster.raft(leader).propose_membership(now, change);
        self.cluster.drain_ready(leader);
    }

    fn drain_all(&mut self) {
        for id in self.ids() {
            self.cluster.drain_ready(id);
        }
    }

    /// Gathers applied entries and confirmed reads from every node's harness record.
    fn collect(&mut self) {
        for (id, node) in &mut self.cluster.nodes {
            for (index, entry) in &node.applied {
                if let Some(previous) = self.applied.insert(*index, entry.clone()) {
                    assert_eq!(
                        previous, *entry,
                        "two nodes applied different entries at {index:?}"
                    );
                }
            }
            for read in node.read_states.drain(..) {
                let floor = self
                    .read_floor
                    .remove(&(*id, read.id))
                    .expect("a confirmed read was asked");
                assert!(
                    read.index >= floor,
                    "read {read:?} on {id} misses commit {floor:?}"
                );
                self.reads_confirmed += 1;
            }
            for (read, _) in node.dropped_reads.drain(..) {
                self.read_floor.remove(&(*id, read));
            }
        }
    }

    fn check(&mut self) {
        for (id, node) in &self.cluster.nodes {
            if self.cluster.down.contains(id) {
                continue;
            }
            let status = node.raft.status();
            if status.role != Role::Leader {
                continue;
            }
            if let Some(other) = self.leaders_by_term.get(&status.term) {
                assert_eq!(other, id, "two leaders in {:?}", status.term);
                continue;
            }
            let newest = self
                .leaders_by_term
                .keys()
                .next_back()
                .is_none_or(|t| *t < status.term);
            self.leaders_by_term.insert(status.term, *id);
            if !newest {
                continue; // A late leader of an old term owes nothing to later terms.
            }
            // Leader completeness: a leader of a newer term than any seen so far holds
            // every entry committed so far (all by leaders of older terms).
            for (index, entry) in self.applied.range(LogIndex(status.snapshot_index.0 + 1)..) {
                assert_eq!(
                    node.raft.term_at(*index),
                    Some(entry.term),
                    "leader {id} lacks committed {index:?}"
                );
            }
        }
    }
}

fn run_seed(
    seed: u64,
    voters: u64,
    steps: usize,
    bug: Option<&'static str>,
) -> (usize, usize, usize) {
    let mut chaos = Chaos::new(seed, voters, bug);
    for _ in 0..steps {
        chaos.step();
    }
    // Liveness: heal everything and the cluster must make progress.
    chaos.cluster.heal();
    chaos.paused.clear();
    for id in chaos.ids() {
        if chaos.cluster.down.contains(&id) {
            chaos.cluster.restart(id);
        }
    }
    chaos.cluster.run_for(Duration::from_secs(3));
    let leaders = chaos.cluster.leaders();
    assert_eq!(leaders.len(), 1, "seed {seed}: one leader after healing");
    let index = chaos
        .cluster
        .propose(leaders[0], u64::MAX, "final")
        .expect("the leader accepts");
    chaos.cluster.run_for(Duration::from_secs(1));
    chaos.check();
    chaos.collect();
    assert!(
        chaos.applied.contains_key(&index),
        "seed {seed}: the final write commits"
    );
    (
        chaos.applied.len(),
        chaos.reads_confirmed,
        chaos.lease_reads,
    )
}

#[test]
fn random_faults_never_break_safety() {
    let mut totals = (0, 0, 0);
    for seed in 0..40 {
        let voters = if seed % 2 == 0 { 3 } else { 5 };
        let (applied, reads, leases) = run_seed(seed, voters, 3000, None);
        totals = (totals.0 + applied, totals.1 + reads, totals.2 + leases);
    }
    // The test must exercise what it checks.
    assert!(totals.0 > 1000, "applied {totals:?}");
    assert!(totals.1 > 100, "reads {totals:?}");
    assert!(totals.2 > 10, "lease reads {totals:?}");
}

/// The chaos run has teeth: serving ReadIndex without the heartbeat round is caught (a
/// paused leader answers from its stale commit index while a newer leader has moved on).
/// The other planted bugs need clock drift or rarer schedules; the simulator hunts them.
#[cfg(feature = "sim-bugs")]
#[test]
fn chaos_catches_read_index_without_heartbeat() {
    // About one seed in 25 catches it (seeds 60, 83, 104, ... of the first 300).
    let caught = (0..150).find(|seed| {
        let run = || {
            run_seed(
                *seed,
                3 + 2 * (seed % 2),
                3000,
                Some("read-index-no-heartbeat"),
            )
        };
        std::panic::catch_unwind(run).is_err()
    });
    assert!(caught.is_some(), "no seed caught the planted bug");
}

/// Leases that outlive the followers' promise are caught too: a partitioned or paused
/// leader serves a lease read after a newer leader committed more.
#[cfg(feature = "sim-bugs")]
#[test]
fn chaos_catches_lease_ignoring_drift() {
    let caught = (0..40).find(|seed| {
        let run = || run_seed(*seed, 3 + 2 * (seed % 2), 3000, Some("lease-ignores-drift"));
        std::panic::catch_unwind(run).is_err()
    });
    assert!(caught.is_some(), "no seed caught the planted bug");
}
