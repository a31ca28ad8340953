//! The sans-IO leaderless Paxos core: one [`PaxosNode`] per node, every key a linearizable
//! register replicated by its own single-decree-per-change Paxos (CASPaxos, Rystsov 2018).
//!
//! There is no leader and no log. Any node proposes; an operation is a *change function*
//! applied to the key's register: the proposer asks every acceptor to promise a fresh
//! ballot (prepare), takes the register a majority reports under the highest accepted
//! ballot, applies the change (put, delete, cas on the mod revision, or the identity for a
//! read) and asks every acceptor to accept the result under the same ballot. A majority of
//! accepts makes it chosen, and the operation returns. Losing a node costs nothing but its
//! share of the quorum: there is no election pause.
//!
//! The core does no I/O. It never reads a clock, never touches a disk or socket and never
//! uses the process RNG: time comes in as an [`Instant`](crate::types::Instant), randomness
//! (backoffs) from `rng_seed`, and every effect goes out as a [`Ready`].
//!
//! # Calling protocol
//!
//! ```text
//!   inputs                         core                          outputs
//!   propose(now, id, key, op)  ─┐
//!   handle_message(now, env)    ├──> PaxosNode ──> ready() ──> Ready { persist, send, answers }
//!   handle_timeout(now)        ─┘                    ^                 │
//!                                                    └── advance(id) <─┘ (after doing it all)
//! ```
//!
//! * Call `handle_timeout(now)` when `poll_timeout()` is reached (early is harmless).
//! * After any input, call `ready()`. It returns `None` when there is nothing to do **or the
//!   previous `Ready` has not been advanced**: at most one `Ready` is outstanding. Inputs may
//!   arrive in between; their effects go to the next `Ready`.
//! * Messages a node addresses to itself (its proposer to its own acceptor) are in the
//!   `Ready` like any other: the shell hands them back through `handle_message`.
//!
//! # The Ready contract
//!
//! For each `Ready`, in this order:
//! 1. **Persist** every `(key, state)` of `persist` (each replaces that key's stored acceptor
//!    state), then fsync. `messages` may be sent before or during this step.
//! 2. **Send** `persisted_messages` (promises and accepted acks) only once step 1 is
//!    durable: each promises what was persisted. Deliver `answers` to the waiting clients
//!    (any time: an answer rests on a majority's durable acks, not on local state).
//! 3. **`advance(ready.id)`**, then call `ready()` again.
//!
//! The acceptor judges each message against its in-memory state, which may be ahead of the
//! durable one. That is safe: whatever a crash loses from it was never promised to anyone,
//! because every promise that reports it travels in a later (or the same) `Ready`'s
//! `persisted_messages`; a refusal promises nothing and goes at once.
//!
//! # Storage and restart
//!
//! The durable state is one [`AcceptorState`] per key (promised ballot, accepted ballot and
//! register). On restart the shell passes exactly what was durable to [`PaxosNode::new`]
//! (every state held in memory), or an [`AcceptorStore`] to [`PaxosNode::with_store`] (the
//! node reads a key's state the first time it needs it and keeps a bounded cache; the store
//! must show every advanced `Ready`'s persist), with an `incarnation` no earlier start used. Proposer state is volatile: operations in
//! flight at a crash are lost (their clients time out; a write that had sent an accept may
//! still take effect). Ballots carry the incarnation, so a restarted node never reissues a
//! ballot its earlier run used, even though it keeps no ballot counter: the next round is
//! above its own acceptor's promise, and refusals carry any higher round it must pass.
//!
//! Keys are never collected: a deleted key keeps a tombstone register with its version, so
//! versions never go back. (Collecting them safely needs every acceptor to agree the key is
//! dead at one ballot; left for later.)
//!
//! # Revisions
//!
//! A key's register counts the writes applied to it (`version`); every write (put, delete,
//! cas, a failed cas and a delete of an absent key included) raises it by one and returns
//! the new version as its revision; a value carries the version that set it as its
//! `mod_revision`, which cas compares. Revisions are per key: unlike a strong keyspace's log
//! index they are not comparable across keys.
//!
//! # Retries and exactly-once
//!
//! A round that meets refusals from all but less than a quorum, or times out, is retried
//! under a higher ballot after a random backoff that doubles per attempt (`backoff_base`
//! up to `backoff_max`), up to `attempts_max` rounds; then the operation ends with
//! [`OpError::NotApplied`] (no accept ever left) or [`OpError::Unknown`]. A retry must not
//! apply a write twice when an earlier attempt was chosen after all (its acks lost, perhaps
//! overwritten since): each register keeps, per proposing node, the id and answer of that
//! node's last write ([`Register::writers`]), and a node runs one operation per key at a
//! time, so a retry that finds its own id returns the first answer instead of applying again.
//! This covers the proposer's own retries; a *client* resending through another node is a
//! new operation (client sessions are the node layer's).
//!
//! # Reads
//!
//! A read is the identity change: it runs a prepare round and, unless `read_fast_path`
//! answers it sooner, an accept round, so it is linearizable and makes sure the register it
//! returns is chosen. With `read_fast_path`, a read whose promise quorum reports one and the
//! same accepted ballot (a majority accepted it, so it is chosen) or nothing accepted at all
//! answers after one round trip.
//!
//! # Planted bugs (feature `sim-bugs`)
//!
//! [`PlantedBug::AcceptWithoutPromiseQuorum`]: the proposer builds on the first promise it
//! gets instead of a majority's.

mod acceptor;
mod config;
mod message;
mod node;
mod proposer;
mod register;
mod store;

#[cfg(test)]
mod tests;

pub use config::{Config, ConfigError, OpError, PlantedBug, ProposeError};
pub use message::{
    AcceptorState, Ballot, Envelope, KEY_BYTES_MAX, OpId, PaxosMessage, Phase, ProposerId,
    Register, VALUE_BYTES_MAX, Versioned, WRITERS_MAX, WriteOutcome, WriterRecord,
};
pub use node::{Answer, PaxosNode, Ready, ReadyId, Receipt, RequestId};
pub use register::{Operation, Outcome, apply};
pub use store::{AcceptorStore, MemoryAcceptors, StoreError};
