//! Pacing: how many slots of a service change at once, with no coordinator.
//!
//! A slot **changes** when it must go from the replica that serves it now to a replica of the
//! current spec at its owner: a rolling update (a new spec version, `--force`, a rollback), or a
//! move (rebalance onto a node that joined, a drain). Every node sees the same observed state, so
//! every node computes the same gate and lets the same slots proceed.
//!
//! # What is promised
//!
//! Stated for one service whose rollout paces with `parallelism` = P (`update_config`, or
//! `rollback_config` during a rollback; P = 0 means all at once), so that a user can check each
//! against `service ps`:
//!
//! 1. **An update takes at most P slots out of service.** At any moment, at most P slots of the
//!    service are *below ready* (no live node runs a ready replica of them, of any version)
//!    because of the update, for `stop-first` and `start-first` alike; with `start-first` the
//!    update itself never takes a slot below ready. This holds although every node decides on
//!    its own from reports that may be out of date (proof sketch below).
//! 2. **A slot in progress keeps its place in the window** until it is *done* (its owner runs a
//!    ready replica of the current version and no other replica serves it): its old replica
//!    stopped by `stop-first` and its new one not ready yet, a new replica starting, failing and
//!    waiting for a restart, a create still queued at the engine (the owner reports it as
//!    `preparing`). A failed slot the rollout tolerates (`failure_action: continue`, or under
//!    `max_failure_ratio`, see `rollout`) leaves the window.
//! 3. **Missing slots are healed at once, and count.** A slot below ready for a reason other
//!    than the update (its node died, its container crashed, a scale-up) is never held back:
//!    its owner starts a replica right away. While it is below ready it occupies a place in the
//!    window, so the update starts nothing new while P or more slots are missing.
//! 4. **Slot order.** Slots waiting their turn start in slot order, as a sliding window: slot
//!    `s` may start when the slots in progress or below ready, plus the waiting slots before
//!    `s`, number fewer than P.
//! 5. **Delay.** After a slot finishes, no waiting slot starts until `delay` has passed since
//!    the finished slot's new replica was created (reports carry creation times; Swarm counts
//!    from when the task runs, a healthcheck's start period earlier at most).
//! 6. **Pause.** While the rollout is `paused` (`rollback_paused`), no waiting slot starts and
//!    no slot in progress starts a new replica: a `start-first` slot whose new replica failed
//!    keeps its old one; a slot below ready is still healed (rule 3), so a `stop-first` slot whose
//!    new replica failed restarts it as the restart policy says.
//! 7. A slot waiting its turn keeps its old replica running, reported and taking traffic.
//!
//! # Why stale reports do not break promise 1
//!
//! For a slot under a plain update (no crash, no node loss), its true state only moves forward:
//! waiting, then in progress, then done. A node's view of another node's slot is that node's
//! last report it holds, i.e. the slot's true state at some earlier time, never ahead of it; a
//! node's own slots it sees from its own listing. A node starts its waiting slot `s` only if the
//! slots before `s` that are not done in its view number fewer than P (rule 4). Slots done in the
//! view are done in truth, so fewer than P slots before `s` are not done in truth either: `s` is
//! among the first P slots that are not done. That stays true as slots finish, so every slot in
//! progress is always among the first P not done, and at most P are in progress. The property
//! test in `rollout::tests` checks it over random interleavings of rounds, report deliveries and
//! container events on several nodes.

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
    /// Slots not done yet (waiting, in progress, below ready), in slot order.
    pub changing: Vec<SlotKey>,
    /// Those of them that may proceed: in progress (unless paused), below ready, tolerated
    /// failures, and the waiting slots whose turn has come.
    pub open: BTreeSet<SlotKey>,
    /// Slots below ready now (no live ready replica of any version).
    pub below_ready: BTreeSet<SlotKey>,
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

/// What the gate cannot read from the reports alone.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Failed slots the rollout tolerates (`rollout::Assessment::tolerated`): out of the window.
    pub released: BTreeSet<SlotKey>,
    /// This node's slots whose owner (this node) is working on the current version without a
    /// container to show for it: a create in flight, a restart delay after a failure.
    pub started_here: BTreeSet<SlotKey>,
}

/// What the gate knows of one slot.
#[derive(Default)]
struct SlotFacts {
    /// Some live node runs a ready replica of it (any version).
    ready: bool,
    /// Its owner runs a ready replica of the current version, created then.
    owner_current: Option<u64>,
    /// A ready replica other than the owner's current one serves it.
    extra: bool,
    /// Its owner is working on the current version for it.
    started: bool,
}

/// The gate of `service`, whose slots `owners` own, given who serves what.
pub fn gate(
    service: &ServiceView,
    owners: &BTreeMap<SlotKey, NodeId>,
    serving: &Serving<'_>,
    now_ms: u64,
) -> Gate {
    gate_with(service, owners, serving, &Progress::default(), now_ms)
}

/// [`gate`], knowing what only the reconciler and the rollout assessment know.
pub fn gate_with(
    service: &ServiceView,
    owners: &BTreeMap<SlotKey, NodeId>,
    serving: &Serving<'_>,
    progress: &Progress,
    now_ms: u64,
) -> Gate {
    let current = |version, force| version == service.version && force == service.force;
    let mut facts: BTreeMap<SlotKey, SlotFacts> = BTreeMap::new();
    let mut see =
        |node: NodeId, slot: SlotKey, is_current: bool, ready: bool, since: u64, working| {
            let owned = owners.get(&slot) == Some(&node);
            let f = facts.entry(slot).or_default();
            if ready {
                f.ready = true;
                if is_current && owned {
                    f.owner_current = Some(since);
                } else {
                    f.extra = true;
                }
            }
            f.started |= is_current && owned && working;
        };
    let mut draining = Vec::new();
    for (node, t) in serving.reported.iter().copied() {
        if node == serving.me || !serving.live.contains(&node) {
            continue;
        }
        let ready = t.state == TaskState::Running && t.health.is_ready();
        let alive = matches!(
            t.state,
            TaskState::Preparing | TaskState::Starting | TaskState::Running | TaskState::Pending
        );
        let is_current = current(t.version, t.force) && t.desired_running;
        see(node, t.slot, is_current, ready, t.since_ms, alive);
        if t.state == TaskState::Draining {
            // Not serving any more, but still there: the slot is not done until it is gone.
            draining.push(t.slot);
        }
    }
    for c in serving.local.iter().filter(|c| c.service == service.name) {
        let ready = c.status == ContainerStatus::Running && c.health.is_ready();
        let alive = !matches!(c.status, ContainerStatus::Exited { .. });
        let is_current = current(c.version, c.force);
        see(serving.me, c.slot, is_current, ready, c.created_ms, alive);
    }
    for slot in draining {
        facts.entry(slot).or_default().extra = true;
    }
    for slot in &progress.started_here {
        if owners.get(slot) == Some(&serving.me) {
            facts.entry(*slot).or_default().started = true;
        }
    }

    let mut changing = Vec::new();
    let mut open = BTreeSet::new();
    let mut below_ready = BTreeSet::new();
    let mut waiting = Vec::new();
    let mut busy = 0usize;
    let mut last_done_ms = 0u64;
    let paused = service.is_paused();
    let empty = SlotFacts::default();
    for slot in owners.keys() {
        let f = facts.get(slot).unwrap_or(&empty);
        if let (Some(since), false) = (f.owner_current, f.extra) {
            last_done_ms = last_done_ms.max(since);
            continue;
        }
        changing.push(*slot);
        if progress.released.contains(slot) {
            open.insert(*slot);
        } else if !f.ready {
            below_ready.insert(*slot);
            open.insert(*slot);
            busy += 1;
        } else if f.started {
            if !paused {
                open.insert(*slot);
            }
            busy += 1;
        } else {
            waiting.push(*slot);
        }
    }

    let config = service.pacing_config();
    // Another node's clock may run ahead: never wait longer than the delay from now.
    let resume_ms = last_done_ms.min(now_ms).saturating_add(config.delay_ms);
    let mut wake_at_ms = None;
    if paused || waiting.is_empty() {
    } else if config.delay_ms > 0 && now_ms < resume_ms {
        wake_at_ms = Some(resume_ms);
    } else {
        let room = match usize::try_from(config.parallelism) {
            Ok(0) => usize::MAX,
            Ok(p) => p.saturating_sub(busy),
            Err(_) => usize::MAX,
        };
        open.extend(waiting.iter().take(room).copied());
    }
    Gate {
        changing,
        open,
        below_ready,
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
            addresses: vec![],
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
                gossip_keys: vec![],
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
    fn a_slot_nobody_serves_is_healed_and_holds_the_window() {
        // Slot 1's replica exited, slot 3's node is gone, slot 4 is unhealthy: all three below
        // ready, all free to start at once; while they are missing, slot 2 waits.
        let (owners, observed) = world(vec![
            (1, task(2, OLD, Health::Healthy, 0)),
            (3, task(3, OLD, Health::Healthy, 0)),
            (2, task(4, OLD, Health::Unhealthy, 0)),
        ]);
        let live: BTreeSet<NodeId> = [NodeId(1), NodeId(2)].into();
        let g = gate_of(&service(3, 0), &owners, &observed, &live, 100);
        assert_eq!(g.below_ready, slots(&[1, 3, 4]));
        for free in [1, 3, 4] {
            assert!(g.allows(&SlotKey::Replica(free)), "slot {free}");
        }
        assert!(
            !g.allows(&SlotKey::Replica(2)),
            "3 missing fill a window of 3"
        );
        let g = gate_of(&service(4, 0), &owners, &observed, &live, 100);
        assert!(g.allows(&SlotKey::Replica(2)), "a window of 4 has room");
    }

    #[test]
    fn a_slot_in_progress_keeps_its_place_until_done() {
        // Slot 1: stop-first stopped its old replica, the new one is preparing (a create queued
        // at the engine): below ready. Slot 2 waits, at parallelism 1.
        let mut preparing = task(1, NEW, Health::None, 50);
        preparing.state = TaskState::Preparing;
        preparing.container_id = None;
        let (owners, observed) = world(vec![
            (1, preparing),
            (1, task(2, OLD, Health::Healthy, 0)),
            (2, task(3, OLD, Health::Healthy, 0)),
            (2, task(4, OLD, Health::Healthy, 0)),
        ]);
        let g = gate_of(&service(1, 0), &owners, &observed, &live(), 100);
        assert_eq!(g.open, slots(&[1]));
        // Start-first: the old replica still serves slot 1, the new one failed and waits for a
        // restart (a pending task of the new version): still in progress.
        let mut waiting = task(1, NEW, Health::None, 60);
        waiting.state = TaskState::Pending;
        waiting.container_id = None;
        let (owners, observed) = world(vec![
            (1, task(1, OLD, Health::Healthy, 0)),
            (1, waiting),
            (1, task(2, OLD, Health::Healthy, 0)),
            (2, task(3, OLD, Health::Healthy, 0)),
            (2, task(4, OLD, Health::Healthy, 0)),
        ]);
        let g = gate_of(&service(1, 0), &owners, &observed, &live(), 100);
        assert_eq!(g.open, slots(&[1]));
        assert!(g.below_ready.is_empty());
    }

    #[test]
    fn a_tolerated_failure_leaves_the_window() {
        // Slot 1's new replica failed and waits for a restart (stop-first: below ready). Held,
        // it fills the window; tolerated (`continue`, or under the failure ratio), it does not.
        let (owners, observed) = world(vec![
            (1, task(2, OLD, Health::Healthy, 0)),
            (2, task(3, OLD, Health::Healthy, 0)),
            (2, task(4, OLD, Health::Healthy, 0)),
        ]);
        let reported = observed.by_service();
        let live = live();
        let serving = Serving {
            me: NodeId(9),
            local: &[],
            reported: reported.of("s_web"),
            live: &live,
        };
        let held = gate_with(&service(1, 0), &owners, &serving, &Progress::default(), 100);
        assert_eq!(held.open, slots(&[1]));
        let progress = Progress {
            released: slots(&[1]),
            ..Progress::default()
        };
        let tolerated = gate_with(&service(1, 0), &owners, &serving, &progress, 100);
        assert_eq!(tolerated.open, slots(&[1, 2]), "slot 1 still heals");
    }

    #[test]
    fn a_paused_rollout_starts_nothing_but_heals() {
        use crate::desired::state::{UpdateState, UpdateStatus};
        let mut svc = service(2, 0);
        svc.update_status = Some(UpdateStatus {
            state: UpdateState::Paused,
            version: NEW,
            started_ms: 2,
            completed_ms: None,
            message: "update paused".into(),
        });
        // Slot 1: start-first, old still serving, new one failed; slot 2 waits; slot 4 crashed.
        let (owners, observed) = world(vec![
            (1, task(1, OLD, Health::Healthy, 0)),
            (1, task(2, OLD, Health::Healthy, 0)),
            (2, task(3, OLD, Health::Healthy, 0)),
        ]);
        let live = live();
        let g = gate_of(&svc, &owners, &observed, &live, 100);
        assert!(!g.allows(&SlotKey::Replica(2)) && !g.allows(&SlotKey::Replica(3)));
        assert!(g.allows(&SlotKey::Replica(4)));
        svc.update_status.as_mut().unwrap().state = UpdateState::Updating;
        let g = gate_of(&svc, &owners, &observed, &live, 100);
        assert!(g.allows(&SlotKey::Replica(1)), "resumed");
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
            addresses: vec![],
        }];
        let live = live();
        let reported = observed.by_service();
        let serving = Serving {
            me: NodeId(1),
            local: &local,
            reported: reported.of("s_web"),
            live: &live,
        };
        let g = gate(&service(2, 0), &owners, &serving, 100);
        assert_eq!(
            g.below_ready,
            slots(&[2]),
            "slot 2 on node 1 is not in the listing: unserved"
        );
        assert_eq!(g.open, slots(&[1, 2]));
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
