//! Paxos keyspaces on a real 3-node cluster (`LocalCluster`, real processes, QUIC, redb):
//! writes, reads and cas through different nodes, receipts that name the ballot and a
//! majority of acceptors, writes that go on through any node while one node is down (no
//! leader to lose), a restarted node that serves what it missed, and scans refused with
//! the typed error.

mod common;

use capdial::client::ConnError;
use capdial::client::typed::PaxosKeyspace;
use capdial::protocol::{
    ClientError, KeyspaceMode, Operation, Position, ReadLevel, Receipt, Served,
};
use capdial::types::NodeId;
use common::{READY_DEADLINE, poll_until};

/// Asserts `receipt` names a ballot of the serving node and a majority of distinct
/// acceptors, in node order; returns the ballot's incarnation.
fn check_receipt(receipt: &Receipt) -> u64 {
    let Position::Paxos { ballot, acceptors } = &receipt.position else {
        panic!("a paxos receipt has a Paxos position: {receipt:?}");
    };
    assert!(
        acceptors.len() >= 2,
        "a majority of 3 agreed: {acceptors:?}"
    );
    assert!(
        acceptors.windows(2).all(|pair| pair[0] < pair[1]),
        "acceptors are distinct, in order: {acceptors:?}"
    );
    assert!(acceptors.iter().all(|id| (1..=3).contains(&id.0)));
    assert!(ballot.round >= 1, "a chosen ballot: {ballot:?}");
    // A read answered from the promise round alone may report a ballot of another
    // proposer; a write's ballot is always the serving node's own.
    ballot.proposer.incarnation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reads_and_cas_through_every_node_with_receipts() {
    let cluster = common::local_cluster().await;
    cluster
        .create_keyspace("locks", KeyspaceMode::Paxos)
        .await
        .expect("create locks");
    let locks = cluster.client().open_paxos("locks").await.expect("open");
    let nodes = cluster.nodes().to_vec();
    let (n1, n2, n3) = (&nodes[0].address, &nodes[1].address, &nodes[2].address);

    let written = locks.put("door", "alice").at(n1).await.expect("put via n1");
    assert_eq!(written.receipt.level, Served::Committed);
    assert_eq!(written.receipt.node, nodes[0].id);
    check_receipt(&written.receipt);
    let Position::Paxos { ballot, .. } = &written.receipt.position else {
        unreachable!("checked above");
    };
    assert_eq!(ballot.proposer.node, nodes[0].id, "n1 proposed its write");

    // Every node reads it, linearizably (a round each).
    for node in &nodes {
        let read = locks.get("door").at(&node.address).await.expect("get");
        assert_eq!(read.receipt.level, Served::Read(ReadLevel::Linearizable));
        assert_eq!(read.receipt.node, node.id);
        check_receipt(&read.receipt);
        let row = read.value.expect("door was written");
        assert_eq!(row.value, "alice");
        assert_eq!(row.mod_revision, written.revision);
    }

    // A cas through n2 on n1's revision wins; the same cas through n3 then fails and
    // reports the key as n2 left it.
    let taken = locks
        .cas("door")
        .expect(written.revision)
        .put("bob")
        .at(n2)
        .await
        .expect("cas via n2");
    assert!(taken.succeeded);
    assert!(taken.revision > written.revision);
    check_receipt(&taken.receipt);
    let lost = locks
        .cas("door")
        .expect(written.revision)
        .put("carol")
        .at(n3)
        .await
        .expect("cas via n3");
    assert!(!lost.succeeded, "the revision moved on");
    assert_eq!(lost.current.expect("door holds bob").value, "bob");
    let created = locks
        .cas("window")
        .expect_absent()
        .put("dave")
        .at(n3)
        .await
        .expect("cas absent");
    assert!(created.succeeded);

    locks.delete("door").at(n3).await.expect("delete");
    assert!(locks.get("door").at(n1).await.expect("get").value.is_none());

    // A level a paxos keyspace does not have is refused with the typed error.
    let lease = locks.get("window").lease().at(n1).await;
    assert!(
        matches!(
            lease,
            Err(ConnError::Client(
                ClientError::ReadLevelNotApplicable { .. }
            ))
        ),
        "{lease:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_is_refused_with_the_typed_error() {
    let cluster = common::local_cluster().await;
    cluster
        .create_keyspace("locks", KeyspaceMode::Paxos)
        .await
        .expect("create locks");
    let scan = Operation::Scan {
        prefix: "d".into(),
        limit: 10,
        after: None,
    };
    let refused = cluster
        .client()
        .execute("locks", scan, None, None, None)
        .await;
    let Err(ConnError::Client(ClientError::WrongType { command, mode })) = refused else {
        panic!("a scan of a paxos keyspace is refused as WrongType: {refused:?}");
    };
    assert_eq!(command, "scan");
    assert_eq!(mode, KeyspaceMode::Paxos);
}

/// Reads `key` through `endpoint` until it holds `value` (the node may still be starting).
async fn wait_value(locks: &PaxosKeyspace, endpoint: &str, key: &str, value: &str) {
    poll_until(
        READY_DEADLINE,
        &format!("{key}={value} through {endpoint}"),
        async || {
            let read = locks.get(key).at(endpoint).await.ok()?;
            (read.value?.value == value).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_stops_nothing_and_a_restarted_one_serves_what_it_missed() {
    let cluster = common::local_cluster().await;
    cluster
        .create_keyspace("locks", KeyspaceMode::Paxos)
        .await
        .expect("create locks");
    let locks = cluster.client().open_paxos("locks").await.expect("open");
    let nodes = cluster.nodes().to_vec();
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    let before = locks
        .put("k", "before")
        .at(&n3.address)
        .await
        .expect("put via n3");
    let incarnation_before = check_receipt(&before.receipt);

    // With n3 gone, both other nodes take writes at once: no leader to elect.
    cluster.kill(n3.id).expect("kill n3");
    for (i, node) in [n1, n2].into_iter().enumerate() {
        let key = format!("while-down-{i}");
        let written = locks
            .put(key.as_str(), "1")
            .at(&node.address)
            .await
            .expect("two of three acceptors choose");
        let Position::Paxos { acceptors, .. } = &written.receipt.position else {
            panic!("paxos receipt");
        };
        assert_eq!(
            acceptors,
            &vec![NodeId(1), NodeId(2)],
            "only the live nodes agreed"
        );
    }
    locks
        .put("k", "during")
        .at(&n1.address)
        .await
        .expect("overwrite");

    // n3 restarts under a new incarnation; then n1 goes, so every quorum needs n3: what
    // it missed must still come back (its round adopts n2's accepted registers).
    cluster.restart(n3.id).await.expect("restart n3");
    wait_value(&locks, &n3.address, "k", "during").await;
    cluster.kill(n1.id).expect("kill n1");
    wait_value(&locks, &n3.address, "while-down-0", "1").await;
    wait_value(&locks, &n3.address, "while-down-1", "1").await;
    let after = locks
        .put("k", "after")
        .at(&n3.address)
        .await
        .expect("n2 and n3 choose");
    let incarnation_after = check_receipt(&after.receipt);
    assert!(
        incarnation_after > incarnation_before,
        "a restart proposes under a new incarnation ({incarnation_before} then {incarnation_after})"
    );
    wait_value(&locks, &n2.address, "k", "after").await;
}
