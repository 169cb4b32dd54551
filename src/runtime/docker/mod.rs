//! The Docker Engine implementation of [`super::ContainerRuntime`] (bollard).
//!
//! Every container shoal makes carries the labels of [`super::labels`]; this module lists, creates
//! and removes only containers labelled with the caller's node id, so several agents (a testnet on
//! one engine, or the tests) can share an engine.
//!
//! - Nothing is ever pulled: an image must already be on the node (there is no registry), and a
//!   missing one fails the create at once with a clear message.
//! - A port published in ingress mode is bound by Docker to an ephemeral port of the host address
//!   ([`Docker::with_host_address`]), and [`Docker::list`] reports that address and port as the
//!   replica's endpoint: shoal's ingress on any node forwards there. (The container's bridge address
//!   is reachable from its own host only.) A port published in host mode is bound to its published
//!   port, as `docker run -p` does.
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
    collections::{BTreeMap, HashMap},
    future::Future,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bollard::{
    errors::Error as BollardError,
    models::ContainerSummary,
    query_parameters::{
        CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
        StopContainerOptionsBuilder,
    },
};
use tokio::sync::{mpsc, OnceCell};
use tracing::Instrument;

mod convert;
mod network;

use convert::{create_body, summary_health, to_local};
pub use convert::{parse_rfc3339_ms, parse_slot, parse_version, slot_label, version_label};
pub use network::{
    engine_network_name, shoal_network_of, EngineNetwork, Ensured, NetworkError, BRIDGE_MTU,
    NETWORK_LABEL,
};

use super::{labels, ContainerRuntime, LocalContainer, RuntimeError, TaskSpec};
use shoal_core::{identity::NodeId, observed::SlotKey};

/// Longest any single engine call may take (a stop gets its own timeout plus [`STOP_GRACE`]).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// What a stop may take beyond the container's own stop timeout.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long [`Docker::ping`] waits for an answer.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How often [`Docker::watch`] looks at the node's containers.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Inspections of one listing run at most this many at once: an engine under load queues every
/// request it gets, and a burst of a hundred inspects each time the agent re-lists only deepens
/// the queue (seen wedging Docker 20.10 with 100 replicas on a busy machine).
const INSPECT_CONCURRENCY: usize = 8;
/// A container whose listed state and health have not changed is inspected again after this long
/// anyway, for what the listing cannot show (an address after a restart done by hand).
const INSPECT_MAX_AGE: Duration = Duration::from_secs(60);
/// The container events that change what a listing shows (state and health). The engine matches
/// `health_status` against `health_status: healthy` and the like.
const STATE_EVENTS: &[&str] = &[
    "create",
    "start",
    "restart",
    "die",
    "stop",
    "destroy",
    "oom",
    "pause",
    "unpause",
    "health_status",
];
/// When, after the last event, the agent is woken again to read a listing that may have lagged
/// the event (see `follow_events`): 250 ms is enough on an idle engine, the later ones are for a
/// loaded one.
const VIEW_LAG: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(3),
];
/// Poll underneath the event stream, for events it missed.
pub const WATCH_SAFETY_POLL: Duration = Duration::from_secs(5);
/// Longest wait between attempts while the engine does not answer.
pub const WATCH_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The label filter that selects the containers of `node`.
fn node_label(node: NodeId) -> String {
    format!("{}={node}", labels::NODE)
}

/// The Docker Engine on this host. Cheap to clone (clones share the connection).
#[derive(Clone, Debug)]
pub struct Docker {
    client: bollard::Docker,
    /// Set once the API version has been agreed with the engine (bollard speaks a newer API than
    /// older engines accept; clones of the client share the negotiated version).
    negotiated: Arc<OnceCell<()>>,
    /// Last inspection of each listed container, reused while the listing shows the same state
    /// and health (see [`Docker::list`]).
    inspected: Arc<Mutex<HashMap<String, Inspected>>>,
    /// Where this host's published ports are reachable by other nodes.
    host_address: IpAddr,
}

/// A container as last inspected.
#[derive(Debug)]
struct Inspected {
    /// State and health as the listing showed them then.
    seen: (String, String),
    at: Instant,
    container: LocalContainer,
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
            inspected: Arc::default(),
            host_address: IpAddr::from([127, 0, 0, 1]),
        })
    }

    /// Binds ingress ports on `ip` (the node's advertised address) and reports endpoints there,
    /// instead of on 127.0.0.1 (which only this host reaches).
    pub fn with_host_address(mut self, ip: IpAddr) -> Self {
        self.host_address = ip;
        self
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

    /// Follows the engine's event stream for `node`'s containers, reconnecting with backoff;
    /// returns once the receiver is dropped. [`Docker::watch`] adds a poll under it.
    ///
    /// Each event that may change a container's state or health wakes the agent at once, and
    /// again [`VIEW_LAG`] after the last event: Docker 20.10 sends `die` before its container
    /// listing shows the container exited (seen on the testnet: a list 30 ms after `die` still
    /// said running), and nothing else follows to wake the agent; the later wake-ups read the
    /// settled view, even on a loaded engine. Each (re)connection asks for the events since the
    /// last one seen (at first, since the call), so none is lost while connecting.
    pub async fn follow_events(&self, node: NodeId, notify: mpsc::Sender<()>) {
        use futures_util::StreamExt;
        let mut backoff = Duration::from_millis(200);
        let mut since_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        loop {
            if let Ok(client) = self.client().await {
                let filters = HashMap::from([
                    ("type", vec!["container".to_string()]),
                    ("label", vec![node_label(node)]),
                    // Without it the engine also sends the three exec events of every
                    // healthcheck run.
                    (
                        "event",
                        STATE_EVENTS.iter().map(|e| e.to_string()).collect(),
                    ),
                ]);
                let since = format!(
                    "{}.{:09}",
                    since_ns / 1_000_000_000,
                    since_ns % 1_000_000_000
                );
                let options = bollard::query_parameters::EventsOptionsBuilder::new()
                    .since(&since)
                    .filters(&filters)
                    .build();
                let mut stream = client.events(Some(options));
                // When the last event came, and how many of the later wake-ups have been sent.
                let mut last: Option<(tokio::time::Instant, usize)> = None;
                loop {
                    let next = last.and_then(|(at, sent)| VIEW_LAG.get(sent).map(|lag| at + *lag));
                    let far = tokio::time::Instant::now() + WATCH_MAX_BACKOFF;
                    let event = tokio::select! {
                        event = stream.next() => event,
                        () = notify.closed() => return,
                        () = tokio::time::sleep_until(next.unwrap_or(far)), if next.is_some() => {
                            last = last.map(|(at, sent)| (at, sent + 1));
                            if !wake(&notify) {
                                return;
                            }
                            continue;
                        }
                    };
                    let Some(Ok(event)) = event else { break };
                    backoff = Duration::from_millis(200);
                    since_ns = since_ns.max(event.time_nano.unwrap_or(0));
                    tracing::trace!(node = %node.short(), action = ?event.action, "docker: event");
                    if !wake(&notify) {
                        return;
                    }
                    last = Some((tokio::time::Instant::now(), 0));
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
                        if !wake(&notify) {
                            return;
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
        Ok(summaries.iter().filter_map(listed_state).collect())
    }

    /// The summaries of every container of `node` (running or not).
    async fn list_summaries(&self, node: NodeId) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let client = self.client().await?;
        let filters = HashMap::from([("label", vec![node_label(node)])]);
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
        match self.force_remove(container).await {
            Ok(()) => tracing::debug!(container, "docker: removed the failed container"),
            Err(e) => {
                tracing::warn!(container, error = %e, "docker: cannot remove the failed container")
            }
        }
    }

    /// Removes `container` and its anonymous volumes, killing it if it runs. A container that is
    /// gone already, or that another call is removing, counts as removed.
    async fn force_remove(&self, container: &str) -> Result<(), RuntimeError> {
        let client = self.client().await?;
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
            Err(e) if is_status(&e, 409) && e.message.contains("already in progress") => Ok(()),
            Err(e) => Err(RuntimeError(format!("remove {container}: {}", e.message))),
        }
    }
}

impl ContainerRuntime for Docker {
    /// Lists `node`'s containers. Each is inspected only when the listing shows a state or health
    /// other than at its last inspection (or that one is old), so a steady node costs one list
    /// call, and inspections run a few at a time.
    async fn list(&self, node: NodeId) -> Result<Vec<LocalContainer>, RuntimeError> {
        use futures_util::{stream, StreamExt};
        tracing::debug!(node = %node.short(), "docker: list");
        let summaries = self.list_summaries(node).await?;
        let client = self.client().await?;
        let mut containers = Vec::new();
        let mut stale = Vec::new();
        {
            let mut cache = self.inspected.lock().expect("inspect cache poisoned");
            let listed: Vec<(String, (String, String))> =
                summaries.iter().filter_map(listed_state).collect();
            let ids: std::collections::HashSet<&str> =
                listed.iter().map(|(id, _)| id.as_str()).collect();
            cache.retain(|id, _| ids.contains(id.as_str()));
            for (id, seen) in listed {
                match cache.get(&id) {
                    Some(hit) if hit.seen == seen && hit.at.elapsed() < INSPECT_MAX_AGE => {
                        containers.push(hit.container.clone())
                    }
                    _ => stale.push((id, seen)),
                }
            }
        }
        let inspections: Vec<_> = stream::iter(stale)
            .map(|(id, seen)| async move {
                let result = call(
                    "inspect container",
                    CALL_TIMEOUT,
                    client.inspect_container(&id, None),
                )
                .await;
                (id, seen, result)
            })
            .buffer_unordered(INSPECT_CONCURRENCY)
            .collect()
            .await;
        for (id, seen, result) in inspections {
            let inspect = match result {
                Ok(inspect) => inspect,
                // Removed between the list and the inspect.
                Err(e) if is_status(&e, 404) => continue,
                Err(e) => return Err(e.into()),
            };
            match to_local(&id, &inspect, self.host_address) {
                Ok(container) => {
                    let entry = Inspected {
                        seen,
                        at: Instant::now(),
                        container: container.clone(),
                    };
                    self.inspected
                        .lock()
                        .expect("inspect cache poisoned")
                        .insert(id, entry);
                    containers.push(container);
                }
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
        self.force_remove(container).await
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
        let networks: Vec<String> = task
            .spec
            .network_attachments()
            .into_iter()
            .map(|a| a.network)
            .collect();
        let attached = self.attachments(node, &networks).await?;
        let body = create_body(node, task, self.host_address, &attached);
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
        if let Err(e) = self
            .connect_rest(&created.id, attached.get(1..).unwrap_or(&[]))
            .await
        {
            self.discard(&created.id).await;
            return Err(RuntimeError(format!("create {name}: {e}")));
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

/// A listed container's id, with its state and health as the listing shows them.
fn listed_state(s: &ContainerSummary) -> Option<(String, (String, String))> {
    let state = s.state.map(|st| st.to_string()).unwrap_or_default();
    Some((s.id.clone()?, (state, summary_health(s))))
}

/// Wakes the agent (a wake-up already pending is enough). False once the agent is gone.
fn wake(notify: &mpsc::Sender<()>) -> bool {
    !matches!(
        notify.try_send(()),
        Err(mpsc::error::TrySendError::Closed(()))
    )
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
