//! What the simulated clients did and what they were told: the op log the checkers judge.
//!
//! Every write is recorded when it is issued, with the identity the engine gave it (the dot of
//! a counter increment or a set add, the context a set remove observed, the HLC stamp of an
//! `lww` write, the clock of an `mvreg` write), and later resolved to an [`Outcome`]. Values
//! written by the clients are unique (they carry the write's id), so a value in a final state
//! names exactly one write.

use crate::types::NodeId;
use crdts::{Dot, VClock};
use std::fmt;

/// How a write ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not answered yet. At the end of a run every pending write counts as indeterminate.
    Pending,
    /// Acknowledged at the requested level: it must never be lost.
    Acked,
    /// Applied on the receiving node but not acknowledged (quorum not reached, timed out, the
    /// node crashed before the ack): it may or may not survive.
    Indeterminate,
    /// Rejected before anything was applied: it must never appear anywhere.
    Failed,
    /// Its node crashed while the batch holding it was still on its way to the disk. The
    /// engine shows a write to nobody before it is durable, so it must never appear either
    /// (if it does, the engine sent or served something it had not persisted).
    Lost,
}

impl Outcome {
    /// Whether the write may be part of a replica's state.
    pub fn may_apply(self) -> bool {
        !matches!(self, Outcome::Failed | Outcome::Lost)
    }

    /// Whether the write must be part of every converged state (unless superseded).
    pub fn must_apply(self) -> bool {
        matches!(self, Outcome::Acked)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Outcome::Pending => "pending",
            Outcome::Acked => "acked",
            Outcome::Indeterminate => "indeterminate",
            Outcome::Failed => "failed",
            Outcome::Lost => "lost",
        };
        f.write_str(name)
    }
}

/// Identifies one client write across the run.
pub type WriteId = u64;

/// One write to a counter key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterWrite {
    pub id: WriteId,
    pub amount: i64,
    pub outcome: Outcome,
}

/// One write to a set key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetWrite {
    Add {
        id: WriteId,
        member: Vec<u8>,
        /// The dot the add was tagged with, when the engine said.
        dot: Option<Dot<NodeId>>,
        outcome: Outcome,
    },
    Remove {
        id: WriteId,
        member: Vec<u8>,
        /// The adds of `member` this remove observed (and so removes): every dot it covers.
        observed: VClock<NodeId>,
        outcome: Outcome,
    },
}

impl SetWrite {
    pub fn member(&self) -> &[u8] {
        match self {
            SetWrite::Add { member, .. } | SetWrite::Remove { member, .. } => member,
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            SetWrite::Add { outcome, .. } | SetWrite::Remove { outcome, .. } => *outcome,
        }
    }
}

/// One write to an `lww` key: a put (`value` is `Some`) or a delete. `S` is the engine's HLC
/// stamp, ordered as the engine orders it (ties already broken by node id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LwwWrite<S> {
    pub id: WriteId,
    pub value: Option<Vec<u8>>,
    pub stamp: S,
    pub outcome: Outcome,
}

/// One write to an `mvreg` key: a put (`value` is `Some`) or a delete (a `None` sibling).
/// `clock` is the write's version (the context it read, plus its own dot); it supersedes
/// exactly the writes whose clocks are strictly below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MvWrite {
    pub id: WriteId,
    pub value: Option<Vec<u8>>,
    pub clock: VClock<NodeId>,
    pub outcome: Outcome,
}

/// Where one write sits in the [`OpLog`]: its keyspace (an index into the value types), key
/// and position in that key's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRef {
    pub keyspace: usize,
    pub key: bytes::Bytes,
    pub index: usize,
}

/// Facts about a write beyond its outcome, for the read checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteMeta {
    /// The node that took it (index into the cluster).
    pub node: usize,
    /// Acked at `quorum` or `all`: a later quorum read must reflect it.
    pub quorum: bool,
    /// Global time at which the taking node reported it persisted (acked, or failed with
    /// `QuorumNotReached`): later local reads there must reflect it.
    pub persisted_at: Option<crate::types::Instant>,
    /// Global time of the ack.
    pub acked_at: Option<crate::types::Instant>,
    /// The write's dot as its persist batch showed it; the engine's token must match.
    pub dot: (NodeId, u64),
    /// The keyspace and persist batch that hold it: a crash before that batch is durable
    /// loses it.
    pub batch: (usize, u64),
}

/// Every write of a run, per value type and key. `S` is the `lww` stamp type.
#[derive(Clone, Debug)]
pub struct OpLog<S> {
    pub lww: std::collections::BTreeMap<bytes::Bytes, Vec<LwwWrite<S>>>,
    pub mvreg: std::collections::BTreeMap<bytes::Bytes, Vec<MvWrite>>,
    pub counter: std::collections::BTreeMap<bytes::Bytes, Vec<CounterWrite>>,
    pub set: std::collections::BTreeMap<bytes::Bytes, Vec<SetWrite>>,
    /// Indexed like the write ids (`meta[id]`).
    pub meta: Vec<WriteMeta>,
}

impl<S> Default for OpLog<S> {
    fn default() -> Self {
        OpLog {
            lww: Default::default(),
            mvreg: Default::default(),
            counter: Default::default(),
            set: Default::default(),
            meta: Vec::new(),
        }
    }
}

impl<S> OpLog<S> {
    /// Resolves a write. A write resolves once; later reports (say, a crash after the ack)
    /// change nothing.
    pub fn resolve(&mut self, write: &WriteRef, outcome: Outcome) {
        let slot = match write.keyspace {
            0 => &mut self.lww.get_mut(&write.key).expect("logged key")[write.index].outcome,
            1 => &mut self.mvreg.get_mut(&write.key).expect("logged key")[write.index].outcome,
            2 => &mut self.counter.get_mut(&write.key).expect("logged key")[write.index].outcome,
            _ => match &mut self.set.get_mut(&write.key).expect("logged key")[write.index] {
                SetWrite::Add { outcome, .. } | SetWrite::Remove { outcome, .. } => outcome,
            },
        };
        if *slot == Outcome::Pending {
            *slot = outcome;
        }
    }

    /// Every still-pending write becomes indeterminate (the run is over).
    pub fn close(&mut self) {
        let pending = |outcome: &mut Outcome| {
            if *outcome == Outcome::Pending {
                *outcome = Outcome::Indeterminate;
            }
        };
        self.lww
            .values_mut()
            .flatten()
            .for_each(|w| pending(&mut w.outcome));
        self.mvreg
            .values_mut()
            .flatten()
            .for_each(|w| pending(&mut w.outcome));
        self.counter
            .values_mut()
            .flatten()
            .for_each(|w| pending(&mut w.outcome));
        for write in self.set.values_mut().flatten() {
            match write {
                SetWrite::Add { outcome, .. } | SetWrite::Remove { outcome, .. } => {
                    pending(outcome)
                }
            }
        }
    }

    /// Every outcome, for the summary.
    pub fn outcomes(&self) -> Vec<Outcome> {
        let mut all: Vec<Outcome> = Vec::new();
        all.extend(self.lww.values().flatten().map(|w| w.outcome));
        all.extend(self.mvreg.values().flatten().map(|w| w.outcome));
        all.extend(self.counter.values().flatten().map(|w| w.outcome));
        all.extend(self.set.values().flatten().map(SetWrite::outcome));
        all
    }
}
