//! The eventual writes the clients made, in the forms the eventual simulator's checkers take
//! ([`crate::sim::eventual::checkers`]), keyed by (keyspace, key).
//!
//! A client sees a write only through the protocol, so it knows less than the eventual
//! harness (which reads the engine's persist batches): a counter add's amount, an `lww`
//! put's HLC stamp once it is acknowledged (the receipt carries it), nothing of a set add's
//! dot or a remove's observed adds. The checks are the same, on what is known: set adds carry
//! no dot (any remove of the member that may have applied excuses a missing member), and an
//! `lww` write that was never acknowledged has no stamp until the final read shows its value.

use crate::eventual::HlcTimestamp;
use crate::sim::eventual::history::{CounterWrite, LwwWrite, Outcome, SetWrite};
use bytes::Bytes;
use crdts::VClock;
use std::collections::BTreeMap;

/// A key of an eventual keyspace: (keyspace name, key).
pub(crate) type Slot = (String, Bytes);

/// One `lww` put, with its stamp once known.
#[derive(Clone, Debug)]
pub(crate) struct LwwPut {
    pub(crate) id: u64,
    pub(crate) value: Vec<u8>,
    pub(crate) stamp: Option<HlcTimestamp>,
    pub(crate) outcome: Outcome,
}

/// Where one write sits in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WriteRef {
    Counter(Slot, usize),
    Set(Slot, usize),
    Lww(Slot, usize),
}

#[derive(Debug, Default)]
pub(crate) struct EventualLog {
    pub(crate) counters: BTreeMap<Slot, Vec<CounterWrite>>,
    pub(crate) sets: BTreeMap<Slot, Vec<SetWrite>>,
    pub(crate) lww: BTreeMap<Slot, Vec<LwwPut>>,
    /// Writes acknowledged at `quorum` or `all`, by id: a later quorum read must see them.
    pub(crate) quorum_acked: std::collections::BTreeSet<u64>,
    next_id: u64,
}

impl EventualLog {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn counter_add(&mut self, slot: Slot, amount: i64) -> WriteRef {
        let id = self.id();
        let writes = self.counters.entry(slot.clone()).or_default();
        writes.push(CounterWrite {
            id,
            amount,
            outcome: Outcome::Pending,
        });
        WriteRef::Counter(slot, writes.len() - 1)
    }

    pub(crate) fn set_add(&mut self, slot: Slot, member: &Bytes) -> WriteRef {
        let id = self.id();
        let writes = self.sets.entry(slot.clone()).or_default();
        writes.push(SetWrite::Add {
            id,
            member: member.to_vec(),
            dot: None,
            outcome: Outcome::Pending,
        });
        WriteRef::Set(slot, writes.len() - 1)
    }

    pub(crate) fn set_remove(&mut self, slot: Slot, member: &Bytes) -> WriteRef {
        let id = self.id();
        let writes = self.sets.entry(slot.clone()).or_default();
        writes.push(SetWrite::Remove {
            id,
            member: member.to_vec(),
            observed: VClock::new(),
            outcome: Outcome::Pending,
        });
        WriteRef::Set(slot, writes.len() - 1)
    }

    pub(crate) fn lww_put(&mut self, slot: Slot, value: &Bytes) -> WriteRef {
        let id = self.id();
        let writes = self.lww.entry(slot.clone()).or_default();
        writes.push(LwwPut {
            id,
            value: value.to_vec(),
            stamp: None,
            outcome: Outcome::Pending,
        });
        WriteRef::Lww(slot, writes.len() - 1)
    }

    /// The write's id.
    pub(crate) fn write_id(&self, write: &WriteRef) -> u64 {
        match write {
            WriteRef::Counter(slot, index) => self.counters[slot][*index].id,
            WriteRef::Set(slot, index) => match &self.sets[slot][*index] {
                SetWrite::Add { id, .. } | SetWrite::Remove { id, .. } => *id,
            },
            WriteRef::Lww(slot, index) => self.lww[slot][*index].id,
        }
    }

    /// Resolves a write once; later reports change nothing. An acknowledged `lww` put keeps
    /// the stamp its receipt carried.
    pub(crate) fn resolve(
        &mut self,
        write: &WriteRef,
        outcome: Outcome,
        stamp: Option<HlcTimestamp>,
        quorum: bool,
    ) {
        let id = self.write_id(write);
        let slot = match write {
            WriteRef::Counter(slot, index) => {
                &mut self.counters.get_mut(slot).expect("logged")[*index].outcome
            }
            WriteRef::Set(slot, index) => {
                match &mut self.sets.get_mut(slot).expect("logged")[*index] {
                    SetWrite::Add { outcome, .. } | SetWrite::Remove { outcome, .. } => outcome,
                }
            }
            WriteRef::Lww(slot, index) => {
                let put = &mut self.lww.get_mut(slot).expect("logged")[*index];
                if put.outcome == Outcome::Pending && stamp.is_some() {
                    put.stamp = stamp;
                }
                &mut put.outcome
            }
        };
        if *slot != Outcome::Pending {
            return;
        }
        *slot = outcome;
        if outcome == Outcome::Acked && quorum {
            self.quorum_acked.insert(id);
        }
    }

    /// Every write still pending is indeterminate: the run is over.
    pub(crate) fn close(&mut self) {
        let pending = |outcome: &mut Outcome| {
            if *outcome == Outcome::Pending {
                *outcome = Outcome::Indeterminate;
            }
        };
        self.counters
            .values_mut()
            .flatten()
            .for_each(|w| pending(&mut w.outcome));
        self.lww
            .values_mut()
            .flatten()
            .for_each(|w| pending(&mut w.outcome));
        for write in self.sets.values_mut().flatten() {
            match write {
                SetWrite::Add { outcome, .. } | SetWrite::Remove { outcome, .. } => {
                    pending(outcome)
                }
            }
        }
    }

    /// The `lww` puts of a key with known stamps, in the checkers' form. A put that was not
    /// acknowledged gets the stamp the final read shows if it shows its value (values are
    /// unique); otherwise it cannot be the winner and is left out.
    pub(crate) fn lww_writes(
        &self,
        slot: &Slot,
        seen: Option<(&[u8], HlcTimestamp)>,
    ) -> Vec<LwwWrite<HlcTimestamp>> {
        let Some(puts) = self.lww.get(slot) else {
            return Vec::new();
        };
        puts.iter()
            .filter_map(|put| {
                let stamp = put.stamp.or_else(|| {
                    seen.filter(|(value, _)| *value == put.value.as_slice())
                        .map(|(_, stamp)| stamp)
                })?;
                Some(LwwWrite {
                    id: put.id,
                    value: Some(put.value.clone()),
                    stamp,
                    outcome: put.outcome,
                })
            })
            .collect()
    }

    /// Counts (acked, indeterminate, failed) over every eventual write, for the summary.
    pub(crate) fn tally(&self) -> [u64; 4] {
        let outcomes = self
            .counters
            .values()
            .flatten()
            .map(|w| w.outcome)
            .chain(self.sets.values().flatten().map(SetWrite::outcome))
            .chain(self.lww.values().flatten().map(|w| w.outcome));
        crate::sim::eventual::checkers::tally(outcomes)
    }
}
