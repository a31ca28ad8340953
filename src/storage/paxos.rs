//! The paxos keyspaces' rows: one acceptor state per (keyspace, key), and the node's paxos
//! incarnation counter (see [`super::tables::PAXOS_ACCEPTORS`]).
//!
//! A paxos core reads the states it does not hold through [`super::Store::paxos_acceptor`]
//! (one point read in the commit-to-commit read transaction) and writes them through the
//! [`super::Batch`] its shell commits, so the store always shows every persisted `Ready`.

use super::tables::{
    META, META_NAME, META_PAXOS_INCARNATION, PAXOS_ACCEPTORS, PAXOS_ACCEPTORS_NAME,
};
use super::{StorageError, decode, encode, redb_error};
use crate::paxos::AcceptorState;
use crate::types::KeyspaceId;
use bytes::Bytes;
use redb::ReadableDatabase;

/// The acceptors table opened in the read cache's transaction.
pub(super) type AcceptorsTable = redb::ReadOnlyTable<(u64, &'static [u8]), &'static [u8]>;

/// An empty key: the lowest key of a keyspace's range.
const NO_KEY: &[u8] = &[];

impl super::Store {
    /// `key`'s acceptor state in paxos keyspace `keyspace`, as the last commit left it.
    pub fn paxos_acceptor(
        &self,
        keyspace: KeyspaceId,
        key: &[u8],
    ) -> Result<Option<AcceptorState>, StorageError> {
        let mut cache = self.read_cache();
        let cache = &mut *cache;
        let rows = match &mut cache.paxos_acceptors {
            Some(rows) => rows,
            slot => {
                let txn = super::read_txn(&mut cache.txn, &self.db)?;
                slot.insert(txn.open_table(PAXOS_ACCEPTORS).map_err(redb_error)?)
            }
        };
        match rows.get((keyspace.0, key)).map_err(redb_error)? {
            Some(value) => Ok(Some(decode(PAXOS_ACCEPTORS_NAME, value.value())?)),
            None => Ok(None),
        }
    }

    /// The highest paxos incarnation a start of this node has made durable (0: none).
    pub fn paxos_incarnation(&self) -> Result<u64, StorageError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let meta = txn.open_table(META).map_err(redb_error)?;
        match meta.get(META_PAXOS_INCARNATION).map_err(redb_error)? {
            Some(value) => decode(META_NAME, value.value()),
            None => Ok(0),
        }
    }

    /// Every paxos keyspace id with a row: a seek per id found, not a scan of the rows.
    pub(super) fn paxos_ids(
        txn: &redb::ReadTransaction,
        ids: &mut std::collections::BTreeSet<u64>,
    ) -> Result<(), StorageError> {
        let rows = txn.open_table(PAXOS_ACCEPTORS).map_err(redb_error)?;
        let mut next = Some(0);
        while let Some(from) = next {
            let row = rows.range((from, NO_KEY)..).map_err(redb_error)?.next();
            next = match row {
                Some(row) => {
                    let (id, _) = row.map_err(redb_error)?.0.value();
                    ids.insert(id);
                    id.checked_add(1)
                }
                None => None,
            };
        }
        Ok(())
    }
}

/// The paxos part of one write transaction.
pub(super) struct PaxosTables<'t> {
    rows: redb::Table<'t, (u64, &'static [u8]), &'static [u8]>,
}

impl<'t> PaxosTables<'t> {
    pub(super) fn open(txn: &'t redb::WriteTransaction) -> Result<PaxosTables<'t>, StorageError> {
        let rows = txn.open_table(PAXOS_ACCEPTORS).map_err(redb_error)?;
        Ok(PaxosTables { rows })
    }

    /// Replaces each key's stored state (a `Ready`'s persist).
    pub(super) fn apply(
        &mut self,
        keyspace: KeyspaceId,
        states: &[(Bytes, AcceptorState)],
    ) -> Result<(), StorageError> {
        for (key, state) in states {
            let bytes = encode(PAXOS_ACCEPTORS_NAME, state)?;
            self.rows
                .insert((keyspace.0, &key[..]), bytes.as_slice())
                .map_err(redb_error)?;
        }
        Ok(())
    }

    /// Deletes every row of a dropped keyspace (ids are catalog revisions, never `u64::MAX`).
    pub(super) fn drop_keyspace(&mut self, keyspace: KeyspaceId) -> Result<(), StorageError> {
        let id = keyspace.0;
        let range = (id, NO_KEY)..(id.saturating_add(1), NO_KEY);
        self.rows.retain_in(range, |_, _| false).map_err(redb_error)
    }
}

/// Writes the node's paxos incarnation into `META`.
pub(super) fn write_incarnation(
    txn: &redb::WriteTransaction,
    incarnation: u64,
) -> Result<(), StorageError> {
    let bytes = encode(META_NAME, &incarnation)?;
    let mut meta = txn.open_table(META).map_err(redb_error)?;
    meta.insert(META_PAXOS_INCARNATION, bytes.as_slice())
        .map_err(redb_error)?;
    Ok(())
}
