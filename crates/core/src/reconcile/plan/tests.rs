//! Unit tests of the reconciler's rules, one node and one service at a time.

use super::*;
use crate::desired::{
    hlc::Hlc,
    spec::RestartPolicy,
    state::{AutoOutcome, UpdateState, UpdateStatus},
};
use crate::reconcile::placement;

fn service(replicas: u64, restart: RestartPolicy) -> ServiceView {
    ServiceView {
        name: "app_web".into(),
        stack: "app".into(),
        replicas,
        spec: ServiceSpec {
            image: "shoal-demo:v1".into(),
            restart_policy: restart,
            ..ServiceSpec::default()
        },
        version: Hlc::ZERO,
        force: 0,
        updated: Hlc::ZERO,
        update_status: None,
        can_roll_back: false,
    }
}

/// The container a create asked for, as the engine lists it.
fn container(task: &TaskSpec, status: ContainerStatus, health: Health) -> LocalContainer {
    LocalContainer {
        id: format!("c-{}", task.task_id),
        service: task.service.clone(),
        slot: task.slot,
        task_id: task.task_id.clone(),
        version: task.version,
        force: task.force,
        image: task.spec.image.clone(),
        status,
        health,
        created_ms: 0,
        endpoints: vec![],
        addresses: vec![],
    }
}

struct World {
    me: NodeId,
    nodes: Vec<NodeFacts>,
    services: Vec<ServiceView>,
    observed: ObservedState,
    reconciler: Reconciler,
}

impl World {
    fn one_node(service: ServiceView) -> Self {
        World {
            me: NodeId(1),
            nodes: vec![NodeFacts::plain(1)],
            services: vec![service],
            observed: ObservedState::default(),
            reconciler: Reconciler::default(),
        }
    }

    fn round(&mut self, now_ms: u64, local: &[LocalContainer]) -> Plan {
        self.reconciler.plan(&Inputs {
            me: self.me,
            now_ms,
            services: &self.services,
            nodes: &self.nodes,
            observed: &self.observed,
            local,
        })
    }
}

fn creates(plan: &Plan) -> Vec<TaskSpec> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Create(t) => Some((**t).clone()),
            Action::Remove { .. } => None,
        })
        .collect()
}

fn exited(code: i64, at: u64) -> ContainerStatus {
    ContainerStatus::Exited {
        code,
        finished_ms: at,
        error: None,
    }
}

/// A container that dies before the node ever saw it run still counts as a failure and is
/// replaced; the slot does not wait for the create it already carried out.
#[test]
fn a_create_whose_container_died_unseen_is_replaced() {
    let no_delay = RestartPolicy {
        delay_ms: 0,
        ..RestartPolicy::default()
    };
    let mut world = World::one_node(service(1, no_delay));
    let first = creates(&world.round(1_000, &[]));
    assert_eq!(first.len(), 1);
    // While the create is in flight and not listed yet, no second one.
    assert!(creates(&world.round(1_050, &[])).is_empty());
    // Next listing: it ran and died in between.
    let dead = container(&first[0], exited(137, 1_500), Health::None);
    let plan = world.round(2_000, &[dead]);
    assert!(plan.actions.iter().any(
        |a| matches!(a, Action::Remove { container, .. } if *container == format!("c-{}", first[0].task_id))
    ));
    let second = creates(&plan);
    assert_eq!(second.len(), 1, "{:?}", plan.actions);
    assert_ne!(second[0].task_id, first[0].task_id);
    assert!(plan.history.iter().any(|t| t.state == TaskState::Failed));
}

#[test]
fn restart_condition_none_leaves_the_slot_pending() {
    let never = RestartPolicy {
        condition: RestartCondition::None,
        ..RestartPolicy::default()
    };
    let mut world = World::one_node(service(1, never));
    let first = creates(&world.round(1_000, &[]));
    let done = container(&first[0], exited(0, 1_500), Health::None);
    let plan = world.round(2_000, &[done]);
    assert!(creates(&plan).is_empty());
    assert!(creates(&world.round(60_000, &[])).is_empty());
    let task = &world.round(61_000, &[]).tasks[0];
    assert_eq!(task.state, TaskState::Pending);
    assert!(!task.desired_running);
}

#[test]
fn a_crash_loop_backs_off() {
    let no_delay = RestartPolicy {
        delay_ms: 0,
        ..RestartPolicy::default()
    };
    let mut world = World::one_node(service(1, no_delay));
    let mut now = 1_000;
    let mut gaps = Vec::new();
    let mut last_create = now;
    let mut task = creates(&world.round(now, &[])).remove(0);
    for _ in 0..5 {
        // Dies 100 ms after it was created; rounds every 100 ms until the next create.
        let dead = container(&task, exited(1, now + 100), Health::None);
        now += 200;
        let mut plan = world.round(now, &[dead]);
        while creates(&plan).is_empty() {
            now += 100;
            plan = world.round(now, &[]);
        }
        gaps.push(now - last_create);
        last_create = now;
        task = creates(&plan).remove(0);
    }
    assert!(gaps.windows(2).all(|w| w[1] >= w[0]), "{gaps:?}");
    assert!(gaps[4] >= 4_000, "{gaps:?}");
}

/// A slot this node runs but another node now owns keeps running until the owner's replica
/// is ready, then stops.
#[test]
fn hand_off_waits_for_the_new_owner() {
    let mut world = World::one_node(service(1, RestartPolicy::default()));
    let task = creates(&world.round(1_000, &[])).remove(0);
    let mine = container(&task, ContainerStatus::Running, Health::Healthy);
    // Node 2 now owns the slot: drain this one.
    world.nodes[0].availability = Availability::Drain;
    world.nodes.push(NodeFacts::plain(2));
    let plan = world.round(2_000, std::slice::from_ref(&mine));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert!(!plan.tasks[0].desired_running);
    // The owner reports its replica running and healthy at the current version.
    let mut theirs = task_of(&mine, true, None);
    theirs.task_id = "other".into();
    world.observed.merge(NodeReport {
        node: NodeId(2),
        generation: 1,
        seq: 1,
        tasks: vec![theirs],
        history: vec![],
        gossip_keys: vec![],
    });
    // It drains first (out of every node's routing), then stops.
    let plan = world.round(3_000, std::slice::from_ref(&mine));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(plan.tasks[0].state, TaskState::Draining);
    let plan = world.round(3_000 + DRAIN_MS, std::slice::from_ref(&mine));
    assert!(
        matches!(&plan.actions[..], [Action::Remove { container, .. }] if *container == mine.id)
    );
}

impl World {
    /// What the agent does after each round: its own report joins the observed state.
    fn publish(&mut self, plan: &Plan, seq: u64) {
        self.observed.merge(NodeReport {
            node: self.me,
            generation: 1,
            seq,
            tasks: plan.tasks.clone(),
            history: vec![],
            gossip_keys: vec![],
        });
    }
}

fn healthy(tasks: &[TaskSpec]) -> Vec<LocalContainer> {
    tasks
        .iter()
        .map(|t| container(t, ContainerStatus::Running, Health::Healthy))
        .collect()
}

/// A new version replaces one slot at a time (parallelism 1), in slot order, each after the
/// previous one's new replica is ready; start-first keeps every old replica until then.
#[test]
fn an_update_goes_one_slot_at_a_time() {
    let mut svc = service(3, RestartPolicy::default());
    svc.spec.update_config.order = UpdateOrder::StartFirst;
    let mut world = World::one_node(svc);
    let mut local = healthy(&creates(&world.round(1_000, &[])));
    let plan = world.round(1_100, &local);
    world.publish(&plan, 1);

    let new_version = Hlc {
        wall_ms: 5_000,
        counter: 0,
        node: NodeId(1),
    };
    world.services[0].version = new_version;
    let mut plan = world.round(6_000, &local);
    // Each slot's steps are a few seconds apart: a replaced replica drains before it stops.
    for (seq, slot) in [(2u64, 1), (3, 2), (4, 3)] {
        let new = creates(&plan);
        assert_eq!(new.len(), 1, "slot {slot}: {:?}", plan.actions);
        assert_eq!(new[0].slot, SlotKey::Replica(slot));
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::Remove { .. })),
            "start-first removes nothing before the new replica is ready"
        );
        world.publish(&plan, seq * 10);
        // Starting: the window does not move.
        local.push(container(
            &new[0],
            ContainerStatus::Running,
            Health::Starting,
        ));
        let plan_starting = world.round(seq * 10_000 + 5_100, &local);
        assert!(
            creates(&plan_starting).is_empty(),
            "{:?}",
            plan_starting.actions
        );
        world.publish(&plan_starting, seq * 10 + 1);
        // Ready: the old replica of the slot goes...
        local.last_mut().unwrap().health = Health::Healthy;
        let plan_draining = world.round(seq * 10_000 + 5_200, &local);
        assert!(
            plan_draining
                .tasks
                .iter()
                .any(|t| t.state == TaskState::Draining),
            "{:?}",
            plan_draining.tasks
        );
        world.publish(&plan_draining, seq * 10 + 2);
        let plan_ready = world.round(seq * 10_000 + 5_200 + DRAIN_MS, &local);
        let removed: Vec<&String> = plan_ready
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove { container, .. } => Some(container),
                Action::Create(_) => None,
            })
            .collect();
        assert_eq!(removed.len(), 1, "{:?}", plan_ready.actions);
        local.retain(|c| &c.id != removed[0]);
        // ...and once it is gone, the next slot's turn comes.
        plan = world.round(seq * 10_000 + 5_300 + DRAIN_MS, &local);
        world.publish(&plan, seq * 10 + 3);
    }
    assert!(creates(&plan).is_empty(), "{:?}", plan.actions);
    assert!(local.iter().all(|c| c.version == new_version));
}

/// Stop-first with parallelism 2: two old replicas stop at once, the third waits its turn.
#[test]
fn stop_first_stops_only_the_slots_whose_turn_it_is() {
    let mut svc = service(3, RestartPolicy::default());
    svc.spec.update_config.parallelism = 2;
    let mut world = World::one_node(svc);
    let local = healthy(&creates(&world.round(1_000, &[])));
    let plan = world.round(1_100, &local);
    world.publish(&plan, 1);
    world.services[0].version = Hlc {
        wall_ms: 5_000,
        counter: 0,
        node: NodeId(1),
    };
    // The two whose turn it is drain first (nothing starts in their place yet)...
    let plan = world.round(6_000, &local);
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    let draining = plan
        .tasks
        .iter()
        .filter(|t| t.state == TaskState::Draining)
        .count();
    assert_eq!(draining, 2, "{:?}", plan.tasks);
    world.publish(&plan, 2);
    // ...then stop, and their new replicas start.
    let plan = world.round(6_000 + DRAIN_MS, &local);
    let removes = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Remove { .. }))
        .count();
    assert_eq!(removes, 2, "{:?}", plan.actions);
    let slots: Vec<SlotKey> = creates(&plan).iter().map(|t| t.slot).collect();
    assert_eq!(slots, [SlotKey::Replica(1), SlotKey::Replica(2)]);
    let waiting = plan
        .tasks
        .iter()
        .find(|t| t.slot == SlotKey::Replica(3))
        .expect("slot 3 still reported");
    assert!(
        waiting.desired_running,
        "the waiting old replica still serves"
    );
}

/// The new owner of a moved slot waits while earlier moves of the service are under way.
#[test]
fn a_new_owner_waits_its_turn_to_take_a_slot_over() {
    let mut world = World::one_node(service(2, RestartPolicy::default()));
    world.me = NodeId(2);
    world.nodes = vec![NodeFacts::plain(1), NodeFacts::plain(2)];
    world.nodes[0].availability = Availability::Drain;
    // Node 1 still serves both slots; both now belong to node 2.
    let first = TaskSpec {
        service: "app_web".into(),
        slot: SlotKey::Replica(1),
        task_id: "t1".into(),
        version: Hlc::ZERO,
        force: 0,
        spec: world.services[0].spec.clone(),
    };
    let second = TaskSpec {
        slot: SlotKey::Replica(2),
        task_id: "t2".into(),
        ..first.clone()
    };
    world.observed.merge(NodeReport {
        node: NodeId(1),
        generation: 1,
        seq: 1,
        tasks: healthy(&[first, second])
            .iter()
            .map(|c| task_of(c, false, None))
            .collect(),
        history: vec![],
        gossip_keys: vec![],
    });
    let slots: Vec<SlotKey> = creates(&world.round(1_000, &[]))
        .iter()
        .map(|t| t.slot)
        .collect();
    assert_eq!(
        slots,
        [SlotKey::Replica(1)],
        "parallelism 1: one move at a time"
    );
}

/// A service labelled `shoal.rebalance=false` stays where it runs: a node that joins takes none
/// of its slots (without the label it takes its share).
#[test]
fn an_opted_out_service_is_not_rebalanced_onto_a_new_node() {
    let run_on_node_1 = |world: &mut World| {
        let tasks: Vec<TaskSpec> = (1..=4)
            .map(|slot| TaskSpec {
                service: "app_web".into(),
                slot: SlotKey::Replica(slot),
                task_id: format!("t{slot}"),
                version: Hlc::ZERO,
                force: 0,
                spec: world.services[0].spec.clone(),
            })
            .collect();
        world.observed.merge(NodeReport {
            node: NodeId(1),
            generation: 1,
            seq: 1,
            tasks: healthy(&tasks)
                .iter()
                .map(|c| task_of(c, true, None))
                .collect(),
            history: vec![],
            gossip_keys: vec![],
        });
    };
    let mut svc = service(4, RestartPolicy::default());
    svc.spec.update_config.parallelism = 0;
    let mut world = World::one_node(svc.clone());
    world.me = NodeId(2);
    world.nodes = vec![NodeFacts::plain(1), NodeFacts::plain(2)];
    run_on_node_1(&mut world);
    assert!(
        !creates(&world.round(1_000, &[])).is_empty(),
        "the default rebalances"
    );

    svc.spec
        .labels
        .insert(placement::REBALANCE_LABEL.into(), "false".into());
    let mut world = World::one_node(svc);
    world.me = NodeId(2);
    world.nodes = vec![NodeFacts::plain(1), NodeFacts::plain(2)];
    run_on_node_1(&mut world);
    let plan = world.round(1_000, &[]);
    assert!(creates(&plan).is_empty(), "{:?}", plan.actions);
}

// ---------------------------------------------------------------------------------------------
// Restart timing

fn removes(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Remove { container, .. } => Some(container.clone()),
            Action::Create(_) => None,
        })
        .collect()
}

/// Rounds every 100 ms from `from` until one creates a container; returns its time and task.
fn next_create(world: &mut World, from: u64, local: &[LocalContainer]) -> (u64, TaskSpec) {
    let mut now = from;
    loop {
        if let Some(task) = creates(&world.round(now, local)).pop() {
            return (now, task);
        }
        now += 100;
        assert!(now < from + 120_000, "no create within two minutes");
    }
}

/// The first replacement after a replica that ran for a while is immediate; replicas that keep
/// failing soon after they start back off: 0.5 s, 1 s, 2 s after the exit.
#[test]
fn the_first_restart_is_immediate_and_a_crash_loop_backs_off() {
    let mut world = World::one_node(service(1, RestartPolicy::default()));
    let first = creates(&world.round(1_000, &[])).remove(0);
    let mut c = container(&first, ContainerStatus::Running, Health::None);
    world.round(1_100, std::slice::from_ref(&c));
    // It ran for a minute, then exited.
    c.status = exited(1, 61_000);
    let (at, mut task) = next_create(&mut world, 61_000, std::slice::from_ref(&c));
    assert_eq!(at, 61_000, "the first restart is immediate");
    // Each replacement dies 50 ms after it was created.
    let mut gaps = Vec::new();
    let mut created = at;
    for _ in 0..3 {
        let mut c = container(&task, exited(1, created + 50), Health::None);
        c.created_ms = created;
        let (at, next) = next_create(&mut world, created + 50, std::slice::from_ref(&c));
        gaps.push(at - (created + 50));
        created = at;
        task = next;
    }
    assert_eq!(gaps, [500, 1_000, 2_000]);
}

/// `restart_policy.delay`, when set, is waited before every replacement: after a container
/// that exited and after one removed behind shoal's back (`docker rm -f`) alike.
#[test]
fn a_set_delay_is_honoured_for_an_exit_and_a_removal_alike() {
    let delayed = RestartPolicy {
        delay_ms: 3_000,
        ..RestartPolicy::default()
    };
    for removed in [false, true] {
        let mut world = World::one_node(service(1, delayed.clone()));
        let task = creates(&world.round(1_000, &[])).remove(0);
        let mut c = container(&task, ContainerStatus::Running, Health::None);
        world.round(1_100, std::slice::from_ref(&c));
        // At 30 s it exits (or disappears); the node sees it at once.
        let local = if removed {
            vec![]
        } else {
            c.status = exited(137, 30_000);
            vec![c.clone()]
        };
        let (at, _) = next_create(&mut world, 30_000, &local);
        assert_eq!(at, 33_000, "removed: {removed}");
        let history = world.round(33_100, &[]).history;
        let failed = history.iter().find(|t| t.task_id == task.task_id).unwrap();
        assert_eq!(failed.state, TaskState::Failed, "removed: {removed}");
    }
}

/// A container removed behind shoal's back is a failure like an exit: replaced at once the
/// first time, backing off when it keeps happening soon after each start.
#[test]
fn a_removed_container_counts_as_a_failure() {
    let mut world = World::one_node(service(1, RestartPolicy::default()));
    let mut now = 1_000;
    let mut task = creates(&world.round(now, &[])).remove(0);
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let c = container(&task, ContainerStatus::Running, Health::None);
        now += 100;
        world.round(now, std::slice::from_ref(&c));
        // Removed 100 ms later.
        now += 100;
        let (at, next) = next_create(&mut world, now, &[]);
        gaps.push(at - now);
        now = at;
        task = next;
    }
    assert_eq!(gaps, [0, 500, 1_000]);
}

/// A create queued at the engine is reported as `preparing` in the same round, so other nodes
/// see the slot in progress and this node's.
#[test]
fn a_create_in_flight_is_reported_as_preparing() {
    let mut world = World::one_node(service(2, RestartPolicy::default()));
    let plan = world.round(1_000, &[]);
    let made = creates(&plan);
    assert_eq!(made.len(), 2);
    for task in &made {
        let shown = plan
            .tasks
            .iter()
            .find(|t| t.task_id == task.task_id)
            .unwrap();
        assert_eq!(shown.state, TaskState::Preparing);
        assert!(shown.desired_running && shown.container_id.is_none());
    }
    // Still so on the next round, while it is not listed.
    let plan = world.round(1_100, &[]);
    assert!(creates(&plan).is_empty());
    assert!(plan.tasks.iter().all(|t| t.state == TaskState::Preparing));
}

// ---------------------------------------------------------------------------------------------
// Rollouts

const V2: Hlc = Hlc {
    wall_ms: 5_000,
    counter: 0,
    node: NodeId(1),
};

fn status(state: UpdateState) -> Option<UpdateStatus> {
    Some(UpdateStatus {
        state,
        version: V2,
        started_ms: V2.wall_ms,
        completed_ms: None,
        message: String::new(),
    })
}

/// A start-first update whose new replica fails: the rollout's assessment asks for a pause;
/// while paused the slot keeps its old replica and starts no new one; resumed, it retries.
#[test]
fn a_paused_start_first_slot_keeps_its_old_replica() {
    let mut svc = service(1, RestartPolicy::default());
    svc.spec.update_config.order = UpdateOrder::StartFirst;
    let mut world = World::one_node(svc);
    let old = healthy(&creates(&world.round(1_000, &[])));
    let plan = world.round(1_100, &old);
    world.publish(&plan, 1);

    world.services[0].version = V2;
    world.services[0].update_status = status(UpdateState::Updating);
    let new = creates(&world.round(6_000, &old)).remove(0);
    let mut local = old.clone();
    local.push(container(&new, exited(1, 6_200), Health::None));
    // Seen failed: removed, and retried at once (the rollout is not paused yet).
    let plan = world.round(6_300, &local);
    assert_eq!(removes(&plan), [format!("c-{}", new.task_id)]);
    let retry = creates(&plan).remove(0);
    world.observed.merge(NodeReport {
        node: NodeId(1),
        generation: 1,
        seq: 2,
        tasks: plan.tasks.clone(),
        history: plan.history.clone(),
        gossip_keys: vec![],
    });
    // The assessment asks for a pause, naming the first failure.
    let mut local = old.clone();
    local.push(container(&retry, exited(1, 6_350), Health::None));
    let plan = world.round(6_400, &local);
    let write = plan.auto_writes.first().expect("the failure is assessed");
    assert!(
        matches!(&write.outcome, AutoOutcome::Paused { message } if message.ends_with(&new.task_id)),
        "{write:?}"
    );

    world.services[0].update_status = status(UpdateState::Paused);
    for now in [6_500, 10_000, 60_000] {
        let plan = world.round(now, &old);
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
        assert!(plan
            .tasks
            .iter()
            .any(|t| t.desired_running && t.version == Hlc::ZERO));
    }
    // A command resumes it (here: the status back to updating).
    world.services[0].update_status = status(UpdateState::Updating);
    assert_eq!(creates(&world.round(61_000, &old)).len(), 1);
}

/// While a rollback runs, `rollback_config` paces it, not `update_config`.
#[test]
fn a_rollback_paces_with_rollback_config() {
    let mut svc = service(3, RestartPolicy::default());
    svc.spec.rollback_config.parallelism = 0;
    let mut world = World::one_node(svc);
    let old = healthy(&creates(&world.round(1_000, &[])));
    let plan = world.round(1_100, &old);
    world.publish(&plan, 1);
    world.services[0].version = V2;
    for (state, stopped) in [
        (UpdateState::Updating, 1),
        (UpdateState::RollbackStarted, 3),
    ] {
        world.services[0].update_status = status(state);
        let mut fresh = World::one_node(world.services[0].clone());
        fresh.observed = world.observed.clone();
        fresh.round(1_100, &old);
        assert_eq!(
            removes(&fresh.round(6_000, &old)).len(),
            stopped,
            "{state:?}"
        );
    }
}

/// A replica is stopped with its service's `stop_grace_period` (rounded up to whole seconds);
/// one whose service is gone gets the engine's default.
#[test]
fn a_removal_carries_the_services_stop_grace_period() {
    let mut svc = service(2, RestartPolicy::default());
    svc.spec.stop_grace_ms = Some(45_500);
    let mut world = World::one_node(svc);
    let first = creates(&world.round(1_000, &[]));
    assert_eq!(first.len(), 2);
    // Scaled to one: the extra replica does not serve (no health yet), so it stops at once.
    world.services[0].replicas = 1;
    let local: Vec<_> = first
        .iter()
        .map(|t| container(t, ContainerStatus::Running, Health::Starting))
        .collect();
    let plan = world.round(2_000, &local);
    assert_eq!(stop_timeouts(&plan), vec![46], "{:?}", plan.actions);

    world.services.clear();
    let plan = world.round(3_000, &local[..1]);
    assert_eq!(
        stop_timeouts(&plan),
        vec![crate::runtime::DEFAULT_STOP_TIMEOUT_S]
    );
}

fn stop_timeouts(plan: &Plan) -> Vec<u64> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Remove { stop_timeout_s, .. } => Some(*stop_timeout_s),
            Action::Create(_) => None,
        })
        .collect()
}
