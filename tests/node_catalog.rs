//! The catalog reads its own writes (issue 9): on a fresh 3-node cluster `keyspace create inv`
//! was acknowledged, and the very next `put inv` sent to another node answered `no keyspace
//! named "inv"`: that node had not applied the create yet and said so at once. A node that
//! does not know a keyspace now asks group 0 for a read index and waits until it has applied
//! the catalog that far before it answers `UnknownKeyspace`.
//!
//! The test creates keyspaces through the catalog's leader and at once writes to each one
//! through both other nodes (pinned: no redirects), strong and eventual alike. Whatever else
//! they answer (a fresh strong group may have no leader yet), none may say the keyspace does
//! not exist.

mod common;

use capdial::client::conn::ConnError;
use capdial::eventual::ValueType;
use capdial::net::faults::{FaultRule, FaultRules};
use capdial::protocol::admin::{AdminAnswer, AdminRequest};
use capdial::protocol::{ClientError, KeyspaceMode};
use capdial::types::NodeId;
use common::{Cluster, READY_DEADLINE, op, poll_until};

/// Keyspaces created per mode; enough for the race to show on a loaded machine.
const REPETITIONS: usize = 20;

#[tokio::test(flavor = "multi_thread")]
async fn a_created_keyspace_is_known_to_every_node_at_once() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let modes = [
        ("s", KeyspaceMode::Strong),
        ("e", KeyspaceMode::Eventual(ValueType::Lww)),
    ];
    let mut unknown = Vec::new();
    for i in 0..REPETITIONS {
        for (prefix, mode) in modes {
            let name = format!("k{prefix}{i}");
            let leader = catalog_leader(&cluster).await;
            let request = AdminRequest::CreateKeyspace {
                name: name.clone(),
                mode,
            };
            let answer = cluster.admin_at(leader, request).await;
            assert!(
                matches!(answer, Ok(Ok(AdminAnswer::Done))),
                "creating {name} through the catalog leader n{leader}: {answer:?}"
            );
            let others: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
            let (first, second) = (cluster.addr(others[0]), cluster.addr(others[1]));
            let put = |at: String| {
                let client = &client;
                let name = &name;
                async move {
                    let result = client
                        .execute_at(&at, name, op::put("key", "value"), None, None, None)
                        .await;
                    (at, result)
                }
            };
            let (a, b) = tokio::join!(put(first), put(second));
            for (at, result) in [a, b] {
                match result {
                    Err(ConnError::Client(ClientError::UnknownKeyspace { .. })) => {
                        unknown.push(format!("{name} at {at}"));
                    }
                    Err(ConnError::Client(_)) | Ok(_) if mode == KeyspaceMode::Strong => {}
                    Ok(_) => {}
                    other => panic!("put to {name} at {at}: {other:?}"),
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "{} of {} puts right after a create answered UnknownKeyspace: {unknown:?}",
        unknown.len(),
        REPETITIONS * 2 * 2
    );
    // A keyspace that was never created is still unknown, after the catalog read.
    let result = client
        .execute_at(
            &cluster.addr(1),
            "never",
            op::put("k", "v"),
            None,
            None,
            None,
        )
        .await;
    assert!(
        matches!(
            result,
            Err(ConnError::Client(ClientError::UnknownKeyspace { .. }))
        ),
        "{result:?}"
    );
}

/// A node cut off from the catalog's quorum cannot tell whether a keyspace exists: it says
/// it is unavailable (as etcd answers a linearizable read without a leader with an error,
/// never with "not found"), and a heal makes it answer `UnknownKeyspace` again.
#[tokio::test(flavor = "multi_thread")]
async fn without_the_catalog_quorum_an_unknown_name_is_unavailable() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client().await;
    let mut isolate = FaultRules::none();
    isolate
        .add(FaultRule::Isolate { node: NodeId(3) })
        .expect("a valid rule");
    cluster.set_faults(isolate).await;
    poll_until(READY_DEADLINE, "n3 to know no catalog leader", async || {
        let status = cluster.status(3).await.ok()?;
        status.strong.first()?.leader.is_none().then_some(())
    })
    .await;
    let result = client
        .execute_at(
            &cluster.addr(3),
            "unseen",
            op::put("k", "v"),
            None,
            None,
            None,
        )
        .await;
    assert!(
        matches!(
            result,
            Err(ConnError::Client(
                ClientError::Unavailable { .. }
                    | ClientError::Timeout {
                        may_have_applied: false
                    }
            ))
        ),
        "{result:?}"
    );
    cluster.set_faults(FaultRules::none()).await;
    poll_until(
        READY_DEADLINE,
        "n3 to answer UnknownKeyspace again",
        async || {
            let result = client
                .execute_at(
                    &cluster.addr(3),
                    "unseen",
                    op::put("k", "v"),
                    None,
                    None,
                    None,
                )
                .await;
            matches!(
                result,
                Err(ConnError::Client(ClientError::UnknownKeyspace { .. }))
            )
            .then_some(())
        },
    )
    .await;
}

/// The node that leads group 0, as node 1 sees it.
async fn catalog_leader(cluster: &Cluster) -> usize {
    poll_until(READY_DEADLINE, "a catalog leader", async || {
        let status = cluster.status(1).await.ok()?;
        let leader = status.strong.first()?.leader?;
        Some(leader.0 as usize)
    })
    .await
}
