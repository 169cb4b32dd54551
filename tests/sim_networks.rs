//! The network verbs in deterministic simulation: a network created on one node is listed and
//! inspected on the others, `network rm` is refused while a service uses it, and creations and
//! removals made on both sides of a partition end the same on every node.

use shoal_core::{
    api::{network_id, Request, Response},
    desired::spec::{NetworkDef, NetworkSpec, ServiceDef, ServiceSpec},
    membership::NodeStatus,
    sim::{Sim, SimConfig},
};

fn formed(n: usize, seed: u64) -> Sim {
    Sim::formed(
        n,
        SimConfig {
            seed,
            ..SimConfig::default()
        },
    )
}

fn def(name: &str, subnet: Option<&str>) -> NetworkDef {
    NetworkDef {
        name: name.into(),
        external: false,
        spec: NetworkSpec {
            subnet: subnet.map(|s| s.parse().unwrap()),
            ..NetworkSpec::default()
        },
    }
}

/// Asks node `i` and runs until it answers (changes answer once durable and their pushes are
/// answered or timed out).
fn call(sim: &mut Sim, i: usize, request: Request) -> Response {
    sim.call(i, request, 10_000)
        .unwrap_or_else(|| panic!("node {i} did not answer within 10 s"))
}

fn error(response: Response) -> String {
    match response {
        Response::Error(e) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn create_anywhere_inspect_everywhere_and_rm_only_when_unused() {
    let mut sim = formed(3, 21);
    let created = call(
        &mut sim,
        0,
        Request::NetworkCreate {
            def: def("shared", Some("10.50.0.0/16")),
        },
    );
    let Response::Changed(receipt) = created else {
        panic!("create refused: {created:?}");
    };
    assert!(receipt.changed);
    assert!(sim
        .run_until(5_000, 10, |s| (0..3)
            .all(|i| s.desired(i).network("shared").is_some()))
        .is_some());

    let Response::Networks(list) = call(&mut sim, 2, Request::NetworkList) else {
        panic!("not a list");
    };
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "shared");
    assert_eq!(list[0].subnet, "10.50.0.0/16");
    assert!(list[0].services.is_empty());
    // Inspect by id prefix on another node: every node holds a slot, hence a subnet.
    let id = network_id("shared");
    let Response::Network(detail) = call(
        &mut sim,
        1,
        Request::NetworkInspect {
            network: id[..6].to_string(),
        },
    ) else {
        panic!("not a network");
    };
    assert_eq!(detail.info.name, "shared");
    assert_eq!(detail.peers.len(), 3, "{:?}", detail.peers);
    assert!(detail
        .peers
        .iter()
        .all(|p| p.subnet.starts_with("10.50.") && !p.name.is_empty()));

    // Refusals, each naming what is wrong.
    let e = error(call(
        &mut sim,
        1,
        Request::NetworkCreate {
            def: def("shared", None),
        },
    ));
    assert_eq!(e, "network with name shared already exists");
    let e = error(call(
        &mut sim,
        1,
        Request::NetworkCreate {
            def: def("small", Some("10.60.0.0/24")),
        },
    ));
    assert!(e.contains("10.60.0.0/24"), "{e}");
    let e = error(call(
        &mut sim,
        2,
        Request::NetworkInspect {
            network: "nope".into(),
        },
    ));
    assert_eq!(e, "network nope not found");

    // A service on it, created on node 2: node 1 refuses the removal, naming the service.
    let web = ServiceDef {
        name: "web".into(),
        stack: String::new(),
        replicas: 1,
        spec: ServiceSpec {
            image: "shoal-demo:v1".into(),
            networks: vec!["shared".into()],
            ..ServiceSpec::default()
        },
    };
    let r = call(&mut sim, 2, Request::ServiceCreate { def: Box::new(web) });
    assert!(matches!(r, Response::Changed(_)), "{r:?}");
    assert!(sim
        .run_until(5_000, 10, |s| s.desired(1).service("web").is_some())
        .is_some());
    let e = error(call(
        &mut sim,
        1,
        Request::NetworkRemove {
            network: "shared".into(),
        },
    ));
    assert!(e.contains("in use by service web"), "{e}");
    let Response::Network(detail) = call(
        &mut sim,
        0,
        Request::NetworkInspect {
            network: "shared".into(),
        },
    ) else {
        panic!("not a network");
    };
    assert_eq!(detail.info.services, ["web"]);
    assert_eq!(detail.attached[0].name, "web");

    // Unused again, it goes, on every node.
    let r = call(
        &mut sim,
        0,
        Request::ServiceRemove {
            names: vec!["web".into()],
        },
    );
    assert!(matches!(r, Response::Changed(_)), "{r:?}");
    assert!(sim
        .run_until(5_000, 10, |s| s.desired(1).service("web").is_none())
        .is_some());
    let r = call(
        &mut sim,
        1,
        Request::NetworkRemove {
            network: "shared".into(),
        },
    );
    assert!(matches!(r, Response::Changed(_)), "{r:?}");
    assert!(sim
        .run_until(5_000, 10, |s| (0..3)
            .all(|i| s.desired(i).network("shared").is_none()))
        .is_some());
    let e = error(call(
        &mut sim,
        2,
        Request::NetworkRemove {
            network: "shared".into(),
        },
    ));
    assert_eq!(e, "network shared not found");
}

#[test]
fn creations_and_removals_in_a_partition_converge() {
    let mut sim = formed(3, 22);
    // Both sides create `p`, then the minority removes its copy; the removal is the last write.
    sim.partition(&[&[0], &[1, 2]]);
    sim.run_for(100);
    let r = call(
        &mut sim,
        1,
        Request::NetworkCreate {
            def: def("p", Some("10.70.0.0/16")),
        },
    );
    assert!(matches!(r, Response::Changed(_)), "{r:?}");
    let r = call(
        &mut sim,
        0,
        Request::NetworkCreate {
            def: def("p", Some("10.80.0.0/16")),
        },
    );
    assert!(matches!(r, Response::Changed(_)), "{r:?}");
    // And `q` exists only on the majority's side.
    let r = call(
        &mut sim,
        2,
        Request::NetworkCreate {
            def: def("q", None),
        },
    );
    assert!(matches!(r, Response::Changed(_)), "{r:?}");
    let r = call(
        &mut sim,
        0,
        Request::NetworkRemove {
            network: "p".into(),
        },
    );
    assert!(matches!(r, Response::Changed(_)), "{r:?}");
    sim.heal();
    assert!(
        sim.run_until(30_000, 50, |s| s.desired_converged())
            .is_some(),
        "the states did not converge after the partition healed"
    );
    for i in 0..3 {
        let names: Vec<String> = sim
            .desired(i)
            .networks()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["q"], "node {i}");
    }
}

/// Every node's address slot, as node `i` sees the layout; checks the slots are distinct and
/// every moved claim is pinned (settling again would write nothing).
fn settled_slots(sim: &Sim, i: usize) -> Vec<u16> {
    let state = sim.desired(i);
    let layout = state.layout();
    let mut slots: Vec<u16> = (0..sim.len())
        .filter(|j| sim.is_running(*j))
        .map(|j| {
            *layout
                .slots
                .get(&sim.node_id(j))
                .unwrap_or_else(|| panic!("node {j} has no slot in node {i}'s layout"))
        })
        .collect();
    let mut distinct = slots.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), slots.len(), "slots collide: {slots:?}");
    let stamp = shoal_core::desired::hlc::Hlc {
        wall_ms: u64::MAX / 2,
        counter: 0,
        node: sim.node_id(i),
    };
    assert!(
        state.clone().settle_addresses(stamp).unwrap().is_empty(),
        "node {i}: moved claims are left unpinned"
    );
    slots.sort_unstable();
    slots
}

/// Sixteen nodes started at once all claim the lowest free slot they see, so their claims
/// collide; the layout moves the later ones the same way on every node, and one steward pins
/// them, so that every node ends with its own slot and the claims hold. Then nodes join on
/// both sides of a partition, collide again, and settle again once it heals, without moving
/// any node that held its slot.
#[test]
fn concurrent_joins_get_distinct_slots_and_the_steward_pins_them() {
    let n = 20;
    let mut sim = Sim::new(
        n,
        SimConfig {
            seed: 31,
            ..SimConfig::default()
        },
    );
    sim.start(0, &[]);
    for i in 1..16 {
        sim.start(i, &[0]);
    }
    let formed = |s: &Sim| s.converged(NodeStatus::Down) && s.desired_converged();
    assert!(sim.run_until(30_000, 50, formed).is_some());
    // Settling is done once the steward's writes have spread.
    sim.run_for(2_000);
    assert!(sim.run_until(30_000, 50, formed).is_some());
    let before = settled_slots(&sim, 7);
    for i in 0..16 {
        assert_eq!(settled_slots(&sim, i), before, "node {i} sees other slots");
    }
    let slot_of = |sim: &Sim, j: usize| sim.desired(0).layout().slots[&sim.node_id(j)];
    let held: Vec<u16> = (0..16).map(|j| slot_of(&sim, j)).collect();

    sim.partition(&[
        &[0, 1, 2, 3, 4, 5, 6, 7, 16, 17],
        &[8, 9, 10, 11, 12, 13, 14, 15, 18, 19],
    ]);
    sim.run_for(1_000);
    sim.start(16, &[1]);
    sim.start(17, &[2]);
    sim.start(18, &[9]);
    sim.start(19, &[10]);
    sim.run_for(15_000);
    sim.heal();
    assert!(sim.run_until(60_000, 50, formed).is_some());
    sim.run_for(2_000);
    assert!(sim.run_until(30_000, 50, formed).is_some());
    let after = settled_slots(&sim, 3);
    for i in 0..n {
        assert_eq!(settled_slots(&sim, i), after, "node {i} sees other slots");
    }
    let still: Vec<u16> = (0..16).map(|j| slot_of(&sim, j)).collect();
    assert_eq!(still, held, "a node that held its slot was moved");
}
