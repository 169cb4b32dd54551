//! The container runtime as the reconciler sees it: the vocabulary (what a container looks like,
//! what to create) and the trait the agent's Docker implementation and the simulator's fake both
//! provide. The reconciler never calls a runtime; the agent does, with the reconciler's actions.

use crate::{
    desired::{hlc::Hlc, spec::ServiceSpec},
    identity::NodeId,
    observed::{Endpoint, Health, SlotKey},
};

/// Labels every shoal container carries, so an agent finds (and only touches) its own.
pub mod labels {
    /// Node id of the agent that owns the container.
    pub const NODE: &str = "io.shoal.node";
    /// Service name.
    pub const SERVICE: &str = "io.shoal.service";
    /// Slot (`3`, or a node id for global services).
    pub const SLOT: &str = "io.shoal.slot";
    /// Task id.
    pub const TASK: &str = "io.shoal.task";
    /// Spec version (`Hlc` in text form).
    pub const VERSION: &str = "io.shoal.version";
    /// Force counter.
    pub const FORCE: &str = "io.shoal.force";
}

/// What the runtime says about a container of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalContainer {
    /// Runtime id.
    pub id: String,
    /// Service it belongs to (from its labels).
    pub service: String,
    /// Slot it fills.
    pub slot: SlotKey,
    /// Task id (from its labels and name).
    pub task_id: String,
    /// Spec version it was created from.
    pub version: Hlc,
    /// Force counter it was created with.
    pub force: u64,
    /// Image reference it was created from.
    pub image: String,
    /// Lifecycle.
    pub status: ContainerStatus,
    /// Healthcheck status.
    pub health: Health,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// Where other nodes reach its ports published in ingress or host mode, by container port.
    pub endpoints: Vec<Endpoint>,
    /// Its address on each shoal network it is attached to (network name, address), sorted by
    /// network; empty unless it runs.
    pub addresses: Vec<(String, std::net::IpAddr)>,
}

/// Lifecycle of a container as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerStatus {
    /// Created, not started (or starting).
    Created,
    /// Running.
    Running,
    /// Exited with `code` at `finished_ms`; `error` is the runtime's message, if any.
    Exited {
        /// Exit status.
        code: i64,
        /// When it exited.
        finished_ms: u64,
        /// Runtime error (OOM, failed to start), if any.
        error: Option<String>,
    },
}

/// A replica to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    /// Service name.
    pub service: String,
    /// Slot.
    pub slot: SlotKey,
    /// New task id.
    pub task_id: String,
    /// Spec version.
    pub version: Hlc,
    /// Force counter.
    pub force: u64,
    /// What to run.
    pub spec: ServiceSpec,
}

impl TaskSpec {
    /// Container name, as Swarm names tasks: `SERVICE.SLOT.TASKID`.
    pub fn container_name(&self) -> String {
        format!("{}.{}.{}", self.service, self.slot, self.task_id)
    }
}

/// What this node does now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create and start a container.
    Create(Box<TaskSpec>),
    /// Stop (gracefully) and remove a container.
    Remove {
        /// Container id.
        container: String,
        /// Why, for the log.
        reason: String,
        /// How long it gets after SIGTERM (its service's `stop_grace_period`) before SIGKILL.
        stop_timeout_s: u64,
    },
}

/// How long a replica gets to stop when its service sets no `stop_grace_period` (Docker's).
pub const DEFAULT_STOP_TIMEOUT_S: u64 = 10;

/// The stop timeout of a replica of `spec` (whole seconds, rounded up), or the default.
pub fn stop_timeout_s(spec: Option<&ServiceSpec>) -> u64 {
    spec.and_then(|s| s.stop_grace_ms)
        .map_or(DEFAULT_STOP_TIMEOUT_S, |ms| ms.div_ceil(1000))
}

/// Why a runtime call failed, in the runtime's words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RuntimeError(pub String);

/// What the agent needs from a container engine. Implementations touch only containers labelled
/// with their own node id, so several agents can share one engine.
#[allow(async_fn_in_trait)]
pub trait ContainerRuntime {
    /// Every container of `node` (running or not).
    async fn list(&self, node: NodeId) -> Result<Vec<LocalContainer>, RuntimeError>;
    /// Creates and starts a container for `task`, labelled for `node`; returns its id. On failure
    /// nothing is left behind.
    async fn create(&self, node: NodeId, task: &TaskSpec) -> Result<String, RuntimeError>;
    /// Stops (SIGTERM, then SIGKILL after `stop_timeout_s`) and removes a container.
    async fn remove(&self, container: &str, stop_timeout_s: u64) -> Result<(), RuntimeError>;
}
