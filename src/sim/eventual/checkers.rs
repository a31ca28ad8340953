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

/// Convergence: every replica holds the same state for every key of a keyspace. `replicas`
/// gives each node's full state (key to value, in a form whose `==` means identical CRDT
/// state) and its Merkle root.
pub fn check_convergence<V: PartialEq + Debug, R: PartialEq + Debug>(
    keyspace: &str,
    replicas: &[(NodeId, BTreeMap<Vec<u8>, V>, R)],
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
    let Some(winner) = writes.iter().find(|w| w.stamp == *stamp) else {
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

fn duplicate_stamps<S: Ord + Debug>(key: &[u8], writes: &[LwwWrite<S>]) -> Vec<String> {
    let mut seen: BTreeMap<&S, u64> = BTreeMap::new();
    let mut violations = Vec::new();
    for write in writes.iter().filter(|w| w.outcome.may_apply()) {
        if let Some(other) = seen.insert(&write.stamp, write.id) {
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

/// MVReg: `siblings` are the converged register's (clock, value) pairs.
pub fn check_mvreg(
    key: &[u8],
    writes: &[MvWrite],
    siblings: &[(VClock<NodeId>, Vec<u8>)],
) -> Vec<String> {
    let mut violations = Vec::new();
    let by_value: BTreeMap<&[u8], &MvWrite> =
        writes.iter().map(|w| (w.value.as_slice(), w)).collect();
    let k = show_key(key);
    for (clock, value) in siblings {
        match by_value.get(value.as_slice()) {
            None => violations.push(format!(
                "phantom: mvreg key {k}: sibling {} matches no write",
                show_key(value)
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
        let kept = siblings
            .iter()
            .any(|(clock, value)| *value == write.value || write.clock < *clock);
        if !kept {
            violations.push(format!(
                "lost-ack: mvreg key {k}: acked write #{} at {} is neither a sibling nor \
                 superseded by one; siblings {}",
                write.id,
                render(&write.clock),
                render(&siblings.iter().map(|s| &s.0).collect::<Vec<_>>())
            ));
        }
        for (clock, value) in siblings.iter().filter(|(clock, _)| *clock < write.clock) {
            violations.push(format!(
                "mvreg: key {k}: sibling {} at {} survives although acked write #{} \
                 superseded it",
                show_key(value),
                render(clock),
                write.id
            ));
        }
    }
    violations
}

/// Siblings must be pairwise concurrent: neither equal nor ordered.
fn sibling_order(key: &str, siblings: &[(VClock<NodeId>, Vec<u8>)]) -> Vec<String> {
    let mut violations = Vec::new();
    for (index, (a, a_value)) in siblings.iter().enumerate() {
        for (b, b_value) in &siblings[index + 1..] {
            if !a.concurrent(b) {
                violations.push(format!(
                    "mvreg: key {key}: siblings {} at {} and {} at {} are not concurrent",
                    show_key(a_value),
                    render(a),
                    show_key(b_value),
                    render(b)
                ));
            }
        }
    }
    violations
}

/// Session (read-your-writes), LWW: a read with the token of a write at `token` must see a
/// stamp at or after it; absent is fine only if a later delete may have been collected.
pub fn check_lww_session<S: Ord + Debug>(
    key: &[u8],
    writes: &[LwwWrite<S>],
    token: &S,
    seen: Option<&S>,
    node: NodeId,
) -> Option<String> {
    let fine = match seen {
        Some(stamp) => stamp >= token,
        None => writes
            .iter()
            .any(|w| w.value.is_none() && w.outcome.may_apply() && w.stamp > *token),
    };
    (!fine).then(|| {
        format!(
            "session: lww key {} on {node}: read with token {} saw {}",
            show_key(key),
            render(token),
            render(&seen)
        )
    })
}

/// Session, clock-versioned values (mvreg, set, counter): the read's version must cover the
/// token's.
pub fn check_clock_session(
    kind: &str,
    key: &[u8],
    token: &VClock<NodeId>,
    seen: &VClock<NodeId>,
    node: NodeId,
) -> Option<String> {
    let fine = token <= seen;
    (!fine).then(|| {
        format!(
            "session: {kind} key {} on {node}: read with token {} saw version {}",
            show_key(key),
            render(token),
            render(seen)
        )
    })
}

/// Counts writes per outcome for the summary line: acked, indeterminate (pending included),
/// failed.
pub fn tally(outcomes: impl Iterator<Item = Outcome>) -> [u64; 3] {
    let mut counts = [0u64; 3];
    for outcome in outcomes {
        let slot = match outcome {
            Outcome::Acked => 0,
            Outcome::Indeterminate | Outcome::Pending => 1,
            Outcome::Failed => 2,
        };
        counts[slot] += 1;
    }
    counts
}

#[cfg(test)]
mod tests;
