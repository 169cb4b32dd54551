//! The network verbs' answers (`network ls`, `network inspect`) and how a network is named.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::local::service_id;
use crate::desired::state::DesiredError;

/// The id `network ls` shows for a network: like a service's, derived from the name (shoal
/// networks have no id of their own), with a prefix so that a network and a service of the same
/// name do not share one.
pub fn network_id(name: &str) -> String {
    service_id(&format!("network/{name}"))
}

/// A network as `network ls` shows it. Field names are the JSON contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// Derived from the name ([`network_id`]), the same on every node.
    pub id: String,
    /// Full name.
    pub name: String,
    /// Always `overlay`.
    pub driver: String,
    /// Its range as this node's layout has it (`10.243.0.0/16`); empty while it is not usable
    /// (its explicit subnet collided with a concurrent creation's).
    pub subnet: String,
    /// Whether the subnet was given (`--subnet`, `ipam.config[0].subnet`) rather than taken
    /// from the default pool.
    pub explicit_subnet: bool,
    /// No traffic in or out of its range.
    pub internal: bool,
    /// Recorded only (see docs/networking.md).
    pub attachable: bool,
    /// Network labels.
    pub labels: BTreeMap<String, String>,
    /// The stack that created it (`stack rm` removes it); empty for `network create`.
    pub stack: String,
    /// Milliseconds since the epoch when it was created (its creation stamp's wall time).
    pub created_ms: u64,
    /// Live services attached to it, sorted: what makes `network rm` refuse.
    pub services: Vec<String>,
}

/// A network in full, for `network inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDetail {
    /// The summary.
    pub info: NetworkInfo,
    /// Each attached service with its address and the replicas reported on the network.
    pub attached: Vec<NetworkService>,
    /// Every node that holds an address slot, with its subnet of this network.
    pub peers: Vec<NetworkPeer>,
    /// What the layout could not give on this network (a collided subnet, no virtual address
    /// left), as text.
    pub problems: Vec<String>,
}

/// A service on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkService {
    /// Full name.
    pub name: String,
    /// Its virtual address here; None when the layout gave it none (or none yet).
    pub vip: Option<std::net::Ipv4Addr>,
    /// `vip` or `dnsrr`.
    pub endpoint_mode: String,
    /// Its aliases on this network.
    pub aliases: Vec<String>,
    /// Its replicas that reported an address on this network.
    pub tasks: Vec<NetworkTask>,
}

/// A replica's place on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkTask {
    /// `SERVICE.SLOT`.
    pub name: String,
    /// Task id.
    pub task_id: String,
    /// Container id, if it has one.
    pub container_id: String,
    /// Its address on the network.
    pub address: std::net::IpAddr,
    /// Name of its node (its short id if the node is no longer known).
    pub node: String,
    /// Its node's address.
    pub node_addr: Option<std::net::IpAddr>,
    /// `running`, `starting`, ...
    pub state: String,
}

/// A node's slot on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPeer {
    /// Node id.
    pub id: String,
    /// Node name; empty when membership does not know it (a removed node that still holds
    /// its slot).
    pub name: String,
    /// Its gossip address's IP, when known.
    pub addr: Option<std::net::IpAddr>,
    /// Its slot, the same on every network.
    pub slot: u16,
    /// Its subnet of this network; empty when the network is too small for its slot.
    pub subnet: String,
    /// Its bridge's address on this network (where its DNS server answers).
    pub gateway: Option<std::net::Ipv4Addr>,
}

/// Finds a network by name, full id, or unique id prefix (Docker's order: an exact id, then an
/// exact name, then a prefix of an id).
pub fn find_network<'a>(
    networks: &'a [NetworkInfo],
    query: &str,
) -> Result<&'a NetworkInfo, String> {
    if let Some(n) = networks.iter().find(|n| n.id == query) {
        return Ok(n);
    }
    if let Some(n) = networks.iter().find(|n| n.name == query) {
        return Ok(n);
    }
    let by_prefix: Vec<_> = networks
        .iter()
        .filter(|n| !query.is_empty() && n.id.starts_with(query))
        .collect();
    match &by_prefix[..] {
        [n] => Ok(n),
        [] => Err(DesiredError::UnknownNetwork(query.to_string()).to_string()),
        many => Err(format!(
            "network {query} is ambiguous ({} matches found based on ID prefix)",
            many.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str) -> NetworkInfo {
        NetworkInfo {
            id: network_id(name),
            name: name.into(),
            driver: "overlay".into(),
            subnet: String::new(),
            explicit_subnet: false,
            internal: false,
            attachable: false,
            labels: BTreeMap::new(),
            stack: String::new(),
            created_ms: 0,
            services: vec![],
        }
    }

    #[test]
    fn networks_are_found_by_id_name_or_unique_prefix() {
        let nets = [net("front"), net("back")];
        assert_eq!(find_network(&nets, "front").unwrap().name, "front");
        let id = network_id("back");
        assert_eq!(find_network(&nets, &id).unwrap().name, "back");
        assert_eq!(find_network(&nets, &id[..4]).unwrap().name, "back");
        assert_eq!(
            find_network(&nets, "nope").unwrap_err(),
            "network nope not found"
        );
        assert_eq!(
            find_network(&nets, "").unwrap_err(),
            "network  not found",
            "an empty query matches nothing"
        );
        // A network named like another one's id: the id wins, as in Docker.
        let tricky = [net("a"), net(&network_id("a"))];
        assert_eq!(find_network(&tricky, &network_id("a")).unwrap().name, "a");
        // Seventeen ids share a first hex digit somewhere: a one-digit prefix of it is
        // ambiguous.
        let many: Vec<NetworkInfo> = (0..17).map(|i| net(&format!("n{i}"))).collect();
        let digit = (0..17)
            .map(|i| &many[i].id[..1])
            .find(|d| many.iter().filter(|n| n.id.starts_with(d)).count() > 1)
            .unwrap();
        let err = find_network(&many, digit).unwrap_err();
        assert!(err.contains("is ambiguous"), "{err}");
        // Ids differ from the ids of services of the same name.
        assert_ne!(network_id("web"), crate::api::service_id("web"));
        assert_eq!(network_id("web").len(), 12);
    }
}
