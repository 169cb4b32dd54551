//! Rollout assessment: has the rollout to a service's current version failed, or completed? A
//! pure function of the service, its placement and the reports, so every node can run it and
//! comes to the same answer once it holds the same reports; what it decides is written into the
//! desired state as an [`AutoWrite`], stamped so that concurrent writers agree
//! (`desired::state::status`).
//!
//! # The rules
//!
//! A rollout is assessed while its status, for the current version, is `updating` or
//! `rollback_started`; its config is the service's `update_config`, or `rollback_config` for a
//! rollback ([`ServiceView::pacing_config`]).
//!
//! - **A slot fails** when a replica of the new version in it (on any live node):
//!   - ended (exited, whatever its status; was found unhealthy and replaced; was removed behind
//!     shoal's back; could not be created) within its *monitor window* of starting to run, or
//!     before it ever ran; or
//!   - still is not ready when its monitor window has passed since it started to run.
//!
//!   The monitor window is `monitor`, counted from when the replica's node first saw its
//!   container running (`TaskReport::started_ms`). For a replica with a healthcheck it is at least
//!   the check's start period plus one interval (Docker's 30 s when the stack file does not say),
//!   the soonest a healthy container can pass its first check: Swarm counts `monitor` only once
//!   such a task is healthy, so this covers the same ground. A failure after the window is the
//!   restart policy's business, not the rollout's.
//! - **Failure ratio**: failed slots over the slots of the service. Above `max_failure_ratio`
//!   (`failed × 1000 > max_failure_ratio_milli × slots`; with the default 0, any failure),
//!   `failure_action` applies: `pause` writes `paused` (a rollback: `rollback_paused`), `rollback`
//!   writes the rollback (a rollback: `rollback_paused`; Swarm has no rollback of a rollback),
//!   `continue` writes nothing. At or below the ratio, or with `continue`, failed slots are
//!   **tolerated**: they leave the pacing window (`pacing::Progress::released`), so the update
//!   goes on past them, each slot restarting under its restart policy.
//! - **Completion**: every placed slot runs the new version ready on its owner and nothing else
//!   (or is a tolerated failure), and every such replica has run for `monitor` (Swarm watches the
//!   last batch for `monitor` too). Then `completed` (`rollback_completed`), at the time the last
//!   monitor period ended.
//!
//! # For the node
//!
//! Each reconcile round, [`super::plan::Reconciler::plan`] calls [`assess`] for every service
//! and returns the writes in `Plan::auto_writes`; the node applies each with
//! `DesiredState::apply_auto` (through `Replica::apply_auto`, which also spreads the delta when
//! it is not empty). A write is repeated every round until the state holds it, and applying it
//! again is a no-op. `service inspect` can call [`assess_observed`] with the placement
//! (`plan::placement_of`) to show the failed slots; the status itself is
//! `ServiceView::update_status`.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    desired::{
        spec::FailureAction,
        state::{AutoOutcome, AutoWrite, ServiceView, UpdateState},
    },
    identity::NodeId,
    observed::{Health, ObservedState, SlotKey, TaskReport, TaskState},
};

/// Docker's healthcheck interval when none is given.
const DEFAULT_HEALTH_INTERVAL_MS: u64 = 30_000;

/// A slot whose new replica failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The slot.
    pub slot: SlotKey,
    /// The failed task, as `service ps` shows it.
    pub task_id: String,
    /// What went wrong.
    pub reason: String,
    /// When (ms since the epoch, its node's clock).
    pub at_ms: u64,
}

/// What [`assess`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assessment {
    /// The rollout's state for the current version, before `write` is applied; `None` when the
    /// service has no rollout (never updated since created, or a stale status).
    pub state: Option<UpdateState>,
    /// The failed slots, in slot order.
    pub failed: Vec<Failure>,
    /// Failed slots the rollout goes on past (see the module docs); empty while paused.
    pub tolerated: BTreeSet<SlotKey>,
    /// What to write into the desired state, if anything.
    pub write: Option<AutoWrite>,
}

/// The reports a rollout is judged by: one service's current tasks and history on every node
/// ([`crate::observed::TasksByService`]), and the live nodes (others' reports are stale).
pub struct Reports<'a> {
    /// Current tasks, with their nodes.
    pub tasks: &'a [(NodeId, &'a TaskReport)],
    /// Finished tasks, with their nodes.
    pub history: &'a [(NodeId, &'a TaskReport)],
    /// Nodes alive now.
    pub live: &'a BTreeSet<NodeId>,
}

/// The monitor window of a replica of `service` (see the module docs).
pub fn monitor_window_ms(service: &ServiceView, has_healthcheck: bool) -> u64 {
    let monitor = service.pacing_config().monitor_ms;
    if !has_healthcheck {
        return monitor;
    }
    let check = service.spec.healthcheck.as_ref();
    let interval = check
        .and_then(|h| h.interval_ms)
        .unwrap_or(DEFAULT_HEALTH_INTERVAL_MS);
    let start = check.and_then(|h| h.start_period_ms).unwrap_or(0);
    monitor.max(start.saturating_add(interval))
}

/// Whether a task of `service` has a healthcheck, as far as anyone can tell: the stack file
/// sets one, or the engine reports a health status (the image's own).
fn has_healthcheck(service: &ServiceView, t: &TaskReport) -> bool {
    t.health != Health::None
        || service
            .spec
            .healthcheck
            .as_ref()
            .is_some_and(|h| !h.disable)
}

/// The slots of `service` whose replica of the current version failed (see the module docs),
/// the earliest failure of each.
pub fn failures(
    service: &ServiceView,
    owners: &BTreeMap<SlotKey, NodeId>,
    reports: &Reports<'_>,
    now_ms: u64,
) -> BTreeMap<SlotKey, Failure> {
    let current = |t: &TaskReport| {
        t.version == service.version && t.force == service.force && owners.contains_key(&t.slot)
    };
    let mut found: BTreeMap<SlotKey, Failure> = BTreeMap::new();
    let mut note = |f: Failure| {
        let better = found
            .get(&f.slot)
            .is_none_or(|g| (f.at_ms, &f.task_id) < (g.at_ms, &g.task_id));
        if better {
            found.insert(f.slot, f);
        }
    };
    for (node, t) in reports.history {
        let ended = matches!(
            t.state,
            TaskState::Failed | TaskState::Rejected | TaskState::Complete
        );
        if !ended || !reports.live.contains(node) || !current(t) {
            continue;
        }
        let window = monitor_window_ms(service, has_healthcheck(service, t));
        let early = t
            .started_ms
            .is_none_or(|started| t.since_ms <= started.saturating_add(window));
        if early {
            let reason = t
                .error
                .clone()
                .unwrap_or_else(|| format!("task {}", t.state.as_str()));
            note(Failure {
                slot: t.slot,
                task_id: t.task_id.clone(),
                reason,
                at_ms: t.since_ms,
            });
        }
    }
    for (node, t) in reports.tasks {
        if !reports.live.contains(node) || !current(t) || !t.desired_running {
            continue;
        }
        let (TaskState::Starting, Some(started)) = (t.state, t.started_ms) else {
            continue;
        };
        let window = monitor_window_ms(service, has_healthcheck(service, t));
        let due = started.saturating_add(window);
        if now_ms >= due {
            note(Failure {
                slot: t.slot,
                task_id: t.task_id.clone(),
                reason: format!("not healthy {} s after it started", window / 1000),
                at_ms: due,
            });
        }
    }
    found
}

/// Judges the rollout of `service` to its current version (see the module docs).
pub fn assess(
    service: &ServiceView,
    owners: &BTreeMap<SlotKey, NodeId>,
    reports: &Reports<'_>,
    now_ms: u64,
) -> Assessment {
    let Some(status) = service.rollout() else {
        return Assessment::default();
    };
    let state = status.state;
    let config = service.pacing_config();
    let found = failures(service, owners, reports, now_ms);
    let failed: Vec<Failure> = found.values().cloned().collect();
    let slots = owners.len() as u128;
    let exceeded = failed.len() as u128 * 1000 > u128::from(config.max_failure_ratio_milli) * slots;
    let tolerated: BTreeSet<SlotKey> =
        if state.is_paused() || (exceeded && config.failure_action != FailureAction::Continue) {
            BTreeSet::new()
        } else {
            found.keys().copied().collect()
        };
    let mut out = Assessment {
        state: Some(state),
        failed,
        tolerated,
        write: None,
    };
    if !state.is_active() {
        return out;
    }
    let write = |outcome| AutoWrite {
        service: service.name.clone(),
        version: service.version,
        outcome,
    };
    let rollback = state.is_rollback();
    if exceeded && config.failure_action != FailureAction::Continue {
        // The earliest failure is named; nodes that saw others name another (see `status`).
        let first = out
            .failed
            .iter()
            .min_by_key(|f| (f.at_ms, f.slot))
            .expect("exceeded implies a failure");
        let task = &first.task_id;
        let outcome = match (rollback, config.failure_action) {
            (true, _) => AutoOutcome::RollbackPaused {
                message: format!(
                    "rollback paused due to failure or early termination of task {task}"
                ),
            },
            (false, FailureAction::Rollback) => AutoOutcome::RollBack {
                message: format!(
                    "update rolled back due to failure or early termination of task {task}"
                ),
                at_ms: first.at_ms,
            },
            (false, _) => AutoOutcome::Paused {
                message: format!(
                    "update paused due to failure or early termination of task {task}"
                ),
            },
        };
        out.write = Some(write(outcome));
        return out;
    }
    if let Some(at_ms) = completed_at(service, owners, reports, &out.tolerated, now_ms) {
        let outcome = if rollback {
            AutoOutcome::RollbackCompleted { at_ms }
        } else {
            AutoOutcome::Completed { at_ms }
        };
        out.write = Some(write(outcome));
    }
    out
}

/// [`assess`] over a whole observed state, for a caller that looks at one service (`service
/// inspect`); a reconcile round groups the reports once for every service instead.
pub fn assess_observed(
    service: &ServiceView,
    owners: &BTreeMap<SlotKey, NodeId>,
    observed: &ObservedState,
    live: &BTreeSet<NodeId>,
    now_ms: u64,
) -> Assessment {
    let by_service = observed.by_service();
    let reports = Reports {
        tasks: by_service.of(&service.name),
        history: by_service.history_of(&service.name),
        live,
    };
    assess(service, owners, &reports, now_ms)
}

/// When the rollout completed, if it has: every slot served only by its owner's ready replica
/// of the current version for `monitor` at least, or a tolerated failure.
fn completed_at(
    service: &ServiceView,
    owners: &BTreeMap<SlotKey, NodeId>,
    reports: &Reports<'_>,
    tolerated: &BTreeSet<SlotKey>,
    now_ms: u64,
) -> Option<u64> {
    let monitor = service.pacing_config().monitor_ms;
    let mut since: BTreeMap<SlotKey, u64> = BTreeMap::new();
    let mut extra: BTreeSet<SlotKey> = BTreeSet::new();
    for (node, t) in reports.tasks {
        let ready = t.state == TaskState::Running && t.health.is_ready();
        if !ready || !reports.live.contains(node) {
            continue;
        }
        if owners.get(&t.slot) == Some(node) && t.is_ready_at(service.version, service.force) {
            since.insert(t.slot, t.started_ms.unwrap_or(t.since_ms));
        } else {
            extra.insert(t.slot);
        }
    }
    let mut last = service.version.wall_ms;
    for slot in owners.keys() {
        if tolerated.contains(slot) {
            continue;
        }
        match since.get(slot) {
            Some(started) if !extra.contains(slot) => {
                last = last.max(started.saturating_add(monitor));
            }
            _ => return None,
        }
    }
    (now_ms >= last).then_some(last)
}

#[cfg(test)]
mod tests;
