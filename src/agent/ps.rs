//! `ps` answers: the tasks of services, stacks or nodes, from every node's report plus the slots
//! placement could not fill or whose owner has not reported yet.

use std::collections::BTreeMap;

use super::node::Node;
use shoal_core::{
    api::TaskInfo,
    desired::state::ServiceView,
    identity::NodeId,
    membership::NodeStatus,
    observed::{SlotKey, TaskReport, TaskState},
    reconcile::plan::{node_facts, placement_of},
};

impl Node {
    /// Tasks of the services `wanted` accepts (current ones, then history), and pending slots.
    pub(super) fn tasks(
        &self,
        wanted: impl Fn(&ServiceView) -> bool,
        on_node: Option<NodeId>,
    ) -> Vec<TaskInfo> {
        let desired = self.replica.state();
        let views = self.membership.nodes();
        let status: BTreeMap<NodeId, (String, NodeStatus)> = views
            .iter()
            .map(|v| (v.identity.id, (v.identity.meta.name.clone(), v.status)))
            .collect();
        let facts = node_facts(&views, desired);
        let observed = &self.workload.observed;
        let mut out = Vec::new();
        for service in desired.services().into_iter().filter(|s| wanted(s)) {
            let placement = placement_of(&service, &facts, observed);
            let mut reported: Vec<(NodeId, &TaskReport, bool)> = Vec::new();
            for report in observed.reports() {
                if on_node.is_some_and(|n| n != report.node) {
                    continue;
                }
                for t in report.tasks.iter().filter(|t| t.service == service.name) {
                    reported.push((report.node, t, false));
                }
                for t in report.history.iter().filter(|t| t.service == service.name) {
                    reported.push((report.node, t, true));
                }
            }
            // Slots nobody can run, or whose owner has not reported a task for them yet.
            if on_node.is_none() {
                for (slot, reason) in &placement.pending {
                    out.push(pending(&service, slot, String::new(), reason.clone()));
                }
                for (slot, owner) in &placement.owners {
                    let has = reported
                        .iter()
                        .any(|(n, t, h)| !h && n == owner && &t.slot == slot);
                    if !has {
                        let node = status.get(owner).map(|s| s.0.clone()).unwrap_or_default();
                        out.push(pending(
                            &service,
                            slot,
                            node,
                            "assigned, not started yet".into(),
                        ));
                    }
                }
            }
            for (node, t, history) in reported {
                let (name, node_status) = status
                    .get(&node)
                    .cloned()
                    .unwrap_or_else(|| (node.short(), NodeStatus::Down));
                let live = matches!(node_status, NodeStatus::Ready | NodeStatus::Suspect);
                let mut state = t.state.as_str().to_string();
                let mut error = t.error.clone().unwrap_or_default();
                if !history && !live && matches!(t.state, TaskState::Running | TaskState::Starting)
                {
                    // Its node is gone: nobody can vouch that it still runs.
                    state = "orphaned".into();
                    error = format!("node {name} is {}", node_status.as_str());
                }
                out.push(TaskInfo {
                    id: t.task_id.clone(),
                    name: format!("{}.{}", t.service, t.slot),
                    service: t.service.clone(),
                    slot: t.slot.to_string(),
                    node: name,
                    image: if t.image.is_empty() {
                        service.spec.image.clone()
                    } else {
                        t.image.clone()
                    },
                    desired_state: if t.desired_running && !history {
                        "running".into()
                    } else {
                        "shutdown".into()
                    },
                    state,
                    health: format!("{:?}", t.health).to_lowercase(),
                    error,
                    container_id: t.container_id.clone().unwrap_or_default(),
                    endpoint: t.endpoints.iter().map(|e| e.to_string()).collect(),
                    since_ms: t.since_ms,
                    history,
                });
            }
        }
        out.sort_by(|a, b| {
            (
                &a.service,
                slot_order(&a.slot),
                a.history,
                std::cmp::Reverse(a.since_ms),
            )
                .cmp(&(
                    &b.service,
                    slot_order(&b.slot),
                    b.history,
                    std::cmp::Reverse(b.since_ms),
                ))
        });
        out
    }
}

/// Numeric slots sort as numbers.
fn slot_order(slot: &str) -> (u64, String) {
    slot.parse::<u64>()
        .map(|n| (n, String::new()))
        .unwrap_or((u64::MAX, slot.to_string()))
}

fn pending(service: &ServiceView, slot: &SlotKey, node: String, reason: String) -> TaskInfo {
    TaskInfo {
        id: String::new(),
        name: format!("{}.{}", service.name, slot),
        service: service.name.clone(),
        slot: slot.to_string(),
        node,
        image: service.spec.image.clone(),
        desired_state: "running".into(),
        state: "pending".into(),
        health: "none".into(),
        error: reason,
        container_id: String::new(),
        endpoint: vec![],
        since_ms: 0,
        history: false,
    }
}
