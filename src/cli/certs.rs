//! `capdial certs`: the cluster CA and the certificates of nodes and clients.

use crate::net::tls::{self, Role};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create a cluster CA and certificates for the nodes and clients named
    Init {
        /// Directory to write into (created if missing; existing files are never overwritten)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Node ids, comma-separated: n1,n2,n3
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// Client names, comma-separated
        #[arg(long, value_delimiter = ',', default_value = "admin")]
        clients: Vec<String>,
    },
    /// Sign one more certificate with the CA kept in DIR
    Issue {
        /// The directory `certs init` wrote
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// A new node's id, like n4
        #[arg(long, conflicts_with = "client", required_unless_present = "client")]
        node: Option<String>,
        /// A new client's name
        #[arg(long)]
        client: Option<String>,
    },
}

/// Runs `capdial certs`.
pub fn run(args: &CertsArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        CertsCommand::Init {
            out,
            nodes,
            clients,
        } => {
            tls::init(out, nodes, clients)
                .with_context(|| format!("creating certificates in {}", out.display()))?;
            println!(
                "wrote the CA, {} node and {} client certificates to {}",
                nodes.len(),
                clients.len(),
                out.display()
            );
        }
        CertsCommand::Issue { dir, node, client } => {
            let (role, name) = match (node, client) {
                (Some(node), _) => (Role::Node, node),
                (None, Some(client)) => (Role::Client, client),
                (None, None) => anyhow::bail!("name a --node or a --client"),
            };
            tls::issue(dir, role, name)
                .with_context(|| format!("issuing a certificate in {}", dir.display()))?;
            println!(
                "wrote {} in {}",
                tls::subject_name(role, name),
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
