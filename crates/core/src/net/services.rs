//! The services as the data plane sees them: which names each answers to on which network, its
//! virtual address there, and the addresses of its ready replicas. Built from the desired state,
//! the layout, the observed state and membership; read by the DNS resolver and the VIP plan.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use serde::{Deserialize, Serialize};

use super::Layout;
use crate::{
    desired::{spec::EndpointMode, state::ServiceView},
    identity::NodeId,
    membership::{NodeStatus, NodeView},
    observed::{ObservedState, TaskState},
};

/// One service on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Aliases on this network.
    pub aliases: Vec<String>,
    /// Its virtual address here, if the layout gave it one.
    pub vip: Option<Ipv4Addr>,
    /// Ready replicas' addresses here, sorted.
    pub ready: Vec<Ipv4Addr>,
}

/// One service, for the data plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceNet {
    /// Full name, `STACK_SERVICE`.
    pub name: String,
    /// The name within its stack (`SERVICE`): answered on its networks, as Swarm's stack deploy
    /// makes it an alias on each.
    pub short: String,
    /// VIP or DNS round robin.
    pub mode: EndpointMode,
    /// Its networks (usable ones only), by name.
    pub networks: BTreeMap<String, Membership>,
}

/// Every service's place on the networks, and who owns each replica address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetView {
    /// Services by full name.
    pub services: BTreeMap<String, ServiceNet>,
    /// The service of every replica address currently reported (ready or not): tells the DNS
    /// server which networks an asking container is on.
    pub owners: BTreeMap<Ipv4Addr, String>,
    /// The usable networks' ranges, by name.
    pub ranges: BTreeMap<String, super::Ipv4Net>,
}

impl NetView {
    /// The view of `services` (live ones) given the layout, what every node reports and how
    /// membership sees the nodes. A replica is ready, as the ingress counts it, when it runs,
    /// its healthcheck (if any) passes, and its node is not declared down or gone.
    pub fn build(
        services: &[ServiceView],
        layout: &Layout,
        observed: &ObservedState,
        nodes: &[NodeView],
    ) -> NetView {
        let status: BTreeMap<NodeId, NodeStatus> =
            nodes.iter().map(|v| (v.identity.id, v.status)).collect();
        let tasks = observed.by_service();
        let mut view = NetView {
            ranges: layout
                .networks
                .iter()
                .map(|(n, l)| (n.clone(), l.range))
                .collect(),
            ..NetView::default()
        };
        for s in services {
            let short = s
                .name
                .strip_prefix(&s.stack)
                .and_then(|r| r.strip_prefix('_'))
                .filter(|r| !r.is_empty())
                .unwrap_or(&s.name)
                .to_string();
            let mut networks: BTreeMap<String, Membership> = BTreeMap::new();
            for a in s.spec.network_attachments() {
                if !layout.networks.contains_key(&a.network) {
                    continue;
                }
                networks.insert(
                    a.network.clone(),
                    Membership {
                        aliases: a.aliases.clone(),
                        vip: layout.vip(&a.network, &s.name),
                        ready: Vec::new(),
                    },
                );
            }
            let mut ready: BTreeMap<&str, BTreeSet<Ipv4Addr>> = BTreeMap::new();
            for (node, task) in tasks.of(&s.name) {
                let alive = matches!(
                    status.get(node),
                    Some(NodeStatus::Ready | NodeStatus::Suspect)
                );
                let is_ready = alive
                    && task.desired_running
                    && task.state == TaskState::Running
                    && task.health.is_ready();
                for (network, ip) in &task.addresses {
                    let IpAddr::V4(ip) = ip else { continue };
                    if alive {
                        view.owners.insert(*ip, s.name.clone());
                    }
                    if is_ready && networks.contains_key(network) {
                        ready.entry(network).or_default().insert(*ip);
                    }
                }
            }
            for (network, ips) in ready {
                if let Some(m) = networks.get_mut(network) {
                    m.ready = ips.into_iter().collect();
                }
            }
            view.services.insert(
                s.name.clone(),
                ServiceNet {
                    name: s.name.clone(),
                    short,
                    mode: s.spec.endpoint_mode,
                    networks,
                },
            );
        }
        view
    }

    /// The networks the container at `ip` is on: every network of the service whose replica
    /// has that address, plus the one whose range holds it (a replica just started may not be
    /// reported yet).
    pub fn networks_of(&self, ip: Ipv4Addr) -> BTreeSet<&str> {
        let mut out: BTreeSet<&str> = self
            .ranges
            .iter()
            .filter(|(_, r)| r.contains(ip))
            .map(|(n, _)| n.as_str())
            .collect();
        if let Some(service) = self.owners.get(&ip).and_then(|s| self.services.get(s)) {
            out.extend(service.networks.keys().map(String::as_str));
        }
        out
    }
}
