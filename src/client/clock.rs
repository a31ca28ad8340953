//! The client's clock for the times of its `lww` writes.
//!
//! Each write takes its time once, when [`super::Client::execute`] builds the request, and
//! every attempt and [`super::Client::resend`] of it carries the same one: the node stamps
//! the write with it instead of with its own clock (`ClientRequest::written_at`), so a resend
//! through another node stores what the first attempt stored and cannot overwrite a newer
//! write by someone else. This is what Cassandra's drivers do with client-side timestamps.
//!
//! The clock is a hybrid logical clock: it follows the wall clock but never goes back, and it
//! moves past every `lww` time the client sees in an answer (a read's winning stamp, a
//! write's receipt). So a write this client makes after reading a key orders after what it
//! read, even when this machine's clock is behind the cluster's.

use crate::eventual::ReadValue;
use crate::eventual::hlc::{Hlc, HlcTimestamp};
use crate::protocol::{Answer, Position, Receipt, WriteTime};
use crate::types::{NodeId, WallMillis};
use std::sync::Mutex;

/// One client's write clock; shared by its clones.
#[derive(Debug)]
pub struct WriteClock {
    hlc: Mutex<Hlc>,
}

impl WriteClock {
    /// A clock that has issued nothing yet.
    pub fn new() -> WriteClock {
        // Only the time of a stamp is the client's; the node adds the tie-breaker.
        WriteClock {
            hlc: Mutex::new(Hlc::new(NodeId(0))),
        }
    }

    /// A new write's time: after every time issued or seen before.
    pub fn now(&self) -> WriteTime {
        let stamp = self.lock().now(wall_now());
        WriteTime {
            physical_ms: stamp.physical_ms,
            logical: stamp.logical,
        }
    }

    /// Moves the clock past the `lww` times an answer shows.
    pub fn observe(&self, answer: &Answer, receipt: &Receipt) {
        let read = match answer {
            Answer::Eventual(ReadValue::Lww { stamp, .. }) => *stamp,
            _ => None,
        };
        let written = match &receipt.position {
            Position::Eventual { stamp, .. } => *stamp,
            Position::Raft { .. } | Position::Paxos { .. } => None,
        };
        for stamp in read.into_iter().chain(written) {
            self.lock().observe(stamp);
        }
    }

    /// The latest time issued or seen, for a clock that should continue after this one.
    pub fn last(&self) -> HlcTimestamp {
        self.lock().last()
    }

    /// A clock that continues after `last`.
    pub fn after(last: HlcTimestamp) -> WriteClock {
        WriteClock {
            hlc: Mutex::new(Hlc::restored(NodeId(0), last)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hlc> {
        // The clock stays consistent even if a holder panicked: every update is one store.
        self.hlc
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for WriteClock {
    fn default() -> Self {
        WriteClock::new()
    }
}

/// Milliseconds since the Unix epoch by this machine's clock (0 if it is set before 1970).
fn wall_now() -> WallMillis {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    WallMillis(since.map_or(0, |elapsed| elapsed.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventual::WriteLevel;
    use crate::protocol::Served;

    #[test]
    fn a_write_after_reading_a_time_from_the_future_orders_after_it() {
        let clock = WriteClock::new();
        let first = clock.now();
        assert!(clock.now() > first, "every time is new");
        let ahead = HlcTimestamp {
            physical_ms: first.physical_ms + 60_000,
            logical: 7,
            node: NodeId(3),
        };
        let answer = Answer::Eventual(ReadValue::Lww {
            value: None,
            stamp: Some(ahead),
        });
        let receipt = Receipt {
            level: Served::Write(WriteLevel::Local),
            node: NodeId(3),
            position: Position::Eventual {
                token: None,
                stamp: None,
                vector: Vec::new(),
            },
            behind: None,
        };
        clock.observe(&answer, &receipt);
        let next = clock.now();
        assert_eq!((next.physical_ms, next.logical), (ahead.physical_ms, 8));
        let continued = WriteClock::after(clock.last()).now();
        assert!(continued > next);
    }
}
