//! The client session table of a strong keyspace's state machine (Raft thesis §6.3): per
//! client, the results of the writes it has not acknowledged, and the rules that decide
//! whether a write applies, answers an earlier result, or is refused.
//!
//! ```text
//!  write (client, seq, first_unacked, opens_session)
//!    │ no session ──opens_session──▶ open (room permitting: TooManySessions)
//!    │            └─otherwise──────▶ SessionExpired
//!    ▼ drop results below first_unacked
//!  seq has a result ─▶ that result (duplicate)      seq < first_unacked ─▶ AlreadyAcknowledged
//!  session or table full ─▶ SessionFull / SessionsFull        otherwise ─▶ apply, remember
//! ```
//!
//! Sessions expire once the log clock passes their last write by the timeout, on every
//! replica at the same entry; nothing is evicted to make room. Every rule reads only the
//! table and the entry, so every replica decides alike.

use super::command::{ClientId, CommandError, Outcome, Request, Session, result_bytes};
use super::machine::MachineConfig;
use crate::types::WallMillis;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The most results of unacknowledged writes one session keeps. A client has at most this
/// many writes answered but not acknowledged; past it a new write is refused
/// (`SessionFull`), not applied. Far above the 64 requests a benchmark client keeps in flight.
pub const UNACKED_RESULTS_MAX: usize = 1024;
/// About the most bytes of results one session keeps (as `result_bytes` counts them): a
/// write arriving when its session holds this much is refused (`SessionFull`). A write's
/// result is small but for a cas's value (up to `VALUE_BYTES_MAX`), so a session holds at
/// most this plus one result, about 2 MiB, and a snapshot chunk of one session fits a frame.
pub const SESSION_RESULT_BYTES_MAX: usize = 1024 * 1024;
const _: () = assert!(
    SESSION_RESULT_BYTES_MAX + super::command::VALUE_BYTES_MAX + 64 * 1024
        <= crate::wire::FRAME_BYTES_MAX / 2
);

/// How long a session lives without a write when none is configured: an hour, as etcd's
/// leases and the Raft thesis suggest; far longer than any client retries a request.
pub const SESSION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3600);
/// How many sessions a machine keeps when not configured otherwise: an empty session takes
/// about a hundred bytes, so the table's own size stays a few MiB.
pub const SESSIONS_MAX_DEFAULT: usize = 16_384;
/// How many bytes of results all sessions together keep when not configured otherwise: what
/// bounds the session table's memory (and its share of a snapshot), as the per-session caps
/// times the session count could reach tens of GiB. Thousands of clients with 64 small
/// writes in flight each take a few MiB.
pub const SESSION_BYTES_MAX_DEFAULT: usize = 256 * 1024 * 1024;

/// Why a write does not apply.
pub(super) enum Refusal {
    /// Applied before: its first result.
    Duplicate(Result<Outcome, CommandError>),
    /// Refused by the session rules.
    Refused(CommandError),
}

/// The sessions of one machine.
#[derive(Debug, Default)]
pub(super) struct SessionTable {
    sessions: BTreeMap<ClientId, Session>,
    /// The sessions ordered by `active_at`, for expiry. Same members as `sessions`.
    by_activity: BTreeSet<(WallMillis, ClientId)>,
    /// The results' bytes in all sessions (as `result_bytes` counts them).
    bytes: usize,
    /// Sessions changed (or forgotten) since the last `take_changes`: copied out only then,
    /// so a session with many results is not copied at every write.
    changes: BTreeSet<ClientId>,
}

impl SessionTable {
    /// A table holding `sessions` (as stored), with no changes to persist.
    pub(super) fn load(sessions: Vec<(ClientId, Session)>) -> SessionTable {
        let mut table = SessionTable::default();
        for (client, session) in sessions {
            table.by_activity.insert((session.active_at, client));
            table.bytes += session.result_bytes();
            table.sessions.insert(client, session);
        }
        table
    }

    pub(super) fn get(&self, client: ClientId) -> Option<&Session> {
        self.sessions.get(&client)
    }

    /// The sessions changed since the last call, as they are now (`None`: forgotten).
    pub(super) fn take_changes(&mut self) -> Vec<(ClientId, Option<Session>)> {
        std::mem::take(&mut self.changes)
            .into_iter()
            .map(|client| (client, self.sessions.get(&client).cloned()))
            .collect()
    }

    /// Forgets the sessions idle for longer than `timeout` by the log clock `clock`.
    pub(super) fn expire(&mut self, clock: WallMillis, timeout: Duration) {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        while let Some(&(active_at, client)) = self.by_activity.first() {
            if active_at.0.saturating_add(timeout_ms) >= clock.0 {
                break;
            }
            self.by_activity.pop_first();
            if let Some(session) = self.sessions.remove(&client) {
                self.bytes -= session.result_bytes();
            }
            self.changes.insert(client);
        }
        assert_eq!(self.sessions.len(), self.by_activity.len());
    }

    /// Decides whether a write applies: `Ok` when it is new to its session (opened here if
    /// the request may open it), or why not. Drops the results the request acknowledges.
    pub(super) fn admit(
        &mut self,
        request: &Request,
        clock: WallMillis,
        config: &MachineConfig,
    ) -> Result<(), Refusal> {
        let client = request.client;
        if !self.sessions.contains_key(&client) {
            self.open(request, clock, config)?;
        }
        self.acknowledge(client, request.first_unacked);
        let session = &self.sessions[&client];
        if let Some(result) = session.results.get(&request.seq)
            && config.dedup()
        {
            return Err(Refusal::Duplicate(result.clone()));
        }
        if request.seq < session.first_unacked && config.dedup() {
            return Err(Refusal::Refused(CommandError::AlreadyAcknowledged {
                client,
                seq: request.seq,
                first_unacked: session.first_unacked,
            }));
        }
        let bytes = session.result_bytes();
        if session.results.len() >= UNACKED_RESULTS_MAX || bytes >= SESSION_RESULT_BYTES_MAX {
            return Err(Refusal::Refused(CommandError::SessionFull {
                client,
                results: session.results.len(),
                bytes,
            }));
        }
        if self.bytes >= config.session_bytes_max {
            return Err(Refusal::Refused(CommandError::SessionsFull {
                bytes: self.bytes,
                bytes_max: config.session_bytes_max,
            }));
        }
        Ok(())
    }

    /// Opens the session of a request's client, if the request may open one and there is
    /// room; otherwise says why not.
    fn open(
        &mut self,
        request: &Request,
        clock: WallMillis,
        config: &MachineConfig,
    ) -> Result<(), Refusal> {
        if !request.opens_session {
            return Err(Refusal::Refused(CommandError::SessionExpired {
                client: request.client,
                seq: request.seq,
            }));
        }
        if self.sessions.len() >= config.sessions_max {
            return Err(Refusal::Refused(CommandError::TooManySessions {
                sessions_max: config.sessions_max,
            }));
        }
        let session = Session {
            results: BTreeMap::new(),
            first_unacked: 0,
            active_at: clock,
        };
        self.by_activity.insert((clock, request.client));
        // Persisted even if the write is refused after all: every replica keeps it alike.
        self.changes.insert(request.client);
        self.sessions.insert(request.client, session);
        Ok(())
    }

    /// The client has every answer below `first_unacked`: their results go.
    fn acknowledge(&mut self, client: ClientId, first_unacked: u64) {
        let Some(session) = self.sessions.get_mut(&client) else {
            return;
        };
        if first_unacked <= session.first_unacked {
            return;
        }
        session.first_unacked = first_unacked;
        let kept = session.results.split_off(&first_unacked);
        let dropped = std::mem::replace(&mut session.results, kept);
        self.bytes -= dropped.values().map(result_bytes).sum::<usize>();
        self.changes.insert(client);
    }

    /// Keeps a write's result in its (admitted, so present) session, active at `clock`.
    pub(super) fn remember(
        &mut self,
        client: ClientId,
        seq: u64,
        result: Result<Outcome, CommandError>,
        clock: WallMillis,
    ) {
        let session = self
            .sessions
            .get_mut(&client)
            .expect("a write is admitted only with a session");
        self.by_activity.remove(&(session.active_at, client));
        session.active_at = clock;
        self.bytes += result_bytes(&result);
        if let Some(replaced) = session.results.insert(seq, result) {
            // Only a planted bug applies a seq twice.
            self.bytes -= result_bytes(&replaced);
        }
        self.by_activity.insert((clock, client));
        self.changes.insert(client);
        assert_eq!(self.sessions.len(), self.by_activity.len());
    }

    /// Every session, by client.
    #[cfg(test)]
    pub(super) fn all(&self) -> &BTreeMap<ClientId, Session> {
        &self.sessions
    }

    /// The results' bytes in all sessions, checked against a recount.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        let sum: usize = self.sessions.values().map(Session::result_bytes).sum();
        assert_eq!(
            self.bytes, sum,
            "the running total is the sum over the sessions"
        );
        self.bytes
    }
}
