//! The load generator: `concurrency` tasks in one process, each with its own client session
//! forked from a small pool of connections, issuing a workload's requests in a closed loop
//! (one request outstanding per task) or an open loop at a fixed rate.
//!
//! ```text
//! preload ── keys 0..N written once (64 in flight), a progress line per second
//!    │
//! run ────── tasks start together; requests begun during the warm-up are not recorded;
//!    │       in an open loop (--rate) each request has an intended start, and its latency is
//!    │       measured from there, so a stall counts against every request it delayed
//!    │       (no coordinated omission)
//!    │
//! outcome ── one Recorder merged from the tasks, and the measured window
//! ```

use super::stats::{Recorder, error_kind};
use super::workload::{
    Chooser, KeyCount, Mix, OpKind, Step, ZIPFIAN_THETA, Zipfian, key_name, scan_prefix, value,
};
use crate::cli::demo::retry::{describe, retry_until};
use crate::cli::ops::show::write_name;
use crate::client::conn::{Client, ConnError};
use crate::eventual::{ReadValue, SessionToken, ValueType};
use crate::protocol::{
    Answer, KeyspaceMode, Operation, Position, ReadLevel, Receipt, WriteLevel, default_read,
};
use anyhow::Context;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Requests in flight while preloading.
const PRELOAD_IN_FLIGHT: u64 = 64;
/// How long one preload write may keep being retried (a leader election, a keyspace not yet
/// applied everywhere) before the preload gives up.
const PRELOAD_RETRY: Duration = Duration::from_secs(20);
/// Set members per key: a set update adds one of these, so a key's state stays bounded.
const SET_MEMBERS_PER_KEY: u64 = 16;
/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// When a run stops: after `duration` of measuring, or once `ops` measured requests were
/// started, whichever comes first.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stop {
    pub(crate) duration: Duration,
    pub(crate) ops: Option<u64>,
}

/// One workload against one keyspace.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) keyspace: String,
    pub(crate) mode: KeyspaceMode,
    pub(crate) mix: Mix,
    pub(crate) keys: u64,
    pub(crate) value_size: usize,
    /// `None`: the keyspace's default (linearizable, or local).
    pub(crate) read: Option<ReadLevel>,
    /// `None`: local for eventual keyspaces; strong ones take none.
    pub(crate) write: Option<WriteLevel>,
    pub(crate) concurrency: u32,
    /// Pools of connections (one connection per node each) the tasks share.
    pub(crate) connections: u32,
    /// Requests per second over all tasks (open loop); `None`: closed loop.
    pub(crate) rate: Option<f64>,
    pub(crate) stop: Stop,
    pub(crate) warmup: Duration,
    pub(crate) seed: u64,
    /// Print a progress line to stderr every second.
    pub(crate) progress: bool,
}

impl Plan {
    pub(crate) fn read_level(&self) -> ReadLevel {
        self.read.unwrap_or_else(|| default_read(self.mode))
    }

    /// The level a write asks for, as results name it: `majority` for a strong write.
    pub(crate) fn write_name(&self) -> &'static str {
        match self.mode {
            KeyspaceMode::Strong | KeyspaceMode::Paxos => "majority",
            KeyspaceMode::Eventual(_) => write_name(self.write.unwrap_or(WriteLevel::Local)),
        }
    }

    /// The level each operation type of the mix is recorded under.
    pub(crate) fn levels(&self) -> Vec<(OpKind, String)> {
        self.mix
            .kinds()
            .map(|kind| {
                let level = if kind.writes() {
                    self.write_name()
                } else {
                    self.read_level().name()
                };
                (kind, level.to_string())
            })
            .collect()
    }
}

/// What a run measured.
pub(crate) struct Outcome {
    pub(crate) recorder: Recorder,
    /// From the end of the warm-up to the last task's end.
    pub(crate) window: Duration,
}

/// What every task of a run shares.
struct Shared {
    plan: Plan,
    recorder: Mutex<Recorder>,
    /// Requests begun before this are not recorded.
    measure_from: Instant,
    /// No request begins after this.
    end: Instant,
    /// Measured requests begun so far, against `plan.stop.ops`.
    started: AtomicU64,
    /// Requests answered so far, the warm-up's included, for the progress line.
    answered: AtomicU64,
}

impl Shared {
    /// Whether a request may begin at `now`: before the end, and within the op budget.
    fn may_begin(&self, now: Instant) -> bool {
        if now >= self.end {
            return false;
        }
        match self.plan.stop.ops {
            Some(ops) if now >= self.measure_from => {
                self.started.fetch_add(1, Ordering::Relaxed) < ops
            }
            _ => true,
        }
    }

    fn record(&self, kind: OpKind, begun: Instant, result: &Result<Option<Receipt>, String>) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if begun < self.measure_from {
            return;
        }
        let mut recorder = self
            .recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(receipt) => recorder.success(kind, begun.elapsed(), receipt.as_ref()),
            Err(kind_name) => recorder.failure(kind, kind_name),
        }
    }
}

/// One session per task, forked from `pools` clients (one connection per node each); task
/// `i` asks node `i mod n` first for what any node may serve.
pub(crate) fn sessions(pools: &[Client], nodes: &[String], count: u32) -> Vec<Client> {
    (0..count as usize)
        .map(|index| {
            let pool = &pools[index % pools.len()];
            pool.fork(nodes.get(index % nodes.len().max(1)).map(String::as_str))
        })
        .collect()
}

/// What one task sends: the plan's operations for its keyspace's type, its session token.
struct Issuer {
    plan: Plan,
    client: Client,
    task: u64,
    sequence: u64,
    /// The token of this task's last eventual write, for session reads.
    token: Option<SessionToken>,
}

impl Issuer {
    fn write_operation(&mut self, key: Bytes) -> Operation {
        self.sequence += 1;
        let bytes = self.plan.value_size;
        match self.plan.mode {
            KeyspaceMode::Eventual(ValueType::Counter) => Operation::Add { key, by: 1 },
            KeyspaceMode::Eventual(ValueType::Set) => {
                let mut member = value(bytes, self.sequence % SET_MEMBERS_PER_KEY, 0);
                member.truncate(bytes.max(1));
                Operation::SetAdd {
                    key,
                    members: vec![Bytes::from(member)],
                }
            }
            _ => Operation::Put {
                key,
                value: Bytes::from(value(bytes, self.task, self.sequence)),
                context: None,
            },
        }
    }

    async fn execute(&mut self, operation: Operation) -> Result<(Answer, Receipt), ConnError> {
        let write = operation.is_write();
        // Only eventual writes take a level: strong and paxos writes are always a majority's.
        let eventual = matches!(self.plan.mode, KeyspaceMode::Eventual(_));
        let read = (!write).then(|| self.plan.read_level());
        let write_level = (write && eventual).then(|| self.plan.write.unwrap_or(WriteLevel::Local));
        let session = (read == Some(ReadLevel::Session))
            .then_some(self.token)
            .flatten();
        let result = self
            .client
            .execute(&self.plan.keyspace, operation, read, write_level, session)
            .await;
        if let Ok((_, receipt)) = &result
            && let Position::Eventual {
                token: Some(token), ..
            } = &receipt.position
        {
            self.token = Some(*token);
        }
        result
    }

    /// Carries out one step; a success returns the receipt of its last request.
    async fn step(&mut self, step: Step) -> Result<Receipt, String> {
        let key = Bytes::from(key_name(step.key));
        let result = match step.kind {
            OpKind::Read => self.execute(Operation::Get { key }).await,
            OpKind::Update | OpKind::Insert => {
                let operation = self.write_operation(key);
                self.execute(operation).await
            }
            OpKind::Scan => {
                let prefix = Bytes::from(scan_prefix(step.key));
                // One page, as YCSB's scan reads one range: lengths stay far below a page.
                self.execute(Operation::Scan {
                    prefix,
                    limit: step.scan_length,
                    after: None,
                })
                .await
            }
            OpKind::ReadModifyWrite => return self.read_modify_write(key).await,
        };
        result
            .map(|(_, receipt)| receipt)
            .map_err(|error| error_kind(&error))
    }

    /// YCSB's read-modify-write: read the key, then write it back conditionally where the
    /// keyspace can (a cas on the revision read; an `mvreg` put with the context read).
    async fn read_modify_write(&mut self, key: Bytes) -> Result<Receipt, String> {
        let kind = |error: ConnError| error_kind(&error);
        let (answer, _) = self
            .execute(Operation::Get { key: key.clone() })
            .await
            .map_err(kind)?;
        let mut write = self.write_operation(key.clone());
        match (&answer, &mut write) {
            (Answer::Strong(current), Operation::Put { value, .. }) => {
                write = Operation::Cas {
                    key,
                    expected: current.as_ref().map(|versioned| versioned.mod_revision),
                    value: Some(value.clone()),
                };
            }
            (
                Answer::Eventual(ReadValue::MvReg { context, .. }),
                Operation::Put { context: slot, .. },
            ) => {
                *slot = Some(context.clone());
            }
            _ => {}
        }
        match self.execute(write).await.map_err(kind)? {
            (
                Answer::Cas {
                    succeeded: false, ..
                },
                _,
            ) => Err("cas-conflict".to_string()),
            (_, receipt) => Ok(receipt),
        }
    }
}

/// Writes every key once, `PRELOAD_IN_FLIGHT` at a time whatever the run's concurrency, over
/// sessions forked from `pools`, with a progress line on stderr.
pub(crate) async fn preload(
    plan: &Plan,
    pools: &[Client],
    nodes: &[String],
    quiet: bool,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let in_flight = PRELOAD_IN_FLIGHT.min(plan.keys) as u32;
    for (index, client) in sessions(pools, nodes, in_flight).into_iter().enumerate() {
        // Preload writes take the keyspace's default levels: local for eventual keys.
        let mut issuer = Issuer {
            plan: plan.clone(),
            client: client.clone(),
            task: index as u64,
            sequence: 0,
            token: None,
        };
        let next = Arc::clone(&next);
        let keys = plan.keys;
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= keys {
                    return Ok::<(), anyhow::Error>(());
                }
                let key = Bytes::from(key_name(index));
                let deadline = std::time::Instant::now() + PRELOAD_RETRY;
                let operation = issuer.write_operation(key);
                let client = issuer.client.clone();
                let keyspace = issuer.plan.keyspace.clone();
                retry_until(deadline, || {
                    client.execute(&keyspace, operation.clone(), None, None, None)
                })
                .await
                .map_err(|error| anyhow::anyhow!(describe(&error)))
                .with_context(|| format!("preloading key {index}"))?;
            }
        });
    }
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(result) => result.context("a preload task failed")??,
            },
            _ = ticker.tick(), if !quiet => {
                let done = next.load(Ordering::Relaxed).min(plan.keys);
                let rate = done as f64 / started.elapsed().as_secs_f64();
                eprintln!("  preloading {}: {done} of {} keys, {rate:.0} keys/s", plan.keyspace, plan.keys);
            }
        }
    }
    if !quiet {
        eprintln!(
            "  preloaded {} keys into {} in {:.1}s",
            plan.keys,
            plan.keyspace,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Runs the plan's workload over `sessions` (one per task) and returns what it measured.
pub(crate) async fn run(plan: &Plan, sessions: Vec<Client>) -> anyhow::Result<Outcome> {
    let now = Instant::now();
    let measure_from = now + plan.warmup;
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        recorder: Mutex::new(Recorder::new(plan.levels())),
        measure_from,
        end: measure_from + plan.stop.duration,
        started: AtomicU64::new(0),
        answered: AtomicU64::new(0),
    });
    let zipfian = Zipfian::new(plan.keys, ZIPFIAN_THETA);
    let count = KeyCount::new(plan.keys);
    let mut tasks = tokio::task::JoinSet::new();
    for (index, client) in sessions.into_iter().enumerate() {
        let seed = plan.seed.wrapping_mul(1_000_003).wrapping_add(index as u64);
        let chooser = Chooser::new(
            plan.mix.clone(),
            zipfian.clone(),
            plan.keys,
            count.clone(),
            seed,
        );
        let issuer = Issuer {
            plan: plan.clone(),
            client,
            task: index as u64,
            sequence: 0,
            token: None,
        };
        tasks.spawn(task(Arc::clone(&shared), issuer, chooser));
    }
    let progress = plan
        .progress
        .then(|| tokio::spawn(progress(Arc::clone(&shared))));
    while let Some(joined) = tasks.join_next().await {
        joined.context("a load task failed")?;
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    let window = Instant::now().saturating_duration_since(measure_from);
    let recorder = shared
        .recorder
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Outcome { recorder, window })
}

/// One task: a session read first needs a token, so such a task writes once (unrecorded);
/// then steps until the run ends.
async fn task(shared: Arc<Shared>, mut issuer: Issuer, mut chooser: Chooser) {
    if shared.plan.read_level() == ReadLevel::Session {
        let key = Bytes::from(key_name(issuer.task % shared.plan.keys.max(1)));
        let operation = issuer.write_operation(key);
        let _ = issuer.execute(operation).await;
    }
    // In an open loop each task sends every `interval`, measured from when it should have.
    let interval = shared
        .plan
        .rate
        .map(|rate| Duration::from_secs_f64(f64::from(shared.plan.concurrency) / rate));
    let mut intended = Instant::now();
    loop {
        if interval.is_some() {
            tokio::time::sleep_until(intended).await;
        }
        let begun = match interval {
            Some(_) => intended,
            None => Instant::now(),
        };
        if !shared.may_begin(begun) {
            return;
        }
        let step = chooser.next_step();
        let result = issuer.step(step).await.map(Some);
        shared.record(step.kind, begun, &result);
        if let Some(interval) = interval {
            intended += interval;
        }
    }
}

/// Prints answers per second over the last second, the highest p99 measured so far and the
/// errors, every second.
async fn progress(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.tick().await;
    let mut last = 0;
    let mut seconds = 0;
    loop {
        ticker.tick().await;
        seconds += 1;
        let answered = shared.answered.load(Ordering::Relaxed);
        let (errors, p99) = {
            let recorder = shared
                .recorder
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (recorder.errors(), recorder.p99_ms())
        };
        let phase = if Duration::from_secs(seconds) <= shared.plan.warmup {
            "warm-up"
        } else {
            "measuring"
        };
        eprintln!(
            "  {seconds:>3}s {phase}: {} ops/s, p99 so far {p99:.2} ms, {errors} errors",
            answered - last
        );
        last = answered;
    }
}
