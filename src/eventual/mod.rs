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
//! - On restart, pass everything persisted as [`RestoredState`]
//!   ([`RestoredState::apply`] shows how a batch updates the image). Pending writes that
//!   were not persisted are lost and were never acknowledged.
//!
//! # Time
//!
//! `now` is the node's monotonic clock (round timer, deadlines, liveness). `wall` is the
//! wall clock, used only by the HLC of `lww` keyspaces; it may jump either way.

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
//! - [`AntiEntropy::check_invariants`] is O(keys + Merkle size); each engine holds a dense
//!   Merkle tree of 69,905 hashes (~560 KB).

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
pub mod sync;
pub mod value;
mod writes;

#[cfg(feature = "sim-bugs")]
pub use config::PlantedBug;
pub use config::{EngineConfig, ROUND_BYTES_MIN};
pub use engine::{AntiEntropy, EngineStats, SessionSummary};
pub use error::{ConfigError, ReadError, WriteError};
pub use hlc::HlcTimestamp;
pub use levels::{Event, ReadLevel, RequestId, SessionToken, WriteLevel};
pub use liveness::Liveness;
pub use message::{DurableMeta, GossipMessage, KeyEntry, PersistBatch, PersistId, RestoredState};
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

const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX < crate::wire::FRAME_BYTES_MAX);
const _: () = assert!(EVENTS_MAX > EVENTS_UNDRAINED_MAX + WRITES_PENDING_MAX + READS_PENDING_MAX);

#[cfg(test)]
mod tests;
