//! The `shoal` command line: argument parsing and one module per verb group. The binary's edge:
//! errors here are `anyhow`, printed once with their causes.

pub mod agent;
pub mod client;
pub mod cluster;
pub mod node;
pub mod ps;
pub mod service;
pub mod stack;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

/// shoal: a masterless container orchestrator.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    /// The node's data dir (its id, peers, keys and API socket).
    #[arg(long, global = true, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Talk to the node at ADDR[:PORT] (its gossip port, 7946 by default) over mutual TLS
    /// instead of the local agent; needs --bundle.
    #[arg(long, global = true, env = "SHOAL_HOST", value_name = "ADDR[:PORT]")]
    host: Option<String>,
    /// The client bundle for --host (`shoal cluster client-bundle NAME > FILE` issues one).
    #[arg(long, global = true, env = "SHOAL_BUNDLE", value_name = "FILE")]
    bundle: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the big variant would only obscure the clap derive.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node.
    Agent(agent::AgentArgs),
    /// Manage nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Manage stacks (compose files deployed as a unit).
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// Manage services.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Manage the cluster's trust: join tokens, gossip keys, client bundles.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

/// How list and inspect verbs print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Parses `KEY=VALUE` flags.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Prints what a change did, and says so on stderr when it could not reach any peer yet.
pub fn print_receipt(response: shoal_core::api::Response) -> anyhow::Result<()> {
    let shoal_core::api::Response::Changed(receipt) = response else {
        anyhow::bail!("unexpected answer from the agent: {response:?}");
    };
    for action in &receipt.actions {
        println!("{action}");
    }
    if !receipt.changed {
        eprintln!("nothing changed");
    } else if receipt.peers_live == 0 {
        eprintln!(
            "note: no other live node; the change is durable here and spreads when peers join"
        );
    } else if receipt.peers_acked == 0 {
        eprintln!(
            "warning: none of {} live peers acknowledged yet; the change is durable here and \
             spreads by gossip and anti-entropy",
            receipt.peers_live
        );
    }
    Ok(())
}

/// Entry point of the `shoal` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let data_dir = cli
        .data_dir
        .unwrap_or_else(crate::agent::datadir::default_data_dir);
    if let (Some(host), false) = (&cli.host, matches!(cli.command, Command::Agent(_))) {
        if let Err(e) = client::use_remote(host, cli.bundle.clone()) {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Agent(args) => agent::run(&data_dir, args),
        Command::Cluster(command) => cluster::run(&data_dir, command),
        Command::Node(command) => node::run(&data_dir, command),
        Command::Stack(command) => stack::run(&data_dir, command),
        Command::Service(command) => service::run(&data_dir, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
