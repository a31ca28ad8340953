//! Watches: the recent changes a node keeps per keyspace, and the polls that read them.
//!
//! A strong keyspace keeps a [`History`]: the changes of its last applied entries, by
//! revision. An eventual keyspace keeps a [`Feed`]: the keys whose state changed on this
//! node, each under a feed position. Both are bounded by [`WatchLimits`] (changes and bytes),
//! whatever the number of watchers: a poll reads them and leaves nothing behind. A poll that
//! finds nothing waits in the core's wait table until a change arrives or its wait is over
//! (see [`crate::protocol::watch`] for the protocol).
//!
//! ```text
//!  apply ──changes──▶ History (oldest ..= applied) ──poll(from, prefix)──▶ events, next
//!  persisted ─keys──▶ Feed (first_seq .. next_seq)  ──poll(from, prefix)──▶ keys ─▶ values now
//! ```

use super::catalog::CATALOG_GROUP;
use super::waiting::Waiting;
use super::{NodeCore, ReplyTo};
use crate::protocol::admin::FromNode;
use crate::protocol::{
    Answer, ClientError, ClientRequest, ClientResponse, FeedPosition, Operation, ReadLevel,
    Receipt, Served, WATCH_BYTES_MAX, WATCH_WAIT_MAX_MS, WatchEvent, WatchFrom,
};
use crate::strong::Change;
use crate::types::{GroupId, Instant, KeyspaceId, LogIndex};
use bytes::Bytes;
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

/// How much a node keeps per keyspace for watches (`capdial node --watch-history`,
/// `--watch-history-mb`).
///
/// ```
/// use capdial::node::core::WatchLimits;
/// let limits = WatchLimits::default();
/// assert_eq!(limits.changes, 10_000);
/// assert_eq!(limits.bytes, 64 << 20);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchLimits {
    /// Changes (strong) or changed keys (eventual).
    pub changes: usize,
    /// Bytes of keys and values.
    pub bytes: usize,
}

impl WatchLimits {
    pub const CHANGES_DEFAULT: usize = 10_000;
    pub const BYTES_DEFAULT: usize = 64 * 1024 * 1024;
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            changes: Self::CHANGES_DEFAULT,
            bytes: Self::BYTES_DEFAULT,
        }
    }
}

/// What a waiting watch poll asked for, with its start resolved (never `Now`).
#[derive(Clone, Debug)]
pub(super) struct WatchWait {
    pub prefix: Bytes,
    pub from: WatchFrom,
    pub limit: u32,
}

/// One page of a poll: the events, and where the next poll starts.
#[derive(Debug, PartialEq)]
pub(super) struct Page {
    pub events: Vec<WatchEvent>,
    pub next: WatchFrom,
}

/// Collects events up to a count and [`WATCH_BYTES_MAX`] (but always the first).
struct Collector {
    events: Vec<WatchEvent>,
    bytes: usize,
    limit: usize,
}

impl Collector {
    fn new(limit: u32) -> Collector {
        Collector {
            events: Vec::new(),
            bytes: 0,
            limit: limit as usize,
        }
    }

    fn is_full(&self) -> bool {
        self.events.len() >= self.limit
    }

    /// Adds `event` unless it would overflow the page (a first event always fits).
    fn admit(&mut self, event: WatchEvent) -> bool {
        let bytes = event.size_bytes();
        if self.is_full() || (!self.events.is_empty() && self.bytes + bytes > WATCH_BYTES_MAX) {
            return false;
        }
        self.bytes += bytes;
        self.events.push(event);
        true
    }
}

/// The recent changes of a strong keyspace, by revision.
#[derive(Debug)]
pub(super) struct History {
    /// The lowest revision a poll may start from and miss nothing.
    oldest: LogIndex,
    changes: VecDeque<Change>,
    bytes: usize,
}

fn change_bytes(change: &Change) -> usize {
    const OVERHEAD_BYTES: usize = 64;
    OVERHEAD_BYTES + change.key.len() + change.version.as_ref().map_or(0, |v| v.value.len())
}

impl History {
    /// An empty history of a machine that has applied up to `applied`: it holds everything
    /// after that.
    pub fn new(applied: LogIndex) -> History {
        History {
            oldest: LogIndex(applied.0 + 1),
            changes: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Forgets everything: the machine jumped to `applied` (an installed snapshot), and the
    /// changes in between were never seen here.
    pub fn reset(&mut self, applied: LogIndex) {
        *self = History::new(applied);
    }

    /// Appends changes in revision order, dropping the oldest past `limits`.
    pub fn extend(&mut self, changes: Vec<Change>, limits: WatchLimits) {
        for change in changes {
            if change.revision < self.oldest {
                continue; // Applied before the history began (boot, snapshot).
            }
            self.bytes += change_bytes(&change);
            self.changes.push_back(change);
        }
        while self.changes.len() > limits.changes || self.bytes > limits.bytes {
            let Some(dropped) = self.changes.pop_front() else {
                break;
            };
            self.bytes -= change_bytes(&dropped);
            self.oldest = LogIndex(dropped.revision.0 + 1);
        }
    }

    #[cfg(test)]
    pub fn oldest(&self) -> LogIndex {
        self.oldest
    }

    /// The changes to keys under `prefix` from revision `from` on, of a machine that has
    /// applied up to `applied`. A page holds whole revisions only (a transaction changes many
    /// keys at one revision), so the next poll starts at a revision boundary; a revision that
    /// alone passes the page's bounds comes whole (a transaction's changes are bounded).
    pub fn poll(
        &self,
        from: LogIndex,
        prefix: &[u8],
        limit: u32,
        applied: LogIndex,
    ) -> Result<Page, ClientError> {
        if from < self.oldest {
            return Err(ClientError::Compacted {
                from,
                oldest: self.oldest,
            });
        }
        let start = self.changes.partition_point(|c| c.revision < from);
        let mut page = Collector::new(limit);
        let matching = self
            .changes
            .range(start..)
            .filter(|c| c.key.starts_with(prefix));
        for change in matching {
            if page.admit(strong_event(change)) {
                continue;
            }
            let cut = change.revision;
            page.events.retain(|event| event.revision() != Some(cut));
            if !page.events.is_empty() {
                return Ok(Page {
                    events: page.events,
                    next: WatchFrom::Revision(cut),
                });
            }
            let whole = self.changes.range(start..).filter(|c| c.revision == cut);
            let events = whole
                .filter(|c| c.key.starts_with(prefix))
                .map(strong_event)
                .collect();
            return Ok(Page {
                events,
                next: WatchFrom::Revision(LogIndex(cut.0 + 1)),
            });
        }
        let next = LogIndex(from.0.max(applied.0 + 1));
        Ok(Page {
            events: page.events,
            next: WatchFrom::Revision(next),
        })
    }
}

fn strong_event(change: &Change) -> WatchEvent {
    let key = change.key.clone();
    match &change.version {
        Some(value) => WatchEvent::Put {
            key,
            value: value.clone(),
        },
        None => WatchEvent::Delete {
            key,
            revision: change.revision,
        },
    }
}

/// The keys whose state changed on this node, in the order their changes became durable.
#[derive(Debug)]
pub(super) struct Feed {
    id: u64,
    /// The position of `keys[0]`.
    first_seq: u64,
    keys: VecDeque<Bytes>,
    bytes: usize,
}

const FEED_KEY_OVERHEAD_BYTES: usize = 32;

impl Feed {
    /// A new feed, named `id` (drawn by the core: a restarted node's feed is another feed).
    pub fn new(id: u64) -> Feed {
        Feed {
            id,
            first_seq: 0,
            keys: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Where the next change will be.
    pub fn head(&self) -> FeedPosition {
        FeedPosition {
            feed: self.id,
            seq: self.first_seq + self.keys.len() as u64,
        }
    }

    fn oldest(&self) -> FeedPosition {
        FeedPosition {
            feed: self.id,
            seq: self.first_seq,
        }
    }

    /// Appends changed keys, dropping the oldest past `limits`.
    pub fn extend(&mut self, keys: impl IntoIterator<Item = Bytes>, limits: WatchLimits) {
        for key in keys {
            self.bytes += FEED_KEY_OVERHEAD_BYTES + key.len();
            self.keys.push_back(key);
        }
        while self.keys.len() > limits.changes || self.bytes > limits.bytes {
            let Some(dropped) = self.keys.pop_front() else {
                break;
            };
            self.bytes -= FEED_KEY_OVERHEAD_BYTES + dropped.len();
            self.first_seq += 1;
        }
    }

    /// The keys under `prefix` changed from `from` on, each once (at its first position in
    /// the page), with its value as `value_of` reads it now: that value covers every later
    /// change of the key in the page.
    pub fn poll(
        &self,
        from: FeedPosition,
        prefix: &[u8],
        limit: u32,
        value_of: impl Fn(&[u8]) -> crate::eventual::ReadValue,
    ) -> Result<Page, ClientError> {
        let head = self.head();
        if from.feed != self.id || from.seq < self.first_seq || from.seq > head.seq {
            return Err(ClientError::FeedGap {
                from,
                oldest: self.oldest(),
            });
        }
        let mut page = Collector::new(limit);
        let mut seen = BTreeSet::new();
        let start = (from.seq - self.first_seq) as usize;
        for (offset, key) in self.keys.range(start..).enumerate() {
            let seq = from.seq + offset as u64;
            if !key.starts_with(prefix) || seen.contains(key) {
                continue;
            }
            let event = WatchEvent::Changed {
                key: key.clone(),
                value: value_of(key),
                position: FeedPosition { feed: self.id, seq },
            };
            if !page.admit(event) {
                let next = WatchFrom::Feed(FeedPosition { feed: self.id, seq });
                return Ok(Page {
                    events: page.events,
                    next,
                });
            }
            seen.insert(key.clone());
        }
        Ok(Page {
            events: page.events,
            next: WatchFrom::Feed(head),
        })
    }
}

impl NodeCore {
    /// A watch poll: answered at once when its keyspace holds changes for it (or refuses its
    /// start), else held until one arrives or its wait is over.
    pub(super) fn watch_request(
        &mut self,
        id: KeyspaceId,
        request: ClientRequest,
        reply: ReplyTo,
        deadline: Instant,
    ) {
        let ClientRequest {
            keyspace: name,
            operation,
            ..
        } = request;
        let Operation::Watch {
            prefix,
            from,
            limit,
            wait_ms,
        } = operation
        else {
            let reason = "not a watch".to_string();
            let error = ClientError::Malformed { reason };
            self.answer(reply, FromNode::data_error(error));
            return;
        };
        // `route` found the keyspace running here; answered all the same if it is not.
        let Some(from) = self.watch_start(id, from) else {
            let error = ClientError::UnknownKeyspace { name };
            self.answer(reply, FromNode::data_error(error));
            return;
        };
        let wait = WatchWait {
            prefix,
            from,
            limit,
        };
        let wait_ms = wait_ms.min(WATCH_WAIT_MAX_MS);
        let held_until = deadline.min(self.now + Duration::from_millis(u64::from(wait_ms)));
        let tag = self.register(reply, Some(id), Waiting::Watch(wait), held_until);
        self.watchers.insert((id, tag));
        self.serve_watch(id, tag, false);
    }

    /// Where a poll starting `Now` starts: the next revision, or the feed's head.
    fn watch_start(&self, id: KeyspaceId, from: WatchFrom) -> Option<WatchFrom> {
        if from != WatchFrom::Now {
            return Some(from);
        }
        if let Some(keyspace) = self.groups.get(&GroupId(id.0)) {
            let applied = keyspace.replica.machine().applied();
            return Some(WatchFrom::Revision(LogIndex(applied.0 + 1)));
        }
        let keyspace = self.eventual.get(&id)?;
        Some(WatchFrom::Feed(keyspace.feed.head()))
    }

    /// Answers the waiting poll `tag` if it has events, or an error, or if `done` (its wait
    /// is over: it answers with none).
    pub(super) fn serve_watch(&mut self, id: KeyspaceId, tag: u64, done: bool) {
        let Some(Waiting::Watch(wait)) = self.waiting.get(tag).map(|p| &p.waiting) else {
            self.watchers.remove(&(id, tag));
            return;
        };
        let result = self.watch_page(id, wait);
        let answer = match result {
            Ok(page) if page.events.is_empty() && !done => return,
            Ok(page) => Ok(page),
            Err(error) => Err(error),
        };
        let pending = self.waiting.remove(tag).expect("looked up above");
        self.watchers.remove(&(id, tag));
        let result = answer.map(|page| {
            let answer = Answer::Watch {
                events: page.events,
                next: page.next,
            };
            (answer, self.watch_receipt(id))
        });
        self.answer(pending.reply, FromNode::Data(ClientResponse { result }));
    }

    fn watch_page(&self, id: KeyspaceId, wait: &WatchWait) -> Result<Page, ClientError> {
        let malformed = || ClientError::Malformed {
            reason: "a watch position of the wrong kind for the keyspace".to_string(),
        };
        match wait.from {
            WatchFrom::Revision(from) => {
                let keyspace = self.groups.get(&GroupId(id.0)).ok_or_else(malformed)?;
                let applied = keyspace.replica.machine().applied();
                keyspace
                    .history
                    .poll(from, &wait.prefix, wait.limit, applied)
            }
            WatchFrom::Feed(from) => {
                let keyspace = self.eventual.get(&id).ok_or_else(malformed)?;
                let engine = &keyspace.engine;
                keyspace
                    .feed
                    .poll(from, &wait.prefix, wait.limit, |key| engine.value(key))
            }
            WatchFrom::Now => Err(malformed()),
        }
    }

    fn watch_receipt(&self, id: KeyspaceId) -> Receipt {
        if self.groups.contains_key(&GroupId(id.0)) {
            let served = Served::Read(ReadLevel::Stale);
            return self.strong_receipt(GroupId(id.0), served, None);
        }
        self.eventual_receipt(id, Served::Read(ReadLevel::Local), None, None)
    }

    /// New changes in keyspace `id`: the polls waiting on it that now have events answer.
    pub(super) fn wake_watches(&mut self, id: KeyspaceId) {
        let tags: Vec<u64> = self
            .watchers
            .range((id, 0)..=(id, u64::MAX))
            .map(|(_, tag)| *tag)
            .collect();
        for tag in tags {
            self.serve_watch(id, tag, false);
        }
    }

    /// Keeps what a strong keyspace's applied entries changed, for watches.
    /// `installed`: the snapshot installed before them, if any.
    pub(super) fn record_changes(
        &mut self,
        group: GroupId,
        mut changes: Vec<Change>,
        installed: Option<LogIndex>,
    ) {
        if group == CATALOG_GROUP {
            return;
        }
        if self.config.planted(super::NodeBug::WatchSkipsChange) {
            changes.retain(|change| change.revision.0 % 5 != 0);
        }
        let limits = self.config.watch;
        let Some(keyspace) = self.groups.get_mut(&group) else {
            return;
        };
        if let Some(snapshot) = installed {
            // The changes between the old state and the snapshot were never seen here.
            keyspace.history.reset(snapshot);
        }
        if changes.is_empty() && installed.is_none() {
            return;
        }
        keyspace.history.extend(changes, limits);
        self.wake_watches(KeyspaceId(group.0));
    }

    /// Keeps the keys an eventual keyspace's durable batch changed, for watches.
    pub(super) fn record_feed(&mut self, id: KeyspaceId, keys: Vec<Bytes>) {
        let limits = self.config.watch;
        let Some(keyspace) = self.eventual.get_mut(&id) else {
            return;
        };
        if keys.is_empty() {
            return;
        }
        keyspace.feed.extend(keys, limits);
        self.wake_watches(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventual::ReadValue;
    use crate::strong::Versioned;

    fn put(revision: u64, key: &str) -> Change {
        Change {
            revision: LogIndex(revision),
            key: Bytes::copy_from_slice(key.as_bytes()),
            version: Some(Versioned {
                value: Bytes::from_static(b"v"),
                create_revision: LogIndex(revision),
                mod_revision: LogIndex(revision),
            }),
        }
    }

    fn revisions(page: &Page) -> Vec<u64> {
        page.events
            .iter()
            .filter_map(|e| e.revision())
            .map(|r| r.0)
            .collect()
    }

    #[test]
    fn a_history_serves_from_any_kept_revision_and_refuses_an_older_one() {
        let limits = WatchLimits {
            changes: 3,
            bytes: usize::MAX,
        };
        let mut history = History::new(LogIndex(4));
        let changes = vec![put(3, "a/x"), put(5, "a/x"), put(7, "b/y"), put(8, "a/z")];
        history.extend(changes, limits);
        assert_eq!(
            history.oldest(),
            LogIndex(5),
            "revision 3 predates the history"
        );
        let page = history.poll(LogIndex(5), b"a/", 10, LogIndex(9)).unwrap();
        assert_eq!(revisions(&page), [5, 8]);
        assert_eq!(page.next, WatchFrom::Revision(LogIndex(10)));
        history.extend(vec![put(10, "a/w")], limits);
        assert_eq!(history.oldest(), LogIndex(6), "the oldest change went");
        assert_eq!(
            history.poll(LogIndex(5), b"", 10, LogIndex(10)),
            Err(ClientError::Compacted {
                from: LogIndex(5),
                oldest: LogIndex(6)
            })
        );
        let page = history.poll(LogIndex(6), b"", 2, LogIndex(10)).unwrap();
        assert_eq!(revisions(&page), [7, 8]);
        assert_eq!(
            page.next,
            WatchFrom::Revision(LogIndex(10)),
            "cut at the limit"
        );
        let ahead = history.poll(LogIndex(12), b"", 2, LogIndex(10)).unwrap();
        assert!(ahead.events.is_empty());
        assert_eq!(
            ahead.next,
            WatchFrom::Revision(LogIndex(12)),
            "never goes back"
        );
    }

    #[test]
    fn a_page_never_splits_a_revision() {
        let mut history = History::new(LogIndex(0));
        let limits = WatchLimits::default();
        // Revision 2 is a transaction of three changes.
        let changes = vec![
            put(1, "a"),
            put(2, "b"),
            put(2, "c"),
            put(2, "d"),
            put(3, "e"),
        ];
        history.extend(changes, limits);
        let page = history.poll(LogIndex(1), b"", 2, LogIndex(3)).unwrap();
        assert_eq!(revisions(&page), [1], "revision 2 does not fit whole");
        assert_eq!(page.next, WatchFrom::Revision(LogIndex(2)));
        let page = history.poll(LogIndex(2), b"", 2, LogIndex(3)).unwrap();
        assert_eq!(revisions(&page), [2, 2, 2], "alone, a revision comes whole");
        assert_eq!(page.next, WatchFrom::Revision(LogIndex(3)));
        let page = history.poll(LogIndex(3), b"", 2, LogIndex(3)).unwrap();
        assert_eq!(revisions(&page), [3]);
    }

    #[test]
    fn a_history_is_bounded_by_bytes() {
        let limits = WatchLimits {
            changes: usize::MAX,
            bytes: 3 * change_bytes(&put(1, "k")),
        };
        let mut history = History::new(LogIndex(0));
        history.extend((1..=10).map(|r| put(r, "k")).collect(), limits);
        assert_eq!(history.oldest(), LogIndex(8));
    }

    #[test]
    fn a_feed_lists_each_changed_key_once_per_page_and_knows_its_own_positions() {
        let limits = WatchLimits {
            changes: 4,
            bytes: usize::MAX,
        };
        let mut feed = Feed::new(7);
        let start = feed.head();
        let keys = ["a/1", "b/1", "a/1", "a/2"].map(|k| Bytes::copy_from_slice(k.as_bytes()));
        feed.extend(keys, limits);
        let value = |_: &[u8]| ReadValue::Counter(1);
        let page = feed.poll(start, b"a/", 10, value).unwrap();
        let keys: Vec<&Bytes> = page.events.iter().map(WatchEvent::key).collect();
        assert_eq!(keys, ["a/1", "a/2"]);
        assert_eq!(page.next, WatchFrom::Feed(FeedPosition { feed: 7, seq: 4 }));
        let other = FeedPosition { feed: 8, seq: 0 };
        assert!(matches!(
            feed.poll(other, b"", 10, value),
            Err(ClientError::FeedGap { .. })
        ));
        feed.extend([Bytes::from_static(b"c")], limits);
        assert_eq!(
            feed.poll(start, b"", 10, value),
            Err(ClientError::FeedGap {
                from: start,
                oldest: FeedPosition { feed: 7, seq: 1 }
            }),
            "the first change was dropped"
        );
    }
}
