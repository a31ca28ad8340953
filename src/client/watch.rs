//! Following a keyspace's changes: [`Watch`], a cursor over long polls (see
//! [`crate::protocol::watch`] for what the node keeps and promises).
//!
//! ```text
//!  Watch::next ──▶ buffered event? ── yes ──▶ it
//!                        │ no
//!                        ▼
//!                 poll(from, prefix) ──▶ any node (strong) / the node asked (eventual)
//!                        │ events, next
//!                        ▼
//!                 buffer them, from = next, loop
//! ```
//!
//! A strong watch may be answered by any node: every replica applies the same log, so after a
//! lost connection or a leader change the next poll goes to another node from the same
//! revision, and no event is lost or repeated. An eventual watch follows one node's feed; if
//! that node is lost or restarts, the next poll is refused with `FeedGap`.

use super::conn::{Client, ConnError};
use crate::protocol::{
    Answer, Operation, Receipt, WATCH_LIMIT_MAX, WATCH_WAIT_MAX_MS, WatchEvent, WatchFrom,
};
use crate::types::LogIndex;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// Events one poll asks for, unless [`Watch::limit`] says otherwise.
pub const WATCH_LIMIT_DEFAULT: u32 = 256;

/// A watch of the keys under a prefix of one keyspace, from a position on. Made by
/// [`StrongKeyspace::watch`](super::StrongKeyspace::watch),
/// [`EventualKeyspace::watch`](super::EventualKeyspace::watch) or [`Watch::new`]; it holds no
/// connection of its own between polls and costs the node nothing while it is not polled.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use capdial::protocol::{KeyspaceMode, WatchEvent};
/// let cluster = capdial::LocalCluster::start(1).await?;
/// cluster.create_keyspace("orders", KeyspaceMode::Strong).await?;
/// let orders = cluster.client().strong("orders");
/// let first = orders.put("o-1", "paid").await?.revision;
/// orders.put("o-1", "shipped").await?;
/// orders.delete("o-1").await?;
///
/// let mut watch = orders.watch("o-").from_revision(first);
/// let mut seen = Vec::new();
/// while seen.len() < 3 {
///     seen.push(watch.next().await?);
/// }
/// assert!(matches!(&seen[0], WatchEvent::Put { value, .. } if value.value == "paid"));
/// assert!(matches!(&seen[1], WatchEvent::Put { value, .. } if value.value == "shipped"));
/// assert!(matches!(&seen[2], WatchEvent::Delete { key, .. } if key == "o-1"));
/// # Ok(())
/// # }
/// ```
pub struct Watch {
    /// A fork of the caller's client: polls take no place in its session.
    client: Client,
    keyspace: String,
    prefix: Bytes,
    /// Where the next poll starts.
    from: WatchFrom,
    /// The node to ask, when pinned.
    at: Option<String>,
    limit: u32,
    wait: Duration,
    /// Events polled and not yet handed out.
    buffered: VecDeque<WatchEvent>,
    /// The receipt of the last poll answered.
    receipt: Option<Receipt>,
}

impl Watch {
    /// A watch of the keys of `keyspace` starting with `prefix`, from the next change on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// let watch = capdial::client::Watch::new(cluster.client(), "orders", "o-");
    /// assert_eq!(watch.position(), capdial::protocol::WatchFrom::Now);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(client: &Client, keyspace: &str, prefix: impl Into<Bytes>) -> Watch {
        // The node holds a poll at most half an attempt's share of the request deadline,
        // so a held poll is never mistaken for a lost node.
        let timeout = client.options().timeout;
        let wait = (timeout / 6).clamp(
            Duration::from_millis(50),
            Duration::from_millis(u64::from(WATCH_WAIT_MAX_MS)),
        );
        Watch {
            client: client.fork(None),
            keyspace: keyspace.to_string(),
            prefix: prefix.into(),
            from: WatchFrom::Now,
            at: None,
            limit: WATCH_LIMIT_DEFAULT,
            wait,
            buffered: VecDeque::new(),
            receipt: None,
        }
    }

    /// Start from `from` (a position an earlier watch reported) instead of the next change.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// use capdial::protocol::WatchFrom;
    /// use capdial::types::LogIndex;
    /// let watch = cluster.client().strong("orders").watch("").from(WatchFrom::Revision(LogIndex(7)));
    /// assert_eq!(watch.position(), WatchFrom::Revision(LogIndex(7)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn from(mut self, from: WatchFrom) -> Watch {
        self.from = from;
        self.buffered.clear();
        self
    }

    /// Start from revision `revision` of a strong keyspace (it included).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// use capdial::types::LogIndex;
    /// let watch = cluster.client().strong("orders").watch("o-").from_revision(LogIndex(1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_revision(self, revision: LogIndex) -> Watch {
        self.from(WatchFrom::Revision(revision))
    }

    /// Ask `endpoint` only (an eventual keyspace's feed is that node's).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// let node = cluster.endpoints()[0].clone();
    /// let watch = cluster.client().set("carts").watch("").at(node);
    /// # Ok(())
    /// # }
    /// ```
    pub fn at(mut self, endpoint: impl Into<String>) -> Watch {
        self.at = Some(endpoint.into());
        self
    }

    /// At most this many events per poll (1 to [`WATCH_LIMIT_MAX`]; default
    /// [`WATCH_LIMIT_DEFAULT`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// let watch = cluster.client().strong("orders").watch("").limit(10);
    /// # Ok(())
    /// # }
    /// ```
    pub fn limit(mut self, limit: u32) -> Watch {
        self.limit = limit.clamp(1, WATCH_LIMIT_MAX);
        self
    }

    /// Where a watch that should deliver exactly what this one has not handed out yet would
    /// start: keep it to resume later (a strong watch's revision works on any node).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
    /// use capdial::protocol::WatchFrom;
    /// let orders = cluster.client().strong("orders");
    /// let mut watch = orders.watch("");
    /// let written = orders.put("o-1", "paid").await?.revision;
    /// let _ = watch.poll().await?; // from now: the put may or may not be in it
    /// assert!(matches!(watch.position(), WatchFrom::Revision(next) if next.0 >= written.0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn position(&self) -> WatchFrom {
        match self.buffered.front() {
            Some(WatchEvent::Changed { position, .. }) => WatchFrom::Feed(*position),
            Some(event) => event.revision().map_or(self.from, WatchFrom::Revision),
            None => self.from,
        }
    }

    /// The next event, polling as long as it takes (each poll is held by the node until a
    /// change arrives or a short wait is over). An error leaves the position where it was:
    /// calling `next` again resumes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use capdial::{eventual::ValueType, protocol::{KeyspaceMode, WatchEvent}};
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("views", KeyspaceMode::Eventual(ValueType::Counter)).await?;
    /// let views = cluster.client().counter("views");
    /// let mut watch = views.watch("home");
    /// watch.poll().await?; // pins the feed's current position
    /// views.incr("home", 2).await?;
    /// let WatchEvent::Changed { key, value, .. } = watch.next().await? else { unreachable!() };
    /// assert_eq!(key, "home");
    /// assert_eq!(value, capdial::eventual::ReadValue::Counter(2));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn next(&mut self) -> Result<WatchEvent, ConnError> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Ok(event);
            }
            let events = self.fetch().await?;
            self.buffered.extend(events);
        }
    }

    /// One poll: the events not yet handed out by [`Watch::next`] and those the poll brought
    /// (none if the node's wait ended first), all handed out now.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
    /// let mut watch = cluster.client().strong("orders").watch("nothing-here/");
    /// assert!(watch.poll().await?.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn poll(&mut self) -> Result<Vec<WatchEvent>, ConnError> {
        let fetched = self.fetch().await?;
        let mut events: Vec<WatchEvent> = self.buffered.drain(..).collect();
        events.extend(fetched);
        Ok(events)
    }

    /// Asks the node for the events from `from` on, and moves `from` past them.
    async fn fetch(&mut self) -> Result<Vec<WatchEvent>, ConnError> {
        let operation = Operation::Watch {
            prefix: self.prefix.clone(),
            from: self.from,
            limit: self.limit,
            wait_ms: u32::try_from(self.wait.as_millis()).unwrap_or(WATCH_WAIT_MAX_MS),
        };
        let (answer, receipt) = match &self.at {
            Some(endpoint) => {
                self.client
                    .execute_at(endpoint, &self.keyspace, operation, None, None, None)
                    .await?
            }
            None => {
                self.client
                    .execute(&self.keyspace, operation, None, None, None)
                    .await?
            }
        };
        let Answer::Watch { events, next } = answer else {
            return Err(ConnError::Protocol {
                reason: "a watch was answered with something else".to_string(),
            });
        };
        self.from = next;
        self.receipt = Some(receipt);
        Ok(events)
    }

    /// The receipt of the last poll answered: which node served it and where it stood.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = capdial::LocalCluster::start(1).await?;
    /// # cluster.create_keyspace("orders", capdial::protocol::KeyspaceMode::Strong).await?;
    /// let mut watch = cluster.client().strong("orders").watch("");
    /// assert!(watch.receipt().is_none());
    /// watch.poll().await?;
    /// assert_eq!(watch.receipt().map(|r| r.node), Some(cluster.nodes()[0].id));
    /// # Ok(())
    /// # }
    /// ```
    pub fn receipt(&self) -> Option<&Receipt> {
        self.receipt.as_ref()
    }
}
