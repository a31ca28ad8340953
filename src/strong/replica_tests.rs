//! A three-replica cluster in memory: every `Ready` is persisted and its messages delivered at
//! once (1 ms per hop), timers jump to the next deadline. Checks what the shells rely on.

use super::*;
use crate::strong::{ClientId, Command, MemoryMachineStore};
use std::time::Duration;

/// The group id of the tests' keyspace.
const GROUP: GroupId = GroupId(7);

type Tag = u32;

/// Every wait in these tests is bounded by this many steps.
const STEPS_MAX: usize = 20_000;

struct Cluster {
    ids: Vec<NodeId>,
    replicas: Vec<Replica<Tag>>,
    durable: Vec<DurableState>,
    /// Each replica's machine rows, as its persists left them.
    stores: Vec<Arc<MemoryMachineStore>>,
    now: Instant,
    in_flight: Vec<Envelope>,
    done: Vec<Completion<Tag>>,
    compact_every: u64,
    /// A replica cut off from the others: messages from or to it are lost.
    cut: Option<NodeId>,
}

fn config(id: NodeId, ids: &[NodeId], compact_every: u64) -> ReplicaConfig {
    let mut raft = Config::new(id, ids.to_vec());
    // A few keys per chunk: a snapshot spans several.
    raft.snapshot_chunk_bytes = 200;
    ReplicaConfig {
        raft,
        machine: MachineConfig::default(),
        compact_every,
    }
}

fn boot(
    config: ReplicaConfig,
    durable: DurableState,
    store: &Arc<MemoryMachineStore>,
    now: Instant,
) -> Replica<Tag> {
    let seed = config.raft.id.0;
    let store: Arc<dyn MachineStore> = store.clone();
    Replica::boot(config, durable, store, GROUP, seed, now)
        .expect("a valid configuration and image")
}

/// What a shell does with a `ReplicaReady`'s persist, in memory.
fn persist(durable: &mut DurableState, store: &MemoryMachineStore, ready: &ReplicaReady) {
    if let Some(raft) = &ready.raft {
        persist_raft(durable, raft);
    }
    store.commit(GROUP, &ready.machine);
}

fn persist_raft(durable: &mut DurableState, ready: &Ready) {
    if let Some(snapshot) = &ready.snapshot {
        durable.snapshot = Some(snapshot.clone());
        durable.entries.clear();
    }
    if let Some(first) = ready.entries.first() {
        durable.entries.retain(|entry| entry.index < first.index);
        durable.entries.extend(ready.entries.iter().cloned());
    }
    if let Some(hard_state) = ready.hard_state {
        durable.hard_state = hard_state;
    }
}

impl Cluster {
    fn new(compact_every: u64) -> Cluster {
        let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let stores: Vec<Arc<MemoryMachineStore>> = ids.iter().map(|_| Arc::default()).collect();
        let replicas = ids
            .iter()
            .zip(&stores)
            .map(|(id, store)| {
                let config = config(*id, &ids, compact_every);
                boot(config, DurableState::default(), store, Instant::ZERO)
            })
            .collect();
        Cluster {
            durable: vec![DurableState::default(); ids.len()],
            stores,
            ids,
            replicas,
            now: Instant::ZERO,
            in_flight: Vec::new(),
            done: Vec::new(),
            compact_every,
            cut: None,
        }
    }

    fn index(&self, id: NodeId) -> usize {
        self.ids
            .iter()
            .position(|known| *known == id)
            .expect("a member")
    }

    /// Carries out every `Ready`: persist, send, hand back.
    fn pump(&mut self) {
        let replicas = self.replicas.iter_mut().zip(&mut self.durable);
        for ((replica, durable), store) in replicas.zip(&self.stores) {
            while let Some(mut ready) = replica.take_ready() {
                persist(durable, store, &ready);
                if let Some(raft) = &mut ready.raft {
                    self.in_flight.append(&mut raft.messages);
                    self.in_flight.append(&mut raft.persisted_messages);
                }
                let applied = replica.on_persisted(ready);
                assert!(applied.faults.is_empty(), "faults: {:?}", applied.faults);
                if let Some(snapshot) = applied.compacted {
                    let index = snapshot.index;
                    durable.snapshot = Some(snapshot);
                    durable.entries.retain(|entry| entry.index > index);
                }
                self.done.extend(applied.replies);
            }
        }
    }

    /// Delivers what is in flight (1 ms later), or jumps to the next timer.
    fn step(&mut self) {
        self.pump();
        let next_timer = self.replicas.iter().filter_map(Replica::poll_timeout).min();
        self.now = if self.in_flight.is_empty() {
            next_timer
                .expect("a replica always has a timer")
                .max(self.now)
        } else {
            self.now + Duration::from_millis(1)
        };
        for replica in &mut self.replicas {
            if replica.poll_timeout().is_some_and(|at| at <= self.now) {
                replica.handle_timeout(self.now);
            }
        }
        for envelope in std::mem::take(&mut self.in_flight) {
            if self
                .cut
                .is_some_and(|cut| cut == envelope.from || cut == envelope.to)
            {
                continue;
            }
            let to = self.index(envelope.to);
            self.replicas[to].handle_message(self.now, envelope);
        }
        self.pump();
    }

    fn run_until(&mut self, what: &str, done: impl Fn(&Cluster) -> bool) {
        for _ in 0..STEPS_MAX {
            if done(self) {
                return;
            }
            self.step();
        }
        panic!("{what} did not happen within {STEPS_MAX} steps");
    }

    fn leader(&self) -> Option<usize> {
        self.replicas
            .iter()
            .position(|replica| replica.status().role == Role::Leader)
    }

    fn elect(&mut self) -> usize {
        self.run_until("a leader", |cluster| cluster.leader().is_some());
        self.leader().expect("just elected")
    }

    /// Waits for the completion tagged `tag` and takes it.
    fn answer(&mut self, tag: Tag) -> Answer {
        let has = |cluster: &Cluster| cluster.done.iter().any(|done| done.tag == tag);
        self.run_until(&format!("an answer for {tag}"), has);
        let at = self.done.iter().position(|done| done.tag == tag);
        let done = self.done.remove(at.expect("just found"));
        assert!(
            self.done.iter().all(|other| other.tag != tag),
            "one completion per request"
        );
        done.answer
    }

    fn write(&mut self, on: usize, tag: Tag, request: &Request) -> Answer {
        self.write_at(on, tag, request, WallMillis(0))
    }

    /// A write proposed while the node's wall clock reads `wall`.
    fn write_at(&mut self, on: usize, tag: Tag, request: &Request, wall: WallMillis) -> Answer {
        let proposal = ProposalId(u64::from(tag));
        if let Err(done) = self.replicas[on].submit(self.now, wall, proposal, tag, request) {
            return done.answer;
        }
        self.answer(tag)
    }

    fn read(&mut self, on: usize, tag: Tag, level: ReadMode, key: &str) -> Answer {
        let key = Bytes::from(key.to_owned());
        match self.replicas[on].read(self.now, tag, level, key) {
            Some(done) => done.answer,
            None => self.answer(tag),
        }
    }
}

fn put(seq: u64, key: &str, value: &str) -> Request {
    Request {
        client: ClientId(7),
        seq,
        first_unacked: 1,
        opens_session: true,
        proposed_at: WallMillis(0),
        command: Command::Put {
            key: Bytes::from(key.to_owned()),
            value: Bytes::from(value.to_owned()),
        },
    }
}

/// Client 9's first write: a cas that only succeeds on an absent key, so applied a second
/// time it would fail. `proposed_at` is what the request says; the leader stamps its own.
fn create_once(proposed_at: WallMillis) -> Request {
    Request {
        client: ClientId(9),
        seq: 1,
        first_unacked: 1,
        opens_session: true,
        proposed_at,
        command: Command::Cas {
            key: Bytes::from_static(b"k"),
            expected: None,
            value: Some(Bytes::from_static(b"first")),
        },
    }
}

fn value_of(answer: &Answer) -> Option<Bytes> {
    match answer {
        Answer::Read { current, .. } => current.as_ref().map(|found| found.value.clone()),
        other => panic!("not a read: {other:?}"),
    }
}

#[test]
fn a_write_commits_on_every_replica_and_its_submitter_gets_the_result() {
    let mut cluster = Cluster::new(1_000);
    let leader = cluster.elect();
    let answer = cluster.write(leader, 1, &put(1, "k", "v"));
    let Answer::Written(Ok(Outcome::Put { revision })) = answer else {
        panic!("expected a put result, got {answer:?}");
    };
    cluster.run_until("every replica applied the put", |cluster| {
        cluster
            .replicas
            .iter()
            .all(|replica| replica.machine().applied() >= revision)
    });
    for replica in &cluster.replicas {
        let stored = replica
            .machine()
            .get(b"k")
            .unwrap()
            .expect("the put applied");
        assert_eq!(stored.value, Bytes::from_static(b"v"));
        assert_eq!(stored.mod_revision, revision);
    }
}

#[test]
fn a_follower_refuses_a_write_and_names_the_leader() {
    let mut cluster = Cluster::new(1_000);
    let leader = cluster.elect();
    let follower = (leader + 1) % 3;
    let leader_hint = Some(cluster.ids[leader]);
    cluster.run_until("the follower heard from the leader", |cluster| {
        cluster.replicas[follower].status().leader == leader_hint
    });
    let answer = cluster.write(follower, 1, &put(1, "k", "v"));
    assert_eq!(answer, Answer::Refused { leader_hint });
    assert!(cluster.replicas[follower].proposals.is_empty());
}

#[test]
fn reads_at_every_level_see_what_their_level_promises() {
    let mut cluster = Cluster::new(1_000);
    let leader = cluster.elect();
    let follower = (leader + 1) % 3;
    let written = cluster.write(leader, 1, &put(1, "k", "v"));
    assert!(matches!(written, Answer::Written(Ok(_))), "{written:?}");
    let v = Some(Bytes::from_static(b"v"));
    let linearizable = cluster.read(leader, 2, ReadMode::Linearizable, "k");
    assert_eq!(value_of(&linearizable), v);
    let lease = cluster.read(leader, 3, ReadMode::Lease, "k");
    assert_eq!(value_of(&lease), v);
    // A follower read waits for the leader's read index, which covers the acked put.
    let follower_read = cluster.read(follower, 4, ReadMode::Follower, "k");
    assert_eq!(value_of(&follower_read), v);
    // A stale read answers at once from whatever the replica applied.
    let key = Bytes::from_static(b"k");
    let stale = cluster.replicas[follower].read(cluster.now, 5, ReadMode::Stale, key);
    let stale = stale.expect("a stale read never waits");
    let applied = cluster.replicas[follower].machine().applied();
    assert!(matches!(stale.answer, Answer::Read { applied: at, .. } if at == applied));
    // Linearizable reads go to the leader.
    let refused = cluster.read(follower, 6, ReadMode::Linearizable, "k");
    let leader_hint = Some(cluster.ids[leader]);
    assert_eq!(refused, Answer::Refused { leader_hint });
    let missing = cluster.read(leader, 7, ReadMode::Linearizable, "absent");
    assert_eq!(value_of(&missing), None);
}

#[test]
fn a_retried_write_returns_its_first_result() {
    let mut cluster = Cluster::new(1_000);
    let leader = cluster.elect();
    let create = create_once(WallMillis(0));
    let first = cluster.write(leader, 1, &create);
    let Answer::Written(Ok(Outcome::Cas { succeeded, .. })) = &first else {
        panic!("expected a cas result, got {first:?}");
    };
    assert!(*succeeded, "the key was absent");
    let retry = cluster.write(leader, 2, &create);
    assert_eq!(
        retry, first,
        "a retry gets the first result, not a second apply"
    );
}

/// A write whose answer was lost, resent after later writes of its client committed, still
/// answers its first result, on every replica alike; the log clock every machine keeps is the
/// proposing leader's wall clock, whatever the request said.
#[test]
fn a_resend_after_later_writes_of_its_client_applies_once_everywhere() {
    let mut cluster = Cluster::new(1_000);
    let leader = cluster.elect();
    let create = create_once(WallMillis(u64::MAX));
    let first = cluster.write_at(leader, 1, &create, WallMillis(5_000));
    for seq in [3, 2] {
        // Seq 1 is still waited for: both keep first_unacked at 1.
        let later = Request {
            client: ClientId(9),
            ..put(seq, &format!("other{seq}"), "v")
        };
        let answer = cluster.write_at(leader, seq as Tag + 1, &later, WallMillis(6_000));
        assert!(matches!(answer, Answer::Written(Ok(_))), "{answer:?}");
    }
    let retry = cluster.write_at(leader, 9, &create, WallMillis(7_000));
    assert_eq!(retry, first, "the first result, not a second apply");
    let target = cluster.replicas[leader].machine().applied();
    cluster.run_until("every replica applied", |cluster| {
        cluster
            .replicas
            .iter()
            .all(|r| r.machine().applied() >= target)
    });
    for replica in &cluster.replicas {
        let machine = replica.machine();
        assert_eq!(machine.clock(), WallMillis(7_000), "the leader's clock");
        let session = machine.session(ClientId(9)).expect("the session lives");
        assert_eq!(
            session.results.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }
}

#[test]
fn take_ready_hands_out_one_ready_until_it_comes_back() {
    let mut cluster = Cluster::new(1_000);
    let replica = &mut cluster.replicas[0];
    let due = replica.poll_timeout().expect("an election timer");
    replica.handle_timeout(due);
    let ready = replica.take_ready().expect("a campaign persists and sends");
    assert!(replica.take_ready().is_none(), "one Ready at a time");
    let applied = replica.on_persisted(ready);
    assert!(applied.replies.is_empty() && applied.faults.is_empty());
}

#[test]
fn a_restarted_replica_rebuilds_from_its_snapshot_and_log() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.elect();
    for seq in 1..=10 {
        let answer = cluster.write(leader, seq as Tag, &put(seq, &format!("k{seq}"), "v"));
        assert!(matches!(answer, Answer::Written(Ok(_))), "{answer:?}");
    }
    let victim = (leader + 1) % 3;
    cluster.run_until("the victim compacted", |cluster| {
        cluster.durable[victim].snapshot.is_some()
    });
    let snapshot_index = cluster.durable[victim]
        .snapshot
        .as_ref()
        .map(|snapshot| snapshot.index)
        .expect("just checked");
    assert!(
        cluster.durable[victim]
            .entries
            .iter()
            .all(|entry| entry.index > snapshot_index),
        "compaction drops durable entries the snapshot covers"
    );
    let ids = cluster.ids.clone();
    let config = config(ids[victim], &ids, cluster.compact_every);
    let image = cluster.durable[victim].clone();
    let store = cluster.stores[victim].clone();
    cluster.replicas[victim] = boot(config, image, &store, cluster.now);
    assert!(cluster.replicas[victim].machine().applied() >= snapshot_index);
    cluster.run_until("the restarted replica holds every write", |cluster| {
        (1..=10).all(|seq| {
            let key = format!("k{seq}");
            cluster.replicas[victim]
                .machine()
                .get(key.as_bytes())
                .is_ok_and(|found| found.is_some())
        })
    });
}

#[test]
fn a_leader_that_loses_leadership_ends_its_waiting_requests() {
    let mut cluster = Cluster::new(1_000);
    let old = cluster.elect();
    let old_id = cluster.ids[old];
    cluster.run_until("every replica knows the leader", |cluster| {
        let known = |replica: &Replica<Tag>| replica.status().leader == Some(old_id);
        cluster.replicas.iter().all(known)
    });
    cluster.cut = Some(old_id);
    let proposal = ProposalId(1);
    let submitted =
        cluster.replicas[old].submit(cluster.now, WallMillis(0), proposal, 1, &put(1, "k", "v"));
    assert!(submitted.is_ok(), "the leader takes the proposal");
    let key = Bytes::from_static(b"k");
    let read = cluster.replicas[old].read(cluster.now, 2, ReadMode::Linearizable, key);
    assert!(read.is_none(), "the read waits for a heartbeat round");
    cluster.run_until("another leader", |cluster| {
        (0..3).any(|at| at != old && cluster.replicas[at].status().role == Role::Leader)
    });
    cluster.cut = None;
    // The core bumps its term before its step-down cleanup, so it does not report the
    // proposal as dropped; the replica ends it when a term-2 entry settles its index.
    // Neither can be answered as done: the write may or may not commit, the read is refused.
    assert_eq!(cluster.answer(1), Answer::Unknown);
    assert!(matches!(cluster.answer(2), Answer::Refused { .. }));
    assert!(cluster.replicas[old].proposals.is_empty() && cluster.replicas[old].reads.is_empty());
}

/// The log compacts past a follower that is cut off; once back it is sent the machine's state
/// streamed from the leader's store in chunks, stages them, installs, and holds every key.
#[test]
fn a_follower_behind_the_compaction_catches_up_by_a_streamed_snapshot() {
    let mut cluster = Cluster::new(4);
    let leader = cluster.elect();
    let behind = (leader + 1) % 3;
    cluster.cut = Some(cluster.ids[behind]);
    for seq in 1..=30 {
        let key = format!("key-{seq:03}");
        let answer = cluster.write(leader, seq as Tag, &put(seq, &key, "a value of some size"));
        assert!(matches!(answer, Answer::Written(Ok(_))), "{answer:?}");
    }
    let compacted = cluster.replicas[leader].status().snapshot_index;
    assert!(
        compacted.0 > 20,
        "the leader compacted past the follower: {compacted:?}"
    );
    cluster.cut = None;
    cluster.run_until("the follower holds every key", |cluster| {
        cluster.stores[behind].len(GROUP) == 30
    });
    let status = cluster.replicas[behind].status();
    assert!(
        status.snapshot_index >= compacted,
        "it installed a snapshot: {status:?}"
    );
    let machine = cluster.replicas[behind].machine();
    let found = machine.get(b"key-017").unwrap().expect("installed");
    assert_eq!(found.value, Bytes::from_static(b"a value of some size"));
}

/// A chunk that is not an image of this machine never reaches the core, so nothing of it
/// is staged or installed.
#[test]
fn a_snapshot_chunk_that_does_not_decode_is_dropped_on_arrival() {
    let mut cluster = Cluster::new(1_000);
    let leader = cluster.elect();
    let follower = (leader + 1) % 3;
    let status = cluster.replicas[leader].status();
    let meta = SnapshotMeta {
        index: LogIndex(status.commit.0 + 10),
        term: status.term,
        membership: status.membership.clone(),
    };
    let envelope = Envelope {
        from: cluster.ids[leader],
        to: cluster.ids[follower],
        msg: RaftMessage::InstallSnapshot {
            term: status.term,
            meta,
            offset: 0,
            data: Bytes::from_static(b"not an image chunk"),
            last: true,
        },
    };
    cluster.replicas[follower].handle_message(cluster.now, envelope);
    let ready = cluster.replicas[follower].take_ready();
    let staged = ready.as_ref().map_or(0, |ready| ready.machine.staged.len());
    let installing = ready.as_ref().is_some_and(|ready| ready.machine.install);
    assert_eq!((staged, installing), (0, false));
    if let Some(ready) = ready {
        let applied = cluster.replicas[follower].on_persisted(ready);
        assert!(applied.faults.is_empty());
    }
}
