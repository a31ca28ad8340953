//! `capdial txn`: a transaction on a strong keyspace from `--if`, `--then` and `--else`
//! clauses, each naming its keyspace (so the same clauses will span keyspaces once they may).

use super::{Levels, UsageError, bytes};
use crate::protocol::Operation;
use crate::strong::{Compare, TxnOp};
use crate::types::LogIndex;
use clap::Args;

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
Every clause must name the same strong keyspace: transactions across keyspaces are not
supported yet. The answer says which branch ran and the revision every change took.
Example: capdial txn --if 'inventory item-1 rev=5' --then 'put inventory item-1 4' \\
  --then 'put inventory order/o-9 paid'")]
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

/// The keyspace the clauses name and the transaction they make.
pub fn request(args: &TxnArgs) -> Result<(&str, Operation), UsageError> {
    let mut keyspace: Option<&str> = None;
    let mut same = |named| match keyspace {
        Some(first) if first != named => Err(UsageError(format!(
            "the clauses name keyspaces {first} and {named}: a transaction across keyspaces \
             is not supported yet"
        ))),
        Some(_) => Ok(()),
        None => {
            keyspace = Some(named);
            Ok(())
        }
    };
    let mut compares = Vec::new();
    for clause in &args.compares {
        let (named, compare) = parse_compare(clause)?;
        same(named)?;
        compares.push(compare);
    }
    let (mut success, mut failure) = (Vec::new(), Vec::new());
    for (clauses, ops) in [(&args.success, &mut success), (&args.failure, &mut failure)] {
        for clause in clauses {
            let (named, op) = parse_change(clause)?;
            same(named)?;
            ops.push(op);
        }
    }
    let keyspace = keyspace.ok_or_else(|| UsageError("a transaction needs a clause".into()))?;
    let txn = Operation::Txn {
        compares,
        success,
        failure,
    };
    Ok((keyspace, txn))
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
        request(&cli.txn).map(|(keyspace, txn)| (keyspace.to_string(), txn))
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
    fn a_second_keyspace_or_a_bad_clause_is_a_usage_error() {
        let across = parse(&["--then", "put a k v", "--then", "put b k v"]);
        assert!(across.is_err_and(|e| e.0.contains("across keyspaces")));
        let bad = parse(&["--if", "a k rev=x", "--then", "put a k v"]);
        assert!(bad.is_err_and(|e| e.0.contains("rev=N")));
        let verb = parse(&["--then", "get a k"]);
        assert!(verb.is_err_and(|e| e.0.contains("put KS KEY VALUE")));
    }
}
