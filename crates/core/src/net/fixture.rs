//! A small cluster's state for the net module's tests: stack `app` (web on front with alias
//! `www`, api on front and back, db on back in dnsrr mode) and stack `other` (its default
//! network), replicas on nodes 10 and 20.

use std::{net::SocketAddr, sync::Arc};

use std::net::{IpAddr, Ipv4Addr};

use super::services::NetView;
use crate::desired::spec::EndpointMode;
use crate::{
    desired::{
        hlc::Hlc,
        spec::{NetworkAttachment, NetworkDef, NetworkSpec, ServiceDef, ServiceSpec},
        state::DesiredState,
    },
    identity::{NodeId, NodeIdentity, NodeMeta},
    membership::{NodeStatus, NodeView},
    observed::{Health, NodeReport, ObservedState, SlotKey, TaskReport, TaskState},
};

pub fn at(wall_ms: u64) -> Hlc {
    Hlc {
        wall_ms,
        counter: 0,
        node: NodeId(1),
    }
}

pub fn svc(stack: &str, name: &str, nets: &[(&str, &[&str])], mode: EndpointMode) -> ServiceDef {
    ServiceDef {
        name: format!("{stack}_{name}"),
        stack: stack.into(),
        replicas: 2,
        spec: ServiceSpec {
            image: "demo:1".into(),
            endpoint_mode: mode,
            attachments: nets
                .iter()
                .map(|(n, a)| NetworkAttachment {
                    network: n.to_string(),
                    aliases: a.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
            ..ServiceSpec::default()
        },
    }
}

pub fn task(
    service: &str,
    slot: u64,
    state: TaskState,
    health: Health,
    addrs: &[(&str, Ipv4Addr)],
) -> TaskReport {
    TaskReport {
        service: service.into(),
        slot: SlotKey::Replica(slot),
        task_id: format!("t{slot}"),
        version: Hlc::ZERO,
        image: "demo:1".into(),
        force: 0,
        container_id: Some("c".into()),
        state,
        health,
        desired_running: true,
        error: None,
        endpoints: vec![],
        since_ms: 0,
        started_ms: None,
        addresses: addrs
            .iter()
            .map(|(n, ip)| (n.to_string(), IpAddr::V4(*ip)))
            .collect(),
    }
}

pub fn node(id: u128, status: NodeStatus) -> NodeView {
    let addr: SocketAddr = "192.0.2.1:7946".parse().unwrap();
    NodeView {
        identity: NodeIdentity {
            addr,
            id: NodeId(id),
            generation: 1,
            meta: Arc::new(NodeMeta::unknown(addr)),
        },
        status,
        since_ms: 0,
        is_self: false,
    }
}

/// Stack `app` (web on front with alias `www`, api on front and back, db on back in dnsrr)
/// and stack `other` (its own default network), on nodes 10 and 20.
pub struct World {
    pub view: NetView,
    pub state: DesiredState,
}

pub fn world(extra: impl FnOnce(&DesiredState, &mut Vec<(u128, TaskReport)>)) -> World {
    let mut s = DesiredState::default();
    s.admit_node(NodeId(10), at(1)).unwrap();
    s.admit_node(NodeId(20), at(2)).unwrap();
    let def = |n: &str| NetworkDef {
        name: n.into(),
        external: false,
        spec: NetworkSpec::default(),
    };
    s.deploy_stack_with_networks(
        "app",
        vec![def("app_front"), def("app_back")],
        vec![
            svc("app", "web", &[("app_front", &["www"])], EndpointMode::Vip),
            svc(
                "app",
                "api",
                &[("app_front", &[]), ("app_back", &[])],
                EndpointMode::Vip,
            ),
            svc(
                "app",
                "db",
                &[("app_back", &["database"])],
                EndpointMode::Dnsrr,
            ),
        ],
        at(3),
    )
    .unwrap();
    s.deploy_stack(
        "other",
        vec![svc("other", "web", &[], EndpointMode::Vip)],
        at(4),
    )
    .unwrap();
    let l = s.layout();
    let ip = |net: &str, node: u128, host: u64| {
        l.node_subnet(net, NodeId(node)).unwrap().nth(host).unwrap()
    };
    let (run, ok) = (TaskState::Running, Health::Healthy);
    let mut tasks = vec![
        (
            10,
            task(
                "app_web",
                1,
                run,
                ok,
                &[("app_front", ip("app_front", 10, 2))],
            ),
        ),
        (
            20,
            task(
                "app_web",
                2,
                run,
                Health::Starting,
                &[("app_front", ip("app_front", 20, 2))],
            ),
        ),
        (
            10,
            task(
                "app_api",
                1,
                run,
                Health::None,
                &[
                    ("app_front", ip("app_front", 10, 3)),
                    ("app_back", ip("app_back", 10, 2)),
                ],
            ),
        ),
        (
            10,
            task("app_db", 1, run, ok, &[("app_back", ip("app_back", 10, 3))]),
        ),
        (
            20,
            task("app_db", 2, run, ok, &[("app_back", ip("app_back", 20, 2))]),
        ),
        (
            20,
            task(
                "other_web",
                1,
                run,
                ok,
                &[("other_default", ip("other_default", 20, 2))],
            ),
        ),
    ];
    extra(&s, &mut tasks);
    let mut observed = ObservedState::default();
    for n in [10u128, 20] {
        observed.merge(NodeReport {
            node: NodeId(n),
            generation: 1,
            seq: 1,
            tasks: tasks
                .iter()
                .filter(|(k, _)| *k == n)
                .map(|(_, t)| t.clone())
                .collect(),
            history: vec![],
            gossip_keys: vec![],
        });
    }
    let nodes = [node(10, NodeStatus::Ready), node(20, NodeStatus::Ready)];
    let view = NetView::build(&s.services(), &l, &observed, &nodes);
    World { view, state: s }
}

pub fn addr(w: &World, net: &str, node: u128, host: u64) -> IpAddr {
    IpAddr::V4(
        w.state
            .layout()
            .node_subnet(net, NodeId(node))
            .unwrap()
            .nth(host)
            .unwrap(),
    )
}

pub fn vip(w: &World, net: &str, svc: &str) -> Ipv4Addr {
    w.state.layout().vip(net, svc).unwrap()
}
