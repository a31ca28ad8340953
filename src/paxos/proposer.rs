//! The proposer: per key, a queue of operations run one at a time, each in rounds of
//! prepare and accept under a fresh ballot until a majority accepts or the attempts run out.
//!
//! ```text
//!  propose ─> queue ─> start_round: ballot above every round seen, Prepare to all
//!                        │ majority of Promise: base = highest accepted register,
//!                        │   (register, outcome) = apply(base, op); Accept to all
//!                        │   (a read whose quorum agrees on one accepted ballot answers here)
//!                        │ majority of Accepted: answer, next operation
//!                        └ rejects leave no quorum, or the round times out:
//!                            backoff (random, doubling), then start_round again,
//!                            or give up after attempts_max (NotApplied / Unknown)
//! ```
//!
//! One operation per key at a time is what makes a register's record of each node's last
//! write (see [`Register::writers`]) enough to spot a retried write that was already chosen.

use super::config::{OpError, PlantedBug};
use super::message::{Ballot, Envelope, OpId, PaxosMessage, Phase, Register};
use super::node::{Answer, PaxosNode, Receipt, RequestId};
use super::register::{Operation, Outcome, apply};
use crate::types::{Instant, NodeId};
use bytes::Bytes;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// An operation waiting or running on a key.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) id: RequestId,
    pub(crate) op: OpId,
    pub(crate) operation: Operation,
    /// Rounds started so far.
    pub(crate) attempts: u32,
    /// An accept carrying this write left: from here on it may take effect.
    pub(crate) accept_sent: bool,
}

/// Where the running operation's current round is.
#[derive(Debug)]
pub(crate) enum Stage {
    /// Waiting for promises. Each carries what that acceptor had accepted.
    Preparing {
        promises: BTreeMap<NodeId, Option<(Ballot, Register)>>,
        rejects: BTreeSet<NodeId>,
    },
    /// Waiting for acks of `register`; `outcome` is the answer once a majority accepted it.
    Accepting {
        outcome: Outcome,
        accepted: BTreeSet<NodeId>,
        rejects: BTreeSet<NodeId>,
    },
    /// Waiting out a backoff before the next round.
    BackingOff,
}

/// One key's proposer. Exists while the key has operations queued; the front one runs.
#[derive(Debug)]
pub(crate) struct KeyProposer {
    /// Never empty.
    pub(crate) queue: VecDeque<Pending>,
    /// The current round's ballot.
    pub(crate) ballot: Ballot,
    pub(crate) stage: Stage,
    /// When the round times out, or when the backoff ends.
    pub(crate) timer: Instant,
    /// The highest round seen for this key (own ballots, promises, refusals).
    pub(crate) round_seen: u64,
}

impl PaxosNode {
    /// Starts a new round for `key`'s front operation under a ballot above every round seen.
    pub(crate) fn start_round(&mut self, key: &Bytes) {
        // Read through the store if need be: a round above the local promise is not refused
        // by this node's own acceptor. (A store fault leaves 0: the node is stopping.)
        let local = self
            .acceptor_mut(key)
            .map_or(0, |state| state.promised.round);
        let proposer = self.config.proposer();
        let deadline = self.now + self.config.round_timeout;
        let Some(keyed) = self.proposers.get_mut(key) else {
            return;
        };
        let front = keyed.queue.front_mut().expect("a key proposer has work");
        front.attempts += 1;
        // Above the node's last round too: a key's proposer is dropped when its queue
        // empties, and its own acceptor may not have seen that round (the prepare to itself
        // lost), so only a node-wide counter keeps this run's ballots unique.
        let round = keyed.round_seen.max(local).max(self.last_round) + 1;
        self.last_round = round;
        keyed.round_seen = round;
        keyed.ballot = Ballot { round, proposer };
        keyed.stage = Stage::Preparing {
            promises: BTreeMap::new(),
            rejects: BTreeSet::new(),
        };
        keyed.timer = deadline;
        let ballot = keyed.ballot;
        self.broadcast(|| PaxosMessage::Prepare {
            key: key.clone(),
            ballot,
        });
    }

    /// Sends one message per node, this one included (the shell loops it back).
    fn broadcast(&mut self, message: impl Fn() -> PaxosMessage) {
        let from = self.config.id;
        for index in 0..self.config.nodes.len() {
            let to = self.config.nodes[index];
            let message = message();
            self.outbox.messages.push(Envelope { from, to, message });
        }
    }

    /// The round of `key` under `ballot` is running, in the given phase.
    fn round_mut(&mut self, key: &Bytes, ballot: Ballot) -> Option<&mut KeyProposer> {
        self.proposers
            .get_mut(key)
            .filter(|keyed| keyed.ballot == ballot)
    }

    pub(crate) fn on_promise(
        &mut self,
        from: NodeId,
        key: Bytes,
        ballot: Ballot,
        accepted: Option<(Ballot, Register)>,
    ) {
        let quorum = self.promise_quorum();
        let Some(keyed) = self.round_mut(&key, ballot) else {
            return;
        };
        let Stage::Preparing { promises, .. } = &mut keyed.stage else {
            return;
        };
        if let Some((accepted_ballot, _)) = &accepted {
            keyed.round_seen = keyed.round_seen.max(accepted_ballot.round);
        }
        promises.insert(from, accepted);
        if promises.len() >= quorum {
            self.promised_by_quorum(&key);
        }
    }

    /// How many promises the accept phase waits for: a majority (one, with the planted bug).
    fn promise_quorum(&self) -> usize {
        if self.config.has_bug(PlantedBug::AcceptWithoutPromiseQuorum) {
            return 1;
        }
        self.config.quorum()
    }

    /// A quorum promised: build on the highest accepted register, or answer a read at once.
    fn promised_by_quorum(&mut self, key: &Bytes) {
        // The fast path needs a true majority's agreement (the planted bug moves on with
        // fewer promises, and then only to the accept phase it is about).
        let quorum = self.config.quorum();
        let fast_path = self.config.read_fast_path;
        let keyed = self
            .proposers
            .get_mut(key)
            .expect("called for a running key");
        let Stage::Preparing { promises, .. } = &mut keyed.stage else {
            return;
        };
        let promises = std::mem::take(promises);
        let front = keyed.queue.front_mut().expect("a key proposer has work");
        if fast_path
            && promises.len() >= quorum
            && !front.operation.is_write()
            && let Some((ballot, register)) = agreed_register(&promises)
        {
            let current = register.current();
            let acceptors = promises.keys().copied().collect();
            let receipt = Receipt { ballot, acceptors };
            let answer = Ok((Outcome::Get { current }, receipt));
            self.finish_front(key, answer);
            return;
        }
        let base = promises
            .values()
            .flatten()
            .max_by_key(|(ballot, _)| *ballot)
            .map(|(_, register)| register.clone())
            .unwrap_or_default();
        let (register, outcome) = apply(&base, front.op, &front.operation);
        front.accept_sent |= front.operation.is_write();
        keyed.stage = Stage::Accepting {
            outcome,
            accepted: BTreeSet::new(),
            rejects: BTreeSet::new(),
        };
        let ballot = keyed.ballot;
        self.broadcast(|| PaxosMessage::Accept {
            key: key.clone(),
            ballot,
            register: register.clone(),
        });
    }

    pub(crate) fn on_accepted(&mut self, from: NodeId, key: Bytes, ballot: Ballot) {
        let quorum = self.config.quorum();
        let Some(keyed) = self.round_mut(&key, ballot) else {
            return;
        };
        let Stage::Accepting {
            outcome, accepted, ..
        } = &mut keyed.stage
        else {
            return;
        };
        accepted.insert(from);
        if accepted.len() < quorum {
            return;
        }
        let receipt = Receipt {
            ballot,
            acceptors: accepted.iter().copied().collect(),
        };
        let answer = Ok((outcome.clone(), receipt));
        self.finish_front(&key, answer);
    }

    /// A refusal: remember the higher round, and give the round up once the refusals leave
    /// no quorum (a single refusal does not: a majority may still answer).
    pub(crate) fn on_reject(
        &mut self,
        from: NodeId,
        key: Bytes,
        ballot: Ballot,
        phase: Phase,
        promised: Ballot,
    ) {
        let remaining_needed = self.config.nodes.len() + 1 - self.config.quorum();
        let Some(keyed) = self.round_mut(&key, ballot) else {
            return;
        };
        keyed.round_seen = keyed.round_seen.max(promised.round);
        let rejects = match (&mut keyed.stage, phase) {
            (Stage::Preparing { rejects, .. }, Phase::Prepare)
            | (Stage::Accepting { rejects, .. }, Phase::Accept) => rejects,
            _ => return,
        };
        rejects.insert(from);
        // With `nodes - quorum + 1` refusals, fewer than a quorum are left to agree.
        if rejects.len() >= remaining_needed {
            self.round_failed(&key);
        }
    }

    /// Fires `key`'s timer: a backoff ended (start the next round) or a round timed out.
    pub(crate) fn on_key_timer(&mut self, key: &Bytes) {
        let Some(keyed) = self.proposers.get(key) else {
            return;
        };
        if keyed.timer > self.now {
            return;
        }
        if matches!(keyed.stage, Stage::BackingOff) {
            self.start_round(key);
        } else {
            self.round_failed(key);
        }
    }

    /// The round ended without a quorum: back off and retry, or give up.
    fn round_failed(&mut self, key: &Bytes) {
        let attempts_max = self.config.attempts_max;
        let keyed = self
            .proposers
            .get_mut(key)
            .expect("called for a running key");
        let front = keyed.queue.front().expect("a key proposer has work");
        if front.attempts >= attempts_max {
            let attempts = front.attempts;
            let error = if front.accept_sent {
                OpError::Unknown { attempts }
            } else {
                OpError::NotApplied { attempts }
            };
            self.finish_front(key, Err(error));
            return;
        }
        let attempts = front.attempts;
        let backoff = self.draw_backoff(attempts);
        let keyed = self.proposers.get_mut(key).expect("still running");
        keyed.stage = Stage::BackingOff;
        keyed.timer = self.now + backoff;
    }

    /// A random wait below `backoff_base * 2^(attempts-1)`, capped at `backoff_max`.
    fn draw_backoff(&mut self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(16);
        let ceiling = self
            .config
            .backoff_base
            .saturating_mul(1 << doublings)
            .min(self.config.backoff_max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.random_range(0..=nanos))
    }

    /// Answers `key`'s front operation and starts the next one, if any.
    fn finish_front(&mut self, key: &Bytes, result: Result<(Outcome, Receipt), OpError>) {
        let keyed = self
            .proposers
            .get_mut(key)
            .expect("called for a running key");
        let done = keyed.queue.pop_front().expect("a key proposer has work");
        let idle = keyed.queue.is_empty();
        self.pending -= 1;
        self.outbox.answers.push(Answer {
            id: done.id,
            key: key.clone(),
            result,
        });
        if idle {
            self.proposers.remove(key);
        } else {
            self.start_round(key);
        }
    }
}

/// The register a read may return without an accept round: every promise of the quorum
/// reports the same accepted ballot (so a majority accepted it: it is chosen), or none
/// reports anything (nothing was ever chosen). `None` when they differ.
fn agreed_register(
    promises: &BTreeMap<NodeId, Option<(Ballot, Register)>>,
) -> Option<(Ballot, Register)> {
    let mut reported = promises.values();
    let first = reported.next()?.clone();
    if !reported.all(|other| other.as_ref().map(|(b, _)| b) == first.as_ref().map(|(b, _)| b)) {
        return None;
    }
    Some(first.unwrap_or((Ballot::ZERO, Register::default())))
}
