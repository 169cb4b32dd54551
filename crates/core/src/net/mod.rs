//! Service networks, the pure part: address allocation ([`layout`]), what the kernel of a node
//! must hold to carry them ([`plane`]: routes, VXLAN neighbours, firewall and NAT rules, the
//! virtual addresses' balancing) and the service DNS ([`dns`]). The agent carries these out
//! (`src/agent/netplane/`, `src/agent/dns.rs`, `src/runtime/docker/network.rs`); the design, the
//! packet path and the limits are in `docs/networking.md`.

pub mod dns;
#[cfg(test)]
mod fixture;
mod ipv4;
pub mod layout;
pub mod plane;
pub mod services;

pub use ipv4::{Ipv4Net, Ipv4NetError};
pub use layout::Layout;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::identity::NodeId;

/// A service network as one node's engine must have it: a bridge with the node's subnet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LocalNetwork {
    /// The network's full name.
    pub network: String,
    /// The node's subnet of it.
    pub subnet: Ipv4Net,
    /// The bridge's own address (the subnet's `.1`): the replicas' gateway and DNS server.
    pub gateway: Ipv4Addr,
}

/// The networks `node` must have on its engine: every usable network of the layout in which
/// it has a subnet (a network too small for its slot is left out). Sorted by name.
pub fn local_networks(layout: &Layout, node: NodeId) -> Vec<LocalNetwork> {
    let Some(slot) = layout.slots.get(&node) else {
        return Vec::new();
    };
    layout
        .networks
        .iter()
        .filter_map(|(name, net)| {
            let subnet = net.node_subnet(*slot)?;
            Some(LocalNetwork {
                network: name.clone(),
                subnet,
                gateway: subnet.nth(1)?,
            })
        })
        .collect()
}
