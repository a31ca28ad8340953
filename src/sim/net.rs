//! The simulated network: messages in flight, each with its own delivery time.
//!
//! `send` decides a message's fate when it leaves: dropped by a partition or by loss,
//! duplicated, and delayed by a random amount, which is also what reorders messages. A
//! partition that starts while a message is in flight cuts it too: `pop_due` checks the links
//! again at delivery. Every message passes through [`crate::wire::roundtrip`], so what a node
//! receives is what the codec would give it.

use super::faults::Links;
use crate::rng::SeededRng;
use crate::types::{Instant, NodeId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::Duration;

/// How the network treats every message while no partition applies.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    pub delay_min: Duration,
    pub delay_max: Duration,
    /// Probability that a message is lost.
    pub drop_rate: f64,
    /// Probability that a message arrives twice (each copy with its own delay).
    pub duplicate_rate: f64,
}

impl NetConfig {
    /// A healthy LAN: 0.2 to 2 ms, nothing lost or duplicated.
    pub fn healthy() -> NetConfig {
        NetConfig {
            delay_min: Duration::from_micros(200),
            delay_max: Duration::from_millis(2),
            drop_rate: 0.0,
            duplicate_rate: 0.0,
        }
    }
}

/// A message that has arrived.
#[derive(Clone, Debug)]
pub struct Delivery<M> {
    pub from: NodeId,
    pub to: NodeId,
    pub sent_at: Instant,
    pub message: M,
}

/// Counters for the end-of-run summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub cut_by_partition: u64,
    pub lost: u64,
    pub duplicated: u64,
}

/// Messages in flight between simulated nodes.
#[derive(Debug)]
pub struct SimNet<M> {
    config: NetConfig,
    links: Links,
    rng: SeededRng,
    /// Keyed by (delivery time, sequence number): the sequence breaks ties deterministically.
    in_flight: BTreeMap<(Instant, u64), Delivery<M>>,
    sequence: u64,
    stats: NetStats,
}

impl<M: Serialize + DeserializeOwned> SimNet<M> {
    pub fn new(config: NetConfig, rng: SeededRng) -> SimNet<M> {
        SimNet {
            config,
            links: Links::full(),
            rng,
            in_flight: BTreeMap::new(),
            sequence: 0,
            stats: NetStats::default(),
        }
    }

    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: NetConfig) {
        assert!(
            config.delay_min <= config.delay_max,
            "delay_min must not exceed delay_max"
        );
        self.config = config;
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    pub fn set_links(&mut self, links: Links) {
        self.links = links;
    }

    /// Ends every partition. Loss, duplication and delay stay as configured.
    pub fn heal(&mut self) {
        self.links = Links::full();
    }

    pub fn stats(&self) -> NetStats {
        self.stats
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends `message`; its fate (cut, lost, duplicated, how late) is decided here.
    pub fn send(&mut self, now: Instant, from: NodeId, to: NodeId, message: M) {
        self.stats.sent += 1;
        if !self.links.allows(from, to) {
            self.stats.cut_by_partition += 1;
            return;
        }
        if self.rng.chance(self.config.drop_rate) {
            self.stats.lost += 1;
            return;
        }
        if self.rng.chance(self.config.duplicate_rate) {
            self.stats.duplicated += 1;
            let copy = crate::wire::roundtrip(&message);
            self.enqueue(now, from, to, copy);
        }
        let message = crate::wire::roundtrip(&message);
        self.enqueue(now, from, to, message);
    }

    fn enqueue(&mut self, now: Instant, from: NodeId, to: NodeId, message: M) {
        let delay = self
            .rng
            .duration_between(self.config.delay_min, self.config.delay_max);
        let delivery = Delivery {
            from,
            to,
            sent_at: now,
            message,
        };
        self.requeue(delivery, now + delay);
    }

    /// Puts a message back in flight to arrive at `at`, e.g. because its target is paused.
    pub fn requeue(&mut self, delivery: Delivery<M>, at: Instant) {
        self.sequence += 1;
        self.in_flight.insert((at, self.sequence), delivery);
    }

    /// When the next message is due, if any is in flight.
    pub fn next_delivery_at(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|(at, _)| *at)
    }

    /// The next message due at or before `now`. Messages whose link was cut while they were
    /// in flight are dropped here.
    pub fn pop_due(&mut self, now: Instant) -> Option<Delivery<M>> {
        loop {
            let entry = self.in_flight.first_entry()?;
            if entry.key().0 > now {
                return None;
            }
            let delivery = entry.remove();
            if self.links.allows(delivery.from, delivery.to) {
                self.stats.delivered += 1;
                return Some(delivery);
            }
            self.stats.cut_by_partition += 1;
        }
    }

    /// Drops every message to or from `node`, as when it crashes (its sockets die with it).
    pub fn drop_node(&mut self, node: NodeId) {
        self.in_flight
            .retain(|_, delivery| delivery.from != node && delivery.to != node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(config: NetConfig) -> SimNet<u64> {
        SimNet::new(config, SeededRng::new(1))
    }

    #[test]
    fn delivers_in_time_order_within_the_delay_window() {
        let mut net = net(NetConfig::healthy());
        let start = Instant::from_nanos(1_000);
        for value in 0..50 {
            net.send(start, NodeId(1), NodeId(2), value);
        }
        let mut last = start;
        let mut received = Vec::new();
        while let Some(at) = net.next_delivery_at() {
            let delivery = net.pop_due(at).expect("due message");
            assert!(at >= last && at >= start + Duration::from_micros(200));
            assert!(at <= start + Duration::from_millis(2));
            last = at;
            received.push(delivery.message);
        }
        received.sort();
        assert_eq!(received, (0..50).collect::<Vec<_>>());
        assert_eq!(net.stats().delivered, 50);
    }

    #[test]
    fn partitions_cut_at_send_and_in_flight() {
        let mut net = net(NetConfig::healthy());
        let now = Instant::ZERO;
        net.send(now, NodeId(1), NodeId(2), 1);
        net.set_links(Links::full().with_cut(NodeId(1), NodeId(2)));
        net.send(now, NodeId(1), NodeId(2), 2);
        net.send(now, NodeId(2), NodeId(1), 3);
        let far = now + Duration::from_secs(1);
        let delivered: Vec<u64> = std::iter::from_fn(|| net.pop_due(far))
            .map(|d| d.message)
            .collect();
        assert_eq!(delivered, vec![3]);
        assert_eq!(net.stats().cut_by_partition, 2);
    }

    #[test]
    fn loss_and_duplication_follow_their_rates() {
        let config = NetConfig {
            drop_rate: 0.5,
            duplicate_rate: 0.5,
            ..NetConfig::healthy()
        };
        let mut net = net(config);
        for value in 0..1_000 {
            net.send(Instant::ZERO, NodeId(1), NodeId(2), value);
        }
        let stats = net.stats();
        assert!(stats.lost > 400 && stats.lost < 600, "lost {}", stats.lost);
        assert!(
            stats.duplicated > 150 && stats.duplicated < 350,
            "dup {}",
            stats.duplicated
        );
        assert_eq!(
            net.in_flight() as u64,
            1_000 - stats.lost + stats.duplicated
        );
    }
}
