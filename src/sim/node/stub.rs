//! TEMPORARY: the announced `node::core` API, so the harness type-checks before it lands.
#![allow(dead_code, unused_variables, missing_docs)]

use crate::eventual;
use crate::protocol::admin::{FromNode, NodeStatus, ToNode};
use crate::storage::{self, Batch, StorageError, Store};
use crate::types::{GroupId, Instant, KeyspaceId, NodeId, WallMillis};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub use crate::node::PeerMessage;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyTo(pub u64);

#[cfg(feature = "sim-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeBug {
    LeaseReadStale,
    DropKeepsRows,
}

#[cfg(feature = "sim-bugs")]
impl NodeBug {
    pub const NAMES: &'static [&'static str] = &["node-lease-read-stale", "node-drop-keeps-rows"];
    pub fn from_name(name: &str) -> Option<NodeBug> {
        match name {
            "node-lease-read-stale" => Some(NodeBug::LeaseReadStale),
            "node-drop-keeps-rows" => Some(NodeBug::DropKeepsRows),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub id: NodeId,
    pub address: String,
    pub initial_cluster: BTreeMap<NodeId, String>,
    pub election_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub lease_drift_max: Duration,
    pub request_wait_max: Duration,
    pub compact_every: u64,
    pub learner_lag_max: u64,
    #[cfg(feature = "sim-bugs")]
    pub bug: Option<NodeBug>,
}

impl CoreConfig {
    pub fn new(id: NodeId, address: String, initial_cluster: BTreeMap<NodeId, String>) -> CoreConfig {
        todo!()
    }
}

pub trait Durable {
    fn raft_restore(&self, group: GroupId) -> Result<crate::raft::RestoredState, StorageError>;
    fn eventual_restore(&self, keyspace: KeyspaceId) -> Result<eventual::RestoredState, StorageError>;
    fn stored_keyspaces(&self) -> Result<BTreeSet<KeyspaceId>, StorageError>;
}

impl Durable for Store {
    fn raft_restore(&self, group: GroupId) -> Result<crate::raft::RestoredState, StorageError> {
        todo!()
    }
    fn eventual_restore(&self, keyspace: KeyspaceId) -> Result<eventual::RestoredState, StorageError> {
        todo!()
    }
    fn stored_keyspaces(&self) -> Result<BTreeSet<KeyspaceId>, StorageError> {
        todo!()
    }
}

pub struct Transmit {
    pub to: NodeId,
    pub message: PeerMessage,
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("storage")]
    Storage(#[from] StorageError),
    #[error("invariant")]
    Invariant { group: GroupId, fault: crate::strong::ApplyFault },
    #[error("boot {0}")]
    Boot(String),
}

pub struct NodeCore;

impl NodeCore {
    pub fn boot(config: CoreConfig, durable: Arc<dyn Durable + Send + Sync>, seed: u64, now: Instant) -> Result<NodeCore, CoreError> { todo!() }
    pub fn handle_peer(&mut self, now: Instant, wall: WallMillis, from: NodeId, message: PeerMessage) { todo!() }
    pub fn handle_client(&mut self, now: Instant, wall: WallMillis, reply: ReplyTo, request: ToNode) { todo!() }
    pub fn handle_timeout(&mut self, now: Instant, wall: WallMillis) { todo!() }
    pub fn poll_timeout(&self, now: Instant) -> Instant { todo!() }
    pub fn poll_persist(&mut self) -> Result<Option<Batch>, CoreError> { todo!() }
    pub fn persisted(&mut self, now: Instant, wall: WallMillis) -> Result<(), CoreError> { todo!() }
    pub fn poll_transmit(&mut self) -> Option<Transmit> { todo!() }
    pub fn poll_answer(&mut self) -> Option<(ReplyTo, FromNode)> { todo!() }
    pub fn waiting(&self) -> usize { todo!() }
    pub fn status(&self, now: Instant) -> NodeStatus { todo!() }
    pub fn members(&self) -> &BTreeMap<NodeId, String> { todo!() }
}
