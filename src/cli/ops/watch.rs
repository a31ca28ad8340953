//! `capdial watch`: prints a keyspace's changes as they happen, until Ctrl-C (or `--count`).

use super::show::{event_json, event_line};
use super::{ConnArgs, Run};
use crate::client::{Client, Watch};
use crate::protocol::WatchFrom;
use crate::types::LogIndex;
use bytes::Bytes;
use clap::Args;
use std::io::Write;

/// `watch`'s arguments; the help text after them says what is printed.
#[derive(Clone, Debug, Args)]
#[command(after_help = "\
Strong keyspaces: one line per put or delete of a key under PREFIX, in revision order, each
once, from the next change on or from --from-revision; the watch rides out a lost node or a
leader change (any node serves it from the same revision). A revision the node no longer
keeps (`capdial node --watch-history`) ends the watch with `Compacted`: read the keys again
(`capdial scan`) and watch from the scan's revision.
Eventual keyspaces: one node's change feed (the first --endpoint; add --pin to stay on it):
each key under PREFIX whose merged state changed there, with its value, at least once.")]
pub struct WatchArgs {
    /// Keyspace name
    pub keyspace: String,
    /// Key prefix ("" for every key)
    pub prefix: String,
    /// Strong keyspaces: start at this revision (it included) instead of the next change
    #[arg(long, value_name = "N")]
    pub from_revision: Option<u64>,
    /// Stop after this many events [default: run until Ctrl-C]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Prints events until Ctrl-C, `--count` events, or an error.
pub async fn execute(
    client: &Client,
    args: &WatchArgs,
    run: &Run,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let from = args.from_revision.map_or(WatchFrom::Now, |revision| {
        WatchFrom::Revision(LogIndex(revision))
    });
    let prefix = Bytes::copy_from_slice(args.prefix.as_bytes());
    let mut watch = Watch::new(client, &args.keyspace, prefix).from(from);
    if let Some(endpoint) = &run.pinned {
        watch = watch.at(endpoint.clone());
    }
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut printed = 0;
    while args.count.is_none_or(|count| printed < count) {
        let event = tokio::select! {
            _ = &mut interrupted => break,
            event = watch.next() => event?,
        };
        if run.json {
            let mut object = event_json(&event);
            object["keyspace"] = serde_json::Value::from(args.keyspace.as_str());
            writeln!(out, "{object}")?;
        } else {
            writeln!(out, "{}", event_line(&event))?;
        }
        out.flush()?;
        printed += 1;
    }
    Ok(())
}
