//! The acceptor: per key, a promise and the last accepted register. The rules are pure
//! functions on [`AcceptorState`]; [`PaxosNode`] keeps the states, marks what changed for the
//! next `Ready`'s persist, and queues the answers as persisted messages, so a promise or an
//! accepted ack leaves only once the state that backs it is durable.

use super::message::{AcceptorState, Ballot, Envelope, PaxosMessage, Phase, Register};
use super::node::PaxosNode;
use crate::types::NodeId;
use bytes::Bytes;

/// What an acceptor rule decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Promised the ballot; carries what was accepted before.
    Promised {
        accepted: Option<(Ballot, Register)>,
    },
    /// Accepted the ballot's register.
    Accepted,
    /// Refused: the acceptor promised a higher ballot.
    Rejected { promised: Ballot },
}

/// Phase 1b. A ballot at or above the promise is promised (equal: a duplicate of the same
/// prepare, since ballots are unique, so promising it again promises nothing new).
pub(crate) fn prepare(state: &mut AcceptorState, ballot: Ballot) -> Verdict {
    if ballot < state.promised {
        return Verdict::Rejected {
            promised: state.promised,
        };
    }
    state.promised = ballot;
    Verdict::Promised {
        accepted: state.accepted.clone(),
    }
}

/// Phase 2b. A ballot at or above the promise is accepted, and promised too: a later
/// prepare below it must be refused just as if it had been promised.
pub(crate) fn accept(state: &mut AcceptorState, ballot: Ballot, register: Register) -> Verdict {
    if ballot < state.promised {
        return Verdict::Rejected {
            promised: state.promised,
        };
    }
    state.promised = ballot;
    state.accepted = Some((ballot, register));
    Verdict::Accepted
}

impl PaxosNode {
    /// A prepare from `from`. A refusal goes out at once (it promises nothing); a promise
    /// waits for the persist of the state it reports.
    pub(crate) fn on_prepare(&mut self, from: NodeId, key: Bytes, ballot: Ballot) {
        let Some(state) = self.acceptor_mut(&key) else {
            return; // The store failed: nothing more leaves this node.
        };
        // Equal ballots are a duplicate: nothing new to persist.
        let changed = ballot > state.promised;
        let verdict = prepare(state, ballot);
        if changed {
            self.dirty.insert(key.clone());
        }
        self.acceptor_reply(from, key, ballot, Phase::Prepare, verdict);
    }

    /// An accept from `from`; answered like a prepare.
    pub(crate) fn on_accept(
        &mut self,
        from: NodeId,
        key: Bytes,
        ballot: Ballot,
        register: Register,
    ) {
        let Some(state) = self.acceptor_mut(&key) else {
            return; // The store failed: nothing more leaves this node.
        };
        // Ballots are unique, so the same accepted ballot means the same register: a
        // duplicate accept changes nothing.
        let accepted_before = state.accepted.as_ref().map(|(accepted, _)| *accepted);
        let verdict = accept(state, ballot, register);
        if verdict == Verdict::Accepted && accepted_before != Some(ballot) {
            self.dirty.insert(key.clone());
        }
        self.acceptor_reply(from, key, ballot, Phase::Accept, verdict);
    }

    fn acceptor_reply(
        &mut self,
        to: NodeId,
        key: Bytes,
        ballot: Ballot,
        phase: Phase,
        verdict: Verdict,
    ) {
        let from = self.config.id;
        let (message, after_persist) = match verdict {
            Verdict::Promised { accepted } => (
                PaxosMessage::Promise {
                    key,
                    ballot,
                    accepted,
                },
                true,
            ),
            Verdict::Accepted => (PaxosMessage::Accepted { key, ballot }, true),
            Verdict::Rejected { promised } => (
                PaxosMessage::Reject {
                    key,
                    ballot,
                    phase,
                    promised,
                },
                false,
            ),
        };
        let envelope = Envelope { from, to, message };
        if after_persist {
            self.outbox.persisted_messages.push(envelope);
        } else {
            self.outbox.messages.push(envelope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::message::ProposerId;

    fn ballot(round: u64, node: u64) -> Ballot {
        Ballot {
            round,
            proposer: ProposerId {
                node: NodeId(node),
                incarnation: 1,
            },
        }
    }

    #[test]
    fn promises_only_rise_and_stale_ballots_are_refused() {
        let mut state = AcceptorState::default();
        assert_eq!(
            prepare(&mut state, ballot(2, 1)),
            Verdict::Promised { accepted: None }
        );
        // A duplicate of the same prepare is promised again.
        assert_eq!(
            prepare(&mut state, ballot(2, 1)),
            Verdict::Promised { accepted: None }
        );
        let refused = Verdict::Rejected {
            promised: ballot(2, 1),
        };
        assert_eq!(prepare(&mut state, ballot(1, 3)), refused);
        assert_eq!(
            accept(&mut state, ballot(1, 3), Register::default()),
            refused
        );
        // Same round, lower node: lower ballot.
        assert_eq!(prepare(&mut state, ballot(2, 0)), refused);
        assert_eq!(state.promised, ballot(2, 1));
        assert_eq!(state.accepted, None);
    }

    #[test]
    fn an_accept_also_promises_and_a_later_prepare_reports_it() {
        let mut state = AcceptorState::default();
        let register = Register {
            version: 1,
            ..Register::default()
        };
        // Accepting without a prior prepare here is fine: the proposer had a quorum elsewhere.
        assert_eq!(
            accept(&mut state, ballot(3, 2), register.clone()),
            Verdict::Accepted
        );
        assert_eq!(state.promised, ballot(3, 2));
        assert!(matches!(
            prepare(&mut state, ballot(2, 9)),
            Verdict::Rejected { .. }
        ));
        let Verdict::Promised { accepted } = prepare(&mut state, ballot(4, 1)) else {
            panic!("a higher ballot is promised");
        };
        assert_eq!(accepted, Some((ballot(3, 2), register)));
        assert!(state.is_sane());
    }
}
