//! What a node's kernel must hold for the service networks, as data: routes to the other
//! nodes' subnets (direct, or over VXLAN), the VXLAN device's neighbours, and the iptables
//! rules of shoal's own chains (forwarding between members of a network, isolation between
//! networks, masquerading out of the cluster, and the virtual addresses' DNAT). The agent's
//! netplane (`src/agent/netplane/`) compares this with the kernel and fixes the difference.
//! Why each rule is there is told in `docs/networking.md`.

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{local_networks, services::NetView, Ipv4Net, Layout};
use crate::{desired::spec::EndpointMode, identity::NodeId};

/// The VXLAN device's name.
pub const VXLAN_DEVICE: &str = "shoal-vx0";
/// Its VXLAN network identifier (one for all shoal networks: routing, not bridging, separates
/// them).
pub const VXLAN_VNI: u32 = 4242;
/// The UDP port VXLAN travels on (IANA's): open it between nodes that do not share a link.
pub const VXLAN_PORT: u16 = 4789;
/// Routing protocol number shoal's routes carry (`ip route ... proto 57`), so that the
/// executor finds its own routes and never touches others'.
pub const ROUTE_PROTO: u8 = 57;
/// Filter chain jumped to from `DOCKER-USER` (or `FORWARD` without Docker).
pub const FORWARD_CHAIN: &str = "SHOAL-FORWARD";
/// Filter chain that drops traffic from one shoal network to another.
pub const ISOLATE_CHAIN: &str = "SHOAL-ISOLATE";
/// NAT chain jumped to from `PREROUTING` and `OUTPUT`: the virtual addresses.
pub const VIP_CHAIN: &str = "SHOAL-VIP";
/// NAT chain jumped to from `POSTROUTING`: masquerading out of the cluster, and hairpins.
pub const POSTROUTING_CHAIN: &str = "SHOAL-POSTROUTING";
/// Packet mark of a connection from a replica to its own service's virtual address (it may be
/// sent back to itself, and must then be masqueraded).
pub const HAIRPIN_MARK: u32 = 0x0002_0000;

/// How a peer's address is reached from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Link {
    /// On a shared link (no router between): a plain route via its address.
    Direct,
    /// Through routers: VXLAN to its address.
    Tunnel,
}

/// Another node, as the plan needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Peer {
    /// Its id.
    pub node: NodeId,
    /// Its address (the one it gossips from).
    pub addr: Ipv4Addr,
    /// How it is reached.
    pub link: Link,
}

/// Where a route sends packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Via {
    /// `via ADDR`: the peer's address, on a shared link.
    Gateway(Ipv4Addr),
    /// `via NEXT_HOP dev shoal-vx0 onlink`: the next hop (the peer's subnet's `.0`) is a
    /// neighbour on the VXLAN device whose MAC is the peer's device's.
    Vxlan(Ipv4Addr),
}

/// One route of shoal's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RouteSpec {
    /// A peer's subnet of a network.
    pub dest: Ipv4Net,
    /// Where to.
    pub via: Via,
}

/// The VXLAN device and what it must know of each tunnelled peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanSpec {
    /// This node's device MAC (derived from its id, as every peer derives it).
    pub mac: [u8; 6],
    /// Static neighbours: next hop → the peer device's MAC.
    pub neighbours: BTreeMap<Ipv4Addr, [u8; 6]>,
    /// Forwarding entries: the peer device's MAC → the peer's address.
    pub fdb: BTreeMap<[u8; 6], Ipv4Addr>,
}

/// An iptables table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Table {
    /// `filter`.
    Filter,
    /// `nat`.
    Nat,
}

impl Table {
    /// The name iptables knows it by.
    pub fn as_str(&self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }
}

/// One rule of one of shoal's chains: `iptables -t TABLE -A CHAIN ARGS...`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RuleSpec {
    /// The table.
    pub table: Table,
    /// The chain (one of shoal's).
    pub chain: &'static str,
    /// The match and target, as iptables arguments.
    pub args: Vec<String>,
}

/// The chains shoal owns, with their table, and where each is jumped to from.
pub const CHAINS: [(Table, &str, &[&str]); 4] = [
    (Table::Filter, FORWARD_CHAIN, &["DOCKER-USER"]),
    (Table::Filter, ISOLATE_CHAIN, &[]),
    (Table::Nat, VIP_CHAIN, &["PREROUTING", "OUTPUT"]),
    (Table::Nat, POSTROUTING_CHAIN, &["POSTROUTING"]),
];

/// Everything the kernel of one node must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Routes to the peers' subnets, sorted.
    pub routes: Vec<RouteSpec>,
    /// The VXLAN device, when some peer is tunnelled to.
    pub vxlan: Option<VxlanSpec>,
    /// The rules of shoal's chains, in order within each chain.
    pub rules: Vec<RuleSpec>,
}

/// The MAC of `node`'s VXLAN device: locally administered, unicast, from a hash of its id.
pub fn vtep_mac(node: NodeId) -> [u8; 6] {
    let digest = Sha256::new()
        .chain_update(b"shoal/net/vtep\0")
        .chain_update(node.0.to_be_bytes())
        .finalize();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// The plan for node `me`, given the layout, the services' view and the peers (any order; `me`
/// among them is ignored, as are peers with no slot yet).
pub fn plan(layout: &Layout, view: &NetView, me: NodeId, peers: &[Peer]) -> Plan {
    let mut plan = Plan::default();
    let mut peers: Vec<&Peer> = peers.iter().filter(|p| p.node != me).collect();
    peers.sort();
    peers.dedup_by_key(|p| p.node);
    let mut vxlan = VxlanSpec {
        mac: vtep_mac(me),
        neighbours: BTreeMap::new(),
        fdb: BTreeMap::new(),
    };
    for peer in &peers {
        let Some(slot) = layout.slots.get(&peer.node) else {
            continue;
        };
        for net in layout.networks.values() {
            let Some(dest) = net.node_subnet(*slot) else {
                continue;
            };
            let via = match peer.link {
                Link::Direct => Via::Gateway(peer.addr),
                Link::Tunnel => {
                    let mac = vtep_mac(peer.node);
                    vxlan.neighbours.insert(dest.addr(), mac);
                    vxlan.fdb.insert(mac, peer.addr);
                    Via::Vxlan(dest.addr())
                }
            };
            plan.routes.push(RouteSpec { dest, via });
        }
    }
    plan.routes.sort();
    if !vxlan.fdb.is_empty() {
        plan.vxlan = Some(vxlan);
    }
    plan.rules = rules(layout, view, me);
    plan
}

fn rule(table: Table, chain: &'static str, args: &[&str]) -> RuleSpec {
    RuleSpec {
        table,
        chain,
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

/// The rules of shoal's chains for node `me`.
pub fn rules(layout: &Layout, view: &NetView, me: NodeId) -> Vec<RuleSpec> {
    use Table::{Filter, Nat};
    let mut out = Vec::new();
    let ranges: Vec<(&str, Ipv4Net, bool)> = layout
        .networks
        .iter()
        .map(|(n, l)| (n.as_str(), l.range, l.internal))
        .collect();

    // Forwarding. A virtual address still a packet's destination here had no backend to DNAT
    // to: refuse it at once rather than let it out of the default route.
    for (_, range, _) in &ranges {
        let block = layout
            .networks
            .values()
            .find(|l| l.range == *range)
            .map(|l| l.vip_block());
        let block = block.expect("range of a layout network").to_string();
        out.push(rule(
            Filter,
            FORWARD_CHAIN,
            &[
                "-d",
                &block,
                "-p",
                "tcp",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ],
        ));
        out.push(rule(
            Filter,
            FORWARD_CHAIN,
            &[
                "-d",
                &block,
                "-j",
                "REJECT",
                "--reject-with",
                "icmp-port-unreachable",
            ],
        ));
    }
    // Members of a network talk to each other, across nodes.
    for (_, range, _) in &ranges {
        let r = range.to_string();
        out.push(rule(
            Filter,
            FORWARD_CHAIN,
            &["-s", &r, "-d", &r, "-j", "ACCEPT"],
        ));
    }
    // Internal networks: nothing in or out.
    for (_, range, internal) in &ranges {
        if *internal {
            let r = range.to_string();
            out.push(rule(Filter, FORWARD_CHAIN, &["-s", &r, "-j", "DROP"]));
            out.push(rule(Filter, FORWARD_CHAIN, &["-d", &r, "-j", "DROP"]));
        }
    }
    // One network to another: dropped (a service on both talks on each with its own address).
    for (_, range, _) in &ranges {
        let r = range.to_string();
        out.push(rule(
            Filter,
            FORWARD_CHAIN,
            &["-s", &r, "-j", ISOLATE_CHAIN],
        ));
    }
    for (_, range, _) in &ranges {
        let r = range.to_string();
        out.push(rule(Filter, ISOLATE_CHAIN, &["-d", &r, "-j", "DROP"]));
    }

    // Virtual addresses: DNAT to a ready replica, chosen at random per connection (conntrack
    // keeps the choice for the connection's life).
    let local: Vec<Ipv4Net> = local_networks(layout, me)
        .into_iter()
        .map(|l| l.subnet)
        .collect();
    let mark = format!("{HAIRPIN_MARK:#x}/{HAIRPIN_MARK:#x}");
    for service in view.services.values() {
        if service.mode != EndpointMode::Vip {
            continue;
        }
        for m in service.networks.values() {
            let (Some(vip), false) = (m.vip, m.ready.is_empty()) else {
                continue;
            };
            let vip = format!("{vip}/32");
            for b in m
                .ready
                .iter()
                .filter(|b| local.iter().any(|s| s.contains(**b)))
            {
                let src = format!("{b}/32");
                out.push(rule(
                    Nat,
                    VIP_CHAIN,
                    &["-s", &src, "-d", &vip, "-j", "MARK", "--set-xmark", &mark],
                ));
            }
            let n = m.ready.len();
            for (i, b) in m.ready.iter().enumerate() {
                let to = b.to_string();
                if i + 1 < n {
                    let p = format!("{:.5}", 1.0 / (n - i) as f64);
                    out.push(rule(
                        Nat,
                        VIP_CHAIN,
                        &[
                            "-d",
                            &vip,
                            "-m",
                            "statistic",
                            "--mode",
                            "random",
                            "--probability",
                            &p,
                            "-j",
                            "DNAT",
                            "--to-destination",
                            &to,
                        ],
                    ));
                } else {
                    out.push(rule(
                        Nat,
                        VIP_CHAIN,
                        &["-d", &vip, "-j", "DNAT", "--to-destination", &to],
                    ));
                }
            }
        }
    }

    // Leaving the cluster: masquerade, except to shoal's own networks (whose replicas see the
    // real source) and from internal networks (which never leave). A replica sent to its own
    // address through a virtual address is masqueraded too, or its answer would skip the DNAT.
    out.push(rule(
        Nat,
        POSTROUTING_CHAIN,
        &["-m", "mark", "--mark", &mark, "-j", "MASQUERADE"],
    ));
    for (_, range, _) in &ranges {
        let r = range.to_string();
        out.push(rule(Nat, POSTROUTING_CHAIN, &["-d", &r, "-j", "RETURN"]));
    }
    for l in local_networks(layout, me) {
        if layout.networks.get(&l.network).is_some_and(|n| !n.internal) {
            let s = l.subnet.to_string();
            out.push(rule(
                Nat,
                POSTROUTING_CHAIN,
                &["-s", &s, "-j", "MASQUERADE"],
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        desired::spec::{NetworkDef, NetworkSpec},
        net::fixture::*,
    };

    fn args(rules: &[RuleSpec], chain: &str) -> Vec<String> {
        rules
            .iter()
            .filter(|r| r.chain == chain)
            .map(|r| r.args.join(" "))
            .collect()
    }

    #[test]
    fn routes_direct_and_tunnelled() {
        let w = world(|_, _| {});
        let layout = w.state.layout();
        let peers = [
            Peer {
                node: NodeId(20),
                addr: "192.0.2.20".parse().unwrap(),
                link: Link::Direct,
            },
            Peer {
                node: NodeId(10),
                addr: "192.0.2.10".parse().unwrap(),
                link: Link::Direct,
            },
            // Not admitted: no subnets, no routes.
            Peer {
                node: NodeId(99),
                addr: "192.0.2.99".parse().unwrap(),
                link: Link::Direct,
            },
        ];
        let p = plan(&layout, &w.view, NodeId(10), &peers);
        // One route per network to node 20's subnet of it, none to itself.
        assert_eq!(p.routes.len(), layout.networks.len());
        for net in layout.networks.keys() {
            let dest = layout.node_subnet(net, NodeId(20)).unwrap();
            assert!(p.routes.contains(&RouteSpec {
                dest,
                via: Via::Gateway("192.0.2.20".parse().unwrap())
            }));
        }
        assert_eq!(p.vxlan, None);

        let tunnel = [Peer {
            link: Link::Tunnel,
            ..peers[0]
        }];
        let p = plan(&layout, &w.view, NodeId(10), &tunnel);
        let vx = p.vxlan.expect("a tunnelled peer needs the device");
        assert_eq!(vx.mac, vtep_mac(NodeId(10)));
        assert_eq!(
            vx.fdb,
            BTreeMap::from([(vtep_mac(NodeId(20)), "192.0.2.20".parse().unwrap())])
        );
        for r in &p.routes {
            assert_eq!(r.via, Via::Vxlan(r.dest.addr()));
            assert_eq!(vx.neighbours[&r.dest.addr()], vtep_mac(NodeId(20)));
        }
        // Every node derives the same MAC for a node; it is unicast and locally administered.
        let mac = vtep_mac(NodeId(20));
        assert_eq!(mac[0] & 0x03, 0x02);
        assert_ne!(mac, vtep_mac(NodeId(21)));
    }

    #[test]
    fn forwarding_is_allowed_within_a_network_only() {
        let w = world(|_, _| {});
        let layout = w.state.layout();
        let rules = rules(&layout, &w.view, NodeId(10));
        let fwd = args(&rules, FORWARD_CHAIN);
        for (name, net) in &layout.networks {
            let r = net.range.to_string();
            assert!(fwd.contains(&format!("-s {r} -d {r} -j ACCEPT")), "{name}");
            assert!(fwd.contains(&format!("-s {r} -j {ISOLATE_CHAIN}")));
            assert!(args(&rules, ISOLATE_CHAIN).contains(&format!("-d {r} -j DROP")));
            let block = net.vip_block().to_string();
            let reject = fwd
                .iter()
                .position(|a| a.starts_with(&format!("-d {block} ")));
            let accept = fwd
                .iter()
                .position(|a| *a == format!("-s {r} -d {r} -j ACCEPT"));
            assert!(
                reject < accept,
                "an unbacked VIP is refused before the accept"
            );
        }
        // Masquerading: out of this node's subnets, never towards shoal's ranges.
        let post = args(&rules, POSTROUTING_CHAIN);
        for l in local_networks(&layout, NodeId(10)) {
            assert!(post.contains(&format!("-s {} -j MASQUERADE", l.subnet)));
        }
        let first_masq = post.iter().position(|a| a.starts_with("-s ")).unwrap();
        let last_return = post.iter().rposition(|a| a.ends_with("RETURN")).unwrap();
        assert!(last_return < first_masq);
    }

    #[test]
    fn internal_networks_neither_leave_nor_masquerade() {
        let mut w = world(|_, _| {});
        let internal = NetworkDef {
            name: "vault".into(),
            external: false,
            spec: NetworkSpec {
                internal: true,
                ..NetworkSpec::default()
            },
        };
        w.state.create_network(internal, at(50)).unwrap();
        let layout = w.state.layout();
        let range = layout.networks["vault"].range.to_string();
        let rules = rules(&layout, &w.view, NodeId(10));
        let fwd = args(&rules, FORWARD_CHAIN);
        assert!(fwd.contains(&format!("-s {range} -j DROP")));
        assert!(fwd.contains(&format!("-d {range} -j DROP")));
        let own = layout.node_subnet("vault", NodeId(10)).unwrap();
        assert!(!args(&rules, POSTROUTING_CHAIN).contains(&format!("-s {own} -j MASQUERADE")));
    }

    #[test]
    fn virtual_addresses_dnat_to_ready_replicas() {
        let w = world(|_, _| {});
        let layout = w.state.layout();
        let rules = rules(&layout, &w.view, NodeId(10));
        let nat = args(&rules, VIP_CHAIN);
        // api has one ready replica on each of its networks (node 10): one DNAT each, and a
        // hairpin mark for it, since it is local.
        let api_front = vip(&w, "app_front", "app_api");
        let to = |net: &str, node: u128, host: u64| {
            layout
                .node_subnet(net, NodeId(node))
                .unwrap()
                .nth(host)
                .unwrap()
        };
        assert!(nat.contains(&format!(
            "-d {api_front}/32 -j DNAT --to-destination {}",
            to("app_front", 10, 3)
        )));
        assert!(nat.contains(&format!(
            "-s {}/32 -d {api_front}/32 -j MARK --set-xmark 0x20000/0x20000",
            to("app_front", 10, 3)
        )));
        // db is dnsrr: no DNAT. web's second replica is starting: only the first is a backend.
        let db = vip(&w, "app_back", "app_db");
        assert!(!nat.iter().any(|a| a.contains(&db.to_string())));
        let web = vip(&w, "app_front", "app_web");
        let web_rules: Vec<_> = nat
            .iter()
            .filter(|a| a.contains(&format!("-d {web}/32 -j DNAT")))
            .collect();
        assert_eq!(web_rules.len(), 1);
        // On node 20, other_web's replica is local, web's is not: no mark for web there.
        let rules20 = super::rules(&layout, &w.view, NodeId(20));
        let marks: Vec<_> = args(&rules20, VIP_CHAIN)
            .into_iter()
            .filter(|a| a.contains("MARK"))
            .collect();
        assert_eq!(marks.len(), 1, "{marks:?}");
    }

    #[test]
    fn several_backends_are_chosen_evenly() {
        let w = world(|s, tasks| {
            let l = s.layout();
            for (node, host) in [(10, 20), (20, 21)] {
                let ip = l
                    .node_subnet("other_default", NodeId(node))
                    .unwrap()
                    .nth(host)
                    .unwrap();
                tasks.push((
                    node,
                    task(
                        "other_web",
                        host,
                        crate::observed::TaskState::Running,
                        crate::observed::Health::None,
                        &[("other_default", ip)],
                    ),
                ));
            }
        });
        let layout = w.state.layout();
        let v = vip(&w, "other_default", "other_web");
        let nat: Vec<_> = args(&rules(&layout, &w.view, NodeId(10)), VIP_CHAIN)
            .into_iter()
            .filter(|a| a.starts_with(&format!("-d {v}/32")))
            .collect();
        assert_eq!(nat.len(), 3);
        assert!(nat[0].contains("--probability 0.33333"));
        assert!(nat[1].contains("--probability 0.50000"));
        assert!(!nat[2].contains("statistic"));
    }
}
