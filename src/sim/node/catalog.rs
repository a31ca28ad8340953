//! The keyspaces as the clients know them: what the admin client has asked for and what it
//! was told. Data clients only use keyspaces whose create was acknowledged; the catalog
//! invariant is judged against this view.

use crate::eventual::ValueType;
use crate::protocol::KeyspaceMode;
use std::collections::BTreeMap;

/// Where a keyspace stands, from the admin client's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The create was sent and not yet acknowledged.
    Creating,
    /// The create was acknowledged, and no drop sent: it exists on every node that asks
    /// the catalog.
    Live,
    /// A drop was sent (not necessarily applied).
    Dropping,
    /// The drop was acknowledged.
    Dropped,
}

#[derive(Clone, Debug)]
pub(crate) struct Keyspace {
    pub(crate) mode: KeyspaceMode,
    pub(crate) stage: Stage,
    /// Created by the setup, used by every data client all run long (never dropped).
    pub(crate) base: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Catalog {
    pub(crate) keyspaces: BTreeMap<String, Keyspace>,
}

impl Catalog {
    pub(crate) fn new() -> Catalog {
        Catalog::default()
    }

    pub(crate) fn stage(&self, name: &str) -> Option<Stage> {
        self.keyspaces.get(name).map(|keyspace| keyspace.stage)
    }

    pub(crate) fn mode(&self, name: &str) -> Option<KeyspaceMode> {
        self.keyspaces.get(name).map(|keyspace| keyspace.mode)
    }

    pub(crate) fn set_stage(&mut self, name: &str, mode: KeyspaceMode, base: bool, stage: Stage) {
        let keyspace =
            self.keyspaces
                .entry(name.to_string())
                .or_insert(Keyspace { mode, stage, base });
        keyspace.stage = stage;
    }

    /// Keyspaces a data client may use now (acknowledged, no drop sent), by name. The bank's
    /// keyspaces are the bank clients' alone.
    pub(crate) fn live(&self) -> Vec<(&str, KeyspaceMode, bool)> {
        self.keyspaces
            .iter()
            .filter(|(_, keyspace)| keyspace.stage == Stage::Live)
            .filter(|(name, _)| !super::bank::KEYSPACES.contains(&name.as_str()))
            .map(|(name, keyspace)| (name.as_str(), keyspace.mode, keyspace.base))
            .collect()
    }

    /// Every keyspace of the run that was ever acknowledged, with its mode.
    pub(crate) fn ever_live(&self) -> impl Iterator<Item = (&String, &Keyspace)> {
        self.keyspaces
            .iter()
            .filter(|(_, keyspace)| keyspace.stage != Stage::Creating)
    }
}

/// The keyspaces the setup creates, one of each kind the clients and checkers use.
pub(crate) fn base_keyspaces(strong: usize) -> Vec<(String, KeyspaceMode)> {
    let mut keyspaces: Vec<(String, KeyspaceMode)> = (0..strong)
        .map(|index| (format!("strong{index}"), KeyspaceMode::Strong))
        .collect();
    for name in super::bank::KEYSPACES {
        keyspaces.push((name.to_string(), KeyspaceMode::Strong));
    }
    keyspaces.push((
        "counters".to_string(),
        KeyspaceMode::Eventual(ValueType::Counter),
    ));
    keyspaces.push(("sets".to_string(), KeyspaceMode::Eventual(ValueType::Set)));
    keyspaces.push((
        "registers".to_string(),
        KeyspaceMode::Eventual(ValueType::Lww),
    ));
    // Added last, so the keyspace ids (catalog revisions) of the others stay as they were.
    keyspaces.push(("locks".to_string(), KeyspaceMode::Paxos));
    keyspaces
}
