//! Read-your-writes across nodes with a session token.
//!
//! A user saves a setting through one node (`lww` keyspace `profiles`) and the next page
//! reads it through another. An eventual read there may or may not see the write yet: gossip
//! has to carry it over. A read with the write's session token (`.session(token)`, from the
//! write's receipt) is served only once the node has seen that write, so it must see it.
//!
//! To make the difference visible, the links of the writing node get a short delay through
//! the fault path (`capdial fault delay`) while the example runs.
//!
//! ```text
//! cargo run --example session                                   # its own 3-node cluster
//! cargo run --example session -- --endpoint 127.0.0.1:7001 --certs certs
//! ```

mod common;

use anyhow::Context;
use capdial::client::typed::{Acked, LwwKeyspace};
use capdial::eventual::{SessionToken, ValueType};
use capdial::net::faults::FaultRule;
use capdial::protocol::{ClientError, KeyspaceMode};
use clap::Parser;
use common::{Checks, Cluster, ClusterArgs, Node, SETTLE, poll, receipt_line, refusal};
use std::process::ExitCode;
use std::time::Duration;

/// Writes through one node, reads through another, with and without the write's session
/// token, and checks that every read with the token sees its write.
///
/// Against an existing cluster (--endpoint), the slow link is set with fault rules through
/// the admin path; if the client certificate may not set them, the example says so and runs
/// without the slow link.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// How many write-then-read rounds to run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
}

/// The delay put on the writer's links: longer than a read takes, so a read right after the
/// write usually misses it; far shorter than the 1 s a node waits for a session's write.
const SLOW_LINK: Duration = Duration::from_millis(100);

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let cluster = Cluster::open(&args.cluster).await?;
    cluster.need_nodes(2, "a writer node and a reader node")?;
    cluster
        .create_keyspace("profiles", KeyspaceMode::Eventual(ValueType::Lww))
        .await?;
    let profiles = cluster.client().lww("profiles");
    let (writer, reader) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    println!(
        "writes go through {}, reads through {}",
        writer.id, reader.id
    );

    let slowed = slow_down(&cluster, writer).await;
    let key = format!("{}/alice/theme", common::run_id());
    let mut plain_saw = 0;
    let mut checks = Checks::default();
    let mut session_saw = 0;
    for round in 1..=args.rounds {
        let value = format!("theme-{round}");
        let acked = profiles.put(&key, &value).at(&writer.endpoint).await?;
        println!(
            "round {round}: put {value} -> {}",
            receipt_line(&acked.receipt)
        );
        if read_without_token(&profiles, reader, &key, &value).await? {
            plain_saw += 1;
        }
        if read_with_token(&profiles, reader, &key, &value, &acked).await? {
            session_saw += 1;
        }
    }
    if slowed {
        cluster.heal().await?;
    }

    println!(
        "reads without the token that saw the write: {plain_saw}/{} (eventual: may or may not)",
        args.rounds
    );
    checks.check(
        "session",
        session_saw == args.rounds,
        format!(
            "{session_saw}/{} reads with the token saw their write",
            args.rounds
        ),
    );
    Ok(checks.finish())
}

/// Delays every message between the writer and the other nodes, so gossip takes a while.
async fn slow_down(cluster: &Cluster, writer: &Node) -> bool {
    let rules: Vec<FaultRule> = cluster
        .nodes()
        .iter()
        .filter(|node| node.id != writer.id)
        .map(|node| FaultRule::Delay {
            a: writer.id,
            b: node.id,
            delay: SLOW_LINK,
            jitter: Duration::ZERO,
        })
        .collect();
    match cluster.set_faults(&rules).await {
        Ok(()) => {
            println!(
                "fault: {} talks to the other nodes with {SLOW_LINK:?} delay",
                writer.id
            );
            true
        }
        // Without the delay the example still checks read-your-writes; plain reads just
        // see the write more often.
        Err(error) => {
            println!("skipping the slow link (fault rules refused: {error:#})");
            false
        }
    }
}

/// An ordinary (local) read on the reader: whatever that node holds now.
async fn read_without_token(
    profiles: &LwwKeyspace,
    reader: &Node,
    key: &str,
    value: &str,
) -> anyhow::Result<bool> {
    let read = profiles.get(key).local().at(&reader.endpoint).await?;
    let saw = read.value.as_deref() == Some(value.as_bytes());
    println!(
        "  without token: {} ({}) -> {}",
        shown(read.value.as_deref()),
        if saw { "saw it" } else { "not yet" },
        receipt_line(&read.receipt)
    );
    Ok(saw)
}

/// A session read on the reader with the write's token. The node serves it once it has
/// seen that write; if it has not within its wait (1 s), it says `SessionNotSeen`, and we
/// ask again. What it may never do is answer with a value that misses the write.
async fn read_with_token(
    profiles: &LwwKeyspace,
    reader: &Node,
    key: &str,
    value: &str,
    acked: &Acked,
) -> anyhow::Result<bool> {
    let token: SessionToken = acked.token().context("an eventual write returns a token")?;
    let mut not_seen = 0;
    let read = poll(SETTLE, "a session read", async || {
        match profiles.get(key).session(token).at(&reader.endpoint).await {
            Err(error) if refusal(&error) == Some(&ClientError::SessionNotSeen) => {
                not_seen += 1;
                None
            }
            other => Some(other),
        }
    })
    .await??;
    let saw = read.value.as_deref() == Some(value.as_bytes());
    println!(
        "  with token {}:{}: {} ({}) -> {}{}",
        token.node,
        token.seq,
        shown(read.value.as_deref()),
        if saw { "saw it" } else { "MISSED IT" },
        receipt_line(&read.receipt),
        if not_seen > 0 {
            format!(" (after {not_seen} SessionNotSeen)")
        } else {
            String::new()
        }
    );
    Ok(saw)
}

fn shown(value: Option<&[u8]>) -> String {
    value.map_or_else(
        || "(absent)".to_string(),
        |bytes| String::from_utf8_lossy(bytes).into_owned(),
    )
}
