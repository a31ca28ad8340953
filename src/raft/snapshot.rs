//! Sending a snapshot to a follower behind the log's first index, in chunks of at most
//! `snapshot_chunk_bytes`, one chunk in flight at a time (resent on each heartbeat until
//! acknowledged), and assembling and installing it on the follower.

use super::message::{RaftMessage, Snapshot, SnapshotMeta};
use super::node::RaftNode;
use super::progress::ProgressState;
use super::ready::Role;
use crate::types::{LogIndex, NodeId};
use bytes::Bytes;

/// The largest snapshot a follower will assemble; a larger announcement is refused.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;

/// A snapshot being received. Invariant: `data.len() <= total_bytes <= SNAPSHOT_BYTES_MAX`.
#[derive(Debug)]
pub(crate) struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_bytes: u64,
    data: Vec<u8>,
}

impl RaftNode {
    /// Leader: the follower needs the snapshot; start sending it from the first byte.
    pub(crate) fn start_snapshot(&mut self, peer: NodeId) {
        let Some(index) = self.snapshot.as_ref().map(|s| s.meta.index) else {
            return;
        };
        let Some(progress) = self.progress_mut(peer) else {
            return;
        };
        progress.state = ProgressState::Snapshot {
            index,
            offset: 0,
            chunk_outstanding: false,
        };
        self.send_snapshot_chunk(peer);
    }

    /// Leader: sends the chunk at the follower's current offset.
    fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let Some(snapshot) = self.snapshot.clone() else {
            return;
        };
        let chunk_bytes = self.config.snapshot_chunk_bytes as u64;
        let term = self.term;
        let Some(progress) = self.progress_mut(peer) else {
            return;
        };
        let ProgressState::Snapshot {
            index,
            offset,
            chunk_outstanding,
        } = &mut progress.state
        else {
            return;
        };
        if *index != snapshot.meta.index {
            // The leader compacted again meanwhile: send the newer snapshot from the start.
            *index = snapshot.meta.index;
            *offset = 0;
        }
        *chunk_outstanding = true;
        let total_bytes = snapshot.data.len() as u64;
        let start = (*offset).min(total_bytes);
        let end = (start + chunk_bytes).min(total_bytes);
        let data = snapshot.data.slice(start as usize..end as usize);
        let msg = RaftMessage::InstallSnapshot {
            term,
            meta: snapshot.meta,
            offset: start,
            data,
            total_bytes,
        };
        self.send(peer, msg);
    }

    /// Leader: on each heartbeat, resend the outstanding chunk to every follower in
    /// snapshot mode (the previous one or its answer may have been lost).
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
        for peer in peers {
            self.send_snapshot_chunk(peer);
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
            index,
            offset,
            chunk_outstanding,
        } = &mut progress.state
        else {
            return;
        };
        if *index != snapshot_index {
            return;
        }
        *offset = next_offset;
        *chunk_outstanding = false;
        self.send_snapshot_chunk(from);
    }

    /// Follower: one chunk arrived.
    pub(crate) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        total_bytes: u64,
    ) {
        self.follow(from);
        let term = self.term;
        let snapshot_index = meta.index;
        if self.already_covers(&meta) {
            self.incoming_snapshot = None;
            let msg = RaftMessage::SnapshotResponse {
                term,
                snapshot_index,
                next_offset: total_bytes,
                done: true,
            };
            return self.send_after_persist(from, msg);
        }
        if total_bytes > SNAPSHOT_BYTES_MAX {
            return;
        }
        let expected = self.accept_chunk(meta, offset, &data, total_bytes);
        let complete = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.data.len() as u64 == s.total_bytes);
        if complete {
            self.install_incoming();
            let msg = RaftMessage::SnapshotResponse {
                term,
                snapshot_index,
                next_offset: total_bytes,
                done: true,
            };
            return self.send_after_persist(from, msg);
        }
        self.send(
            from,
            RaftMessage::SnapshotResponse {
                term,
                snapshot_index,
                next_offset: expected,
                done: false,
            },
        );
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

    /// Adds the chunk if it is the next one; returns the offset we expect next.
    fn accept_chunk(
        &mut self,
        meta: SnapshotMeta,
        offset: u64,
        data: &[u8],
        total_bytes: u64,
    ) -> u64 {
        let same = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.meta == meta && s.total_bytes == total_bytes);
        if !same {
            if offset != 0 {
                self.incoming_snapshot = None;
                return 0;
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta,
                total_bytes,
                data: Vec::new(),
            });
        }
        let incoming = self.incoming_snapshot.as_mut().expect("set above");
        let have = incoming.data.len() as u64;
        let fits = have + data.len() as u64 <= incoming.total_bytes;
        if offset == have && fits {
            incoming.data.extend_from_slice(data);
        }
        incoming.data.len() as u64
    }

    /// Replaces log, membership and commit index with the assembled snapshot, and hands it
    /// to the shell in the next `Ready`.
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
        let snapshot = Snapshot {
            meta,
            data: Bytes::from(incoming.data),
        };
        self.snapshot = Some(snapshot.clone());
        self.outbox.snapshot = Some(snapshot);
    }
}
