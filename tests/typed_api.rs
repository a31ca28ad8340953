//! The typed client API against a real 3-node `LocalCluster`: every handle's operations and
//! levels, their receipts, a checked open refused with a typed error, and a partition set
//! and healed through the cluster's fault path.

mod common;

use capdial::client::ConnError;
use capdial::client::typed::{OpenError, StrongKeyspace};
use capdial::eventual::{ValueType, WriteLevel};
use capdial::protocol::{ClientError, KeyspaceMode, Position, ReadLevel, Served};
use capdial::types::NodeId;
use common::{READY_DEADLINE, poll_until};

const SET: KeyspaceMode = KeyspaceMode::Eventual(ValueType::Set);
const COUNTER: KeyspaceMode = KeyspaceMode::Eventual(ValueType::Counter);
const LWW: KeyspaceMode = KeyspaceMode::Eventual(ValueType::Lww);
const MVREG: KeyspaceMode = KeyspaceMode::Eventual(ValueType::MvReg);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_handle_operations_levels_and_receipts() {
    let cluster = common::local_cluster().await;
    cluster
        .create_keyspace("orders", KeyspaceMode::Strong)
        .await
        .expect("create orders");
    let orders = cluster.client().open_strong("orders").await.expect("open");

    let written = orders.put("o-1", "paid").await.expect("put");
    assert_eq!(written.receipt.level, Served::Committed);
    let Position::Raft { applied, .. } = written.receipt.position else {
        panic!(
            "a strong receipt has a Raft position: {:?}",
            written.receipt
        );
    };
    assert!(
        applied >= written.revision,
        "the leader applied the write it answers"
    );

    for (level, read) in [
        (ReadLevel::Linearizable, orders.get("o-1").await),
        (
            ReadLevel::Linearizable,
            orders.get("o-1").linearizable().await,
        ),
        (ReadLevel::Lease, orders.get("o-1").lease().await),
        (ReadLevel::Follower, orders.get("o-1").follower().await),
    ] {
        let read = read.unwrap_or_else(|error| panic!("{level} read: {error}"));
        assert_eq!(read.receipt.level, Served::Read(level));
        let row = read.value.expect("o-1 was written");
        assert_eq!(row.value, "paid");
        assert_eq!(row.mod_revision, written.revision);
    }
    // A stale read on every node: each serves what it applied, and sees the write soon.
    for node in cluster.nodes() {
        let read = poll_until(READY_DEADLINE, "a stale read with o-1", async || {
            let read = orders.get("o-1").stale().at(&node.address).await.ok()?;
            read.value.is_some().then_some(read)
        })
        .await;
        assert_eq!(read.receipt.node, node.id);
        assert_eq!(read.receipt.level, Served::Read(ReadLevel::Stale));
    }

    let cas = orders
        .cas("o-1")
        .expect(written.revision)
        .put("shipped")
        .await;
    let shipped = cas.expect("cas");
    assert!(shipped.succeeded);
    let stale = orders
        .cas("o-1")
        .expect(written.revision)
        .put("lost")
        .await
        .expect("cas");
    assert!(!stale.succeeded, "the revision moved on");
    assert_eq!(stale.current.expect("present").value, "shipped");
    assert!(
        orders
            .cas("o-2")
            .expect_absent()
            .put("new")
            .await
            .expect("cas")
            .succeeded
    );
    assert!(
        !orders
            .cas("o-2")
            .expect_absent()
            .put("again")
            .await
            .expect("cas")
            .succeeded
    );
    let o2 = orders.get("o-2").await.expect("get").value.expect("o-2");
    assert!(
        orders
            .cas("o-2")
            .expect(o2.mod_revision)
            .delete()
            .await
            .expect("cas")
            .succeeded
    );
    assert!(orders.get("o-2").await.expect("get").value.is_none());

    orders.put("o-3", "paid").await.expect("put");
    orders.delete("o-1").await.expect("delete");
    orders.put("x-1", "other prefix").await.expect("put");
    let all = orders.scan("o-").await.expect("scan");
    let keys: Vec<_> = all.entries.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!(keys, ["o-3"]);
    assert!(!all.receipts.is_empty());
    for id in ["o-4", "o-5"] {
        orders.put(id, "paid").await.expect("put");
    }
    let first = orders.scan("o-").limit(2).lease().await.expect("scan");
    assert_eq!(first.entries.len(), 2);
    let after = first.resume_after.expect("a key was left out");
    let rest = orders.scan("o-").after(after).await.expect("scan");
    assert_eq!(rest.entries.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_handles_operations_levels_and_a_refused_open() {
    let cluster = common::local_cluster().await;
    for (name, mode) in [
        ("carts", SET),
        ("views", COUNTER),
        ("profiles", LWW),
        ("docs", MVREG),
    ] {
        cluster.create_keyspace(name, mode).await.expect("create");
    }
    let db = cluster.client();
    let (n1, n2) = (&cluster.nodes()[0], &cluster.nodes()[1]);

    let carts = db.open_set("carts").await.expect("open carts");
    let acked = carts
        .add("alice", ["book", "pen"])
        .quorum()
        .await
        .expect("sadd");
    assert_eq!(acked.receipt.level, Served::Write(WriteLevel::Quorum));
    assert!(acked.acks >= 2, "a quorum of 3 is 2: {}", acked.acks);
    let all = carts.add("alice", ["tea"]).all().await.expect("sadd all");
    assert_eq!(all.acks, 3);
    carts.remove("alice", ["pen"]).local().await.expect("srem");
    let members = carts.members("alice").quorum().await.expect("smembers");
    assert_eq!(members.value, ["book", "tea"]);
    assert_eq!(members.receipt.level, Served::Read(ReadLevel::Quorum));

    let views = db.open_counter("views").await.expect("open views");
    views.incr("home", 5).await.expect("incr");
    views
        .decr("home", 2)
        .at(&n2.address)
        .await
        .expect("decr on n2");
    let sum = poll_until(READY_DEADLINE, "the counter on n1", async || {
        let read = views.get("home").local().at(&n1.address).await.ok()?;
        (read.value == 3).then_some(read)
    })
    .await;
    assert_eq!(sum.receipt.node, n1.id);

    // Read-your-writes: a write through n1, read through n2 with the write's token.
    let profiles = db.open_lww("profiles").await.expect("open profiles");
    let acked = profiles
        .put("alice", "dark")
        .at(&n1.address)
        .await
        .expect("put");
    let token = acked.token().expect("an eventual write returns a token");
    assert!(acked.stamp().is_some(), "an lww write has an HLC stamp");
    let read = poll_until(READY_DEADLINE, "a session read on n2", async || {
        profiles
            .get("alice")
            .session(token)
            .at(&n2.address)
            .await
            .ok()
    })
    .await;
    assert_eq!(read.value.as_deref(), Some(&b"dark"[..]));
    assert_eq!(read.receipt.level, Served::Read(ReadLevel::Session));
    profiles.delete("alice").all().await.expect("delete");
    assert_eq!(
        profiles.get("alice").quorum().await.expect("get").value,
        None
    );

    // Siblings, merged in the app and written back with their context.
    let docs = db.open_mvreg("docs").await.expect("open docs");
    docs.put("readme", "a").at(&n1.address).await.expect("put");
    // Pinned to n1: a context names writes n1 has seen, and another node may not have yet.
    let read = docs.get("readme").at(&n1.address).await.expect("get");
    docs.put("readme", "b")
        .context(read.value.context)
        .at(&n1.address)
        .await
        .expect("put with context");
    let read = docs
        .get("readme")
        .quorum()
        .at(&n1.address)
        .await
        .expect("get");
    assert_eq!(read.value.values, ["b"]);
    let deleted = docs
        .delete("readme")
        .context(read.value.context)
        .at(&n1.address);
    deleted.await.expect("delete");
    assert!(
        docs.get("readme")
            .at(&n1.address)
            .await
            .expect("get")
            .value
            .values
            .is_empty()
    );

    // A checked open of the wrong kind is refused once, with what the keyspace is.
    match db.open_strong("carts").await {
        Err(OpenError::WrongKind {
            keyspace,
            expected,
            actual,
        }) => {
            assert_eq!(keyspace, "carts");
            assert_eq!(expected, KeyspaceMode::Strong);
            assert_eq!(actual, SET);
        }
        other => panic!("expected WrongKind, got {other:?}"),
    }
    assert!(matches!(
        db.open_counter("profiles").await,
        Err(OpenError::WrongKind { .. })
    ));
    assert!(matches!(
        db.open_set("nowhere").await,
        Err(OpenError::NoSuchKeyspace { .. })
    ));
    // An unchecked handle of the wrong kind meets the node's typed refusal instead.
    let wrong = db.strong("carts").put("k", "v").await;
    assert!(
        matches!(wrong, Err(ConnError::Client(ClientError::WrongType { .. }))),
        "{wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_through_the_cluster_then_heal_and_restart() {
    let cluster = common::local_cluster().await;
    cluster
        .create_keyspace("orders", KeyspaceMode::Strong)
        .await
        .expect("create orders");
    cluster
        .create_keyspace("carts", SET)
        .await
        .expect("create carts");
    let db = cluster.client();
    let (orders, carts) = (db.strong("orders"), db.set("carts"));
    orders.put("before", "1").await.expect("put");

    // Cut off a node that does not lead orders, so the majority keeps its leader.
    let leader = poll_until(READY_DEADLINE, "a leader of orders", async || {
        cluster.leader("orders").await.ok().flatten()
    })
    .await;
    let minority = cluster
        .nodes()
        .iter()
        .find(|node| node.id != leader)
        .expect("3 nodes")
        .clone();
    let majority: Vec<NodeId> = cluster
        .nodes()
        .iter()
        .map(|node| node.id)
        .filter(|id| *id != minority.id)
        .collect();
    cluster
        .partition(&[&majority, &[minority.id]])
        .await
        .expect("partition");
    assert_eq!(cluster.fault_rules().rules.len(), 1);
    assert_eq!(
        cluster.status(minority.id).await.expect("status").faults,
        cluster.fault_rules()
    );

    // The minority refuses strong writes once it notices, with the typed reason.
    poll_until(READY_DEADLINE, "Unavailable on the minority", async || {
        let put = orders.put("refused", "x").at(&minority.address).await;
        matches!(put, Err(ConnError::Client(ClientError::Unavailable { .. }))).then_some(())
    })
    .await;
    orders
        .put("during", "2")
        .await
        .expect("the majority side writes");
    // Every side takes eventual writes.
    carts
        .add("alice", ["from-minority"])
        .at(&minority.address)
        .await
        .expect("minority sadd");
    carts
        .add("alice", ["from-majority"])
        .await
        .expect("majority sadd");

    cluster.heal().await.expect("heal");
    assert!(cluster.fault_rules().rules.is_empty());
    for node in cluster.nodes() {
        poll_until(READY_DEADLINE, "carts converged after heal", async || {
            let read = carts.members("alice").at(&node.address).await.ok()?;
            (read.value == ["from-majority", "from-minority"]).then_some(())
        })
        .await;
    }
    wait_stale(&orders, &minority.address, "during").await;

    // A killed node misses writes and catches up after its restart.
    cluster.kill(minority.id).expect("kill");
    assert!(!cluster.is_running(minority.id));
    orders
        .put("while-down", "3")
        .await
        .expect("two of three still commit");
    cluster.restart(minority.id).await.expect("restart");
    wait_stale(&orders, &minority.address, "while-down").await;
}

/// Waits until a stale read of `key` through `endpoint` finds it.
async fn wait_stale(orders: &StrongKeyspace, endpoint: &str, key: &str) {
    poll_until(
        READY_DEADLINE,
        &format!("{key} on {endpoint}"),
        async || {
            let read = orders.get(key).stale().at(endpoint).await.ok()?;
            read.value.map(drop)
        },
    )
    .await;
}
