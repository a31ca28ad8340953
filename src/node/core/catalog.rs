//! The catalog: which keyspaces exist, kept in Raft group 0.
//!
//! Group 0 runs the same strong state machine as any strong keyspace; the catalog is a set of
//! its keys, `keyspace/<name>` holding the keyspace's mode. A keyspace's id is the revision
//! that created its key, so ids are unique, never reused, and the same on every node (they
//! come from the log). A strong keyspace's Raft group id is its keyspace id.
//!
//! Nodes do not act on catalog commands as they apply them: after each apply they compare
//! the keyspaces they run with [`keyspaces`] and start or drop the difference. That one
//! reconciliation covers a fresh apply, a restart and a snapshot install alike.

use crate::protocol::admin::{AdminError, KeyspaceInfo};
use crate::protocol::{KEYSPACE_NAME_BYTES_MAX, KeyspaceMode};
use crate::strong::{Command, StrongMachine};
use crate::types::{GroupId, KeyspaceId, LogIndex, NodeId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The catalog's Raft group.
pub const CATALOG_GROUP: GroupId = GroupId(0);
/// How status names group 0.
pub const CATALOG_NAME: &str = "_catalog";
/// Keyspaces a catalog holds at most (a scan of the catalog reads them all at once).
pub const KEYSPACES_MAX: u32 = 1000;

const KEYSPACE_PREFIX: &[u8] = b"keyspace/";
const MEMBER_PREFIX: &[u8] = b"member/";
/// Members the catalog lists at most (added and removed ones alike).
pub const MEMBERS_LISTED_MAX: u32 = 1000;

fn member_key(id: NodeId) -> Bytes {
    let mut key = MEMBER_PREFIX.to_vec();
    key.extend_from_slice(id.to_string().as_bytes());
    Bytes::from(key)
}

/// The command that makes `id` (at `address`) a member.
pub fn member_add_command(id: NodeId, address: &str) -> Command {
    Command::Put {
        key: member_key(id),
        value: Bytes::copy_from_slice(address.as_bytes()),
    }
}

/// The command that removes member `id`.
pub fn member_remove_command(id: NodeId) -> Command {
    Command::Put {
        key: member_key(id),
        value: Bytes::new(),
    }
}

/// The members and their addresses: the initial cluster, plus the added, minus the removed.
pub fn members(
    machine: &StrongMachine,
    initial: &BTreeMap<NodeId, String>,
) -> BTreeMap<NodeId, String> {
    let mut members = initial.clone();
    let Ok((entries, _)) = machine.scan(MEMBER_PREFIX, None, MEMBERS_LISTED_MAX) else {
        return members;
    };
    for (key, version) in entries {
        let id = std::str::from_utf8(&key[MEMBER_PREFIX.len()..])
            .ok()
            .and_then(NodeId::parse);
        let Some(id) = id else { continue };
        match std::str::from_utf8(&version.value) {
            Ok("") => members.remove(&id),
            Ok(address) => members.insert(id, address.to_string()),
            Err(_) => None,
        };
    }
    members
}

/// The catalog key that holds keyspace `name`.
pub(crate) fn keyspace_key(name: &str) -> Bytes {
    let mut key = KEYSPACE_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    Bytes::from(key)
}

/// What the catalog holds for a keyspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct KeyspaceDef {
    mode: KeyspaceMode,
    /// A strong keyspace's first voters. Written into the log, so every node starts the group
    /// with the same configuration whatever members it knew when it applied the create; the
    /// group's leader then moves the voters to the current members.
    voters: Vec<NodeId>,
}

/// What the catalog holds for a keyspace created by a restore: a [`KeyspaceDef`] and the
/// restore's mark. A separate type (tried first, then [`KeyspaceDef`]) so that catalogs
/// written before restores existed still decode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RestoredDef {
    mode: KeyspaceMode,
    voters: Vec<NodeId>,
    restore: RestoreMark,
}

/// How a keyspace created by a restore came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreMark {
    /// The restore it belongs to (a number the restoring client picked).
    pub restore: u64,
    /// A strong keyspace's backed-up revision: its group starts from an image at this index.
    pub revision: Option<LogIndex>,
}

/// A keyspace in the catalog, with the first voters of its Raft group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub info: KeyspaceInfo,
    pub voters: Vec<NodeId>,
    /// Set for a keyspace a restore created.
    pub restore: Option<RestoreMark>,
}

/// The command that creates `name` for a restore unless it exists.
pub fn restore_command(
    name: &str,
    mode: KeyspaceMode,
    voters: Vec<NodeId>,
    restore: RestoreMark,
) -> Command {
    let def = RestoredDef {
        mode,
        voters,
        restore,
    };
    let value = crate::wire::encode(&def)
        .expect("invariant: a keyspace definition always encodes (members are bounded)");
    Command::Cas {
        key: keyspace_key(name),
        expected: None,
        value: Some(Bytes::from(value)),
    }
}

/// A catalog value: a restored keyspace's definition, or a plain one.
fn decode_def(bytes: &[u8]) -> Option<(KeyspaceMode, Vec<NodeId>, Option<RestoreMark>)> {
    if let Ok((def, _)) = crate::wire::decode::<RestoredDef>(bytes) {
        return Some((def.mode, def.voters, Some(def.restore)));
    }
    let (def, _) = crate::wire::decode::<KeyspaceDef>(bytes).ok()?;
    Some((def.mode, def.voters, None))
}

/// The command that creates `name` unless it exists.
pub fn create_command(name: &str, mode: KeyspaceMode, voters: Vec<NodeId>) -> Command {
    let value = crate::wire::encode(&KeyspaceDef { mode, voters })
        .expect("invariant: a keyspace definition always encodes (members are bounded)");
    Command::Cas {
        key: keyspace_key(name),
        expected: None,
        value: Some(Bytes::from(value)),
    }
}

/// The command that drops `name`.
pub fn drop_command(name: &str) -> Command {
    Command::Delete {
        key: keyspace_key(name),
    }
}

/// Every keyspace in the catalog as `machine` has applied it, by name. An entry that does
/// not decode (written by a newer version) is left out rather than guessed at.
pub fn keyspaces(machine: &StrongMachine) -> BTreeMap<String, Entry> {
    keyspaces_scanned(machine).0
}

/// [`keyspaces`], and whether that is all of them: creates that raced past
/// [`KEYSPACES_MAX`] leave the scan cut short, and then nothing may be taken as dropped.
pub fn keyspaces_scanned(machine: &StrongMachine) -> (BTreeMap<String, Entry>, bool) {
    let Ok((entries, more)) = machine.scan(KEYSPACE_PREFIX, None, KEYSPACES_MAX) else {
        return (BTreeMap::new(), false);
    };
    let mut keyspaces = BTreeMap::new();
    for (key, version) in entries {
        let Ok(name) = std::str::from_utf8(&key[KEYSPACE_PREFIX.len()..]) else {
            continue;
        };
        let Some((mode, voters, restore)) = decode_def(&version.value) else {
            continue;
        };
        let info = KeyspaceInfo {
            name: name.to_string(),
            id: KeyspaceId(version.create_revision.0),
            mode,
        };
        let entry = Entry {
            info,
            voters,
            restore,
        };
        keyspaces.insert(name.to_string(), entry);
    }
    (keyspaces, !more)
}

/// Keyspace names are 1 to 64 letters, digits, `-` or `_`, not starting with `_` (reserved
/// for the node's own groups, like `_catalog`).
pub fn check_name(name: &str) -> Result<(), AdminError> {
    let invalid = |reason: &str| AdminError::InvalidKeyspaceName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() || name.len() > KEYSPACE_NAME_BYTES_MAX {
        return Err(invalid("use 1 to 64 characters"));
    }
    if name.starts_with('_') {
        return Err(invalid("names starting with '_' are reserved"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid("use letters, digits, '-' and '_'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventual::ValueType;
    use crate::strong::{ClientId, MachineConfig, Request};

    fn apply(machine: &mut StrongMachine, index: u64, seq: u64, command: Command) {
        let request = Request {
            client: ClientId(1),
            seq,
            first_unacked: seq,
            opens_session: true,
            proposed_at: crate::types::WallMillis(0),
            command,
        };
        let bytes = request.encode().unwrap();
        machine.apply(LogIndex(index), &bytes).unwrap();
    }

    #[test]
    fn keyspaces_take_their_creating_revision_as_id_and_never_reuse_it() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        let set = KeyspaceMode::Eventual(ValueType::Set);
        apply(
            &mut machine,
            1,
            1,
            create_command("orders", KeyspaceMode::Strong, vec![NodeId(1)]),
        );
        apply(&mut machine, 2, 2, create_command("carts", set, vec![]));
        apply(&mut machine, 3, 3, create_command("orders", set, vec![]));
        let found = keyspaces(&machine);
        assert_eq!(found["orders"].info.id, KeyspaceId(1));
        assert_eq!(
            found["orders"].info.mode,
            KeyspaceMode::Strong,
            "exists: not replaced"
        );
        assert_eq!(found["carts"].info.id, KeyspaceId(2));
        apply(&mut machine, 4, 4, drop_command("orders"));
        apply(&mut machine, 5, 5, create_command("orders", set, vec![]));
        let found = keyspaces(&machine);
        assert_eq!(found["orders"].info.id, KeyspaceId(5));
        assert_eq!(found["orders"].info.mode, set);
        assert_eq!(found["orders"].restore, None);
        let mark = RestoreMark {
            restore: 7,
            revision: Some(LogIndex(40)),
        };
        let restored = restore_command("sales", KeyspaceMode::Strong, vec![NodeId(1)], mark);
        apply(&mut machine, 6, 6, restored);
        let found = keyspaces(&machine);
        assert_eq!(
            found["sales"].restore,
            Some(mark),
            "a restored keyspace keeps its mark"
        );
        assert_eq!(found["sales"].voters, vec![NodeId(1)]);
        assert_eq!(
            found["orders"].restore, None,
            "plain definitions still decode"
        );
    }

    #[test]
    fn members_are_the_initial_cluster_plus_added_minus_removed() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        let initial: BTreeMap<NodeId, String> = [
            (NodeId(1), "a:1".to_string()),
            (NodeId(2), "b:2".to_string()),
        ]
        .into();
        apply(&mut machine, 1, 1, member_add_command(NodeId(4), "d:4"));
        apply(&mut machine, 2, 2, member_remove_command(NodeId(1)));
        let found = members(&machine, &initial);
        let ids: Vec<u64> = found.keys().map(|id| id.0).collect();
        assert_eq!(ids, vec![2, 4]);
        assert_eq!(found[&NodeId(4)], "d:4");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("orders-2024_x").is_ok());
        for bad in ["", "_catalog", "a b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
