//! The request builders the typed handles return, and the answers they resolve to.
//!
//! A builder holds one [`Operation`] and its levels; `.await` (through [`IntoFuture`]) sends
//! it with [`Client::execute`](crate::client::Client::execute), which retries under one
//! `(client, seq)`, and checks that the answer is the kind the operation asked for. A level
//! call that does not apply to the keyspace kind does not exist on the builder.

use super::Target;
use super::kind::{self, Kind};
use crate::client::conn::ConnError;
use crate::client::scan::ScanRequest;
use crate::eventual::{HlcTimestamp, ReadContext, SessionToken, WriteLevel};
use crate::protocol::{Answer, Operation, Position, ReadLevel, Receipt};
use crate::strong::Versioned;
use crate::types::LogIndex;
use bytes::Bytes;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;

/// The future `.await` on a builder runs: `'static` and `Send`, so it may be spawned.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
/// let orders = cluster.client().strong("orders");
/// let put = tokio::spawn(orders.put("o-1", "paid").into_future());
/// put.await??;
/// # Ok(())
/// # }
/// ```
pub type Response<T> = Pin<Box<dyn Future<Output = Result<T, ConnError>> + Send + 'static>>;

/// A read's value and the receipt of the node that served it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
/// let orders = cluster.client().strong("orders");
/// use capdial::protocol::{ReadLevel, Served};
/// let read = orders.get("o-1").stale().await?;
/// assert_eq!(read.value, None);
/// assert_eq!(read.receipt.level, Served::Read(ReadLevel::Stale));
/// assert_eq!(read.receipt.node, cluster.nodes()[0].id);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value<T> {
    /// What was read: its type depends on the keyspace kind (see the handles).
    pub value: T,
    /// The level served, the node that served it and where that node stood.
    pub receipt: Receipt,
}

/// A strong write, committed by a majority at `revision`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
/// let orders = cluster.client().strong("orders");
/// let written = orders.put("o-1", "paid").await?;
/// let row = orders.get("o-1").await?.value.ok_or("written")?;
/// assert_eq!((row.create_revision, row.mod_revision), (written.revision, written.revision));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The log index of the write: the key's `mod_revision` from now on.
    pub revision: LogIndex,
    /// `Served::Committed`, the leader that answered and its position.
    pub receipt: Receipt,
}

/// A compare-and-set, applied or not, with the key as it is after it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
/// let orders = cluster.client().strong("orders");
/// let lost = orders.cas("o-1").expect(capdial::types::LogIndex(1)).put("x").await?;
/// assert!(!lost.succeeded, "o-1 is absent, not at revision 1");
/// assert!(lost.current.is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the key was as expected, so the write applied.
    pub succeeded: bool,
    /// The log index the cas was decided at.
    pub revision: LogIndex,
    /// The key after the cas (`None`: absent): on a failure, what to expect next time.
    pub current: Option<Versioned>,
    /// The leader that decided it and its position.
    pub receipt: Receipt,
}

/// How a transaction went: which branch ran, at which revision (every change of it has
/// this mod revision).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
/// let orders = cluster.client().strong("orders");
/// let made = orders.txn().if_absent("o-1").then_put("o-1", "paid").then_put("o-1/items", "2").await?;
/// assert!(made.succeeded);
/// let row = orders.get("o-1/items").await?.value.expect("written by the transaction");
/// assert_eq!(row.mod_revision, made.revision);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every compare held, so the `then` branch ran (else the `else` branch did).
    pub succeeded: bool,
    /// The log index the transaction applied at.
    pub revision: LogIndex,
    /// The leader that decided it and its position.
    pub receipt: Receipt,
}

/// A scan's keys in order, with one receipt per page (each page is a read of its own).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
/// let orders = cluster.client().strong("orders");
/// orders.put("o-1", "paid").await?;
/// let scanned = orders.scan("o-").await?;
/// assert_eq!(scanned.entries[0].1.value, "paid");
/// assert_eq!(scanned.receipts.len(), 1, "one page");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Each key with its value and revisions, in key order.
    pub entries: Vec<(Bytes, Versioned)>,
    /// One per page read.
    pub receipts: Vec<Receipt>,
    /// When the limit stopped the scan while more keys followed: the key to continue
    /// [`after`](Scan::after).
    pub resume_after: Option<Bytes>,
}

/// An eventual write, acknowledged at its level by `acks` replicas.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("views", KeyspaceMode::Eventual(ValueType::Counter)).await?;
/// let acked = cluster.client().counter("views").incr("home", 1).await?;
/// assert_eq!(acked.acks, 1);
/// assert!(acked.token().is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    /// Replicas known to have persisted the write, the node asked included.
    pub acks: u32,
    /// The level reached, the node that took the write, its session token and stamp.
    pub receipt: Receipt,
}

impl Acked {
    /// The write's session token: a read with [`EventualGet::session`] sees this write.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("carts", KeyspaceMode::Eventual(ValueType::Set)).await?;
    /// let carts = cluster.client().set("carts");
    /// let acked = carts.add("alice", ["book"]).await?;
    /// assert_eq!(acked.token().map(|token| token.node), Some(acked.receipt.node));
    /// # Ok(())
    /// # }
    /// ```
    pub fn token(&self) -> Option<SessionToken> {
        match &self.receipt.position {
            Position::Eventual { token, .. } => *token,
            Position::Raft { .. } | Position::Paxos { .. } => None,
        }
    }

    /// The write's hybrid-logical-clock stamp (`lww` keyspaces only).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("profiles", KeyspaceMode::Eventual(ValueType::Lww)).await?;
    /// let profiles = cluster.client().lww("profiles");
    /// let first = profiles.put("alice", "v1").await?.stamp();
    /// let second = profiles.put("alice", "v2").await?.stamp();
    /// assert!(second > first);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stamp(&self) -> Option<HlcTimestamp> {
        match &self.receipt.position {
            Position::Eventual { stamp, .. } => *stamp,
            Position::Raft { .. } | Position::Paxos { .. } => None,
        }
    }
}

/// An `mvreg` read: the concurrent values (sorted; empty if absent) and the context to write
/// back with, so the write replaces exactly these.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("docs", KeyspaceMode::Eventual(ValueType::MvReg)).await?;
/// let docs = cluster.client().mvreg("docs");
/// let empty = docs.get("readme").await?.value;
/// assert!(empty.values.is_empty());
/// docs.put("readme", "v1").context(empty.context).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Siblings {
    /// The concurrent values, sorted by bytes.
    pub values: Vec<Bytes>,
    /// What the read saw, for [`EventualWrite::context`].
    pub context: ReadContext,
}

/// One operation with its levels, not yet sent.
#[derive(Clone, Debug)]
struct Call {
    target: Target,
    operation: Operation,
    read: Option<ReadLevel>,
    write: Option<WriteLevel>,
    session: Option<SessionToken>,
    /// Ask this node only.
    endpoint: Option<String>,
}

impl Call {
    fn new(target: Target, operation: Operation) -> Call {
        Call {
            target,
            operation,
            read: None,
            write: None,
            session: None,
            endpoint: None,
        }
    }

    async fn send(self) -> Result<(Answer, Receipt), ConnError> {
        let Target { client, name } = self.target;
        let (operation, read, write, session) =
            (self.operation, self.read, self.write, self.session);
        match self.endpoint {
            Some(endpoint) => {
                client
                    .execute_at(&endpoint, &name, operation, read, write, session)
                    .await
            }
            None => client.execute(&name, operation, read, write, session).await,
        }
    }
}

fn mismatch(asked: &str, answer: &Answer) -> ConnError {
    ConnError::Protocol {
        reason: format!("{asked} was answered with {answer:?}"),
    }
}

/// Sends a builder's call on `.await` and takes the answer `pattern` matches; any other
/// answer is a protocol error.
macro_rules! answered_by {
    (
        impl[$($generics:tt)*] $builder:ty => $output:ty, $asked:literal,
        $pattern:pat => $value:expr
    ) => {
        impl<$($generics)*> IntoFuture for $builder {
            type Output = Result<$output, ConnError>;
            type IntoFuture = Response<$output>;

            fn into_future(self) -> Self::IntoFuture {
                Box::pin(async move {
                    match self.call.send().await? {
                        $pattern => Ok($value),
                        (answer, _) => Err(mismatch($asked, &answer)),
                    }
                })
            }
        }
    };
}

/// The `at` method every builder has, with its own example.
macro_rules! at {
    ($example:expr) => {
        /// Asks the node at `endpoint` (`host:port`) only: its refusal (not the leader,
        /// unavailable) comes back as it is instead of being followed or retried elsewhere.
        ///
        #[doc = $example]
        pub fn at(mut self, endpoint: impl Into<String>) -> Self {
            self.call.endpoint = Some(endpoint.into());
            self
        }
    };
}

/// A strong read's level calls, for [`StrongGet`] and [`Scan`].
macro_rules! strong_levels {
    ($builder:expr, $call:literal) => {
        /// Linearizable, through ReadIndex on the leader: the default.
        ///
        #[doc = concat!("```\n", $builder, "let read = orders.", $call, ".linearizable().await?;\n", "# Ok(()) }\n```")]
        pub fn linearizable(self) -> Self {
            self.level(ReadLevel::Linearizable)
        }

        /// On the leader's lease, without a round trip: linearizable unless clocks drift
        /// past the lease's margin.
        ///
        #[doc = concat!("```\n", $builder, "let read = orders.", $call, ".lease().await?;\n", "# Ok(()) }\n```")]
        pub fn lease(self) -> Self {
            self.level(ReadLevel::Lease)
        }

        /// On a follower, after it asked the leader for a read index: linearizable, and
        /// the leader does not serve the data.
        ///
        #[doc = concat!("```\n", $builder, "let read = orders.", $call, ".follower().await?;\n", "# Ok(()) }\n```")]
        pub fn follower(self) -> Self {
            self.level(ReadLevel::Follower)
        }

        /// Any replica's applied state, possibly behind; the receipt says how far it knows
        /// itself to be (`behind`). Served also on the minority side of a partition.
        ///
        #[doc = concat!("```\n", $builder, "let read = orders.", $call, ".stale().await?;\n", "# Ok(()) }\n```")]
        pub fn stale(self) -> Self {
            self.level(ReadLevel::Stale)
        }

        fn level(mut self, level: ReadLevel) -> Self {
            self.call.read = Some(level);
            self
        }
    };
}

/// Hidden setup of the strong builders' examples: a one-node cluster with `orders`.
macro_rules! strong_setup {
    () => {
        "# #[tokio::main(flavor = \"current_thread\")]\n\
         # async fn main() -> Result<(), Box<dyn std::error::Error>> {\n\
         # let cluster = capdial::LocalCluster::start(1).await?;\n\
         # cluster.create_keyspace(\"orders\", capdial::protocol::KeyspaceMode::Strong).await?;\n\
         let orders = cluster.client().strong(\"orders\");\n"
    };
}

/// A strong read of one key; `.await` gives its value and revisions (`None`: absent).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
/// use capdial::protocol::{ReadLevel, Served};
/// let orders = cluster.client().strong("orders");
/// orders.put("o-1", "paid").await?;
/// let read = orders.get("o-1").lease().await?;
/// assert_eq!(read.receipt.level, Served::Read(ReadLevel::Lease));
/// assert_eq!(read.value.expect("written").value, "paid");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct StrongGet {
    call: Call,
}

impl StrongGet {
    pub(super) fn new(target: Target, operation: Operation) -> StrongGet {
        StrongGet {
            call: Call::new(target, operation),
        }
    }

    strong_levels!(strong_setup!(), "get(\"o-1\")");
    at!(concat!(
        "```\n",
        strong_setup!(),
        "let n1 = cluster.endpoints()[0].clone();\n",
        "let read = orders.get(\"o-1\").stale().at(&n1).await?;\n",
        "assert_eq!(read.receipt.node, cluster.nodes()[0].id);\n",
        "# Ok(()) }\n```"
    ));
}

answered_by!(
    impl[] StrongGet => Value<Option<Versioned>>, "a strong get",
    (Answer::Strong(value), receipt) => Value { value, receipt }
);

/// A strong put or delete; `.await` gives the revision it committed at.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
/// use capdial::protocol::Served;
/// let orders = cluster.client().strong("orders");
/// let written = orders.put("o-1", "paid").await?;
/// assert_eq!(written.receipt.level, Served::Committed);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct StrongWrite {
    call: Call,
}

impl StrongWrite {
    pub(super) fn new(target: Target, operation: Operation) -> StrongWrite {
        StrongWrite {
            call: Call::new(target, operation),
        }
    }

    at!(concat!(
        "```\n",
        strong_setup!(),
        "let n1 = cluster.endpoints()[0].clone();\n",
        "// A one-node cluster: n1 leads, so it takes the write itself.\n",
        "orders.put(\"o-1\", \"paid\").at(&n1).await?;\n",
        "# Ok(()) }\n```"
    ));
}

answered_by!(
    impl[] StrongWrite => Written, "a strong write",
    (Answer::Written { revision }, receipt) => Written { revision, receipt }
);

/// A compare-and-set waiting for its condition: [`expect`](Self::expect) or
/// [`expect_absent`](Self::expect_absent).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
/// let orders = cluster.client().strong("orders");
/// let created = orders.cas("o-1").expect_absent().put("paid").await?;
/// assert!(created.succeeded);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a cas needs its condition and its write"]
pub struct CasStart {
    target: Target,
    key: Bytes,
}

impl CasStart {
    pub(super) fn new(target: Target, key: Bytes) -> CasStart {
        CasStart { target, key }
    }

    /// Applies only if the key's latest change is at `revision` (its `mod_revision`).
    ///
    /// ```
    #[doc = strong_setup!()]
    /// let rev = orders.put("o-1", "paid").await?.revision;
    /// let shipped = orders.cas("o-1").expect(rev).put("shipped").await?;
    /// assert!(shipped.succeeded);
    /// let stale = orders.cas("o-1").expect(rev).put("lost").await?;
    /// assert!(!stale.succeeded);
    /// assert_eq!(stale.current.expect("present").value, "shipped");
    /// # Ok(()) }
    /// ```
    pub fn expect(self, revision: LogIndex) -> CasExpect {
        self.condition(Some(revision))
    }

    /// Applies only if the key is absent.
    ///
    /// ```
    #[doc = strong_setup!()]
    /// assert!(orders.cas("o-7").expect_absent().put("paid").await?.succeeded);
    /// # Ok(()) }
    /// ```
    pub fn expect_absent(self) -> CasExpect {
        self.condition(None)
    }

    fn condition(self, expected: Option<LogIndex>) -> CasExpect {
        CasExpect {
            target: self.target,
            key: self.key,
            expected,
        }
    }
}

/// A compare-and-set with its condition, waiting for its write: [`put`](Self::put) or
/// [`delete`](Self::delete).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
/// let orders = cluster.client().strong("orders");
/// let unless_taken = orders.cas("o-1").expect_absent();
/// assert!(unless_taken.put("paid").await?.succeeded);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a cas needs its write"]
pub struct CasExpect {
    target: Target,
    key: Bytes,
    expected: Option<LogIndex>,
}

impl CasExpect {
    /// Sets the key to `value` if the condition holds.
    ///
    /// ```
    #[doc = strong_setup!()]
    /// let rev = orders.put("o-1", "paid").await?.revision;
    /// let outcome = orders.cas("o-1").expect(rev).put("shipped").await?;
    /// assert!(outcome.succeeded);
    /// # Ok(()) }
    /// ```
    pub fn put(self, value: impl super::IntoBytes) -> CasWrite {
        self.write(Some(value.into_bytes()))
    }

    /// Deletes the key if the condition holds.
    ///
    /// ```
    #[doc = strong_setup!()]
    /// let rev = orders.put("o-1", "paid").await?.revision;
    /// assert!(orders.cas("o-1").expect(rev).delete().await?.succeeded);
    /// assert!(orders.get("o-1").await?.value.is_none());
    /// # Ok(()) }
    /// ```
    pub fn delete(self) -> CasWrite {
        self.write(None)
    }

    fn write(self, value: Option<Bytes>) -> CasWrite {
        let operation = Operation::Cas {
            key: self.key,
            expected: self.expected,
            value,
        };
        CasWrite {
            call: Call::new(self.target, operation),
        }
    }
}

/// A complete compare-and-set; `.await` says whether it applied.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
/// let orders = cluster.client().strong("orders");
/// let cas = orders.cas("o-1").expect_absent().put("paid");
/// let outcome = cas.await?;
/// assert!(outcome.succeeded);
/// assert_eq!(outcome.current.expect("written").mod_revision, outcome.revision);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct CasWrite {
    call: Call,
}

impl CasWrite {
    at!(concat!(
        "```\n",
        strong_setup!(),
        "let n1 = cluster.endpoints()[0].clone();\n",
        "orders.cas(\"o-1\").expect_absent().put(\"paid\").at(&n1).await?;\n",
        "# Ok(()) }\n```"
    ));
}

answered_by!(
    impl[] CasWrite => CasOutcome, "a cas",
    (Answer::Cas { succeeded, revision, current }, receipt) => CasOutcome {
        succeeded,
        revision,
        current,
        receipt,
    }
);

/// A transaction on a strong keyspace, atomic in one log entry: compares (`if_*`), then the
/// changes to make if every compare holds (`then_*`), else others (`else_*`); `.await`
/// sends it. Like etcd's `Txn`: every change lands at one revision, and a retry applies once.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("shop", capdial::protocol::KeyspaceMode::Strong).await?;
/// let shop = cluster.client().strong("shop");
/// let stock = shop.put("stock/pen", "5").await?.revision;
/// // Sell one pen and record the order, only if nobody sold one since the read.
/// let sold = shop
///     .txn()
///     .if_revision("stock/pen", stock)
///     .then_put("stock/pen", "4")
///     .then_put("order/o-9", "pen")
///     .else_put("audit/o-9", "retry")
///     .await?;
/// assert!(sold.succeeded);
/// let again = shop.txn().if_revision("stock/pen", stock).then_put("stock/pen", "3").await?;
/// assert!(!again.succeeded, "the stock changed at revision {}", sold.revision.0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct Txn {
    /// The keyspace and pinned node; its operation is filled in when sent.
    call: Call,
    compares: Vec<crate::strong::Compare>,
    success: Vec<crate::strong::TxnOp>,
    failure: Vec<crate::strong::TxnOp>,
}

impl Txn {
    pub(super) fn new(target: Target) -> Txn {
        let placeholder = Operation::Get { key: Bytes::new() };
        Txn {
            call: Call::new(target, placeholder),
            compares: Vec::new(),
            success: Vec::new(),
            failure: Vec::new(),
        }
    }

    /// Holds if `key`'s mod revision is `revision`.
    pub fn if_revision(mut self, key: impl super::IntoBytes, revision: LogIndex) -> Self {
        let (key, revision) = (key.into_bytes(), Some(revision));
        self.compares
            .push(crate::strong::Compare::Revision { key, revision });
        self
    }

    /// Holds if `key` is absent.
    pub fn if_absent(mut self, key: impl super::IntoBytes) -> Self {
        let key = key.into_bytes();
        self.compares.push(crate::strong::Compare::Revision {
            key,
            revision: None,
        });
        self
    }

    /// Holds if `key`'s value is `value`.
    pub fn if_value(mut self, key: impl super::IntoBytes, value: impl super::IntoBytes) -> Self {
        let (key, value) = (key.into_bytes(), Some(value.into_bytes()));
        self.compares
            .push(crate::strong::Compare::Value { key, value });
        self
    }

    /// If every compare holds: set `key` to `value`.
    pub fn then_put(mut self, key: impl super::IntoBytes, value: impl super::IntoBytes) -> Self {
        self.success.push(txn_put(key, value));
        self
    }

    /// If every compare holds: delete `key`.
    pub fn then_delete(mut self, key: impl super::IntoBytes) -> Self {
        self.success.push(txn_delete(key));
        self
    }

    /// If a compare fails: set `key` to `value`.
    pub fn else_put(mut self, key: impl super::IntoBytes, value: impl super::IntoBytes) -> Self {
        self.failure.push(txn_put(key, value));
        self
    }

    /// If a compare fails: delete `key`.
    pub fn else_delete(mut self, key: impl super::IntoBytes) -> Self {
        self.failure.push(txn_delete(key));
        self
    }

    at!(concat!(
        "```\n",
        strong_setup!(),
        "let n1 = cluster.endpoints()[0].clone();\n",
        "orders.txn().then_put(\"o-1\", \"paid\").at(&n1).await?;\n",
        "# Ok(()) }\n```"
    ));
}

fn txn_put(key: impl super::IntoBytes, value: impl super::IntoBytes) -> crate::strong::TxnOp {
    let (key, value) = (key.into_bytes(), value.into_bytes());
    crate::strong::TxnOp::Put { key, value }
}

fn txn_delete(key: impl super::IntoBytes) -> crate::strong::TxnOp {
    crate::strong::TxnOp::Delete {
        key: key.into_bytes(),
    }
}

impl IntoFuture for Txn {
    type Output = Result<TxnOutcome, ConnError>;
    type IntoFuture = Response<TxnOutcome>;

    fn into_future(mut self) -> Self::IntoFuture {
        self.call.operation = Operation::Txn {
            compares: self.compares,
            success: self.success,
            failure: self.failure,
        };
        Box::pin(async move {
            match self.call.send().await? {
                (
                    Answer::Txn {
                        succeeded,
                        revision,
                    },
                    receipt,
                ) => Ok(TxnOutcome {
                    succeeded,
                    revision,
                    receipt,
                }),
                (answer, _) => Err(mismatch("a transaction", &answer)),
            }
        })
    }
}

/// A prefix scan of a strong keyspace; `.await` pages through every key (or up to
/// [`limit`](Self::limit)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
/// let orders = cluster.client().strong("orders");
/// orders.put("o-1", "paid").await?;
/// orders.put("o-2", "paid").await?;
/// let all = orders.scan("o-").await?;
/// assert_eq!(all.entries.len(), 2);
/// assert_eq!(all.resume_after, None);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct Scan {
    /// The scan's keyspace, levels and pinned node; its operation is a placeholder.
    call: Call,
    prefix: Bytes,
    after: Option<Bytes>,
    limit: Option<u64>,
}

impl Scan {
    pub(super) fn new(target: Target, prefix: Bytes) -> Scan {
        let placeholder = Operation::Get { key: Bytes::new() };
        Scan {
            call: Call::new(target, placeholder),
            prefix,
            after: None,
            limit: None,
        }
    }

    /// Returns at most `limit` keys; [`Scanned::resume_after`] then says where to go on.
    ///
    /// ```
    #[doc = strong_setup!()]
    /// for id in ["o-1", "o-2", "o-3"] {
    ///     orders.put(id, "paid").await?;
    /// }
    /// let first = orders.scan("o-").limit(2).await?;
    /// assert_eq!(first.entries.len(), 2);
    /// assert_eq!(first.resume_after.as_deref(), Some(&b"o-2"[..]));
    /// # Ok(()) }
    /// ```
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Starts after `key` (the `resume_after` of an earlier scan) instead of at the first
    /// key with the prefix.
    ///
    /// ```
    #[doc = strong_setup!()]
    /// for id in ["o-1", "o-2", "o-3"] {
    ///     orders.put(id, "paid").await?;
    /// }
    /// let rest = orders.scan("o-").after("o-2").await?;
    /// assert_eq!(rest.entries.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn after(mut self, key: impl super::IntoBytes) -> Self {
        self.after = Some(key.into_bytes());
        self
    }

    strong_levels!(strong_setup!(), "scan(\"o-\")");
    at!(concat!(
        "```\n",
        strong_setup!(),
        "let n1 = cluster.endpoints()[0].clone();\n",
        "let scanned = orders.scan(\"o-\").stale().at(&n1).await?;\n",
        "assert!(scanned.entries.is_empty());\n",
        "# Ok(()) }\n```"
    ));
}

impl IntoFuture for Scan {
    type Output = Result<Scanned, ConnError>;
    type IntoFuture = Response<Scanned>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let Target { client, name } = self.call.target;
            let request = ScanRequest {
                keyspace: name.to_string(),
                prefix: self.prefix,
                after: self.after,
                limit: self.limit,
                read: self.call.read,
            };
            let mut scanner = match &self.call.endpoint {
                Some(endpoint) => client.scanner_at(endpoint, request),
                None => client.scanner(request),
            };
            let mut scanned = Scanned {
                entries: Vec::new(),
                receipts: Vec::new(),
                resume_after: None,
            };
            while let Some(page) = scanner.next_page().await? {
                scanned.entries.extend(page.entries);
                scanned.receipts.push(page.receipt);
            }
            scanned.resume_after = scanner.resume_after().cloned();
            Ok(scanned)
        })
    }
}

/// Hidden setup of the eventual builders' examples: a one-node cluster with a `set`
/// keyspace `carts`.
macro_rules! set_setup {
    () => {
        "# #[tokio::main(flavor = \"current_thread\")]\n\
         # async fn main() -> Result<(), Box<dyn std::error::Error>> {\n\
         # use capdial::{eventual::ValueType, protocol::KeyspaceMode};\n\
         # let cluster = capdial::LocalCluster::start(1).await?;\n\
         # cluster.create_keyspace(\"carts\", KeyspaceMode::Eventual(ValueType::Set)).await?;\n\
         let carts = cluster.client().set(\"carts\");\n"
    };
}

/// A read of one key of an eventual keyspace of kind `K`; `.await` gives its value.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("carts", KeyspaceMode::Eventual(ValueType::Set)).await?;
/// use capdial::protocol::{ReadLevel, Served};
/// let carts = cluster.client().set("carts");
/// carts.add("alice", ["book"]).await?;
/// let read = carts.members("alice").quorum().await?;
/// assert_eq!(read.value, ["book"]);
/// assert_eq!(read.receipt.level, Served::Read(ReadLevel::Quorum));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct EventualGet<K: Kind> {
    call: Call,
    kind: PhantomData<fn() -> K>,
}

impl<K: Kind> EventualGet<K> {
    pub(super) fn new(target: Target, operation: Operation) -> Self {
        EventualGet {
            call: Call::new(target, operation),
            kind: PhantomData,
        }
    }

    /// The state of the node asked: the default.
    ///
    /// ```
    #[doc = set_setup!()]
    /// let read = carts.members("alice").local().await?;
    /// assert!(read.value.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn local(mut self) -> Self {
        self.call.read = Some(ReadLevel::Local);
        self.call.session = None;
        self
    }

    /// Read-your-writes: served once the node asked has seen the write `token` names (a
    /// write's [`Acked::token`]); a node that has not in time answers `SessionNotSeen`.
    ///
    /// ```
    #[doc = set_setup!()]
    /// let token = carts.add("alice", ["book"]).await?.token().expect("a token");
    /// let read = carts.members("alice").session(token).await?;
    /// assert_eq!(read.value, ["book"]);
    /// # Ok(()) }
    /// ```
    pub fn session(mut self, token: SessionToken) -> Self {
        self.call.read = Some(ReadLevel::Session);
        self.call.session = Some(token);
        self
    }

    /// The merge of a majority of replicas' states; stale replicas are repaired.
    ///
    /// ```
    #[doc = set_setup!()]
    /// let read = carts.members("alice").quorum().await?;
    /// assert!(read.value.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn quorum(mut self) -> Self {
        self.call.read = Some(ReadLevel::Quorum);
        self.call.session = None;
        self
    }

    at!(concat!(
        "```\n",
        set_setup!(),
        "let n1 = cluster.endpoints()[0].clone();\n",
        "let read = carts.members(\"alice\").at(&n1).await?;\n",
        "assert_eq!(read.receipt.node, cluster.nodes()[0].id);\n",
        "# Ok(()) }\n```"
    ));
}

impl<K: Kind> IntoFuture for EventualGet<K> {
    type Output = Result<Value<K::Value>, ConnError>;
    type IntoFuture = Response<Value<K::Value>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let (answer, receipt) = self.call.send().await?;
            let Answer::Eventual(read) = answer else {
                return Err(mismatch("an eventual get", &answer));
            };
            let described = format!("{read:?}");
            match K::decode(read) {
                Some(value) => Ok(Value { value, receipt }),
                None => Err(ConnError::Protocol {
                    reason: format!(
                        "a get of a {:?} keyspace was answered with {described}",
                        K::VALUE_TYPE
                    ),
                }),
            }
        })
    }
}

/// A write to an eventual keyspace of kind `K`; `.await` gives its acknowledgement.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("carts", KeyspaceMode::Eventual(ValueType::Set)).await?;
/// use capdial::{eventual::WriteLevel, protocol::Served};
/// let carts = cluster.client().set("carts");
/// let acked = carts.add("alice", ["book"]).all().await?;
/// assert_eq!(acked.receipt.level, Served::Write(WriteLevel::All));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a request does nothing until it is awaited"]
pub struct EventualWrite<K: Kind> {
    call: Call,
    kind: PhantomData<fn() -> K>,
}

impl<K: Kind> EventualWrite<K> {
    pub(super) fn new(target: Target, operation: Operation) -> Self {
        EventualWrite {
            call: Call::new(target, operation),
            kind: PhantomData,
        }
    }

    /// Acknowledged once the node asked persisted it: the default.
    ///
    /// ```
    #[doc = set_setup!()]
    /// assert_eq!(carts.add("alice", ["book"]).local().await?.acks, 1);
    /// # Ok(()) }
    /// ```
    pub fn local(self) -> Self {
        self.level(WriteLevel::Local)
    }

    /// Acknowledged once a majority of members persisted it. If too few do in time, the
    /// write still stands on the node asked and spreads; the error says so.
    ///
    /// ```
    #[doc = set_setup!()]
    /// carts.add("alice", ["book"]).quorum().await?;
    /// # Ok(()) }
    /// ```
    pub fn quorum(self) -> Self {
        self.level(WriteLevel::Quorum)
    }

    /// Acknowledged once every member persisted it.
    ///
    /// ```
    #[doc = set_setup!()]
    /// carts.add("alice", ["book"]).all().await?;
    /// # Ok(()) }
    /// ```
    pub fn all(self) -> Self {
        self.level(WriteLevel::All)
    }

    fn level(mut self, level: WriteLevel) -> Self {
        self.call.write = Some(level);
        self
    }

    at!(concat!(
        "```\n",
        set_setup!(),
        "let n1 = cluster.endpoints()[0].clone();\n",
        "let acked = carts.add(\"alice\", [\"book\"]).at(&n1).await?;\n",
        "assert_eq!(acked.receipt.node, cluster.nodes()[0].id);\n",
        "# Ok(()) }\n```"
    ));
}

impl EventualWrite<kind::MvReg> {
    /// Writes over exactly the siblings an earlier read returned (its
    /// [`Siblings::context`]) instead of beside them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("docs", KeyspaceMode::Eventual(ValueType::MvReg)).await?;
    /// let docs = cluster.client().mvreg("docs");
    /// docs.put("readme", "a").await?;
    /// docs.put("readme", "b").await?; // blind: with one node it replaces "a" anyway
    /// let read = docs.get("readme").await?;
    /// let merged = read.value.values.concat();
    /// docs.put("readme", merged).context(read.value.context).await?;
    /// assert_eq!(docs.get("readme").await?.value.values.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn context(mut self, context: ReadContext) -> Self {
        match &mut self.call.operation {
            Operation::Put { context: slot, .. } | Operation::Delete { context: slot, .. } => {
                *slot = Some(context);
            }
            // An mvreg handle makes only puts and deletes.
            _ => {}
        }
        self
    }
}

answered_by!(
    impl[K: Kind] EventualWrite<K> => Acked, "an eventual write",
    (Answer::Acknowledged { acks }, receipt) => Acked { acks, receipt }
);
