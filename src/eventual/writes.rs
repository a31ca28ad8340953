//! The write path after `local_write`: install once persisted, push the delta, count
//! persisted-acks for `quorum` / `all`, and fail writes whose acks do not come in time.

use super::engine::AntiEntropy;
use super::error::WriteError;
use super::hash::key_hash;
use super::levels::{Event, SessionToken, WriteLevel};
use super::liveness::Liveness;
use super::message::{GossipMessage, KeyEntry};
use super::store::StoredKey;
use super::value::{ApplyError, KeyState};
use super::{
    DELTA_BYTES_MAX, EVENTS_UNDRAINED_MAX, KEY_BYTES_MAX, KEY_STATE_BYTES_MAX, VALUE_BYTES_MAX,
    WRITES_PENDING_MAX,
};
use crate::types::{Instant, NodeId};
use bytes::Bytes;

/// The write error for a local write its key's state refused. `check_write` compared the
/// operation's type with the keyspace's first, so a wrong type here is a bug.
pub(super) fn refused_apply(error: ApplyError) -> WriteError {
    match error {
        ApplyError::WrongType(wrong) => {
            panic!("invariant: the operation's type was checked against the keyspace: {wrong}")
        }
        ApplyError::CounterOverflow { value, by } => WriteError::CounterOverflow { value, by },
        ApplyError::CounterExhausted { by } => WriteError::CounterExhausted { by },
    }
}

impl AntiEntropy {
    pub(super) fn check_write(&self, key: &Bytes, op: &super::value::Op) -> Result<(), WriteError> {
        use super::value::Op;
        if op.value_type() != self.config.value_type {
            return Err(WriteError::WrongType {
                expected: self.config.value_type,
                got: op.value_type(),
            });
        }
        if key.len() > KEY_BYTES_MAX {
            return Err(WriteError::KeyTooLarge {
                bytes: key.len(),
                bytes_max: KEY_BYTES_MAX,
            });
        }
        let value_bytes = match op {
            Op::LwwPut(value)
            | Op::MvPut { value, .. }
            | Op::SetAdd(value)
            | Op::SetRemove { member: value, .. } => value.len(),
            Op::LwwDelete | Op::MvDelete { .. } | Op::CounterAdd(_) => 0,
        };
        if value_bytes > VALUE_BYTES_MAX {
            return Err(WriteError::ValueTooLarge {
                bytes: value_bytes,
                bytes_max: VALUE_BYTES_MAX,
            });
        }
        if let Op::MvPut {
            context: Some(context),
            ..
        }
        | Op::MvDelete {
            context: Some(context),
        }
        | Op::SetRemove {
            seen: Some(context),
            ..
        } = op
        {
            self.check_context(context)?;
        }
        if self.events.len() >= EVENTS_UNDRAINED_MAX {
            return Err(WriteError::Backpressure {
                pending: self.events.len(),
                pending_max: EVENTS_UNDRAINED_MAX,
            });
        }
        if self.writes.len() >= WRITES_PENDING_MAX {
            return Err(WriteError::Backpressure {
                pending: self.writes.len(),
                pending_max: WRITES_PENDING_MAX,
            });
        }
        Ok(())
    }

    /// Refuses a context that names a write this node has not seen: its own writes up to its
    /// counter, another node's up to the highest dot it has merged or a peer has reported.
    fn check_context(&self, context: &super::value::ReadContext) -> Result<(), WriteError> {
        for dot in context.0.iter() {
            let node = *dot.actor;
            let seen = if node == self.config.node {
                self.seq
            } else {
                let reported = self.peer_knowledge.values().map(|vector| vector.get(&node));
                reported.fold(self.knowledge.highest_seen(node), u64::max)
            };
            if dot.counter > seen {
                return Err(WriteError::ContextAhead {
                    node,
                    counter: dot.counter,
                    seen,
                });
            }
        }
        Ok(())
    }

    /// Refuses a write that grows the key's state past `KEY_STATE_BYTES_MAX`. One that does
    /// not grow it passes even above the limit (merges may have put it there), so deletes
    /// and removes can always shrink a key back into range.
    pub(super) fn check_state_size(before: &KeyState, after: &KeyState) -> Result<(), WriteError> {
        let bytes = after.encoded_len();
        if bytes > KEY_STATE_BYTES_MAX && bytes > before.encoded_len() {
            return Err(WriteError::StateTooLarge {
                bytes,
                bytes_max: KEY_STATE_BYTES_MAX,
            });
        }
        Ok(())
    }

    pub(super) fn install_write(&mut self, now: Instant, key: Bytes, seq: u64, state: KeyState) {
        let old = self.stored_row(&key);
        let merged = match &old {
            Some(old) => {
                let mut merged = old.state.clone();
                merged
                    .merge(state)
                    .expect("invariant: one value type per keyspace");
                merged
            }
            None => state,
        };
        // The row a batch already carried for this state saves hashing it again.
        let carried = self
            .overlay
            .get(&key)
            .and_then(|overlay| overlay.carried.as_ref())
            .filter(|(_, row)| row.state == merged)
            .map(|(_, row)| row.clone());
        let row = carried.unwrap_or_else(|| StoredKey::new(key_hash(&key), merged.clone()));
        self.set_row(key.clone(), old, row, true);
        if let Some(overlay) = self.overlay.get_mut(&key) {
            overlay.pending -= 1;
            if overlay.pending == 0 {
                let overlay = self.overlay.remove(&key).expect("invariant: just seen");
                self.settle(&key, overlay);
            }
        }
        let Some(write) = self.writes.get_mut(&seq) else {
            return;
        };
        write.acked.insert(self.config.node);
        write.deadline = Some(now + self.config.request_timeout);
        let level = write.level;
        let token = SessionToken {
            node: self.config.node,
            seq,
        };
        self.push_delta(now, key, merged, token, level != WriteLevel::Local);
        self.check_write_done(seq);
    }

    /// The last pending write on `key` is installed. The store holds the overlay's state as
    /// of the batch that last carried it; if that is exactly the installed row, the fresh
    /// row may go once that batch is persisted, else the next batch writes the key again.
    fn settle(&mut self, key: &Bytes, overlay: super::engine::Overlay) {
        if self.dirty.contains(key) {
            return; // The next batch writes the installed row anyway.
        }
        let at = (super::hash::key_hash(key), key.clone());
        match (overlay.carried, self.fresh.get_mut(&at)) {
            (Some((batch, carried)), Some(fresh)) if fresh.row.as_ref() == Some(&carried) => {
                fresh.carried_by = Some(batch);
            }
            _ => {
                self.dirty.insert(key.clone());
            }
        }
    }

    /// Pushes a just-persisted write's state: to every peer not believed down, or to every
    /// peer when the write waits for acknowledgements.
    pub(super) fn push_delta(
        &mut self,
        now: Instant,
        key: Bytes,
        state: KeyState,
        token: SessionToken,
        ack_requested: bool,
    ) {
        let Some(bytes) = self.entry_bytes_to_ship(&key, &state) else {
            return; // Too large for any message: see "Large states".
        };
        if !ack_requested && bytes > DELTA_BYTES_MAX {
            return; // Anti-entropy carries large states within its byte budget.
        }
        let targets: Vec<NodeId> = self
            .peers
            .iter()
            .copied()
            .filter(|peer| ack_requested || self.liveness.of(*peer, now) != Liveness::Down)
            .collect();
        for peer in targets {
            let entry = KeyEntry {
                key: key.clone(),
                state: state.clone(),
            };
            self.send_delta(
                peer,
                GossipMessage::Delta {
                    entry,
                    token,
                    ack_requested,
                },
            );
        }
    }

    pub(super) fn needed_acks(&self, level: WriteLevel) -> usize {
        match level {
            WriteLevel::Local => 1,
            WriteLevel::Quorum => self.config.quorum(),
            WriteLevel::All => self.config.members.len(),
        }
    }

    pub(super) fn check_write_done(&mut self, seq: u64) {
        let Some(write) = self.writes.get(&seq) else {
            return;
        };
        let needed = self.needed_acks(write.level);
        if write.acked.len() >= needed {
            let write = self.writes.remove(&seq).expect("invariant: just found");
            let token = SessionToken {
                node: self.config.node,
                seq,
            };
            let acks = write.acked.len();
            self.push_event(Event::WriteAcked {
                id: write.id,
                token,
                acks,
                stamp: write.stamp,
            });
        }
    }

    pub(super) fn handle_delta_ack(&mut self, _now: Instant, from: NodeId, token: SessionToken) {
        if token.node != self.config.node {
            return;
        }
        // An ack counts only once this node persisted the write itself (acked is non-empty).
        if let Some(write) = self.writes.get_mut(&token.seq)
            && !write.acked.is_empty()
        {
            write.acked.insert(from);
        }
        self.check_write_done(token.seq);
    }

    pub(super) fn expire_writes(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .writes
            .iter()
            .filter(|(_, write)| write.deadline.is_some_and(|deadline| now >= deadline))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            let write = self.writes.remove(&seq).expect("invariant: just listed");
            let needed = self.needed_acks(write.level);
            let error = WriteError::QuorumNotReached {
                acked: write.acked.len(),
                needed,
            };
            let token = SessionToken {
                node: self.config.node,
                seq,
            };
            self.push_event(Event::WriteFailed {
                id: write.id,
                token,
                stamp: write.stamp,
                error,
            });
        }
    }
}
