//! The change functions: what each client operation does to a key's [`Register`]. Pure: the
//! proposer applies one to the register its promise quorum reported and proposes the result.

use super::message::{OpId, Register, Versioned, WriteOutcome, WriterRecord};
use bytes::Bytes;

/// A client operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Set the value.
    Put {
        /// The new value.
        value: Bytes,
    },
    /// Remove the value (the key keeps a tombstone and its version).
    Delete,
    /// Change the key only if its mod revision is `expected` (`None`: only if absent).
    /// `value: None` deletes.
    Cas {
        /// The mod revision the key must have, or `None` for "absent".
        expected: Option<u64>,
        /// The new value, or `None` to delete.
        value: Option<Bytes>,
    },
    /// Read the key. Runs a round like a write, so it is linearizable, but changes nothing.
    Get,
}

impl Operation {
    /// Whether the operation changes the key (reads do not).
    pub fn is_write(&self) -> bool {
        !matches!(self, Operation::Get)
    }

    /// The largest value the operation carries, for the size limit.
    pub(crate) fn value_len(&self) -> usize {
        match self {
            Operation::Put { value } => value.len(),
            Operation::Cas {
                value: Some(value), ..
            } => value.len(),
            _ => 0,
        }
    }
}

/// What an operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A write's result.
    Write(WriteOutcome),
    /// A read's result: the value and its revision, or `None` when absent.
    Get {
        /// The key as the read saw it.
        current: Option<Versioned>,
    },
}

/// Applies `operation` (named `op`) to `base`, the register the promise quorum reported.
/// Returns the register to propose and what the operation returns once it is chosen.
///
/// A write whose id is already `base`'s record for its node was applied by an earlier
/// attempt that got chosen: it is not applied again, `base` is proposed unchanged (so it is
/// surely chosen before the answer) and the first answer is returned.
pub fn apply(base: &Register, op: OpId, operation: &Operation) -> (Register, Outcome) {
    if let Some(record) = base.writer(op.proposer.node)
        && record.op == op
        && operation.is_write()
    {
        return (base.clone(), Outcome::Write(record.outcome.clone()));
    }
    let mut next = base.clone();
    let revision = base.version + 1;
    let outcome = match operation {
        Operation::Get => {
            let current = base.current();
            return (next, Outcome::Get { current });
        }
        Operation::Put { value } => {
            next.value = Some(value.clone());
            next.mod_revision = revision;
            WriteOutcome::Put { revision }
        }
        Operation::Delete => {
            next.value = None;
            next.mod_revision = revision;
            let existed = base.value.is_some();
            WriteOutcome::Delete { revision, existed }
        }
        Operation::Cas { expected, value } => apply_cas(base, &mut next, *expected, value),
    };
    next.version = revision;
    remember_writer(&mut next, op, outcome.clone());
    (next, Outcome::Write(outcome))
}

/// The cas part of [`apply`]: `next` is `base` before the change.
fn apply_cas(
    base: &Register,
    next: &mut Register,
    expected: Option<u64>,
    value: &Option<Bytes>,
) -> WriteOutcome {
    let revision = base.version + 1;
    let matches = match expected {
        None => base.value.is_none(),
        Some(expected) => base.value.is_some() && base.mod_revision == expected,
    };
    if !matches {
        // A failed cas changes no value but is still a write (it takes a revision), as a
        // failed compare-and-set in a log is still an entry.
        return WriteOutcome::Cas {
            revision,
            succeeded: false,
            current: base.current(),
        };
    }
    next.value = value.clone();
    next.mod_revision = revision;
    WriteOutcome::Cas {
        revision,
        succeeded: true,
        current: next.current(),
    }
}

/// Replaces `op`'s node's record with this write, keeping the records sorted by node.
fn remember_writer(register: &mut Register, op: OpId, outcome: WriteOutcome) {
    let node = op.proposer.node;
    let record = WriterRecord { op, outcome };
    match register
        .writers
        .binary_search_by_key(&node, |record| record.op.proposer.node)
    {
        Ok(index) => register.writers[index] = record,
        Err(index) => register.writers.insert(index, record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::message::ProposerId;
    use crate::types::NodeId;

    fn op(node: u64, seq: u64) -> OpId {
        OpId {
            proposer: ProposerId {
                node: NodeId(node),
                incarnation: 1,
            },
            seq,
        }
    }

    fn put(text: &str) -> Operation {
        Operation::Put {
            value: Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    // Every write raises the version by one and returns it; the value's mod revision moves
    // only when the value does.
    #[test]
    fn writes_raise_the_version_and_return_it() {
        let (one, outcome) = apply(&Register::default(), op(1, 1), &put("a"));
        assert_eq!(outcome, Outcome::Write(WriteOutcome::Put { revision: 1 }));
        let failed = Operation::Cas {
            expected: Some(7),
            value: None,
        };
        let (two, outcome) = apply(&one, op(2, 1), &failed);
        let Outcome::Write(WriteOutcome::Cas {
            revision: 2,
            succeeded: false,
            current: Some(current),
        }) = outcome
        else {
            panic!("a failed cas: {outcome:?}");
        };
        assert_eq!(current.mod_revision, 1);
        assert_eq!((two.version, two.mod_revision), (2, 1));
        let (three, outcome) = apply(&two, op(2, 2), &Operation::Delete);
        let deleted = WriteOutcome::Delete {
            revision: 3,
            existed: true,
        };
        assert_eq!(outcome, Outcome::Write(deleted));
        assert_eq!((three.value.clone(), three.version), (None, 3));
        let (_, outcome) = apply(&three, op(1, 2), &Operation::Get);
        assert_eq!(outcome, Outcome::Get { current: None });
    }

    #[test]
    fn cas_compares_the_mod_revision_or_absence() {
        let create = Operation::Cas {
            expected: None,
            value: Some(Bytes::from_static(b"x")),
        };
        let (created, outcome) = apply(&Register::default(), op(1, 1), &create);
        assert!(matches!(
            outcome,
            Outcome::Write(WriteOutcome::Cas {
                succeeded: true,
                ..
            })
        ));
        let (_, again) = apply(&created, op(1, 2), &create);
        assert!(matches!(
            again,
            Outcome::Write(WriteOutcome::Cas {
                succeeded: false,
                ..
            })
        ));
        let update = Operation::Cas {
            expected: Some(1),
            value: Some(Bytes::from_static(b"y")),
        };
        let (updated, _) = apply(&created, op(2, 1), &update);
        assert_eq!(updated.value, Some(Bytes::from_static(b"y")));
        assert_eq!(updated.mod_revision, 2);
    }

    // The story: a proposer's accept is chosen but its acks are lost; another node writes
    // over it; the proposer retries. Applying the put again would make one write take
    // effect twice. The record of its node's last write stops that.
    #[test]
    fn a_retried_write_already_chosen_is_not_applied_twice() {
        let mine = op(1, 5);
        let (chosen, first) = apply(&Register::default(), mine, &put("a"));
        let (overwritten, _) = apply(&chosen, op(2, 1), &put("b"));
        let (retried, second) = apply(&overwritten, mine, &put("a"));
        assert_eq!(first, second, "the first answer again");
        assert_eq!(retried, overwritten, "nothing changes");
        // A new operation of the same node is applied.
        let (_, third) = apply(&overwritten, op(1, 6), &put("a"));
        assert_eq!(third, Outcome::Write(WriteOutcome::Put { revision: 3 }));
        assert_eq!(overwritten.writers.len(), 2);
        assert!(overwritten.is_sane());
    }
}
