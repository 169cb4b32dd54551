//! The reconciler: from what should run (desired state, placement) and what does run (this
//! node's containers, every node's reports) to the actions this node takes now.
//!
//! Pure and deterministic: the agent lists its containers, calls [`Reconciler::plan`], carries out
//! the actions through its runtime, and reports back what failed. The simulator drives the same
//! code with a fake runtime.
//!
//! The rules, per service:
//! - A slot this node owns gets exactly one container of the current spec version. An exited or
//!   unhealthy container is replaced by a NEW container (never restarted in place), under the
//!   service's restart policy: condition, delay, max attempts within a window, and an exponential
//!   backoff for crash loops. A container that cannot be created (no such image) is retried with
//!   the same backoff, never in a hot loop.
//! - A container of an older version in an owned slot is replaced: `start-first` starts the new one
//!   and stops the old once the new is ready; `stop-first` stops the old one first.
//! - A container for a slot this node no longer owns is handed off start-first: it keeps running
//!   until the new owner's report shows its replica ready at the current version, then it stops.
//!   Capacity never dips during a rebalance or a drain.
//! - A container for a slot that no longer exists (scaled down, service removed) stops at once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use sha2::{Digest, Sha256};

use super::{
    memo::PlacementMemo,
    pacing,
    placement::{place, NodeFacts, Placement},
    rollout,
};
use crate::{
    desired::{
        spec::{Availability, RestartCondition, ServiceSpec, UpdateOrder},
        state::{AutoWrite, ServiceView},
    },
    identity::NodeId,
    observed::{
        Health, NodeReport, ObservedState, SlotKey, TaskReport, TaskState, HISTORY_PER_SLOT,
    },
    runtime::{stop_timeout_s, Action, ContainerStatus, LocalContainer, TaskSpec},
};

/// Restart bookkeeping of one slot on this node.
#[derive(Clone, Debug, Default)]
struct SlotLife {
    /// Failure times within the restart window, oldest first.
    failures: VecDeque<u64>,
    /// No new container before this time.
    not_before_ms: u64,
    /// Consecutive failures, for the crash-loop backoff.
    streak: u32,
    /// Why the last attempt failed.
    last_error: Option<String>,
    /// A create was issued and its container has not shown up in a listing yet.
    in_flight: Option<(String, u64)>,
    /// Containers already counted as failed.
    counted: BTreeSet<String>,
    /// The policy said: no more restarts.
    given_up: bool,
    /// Spec version the bookkeeping is about: a new version starts afresh.
    version: Option<(crate::desired::hlc::Hlc, u64)>,
}

/// A container still only created after this long is treated as failed (its creator died
/// between the engine's create and start); it never ran, so it counts as a quick failure.
const NEVER_STARTED_MS: u64 = 15_000;
/// Longest crash-loop backoff.
const MAX_BACKOFF_MS: u64 = 60_000;
/// A create that has not shown up in a listing after this long is assumed lost. Only a safety
/// net: the agent's executor answers every create (the container shows up in the next listing,
/// or the failure comes back through [`Reconciler::create_failed`]), but creates queue behind a
/// few engine calls at a time, so a short timeout would start duplicates of slow creates on a
/// busy engine and make it busier still.
const IN_FLIGHT_TIMEOUT_MS: u64 = 300_000;
/// How long a serving replica is drained (out of every node's routing) before it is stopped:
/// enough for its report to reach every node and their routing tables to drop it.
pub const DRAIN_MS: u64 = 1_500;
/// A replica that ran this long before failing resets the crash-loop backoff.
const STABLE_AFTER_MS: u64 = 10_000;

/// This node's reconciler state: restart bookkeeping and task history.
#[derive(Debug, Default)]
pub struct Reconciler {
    slots: BTreeMap<(String, SlotKey), SlotLife>,
    /// Containers listed last round, to notice the ones that vanish without exiting.
    last_seen: BTreeMap<String, LocalContainer>,
    /// When each container was first listed running: what reports give as `started_ms`, from
    /// which a rollout's monitor counts. A restarted agent starts afresh (later, never earlier).
    running_since: BTreeMap<String, u64>,
    history: BTreeMap<(String, SlotKey), VecDeque<TaskReport>>,
    placements: PlacementMemo,
    /// Containers being drained before they stop, since when.
    draining: BTreeMap<String, u64>,
}

/// The result of one round.
#[derive(Debug, Default)]
pub struct Plan {
    /// What to do now.
    pub actions: Vec<Action>,
    /// This node's tasks, to publish in its report.
    pub tasks: Vec<TaskReport>,
    /// Finished tasks worth showing in `service ps`.
    pub history: Vec<TaskReport>,
    /// Earliest time something will be due (a restart delay ending), to wake up for.
    pub wake_at_ms: Option<u64>,
    /// Rollout outcomes to write into the desired state (`DesiredState::apply_auto`): the
    /// node applies each and spreads the delta if it is not empty (see `rollout`).
    pub auto_writes: Vec<AutoWrite>,
}

/// Everything a round looks at.
pub struct Inputs<'a> {
    /// This node.
    pub me: NodeId,
    /// Now (ms since the epoch).
    pub now_ms: u64,
    /// Live desired services.
    pub services: &'a [ServiceView],
    /// Live members, this node included, with their settings.
    pub nodes: &'a [NodeFacts],
    /// Every node's latest report.
    pub observed: &'a ObservedState,
    /// This node's containers.
    pub local: &'a [LocalContainer],
}

/// A task id: short, and the same on every run for the same inputs (keeps the core deterministic).
fn task_id(me: NodeId, service: &str, slot: &SlotKey, now_ms: u64, salt: u64) -> String {
    let mut h = Sha256::new();
    h.update(me.0.to_be_bytes());
    h.update(service.as_bytes());
    h.update(slot.to_string().as_bytes());
    h.update(now_ms.to_be_bytes());
    h.update(salt.to_be_bytes());
    hex::encode(&h.finalize()[..6])
}

/// Where each slot of `service` runs now, per the live nodes' reports: the node whose report
/// has a task for it that it means to keep (`desired_running`: running, starting, preparing or
/// waiting for a restart; not one it is handing off or stopping). Placement keeps slots there
/// while it can ([`place`]'s `keep`), so it moves only what it must.
///
/// A slot claimed by two nodes (both sides of a healed partition ran it) counts for the one
/// whose container is older, then the lower node id: a rule over the reports alone, so every
/// node that holds the same reports picks the same one, and the newer duplicate is handed off.
pub fn kept_slots(
    service: &ServiceView,
    nodes: &[NodeFacts],
    observed: &ObservedState,
) -> BTreeMap<SlotKey, NodeId> {
    running_where(nodes, observed.tasks_of(&service.name))
}

/// [`kept_slots`] over one service's tasks, as [`ObservedState::by_service`] groups them.
fn running_where<'a>(
    nodes: &[NodeFacts],
    tasks: impl IntoIterator<Item = (NodeId, &'a TaskReport)>,
) -> BTreeMap<SlotKey, NodeId> {
    let usable: BTreeSet<NodeId> = nodes
        .iter()
        .filter(|n| n.availability != Availability::Drain)
        .map(|n| n.id)
        .collect();
    let mut best: BTreeMap<SlotKey, (bool, u64, NodeId)> = BTreeMap::new();
    for (node, t) in tasks {
        if !t.desired_running || !usable.contains(&node) {
            continue;
        }
        // A task without a container (preparing, waiting) has a `since` that moves.
        let rank = if t.container_id.is_some() {
            (false, t.since_ms, node)
        } else {
            (true, 0, node)
        };
        best.entry(t.slot)
            .and_modify(|b| *b = (*b).min(rank))
            .or_insert(rank);
    }
    best.into_iter()
        .map(|(slot, (_, _, node))| (slot, node))
        .collect()
}

/// Placement of `service` as every node computes it.
pub fn placement_of(
    service: &ServiceView,
    nodes: &[NodeFacts],
    observed: &ObservedState,
) -> Placement {
    let keep = kept_slots(service, nodes, observed);
    place(&service.name, &service.spec, service.replicas, nodes, &keep)
}

impl Reconciler {
    /// Tells the reconciler a create it asked for failed (the container never existed).
    pub fn create_failed(
        &mut self,
        service: &str,
        slot: &SlotKey,
        error: String,
        now_ms: u64,
        spec: &ServiceSpec,
    ) {
        let life = self.slots.entry((service.to_string(), *slot)).or_default();
        let task = life.in_flight.take();
        life.last_error = Some(error.clone());
        Self::count_failure(life, now_ms, spec, now_ms);
        // Shown by `service ps`, and a failure of the rollout if it is one of its new replicas.
        if let (Some((task_id, _)), Some((version, force))) = (task, life.version) {
            let report = TaskReport {
                service: service.to_string(),
                slot: *slot,
                task_id,
                version,
                image: spec.image.clone(),
                force,
                container_id: None,
                state: TaskState::Rejected,
                health: Health::None,
                desired_running: false,
                error: Some(error),
                endpoints: vec![],
                since_ms: now_ms,
                started_ms: None,
                addresses: vec![],
            };
            let tasks = self
                .history
                .entry((service.to_string(), *slot))
                .or_default();
            tasks.push_front(report);
            tasks.truncate(HISTORY_PER_SLOT);
        }
    }

    /// Books a failure at `now_ms` of a replica that ran from `ran_since_ms`: the next one may
    /// start at once the first time (the replica ran for a while, or this slot has not failed
    /// lately), after `restart_policy.delay` if it is set, and after an exponential backoff when
    /// replicas keep failing within [`STABLE_AFTER_MS`] of starting. The same for a container that
    /// exited, one found unhealthy, one removed behind shoal's back and a create that failed.
    fn count_failure(life: &mut SlotLife, now_ms: u64, spec: &ServiceSpec, ran_since_ms: u64) {
        let policy = &spec.restart_policy;
        if now_ms.saturating_sub(ran_since_ms) >= STABLE_AFTER_MS {
            life.streak = 0;
        }
        life.streak = life.streak.saturating_add(1);
        life.failures.push_back(now_ms);
        if policy.window_ms > 0 {
            while life
                .failures
                .front()
                .is_some_and(|t| now_ms.saturating_sub(*t) > policy.window_ms)
            {
                life.failures.pop_front();
            }
        }
        // The policy's delay, doubled for every consecutive quick failure after the first.
        let backoff = if life.streak <= 1 {
            0
        } else {
            (500u64 << (life.streak - 2).min(10)).min(MAX_BACKOFF_MS)
        };
        life.not_before_ms = now_ms + policy.delay_ms.max(backoff);
        if let Some(max) = policy.max_attempts {
            if life.failures.len() as u64 >= max {
                life.given_up = true;
            }
        }
    }

    /// Computes this round's actions and this node's report.
    pub fn plan(&mut self, inputs: &Inputs<'_>) -> Plan {
        let mut plan = Plan::default();
        let me = inputs.me;
        let now = inputs.now_ms;
        let mut claimed: BTreeSet<String> = BTreeSet::new();
        // A container listed last round and gone now, which we did not remove, was removed
        // behind our back (`docker rm -f`): it failed, and history should say so.
        let listed: BTreeSet<&str> = inputs.local.iter().map(|c| c.id.as_str()).collect();
        let vanished: Vec<LocalContainer> = self
            .last_seen
            .values()
            .filter(|c| !listed.contains(c.id.as_str()))
            .cloned()
            .collect();
        for c in &vanished {
            let known = self
                .history
                .get(&(c.service.clone(), c.slot))
                .is_some_and(|h| h.iter().any(|t| t.task_id == c.task_id));
            if !known {
                let error = "container removed outside shoal".to_string();
                self.record(c, TaskState::Failed, Some(error.clone()), now);
                self.vanished(c, error, now, inputs.services);
            }
        }
        // Containers seen running, for `started_ms`, and the ones gone forgotten.
        for c in inputs.local {
            if c.status == ContainerStatus::Running {
                self.running_since.entry(c.id.clone()).or_insert(now);
            }
        }
        self.running_since
            .retain(|id, _| listed.contains(id.as_str()));
        self.last_seen = inputs
            .local
            .iter()
            .map(|c| (c.id.clone(), c.clone()))
            .collect();
        let mut by_slot: BTreeMap<(&str, SlotKey), Vec<&LocalContainer>> = BTreeMap::new();
        for c in inputs.local {
            by_slot.entry((&c.service, c.slot)).or_default().push(c);
        }

        // Taken out for the loop so that placements can be borrowed while slots are handled.
        let mut placements = std::mem::take(&mut self.placements);
        placements.set_nodes(inputs.nodes);
        let live: BTreeSet<NodeId> = inputs.nodes.iter().map(|n| n.id).collect();
        let reported = inputs.observed.by_service();
        // Until this process publishes its first report, its peers still hold its previous
        // life's (the containers ran on): its own listing stands for it here, so that it places
        // slots as they do and re-adopts its replicas instead of handing them off.
        let unreported: Vec<TaskReport> = if inputs.observed.get(me).is_none() {
            inputs
                .local
                .iter()
                .filter(|c| !matches!(c.status, ContainerStatus::Exited { .. }))
                .map(|c| task_of(c, true, None))
                .collect()
        } else {
            Vec::new()
        };
        for service in inputs.services {
            let mine = unreported
                .iter()
                .filter(|t| t.service == service.name)
                .map(|t| (me, t));
            let keep = running_where(
                inputs.nodes,
                reported.of(&service.name).iter().copied().chain(mine),
            );
            let placement = placements.get(service, keep);
            let assessment = rollout::assess(
                service,
                &placement.owners,
                &rollout::Reports {
                    tasks: reported.of(&service.name),
                    history: reported.history_of(&service.name),
                    live: &live,
                },
                now,
            );
            plan.auto_writes.extend(assessment.write);
            let progress = pacing::Progress {
                released: assessment.tolerated,
                started_here: self.started_here(service),
            };
            let gate = pacing::gate_with(
                service,
                &placement.owners,
                &pacing::Serving {
                    me,
                    local: inputs.local,
                    reported: reported.of(&service.name),
                    live: &live,
                },
                &progress,
                now,
            );
            if let Some(at) = gate.wake_at_ms {
                plan.wake_at_ms = Some(plan.wake_at_ms.map_or(at, |w| w.min(at)));
            }
            for (slot, owner) in &placement.owners {
                let mine = by_slot
                    .get(&(service.name.as_str(), *slot))
                    .map_or(&[][..], Vec::as_slice);
                if *owner == me {
                    let turn = gate.allows(slot);
                    self.own_slot(service, slot, mine, turn, now, me, &mut plan);
                } else {
                    // Not ours (any more): its restart bookkeeping goes, a create in flight
                    // included. If the slot comes back, it starts afresh rather than wait for a
                    // container that was handed off and removed meanwhile.
                    self.slots.remove(&(service.name.clone(), *slot));
                }
                if *owner != me && !mine.is_empty() {
                    let owner_ready = owner_is_ready(inputs.observed, *owner, service, slot);
                    let handoff = Handoff {
                        owner: *owner,
                        owner_ready,
                    };
                    self.hand_off(service, slot, handoff, mine, now, &mut plan);
                }
                claimed.extend(mine.iter().map(|c| c.id.clone()));
            }
        }

        // Containers of slots that no longer exist: drained, then stopped.
        for c in inputs.local {
            if !claimed.contains(&c.id) {
                let reason = format!("{} slot {} is no longer desired", c.service, c.slot);
                let spec = inputs
                    .services
                    .iter()
                    .find(|s| s.name == c.service)
                    .map(|s| &s.spec);
                self.retire(c, reason, spec, now, &mut plan);
            }
        }
        let listed: BTreeSet<&str> = inputs.local.iter().map(|c| c.id.as_str()).collect();
        self.draining.retain(|id, _| listed.contains(id.as_str()));
        let live: BTreeSet<&str> = inputs.services.iter().map(|s| s.name.as_str()).collect();
        placements.retain(|name| live.contains(name));
        self.slots
            .retain(|(service, slot), _| placements.owns(service, slot));
        for tasks in self.history.values() {
            plan.history.extend(tasks.iter().cloned());
        }
        self.history
            .retain(|(service, slot), _| placements.owns(service, slot));
        self.placements = placements;
        plan
    }

    /// A container of this node vanished without shoal removing it (`docker rm -f`): if it was
    /// the current replica of a slot this node runs, that is a failure like an exit, under the
    /// same restart policy (delay, backoff, condition as for a non-zero exit).
    fn vanished(&mut self, c: &LocalContainer, error: String, now: u64, services: &[ServiceView]) {
        let Some(service) = services.iter().find(|s| s.name == c.service) else {
            return;
        };
        let Some(life) = self.slots.get_mut(&(c.service.clone(), c.slot)) else {
            return;
        };
        if life.version != Some((c.version, c.force)) || !life.counted.insert(c.id.clone()) {
            return;
        }
        life.last_error = Some(error);
        if service.spec.restart_policy.condition == RestartCondition::None {
            life.given_up = true;
        } else {
            let ran_since = self.running_since.get(&c.id).copied().unwrap_or(now);
            Self::count_failure(life, now, &service.spec, ran_since);
        }
    }

    /// Slots of `service` whose current version this node is working on without a container to
    /// show for it (see [`pacing::Progress::started_here`]).
    fn started_here(&self, service: &ServiceView) -> BTreeSet<SlotKey> {
        let version = Some((service.version, service.force));
        self.slots
            .range((service.name.clone(), SlotKey::Replica(0))..)
            .take_while(|((name, _), _)| *name == service.name)
            .filter(|(_, life)| {
                life.version == version
                    && (life.in_flight.is_some()
                        || life.last_error.is_some()
                        || !life.counted.is_empty())
            })
            .map(|((_, slot), _)| *slot)
            .collect()
    }

    /// Runs slot `slot`, which this node owns. `turn`: whether the slot may change now (see
    /// [`pacing`]); while it may not, an old replica serving it stays as it is and no new one
    /// starts in its place.
    #[allow(clippy::too_many_arguments)]
    fn own_slot(
        &mut self,
        service: &ServiceView,
        slot: &SlotKey,
        mine: &[&LocalContainer],
        turn: bool,
        now: u64,
        me: NodeId,
        plan: &mut Plan,
    ) {
        let key = (service.name.clone(), *slot);
        let spec = &service.spec;
        let life = self.slots.entry(key.clone()).or_default();
        if life.version != Some((service.version, service.force)) {
            // An update (or --force) gets a fresh restart budget, as Swarm's new tasks do.
            *life = SlotLife {
                version: Some((service.version, service.force)),
                ..SlotLife::default()
            };
        }
        // The create in flight has landed once its container is listed, whatever its state: it
        // may have died already, between two rounds, and must then count as a failure rather
        // than leave the slot waiting for a create that will never show up.
        let landed = |task: &str| mine.iter().any(|c| c.task_id == task);
        if life
            .in_flight
            .as_ref()
            .is_some_and(|(task, _)| landed(task))
        {
            life.in_flight = None;
        }
        let is_current =
            |c: &&&LocalContainer| c.version == service.version && c.force == service.force;
        let current: Vec<&&LocalContainer> = mine.iter().filter(is_current).collect();
        let old: Vec<&&LocalContainer> = mine.iter().filter(|c| !is_current(c)).collect();

        // Failures of current containers: count once, remove, maybe schedule a replacement.
        let mut alive: Vec<&LocalContainer> = Vec::new();
        for c in &current {
            let ran_since = self.running_since.get(&c.id).copied();
            let failed = match &c.status {
                // An exit time the engine did not give (0) or from a clock ahead of ours:
                // the failure is booked now, so the restart delay counts from now at the latest.
                ContainerStatus::Exited {
                    code,
                    finished_ms,
                    error,
                } => Some((
                    *code,
                    if *finished_ms == 0 {
                        now
                    } else {
                        (*finished_ms).min(now)
                    },
                    ran_since.unwrap_or(c.created_ms),
                    error.clone(),
                )),
                // Created but never started: its creator died mid-way (an agent stopped during
                // the create); it will not start by itself.
                ContainerStatus::Created if now.saturating_sub(c.created_ms) > NEVER_STARTED_MS => {
                    Some((-1, now, now, Some("created but never started".to_string())))
                }
                _ if c.health == Health::Unhealthy => Some((
                    -1,
                    now,
                    ran_since.unwrap_or(c.created_ms),
                    Some("unhealthy".to_string()),
                )),
                _ => None,
            };
            match failed {
                None => alive.push(c),
                Some((code, at, ran_since, error)) => {
                    let life = self.slots.entry(key.clone()).or_default();
                    if life.counted.insert(c.id.clone()) {
                        let restart = match spec.restart_policy.condition {
                            RestartCondition::Any => true,
                            RestartCondition::OnFailure => code != 0,
                            RestartCondition::None => false,
                        };
                        life.last_error = error.clone().or_else(|| {
                            (code != 0).then(|| format!("task: non-zero exit ({code})"))
                        });
                        if restart {
                            Self::count_failure(life, at, spec, ran_since);
                        } else {
                            life.given_up = true;
                        }
                    }
                    let state = if code == 0 {
                        TaskState::Complete
                    } else {
                        TaskState::Failed
                    };
                    let reason = error.unwrap_or_else(|| format!("exited with status {code}"));
                    plan.actions.push(Action::Remove {
                        container: c.id.clone(),
                        reason: format!("{} slot {slot}: {reason}", service.name),
                        stop_timeout_s: stop_timeout_s(Some(spec)),
                    });
                    self.record(c, state, Some(reason), now);
                }
            }
        }

        // Duplicates of the current version: keep the best one.
        alive.sort_by_key(|c| {
            (
                std::cmp::Reverse(rank(c)),
                std::cmp::Reverse(c.created_ms),
                c.id.clone(),
            )
        });
        for extra in alive.iter().skip(1) {
            let reason = format!("{} slot {slot}: duplicate replica", service.name);
            self.retire(extra, reason, Some(spec), now, plan);
        }
        let keeper = alive.first().copied();
        let life = self.slots.entry(key.clone()).or_default();
        if keeper.is_some() {
            life.in_flight = None;
            if keeper.is_some_and(|k| k.status == ContainerStatus::Running && k.health.is_ready()) {
                life.last_error = None;
                if life.not_before_ms < now {
                    life.given_up = false;
                }
            }
        }
        if let Some((_, at)) = &life.in_flight {
            if now.saturating_sub(*at) > IN_FLIGHT_TIMEOUT_MS {
                life.in_flight = None;
            }
        }

        // Older versions: replaced as the update order says, when the slot's turn has come.
        let new_ready =
            keeper.is_some_and(|k| k.status == ContainerStatus::Running && k.health.is_ready());
        let stop_first = service.pacing_config().order == UpdateOrder::StopFirst;
        // Stop-first: the new replica starts only once the old one has stopped (drained first).
        let mut old_draining = false;
        for c in &old {
            let exited = matches!(c.status, ContainerStatus::Exited { .. });
            if new_ready || exited || (stop_first && turn) {
                let reason = format!(
                    "{} slot {slot}: replaced by version {}",
                    service.name, service.version
                );
                old_draining |= !self.retire(c, reason, Some(spec), now, plan) && stop_first;
            } else {
                // Serving until its turn (still desired), or until its start-first successor is
                // ready (on its way out).
                let desired = !turn && keeper.is_none();
                plan.tasks
                    .push(with_start(&self.running_since, task_of(c, desired, None)));
            }
        }

        // The task this slot shows, and whether a new container is due.
        let life = self.slots.entry(key.clone()).or_default();
        match keeper {
            Some(c) => plan
                .tasks
                .push(with_start(&self.running_since, task_of(c, true, None))),
            // The create is queued at the engine: say so, so that other nodes count the slot as
            // in progress (pacing) and as this node's (placement).
            None if life.in_flight.is_some() => {
                let (task_id, at) = life.in_flight.clone().unwrap_or_default();
                let mut task = pending(service, slot, true, life.last_error.clone(), at);
                task.task_id = task_id;
                task.state = TaskState::Preparing;
                plan.tasks.push(task);
            }
            // Not its turn: the replica serving the slot (an old version here, or the previous
            // owner's) goes on; nothing new starts yet. Or stop-first's old replica still drains.
            None if !turn || old_draining => {}
            None if life.given_up => {
                let cause = life.last_error.as_ref().map(|e| format!(": {e}"));
                let error = format!("restart policy exhausted{}", cause.unwrap_or_default());
                plan.tasks
                    .push(pending(service, slot, false, Some(error), now));
            }
            None if now < life.not_before_ms => {
                plan.wake_at_ms = Some(
                    plan.wake_at_ms
                        .map_or(life.not_before_ms, |w| w.min(life.not_before_ms)),
                );
                let error = life.last_error.clone();
                plan.tasks.push(pending(service, slot, true, error, now));
            }
            None => {
                let salt = life.failures.len() as u64 + u64::from(life.streak);
                let task = TaskSpec {
                    service: service.name.clone(),
                    slot: *slot,
                    task_id: task_id(me, &service.name, slot, now, salt),
                    version: service.version,
                    force: service.force,
                    spec: spec.clone(),
                };
                life.in_flight = Some((task.task_id.clone(), now));
                let mut preparing = pending(service, slot, true, life.last_error.clone(), now);
                preparing.task_id = task.task_id.clone();
                preparing.state = TaskState::Preparing;
                plan.tasks.push(preparing);
                plan.actions.push(Action::Create(Box::new(task)));
            }
        }
    }

    fn hand_off(
        &mut self,
        service: &ServiceView,
        slot: &SlotKey,
        Handoff { owner, owner_ready }: Handoff,
        mine: &[&LocalContainer],
        now: u64,
        plan: &mut Plan,
    ) {
        for c in mine {
            let exited = matches!(c.status, ContainerStatus::Exited { .. });
            if owner_ready || exited {
                let reason = format!(
                    "{} slot {slot}: handed off to {}",
                    service.name,
                    owner.short()
                );
                self.retire(c, reason, Some(&service.spec), now, plan);
            } else {
                // Still serving until the new owner's replica is ready.
                plan.tasks
                    .push(with_start(&self.running_since, task_of(c, false, None)));
            }
        }
    }

    /// Stops a container this node no longer wants. One that serves (running and ready) is
    /// drained first: reported `draining` for [`DRAIN_MS`], which takes it out of every node's
    /// routing before it gets SIGTERM, so that no new connection reaches a replica on its way
    /// down; the connections it has finish meanwhile. One that does not serve stops at once.
    /// Returns whether it was stopped now (false while it drains).
    fn retire(
        &mut self,
        c: &LocalContainer,
        reason: String,
        spec: Option<&ServiceSpec>,
        now: u64,
        plan: &mut Plan,
    ) -> bool {
        let serving = c.status == ContainerStatus::Running && c.health.is_ready();
        let since = if serving {
            *self.draining.entry(c.id.clone()).or_insert(now)
        } else {
            0
        };
        let done_at = since + DRAIN_MS;
        if serving && now < done_at {
            let mut task = with_start(&self.running_since, task_of(c, false, None));
            task.state = TaskState::Draining;
            task.since_ms = since;
            plan.tasks.push(task);
            plan.wake_at_ms = Some(plan.wake_at_ms.map_or(done_at, |w| w.min(done_at)));
            return false;
        }
        plan.actions.push(Action::Remove {
            container: c.id.clone(),
            reason,
            stop_timeout_s: stop_timeout_s(spec),
        });
        self.record(c, TaskState::Shutdown, None, now);
        true
    }

    fn record(&mut self, c: &LocalContainer, state: TaskState, error: Option<String>, now: u64) {
        let mut report = with_start(&self.running_since, task_of(c, false, error));
        report.state = state;
        report.since_ms = now;
        let tasks = self.history.entry((c.service.clone(), c.slot)).or_default();
        if tasks.iter().any(|t| t.task_id == report.task_id) {
            return;
        }
        tasks.push_front(report);
        tasks.truncate(HISTORY_PER_SLOT);
    }
}

/// A slot this node runs but another node owns.
struct Handoff {
    /// The new owner.
    owner: NodeId,
    /// Whether the owner's report shows its replica ready at the current version.
    owner_ready: bool,
}

fn owner_is_ready(
    observed: &ObservedState,
    owner: NodeId,
    service: &ServiceView,
    slot: &SlotKey,
) -> bool {
    observed.get(owner).is_some_and(|r: &NodeReport| {
        r.tasks.iter().any(|t| {
            t.service == service.name
                && &t.slot == slot
                && t.is_ready_at(service.version, service.force)
        })
    })
}

/// The task of a slot with no container: waiting for a restart delay, or given up.
fn pending(
    service: &ServiceView,
    slot: &SlotKey,
    desired_running: bool,
    error: Option<String>,
    now: u64,
) -> TaskReport {
    TaskReport {
        service: service.name.clone(),
        slot: *slot,
        task_id: String::new(),
        version: service.version,
        image: service.spec.image.clone(),
        force: service.force,
        container_id: None,
        state: TaskState::Pending,
        health: Health::None,
        desired_running,
        error,
        endpoints: vec![],
        since_ms: now,
        started_ms: None,
        addresses: vec![],
    }
}

fn rank(c: &LocalContainer) -> u8 {
    match (&c.status, c.health) {
        (ContainerStatus::Running, h) if h.is_ready() => 3,
        (ContainerStatus::Running, _) => 2,
        (ContainerStatus::Created, _) => 1,
        _ => 0,
    }
}

/// What a node reports of one of its containers.
pub fn task_of(c: &LocalContainer, desired_running: bool, error: Option<String>) -> TaskReport {
    let state = match (&c.status, c.health) {
        (ContainerStatus::Running, h) if h.is_ready() => TaskState::Running,
        (ContainerStatus::Running, _) | (ContainerStatus::Created, _) => TaskState::Starting,
        (ContainerStatus::Exited { code: 0, .. }, _) => TaskState::Complete,
        (ContainerStatus::Exited { .. }, _) => TaskState::Failed,
    };
    TaskReport {
        service: c.service.clone(),
        slot: c.slot,
        task_id: c.task_id.clone(),
        version: c.version,
        image: c.image.clone(),
        force: c.force,
        container_id: Some(c.id.clone()),
        state,
        health: c.health,
        desired_running,
        error,
        endpoints: c.endpoints.clone(),
        since_ms: c.created_ms,
        // Without the reconciler's memory of when it was first seen running (`with_start`), a
        // running container is taken to run since its creation.
        started_ms: (c.status == ContainerStatus::Running).then_some(c.created_ms),
        addresses: c.addresses.clone(),
    }
}

/// `t` with the time its node first saw its container running, when it did.
fn with_start(running_since: &BTreeMap<String, u64>, mut t: TaskReport) -> TaskReport {
    if let Some(at) = t.container_id.as_ref().and_then(|id| running_since.get(id)) {
        t.started_ms = Some(*at);
    }
    t
}

/// The live members as placement sees them: ready or suspect (a suspect still runs its replicas
/// until it is declared down), with their operator settings.
pub fn node_facts(
    views: &[crate::membership::NodeView],
    desired: &crate::desired::state::DesiredState,
) -> Vec<NodeFacts> {
    use crate::membership::NodeStatus;
    views
        .iter()
        .filter(|v| matches!(v.status, NodeStatus::Ready | NodeStatus::Suspect))
        .filter(|v| v.identity.meta.runs_containers)
        // A node removed with `node rm --force` that still runs is no member for placement.
        .filter(|v| !desired.node_settings(v.identity.id).removed)
        .map(|v| {
            let settings = desired.node_settings(v.identity.id);
            NodeFacts {
                id: v.identity.id,
                hostname: v.identity.meta.name.clone(),
                engine_labels: v.identity.meta.labels.clone(),
                node_labels: settings.labels,
                os: v.identity.meta.os.clone(),
                arch: v.identity.meta.arch.clone(),
                availability: settings.availability,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
