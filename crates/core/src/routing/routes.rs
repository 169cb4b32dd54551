//! The routing table: for every port published in ingress mode, the service behind it and the
//! replicas that may take its traffic. Every node computes it from the same desired and observed
//! state, so every node routes alike; it changes whenever a report, a member or a spec does.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use serde::{Deserialize, Serialize};

use super::{
    routers::{self, RouterSpec},
    sticky::{self, StickyCookie},
};
use crate::{
    desired::{
        spec::{Protocol, PublishMode},
        state::ServiceView,
    },
    identity::NodeId,
    membership::{NodeStatus, NodeView},
    observed::{ObservedState, TaskState, TasksByService},
};

/// One replica that may take traffic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Backend {
    /// Its task id (the sticky cookie's value).
    pub task_id: String,
    /// The node it runs on.
    pub node: NodeId,
    /// Where its container port is reachable from any node.
    pub addr: SocketAddr,
}

/// What one published port leads to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The service that publishes it.
    pub service: String,
    /// The container port it leads to.
    pub target: u16,
    /// Sticky sessions (the port is then proxied as HTTP); `None`: balanced at layer 4.
    pub sticky: Option<StickyCookie>,
    /// Replicas ready for traffic, in a stable order.
    pub backends: Vec<Backend>,
    /// Task ids of the service's other replicas that this node knows of (starting, unhealthy,
    /// being stopped, on a down node, or finished and still in their node's history): a sticky
    /// cookie naming one is not followed to its endpoint (see [`sticky::decide`]). Filled for
    /// sticky routes only, the only ones that read it.
    #[serde(default)]
    pub not_ready: BTreeSet<String>,
}

/// A port that more than one service publishes: the first by name gets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The port.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// The service that got it.
    pub winner: String,
    /// The one that did not.
    pub loser: String,
}

/// A Traefik router of a service (`routers`) and where it leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterRoute {
    /// The router: rule, priority, entry points, container port.
    pub router: RouterSpec,
    /// The service, its sticky cookie and its ready replicas (at `router.port`).
    pub route: Route,
}

/// Every port of the cluster published in ingress mode and where it leads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingTable {
    /// TCP ports, by published port.
    pub routes: BTreeMap<u16, Route>,
    /// UDP ports, by published port (never sticky).
    pub udp: BTreeMap<u16, Route>,
    /// Ports claimed twice, for a warning.
    pub conflicts: Vec<Conflict>,
    /// Every HTTP router of every service, in the order they are tried (see
    /// [`routers::order`]); each node serves them on its entry points.
    pub routers: Vec<RouterRoute>,
    /// The keys sticky cookies are signed and checked with, from the node's gossip keyring.
    /// Published with the table so that a rotation reaches the proxies with the routes; never
    /// serialized (they are secrets).
    #[serde(skip)]
    pub cookie_keys: sticky::CookieKeys,
}

impl RoutingTable {
    /// The routers that serve on entry point `name`, in the order they are tried.
    pub fn routers_on<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a RouterRoute> + 'a {
        self.routers
            .iter()
            .filter(move |r| r.router.serves_on(name))
    }
}

/// The routing table for `services`, given what every node reports and how membership sees the
/// nodes. A replica takes traffic when it runs, its healthcheck (if any) passes, and it reports an
/// address for the port: its node lists it among its tasks. That includes a replica kept running
/// until its successor is ready (a start-first update or a handoff), which serves until then; a
/// replica being stopped leaves its node's task list in the same round as its stop is issued.
/// Replicas on nodes declared down or gone never take traffic (their reports are stale); those on
/// nodes only suspected of failure do, and passive health takes out the ones that do not answer.
pub fn routing_table(
    services: &[ServiceView],
    observed: &ObservedState,
    nodes: &[NodeView],
) -> RoutingTable {
    let status: BTreeMap<NodeId, NodeStatus> =
        nodes.iter().map(|v| (v.identity.id, v.status)).collect();
    let mut table = RoutingTable::default();
    let tasks = observed.by_service();
    let mut by_name: Vec<&ServiceView> = services.iter().collect();
    by_name.sort_by(|a, b| a.name.cmp(&b.name));

    for service in by_name {
        let ports = service
            .spec
            .ports
            .iter()
            .filter(|p| p.mode == PublishMode::Ingress);
        for port in ports {
            let Some(published) = port.published else {
                continue;
            };
            let taken = match port.protocol {
                Protocol::Tcp => &table.routes,
                Protocol::Udp => &table.udp,
            };
            if let Some(existing) = taken.get(&published) {
                if existing.service != service.name {
                    table.conflicts.push(Conflict {
                        port: published,
                        protocol: port.protocol,
                        winner: existing.service.clone(),
                        loser: service.name.clone(),
                    });
                }
                continue;
            }
            let backends =
                ready_backends(tasks.of(&service.name), port.target, port.protocol, &status);
            // Deploys reject unreadable labels; an old entry with one is not sticky. UDP has no
            // cookies.
            let sticky = match port.protocol {
                Protocol::Tcp => sticky::from_labels(&service.name, &service.spec.labels)
                    .ok()
                    .flatten(),
                Protocol::Udp => None,
            };
            let not_ready = match sticky {
                Some(_) => not_ready(&tasks, &service.name, &backends),
                None => BTreeSet::new(),
            };
            let route = Route {
                service: service.name.clone(),
                target: port.target,
                sticky,
                backends,
                not_ready,
            };
            match port.protocol {
                Protocol::Tcp => table.routes.insert(published, route),
                Protocol::Udp => table.udp.insert(published, route),
            };
        }
        // Deploys refuse unreadable router labels; an old entry with one has no routers.
        let Ok(routing) =
            routers::from_labels(&service.name, &service.spec.labels, &service.spec.ports)
        else {
            continue;
        };
        for router in routing.routers {
            let backends =
                ready_backends(tasks.of(&service.name), router.port, Protocol::Tcp, &status);
            let sticky = sticky::from_labels(&service.name, &service.spec.labels)
                .ok()
                .flatten();
            let not_ready = match sticky {
                Some(_) => not_ready(&tasks, &service.name, &backends),
                None => BTreeSet::new(),
            };
            let route = Route {
                service: service.name.clone(),
                target: router.port,
                sticky,
                backends,
                not_ready,
            };
            table.routers.push(RouterRoute { router, route });
        }
    }
    table
        .routers
        .sort_by_key(|r| routers::order(&r.router, &r.route.service));
    table
}

/// The task ids of `service` this node knows of, current or finished, that are not among
/// `backends`.
fn not_ready(tasks: &TasksByService<'_>, service: &str, backends: &[Backend]) -> BTreeSet<String> {
    tasks
        .of(service)
        .iter()
        .chain(tasks.history_of(service))
        .map(|(_, task)| &task.task_id)
        .filter(|id| !backends.iter().any(|b| &b.task_id == *id))
        .cloned()
        .collect()
}

/// The replicas among `tasks` ready for traffic to container port `target`, in a stable order.
fn ready_backends(
    tasks: &[(NodeId, &crate::observed::TaskReport)],
    target: u16,
    protocol: Protocol,
    status: &BTreeMap<NodeId, NodeStatus>,
) -> Vec<Backend> {
    let mut backends = BTreeSet::new();
    for &(node, task) in tasks {
        let usable = task.state == TaskState::Running && task.health.is_ready();
        let endpoint = task
            .endpoints
            .iter()
            .find(|e| e.port == target && e.protocol == protocol);
        let (Some(endpoint), true) = (endpoint, usable) else {
            continue;
        };
        let backend = Backend {
            task_id: task.task_id.clone(),
            node,
            addr: endpoint.addr,
        };
        // A suspect node's replicas stay in: suspicion is often false (a loaded host, a lost
        // probe), and moving sticky sessions off it for that would be worse than the one
        // connection that waits out the connect timeout if it really died.
        if let Some(NodeStatus::Ready | NodeStatus::Suspect) = status.get(&node) {
            backends.insert(backend);
        }
    }
    backends.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        desired::{
            hlc::Hlc,
            spec::{PortSpec, ServiceSpec},
        },
        identity::{NodeIdentity, NodeMeta},
        observed::{Endpoint, Health, NodeReport, SlotKey, TaskReport},
    };

    fn service(name: &str, ports: &[(u16, u16)], labels: &[(&str, &str)]) -> ServiceView {
        ServiceView {
            name: name.into(),
            stack: "s".into(),
            replicas: 2,
            spec: ServiceSpec {
                image: "img".into(),
                ports: ports
                    .iter()
                    .map(|(published, target)| PortSpec {
                        target: *target,
                        published: Some(*published),
                        protocol: Protocol::Tcp,
                        mode: PublishMode::Ingress,
                    })
                    .collect(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            },
            version: Hlc::ZERO,
            force: 0,
            updated: Hlc::ZERO,
            update_status: None,
            can_roll_back: false,
        }
    }

    fn task(service: &str, slot: u64, state: TaskState, health: Health, port: u16) -> TaskReport {
        TaskReport {
            service: service.into(),
            slot: SlotKey::Replica(slot),
            task_id: format!("t{slot}"),
            version: Hlc::ZERO,
            image: "img".into(),
            force: 0,
            container_id: Some("c".into()),
            state,
            health,
            desired_running: true,
            error: None,
            endpoints: vec![Endpoint {
                port,
                protocol: Protocol::Tcp,
                addr: SocketAddr::from(([10, 0, 0, slot as u8], 30000 + port)),
            }],
            since_ms: 0,
            started_ms: None,
            addresses: vec![],
        }
    }

    fn view(id: u128, status: NodeStatus) -> NodeView {
        NodeView {
            identity: NodeIdentity {
                addr: SocketAddr::from(([10, 0, 0, id as u8], 7946)),
                id: NodeId(id),
                generation: 1,
                meta: Arc::new(NodeMeta::unknown(SocketAddr::from(([10, 0, 0, 1], 7947)))),
            },
            status,
            since_ms: 0,
            is_self: false,
        }
    }

    fn observed(tasks: Vec<(u128, TaskReport)>) -> ObservedState {
        let mut by_node: BTreeMap<u128, Vec<TaskReport>> = BTreeMap::new();
        for (node, t) in tasks {
            by_node.entry(node).or_default().push(t);
        }
        let mut o = ObservedState::default();
        for (node, tasks) in by_node {
            o.merge(NodeReport {
                node: NodeId(node),
                generation: 1,
                seq: 1,
                tasks,
                history: vec![],
                gossip_keys: vec![],
            });
        }
        o
    }

    #[test]
    fn only_ready_replicas_take_traffic() {
        let services = [service("web", &[(80, 8080)], &[])];
        // Kept running until its successor is ready: it still serves.
        let mut handing_off = task("web", 4, TaskState::Running, Health::None, 8080);
        handing_off.desired_running = false;
        let o = observed(vec![
            (1, task("web", 1, TaskState::Running, Health::Healthy, 8080)),
            (
                1,
                task("web", 2, TaskState::Running, Health::Starting, 8080),
            ),
            (2, task("web", 3, TaskState::Running, Health::None, 8080)),
            (2, handing_off),
            (2, task("web", 5, TaskState::Starting, Health::None, 8080)),
            (
                2,
                task("web", 6, TaskState::Running, Health::Unhealthy, 8080),
            ),
            (2, task("web", 7, TaskState::Running, Health::None, 9999)),
        ]);
        let nodes = [view(1, NodeStatus::Ready), view(2, NodeStatus::Ready)];
        let table = routing_table(&services, &o, &nodes);
        let route = &table.routes[&80];
        assert_eq!(route.target, 8080);
        assert_eq!(route.sticky, None);
        let ids: Vec<&str> = route.backends.iter().map(|b| b.task_id.as_str()).collect();
        assert_eq!(ids, ["t1", "t3", "t4"]);
    }

    #[test]
    fn sticky_routes_know_the_replicas_that_are_not_ready() {
        let sticky = [("shoal.ingress.sticky", "true")];
        let services = [
            service("web", &[(80, 8080)], &sticky),
            service("plain", &[(81, 8080)], &[]),
        ];
        let mut o = observed(vec![
            (1, task("web", 1, TaskState::Running, Health::None, 8080)),
            (
                1,
                task("web", 2, TaskState::Running, Health::Starting, 8080),
            ),
            (2, task("web", 3, TaskState::Running, Health::None, 8080)),
            (1, task("plain", 4, TaskState::Starting, Health::None, 8080)),
        ]);
        // Node 2's finished replica, in its history.
        let mut report = o.get(NodeId(2)).unwrap().clone();
        report.seq += 1;
        report.history = vec![task("web", 9, TaskState::Failed, Health::None, 8080)];
        o.merge(report);
        // Node 2 is down: its running replica is known, and not ready.
        let nodes = [view(1, NodeStatus::Ready), view(2, NodeStatus::Down)];
        let table = routing_table(&services, &o, &nodes);
        let web = &table.routes[&80];
        assert_eq!(web.backends.len(), 1);
        assert_eq!(
            web.not_ready.iter().map(String::as_str).collect::<Vec<_>>(),
            ["t2", "t3", "t9"]
        );
        assert!(table.routes[&81].not_ready.is_empty(), "layer 4 needs none");
    }

    #[test]
    fn down_and_departed_nodes_are_not_routed_to_suspect_ones_are() {
        let services = [service("web", &[(80, 8080)], &[])];
        let o = observed(vec![
            (1, task("web", 1, TaskState::Running, Health::None, 8080)),
            (2, task("web", 2, TaskState::Running, Health::None, 8080)),
            (3, task("web", 3, TaskState::Running, Health::None, 8080)),
        ]);
        let ids = |nodes: &[NodeView]| -> Vec<String> {
            routing_table(&services, &o, nodes).routes[&80]
                .backends
                .iter()
                .map(|b| b.task_id.clone())
                .collect()
        };
        let all = [
            view(1, NodeStatus::Ready),
            view(2, NodeStatus::Suspect),
            view(3, NodeStatus::Down),
        ];
        assert_eq!(ids(&all), ["t1", "t2"]);
        let left = [view(1, NodeStatus::Left), view(2, NodeStatus::Suspect)];
        assert_eq!(ids(&left), ["t2"]);
        assert!(ids(&[]).is_empty(), "unknown nodes are not routed to");
    }

    #[test]
    fn routers_lead_to_their_ready_replicas_in_priority_order() {
        let router = |name: &str, rule: &str| {
            service(
                name,
                &[],
                &[
                    (&format!("traefik.http.routers.{name}.rule"), rule),
                    (
                        &format!("traefik.http.services.{name}.loadbalancer.server.port"),
                        "8080",
                    ),
                ],
            )
        };
        let services = [
            router("root", "PathPrefix(`/`)"),
            router("api", "PathPrefix(`/api/`)"),
        ];
        let o = observed(vec![
            (1, task("api", 1, TaskState::Running, Health::None, 8080)),
            (
                1,
                task("api", 2, TaskState::Running, Health::Starting, 8080),
            ),
            (1, task("root", 3, TaskState::Running, Health::None, 8080)),
        ]);
        let table = routing_table(&services, &o, &[view(1, NodeStatus::Ready)]);
        assert!(table.routes.is_empty(), "no published port");
        let order: Vec<&str> = table
            .routers
            .iter()
            .map(|r| r.route.service.as_str())
            .collect();
        assert_eq!(order, ["api", "root"], "the longer rule first");
        let ids: Vec<&str> = table.routers[0]
            .route
            .backends
            .iter()
            .map(|b| b.task_id.as_str())
            .collect();
        assert_eq!(ids, ["t1"]);
        assert_eq!(table.routers_on("web").count(), 2);
    }

    #[test]
    fn a_port_published_twice_goes_to_the_first_service_by_name() {
        let services = [
            service("b_web", &[(80, 8080)], &[]),
            service("a_web", &[(80, 8080)], &[]),
        ];
        let table = routing_table(&services, &ObservedState::default(), &[]);
        assert_eq!(table.routes[&80].service, "a_web");
        assert_eq!(
            table.conflicts,
            [Conflict {
                port: 80,
                protocol: Protocol::Tcp,
                winner: "a_web".into(),
                loser: "b_web".into()
            }]
        );
    }

    #[test]
    fn sticky_labels_udp_and_unpublished_and_host_ports() {
        let mut svc = service("web", &[(80, 8080)], &[("shoal.ingress.sticky", "true")]);
        svc.spec.ports.extend([
            PortSpec {
                target: 53,
                published: Some(53),
                protocol: Protocol::Udp,
                mode: PublishMode::Ingress,
            },
            PortSpec {
                target: 9000,
                published: Some(9000),
                protocol: Protocol::Tcp,
                mode: PublishMode::Host,
            },
            PortSpec {
                target: 7000,
                published: None,
                protocol: Protocol::Tcp,
                mode: PublishMode::Ingress,
            },
        ]);
        let mut dns = task("web", 1, TaskState::Running, Health::None, 53);
        dns.endpoints[0].protocol = Protocol::Udp;
        let o = observed(vec![
            (1, dns),
            // The same port number over TCP is another endpoint.
            (1, task("web", 2, TaskState::Running, Health::None, 53)),
        ]);
        let table = routing_table(&[svc], &o, &[view(1, NodeStatus::Ready)]);
        assert_eq!(table.routes.keys().collect::<Vec<_>>(), [&80]);
        assert_eq!(
            table.routes[&80].sticky,
            Some(StickyCookie::named("shoal_web"))
        );
        let udp = &table.udp[&53];
        assert_eq!(udp.sticky, None, "no cookies over UDP");
        let ids: Vec<&str> = udp.backends.iter().map(|b| b.task_id.as_str()).collect();
        assert_eq!(ids, ["t1"]);
    }
}
