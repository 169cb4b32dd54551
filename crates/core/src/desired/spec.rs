//! What an operator asks for, as plain values: the service spec that stack files and `service
//! update` produce, and node settings. The CRDT layer (`super::state`) stores these field by field.
//!
//! Durations are integer milliseconds and CPU amounts integer milli-CPUs, so specs compare and hash
//! exactly and every node derives the same version from the same spec.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::net::Ipv4Net;

/// How many replicas a service runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `replicas` copies spread over eligible nodes.
    #[default]
    Replicated,
    /// One copy on every eligible node.
    Global,
}

/// Transport protocol of a published port.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The lower-case name, as in `8080/tcp`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a published port listens.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// On every node, balanced over all healthy replicas (the routing mesh).
    #[default]
    Ingress,
    /// Only on nodes running a replica, straight to that replica.
    Host,
}

/// A port of the service's containers, optionally published.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortSpec {
    /// Port inside the container.
    pub target: u16,
    /// Port on the nodes, if published.
    pub published: Option<u16>,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Ingress (every node) or host (replica's node only).
    pub mode: PublishMode,
}

/// A container healthcheck. `test: None` keeps the image's own test (Swarm's behaviour when a
/// stack file overrides only the timings).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct HealthcheckSpec {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]`, or `None` for the image's test.
    pub test: Option<Vec<String>>,
    /// Time between checks.
    pub interval_ms: Option<u64>,
    /// Time one check may take.
    pub timeout_ms: Option<u64>,
    /// Consecutive failures before unhealthy.
    pub retries: Option<u64>,
    /// Grace period after start during which failures do not count.
    pub start_period_ms: Option<u64>,
    /// Turn off any healthcheck, including the image's.
    pub disable: bool,
    /// Time between checks during the start period (Docker 25+ `--health-start-interval`).
    pub start_interval_ms: Option<u64>,
}

/// What a placement constraint looks at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConstraintKey {
    /// `node.id`
    NodeId,
    /// `node.hostname` (the node's name)
    NodeHostname,
    /// `node.role` (every shoal node is a `manager` and a `worker`; kept for Swarm files)
    NodeRole,
    /// `node.labels.KEY` (operator labels from `node update --label-add`)
    NodeLabel(String),
    /// `engine.labels.KEY` (labels given to the agent with `--label`)
    EngineLabel(String),
    /// `node.platform.os`
    PlatformOs,
    /// `node.platform.arch`
    PlatformArch,
}

/// `==` or `!=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConstraintOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// One placement constraint, e.g. `node.labels.zone == a`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Constraint {
    /// What is compared.
    pub key: ConstraintKey,
    /// How.
    pub op: ConstraintOp,
    /// With what.
    pub value: String,
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = match &self.key {
            ConstraintKey::NodeId => "node.id".to_string(),
            ConstraintKey::NodeHostname => "node.hostname".to_string(),
            ConstraintKey::NodeRole => "node.role".to_string(),
            ConstraintKey::NodeLabel(k) => format!("node.labels.{k}"),
            ConstraintKey::EngineLabel(k) => format!("engine.labels.{k}"),
            ConstraintKey::PlatformOs => "node.platform.os".to_string(),
            ConstraintKey::PlatformArch => "node.platform.arch".to_string(),
        };
        let op = match self.op {
            ConstraintOp::Eq => "==",
            ConstraintOp::Ne => "!=",
        };
        write!(f, "{key} {op} {}", self.value)
    }
}

/// Where replicas may go.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct PlacementSpec {
    /// All must hold for a node to be eligible.
    pub constraints: Vec<Constraint>,
    /// `spread` preferences: the label names to spread over (`node.labels.zone` → `zone`).
    pub spread: Vec<String>,
    /// At most this many replicas of the service on one node.
    pub max_replicas_per_node: Option<u64>,
}

/// What to do when an update's new replica fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Stop the update where it is.
    #[default]
    Pause,
    /// Carry on with the next batch.
    Continue,
    /// Go back to the previous spec.
    Rollback,
}

/// Whether the new replica starts before the old one stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old replica, then start the new (Swarm's default).
    #[default]
    StopFirst,
    /// Start the new replica, stop the old once the new is healthy.
    StartFirst,
}

/// `deploy.update_config` / `deploy.rollback_config`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Replicas updated at once; 0 means all at once.
    pub parallelism: u64,
    /// Pause between batches.
    pub delay_ms: u64,
    /// What to do when a new replica fails.
    pub failure_action: FailureAction,
    /// How long a new replica is watched for failure.
    pub monitor_ms: u64,
    /// Fraction of failures tolerated, in thousandths (0.1 → 100).
    pub max_failure_ratio_milli: u64,
    /// Start-first or stop-first.
    pub order: UpdateOrder,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        // Swarm's defaults.
        UpdateConfig {
            parallelism: 1,
            delay_ms: 0,
            failure_action: FailureAction::Pause,
            monitor_ms: 5_000,
            max_failure_ratio_milli: 0,
            order: UpdateOrder::StopFirst,
        }
    }
}

/// When a replica's container that exited is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Never.
    None,
    /// Only after a non-zero exit.
    OnFailure,
    /// Always (Swarm's default).
    #[default]
    Any,
}

/// `deploy.restart_policy`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// When to replace an exited container.
    pub condition: RestartCondition,
    /// Wait before replacing, after every failure. 0 (the default, when the stack file does not
    /// set it): the first replacement after a failure is immediate, and only replicas that keep
    /// failing soon after they start back off (0.5 s, doubling up to 60 s).
    pub delay_ms: u64,
    /// Give up after this many attempts within `window_ms` (None: never give up).
    pub max_attempts: Option<u64>,
    /// Window over which attempts are counted (0: the whole life of the slot).
    pub window_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        // Swarm's default delay is 5 s, spent on every restart, the first included; shoal
        // replaces at once and backs off only on a crash loop (see `delay_ms`).
        RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: 0,
            max_attempts: None,
            window_ms: 0,
        }
    }
}

/// CPU and memory amounts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct ResourceAmounts {
    /// CPUs in thousandths (`0.5` → 500).
    pub cpus_milli: Option<u64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
}

/// `deploy.resources`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Resources {
    /// Hard caps on each container.
    pub limits: ResourceAmounts,
    /// What placement must find free on a node.
    pub reservations: ResourceAmounts,
}

/// A volume or bind mount.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MountSpec {
    /// Named volume, host path (bind), or empty for an anonymous volume / tmpfs.
    pub source: String,
    /// Path inside the container.
    pub target: String,
    /// `volume`, `bind` or `tmpfs`.
    pub kind: MountKind,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Kind of a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A named or anonymous Docker volume.
    Volume,
    /// A host path.
    Bind,
    /// A tmpfs.
    Tmpfs,
}

/// Everything about a service except its name, stack and replica count, which the CRDT keeps in
/// registers of their own (so `service scale` never races a concurrent `service update`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct ServiceSpec {
    /// Image reference; it must already be on the nodes (no registry).
    pub image: String,
    /// Overrides the image's CMD.
    pub command: Option<Vec<String>>,
    /// Overrides the image's ENTRYPOINT.
    pub entrypoint: Option<Vec<String>>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Container labels (`services.*.labels`).
    pub container_labels: BTreeMap<String, String>,
    /// Service labels (`deploy.labels`): ingress options such as sticky sessions live here.
    pub labels: BTreeMap<String, String>,
    /// Replicated or global.
    pub mode: Mode,
    /// Container ports, published or not.
    pub ports: Vec<PortSpec>,
    /// Healthcheck override (None: the image's own).
    pub healthcheck: Option<HealthcheckSpec>,
    /// Placement rules.
    pub placement: PlacementSpec,
    /// Rolling update settings.
    pub update_config: UpdateConfig,
    /// Rollback settings.
    pub rollback_config: UpdateConfig,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// CPU and memory.
    pub resources: Resources,
    /// Networks the service attaches to (stack-scoped names).
    pub networks: Vec<String>,
    /// Volumes and binds.
    pub mounts: Vec<MountSpec>,
    /// `user`: the user (`NAME`, `UID`, `UID:GID`) the command runs as; None: the image's.
    pub user: Option<String>,
    /// `working_dir`; None: the image's.
    pub working_dir: Option<String>,
    /// `hostname` of the containers; None: Docker's (the container id).
    pub hostname: Option<String>,
    /// `stop_signal`; None: the image's STOPSIGNAL, else SIGTERM.
    pub stop_signal: Option<String>,
    /// `stop_grace_period`: how long a replica may take to stop before it is killed. None: the
    /// agent's default (10 s). Used as the container's stop timeout and by the agent's stops.
    pub stop_grace_ms: Option<u64>,
    /// `init`: run an init process as PID 1; None: the engine's default.
    pub init: Option<bool>,
    /// `tty`: allocate a pseudo-terminal.
    pub tty: bool,
    /// `read_only`: mount the root filesystem read-only.
    pub read_only: bool,
    /// `cap_add`: kernel capabilities added.
    pub cap_add: Vec<String>,
    /// `cap_drop`: kernel capabilities dropped.
    pub cap_drop: Vec<String>,
    /// `sysctls`: namespaced kernel parameters.
    pub sysctls: BTreeMap<String, String>,
    /// `ulimits`, by name.
    pub ulimits: Vec<Ulimit>,
    /// `logging`: the containers' log driver and its options; None: the engine's default.
    pub logging: Option<LoggingSpec>,
    /// `dns`: resolvers for the containers.
    pub dns: Vec<String>,
    /// `dns_search`: search domains.
    pub dns_search: Vec<String>,
    /// `extra_hosts`: `HOST:IP` lines added to `/etc/hosts`.
    pub extra_hosts: Vec<String>,
    /// The networks it attaches to, in order, with per-network aliases: the authority when not
    /// empty (`networks` then holds the same names); an empty list falls back to `networks`
    /// (specs written before attachments existed). See [`ServiceSpec::network_attachments`].
    pub attachments: Vec<NetworkAttachment>,
    /// How its name resolves: one virtual address, or the replicas' own addresses.
    pub endpoint_mode: EndpointMode,
}

/// One resource limit (`ulimits: {nofile: {soft: 1024, hard: 2048}}`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ulimit {
    /// `nofile`, `nproc`, `core`...
    pub name: String,
    /// Soft limit (-1: unlimited).
    pub soft: i64,
    /// Hard limit (-1: unlimited).
    pub hard: i64,
}

/// `logging`: a log driver and its options.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct LoggingSpec {
    /// Driver name (`json-file`, `local`, `syslog`...); empty: the engine's default driver.
    pub driver: String,
    /// Driver options (`max-size: 10m`).
    pub options: BTreeMap<String, String>,
}

impl ServiceSpec {
    /// The networks the service attaches to, in order (the first is where its replicas' DNS
    /// server listens), with their aliases.
    pub fn network_attachments(&self) -> Vec<NetworkAttachment> {
        if !self.attachments.is_empty() {
            return self.attachments.clone();
        }
        self.networks
            .iter()
            .map(|n| NetworkAttachment {
                network: n.clone(),
                aliases: Vec::new(),
            })
            .collect()
    }
}

/// `deploy.endpoint_mode`: what the service's name resolves to on its networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// One stable virtual address per network, balanced over the ready replicas by the node the
    /// connection starts from (Swarm's default).
    #[default]
    Vip,
    /// DNS round robin: the ready replicas' own addresses.
    Dnsrr,
}

impl EndpointMode {
    /// The word stack files use.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }
}

/// A service's place on one network (`services.NAME.networks.NET` of a stack file).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkAttachment {
    /// The network's full name (`STACK_front`, or an external network's own name).
    pub network: String,
    /// Further names the service answers to on this network (besides its full and short names).
    pub aliases: Vec<String>,
}

/// The only network driver shoal has: a bridge per node, routed between nodes (see
/// `docs/networking.md`); Swarm's `overlay` name is what stack files say.
pub const OVERLAY_DRIVER: &str = "overlay";

/// A network's settings. Networks are not updated once created (as in Swarm, a redeploy with
/// other settings keeps the network as it is).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct NetworkSpec {
    /// Always [`OVERLAY_DRIVER`]; kept so that `network inspect` shows what was asked.
    pub driver: String,
    /// Swarm's `attachable` (standalone containers may join): recorded, not acted on.
    pub attachable: bool,
    /// No traffic leaves the network's range: no masquerading out, nothing forwarded in.
    pub internal: bool,
    /// Network labels.
    pub labels: BTreeMap<String, String>,
    /// The range asked for (`ipam.config[0].subnet`); `None` takes a /16 of the default pool.
    pub subnet: Option<Ipv4Net>,
    /// The stack that created it (`stack rm` removes it); `None` for `network create`.
    pub stack: Option<String>,
}

/// A network as a stack file or `network create` declares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDef {
    /// Full name: `STACK_KEY`, the `name:` given, or an external network's own name.
    pub name: String,
    /// `external: true`: it must exist already, and the stack does not own it.
    pub external: bool,
    /// Its settings (ignored when external).
    pub spec: NetworkSpec,
}

/// A service as a stack file or `service create` describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDef {
    /// Full name, `STACK_SERVICE` for stack services.
    pub name: String,
    /// The stack it belongs to.
    pub stack: String,
    /// Desired replicas (ignored for global services).
    pub replicas: u64,
    /// The rest.
    pub spec: ServiceSpec,
}

/// Operator setting of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Runs replicas.
    #[default]
    Active,
    /// Keeps what it runs, gets no new replicas.
    Pause,
    /// Hands everything off and runs nothing.
    Drain,
}

impl Availability {
    /// The lower-case word used by the CLI and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }
}
