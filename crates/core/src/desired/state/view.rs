//! Read-only views of the state: what the CLI shows and what placement and reconciliation read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{entry::ServiceEntry, status::UpdateStatus, DesiredState};
use crate::{
    desired::{
        hlc::Hlc,
        spec::{Availability, ServiceSpec, UpdateConfig},
    },
    identity::NodeId,
};

/// A live service as the registers currently say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Full name, `STACK_SERVICE`.
    pub name: String,
    /// The stack it belongs to.
    pub stack: String,
    /// Desired replicas (meaningless for global services).
    pub replicas: u64,
    /// Everything else.
    pub spec: ServiceSpec,
    /// The spec version: the latest stamp among the fields that shape containers (all but the
    /// replica count, update/rollback configs and deploy labels; the force counter included).
    /// Replicas running an older version must be replaced.
    pub version: Hlc,
    /// `service update --force` counter.
    pub force: u64,
    /// The latest write to any field of the service.
    pub updated: Hlc,
    /// The rollout's status as the register holds it (see [`ServiceView::rollout`]).
    pub update_status: Option<UpdateStatus>,
    /// Whether there is a previous spec to roll back to.
    pub can_roll_back: bool,
}

impl ServiceView {
    fn new(name: &str, entry: &ServiceEntry) -> Self {
        let version = entry.version().unwrap_or(Hlc::ZERO);
        ServiceView {
            name: name.to_string(),
            stack: entry.stack(),
            replicas: entry.replicas(),
            spec: entry.spec(),
            version,
            force: entry.force(),
            updated: entry.updated().unwrap_or(version),
            update_status: entry.update_status(),
            can_roll_back: entry.previous().is_some(),
        }
    }

    /// The status of the rollout to the current version; `None` for a service never updated
    /// since its creation, or whose status is about another version (a stale one).
    pub fn rollout(&self) -> Option<&UpdateStatus> {
        self.update_status
            .as_ref()
            .filter(|s| s.version == self.version)
    }

    /// Whether the rollout to the current version is held by a failure (`paused`,
    /// `rollback_paused`): no further slot starts changing.
    pub fn is_paused(&self) -> bool {
        self.rollout().is_some_and(|s| s.state.is_paused())
    }

    /// The config that paces the current rollout: `rollback_config` while it is a rollback,
    /// `update_config` otherwise (rebalancing included).
    pub fn pacing_config(&self) -> &UpdateConfig {
        match self.rollout() {
            Some(s) if s.state.is_rollback() => &self.spec.rollback_config,
            _ => &self.spec.update_config,
        }
    }
}

/// A stack: a name shared by at least one live service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackView {
    /// Stack name.
    pub name: String,
    /// How many live services it has.
    pub services: usize,
}

/// Operator settings of a node; the defaults (active, no labels) when none were written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSettings {
    /// Active, pause or drain.
    pub availability: Availability,
    /// Labels from `node update --label-add`.
    pub labels: BTreeMap<String, String>,
    /// `node rm`: no longer listed, owns no slots, and its certificate is refused (from the
    /// cluster entry's removed set).
    pub removed: bool,
}

impl DesiredState {
    /// Every live service, sorted by name.
    pub fn services(&self) -> Vec<ServiceView> {
        self.services
            .iter()
            .filter(|(_, e)| e.is_live())
            .map(|(name, e)| ServiceView::new(name, e))
            .collect()
    }

    /// One live service.
    pub fn service(&self, name: &str) -> Option<ServiceView> {
        self.services
            .get(name)
            .filter(|e| e.is_live())
            .map(|e| ServiceView::new(name, e))
    }

    /// Every stack with at least one live service, sorted by name.
    pub fn stacks(&self) -> Vec<StackView> {
        let mut counts = BTreeMap::<String, usize>::new();
        for entry in self.services.values().filter(|e| e.is_live()) {
            *counts.entry(entry.stack()).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(name, services)| StackView { name, services })
            .collect()
    }

    /// The settings of `node`, defaults if never written.
    pub fn node_settings(&self, node: NodeId) -> NodeSettings {
        let mut settings = self
            .nodes
            .get(&node)
            .map(|e| NodeSettings {
                availability: e.availability(),
                labels: e.labels(),
                removed: false,
            })
            .unwrap_or_default();
        settings.removed = self.removed_nodes().contains(&node);
        settings
    }

    /// Every node that ever had a setting written, sorted by id.
    pub fn nodes_with_settings(&self) -> Vec<(NodeId, NodeSettings)> {
        self.nodes
            .keys()
            .map(|id| (*id, self.node_settings(*id)))
            .collect()
    }
}
