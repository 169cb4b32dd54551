//! `shoal service ...`: list, inspect, update, scale and remove services.

use std::path::Path;

use anyhow::bail;
use clap::{Args, Subcommand};
use comfy_table::{presets::NOTHING, Table};

use super::{client, parse_key_value, print_receipt, Format};
use crate::compose;
use shoal_core::{
    api::{Request, Response, ServiceDetail, ServiceInfo},
    desired::{
        spec::{
            Constraint, FailureAction, HealthcheckSpec, Mode, PortSpec, Protocol, RestartCondition,
            ServiceSpec, UpdateOrder,
        },
        state::ServiceUpdate,
    },
};

/// `shoal service` verbs.
// Parsed once per process; boxing the big variant would only obscure the clap derive.
#[allow(clippy::large_enum_variant)]
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
    /// List the tasks (replicas) of a service, with recent history.
    Ps {
        /// Service name.
        name: String,
        #[command(flatten)]
        ps: super::ps::PsArgs,
    },
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
    #[arg(long = "constraint-add", value_name = "EXPR", value_parser = parse_constraint_arg)]
    constraint_add: Vec<Constraint>,
    /// Remove a placement constraint; repeatable.
    #[arg(long = "constraint-rm", value_name = "EXPR", value_parser = parse_constraint_arg)]
    constraint_rm: Vec<Constraint>,
    /// Publish a port, `PUBLISHED:TARGET[/udp]`; repeatable. Refused if another service
    /// publishes it.
    #[arg(long = "publish-add", value_name = "PUBLISHED:TARGET", value_parser = parse_publish)]
    publish_add: Vec<Vec<PortSpec>>,
    /// Stop publishing the ports to a container port, `TARGET[/udp]`; repeatable.
    #[arg(long = "publish-rm", value_name = "TARGET", value_parser = parse_publish_rm)]
    publish_rm: Vec<(u16, Option<Protocol>)>,
    /// Replicas updated at once (0: all).
    #[arg(long)]
    update_parallelism: Option<u64>,
    /// Pause between update batches, e.g. `10s`.
    #[arg(long, value_parser = parse_duration_arg)]
    update_delay: Option<u64>,
    /// `start-first` or `stop-first`.
    #[arg(long, value_parser = parse_order)]
    update_order: Option<UpdateOrder>,
    /// `pause`, `continue` or `rollback`.
    #[arg(long, value_parser = parse_failure_action)]
    update_failure_action: Option<FailureAction>,
    /// How long a new replica is watched for failure, e.g. `30s`.
    #[arg(long, value_parser = parse_duration_arg)]
    update_monitor: Option<u64>,
    /// Fraction of failed replicas tolerated during an update, e.g. `0.2`.
    #[arg(long, value_parser = parse_ratio)]
    update_max_failure_ratio: Option<u64>,
    /// Replicas rolled back at once (0: all).
    #[arg(long)]
    rollback_parallelism: Option<u64>,
    /// Pause between rollback batches.
    #[arg(long, value_parser = parse_duration_arg)]
    rollback_delay: Option<u64>,
    /// `start-first` or `stop-first` for rollbacks.
    #[arg(long, value_parser = parse_order)]
    rollback_order: Option<UpdateOrder>,
    /// `none`, `on-failure` or `any`.
    #[arg(long, value_parser = parse_condition)]
    restart_condition: Option<RestartCondition>,
    /// Wait before replacing an exited replica, e.g. `5s`.
    #[arg(long, value_parser = parse_duration_arg)]
    restart_delay: Option<u64>,
    /// Give up after this many restarts (0: never give up).
    #[arg(long)]
    restart_max_attempts: Option<u64>,
    /// Window over which restarts are counted, e.g. `2m`.
    #[arg(long, value_parser = parse_duration_arg)]
    restart_window: Option<u64>,
    /// Healthcheck command, run by a shell in the container.
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between healthchecks, e.g. `2s`.
    #[arg(long, value_parser = parse_duration_arg)]
    health_interval: Option<u64>,
    /// Time one healthcheck may take.
    #[arg(long, value_parser = parse_duration_arg)]
    health_timeout: Option<u64>,
    /// Consecutive failures before unhealthy.
    #[arg(long)]
    health_retries: Option<u64>,
    /// Grace period after start, e.g. `10s`.
    #[arg(long, value_parser = parse_duration_arg)]
    health_start_period: Option<u64>,
    /// Turn off every healthcheck, including the image's.
    #[arg(long)]
    no_healthcheck: bool,
    /// Replace every replica even if nothing else changed.
    #[arg(long)]
    force: bool,
}

fn parse_constraint_arg(s: &str) -> Result<Constraint, String> {
    compose::parse_constraint(s)
}

fn parse_publish(s: &str) -> Result<Vec<PortSpec>, String> {
    compose::parse_publish(s)
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

fn parse_duration_arg(s: &str) -> Result<u64, String> {
    compose::duration_ms(s)
}

fn parse_ratio(s: &str) -> Result<u64, String> {
    let v = compose::thousandths(s)?;
    if v > 1000 {
        return Err(format!("{s}: a ratio is between 0 and 1"));
    }
    Ok(v)
}

fn parse_order(s: &str) -> Result<UpdateOrder, String> {
    match s {
        "start-first" => Ok(UpdateOrder::StartFirst),
        "stop-first" => Ok(UpdateOrder::StopFirst),
        _ => Err(format!("{s:?}: expected start-first or stop-first")),
    }
}

fn parse_failure_action(s: &str) -> Result<FailureAction, String> {
    match s {
        "pause" => Ok(FailureAction::Pause),
        "continue" => Ok(FailureAction::Continue),
        "rollback" => Ok(FailureAction::Rollback),
        _ => Err(format!("{s:?}: expected pause, continue or rollback")),
    }
}

fn parse_condition(s: &str) -> Result<RestartCondition, String> {
    match s {
        "none" => Ok(RestartCondition::None),
        "on-failure" => Ok(RestartCondition::OnFailure),
        "any" => Ok(RestartCondition::Any),
        _ => Err(format!("{s:?}: expected none, on-failure or any")),
    }
}

impl UpdateArgs {
    fn touches_update_config(&self) -> bool {
        self.update_parallelism.is_some()
            || self.update_delay.is_some()
            || self.update_order.is_some()
            || self.update_failure_action.is_some()
            || self.update_monitor.is_some()
            || self.update_max_failure_ratio.is_some()
    }

    fn touches_rollback_config(&self) -> bool {
        self.rollback_parallelism.is_some()
            || self.rollback_delay.is_some()
            || self.rollback_order.is_some()
    }

    fn touches_restart_policy(&self) -> bool {
        self.restart_condition.is_some()
            || self.restart_delay.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_window.is_some()
    }

    fn touches_ports(&self) -> bool {
        !self.publish_add.is_empty() || !self.publish_rm.is_empty()
    }

    fn touches_healthcheck(&self) -> bool {
        self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
            || self.no_healthcheck
    }

    /// Turns the flags into an update; settings changed field by field start from `current`.
    fn into_update(self, current: Option<&ServiceSpec>) -> ServiceUpdate {
        let mut update = ServiceUpdate {
            update_config: None,
            rollback_config: None,
            restart_policy: None,
            healthcheck: None,
            ..ServiceUpdate::default()
        };
        if let Some(spec) = current {
            if self.touches_update_config() {
                let mut c = spec.update_config.clone();
                c.parallelism = self.update_parallelism.unwrap_or(c.parallelism);
                c.delay_ms = self.update_delay.unwrap_or(c.delay_ms);
                c.order = self.update_order.unwrap_or(c.order);
                c.failure_action = self.update_failure_action.unwrap_or(c.failure_action);
                c.monitor_ms = self.update_monitor.unwrap_or(c.monitor_ms);
                c.max_failure_ratio_milli = self
                    .update_max_failure_ratio
                    .unwrap_or(c.max_failure_ratio_milli);
                update.update_config = Some(c);
            }
            if self.touches_rollback_config() {
                let mut c = spec.rollback_config.clone();
                c.parallelism = self.rollback_parallelism.unwrap_or(c.parallelism);
                c.delay_ms = self.rollback_delay.unwrap_or(c.delay_ms);
                c.order = self.rollback_order.unwrap_or(c.order);
                update.rollback_config = Some(c);
            }
            if self.touches_restart_policy() {
                let mut r = spec.restart_policy.clone();
                r.condition = self.restart_condition.unwrap_or(r.condition);
                r.delay_ms = self.restart_delay.unwrap_or(r.delay_ms);
                if let Some(n) = self.restart_max_attempts {
                    r.max_attempts = (n > 0).then_some(n);
                }
                r.window_ms = self.restart_window.unwrap_or(r.window_ms);
                update.restart_policy = Some(r);
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
            if self.touches_healthcheck() {
                let mut h = spec.healthcheck.clone().unwrap_or_default();
                if let Some(cmd) = &self.health_cmd {
                    h.test = Some(vec!["CMD-SHELL".into(), cmd.clone()]);
                    h.disable = false;
                }
                h.interval_ms = self.health_interval.or(h.interval_ms);
                h.timeout_ms = self.health_timeout.or(h.timeout_ms);
                h.retries = self.health_retries.or(h.retries);
                h.start_period_ms = self.health_start_period.or(h.start_period_ms);
                if self.no_healthcheck {
                    h = HealthcheckSpec {
                        test: Some(vec!["NONE".into()]),
                        disable: true,
                        ..HealthcheckSpec::default()
                    };
                }
                update.healthcheck = Some(h);
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
                        map.insert("rollout".into(), serde_json::to_value(&detail.rollout)?);
                    }
                    println!("{}", serde_json::to_string_pretty(&value)?);
                }
                Format::Table => print!("{}", pretty(&detail)),
            }
        }
        ServiceCommand::Update(args) => {
            // Settings given field by field need the current values of the others.
            let needs_current = args.touches_update_config()
                || args.touches_rollback_config()
                || args.touches_restart_policy()
                || args.touches_healthcheck()
                || args.touches_ports();
            let current = if needs_current {
                let request = Request::ServiceInspect {
                    name: args.name.clone(),
                };
                match client::call(data_dir, request)? {
                    Response::Service(detail) => Some(detail.spec),
                    other => bail!("unexpected answer from the agent: {other:?}"),
                }
            } else {
                None
            };
            let name = args.name.clone();
            let added: std::collections::BTreeMap<String, String> =
                args.label_add.iter().cloned().collect();
            shoal_core::routing::sticky::from_labels(&name, &added)
                .and_then(|_| shoal_core::reconcile::placement::rebalance_label(&added))
                .map_err(|e| anyhow::anyhow!("--label-add: {e}"))?;
            let update = args.into_update(current.as_ref());
            let request = Request::ServiceUpdate {
                name,
                update: Box::new(update),
            };
            print_receipt(client::call(data_dir, request)?)?;
        }
        ServiceCommand::Ps { name, ps } => {
            let Response::Tasks(tasks) = client::call(data_dir, Request::ServicePs { name })?
            else {
                bail!("unexpected answer from the agent");
            };
            ps.print(tasks)?;
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
