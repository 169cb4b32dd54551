//! Replicas in the simulator: each node runs the real reconciler against a fake container runtime,
//! publishes its report like the agent does, and a checker says whether the cluster runs exactly
//! what the desired state asks for.

use std::collections::{BTreeMap, BTreeSet};

use rand::RngExt;

use super::{Event, Sim};
use crate::{
    desired::spec::{Availability, Mode},
    identity::NodeId,
    membership::NodeStatus,
    observed::{Health, NodeReport, ObservedState, SlotKey},
    reconcile::{
        placement::eligible,
        plan::{node_facts, Inputs, Reconciler},
    },
    runtime::{Action, ContainerStatus, LocalContainer},
};

/// How often each node reconciles when nothing wakes it earlier.
pub(super) const RECONCILE_PERIOD_MS: u64 = 1_000;
/// How long a fake container takes from start to healthy.
const HEALTHY_AFTER_MS: u64 = 300;
/// From a container's health change to its agent's reconcile round (event, re-list).
const ENGINE_EVENT_LAG_MS: u64 = 30;

/// One node's replicas and reconciler, kept across agent restarts where the real thing keeps them
/// (containers survive as exited ones; the reconciler's memory does not).
#[derive(Default)]
pub(super) struct Workload {
    pub(super) reconciler: Reconciler,
    pub(super) containers: Vec<LocalContainer>,
    pub(super) observed: ObservedState,
    pub(super) seq: u64,
    pub(super) last_published: Option<NodeReport>,
}

impl Sim {
    pub(super) fn reconcile(&mut self, i: usize) {
        let now = self.now_ms;
        let node = &mut self.nodes[i];
        let Some(m) = node.membership.as_ref() else {
            return;
        };
        let views = m.nodes();
        let facts = node_facts(&views, node.replica.state());
        let me = node.id;
        let plan = node.workload.reconciler.plan(&Inputs {
            me,
            now_ms: now,
            services: node.replica.services(),
            nodes: &facts,
            observed: &node.workload.observed,
            local: &node.workload.containers,
        });
        let mut wake = plan.wake_at_ms;
        for action in plan.actions {
            match action {
                Action::Create(task) => {
                    self.next_container += 1;
                    let id = format!("c{}", self.next_container);
                    self.nodes[i].workload.containers.push(LocalContainer {
                        id: id.clone(),
                        service: task.service.clone(),
                        slot: task.slot,
                        task_id: task.task_id.clone(),
                        version: task.version,
                        force: task.force,
                        image: task.spec.image.clone(),
                        status: ContainerStatus::Running,
                        health: Health::Starting,
                        created_ms: now,
                        endpoints: vec![],
                    });
                    self.schedule(
                        now + HEALTHY_AFTER_MS,
                        Event::Healthy {
                            node: i,
                            container: id,
                        },
                    );
                }
                Action::Remove { container, .. } => {
                    self.nodes[i]
                        .workload
                        .containers
                        .retain(|c| c.id != container);
                    self.report.containers_removed += 1;
                }
            }
        }
        // Publish the report when it changed, as the agent does.
        let node = &mut self.nodes[i];
        let changed = node
            .workload
            .last_published
            .as_ref()
            .is_none_or(|r| r.tasks != plan.tasks || r.history.len() != plan.history.len());
        if changed {
            node.workload.seq += 1;
            let report = NodeReport {
                node: node.id,
                generation: node.generation,
                seq: node.workload.seq,
                tasks: plan.tasks,
                history: plan.history,
            };
            node.workload.observed.merge(report.clone());
            node.workload.last_published = Some(report.clone());
            let peers: Vec<usize> = views
                .iter()
                .filter(|v| !v.is_self && v.status == NodeStatus::Ready)
                .filter_map(|v| self.by_addr.get(&v.identity.addr).copied())
                .collect();
            for to in peers {
                let lost = self.config.loss > 0.0 && self.rng.random_bool(self.config.loss);
                if lost || self.groups[i] != self.groups[to] {
                    continue;
                }
                let (lo, hi) = self.config.latency_ms;
                let at = now + self.rng.random_range(lo..=hi);
                self.schedule(
                    at,
                    Event::Report {
                        to,
                        report: Box::new(report.clone()),
                    },
                );
            }
            // Others react to a new report at their next round; so does this node to its own.
            wake = Some(wake.map_or(now + 50, |w| w.min(now + 50)));
        }
        if let Some(at) = wake {
            let epoch = self.nodes[i].epoch;
            if at > now {
                self.schedule(
                    at,
                    Event::Reconcile {
                        node: i,
                        epoch,
                        repeat: false,
                    },
                );
            }
        }
    }

    pub(super) fn container_healthy(&mut self, i: usize, container: &str) {
        if let Some(c) = self.nodes[i]
            .workload
            .containers
            .iter_mut()
            .find(|c| c.id == container && c.status == ContainerStatus::Running)
        {
            c.health = Health::Healthy;
        }
    }

    /// A container of node `i` changed (its health): its agent hears of it from the engine and
    /// reconciles shortly after, as the real agent's event watch makes it do.
    pub(super) fn wake_for_engine_event(&mut self, i: usize) {
        if self.nodes[i].membership.is_none() {
            return;
        }
        let epoch = self.nodes[i].epoch;
        self.schedule(
            self.now_ms + ENGINE_EVENT_LAG_MS,
            Event::Reconcile {
                node: i,
                epoch,
                repeat: false,
            },
        );
    }

    pub(super) fn receive_report(&mut self, to: usize, report: NodeReport) {
        if self.nodes[to].membership.is_some() {
            self.nodes[to].workload.observed.merge(report);
        }
    }

    /// Kills a random running container of node `i`, as `docker rm -f` or a crash would (the
    /// container is left exited). Returns whether there was one.
    pub fn kill_container(&mut self, i: usize) -> bool {
        let running: Vec<usize> = self.nodes[i]
            .workload
            .containers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.status == ContainerStatus::Running)
            .map(|(k, _)| k)
            .collect();
        if running.is_empty() {
            return false;
        }
        let k = running[self.rng.random_range(0..running.len())];
        let now = self.now_ms;
        let c = &mut self.nodes[i].workload.containers[k];
        c.status = ContainerStatus::Exited {
            code: 137,
            finished_ms: now,
            error: None,
        };
        c.health = Health::None;
        true
    }

    /// Id of node `i`.
    pub fn node_id(&self, i: usize) -> NodeId {
        self.nodes[i].id
    }

    /// Ready containers of `service` (current version or not) on running nodes.
    pub fn ready_replicas(&self, service: &str) -> usize {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .flat_map(|i| self.nodes[i].workload.containers.iter())
            .filter(|c| {
                c.service == service && c.status == ContainerStatus::Running && c.health.is_ready()
            })
            .count()
    }

    /// Running containers of `service` (ready or not, current version or not) on running nodes.
    pub fn running_replicas(&self, service: &str) -> usize {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .flat_map(|i| self.nodes[i].workload.containers.iter())
            .filter(|c| c.service == service && c.status == ContainerStatus::Running)
            .count()
    }

    /// One line per running node: its containers of `service` as `slot:version-wall:health`, for
    /// a failing test to show what ran.
    pub fn describe(&self, service: &str) -> String {
        let mut out = String::new();
        for i in (0..self.nodes.len()).filter(|&i| self.is_running(i)) {
            let cs: Vec<String> = self.nodes[i]
                .workload
                .containers
                .iter()
                .filter(|c| c.service == service)
                .map(|c| format!("{}:{}:{:?}", c.slot, c.version.wall_ms % 100_000, c.health))
                .collect();
            out.push_str(&format!("node {i}: {}\n", cs.join(" ")));
        }
        out
    }

    /// Number of containers node `i` has (any state).
    pub fn containers_on(&self, i: usize) -> usize {
        self.nodes[i].workload.containers.len()
    }

    /// Checks that the running nodes run exactly what the desired state asks: for every service,
    /// one ready container of the current version per slot, each on an eligible node, replica
    /// counts per node within one of each other, nothing else. Returns the first violation.
    pub fn check_workload(&self) -> Result<(), String> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .collect();
        let Some(&probe) = running.first() else {
            return Ok(());
        };
        let desired = self.nodes[probe].replica.state();
        let views = self.nodes[probe]
            .membership
            .as_ref()
            .expect("running")
            .nodes();
        let facts = node_facts(&views, desired);
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for service in desired.services() {
            let eligible_nodes: Vec<NodeId> = facts
                .iter()
                .filter(|f| f.availability == Availability::Active)
                .filter(|f| eligible(&service.spec, f).is_ok())
                .map(|f| f.id)
                .collect();
            let expected: BTreeSet<SlotKey> = match service.spec.mode {
                Mode::Replicated => (1..=service.replicas).map(SlotKey::Replica).collect(),
                Mode::Global => eligible_nodes.iter().map(|id| SlotKey::Node(*id)).collect(),
            };
            let mut per_slot: BTreeMap<SlotKey, Vec<NodeId>> = BTreeMap::new();
            for &i in &running {
                for c in &self.nodes[i].workload.containers {
                    if c.service != service.name {
                        continue;
                    }
                    seen.insert(c.id.clone());
                    let ready = c.status == ContainerStatus::Running
                        && c.health.is_ready()
                        && c.version == service.version
                        && c.force == service.force;
                    if !ready {
                        return Err(format!(
                            "{}: container {} on node {i} is not ready: {:?}",
                            service.name, c.id, c.status
                        ));
                    }
                    per_slot.entry(c.slot).or_default().push(self.nodes[i].id);
                }
            }
            let max = service.spec.placement.max_replicas_per_node;
            let possible = max.map_or(u64::MAX, |m| m.saturating_mul(eligible_nodes.len() as u64));
            let wanted = (expected.len() as u64).min(possible) as usize;
            if per_slot.len() != wanted || !per_slot.keys().all(|s| expected.contains(s)) {
                return Err(format!(
                    "{}: {} slots run, {} expected ({:?})",
                    service.name,
                    per_slot.len(),
                    wanted,
                    per_slot.keys().collect::<Vec<_>>()
                ));
            }
            let mut per_node: BTreeMap<NodeId, u64> =
                eligible_nodes.iter().map(|n| (*n, 0)).collect();
            for (slot, nodes) in &per_slot {
                if nodes.len() != 1 {
                    return Err(format!(
                        "{} slot {slot} runs {} times",
                        service.name,
                        nodes.len()
                    ));
                }
                let Some(count) = per_node.get_mut(&nodes[0]) else {
                    return Err(format!(
                        "{} slot {slot} runs on an ineligible node",
                        service.name
                    ));
                };
                *count += 1;
            }
            if service.spec.mode == Mode::Replicated
                && max.is_none()
                && service.spec.placement.spread.is_empty()
            {
                let lo = per_node.values().min().copied().unwrap_or(0);
                let hi = per_node.values().max().copied().unwrap_or(0);
                if hi > lo + 1 {
                    return Err(format!("{}: spread {lo}..{hi} per node", service.name));
                }
            }
        }
        for &i in &running {
            for c in &self.nodes[i].workload.containers {
                if !seen.contains(&c.id) {
                    return Err(format!(
                        "node {i} runs {} of removed service {}",
                        c.id, c.service
                    ));
                }
            }
        }
        Ok(())
    }
}
