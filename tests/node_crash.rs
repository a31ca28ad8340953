//! `kill -9` loses no acknowledged write: first of the strong leader (the survivors elect
//! another; it restarts on its data dir and catches up on what it missed), then of every
//! node at once (all restart; every write that was acknowledged, strong or eventual, is
//! still there).

mod common;

use capdial::client::conn::Client;
use capdial::eventual::{ReadValue, ValueType};
use capdial::protocol::{Answer, KeyspaceMode, ReadLevel, WriteLevel};
use common::{Cluster, READY_DEADLINE, b, op, poll_for, poll_until};
use std::time::Duration;

const ORDERS: &str = "orders";
const PROFILES: &str = "profiles";
/// Writes per mode per batch.
const WRITES: usize = 50;

/// The writes a batch got acknowledged, as (key, value).
#[derive(Default)]
struct Acknowledged {
    strong: Vec<(String, String)>,
    eventual: Vec<(String, String)>,
}

impl Acknowledged {
    fn extend(&mut self, other: Acknowledged) {
        self.strong.extend(other.strong);
        self.eventual.extend(other.eventual);
    }
}

/// Writes `WRITES` strong keys through the client and `WRITES` eventual keys spread over
/// `nodes`, each pinned to its node (acknowledged once that node persisted it).
async fn write_batch(
    cluster: &Cluster,
    client: &Client,
    tag: &str,
    nodes: &[usize],
) -> Acknowledged {
    let mut done = Acknowledged::default();
    for i in 0..WRITES {
        let (key, value) = (format!("{tag}/{i:03}"), format!("{tag}-value-{i}"));
        let written = client
            .execute(ORDERS, op::put(&key, &value), None, None, None)
            .await;
        if let Ok((Answer::Written { .. }, _)) = written {
            done.strong.push((key, value));
        }
        let node = nodes[i % nodes.len()];
        let (key, value) = (format!("{tag}/e{i:03}"), format!("{tag}-e-{i}"));
        let written = client
            .execute_at(
                &cluster.addr(node),
                PROFILES,
                op::put(&key, &value),
                None,
                Some(WriteLevel::Local),
                None,
            )
            .await;
        if let Ok((Answer::Acknowledged { .. }, _)) = written {
            done.eventual.push((key, value));
        }
    }
    // Nothing disturbs the cluster while a batch runs: a lost write here is a bug too.
    assert_eq!(
        done.strong.len(),
        WRITES,
        "every strong write of {tag} acknowledged"
    );
    assert_eq!(
        done.eventual.len(),
        WRITES,
        "every eventual write of {tag} acknowledged"
    );
    done
}

/// The first strong key node `nX` does not hold (by a stale read on it), if any.
async fn strong_missing_on(
    client: &Client,
    at: &str,
    writes: &[(String, String)],
) -> Option<String> {
    for (key, value) in writes {
        let found = client
            .execute_at(at, ORDERS, op::get(key), Some(ReadLevel::Stale), None, None)
            .await;
        let holds = matches!(&found, Ok((Answer::Strong(Some(v)), _)) if v.value == b(value));
        if !holds {
            return Some(format!("{key}: {found:?}"));
        }
    }
    None
}

/// The first eventual key node `nX` does not hold (by a local read on it), if any.
async fn eventual_missing_on(
    client: &Client,
    at: &str,
    writes: &[(String, String)],
) -> Option<String> {
    for (key, value) in writes {
        let found = client
            .execute_at(at, PROFILES, op::get(key), None, None, None)
            .await;
        let holds = matches!(
            &found,
            Ok((Answer::Eventual(ReadValue::Lww { value: Some(v), .. }), _)) if *v == b(value)
        );
        if !holds {
            return Some(format!("{key}: {found:?}"));
        }
    }
    None
}

/// Polls until node `nX` holds every acknowledged write.
async fn holds_everything(cluster: &Cluster, client: &Client, node: usize, writes: &Acknowledged) {
    let at = cluster.addr(node);
    let mut last_missing = String::new();
    let what = format!("n{node} to hold every acknowledged write");
    let found = poll_for(READY_DEADLINE, async || {
        let missing = match strong_missing_on(client, &at, &writes.strong).await {
            Some(missing) => Some(missing),
            None => eventual_missing_on(client, &at, &writes.eventual).await,
        };
        match missing {
            None => Some(()),
            Some(missing) => {
                last_missing = missing;
                None
            }
        }
    })
    .await;
    assert!(found.is_some(), "{what}; still missing {last_missing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_one_node_and_of_all_nodes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3).await;
    cluster.create_keyspace(ORDERS, KeyspaceMode::Strong).await;
    cluster
        .create_keyspace(PROFILES, KeyspaceMode::Eventual(ValueType::Lww))
        .await;
    let client = cluster.client().await;
    let mut acknowledged = write_batch(&cluster, &client, "a", &[1, 2, 3]).await;

    // Kill the strong leader: the survivors must elect another and lose nothing.
    let victim = cluster
        .leader_of(1, ORDERS)
        .await
        .expect("orders has a leader");
    let survivors: Vec<usize> = (1..=3).filter(|n| *n != victim).collect();
    cluster.kill9(victim);
    let majority = cluster.client_of(&survivors).await;
    poll_until(
        READY_DEADLINE,
        "a new strong leader among the survivors",
        async || {
            majority
                .execute(ORDERS, op::put("probe", "1"), None, None, None)
                .await
                .ok()
        },
    )
    .await;
    acknowledged.extend(write_batch(&cluster, &majority, "b", &survivors).await);
    cluster.restart(victim);
    holds_everything(&cluster, &client, victim, &acknowledged).await;
    cluster.assert_alive();

    for node in 1..=3 {
        cluster.kill9(node);
    }
    for node in 1..=3 {
        cluster.restart(node);
    }
    cluster.wait_ready().await;
    cluster.wait_keyspace(ORDERS, KeyspaceMode::Strong).await;
    let client = cluster.client().await;
    // Linearizable reads through the leader first: every acknowledged strong write.
    for (key, value) in &acknowledged.strong {
        let (answer, _) = poll_until(
            READY_DEADLINE,
            "a linearizable read after restart",
            async || {
                client
                    .execute(ORDERS, op::get(key), None, None, None)
                    .await
                    .ok()
            },
        )
        .await;
        assert!(
            matches!(&answer, Answer::Strong(Some(v)) if v.value == b(value)),
            "{key} survived kill -9 of every node: {answer:?}"
        );
    }
    for node in 1..=3 {
        holds_everything(&cluster, &client, node, &acknowledged).await;
    }
    cluster.assert_alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_a_node_cleanly_and_it_restarts_with_its_data() {
    let mut cluster = Cluster::start(3).await;
    cluster.create_keyspace(ORDERS, KeyspaceMode::Strong).await;
    let client = cluster.client().await;
    client
        .execute(ORDERS, op::put("kept", "yes"), None, None, None)
        .await
        .expect("strong put");
    let status = cluster.terminate(1, Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("n1 stopped on SIGTERM\n{}", cluster.logs()));
    assert!(status.success(), "n1 exits 0 on SIGTERM: {status}");
    cluster.restart(1);
    // The same client as before the stop: it must notice the old connection is gone.
    let at = cluster.addr(1);
    let what = "n1 to serve its data again";
    common::stale_read_until(&client, &at, ORDERS, "kept", "yes", what).await;
    cluster.assert_alive();
}
