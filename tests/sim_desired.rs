//! Desired-state replication in deterministic simulation: concurrent changes, nodes that miss
//! changes, and partitions. Every run is reproducible from its seed.

use shoal_core::{
    desired::spec::{ServiceDef, ServiceSpec},
    membership::NodeStatus,
    sim::{Sim, SimConfig},
};

fn service(stack: &str, name: &str, replicas: u64) -> ServiceDef {
    ServiceDef {
        name: format!("{stack}_{name}"),
        stack: stack.to_string(),
        replicas,
        spec: ServiceSpec {
            image: "shoal-demo:v1".into(),
            ..ServiceSpec::default()
        },
    }
}

fn cluster(n: usize, seed: u64, loss: f64) -> Sim {
    Sim::formed(
        n,
        SimConfig {
            seed,
            loss,
            ..SimConfig::default()
        },
    )
}

fn deploy(sim: &mut Sim, node: usize, stack: &str, services: Vec<ServiceDef>) {
    let stack = stack.to_string();
    sim.change(node, move |s, hlc| s.deploy_stack(&stack, services, hlc))
        .expect("deploy accepted");
}

fn replicas_everywhere(sim: &Sim, name: &str) -> Vec<Option<u64>> {
    (0..sim.len())
        .map(|i| sim.desired(i).service(name).map(|v| v.replicas))
        .collect()
}

#[test]
fn a_deploy_reaches_every_node_within_a_second() {
    let mut sim = cluster(5, 1, 0.0);
    deploy(&mut sim, 0, "app", vec![service("app", "web", 2)]);
    let took = sim
        .run_until(5_000, 10, |s| {
            (0..5).all(|i| s.desired(i).service("app_web").is_some())
        })
        .expect("deploy spread");
    assert!(took <= 1_000, "took {took} ms");
}

#[test]
fn concurrent_scales_converge_to_the_later_write_for_many_seeds() {
    for seed in 0..200 {
        let mut sim = cluster(5, seed, 0.02);
        deploy(&mut sim, 0, "app", vec![service("app", "web", 2)]);
        sim.run_for(2_000);
        // Two operators scale the same service on different nodes, a few ms apart or at once.
        let gap = seed % 7;
        sim.change(1, |s, hlc| s.scale("app_web", 3, hlc)).unwrap();
        let first = sim.desired(1).service("app_web").unwrap().updated;
        sim.run_for(gap);
        sim.change(3, |s, hlc| s.scale("app_web", 7, hlc)).unwrap();
        let second = sim.desired(3).service("app_web").unwrap().updated;
        let expected = if second > first { 7 } else { 3 };
        let took = sim.run_until(10_000, 10, |s| s.desired_converged());
        assert!(took.is_some(), "seed {seed}: no convergence");
        assert!(took.unwrap() <= 2_000, "seed {seed}: took {took:?}");
        assert_eq!(
            replicas_everywhere(&sim, "app_web"),
            vec![Some(expected); 5],
            "seed {seed}"
        );
    }
}

#[test]
fn a_node_down_during_a_deploy_catches_up_when_it_returns() {
    let mut sim = cluster(5, 5, 0.0);
    sim.crash(4);
    sim.run_for(1_000);
    deploy(&mut sim, 0, "app", vec![service("app", "web", 2)]);
    sim.run_for(2_000);
    assert!(sim.desired(4).service("app_web").is_none());
    sim.start(4, &[]);
    let took = sim.run_until(20_000, 50, |s| s.desired(4).service("app_web").is_some());
    assert!(took.is_some(), "node 4 never caught up");
}

#[test]
fn partitioned_deploys_merge_and_removals_stick() {
    for seed in 0..30 {
        let mut sim = cluster(5, seed, 0.0);
        deploy(&mut sim, 0, "old", vec![service("old", "db", 1)]);
        assert!(sim
            .run_until(5_000, 10, |s| s.desired_converged())
            .is_some());

        sim.partition(&[&[0, 1], &[2, 3, 4]]);
        sim.run_for(15_000);
        deploy(&mut sim, 0, "left", vec![service("left", "web", 2)]);
        deploy(&mut sim, 3, "right", vec![service("right", "api", 3)]);
        sim.change(2, |s, hlc| s.remove_stack("old", hlc)).unwrap();
        sim.run_for(10_000);
        sim.heal();

        let took = sim.run_until(120_000, 100, |s| {
            s.converged(NodeStatus::Down) && s.desired_converged()
        });
        assert!(
            took.is_some(),
            "seed {seed}: did not converge after healing"
        );
        for i in 0..5 {
            let d = sim.desired(i);
            assert!(d.service("left_web").is_some(), "seed {seed} node {i}");
            assert!(d.service("right_api").is_some(), "seed {seed} node {i}");
            assert!(
                d.service("old_db").is_none(),
                "seed {seed} node {i}: removal lost"
            );
        }
    }
}
