//! `capdial scan`: every key with a prefix, read page by page and printed as it comes (text),
//! or gathered into one JSON object (`--json`).

use super::show::{self, NO_KEYS};
use super::{Run, ScanArgs, UsageError};
use crate::client::conn::Client;
use crate::client::scan::ScanRequest;
use crate::protocol::{Answer, Receipt};
use crate::strong::Versioned;
use anyhow::Context;
use bytes::Bytes;
use std::io::Write;

/// What the pages of one scan added up to.
#[derive(Default)]
struct Gathered {
    /// Kept only for `--json`; text output prints each page as it comes.
    entries: Vec<(Bytes, Versioned)>,
    count: usize,
    pages: usize,
    first: Option<Receipt>,
    last: Option<Receipt>,
}

/// Runs `scan` on an open client.
pub(super) async fn execute(
    client: &Client,
    args: &ScanArgs,
    run: &Run,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if args.levels.write.is_some() {
        let text = "--write does not apply to scan: a scan is a read";
        return Err(UsageError(text.into()).into());
    }
    let request = ScanRequest {
        keyspace: args.keyspace.clone(),
        prefix: Bytes::copy_from_slice(args.prefix.as_bytes()),
        after: args
            .after
            .as_deref()
            .map(|after| Bytes::copy_from_slice(after.as_bytes())),
        limit: args.limit,
        read: args.levels.read,
    };
    let mut scanner = match &run.pinned {
        Some(endpoint) => client.scanner_at(endpoint, request),
        None => client.scanner(request),
    };
    let mut gathered = Gathered::default();
    while let Some(page) = scanner.next_page().await? {
        if run.json {
            gathered.entries.extend(page.entries.iter().cloned());
        } else {
            for (key, version) in &page.entries {
                writeln!(out, "{}", show::entry_line(key, version))?;
            }
        }
        gathered.count += page.entries.len();
        gathered.pages += 1;
        gathered.first.get_or_insert_with(|| page.receipt.clone());
        gathered.last = Some(page.receipt);
    }
    let next = scanner.resume_after().cloned();
    finish(out, run.json, &args.keyspace, gathered, next)
}

/// Writes what follows the keys: the `(more keys ...)` or `(no keys)` line and the receipt,
/// or the one JSON object.
fn finish(
    out: &mut (dyn Write + Send),
    json: bool,
    keyspace: &str,
    gathered: Gathered,
    next: Option<Bytes>,
) -> anyhow::Result<()> {
    let (Some(first), Some(last)) = (gathered.first, gathered.last) else {
        // A limit of at least 1 always reads a page, or fails.
        anyhow::bail!("the scan read no page");
    };
    let answer = Answer::Scan {
        entries: gathered.entries,
        next,
    };
    if json {
        let mut object = show::data_json("scan", keyspace, &answer, &last);
        object["pages"] = gathered.pages.into();
        return writeln!(out, "{object}").context("writing the answer");
    }
    if let Answer::Scan {
        next: Some(next), ..
    } = &answer
    {
        writeln!(out, "{}", show::more_line(next))?;
    } else if gathered.count == 0 {
        writeln!(out, "{NO_KEYS}")?;
    }
    let receipt = show::scan_receipt(&answer, &last, &first, gathered.pages);
    writeln!(out, "{receipt}")?;
    Ok(())
}
