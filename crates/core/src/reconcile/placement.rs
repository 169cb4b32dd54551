//! Deterministic placement: which live node owns each slot of a service (design §2).
//!
//! Every node calls [`place`] with the same inputs and gets the same answer, then starts the slots
//! it owns; there is no coordinator to ask. The function is pure: no clock, no randomness, no IO,
//! and no iteration over hash maps (all maps are `BTreeMap`s and the node list is sorted first).
//!
//! # Algorithm (replicated services)
//!
//! 1. **Filter.** A node may own new slots if it satisfies the constraints ([`eligible`]) and is
//!    `active`. A `pause`d node keeps the slots it runs (the caller passes where slots run in
//!    `keep`) if they still satisfy the constraints and `max_replicas_per_node`; a `drain`ed
//!    node owns nothing.
//! 2. **Quotas.** How many slots each active node takes is decided by water-filling
//!    (`fill.rs`): through the spread preferences level by level (groups of nodes sharing a label
//!    value, nodes lacking it forming one more group), then over the nodes of each group, capped
//!    by `max_replicas_per_node`. So counts per node differ by at most one by construction. The
//!    few "one extra" units go first to the groups and nodes that run more of the slots than
//!    their even share, so that no unit has to move a running slot.
//! 3. **Sticky slots.** Each active node keeps the slots it runs now (`keep`), up to its quota,
//!    those it ranks highest first.
//! 4. **Matching.** The other slots go to nodes by a greedy over rendezvous scores
//!    `hash(service, slot, node)` under the quotas left (`assign.rs`): pairs best-first, taken
//!    while the slot is free and the node has quota left.
//!
//! # What moves: only what must
//!
//! With `keep` saying where the slots run (the reconciler builds it from the reports), a slot
//! moves only when its node must give it up for the spread:
//!
//! - **Scaling up moves no running replica**: every node's quota stays at least what it runs.
//! - **Scaling down stops the removed (highest) slots**, and moves others only when the removed
//!   slots leave the spread uneven; no node both gives up and takes a slot, and undoing a
//!   scale-up moves nothing.
//! - **A node that leaves (or is drained, or no longer satisfies the constraints) moves only its
//!   own slots**; when room is short (`max_replicas_per_node`), the slots that run elsewhere stay
//!   and the lost node's wait.
//! - **A node that joins takes at most its fair share** (⌈R/N⌉ of R slots on N nodes), and every
//!   slot that moves goes to it.
//!
//! `tests/placement/props.rs` checks each over random clusters (constraints, `max_replicas_per_node`,
//! spread preferences, paused nodes) starting from a placement reached through history. The slots
//! a node keeps are its best-ranked ones, so where slots run drifts from the fresh placement only
//! as far as history made it; without `keep`, placement is the fresh one: rendezvous hashing under
//! balanced quotas, where a join moves 1.8 times the newcomer's share on average and scaling up by
//! one moves 1.3 slots on average (`cases::movement_on_average`, the bench). Why not always
//! fresh: the reconciler never runs without knowing where slots run, and a move, even start-first,
//! costs a container start and a warm-up; the measured case (6 → 8 replicas on 3 nodes) moved 3
//! running replicas and now moves none.
//!
//! Every node must agree on `keep`, so it comes from the reports alone: a slot runs on the node
//! whose report has a task for it that it means to keep (`plan::kept_slots`). Nodes holding
//! different reports may briefly disagree on an owner, as they may on membership; the handoff
//! (design §3) absorbs it.
//!
//! Spread preferences: a node joining a small group takes that group's share, which can be far
//! more than R/N (a lone node in one of two zones holds R/2); that is the point of spreading.
//! Every slot that moves still goes to the newcomer.
//!
//! # Global services
//!
//! One slot per node, [`SlotKey::Node`], on every active node that satisfies the constraints, plus
//! paused ones that already run it; `replicas` is ignored.

mod assign;
mod constraints;
mod fill;
mod hash;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    desired::spec::{Availability, Mode, ServiceSpec},
    identity::NodeId,
};

pub use constraints::eligible;

/// Replica counts above this are not placed beyond it (one pending entry says so): a bound on
/// memory and time for a spec no cluster can run, which validation should reject earlier.
pub const MAX_SLOTS: u64 = 100_000;

/// What placement knows about a live node; the caller builds it from membership (id, hostname,
/// engine labels, platform) and the desired node settings (operator labels, availability).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    /// Stable node id.
    pub id: NodeId,
    /// The node's name, for `node.hostname` constraints.
    pub hostname: String,
    /// Labels given to the agent with `--label` (`engine.labels.*`).
    pub engine_labels: BTreeMap<String, String>,
    /// Operator labels from `node update --label-add` (`node.labels.*`, spread preferences).
    pub node_labels: BTreeMap<String, String>,
    /// `node.platform.os`, e.g. `linux`.
    pub os: String,
    /// `node.platform.arch`, e.g. `x86_64`.
    pub arch: String,
    /// Active, paused or drained.
    pub availability: Availability,
}

#[cfg(test)]
impl NodeFacts {
    /// An active linux/x86_64 node named `n{id}` with no labels, for unit tests.
    pub(crate) fn plain(id: u128) -> NodeFacts {
        NodeFacts {
            id: NodeId(id),
            hostname: format!("n{id}"),
            engine_labels: BTreeMap::new(),
            node_labels: BTreeMap::new(),
            os: "linux".into(),
            arch: "x86_64".into(),
            availability: Availability::Active,
        }
    }
}

/// One unit of a service's desired replicas (defined with the observed state, which reports it).
pub use crate::observed::SlotKey;

/// The outcome of [`place`] for one service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Owner of every slot that can run somewhere.
    pub owners: BTreeMap<SlotKey, NodeId>,
    /// Slots no node can take, in slot order, each with the reason shown to the operator (e.g.
    /// `no node satisfies node.labels.zone == a`).
    pub pending: Vec<(SlotKey, String)>,
}

impl Placement {
    /// How many slots each node owns (nodes owning none are absent).
    pub fn per_node(&self) -> BTreeMap<NodeId, u64> {
        let mut counts = BTreeMap::new();
        for owner in self.owners.values() {
            *counts.entry(*owner).or_insert(0) += 1;
        }
        counts
    }
}

/// Places the slots of one service on the live nodes.
///
/// - `service`: the service's full name; it seeds the hashes so that services spread
///   independently of one another.
/// - `replicas`: desired count for a replicated service (slots `1..=replicas`); ignored for a
///   global one.
/// - `nodes`: the live members (the caller leaves out down and departed ones), in any order; a
///   duplicated id counts once.
/// - `keep`: where the slots of this service run now (from the observed state). A slot stays
///   where it runs while the node still satisfies the constraints and the slot still exists:
///   on a `pause`d node while `max_replicas_per_node` allows (lowest slots first), on an active
///   node while its balanced quota allows (sticky, see the module docs), and for a service that
///   opts out of rebalancing ([`rebalances`]) on an active node while `max_replicas_per_node`
///   allows, balance or not. Entries on drained or unknown nodes are ignored. An opted-out
///   service's slots thus stay put when nodes join; only new and orphaned slots are placed,
///   onto the least loaded nodes.
///
/// Never panics; `replicas == 0` gives an empty placement.
pub fn place(
    service: &str,
    spec: &ServiceSpec,
    replicas: u64,
    nodes: &[NodeFacts],
    keep: &BTreeMap<SlotKey, NodeId>,
) -> Placement {
    let nodes = canonical(nodes);
    let fits: Vec<Result<(), String>> = nodes.iter().map(|n| eligible(spec, n)).collect();
    match spec.mode {
        Mode::Global => place_global(&nodes, &fits, keep),
        Mode::Replicated => place_replicated(service, spec, replicas, &nodes, &fits, keep),
    }
}

/// The service label that opts a service out of rebalancing: `shoal.rebalance=false`.
pub const REBALANCE_LABEL: &str = "shoal.rebalance";

/// Whether the service's slots move to balance the load when nodes join (the default), or stay
/// where they run (`shoal.rebalance=false` among its labels). A value that is not a boolean counts
/// as the default; deploys refuse one ([`rebalance_label`]).
pub fn rebalances(spec: &ServiceSpec) -> bool {
    rebalance_label(&spec.labels).unwrap_or(true)
}

/// The `shoal.rebalance` label read as a boolean (Go's `ParseBool` words, as Traefik's labels),
/// or why it cannot be.
pub fn rebalance_label(labels: &BTreeMap<String, String>) -> Result<bool, String> {
    match labels.get(REBALANCE_LABEL).map(|v| v.trim()) {
        None => Ok(true),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(format!(
            "label {REBALANCE_LABEL}: {other:?} is not a boolean (true or false)"
        )),
    }
}

/// Nodes sorted by id, one entry per id, so that the caller's order never matters. Should a
/// caller pass two entries for one id, the smaller by content wins, for the same reason.
fn canonical(nodes: &[NodeFacts]) -> Vec<&NodeFacts> {
    type Content<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a BTreeMap<String, String>,
        &'a BTreeMap<String, String>,
    );
    fn content(n: &NodeFacts) -> Content<'_> {
        let a = n.availability.as_str();
        (
            a,
            &n.hostname,
            &n.os,
            &n.arch,
            &n.node_labels,
            &n.engine_labels,
        )
    }
    let mut sorted: Vec<&NodeFacts> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| content(a).cmp(&content(b))));
    sorted.dedup_by_key(|n| n.id);
    sorted
}

fn place_global(
    nodes: &[&NodeFacts],
    fits: &[Result<(), String>],
    keep: &BTreeMap<SlotKey, NodeId>,
) -> Placement {
    let mut owners = BTreeMap::new();
    for (node, fit) in nodes.iter().zip(fits) {
        let slot = SlotKey::Node(node.id);
        let runs = match node.availability {
            Availability::Active => true,
            Availability::Pause => keep.get(&slot) == Some(&node.id),
            Availability::Drain => false,
        };
        if fit.is_ok() && runs {
            owners.insert(slot, node.id);
        }
    }
    Placement {
        owners,
        pending: Vec::new(),
    }
}

fn place_replicated(
    service: &str,
    spec: &ServiceSpec,
    replicas: u64,
    nodes: &[&NodeFacts],
    fits: &[Result<(), String>],
    keep: &BTreeMap<SlotKey, NodeId>,
) -> Placement {
    let total = replicas.min(MAX_SLOTS);
    // Docker treats a max of 0 as "no limit".
    let max = spec
        .placement
        .max_replicas_per_node
        .filter(|&m| m > 0)
        .unwrap_or(u64::MAX);

    // Kept slots: on paused nodes, and on active ones if the service opts out of rebalancing.
    // `keep` iterates in slot order, so the lowest slots are the ones kept when a lowered max
    // forces some off.
    let stays = !rebalances(spec);
    let mut pinned = vec![0u64; nodes.len()];
    let mut owners = BTreeMap::new();
    for (slot, owner) in keep {
        let SlotKey::Replica(number) = *slot else {
            continue;
        };
        let Ok(i) = nodes.binary_search_by_key(owner, |n| n.id) else {
            continue;
        };
        let kept_here = match nodes[i].availability {
            Availability::Pause => true,
            Availability::Active => stays,
            Availability::Drain => false,
        };
        if (1..=total).contains(&number) && kept_here && fits[i].is_ok() && pinned[i] < max {
            pinned[i] += 1;
            owners.insert(*slot, *owner);
        }
    }

    let active: Vec<bool> = nodes
        .iter()
        .zip(fits)
        .map(|(n, fit)| fit.is_ok() && n.availability == Availability::Active)
        .collect();
    let free: Vec<u64> = (1..=total)
        .filter(|&s| !owners.contains_key(&SlotKey::Replica(s)))
        .collect();
    let room = active
        .iter()
        .zip(&pinned)
        .filter(|(&a, _)| a)
        .fold(0u64, |sum, (_, &kept)| {
            sum.saturating_add(max.saturating_sub(kept))
        });
    // Sticky slots: free slots that run now on an active node that may take them.
    let runs_on = |number: u64| -> Option<usize> {
        let owner = keep.get(&SlotKey::Replica(number))?;
        let i = nodes.binary_search_by_key(owner, |n| n.id).ok()?;
        (!stays && active[i]).then_some(i)
    };
    // When room is short, the slots that run stay, then the lowest slots run and the highest
    // wait, as after a scale-down.
    let placed = free.len().min(usize::try_from(room).unwrap_or(usize::MAX));
    let chosen: Vec<u64> = if placed < free.len() {
        let (running, idle): (Vec<u64>, Vec<u64>) =
            free.iter().partition(|&&s| runs_on(s).is_some());
        let mut chosen: Vec<u64> = running.into_iter().chain(idle).take(placed).collect();
        chosen.sort_unstable();
        chosen
    } else {
        free.clone()
    };

    let seed = hash::service_seed(service);
    let slot_keys: Vec<u64> = chosen.iter().map(|&s| hash::slot_key(seed, s)).collect();
    let node_keys: Vec<u64> = nodes.iter().map(|n| hash::node_key(n.id)).collect();
    // By position in `chosen`, per node.
    let mut held: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (k, &number) in chosen.iter().enumerate() {
        if let Some(i) = runs_on(number) {
            held[i].push(k);
        }
    }

    let shape = fill::Shape {
        spread: &spec.placement.spread,
        labels: nodes.iter().map(|n| &n.node_labels).collect(),
        cap: active
            .iter()
            .zip(&pinned)
            .map(|(&a, &kept)| {
                if a {
                    max.saturating_sub(kept).min(placed as u64)
                } else {
                    0
                }
            })
            .collect(),
        pinned,
        held: held.iter().map(|h| h.len() as u64).collect(),
        node_keys: node_keys.clone(),
        tie: &slot_keys,
    };
    let members: Vec<usize> = (0..nodes.len())
        .filter(|&i| fits[i].is_ok() && nodes[i].availability != Availability::Drain)
        .collect();
    let mut quotas = fill::quotas(&shape, &members, placed as u64);

    // Each node keeps what it runs up to its quota, the slots it ranks highest first (those a
    // fresh placement would most likely give it); only the rest is matched.
    let mut taken: Vec<Option<usize>> = vec![None; placed];
    for (i, slots) in held.iter_mut().enumerate() {
        slots.sort_by_key(|&k| {
            (
                std::cmp::Reverse(hash::score(slot_keys[k], node_keys[i])),
                k,
            )
        });
        for &k in slots.iter() {
            if quotas[i] == 0 {
                break;
            }
            quotas[i] -= 1;
            taken[k] = Some(i);
        }
    }
    let rest: Vec<usize> = (0..placed).filter(|&k| taken[k].is_none()).collect();
    let rest_keys: Vec<u64> = rest.iter().map(|&k| slot_keys[k]).collect();

    // Only nodes that take something enter the matching (with 1,000 nodes and 10 slots, that is
    // 10 of them, not 1,000).
    let takers: Vec<usize> = (0..nodes.len()).filter(|&i| quotas[i] > 0).collect();
    let taker_keys: Vec<u64> = takers.iter().map(|&i| node_keys[i]).collect();
    let taker_quotas: Vec<u64> = takers.iter().map(|&i| quotas[i]).collect();
    for (k, pos) in rest
        .iter()
        .zip(assign::assign(&rest_keys, &taker_keys, &taker_quotas))
    {
        taken[*k] = pos.map(|pos| takers[pos]);
    }

    for (&slot, owner) in chosen.iter().zip(&taken) {
        if let Some(i) = owner {
            owners.insert(SlotKey::Replica(slot), nodes[*i].id);
        }
    }
    let mut pending = Vec::new();
    let mut reason = None;
    for &slot in &free {
        if !owners.contains_key(&SlotKey::Replica(slot)) {
            let why = reason.get_or_insert_with(|| shortfall(spec, nodes, fits, max));
            pending.push((SlotKey::Replica(slot), why.clone()));
        }
    }
    if replicas > MAX_SLOTS {
        pending.push((
            SlotKey::Replica(MAX_SLOTS + 1),
            format!("replicas above {MAX_SLOTS} are not placed"),
        ));
    }
    Placement { owners, pending }
}

/// Why slots are left over, in the operator's terms.
fn shortfall(
    spec: &ServiceSpec,
    nodes: &[&NodeFacts],
    fits: &[Result<(), String>],
    max: u64,
) -> String {
    if nodes.is_empty() {
        return "no live node".into();
    }
    let mut failing: BTreeMap<&str, usize> = BTreeMap::new();
    for fit in fits {
        if let Err(constraint) = fit {
            *failing.entry(constraint).or_insert(0) += 1;
        }
    }
    let fitting = fits.len() - failing.values().sum::<usize>();
    if fitting == 0 {
        if failing.len() == 1 {
            let only = failing.keys().next().copied().unwrap_or_default();
            return format!("no node satisfies {only}");
        }
        let parts: Vec<String> = failing
            .iter()
            .map(|(c, n)| format!("{c} on {}", nodes_word(*n)))
            .collect();
        return format!(
            "no node satisfies the constraints ({} fail)",
            parts.join(", ")
        );
    }
    let count = |a: Availability| {
        nodes
            .iter()
            .zip(fits)
            .filter(|(n, fit)| fit.is_ok() && n.availability == a)
            .count()
    };
    let active = count(Availability::Active);
    if active == 0 {
        return format!(
            "no active node satisfies the constraints ({} paused, {} drained)",
            count(Availability::Pause),
            count(Availability::Drain)
        );
    }
    match spec.placement.max_replicas_per_node {
        Some(m) if m > 0 && m == max && active == 1 => {
            format!("max_replicas_per_node {m} reached on the only eligible node")
        }
        Some(m) if m > 0 && m == max => {
            format!("max_replicas_per_node {m} reached on all {active} eligible nodes")
        }
        _ => "no node can take more replicas".into(),
    }
}

fn nodes_word(n: usize) -> String {
    if n == 1 {
        "1 node".into()
    } else {
        format!("{n} nodes")
    }
}
