//! The checks that run as the simulation goes, beside the end-of-run linearizability check:
//!
//! * **One register per ballot.** Every accept a proposer sends is seen here; two different
//!   registers under one (key, ballot) mean ballots are not unique (a restarted node reusing
//!   one, say), and Paxos's safety argument is gone.
//! * **Promises only rise, durably.** A key's durable promise on a node never goes back,
//!   across crashes too (what the node persisted is what it promised).
//! * **Chosen registers form one chain.** A register is *chosen* once a majority of nodes
//!   have durably accepted it under one ballot. Chosen registers of one key, in ballot
//!   order, never lose versions, and two chosen at one version are the same register: a
//!   later chosen register builds on every earlier one (Paxos's P2c, Lamport 2001).

use crate::paxos::{AcceptorState, Ballot, Register};
use crate::types::NodeId;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// Findings kept per check (by the text before the first colon).
const VIOLATIONS_PER_CHECK_MAX: usize = 3;

/// What the chain check keeps of a chosen register.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Chosen {
    version: u64,
    value: Option<Bytes>,
    mod_revision: u64,
}

impl Chosen {
    fn of(register: &Register) -> Chosen {
        Chosen {
            version: register.version,
            value: register.value.clone(),
            mod_revision: register.mod_revision,
        }
    }
}

/// The running checks' state and findings.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    pub(crate) violations: Vec<String>,
    /// Every register proposed, by (key, ballot).
    proposed: BTreeMap<(Bytes, Ballot), Register>,
    /// Who durably accepted each (key, ballot), until it is chosen.
    accepted_by: BTreeMap<(Bytes, Ballot), BTreeSet<NodeId>>,
    /// Chosen registers per key, by ballot.
    chosen: BTreeMap<Bytes, BTreeMap<Ballot, Chosen>>,
    pub(crate) quorum: usize,
    pub(crate) highest_round: u64,
}

impl Checker {
    pub(crate) fn new(quorum: usize) -> Checker {
        Checker {
            quorum,
            ..Checker::default()
        }
    }

    /// Records a finding. Each check reports at most a few, so a broken run (which now
    /// goes on to the end) does not print thousands of lines.
    pub(crate) fn violation(&mut self, text: String) {
        let kind = text.split(':').next().unwrap_or_default().to_string();
        let same = self
            .violations
            .iter()
            .filter(|seen| seen.split(':').next() == Some(kind.as_str()))
            .count();
        if same < VIOLATIONS_PER_CHECK_MAX {
            self.violations.push(text);
        }
    }

    /// Registers chosen so far, over all keys.
    pub(crate) fn chosen_count(&self) -> usize {
        self.chosen.values().map(BTreeMap::len).sum()
    }

    /// A proposer sent an accept of `register` for `key` under `ballot`.
    pub(crate) fn accept_sent(&mut self, key: &Bytes, ballot: Ballot, register: &Register) {
        self.highest_round = self.highest_round.max(ballot.round);
        let entry = (key.clone(), ballot);
        match self.proposed.get(&entry) {
            Some(earlier) if earlier != register => {
                let text = format!(
                    "ballot uniqueness: key {} ballot {ballot:?} carries two registers: \
                     {earlier:?} and {register:?}",
                    String::from_utf8_lossy(key)
                );
                self.violation(text);
            }
            Some(_) => {}
            None => {
                self.proposed.insert(entry, register.clone());
            }
        }
    }

    /// `node` made `state` durable for `key`, replacing `before`.
    pub(crate) fn persisted(
        &mut self,
        node: NodeId,
        key: &Bytes,
        before: Option<&AcceptorState>,
        state: &AcceptorState,
    ) {
        if let Some(before) = before
            && state.promised < before.promised
        {
            let text = format!(
                "durable promise went back on {node}: key {} {:?} -> {:?}",
                String::from_utf8_lossy(key),
                before.promised,
                state.promised
            );
            self.violation(text);
        }
        let Some((ballot, register)) = &state.accepted else {
            return;
        };
        let entry = (key.clone(), *ballot);
        let Some(acceptors) = self.accepted_by.get_mut(&entry) else {
            let already = self
                .chosen
                .get(key)
                .is_some_and(|chosen| chosen.contains_key(ballot));
            if !already {
                self.accepted_by.insert(entry, BTreeSet::from([node]));
                self.check_chosen_now(key, *ballot, register);
            }
            return;
        };
        acceptors.insert(node);
        self.check_chosen_now(key, *ballot, register);
    }

    /// If a majority has now accepted (key, ballot), records it as chosen and checks it
    /// against every register chosen before it on the key.
    fn check_chosen_now(&mut self, key: &Bytes, ballot: Ballot, register: &Register) {
        let entry = (key.clone(), ballot);
        let count = self.accepted_by.get(&entry).map_or(0, BTreeSet::len);
        if count < self.quorum {
            return;
        }
        self.accepted_by.remove(&entry);
        let chosen = Chosen::of(register);
        let chain = self.chosen.entry(key.clone()).or_default();
        let mut broken = Vec::new();
        for (other_ballot, other) in chain.iter() {
            let (low, high) = if *other_ballot < ballot {
                (other, &chosen)
            } else {
                (&chosen, other)
            };
            let forked = low.version == high.version && low != high;
            if low.version > high.version || forked {
                broken.push(format!("{other_ballot:?} {other:?}"));
            }
        }
        chain.insert(ballot, chosen.clone());
        if let Some(first) = broken.first() {
            let text = format!(
                "chosen chain: key {} chose {chosen:?} under {ballot:?}, which does not \
                 build on {first} chosen under the other ballot",
                String::from_utf8_lossy(key)
            );
            self.violation(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::ProposerId;

    fn ballot(round: u64) -> Ballot {
        Ballot {
            round,
            proposer: ProposerId {
                node: NodeId(1),
                incarnation: 0,
            },
        }
    }

    fn accepted(round: u64, version: u64) -> AcceptorState {
        let register = Register {
            value: Some(Bytes::from(format!("v{version}"))),
            mod_revision: version,
            version,
            writers: Vec::new(),
        };
        AcceptorState {
            promised: ballot(round),
            accepted: Some((ballot(round), register)),
        }
    }

    // The chain check must be able to fail: a register chosen under a higher ballot that
    // lost a version chosen under a lower one is a lost write.
    #[test]
    fn a_chosen_register_that_loses_a_version_is_caught() {
        let key = Bytes::from_static(b"k");
        let mut checker = Checker::new(2);
        for node in [1, 2] {
            checker.persisted(NodeId(node), &key, None, &accepted(1, 1));
        }
        for node in [1, 2] {
            checker.persisted(NodeId(node), &key, None, &accepted(2, 2));
        }
        assert!(checker.violations.is_empty(), "{:?}", checker.violations);
        for node in [2, 3] {
            checker.persisted(NodeId(node), &key, None, &accepted(3, 1));
        }
        assert_eq!(checker.violations.len(), 1, "{:?}", checker.violations);
        assert!(checker.violations[0].starts_with("chosen chain"));
        let before = accepted(3, 1);
        checker.persisted(NodeId(3), &key, Some(&before), &accepted(2, 2));
        assert!(checker.violations[1].starts_with("durable promise went back"));
    }
}
