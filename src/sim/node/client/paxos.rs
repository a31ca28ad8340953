//! The paxos part of a data client's mix: gets, puts, deletes and cas on a paxos keyspace's
//! keys, recorded in the same [`History`](crate::sim::history::History) as strong keys (keyed
//! `keyspace/key`), so the linearizability checker judges them alike.

use super::workload::strong_key;
use super::{Active, Context, DataClient, STRONG_KEYS, Work};
use crate::protocol::KeyspaceMode;
use crate::protocol::Operation;
use crate::types::LogIndex;
use bytes::Bytes;

impl DataClient {
    /// Whether the active operation is a paxos write that an earlier attempt may have
    /// applied: a paxos keyspace keeps no client sessions, so a resend would be a second
    /// write (a cas that won would be answered as lost), and the operation must end
    /// indeterminate instead.
    pub(super) fn paxos_resend_unsafe(&self, cx: &Context<'_>) -> bool {
        let Some(Active {
            work:
                Work::Strong {
                    write: true,
                    maybe_applied: true,
                    ..
                },
            request,
            ..
        }) = &self.active
        else {
            return false;
        };
        cx.catalog.mode(&request.keyspace) == Some(KeyspaceMode::Paxos)
    }

    /// Draws one operation on paxos keyspace `keyspace`: reads take the one level a paxos
    /// keyspace has (linearizable, the default), writes are put, delete and cas.
    pub(super) fn draw_paxos(&mut self, cx: &mut Context<'_>, keyspace: String) {
        self.stats.strong_ops += 1;
        let key = strong_key(self.rng.below(STRONG_KEYS));
        let roll = self.rng.below(100);
        if roll < 40 {
            let operation = Operation::Get { key: key.clone() };
            return self.start_strong(cx, keyspace, key, operation, None);
        }
        self.written += 1;
        let value = Bytes::from(format!("c{}-v{}", self.index, self.written));
        let operation = match roll {
            40..=69 => Operation::Put {
                key: key.clone(),
                value,
                context: None,
            },
            70..=77 => Operation::Delete {
                key: key.clone(),
                context: None,
            },
            _ => {
                let slot = (keyspace.clone(), key.clone());
                let expected = self.revisions.get(&slot).copied().flatten();
                Operation::Cas {
                    key: key.clone(),
                    expected: expected.map(LogIndex),
                    value: (!self.rng.chance(0.15)).then_some(value),
                }
            }
        };
        self.start_strong(cx, keyspace, key, operation, None);
    }
}
