//! A client's session with the strong keyspaces (Raft thesis §6.3), as the client keeps it:
//! its id, the next sequence number, and which of its requests still wait for an answer.
//!
//! ```text
//!  Sessions::current ──begin──▶ Ticket{seq}  ── request carries (id, seq, first_unacked, opens)
//!        ▲                         │ dropped once answered (or given up by the app)
//!        └── rotate on SessionExpired (only when the request surely never applied)
//! ```
//!
//! Every request takes a [`Ticket`]: a seq, held in the session's waiting set until the
//! ticket drops. A request's `first_unacked` is the lowest seq waiting, so the state machine
//! keeps the result of every write whose answer the client may still need, and drops the
//! others. A write whose outcome is unknown keeps its ticket inside the
//! [`Resend`](super::conn::Resend) handle the library hands back, so its result stays until
//! the application resends it or drops the handle.
//!
//! # How a session starts
//!
//! The state machine opens a session on a request that says it may (`opens_session`), and
//! refuses a request of a session it does not know otherwise (`SessionExpired`). The client
//! says so only while its session is younger than [`SESSION_OPEN_WINDOW`]. A request resent
//! after its session expired is therefore never let open a new one (which would apply it a
//! second time): expiry takes the session timeout (an hour by default) of idleness, by the
//! leaders' clocks, so the session is long past the window by then. This needs no extra round
//! trip to register a session, at the price of that assumption: the cluster's session timeout
//! must exceed the window plus the clock skew between client and leaders.

use crate::rng;
use crate::strong::ClientId;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long after its start a session's requests may open it on a keyspace. A request
/// to a keyspace that first hears of the session later is refused `SessionExpired` without
/// applying, and the library retries it once in a new session.
pub const SESSION_OPEN_WINDOW: Duration = Duration::from_secs(60);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The sets below are changed in single calls that cannot leave them half done.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One session: an id drawn at random, and its sequence numbers.
#[derive(Debug)]
pub(crate) struct Session {
    id: ClientId,
    started: Instant,
    seqs: Mutex<Seqs>,
}

/// A session's sequence numbers: the next to hand out, and those still waiting for an
/// answer, whose lowest is every request's `first_unacked`. The simulated clients keep theirs
/// with it too (`sim::session`).
#[derive(Debug)]
pub(crate) struct Seqs {
    /// The next seq to hand out; seqs start at 1.
    next: u64,
    /// The seqs handed out whose tickets are alive.
    waiting: BTreeSet<u64>,
}

impl Seqs {
    pub(crate) fn new() -> Seqs {
        Seqs {
            next: 1,
            waiting: BTreeSet::new(),
        }
    }

    /// A new seq, waiting until [`Seqs::end`].
    pub(crate) fn take(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.waiting.insert(seq);
        seq
    }

    pub(crate) fn end(&mut self, seq: u64) {
        self.waiting.remove(&seq);
    }

    /// The lowest seq still waiting (the next one when none is).
    pub(crate) fn first_unacked(&self) -> u64 {
        self.waiting.first().copied().unwrap_or(self.next)
    }
}

impl Session {
    fn new(id: ClientId, started: Instant) -> Session {
        Session {
            id,
            started,
            seqs: Mutex::new(Seqs::new()),
        }
    }

    /// A new seq, waiting from now on. The seq is taken and entered in the waiting set under
    /// one lock: were it taken first (from an atomic) and entered after, a concurrent request
    /// could compute its `first_unacked` above it in between and acknowledge it unsent.
    pub(crate) fn begin(self: &Arc<Session>) -> Ticket {
        let seq = lock(&self.seqs).take();
        Ticket {
            session: Arc::clone(self),
            seq,
        }
    }

    pub(crate) fn id(&self) -> ClientId {
        self.id
    }

    /// The lowest seq still waiting (the next one when none is).
    fn first_unacked(&self) -> u64 {
        lock(&self.seqs).first_unacked()
    }

    /// Whether a request sent at `now` may open the session (see the module docs).
    fn may_open(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) < SESSION_OPEN_WINDOW
    }

    fn end(&self, seq: u64) {
        lock(&self.seqs).end(seq);
    }
}

/// A request's place in its session. Dropping it acknowledges the seq: the next request's
/// `first_unacked` may pass it, and the machine then drops its result.
#[derive(Debug)]
pub(crate) struct Ticket {
    session: Arc<Session>,
    seq: u64,
}

impl Ticket {
    pub(crate) fn client(&self) -> ClientId {
        self.session.id
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The session's lowest seq still waiting: at most this ticket's own.
    pub(crate) fn first_unacked(&self) -> u64 {
        self.session.first_unacked()
    }

    pub(crate) fn may_open(&self, now: Instant) -> bool {
        self.session.may_open(now)
    }

    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.session
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.session.end(self.seq);
    }
}

/// The session a client's new requests join; replaced when the cluster forgot it.
#[derive(Debug)]
pub(crate) struct Sessions {
    current: Mutex<Arc<Session>>,
}

impl Sessions {
    /// A fresh session with a random id.
    pub(crate) fn new() -> Sessions {
        Sessions {
            current: Mutex::new(Arc::new(fresh())),
        }
    }

    pub(crate) fn current(&self) -> Arc<Session> {
        Arc::clone(&lock(&self.current))
    }

    /// Starts a new session in place of `expired`, unless a concurrent request already did.
    /// Requests of the old session keep it (and their seqs) to the end.
    pub(crate) fn rotate(&self, expired: &Arc<Session>) {
        let mut current = lock(&self.current);
        if Arc::ptr_eq(&current, expired) {
            *current = Arc::new(fresh());
        }
    }
}

fn fresh() -> Session {
    // Random ids from the OS: plenty for telling clients apart, and a new session after a
    // restart never collides with the old one's results.
    Session::new(ClientId(rng::os_seed()), Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_unacked_is_the_lowest_seq_still_waiting() {
        let session = Arc::new(Session::new(ClientId(1), Instant::now()));
        let one = session.begin();
        let two = session.begin();
        let three = session.begin();
        assert_eq!((one.seq(), two.seq(), three.seq()), (1, 2, 3));
        assert_eq!(three.first_unacked(), 1);
        drop(two);
        assert_eq!(three.first_unacked(), 1, "one still waits");
        drop(one);
        assert_eq!(three.first_unacked(), 3);
        drop(three);
        assert_eq!(session.first_unacked(), 4, "none waits: the next");
        assert_eq!(session.begin().first_unacked(), 4);
    }

    #[test]
    fn a_session_may_open_only_while_young() {
        let start = Instant::now();
        let session = Arc::new(Session::new(ClientId(1), start));
        let ticket = session.begin();
        assert!(ticket.may_open(start));
        assert!(ticket.may_open(start + SESSION_OPEN_WINDOW - Duration::from_millis(1)));
        assert!(!ticket.may_open(start + SESSION_OPEN_WINDOW));
    }

    #[test]
    fn rotation_replaces_only_the_session_that_expired() {
        let sessions = Sessions::new();
        let old = sessions.current();
        let ticket = old.begin();
        sessions.rotate(&old);
        let new = sessions.current();
        assert_ne!(new.id(), old.id());
        sessions.rotate(&old);
        assert!(Arc::ptr_eq(&new, &sessions.current()), "rotated once");
        assert_eq!(ticket.client(), old.id(), "a request keeps its session");
        assert_eq!(new.begin().seq(), 1);
    }

    #[test]
    fn concurrent_tickets_never_acknowledge_a_seq_still_waiting() {
        let session = Arc::new(Session::new(ClientId(1), Instant::now()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let session = Arc::clone(&session);
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        let ticket = session.begin();
                        assert!(ticket.first_unacked() <= ticket.seq());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no assertion failed");
        }
        assert_eq!(session.first_unacked(), 2001);
    }
}
