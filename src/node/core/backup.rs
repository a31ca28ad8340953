//! Backups and restores on the node: open backups (pages read by cursor) and keyspaces being
//! restored.
//!
//! # Backup
//!
//! ```text
//!  BackupOpen(strong ks) ─▶ read index R (leader) ─▶ applied ≥ R ─▶ store durable ≥ R
//!                                                                      │ image (read txn)
//!  BackupRead(handle, cursor) ◀── one chunk of the image per request ◀─┘
//! ```
//!
//! A strong keyspace's backup is the Raft snapshot stream ([`crate::strong::store`]) of a
//! point-in-time image taken once the store holds a linearizable read index taken after the
//! request arrived: every page comes from that one image (a storage read transaction),
//! whatever is written meanwhile, and each page costs one chunk of about
//! [`BACKUP_PAGE_BYTES`]. An eventual keyspace's pages are its merged states
//! ([`crate::eventual::backup`]). At most [`BACKUPS_OPEN_MAX`] backups are open on a node;
//! one not read for [`BACKUP_IDLE_MAX`] is closed (an open image pins the store's pages).
//!
//! # Restore
//!
//! A restore creates each keyspace with a [`catalog::RestoreMark`]. A strong one is *held*
//! on every node that has nothing of its group yet: no replica runs, and the chunks of its
//! image, sent to every node by the client, are staged as a snapshot a follower receives
//! would be. The last chunk installs the image and records a Raft snapshot at the backed-up
//! revision with the group's first voters; once that batch is durable the group starts from
//! it, as after a restart. Every node starts from the same snapshot (index, term 0, voters),
//! so the group's first election and everything after it run as in any group: revisions (log
//! indexes) go on from the backed-up one. An eventual keyspace starts empty as usual and
//! merges the chunks' states. Each chunk is answered once the batch holding it is durable.

use super::catalog::{self, CATALOG_GROUP};
use super::waiting::{CatalogChange, Waiting};
use super::{NodeCore, ReplyTo, StrongKeyspace, watch};
use crate::eventual::backup::{BackupCursor, EventualPage};
use crate::protocol::ClientError;
use crate::protocol::KeyspaceMode;
use crate::protocol::admin::{AdminAnswer, AdminError, AdminRequest, BackupOpened, FromNode};
use crate::raft::{Membership, SnapshotMeta, SnapshotSource};
use crate::strong::store::{ImageChunk, StagedChunk};
use crate::strong::{self, Command, MachineWrites};
use crate::types::{GroupId, Instant, KeyspaceId, LogIndex, NodeId, Term};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Backups open on a node at once: each may hold a storage read transaction.
pub const BACKUPS_OPEN_MAX: u32 = 4;
/// A backup not read for this long is closed.
pub const BACKUP_IDLE_MAX: Duration = Duration::from_secs(60);
/// About how many bytes one backup page holds: a chunk read from storage on the node's
/// driver, so small enough not to hold it up (a few milliseconds), large enough that a
/// million small keys take a few hundred pages.
pub const BACKUP_PAGE_BYTES: usize = 256 * 1024;
/// Eventual states one page holds at most.
const BACKUP_PAGE_KEYS_MAX: usize = 4096;
/// Restore chunks waiting for their batch on a node at once (each is at most a frame).
const RESTORE_PENDING_MAX: usize = 16;

const _: () = assert!(BACKUP_PAGE_BYTES * 4 <= crate::wire::FRAME_BYTES_MAX);

/// The backups and restores a node has under way.
#[derive(Default)]
pub(super) struct Backups {
    open: BTreeMap<u64, OpenBackup>,
    /// Strong opens whose read index the store does not hold yet: (tag, group, index).
    opening: Vec<(u64, GroupId, LogIndex)>,
    /// Strong keyspaces waiting for their image, by name.
    held: BTreeMap<String, Held>,
    /// What the next batch carries for restores.
    pending: RestoreBatch,
}

/// An open backup.
struct OpenBackup {
    keyspace: KeyspaceId,
    /// A strong keyspace's image; `None` for an eventual keyspace.
    image: Option<Arc<dyn SnapshotSource>>,
    used_at: Instant,
    /// Its last page was served: it stays (a lost answer may be asked again) until another
    /// backup opens or it idles out.
    finished: bool,
}

/// A strong keyspace held until its image arrives.
#[derive(Clone, Debug)]
struct Held {
    id: KeyspaceId,
    voters: Vec<NodeId>,
    revision: LogIndex,
    /// The chunk expected next.
    next_seq: u64,
    /// Its last chunk is in a batch: it starts once that is durable.
    installing: bool,
}

/// The restore work of one batch.
#[derive(Default)]
pub(super) struct RestoreBatch {
    writes: Vec<(GroupId, MachineWrites)>,
    snapshots: Vec<(GroupId, SnapshotMeta)>,
    /// Held keyspaces that start once the batch is durable.
    starts: Vec<String>,
    /// Answers that leave once the batch is durable.
    acks: Vec<(ReplyTo, FromNode)>,
}

impl NodeCore {
    /// The four backup and restore requests.
    pub(super) fn backup_request(&mut self, request: AdminRequest, reply: ReplyTo) {
        let result = match request {
            AdminRequest::BackupOpen { keyspace } => return self.open_backup(keyspace, reply),
            AdminRequest::BackupRead { backup, cursor } => self.read_backup(backup, &cursor),
            AdminRequest::RestoreKeyspace { .. } => {
                // Checked against a catalog at least as new as a read index of group 0.
                let deadline = self.now + self.config.request_wait_max;
                let waiting = Waiting::Admin(Box::new(request));
                let key = catalog::keyspace_key("");
                return self.read_catalog(waiting, reply, deadline, key);
            }
            AdminRequest::RestoreChunk {
                name,
                seq,
                data,
                last,
            } => match self.restore_chunk(&name, seq, &data, last) {
                Ok(()) => {
                    let answer = FromNode::Admin(Ok(AdminAnswer::Done));
                    self.backups.pending.acks.push((reply, answer));
                    return;
                }
                Err(error) => Err(error),
            },
            other => {
                let reason = format!("{} is not a backup request", other.name());
                Err(ClientError::Malformed { reason }.into())
            }
        };
        self.answer(reply, FromNode::Admin(result));
    }

    /// The catalog command that creates a keyspace for a restore, unless the catalog holds a
    /// keyspace of another restore (or of none).
    pub(super) fn restore_change(
        &self,
        name: String,
        mode: KeyspaceMode,
        revision: Option<LogIndex>,
        restore: u64,
    ) -> Result<(Command, CatalogChange), AdminError> {
        catalog::check_name(&name)?;
        let machine = self.groups[&CATALOG_GROUP].replica.machine();
        let (existing, _) = catalog::keyspaces_scanned(machine);
        let foreign = existing
            .values()
            .find(|entry| entry.restore.is_none_or(|mark| mark.restore != restore));
        if let Some(entry) = foreign {
            let name = entry.info.name.clone();
            return Err(AdminError::ClusterNotEmpty { name });
        }
        if existing.len() >= catalog::KEYSPACES_MAX as usize {
            let max = catalog::KEYSPACES_MAX;
            return Err(AdminError::TooManyKeyspaces { max });
        }
        let revision = match mode {
            KeyspaceMode::Strong => Some(revision.unwrap_or(LogIndex(0))),
            _ => None,
        };
        let mark = catalog::RestoreMark { restore, revision };
        let voters = self.members.keys().copied().collect();
        let command = catalog::restore_command(&name, mode, voters, mark);
        Ok((command, CatalogChange::Create { name }))
    }

    fn open_backup(&mut self, name: String, reply: ReplyTo) {
        self.close_idle_backups();
        self.backups.open.retain(|_, open| !open.finished);
        if self.backups.open.len() + self.backups.opening.len() >= BACKUPS_OPEN_MAX as usize {
            let error = AdminError::TooManyBackups {
                max: BACKUPS_OPEN_MAX,
            };
            return self.answer(reply, FromNode::Admin(Err(error)));
        }
        let Some(&(id, mode)) = self.names.get(&name) else {
            let error = ClientError::UnknownKeyspace { name };
            return self.answer(reply, FromNode::Admin(Err(error.into())));
        };
        match mode {
            KeyspaceMode::Strong => {
                let group = GroupId(id.0);
                let deadline = self.now + self.config.request_wait_max;
                let waiting = Waiting::Backup;
                let tag = self.register(reply, Some(id), waiting, deadline);
                let now = self.now;
                let replica = &mut self.groups.get_mut(&group).expect("in names").replica;
                let mode = strong::ReadMode::Linearizable;
                if let Some(completion) = replica.read(now, tag, mode, Bytes::new()) {
                    self.complete_strong(group, completion);
                }
            }
            KeyspaceMode::Eventual(_) => {
                let opened = self.register_backup(id, None);
                self.answer(reply, FromNode::Admin(opened));
            }
            KeyspaceMode::Paxos => {
                let command = "backup".to_string();
                let error = ClientError::WrongType { command, mode };
                self.answer(reply, FromNode::Admin(Err(error.into())));
            }
        }
    }

    /// A strong backup's read index came back: it opens once the store holds that index.
    pub(super) fn backup_read_index(
        &mut self,
        group: GroupId,
        pending: super::waiting::Pending,
        answer: strong::Answer,
    ) {
        let strong::Answer::Read { applied, .. } = answer else {
            let error = self.strong_error(group, answer);
            return self.answer(pending.reply, FromNode::Admin(Err(error.into())));
        };
        let tag = self.waiting.insert(pending);
        self.backups.opening.push((tag, group, applied));
        self.open_ready_backups();
    }

    /// Opens the strong backups whose read index the store now holds (after each batch).
    pub(super) fn open_ready_backups(&mut self) {
        let opening = std::mem::take(&mut self.backups.opening);
        for (tag, group, index) in opening {
            if self.waiting.get(tag).is_none() {
                continue; // Timed out: answered already.
            }
            let Some(keyspace) = self.groups.get(&group) else {
                self.fail(
                    tag,
                    ClientError::UnknownKeyspace {
                        name: String::new(),
                    },
                );
                continue;
            };
            let machine = keyspace.replica.machine();
            if machine.durable_applied() < index {
                self.backups.opening.push((tag, group, index));
                continue;
            }
            let result = match machine.image() {
                Ok(image) if image.index() >= index => {
                    self.register_backup(KeyspaceId(group.0), Some(image))
                }
                Ok(_) => {
                    self.backups.opening.push((tag, group, index));
                    continue;
                }
                Err(error) => Err(AdminError::BackupFailed {
                    reason: format!("taking the keyspace's image: {error}"),
                }),
            };
            if let Some(pending) = self.waiting.remove(tag) {
                self.answer(pending.reply, FromNode::Admin(result));
            }
        }
    }

    fn register_backup(
        &mut self,
        keyspace: KeyspaceId,
        image: Option<Arc<dyn SnapshotSource>>,
    ) -> Result<AdminAnswer, AdminError> {
        let Some(info) = self.keyspace_info(keyspace) else {
            return Err(ClientError::UnknownKeyspace {
                name: String::new(),
            }
            .into());
        };
        let backup = self.random.next_u64();
        let revision = image.as_ref().map(|image| image.index());
        let open = OpenBackup {
            keyspace,
            image,
            used_at: self.now,
            finished: false,
        };
        self.backups.open.insert(backup, open);
        Ok(AdminAnswer::BackupOpened(BackupOpened {
            backup,
            keyspace: info,
            revision,
            node: self.config.id,
            address: self.config.address.clone(),
        }))
    }

    fn keyspace_info(&self, id: KeyspaceId) -> Option<crate::protocol::admin::KeyspaceInfo> {
        let (name, (_, mode)) = self.names.iter().find(|(_, (found, _))| *found == id)?;
        Some(crate::protocol::admin::KeyspaceInfo {
            name: name.clone(),
            id,
            mode: *mode,
        })
    }

    fn read_backup(&mut self, backup: u64, cursor: &[u8]) -> Result<AdminAnswer, AdminError> {
        let now = self.now;
        let Some(open) = self.backups.open.get_mut(&backup) else {
            return Err(AdminError::UnknownBackup { backup });
        };
        open.used_at = now;
        let keyspace = open.keyspace;
        let (data, next) = match &open.image {
            Some(image) => image.chunk(cursor, BACKUP_PAGE_BYTES).map_err(|error| {
                AdminError::BackupFailed {
                    reason: error.to_string(),
                }
            })?,
            None => self.eventual_page(keyspace, cursor)?,
        };
        if next.is_none()
            && let Some(open) = self.backups.open.get_mut(&backup)
        {
            open.finished = true;
        }
        Ok(AdminAnswer::BackupChunk { data, next })
    }

    fn eventual_page(
        &self,
        keyspace: KeyspaceId,
        cursor: &[u8],
    ) -> Result<(Bytes, Option<Bytes>), AdminError> {
        let Some(running) = self.eventual.get(&keyspace) else {
            let name = String::new();
            return Err(ClientError::UnknownKeyspace { name }.into());
        };
        let after: Option<BackupCursor> = match cursor {
            [] => None,
            bytes => Some(
                crate::wire::unframed::decode_bounded(bytes).map_err(|error| {
                    ClientError::Malformed {
                        reason: format!("backup cursor: {error}"),
                    }
                })?,
            ),
        };
        let engine = &running.engine;
        let (entries, more) =
            engine.backup_page(after.as_ref(), BACKUP_PAGE_KEYS_MAX, BACKUP_PAGE_BYTES);
        let next = match entries.last() {
            Some((key, _)) if more => {
                let cursor = crate::eventual::AntiEntropy::backup_cursor(key);
                Some(Bytes::from(encode_local(&cursor)?))
            }
            _ => None,
        };
        let vector = next.is_none().then(|| engine.knowledge().clone());
        let page = EventualPage { entries, vector };
        Ok((Bytes::from(encode_local(&page)?), next))
    }

    /// Closes backups not read for [`BACKUP_IDLE_MAX`].
    pub(super) fn close_idle_backups(&mut self) {
        let now = self.now;
        self.backups
            .open
            .retain(|_, open| now.saturating_duration_since(open.used_at) < BACKUP_IDLE_MAX);
    }

    /// Starts holding a restored strong keyspace instead of running it, if this node has
    /// nothing of its group yet. False: run it as usual.
    pub(super) fn hold_restored(
        &mut self,
        name: &str,
        entry: &catalog::Entry,
    ) -> Result<bool, super::CoreError> {
        let (Some(mark), KeyspaceMode::Strong) = (entry.restore, entry.info.mode) else {
            return Ok(false);
        };
        if self.backups.held.contains_key(name) {
            return Ok(true);
        }
        let group = GroupId(entry.info.id.0);
        let restored = self.durable.raft_restore(group)?;
        let machine = crate::strong::MachineStore::load(&*self.durable, group)
            .map_err(|error| super::CoreError::Boot(format!("raft group {}: {error}", group.0)))?;
        let fresh = restored.snapshot.is_none()
            && restored.entries.is_empty()
            && restored.hard_state.term == Term(0)
            && machine.applied == LogIndex(0);
        if !fresh {
            return Ok(false);
        }
        let held = Held {
            id: entry.info.id,
            voters: entry.voters.clone(),
            revision: mark.revision.unwrap_or(LogIndex(0)),
            next_seq: 0,
            installing: false,
        };
        tracing::info!(keyspace = %name, id = entry.info.id.0, "keyspace held for its restore");
        self.backups.held.insert(name.to_string(), held);
        Ok(true)
    }

    /// Forgets held keyspaces the catalog no longer has; their rows go with the next batch.
    pub(super) fn release_held(&mut self, keep: &BTreeMap<String, catalog::Entry>) {
        let gone: Vec<String> = self
            .backups
            .held
            .iter()
            .filter(|(name, held)| keep.get(*name).is_none_or(|entry| entry.info.id != held.id))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(held) = self.backups.held.remove(&name) {
                self.drops.insert(held.id);
            }
        }
    }

    /// Whether keyspace `id` is held here (its staged rows are not garbage).
    pub(super) fn holds(&self, id: KeyspaceId) -> bool {
        self.backups.held.values().any(|held| held.id == id)
    }

    fn restore_chunk(
        &mut self,
        name: &str,
        seq: u64,
        data: &[u8],
        last: bool,
    ) -> Result<(), AdminError> {
        let pending = self.backups.pending.acks.len();
        if pending >= RESTORE_PENDING_MAX {
            return Err(ClientError::Backpressure.into());
        }
        let bad = |reason: String| AdminError::BadRestoreChunk {
            name: name.to_string(),
            reason,
        };
        if let Some(held) = self.backups.held.get_mut(name) {
            if held.installing || (seq != 0 && seq != held.next_seq) {
                return Err(AdminError::RestoreOutOfOrder {
                    name: name.to_string(),
                    expected: if held.installing { 0 } else { held.next_seq },
                    got: seq,
                });
            }
            let chunk: ImageChunk = crate::wire::unframed::decode_bounded(data)
                .map_err(|error| bad(format!("not a strong image chunk: {error}")))?;
            if chunk.applied != held.revision {
                return Err(bad(format!(
                    "the chunk is of revision {}, the keyspace is restored at {}",
                    chunk.applied.0, held.revision.0
                )));
            }
            held.next_seq = seq + 1;
            let group = GroupId(held.id.0);
            let writes = MachineWrites {
                staged: vec![StagedChunk {
                    restart: seq == 0,
                    chunk,
                }],
                install: last,
                ..MachineWrites::default()
            };
            self.backups.pending.writes.push((group, writes));
            if last {
                held.installing = true;
                let membership = Membership {
                    voters: held.voters.iter().copied().collect(),
                    learners: Default::default(),
                };
                let snapshot = SnapshotMeta {
                    index: held.revision,
                    term: Term(0),
                    membership,
                };
                self.backups.pending.snapshots.push((group, snapshot));
                self.backups.pending.starts.push(name.to_string());
            }
            return Ok(());
        }
        let Some(&(id, KeyspaceMode::Eventual(_))) = self.names.get(name) else {
            let name = name.to_string();
            return Err(AdminError::NotRestoring { name });
        };
        let page: EventualPage = crate::wire::unframed::decode_bounded(data)
            .map_err(|error| bad(format!("not an eventual page: {error}")))?;
        let now = self.now;
        let engine = &mut self.eventual.get_mut(&id).expect("in names").engine;
        let mut refused = 0;
        for (key, state) in page.entries {
            if !engine.restore_state(now, key, state) {
                refused += 1;
            }
        }
        if let Some(vector) = &page.vector {
            engine.restore_finish(vector);
        }
        self.drain_engine(id);
        if refused > 0 {
            return Err(bad(format!(
                "{refused} states refused (another value type, a key too long, or an lww \
                 stamp further ahead of this node's clock than the allowed skew)"
            )));
        }
        Ok(())
    }

    /// Moves the pending restore work into the batch being built.
    pub(super) fn take_restore_batch(&mut self, batch: &mut crate::storage::Batch) -> RestoreBatch {
        let mut work = std::mem::take(&mut self.backups.pending);
        for (group, writes) in std::mem::take(&mut work.writes) {
            batch.machine_writes(group, writes);
        }
        for (group, snapshot) in std::mem::take(&mut work.snapshots) {
            batch.raft_compaction(group, snapshot);
        }
        work
    }

    /// The batch with `work` is durable: held keyspaces whose image it installed start, and
    /// the chunks are answered.
    pub(super) fn restore_persisted(&mut self, work: RestoreBatch) -> Result<(), super::CoreError> {
        for name in work.starts {
            let Some(held) = self.backups.held.remove(&name) else {
                continue; // Dropped meanwhile.
            };
            let group = GroupId(held.id.0);
            let replica = self.boot_replica(group, held.voters.clone())?;
            let history = watch::History::new(replica.machine().applied());
            let keyspace = StrongKeyspace {
                name: name.clone(),
                replica,
                history,
            };
            self.groups.insert(group, keyspace);
            self.names
                .insert(name.clone(), (held.id, KeyspaceMode::Strong));
            tracing::info!(keyspace = %name, id = held.id.0, revision = held.revision.0, "restored keyspace started");
        }
        for (reply, answer) in work.acks {
            self.answer(reply, answer);
        }
        Ok(())
    }
}

fn encode_local<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, AdminError> {
    crate::wire::unframed::encode(value).map_err(|error| {
        ClientError::Malformed {
            reason: format!("encoding a backup page: {error}"),
        }
        .into()
    })
}
