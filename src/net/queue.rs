//! The frames waiting to go to one peer on one lane: bounded by count and by bytes, each with
//! the time it may leave. A delay rule sets that time in the future; the one task that drains
//! the lane waits for it, so a delayed message costs an entry here, never a task of its own.
//! Frames leave in order of their time (ties in the order queued): with jitter, delayed frames
//! overtake each other as they would on a real link.

use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Frames one lane holds at most.
pub const QUEUE_FRAMES_MAX: usize = 1024;
/// Bytes of frames one lane holds at most (a frame alone may be larger: an empty lane always
/// takes one, so no message is too large to queue).
pub const QUEUE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Why a frame was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    Closed,
}

#[derive(Debug, Default)]
struct Frames {
    by_time: BTreeMap<(Instant, u64), Vec<u8>>,
    next: u64,
    bytes: usize,
    closed: bool,
}

/// One lane's queue: any number of senders, one draining task.
#[derive(Debug, Default)]
pub struct LaneQueue {
    frames: Mutex<Frames>,
    changed: Notify,
}

impl LaneQueue {
    pub fn new() -> LaneQueue {
        LaneQueue::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Frames> {
        self.frames
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Queues `frame` to leave at `at`.
    pub fn push(&self, frame: Vec<u8>, at: Instant) -> Result<(), Refused> {
        let mut frames = self.lock();
        if frames.closed {
            return Err(Refused::Closed);
        }
        let count = frames.by_time.len();
        let over_bytes = count > 0 && frames.bytes + frame.len() > QUEUE_BYTES_MAX;
        if count >= QUEUE_FRAMES_MAX || over_bytes {
            return Err(Refused::Full);
        }
        let order = frames.next;
        frames.next += 1;
        frames.bytes += frame.len();
        frames.by_time.insert((at, order), frame);
        drop(frames);
        self.changed.notify_one();
        Ok(())
    }

    /// Ends the queue: pushes are refused and the draining task's `pop` returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The next frame once its time has come; `None` once the queue is closed. Cancel-safe:
    /// a frame leaves the queue only in the poll that returns it.
    pub async fn pop(&self) -> Option<Vec<u8>> {
        loop {
            let wake_at = {
                let mut frames = self.lock();
                if frames.closed {
                    return None;
                }
                match frames.by_time.first_key_value() {
                    Some((&(at, _), _)) if at <= Instant::now() => {
                        let (_, frame) = frames.by_time.pop_first().expect("just seen");
                        frames.bytes -= frame.len();
                        return Some(frame);
                    }
                    Some((&(at, _), _)) => Some(at),
                    None => None,
                }
            };
            // A push after the lock was let go left a permit: `notified` completes at once.
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }

    /// Frames and bytes queued.
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let frames = self.lock();
        (frames.by_time.len(), frames.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn frames_leave_at_their_time_in_time_order() {
        let queue = LaneQueue::new();
        let now = Instant::now();
        queue
            .push(b"late".to_vec(), now + Duration::from_millis(50))
            .unwrap();
        queue
            .push(b"soon".to_vec(), now + Duration::from_millis(10))
            .unwrap();
        queue.push(b"now".to_vec(), now).unwrap();
        assert_eq!(queue.pop().await.unwrap(), b"now");
        assert_eq!(queue.pop().await.unwrap(), b"soon");
        assert!(Instant::now() >= now + Duration::from_millis(10));
        assert_eq!(queue.pop().await.unwrap(), b"late");
        assert!(Instant::now() >= now + Duration::from_millis(50));
        assert_eq!(queue.len(), (0, 0));
    }

    #[tokio::test]
    async fn the_queue_is_bounded_by_count_and_bytes_and_ends_when_closed() {
        let queue = LaneQueue::new();
        let now = Instant::now();
        let big = vec![0u8; QUEUE_BYTES_MAX];
        queue.push(big.clone(), now).unwrap();
        assert_eq!(queue.push(vec![1], now), Err(Refused::Full), "bytes");
        assert_eq!(queue.pop().await.unwrap().len(), QUEUE_BYTES_MAX);
        for _ in 0..QUEUE_FRAMES_MAX {
            queue.push(vec![1], now).unwrap();
        }
        assert_eq!(queue.push(vec![1], now), Err(Refused::Full), "count");
        queue.close();
        assert_eq!(queue.push(vec![1], now), Err(Refused::Closed));
        assert_eq!(queue.pop().await, None);
    }
}
