//! Taking a backup from a running cluster, and restoring one into a fresh cluster.
//!
//! Backup: the catalog, then one keyspace at a time: open its backup (a strong keyspace's
//! leader takes a linearizable read index and keeps an image at or past it), then read its
//! pages from the node that opened it, each written to the file as it arrives. The client
//! holds one page at a time, whatever the size of the data set.
//!
//! Restore: read the whole file once and check it (every checksum, the structure, every
//! chunk decodes) before anything is asked of the cluster, so a damaged file changes
//! nothing; check the cluster holds no keyspace; create every keyspace with one restore
//! number; then send every chunk, in order, to every member. A strong keyspace starts on a
//! node once its last chunk is there (see `node::core::backup`). If the cluster fails part
//! way, the keyspaces the restore created are dropped again.

use super::format::{BackupError, BackupReader, BackupWriter, CatalogEntry, Record};
use crate::client::{Client, ConnError};
use crate::eventual::backup::EventualPage;
use crate::protocol::KeyspaceMode;
use crate::protocol::admin::{AdminAnswer, AdminError, AdminRequest};
use crate::strong::store::ImageChunk;
use std::path::Path;
use std::time::Duration;

/// How far a backup or restore has got, for a progress line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub keyspace: String,
    /// Keys (for eventual keyspaces, states, tombstones included) done in this keyspace.
    pub keys: u64,
    /// Pages done in this keyspace.
    pub chunks: u64,
    /// Bytes of the file written or read so far.
    pub bytes: u64,
    /// The keyspace is done.
    pub done: bool,
}

/// What a backup or restore did, per keyspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub keyspaces: Vec<KeyspaceSummary>,
    /// The file's size.
    pub bytes: u64,
}

/// One keyspace of a [`Summary`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceSummary {
    pub entry: CatalogEntry,
    pub keys: u64,
    pub chunks: u64,
}

fn cluster_error(error: ConnError) -> BackupError {
    match error {
        ConnError::Admin(AdminError::ClusterNotEmpty { name }) => {
            BackupError::ClusterNotEmpty { name }
        }
        error => BackupError::Cluster(error),
    }
}

/// Keys in one chunk of a keyspace of `mode`, or why the chunk is not one.
fn chunk_keys(mode: KeyspaceMode, entry: &CatalogEntry, data: &[u8]) -> Result<u64, String> {
    match mode {
        KeyspaceMode::Strong => {
            let chunk: ImageChunk = crate::wire::unframed::decode_bounded(data)
                .map_err(|error| format!("not a strong image chunk: {error}"))?;
            if Some(chunk.applied) != entry.revision {
                return Err(format!(
                    "a chunk of revision {} in a keyspace backed up at {:?}",
                    chunk.applied.0, entry.revision
                ));
            }
            Ok(chunk.rows.len() as u64)
        }
        _ => {
            let page: EventualPage = crate::wire::unframed::decode_bounded(data)
                .map_err(|error| format!("not an eventual page: {error}"))?;
            Ok(page.entries.len() as u64)
        }
    }
}

/// Writes a backup of every keyspace the cluster holds to `out` (see the module docs).
pub async fn backup(
    client: &Client,
    out: &Path,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Summary, BackupError> {
    let keyspaces = match client.admin(AdminRequest::ListKeyspaces).await? {
        AdminAnswer::Keyspaces(keyspaces) => keyspaces,
        other => return Err(unexpected(&other)),
    };
    // Refused before the file is created: a backup that leaves a keyspace out is no backup.
    if let Some(info) = keyspaces
        .iter()
        .find(|info| info.mode == KeyspaceMode::Paxos)
    {
        let (keyspace, mode) = (info.name.clone(), info.mode);
        return Err(BackupError::Unsupported { keyspace, mode });
    }
    let mut writer = BackupWriter::create(out)?;
    match write_backup(client, &mut writer, keyspaces, progress).await {
        Ok(keyspaces) => {
            let bytes = writer.finish()?;
            Ok(Summary { keyspaces, bytes })
        }
        Err(error) => {
            writer.abandon();
            Err(error)
        }
    }
}

fn unexpected(answer: &AdminAnswer) -> BackupError {
    BackupError::Cluster(ConnError::Protocol {
        reason: format!("unexpected answer {answer:?}"),
    })
}

async fn write_backup(
    client: &Client,
    writer: &mut BackupWriter,
    keyspaces: Vec<crate::protocol::admin::KeyspaceInfo>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<KeyspaceSummary>, BackupError> {
    // The header's catalog has names and modes; each section's record adds the revision
    // its image was read at. One keyspace is open at a time (a node holds a few at most).
    let catalog = keyspaces
        .iter()
        .map(|info| CatalogEntry {
            name: info.name.clone(),
            mode: info.mode,
            revision: None,
        })
        .collect();
    let created_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    writer.record(&Record::Header {
        created_unix_ms,
        catalog,
    })?;
    let mut summaries = Vec::new();
    for info in keyspaces {
        let request = AdminRequest::BackupOpen {
            keyspace: info.name.clone(),
        };
        let open = match client.admin(request).await? {
            AdminAnswer::BackupOpened(open) => open,
            other => return Err(unexpected(&other)),
        };
        let entry = CatalogEntry {
            name: info.name,
            mode: info.mode,
            revision: open.revision,
        };
        writer.record(&Record::Keyspace(entry.clone()))?;
        let mut state = Progress {
            keyspace: entry.name.clone(),
            keys: 0,
            chunks: 0,
            bytes: writer.bytes(),
            done: false,
        };
        let mut cursor = bytes::Bytes::new();
        loop {
            let request = AdminRequest::BackupRead {
                backup: open.backup,
                cursor: cursor.clone(),
            };
            let (data, next) = match client.admin_at(&open.address, request).await? {
                AdminAnswer::BackupChunk { data, next } => (data, next),
                other => return Err(unexpected(&other)),
            };
            state.keys += chunk_keys(entry.mode, &entry, &data)
                .map_err(|reason| BackupError::Cluster(ConnError::Protocol { reason }))?;
            writer.record(&Record::Chunk(data))?;
            state.chunks += 1;
            state.bytes = writer.bytes();
            match next {
                Some(next) => {
                    progress(&state);
                    cursor = next;
                }
                None => break,
            }
        }
        writer.record(&Record::KeyspaceEnd {
            chunks: state.chunks,
            keys: state.keys,
        })?;
        state.done = true;
        state.bytes = writer.bytes();
        progress(&state);
        summaries.push(KeyspaceSummary {
            entry,
            keys: state.keys,
            chunks: state.chunks,
        });
    }
    Ok(summaries)
}

/// Reads and checks the whole backup at `path` without asking a cluster anything.
pub fn verify(path: &Path) -> Result<Summary, BackupError> {
    let mut reader = BackupReader::open(path)?;
    let mut summaries: Vec<KeyspaceSummary> = Vec::new();
    let malformed = |offset, reason: &str| BackupError::Malformed {
        offset,
        reason: reason.to_string(),
    };
    let offset = reader.offset();
    let catalog = match reader.next_record()? {
        Some(Record::Header { catalog, .. }) => catalog,
        _ => return Err(malformed(offset, "the first record is not the header")),
    };
    let mut current: Option<KeyspaceSummary> = None;
    loop {
        let offset = reader.offset();
        let Some(record) = reader.next_record()? else {
            break;
        };
        match (record, current.as_mut()) {
            (Record::Keyspace(entry), None) => {
                let listed = catalog.get(summaries.len());
                if listed
                    .is_none_or(|listed| (&listed.name, listed.mode) != (&entry.name, entry.mode))
                {
                    return Err(malformed(
                        offset,
                        "a keyspace section the header does not list",
                    ));
                }
                current = Some(KeyspaceSummary {
                    entry,
                    keys: 0,
                    chunks: 0,
                });
            }
            (Record::Chunk(data), Some(keyspace)) => {
                let entry = &keyspace.entry;
                keyspace.keys += chunk_keys(entry.mode, entry, &data)
                    .map_err(|reason| BackupError::Malformed { offset, reason })?;
                keyspace.chunks += 1;
            }
            (Record::KeyspaceEnd { chunks, keys }, Some(keyspace)) => {
                if (chunks, keys) != (keyspace.chunks, keyspace.keys) || chunks == 0 {
                    return Err(malformed(
                        offset,
                        "a keyspace's end does not count its chunks",
                    ));
                }
                summaries.extend(current.take());
            }
            (Record::End { .. }, None) if summaries.len() == catalog.len() => {}
            (record, _) => {
                let reason = format!("record {record:?} out of place");
                return Err(BackupError::Malformed { offset, reason });
            }
        }
    }
    Ok(Summary {
        keyspaces: summaries,
        bytes: reader.offset(),
    })
}

/// How long a restore waits for every node to apply a keyspace's creation.
const APPLY_WAIT_MAX: Duration = Duration::from_secs(30);

/// Restores the backup at `path` into the cluster `client` reaches, which must hold no
/// keyspace (see the module docs).
pub async fn restore(
    client: &Client,
    path: &Path,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Summary, BackupError> {
    let summary = verify(path)?;
    let existing = match client.admin(AdminRequest::ListKeyspaces).await? {
        AdminAnswer::Keyspaces(keyspaces) => keyspaces,
        other => return Err(unexpected(&other)),
    };
    if let Some(info) = existing.first() {
        let name = info.name.clone();
        return Err(BackupError::ClusterNotEmpty { name });
    }
    let restore = crate::rng::os_seed();
    let mut created = Vec::new();
    let result = restore_into(client, path, &summary, restore, &mut created, progress).await;
    match result {
        Ok(()) => Ok(summary),
        Err((keyspace, error)) => {
            let mut cleaned = true;
            for name in created {
                let drop = AdminRequest::DropKeyspace { name };
                cleaned &= client.admin(drop).await.is_ok();
            }
            Err(BackupError::RestoreFailed {
                keyspace,
                cleaned,
                source: Box::new(error),
            })
        }
    }
}

async fn restore_into(
    client: &Client,
    path: &Path,
    summary: &Summary,
    restore: u64,
    created: &mut Vec<String>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(), (String, BackupError)> {
    for keyspace in &summary.keyspaces {
        let entry = &keyspace.entry;
        let request = AdminRequest::RestoreKeyspace {
            name: entry.name.clone(),
            mode: entry.mode,
            revision: entry.revision,
            restore,
        };
        match client.admin(request).await {
            Ok(_) => created.push(entry.name.clone()),
            Err(error) => return Err((entry.name.clone(), cluster_error(error))),
        }
    }
    let members = client
        .members()
        .await
        .map_err(|error| (String::new(), cluster_error(error)))?;
    let mut reader = BackupReader::open(path).map_err(|error| (String::new(), error))?;
    let mut index = 0;
    let mut state: Option<Progress> = None;
    loop {
        let name = state
            .as_ref()
            .map_or_else(String::new, |s| s.keyspace.clone());
        let fail = |error| (name.clone(), error);
        let Some(record) = reader.next_record().map_err(fail)? else {
            break;
        };
        match record {
            Record::Keyspace(entry) => {
                state = Some(Progress {
                    keyspace: entry.name,
                    keys: 0,
                    chunks: 0,
                    bytes: reader.offset(),
                    done: false,
                });
            }
            Record::Chunk(data) => {
                let Some(state) = state.as_mut() else {
                    continue; // verify() saw to the order
                };
                let keyspace = &summary.keyspaces[index];
                let seq = state.chunks;
                let last = seq + 1 == keyspace.chunks;
                let keys = chunk_keys(keyspace.entry.mode, &keyspace.entry, &data)
                    .map_err(|reason| fail(BackupError::Malformed { offset: 0, reason }))?;
                for member in &members {
                    let request = AdminRequest::RestoreChunk {
                        name: state.keyspace.clone(),
                        seq,
                        data: data.clone(),
                        last,
                    };
                    send_chunk(client, &member.address, request)
                        .await
                        .map_err(|error| fail(cluster_error(error)))?;
                }
                state.chunks += 1;
                state.keys += keys;
                state.bytes = reader.offset();
                if !last {
                    progress(state);
                }
            }
            Record::KeyspaceEnd { .. } => {
                if let Some(state) = state.as_mut() {
                    state.done = true;
                    progress(state);
                }
                index += 1;
            }
            Record::Header { .. } | Record::End { .. } => {}
        }
    }
    Ok(())
}

/// Sends one chunk to one node, waiting (with a deadline) for the node to have applied the
/// keyspace's creation; a chunk the node took before a lost answer counts as sent.
async fn send_chunk(
    client: &Client,
    address: &str,
    request: AdminRequest,
) -> Result<(), ConnError> {
    let deadline = tokio::time::Instant::now() + APPLY_WAIT_MAX;
    let AdminRequest::RestoreChunk { seq, .. } = &request else {
        unreachable!("only chunks are sent here");
    };
    let seq = *seq;
    loop {
        match client.admin_at(address, request.clone()).await {
            Ok(_) => return Ok(()),
            Err(ConnError::Admin(AdminError::RestoreOutOfOrder { expected, .. }))
                if expected == seq + 1 =>
            {
                return Ok(());
            }
            Err(ConnError::Admin(AdminError::NotRestoring { .. }))
                if tokio::time::Instant::now() < deadline =>
            {
                // The node has not applied the keyspace's creation yet.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error),
        }
    }
}
