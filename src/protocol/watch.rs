//! Watching a keyspace: what changed, pulled page by page.
//!
//! A watch is a sequence of [`Operation::Watch`](super::Operation::Watch) requests, each a
//! long poll: the node answers at once with the changes it holds from the request's
//! position on, or holds the request until one arrives or the request's wait is over, and
//! then answers with where the next poll starts ([`Answer::Watch`](super::Answer::Watch)'s
//! `next`). The node keeps nothing per watcher: a watcher that reads slowly costs it no
//! memory, and one that falls behind what the node keeps is told so with a typed error.
//!
//! ```text
//!  client                                node
//!  Watch{from: Revision(7)}  ──────────▶ history holds 7..: answer now
//!                            ◀────────── Watch{events: [put@7, del@9], next: Revision(10)}
//!  Watch{from: Revision(10)} ──────────▶ nothing yet: held until an apply or the wait ends
//!                            ◀────────── Watch{events: [put@12], next: Revision(13)}
//! ```
//!
//! - Strong keyspaces: positions are revisions (log indexes). Every replica applies the same
//!   log, so a watch resumes on any node from the last revision it saw (after a reconnect or a
//!   leader change) and gets each change once, in revision order. A node keeps the changes of
//!   its last `--watch-history` applied entries (and those it applied since it started): a
//!   position older than that is refused with `Compacted { oldest }`; the app reads the
//!   keyspace again (a scan) and watches on from the scan's revision.
//! - Eventual keyspaces: a change feed per node. Each key whose merged state changed on that
//!   node (a local write or a merge from a peer) is listed with its value as of the poll, at
//!   least once. Positions name the feed ([`FeedPosition`]): a node's feed starts afresh when
//!   it restarts, and a position of an earlier feed, or one older than what the node keeps, is
//!   refused with `FeedGap { oldest }`.

use crate::eventual::ReadValue;
use crate::strong::{KEY_BYTES_MAX, Versioned};
use crate::types::LogIndex;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The most events one watch answer carries.
pub const WATCH_LIMIT_MAX: u32 = 1000;
/// About the most bytes of events one answer carries (but always the first event), so the
/// answer fits a frame.
pub const WATCH_BYTES_MAX: usize = crate::strong::SCAN_BYTES_MAX;
/// The longest a node holds a watch poll that has nothing to answer yet.
pub const WATCH_WAIT_MAX_MS: u32 = 10_000;

/// Where a watch (poll) starts.
///
/// ```
/// use capdial::protocol::{FeedPosition, WatchFrom};
/// use capdial::types::LogIndex;
/// assert_eq!(WatchFrom::Revision(LogIndex(7)).to_string(), "revision 7");
/// let feed = WatchFrom::Feed(FeedPosition { feed: 0xab, seq: 3 });
/// assert_eq!(feed.to_string(), "feed 00000000000000ab position 3");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchFrom {
    /// From the next change the node applies (strong) or hears of (eventual).
    Now,
    /// Strong: from this revision on (the revision itself included).
    Revision(LogIndex),
    /// Eventual: from this position of a node's change feed on.
    Feed(FeedPosition),
}

impl fmt::Display for WatchFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchFrom::Now => f.write_str("now"),
            WatchFrom::Revision(revision) => write!(f, "revision {}", revision.0),
            WatchFrom::Feed(position) => write!(f, "{position}"),
        }
    }
}

/// A position in one node's change feed of an eventual keyspace.
///
/// ```
/// use capdial::protocol::FeedPosition;
/// let later = FeedPosition { feed: 1, seq: 9 };
/// assert!(later > FeedPosition { feed: 1, seq: 2 });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FeedPosition {
    /// Which feed: drawn afresh each time the node starts the keyspace.
    pub feed: u64,
    /// The change's number in that feed.
    pub seq: u64,
}

impl fmt::Display for FeedPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "feed {:016x} position {}", self.feed, self.seq)
    }
}

/// One change a watch reports.
///
/// ```
/// use capdial::protocol::WatchEvent;
/// use capdial::types::LogIndex;
/// let deleted = WatchEvent::Delete { key: "o-1".into(), revision: LogIndex(9) };
/// assert_eq!(deleted.key(), "o-1");
/// assert_eq!(deleted.revision(), Some(LogIndex(9)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchEvent {
    /// Strong: the key was set (a put, or a cas that set it), at `value.mod_revision`.
    Put { key: Bytes, value: Versioned },
    /// Strong: the key, which existed, was deleted (a delete, or a cas that deleted it).
    Delete { key: Bytes, revision: LogIndex },
    /// Eventual: the key's merged state on the serving node changed; `value` is its state when
    /// the poll read it (with its stamp or causal context), `position` where in the feed.
    Changed {
        key: Bytes,
        value: ReadValue,
        position: FeedPosition,
    },
}

impl WatchEvent {
    pub fn key(&self) -> &Bytes {
        match self {
            WatchEvent::Put { key, .. }
            | WatchEvent::Delete { key, .. }
            | WatchEvent::Changed { key, .. } => key,
        }
    }

    /// A strong event's revision.
    pub fn revision(&self) -> Option<LogIndex> {
        match self {
            WatchEvent::Put { value, .. } => Some(value.mod_revision),
            WatchEvent::Delete { revision, .. } => Some(*revision),
            WatchEvent::Changed { .. } => None,
        }
    }

    /// About how many bytes the event takes in an answer, for [`WATCH_BYTES_MAX`].
    pub fn size_bytes(&self) -> usize {
        const OVERHEAD_BYTES: usize = 48;
        let value = match self {
            WatchEvent::Put { value, .. } => value.value.len(),
            WatchEvent::Delete { .. } => 0,
            WatchEvent::Changed { value, .. } => read_value_bytes(value),
        };
        OVERHEAD_BYTES + self.key().len() + value
    }
}

/// About how many bytes an eventual value encodes to.
fn read_value_bytes(value: &ReadValue) -> usize {
    const DOT_BYTES: usize = 16;
    match value {
        ReadValue::Lww { value, .. } => value.as_ref().map_or(0, Bytes::len) + DOT_BYTES,
        ReadValue::MvReg { siblings, context } => {
            siblings.iter().map(|s| s.len() + 8).sum::<usize>() + context.0.dots.len() * DOT_BYTES
        }
        ReadValue::Counter(_) => 8,
        ReadValue::Set { members, context } => {
            members.iter().map(|m| m.len() + 8).sum::<usize>() + context.0.dots.len() * DOT_BYTES
        }
    }
}

/// Checks a watch request's own bounds (the mode is checked with the operation).
pub(super) fn check_watch(prefix: &Bytes, limit: u32) -> Result<(), super::ClientError> {
    if limit == 0 || limit > WATCH_LIMIT_MAX {
        return Err(super::ClientError::WatchLimit {
            limit,
            limit_max: WATCH_LIMIT_MAX,
        });
    }
    if prefix.len() > KEY_BYTES_MAX {
        return Err(super::ClientError::TooLarge {
            what: "prefix".to_string(),
            bytes: prefix.len(),
            bytes_max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}
