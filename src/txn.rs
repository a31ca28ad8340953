//! The coordinator of a transaction across strong keyspaces, and the resolution of an intent
//! someone meets: the decisions of two-phase commit, without IO (the protocol and the state
//! machine's side are in [`crate::strong::twophase`]).
//!
//! The client library ([`crate::client::txn`]) and the node simulator drive the same
//! [`Coordinator`]: it hands out the steps to send ([`Send`]), the driver sends each to its
//! keyspace (following leaders and retrying as for any strong write) and hands back how each
//! ended ([`StepResult`]), until [`Coordinator::end`] says how the transaction ended.
//!
//! ```text
//!  PrepareAnchor ──prepared──▶ PrepareOthers ──all prepared──▶ Decide ──committed──▶ Resolve
//!       │ refused                   │ any refused or unknown       │ aborted            │
//!       ▼                           ▼                              ▼                    ▼
//!    Aborted ◀──────────────── Abort (decide abort, resolve) ◀─────┘          Committed
//! ```
//!
//! The coordinator never sends a commit before every participant answered its prepare, and
//! never resolves a participant before the anchor's decide answered: the two planted bugs of
//! [`CoordinatorBug`] do exactly those, and the simulator's bank workload catches them.

use crate::strong::{Decision, Part, Resolution, StepOutcome, TxnId, TxnState, TxnStep, Versioned};
use crate::types::LogIndex;
use bytes::Bytes;
use std::collections::BTreeMap;

/// How long a transaction's record stays pending before whoever meets one of its intents may
/// abort it: well above a leader failover, so a coordinator that is alive is not aborted.
pub const RECORD_TTL_MS: u64 = 5_000;
/// Decides a coordinator sends, in all, before it says the outcome is unknown.
const DECIDES_MAX: u32 = 3;

/// A deliberate bug, for the simulator's teeth (only `sim-bugs` builds can switch one on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinatorBug {
    /// Sends the commit as soon as the anchor prepared, without the other prepares.
    CommitWithoutAllPrepares,
    /// Resolves the other participants together with the decide, before it is durable.
    ReleaseBeforeDecision,
}

impl CoordinatorBug {
    pub const NAMES: &'static [&'static str] =
        &["txn-commit-without-prepares", "txn-release-before-decision"];

    pub fn from_name(name: &str) -> Option<CoordinatorBug> {
        match name {
            "txn-commit-without-prepares" => Some(CoordinatorBug::CommitWithoutAllPrepares),
            "txn-release-before-decision" => Some(CoordinatorBug::ReleaseBeforeDecision),
            _ => None,
        }
    }
}

/// A step to send to a keyspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send {
    pub keyspace: String,
    pub step: TxnStep,
}

/// How a step ended, as the driver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepResult {
    Done {
        revision: LogIndex,
        outcome: StepOutcome,
    },
    /// Refused: a key is held by another transaction. Nothing applied.
    Locked {
        key: Bytes,
        txn: TxnId,
        anchor: String,
    },
    /// Refused for good (unknown keyspace, a limit, permission). Nothing applied.
    Refused(String),
    /// No answer: it may have applied.
    Unknown(String),
}

/// How a transaction ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnEnd {
    /// Decided and carried out: the `success` branches ran if `succeeded`, else the `failure`
    /// ones. `revisions`: the index each participant applied it at (the anchor's decide, the
    /// others' resolves; a participant whose resolve went unanswered is missing, its intents
    /// are resolved by whoever meets them). `reads`: what each participant's reads saw.
    Committed {
        succeeded: bool,
        revisions: BTreeMap<String, LogIndex>,
        reads: BTreeMap<String, Vec<(Bytes, Option<Versioned>)>>,
    },
    /// Nothing of it applied, anywhere.
    Aborted(AbortReason),
    /// The commit was sent but its answer never came: it may have committed.
    Unknown(String),
}

/// Why a transaction was aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// Another transaction holds `key` of `keyspace`: resolve it (see [`resolve_step`]), then
    /// try again.
    Conflict {
        keyspace: String,
        key: Bytes,
        txn: TxnId,
        anchor: String,
    },
    /// Someone who met its intents aborted it after its record expired.
    Expired,
    /// A participant refused its prepare for good, or its answer never came.
    Failed { keyspace: String, reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    PrepareAnchor,
    PrepareOthers,
    Decide { decides: u32 },
    Resolve,
    Abort { reason: AbortReason, deciding: bool },
    Ended,
}

/// One transaction's coordinator. See the [module](self).
#[derive(Debug)]
pub struct Coordinator {
    txn: TxnId,
    anchor: String,
    parts: BTreeMap<String, Part>,
    stage: Stage,
    /// Prepares answered so far: whether each participant's compares held, or why it failed.
    prepared: BTreeMap<String, Result<bool, StepResult>>,
    reads: BTreeMap<String, Vec<(Bytes, Option<Versioned>)>>,
    revisions: BTreeMap<String, LogIndex>,
    /// Steps sent and not answered, per keyspace.
    outstanding: BTreeMap<String, u32>,
    succeeded: bool,
    end: Option<TxnEnd>,
    bug: Option<CoordinatorBug>,
}

impl Coordinator {
    /// A coordinator for `parts` (one per keyspace, at least one), and the first steps to send.
    /// The first keyspace in name order is the anchor.
    pub fn new(txn: TxnId, parts: BTreeMap<String, Part>) -> (Coordinator, Vec<Send>) {
        Coordinator::with_bug(txn, parts, None)
    }

    /// Like [`Coordinator::new`], with a planted bug (the simulator's).
    pub fn with_bug(
        txn: TxnId,
        parts: BTreeMap<String, Part>,
        bug: Option<CoordinatorBug>,
    ) -> (Coordinator, Vec<Send>) {
        Coordinator::with_ttl(txn, parts, RECORD_TTL_MS, bug)
    }

    /// Like [`Coordinator::with_bug`], with the record pending for `ttl_ms` (the simulator's
    /// is short, so records expire within a run).
    pub fn with_ttl(
        txn: TxnId,
        parts: BTreeMap<String, Part>,
        ttl_ms: u64,
        bug: Option<CoordinatorBug>,
    ) -> (Coordinator, Vec<Send>) {
        let anchor = parts.keys().next().cloned().unwrap_or_default();
        let mut coordinator = Coordinator {
            txn,
            anchor: anchor.clone(),
            parts,
            stage: Stage::PrepareAnchor,
            prepared: BTreeMap::new(),
            reads: BTreeMap::new(),
            revisions: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            succeeded: true,
            end: None,
            bug,
        };
        if coordinator.parts.is_empty() {
            coordinator.finish(TxnEnd::Committed {
                succeeded: true,
                revisions: BTreeMap::new(),
                reads: BTreeMap::new(),
            });
            return (coordinator, Vec::new());
        }
        let prepare = coordinator.prepare(&anchor, Some(ttl_ms));
        (coordinator, vec![prepare])
    }

    pub fn txn(&self) -> TxnId {
        self.txn
    }

    /// The keyspace that keeps the record.
    pub fn anchor(&self) -> &str {
        &self.anchor
    }

    /// How the transaction ended, once it has.
    pub fn end(&self) -> Option<&TxnEnd> {
        self.end.as_ref()
    }

    /// Takes how a step sent to `keyspace` ended; returns the steps to send next.
    pub fn on_result(&mut self, keyspace: &str, result: StepResult) -> Vec<Send> {
        if let Some(count) = self.outstanding.get_mut(keyspace) {
            *count = count.saturating_sub(1);
        }
        match self.stage.clone() {
            Stage::PrepareAnchor => self.anchor_prepared(result),
            Stage::PrepareOthers => self.other_prepared(keyspace, result),
            Stage::Decide { decides } => self.decided(keyspace, decides, result),
            Stage::Resolve => self.resolved(keyspace, result),
            Stage::Abort { reason, deciding } => self.aborting(keyspace, reason, deciding, result),
            Stage::Ended => Vec::new(),
        }
    }

    fn anchor_prepared(&mut self, result: StepResult) -> Vec<Send> {
        let anchor = self.anchor.clone();
        match result {
            StepResult::Done {
                outcome: StepOutcome::Prepared { held, reads },
                ..
            } => {
                self.succeeded &= held;
                self.reads.insert(anchor.clone(), reads);
                self.prepared.insert(anchor, Ok(held));
                let others: Vec<String> = self.others().cloned().collect();
                if others.is_empty() {
                    return self.decide();
                }
                self.stage = Stage::PrepareOthers;
                let mut sends: Vec<Send> = others.iter().map(|ks| self.prepare(ks, None)).collect();
                if self.bug == Some(CoordinatorBug::CommitWithoutAllPrepares) {
                    sends.extend(self.decide());
                }
                sends
            }
            // Decided before its prepare applied: aborted by someone who met nothing yet.
            StepResult::Done { .. } => {
                self.finish(TxnEnd::Aborted(AbortReason::Expired));
                Vec::new()
            }
            StepResult::Locked { key, txn, anchor } => {
                let keyspace = self.anchor.clone();
                let reason = AbortReason::Conflict {
                    keyspace,
                    key,
                    txn,
                    anchor,
                };
                self.finish(TxnEnd::Aborted(reason));
                Vec::new()
            }
            StepResult::Refused(reason) => {
                let keyspace = self.anchor.clone();
                self.finish(TxnEnd::Aborted(AbortReason::Failed { keyspace, reason }));
                Vec::new()
            }
            // It may have placed intents and the record: abort the record, which drops them.
            StepResult::Unknown(reason) => {
                let keyspace = self.anchor.clone();
                self.abort(AbortReason::Failed { keyspace, reason })
            }
        }
    }

    fn other_prepared(&mut self, keyspace: &str, result: StepResult) -> Vec<Send> {
        let entry = match result {
            StepResult::Done {
                outcome: StepOutcome::Prepared { held, reads },
                ..
            } => {
                self.reads.insert(keyspace.to_string(), reads);
                Ok(held)
            }
            other => Err(other),
        };
        self.prepared.insert(keyspace.to_string(), entry);
        if self.prepared.len() < self.parts.len() {
            return Vec::new();
        }
        let failure = self
            .prepared
            .iter()
            .find_map(|(keyspace, entry)| entry.as_ref().err().map(|e| (keyspace.clone(), e)));
        match failure {
            None => {
                self.succeeded = self.prepared.values().all(|held| held == &Ok(true));
                self.decide()
            }
            Some((keyspace, StepResult::Locked { key, txn, anchor })) => {
                let (key, txn, anchor) = (key.clone(), *txn, anchor.clone());
                self.abort(AbortReason::Conflict {
                    keyspace,
                    key,
                    txn,
                    anchor,
                })
            }
            Some((keyspace, other)) => {
                let reason = format!("{other:?}");
                self.abort(AbortReason::Failed { keyspace, reason })
            }
        }
    }

    /// Sends the commit to the anchor.
    fn decide(&mut self) -> Vec<Send> {
        let decides = match self.stage {
            Stage::Decide { decides } => decides + 1,
            _ => 1,
        };
        self.stage = Stage::Decide { decides };
        let decision = Decision::Commit {
            succeeded: self.succeeded,
        };
        let anchor = self.anchor.clone();
        let mut sends = vec![self.send(
            &anchor,
            TxnStep::Decide {
                txn: self.txn,
                decision,
            },
        )];
        if self.bug == Some(CoordinatorBug::ReleaseBeforeDecision) && decides == 1 {
            let resolution = Resolution::Commit {
                succeeded: self.succeeded,
            };
            sends.extend(self.resolve_others(resolution));
        }
        sends
    }

    fn decided(&mut self, keyspace: &str, decides: u32, result: StepResult) -> Vec<Send> {
        if keyspace != self.anchor {
            return Vec::new(); // A planted bug's early resolve, or a late prepare.
        }
        match result {
            StepResult::Done {
                revision,
                outcome: StepOutcome::Record(TxnState::Committed { succeeded }),
            } => {
                self.succeeded = succeeded;
                self.revisions.insert(self.anchor.clone(), revision);
                self.stage = Stage::Resolve;
                let sends = self.resolve_others(Resolution::Commit { succeeded });
                if sends.is_empty() {
                    self.finish_committed();
                }
                sends
            }
            StepResult::Done {
                outcome: StepOutcome::Record(TxnState::Aborted),
                ..
            } => {
                self.stage = Stage::Abort {
                    reason: AbortReason::Expired,
                    deciding: false,
                };
                let sends = self.resolve_others(Resolution::Abort);
                if sends.is_empty() {
                    self.finish(TxnEnd::Aborted(AbortReason::Expired));
                }
                sends
            }
            other if decides < DECIDES_MAX => {
                let _ = other; // Unanswered, or an answer a decide cannot have: ask again.
                self.decide()
            }
            other => {
                self.finish(TxnEnd::Unknown(format!(
                    "the commit of {} on {} was not answered: {other:?}",
                    self.txn, self.anchor
                )));
                Vec::new()
            }
        }
    }

    fn resolved(&mut self, keyspace: &str, result: StepResult) -> Vec<Send> {
        if let StepResult::Done { revision, .. } = result {
            self.revisions.insert(keyspace.to_string(), revision);
        }
        if self.outstanding.values().all(|count| *count == 0) {
            self.finish_committed();
        }
        Vec::new()
    }

    /// Aborts the record, then (once it answered) drops the others' intents.
    fn abort(&mut self, reason: AbortReason) -> Vec<Send> {
        self.stage = Stage::Abort {
            reason,
            deciding: true,
        };
        let anchor = self.anchor.clone();
        let decision = Decision::Abort {
            only_if_expired: false,
        };
        vec![self.send(
            &anchor,
            TxnStep::Decide {
                txn: self.txn,
                decision,
            },
        )]
    }

    fn aborting(
        &mut self,
        keyspace: &str,
        reason: AbortReason,
        deciding: bool,
        result: StepResult,
    ) -> Vec<Send> {
        if deciding && keyspace == self.anchor {
            if let StepResult::Done {
                outcome: StepOutcome::Record(TxnState::Committed { .. }),
                ..
            } = result
            {
                // Only this coordinator commits, and it did not: never expected. Treat the
                // record as the truth all the same.
                return self.decided(keyspace, 1, result);
            }
            // Aborted, or unanswered: either way no commit was ever sent, so it never commits.
            self.stage = Stage::Abort {
                reason: reason.clone(),
                deciding: false,
            };
            let sends = self.resolve_others(Resolution::Abort);
            if !sends.is_empty() {
                return sends;
            }
        }
        if self.outstanding.values().all(|count| *count == 0) {
            self.finish(TxnEnd::Aborted(reason));
        }
        Vec::new()
    }

    fn resolve_others(&mut self, resolution: Resolution) -> Vec<Send> {
        let others: Vec<String> = self.others().cloned().collect();
        others
            .iter()
            .map(|keyspace| {
                let keys = self.parts[keyspace].keys();
                let step = TxnStep::Resolve {
                    txn: self.txn,
                    keys,
                    resolution,
                };
                self.send(keyspace, step)
            })
            .collect()
    }

    fn others(&self) -> impl Iterator<Item = &String> {
        self.parts.keys().filter(move |ks| **ks != self.anchor)
    }

    fn prepare(&mut self, keyspace: &str, ttl_ms: Option<u64>) -> Send {
        let step = TxnStep::Prepare {
            txn: self.txn,
            anchor: self.anchor.clone(),
            ttl_ms,
            part: self.parts[keyspace].clone(),
        };
        self.send(keyspace, step)
    }

    fn send(&mut self, keyspace: &str, step: TxnStep) -> Send {
        *self.outstanding.entry(keyspace.to_string()).or_default() += 1;
        Send {
            keyspace: keyspace.to_string(),
            step,
        }
    }

    fn finish_committed(&mut self) {
        let end = TxnEnd::Committed {
            succeeded: self.succeeded,
            revisions: std::mem::take(&mut self.revisions),
            reads: std::mem::take(&mut self.reads),
        };
        self.finish(end);
    }

    fn finish(&mut self, end: TxnEnd) {
        self.stage = Stage::Ended;
        self.end = Some(end);
    }
}

/// The first step of resolving an intent of `txn` someone met: ask its anchor to abort it
/// if it has expired. The answer is the record, decided or not.
pub fn resolve_step(txn: TxnId) -> TxnStep {
    TxnStep::Decide {
        txn,
        decision: Decision::Abort {
            only_if_expired: true,
        },
    }
}

/// What to do about an intent once its anchor answered with its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterRecord {
    /// Pending and not expired: wait, then ask again.
    Wait,
    /// The decide resolved it already (an intent on the anchor itself).
    Resolved,
    /// Send this resolve.
    Send(Send),
}

/// What to do after the anchor answered the record `state` of the intent on `key` of
/// `keyspace`.
pub fn after_record(
    txn: TxnId,
    state: TxnState,
    keyspace: &str,
    anchor: &str,
    key: Bytes,
) -> AfterRecord {
    let Some(resolution) = Resolution::of(state) else {
        return AfterRecord::Wait;
    };
    if keyspace == anchor {
        return AfterRecord::Resolved;
    }
    AfterRecord::Send(Send {
        keyspace: keyspace.to_string(),
        step: TxnStep::Resolve {
            txn,
            keys: vec![key],
            resolution,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strong::{
        ClientId, Command, CommandError, Compare, MachineConfig, Outcome, Request, StrongMachine,
        TxnOp,
    };
    use crate::types::WallMillis;
    use std::collections::VecDeque;

    fn bytes(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    struct World {
        machines: BTreeMap<String, StrongMachine>,
        seq: u64,
    }

    impl World {
        fn new(keyspaces: &[&str]) -> World {
            let machines = keyspaces
                .iter()
                .map(|ks| (ks.to_string(), StrongMachine::new(MachineConfig::default())))
                .collect();
            World { machines, seq: 0 }
        }

        fn apply(&mut self, keyspace: &str, command: Command) -> Result<Outcome, CommandError> {
            self.seq += 1;
            let request = Request {
                client: ClientId(1),
                seq: self.seq,
                first_unacked: self.seq,
                opens_session: true,
                proposed_at: WallMillis(0),
                command,
            };
            let machine = self.machines.get_mut(keyspace).unwrap();
            let index = crate::types::LogIndex(machine.applied().0 + 1);
            machine
                .apply(index, &request.encode().unwrap())
                .unwrap()
                .result
        }

        fn step(&mut self, send: &Send) -> StepResult {
            match self.apply(&send.keyspace, Command::TxnStep(send.step.clone())) {
                Ok(Outcome::TxnStep { revision, outcome }) => {
                    StepResult::Done { revision, outcome }
                }
                Err(CommandError::Locked { key, txn, anchor }) => {
                    StepResult::Locked { key, txn, anchor }
                }
                other => StepResult::Refused(format!("{other:?}")),
            }
        }

        fn value(&self, keyspace: &str, key: &str) -> Option<Bytes> {
            self.machines[keyspace]
                .get(key.as_bytes())
                .unwrap()
                .map(|v| v.value)
        }
    }

    /// Runs the coordinator to its end; `drop` says which sends are lost (answered Unknown,
    /// not applied).
    fn run(
        world: &mut World,
        parts: BTreeMap<String, Part>,
        bug: Option<CoordinatorBug>,
        drop: impl Fn(&Send) -> bool,
    ) -> TxnEnd {
        let txn = TxnId {
            client: ClientId(7),
            number: world.seq,
        };
        let (mut coordinator, sends) = Coordinator::with_bug(txn, parts, bug);
        let mut queue: VecDeque<Send> = sends.into();
        while let Some(send) = queue.pop_front() {
            let result = if drop(&send) {
                StepResult::Unknown("lost".to_string())
            } else {
                world.step(&send)
            };
            queue.extend(coordinator.on_result(&send.keyspace, result));
        }
        coordinator.end().cloned().expect("the coordinator ended")
    }

    fn transfer() -> BTreeMap<String, Part> {
        let put = |key: &str, value: &str| TxnOp::Put {
            key: bytes(key),
            value: bytes(value),
        };
        let a = Part {
            compares: vec![Compare::Value {
                key: bytes("x"),
                value: Some(bytes("10")),
            }],
            reads: vec![bytes("x")],
            success: vec![put("x", "5")],
            failure: Vec::new(),
        };
        let b = Part {
            success: vec![put("y", "5")],
            ..Part::default()
        };
        BTreeMap::from([("a".to_string(), a), ("b".to_string(), b)])
    }

    #[test]
    fn a_transfer_commits_on_both_keyspaces() {
        let mut world = World::new(&["a", "b"]);
        world
            .apply(
                "a",
                Command::Put {
                    key: bytes("x"),
                    value: bytes("10"),
                },
            )
            .unwrap();
        let end = run(&mut world, transfer(), None, |_| false);
        let TxnEnd::Committed {
            succeeded,
            revisions,
            reads,
        } = end
        else {
            panic!("committed, not {end:?}");
        };
        assert!(succeeded);
        assert_eq!(revisions.len(), 2);
        assert_eq!(reads["a"][0].1.as_ref().unwrap().value, bytes("10"));
        assert_eq!(world.value("a", "x"), Some(bytes("5")));
        assert_eq!(world.value("b", "y"), Some(bytes("5")));
    }

    #[test]
    fn a_lost_prepare_aborts_everywhere() {
        let mut world = World::new(&["a", "b"]);
        let lost_b =
            |send: &Send| send.keyspace == "b" && matches!(send.step, TxnStep::Prepare { .. });
        let end = run(&mut world, transfer(), None, lost_b);
        assert!(
            matches!(end, TxnEnd::Aborted(AbortReason::Failed { .. })),
            "{end:?}"
        );
        assert_eq!(world.value("a", "x"), None);
        world
            .apply(
                "a",
                Command::Put {
                    key: bytes("x"),
                    value: bytes("free"),
                },
            )
            .expect("the anchor's intents were dropped");
    }

    #[test]
    fn a_conflicting_prepare_aborts_and_names_the_holder() {
        let mut world = World::new(&["a", "b"]);
        world
            .apply(
                "a",
                Command::Put {
                    key: bytes("x"),
                    value: bytes("10"),
                },
            )
            .unwrap();
        let first = run(&mut world, transfer(), None, |send| {
            matches!(send.step, TxnStep::Resolve { .. })
        });
        assert!(matches!(first, TxnEnd::Committed { .. }));
        // b's intent on y is unresolved (its resolve was lost): the next transfer meets it.
        let second = run(&mut world, transfer(), None, |_| false);
        let TxnEnd::Aborted(AbortReason::Conflict {
            keyspace,
            anchor,
            txn,
            ..
        }) = second
        else {
            panic!("a conflict, not {second:?}");
        };
        assert_eq!((keyspace.as_str(), anchor.as_str()), ("b", "a"));
        // Resolving it from the record applies the first transfer's write on b.
        let record = world.step(&Send {
            keyspace: anchor.clone(),
            step: resolve_step(txn),
        });
        let StepResult::Done {
            outcome: StepOutcome::Record(state),
            ..
        } = record
        else {
            panic!("a record, not {record:?}");
        };
        let AfterRecord::Send(send) = after_record(txn, state, "b", &anchor, bytes("y")) else {
            panic!("a resolve to send");
        };
        world.step(&send);
        assert_eq!(world.value("b", "y"), Some(bytes("5")));
    }
}
