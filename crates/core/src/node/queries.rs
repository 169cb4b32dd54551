//! Read-only answers to the CLI (`node ls`, `service ls|inspect|ps`, `stack ls|ps`, `node ps`),
//! computed from this node's view of the whole cluster, and the dispatch of CLI writes to
//! [`super::changes`].

use std::collections::{BTreeMap, BTreeSet};

use tracing::info;

use super::{
    changes::{all_or_nothing, service_actions},
    Node, RequestId,
};
use crate::{
    api::{
        find_node, port_text, service_id, NodeInfo, Request, Response, Rollout, ServiceDetail,
        ServiceInfo, StackInfo, TaskInfo,
    },
    desired::spec::Mode,
    desired::state::{DesiredError, ServiceView},
    identity::NodeId,
    membership::NodeStatus,
    observed::{SlotKey, TaskReport, TaskState},
    reconcile::{
        pacing,
        plan::{node_facts, placement_of},
    },
    seal::GossipKey,
    trust::token::JoinSecret,
};

impl Node {
    /// Answers one CLI request; changes answer once durable and pushed (see [`super::changes`]).
    pub(super) fn answer_api(
        &mut self,
        id: RequestId,
        request: Request,
        entropy: [u8; 32],
        now_ms: u64,
    ) {
        let state = self.replica.state();
        let answer = match request {
            Request::NodeList => Response::Nodes(self.node_infos()),
            Request::StackList => Response::Stacks(
                state
                    .stacks()
                    .into_iter()
                    .map(|s| StackInfo {
                        name: s.name,
                        services: s.services,
                    })
                    .collect(),
            ),
            Request::ServiceList => Response::Services(
                state
                    .services()
                    .iter()
                    .map(|s| self.service_info(s))
                    .collect(),
            ),
            Request::ServiceInspect { name } => match state.service(&name) {
                Some(view) => Response::Service(Box::new(ServiceDetail {
                    info: self.service_info(&view),
                    rollout: self.rollout(&view, now_ms),
                    version: view.version.to_string(),
                    force: view.force,
                    spec: view.spec.clone(),
                    update_status: view.update_status.clone(),
                    previous_spec: state.previous_spec(&name).map(Box::new),
                })),
                None => Response::Error(DesiredError::UnknownService(name).to_string()),
            },
            Request::ServicePs { name } => match state.service(&name) {
                Some(_) => Response::Tasks(self.tasks(|s| s.name == name, None)),
                None => Response::Error(DesiredError::UnknownService(name).to_string()),
            },
            Request::StackPs { stack } => {
                if state.services().iter().any(|s| s.stack == stack) {
                    Response::Tasks(self.tasks(|s| s.stack == stack, None))
                } else {
                    Response::Error(DesiredError::UnknownStack(stack).to_string())
                }
            }
            Request::NodePs { node } => {
                let id = match node {
                    Some(query) => self.resolve_node(&query),
                    None => Ok(self.membership.identity().id),
                };
                match id {
                    Ok(id) => Response::Tasks(self.tasks(|_| true, Some(id))),
                    Err(e) => Response::Error(e),
                }
            }
            Request::NodeUpdate {
                node,
                availability,
                label_add,
                label_rm,
            } => {
                let node = match self.resolve_node(&node) {
                    Ok(node) => node,
                    Err(e) => {
                        self.effects.api_replies.push((id, Response::Error(e)));
                        return;
                    }
                };
                let action = format!("Updated node {}", node.short());
                self.apply_change(
                    Some(id),
                    now_ms,
                    move |s, hlc| s.update_node(node, availability, label_add, label_rm, hlc),
                    move |_, _| vec![action],
                );
                return;
            }
            Request::StackDeploy {
                stack,
                services,
                prune,
                networks,
            } => {
                self.apply_change(
                    Some(id),
                    now_ms,
                    move |s, hlc| s.deploy_stack_with(&stack, networks, services, prune, hlc),
                    service_actions,
                );
                return;
            }
            Request::ServiceCreate { def } => {
                self.apply_change(
                    Some(id),
                    now_ms,
                    move |s, hlc| s.create_service(*def, hlc),
                    service_actions,
                );
                return;
            }
            Request::StackRemove { stack } => {
                self.apply_change(
                    Some(id),
                    now_ms,
                    move |s, hlc| s.remove_stack(&stack, hlc),
                    service_actions,
                );
                return;
            }
            Request::ServiceUpdate { name, update } => {
                self.apply_change(
                    Some(id),
                    now_ms,
                    move |s, hlc| s.update_service(&name, *update, hlc),
                    service_actions,
                );
                return;
            }
            Request::ServiceScale { scales } => {
                self.apply_change(
                    Some(id),
                    now_ms,
                    move |s, hlc| all_or_nothing(s, scales, |s, (name, n)| s.scale(&name, n, hlc)),
                    service_actions,
                );
                return;
            }
            Request::ClusterJoinToken { rotate } => {
                if rotate {
                    let mut secret = [0u8; 16];
                    secret.copy_from_slice(&entropy[..16]);
                    let outcome = self.apply_change(
                        None,
                        now_ms,
                        move |s, hlc| Ok(s.rotate_join_secret(JoinSecret(secret), hlc)),
                        |_, _| Vec::new(),
                    );
                    info!(
                        ?outcome,
                        "join token rotated: the previous token no longer admits"
                    );
                }
                match self.join_token() {
                    Some(token) => Response::JoinToken(token),
                    None => Response::Error(
                        "this cluster has no join token yet (its trust was never initialised)"
                            .into(),
                    ),
                }
            }
            Request::ClusterRotateKey => {
                if self.replica.state().gossip_keys().len() >= crate::seal::MAX_KEYS {
                    let busy = "a gossip key rotation is still in progress: \
                        try again once every node holds the newest key";
                    self.effects
                        .api_replies
                        .push((id, Response::Error(busy.into())));
                    return;
                }
                self.apply_change(
                    Some(id),
                    now_ms,
                    move |s, hlc| Ok(s.add_gossip_key(GossipKey(entropy), hlc)),
                    |_, _| vec!["Rotating the gossip key".to_string()],
                );
                return;
            }
            Request::ClusterClientBundle { .. } => Response::Error(
                "client bundles are issued by the agent that holds the CA key".into(),
            ),
            Request::NodeRemove { node, force } => {
                let target = match self.resolve_node(&node) {
                    Ok(target) => target,
                    Err(e) => {
                        self.effects.api_replies.push((id, Response::Error(e)));
                        return;
                    }
                };
                let status = self
                    .membership
                    .nodes()
                    .into_iter()
                    .find(|v| v.identity.id == target)
                    .map(|v| (v.status, v.is_self));
                let refusal = match status {
                    Some((_, true)) => Some(
                        "a node cannot remove itself: run `node rm` on another member".to_string(),
                    ),
                    Some((NodeStatus::Ready | NodeStatus::Suspect, _)) if !force => Some(format!(
                        "node {node} is {}: stop it first, or use --force to remove a live \
                         node (it is cut off at once)",
                        status.map_or("up", |(s, _)| s.as_str())
                    )),
                    _ => None,
                };
                if let Some(why) = refusal {
                    self.effects.api_replies.push((id, Response::Error(why)));
                    return;
                }
                let action = format!("Removed node {}", target.short());
                // Removing a node also rotates the gossip key: it holds the current one, and
                // is locked out of gossip once the older keys are retired.
                self.apply_change(
                    Some(id),
                    now_ms,
                    move |s, hlc| {
                        let mut delta = s.remove_node(target);
                        delta.merge_delta(s.add_gossip_key(GossipKey(entropy), hlc));
                        Ok(delta)
                    },
                    move |_, _| vec![action],
                );
                return;
            }
            Request::ServiceRollback { name } => {
                let action = format!("Rolling back service {name}");
                self.apply_change(
                    Some(id),
                    now_ms,
                    move |s, hlc| s.rollback_service(&name, hlc),
                    move |_, _| vec![action],
                );
                return;
            }
            request @ (Request::NetworkCreate { .. }
            | Request::NetworkList
            | Request::NetworkInspect { .. }
            | Request::NetworkRemove { .. }) => {
                self.answer_network(id, request, now_ms);
                return;
            }
            Request::ServiceRemove { names } => {
                self.apply_change(
                    Some(id),
                    now_ms,
                    move |s, hlc| all_or_nothing(s, names, |s, name| s.remove_service(&name, hlc)),
                    service_actions,
                );
                return;
            }
        };
        self.effects.api_replies.push((id, answer));
    }

    pub(super) fn node_infos(&self) -> Vec<NodeInfo> {
        let state = self.replica.state();
        let refused: BTreeMap<String, u64> = self
            .membership
            .refused()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        self.membership
            .nodes()
            .iter()
            .map(|v| (v, state.node_settings(v.identity.id)))
            .filter(|(_, settings)| !settings.removed)
            .map(|(v, settings)| {
                let mut info = NodeInfo::from_view(v, &settings);
                if v.is_self {
                    info.gossip_refused = refused.clone();
                }
                info
            })
            .collect()
    }

    fn service_info(&self, view: &ServiceView) -> ServiceInfo {
        ServiceInfo {
            name: view.name.clone(),
            stack: view.stack.clone(),
            mode: view.spec.mode,
            replicas: match view.spec.mode {
                Mode::Replicated => view.replicas,
                Mode::Global => self.live_peers().len() as u64 + 1,
            },
            running: self.served_slots(view, false),
            updated: self.served_slots(view, true),
            update_state: view
                .rollout()
                .filter(|s| s.completed_ms.is_none())
                .map(|s| s.state.as_str().to_string()),
            image: view.spec.image.clone(),
            ports: view.spec.ports.iter().map(port_text).collect(),
            id: service_id(&view.name),
            labels: view.spec.labels.clone(),
        }
    }

    /// How far the service's update or rebalance has come: the gate this node's reconciler
    /// computes, over the same inputs.
    fn rollout(&self, view: &ServiceView, now_ms: u64) -> Rollout {
        let views = self.membership.nodes();
        let facts = node_facts(&views, self.replica.state());
        let observed = &self.workload.observed;
        let placement = placement_of(view, &facts, observed);
        let live = facts.iter().map(|n| n.id).collect();
        let reported = observed.by_service();
        let serving = pacing::Serving {
            me: self.me(),
            local: self.local_containers(),
            reported: reported.of(&view.name),
            live: &live,
        };
        let gate = pacing::gate(view, &placement.owners, &serving, now_ms);
        Rollout {
            changing: gate.changing.len() as u64,
            in_progress: gate.open.len() as u64,
            resume_at_ms: gate.wake_at_ms,
        }
    }

    /// Slots served by a ready replica on a live node: of any version, or of the current one.
    fn served_slots(&self, view: &ServiceView, current_only: bool) -> u64 {
        let live: BTreeSet<NodeId> = self
            .membership
            .nodes()
            .iter()
            .filter(|v| matches!(v.status, NodeStatus::Ready | NodeStatus::Suspect))
            .map(|v| v.identity.id)
            .collect();
        let slots: BTreeSet<_> = self
            .workload
            .observed
            .tasks_of(&view.name)
            .filter(|(node, t)| {
                let ready = if current_only {
                    t.is_ready_at(view.version, view.force)
                } else {
                    t.state == TaskState::Running && t.health.is_ready()
                };
                live.contains(node) && ready
            })
            .map(|(_, t)| t.slot)
            .collect();
        slots.len() as u64
    }

    /// Finds a node by full id, unique id prefix, or name.
    fn resolve_node(&self, query: &str) -> Result<NodeId, String> {
        let nodes = self.node_infos();
        find_node(&nodes, query).and_then(|n| n.id.parse::<NodeId>())
    }

    /// Tasks of the services `wanted` accepts (current ones, then history), and pending slots.
    fn tasks(
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
            let is_live = |node: &NodeId| {
                status
                    .get(node)
                    .is_some_and(|(_, s)| matches!(s, NodeStatus::Ready | NodeStatus::Suspect))
            };
            // Slots a live node runs (or starts) now: a gone node's task for one of them is
            // history, as the task it replaced.
            let running_live: BTreeSet<&SlotKey> = reported
                .iter()
                .filter(|(n, t, h)| {
                    !h && is_live(n) && matches!(t.state, TaskState::Running | TaskState::Starting)
                })
                .map(|(_, t, _)| &t.slot)
                .collect();
            for &(node, t, history) in &reported {
                let (name, node_status) = status
                    .get(&node)
                    .cloned()
                    .unwrap_or_else(|| (node.short(), NodeStatus::Down));
                let live = is_live(&node);
                let mut state = t.state.as_str().to_string();
                let mut error = t.error.clone().unwrap_or_default();
                let mut history = history;
                let mut desired_running = t.desired_running && !history;
                if !history && !live && matches!(t.state, TaskState::Running | TaskState::Starting)
                {
                    // Its node is gone: nobody can vouch that it still runs. Once its slot runs
                    // elsewhere it is no longer wanted either: shutdown history, as Swarm shows
                    // the tasks of a node that left.
                    state = "orphaned".into();
                    error = format!("node {name} is {}", node_status.as_str());
                    if running_live.contains(&t.slot) {
                        history = true;
                        desired_running = false;
                    }
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
                    desired_state: if desired_running {
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
        // Pending since the last write to the service (its create, update or scale), so the
        // time counts up on every node alike.
        since_ms: service.updated.wall_ms,
        history: false,
    }
}
