//! The table of client requests waiting on a core, and what each one waits for.
//!
//! Every request the node could not answer at once waits here under a tag, until its core
//! completes it, its keyspace is dropped, or its deadline passes; whichever comes first
//! takes it out and answers it, so each request is answered exactly once. The tag is what
//! the cores carry (a Raft proposal's or read's tag, an eventual `RequestId`).

use crate::eventual::{HlcTimestamp, SessionToken};
use crate::protocol::admin::{AdminRequest, FromNode};
use crate::protocol::{ClientError, ClientRequest, Served};
use crate::types::{Instant, KeyspaceId};
use std::collections::{BTreeMap, BTreeSet};

/// Where an answer goes: chosen by the shell when it hands a request in, handed back with
/// the answer. The core never looks inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyTo(pub u64);

/// What a waiting request waits for.
#[derive(Debug)]
pub(super) enum Waiting {
    /// A strong read or write; `served` is what the receipt reports.
    Strong { served: Served, write: bool },
    /// Eventual writes (one per set member) or a read.
    Eventual(EventualWait),
    /// A catalog change in group 0.
    Catalog(CatalogChange),
    /// A data request naming a keyspace this node does not run: it waits for a read of the
    /// catalog (group 0) at a read index, then is routed again.
    Lookup(Box<ClientRequest>),
    /// A catalog change waiting for a read index of group 0, to be checked against a
    /// catalog at least as new as the request before it is proposed.
    Admin(Box<AdminRequest>),
    /// A watch poll waiting for a change (its deadline is the end of its wait).
    Watch(super::watch::WatchWait),
    /// A strong keyspace's backup waiting for a read index, then for the store to hold it.
    Backup,
}

/// A catalog change waiting to commit.
#[derive(Debug)]
pub(super) enum CatalogChange {
    Create {
        name: String,
    },
    Drop {
        name: String,
    },
    /// A member added or removed: done once recorded; group leaders then move their voters.
    Member,
}

#[derive(Debug)]
pub(super) struct EventualWait {
    pub served: Served,
    /// Writes not yet acknowledged (0 for a read).
    pub writes_left: u32,
    pub acks: Option<u32>,
    pub token: Option<SessionToken>,
    pub stamp: Option<HlcTimestamp>,
    pub failed: Option<ClientError>,
}

impl EventualWait {
    pub fn new(served: Served, writes: u32) -> EventualWait {
        EventualWait {
            served,
            writes_left: writes,
            acks: None,
            token: None,
            stamp: None,
            failed: None,
        }
    }
}

impl Waiting {
    /// Whether a timeout leaves the request's effect unknown.
    pub fn is_write(&self) -> bool {
        match self {
            Waiting::Strong { write, .. } => *write,
            Waiting::Eventual(wait) => wait.writes_left > 0,
            Waiting::Catalog(_) => true,
            // Not started on any keyspace yet, nor proposed.
            Waiting::Lookup(_) | Waiting::Admin(_) | Waiting::Watch(_) | Waiting::Backup => false,
        }
    }

    /// The frame that carries `error` back for this kind of request.
    pub fn error_reply(&self, error: ClientError) -> FromNode {
        match self {
            Waiting::Catalog(_) | Waiting::Admin(_) | Waiting::Backup => {
                FromNode::Admin(Err(error.into()))
            }
            _ => FromNode::data_error(error),
        }
    }
}

/// A client request waiting on a core.
#[derive(Debug)]
pub(super) struct Pending {
    pub reply: ReplyTo,
    /// The keyspace it waits on (`None` for a catalog change), so a drop can answer it.
    pub keyspace: Option<KeyspaceId>,
    pub deadline: Instant,
    pub waiting: Waiting,
}

/// The waiting requests by tag, and their deadlines in order.
#[derive(Debug, Default)]
pub(super) struct WaitTable {
    pending: BTreeMap<u64, Pending>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_tag: u64,
}

impl WaitTable {
    pub fn new() -> WaitTable {
        WaitTable {
            next_tag: 1,
            ..WaitTable::default()
        }
    }

    /// Registers a waiting request and returns its tag.
    pub fn insert(&mut self, pending: Pending) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.deadlines.insert((pending.deadline, tag));
        self.pending.insert(tag, pending);
        tag
    }

    /// Takes the request out: whoever takes it answers it.
    pub fn remove(&mut self, tag: u64) -> Option<Pending> {
        let pending = self.pending.remove(&tag)?;
        self.deadlines.remove(&(pending.deadline, tag));
        Some(pending)
    }

    pub fn get(&self, tag: u64) -> Option<&Pending> {
        self.pending.get(&tag)
    }

    pub fn get_mut(&mut self, tag: u64) -> Option<&mut Pending> {
        self.pending.get_mut(&tag)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Tags whose deadline has passed, earliest first.
    pub fn expired(&self, now: Instant) -> Vec<u64> {
        self.deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, tag)| *tag)
            .collect()
    }

    /// Tags of requests waiting on `keyspace`.
    pub fn on_keyspace(&self, keyspace: KeyspaceId) -> Vec<u64> {
        self.pending
            .iter()
            .filter(|(_, pending)| pending.keyspace == Some(keyspace))
            .map(|(tag, _)| *tag)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pending(reply: u64, deadline: Instant, keyspace: Option<KeyspaceId>) -> Pending {
        Pending {
            reply: ReplyTo(reply),
            keyspace,
            deadline,
            waiting: Waiting::Catalog(CatalogChange::Member),
        }
    }

    #[test]
    fn deadlines_expire_in_order_and_a_removed_request_never_expires() {
        let start = Instant::from_nanos(0);
        let at = |ms| start + Duration::from_millis(ms);
        let mut table = WaitTable::new();
        let late = table.insert(pending(1, at(30), None));
        let early = table.insert(pending(2, at(10), Some(KeyspaceId(4))));
        let gone = table.insert(pending(3, at(20), Some(KeyspaceId(4))));
        assert_eq!(table.next_deadline(), Some(at(10)));
        assert_eq!(table.on_keyspace(KeyspaceId(4)), vec![early, gone]);
        assert_eq!(table.remove(gone).map(|p| p.reply), Some(ReplyTo(3)));
        assert!(table.remove(gone).is_none(), "a request is taken out once");
        assert_eq!(table.expired(at(25)), vec![early]);
        assert_eq!(table.expired(at(30)), vec![early, late]);
        assert_eq!(table.len(), 2);
    }
}
