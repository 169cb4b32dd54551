//! Claiming and healing in deterministic simulation: every node runs the real reconciler against
//! a fake container runtime. After quiescence every service runs exactly its replicas, each on an
//! eligible node, spread within one per node.

use shoal_core::{
    desired::spec::{Availability, ServiceDef, ServiceSpec},
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
            restart_policy: shoal_core::desired::spec::RestartPolicy {
                delay_ms: 0,
                ..Default::default()
            },
            ..ServiceSpec::default()
        },
    }
}

fn cluster(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(
        n,
        SimConfig {
            seed,
            ..SimConfig::default()
        },
    );
    sim.start(0, &[]);
    for i in 1..n {
        sim.start(i, &[0]);
    }
    assert!(sim
        .run_until(60_000, 100, |s| s.converged(NodeStatus::Down))
        .is_some());
    sim
}

/// Runs until the cluster runs exactly what it should; on failure shows what runs and what the
/// reports say about the service at fault. `SIMLOG=info` (a tracing filter) shows the nodes' logs.
fn settle(sim: &mut Sim, what: &str) -> u64 {
    let filter = std::env::var("SIMLOG").unwrap_or_else(|_| "off".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .try_init();
    let took = sim.run_until(120_000, 200, |s| {
        s.desired_converged() && s.check_workload().is_ok()
    });
    match took {
        Some(ms) => ms,
        None => {
            let err = sim.check_workload().unwrap_err();
            if let Some(svc) = err.split(':').next() {
                eprintln!("{}", sim.describe(svc));
                for i in 0..sim.len() {
                    let Some(n) = sim.node(i) else { continue };
                    for r in n.observed().reports() {
                        for t in r.tasks.iter().filter(|t| t.service == svc) {
                            eprintln!(
                                "node {i} sees {}: slot {} {:?} desired={} v={}",
                                r.node.short(),
                                t.slot,
                                t.state,
                                t.desired_running,
                                t.version.wall_ms % 100000
                            );
                        }
                    }
                    break;
                }
            }
            panic!("{what}: {err}")
        }
    }
}

#[test]
fn replicas_start_heal_and_scale() {
    let mut sim = cluster(5, 1);
    sim.change(0, |s, hlc| {
        s.deploy_stack(
            "app",
            vec![service("app", "web", 7), service("app", "api", 2)],
            hlc,
        )
    })
    .unwrap();
    settle(&mut sim, "initial deploy");

    // A container dies: a new one replaces it.
    let victim = (0..5).find(|&i| sim.containers_on(i) > 0).unwrap();
    assert!(sim.kill_container(victim));
    settle(&mut sim, "after a container died");

    // Scale up and down, then remove a service.
    sim.change(3, |s, hlc| s.scale("app_web", 12, hlc)).unwrap();
    settle(&mut sim, "scale up");
    sim.change(2, |s, hlc| s.scale("app_web", 3, hlc)).unwrap();
    settle(&mut sim, "scale down");
    sim.change(1, |s, hlc| s.remove_service("app_api", hlc))
        .unwrap();
    settle(&mut sim, "service removed");
}

#[test]
fn a_lost_node_slots_run_elsewhere_and_its_return_creates_no_duplicates() {
    let mut sim = cluster(5, 2);
    sim.change(0, |s, hlc| {
        s.deploy_stack("app", vec![service("app", "web", 10)], hlc)
    })
    .unwrap();
    settle(&mut sim, "deploy");
    let before = ps(&mut sim, 0, "app_web");
    let lost_name = before
        .iter()
        .find(|t| !t.container_id.is_empty() && on_node(&sim, 4, t))
        .map(|t| t.node.clone())
        .expect("node 4 runs a replica of app_web");
    sim.crash(4);
    settle(&mut sim, "node lost");
    // `service ps`: the lost node's tasks are shutdown history once their slots run elsewhere;
    // the current rows are the ten slots on live nodes.
    let after = ps(&mut sim, 0, "app_web");
    let lost: Vec<_> = after.iter().filter(|t| t.node == lost_name).collect();
    assert!(!lost.is_empty());
    for t in &lost {
        assert!(t.history, "{t:?}");
        assert_eq!(
            (t.desired_state.as_str(), t.state.as_str()),
            ("shutdown", "orphaned"),
            "{t:?}"
        );
    }
    let current: Vec<_> = after.iter().filter(|t| !t.history).collect();
    assert_eq!(current.len(), 10, "{current:#?}");
    assert!(current
        .iter()
        .all(|t| t.node != lost_name && t.desired_state == "running"));
    sim.start(4, &[]);
    settle(&mut sim, "node back");
}

/// A node that stays down past the report horizon has its report dropped on every node, and it
/// is not taken back from a peer that still holds it; when the node returns, its report is back.
#[test]
fn a_departed_nodes_report_is_pruned_and_returns_with_it() {
    use shoal_core::node::REPORT_HORIZON;
    let mut sim = cluster(4, 15);
    sim.change(0, |s, hlc| {
        s.deploy_stack("app", vec![service("app", "web", 4)], hlc)
    })
    .unwrap();
    settle(&mut sim, "deploy");
    let gone = sim.node_id(3);
    let holds = |sim: &Sim, i: usize| sim.node(i).unwrap().observed().get(gone).is_some();
    sim.crash(3);
    settle(&mut sim, "node lost");
    assert!((0..3).all(|i| holds(&sim, i)), "kept through the outage");
    sim.run_for(REPORT_HORIZON.as_millis() as u64 + 5_000);
    assert!(
        (0..3).all(|i| !holds(&sim, i)),
        "a report older than the horizon is still held"
    );
    // Anti-entropy rounds in between did not bring it back.
    sim.run_for(10_000);
    assert!((0..3).all(|i| !holds(&sim, i)));
    sim.start(3, &[]);
    settle(&mut sim, "node back");
    assert!(
        (0..4).all(|i| holds(&sim, i)),
        "the returning node reports again"
    );
}

/// `service ps SERVICE` as node `i` answers it.
fn ps(sim: &mut Sim, i: usize, service: &str) -> Vec<shoal_core::api::TaskInfo> {
    let request = shoal_core::api::Request::ServicePs {
        name: service.into(),
    };
    match sim.call(i, request, 1_000) {
        Some(shoal_core::api::Response::Tasks(tasks)) => tasks,
        Some(other) => panic!("service ps: {other:?}"),
        None => panic!("node {i} did not answer service ps"),
    }
}

/// Whether task `t` runs on node `i` (its container is on that node's fake engine).
fn on_node(sim: &Sim, i: usize, t: &shoal_core::api::TaskInfo) -> bool {
    sim.runtime(i)
        .containers()
        .iter()
        .any(|c| c.id == t.container_id)
}

#[test]
fn unsatisfiable_constraints_stay_pending_without_a_crash_loop() {
    let mut sim = cluster(3, 3);
    let mut def = service("app", "web", 2);
    def.spec
        .placement
        .constraints
        .push(shoal_core::desired::spec::Constraint {
            key: shoal_core::desired::spec::ConstraintKey::NodeLabel("zone".into()),
            op: shoal_core::desired::spec::ConstraintOp::Eq,
            value: "nowhere".into(),
        });
    sim.change(0, |s, hlc| s.deploy_stack("app", vec![def], hlc))
        .unwrap();
    sim.run_for(30_000);
    assert_eq!((0..3).map(|i| sim.containers_on(i)).sum::<usize>(), 0);
    assert_eq!(sim.report.containers_removed, 0, "no create/fail loop");
}

#[test]
fn draining_hands_off_without_losing_capacity() {
    let mut sim = cluster(4, 4);
    sim.change(0, |s, hlc| {
        s.deploy_stack("app", vec![service("app", "web", 8)], hlc)
    })
    .unwrap();
    settle(&mut sim, "deploy");
    let drained = (0..4).find(|&i| sim.containers_on(i) > 0).unwrap();
    let id = sim.node_id(drained);
    sim.change(1, |s, hlc| {
        s.update_node(id, Some(Availability::Drain), vec![], vec![], hlc)
    })
    .unwrap();
    // Capacity never dips: at every step at least 8 ready replicas exist.
    for _ in 0..200 {
        sim.run_for(100);
        assert!(
            sim.ready_replicas("app_web") >= 8,
            "capacity dipped during the drain"
        );
    }
    settle(&mut sim, "drain");
    assert_eq!(sim.containers_on(drained), 0);
}

/// Random faults over a cluster: container crashes, host crashes, agent crashes (containers run
/// on) and restarts; after every round of faults the cluster must settle to exactly the desired
/// replicas. `SHOAL_SIM_SEEDS` (count) and `SHOAL_SIM_FIRST_SEED` choose the seeds; CI sweeps
/// them in release mode with `.ci/sim-sweep` (thousands of the small cluster, tens of the large
/// one), and the debug test run does one seed of the small one.
#[test]
fn twelve_nodes_thirty_services_survive_random_faults() {
    for seed in seeds() {
        faults_round_trip(seed, 12, 6, 5);
    }
}

/// The scenario: 50 nodes, 200 services. A seed takes about 20 s in release mode and
/// many minutes in debug, so only `.ci/sim-sweep` runs it.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "minutes in debug mode; .ci/sim-sweep runs it in release mode"
)]
fn fifty_nodes_two_hundred_services_survive_random_faults() {
    for seed in seeds() {
        faults_round_trip(seed, 50, 20, 10);
    }
}

/// The seeds `SHOAL_SIM_FIRST_SEED` and `SHOAL_SIM_SEEDS` choose (0, and one, by default).
fn seeds() -> std::ops::Range<u64> {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let first = var("SHOAL_SIM_FIRST_SEED", 0);
    first..first + var("SHOAL_SIM_SEEDS", 1)
}

/// `nodes` nodes, `stacks` stacks of `per_stack` services of 1 to 5 replicas each, deployed
/// from random nodes; then five rounds of three random faults each.
fn faults_round_trip(seed: u64, nodes: usize, stacks: usize, per_stack: usize) {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sim = cluster(nodes, 100 + seed);
    for stack in 0..stacks {
        let services = (0..per_stack)
            .map(|k| {
                service(
                    &format!("s{stack}"),
                    &format!("svc{k}"),
                    rng.random_range(1..6),
                )
            })
            .collect();
        let node = rng.random_range(0..nodes);
        let name = format!("s{stack}");
        sim.change(node, move |s, hlc| s.deploy_stack(&name, services, hlc))
            .unwrap();
    }
    settle(&mut sim, &format!("seed {seed}: deploy"));
    for round in 0..5 {
        let mut down = Vec::new();
        for _ in 0..3 {
            let i = rng.random_range(0..nodes);
            match rng.random_range(0..4) {
                0 => {
                    sim.kill_container(i);
                }
                1 if sim.is_running(i) => {
                    sim.crash(i);
                    down.push(i);
                }
                2 if sim.is_running(i) => {
                    sim.crash_agent(i);
                    down.push(i);
                }
                _ => {}
            }
        }
        // Down for a moment or for longer than failure detection.
        sim.run_for(rng.random_range(0..20_000));
        for i in down {
            sim.start(i, &[]);
        }
        settle(&mut sim, &format!("seed {seed} round {round}"));
    }
}

/// Samples every 100 ms for `steps` steps: at least `min_ready` ready replicas and at most
/// `max_running` running containers of `service` at every step.
fn watch_bounds(sim: &mut Sim, service: &str, steps: usize, min_ready: usize, max_running: usize) {
    for step in 0..steps {
        sim.run_for(100);
        let (ready, running) = (sim.ready_replicas(service), sim.running_replicas(service));
        assert!(ready >= min_ready, "step {step}: only {ready} ready");
        assert!(
            running <= max_running,
            "step {step}: {running} running, more than {max_running}: too many slots at once\n{}",
            sim.describe(service)
        );
    }
}

/// A start-first rolling update with parallelism 2: never fewer than the replicas ready, never
/// more than two extra containers; it ends with every replica at the new version.
#[test]
fn a_rolling_update_keeps_capacity_and_its_parallelism() {
    use shoal_core::desired::{spec::UpdateOrder, state::ServiceUpdate};
    let mut sim = cluster(4, 11);
    let mut web = service("app", "web", 8);
    web.spec.update_config.parallelism = 2;
    web.spec.update_config.order = UpdateOrder::StartFirst;
    sim.change(0, |s, hlc| s.deploy_stack("app", vec![web], hlc))
        .unwrap();
    settle(&mut sim, "deploy");
    sim.change(2, |s, hlc| {
        s.update_service(
            "app_web",
            ServiceUpdate {
                image: Some("shoal-demo:v2".into()),
                ..ServiceUpdate::default()
            },
            hlc,
        )
    })
    .unwrap();
    watch_bounds(&mut sim, "app_web", 300, 8, 10);
    settle(&mut sim, "update");
}

/// Containers of `service` on the running nodes at `version`, and in all.
fn at_version(sim: &Sim, service: &str, version: shoal_core::desired::hlc::Hlc) -> (usize, usize) {
    let mut at = 0;
    let mut all = 0;
    for i in (0..sim.len()).filter(|i| sim.is_running(*i)) {
        for c in sim.runtime(i).containers() {
            if c.service == service {
                all += 1;
                at += usize::from(c.version == version);
            }
        }
    }
    (at, all)
}

/// The node a rolling update was issued on dies mid-rollout (its host, with its replicas): the
/// rollout does not depend on it and completes on the others.
#[test]
fn a_rollout_completes_when_the_node_that_issued_it_dies() {
    use shoal_core::{
        api::{Request, Response},
        desired::state::ServiceUpdate,
    };
    let mut sim = cluster(4, 13);
    let mut web = service("app", "web", 8);
    web.spec.update_config.parallelism = 1;
    web.spec.update_config.delay_ms = 500;
    sim.change(0, |s, hlc| s.deploy_stack("app", vec![web], hlc))
        .unwrap();
    settle(&mut sim, "deploy");
    let update = Request::ServiceUpdate {
        name: "app_web".into(),
        update: Box::new(ServiceUpdate {
            image: Some("shoal-demo:v2".into()),
            ..ServiceUpdate::default()
        }),
    };
    let answer = sim
        .call(2, update, 5_000)
        .expect("node 2 answered the update");
    assert!(matches!(answer, Response::Changed(_)), "{answer:?}");
    let version = sim.desired(0).service("app_web").unwrap().version;
    // Mid-rollout: some replicas on the new version, not all.
    let mid = sim.run_until(30_000, 50, |s| at_version(s, "app_web", version).0 >= 2);
    assert!(mid.is_some(), "the rollout did not start");
    let (new, all) = at_version(&sim, "app_web", version);
    assert!(
        new < all,
        "the rollout was over before the node died: {new}/{all}"
    );
    sim.crash(2);
    settle(&mut sim, "rollout after the issuing node died");
    assert_eq!(at_version(&sim, "app_web", version), (8, 8));
}

/// Scaling 6 → 8 starts two replicas and moves none; 8 → 6 stops two and moves none (the
/// containers that run afterwards are ones that ran before).
#[test]
fn scaling_up_and_down_moves_no_running_replica() {
    use std::collections::BTreeSet;
    let mut sim = cluster(3, 14);
    sim.change(0, |s, hlc| {
        s.deploy_stack("app", vec![service("app", "web", 6)], hlc)
    })
    .unwrap();
    settle(&mut sim, "deploy");
    let ids = |sim: &Sim| -> BTreeSet<(usize, String)> {
        (0..sim.len())
            .flat_map(|i| {
                sim.runtime(i)
                    .containers()
                    .into_iter()
                    .map(move |c| (i, c.id))
            })
            .collect()
    };
    let six = ids(&sim);
    assert_eq!(six.len(), 6);
    sim.change(1, |s, hlc| s.scale("app_web", 8, hlc)).unwrap();
    settle(&mut sim, "scale to 8");
    let eight = ids(&sim);
    assert_eq!(eight.len(), 8);
    assert!(
        six.is_subset(&eight),
        "a running replica moved or was replaced"
    );
    sim.change(2, |s, hlc| s.scale("app_web", 6, hlc)).unwrap();
    settle(&mut sim, "scale to 6");
    let back = ids(&sim);
    assert_eq!(back.len(), 6);
    assert!(back.is_subset(&eight), "scaling down started a container");
}

/// A node joining takes its share of the slots one at a time (parallelism 1), start-first: never
/// fewer than the replicas ready, never more than one extra container.
#[test]
fn rebalancing_onto_a_new_node_is_paced() {
    let mut sim = Sim::new(
        4,
        SimConfig {
            seed: 12,
            ..SimConfig::default()
        },
    );
    sim.start(0, &[]);
    for i in 1..3 {
        sim.start(i, &[0]);
    }
    assert!(sim
        .run_until(60_000, 100, |s| s.converged(NodeStatus::Down))
        .is_some());
    sim.change(0, |s, hlc| {
        s.deploy_stack("app", vec![service("app", "web", 9)], hlc)
    })
    .unwrap();
    settle(&mut sim, "deploy on 3 nodes");
    sim.start(3, &[0]);
    watch_bounds(&mut sim, "app_web", 300, 9, 10);
    settle(&mut sim, "rebalance");
    assert!(sim.containers_on(3) >= 2, "the new node took no share");
}

#[test]
fn an_agent_restart_readopts_its_replicas() {
    for seed in 0..20 {
        let mut sim = cluster(3, seed);
        sim.change(0, |s, hlc| {
            s.deploy_stack("app", vec![service("app", "web", 2)], hlc)
        })
        .unwrap();
        settle(&mut sim, "deploy");
        let ids = |sim: &Sim| -> Vec<String> {
            let mut ids: Vec<String> = (0..3)
                .flat_map(|i| sim.runtime(i).containers())
                .map(|c| c.id)
                .collect();
            ids.sort();
            ids
        };
        let before = ids(&sim);
        let owner = (0..3).find(|&i| sim.containers_on(i) > 0).unwrap();
        sim.crash_agent(owner);
        sim.start(owner, &[]);
        sim.run_for(10_000);
        assert_eq!(
            ids(&sim),
            before,
            "seed {seed}: the restart recreated replicas"
        );
    }
}
