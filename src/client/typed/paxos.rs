//! The handle for paxos keyspaces: leaderless per-key Paxos, linearizable. The same
//! operations as a strong keyspace but scans, transactions and watches, with the same
//! answer types; the receipt's position is `Position::Paxos` (the ballot the answer was
//! chosen under and the acceptors that agreed). Reads have one level, linearizable: every
//! read runs a round. Revisions count per key.
//!
//! A paxos keyspace keeps no client sessions: an operation resent through another node is a
//! new operation. A write that may have applied (a `Timeout` that says so) is handed back
//! rather than resent.

use super::{CasStart, Client, IntoBytes, OpenError, StrongGet, StrongWrite, Target};
use crate::protocol::{KeyspaceMode, Operation};

/// A paxos keyspace: every key a linearizable register, any node serves it, no leader.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = capdial::LocalCluster::start(1).await?;
/// # cluster.create_keyspace("locks", capdial::protocol::KeyspaceMode::Paxos).await?;
/// let locks = cluster.client().open_paxos("locks").await?;
/// let taken = locks.cas("door").expect_absent().put("alice").await?;
/// assert!(taken.succeeded);
/// assert_eq!(locks.get("door").await?.value.expect("taken").value, "alice");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PaxosKeyspace {
    target: Target,
}

impl Client {
    /// A handle for paxos keyspace `name`, unchecked: no I/O.
    pub fn paxos(&self, name: &str) -> PaxosKeyspace {
        PaxosKeyspace {
            target: self.target(name),
        }
    }

    /// [`Client::paxos`], checked once like [`Client::open_strong`].
    pub async fn open_paxos(&self, name: &str) -> Result<PaxosKeyspace, OpenError> {
        self.check_kind(name, KeyspaceMode::Paxos).await?;
        Ok(self.paxos(name))
    }
}

impl PaxosKeyspace {
    /// The keyspace's name.
    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// Sets `key` to `value`, chosen by a majority of acceptors: [`Written`](super::Written)
    /// with the key's new revision.
    pub fn put(&self, key: impl IntoBytes, value: impl IntoBytes) -> StrongWrite {
        StrongWrite::new(self.target.clone(), super::put(key, value))
    }

    /// Reads `key` with a Paxos round (linearizable): its value and revision, `None` if
    /// absent. (The level calls of [`StrongGet`] other than `linearizable` are refused.)
    pub fn get(&self, key: impl IntoBytes) -> StrongGet {
        let key = key.into_bytes();
        StrongGet::new(self.target.clone(), Operation::Get { key })
    }

    /// Deletes `key` (deleting an absent key is not an error).
    pub fn delete(&self, key: impl IntoBytes) -> StrongWrite {
        StrongWrite::new(self.target.clone(), super::delete(key))
    }

    /// Compare-and-set on `key`'s revision, as [`StrongKeyspace::cas`](super::StrongKeyspace::cas).
    pub fn cas(&self, key: impl IntoBytes) -> CasStart {
        CasStart::new(self.target.clone(), key.into_bytes())
    }
}
