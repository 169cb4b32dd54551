//! Networks, node address slots and virtual-address claims in the desired state.
//!
//! # Registers
//!
//! A network has a spec register, a `range` register (the range its creator claimed; its stamp
//! is the network's creation stamp), one register per attached service holding that service's
//! virtual-address claim, and a `deleted` flag. Every node that ever took part has one register
//! holding its slot claim (`None` once forgotten). How claims become addresses, and why
//! concurrent claims converge, is told in [`crate::net::layout`].
//!
//! # What the operations do
//!
//! - `stack deploy` creates each network the stack's services use that does not exist yet:
//!   `STACK_KEY` for a declared network, `STACK_default` for services that name none (as Swarm
//!   does). An `external` network must exist already. A network that exists is used as it is,
//!   even if the file now declares other settings (Swarm does the same).
//! - `network create` creates one network; `network rm` removes one no live service uses.
//! - `stack rm` also removes the stack's networks that no live service of another stack uses.
//! - Networks are never updated. Tombstones stay, as services' do.
//!
//! Concurrent writes: a network created on both sides of a partition is one network after the
//! merge (the later creation's spec and range win). A `network rm` concurrent with a deploy that
//! attaches a service to that network (made on a node that still saw it) wins: the service then
//! names a network that does not exist, and runs without it until the stack is deployed again,
//! which re-creates it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    error::check_keys,
    reg::{check_map, check_reg, map_marker, marker, merge_map, merge_reg, put, value, Reg},
    DesiredError, DesiredState, MergeConflict,
};
use crate::{
    desired::{
        hlc::Hlc,
        spec::{NetworkAttachment, NetworkDef, NetworkSpec, ServiceDef, OVERLAY_DRIVER},
    },
    identity::NodeId,
    net::{
        layout::{HostClaim, NetworkClaim, ServiceClaim, MAX_SUBNET_LEN, MIN_SUBNET_LEN},
        Ipv4Net, Layout,
    },
};

/// Every register of one network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct NetworkEntry {
    pub spec: Option<Reg<NetworkSpec>>,
    /// The claimed range; its stamp is the creation stamp.
    pub range: Option<Reg<Ipv4Net>>,
    /// Virtual-address claims by service: the index in the range's last /24.
    pub vips: BTreeMap<String, Reg<u16>>,
    pub deleted: Option<Reg<bool>>,
}

impl NetworkEntry {
    pub fn is_live(&self) -> bool {
        matches!(&self.deleted, Some(r) if !r.val) && self.range.is_some()
    }

    pub fn is_empty(&self) -> bool {
        *self == NetworkEntry::default()
    }

    pub fn spec(&self) -> NetworkSpec {
        value(&self.spec)
    }

    pub fn updated(&self) -> Option<Hlc> {
        marker(&self.spec)
            .max(marker(&self.range))
            .max(marker(&self.deleted))
            .max(map_marker(&self.vips))
    }

    pub fn merge(&mut self, other: NetworkEntry) -> bool {
        merge_reg(&mut self.spec, other.spec)
            | merge_reg(&mut self.range, other.range)
            | merge_map(&mut self.vips, other.vips)
            | merge_reg(&mut self.deleted, other.deleted)
    }

    pub fn check(&self, name: &str, other: &NetworkEntry) -> Result<(), MergeConflict> {
        let what = |f: &str| format!("network {name}.{f}");
        check_reg(&what("spec"), self.spec.as_ref(), other.spec.as_ref())?;
        check_reg(&what("range"), self.range.as_ref(), other.range.as_ref())?;
        check_reg(
            &what("deleted"),
            self.deleted.as_ref(),
            other.deleted.as_ref(),
        )?;
        check_map(&what("vips"), &self.vips, &other.vips)
    }

    fn claim(&self, name: &str) -> Option<NetworkClaim> {
        let range = self.range.as_ref()?;
        let spec = self.spec();
        Some(NetworkClaim {
            name: name.to_string(),
            explicit: spec.subnet,
            claimed: range.val,
            at: range.marker,
            internal: spec.internal,
            vips: self
                .vips
                .iter()
                .map(|(s, r)| (s.clone(), (r.val, r.marker)))
                .collect(),
        })
    }
}

/// Merges slot claims of nodes.
pub(super) fn merge_hosts(
    mine: &mut BTreeMap<NodeId, Reg<Option<u16>>>,
    theirs: BTreeMap<NodeId, Reg<Option<u16>>>,
) -> bool {
    merge_map(mine, theirs)
}

/// A live network as `network ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    /// Full name.
    pub name: String,
    /// Its settings.
    pub spec: NetworkSpec,
    /// When it was created.
    pub created: Hlc,
}

impl DesiredState {
    /// Every live network, sorted by name.
    pub fn networks(&self) -> Vec<NetworkView> {
        self.networks
            .iter()
            .filter(|(_, e)| e.is_live())
            .map(|(name, e)| NetworkView {
                name: name.clone(),
                spec: e.spec(),
                created: e.range.as_ref().map_or(Hlc::ZERO, |r| r.marker),
            })
            .collect()
    }

    /// One live network.
    pub fn network(&self, name: &str) -> Option<NetworkView> {
        self.networks().into_iter().find(|n| n.name == name)
    }

    /// The live services attached to `network`, sorted: those that keep `network rm` from
    /// removing it.
    pub fn network_services(&self, network: &str) -> Vec<String> {
        self.network_users(network, |_| true)
    }

    /// How many networks are stored, tombstones included.
    pub fn stored_networks(&self) -> usize {
        self.networks.len()
    }

    /// When a live service was created (see `ServiceEntry::created`).
    pub fn service_created(&self, name: &str) -> Option<Hlc> {
        self.services
            .get(name)
            .filter(|e| e.is_live())
            .and_then(|e| e.created())
    }

    /// The slot `node` claimed, if it has a claim.
    pub fn host_claim(&self, node: NodeId) -> Option<u16> {
        self.hosts.get(&node).and_then(|r| r.val)
    }

    /// Every address of the service networks as this state has them (see
    /// [`crate::net::layout`]). Every node holding the same state computes the same layout.
    pub fn layout(&self) -> Layout {
        let networks: Vec<NetworkClaim> = self
            .networks
            .iter()
            .filter(|(_, e)| e.is_live())
            .filter_map(|(name, e)| e.claim(name))
            .collect();
        let hosts: Vec<HostClaim> = self
            .hosts
            .iter()
            .filter_map(|(node, r)| {
                r.val.map(|slot| HostClaim {
                    node: *node,
                    slot,
                    at: r.marker,
                })
            })
            .collect();
        let services: Vec<ServiceClaim> = self
            .services
            .iter()
            .filter(|(_, e)| e.is_live())
            .map(|(name, e)| ServiceClaim {
                name: name.clone(),
                created: e.created().unwrap_or(Hlc::ZERO),
                networks: e
                    .spec()
                    .network_attachments()
                    .into_iter()
                    .map(|a| a.network)
                    .collect(),
            })
            .collect();
        Layout::compute(&networks, &hosts, &services)
    }

    /// `docker network create`: a network no stack owns.
    pub fn create_network(
        &mut self,
        def: NetworkDef,
        hlc: Hlc,
    ) -> Result<DesiredState, DesiredError> {
        if def.external {
            return Err(DesiredError::InvalidNetwork {
                network: def.name,
                reason: "only a stack may declare a network external".into(),
            });
        }
        if self.networks.get(&def.name).is_some_and(|e| e.is_live()) {
            return Err(DesiredError::NetworkExists(def.name));
        }
        let mut spec = def.spec;
        spec.stack = None;
        let mut delta = DesiredState::default();
        let mut layout = self.layout();
        self.write_network(&mut delta, &mut layout, &def.name, spec, hlc)?;
        self.apply(delta)
    }

    /// `docker network rm`: refused while a live service attaches to it.
    pub fn remove_network(&mut self, name: &str, hlc: Hlc) -> Result<DesiredState, DesiredError> {
        let entry = match self.networks.get(name) {
            Some(e) if e.is_live() => e,
            _ => return Err(DesiredError::UnknownNetwork(name.to_string())),
        };
        let users = self.network_users(name, |_| true);
        if !users.is_empty() {
            return Err(DesiredError::NetworkInUse {
                network: name.to_string(),
                services: users,
            });
        }
        let mut d = NetworkEntry::default();
        put(&mut d.deleted, &entry.deleted, true, true, hlc);
        let mut delta = DesiredState::default();
        delta.networks.insert(name.to_string(), d);
        self.apply(delta)
    }

    /// Records that `node` takes part, claiming the lowest free slot (its subnets on every
    /// network follow from it). Writes nothing when the node already holds a slot that is its
    /// own in the layout; rewrites a claim that collided with a concurrent one. The node itself
    /// calls it once it has its peers' state, so that its claim is made knowing theirs.
    pub fn admit_node(&mut self, node: NodeId, hlc: Hlc) -> Result<DesiredState, DesiredError> {
        let layout = self.layout();
        let current = self.hosts.get(&node);
        let claimed = current.and_then(|r| r.val);
        let effective = layout.slots.get(&node).copied();
        if claimed.is_some() && claimed == effective {
            return Ok(DesiredState::default());
        }
        // A displaced node takes the slot the layout gave it, which nobody else holds.
        let slot = match effective {
            Some(s) => s,
            None => layout.free_slot().ok_or(DesiredError::NoNodeSlot(node))?,
        };
        let mut delta = DesiredState::default();
        let mut reg = None;
        put(&mut reg, &current.cloned(), Some(slot), true, hlc);
        delta.hosts.insert(node, reg.expect("always written"));
        self.apply(delta)
    }

    /// Frees the slot of a node that will not come back. (Its subnets may then go to a node
    /// that joins later: forgetting a node that still runs replicas would give two nodes the
    /// same addresses.)
    pub fn forget_node(&mut self, node: NodeId, hlc: Hlc) -> Result<DesiredState, DesiredError> {
        let Some(current) = self.hosts.get(&node).filter(|r| r.val.is_some()) else {
            return Ok(DesiredState::default());
        };
        let mut reg = None;
        put(&mut reg, &Some(current.clone()), None, true, hlc);
        let mut delta = DesiredState::default();
        delta.hosts.insert(node, reg.expect("always written"));
        self.apply(delta)
    }

    /// Rewrites every claim the layout had to move (concurrent creations collided) to where
    /// it landed, and claims a virtual address for every attached service lacking one, so that
    /// later removals cannot move them again. Any node may call it, at any time (after merging
    /// remote state, say): it writes nothing when every claim holds, and concurrent calls write
    /// the same values.
    pub fn settle_addresses(&mut self, hlc: Hlc) -> Result<DesiredState, DesiredError> {
        let layout = self.layout();
        let mut delta = DesiredState::default();
        for (name, entry) in self.networks.iter().filter(|(_, e)| e.is_live()) {
            let Some(net) = layout.networks.get(name) else {
                continue;
            };
            let mut d = NetworkEntry::default();
            if entry.range.as_ref().is_some_and(|r| r.val != net.range)
                && entry.spec().subnet.is_none()
            {
                put(&mut d.range, &entry.range, net.range, true, hlc);
            }
            let block = net.vip_block();
            for (service, vip) in &net.vips {
                let index = (u32::from(*vip) - u32::from(block.addr())) as u16;
                if entry.vips.get(service).map(|r| r.val) != Some(index) {
                    let mut reg = None;
                    put(
                        &mut reg,
                        &entry.vips.get(service).cloned(),
                        index,
                        true,
                        hlc,
                    );
                    d.vips.insert(service.clone(), reg.expect("always written"));
                }
            }
            if !d.is_empty() {
                delta.networks.insert(name.clone(), d);
            }
        }
        for (node, slot) in &layout.slots {
            let current = self.hosts.get(node);
            if current.and_then(|r| r.val) != Some(*slot) {
                let mut reg = None;
                put(&mut reg, &current.cloned(), Some(*slot), true, hlc);
                delta.hosts.insert(*node, reg.expect("always written"));
            }
        }
        self.apply(delta)
    }

    /// Live services attached to `network`, among those `counted` selects.
    pub(super) fn network_users(
        &self,
        network: &str,
        counted: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        self.services
            .iter()
            .filter(|(name, e)| e.is_live() && counted(name))
            .filter(|(_, e)| {
                e.spec()
                    .network_attachments()
                    .iter()
                    .any(|a| a.network == network)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Writes a new network's registers into `delta` (and its place into `layout`, so that
    /// the next network of the same deploy sees it taken).
    fn write_network(
        &self,
        delta: &mut DesiredState,
        layout: &mut Layout,
        name: &str,
        mut spec: NetworkSpec,
        hlc: Hlc,
    ) -> Result<(), DesiredError> {
        check_network_name(name)?;
        // Every node holds every network's labels: the same bounds as a service's.
        check_keys(
            "network label",
            spec.labels
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str()))),
        )?;
        if spec.driver.is_empty() {
            spec.driver = OVERLAY_DRIVER.to_string();
        }
        if spec.driver != OVERLAY_DRIVER {
            return Err(DesiredError::InvalidNetwork {
                network: name.to_string(),
                reason: format!(
                    "driver {:?} is not supported: shoal's networks span the cluster, as \
                     \"overlay\" ones do",
                    spec.driver
                ),
            });
        }
        let range = match spec.subnet {
            Some(subnet) => {
                if !(MIN_SUBNET_LEN..=MAX_SUBNET_LEN).contains(&subnet.prefix_len()) {
                    return Err(DesiredError::InvalidNetwork {
                        network: name.to_string(),
                        reason: format!(
                            "subnet {subnet}: give a /{MIN_SUBNET_LEN} to /{MAX_SUBNET_LEN} (each \
                             node takes a /24 of it, and the last /24 holds the services' virtual \
                             addresses)"
                        ),
                    });
                }
                if let Some(other) = layout.overlapping(&subnet) {
                    return Err(DesiredError::InvalidNetwork {
                        network: name.to_string(),
                        reason: format!("subnet {subnet} overlaps network {other}'s range"),
                    });
                }
                subnet
            }
            None => layout
                .free_range(name)
                .ok_or_else(|| DesiredError::PoolExhausted(name.to_string()))?,
        };
        let current = self.networks.get(name).cloned().unwrap_or_default();
        let mut d = NetworkEntry::default();
        put(&mut d.spec, &current.spec, spec.clone(), true, hlc);
        put(&mut d.range, &current.range, range, true, hlc);
        put(&mut d.deleted, &current.deleted, false, true, hlc);
        layout.networks.insert(
            name.to_string(),
            crate::net::layout::NetworkLayout {
                range,
                internal: spec.internal,
                vips: BTreeMap::new(),
            },
        );
        delta.networks.insert(name.to_string(), d);
        Ok(())
    }

    /// The network part of a deploy: checks and completes every service's attachments
    /// (`STACK_default` for a service that names none), creates the networks they use that do
    /// not exist, and claims virtual addresses. Writes into `delta`; the state is not changed.
    pub(super) fn deploy_networks(
        &self,
        stack: &str,
        networks: &[NetworkDef],
        services: &mut [ServiceDef],
        delta: &mut DesiredState,
        hlc: Hlc,
    ) -> Result<(), DesiredError> {
        let default_name = format!("{stack}_default");
        let declared: BTreeMap<&str, &NetworkDef> =
            networks.iter().map(|n| (n.name.as_str(), n)).collect();
        let mut used = BTreeSet::new();
        for def in services.iter_mut() {
            let mut attachments = def.spec.network_attachments();
            if attachments.is_empty() {
                attachments.push(NetworkAttachment {
                    network: default_name.clone(),
                    aliases: Vec::new(),
                });
            }
            let mut seen = BTreeSet::new();
            for a in &attachments {
                if !seen.insert(a.network.as_str()) {
                    return Err(DesiredError::InvalidNetwork {
                        network: a.network.clone(),
                        reason: format!("service {} attaches to it twice", def.name),
                    });
                }
                for alias in &a.aliases {
                    check_alias(&def.name, alias)?;
                }
                let known = declared.contains_key(a.network.as_str())
                    || a.network == default_name
                    || self.networks.get(&a.network).is_some_and(|e| e.is_live());
                if !known {
                    return Err(DesiredError::ServiceNetworkUnknown {
                        service: def.name.clone(),
                        network: a.network.clone(),
                    });
                }
                used.insert(a.network.clone());
            }
            def.spec.networks = attachments.iter().map(|a| a.network.clone()).collect();
            def.spec.attachments = attachments;
        }
        for n in networks.iter().filter(|n| n.external) {
            if !self.networks.get(&n.name).is_some_and(|e| e.is_live()) {
                return Err(DesiredError::ExternalNetworkMissing(n.name.clone()));
            }
        }
        let mut layout = self.layout();
        for name in &used {
            if self.networks.get(name).is_some_and(|e| e.is_live()) {
                continue;
            }
            let mut spec = match declared.get(name.as_str()) {
                Some(def) if def.external => continue,
                Some(def) => def.spec.clone(),
                None => NetworkSpec::default(),
            };
            spec.stack = Some(stack.to_string());
            self.write_network(delta, &mut layout, name, spec, hlc)?;
        }
        // Virtual addresses: a service keeps the one the layout gives it; one new to the network
        // (or re-created after a removal) claims a free one. Written only where the claim
        // differs, so a redeploy of an unchanged stack writes nothing here.
        for def in services.iter() {
            for a in &def.spec.attachments {
                let Some(index) = layout.free_vip_index(&a.network, &def.name) else {
                    if layout.networks.contains_key(&a.network) {
                        return Err(DesiredError::InvalidNetwork {
                            network: a.network.clone(),
                            reason: format!("no virtual address left for service {}", def.name),
                        });
                    }
                    // Not usable (its subnet collided): nothing to claim on it.
                    continue;
                };
                let claim = self
                    .networks
                    .get(&a.network)
                    .and_then(|e| e.vips.get(&def.name));
                if let Some(net) = layout.networks.get_mut(&a.network) {
                    let ip = net
                        .vip_block()
                        .nth(u64::from(index))
                        .expect("within the /24");
                    net.vips.insert(def.name.clone(), ip);
                }
                if claim.map(|c| c.val) == Some(index) {
                    continue;
                }
                let mut reg = None;
                put(&mut reg, &claim.cloned(), index, true, hlc);
                delta
                    .networks
                    .entry(a.network.clone())
                    .or_default()
                    .vips
                    .insert(def.name.clone(), reg.expect("always written"));
            }
        }
        Ok(())
    }

    /// The stack's networks that no live service outside `leaving` uses: what `stack rm`
    /// removes with the services.
    pub(super) fn stack_network_tombstones(
        &self,
        stack: &str,
        leaving: &BTreeSet<String>,
        delta: &mut DesiredState,
        hlc: Hlc,
    ) {
        for (name, entry) in &self.networks {
            if !entry.is_live() || entry.spec().stack.as_deref() != Some(stack) {
                continue;
            }
            if self
                .network_users(name, |s| !leaving.contains(s))
                .is_empty()
            {
                let mut d = NetworkEntry::default();
                put(&mut d.deleted, &entry.deleted, true, true, hlc);
                delta.networks.insert(name.clone(), d);
            }
        }
    }
}

/// Docker's network names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 63 bytes (shoal prefixes
/// the engine's network name and the stack prefixes its networks').
fn check_network_name(name: &str) -> Result<(), DesiredError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DesiredError::InvalidNetwork {
            network: name.to_string(),
            reason:
                "use 1 to 63 letters, digits, '_', '.' and '-', starting with a letter or digit"
                    .into(),
        })
    }
}

/// An alias is a DNS name: labels of letters, digits and `-`/`_`, dot-separated.
fn check_alias(service: &str, alias: &str) -> Result<(), DesiredError> {
    let ok = !alias.is_empty()
        && alias.len() <= 253
        && alias.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(DesiredError::InvalidAlias {
            service: service.to_string(),
            alias: alias.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::spec::{EndpointMode, ServiceSpec};

    fn at(wall_ms: u64) -> Hlc {
        Hlc {
            wall_ms,
            counter: 0,
            node: NodeId(1),
        }
    }

    fn svc(stack: &str, name: &str, networks: &[(&str, &[&str])]) -> ServiceDef {
        ServiceDef {
            name: format!("{stack}_{name}"),
            stack: stack.into(),
            replicas: 1,
            spec: ServiceSpec {
                image: "demo:1".into(),
                attachments: networks
                    .iter()
                    .map(|(n, aliases)| NetworkAttachment {
                        network: n.to_string(),
                        aliases: aliases.iter().map(|a| a.to_string()).collect(),
                    })
                    .collect(),
                ..ServiceSpec::default()
            },
        }
    }

    fn declared(name: &str) -> NetworkDef {
        NetworkDef {
            name: name.into(),
            external: false,
            spec: NetworkSpec::default(),
        }
    }

    #[test]
    fn a_service_without_networks_gets_the_stack_default() {
        let mut s = DesiredState::default();
        s.deploy_stack("app", vec![svc("app", "web", &[])], at(1))
            .unwrap();
        let web = s.service("app_web").unwrap();
        assert_eq!(web.spec.networks, ["app_default"]);
        assert_eq!(web.spec.network_attachments()[0].network, "app_default");
        let net = s.network("app_default").unwrap();
        assert_eq!(net.spec.stack.as_deref(), Some("app"));
        assert_eq!(net.spec.driver, OVERLAY_DRIVER);
        let layout = s.layout();
        let range = layout.networks["app_default"].range;
        assert_eq!(range.prefix_len(), 16);
        assert!(crate::net::layout::DEFAULT_POOL.contains(range.addr()));
        let vip = layout.vip("app_default", "app_web").unwrap();
        assert!(layout.networks["app_default"].vip_block().contains(vip));
    }

    #[test]
    fn declared_networks_are_created_only_when_used() {
        let mut s = DesiredState::default();
        let nets = vec![
            declared("app_front"),
            declared("app_back"),
            declared("app_unused"),
        ];
        let services = vec![
            svc("app", "web", &[("app_front", &["www"])]),
            svc("app", "db", &[("app_back", &[]), ("app_front", &[])]),
        ];
        s.deploy_stack_with_networks("app", nets.clone(), services.clone(), at(1))
            .unwrap();
        let names: Vec<_> = s.networks().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["app_back", "app_front"]);
        let layout = s.layout();
        assert_ne!(
            layout.networks["app_front"].range,
            layout.networks["app_back"].range
        );
        let (a, b) = (
            layout.vip("app_front", "app_web").unwrap(),
            layout.vip("app_front", "app_db").unwrap(),
        );
        assert_ne!(a, b);
        // The same file again writes nothing about networks.
        let delta = s
            .deploy_stack_with_networks("app", nets, services, at(2))
            .unwrap();
        assert!(delta.networks.is_empty(), "{:?}", delta.networks);
        assert_eq!(s.layout(), layout);
    }

    #[test]
    fn external_networks_must_exist() {
        let mut s = DesiredState::default();
        let ext = NetworkDef {
            name: "shared".into(),
            external: true,
            spec: NetworkSpec::default(),
        };
        let services = vec![svc("app", "web", &[("shared", &[])])];
        let err = s
            .deploy_stack_with_networks("app", vec![ext.clone()], services.clone(), at(1))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "network \"shared\" is declared as external, but could not be found. You need to \
             create a swarm-scoped network before the stack is deployed"
        );
        assert_eq!(s, DesiredState::default());
        s.create_network(declared("shared"), at(2)).unwrap();
        s.deploy_stack_with_networks("app", vec![ext], services, at(3))
            .unwrap();
        // The stack does not own it: removing the stack keeps it.
        s.remove_stack("app", at(4)).unwrap();
        assert!(s.network("shared").is_some());
    }

    #[test]
    fn undeclared_networks_and_bad_aliases_are_refused() {
        let mut s = DesiredState::default();
        let err = s
            .deploy_stack("app", vec![svc("app", "web", &[("nowhere", &[])])], at(1))
            .unwrap_err();
        assert_eq!(
            err,
            DesiredError::ServiceNetworkUnknown {
                service: "app_web".into(),
                network: "nowhere".into()
            }
        );
        assert!(err.to_string().contains("nowhere") && err.to_string().contains("app_web"));
        let err = s
            .deploy_stack(
                "app",
                vec![svc("app", "web", &[("app_default", &["a b"])])],
                at(2),
            )
            .unwrap_err();
        assert!(matches!(err, DesiredError::InvalidAlias { .. }), "{err}");
        assert_eq!(s, DesiredState::default());
    }

    #[test]
    fn a_network_in_use_cannot_be_removed() {
        let mut s = DesiredState::default();
        s.create_network(declared("shared"), at(1)).unwrap();
        assert_eq!(
            s.create_network(declared("shared"), at(2)),
            Err(DesiredError::NetworkExists("shared".into()))
        );
        let services = vec![
            svc("app", "web", &[("shared", &[])]),
            svc("app", "api", &[("shared", &[])]),
        ];
        s.deploy_stack("app", services, at(3)).unwrap();
        let err = s.remove_network("shared", at(4)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "network shared is in use by services app_api, app_web: remove them or deploy them \
             without it first"
        );
        s.remove_service("app_web", at(5)).unwrap();
        s.remove_service("app_api", at(6)).unwrap();
        s.remove_network("shared", at(7)).unwrap();
        assert!(s.network("shared").is_none());
        assert_eq!(
            s.remove_network("shared", at(8)),
            Err(DesiredError::UnknownNetwork("shared".into()))
        );
        // Created again, it is a new network.
        s.create_network(declared("shared"), at(9)).unwrap();
        assert_eq!(s.network("shared").unwrap().created, at(9));
    }

    fn with_subnet(name: &str, subnet: &str) -> NetworkDef {
        NetworkDef {
            name: name.into(),
            external: false,
            spec: NetworkSpec {
                subnet: Some(subnet.parse().unwrap()),
                ..NetworkSpec::default()
            },
        }
    }

    /// One operation of a replica, as a test replays it.
    type ReplicaOp<'a> = &'a dyn Fn(&mut DesiredState) -> Result<DesiredState, DesiredError>;

    /// Replays `a_ops` on one replica and `b_ops` on another (both from `base`), then hands
    /// each the other's deltas, as pushes do, in both orders: the two must end equal.
    fn converge(base: &DesiredState, a_ops: &[ReplicaOp], b_ops: &[ReplicaOp]) -> DesiredState {
        let run = |ops: &[ReplicaOp]| {
            let mut s = base.clone();
            let deltas: Vec<DesiredState> = ops.iter().map(|op| op(&mut s).unwrap()).collect();
            (s, deltas)
        };
        let (mut a, a_deltas) = run(a_ops);
        let (mut b, b_deltas) = run(b_ops);
        for d in b_deltas.iter().rev() {
            a.merge_delta(d.clone());
        }
        for d in a_deltas {
            b.merge_delta(d);
        }
        assert_eq!(a, b, "the replicas differ after exchanging their deltas");
        assert_eq!(a.layout(), b.layout());
        a
    }

    #[test]
    fn concurrent_create_and_rm_on_two_replicas_converge() {
        let mut base = DesiredState::default();
        base.create_network(declared("n"), at(1)).unwrap();

        // A removes `n` and creates it again with a subnet; B removes it in between: the
        // re-creation is the later write, so `n` lives, with A's settings.
        let merged = converge(
            &base,
            &[&|s| s.remove_network("n", at(2)), &|s| {
                s.create_network(with_subnet("n", "10.10.0.0/16"), at(4))
            }],
            &[&|s| s.remove_network("n", at(3))],
        );
        let n = merged.network("n").expect("the later create wins");
        assert_eq!(n.created, at(4));
        assert_eq!(
            merged.layout().networks["n"].range.to_string(),
            "10.10.0.0/16"
        );

        // The same, but B's removal is the later write: `n` is gone everywhere, and its
        // tombstone stays so that an older copy of the create merged later cannot revive it.
        let merged = converge(
            &base,
            &[&|s| s.remove_network("n", at(2)), &|s| {
                s.create_network(with_subnet("n", "10.10.0.0/16"), at(3))
            }],
            &[&|s| s.remove_network("n", at(4))],
        );
        assert!(merged.network("n").is_none());
        assert!(!merged.layout().networks.contains_key("n"));
        assert_eq!(merged.stored_networks(), 1, "the tombstone is kept");
        let mut late = merged.clone();
        let mut old = base.clone();
        old.remove_network("n", at(2)).unwrap();
        let stale = old
            .create_network(with_subnet("n", "10.10.0.0/16"), at(3))
            .unwrap();
        late.merge_delta(stale);
        assert_eq!(late, merged, "a stale create changes nothing");

        // Both sides create the same name while it does not exist: one network after the
        // merge, with the later creation's settings.
        let merged = converge(
            &DesiredState::default(),
            &[&|s| s.create_network(with_subnet("m", "10.20.0.0/16"), at(5))],
            &[&|s| s.create_network(with_subnet("m", "10.30.0.0/16"), at(6))],
        );
        assert_eq!(merged.networks().len(), 1);
        assert_eq!(
            merged.layout().networks["m"].range.to_string(),
            "10.30.0.0/16"
        );
    }

    #[test]
    fn a_stacks_network_is_removed_like_any_other_once_unused() {
        // Docker refuses `network rm` only while a service uses the network, whoever made it.
        let mut s = DesiredState::default();
        s.deploy_stack("app", vec![svc("app", "web", &[])], at(1))
            .unwrap();
        let err = s.remove_network("app_default", at(2)).unwrap_err();
        assert_eq!(
            err,
            DesiredError::NetworkInUse {
                network: "app_default".into(),
                services: vec!["app_web".into()]
            }
        );
        assert!(err.to_string().contains("app_web"), "{err}");
        s.remove_service("app_web", at(3)).unwrap();
        s.remove_network("app_default", at(4)).unwrap();
        assert!(s.networks().is_empty());
    }

    #[test]
    fn services_of_no_stack_attach_only_to_existing_networks() {
        let mut s = DesiredState::default();
        let mut def = ServiceDef {
            name: "web".into(),
            stack: String::new(),
            replicas: 1,
            spec: ServiceSpec {
                image: "demo:1".into(),
                networks: vec!["shared".into()],
                ..ServiceSpec::default()
            },
        };
        assert_eq!(
            s.create_service(def.clone(), at(1))
                .unwrap_err()
                .to_string(),
            "network shared not found"
        );
        assert!(s.services().is_empty());
        s.create_network(declared("shared"), at(2)).unwrap();
        s.create_service(def.clone(), at(3)).unwrap();
        assert_eq!(
            s.remove_network("shared", at(4)),
            Err(DesiredError::NetworkInUse {
                network: "shared".into(),
                services: vec!["web".into()]
            })
        );
        def.name = "other".into();
        def.spec.networks.clear();
        s.create_service(def, at(5)).unwrap();
    }

    #[test]
    fn network_labels_are_bounded_like_service_labels() {
        let mut s = DesiredState::default();
        let mut def = declared("n");
        def.spec.labels.insert(String::new(), "x".into());
        let err = s.create_network(def, at(1)).unwrap_err();
        assert!(err.to_string().contains("network label"), "{err}");
        let mut def = declared("n");
        def.spec.labels.insert("k".into(), "v".repeat(17 * 1024));
        assert!(s.create_network(def, at(2)).is_err());
        assert!(s.networks().is_empty());
    }

    #[test]
    fn stack_rm_removes_the_stacks_networks_unless_another_stack_uses_them() {
        let mut s = DesiredState::default();
        s.deploy_stack_with_networks(
            "app",
            vec![declared("app_front")],
            vec![
                svc("app", "web", &[("app_front", &[])]),
                svc("app", "job", &[]),
            ],
            at(1),
        )
        .unwrap();
        // Another stack names app_front by its full name, as an external network.
        let ext = NetworkDef {
            name: "app_front".into(),
            external: true,
            spec: NetworkSpec::default(),
        };
        s.deploy_stack_with_networks(
            "other",
            vec![ext],
            vec![svc("other", "x", &[("app_front", &[])])],
            at(2),
        )
        .unwrap();
        s.remove_stack("app", at(3)).unwrap();
        // app_default (only app's services used it) is gone; app_front stays for other_x.
        let names: Vec<_> = s.networks().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["app_front"]);
    }

    #[test]
    fn explicit_subnets_are_checked() {
        let mut s = DesiredState::default();
        let with = |name: &str, subnet: &str| NetworkDef {
            name: name.into(),
            external: false,
            spec: NetworkSpec {
                subnet: Some(subnet.parse().unwrap()),
                ..NetworkSpec::default()
            },
        };
        s.create_network(with("a", "10.10.0.0/16"), at(1)).unwrap();
        let err = s
            .create_network(with("b", "10.10.4.0/22"), at(2))
            .unwrap_err();
        assert!(err.to_string().contains("overlaps network a"), "{err}");
        let err = s
            .create_network(with("c", "10.20.0.0/24"), at(3))
            .unwrap_err();
        assert!(err.to_string().contains("/8 to /22"), "{err}");
        let mut bad = declared("d");
        bad.spec.driver = "macvlan".into();
        assert!(s.create_network(bad, at(4)).is_err());
        assert_eq!(s.layout().networks["a"].range.to_string(), "10.10.0.0/16");
    }

    #[test]
    fn the_pool_runs_out_after_sixteen_networks() {
        let mut s = DesiredState::default();
        for i in 0..16 {
            s.create_network(declared(&format!("n{i}")), at(i + 1))
                .unwrap();
        }
        let layout = s.layout();
        let mut ranges: Vec<_> = layout.networks.values().map(|n| n.range).collect();
        ranges.sort();
        ranges.dedup();
        assert_eq!(ranges.len(), 16);
        assert_eq!(
            s.create_network(declared("n16"), at(20)),
            Err(DesiredError::PoolExhausted("n16".into()))
        );
        s.remove_network("n3", at(21)).unwrap();
        s.create_network(declared("n16"), at(22)).unwrap();
        // Nothing else moved.
        let after = s.layout();
        for (name, n) in &layout.networks {
            if name != "n3" {
                assert_eq!(after.networks[name].range, n.range, "{name} moved");
            }
        }
    }

    #[test]
    fn nodes_take_dense_slots_and_keep_them() {
        let mut s = DesiredState::default();
        for n in 1..=3u128 {
            s.admit_node(NodeId(n * 100), at(n as u64)).unwrap();
        }
        let slots: Vec<_> = (1..=3u128)
            .map(|n| s.layout().slots[&NodeId(n * 100)])
            .collect();
        assert_eq!(slots, [0, 1, 2]);
        // Admitting again writes nothing.
        assert!(s.admit_node(NodeId(200), at(9)).unwrap().is_empty());
        s.forget_node(NodeId(200), at(10)).unwrap();
        s.admit_node(NodeId(400), at(11)).unwrap();
        let layout = s.layout();
        assert_eq!(layout.slots[&NodeId(100)], 0);
        assert_eq!(layout.slots[&NodeId(300)], 2);
        assert_eq!(
            layout.slots[&NodeId(400)],
            1,
            "the forgotten slot is reused"
        );
        assert!(!layout.slots.contains_key(&NodeId(200)));
    }

    #[test]
    fn concurrent_claims_collide_then_settle() {
        let mut base = DesiredState::default();
        base.admit_node(NodeId(1), at(1)).unwrap();
        let (mut a, mut b) = (base.clone(), base.clone());
        // Both sides of a partition admit a node and create a network of the same preferred
        // range... or at least from the same free pool.
        a.admit_node(NodeId(2), at(2)).unwrap();
        b.admit_node(NodeId(3), at(3)).unwrap();
        a.create_network(declared("x"), at(4)).unwrap();
        b.create_network(declared("y"), at(5)).unwrap();
        a.deploy_stack("app", vec![svc("app", "web", &[("x", &[])])], at(6))
            .unwrap();
        assert_eq!(a.layout().slots[&NodeId(2)], b.layout().slots[&NodeId(3)]);
        let mut ab = a.clone();
        ab.merge_delta(b.clone());
        let mut ba = b.clone();
        ba.merge_delta(a.clone());
        let layout = ab.layout();
        assert_eq!(layout, ba.layout(), "merge order does not matter");
        assert!(layout.problems.is_empty(), "{:?}", layout.problems);
        // The earlier claim keeps its slot; the later moves.
        assert_eq!(layout.slots[&NodeId(2)], 1);
        assert_eq!(layout.slots[&NodeId(3)], 2);
        assert!(!layout.networks["x"]
            .range
            .overlaps(&layout.networks["y"].range));
        // Settling rewrites the moved claim; after that, removing the earlier one moves nothing.
        let delta = ab.settle_addresses(at(7)).unwrap();
        assert!(!delta.is_empty());
        assert!(
            ab.settle_addresses(at(8)).unwrap().is_empty(),
            "settled once"
        );
        assert_eq!(ab.layout(), layout);
        ab.forget_node(NodeId(2), at(9)).unwrap();
        assert_eq!(ab.layout().slots[&NodeId(3)], 2);
    }

    #[test]
    fn endpoint_mode_and_aliases_are_kept_and_do_not_restart_replicas() {
        let mut s = DesiredState::default();
        let mut web = svc("app", "web", &[("app_default", &["www"])]);
        s.deploy_stack("app", vec![web.clone()], at(1)).unwrap();
        let v1 = s.service("app_web").unwrap();
        assert_eq!(v1.spec.attachments[0].aliases, ["www"]);
        web.spec.endpoint_mode = EndpointMode::Dnsrr;
        s.deploy_stack("app", vec![web.clone()], at(2)).unwrap();
        let v2 = s.service("app_web").unwrap();
        assert_eq!(v2.spec.endpoint_mode, EndpointMode::Dnsrr);
        assert_eq!(v2.version, v1.version, "the containers are the same");
        web.spec.attachments[0].aliases.push("w2".into());
        s.deploy_stack("app", vec![web], at(3)).unwrap();
        assert_ne!(s.service("app_web").unwrap().version, v1.version);
    }

    #[test]
    fn a_recreated_service_does_not_take_another_ones_address() {
        let mut s = DesiredState::default();
        s.create_network(declared("n"), at(1)).unwrap();
        s.deploy_stack("a", vec![svc("a", "x", &[("n", &[])])], at(2))
            .unwrap();
        let first = s.layout().vip("n", "a_x").unwrap();
        s.remove_stack("a", at(3)).unwrap();
        s.deploy_stack("b", vec![svc("b", "y", &[("n", &[])])], at(4))
            .unwrap();
        s.deploy_stack("a", vec![svc("a", "x", &[("n", &[])])], at(5))
            .unwrap();
        let layout = s.layout();
        let (x, y) = (
            layout.vip("n", "a_x").unwrap(),
            layout.vip("n", "b_y").unwrap(),
        );
        assert_ne!(x, y);
        // Whatever the first address was, b_y keeps the one it had.
        let _ = first;
        assert!(s.settle_addresses(at(6)).unwrap().is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Create(u8),
        Remove(u8),
        Admit(u8),
        Deploy(u8, Vec<u8>),
        RemoveStack(u8),
        Settle,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0..6u8).prop_map(Op::Create),
            (0..6u8).prop_map(Op::Remove),
            (0..12u8).prop_map(Op::Admit),
            ((0..4u8), prop::collection::vec(0..6u8, 0..3)).prop_map(|(s, n)| Op::Deploy(s, n)),
            (0..4u8).prop_map(Op::RemoveStack),
            Just(Op::Settle),
        ]
    }

    fn run(s: &mut DesiredState, ops: &[Op], node: u128, wall: &mut u64) {
        for op in ops {
            *wall += 1;
            let hlc = Hlc {
                wall_ms: *wall,
                counter: 0,
                node: NodeId(node),
            };
            // Refusals are fine: the state is then unchanged.
            let _ = match op {
                Op::Create(n) => s.create_network(declared(&format!("net{n}")), hlc),
                Op::Remove(n) => s.remove_network(&format!("net{n}"), hlc),
                Op::Admit(n) => s.admit_node(NodeId(u128::from(*n) + 1), hlc),
                Op::Deploy(st, nets) => {
                    let stack = format!("s{st}");
                    let attach: Vec<(String, &[&str])> =
                        nets.iter().map(|n| (format!("net{n}"), &[][..])).collect();
                    let attach: Vec<(&str, &[&str])> =
                        attach.iter().map(|(n, a)| (n.as_str(), *a)).collect();
                    s.deploy_stack(&stack, vec![svc(&stack, "web", &attach)], hlc)
                }
                Op::RemoveStack(st) => s.remove_stack(&format!("s{st}"), hlc),
                Op::Settle => s.settle_addresses(hlc),
            };
        }
    }

    proptest::proptest! {
        #[test]
        fn partitions_converge_to_one_layout_without_overlap(
            common in proptest::collection::vec(op(), 0..10),
            left in proptest::collection::vec(op(), 0..15),
            right in proptest::collection::vec(op(), 0..15),
        ) {
            let mut wall = 0;
            let mut base = DesiredState::default();
            run(&mut base, &common, 1, &mut wall);
            let (mut a, mut b) = (base.clone(), base);
            let mut wall_b = wall;
            run(&mut a, &left, 2, &mut wall);
            run(&mut b, &right, 3, &mut wall_b);
            let mut ab = a.clone();
            ab.merge_delta(b.clone());
            let mut ba = b.clone();
            ba.merge_delta(a.clone());
            let layout = ab.layout();
            proptest::prop_assert_eq!(&layout, &ba.layout());
            proptest::prop_assert!(layout.problems.is_empty(), "{:?}", layout.problems);
            let ranges: Vec<_> = layout.networks.values().map(|n| n.range).collect();
            for (i, r) in ranges.iter().enumerate() {
                for o in &ranges[i + 1..] {
                    proptest::prop_assert!(!r.overlaps(o));
                }
            }
            let slots: BTreeSet<_> = layout.slots.values().collect();
            proptest::prop_assert_eq!(slots.len(), layout.slots.len());
            // Settling changes no address, and afterwards has nothing left to do.
            let hlc = Hlc { wall_ms: 10_000, counter: 0, node: NodeId(4) };
            ab.settle_addresses(hlc).unwrap();
            proptest::prop_assert_eq!(&ab.layout(), &layout);
            let later = Hlc { wall_ms: 10_001, ..hlc };
            proptest::prop_assert!(ab.settle_addresses(later).unwrap().is_empty());
        }
    }
}
