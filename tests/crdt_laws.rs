//! The CRDT laws on the engine's per-key value wrapper ([`KeyState`]), for every value type:
//! merge is commutative, associative and idempotent, a write only inflates a state, and
//! applying a write's delta (the key's new full state) to any replica equals merging the
//! writer's states into it.
//!
//! States come from simulated histories, not from arbitrary bytes: three replicas take local
//! writes with unique dots and HLC stamps (as the engine allocates them) and merge each
//! other's states in a random order. Every state any replica passes through joins a pool, and
//! the laws are checked on states drawn from it. Equality is the engine's own: equal
//! canonical encodings.

use bytes::Bytes;
use capdial::eventual::{
    HlcTimestamp, KeyState, Op, ReadContext, ReadValue, ValueType, WriteStamp,
};
use capdial::types::NodeId;
use proptest::prelude::*;

const REPLICAS: usize = 3;

/// One step of a history: a write at a replica, or one replica merging another's state.
#[derive(Clone, Debug)]
enum Step {
    Write {
        replica: usize,
        /// Picks the operation (put / delete, add / remove, read-context or blind).
        choice: u8,
        amount: i64,
        member: u8,
        /// Wall time the HLC would read; small, so stamps collide on the wall part.
        wall: u16,
    },
    Merge {
        from: usize,
        to: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..REPLICAS, any::<u8>(), -5i64..10, 0u8..4, 0u16..8).prop_map(
            |(replica, choice, amount, member, wall)| Step::Write {
                replica,
                choice,
                amount,
                member,
                wall,
            }
        ),
        2 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Merge { from, to }),
    ]
}

fn value_type() -> impl Strategy<Value = ValueType> {
    prop_oneof![
        Just(ValueType::Lww),
        Just(ValueType::MvReg),
        Just(ValueType::Counter),
        Just(ValueType::Set),
    ]
}

/// The operation a write step makes on `state` at a replica.
fn op_for(
    value_type: ValueType,
    state: &KeyState,
    choice: u8,
    amount: i64,
    member: u8,
    id: u64,
) -> Op {
    let value = Bytes::from(format!("v{id}"));
    let member = Bytes::from(vec![b'a' + member]);
    match value_type {
        ValueType::Lww if choice.is_multiple_of(4) => Op::LwwDelete,
        ValueType::Lww => Op::LwwPut(value),
        ValueType::MvReg => {
            // Most writes carry the context of a read of this replica's state.
            let context = match state.read() {
                ReadValue::MvReg { context, .. } if !choice.is_multiple_of(3) => Some(context),
                _ => None,
            };
            if choice % 5 == 1 && context.is_some() {
                Op::MvDelete { context }
            } else {
                Op::MvPut { value, context }
            }
        }
        ValueType::Counter => Op::CounterAdd(amount),
        ValueType::Set if choice.is_multiple_of(3) => Op::SetRemove { member, seen: None },
        ValueType::Set => Op::SetAdd(member),
    }
}

/// Runs a history and returns every state the replicas passed through.
fn pool(value_type: ValueType, steps: &[Step]) -> Vec<KeyState> {
    let mut replicas: Vec<KeyState> = (0..REPLICAS).map(|_| KeyState::new(value_type)).collect();
    let mut seqs = [0u64; REPLICAS];
    let mut pool = replicas.clone();
    for (index, step) in steps.iter().enumerate() {
        match step {
            Step::Write {
                replica,
                choice,
                amount,
                member,
                wall,
            } => {
                seqs[*replica] += 1;
                let node = NodeId(*replica as u64 + 1);
                let stamp = WriteStamp {
                    node,
                    seq: seqs[*replica],
                    // Unique per write: (logical, node) never repeats.
                    hlc: HlcTimestamp {
                        physical_ms: u64::from(*wall),
                        logical: seqs[*replica] as u32,
                        node,
                    },
                };
                let state = &mut replicas[*replica];
                let op = op_for(value_type, state, *choice, *amount, *member, index as u64);
                state.apply_local(op, stamp).expect("op matches the type");
            }
            Step::Merge { from, to } => {
                let incoming = replicas[*from].clone();
                replicas[*to].merge(incoming).expect("same type");
            }
        }
        pool.extend(replicas.iter().cloned());
    }
    pool
}

fn merged(a: &KeyState, b: &KeyState) -> KeyState {
    let mut out = a.clone();
    out.merge(b.clone()).expect("same type");
    out
}

/// Equal as the engine compares states (canonical encoding), and reading the same value.
fn same(a: &KeyState, b: &KeyState) -> bool {
    a.canonical_bytes() == b.canonical_bytes() && a.read() == b.read()
}

fn history() -> impl Strategy<Value = (ValueType, Vec<Step>, [usize; 3])> {
    (
        value_type(),
        prop::collection::vec(step(), 1..40),
        [any::<usize>(), any::<usize>(), any::<usize>()],
    )
}

proptest! {
    // No regression files: the histories are cheap to regenerate and a failure prints them.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn merge_is_commutative_associative_idempotent((value_type, steps, picks) in history()) {
        let pool = pool(value_type, &steps);
        let [a, b, c] = picks.map(|pick| &pool[pick % pool.len()]);
        prop_assert!(same(&merged(a, b), &merged(b, a)), "commutative: {a:?} {b:?}");
        prop_assert!(
            same(&merged(&merged(a, b), c), &merged(a, &merged(b, c))),
            "associative: {a:?} {b:?} {c:?}"
        );
        prop_assert!(same(&merged(a, a), a), "idempotent: {a:?}");
    }

    #[test]
    fn a_write_inflates_and_its_delta_equals_the_state_merge(
        (value_type, steps, picks) in history(),
        choice in any::<u8>(),
        amount in -5i64..10,
        member in 0u8..4,
    ) {
        let pool = pool(value_type, &steps);
        let [base, other, _] = picks.map(|pick| &pool[pick % pool.len()]);
        // A fresh write at a fourth node, on top of `base`.
        let node = NodeId(9);
        let stamp = WriteStamp {
            node,
            seq: 1,
            hlc: HlcTimestamp { physical_ms: 100, logical: 0, node },
        };
        let mut after = base.clone();
        let op = op_for(value_type, base, choice, amount, member, 10_000);
        after.apply_local(op, stamp).expect("op matches the type");
        let delta = after.clone();
        // Inflation: the write's state includes its base.
        prop_assert!(same(&merged(base, &delta), &after), "inflation: {base:?} -> {after:?}");
        // Shipping the delta to any replica = shipping the writer's whole history to it.
        prop_assert!(
            same(&merged(other, &delta), &merged(&merged(other, base), &after)),
            "delta vs state merge: {other:?} {base:?} {after:?}"
        );
    }

    #[test]
    fn merging_every_state_in_any_order_converges(
        (value_type, steps, _) in history(),
        rotation in any::<usize>(),
    ) {
        let pool = pool(value_type, &steps);
        let forward = pool.iter().fold(KeyState::new(value_type), |acc, s| merged(&acc, s));
        let mut order: Vec<&KeyState> = pool.iter().rev().collect();
        let shift = rotation % order.len();
        order.rotate_left(shift);
        let other = order.into_iter().fold(KeyState::new(value_type), |acc, s| merged(&acc, s));
        prop_assert!(same(&forward, &other), "order matters: {forward:?} vs {other:?}");
    }
}

/// An `mvreg` write with the context of a read replaces exactly what that read saw.
#[test]
fn mvreg_write_with_context_replaces_what_it_read() {
    let put = |value: &'static str, context: Option<ReadContext>| Op::MvPut {
        value: Bytes::from_static(value.as_bytes()),
        context,
    };
    let stamp = |node: u64, seq: u64| WriteStamp {
        node: NodeId(node),
        seq,
        hlc: HlcTimestamp {
            physical_ms: 0,
            logical: seq as u32,
            node: NodeId(node),
        },
    };
    let mut a = KeyState::new(ValueType::MvReg);
    a.apply_local(put("a", None), stamp(1, 1)).unwrap();
    let mut b = KeyState::new(ValueType::MvReg);
    b.apply_local(put("b", None), stamp(2, 1)).unwrap();
    let both = merged(&a, &b);
    let ReadValue::MvReg { siblings, context } = both.read() else {
        panic!("an mvreg reads as one");
    };
    assert_eq!(siblings.len(), 2);
    let mut c = both.clone();
    c.apply_local(put("c", Some(context)), stamp(3, 1)).unwrap();
    let ReadValue::MvReg { siblings, .. } = merged(&c, &b).read() else {
        panic!("an mvreg reads as one");
    };
    assert_eq!(siblings, vec![Bytes::from_static(b"c")]);
}
