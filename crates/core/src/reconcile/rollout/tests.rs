//! Tests of the rollout assessment, and of pacing across several nodes that see each other's
//! reports late (the real reconciler on every node).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::{
    desired::{
        hlc::Hlc,
        spec::{HealthcheckSpec, ServiceSpec, UpdateConfig, UpdateOrder},
        state::{UpdateState, UpdateStatus},
    },
    desired::{spec::ServiceDef, state::DesiredState},
    observed::{NodeReport, ObservedState},
    reconcile::{
        placement::NodeFacts,
        plan::{Inputs, Reconciler},
    },
    runtime::{Action, ContainerStatus, LocalContainer, TaskSpec},
};

const V1: Hlc = Hlc {
    wall_ms: 1_000,
    counter: 0,
    node: NodeId(7),
};
const V2: Hlc = Hlc {
    wall_ms: 2_000,
    counter: 0,
    node: NodeId(7),
};

fn service(replicas: u64, config: UpdateConfig, state: Option<UpdateState>) -> ServiceView {
    ServiceView {
        name: "s_web".into(),
        stack: "s".into(),
        replicas,
        spec: ServiceSpec {
            image: "img:2".into(),
            update_config: config,
            ..ServiceSpec::default()
        },
        version: V2,
        force: 0,
        updated: V2,
        update_status: state.map(|state| UpdateStatus {
            state,
            version: V2,
            started_ms: V2.wall_ms,
            completed_ms: None,
            message: String::new(),
        }),
        can_roll_back: true,
    }
}

fn config(action: FailureAction, ratio_milli: u64) -> UpdateConfig {
    UpdateConfig {
        failure_action: action,
        max_failure_ratio_milli: ratio_milli,
        monitor_ms: 5_000,
        ..UpdateConfig::default()
    }
}

fn task(slot: u64, version: Hlc, state: TaskState, started: Option<u64>, since: u64) -> TaskReport {
    TaskReport {
        service: "s_web".into(),
        slot: SlotKey::Replica(slot),
        task_id: format!("t{slot}-{since}"),
        version,
        image: "img".into(),
        force: 0,
        container_id: Some(format!("c{slot}-{since}")),
        state,
        health: Health::None,
        desired_running: state != TaskState::Failed,
        error: (state == TaskState::Failed).then(|| "task: non-zero exit (1)".into()),
        endpoints: vec![],
        since_ms: since,
        started_ms: started,
        addresses: vec![],
    }
}

/// Slots 1..=n, slot s on node s.
fn owners(n: u64) -> BTreeMap<SlotKey, NodeId> {
    (1..=n)
        .map(|s| (SlotKey::Replica(s), NodeId(u128::from(s))))
        .collect()
}

fn judge(
    svc: &ServiceView,
    n: u64,
    tasks: &[TaskReport],
    history: &[TaskReport],
    now: u64,
) -> Assessment {
    fn on_own_node(t: &TaskReport) -> (NodeId, &TaskReport) {
        let SlotKey::Replica(s) = t.slot else {
            unreachable!()
        };
        (NodeId(u128::from(s)), t)
    }
    let tasks: Vec<(NodeId, &TaskReport)> = tasks.iter().map(on_own_node).collect();
    let history: Vec<(NodeId, &TaskReport)> = history.iter().map(on_own_node).collect();
    let live: BTreeSet<NodeId> = (1..=n).map(|s| NodeId(u128::from(s))).collect();
    let reports = Reports {
        tasks: &tasks,
        history: &history,
        live: &live,
    };
    assess(svc, &owners(n), &reports, now)
}

#[test]
fn no_rollout_no_assessment() {
    let svc = service(2, config(FailureAction::Pause, 0), None);
    let failed = [task(1, V2, TaskState::Failed, Some(2_100), 2_200)];
    assert_eq!(judge(&svc, 2, &[], &failed, 3_000), Assessment::default());
}

#[test]
fn an_early_exit_pauses_the_update() {
    let svc = service(
        4,
        config(FailureAction::Pause, 0),
        Some(UpdateState::Updating),
    );
    let tasks = [
        task(2, V1, TaskState::Running, Some(0), 0),
        task(3, V1, TaskState::Running, Some(0), 0),
        task(4, V1, TaskState::Running, Some(0), 0),
    ];
    let failed = task(1, V2, TaskState::Failed, Some(2_100), 2_600);
    let a = judge(&svc, 4, &tasks, std::slice::from_ref(&failed), 3_000);
    assert_eq!(a.failed.len(), 1);
    assert!(a.tolerated.is_empty());
    let write = a.write.expect("a write");
    assert_eq!(write.version, V2);
    assert_eq!(
        write.outcome,
        AutoOutcome::Paused {
            message: format!(
                "update paused due to failure or early termination of task {}",
                failed.task_id
            )
        }
    );
    // The same exit after the monitor window is the restart policy's business.
    let late = task(1, V2, TaskState::Failed, Some(2_100), 2_100 + 5_001);
    assert_eq!(judge(&svc, 4, &tasks, &[late], 9_000).write, None);
    // An exit of the old version is not the rollout's either.
    let old = task(1, V1, TaskState::Failed, Some(100), 200);
    assert_eq!(judge(&svc, 4, &tasks, &[old], 3_000).write, None);
}

#[test]
fn a_replica_never_healthy_within_monitor_fails() {
    let mut svc = service(
        2,
        config(FailureAction::Pause, 0),
        Some(UpdateState::Updating),
    );
    let mut starting = task(1, V2, TaskState::Starting, Some(2_100), 2_050);
    starting.health = Health::Starting;
    // Docker's default interval (30 s) is longer than the monitor: it sets the window.
    assert!(judge(&svc, 2, &[starting.clone()], &[], 2_100 + 29_999)
        .write
        .is_none());
    let a = judge(&svc, 2, &[starting.clone()], &[], 2_100 + 30_000);
    assert_eq!(a.failed[0].reason, "not healthy 30 s after it started");
    // With the stack file's interval of 1 s, the monitor (5 s) sets it.
    svc.spec.healthcheck = Some(HealthcheckSpec {
        interval_ms: Some(1_000),
        ..HealthcheckSpec::default()
    });
    assert!(judge(&svc, 2, &[starting.clone()], &[], 7_099)
        .write
        .is_none());
    assert!(judge(&svc, 2, &[starting], &[], 7_100).write.is_some());
}

#[test]
fn failures_under_the_ratio_are_tolerated() {
    let svc = service(
        4,
        config(FailureAction::Pause, 300),
        Some(UpdateState::Updating),
    );
    let one = [task(1, V2, TaskState::Failed, None, 2_200)];
    let a = judge(&svc, 4, &[], &one, 3_000);
    assert_eq!(a.write, None, "1 of 4 is under 0.3");
    assert_eq!(a.tolerated, [SlotKey::Replica(1)].into());
    let two = [
        task(1, V2, TaskState::Failed, None, 2_200),
        task(2, V2, TaskState::Failed, None, 2_300),
    ];
    let a = judge(&svc, 4, &[], &two, 3_000);
    assert!(
        matches!(a.write.map(|w| w.outcome), Some(AutoOutcome::Paused { message }) if message.ends_with("t1-2200"))
    );
    assert!(a.tolerated.is_empty());
    // `continue` goes on past every failure.
    let svc = service(
        4,
        config(FailureAction::Continue, 0),
        Some(UpdateState::Updating),
    );
    let a = judge(&svc, 4, &[], &two, 3_000);
    assert_eq!(a.write, None);
    assert_eq!(a.tolerated.len(), 2);
}

#[test]
fn rollback_action_and_a_failing_rollback() {
    let svc = service(
        2,
        config(FailureAction::Rollback, 0),
        Some(UpdateState::Updating),
    );
    let failed = [task(2, V2, TaskState::Failed, Some(2_100), 2_500)];
    let write = judge(&svc, 2, &[], &failed, 3_000).write.unwrap();
    assert_eq!(
        write.outcome,
        AutoOutcome::RollBack {
            message: "update rolled back due to failure or early termination of task t2-2500"
                .into(),
            at_ms: 2_500
        }
    );
    // A rollback that fails pauses, whatever the action (its config is rollback_config).
    let mut svc = service(
        2,
        config(FailureAction::Pause, 0),
        Some(UpdateState::RollbackStarted),
    );
    svc.spec.rollback_config = config(FailureAction::Rollback, 0);
    let write = judge(&svc, 2, &[], &failed, 3_000).write.unwrap();
    assert!(matches!(write.outcome, AutoOutcome::RollbackPaused { .. }));
    // Paused: nothing more is written, nothing tolerated.
    let svc = service(
        2,
        config(FailureAction::Pause, 0),
        Some(UpdateState::Paused),
    );
    let a = judge(&svc, 2, &[], &failed, 3_000);
    assert_eq!((a.write, a.tolerated.len()), (None, 0));
}

#[test]
fn completes_once_every_slot_passed_its_monitor() {
    let svc = service(
        2,
        config(FailureAction::Pause, 0),
        Some(UpdateState::Updating),
    );
    let done = [
        task(1, V2, TaskState::Running, Some(2_100), 2_050),
        task(2, V2, TaskState::Running, Some(2_600), 2_550),
    ];
    assert_eq!(judge(&svc, 2, &done, &[], 7_599).write, None);
    let write = judge(&svc, 2, &done, &[], 9_000).write.unwrap();
    assert_eq!(write.outcome, AutoOutcome::Completed { at_ms: 7_600 });
    // Not while an old replica still serves a slot.
    let extra = [done[0].clone(), task(2, V1, TaskState::Running, Some(0), 0)];
    assert_eq!(judge(&svc, 2, &extra, &[], 9_000).write, None);
    // A rollback completes as a rollback.
    let svc = service(
        2,
        config(FailureAction::Pause, 0),
        Some(UpdateState::RollbackStarted),
    );
    let write = judge(&svc, 2, &done, &[], 9_000).write.unwrap();
    assert_eq!(
        write.outcome,
        AutoOutcome::RollbackCompleted { at_ms: 7_600 }
    );
}

// ---------------------------------------------------------------------------------------------
// Pacing across nodes: the real reconciler on each, reports delivered late and in any order.

/// One node of the little cluster below.
#[derive(Default)]
struct Node {
    reconciler: Reconciler,
    containers: Vec<LocalContainer>,
    creating: Vec<TaskSpec>,
    view: ObservedState,
    seq: u64,
    last: Option<NodeReport>,
}

struct Cluster {
    nodes: Vec<Node>,
    facts: Vec<NodeFacts>,
    service: ServiceView,
    /// Each node's desired state, when the test runs one (the service comes from it, and the
    /// rounds' automatic writes go into it and reach every other node at once).
    desired: Option<Vec<DesiredState>>,
    now: u64,
    next_id: u64,
}

impl Cluster {
    fn new(n: usize, replicas: u64, parallelism: u64, order: UpdateOrder) -> Self {
        let mut service = service(
            replicas,
            UpdateConfig {
                parallelism,
                order,
                ..UpdateConfig::default()
            },
            None,
        );
        service.version = V1;
        service.spec.image = "img:1".into();
        Cluster {
            nodes: (0..n).map(|_| Node::default()).collect(),
            facts: (1..=n as u128).map(NodeFacts::plain).collect(),
            service,
            desired: None,
            now: 10_000,
            next_id: 0,
        }
    }

    fn round(&mut self, i: usize) {
        if let Some(desired) = &self.desired {
            self.service = desired[i].services().remove(0);
        }
        let node = &mut self.nodes[i];
        let plan = node.reconciler.plan(&Inputs {
            me: self.facts[i].id,
            now_ms: self.now,
            services: std::slice::from_ref(&self.service),
            nodes: &self.facts,
            observed: &node.view,
            local: &node.containers,
        });
        if let Some(desired) = &mut self.desired {
            for write in &plan.auto_writes {
                let delta = desired[i].apply_auto(write).expect("a live service");
                for other in desired.iter_mut() {
                    other.merge_delta(delta.clone());
                }
            }
        }
        for action in plan.actions {
            match action {
                Action::Create(task) => node.creating.push(*task),
                // A stop takes effect at once: the worst case for capacity.
                Action::Remove { container, .. } => node.containers.retain(|c| c.id != container),
            }
        }
        node.seq += 1;
        let report = NodeReport {
            node: self.facts[i].id,
            generation: 1,
            seq: node.seq,
            tasks: plan.tasks,
            history: plan.history,
            gossip_keys: vec![],
        };
        node.view.merge(report.clone());
        node.last = Some(report);
    }

    fn deliver(&mut self, from: usize, to: usize) {
        if let Some(report) = self.nodes[from].last.clone() {
            self.nodes[to].view.merge(report);
        }
    }

    /// The engine creates the oldest queued container of node `i`.
    fn land(&mut self, i: usize) {
        if self.nodes[i].creating.is_empty() {
            return;
        }
        let task = self.nodes[i].creating.remove(0);
        self.next_id += 1;
        // An image that never runs: its containers exit at once.
        let status = if task.spec.image == "bad" {
            ContainerStatus::Exited {
                code: 1,
                finished_ms: self.now,
                error: None,
            }
        } else {
            ContainerStatus::Running
        };
        self.nodes[i].containers.push(LocalContainer {
            id: format!("c{}", self.next_id),
            service: task.service,
            slot: task.slot,
            task_id: task.task_id,
            version: task.version,
            force: task.force,
            image: task.spec.image,
            status,
            health: Health::Starting,
            created_ms: self.now,
            endpoints: vec![],
            addresses: vec![],
        });
    }

    /// The oldest starting container of node `i` passes its healthcheck.
    fn healthy(&mut self, i: usize) {
        if let Some(c) = self.nodes[i]
            .containers
            .iter_mut()
            .find(|c| c.health == Health::Starting)
        {
            c.health = Health::Healthy;
        }
    }

    /// Slots that no node runs a ready replica of, of any version.
    fn below_ready(&self) -> usize {
        let ready: BTreeSet<SlotKey> = self
            .nodes
            .iter()
            .flat_map(|n| &n.containers)
            .filter(|c| c.status == ContainerStatus::Running && c.health.is_ready())
            .map(|c| c.slot)
            .collect();
        (1..=self.service.replicas)
            .filter(|s| !ready.contains(&SlotKey::Replica(*s)))
            .count()
    }

    /// Everything settles: every event happens, every report reaches every node.
    fn settle(&mut self) {
        // Each slot's replaced replica drains before it stops.
        let per_slot = crate::reconcile::plan::DRAIN_MS / 100 + 6;
        self.run(per_slot * self.service.replicas + 8, |_| {});
    }

    /// `rounds` rounds 100 ms apart in which every event happens and every report reaches every
    /// node, `check` after each node's round.
    fn run(&mut self, rounds: u64, check: impl Fn(&Cluster)) {
        for _ in 0..rounds {
            self.now += 100;
            for i in 0..self.nodes.len() {
                while !self.nodes[i].creating.is_empty() {
                    self.land(i);
                }
                while self.nodes[i]
                    .containers
                    .iter()
                    .any(|c| c.health == Health::Starting)
                {
                    self.healthy(i);
                }
                self.round(i);
                for to in 0..self.nodes.len() {
                    self.deliver(i, to);
                }
                check(self);
            }
        }
    }

    /// Slots running a ready replica of `image`.
    fn ready_on(&self, image: &str) -> usize {
        self.nodes
            .iter()
            .flat_map(|n| &n.containers)
            .filter(|c| c.image == image && c.health.is_ready())
            .filter(|c| c.status == ContainerStatus::Running)
            .count()
    }

    /// Every slot runs exactly one ready replica of `version`.
    fn runs_only(&self, version: Hlc) -> bool {
        let all: Vec<&LocalContainer> = self.nodes.iter().flat_map(|n| &n.containers).collect();
        let slots: BTreeSet<SlotKey> = all.iter().map(|c| c.slot).collect();
        all.len() as u64 == self.service.replicas
            && slots.len() as u64 == self.service.replicas
            && all
                .iter()
                .all(|c| c.version == version && c.health.is_ready())
    }
}

#[derive(Clone, Debug)]
enum Step {
    Round(usize),
    Deliver(usize, usize),
    Land(usize),
    Healthy(usize),
}

fn arb_step(nodes: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..nodes).prop_map(Step::Round),
        3 => (0..nodes, 0..nodes).prop_map(|(a, b)| Step::Deliver(a, b)),
        1 => (0..nodes).prop_map(Step::Land),
        1 => (0..nodes).prop_map(Step::Healthy),
    ]
}

fn arb_run() -> impl Strategy<Value = (usize, u64, u64, bool, Vec<Step>)> {
    (2usize..=4, 1u64..=8, 1u64..=3, any::<bool>()).prop_flat_map(|(n, r, p, stop_first)| {
        (
            Just(n),
            Just(r),
            Just(p),
            Just(stop_first),
            prop::collection::vec(arb_step(n), 0..400),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Several nodes update one service, each deciding from its own listing and whatever reports
    /// have reached it: a stop-first update never has more than `parallelism` slots below ready,
    /// a start-first one none; and once every report gets through, the update finishes.
    #[test]
    fn an_update_takes_at_most_parallelism_slots_down(
        (n, replicas, parallelism, stop_first, steps) in arb_run()
    ) {
        let order = if stop_first { UpdateOrder::StopFirst } else { UpdateOrder::StartFirst };
        let mut cluster = Cluster::new(n, replicas, parallelism, order);
        cluster.settle();
        prop_assert!(cluster.runs_only(V1));

        cluster.service.version = V2;
        cluster.service.spec.image = "img:2".into();
        let bound = if stop_first { parallelism as usize } else { 0 };
        for step in steps {
            cluster.now += 10;
            match step {
                Step::Round(i) => cluster.round(i),
                Step::Deliver(a, b) => cluster.deliver(a, b),
                Step::Land(i) => cluster.land(i),
                Step::Healthy(i) => cluster.healthy(i),
            }
            let down = cluster.below_ready();
            prop_assert!(down <= bound, "{down} slots below ready after {step:?}");
        }
        cluster.settle();
        prop_assert!(cluster.runs_only(V2));
    }
}

/// The whole chain on three nodes: a stop-first update (parallelism 1) to an image whose
/// containers exit at once. Every node assesses the rollout and writes into its desired state;
/// the writes spread. With `pause` the update stops at its first slot, the three others keep
/// serving, the status says why; with `rollback` every slot returns to the old image.
#[test]
fn an_update_to_a_failing_image_pauses_or_rolls_back() {
    for action in [FailureAction::Pause, FailureAction::Rollback] {
        let mut cluster = Cluster::new(3, 4, 1, UpdateOrder::StopFirst);
        let mut state = DesiredState::default();
        let def = ServiceDef {
            name: "s_web".into(),
            stack: "s".into(),
            replicas: 4,
            spec: ServiceSpec {
                image: "img:1".into(),
                update_config: config(action, 0),
                ..ServiceSpec::default()
            },
        };
        state.deploy_stack("s", vec![def], V1).unwrap();
        cluster.desired = Some(vec![state.clone(); 3]);
        cluster.settle();
        assert_eq!(cluster.ready_on("img:1"), 4);

        let update = crate::desired::state::ServiceUpdate {
            image: Some("bad".into()),
            ..Default::default()
        };
        let at = Hlc {
            wall_ms: cluster.now,
            counter: 0,
            node: NodeId(1),
        };
        for s in cluster.desired.as_mut().unwrap() {
            s.update_service("s_web", update.clone(), at).unwrap();
        }
        cluster.run(300, |c| {
            assert!(
                c.below_ready() <= 1,
                "{} slots below ready",
                c.below_ready()
            );
        });
        let states = cluster.desired.as_ref().unwrap();
        assert!(states.iter().all(|s| s.digest() == states[0].digest()));
        let view = states[0].service("s_web").unwrap();
        let status = view.rollout().expect("a status for the current version");
        match action {
            FailureAction::Pause => {
                assert_eq!(status.state, UpdateState::Paused, "{status:?}");
                assert!(status
                    .message
                    .starts_with("update paused due to failure or early termination of task"));
                assert_eq!(cluster.ready_on("img:1"), 3, "the other slots keep serving");
            }
            _ => {
                assert_eq!(status.state, UpdateState::RollbackCompleted, "{status:?}");
                assert_eq!(view.spec.image, "img:1");
                assert!(cluster.runs_only(view.version));
            }
        }
    }
}
