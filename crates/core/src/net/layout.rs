//! Address allocation without a coordinator: which range each network has, which /24 of it each
//! node has, and which virtual address each service has on it.
//!
//! Every node computes [`Layout::compute`] from its replica of the desired state, so nodes that
//! hold the same state agree on every address, whatever order the writes arrived in. Operations
//! that create things write a *claim* (the range a new network takes, the slot a new node takes,
//! the virtual address a service takes) chosen from what the writer sees; the layout honours
//! claims in a fixed order and moves only the ones that collide:
//!
//! 1. **Network ranges.** Networks with an explicit subnet come first, by (creation stamp, name):
//!    each takes its subnet unless it overlaps one placed before it (then it is unusable and
//!    reported: two operators picked overlapping subnets in a partition). Then the others, by
//!    (creation stamp, name): each keeps its claimed /16 of [`DEFAULT_POOL`] if still free, else
//!    takes the first free /16 from a position hashed from its name.
//! 2. **Node slots.** Nodes by (claim stamp, node id): each keeps its claimed slot if free, else
//!    takes the lowest free one. Slot `k` is the `k`th /24 of every network's range, so a node's
//!    subnets follow from one number; the range's last /24 is never a node's (it holds the
//!    virtual addresses).
//! 3. **Virtual addresses.** On each network, its live services by (claim stamp, name): each
//!    keeps its claimed index in the last /24 if free, else takes the first free one from a
//!    position hashed from its name.
//!
//! Because the claims of a creation are made by a node that saw everything before it, a later
//! creation never moves an earlier one: nodes joining, services and networks being created or
//! removed leave every existing address where it is. Only claims made concurrently (in a
//! partition) can collide; the later one moves, on every node alike, once the writes have merged.
//! [`crate::desired::state::DesiredState::settle_addresses`] then rewrites moved claims to where
//! they landed, so later removals cannot move them back.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Ipv4Net;
use crate::{desired::hlc::Hlc, identity::NodeId};

/// Where networks without an explicit subnet take their range: 16 networks of a /16 each.
pub const DEFAULT_POOL: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 240, 0, 0), 12) {
    Some(n) => n,
    None => unreachable!(),
};
/// Length of a range taken from [`DEFAULT_POOL`].
pub const POOL_RANGE_LEN: u8 = 16;
/// Length of a node's subnet of a network.
pub const NODE_SUBNET_LEN: u8 = 24;
/// Node slots there are at most: a /16 holds 256 /24s, the last of which holds the virtual
/// addresses.
pub const MAX_NODE_SLOTS: u16 = 255;
/// Virtual addresses a network holds: `.1` to `.254` of its last /24.
pub const MAX_VIPS: u16 = 254;
/// Shortest explicit subnet accepted (a /8 is plenty).
pub const MIN_SUBNET_LEN: u8 = 8;
/// Longest explicit subnet accepted: a /22 holds three node subnets besides the virtual
/// addresses' /24.
pub const MAX_SUBNET_LEN: u8 = 22;

/// A live network as the layout needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkClaim {
    /// Full name.
    pub name: String,
    /// The subnet the operator asked for, if any.
    pub explicit: Option<Ipv4Net>,
    /// The range its creator chose (equal to `explicit` when that is set).
    pub claimed: Ipv4Net,
    /// When the claim was made (orders claims).
    pub at: Hlc,
    /// No traffic in or out of its range.
    pub internal: bool,
    /// Virtual-address claims of services: index in the last /24, and when it was made.
    pub vips: BTreeMap<String, (u16, Hlc)>,
}

/// A node's slot claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostClaim {
    /// The node.
    pub node: NodeId,
    /// The slot it claimed.
    pub slot: u16,
    /// When.
    pub at: Hlc,
}

/// A live service as the layout needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceClaim {
    /// Full name.
    pub name: String,
    /// When it was created (orders services that have no claim on a network).
    pub created: Hlc,
    /// The networks it attaches to.
    pub networks: Vec<String>,
}

/// One network's addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkLayout {
    /// Its range.
    pub range: Ipv4Net,
    /// No traffic in or out of its range.
    pub internal: bool,
    /// Each attached service's virtual address (services for which none was left are missing,
    /// and reported in [`Layout::problems`]).
    pub vips: BTreeMap<String, Ipv4Addr>,
}

impl NetworkLayout {
    /// The subnet of the node with slot `slot`; `None` if the range is too small for it.
    pub fn node_subnet(&self, slot: u16) -> Option<Ipv4Net> {
        let node_subnets = self.range.subnets(NODE_SUBNET_LEN).saturating_sub(1);
        if u64::from(slot) >= node_subnets {
            return None;
        }
        self.range.subnet(NODE_SUBNET_LEN, u64::from(slot))
    }

    /// The /24 that holds the virtual addresses: the range's last.
    pub fn vip_block(&self) -> Ipv4Net {
        let last = self.range.subnets(NODE_SUBNET_LEN) - 1;
        self.range
            .subnet(NODE_SUBNET_LEN, last)
            .expect("ranges are at most /22")
    }
}

/// Something the layout could not give.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LayoutProblem {
    /// Two networks' explicit subnets overlap (created concurrently): the later is not usable.
    #[error("network {network}: subnet {subnet} overlaps network {other}'s; it is not usable")]
    Overlap {
        /// The network left out.
        network: String,
        /// Its subnet.
        subnet: Ipv4Net,
        /// The network that has it.
        other: String,
    },
    /// The default pool has no free /16 left.
    #[error("network {0}: the address pool {DEFAULT_POOL} is exhausted (give it a subnet)")]
    PoolExhausted(String),
    /// A network's last /24 has no virtual address left.
    #[error("network {network}: no virtual address left for service {service}")]
    VipsExhausted {
        /// The network.
        network: String,
        /// The service left without one.
        service: String,
    },
    /// More nodes than slots.
    #[error("node {0}: all {MAX_NODE_SLOTS} node slots are taken")]
    SlotsExhausted(NodeId),
}

/// Every address of the cluster's service networks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Usable networks by name.
    pub networks: BTreeMap<String, NetworkLayout>,
    /// Each node's slot.
    pub slots: BTreeMap<NodeId, u16>,
    /// What could not be allocated.
    pub problems: Vec<LayoutProblem>,
}

impl Layout {
    /// The layout of `networks`, `hosts` and `services` (live ones only; any order).
    pub fn compute(
        networks: &[NetworkClaim],
        hosts: &[HostClaim],
        services: &[ServiceClaim],
    ) -> Layout {
        let mut layout = Layout::default();
        layout.place_networks(networks);
        layout.place_hosts(hosts);
        layout.place_vips(networks, services);
        layout
    }

    fn place_networks(&mut self, networks: &[NetworkClaim]) {
        let mut order: Vec<&NetworkClaim> = networks.iter().collect();
        order.sort_by(|a, b| (a.at, &a.name).cmp(&(b.at, &b.name)));
        let mut placed: Vec<(Ipv4Net, &str)> = Vec::new();
        fn taken<'a>(placed: &[(Ipv4Net, &'a str)], r: &Ipv4Net) -> Option<&'a str> {
            placed.iter().find(|(p, _)| p.overlaps(r)).map(|(_, n)| *n)
        }
        for n in order.iter().filter(|n| n.explicit.is_some()) {
            let subnet = n.explicit.expect("filtered");
            match taken(&placed, &subnet) {
                Some(other) => self.problems.push(LayoutProblem::Overlap {
                    network: n.name.clone(),
                    subnet,
                    other: other.to_string(),
                }),
                None => placed.push((subnet, &n.name)),
            }
        }
        let count = DEFAULT_POOL.subnets(POOL_RANGE_LEN);
        for n in order.iter().filter(|n| n.explicit.is_none()) {
            let claim_ok = n.claimed.prefix_len() == POOL_RANGE_LEN
                && DEFAULT_POOL.contains(n.claimed.addr())
                && taken(&placed, &n.claimed).is_none();
            let range = if claim_ok {
                Some(n.claimed)
            } else {
                let start = preferred(b"range", &n.name, count);
                (0..count)
                    .map(|i| DEFAULT_POOL.subnet(POOL_RANGE_LEN, (start + i) % count))
                    .map(|r| r.expect("index below count"))
                    .find(|r| taken(&placed, r).is_none())
            };
            match range {
                Some(r) => placed.push((r, &n.name)),
                None => self
                    .problems
                    .push(LayoutProblem::PoolExhausted(n.name.clone())),
            }
        }
        for (range, name) in placed {
            let internal = networks
                .iter()
                .find(|n| n.name == name)
                .is_some_and(|n| n.internal);
            self.networks.insert(
                name.to_string(),
                NetworkLayout {
                    range,
                    internal,
                    vips: BTreeMap::new(),
                },
            );
        }
    }

    fn place_hosts(&mut self, hosts: &[HostClaim]) {
        let mut order: Vec<&HostClaim> = hosts.iter().collect();
        order.sort_by_key(|h| (h.at, h.node));
        let mut used = BTreeSet::new();
        for h in order {
            if self.slots.contains_key(&h.node) {
                continue;
            }
            let slot = if h.slot < MAX_NODE_SLOTS && !used.contains(&h.slot) {
                Some(h.slot)
            } else {
                (0..MAX_NODE_SLOTS).find(|s| !used.contains(s))
            };
            match slot {
                Some(s) => {
                    used.insert(s);
                    self.slots.insert(h.node, s);
                }
                None => self.problems.push(LayoutProblem::SlotsExhausted(h.node)),
            }
        }
    }

    fn place_vips(&mut self, networks: &[NetworkClaim], services: &[ServiceClaim]) {
        for n in networks {
            let Some(net) = self.networks.get_mut(&n.name) else {
                continue;
            };
            let mut attached: Vec<(Hlc, &str, Option<u16>)> = services
                .iter()
                .filter(|s| s.networks.contains(&n.name))
                .map(|s| match n.vips.get(&s.name) {
                    Some((index, at)) => (*at, s.name.as_str(), Some(*index)),
                    None => (s.created, s.name.as_str(), None),
                })
                .collect();
            attached.sort();
            let block = net.vip_block();
            let mut used = BTreeSet::new();
            for (_, service, claim) in attached {
                let index = match claim {
                    Some(i) if (1..=MAX_VIPS).contains(&i) && !used.contains(&i) => Some(i),
                    _ => {
                        let start = preferred(b"vip", service, u64::from(MAX_VIPS)) as u16;
                        (0..MAX_VIPS)
                            .map(|k| 1 + (start + k) % MAX_VIPS)
                            .find(|i| !used.contains(i))
                    }
                };
                match index {
                    Some(i) => {
                        used.insert(i);
                        let vip = block.nth(u64::from(i)).expect("index within the /24");
                        net.vips.insert(service.to_string(), vip);
                    }
                    None => self.problems.push(LayoutProblem::VipsExhausted {
                        network: n.name.clone(),
                        service: service.to_string(),
                    }),
                }
            }
        }
    }

    /// The subnet of `node` on `network`.
    pub fn node_subnet(&self, network: &str, node: NodeId) -> Option<Ipv4Net> {
        let slot = *self.slots.get(&node)?;
        self.networks.get(network)?.node_subnet(slot)
    }

    /// The gateway of `node` on `network` (its subnet's `.1`): the bridge's address, where the
    /// node's DNS server listens for that network.
    pub fn gateway(&self, network: &str, node: NodeId) -> Option<Ipv4Addr> {
        self.node_subnet(network, node)?.nth(1)
    }

    /// `service`'s virtual address on `network`.
    pub fn vip(&self, network: &str, service: &str) -> Option<Ipv4Addr> {
        self.networks.get(network)?.vips.get(service).copied()
    }

    /// The network whose range holds `ip`.
    pub fn network_of(&self, ip: Ipv4Addr) -> Option<&str> {
        self.networks
            .iter()
            .find(|(_, n)| n.range.contains(ip))
            .map(|(name, _)| name.as_str())
    }

    /// The lowest slot no node has, for a node that joins.
    pub fn free_slot(&self) -> Option<u16> {
        let used: BTreeSet<u16> = self.slots.values().copied().collect();
        (0..MAX_NODE_SLOTS).find(|s| !used.contains(s))
    }

    /// A free /16 of the default pool for a new network called `name`: the first free one from
    /// the position its name hashes to, avoiding every placed range.
    pub fn free_range(&self, name: &str) -> Option<Ipv4Net> {
        let count = DEFAULT_POOL.subnets(POOL_RANGE_LEN);
        let start = preferred(b"range", name, count);
        (0..count)
            .filter_map(|i| DEFAULT_POOL.subnet(POOL_RANGE_LEN, (start + i) % count))
            .find(|r| !self.networks.values().any(|n| n.range.overlaps(r)))
    }

    /// The placed network whose range overlaps `subnet`, if any.
    pub fn overlapping(&self, subnet: &Ipv4Net) -> Option<&str> {
        self.networks
            .iter()
            .find(|(_, n)| n.range.overlaps(subnet))
            .map(|(name, _)| name.as_str())
    }

    /// A free virtual-address index on `network` for `service`: its own if it has one, else the
    /// first free one from the position its name hashes to.
    pub fn free_vip_index(&self, network: &str, service: &str) -> Option<u16> {
        let net = self.networks.get(network)?;
        let block = net.vip_block();
        let index = |ip: &Ipv4Addr| (u32::from(*ip) - u32::from(block.addr())) as u16;
        if let Some(own) = net.vips.get(service) {
            return Some(index(own));
        }
        let used: BTreeSet<u16> = net.vips.values().map(index).collect();
        let start = preferred(b"vip", service, u64::from(MAX_VIPS)) as u16;
        (0..MAX_VIPS)
            .map(|k| 1 + (start + k) % MAX_VIPS)
            .find(|i| !used.contains(i))
    }
}

/// Where a name's search for a free place starts: part of the cluster's protocol (every node
/// must compute the same), hence SHA-256 and not `std`'s hasher.
fn preferred(domain: &[u8], name: &str, count: u64) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"shoal/net/")
        .chain_update(domain)
        .chain_update(b"\0")
        .chain_update(name.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first) % count.max(1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(wall_ms: u64, node: u128) -> Hlc {
        Hlc {
            wall_ms,
            counter: 0,
            node: NodeId(node),
        }
    }

    /// Every address the layout hands out is unique where it must be.
    fn check_disjoint(layout: &Layout) {
        let ranges: Vec<_> = layout.networks.values().map(|n| n.range).collect();
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                assert!(!a.overlaps(b), "{a} overlaps {b}");
            }
        }
        let slots: BTreeSet<u16> = layout.slots.values().copied().collect();
        assert_eq!(slots.len(), layout.slots.len(), "two nodes share a slot");
        for (name, net) in &layout.networks {
            let vips: BTreeSet<_> = net.vips.values().collect();
            assert_eq!(
                vips.len(),
                net.vips.len(),
                "{name}: two services share a VIP"
            );
            for vip in net.vips.values() {
                assert!(net.vip_block().contains(*vip));
                let host = u32::from(*vip) & 0xff;
                assert!((1..=254).contains(&host), "{vip}");
            }
            for slot in layout.slots.values() {
                if let Some(sub) = net.node_subnet(*slot) {
                    assert!(net.range.contains(sub.addr()));
                    assert!(!sub.overlaps(&net.vip_block()));
                }
            }
        }
    }

    fn pool_range(i: u64) -> Ipv4Net {
        DEFAULT_POOL.subnet(POOL_RANGE_LEN, i % 16).unwrap()
    }

    prop_compose! {
        fn network()(
            name in 0..30u32,
            claim in 0..16u64,
            explicit in prop::option::weighted(0.2, (0..64u32, 16..=22u8)),
            wall in 0..50u64,
            node in 1..4u128,
            vips in prop::collection::vec((0..20u32, 0..300u16, 0..50u64), 0..6),
        ) -> NetworkClaim {
            let explicit = explicit.map(|(third, len)| {
                Ipv4Net::new(Ipv4Addr::new(10, 100 + (third % 8) as u8, (third * 16) as u8, 0), len)
                    .unwrap()
            });
            NetworkClaim {
                name: format!("net{name}"),
                explicit,
                claimed: explicit.unwrap_or_else(|| pool_range(claim)),
                at: at(wall, node),
                internal: name % 5 == 0,
                vips: vips
                    .into_iter()
                    .map(|(s, i, w)| (format!("svc{s}"), (i, at(w, 1))))
                    .collect(),
            }
        }
    }

    fn dedup_names(mut nets: Vec<NetworkClaim>) -> Vec<NetworkClaim> {
        let mut seen = BTreeSet::new();
        nets.retain(|n| seen.insert(n.name.clone()));
        nets
    }

    fn services(n: usize, networks: &[NetworkClaim]) -> Vec<ServiceClaim> {
        (0..n as u32)
            .map(|i| ServiceClaim {
                name: format!("svc{i}"),
                created: at(u64::from(i), 2),
                networks: networks
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| (k + i as usize) % 3 != 0)
                    .map(|(_, n)| n.name.clone())
                    .collect(),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn addresses_never_overlap(
            nets in prop::collection::vec(network(), 0..24),
            hosts in prop::collection::vec((1..40u128, 0..300u16, 0..50u64), 0..40),
            nsvc in 0..20usize,
        ) {
            let nets = dedup_names(nets);
            // One claim per node, as the state's map holds.
            let hosts: Vec<HostClaim> = hosts
                .into_iter()
                .map(|(n, slot, w)| (n, HostClaim { node: NodeId(n), slot, at: at(w, n) }))
                .collect::<BTreeMap<_, _>>()
                .into_values()
                .collect();
            let layout = Layout::compute(&nets, &hosts, &services(nsvc, &nets));
            check_disjoint(&layout);
            // Input order does not matter.
            let mut rev = nets.clone();
            rev.reverse();
            let mut hrev = hosts.clone();
            hrev.reverse();
            prop_assert_eq!(&Layout::compute(&rev, &hrev, &services(nsvc, &nets)), &layout);
        }

        #[test]
        fn later_claims_never_move_earlier_addresses(
            nets in prop::collection::vec(network(), 0..12),
            nodes in 0..20u128,
            nsvc in 0..10usize,
        ) {
            // Build up state the way operations do: each new claim is chosen from the layout of
            // everything before it, with a later stamp.
            let mut claims: Vec<NetworkClaim> = Vec::new();
            let mut hosts: Vec<HostClaim> = Vec::new();
            let mut wall = 100;
            let mut before = Layout::default();
            for mut n in dedup_names(nets) {
                wall += 1;
                let layout = Layout::compute(&claims, &hosts, &[]);
                match n.explicit {
                    Some(sub) if layout.overlapping(&sub).is_some() => continue,
                    Some(_) => {}
                    None => match layout.free_range(&n.name) {
                        Some(r) => n.claimed = r,
                        None => continue,
                    },
                }
                n.at = at(wall, 1);
                n.vips.clear();
                claims.push(n);
                let after = Layout::compute(&claims, &hosts, &[]);
                for (name, net) in &layout.networks {
                    prop_assert_eq!(after.networks[name].range, net.range);
                }
                before = after;
            }
            for node in 1..=nodes {
                wall += 1;
                let slot = before.free_slot().unwrap();
                hosts.push(HostClaim { node: NodeId(node), slot, at: at(wall, node) });
                let after = Layout::compute(&claims, &hosts, &[]);
                for (id, s) in &before.slots {
                    prop_assert_eq!(after.slots[id], *s);
                }
                before = after;
            }
            let svcs = services(nsvc, &claims);
            for k in 0..svcs.len() {
                let layout = Layout::compute(&claims, &hosts, &svcs[..k]);
                for net in &svcs[k].networks {
                    wall += 1;
                    let Some(i) = layout.free_vip_index(net, &svcs[k].name) else { continue };
                    let c = claims.iter_mut().find(|c| &c.name == net).unwrap();
                    c.vips.insert(svcs[k].name.clone(), (i, at(wall, 1)));
                }
                let after = Layout::compute(&claims, &hosts, &svcs[..=k]);
                check_disjoint(&after);
                for (name, net) in &layout.networks {
                    for (svc, vip) in &net.vips {
                        prop_assert_eq!(after.networks[name].vips[svc], *vip);
                    }
                }
            }
        }
    }

    #[test]
    fn a_colliding_claim_moves_the_later_one_only() {
        let claim = |name: &str, wall| NetworkClaim {
            name: name.into(),
            explicit: None,
            claimed: pool_range(3),
            at: at(wall, 1),
            internal: false,
            vips: BTreeMap::new(),
        };
        let layout = Layout::compute(&[claim("b", 2), claim("a", 1)], &[], &[]);
        assert_eq!(layout.networks["a"].range, pool_range(3));
        assert_ne!(layout.networks["b"].range, pool_range(3));
        assert!(layout.problems.is_empty());
        let hosts = [
            HostClaim {
                node: NodeId(9),
                slot: 0,
                at: at(1, 9),
            },
            HostClaim {
                node: NodeId(4),
                slot: 0,
                at: at(2, 4),
            },
        ];
        let layout = Layout::compute(&[], &hosts, &[]);
        assert_eq!((layout.slots[&NodeId(9)], layout.slots[&NodeId(4)]), (0, 1));
    }

    #[test]
    fn node_subnets_and_gateways() {
        let net = NetworkLayout {
            range: "10.241.0.0/16".parse().unwrap(),
            internal: false,
            vips: BTreeMap::new(),
        };
        assert_eq!(net.node_subnet(0).unwrap().to_string(), "10.241.0.0/24");
        assert_eq!(net.node_subnet(254).unwrap().to_string(), "10.241.254.0/24");
        assert_eq!(net.node_subnet(255), None, "the last /24 is the VIPs'");
        assert_eq!(net.vip_block().to_string(), "10.241.255.0/24");
        let small = NetworkLayout {
            range: "10.9.0.0/22".parse().unwrap(),
            ..net
        };
        assert_eq!(small.node_subnet(2).unwrap().to_string(), "10.9.2.0/24");
        assert_eq!(small.node_subnet(3), None);
    }
}
