//! A live view of a strong keyspace: a scan, then a watch from the scan's revision, kept
//! equal to the keyspace while it is written, across a kill of its leader.
//!
//! The view starts as a scan of the prefix (its receipt says at which revision) and then
//! applies every event of a watch from the next revision on: each put and delete once, in
//! revision order. Halfway through the writes the keyspace's leader is killed; the watch's
//! polls move to another node and resume from the same revision. At the end the view must
//! equal a fresh scan, key for key, value for value, revision for revision.
//!
//! ```text
//! cargo run --example watch                                   # its own 3-node cluster
//! cargo run --example watch -- --endpoint 127.0.0.1:7001 --certs certs   # no leader kill
//! ```

mod common;

use anyhow::{Context, bail};
use bytes::Bytes;
use capdial::client::Watch;
use capdial::client::typed::StrongKeyspace;
use capdial::protocol::{KeyspaceMode, Position, Receipt, WatchEvent, WatchFrom};
use capdial::strong::Versioned;
use capdial::types::LogIndex;
use clap::Parser;
use common::{Checks, Cluster, ClusterArgs, run_id};
use std::collections::BTreeMap;
use std::process::ExitCode;
use tokio::sync::oneshot;

/// Keeps an in-memory view of a prefix of `inventory` with a watch, while writing to it and
/// killing its leader, and checks the view against a scan at the end.
///
/// Against an existing cluster (--endpoint) the leader is not killed: the example says so
/// and runs the rest.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// How many writes to make (puts and some deletes).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u32).range(2..=10_000))]
    writes: u32,
}

/// The view: each key's value and revisions, as the events left it.
type View = BTreeMap<Bytes, Versioned>;

/// What the watching task hands back.
struct Watched {
    view: View,
    events: usize,
    /// The revisions of the events, in the order they came.
    revisions: Vec<LogIndex>,
    failed_polls: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let cluster = Cluster::open(&args.cluster).await?;
    cluster
        .create_keyspace("inventory", KeyspaceMode::Strong)
        .await?;
    let inventory = cluster.client().strong("inventory");
    let prefix = format!("stock/{}/", run_id());

    // The view starts from a scan, and the watch from the revision after it.
    let (view, revision) = scan(&inventory, &prefix).await?;
    println!(
        "view: {} keys from a scan at revision {}",
        view.len(),
        revision.0
    );
    let watch = inventory
        .watch(prefix.clone())
        .from_revision(LogIndex(revision.0 + 1));
    let (stop, stop_at) = oneshot::channel();
    let watching = tokio::spawn(follow(watch, view, stop_at));

    write(&cluster, &inventory, &prefix, args.writes).await?;

    // A fresh scan, then the view once the watch has passed the scan's revision.
    let (scanned, at) = scan(&inventory, &prefix).await?;
    if stop.send(at).is_err() {
        bail!("the watching task ended early");
    }
    let watched = watching.await.context("the watching task")??;
    println!(
        "watch: {} events, {} polls failed and were retried",
        watched.events, watched.failed_polls
    );

    let mut checks = Checks::default();
    let ordered = watched.revisions.windows(2).all(|w| w[0] < w[1]);
    checks.check(
        "order",
        ordered,
        format!(
            "{} events in strictly increasing revision order (each change once)",
            watched.events
        ),
    );
    let equal = watched.view == scanned;
    let detail = if equal {
        format!(
            "{} keys equal to a scan at revision {}",
            scanned.len(),
            at.0
        )
    } else {
        format!("view {:?}\n  scan {:?}", watched.view, scanned)
    };
    checks.check("view", equal, detail);
    Ok(checks.finish())
}

/// Every key under `prefix` and the revision the scan read at.
async fn scan(inventory: &StrongKeyspace, prefix: &str) -> anyhow::Result<(View, LogIndex)> {
    let scanned = inventory.scan(prefix.to_string()).await?;
    let revision = scanned
        .receipts
        .last()
        .map(applied)
        .context("a scan has a receipt")?;
    Ok((scanned.entries.into_iter().collect(), revision))
}

fn applied(receipt: &Receipt) -> LogIndex {
    match receipt.position {
        Position::Raft { applied, .. } => applied,
        Position::Eventual { .. } | Position::Paxos { .. } => LogIndex(0),
    }
}

/// Puts and deletes under `prefix`, killing the keyspace's leader halfway (and starting it
/// again at the end, so the cluster is whole for the final scan's majority either way).
async fn write(
    cluster: &Cluster,
    inventory: &StrongKeyspace,
    prefix: &str,
    writes: u32,
) -> anyhow::Result<()> {
    let mut killed = None;
    // Only a key that is there is deleted: a delete of an absent key changes nothing, and a
    // watch reports only changes.
    let mut present = std::collections::BTreeSet::new();
    for i in 0..writes {
        if i == writes / 2 {
            killed = kill_leader(cluster).await?;
        }
        let key = format!("{prefix}item-{}", i % 8);
        if i % 7 == 6 && present.remove(&key) {
            let deleted = inventory.delete(key.clone()).await?;
            println!("delete {key} at revision {}", deleted.revision.0);
        } else {
            present.insert(key.clone());
            let written = inventory.put(key.clone(), format!("{}", 100 - i)).await?;
            if i % 10 == 0 {
                println!("put {key} = {} at revision {}", 100 - i, written.revision.0);
            }
        }
    }
    if let Some(node) = killed {
        cluster.restart(node).await?;
        println!("{node} is back");
    }
    Ok(())
}

async fn kill_leader(cluster: &Cluster) -> anyhow::Result<Option<capdial::types::NodeId>> {
    let Some(leader) = cluster.leader("inventory").await? else {
        println!("no leader to kill right now: writes go on");
        return Ok(None);
    };
    if !cluster.kill(leader)? {
        println!(
            "skipped: the leader ({leader}) of a cluster this example did not start is not killed"
        );
        return Ok(None);
    }
    println!("killed {leader}, the leader of inventory: the watch moves to another node");
    Ok(Some(leader))
}

/// Applies the watch's events to `view` until told the final scan's revision, and then until
/// the watch has passed it.
async fn follow(
    mut watch: Watch,
    mut view: View,
    mut stop_at: oneshot::Receiver<LogIndex>,
) -> anyhow::Result<Watched> {
    let mut watched = Watched {
        view: View::new(),
        events: 0,
        revisions: Vec::new(),
        failed_polls: 0,
    };
    let mut until = None;
    loop {
        until = until.or_else(|| stop_at.try_recv().ok());
        if let (Some(until), WatchFrom::Revision(next)) = (until, watch.position())
            && next > until
        {
            watched.view = view;
            return Ok(watched);
        }
        let events = match watch.poll().await {
            Ok(events) => events,
            // A poll to the killed node: the next one resumes from the same revision.
            Err(error) if watched.failed_polls < 20 => {
                println!("poll failed ({error}); polling again");
                watched.failed_polls += 1;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        for event in events {
            watched.events += 1;
            watched.revisions.extend(event.revision());
            match event {
                WatchEvent::Put { key, value } => {
                    view.insert(key, value);
                }
                WatchEvent::Delete { key, .. } => {
                    view.remove(&key);
                }
                WatchEvent::Changed { .. } => bail!("a strong watch sent a feed event"),
            }
        }
    }
}
