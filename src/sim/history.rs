//! What the simulated clients saw: one record per logical operation (retries included), with
//! when it was invoked, when (and whether) it completed, and what it returned.
//!
//! Real-time order is kept as a logical event counter: every invocation and completion takes
//! the next number, so "a completed before b was invoked" is exact even when both happen at
//! the same simulated instant. The simulated times are kept for the reports.

use crate::types::{Instant, NodeId};
use bytes::Bytes;
use std::fmt;

/// How a read was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadPath {
    /// ReadIndex on the leader: a heartbeat round confirms leadership.
    Linearizable,
    /// The leader's lease, without a round trip.
    Lease,
    /// A follower asks the leader for a read index, then serves locally.
    Follower,
    /// Whatever the replica has applied.
    Stale,
}

impl ReadPath {
    /// Every level, for clients that pick one at random.
    pub const ALL: [ReadPath; 4] = [
        ReadPath::Linearizable,
        ReadPath::Lease,
        ReadPath::Follower,
        ReadPath::Stale,
    ];
}

/// A key's version as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Seen {
    pub value: Bytes,
    pub mod_revision: u64,
}

/// What a client asked for, on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Put {
        value: Bytes,
    },
    Delete,
    /// `expected`: the mod revision the key must have (`None`: absent). `value: None` deletes.
    Cas {
        expected: Option<u64>,
        value: Option<Bytes>,
    },
    Get {
        level: ReadPath,
    },
}

impl Call {
    pub fn is_write(&self) -> bool {
        !matches!(self, Call::Get { .. })
    }
}

/// What a completed operation returned. Revisions are the log index of the command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Return {
    Put {
        revision: u64,
    },
    Delete {
        revision: u64,
        existed: bool,
    },
    /// When it succeeded, `current` is the key after the change; else the key that failed.
    Cas {
        revision: u64,
        succeeded: bool,
        current: Option<Seen>,
    },
    /// `node` served it with `applied` entries applied; `incarnation` counts the node's
    /// restarts (a restarted node rebuilds its state machine from durable state).
    Get {
        current: Option<Seen>,
        node: NodeId,
        applied: u64,
        incarnation: u64,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Still in flight, or timed out: it may or may not have taken effect.
    Indeterminate,
    /// It certainly did not take effect (e.g. refused before it reached the log).
    Failed { event: u64, at: Instant },
    /// It took effect and returned this.
    Ok {
        event: u64,
        at: Instant,
        returned: Return,
    },
}

/// One logical operation of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub id: usize,
    pub client: u64,
    pub key: Bytes,
    pub call: Call,
    /// The invocation's place in the event order.
    pub invoke_event: u64,
    pub invoked_at: Instant,
    pub completion: Completion,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = String::from_utf8_lossy(&self.key);
        write!(
            f,
            "#{} c{} {key} {:?} invoked e{} ({:?}) -> ",
            self.id, self.client, self.call, self.invoke_event, self.invoked_at
        )?;
        match &self.completion {
            Completion::Indeterminate => write!(f, "indeterminate"),
            Completion::Failed { event, .. } => write!(f, "failed e{event}"),
            Completion::Ok {
                event,
                at,
                returned,
            } => write!(f, "{returned:?} e{event} ({at:?})"),
        }
    }
}

/// Every operation of a run.
#[derive(Clone, Debug, Default)]
pub struct History {
    operations: Vec<Operation>,
    events: u64,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    fn next_event(&mut self) -> u64 {
        self.events += 1;
        self.events
    }

    /// Records an invocation; the returned id names it for [`History::complete`].
    pub fn invoke(&mut self, client: u64, key: Bytes, call: Call, now: Instant) -> usize {
        let id = self.operations.len();
        let invoke_event = self.next_event();
        self.operations.push(Operation {
            id,
            client,
            key,
            call,
            invoke_event,
            invoked_at: now,
            completion: Completion::Indeterminate,
        });
        id
    }

    /// Records what operation `id` returned. Panics if it already ended: a harness bug.
    pub fn complete(&mut self, id: usize, returned: Return, now: Instant) {
        let event = self.next_event();
        let operation = &mut self.operations[id];
        assert_eq!(
            operation.completion,
            Completion::Indeterminate,
            "an operation completes once"
        );
        operation.completion = Completion::Ok {
            event,
            at: now,
            returned,
        };
    }

    /// Records that operation `id` certainly did not take effect.
    pub fn fail(&mut self, id: usize, now: Instant) {
        let event = self.next_event();
        let operation = &mut self.operations[id];
        assert_eq!(
            operation.completion,
            Completion::Indeterminate,
            "an operation completes once"
        );
        operation.completion = Completion::Failed { event, at: now };
    }

    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// Counts (completed, indeterminate, failed).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for operation in &self.operations {
            match operation.completion {
                Completion::Ok { .. } => counts.0 += 1,
                Completion::Indeterminate => counts.1 += 1,
                Completion::Failed { .. } => counts.2 += 1,
            }
        }
        counts
    }
}
