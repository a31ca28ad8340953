//! Watches against a real 3-node `LocalCluster`: a strong watch sees every acknowledged write
//! once, in revision order, across a kill of the keyspace's leader; every node's change feed
//! of an eventual keyspace lists every acknowledged write; `capdial watch` prints events.

mod common;

use bytes::Bytes;
use capdial::LocalCluster;
use capdial::client::{Client, ClientOptions, ConnError};
use capdial::eventual::{ReadValue, ValueType};
use capdial::protocol::{ClientError, KeyspaceMode, WatchEvent, WatchFrom};
use capdial::types::{LogIndex, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a watcher may take to see what was written.
const WATCH_DEADLINE: Duration = Duration::from_secs(60);
const WRITES: usize = 120;

/// What the writer did at one revision: the key and its new value (`None`: deleted).
type Written = BTreeMap<LogIndex, (Bytes, Option<Bytes>)>;

/// Puts and deletes under `o/`, one at a time, killing the keyspace's leader after half of
/// them. Returns what was acknowledged, by revision.
async fn write_through_a_leader_kill(cluster: &LocalCluster) -> Written {
    let orders = cluster.client().strong("orders");
    let mut written = Written::new();
    let mut present = BTreeSet::new();
    for i in 0..WRITES {
        if i == WRITES / 2 {
            let leader = cluster.leader("orders").await.expect("leader lookup");
            let leader = leader.expect("orders has a leader");
            cluster.kill(leader).expect("kill the leader");
        }
        let key = Bytes::from(format!("o/{}", i % 13));
        // Every fifth write deletes a key that is there (a delete of an absent key is no event).
        let (revision, value) = if i % 5 == 4 && present.contains(&key) {
            let done = orders.delete(key.clone()).await;
            (done.map(|w| w.revision), None)
        } else {
            let value = Bytes::from(format!("v{i}"));
            let done = orders.put(key.clone(), value.clone()).await;
            (done.map(|w| w.revision), Some(value))
        };
        let revision = revision.unwrap_or_else(|error| panic!("write {i}: {error}"));
        if value.is_some() {
            present.insert(key.clone());
        } else {
            present.remove(&key);
        }
        written.insert(revision, (key, value));
    }
    written
}

/// Follows `o/` from revision 1 while the writer writes, until it has seen the writer's
/// last revision (handed over on `last` when the writer is done), riding out failed polls.
/// Its client asks the leader first, so the kill takes the node it polls.
async fn watch_while_writing(
    cluster: &LocalCluster,
    mut last: tokio::sync::oneshot::Receiver<LogIndex>,
) -> (Vec<WatchEvent>, usize, Vec<NodeId>) {
    let leader = cluster.leader("orders").await.expect("leader lookup");
    let leader = cluster
        .endpoint(leader.expect("a leader"))
        .expect("its address");
    let mut endpoints = cluster.endpoints();
    endpoints.retain(|endpoint| endpoint != leader);
    endpoints.insert(0, leader.to_string());
    let options = ClientOptions::new(endpoints, cluster.certs().to_path_buf());
    let client = Client::connect(options).await.expect("connect");
    let orders = client.strong("orders");
    let mut watch = orders.watch("o/").from_revision(LogIndex(1));
    let deadline = Instant::now() + WATCH_DEADLINE;
    let (mut events, mut failed_polls) = (Vec::<WatchEvent>::new(), 0);
    let mut answered_by = Vec::new();
    let mut until = None;
    loop {
        until = until.or_else(|| last.try_recv().ok());
        let seen = events.last().and_then(WatchEvent::revision);
        if let (Some(until), Some(seen)) = (until, seen)
            && seen >= until
        {
            return (events, failed_polls, answered_by);
        }
        assert!(
            Instant::now() < deadline,
            "the watch saw {events:?}, not up to {until:?}"
        );
        match watch.poll().await {
            Ok(polled) => {
                events.extend(polled);
                answered_by.extend(watch.receipt().map(|receipt| receipt.node));
            }
            // A poll to the killed node: the next one resumes from the same revision.
            Err(ConnError::Client(error @ ClientError::Compacted { .. })) => {
                panic!("nothing was compacted: {error}")
            }
            Err(_) => failed_polls += 1,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strong_watch_sees_every_write_once_in_order_across_a_leader_kill() {
    let cluster = common::local_cluster().await;
    cluster
        .create_keyspace("orders", KeyspaceMode::Strong)
        .await
        .expect("create orders");
    let (done, last) = tokio::sync::oneshot::channel();
    let writing = async {
        let written = write_through_a_leader_kill(&cluster).await;
        let last = *written.keys().last().expect("writes were made");
        done.send(last).expect("the watcher waits for it");
        written
    };
    let (written, (events, failed_polls, answered_by)) =
        tokio::join!(writing, watch_while_writing(&cluster, last));

    let revisions: Vec<LogIndex> = events.iter().filter_map(WatchEvent::revision).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "events in strictly increasing revision order (no duplicates): {revisions:?}"
    );
    let seen: BTreeSet<LogIndex> = revisions.iter().copied().collect();
    let missing: Vec<&LogIndex> = written.keys().filter(|r| !seen.contains(r)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing: {missing:?}"
    );
    for event in &events {
        let revision = event.revision().expect("strong events have revisions");
        let (key, value) = written
            .get(&revision)
            .unwrap_or_else(|| panic!("an event no write made: {event:?}"));
        assert_eq!(event.key(), key);
        match (event, value) {
            (WatchEvent::Put { value: got, .. }, Some(value)) => assert_eq!(&got.value, value),
            (WatchEvent::Delete { .. }, None) => {}
            other => panic!("event and write differ: {other:?}"),
        }
    }
    let answered_by: BTreeSet<_> = answered_by.into_iter().collect();
    assert!(
        answered_by.len() >= 2,
        "polls moved to another node: {answered_by:?}"
    );
    eprintln!(
        "{} writes, {} events, {failed_polls} failed polls, answered by {answered_by:?}",
        written.len(),
        events.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strong_watch_follows_writes_made_while_it_waits() {
    let cluster = common::local_cluster().await;
    cluster
        .create_keyspace("orders", KeyspaceMode::Strong)
        .await
        .expect("create orders");
    let orders = cluster.client().strong("orders");
    let mut watch = orders.watch("o/");
    // The first poll takes the next revision as the start, and waits.
    assert!(watch.poll().await.expect("first poll").is_empty());
    let WatchFrom::Revision(start) = watch.position() else {
        panic!(
            "a strong watch's position is a revision: {:?}",
            watch.position()
        );
    };
    let writer = {
        let orders = orders.clone();
        tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..20 {
                let written = orders.put(format!("o/{i}"), "x").await.expect("put");
                orders
                    .put(format!("p/{i}"), "other prefix")
                    .await
                    .expect("put");
                revisions.push(written.revision);
            }
            revisions
        })
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + WATCH_DEADLINE;
    while seen.len() < 20 {
        assert!(Instant::now() < deadline, "saw only {seen:?}");
        let event = watch.next().await.expect("poll");
        assert!(event.key().starts_with(b"o/"), "only the prefix: {event:?}");
        seen.push(event.revision().expect("a revision"));
    }
    let revisions = writer.await.expect("writer");
    assert_eq!(seen, revisions, "every put under o/ once, in order");
    assert!(seen[0] >= start);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nodes_feed_lists_every_acknowledged_eventual_write() {
    let cluster = common::local_cluster().await;
    cluster
        .create_keyspace("carts", KeyspaceMode::Eventual(ValueType::Set))
        .await
        .expect("create carts");
    let carts = cluster.client().set("carts");
    let endpoints = cluster.endpoints();
    let mut watches = Vec::new();
    for endpoint in &endpoints {
        let mut watch = carts.watch("c/").at(endpoint.clone());
        watch.poll().await.expect("the feed's current position");
        watches.push(watch);
    }
    let mut wanted = BTreeMap::new();
    for i in 0..30 {
        let (key, member) = (format!("c/{}", i % 7), format!("m{i}"));
        let endpoint = &endpoints[i % endpoints.len()];
        carts
            .add(key.clone(), [member.clone()])
            .at(endpoint.clone())
            .await
            .expect("sadd");
        wanted
            .entry(Bytes::from(key))
            .or_insert_with(BTreeSet::new)
            .insert(Bytes::from(member));
    }
    for (watch, endpoint) in watches.iter_mut().zip(&endpoints) {
        // What this node's feed has shown of each key: the members of its latest event.
        let mut shown: BTreeMap<Bytes, BTreeSet<Bytes>> = BTreeMap::new();
        let deadline = Instant::now() + WATCH_DEADLINE;
        while shown != wanted {
            assert!(
                Instant::now() < deadline,
                "{endpoint}'s feed showed {shown:?}, not every write of {wanted:?}"
            );
            let event = watch.next().await.expect("poll");
            let WatchEvent::Changed { key, value, .. } = event else {
                panic!("an eventual feed lists changes: {event:?}");
            };
            let ReadValue::Set { members, .. } = value else {
                panic!("a set's value: {value:?}");
            };
            shown.insert(key, members.into_iter().collect());
        }
    }
}

#[test]
fn capdial_watch_prints_events_from_a_revision() {
    let runtime = common::runtime();
    let cluster = runtime.block_on(common::local_cluster());
    let first = runtime.block_on(async {
        cluster
            .create_keyspace("orders", KeyspaceMode::Strong)
            .await
            .expect("create orders");
        let orders = cluster.client().strong("orders");
        let first = orders.put("o/1", "paid").await.expect("put").revision;
        orders.put("o/2", "paid").await.expect("put");
        orders.delete("o/1").await.expect("delete");
        first
    });
    let from = first.0.to_string();
    let args = [
        "watch",
        "orders",
        "o/",
        "--count",
        "3",
        "--from-revision",
        &from,
    ];
    let stdout = common::capdial_cli(&cluster, args);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with(&format!("put o/1 = paid (revision {})", first.0)));
    assert!(lines[1].starts_with("put o/2 = paid"));
    assert!(lines[2].starts_with("delete o/1"));
}
