//! The `shoal` command line: argument parsing and one module per verb group. The binary's edge:
//! errors here are `anyhow`, printed once with their causes.

pub mod agent;
pub mod client;
pub mod cluster;
pub mod flags;
pub mod network;
pub mod node;
pub mod output;
pub mod progress;
pub mod ps;
pub mod service;
pub mod stack;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// shoal: a masterless container orchestrator.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    /// The node's data dir (its id, peers, keys and API socket).
    #[arg(long, global = true, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Talk to the node at ADDR[:PORT] (its gossip port, 7946 by default) over mutual TLS
    /// instead of the local agent; needs --bundle. Given before the verb, as docker's -H (a
    /// verb's own --host, as `service create --host`, is another flag).
    #[arg(short = 'H', long, env = "SHOAL_HOST", value_name = "ADDR[:PORT]")]
    host: Option<String>,
    /// The client bundle for --host (`shoal cluster client-bundle NAME > FILE` issues one).
    #[arg(long, env = "SHOAL_BUNDLE", value_name = "FILE")]
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
    /// Manage service networks (overlay networks spanning the cluster).
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage the cluster's trust: join tokens, gossip keys, client bundles.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
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
    receipt_notes(&receipt);
    Ok(())
}

/// Says on stderr when a change wrote nothing or could not reach any peer yet.
pub fn receipt_notes(receipt: &shoal_core::api::ChangeReceipt) {
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
        Command::Network(command) => network::run(&data_dir, command),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        let mut all = vec!["shoal"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.command)
    }

    #[test]
    fn docker_verbs_and_flags_parse() {
        for ok in [
            &[
                "service",
                "create",
                "--name",
                "web",
                "--replicas",
                "2",
                "-p",
                "8080:8080",
                "shoal-demo:v1",
            ][..],
            &[
                "service", "create", "-d", "-q", "--name", "w", "img:1", "sh", "-c", "echo hi",
            ],
            &["service", "update", "--rollback", "-d", "web"],
            &["service", "update", "--force", "--detach", "web"],
            &["service", "rollback", "web"],
            &["service", "scale", "-d", "a=1", "b=2"],
            &[
                "service",
                "ls",
                "-q",
                "--filter",
                "name=a",
                "--filter",
                "label=x=y",
                "--no-trunc",
            ],
            &["service", "ls", "--format", "{{.Name}} {{.Replicas}}"],
            &["service", "ls", "--format", "table {{.Name}}\\t{{.Image}}"],
            &[
                "service",
                "ps",
                "a",
                "b",
                "-q",
                "--no-trunc",
                "-f",
                "desired-state=running",
            ],
            &["service", "inspect", "a", "b", "--pretty"],
            &["service", "rm", "a", "b"],
            &["stack", "deploy", "-c", "-", "--prune", "shop"],
            &["stack", "deploy", "-c", "a.yml", "--detach=false", "shop"],
            &["stack", "deploy", "-c", "a.yml", "-d", "shop"],
            &["stack", "services", "shop", "--format", "{{.Name}}"],
            &["node", "rm", "--force", "n2", "n3"],
            &["node", "ls", "-q", "--filter", "role=manager"],
            &["node", "inspect", "self", "--pretty"],
            &[
                "network",
                "create",
                "--driver",
                "overlay",
                "--subnet",
                "10.50.0.0/16",
                "--attachable",
                "--label",
                "team=a",
                "--label",
                "flag",
                "shared",
            ],
            &["network", "create", "-d", "overlay", "--internal", "back"],
            &["network", "ls", "-q"],
            &[
                "network",
                "ls",
                "--format",
                "json",
                "--filter",
                "dangling=true",
            ],
            &["network", "list", "--format", "{{.Name}} {{.Driver}}"],
            &["network", "inspect", "a", "b", "-f", "{{.Id}}", "--verbose"],
            &["network", "rm", "a", "b"],
            &["network", "remove", "a"],
            &[
                "agent",
                "--entrypoint",
                "web=:80",
                "--entrypoint",
                "admin=127.0.0.1:8081",
            ],
        ] {
            if let Err(e) = parse(ok) {
                panic!("{ok:?}: {e}");
            }
        }
        for bad in [
            &["service", "update", "--rollback", "--image", "x:1", "web"][..],
            &["service", "ls", "--format", "{{.Name"],
            &["agent", "--entrypoint", "web"],
            &["service", "create", "--name", "w"],
            &["network", "create", "--subnet", "10.50.0.1/16", "x"],
            &["network", "create"],
            &["network", "inspect"],
            &["network", "rm"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        let Ok(Command::Stack(stack::StackCommand::Deploy { detach, prune, .. })) =
            parse(&["stack", "deploy", "-c", "a.yml", "shop"])
        else {
            panic!("not a deploy");
        };
        assert!(detach && !prune, "docker's defaults: detached, no prune");
        let Ok(Command::Network(network::NetworkCommand::Create {
            driver,
            subnet,
            labels,
            ..
        })) = parse(&["network", "create", "--label", "k=v", "n"])
        else {
            panic!("not a network create");
        };
        assert_eq!(driver, "overlay", "shoal's only driver is the default");
        assert_eq!(subnet, None);
        assert_eq!(labels, [("k".to_string(), "v".to_string())]);
    }
}
