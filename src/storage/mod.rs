//! A node's durable state: one redb file and its write-ahead log behind a narrow interface.
//!
//! The cores never see this module. The shell gathers what the cores asked to persist into a
//! [`Batch`] (a `Ready` of every Raft group, the CRDT states the eventual engines handed
//! out) and commits it with [`Store::commit`]: one write transaction and, when any part of
//! it needs one, one fsync for all of it. That is the group commit. The fsync is the
//! log's ([`wal`]): redb commits are durable only at checkpoints, and a restart applies the
//! log's batches after the last one again. On start the shell reads back exactly what was
//! committed: [`Store::raft_restore`] and [`Store::eventual_restore`].
//!
//! The applied state of a strong keyspace is stored beside its group's log, in the machine
//! tables (`machine`): a restart replays only the committed entries after its applied index.

pub mod machine;
pub mod paxos;
pub mod states;
pub mod tables;
pub mod wal;

use crate::eventual::PersistBatch;
use crate::raft::{Entry, HardState, Ready, RestoredState, SnapshotMeta};
use crate::strong::MachineWrites;
use crate::types::{GroupId, KeyspaceId, LogIndex, NodeId};
use crate::wire;
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tables::*;
use wal::{Record, Wal};

/// When a file store's commit is a durable redb commit, a checkpoint (see [`wal`]): once
/// `interval` has passed since the last one, or once the log holds `log_bytes`. Both bound
/// the log a restart applies again, and the pages redb holds changed in memory.
#[derive(Clone, Copy, Debug)]
pub struct Checkpoints {
    pub interval: Duration,
    pub log_bytes: u64,
}

impl Default for Checkpoints {
    fn default() -> Checkpoints {
        Checkpoints {
            interval: Duration::from_secs(1),
            log_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("the storage engine failed")]
    Redb(#[source] Box<redb::Error>),
    #[error("encoding a value for {table}")]
    Encode {
        table: &'static str,
        #[source]
        source: wire::EncodeError,
    },
    #[error("a value in {table} is corrupt")]
    Corrupt {
        table: &'static str,
        #[source]
        source: wire::DecodeError,
    },
    #[error("this data belongs to {found}, not {expected}")]
    WrongNode { expected: NodeId, found: NodeId },
    #[error("raft group {group:?}: the log has a gap after index {after:?}")]
    LogGap { group: GroupId, after: LogIndex },
    #[error("the write-ahead log {path}")]
    Wal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the write-ahead log resumes at batch {found}, but the store holds batches up to \
         {applied} only: batches in between are missing"
    )]
    WalGap { applied: u64, found: u64 },
}

fn redb_error(error: impl Into<redb::Error>) -> StorageError {
    StorageError::Redb(Box::new(error.into()))
}

/// Rows are unframed bincode payloads: a snapshot or a merged CRDT state may be larger than
/// a network frame, and the disk has no reason to refuse it.
fn encode<T: Serialize>(table: &'static str, value: &T) -> Result<Vec<u8>, StorageError> {
    wire::unframed::encode(value).map_err(|source| StorageError::Encode { table, source })
}

fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StorageError> {
    wire::unframed::decode(bytes).map_err(|source| StorageError::Corrupt { table, source })
}

/// What one group asks to persist: the persist part of a `Ready`, or a compaction.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RaftWrite {
    hard_state: Option<HardState>,
    snapshot: Option<SnapshotMeta>,
    entries: Vec<Entry>,
    /// A local compaction: keep `snapshot`, delete entries up to its index, keep the rest.
    compaction: bool,
}

/// Writes gathered for one commit. A file store's log holds it encoded as it is.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Batch {
    raft: Vec<(GroupId, RaftWrite)>,
    machine: Vec<(GroupId, MachineWrites)>,
    /// Eventual engines' batches, encoded by the commit (off the driver).
    eventual: Vec<(KeyspaceId, PersistBatch)>,
    /// Keyspaces whose every row goes (a dropped keyspace).
    dropped: Vec<KeyspaceId>,
    sync: bool,
    /// Paxos cores' persists: acceptor states, each replacing its key's row.
    paxos: Vec<(KeyspaceId, Vec<(bytes::Bytes, crate::paxos::AcceptorState)>)>,
    /// The node's new paxos incarnation (the first batch of a start).
    paxos_incarnation: Option<u64>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn is_empty(&self) -> bool {
        self.raft.is_empty()
            && self.machine.is_empty()
            && self.eventual.is_empty()
            && self.dropped.is_empty()
            && self.paxos.is_empty()
            && self.paxos_incarnation.is_none()
    }

    /// Whether committing this batch needs an fsync.
    pub fn needs_sync(&self) -> bool {
        self.sync
    }

    /// Adds the persist part of `ready` (hard state, snapshot, entries) for `group`.
    pub fn raft_ready(&mut self, group: GroupId, ready: &Ready) {
        if !ready.has_persist_work() {
            return;
        }
        self.sync |= ready.must_sync;
        let write = RaftWrite {
            hard_state: ready.hard_state,
            snapshot: ready.snapshot.clone(),
            entries: ready.entries.clone(),
            compaction: false,
        };
        self.raft.push((group, write));
    }

    /// Adds a state machine's writes (see [`MachineWrites`]), after the group's Raft write
    /// of the same batch. They need no fsync of their own: what a crash loses of them, the
    /// log applies again.
    pub fn machine_writes(&mut self, group: GroupId, writes: MachineWrites) {
        if !writes.is_empty() {
            self.machine.push((group, writes));
        }
    }

    /// Records a compaction (`RaftNode::compact`): the log starts after `snapshot`, whose
    /// state the machine tables hold; the entries it covers go, later entries stay.
    pub fn raft_compaction(&mut self, group: GroupId, snapshot: SnapshotMeta) {
        self.sync = true;
        let write = RaftWrite {
            snapshot: Some(snapshot),
            compaction: true,
            ..RaftWrite::default()
        };
        self.raft.push((group, write));
    }

    /// Adds an eventual engine's persist batch: its rows (deleting collected tombstones) and
    /// its meta, in one transaction so the meta and the leaves always describe the rows
    /// stored with them. Always synced.
    pub fn eventual_persist(&mut self, keyspace: KeyspaceId, batch: PersistBatch) {
        self.eventual.push((keyspace, batch));
        self.sync = true;
    }

    /// Adds a paxos core's persist (`paxos::Ready::persist`): each state replaces its key's.
    /// Always synced: the promises and accepted acks it backs leave after the commit.
    pub fn paxos_persist(
        &mut self,
        keyspace: KeyspaceId,
        states: Vec<(bytes::Bytes, crate::paxos::AcceptorState)>,
    ) {
        if states.is_empty() {
            return;
        }
        self.paxos.push((keyspace, states));
        self.sync = true;
    }

    /// Records the node's paxos incarnation for this start (see
    /// [`tables::META_PAXOS_INCARNATION`]). Synced: no ballot of it leaves before.
    pub fn paxos_incarnation(&mut self, incarnation: u64) {
        self.paxos_incarnation = Some(incarnation);
        self.sync = true;
    }

    /// Deletes every row of a dropped keyspace: its Raft group (log, hard state, snapshot),
    /// its CRDT states and meta, or its acceptor states.
    pub fn drop_keyspace(&mut self, keyspace: KeyspaceId) {
        self.sync = true;
        self.dropped.push(keyspace);
    }
}

/// A node's redb file, and its write-ahead log (none in memory).
pub struct Store {
    db: Database,
    log: Option<Mutex<Log>>,
    reads: Mutex<ReadCache>,
}

/// What the point reads between two commits share: one read transaction and the tables
/// opened in it. Opening a transaction and its tables for every key a write reads first cost
/// a node ~8% of its CPU at 64 writes in flight. A commit empties the cache before it
/// writes, so a read after a commit sees it, and no reader pins the pages it frees.
#[derive(Default)]
struct ReadCache {
    txn: Option<ReadTransaction>,
    machines: HashMap<GroupId, machine::ReadView>,
    eventual_rows: Option<states::RowsTable>,
    paxos_acceptors: Option<paxos::AcceptorsTable>,
}

/// The cache's read transaction, begun if there is none.
fn read_txn<'a>(
    slot: &'a mut Option<ReadTransaction>,
    db: &Database,
) -> Result<&'a ReadTransaction, StorageError> {
    if slot.is_none() {
        *slot = Some(db.begin_read().map_err(redb_error)?);
    }
    Ok(slot.as_ref().expect("invariant: begun just above"))
}

/// The write-ahead log of a file store, and when it was last emptied.
struct Log {
    wal: Wal,
    /// The sequence number of the next batch.
    next: u64,
    checkpoints: Checkpoints,
    checkpointed_at: std::time::Instant,
}

impl Log {
    fn checkpoint_due(&self) -> bool {
        self.wal.bytes() >= self.checkpoints.log_bytes
            || self.checkpointed_at.elapsed() >= self.checkpoints.interval
    }
}

/// The log beside the redb file at `path`: `capdial.redb` has `capdial.redb.wal`.
pub fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".wal");
    PathBuf::from(name)
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the file at `path` for node `node`, refusing another node's file,
    /// with a page cache of `cache_bytes`. The batches its log holds past the file's last
    /// checkpoint are applied again first.
    pub fn open(path: &Path, node: NodeId, cache_bytes: usize) -> Result<Store, StorageError> {
        Store::open_with(path, node, cache_bytes, Checkpoints::default())
    }

    /// [`Store::open`], with checkpoints when `checkpoints` says.
    pub fn open_with(
        path: &Path,
        node: NodeId,
        cache_bytes: usize,
        checkpoints: Checkpoints,
    ) -> Result<Store, StorageError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(redb_error)?;
        let mut store = Store::init(db, node)?;
        let (mut wal, records) = Wal::open(&wal_path(path))?;
        let next = store.replay(records)?;
        store.apply(&Batch::new(), Some(next - 1), Durability::Immediate)?;
        wal.reset();
        store.log = Some(Mutex::new(Log {
            wal,
            next,
            checkpoints,
            checkpointed_at: std::time::Instant::now(),
        }));
        Ok(store)
    }

    /// Applies the log's batches after the last checkpoint, in order; returns the next
    /// batch's sequence number.
    fn replay(&self, records: Vec<Record>) -> Result<u64, StorageError> {
        let applied = self.wal_sequence()?;
        let mut last = applied;
        for record in records {
            if record.sequence <= applied {
                continue;
            }
            if record.sequence != last + 1 {
                return Err(StorageError::WalGap {
                    applied: last,
                    found: record.sequence,
                });
            }
            let batch: Batch = decode(WAL_NAME, &record.payload)?;
            self.apply(&batch, Some(record.sequence), Durability::None)?;
            last = record.sequence;
        }
        if last > applied {
            tracing::info!(
                batches = last - applied,
                "applied the write-ahead log again"
            );
        }
        Ok(last + 1)
    }

    fn read_cache(&self) -> MutexGuard<'_, ReadCache> {
        // Only the driver reads and commits, one at a time: the lock is never contended.
        self.reads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The sequence number of the last logged batch the redb file holds (0: none).
    fn wal_sequence(&self) -> Result<u64, StorageError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let meta = txn.open_table(META).map_err(redb_error)?;
        match meta.get(META_WAL_SEQUENCE).map_err(redb_error)? {
            Some(value) => decode(META_NAME, value.value()),
            None => Ok(0),
        }
    }

    /// A store in memory, running the real redb code: for tests.
    pub fn in_memory(node: NodeId) -> Result<Store, StorageError> {
        let backend = redb::backends::InMemoryBackend::new();
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(redb_error)?;
        Store::init(db, node)
    }

    fn init(db: Database, node: NodeId) -> Result<Store, StorageError> {
        let txn = db.begin_write().map_err(redb_error)?;
        {
            let mut meta = txn.open_table(META).map_err(redb_error)?;
            let found = match meta.get(META_NODE_ID).map_err(redb_error)? {
                Some(value) => Some(decode::<NodeId>(META_NAME, value.value())?),
                None => None,
            };
            match found {
                Some(found) if found != node => {
                    return Err(StorageError::WrongNode {
                        expected: node,
                        found,
                    });
                }
                Some(_) => {}
                None => {
                    let bytes = encode(META_NAME, &node)?;
                    meta.insert(META_NODE_ID, bytes.as_slice())
                        .map_err(redb_error)?;
                }
            }
            // Create every table now, so readers never meet a missing one.
            txn.open_table(RAFT_ENTRIES).map_err(redb_error)?;
            txn.open_table(RAFT_HARD_STATE).map_err(redb_error)?;
            txn.open_table(RAFT_SNAPSHOTS).map_err(redb_error)?;
            states::EventualTables::open(&txn)?;
            machine::MachineTables::open(&txn)?;
            paxos::PaxosTables::open(&txn)?;
        }
        txn.commit().map_err(redb_error)?;
        Ok(Store {
            db,
            log: None,
            reads: Mutex::default(),
        })
    }

    /// Commits `batch` in one write transaction, fsynced if any part of it needs it. When
    /// this returns `Ok`, everything in the batch is durable (or, unsynced, will be with the
    /// next synced commit). A file store logs the batch (the fsync is the log's) and commits
    /// it to redb in memory, or, at a checkpoint, commits it to redb durably and empties the
    /// log.
    pub fn commit(&self, batch: Batch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let Some(log) = &self.log else {
            let durability = if batch.sync {
                Durability::Immediate
            } else {
                Durability::None
            };
            return self.apply(&batch, None, durability);
        };
        // One commit at a time: the driver awaits each, so the lock is never contended.
        let mut log = log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sequence = log.next;
        if log.checkpoint_due() {
            self.apply(&batch, Some(sequence), Durability::Immediate)?;
            log.next += 1;
            log.wal.reset();
            log.checkpointed_at = std::time::Instant::now();
            return Ok(());
        }
        let payload = encode(WAL_NAME, &batch)?;
        log.wal.append(sequence, &payload, batch.sync)?;
        self.apply(&batch, Some(sequence), Durability::None)?;
        log.next += 1;
        Ok(())
    }

    /// Writes `batch` in one redb transaction of `durability`, noting `sequence` (its number
    /// in the log) in the same transaction.
    fn apply(
        &self,
        batch: &Batch,
        sequence: Option<u64>,
        durability: Durability,
    ) -> Result<(), StorageError> {
        *self.read_cache() = ReadCache::default();
        let mut txn = self.db.begin_write().map_err(redb_error)?;
        txn.set_durability(durability).map_err(redb_error)?;
        if let Some(sequence) = sequence {
            let bytes = encode(META_NAME, &sequence)?;
            let mut meta = txn.open_table(META).map_err(redb_error)?;
            meta.insert(META_WAL_SEQUENCE, bytes.as_slice())
                .map_err(redb_error)?;
        }
        {
            let mut entries = txn.open_table(RAFT_ENTRIES).map_err(redb_error)?;
            let mut hard_states = txn.open_table(RAFT_HARD_STATE).map_err(redb_error)?;
            let mut snapshots = txn.open_table(RAFT_SNAPSHOTS).map_err(redb_error)?;
            for (group, write) in &batch.raft {
                let mut tables = RaftTables {
                    entries: &mut entries,
                    hard_states: &mut hard_states,
                    snapshots: &mut snapshots,
                };
                tables.apply(*group, write)?;
            }
            let mut eventual = states::EventualTables::open(&txn)?;
            for (keyspace, persist) in &batch.eventual {
                eventual.apply(*keyspace, persist)?;
            }
            for keyspace in &batch.dropped {
                let id = keyspace.0;
                entries
                    .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)
                    .map_err(redb_error)?;
                hard_states.remove(id).map_err(redb_error)?;
                snapshots.remove(id).map_err(redb_error)?;
                eventual.drop_keyspace(*keyspace)?;
            }
            eventual.collect_garbage(machine::GC_ROWS_PER_COMMIT)?;
        }
        {
            let mut machines = machine::MachineTables::open(&txn)?;
            for (group, writes) in &batch.machine {
                machines.apply(*group, writes)?;
            }
            for keyspace in &batch.dropped {
                machines.drop_group(GroupId(keyspace.0))?;
            }
            machines.collect_garbage()?;
        }
        {
            let mut acceptors = paxos::PaxosTables::open(&txn)?;
            for (keyspace, states) in &batch.paxos {
                acceptors.apply(*keyspace, states)?;
            }
            for keyspace in &batch.dropped {
                acceptors.drop_keyspace(*keyspace)?;
            }
        }
        if let Some(incarnation) = batch.paxos_incarnation {
            paxos::write_incarnation(&txn, incarnation)?;
        }
        txn.commit().map_err(redb_error)
    }

    /// What a Raft group's core restarts from: the durable hard state, snapshot and entries.
    /// `applied` is the snapshot's index: the shell rebuilds its state machine from it.
    pub fn raft_restore(&self, group: GroupId) -> Result<RestoredState, StorageError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let hard_states = txn.open_table(RAFT_HARD_STATE).map_err(redb_error)?;
        let hard_state = match hard_states.get(group.0).map_err(redb_error)? {
            Some(value) => decode(RAFT_HARD_STATE_NAME, value.value())?,
            None => HardState::default(),
        };
        let snapshots = txn.open_table(RAFT_SNAPSHOTS).map_err(redb_error)?;
        let snapshot: Option<SnapshotMeta> = match snapshots.get(group.0).map_err(redb_error)? {
            Some(value) => Some(decode(RAFT_SNAPSHOTS_NAME, value.value())?),
            None => None,
        };
        let after = snapshot.as_ref().map_or(LogIndex(0), |meta| meta.index);
        let table = txn.open_table(RAFT_ENTRIES).map_err(redb_error)?;
        let mut entries = Vec::new();
        for row in table
            .range((group.0, after.0 + 1)..=(group.0, u64::MAX))
            .map_err(redb_error)?
        {
            let (_, value) = row.map_err(redb_error)?;
            let entry: Entry = decode(RAFT_ENTRIES_NAME, value.value())?;
            let expected = LogIndex(after.0 + 1 + entries.len() as u64);
            if entry.index != expected {
                return Err(StorageError::LogGap {
                    group,
                    after: LogIndex(expected.0 - 1),
                });
            }
            entries.push(entry);
        }
        Ok(RestoredState {
            hard_state,
            snapshot,
            entries,
            applied: after,
        })
    }

    /// Every group and eventual keyspace id that has any row: a seek per id found, not a
    /// scan of the rows.
    pub fn stored_ids(&self) -> Result<std::collections::BTreeSet<u64>, StorageError> {
        let txn = self.db.begin_read().map_err(redb_error)?;
        let mut ids = std::collections::BTreeSet::new();
        for table in [RAFT_HARD_STATE, RAFT_SNAPSHOTS, EVENTUAL_META, MACHINE_META] {
            let table = txn.open_table(table).map_err(redb_error)?;
            for row in table.iter().map_err(redb_error)? {
                ids.insert(row.map_err(redb_error)?.0.value());
            }
        }
        let entries = txn.open_table(RAFT_ENTRIES).map_err(redb_error)?;
        let mut next = Some(0);
        while let Some(from) = next {
            let row = entries.range((from, 0)..).map_err(redb_error)?.next();
            next = match row {
                Some(row) => {
                    let (group, _) = row.map_err(redb_error)?.0.value();
                    ids.insert(group);
                    group.checked_add(1)
                }
                None => None,
            };
        }
        // Every commit that writes an eventual keyspace's rows writes its meta row too, and
        // a drop deletes both: the meta rows name every eventual keyspace with rows.
        Store::paxos_ids(&txn, &mut ids)?;
        Ok(ids)
    }
}

/// The three Raft tables of one write transaction.
struct RaftTables<'a, 't> {
    entries: &'a mut redb::Table<'t, (u64, u64), &'static [u8]>,
    hard_states: &'a mut redb::Table<'t, u64, &'static [u8]>,
    snapshots: &'a mut redb::Table<'t, u64, &'static [u8]>,
}

impl RaftTables<'_, '_> {
    /// Applies one group's write in the order the Ready contract gives: snapshot (which
    /// replaces the log, or for a compaction the prefix it covers), then truncate the
    /// conflicting suffix and append, then the hard state.
    fn apply(&mut self, group: GroupId, write: &RaftWrite) -> Result<(), StorageError> {
        if let Some(snapshot) = &write.snapshot {
            let bytes = encode(RAFT_SNAPSHOTS_NAME, snapshot)?;
            self.snapshots
                .insert(group.0, bytes.as_slice())
                .map_err(redb_error)?;
            let upto = if write.compaction {
                snapshot.index.0
            } else {
                u64::MAX
            };
            self.delete_entries(group, 0, upto)?;
        }
        if let Some(first) = write.entries.first() {
            self.delete_entries(group, first.index.0, u64::MAX)?;
            for entry in &write.entries {
                let bytes = encode(RAFT_ENTRIES_NAME, entry)?;
                self.entries
                    .insert((group.0, entry.index.0), bytes.as_slice())
                    .map_err(redb_error)?;
            }
        }
        if let Some(hard_state) = &write.hard_state {
            let bytes = encode(RAFT_HARD_STATE_NAME, hard_state)?;
            self.hard_states
                .insert(group.0, bytes.as_slice())
                .map_err(redb_error)?;
        }
        Ok(())
    }

    /// Deletes the group's entries with index in `from..=to`.
    fn delete_entries(&mut self, group: GroupId, from: u64, to: u64) -> Result<(), StorageError> {
        self.entries
            .retain_in((group.0, from)..=(group.0, to), |_, _| false)
            .map_err(redb_error)
    }
}
