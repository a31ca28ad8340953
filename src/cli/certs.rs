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
        /// Clients, comma-separated, each NAME or NAME:ROLE. ROLE is admin (the default here:
        /// these run the cluster), app (reads and writes data) or readonly (reads)
        #[arg(long, value_delimiter = ',', default_value = "admin", value_parser = parse_client)]
        clients: Vec<(String, Role)>,
        /// How many days the node and client certificates are valid (the CA: 3650)
        #[arg(long, default_value_t = tls::LEAF_DAYS_DEFAULT,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(tls::LEAF_DAYS_MAX)))]
        days: u32,
    },
    /// Sign one more certificate with the CA kept in DIR
    Issue {
        /// The directory holding the CA (ca.pem and ca-key.pem), as `certs init` wrote it
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Where to write the certificate, its key and a copy of ca.pem (default: DIR), so the
        /// CA key can stay apart from the directories the nodes and clients get
        #[arg(long, value_name = "OUT")]
        out: Option<PathBuf>,
        /// How many days the certificate is valid
        #[arg(long, default_value_t = tls::LEAF_DAYS_DEFAULT,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(tls::LEAF_DAYS_MAX)))]
        days: u32,
        /// A new node's id, like n4
        #[arg(long, conflicts_with = "client", required_unless_present = "client")]
        node: Option<String>,
        /// A new client's name
        #[arg(long)]
        client: Option<String>,
        /// The new client's role: app reads and writes data, readonly only reads, admin also
        /// creates and drops keyspaces, adds and removes members and sets fault rules
        #[arg(long, default_value = "app", requires = "client", value_parser = parse_role)]
        role: Role,
    },
}

/// Runs `capdial certs`.
pub fn run(args: &CertsArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        CertsCommand::Init {
            out,
            nodes,
            clients,
            days,
        } => {
            tls::init_for_days(out, nodes, clients, *days)
                .with_context(|| format!("creating certificates in {}", out.display()))?;
            println!(
                "wrote the CA, {} node and {} client certificates to {}",
                nodes.len(),
                clients.len(),
                out.display()
            );
        }
        CertsCommand::Issue {
            dir,
            out,
            days,
            node,
            client,
            role,
        } => {
            let (role, name) = match (node, client) {
                (Some(node), _) => (Role::Node, node),
                (None, Some(client)) => (*role, client),
                (None, None) => anyhow::bail!("name a --node or a --client"),
            };
            let out = out.as_ref().unwrap_or(dir);
            tls::issue_into(dir, out, role, name, *days)
                .with_context(|| format!("issuing a certificate into {}", out.display()))?;
            let what = match role {
                Role::Node => format!("node {name}"),
                role => format!("client {name} ({role})"),
            };
            println!(
                "wrote the certificate of {what}, valid for {days} days, in {}",
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

/// `NAME` (an admin) or `NAME:ROLE`.
fn parse_client(text: &str) -> Result<(String, Role), String> {
    match text.split_once(':') {
        None => Ok((text.to_string(), Role::Admin)),
        Some((name, role)) => Ok((name.to_string(), role.parse()?)),
    }
}
