//! `shoal service ...`: create, list, inspect, update, scale, roll back and remove services.

use std::{collections::BTreeMap, path::Path};

use anyhow::bail;
use clap::{Args, Subcommand};

use super::{
    client,
    flags::{self, CreateArgs, SettingsArgs},
    output::{self, Format, Listing, Row},
    parse_key_value, print_receipt,
    progress::{self, Expect},
};
use crate::compose;
use shoal_core::{
    api::{Request, Response, ServiceDetail, ServiceInfo},
    desired::{
        spec::{Constraint, Mode, PortSpec, Protocol, ServiceSpec},
        state::ServiceUpdate,
    },
};

/// `shoal service` verbs.
// Parsed once per process; boxing the big variant would only obscure the clap derive.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service outside any stack.
    Create(Box<CreateArgs>),
    /// List services.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show services in full (JSON, or text with `--pretty`).
    Inspect {
        /// Service names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Text for people instead of JSON.
        #[arg(long)]
        pretty: bool,
        /// `json` (one object per line) or a Go template over the JSON object.
        #[arg(short = 'f', long)]
        format: Option<String>,
    },
    /// Change a service.
    Update(UpdateArgs),
    /// List the tasks (replicas) of services, with recent history.
    Ps {
        /// Service names.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        ps: super::ps::PsArgs,
    },
    /// Set the replica count of one or more services: `service scale web=3 api=2`.
    Scale {
        /// SERVICE=REPLICAS pairs.
        #[arg(required = true, value_parser = parse_scale)]
        scales: Vec<(String, u64)>,
        /// Exit at once instead of waiting for the services to converge.
        #[arg(short = 'd', long)]
        detach: bool,
    },
    /// Return a service to its spec before the last update.
    Rollback {
        /// Service name.
        name: String,
        /// Exit at once instead of waiting for the rollback to converge.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Print only the service name.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Remove services.
    #[command(alias = "remove")]
    Rm {
        /// Service names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Flags every list verb takes, as docker's.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// `table`, `json`, a Go template (`{{.Name}} {{.Replicas}}`) or `table TEMPLATE`.
    #[arg(long, value_parser = Format::parse, default_value = "table")]
    pub format: Format,
    /// Only display IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Filter, `KEY=VALUE`; repeatable.
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
}

/// Flags of `service update`, named as Docker names them.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Service name.
    name: String,
    /// New image.
    #[arg(long, value_parser = compose::check_image)]
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
    /// Add or change a container label; repeatable.
    #[arg(long = "container-label-add", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    container_label_add: Vec<(String, String)>,
    /// Remove a container label; repeatable.
    #[arg(long = "container-label-rm", value_name = "KEY")]
    container_label_rm: Vec<String>,
    /// Add a placement constraint, e.g. `node.labels.zone==a`; repeatable.
    #[arg(long = "constraint-add", value_name = "EXPR", value_parser = flags::parse_constraint_arg)]
    constraint_add: Vec<Constraint>,
    /// Remove a placement constraint; repeatable.
    #[arg(long = "constraint-rm", value_name = "EXPR", value_parser = flags::parse_constraint_arg)]
    constraint_rm: Vec<Constraint>,
    /// Publish a port, `PUBLISHED:TARGET[/udp]`; repeatable. Refused if another service
    /// publishes it.
    #[arg(long = "publish-add", value_name = "PUBLISHED:TARGET", value_parser = flags::parse_publish_any)]
    publish_add: Vec<Vec<PortSpec>>,
    /// Stop publishing the ports to a container port, `TARGET[/udp]`; repeatable.
    #[arg(long = "publish-rm", value_name = "TARGET", value_parser = parse_publish_rm)]
    publish_rm: Vec<(u16, Option<Protocol>)>,
    #[command(flatten)]
    settings: SettingsArgs,
    /// Replace every replica even if nothing else changed.
    #[arg(long)]
    force: bool,
    /// Return to the spec before the last update (`service rollback`).
    #[arg(long, conflicts_with_all = ["image", "replicas", "force"])]
    rollback: bool,
    /// Exit at once instead of waiting for the service to converge.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Suppress progress output.
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// `80` or `80/udp`: the container port whose published ports go.
fn parse_publish_rm(s: &str) -> Result<(u16, Option<Protocol>), String> {
    let (port, protocol) = match s.split_once('/') {
        Some((port, "tcp")) => (port, Some(Protocol::Tcp)),
        Some((port, "udp")) => (port, Some(Protocol::Udp)),
        Some(_) => return Err(format!("{s:?}: expected TARGET, TARGET/tcp or TARGET/udp")),
        None => (s, None),
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{s:?}: expected a container port, 1-65535"))?;
    Ok((port, protocol))
}

impl UpdateArgs {
    fn touches_ports(&self) -> bool {
        !self.publish_add.is_empty() || !self.publish_rm.is_empty()
    }

    /// Whether the update changes anything besides a rollback (which ignores other flags).
    fn touches_anything_else(&self) -> bool {
        self.image.is_some()
            || self.replicas.is_some()
            || !self.env_add.is_empty()
            || !self.env_rm.is_empty()
            || !self.label_add.is_empty()
            || !self.label_rm.is_empty()
            || !self.container_label_add.is_empty()
            || !self.container_label_rm.is_empty()
            || !self.constraint_add.is_empty()
            || !self.constraint_rm.is_empty()
            || self.touches_ports()
            || self.settings.any()
            || self.force
    }

    /// Turns the flags into an update; settings changed field by field start from `current`.
    fn into_update(self, current: Option<&ServiceSpec>) -> ServiceUpdate {
        let mut update = ServiceUpdate::default();
        if let Some(spec) = current {
            let mut changed = spec.clone();
            self.settings.apply(&mut changed);
            if self.settings.touches_update() {
                update.update_config = Some(changed.update_config);
            }
            if self.settings.touches_rollback() {
                update.rollback_config = Some(changed.rollback_config);
            }
            if self.settings.touches_restart() {
                update.restart_policy = Some(changed.restart_policy);
            }
            if self.settings.touches_health() {
                update.healthcheck = changed.healthcheck;
            }
            if self.touches_ports() {
                let removed = |p: &PortSpec| {
                    self.publish_rm.iter().any(|(target, proto)| {
                        p.target == *target && proto.is_none_or(|x| x == p.protocol)
                    })
                };
                let added: Vec<PortSpec> = self.publish_add.iter().flatten().cloned().collect();
                let readded = |p: &PortSpec| {
                    added
                        .iter()
                        .any(|a| a.published == p.published && a.protocol == p.protocol)
                };
                let mut ports: Vec<PortSpec> = spec
                    .ports
                    .iter()
                    .filter(|p| !removed(p) && !readded(p))
                    .cloned()
                    .collect();
                ports.extend(added);
                update.ports = Some(ports);
            }
        }
        update.image = self.image;
        update.replicas = self.replicas;
        update.env_add = self.env_add;
        update.env_rm = self.env_rm;
        update.label_add = self.label_add;
        update.label_rm = self.label_rm;
        update.container_label_add = self.container_label_add;
        update.container_label_rm = self.container_label_rm;
        update.constraint_add = self.constraint_add;
        update.constraint_rm = self.constraint_rm;
        update.force = self.force;
        update
    }
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
        ServiceCommand::Create(args) => create(data_dir, *args),
        ServiceCommand::Ls { list } => {
            let services = list_services(data_dir)?;
            print_services(services, &list, None)
        }
        ServiceCommand::Inspect {
            names,
            pretty: as_text,
            format,
        } => inspect(data_dir, &names, as_text, format.as_deref()),
        ServiceCommand::Update(args) => update(data_dir, args),
        ServiceCommand::Ps { names, ps } => {
            let mut all = Vec::new();
            let mut failed = Vec::new();
            for name in names {
                match client::call(data_dir, Request::ServicePs { name }) {
                    Ok(Response::Tasks(tasks)) => all.extend(tasks),
                    Ok(other) => bail!("unexpected answer from the agent: {other:?}"),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if !all.is_empty() || failed.is_empty() {
                ps.print(all)?;
            }
            each_failed(failed)
        }
        ServiceCommand::Scale { scales, detach } => {
            let mut failed = Vec::new();
            let mut scaled = Vec::new();
            for (name, n) in scales {
                let before = (!detach)
                    .then(|| progress::status_before(data_dir, &name))
                    .flatten();
                let request = Request::ServiceScale {
                    scales: vec![(name.clone(), n)],
                };
                match client::call(data_dir, request).and_then(print_receipt) {
                    Ok(()) => scaled.push((name, before)),
                    Err(e) => failed.push(format!("{name}: {e:#}")),
                }
            }
            if !detach {
                for (name, before) in scaled {
                    if let Err(e) =
                        progress::converge(data_dir, &name, Expect::Update, false, before)
                    {
                        failed.push(format!("{name}: {e:#}"));
                    }
                }
            }
            each_failed(failed)
        }
        ServiceCommand::Rollback {
            name,
            detach,
            quiet,
        } => rollback(data_dir, &name, detach, quiet),
        ServiceCommand::Rm { names } => {
            let mut failed = Vec::new();
            for name in names {
                let request = Request::ServiceRemove {
                    names: vec![name.clone()],
                };
                match client::call(data_dir, request) {
                    // Docker prints each name removed.
                    Ok(Response::Changed(_)) => println!("{name}"),
                    Ok(other) => failed.push(format!("{name}: unexpected answer {other:?}")),
                    Err(e) => failed.push(format!("{e:#}")),
                }
            }
            each_failed(failed)
        }
    }
}

/// Reports every item that failed (docker applies the valid names and reports each bad one) and
/// fails if any did.
pub fn each_failed(failed: Vec<String>) -> anyhow::Result<()> {
    match failed.len() {
        0 => Ok(()),
        1 => bail!("{}", failed[0]),
        n => {
            for f in &failed[..n - 1] {
                eprintln!("error: {f}");
            }
            bail!("{}", failed[n - 1])
        }
    }
}

fn create(data_dir: &Path, args: CreateArgs) -> anyhow::Result<()> {
    let (detach, quiet) = (args.detach, args.quiet);
    let environ: BTreeMap<String, String> = std::env::vars().collect();
    let def = args.into_def(&environ).map_err(anyhow::Error::msg)?;
    let name = def.name.clone();
    let response = client::call(data_dir, Request::ServiceCreate { def: Box::new(def) })?;
    let Response::Changed(_) = response else {
        bail!("unexpected answer from the agent: {response:?}");
    };
    // Docker prints the new service's id first.
    println!("{}", shoal_core::api::service_id(&name));
    if !detach {
        progress::converge(data_dir, &name, Expect::Update, quiet, None)?;
    }
    Ok(())
}

fn update(data_dir: &Path, args: UpdateArgs) -> anyhow::Result<()> {
    let name = args.name.clone();
    let (detach, quiet) = (args.detach, args.quiet);
    if args.rollback {
        if args.touches_anything_else() {
            bail!("--rollback cannot be combined with other changes");
        }
        return rollback(data_dir, &name, detach, quiet);
    }
    args.settings.check().map_err(anyhow::Error::msg)?;
    // Settings given field by field need the current values of the others, and so do the
    // checks of the labels as they will be.
    let current = match client::call(data_dir, Request::ServiceInspect { name: name.clone() })? {
        Response::Service(detail) => detail.spec,
        other => bail!("unexpected answer from the agent: {other:?}"),
    };
    let mut labels = current.labels.clone();
    for key in &args.label_rm {
        labels.remove(key);
    }
    labels.extend(args.label_add.iter().cloned());
    shoal_core::routing::sticky::from_labels(&name, &labels)
        .and_then(|_| shoal_core::reconcile::placement::rebalance_label(&labels))
        .map_err(|e| anyhow::anyhow!("--label-add: {e}"))?;
    let routing = shoal_core::routing::routers::from_labels(&name, &labels, &current.ports)
        .map_err(|e| anyhow::anyhow!("--label-add: {e}"))?;
    for (label, why) in routing.warnings {
        eprintln!("warning: label {label}: {why}");
    }
    let before = (!detach).then(|| current_status(data_dir, &name)).flatten();
    let update = args.into_update(Some(&current));
    let request = Request::ServiceUpdate {
        name: name.clone(),
        update: Box::new(update),
    };
    let response = client::call(data_dir, request)?;
    let changed = matches!(&response, Response::Changed(r) if r.changed);
    if quiet {
        let Response::Changed(_) = response else {
            bail!("unexpected answer from the agent: {response:?}");
        };
    } else {
        print_receipt(response)?;
    }
    if !detach && changed {
        progress::converge(data_dir, &name, Expect::Update, quiet, before)?;
    }
    Ok(())
}

fn current_status(data_dir: &Path, name: &str) -> Option<shoal_core::desired::state::UpdateStatus> {
    progress::status_before(data_dir, name)
}

fn rollback(data_dir: &Path, name: &str, detach: bool, quiet: bool) -> anyhow::Result<()> {
    let before = (!detach).then(|| current_status(data_dir, name)).flatten();
    let response = client::call(
        data_dir,
        Request::ServiceRollback {
            name: name.to_string(),
        },
    )?;
    let Response::Changed(_) = response else {
        bail!("unexpected answer from the agent: {response:?}");
    };
    println!("{name}");
    if !detach {
        progress::converge(data_dir, name, Expect::Rollback, quiet, before)?;
    }
    Ok(())
}

/// Every service, as the agent lists them.
pub fn list_services(data_dir: &Path) -> anyhow::Result<Vec<ServiceInfo>> {
    match client::call(data_dir, Request::ServiceList)? {
        Response::Services(services) => Ok(services),
        other => bail!("unexpected answer from the agent: {other:?}"),
    }
}

/// The `REPLICAS` column: `running/desired`, and the rollout's state while one goes on.
fn replicas_text(s: &ServiceInfo) -> String {
    let base = format!("{}/{}", s.running, s.replicas);
    match s.update_state.as_deref() {
        None | Some("completed") | Some("rollback_completed") => base,
        Some("rollback_started") => format!("{base} (rolling back)"),
        Some(state) => format!("{base} ({})", state.replace('_', " ")),
    }
}

/// Prints services as `service ls` (and `stack services`) do; `stack` keeps one stack's.
pub fn print_services(
    services: Vec<ServiceInfo>,
    list: &ListArgs,
    stack: Option<&str>,
) -> anyhow::Result<()> {
    let filters = output::parse_filters(&list.filters, &["id", "name", "label", "mode"])
        .map_err(anyhow::Error::msg)?;
    let services: Vec<ServiceInfo> = services
        .into_iter()
        .filter(|s| stack.is_none_or(|st| s.stack == st))
        .filter(|s| {
            output::passes(&filters, |k, v| match k {
                "id" => s.id.starts_with(v),
                // Docker matches a name filter as a prefix.
                "name" => s.name.starts_with(v),
                "label" => output::label_matches(&s.labels, v),
                "mode" => mode_text(s.mode) == v,
                _ => false,
            })
        })
        .collect();
    let rows = services
        .iter()
        .map(|s| {
            let mut row = Row::new();
            row.insert("ID".into(), output::short_id(&s.id, list.no_trunc).into());
            row.insert("Name".into(), s.name.clone().into());
            row.insert("Mode".into(), mode_text(s.mode).into());
            row.insert("Replicas".into(), replicas_text(s).into());
            row.insert("Image".into(), s.image.clone().into());
            row.insert("Ports".into(), s.ports.join(", ").into());
            row.insert(
                "Stack".into(),
                (if s.stack.is_empty() { "—" } else { &s.stack }).into(),
            );
            row.insert("Running".into(), s.running.into());
            row.insert("Desired".into(), s.replicas.into());
            row
        })
        .collect();
    let listing = Listing {
        rows,
        columns: &[
            ("ID", "ID"),
            ("NAME", "Name"),
            ("MODE", "Mode"),
            ("REPLICAS", "Replicas"),
            ("IMAGE", "Image"),
            ("PORTS", "Ports"),
        ],
        json: serde_json::to_value(&services)?,
        id_field: "ID",
    };
    print!(
        "{}",
        listing
            .render(&list.format, list.quiet)
            .map_err(anyhow::Error::msg)?
    );
    Ok(())
}

/// `service inspect`: the flat JSON object of each service (the `service ls` fields plus version,
/// force, spec, rollout, update status and previous spec), as an array by default.
fn inspect(
    data_dir: &Path,
    names: &[String],
    as_text: bool,
    format: Option<&str>,
) -> anyhow::Result<()> {
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for name in names {
        match client::call(data_dir, Request::ServiceInspect { name: name.clone() }) {
            Ok(Response::Service(detail)) => found.push(*detail),
            Ok(other) => failed.push(format!("{name}: unexpected answer {other:?}")),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    let objects: Vec<serde_json::Value> = found.iter().map(flat_json).collect::<Result<_, _>>()?;
    if as_text {
        for d in &found {
            print!("{}", pretty(d));
        }
    } else {
        print!(
            "{}",
            output::render_inspected(&objects, format).map_err(anyhow::Error::msg)?
        );
    }
    each_failed(failed)
}

fn flat_json(detail: &ServiceDetail) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(&detail.info)?;
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("version".into(), detail.version.clone().into());
        map.insert("force".into(), detail.force.into());
        map.insert("spec".into(), serde_json::to_value(&detail.spec)?);
        map.insert("rollout".into(), serde_json::to_value(&detail.rollout)?);
        // The status's version is an HLC whose node id does not fit JSON's numbers: as text.
        let status = detail.update_status.as_ref().map(|s| {
            serde_json::json!({
                "state": s.state.as_str(),
                "version": s.version.to_string(),
                "started_ms": s.started_ms,
                "completed_ms": s.completed_ms,
                "message": s.message,
            })
        });
        map.insert("update_status".into(), status.into());
        map.insert(
            "previous_spec".into(),
            serde_json::to_value(&detail.previous_spec)?,
        );
    }
    Ok(value)
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
    let rollout = &d.rollout;
    out += &match (rollout.changing, rollout.resume_at_ms) {
        (0, _) => "Rollout:        complete\n".to_string(),
        (n, Some(_)) => {
            format!("Rollout:        {n} slot(s) to change; waiting for the update delay\n")
        }
        (n, None) => format!(
            "Rollout:        {n} slot(s) to change, {} in progress\n",
            rollout.in_progress
        ),
    };
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
