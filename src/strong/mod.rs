//! The strong keyspace's state machine: what a Raft group of a `strong` keyspace applies.
//!
//! ```text
//!  client ──Request{client, seq, Command}──▶ validate ──encode──▶ Raft propose
//!                                                                    │ committed, in order
//!  client ◀──Response{result}── StrongMachine::apply(index, bytes) ◀─┘
//!  reads outside the log (ReadIndex / lease / stale) ──▶ StrongMachine::get / scan
//! ```
//!
//! [`Replica`] puts a Raft core and the machine together with the client requests waiting on
//! them: the sans-IO piece both the simulator and the networked node drive.
//!
//! An ordered map from key to (value, create revision, mod revision), kept in a
//! [`MachineStore`] (on disk in the node); a revision is the log index of the change. Every command carries a client id and a sequence number, and the
//! machine keeps per client the last applied seq and its result, so a retried command applies
//! once and returns its first result (Raft thesis §6.3); an older seq is a typed error.
//! Apply is deterministic: the same entries give the same map and the same results on every
//! replica, including the errors (size limits, old seqs), which is why they are results.

pub mod command;
pub mod machine;
pub mod replica;
pub mod store;

pub use command::{
    ClientId, Command, CommandError, Field, KEY_BYTES_MAX, Outcome, Request, SCAN_LIMIT_MAX,
    Session, VALUE_BYTES_MAX, Versioned, validate,
};
#[cfg(feature = "sim-bugs")]
pub use machine::MachineBug;
pub use machine::{
    ApplyError, MachineConfig, MalformedEntry, ReadFailure, Response, SESSIONS_MAX, StrongMachine,
};
pub use replica::{
    Answer, Applied, ApplyFault, BootError, CONFIRMED_READS_MAX, Completion, DurableState,
    ReadMode, Replica, ReplicaConfig, ReplicaReady,
};
pub use store::{MachineStore, MachineWrites, MemoryMachineStore, StoreError};
