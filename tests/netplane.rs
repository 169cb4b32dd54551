//! The netplane against a real kernel, in two network namespaces made for the test and joined
//! by a veth pair (198.51.100.1 and .2, addresses that never leave them). Each namespace plays a
//! node: a bridge with no ports holds its gateway address, as the node's bridge would. The plan comes
//! from the core (`net::plane::plan`), as the agent makes it.
//!
//! Needs root and iproute2 and iptables; without them the tests print why and pass, except with
//! `CI=true`, where they fail. Namespaces are named `p6test-*` and deleted at the end.
#![cfg(target_os = "linux")]

use std::process::Command;

use shoal::agent::netplane::Netplane;
use shoal_core::{
    desired::{
        hlc::Hlc,
        spec::{NetworkDef, NetworkSpec},
        state::DesiredState,
    },
    identity::NodeId,
    net::{
        plane::{plan, Link, Peer, Plan, FORWARD_CHAIN, VXLAN_DEVICE},
        services::NetView,
    },
};

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn usable() -> bool {
    let reason = if sh(&["id", "-u"]).map(|u| u.trim() == "0") != Ok(true) {
        Some("not root".to_string())
    } else if let Err(e) = sh(&["ip", "netns", "list"]) {
        Some(format!("no `ip netns`: {e}"))
    } else if sh(&["iptables-restore", "--version"]).is_err() {
        Some("no iptables-restore".to_string())
    } else if sh(&["busybox", "ping", "--help"]).is_err() && sh(&["busybox"]).is_err() {
        Some("no busybox (for ping)".to_string())
    } else {
        None
    };
    match reason {
        None => true,
        Some(r) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true and the netplane cannot be tested: {r}")
        }
        Some(r) => {
            eprintln!("skipping: {r}");
            false
        }
    }
}

/// Two namespaces joined by a veth pair; deleted on drop.
struct Pair {
    a: String,
    b: String,
}

impl Pair {
    fn new() -> Pair {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let (a, b) = (format!("p6test-a-{tag}"), format!("p6test-b-{tag}"));
        let pair = Pair { a, b };
        let (a, b) = (pair.a.as_str(), pair.b.as_str());
        for ns in [a, b] {
            sh(&["ip", "netns", "add", ns]).unwrap();
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]).unwrap();
        }
        let (va, vb) = (format!("p6a{tag}"), format!("p6b{tag}"));
        sh(&[
            "ip", "link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b,
        ])
        .unwrap();
        for (ns, dev, addr) in [(a, &va, "198.51.100.1/24"), (b, &vb, "198.51.100.2/24")] {
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]).unwrap();
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]).unwrap();
        }
        pair
    }

    /// A bridge in `ns` with `addr` (the node's bridge, as far as routing cares).
    fn gateway(&self, ns: &str, addr: &str) {
        sh(&["ip", "-n", ns, "link", "add", "p6br", "type", "bridge"]).unwrap();
        sh(&["ip", "-n", ns, "addr", "add", addr, "dev", "p6br"]).unwrap();
        sh(&["ip", "-n", ns, "link", "set", "p6br", "up"]).unwrap();
    }

    fn ping(&self, ns: &str, from: &str, to: &str) -> bool {
        sh(&[
            "ip", "netns", "exec", ns, "busybox", "ping", "-c", "1", "-W", "2", "-I", from, to,
        ])
        .is_ok()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

fn at(wall_ms: u64) -> Hlc {
    Hlc {
        wall_ms,
        counter: 0,
        node: NodeId(1),
    }
}

/// Two admitted nodes and one network; the plan of each, given how it reaches the other.
fn plans(link: Link) -> (DesiredState, Plan, Plan) {
    let mut s = DesiredState::default();
    s.admit_node(NodeId(1), at(1)).unwrap();
    s.admit_node(NodeId(2), at(2)).unwrap();
    let def = NetworkDef {
        name: "p6test-net".into(),
        external: false,
        spec: NetworkSpec::default(),
    };
    s.create_network(def, at(3)).unwrap();
    let layout = s.layout();
    let view = NetView::build(&s.services(), &layout, &Default::default(), &[]);
    let peer = |node, addr: &str| Peer {
        node: NodeId(node),
        addr: addr.parse().unwrap(),
        link,
    };
    let a = plan(&layout, &view, NodeId(1), &[peer(2, "198.51.100.2")]);
    let b = plan(&layout, &view, NodeId(2), &[peer(1, "198.51.100.1")]);
    (s, a, b)
}

fn gateways(s: &DesiredState) -> (String, String) {
    let l = s.layout();
    let gw = |n| l.gateway("p6test-net", NodeId(n)).unwrap();
    (gw(1).to_string(), gw(2).to_string())
}

#[test]
fn direct_routes_then_vxlan_then_nothing() {
    if !usable() {
        return;
    }
    let pair = Pair::new();
    let (na, nb) = (Netplane::in_netns(&pair.a), Netplane::in_netns(&pair.b));
    assert_eq!(
        na.link_of("198.51.100.2".parse().unwrap()).unwrap(),
        Link::Direct
    );

    let (s, pa, pb) = plans(Link::Direct);
    let (ga, gb) = gateways(&s);
    let subnet = |gw: &str| format!("{gw}/24");
    pair.gateway(&pair.a, &subnet(&ga));
    pair.gateway(&pair.b, &subnet(&gb));
    assert!(!pair.ping(&pair.a, &ga, &gb), "no route yet");

    let applied = na.apply(&pa).unwrap();
    assert_eq!(applied.routes_set, 1);
    assert!(applied.rules_changed);
    nb.apply(&pb).unwrap();
    assert!(pair.ping(&pair.a, &ga, &gb), "direct route");
    // Nothing to do the second time.
    let again = na.apply(&pa).unwrap();
    assert_eq!(again, Default::default(), "a second apply changes nothing");
    let rules = sh(&[
        "ip",
        "netns",
        "exec",
        &pair.a,
        "iptables-save",
        "-t",
        "filter",
    ])
    .unwrap();
    assert!(
        rules.contains(&format!("-A FORWARD -j {FORWARD_CHAIN}")),
        "{rules}"
    );
    assert!(
        rules.contains(&format!("-A {FORWARD_CHAIN} -s ")),
        "{rules}"
    );

    // The same over VXLAN (through the same link, as a routed one would be).
    let (_, ta, tb) = plans(Link::Tunnel);
    let applied = na.apply(&ta).unwrap();
    assert!(applied.device_changed && applied.routes_set == 1);
    nb.apply(&tb).unwrap();
    let routes = sh(&["ip", "-n", &pair.a, "route", "show", "proto", "57"]).unwrap();
    assert!(routes.contains(VXLAN_DEVICE), "{routes}");
    assert!(pair.ping(&pair.a, &ga, &gb), "over VXLAN");
    assert_eq!(na.apply(&ta).unwrap(), Default::default());

    // An empty plan removes routes and device; clear removes the chains.
    let applied = na.apply(&Plan::default()).unwrap();
    assert!(
        applied.device_changed && applied.routes_removed == 1,
        "{applied:?}"
    );
    assert!(sh(&["ip", "-n", &pair.a, "link", "show", VXLAN_DEVICE]).is_err());
    na.clear().unwrap();
    let rules = sh(&[
        "ip",
        "netns",
        "exec",
        &pair.a,
        "iptables-save",
        "-t",
        "filter",
    ])
    .unwrap();
    assert!(!rules.contains(FORWARD_CHAIN), "{rules}");
    let nat = sh(&["ip", "netns", "exec", &pair.a, "iptables-save", "-t", "nat"]).unwrap();
    assert!(!nat.contains("SHOAL-"), "{nat}");
}

#[test]
fn a_virtual_address_reaches_a_replica_on_the_other_node() {
    use std::{net::SocketAddr, sync::Arc};

    use shoal_core::{
        desired::spec::{NetworkAttachment, ServiceDef, ServiceSpec},
        identity::{NodeIdentity, NodeMeta},
        membership::{NodeStatus, NodeView},
        observed::{Health, NodeReport, ObservedState, SlotKey, TaskReport, TaskState},
    };

    if !usable() {
        return;
    }
    let pair = Pair::new();
    let (s, _, _) = plans(Link::Direct);
    let mut s = s;
    let web = ServiceDef {
        name: "p6_web".into(),
        stack: "p6".into(),
        replicas: 1,
        spec: ServiceSpec {
            image: "none".into(),
            attachments: vec![NetworkAttachment {
                network: "p6test-net".into(),
                aliases: vec![],
            }],
            ..Default::default()
        },
    };
    s.deploy_stack("p6", vec![web], at(4)).unwrap();
    let (ga, gb) = gateways(&s);
    pair.gateway(&pair.a, &format!("{ga}/24"));
    pair.gateway(&pair.b, &format!("{gb}/24"));
    // The "replica" is node 2's gateway address: it answers pings.
    let mut observed = ObservedState::default();
    observed.merge(NodeReport {
        node: NodeId(2),
        generation: 1,
        seq: 1,
        tasks: vec![TaskReport {
            service: "p6_web".into(),
            slot: SlotKey::Replica(1),
            task_id: "t1".into(),
            version: Hlc::ZERO,
            image: "none".into(),
            force: 0,
            container_id: Some("c".into()),
            state: TaskState::Running,
            health: Health::None,
            desired_running: true,
            error: None,
            endpoints: vec![],
            since_ms: 0,
            started_ms: None,
            addresses: vec![("p6test-net".into(), gb.parse().unwrap())],
        }],
        history: vec![],
        gossip_keys: vec![],
    });
    let addr: SocketAddr = "198.51.100.2:7946".parse().unwrap();
    let nodes = [NodeView {
        identity: NodeIdentity {
            addr,
            id: NodeId(2),
            generation: 1,
            meta: Arc::new(NodeMeta::unknown(addr)),
        },
        status: NodeStatus::Ready,
        since_ms: 0,
        is_self: false,
    }];
    let layout = s.layout();
    let view = NetView::build(&s.services(), &layout, &observed, &nodes);
    let peer = |node, addr: &str| Peer {
        node: NodeId(node),
        addr: addr.parse().unwrap(),
        link: Link::Direct,
    };
    let pa = plan(&layout, &view, NodeId(1), &[peer(2, "198.51.100.2")]);
    let pb = plan(&layout, &view, NodeId(2), &[peer(1, "198.51.100.1")]);
    Netplane::in_netns(&pair.a).apply(&pa).unwrap();
    Netplane::in_netns(&pair.b).apply(&pb).unwrap();
    // A host has a default route: a local packet is routed (then DNAT'ed and routed again)
    // only if some route matches it first.
    sh(&[
        "ip",
        "-n",
        &pair.a,
        "route",
        "add",
        "default",
        "via",
        "198.51.100.2",
    ])
    .unwrap();
    let vip = layout.vip("p6test-net", "p6_web").unwrap().to_string();
    assert!(
        pair.ping(&pair.a, &ga, &vip),
        "the VIP leads to node 2's replica"
    );
    let nat = sh(&["ip", "netns", "exec", &pair.a, "iptables-save", "-t", "nat"]).unwrap();
    assert!(nat.contains(&format!("--to-destination {gb}")), "{nat}");
}
