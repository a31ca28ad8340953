//! Where a strong keyspace's state lives: its keys, its client sessions and its applied index
//! are rows behind [`MachineStore`] (redb in the node, [`MemoryMachineStore`] in the
//! simulator), in the spirit of etcd's backend. The machine reads through the trait and hands
//! its changes out as [`MachineWrites`], which the shell commits with the group's next Raft
//! persist; so a replica's memory holds one round's changes, not the data set, and a
//! snapshot is a read transaction streamed in chunks ([`Image`]), never a copy of the map.
//!
//! # The snapshot stream
//!
//! A snapshot is a sequence of [`ImageChunk`]s, each one encoded with the unframed codec:
//! first the sessions in client order, then the keys in key order, each chunk about
//! `bytes_max` bytes. The cursor of a chunk names where it starts: empty for the first,
//! [`CURSOR_SESSIONS`] and a client id or [`CURSOR_KEYS`] and a key (after that one), or
//! [`CURSOR_KEYS_START`].

use super::command::{ClientId, Session, Versioned};
use crate::raft::{SnapshotReadError, SnapshotSource};
use crate::types::{GroupId, LogIndex, WallMillis};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

/// The storage under a machine failed (a disk or a corrupt row): the replica cannot go on.
#[derive(Debug, thiserror::Error)]
#[error("the strong keyspace's storage failed: {0}")]
pub struct StoreError(pub String);

/// A group's durable machine state apart from its keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineMeta {
    /// The log index the stored state is applied to (0 for a group never written).
    pub applied: LogIndex,
    /// The machine's log clock at `applied`.
    pub clock: WallMillis,
    /// Every stored client session.
    pub sessions: Vec<(ClientId, Session)>,
}

/// What a machine reads. Reads see exactly what committed [`MachineWrites`] left (the
/// machine keeps its own changes that are not committed yet).
pub trait MachineStore: fmt::Debug + Send + Sync {
    /// The applied index and the sessions of `group`.
    fn load(&self, group: GroupId) -> Result<MachineMeta, StoreError>;
    /// One key.
    fn get(&self, group: GroupId, key: &[u8]) -> Result<Option<Versioned>, StoreError>;
    /// Up to `limit` keys that start with `prefix`, in order, from `start` (inclusive; at
    /// least `prefix`), stopping after the key whose [`row_bytes`] bring the total to
    /// `bytes_max` or more (so at least one key, if any is there).
    fn scan(
        &self,
        group: GroupId,
        start: &[u8],
        prefix: &[u8],
        limit: usize,
        bytes_max: usize,
    ) -> Result<Vec<(Bytes, Versioned)>, StoreError>;
    /// A point-in-time image of `group`'s committed state, for Raft snapshots.
    fn image(&self, group: GroupId) -> Result<Arc<dyn SnapshotSource>, StoreError>;
}

/// What a row counts toward a scan's `bytes_max`: its key and value.
pub fn row_bytes(key: &[u8], version: &Versioned) -> usize {
    key.len() + version.value.len()
}

/// Takes rows in order until `limit` of them, or until their [`row_bytes`] reach
/// `bytes_max`: the bounds of [`MachineStore::scan`].
fn take_rows<I>(rows: I, limit: usize, bytes_max: usize) -> Vec<(Bytes, Versioned)>
where
    I: IntoIterator<Item = (Bytes, Versioned)>,
{
    let mut taken = Vec::new();
    let mut bytes = 0;
    for (key, version) in rows {
        if taken.len() == limit || bytes >= bytes_max {
            break;
        }
        bytes += row_bytes(&key, &version);
        taken.push((key, version));
    }
    taken
}

/// One chunk of the snapshot stream (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageChunk {
    /// The index the image is applied to.
    pub applied: LogIndex,
    /// The machine's log clock at `applied`: it decides which sessions expire next.
    pub clock: WallMillis,
    pub sessions: Vec<(ClientId, Session)>,
    pub rows: Vec<(Bytes, Versioned)>,
}

/// A decoded chunk a follower stages: `restart` when it is a snapshot's first (what was
/// staged before goes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedChunk {
    pub restart: bool,
    pub chunk: ImageChunk,
}

/// What a machine asks to make durable with its group's next persist, in this order: the
/// rows and sessions, the applied index, the staged chunks, then (if `install`) the staged
/// image replaces the whole state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineWrites {
    /// Keys to write (`Some`) or delete (`None`).
    pub rows: Vec<(Bytes, Option<Versioned>)>,
    /// Sessions to write or forget.
    pub sessions: Vec<(ClientId, Option<Session>)>,
    /// The applied index the rows bring the state to, when it moved.
    pub applied: Option<LogIndex>,
    /// The log clock at `applied` (given with it).
    pub clock: Option<WallMillis>,
    pub staged: Vec<StagedChunk>,
    pub install: bool,
}

impl MachineWrites {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.sessions.is_empty()
            && self.applied.is_none()
            && self.clock.is_none()
            && self.staged.is_empty()
            && !self.install
    }
}

/// Cursor tag of a chunk that starts in the sessions.
pub const CURSOR_SESSIONS: u8 = 0;
/// Cursor tag of a chunk that starts in the keys, after the key that follows the tag.
pub const CURSOR_KEYS: u8 = 1;
/// Cursor tag of a chunk that starts at the first key.
pub const CURSOR_KEYS_START: u8 = 2;

/// How an image reads its point in time, a batch at a time.
pub trait ImageRead: fmt::Debug + Send + Sync {
    /// Up to `limit` sessions after `after` (from the first when `None`), in order.
    fn sessions_after(
        &self,
        after: Option<ClientId>,
        limit: usize,
    ) -> Result<Vec<(ClientId, Session)>, StoreError>;
    /// Up to `limit` keys after `after` (from the first when `None`), in order.
    fn rows_after(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Versioned)>, StoreError>;
}

/// Items read per batch while a chunk fills.
const IMAGE_BATCH: usize = 64;

/// A point-in-time image served as the snapshot stream.
#[derive(Debug)]
pub struct Image<R> {
    pub applied: LogIndex,
    /// The log clock at `applied`.
    pub clock: WallMillis,
    pub read: R,
}

/// Where a chunk starts.
enum Position {
    Sessions(Option<ClientId>),
    Keys(Option<Bytes>),
}

fn parse_cursor(cursor: &[u8]) -> Result<Position, SnapshotReadError> {
    let bad = || SnapshotReadError("not a strong image cursor".to_string());
    match cursor.split_first() {
        None => Ok(Position::Sessions(None)),
        Some((&CURSOR_SESSIONS, id)) => {
            let id: [u8; 8] = id.try_into().map_err(|_| bad())?;
            Ok(Position::Sessions(Some(ClientId(u64::from_be_bytes(id)))))
        }
        Some((&CURSOR_KEYS, key)) => Ok(Position::Keys(Some(Bytes::copy_from_slice(key)))),
        Some((&CURSOR_KEYS_START, [])) => Ok(Position::Keys(None)),
        Some(_) => Err(bad()),
    }
}

fn tagged(tag: u8, body: &[u8]) -> Bytes {
    let mut cursor = Vec::with_capacity(body.len() + 1);
    cursor.push(tag);
    cursor.extend_from_slice(body);
    Bytes::from(cursor)
}

/// About how many bytes a session adds to a chunk: a fixed allowance and its results (a
/// failed cas keeps the current value, up to `VALUE_BYTES_MAX`; a session holds about
/// `SESSION_RESULT_BYTES_MAX` at most, so one session always fits a frame).
fn session_bytes(session: &Session) -> usize {
    64 + session.result_bytes()
}

/// A chunk being filled up to about `bytes_max`.
struct Fill {
    chunk: ImageChunk,
    bytes: usize,
    bytes_max: usize,
}

impl Fill {
    /// Counts an item of `added` bytes in, unless the chunk already holds something and the
    /// item would take it past the limit (one item always fits, however large).
    fn admits(&mut self, added: usize) -> bool {
        if self.bytes > 0 && self.bytes + added > self.bytes_max {
            return false;
        }
        self.bytes += added;
        true
    }
}

impl<R: ImageRead> Image<R> {
    fn read_chunk(
        &self,
        cursor: &[u8],
        bytes_max: usize,
    ) -> Result<(ImageChunk, Option<Bytes>), StoreError> {
        let chunk = ImageChunk {
            applied: self.applied,
            clock: self.clock,
            ..ImageChunk::default()
        };
        let mut fill = Fill {
            chunk,
            bytes: 0,
            bytes_max,
        };
        let position = parse_cursor(cursor).map_err(|error| StoreError(error.0))?;
        let after_key = match position {
            Position::Sessions(after) => {
                if let Some(next) = self.fill_sessions(&mut fill, after)? {
                    return Ok((fill.chunk, Some(next)));
                }
                None
            }
            Position::Keys(after) => after,
        };
        let next = self.fill_rows(&mut fill, after_key)?;
        Ok((fill.chunk, next))
    }

    /// Adds sessions after `after`; returns the next chunk's cursor if the chunk filled.
    fn fill_sessions(
        &self,
        fill: &mut Fill,
        mut after: Option<ClientId>,
    ) -> Result<Option<Bytes>, StoreError> {
        loop {
            let batch = self.read.sessions_after(after, IMAGE_BATCH)?;
            let done = batch.len() < IMAGE_BATCH;
            for (client, session) in batch {
                if !fill.admits(session_bytes(&session)) {
                    let last = after.expect("a full chunk holds a session");
                    return Ok(Some(tagged(CURSOR_SESSIONS, &last.0.to_be_bytes())));
                }
                after = Some(client);
                fill.chunk.sessions.push((client, session));
            }
            if done {
                return Ok(None);
            }
        }
    }

    /// Adds keys after `after`; returns the next chunk's cursor if the chunk filled.
    fn fill_rows(
        &self,
        fill: &mut Fill,
        mut after: Option<Bytes>,
    ) -> Result<Option<Bytes>, StoreError> {
        loop {
            let batch = self.read.rows_after(after.as_deref(), IMAGE_BATCH)?;
            let done = batch.len() < IMAGE_BATCH;
            for (key, version) in batch {
                // Encoded: two length prefixes and two revisions of 8 bytes each.
                if !fill.admits(key.len() + version.value.len() + 32) {
                    let next = match &after {
                        Some(last) => tagged(CURSOR_KEYS, last),
                        None => tagged(CURSOR_KEYS_START, &[]),
                    };
                    return Ok(Some(next));
                }
                after = Some(key.clone());
                fill.chunk.rows.push((key, version));
            }
            if done {
                return Ok(None);
            }
        }
    }
}

impl<R: ImageRead> SnapshotSource for Image<R> {
    fn index(&self) -> LogIndex {
        self.applied
    }

    fn chunk(
        &self,
        cursor: &[u8],
        bytes_max: usize,
    ) -> Result<(Bytes, Option<Bytes>), SnapshotReadError> {
        let (chunk, next) = self
            .read_chunk(cursor, bytes_max)
            .map_err(|error| SnapshotReadError(error.0))?;
        let data = crate::wire::unframed::encode(&chunk)
            .map_err(|error| SnapshotReadError(error.to_string()))?;
        Ok((Bytes::from(data), next))
    }
}

/// One group's state in a [`MemoryMachineStore`].
#[derive(Clone, Debug, Default)]
struct MemoryGroup {
    applied: LogIndex,
    clock: WallMillis,
    rows: BTreeMap<Bytes, Versioned>,
    sessions: BTreeMap<ClientId, Session>,
    staging: Option<Box<MemoryGroup>>,
}

/// A [`MachineStore`] in memory: the simulator's durable image of a node's machines, and
/// the store of tests. [`MemoryMachineStore::commit`] is what a persist makes durable.
#[derive(Debug, Default)]
pub struct MemoryMachineStore {
    groups: Mutex<BTreeMap<GroupId, MemoryGroup>>,
}

impl MemoryMachineStore {
    pub fn new() -> MemoryMachineStore {
        MemoryMachineStore::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<GroupId, MemoryGroup>) -> T) -> T {
        let mut groups = self
            .groups
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&mut groups)
    }

    /// Makes `writes` durable, in the order [`MachineWrites`] gives.
    pub fn commit(&self, group: GroupId, writes: &MachineWrites) {
        self.with(|groups| {
            let state = groups.entry(group).or_default();
            for (key, row) in &writes.rows {
                match row {
                    Some(version) => state.rows.insert(key.clone(), version.clone()),
                    None => state.rows.remove(key),
                };
            }
            for (client, session) in &writes.sessions {
                match session {
                    Some(session) => state.sessions.insert(*client, session.clone()),
                    None => state.sessions.remove(client),
                };
            }
            if let Some(applied) = writes.applied {
                state.applied = applied;
            }
            if let Some(clock) = writes.clock {
                state.clock = clock;
            }
            for staged in &writes.staged {
                if staged.restart || state.staging.is_none() {
                    state.staging = Some(Box::default());
                }
                let staging = state.staging.as_mut().expect("set above");
                staging.applied = staged.chunk.applied;
                staging.clock = staged.chunk.clock;
                staging.rows.extend(staged.chunk.rows.iter().cloned());
                staging
                    .sessions
                    .extend(staged.chunk.sessions.iter().cloned());
            }
            if writes.install {
                let staged = state
                    .staging
                    .take()
                    .map(|staged| *staged)
                    .unwrap_or_default();
                *state = staged;
            }
        });
    }

    /// Forgets a group (a dropped keyspace).
    pub fn remove(&self, group: GroupId) {
        self.with(|groups| groups.remove(&group));
    }

    /// How many keys `group` holds durably.
    pub fn len(&self, group: GroupId) -> usize {
        self.with(|groups| groups.get(&group).map_or(0, |state| state.rows.len()))
    }
}

impl MachineStore for MemoryMachineStore {
    fn load(&self, group: GroupId) -> Result<MachineMeta, StoreError> {
        Ok(self.with(|groups| {
            let state = groups.get(&group).cloned().unwrap_or_default();
            MachineMeta {
                applied: state.applied,
                clock: state.clock,
                sessions: state.sessions.into_iter().collect(),
            }
        }))
    }

    fn get(&self, group: GroupId, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        Ok(self.with(|groups| groups.get(&group)?.rows.get(key).cloned()))
    }

    fn scan(
        &self,
        group: GroupId,
        start: &[u8],
        prefix: &[u8],
        limit: usize,
        bytes_max: usize,
    ) -> Result<Vec<(Bytes, Versioned)>, StoreError> {
        Ok(self.with(|groups| {
            let Some(state) = groups.get(&group) else {
                return Vec::new();
            };
            let start = Bound::Included(Bytes::copy_from_slice(start));
            let rows = state
                .rows
                .range((start, Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, version)| (key.clone(), version.clone()));
            take_rows(rows, limit, bytes_max)
        }))
    }

    fn image(&self, group: GroupId) -> Result<Arc<dyn SnapshotSource>, StoreError> {
        let state = self.with(|groups| groups.get(&group).cloned().unwrap_or_default());
        let (applied, clock) = (state.applied, state.clock);
        let read = MemoryImage {
            rows: state.rows,
            sessions: state.sessions,
        };
        Ok(Arc::new(Image {
            applied,
            clock,
            read,
        }))
    }
}

/// A copy of one group's maps, as [`Image`] reads them.
#[derive(Debug)]
struct MemoryImage {
    rows: BTreeMap<Bytes, Versioned>,
    sessions: BTreeMap<ClientId, Session>,
}

impl ImageRead for MemoryImage {
    fn sessions_after(
        &self,
        after: Option<ClientId>,
        limit: usize,
    ) -> Result<Vec<(ClientId, Session)>, StoreError> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(self
            .sessions
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(client, session)| (*client, session.clone()))
            .collect())
    }

    fn rows_after(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Versioned)>, StoreError> {
        let start = after.map_or(Bound::Unbounded, |key| {
            Bound::Excluded(Bytes::copy_from_slice(key))
        });
        Ok(self
            .rows
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(key, version)| (key.clone(), version.clone()))
            .collect())
    }
}
