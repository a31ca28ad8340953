//! A simulated watcher: follows the base strong keyspace `strong0` from revision 1 with
//! watch polls through random nodes (as the client library does, moving on when a node is
//! silent or refuses), and the check of what it saw against the clients' history.
//!
//! What must hold, whatever the faults:
//! - events come in strictly increasing revision order, and a poll's `next` never goes back;
//! - every event is a write some client made: same key and value, and the revision the write
//!   returned when it completed;
//! - no gaps: every completed write that changed its key, with a revision the watcher has
//!   passed, is among the events, unless a node said the revision was compacted and no
//!   other node could serve it (the watcher then skips to the oldest revision offered, and
//!   that range is not checked).
//!
//! The watcher stops polling when the run goes quiet, so no poll waits in a core at the end.

use super::{ATTEMPT_TIMEOUT, client::Send};
use crate::protocol::admin::{FromNode, ToNode};
use crate::protocol::{Answer, ClientError, ClientRequest, Operation, WatchEvent, WatchFrom};
use crate::rng::SeededRng;
use crate::sim::history::{Call, Completion, History, Return};
use crate::strong::ClientId;
use crate::types::{Instant, LogIndex, NodeId};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::time::Duration;

/// The keyspace watched: a base keyspace, never dropped.
pub(crate) const WATCHED: &str = "strong0";
/// How long a node may hold a poll: below the node's own request wait.
const WAIT_MAX_MS: u64 = 400;

/// One event as the checker needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    revision: LogIndex,
    key: Bytes,
    /// `None`: a delete.
    value: Option<Bytes>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WatcherStats {
    pub(crate) polls: u64,
    pub(crate) events: u64,
    pub(crate) compacted: u64,
    pub(crate) gaps: u64,
}

pub(crate) struct Watcher {
    pub(crate) addr: NodeId,
    rng: SeededRng,
    nodes: Vec<NodeId>,
    /// Where the next poll starts.
    from: LogIndex,
    seen: Vec<Seen>,
    /// Revisions skipped after every node said they were compacted: `[from, to)`.
    gaps: Vec<(LogIndex, LogIndex)>,
    /// Nodes that answered `Compacted` for the current `from`, and the oldest they offered.
    compacted_by: BTreeSet<NodeId>,
    oldest_offered: LogIndex,
    /// The poll in flight: (id, node, when to give up on it).
    in_flight: Option<(u64, NodeId, Instant)>,
    next_at: Instant,
    next_id: u64,
    stopped: bool,
    pub(crate) stats: WatcherStats,
}

impl Watcher {
    pub(crate) fn new(addr: NodeId, rng: SeededRng, nodes: Vec<NodeId>) -> Watcher {
        Watcher {
            addr,
            rng,
            nodes,
            from: LogIndex(1),
            seen: Vec::new(),
            gaps: Vec::new(),
            compacted_by: BTreeSet::new(),
            oldest_offered: LogIndex(0),
            in_flight: None,
            next_at: Instant::ZERO,
            next_id: 1,
            stopped: false,
            stats: WatcherStats::default(),
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.stopped && self.in_flight.is_none() {
            return None;
        }
        match self.in_flight {
            Some((_, _, timeout)) => Some(timeout),
            None => Some(self.next_at),
        }
    }

    /// No more polls: the run goes quiet.
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
    }

    /// Whether the watcher has passed every write to `strong0` a client saw complete.
    pub(crate) fn caught_up(&self, history: &History) -> bool {
        let prefix = format!("{WATCHED}/");
        let last = history
            .operations()
            .iter()
            .filter(|op| op.key.starts_with(prefix.as_bytes()))
            .filter_map(|op| match &op.completion {
                Completion::Ok { returned, .. } => revision_of(returned),
                _ => None,
            })
            .max();
        last.is_none_or(|last| self.from > last)
    }

    /// Gives up on a silent poll, or sends the next one.
    pub(crate) fn act(&mut self, now: Instant) -> Vec<Send> {
        if let Some((_, _, timeout)) = self.in_flight {
            if timeout > now {
                return Vec::new();
            }
            self.in_flight = None; // A silent node: ask another.
        }
        if self.stopped || self.next_at > now {
            return Vec::new();
        }
        let candidates: Vec<NodeId> = self
            .nodes
            .iter()
            .copied()
            .filter(|node| !self.compacted_by.contains(node))
            .collect();
        let node = candidates[self.rng.range_u64(0, candidates.len() as u64 - 1) as usize];
        let id = self.next_id;
        self.next_id += 1;
        let operation = Operation::Watch {
            prefix: Bytes::new(),
            from: WatchFrom::Revision(self.from),
            limit: self.rng.range_u64(1, 8) as u32,
            wait_ms: self.rng.range_u64(0, WAIT_MAX_MS) as u32,
        };
        let request = ClientRequest::new(ClientId(self.addr.0), id, WATCHED, operation);
        self.in_flight = Some((id, node, now + ATTEMPT_TIMEOUT));
        self.stats.polls += 1;
        vec![(node, id, ToNode::Data(request))]
    }

    /// A node answered poll `id`; violations of order go to `violations`.
    pub(crate) fn on_answer(
        &mut self,
        now: Instant,
        id: u64,
        answer: FromNode,
        violations: &mut Vec<String>,
    ) {
        let Some((expected, node, _)) = self.in_flight else {
            return;
        };
        if id != expected {
            return; // An answer to a poll given up on.
        }
        self.in_flight = None;
        // Now and then the watcher stalls (a slow consumer), long enough to fall behind the
        // history a node keeps.
        let pause = if self.rng.range_u64(0, 9) == 0 {
            self.rng.range_u64(500, 3_000)
        } else {
            self.rng.range_u64(0, 20)
        };
        self.next_at = now + Duration::from_millis(pause);
        let FromNode::Data(response) = answer else {
            violations.push(format!("watch: {node} answered a poll with an admin frame"));
            return;
        };
        match response.result {
            Ok((Answer::Watch { events, next }, _)) => self.take(node, events, next, violations),
            Ok((other, _)) => violations.push(format!("watch: {node} answered {other:?}")),
            Err(ClientError::Compacted { from, oldest }) if from == self.from => {
                self.compacted(node, oldest)
            }
            // Not created yet, a node that cannot serve now: another poll, maybe elsewhere.
            Err(_) => {}
        }
    }

    fn take(
        &mut self,
        node: NodeId,
        events: Vec<WatchEvent>,
        next: WatchFrom,
        violations: &mut Vec<String>,
    ) {
        self.compacted_by.clear();
        for event in events {
            let seen = match event {
                WatchEvent::Put { key, value } => Seen {
                    revision: value.mod_revision,
                    key,
                    value: Some(value.value),
                },
                WatchEvent::Delete { key, revision } => Seen {
                    revision,
                    key,
                    value: None,
                },
                WatchEvent::Changed { .. } => {
                    violations.push(format!("watch: {node} sent a feed event for {WATCHED}"));
                    continue;
                }
            };
            if seen.revision < self.from {
                violations.push(format!(
                    "watch order: {node} sent revision {} to a poll from {}",
                    seen.revision.0, self.from.0
                ));
            }
            self.from = LogIndex(seen.revision.0 + 1);
            self.stats.events += 1;
            self.seen.push(seen);
        }
        match next {
            WatchFrom::Revision(next) if next >= self.from => self.from = next,
            other => violations.push(format!(
                "watch order: {node} said the next poll starts at {other}, before {}",
                self.from.0
            )),
        }
    }

    /// `node` no longer holds `from`. Another node may: the gap is taken only once every
    /// node said so.
    fn compacted(&mut self, node: NodeId, oldest: LogIndex) {
        self.stats.compacted += 1;
        self.compacted_by.insert(node);
        self.oldest_offered = if self.compacted_by.len() == 1 {
            oldest
        } else {
            self.oldest_offered.min(oldest)
        };
        if self.compacted_by.len() < self.nodes.len() {
            return;
        }
        self.stats.gaps += 1;
        self.gaps.push((self.from, self.oldest_offered));
        self.from = self.oldest_offered;
        self.compacted_by.clear();
    }

    fn in_gap(&self, revision: LogIndex) -> bool {
        self.gaps
            .iter()
            .any(|(from, to)| revision >= *from && revision < *to)
    }

    /// What the watcher saw against what the clients did on `strong0`.
    pub(crate) fn check(&self, history: &History) -> Vec<String> {
        let prefix = format!("{WATCHED}/");
        let writes: Vec<(Bytes, &crate::sim::history::Operation)> = history
            .operations()
            .iter()
            .filter(|op| op.call.is_write())
            .filter_map(|op| {
                let key = op.key.strip_prefix(prefix.as_bytes())?;
                Some((Bytes::copy_from_slice(key), op))
            })
            .collect();
        let mut violations = Vec::new();
        for seen in &self.seen {
            if !writes.iter().any(|(key, op)| made(seen, key, op)) {
                violations.push(format!(
                    "watch: revision {} {} = {:?} was written by no client",
                    seen.revision.0,
                    String::from_utf8_lossy(&seen.key),
                    seen.value
                ));
            }
        }
        let seen: BTreeSet<LogIndex> = self.seen.iter().map(|s| s.revision).collect();
        for (key, op) in &writes {
            let Some(revision) = changed_at(op) else {
                continue;
            };
            if revision < self.from && !self.in_gap(revision) && !seen.contains(&revision) {
                violations.push(format!(
                    "watch gap: {} at revision {} ({op}) is missing from the watch",
                    String::from_utf8_lossy(key),
                    revision.0
                ));
            }
        }
        violations
    }
}

fn revision_of(returned: &Return) -> Option<LogIndex> {
    match returned {
        Return::Put { revision }
        | Return::Delete { revision, .. }
        | Return::Cas { revision, .. } => Some(LogIndex(*revision)),
        Return::Get { .. } => None,
    }
}

/// Whether history operation `op` on `key` could have made event `seen`.
fn made(seen: &Seen, key: &Bytes, op: &crate::sim::history::Operation) -> bool {
    if *key != seen.key {
        return false;
    }
    let writes_value = match (&op.call, &seen.value) {
        (Call::Put { value }, Some(seen)) => value == seen,
        (Call::Cas { value, .. }, seen) => value == seen,
        (Call::Delete, None) => true,
        _ => false,
    };
    if !writes_value {
        return false;
    }
    match &op.completion {
        Completion::Ok { returned, .. } => match returned {
            Return::Put { revision } | Return::Delete { revision, .. } => {
                LogIndex(*revision) == seen.revision
            }
            Return::Cas {
                revision,
                succeeded,
                ..
            } => *succeeded && LogIndex(*revision) == seen.revision,
            Return::Get { .. } => false,
        },
        Completion::Indeterminate => true,
        Completion::Failed { .. } => false,
    }
}

/// The revision at which a completed write certainly changed its key (a put; a cas that
/// succeeded and set a value; a delete the answer says removed a key). `None` otherwise.
fn changed_at(op: &crate::sim::history::Operation) -> Option<LogIndex> {
    let Completion::Ok { returned, .. } = &op.completion else {
        return None;
    };
    match (returned, &op.call) {
        (Return::Put { revision }, _) => Some(LogIndex(*revision)),
        (
            Return::Delete {
                revision,
                existed: true,
            },
            _,
        ) => Some(LogIndex(*revision)),
        (
            Return::Cas {
                revision,
                succeeded: true,
                ..
            },
            Call::Cas { value: Some(_), .. },
        ) => Some(LogIndex(*revision)),
        _ => None,
    }
}
