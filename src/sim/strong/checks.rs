//! The safety checkers the strong harness runs after every step.
//!
//! - **Election safety**: at most one leader per term, across every node and incarnation.
//! - **Log matching**, on *durable* logs: every persisted (index, term) names one entry, and
//!   one previous term; by induction two durable logs that share an (index, term) share the
//!   whole prefix up to it.
//! - **Leader completeness**: when a node is first seen leading a term, its log holds every
//!   entry known committed (applied somewhere) that its snapshot does not cover, with the
//!   same term.
//! - **State-machine safety**: no two nodes apply different entries at one index.
//! - **Monotonic indexes**: within one incarnation of a node the commit index never goes
//!   back, and the state machine's applied index only moves forward (one entry at a time, or
//!   by installing a snapshot ahead of it). A crash resets both to the durable state: the
//!   commit index restarts from the durable hard state, the machine from the durable
//!   snapshot, and committed entries are applied again (they must match, by the
//!   state-machine check).

use crate::raft::{Entry, EntryKind, Role, Status};
use crate::types::{LogIndex, NodeId, Term};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// A stable digest of an entry's payload (the std SipHash with its fixed keys: deterministic).
pub(crate) fn digest(kind: &EntryKind) -> u64 {
    let bytes = crate::wire::encode(kind).expect("a log entry must encode");
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// What a log position held, as some node persisted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Persisted {
    digest: u64,
    previous_term: Term,
}

/// An applied entry: its term, digest, and command bytes (for replaying the reference
/// state machine).
#[derive(Clone, Debug)]
pub(crate) struct AppliedEntry {
    pub(crate) term: Term,
    /// The highest term any node had when the entry was first applied: it was committed in
    /// that term or earlier, so every leader of a later term must hold it.
    pub(crate) known_by_term: Term,
    pub(crate) digest: u64,
    pub(crate) command: Option<Bytes>,
}

/// The checkers' memory, across all nodes for the whole run.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    pub(crate) violations: Vec<String>,
    leaders: BTreeMap<Term, NodeId>,
    /// The highest term any node has had (kept current by `observe` and persists).
    pub(crate) term_max: Term,
    persisted: BTreeMap<(LogIndex, Term), Persisted>,
    /// Every entry applied by some node: the committed log as the cluster saw it.
    pub(crate) applied: BTreeMap<LogIndex, AppliedEntry>,
    /// Per node: the commit index last seen in its current incarnation.
    commit_seen: BTreeMap<NodeId, LogIndex>,
}

impl Checker {
    pub(crate) fn violation(&mut self, text: String) {
        self.violations.push(text);
    }

    /// The leaders seen, one per term.
    pub(crate) fn leaders_elected(&self) -> usize {
        self.leaders.len()
    }

    /// A node (re)started: its commit index restarts from the durable one.
    pub(crate) fn restarted(&mut self, node: NodeId, durable_commit: LogIndex) {
        self.commit_seen.insert(node, durable_commit);
    }

    /// Checks a node's status after a step. `term_at` reads its log (for completeness).
    pub(crate) fn observe(&mut self, status: &Status, term_at: impl Fn(LogIndex) -> Option<Term>) {
        let node = status.id;
        self.term_max = self.term_max.max(status.term);
        let seen = self.commit_seen.entry(node).or_default();
        if status.commit < *seen {
            let text = format!(
                "commit index went back on {node}: {} after {}",
                status.commit.0, seen.0
            );
            self.violation(text);
        }
        let seen = self.commit_seen.entry(node).or_default();
        *seen = (*seen).max(status.commit);
        if status.role != Role::Leader {
            return;
        }
        match self.leaders.get(&status.term) {
            Some(leader) if *leader == node => {}
            Some(other) => {
                let text = format!(
                    "election safety: {other} and {node} both lead term {}",
                    status.term.0
                );
                self.violation(text);
            }
            None => {
                self.leaders.insert(status.term, node);
                self.check_completeness(status, term_at);
            }
        }
    }

    fn check_completeness(&mut self, status: &Status, term_at: impl Fn(LogIndex) -> Option<Term>) {
        let above_snapshot = (
            std::ops::Bound::Excluded(status.snapshot_index),
            std::ops::Bound::Unbounded,
        );
        let missing = self
            .applied
            .range(above_snapshot)
            .filter(|(_, entry)| entry.known_by_term < status.term)
            .find(|(index, entry)| term_at(**index) != Some(entry.term))
            .map(|(index, entry)| (*index, entry.term));
        if let Some((index, term)) = missing {
            let text = format!(
                "leader completeness: {} leads term {} without committed entry {} (term {}); \
                 its log has term {:?} there",
                status.id,
                status.term.0,
                index.0,
                term.0,
                term_at(index).map(|term| term.0)
            );
            self.violation(text);
        }
    }

    /// Checks entries a node is about to persist after `previous_term` (the durable term at
    /// `entries[0].index - 1`).
    pub(crate) fn persisting(&mut self, node: NodeId, previous_term: Term, entries: &[Entry]) {
        for entry in entries {
            self.term_max = self.term_max.max(entry.term);
        }
        let mut previous = previous_term;
        for entry in entries {
            let record = Persisted {
                digest: digest(&entry.kind),
                previous_term: previous,
            };
            match self.persisted.get(&(entry.index, entry.term)) {
                Some(known) if *known != record => {
                    let text = format!(
                        "log matching: {node} persists index {} term {} with {:?}, another \
                         node has {known:?}",
                        entry.index.0, entry.term.0, record
                    );
                    self.violation(text);
                }
                Some(_) => {}
                None => {
                    self.persisted.insert((entry.index, entry.term), record);
                }
            }
            previous = entry.term;
        }
    }

    /// Checks an entry a node applies. `term_now` is the highest term in the cluster.
    pub(crate) fn applying(&mut self, node: NodeId, entry: &Entry, term_now: Term) {
        let command = match &entry.kind {
            EntryKind::Normal { command, .. } => Some(command.clone()),
            _ => None,
        };
        let applied = AppliedEntry {
            term: entry.term,
            known_by_term: term_now,
            digest: digest(&entry.kind),
            command,
        };
        match self.applied.get(&entry.index) {
            Some(known) if known.term != applied.term || known.digest != applied.digest => {
                let text = format!(
                    "state-machine safety: {node} applies index {} term {}, another node \
                     applied term {} with a different entry",
                    entry.index.0, entry.term.0, known.term.0
                );
                self.violation(text);
            }
            Some(_) => {}
            None => {
                self.applied.insert(entry.index, applied);
            }
        }
    }
}
