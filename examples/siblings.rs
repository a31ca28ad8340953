//! Concurrent writes to a multi-value register, and the app's own merge.
//!
//! Two people edit one shopping list (`mvreg` keyspace `docs`) on opposite sides of a
//! partition. Each writes with the context of what it read, so each replaces the list it saw;
//! neither saw the other's edit, so after the heal the register holds both values as
//! siblings. The app reads them, merges them in its own code (here: the union of the items)
//! and writes the merge back with the read's context, which replaces exactly those siblings:
//! one value remains, on every node.
//!
//! ```text
//! cargo run --example siblings                                  # its own 3-node cluster
//! cargo run --example siblings -- --endpoint 127.0.0.1:7001 --certs certs
//! ```

mod common;

use capdial::client::typed::{MvRegKeyspace, Siblings};
use capdial::eventual::ValueType;
use capdial::protocol::KeyspaceMode;
use capdial::types::NodeId;
use clap::Parser;
use common::{Checks, Cluster, ClusterArgs, Node, SETTLE, poll, receipt_line};
use std::collections::BTreeSet;
use std::process::ExitCode;

/// Writes one key of an mvreg keyspace from both sides of a partition, heals, merges the
/// siblings in the app and writes the merge back with their context.
///
/// Against an existing cluster (--endpoint), the partition is made with fault rules through
/// the admin path (`capdial fault`), so the client certificate needs the admin role: without
/// a partition there are no concurrent edits to show, and the example stops with the error.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let cluster = Cluster::open(&args.cluster).await?;
    cluster.need_nodes(2, "one node on each side of a partition")?;
    cluster
        .create_keyspace("docs", KeyspaceMode::Eventual(ValueType::MvReg))
        .await?;
    let docs = cluster.client().mvreg("docs");
    let key = format!("{}/shopping-list", common::run_id());
    let nodes = cluster.nodes();
    // Side A is every node but the last; side B is the last one.
    let (side_a, side_b) = nodes.split_at(nodes.len() - 1);
    let (a, b) = (&side_a[0], &side_b[0]);

    // Every node holds the first version before the cut, so both edits start from it.
    let first = docs.put(&key, "milk").all().at(&a.endpoint).await?;
    println!("put milk (all nodes) -> {}", receipt_line(&first.receipt));

    let ids = |side: &[Node]| side.iter().map(|node| node.id).collect::<Vec<NodeId>>();
    cluster.partition(&[&ids(side_a), &ids(side_b)]).await?;
    println!("partition: {} | {}", names(side_a), names(side_b));
    let edit_a = edit(&docs, a, &key, "eggs").await?;
    let edit_b = edit(&docs, b, &key, "bread").await?;
    cluster.heal().await?;
    println!("heal");

    // Poll, don't sleep: anti-entropy brings b's edit to a within a few rounds.
    let read = poll(SETTLE, "both edits as siblings", async || {
        let read = docs.get(&key).local().at(&a.endpoint).await.ok()?;
        (read.value.values.len() == 2).then_some(read)
    })
    .await?;
    println!(
        "siblings on {}: {:?} -> {}",
        a.id,
        texts(&read.value),
        receipt_line(&read.receipt)
    );
    let mut checks = Checks::default();
    let expected: BTreeSet<String> = [edit_a, edit_b].into();
    checks.check(
        "siblings",
        texts(&read.value) == expected,
        format!(
            "both sides' edits came back as siblings: {:?}",
            texts(&read.value)
        ),
    );

    let merged = merge(&read.value);
    // The context names the siblings read; the write replaces exactly them. It goes to the
    // node the read came from, which has seen every write the context names.
    let acked = docs
        .put(&key, &merged)
        .context(read.value.context)
        .at(&a.endpoint)
        .await?;
    println!(
        "put merged {merged} with the read's context -> {}",
        receipt_line(&acked.receipt)
    );

    let mut converged = true;
    let only_merged = BTreeSet::from([merged.clone()]);
    for node in nodes {
        let mut last = BTreeSet::new();
        let one = poll(
            SETTLE,
            &format!("only the merge on {}", node.id),
            async || {
                let read = docs.get(&key).local().at(&node.endpoint).await.ok()?;
                last = texts(&read.value);
                (last == only_merged).then_some(())
            },
        )
        .await;
        println!("{}: {last:?}", node.id);
        converged &= one.is_ok();
    }
    checks.check(
        "merged",
        converged,
        format!("one value remains on all {} nodes: {merged}", nodes.len()),
    );
    Ok(checks.finish())
}

/// Reads the list on `node`, adds `item`, and writes it back with the read's context: it
/// replaces what this side saw, and becomes a sibling of what it did not.
async fn edit(docs: &MvRegKeyspace, node: &Node, key: &str, item: &str) -> anyhow::Result<String> {
    let read = docs.get(key).local().at(&node.endpoint).await?;
    let mut items = items(&read.value);
    items.insert(item.to_string());
    let list = join(&items);
    let seen = texts(&read.value);
    let acked = docs
        .put(key, &list)
        .context(read.value.context)
        .at(&node.endpoint)
        .await?;
    println!(
        "{}: read {seen:?}, put {list} -> {}",
        node.id,
        receipt_line(&acked.receipt)
    );
    Ok(list)
}

fn names(side: &[Node]) -> String {
    side.iter()
        .map(|node| node.id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The app's merge: a list holds every item any sibling holds.
fn merge(siblings: &Siblings) -> String {
    join(&items(siblings))
}

fn items(siblings: &Siblings) -> BTreeSet<String> {
    texts(siblings)
        .iter()
        .flat_map(|list| list.split(',').map(str::to_string))
        .filter(|item| !item.is_empty())
        .collect()
}

fn join(items: &BTreeSet<String>) -> String {
    items.iter().cloned().collect::<Vec<_>>().join(",")
}

fn texts(siblings: &Siblings) -> BTreeSet<String> {
    siblings
        .values
        .iter()
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .collect()
}
