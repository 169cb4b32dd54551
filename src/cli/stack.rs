//! `shoal stack ...`: deploy compose files as stacks, list and remove them.

use std::{collections::BTreeMap, path::Path, path::PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use comfy_table::{presets::NOTHING, Table};

use super::{client, print_receipt, Format};
use crate::compose;
use shoal_core::api::{Request, Response};

/// Stack files larger than this are refused before they are read.
const MAX_FILE_BYTES: u64 = compose::MAX_FILE_BYTES as u64;

/// `shoal stack` verbs.
#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing one.
    #[command(alias = "up")]
    Deploy {
        /// Compose file; repeat to merge several, later ones overriding earlier ones.
        #[arg(short = 'c', long = "compose-file", required = true)]
        files: Vec<PathBuf>,
        /// Stack name.
        name: String,
    },
    /// List stacks.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List the tasks of a stack.
    Ps {
        /// Stack name.
        name: String,
        #[command(flatten)]
        ps: super::ps::PsArgs,
    },
    /// Remove a stack and its services.
    #[command(alias = "remove", alias = "down")]
    Rm {
        /// Stack names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Runs a `stack` verb against the agent of `data_dir`.
pub fn run(data_dir: &Path, command: StackCommand) -> anyhow::Result<()> {
    match command {
        StackCommand::Deploy { files, name } => deploy(data_dir, &files, &name),
        StackCommand::Ls { format } => {
            let Response::Stacks(stacks) = client::call(data_dir, Request::StackList)? else {
                bail!("unexpected answer from the agent");
            };
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&stacks)?),
                Format::Table => {
                    let mut table = Table::new();
                    table.load_preset(NOTHING);
                    table.set_header(["NAME", "SERVICES"]);
                    for s in &stacks {
                        table.add_row([s.name.clone(), s.services.to_string()]);
                    }
                    println!("{table}");
                }
            }
            Ok(())
        }
        StackCommand::Ps { name, ps } => {
            let Response::Tasks(tasks) = client::call(data_dir, Request::StackPs { stack: name })?
            else {
                bail!("unexpected answer from the agent");
            };
            ps.print(tasks)
        }
        StackCommand::Rm { names } => {
            for stack in names {
                let response = client::call(data_dir, Request::StackRemove { stack })?;
                print_receipt(response)?;
            }
            Ok(())
        }
    }
}

fn deploy(data_dir: &Path, files: &[PathBuf], name: &str) -> anyhow::Result<()> {
    let mut texts = Vec::with_capacity(files.len());
    for file in files {
        let shown = file.display().to_string();
        let size = std::fs::metadata(file)
            .with_context(|| format!("cannot read stack file {shown}"))?
            .len();
        if size > MAX_FILE_BYTES {
            bail!(
                "{shown}: file is {:.1} MiB; stack files are limited to {} MiB",
                size as f64 / (1024.0 * 1024.0),
                MAX_FILE_BYTES / (1024 * 1024)
            );
        }
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read stack file {shown}"))?;
        texts.push((shown, text));
    }
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let stack = compose::parse_stack(name, &texts, &env)?;
    for warning in &stack.warnings {
        eprintln!("warning: {warning}");
    }
    let response = client::call(
        data_dir,
        Request::StackDeploy {
            stack: name.to_string(),
            services: stack.services,
        },
    )?;
    print_receipt(response)
}
