//! Replication: batching, the in-flight window, conflict back-off, the commit rule.

use super::*;
use crate::types::Term;

fn appends_to(envelopes: &[Envelope], to: NodeId) -> Vec<(LogIndex, usize)> {
    envelopes
        .iter()
        .filter(|e| e.to == to)
        .filter_map(|e| match &e.msg {
            RaftMessage::Append {
                prev_index,
                entries,
                ..
            } if !entries.is_empty() => Some((*prev_index, entries.len())),
            _ => None,
        })
        .collect()
}

#[test]
fn proposals_between_readies_share_one_append() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    for i in 0..100 {
        cluster.propose(n(1), i, &format!("c{i}")).unwrap();
    }
    let ready = cluster.raft(n(1)).ready().unwrap();
    assert_eq!(ready.entries.len(), 100);
    assert_eq!(appends_to(&ready.messages, n(2)), vec![(LogIndex(1), 100)]);
    assert_eq!(appends_to(&ready.messages, n(3)), vec![(LogIndex(1), 100)]);
    persist(&mut cluster.nodes.get_mut(&n(1)).unwrap().durable, &ready);
    cluster.raft(n(1)).advance(ready.id());
    for envelope in ready.messages {
        cluster.in_flight.push_back(envelope);
    }
    cluster.stabilize();
    let expected: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    for id in 1..=3 {
        assert_eq!(cluster.applied_commands(n(id)), expected);
    }
}

#[test]
fn the_in_flight_window_bounds_pipelined_appends() {
    let mut cluster = Cluster::new(3, |c| {
        c.max_inflight_appends = 2;
        c.max_entries_bytes_per_append = 1;
    });
    cluster.elect(n(1));
    for i in 0..20 {
        cluster.propose(n(1), i, "x").unwrap();
    }
    let ready = cluster.raft(n(1)).ready().unwrap();
    let appends = appends_to(&ready.messages, n(2));
    assert_eq!(
        appends,
        vec![(LogIndex(1), 1), (LogIndex(2), 1)],
        "two one-entry appends, then wait"
    );
    persist(&mut cluster.nodes.get_mut(&n(1)).unwrap().durable, &ready);
    cluster.raft(n(1)).advance(ready.id());
    cluster.in_flight.extend(ready.messages);
    cluster.stabilize();
    for id in 1..=3 {
        assert_eq!(cluster.applied_commands(n(id)).len(), 20);
    }
}

fn restored(term: u64, terms: &[u64]) -> Durable {
    Durable {
        hard_state: HardState {
            term: Term(term),
            vote: None,
            commit: LogIndex(0),
        },
        snapshot: None,
        staging: Vec::new(),
        entries: terms
            .iter()
            .enumerate()
            .map(|(i, t)| entry(*t, i as u64 + 1))
            .collect(),
    }
}

#[test]
fn a_conflicting_suffix_is_replaced_with_few_round_trips() {
    // Raft Figure 7: the leader's log and a follower with a long suffix of stale terms.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.start(n(1), restored(6, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6]));
    cluster.start(n(2), restored(3, &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]));
    cluster.start(n(3), restored(6, &[1, 1, 1, 4]));
    cluster.elect(n(1));
    let leader_log: Vec<Term> = (1..=11)
        .map(|i| cluster.raft(n(1)).term_at(LogIndex(i)).unwrap())
        .collect();
    assert_eq!(leader_log[10], Term(7), "the new leader's no-op");
    for id in [n(2), n(3)] {
        let follower: Vec<Term> = (1..=11)
            .map(|i| cluster.raft(id).term_at(LogIndex(i)).unwrap())
            .collect();
        assert_eq!(follower, leader_log, "{id} converged");
    }
    let rejections = cluster
        .delivered
        .iter()
        .filter(|e| {
            e.from == n(2)
                && matches!(
                    e.msg,
                    RaftMessage::AppendResponse {
                        outcome: AppendOutcome::Reject { .. },
                        ..
                    }
                )
        })
        .count();
    assert!(
        rejections <= 2,
        "hints skip whole terms: {rejections} rejections"
    );
    assert_eq!(cluster.status(n(2)).commit, LogIndex(11));
}

#[test]
fn figure_8_an_old_term_entry_is_not_committed_by_counting() {
    let mut cluster = figure_8_cluster(|_| {});
    assert_eq!(
        cluster.status(n(1)).commit,
        LogIndex(0),
        "index 2 (term 2) is on a majority but not committable"
    );
    finish_figure_8(&mut cluster);
    for id in 2..=5 {
        assert_eq!(
            cluster.raft(n(id)).term_at(LogIndex(2)),
            Some(Term(3)),
            "n5's entry wins"
        );
    }
}

#[cfg(feature = "sim-bugs")]
#[test]
fn planted_commit_old_term_commits_the_figure_8_entry() {
    let cluster = figure_8_cluster(|c| c.planted_bug = PlantedBug::from_name("commit-old-term"));
    assert_eq!(
        cluster.status(n(1)).commit,
        LogIndex(2),
        "the bug commits index 2 by counting"
    );
}

/// Figure 8 (c): n1 leads term 4 and has put index 2 (term 2) on n1, n2, n3; n5 holds a
/// different index 2 from term 3. n1's term-4 entries reach nobody.
fn figure_8_cluster(tweak: impl Fn(&mut Config) + 'static) -> Cluster {
    let mut cluster = Cluster::new(5, move |c| {
        c.max_entries_bytes_per_append = 1;
        tweak(c);
    });
    cluster.start(n(1), restored(3, &[1, 2]));
    cluster.start(n(2), restored(3, &[1, 2]));
    cluster.start(n(3), restored(3, &[1]));
    cluster.start(n(4), restored(3, &[1]));
    cluster.start(n(5), restored(4, &[1, 3]));
    // n1's term-4 entries never arrive; the rest of its appends do.
    cluster.mangle = Some(Box::new(|mut e: Envelope| {
        if let RaftMessage::Append { entries, .. } = &mut e.msg {
            entries.retain(|x| x.term != Term(4));
        }
        Some(e)
    }));
    cluster.cut.insert((n(1), n(5)));
    cluster.cut.insert((n(1), n(4)));
    cluster.elect(n(1));
    assert_eq!(cluster.raft(n(3)).term_at(LogIndex(2)), Some(Term(2)));
    cluster
}

/// n1 crashes; n5 wins term 5 and overwrites index 2 everywhere.
fn finish_figure_8(cluster: &mut Cluster) {
    cluster.crash(n(1));
    cluster.mangle = None;
    cluster.heal();
    cluster.elect(n(5));
    cluster.propose(n(5), 1, "x").unwrap();
    cluster.stabilize();
}

#[test]
fn backpressure_refuses_proposals_beyond_the_uncommitted_limit() {
    let mut cluster = Cluster::new(3, |c| c.max_uncommitted_entries = 5);
    cluster.elect(n(1));
    cluster.isolate(n(1));
    let results: Vec<_> = (0..6).map(|i| cluster.propose(n(1), i, "x")).collect();
    assert!(results[..5].iter().all(|r| r.is_ok()));
    assert_eq!(
        results[5],
        Err(ProposeError::Backpressure {
            pending: 5,
            pending_max: 5
        })
    );
}

#[test]
fn a_lost_append_is_recovered_by_the_next_heartbeat() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    cluster.mangle = Some(Box::new(|e: Envelope| {
        (e.to != n(3) || !matches!(e.msg, RaftMessage::Append { .. })).then_some(e)
    }));
    cluster.propose(n(1), 1, "a").unwrap();
    cluster.stabilize();
    assert!(cluster.applied_commands(n(3)).is_empty());
    cluster.mangle = None;
    cluster.run_for(3 * Duration::from_millis(30));
    assert_eq!(cluster.applied_commands(n(3)), vec!["a"]);
}

#[test]
fn a_leader_with_dropped_proposals_reports_them() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    cluster.isolate(n(1));
    cluster.propose(n(1), 42, "x").unwrap();
    cluster.stabilize();
    cluster.run_for(3 * T);
    let dropped = &cluster.node(n(1)).dropped_proposals;
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].0, ProposalId(42));
    assert!(matches!(dropped[0].1, ProposeError::LeadershipLost { .. }));
}

// A leader deposed by a higher term (not by CheckQuorum, which keeps the term) must still
// report the proposals of its leadership: the shell would otherwise wait for them forever.
// The cleanup once ran after the term was raised and looked for entries of the new term.
#[test]
fn a_leader_deposed_by_a_higher_term_reports_its_dropped_proposals() {
    let mut cluster = Cluster::new(3, |config| config.check_quorum = false);
    cluster.elect(n(1));
    cluster.isolate(n(1));
    cluster.propose(n(1), 42, "x").unwrap();
    cluster.stabilize();
    cluster.run_for(3 * T);
    assert!(
        cluster.node(n(1)).dropped_proposals.is_empty(),
        "still leader while isolated"
    );
    let old_term = cluster.status(n(1)).term;
    assert!(cluster.leaders().iter().any(|leader| *leader != n(1)));
    cluster.heal();
    cluster.run_for(3 * T);
    assert!(cluster.status(n(1)).term > old_term);
    let dropped = &cluster.node(n(1)).dropped_proposals;
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0].0, ProposalId(42));
}
