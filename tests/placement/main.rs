//! Properties of deterministic placement (design §2) over random clusters: 1–60 nodes with random
//! labels, platforms and availability, 0–200 replicas, random constraints (`props`), and fixed
//! cases: reasons, spread levels, pinned hashes, movement over a seeded batch (`cases`).

mod cases;
mod props;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use shoal_core::{
    desired::spec::{Availability, Constraint, ConstraintKey, ConstraintOp, Mode, ServiceSpec},
    identity::NodeId,
    reconcile::placement::{eligible, NodeFacts, Placement, SlotKey},
};

// ---------------------------------------------------------------------------------------------
// Generators

fn node(
    i: usize,
    id: u128,
    zone: Option<&str>,
    disk: Option<&str>,
    avail: Availability,
) -> NodeFacts {
    let label = |k: &str, v: Option<&str>| v.map(|v| (k.to_string(), v.to_string()));
    NodeFacts {
        id: NodeId(id),
        hostname: format!("node-{i}"),
        engine_labels: label("disk", disk).into_iter().collect(),
        node_labels: label("zone", zone).into_iter().collect(),
        // A few Windows and ARM nodes, derived from the id so they vary with it.
        os: ["windows", "linux", "linux", "linux", "linux"][(id % 5) as usize].into(),
        arch: ["aarch64", "x86_64", "x86_64", "x86_64"][(id % 4) as usize].into(),
        availability: avail,
    }
}

fn arb_availability() -> impl Strategy<Value = Availability> {
    prop_oneof![
        6 => Just(Availability::Active),
        1 => Just(Availability::Pause),
        1 => Just(Availability::Drain),
    ]
}

/// Distinct ids (a map keyed by id), labels sometimes missing.
fn arb_nodes(availability: BoxedStrategy<Availability>) -> impl Strategy<Value = Vec<NodeFacts>> {
    let zone = proptest::option::weighted(0.8, prop::sample::select(vec!["a", "b", "c"]));
    let disk = proptest::option::weighted(0.7, prop::sample::select(vec!["ssd", "hdd"]));
    prop::collection::btree_map(1u128.., (zone, disk, availability), 1..=60).prop_map(|m| {
        m.into_iter()
            .enumerate()
            .map(|(i, (id, (zone, disk, avail)))| node(i, id, zone, disk, avail))
            .collect()
    })
}

fn arb_constraint() -> impl Strategy<Value = Constraint> {
    let key_value = prop_oneof![
        prop::sample::select(vec!["a", "b", "c"])
            .prop_map(|v| (ConstraintKey::NodeLabel("zone".into()), v)),
        prop::sample::select(vec!["ssd", "hdd"])
            .prop_map(|v| (ConstraintKey::EngineLabel("disk".into()), v)),
        Just((ConstraintKey::PlatformOs, "linux")),
        Just((ConstraintKey::PlatformArch, "x86_64")),
        prop::sample::select(vec!["manager", "worker", "db"])
            .prop_map(|v| (ConstraintKey::NodeRole, v)),
        Just((ConstraintKey::NodeHostname, "node-3")),
    ];
    let op = prop_oneof![Just(ConstraintOp::Eq), Just(ConstraintOp::Ne)];
    (key_value, op).prop_map(|((key, value), op)| Constraint {
        key,
        op,
        value: value.into(),
    })
}

fn arb_spec() -> impl Strategy<Value = ServiceSpec> {
    let max = prop_oneof![3 => Just(None), 1 => (0u64..=4).prop_map(Some)];
    let mode = prop_oneof![4 => Just(Mode::Replicated), 1 => Just(Mode::Global)];
    (prop::collection::vec(arb_constraint(), 0..=2), max, mode).prop_map(
        |(constraints, max, mode)| {
            let mut spec = ServiceSpec {
                mode,
                ..ServiceSpec::default()
            };
            spec.placement.constraints = constraints;
            spec.placement.max_replicas_per_node = max;
            spec
        },
    )
}

/// Slots said to run on random nodes; `place` must only honour those on paused, eligible nodes.
fn keep_for(
    spec: &ServiceSpec,
    nodes: &[NodeFacts],
    picks: &[(u64, prop::sample::Index)],
) -> BTreeMap<SlotKey, NodeId> {
    picks
        .iter()
        .map(|(slot, at)| {
            let id = nodes[at.index(nodes.len())].id;
            match spec.mode {
                Mode::Replicated => (SlotKey::Replica(*slot), id),
                Mode::Global => (SlotKey::Node(id), id),
            }
        })
        .collect()
}

fn arb_keep() -> impl Strategy<Value = Vec<(u64, prop::sample::Index)>> {
    prop::collection::vec((1u64..=210, any::<prop::sample::Index>()), 0..12)
}

// ---------------------------------------------------------------------------------------------
// Helpers

const SVC: &str = "shop_web";

fn moved(a: &Placement, b: &Placement) -> usize {
    a.owners
        .iter()
        .filter(|(slot, owner)| b.owners.get(slot).is_some_and(|o| o != *owner))
        .count()
}

fn count(p: &Placement, id: NodeId) -> u64 {
    p.per_node().get(&id).copied().unwrap_or(0)
}

fn limit(spec: &ServiceSpec) -> u64 {
    spec.placement
        .max_replicas_per_node
        .filter(|&m| m > 0)
        .unwrap_or(u64::MAX)
}

fn active_eligible<'a>(
    spec: &'a ServiceSpec,
    nodes: &'a [NodeFacts],
) -> impl Iterator<Item = &'a NodeFacts> {
    nodes
        .iter()
        .filter(move |n| n.availability == Availability::Active && eligible(spec, n).is_ok())
}

fn plain(nodes: &[NodeFacts]) -> Vec<NodeFacts> {
    let mut nodes = nodes.to_vec();
    for n in &mut nodes {
        n.availability = Availability::Active;
    }
    nodes
}

/// The invariants every placement must satisfy, whatever the inputs.
fn check(
    spec: &ServiceSpec,
    replicas: u64,
    nodes: &[NodeFacts],
    keep: &BTreeMap<SlotKey, NodeId>,
    p: &Placement,
) {
    let by_id: BTreeMap<NodeId, &NodeFacts> = nodes.iter().map(|n| (n.id, n)).collect();
    for (slot, owner) in &p.owners {
        let n = by_id[owner];
        assert_eq!(eligible(spec, n), Ok(()), "{slot} on an ineligible node");
        match n.availability {
            Availability::Active => {}
            Availability::Pause => assert_eq!(
                keep.get(slot),
                Some(owner),
                "new slot {slot} on a paused node"
            ),
            Availability::Drain => panic!("slot {slot} on a drained node"),
        }
    }
    for (id, c) in p.per_node() {
        assert!(
            spec.mode == Mode::Global || c <= limit(spec),
            "{c} replicas on {id:?}"
        );
    }
    if spec.mode == Mode::Global {
        let expected: BTreeSet<SlotKey> = nodes
            .iter()
            .filter(|n| eligible(spec, n).is_ok())
            .filter(|n| match n.availability {
                Availability::Active => true,
                Availability::Pause => keep.get(&SlotKey::Node(n.id)) == Some(&n.id),
                Availability::Drain => false,
            })
            .map(|n| SlotKey::Node(n.id))
            .collect();
        assert_eq!(p.owners.keys().copied().collect::<BTreeSet<_>>(), expected);
        assert!(p.owners.iter().all(|(s, o)| *s == SlotKey::Node(*o)));
        assert!(p.pending.is_empty());
        return;
    }
    // Every slot 1..=R is owned or pending, never both; pending slots carry a reason.
    let mut all: Vec<SlotKey> = p.owners.keys().copied().collect();
    all.extend(p.pending.iter().map(|(s, _)| *s));
    all.sort();
    assert_eq!(
        all,
        (1..=replicas).map(SlotKey::Replica).collect::<Vec<_>>()
    );
    assert!(p.pending.iter().all(|(_, why)| !why.is_empty()));
    // Kept slots stay while allowed (the slot exists, the node is paused and eligible).
    for (slot, owner) in keep {
        let n = by_id[owner];
        let exists = matches!(slot, SlotKey::Replica(k) if *k <= replicas);
        let allowed = exists && n.availability == Availability::Pause && eligible(spec, n).is_ok();
        if allowed && spec.placement.max_replicas_per_node.is_none() {
            assert_eq!(p.owners.get(slot), Some(owner), "kept {slot} moved");
        }
    }
    // Spread: active eligible nodes differ by at most one; slots wait only when all are full.
    let counts: Vec<u64> = active_eligible(spec, nodes)
        .map(|n| count(p, n.id))
        .collect();
    if let (Some(lo), Some(hi)) = (counts.iter().min(), counts.iter().max()) {
        assert!(hi - lo <= 1, "counts {counts:?}");
    }
    if !p.pending.is_empty() {
        assert!(
            counts.iter().all(|&c| c == limit(spec)),
            "pending while room: {counts:?}"
        );
    }
}
