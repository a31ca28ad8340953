//! The eventual simulator's checkers: pure functions over the op log and the final states.
//!
//! Each returns one line per violation, naming the checker, the key and what it saw. They know
//! nothing about the engine: the harness turns the engine's states into the plain forms here
//! (a number, a set of members, a stamped value, stamped siblings), so each checker is testable
//! on hand-made data.
//!
//! What "nothing acknowledged is lost" means per value type:
//! - counter: the value is the sum of the acked amounts plus the sum of some subset of the
//!   indeterminate ones;
//! - set: a member some acked add put in is present unless a remove observed that add; a member
//!   is present only if some add of it was not observed by an acked remove;
//! - lww: the value is the write with the greatest stamp among the acked writes and some
//!   subset of the indeterminate ones (a delete that wins leaves a tombstone or nothing);
//! - mvreg: every acked write is a sibling or is superseded by one; no sibling is superseded by
//!   an acked write; siblings are pairwise concurrent.

use super::history::{CounterWrite, LwwWrite, MvWrite, Outcome, SetWrite};
use crate::types::NodeId;
use crdts::{Dot, VClock};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

/// Longest rendering of a state in a violation line; states can be large.
const RENDER_CHARS_MAX: usize = 160;

/// The largest total of indeterminate counter amounts the subset-sum check accepts. The
/// harness draws amounts and writes well below this; above it the check reports itself.
const SUBSET_SUM_SPAN_MAX: u64 = 1 << 20;

/// A key as printed in violations: UTF-8 when it is, hex escapes otherwise.
pub fn show_key(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

/// `Debug` of a value, cut to [`RENDER_CHARS_MAX`] characters.
pub fn render<T: Debug>(value: &T) -> String {
    let text = format!("{value:?}");
    if text.chars().count() <= RENDER_CHARS_MAX {
        return text;
    }
    let cut: String = text.chars().take(RENDER_CHARS_MAX).collect();
    format!("{cut}...")
}

fn covers(clock: &VClock<NodeId>, dot: &Dot<NodeId>) -> bool {
    clock.get(&dot.actor) >= dot.counter
}

/// One replica as the convergence checker sees it: its node, full state and Merkle root.
pub type Replica<V, R> = (NodeId, BTreeMap<Vec<u8>, V>, R);

/// Convergence: every replica holds the same state for every key of a keyspace. `replicas`
/// gives each node's full state (key to value, in a form whose `==` means identical CRDT
/// state) and its Merkle root.
pub fn check_convergence<V: PartialEq + Debug, R: PartialEq + Debug>(
    keyspace: &str,
    replicas: &[Replica<V, R>],
) -> Vec<String> {
    let mut violations = Vec::new();
    let Some((first_node, first_state, first_root)) = replicas.first() else {
        return violations;
    };
    for (node, state, root) in &replicas[1..] {
        let keys: BTreeSet<&Vec<u8>> = first_state.keys().chain(state.keys()).collect();
        for key in keys {
            let (mine, theirs) = (first_state.get(key), state.get(key));
            if mine != theirs {
                violations.push(format!(
                    "convergence: {keyspace} key {}: {first_node} has {}, {node} has {}",
                    show_key(key),
                    render(&mine),
                    render(&theirs)
                ));
            }
        }
        if first_root != root {
            violations.push(format!(
                "convergence: {keyspace} Merkle roots differ: {first_node} {}, {node} {}",
                render(first_root),
                render(root)
            ));
        }
    }
    violations
}

/// Counter: `value` = acked amounts + a subset of the indeterminate amounts.
pub fn check_counter(key: &[u8], writes: &[CounterWrite], value: i128) -> Vec<String> {
    let acked: i128 = writes
        .iter()
        .filter(|w| w.outcome.must_apply())
        .map(|w| i128::from(w.amount))
        .sum();
    let maybe: Vec<i64> = writes
        .iter()
        .filter(|w| w.outcome.may_apply() && !w.outcome.must_apply())
        .map(|w| w.amount)
        .collect();
    match subset_sum_reaches(&maybe, value - acked) {
        Some(true) => Vec::new(),
        Some(false) => vec![format!(
            "lost-ack: counter key {}: value {value}, acked sum {acked}, and no subset of the \
             {} indeterminate amounts {} makes up the difference",
            show_key(key),
            maybe.len(),
            render(&maybe)
        )],
        None => vec![format!(
            "lost-ack: counter key {}: {} indeterminate amounts span too much to check",
            show_key(key),
            maybe.len()
        )],
    }
}

/// Whether some subset of `amounts` sums to `target`; `None` when the amounts span more than
/// [`SUBSET_SUM_SPAN_MAX`].
fn subset_sum_reaches(amounts: &[i64], target: i128) -> Option<bool> {
    let negative: u64 = amounts
        .iter()
        .filter(|a| **a < 0)
        .map(|a| a.unsigned_abs())
        .sum();
    let positive: u64 = amounts.iter().filter(|a| **a > 0).map(|a| *a as u64).sum();
    let span = negative.checked_add(positive)?;
    if span > SUBSET_SUM_SPAN_MAX {
        return None;
    }
    let offset = i128::from(negative);
    let index = target + offset;
    if index < 0 || index > i128::from(span) {
        return Some(false);
    }
    // reachable[i]: some subset sums to i - offset. Start with the empty subset.
    let mut reachable = vec![false; span as usize + 1];
    reachable[negative as usize] = true;
    for amount in amounts {
        let previous = reachable.clone();
        for (sum, yes) in previous.iter().enumerate() {
            let next = sum as i128 + i128::from(*amount);
            if *yes && next >= 0 && next <= i128::from(span) {
                reachable[next as usize] = true;
            }
        }
    }
    Some(reachable[index as usize])
}

/// Set: acked adds survive unless observed by a remove; members appear only if some add of
/// theirs escaped every acked remove (so a removed member never comes back).
pub fn check_set(key: &[u8], writes: &[SetWrite], members: &BTreeSet<Vec<u8>>) -> Vec<String> {
    let mut violations = Vec::new();
    let mut by_member: BTreeMap<&[u8], Vec<&SetWrite>> = BTreeMap::new();
    for write in writes {
        by_member.entry(write.member()).or_default().push(write);
    }
    for (member, ops) in &by_member {
        let present = members.contains(*member);
        if let Some(lost) = lost_set_add(ops).filter(|_| !present) {
            violations.push(format!(
                "lost-ack: set key {} member {}: acked add #{lost} observed by no remove, \
                 but the member is missing",
                show_key(key),
                show_key(member)
            ));
        }
        if present && !some_add_escapes(ops) {
            violations.push(format!(
                "resurrection: set key {} member {}: every add was removed by an acked \
                 remove, yet the member is present",
                show_key(key),
                show_key(member)
            ));
        }
    }
    for member in members {
        if !by_member.contains_key(member.as_slice()) {
            violations.push(format!(
                "phantom: set key {} member {} was never added",
                show_key(key),
                show_key(member)
            ));
        }
    }
    violations
}

/// The id of an acked add of one member that no remove (that may have applied) observed.
fn lost_set_add(ops: &[&SetWrite]) -> Option<u64> {
    let removes: Vec<&VClock<NodeId>> = ops
        .iter()
        .filter_map(|op| match op {
            SetWrite::Remove {
                observed, outcome, ..
            } if outcome.may_apply() => Some(observed),
            _ => None,
        })
        .collect();
    ops.iter().find_map(|op| match op {
        SetWrite::Add {
            id, dot, outcome, ..
        } if outcome.must_apply() => {
            let observed = match dot {
                Some(dot) => removes.iter().any(|clock| covers(clock, dot)),
                // Without a dot, any remove might have observed it.
                None => !removes.is_empty(),
            };
            (!observed).then_some(*id)
        }
        _ => None,
    })
}

/// Whether some add of one member (that may have applied) escaped every acked remove.
fn some_add_escapes(ops: &[&SetWrite]) -> bool {
    let acked_removes: Vec<&VClock<NodeId>> = ops
        .iter()
        .filter_map(|op| match op {
            SetWrite::Remove {
                observed, outcome, ..
            } if outcome.must_apply() => Some(observed),
            _ => None,
        })
        .collect();
    ops.iter().any(|op| match op {
        SetWrite::Add { dot, outcome, .. } if outcome.may_apply() => match dot {
            Some(dot) => !acked_removes.iter().any(|clock| covers(clock, dot)),
            None => true,
        },
        _ => false,
    })
}

/// LWW: `current` is the converged register, `None` when the key is absent (never written,
/// or its tombstone was collected), else the value (`None` for a tombstone) and its stamp.
pub fn check_lww<S: Ord + Debug>(
    key: &[u8],
    writes: &[LwwWrite<S>],
    current: Option<(Option<&[u8]>, &S)>,
) -> Vec<String> {
    let mut violations = duplicate_stamps(key, writes);
    let acked_max = writes
        .iter()
        .filter(|w| w.outcome.must_apply())
        .max_by(|a, b| a.stamp.cmp(&b.stamp));
    let Some((value, stamp)) = current else {
        // Absent: only fine if every acked put lost to a later delete.
        let deletes = writes
            .iter()
            .filter(|w| w.value.is_none() && w.outcome.may_apply());
        let latest_delete = deletes.map(|w| &w.stamp).max();
        let lost = writes.iter().find(|w| {
            w.outcome.must_apply() && w.value.is_some() && latest_delete < Some(&w.stamp)
        });
        if let Some(lost) = lost {
            violations.push(format!(
                "lost-ack: lww key {}: absent, but acked put #{} at {} was never deleted",
                show_key(key),
                lost.id,
                render(&lost.stamp)
            ));
        }
        return violations;
    };
    // A stamp may be reissued after a crash lost the write that first had it: prefer the
    // write that may have applied.
    let same_stamp = || writes.iter().filter(|w| w.stamp == *stamp);
    let winner = same_stamp()
        .find(|w| w.outcome.may_apply())
        .or_else(|| same_stamp().next());
    let Some(winner) = winner else {
        violations.push(format!(
            "phantom: lww key {}: value {} at {} matches no write",
            show_key(key),
            render(&value),
            render(stamp)
        ));
        return violations;
    };
    let what = describe_lww(winner);
    if !winner.outcome.may_apply() {
        violations.push(format!(
            "phantom: lww key {}: the failed write #{} {what} is the value",
            show_key(key),
            winner.id
        ));
    }
    if winner.value.as_deref() != value {
        violations.push(format!(
            "phantom: lww key {}: value {} at {} but write #{} there was {what}",
            show_key(key),
            render(&value),
            render(stamp),
            winner.id
        ));
    }
    if let Some(acked) = acked_max.filter(|a| a.stamp > *stamp) {
        let kind = if acked.value.is_none() && winner.value.is_some() {
            "resurrection"
        } else {
            "lost-ack"
        };
        violations.push(format!(
            "{kind}: lww key {}: acked write #{} {} at {} lost to #{} {what} at {}",
            show_key(key),
            acked.id,
            describe_lww(acked),
            render(&acked.stamp),
            winner.id,
            render(stamp)
        ));
    }
    violations
}

fn describe_lww<S>(write: &LwwWrite<S>) -> String {
    match &write.value {
        Some(value) => format!("put {}", show_key(value)),
        None => "delete".to_string(),
    }
}

/// Two writes with one stamp and different values: replicas could not tell which is last.
/// One stamp with one value is a client's resend of its write, which keeps its time.
fn duplicate_stamps<S: Ord + Debug>(key: &[u8], writes: &[LwwWrite<S>]) -> Vec<String> {
    let mut seen: BTreeMap<&S, &LwwWrite<S>> = BTreeMap::new();
    let mut violations = Vec::new();
    for write in writes.iter().filter(|w| w.outcome.may_apply()) {
        let Some(other) = seen.insert(&write.stamp, write) else {
            continue;
        };
        if other.value != write.value {
            let other = other.id;
            violations.push(format!(
                "hlc: lww key {}: writes #{other} and #{} share stamp {}",
                show_key(key),
                write.id,
                render(&write.stamp)
            ));
        }
    }
    violations
}

/// An `mvreg` sibling: its clock and value (`None`: a delete).
pub type Sibling = (VClock<NodeId>, Option<Vec<u8>>);

/// MVReg: `siblings` are the converged register's (clock, value) pairs, delete siblings
/// included; an absent key has none.
pub fn check_mvreg(key: &[u8], writes: &[MvWrite], siblings: &[Sibling]) -> Vec<String> {
    let k = show_key(key);
    let mut violations = Vec::new();
    for (clock, value) in siblings {
        let write = writes.iter().find(|w| match (&w.value, value) {
            (Some(written), Some(seen)) => written == seen,
            (None, None) => w.clock == *clock,
            _ => false,
        });
        match write {
            None => violations.push(format!(
                "phantom: mvreg key {k}: sibling {} at {} matches no write",
                show_value(value),
                render(clock)
            )),
            Some(write) if !write.outcome.may_apply() => violations.push(format!(
                "phantom: mvreg key {k}: failed write #{} is a sibling",
                write.id
            )),
            Some(write) if write.clock != *clock => violations.push(format!(
                "mvreg: key {k}: sibling #{} has clock {} but was written with {}",
                write.id,
                render(clock),
                render(&write.clock)
            )),
            Some(_) => {}
        }
    }
    violations.extend(sibling_order(&k, siblings));
    for write in writes.iter().filter(|w| w.outcome.must_apply()) {
        if write.value.is_some() && !mv_kept(writes, write, siblings) {
            violations.push(format!(
                "lost-ack: mvreg key {k}: acked write #{} at {} is neither a sibling nor \
                 superseded by one or by a delete; siblings {}",
                write.id,
                render(&write.clock),
                render(&siblings.iter().map(|s| &s.0).collect::<Vec<_>>())
            ));
        }
        for (clock, value) in siblings.iter().filter(|(clock, _)| *clock < write.clock) {
            violations.push(format!(
                "mvreg: key {k}: sibling {} at {} survives although acked write #{} \
                 superseded it",
                show_value(value),
                render(clock),
                write.id
            ));
        }
    }
    violations
}

fn show_value(value: &Option<Vec<u8>>) -> String {
    value
        .as_deref()
        .map_or_else(|| "<delete>".to_string(), show_key)
}

/// An `mvreg` put is kept if it is a sibling, or a sibling or a delete that may have applied
/// supersedes it (a collected delete leaves no sibling behind).
fn mv_kept(writes: &[MvWrite], write: &MvWrite, siblings: &[Sibling]) -> bool {
    let sibling = siblings
        .iter()
        .any(|(clock, value)| *value == write.value || write.clock < *clock);
    sibling
        || writes
            .iter()
            .any(|d| d.value.is_none() && d.outcome.may_apply() && write.clock < d.clock)
}

/// Whether an `mvreg` read (its siblings and context) reflects `write`: the context covers
/// the write's clock, or a delete that may have applied superseded it.
pub fn mv_reflects(
    writes: &[MvWrite],
    write: &MvWrite,
    siblings: &[Vec<u8>],
    context: &VClock<NodeId>,
) -> bool {
    let seen_value = write
        .value
        .as_ref()
        .is_some_and(|value| siblings.contains(value));
    seen_value
        || write.clock <= *context
        || writes
            .iter()
            .any(|d| d.value.is_none() && d.outcome.may_apply() && write.clock <= d.clock)
}

/// Whether a set read (its members) reflects `write`: an add's member is present unless a
/// remove that may have applied observed it; a removed member is absent unless some add of
/// it escaped the remove.
pub fn set_reflects(writes: &[SetWrite], write: &SetWrite, members: &[Vec<u8>]) -> bool {
    let member = write.member();
    let present = members.iter().any(|m| m.as_slice() == member);
    let same: Vec<&SetWrite> = writes.iter().filter(|w| w.member() == member).collect();
    match write {
        SetWrite::Add { dot, .. } => {
            present
                || same.iter().any(|w| match (w, dot) {
                    (
                        SetWrite::Remove {
                            observed, outcome, ..
                        },
                        Some(dot),
                    ) => outcome.may_apply() && covers(observed, dot),
                    (SetWrite::Remove { outcome, .. }, None) => outcome.may_apply(),
                    _ => false,
                })
        }
        SetWrite::Remove { observed, .. } => {
            !present
                || same.iter().any(|w| match w {
                    SetWrite::Add { dot, outcome, .. } => {
                        outcome.may_apply() && dot.as_ref().is_none_or(|d| !covers(observed, d))
                    }
                    SetWrite::Remove { .. } => false,
                })
        }
    }
}

/// Whether an `lww` read that saw `seen` (the winning stamp; `None` if the key is absent)
/// reflects a write at `stamp`: the stamp seen is at or after it, or the key is absent and
/// a later delete (since collected) may have applied.
pub fn lww_reflects<S: Ord>(writes: &[LwwWrite<S>], stamp: &S, seen: Option<&S>) -> bool {
    match seen {
        Some(seen) => seen >= stamp,
        // The write itself may be the delete.
        None => writes
            .iter()
            .any(|w| w.value.is_none() && w.outcome.may_apply() && w.stamp >= *stamp),
    }
}

/// Siblings must be pairwise concurrent: neither equal nor ordered.
fn sibling_order(key: &str, siblings: &[Sibling]) -> Vec<String> {
    let mut violations = Vec::new();
    for (index, (a, a_value)) in siblings.iter().enumerate() {
        for (b, b_value) in &siblings[index + 1..] {
            if !a.concurrent(b) {
                violations.push(format!(
                    "mvreg: key {key}: siblings {} at {} and {} at {} are not concurrent",
                    show_value(a_value),
                    render(a),
                    show_value(b_value),
                    render(b)
                ));
            }
        }
    }
    violations
}

/// Counts writes per outcome for the summary line: acked, indeterminate (pending included),
/// lost in a crash, failed.
pub fn tally(outcomes: impl Iterator<Item = Outcome>) -> [u64; 4] {
    let mut counts = [0u64; 4];
    for outcome in outcomes {
        let slot = match outcome {
            Outcome::Acked => 0,
            Outcome::Indeterminate | Outcome::Pending => 1,
            Outcome::Lost => 2,
            Outcome::Failed => 3,
        };
        counts[slot] += 1;
    }
    counts
}

#[cfg(test)]
mod tests;
