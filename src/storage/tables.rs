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

/// The latest snapshot of each group. Key: group id. Value: a `raft::SnapshotMeta` payload:
/// where the log starts (the state machine itself is in the machine tables).
pub const RAFT_SNAPSHOTS_NAME: &str = "raft_snapshots";
pub const RAFT_SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new(RAFT_SNAPSHOTS_NAME);

/// The keys of every strong keyspace's state machine (the catalog's too). Key: (group id,
/// generation, key bytes). Value: a `strong::Versioned` payload. See `storage::machine`.
pub const MACHINE_ROWS_NAME: &str = "machine_rows";
pub const MACHINE_ROWS: TableDefinition<(u64, u64, &[u8]), &[u8]> =
    TableDefinition::new(MACHINE_ROWS_NAME);

/// The client sessions of every state machine. Key: (group id, generation, client id).
/// Value: a `strong::Session` payload (the results the client has not acknowledged, its
/// first unacknowledged seq, when it was last active by the log clock).
pub const MACHINE_SESSIONS_NAME: &str = "machine_sessions";
pub const MACHINE_SESSIONS: TableDefinition<(u64, u64, u64), &[u8]> =
    TableDefinition::new(MACHINE_SESSIONS_NAME);

/// Where each group's machine is: its live generation, its applied index and log clock, a
/// snapshot being staged. Key: group id. Value: a `storage::machine::MachineMetaRow` payload, written in the
/// same transaction as the rows it describes.
pub const MACHINE_META_NAME: &str = "machine_meta";
pub const MACHINE_META: TableDefinition<u64, &[u8]> = TableDefinition::new(MACHINE_META_NAME);

/// Generations whose rows later commits delete, a bounded number at a time. Key: (group id,
/// generation).
pub const MACHINE_GARBAGE_NAME: &str = "machine_garbage";
pub const MACHINE_GARBAGE: TableDefinition<(u64, u64), ()> =
    TableDefinition::new(MACHINE_GARBAGE_NAME);

/// The rows of every eventual keyspace. Key: (keyspace id, key hash, key bytes), so a Merkle
/// leaf is one range. Value: an `eventual::StoredKey` payload (state, entry hash, live term).
/// See `storage::states`.
pub const EVENTUAL_ROWS_NAME: &str = "eventual_rows";
pub const EVENTUAL_ROWS: TableDefinition<(u64, u64, &[u8]), &[u8]> =
    TableDefinition::new(EVENTUAL_ROWS_NAME);

/// The Merkle leaves of every eventual keyspace, kept by each commit as the XOR of the entry
/// hashes of the rows in the leaf. Key: (keyspace id, leaf). Value: the leaf hash (never 0).
pub const EVENTUAL_LEAVES_NAME: &str = "eventual_leaves";
pub const EVENTUAL_LEAVES: TableDefinition<(u64, u32), u64> =
    TableDefinition::new(EVENTUAL_LEAVES_NAME);

/// The keys whose row holds a tombstone, for tombstone collection. Key: (keyspace id, key).
pub const EVENTUAL_TOMBSTONES_NAME: &str = "eventual_tombstones";
pub const EVENTUAL_TOMBSTONES: TableDefinition<(u64, &[u8]), ()> =
    TableDefinition::new(EVENTUAL_TOMBSTONES_NAME);

/// The meta of each eventual keyspace on this node: the engine's durable meta (write counter,
/// HLC, knowledge vector) and the summary of its rows. Key: keyspace id. Value: a
/// `storage::states::EventualMetaRow` payload, written in the same transaction as the rows it
/// describes.
pub const EVENTUAL_META_NAME: &str = "eventual_meta";
pub const EVENTUAL_META: TableDefinition<u64, &[u8]> = TableDefinition::new(EVENTUAL_META_NAME);

/// Dropped eventual keyspaces whose rows later commits delete, a bounded number at a time.
/// Key: keyspace id.
pub const EVENTUAL_GARBAGE_NAME: &str = "eventual_garbage";
pub const EVENTUAL_GARBAGE: TableDefinition<u64, ()> = TableDefinition::new(EVENTUAL_GARBAGE_NAME);

/// Facts about the file itself. Key: a name. Value: a frame. `node_id` holds the `NodeId` the
/// file belongs to, so a node never starts on another node's data.
pub const META_NAME: &str = "meta";
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new(META_NAME);

/// The `META` key of the owning node's id.
pub const META_NODE_ID: &str = "node_id";
/// The sequence number of the last write-ahead log batch the file holds (`storage::wal`).
pub const META_WAL_SEQUENCE: &str = "wal_sequence";
/// What a log record's payload is decoded as, for errors.
pub const WAL_NAME: &str = "write-ahead log";

/// The acceptor state of every key of every paxos keyspace on this node. Key: (keyspace id,
/// key bytes). Value: a `paxos::AcceptorState` payload (promised ballot, accepted ballot and
/// register). Written by each batch that carries a paxos `Ready`'s persist; a dropped
/// keyspace's rows go with its drop. See `storage::paxos`.
pub const PAXOS_ACCEPTORS_NAME: &str = "paxos_acceptors";
pub const PAXOS_ACCEPTORS: TableDefinition<(u64, &[u8]), &[u8]> =
    TableDefinition::new(PAXOS_ACCEPTORS_NAME);

/// The `META` key of the paxos incarnation: raised by the first batch of every start, so no
/// two starts of a node issue the same ballot (`paxos::Config::incarnation`).
pub const META_PAXOS_INCARNATION: &str = "paxos_incarnation";
