//! Flags that `service create` and `service update` share (update, rollback, restart and
//! healthcheck settings, named as Docker names them), and `service create`'s own.

use clap::Args;

use crate::compose;
use shoal_core::desired::spec::{
    Constraint, FailureAction, HealthcheckSpec, LoggingSpec, Mode, MountKind, MountSpec, PortSpec,
    Protocol, PublishMode, ResourceAmounts, RestartCondition, ServiceDef, ServiceSpec, Ulimit,
    UpdateOrder,
};

/// Settings given field by field: each flag changes one field of its group.
#[derive(Debug, Args, Default)]
pub struct SettingsArgs {
    /// Replicas updated at once (0: all).
    #[arg(long)]
    pub update_parallelism: Option<u64>,
    /// Pause between update batches, e.g. `10s`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub update_delay: Option<u64>,
    /// `start-first` or `stop-first`.
    #[arg(long, value_parser = parse_order)]
    pub update_order: Option<UpdateOrder>,
    /// `pause`, `continue` or `rollback`.
    #[arg(long, value_parser = parse_failure_action)]
    pub update_failure_action: Option<FailureAction>,
    /// How long a new replica is watched for failure, e.g. `30s`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub update_monitor: Option<u64>,
    /// Fraction of failed replicas tolerated during an update, e.g. `0.2`.
    #[arg(long, value_parser = parse_ratio)]
    pub update_max_failure_ratio: Option<u64>,
    /// Replicas rolled back at once (0: all).
    #[arg(long)]
    pub rollback_parallelism: Option<u64>,
    /// Pause between rollback batches.
    #[arg(long, value_parser = parse_duration_arg)]
    pub rollback_delay: Option<u64>,
    /// `start-first` or `stop-first` for rollbacks.
    #[arg(long, value_parser = parse_order)]
    pub rollback_order: Option<UpdateOrder>,
    /// `pause` or `continue` when a rolled-back replica fails.
    #[arg(long, value_parser = parse_failure_action)]
    pub rollback_failure_action: Option<FailureAction>,
    /// How long a rolled-back replica is watched for failure.
    #[arg(long, value_parser = parse_duration_arg)]
    pub rollback_monitor: Option<u64>,
    /// Fraction of failed replicas tolerated during a rollback.
    #[arg(long, value_parser = parse_ratio)]
    pub rollback_max_failure_ratio: Option<u64>,
    /// `none`, `on-failure` or `any`.
    #[arg(long, value_parser = parse_condition)]
    pub restart_condition: Option<RestartCondition>,
    /// Wait before replacing an exited replica, e.g. `5s`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub restart_delay: Option<u64>,
    /// Give up after this many restarts (0: never give up).
    #[arg(long)]
    pub restart_max_attempts: Option<u64>,
    /// Window over which restarts are counted, e.g. `2m`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub restart_window: Option<u64>,
    /// Healthcheck command, run by a shell in the container.
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between healthchecks, e.g. `2s`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub health_interval: Option<u64>,
    /// Time one healthcheck may take.
    #[arg(long, value_parser = parse_duration_arg)]
    pub health_timeout: Option<u64>,
    /// Consecutive failures before unhealthy.
    #[arg(long)]
    pub health_retries: Option<u64>,
    /// Grace period after start, e.g. `10s`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub health_start_period: Option<u64>,
    /// Time between checks during the start period, e.g. `1s`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub health_start_interval: Option<u64>,
    /// Turn off every healthcheck, including the image's.
    #[arg(long)]
    pub no_healthcheck: bool,
}

impl SettingsArgs {
    /// Whether any flag needs the current spec (each changes one field of a group).
    pub fn any(&self) -> bool {
        self.touches_update()
            || self.touches_rollback()
            || self.touches_restart()
            || self.touches_health()
    }

    pub fn touches_update(&self) -> bool {
        self.update_parallelism.is_some()
            || self.update_delay.is_some()
            || self.update_order.is_some()
            || self.update_failure_action.is_some()
            || self.update_monitor.is_some()
            || self.update_max_failure_ratio.is_some()
    }

    pub fn touches_rollback(&self) -> bool {
        self.rollback_parallelism.is_some()
            || self.rollback_delay.is_some()
            || self.rollback_order.is_some()
            || self.rollback_failure_action.is_some()
            || self.rollback_monitor.is_some()
            || self.rollback_max_failure_ratio.is_some()
    }

    pub fn touches_restart(&self) -> bool {
        self.restart_condition.is_some()
            || self.restart_delay.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_window.is_some()
    }

    pub fn touches_health(&self) -> bool {
        self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
            || self.health_start_interval.is_some()
            || self.no_healthcheck
    }

    /// Checks what clap cannot: a rollback cannot roll back.
    pub fn check(&self) -> Result<(), String> {
        if self.rollback_failure_action == Some(FailureAction::Rollback) {
            return Err("--rollback-failure-action: a rollback cannot roll back".into());
        }
        Ok(())
    }

    /// Applies the flags to `spec`, each changing its field only.
    pub fn apply(&self, spec: &mut ServiceSpec) {
        if self.touches_update() {
            let c = &mut spec.update_config;
            c.parallelism = self.update_parallelism.unwrap_or(c.parallelism);
            c.delay_ms = self.update_delay.unwrap_or(c.delay_ms);
            c.order = self.update_order.unwrap_or(c.order);
            c.failure_action = self.update_failure_action.unwrap_or(c.failure_action);
            c.monitor_ms = self.update_monitor.unwrap_or(c.monitor_ms);
            c.max_failure_ratio_milli = self
                .update_max_failure_ratio
                .unwrap_or(c.max_failure_ratio_milli);
        }
        if self.touches_rollback() {
            let c = &mut spec.rollback_config;
            c.parallelism = self.rollback_parallelism.unwrap_or(c.parallelism);
            c.delay_ms = self.rollback_delay.unwrap_or(c.delay_ms);
            c.order = self.rollback_order.unwrap_or(c.order);
            c.failure_action = self.rollback_failure_action.unwrap_or(c.failure_action);
            c.monitor_ms = self.rollback_monitor.unwrap_or(c.monitor_ms);
            c.max_failure_ratio_milli = self
                .rollback_max_failure_ratio
                .unwrap_or(c.max_failure_ratio_milli);
        }
        if self.touches_restart() {
            let r = &mut spec.restart_policy;
            r.condition = self.restart_condition.unwrap_or(r.condition);
            r.delay_ms = self.restart_delay.unwrap_or(r.delay_ms);
            if let Some(n) = self.restart_max_attempts {
                r.max_attempts = (n > 0).then_some(n);
            }
            r.window_ms = self.restart_window.unwrap_or(r.window_ms);
        }
        if self.touches_health() {
            let mut h = spec.healthcheck.clone().unwrap_or_default();
            if let Some(cmd) = &self.health_cmd {
                h.test = Some(vec!["CMD-SHELL".into(), cmd.clone()]);
                h.disable = false;
            }
            h.interval_ms = self.health_interval.or(h.interval_ms);
            h.timeout_ms = self.health_timeout.or(h.timeout_ms);
            h.retries = self.health_retries.or(h.retries);
            h.start_period_ms = self.health_start_period.or(h.start_period_ms);
            h.start_interval_ms = self.health_start_interval.or(h.start_interval_ms);
            if self.no_healthcheck {
                h = HealthcheckSpec {
                    test: Some(vec!["NONE".into()]),
                    disable: true,
                    ..HealthcheckSpec::default()
                };
            }
            spec.healthcheck = Some(h);
        }
    }
}

/// `service create`'s flags, as `docker service create` names them.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Service name.
    #[arg(long)]
    pub name: Option<String>,
    /// Number of replicas (replicated mode).
    #[arg(long)]
    pub replicas: Option<u64>,
    /// `replicated` or `global`.
    #[arg(long, value_parser = ["replicated", "global"], default_value = "replicated")]
    pub mode: String,
    /// Publish a port: `PUBLISHED:TARGET[/udp]` or `published=P,target=T[,protocol=udp][,mode=host]`.
    #[arg(short = 'p', long = "publish", value_parser = parse_publish_any)]
    pub publish: Vec<Vec<PortSpec>>,
    /// Set an environment variable, `KEY=VALUE` (or `KEY` to take it from this shell).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file of `KEY=VALUE` lines.
    #[arg(long = "env-file")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Service label, `KEY=VALUE` (ingress options such as sticky sessions and Traefik routers).
    #[arg(short = 'l', long = "label", value_parser = parse_label)]
    pub label: Vec<(String, String)>,
    /// Container label, `KEY=VALUE`.
    #[arg(long = "container-label", value_parser = parse_label)]
    pub container_label: Vec<(String, String)>,
    /// Placement constraint, e.g. `node.labels.zone==a`.
    #[arg(long, value_parser = parse_constraint_arg)]
    pub constraint: Vec<Constraint>,
    /// Spread preference, `spread=node.labels.KEY`.
    #[arg(long = "placement-pref")]
    pub placement_pref: Vec<String>,
    /// Most replicas on one node.
    #[arg(long)]
    pub max_replicas: Option<u64>,
    /// Mount: `type=bind|volume|tmpfs,source=SRC,target=DST[,readonly]`.
    #[arg(long, value_parser = parse_mount)]
    pub mount: Vec<MountSpec>,
    /// Network to attach to (stored with the service).
    #[arg(long)]
    pub network: Vec<String>,
    /// Overrides the image's entrypoint (a string split as a shell would).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User (`NAME`, `UID`, `UID:GID`).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Container host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Time a replica may take to stop before it is killed, e.g. `30s`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub stop_grace_period: Option<u64>,
    /// Signal that stops a replica.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Run an init inside the container.
    #[arg(long)]
    pub init: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Add a kernel capability.
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop a kernel capability.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Kernel parameter, `KEY=VALUE`.
    #[arg(long, value_parser = parse_label)]
    pub sysctl: Vec<(String, String)>,
    /// Resource limit, `NAME=SOFT[:HARD]`.
    #[arg(long, value_parser = parse_ulimit)]
    pub ulimit: Vec<Ulimit>,
    /// Log driver.
    #[arg(long)]
    pub log_driver: Option<String>,
    /// Log driver option, `KEY=VALUE`.
    #[arg(long, value_parser = parse_label)]
    pub log_opt: Vec<(String, String)>,
    /// DNS server.
    #[arg(long)]
    pub dns: Vec<String>,
    /// DNS search domain.
    #[arg(long)]
    pub dns_search: Vec<String>,
    /// Extra `/etc/hosts` entry, `HOST:IP`.
    #[arg(long = "host")]
    pub host: Vec<String>,
    /// CPU limit, e.g. `0.5`.
    #[arg(long, value_parser = parse_cpus)]
    pub limit_cpu: Option<u64>,
    /// Memory limit, e.g. `512M`.
    #[arg(long, value_parser = parse_memory)]
    pub limit_memory: Option<u64>,
    /// CPUs placement must find free, e.g. `0.5`.
    #[arg(long, value_parser = parse_cpus)]
    pub reserve_cpu: Option<u64>,
    /// Memory placement must find free, e.g. `256M`.
    #[arg(long, value_parser = parse_memory)]
    pub reserve_memory: Option<u64>,
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Exit at once instead of waiting for the service to converge.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Print only the service id.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Image reference; it must already be on the nodes.
    #[arg(value_parser = compose::check_image)]
    pub image: String,
    /// Command and arguments (override the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

impl CreateArgs {
    /// The service the flags describe, or why they do not describe one.
    pub fn into_def(
        self,
        environ: &std::collections::BTreeMap<String, String>,
    ) -> Result<ServiceDef, String> {
        self.settings.check()?;
        let name = match self.name {
            Some(n) => n,
            None => return Err("--name is required (shoal does not invent service names)".into()),
        };
        let mode = if self.mode == "global" {
            Mode::Global
        } else {
            Mode::Replicated
        };
        if mode == Mode::Global && self.replicas.is_some() {
            return Err("--replicas cannot be used with --mode global".into());
        }
        let mut spec = ServiceSpec {
            image: self.image,
            mode,
            ..ServiceSpec::default()
        };
        if !self.command.is_empty() {
            spec.command = Some(self.command);
        }
        if let Some(ep) = self.entrypoint {
            spec.entrypoint =
                Some(compose::split_words(&ep).map_err(|e| format!("--entrypoint: {e}"))?);
        }
        for file in &self.env_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("--env-file {}: {e}", file.display()))?;
            for line in text.lines().map(str::trim_start) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                env_entry(&mut spec, line, environ);
            }
        }
        for e in &self.env {
            env_entry(&mut spec, e, environ);
        }
        spec.labels = self.label.into_iter().collect();
        spec.container_labels = self.container_label.into_iter().collect();
        spec.ports = self.publish.into_iter().flatten().collect();
        spec.placement.constraints = self.constraint;
        for pref in &self.placement_pref {
            let label = pref.strip_prefix("spread=").ok_or_else(|| {
                format!("--placement-pref {pref:?}: expected spread=node.labels.KEY")
            })?;
            spec.placement.spread.push(compose::parse_spread(label)?);
        }
        spec.placement.max_replicas_per_node = self.max_replicas.filter(|n| *n > 0);
        spec.mounts = self.mount;
        spec.networks = self.network;
        spec.working_dir = self.workdir;
        spec.user = self.user;
        spec.hostname = self.hostname;
        spec.stop_grace_ms = self.stop_grace_period;
        spec.stop_signal = self.stop_signal;
        spec.init = self.init.then_some(true);
        spec.tty = self.tty;
        spec.read_only = self.read_only;
        spec.cap_add = self.cap_add;
        spec.cap_drop = self.cap_drop;
        spec.sysctls = self.sysctl.into_iter().collect();
        spec.ulimits = self.ulimit;
        spec.ulimits.sort();
        if self.log_driver.is_some() || !self.log_opt.is_empty() {
            spec.logging = Some(LoggingSpec {
                driver: self.log_driver.unwrap_or_default(),
                options: self.log_opt.into_iter().collect(),
            });
        }
        spec.dns = self.dns;
        spec.dns_search = self.dns_search;
        spec.extra_hosts = self
            .host
            .iter()
            .map(|h| match h.split_once([':', '=']) {
                Some((host, ip)) if !host.is_empty() && !ip.is_empty() => {
                    Ok(format!("{host}:{ip}"))
                }
                _ => Err(format!("--host {h:?}: expected HOST:IP")),
            })
            .collect::<Result<_, _>>()?;
        spec.resources.limits = ResourceAmounts {
            cpus_milli: self.limit_cpu.filter(|c| *c > 0),
            memory_bytes: self.limit_memory.filter(|m| *m > 0),
        };
        spec.resources.reservations = ResourceAmounts {
            cpus_milli: self.reserve_cpu.filter(|c| *c > 0),
            memory_bytes: self.reserve_memory.filter(|m| *m > 0),
        };
        self.settings.apply(&mut spec);
        shoal_core::routing::sticky::from_labels(&name, &spec.labels)
            .and_then(|_| shoal_core::reconcile::placement::rebalance_label(&spec.labels))
            .map_err(|e| format!("--label: {e}"))?;
        let routing = shoal_core::routing::routers::from_labels(&name, &spec.labels, &spec.ports)
            .map_err(|e| format!("--label: {e}"))?;
        for (label, why) in routing.warnings {
            eprintln!("warning: label {label}: {why}");
        }
        Ok(ServiceDef {
            name,
            stack: String::new(),
            replicas: self.replicas.unwrap_or(1),
            spec,
        })
    }
}

/// `KEY=VALUE`, or `KEY` taken from the shell's environment (left out when unset), as docker.
fn env_entry(
    spec: &mut ServiceSpec,
    entry: &str,
    environ: &std::collections::BTreeMap<String, String>,
) {
    match entry.split_once('=') {
        Some((k, v)) => {
            spec.env.insert(k.to_string(), v.to_string());
        }
        None => {
            if let Some(v) = environ.get(entry) {
                spec.env.insert(entry.to_string(), v.clone());
            }
        }
    }
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if !s.is_empty() => Ok((s.to_string(), String::new())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

pub fn parse_constraint_arg(s: &str) -> Result<Constraint, String> {
    compose::parse_constraint(s)
}

pub fn parse_duration_arg(s: &str) -> Result<u64, String> {
    compose::duration_ms(s)
}

fn parse_cpus(s: &str) -> Result<u64, String> {
    compose::thousandths(s)
}

fn parse_memory(s: &str) -> Result<u64, String> {
    compose::memory_bytes(s)
}

pub fn parse_ratio(s: &str) -> Result<u64, String> {
    let v = compose::thousandths(s)?;
    if v > 1000 {
        return Err(format!("{s}: a ratio is between 0 and 1"));
    }
    Ok(v)
}

pub fn parse_order(s: &str) -> Result<UpdateOrder, String> {
    match s {
        "start-first" => Ok(UpdateOrder::StartFirst),
        "stop-first" => Ok(UpdateOrder::StopFirst),
        _ => Err(format!("{s:?}: expected start-first or stop-first")),
    }
}

pub fn parse_failure_action(s: &str) -> Result<FailureAction, String> {
    match s {
        "pause" => Ok(FailureAction::Pause),
        "continue" => Ok(FailureAction::Continue),
        "rollback" => Ok(FailureAction::Rollback),
        _ => Err(format!("{s:?}: expected pause, continue or rollback")),
    }
}

pub fn parse_condition(s: &str) -> Result<RestartCondition, String> {
    match s {
        "none" => Ok(RestartCondition::None),
        "on-failure" => Ok(RestartCondition::OnFailure),
        "any" => Ok(RestartCondition::Any),
        _ => Err(format!("{s:?}: expected none, on-failure or any")),
    }
}

/// `-p` in either of docker's syntaxes.
pub fn parse_publish_any(s: &str) -> Result<Vec<PortSpec>, String> {
    if !s.contains('=') {
        return compose::parse_publish(s);
    }
    let mut port = PortSpec {
        target: 0,
        published: None,
        protocol: Protocol::Tcp,
        mode: PublishMode::Ingress,
    };
    let number = |v: &str| {
        v.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?}: {v:?} is not a port"))
    };
    for field in s.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: {field:?} is not KEY=VALUE"))?;
        match k {
            "target" => port.target = number(v)?,
            "published" => port.published = Some(number(v)?),
            "protocol" => {
                port.protocol = match v {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    _ => return Err(format!("{s:?}: protocol is tcp or udp")),
                }
            }
            "mode" => {
                port.mode = match v {
                    "ingress" => PublishMode::Ingress,
                    "host" => PublishMode::Host,
                    _ => return Err(format!("{s:?}: mode is ingress or host")),
                }
            }
            _ => return Err(format!("{s:?}: unknown field {k:?}")),
        }
    }
    if port.target == 0 {
        return Err(format!("{s:?}: target is required"));
    }
    if port.published.is_none() {
        return Err(format!("{s:?}: give the published port"));
    }
    Ok(vec![port])
}

/// `--mount type=bind,source=/a,target=/b,readonly`.
pub fn parse_mount(s: &str) -> Result<MountSpec, String> {
    let mut kind = MountKind::Volume;
    let (mut source, mut target, mut read_only) = (String::new(), String::new(), false);
    for field in s.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, "true"));
        match k {
            "type" => {
                kind = match v {
                    "volume" => MountKind::Volume,
                    "bind" => MountKind::Bind,
                    "tmpfs" => MountKind::Tmpfs,
                    _ => return Err(format!("{s:?}: type is volume, bind or tmpfs")),
                }
            }
            "source" | "src" => source = v.to_string(),
            "target" | "destination" | "dst" => target = v.to_string(),
            "readonly" | "ro" => {
                read_only = match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(format!("{s:?}: readonly is true or false")),
                }
            }
            _ => return Err(format!("{s:?}: unknown field {k:?}")),
        }
    }
    if !target.starts_with('/') {
        return Err(format!("{s:?}: target must be an absolute path"));
    }
    match kind {
        MountKind::Bind if !source.starts_with('/') => {
            return Err(format!("{s:?}: a bind source must be an absolute path"))
        }
        MountKind::Tmpfs if !source.is_empty() => {
            return Err(format!("{s:?}: a tmpfs mount takes no source"))
        }
        _ => {}
    }
    Ok(MountSpec {
        source,
        target,
        kind,
        read_only,
    })
}

/// `--ulimit nofile=1024:2048` or `nproc=512`.
fn parse_ulimit(s: &str) -> Result<Ulimit, String> {
    let (name, limits) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=SOFT[:HARD]"))?;
    let n = |v: &str| {
        v.parse::<i64>()
            .ok()
            .filter(|n| *n >= -1)
            .ok_or_else(|| format!("{s:?}: {v:?} is not a limit"))
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((a, b)) => (n(a)?, n(b)?),
        None => (n(limits)?, n(limits)?),
    };
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        create: CreateArgs,
    }

    #[test]
    fn create_flags_describe_a_service() {
        let cli = Cli::try_parse_from([
            "x",
            "--name",
            "web",
            "--replicas",
            "2",
            "-p",
            "8080:8080",
            "-p",
            "published=53,target=5353,protocol=udp",
            "-e",
            "A=1",
            "--label",
            "traefik.http.routers.w.rule=PathPrefix(`/`)",
            "--label",
            "traefik.http.services.w.loadbalancer.server.port=8080",
            "--container-label",
            "c=d",
            "--constraint",
            "node.labels.zone==a",
            "--mount",
            "type=bind,source=/srv,target=/data,readonly",
            "--update-parallelism",
            "2",
            "--update-order",
            "start-first",
            "--rollback-parallelism",
            "3",
            "--restart-condition",
            "on-failure",
            "--health-cmd",
            "true",
            "--health-interval",
            "2s",
            "--limit-cpu",
            "0.5",
            "--limit-memory",
            "64M",
            "--network",
            "front",
            "--entrypoint",
            "/bin/sh -c",
            "--workdir",
            "/app",
            "--user",
            "1000:1000",
            "--stop-grace-period",
            "30s",
            "--ulimit",
            "nofile=100:200",
            "--cap-add",
            "NET_ADMIN",
            "--host",
            "db:10.0.0.2",
            "shoal-demo:v1",
            "serve",
            "--port",
            "8080",
        ])
        .unwrap();
        let def = cli.create.into_def(&Default::default()).unwrap();
        assert_eq!(
            (def.name.as_str(), def.stack.as_str(), def.replicas),
            ("web", "", 2)
        );
        let s = &def.spec;
        assert_eq!(s.image, "shoal-demo:v1");
        assert_eq!(
            s.command.as_deref(),
            Some(&["serve".to_string(), "--port".into(), "8080".into()][..])
        );
        assert_eq!(
            s.entrypoint.as_deref(),
            Some(&["/bin/sh".to_string(), "-c".into()][..])
        );
        assert_eq!(s.ports.len(), 2);
        assert_eq!(s.ports[1].protocol, Protocol::Udp);
        assert_eq!(s.env["A"], "1");
        assert_eq!(s.container_labels["c"], "d");
        assert_eq!(s.placement.constraints.len(), 1);
        assert!(s.mounts[0].read_only && s.mounts[0].kind == MountKind::Bind);
        assert_eq!(s.update_config.parallelism, 2);
        assert_eq!(s.update_config.order, UpdateOrder::StartFirst);
        assert_eq!(s.rollback_config.parallelism, 3);
        assert_eq!(s.restart_policy.condition, RestartCondition::OnFailure);
        assert_eq!(s.healthcheck.as_ref().unwrap().interval_ms, Some(2000));
        assert_eq!(s.resources.limits.cpus_milli, Some(500));
        assert_eq!(s.resources.limits.memory_bytes, Some(64 << 20));
        assert_eq!(s.networks, ["front"]);
        assert_eq!(s.working_dir.as_deref(), Some("/app"));
        assert_eq!(s.user.as_deref(), Some("1000:1000"));
        assert_eq!(s.stop_grace_ms, Some(30_000));
        assert_eq!(s.ulimits[0].hard, 200);
        assert_eq!(s.cap_add, ["NET_ADMIN"]);
        assert_eq!(s.extra_hosts, ["db:10.0.0.2"]);
    }

    #[test]
    fn bad_create_flags_are_refused() {
        let parse = |args: &[&str]| {
            let mut all = vec!["x"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|c| c.create.into_def(&Default::default()))
        };
        assert!(parse(&["img:1"]).unwrap().unwrap_err().contains("--name"));
        assert!(parse(&[
            "--name",
            "a",
            "--mode",
            "global",
            "--replicas",
            "2",
            "img:1"
        ])
        .unwrap()
        .is_err());
        assert!(parse(&["--name", "a", "-p", "published=1", "img:1"]).is_err());
        assert!(parse(&[
            "--name",
            "a",
            "--mount",
            "type=bind,source=rel,target=/x",
            "img:1"
        ])
        .is_err());
        assert!(parse(&["--name", "a", "NOT:AN:IMAGE!"]).is_err());
        assert!(parse(&[
            "--name",
            "a",
            "--label",
            "traefik.http.routers.x.middlewares=auth",
            "img:1"
        ])
        .unwrap()
        .unwrap_err()
        .contains("middlewares"));
    }
}
