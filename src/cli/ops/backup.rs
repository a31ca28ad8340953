//! `capdial backup` and `capdial restore`: a whole cluster to one file and back (see
//! [`crate::backup`]).

use super::{ConnArgs, Run};
use crate::backup::{self, Progress, Summary};
use crate::client::Client;
use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

/// `backup`'s arguments.
#[derive(Clone, Debug, Args)]
#[command(after_help = "\
Writes every keyspace while the cluster serves: each strong keyspace from one point-in-time
image at a linearizable read index (its revision is recorded), each eventual keyspace's merged
states (tombstones included) with its version vector, as the node asked holds them (every write
acknowledged at `all`, and whatever gossip brought it), and the catalog (names and modes).
The file is versioned and checksummed, written as FILE.tmp-PID and renamed to FILE once
complete. Pages stream from the nodes to the file: memory stays the same whatever the data
set. A keyspace of more than 16 pages (about 4 MiB) gets a progress line on stderr every 16.")]
pub struct BackupArgs {
    /// The backup file to write (replaced if it exists, once the new one is complete)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `restore`'s arguments.
#[derive(Clone, Debug, Args)]
#[command(after_help = "\
Loads a backup into a freshly started, empty cluster: the same keyspaces and data, strong
keyspaces with their revisions (every key's mod and create revision, and the keyspace's
revision: its Raft group starts from the image as a snapshot at the backed-up index). The file
is read and checked in full first: a truncated or corrupted file is refused before the cluster
is asked anything. A cluster that holds any keyspace refuses the restore. If the cluster fails
part way, the keyspaces the restore created are dropped again.")]
pub struct RestoreArgs {
    /// The backup file to load
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Pages between two progress lines.
const PROGRESS_EVERY_PAGES: u64 = 16;

fn progress_line(verb: &str, progress: &Progress) {
    if progress.done || progress.chunks.is_multiple_of(PROGRESS_EVERY_PAGES) {
        let state = if progress.done { "done" } else { "..." };
        eprintln!(
            "{verb} {}: {} keys in {} pages, {:.1} MiB {state}",
            progress.keyspace,
            progress.keys,
            progress.chunks,
            progress.bytes as f64 / (1024.0 * 1024.0)
        );
    }
}

fn print_summary(
    out: &mut (dyn Write + Send),
    run: &Run,
    verb: &str,
    path: &std::path::Path,
    summary: &Summary,
) -> anyhow::Result<()> {
    if run.json {
        let keyspaces: Vec<_> = summary
            .keyspaces
            .iter()
            .map(|keyspace| {
                serde_json::json!({
                    "name": keyspace.entry.name,
                    "mode": keyspace.entry.mode.to_string(),
                    "revision": keyspace.entry.revision.map(|revision| revision.0),
                    "keys": keyspace.keys,
                    "pages": keyspace.chunks,
                })
            })
            .collect();
        let object = serde_json::json!({
            "ok": true,
            "file": path.display().to_string(),
            "bytes": summary.bytes,
            "keyspaces": keyspaces,
        });
        writeln!(out, "{object}")?;
        return Ok(());
    }
    for keyspace in &summary.keyspaces {
        let revision = keyspace
            .entry
            .revision
            .map_or_else(String::new, |revision| {
                format!(" at revision {}", revision.0)
            });
        writeln!(
            out,
            "{} ({}): {} keys{revision}",
            keyspace.entry.name, keyspace.entry.mode, keyspace.keys
        )?;
    }
    writeln!(
        out,
        "{verb} {} keyspaces ({} bytes) {} {}",
        summary.keyspaces.len(),
        summary.bytes,
        if verb == "backed up" { "to" } else { "from" },
        path.display()
    )?;
    Ok(())
}

/// Runs `backup`.
pub async fn execute_backup(
    client: &Client,
    args: &BackupArgs,
    run: &Run,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let summary = backup::backup(client, &args.out, &mut |p| progress_line("backup", p))
        .await
        .with_context(|| format!("backing up to {}", args.out.display()))?;
    print_summary(out, run, "backed up", &args.out, &summary)
}

/// Runs `restore`.
pub async fn execute_restore(
    client: &Client,
    args: &RestoreArgs,
    run: &Run,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let summary = backup::restore(client, &args.from, &mut |p| progress_line("restore", p))
        .await
        .with_context(|| format!("restoring from {}", args.from.display()))?;
    print_summary(out, run, "restored", &args.from, &summary)
}
