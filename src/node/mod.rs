//! A capdial node: the thin async shell around the sans-IO cores.
//!
//! ```text
//!            one quinn endpoint (mutual TLS, cluster CA)
//!   ALPN capdial-peer/1 ──▶ Transport ──Inbound──▶ ┐
//!   ALPN capdial-client/2 ─▶ server ──ClientInput─▶ ├─▶ driver (one task) ─▶ core::NodeCore
//!                                                   │     (sans-IO: group 0 (catalog), strong
//!                        timers (poll_timeout) ───▶ ┘     groups, eventual engines, waiting
//!                                                          requests), one redb Store
//! ```
//!
//! The node is a core plus a shell. [`core`] decides everything and does no IO; the
//! simulator drives it (`capdial sim --mode node`). The shell is this module, [`driver`]
//! (the loop that feeds the core and carries out what it returns) and `server` (QUIC).
//! [`run`] opens the store, starts the endpoint and the transport, boots the core from what
//! the store holds (so a restart after `kill -9` resumes where the last fsync left it) and
//! serves until the shutdown future resolves.

pub mod config;
pub mod core;
mod driver;
mod error;
pub mod server;

pub use config::{NodeConfig, PartialConfig};
pub use core::{PeerMessage, catalog};
pub use error::NodeError;

/// How long a client request may wait inside a real node (see [`core::CoreConfig`]).
pub const REQUEST_WAIT_MAX: std::time::Duration = core::CoreConfig::REQUEST_WAIT_MAX;

use crate::net::peer::{Transport, TransportConfig};
use crate::net::tls::{Identity, Party};
use crate::storage::Store;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Client requests queued for the driver before client streams wait.
const CLIENT_QUEUE_MAX: usize = 4096;
/// Peer messages queued for the driver before peer streams wait.
const PEER_QUEUE_MAX: usize = 16_384;
/// How long a stopping node waits for its close to reach peers and clients.
const CLOSE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(1);
/// The store's file in the data directory.
pub const STORE_FILE: &str = "capdial.redb";

/// Runs a node until `shutdown` resolves. Prints one line on stdout once it serves.
pub async fn run(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let identity = Identity::load(&config.certs, Party::Node, &config.id.to_string())?;
    if !identity.is_valid_at(std::time::SystemTime::now()) {
        // Peers and clients will refuse it: say so before they do.
        tracing::warn!("this node's certificate is not valid now (expired, or not yet valid)");
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::Io {
        what: format!("creating {}", config.data_dir.display()),
        source,
    })?;
    let path = config.data_dir.join(STORE_FILE);
    let store = Arc::new(Store::open(&path, config.id, config.cache_bytes)?);
    let endpoint =
        quinn::Endpoint::server(identity.server_config()?, config.listen).map_err(|source| {
            NodeError::Io {
                what: format!("listening on {}", config.listen),
                source,
            }
        })?;
    let listen = endpoint.local_addr().map_err(|source| NodeError::Io {
        what: "reading the bound address".to_string(),
        source,
    })?;
    let transport_config = TransportConfig {
        id: config.id,
        peers: config::resolve(&config.initial_cluster).await?,
        rng_seed: config.id.0,
    };
    let transport = Transport::start(transport_config, &identity, endpoint.clone())?;
    let (client_tx, client_rx) = mpsc::channel(CLIENT_QUEUE_MAX);
    let (peer_tx, peer_rx) = mpsc::channel(PEER_QUEUE_MAX);
    let mut core_config = core::CoreConfig::new(
        config.id,
        listen.to_string(),
        config.initial_cluster.clone(),
    );
    core_config.join = config.join;
    core_config.clock_skew_max = config.clock_skew_max;
    core_config.watch = config.watch;
    let driver = driver::Driver::boot(core_config, store, transport.clone())?;
    tokio::spawn(server::accept_loop(
        endpoint.clone(),
        transport,
        client_tx,
        peer_tx,
    ));
    println!("capdial node {} listening on {listen}", config.id);
    tracing::info!(node = %config.id, %listen, "serving");
    let result = driver.run(client_rx, peer_rx, shutdown).await;
    // Tell peers and clients, so they reconnect at once instead of waiting out a timeout.
    endpoint.close(0u32.into(), b"node stopping");
    let _ = tokio::time::timeout(CLOSE_WAIT_MAX, endpoint.wait_idle()).await;
    result
}
