//! The load itself: the preload, then closed-loop tasks over a warm-up and a measured window.

use crate::keys::{KeyChooser, key_name};
use crate::stats::{Recorder, error_kind};
use etcd_client::{GetOptions, KvClient};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::time::timeout_at;

/// Tasks writing the keys in the preload: enough to keep etcd's batching busy (the preload
/// is not measured, it only has to be quick).
const PRELOAD_TASKS: u64 = 64;
/// Attempts per key in the preload before the run gives up.
const PRELOAD_ATTEMPTS: u32 = 3;
/// Upper bound on the whole preload.
const PRELOAD_LIMIT: Duration = Duration::from_secs(600);
/// Pause after a failed request: a dead endpoint fails at once, and without the pause a task
/// would spin and turn a short outage into millions of errors and a busy CPU.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Everything the tasks share.
pub struct Plan {
    pub keys: KeyChooser,
    pub key_count: u64,
    pub read_ratio: f64,
    pub serializable: bool,
    pub value: Vec<u8>,
    pub request_timeout: Duration,
    pub seed: u64,
}

/// The merged result of all tasks.
pub struct Outcome {
    pub update: Recorder,
    pub read: Recorder,
    /// From the start of the measured window until the last task stopped (the window plus
    /// the last requests' latency).
    pub elapsed: Duration,
}

/// A deterministic value of `size` printable bytes.
pub fn make_value(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..size)
        .map(|_| b'a' + rng.random_range(0..26u8))
        .collect()
}

/// Writes every key once. Fails if a key cannot be written in PRELOAD_ATTEMPTS tries, or
/// if the whole preload takes longer than PRELOAD_LIMIT.
pub async fn preload(plan: Arc<Plan>, writes: &[KvClient]) -> Result<(), String> {
    let started = Instant::now();
    let deadline = started + PRELOAD_LIMIT;
    let done = Arc::new(AtomicU64::new(0));
    let progress = tokio::spawn(report_progress(done.clone(), plan.key_count));
    let mut tasks = Vec::new();
    for t in 0..PRELOAD_TASKS.min(plan.key_count) {
        let kv = writes[t as usize % writes.len()].clone();
        tasks.push(tokio::spawn(preload_stride(
            kv,
            plan.clone(),
            t,
            deadline,
            done.clone(),
        )));
    }
    let mut result = Ok(());
    for task in tasks {
        let outcome = task.await.map_err(|e| format!("preload task: {e}"))?;
        if result.is_ok() {
            result = outcome;
        }
    }
    progress.abort();
    let written = done.load(Ordering::Relaxed);
    eprintln!(
        "\rpreload: {written}/{} keys in {:.1} s",
        plan.key_count,
        started.elapsed().as_secs_f64()
    );
    result
}

/// Writes keys t, t + 64, t + 128, ... with retries.
async fn preload_stride(
    mut kv: KvClient,
    plan: Arc<Plan>,
    first: u64,
    deadline: Instant,
    done: Arc<AtomicU64>,
) -> Result<(), String> {
    for index in (first..plan.key_count).step_by(PRELOAD_TASKS as usize) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let limit = (Instant::now() + plan.request_timeout).min(deadline);
            let put = kv.put(key_name(index), plan.value.clone(), None);
            match timeout_at(limit.into(), put).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) if attempt < PRELOAD_ATTEMPTS && Instant::now() < deadline => {
                    eprintln!("preload: put {}: {e}; retrying", key_name(index));
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
                Ok(Err(e)) => return Err(format!("preload: put {}: {e}", key_name(index))),
                Err(_) if attempt < PRELOAD_ATTEMPTS && Instant::now() < deadline => {
                    eprintln!("preload: put {} timed out; retrying", key_name(index));
                }
                Err(_) => return Err(format!("preload: put {} timed out", key_name(index))),
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// One progress line a second on stderr (rewritten in place on a terminal).
async fn report_progress(done: Arc<AtomicU64>, total: u64) {
    let terminal = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let written = done.load(Ordering::Relaxed);
        let end = if terminal { "" } else { "\n" };
        eprint!("\rpreload: {written}/{total} keys{end}");
        let _ = std::io::stderr().flush();
    }
}

/// Runs `concurrency` closed-loop tasks; task i uses connection i % C of each pool.
pub async fn measure(
    plan: Arc<Plan>,
    writes: &[KvClient],
    reads: &[KvClient],
    concurrency: u64,
    warmup: Duration,
    duration: Duration,
) -> Result<Outcome, String> {
    let start = Instant::now();
    let window = Window {
        from: start + warmup,
        until: start + warmup + duration,
    };
    let mut tasks = Vec::new();
    for i in 0..concurrency as usize {
        // An empty pool belongs to an operation this workload never sends.
        let write = writes.get(i % writes.len().max(1)).cloned();
        let read = reads.get(i % reads.len().max(1)).cloned();
        tasks.push(tokio::spawn(closed_loop(
            plan.clone(),
            i as u64,
            write,
            read,
            window,
        )));
    }
    let mut outcome = Outcome {
        update: Recorder::new(),
        read: Recorder::new(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (update, read) = task.await.map_err(|e| format!("load task: {e}"))?;
        outcome.update.merge(&update);
        outcome.read.merge(&read);
    }
    outcome.elapsed = window.from.elapsed();
    Ok(outcome)
}

/// The measured window, counted the way `capdial bench` counts it: a request is recorded
/// if it began in [from, until); no request begins at or after `until`, and the ones still
/// in flight then finish (each bounded by the request timeout) and count.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

/// One task: one request outstanding at a time until the window closes.
async fn closed_loop(
    plan: Arc<Plan>,
    task: u64,
    mut write: Option<KvClient>,
    mut read: Option<KvClient>,
    window: Window,
) -> (Recorder, Recorder) {
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    // Same seed, a stream per task: tasks pick independent keys, and runs repeat.
    rng.set_stream(task);
    let (mut updates, mut reads) = (Recorder::new(), Recorder::new());
    loop {
        let key = key_name(plan.keys.pick(&mut rng));
        let is_read = rng.random::<f64>() < plan.read_ratio;
        let begun = Instant::now();
        if begun >= window.until {
            break;
        }
        let limit = begun + plan.request_timeout;
        let (result, recorder) = match (is_read, read.as_mut(), write.as_mut()) {
            (true, Some(kv), _) => (get(kv, key, &plan, limit).await, &mut reads),
            (false, _, Some(kv)) => (put(kv, key, &plan, limit).await, &mut updates),
            _ => unreachable!("a pool exists for every operation the ratio allows"),
        };
        let counted = begun >= window.from;
        match result {
            Ok(found) if counted => {
                recorder.record_ok(begun.elapsed());
                recorder.misses += u64::from(!found);
            }
            Ok(_) => {}
            Err(kind) => {
                if counted {
                    recorder.record_error(kind);
                }
                pause_until(window.until).await;
            }
        }
    }
    (updates, reads)
}

/// A put; Ok(true) once etcd acked it, or the error's kind.
async fn put(kv: &mut KvClient, key: String, plan: &Plan, limit: Instant) -> Result<bool, String> {
    match timeout_at(limit.into(), kv.put(key, plan.value.clone(), None)).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(e)) => Err(error_kind(&e)),
        Err(_) => Err("timeout".into()),
    }
}

/// A single-key get; Ok(whether it found a value), or the error's kind.
async fn get(kv: &mut KvClient, key: String, plan: &Plan, limit: Instant) -> Result<bool, String> {
    let options = plan
        .serializable
        .then(|| GetOptions::new().with_serializable());
    match timeout_at(limit.into(), kv.get(key, options)).await {
        Ok(Ok(response)) => Ok(!response.kvs().is_empty()),
        Ok(Err(e)) => Err(error_kind(&e)),
        Err(_) => Err("timeout".into()),
    }
}

async fn pause_until(until: Instant) {
    let wake = (Instant::now() + ERROR_PAUSE).min(until);
    tokio::time::sleep_until(wake.into()).await;
}
