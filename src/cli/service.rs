//! `shoal service ...`: list, inspect, update, scale and remove services.

use std::path::Path;

use anyhow::bail;
use clap::{Args, Subcommand};
use comfy_table::{presets::NOTHING, Table};

use super::{client, parse_key_value, print_receipt, Format};
use crate::{
    api::{Request, Response, ServiceDetail, ServiceInfo},
    core::desired::{spec::Mode, state::ServiceUpdate},
};

/// `shoal service` verbs.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// List services.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show a service in full.
    Inspect {
        /// Service name.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Change a service.
    Update(UpdateArgs),
    /// Set the replica count of one or more services: `service scale web=3 api=2`.
    Scale {
        /// SERVICE=REPLICAS pairs.
        #[arg(required = true, value_parser = parse_scale)]
        scales: Vec<(String, u64)>,
    },
    /// Remove services.
    #[command(alias = "remove")]
    Rm {
        /// Service names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Flags of `service update`, named as Docker names them.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Service name.
    name: String,
    /// New image.
    #[arg(long)]
    image: Option<String>,
    /// New replica count.
    #[arg(long)]
    replicas: Option<u64>,
    /// Add or change an environment variable; repeatable.
    #[arg(long = "env-add", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    env_add: Vec<(String, String)>,
    /// Remove an environment variable; repeatable.
    #[arg(long = "env-rm", value_name = "KEY")]
    env_rm: Vec<String>,
    /// Add or change a service label; repeatable.
    #[arg(long = "label-add", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    label_add: Vec<(String, String)>,
    /// Remove a service label; repeatable.
    #[arg(long = "label-rm", value_name = "KEY")]
    label_rm: Vec<String>,
    /// Replace every replica even if nothing else changed.
    #[arg(long)]
    force: bool,
}

fn parse_scale(s: &str) -> Result<(String, u64), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not SERVICE=REPLICAS"))?;
    let n = n
        .parse()
        .map_err(|_| format!("{s:?}: replicas must be a non-negative integer"))?;
    Ok((name.to_string(), n))
}

/// Runs a `service` verb against the agent of `data_dir`.
pub fn run(data_dir: &Path, command: ServiceCommand) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Ls { format } => {
            let Response::Services(services) = client::call(data_dir, Request::ServiceList)? else {
                bail!("unexpected answer from the agent");
            };
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&services)?),
                Format::Table => println!("{}", table(&services)),
            }
        }
        ServiceCommand::Inspect { name, format } => {
            let Response::Service(detail) =
                client::call(data_dir, Request::ServiceInspect { name })?
            else {
                bail!("unexpected answer from the agent");
            };
            match format {
                Format::Json => {
                    // One flat object: the `service ls` fields plus version, force and spec.
                    let mut value = serde_json::to_value(&detail.info)?;
                    if let serde_json::Value::Object(map) = &mut value {
                        map.insert("version".into(), detail.version.clone().into());
                        map.insert("force".into(), detail.force.into());
                        map.insert("spec".into(), serde_json::to_value(&detail.spec)?);
                    }
                    println!("{}", serde_json::to_string_pretty(&value)?);
                }
                Format::Table => print!("{}", pretty(&detail)),
            }
        }
        ServiceCommand::Update(args) => {
            let update = ServiceUpdate {
                image: args.image,
                replicas: args.replicas,
                env_add: args.env_add,
                env_rm: args.env_rm,
                label_add: args.label_add,
                label_rm: args.label_rm,
                force: args.force,
                ..ServiceUpdate::default()
            };
            let request = Request::ServiceUpdate {
                name: args.name,
                update,
            };
            print_receipt(client::call(data_dir, request)?)?;
        }
        ServiceCommand::Scale { scales } => {
            print_receipt(client::call(data_dir, Request::ServiceScale { scales })?)?;
        }
        ServiceCommand::Rm { names } => {
            print_receipt(client::call(data_dir, Request::ServiceRemove { names })?)?;
        }
    }
    Ok(())
}

fn table(services: &[ServiceInfo]) -> Table {
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header(["NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]);
    for s in services {
        table.add_row([
            s.name.clone(),
            mode_text(s.mode).to_string(),
            format!("{}/{}", s.running, s.replicas),
            s.image.clone(),
            s.ports.join(","),
        ]);
    }
    table
}

fn mode_text(mode: Mode) -> &'static str {
    match mode {
        Mode::Replicated => "replicated",
        Mode::Global => "global",
    }
}

fn pretty(d: &ServiceDetail) -> String {
    let spec = &d.spec;
    let mut out = format!(
        "Name:           {}\nStack:          {}\nMode:           {:?}\nReplicas:       {}/{}\n\
         Image:          {}\nVersion:        {}\n",
        d.info.name,
        d.info.stack,
        spec.mode,
        d.info.running,
        d.info.replicas,
        spec.image,
        d.version
    );
    if let Some(cmd) = &spec.command {
        out += &format!("Command:        {}\n", cmd.join(" "));
    }
    if !spec.env.is_empty() {
        out += "Environment:\n";
        for (k, v) in &spec.env {
            out += &format!("  {k}={v}\n");
        }
    }
    if !spec.labels.is_empty() {
        out += "Labels:\n";
        for (k, v) in &spec.labels {
            out += &format!("  {k}={v}\n");
        }
    }
    if !d.info.ports.is_empty() {
        out += &format!("Ports:          {}\n", d.info.ports.join(", "));
    }
    for c in &spec.placement.constraints {
        out += &format!("Constraint:     {c}\n");
    }
    let u = &spec.update_config;
    out += &format!(
        "Update:         parallelism {}, delay {} ms, order {:?}, on failure {:?}, monitor {} ms\n",
        u.parallelism, u.delay_ms, u.order, u.failure_action, u.monitor_ms
    );
    let r = &spec.restart_policy;
    out += &format!(
        "Restart:        {:?}, delay {} ms, max attempts {}\n",
        r.condition,
        r.delay_ms,
        r.max_attempts
            .map_or_else(|| "unlimited".to_string(), |n| n.to_string())
    );
    if let Some(h) = &spec.healthcheck {
        let ms = |v: Option<u64>| v.map_or_else(|| "image's".to_string(), |v| format!("{v} ms"));
        let test = h
            .test
            .as_ref()
            .map_or_else(|| "image's".to_string(), |t| t.join(" "));
        out += &format!(
            "Healthcheck:    {}test {test}, interval {}, timeout {}, retries {}, start period {}\n",
            if h.disable { "disabled; " } else { "" },
            ms(h.interval_ms),
            ms(h.timeout_ms),
            h.retries
                .map_or_else(|| "image's".to_string(), |r| r.to_string()),
            ms(h.start_period_ms),
        );
    }
    out
}
