//! Transactions across strong keyspaces from the client library: [`Client::transaction`]
//! builds one, [`crate::txn::Coordinator`] decides its steps, and this module sends them, each
//! as an ordinary strong write (leaders followed, retried under one `(client, seq)`). It also
//! resolves the intents a request meets ([`Client::resolve_intent`]), which
//! [`Client::execute`] does on its own before it retries.

use super::conn::{Client, ConnError};
use super::typed::IntoBytes;
use crate::protocol::{Answer, ClientError, Operation};
use crate::strong::{Compare, Part, StepOutcome, TxnId, TxnOp, Versioned};
use crate::txn::{AbortReason, AfterRecord, Coordinator, Send, StepResult, TxnEnd};
use crate::types::LogIndex;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::{Duration, Instant};

/// The first wait before asking a pending record again; it doubles up to `WAIT_MAX`.
const WAIT_FIRST: Duration = Duration::from_millis(20);
const WAIT_MAX: Duration = Duration::from_millis(500);

/// A transaction across strong keyspaces: compares, reads and two branches of changes, each
/// naming its keyspace. `.await` commits it atomically on every keyspace it names (two-phase
/// commit, see [`crate::strong::twophase`]): every compare held and the `then` changes
/// applied everywhere, or the `else` changes did; never part of either. Isolation is
/// serializable. A key another transaction holds is resolved and the transaction tried
/// again, until the client's timeout.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # use capdial::protocol::KeyspaceMode::Strong;
/// # cluster.create_keyspace("inventory", Strong).await?;
/// # cluster.create_keyspace("orders", Strong).await?;
/// let client = cluster.client();
/// client.strong("inventory").put("item-1", "5").await?;
/// let sold = client
///     .transaction()
///     .if_value("inventory", "item-1", "5")
///     .then_put("inventory", "item-1", "4")
///     .then_put("orders", "o-9", "paid")
///     .await?;
/// assert!(sold.succeeded);
/// assert_eq!(client.strong("orders").get("o-9").await?.value.unwrap().value, "paid");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a transaction does nothing until it is awaited"]
pub struct Transaction {
    client: Client,
    parts: BTreeMap<String, Part>,
}

/// How a transaction ended: which branch ran, where, and what its reads saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionOutcome {
    /// Whether every compare held, so the `then` changes ran (else the `else` ones).
    pub succeeded: bool,
    /// The revision each keyspace applied it at (a keyspace whose last step went unanswered
    /// is missing: its part applies when anyone next meets it).
    pub revisions: BTreeMap<String, LogIndex>,
    /// What each read saw, by keyspace and key, as of the transaction.
    pub reads: BTreeMap<(String, Bytes), Option<Versioned>>,
}

impl Transaction {
    pub(super) fn new(client: Client) -> Transaction {
        Transaction {
            client,
            parts: BTreeMap::new(),
        }
    }

    fn part(&mut self, keyspace: &str) -> &mut Part {
        self.parts.entry(keyspace.to_string()).or_default()
    }

    /// Holds if `key` of `keyspace` has mod revision `revision`.
    pub fn if_revision(mut self, keyspace: &str, key: impl IntoBytes, revision: LogIndex) -> Self {
        let (key, revision) = (key.into_bytes(), Some(revision));
        self.part(keyspace)
            .compares
            .push(Compare::Revision { key, revision });
        self
    }

    /// Holds if `key` of `keyspace` is absent.
    pub fn if_absent(mut self, keyspace: &str, key: impl IntoBytes) -> Self {
        let key = key.into_bytes();
        let compare = Compare::Revision {
            key,
            revision: None,
        };
        self.part(keyspace).compares.push(compare);
        self
    }

    /// Holds if `key` of `keyspace` has value `value`.
    pub fn if_value(mut self, keyspace: &str, key: impl IntoBytes, value: impl IntoBytes) -> Self {
        let (key, value) = (key.into_bytes(), Some(value.into_bytes()));
        self.part(keyspace)
            .compares
            .push(Compare::Value { key, value });
        self
    }

    /// Reads `key` of `keyspace` as of the transaction (in [`TransactionOutcome::reads`]).
    pub fn read(mut self, keyspace: &str, key: impl IntoBytes) -> Self {
        self.part(keyspace).reads.push(key.into_bytes());
        self
    }

    /// If every compare holds: set `key` of `keyspace` to `value`.
    pub fn then_put(mut self, keyspace: &str, key: impl IntoBytes, value: impl IntoBytes) -> Self {
        let (key, value) = (key.into_bytes(), value.into_bytes());
        self.part(keyspace).success.push(TxnOp::Put { key, value });
        self
    }

    /// If every compare holds: delete `key` of `keyspace`.
    pub fn then_delete(mut self, keyspace: &str, key: impl IntoBytes) -> Self {
        let key = key.into_bytes();
        self.part(keyspace).success.push(TxnOp::Delete { key });
        self
    }

    /// If a compare fails: set `key` of `keyspace` to `value`.
    pub fn else_put(mut self, keyspace: &str, key: impl IntoBytes, value: impl IntoBytes) -> Self {
        let (key, value) = (key.into_bytes(), value.into_bytes());
        self.part(keyspace).failure.push(TxnOp::Put { key, value });
        self
    }

    /// If a compare fails: delete `key` of `keyspace`.
    pub fn else_delete(mut self, keyspace: &str, key: impl IntoBytes) -> Self {
        let key = key.into_bytes();
        self.part(keyspace).failure.push(TxnOp::Delete { key });
        self
    }

    async fn run(self) -> Result<TransactionOutcome, ConnError> {
        let deadline = Instant::now() + self.client.options().timeout;
        let mut wait = WAIT_FIRST;
        loop {
            let txn = TxnId {
                client: self.client.id(),
                number: crate::rng::os_seed(),
            };
            let end = coordinate(&self.client, txn, self.parts.clone()).await;
            let reason = match end {
                TxnEnd::Committed {
                    succeeded,
                    revisions,
                    reads,
                } => {
                    let reads = reads
                        .into_iter()
                        .flat_map(|(ks, reads)| {
                            reads
                                .into_iter()
                                .map(move |(key, v)| ((ks.clone(), key), v))
                        })
                        .collect();
                    return Ok(TransactionOutcome {
                        succeeded,
                        revisions,
                        reads,
                    });
                }
                TxnEnd::Unknown(_) => {
                    return Err(ConnError::Timeout {
                        may_have_applied: true,
                        resend: None,
                    });
                }
                TxnEnd::Aborted(reason) => reason,
            };
            let AbortReason::Conflict {
                keyspace,
                key,
                txn: holder,
                anchor,
            } = reason
            else {
                return Err(aborted(reason));
            };
            if Instant::now() >= deadline {
                let error = ClientError::Locked {
                    key,
                    txn: holder,
                    anchor,
                };
                return Err(ConnError::Client(error));
            }
            // Resolve what stood in the way (or wait out its record), then try again.
            self.client
                .resolve_intent(&keyspace, key, holder, &anchor, deadline)
                .await?;
            tokio::time::sleep(jitter(wait)).await;
            wait = (wait * 2).min(WAIT_MAX);
        }
    }
}

impl IntoFuture for Transaction {
    type Output = Result<TransactionOutcome, ConnError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + std::marker::Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

fn aborted(reason: AbortReason) -> ConnError {
    let reason = match reason {
        AbortReason::Expired => {
            "the transaction was aborted: its record expired before its commit".to_string()
        }
        AbortReason::Failed { keyspace, reason } => {
            format!("the transaction was aborted: keyspace {keyspace}: {reason}")
        }
        AbortReason::Conflict { keyspace, .. } => {
            format!("the transaction was aborted: a key of {keyspace} is held")
        }
    };
    ConnError::Client(ClientError::Malformed { reason })
}

/// Up to half of `wait` more, so two transactions that met each other do not meet again.
fn jitter(wait: Duration) -> Duration {
    let mut rng = crate::rng::SeededRng::new(crate::rng::os_seed());
    wait + rng.duration_between(Duration::ZERO, wait / 2)
}

/// Runs one attempt of a transaction through its coordinator: each batch of steps in
/// parallel, until it ends.
async fn coordinate(client: &Client, txn: TxnId, parts: BTreeMap<String, Part>) -> TxnEnd {
    let (mut coordinator, mut sends) = Coordinator::new(txn, parts);
    while !sends.is_empty() {
        let mut tasks = tokio::task::JoinSet::new();
        for send in sends {
            let client = client.clone();
            tasks.spawn(async move {
                let result = step(&client, &send).await;
                (send.keyspace, result)
            });
        }
        sends = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (keyspace, result) = match joined {
                Ok(done) => done,
                Err(panic) => std::panic::resume_unwind(panic.into_panic()),
            };
            sends.extend(coordinator.on_result(&keyspace, result));
        }
    }
    coordinator
        .end()
        .cloned()
        .unwrap_or_else(|| TxnEnd::Unknown("the coordinator stopped early".to_string()))
}

/// Sends one step as a strong write and says how it ended.
async fn step(client: &Client, send: &Send) -> StepResult {
    let operation = Operation::TxnStep(send.step.clone());
    match client
        .execute(&send.keyspace, operation, None, None, None)
        .await
    {
        Ok((Answer::TxnStep { revision, outcome }, _)) => StepResult::Done { revision, outcome },
        Ok((answer, _)) => StepResult::Unknown(format!("a step was answered with {answer:?}")),
        Err(ConnError::Client(ClientError::Locked { key, txn, anchor })) => {
            StepResult::Locked { key, txn, anchor }
        }
        Err(error) if may_have_applied(&error) => StepResult::Unknown(error.to_string()),
        Err(error) => StepResult::Refused(error.to_string()),
    }
}

fn may_have_applied(error: &ConnError) -> bool {
    match error {
        ConnError::Timeout {
            may_have_applied, ..
        }
        | ConnError::Lost {
            may_have_applied, ..
        } => *may_have_applied,
        ConnError::Client(ClientError::Timeout { may_have_applied }) => *may_have_applied,
        _ => false,
    }
}

impl Client {
    /// A transaction across strong keyspaces; see [`Transaction`].
    pub fn transaction(&self) -> Transaction {
        Transaction::new(self.clone())
    }

    /// Resolves the intent of `txn` on `key` of `keyspace` from the transaction's record on
    /// `anchor`: aborts the record if it expired, waits while it is pending, then carries out
    /// the decision on the key. By `deadline`, else the last refusal.
    pub async fn resolve_intent(
        &self,
        keyspace: &str,
        key: Bytes,
        txn: TxnId,
        anchor: &str,
        deadline: Instant,
    ) -> Result<(), ConnError> {
        let mut wait = WAIT_FIRST;
        loop {
            let ask = Operation::TxnStep(crate::txn::resolve_step(txn));
            let state = match self.execute(anchor, ask, None, None, None).await {
                Ok((
                    Answer::TxnStep {
                        outcome: StepOutcome::Record(state),
                        ..
                    },
                    _,
                )) => state,
                // The anchor was dropped, and the record with it: nothing can commit it now.
                Err(ConnError::Client(ClientError::UnknownKeyspace { .. })) => {
                    crate::strong::TxnState::Aborted
                }
                Ok((answer, _)) => {
                    return Err(ConnError::Protocol {
                        reason: format!("a decide was answered with {answer:?}"),
                    });
                }
                Err(error) => return Err(error),
            };
            match crate::txn::after_record(txn, state, keyspace, anchor, key.clone()) {
                AfterRecord::Resolved => return Ok(()),
                AfterRecord::Send(send) => {
                    let operation = Operation::TxnStep(send.step);
                    self.execute(&send.keyspace, operation, None, None, None)
                        .await?;
                    return Ok(());
                }
                AfterRecord::Wait if Instant::now() >= deadline => {
                    let error = ClientError::Locked {
                        key,
                        txn,
                        anchor: anchor.to_string(),
                    };
                    return Err(ConnError::Client(error));
                }
                AfterRecord::Wait => {
                    tokio::time::sleep(jitter(wait)).await;
                    wait = (wait * 2).min(WAIT_MAX);
                }
            }
        }
    }
}

/// Whether `operation` is a step of a transaction: its refusals are its coordinator's to
/// judge, not to resolve.
pub(super) fn is_step(operation: &Operation) -> bool {
    matches!(operation, Operation::TxnStep(_))
}
