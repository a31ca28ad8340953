//! Each node's view of its peers, from the last time it heard from each: alive, suspect,
//! down. Used for status output, for choosing anti-entropy partners and for deciding whom to
//! push deltas to. It is advice, never a correctness input: a `Down` peer is still probed by
//! anti-entropy now and then, so a healed partition is noticed.

use crate::types::{Instant, NodeId};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a node believes about a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Liveness {
    /// Heard from within `suspect_after`.
    Alive,
    /// Not heard from for `suspect_after`, but within `down_after`.
    Suspect,
    /// Not heard from for `down_after`.
    Down,
}

/// Last contact per peer. Invariant: holds exactly the peers of the keyspace.
#[derive(Clone, Debug)]
pub struct LivenessView {
    last_contact: BTreeMap<NodeId, Instant>,
    suspect_after: Duration,
    down_after: Duration,
}

impl LivenessView {
    /// Every peer counts as just heard from at `now` (start-up gives them the benefit of the
    /// doubt, so the first deltas go everywhere).
    pub fn new(
        peers: impl IntoIterator<Item = NodeId>,
        now: Instant,
        suspect_after: Duration,
        down_after: Duration,
    ) -> LivenessView {
        let last_contact = peers.into_iter().map(|peer| (peer, now)).collect();
        LivenessView {
            last_contact,
            suspect_after,
            down_after,
        }
    }

    /// Records a message from `peer` at `now`. Unknown peers are ignored.
    pub fn heard_from(&mut self, peer: NodeId, now: Instant) {
        if let Some(last) = self.last_contact.get_mut(&peer) {
            *last = (*last).max(now);
        }
    }

    /// The view of `peer` at `now` (`Down` for a node that is not a peer).
    pub fn of(&self, peer: NodeId, now: Instant) -> Liveness {
        let Some(last) = self.last_contact.get(&peer) else {
            return Liveness::Down;
        };
        let silent = now - *last;
        if silent >= self.down_after {
            Liveness::Down
        } else if silent >= self.suspect_after {
            Liveness::Suspect
        } else {
            Liveness::Alive
        }
    }

    /// Makes `peers` the peer set: a peer kept keeps its last contact, a new one counts as
    /// just heard from at `now` (as at start-up).
    pub fn set_peers(&mut self, peers: &[NodeId], now: Instant) {
        self.last_contact.retain(|peer, _| peers.contains(peer));
        for peer in peers {
            self.last_contact.entry(*peer).or_insert(now);
        }
    }

    /// The peers, in id order.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.last_contact.keys().copied()
    }

    /// Peers in `state` at `now`, in id order.
    pub fn peers_in(&self, state: Liveness, now: Instant) -> Vec<NodeId> {
        self.peers()
            .filter(|peer| self.of(*peer, now) == state)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_moves_from_alive_to_suspect_to_down_and_back() {
        let start = Instant::from_nanos(0);
        let mut view = LivenessView::new(
            [NodeId(2)],
            start,
            Duration::from_secs(1),
            Duration::from_secs(3),
        );
        assert_eq!(view.of(NodeId(2), start), Liveness::Alive);
        assert_eq!(
            view.of(NodeId(2), start + Duration::from_secs(1)),
            Liveness::Suspect
        );
        assert_eq!(
            view.of(NodeId(2), start + Duration::from_secs(3)),
            Liveness::Down
        );
        view.heard_from(NodeId(2), start + Duration::from_secs(4));
        assert_eq!(
            view.of(NodeId(2), start + Duration::from_secs(4)),
            Liveness::Alive
        );
        assert_eq!(view.of(NodeId(9), start), Liveness::Down);
    }
}
