//! Observed state: what each node runs now, as that node reports it.
//!
//! Every node is the only writer of its own report, so the merge is trivial and exact: a report
//! replaces another from the same node when its `(generation, seq)` is larger. Reports spread like
//! the desired state (pushed to peers when they change, repaired by anti-entropy), so every node
//! can answer `service ps` for the whole cluster and see, for a slot it is taking over, when the new
//! owner's replica is healthy.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    desired::{hlc::Hlc, spec::Protocol},
    identity::NodeId,
};

/// A slot of a service: replicated services have slots 1..=replicas, global services one slot per
/// eligible node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SlotKey {
    /// Slot number of a replicated service, from 1.
    Replica(u64),
    /// The node a global service's slot belongs to.
    Node(NodeId),
}

impl std::fmt::Display for SlotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotKey::Replica(n) => write!(f, "{n}"),
            SlotKey::Node(id) => write!(f, "{id}"),
        }
    }
}

/// Where a replica is in its life, in Swarm's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting: for a restart delay, a backoff, or a node to place it on.
    Pending,
    /// Container created and started; not yet healthy (or no healthcheck result yet).
    Starting,
    /// Running (and healthy, if it has a healthcheck).
    Running,
    /// Exited with status 0.
    Complete,
    /// Exited with an error, or replaced for being unhealthy.
    Failed,
    /// Stopped on purpose (scaled down, handed off, updated).
    Shutdown,
    /// Could not be created (no such image, bad command).
    Rejected,
    /// Its node has asked the engine for the container, which is not listed yet: the slot is
    /// being (re)filled, so other nodes count it as in progress rather than unserved.
    Preparing,
    /// Still running, taken out of every node's routing: no new connection reaches it, the ones
    /// it has finish, and it is stopped after a grace period (see `reconcile::plan`).
    Draining,
}

impl TaskState {
    /// The lower-case word shown by `service ps`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Failed => "failed",
            TaskState::Shutdown => "shutdown",
            TaskState::Rejected => "rejected",
            TaskState::Preparing => "preparing",
            TaskState::Draining => "draining",
        }
    }
}

/// Healthcheck status of a running container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No healthcheck: running counts as ready.
    None,
    /// Within the start period, or no check has passed yet.
    Starting,
    /// The last checks passed.
    Healthy,
    /// Failed more checks in a row than allowed.
    Unhealthy,
}

impl Health {
    /// Whether a replica in this health should receive traffic and count as ready.
    pub fn is_ready(&self) -> bool {
        matches!(self, Health::None | Health::Healthy)
    }
}

/// Where one published port of a replica is reached from any node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The container port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Node address and host port.
    pub addr: std::net::SocketAddr,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.protocol {
            Protocol::Tcp => write!(f, "{}", self.addr),
            Protocol::Udp => write!(f, "{}/udp", self.addr),
        }
    }
}

/// One replica (a task, in Swarm's words) as its node reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    /// Service name.
    pub service: String,
    /// The slot it fills.
    pub slot: SlotKey,
    /// Short random id, unique per replacement: a new container for a slot is a new task.
    pub task_id: String,
    /// Spec version it runs.
    pub version: Hlc,
    /// Image it runs (its spec's: an old version's task shows the old image).
    pub image: String,
    /// Force counter of the spec it runs.
    pub force: u64,
    /// Docker container id, once created.
    pub container_id: Option<String>,
    /// Where it is in its life.
    pub state: TaskState,
    /// Healthcheck status.
    pub health: Health,
    /// Whether the node means to keep it running (`running`) or is stopping it (`shutdown`).
    pub desired_running: bool,
    /// What went wrong, in Docker's words.
    pub error: Option<String>,
    /// Where traffic for it goes, per published container port: the node's address and the host
    /// port Docker bound it to, reachable from every node's ingress.
    pub endpoints: Vec<Endpoint>,
    /// When (ms since the epoch) it entered `state`.
    pub since_ms: u64,
    /// When its node first saw its container running (ms since the epoch, the node's clock);
    /// `None` before that, or if it never ran. A rollout's `monitor` counts from here, and a
    /// finished task in the history keeps it, so a failure can be told from a late one.
    pub started_ms: Option<u64>,
    /// Its container's address on each service network it is attached to (network name,
    /// address), while it runs: where other nodes' DNS answers and virtual addresses send
    /// traffic for it.
    pub addresses: Vec<(String, std::net::IpAddr)>,
}

impl TaskReport {
    /// Whether it runs the given spec version and is ready for traffic.
    pub fn is_ready_at(&self, version: Hlc, force: u64) -> bool {
        self.state == TaskState::Running
            && self.health.is_ready()
            && self.version == version
            && self.force == force
            && self.desired_running
    }
}

/// Most tasks a node keeps in its history per slot (Swarm keeps a few for `service ps`).
pub const HISTORY_PER_SLOT: usize = 4;

/// Everything one node runs, plus recent history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The reporting node.
    pub node: NodeId,
    /// Its process generation: a restarted node's reports replace the old process's.
    pub generation: u64,
    /// Grows with every new report of one generation.
    pub seq: u64,
    /// Current tasks (desired running, or being stopped).
    pub tasks: Vec<TaskReport>,
    /// Finished tasks, newest first, at most [`HISTORY_PER_SLOT`] per slot.
    pub history: Vec<TaskReport>,
    /// The gossip keys the node holds (id and fingerprint): a key becomes the one everyone
    /// seals with once every live member holds it (see `node::trust`).
    pub gossip_keys: Vec<KeyMark>,
}

/// A gossip key as reports name it: its id and a fingerprint of its bytes (never the bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyMark {
    /// The key's id in the keyring.
    pub id: u32,
    /// The first bytes of the key's SHA-256: tells two keys given one id apart.
    pub fingerprint: [u8; 8],
}

impl NodeReport {
    /// The register's version: later generation, then later sequence number, wins.
    pub fn version(&self) -> (u64, u64) {
        (self.generation, self.seq)
    }
}

/// The latest report of every node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedState {
    nodes: BTreeMap<NodeId, NodeReport>,
}

impl ObservedState {
    /// Keeps `report` if it is newer than what we have for its node; true if it was.
    pub fn merge(&mut self, report: NodeReport) -> bool {
        match self.nodes.get(&report.node) {
            Some(current) if current.version() >= report.version() => false,
            _ => {
                self.nodes.insert(report.node, report);
                true
            }
        }
    }

    /// Drops the reports `gone` picks; returns how many.
    pub fn prune(&mut self, gone: impl Fn(NodeId) -> bool) -> usize {
        let before = self.nodes.len();
        self.nodes.retain(|node, _| !gone(*node));
        before - self.nodes.len()
    }

    /// The report of `node`, if any.
    pub fn get(&self, node: NodeId) -> Option<&NodeReport> {
        self.nodes.get(&node)
    }

    /// Every report.
    pub fn reports(&self) -> impl Iterator<Item = &NodeReport> {
        self.nodes.values()
    }

    /// Version of every report held, sent in anti-entropy so a peer can return what is newer.
    pub fn versions(&self) -> BTreeMap<NodeId, (u64, u64)> {
        self.nodes
            .iter()
            .map(|(id, r)| (*id, r.version()))
            .collect()
    }

    /// Digest of [`ObservedState::versions`]: equal when two nodes hold the same reports.
    pub fn versions_digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for (node, (generation, seq)) in self.versions() {
            hasher.update(node.0.to_be_bytes());
            hasher.update(generation.to_be_bytes());
            hasher.update(seq.to_be_bytes());
        }
        hasher.finalize().into()
    }

    /// Reports newer than (or missing from) `versions`.
    pub fn newer_than(&self, versions: &BTreeMap<NodeId, (u64, u64)>) -> Vec<NodeReport> {
        self.nodes
            .values()
            .filter(|r| versions.get(&r.node).is_none_or(|v| *v < r.version()))
            .cloned()
            .collect()
    }

    /// Every current task, grouped by service: one pass over every report, for a caller that looks
    /// at many services in one go (a reconcile round, the routing table), where calling
    /// [`ObservedState::tasks_of`] per service would scan every report once per service.
    pub fn by_service(&self) -> TasksByService<'_> {
        let mut map: HashMap<&str, Vec<(NodeId, &TaskReport)>> = HashMap::new();
        let mut history: HashMap<&str, Vec<(NodeId, &TaskReport)>> = HashMap::new();
        for report in self.nodes.values() {
            for task in &report.tasks {
                map.entry(task.service.as_str())
                    .or_default()
                    .push((report.node, task));
            }
            for task in &report.history {
                history
                    .entry(task.service.as_str())
                    .or_default()
                    .push((report.node, task));
            }
        }
        TasksByService { map, history }
    }

    /// Every current task of `service` on any node.
    pub fn tasks_of<'a>(
        &'a self,
        service: &'a str,
    ) -> impl Iterator<Item = (NodeId, &'a TaskReport)> {
        self.nodes.values().flat_map(move |r| {
            r.tasks
                .iter()
                .filter(move |t| t.service == service)
                .map(move |t| (r.node, t))
        })
    }
}

/// Current tasks grouped by service (see [`ObservedState::by_service`]). Hashed, not ordered:
/// it is only looked up by name (never iterated, so its order cannot leak into a decision), and
/// names of one stack share long prefixes that make every ordered comparison a long one.
pub struct TasksByService<'a> {
    map: HashMap<&'a str, Vec<(NodeId, &'a TaskReport)>>,
    history: HashMap<&'a str, Vec<(NodeId, &'a TaskReport)>>,
}

impl<'a> TasksByService<'a> {
    /// The tasks of `service`, with their nodes, in node order.
    pub fn of(&self, service: &str) -> &[(NodeId, &'a TaskReport)] {
        self.map.get(service).map_or(&[], Vec::as_slice)
    }

    /// The finished tasks of `service` in every node's history, with their nodes, in node order.
    pub fn history_of(&self, service: &str) -> &[(NodeId, &'a TaskReport)] {
        self.history.get(service).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: u128, generation: u64, seq: u64) -> NodeReport {
        NodeReport {
            node: NodeId(node),
            generation,
            seq,
            tasks: vec![],
            history: vec![],
            gossip_keys: vec![],
        }
    }

    #[test]
    fn newer_report_wins_regardless_of_order() {
        let mut a = ObservedState::default();
        assert!(a.merge(report(1, 1, 5)));
        assert!(!a.merge(report(1, 1, 4)));
        assert!(!a.merge(report(1, 1, 5)));
        assert!(a.merge(report(1, 2, 0)), "a restart's first report wins");
        assert_eq!(a.get(NodeId(1)).unwrap().version(), (2, 0));
    }

    #[test]
    fn anti_entropy_returns_only_what_the_peer_lacks() {
        let mut a = ObservedState::default();
        a.merge(report(1, 1, 5));
        a.merge(report(2, 1, 1));
        let mut b = ObservedState::default();
        b.merge(report(1, 1, 5));
        let missing = a.newer_than(&b.versions());
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].node, NodeId(2));
    }
}
