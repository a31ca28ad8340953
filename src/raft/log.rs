//! The core's in-memory copy of the log: the entries after the last snapshot, plus how far
//! the shell has been given them and has persisted them.
//!
//! The core owns the whole log in memory (the shell persists what `Ready` says and rebuilds
//! the core from [`super::RestoredState`] at restart), so reads never fail with I/O errors.

use super::message::{Entry, SnapshotMeta};
use crate::types::{LogIndex, Term};
use std::collections::VecDeque;

/// Invariants: `entries[i].index == snapshot_index + 1 + i`; terms never decrease along the
/// log; `commit <= last_index()`; `snapshot_index <= commit`; `handed_last <= last_index()`;
/// `stable_last <= handed_last`.
#[derive(Debug)]
pub(crate) struct RaftLog {
    snapshot_index: LogIndex,
    snapshot_term: Term,
    entries: VecDeque<Entry>,
    /// The highest index known committed.
    pub(crate) commit: LogIndex,
    /// Entries up to here were handed to the shell in some `Ready`.
    handed_last: LogIndex,
    /// Entries up to here are durable (their `Ready` was advanced).
    stable_last: LogIndex,
}

impl RaftLog {
    /// A log that starts after `snapshot` and holds `entries` (already checked consecutive),
    /// all of them durable.
    pub(crate) fn restored(
        snapshot_index: LogIndex,
        snapshot_term: Term,
        entries: Vec<Entry>,
    ) -> RaftLog {
        let last = LogIndex(snapshot_index.0 + entries.len() as u64);
        RaftLog {
            snapshot_index,
            snapshot_term,
            entries: entries.into(),
            commit: snapshot_index,
            handed_last: last,
            stable_last: last,
        }
    }

    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        LogIndex(self.snapshot_index.0 + self.entries.len() as u64)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    pub(crate) fn stable_last(&self) -> LogIndex {
        self.stable_last
    }

    /// The term at `index`, or `None` if compacted away (below the snapshot) or beyond the end.
    pub(crate) fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.get(index).map(|e| e.term)
    }

    pub(crate) fn get(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.0.checked_sub(self.snapshot_index.0 + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// Entries from `low` to `high` inclusive, stopping after `bytes_max` bytes but always
    /// returning at least one entry when the range is non-empty and available.
    pub(crate) fn slice(
        &self,
        low: LogIndex,
        high: LogIndex,
        bytes_max: u64,
        count_max: usize,
    ) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut index = low;
        while index <= high && out.len() < count_max {
            let Some(entry) = self.get(index) else { break };
            bytes += entry.size_bytes();
            if bytes > bytes_max && !out.is_empty() {
                break;
            }
            out.push(entry.clone());
            index.0 += 1;
        }
        out
    }

    /// Appends one entry at the end (the leader's path).
    pub(crate) fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.index.0,
            self.last_index().0 + 1,
            "log entries must be consecutive"
        );
        assert!(
            entry.term >= self.last_term(),
            "log terms must not decrease"
        );
        self.entries.push_back(entry);
    }

    /// Deletes every entry at `index` and after. Never touches committed entries.
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        assert!(
            index > self.commit,
            "a committed entry must never be truncated"
        );
        let keep = (index.0 - self.snapshot_index.0 - 1) as usize;
        self.entries.truncate(keep);
        let new_last = LogIndex(index.0 - 1);
        self.handed_last = self.handed_last.min(new_last);
        self.stable_last = self.stable_last.min(new_last);
    }

    /// The first index of the run of `term` that ends at `index`, not going below the commit
    /// index (entries up to it match every leader's anyway).
    pub(crate) fn first_index_of_run(&self, index: LogIndex, term: Term) -> LogIndex {
        let floor = self.commit.max(self.snapshot_index);
        let mut first = index;
        while first > LogIndex(floor.0 + 1) && self.term(LogIndex(first.0 - 1)) == Some(term) {
            first.0 -= 1;
        }
        first
    }

    /// The last index holding `term`, if the log has any entry of it.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let pos = self.entries.partition_point(|e| e.term <= term);
        let entry = self.entries.get(pos.checked_sub(1)?)?;
        (entry.term == term).then_some(entry.index)
    }

    /// The entries not yet handed to the shell; marks them handed.
    pub(crate) fn take_unhanded(&mut self) -> Vec<Entry> {
        let from = self.handed_last.0 + 1;
        let last = self.last_index();
        if from > last.0 {
            return Vec::new();
        }
        let out = self.slice(LogIndex(from), last, u64::MAX, usize::MAX);
        self.handed_last = last;
        out
    }

    /// The shell has persisted everything handed so far.
    pub(crate) fn mark_handed_stable(&mut self) {
        self.stable_last = self.handed_last;
    }

    /// Drops entries up to `index` after the shell snapshotted them.
    pub(crate) fn compact(&mut self, index: LogIndex) {
        assert!(index > self.snapshot_index, "compaction must move forward");
        assert!(
            index <= self.commit,
            "only committed entries may be compacted"
        );
        let term = self.term(index).expect("a committed index is in the log");
        let drop = (index.0 - self.snapshot_index.0) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub(crate) fn install(&mut self, meta: &SnapshotMeta) {
        assert!(
            meta.index > self.commit,
            "an installed snapshot must be ahead of the commit index"
        );
        self.entries.clear();
        self.snapshot_index = meta.index;
        self.snapshot_term = meta.term;
        self.commit = meta.index;
        self.handed_last = meta.index;
        self.stable_last = meta.index;
    }

    /// Whether a candidate's log (last term, last index) is at least as up to date as ours.
    pub(crate) fn is_up_to_date(&self, last_term: Term, last_index: LogIndex) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Raises the commit index (never lowers it).
    pub(crate) fn commit_to(&mut self, index: LogIndex) -> bool {
        let index = index.min(self.last_index());
        if index > self.commit {
            self.commit = index;
            return true;
        }
        false
    }

    /// Entries after `index` up to the end (for step-down bookkeeping).
    pub(crate) fn iter_from(&self, index: LogIndex) -> impl Iterator<Item = &Entry> {
        let skip = index.0.saturating_sub(self.snapshot_index.0 + 1) as usize;
        self.entries.iter().skip(skip)
    }
}
