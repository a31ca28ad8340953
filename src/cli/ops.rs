//! The commands that talk to a running cluster: data (`put`, `get`, `delete`, `cas`, `scan`,
//! `incr`, `decr`, `sadd`, `srem`, `smembers`, `watch`), `keyspace`, `member`, `fault` and
//! `status`.
//!
//! Every command takes the connection flags (`--endpoint`, `--certs`, `--client-name`,
//! `--json`, `--timeout`, `--pin`). A value or set member too long for the command line comes
//! from stdin (`-`) or a file (`--value-file`, `--member-file`): see [`input`]. The demo's
//! shell runs the same commands on an open client through [`run_line`].

mod backup;
mod cluster;
pub(crate) mod input;
#[cfg(test)]
mod live_tests;
pub(crate) mod parse;
mod scan;
pub(crate) mod show;
mod txn;
mod watch;

use crate::client::conn::{Client, ClientOptions, ConnError, DEFAULT_CLIENT_NAME};
use crate::eventual::{ReadContext, SessionToken};
use crate::protocol::{Answer, Operation, ReadLevel, Receipt, WriteLevel};
use anyhow::Context;
use bytes::Bytes;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use input::{Loader, Source, Stdin};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub use show::{format_receipt, value_lines};

/// The endpoint used when neither `--endpoint` nor `CAPDIAL_ENDPOINT` names one.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7001";

/// How to reach the cluster.
#[derive(Clone, Debug, Args)]
pub struct ConnArgs {
    /// Node to talk to, HOST:PORT; several, comma-separated, are tried in order
    /// [default: 127.0.0.1:7001]
    #[arg(
        long,
        global = true,
        env = "CAPDIAL_ENDPOINT",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub endpoint: Option<Vec<String>>,
    /// Certificate directory with ca.pem and client-NAME.pem (made by `capdial certs init`)
    #[arg(long, global = true, env = "CAPDIAL_CERTS", value_name = "DIR")]
    pub certs: Option<PathBuf>,
    /// Name of the client certificate to present
    #[arg(long, global = true, default_value = DEFAULT_CLIENT_NAME, value_name = "NAME")]
    pub client_name: String,
    /// Print one JSON object per command instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// Deadline of each request, retries included (like 500ms, 5s)
    #[arg(long, global = true, default_value = "5s", value_parser = parse::duration)]
    pub timeout: Duration,
    /// Ask only the --endpoint node: do not follow leader hints or move to another node
    #[arg(long, global = true)]
    pub pin: bool,
}

/// Consistency levels and session of a data command.
#[derive(Clone, Debug, Args)]
pub struct Levels {
    /// Read level: linearizable, lease, follower, stale (strong); local, session, quorum
    /// (eventual). Default: linearizable or local
    #[arg(long, value_parser = parse::read_level, value_name = "LEVEL")]
    pub read: Option<ReadLevel>,
    /// Write level of an eventual keyspace: local, quorum, all (default: local)
    #[arg(long, value_parser = parse::write_level, value_name = "LEVEL")]
    pub write: Option<WriteLevel>,
    /// Session token of an earlier write (its receipt prints `session n2:42`), for
    /// `--read session`
    #[arg(long, value_parser = parse::session_token, value_name = "TOKEN")]
    pub session: Option<SessionToken>,
}

/// A keyspace and a key.
#[derive(Clone, Debug, Args)]
pub struct Target {
    /// Keyspace name
    pub keyspace: String,
    /// Key
    pub key: String,
}

#[derive(Clone, Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub target: Target,
    /// Value; `-` reads it from stdin, byte for byte (a trailing newline is kept)
    #[arg(required_unless_present = "value_file")]
    pub value: Option<String>,
    /// Read the value from a file, byte for byte, instead of VALUE (at most 1 MiB)
    #[arg(long, value_name = "PATH", conflicts_with = "value")]
    pub value_file: Option<PathBuf>,
    /// mvreg: the context token of an earlier read; the write replaces the siblings it saw
    #[arg(long, value_parser = parse::context, value_name = "TOKEN")]
    pub context: Option<ReadContext>,
    #[command(flatten)]
    pub levels: Levels,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Clone, Debug, Args)]
pub struct KeyArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub levels: Levels,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Clone, Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub target: Target,
    /// mvreg: the context token of an earlier read; only the siblings it saw are deleted
    #[arg(long, value_parser = parse::context, value_name = "TOKEN")]
    pub context: Option<ReadContext>,
    #[command(flatten)]
    pub levels: Levels,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Clone, Debug, Args)]
pub struct CasArgs {
    #[command(flatten)]
    pub target: Target,
    /// The key's mod revision it must have, or `absent`
    #[arg(long, value_parser = parse::expectation, value_name = "REV|absent")]
    pub expect: parse::Expect,
    /// The new value; `-` reads it from stdin, byte for byte (a trailing newline is kept)
    #[arg(required_unless_present_any = ["delete", "value_file"])]
    pub value: Option<String>,
    /// Read the new value from a file, byte for byte, instead of VALUE (at most 1 MiB)
    #[arg(long, value_name = "PATH", conflicts_with = "value")]
    pub value_file: Option<PathBuf>,
    /// Delete the key instead of setting it
    #[arg(long, conflicts_with_all = ["value", "value_file"])]
    pub delete: bool,
    #[command(flatten)]
    pub levels: Levels,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `scan`'s arguments; the help text after them says how the pages go.
#[derive(Clone, Debug, Args)]
#[command(after_help = "\
Every key with the prefix is printed, as `etcdctl get --prefix` does: the CLI reads them page
by page (a page is at most 1000 keys and 4 MiB, so any answer fits a frame) and prints each
page as it comes; --timeout applies to each page. Each page is a read of its own at the --read
level, so a long scan is not one snapshot: a key present throughout is printed exactly once, a
key written or deleted meanwhile may show either state or be missing. The receipt line says
how many pages were read. When --limit stops the scan before the last key, a `(more keys ...)`
line names the key to pass to --after.")]
pub struct ScanArgs {
    /// Keyspace name (strong)
    pub keyspace: String,
    /// Key prefix ("" for every key)
    pub prefix: String,
    /// Most keys to print, over all pages [default: every key with the prefix]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub limit: Option<u64>,
    /// Start after this key (to continue a scan that --limit stopped)
    #[arg(long, value_name = "KEY")]
    pub after: Option<String>,
    #[command(flatten)]
    pub levels: Levels,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Clone, Debug, Args)]
pub struct CountArgs {
    #[command(flatten)]
    pub target: Target,
    /// Amount
    #[arg(default_value_t = 1)]
    pub by: i64,
    #[command(flatten)]
    pub levels: Levels,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Clone, Debug, Args)]
pub struct MembersArgs {
    #[command(flatten)]
    pub target: Target,
    /// Members; `-` reads one from stdin, byte for byte (a trailing newline is kept)
    #[arg(required_unless_present = "member_file")]
    pub members: Vec<String>,
    /// Read a member from a file, byte for byte (repeat for more)
    #[arg(long, value_name = "PATH")]
    pub member_file: Vec<PathBuf>,
    #[command(flatten)]
    pub levels: Levels,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// The commands that talk to a cluster.
#[derive(Clone, Debug, Subcommand)]
pub enum OpsCommand {
    /// Set a key (strong, lww and mvreg keyspaces)
    Put(PutArgs),
    /// Read a key (any keyspace)
    Get(KeyArgs),
    /// Delete a key (strong, lww and mvreg keyspaces)
    Delete(DeleteArgs),
    /// Compare-and-set on a strong keyspace: set (or --delete) if the key's revision matches
    Cas(CasArgs),
    /// Keys starting with a prefix, in order, all of them unless --limit (strong keyspaces)
    Scan(ScanArgs),
    /// Add to a counter (eventual counter keyspaces)
    Incr(CountArgs),
    /// Subtract from a counter (eventual counter keyspaces)
    Decr(CountArgs),
    /// Add members to a set (eventual set keyspaces)
    Sadd(MembersArgs),
    /// Remove members from a set (eventual set keyspaces)
    Srem(MembersArgs),
    /// The members of a set (eventual set keyspaces)
    Smembers(KeyArgs),
    /// Print changes to keys under a prefix as they happen, until Ctrl-C (any keyspace)
    Watch(watch::WatchArgs),
    /// A transaction: --if compares, --then changes, --else changes, atomic at one revision
    /// (strong keyspaces)
    Txn(txn::TxnArgs),
    /// Create, list and drop keyspaces
    Keyspace(cluster::KeyspaceArgs),
    /// Add, remove and list members
    Member(cluster::MemberArgs),
    /// Inject network faults between nodes (set on every member)
    Fault(cluster::FaultArgs),
    /// Every member's state: Raft groups, eventual keyspaces, fault rules
    Status(cluster::StatusArgs),
    /// Write a consistent backup of every keyspace to a file, while the cluster serves
    Backup(backup::BackupArgs),
    /// Load a backup into a fresh, empty cluster (revisions of strong keyspaces preserved)
    Restore(backup::RestoreArgs),
}

impl OpsCommand {
    /// The connection flags the command was given.
    pub fn conn(&self) -> &ConnArgs {
        match self {
            OpsCommand::Put(args) => &args.conn,
            OpsCommand::Get(args) | OpsCommand::Smembers(args) => &args.conn,
            OpsCommand::Delete(args) => &args.conn,
            OpsCommand::Cas(args) => &args.conn,
            OpsCommand::Scan(args) => &args.conn,
            OpsCommand::Watch(args) => &args.conn,
            OpsCommand::Txn(args) => &args.conn,
            OpsCommand::Incr(args) | OpsCommand::Decr(args) => &args.conn,
            OpsCommand::Sadd(args) | OpsCommand::Srem(args) => &args.conn,
            OpsCommand::Keyspace(args) => &args.conn,
            OpsCommand::Member(args) => &args.conn,
            OpsCommand::Fault(args) => &args.conn,
            OpsCommand::Status(args) => &args.conn,
            OpsCommand::Backup(args) => &args.conn,
            OpsCommand::Restore(args) => &args.conn,
        }
    }
}

/// A mistake in what the user typed, found after clap parsed it: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// A data command ready to send: its keyspace, operation and levels.
pub type DataRequest<'a> = (&'a str, Operation, &'a Levels);

/// The operation and levels of a data command that is one request (`None` for the admin
/// commands and `scan`, a request per page run by `execute`), with each value and member
/// taken from `load`: the argument, stdin or a file (see [`input`]).
pub fn data_request<'a>(
    command: &'a OpsCommand,
    load: &mut dyn FnMut(&Source) -> anyhow::Result<Bytes>,
) -> anyhow::Result<Option<DataRequest<'a>>> {
    let key = |target: &Target| bytes(&target.key);
    let (keyspace, operation, levels) = match command {
        OpsCommand::Put(a) => {
            let source = Source::of(a.value.as_deref(), a.value_file.as_deref());
            let value = load(&source.ok_or_else(|| no_value("put"))?)?;
            let (key, context) = (key(&a.target), a.context.clone());
            let put = Operation::Put {
                key,
                value,
                context,
            };
            (&a.target.keyspace, put, &a.levels)
        }
        OpsCommand::Get(a) | OpsCommand::Smembers(a) => {
            let get = Operation::Get {
                key: key(&a.target),
            };
            (&a.target.keyspace, get, &a.levels)
        }
        OpsCommand::Delete(a) => {
            let (key, context) = (key(&a.target), a.context.clone());
            (
                &a.target.keyspace,
                Operation::Delete { key, context },
                &a.levels,
            )
        }
        OpsCommand::Cas(a) => {
            let value = if a.delete {
                None
            } else {
                let source = Source::of(a.value.as_deref(), a.value_file.as_deref());
                Some(load(&source.ok_or_else(|| no_value("cas"))?)?)
            };
            let (key, expected) = (key(&a.target), a.expect.0);
            let cas = Operation::Cas {
                key,
                expected,
                value,
            };
            (&a.target.keyspace, cas, &a.levels)
        }
        OpsCommand::Incr(a) | OpsCommand::Decr(a) => {
            let negate = matches!(command, OpsCommand::Decr(_));
            let by = if negate { a.by.saturating_neg() } else { a.by };
            let add = Operation::Add {
                key: key(&a.target),
                by,
            };
            (&a.target.keyspace, add, &a.levels)
        }
        OpsCommand::Sadd(a) | OpsCommand::Srem(a) => {
            let members = member_sources(a)
                .iter()
                .map(load)
                .collect::<anyhow::Result<_>>()?;
            let key = key(&a.target);
            let op = match command {
                OpsCommand::Sadd(_) => Operation::SetAdd { key, members },
                // The client library reads the removal's context first.
                _ => Operation::SetRemove {
                    key,
                    members,
                    context: None,
                },
            };
            (&a.target.keyspace, op, &a.levels)
        }
        OpsCommand::Txn(a) => {
            // Across keyspaces it is no single request: `execute` runs it.
            return Ok(txn::request(a)?.map(|(keyspace, txn)| (keyspace, txn, &txn::NO_LEVELS)));
        }
        _ => return Ok(None),
    };
    Ok(Some((keyspace.as_str(), operation, levels)))
}

/// The members as given, then those from files, in order.
fn member_sources(args: &MembersArgs) -> Vec<Source> {
    let given = args.members.iter().map(|m| Source::of(Some(m), None));
    let files = args
        .member_file
        .iter()
        .map(|path| Source::of(None, Some(path)));
    given.chain(files).flatten().collect()
}

/// Clap requires a value source; this is what a caller that skipped it gets.
fn no_value(command: &str) -> UsageError {
    UsageError(format!("{command} needs a VALUE, `-` or --value-file PATH"))
}

/// Where the requests of one command go and how they are shown.
#[derive(Clone, Debug)]
pub struct Run {
    /// Ask this node only (`--pin`, or `--endpoint` in the shell).
    pub pinned: Option<String>,
    pub json: bool,
}

/// Writes one data answer: the value lines and the receipt line, or one JSON object.
pub fn write_answer(
    out: &mut dyn Write,
    json: bool,
    command: &str,
    keyspace: &str,
    answer: &Answer,
    receipt: &Receipt,
) -> std::io::Result<()> {
    if json {
        let object = show::data_json(command, keyspace, answer, receipt);
        return writeln!(out, "{object}");
    }
    for line in value_lines(answer) {
        writeln!(out, "{line}")?;
    }
    writeln!(out, "{}", format_receipt(answer, receipt))
}

/// A parsed command with its values read.
pub enum Prepared<'a> {
    /// A data command, ready to send.
    Data(DataRequest<'a>),
    /// `scan` (a request per page), `watch` (a poll after another), `keyspace`, `member`,
    /// `fault` or `status`: they read no values.
    Other(&'a OpsCommand),
}

/// Reads what `command` takes from stdin (if `stdin` allows) or from files. Done before
/// connecting: a missing file fails at once, and a slow stdin holds no connection open.
pub fn prepare(command: &OpsCommand, stdin: Stdin) -> anyhow::Result<Prepared<'_>> {
    let mut loader = Loader::new(stdin);
    let request = data_request(command, &mut |source| loader.load(source))?;
    Ok(request.map_or(Prepared::Other(command), Prepared::Data))
}

/// Runs one prepared command on an open client.
pub async fn execute(
    client: &Client,
    prepared: Prepared<'_>,
    run: &Run,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let (keyspace, operation, levels) = match prepared {
        Prepared::Data(request) => request,
        Prepared::Other(OpsCommand::Scan(args)) => {
            return scan::execute(client, args, run, out).await;
        }
        Prepared::Other(OpsCommand::Watch(args)) => {
            return watch::execute(client, args, run, out).await;
        }
        Prepared::Other(OpsCommand::Txn(args)) => {
            return txn::execute(client, args, run, out).await;
        }
        Prepared::Other(OpsCommand::Backup(args)) => {
            return backup::execute_backup(client, args, run, out).await;
        }
        Prepared::Other(OpsCommand::Restore(args)) => {
            return backup::execute_restore(client, args, run, out).await;
        }
        Prepared::Other(command) => return cluster::execute(client, command, run, out).await,
    };
    let name = operation.name();
    let (read, write, session) = (levels.read, levels.write, levels.session);
    let result = match &run.pinned {
        Some(endpoint) => {
            client
                .execute_at(endpoint, keyspace, operation, read, write, session)
                .await
        }
        None => {
            client
                .execute(keyspace, operation, read, write, session)
                .await
        }
    };
    let (answer, receipt) = result?;
    write_answer(out, run.json, name, keyspace, &answer, &receipt)?;
    Ok(())
}

/// Connects as the flags say.
pub async fn connect(conn: &ConnArgs) -> anyhow::Result<Client> {
    let certs = conn.certs.clone().ok_or_else(|| {
        UsageError("no certificate directory: pass --certs DIR or set CAPDIAL_CERTS".into())
    })?;
    let endpoints = conn
        .endpoint
        .clone()
        .unwrap_or_else(|| vec![DEFAULT_ENDPOINT.to_string()]);
    let mut options = ClientOptions::new(endpoints, certs);
    options.name = conn.client_name.clone();
    options.timeout = conn.timeout;
    Ok(Client::connect(options).await?)
}

/// Prints a failed command: the error on stderr (and a JSON object on stdout with
/// `--json`). Usage mistakes exit with 2, everything else with 1.
fn report(error: &anyhow::Error, json: bool) -> ExitCode {
    eprintln!("capdial: {error:#}");
    if json {
        let may_have_applied = error
            .downcast_ref::<ConnError>()
            .is_some_and(ConnError::may_have_applied);
        let object = serde_json::json!({
            "ok": false,
            "error": format!("{error:#}"),
            "may_have_applied": may_have_applied,
        });
        println!("{object}");
    }
    if error.is::<UsageError>() {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

/// Runs a command from the process arguments.
pub fn run(command: OpsCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let json = command.conn().json;
    let result = prepare(&command, Stdin::Process).and_then(|prepared| {
        runtime.block_on(async {
            let conn = command.conn();
            let client = connect(conn).await?;
            let pinned = conn
                .pin
                .then(|| client.options().endpoints.first().cloned())
                .flatten();
            let run = Run { pinned, json };
            execute(&client, prepared, &run, &mut std::io::stdout()).await
        })
    });
    Ok(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&error, json),
    })
}

/// A shell line: the same commands, without the program name.
#[derive(Debug, Parser)]
#[command(name = "capdial", no_binary_name = true, disable_version_flag = true)]
struct Line {
    #[command(subcommand)]
    command: OpsCommand,
}

/// The shell's parser: environment variables do not apply inside the shell, so a stray
/// `CAPDIAL_ENDPOINT` cannot redirect it.
fn line_parser() -> clap::Command {
    fn without_env(command: clap::Command) -> clap::Command {
        command
            .mut_args(|arg| arg.env(None::<&'static str>))
            .mut_subcommands(without_env)
    }
    without_env(Line::command())
}

/// Parses the words of a shell line with the CLI's parser and runs the command on `client`.
/// `--endpoint HOST:PORT` on a line sends that command to that node only (as `--pin` does
/// for the client's first endpoint); `--json` on a line or `json` turns on JSON output.
/// `--help` output is written to `out`. Errors are returned for the shell to print, without
/// an `error:` prefix. `status --watch` is refused: Ctrl-C belongs to the shell; so is a `-`
/// value: the shell's stdin holds its lines.
pub async fn run_line(
    client: &Client,
    words: &[String],
    json: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let matches = match line_parser().try_get_matches_from(words) {
        Ok(matches) => matches,
        Err(error) if !error.use_stderr() => {
            write!(out, "{}", error.render())?;
            return Ok(());
        }
        Err(error) => {
            let text = error.render().to_string();
            // The shell prints its own `error:` prefix.
            let text = text.strip_prefix("error: ").unwrap_or(&text).trim_end();
            return Err(UsageError(text.to_string()).into());
        }
    };
    let line = Line::from_arg_matches(&matches).map_err(|e| UsageError(e.to_string()))?;
    if matches!(&line.command, OpsCommand::Status(args) if args.watch) {
        // Ctrl-C belongs to the shell (and the demo's cluster), so it cannot end a watch.
        let text = "`status --watch` runs from the command line; in the shell, run `status` again";
        return Err(UsageError(text.into()).into());
    }
    let conn = line.command.conn();
    let pinned = match &conn.endpoint {
        Some(endpoints) => endpoints.first().cloned(),
        None if conn.pin => client.options().endpoints.first().cloned(),
        None => None,
    };
    let run = Run {
        pinned,
        json: json || conn.json,
    };
    let prepared = prepare(&line.command, Stdin::Refused)?;
    execute(client, prepared, &run, out).await
}

/// The commands a shell line can run, with one line of help each.
pub fn help_text() -> String {
    let mut text = String::from("Commands (each takes --help):\n");
    for sub in Line::command().get_subcommands() {
        let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
        text.push_str(&format!("  {:<10} {about}\n", sub.get_name()));
    }
    text.push_str(
        "Levels: --read linearizable|lease|follower|stale (strong), local|session|quorum \
         (eventual);\n        --write local|quorum|all (eventual); --session TOKEN from a \
         write's receipt.\n--endpoint HOST:PORT sends one command to that node only; --json \
         prints JSON.\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogIndex;

    fn parse(line: &str) -> Result<OpsCommand, clap::Error> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let matches = line_parser().try_get_matches_from(words)?;
        Line::from_arg_matches(&matches).map(|line| line.command)
    }

    /// `data_request` with stand-ins for stdin and files that say where a value came from.
    fn data_request(command: &OpsCommand) -> Option<DataRequest<'_>> {
        let mut load = |source: &Source| {
            Ok(match source {
                Source::Arg(text) => bytes(text),
                Source::Stdin => bytes("<stdin>"),
                Source::File(path) => bytes(&format!("<{}>", path.display())),
            })
        };
        super::data_request(command, &mut load).expect("the stand-ins never fail")
    }

    #[test]
    fn data_commands_become_operations() {
        let command = parse("put orders k v").unwrap();
        let (keyspace, operation, _) = data_request(&command).unwrap();
        assert_eq!(keyspace, "orders");
        assert_eq!(
            operation,
            Operation::Put {
                key: bytes("k"),
                value: bytes("v"),
                context: None
            }
        );
        let command = parse("decr likes k 3").unwrap();
        let (_, operation, _) = data_request(&command).unwrap();
        assert_eq!(
            operation,
            Operation::Add {
                key: bytes("k"),
                by: -3
            }
        );
        let command = parse("incr likes k").unwrap();
        let (_, operation, _) = data_request(&command).unwrap();
        assert_eq!(
            operation,
            Operation::Add {
                key: bytes("k"),
                by: 1
            }
        );
        let command = parse("srem carts c1 a b").unwrap();
        let (_, operation, _) = data_request(&command).unwrap();
        assert_eq!(
            operation,
            Operation::SetRemove {
                key: bytes("c1"),
                members: vec![bytes("a"), bytes("b")],
                context: None,
            }
        );
        assert!(parse("sadd carts c1").is_err(), "sadd needs a member");
    }

    #[test]
    fn levels_and_sessions_parse() {
        let command = parse("get carts k --read session --session n2:42").unwrap();
        let (_, _, levels) = data_request(&command).unwrap();
        assert_eq!(levels.read, Some(ReadLevel::Session));
        assert_eq!(
            levels.session,
            Some(SessionToken {
                node: crate::types::NodeId(2),
                seq: 42
            })
        );
        let command = parse("put carts k v --write quorum").unwrap();
        let (_, _, levels) = data_request(&command).unwrap();
        assert_eq!(levels.write, Some(WriteLevel::Quorum));
        assert!(parse("get orders k --read fast").is_err());
    }

    #[test]
    fn cas_takes_an_expectation_and_a_value_or_delete() {
        let command = parse("cas orders k --expect absent v").unwrap();
        let (_, operation, _) = data_request(&command).unwrap();
        assert_eq!(
            operation,
            Operation::Cas {
                key: bytes("k"),
                expected: None,
                value: Some(bytes("v"))
            }
        );
        let command = parse("cas orders k --expect 17 --delete").unwrap();
        let (_, operation, _) = data_request(&command).unwrap();
        assert_eq!(
            operation,
            Operation::Cas {
                key: bytes("k"),
                expected: Some(LogIndex(17)),
                value: None
            }
        );
        assert!(parse("cas orders k --expect 17").is_err());
        assert!(parse("cas orders k --expect 17 v --delete").is_err());
        assert!(parse("cas orders k --expect latest v").is_err());
    }

    fn value_of(line: &str) -> Option<Bytes> {
        let command = parse(line).unwrap_or_else(|error| panic!("{line}: {error}"));
        match data_request(&command).unwrap().1 {
            Operation::Put { value, .. } => Some(value),
            Operation::Cas { value, .. } => value,
            other => panic!("{line}: not a put or cas: {other:?}"),
        }
    }

    #[test]
    fn values_come_from_the_argument_stdin_or_a_file() {
        assert_eq!(value_of("put orders k v"), Some(bytes("v")));
        assert_eq!(value_of("put orders k -"), Some(bytes("<stdin>")));
        let from_file = Some(bytes("<v.bin>"));
        assert_eq!(value_of("put orders k --value-file v.bin"), from_file);
        let cas = "cas orders k --expect absent --value-file v.bin";
        assert_eq!(value_of(cas), from_file);
        assert_eq!(
            value_of("cas orders k --expect 3 -"),
            Some(bytes("<stdin>"))
        );
        assert_eq!(value_of("cas orders k --expect 3 --delete"), None);
        for refused in [
            "put orders k",
            "put orders k v --value-file v.bin",
            "cas orders k --expect 3 --delete --value-file v.bin",
            "cas orders k --expect 3 v --value-file v.bin",
            "sadd carts c",
        ] {
            assert!(parse(refused).is_err(), "{refused}");
        }
        let command = parse("sadd carts c a - --member-file m.bin --member-file n.bin").unwrap();
        let members = ["a", "<stdin>", "<m.bin>", "<n.bin>"].map(bytes).to_vec();
        let expected = Operation::SetAdd {
            key: bytes("c"),
            members,
        };
        assert_eq!(data_request(&command).unwrap().1, expected);
        assert!(parse("srem carts c --member-file m.bin").is_ok());
    }

    #[test]
    fn the_shell_refuses_a_value_from_stdin() {
        let command = parse("put orders k -").unwrap();
        let error = prepare(&command, Stdin::Refused).err().expect("refused");
        assert!(error.is::<UsageError>(), "{error:#}");
    }

    #[test]
    fn connection_flags_go_anywhere_and_env_is_ignored_in_the_shell() {
        let command = parse("keyspace create orders --mode strong --json --endpoint h:1").unwrap();
        assert!(command.conn().json);
        assert_eq!(command.conn().endpoint, Some(vec!["h:1".to_string()]));
        let command = parse("scan orders a --limit 5 --timeout 250ms").unwrap();
        assert_eq!(command.conn().timeout, Duration::from_millis(250));
        assert_eq!(command.conn().client_name, "admin");
    }

    #[test]
    fn scan_takes_a_limit_over_all_pages_and_a_key_to_start_after() {
        let Ok(OpsCommand::Scan(args)) = parse("scan orders p/ --limit 5000 --after p/9") else {
            panic!("scan parses");
        };
        assert_eq!(
            (args.limit, args.after.as_deref()),
            (Some(5000), Some("p/9"))
        );
        let Ok(OpsCommand::Scan(args)) = parse("scan orders p/") else {
            panic!("scan parses");
        };
        assert_eq!(args.limit, None, "every key unless limited");
        assert!(parse("scan orders p/ --limit 0").is_err());
        let command = parse("scan orders p/").unwrap();
        assert!(
            data_request(&command).is_none(),
            "a scan is a request per page"
        );
    }

    #[test]
    fn the_whole_command_line_is_consistent() {
        crate::cli::Cli::command().debug_assert();
        line_parser().debug_assert();
    }

    #[test]
    fn help_lists_every_command() {
        let help = help_text();
        for name in ["put", "smembers", "keyspace", "fault", "status"] {
            assert!(help.contains(&format!("  {name} ")), "{name}: {help}");
        }
    }
}
