//! A linearizability checker for the strong keyspace's register-with-revisions semantics.
//!
//! The search is Wing & Gong's, with Lowe's memoisation: depth-first, it picks the next
//! operation to take effect among those that could be first (invoked before every unplaced
//! completed operation returned), steps a model of the key, and backtracks; a cache of
//! (placed set, model state) prunes configurations already explored. Keys are independent
//! (every operation touches one key), so the history is checked one key at a time.
//!
//! An operation that is still in flight or timed out (indeterminate) may take effect at any
//! point after its invocation, or never: the search succeeds once every *completed* operation
//! is placed. An indeterminate read has no effect, so it is left out. An operation that failed
//! for sure (never reached the log) is left out too.
//!
//! The model is one key: absent, or (value, mod revision). A revision is the log index of a
//! write, so the model also checks revisions: every completed write returned a revision above
//! every write placed before it; a read sees the revision of the write it reads; a cas
//! compares the mod revision. The revision of an indeterminate write is unknown until a read
//! (or a cas) reveals it, and is then bound.
//!
//! The search is bounded by a step budget per key. Past it, the key is reported
//! *inconclusive* (counted apart), never passed.

use super::history::{Call, Completion, History, Operation, Return, Seen};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The default search budget per key, in visited configurations.
pub const STEPS_PER_KEY_DEFAULT: u64 = 200_000;

/// The verdicts for one history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinearizabilityReport {
    /// Keys checked.
    pub keys: usize,
    /// Operations that took part in the check.
    pub operations: usize,
    /// One line per key that has no linearization.
    pub violations: Vec<String>,
    /// One line per key whose search ran out of budget.
    pub inconclusive: Vec<String>,
}

/// Checks every key of `history`. `include` picks which completed reads take part (e.g. all but
/// stale ones); writes always take part unless they failed for sure.
pub fn check_history(
    history: &History,
    include: impl Fn(&Operation) -> bool,
    steps_per_key_max: u64,
) -> LinearizabilityReport {
    let mut by_key: BTreeMap<&Bytes, Vec<&Operation>> = BTreeMap::new();
    for operation in history.operations() {
        let takes_part = match (&operation.completion, &operation.call) {
            (Completion::Failed { .. }, _) => false,
            (Completion::Indeterminate, Call::Get { .. }) => false,
            (_, Call::Get { .. }) => include(operation),
            _ => true,
        };
        if takes_part {
            by_key.entry(&operation.key).or_default().push(operation);
        }
    }
    let mut report = LinearizabilityReport::default();
    for (key, operations) in by_key {
        report.keys += 1;
        report.operations += operations.len();
        let name = String::from_utf8_lossy(key);
        match check_key(&operations, steps_per_key_max) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::NotLinearizable { detail } => report
                .violations
                .push(format!("linearizability: key {name}: {detail}")),
            KeyVerdict::Inconclusive { steps } => report.inconclusive.push(format!(
                "key {name}: {} ops, search stopped after {steps} steps",
                operations.len()
            )),
        }
    }
    report
}

/// The verdict for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    Linearizable,
    NotLinearizable { detail: String },
    Inconclusive { steps: u64 },
}

/// Checks the operations of one key (all on the same key; failed ones and indeterminate reads
/// already left out).
pub fn check_key(operations: &[&Operation], steps_max: u64) -> KeyVerdict {
    let mut values = Interner::default();
    let mut ops: Vec<Op> = operations
        .iter()
        .filter_map(|operation| Op::from_operation(operation, &mut values))
        .collect();
    ops.sort_by_key(|op| op.invoke);
    let required = ops.iter().filter(|op| op.returned.is_some()).count();
    let mut search = Search {
        ops: &ops,
        memo: HashSet::new(),
        steps: 0,
        steps_max,
        deepest: 0,
        stuck_at: None,
    };
    let mut placed = vec![0u64; ops.len().div_ceil(64)];
    let start = Model {
        current: None,
        floor: 0,
    };
    match search.run(&mut placed, start, required, 0) {
        Ok(true) => KeyVerdict::Linearizable,
        Ok(false) => KeyVerdict::NotLinearizable {
            detail: search.explain(operations),
        },
        Err(OutOfBudget) => KeyVerdict::Inconclusive {
            steps: search.steps,
        },
    }
}

/// Values of one key, as small numbers, so model states hash cheaply.
#[derive(Default)]
struct Interner {
    ids: HashMap<Bytes, u32>,
}

impl Interner {
    fn id(&mut self, value: &Bytes) -> u32 {
        let next = u32::try_from(self.ids.len()).expect("fewer than 2^32 values per key");
        *self.ids.entry(value.clone()).or_insert(next)
    }

    fn seen(&mut self, seen: &Option<Seen>) -> Option<(u32, u64)> {
        seen.as_ref()
            .map(|seen| (self.id(&seen.value), seen.mod_revision))
    }
}

/// One operation, in the checker's terms. `returned: None` marks an indeterminate one.
struct Op {
    /// Index into the caller's slice, for reports.
    origin: usize,
    invoke: u64,
    returned: Option<u64>,
    kind: Kind,
}

/// A completed cas: its revision, whether it succeeded, and the key it reported.
type CasOutcome = (u64, bool, Option<(u32, u64)>);

enum Kind {
    Put {
        value: u32,
        revision: Option<u64>,
    },
    Delete {
        outcome: Option<(u64, bool)>,
    },
    Cas {
        expected: Option<u64>,
        value: Option<u32>,
        outcome: Option<CasOutcome>,
    },
    Get {
        current: Option<(u32, u64)>,
    },
}

impl Op {
    fn from_operation(operation: &Operation, values: &mut Interner) -> Option<Op> {
        let (returned, result) = match &operation.completion {
            Completion::Ok {
                event, returned, ..
            } => (Some(*event), Some(returned)),
            Completion::Indeterminate => (None, None),
            Completion::Failed { .. } => return None,
        };
        let kind = match (&operation.call, result) {
            (Call::Put { value }, None) => Kind::Put {
                value: values.id(value),
                revision: None,
            },
            (Call::Put { value }, Some(Return::Put { revision })) => Kind::Put {
                value: values.id(value),
                revision: Some(*revision),
            },
            (Call::Delete, None) => Kind::Delete { outcome: None },
            (Call::Delete, Some(Return::Delete { revision, existed })) => Kind::Delete {
                outcome: Some((*revision, *existed)),
            },
            (Call::Cas { expected, value }, result) => Kind::Cas {
                expected: *expected,
                value: value.as_ref().map(|value| values.id(value)),
                outcome: match result {
                    Some(Return::Cas {
                        revision,
                        succeeded,
                        current,
                    }) => Some((*revision, *succeeded, values.seen(current))),
                    _ => None,
                },
            },
            (Call::Get { .. }, Some(Return::Get { current, .. })) => Kind::Get {
                current: values.seen(current),
            },
            (Call::Get { .. }, None) => return None,
            (call, Some(other)) => panic!("harness bug: {call:?} returned {other:?}"),
        };
        Some(Op {
            origin: operation.id,
            invoke: operation.invoke_event,
            returned,
            kind,
        })
    }
}

/// The key as the model sees it at one point of a linearization.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Model {
    /// Absent, or (value, mod revision if known).
    current: Option<(u32, Option<u64>)>,
    /// The highest revision of a placed write whose revision is known: a completed write
    /// placed later must have a higher one (the log orders them).
    floor: u64,
}

impl Model {
    /// Whether a read that saw `seen` fits; binds an unknown revision.
    fn read(&mut self, seen: Option<(u32, u64)>) -> bool {
        match (&mut self.current, seen) {
            (None, None) => true,
            (Some((value, revision)), Some((seen_value, seen_revision)))
                if *value == seen_value =>
            {
                match revision {
                    Some(known) => *known == seen_revision,
                    None => {
                        *revision = Some(seen_revision);
                        true
                    }
                }
            }
            _ => false,
        }
    }

    /// Whether a cas expecting `expected` succeeds here; binds an unknown revision.
    fn compare(&mut self, expected: Option<u64>) -> bool {
        match (&mut self.current, expected) {
            (None, None) => true,
            (Some((_, Some(known))), Some(expected)) => *known == expected,
            (Some((_, revision @ None)), Some(expected)) => {
                *revision = Some(expected);
                true
            }
            _ => false,
        }
    }

    /// Raises the floor to a completed write's revision, if the log order allows it.
    fn logged(mut self, revision: u64) -> Option<Model> {
        if revision <= self.floor {
            return None;
        }
        self.floor = revision;
        Some(self)
    }

    /// The model after `kind` takes effect, or `None` if it cannot take effect here.
    fn step(&self, kind: &Kind) -> Option<Model> {
        let mut next = self.clone();
        match kind {
            Kind::Put { value, revision } => {
                next.current = Some((*value, *revision));
                revision.map_or(Some(next.clone()), |revision| next.logged(revision))
            }
            Kind::Delete { outcome } => {
                next.current = None;
                match outcome {
                    None => Some(next),
                    Some((revision, existed)) if *existed == self.current.is_some() => {
                        next.logged(*revision)
                    }
                    Some(_) => None,
                }
            }
            Kind::Cas {
                expected,
                value,
                outcome,
            } => next.cas(*expected, *value, outcome),
            Kind::Get { current } => next.read(*current).then_some(next),
        }
    }

    fn cas(
        mut self,
        expected: Option<u64>,
        value: Option<u32>,
        outcome: &Option<CasOutcome>,
    ) -> Option<Model> {
        match *outcome {
            // Indeterminate: if it took effect, it succeeded (a failed cas changes nothing,
            // which is the same as never taking effect).
            None => {
                if !self.compare(expected) {
                    return None;
                }
                self.current = value.map(|value| (value, None));
                Some(self)
            }
            Some((revision, true, current)) => {
                if !self.compare(expected) || current != value.map(|value| (value, revision)) {
                    return None;
                }
                self.current = value.map(|value| (value, Some(revision)));
                self.logged(revision)
            }
            Some((revision, false, current)) => {
                if !self.read(current) || self.clone().compare(expected) {
                    return None;
                }
                self.logged(revision)
            }
        }
    }
}

struct OutOfBudget;

struct Search<'a> {
    /// Sorted by invocation.
    ops: &'a [Op],
    memo: HashSet<(Vec<u64>, Model)>,
    steps: u64,
    steps_max: u64,
    /// The most operations placed in any branch, and the model and the first unplaced
    /// completed operation there: what the report shows when no linearization exists.
    deepest: usize,
    stuck_at: Option<(usize, Model)>,
}

impl Search<'_> {
    fn run(
        &mut self,
        placed: &mut Vec<u64>,
        model: Model,
        required_left: usize,
        depth: usize,
    ) -> Result<bool, OutOfBudget> {
        if required_left == 0 {
            return Ok(true);
        }
        if !self.memo.insert((placed.clone(), model.clone())) {
            return Ok(false);
        }
        self.steps += 1;
        if self.steps > self.steps_max {
            return Err(OutOfBudget);
        }
        let is_placed =
            |placed: &Vec<u64>, index: usize| placed[index / 64] & (1 << (index % 64)) != 0;
        // The first completed operation not yet placed bounds who may go next.
        let (first_return, first_index) = (0..self.ops.len())
            .filter(|index| !is_placed(placed, *index))
            .filter_map(|index| self.ops[index].returned.map(|at| (at, index)))
            .min()
            .expect("required_left > 0 means a completed operation is unplaced");
        if depth >= self.deepest {
            self.deepest = depth;
            self.stuck_at = Some((first_index, model.clone()));
        }
        for index in 0..self.ops.len() {
            let op = &self.ops[index];
            if op.invoke > first_return {
                break;
            }
            if is_placed(placed, index) {
                continue;
            }
            let Some(next) = model.step(&op.kind) else {
                continue;
            };
            placed[index / 64] |= 1 << (index % 64);
            let left = required_left - usize::from(op.returned.is_some());
            let found = self.run(placed, next, left, depth + 1)?;
            placed[index / 64] &= !(1 << (index % 64));
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn explain(&self, operations: &[&Operation]) -> String {
        let Some((index, model)) = &self.stuck_at else {
            return "no linearization".to_string();
        };
        let origin = self.ops[*index].origin;
        let stuck = operations
            .iter()
            .find(|operation| operation.id == origin)
            .map_or_else(|| format!("#{origin}"), |operation| operation.to_string());
        format!(
            "{} ops, no linearization; the longest prefix places {} ops, then cannot place \
             {stuck} (model there: {model:?})",
            self.ops.len(),
            self.deepest
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::history::ReadPath;
    use crate::types::{Instant, NodeId};

    const BUDGET: u64 = 100_000;

    fn value(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn seen(text: &str, revision: u64) -> Option<Seen> {
        Some(Seen {
            value: value(text),
            mod_revision: revision,
        })
    }

    /// Builds histories on key "k" from scripted invocations and completions.
    struct Script {
        history: History,
    }

    impl Script {
        fn new() -> Script {
            Script {
                history: History::new(),
            }
        }

        fn invoke(&mut self, client: u64, call: Call) -> usize {
            self.history.invoke(client, value("k"), call, Instant::ZERO)
        }

        fn put(&mut self, client: u64, text: &str) -> usize {
            self.invoke(client, Call::Put { value: value(text) })
        }

        fn get(&mut self, client: u64) -> usize {
            self.invoke(
                client,
                Call::Get {
                    level: ReadPath::Linearizable,
                },
            )
        }

        fn ok(&mut self, id: usize, returned: Return) {
            self.history.complete(id, returned, Instant::ZERO);
        }

        fn put_ok(&mut self, id: usize, revision: u64) {
            self.ok(id, Return::Put { revision });
        }

        fn get_ok(&mut self, id: usize, current: Option<Seen>) {
            let returned = Return::Get {
                current,
                node: NodeId(1),
                applied: 0,
                incarnation: 0,
            };
            self.ok(id, returned);
        }

        fn verdict(&self) -> LinearizabilityReport {
            check_history(&self.history, |_| true, BUDGET)
        }

        fn assert_linearizable(&self) {
            let report = self.verdict();
            assert!(report.violations.is_empty(), "{:?}", report.violations);
            assert!(report.inconclusive.is_empty());
        }

        fn assert_violation(&self) {
            let report = self.verdict();
            assert_eq!(report.violations.len(), 1, "{report:?}");
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let mut script = Script::new();
        let put = script.put(1, "a");
        script.put_ok(put, 3);
        let get = script.get(2);
        script.get_ok(get, seen("a", 3));
        script.assert_linearizable();
    }

    #[test]
    fn stale_read_is_rejected() {
        let mut script = Script::new();
        let first = script.put(1, "a");
        script.put_ok(first, 3);
        let second = script.put(1, "b");
        script.put_ok(second, 4);
        let get = script.get(2);
        script.get_ok(get, seen("a", 3));
        script.assert_violation();
    }

    #[test]
    fn read_of_a_value_never_written_is_rejected() {
        let mut script = Script::new();
        let put = script.put(1, "a");
        script.put_ok(put, 3);
        let get = script.get(2);
        script.get_ok(get, seen("ghost", 3));
        script.assert_violation();
    }

    #[test]
    fn lost_write_is_rejected() {
        // A completed write, then a read that sees the key absent.
        let mut script = Script::new();
        let put = script.put(1, "a");
        script.put_ok(put, 3);
        let get = script.get(2);
        script.get_ok(get, None);
        script.assert_violation();
    }

    #[test]
    fn wrong_revision_is_rejected() {
        let mut script = Script::new();
        let put = script.put(1, "a");
        script.put_ok(put, 3);
        let get = script.get(2);
        script.get_ok(get, seen("a", 5));
        script.assert_violation();
        // Revisions must follow the log: a later write cannot have a lower one.
        let mut script = Script::new();
        let first = script.put(1, "a");
        script.put_ok(first, 7);
        let second = script.put(1, "b");
        script.put_ok(second, 4);
        script.assert_violation();
    }

    #[test]
    fn double_apply_of_a_retried_write_is_rejected() {
        // c1's put of "a" is retried and applied twice (revisions 3 and 5) around c2's put of
        // "b" (revision 4). A read sees "a" at 3, a later one "b", a later one "a" at 5: one
        // write of "a" cannot take effect twice.
        let mut script = Script::new();
        let put_a = script.put(1, "a");
        let first_read = script.get(3);
        script.get_ok(first_read, seen("a", 3));
        let put_b = script.put(2, "b");
        script.put_ok(put_b, 4);
        let second_read = script.get(3);
        script.get_ok(second_read, seen("b", 4));
        let third_read = script.get(3);
        script.get_ok(third_read, seen("a", 5));
        script.put_ok(put_a, 5);
        script.assert_violation();
    }

    #[test]
    fn double_applied_cas_that_reports_failure_is_rejected() {
        // A cas applied twice: the first application succeeds, the retry fails against the
        // first's own write and that failure is what the client hears.
        let mut script = Script::new();
        let cas = script.invoke(
            1,
            Call::Cas {
                expected: None,
                value: Some(value("a")),
            },
        );
        script.ok(
            cas,
            Return::Cas {
                revision: 4,
                succeeded: false,
                current: seen("a", 3),
            },
        );
        script.assert_violation();
    }

    #[test]
    fn concurrent_overlapping_ops_linearize_in_either_order() {
        for read_sees_new in [false, true] {
            let mut script = Script::new();
            let put = script.put(1, "a");
            script.put_ok(put, 3);
            let put = script.put(1, "b");
            let get = script.get(2);
            if read_sees_new {
                script.get_ok(get, seen("b", 4));
            } else {
                script.get_ok(get, seen("a", 3));
            }
            script.put_ok(put, 4);
            script.assert_linearizable();
        }
    }

    #[test]
    fn indeterminate_write_may_or_may_not_apply() {
        for applied in [false, true] {
            let mut script = Script::new();
            let put = script.put(1, "a");
            script.put_ok(put, 3);
            let _timed_out = script.put(1, "b");
            let get = script.get(2);
            if applied {
                script.get_ok(get, seen("b", 9));
            } else {
                script.get_ok(get, seen("a", 3));
            }
            let later = script.get(2);
            if applied {
                script.get_ok(later, seen("b", 9));
            } else {
                script.get_ok(later, seen("a", 3));
            }
            script.assert_linearizable();
        }
        // But it cannot apply, then un-apply.
        let mut script = Script::new();
        let put = script.put(1, "a");
        script.put_ok(put, 3);
        let _timed_out = script.put(1, "b");
        let get = script.get(2);
        script.get_ok(get, seen("b", 9));
        let later = script.get(2);
        script.get_ok(later, seen("a", 3));
        script.assert_violation();
    }

    #[test]
    fn cas_compares_revisions() {
        let mut script = Script::new();
        let put = script.put(1, "a");
        script.put_ok(put, 3);
        let cas = script.invoke(
            2,
            Call::Cas {
                expected: Some(3),
                value: Some(value("b")),
            },
        );
        script.ok(
            cas,
            Return::Cas {
                revision: 5,
                succeeded: true,
                current: seen("b", 5),
            },
        );
        let wrong = script.invoke(
            2,
            Call::Cas {
                expected: Some(3),
                value: Some(value("c")),
            },
        );
        script.ok(
            wrong,
            Return::Cas {
                revision: 6,
                succeeded: false,
                current: seen("b", 5),
            },
        );
        script.assert_linearizable();
        // A cas that succeeded against a revision the key did not have is a violation.
        let mut script = Script::new();
        let put = script.put(1, "a");
        script.put_ok(put, 3);
        let cas = script.invoke(
            2,
            Call::Cas {
                expected: Some(2),
                value: Some(value("b")),
            },
        );
        script.ok(
            cas,
            Return::Cas {
                revision: 5,
                succeeded: true,
                current: seen("b", 5),
            },
        );
        script.assert_violation();
    }

    #[test]
    fn the_budget_makes_a_search_inconclusive_not_passed() {
        let mut script = Script::new();
        // Many concurrent indeterminate writes and a read nobody wrote: hard and false.
        for client in 0..30 {
            script.put(client, &format!("v{client}"));
        }
        let get = script.get(99);
        script.get_ok(get, seen("nobody", 1));
        let report = check_history(&script.history, |_| true, 50);
        assert!(report.violations.is_empty());
        assert_eq!(report.inconclusive.len(), 1);
    }
}
