//! Snapshots: compaction, chunked transfer to a lagging follower, install, restart.

use super::*;

#[test]
fn a_lagging_follower_receives_the_snapshot_in_bounded_chunks() {
    let mut cluster = Cluster::new(3, |c| c.snapshot_chunk_bytes = 4);
    cluster.elect(n(1));
    cluster.crash(n(3));
    for i in 0..10 {
        cluster.propose(n(1), i, &format!("c{i}")).unwrap();
    }
    cluster.stabilize();
    let applied = cluster.status(n(1)).applied;
    assert_eq!(applied, LogIndex(11));
    let data = Bytes::from_static(b"0123456789abcdefghij");
    let meta = cluster.compact(n(1), applied, data.clone());
    assert_eq!(meta.index, applied);
    assert_eq!(cluster.status(n(1)).snapshot_index, applied);
    cluster.restart(n(3));
    cluster.run_for(Duration::from_millis(200));
    let chunks: Vec<usize> = cluster
        .delivered
        .iter()
        .filter_map(|e| match &e.msg {
            RaftMessage::InstallSnapshot { data, .. } => Some(data.len()),
            _ => None,
        })
        .collect();
    assert!(chunks.len() >= 5, "20 bytes in chunks of 4: {chunks:?}");
    assert!(chunks.iter().all(|len| *len <= 4));
    let follower = cluster.node(n(3));
    assert_eq!(follower.installed_snapshots, vec![meta.clone()]);
    assert_eq!(follower.durable.snapshot.as_ref().unwrap().1, data);
    assert!(
        follower
            .durable
            .entries
            .iter()
            .all(|e| e.index > meta.index)
    );
    assert_eq!(cluster.status(n(3)).commit, applied);
    cluster.propose(n(1), 99, "after").unwrap();
    cluster.stabilize();
    assert_eq!(cluster.node(n(3)).applied_index, LogIndex(12));
    assert_eq!(cluster.applied_commands(n(3)), vec!["after"]);
}

#[test]
fn compact_refuses_unapplied_or_already_compacted_indexes() {
    let mut cluster = Cluster::new(1, |_| {});
    cluster.elect(n(1));
    let err = cluster.raft(n(1)).compact(LogIndex(5)).unwrap_err();
    assert_eq!(
        err,
        CompactError::NotApplied {
            index: LogIndex(5),
            applied: LogIndex(1)
        }
    );
    cluster.raft(n(1)).compact(LogIndex(1)).unwrap();
    let err = cluster.raft(n(1)).compact(LogIndex(1)).unwrap_err();
    assert_eq!(
        err,
        CompactError::AlreadyCompacted {
            index: LogIndex(1),
            snapshot: LogIndex(1)
        }
    );
}

#[test]
fn a_node_restarts_from_snapshot_and_later_entries() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect(n(1));
    for i in 0..5 {
        cluster.propose(n(1), i, &format!("c{i}")).unwrap();
    }
    cluster.stabilize();
    cluster.compact(n(2), LogIndex(3), Bytes::from_static(b"state"));
    cluster.crash(n(2));
    cluster.restart(n(2));
    let status = cluster.status(n(2));
    assert_eq!(status.snapshot_index, LogIndex(3));
    assert_eq!(status.last_index, LogIndex(6));
    assert_eq!(status.applied, LogIndex(3));
    cluster.stabilize();
    assert_eq!(
        cluster.node(n(2)).applied_index,
        LogIndex(6),
        "entries after the snapshot are re-applied"
    );
}
