//! Eventual engine benchmarks.
//!
//! - `local_write+delta_encode`: one `lww` write through persist, ack and delta push, with
//!   every outgoing message encoded by `wire::encode`.
//! - `merkle_diff_1M_keys_1000_differ`: the leaves where two 1,000,000-key trees differ.
//! - Bytes (printed, not timed): an in-sync anti-entropy session, and the repair of 1,000
//!   differing keys out of 1,000,000, between two engines driven by hand.
//!
//! Run: `cargo bench --bench eventual -- --quick`.

use bytes::Bytes;
use capdial::eventual::hash::{entry_hash, key_hash};
use capdial::eventual::merkle::MerkleTree;
use capdial::eventual::{
    AntiEntropy, DurableMeta, EngineConfig, HlcTimestamp, KeyState, KeyspaceStore, MemoryStates,
    Op, PersistBatch, PersistId, RequestId, StoredKey, ValueType, WriteLevel, WriteStamp,
};
use capdial::types::{Instant, KeyspaceId, NodeId, WallMillis};
use crdts::{CmRDT, Dot, VClock};
use criterion::{BatchSize, Criterion, black_box};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// An engine on a fresh in-memory store holding `keys` and `meta` (the meta's HLC covers
/// every stamp, as an engine's own batches leave it).
fn engine_on(
    config: EngineConfig,
    keys: BTreeMap<Bytes, KeyState>,
    mut meta: DurableMeta,
    seed: u64,
) -> (AntiEntropy, Arc<MemoryStates>) {
    for stamp in keys.values().filter_map(KeyState::lww_stamp) {
        meta.hlc = meta.hlc.max(stamp);
    }
    let keys = keys
        .into_iter()
        .map(|(key, state)| {
            let row = StoredKey::new(key_hash(&key), state);
            (key, Some(row))
        })
        .collect();
    let states = Arc::new(MemoryStates::new());
    let batch = PersistBatch {
        id: PersistId(0),
        keys,
        meta,
    };
    states.commit(KeyspaceId(0), &batch);
    let store = KeyspaceStore::new(states.clone(), KeyspaceId(0));
    let engine = AntiEntropy::new(config, store, seed).expect("valid config");
    (engine, states)
}

const KEYS: u64 = 1_000_000;
const DIFFERING: u64 = 1_000;

fn key(index: u64) -> Bytes {
    Bytes::from(format!("user:{index:010}"))
}

fn bench_local_write(criterion: &mut Criterion) {
    let members = vec![NodeId(1), NodeId(2), NodeId(3)];
    let config = EngineConfig::new(NodeId(1), members, ValueType::Lww);
    let meta = DurableMeta {
        seq: 0,
        hlc: HlcTimestamp::zero(NodeId(1)),
        knowledge: VClock::new(),
    };
    let (mut engine, states) = engine_on(config, BTreeMap::new(), meta, 1);
    let now = Instant::from_nanos(1);
    engine.handle_timeout(now, WallMillis(1));
    let value = Bytes::from(vec![7u8; 100]);
    let mut next = 0u64;
    criterion.bench_function("local_write+delta_encode", |bencher| {
        bencher.iter(|| {
            next += 1;
            let key = key(next % 10_000);
            engine
                .local_write(
                    now,
                    WallMillis(next),
                    RequestId(next),
                    key,
                    Op::LwwPut(value.clone()),
                    WriteLevel::Local,
                )
                .expect("write accepted");
            while let Some(batch) = engine.poll_persist() {
                states.commit(KeyspaceId(0), &batch);
                engine.persisted(now, batch.id);
            }
            let mut bytes = 0;
            while let Some((_, message)) = engine.poll_transmit() {
                bytes += capdial::wire::encode(&message).expect("encodes").len();
            }
            while engine.poll_event().is_some() {}
            black_box(bytes)
        })
    });
}

fn trees() -> (MerkleTree, MerkleTree) {
    let entries: Vec<(u64, u64)> = (0..KEYS)
        .map(|index| {
            let hash = key_hash(&key(index));
            (hash, entry_hash(hash, index))
        })
        .collect();
    let mine = MerkleTree::from_entries(entries.iter().copied());
    let mut theirs = mine.clone();
    for index in (0..KEYS).step_by((KEYS / DIFFERING) as usize) {
        let (hash, entry) = entries[index as usize];
        theirs.update(hash, entry, entry_hash(hash, index + 1));
    }
    (mine, theirs)
}

fn bench_merkle_diff(criterion: &mut Criterion) {
    let (mine, theirs) = trees();
    let leaves = mine.diff(&theirs).len();
    println!("merkle diff: {leaves} differing leaves for {DIFFERING} differing keys of {KEYS}");
    criterion.bench_function("merkle_diff_1M_keys_1000_differ", |bencher| {
        bencher.iter_batched(
            || (),
            |()| black_box(mine.diff(&theirs)),
            BatchSize::SmallInput,
        )
    });
}

/// An `lww` state written by `node` with counter `seq` at `physical_ms`.
fn lww_state(node: u64, seq: u64, physical_ms: u64, value: &[u8]) -> KeyState {
    let mut state = KeyState::new(ValueType::Lww);
    let hlc = HlcTimestamp {
        physical_ms,
        logical: 0,
        node: NodeId(node),
    };
    let stamp = WriteStamp {
        node: NodeId(node),
        seq,
        hlc,
    };
    state
        .apply_local(Op::LwwPut(Bytes::copy_from_slice(value)), stamp)
        .expect("lww op");
    state
}

/// Two engines holding the same 1M keys, except `DIFFERING` keys that n2 overwrote later.
/// Returns the engines and the encoded size of n2's differing states.
fn engines() -> (AntiEntropy, AntiEntropy, usize) {
    let value = [42u8; 32];
    let mut first = BTreeMap::new();
    for index in 0..KEYS {
        first.insert(key(index), lww_state(1, index + 1, 1_000, &value));
    }
    let mut second = first.clone();
    let mut differing_bytes = 0;
    for (n, index) in (0..KEYS).step_by((KEYS / DIFFERING) as usize).enumerate() {
        // n2 overwrote the key it held (so its state descends from n1's, as a real write would).
        let mut state = second[&key(index)].clone();
        let hlc = HlcTimestamp {
            physical_ms: 2_000,
            logical: 0,
            node: NodeId(2),
        };
        let stamp = WriteStamp {
            node: NodeId(2),
            seq: n as u64 + 1,
            hlc,
        };
        let value = Bytes::from_static(b"newer value, written on n2 only");
        state.apply_local(Op::LwwPut(value), stamp).expect("lww op");
        let entry = capdial::eventual::KeyEntry {
            key: key(index),
            state: state.clone(),
        };
        differing_bytes +=
            capdial::wire::encode(&entry).expect("encodes").len() - capdial::wire::HEADER_BYTES;
        second.insert(key(index), state);
    }
    let members = vec![NodeId(1), NodeId(2)];
    let mut knowledge_one = VClock::new();
    knowledge_one.apply(Dot::new(NodeId(1), KEYS));
    let mut knowledge_two = knowledge_one.clone();
    knowledge_two.apply(Dot::new(NodeId(2), DIFFERING));
    let meta = |node, seq, knowledge| DurableMeta {
        seq,
        hlc: HlcTimestamp::zero(NodeId(node)),
        knowledge,
    };
    let config = |node| EngineConfig::new(NodeId(node), members.clone(), ValueType::Lww);
    let (one, _) = engine_on(config(1), first, meta(1, KEYS, knowledge_one), 1);
    let (two, _) = engine_on(config(2), second, meta(2, DIFFERING, knowledge_two), 2);
    (one, two, differing_bytes)
}

/// Encoded bytes exchanged, split into the tree path (roots, children hashes, leaf digests)
/// and the key states (leaf states and pushes).
#[derive(Default)]
struct Bytes2 {
    path: u64,
    states: u64,
}

impl Bytes2 {
    fn count(&mut self, message: &capdial::eventual::GossipMessage) {
        use capdial::eventual::GossipMessage::{SyncLeafStates, SyncPush};
        let size = capdial::wire::encode(message).expect("encodes").len() as u64;
        match message {
            SyncLeafStates { .. } | SyncPush { .. } => self.states += size,
            _ => self.path += size,
        }
    }

    fn total(&self) -> u64 {
        self.path + self.states
    }
}

/// Fires one n1 round against n2 and delivers until quiet, counting the bytes exchanged.
/// Only n1 initiates (n2's timer is never fired), so the bytes are n1's sessions only.
fn one_round(one: &mut AntiEntropy, two: &mut AntiEntropy, now: &mut Instant, bytes: &mut Bytes2) {
    let wall = WallMillis(5_000);
    *now += Duration::from_millis(100);
    one.handle_timeout(*now, wall);
    loop {
        let mut moved = false;
        while let Some((_, message)) = one.poll_transmit() {
            bytes.count(&message);
            two.handle_message(*now, wall, NodeId(1), capdial::wire::roundtrip(&message));
            moved = true;
        }
        while let Some((_, message)) = two.poll_transmit() {
            bytes.count(&message);
            one.handle_message(*now, wall, NodeId(2), capdial::wire::roundtrip(&message));
            moved = true;
        }
        for engine in [&mut *one, &mut *two] {
            while let Some(batch) = engine.poll_persist() {
                engine.persisted(*now, batch.id);
            }
        }
        if !moved {
            return;
        }
    }
}

fn report_sync_bytes() {
    let (mut one, mut two, differing_bytes) = engines();
    let mut now = Instant::from_nanos(1_000_000_000);
    one.handle_timeout(now, WallMillis(5_000));
    two.handle_timeout(now, WallMillis(5_000));
    let (mut repair, mut rounds) = (Bytes2::default(), 0);
    while one.merkle_root() != two.merkle_root() || one.stats().sessions_completed == 0 {
        one_round(&mut one, &mut two, &mut now, &mut repair);
        rounds += 1;
        assert!(rounds < 10_000, "repair did not finish");
    }
    let stats = one.stats();
    println!(
        "repair of {DIFFERING} of {KEYS} keys: {} bytes in {rounds} rounds of at most {} bytes, \
         {} sessions: key states {} bytes ({:.2}x the {differing_bytes} bytes of differing \
         states), tree path {} bytes; keys repaired on n1: {}",
        repair.total(),
        one.config().round_bytes_max,
        stats.sessions_started,
        repair.states,
        repair.states as f64 / differing_bytes as f64,
        repair.path,
        stats.keys_repaired
    );
    let mut in_sync = Bytes2::default();
    one_round(&mut one, &mut two, &mut now, &mut in_sync);
    let last = one.stats().last_session.expect("a session ran");
    println!(
        "in-sync round: {} bytes on the wire (session: {} sent, {} received, in sync: {})",
        in_sync.total(),
        last.bytes_sent,
        last.bytes_received,
        last.in_sync
    );
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_local_write(&mut criterion);
    bench_merkle_diff(&mut criterion);
    report_sync_bytes();
    criterion.final_summary();
}
