//! The strong state machines' rows: [`MachineStore`] on redb.
//!
//! Each group's state is a *generation* of rows: keys in [`MACHINE_ROWS`] and sessions in
//! [`MACHINE_SESSIONS`], both keyed by (group, generation, ...), and a [`MachineMetaRow`] in
//! [`MACHINE_META`] naming the live generation and its applied index. A snapshot a follower
//! receives is staged as a new generation, chunk by chunk; installing it flips the live
//! generation in one small write, and the old generation becomes garbage that later commits
//! delete a bounded number of rows at a time ([`GC_ROWS_PER_COMMIT`]). So no commit, and no
//! wait of the driver on one, grows with the size of a keyspace.

use super::tables::*;
use super::{StorageError, decode, encode, redb_error};
use crate::raft::SnapshotSource;
use crate::strong::store::{
    Image, ImageRead, MachineMeta, MachineStore, MachineWrites, StoreError, row_bytes,
};
use crate::strong::{ClientId, Session, Versioned};
use crate::types::{GroupId, LogIndex, WallMillis};
use bytes::Bytes;
use redb::{
    ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::collections::hash_map::Entry;
use std::sync::Arc;

/// Garbage rows (of replaced or dropped generations) one commit deletes at most.
pub const GC_ROWS_PER_COMMIT: usize = 16_384;

/// Where a group's machine state is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineMetaRow {
    pub applied: LogIndex,
    /// The machine's log clock at `applied` (session expiry).
    pub clock: WallMillis,
    /// The generation reads see.
    pub live: u64,
    /// A snapshot being received: its generation, the index it is applied to and its clock.
    pub staging: Option<(u64, LogIndex, WallMillis)>,
    /// The next generation number to hand out.
    pub next: u64,
}

type RowKey<'a> = (u64, u64, &'a [u8]);

impl From<StorageError> for StoreError {
    fn from(error: StorageError) -> StoreError {
        StoreError(error_chain(&error))
    }
}

/// The error and its sources, on one line.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn read_meta(
    table: &impl ReadableTable<u64, &'static [u8]>,
    group: GroupId,
) -> Result<MachineMetaRow, StorageError> {
    match table.get(group.0).map_err(redb_error)? {
        Some(value) => decode(MACHINE_META_NAME, value.value()),
        None => Ok(MachineMetaRow::default()),
    }
}

/// The machine tables of one write transaction.
pub(super) struct MachineTables<'t> {
    meta: Table<'t, u64, &'static [u8]>,
    rows: Table<'t, RowKey<'static>, &'static [u8]>,
    sessions: Table<'t, (u64, u64, u64), &'static [u8]>,
    garbage: Table<'t, (u64, u64), ()>,
}

impl<'t> MachineTables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<MachineTables<'t>, StorageError> {
        Ok(MachineTables {
            meta: txn.open_table(MACHINE_META).map_err(redb_error)?,
            rows: txn.open_table(MACHINE_ROWS).map_err(redb_error)?,
            sessions: txn.open_table(MACHINE_SESSIONS).map_err(redb_error)?,
            garbage: txn.open_table(MACHINE_GARBAGE).map_err(redb_error)?,
        })
    }

    /// Carries out one group's writes in the order [`MachineWrites`] gives.
    pub(super) fn apply(
        &mut self,
        group: GroupId,
        writes: &MachineWrites,
    ) -> Result<(), StorageError> {
        let mut meta = read_meta(&self.meta, group)?;
        for (key, row) in &writes.rows {
            let at: RowKey = (group.0, meta.live, key);
            match row {
                Some(version) => {
                    let bytes = encode(MACHINE_ROWS_NAME, version)?;
                    self.rows.insert(at, bytes.as_slice()).map(drop)
                }
                None => self.rows.remove(at).map(drop),
            }
            .map_err(redb_error)?;
        }
        for (client, session) in &writes.sessions {
            self.write_session(group, meta.live, *client, session.as_ref())?;
        }
        if let Some(applied) = writes.applied {
            meta.applied = applied;
        }
        if let Some(clock) = writes.clock {
            meta.clock = clock;
        }
        for staged in &writes.staged {
            let generation = match meta.staging {
                Some((generation, ..)) if !staged.restart => generation,
                abandoned => {
                    if let Some((old, ..)) = abandoned {
                        self.collect(group, old)?;
                    }
                    meta.next = meta.next.max(meta.live + 1);
                    meta.next += 1;
                    meta.next - 1
                }
            };
            meta.staging = Some((generation, staged.chunk.applied, staged.chunk.clock));
            for (key, version) in &staged.chunk.rows {
                let bytes = encode(MACHINE_ROWS_NAME, version)?;
                let at: RowKey = (group.0, generation, key);
                self.rows.insert(at, bytes.as_slice()).map_err(redb_error)?;
            }
            for (client, session) in &staged.chunk.sessions {
                self.write_session(group, generation, *client, Some(session))?;
            }
        }
        if writes.install {
            let (generation, applied, clock) =
                meta.staging
                    .take()
                    .unwrap_or((meta.next, LogIndex(0), WallMillis(0)));
            self.collect(group, meta.live)?;
            meta.live = generation;
            meta.next = meta.next.max(generation + 1);
            meta.applied = applied;
            meta.clock = clock;
        }
        let bytes = encode(MACHINE_META_NAME, &meta)?;
        self.meta
            .insert(group.0, bytes.as_slice())
            .map_err(redb_error)?;
        Ok(())
    }

    fn write_session(
        &mut self,
        group: GroupId,
        generation: u64,
        client: ClientId,
        session: Option<&Session>,
    ) -> Result<(), StorageError> {
        let at = (group.0, generation, client.0);
        match session {
            Some(session) => {
                let bytes = encode(MACHINE_SESSIONS_NAME, session)?;
                self.sessions.insert(at, bytes.as_slice()).map(drop)
            }
            None => self.sessions.remove(at).map(drop),
        }
        .map_err(redb_error)
    }

    /// Marks a generation's rows for deletion by later commits.
    fn collect(&mut self, group: GroupId, generation: u64) -> Result<(), StorageError> {
        self.garbage
            .insert((group.0, generation), ())
            .map_err(redb_error)?;
        Ok(())
    }

    /// A dropped keyspace: every generation it has goes.
    pub(super) fn drop_group(&mut self, group: GroupId) -> Result<(), StorageError> {
        let meta = read_meta(&self.meta, group)?;
        for generation in 0..meta.next.max(meta.live + 1) {
            self.collect(group, generation)?;
        }
        self.meta.remove(group.0).map_err(redb_error)?;
        Ok(())
    }

    /// Deletes up to [`GC_ROWS_PER_COMMIT`] rows of garbage generations; a generation whose
    /// rows are all gone leaves the garbage list.
    pub(super) fn collect_garbage(&mut self) -> Result<(), StorageError> {
        let mut budget = GC_ROWS_PER_COMMIT;
        while budget > 0 {
            let Some(next) = self.garbage.first().map_err(redb_error)? else {
                return Ok(());
            };
            let (group, generation) = next.0.value();
            drop(next);
            let deleted = self.delete_some(group, generation, budget)?;
            if deleted < budget {
                self.garbage
                    .remove((group, generation))
                    .map_err(redb_error)?;
            }
            budget -= deleted;
        }
        Ok(())
    }

    /// Deletes up to `limit` rows (keys, then sessions) of one generation; returns how many.
    /// Fewer than `limit` means the generation is empty now.
    fn delete_some(
        &mut self,
        group: u64,
        generation: u64,
        limit: usize,
    ) -> Result<usize, StorageError> {
        let first: RowKey = (group, generation, &[]);
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for row in self.rows.range(first..).map_err(redb_error)? {
            let (key, _) = row.map_err(redb_error)?;
            let (g, n, bytes) = key.value();
            if (g, n) != (group, generation) || keys.len() == limit {
                break;
            }
            keys.push(bytes.to_vec());
        }
        for key in &keys {
            let at: RowKey = (group, generation, key);
            self.rows.remove(at).map_err(redb_error)?;
        }
        let mut deleted = keys.len();
        if deleted < limit {
            let range = (group, generation, 0)..=(group, generation, u64::MAX);
            let mut clients = Vec::new();
            for row in self.sessions.range(range).map_err(redb_error)? {
                if clients.len() == limit - deleted {
                    break;
                }
                clients.push(row.map_err(redb_error)?.0.value().2);
            }
            for client in &clients {
                self.sessions
                    .remove((group, generation, *client))
                    .map_err(redb_error)?;
            }
            deleted += clients.len();
        }
        Ok(deleted)
    }
}

/// One group's live generation in a read transaction.
#[derive(Debug)]
struct Live {
    group: u64,
    generation: u64,
}

/// The machine tables of a read transaction, and the live generation of one group in it.
pub(super) struct ReadView {
    meta: MachineMetaRow,
    rows: ReadOnlyTable<RowKey<'static>, &'static [u8]>,
    sessions: ReadOnlyTable<(u64, u64, u64), &'static [u8]>,
    live: Live,
}

impl std::fmt::Debug for ReadView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadView")
            .field("meta", &self.meta)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl ReadView {
    fn open(txn: &ReadTransaction, group: GroupId) -> Result<ReadView, StorageError> {
        let metas = txn.open_table(MACHINE_META).map_err(redb_error)?;
        let meta = read_meta(&metas, group)?;
        let live = Live {
            group: group.0,
            generation: meta.live,
        };
        Ok(ReadView {
            rows: txn.open_table(MACHINE_ROWS).map_err(redb_error)?,
            sessions: txn.open_table(MACHINE_SESSIONS).map_err(redb_error)?,
            meta,
            live,
        })
    }

    fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StorageError> {
        let at: RowKey = (self.live.group, self.live.generation, key);
        match self.rows.get(at).map_err(redb_error)? {
            Some(value) => Ok(Some(decode(MACHINE_ROWS_NAME, value.value())?)),
            None => Ok(None),
        }
    }

    /// Keys of the live generation from `start` that start with `prefix`, at most `limit`,
    /// and none after the one whose `row_bytes` bring the total to `bytes_max`;
    /// `skip_start` leaves out a key equal to `start`.
    fn rows_from(
        &self,
        start: &[u8],
        skip_start: bool,
        prefix: &[u8],
        limit: usize,
        bytes_max: usize,
    ) -> Result<Vec<(Bytes, Versioned)>, StorageError> {
        let Live { group, generation } = self.live;
        let from: RowKey = (group, generation, start);
        let mut found = Vec::new();
        let mut bytes = 0;
        for row in self.rows.range(from..).map_err(redb_error)? {
            if found.len() == limit || bytes >= bytes_max {
                break;
            }
            let (key, value) = row.map_err(redb_error)?;
            let (g, n, key_bytes) = key.value();
            if (g, n) != (group, generation) || !key_bytes.starts_with(prefix) {
                break;
            }
            if skip_start && key_bytes == start {
                continue;
            }
            let version = decode(MACHINE_ROWS_NAME, value.value())?;
            bytes += row_bytes(key_bytes, &version);
            found.push((Bytes::copy_from_slice(key_bytes), version));
        }
        Ok(found)
    }

    fn sessions_after(
        &self,
        after: Option<ClientId>,
        limit: usize,
    ) -> Result<Vec<(ClientId, Session)>, StorageError> {
        let Live { group, generation } = self.live;
        let first = match after {
            Some(client) => match client.0.checked_add(1) {
                Some(next) => next,
                None => return Ok(Vec::new()),
            },
            None => 0,
        };
        let range = (group, generation, first)..=(group, generation, u64::MAX);
        let mut found = Vec::new();
        for row in self.sessions.range(range).map_err(redb_error)? {
            if found.len() == limit {
                break;
            }
            let (key, value) = row.map_err(redb_error)?;
            let session = decode(MACHINE_SESSIONS_NAME, value.value())?;
            found.push((ClientId(key.value().2), session));
        }
        Ok(found)
    }
}

impl ImageRead for ReadView {
    fn sessions_after(
        &self,
        after: Option<ClientId>,
        limit: usize,
    ) -> Result<Vec<(ClientId, Session)>, StoreError> {
        Ok(ReadView::sessions_after(self, after, limit)?)
    }

    fn rows_after(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Versioned)>, StoreError> {
        let rows = match after {
            Some(key) => self.rows_from(key, true, &[], limit, usize::MAX)?,
            None => self.rows_from(&[], false, &[], limit, usize::MAX)?,
        };
        Ok(rows)
    }
}

impl super::Store {
    /// Rows in the machine tables, every group and generation: for tests of the collector.
    pub fn machine_row_count(&self) -> Result<u64, StorageError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let rows = txn.open_table(MACHINE_ROWS).map_err(redb_error)?;
        let sessions = txn.open_table(MACHINE_SESSIONS).map_err(redb_error)?;
        Ok(rows.len().map_err(redb_error)? + sessions.len().map_err(redb_error)?)
    }
}

impl MachineStore for super::Store {
    fn load(&self, group: GroupId) -> Result<MachineMeta, StoreError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let view = ReadView::open(&txn, group)?;
        let mut sessions = Vec::new();
        loop {
            let after = sessions.last().map(|(client, _)| *client);
            let batch = view.sessions_after(after, 1024)?;
            let done = batch.len() < 1024;
            sessions.extend(batch);
            if done {
                break;
            }
        }
        Ok(MachineMeta {
            applied: view.meta.applied,
            clock: view.meta.clock,
            sessions,
        })
    }

    fn get(&self, group: GroupId, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        let mut cache = self.read_cache();
        let cache = &mut *cache;
        let view = match cache.machines.entry(group) {
            Entry::Occupied(view) => view.into_mut(),
            Entry::Vacant(slot) => {
                let txn = super::read_txn(&mut cache.txn, &self.db)?;
                slot.insert(ReadView::open(txn, group)?)
            }
        };
        Ok(view.get(key)?)
    }

    fn scan(
        &self,
        group: GroupId,
        start: &[u8],
        prefix: &[u8],
        limit: usize,
        bytes_max: usize,
    ) -> Result<Vec<(Bytes, Versioned)>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let view = ReadView::open(&txn, group)?;
        Ok(view.rows_from(start, false, prefix, limit, bytes_max)?)
    }

    fn image(&self, group: GroupId) -> Result<Arc<dyn SnapshotSource>, StoreError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let view = ReadView::open(&txn, group)?;
        let (applied, clock) = (view.meta.applied, view.meta.clock);
        Ok(Arc::new(Image {
            applied,
            clock,
            read: view,
        }))
    }
}
