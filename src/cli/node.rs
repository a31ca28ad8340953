//! `capdial node`: runs one node until SIGINT or SIGTERM.

use crate::node::{self, PartialConfig, config::ClusterSetting};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// This node's id (n1, n2, ...). Must match its certificate, node-<id>.pem.
    #[arg(long)]
    id: Option<String>,
    /// UDP address of the QUIC endpoint, for peers and clients (e.g. 127.0.0.1:7001).
    #[arg(long)]
    listen: Option<String>,
    /// Every member of a new cluster: n1=HOST:PORT,n2=HOST:PORT,... With --join: the
    /// running cluster's members and this node.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Join a running cluster (after `capdial member add`): learn its voters from it rather
    /// than found a new cluster of --initial-cluster. Like etcd's
    /// --initial-cluster-state=existing; harmless on later restarts.
    #[arg(long)]
    join: bool,
    /// Directory of this node's redb file (created if missing).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory holding ca.pem and this node's certificate and key (`capdial certs init`).
    #[arg(long)]
    certs: Option<PathBuf>,
    /// The storage engine's page cache in MiB (default 64). Keys live on disk; this bounds
    /// what of them a node keeps in memory.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    cache_mb: Option<u32>,
    /// How many seconds ahead of this node's wall clock an `lww` value from a peer may be
    /// stamped (default 300). One stamped further ahead is refused, and counted in `status`,
    /// until this clock catches up: a peer with a wrong clock cannot drag this node's clock
    /// (and every later write here) into the future. A client's time for an `lww` write may
    /// be off by as much either way, and an `lww` delete is forgotten only once it is that old.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400 * 365))]
    clock_skew_max_secs: Option<u64>,
    /// How many recent changes each keyspace keeps for watches (default 10000): a strong
    /// watch may resume from a revision that far back, an eventual feed position that far
    /// back; older ones are refused (`Compacted`, `FeedGap`). Memory, not disk.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    watch_history: Option<u64>,
    /// At most this many MiB of keys and values per keyspace in that history (default 64).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    watch_history_mb: Option<u32>,
    /// A TOML file with the same settings (id, listen, initial_cluster, data_dir, certs, join,
    /// cache_mb, clock_skew_max_secs, watch_history, watch_history_mb); flags given on the
    /// command line win.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => PartialConfig::from_file(path)?,
        None => PartialConfig::default(),
    };
    let flags = PartialConfig {
        id: args.id,
        listen: args.listen,
        initial_cluster: args.initial_cluster.map(ClusterSetting::Text),
        data_dir: args.data_dir,
        certs: args.certs,
        join: args.join.then_some(true),
        cache_mb: args.cache_mb.map(|mb| mb as usize),
        clock_skew_max_secs: args.clock_skew_max_secs,
        watch_history: args.watch_history.map(|n| n as usize),
        watch_history_mb: args.watch_history_mb.map(|mb| mb as usize),
    };
    let config = file.overridden_by(flags).resolve()?;
    // Colours only on a terminal: the demo and the tests write node logs to files.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colours)
        .with_target(false)
        .init();
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let id = config.id;
    runtime
        .block_on(node::run(config, shutdown_signal()))
        .with_context(|| format!("node {id}"))?;
    Ok(ExitCode::SUCCESS)
}

/// glibc gives each thread that allocates under contention an arena of its own (up to eight
/// per core) and keeps what is freed there for that arena. A node's transient work (snapshot
/// chunks streamed, anti-entropy rounds, commits on blocking threads) then leaves tens of MB
/// resident per arena: at 300,000 keys a node grew from ~130 to ~200 MB after a join and a
/// snapshot catch-up, and stayed at ~130 MB with two arenas (scripts/scale.sh). Two arenas
/// keep memory set by configuration; the node's threads rarely contend in malloc.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc parameter; it is called before the runtime's
    // threads exist, and a refusal (return 0) leaves glibc's default in place.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
