//! Answers to CLI requests: queries read the node's current view; changes are applied to the local
//! replica, made durable, and pushed to peers before the CLI hears back.

use rand::seq::IndexedRandom;
use tokio::sync::oneshot;
use tracing::{info, Instrument};

use super::node::{now_ms, Node};
use shoal_core::{
    api::{
        find_node, port_text, ChangeReceipt, NodeInfo, PeerRequest, Request, Response, Rollout,
        ServiceDetail, ServiceInfo, StackInfo,
    },
    desired::{
        hlc::Hlc,
        spec::Mode,
        state::{DesiredError, DesiredState, ServiceView},
    },
    identity::{NodeId, NodeIdentity},
    membership::NodeStatus,
    reconcile::{
        pacing,
        plan::{node_facts, placement_of},
    },
    replica::{Replica, PUSH_FANOUT},
    wire,
};

impl Node {
    /// Answers one CLI request; changes answer asynchronously once durable and pushed.
    pub(super) fn handle_api(&mut self, request: Request, reply: oneshot::Sender<Response>) {
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
                    rollout: self.rollout(&view),
                    version: view.version.to_string(),
                    force: view.force,
                    spec: view.spec.clone(),
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
                let id = match self.resolve_node(&node) {
                    Ok(id) => id,
                    Err(e) => {
                        let _ = reply.send(Response::Error(e));
                        return;
                    }
                };
                let action = format!("Updated node {}", id.short());
                return self.change(
                    reply,
                    move |s, hlc| s.update_node(id, availability, label_add, label_rm, hlc),
                    move |_, _| vec![action],
                );
            }
            Request::StackDeploy { stack, services } => {
                return self.change(
                    reply,
                    move |s, hlc| s.deploy_stack(&stack, services, hlc),
                    service_actions,
                );
            }
            Request::StackRemove { stack } => {
                return self.change(
                    reply,
                    move |s, hlc| s.remove_stack(&stack, hlc),
                    service_actions,
                );
            }
            Request::ServiceUpdate { name, update } => {
                return self.change(
                    reply,
                    move |s, hlc| s.update_service(&name, *update, hlc),
                    service_actions,
                );
            }
            Request::ServiceScale { scales } => {
                return self.change(
                    reply,
                    move |s, hlc| all_or_nothing(s, scales, |s, (name, n)| s.scale(&name, n, hlc)),
                    service_actions,
                );
            }
            Request::ServiceRemove { names } => {
                return self.change(
                    reply,
                    move |s, hlc| all_or_nothing(s, names, |s, name| s.remove_service(&name, hlc)),
                    service_actions,
                );
            }
        };
        let _ = reply.send(answer);
    }

    /// Applies a change, persists it, spreads it, and answers once it is durable and peers have
    /// acknowledged (or could not be reached).
    fn change(
        &mut self,
        reply: oneshot::Sender<Response>,
        op: impl FnOnce(&mut DesiredState, Hlc) -> Result<DesiredState, DesiredError>,
        describe: impl FnOnce(&[ServiceView], &[ServiceView]) -> Vec<String>,
    ) {
        let before = self.replica.digest();
        let services_before = self.replica.state().services();
        let outgoing = match self.replica.change(now_ms(), op) {
            Ok(outgoing) => outgoing,
            Err(e) => {
                let _ = reply.send(Response::Error(e.to_string()));
                return;
            }
        };
        let changed = self.replica.digest() != before;
        self.reconcile_due |= changed;
        let actions = describe(&services_before, &self.replica.state().services());
        let snapshot = match wire::encode(self.replica.state()) {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = reply.send(Response::Error(format!(
                    "cannot encode the desired state: {e}"
                )));
                return;
            }
        };
        let durable = self.persister.write(snapshot);
        let live = self.live_peers();
        let peers_live = live.len();
        let targets: Vec<NodeIdentity> = live
            .sample(&mut rand::rng(), PUSH_FANOUT)
            .cloned()
            .collect();
        let acked = if changed {
            if let Some(gossip) = &outgoing.gossip {
                self.membership.broadcast(gossip, now_ms());
            }
            Some(self.push(targets, PeerRequest::Desired(Box::new(outgoing.delta))))
        } else {
            None
        };
        for action in &actions {
            info!(action = %action, changed, "desired state change");
        }
        tokio::spawn(
            async move {
                let response = match durable.await {
                    Ok(Ok(())) => {
                        let peers_acked = match acked {
                            Some(acked) => acked.await.unwrap_or(0),
                            None => 0,
                        };
                        Response::Changed(ChangeReceipt {
                            actions,
                            changed,
                            peers_acked,
                            peers_live,
                        })
                    }
                    Ok(Err(e)) => Response::Error(format!("change not durable: {e}")),
                    Err(_) => Response::Error("agent is shutting down".into()),
                };
                let _ = reply.send(response);
            }
            .in_current_span(),
        );
    }

    pub(super) fn live_peers(&self) -> Vec<NodeIdentity> {
        self.membership
            .nodes()
            .into_iter()
            .filter(|v| !v.is_self && v.status == NodeStatus::Ready)
            .map(|v| v.identity)
            .collect()
    }

    pub(super) fn node_infos(&self) -> Vec<NodeInfo> {
        let state = self.replica.state();
        self.membership
            .nodes()
            .iter()
            .map(|v| NodeInfo::from_view(v, &state.node_settings(v.identity.id)))
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
            running: self.running_replicas(view),
            image: view.spec.image.clone(),
            ports: view.spec.ports.iter().map(port_text).collect(),
        }
    }

    /// How far the service's update or rebalance has come: the gate this node's reconciler
    /// computes, over the same inputs.
    fn rollout(&self, view: &ServiceView) -> Rollout {
        let views = self.membership.nodes();
        let facts = node_facts(&views, self.replica.state());
        let observed = &self.workload.observed;
        let placement = placement_of(view, &facts, observed);
        let live = facts.iter().map(|n| n.id).collect();
        let reported = observed.by_service();
        let serving = pacing::Serving {
            me: self.membership.identity().id,
            local: self.workload.containers.as_deref().unwrap_or(&[]),
            reported: reported.of(&view.name),
            live: &live,
        };
        let gate = pacing::gate(view, &placement.owners, &serving, now_ms());
        Rollout {
            changing: gate.changing.len() as u64,
            in_progress: gate.open.len() as u64,
            resume_at_ms: gate.wake_at_ms,
        }
    }

    /// Replicas of the current version that run, ready, on live nodes.
    fn running_replicas(&self, view: &ServiceView) -> u64 {
        let live: std::collections::BTreeSet<NodeId> = self
            .membership
            .nodes()
            .iter()
            .filter(|v| matches!(v.status, NodeStatus::Ready | NodeStatus::Suspect))
            .map(|v| v.identity.id)
            .collect();
        let slots: std::collections::BTreeSet<_> = self
            .workload
            .observed
            .tasks_of(&view.name)
            .filter(|(node, t)| live.contains(node) && t.is_ready_at(view.version, view.force))
            .map(|(_, t)| t.slot)
            .collect();
        slots.len() as u64
    }

    /// Finds a node by full id, unique id prefix, or name.
    fn resolve_node(&self, query: &str) -> Result<NodeId, String> {
        let nodes = self.node_infos();
        find_node(&nodes, query).and_then(|n| n.id.parse::<NodeId>())
    }
}

/// Applies `op` to every item on a scratch copy, and keeps the result only if all succeed, so a
/// `service scale a=1 nope=2` changes nothing.
fn all_or_nothing<T>(
    state: &mut DesiredState,
    items: Vec<T>,
    mut op: impl FnMut(&mut DesiredState, T) -> Result<DesiredState, DesiredError>,
) -> Result<DesiredState, DesiredError> {
    let mut scratch = state.clone();
    let mut delta = DesiredState::default();
    for item in items {
        delta.merge_delta(op(&mut scratch, item)?);
    }
    *state = scratch;
    Ok(delta)
}

/// What a change did to services, one line each, in Docker's words.
fn service_actions(before: &[ServiceView], after: &[ServiceView]) -> Vec<String> {
    let mut actions = Vec::new();
    for new in after {
        match before.iter().find(|old| old.name == new.name) {
            None => actions.push(format!("Creating service {}", new.name)),
            Some(old) if old.replicas != new.replicas && old.version == new.version => {
                actions.push(format!("{} scaled to {}", new.name, new.replicas))
            }
            Some(old) if old != new => actions.push(format!("Updating service {}", new.name)),
            Some(_) => {}
        }
    }
    for old in before {
        if !after.iter().any(|new| new.name == old.name) {
            actions.push(format!("Removing service {}", old.name));
        }
    }
    actions
}

/// Loads the desired state from the data dir, or starts empty.
pub(super) fn load_replica(path: &std::path::Path, node: NodeId) -> Result<Replica, String> {
    let state = match std::fs::read(path) {
        Ok(bytes) => {
            wire::decode::<DesiredState>(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DesiredState::default(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    Ok(Replica::new(node, state, now_ms()))
}
