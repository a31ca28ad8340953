//! Membership changes during faults: remove a voter, add it back as a learner, promote it,
//! one change at a time, proposed on whoever leads.

use super::*;

/// Where a remove / add-as-learner / promote cycle stands.
#[derive(Clone, Copy, Debug)]
pub(super) enum MembershipStage {
    Remove,
    AddLearner,
    Promote,
}

/// The change cycle in progress: which node, which step, when to try next.
pub(super) struct MembershipPlan {
    pub(super) target: NodeId,
    pub(super) stage: MembershipStage,
    pub(super) next_at: Instant,
    /// Remove/re-add cycles still to run (each on a freshly drawn node).
    pub(super) cycles_left: u32,
}

impl Run {
    pub(super) fn membership_step(&mut self) {
        let Some(plan) = self.membership.as_mut() else {
            return;
        };
        plan.next_at = self.now + self.rng.duration_between(ms(50), ms(400));
        let Some(leader) = self.current_leader() else {
            return;
        };
        let index = (leader.0 - 1) as usize;
        if self.nodes[index].is_paused(self.now) {
            return;
        }
        let Some(status) = self.nodes[index].status() else {
            return;
        };
        let plan = self.membership.as_mut().expect("checked above");
        let target = plan.target;
        let members = &status.membership;
        let change = match plan.stage {
            MembershipStage::Remove if members.voters.contains(&target) => {
                if members.voters.len() <= 2 {
                    self.membership = None;
                    return;
                }
                MembershipChange::RemoveVoter(target)
            }
            MembershipStage::Remove => {
                plan.stage = MembershipStage::AddLearner;
                return;
            }
            MembershipStage::AddLearner if !members.learners.contains(&target) => {
                MembershipChange::AddLearner(target)
            }
            MembershipStage::AddLearner => {
                plan.stage = MembershipStage::Promote;
                return;
            }
            MembershipStage::Promote if !members.voters.contains(&target) => {
                MembershipChange::PromoteLearner(target)
            }
            MembershipStage::Promote => {
                plan.cycles_left -= 1;
                if plan.cycles_left == 0 {
                    self.membership = None;
                } else {
                    plan.stage = MembershipStage::Remove;
                    plan.target = *self.rng.pick(&self.ids);
                }
                return;
            }
        };
        let local = self.nodes[index].clock.local(self.now);
        let Some(core) = self.nodes[index].core_mut() else {
            return;
        };
        if core.propose_membership(local, change).is_ok() {
            self.fault_stats.membership_changes += 1;
        }
        self.nodes[index].on_deadline(self.now, &mut self.world);
        self.dispatch_replies();
    }
}
