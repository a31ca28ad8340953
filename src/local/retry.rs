//! Bounded retries for local clusters, the demo and the benchmark: a cluster that just
//! started, a keyspace not yet applied on every node, an election under way all answer with
//! errors that go away by themselves. Every retry loop here ends at a deadline.

use crate::client::conn::ConnError;
use crate::protocol::ClientError;
use std::future::Future;
use std::time::{Duration, Instant};

/// Pause between two attempts: short, because the demo waits for elections (hundreds of
/// milliseconds) and should notice the outcome quickly.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The node's own error inside a client library error, if the node answered.
pub(crate) fn client_error(error: &ConnError) -> Option<&ClientError> {
    match error {
        ConnError::Client(client_error) => Some(client_error),
        _ => None,
    }
}

/// Whether `error` may go away by waiting: no leader yet, a keyspace not yet applied on the
/// node asked, a node not yet listening, too few replicas reachable yet. Retrying is safe:
/// strong writes are retried by the library with the same sequence number, and the demo's
/// eventual writes (set adds, lww puts) are idempotent. Errors about the request do not.
pub(crate) fn transient(error: &ConnError) -> bool {
    match client_error(error) {
        Some(client_error) => matches!(
            client_error,
            ClientError::Unavailable { .. }
                | ClientError::NotLeader { .. }
                | ClientError::UnknownKeyspace { .. }
                | ClientError::Timeout { .. }
                | ClientError::Backpressure
                | ClientError::NotEnoughReplicas { .. }
                | ClientError::QuorumNotReached { .. }
                | ClientError::SessionNotSeen
        ),
        // The node may not listen yet, or a connection broke; a bad certificate or endpoint
        // does not heal by waiting.
        None => matches!(
            error,
            ConnError::Connect { .. } | ConnError::Lost { .. } | ConnError::Timeout { .. }
        ),
    }
}

/// Runs `attempt` until it succeeds, fails with a non-transient error, or `deadline` passes
/// (then the last error is returned).
pub(crate) async fn retry_until<T, F, Fut>(
    deadline: Instant,
    mut attempt: F,
) -> Result<T, ConnError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ConnError>>,
{
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if transient(&error) && Instant::now() < deadline => {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A one-line message for an error, preferring the node's own words.
pub(crate) fn describe(error: &ConnError) -> String {
    match client_error(error) {
        Some(client_error) => client_error.to_string(),
        None => error.to_string(),
    }
}
