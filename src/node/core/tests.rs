//! The core's own tests; the node simulator (`sim::node`) drives whole clusters of it.

use super::*;
use crate::raft::Config as RaftConfig;
use crate::raft::{ProposalId, Ready, Role};
use crate::strong::{Command, Request};
use crate::types::LogIndex;
use bytes::Bytes;

/// Runs a one-voter replica's timers and Readies until `until` holds, checking each
/// `on_persisted` with `check_faults`; returns how many faults it let pass, or the first
/// error.
fn pump(
    replica: &mut Replica<u64>,
    now: &mut Instant,
    until: impl Fn(&Replica<u64>) -> bool,
    tamper: impl Fn(&mut Ready),
) -> Result<usize, CoreError> {
    let mut passed = 0;
    for _ in 0..1000 {
        if until(replica) {
            return Ok(passed);
        }
        *now += Duration::from_millis(10);
        if replica.poll_timeout().is_some_and(|at| at <= *now) {
            replica.handle_timeout(*now);
        }
        while let Some(mut ready) = replica.take_ready() {
            if let Some(raft) = &mut ready.raft {
                tamper(raft);
            }
            let applied = replica.on_persisted(ready);
            passed += applied.faults.len();
            check_faults(GroupId(7), applied.faults)?;
        }
    }
    panic!("the replica never got there");
}

/// Issue 9: a replica that applied an entry out of order used to be logged as a
/// `replica fault` while the node went on serving its diverged state. Now the fault
/// ends the driver with `CoreError::Invariant` naming the group; a malformed entry,
/// which every replica skips alike, does not.
#[test]
fn an_out_of_order_apply_stops_the_node_and_a_malformed_entry_does_not() {
    let config = ReplicaConfig {
        raft: RaftConfig::new(NodeId(1), vec![NodeId(1)]),
        machine: MachineConfig::default(),
        compact_every: 10_000,
    };
    let mut now = Instant::from_nanos(0);
    let store: Arc<dyn MachineStore> = Arc::new(crate::strong::MemoryMachineStore::new());
    let durable = DurableState::default();
    let mut replica = Replica::<u64>::boot(config, durable, store, GroupId(7), 1, now)
        .expect("a fresh replica boots");
    let leader = |r: &Replica<u64>| r.status().role == Role::Leader && r.status().applied.0 > 0;
    let passed = pump(&mut replica, &mut now, leader, |_| {}).expect("an election");
    assert_eq!(passed, 0, "an election breaks nothing");

    // Bytes that are not a request: applied as a no-op on every replica; not fatal.
    let garbage = Bytes::from_static(b"not a request");
    let index = replica
        .raft_mut()
        .propose(now, ProposalId(1), garbage)
        .expect("the leader takes a proposal");
    let applied_to = |index: LogIndex| move |r: &Replica<u64>| r.status().applied >= index;
    let passed = pump(&mut replica, &mut now, applied_to(index), |_| {})
        .expect("a malformed entry does not stop the node");
    assert_eq!(passed, 1, "the malformed entry is reported, and let pass");

    let request = Request {
        client: ClientId(1),
        seq: 1,
        first_unacked: 1,
        opens_session: true,
        proposed_at: WallMillis(0),
        command: Command::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        },
    };
    let index = replica
        .submit(now, WallMillis(0), ProposalId(2), 2, &request)
        .expect("the leader takes a write");
    // The core hands the entry out two indexes ahead of where the machine stands.
    let skip = |ready: &mut Ready| {
        for entry in &mut ready.committed {
            entry.index = LogIndex(entry.index.0 + 2);
        }
    };
    let error = pump(&mut replica, &mut now, applied_to(index), skip)
        .expect_err("an out-of-order apply stops the node");
    match &error {
        CoreError::Invariant {
            group,
            fault: ApplyFault::OutOfOrder { got, expected },
        } => {
            assert_eq!(*group, GroupId(7));
            assert_eq!(*got, index.0 + 2);
            assert_eq!(*expected, index.0);
        }
        other => panic!("expected an invariant error, got {other:?}"),
    }
    assert_eq!(error.to_string(), "raft group 7 broke a local invariant");
}
