//! capdial: a replicated key-value database where each keyspace picks its place on the CAP dial.
//!
//! A `strong` keyspace is replicated by Raft ([`raft`], with its state machine in [`strong`]);
//! an `eventual` keyspace holds CRDT values spread by gossip and anti-entropy ([`eventual`]).
//! Both engines are sans-IO state machines: they take messages, timeouts and the current time,
//! and hand back what to persist, send and apply. That is what lets the deterministic
//! simulator ([`sim`]) drive them from one seed and check them on every step.

pub mod backup;
pub mod cli;
pub mod client;
pub mod eventual;
pub mod local;
pub mod net;
pub mod node;
pub mod paxos;
pub mod protocol;
pub mod raft;
pub mod rng;
pub mod sim;
pub mod storage;
pub mod strong;
pub mod txn;
pub mod types;
pub mod wire;

pub use client::{Client, ClientOptions};
pub use local::LocalCluster;
