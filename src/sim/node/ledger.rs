//! The request-wait invariant's books: every [`ReplyTo`] the harness hands a core, until the
//! core answers it or the node crashes.
//!
//! A core must answer each request exactly once, within its `request_wait_max` (plus a small
//! slack) of its own clock; a crash ends that duty (the node's clients hear nothing and time
//! out). An answer for a reply never handed out, or handed to another node, or answered
//! already, is a violation too.

use super::core::ReplyTo;
use crate::types::{Instant, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One request inside a core.
#[derive(Clone, Debug)]
pub(crate) struct Handed {
    pub(crate) node: NodeId,
    pub(crate) incarnation: u64,
    /// Who asked, and the id the asker gave the request.
    pub(crate) client: NodeId,
    pub(crate) request: u64,
    /// The node's monotonic time when the request went in.
    pub(crate) handed_local: Instant,
    /// Reported overdue already (once is enough).
    pub(crate) overdue: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    next: u64,
    open: BTreeMap<ReplyTo, Handed>,
    /// Replies answered, or lost with their node: nothing may answer them again.
    closed: BTreeSet<ReplyTo>,
    pub(crate) handed_total: u64,
}

impl Ledger {
    /// Books a request going into `node`'s core; returns the reply it is handed with.
    pub(crate) fn hand(
        &mut self,
        node: NodeId,
        client: NodeId,
        request: u64,
        handed_local: Instant,
        incarnation: u64,
    ) -> ReplyTo {
        self.next += 1;
        self.handed_total += 1;
        let reply = ReplyTo(self.next);
        let handed = Handed {
            node,
            incarnation,
            client,
            request,
            handed_local,
            overdue: false,
        };
        self.open.insert(reply, handed);
        reply
    }

    /// `node` answered `reply`: the booking, or why the answer breaks the invariant.
    pub(crate) fn answered(&mut self, node: NodeId, reply: ReplyTo) -> Result<Handed, String> {
        let Some(handed) = self.open.remove(&reply) else {
            let why = if self.closed.contains(&reply) {
                "answered twice (or after its node crashed)"
            } else {
                "never handed to any core"
            };
            return Err(format!("request-wait: {node} answered {reply:?}, {why}"));
        };
        self.closed.insert(reply);
        if handed.node != node {
            let text = format!(
                "request-wait: {node} answered {reply:?}, which was handed to {}",
                handed.node
            );
            return Err(text);
        }
        Ok(handed)
    }

    /// `node` crashed: its open requests will never be answered, and must not be.
    pub(crate) fn crashed(&mut self, node: NodeId) {
        let lost: Vec<ReplyTo> = self
            .open
            .iter()
            .filter(|(_, handed)| handed.node == node)
            .map(|(reply, _)| *reply)
            .collect();
        for reply in lost {
            self.open.remove(&reply);
            self.closed.insert(reply);
        }
    }

    /// Requests on `node` that waited longer than `limit` of its time, each reported once.
    pub(crate) fn overdue(&mut self, node: NodeId, local: Instant, limit: Duration) -> Vec<String> {
        let mut found = Vec::new();
        for (reply, handed) in &mut self.open {
            if handed.node != node || handed.overdue {
                continue;
            }
            let waited = local.saturating_duration_since(handed.handed_local);
            if waited > limit {
                handed.overdue = true;
                found.push(format!(
                    "request-wait: {node} (incarnation {}) has not answered {reply:?} from {} \
                     after {waited:?} of its time (limit {limit:?})",
                    handed.incarnation, handed.client
                ));
            }
        }
        found
    }

    /// Requests still open on `node`.
    pub(crate) fn open_on(&self, node: NodeId) -> usize {
        self.open.values().filter(|h| h.node == node).count()
    }
}
