//! Engines driven by hand: a tiny in-test cluster that persists every batch at once, passes
//! every message through `wire::roundtrip`, and can cut links and crash nodes.

use super::*;
use crate::types::{Instant, NodeId, WallMillis};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// The keyspace id every test engine uses in its store.
const KEYSPACE: crate::types::KeyspaceId = crate::types::KeyspaceId(0);

/// An empty durable image.
fn empty_image() -> Arc<MemoryStates> {
    Arc::new(MemoryStates::new())
}

/// A durable image holding `keys` and `meta`, as an engine's batches would have left it
/// (the meta's HLC covers every stored stamp).
fn image_of(keys: BTreeMap<Bytes, KeyState>, mut meta: DurableMeta) -> Arc<MemoryStates> {
    for stamp in keys.values().filter_map(KeyState::lww_stamp) {
        meta.hlc = meta.hlc.max(stamp);
    }
    let keys = keys
        .into_iter()
        .map(|(key, state)| {
            let row = StoredKey::new(hash::key_hash(&key), state);
            (key, Some(row))
        })
        .collect();
    let image = empty_image();
    let batch = PersistBatch {
        id: PersistId(0),
        keys,
        meta,
    };
    image.commit(KEYSPACE, &batch);
    image
}

/// An engine on `image`.
fn engine_on(config: EngineConfig, image: &Arc<MemoryStates>, seed: u64) -> AntiEntropy {
    let store = KeyspaceStore::new(image.clone(), KEYSPACE);
    AntiEntropy::new(config, store, seed).unwrap()
}

struct Node {
    engine: AntiEntropy,
    image: Arc<MemoryStates>,
    events: Vec<Event>,
    /// When false, batches are not persisted (the shell's disk is slow).
    persisting: bool,
}

struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    configs: BTreeMap<NodeId, EngineConfig>,
    now: Instant,
    wall: u64,
    in_flight: VecDeque<(NodeId, NodeId, GossipMessage)>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    next_request: u64,
    delivered_bytes: u64,
    /// Chaos: probability to drop / duplicate a message; deliveries in random order.
    chaos: Option<(f64, f64, rand_chacha::ChaCha8Rng)>,
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

impl Cluster {
    fn new(count: u64, value_type: ValueType) -> Cluster {
        Cluster::with_config(count, value_type, |_| {})
    }

    /// An `lww` cluster whose clocks may be off by a second only, so that tombstones are old
    /// enough to collect after a second (see `gc`).
    fn short_clock_window(count: u64) -> Cluster {
        Cluster::with_config(count, ValueType::Lww, |config| {
            config.clock_skew_max = Duration::from_secs(1);
        })
    }

    fn with_config(
        count: u64,
        value_type: ValueType,
        tweak: impl Fn(&mut EngineConfig),
    ) -> Cluster {
        let members: Vec<NodeId> = (1..=count).map(NodeId).collect();
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            now: Instant::from_nanos(1_000_000_000),
            wall: 1_000_000,
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            next_request: 1,
            delivered_bytes: 0,
            chaos: None,
        };
        for node in &members {
            let mut config = EngineConfig::new(*node, members.clone(), value_type);
            tweak(&mut config);
            cluster.install(config, empty_image(), node.0);
        }
        for node in members {
            let (now, wall) = (cluster.now, WallMillis(cluster.wall));
            cluster.node(node).engine.handle_timeout(now, wall);
        }
        cluster
    }

    /// Runs a node of `config` from `image` (replacing one of the same id).
    fn install(&mut self, config: EngineConfig, image: Arc<MemoryStates>, seed: u64) {
        let id = config.node;
        let engine = engine_on(config.clone(), &image, seed);
        self.configs.insert(id, config);
        let node = Node {
            engine,
            image,
            events: Vec::new(),
            persisting: true,
        };
        self.nodes.insert(id, node);
    }

    fn node(&mut self, node: NodeId) -> &mut Node {
        self.nodes.get_mut(&node).expect("test node exists")
    }

    fn engine(&self, node: u64) -> &AntiEntropy {
        &self.nodes[&NodeId(node)].engine
    }

    /// Persists (if allowed), collects messages and events of one node until quiet.
    fn drain(&mut self, id: NodeId) {
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("test node exists");
        loop {
            let mut progressed = false;
            if node.persisting {
                while let Some(batch) = node.engine.poll_persist() {
                    node.image.commit(KEYSPACE, &crate::wire::roundtrip(&batch));
                    node.engine.persisted(now, batch.id);
                    progressed = true;
                }
            }
            while let Some((to, message)) = node.engine.poll_transmit() {
                self.in_flight.push_back((id, to, message));
                progressed = true;
            }
            while let Some(event) = node.engine.poll_event() {
                node.events.push(event);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        node.engine.check_invariants();
    }

    fn deliver_all(&mut self) {
        for _ in 0..100_000 {
            let Some((from, to, message)) = self.in_flight.pop_front() else {
                return;
            };
            if self.cut.contains(&(from, to)) {
                continue;
            }
            self.delivered_bytes += crate::wire::encode(&message).unwrap().len() as u64;
            let message = crate::wire::roundtrip(&message);
            let (now, wall) = (self.now, WallMillis(self.wall));
            self.node(to)
                .engine
                .handle_message(now, wall, from, message);
            self.drain(to);
        }
        panic!("messages kept flowing for 100,000 deliveries");
    }

    /// Advances time in `step`s, firing timeouts and delivering everything after each.
    fn run_for(&mut self, total: Duration, step: Duration) {
        let end = self.now + total;
        while self.now < end {
            self.now += step;
            self.wall += step.as_millis() as u64;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let (now, wall) = (self.now, WallMillis(self.wall));
                let node = self.node(id);
                if node.engine.poll_timeout().is_some_and(|at| at <= now) {
                    node.engine.handle_timeout(now, wall);
                }
                self.drain(id);
            }
            self.deliver_all();
        }
    }

    fn write(&mut self, node: u64, key: &str, op: Op, level: WriteLevel) -> RequestId {
        self.try_write(node, key, op, level).unwrap()
    }

    /// A write the engine may refuse; one it takes is persisted and spread like `write`'s.
    fn try_write(
        &mut self,
        node: u64,
        key: &str,
        op: Op,
        level: WriteLevel,
    ) -> Result<RequestId, WriteError> {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let (now, wall) = (self.now, WallMillis(self.wall));
        self.node(NodeId(node))
            .engine
            .local_write(now, wall, id, bytes(key), op, level)?;
        self.drain(NodeId(node));
        self.deliver_all();
        Ok(id)
    }

    /// A write whose client chose its time (`at`), as a resend carries it.
    fn write_at(
        &mut self,
        node: u64,
        key: &str,
        op: Op,
        at: HlcTimestamp,
    ) -> Result<(), WriteError> {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let (now, wall) = (self.now, WallMillis(self.wall));
        self.node(NodeId(node)).engine.local_write_at(
            now,
            wall,
            id,
            bytes(key),
            op,
            WriteLevel::Local,
            Some(at),
        )?;
        self.drain(NodeId(node));
        self.deliver_all();
        Ok(())
    }

    fn read(&mut self, node: u64, key: &str, level: ReadMode) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let now = self.now;
        self.node(NodeId(node))
            .engine
            .read(now, id, bytes(key), level)
            .unwrap();
        self.drain(NodeId(node));
        self.deliver_all();
        id
    }

    fn event_for(&self, node: u64, id: RequestId) -> Option<&Event> {
        self.nodes[&NodeId(node)]
            .events
            .iter()
            .find(|event| match event {
                Event::WriteAcked { id: got, .. }
                | Event::WriteFailed { id: got, .. }
                | Event::ReadDone { id: got, .. }
                | Event::ReadFailed { id: got, .. } => *got == id,
            })
    }

    fn token_of(&self, node: u64, id: RequestId) -> SessionToken {
        match self.event_for(node, id) {
            Some(Event::WriteAcked { token, .. }) => *token,
            other => panic!("write {id:?} not acked: {other:?}"),
        }
    }

    fn isolate(&mut self, node: u64) {
        for other in self.nodes.keys().copied().collect::<Vec<_>>() {
            if other != NodeId(node) {
                self.cut.insert((NodeId(node), other));
                self.cut.insert((other, NodeId(node)));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    /// Loses everything not persisted and restarts the node from its durable image.
    fn crash_restart(&mut self, node: u64) {
        let id = NodeId(node);
        let config = self.configs[&id].clone();
        let image = self.nodes[&id].image.clone();
        self.install(config, image, 99 + node);
        let (now, wall) = (self.now, WallMillis(self.wall));
        self.node(id).engine.handle_timeout(now, wall);
        self.drain(id);
    }

    fn assert_converged(&self) {
        let first = self.engine(1).live_entries();
        for (id, node) in &self.nodes {
            if node.persisting && node.engine.pending_writes() == 0 {
                // Memory holds no row once every batch is in the store.
                assert_eq!(
                    node.engine.fresh_rows(),
                    0,
                    "{id} holds rows beyond its store"
                );
            }
            let live = node.engine.live_entries();
            let differing: Vec<_> = first
                .iter()
                .filter(|(key, state)| live.get(*key) != Some(*state))
                .map(|(key, _)| key.clone())
                .chain(live.keys().filter(|key| !first.contains_key(*key)).cloned())
                .take(5)
                .collect();
            assert!(
                differing.is_empty(),
                "{id} differs from n1 on keys {differing:?} (first five)"
            );
        }
    }
}

const STEP: Duration = Duration::from_millis(10);

#[test]
fn wrong_op_for_the_keyspace_type_is_refused_and_applies_nothing() {
    let mut cluster = Cluster::new(1, ValueType::Counter);
    let engine = &mut cluster.node(NodeId(1)).engine;
    let result = engine.local_write(
        Instant::from_nanos(5),
        WallMillis(1),
        RequestId(1),
        bytes("k"),
        Op::LwwPut(bytes("v")),
        WriteLevel::Local,
    );
    assert_eq!(
        result,
        Err(WriteError::WrongType {
            expected: ValueType::Counter,
            got: ValueType::Lww
        })
    );
    assert!(engine.poll_persist().is_none());
    assert_eq!(engine.value(b"k"), ReadValue::Counter(0));
}

#[test]
fn local_write_is_acked_only_after_it_is_persisted() {
    let mut cluster = Cluster::new(2, ValueType::Lww);
    cluster.node(NodeId(1)).persisting = false;
    let id = cluster.write(1, "k", Op::LwwPut(bytes("v")), WriteLevel::Local);
    assert!(
        cluster.event_for(1, id).is_none(),
        "no ack before the persist"
    );
    assert_eq!(
        cluster.engine(2).value(b"k"),
        ReadValue::empty(ValueType::Lww),
        "no delta before the persist"
    );
    assert_eq!(
        cluster.engine(1).value(b"k"),
        ReadValue::empty(ValueType::Lww),
        "pending writes are invisible"
    );
    cluster.node(NodeId(1)).persisting = true;
    cluster.drain(NodeId(1));
    cluster.deliver_all();
    assert!(matches!(
        cluster.event_for(1, id),
        Some(Event::WriteAcked { acks: 1, .. })
    ));
    assert!(
        matches!(cluster.engine(2).value(b"k"), ReadValue::Lww { value: Some(v), .. } if v == "v")
    );
}

#[test]
fn a_crash_before_the_persist_loses_the_unacked_write_and_never_reuses_its_dot() {
    let mut cluster = Cluster::new(2, ValueType::Counter);
    let first = cluster.write(1, "c", Op::CounterAdd(5), WriteLevel::Local);
    let first_token = cluster.token_of(1, first);
    cluster.node(NodeId(1)).persisting = false;
    cluster.write(1, "c", Op::CounterAdd(100), WriteLevel::Local);
    cluster.crash_restart(1);
    let second = cluster.write(1, "c", Op::CounterAdd(1), WriteLevel::Local);
    assert!(cluster.token_of(1, second).seq > first_token.seq);
    cluster.run_for(Duration::from_secs(2), STEP);
    assert_eq!(cluster.engine(1).value(b"c"), ReadValue::Counter(6));
    assert_eq!(cluster.engine(2).value(b"c"), ReadValue::Counter(6));
}

fn diverge_and_converge(value_type: ValueType, ops: [Op; 2]) {
    let mut cluster = Cluster::new(2, value_type);
    cluster.isolate(1);
    let [first, second] = ops;
    for index in 0..20 {
        cluster.write(1, &format!("a{index}"), first.clone(), WriteLevel::Local);
        cluster.write(2, &format!("b{index}"), second.clone(), WriteLevel::Local);
    }
    cluster.write(1, "both", first, WriteLevel::Local);
    cluster.write(2, "both", second, WriteLevel::Local);
    assert_ne!(
        cluster.engine(1).merkle_root(),
        cluster.engine(2).merkle_root()
    );
    cluster.heal();
    cluster.run_for(Duration::from_secs(2), STEP);
    cluster.assert_converged();
    assert_eq!(
        cluster.engine(1).merkle_root(),
        cluster.engine(2).merkle_root()
    );
    assert_eq!(cluster.engine(1).live_entries().len(), 41);
    assert_eq!(
        cluster.engine(1).live_key_count(),
        41,
        "the O(1) count agrees"
    );
    assert!(
        cluster.engine(1).stats().keys_repaired + cluster.engine(2).stats().keys_repaired >= 40
    );
}

#[test]
fn two_engines_converge_by_anti_entropy_after_divergent_writes() {
    diverge_and_converge(
        ValueType::Lww,
        [Op::LwwPut(bytes("x")), Op::LwwPut(bytes("y"))],
    );
    diverge_and_converge(ValueType::Counter, [Op::CounterAdd(3), Op::CounterAdd(-1)]);
    diverge_and_converge(
        ValueType::Set,
        [Op::SetAdd(bytes("x")), Op::SetAdd(bytes("y"))],
    );
    let put = |value| Op::MvPut {
        value: bytes(value),
        context: None,
    };
    diverge_and_converge(ValueType::MvReg, [put("x"), put("y")]);
}

#[test]
fn concurrent_mvreg_writes_become_siblings_and_a_context_write_replaces_them() {
    let mut cluster = Cluster::new(2, ValueType::MvReg);
    cluster.isolate(1);
    cluster.write(
        1,
        "k",
        Op::MvPut {
            value: bytes("a"),
            context: None,
        },
        WriteLevel::Local,
    );
    cluster.write(
        2,
        "k",
        Op::MvPut {
            value: bytes("b"),
            context: None,
        },
        WriteLevel::Local,
    );
    cluster.heal();
    cluster.run_for(Duration::from_secs(1), STEP);
    let ReadValue::MvReg { siblings, context } = cluster.engine(1).value(b"k") else {
        panic!("mvreg")
    };
    assert_eq!(siblings, vec![bytes("a"), bytes("b")]);
    cluster.write(
        2,
        "k",
        Op::MvPut {
            value: bytes("c"),
            context: Some(context),
        },
        WriteLevel::Local,
    );
    let ReadValue::MvReg { siblings, .. } = cluster.engine(1).value(b"k") else {
        panic!("mvreg")
    };
    assert_eq!(siblings, vec![bytes("c")]);
}

/// A forged `mvreg` context claiming this node's write `u64::MAX` would dominate every later
/// write of this node: blind puts would be acknowledged and dropped. A context may only name
/// writes the node has seen; one read on another node before the write spread is refused
/// too, and taken once the write has arrived.
#[test]
fn an_mvreg_context_naming_unseen_writes_is_refused() {
    let mut cluster = Cluster::new(2, ValueType::MvReg);
    let put = |value, context| Op::MvPut {
        value: bytes(value),
        context,
    };
    let forged = ReadContext(crdts::VClock::from(crdts::Dot::new(NodeId(1), u64::MAX)));
    let refused = cluster.try_write(1, "k", put("forged", Some(forged)), WriteLevel::Local);
    assert!(matches!(
        refused,
        Err(WriteError::ContextAhead {
            node: NodeId(1),
            counter: u64::MAX,
            seen: 0
        })
    ));
    cluster.write(1, "k", put("blind", None), WriteLevel::Local);
    let ReadValue::MvReg { siblings, .. } = cluster.engine(1).value(b"k") else {
        panic!("mvreg")
    };
    assert_eq!(siblings, vec![bytes("blind")], "the blind put is kept");

    // n2 writes while cut off; a client reads it there and writes back through n1.
    cluster.isolate(2);
    cluster.write(2, "k", put("from n2", None), WriteLevel::Local);
    let ReadValue::MvReg { context, .. } = cluster.engine(2).value(b"k") else {
        panic!("mvreg")
    };
    let replace = put("replaces both", Some(context.clone()));
    let early = cluster.try_write(1, "k", replace, WriteLevel::Local);
    assert!(
        matches!(
            early,
            Err(WriteError::ContextAhead {
                node: NodeId(2),
                ..
            })
        ),
        "{early:?}"
    );
    cluster.heal();
    cluster.run_for(Duration::from_secs(1), STEP);
    cluster.write(
        1,
        "k",
        put("replaces both", Some(context)),
        WriteLevel::Local,
    );
    let ReadValue::MvReg { siblings, .. } = cluster.engine(1).value(b"k") else {
        panic!("mvreg")
    };
    assert_eq!(siblings, vec![bytes("replaces both")]);
}

#[test]
fn lww_later_write_wins_even_from_a_node_whose_wall_clock_is_behind() {
    let mut cluster = Cluster::new(2, ValueType::Lww);
    cluster.write(1, "k", Op::LwwPut(bytes("first")), WriteLevel::Local);
    cluster.wall -= 60_000; // the wall clock jumps back a minute everywhere
    cluster.write(2, "k", Op::LwwPut(bytes("second")), WriteLevel::Local);
    cluster.run_for(Duration::from_millis(500), STEP);
    for node in [1, 2] {
        assert!(
            matches!(cluster.engine(node).value(b"k"), ReadValue::Lww { value: Some(v), .. } if v == "second")
        );
    }
}

/// The story: a client's `lww` put timed out after it applied on n1; another client then
/// wrote the key through n2; the first client resent its put through n3. The resend took a
/// new, later timestamp and overwrote the newer write. Now the client's time travels with the
/// write, so the resend stores what the first attempt stored, and the newer write stays.
#[test]
fn a_resent_lww_write_keeps_its_time_and_does_not_overwrite_a_newer_write() {
    let mut cluster = Cluster::new(3, ValueType::Lww);
    let first = HlcTimestamp {
        physical_ms: cluster.wall,
        logical: 0,
        node: NodeId(0xc1),
    };
    cluster
        .write_at(1, "k", Op::LwwPut(bytes("first")), first)
        .unwrap();
    cluster.run_for(Duration::from_millis(500), STEP);
    cluster.wall += 10;
    cluster.write(2, "k", Op::LwwPut(bytes("newer")), WriteLevel::Local);
    cluster.run_for(Duration::from_millis(500), STEP);
    cluster
        .write_at(3, "k", Op::LwwPut(bytes("first")), first)
        .unwrap();
    cluster
        .write_at(1, "k", Op::LwwPut(bytes("first")), first)
        .unwrap();
    cluster.run_for(Duration::from_millis(500), STEP);
    for node in [1, 2, 3] {
        let value = cluster.engine(node).value(b"k");
        assert!(
            matches!(&value, ReadValue::Lww { value: Some(v), .. } if v == "newer"),
            "n{node}: {value:?}"
        );
    }
    // The node's own clock moved past the client's time: its next write is later.
    let ahead = HlcTimestamp {
        physical_ms: cluster.wall + 1_000,
        ..first
    };
    cluster
        .write_at(1, "j", Op::LwwPut(bytes("client")), ahead)
        .unwrap();
    let id = cluster.write(1, "j", Op::LwwPut(bytes("node")), WriteLevel::Local);
    assert!(acked_stamp(&cluster, 1, id) > ahead);
}

/// A client's time further ahead than the clock skew bound would win every write for that
/// long, one further behind could outlive a collected delete: both refused, nothing changes.
#[test]
fn a_client_time_past_the_clock_skew_is_refused() {
    let mut cluster = Cluster::new(1, ValueType::Lww);
    let skew_ms = cluster.engine(1).config().clock_skew_max.as_millis() as u64;
    let at = HlcTimestamp {
        physical_ms: cluster.wall + skew_ms + 1,
        logical: 0,
        node: NodeId(0xc1),
    };
    let refused = cluster.write_at(1, "k", Op::LwwPut(bytes("v")), at);
    assert_eq!(
        refused,
        Err(WriteError::StampAhead {
            ahead_ms: skew_ms + 1,
            skew_max_ms: skew_ms
        })
    );
    assert_eq!(
        cluster.engine(1).value(b"k"),
        ReadValue::empty(ValueType::Lww)
    );
    let within = HlcTimestamp {
        physical_ms: cluster.wall + skew_ms,
        ..at
    };
    cluster
        .write_at(1, "k", Op::LwwPut(bytes("v")), within)
        .unwrap();
    // The clock is at `within` now. A time further back than the bound could outlive a
    // delete already collected (see `gc`): refused too.
    let behind = HlcTimestamp {
        physical_ms: within.physical_ms - skew_ms - 1,
        ..at
    };
    let refused = cluster.write_at(1, "k", Op::LwwPut(bytes("old")), behind);
    assert_eq!(
        refused,
        Err(WriteError::StampBehind {
            behind_ms: skew_ms + 1,
            skew_max_ms: skew_ms
        })
    );
}

/// The story: a set removal timed out; meanwhile another client added the member again; the
/// resend, through another node, removed the new add too. With the context of the read the
/// removal is based on, every attempt removes the same adds, and the newer add stays.
#[test]
fn a_resent_set_removal_keeps_its_context_and_does_not_remove_a_newer_add() {
    let mut cluster = Cluster::new(3, ValueType::Set);
    cluster.write(1, "s", Op::SetAdd(bytes("x")), WriteLevel::Local);
    cluster.run_for(Duration::from_millis(500), STEP);
    let ReadValue::Set { context, .. } = cluster.engine(1).value(b"s") else {
        panic!("a set")
    };
    let remove = || Op::SetRemove {
        member: bytes("x"),
        seen: Some(context.clone()),
    };
    cluster.write(1, "s", remove(), WriteLevel::Local);
    cluster.run_for(Duration::from_millis(500), STEP);
    assert_eq!(cluster.engine(2).value(b"s").members(), Some(&[][..]));
    cluster.write(2, "s", Op::SetAdd(bytes("x")), WriteLevel::Local);
    cluster.run_for(Duration::from_millis(500), STEP);
    cluster.write(3, "s", remove(), WriteLevel::Local);
    cluster.run_for(Duration::from_millis(500), STEP);
    for node in [1, 2, 3] {
        let members = cluster.engine(node).value(b"s");
        assert_eq!(members.members(), Some(&[bytes("x")][..]), "n{node}");
    }
    // Without a context a removal takes what its node has seen: the newer add goes.
    let blind = Op::SetRemove {
        member: bytes("x"),
        seen: None,
    };
    cluster.write(3, "s", blind, WriteLevel::Local);
    cluster.run_for(Duration::from_millis(500), STEP);
    assert_eq!(cluster.engine(1).value(b"s").members(), Some(&[][..]));
}

/// The stamp a node acknowledged write `id` with.
fn acked_stamp(cluster: &Cluster, node: u64, id: RequestId) -> HlcTimestamp {
    match cluster.event_for(node, id) {
        Some(Event::WriteAcked {
            stamp: Some(stamp), ..
        }) => *stamp,
        other => panic!("lww write {id:?} not acked with a stamp: {other:?}"),
    }
}

/// Found by the eventual simulator (seed 1996, a whole-cluster crash): the HLC must never
/// issue a durable stamp twice. Its high-water mark rides every persist batch
/// (`DurableMeta::hlc`), so a node rebuilt from its durable image alone, with its wall clock
/// stepped back, still stamps strictly above everything it issued or observed before. The
/// highest stamp here is a delete whose tombstone was collected: only the meta remembers it.
#[test]
fn lww_stamps_after_a_crash_and_a_wall_clock_step_back_exceed_every_earlier_stamp() {
    let mut cluster = Cluster::new(2, ValueType::Lww);
    let mut before = Vec::new();
    for (key, value) in [("a", "1"), ("a", "2"), ("b", "3")] {
        // One wall millisecond: the logical counter climbs.
        let id = cluster.write(1, key, Op::LwwPut(bytes(value)), WriteLevel::Local);
        before.push(acked_stamp(&cluster, 1, id));
    }
    cluster.wall += 30_000; // n2's write carries a stamp 30 s ahead; n1 observes it
    let remote = cluster.write(2, "c", Op::LwwPut(bytes("remote")), WriteLevel::Local);
    before.push(acked_stamp(&cluster, 2, remote));
    cluster.wall -= 30_000;
    let delete = cluster.write(1, "c", Op::LwwDelete, WriteLevel::Local);
    let highest = acked_stamp(&cluster, 1, delete);
    assert!(before.iter().all(|earlier| highest > *earlier));
    before.push(highest);
    // The tombstone is collected once its time is past the clock window (see `gc`).
    let window_ms = cluster.engine(1).config().clock_skew_max.as_millis() as u64;
    cluster.wall += 30_000 + window_ms + 1_000;
    cluster.run_for(Duration::from_secs(3), STEP);
    let image = &cluster.nodes[&NodeId(1)].image;
    assert!(
        cluster.engine(1).tombstones_pending() == 0 && image.get(KEYSPACE, b"c").unwrap().is_none(),
        "the tombstone holding the highest stamp was collected from the durable image"
    );
    let durable = image
        .load(KEYSPACE)
        .unwrap()
        .meta
        .expect("batches were persisted")
        .hlc;
    assert!(
        (durable.physical_ms, durable.logical) >= (highest.physical_ms, highest.logical),
        "the persisted high-water mark covers every stamp issued or observed"
    );

    cluster.crash_restart(1);
    cluster.wall -= 60_000; // the wall clock steps back a minute across the restart
    for key in ["a", "b", "c"] {
        let id = cluster.write(1, key, Op::LwwPut(bytes("new")), WriteLevel::Local);
        let stamp = acked_stamp(&cluster, 1, id);
        assert!(
            before.iter().all(|earlier| stamp > *earlier),
            "{stamp:?} is not above every stamp before the crash: {before:?}"
        );
        before.push(stamp);
    }
    cluster.run_for(Duration::from_millis(500), STEP);
    cluster.assert_converged();
    assert!(
        matches!(cluster.engine(2).value(b"c"), ReadValue::Lww { value: Some(v), .. } if v == "new"),
        "the post-restart write wins over the pre-crash delete"
    );
}

#[test]
fn quorum_write_is_acked_after_a_majority_persisted_it() {
    let mut cluster = Cluster::new(3, ValueType::Lww);
    cluster.isolate(3);
    let id = cluster.write(1, "k", Op::LwwPut(bytes("v")), WriteLevel::Quorum);
    assert!(matches!(
        cluster.event_for(1, id),
        Some(Event::WriteAcked { acks: 2, .. })
    ));
    let key_in_image = cluster.nodes[&NodeId(2)]
        .image
        .get(KEYSPACE, b"k")
        .unwrap()
        .is_some();
    assert!(key_in_image, "the acking replica persisted the delta");
}

#[test]
fn quorum_write_without_a_majority_fails_typed_but_stays_applied_and_spreads() {
    let mut cluster = Cluster::new(3, ValueType::Lww);
    cluster.isolate(1);
    let id = cluster.write(1, "k", Op::LwwPut(bytes("v")), WriteLevel::Quorum);
    assert!(cluster.event_for(1, id).is_none());
    cluster.run_for(Duration::from_millis(1_100), STEP);
    match cluster.event_for(1, id) {
        Some(Event::WriteFailed {
            error:
                WriteError::QuorumNotReached {
                    acked: 1,
                    needed: 2,
                },
            ..
        }) => {}
        other => panic!("expected QuorumNotReached, got {other:?}"),
    }
    assert!(matches!(
        cluster.engine(1).value(b"k"),
        ReadValue::Lww { value: Some(_), .. }
    ));
    cluster.heal();
    cluster.run_for(Duration::from_secs(3), STEP);
    cluster.assert_converged();
    assert!(matches!(
        cluster.engine(3).value(b"k"),
        ReadValue::Lww { value: Some(_), .. }
    ));
}

#[test]
fn all_write_needs_every_member() {
    let mut cluster = Cluster::new(3, ValueType::Counter);
    let id = cluster.write(2, "c", Op::CounterAdd(1), WriteLevel::All);
    assert!(matches!(
        cluster.event_for(2, id),
        Some(Event::WriteAcked { acks: 3, .. })
    ));
    cluster.cut.insert((NodeId(3), NodeId(2))); // n3's acks cannot reach n2
    let id = cluster.write(2, "c", Op::CounterAdd(1), WriteLevel::All);
    cluster.run_for(Duration::from_millis(1_100), STEP);
    assert!(matches!(
        cluster.event_for(2, id),
        Some(Event::WriteFailed {
            error: WriteError::QuorumNotReached {
                acked: 2,
                needed: 3
            },
            ..
        })
    ));
}

#[test]
fn session_read_waits_for_its_token_then_serves() {
    let mut cluster = Cluster::new(2, ValueType::Lww);
    cluster.isolate(2);
    let write = cluster.write(1, "k", Op::LwwPut(bytes("mine")), WriteLevel::Local);
    let token = cluster.token_of(1, write);
    let read = cluster.read(2, "k", ReadMode::Session(token));
    assert!(
        cluster.event_for(2, read).is_none(),
        "n2 has not seen the write: wait"
    );
    cluster.run_for(Duration::from_millis(300), STEP);
    assert!(cluster.event_for(2, read).is_none());
    cluster.heal();
    cluster.run_for(Duration::from_millis(400), STEP);
    match cluster.event_for(2, read) {
        Some(Event::ReadDone {
            value: ReadValue::Lww { value: Some(v), .. },
            ..
        }) => assert_eq!(v, "mine"),
        other => panic!("expected the session read to see the write, got {other:?}"),
    }
    let again = cluster.read(2, "k", ReadMode::Session(token));
    assert!(
        matches!(cluster.event_for(2, again), Some(Event::ReadDone { .. })),
        "served at once now"
    );
}

#[test]
fn session_read_times_out_with_a_typed_error() {
    let mut cluster = Cluster::new(2, ValueType::Lww);
    cluster.isolate(2);
    let write = cluster.write(1, "k", Op::LwwPut(bytes("mine")), WriteLevel::Local);
    let token = cluster.token_of(1, write);
    let read = cluster.read(2, "k", ReadMode::Session(token));
    cluster.run_for(Duration::from_millis(1_100), STEP);
    match cluster.event_for(2, read) {
        Some(Event::ReadFailed {
            error: ReadError::SessionTimeout { token: got, waited },
            ..
        }) => {
            assert_eq!(*got, token);
            assert!(*waited >= Duration::from_secs(1));
        }
        other => panic!("expected SessionTimeout, got {other:?}"),
    }
}

#[test]
fn quorum_read_merges_a_majority_and_repairs_stale_replicas() {
    let mut cluster = Cluster::new(3, ValueType::Counter);
    // n1's increment reaches only n2; n3's stays on n3. Reads happen before anti-entropy runs.
    cluster
        .cut
        .extend([(NodeId(1), NodeId(3)), (NodeId(3), NodeId(1))]);
    cluster.write(1, "c", Op::CounterAdd(7), WriteLevel::Local);
    cluster
        .cut
        .extend([(NodeId(2), NodeId(3)), (NodeId(3), NodeId(2))]);
    cluster.write(3, "c", Op::CounterAdd(1), WriteLevel::Local);
    assert_eq!(cluster.engine(2).value(b"c"), ReadValue::Counter(7));
    assert_eq!(cluster.engine(3).value(b"c"), ReadValue::Counter(1));
    // Now n2 reaches only n3: its quorum is {n2, n3}.
    cluster.cut.clear();
    cluster
        .cut
        .extend([(NodeId(1), NodeId(2)), (NodeId(2), NodeId(1))]);
    let read = cluster.read(2, "c", ReadMode::Quorum);
    match cluster.event_for(2, read) {
        Some(Event::ReadDone { value, .. }) => assert_eq!(*value, ReadValue::Counter(8)),
        other => panic!("expected a quorum read, got {other:?}"),
    }
    assert_eq!(
        cluster.engine(2).value(b"c"),
        ReadValue::Counter(8),
        "repaired locally"
    );
    assert_eq!(
        cluster.engine(3).value(b"c"),
        ReadValue::Counter(8),
        "stale n3 repaired"
    );
}

#[test]
fn quorum_read_without_a_majority_fails() {
    let mut cluster = Cluster::new(3, ValueType::Set);
    cluster.isolate(1);
    let read = cluster.read(1, "s", ReadMode::Quorum);
    cluster.run_for(Duration::from_millis(1_100), STEP);
    assert!(matches!(
        cluster.event_for(1, read),
        Some(Event::ReadFailed {
            error: ReadError::QuorumNotReached {
                answered: 1,
                needed: 2
            },
            ..
        })
    ));
}

#[test]
fn tombstone_is_kept_while_a_member_has_not_seen_it_and_the_delete_never_resurrects() {
    let mut cluster = Cluster::short_clock_window(3);
    cluster.write(1, "k", Op::LwwPut(bytes("old")), WriteLevel::All);
    cluster.run_for(Duration::from_secs(1), STEP);
    cluster.isolate(3); // n3 keeps "old"
    cluster.write(1, "k", Op::LwwDelete, WriteLevel::Local);
    cluster.run_for(Duration::from_secs(5), STEP);
    for node in [1, 2] {
        assert_eq!(
            cluster.engine(node).tombstones_pending(),
            1,
            "n3 has not seen the delete"
        );
        assert!(cluster.engine(node).key_state(b"k").is_some());
    }
    assert!(matches!(
        cluster.engine(3).value(b"k"),
        ReadValue::Lww { value: Some(_), .. }
    ));
    cluster.heal();
    cluster.run_for(Duration::from_secs(5), STEP);
    for node in [1, 2, 3] {
        let engine = cluster.engine(node);
        assert_eq!(
            engine.value(b"k"),
            ReadValue::Lww {
                value: None,
                stamp: None
            },
            "n{node}"
        );
        assert_eq!(
            engine.tombstones_pending(),
            0,
            "n{node} collected the tombstone"
        );
        assert!(
            engine.key_state(b"k").is_none(),
            "n{node} holds nothing for the key"
        );
    }
    cluster.run_for(Duration::from_secs(1), STEP);
    cluster.assert_converged();
    assert!(cluster.engine(1).live_entries().is_empty());
    assert_eq!(cluster.engine(1).live_key_count(), 0);
}

#[test]
fn old_state_arriving_after_collection_is_dropped() {
    let mut cluster = Cluster::short_clock_window(2);
    cluster.write(1, "k", Op::LwwPut(bytes("old")), WriteLevel::All);
    let old = cluster.engine(2).key_state(b"k").expect("n2 has the value");
    cluster.write(2, "k", Op::LwwDelete, WriteLevel::All);
    cluster.run_for(Duration::from_secs(3), STEP);
    assert!(
        cluster.engine(1).key_state(b"k").is_none(),
        "collected on n1"
    );
    assert!(
        cluster.engine(2).key_state(b"k").is_none(),
        "collected on n2"
    );
    let (now, wall) = (cluster.now, WallMillis(cluster.wall));
    let delta = GossipMessage::Delta {
        entry: KeyEntry {
            key: bytes("k"),
            state: old,
        },
        token: SessionToken {
            node: NodeId(1),
            seq: 1,
        },
        ack_requested: false,
    };
    cluster
        .node(NodeId(2))
        .engine
        .handle_message(now, wall, NodeId(1), delta);
    assert!(
        cluster.engine(2).key_state(b"k").is_none(),
        "the delayed old value did not resurrect"
    );
    cluster.write(1, "k", Op::LwwPut(bytes("new")), WriteLevel::Local);
    assert!(
        matches!(cluster.engine(2).value(b"k"), ReadValue::Lww { value: Some(v), .. } if v == "new")
    );
}

#[test]
fn set_remove_of_an_observed_add_converges_and_an_empty_set_is_collected() {
    let mut cluster = Cluster::new(2, ValueType::Set);
    cluster.write(1, "s", Op::SetAdd(bytes("x")), WriteLevel::Local);
    cluster.write(2, "s", Op::SetAdd(bytes("y")), WriteLevel::Local);
    cluster.write(
        2,
        "s",
        Op::SetRemove {
            member: bytes("x"),
            seen: None,
        },
        WriteLevel::Local,
    );
    cluster.run_for(Duration::from_millis(500), STEP);
    assert_eq!(
        cluster.engine(1).value(b"s").members(),
        Some(&[bytes("y")][..])
    );
    cluster.write(
        1,
        "s",
        Op::SetRemove {
            member: bytes("y"),
            seen: None,
        },
        WriteLevel::Local,
    );
    cluster.run_for(Duration::from_secs(3), STEP);
    assert_eq!(cluster.engine(2).value(b"s").members(), Some(&[][..]));
    assert!(
        cluster.engine(1).key_state(b"s").is_none() && cluster.engine(2).key_state(b"s").is_none()
    );
}

#[test]
fn in_sync_round_costs_a_few_hundred_bytes() {
    let mut cluster = Cluster::new(3, ValueType::Lww);
    for index in 0..200 {
        cluster.write(
            1 + index % 3,
            &format!("k{index}"),
            Op::LwwPut(bytes("v")),
            WriteLevel::Local,
        );
    }
    cluster.run_for(Duration::from_secs(2), STEP);
    cluster.assert_converged();
    let summary = cluster
        .engine(1)
        .stats()
        .last_session
        .expect("n1 ran sessions");
    assert!(summary.in_sync);
    let bytes = summary.bytes_sent + summary.bytes_received;
    assert!(bytes < 400, "an in-sync session cost {bytes} bytes");
}

#[test]
fn every_message_kind_round_trips_through_the_wire() {
    let state = {
        let mut state = KeyState::new(ValueType::Set);
        let stamp = WriteStamp {
            node: NodeId(1),
            seq: 1,
            hlc: HlcTimestamp::zero(NodeId(1)),
        };
        state.apply_local(Op::SetAdd(bytes("m")), stamp).unwrap();
        state
    };
    let entry = KeyEntry {
        key: bytes("k"),
        state: state.clone(),
    };
    let token = SessionToken {
        node: NodeId(1),
        seq: 1,
    };
    let node = merkle::NodeRef { level: 1, index: 3 };
    let messages = vec![
        GossipMessage::Delta {
            entry: entry.clone(),
            token,
            ack_requested: true,
        },
        GossipMessage::DeltaAck { token },
        GossipMessage::SyncRoot {
            session: 1,
            root: 2,
            knowledge: state.context.clone(),
        },
        GossipMessage::SyncRootReply {
            session: 1,
            knowledge: state.context.clone(),
            children: Some([7; 16]),
        },
        GossipMessage::SyncChildren {
            session: 1,
            nodes: vec![node],
        },
        GossipMessage::SyncChildrenReply {
            session: 1,
            nodes: vec![(node, [1; 16])],
        },
        GossipMessage::SyncLeafDigests {
            session: 1,
            leaves: vec![(4, vec![5])],
            bytes_max: 9,
        },
        GossipMessage::SyncLeafStates {
            session: 1,
            states: vec![entry.clone()],
            wanted: vec![1],
            truncated: vec![2],
        },
        GossipMessage::SyncPush {
            session: 1,
            states: vec![entry.clone()],
        },
        GossipMessage::ReadRequest {
            read: 1,
            key: bytes("k"),
        },
        GossipMessage::ReadReply {
            read: 1,
            key: bytes("k"),
            state: Some(state),
        },
        GossipMessage::Repair { entry },
    ];
    for message in messages {
        assert_eq!(crate::wire::roundtrip(&message), message);
    }
}

#[test]
fn state_digest_is_independent_of_merge_order() {
    let stamp = |node, seq| WriteStamp {
        node: NodeId(node),
        seq,
        hlc: HlcTimestamp::zero(NodeId(node)),
    };
    let mut a = KeyState::new(ValueType::Set);
    let mut b = KeyState::new(ValueType::Set);
    a.apply_local(Op::SetAdd(bytes("x")), stamp(1, 1)).unwrap();
    b.apply_local(Op::SetAdd(bytes("y")), stamp(2, 1)).unwrap();
    for value in ["p", "q", "r", "s", "t"] {
        a.apply_local(
            Op::SetAdd(bytes(value)),
            stamp(1, 2 + value.len() as u64 + value.as_bytes()[0] as u64),
        )
        .unwrap();
    }
    let mut ab = a.clone();
    ab.merge(b.clone()).unwrap();
    let mut ba = b.clone();
    ba.merge(a.clone()).unwrap();
    assert_eq!(ab, ba);
    assert_eq!(ab.digest(), ba.digest());
    let mut mv_a = KeyState::new(ValueType::MvReg);
    let mut mv_b = KeyState::new(ValueType::MvReg);
    mv_a.apply_local(
        Op::MvPut {
            value: bytes("1"),
            context: None,
        },
        stamp(1, 1),
    )
    .unwrap();
    mv_b.apply_local(
        Op::MvPut {
            value: bytes("2"),
            context: None,
        },
        stamp(2, 1),
    )
    .unwrap();
    let mut ab = mv_a.clone();
    ab.merge(mv_b.clone()).unwrap();
    let mut ba = mv_b;
    ba.merge(mv_a).unwrap();
    assert_eq!(ab.digest(), ba.digest());
}

/// Each planted bug must visibly break what the simulator's checkers look at.
#[cfg(feature = "sim-bugs")]
mod planted_bugs {
    use super::*;

    fn with_bug(count: u64, value_type: ValueType, bug: PlantedBug) -> Cluster {
        Cluster::with_config(count, value_type, |config| config.planted_bug = Some(bug))
    }

    #[test]
    fn planted_bug_names_round_trip() {
        for bug in PlantedBug::ALL {
            assert_eq!(PlantedBug::from_name(bug.name()), Some(bug));
        }
        assert_eq!(PlantedBug::from_name("no-such-bug"), None);
    }

    #[test]
    fn mvreg_drop_sibling_loses_a_concurrent_write() {
        let mut cluster = with_bug(2, ValueType::MvReg, PlantedBug::MergeDropsSibling);
        cluster.isolate(1);
        cluster.write(
            1,
            "k",
            Op::MvPut {
                value: bytes("a"),
                context: None,
            },
            WriteLevel::Local,
        );
        cluster.write(
            2,
            "k",
            Op::MvPut {
                value: bytes("b"),
                context: None,
            },
            WriteLevel::Local,
        );
        cluster.heal();
        cluster.run_for(Duration::from_secs(1), STEP);
        let ReadValue::MvReg { siblings, .. } = cluster.engine(1).value(b"k") else {
            panic!("mvreg")
        };
        assert_eq!(
            siblings.len(),
            1,
            "the bug keeps one of two concurrent siblings"
        );
    }

    #[test]
    fn early_tombstone_gc_lets_a_partitioned_replica_keep_a_deleted_value() {
        let mut cluster = with_bug(3, ValueType::Lww, PlantedBug::EarlyTombstoneGc);
        cluster.write(1, "k", Op::LwwPut(bytes("old")), WriteLevel::All);
        cluster.isolate(3);
        cluster.write(1, "k", Op::LwwDelete, WriteLevel::Local);
        cluster.run_for(Duration::from_millis(500), STEP);
        assert!(
            cluster.engine(1).key_state(b"k").is_none(),
            "collected at once"
        );
        cluster.heal();
        cluster.run_for(Duration::from_secs(3), STEP);
        assert!(matches!(
            cluster.engine(3).value(b"k"),
            ReadValue::Lww { value: Some(_), .. }
        ));
        assert_ne!(
            cluster.engine(1).live_entries(),
            cluster.engine(3).live_entries()
        );
    }

    #[test]
    fn merkle_forget_key_never_repairs_a_lost_delta() {
        let mut cluster = with_bug(2, ValueType::Counter, PlantedBug::MerkleForgetsKey);
        cluster.isolate(1);
        cluster.write(1, "c", Op::CounterAdd(1), WriteLevel::Local);
        cluster.heal();
        cluster.run_for(Duration::from_secs(2), STEP);
        assert_eq!(
            cluster.engine(2).value(b"c"),
            ReadValue::Counter(0),
            "never repaired"
        );
        assert_eq!(
            cluster.engine(1).merkle_root(),
            cluster.engine(2).merkle_root()
        );
    }
}

/// A small randomized run per value type: writes on every node, lossy, duplicating,
/// reordering links, partitions and crashes; after healing, every replica must converge and
/// every acknowledged counter increment must be counted.
#[test]
fn randomized_faults_then_heal_converge() {
    use rand::{Rng, SeedableRng};
    for (seed, value_type) in [
        (1u64, ValueType::Lww),
        (2, ValueType::MvReg),
        (3, ValueType::Counter),
        (4, ValueType::Set),
    ] {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut cluster = Cluster::new(3, value_type);
        cluster.chaos = Some((0.2, 0.1, rand_chacha::ChaCha8Rng::seed_from_u64(seed + 100)));
        let mut acked_sum = 0i64;
        let mut writes = Vec::new();
        for step in 0..300u64 {
            let node = 1 + rng.random_range(0..3u64);
            let key = format!("k{}", rng.random_range(0..8u64));
            let member = Bytes::from(vec![b'a' + rng.random_range(0..4u8)]);
            let op = match value_type {
                ValueType::Lww if rng.random_bool(0.2) => Op::LwwDelete,
                ValueType::Lww => Op::LwwPut(Bytes::from(format!("v{step}"))),
                ValueType::MvReg => {
                    let context = match cluster.engine(node).value(key.as_bytes()) {
                        ReadValue::MvReg { context, .. } if rng.random_bool(0.5) => Some(context),
                        _ => None,
                    };
                    if rng.random_bool(0.2) {
                        Op::MvDelete { context }
                    } else {
                        Op::MvPut {
                            value: Bytes::from(format!("v{step}")),
                            context,
                        }
                    }
                }
                ValueType::Counter => Op::CounterAdd(rng.random_range(1..5i64)),
                ValueType::Set if rng.random_bool(0.3) => Op::SetRemove { member, seen: None },
                ValueType::Set => Op::SetAdd(member),
            };
            let amount = if let Op::CounterAdd(amount) = op {
                amount
            } else {
                0
            };
            let level =
                [WriteLevel::Local, WriteLevel::Quorum, WriteLevel::All][rng.random_range(0..3)];
            let id = cluster.write(node, &key, op, level);
            writes.push((node, id, amount, key));
            match rng.random_range(0..40u32) {
                0 => cluster.isolate(1 + rng.random_range(0..3u64)),
                1 | 2 => cluster.heal(),
                3 => cluster.crash_restart(1 + rng.random_range(0..3u64)),
                _ => {}
            }
            cluster.run_for(Duration::from_millis(rng.random_range(0..60u64)), STEP);
        }
        cluster.heal();
        cluster.chaos = None;
        cluster.run_for(Duration::from_secs(10), STEP);
        cluster.assert_converged();
        if value_type == ValueType::Counter {
            // Events of a crashed node are gone; count acks the test still sees.
            for (node, id, amount, _) in &writes {
                if matches!(
                    cluster.event_for(*node, *id),
                    Some(Event::WriteAcked { .. })
                ) {
                    acked_sum += amount;
                }
            }
            let total: i64 = (0..8)
                .map(
                    |k| match cluster.engine(1).value(format!("k{k}").as_bytes()) {
                        ReadValue::Counter(value) => value,
                        other => panic!("counter expected, got {other:?}"),
                    },
                )
                .sum();
            assert!(
                total >= acked_sum,
                "acked increments lost: {total} < {acked_sum}"
            );
        }
        for node in [1, 2, 3] {
            cluster.engine(node).check_invariants();
        }
    }
}

/// Two replicas of 20,000 keys that differ in 20 (n2 overwrote them): one session repairs
/// n1, moving the differing states about once, plus the tree path (children hashes and the
/// leaf digests) -- not the data set.
#[test]
fn repair_costs_in_proportion_to_the_difference() {
    use crdts::{CmRDT, Dot, VClock};
    let (keys, differing) = (20_000u64, 20u64);
    let key = |index: u64| Bytes::from(format!("user:{index:010}"));
    let stamp = |node: u64, seq: u64, physical_ms: u64| WriteStamp {
        node: NodeId(node),
        seq,
        hlc: HlcTimestamp {
            physical_ms,
            logical: 0,
            node: NodeId(node),
        },
    };
    let mut first = BTreeMap::new();
    for index in 0..keys {
        let mut state = KeyState::new(ValueType::Lww);
        state
            .apply_local(
                Op::LwwPut(Bytes::from_static(&[42; 32])),
                stamp(1, index + 1, 1_000),
            )
            .unwrap();
        first.insert(key(index), state);
    }
    let mut second = first.clone();
    let mut differing_bytes = 0;
    for (n, index) in (0..keys).step_by((keys / differing) as usize).enumerate() {
        let mut state = second[&key(index)].clone();
        state
            .apply_local(
                Op::LwwPut(bytes("newer value, from n2")),
                stamp(2, n as u64 + 1, 2_000),
            )
            .unwrap();
        differing_bytes += crate::wire::encode(&KeyEntry {
            key: key(index),
            state: state.clone(),
        })
        .unwrap()
        .len();
        second.insert(key(index), state);
    }
    let members = vec![NodeId(1), NodeId(2)];
    let mut knowledge = VClock::new();
    knowledge.apply(Dot::new(NodeId(1), keys));
    let meta = |node| DurableMeta {
        seq: keys,
        hlc: HlcTimestamp::zero(NodeId(node)),
        knowledge: knowledge.clone(),
    };
    let config = |node| EngineConfig::new(NodeId(node), members.clone(), ValueType::Lww);
    let mut one = engine_on(config(1), &image_of(first, meta(1)), 1);
    let mut two = engine_on(config(2), &image_of(second, meta(2)), 2);
    let (mut now, wall) = (Instant::from_nanos(1), WallMillis(5_000));
    two.handle_timeout(now, wall);
    let (mut state_bytes, mut total_bytes) = (0, 0);
    for _round in 0..10 {
        now += Duration::from_millis(100);
        one.handle_timeout(now, wall);
        let mut moved = true;
        while moved {
            moved = false;
            for (from, to) in [(1, 2), (2, 1)] {
                let (sender, receiver) = if from == 1 {
                    (&mut one, &mut two)
                } else {
                    (&mut two, &mut one)
                };
                while let Some((_, message)) = sender.poll_transmit() {
                    let size = crate::wire::encode(&message).unwrap().len();
                    total_bytes += size;
                    if matches!(
                        message,
                        GossipMessage::SyncLeafStates { .. } | GossipMessage::SyncPush { .. }
                    ) {
                        state_bytes += size;
                    }
                    receiver.handle_message(
                        now,
                        wall,
                        NodeId(from),
                        crate::wire::roundtrip(&message),
                    );
                    moved = true;
                }
                let _ = to;
            }
        }
        if one.merkle_root() == two.merkle_root() {
            break;
        }
    }
    assert_eq!(one.merkle_root(), two.merkle_root());
    assert_eq!(one.stats().keys_repaired, differing);
    assert_eq!(
        one.stats().sessions_started,
        1,
        "one session repaired everything"
    );
    assert!(
        state_bytes < 3 * differing_bytes,
        "{state_bytes} state bytes for {differing_bytes} differing"
    );
    assert!(
        total_bytes < 64 * 1024,
        "{total_bytes} bytes in all for {differing} of {keys} keys"
    );
}

/// Found by the eventual simulator (seed 1485, 5 nodes): n5 saw n4's dots 6..8 only in
/// states it already held (their keys had moved on), so its knowledge vector grew in memory
/// but no batch carried it to disk. Peers only ever saw its durable vector, which stayed at
/// n4:5, so no tombstone involving n4's later writes ever became stable anywhere and the
/// replicas' Merkle roots never converged. A grown vector alone must produce a batch.
#[test]
fn knowledge_grown_without_a_key_change_is_persisted() {
    let members = vec![NodeId(1), NodeId(2)];
    let image = empty_image();
    let mut engine = engine_on(
        EngineConfig::new(NodeId(1), members, ValueType::Lww),
        &image,
        1,
    );
    let (now, wall) = (Instant::from_nanos(1), WallMillis(10));
    let stamp = |seq: u64| WriteStamp {
        node: NodeId(2),
        seq,
        hlc: HlcTimestamp {
            physical_ms: seq,
            logical: 0,
            node: NodeId(2),
        },
    };
    let mut first = KeyState::new(ValueType::Lww);
    first
        .apply_local(Op::LwwPut(bytes("one")), stamp(1))
        .unwrap();
    let mut second = first.clone();
    second
        .apply_local(Op::LwwPut(bytes("two")), stamp(2))
        .unwrap();
    let delta = |state: KeyState, seq| GossipMessage::Delta {
        entry: KeyEntry {
            key: bytes("k"),
            state,
        },
        token: SessionToken {
            node: NodeId(2),
            seq,
        },
        ack_requested: false,
    };
    engine.handle_message(now, wall, NodeId(2), delta(second, 2));
    let batch = engine.poll_persist().expect("the new state is persisted");
    assert_eq!(
        batch.meta.knowledge.get(&NodeId(2)),
        0,
        "dot 1 not seen yet: not contiguous"
    );
    image.commit(KEYSPACE, &batch);
    engine.persisted(now, batch.id);
    engine.handle_message(now, wall, NodeId(2), delta(first, 1)); // old news for the key
    let batch = engine
        .poll_persist()
        .expect("the grown knowledge vector is persisted");
    assert!(batch.keys.is_empty());
    assert_eq!(batch.meta.knowledge.get(&NodeId(2)), 2);
    engine.persisted(now, batch.id);
    assert_eq!(engine.durable_meta().knowledge.get(&NodeId(2)), 2);
    assert!(engine.poll_persist().is_none());
}

/// A peer whose clock runs an hour ahead must not drag this node's HLC (and so every later
/// `lww` write here) an hour into the future: its state is refused, counted and not
/// acknowledged, until this node's wall clock comes within `clock_skew_max` of it.
#[test]
fn a_state_stamped_past_the_clock_skew_is_refused_until_the_clock_catches_up() {
    let members = vec![NodeId(1), NodeId(2)];
    let image = empty_image();
    let config = EngineConfig::new(NodeId(1), members, ValueType::Lww);
    let skew_ms = config.clock_skew_max.as_millis() as u64;
    let mut engine = engine_on(config, &image, 1);
    let (now, wall) = (Instant::from_nanos(1), 1_000_000);
    let hour_ahead = wall + 3_600_000;
    let mut state = KeyState::new(ValueType::Lww);
    let stamp = WriteStamp {
        node: NodeId(2),
        seq: 1,
        hlc: HlcTimestamp {
            physical_ms: hour_ahead,
            logical: 0,
            node: NodeId(2),
        },
    };
    state
        .apply_local(Op::LwwPut(bytes("from the future")), stamp)
        .unwrap();
    let delta = GossipMessage::Delta {
        entry: KeyEntry {
            key: bytes("k"),
            state,
        },
        token: SessionToken {
            node: NodeId(2),
            seq: 1,
        },
        ack_requested: true,
    };
    engine.handle_message(now, WallMillis(wall), NodeId(2), delta.clone());
    assert_eq!(engine.stats().states_from_future, 1);
    assert!(engine.poll_persist().is_none(), "nothing merged");
    assert!(
        engine.poll_transmit().is_none(),
        "no ack for a refused state"
    );
    assert!(engine.key_state(b"k").is_none());
    assert!(
        engine.hlc.last().physical_ms <= wall,
        "the clock did not move"
    );
    // Within the bound, the same state is taken, persisted and acknowledged.
    let later = WallMillis(hour_ahead - skew_ms + 1_000);
    engine.handle_message(now, later, NodeId(2), delta);
    let batch = engine.poll_persist().expect("the state is persisted");
    image.commit(KEYSPACE, &batch);
    engine.persisted(now, batch.id);
    assert!(matches!(
        engine.poll_transmit(),
        Some((NodeId(2), GossipMessage::DeltaAck { .. }))
    ));
    assert_eq!(engine.stats().states_from_future, 1);
    assert_eq!(engine.hlc.last().physical_ms, hour_ahead);
}

/// Key states larger than local writes may make them (see "Large states" in the module docs).
mod large_states {
    use super::*;
    use crate::eventual::value::entry_bytes;

    /// A set member of `kib` KiB, distinct per `tag`.
    fn member(tag: u8, kib: usize) -> Bytes {
        Bytes::from(vec![tag; kib * 1024])
    }

    #[test]
    fn a_write_growing_a_state_past_the_bound_is_refused_and_changes_nothing() {
        let mut cluster = Cluster::new(1, ValueType::Set);
        let first = cluster.write(1, "s", Op::SetAdd(member(1, 1024)), WriteLevel::Local);
        let first_seq = cluster.token_of(1, first).seq;
        let before = cluster.engine(1).key_state(b"s");
        let hlc_before = cluster.engine(1).hlc.last();
        let (now, wall) = (cluster.now, WallMillis(cluster.wall + 5));
        let engine = &mut cluster.node(NodeId(1)).engine;
        let refused = engine.local_write(
            now,
            wall,
            RequestId(900),
            bytes("s"),
            Op::SetAdd(member(2, 1024)),
            WriteLevel::Local,
        );
        match refused {
            Err(WriteError::StateTooLarge { bytes, bytes_max }) => {
                assert_eq!(bytes_max, KEY_STATE_BYTES_MAX);
                assert!(bytes > KEY_STATE_BYTES_MAX);
            }
            other => panic!("expected StateTooLarge, got {other:?}"),
        }
        assert!(engine.poll_persist().is_none(), "nothing to persist");
        assert_eq!(engine.key_state(b"s"), before);
        assert_eq!(engine.hlc.last(), hlc_before, "the HLC did not move");
        cluster.drain(NodeId(1));
        // The counter was not consumed; a remove (shrinking) and then the add pass.
        let remove = cluster.write(
            1,
            "s",
            Op::SetRemove {
                member: member(1, 1024),
                seen: None,
            },
            WriteLevel::Local,
        );
        assert_eq!(cluster.token_of(1, remove).seq, first_seq + 1);
        cluster.write(1, "s", Op::SetAdd(member(2, 1024)), WriteLevel::Local);
        assert_eq!(
            cluster.engine(1).value(b"s").members(),
            Some(&[member(2, 1024)][..])
        );
    }

    /// The state of `key`'s set after `node` added two members of 900 KiB.
    fn grown_on(node: u64) -> KeyState {
        let mut state = KeyState::new(ValueType::Set);
        for seq in 1..=2 {
            let stamp = WriteStamp {
                node: NodeId(node),
                seq,
                hlc: HlcTimestamp::zero(NodeId(node)),
            };
            let op = Op::SetAdd(member((node * 10 + seq) as u8, 900));
            state.apply_local(op, stamp).unwrap();
        }
        state
    }

    #[test]
    fn states_merged_past_the_frame_limit_still_merge_hash_and_restore() {
        let parts: Vec<KeyState> = (1..=5).map(grown_on).collect();
        assert!(
            parts
                .iter()
                .all(|part| part.encoded_len() <= KEY_STATE_BYTES_MAX)
        );
        let mut forward = KeyState::new(ValueType::Set);
        for part in parts.iter().cloned() {
            forward.merge(part).unwrap();
        }
        let mut backward = KeyState::new(ValueType::Set);
        for part in parts.iter().rev().cloned() {
            backward.merge(part).unwrap();
        }
        assert!(forward.encoded_len() > crate::wire::FRAME_BYTES_MAX);
        assert!(forward.canonical_bytes().len() > crate::wire::FRAME_BYTES_MAX);
        assert_eq!(forward.digest(), backward.digest());
        assert_ne!(forward.digest(), parts[0].digest());
        assert!(entry_bytes(b"big", &forward) > ENTRY_BYTES_MAX);
        assert!(matches!(
            crate::wire::encode(&forward),
            Err(crate::wire::EncodeError::TooLarge { .. })
        ));
        let members = vec![NodeId(1), NodeId(2)];
        let keys = vec![(bytes("big"), forward)].into_iter().collect();
        let meta = DurableMeta {
            seq: 0,
            hlc: HlcTimestamp::zero(NodeId(1)),
            knowledge: crdts::VClock::new(),
        };
        let mut engine = engine_on(
            EngineConfig::new(NodeId(1), members, ValueType::Set),
            &image_of(keys, meta),
            1,
        );
        engine.check_invariants();
        assert_ne!(engine.state_digest(), 0);
        // A quorum-read request for it gets no answer (an empty one would be a lie).
        let (now, wall) = (Instant::from_nanos(1), WallMillis(1));
        let request = GossipMessage::ReadRequest {
            read: 7,
            key: bytes("big"),
        };
        engine.handle_message(now, wall, NodeId(2), request);
        assert!(engine.poll_transmit().is_none());
        assert_eq!(engine.stats().states_too_large, 1);
    }

    /// Coarser than `STEP`: every drain re-hashes the multi-MiB states (`check_invariants`).
    const LARGE_STEP: Duration = Duration::from_millis(50);

    /// n1 and n2 grow a set concurrently, each within the bound; merged, it is too large to
    /// ship. n3, cut off meanwhile, never gets it, but anti-entropy still repairs every
    /// other key, with every message through the wire. Once shrunk, it converges.
    #[test]
    fn anti_entropy_skips_an_unshippable_key_repairs_the_rest_and_converges_once_it_shrinks() {
        let mut cluster = Cluster::new(3, ValueType::Set);
        cluster.isolate(3);
        for node in [1, 2] {
            for tag in 1..=2 {
                let value = member((node * 10 + tag) as u8, 900);
                cluster.write(node, "big", Op::SetAdd(value), WriteLevel::Local);
            }
        }
        cluster.run_for(Duration::from_secs(1), LARGE_STEP);
        // The first to merge the other's state can no longer send the sum back.
        let size = |cluster: &Cluster, node| {
            let state = cluster.engine(node).key_state(b"big").unwrap();
            entry_bytes(b"big", &state)
        };
        assert!(size(&cluster, 1).max(size(&cluster, 2)) > ENTRY_BYTES_MAX);
        let grown = if size(&cluster, 1) > ENTRY_BYTES_MAX {
            1
        } else {
            2
        };
        for index in 0..20 {
            let key = format!("k{index}");
            cluster.write(1, &key, Op::SetAdd(bytes("v")), WriteLevel::Local);
        }
        cluster.heal();
        let completed = cluster.engine(3).stats().sessions_completed;
        cluster.run_for(Duration::from_secs(2), LARGE_STEP);
        for index in 0..20 {
            let key = format!("k{index}");
            assert_eq!(
                cluster.engine(3).value(key.as_bytes()).members(),
                Some(&[bytes("v")][..]),
                "{key} repaired on n3"
            );
        }
        // n3 may hold the other node's part, never the sum.
        let on_n3 = cluster.engine(3).key_state(b"big");
        assert!(on_n3.is_none_or(|state| entry_bytes(b"big", &state) <= ENTRY_BYTES_MAX));
        assert!(cluster.engine(3).stats().sessions_completed > completed);
        let skipped = |cluster: &Cluster, node| cluster.engine(node).stats().states_too_large;
        assert!(skipped(&cluster, 1) + skipped(&cluster, 2) > 0);
        // A remove shrinks the state below the limit (refusing it could wedge the key).
        let removed = member((grown * 10 + 1) as u8, 900);
        cluster.write(
            grown,
            "big",
            Op::SetRemove {
                member: removed,
                seen: None,
            },
            WriteLevel::Local,
        );
        cluster.run_for(Duration::from_secs(2), LARGE_STEP);
        cluster.assert_converged();
        let ReadValue::Set { members, .. } = cluster.engine(3).value(b"big") else {
            panic!("a set keyspace reads sets");
        };
        assert_eq!(members.len(), 3);
    }
}

/// Counter writes that the PN-counter could not hold (issue 12).
mod counter_bounds {
    use super::*;

    /// Tries a write on node `node` that must be refused, and checks it changed nothing:
    /// no batch to persist, the same key state, the same HLC.
    fn refused(cluster: &mut Cluster, node: u64, key: &str, by: i64) -> WriteError {
        let before = cluster.engine(node).key_state(key.as_bytes());
        let hlc_before = cluster.engine(node).hlc.last();
        let (now, wall) = (cluster.now, WallMillis(cluster.wall + 5));
        let engine = &mut cluster.node(NodeId(node)).engine;
        let op = Op::CounterAdd(by);
        let error = engine
            .local_write(now, wall, RequestId(900), bytes(key), op, WriteLevel::Local)
            .expect_err("the write must be refused");
        assert!(engine.poll_persist().is_none(), "nothing to persist");
        assert_eq!(engine.key_state(key.as_bytes()), before);
        assert_eq!(engine.hlc.last(), hlc_before, "the HLC did not move");
        error
    }

    /// `incr views a 9223372036854775807` twice, then `incr views a 5`: the second saturated
    /// the read at i64::MAX, and the third overflowed this node's u64 total inside `crdts`
    /// (a wrap in release, so the merge ignored it): acknowledged, then lost. Now a write
    /// that would leave the i64 range is refused before anything is applied.
    #[test]
    fn an_increment_past_the_i64_range_is_refused_and_changes_nothing() {
        let mut cluster = Cluster::new(1, ValueType::Counter);
        let first = cluster.write(1, "views", Op::CounterAdd(i64::MAX), WriteLevel::Local);
        let first_seq = cluster.token_of(1, first).seq;
        for by in [i64::MAX, 5, 1] {
            let error = refused(&mut cluster, 1, "views", by);
            let value = i64::MAX;
            assert_eq!(error, WriteError::CounterOverflow { value, by });
        }
        // The write counter was not consumed, and writes within the range still apply.
        let down = cluster.write(1, "views", Op::CounterAdd(-5), WriteLevel::Local);
        assert_eq!(cluster.token_of(1, down).seq, first_seq + 1);
        cluster.write(1, "views", Op::CounterAdd(5), WriteLevel::Local);
        let views = cluster.engine(1).value(b"views");
        assert_eq!(views, ReadValue::Counter(i64::MAX));
        // The same at the bottom of the range.
        cluster.write(1, "likes", Op::CounterAdd(i64::MIN), WriteLevel::Local);
        let error = refused(&mut cluster, 1, "likes", -1);
        let value = i64::MIN;
        assert_eq!(error, WriteError::CounterOverflow { value, by: -1 });
        cluster.write(1, "likes", Op::CounterAdd(1), WriteLevel::Local);
        let likes = cluster.engine(1).value(b"likes");
        assert_eq!(likes, ReadValue::Counter(i64::MIN + 1));
    }

    /// The PN-counter keeps each node's total of increments (and of decrements) as a u64, so
    /// `+MAX -MAX +MAX -MAX` leaves the value at 0 and that node's totals near u64::MAX.
    /// A further increment that the total cannot take is refused; another node takes it.
    #[test]
    fn an_increment_past_a_nodes_u64_total_is_refused_and_another_node_takes_it() {
        let mut cluster = Cluster::new(2, ValueType::Counter);
        for by in [i64::MAX, -i64::MAX, i64::MAX, -i64::MAX, 1] {
            cluster.write(1, "c", Op::CounterAdd(by), WriteLevel::Local);
        }
        assert_eq!(cluster.engine(1).value(b"c"), ReadValue::Counter(1));
        let error = refused(&mut cluster, 1, "c", 1);
        assert_eq!(error, WriteError::CounterExhausted { by: 1 });
        cluster.write(1, "c", Op::CounterAdd(-1), WriteLevel::Local);
        cluster.write(2, "c", Op::CounterAdd(1), WriteLevel::Local);
        assert_eq!(cluster.engine(1).value(b"c"), ReadValue::Counter(1));
        assert_eq!(cluster.engine(2).value(b"c"), ReadValue::Counter(1));
    }

    /// Concurrent increments on two nodes, each within range, can merge past it: reads then
    /// saturate, a write further out is refused, and one back towards the range passes.
    #[test]
    fn a_counter_merged_past_the_range_takes_writes_back_towards_it() {
        let mut cluster = Cluster::new(2, ValueType::Counter);
        cluster.isolate(1);
        cluster.write(1, "c", Op::CounterAdd(i64::MAX), WriteLevel::Local);
        cluster.write(2, "c", Op::CounterAdd(i64::MAX), WriteLevel::Local);
        cluster.heal();
        cluster.run_for(Duration::from_secs(2), STEP);
        cluster.assert_converged();
        assert_eq!(cluster.engine(1).value(b"c"), ReadValue::Counter(i64::MAX));
        let error = refused(&mut cluster, 1, "c", 1);
        let value = i64::MAX;
        assert_eq!(error, WriteError::CounterOverflow { value, by: 1 });
        cluster.write(1, "c", Op::CounterAdd(-i64::MAX), WriteLevel::Local);
        cluster.write(1, "c", Op::CounterAdd(-2), WriteLevel::Local);
        assert_eq!(
            cluster.engine(1).value(b"c"),
            ReadValue::Counter(i64::MAX - 2)
        );
    }
}

impl Cluster {
    /// Starts node `id` with `members` (a node joining a running keyspace).
    fn add_node(&mut self, id: u64, members: &[u64], value_type: ValueType) {
        let members = members.iter().copied().map(NodeId).collect();
        let mut config = EngineConfig::new(NodeId(id), members, value_type);
        // The clocks' bound is the keyspace's, the same on every member.
        config.clock_skew_max = self.engine(1).config().clock_skew_max;
        self.install(config, empty_image(), id);
        let (now, wall) = (self.now, WallMillis(self.wall));
        self.node(NodeId(id)).engine.handle_timeout(now, wall);
    }

    /// Gives every node in `members` that list, in place (a node left out is removed).
    fn set_members(&mut self, members: &[u64]) {
        let members: Vec<NodeId> = members.iter().copied().map(NodeId).collect();
        let now = self.now;
        for id in &members {
            let engine = &mut self.node(*id).engine;
            engine.set_members(now, members.clone()).unwrap();
        }
    }
}

/// Members change in place: a joiner gets the keys by anti-entropy, and no tombstone is
/// collected until it has reported; after a removal, the removed node no longer holds
/// collection up.
#[test]
fn members_change_in_place_and_collection_waits_for_a_new_member() {
    let mut cluster = Cluster::short_clock_window(2);
    cluster.write(1, "k", Op::LwwPut(bytes("v")), WriteLevel::All);
    cluster.write(1, "gone", Op::LwwPut(bytes("x")), WriteLevel::All);
    cluster.add_node(3, &[1, 2, 3], ValueType::Lww);
    cluster.set_members(&[1, 2, 3]);
    cluster.isolate(3);
    cluster.write(1, "gone", Op::LwwDelete, WriteLevel::Local);
    cluster.run_for(Duration::from_secs(5), STEP);
    assert_eq!(
        cluster.engine(1).tombstones_pending(),
        1,
        "n3 is a member now and has not reported"
    );
    cluster.heal();
    cluster.run_for(Duration::from_secs(5), STEP);
    assert!(matches!(
        cluster.engine(3).value(b"k"),
        ReadValue::Lww { value: Some(_), .. }
    ));
    for node in [1, 2, 3] {
        assert_eq!(cluster.engine(node).tombstones_pending(), 0, "n{node}");
    }
    cluster.assert_converged();
    // n3 leaves: a delete is collected without it.
    cluster.isolate(3);
    cluster.set_members(&[1, 2]);
    cluster.write(2, "k", Op::LwwDelete, WriteLevel::Local);
    cluster.run_for(Duration::from_secs(5), STEP);
    for node in [1, 2] {
        assert_eq!(cluster.engine(node).tombstones_pending(), 0, "n{node}");
        assert_eq!(cluster.engine(node).live_key_count(), 0);
    }
}

/// Two `lww` values at one time (a faulty client that reused a time): every replica must
/// still end with the same one, whatever order the states merge in.
#[test]
fn lww_values_at_one_time_merge_to_the_same_value_in_either_order() {
    let at = HlcTimestamp {
        physical_ms: 5,
        logical: 0,
        node: NodeId(0xc1),
    };
    let state = |value: &str, node: u64| {
        let mut state = KeyState::new(ValueType::Lww);
        let stamp = WriteStamp {
            node: NodeId(node),
            seq: 1,
            hlc: at,
        };
        state.apply_local(Op::LwwPut(bytes(value)), stamp).unwrap();
        state
    };
    let (a, b) = (state("a", 1), state("b", 2));
    let mut ab = a.clone();
    ab.merge(b.clone()).unwrap();
    let mut ba = b.clone();
    ba.merge(a.clone()).unwrap();
    assert_eq!(ab, ba);
    assert_eq!(ab.read(), b.read(), "the greater value wins the tie");
}

/// A backup pages through a node's merged states (in pages smaller than the keyspace, while
/// nothing is lost or repeated across pages) and restores into a fresh cluster whose nodes
/// have the same ids: the states are the same, and a node's next write does not reuse a dot
/// the restored states hold. Before the write counter was raised, node 1's new add of "a"
/// took dot (1, 1), which the restored set had seen removed, and the add was lost.
#[test]
fn a_backup_paged_from_one_cluster_restores_into_another_whose_new_writes_reuse_no_dot() {
    let mut source = Cluster::new(2, ValueType::Set);
    source.write(1, "k0", Op::SetAdd(bytes("a")), WriteLevel::Local);
    for i in 1..50 {
        let key = format!("k{i}");
        source.write(1 + i % 2, &key, Op::SetAdd(bytes("a")), WriteLevel::Local);
    }
    let remove = Op::SetRemove {
        member: bytes("a"),
        seen: None,
    };
    source.write(1, "k0", remove, WriteLevel::Local);
    source.write(1, "k0", Op::SetAdd(bytes("b")), WriteLevel::Local);
    source.run_for(Duration::from_millis(500), STEP);
    let engine = source.engine(1);
    let (mut states, mut after) = (Vec::new(), None);
    loop {
        let (page, more) = engine.backup_page(after.as_ref(), 7, usize::MAX);
        assert!(page.len() <= 7);
        after = page.last().map(|(key, _)| AntiEntropy::backup_cursor(key));
        states.extend(page);
        if !more {
            break;
        }
    }
    assert_eq!(states.len() as u64, engine.key_count());
    let vector = engine.knowledge().clone();

    let mut target = Cluster::new(2, ValueType::Set);
    for id in [NodeId(1), NodeId(2)] {
        let now = target.now;
        let node = target.node(id);
        for (key, state) in &states {
            assert!(node.engine.restore_state(now, key.clone(), state.clone()));
        }
        node.engine.restore_finish(&vector);
        target.drain(id);
    }
    assert_eq!(
        target.engine(1).state_digest(),
        source.engine(1).state_digest()
    );
    target.write(1, "k0", Op::SetAdd(bytes("a")), WriteLevel::Local);
    target.run_for(Duration::from_millis(500), STEP);
    for node in [1, 2] {
        let members = target.engine(node).value(b"k0");
        assert_eq!(members.members(), Some(&[bytes("a"), bytes("b")][..]));
    }
}
