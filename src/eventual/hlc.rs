//! Hybrid logical clock for `lww` keyspaces.
//!
//! A timestamp is `(physical_ms, logical, node)`, compared in that order. `physical_ms` follows
//! the wall clock the caller passes in, but never goes backwards: if the wall clock jumps back,
//! the clock keeps its last physical time and counts up `logical` instead. Observing a remote
//! timestamp pulls the clock forward, so a write that causally follows another (this node saw
//! it) always gets a greater timestamp, even when this node's wall clock is slow. The node id
//! breaks ties, so two different writes never carry the same timestamp.
//!
//! # Across restarts
//!
//! The clock's high-water mark is durable: every persist batch carries [`Hlc::last`] in its
//! `DurableMeta::hlc`, taken when the batch is cut, so it covers every stamp in the batch (and
//! everything observed before). A stamped write is acknowledged, shown to readers and sent to
//! peers only after its batch is durable, so the durable mark always covers every stamp that
//! exists anywhere. On restart [`Hlc::restored`] continues strictly above it, however far the
//! wall clock stepped back meanwhile.
//!
//! We persist the exact mark with every batch rather than an occasional upper bound
//! (`high-water + window`): the mark costs a few bytes in a batch that is written anyway, and
//! it needs no window to tune, no extra batches while idle, and never pushes stamps ahead of
//! the wall clock after a restart (which would let the restarted node win `lww` races it
//! should lose).
//!
//! What this does not cover, by design: a stamp issued to a write whose batch never became
//! durable (the node crashed first) may be issued again after the restart. That write was
//! never acknowledged, read, sent or stored anywhere, so the stamp still names exactly one
//! write in existence. Excluding even that would need the mark durable *before* stamping
//! (a write barrier on every clock advance), which buys nothing for `lww` ordering.

use crate::types::{NodeId, WallMillis};
use serde::{Deserialize, Serialize};

/// A hybrid-logical-clock timestamp: the `lww` register's marker. Ordered by physical time,
/// then logical counter, then node id (the derive order of the fields is the order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HlcTimestamp {
    /// Wall-clock milliseconds, as high as any timestamp this clock has issued or observed.
    pub physical_ms: u64,
    /// Counts events within one `physical_ms`.
    pub logical: u32,
    /// The tie-breaker: the node that issued the timestamp, or, for an `lww` write the client
    /// timed itself (`ClientRequest::written_at`), the client's session id in a `NodeId`
    /// (so it prints as a very large `n...`).
    pub node: NodeId,
}

impl HlcTimestamp {
    /// The smallest timestamp a node can hold before it has issued or seen anything.
    pub const fn zero(node: NodeId) -> HlcTimestamp {
        HlcTimestamp {
            physical_ms: 0,
            logical: 0,
            node,
        }
    }
}

/// One node's hybrid logical clock. Invariant: every timestamp `now` returns is strictly
/// greater than every timestamp it returned or observed before.
#[derive(Clone, Debug)]
pub struct Hlc {
    node: NodeId,
    /// The greatest `(physical_ms, logical)` issued or observed.
    last_physical_ms: u64,
    last_logical: u32,
}

impl Hlc {
    /// A clock that has issued nothing yet.
    pub fn new(node: NodeId) -> Hlc {
        Hlc {
            node,
            last_physical_ms: 0,
            last_logical: 0,
        }
    }

    /// A clock restored after a restart: it continues after `last` (the persisted high-water
    /// mark, `DurableMeta::hlc`): every later [`Hlc::now`] is strictly greater than `last`,
    /// whatever the wall clock says.
    pub fn restored(node: NodeId, last: HlcTimestamp) -> Hlc {
        let mut hlc = Hlc::new(node);
        hlc.observe(last);
        hlc
    }

    /// The greatest timestamp issued or observed so far, stamped with this node's id.
    pub fn last(&self) -> HlcTimestamp {
        HlcTimestamp {
            physical_ms: self.last_physical_ms,
            logical: self.last_logical,
            node: self.node,
        }
    }

    /// Issues a new timestamp, strictly greater than everything issued or observed.
    pub fn now(&mut self, wall: WallMillis) -> HlcTimestamp {
        if wall.0 > self.last_physical_ms {
            self.last_physical_ms = wall.0;
            self.last_logical = 0;
        } else if self.last_logical == u32::MAX {
            // 4 billion events in one millisecond: borrow the next millisecond rather than wrap.
            self.last_physical_ms = self.last_physical_ms.saturating_add(1);
            self.last_logical = 0;
        } else {
            self.last_logical += 1;
        }
        self.last()
    }

    /// Moves the clock past a timestamp seen from elsewhere (a merged `lww` value).
    pub fn observe(&mut self, seen: HlcTimestamp) {
        let seen_pair = (seen.physical_ms, seen.logical);
        if seen_pair > (self.last_physical_ms, self.last_logical) {
            self.last_physical_ms = seen.physical_ms;
            self.last_logical = seen.logical;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_monotonic_when_the_wall_clock_jumps_back() {
        let mut hlc = Hlc::new(NodeId(1));
        let a = hlc.now(WallMillis(1_000));
        let b = hlc.now(WallMillis(400)); // the wall clock jumped back 600 ms
        let c = hlc.now(WallMillis(400));
        let d = hlc.now(WallMillis(2_000));
        assert!(a < b && b < c && c < d);
        assert_eq!(
            b.physical_ms, 1_000,
            "physical time must not follow the wall backwards"
        );
        assert_eq!(
            d,
            HlcTimestamp {
                physical_ms: 2_000,
                logical: 0,
                node: NodeId(1)
            }
        );
    }

    #[test]
    fn hlc_observing_a_remote_timestamp_orders_later_writes_after_it() {
        let mut slow = Hlc::new(NodeId(1));
        let remote = HlcTimestamp {
            physical_ms: 9_000,
            logical: 3,
            node: NodeId(2),
        };
        slow.observe(remote);
        let next = slow.now(WallMillis(100));
        assert!(next > remote);
        assert_eq!((next.physical_ms, next.logical), (9_000, 4));
        let restored = Hlc::restored(NodeId(1), next).now(WallMillis(5));
        assert!(
            restored > next,
            "a restarted clock continues after its persisted timestamp"
        );
    }

    #[test]
    fn hlc_ties_break_by_node_id() {
        let a = Hlc::new(NodeId(1)).now(WallMillis(7));
        let b = Hlc::new(NodeId(2)).now(WallMillis(7));
        assert!(a < b);
        assert_ne!(a, b);
    }
}
