//! Claiming and healing: each reconcile round runs the reconciler over the desired state, the
//! live members and every node's report, hands the actions to the shell's executor, publishes
//! this node's report when it changed, and recomputes the ingress routing table.

use std::{collections::HashSet, sync::Arc};

use tracing::{debug, info, warn};

use super::{Node, REPORT_HORIZON};
use crate::{
    desired::state::AutoWrite,
    identity::{NodeId, NodeIdentity},
    membership::NodeStatus,
    observed::{NodeReport, ObservedState, TaskReport},
    reconcile::plan::{node_facts, Inputs, Reconciler},
    routing::{
        routes::{routing_table, RoutingTable},
        sticky::CookieKeys,
    },
    runtime::{Action, LocalContainer, TaskSpec},
};

/// This node's replicas and the bookkeeping around them.
pub(super) struct Workload {
    /// Restart bookkeeping and history.
    pub reconciler: Reconciler,
    /// Last listing of this node's containers; None until the first listing (or without an
    /// engine), and then no round runs: acting on no listing would start duplicates.
    pub containers: Option<Vec<LocalContainer>>,
    /// Every node's latest report.
    pub observed: ObservedState,
    /// Sequence number of this node's last report.
    seq: u64,
    /// This node's last published report.
    published: Option<NodeReport>,
    /// Containers being removed, so a slow stop is not asked for twice.
    removing: HashSet<String>,
    /// Why the engine is unusable, if it is.
    engine_error: Option<String>,
    /// Whether this node runs containers at all (not `--runtime none`).
    runs_containers: bool,
    /// The routing table last handed to the ingress.
    routes: Arc<RoutingTable>,
}

impl Workload {
    pub fn new(no_runtime: Option<String>) -> Self {
        Workload {
            reconciler: Reconciler::default(),
            containers: None,
            observed: ObservedState::default(),
            seq: 0,
            published: None,
            removing: HashSet::new(),
            runs_containers: no_runtime.is_none(),
            engine_error: no_runtime,
            routes: Arc::default(),
        }
    }

    /// Takes in a fresh listing; drops finished removals from the in-progress set.
    pub fn listed(&mut self, containers: Vec<LocalContainer>) {
        let ids: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        self.removing.retain(|id| ids.contains(id.as_str()));
        self.containers = Some(containers);
        self.engine_error = None;
    }

    pub fn list_failed(&mut self, error: String) {
        if self.engine_error.as_deref() != Some(error.as_str()) {
            warn!(%error, "cannot list containers; replicas are not reconciled");
        }
        self.engine_error = Some(error);
    }

    /// Logs an action and keeps it, unless it is a removal already under way.
    fn admit(&mut self, action: Action) -> Option<Action> {
        match &action {
            Action::Remove {
                container, reason, ..
            } => {
                if !self.removing.insert(container.clone()) {
                    return None;
                }
                info!(container = %short(container), action = "remove", %reason, "stopping replica");
            }
            Action::Create(t) => {
                info!(service = %t.service, slot = %t.slot, task = %t.task_id, action = "create",
                    "starting replica");
            }
        }
        Some(action)
    }

    /// A create failed: the reconciler backs off before trying again.
    pub fn create_failed(&mut self, task: &TaskSpec, error: String, now_ms: u64) {
        warn!(service = %task.service, slot = %task.slot, task = %task.task_id, %error,
            "replica failed to start");
        self.reconciler
            .create_failed(&task.service, &task.slot, error, now_ms, &task.spec);
    }
}

impl Node {
    /// One reconciliation round. Returns when the reconciler wants to be woken (a restart delay
    /// ending).
    pub(super) fn reconcile(&mut self, now_ms: u64) -> Option<u64> {
        self.refresh_removed(now_ms);
        self.prune_reports(now_ms);
        self.refresh_keyring(now_ms);
        self.refresh_network(now_ms);
        self.publish_routes();
        if !self.settled {
            return None;
        }
        let me = self.membership.identity().clone();
        let views = self.membership.nodes();
        let runs_containers = self.workload.runs_containers;
        let w = &mut self.workload;
        let plan = match &w.containers {
            Some(containers) => {
                let facts = node_facts(&views, self.replica.state());
                Some(w.reconciler.plan(&Inputs {
                    me: me.id,
                    now_ms,
                    services: self.replica.services(),
                    nodes: &facts,
                    observed: &w.observed,
                    local: containers,
                }))
            }
            // Not listed yet: an empty report would tell the cluster our replicas are gone.
            None if runs_containers => return None,
            // A node without containers still reports, for the keys it holds.
            None => None,
        };
        let (tasks, history, wake_at_ms, auto_writes) = match plan {
            Some(plan) => {
                for action in plan.actions {
                    if let Some(action) = self.workload.admit(action) {
                        self.effects.actions.push(action);
                    }
                }
                (plan.tasks, plan.history, plan.wake_at_ms, plan.auto_writes)
            }
            None => Default::default(),
        };
        self.publish_report(me, tasks, history);
        for write in auto_writes {
            self.apply_auto_write(&write, now_ms);
        }
        wake_at_ms
    }

    /// Drops the reports of nodes that departed for good: removed ones (`node rm`), and ones
    /// down or gone for longer than [`REPORT_HORIZON`]. Every node holds every report, so
    /// without this a cluster that replaces hosts over months would carry all of them. A node
    /// that comes back is `ready` again and its next report is taken as any other.
    fn prune_reports(&mut self, now_ms: u64) {
        let me = self.me();
        let stale: Vec<NodeId> = self
            .workload
            .observed
            .reports()
            .map(|r| r.node)
            .filter(|n| *n != me && self.report_is_stale(*n, now_ms))
            .collect();
        if !stale.is_empty() {
            let pruned = self.workload.observed.prune(|n| stale.contains(&n));
            info!(pruned, "reports of departed nodes dropped");
        }
    }

    /// Whether `node`'s report is one [`Node::prune_reports`] drops.
    pub(super) fn report_is_stale(&self, node: NodeId, now_ms: u64) -> bool {
        if self.replica.state().removed_nodes().contains(&node) {
            return true;
        }
        match self.membership.recorded_status(node) {
            Some((NodeStatus::Down | NodeStatus::Left, since_ms)) => {
                now_ms.saturating_sub(since_ms) > REPORT_HORIZON.as_millis() as u64
            }
            _ => false,
        }
    }

    /// Publishes this node's report to every live peer if it changed.
    fn publish_report(
        &mut self,
        me: NodeIdentity,
        tasks: Vec<TaskReport>,
        history: Vec<TaskReport>,
    ) {
        let gossip_keys = self.key_marks();
        let w = &mut self.workload;
        let changed = w.published.as_ref().is_none_or(|r| {
            r.tasks != tasks || r.history != history || r.gossip_keys != gossip_keys
        });
        if !changed {
            return;
        }
        w.seq += 1;
        let report = NodeReport {
            node: me.id,
            generation: me.generation,
            seq: w.seq,
            tasks,
            history,
            gossip_keys,
        };
        w.observed.merge(report.clone());
        w.published = Some(report.clone());
        debug!(
            seq = report.seq,
            tasks = report.tasks.len(),
            "report changed"
        );
        self.pass_on(vec![report], Vec::new(), me.id);
        // The routing table includes this node's own replicas: refresh it with the report.
        self.publish_routes();
    }

    /// Writes a rollout outcome this node observed (a pause, a rollback, a completion). Every node
    /// that observes it writes the same registers (see `desired::state::status`), so whichever
    /// does first spreads it and the others' writes change nothing.
    fn apply_auto_write(&mut self, write: &AutoWrite, now_ms: u64) {
        match self.replica.apply_auto(write, now_ms) {
            Ok(Some(outgoing)) => {
                info!(service = %write.service, version = %write.version,
                    outcome = ?write.outcome, "rollout outcome written");
                self.spread(outgoing, None, now_ms);
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "rollout outcome not written"),
        }
    }

    /// Recomputes the ingress routing table; an effect hands it to the listeners if it changed.
    fn publish_routes(&mut self) {
        let views = self.membership.nodes();
        let mut table = routing_table(self.replica.services(), &self.workload.observed, &views);
        // The cookie keys follow the gossip keyring: a rotation's new primary signs new cookies
        // from the next round on.
        table.cookie_keys = CookieKeys::from_keyring(self.membership.keyring());
        let current = &self.workload.routes;
        if **current == table {
            return;
        }
        for c in table
            .conflicts
            .iter()
            .filter(|c| !current.conflicts.contains(c))
        {
            warn!(port = c.port, protocol = ?c.protocol, service = %c.loser,
                published_by = %c.winner,
                "ingress: port already published by another service; not routed");
        }
        debug!(
            tcp = table.routes.len(),
            udp = table.udp.len(),
            "ingress: routing table changed"
        );
        let table = Arc::new(table);
        self.workload.routes = table.clone();
        self.effects.routes = Some(table);
    }

    /// This node's current containers, as last listed.
    pub(super) fn local_containers(&self) -> &[LocalContainer] {
        self.workload.containers.as_deref().unwrap_or(&[])
    }

    /// This node's id.
    pub(super) fn me(&self) -> NodeId {
        self.membership.identity().id
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
