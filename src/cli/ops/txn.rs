//! `capdial txn`: a transaction from `--if`, `--then` and `--else` clauses, each naming its
//! keyspace. Clauses that name one keyspace make one log entry (`Operation::Txn`); clauses
//! across keyspaces make a two-phase commit through the client library's [`Transaction`].

use super::{Levels, Run, UsageError, bytes};
use crate::client::{Client, Transaction, TransactionOutcome};
use crate::protocol::Operation;
use crate::strong::{Compare, Part, TxnOp};
use crate::types::LogIndex;
use clap::Args;
use std::collections::BTreeMap;
use std::io::Write;

/// `txn`'s arguments.
#[derive(Clone, Debug, Args)]
#[command(after_help = "\
Clauses (quote each one):
  --if 'KS KEY rev=N'        KEY's mod revision is N
  --if 'KS KEY absent'       KEY does not exist
  --if 'KS KEY value=TEXT'   KEY's value is TEXT
  --then 'put KS KEY VALUE'  (VALUE is the rest of the clause, spaces included)
  --then 'delete KS KEY'
  --else ...                 as --then, for when a compare fails
Clauses may name several strong keyspaces: the transaction is then committed on all of them
atomically (two-phase commit), serializable with every other transaction and request. The
answer says which branch ran and the revision it took on each keyspace.
Example: capdial txn --if 'inventory item-1 rev=5' --then 'put inventory item-1 4' \\
  --then 'put orders o-9 paid'")]
pub struct TxnArgs {
    /// A compare: 'KS KEY rev=N', 'KS KEY absent' or 'KS KEY value=TEXT' (all must hold)
    #[arg(long = "if", value_name = "CLAUSE")]
    pub compares: Vec<String>,
    /// A change if every compare holds: 'put KS KEY VALUE' or 'delete KS KEY'
    #[arg(long = "then", value_name = "CLAUSE", required = true)]
    pub success: Vec<String>,
    /// A change if a compare fails: 'put KS KEY VALUE' or 'delete KS KEY'
    #[arg(long = "else", value_name = "CLAUSE")]
    pub failure: Vec<String>,
    #[command(flatten)]
    pub conn: super::ConnArgs,
}

/// Levels do not apply to a transaction (a strong write): none are given.
pub static NO_LEVELS: Levels = Levels {
    read: None,
    write: None,
    session: None,
};

/// The clauses, by the keyspace they name.
fn parts(args: &TxnArgs) -> Result<BTreeMap<&str, Part>, UsageError> {
    let mut parts: BTreeMap<&str, Part> = BTreeMap::new();
    for clause in &args.compares {
        let (named, compare) = parse_compare(clause)?;
        parts.entry(named).or_default().compares.push(compare);
    }
    for (then, clauses) in [(true, &args.success), (false, &args.failure)] {
        for clause in clauses {
            let (named, op) = parse_change(clause)?;
            let part = parts.entry(named).or_default();
            if then {
                &mut part.success
            } else {
                &mut part.failure
            }
            .push(op);
        }
    }
    if parts.is_empty() {
        return Err(UsageError("a transaction needs a clause".into()));
    }
    Ok(parts)
}

/// The keyspace and the one-entry transaction, when the clauses name one keyspace (`None`
/// when they name several: see [`execute`]).
pub fn request(args: &TxnArgs) -> Result<Option<(&str, Operation)>, UsageError> {
    let parts = parts(args)?;
    if parts.len() > 1 {
        return Ok(None);
    }
    let Some((keyspace, part)) = parts.into_iter().next() else {
        return Err(UsageError("a transaction needs a clause".into()));
    };
    let txn = Operation::Txn {
        compares: part.compares,
        success: part.success,
        failure: part.failure,
    };
    Ok(Some((keyspace, txn)))
}

/// The transaction across keyspaces the clauses make.
fn transaction(client: &Client, args: &TxnArgs) -> Result<Transaction, UsageError> {
    let mut txn = client.transaction();
    for (keyspace, part) in parts(args)? {
        for compare in part.compares {
            txn = match compare {
                Compare::Revision {
                    key,
                    revision: Some(revision),
                } => txn.if_revision(keyspace, key, revision),
                Compare::Revision {
                    key,
                    revision: None,
                } => txn.if_absent(keyspace, key),
                Compare::Value {
                    key,
                    value: Some(value),
                } => txn.if_value(keyspace, key, value),
                Compare::Value { key, value: None } => txn.if_absent(keyspace, key),
            };
        }
        for op in part.success {
            txn = match op {
                TxnOp::Put { key, value } => txn.then_put(keyspace, key, value),
                TxnOp::Delete { key } => txn.then_delete(keyspace, key),
            };
        }
        for op in part.failure {
            txn = match op {
                TxnOp::Put { key, value } => txn.else_put(keyspace, key, value),
                TxnOp::Delete { key } => txn.else_delete(keyspace, key),
            };
        }
    }
    Ok(txn)
}

/// Runs a transaction across keyspaces and prints which branch ran and where.
pub async fn execute(
    client: &Client,
    args: &TxnArgs,
    run: &Run,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if run.pinned.is_some() {
        return Err(UsageError(
            "a transaction across keyspaces goes to each keyspace's leader: --pin does not apply"
                .into(),
        )
        .into());
    }
    let outcome = transaction(client, args)?.await?;
    write_outcome(out, run.json, &outcome)?;
    Ok(())
}

fn write_outcome(
    out: &mut dyn Write,
    json: bool,
    outcome: &TransactionOutcome,
) -> std::io::Result<()> {
    let revisions: BTreeMap<&str, u64> = outcome
        .revisions
        .iter()
        .map(|(keyspace, revision)| (keyspace.as_str(), revision.0))
        .collect();
    if json {
        let object = serde_json::json!({
            "command": "txn",
            "succeeded": outcome.succeeded,
            "revisions": revisions,
        });
        return writeln!(out, "{object}");
    }
    let branch = if outcome.succeeded {
        "OK: the compares held, the then-branch ran"
    } else {
        "the compares failed, the else-branch ran"
    };
    let places: Vec<String> = revisions
        .iter()
        .map(|(keyspace, revision)| format!("{keyspace} at revision {revision}"))
        .collect();
    writeln!(out, "{branch} ({})", places.join(", "))
}

/// `KS KEY rev=N` / `KS KEY absent` / `KS KEY value=TEXT`.
fn parse_compare(clause: &str) -> Result<(&str, Compare), UsageError> {
    let bad = || {
        UsageError(format!(
            "--if {clause:?}: expected 'KS KEY rev=N', 'KS KEY absent' or 'KS KEY value=TEXT'"
        ))
    };
    let mut words = clause.trim().splitn(3, ' ');
    let (Some(keyspace), Some(key), Some(test)) = (words.next(), words.next(), words.next()) else {
        return Err(bad());
    };
    let key = bytes(key);
    let compare = if test == "absent" {
        Compare::Revision {
            key,
            revision: None,
        }
    } else if let Some(revision) = test.strip_prefix("rev=") {
        let revision = revision.parse().map_err(|_| bad())?;
        Compare::Revision {
            key,
            revision: Some(LogIndex(revision)),
        }
    } else if let Some(value) = test.strip_prefix("value=") {
        Compare::Value {
            key,
            value: Some(bytes(value)),
        }
    } else {
        return Err(bad());
    };
    Ok((keyspace, compare))
}

/// `put KS KEY VALUE` / `delete KS KEY`.
fn parse_change(clause: &str) -> Result<(&str, TxnOp), UsageError> {
    let bad = || {
        UsageError(format!(
            "{clause:?}: expected 'put KS KEY VALUE' or 'delete KS KEY'"
        ))
    };
    let mut words = clause.trim().splitn(4, ' ');
    let (Some(verb), Some(keyspace), Some(key)) = (words.next(), words.next(), words.next()) else {
        return Err(bad());
    };
    let key = bytes(key);
    let op = match (verb, words.next()) {
        ("put", Some(value)) => TxnOp::Put {
            key,
            value: bytes(value),
        },
        ("delete", None) => TxnOp::Delete { key },
        _ => return Err(bad()),
    };
    Ok((keyspace, op))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        txn: TxnArgs,
    }

    fn parse(args: &[&str]) -> Result<(String, Operation), UsageError> {
        let cli = Cli::try_parse_from(std::iter::once("txn").chain(args.iter().copied()))
            .expect("clap accepts it");
        let (keyspace, txn) = request(&cli.txn)?.expect("one keyspace");
        Ok((keyspace.to_string(), txn))
    }

    #[test]
    fn clauses_make_one_transaction() {
        let (keyspace, txn) = parse(&[
            "--if",
            "inventory item-1 rev=5",
            "--if",
            "inventory order/o-9 absent",
            "--then",
            "put inventory item-1 4 left",
            "--then",
            "put inventory order/o-9 paid",
            "--else",
            "delete inventory hold/o-9",
        ])
        .expect("parses");
        assert_eq!(keyspace, "inventory");
        let Operation::Txn {
            compares,
            success,
            failure,
        } = txn
        else {
            panic!("a transaction: {txn:?}");
        };
        assert_eq!(compares.len(), 2);
        assert_eq!(
            success[0],
            TxnOp::Put {
                key: bytes("item-1"),
                value: bytes("4 left")
            }
        );
        assert_eq!(
            failure,
            [TxnOp::Delete {
                key: bytes("hold/o-9")
            }]
        );
    }

    #[test]
    fn clauses_across_keyspaces_make_parts_and_a_bad_clause_is_a_usage_error() {
        let cli = Cli::try_parse_from(["txn", "--if", "a k absent", "--then", "put b k v"])
            .expect("clap accepts it");
        assert!(
            request(&cli.txn).unwrap().is_none(),
            "two keyspaces: two-phase commit"
        );
        let parts = parts(&cli.txn).unwrap();
        assert_eq!(
            (parts["a"].compares.len(), parts["b"].success.len()),
            (1, 1)
        );
        let bad = parse(&["--if", "a k rev=x", "--then", "put a k v"]);
        assert!(bad.is_err_and(|e| e.0.contains("rev=N")));
        let verb = parse(&["--then", "get a k"]);
        assert!(verb.is_err_and(|e| e.0.contains("put KS KEY VALUE")));
    }
}
