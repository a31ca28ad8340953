//! Sending a snapshot to a follower behind the log's first index, and receiving one.
//!
//! The core never holds a snapshot's bytes. When a follower needs one, the leader asks its
//! shell for an image ([`RaftNode::snapshot_wanted`]); the shell hands it a
//! [`SnapshotSource`]: a point-in-time image of its applied state (a storage read transaction
//! in the node) that the leader reads one chunk of about `snapshot_chunk_bytes` at a time,
//! one chunk in flight per follower (resent on each heartbeat until acknowledged). Once no
//! follower is being sent one, the leader lets the image go (a read transaction held open
//! would keep the store from reusing the pages later writes free). The follower hands each chunk
//! to its shell in [`Ready::snapshot_chunks`](super::Ready::snapshot_chunks) to stage, and
//! acknowledges it once that persist is durable; after the last one it installs the snapshot.
//! So a snapshot of any size moves through a bounded amount of memory on both sides.

use super::message::{RaftMessage, SnapshotChunk, SnapshotMeta};
use super::node::RaftNode;
use super::progress::ProgressState;
use super::ready::Role;
use crate::types::{LogIndex, NodeId};
use bytes::Bytes;
use std::fmt;

/// Why a chunk could not be read from a [`SnapshotSource`].
#[derive(Debug, thiserror::Error)]
#[error("reading a snapshot chunk: {0}")]
pub struct SnapshotReadError(pub String);

/// A point-in-time image of the shell's applied state at [`SnapshotSource::index`], read in
/// chunks (etcd/raft's `Storage::Snapshot`, streamed). Reads are repeatable: the same cursor
/// gives the same chunk for as long as the source lives.
pub trait SnapshotSource: fmt::Debug + Send + Sync {
    /// The log index the image is applied to.
    fn index(&self) -> LogIndex;
    /// The chunk at `cursor` (empty: the first) of about `bytes_max` bytes, and the cursor of
    /// the chunk after it (`None`: this is the last).
    fn chunk(
        &self,
        cursor: &[u8],
        bytes_max: usize,
    ) -> Result<(Bytes, Option<Bytes>), SnapshotReadError>;
}

/// A snapshot that is one byte string in memory, cut at byte offsets: for tests and small
/// state machines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotBytes {
    pub index: LogIndex,
    pub data: Bytes,
}

impl SnapshotSource for SnapshotBytes {
    fn index(&self) -> LogIndex {
        self.index
    }

    fn chunk(
        &self,
        cursor: &[u8],
        bytes_max: usize,
    ) -> Result<(Bytes, Option<Bytes>), SnapshotReadError> {
        let start = match cursor {
            [] => 0,
            bytes => {
                let bytes: [u8; 8] = bytes
                    .try_into()
                    .map_err(|_| SnapshotReadError("not a byte offset".to_string()))?;
                u64::from_be_bytes(bytes) as usize
            }
        };
        let start = start.min(self.data.len());
        let end = start.saturating_add(bytes_max.max(1)).min(self.data.len());
        let next =
            (end < self.data.len()).then(|| Bytes::copy_from_slice(&(end as u64).to_be_bytes()));
        Ok((self.data.slice(start..end), next))
    }
}

/// What a follower does with a chunk.
enum Accept {
    /// Stage it; the offset expected next.
    Take(u64),
    /// Drop it; the offset expected.
    Refuse(u64),
}

/// A snapshot being received: how far the staged stream has got. Only the position is
/// kept; the bytes went to the shell.
#[derive(Debug)]
pub(crate) struct IncomingSnapshot {
    meta: SnapshotMeta,
    received: u64,
}

impl RaftNode {
    /// The metadata a snapshot read from the current source would carry, if the source can
    /// serve a follower (it is at or past the log's start, so the log continues it).
    fn source_meta(&self) -> Option<SnapshotMeta> {
        let index = self.snapshot_source.as_ref()?.index();
        if index > self.log.commit {
            return None;
        }
        let term = self.log.term(index)?;
        Some(SnapshotMeta {
            index,
            term,
            membership: self.members.at(index).clone(),
        })
    }

    /// Leader: the follower needs a snapshot; start sending it from the first byte, or ask
    /// the shell for an image to send it from.
    pub(crate) fn start_snapshot(&mut self, peer: NodeId) {
        let Some(meta) = self.source_meta() else {
            self.snapshot_wanted = true;
            return;
        };
        let Some(progress) = self.progress_mut(peer) else {
            return;
        };
        progress.state = ProgressState::Snapshot {
            meta,
            offset: 0,
            cursor: Bytes::new(),
            sent: None,
        };
        self.send_snapshot_chunk(peer);
    }

    /// Leader: sends the chunk at the follower's current position.
    fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let (Some(source), Some(current)) = (self.snapshot_source.clone(), self.source_meta())
        else {
            return;
        };
        let chunk_bytes = self.config.snapshot_chunk_bytes;
        let term = self.term;
        let Some(progress) = self.progress_mut(peer) else {
            return;
        };
        let ProgressState::Snapshot {
            meta,
            offset,
            cursor,
            sent,
        } = &mut progress.state
        else {
            return;
        };
        if *meta != current {
            // A newer image replaced the one being sent: send it from the start.
            *meta = current;
            *offset = 0;
            *cursor = Bytes::new();
        }
        // A storage error: nothing goes now, the next heartbeat tries again.
        let Ok((data, next)) = source.chunk(cursor, chunk_bytes) else {
            *sent = None;
            return;
        };
        let end = *offset + data.len() as u64;
        let last = next.is_none();
        *sent = Some((end, next));
        let msg = RaftMessage::InstallSnapshot {
            term,
            meta: meta.clone(),
            offset: *offset,
            data,
            last,
        };
        self.send(peer, msg);
    }

    /// Leader: on each heartbeat, resend the outstanding chunk to every follower in
    /// snapshot mode (the previous one or its answer may have been lost).
    /// Lets the image go once nobody is being sent it.
    pub(crate) fn resend_snapshot_chunks(&mut self) {
        let peers: Vec<NodeId> = self
            .leader_state
            .as_ref()
            .map(|l| {
                l.progress
                    .iter()
                    .filter(|(_, p)| matches!(p.state, ProgressState::Snapshot { .. }))
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        if peers.is_empty() && !self.snapshot_wanted {
            self.snapshot_source = None;
        }
        for peer in peers {
            self.send_snapshot_chunk(peer);
        }
    }

    /// Leader: starts a snapshot to every follower the log no longer reaches (an image just
    /// arrived).
    pub(crate) fn start_wanted_snapshots(&mut self) {
        let behind: Vec<NodeId> = self
            .leader_state
            .as_ref()
            .map(|l| {
                l.progress
                    .iter()
                    .filter(|(_, p)| !matches!(p.state, ProgressState::Snapshot { .. }))
                    .filter(|(_, p)| self.log.term(LogIndex(p.next_index.0 - 1)).is_none())
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        for peer in behind {
            self.start_snapshot(peer);
        }
    }

    /// Leader: a follower acknowledged a chunk, or the whole snapshot.
    pub(crate) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: LogIndex,
        next_offset: u64,
        done: bool,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(progress) = self.progress_heard_from(from) else {
            return;
        };
        if done {
            if progress.update_match(snapshot_index.min(last))
                || matches!(progress.state, ProgressState::Snapshot { .. })
            {
                progress.become_probe();
            }
            self.maybe_commit();
            return;
        }
        let ProgressState::Snapshot {
            meta,
            offset,
            cursor,
            sent,
        } = &mut progress.state
        else {
            return;
        };
        if meta.index != snapshot_index {
            return;
        }
        match sent.take() {
            // The chunk in flight is staged: move past it.
            Some((end, Some(next))) if next_offset == end => {
                *offset = end;
                *cursor = next;
            }
            // Not taken yet (or an old answer): the heartbeat resends what is in flight.
            other if next_offset == *offset => {
                *sent = other;
                return;
            }
            // The follower is somewhere we cannot resume from (it lost its staged chunks,
            // or we did): start over. It takes a first chunk as a new start.
            _ => {
                *offset = 0;
                *cursor = Bytes::new();
            }
        }
        self.send_snapshot_chunk(from);
    }

    /// Follower: one chunk arrived.
    pub(crate) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        last: bool,
    ) {
        self.follow(from);
        let term = self.term;
        let snapshot_index = meta.index;
        if self.already_covers(&meta) {
            self.incoming_snapshot = None;
            let msg = RaftMessage::SnapshotResponse {
                term,
                snapshot_index,
                next_offset: offset,
                done: true,
            };
            return self.send_after_persist(from, msg);
        }
        let received = match self.accept_chunk(&meta, offset, &data) {
            Accept::Take(received) => received,
            // Nothing staged, nothing to wait for: say where we are. (Out of order, or a
            // resend of what we have; or an install waiting in this Ready, after which a
            // chunk of another snapshot must not be staged: the leader resends it.)
            Accept::Refuse(expected) => {
                let msg = RaftMessage::SnapshotResponse {
                    term,
                    snapshot_index,
                    next_offset: expected,
                    done: false,
                };
                return self.send(from, msg);
            }
        };
        self.outbox.snapshot_chunks.push(SnapshotChunk {
            meta: meta.clone(),
            offset,
            data,
            last,
        });
        if last {
            self.install_incoming();
        }
        // Acknowledged once staged: a crash before that loses the chunk, and the leader
        // resends it.
        let msg = RaftMessage::SnapshotResponse {
            term,
            snapshot_index,
            next_offset: received,
            done: last,
        };
        self.send_after_persist(from, msg);
    }

    /// Whether our log already holds everything `meta` covers: it is committed here, or we
    /// hold its last entry (then log matching gives us the rest).
    fn already_covers(&mut self, meta: &SnapshotMeta) -> bool {
        if meta.index <= self.log.commit {
            return true;
        }
        if self.log.term(meta.index) == Some(meta.term) {
            // Committed on the leader, and our prefix matches it.
            self.log.commit_to(meta.index);
            return true;
        }
        false
    }

    /// Takes the chunk if it is the next one, or the first of another snapshot.
    fn accept_chunk(&mut self, meta: &SnapshotMeta, offset: u64, data: &[u8]) -> Accept {
        let expected = self.incoming_snapshot.as_ref().map_or(0, |s| s.received);
        let same = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.meta == *meta);
        let Some(end) = offset.checked_add(data.len() as u64) else {
            return Accept::Refuse(expected);
        };
        if self.outbox.snapshot.is_some() {
            return Accept::Refuse(0);
        }
        if same && offset == expected {
            let incoming = self.incoming_snapshot.as_mut().expect("same snapshot");
            incoming.received = end;
            return Accept::Take(end);
        }
        // A first chunk starts over, unless it is a resend of the only one we have.
        let resent_first = same && expected == end;
        if offset == 0 && !resent_first {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                received: end,
            });
            return Accept::Take(end);
        }
        Accept::Refuse(if same { expected } else { 0 })
    }

    /// Replaces log, membership and commit index with the snapshot whose last chunk just
    /// arrived, and tells the shell to install what it staged in the next `Ready`.
    fn install_incoming(&mut self) {
        let incoming = self
            .incoming_snapshot
            .take()
            .expect("install needs a complete snapshot");
        let meta = incoming.meta;
        self.log.install(&meta);
        self.members.reset(meta.index, meta.membership.clone());
        self.handed_commit = meta.index;
        self.applied = self.applied.min(meta.index);
        // The image this node could serve is behind the log now; the shell offers a new one
        // once it has installed the snapshot.
        self.snapshot_source = None;
        self.outbox.snapshot = Some(meta);
    }
}
