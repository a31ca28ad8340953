//! The sans-IO Raft core: one [`RaftNode`] per replica of a Raft group.
//!
//! The core does no I/O. It never reads a clock, never touches a disk or socket and never
//! uses the process RNG: time comes in as an [`Instant`](crate::types::Instant) parameter,
//! randomness from `rng_seed`, and every effect goes out as a [`Ready`] that the caller (the
//! *shell*: the real node, the simulator or a test) carries out and acknowledges.
//!
//! # Calling protocol
//!
//! ```text
//!   inputs                         core                          outputs
//!   handle_message(now, env) ─┐
//!   handle_timeout(now)       ├──> RaftNode ──> ready() ──> Ready { persist, send, apply }
//!   propose / read_index /    │                   ^                 │
//!   lease_read / membership  ─┘                   └── advance(id) <─┘ (after doing it all)
//!   report_applied(index), compact(index), set_snapshot_source(image): the shell's progress
//! ```
//!
//! * Call `handle_timeout(now)` when `poll_timeout()` is reached (early is harmless).
//! * After any input, call `ready()`. It returns `None` when there is nothing to do **or the
//!   previous `Ready` has not been advanced**: at most one `Ready` is outstanding.
//! * Inputs may arrive between `ready()` and `advance()`; their effects go to the next
//!   `Ready`.
//!
//! # The Ready contract
//!
//! For each `Ready`, in this order:
//! 1. **Persist.** Stage `snapshot_chunks` in order (a chunk at offset 0 starts over). If
//!    `snapshot` is set: store its meta, let the staged image replace the state machine and
//!    delete the whole durable log (the snapshot replaces it). If `entries` is non-empty: delete every durable entry at index
//!    `>= entries[0].index` (a conflicting suffix) and append `entries`. Store `hard_state`
//!    if set. Fsync if `must_sync`.
//! 2. **Send.** `messages` may be sent at any time, even before step 1.
//!    `persisted_messages` (votes, vote requests, append and snapshot acks) only after the
//!    persist of step 1 is durable: they promise what was persisted.
//! 3. **Apply.** If `snapshot` is set, the state machine is now the installed image. Then apply
//!    `committed` in order (they follow the snapshot). Serve each `read_states` entry once
//!    the applied index reaches its `index`. Fail the clients in `dropped_proposals` /
//!    `dropped_reads` (a dropped proposal's outcome is *unknown*: it may still commit).
//!    Call `report_applied(index)` as entries are applied (the core uses it for
//!    `stale_read_status` and to bound `compact`). Applying may lag behind `advance`.
//! 4. **`advance(ready.id)`.** Then call `ready()` again: a leader's commit index only moves
//!    once its own entries are persisted (it counts itself by its persisted log).
//!
//! # Storage and restart
//!
//! The core keeps its own in-memory copy of the log since the last snapshot; the shell keeps
//! the durable image that `Ready` describes. On restart the shell builds a
//! [`RestoredState`] from exactly what was durable (hard state, last snapshot, entries after
//! it, and how far its state machine is applied) and calls [`RaftNode::new`]. Whatever a
//! crash lost was never promised to anyone, because promises travel in
//! `persisted_messages`. (The one promise that is not persisted, a follower's heartbeat ack
//! that backs its leader's lease, is covered by the restart blackout described below.)
//! Compaction is the shell's call: once its applied state up to `index` is durable on its
//! own, call `compact(index)`; persist the returned meta, then drop durable entries up to
//! `index` (a restored log may still hold them: they are skipped). The in-memory log only
//! shrinks through compaction, so the shell bounds the core's memory by compacting. A
//! follower the log no longer reaches gets a snapshot streamed from the image the shell
//! offered with `set_snapshot_source` (see `snapshot.rs`): the core never holds its bytes.
//!
//! # Elections
//!
//! Election timeouts are drawn from `[t, 2t)` with `t = election_timeout`. With `pre_vote`
//! a node first asks whether it could win (without raising any term), so a node rejoining
//! from a partition does not disrupt a working leader. A node refuses (pre-)votes while it
//! believes a leader is alive: it leads, it heard from its leader less than `t` ago, or it
//! restarted less than `t` ago (it may have promised a lease before crashing). With
//! `check_quorum` a leader that has not heard from a majority within `t` steps down, so a
//! leader cut off in a minority stops serving writes and reads. A candidate re-sends its vote
//! requests to voters that have not answered every `heartbeat_interval` (they are
//! idempotent), so a lost request does not cost a whole election timeout.
//!
//! # Replication and commit
//!
//! Proposals are appended to the leader's log at once and sent at the next `ready()`, so
//! everything proposed between two `ready()` calls shares appends (each capped by
//! `max_entries_bytes_per_append`). Per follower the leader probes (one append at a time)
//! until the logs match, then pipelines up to `max_inflight_appends` appends. A rejection
//! carries the follower's conflicting term and its first index, so the leader skips a whole
//! term per round trip. Only entries of the leader's own term are committed by counting
//! (Figure 8); each new leader appends a no-op so that happens promptly.
//!
//! # Reads
//!
//! * **ReadIndex** (`read_index` on the leader): the read gets the commit index once the
//!   leader has committed an entry of its term, then waits for a heartbeat round that was
//!   sent after it arrived to be acknowledged by a quorum. All reads registered before a
//!   round share it. The `ReadState` comes in `Ready::read_states`.
//! * **Follower reads** (`read_index` on a follower): the follower asks its leader, which
//!   runs the same ReadIndex and answers with the index; the `ReadState` then appears in the
//!   follower's `Ready`. Unanswered within `t`, the read is dropped with `Timeout`.
//! * **Lease reads** (`lease_read`): when a quorum acknowledges a round sent at `s`, the
//!   leader holds a lease until `s + t - lease_drift_max` on its own clock, because those
//!   voters refuse votes for `t` after hearing from it. While the lease holds, the read
//!   returns the commit index to wait for, with no round trip. Needs `check_quorum`.
//! * **Stale reads** (`stale_read_status`): any node serves its applied state, reporting
//!   how far it lags its known commit index.
//!
//! # Membership
//!
//! Single-server changes (thesis §4.1): `AddLearner`, `PromoteLearner`, `RemoveVoter`,
//! `RemoveLearner`, one at a time. A change **takes effect when appended** (on every node,
//! leader or follower) and is undone if the entry is truncated. Safety: the leader accepts a
//! change only when the previous change is committed **and** it has committed an entry of its
//! own term (the fix for the single-server bug Ongaro described in 2015), so any two
//! consecutive configurations have overlapping majorities. A leader that removes itself keeps
//! leading (not counting itself) until the removal commits, then steps down. Learners receive
//! the log but never vote or campaign.
//!
//! A membership entry carries the configuration it produces, and followers adopt that, not
//! their own base with the change applied: a node that joins a running group (started with
//! no voters) never saw the first configuration, and must neither guess it nor campaign
//! before a leader's entry or snapshot tells it.
//!
//! # Planted bugs (feature `sim-bugs`)
//!
//! [`PlantedBug`] switches on one known mistake through `Config::planted_bug`, so the
//! simulator can prove it catches it: committing an old-term entry by counting (and no
//! start-of-term no-op, as in Figure 8), granting a vote without persisting it, answering
//! ReadIndex without the heartbeat round, and a lease that ignores drift and delay. Each
//! variant's doc says exactly how it misbehaves.

mod config;
mod election;
mod error;
mod log;
mod membership;
mod message;
mod node;
mod progress;
mod read;
mod reads;
mod ready;
mod replication;
mod snapshot;

#[cfg(test)]
mod tests;

pub use config::{
    Config, ENTRIES_BYTES_PER_APPEND_MAX, INFLIGHT_APPENDS_MAX, PlantedBug,
    SNAPSHOT_CHUNK_BYTES_MAX,
};
pub use error::{CompactError, ConfigError, ProposeError, ReadError};
pub use message::{
    AppendOutcome, Entry, EntryKind, Envelope, HardState, Membership, MembershipChange, ProposalId,
    RaftMessage, ReadId, SnapshotChunk, SnapshotMeta, TERM_OR_INDEX_MAX,
};
pub use node::RaftNode;
pub use ready::{ReadState, Ready, ReadyId, RestoredState, Role, StaleStatus, Status};
pub use snapshot::{SnapshotBytes, SnapshotReadError, SnapshotSource};
