//! Typed keyspace handles: the client API for applications.
//!
//! A handle names one keyspace and offers only the operations of its kind, so asking a
//! counter for a `cas` or a strong keyspace for a set member does not compile. Each
//! operation returns a request builder: the consistency level is a call on it, with the
//! keyspace's default when none is made, and `.await` sends it (the builders implement
//! [`IntoFuture`](std::future::IntoFuture)). Every answer keeps the [`Receipt`] of the node
//! that served it.
//!
//! ```text
//! client.strong("orders") ── .get("o-1") ── .lease() ── .await ──▶ Value { value, receipt }
//!   handle (no I/O)           builder        level        Client::execute
//! ```
//!
//! | handle | operations | read levels | write levels |
//! |---|---|---|---|
//! | [`StrongKeyspace`] | put, get, delete, cas, scan | linearizable (default), lease, follower, stale | always committed by a majority |
//! | [`LwwKeyspace`] | put, get, delete | local (default), session, quorum | local (default), quorum, all |
//! | [`MvRegKeyspace`] | put (with a read's context), get, delete | as lww | as lww |
//! | [`CounterKeyspace`] | incr, decr, get | as lww | as lww |
//! | [`SetKeyspace`] | add, remove, members | as lww | as lww |
//!
//! A wrong operation is a compile error, not a runtime one:
//!
//! ```compile_fail
//! # fn wrong(db: capdial::Client) {
//! let views = db.counter("views");
//! let _ = views.cas("home"); // a counter has no compare-and-set
//! # }
//! ```
//!
//! ```compile_fail
//! # fn wrong(db: capdial::Client) {
//! let orders = db.strong("orders");
//! let _ = orders.put("o-1", "paid").quorum(); // strong writes take no write level
//! # }
//! ```
//!
//! The plain constructors ([`Client::strong`], ...) do no I/O and check nothing: a handle of
//! the wrong kind meets the node's `WrongType` on its first request. The `open_*`
//! constructors ask the cluster's catalog once and refuse with [`OpenError`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use capdial::protocol::KeyspaceMode;
//! use capdial::eventual::ValueType;
//! let cluster = capdial::LocalCluster::start(1).await?;
//! cluster.create_keyspace("orders", KeyspaceMode::Strong).await?;
//! cluster.create_keyspace("carts", KeyspaceMode::Eventual(ValueType::Set)).await?;
//! cluster.create_keyspace("views", KeyspaceMode::Eventual(ValueType::Counter)).await?;
//! let db = cluster.client();
//!
//! let orders = db.open_strong("orders").await?;
//! let rev = orders.put("o-1", "paid").await?.revision;
//! let row = orders.get("o-1").lease().await?;
//! assert_eq!(row.value.map(|row| row.mod_revision), Some(rev));
//! let shipped = orders.cas("o-1").expect(rev).put("shipped").await?;
//! assert!(shipped.succeeded);
//!
//! let carts = db.set("carts");
//! carts.add("alice", ["book", "pen"]).quorum().await?;
//! assert_eq!(carts.members("alice").await?.value, ["book", "pen"]);
//!
//! let views = db.counter("views");
//! views.incr("home", 1).await?;
//! assert_eq!(views.get("home").await?.value, 1);
//! # Ok(())
//! # }
//! ```

mod paxos;
mod request;

pub use paxos::PaxosKeyspace;
pub use request::{
    Acked, CasExpect, CasOutcome, CasStart, CasWrite, EventualGet, EventualWrite, Response, Scan,
    Scanned, Siblings, StrongGet, StrongWrite, Txn, TxnOutcome, Value, Written,
};

use super::conn::{Client, ConnError};
use super::watch::Watch;
use crate::protocol::admin::{AdminAnswer, AdminRequest};
use crate::protocol::{KeyspaceMode, Operation};
use bytes::Bytes;
use std::marker::PhantomData;
use std::sync::Arc;

/// Bytes for a key, a value or a set member: `&str`, `String`, `&[u8]`, `Vec<u8>`, `[u8; N]`
/// and [`Bytes`]. Owned ones move without a copy; borrowed ones are copied.
///
/// ```
/// use capdial::client::typed::IntoBytes;
/// let key = format!("order-{}", 7);
/// assert_eq!(IntoBytes::into_bytes(&key), "order-7");
/// assert_eq!(IntoBytes::into_bytes(key), "order-7"); // moved, not copied
/// ```
pub trait IntoBytes {
    /// The bytes.
    ///
    /// ```
    /// use capdial::client::typed::IntoBytes;
    /// assert_eq!(IntoBytes::into_bytes("o-1"), IntoBytes::into_bytes(b"o-1".to_vec()));
    /// ```
    fn into_bytes(self) -> Bytes;
}

impl IntoBytes for Bytes {
    fn into_bytes(self) -> Bytes {
        self
    }
}

impl IntoBytes for &Bytes {
    fn into_bytes(self) -> Bytes {
        self.clone()
    }
}

impl IntoBytes for String {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoBytes for &String {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl IntoBytes for &str {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

impl IntoBytes for Vec<u8> {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoBytes for &[u8] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl<const N: usize> IntoBytes for [u8; N] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(&self)
    }
}

impl<const N: usize> IntoBytes for &[u8; N] {
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

/// Why a checked `open_*` refused a keyspace.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use capdial::client::typed::OpenError;
/// let cluster = capdial::LocalCluster::start(1).await?;
/// match cluster.client().open_counter("views").await {
///     Err(OpenError::NoSuchKeyspace { keyspace }) => assert_eq!(keyspace, "views"),
///     other => panic!("views was never created: {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The keyspace exists in another mode or with another value type.
    #[error("keyspace {keyspace} is {actual}, not {expected}")]
    WrongKind {
        keyspace: String,
        expected: KeyspaceMode,
        actual: KeyspaceMode,
    },
    /// The node asked has no such keyspace in its catalog (a keyspace created a moment ago
    /// may not have reached it yet).
    #[error("no keyspace named {keyspace:?}")]
    NoSuchKeyspace { keyspace: String },
    /// The catalog could not be asked.
    #[error("listing the keyspaces")]
    Conn(#[from] ConnError),
}

/// The kinds of eventual keyspace, as type parameters of [`EventualKeyspace`]. They have no
/// values: they only name a kind.
///
/// ```
/// use capdial::client::typed::kind::{Counter, Kind};
/// use capdial::eventual::ValueType;
/// assert_eq!(Counter::VALUE_TYPE, ValueType::Counter);
/// ```
pub mod kind {
    use super::Siblings;
    use crate::eventual::{ReadValue, ValueType};
    use bytes::Bytes;

    /// Last-writer-wins bytes.
    #[derive(Clone, Copy, Debug)]
    pub enum Lww {}
    /// Multi-value register: concurrent writes come back as siblings.
    #[derive(Clone, Copy, Debug)]
    pub enum MvReg {}
    /// PN-counter.
    #[derive(Clone, Copy, Debug)]
    pub enum Counter {}
    /// Observed-remove set.
    #[derive(Clone, Copy, Debug)]
    pub enum Set {}

    pub(super) mod sealed {
        pub trait Sealed {}
    }

    /// An eventual keyspace's value type, in the type system.
    pub trait Kind: sealed::Sealed + std::fmt::Debug + Clone + Send + 'static {
        /// The value type, as the catalog names it.
        const VALUE_TYPE: ValueType;
        /// What a read of one key returns.
        type Value: Send + 'static;
        /// The value in an engine's answer to a read, if the answer is of this kind.
        fn decode(read: ReadValue) -> Option<Self::Value>;
    }

    macro_rules! kind {
        ($name:ident, $value_type:expr, $value:ty, $pattern:pat => $decoded:expr) => {
            impl sealed::Sealed for $name {}
            impl Kind for $name {
                const VALUE_TYPE: ValueType = $value_type;
                type Value = $value;
                fn decode(read: ReadValue) -> Option<$value> {
                    match read {
                        $pattern => Some($decoded),
                        _ => None,
                    }
                }
            }
        };
    }

    kind!(Lww, ValueType::Lww, Option<Bytes>, ReadValue::Lww { value, .. } => value);
    kind!(MvReg, ValueType::MvReg, Siblings, ReadValue::MvReg { siblings, context } => Siblings {
        values: siblings,
        context,
    });
    kind!(Counter, ValueType::Counter, i64, ReadValue::Counter(sum) => sum);
    kind!(Set, ValueType::Set, Vec<Bytes>, ReadValue::Set { members, .. } => members);

    /// The kinds that hold one value per key, set with `put` and `delete`: `lww`, `mvreg`.
    pub trait Register: Kind {}
    impl Register for Lww {}
    impl Register for MvReg {}
}

use kind::Kind;

/// A keyspace's client and name, shared by its handle and the requests it makes.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    client: Client,
    name: Arc<str>,
}

/// A strong keyspace: Raft, linearizable. Cheap to clone; made by [`Client::strong`] or
/// [`Client::open_strong`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
/// # let db = cluster.client();
/// let orders = db.strong("orders");
/// let written = orders.put("o-1", "paid").await?;
/// let row = orders.get("o-1").await?.value.expect("just written");
/// assert_eq!(row.value, "paid");
/// assert_eq!(row.mod_revision, written.revision);
/// orders.delete("o-1").await?;
/// assert!(orders.get("o-1").await?.value.is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct StrongKeyspace {
    target: Target,
}

/// An eventual keyspace of kind `K` (see [`kind`]): CRDT values, writes accepted on every
/// node. Use the aliases: [`LwwKeyspace`], [`MvRegKeyspace`], [`CounterKeyspace`],
/// [`SetKeyspace`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("profiles", KeyspaceMode::Eventual(ValueType::Lww)).await?;
/// # let db = cluster.client();
/// let profiles = db.lww("profiles");
/// let acked = profiles.put("alice", "dark mode").quorum().await?;
/// let token = acked.token().expect("a write returns its session token");
/// let read = profiles.get("alice").session(token).await?;
/// assert_eq!(read.value.as_deref(), Some(&b"dark mode"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct EventualKeyspace<K: Kind> {
    target: Target,
    kind: PhantomData<fn() -> K>,
}

/// An eventual `lww` keyspace: last-writer-wins bytes. Its reads give `Option<Bytes>`.
pub type LwwKeyspace = EventualKeyspace<kind::Lww>;
/// An eventual `mvreg` keyspace: concurrent writes come back as siblings. Its reads give
/// [`Siblings`].
pub type MvRegKeyspace = EventualKeyspace<kind::MvReg>;
/// An eventual `counter` keyspace: a PN-counter per key. Its reads give the sum, an `i64`.
pub type CounterKeyspace = EventualKeyspace<kind::Counter>;
/// An eventual `set` keyspace: an observed-remove set per key. Its reads give the members,
/// sorted.
pub type SetKeyspace = EventualKeyspace<kind::Set>;

impl Client {
    fn target(&self, name: &str) -> Target {
        Target {
            client: self.clone(),
            name: Arc::from(name),
        }
    }

    /// A handle for strong keyspace `name`, unchecked: no I/O.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
    /// let orders = cluster.client().strong("orders");
    /// assert_eq!(orders.name(), "orders");
    /// orders.put("o-1", "paid").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn strong(&self, name: &str) -> StrongKeyspace {
        StrongKeyspace {
            target: self.target(name),
        }
    }

    fn eventual<K: Kind>(&self, name: &str) -> EventualKeyspace<K> {
        EventualKeyspace {
            target: self.target(name),
            kind: PhantomData,
        }
    }

    /// A handle for eventual `lww` keyspace `name`, unchecked: no I/O.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("profiles", KeyspaceMode::Eventual(ValueType::Lww)).await?;
    /// let profiles = cluster.client().lww("profiles");
    /// profiles.put("alice", "dark mode").await?;
    /// assert_eq!(profiles.get("alice").await?.value.as_deref(), Some(&b"dark mode"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn lww(&self, name: &str) -> LwwKeyspace {
        self.eventual(name)
    }

    /// A handle for eventual `mvreg` keyspace `name`, unchecked: no I/O.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("docs", KeyspaceMode::Eventual(ValueType::MvReg)).await?;
    /// let docs = cluster.client().mvreg("docs");
    /// docs.put("readme", "v1").await?;
    /// assert_eq!(docs.get("readme").await?.value.values, ["v1"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn mvreg(&self, name: &str) -> MvRegKeyspace {
        self.eventual(name)
    }

    /// A handle for eventual `counter` keyspace `name`, unchecked: no I/O.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("views", KeyspaceMode::Eventual(ValueType::Counter)).await?;
    /// let views = cluster.client().counter("views");
    /// views.incr("home", 3).await?;
    /// assert_eq!(views.get("home").await?.value, 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn counter(&self, name: &str) -> CounterKeyspace {
        self.eventual(name)
    }

    /// A handle for eventual `set` keyspace `name`, unchecked: no I/O.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("carts", KeyspaceMode::Eventual(ValueType::Set)).await?;
    /// let carts = cluster.client().set("carts");
    /// carts.add("alice", ["book"]).await?;
    /// assert_eq!(carts.members("alice").await?.value, ["book"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set(&self, name: &str) -> SetKeyspace {
        self.eventual(name)
    }

    /// A handle for strong keyspace `name`, checked once against the catalog of the node
    /// asked: [`OpenError::WrongKind`] or [`OpenError::NoSuchKeyspace`] otherwise.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use capdial::client::typed::OpenError;
    /// use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// let cluster = capdial::LocalCluster::start(1).await?;
    /// cluster.create_keyspace("carts", KeyspaceMode::Eventual(ValueType::Set)).await?;
    /// let refused = cluster.client().open_strong("carts").await;
    /// assert!(matches!(refused, Err(OpenError::WrongKind { actual: KeyspaceMode::Eventual(ValueType::Set), .. })));
    /// let missing = cluster.client().open_strong("nowhere").await;
    /// assert!(matches!(missing, Err(OpenError::NoSuchKeyspace { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open_strong(&self, name: &str) -> Result<StrongKeyspace, OpenError> {
        self.check_kind(name, KeyspaceMode::Strong).await?;
        Ok(self.strong(name))
    }

    async fn open_eventual<K: Kind>(&self, name: &str) -> Result<EventualKeyspace<K>, OpenError> {
        self.check_kind(name, KeyspaceMode::Eventual(K::VALUE_TYPE))
            .await?;
        Ok(self.eventual(name))
    }

    /// [`Client::lww`], checked once like [`Client::open_strong`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("profiles", KeyspaceMode::Eventual(ValueType::Lww)).await?;
    /// let profiles = cluster.client().open_lww("profiles").await?;
    /// assert!(cluster.client().open_mvreg("profiles").await.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open_lww(&self, name: &str) -> Result<LwwKeyspace, OpenError> {
        self.open_eventual(name).await
    }

    /// [`Client::mvreg`], checked once like [`Client::open_strong`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("docs", KeyspaceMode::Eventual(ValueType::MvReg)).await?;
    /// let docs = cluster.client().open_mvreg("docs").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open_mvreg(&self, name: &str) -> Result<MvRegKeyspace, OpenError> {
        self.open_eventual(name).await
    }

    /// [`Client::counter`], checked once like [`Client::open_strong`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("views", KeyspaceMode::Eventual(ValueType::Counter)).await?;
    /// let views = cluster.client().open_counter("views").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open_counter(&self, name: &str) -> Result<CounterKeyspace, OpenError> {
        self.open_eventual(name).await
    }

    /// [`Client::set`], checked once like [`Client::open_strong`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("carts", KeyspaceMode::Eventual(ValueType::Set)).await?;
    /// let carts = cluster.client().open_set("carts").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open_set(&self, name: &str) -> Result<SetKeyspace, OpenError> {
        self.open_eventual(name).await
    }

    async fn check_kind(&self, name: &str, expected: KeyspaceMode) -> Result<(), OpenError> {
        match keyspace_mode(self, name).await? {
            Some(actual) if actual == expected => Ok(()),
            Some(actual) => Err(OpenError::WrongKind {
                keyspace: name.to_string(),
                expected,
                actual,
            }),
            None => Err(OpenError::NoSuchKeyspace {
                keyspace: name.to_string(),
            }),
        }
    }
}

/// The mode of keyspace `name` in the catalog of the node asked (`None`: no such keyspace).
pub(crate) async fn keyspace_mode(
    client: &Client,
    name: &str,
) -> Result<Option<KeyspaceMode>, ConnError> {
    let AdminAnswer::Keyspaces(keyspaces) = client.admin(AdminRequest::ListKeyspaces).await? else {
        return Err(ConnError::Protocol {
            reason: "a keyspace list was answered with something else".to_string(),
        });
    };
    Ok(keyspaces
        .into_iter()
        .find(|keyspace| keyspace.name == name)
        .map(|keyspace| keyspace.mode))
}

impl StrongKeyspace {
    /// The keyspace's name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// assert_eq!(cluster.client().strong("orders").name(), "orders");
    /// # Ok(())
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// Sets `key` to `value`, committed by a majority: [`Written`] with its revision.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
    /// let orders = cluster.client().strong("orders");
    /// let first = orders.put("o-1", "paid").await?;
    /// let second = orders.put("o-1", "shipped").await?;
    /// assert!(second.revision > first.revision);
    /// # Ok(())
    /// # }
    /// ```
    pub fn put(&self, key: impl IntoBytes, value: impl IntoBytes) -> StrongWrite {
        StrongWrite::new(self.target.clone(), put(key, value))
    }

    /// Reads `key` (linearizable unless a level call says otherwise): its value and
    /// revisions, `None` if absent.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
    /// let orders = cluster.client().strong("orders");
    /// assert!(orders.get("o-9").await?.value.is_none());
    /// orders.put("o-9", "paid").await?;
    /// let row = orders.get("o-9").lease().await?;
    /// assert_eq!(row.value.expect("written").value, "paid");
    /// # Ok(())
    /// # }
    /// ```
    pub fn get(&self, key: impl IntoBytes) -> StrongGet {
        StrongGet::new(
            self.target.clone(),
            Operation::Get {
                key: key.into_bytes(),
            },
        )
    }

    /// Deletes `key` (deleting an absent key is not an error).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
    /// let orders = cluster.client().strong("orders");
    /// orders.put("o-1", "paid").await?;
    /// orders.delete("o-1").await?;
    /// assert!(orders.get("o-1").await?.value.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn delete(&self, key: impl IntoBytes) -> StrongWrite {
        StrongWrite::new(self.target.clone(), delete(key))
    }

    /// Compare-and-set on `key`: say what must hold ([`CasStart::expect`] a revision, or
    /// [`CasStart::expect_absent`]), then what to do ([`CasExpect::put`] or
    /// [`CasExpect::delete`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
    /// let orders = cluster.client().strong("orders");
    /// let created = orders.cas("o-1").expect_absent().put("paid").await?;
    /// assert!(created.succeeded);
    /// let again = orders.cas("o-1").expect_absent().put("paid").await?;
    /// assert!(!again.succeeded, "the key exists now");
    /// let shipped = orders.cas("o-1").expect(created.revision).put("shipped").await?;
    /// assert!(shipped.succeeded);
    /// # Ok(())
    /// # }
    /// ```
    pub fn cas(&self, key: impl IntoBytes) -> CasStart {
        CasStart::new(self.target.clone(), key.into_bytes())
    }

    /// Every key starting with `prefix`, in order, page after page (each page is a read of
    /// its own: the pages together are not one snapshot).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
    /// let orders = cluster.client().strong("orders");
    /// for id in ["o-1", "o-2", "o-3", "x-1"] {
    ///     orders.put(id, "paid").await?;
    /// }
    /// let scanned = orders.scan("o-").limit(2).await?;
    /// let keys: Vec<_> = scanned.entries.iter().map(|(key, _)| key.clone()).collect();
    /// assert_eq!(keys, ["o-1", "o-2"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn scan(&self, prefix: impl IntoBytes) -> Scan {
        Scan::new(self.target.clone(), prefix.into_bytes())
    }

    /// Follows the changes to keys starting with `prefix`: every put and delete, once, in
    /// revision order, from the next change on or from a revision
    /// ([`Watch::from_revision`]); see [`Watch`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
    /// let orders = cluster.client().strong("orders");
    /// let rev = orders.put("o-1", "paid").await?.revision;
    /// let event = orders.watch("o-").from_revision(rev).next().await?;
    /// assert_eq!(event.revision(), Some(rev));
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch(&self, prefix: impl IntoBytes) -> Watch {
        Watch::new(&self.target.client, &self.target.name, prefix.into_bytes())
    }

    /// A transaction: compares, then changes if they all hold, else others, atomic at one
    /// revision; see [`Txn`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
    /// let orders = cluster.client().strong("orders");
    /// let first = orders.txn().if_absent("o-1").then_put("o-1", "paid").await?;
    /// let second = orders.txn().if_absent("o-1").then_put("o-1", "twice").await?;
    /// assert!(first.succeeded && !second.succeeded);
    /// # Ok(())
    /// # }
    /// ```
    pub fn txn(&self) -> Txn {
        Txn::new(self.target.clone())
    }
}

impl<K: Kind> EventualKeyspace<K> {
    /// The keyspace's name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// assert_eq!(cluster.client().set("carts").name(), "carts");
    /// # Ok(())
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// Reads `key` (from the node asked, unless a level call says otherwise). An absent key
    /// reads as the kind's empty value.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("views", KeyspaceMode::Eventual(ValueType::Counter)).await?;
    /// let views = cluster.client().counter("views");
    /// assert_eq!(views.get("never-written").await?.value, 0);
    /// assert_eq!(views.get("never-written").quorum().await?.value, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get(&self, key: impl IntoBytes) -> EventualGet<K> {
        EventualGet::new(
            self.target.clone(),
            Operation::Get {
                key: key.into_bytes(),
            },
        )
    }

    /// Follows the change feed of the node asked (pin it with [`Watch::at`]): each key
    /// starting with `prefix` whose merged state changes there, with its value, at least
    /// once; see [`Watch`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("carts", KeyspaceMode::Eventual(ValueType::Set)).await?;
    /// let carts = cluster.client().set("carts");
    /// let node = cluster.endpoints()[0].clone();
    /// let mut watch = carts.watch("alice").at(node.clone());
    /// watch.poll().await?; // takes the feed's current position
    /// carts.add("alice", ["book"]).at(node).await?;
    /// assert_eq!(watch.next().await?.key(), "alice");
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch(&self, prefix: impl IntoBytes) -> Watch {
        Watch::new(&self.target.client, &self.target.name, prefix.into_bytes())
    }

    fn write(&self, operation: Operation) -> EventualWrite<K> {
        EventualWrite::new(self.target.clone(), operation)
    }
}

impl<K: kind::Register> EventualKeyspace<K> {
    /// Sets `key` to `value`. In an `lww` keyspace the latest write (by hybrid logical
    /// clock) wins. In an `mvreg` keyspace a write without [`EventualWrite::context`] is a
    /// blind write that becomes a sibling of the values there; with the context of an
    /// earlier read it replaces the siblings that read returned.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("profiles", KeyspaceMode::Eventual(ValueType::Lww)).await?;
    /// # cluster.create_keyspace("docs", KeyspaceMode::Eventual(ValueType::MvReg)).await?;
    /// let profiles = cluster.client().lww("profiles");
    /// let acked = profiles.put("alice", "v1").all().await?;
    /// assert_eq!(acked.acks, 1, "a one-node cluster");
    ///
    /// let docs = cluster.client().mvreg("docs");
    /// docs.put("readme", "draft").await?;
    /// let read = docs.get("readme").await?;
    /// docs.put("readme", "final").context(read.value.context).await?;
    /// assert_eq!(docs.get("readme").await?.value.values, ["final"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn put(&self, key: impl IntoBytes, value: impl IntoBytes) -> EventualWrite<K> {
        self.write(put(key, value))
    }

    /// Deletes `key`: a tombstone that wins like a write (`lww`), or, with
    /// [`EventualWrite::context`], only the siblings that read saw (`mvreg`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("profiles", KeyspaceMode::Eventual(ValueType::Lww)).await?;
    /// # cluster.create_keyspace("docs", KeyspaceMode::Eventual(ValueType::MvReg)).await?;
    /// let profiles = cluster.client().lww("profiles");
    /// profiles.put("alice", "v1").await?;
    /// profiles.delete("alice").await?;
    /// assert_eq!(profiles.get("alice").await?.value, None);
    ///
    /// let docs = cluster.client().mvreg("docs");
    /// docs.put("readme", "draft").await?;
    /// let read = docs.get("readme").await?;
    /// docs.delete("readme").context(read.value.context).await?;
    /// assert!(docs.get("readme").await?.value.values.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn delete(&self, key: impl IntoBytes) -> EventualWrite<K> {
        self.write(delete(key))
    }
}

/// A put without a context: what strong, `lww` and blind `mvreg` writes send.
fn put(key: impl IntoBytes, value: impl IntoBytes) -> Operation {
    Operation::Put {
        key: key.into_bytes(),
        value: value.into_bytes(),
        context: None,
    }
}

/// A delete without a context.
fn delete(key: impl IntoBytes) -> Operation {
    Operation::Delete {
        key: key.into_bytes(),
        context: None,
    }
}

impl CounterKeyspace {
    /// Adds `by` to the counter at `key`. Not idempotent: a write whose outcome is unknown
    /// is not resent by the library.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("views", KeyspaceMode::Eventual(ValueType::Counter)).await?;
    /// let views = cluster.client().counter("views");
    /// views.incr("home", 5).await?;
    /// views.decr("home", 2).await?;
    /// assert_eq!(views.get("home").await?.value, 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn incr(&self, key: impl IntoBytes, by: i64) -> EventualWrite<kind::Counter> {
        self.write(Operation::Add {
            key: key.into_bytes(),
            by,
        })
    }

    /// Subtracts `by` from the counter at `key` (see [`incr`](Self::incr)). A `by` of
    /// `i64::MIN`, which has no negation, comes back as the node's `CounterOverflow`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("stock", KeyspaceMode::Eventual(ValueType::Counter)).await?;
    /// let stock = cluster.client().counter("stock");
    /// stock.decr("pen", 1).await?;
    /// assert_eq!(stock.get("pen").await?.value, -1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn decr(&self, key: impl IntoBytes, by: i64) -> EventualWrite<kind::Counter> {
        // i64::MIN has no negation: send it as an add the node refuses with a typed error
        // rather than panic or wrap here.
        let by = by.checked_neg().unwrap_or(i64::MIN);
        self.incr(key, by)
    }
}

impl SetKeyspace {
    /// Adds `members` to the set at `key` (at least one, else the node's `NoMembers`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("carts", KeyspaceMode::Eventual(ValueType::Set)).await?;
    /// let carts = cluster.client().set("carts");
    /// carts.add("alice", ["book", "pen"]).quorum().await?;
    /// carts.add("alice", vec![String::from("tea")]).await?;
    /// assert_eq!(carts.members("alice").await?.value, ["book", "pen", "tea"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn add<M: IntoBytes>(
        &self,
        key: impl IntoBytes,
        members: impl IntoIterator<Item = M>,
    ) -> EventualWrite<kind::Set> {
        self.write(Operation::SetAdd {
            key: key.into_bytes(),
            members: members.into_iter().map(IntoBytes::into_bytes).collect(),
        })
    }

    /// Removes `members` from the set at `key`: the additions of them this node has seen
    /// (an addition it has not seen yet survives).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("carts", KeyspaceMode::Eventual(ValueType::Set)).await?;
    /// let carts = cluster.client().set("carts");
    /// carts.add("alice", ["book", "pen"]).await?;
    /// carts.remove("alice", ["book"]).await?;
    /// assert_eq!(carts.members("alice").await?.value, ["pen"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn remove<M: IntoBytes>(
        &self,
        key: impl IntoBytes,
        members: impl IntoIterator<Item = M>,
    ) -> EventualWrite<kind::Set> {
        let members = members.into_iter().map(IntoBytes::into_bytes).collect();
        self.write(set_remove(key.into_bytes(), members))
    }

    /// The members of the set at `key`, sorted: [`get`](EventualKeyspace::get) by its set name.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::KeyspaceMode};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("carts", KeyspaceMode::Eventual(ValueType::Set)).await?;
    /// let carts = cluster.client().set("carts");
    /// assert!(carts.members("bob").await?.value.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn members(&self, key: impl IntoBytes) -> EventualGet<kind::Set> {
        self.get(key)
    }
}

/// The one place the typed API builds a set removal. Without a context: the client library
/// reads the key first, so that every attempt of the removal removes the same adds.
fn set_remove(key: Bytes, members: Vec<Bytes>) -> Operation {
    Operation::SetRemove {
        key,
        members,
        context: None,
    }
}

#[cfg(test)]
mod tests {
    use super::kind::{Counter, Kind, Lww, MvReg, Set};
    use super::*;
    use crate::eventual::{ReadContext, ReadValue};

    /// A node that answered a read with another kind's value is a protocol error, never a
    /// value of the wrong type.
    #[test]
    fn each_kind_decodes_only_its_own_reads() {
        let lww = ReadValue::Lww {
            value: Some(Bytes::from_static(b"v")),
            stamp: None,
        };
        assert_eq!(
            Lww::decode(lww.clone()),
            Some(Some(Bytes::from_static(b"v")))
        );
        assert_eq!(Counter::decode(ReadValue::Counter(-3)), Some(-3));
        let members = vec![Bytes::from_static(b"m")];
        let set = ReadValue::Set {
            members: members.clone(),
            context: ReadContext(Default::default()),
        };
        assert_eq!(Set::decode(set), Some(members));
        assert!(Counter::decode(lww.clone()).is_none());
        assert!(Set::decode(ReadValue::Counter(1)).is_none());
        assert!(MvReg::decode(lww).is_none());
        assert!(Lww::decode(ReadValue::Counter(0)).is_none());
    }

    #[test]
    fn bytes_come_from_owned_and_borrowed_data() {
        let owned = String::from("k");
        assert_eq!(IntoBytes::into_bytes(&owned), Bytes::from_static(b"k"));
        assert_eq!(IntoBytes::into_bytes(owned), Bytes::from_static(b"k"));
        assert_eq!(IntoBytes::into_bytes(*b"k"), Bytes::from_static(b"k"));
        assert_eq!(IntoBytes::into_bytes(&b"k"[..]), Bytes::from_static(b"k"));
        assert_eq!(IntoBytes::into_bytes(vec![b'k']), Bytes::from_static(b"k"));
    }

    #[test]
    fn set_removal_is_built_in_one_place() {
        let members = vec![Bytes::from_static(b"m")];
        let operation = set_remove(Bytes::from_static(b"k"), members.clone());
        assert_eq!(operation.name(), "srem");
        assert!(matches!(operation, Operation::SetRemove { members: m, .. } if m == members));
    }
}
