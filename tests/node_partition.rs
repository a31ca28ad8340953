//! A partition through the fault path (`AdminRequest::SetFaults` on every node): the isolated
//! node cannot serve strong writes (`Unavailable`) while the majority can; eventual writes
//! succeed on both sides; after the heal the set converges everywhere and the isolated node's
//! strong replica catches up. A fault rule that does not pass the checks (a delay whose sum
//! overflows) is refused without harm.

mod common;

use capdial::client::conn::{Client, ConnError};
use capdial::eventual::{ReadValue, ValueType};
use capdial::net::faults::{FaultRule, FaultRules};
use capdial::protocol::admin::{AdminError, AdminRequest};
use capdial::protocol::{Answer, ClientError, KeyspaceMode, ReadLevel};
use capdial::types::NodeId;
use common::{Cluster, READY_DEADLINE, b, op, poll_until};
use std::time::Duration;

const ORDERS: &str = "orders";
const CARTS: &str = "carts";

#[tokio::test(flavor = "multi_thread")]
async fn isolated_node_loses_strong_keeps_eventual_and_catches_up() {
    let cluster = Cluster::start(3).await;
    cluster.create_keyspace(ORDERS, KeyspaceMode::Strong).await;
    cluster
        .create_keyspace(CARTS, KeyspaceMode::Eventual(ValueType::Set))
        .await;
    let client = cluster.client().await;
    client
        .execute(ORDERS, op::put("before", "1"), None, None, None)
        .await
        .expect("strong put before the partition");
    isolate_n3(&cluster).await;
    an_overflowing_delay_is_refused(&cluster).await;
    strong_only_on_the_majority(&cluster, &client).await;
    eventual_on_both_sides(&cluster, &client).await;
    cluster.set_faults(FaultRules::none()).await;
    heal_converges(&cluster).await;
}

/// Isolates n3 through every node's fault rules and waits until n3 knows no leader.
async fn isolate_n3(cluster: &Cluster) {
    let mut isolate = FaultRules::none();
    isolate
        .add(FaultRule::Isolate { node: NodeId(3) })
        .expect("a valid rule");
    cluster.set_faults(isolate.clone()).await;
    let status = cluster.status(3).await.expect("n3 answers status");
    assert_eq!(status.faults, isolate, "n3 holds the rules it was given");
    poll_until(
        READY_DEADLINE,
        "n3 to know no leader of orders",
        async || {
            let status = cluster.status(3).await.ok()?;
            let group = status.strong.iter().find(|g| g.keyspace == ORDERS)?;
            group.leader.is_none().then_some(())
        },
    )
    .await;
}

/// Issue 12: a node checked a delay rule by adding its delay and jitter with `+`, which
/// panics on overflow, so one `SetFaults` with `Duration::MAX` from any client took the node
/// down. Now it answers `InvalidFaultRule`, keeps the rules it had, and goes on serving.
async fn an_overflowing_delay_is_refused(cluster: &Cluster) {
    let before = cluster.status(3).await.expect("n3 answers status").faults;
    let mut rules = before.clone();
    rules.rules.push(FaultRule::Delay {
        a: NodeId(1),
        b: NodeId(2),
        delay: Duration::MAX,
        jitter: Duration::MAX,
    });
    let answer = cluster.admin_at(3, AdminRequest::SetFaults(rules)).await;
    match answer {
        Ok(Err(AdminError::InvalidFaultRule { reason })) => {
            assert!(reason.contains("exceeds the limit"), "{reason}");
        }
        other => panic!("an overflowing delay must be refused, got {other:?}"),
    }
    let after = cluster.status(3).await.expect("n3 still answers status");
    assert_eq!(after.faults, before, "a refused set leaves the rules alone");
}

async fn strong_only_on_the_majority(cluster: &Cluster, client: &Client) {
    let refused = client
        .execute_at(
            &cluster.addr(3),
            ORDERS,
            op::put("during", "minority"),
            None,
            None,
            None,
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(ConnError::Client(ClientError::Unavailable { .. }))
        ),
        "a strong write on the minority side is Unavailable: {refused:?}"
    );
    // The majority elects a leader among itself if it has to, and keeps serving.
    let majority = cluster.client_of(&[1, 2]).await;
    poll_until(
        READY_DEADLINE,
        "a strong write on the majority side",
        async || {
            majority
                .execute(ORDERS, op::put("during", "majority"), None, None, None)
                .await
                .ok()
        },
    )
    .await;
}

async fn eventual_on_both_sides(cluster: &Cluster, client: &Client) {
    let sadd = async |node: usize, member: &str| {
        client
            .execute_at(
                &cluster.addr(node),
                CARTS,
                op::sadd("cart", &[member]),
                None,
                None,
                None,
            )
            .await
    };
    sadd(3, "from-n3").await.expect("sadd on the isolated node");
    sadd(1, "from-n1").await.expect("sadd on the majority side");
    let (answer, _) = client
        .execute_at(&cluster.addr(3), CARTS, op::get("cart"), None, None, None)
        .await
        .expect("local read on the isolated node");
    assert_eq!(
        members(answer),
        vec![b("from-n3")],
        "isolated, n3 sees only its own write"
    );
}

async fn heal_converges(cluster: &Cluster) {
    let client = cluster.client().await;
    let both = vec![b("from-n1"), b("from-n3")];
    for node in 1..=3 {
        let at = cluster.addr(node);
        poll_until(
            READY_DEADLINE,
            &format!("the set converged on n{node}"),
            async || {
                let (answer, _) = client
                    .execute_at(&at, CARTS, op::get("cart"), None, None, None)
                    .await
                    .ok()?;
                (members(answer) == both).then_some(())
            },
        )
        .await;
    }
    // Status agrees: the same live state everywhere.
    poll_until(READY_DEADLINE, "equal state digests of carts", async || {
        let mut digests = Vec::new();
        for node in 1..=3 {
            let status = cluster.status(node).await.ok()?;
            let carts = status.eventual.iter().find(|e| e.keyspace == CARTS)?;
            digests.push((carts.state_digest, carts.live_keys));
        }
        digests.windows(2).all(|w| w[0] == w[1]).then_some(())
    })
    .await;
    let n3 = cluster.addr(3);
    let what = "n3's orders to catch up";
    let receipt = common::stale_read_until(&client, &n3, ORDERS, "during", "majority", what).await;
    assert_eq!(receipt.node, NodeId(3));
    // Rejoined, n3 serves strong writes again (through the leader).
    poll_until(
        READY_DEADLINE,
        "a follower read on the rejoined n3",
        async || {
            client
                .execute_at(
                    &n3,
                    ORDERS,
                    op::get("before"),
                    Some(ReadLevel::Follower),
                    None,
                    None,
                )
                .await
                .ok()
        },
    )
    .await;
    poll_until(
        READY_DEADLINE,
        "a strong write through the rejoined n3",
        async || {
            let through_n3 = cluster.client_of(&[3]).await;
            through_n3
                .execute(ORDERS, op::put("after", "healed"), None, None, None)
                .await
                .ok()
        },
    )
    .await;
}

/// A set read's members (empty for any other answer).
fn members(answer: Answer) -> Vec<bytes::Bytes> {
    match answer {
        Answer::Eventual(ReadValue::Set { members, .. }) => members,
        _ => Vec::new(),
    }
}
