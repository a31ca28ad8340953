//! The state machine's side of transactions across keyspaces: intents, records and the
//! three steps (see [`crate::strong::twophase`] for the protocol).

use super::{StrongMachine, prefixed};
use crate::strong::command::{Command, CommandError, Outcome, Versioned};
use crate::strong::store::StoreError;
use crate::strong::twophase::{
    Decision, Intent, Part, RESERVED_PREFIX, Resolution, StepOutcome, TxnId, TxnRecord, TxnState,
    TxnStep, Write, intent_key, record_key,
};
use crate::types::{LogIndex, WallMillis};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// Intent rows a scan's lock check reads per batch.
const INTENT_BATCH_ROWS: usize = 64;

/// A step's result, or a refusal every replica agrees on.
type Stepped = Result<Result<Outcome, CommandError>, StoreError>;

impl StrongMachine {
    /// The intent on `key`, if a transaction holds it.
    pub(super) fn intent(&self, key: &[u8]) -> Result<Option<Intent>, StoreError> {
        if self.intents == 0 {
            return Ok(None);
        }
        self.row(&intent_key(key))
    }

    /// The intents the store holds (on open, and after a snapshot replaced the store): a scan
    /// of their prefix only.
    pub(super) fn count_intents(&self) -> Result<u64, StoreError> {
        let prefix = intent_key(b"");
        let mut from = prefix.clone();
        let mut count = 0;
        loop {
            let rows = self.store.scan(
                self.group,
                &from,
                &prefix,
                INTENT_BATCH_ROWS,
                super::SCAN_BYTES_MAX,
            )?;
            count += rows.len() as u64;
            match rows.last() {
                Some((row, _)) if rows.len() == INTENT_BATCH_ROWS => from = super::successor(row),
                _ => return Ok(count),
            }
        }
    }

    fn place_intent(
        &mut self,
        index: LogIndex,
        key: &Bytes,
        intent: &Intent,
    ) -> Result<(), StoreError> {
        if self.get(&intent_key(key))?.is_none() {
            self.intents += 1;
        }
        self.put_row(index, intent_key(key), intent)
    }

    fn drop_intent(&mut self, key: &Bytes) {
        self.intents = self.intents.saturating_sub(1);
        self.delete_row(intent_key(key));
    }

    fn record_of(&self, txn: TxnId) -> Result<Option<TxnRecord>, StoreError> {
        self.row(&record_key(txn))
    }

    fn row<T: DeserializeOwned>(&self, row: &Bytes) -> Result<Option<T>, StoreError> {
        let Some(version) = self.get(row)? else {
            return Ok(None);
        };
        crate::wire::decode(&version.value)
            .map(|(value, _)| Some(value))
            .map_err(|error| StoreError(format!("a transaction row does not decode: {error}")))
    }

    /// Writes one of the machine's own rows. Unlike a key's change it is not reported to
    /// watches.
    fn put_row<T: Serialize>(
        &mut self,
        index: LogIndex,
        row: Bytes,
        value: &T,
    ) -> Result<(), StoreError> {
        let value = crate::wire::encode(value)
            .map_err(|error| StoreError(format!("a transaction row does not encode: {error}")))?;
        let version = Versioned {
            value: Bytes::from(value),
            create_revision: index,
            mod_revision: index,
        };
        self.changes.insert(row, Some(version));
        Ok(())
    }

    fn delete_row(&mut self, row: Bytes) {
        self.changes.insert(row, None);
    }

    /// The first intent that stops `command`: any intent on a key it writes or compares, a
    /// write intent on a key it reads. A scan checks its own page ([`Self::scan_lock`]).
    pub(super) fn lock_on(&self, command: &Command) -> Result<Option<CommandError>, StoreError> {
        let (keys, writes_only): (Vec<&Bytes>, bool) = match command {
            Command::Put { key, .. } | Command::Delete { key } | Command::Cas { key, .. } => {
                (vec![key], false)
            }
            Command::Get { key } => (vec![key], true),
            Command::Txn {
                compares,
                success,
                failure,
            } => {
                let mut keys: Vec<&Bytes> = compares.iter().map(|c| c.key()).collect();
                keys.extend(success.iter().chain(failure).map(|op| op.key()));
                (keys, false)
            }
            Command::Scan { .. } | Command::TxnStep(_) => return Ok(None),
        };
        self.first_lock(keys, writes_only, None)
    }

    /// The write intent that stops a read of `key`, if any.
    pub(super) fn read_lock(&self, key: &[u8]) -> Result<Option<CommandError>, StoreError> {
        let Some(intent) = self.intent(key)? else {
            return Ok(None);
        };
        Ok(intent
            .writes()
            .then(|| locked(Bytes::copy_from_slice(key), intent)))
    }

    /// The first of `keys` held by a transaction other than `own` (by a write intent only,
    /// when `writes_only`), as the error that names it.
    fn first_lock<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a Bytes>,
        writes_only: bool,
        own: Option<TxnId>,
    ) -> Result<Option<CommandError>, StoreError> {
        for key in keys {
            let Some(intent) = self.intent(key)? else {
                continue;
            };
            if Some(intent.txn) != own && (intent.writes() || !writes_only) {
                return Ok(Some(locked(key.clone(), intent)));
            }
        }
        Ok(None)
    }

    /// The first write intent on a key a scan page covers: keys under `prefix` from `start`,
    /// up to `last` (or to the prefix's end when `last` is `None`).
    pub(super) fn scan_lock(
        &self,
        prefix: &[u8],
        start: &[u8],
        last: Option<&Bytes>,
    ) -> Result<Option<CommandError>, StoreError> {
        if self.intents == 0 {
            return Ok(None);
        }
        let rows_prefix = intent_key(prefix);
        let mut from = intent_key(start);
        let overlay: BTreeMap<Bytes, Option<Versioned>> = prefixed(&self.flushing, &rows_prefix)
            .chain(prefixed(&self.changes, &rows_prefix))
            .map(|(row, version)| (row.clone(), version.clone()))
            .collect();
        loop {
            let stored = self.store.scan(
                self.group,
                &from,
                &rows_prefix,
                INTENT_BATCH_ROWS,
                super::SCAN_BYTES_MAX,
            )?;
            let complete = stored.len() < INTENT_BATCH_ROWS;
            let batch_last = stored.last().map(|(row, _)| row.clone());
            let mut merged: BTreeMap<Bytes, Versioned> = stored.into_iter().collect();
            for (row, version) in overlay.range(from.clone()..) {
                if !complete && batch_last.as_ref().is_some_and(|last| row > last) {
                    break;
                }
                match version {
                    Some(version) => merged.insert(row.clone(), version.clone()),
                    None => merged.remove(row),
                };
            }
            for (row, version) in merged {
                let key = Bytes::copy_from_slice(&row[RESERVED_PREFIX.len() + 1..]);
                if last.is_some_and(|last| &key > last) {
                    return Ok(None);
                }
                let intent: Intent = crate::wire::decode(&version.value)
                    .map(|(intent, _)| intent)
                    .map_err(|error| StoreError(format!("an intent does not decode: {error}")))?;
                if intent.writes() {
                    return Ok(Some(locked(key, intent)));
                }
            }
            match batch_last {
                Some(row) if !complete => from = super::successor(&row),
                _ => return Ok(None),
            }
        }
    }

    /// Applies a transaction step at `index`.
    pub(super) fn step(&mut self, index: LogIndex, step: &TxnStep) -> Stepped {
        match step {
            TxnStep::Prepare {
                txn,
                anchor,
                ttl_ms,
                part,
            } => self.prepare(index, *txn, anchor, *ttl_ms, part),
            TxnStep::Decide { txn, decision } => self.decide(index, *txn, *decision),
            TxnStep::Resolve {
                txn,
                keys,
                resolution,
            } => {
                self.resolve(index, *txn, keys, *resolution)?;
                Ok(Ok(step_outcome(index, StepOutcome::Resolved)))
            }
        }
    }

    /// Places the part's intents (and, on the anchor, the pending record) unless another
    /// transaction holds one of its keys or this one is already decided.
    fn prepare(
        &mut self,
        index: LogIndex,
        txn: TxnId,
        anchor: &str,
        ttl_ms: Option<u64>,
        part: &Part,
    ) -> Stepped {
        let keys = part.keys();
        if let Some(error) = self.first_lock(&keys, false, Some(txn))? {
            return Ok(Err(error));
        }
        if let Some(ttl_ms) = ttl_ms {
            if let Some(record) = self.record_of(txn)? {
                // A resolver aborted it before this prepare applied: place nothing.
                return Ok(Ok(step_outcome(index, StepOutcome::Record(record.state))));
            }
            let expires_at = WallMillis(self.clock.0.saturating_add(ttl_ms));
            let record = TxnRecord {
                state: TxnState::Pending { expires_at },
                keys: keys.clone(),
            };
            self.put_row(index, record_key(txn), &record)?;
        }
        let mut held = true;
        for compare in &part.compares {
            held &= compare.holds(self.get(compare.key())?.as_ref());
        }
        let mut reads = Vec::with_capacity(part.reads.len());
        for key in &part.reads {
            reads.push((key.clone(), self.get(key)?));
        }
        for key in &keys {
            self.place_intent(index, key, &part.intent(txn, anchor, key))?;
        }
        Ok(Ok(step_outcome(
            index,
            StepOutcome::Prepared { held, reads },
        )))
    }

    /// Decides the record on the anchor, carrying out the decision on the anchor's intents in
    /// the same entry. A record that is not there (its prepare never applied here) is
    /// recorded aborted, so a prepare arriving late places nothing.
    fn decide(&mut self, index: LogIndex, txn: TxnId, decision: Decision) -> Stepped {
        let Some(record) = self.record_of(txn)? else {
            let record = TxnRecord {
                state: TxnState::Aborted,
                keys: Vec::new(),
            };
            self.put_row(index, record_key(txn), &record)?;
            return Ok(Ok(step_outcome(
                index,
                StepOutcome::Record(TxnState::Aborted),
            )));
        };
        let TxnState::Pending { expires_at } = record.state else {
            return Ok(Ok(step_outcome(index, StepOutcome::Record(record.state))));
        };
        let state = match decision {
            Decision::Commit { succeeded } => TxnState::Committed { succeeded },
            Decision::Abort {
                only_if_expired: true,
            } if self.clock < expires_at => record.state,
            Decision::Abort { .. } => TxnState::Aborted,
        };
        if let Some(resolution) = Resolution::of(state) {
            self.resolve(index, txn, &record.keys, resolution)?;
            let keys = Vec::new(); // Resolved: the record need not name them any more.
            self.put_row(index, record_key(txn), &TxnRecord { state, keys })?;
        }
        Ok(Ok(step_outcome(index, StepOutcome::Record(state))))
    }

    /// Applies (or drops) `txn`'s intents among `keys`; intents of other transactions stay.
    fn resolve(
        &mut self,
        index: LogIndex,
        txn: TxnId,
        keys: &[Bytes],
        resolution: Resolution,
    ) -> Result<(), StoreError> {
        for key in keys {
            let Some(intent) = self.intent(key)? else {
                continue;
            };
            if intent.txn != txn {
                continue;
            }
            if let Resolution::Commit { succeeded } = resolution {
                match intent.write(succeeded) {
                    Some(Write::Put(value)) => {
                        self.write(index, key, Some(value))?;
                    }
                    Some(Write::Delete) => {
                        self.write(index, key, None)?;
                    }
                    None => {}
                }
            }
            self.drop_intent(key);
        }
        Ok(())
    }
}

fn locked(key: Bytes, intent: Intent) -> CommandError {
    CommandError::Locked {
        key,
        txn: intent.txn,
        anchor: intent.anchor,
    }
}

fn step_outcome(revision: LogIndex, outcome: StepOutcome) -> Outcome {
    Outcome::TxnStep { revision, outcome }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strong::command::{ClientId, Compare, Request, TxnOp};
    use crate::strong::machine::{MachineConfig, ReadFailure};

    fn bytes(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    /// Applies `command` as the next entry, proposed at `at_ms` by the leader's clock.
    fn run(
        machine: &mut StrongMachine,
        at_ms: u64,
        command: Command,
    ) -> Result<Outcome, CommandError> {
        let seq = machine.applied().0 + 1;
        let request = Request {
            client: ClientId(1),
            seq,
            first_unacked: seq,
            opens_session: true,
            proposed_at: WallMillis(at_ms),
            command,
        };
        let entry = request.encode().unwrap();
        machine.apply(LogIndex(seq), &entry).unwrap().result
    }

    fn step(machine: &mut StrongMachine, at_ms: u64, step: TxnStep) -> StepOutcome {
        match run(machine, at_ms, Command::TxnStep(step)) {
            Ok(Outcome::TxnStep { outcome, .. }) => outcome,
            other => panic!("a step answers a step outcome, not {other:?}"),
        }
    }

    const TXN: TxnId = TxnId {
        client: ClientId(9),
        number: 1,
    };

    fn put(key: &str, value: &str) -> Command {
        Command::Put {
            key: bytes(key),
            value: bytes(value),
        }
    }

    /// A part that compares `x`'s value, reads `r`, and writes `x` and `y` in either branch.
    fn part() -> Part {
        Part {
            compares: vec![Compare::Value {
                key: bytes("x"),
                value: Some(bytes("1")),
            }],
            reads: vec![bytes("r")],
            success: vec![
                TxnOp::Put {
                    key: bytes("x"),
                    value: bytes("2"),
                },
                TxnOp::Delete { key: bytes("y") },
            ],
            failure: vec![TxnOp::Put {
                key: bytes("y"),
                value: bytes("failed"),
            }],
        }
    }

    fn prepare(ttl_ms: Option<u64>) -> TxnStep {
        TxnStep::Prepare {
            txn: TXN,
            anchor: "a".to_string(),
            ttl_ms,
            part: part(),
        }
    }

    fn is_locked(result: Result<Outcome, CommandError>) -> bool {
        matches!(result, Err(CommandError::Locked { txn: TXN, .. }))
    }

    #[test]
    fn intents_hold_their_keys_until_a_resolve_commits_them() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        run(&mut machine, 0, put("x", "1")).unwrap();
        run(&mut machine, 0, put("y", "0")).unwrap();
        run(&mut machine, 0, put("r", "seen")).unwrap();
        let prepared = step(&mut machine, 0, prepare(None));
        let StepOutcome::Prepared { held, reads } = prepared else {
            panic!("prepared, not {prepared:?}");
        };
        assert!(held, "x is 1");
        assert_eq!(reads[0].1.as_ref().unwrap().value, bytes("seen"));

        // Writes to any held key wait; reads wait only where the transaction writes.
        assert!(is_locked(run(&mut machine, 0, put("x", "9"))));
        assert!(
            is_locked(run(&mut machine, 0, put("r", "9"))),
            "a read lock"
        );
        assert!(matches!(
            machine.read(b"x"),
            Err(ReadFailure::Command(CommandError::Locked { .. }))
        ));
        assert_eq!(machine.read(b"r").unwrap().unwrap().value, bytes("seen"));
        assert!(matches!(
            machine.scan(b"", None, 10),
            Err(ReadFailure::Command(_))
        ));
        let (entries, _) = machine.scan(b"r", None, 10).unwrap();
        assert_eq!(
            entries.len(),
            1,
            "the lock on r alone does not stop a scan, nor shows"
        );
        // Another transaction cannot prepare over it.
        let other = TxnStep::Prepare {
            txn: TxnId { number: 2, ..TXN },
            anchor: "a".to_string(),
            ttl_ms: None,
            part: part(),
        };
        assert!(is_locked(run(&mut machine, 0, Command::TxnStep(other))));

        let resolve = TxnStep::Resolve {
            txn: TXN,
            keys: part().keys(),
            resolution: Resolution::Commit { succeeded: true },
        };
        assert_eq!(
            step(&mut machine, 0, resolve.clone()),
            StepOutcome::Resolved
        );
        assert_eq!(machine.read(b"x").unwrap().unwrap().value, bytes("2"));
        assert_eq!(
            machine.read(b"y").unwrap(),
            None,
            "deleted by the success branch"
        );
        run(&mut machine, 0, put("x", "3")).expect("released");
        // A resolve sent again changes nothing.
        step(&mut machine, 0, resolve);
        assert_eq!(machine.read(b"x").unwrap().unwrap().value, bytes("3"));
        let (entries, more) = machine.scan(b"", None, 100).unwrap();
        assert!(!more && entries.iter().all(|(k, _)| !twophase_reserved(k)));
        assert_eq!(entries.len(), 2, "x and r, no transaction rows");
    }

    fn twophase_reserved(key: &[u8]) -> bool {
        crate::strong::twophase::is_reserved(key)
    }

    #[test]
    fn the_anchor_decides_once_and_applies_its_own_intents_with_the_decision() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        run(&mut machine, 1_000, put("x", "0")).unwrap(); // compare fails: x is not 1
        step(&mut machine, 1_000, prepare(Some(500)));
        let early = TxnStep::Decide {
            txn: TXN,
            decision: Decision::Abort {
                only_if_expired: true,
            },
        };
        let pending = TxnState::Pending {
            expires_at: WallMillis(1_500),
        };
        assert_eq!(
            step(&mut machine, 1_200, early.clone()),
            StepOutcome::Record(pending)
        );
        let commit = TxnStep::Decide {
            txn: TXN,
            decision: Decision::Commit { succeeded: false },
        };
        let committed = StepOutcome::Record(TxnState::Committed { succeeded: false });
        assert_eq!(step(&mut machine, 1_300, commit.clone()), committed);
        assert_eq!(machine.read(b"y").unwrap().unwrap().value, bytes("failed"));
        assert_eq!(machine.read(b"x").unwrap().unwrap().value, bytes("0"));
        // Whoever comes later reads the decision; nothing applies twice.
        assert_eq!(step(&mut machine, 9_000, early), committed);
        assert_eq!(step(&mut machine, 9_000, commit), committed);
    }

    #[test]
    fn an_expired_record_is_aborted_and_a_late_prepare_places_nothing() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        step(&mut machine, 0, prepare(Some(100)));
        let abort = TxnStep::Decide {
            txn: TXN,
            decision: Decision::Abort {
                only_if_expired: true,
            },
        };
        assert_eq!(
            step(&mut machine, 200, abort),
            StepOutcome::Record(TxnState::Aborted)
        );
        assert_eq!(machine.read(b"x").unwrap(), None, "the intents are dropped");
        let commit = TxnStep::Decide {
            txn: TXN,
            decision: Decision::Commit { succeeded: true },
        };
        assert_eq!(
            step(&mut machine, 200, commit),
            StepOutcome::Record(TxnState::Aborted)
        );

        // A decide that finds no record (its prepare not applied yet) aborts it for good.
        let other = TxnId { number: 5, ..TXN };
        let decide = TxnStep::Decide {
            txn: other,
            decision: Decision::Abort {
                only_if_expired: true,
            },
        };
        assert_eq!(
            step(&mut machine, 300, decide),
            StepOutcome::Record(TxnState::Aborted)
        );
        let late = TxnStep::Prepare {
            txn: other,
            anchor: "a".to_string(),
            ttl_ms: Some(100),
            part: part(),
        };
        assert_eq!(
            step(&mut machine, 300, late),
            StepOutcome::Record(TxnState::Aborted)
        );
        run(&mut machine, 300, put("x", "free")).expect("nothing was placed");
    }

    #[test]
    fn intents_survive_a_restart_from_the_store() {
        use crate::strong::store::{MachineStore, MemoryMachineStore};
        use crate::types::GroupId;
        use std::sync::Arc;
        let store = Arc::new(MemoryMachineStore::new());
        let shared: Arc<dyn MachineStore> = store.clone();
        let mut machine =
            StrongMachine::open(MachineConfig::default(), GroupId(3), shared).unwrap();
        step(&mut machine, 0, prepare(None));
        store.commit(GroupId(3), &machine.take_writes());
        machine.writes_persisted();
        let shared: Arc<dyn MachineStore> = store.clone();
        let mut restarted =
            StrongMachine::open(MachineConfig::default(), GroupId(3), shared).unwrap();
        assert!(
            is_locked(run(&mut restarted, 0, put("x", "9"))),
            "still held after a restart"
        );
        let resolve = TxnStep::Resolve {
            txn: TXN,
            keys: part().keys(),
            resolution: Resolution::Abort,
        };
        step(&mut restarted, 0, resolve);
        run(&mut restarted, 0, put("x", "9")).expect("released");
    }

    #[test]
    fn reserved_keys_are_refused() {
        let mut machine = StrongMachine::new(MachineConfig::default());
        let key = crate::strong::twophase::intent_key(b"x");
        let refused = run(
            &mut machine,
            0,
            Command::Put {
                key,
                value: bytes("v"),
            },
        );
        assert!(matches!(refused, Err(CommandError::ReservedKey { .. })));
    }
}
