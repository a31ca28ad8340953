//! Session and quorum reads.
//!
//! A session read waits until this node has seen the token's write (checked after every
//! message and every persisted batch), then reads locally. A quorum read asks every peer for
//! its state of the key, merges this node's and the first replies until a majority answered,
//! answers, and then repairs: the merged state is merged here and sent to every replier
//! whose state differed.

use super::engine::{AntiEntropy, Merged};
use super::error::ReadError;
use super::levels::{Event, RequestId, SessionToken};
use super::message::{GossipMessage, KeyEntry};
use super::value::KeyState;
use crate::types::{Instant, NodeId};
use bytes::Bytes;
use std::collections::BTreeMap;

/// A read waiting for its token or its quorum.
#[derive(Clone, Debug)]
pub(super) enum PendingRead {
    Session {
        id: RequestId,
        key: Bytes,
        token: SessionToken,
        since: Instant,
        deadline: Instant,
    },
    Quorum {
        id: RequestId,
        key: Bytes,
        replies: BTreeMap<NodeId, Option<KeyState>>,
        deadline: Instant,
    },
}

impl PendingRead {
    pub(super) fn deadline(&self) -> Instant {
        match self {
            PendingRead::Session { deadline, .. } | PendingRead::Quorum { deadline, .. } => {
                *deadline
            }
        }
    }
}

impl AntiEntropy {
    pub(super) fn start_session_read(
        &mut self,
        now: Instant,
        id: RequestId,
        key: Bytes,
        token: SessionToken,
    ) {
        if self.knowledge.has_seen(token) {
            let value = self.value(&key);
            self.push_event(Event::ReadDone { id, key, value });
            return;
        }
        let deadline = now + self.config.session_wait_max;
        let read = self.next_read_number();
        self.reads.insert(
            read,
            PendingRead::Session {
                id,
                key,
                token,
                since: now,
                deadline,
            },
        );
    }

    pub(super) fn start_quorum_read(&mut self, now: Instant, id: RequestId, key: Bytes) {
        let read = self.next_read_number();
        let deadline = now + self.config.request_timeout;
        self.reads.insert(
            read,
            PendingRead::Quorum {
                id,
                key: key.clone(),
                replies: BTreeMap::new(),
                deadline,
            },
        );
        for peer in self.peers.clone() {
            self.send(
                peer,
                GossipMessage::ReadRequest {
                    read,
                    key: key.clone(),
                },
            );
        }
        self.try_finish_quorum_read(read);
    }

    fn next_read_number(&mut self) -> u64 {
        let read = self.next_read;
        self.next_read += 1;
        read
    }

    pub(super) fn handle_read_request(&mut self, from: NodeId, read: u64, key: Bytes) {
        if key.len() > super::KEY_BYTES_MAX {
            return;
        }
        let state = self.stored(&key);
        // Too large to send: no answer (an empty one would claim this node holds nothing).
        if let Some(held) = &state
            && self.entry_bytes_to_ship(&key, held).is_none()
        {
            return;
        }
        self.send(from, GossipMessage::ReadReply { read, key, state });
    }

    pub(super) fn handle_read_reply(
        &mut self,
        _now: Instant,
        from: NodeId,
        read: u64,
        key: Bytes,
        state: Option<KeyState>,
    ) {
        let value_type = self.config.value_type;
        let Some(PendingRead::Quorum { key: wanted, .. }) = self.reads.get(&read) else {
            return;
        };
        if *wanted != key || state.as_ref().is_some_and(|s| s.value_type() != value_type) {
            return;
        }
        // A state this node refuses to merge is not served either: the peer counts as
        // holding nothing newer.
        let state = state.filter(|state| !self.stamped_too_far_ahead(state));
        let Some(PendingRead::Quorum { replies, .. }) = self.reads.get_mut(&read) else {
            return;
        };
        replies.insert(from, state);
        self.try_finish_quorum_read(read);
    }

    fn try_finish_quorum_read(&mut self, read: u64) {
        let quorum = self.config.quorum();
        let Some(PendingRead::Quorum { replies, .. }) = self.reads.get(&read) else {
            return;
        };
        if replies.len() + 1 < quorum {
            return;
        }
        let Some(PendingRead::Quorum {
            id, key, replies, ..
        }) = self.reads.remove(&read)
        else {
            unreachable!("matched just above");
        };
        let mut merged = self
            .stored(&key)
            .unwrap_or_else(|| KeyState::new(self.config.value_type));
        for state in replies.values().flatten() {
            let _ = merged.merge(state.clone());
        }
        self.push_event(Event::ReadDone {
            id,
            key: key.clone(),
            value: merged.read(),
        });
        if merged.context.is_empty() {
            return; // Nobody holds anything: nothing to repair.
        }
        if self.merge_remote(key.clone(), merged.clone(), false) == Merged::Changed {
            self.stats.keys_repaired += 1;
        }
        let stale: Vec<NodeId> = replies
            .into_iter()
            .filter(|(_, state)| state.as_ref() != Some(&merged))
            .map(|(peer, _)| peer)
            .collect();
        if stale.is_empty() || self.entry_bytes_to_ship(&key, &merged).is_none() {
            return;
        }
        for peer in stale {
            let entry = KeyEntry {
                key: key.clone(),
                state: merged.clone(),
            };
            self.send(peer, GossipMessage::Repair { entry });
        }
    }

    /// Serves the session reads whose tokens have arrived.
    pub(super) fn recheck_session_reads(&mut self) {
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, read)| matches!(read, PendingRead::Session { token, .. } if self.knowledge.has_seen(*token)))
            .map(|(number, _)| *number)
            .collect();
        for number in ready {
            if let Some(PendingRead::Session { id, key, .. }) = self.reads.remove(&number) {
                let value = self.value(&key);
                self.push_event(Event::ReadDone { id, key, value });
            }
        }
    }

    pub(super) fn expire_reads(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, read)| now >= read.deadline())
            .map(|(number, _)| *number)
            .collect();
        let quorum = self.config.quorum();
        for number in expired {
            let error = match self.reads.remove(&number) {
                Some(PendingRead::Session {
                    id, token, since, ..
                }) => (
                    id,
                    ReadError::SessionTimeout {
                        token,
                        waited: now - since,
                    },
                ),
                Some(PendingRead::Quorum { id, replies, .. }) => (
                    id,
                    ReadError::QuorumNotReached {
                        answered: replies.len() + 1,
                        needed: quorum,
                    },
                ),
                None => continue,
            };
            self.push_event(Event::ReadFailed {
                id: error.0,
                error: error.1,
            });
        }
    }
}
