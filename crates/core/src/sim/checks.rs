//! What a test asks of the simulated cluster: how each node sees it, and whether it runs exactly
//! what the desired state asks for.

use std::collections::{BTreeMap, BTreeSet};

use super::Sim;
use crate::{
    desired::{
        spec::{Availability, Mode},
        state::DesiredState,
    },
    identity::NodeId,
    membership::{NodeStatus, NodeView},
    observed::SlotKey,
    reconcile::{placement::eligible, plan::node_facts},
    routing::routes::RoutingTable,
    runtime::ContainerStatus,
};

impl Sim {
    pub fn view(&self, i: usize) -> Vec<NodeView> {
        self.nodes[i]
            .node
            .as_ref()
            .map(|n| n.members())
            .unwrap_or_default()
    }

    /// Whether every running node sees exactly the running nodes as ready and every other node
    /// it knows of as `other` (down or left).
    pub fn converged(&self, other: NodeStatus) -> bool {
        let running: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.node.is_some())
            .map(|n| n.id)
            .collect();
        self.nodes.iter().filter_map(|n| n.node.as_ref()).all(|m| {
            let views = m.members();
            let ready: BTreeSet<NodeId> = views
                .iter()
                .filter(|v| v.status == NodeStatus::Ready)
                .map(|v| v.identity.id)
                .collect();
            ready == running
                && views
                    .iter()
                    .filter(|v| !running.contains(&v.identity.id))
                    .all(|v| v.status == other)
        })
    }

    /// Whether every running node sees node `target` with `status` (or does not know it at all,
    /// when `status` is down or left and it never met it).
    pub fn all_see(&self, target: usize, status: NodeStatus) -> bool {
        let id = self.nodes[target].id;
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != target && n.node.is_some())
            .all(|(_, n)| {
                n.node
                    .as_ref()
                    .expect("filtered")
                    .members()
                    .iter()
                    .find(|v| v.identity.id == id)
                    .map(|v| v.status == status)
                    .unwrap_or(false)
            })
    }

    /// Node `i`'s failure-detector local health (0 when it is not running).
    pub fn local_health(&self, i: usize) -> u32 {
        self.nodes[i].node.as_ref().map_or(0, |n| n.local_health())
    }

    /// Inputs the running nodes refused (malformed or stale datagrams, bad gossip items).
    pub fn rejected(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .map(|n| n.counters().datagrams_rejected + n.counters().gossip_rejected)
            .sum()
    }

    /// Node `i`'s desired state (kept even while it is down, like its data dir).
    pub fn desired(&self, i: usize) -> &DesiredState {
        match &self.nodes[i].node {
            Some(node) => node.desired(),
            None => &self.nodes[i].desired_disk,
        }
    }

    /// Whether every running node holds the same desired state.
    pub fn desired_converged(&self) -> bool {
        let mut digests = self
            .nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .map(|n| n.desired_digest());
        let Some(first) = digests.next() else {
            return true;
        };
        digests.all(|d| d == first)
    }

    /// The routing table node `i` last handed its ingress.
    pub fn routes(&self, i: usize) -> &RoutingTable {
        &self.nodes[i].routes
    }

    /// Checks that every running node's ingress routes each published port to exactly the
    /// replicas that run and are ready anywhere (what a quiet cluster must reach). Returns the
    /// first difference.
    pub fn check_routes(&self) -> Result<(), String> {
        let ready: BTreeSet<std::net::SocketAddr> = (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .flat_map(|i| self.nodes[i].runtime.containers())
            .filter(|c| c.status == ContainerStatus::Running && c.health.is_ready())
            .flat_map(|c| c.endpoints.into_iter().map(|e| e.addr))
            .collect();
        for i in (0..self.nodes.len()).filter(|&i| self.is_running(i)) {
            let routed: BTreeSet<std::net::SocketAddr> = self.nodes[i]
                .routes
                .routes
                .values()
                .flat_map(|r| r.backends.iter().map(|b| b.addr))
                .collect();
            if routed != ready {
                let extra: Vec<_> = routed.difference(&ready).collect();
                let missing: Vec<_> = ready.difference(&routed).collect();
                return Err(format!(
                    "node {i} routes to {extra:?} which are not ready, and not to {missing:?}"
                ));
            }
        }
        Ok(())
    }

    pub fn ready_replicas(&self, service: &str) -> usize {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .flat_map(|i| self.nodes[i].runtime.containers())
            .filter(|c| {
                c.service == service && c.status == ContainerStatus::Running && c.health.is_ready()
            })
            .count()
    }

    /// Running containers of `service` (ready or not, current version or not) on running nodes.
    pub fn running_replicas(&self, service: &str) -> usize {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .flat_map(|i| self.nodes[i].runtime.containers())
            .filter(|c| c.service == service && c.status == ContainerStatus::Running)
            .count()
    }

    /// One line per running node: its containers of `service` as `slot:version-wall:health`, for
    /// a failing test to show what ran.
    pub fn describe(&self, service: &str) -> String {
        let mut out = String::new();
        for i in (0..self.nodes.len()).filter(|&i| self.is_running(i)) {
            let cs: Vec<String> = self.nodes[i]
                .runtime
                .containers()
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
        self.nodes[i].runtime.containers().len()
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
        let node = self.nodes[probe].node.as_ref().expect("running");
        let desired = node.desired();
        let views = node.members();
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
                for c in &self.nodes[i].runtime.containers() {
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
            for c in &self.nodes[i].runtime.containers() {
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
