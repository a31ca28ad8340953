//! Where an eventual keyspace's key states live: rows behind [`StateStore`] (redb in the
//! node, [`MemoryStates`] in the simulator and tests), in the spirit of etcd/raft's
//! `Storage`. The engine keeps only what changed since its last persisted batch, the Merkle
//! tree (a fixed 560 KB) and a bounded set of tombstone barriers in memory; every other read
//! goes to the store, so a node's memory is set by its page cache, not by its key count.
//!
//! # What a store keeps beside the rows
//!
//! Each row is a [`StoredKey`]: the state, its Merkle entry hash and its term in the live
//! summary. When a persist batch replaces a row, the store folds the change into two
//! aggregates it keeps per keyspace, exactly as the engine folds it into its own:
//! - the Merkle leaves (a leaf is the XOR of its keys' entry hashes), and
//! - the [`Summary`] (key count, live key count, order-free live digest);
//!
//! and it keeps an index of the keys whose state is a tombstone, which tombstone collection
//! walks. So a restart reads O(leaves) values ([`StoredImage`]), never every key.
//! [`MemoryStates::commit`] is the reference for what a commit does; the redb store does the
//! same in one write transaction.

use super::hash::{entry_hash, key_hash, mix64};
use super::hlc::HlcTimestamp;
use super::merkle::leaf_of;
use super::value::KeyState;
use crate::types::{KeyspaceId, NodeId};
use bytes::Bytes;
use crdts::VClock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

/// Identifies one persist batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PersistId(pub u64);

/// The engine-wide state that must survive a restart together with the key states.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableMeta {
    /// The highest write counter this node has used.
    pub seq: u64,
    /// The highest HLC timestamp this node has issued or observed, as of this batch: it
    /// covers every stamp in this batch and before, so a restarted node stamps strictly above
    /// every stamp it ever persisted (see [`crate::eventual::hlc`], "Across restarts").
    pub hlc: HlcTimestamp,
    /// The knowledge vector: for each node `n`, every write of `n` with a counter up to
    /// `knowledge[n]` is reflected in the key states persisted with (or before) this meta.
    pub knowledge: VClock<NodeId>,
}

/// Work for the shell: persist these rows and this meta in one durable transaction (the
/// store folds the rows into its leaves, summary and tombstone index, see the module docs),
/// then call `persisted(id)`. Batches must be persisted and reported in `id` order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistBatch {
    /// Report with `persisted`.
    pub id: PersistId,
    /// Rows to write (`Some`) or delete (`None`: a collected tombstone).
    pub keys: Vec<(Bytes, Option<StoredKey>)>,
    /// Replaces the previously persisted meta.
    pub meta: DurableMeta,
}

/// The storage under an engine failed (a disk or a corrupt row): the engine cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the eventual keyspace's storage failed: {0}")]
pub struct StoreError(pub String);

/// One key as stored: its state, its entry hash in the Merkle tree and its term in the
/// live summary (`None` for a tombstone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub state: KeyState,
    /// What this key contributes to its Merkle leaf (0 only under `merkle-forget-key`).
    pub entry: u64,
    /// What this key contributes to [`Summary::live_digest`]; `None` for a tombstone.
    pub live: Option<u64>,
}

impl StoredKey {
    /// The row of `state` for a key whose hash is `key_hash` (one digest for both hashes).
    pub fn new(key_hash: u64, state: KeyState) -> StoredKey {
        let digest = state.digest();
        let live = (!state.is_tombstone()).then(|| mix64(key_hash ^ digest.rotate_left(7)));
        StoredKey {
            entry: entry_hash(key_hash, digest),
            live,
            state,
        }
    }
}

/// A keyspace's key count, live key count and live digest: a wrapping sum of one term per
/// live key, so replacing one row updates it in O(1) and equal live states give equal digests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Keys stored, tombstones included.
    pub keys: u64,
    /// Keys whose state is not a tombstone.
    pub live_keys: u64,
    pub live_digest: u64,
}

impl Summary {
    /// Accounts for one row going from `old` to `new` (`None`: no row).
    pub fn replace(&mut self, old: Option<&StoredKey>, new: Option<&StoredKey>) {
        if let Some(old) = old {
            self.keys -= 1;
            if let Some(term) = old.live {
                self.live_keys -= 1;
                self.live_digest = self.live_digest.wrapping_sub(term);
            }
        }
        if let Some(new) = new {
            self.keys += 1;
            if let Some(term) = new.live {
                self.live_keys += 1;
                self.live_digest = self.live_digest.wrapping_add(term);
            }
        }
    }
}

/// How the Merkle leaf of a row changes when it goes from `old` to `new`: XOR it in.
pub fn leaf_change(old: Option<&StoredKey>, new: Option<&StoredKey>) -> u64 {
    old.map_or(0, |row| row.entry) ^ new.map_or(0, |row| row.entry)
}

/// How the tombstone index changes when a row goes from `old` to `new`: `Some(true)` the key
/// enters it, `Some(false)` it leaves, `None` nothing changes.
pub fn tombstone_change(old: Option<&StoredKey>, new: Option<&StoredKey>) -> Option<bool> {
    let tombstone = |row: Option<&StoredKey>| row.is_some_and(|row| row.live.is_none());
    match (tombstone(old), tombstone(new)) {
        (false, true) => Some(true),
        (true, false) => Some(false),
        _ => None,
    }
}

/// What an engine starts from: everything about a keyspace's stored rows except the rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredImage {
    /// The last persisted meta (`None` for a keyspace never persisted here).
    pub meta: Option<DurableMeta>,
    pub summary: Summary,
    /// Every Merkle leaf whose hash is not 0.
    pub leaves: Vec<(u32, u64)>,
}

/// The rows of every eventual keyspace of a node. Reads see exactly what committed batches
/// left; the engine keeps its own changes until the batch carrying them is persisted.
pub trait StateStore: fmt::Debug + Send + Sync {
    /// The meta, summary and leaves of `keyspace`.
    fn load(&self, keyspace: KeyspaceId) -> Result<StoredImage, StoreError>;
    /// One key's row.
    fn get(&self, keyspace: KeyspaceId, key: &[u8]) -> Result<Option<StoredKey>, StoreError>;
    /// Up to `limit` rows in `(key hash, key)` order, from `from` (inclusive) to keys whose
    /// hash is below `end` (`None`: to the last).
    fn range(
        &self,
        keyspace: KeyspaceId,
        from: (u64, &[u8]),
        end: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(Bytes, StoredKey)>, StoreError>;
    /// Up to `limit` keys holding tombstones, in key order, after `after` (from the first
    /// when `None`).
    fn tombstones_after(
        &self,
        keyspace: KeyspaceId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Bytes>, StoreError>;
}

/// One keyspace of a [`StateStore`]: what an engine holds.
#[derive(Clone, Debug)]
pub struct KeyspaceStore {
    store: Arc<dyn StateStore>,
    keyspace: KeyspaceId,
}

impl KeyspaceStore {
    pub fn new(store: Arc<dyn StateStore>, keyspace: KeyspaceId) -> KeyspaceStore {
        KeyspaceStore { store, keyspace }
    }

    pub fn load(&self) -> Result<StoredImage, StoreError> {
        self.store.load(self.keyspace)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<StoredKey>, StoreError> {
        self.store.get(self.keyspace, key)
    }

    pub fn range(
        &self,
        from: (u64, &[u8]),
        end: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(Bytes, StoredKey)>, StoreError> {
        self.store.range(self.keyspace, from, end, limit)
    }

    pub fn tombstones_after(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        self.store.tombstones_after(self.keyspace, after, limit)
    }
}

/// One keyspace in a [`MemoryStates`].
#[derive(Clone, Debug, Default)]
struct MemoryKeyspace {
    rows: BTreeMap<(u64, Bytes), StoredKey>,
    leaves: BTreeMap<u32, u64>,
    summary: Summary,
    tombstones: BTreeSet<Bytes>,
    meta: Option<DurableMeta>,
}

impl MemoryKeyspace {
    fn write(&mut self, key: &Bytes, row: Option<&StoredKey>) {
        let hash = key_hash(key);
        let at = (hash, key.clone());
        let old = self.rows.get(&at);
        self.summary.replace(old, row);
        let leaf = self.leaves.entry(leaf_of(hash)).or_insert(0);
        *leaf ^= leaf_change(old, row);
        if *leaf == 0 {
            self.leaves.remove(&leaf_of(hash));
        }
        match tombstone_change(old, row) {
            Some(true) => self.tombstones.insert(key.clone()),
            Some(false) => self.tombstones.remove(key),
            None => false,
        };
        match row {
            Some(row) => self.rows.insert(at, row.clone()),
            None => self.rows.remove(&at),
        };
    }
}

/// A [`StateStore`] in memory: the simulator's durable image of a node's engines, and the
/// store of tests. [`MemoryStates::commit`] is what a persist makes durable.
#[derive(Debug, Default)]
pub struct MemoryStates {
    keyspaces: Mutex<BTreeMap<KeyspaceId, MemoryKeyspace>>,
}

impl MemoryStates {
    pub fn new() -> MemoryStates {
        MemoryStates::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<KeyspaceId, MemoryKeyspace>) -> T) -> T {
        let mut keyspaces = self
            .keyspaces
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&mut keyspaces)
    }

    /// Makes `batch` durable for `keyspace`: its rows, the aggregates they change, its meta.
    pub fn commit(&self, keyspace: KeyspaceId, batch: &PersistBatch) {
        self.with(|keyspaces| {
            let stored = keyspaces.entry(keyspace).or_default();
            for (key, row) in &batch.keys {
                stored.write(key, row.as_ref());
            }
            stored.meta = Some(batch.meta.clone());
        });
    }

    /// Forgets a keyspace (a dropped one).
    pub fn remove(&self, keyspace: KeyspaceId) {
        self.with(|keyspaces| keyspaces.remove(&keyspace));
    }
}

impl StateStore for MemoryStates {
    fn load(&self, keyspace: KeyspaceId) -> Result<StoredImage, StoreError> {
        Ok(self.with(|keyspaces| match keyspaces.get(&keyspace) {
            None => StoredImage::default(),
            Some(stored) => StoredImage {
                meta: stored.meta.clone(),
                summary: stored.summary,
                leaves: stored.leaves.iter().map(|(l, h)| (*l, *h)).collect(),
            },
        }))
    }

    fn get(&self, keyspace: KeyspaceId, key: &[u8]) -> Result<Option<StoredKey>, StoreError> {
        let at = (key_hash(key), Bytes::copy_from_slice(key));
        Ok(self.with(|keyspaces| keyspaces.get(&keyspace)?.rows.get(&at).cloned()))
    }

    fn range(
        &self,
        keyspace: KeyspaceId,
        from: (u64, &[u8]),
        end: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(Bytes, StoredKey)>, StoreError> {
        let start = Bound::Included((from.0, Bytes::copy_from_slice(from.1)));
        let stop = end.map_or(Bound::Unbounded, |end| Bound::Excluded((end, Bytes::new())));
        Ok(self.with(|keyspaces| {
            let Some(stored) = keyspaces.get(&keyspace) else {
                return Vec::new();
            };
            stored
                .rows
                .range((start, stop))
                .take(limit)
                .map(|((_, key), row)| (key.clone(), row.clone()))
                .collect()
        }))
    }

    fn tombstones_after(
        &self,
        keyspace: KeyspaceId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        let start = after.map_or(Bound::Unbounded, |key| {
            Bound::Excluded(Bytes::copy_from_slice(key))
        });
        Ok(self.with(|keyspaces| {
            let Some(stored) = keyspaces.get(&keyspace) else {
                return Vec::new();
            };
            stored
                .tombstones
                .range((start, Bound::Unbounded))
                .take(limit)
                .cloned()
                .collect()
        }))
    }
}
