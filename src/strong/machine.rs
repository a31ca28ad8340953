//! The strong keyspace's state machine: an ordered map with revisions and client sessions.

use super::command::{ClientId, Command, CommandError, Outcome, Request, Versioned, validate};
use crate::types::LogIndex;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// The most client sessions kept. Past it the session applied longest ago is forgotten; a
/// retry from that client would then apply again, so it must be far above the number of
/// clients that are active within one retry window.
pub const SESSIONS_MAX: usize = 16_384;

/// Planted bugs of the state machine (for the simulator's teeth).
#[cfg(feature = "sim-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MachineBug {
    /// Forget to deduplicate: a retried command applies again.
    NoDedup,
}

/// How a state machine is built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineConfig {
    /// A planted bug to switch on.
    #[cfg(feature = "sim-bugs")]
    pub bug: Option<MachineBug>,
}

impl MachineConfig {
    fn dedup(&self) -> bool {
        #[cfg(feature = "sim-bugs")]
        if self.bug == Some(MachineBug::NoDedup) {
            return false;
        }
        true
    }
}

/// A client's session (Raft thesis §6.3): its last applied seq and what that returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub last_seq: u64,
    pub last_result: Result<Outcome, CommandError>,
    /// Where `last_seq` applied; orders sessions for eviction.
    pub applied_at: LogIndex,
}

/// What applying one entry gave back to the client that sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub client: ClientId,
    pub seq: u64,
    pub result: Result<Outcome, CommandError>,
    /// True when this was a retry answered from the session table, without reapplying.
    pub duplicate: bool,
}

/// An entry whose bytes do not decode to a [`Request`]. Deterministic: every replica skips it.
#[derive(Debug, thiserror::Error)]
#[error("entry {} is not a strong keyspace request", index.0)]
pub struct MalformedEntry {
    pub index: LogIndex,
    #[source]
    pub source: crate::wire::DecodeError,
}

/// The whole state as a serde value, for Raft snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSnapshot {
    pub applied: LogIndex,
    pub entries: Vec<(Bytes, Versioned)>,
    pub sessions: Vec<(ClientId, Session)>,
}

/// The strong keyspace state machine.
///
/// Protocol: the shell feeds it every committed entry in log order — [`StrongMachine::apply`]
/// for a normal entry's command bytes, [`StrongMachine::skip`] for entries that carry no command
/// (no-ops, membership). The revision of a change is the index of its entry. Reads served
/// outside the log (ReadIndex, lease, stale) call [`StrongMachine::get`] and
/// [`StrongMachine::scan`] once [`StrongMachine::applied`] has reached the read's index.
#[derive(Clone, Debug)]
pub struct StrongMachine {
    config: MachineConfig,
    /// Invariant: every `Versioned` has `create_revision <= mod_revision <= applied`.
    map: BTreeMap<Bytes, Versioned>,
    sessions: BTreeMap<ClientId, Session>,
    /// The sessions ordered by `applied_at`, for eviction. Same members as `sessions`.
    sessions_by_age: BTreeSet<(LogIndex, ClientId)>,
    /// The last index applied. Only grows.
    applied: LogIndex,
}

impl StrongMachine {
    pub fn new(config: MachineConfig) -> StrongMachine {
        StrongMachine {
            config,
            map: BTreeMap::new(),
            sessions: BTreeMap::new(),
            sessions_by_age: BTreeSet::new(),
            applied: LogIndex(0),
        }
    }

    /// The last index applied (or skipped).
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A key's current version.
    pub fn get(&self, key: &[u8]) -> Option<&Versioned> {
        self.map.get(key)
    }

    /// Up to `limit` keys starting with `prefix`, in order, and whether there are more.
    pub fn scan(
        &self,
        prefix: &[u8],
        limit: u32,
    ) -> Result<(Vec<(Bytes, Versioned)>, bool), CommandError> {
        validate(&Command::Scan {
            prefix: Bytes::copy_from_slice(prefix),
            limit,
        })?;
        let start = Bound::Included(Bytes::copy_from_slice(prefix));
        let mut matching = self
            .map
            .range((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix));
        let entries: Vec<(Bytes, Versioned)> = matching
            .by_ref()
            .take(limit as usize)
            .map(|(key, version)| (key.clone(), version.clone()))
            .collect();
        let more = matching.next().is_some();
        Ok((entries, more))
    }

    /// Marks `index` applied without a command (a no-op or membership entry).
    pub fn skip(&mut self, index: LogIndex) {
        self.advance_to(index);
    }

    /// Applies a committed entry's command bytes at `index`.
    pub fn apply(&mut self, index: LogIndex, entry: &[u8]) -> Result<Response, MalformedEntry> {
        self.advance_to(index);
        let request = Request::decode(entry).map_err(|source| MalformedEntry { index, source })?;
        Ok(self.apply_request(index, &request))
    }

    fn advance_to(&mut self, index: LogIndex) {
        assert!(
            index.0 == self.applied.0 + 1,
            "entries apply in log order: applied {:?}, got {:?}",
            self.applied,
            index
        );
        self.applied = index;
    }

    fn apply_request(&mut self, index: LogIndex, request: &Request) -> Response {
        let response = |result, duplicate| Response {
            client: request.client,
            seq: request.seq,
            result,
            duplicate,
        };
        if let Some(session) = self.sessions.get(&request.client)
            && self.config.dedup()
        {
            if request.seq == session.last_seq {
                return response(session.last_result.clone(), true);
            }
            if request.seq < session.last_seq {
                let error = CommandError::SequenceTooOld {
                    client: request.client,
                    seq: request.seq,
                    last_seq: session.last_seq,
                };
                return response(Err(error), false);
            }
        }
        let result = validate(&request.command).map(|()| self.execute(index, &request.command));
        self.remember(request.client, request.seq, index, result.clone());
        response(result, false)
    }

    fn execute(&mut self, index: LogIndex, command: &Command) -> Outcome {
        match command {
            Command::Put { key, value } => {
                self.write(index, key, Some(value));
                Outcome::Put { revision: index }
            }
            Command::Delete { key } => Outcome::Delete {
                revision: index,
                existed: self.map.remove(key).is_some(),
            },
            Command::Cas {
                key,
                expected,
                value,
            } => {
                let current = self.map.get(key).map(|version| version.mod_revision);
                if current != *expected {
                    return Outcome::Cas {
                        revision: index,
                        succeeded: false,
                        current: self.map.get(key).cloned(),
                    };
                }
                self.write(index, key, value.as_ref());
                Outcome::Cas {
                    revision: index,
                    succeeded: true,
                    current: self.map.get(key).cloned(),
                }
            }
            Command::Get { key } => Outcome::Get {
                current: self.map.get(key).cloned(),
            },
            Command::Scan { prefix, limit } => {
                let (entries, more) = self
                    .scan(prefix, *limit)
                    .expect("the scan was validated before execution");
                Outcome::Scan { entries, more }
            }
        }
    }

    fn write(&mut self, index: LogIndex, key: &Bytes, value: Option<&Bytes>) {
        let Some(value) = value else {
            self.map.remove(key);
            return;
        };
        let create_revision = self
            .map
            .get(key)
            .map_or(index, |version| version.create_revision);
        let version = Versioned {
            value: value.clone(),
            create_revision,
            mod_revision: index,
        };
        self.map.insert(key.clone(), version);
    }

    fn remember(
        &mut self,
        client: ClientId,
        seq: u64,
        index: LogIndex,
        result: Result<Outcome, CommandError>,
    ) {
        if let Some(old) = self.sessions.get(&client) {
            self.sessions_by_age.remove(&(old.applied_at, client));
        }
        let session = Session {
            last_seq: seq,
            last_result: result,
            applied_at: index,
        };
        self.sessions.insert(client, session);
        self.sessions_by_age.insert((index, client));
        while self.sessions.len() > SESSIONS_MAX {
            let (_, oldest) = self
                .sessions_by_age
                .pop_first()
                .expect("sessions_by_age has the same members as sessions");
            self.sessions.remove(&oldest);
        }
        assert_eq!(self.sessions.len(), self.sessions_by_age.len());
    }

    /// The whole state, for a Raft snapshot at [`StrongMachine::applied`].
    pub fn snapshot(&self) -> MachineSnapshot {
        MachineSnapshot {
            applied: self.applied,
            entries: self
                .map
                .iter()
                .map(|(key, version)| (key.clone(), version.clone()))
                .collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(client, session)| (*client, session.clone()))
                .collect(),
        }
    }

    /// A machine in the state a snapshot recorded.
    pub fn restore(config: MachineConfig, snapshot: MachineSnapshot) -> StrongMachine {
        let mut machine = StrongMachine::new(config);
        machine.applied = snapshot.applied;
        machine.map = snapshot.entries.into_iter().collect();
        for (client, session) in snapshot.sessions {
            machine.sessions_by_age.insert((session.applied_at, client));
            machine.sessions.insert(client, session);
        }
        machine
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strong::command::{Field, KEY_BYTES_MAX, SCAN_LIMIT_MAX, VALUE_BYTES_MAX};

    fn bytes(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn request(client: u64, seq: u64, command: Command) -> Vec<u8> {
        let request = Request {
            client: ClientId(client),
            seq,
            command,
        };
        request.encode().unwrap().to_vec()
    }

    fn put(key: &str, value: &str) -> Command {
        Command::Put {
            key: bytes(key),
            value: bytes(value),
        }
    }

    fn apply(machine: &mut StrongMachine, client: u64, seq: u64, command: Command) -> Response {
        let index = LogIndex(machine.applied().0 + 1);
        machine
            .apply(index, &request(client, seq, command))
            .unwrap()
    }

    #[test]
    fn put_get_delete_track_revisions() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        machine.skip(LogIndex(1));
        let first = apply(&mut machine, 1, 1, put("a", "x"));
        assert_eq!(
            first.result,
            Ok(Outcome::Put {
                revision: LogIndex(2)
            })
        );
        apply(&mut machine, 1, 2, put("a", "y"));
        let version = machine.get(b"a").unwrap();
        assert_eq!(
            (version.create_revision, version.mod_revision),
            (LogIndex(2), LogIndex(3))
        );
        assert_eq!(version.value, bytes("y"));
        let deleted = apply(&mut machine, 1, 3, Command::Delete { key: bytes("a") });
        assert_eq!(
            deleted.result,
            Ok(Outcome::Delete {
                revision: LogIndex(4),
                existed: true
            })
        );
        let again = apply(&mut machine, 1, 4, Command::Delete { key: bytes("a") });
        assert_eq!(
            again.result,
            Ok(Outcome::Delete {
                revision: LogIndex(5),
                existed: false
            })
        );
        apply(&mut machine, 1, 5, put("a", "z"));
        assert_eq!(machine.get(b"a").unwrap().create_revision, LogIndex(6));
    }

    #[test]
    fn cas_compares_the_mod_revision_or_absence() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        let cas = |expected, value: Option<&str>| Command::Cas {
            key: bytes("k"),
            expected,
            value: value.map(bytes),
        };
        let created = apply(&mut machine, 1, 1, cas(None, Some("v1")));
        assert!(matches!(
            created.result,
            Ok(Outcome::Cas {
                succeeded: true,
                ..
            })
        ));
        let refused = apply(&mut machine, 1, 2, cas(None, Some("v2")));
        let Ok(Outcome::Cas {
            succeeded: false,
            current: Some(current),
            ..
        }) = refused.result
        else {
            panic!("a cas expecting absence must fail on a present key: {refused:?}");
        };
        assert_eq!(
            (current.value, current.mod_revision),
            (bytes("v1"), LogIndex(1))
        );
        let stale = apply(&mut machine, 1, 3, cas(Some(LogIndex(2)), Some("v3")));
        assert!(matches!(
            stale.result,
            Ok(Outcome::Cas {
                succeeded: false,
                ..
            })
        ));
        let swapped = apply(&mut machine, 1, 4, cas(Some(LogIndex(1)), Some("v4")));
        assert!(matches!(
            swapped.result,
            Ok(Outcome::Cas {
                succeeded: true,
                ..
            })
        ));
        assert_eq!(machine.get(b"k").unwrap().mod_revision, LogIndex(4));
        let removed = apply(&mut machine, 1, 5, cas(Some(LogIndex(4)), None));
        assert!(matches!(
            removed.result,
            Ok(Outcome::Cas {
                succeeded: true,
                current: None,
                ..
            })
        ));
        assert!(machine.get(b"k").is_none());
    }

    #[test]
    fn retries_return_the_first_result_and_old_seqs_are_refused() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        let first = apply(&mut machine, 7, 1, put("a", "x"));
        apply(&mut machine, 8, 1, put("a", "other"));
        let retry = apply(&mut machine, 7, 1, put("a", "x"));
        assert!(retry.duplicate && !first.duplicate);
        assert_eq!(retry.result, first.result);
        assert_eq!(
            machine.get(b"a").unwrap().value,
            bytes("other"),
            "not reapplied"
        );
        apply(&mut machine, 7, 2, put("a", "y"));
        let old = apply(&mut machine, 7, 1, put("a", "x"));
        assert!(matches!(
            old.result,
            Err(CommandError::SequenceTooOld {
                seq: 1,
                last_seq: 2,
                ..
            })
        ));
        assert_eq!(machine.get(b"a").unwrap().value, bytes("y"));
    }

    #[cfg(feature = "sim-bugs")]
    #[test]
    fn planted_no_dedup_reapplies_retries() {
        let config = MachineConfig {
            bug: Some(MachineBug::NoDedup),
        };
        let mut machine = StrongMachine::new(config);
        apply(&mut machine, 7, 1, put("a", "x"));
        apply(&mut machine, 8, 1, put("a", "other"));
        let retry = apply(&mut machine, 7, 1, put("a", "x"));
        assert!(!retry.duplicate);
        assert_eq!(machine.get(b"a").unwrap().value, bytes("x"));
    }

    #[test]
    fn limits_are_typed_errors_at_validation_and_apply() {
        let long_key = Bytes::from(vec![b'k'; KEY_BYTES_MAX + 1]);
        let big_value = Bytes::from(vec![0u8; VALUE_BYTES_MAX + 1]);
        let too_long = Command::Get { key: long_key };
        assert_eq!(
            validate(&too_long),
            Err(CommandError::TooLarge {
                what: Field::Key,
                bytes: KEY_BYTES_MAX + 1,
                bytes_max: KEY_BYTES_MAX
            })
        );
        let mut machine = StrongMachine::new(MachineConfig::default());
        let command = Command::Put {
            key: bytes("a"),
            value: big_value,
        };
        let refused = apply(&mut machine, 1, 1, command);
        assert!(matches!(
            refused.result,
            Err(CommandError::TooLarge {
                what: Field::Value,
                ..
            })
        ));
        assert!(machine.get(b"a").is_none());
        let scan = Command::Scan {
            prefix: bytes(""),
            limit: SCAN_LIMIT_MAX + 1,
        };
        assert!(matches!(
            validate(&scan),
            Err(CommandError::ScanLimit { .. })
        ));
        assert!(machine.apply(LogIndex(2), b"garbage").is_err());
        assert_eq!(
            machine.applied(),
            LogIndex(2),
            "a malformed entry is still applied"
        );
    }

    #[test]
    fn scan_is_ordered_limited_and_prefixed() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        for (seq, key) in ["b2", "a", "b1", "b3", "c"].iter().enumerate() {
            apply(&mut machine, 1, seq as u64 + 1, put(key, "v"));
        }
        let (entries, more) = machine.scan(b"b", 2).unwrap();
        let keys: Vec<&[u8]> = entries.iter().map(|(key, _)| key.as_ref()).collect();
        assert_eq!(keys, vec![b"b1".as_ref(), b"b2".as_ref()]);
        assert!(more);
        let (entries, more) = machine.scan(b"b", 3).unwrap();
        assert_eq!(entries.len(), 3);
        assert!(!more);
        let through_log = apply(
            &mut machine,
            1,
            6,
            Command::Scan {
                prefix: bytes("c"),
                limit: 5,
            },
        );
        assert!(matches!(
            through_log.result,
            Ok(Outcome::Scan { ref entries, more: false }) if entries.len() == 1
        ));
    }

    #[test]
    fn snapshot_restores_map_sessions_and_applied() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        apply(&mut machine, 1, 1, put("a", "x"));
        apply(&mut machine, 2, 1, put("b", "y"));
        let snapshot = crate::wire::roundtrip(&machine.snapshot());
        let mut restored = StrongMachine::restore(MachineConfig::default(), snapshot);
        assert_eq!(restored.applied(), LogIndex(2));
        assert_eq!(restored.get(b"b"), machine.get(b"b"));
        let retry = apply(&mut restored, 1, 1, put("a", "x"));
        assert!(retry.duplicate, "sessions survive the snapshot");
        let next = apply(&mut machine, 1, 1, put("a", "x"));
        assert_eq!(retry, next);
    }

    #[test]
    fn sessions_stay_bounded() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        for client in 0..(SESSIONS_MAX as u64 + 10) {
            apply(&mut machine, client, 1, Command::Get { key: bytes("a") });
        }
        assert_eq!(machine.sessions.len(), SESSIONS_MAX);
        assert!(
            !machine.sessions.contains_key(&ClientId(0)),
            "the oldest went first"
        );
        assert!(
            machine
                .sessions
                .contains_key(&ClientId(SESSIONS_MAX as u64 + 9))
        );
    }
}
