//! The network verbs' answers (`network create|ls|inspect|rm`): reads come from this node's
//! replica of the desired state, its layout and the replicas the nodes report; writes go
//! through [`super::changes`] like every other change, so they are durable here and pushed
//! before the CLI hears back.

use std::collections::BTreeMap;

use super::{Node, RequestId};
use crate::{
    api::{
        find_network, network_id, NetworkDetail, NetworkInfo, NetworkPeer, NetworkService,
        NetworkTask, Request, Response,
    },
    desired::state::{DesiredState, NetworkView},
    identity::NodeId,
    net::{layout::LayoutProblem, Layout},
};

impl Node {
    /// Answers a `Network*` request; other requests are not this function's.
    pub(super) fn answer_network(&mut self, id: RequestId, request: Request, now_ms: u64) {
        let answer = match request {
            Request::NetworkList => Response::Networks(self.network_infos()),
            Request::NetworkInspect { network } => {
                let infos = self.network_infos();
                match find_network(&infos, &network) {
                    Ok(info) => Response::Network(Box::new(self.network_detail(info.clone()))),
                    Err(e) => Response::Error(e),
                }
            }
            Request::NetworkCreate { def } => {
                let action = format!("Creating network {}", def.name);
                self.apply_change(
                    Some(id),
                    now_ms,
                    move |s, hlc| s.create_network(def, hlc),
                    move |_, _| vec![action],
                );
                return;
            }
            Request::NetworkRemove { network } => {
                // The query may be an id: the write names the network it resolves to here.
                let name = match find_network(&self.network_infos(), &network) {
                    Ok(info) => info.name.clone(),
                    Err(e) => {
                        self.effects.api_replies.push((id, Response::Error(e)));
                        return;
                    }
                };
                let action = format!("Removing network {name}");
                self.apply_change(
                    Some(id),
                    now_ms,
                    move |s, hlc| s.remove_network(&name, hlc),
                    move |_, _| vec![action],
                );
                return;
            }
            other => Response::Error(format!("not a network request: {other:?}")),
        };
        self.effects.api_replies.push((id, answer));
    }

    /// Every live network, sorted by name.
    fn network_infos(&self) -> Vec<NetworkInfo> {
        let state = self.replica.state();
        let layout = state.layout();
        state
            .networks()
            .into_iter()
            .map(|view| network_info(state, &layout, view))
            .collect()
    }

    fn network_detail(&self, info: NetworkInfo) -> NetworkDetail {
        let state = self.replica.state();
        let layout = state.layout();
        let nodes: BTreeMap<NodeId, (String, std::net::IpAddr)> = self
            .membership
            .nodes()
            .iter()
            .map(|v| {
                (
                    v.identity.id,
                    (v.identity.meta.name.clone(), v.identity.addr.ip()),
                )
            })
            .collect();
        let net = layout.networks.get(&info.name);
        let mut attached = Vec::new();
        for service in state
            .services()
            .into_iter()
            .filter(|s| info.services.contains(&s.name))
        {
            let aliases = service
                .spec
                .network_attachments()
                .into_iter()
                .find(|a| a.network == info.name)
                .map(|a| a.aliases)
                .unwrap_or_default();
            let mut tasks = Vec::new();
            for report in self.workload.observed.reports() {
                let (node, node_addr) = match nodes.get(&report.node) {
                    Some((name, addr)) => (name.clone(), Some(*addr)),
                    None => (report.node.short(), None),
                };
                for t in report.tasks.iter().filter(|t| t.service == service.name) {
                    for (network, address) in &t.addresses {
                        if *network == info.name {
                            tasks.push(NetworkTask {
                                name: format!("{}.{}", t.service, t.slot),
                                task_id: t.task_id.clone(),
                                container_id: t.container_id.clone().unwrap_or_default(),
                                address: *address,
                                node: node.clone(),
                                node_addr,
                                state: t.state.as_str().to_string(),
                            });
                        }
                    }
                }
            }
            tasks.sort_by(|a, b| (&a.name, a.address).cmp(&(&b.name, b.address)));
            attached.push(NetworkService {
                vip: net.and_then(|n| n.vips.get(&service.name).copied()),
                endpoint_mode: service.spec.endpoint_mode.as_str().to_string(),
                aliases,
                tasks,
                name: service.name,
            });
        }
        let peers = layout
            .slots
            .iter()
            .map(|(node, slot)| {
                let known = nodes.get(node);
                let subnet = net.and_then(|n| n.node_subnet(*slot));
                NetworkPeer {
                    id: node.to_string(),
                    name: known.map(|k| k.0.clone()).unwrap_or_default(),
                    addr: known.map(|k| k.1),
                    slot: *slot,
                    subnet: subnet.map(|s| s.to_string()).unwrap_or_default(),
                    gateway: subnet.and_then(|s| s.nth(1)),
                }
            })
            .collect();
        let problems = layout
            .problems
            .iter()
            .filter(|p| concerns(p, &info.name))
            .map(|p| p.to_string())
            .collect();
        NetworkDetail {
            info,
            attached,
            peers,
            problems,
        }
    }
}

/// The summary of one live network.
fn network_info(state: &DesiredState, layout: &Layout, view: NetworkView) -> NetworkInfo {
    NetworkInfo {
        id: network_id(&view.name),
        driver: view.spec.driver.clone(),
        subnet: layout
            .networks
            .get(&view.name)
            .map(|n| n.range.to_string())
            .unwrap_or_default(),
        explicit_subnet: view.spec.subnet.is_some(),
        internal: view.spec.internal,
        attachable: view.spec.attachable,
        labels: view.spec.labels,
        stack: view.spec.stack.unwrap_or_default(),
        created_ms: view.created.wall_ms,
        services: state.network_services(&view.name),
        name: view.name,
    }
}

/// Whether `problem` is one `network inspect NETWORK` should show: the network's own, and a
/// node left without a slot (it has no subnet on any network).
fn concerns(problem: &LayoutProblem, network: &str) -> bool {
    match problem {
        LayoutProblem::Overlap { network: n, .. }
        | LayoutProblem::VipsExhausted { network: n, .. }
        | LayoutProblem::PoolExhausted(n) => n == network,
        LayoutProblem::SlotsExhausted(_) => true,
    }
}
