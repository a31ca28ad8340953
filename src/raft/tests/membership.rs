//! Membership: learners, promotion, removal (including the leader), one change at a time.

use super::*;

fn add_node(cluster: &mut Cluster, id: NodeId) {
    cluster.start(id, Durable::default());
}

fn change(
    cluster: &mut Cluster,
    leader: NodeId,
    change: MembershipChange,
) -> Result<LogIndex, ProposeError> {
    let now = cluster.now;
    cluster.raft(leader).propose_membership(now, change)
}

#[test]
fn a_learner_is_added_then_promoted_and_counts_for_commit() {
    let mut cluster = Cluster::new(3, |_| {});
    add_node(&mut cluster, n(4));
    cluster.elect(n(1));
    change(&mut cluster, n(1), MembershipChange::AddLearner(n(4))).unwrap();
    assert_eq!(
        change(&mut cluster, n(1), MembershipChange::PromoteLearner(n(4))),
        Err(ProposeError::MembershipChangePending),
        "one change at a time"
    );
    cluster.propose(n(1), 1, "a").unwrap();
    cluster.stabilize();
    assert!(cluster.status(n(4)).membership.learners.contains(&n(4)));
    assert_eq!(cluster.applied_commands(n(4)), vec!["a"]);
    change(&mut cluster, n(1), MembershipChange::PromoteLearner(n(4))).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.status(n(1)).membership.voters.len(), 4);
    // With four voters a quorum is three: n1 and n4 alone cannot commit.
    cluster.crash(n(2));
    cluster.crash(n(3));
    let index = cluster.propose(n(1), 2, "b").unwrap();
    cluster.stabilize();
    assert!(cluster.status(n(1)).commit < index);
    cluster.restart(n(2));
    cluster.run_for(Duration::from_millis(100));
    assert!(cluster.status(n(1)).commit >= index);
}

#[test]
fn invalid_changes_are_refused() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    assert!(matches!(
        change(&mut cluster, n(1), MembershipChange::PromoteLearner(n(9))),
        Err(ProposeError::InvalidMembershipChange { .. })
    ));
    assert_eq!(
        change(&mut cluster, n(2), MembershipChange::AddLearner(n(9))),
        Err(ProposeError::NotLeader {
            leader_hint: Some(n(1))
        })
    );
}

#[test]
fn a_leader_that_removes_itself_steps_down_once_the_removal_commits() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    change(&mut cluster, n(1), MembershipChange::RemoveVoter(n(1))).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.status(n(1)).role, Role::Follower);
    assert!(!cluster.status(n(2)).membership.voters.contains(&n(1)));
    cluster.run_for(Duration::from_secs(1));
    let leaders = cluster.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], n(1));
    cluster.propose(leaders[0], 1, "x").unwrap();
    cluster.stabilize();
    assert_eq!(cluster.applied_commands(leaders[0]), vec!["x"]);
}

#[test]
fn a_removed_voter_no_longer_counts() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    change(&mut cluster, n(1), MembershipChange::RemoveVoter(n(3))).unwrap();
    cluster.stabilize();
    cluster.crash(n(3));
    cluster.crash(n(2));
    // Two voters left: n1 alone is not a quorum.
    let index = cluster.propose(n(1), 1, "x").unwrap();
    cluster.stabilize();
    assert!(cluster.status(n(1)).commit < index);
    cluster.restart(n(2));
    cluster.run_for(Duration::from_millis(100));
    assert!(cluster.status(n(1)).commit >= index);
}

#[test]
fn an_uncommitted_change_is_undone_when_its_entry_is_truncated() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    cluster.isolate(n(1));
    change(&mut cluster, n(1), MembershipChange::RemoveVoter(n(3))).unwrap();
    cluster.stabilize();
    assert_eq!(
        cluster.status(n(1)).membership.voters.len(),
        2,
        "in force once appended"
    );
    cluster.run_for(3 * T);
    cluster.heal();
    cluster.run_for(Duration::from_secs(1));
    assert_eq!(
        cluster.status(n(1)).membership.voters.len(),
        3,
        "the truncated change is undone"
    );
}

/// A node that joins with no voters of its own: it never campaigns, and takes the
/// configuration from the leader's membership entries (and keeps it across a restart).
#[test]
fn a_joiner_waits_for_the_leaders_configuration() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.start_with(Config::new(n(4), Vec::new()), Durable::default());
    cluster.run_for(Duration::from_secs(2));
    let campaigned = cluster.delivered.iter().any(|e| {
        e.from == n(4)
            && matches!(
                e.msg,
                RaftMessage::PreVote { .. } | RaftMessage::Vote { .. }
            )
    });
    assert!(!campaigned, "a joiner never asks for votes");
    assert_eq!(cluster.status(n(4)).role, Role::Follower);
    let leader = cluster.leaders()[0];
    change(&mut cluster, leader, MembershipChange::AddLearner(n(4))).unwrap();
    cluster.stabilize();
    let expected = cluster.status(leader).membership;
    assert_eq!(cluster.status(n(4)).membership, expected);
    assert_eq!(
        expected.voters.len(),
        3,
        "the founders, which n4 never saw at index 0"
    );
    cluster.crash(n(4));
    cluster.restart(n(4));
    assert_eq!(
        cluster.status(n(4)).membership,
        expected,
        "restored from the log"
    );
}

/// A node whose first configuration differs from the founders' (a joiner started with an
/// initial cluster that lists itself) still adopts exactly the leader's configurations, so
/// it cannot lead on a view no one else holds.
#[test]
fn a_membership_entry_carries_its_configuration() {
    let mut cluster = Cluster::new(3, |_| {});
    let wrong = Config::new(n(4), vec![n(1), n(2), n(3), n(4)]);
    cluster.elect(n(1));
    cluster.start_with(wrong, Durable::default());
    change(&mut cluster, n(1), MembershipChange::AddLearner(n(4))).unwrap();
    cluster.stabilize();
    let expected = cluster.status(n(1)).membership;
    assert!(expected.learners.contains(&n(4)));
    assert_eq!(cluster.status(n(4)).membership, expected);
    change(&mut cluster, n(1), MembershipChange::PromoteLearner(n(4))).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.status(n(4)).membership.voters.len(), 4);
    cluster.crash(n(4));
    cluster.restart(n(4));
    assert_eq!(
        cluster.status(n(4)).membership,
        cluster.status(n(1)).membership,
        "a restart replays the entries' configurations, not the deltas on a wrong base"
    );
}
