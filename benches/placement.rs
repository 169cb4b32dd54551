//! Placement benchmark: time of a full recompute with 1,000 nodes (one service × 10,000 replicas,
//! and 1,000 services × 10 replicas), and how many slots move when a node joins or leaves or a
//! service scales up by one, against the unavoidable minimum; and the cost of one reconcile round
//! of a node, the first (every placement computed) and at steady state (placements remembered).
//! Run with `cargo bench --bench placement`.

use std::{
    collections::BTreeMap,
    hint::black_box,
    time::{Duration, Instant},
};

use shoal::runtime::{ContainerStatus, LocalContainer};
use shoal_core::{
    desired::{
        hlc::Hlc,
        spec::{Availability, ServiceSpec},
        state::ServiceView,
    },
    identity::NodeId,
    observed::{Health, NodeReport, ObservedState},
    reconcile::{
        placement::{place, NodeFacts, Placement},
        plan::{task_of, Inputs, Reconciler},
    },
};

/// Node ids from a fixed SplitMix64 stream, so every run measures the same cluster.
fn nodes(n: usize, seed: u64) -> Vec<NodeFacts> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|i| NodeFacts {
            id: NodeId(((next() as u128) << 64) | next() as u128),
            hostname: format!("node-{i}"),
            engine_labels: BTreeMap::new(),
            node_labels: BTreeMap::from([("zone".into(), format!("z{}", i % 3))]),
            os: "linux".into(),
            arch: "x86_64".into(),
            availability: Availability::Active,
        })
        .collect()
}

fn moved(a: &Placement, b: &Placement) -> u64 {
    a.owners
        .iter()
        .filter(|(slot, owner)| b.owners.get(slot).is_some_and(|o| o != *owner))
        .count() as u64
}

/// Best of `runs` timings of `f` (the least disturbed by the other jobs on the machine).
fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Moves for join / leave / scale-up over `services`, each with `replicas`, on `cluster`.
fn movement(cluster: &[NodeFacts], services: usize, replicas: u64, spec: &ServiceSpec) {
    let keep = BTreeMap::new();
    let newcomer = nodes(1, 0xfeed)[0].clone();
    let mut joined = cluster.to_vec();
    joined.push(newcomer.clone());
    let (mut join, mut join_min, mut leave, mut leave_min, mut up, mut up_zero) =
        (0, 0, 0, 0, 0, 0);
    for s in 0..services {
        let name = format!("stack_svc{s}");
        let before = place(&name, spec, replicas, cluster, &keep);
        let after = place(&name, spec, replicas, &joined, &keep);
        join += moved(&before, &after);
        join_min += after.per_node().get(&newcomer.id).copied().unwrap_or(0);
        // A node leaves: the one at position s, so each service loses a different node.
        let gone = cluster[s % cluster.len()].id;
        let rest: Vec<NodeFacts> = cluster.iter().filter(|n| n.id != gone).cloned().collect();
        let shrunk = place(&name, spec, replicas, &rest, &keep);
        leave += moved(&before, &shrunk);
        leave_min += before.per_node().get(&gone).copied().unwrap_or(0);
        let scaled = place(&name, spec, replicas + 1, cluster, &keep);
        let m = moved(&before, &scaled);
        up += m;
        up_zero += u64::from(m == 0);
    }
    let per = |x: u64| x as f64 / services as f64;
    let ideal = replicas as f64 / cluster.len() as f64;
    println!(
        "  join:  {:7.2} slots moved per service (newcomer's own share {:.2}; R/N = {ideal:.2})",
        per(join),
        per(join_min)
    );
    println!(
        "  leave: {:7.2} slots moved per service (leaver's own share {:.2})",
        per(leave),
        per(leave_min)
    );
    println!(
        "  scale R -> R+1: {:.2} existing slots moved per service; none moved in {:.0}% of services",
        per(up),
        100.0 * per(up_zero)
    );
}

/// One node's reconcile round over `services` × `replicas` on `cluster`, with this node running
/// healthy containers for every slot it owns: the first round, and the best steady-state round.
fn reconcile_round(cluster: &[NodeFacts], services: usize, replicas: u64) {
    let me = cluster[0].id;
    let views: Vec<ServiceView> = (0..services)
        .map(|s| ServiceView {
            name: format!("stack_svc{s}"),
            stack: "stack".into(),
            replicas,
            spec: ServiceSpec::default(),
            version: Hlc::ZERO,
            force: 0,
            updated: Hlc::ZERO,
            update_status: None,
            can_roll_back: false,
        })
        .collect();
    let keep = BTreeMap::new();
    // Every node runs healthy containers for the slots it owns; this node lists its own, and
    // every node's report (its own included) is in the observed state, as at steady state.
    let mut by_node: BTreeMap<NodeId, Vec<LocalContainer>> = BTreeMap::new();
    for v in &views {
        let placement = place(&v.name, &v.spec, v.replicas, cluster, &keep);
        for (slot, owner) in placement.owners {
            by_node.entry(owner).or_default().push(LocalContainer {
                id: format!("{}-{slot}", v.name),
                service: v.name.clone(),
                slot,
                task_id: format!("t{slot}"),
                version: v.version,
                force: v.force,
                image: v.spec.image.clone(),
                status: ContainerStatus::Running,
                health: Health::Healthy,
                created_ms: 1,
                endpoints: vec![],
                addresses: vec![],
            });
        }
    }
    let mut observed = ObservedState::default();
    for (node, containers) in &by_node {
        observed.merge(NodeReport {
            node: *node,
            generation: 1,
            seq: 1,
            tasks: containers.iter().map(|c| task_of(c, true, None)).collect(),
            history: vec![],
            gossip_keys: vec![],
        });
    }
    let local = by_node.remove(&me).unwrap_or_default();
    let inputs = Inputs {
        me,
        now_ms: 1_000,
        services: &views,
        nodes: cluster,
        observed: &observed,
        local: &local,
    };
    let mut reconciler = Reconciler::default();
    let start = Instant::now();
    let first = reconciler.plan(&inputs);
    let cold = start.elapsed();
    assert!(first.actions.is_empty(), "{:?}", first.actions);
    let warm = best_of(20, || {
        black_box(reconciler.plan(&inputs));
    });
    println!(
        "  {services} services × {replicas} replicas, {} containers here: first round {:.2} ms, steady state {:.3} ms",
        local.len(),
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3
    );
}

fn main() {
    let cluster = nodes(1_000, 1);
    let plain = ServiceSpec::default();
    let mut spread = ServiceSpec::default();
    spread.placement.spread = vec!["zone".into()];
    let keep = BTreeMap::new();

    println!("placement, 1,000 live nodes");
    for (label, spec) in [("no preferences", &plain), ("spread over 3 zones", &spread)] {
        let one = best_of(5, || {
            black_box(place("stack_big", spec, 10_000, &cluster, &keep));
        });
        let many = best_of(3, || {
            for s in 0..1_000 {
                black_box(place(&format!("stack_svc{s}"), spec, 10, &cluster, &keep));
            }
        });
        println!("{label}:");
        println!(
            "  1 service × 10,000 replicas: {:8.1} ms per full recompute",
            one.as_secs_f64() * 1e3
        );
        println!(
            "  1,000 services × 10 replicas: {:8.1} ms per full recompute",
            many.as_secs_f64() * 1e3
        );
    }

    println!("movement, 1,000 nodes, 1 service × 10,000 replicas:");
    movement(&cluster, 1, 10_000, &plain);
    println!("movement, 1,000 nodes, 200 services × 10 replicas:");
    movement(&cluster, 200, 10, &plain);
    let small = nodes(40, 2);
    println!("movement, 40 nodes, 200 services × 120 replicas:");
    movement(&small, 200, 120, &plain);
    println!("movement, 40 nodes over 3 zones, 200 services × 120 replicas, spread over zone:");
    movement(&small, 200, 120, &spread);

    println!("one node's reconcile round:");
    reconcile_round(&nodes(50, 3), 200, 3);
    reconcile_round(&cluster, 1_000, 10);
}
