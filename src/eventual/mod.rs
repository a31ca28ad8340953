//! Eventual keyspaces: CRDT values replicated by delta push and Merkle anti-entropy, as a
//! sans-IO state machine ([`AntiEntropy`], one per node and keyspace).
//!
//! # What it does
//!
//! Every node accepts writes. A write is applied locally, persisted, acknowledged, and its
//! key's new state is pushed to the peers ([`GossipMessage::Delta`]). Deltas are full key
//! states of `crdts` types ([`value`]), so losing, duplicating or reordering them is harmless.
//! Whatever deltas miss, anti-entropy repairs: each round a node compares Merkle trees
//! ([`merkle`]) with one peer, descends only into differing branches and exchanges the states
//! of differing keys ([`sync`]). Write levels `quorum` / `all` wait for peers to persist the
//! delta; read levels `session` / `quorum` wait for a token or a majority (`reads.rs`).
//! Tombstones are collected only once causally stable ([`gc`]), so deletes never resurrect.
//!
//! # Calling protocol
//!
//! The engine never reads a clock, a socket, a disk or the process RNG. The shell (the real
//! node or the simulator) owns one engine per (node, keyspace) and drives it:
//!
//! ```text
//!   inputs                                   outputs (drain after every input)
//!   ------                                   -------
//!   local_write(now, wall, id, key, op, lvl) poll_persist()  -> PersistBatch   (1) persist
//!   read(now, id, key, level)                persisted(now, batch.id)          (2) report
//!   handle_message(now, wall, from, msg)     poll_transmit() -> (to, msg)      (3) send
//!   handle_timeout(now, wall)  at poll_timeout()             poll_event() -> Event   (4) reply
//! ```
//!
//! After every input call, loop until all are empty: take `poll_persist` batches, make each
//! durable (one transaction, fsync), call `persisted(id)` in the order polled; send
//! everything `poll_transmit` returns; hand `poll_event` events to clients. Sleep until
//! `poll_timeout` (it is `Instant::ZERO` until the engine has seen a time: call
//! `handle_timeout` then).
//!
//! # The persistence contract
//!
//! - A local write is **acknowledged only after the batch holding it is persisted**: the
//!   write sits in a pending overlay (invisible to reads and to peers) until `persisted`
//!   installs it; only then is `WriteAcked` emitted (level `Local`) and the delta pushed.
//!   So nothing this node's peers or clients ever saw can be lost in a crash, and no write
//!   counter (dot) or `lww` HLC stamp that was ever persisted is reused after a restart:
//!   both high-water marks ride the meta of the batch holding the write (see [`hlc`]).
//! - A delta received with `ack_requested` is **acknowledged to its writer only after the
//!   batch holding it is persisted** (`DeltaAck` goes out from `persisted`).
//! - Each batch carries a [`DurableMeta`] (write counter, HLC, knowledge vector) consistent
//!   with the key states persisted up to it. The engine reports only this *durable*
//!   knowledge to peers, because peers collect tombstones based on it.
//! - Messages from `poll_transmit` may be sent at once; everything that needed durability is
//!   only queued after `persisted`.
//! - Key states live in the store ([`store`]): the engine reads them through a
//!   [`KeyspaceStore`] and keeps only the rows installed since its last persisted batch
//!   (and, while a batch is in flight, the installed rows of the keys it writes: a batch may
//!   carry a local write that is durable but not yet installed). Make a batch durable in the
//!   store the engine reads ([`MemoryStates::commit`] shows what a commit does) before
//!   calling `persisted`. A store read that fails reads as "no row" and sets
//!   [`AntiEntropy::fault`]: the shell must then stop the engine.
//! - On restart, build the engine on the same store: it reads the meta, the summary and the
//!   Merkle leaves, never the keys. Pending writes that
//!   were not persisted are lost and were never acknowledged.
//!
//! # Time
//!
//! `now` is the node's monotonic clock (round timer, deadlines, liveness). `wall` is the
//! wall clock, used only by the HLC of `lww` keyspaces; it may jump either way.

//! # Large states
//!
//! Each operation is bounded (`KEY_BYTES_MAX`, `VALUE_BYTES_MAX`) and so is what local
//! writes may grow a key's state to ([`KEY_STATE_BYTES_MAX`]). Merges are not bounded: a
//! `set` or `mvreg` key grown concurrently on several nodes, each within the bound, merges
//! to the sum. Such a state is still merged, hashed and read normally (hashing never uses the
//! frame limit), but a state whose entry encodes to more than [`ENTRY_BYTES_MAX`] is never
//! sent: delta pushes, anti-entropy replies and pushes, quorum-read replies and read repairs
//! skip it (counted in `EngineStats::states_too_large`) and carry on with everything else.
//! So such a key **cannot converge until it shrinks** (removes and deletes are always
//! accepted; once below the limit it ships again), and a quorum read of it fails with
//! `QuorumNotReached` unless a majority can answer without it. Its Merkle leaf keeps
//! differing, which costs one leaf exchange per session, not a stuck session.
//!
//! # Notes for shells, simulators and checkers
//!
//! - Reads see *installed* state: a local write is invisible (also to `value`) until its
//!   batch is persisted. `Event::WriteFailed { QuorumNotReached }` means the write is
//!   persisted here and keeps spreading: its outcome is indeterminate, not undone.
//! - Compare replicas with [`AntiEntropy::live_entries`] / [`AntiEntropy::state_digest`]
//!   (tombstones excluded: nodes collect them at different times). Merkle roots agree once
//!   every tombstone is collected everywhere, which needs every member up and gossiping.
//! - An `lww` tombstone reads as `value: None` with the delete's `stamp`; once collected, as
//!   `stamp: None`.
//! - `Orswot` and `MVReg` serde bytes are not canonical (hash maps, merge order): compare
//!   states with `==` or [`KeyState::digest`], never by their encoding.
//! - Give each incarnation its own `rng_seed` (request ids start at a seeded point).
//! - [`AntiEntropy::check_invariants`], [`AntiEntropy::entries`] and
//!   [`AntiEntropy::live_entries`] read every row; each engine holds a dense Merkle tree of
//!   69,905 hashes (~560 KB) and at most [`FENCES_MAX`] tombstone barriers.

pub mod backup;
mod config;
mod engine;
mod error;
pub mod gc;
pub mod hash;
pub mod hlc;
mod levels;
pub mod liveness;
pub mod merkle;
mod message;
mod reads;
pub mod store;
pub mod sync;
pub mod value;
mod writes;

#[cfg(feature = "sim-bugs")]
pub use config::PlantedBug;
pub use config::{EngineConfig, ROUND_BYTES_MIN};
pub use engine::{AntiEntropy, EngineStats, SessionSummary};
pub use error::{ConfigError, ReadError, WriteError};
pub use gc::FENCES_MAX;
pub use hlc::HlcTimestamp;
pub use levels::{Event, ReadMode, RequestId, SessionToken, WriteLevel};
pub use liveness::Liveness;
pub use message::{GossipMessage, KeyEntry};
pub use store::{
    DurableMeta, KeyspaceStore, MemoryStates, PersistBatch, PersistId, StateStore, StoreError,
    StoredImage, StoredKey, Summary,
};
pub use value::{Crdt, KeyState, Op, ReadContext, ReadValue, ValueType, WriteStamp};

/// Longest key accepted.
pub const KEY_BYTES_MAX: usize = 4 * 1024;
/// Longest value or set member accepted.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Most members a keyspace may have (per-member vectors stay small).
pub const MEMBERS_MAX: usize = 64;
/// Writes waiting for persistence or acknowledgements.
pub const WRITES_PENDING_MAX: usize = 4096;
/// Reads waiting for a token or a quorum.
pub const READS_PENDING_MAX: usize = 1024;
/// Undrained events beyond which new writes and reads are refused with `Backpressure`.
pub const EVENTS_UNDRAINED_MAX: usize = 1024;
/// Events not yet drained: the undrained limit plus one per pending write and read, the
/// most that can complete before the caller is refused.
pub const EVENTS_MAX: usize = EVENTS_UNDRAINED_MAX + WRITES_PENDING_MAX + READS_PENDING_MAX + 1;
/// Outgoing messages queued; beyond this gossip is dropped (deltas are best-effort).
pub const TRANSMIT_QUEUE_MAX: usize = 64 * 1024;
/// Largest key state pushed as a delta; bigger ones travel only by anti-entropy.
pub const DELTA_BYTES_MAX: usize = 256 * 1024;

/// Largest encoded key state a local write may leave behind. A write that would grow a key's
/// state past it is refused (`WriteError::StateTooLarge`); writes that do not grow it (deletes,
/// removes) are always accepted. Merges can still exceed it: see "Large states" above.
pub const KEY_STATE_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Largest encoded key entry (key + state) any message carries. A larger state is not sent
/// (counted in `EngineStats::states_too_large`) and the rest of the message goes on without it.
pub const ENTRY_BYTES_MAX: usize = 3 * 1024 * 1024;
/// A message carrying several states (anti-entropy) takes another one only while those it
/// holds encode to less than this, so it stays below `ENTRY_BYTES_MAX` more than this.
pub const STATES_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Room in a frame for everything of a message besides its states (hash lists, ids).
const MESSAGE_OVERHEAD_BYTES_MAX: usize = 1024 * 1024;

const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX < crate::wire::FRAME_BYTES_MAX);
// A local write can always hold one maximal value, and every state a local write leaves
// behind (and every delta) fits in one entry, so it can always be shipped.
const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX < KEY_STATE_BYTES_MAX);
const _: () = assert!(8 + KEY_BYTES_MAX + KEY_STATE_BYTES_MAX <= ENTRY_BYTES_MAX);
const _: () = assert!(DELTA_BYTES_MAX <= ENTRY_BYTES_MAX);
// The fullest message: states up to the soft limit, one more entry, and the rest.
const _: () = assert!(
    STATES_BYTES_MAX + ENTRY_BYTES_MAX + MESSAGE_OVERHEAD_BYTES_MAX <= crate::wire::FRAME_BYTES_MAX
);
const _: () = assert!(EVENTS_MAX > EVENTS_UNDRAINED_MAX + WRITES_PENDING_MAX + READS_PENDING_MAX);

#[cfg(test)]
mod tests;
