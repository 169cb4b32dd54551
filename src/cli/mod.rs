//! The `shoal` command line: argument parsing and one module per verb group. The binary's edge:
//! errors here are `anyhow`, printed once with their causes.

pub mod agent;
pub mod client;
pub mod node;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

/// shoal: a masterless container orchestrator.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    /// The node's data dir (its id, peers, keys and API socket).
    #[arg(long, global = true, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node.
    Agent(agent::AgentArgs),
    /// Manage nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
}

/// How list and inspect verbs print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Entry point of the `shoal` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let data_dir = cli
        .data_dir
        .unwrap_or_else(crate::agent::datadir::default_data_dir);
    let result = match cli.command {
        Command::Agent(args) => agent::run(&data_dir, args),
        Command::Node(command) => node::run(&data_dir, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
