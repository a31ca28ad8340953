//! Per-node clocks in simulated time.
//!
//! The simulator keeps one global time. Each node reads it through a [`NodeClock`] that runs a
//! little fast or slow (drift, in parts per million) and may jump: its monotonic clock only
//! forwards (a paused VM, a suspended process), its wall clock both ways (NTP steps). Lease
//! reads are safe only while drift stays within the configured bound, which is why a jump
//! beyond it is one of the faults.

use crate::types::{Instant, WallMillis};
use std::time::Duration;

const PPM: i128 = 1_000_000;

/// Wall-clock origin for simulated runs: 2026-01-01T00:00:00Z, so HLC timestamps look real.
pub const WALL_EPOCH_MILLIS: u64 = 1_767_225_600_000;

/// One node's view of time.
#[derive(Clone, Debug)]
pub struct NodeClock {
    /// Rate error: local time advances by `1 + drift_ppm / 1e6` per unit of global time.
    drift_ppm: i64,
    /// Forward jumps of the monotonic clock so far.
    monotonic_offset: Duration,
    /// Steps of the wall clock so far, in milliseconds, either sign.
    wall_offset_millis: i64,
}

impl NodeClock {
    /// A clock with the given drift. The simulator draws `drift_ppm` within the bound the
    /// configuration promises (or beyond it, for a clock-fault scenario).
    pub fn new(drift_ppm: i64) -> NodeClock {
        assert!(drift_ppm.abs() < 500_000, "drift beyond 50% is not a clock");
        NodeClock {
            drift_ppm,
            monotonic_offset: Duration::ZERO,
            wall_offset_millis: 0,
        }
    }

    pub fn drift_ppm(&self) -> i64 {
        self.drift_ppm
    }

    /// The node's monotonic time at global time `global`.
    pub fn local(&self, global: Instant) -> Instant {
        let scaled = i128::from(global.as_nanos()) * (PPM + i128::from(self.drift_ppm)) / PPM;
        let scaled = u64::try_from(scaled.max(0)).unwrap_or(u64::MAX);
        Instant::from_nanos(scaled) + self.monotonic_offset
    }

    /// The earliest global time at which this node's monotonic clock reads `local` or later.
    /// The simulator uses it to turn a core's `poll_timeout` into a global event time.
    pub fn global_at(&self, local: Instant) -> Instant {
        let offset = u64::try_from(self.monotonic_offset.as_nanos()).unwrap_or(u64::MAX);
        let unshifted = i128::from(local.as_nanos().saturating_sub(offset));
        let rate = PPM + i128::from(self.drift_ppm);
        // Round up, so that `local(global_at(t)) >= t`.
        let global = (unshifted * PPM + rate - 1) / rate;
        let global = Instant::from_nanos(u64::try_from(global.max(0)).unwrap_or(u64::MAX));
        debug_assert!(local.as_nanos() <= offset || self.local(global) >= local);
        global
    }

    /// The node's wall clock at global time `global`.
    pub fn wall(&self, global: Instant) -> WallMillis {
        let local_millis = i128::from(self.local(global).as_nanos() / 1_000_000);
        let wall =
            i128::from(WALL_EPOCH_MILLIS) + local_millis + i128::from(self.wall_offset_millis);
        WallMillis(u64::try_from(wall.max(0)).unwrap_or(u64::MAX))
    }

    /// The monotonic clock leaps forward, as after a VM pause the node did not notice.
    pub fn jump_monotonic(&mut self, forward: Duration) {
        self.monotonic_offset += forward;
    }

    /// The wall clock is stepped by `millis` (negative: backwards).
    pub fn step_wall(&mut self, millis: i64) {
        self.wall_offset_millis = self.wall_offset_millis.saturating_add(millis);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_scales_local_time_and_global_at_inverts_it() {
        let fast = NodeClock::new(1_000);
        let slow = NodeClock::new(-1_000);
        let global = Instant::from_nanos(1_000_000_000);
        assert_eq!(fast.local(global).as_nanos(), 1_001_000_000);
        assert_eq!(slow.local(global).as_nanos(), 999_000_000);
        for clock in [&fast, &slow, &NodeClock::new(0), &NodeClock::new(37)] {
            for nanos in [0u64, 1, 999, 123_456_789, 10_000_000_007] {
                let deadline = Instant::from_nanos(nanos);
                let at = clock.global_at(deadline);
                assert!(clock.local(at) >= deadline);
                assert!(
                    at == Instant::ZERO || clock.local(at - Duration::from_nanos(1)) < deadline
                );
            }
        }
    }

    #[test]
    fn jumps_move_the_right_clock() {
        let mut clock = NodeClock::new(0);
        let global = Instant::from_nanos(5_000_000);
        let wall_before = clock.wall(global);
        clock.jump_monotonic(Duration::from_millis(100));
        assert_eq!(clock.local(global).as_nanos(), 105_000_000);
        assert_eq!(clock.global_at(clock.local(global)), global);
        clock.step_wall(-2_000);
        assert_eq!(clock.wall(global).0, wall_before.0 + 100 - 2_000);
    }
}
