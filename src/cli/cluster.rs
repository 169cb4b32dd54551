//! `shoal cluster`: the cluster's trust — the join token, the gossip key, client bundles.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;

use super::{client::call, print_receipt};
use shoal_core::api::{Request, Response};

/// Verbs of `shoal cluster`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print the token a new node joins with (`shoal agent --join ADDR --token TOKEN`).
    JoinToken {
        /// Replace the token's secret first: the previous token stops admitting at once.
        #[arg(long)]
        rotate: bool,
        /// Print the token only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Rotate the gossip key with no downtime: every node switches once all hold the new key,
    /// then the old one is retired.
    RotateKey,
    /// Issue a client certificate bundle for the remote CLI (`--host ADDR --bundle FILE`).
    /// Write it to a file only you can read: it is a credential.
    ClientBundle {
        /// Who the bundle is for (its certificate's name).
        name: String,
    },
}

/// Runs a `cluster` verb.
pub fn run(data_dir: &Path, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::JoinToken { rotate, quiet } => {
            let Response::JoinToken(token) = call(data_dir, Request::ClusterJoinToken { rotate })?
            else {
                bail!("unexpected answer from the agent");
            };
            if quiet {
                println!("{token}");
            } else {
                if rotate {
                    println!("Successfully rotated the join token.\n");
                }
                println!("To add a node to this cluster, run the following command on it:\n");
                println!("    shoal agent --join ADDRESS_OF_ANY_MEMBER --token {token}\n");
            }
            Ok(())
        }
        ClusterCommand::RotateKey => print_receipt(call(data_dir, Request::ClusterRotateKey)?),
        ClusterCommand::ClientBundle { name } => {
            let Response::Bundle(pem) = call(data_dir, Request::ClusterClientBundle { name })?
            else {
                bail!("unexpected answer from the agent");
            };
            print!("{pem}");
            Ok(())
        }
    }
}
