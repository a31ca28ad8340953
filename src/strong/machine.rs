//! The strong keyspace's state machine: an ordered map with revisions and client sessions.

use super::command::{
    ClientId, Command, CommandError, Compare, Outcome, Request, SCAN_BYTES_MAX, Session, TxnOp,
    Versioned, scan_entry_bytes, validate,
};
use super::sessions::{
    Refusal, SESSION_BYTES_MAX_DEFAULT, SESSION_TIMEOUT_DEFAULT, SESSIONS_MAX_DEFAULT, SessionTable,
};
use super::store::{MachineStore, MachineWrites, MemoryMachineStore, StoreError, row_bytes};
use super::twophase;
use crate::types::{GroupId, LogIndex, WallMillis};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

mod intents;

/// Planted bugs of the state machine (for the simulator's teeth).
#[cfg(feature = "sim-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MachineBug {
    /// Forget to deduplicate: a retried command applies again.
    NoDedup,
}

/// How a state machine is built. Every replica of a group must use the same values: they
/// decide results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineConfig {
    /// A session expires once the log clock passes its last write by this much.
    pub session_timeout: Duration,
    /// At most this many sessions; a new one past it is refused (`TooManySessions`).
    pub sessions_max: usize,
    /// At most about this many bytes of results in all sessions together (as
    /// `result_bytes` counts them); a write arriving past it is refused (`SessionsFull`).
    pub session_bytes_max: usize,
    /// A planted bug to switch on.
    #[cfg(feature = "sim-bugs")]
    pub bug: Option<MachineBug>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            session_timeout: SESSION_TIMEOUT_DEFAULT,
            sessions_max: SESSIONS_MAX_DEFAULT,
            session_bytes_max: SESSION_BYTES_MAX_DEFAULT,
            #[cfg(feature = "sim-bugs")]
            bug: None,
        }
    }
}

impl MachineConfig {
    pub(super) fn dedup(&self) -> bool {
        #[cfg(feature = "sim-bugs")]
        if self.bug == Some(MachineBug::NoDedup) {
            return false;
        }
        true
    }
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

/// Why applying an entry failed. Either is a fault of this replica, never a result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    #[error(transparent)]
    Malformed(#[from] MalformedEntry),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a read outside the log failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadFailure {
    /// The request breaks a limit: the client's error.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The storage failed: this replica's fault.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Changes to keys not yet durable: `None` is a delete.
type Overlay = BTreeMap<Bytes, Option<Versioned>>;

/// One change an applied entry made to a key, for watches: the key's new version, or
/// `None` when it was deleted (only a key that existed is reported deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub revision: LogIndex,
    pub key: Bytes,
    pub version: Option<Versioned>,
}

/// The strong keyspace state machine.
///
/// Protocol: the shell feeds it every committed entry in log order — [`StrongMachine::apply`]
/// for a normal entry's command bytes, [`StrongMachine::skip`] for entries that carry no command
/// (no-ops, membership). The revision of a change is the index of its entry. Reads served
/// outside the log (ReadIndex, lease, stale) call [`StrongMachine::get`] and
/// [`StrongMachine::scan`] once [`StrongMachine::applied`] has reached the read's index.
///
/// The keys live in a [`MachineStore`]; the machine holds only what it changed since its
/// last [`StrongMachine::take_writes`] and what those writes carry until
/// [`StrongMachine::writes_persisted`], and reads see both over the store. Client sessions
/// (at most [`MachineConfig::sessions_max`]) are kept in memory too, and written through the
/// same way.
///
/// Sessions expire by the *log clock*: the largest [`Request::proposed_at`] applied, a
/// leader's wall clock carried in the entries. Every replica applies the same entries, so
/// every replica expires the same sessions at the same index, whatever its own clock says.
#[derive(Debug)]
pub struct StrongMachine {
    config: MachineConfig,
    group: GroupId,
    store: Arc<dyn MachineStore>,
    /// Applied since the last `take_writes`.
    changes: Overlay,
    /// Handed out by the last `take_writes`, not yet durable.
    flushing: Overlay,
    sessions: SessionTable,
    /// The last index applied. Only grows (but for an installed snapshot, which is ahead).
    applied: LogIndex,
    /// The log clock: the largest `proposed_at` applied. Never goes back (a snapshot carries
    /// it, and is ahead).
    clock: WallMillis,
    /// The applied index the last `take_writes` carried.
    handed_applied: LogIndex,
    /// The applied index of the store's committed state.
    durable_applied: LogIndex,
    /// Changes applied since the last `take_changes`, in order.
    changed: Vec<Change>,
    /// How many intents of transactions across keyspaces the map holds: while none, no
    /// request pays for looking one up.
    intents: u64,
}

impl StrongMachine {
    /// A machine on a store of its own in memory: for tests and models.
    pub fn new(config: MachineConfig) -> StrongMachine {
        let store = Arc::new(MemoryMachineStore::new());
        StrongMachine::open(config, GroupId(0), store).expect("a new memory store reads")
    }

    /// The machine of `group` in the state `store` holds.
    pub fn open(
        config: MachineConfig,
        group: GroupId,
        store: Arc<dyn MachineStore>,
    ) -> Result<StrongMachine, StoreError> {
        let mut machine = StrongMachine {
            config,
            group,
            store,
            changes: Overlay::new(),
            flushing: Overlay::new(),
            sessions: SessionTable::default(),
            applied: LogIndex(0),
            clock: WallMillis(0),
            handed_applied: LogIndex(0),
            durable_applied: LogIndex(0),
            changed: Vec::new(),
            intents: 0,
        };
        machine.reload()?;
        Ok(machine)
    }

    /// Forgets everything not in the store and takes the store's state: after an installed
    /// snapshot replaced it.
    pub fn reload(&mut self) -> Result<(), StoreError> {
        let meta = self.store.load(self.group)?;
        self.changes.clear();
        self.flushing.clear();
        self.changed.clear();
        self.intents = self.count_intents()?;
        self.sessions = SessionTable::load(meta.sessions);
        self.applied = meta.applied;
        self.clock = meta.clock;
        self.handed_applied = meta.applied;
        self.durable_applied = meta.applied;
        Ok(())
    }

    /// The last index applied (or skipped).
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// The log clock: the largest leader timestamp applied.
    pub fn clock(&self) -> WallMillis {
        self.clock
    }

    /// The session of `client`, if the machine keeps one.
    pub fn session(&self, client: ClientId) -> Option<&Session> {
        self.sessions.get(client)
    }

    /// The applied index of the store's committed state: what a restart resumes from.
    pub fn durable_applied(&self) -> LogIndex {
        self.durable_applied
    }

    /// A key's current version.
    pub fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        if let Some(row) = self.changes.get(key).or_else(|| self.flushing.get(key)) {
            return Ok(row.clone());
        }
        self.store.get(self.group, key)
    }

    /// A key's current version for a client's read: `Locked` while a transaction across
    /// keyspaces holds a write to it (it may have committed already).
    pub fn read(&self, key: &[u8]) -> Result<Option<Versioned>, ReadFailure> {
        if let Some(locked) = self.read_lock(key)? {
            return Err(ReadFailure::Command(locked));
        }
        Ok(self.get(key)?)
    }

    /// One page of the keys starting with `prefix` (those after `after`, when given), in
    /// order, and whether more follow it. A page holds at most `limit` entries and at most
    /// [`SCAN_BYTES_MAX`] of them as [`scan_entry_bytes`] counts (but always the first), so
    /// its answer fits a frame; the next page starts after its last key.
    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<(Vec<(Bytes, Versioned)>, bool), ReadFailure> {
        validate(&Command::Scan {
            prefix: Bytes::copy_from_slice(prefix),
            limit,
            after: after.map(Bytes::copy_from_slice),
        })?;
        let first = scan_start(prefix, after);
        let (entries, more) = self.scan_from(prefix, first.clone(), limit)?;
        let last = entries.last().map(|(key, _)| key).filter(|_| more);
        if let Some(locked) = self.scan_lock(prefix, &first, last)? {
            return Err(ReadFailure::Command(locked));
        }
        Ok((entries, more))
    }

    /// A page of the client keys under `prefix` from `start` on (the machine's own rows are
    /// left out), and whether more follow.
    fn scan_from(
        &self,
        prefix: &[u8],
        mut start: Bytes,
        limit: u32,
    ) -> Result<(Vec<(Bytes, Versioned)>, bool), StoreError> {
        let overlay = self.overlay_with(prefix);
        let mut page = Page::new(limit as usize);
        loop {
            // Stored rows come in batches bounded by count and bytes, so a scan of large
            // values never reads much more than the page it returns.
            let rows = (page.room() + 1).min(SCAN_BATCH_ROWS);
            let bytes_max = SCAN_BYTES_MAX.saturating_sub(page.bytes).max(1);
            let stored = self
                .store
                .scan(self.group, &start, prefix, rows, bytes_max)?;
            // The batch is every stored key from `start` up to its last one. A batch cut short
            // by neither bound is all there is; otherwise the store has not been read past
            // its last key, so the overlay is merged only up to there.
            let stored_bytes: usize = stored.iter().map(|(k, v)| row_bytes(k, v)).sum();
            let complete = stored.len() < rows && stored_bytes < bytes_max;
            let last = match stored.last() {
                Some((key, _)) if !complete => Some(key.clone()),
                _ => None,
            };
            let upper = last.as_ref().map_or(Bound::Unbounded, Bound::Included);
            let mut merged: BTreeMap<Bytes, Versioned> = stored.into_iter().collect();
            for (key, row) in overlay.range::<Bytes, _>((Bound::Included(&start), upper)) {
                match row {
                    Some(version) => merged.insert((*key).clone(), version.clone()),
                    None => merged.remove(*key),
                };
            }
            for (key, version) in merged {
                if twophase::is_reserved(&key) {
                    continue;
                }
                if !page.admits(&key, &version) {
                    return Ok((page.entries, true));
                }
                page.entries.push((key, version));
            }
            match last {
                Some(last) => start = successor(&last),
                None => return Ok((page.entries, false)),
            }
        }
    }

    /// The not yet durable changes to keys that start with `prefix`, newest winning.
    fn overlay_with<'a>(&'a self, prefix: &'a [u8]) -> BTreeMap<&'a Bytes, &'a Option<Versioned>> {
        let mut merged = BTreeMap::new();
        merged.extend(prefixed(&self.flushing, prefix));
        merged.extend(prefixed(&self.changes, prefix));
        merged
    }

    /// Marks `index` applied without a command (a no-op or membership entry).
    pub fn skip(&mut self, index: LogIndex) {
        self.advance_to(index);
    }

    /// Applies a committed entry's command bytes at `index`.
    pub fn apply(&mut self, index: LogIndex, entry: &[u8]) -> Result<Response, ApplyError> {
        self.advance_to(index);
        let request = Request::decode(entry).map_err(|source| MalformedEntry { index, source })?;
        Ok(self.apply_request(index, &request)?)
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

    fn apply_request(
        &mut self,
        index: LogIndex,
        request: &Request,
    ) -> Result<Response, StoreError> {
        let response = |result, duplicate| Response {
            client: request.client,
            seq: request.seq,
            result,
            duplicate,
        };
        self.clock = self.clock.max(request.proposed_at);
        self.sessions
            .expire(self.clock, self.config.session_timeout);
        // A read needs no at-most-once: applied again, it answers with the state at the later
        // index, which is as linearizable as the first. So reads neither consult nor change
        // the session: a scan's page (up to SCAN_BYTES_MAX) never lands in the session table
        // and its snapshot chunks, and a read does not make an older write of its client stale.
        if !request.command.is_write() {
            return Ok(response(
                self.execute_checked(index, &request.command)?,
                false,
            ));
        }
        if let Err(refusal) = self.sessions.admit(request, self.clock, &self.config) {
            return Ok(match refusal {
                Refusal::Duplicate(result) => response(result, true),
                Refusal::Refused(error) => response(Err(error), false),
            });
        }
        let result = self.execute_checked(index, &request.command)?;
        self.sessions
            .remember(request.client, request.seq, result.clone(), self.clock);
        Ok(response(result, false))
    }

    fn execute_checked(
        &mut self,
        index: LogIndex,
        command: &Command,
    ) -> Result<Result<Outcome, CommandError>, StoreError> {
        if let Err(error) = validate(command) {
            return Ok(Err(error));
        }
        if let Some(locked) = self.lock_on(command)? {
            return Ok(Err(locked));
        }
        self.execute(index, command)
    }

    /// Applies a checked command: its outcome, or a refusal every replica agrees on.
    fn execute(
        &mut self,
        index: LogIndex,
        command: &Command,
    ) -> Result<Result<Outcome, CommandError>, StoreError> {
        Ok(Ok(match command {
            Command::Put { key, value } => {
                self.write(index, key, Some(value))?;
                Outcome::Put { revision: index }
            }
            Command::Delete { key } => {
                let existed = self.get(key)?.is_some();
                self.changes.insert(key.clone(), None);
                if existed {
                    self.record(index, key, None);
                }
                Outcome::Delete {
                    revision: index,
                    existed,
                }
            }
            Command::Cas {
                key,
                expected,
                value,
            } => {
                let current = self.get(key)?;
                let succeeded = current.as_ref().map(|version| version.mod_revision) == *expected;
                let current = match succeeded {
                    true => self.write(index, key, value.as_ref())?,
                    false => current,
                };
                Outcome::Cas {
                    revision: index,
                    succeeded,
                    current,
                }
            }
            Command::Get { key } => Outcome::Get {
                current: self.get(key)?,
            },
            Command::Scan {
                prefix,
                limit,
                after,
            } => match self.scan(prefix, after.as_deref(), *limit) {
                Ok((entries, more)) => Outcome::Scan { entries, more },
                Err(ReadFailure::Store(error)) => return Err(error),
                Err(ReadFailure::Command(error)) => return Ok(Err(error)),
            },
            Command::Txn {
                compares,
                success,
                failure,
            } => self.transact(index, compares, success, failure)?,
            Command::TxnStep(step) => return self.step(index, step),
        }))
    }

    /// Checks the compares, then applies the branch they pick, every change at `index`.
    fn transact(
        &mut self,
        index: LogIndex,
        compares: &[Compare],
        success: &[TxnOp],
        failure: &[TxnOp],
    ) -> Result<Outcome, StoreError> {
        let mut succeeded = true;
        for compare in compares {
            if !compare.holds(self.get(compare.key())?.as_ref()) {
                succeeded = false;
                break;
            }
        }
        let branch = if succeeded { success } else { failure };
        for op in branch {
            match op {
                TxnOp::Put { key, value } => self.write(index, key, Some(value))?,
                TxnOp::Delete { key } => self.write(index, key, None)?,
            };
        }
        Ok(Outcome::Txn {
            revision: index,
            succeeded,
        })
    }

    /// Sets `key` (`None`: deletes it) at revision `index`; returns its new version.
    fn write(
        &mut self,
        index: LogIndex,
        key: &Bytes,
        value: Option<&Bytes>,
    ) -> Result<Option<Versioned>, StoreError> {
        let Some(value) = value else {
            if self.get(key)?.is_some() {
                self.record(index, key, None);
            }
            self.changes.insert(key.clone(), None);
            return Ok(None);
        };
        let create_revision = self
            .get(key)?
            .map_or(index, |version| version.create_revision);
        let version = Versioned {
            value: value.clone(),
            create_revision,
            mod_revision: index,
        };
        self.changes.insert(key.clone(), Some(version.clone()));
        self.record(index, key, Some(version.clone()));
        Ok(Some(version))
    }

    fn record(&mut self, revision: LogIndex, key: &Bytes, version: Option<Versioned>) {
        let key = key.clone();
        self.changed.push(Change {
            revision,
            key,
            version,
        });
    }

    /// The changes applied since the last call, in log order (cheap: keys and values are
    /// shared). A snapshot install drops those not taken: they are older than it.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changed)
    }

    /// What changed since the last call, for the shell to make durable; reads keep seeing
    /// it until [`StrongMachine::writes_persisted`].
    pub fn take_writes(&mut self) -> MachineWrites {
        let changes = std::mem::take(&mut self.changes);
        let rows = changes
            .iter()
            .map(|(key, row)| (key.clone(), row.clone()))
            .collect();
        self.flushing.extend(changes);
        let applied = (self.applied != self.handed_applied).then_some(self.applied);
        self.handed_applied = self.applied;
        MachineWrites {
            rows,
            clock: applied.map(|_| self.clock),
            sessions: self.sessions.take_changes(),
            applied,
            ..MachineWrites::default()
        }
    }

    /// The writes the last [`StrongMachine::take_writes`] handed out are durable.
    pub fn writes_persisted(&mut self) {
        self.flushing.clear();
        self.durable_applied = self.handed_applied;
    }

    /// A point-in-time image of the store's committed state (at
    /// [`StrongMachine::durable_applied`]), for Raft snapshots.
    pub fn image(&self) -> Result<Arc<dyn crate::raft::SnapshotSource>, StoreError> {
        self.store.image(self.group)
    }
}

/// Stored rows a scan reads per batch: enough to fill a page of small values in a few reads.
const SCAN_BATCH_ROWS: usize = 256;

/// A scan page being filled.
struct Page {
    entries: Vec<(Bytes, Versioned)>,
    /// The entries' bytes, as [`scan_entry_bytes`] counts them.
    bytes: usize,
    limit: usize,
}

impl Page {
    fn new(limit: usize) -> Page {
        Page {
            entries: Vec::new(),
            bytes: 0,
            limit,
        }
    }

    /// Entries the limit still allows.
    fn room(&self) -> usize {
        self.limit - self.entries.len()
    }

    /// Counts the entry in, unless the page is full by count or it would pass
    /// [`SCAN_BYTES_MAX`] (the first entry always fits: the limits make sure of it).
    fn admits(&mut self, key: &[u8], version: &Versioned) -> bool {
        let added = scan_entry_bytes(key, version);
        if self.room() == 0 || (!self.entries.is_empty() && self.bytes + added > SCAN_BYTES_MAX) {
            return false;
        }
        self.bytes += added;
        true
    }
}

/// The first key a scan reads: the prefix itself, or the key right after `after`.
fn scan_start(prefix: &[u8], after: Option<&[u8]>) -> Bytes {
    match after.map(successor) {
        Some(next) if next.as_ref() > prefix => next,
        _ => Bytes::copy_from_slice(prefix),
    }
}

/// The smallest key greater than `key`: `key` followed by a zero byte.
fn successor(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    Bytes::from(next)
}

/// The entries of `overlay` whose keys start with `prefix`.
fn prefixed<'a>(
    overlay: &'a Overlay,
    prefix: &'a [u8],
) -> impl Iterator<Item = (&'a Bytes, &'a Option<Versioned>)> {
    let start = Bound::Included(Bytes::copy_from_slice(prefix));
    overlay
        .range((start, Bound::Unbounded))
        .take_while(move |(key, _)| key.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strong::command::{Field, KEY_BYTES_MAX, SCAN_LIMIT_MAX, VALUE_BYTES_MAX};
    use crate::strong::sessions::{SESSION_RESULT_BYTES_MAX, UNACKED_RESULTS_MAX};

    fn bytes(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    /// A request that acknowledges nothing and may open its session, at log clock 0.
    fn request(client: u64, seq: u64, command: Command) -> Vec<u8> {
        stamped(client, seq, 1, 0, command)
            .encode()
            .unwrap()
            .to_vec()
    }

    fn stamped(client: u64, seq: u64, first_unacked: u64, at_ms: u64, command: Command) -> Request {
        Request {
            client: ClientId(client),
            seq,
            first_unacked,
            opens_session: true,
            proposed_at: WallMillis(at_ms),
            command,
        }
    }

    fn apply_request(machine: &mut StrongMachine, request: &Request) -> Response {
        let index = LogIndex(machine.applied().0 + 1);
        machine.apply(index, &request.encode().unwrap()).unwrap()
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

    fn txn(compares: Vec<Compare>, success: Vec<TxnOp>, failure: Vec<TxnOp>) -> Command {
        Command::Txn {
            compares,
            success,
            failure,
        }
    }

    fn txn_put(key: &str, value: &str) -> TxnOp {
        TxnOp::Put {
            key: bytes(key),
            value: bytes(value),
        }
    }

    #[test]
    fn a_transaction_runs_the_branch_its_compares_pick_at_one_revision() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        let stock = apply(&mut machine, 1, 1, put("stock", "5"));
        let Ok(Outcome::Put { revision }) = stock.result else {
            panic!("{stock:?}");
        };
        machine.take_changes();
        let sell = |at| {
            let holds = vec![
                Compare::Revision {
                    key: bytes("stock"),
                    revision: Some(at),
                },
                Compare::Value {
                    key: bytes("stock"),
                    value: Some(bytes("5")),
                },
            ];
            let then = vec![txn_put("stock", "4"), txn_put("order", "o-9")];
            let otherwise = vec![TxnOp::Delete { key: bytes("hold") }];
            txn(holds, then, otherwise)
        };
        let sold = apply(&mut machine, 1, 2, sell(revision));
        assert_eq!(
            sold.result,
            Ok(Outcome::Txn {
                revision: LogIndex(2),
                succeeded: true
            })
        );
        for key in [b"stock".as_slice(), b"order"] {
            let row = machine.get(key).unwrap().expect("written");
            assert_eq!(
                row.mod_revision,
                LogIndex(2),
                "every change at one revision"
            );
        }
        let changes = machine.take_changes();
        assert_eq!(changes.len(), 2, "watches see both changes: {changes:?}");
        assert!(changes.iter().all(|c| c.revision == LogIndex(2)));

        apply(&mut machine, 1, 3, put("hold", "x"));
        let again = apply(&mut machine, 1, 4, sell(revision));
        assert_eq!(
            again.result,
            Ok(Outcome::Txn {
                revision: LogIndex(4),
                succeeded: false
            })
        );
        assert_eq!(machine.get(b"hold").unwrap(), None, "the else branch ran");
        assert_eq!(machine.get(b"stock").unwrap().unwrap().value, bytes("4"));

        let retried = apply(&mut machine, 1, 2, sell(revision));
        assert!(retried.duplicate, "a retry answers its first result");
        assert_eq!(retried.result, sold.result);
    }

    #[test]
    fn a_transaction_over_its_limits_is_refused_with_nothing_applied() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        let twice = txn(vec![], vec![txn_put("k", "a"), txn_put("k", "b")], vec![]);
        let refused = apply(&mut machine, 1, 1, twice);
        assert!(matches!(
            refused.result,
            Err(CommandError::TxnDuplicateKey { .. })
        ));
        let many = (0..=crate::strong::TXN_OPS_MAX)
            .map(|i| txn_put(&format!("k{i}"), "v"))
            .collect();
        let refused = apply(&mut machine, 1, 2, txn(vec![], many, vec![]));
        assert!(matches!(
            refused.result,
            Err(CommandError::TxnTooLong { .. })
        ));
        let big = txn_put("k", &"x".repeat(VALUE_BYTES_MAX));
        let refused = apply(
            &mut machine,
            1,
            3,
            txn(vec![], vec![big.clone(), txn_put("j", "y")], vec![]),
        );
        assert!(matches!(refused.result, Err(CommandError::TooLarge { .. })));
        assert_eq!(machine.get(b"k").unwrap(), None);
        assert!(machine.take_changes().is_empty());
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
        let version = machine.get(b"a").unwrap().unwrap();
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
        assert_eq!(
            machine.get(b"a").unwrap().unwrap().create_revision,
            LogIndex(6)
        );
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
        assert_eq!(
            machine.get(b"k").unwrap().unwrap().mod_revision,
            LogIndex(4)
        );
        let removed = apply(&mut machine, 1, 5, cas(Some(LogIndex(4)), None));
        assert!(matches!(
            removed.result,
            Ok(Outcome::Cas {
                succeeded: true,
                current: None,
                ..
            })
        ));
        assert!(machine.get(b"k").unwrap().is_none());
    }

    #[test]
    fn retries_return_the_first_result_and_acknowledged_seqs_are_refused() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        let first = apply(&mut machine, 7, 1, put("a", "x"));
        apply(&mut machine, 8, 1, put("a", "other"));
        let retry = apply(&mut machine, 7, 1, put("a", "x"));
        assert!(retry.duplicate && !first.duplicate);
        assert_eq!(retry.result, first.result);
        assert_eq!(
            machine.get(b"a").unwrap().unwrap().value,
            bytes("other"),
            "not reapplied"
        );
        // Seq 2 says the client has its answer to seq 1: that result goes.
        apply_request(&mut machine, &stamped(7, 2, 2, 0, put("a", "y")));
        assert_eq!(machine.session(ClientId(7)).unwrap().results.len(), 1);
        let old = apply(&mut machine, 7, 1, put("a", "x"));
        assert_eq!(
            old.result,
            Err(CommandError::AlreadyAcknowledged {
                client: ClientId(7),
                seq: 1,
                first_unacked: 2,
            })
        );
        assert!(!old.duplicate);
        assert_eq!(machine.get(b"a").unwrap().unwrap().value, bytes("y"));
    }

    /// Writes of one client in flight together commit in any order: each applies once, and
    /// a resend of each answers its own first result.
    #[test]
    fn writes_of_one_session_apply_in_any_order_and_once() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        let mut first = BTreeMap::new();
        for seq in [3, 1, 4, 2] {
            let response = apply(&mut machine, 7, seq, put(&format!("k{seq}"), "v"));
            assert!(
                !response.duplicate && response.result.is_ok(),
                "{response:?}"
            );
            first.insert(seq, response.result);
        }
        for seq in [2, 4, 1, 3] {
            let retry = apply(&mut machine, 7, seq, put(&format!("k{seq}"), "again"));
            assert!(retry.duplicate, "seq {seq}");
            assert_eq!(retry.result, first[&seq]);
        }
        assert_eq!(machine.get(b"k3").unwrap().unwrap().value, bytes("v"));
        // Seq 5 says 1 and 2 were answered; 3 and 4 are still waited for.
        apply_request(&mut machine, &stamped(7, 5, 3, 0, put("k5", "v")));
        let kept: Vec<u64> = machine
            .session(ClientId(7))
            .unwrap()
            .results
            .keys()
            .copied()
            .collect();
        assert_eq!(kept, vec![3, 4, 5]);
        let late = apply_request(&mut machine, &stamped(7, 4, 3, 0, put("k4", "late")));
        assert!(
            late.duplicate,
            "a lower first_unacked does not bring results back"
        );
        assert_eq!(machine.session(ClientId(7)).unwrap().first_unacked, 3);
        let bug = apply_request(&mut machine, &stamped(7, 2, 1, 0, put("k2", "x")));
        assert!(matches!(
            bug.result,
            Err(CommandError::AlreadyAcknowledged {
                seq: 2,
                first_unacked: 3,
                ..
            })
        ));
    }

    fn timed(timeout_ms: u64, sessions_max: usize) -> StrongMachine {
        StrongMachine::new(MachineConfig {
            session_timeout: Duration::from_millis(timeout_ms),
            sessions_max,
            ..MachineConfig::default()
        })
    }

    /// A session idle past the timeout by the log clock is forgotten at the same entry on
    /// every replica; a later request of it that may not open a session is refused, never
    /// applied, while a young client's first request opens one.
    #[test]
    fn an_expired_session_refuses_and_never_applies() {
        let mut machine = timed(1_000, 16);
        let first = apply_request(&mut machine, &stamped(7, 1, 1, 100, put("a", "x")));
        assert!(first.result.is_ok());
        // The clock passes 100 + 1000 only with this entry, a read of another client.
        apply_request(
            &mut machine,
            &stamped(8, 1, 1, 1_100, Command::Get { key: bytes("a") }),
        );
        assert!(
            machine.session(ClientId(7)).is_some(),
            "idle exactly the timeout"
        );
        let get = Command::Get { key: bytes("a") };
        apply_request(&mut machine, &stamped(8, 2, 1, 1_101, get));
        assert!(machine.session(ClientId(7)).is_none(), "expired");
        assert_eq!(machine.clock(), WallMillis(1_101));
        let resend = Request {
            opens_session: false,
            ..stamped(7, 1, 1, 1_200, put("a", "x2"))
        };
        let refused = apply_request(&mut machine, &resend);
        assert_eq!(
            refused.result,
            Err(CommandError::SessionExpired {
                client: ClientId(7),
                seq: 1
            })
        );
        assert_eq!(
            machine.get(b"a").unwrap().unwrap().value,
            bytes("x"),
            "not applied"
        );
        assert!(
            machine.session(ClientId(7)).is_none(),
            "a refusal opens nothing"
        );
        // A leader whose clock is behind: the log clock stays where it was.
        apply_request(&mut machine, &stamped(9, 1, 1, 5, put("b", "y")));
        assert_eq!(machine.clock(), WallMillis(1_200));
        assert_eq!(
            machine.session(ClientId(9)).unwrap().active_at,
            WallMillis(1_200)
        );
    }

    /// Sessions are bounded by refusing a new one past the limit, never by evicting a live
    /// one (whose retry would then apply twice).
    #[test]
    fn a_new_session_past_the_limit_is_refused_not_evicting() {
        let mut machine = timed(1_000, 2);
        apply_request(&mut machine, &stamped(1, 1, 1, 0, put("a", "1")));
        apply_request(&mut machine, &stamped(2, 1, 1, 500, put("b", "2")));
        let third = apply_request(&mut machine, &stamped(3, 1, 1, 600, put("c", "3")));
        assert_eq!(
            third.result,
            Err(CommandError::TooManySessions { sessions_max: 2 })
        );
        assert!(machine.get(b"c").unwrap().is_none(), "not applied");
        let retry = apply_request(&mut machine, &stamped(1, 1, 1, 700, put("a", "again")));
        assert!(retry.duplicate, "the oldest session is still there");
        // Client 1 idles past the timeout: its room goes to client 3.
        let later = apply_request(&mut machine, &stamped(3, 1, 1, 1_001, put("c", "3")));
        assert!(later.result.is_ok(), "{later:?}");
        assert!(machine.session(ClientId(1)).is_none());
        assert!(machine.session(ClientId(2)).is_some());
    }

    /// A client that never acknowledges fills its session: the next write is refused, not
    /// applied, until it acknowledges; so are writes past the byte budget (cas values).
    #[test]
    fn a_full_session_refuses_new_writes() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        for seq in 1..=UNACKED_RESULTS_MAX as u64 {
            apply(&mut machine, 7, seq, put("k", "v"));
        }
        let next = UNACKED_RESULTS_MAX as u64 + 1;
        let full = apply(&mut machine, 7, next, put("k", "over"));
        assert!(matches!(
            full.result,
            Err(CommandError::SessionFull {
                results: UNACKED_RESULTS_MAX,
                ..
            })
        ));
        assert_eq!(machine.get(b"k").unwrap().unwrap().value, bytes("v"));
        let acked = apply_request(&mut machine, &stamped(7, next, next, 0, put("k", "over")));
        assert!(acked.result.is_ok(), "{acked:?}");
        assert_eq!(machine.session(ClientId(7)).unwrap().results.len(), 1);

        let value = Bytes::from(vec![b'v'; VALUE_BYTES_MAX]);
        apply(
            &mut machine,
            8,
            1,
            Command::Put {
                key: bytes("big"),
                value,
            },
        );
        let failed_cas = |seq| Command::Cas {
            key: bytes("big"),
            expected: None,
            value: Some(bytes(&format!("{seq}"))),
        };
        let kept = apply(&mut machine, 9, 1, failed_cas(1));
        assert!(matches!(
            kept.result,
            Ok(Outcome::Cas {
                succeeded: false,
                ..
            })
        ));
        let refused = apply(&mut machine, 9, 2, failed_cas(2));
        assert!(matches!(
            refused.result,
            Err(CommandError::SessionFull { results: 1, .. })
        ));
        let bytes_held = machine.session(ClientId(9)).unwrap().result_bytes();
        assert!(bytes_held <= SESSION_RESULT_BYTES_MAX + VALUE_BYTES_MAX + 1024);
    }

    /// The total the machine keeps up to date is the sum over its sessions.
    fn assert_bytes_add_up(machine: &StrongMachine) {
        machine.sessions.bytes();
    }

    /// All sessions together keep at most about `session_bytes_max` of results: past it any
    /// client's new write is refused, not applied, until results are acknowledged or
    /// sessions expire; the running total follows every change.
    #[test]
    fn the_sessions_together_stay_within_their_byte_budget() {
        let mut machine = StrongMachine::new(MachineConfig {
            session_bytes_max: 1_000,
            session_timeout: Duration::from_millis(1_000),
            ..MachineConfig::default()
        });
        let mut seq = 0;
        while machine.sessions.bytes() < 1_000 {
            seq += 1;
            let response = apply(&mut machine, 1, seq, put("a", "v"));
            assert!(response.result.is_ok(), "{response:?}");
            assert_bytes_add_up(&machine);
        }
        let refused = apply(&mut machine, 2, 1, put("b", "v"));
        assert!(matches!(
            refused.result,
            Err(CommandError::SessionsFull {
                bytes_max: 1_000,
                ..
            })
        ));
        assert!(machine.get(b"b").unwrap().is_none(), "not applied");
        let retry = apply(&mut machine, 1, 1, put("a", "v"));
        assert!(retry.duplicate, "a duplicate is still answered");
        // Client 1 acknowledges all but its last: room again.
        apply_request(&mut machine, &stamped(1, seq, seq, 0, put("a", "v")));
        assert_bytes_add_up(&machine);
        let taken = apply(&mut machine, 2, 1, put("b", "v"));
        assert!(taken.result.is_ok(), "{taken:?}");
        // Client 1 expires: its bytes go with it.
        apply_request(&mut machine, &stamped(2, 2, 1, 1_001, put("b", "w")));
        assert!(machine.session(ClientId(1)).is_none());
        assert_bytes_add_up(&machine);
    }

    /// Two replicas, one restored from the other's snapshot stream midway, apply the same
    /// entries to the same results and sessions: expiry follows the log clock the snapshot
    /// carries, not the replica's history (a leader behind the clock cannot revive it).
    #[test]
    fn sessions_and_expiry_are_the_same_on_a_replica_restored_from_a_snapshot() {
        let config = MachineConfig {
            session_timeout: Duration::from_millis(1_000),
            ..MachineConfig::default()
        };
        let store = Arc::new(MemoryMachineStore::new());
        let shared: Arc<dyn MachineStore> = store.clone();
        let mut original = StrongMachine::open(config.clone(), GroupId(3), shared).unwrap();
        apply_request(&mut original, &stamped(1, 1, 1, 100, put("a", "1")));
        apply_request(&mut original, &stamped(2, 2, 1, 900, put("b", "2")));
        apply_request(&mut original, &stamped(2, 1, 1, 950, put("c", "3")));
        // The clock's high mark arrives with a read, which no session records.
        apply_request(
            &mut original,
            &stamped(3, 1, 1, 1_050, Command::Get { key: bytes("a") }),
        );
        store.commit(GroupId(3), &original.take_writes());
        original.writes_persisted();
        let copy: Arc<dyn MachineStore> = Arc::new(store_copy(&store));
        let mut restored = StrongMachine::open(config, GroupId(3), copy).unwrap();
        assert_eq!(restored.clock(), WallMillis(1_050));
        assert_eq!(restored.sessions.all(), original.sessions.all());
        let rest = [
            // A leader whose clock is behind; then the log clock passes client 1's timeout.
            stamped(2, 3, 2, 200, put("d", "4")),
            stamped(2, 2, 2, 1_101, put("b", "again")),
            Request {
                opens_session: false,
                ..stamped(1, 1, 1, 1_102, put("a", "again"))
            },
            stamped(2, 1, 1, 1_103, put("c", "again")),
        ];
        for request in &rest {
            let a = apply_request(&mut original, request);
            let b = apply_request(&mut restored, request);
            assert_eq!(a, b, "{request:?}");
        }
        assert_eq!(restored.sessions.all(), original.sessions.all());
        assert!(original.session(ClientId(1)).is_none());
        assert_eq!(original.clock(), restored.clock());
        assert_bytes_add_up(&original);
        assert_eq!(restored.sessions.bytes(), original.sessions.bytes());
    }

    #[cfg(feature = "sim-bugs")]
    #[test]
    fn planted_no_dedup_reapplies_retries() {
        let config = MachineConfig {
            bug: Some(MachineBug::NoDedup),
            ..MachineConfig::default()
        };
        let mut machine = StrongMachine::new(config);
        apply(&mut machine, 7, 1, put("a", "x"));
        apply(&mut machine, 8, 1, put("a", "other"));
        let retry = apply(&mut machine, 7, 1, put("a", "x"));
        assert!(!retry.duplicate);
        assert_eq!(machine.get(b"a").unwrap().unwrap().value, bytes("x"));
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
        assert!(machine.get(b"a").unwrap().is_none());
        let scan = Command::Scan {
            prefix: bytes(""),
            limit: SCAN_LIMIT_MAX + 1,
            after: None,
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
        let (entries, more) = machine.scan(b"b", None, 2).unwrap();
        let keys: Vec<&[u8]> = entries.iter().map(|(key, _)| key.as_ref()).collect();
        assert_eq!(keys, vec![b"b1".as_ref(), b"b2".as_ref()]);
        assert!(more);
        let (entries, more) = machine.scan(b"b", None, 3).unwrap();
        assert_eq!(entries.len(), 3);
        assert!(!more);
        let through_log = apply(
            &mut machine,
            1,
            6,
            Command::Scan {
                prefix: bytes("c"),
                limit: 5,
                after: None,
            },
        );
        assert!(matches!(
            through_log.result,
            Ok(Outcome::Scan { ref entries, more: false }) if entries.len() == 1
        ));
    }

    /// A machine's writes, committed to its store, and the machine reopened on it.
    fn persisted(machine: &mut StrongMachine, store: &MemoryMachineStore) -> StrongMachine {
        store.commit(GroupId(3), &machine.take_writes());
        machine.writes_persisted();
        let store: Arc<dyn MachineStore> = Arc::new(store_copy(store));
        StrongMachine::open(MachineConfig::default(), GroupId(3), store).unwrap()
    }

    fn store_copy(store: &MemoryMachineStore) -> MemoryMachineStore {
        // Replays the image stream into a fresh store: what a follower's staging does.
        let image = store.image(GroupId(3)).unwrap();
        let copy = MemoryMachineStore::new();
        let mut cursor = Bytes::new();
        let mut restart = true;
        loop {
            let (data, next) = image.chunk(&cursor, 40).unwrap();
            let chunk = crate::wire::unframed::decode(&data).unwrap();
            let staged = crate::strong::store::StagedChunk { restart, chunk };
            let writes = MachineWrites {
                staged: vec![staged],
                install: next.is_none(),
                ..MachineWrites::default()
            };
            copy.commit(GroupId(3), &writes);
            restart = false;
            match next {
                Some(next) => cursor = next,
                None => return copy,
            }
        }
    }

    #[test]
    fn writes_and_sessions_survive_the_store_and_its_image_stream() {
        let store = Arc::new(MemoryMachineStore::new());
        let shared: Arc<dyn MachineStore> = store.clone();
        let mut machine =
            StrongMachine::open(MachineConfig::default(), GroupId(3), shared).unwrap();
        for (seq, key) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            apply(&mut machine, 1, seq as u64 + 1, put(key, "some value"));
        }
        apply(&mut machine, 2, 1, put("b", "y"));
        apply(&mut machine, 2, 2, Command::Delete { key: bytes("c") });
        let mut restored = persisted(&mut machine, &store);
        assert_eq!(restored.applied(), LogIndex(7));
        assert_eq!(restored.get(b"b").unwrap(), machine.get(b"b").unwrap());
        assert_eq!(restored.get(b"c").unwrap(), None);
        let (keys, more) = restored.scan(b"", None, 10).unwrap();
        assert_eq!(keys.len(), 4);
        assert!(!more);
        let retry = apply(&mut restored, 1, 5, put("e", "some value"));
        assert!(retry.duplicate, "sessions survive the store and the stream");
        let next = apply(&mut machine, 1, 5, put("e", "some value"));
        assert_eq!(retry, next);
    }

    #[test]
    fn scan_merges_unpersisted_changes_over_the_store() {
        let store = Arc::new(MemoryMachineStore::new());
        let shared: Arc<dyn MachineStore> = store.clone();
        let mut machine =
            StrongMachine::open(MachineConfig::default(), GroupId(3), shared).unwrap();
        for (seq, key) in ["p1", "p2", "p3", "p4", "q"].iter().enumerate() {
            apply(&mut machine, 1, seq as u64 + 1, put(key, "v"));
        }
        store.commit(GroupId(3), &machine.take_writes());
        machine.writes_persisted();
        // In flight (handed out, not durable) and newer still: both shadow the store.
        apply(&mut machine, 1, 6, Command::Delete { key: bytes("p1") });
        let in_flight = machine.take_writes();
        apply(&mut machine, 1, 7, Command::Delete { key: bytes("p2") });
        apply(&mut machine, 1, 8, put("p0", "new"));
        let (entries, more) = machine.scan(b"p", None, 2).unwrap();
        let keys: Vec<&[u8]> = entries.iter().map(|(key, _)| key.as_ref()).collect();
        assert_eq!(keys, vec![b"p0".as_ref(), b"p3".as_ref()]);
        assert!(more);
        let (entries, more) = machine.scan(b"p", None, 3).unwrap();
        assert_eq!(entries.len(), 3);
        assert!(!more);
        assert_eq!(store.len(GroupId(3)), 5, "nothing reached the store yet");
        store.commit(GroupId(3), &in_flight);
        machine.writes_persisted();
        assert_eq!(machine.scan(b"p", None, 3).unwrap().0.len(), 3);
    }

    fn scan_page(prefix: &str, after: Option<&Bytes>, limit: u32) -> Command {
        Command::Scan {
            prefix: bytes(prefix),
            limit,
            after: after.cloned(),
        }
    }

    /// The story: a scan answered every key up to its limit in one message, however large,
    /// and past the frame limit (8 MiB) the node could not send it. A page now stops before
    /// SCAN_BYTES_MAX (taking at least one entry), says there is more, and the next page
    /// starts after its last key: paging through returns every key exactly once, merging
    /// keys in the store with changes not yet persisted.
    #[test]
    fn scan_pages_are_bounded_by_bytes_and_return_every_key_once() {
        let store = Arc::new(MemoryMachineStore::new());
        let shared: Arc<dyn MachineStore> = store.clone();
        let mut machine =
            StrongMachine::open(MachineConfig::default(), GroupId(3), shared).unwrap();
        let big = |i: usize| Bytes::from(vec![b'a' + (i % 26) as u8; VALUE_BYTES_MAX]);
        let put_big = |key: String, i| Command::Put {
            key: Bytes::from(key),
            value: big(i),
        };
        let mut seq = 0;
        let mut next_seq = || {
            seq += 1;
            seq
        };
        for i in 0..8 {
            apply(&mut machine, 1, next_seq(), put_big(format!("k{i:02}"), i));
        }
        store.commit(GroupId(3), &machine.take_writes());
        machine.writes_persisted();
        // Not persisted: two new keys, a delete and an overwrite shadow the store.
        for i in [8, 9] {
            apply(&mut machine, 1, next_seq(), put_big(format!("k{i:02}"), i));
        }
        let delete = Command::Delete { key: bytes("k03") };
        apply(&mut machine, 1, next_seq(), delete);
        apply(&mut machine, 1, next_seq(), put("k05", "small now"));
        let expected: Vec<String> = [0, 1, 2, 4, 5, 6, 7, 8, 9]
            .iter()
            .map(|i| format!("k{i:02}"))
            .collect();
        let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
        loop {
            let command = scan_page("k", after.as_ref(), SCAN_LIMIT_MAX);
            let response = apply(&mut machine, 2, next_seq(), command);
            let Ok(Outcome::Scan { entries, more }) = response.result else {
                panic!("a scan answers a page: {response:?}");
            };
            pages += 1;
            assert!(!entries.is_empty(), "a page holds at least one entry");
            let page_bytes: usize = entries.iter().map(|(k, v)| scan_entry_bytes(k, v)).sum();
            assert!(
                page_bytes <= SCAN_BYTES_MAX,
                "page {pages}: {page_bytes} bytes"
            );
            after = entries.last().map(|(key, _)| key.clone());
            seen.extend(entries.into_iter().map(|(key, _)| key));
            if !more {
                break;
            }
        }
        let seen: Vec<String> = seen
            .iter()
            .map(|key| String::from_utf8(key.to_vec()).unwrap())
            .collect();
        assert_eq!(seen, expected, "every key once, in order");
        assert!(
            pages >= 3,
            "8 MiB of values take at least three pages: {pages}"
        );
    }

    /// Pages longer than one store batch (SCAN_BATCH_ROWS) merge every batch with the
    /// changes not yet persisted, across the batch boundaries, as a plain map would.
    #[test]
    fn pages_span_store_batches_and_see_unpersisted_changes() {
        let store = Arc::new(MemoryMachineStore::new());
        let shared: Arc<dyn MachineStore> = store.clone();
        let mut machine =
            StrongMachine::open(MachineConfig::default(), GroupId(3), shared).unwrap();
        let mut model = BTreeMap::new();
        let mut seq = 0;
        let mut write = |machine: &mut StrongMachine, command: Command| {
            seq += 1;
            apply(machine, 1, seq, command);
        };
        for i in 0..600 {
            let key = format!("k{i:04}");
            write(&mut machine, put(&key, "stored"));
            model.insert(key, ());
        }
        store.commit(GroupId(3), &machine.take_writes());
        machine.writes_persisted();
        for i in (0..600).step_by(7) {
            let key = format!("k{i:04}");
            write(&mut machine, Command::Delete { key: bytes(&key) });
            model.remove(&key);
            let between = format!("k{i:04}a");
            write(&mut machine, put(&between, "new"));
            model.insert(between, ());
        }
        let expected: Vec<String> = model.into_keys().collect();
        for limit in [SCAN_LIMIT_MAX, 300, 1] {
            let (mut seen, mut after) = (Vec::new(), None::<Bytes>);
            loop {
                let (entries, more) = machine.scan(b"k", after.as_deref(), limit).unwrap();
                after = entries.last().map(|(key, _)| key.clone());
                seen.extend(
                    entries
                        .iter()
                        .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap()),
                );
                if !more {
                    break;
                }
            }
            assert_eq!(seen, expected, "limit {limit}");
        }
    }

    #[test]
    fn scan_continues_after_a_key_within_the_prefix() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        for (seq, key) in ["a", "b1", "b2", "b3", "c"].iter().enumerate() {
            apply(&mut machine, 1, seq as u64 + 1, put(key, "v"));
        }
        let keys = |after: &[u8], limit| {
            let (entries, more) = machine.scan(b"b", Some(after), limit).unwrap();
            let keys: Vec<Bytes> = entries.into_iter().map(|(key, _)| key).collect();
            (keys, more)
        };
        assert_eq!(keys(b"b1", 1), (vec![bytes("b2")], true));
        assert_eq!(keys(b"b1", 5), (vec![bytes("b2"), bytes("b3")], false));
        assert_eq!(
            keys(b"a", 1),
            (vec![bytes("b1")], true),
            "before the prefix"
        );
        assert_eq!(keys(b"b", 5).0.len(), 3, "the prefix itself is not a key");
        assert_eq!(keys(b"b3", 5), (vec![], false), "after the last key");
        assert_eq!(keys(b"c", 5), (vec![], false), "past the prefix");
        let long = Bytes::from(vec![b'b'; KEY_BYTES_MAX + 1]);
        let refused = machine.scan(b"b", Some(&long), 5);
        assert!(matches!(
            refused,
            Err(ReadFailure::Command(CommandError::TooLarge { .. }))
        ));
    }

    /// The story: a scan through the log was remembered as its client's last result, so the
    /// session table (and every snapshot chunk carrying it) held up to a page of values per
    /// client. A read needs no at-most-once: a scan now leaves the session as the client's
    /// last write left it, and that write is still deduplicated.
    #[test]
    fn a_scan_through_the_log_leaves_the_session_alone() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        let value = Bytes::from(vec![b'v'; 64 * 1024]);
        let first = apply(
            &mut machine,
            7,
            1,
            Command::Put {
                key: bytes("a"),
                value,
            },
        );
        machine.take_writes();
        let scan = apply(&mut machine, 7, 2, scan_page("", None, 10));
        assert!(matches!(scan.result, Ok(Outcome::Scan { .. })));
        let session = &machine.session(ClientId(7)).unwrap();
        assert_eq!(
            session.results,
            BTreeMap::from([(1, first.result.clone())]),
            "the scan's result is not recorded"
        );
        assert!(
            machine.take_writes().sessions.is_empty(),
            "nothing to persist for a read"
        );
        let again = apply(&mut machine, 7, 2, scan_page("", None, 10));
        assert!(!again.duplicate, "a retried scan reads again");
        assert_eq!(again.result, scan.result);
        let retry = apply(&mut machine, 7, 1, put("a", "other"));
        assert!(
            retry.duplicate,
            "the write before the scan is still deduplicated"
        );
        assert_eq!(retry.result, first.result);
        let next = apply_request(&mut machine, &stamped(7, 3, 3, 0, put("b", "x")));
        assert!(!next.duplicate && next.result.is_ok());
        let old = apply(&mut machine, 7, 2, scan_page("", None, 10));
        assert!(old.result.is_ok(), "a read is never acknowledged: {old:?}");
    }

    /// A failed cas keeps the current value (up to VALUE_BYTES_MAX) in its session; the
    /// snapshot stream counted each session as 128 bytes, so a chunk of such sessions could
    /// grow past a frame.
    #[test]
    fn snapshot_chunks_count_the_values_sessions_carry() {
        let store = Arc::new(MemoryMachineStore::new());
        let shared: Arc<dyn MachineStore> = store.clone();
        let mut machine =
            StrongMachine::open(MachineConfig::default(), GroupId(3), shared).unwrap();
        let value = Bytes::from(vec![b'v'; VALUE_BYTES_MAX]);
        apply(
            &mut machine,
            1,
            1,
            Command::Put {
                key: bytes("k"),
                value,
            },
        );
        for client in 2..10 {
            let refused = Command::Cas {
                key: bytes("k"),
                expected: None,
                value: Some(bytes("x")),
            };
            apply(&mut machine, client, 1, refused);
        }
        store.commit(GroupId(3), &machine.take_writes());
        machine.writes_persisted();
        let image = machine.image().unwrap();
        let (data, next) = image.chunk(&[], VALUE_BYTES_MAX).unwrap();
        assert!(next.is_some(), "the sessions take more than one chunk");
        assert!(
            data.len() <= 2 * VALUE_BYTES_MAX + 4096,
            "{} bytes",
            data.len()
        );
    }
}
