//! The eventual keyspaces' rows: [`StateStore`] on redb.
//!
//! A key's row lives in [`EVENTUAL_ROWS`] under (keyspace, key hash, key), so a Merkle leaf
//! is one range. A commit folds every row it replaces into the keyspace's Merkle leaves
//! ([`EVENTUAL_LEAVES`]), its [`Summary`] (in the meta row) and its tombstone index
//! ([`EVENTUAL_TOMBSTONES`]), exactly as [`crate::eventual::MemoryStates::commit`] does, so
//! an engine starts from O(leaves) values and never reads every key.

use super::tables::*;
use super::{StorageError, decode, encode, redb_error};
use crate::eventual::hash::key_hash;
use crate::eventual::merkle::leaf_of;
use crate::eventual::store::{leaf_change, tombstone_change};
use crate::eventual::{
    DurableMeta, PersistBatch, StateStore, StoreError, StoredImage, StoredKey, Summary,
};
use crate::types::KeyspaceId;
use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::ops::Bound;

/// An eventual keyspace's meta row: the engine's durable meta and the summary of its rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventualMetaRow {
    pub meta: Option<DurableMeta>,
    pub summary: Summary,
}

type RowKey<'a> = (u64, u64, &'a [u8]);
/// The rows table, opened for reading.
pub(super) type RowsTable = redb::ReadOnlyTable<RowKey<'static>, &'static [u8]>;
type IndexKey<'a> = (u64, &'a [u8]);

impl From<StorageError> for StoreError {
    fn from(error: StorageError) -> StoreError {
        StoreError(super::machine::error_chain(&error))
    }
}

/// The eventual tables of one write transaction.
pub(super) struct EventualTables<'t> {
    rows: Table<'t, RowKey<'static>, &'static [u8]>,
    leaves: Table<'t, (u64, u32), u64>,
    tombstones: Table<'t, IndexKey<'static>, ()>,
    meta: Table<'t, u64, &'static [u8]>,
    garbage: Table<'t, u64, ()>,
}

impl<'t> EventualTables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<EventualTables<'t>, StorageError> {
        Ok(EventualTables {
            rows: txn.open_table(EVENTUAL_ROWS).map_err(redb_error)?,
            leaves: txn.open_table(EVENTUAL_LEAVES).map_err(redb_error)?,
            tombstones: txn.open_table(EVENTUAL_TOMBSTONES).map_err(redb_error)?,
            meta: txn.open_table(EVENTUAL_META).map_err(redb_error)?,
            garbage: txn.open_table(EVENTUAL_GARBAGE).map_err(redb_error)?,
        })
    }

    /// Writes one engine batch: its rows with what they change, then its meta.
    pub(super) fn apply(
        &mut self,
        keyspace: KeyspaceId,
        batch: &PersistBatch,
    ) -> Result<(), StorageError> {
        let mut meta = read_meta(&self.meta, keyspace)?;
        for (key, row) in &batch.keys {
            self.write_row(keyspace, &mut meta.summary, key, row.as_ref())?;
        }
        meta.meta = Some(batch.meta.clone());
        let bytes = encode(EVENTUAL_META_NAME, &meta)?;
        self.meta
            .insert(keyspace.0, bytes.as_slice())
            .map_err(redb_error)?;
        Ok(())
    }

    fn write_row(
        &mut self,
        keyspace: KeyspaceId,
        summary: &mut Summary,
        key: &[u8],
        row: Option<&StoredKey>,
    ) -> Result<(), StorageError> {
        let hash = key_hash(key);
        let at: RowKey = (keyspace.0, hash, key);
        let old: Option<StoredKey> = match self.rows.get(at).map_err(redb_error)? {
            Some(value) => Some(decode(EVENTUAL_ROWS_NAME, value.value())?),
            None => None,
        };
        summary.replace(old.as_ref(), row);
        self.flip_leaf(keyspace, leaf_of(hash), leaf_change(old.as_ref(), row))?;
        match row {
            Some(row) => {
                let bytes = encode(EVENTUAL_ROWS_NAME, row)?;
                self.rows.insert(at, bytes.as_slice()).map_err(redb_error)?;
            }
            None => {
                self.rows.remove(at).map_err(redb_error)?;
            }
        }
        let index = (keyspace.0, key);
        match tombstone_change(old.as_ref(), row) {
            Some(true) => self.tombstones.insert(index, ()).map(drop),
            Some(false) => self.tombstones.remove(index).map(drop),
            None => Ok(()),
        }
        .map_err(redb_error)
    }

    fn flip_leaf(
        &mut self,
        keyspace: KeyspaceId,
        leaf: u32,
        change: u64,
    ) -> Result<(), StorageError> {
        if change == 0 {
            return Ok(());
        }
        let at = (keyspace.0, leaf);
        let old = self.leaves.get(at).map_err(redb_error)?.map(|v| v.value());
        let new = old.unwrap_or(0) ^ change;
        if new == 0 {
            self.leaves.remove(at).map_err(redb_error)?;
        } else {
            self.leaves.insert(at, new).map_err(redb_error)?;
        }
        Ok(())
    }

    /// A dropped keyspace: its meta goes now (so no reader and no `stored_ids` sees it), its
    /// rows, leaves and tombstone index over later commits ([`Self::collect_garbage`]).
    pub(super) fn drop_keyspace(&mut self, keyspace: KeyspaceId) -> Result<(), StorageError> {
        self.meta.remove(keyspace.0).map_err(redb_error)?;
        self.garbage.insert(keyspace.0, ()).map_err(redb_error)?;
        Ok(())
    }

    /// Deletes up to `budget` rows of dropped keyspaces; a keyspace with nothing left leaves
    /// the garbage list.
    pub(super) fn collect_garbage(&mut self, mut budget: usize) -> Result<(), StorageError> {
        while budget > 0 {
            let Some(next) = self.garbage.first().map_err(redb_error)? else {
                return Ok(());
            };
            let id = next.0.value();
            drop(next);
            let deleted = self.delete_some(id, budget)?;
            if deleted < budget {
                self.garbage.remove(id).map_err(redb_error)?;
            }
            budget -= deleted;
        }
        Ok(())
    }

    /// Deletes up to `limit` rows of keyspace `id` (key rows, then leaves, then the
    /// tombstone index); fewer than `limit` means nothing is left.
    fn delete_some(&mut self, id: u64, limit: usize) -> Result<usize, StorageError> {
        let next = id.saturating_add(1);
        let (first, after): (RowKey, RowKey) = ((id, 0, &[]), (next, 0, &[]));
        let rows = self.rows.extract_from_if(first..after, |_, _| true);
        let mut deleted = take_up_to(rows.map_err(redb_error)?, limit)?;
        let leaves = self
            .leaves
            .extract_from_if((id, 0)..=(id, u32::MAX), |_, _| true);
        deleted += take_up_to(leaves.map_err(redb_error)?, limit - deleted)?;
        let (first, after): (IndexKey, IndexKey) = ((id, &[]), (next, &[]));
        let index = self.tombstones.extract_from_if(first..after, |_, _| true);
        deleted += take_up_to(index.map_err(redb_error)?, limit - deleted)?;
        Ok(deleted)
    }
}

/// Reads (and so deletes) up to `limit` rows of a redb `extract_from_if`; returns how many.
fn take_up_to<T>(
    mut extracted: impl Iterator<Item = Result<T, redb::StorageError>>,
    limit: usize,
) -> Result<usize, StorageError> {
    let mut taken = 0;
    while taken < limit && extracted.next().transpose().map_err(redb_error)?.is_some() {
        taken += 1;
    }
    Ok(taken)
}

impl super::Store {
    /// Rows of the eventual tables (key rows, leaves, tombstone index) of every keyspace,
    /// dropped ones not yet collected included: for tests.
    pub fn eventual_row_count(&self) -> Result<u64, StorageError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let rows = txn.open_table(EVENTUAL_ROWS).map_err(redb_error)?;
        let leaves = txn.open_table(EVENTUAL_LEAVES).map_err(redb_error)?;
        let index = txn.open_table(EVENTUAL_TOMBSTONES).map_err(redb_error)?;
        let count = |n: Result<u64, redb::StorageError>| n.map_err(redb_error);
        Ok(count(rows.len())? + count(leaves.len())? + count(index.len())?)
    }
}

fn read_meta(
    table: &impl ReadableTable<u64, &'static [u8]>,
    keyspace: KeyspaceId,
) -> Result<EventualMetaRow, StorageError> {
    match table.get(keyspace.0).map_err(redb_error)? {
        Some(value) => decode(EVENTUAL_META_NAME, value.value()),
        None => Ok(EventualMetaRow::default()),
    }
}

impl StateStore for super::Store {
    fn load(&self, keyspace: KeyspaceId) -> Result<StoredImage, StoreError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let metas = txn.open_table(EVENTUAL_META).map_err(redb_error)?;
        let meta = read_meta(&metas, keyspace)?;
        if meta.meta.is_none() {
            // Never written, or dropped (its rows may still wait for collection).
            return Ok(StoredImage::default());
        }
        let table = txn.open_table(EVENTUAL_LEAVES).map_err(redb_error)?;
        let mut leaves = Vec::new();
        let range = (keyspace.0, 0)..=(keyspace.0, u32::MAX);
        for row in table.range(range).map_err(redb_error)? {
            let (at, hash) = row.map_err(redb_error)?;
            leaves.push((at.value().1, hash.value()));
        }
        Ok(StoredImage {
            meta: meta.meta,
            summary: meta.summary,
            leaves,
        })
    }

    fn get(&self, keyspace: KeyspaceId, key: &[u8]) -> Result<Option<StoredKey>, StoreError> {
        let mut cache = self.read_cache();
        let cache = &mut *cache;
        let rows = match &mut cache.eventual_rows {
            Some(rows) => rows,
            slot => {
                let txn = super::read_txn(&mut cache.txn, &self.db)?;
                slot.insert(txn.open_table(EVENTUAL_ROWS).map_err(redb_error)?)
            }
        };
        let at: RowKey = (keyspace.0, key_hash(key), key);
        match rows.get(at).map_err(redb_error)? {
            Some(value) => Ok(Some(decode(EVENTUAL_ROWS_NAME, value.value())?)),
            None => Ok(None),
        }
    }

    fn range(
        &self,
        keyspace: KeyspaceId,
        from: (u64, &[u8]),
        end: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(Bytes, StoredKey)>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let rows = txn.open_table(EVENTUAL_ROWS).map_err(redb_error)?;
        let start: RowKey = (keyspace.0, from.0, from.1);
        let mut found = Vec::new();
        for row in rows.range(start..).map_err(redb_error)? {
            let (at, value) = row.map_err(redb_error)?;
            let (owner, hash, key) = at.value();
            let past_end = end.is_some_and(|end| hash >= end);
            if owner != keyspace.0 || past_end || found.len() == limit {
                break;
            }
            let stored: StoredKey = decode(EVENTUAL_ROWS_NAME, value.value())?;
            found.push((Bytes::copy_from_slice(key), stored));
        }
        Ok(found)
    }

    fn tombstones_after(
        &self,
        keyspace: KeyspaceId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let index = txn.open_table(EVENTUAL_TOMBSTONES).map_err(redb_error)?;
        let start: Bound<IndexKey> = match after {
            Some(key) => Bound::Excluded((keyspace.0, key)),
            None => Bound::Included((keyspace.0, &[])),
        };
        let mut keys = Vec::new();
        for row in index
            .range::<IndexKey>((start, Bound::Unbounded))
            .map_err(redb_error)?
        {
            let (at, _) = row.map_err(redb_error)?;
            let (owner, key) = at.value();
            if owner != keyspace.0 || keys.len() == limit {
                break;
            }
            keys.push(Bytes::copy_from_slice(key));
        }
        Ok(keys)
    }
}
