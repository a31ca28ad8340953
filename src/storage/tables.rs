//! Every redb table of a node's file, with its key and value layout.
//!
//! Values are bincode payloads of [`crate::wire::unframed`]: the network's codec without the
//! frame header and its size limit (a snapshot or a merged CRDT state may outgrow a frame).

use redb::TableDefinition;

/// Raft log entries. Key: (group id, log index). Value: a `raft::Entry` frame.
/// Holds the entries after the group's snapshot; the lowest may be at or below it briefly,
/// between a compaction's snapshot write and its deletes (both happen in one transaction,
/// so this is never visible after a crash).
pub const RAFT_ENTRIES_NAME: &str = "raft_entries";
pub const RAFT_ENTRIES: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new(RAFT_ENTRIES_NAME);

/// Raft hard state. Key: group id. Value: a `raft::HardState` frame (term, vote, commit).
pub const RAFT_HARD_STATE_NAME: &str = "raft_hard_state";
pub const RAFT_HARD_STATE: TableDefinition<u64, &[u8]> = TableDefinition::new(RAFT_HARD_STATE_NAME);

/// The latest snapshot of each group. Key: group id. Value: a `raft::Snapshot` frame
/// (meta and the state machine's bytes).
pub const RAFT_SNAPSHOTS_NAME: &str = "raft_snapshots";
pub const RAFT_SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new(RAFT_SNAPSHOTS_NAME);

/// CRDT state of every key of every eventual keyspace. Key: (keyspace id, key bytes).
/// Value: the eventual engine's per-key state frame.
pub const EVENTUAL_STATES_NAME: &str = "eventual_states";
pub const EVENTUAL_STATES: TableDefinition<(u64, &[u8]), &[u8]> =
    TableDefinition::new(EVENTUAL_STATES_NAME);

/// The durable meta of each eventual keyspace on this node (write counter, HLC, knowledge
/// vector). Key: keyspace id. Value: an `eventual::DurableMeta` frame, written in the same
/// transaction as the key states it describes.
pub const EVENTUAL_META_NAME: &str = "eventual_meta";
pub const EVENTUAL_META: TableDefinition<u64, &[u8]> = TableDefinition::new(EVENTUAL_META_NAME);

/// Facts about the file itself. Key: a name. Value: a frame. `node_id` holds the `NodeId` the
/// file belongs to, so a node never starts on another node's data.
pub const META_NAME: &str = "meta";
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new(META_NAME);

/// The `META` key of the owning node's id.
pub const META_NODE_ID: &str = "node_id";
