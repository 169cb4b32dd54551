//! The Docker Engine implementation of [`super::ContainerRuntime`] (bollard).
//!
//! Every container shoal makes carries the labels of [`super::labels`]; this module lists, creates
//! and removes only containers labelled with the caller's node id, so several agents (a testnet on
//! one engine, or the tests) can share an engine.
//!
//! - Nothing is ever pulled: an image must already be on the node (there is no registry), and a
//!   missing one fails the create at once with a clear message.
//! - Nothing is published with Docker (`-p`): shoal's own ingress proxy forwards to the container
//!   endpoints that [`Docker::list`] reports (container IP on the bridge network, container port).
//! - Containers get the restart policy `no`: shoal replaces exited containers itself.
//! - Every engine call has a timeout ([`CALL_TIMEOUT`]; a stop gets its own timeout plus
//!   [`STOP_GRACE`]), so a hung engine cannot hang the agent.
//! - [`Docker::watch`] wakes the agent up when a container of its node changes (dies, starts,
//!   changes health, goes away).
//!
//! Labels hold lossless text forms: the slot is `3` or the full 32-hex-digit node id (global
//! services), the version is `WALL.COUNTER@NODE` with the full node id ([`Hlc`]'s `Display` shows a
//! 12-digit prefix of the node id, which cannot be parsed back).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bollard::{
    errors::Error as BollardError,
    models::{
        ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
        ContainerSummaryHealthStatusEnum, HealthConfig, HealthStatusEnum, HostConfig, Mount,
        MountType, RestartPolicy, RestartPolicyNameEnum,
    },
    query_parameters::{
        CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
        StopContainerOptionsBuilder,
    },
};
use tokio::sync::{mpsc, OnceCell};
use tracing::Instrument;

use super::{labels, ContainerRuntime, ContainerStatus, LocalContainer, RuntimeError, TaskSpec};
use crate::core::{
    desired::{
        hlc::Hlc,
        spec::{HealthcheckSpec, MountKind, Protocol},
    },
    identity::NodeId,
    observed::{Health, SlotKey},
};

/// Longest any single engine call may take (a stop gets its own timeout plus [`STOP_GRACE`]).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// What a stop may take beyond the container's own stop timeout.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long [`Docker::ping`] waits for an answer.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Stop timeout stored in each container (used by a plain `docker stop` and when the engine shuts
/// down; shoal's own removals pass theirs).
pub const DEFAULT_STOP_TIMEOUT_S: i64 = 10;
/// How often [`Docker::watch`] looks at the node's containers.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Poll underneath the event stream, for events it missed.
pub const WATCH_SAFETY_POLL: Duration = Duration::from_secs(5);
/// Longest wait between attempts while the engine does not answer.
pub const WATCH_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The Docker Engine on this host. Cheap to clone (clones share the connection).
#[derive(Clone, Debug)]
pub struct Docker {
    client: bollard::Docker,
    /// Set once the API version has been agreed with the engine (bollard speaks a newer API than
    /// older engines accept; clones of the client share the negotiated version).
    negotiated: Arc<OnceCell<()>>,
}

impl Docker {
    /// A client for the local engine: `DOCKER_HOST` if set, else the default unix socket. Does
    /// not contact the engine; see [`Docker::ping`].
    pub fn connect() -> Result<Docker, RuntimeError> {
        Self::from_client(bollard::Docker::connect_with_defaults())
    }

    /// A client for the engine at `host` (`unix:///var/run/docker.sock`, `tcp://HOST:PORT`, as
    /// `DOCKER_HOST` takes). Does not contact the engine.
    pub fn connect_to(host: &str) -> Result<Docker, RuntimeError> {
        Self::from_client(bollard::Docker::connect_with_host(host))
    }

    fn from_client(client: Result<bollard::Docker, BollardError>) -> Result<Docker, RuntimeError> {
        let client = client
            .map_err(|e| RuntimeError(format!("cannot connect to Docker: {e}")))?
            // Each call is bounded by a timeout of ours (see `call`); bollard's own must not cut
            // a long stop short.
            .with_timeout(Duration::from_secs(3600));
        Ok(Docker {
            client,
            negotiated: Arc::new(OnceCell::new()),
        })
    }

    /// Whether an engine answers (within [`PING_TIMEOUT`]).
    pub async fn ping(&self) -> Result<(), RuntimeError> {
        tracing::debug!("docker: ping");
        let client = self.client_within(PING_TIMEOUT).await?;
        call("ping", PING_TIMEOUT, client.ping())
            .await
            .map(|_| ())
            .map_err(Into::into)
    }

    /// The client, once the API version is agreed (retried on every call until it succeeds).
    async fn client(&self) -> Result<&bollard::Docker, RuntimeError> {
        self.client_within(CALL_TIMEOUT).await
    }

    async fn client_within(&self, timeout: Duration) -> Result<&bollard::Docker, RuntimeError> {
        self.negotiated
            .get_or_try_init(|| async {
                let client = self.client.clone();
                call("negotiate API version", timeout, client.negotiate_version())
                    .await
                    .map(|client| {
                        let v = client.client_version();
                        tracing::debug!(
                            api = %format!("{}.{}", v.major_version, v.minor_version),
                            "docker: API version agreed"
                        );
                    })
            })
            .await?;
        Ok(&self.client)
    }

    /// Wakes `notify` whenever a container of `node` appears, changes state or health, or
    /// disappears. Docker's event stream gives prompt wake-ups; a slow poll underneath catches
    /// whatever the stream missed (a reconnect, an engine restart). Returns once the receiver is
    /// dropped; backs off while the engine is away and never busy-loops.
    pub async fn watch(&self, node: NodeId, notify: mpsc::Sender<()>) {
        tokio::select! {
            _ = self.follow_events(node, notify.clone()) => {}
            _ = self.watch_every(node, notify, WATCH_SAFETY_POLL) => {}
        }
    }

    /// Follows the engine's event stream for `node`'s containers, reconnecting with backoff.
    async fn follow_events(&self, node: NodeId, notify: mpsc::Sender<()>) {
        use futures_util::StreamExt;
        let mut backoff = Duration::from_millis(200);
        loop {
            if let Ok(client) = self.client().await {
                let mut filters: std::collections::HashMap<&str, Vec<String>> =
                    std::collections::HashMap::new();
                filters.insert("type", vec!["container".into()]);
                filters.insert("label", vec![format!("{}={node}", labels::NODE)]);
                let options = bollard::query_parameters::EventsOptionsBuilder::new()
                    .filters(&filters)
                    .build();
                let mut stream = client.events(Some(options));
                while let Some(event) = stream.next().await {
                    if event.is_err() {
                        break;
                    }
                    backoff = Duration::from_millis(200);
                    match notify.try_send(()) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
                        Err(mpsc::error::TrySendError::Closed(())) => return,
                    }
                }
            }
            if !sleep_unless_closed(&notify, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(WATCH_MAX_BACKOFF);
        }
    }

    /// [`Docker::watch`] with another polling interval.
    pub async fn watch_every(&self, node: NodeId, notify: mpsc::Sender<()>, interval: Duration) {
        let mut last: Option<BTreeMap<String, (String, String)>> = None;
        let mut backoff = interval;
        let mut failing = false;
        loop {
            if notify.is_closed() {
                return;
            }
            match self.fingerprint(node).await {
                Ok(now) => {
                    if failing {
                        tracing::info!(node = %node.short(), "docker: engine answers again");
                    }
                    let changed = failing || last.as_ref() != Some(&now);
                    failing = false;
                    backoff = interval;
                    if changed {
                        tracing::debug!(node = %node.short(), containers = now.len(), "docker: change, waking the agent");
                        last = Some(now);
                        match notify.try_send(()) {
                            Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
                            Err(mpsc::error::TrySendError::Closed(())) => return,
                        }
                    }
                    if !sleep_unless_closed(&notify, interval).await {
                        return;
                    }
                }
                Err(e) => {
                    if failing {
                        tracing::debug!(node = %node.short(), error = %e, retry_in = ?backoff, "docker: watch still failing");
                    } else {
                        tracing::warn!(node = %node.short(), error = %e, retry_in = ?backoff, "docker: watch cannot reach the engine");
                    }
                    failing = true;
                    if !sleep_unless_closed(&notify, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).clamp(Duration::from_millis(100), WATCH_MAX_BACKOFF);
                }
            }
        }
    }

    /// `id → (state, health)` of every container of `node`, from one list call.
    async fn fingerprint(
        &self,
        node: NodeId,
    ) -> Result<BTreeMap<String, (String, String)>, RuntimeError> {
        let summaries = self.list_summaries(node).await?;
        Ok(summaries
            .into_iter()
            .filter_map(|s| {
                let id = s.id.clone()?;
                let state = s.state.map(|st| st.to_string()).unwrap_or_default();
                Some((id, (state, summary_health(&s))))
            })
            .collect())
    }

    /// The summaries of every container of `node` (running or not).
    async fn list_summaries(&self, node: NodeId) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let client = self.client().await?;
        let filters = HashMap::from([("label", vec![format!("{}={node}", labels::NODE)])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        call(
            "list containers",
            CALL_TIMEOUT,
            client.list_containers(Some(options)),
        )
        .await
        .map_err(Into::into)
    }

    /// Removes a container that was created but must not stay (failed start, timed-out create).
    async fn discard(&self, container: &str) {
        let Ok(client) = self.client().await else {
            return;
        };
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match call(
            "remove container",
            CALL_TIMEOUT,
            client.remove_container(container, Some(options)),
        )
        .await
        {
            Ok(()) => tracing::debug!(container, "docker: removed the failed container"),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                tracing::warn!(container, error = %e, "docker: cannot remove the failed container")
            }
        }
    }
}

impl ContainerRuntime for Docker {
    async fn list(&self, node: NodeId) -> Result<Vec<LocalContainer>, RuntimeError> {
        tracing::debug!(node = %node.short(), "docker: list");
        let summaries = self.list_summaries(node).await?;
        let client = self.client().await?;
        // One inspect per container, concurrently (they are few).
        let mut inspects = tokio::task::JoinSet::new();
        for id in summaries.into_iter().filter_map(|s| s.id) {
            let client = client.clone();
            inspects.spawn(async move {
                let result = call(
                    "inspect container",
                    CALL_TIMEOUT,
                    client.inspect_container(&id, None),
                )
                .await;
                (id, result)
            });
        }
        let mut containers = Vec::new();
        while let Some(joined) = inspects.join_next().await {
            let (id, result) =
                joined.map_err(|e| RuntimeError(format!("inspect task failed: {e}")))?;
            let inspect = match result {
                Ok(inspect) => inspect,
                // Removed between the list and the inspect.
                Err(e) if is_status(&e, 404) => continue,
                Err(e) => return Err(e.into()),
            };
            match to_local(&id, &inspect) {
                Ok(container) => containers.push(container),
                Err(why) => {
                    tracing::warn!(container = %id, node = %node.short(), "docker: skipping a container: {why}")
                }
            }
        }
        fn order(c: &LocalContainer) -> (&str, &SlotKey, u64, &str) {
            (&c.service, &c.slot, c.created_ms, &c.id)
        }
        containers.sort_by(|a, b| order(a).cmp(&order(b)));
        tracing::debug!(node = %node.short(), containers = containers.len(), "docker: listed");
        Ok(containers)
    }

    async fn create(&self, node: NodeId, task: &TaskSpec) -> Result<String, RuntimeError> {
        let name = task.container_name();
        let slot = slot_label(&task.slot);
        let span = tracing::debug_span!(
            "docker",
            container = %name,
            service = %task.service,
            slot = %slot,
            task = %task.task_id,
        );
        self.create_task(node, task, name).instrument(span).await
    }

    async fn remove(&self, container: &str, stop_timeout_s: u64) -> Result<(), RuntimeError> {
        let client = self.client().await?;
        tracing::debug!(container, stop_timeout_s, "docker: stop");
        let t = i32::try_from(stop_timeout_s).unwrap_or(i32::MAX);
        let stop = StopContainerOptionsBuilder::default().t(t).build();
        let stop_limit = Duration::from_secs(stop_timeout_s).saturating_add(STOP_GRACE);
        match call(
            "stop container",
            stop_limit,
            client.stop_container(container, Some(stop)),
        )
        .await
        {
            // (Already stopped answers 304, which bollard counts as success.)
            Ok(()) => {}
            Err(e) if is_status(&e, 404) => {
                tracing::debug!(container, "docker: already gone");
                return Ok(());
            }
            // The removal below kills it anyway.
            Err(e) => tracing::warn!(container, error = %e, "docker: stop failed; removing anyway"),
        }
        tracing::debug!(container, "docker: remove");
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match call(
            "remove container",
            CALL_TIMEOUT,
            client.remove_container(container, Some(options)),
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            // Another call is removing it already.
            Err(e) if is_status(&e, 409) && e.message.contains("already in progress") => Ok(()),
            Err(e) => Err(RuntimeError(format!("remove {container}: {}", e.message))),
        }
    }
}

impl Docker {
    async fn create_task(
        &self,
        node: NodeId,
        task: &TaskSpec,
        name: String,
    ) -> Result<String, RuntimeError> {
        let client = self.client().await?;
        let body = create_body(node, task);
        tracing::debug!(image = %task.spec.image, "docker: create");
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created =
            match tokio::time::timeout(CALL_TIMEOUT, client.create_container(Some(options), body))
                .await
            {
                Ok(Ok(created)) => created,
                Ok(Err(e)) => {
                    let e = Failure::from(e);
                    if is_status(&e, 404) && e.message.to_lowercase().contains("no such image") {
                        return Err(RuntimeError(format!(
                            "no such image: {} (images must be on the node; shoal never pulls)",
                            task.spec.image
                        )));
                    }
                    return Err(RuntimeError(format!("create {name}: {}", e.message)));
                }
                Err(_) => {
                    // The engine may still make it: do not leave it behind.
                    self.discard(&name).await;
                    return Err(RuntimeError(format!(
                        "create {name}: Docker did not answer within {CALL_TIMEOUT:?}"
                    )));
                }
            };
        for warning in &created.warnings {
            tracing::warn!(container = %name, "docker: create: {warning}");
        }
        tracing::debug!(id = %created.id, "docker: start");
        if let Err(e) = call(
            "start container",
            CALL_TIMEOUT,
            client.start_container(&created.id, None),
        )
        .await
        {
            self.discard(&created.id).await;
            return Err(RuntimeError(format!("start {name}: {}", e.message)));
        }
        tracing::debug!(id = %created.id, "docker: started");
        Ok(created.id)
    }
}

/// Sleeps for `pause`; false (at once) if `notify`'s receiver goes away meanwhile.
async fn sleep_unless_closed(notify: &mpsc::Sender<()>, pause: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(pause) => true,
        () = notify.closed() => false,
    }
}

// --- engine calls ---------------------------------------------------------------------------------

/// A failed engine call: Docker's status code (if it answered) and message.
#[derive(Debug)]
struct Failure {
    status: Option<u16>,
    message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<BollardError> for Failure {
    fn from(e: BollardError) -> Self {
        match e {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => Failure {
                status: Some(status_code),
                message,
            },
            other => Failure {
                status: None,
                message: other.to_string(),
            },
        }
    }
}

impl From<Failure> for RuntimeError {
    fn from(f: Failure) -> Self {
        RuntimeError(f.message)
    }
}

fn is_status(f: &Failure, status: u16) -> bool {
    f.status == Some(status)
}

/// Runs one engine call with a time limit.
async fn call<T>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, BollardError>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result.map_err(Failure::from),
        Err(_) => Err(Failure {
            status: None,
            message: format!("{what}: Docker did not answer within {limit:?}"),
        }),
    }
}

// --- create ---------------------------------------------------------------------------------------

/// The container to create for `task` on `node`.
fn create_body(node: NodeId, task: &TaskSpec) -> ContainerCreateBody {
    let spec = &task.spec;
    let slot = slot_label(&task.slot);

    let mut container_labels: HashMap<String, String> = spec
        .container_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // shoal's own labels win over a user label of the same name.
    container_labels.extend([
        (labels::NODE.to_string(), node.to_string()),
        (labels::SERVICE.to_string(), task.service.clone()),
        (labels::SLOT.to_string(), slot.clone()),
        (labels::TASK.to_string(), task.task_id.clone()),
        (labels::VERSION.to_string(), version_label(&task.version)),
        (labels::FORCE.to_string(), task.force.to_string()),
    ]);

    let mut env: Vec<String> = spec
        .env
        .iter()
        .filter(|(k, _)| !k.starts_with("SHOAL_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.extend([
        format!("SHOAL_TASK_ID={}", task.task_id),
        format!("SHOAL_SERVICE={}", task.service),
        format!("SHOAL_SLOT={slot}"),
    ]);

    // Exposed only: shoal's ingress proxy reaches the containers on their own addresses.
    let exposed: BTreeSet<String> = spec
        .ports
        .iter()
        .map(|p| {
            let proto = match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            format!("{}/{proto}", p.target)
        })
        .collect();

    let mounts: Vec<Mount> = spec
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: (!m.source.is_empty() && m.kind != MountKind::Tmpfs).then(|| m.source.clone()),
            typ: Some(match m.kind {
                MountKind::Volume => MountType::VOLUME,
                MountKind::Bind => MountType::BIND,
                MountKind::Tmpfs => MountType::TMPFS,
            }),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();

    let limits = &spec.resources.limits;
    let host_config = HostConfig {
        // shoal replaces exited containers itself.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        nano_cpus: limits
            .cpus_milli
            .map(|m| i64::try_from(m.saturating_mul(1_000_000)).unwrap_or(i64::MAX)),
        memory: limits
            .memory_bytes
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        mounts: (!mounts.is_empty()).then_some(mounts),
        // The default bridge network, for now; service networks (`spec.networks`) come later.
        ..Default::default()
    };

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(env),
        labels: Some(container_labels),
        exposed_ports: (!exposed.is_empty()).then(|| exposed.into_iter().collect()),
        healthcheck: spec.healthcheck.as_ref().map(health_config),
        // The stop signal stays the image's (STOPSIGNAL, else SIGTERM).
        stop_timeout: Some(DEFAULT_STOP_TIMEOUT_S),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Docker's healthcheck settings for a spec's override. Docker merges them field by field with the
/// image's: an empty test keeps the image's test, a zero duration or retry count the image's.
fn health_config(hc: &HealthcheckSpec) -> HealthConfig {
    if hc.disable {
        return HealthConfig {
            test: Some(vec!["NONE".to_string()]),
            ..Default::default()
        };
    }
    let ns = |ms: Option<u64>| {
        ms.map(|ms| i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX))
    };
    HealthConfig {
        test: hc.test.clone().filter(|t| !t.is_empty()),
        interval: ns(hc.interval_ms),
        timeout: ns(hc.timeout_ms),
        retries: hc.retries.map(|r| i64::try_from(r).unwrap_or(i64::MAX)),
        start_period: ns(hc.start_period_ms),
        ..Default::default()
    }
}

// --- list -----------------------------------------------------------------------------------------

/// What the runtime reports about one inspected container, or why its labels do not parse.
fn to_local(id: &str, inspect: &ContainerInspectResponse) -> Result<LocalContainer, String> {
    let config = inspect.config.as_ref();
    let empty = HashMap::new();
    let container_labels = config.and_then(|c| c.labels.as_ref()).unwrap_or(&empty);
    let label = |key: &str| {
        container_labels
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("no label {key}"))
    };
    let service = label(labels::SERVICE)?.to_string();
    let slot = parse_slot(label(labels::SLOT)?)?;
    let task_id = label(labels::TASK)?.to_string();
    let version = parse_version(label(labels::VERSION)?)?;
    let force = label(labels::FORCE)?
        .parse::<u64>()
        .map_err(|e| format!("label {}: {e}", labels::FORCE))?;

    let state = inspect.state.as_ref();
    let status = match state.and_then(|s| s.status) {
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::STOPPING,
        ) => ContainerStatus::Running,
        Some(
            ContainerStateStatusEnum::EXITED
            | ContainerStateStatusEnum::DEAD
            | ContainerStateStatusEnum::REMOVING,
        ) => {
            let state = state.expect("a status implies a state");
            let mut error = state.error.clone().filter(|e| !e.is_empty());
            if state.oom_killed == Some(true) {
                error = Some(match error {
                    Some(e) => format!("OOM killed: {e}"),
                    None => "OOM killed (out of memory)".to_string(),
                });
            }
            ContainerStatus::Exited {
                code: state.exit_code.unwrap_or(-1),
                finished_ms: state
                    .finished_at
                    .as_deref()
                    .and_then(parse_rfc3339_ms)
                    .unwrap_or(0),
                error,
            }
        }
        Some(
            ContainerStateStatusEnum::CREATED
            | ContainerStateStatusEnum::RESTARTING
            | ContainerStateStatusEnum::EMPTY,
        )
        | None => ContainerStatus::Created,
    };

    let health = match state.and_then(|s| s.health.as_ref()).and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => Health::None,
    };

    let created_ms = inspect
        .created
        .as_deref()
        .and_then(parse_rfc3339_ms)
        .unwrap_or(0);

    let endpoints = if status == ContainerStatus::Running {
        endpoints(inspect)
    } else {
        Vec::new()
    };

    Ok(LocalContainer {
        id: id.to_string(),
        service,
        slot,
        task_id,
        version,
        force,
        status,
        health,
        created_ms,
        endpoints,
    })
}

/// Every exposed port at the container's address: on the `bridge` network if it is attached,
/// else on its first network (by name) that has an address. Sorted by port.
fn endpoints(inspect: &ContainerInspectResponse) -> Vec<(u16, SocketAddr)> {
    let Some(networks) = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
    else {
        return Vec::new();
    };
    let address = |name: &str| -> Option<IpAddr> {
        networks
            .get(name)?
            .ip_address
            .as_deref()
            .filter(|ip| !ip.is_empty())?
            .parse()
            .ok()
    };
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    let Some(ip) = address("bridge").or_else(|| names.iter().find_map(|n| address(n))) else {
        return Vec::new();
    };
    let ports: BTreeSet<u16> = inspect
        .config
        .as_ref()
        .and_then(|c| c.exposed_ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| p.split('/').next()?.parse().ok())
        .collect();
    ports
        .into_iter()
        .map(|port| (port, SocketAddr::new(ip, port)))
        .collect()
}

/// A list summary's health word (`none` when unknown).
fn summary_health(s: &ContainerSummary) -> String {
    if let Some(status) = s.health.as_ref().and_then(|h| h.status) {
        if status != ContainerSummaryHealthStatusEnum::EMPTY {
            return status.to_string();
        }
    }
    // Engines before API 1.52 have the health only in the status text: "Up 3 s (healthy)".
    let text = s.status.as_deref().unwrap_or("");
    if text.contains("(healthy)") {
        "healthy"
    } else if text.contains("(unhealthy)") {
        "unhealthy"
    } else if text.contains("(health: starting)") {
        "starting"
    } else {
        "none"
    }
    .to_string()
}

// --- label text forms -----------------------------------------------------------------------------

/// The slot as a label: `3`, or the full node id of a global service's slot.
pub fn slot_label(slot: &SlotKey) -> String {
    match slot {
        SlotKey::Replica(n) => n.to_string(),
        SlotKey::Node(id) => id.to_string(),
    }
}

/// Parses [`slot_label`]'s form.
pub fn parse_slot(text: &str) -> Result<SlotKey, String> {
    if text.len() == 32 {
        return text
            .parse::<NodeId>()
            .map(SlotKey::Node)
            .map_err(|e| format!("slot: {e}"));
    }
    text.parse::<u64>()
        .map(SlotKey::Replica)
        .map_err(|_| format!("slot {text:?} is neither a number nor a node id"))
}

/// The spec version as a label: `WALL.COUNTER@NODE` with the full 32-hex-digit node id.
pub fn version_label(version: &Hlc) -> String {
    format!("{}.{}@{}", version.wall_ms, version.counter, version.node)
}

/// Parses [`version_label`]'s form.
pub fn parse_version(text: &str) -> Result<Hlc, String> {
    let bad = |why: &str| format!("version {text:?}: {why}");
    let (stamp, node) = text.split_once('@').ok_or_else(|| bad("no `@`"))?;
    let (wall, counter) = stamp.split_once('.').ok_or_else(|| bad("no `.`"))?;
    Ok(Hlc {
        wall_ms: wall.parse().map_err(|_| bad("bad wall time"))?,
        counter: counter.parse().map_err(|_| bad("bad counter"))?,
        node: node.parse().map_err(|e: String| bad(&e))?,
    })
}

/// Milliseconds since the epoch of an RFC 3339 time as Docker writes them
/// (`2026-11-03T10:20:30.123456789Z`, or with an offset). `None` for times before the epoch
/// (Docker's "never" is `0001-01-01T00:00:00Z`) or text that does not parse.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &text[start..i.min(start + 3)];
        millis = digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32);
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let s = (num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?) * 60;
            if *sign == b'+' {
                s
            } else {
                -s
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_s;
    let ms = secs.checked_mul(1000)?.checked_add(millis)?;
    u64::try_from(ms).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T12:34:56.789123456Z"),
            Some(1_709_210_096_789)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T13:34:56.789+01:00"),
            Some(1_709_210_096_789)
        );
        assert_eq!(parse_rfc3339_ms("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2024-02-29 nonsense"), None);
        assert_eq!(parse_rfc3339_ms(""), None);
        assert_eq!(parse_rfc3339_ms("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn labels_round_trip() {
        let node = NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        for slot in [
            SlotKey::Replica(1),
            SlotKey::Replica(u64::MAX),
            SlotKey::Node(node),
        ] {
            assert_eq!(parse_slot(&slot_label(&slot)), Ok(slot));
        }
        assert!(parse_slot("x").is_err());
        assert!(parse_slot("").is_err());
        for version in [
            Hlc::ZERO,
            Hlc::MAX,
            Hlc {
                wall_ms: 1_700_000_000_000,
                counter: 7,
                node,
            },
        ] {
            assert_eq!(parse_version(&version_label(&version)), Ok(version));
        }
        // Hlc's Display shortens the node id: it is not a label form.
        let v = Hlc {
            wall_ms: 1,
            counter: 2,
            node,
        };
        assert!(parse_version(&v.to_string()).is_err());
        assert!(parse_version("1.2").is_err());
    }

    #[test]
    fn healthcheck_override() {
        let hc = HealthcheckSpec {
            interval_ms: Some(1_000),
            ..Default::default()
        };
        let c = health_config(&hc);
        assert_eq!(c.test, None);
        assert_eq!(c.interval, Some(1_000_000_000));
        assert_eq!(c.retries, None);
        let off = health_config(&HealthcheckSpec {
            disable: true,
            ..Default::default()
        });
        assert_eq!(off.test, Some(vec!["NONE".to_string()]));
    }
}
