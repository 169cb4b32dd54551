//! `shoal stack ...`: deploy compose files as stacks, list and remove them.

use std::{collections::BTreeMap, io::Read, path::Path, path::PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

use super::{
    client,
    output::{Format, Listing, Row},
    print_receipt,
    progress::{self, Expect},
};
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
        /// Compose file (`-` reads standard input); repeat to merge several, later ones
        /// overriding earlier ones.
        #[arg(short = 'c', long = "compose-file", required = true)]
        files: Vec<PathBuf>,
        /// Remove the stack's services that the files no longer have.
        #[arg(long)]
        prune: bool,
        /// Exit at once (the default, as docker's); `--detach=false` waits for every service
        /// to converge.
        #[arg(short = 'd', long, default_value_t = true, action = clap::ArgAction::Set,
            num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        detach: bool,
        /// Suppress progress output.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Stack name.
        name: String,
    },
    /// List stacks.
    #[command(alias = "list")]
    Ls {
        /// `table`, `json`, a Go template (`{{.Name}}`) or `table TEMPLATE`.
        #[arg(long, value_parser = Format::parse, default_value = "table")]
        format: Format,
    },
    /// List the services of a stack.
    Services {
        /// Stack name.
        name: String,
        #[command(flatten)]
        list: super::service::ListArgs,
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
        StackCommand::Deploy {
            files,
            prune,
            detach,
            quiet,
            name,
        } => deploy(data_dir, &files, &name, prune, detach, quiet),
        StackCommand::Ls { format } => {
            let Response::Stacks(stacks) = client::call(data_dir, Request::StackList)? else {
                bail!("unexpected answer from the agent");
            };
            let rows = stacks
                .iter()
                .map(|s| {
                    let mut row = Row::new();
                    row.insert("Name".into(), s.name.clone().into());
                    row.insert("Services".into(), s.services.into());
                    row
                })
                .collect();
            let listing = Listing {
                rows,
                columns: &[("NAME", "Name"), ("SERVICES", "Services")],
                json: serde_json::to_value(&stacks)?,
                id_field: "Name",
            };
            print!(
                "{}",
                listing.render(&format, false).map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
        StackCommand::Services { name, list } => {
            let services = super::service::list_services(data_dir)?;
            if !services.iter().any(|s| s.stack == name) {
                bail!("nothing found in stack: {name}");
            }
            super::service::print_services(services, &list, Some(&name))
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

fn deploy(
    data_dir: &Path,
    files: &[PathBuf],
    name: &str,
    prune: bool,
    detach: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut texts = Vec::with_capacity(files.len());
    for file in files {
        if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_FILE_BYTES + 1)
                .read_to_string(&mut text)
                .context("cannot read the stack file from standard input")?;
            if text.len() as u64 > MAX_FILE_BYTES {
                bail!(
                    "standard input: stack files are limited to {} MiB",
                    MAX_FILE_BYTES / (1024 * 1024)
                );
            }
            texts.push(("-".to_string(), text));
            continue;
        }
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
    // Relative paths in the files (bind sources, env files) are relative to the first file's
    // directory, as docker resolves them; for standard input, the current directory.
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let base = match files.first() {
        Some(f) if f.as_os_str() != "-" => match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => cwd.join(p),
            _ => cwd.clone(),
        },
        _ => cwd.clone(),
    };
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let read = |path: &Path| -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let context = compose::FileContext {
        base_dir: Some(&base),
        home: home.as_deref(),
        read: &read,
    };
    let stack = compose::parse_stack_in(name, &texts, &env, &context)?;
    for warning in &stack.warnings {
        eprintln!("warning: {warning}");
    }
    let names: Vec<String> = stack.services.iter().map(|s| s.name.clone()).collect();
    let before: Vec<_> = if detach {
        Vec::new()
    } else {
        names
            .iter()
            .map(|n| progress::status_before(data_dir, n))
            .collect()
    };
    let response = client::call(
        data_dir,
        Request::StackDeploy {
            stack: name.to_string(),
            services: stack.services,
            prune,
            networks: stack.network_defs,
        },
    )?;
    print_receipt(response)?;
    if !detach {
        let mut failed = Vec::new();
        for (service, before) in names.iter().zip(before) {
            if let Err(e) = progress::converge(data_dir, service, Expect::Update, quiet, before) {
                failed.push(format!("{service}: {e:#}"));
            }
        }
        super::service::each_failed(failed)?;
    }
    Ok(())
}
