//! Client sessions the simulated clients share, as the tasks of one application share a
//! `Client` (see `client::session`, which this mirrors without locks or wall clocks): one
//! session id, seqs handed out in order, and the set of seqs still waiting for an answer,
//! whose lowest is every request's `first_unacked`. A session opens on a keyspace only
//! while younger than [`SESSION_OPEN_WINDOW`]; one the machines forgot is replaced.

use crate::client::session::Seqs;
use crate::strong::ClientId;
use crate::types::Instant;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// How long after its start a session's requests may open it: well below a simulation's
/// session timeout less the clocks' drift over a run.
pub(crate) const SESSION_OPEN_WINDOW: Duration = Duration::from_secs(1);

/// One client session: its id and seqs.
#[derive(Debug)]
struct SimSession {
    id: ClientId,
    started: Instant,
    seqs: RefCell<Seqs>,
}

impl SimSession {
    fn new(id: ClientId, started: Instant) -> Rc<SimSession> {
        Rc::new(SimSession {
            id,
            started,
            seqs: RefCell::new(Seqs::new()),
        })
    }
}

/// A request's place in its session; dropping it acknowledges the seq.
#[derive(Debug)]
pub(crate) struct Ticket {
    session: Rc<SimSession>,
    seq: u64,
}

impl Ticket {
    pub(crate) fn client(&self) -> ClientId {
        self.session.id
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The session's lowest seq still waiting: at most this ticket's.
    pub(crate) fn first_unacked(&self) -> u64 {
        self.session.seqs.borrow().first_unacked()
    }

    /// Whether a request sent at `now` may open the session.
    pub(crate) fn may_open(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.session.started) < SESSION_OPEN_WINDOW
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.session.seqs.borrow_mut().end(self.seq);
    }
}

/// The session some clients share, replaced when the machines forgot it.
#[derive(Debug)]
pub(crate) struct SessionGroup {
    /// Session ids of this group are `base` plus a generation.
    base: u64,
    current: RefCell<Rc<SimSession>>,
    generations: RefCell<u64>,
}

impl SessionGroup {
    pub(crate) fn new(base: u64) -> Rc<SessionGroup> {
        Rc::new(SessionGroup {
            base,
            current: RefCell::new(SimSession::new(ClientId(base), Instant::ZERO)),
            generations: RefCell::new(0),
        })
    }

    /// A new seq of the current session, waiting until the ticket drops.
    pub(crate) fn begin(&self) -> Ticket {
        let session = Rc::clone(&self.current.borrow());
        let seq = session.seqs.borrow_mut().take();
        Ticket { session, seq }
    }

    /// A new session in place of the expired one `ticket` belongs to, unless another client
    /// already made one.
    pub(crate) fn rotate(&self, ticket: &Ticket, now: Instant) {
        if !Rc::ptr_eq(&self.current.borrow(), &ticket.session) {
            return;
        }
        let mut generations = self.generations.borrow_mut();
        *generations += 1;
        let id = ClientId(self.base + *generations);
        *self.current.borrow_mut() = SimSession::new(id, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_hold_first_unacked_and_rotation_starts_afresh() {
        let group = SessionGroup::new(1_000);
        let one = group.begin();
        let two = group.begin();
        assert_eq!(two.first_unacked(), 1);
        drop(one);
        assert_eq!(two.first_unacked(), 2);
        let later = Instant::ZERO + SESSION_OPEN_WINDOW;
        assert!(two.may_open(Instant::ZERO) && !two.may_open(later));
        group.rotate(&two, later);
        group.rotate(&two, later);
        let fresh = group.begin();
        assert_eq!(
            (fresh.client(), fresh.seq()),
            (ClientId(1_001), 1),
            "rotated once"
        );
        assert!(fresh.may_open(later));
        assert_eq!(two.first_unacked(), 2, "the old session keeps its own");
    }
}
