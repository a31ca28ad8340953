//! The failover measurement of `capdial bench sweep --failover`: writers keep putting to a
//! keyspace while the node that serves their writes is killed (`kill -9`), and the longest
//! time without any write completing is reported, for `strong` (the killed node is the
//! Raft leader: writes wait for the failure to be noticed and a new election) and `paxos`
//! (no leader: writes wait only for the client to move to another node).
//!
//! Needs the bench's own local cluster (`--cluster`): only it can kill a node. The killed
//! node is restarted after each measurement, so the next starts with every node up.

use super::target::Target;
use crate::client::conn::Client;
use crate::local::LocalCluster;
use crate::protocol::{KeyspaceMode, Operation};
use bytes::Bytes;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Writers running at once: enough that one stuck on the killed node does not hide the
/// others, few enough for a 2-core machine.
const WRITERS: usize = 8;
/// Keys the writers spread over.
const KEYS: u64 = 1_000;

/// One mode's measurement.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct FailoverRow {
    pub(crate) mode: String,
    /// The node killed: the one that answered the last write before the kill.
    pub(crate) killed: String,
    /// The longest time, from the kill on, with no write completing anywhere, in ms.
    pub(crate) longest_stall_ms: f64,
    /// The longest gap between completions before the kill, for scale, in ms.
    pub(crate) longest_gap_before_ms: f64,
    pub(crate) writes_ok: u64,
    pub(crate) writes_failed: u64,
}

/// What each writer saw: completion times of successful writes, and failures.
#[derive(Default)]
struct Seen {
    done: Vec<Instant>,
    failed: u64,
}

async fn writer(client: Client, keyspace: String, index: usize, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let mut n = index as u64;
    while !stop.load(Ordering::Relaxed) {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = Bytes::from(format!("failover-{:04}", (n >> 33) % KEYS));
        let put = Operation::Put {
            key,
            value: Bytes::from_static(b"v"),
            context: None,
        };
        match client.execute(&keyspace, put, None, None, None).await {
            Ok(_) => seen.done.push(Instant::now()),
            Err(_) => seen.failed += 1,
        }
    }
    seen
}

/// The longest gap between consecutive instants of `times` (sorted) within `from..to`,
/// counting the edges `from` and `to` themselves.
fn longest_gap(times: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for at in times.iter().copied().filter(|at| *at >= from && *at <= to) {
        longest = longest.max(at - last);
        last = at;
    }
    longest.max(to.saturating_duration_since(last))
}

/// Measures one keyspace: `before` of writes, the kill, `after` of writes.
pub(crate) async fn measure(
    target: &Target,
    cluster: &LocalCluster,
    keyspace: &str,
    mode: KeyspaceMode,
    before: Duration,
    after: Duration,
) -> anyhow::Result<FailoverRow> {
    target.ensure_keyspace(keyspace, mode).await?;
    // Who serves writes now: the leader for strong, the client's node for paxos.
    let probe = Operation::Put {
        key: Bytes::from_static(b"failover-probe"),
        value: Bytes::from_static(b"v"),
        context: None,
    };
    let (_, receipt) = target
        .client
        .execute(keyspace, probe, None, None, None)
        .await
        .map_err(|error| anyhow::anyhow!("probe write: {error}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    // Writers start at every node in turn, as clients spread over a cluster do: a strong
    // keyspace sends them all on to its leader; a paxos one serves each where it arrives.
    let addresses = target.addresses();
    let writers: Vec<_> = (0..WRITERS)
        .map(|index| {
            let preferred = addresses.get(index % addresses.len().max(1));
            let client = target.client.fork(preferred.map(String::as_str));
            tokio::spawn(writer(client, keyspace.to_string(), index, stop.clone()))
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(before).await;
    let killed_at = Instant::now();
    cluster.kill(receipt.node)?;
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::Relaxed);
    let ended = Instant::now();
    let mut done = Vec::new();
    let mut failed = 0;
    for writer in writers {
        let seen = writer.await?;
        done.extend(seen.done);
        failed += seen.failed;
    }
    done.sort();
    cluster.restart(receipt.node).await?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(FailoverRow {
        mode: super::mode_name(mode).to_string(),
        killed: receipt.node.to_string(),
        longest_stall_ms: ms(longest_gap(&done, killed_at, ended)),
        longest_gap_before_ms: ms(longest_gap(&done, started, killed_at)),
        writes_ok: done.len() as u64,
        writes_failed: failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_counts_the_window_edges() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let times = [at(10), at(20), at(500), at(520)];
        assert_eq!(
            longest_gap(&times, at(0), at(600)),
            Duration::from_millis(480)
        );
        // Nothing after 520 until the end at 2000: that silence is the stall.
        assert_eq!(
            longest_gap(&times, at(0), at(2000)),
            Duration::from_millis(1480)
        );
        assert_eq!(longest_gap(&[], at(0), at(100)), Duration::from_millis(100));
    }
}
