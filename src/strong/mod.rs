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
//! [`MachineStore`] (on disk in the node); a revision is the log index of the change. Every
//! command carries a client id, a sequence number and the client's lowest unanswered seq, and
//! the machine keeps per client session the results of the writes the client has not
//! acknowledged, so a retried write applies once and returns its first result, with any
//! number of writes in flight (Raft thesis §6.3). Sessions expire by a clock agreed through
//! the log and are never evicted to make room. Reads through the log (gets, scans) need no
//! at-most-once and leave the session alone. A scan answers one page,
//! bounded by its limit and by [`SCAN_BYTES_MAX`], and says whether more keys follow the
//! page's last key. Apply is deterministic: the same entries give the same map and the same
//! results on every replica, including the errors (size limits, session refusals), which is why they
//! are results.

pub mod command;
pub mod machine;
pub mod replica;
pub mod sessions;
pub mod store;
pub mod twophase;

pub use command::{
    ClientId, Command, CommandError, Compare, Field, KEY_BYTES_MAX, Outcome, Request,
    SCAN_BYTES_MAX, SCAN_LIMIT_MAX, Session, TXN_BYTES_MAX, TXN_OPS_MAX, TxnOp, TxnPart,
    VALUE_BYTES_MAX, Versioned, result_bytes, scan_entry_bytes, validate,
};
#[cfg(feature = "sim-bugs")]
pub use machine::MachineBug;
pub use machine::{
    ApplyError, Change, MachineConfig, MalformedEntry, ReadFailure, Response, StrongMachine,
};
pub use replica::{
    Answer, Applied, ApplyFault, BootError, CONFIRMED_READS_MAX, Completion, DurableState,
    ReadMode, Replica, ReplicaConfig, ReplicaReady,
};
pub use sessions::{
    SESSION_BYTES_MAX_DEFAULT, SESSION_RESULT_BYTES_MAX, SESSION_TIMEOUT_DEFAULT,
    SESSIONS_MAX_DEFAULT, UNACKED_RESULTS_MAX,
};
pub use store::{MachineStore, MachineWrites, MemoryMachineStore, StoreError};
pub use twophase::{
    Decision, Intent, Part, Resolution, StepOutcome, TxnId, TxnRecord, TxnState, TxnStep,
};
