//! Backup and restore of an eventual keyspace's merged state, a page at a time.
//!
//! A backup pages through the installed states in the store's `(key hash, key)` order
//! ([`AntiEntropy::backup_page`]), tombstones included (a tombstone keeps its delete from
//! being undone by an older state). There is no point in time to hold: every state read is
//! a merged state this node holds, and merging is idempotent, so a page read after more
//! writes only holds more. The knowledge vector goes with the last page.
//!
//! A restore merges each backed-up state as a peer's state would be merged
//! ([`AntiEntropy::restore_state`]), so the CRDT's causal history (its dots) is kept. The
//! one thing a peer's state never does is carry a dot of *this* node's id from an earlier
//! life: a restored cluster's nodes often have the ids of the backed-up one. So every
//! restored state, and the backed-up vector ([`AntiEntropy::restore_finish`]), raise this
//! node's write counter past its own id's dots in them; otherwise its next write would reuse
//! a dot the restored states already hold, and an observed-remove set would take a new add
//! as one it had seen removed.

use super::engine::{AntiEntropy, Merged};
use super::hash::key_hash;
use super::value::{KeyState, entry_bytes};
use crate::types::{Instant, NodeId};
use bytes::Bytes;
use crdts::VClock;
use serde::{Deserialize, Serialize};

/// One page of an eventual keyspace's backup, as a node serves it and a backup file keeps
/// it: states in `(key hash, key)` order; the last page carries the node's knowledge vector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventualPage {
    pub entries: Vec<(Bytes, KeyState)>,
    pub vector: Option<VClock<NodeId>>,
}

/// Where a backup page starts: after this `(key hash, key)`.
pub type BackupCursor = (u64, Bytes);

impl AntiEntropy {
    /// Installed states after `after` (from the first when `None`), in `(key hash, key)`
    /// order: at most `limit`, and none after the one whose encoded entry brings the page to
    /// `bytes_max` (so at least one, if any is left). Returns the page and whether more
    /// follow.
    pub fn backup_page(
        &self,
        after: Option<&BackupCursor>,
        limit: usize,
        bytes_max: usize,
    ) -> (Vec<(Bytes, KeyState)>, bool) {
        let start = after.map_or(0, |(hash, _)| *hash);
        // Two more than the page: the cursor's own row is read again (and skipped), and one
        // past a full page tells whether more follow.
        let window = limit.saturating_add(2);
        // The installed rows are the stored ones overlaid with those installed since the
        // last batch. A full window of stored rows ends where the page must end: past it,
        // an installed row may come after stored rows the window did not read, and the
        // next page's cursor would skip them.
        let stored = self
            .read_store(|store| store.range((start, &[]), None, window))
            .unwrap_or_default();
        let window_end = (stored.len() == window)
            .then(|| stored.last().map(|(key, _)| (key_hash(key), key.clone())))
            .flatten();
        let rows = self.installed_range(start, None, window);
        let mut page = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        for ((hash, key), row) in rows {
            if after.is_some_and(|(at_hash, at_key)| (hash, &key) <= (*at_hash, at_key)) {
                continue;
            }
            let past_window = window_end
                .as_ref()
                .is_some_and(|(end_hash, end_key)| (hash, &key) > (*end_hash, end_key));
            if page.len() == limit || bytes >= bytes_max || past_window {
                more = true;
                break;
            }
            bytes += entry_bytes(&key, &row.state);
            page.push((key, row.state));
        }
        // A full window may have more rows behind it, even if every row of it was taken.
        (page, more || window_end.is_some())
    }

    /// Merges a backed-up state into this node's, as a peer's would be (persisted with the
    /// next batch). False if refused: another value type, a key too long, or an `lww` stamp
    /// further ahead of this node's clock than the allowed skew.
    pub fn restore_state(&mut self, now: Instant, key: Bytes, state: KeyState) -> bool {
        self.start(now);
        let own = self.config.node;
        self.raise_seq(state.context.get(&own));
        self.merge_remote(key, state, false) != Merged::Refused
    }

    /// Ends a restore: this node's write counter goes past its own id's entry in the
    /// backed-up knowledge `vector` (dots of states since collected included).
    pub fn restore_finish(&mut self, vector: &VClock<NodeId>) {
        let own = self.config.node;
        self.raise_seq(vector.get(&own));
    }

    fn raise_seq(&mut self, seen: u64) {
        self.seq = self.seq.max(seen);
    }

    /// The key hash a backup cursor starts from, for `key`.
    pub fn backup_cursor(key: &Bytes) -> BackupCursor {
        (key_hash(key), key.clone())
    }
}
