//! Elections: one leader, PreVote, CheckQuorum, persisted votes, hints, restarts.

use super::*;
use crate::types::Term;

#[test]
fn an_elected_leader_commits_its_noop_everywhere() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    assert_eq!(cluster.leaders(), vec![n(1)]);
    for id in [n(1), n(2), n(3)] {
        let status = cluster.status(id);
        assert_eq!(status.term, Term(1));
        assert_eq!(
            status.commit,
            LogIndex(1),
            "{id} learns the no-op committed"
        );
        assert_eq!(status.leader, Some(n(1)));
    }
}

#[test]
fn randomized_timeouts_elect_exactly_one_leader() {
    let mut cluster = Cluster::new(5, |_| {});
    cluster.run_for(Duration::from_secs(2));
    assert_eq!(cluster.leaders().len(), 1);
    let leader = cluster.leaders()[0];
    let term = cluster.status(leader).term;
    for id in 1..=5 {
        assert_eq!(cluster.status(n(id)).leader, Some(leader));
        assert_eq!(cluster.status(n(id)).term, term);
    }
}

#[test]
fn pre_vote_keeps_a_rejoining_node_from_disrupting_the_leader() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    cluster.isolate(n(3));
    cluster.run_for(Duration::from_secs(2));
    assert_eq!(
        cluster.status(n(3)).term,
        Term(1),
        "pre-votes do not raise the term"
    );
    cluster.heal();
    cluster.run_for(Duration::from_secs(1));
    assert_eq!(cluster.leaders(), vec![n(1)]);
    assert_eq!(cluster.status(n(1)).term, Term(1));
    assert_eq!(cluster.status(n(3)).leader, Some(n(1)));
}

#[test]
fn without_pre_vote_a_rejoining_node_raises_the_term() {
    // The control for the test above: the same story disrupts the leader without PreVote.
    let mut cluster = Cluster::new(3, |c| c.pre_vote = false);
    cluster.elect(n(1));
    cluster.isolate(n(3));
    cluster.run_for(Duration::from_secs(2));
    assert!(cluster.status(n(3)).term > Term(1));
}

#[test]
fn check_quorum_steps_down_an_isolated_leader() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    cluster.isolate(n(1));
    cluster.run_for(3 * T);
    assert_ne!(cluster.status(n(1)).role, Role::Leader);
    assert!(matches!(
        cluster.propose(n(1), 1, "x"),
        Err(ProposeError::NotLeader { .. })
    ));
    let leaders = cluster.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], n(1));
}

#[test]
fn proposals_on_a_follower_name_the_leader_when_known() {
    let mut cluster = Cluster::new(3, |_| {});
    assert_eq!(
        cluster.propose(n(2), 1, "x"),
        Err(ProposeError::NotLeader { leader_hint: None })
    );
    cluster.elect(n(1));
    assert_eq!(
        cluster.propose(n(2), 1, "x"),
        Err(ProposeError::NotLeader {
            leader_hint: Some(n(1))
        })
    );
}

#[test]
fn a_vote_leaves_only_after_it_is_persisted() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.now += 2 * T;
    let now = cluster.now;
    let deadline = cluster.raft(n(1)).poll_timeout().unwrap();
    cluster.raft(n(1)).handle_timeout(now.max(deadline));
    let pre = cluster.raft(n(1)).ready().unwrap();
    assert!(
        pre.persisted_messages.is_empty(),
        "pre-votes change no state"
    );
    cluster.raft(n(1)).advance(pre.id());
    for envelope in pre.messages {
        cluster.raft(n(2)).handle_message(now, envelope);
    }
    let answer = cluster.raft(n(2)).ready().unwrap();
    cluster.raft(n(2)).advance(answer.id());
    cluster
        .raft(n(1))
        .handle_message(now, answer.messages[0].clone());
    let campaign = cluster.raft(n(1)).ready().unwrap();
    assert_eq!(campaign.hard_state.unwrap().vote, Some(n(1)));
    assert!(campaign.must_sync);
    assert!(
        campaign.messages.is_empty(),
        "vote requests wait for the candidate's own vote"
    );
    let request = campaign.persisted_messages[0].clone();
    cluster.raft(n(2)).handle_message(now, request);
    let vote = cluster.raft(n(2)).ready().unwrap();
    assert_eq!(
        vote.hard_state.unwrap(),
        HardState {
            term: Term(1),
            vote: Some(n(1)),
            commit: LogIndex(0)
        }
    );
    assert!(vote.messages.is_empty());
    assert!(matches!(
        vote.persisted_messages[0].msg,
        RaftMessage::VoteResponse { granted: true, .. }
    ));
}

#[test]
fn a_restarted_node_keeps_what_it_persisted_and_loses_the_rest() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    cluster.propose(n(1), 1, "kept").unwrap();
    cluster.stabilize();
    // The next proposal is handed out but the leader crashes before persisting it.
    cluster.propose(n(1), 2, "lost").unwrap();
    let ready = cluster.raft(n(1)).ready().unwrap();
    assert_eq!(ready.entries.len(), 1);
    cluster.crash(n(1));
    cluster.restart(n(1));
    let status = cluster.status(n(1));
    assert_eq!(status.term, Term(1));
    assert_eq!(status.vote, Some(n(1)));
    assert_eq!(
        status.last_index,
        LogIndex(2),
        "the unpersisted entry is gone"
    );
    assert_eq!(status.role, Role::Follower);
    cluster.stabilize();
    assert_eq!(cluster.applied_commands(n(1)), vec!["kept"]);
    cluster.run_for(Duration::from_secs(1));
    assert_eq!(cluster.leaders().len(), 1);
    let leader = cluster.leaders()[0];
    cluster.propose(leader, 3, "after").unwrap();
    cluster.stabilize();
    for id in 1..=3 {
        assert_eq!(cluster.applied_commands(n(id)), vec!["kept", "after"]);
    }
}

#[test]
fn a_restarted_node_refuses_votes_for_one_election_timeout() {
    // It may have promised a lease before crashing and forgotten it.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    cluster.crash(n(2));
    cluster.restart(n(2));
    let now = cluster.now;
    let request = RaftMessage::Vote {
        term: Term(5),
        last_index: LogIndex(9),
        last_term: Term(4),
    };
    cluster.raft(n(2)).handle_message(
        now,
        Envelope {
            from: n(3),
            to: n(2),
            msg: request.clone(),
        },
    );
    assert_eq!(
        cluster.status(n(2)).term,
        Term(1),
        "ignored during the blackout"
    );
    let later = now + T;
    cluster.raft(n(2)).handle_message(
        later,
        Envelope {
            from: n(3),
            to: n(2),
            msg: request,
        },
    );
    assert_eq!(cluster.status(n(2)).term, Term(5));
    assert_eq!(cluster.status(n(2)).vote, Some(n(3)));
}

#[cfg(feature = "sim-bugs")]
#[test]
fn planted_vote_without_persist_sends_early_and_omits_the_vote() {
    let mut cluster = Cluster::new(3, |c| {
        c.planted_bug = PlantedBug::from_name("vote-without-persist")
    });
    let now = cluster.now + 2 * T;
    let request = RaftMessage::Vote {
        term: Term(1),
        last_index: LogIndex(0),
        last_term: Term(0),
    };
    cluster.raft(n(2)).handle_message(
        now,
        Envelope {
            from: n(1),
            to: n(2),
            msg: request,
        },
    );
    let ready = cluster.raft(n(2)).ready().unwrap();
    assert_eq!(ready.hard_state.unwrap().vote, None);
    assert!(matches!(
        ready.messages[0].msg,
        RaftMessage::VoteResponse { granted: true, .. }
    ));
}

#[test]
fn a_candidate_resends_lost_vote_requests_within_its_term() {
    let mut cluster = Cluster::new(3, |c| c.pre_vote = false);
    cluster.mangle = Some(Box::new(|e: Envelope| {
        (!matches!(e.msg, RaftMessage::Vote { .. })).then_some(e)
    }));
    cluster.now += 2 * T;
    let deadline = cluster.raft(n(1)).poll_timeout().unwrap();
    cluster.now = cluster.now.max(deadline);
    let now = cluster.now;
    cluster.raft(n(1)).handle_timeout(now);
    cluster.stabilize();
    assert_eq!(cluster.status(n(1)).role, Role::Candidate);
    cluster.mangle = None;
    let retry = cluster.raft(n(1)).poll_timeout().unwrap();
    assert!(
        retry < cluster.now + T,
        "the retry comes before the next election timeout"
    );
    cluster.now = retry;
    cluster.raft(n(1)).handle_timeout(retry);
    cluster.stabilize();
    assert_eq!(cluster.leaders(), vec![n(1)]);
    assert_eq!(cluster.status(n(1)).term, Term(1), "won in the same term");
}
