//! shoal's service networks on the local engine: one bridge network per shoal network, with the
//! node's subnet of it (see `shoal_core::net`), and the attachment of replicas to them.
//!
//! - The engine network of shoal network `N` on node `X` is named `shoal-N-XXXXXXXXXXXX` (the
//!   node id's 12-digit prefix: agents sharing an engine each have their own), and labelled
//!   `io.shoal.network=N` and `io.shoal.node=X`.
//! - Masquerading is off (`com.docker.network.bridge.enable_ip_masquerade=false`): traffic to
//!   other nodes keeps the container's address, which their DNS and firewall rules rely on. The
//!   netplane (`src/agent/netplane/`) masquerades what leaves the cluster's networks instead.
//! - The MTU is [`BRIDGE_MTU`], so that a packet still fits once VXLAN has wrapped it.
//! - Docker's own `internal` flag is never set: it would cut traffic to the network's other
//!   nodes. An internal network is enforced by the netplane's rules.

use std::{collections::HashMap, net::Ipv4Addr};

use bollard::models::{
    EndpointSettings, Ipam, IpamConfig, NetworkConnectRequest, NetworkCreateRequest,
};
use shoal_core::{
    identity::NodeId,
    net::{Ipv4Net, LocalNetwork},
};

use super::{call, is_status, Docker, CALL_TIMEOUT};
use crate::runtime::{labels, RuntimeError};

/// Label holding the shoal network's name on its engine networks.
pub const NETWORK_LABEL: &str = "io.shoal.network";
/// MTU of the bridges: 1500 less VXLAN's 50 bytes of headers.
pub const BRIDGE_MTU: u32 = 1450;
const PREFIX: &str = "shoal-";

/// The engine network's name for shoal network `network` on `node`.
pub fn engine_network_name(network: &str, node: NodeId) -> String {
    format!("{PREFIX}{network}-{}", node.short())
}

/// The shoal network an engine network's name stands for (any node's), if it is one of
/// [`engine_network_name`]'s.
pub fn shoal_network_of(engine_name: &str) -> Option<&str> {
    let rest = engine_name.strip_prefix(PREFIX)?;
    let split = rest.len().checked_sub(13)?;
    let (network, suffix) = rest.split_at(split);
    let hex = suffix.strip_prefix('-')?;
    (!network.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(network)
}

/// An engine network of this node, as inspected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineNetwork {
    /// The shoal network.
    pub network: String,
    /// The engine's name for it.
    pub name: String,
    /// Its subnet and gateway, if it has one.
    pub subnet: Option<(Ipv4Net, Option<Ipv4Addr>)>,
    /// Containers attached to it (ids).
    pub containers: Vec<String>,
}

/// What [`Docker::ensure_network`] found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ensured {
    /// It existed with the right subnet.
    Present,
    /// It was created.
    Created,
    /// It had another subnet and no container: it was made again.
    Recreated {
        /// The subnet it had.
        was: String,
    },
}

/// A network that [`Docker::ensure_network`] could not put right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// The engine network has another subnet and containers are attached: they must be removed
    /// (replaced) first; the engine cannot renumber a network in use.
    #[error(
        "network {network}: the engine's {name} has subnet {found}, not {want}, and {} \
         container(s) attached; replace them first",
        containers.len()
    )]
    InUse {
        /// The shoal network.
        network: String,
        /// The engine network.
        name: String,
        /// Its subnet now.
        found: String,
        /// The subnet it must have.
        want: Ipv4Net,
        /// The containers attached.
        containers: Vec<String>,
    },
    /// The engine refused or failed.
    #[error("network {network}: {message}")]
    Engine {
        /// The shoal network.
        network: String,
        /// The engine's message.
        message: String,
    },
}

impl Docker {
    /// Makes sure the engine has `net`'s bridge for `node`, with its subnet and gateway: nothing
    /// to do if it does; created if missing; made again if it has another subnet (the layout
    /// moved it) and nothing is attached. Idempotent.
    pub async fn ensure_network(
        &self,
        node: NodeId,
        net: &LocalNetwork,
    ) -> Result<Ensured, NetworkError> {
        let name = engine_network_name(&net.network, node);
        let engine = |message: String| NetworkError::Engine {
            network: net.network.clone(),
            message,
        };
        let found = self
            .inspect_network(node, &name)
            .await
            .map_err(|e| engine(e.0))?;
        let mut outcome = Ensured::Created;
        if let Some(found) = found {
            if found
                .subnet
                .is_some_and(|(s, g)| s == net.subnet && g == Some(net.gateway))
            {
                return Ok(Ensured::Present);
            }
            let was = found
                .subnet
                .map_or_else(|| "none".to_string(), |(s, _)| s.to_string());
            if !found.containers.is_empty() {
                return Err(NetworkError::InUse {
                    network: net.network.clone(),
                    name,
                    found: was,
                    want: net.subnet,
                    containers: found.containers,
                });
            }
            tracing::info!(network = %net.network, was = %was, now = %net.subnet, "docker: network moved, making it again");
            self.remove_engine_network(&name)
                .await
                .map_err(|e| engine(e.0))?;
            outcome = Ensured::Recreated { was };
        }
        let client = self.client().await.map_err(|e| engine(e.0))?;
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some(net.subnet.to_string()),
                    gateway: Some(net.gateway.to_string()),
                    ..Default::default()
                }]),
                options: None,
            }),
            options: Some(HashMap::from([
                (
                    "com.docker.network.bridge.enable_ip_masquerade".to_string(),
                    "false".to_string(),
                ),
                (
                    "com.docker.network.driver.mtu".to_string(),
                    BRIDGE_MTU.to_string(),
                ),
            ])),
            labels: Some(HashMap::from([
                (NETWORK_LABEL.to_string(), net.network.clone()),
                (labels::NODE.to_string(), node.to_string()),
            ])),
            ..Default::default()
        };
        match call(
            "create network",
            CALL_TIMEOUT,
            client.create_network(request),
        )
        .await
        {
            Ok(_) => {
                tracing::info!(network = %net.network, subnet = %net.subnet, "docker: network created");
                Ok(outcome)
            }
            // Another call made it meanwhile; the next ensure checks its subnet.
            Err(e) if is_status(&e, 409) => Ok(Ensured::Present),
            Err(e) => Err(engine(e.message)),
        }
    }

    /// The engine networks of `node` (shoal's, by their labels).
    pub async fn list_networks(&self, node: NodeId) -> Result<Vec<EngineNetwork>, RuntimeError> {
        let client = self.client().await?;
        let filters = HashMap::from([("label", vec![format!("{}={node}", labels::NODE)])]);
        let options = bollard::query_parameters::ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let listed = call(
            "list networks",
            CALL_TIMEOUT,
            client.list_networks(Some(options)),
        )
        .await
        .map_err(RuntimeError::from)?;
        let mut out = Vec::new();
        for n in listed {
            let Some(name) = n.name else { continue };
            if n.labels
                .as_ref()
                .and_then(|l| l.get(NETWORK_LABEL))
                .is_none()
            {
                continue;
            }
            // The listing does not show attached containers: inspect each.
            if let Some(found) = self.inspect_network(node, &name).await? {
                out.push(found);
            }
        }
        out.sort_by(|a, b| a.network.cmp(&b.network));
        Ok(out)
    }

    /// One engine network of `node`; `None` if there is none by that name (or it is not
    /// shoal's, or another node's).
    pub async fn inspect_network(
        &self,
        node: NodeId,
        name: &str,
    ) -> Result<Option<EngineNetwork>, RuntimeError> {
        let client = self.client().await?;
        let inspect = match call(
            "inspect network",
            CALL_TIMEOUT,
            client.inspect_network(name, None),
        )
        .await
        {
            Ok(i) => i,
            Err(e) if is_status(&e, 404) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let labels = inspect.labels.unwrap_or_default();
        let ours = labels.get(labels::NODE).map(String::as_str) == Some(&node.to_string());
        let Some(network) = labels.get(NETWORK_LABEL).filter(|_| ours) else {
            return Ok(None);
        };
        let subnet = inspect
            .ipam
            .and_then(|i| i.config)
            .into_iter()
            .flatten()
            .find_map(|c| {
                let subnet = c.subnet?.parse::<Ipv4Net>().ok()?;
                let gateway = c.gateway.and_then(|g| g.parse().ok());
                Some((subnet, gateway))
            });
        let mut containers: Vec<String> =
            inspect.containers.unwrap_or_default().into_keys().collect();
        containers.sort();
        Ok(Some(EngineNetwork {
            network: network.clone(),
            name: name.to_string(),
            subnet,
            containers,
        }))
    }

    /// Removes shoal network `network`'s bridge of `node`, unless containers are attached (then
    /// an error names them). Gone already counts as removed.
    pub async fn remove_network(&self, node: NodeId, network: &str) -> Result<(), NetworkError> {
        let name = engine_network_name(network, node);
        let engine = |message: String| NetworkError::Engine {
            network: network.to_string(),
            message,
        };
        match self
            .inspect_network(node, &name)
            .await
            .map_err(|e| engine(e.0))?
        {
            None => Ok(()),
            Some(found) if !found.containers.is_empty() => Err(engine(format!(
                "{} container(s) still attached to {name}",
                found.containers.len()
            ))),
            Some(_) => self
                .remove_engine_network(&name)
                .await
                .map_err(|e| engine(e.0)),
        }
    }

    /// Brings the engine's networks of `node` to `want`: ensures each, and removes the shoal
    /// networks of `node` that `want` lacks and no container uses. Returns what it could not do;
    /// every network is attempted whatever happens to the others.
    pub async fn reconcile_networks(
        &self,
        node: NodeId,
        want: &[LocalNetwork],
    ) -> Vec<NetworkError> {
        let mut problems = Vec::new();
        for net in want {
            if let Err(e) = self.ensure_network(node, net).await {
                problems.push(e);
            }
        }
        match self.list_networks(node).await {
            Ok(existing) => {
                for found in existing {
                    if want.iter().any(|w| w.network == found.network)
                        || !found.containers.is_empty()
                    {
                        continue;
                    }
                    if let Err(e) = self.remove_network(node, &found.network).await {
                        problems.push(e);
                    }
                }
            }
            Err(e) => problems.push(NetworkError::Engine {
                network: "*".into(),
                message: e.0,
            }),
        }
        problems
    }

    async fn remove_engine_network(&self, name: &str) -> Result<(), RuntimeError> {
        let client = self.client().await?;
        match call("remove network", CALL_TIMEOUT, client.remove_network(name)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The engine networks a replica of `networks` (shoal names, in order) attaches to, with
    /// each one's gateway; an error if one is not on this node yet.
    pub(super) async fn attachments(
        &self,
        node: NodeId,
        networks: &[String],
    ) -> Result<Vec<(String, Option<Ipv4Addr>)>, RuntimeError> {
        let mut out = Vec::new();
        for network in networks {
            let name = engine_network_name(network, node);
            match self.inspect_network(node, &name).await? {
                Some(found) => out.push((name, found.subnet.and_then(|(_, g)| g))),
                None => {
                    return Err(RuntimeError(format!(
                        "network {network} is not on this node yet (no engine network {name})"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Connects `container` to the engine networks after the first (engines before API 1.44
    /// take one network at create time).
    pub(super) async fn connect_rest(
        &self,
        container: &str,
        rest: &[(String, Option<Ipv4Addr>)],
    ) -> Result<(), RuntimeError> {
        let client = self.client().await?;
        for (name, _) in rest {
            let request = NetworkConnectRequest {
                container: container.to_string(),
                endpoint_config: Some(EndpointSettings::default()),
            };
            call(
                "connect network",
                CALL_TIMEOUT,
                client.connect_network(name, request),
            )
            .await
            .map_err(|e| RuntimeError(format!("connect to {name}: {}", e.message)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let node = NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let name = engine_network_name("app_front-x.y", node);
        assert_eq!(name, "shoal-app_front-x.y-0123456789ab");
        assert_eq!(shoal_network_of(&name), Some("app_front-x.y"));
        assert_eq!(shoal_network_of("bridge"), None);
        assert_eq!(shoal_network_of("shoal-0123456789ab"), None);
        assert_eq!(shoal_network_of("shoal--0123456789ab"), None);
        assert_eq!(shoal_network_of("shoal-a-0123456789zz"), None);
    }
}
