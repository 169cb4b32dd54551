//! Pacing: how many slots of a service change at once, with no coordinator.
//!
//! A slot **changes** when it must go from the replica that serves it now to a replica of the
//! current spec at its owner: a rolling update (a new spec version or `--force`), or a move
//! (rebalance onto a node that joined, a drain). Every node sees the same observed state, so every
//! node computes the same set of changing slots and lets the same ones proceed:
//!
//! - a slot is **changing** while some live node serves it (a running, ready replica) but not
//!   only its owner at the current version: the owner's new replica is not ready yet, or the old
//!   one (an older version, or on the previous owner) has not stopped yet. A slot that nobody
//!   serves is being healed, not changed: it is never held back;
//! - changing slots proceed in slot order, at most `update_config.parallelism` at a time (0: all):
//!   a sliding window, as Swarm's updater works through its tasks with that many workers;
//! - after a slot finishes, no further slot starts until `update_config.delay` has passed since
//!   the finished slot's new replica started (its report's `since`: the time its container was
//!   created, which is what reports carry; Swarm counts from when the task runs, a healthcheck's
//!   start period earlier at most).
//!
//! A slot held back keeps its old replica running. A new version that never becomes ready holds
//! the window where it is, so the update goes no further than `parallelism` slots (Swarm's
//! `failure_action: pause`, without the written state).

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    desired::state::ServiceView,
    identity::NodeId,
    observed::{SlotKey, TaskReport, TaskState},
    runtime::{ContainerStatus, LocalContainer},
};

/// Which changing slots of one service may proceed this round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gate {
    /// Slots changing now, in slot order.
    pub changing: Vec<SlotKey>,
    /// Those of them that may proceed.
    pub open: BTreeSet<SlotKey>,
    /// When the delay after the last finished slot ends, if a slot waits for it.
    pub wake_at_ms: Option<u64>,
}

impl Gate {
    /// Whether `slot` may start (or go on) changing: it is not changing, or its turn has come.
    pub fn allows(&self, slot: &SlotKey) -> bool {
        self.open.contains(slot) || !self.changing.contains(slot)
    }
}

/// Who serves what: this node's own containers as it lists them (fresher than its last report),
/// the other live nodes' reports (those of nodes not in `live` are stale).
pub struct Serving<'a> {
    /// This node.
    pub me: NodeId,
    /// This node's containers.
    pub local: &'a [LocalContainer],
    /// The service's tasks in every node's latest report
    /// ([`crate::observed::ObservedState::by_service`]).
    pub reported: &'a [(NodeId, &'a TaskReport)],
    /// The nodes alive now.
    pub live: &'a BTreeSet<NodeId>,
}

/// The gate of `service`, whose slots `owners` own, given who serves what.
pub fn gate(
    service: &ServiceView,
    owners: &BTreeMap<SlotKey, NodeId>,
    serving: &Serving<'_>,
    now_ms: u64,
) -> Gate {
    let mut served: BTreeSet<SlotKey> = BTreeSet::new();
    let mut done: BTreeSet<SlotKey> = BTreeSet::new();
    let mut last_done_ms = 0u64;
    let current = |version, force| version == service.version && force == service.force;
    let others = serving
        .reported
        .iter()
        .copied()
        .filter(|(node, t)| {
            *node != serving.me
                && serving.live.contains(node)
                && t.state == TaskState::Running
                && t.health.is_ready()
        })
        .map(|(node, t)| {
            (
                node,
                t.slot,
                current(t.version, t.force) && t.desired_running,
                t.since_ms,
            )
        });
    let mine = serving
        .local
        .iter()
        .filter(|c| {
            c.service == service.name && c.status == ContainerStatus::Running && c.health.is_ready()
        })
        .map(|c| {
            (
                serving.me,
                c.slot,
                current(c.version, c.force),
                c.created_ms,
            )
        });
    // A slot is done when its owner serves it at the current version and nothing else does: a
    // moved slot's old replica counts until its node stops it, so the window moves on only once
    // the extra container is gone.
    let mut extra: BTreeSet<SlotKey> = BTreeSet::new();
    let mut done_since: BTreeMap<SlotKey, u64> = BTreeMap::new();
    for (node, slot, is_current, since_ms) in others.chain(mine) {
        served.insert(slot);
        if is_current && owners.get(&slot) == Some(&node) {
            done_since.insert(slot, since_ms);
        } else {
            extra.insert(slot);
        }
    }
    for (slot, since_ms) in done_since {
        if !extra.contains(&slot) {
            done.insert(slot);
            last_done_ms = last_done_ms.max(since_ms);
        }
    }
    let changing: Vec<SlotKey> = owners
        .keys()
        .filter(|slot| served.contains(slot) && !done.contains(slot))
        .copied()
        .collect();
    let config = &service.spec.update_config;
    let window = match config.parallelism {
        0 => changing.len(),
        p => usize::try_from(p).unwrap_or(usize::MAX).min(changing.len()),
    };
    // Another node's clock may run ahead: never wait longer than the delay from now.
    let resume_ms = last_done_ms.min(now_ms).saturating_add(config.delay_ms);
    let (open, wake_at_ms) = if config.delay_ms > 0 && now_ms < resume_ms && !changing.is_empty() {
        (BTreeSet::new(), Some(resume_ms))
    } else {
        (changing[..window].iter().copied().collect(), None)
    };
    Gate {
        changing,
        open,
        wake_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        desired::{
            hlc::Hlc,
            spec::{ServiceSpec, UpdateConfig},
        },
        observed::{Health, NodeReport, ObservedState, TaskReport},
    };

    const OLD: Hlc = Hlc {
        wall_ms: 1,
        counter: 0,
        node: NodeId(9),
    };
    const NEW: Hlc = Hlc {
        wall_ms: 2,
        counter: 0,
        node: NodeId(9),
    };

    fn service(parallelism: u64, delay_ms: u64) -> ServiceView {
        ServiceView {
            name: "s_web".into(),
            stack: "s".into(),
            replicas: 4,
            spec: ServiceSpec {
                update_config: UpdateConfig {
                    parallelism,
                    delay_ms,
                    ..UpdateConfig::default()
                },
                ..ServiceSpec::default()
            },
            version: NEW,
            force: 0,
            updated: NEW,
            update_status: None,
            can_roll_back: false,
        }
    }

    fn task(slot: u64, version: Hlc, health: Health, since_ms: u64) -> TaskReport {
        TaskReport {
            service: "s_web".into(),
            slot: SlotKey::Replica(slot),
            task_id: format!("t{slot}-{}", version.wall_ms),
            version,
            image: "img".into(),
            force: 0,
            container_id: None,
            state: TaskState::Running,
            health,
            desired_running: true,
            error: None,
            endpoints: vec![],
            since_ms,
            started_ms: None,
        }
    }

    /// Node `n` runs `tasks`; slots 1..=4 are owned by node 1 (slots 1, 2) and node 2 (3, 4).
    fn world(tasks: Vec<(u128, TaskReport)>) -> (BTreeMap<SlotKey, NodeId>, ObservedState) {
        let owners = (1..=4)
            .map(|s| (SlotKey::Replica(s), NodeId(if s <= 2 { 1 } else { 2 })))
            .collect();
        let mut by_node: BTreeMap<u128, Vec<TaskReport>> = BTreeMap::new();
        for (n, t) in tasks {
            by_node.entry(n).or_default().push(t);
        }
        let mut observed = ObservedState::default();
        for (n, tasks) in by_node {
            observed.merge(NodeReport {
                node: NodeId(n),
                generation: 1,
                seq: 1,
                tasks,
                history: vec![],
            });
        }
        (owners, observed)
    }

    fn live() -> BTreeSet<NodeId> {
        [NodeId(1), NodeId(2), NodeId(3)].into()
    }

    /// The gate as node 9 (which runs nothing) sees it: from the reports alone.
    fn gate_of(
        svc: &ServiceView,
        owners: &BTreeMap<SlotKey, NodeId>,
        observed: &ObservedState,
        live: &BTreeSet<NodeId>,
        now_ms: u64,
    ) -> Gate {
        let reported = observed.by_service();
        let serving = Serving {
            me: NodeId(9),
            local: &[],
            reported: reported.of(&svc.name),
            live,
        };
        gate(svc, owners, &serving, now_ms)
    }

    fn slots(list: &[u64]) -> BTreeSet<SlotKey> {
        list.iter().map(|s| SlotKey::Replica(*s)).collect()
    }

    #[test]
    fn an_update_goes_parallelism_slots_at_a_time_in_slot_order() {
        let all_old = (1..=4)
            .map(|s| (if s <= 2 { 1 } else { 2 }, task(s, OLD, Health::Healthy, 0)))
            .collect();
        let (owners, observed) = world(all_old);
        let g = gate_of(&service(2, 0), &owners, &observed, &live(), 100);
        assert_eq!(g.changing.len(), 4);
        assert_eq!(g.open, slots(&[1, 2]));
        assert!(g.allows(&SlotKey::Replica(2)) && !g.allows(&SlotKey::Replica(3)));

        // Slot 1 done, slot 2 still starting: the window slides by one.
        let (owners, observed) = world(vec![
            (1, task(1, NEW, Health::Healthy, 50)),
            (1, task(2, OLD, Health::Healthy, 0)),
            (1, task(2, NEW, Health::Starting, 60)),
            (2, task(3, OLD, Health::Healthy, 0)),
            (2, task(4, OLD, Health::Healthy, 0)),
        ]);
        let g = gate_of(&service(2, 0), &owners, &observed, &live(), 100);
        assert_eq!(g.open, slots(&[2, 3]));
        assert!(
            g.allows(&SlotKey::Replica(1)),
            "a finished slot is not held"
        );

        let g = gate_of(&service(0, 0), &owners, &observed, &live(), 100);
        assert_eq!(g.open, slots(&[2, 3, 4]), "parallelism 0 is all at once");
    }

    #[test]
    fn the_delay_holds_every_new_start_after_a_slot_finishes() {
        let (owners, observed) = world(vec![
            (1, task(1, NEW, Health::Healthy, 1_000)),
            (1, task(2, OLD, Health::Healthy, 0)),
            (2, task(3, OLD, Health::Healthy, 0)),
            (2, task(4, OLD, Health::Healthy, 0)),
        ]);
        let g = gate_of(&service(1, 5_000), &owners, &observed, &live(), 3_000);
        assert!(g.open.is_empty());
        assert_eq!(g.wake_at_ms, Some(6_000));
        let g = gate_of(&service(1, 5_000), &owners, &observed, &live(), 6_000);
        assert_eq!(g.open, slots(&[2]));
    }

    #[test]
    fn a_slot_nobody_serves_is_healed_not_held() {
        // Slot 1's replica exited, slot 3's node is gone: both unserved, both free to start.
        let (owners, observed) = world(vec![
            (1, task(2, OLD, Health::Healthy, 0)),
            (3, task(3, OLD, Health::Healthy, 0)),
            (2, task(4, OLD, Health::Unhealthy, 0)),
        ]);
        let live: BTreeSet<NodeId> = [NodeId(1), NodeId(2)].into();
        let g = gate_of(&service(1, 0), &owners, &observed, &live, 100);
        assert_eq!(g.changing, vec![SlotKey::Replica(2)]);
        for free in [1, 3, 4] {
            assert!(g.allows(&SlotKey::Replica(free)), "slot {free}");
        }
    }

    #[test]
    fn the_owner_trusts_its_own_listing_over_its_last_report() {
        // Node 1's report still says slot 1 is starting; its listing shows it healthy at the old
        // version: slot 1 is served, so it waits its turn like every other.
        let (owners, observed) = world(vec![
            (1, task(1, OLD, Health::Starting, 0)),
            (1, task(2, OLD, Health::Healthy, 0)),
            (2, task(3, OLD, Health::Healthy, 0)),
            (2, task(4, OLD, Health::Healthy, 0)),
        ]);
        let local = vec![LocalContainer {
            id: "c1".into(),
            service: "s_web".into(),
            slot: SlotKey::Replica(1),
            task_id: "t1".into(),
            version: OLD,
            force: 0,
            image: "img".into(),
            status: ContainerStatus::Running,
            health: Health::Healthy,
            created_ms: 0,
            endpoints: vec![],
        }];
        let live = live();
        let reported = observed.by_service();
        let serving = Serving {
            me: NodeId(1),
            local: &local,
            reported: reported.of("s_web"),
            live: &live,
        };
        let g = gate(&service(1, 0), &owners, &serving, 100);
        assert_eq!(
            g.changing.len(),
            3,
            "slot 2 on node 1 is not in the listing: unserved"
        );
        assert_eq!(g.open, slots(&[1]));
    }

    #[test]
    fn moves_are_paced_like_updates() {
        // Node 3 joined and now owns slots 2 and 4, still served by nodes 1 and 2.
        let mut owners: BTreeMap<SlotKey, NodeId> = (1..=4)
            .map(|s| (SlotKey::Replica(s), NodeId(if s <= 2 { 1 } else { 2 })))
            .collect();
        owners.insert(SlotKey::Replica(2), NodeId(3));
        owners.insert(SlotKey::Replica(4), NodeId(3));
        let (_, observed) = world(
            (1..=4)
                .map(|s| (if s <= 2 { 1 } else { 2 }, task(s, NEW, Health::Healthy, 0)))
                .collect(),
        );
        let g = gate_of(&service(1, 0), &owners, &observed, &live(), 100);
        assert_eq!(g.changing, vec![SlotKey::Replica(2), SlotKey::Replica(4)]);
        assert_eq!(g.open, slots(&[2]));
    }
}
