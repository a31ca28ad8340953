//! CRDT values: one [`KeyState`] per key, wrapping a `crdts` type chosen by the keyspace's
//! [`ValueType`], plus the causal context of the writes merged into it.
//!
//! | type      | crdts type                              | delete                           |
//! |-----------|-----------------------------------------|----------------------------------|
//! | `lww`     | `LWWReg<Option<Bytes>, HlcTimestamp>`   | tombstone: `None` at a later HLC |
//! | `mvreg`   | `MVReg<Option<Bytes>, NodeId>`          | a `None` sibling with a context  |
//! | `counter` | `PNCounter<NodeId>`                     | none (add the negation)          |
//! | `set`     | `Orswot<Bytes, NodeId>`                 | remove members; empty set = tomb |
//!
//! Every local write gets a *dot* `(node, seq)`: `seq` is the writing node's own counter,
//! strictly increasing across all keys of the keyspace and persisted. The dot is the session
//! token, it is the `MVReg`/`Orswot` dot (so dots are never reused, not even after a tombstone
//! is collected and the key starts again), and it is recorded in [`KeyState::context`].
//!
//! A counter write is refused (`ApplyError::CounterOverflow`, `CounterExhausted`) if its
//! result would leave the `i64` range reads report, or if this node's `u64` total of
//! increments (or decrements) inside the `PNCounter` could not take it: either would be
//! acknowledged and then lost. Concurrent writes elsewhere can still merge past the range;
//! reads then saturate.
//!
//! The whole key state is what replicates: a delta is the key's full state after a write, and
//! anti-entropy ships full states. State merge is commutative, associative and idempotent, so
//! lost, duplicated and reordered deltas are harmless. (Shipping `Orswot` *ops* would not be:
//! an `Add` applied out of order is ignored and then looks like a remove.)
//!
//! [`KeyState::digest`] hashes a *canonical* encoding: `Orswot` keeps `HashMap`s and `MVReg`
//! a `Vec` whose order depends on merge order, so their serde bytes are not canonical; the
//! digest sorts them first. Equal states always have equal digests.

use super::hash::{fnv1a_64, mix64};
use super::hlc::HlcTimestamp;
use crate::types::NodeId;
use bytes::Bytes;
use crdts::{CmRDT, CvRDT, Dot, LWWReg, MVReg, Orswot, PNCounter, VClock, mvreg, orswot};
use serde::{Deserialize, Serialize};

/// The value type of an eventual keyspace, chosen when the keyspace is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueType {
    /// Last-writer-wins bytes, HLC timestamps, node id breaks ties.
    Lww,
    /// Multi-value register: concurrent writes come back as siblings.
    MvReg,
    /// PN-counter.
    Counter,
    /// Observed-remove set of byte strings.
    Set,
}

/// A client operation on one key. Each is valid for one [`ValueType`] only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `lww`: set the value.
    LwwPut(Bytes),
    /// `lww`: delete (a tombstone with a fresh timestamp).
    LwwDelete,
    /// `mvreg`: write a value. With the context of an earlier read it replaces exactly the
    /// siblings that read returned; without one it is a blind write and becomes a sibling.
    MvPut {
        /// The value.
        value: Bytes,
        /// The context an earlier read returned, if any.
        context: Option<ReadContext>,
    },
    /// `mvreg`: delete the siblings `context` saw (all local siblings if `None`).
    MvDelete {
        /// The context an earlier read returned, if any.
        context: Option<ReadContext>,
    },
    /// `counter`: add a signed amount (negative decrements).
    CounterAdd(i64),
    /// `set`: add a member.
    SetAdd(Bytes),
    /// `set`: remove a member: the adds a read observed (`seen`, the read's version vector),
    /// or without one the adds this node has observed. With `seen`, a resend through any node
    /// later removes exactly what the first attempt removed, never a newer add.
    SetRemove {
        /// The member.
        member: Bytes,
        /// The version vector of the read the removal is based on, if any.
        seen: Option<ReadContext>,
    },
}

impl Op {
    /// The value type this operation applies to.
    pub fn value_type(&self) -> ValueType {
        match self {
            Op::LwwPut(_) | Op::LwwDelete => ValueType::Lww,
            Op::MvPut { .. } | Op::MvDelete { .. } => ValueType::MvReg,
            Op::CounterAdd(_) => ValueType::Counter,
            Op::SetAdd(_) | Op::SetRemove { .. } => ValueType::Set,
        }
    }
}

/// The causal context of an `mvreg` read: pass it back with the next write to replace the
/// siblings it saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadContext(pub VClock<NodeId>);

/// What a read returns, by value type. An absent key reads as the type's empty value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadValue {
    /// `lww`: the value (None if absent or deleted) and the timestamp of the winning write.
    Lww {
        /// The current value.
        value: Option<Bytes>,
        /// The winning write's timestamp (None if the key was never written here).
        stamp: Option<HlcTimestamp>,
    },
    /// `mvreg`: the siblings (sorted by bytes; empty if absent or deleted) and the context.
    MvReg {
        /// Concurrent values.
        siblings: Vec<Bytes>,
        /// Pass back with the next write to replace these siblings.
        context: ReadContext,
    },
    /// `counter`: the sum (saturating at the i64 range).
    Counter(i64),
    /// `set`: the members, sorted, and the adds they come from.
    Set {
        /// The members.
        members: Vec<Bytes>,
        /// The adds of these members. Pass back with a removal to remove exactly the adds
        /// this read saw.
        context: ReadContext,
    },
}

impl ReadValue {
    /// A set's members (None for the other types).
    pub fn members(&self) -> Option<&[Bytes]> {
        match self {
            ReadValue::Set { members, .. } => Some(members),
            _ => None,
        }
    }

    /// The value of a key this node holds nothing for.
    pub fn empty(value_type: ValueType) -> ReadValue {
        match value_type {
            ValueType::Lww => ReadValue::Lww {
                value: None,
                stamp: None,
            },
            ValueType::MvReg => ReadValue::MvReg {
                siblings: Vec::new(),
                context: ReadContext(VClock::new()),
            },
            ValueType::Counter => ReadValue::Counter(0),
            ValueType::Set => ReadValue::Set {
                members: Vec::new(),
                context: ReadContext(VClock::new()),
            },
        }
    }
}

/// The CRDT itself, by value type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Crdt {
    /// `lww`: `None` is a tombstone.
    Lww(LWWReg<Option<Bytes>, HlcTimestamp>),
    /// `mvreg`: a `None` sibling is a delete.
    MvReg(MVReg<Option<Bytes>, NodeId>),
    /// `counter`.
    Counter(PNCounter<NodeId>),
    /// `set`.
    Set(Orswot<Bytes, NodeId>),
}

/// The replicated state of one key: the CRDT and the dots of every write merged into it.
///
/// `context` is what makes tombstone collection safe: a state arriving for a key this node
/// does not hold is dropped if every dot in its context is already covered by this node's
/// knowledge vector (the key was held, superseded by a delete, and collected).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// The value.
    pub crdt: Crdt,
    /// Join of the dots `(node, seq)` of the writes merged into this state.
    pub context: VClock<NodeId>,
}

/// The operation's type does not match the keyspace's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("operation for a {got:?} value on a {expected:?} keyspace")]
pub struct WrongType {
    /// The keyspace's type.
    pub expected: ValueType,
    /// The operation's type.
    pub got: ValueType,
}

/// Why a local write cannot apply to a key's state. Nothing was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The operation's type does not match the state's.
    #[error(transparent)]
    WrongType(#[from] WrongType),
    /// The counter's value after the write would leave the `i64` range reads report (a read
    /// would saturate, so the write would look lost).
    #[error("counter at {value} cannot change by {by}: the result would leave the i64 range")]
    CounterOverflow {
        /// The counter's value before the write (as a read reports it).
        value: i64,
        /// The amount refused.
        by: i64,
    },
    /// The PN-counter keeps each node's total of increments, and of decrements, as a `u64`;
    /// this node's total in the write's direction cannot take `by` more.
    #[error("this node's running total of the counter's changes cannot take {by} more")]
    CounterExhausted {
        /// The amount refused.
        by: i64,
    },
}

/// The identity and time of one local write, allocated by the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteStamp {
    /// The writing node.
    pub node: NodeId,
    /// The node's write counter for this write (its dot is `(node, seq)`).
    pub seq: u64,
    /// HLC timestamp (used by `lww`).
    pub hlc: HlcTimestamp,
}

impl KeyState {
    /// The state of a key that was never written.
    pub fn new(value_type: ValueType) -> KeyState {
        let crdt = match value_type {
            ValueType::Lww => Crdt::Lww(LWWReg {
                val: None,
                marker: HlcTimestamp::zero(NodeId(0)),
            }),
            ValueType::MvReg => Crdt::MvReg(MVReg::new()),
            ValueType::Counter => Crdt::Counter(PNCounter::new()),
            ValueType::Set => Crdt::Set(Orswot::new()),
        };
        KeyState {
            crdt,
            context: VClock::new(),
        }
    }

    /// The value type of this state.
    pub fn value_type(&self) -> ValueType {
        match self.crdt {
            Crdt::Lww(_) => ValueType::Lww,
            Crdt::MvReg(_) => ValueType::MvReg,
            Crdt::Counter(_) => ValueType::Counter,
            Crdt::Set(_) => ValueType::Set,
        }
    }

    /// Applies a local write with its stamp. The result, merged into any replica, has the
    /// same effect as on this one (this is the "delta": the whole new state). A write that
    /// is refused changes nothing.
    pub fn apply_local(&mut self, op: Op, stamp: WriteStamp) -> Result<(), ApplyError> {
        let got = op.value_type();
        let expected = self.value_type();
        if got != expected {
            return Err(WrongType { expected, got }.into());
        }
        let dot = Dot::new(stamp.node, stamp.seq);
        match (&mut self.crdt, op) {
            (Crdt::Lww(reg), Op::LwwPut(value)) => lww_join(reg, Some(value), stamp.hlc),
            (Crdt::Lww(reg), Op::LwwDelete) => lww_join(reg, None, stamp.hlc),
            (Crdt::MvReg(reg), Op::MvPut { value, context }) => {
                mv_write(reg, Some(value), context, dot)
            }
            (Crdt::MvReg(reg), Op::MvDelete { context }) => mv_write(reg, None, context, dot),
            (Crdt::Counter(counter), Op::CounterAdd(amount)) => {
                check_counter_add(counter, amount, stamp.node)?;
                counter_add(counter, amount, dot);
            }
            (Crdt::Set(set), Op::SetAdd(member)) => set.apply(orswot::Op::Add {
                dot,
                members: vec![member],
            }),
            (Crdt::Set(set), Op::SetRemove { member, seen: None }) => {
                let remove_context = set.contains(&member).derive_rm_ctx();
                set.apply(set.rm(member, remove_context));
            }
            (
                Crdt::Set(set),
                Op::SetRemove {
                    member,
                    seen: Some(seen),
                },
            ) => set.apply(orswot::Op::Rm {
                clock: seen.0,
                members: vec![member],
            }),
            _ => unreachable!("value types were checked equal above"),
        }
        self.context.apply(Dot::new(stamp.node, stamp.seq));
        Ok(())
    }

    /// Merges another replica's state of the same key. Returns `Err` if the types differ
    /// (a peer bug or a misconfigured keyspace: the caller drops the state).
    pub fn merge(&mut self, other: KeyState) -> Result<(), WrongType> {
        let expected = self.value_type();
        let got = other.value_type();
        match (&mut self.crdt, other.crdt) {
            (Crdt::Lww(mine), Crdt::Lww(theirs)) => lww_join(mine, theirs.val, theirs.marker),
            (Crdt::MvReg(mine), Crdt::MvReg(theirs)) => mine.merge(theirs),
            (Crdt::Counter(mine), Crdt::Counter(theirs)) => mine.merge(theirs),
            (Crdt::Set(mine), Crdt::Set(theirs)) => mine.merge(theirs),
            _ => return Err(WrongType { expected, got }),
        }
        self.context.merge(other.context);
        Ok(())
    }

    /// The client-visible value.
    pub fn read(&self) -> ReadValue {
        match &self.crdt {
            Crdt::Lww(reg) => {
                let written = !self.context.is_empty();
                ReadValue::Lww {
                    value: reg.val.clone(),
                    stamp: written.then_some(reg.marker),
                }
            }
            Crdt::MvReg(reg) => {
                let read = reg.read();
                let mut siblings: Vec<Bytes> = read.val.into_iter().flatten().collect();
                siblings.sort();
                ReadValue::MvReg {
                    siblings,
                    context: ReadContext(read.add_clock),
                }
            }
            Crdt::Counter(counter) => ReadValue::Counter(counter_value(counter)),
            Crdt::Set(set) => {
                // The dots of the members' adds, not the set's whole clock (which also keeps
                // the dots of removed adds): replicas that agree on the members agree on this
                // too, and a removal needs no more. One pass over the entries gives both.
                let mut members = Vec::new();
                let mut context = VClock::new();
                for entry in set.iter() {
                    members.push(entry.val.clone());
                    context.merge(entry.rm_clock);
                }
                members.sort();
                ReadValue::Set {
                    members,
                    context: ReadContext(context),
                }
            }
        }
    }

    /// True if this state only records a delete: an `lww` tombstone, an `mvreg` whose
    /// siblings are all deletes, a `set` with no members. Such keys are collected once the
    /// delete is causally stable. Counters are never tombstones.
    pub fn is_tombstone(&self) -> bool {
        match &self.crdt {
            Crdt::Lww(reg) => reg.val.is_none(),
            Crdt::MvReg(reg) => reg.read().val.iter().all(Option::is_none),
            Crdt::Counter(_) => false,
            Crdt::Set(set) => set.read().val.is_empty(),
        }
    }

    /// The `lww` timestamp, if this is an `lww` state.
    pub fn lww_stamp(&self) -> Option<HlcTimestamp> {
        match &self.crdt {
            Crdt::Lww(reg) => Some(reg.marker),
            _ => None,
        }
    }

    /// Bytes of this state's wire encoding (measured without any frame limit).
    pub fn encoded_len(&self) -> usize {
        encode_local(self).len()
    }

    /// A 64-bit hash of the canonical encoding: equal states have equal digests.
    pub fn digest(&self) -> u64 {
        mix64(fnv1a_64(&self.canonical_bytes()))
    }

    /// An encoding that is equal for equal states (see the module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let canonical = match &self.crdt {
            Crdt::Lww(_) | Crdt::Counter(_) => return encode_local(self),
            Crdt::MvReg(reg) => {
                let mut mirror: MvRegMirror = transcode(reg);
                mirror.vals.sort_by_cached_key(encode_local);
                Canonical::MvReg(mirror)
            }
            Crdt::Set(set) => {
                let mut mirror: OrswotMirror = transcode(set);
                mirror.entries.sort_by(|a, b| a.0.cmp(&b.0));
                for (_, members) in &mut mirror.deferred {
                    members.sort();
                }
                mirror.deferred.sort_by_cached_key(encode_local);
                Canonical::Set(mirror)
            }
        };
        encode_local(&(canonical, &self.context))
    }

    /// Drops one sibling of an `mvreg` with several: the planted bug `mvreg-drop-sibling`.
    #[cfg(feature = "sim-bugs")]
    pub(crate) fn drop_one_sibling(&mut self) {
        if let Crdt::MvReg(reg) = &mut self.crdt {
            let mut mirror: MvRegMirror = transcode(reg);
            if mirror.vals.len() > 1 {
                mirror.vals.sort_by_cached_key(encode_local);
                mirror.vals.pop();
                *reg = transcode(&mirror);
            }
        }
    }
}

/// Joins an `lww` value into a register: the greater `(marker, value)` wins. Markers are
/// unique for correct writers, but a client chooses the time of its own writes (so that a
/// resend stores the same pair), and a faulty client could send two values at one time:
/// ordering by the value too keeps the join commutative, so replicas still converge.
fn lww_join(
    reg: &mut LWWReg<Option<Bytes>, HlcTimestamp>,
    val: Option<Bytes>,
    marker: HlcTimestamp,
) {
    if (marker, &val) > (reg.marker, &reg.val) {
        reg.val = val;
        reg.marker = marker;
    }
}

/// Writes `value` (None: delete) into an `mvreg`, replacing the siblings `context` saw.
fn mv_write(
    reg: &mut MVReg<Option<Bytes>, NodeId>,
    value: Option<Bytes>,
    context: Option<ReadContext>,
    dot: Dot<NodeId>,
) {
    let mut clock = match (context, &value) {
        (Some(ReadContext(clock)), _) => clock,
        // A blind delete removes what this node sees; a blind put adds a sibling.
        (None, None) => reg.read_ctx().add_clock,
        (None, Some(_)) => VClock::new(),
    };
    clock.apply(dot);
    reg.apply(mvreg::Op::Put { clock, val: value });
}

/// Refuses a counter write that would be acknowledged and then lost: one taking the value
/// out of the `i64` range reads report, or one overflowing `node`'s `u64` total of increments
/// (or decrements), which `crdts` adds with a plain `+` (a panic, or in release a wrapped
/// total that merges as a no-op). Concurrent writes on other nodes can still merge the value
/// out of range; reads then saturate, and a write back towards the range passes.
fn check_counter_add(
    counter: &PNCounter<NodeId>,
    amount: i64,
    node: NodeId,
) -> Result<(), ApplyError> {
    let steps = amount.unsigned_abs();
    // `*_many(node, 0)` is the node's current total as a dot, and cannot overflow.
    let total = if amount >= 0 {
        counter.inc_many(node, 0).dot.counter
    } else {
        counter.dec_many(node, 0).dot.counter
    };
    if total.checked_add(steps).is_none() {
        return Err(ApplyError::CounterExhausted { by: amount });
    }
    let overflow = || ApplyError::CounterOverflow {
        value: counter_value(counter),
        by: amount,
    };
    // Beyond i128 needs some 2^63 nodes' totals: not a state any replica can hold.
    let Ok(before) = i128::try_from(&counter.read()) else {
        return Err(overflow());
    };
    let after = before.saturating_add(i128::from(amount));
    let outward = (amount > 0 && after > i128::from(i64::MAX))
        || (amount < 0 && after < i128::from(i64::MIN));
    if outward { Err(overflow()) } else { Ok(()) }
}

/// The counter's sum as reads report it: saturated at the `i64` range.
fn counter_value(counter: &PNCounter<NodeId>) -> i64 {
    let sum = counter.read();
    // Out of range only when concurrent writes merged past it; the sign decides the clamp.
    i64::try_from(&sum).unwrap_or_else(|_| {
        if sum.to_string().starts_with('-') {
            i64::MIN
        } else {
            i64::MAX
        }
    })
}

fn counter_add(counter: &mut PNCounter<NodeId>, amount: i64, dot: Dot<NodeId>) {
    let steps = amount.unsigned_abs();
    if amount > 0 {
        counter.apply(counter.inc_many(dot.actor, steps));
    } else if amount < 0 {
        counter.apply(counter.dec_many(dot.actor, steps));
    }
}

/// Same serde shape as `crdts::MVReg`, with the fields public.
#[derive(Serialize, Deserialize)]
struct MvRegMirror {
    vals: Vec<(VClock<NodeId>, Option<Bytes>)>,
}

/// Same serde shape as `crdts::Orswot` (maps read as sequences of pairs).
#[derive(Serialize, Deserialize)]
struct OrswotMirror {
    clock: VClock<NodeId>,
    entries: Vec<(Bytes, VClock<NodeId>)>,
    deferred: Vec<(VClock<NodeId>, Vec<Bytes>)>,
}

#[derive(Serialize)]
enum Canonical {
    MvReg(MvRegMirror),
    Set(OrswotMirror),
}

/// The wire payload encoding of local data, with no frame limit: merges can grow a state past
/// any frame, and hashing it must still work (shipping it is refused elsewhere).
fn encode_local<T: Serialize>(value: &T) -> Vec<u8> {
    crate::wire::unframed::encode(value).expect("invariant: key states serialize")
}

/// Re-reads one serde type as another of the same shape (our own bytes, so it cannot fail).
fn transcode<A: Serialize, B: serde::de::DeserializeOwned>(value: &A) -> B {
    let bytes = encode_local(value);
    crate::wire::unframed::decode(&bytes)
        .expect("invariant: mirror types have the crdts serde shape")
}

/// Encoded bytes of a [`super::KeyEntry`] holding `key` and `state`: what shipping the state
/// costs in a message (a struct encodes as its fields in order, like this tuple).
pub fn entry_bytes(key: &[u8], state: &KeyState) -> usize {
    encode_local(&(key, state)).len()
}
