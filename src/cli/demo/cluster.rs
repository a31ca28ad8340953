//! The CLI's side of a local cluster ([`crate::local`], which starts and stops it): stopping
//! it on Ctrl-C or SIGTERM, and node status in the demo's words.

use super::retry::client_error;
use crate::client::conn::Client;
use crate::local::Processes;
pub(crate) use crate::local::{LocalCluster, LocalNode};
use crate::protocol::admin::NodeStatus;
use anyhow::{Context, bail};
use std::sync::Arc;

/// Stops the nodes and exits the process on Ctrl-C or SIGTERM. Call inside the runtime.
pub(crate) fn stop_on_signal(processes: Arc<Processes>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    tokio::spawn(async move {
        let code = tokio::select! {
            _ = interrupt.recv() => 130,
            _ = terminate.recv() => 143,
        };
        processes.stop();
        eprintln!("\ncapdial: interrupted; the cluster is stopped");
        std::process::exit(code);
    });
    Ok(())
}

/// A node's status, asked of that node.
pub(crate) async fn node_status(client: &Client, address: &str) -> anyhow::Result<NodeStatus> {
    match crate::local::node_status(client, address).await {
        Ok(status) => Ok(status),
        Err(error) => {
            let message = match client_error(&error) {
                Some(client_error) => client_error.to_string(),
                None => format!("{error:#}"),
            };
            bail!("status of {address}: {message}")
        }
    }
}
