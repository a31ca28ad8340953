//! Membership: single-server changes that take effect when appended (thesis §4.1).

use super::error::ProposeError;
use super::message::{Membership, MembershipChange};
use crate::types::{LogIndex, NodeId};

impl Membership {
    /// A configuration of `voters` and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            learners: Default::default(),
        }
    }

    /// Votes needed for a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// A configuration a leader can produce: at least one voter, and no node both voter and
    /// learner.
    pub fn is_well_formed(&self) -> bool {
        !self.voters.is_empty() && self.voters.is_disjoint(&self.learners)
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Every member, voter or learner.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The configuration after `change`, or why it does not apply.
    pub fn apply(&self, change: MembershipChange) -> Result<Membership, ProposeError> {
        let mut next = self.clone();
        let invalid = |reason| Err(ProposeError::InvalidMembershipChange { reason });
        match change {
            MembershipChange::AddLearner(id) => {
                if self.voters.contains(&id) || self.learners.contains(&id) {
                    return invalid("adds a node that is already a member");
                }
                next.learners.insert(id);
            }
            MembershipChange::PromoteLearner(id) => {
                if !next.learners.remove(&id) {
                    return invalid("promotes a node that is not a learner");
                }
                next.voters.insert(id);
            }
            MembershipChange::RemoveVoter(id) => {
                if !next.voters.remove(&id) {
                    return invalid("removes a node that is not a voter");
                }
                if next.voters.is_empty() {
                    return invalid("would remove the last voter");
                }
            }
            MembershipChange::RemoveLearner(id) => {
                if !next.learners.remove(&id) {
                    return invalid("removes a node that is not a learner");
                }
            }
        }
        Ok(next)
    }
}

/// The membership history the log still holds: the configuration at the snapshot, then one
/// record per membership entry. The newest record is in force (even if uncommitted).
#[derive(Debug)]
pub(crate) struct MembershipLog {
    /// Sorted by index; never empty; the first record is at or below the snapshot index.
    records: Vec<(LogIndex, Membership)>,
}

impl MembershipLog {
    pub(crate) fn new(base_index: LogIndex, base: Membership) -> MembershipLog {
        MembershipLog {
            records: vec![(base_index, base)],
        }
    }

    pub(crate) fn current(&self) -> &Membership {
        &self
            .records
            .last()
            .expect("membership records are never empty")
            .1
    }

    /// The index of the entry that set the current configuration.
    pub(crate) fn current_index(&self) -> LogIndex {
        self.records
            .last()
            .expect("membership records are never empty")
            .0
    }

    /// The configuration in force at `index`.
    pub(crate) fn at(&self, index: LogIndex) -> &Membership {
        let pos = self.records.partition_point(|(i, _)| *i <= index);
        &self.records[pos.saturating_sub(1)].1
    }

    /// A membership entry was appended at `index`.
    pub(crate) fn push(&mut self, index: LogIndex, membership: Membership) {
        assert!(
            index > self.current_index(),
            "membership records must be in log order"
        );
        self.records.push((index, membership));
    }

    /// Entries from `index` on were truncated: forget the changes they made.
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        while self.records.len() > 1 && self.current_index() >= index {
            self.records.pop();
        }
    }

    /// The log was compacted up to `index`: keep only what is still needed.
    pub(crate) fn compact(&mut self, index: LogIndex) {
        let pos = self.records.partition_point(|(i, _)| *i <= index);
        self.records.drain(..pos.saturating_sub(1));
    }

    /// The log was replaced by a snapshot.
    pub(crate) fn reset(&mut self, index: LogIndex, membership: Membership) {
        self.records = vec![(index, membership)];
    }
}

/// The largest index that a quorum of `matches` has reached.
pub(crate) fn quorum_index(mut matches: Vec<LogIndex>, quorum: usize) -> LogIndex {
    assert!(
        quorum >= 1 && quorum <= matches.len(),
        "a quorum is 1..=voters"
    );
    matches.sort_unstable_by(|a, b| b.cmp(a));
    matches[quorum - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_index_matches_a_naive_count() {
        for matches in [
            vec![5, 3, 9],
            vec![1],
            vec![4, 4, 2, 7, 1],
            vec![0, 0, 6, 6],
        ] {
            let indexes: Vec<LogIndex> = matches.iter().map(|m| LogIndex(*m)).collect();
            let quorum = indexes.len() / 2 + 1;
            let got = quorum_index(indexes.clone(), quorum);
            let naive = (0..=10)
                .rev()
                .find(|i| indexes.iter().filter(|m| m.0 >= *i).count() >= quorum)
                .unwrap();
            assert_eq!(got.0, naive, "{matches:?}");
        }
    }

    #[test]
    fn changes_are_validated() {
        let m = Membership::with_voters([NodeId(1), NodeId(2)]);
        assert!(m.apply(MembershipChange::AddLearner(NodeId(1))).is_err());
        assert!(
            m.apply(MembershipChange::PromoteLearner(NodeId(3)))
                .is_err()
        );
        let with_learner = m.apply(MembershipChange::AddLearner(NodeId(3))).unwrap();
        let promoted = with_learner
            .apply(MembershipChange::PromoteLearner(NodeId(3)))
            .unwrap();
        assert_eq!(promoted.voters.len(), 3);
        assert!(promoted.learners.is_empty());
        let one = Membership::with_voters([NodeId(1)]);
        assert!(one.apply(MembershipChange::RemoveVoter(NodeId(1))).is_err());
    }

    #[test]
    fn membership_log_truncates_and_compacts() {
        let mut log = MembershipLog::new(LogIndex(0), Membership::with_voters([NodeId(1)]));
        log.push(LogIndex(5), Membership::with_voters([NodeId(1), NodeId(2)]));
        log.push(LogIndex(9), Membership::with_voters([NodeId(2)]));
        assert_eq!(log.at(LogIndex(6)).voters.len(), 2);
        log.truncate_from(LogIndex(9));
        assert_eq!(log.current_index(), LogIndex(5));
        log.compact(LogIndex(7));
        assert_eq!(log.at(LogIndex(7)).voters.len(), 2);
        assert_eq!(log.current_index(), LogIndex(5));
    }
}
