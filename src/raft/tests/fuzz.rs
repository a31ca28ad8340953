//! Hostile peers: random (but decodable) messages from members and strangers must never make
//! the core panic, whatever role it is in. Only a broken local invariant may panic.

use super::*;
use crate::types::Term;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn index(rng: &mut ChaCha8Rng) -> LogIndex {
    match rng.random_range(0..10) {
        0 => LogIndex(u64::MAX),
        1 => LogIndex(0),
        _ => LogIndex(rng.random_range(0..30)),
    }
}

fn term(rng: &mut ChaCha8Rng) -> Term {
    match rng.random_range(0..10) {
        0 => Term(u64::MAX),
        _ => Term(rng.random_range(0..6)),
    }
}

/// A membership entry whose configuration may be anything, ill-formed included (no voter,
/// a node both voter and learner).
fn membership_entry(change: MembershipChange, rng: &mut ChaCha8Rng) -> EntryKind {
    let mut some = |count| -> BTreeSet<NodeId> {
        let len = rng.random_range(0..count);
        (0..len).map(|_| n(rng.random_range(1..8))).collect()
    };
    let voters = some(4);
    let learners = some(3);
    EntryKind::Membership {
        change,
        config: Membership { voters, learners },
    }
}

fn entries(rng: &mut ChaCha8Rng, prev: LogIndex) -> Vec<Entry> {
    let count = rng.random_range(0..4);
    let consecutive = rng.random_bool(0.7);
    (0..count)
        .map(|i| {
            let index = if consecutive {
                LogIndex(prev.0.saturating_add(i + 1))
            } else {
                index(rng)
            };
            let kind = match rng.random_range(0..4) {
                0 => EntryKind::Noop,
                1 => membership_entry(MembershipChange::AddLearner(n(rng.random_range(1..8))), rng),
                2 => membership_entry(
                    MembershipChange::RemoveVoter(n(rng.random_range(1..8))),
                    rng,
                ),
                _ => EntryKind::Normal {
                    proposal: ProposalId(i),
                    command: cmd("x"),
                },
            };
            Entry {
                term: term(rng),
                index,
                kind,
            }
        })
        .collect()
}

fn message(rng: &mut ChaCha8Rng) -> RaftMessage {
    let t = term(rng);
    match rng.random_range(0..12) {
        0 => RaftMessage::PreVote {
            term: t,
            last_index: index(rng),
            last_term: term(rng),
        },
        1 => RaftMessage::PreVoteResponse {
            term: t,
            granted: rng.random_bool(0.5),
        },
        2 => RaftMessage::Vote {
            term: t,
            last_index: index(rng),
            last_term: term(rng),
        },
        3 => RaftMessage::VoteResponse {
            term: t,
            granted: rng.random_bool(0.5),
        },
        4 => {
            let prev_index = index(rng);
            let entries = entries(rng, prev_index);
            RaftMessage::Append {
                term: t,
                prev_index,
                prev_term: term(rng),
                entries,
                leader_commit: index(rng),
            }
        }
        5 => {
            let outcome = if rng.random_bool(0.5) {
                AppendOutcome::Success {
                    match_index: index(rng),
                }
            } else {
                let conflict_term = rng.random_bool(0.5).then(|| term(rng));
                AppendOutcome::Reject {
                    rejected_prev: index(rng),
                    conflict_term,
                    hint_index: index(rng),
                }
            };
            RaftMessage::AppendResponse { term: t, outcome }
        }
        6 => RaftMessage::Heartbeat {
            term: t,
            commit: index(rng),
            seq: rng.random_range(0..5),
        },
        7 => RaftMessage::HeartbeatResponse {
            term: t,
            seq: rng.random(),
        },
        8 => {
            let meta = SnapshotMeta {
                index: index(rng),
                term: term(rng),
                membership: Membership::with_voters([n(1), n(rng.random_range(1..8))]),
            };
            let offset = rng.random_range(0..12);
            RaftMessage::InstallSnapshot {
                term: t,
                meta,
                offset,
                data: cmd("chunk"),
                last: rng.random_bool(0.5),
            }
        }
        9 => RaftMessage::SnapshotResponse {
            term: t,
            snapshot_index: index(rng),
            next_offset: rng.random(),
            done: rng.random_bool(0.5),
        },
        10 => RaftMessage::ReadIndex {
            term: t,
            id: ReadId(rng.random_range(0..4)),
        },
        _ => RaftMessage::ReadIndexResponse {
            term: t,
            id: ReadId(rng.random_range(0..4)),
            index: Some(index(rng)),
        },
    }
}

#[test]
fn random_peer_messages_never_panic_the_core() {
    for seed in 0..100 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut cluster = Cluster::new(3, |_| {});
        cluster.elect(n(1));
        cluster.propose(n(1), 1, "a").unwrap();
        cluster.stabilize();
        if seed % 3 == 0 {
            cluster.compact(n(1), LogIndex(1), cmd("snap"));
        }
        for _ in 0..400 {
            let to = n(rng.random_range(1..4));
            let from = n(rng.random_range(1..6));
            let envelope = Envelope {
                from,
                to,
                msg: message(&mut rng),
            };
            cluster.deliver(crate::wire::roundtrip(&envelope));
            if rng.random_bool(0.1) {
                cluster.now += Duration::from_millis(rng.random_range(0..100));
                let now = cluster.now;
                cluster.raft(to).handle_timeout(now);
            }
            let now = cluster.now;
            let _ = cluster.raft(to).propose(now, ProposalId(9), cmd("y"));
            let _ = cluster.raft(to).read_index(now, ReadId(9));
            cluster.drain_ready(to);
            cluster.in_flight.clear();
        }
    }
}
