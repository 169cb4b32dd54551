//! Messages between the CLI and its local agent.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{
    desired::{
        spec::{Availability, Mode, NetworkDef, PortSpec, Protocol, ServiceDef, ServiceSpec},
        state::{NodeSettings, ServiceUpdate, UpdateStatus},
    },
    identity::NodeIdentity,
    membership::{NodeStatus, NodeView},
};

use super::network::{NetworkDetail, NetworkInfo};

/// What the CLI can ask an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Every node of the cluster as this agent sees it.
    NodeList,
    /// Change a node's operator settings.
    NodeUpdate {
        /// Node id, unique id prefix, or name.
        node: String,
        /// New availability, if it changes.
        availability: Option<Availability>,
        /// Labels to set.
        label_add: Vec<(String, String)>,
        /// Labels to remove.
        label_rm: Vec<String>,
    },
    /// Create or update a stack's services; services of the stack missing here are removed
    /// only with `prune`.
    StackDeploy {
        /// Stack name.
        stack: String,
        /// Its services, already parsed and validated by the CLI.
        services: Vec<ServiceDef>,
        /// `--prune`: remove the stack's services that `services` lacks.
        prune: bool,
        /// The networks the stack file declares (its services' `networks:` name them).
        networks: Vec<NetworkDef>,
    },
    /// Every stack.
    StackList,
    /// Remove a stack and all its services.
    StackRemove {
        /// Stack name.
        stack: String,
    },
    /// Every service.
    ServiceList,
    /// One service in full.
    ServiceInspect {
        /// Service name.
        name: String,
    },
    /// Change a service.
    ServiceUpdate {
        /// Service name.
        name: String,
        /// What changes.
        update: Box<ServiceUpdate>,
    },
    /// Set replica counts.
    ServiceScale {
        /// Service name and replicas, applied together.
        scales: Vec<(String, u64)>,
    },
    /// Print the join token (`cluster join-token`), after replacing its secret when `rotate`.
    ClusterJoinToken {
        /// Replace the secret first: the previous token stops admitting.
        rotate: bool,
    },
    /// Rotate the gossip key with no downtime (`cluster rotate-key`).
    ClusterRotateKey,
    /// Issue a client certificate bundle for the remote CLI (`cluster client-bundle NAME`).
    ClusterClientBundle {
        /// Who the bundle is for (its certificate's name).
        name: String,
    },
    /// Remove a node from the cluster for good (`node rm`): its certificate is refused from
    /// now on and it cannot rejoin without a new token and a new id.
    NodeRemove {
        /// Node id, unique id prefix, or name.
        node: String,
        /// Remove it even though it is up.
        force: bool,
    },
    /// Return a service to its previous spec (`service rollback`, `service update --rollback`).
    ServiceRollback {
        /// Service name.
        name: String,
    },
    /// Remove services.
    ServiceRemove {
        /// Service names.
        names: Vec<String>,
    },
    /// Tasks of one service (`service ps`).
    ServicePs {
        /// Service name.
        name: String,
    },
    /// Tasks of one stack (`stack ps`).
    StackPs {
        /// Stack name.
        stack: String,
    },
    /// Tasks on one node (`node ps`); None: the node answering.
    NodePs {
        /// Node id, unique id prefix, or name.
        node: Option<String>,
    },
    /// Create a service outside any stack (`service create`).
    ServiceCreate {
        /// The service; its `stack` is empty.
        def: Box<ServiceDef>,
    },
    /// Create a network no stack owns (`network create`).
    NetworkCreate {
        /// The network; `external` must be false.
        def: NetworkDef,
    },
    /// Every live network (`network ls`).
    NetworkList,
    /// One network in full (`network inspect`).
    NetworkInspect {
        /// Name, id, or unique id prefix.
        network: String,
    },
    /// Remove a network that no live service uses (`network rm`).
    NetworkRemove {
        /// Name, id, or unique id prefix.
        network: String,
    },
}

/// An agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::NodeList`].
    Nodes(Vec<NodeInfo>),
    /// A desired-state change was accepted.
    Changed(ChangeReceipt),
    /// Answer to [`Request::StackList`].
    Stacks(Vec<StackInfo>),
    /// Answer to [`Request::ServiceList`].
    Services(Vec<ServiceInfo>),
    /// Answer to [`Request::ServiceInspect`].
    Service(Box<ServiceDetail>),
    /// Answer to the `ps` requests: current tasks first, then history.
    Tasks(Vec<TaskInfo>),
    /// The request failed; the text says why. Nothing was changed.
    Error(String),
    /// Answer to [`Request::ClusterJoinToken`]: the token, `SWMTKN-1-...`.
    JoinToken(String),
    /// Answer to [`Request::ClusterClientBundle`]: the bundle, PEM.
    Bundle(String),
    /// Answer to [`Request::NetworkList`].
    Networks(Vec<NetworkInfo>),
    /// Answer to [`Request::NetworkInspect`].
    Network(Box<NetworkDetail>),
}

/// What became of a desired-state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeReceipt {
    /// One line per thing done, e.g. `Creating service web_app`.
    pub actions: Vec<String>,
    /// Whether anything was written at all (a re-deploy of an unchanged file writes nothing).
    pub changed: bool,
    /// Live peers the change was pushed to and acknowledged by (it is durable on this node in any
    /// case before the answer is sent).
    pub peers_acked: usize,
    /// Live peers known at the time.
    pub peers_live: usize,
}

/// A stack as `stack ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackInfo {
    /// Stack name.
    pub name: String,
    /// Number of services.
    pub services: usize,
}

/// A service as `service ls` shows it. Field names are the JSON contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Full name (`STACK_SERVICE`).
    pub name: String,
    /// Stack it belongs to.
    pub stack: String,
    /// `replicated` or `global`.
    pub mode: Mode,
    /// Desired replicas (for global: eligible nodes).
    pub replicas: u64,
    /// Slots served by a ready replica (running, and healthy where a healthcheck exists), of
    /// any version: what the service delivers now, as docker counts it.
    pub running: u64,
    /// Replicas of the current version that are ready.
    pub updated: u64,
    /// The rollout's state (`updating`, `paused`, `rollback_started`, ...) while one is not
    /// completed; None when the service is at rest.
    pub update_state: Option<String>,
    /// Image reference.
    pub image: String,
    /// Published ports, like `*:8080->80/tcp`.
    pub ports: Vec<String>,
    /// A stable id derived from the name (12 hex digits), for docker's `ID` column.
    pub id: String,
    /// Service labels (`deploy.labels`), for `--filter label=`.
    pub labels: BTreeMap<String, String>,
}

/// The id `service ls` shows for a service: shoal services have no id of their own, so one is
/// derived from the name, the same on every node.
pub fn service_id(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    hex::encode(&digest[..6])
}

/// A task (one replica's container) as `service ps` shows it. Field names are the JSON contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Task id (empty for a slot that has no task yet).
    pub id: String,
    /// `SERVICE.SLOT`, as Docker shows it.
    pub name: String,
    /// Service name.
    pub service: String,
    /// Slot: a number, or a node id for global services.
    pub slot: String,
    /// Name of the node it is on (empty while unplaced).
    pub node: String,
    /// Image of its spec.
    pub image: String,
    /// `running` or `shutdown`: what its node means to do with it.
    pub desired_state: String,
    /// `pending`, `starting`, `running`, `complete`, `failed`, `shutdown`, `rejected`; `running`
    /// only while it really runs on a live node.
    pub state: String,
    /// `none`, `starting`, `healthy`, `unhealthy`.
    pub health: String,
    /// What went wrong, if anything.
    pub error: String,
    /// Docker container id.
    pub container_id: String,
    /// Where any node reaches each published container port (node address and host port).
    pub endpoint: Vec<String>,
    /// Milliseconds since the epoch when it entered its state.
    pub since_ms: u64,
    /// Whether this is history (a replaced task).
    pub history: bool,
}

/// How far a service's rolling update or rebalance has come, as the answering node sees it (see
/// `reconcile::pacing`). All zero when nothing is changing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// Slots still to change: served, but not only by their owner at the current version.
    pub changing: u64,
    /// Those of them whose turn has come (at most `update_config.parallelism`).
    pub in_progress: u64,
    /// When (ms since the epoch) the update delay lets the next slot start, if it is waiting.
    pub resume_at_ms: Option<u64>,
}

/// A service in full, for `service inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDetail {
    /// The summary.
    pub info: ServiceInfo,
    /// Progress of its rolling update or rebalance.
    pub rollout: Rollout,
    /// Spec version (changes when replicas must be replaced).
    pub version: String,
    /// Times `service update --force` was used.
    pub force: u64,
    /// The whole spec.
    pub spec: ServiceSpec,
    /// Where the last rollout is (Swarm's `UpdateStatus`); None for a service never updated.
    pub update_status: Option<UpdateStatus>,
    /// What `service rollback` would return to (Swarm's `PreviousSpec`).
    pub previous_spec: Option<Box<ServiceSpec>>,
}

/// How `service ls` prints a published port.
pub fn port_text(port: &PortSpec) -> String {
    let proto = match port.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    match port.published {
        Some(published) => format!("*:{published}->{}/{proto}", port.target),
        None => format!("{}/{proto}", port.target),
    }
}

/// A node as `node ls` and `node inspect` show it. Field names are the JSON contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Full node id (32 hex digits).
    pub id: String,
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// `ready`, `suspect`, `down` or `left`.
    pub status: NodeStatus,
    /// Operator setting: active, pause or drain.
    pub availability: Availability,
    /// Operator labels (`node update --label-add`) over engine labels (`agent --label`).
    pub labels: BTreeMap<String, String>,
    /// Labels given to the agent at start.
    pub engine_labels: BTreeMap<String, String>,
    /// Labels set by operators at run time.
    pub node_labels: BTreeMap<String, String>,
    /// Operating system of the agent.
    pub os: String,
    /// CPU architecture of the agent.
    pub arch: String,
    /// Version of the agent.
    pub agent_version: String,
    /// QUIC address.
    pub quic_addr: SocketAddr,
    /// Agent process generation (grows with every restart).
    pub generation: u64,
    /// Whether this is the node that answered.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Milliseconds since the Unix epoch when the status last changed, as the answering node saw it.
    pub status_since_ms: u64,
    /// For the node that answered: gossip datagrams it refused, by reason (`forged`, `replay`,
    /// `unsealed`, `impostor`, ...). Empty for other nodes.
    pub gossip_refused: BTreeMap<String, u64>,
}

impl NodeInfo {
    /// Builds the API view of a membership record and the node's operator settings.
    pub fn from_view(view: &NodeView, settings: &NodeSettings) -> Self {
        let NodeIdentity {
            addr,
            id,
            generation,
            meta,
        } = &view.identity;
        NodeInfo {
            id: id.to_string(),
            name: meta.name.clone(),
            addr: *addr,
            status: view.status,
            availability: settings.availability,
            labels: meta
                .labels
                .iter()
                .chain(settings.labels.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            engine_labels: meta.labels.clone(),
            node_labels: settings.labels.clone(),
            os: meta.os.clone(),
            arch: meta.arch.clone(),
            agent_version: meta.agent_version.clone(),
            quic_addr: meta.quic_addr,
            generation: *generation,
            is_self: view.is_self,
            status_since_ms: view.since_ms,
            gossip_refused: BTreeMap::new(),
        }
    }
}

/// Finds a node by full id, unique id prefix, or name.
pub fn find_node<'a>(nodes: &'a [NodeInfo], query: &str) -> Result<&'a NodeInfo, String> {
    // `self` names the node answering, as Docker's `node inspect self` does.
    if query == "self" {
        if let Some(node) = nodes.iter().find(|n| n.is_self) {
            return Ok(node);
        }
    }
    if let Some(node) = nodes.iter().find(|n| n.id == query) {
        return Ok(node);
    }
    let by_name: Vec<_> = nodes.iter().filter(|n| n.name == query).collect();
    if let [node] = by_name[..] {
        return Ok(node);
    }
    let by_prefix: Vec<_> = nodes.iter().filter(|n| n.id.starts_with(query)).collect();
    match (by_name.len(), &by_prefix[..]) {
        (0, [node]) if !query.is_empty() => Ok(node),
        (0, []) => Err(format!("no such node: {query}")),
        _ => Err(format!(
            "node {query:?} is ambiguous; it matches {}",
            by_name
                .iter()
                .chain(by_prefix.iter())
                .map(|n| format!("{} ({})", &n.id[..12], n.name))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
