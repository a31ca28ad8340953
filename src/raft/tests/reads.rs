//! Reads: ReadIndex batching and its quorum round, leases, follower reads, stale reads.

use super::*;

const HEARTBEAT: Duration = Duration::from_millis(30);
const DRIFT: Duration = Duration::from_millis(15);

fn heartbeats(envelopes: &[Envelope]) -> Vec<u64> {
    envelopes
        .iter()
        .filter_map(|e| match e.msg {
            RaftMessage::Heartbeat { seq, .. } => Some(seq),
            _ => None,
        })
        .collect()
}

#[test]
fn many_reads_share_one_heartbeat_round() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    cluster.propose(n(1), 1, "a").unwrap();
    cluster.stabilize();
    let commit = cluster.status(n(1)).commit;
    let now = cluster.now;
    for i in 0..10 {
        cluster.raft(n(1)).read_index(now, ReadId(i)).unwrap();
    }
    let ready = cluster.raft(n(1)).ready().unwrap();
    let seqs = heartbeats(&ready.messages);
    assert_eq!(seqs.len(), 2, "one heartbeat per follower");
    assert_eq!(seqs[0], seqs[1]);
    assert!(
        ready.read_states.is_empty(),
        "nothing is served before the round is acknowledged"
    );
    cluster.raft(n(1)).advance(ready.id());
    cluster.in_flight.extend(ready.messages);
    cluster.stabilize();
    let reads = &cluster.node(n(1)).read_states;
    assert_eq!(reads.len(), 10);
    assert!(reads.iter().all(|r| r.index == commit));
}

#[test]
fn a_read_index_needs_a_quorum_to_answer_the_round() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    cluster.isolate(n(1));
    let now = cluster.now;
    cluster.raft(n(1)).read_index(now, ReadId(1)).unwrap();
    cluster.stabilize();
    assert!(cluster.node(n(1)).read_states.is_empty());
    cluster.run_for(3 * T);
    assert_eq!(
        cluster.node(n(1)).dropped_reads,
        vec![(ReadId(1), ReadError::LeadershipLost)]
    );
}

#[cfg(feature = "sim-bugs")]
#[test]
fn planted_read_index_without_heartbeat_answers_an_isolated_leader() {
    let mut cluster = Cluster::new(3, |c| {
        c.planted_bug = PlantedBug::from_name("read-index-no-heartbeat")
    });
    cluster.elect(n(1));
    cluster.isolate(n(1));
    let now = cluster.now;
    cluster.raft(n(1)).read_index(now, ReadId(1)).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(n(1)).read_states.len(), 1);
}

#[test]
fn a_read_index_waits_for_the_leaders_first_commit() {
    let mut cluster = Cluster::new(3, |_| {});
    // The new leader's no-op cannot reach anyone yet.
    cluster.mangle = Some(Box::new(|e: Envelope| {
        (!matches!(e.msg, RaftMessage::Append { .. })).then_some(e)
    }));
    cluster.elect(n(1));
    let now = cluster.now;
    cluster.raft(n(1)).read_index(now, ReadId(1)).unwrap();
    assert_eq!(
        cluster.raft(n(1)).lease_read(now),
        Err(ReadError::LeaderNotReady)
    );
    cluster.run_for(HEARTBEAT * 2);
    assert!(
        cluster.node(n(1)).read_states.is_empty(),
        "commit index of an earlier term is not trusted"
    );
    cluster.mangle = None;
    cluster.run_for(HEARTBEAT * 2);
    assert_eq!(
        cluster.node(n(1)).read_states,
        vec![ReadState {
            id: ReadId(1),
            index: LogIndex(1)
        }]
    );
}

#[test]
fn the_lease_starts_with_an_acknowledged_round_and_ends_before_the_election_timeout() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    let now = cluster.now;
    assert_eq!(
        cluster.raft(n(1)).lease_read(now),
        Err(ReadError::LeaseExpired),
        "no round acknowledged yet"
    );
    // The next heartbeat round goes out and is acknowledged at once (zero-delay network).
    let round_at = cluster.raft(n(1)).poll_timeout().unwrap();
    cluster.run_for(round_at - cluster.now);
    let sent = cluster.now;
    cluster.isolate(n(1));
    let commit = cluster.status(n(1)).commit;
    let last_valid = sent + T - DRIFT - Duration::from_nanos(1);
    assert_eq!(cluster.raft(n(1)).lease_read(last_valid), Ok(commit));
    assert_eq!(
        cluster.raft(n(1)).lease_read(sent + T - DRIFT),
        Err(ReadError::LeaseExpired)
    );
}

#[test]
fn leases_need_check_quorum() {
    let mut cluster = Cluster::new(3, |c| c.check_quorum = false);
    cluster.elect(n(1));
    cluster.run_for(HEARTBEAT * 2);
    let now = cluster.now;
    assert_eq!(
        cluster.raft(n(1)).lease_read(now),
        Err(ReadError::LeaseExpired)
    );
    assert_eq!(
        cluster.raft(n(2)).lease_read(now),
        Err(ReadError::NotLeader {
            leader_hint: Some(n(1))
        })
    );
}

#[cfg(feature = "sim-bugs")]
#[test]
fn planted_lease_ignores_drift_outlives_the_safe_lease() {
    let mut cluster = Cluster::new(3, |c| {
        c.planted_bug = PlantedBug::from_name("lease-ignores-drift")
    });
    cluster.elect(n(1));
    let round_at = cluster.raft(n(1)).poll_timeout().unwrap();
    cluster.run_for(round_at - cluster.now);
    let sent = cluster.now;
    cluster.isolate(n(1));
    assert!(cluster.raft(n(1)).lease_read(sent + T - DRIFT).is_ok());
}

#[test]
fn a_follower_read_gets_its_index_from_the_leader() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    cluster.propose(n(1), 1, "a").unwrap();
    cluster.stabilize();
    let commit = cluster.status(n(1)).commit;
    let now = cluster.now;
    cluster.raft(n(2)).read_index(now, ReadId(7)).unwrap();
    cluster.stabilize();
    assert_eq!(
        cluster.node(n(2)).read_states,
        vec![ReadState {
            id: ReadId(7),
            index: commit
        }]
    );
    assert!(cluster.node(n(2)).applied_index >= commit);
}

#[test]
fn a_follower_read_without_an_answer_times_out() {
    let mut cluster = Cluster::new(3, |_| {});
    let now = cluster.now;
    assert_eq!(
        cluster.raft(n(2)).read_index(now, ReadId(1)),
        Err(ReadError::NoLeader)
    );
    cluster.elect(n(1));
    cluster.cut.insert((n(2), n(1)));
    let now = cluster.now;
    cluster.raft(n(2)).read_index(now, ReadId(2)).unwrap();
    cluster.run_for(T + HEARTBEAT);
    assert_eq!(
        cluster.node(n(2)).dropped_reads,
        vec![(ReadId(2), ReadError::Timeout)]
    );
}

#[test]
fn stale_reads_report_how_far_behind_they_are() {
    let mut cluster = Cluster::new(1, |_| {});
    cluster.elect(n(1));
    let now = cluster.now;
    for i in 0..3 {
        cluster
            .raft(n(1))
            .propose(now, ProposalId(i), cmd("x"))
            .unwrap();
    }
    let ready = cluster.raft(n(1)).ready().unwrap();
    cluster.raft(n(1)).advance(ready.id());
    let ready = cluster.raft(n(1)).ready().unwrap();
    assert_eq!(ready.committed.len(), 3);
    cluster.raft(n(1)).report_applied(LogIndex(2));
    let status = cluster.raft(n(1)).stale_read_status();
    assert_eq!(
        status,
        StaleStatus {
            applied: LogIndex(2),
            known_commit: LogIndex(4),
            behind: 2
        }
    );
}

#[test]
fn a_sole_voter_serves_reads_at_once() {
    let mut cluster = Cluster::new(1, |_| {});
    cluster.elect(n(1));
    let now = cluster.now;
    cluster.raft(n(1)).read_index(now, ReadId(3)).unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(n(1)).read_states.len(), 1);
    assert!(cluster.raft(n(1)).lease_read(now).is_ok());
}
