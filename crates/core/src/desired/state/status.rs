//! A service's rollout in the desired state: its update status (Swarm's `UpdateStatus`) and the
//! spec a rollback returns to, and the automatic writes that move the status on.
//!
//! # Who writes the status
//!
//! - **The operator's commands.** A deploy or `service update` that changes the service version
//!   (any register that shapes containers, or `--force`) records the spec it replaces as the
//!   previous spec and sets the status to `updating` for the new version, both with the
//!   command's stamp. `service rollback` writes the previous spec back (see
//!   [`DesiredState::rollback_service`]) and sets `rollback_started`. A fresh create writes no
//!   status and no previous spec (it clears those of a removed service of the same name).
//! - **Any node, automatically** ([`AutoWrite`], from `reconcile::rollout::assess`): `paused`,
//!   `completed`, a rollback with `rollback_started`, `rollback_paused`, `rollback_completed`.
//!
//! # Why concurrent automatic writes agree
//!
//! Every node assesses the rollout on its own and may write the outcome at the same time as
//! others. The stamp of an automatic write is not taken from the writer's clock: it is derived
//! from the version `V` the rollout is about ([`auto_stamp`]): `V`'s wall time, `V`'s counter
//! plus a step per outcome, and node id 0:
//!
//! | outcome | stamp |
//! |---|---|
//! | `completed` / `rollback_completed` of `V` | `auto_stamp(V, 1)` |
//! | `paused` / `rollback_paused` of `V` | `auto_stamp(V, 2)` |
//! | rollback of `V` (spec back, `rollback_started`) | `auto_stamp(V, 3)` |
//!
//! So:
//! 1. Two nodes that write the same outcome for `V` write the same registers with the same
//!    stamp: merging them is a no-op, whatever the order. (Values that depend on what a node saw,
//!    the failed task named in a message, may differ; the register's tie rule then keeps the same
//!    one on every node.)
//! 2. The stamp is greater than `V`: the write wins over everything the command that made `V`
//!    wrote. Later outcomes of the same `V` order after earlier ones (a pause wins over a
//!    completion written concurrently; a rollback over a pause).
//! 3. An operator's command issued after the writer's state reached the node (its clock has
//!    observed the automatic stamp, so its own stamp is greater) wins: a `service update` after a
//!    pause resumes, after a rollback updates again. A command concurrent with the automatic
//!    write, made on a node that has not seen it, is ordered by stamp like any concurrent write;
//!    node id 0 makes the command win when both share wall time and counter.
//! 4. A write is applied only while the service's version is still `V`: a node that has merged a
//!    newer version drops a stale outcome ([`DesiredState::apply_auto`] returns an empty delta),
//!    and a stale outcome merged from elsewhere changes only the status register, where the newer
//!    command's status, stamped at or after the newer version, wins unless both share a
//!    millisecond.
//!
//! The automatic rollback writes the previous spec with the derived stamp exactly (no
//! "successor of what is there" rule, which would make two writers differ): a register that holds
//! a later operator write keeps it.

use serde::{Deserialize, Serialize};

use super::{
    entry::ServiceEntry,
    reg::{put, value, Reg},
    DesiredError, DesiredState,
};
use crate::{
    desired::{hlc::Hlc, spec::ServiceSpec},
    identity::NodeId,
};

/// Where a rollout is, in Swarm's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// Slots are being replaced by the new version.
    Updating,
    /// A new replica failed; nothing more changes until an operator acts.
    Paused,
    /// Every slot runs the new version and passed its monitor period.
    Completed,
    /// Slots are being returned to the previous spec.
    RollbackStarted,
    /// A replica of the rolled-back spec failed; nothing more changes.
    RollbackPaused,
    /// Every slot runs the rolled-back spec.
    RollbackCompleted,
}

impl UpdateState {
    /// The word `service inspect` shows.
    pub fn as_str(&self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        }
    }

    /// Whether this rollout returns to a previous spec (its pacing is the rollback config).
    pub fn is_rollback(&self) -> bool {
        matches!(
            self,
            UpdateState::RollbackStarted
                | UpdateState::RollbackPaused
                | UpdateState::RollbackCompleted
        )
    }

    /// Whether slots are still being changed (not paused, not finished).
    pub fn is_active(&self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }

    /// Whether the rollout is held by a failure.
    pub fn is_paused(&self) -> bool {
        matches!(self, UpdateState::Paused | UpdateState::RollbackPaused)
    }
}

/// A service's update status (Swarm's `UpdateStatus`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// Where the rollout is.
    pub state: UpdateState,
    /// The service version the rollout brings the slots to: a status about another version is
    /// stale (a newer command replaced it).
    pub version: Hlc,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// When it completed, for `completed` and `rollback_completed`.
    pub completed_ms: Option<u64>,
    /// What happened, e.g. `update paused due to failure or early termination of task 1a2b3c`.
    pub message: String,
}

/// What `service rollback` returns to: the spec before the last version-changing command.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PreviousSpec {
    /// The whole spec (the replica count is not part of it: a rollback never undoes a scale).
    pub spec: ServiceSpec,
    /// Its force counter.
    pub force: u64,
}

/// An outcome of a rollout that any node may write, with a stamp derived from the version it is
/// about (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoWrite {
    /// The service.
    pub service: String,
    /// The service version the assessment saw: the write is dropped if it changed since.
    pub version: Hlc,
    /// What to write.
    pub outcome: AutoOutcome,
}

/// The automatic writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AutoOutcome {
    /// `completed`, at `at_ms`.
    Completed {
        /// When the last slot's monitor period ended.
        at_ms: u64,
    },
    /// `paused`, with Swarm's message naming the failed task.
    Paused {
        /// Shown by `service inspect`.
        message: String,
    },
    /// Back to the previous spec, `rollback_started` (`paused` if there is no previous spec).
    RollBack {
        /// Shown by `service inspect`.
        message: String,
        /// When the failure that triggered it happened.
        at_ms: u64,
    },
    /// `rollback_completed`, at `at_ms`.
    RollbackCompleted {
        /// When the last slot's monitor period ended.
        at_ms: u64,
    },
    /// `rollback_paused`.
    RollbackPaused {
        /// Shown by `service inspect`.
        message: String,
    },
}

impl AutoOutcome {
    /// The step of its stamp over the version (see the module docs).
    fn step(&self) -> u32 {
        match self {
            AutoOutcome::Completed { .. } | AutoOutcome::RollbackCompleted { .. } => 1,
            AutoOutcome::Paused { .. } | AutoOutcome::RollbackPaused { .. } => 2,
            AutoOutcome::RollBack { .. } => 3,
        }
    }
}

/// The stamp of automatic write number `step` about `version`: above `version`, the same on
/// every node, below any stamp a clock issues after observing it.
pub fn auto_stamp(version: Hlc, step: u32) -> Hlc {
    (0..step).fold(version, |at, _| at.successor(NodeId(0)))
}

impl ServiceEntry {
    /// The update status, whatever version it is about.
    pub fn update_status(&self) -> Option<UpdateStatus> {
        value(&self.update_status)
    }

    /// The spec a rollback returns to.
    pub fn previous(&self) -> Option<PreviousSpec> {
        value(&self.previous)
    }

    /// Adds to `d`, the registers an update of this live service writes, the rollout
    /// bookkeeping: if `d` changes the version, the previous spec (this one) and `updating`.
    pub fn record_rollout(&self, d: &mut ServiceEntry, at: Hlc) {
        if d.version().is_none() {
            return;
        }
        let previous = PreviousSpec {
            spec: self.spec(),
            force: self.force(),
        };
        put(&mut d.previous, &self.previous, Some(previous), true, at);
        let mut after = self.clone();
        after.merge(d.clone());
        let status = UpdateStatus {
            state: UpdateState::Updating,
            version: after.version().unwrap_or(at),
            started_ms: at.wall_ms,
            completed_ms: None,
            message: "update in progress".into(),
        };
        put(
            &mut d.update_status,
            &self.update_status,
            Some(status),
            true,
            at,
        );
    }

    /// The registers that return this service to its previous spec, with `message` in a
    /// `rollback_started` status. `exact`: every register carries `at` as is (automatic writes,
    /// which must be the same on every node); otherwise an operator's write, which beats whatever
    /// the node holds (the `put` stamp rule).
    fn rollback(
        &self,
        name: &str,
        at: Hlc,
        exact: bool,
        message: String,
        started_ms: u64,
    ) -> Result<ServiceEntry, DesiredError> {
        let previous = self
            .previous()
            .ok_or_else(|| DesiredError::NothingToRollBack(name.to_string()))?;
        let mut d = self.write_spec(&previous.spec, at);
        // Always written, so the version moves even when the spec is the same (a forced update).
        put(&mut d.force, &self.force, previous.force, true, at);
        let back = PreviousSpec {
            spec: self.spec(),
            force: self.force(),
        };
        put(&mut d.previous, &self.previous, Some(back), true, at);
        if exact {
            d.restamp(at);
        }
        let mut after = self.clone();
        after.merge(d.clone());
        let status = UpdateStatus {
            state: UpdateState::RollbackStarted,
            version: after.version().unwrap_or(at),
            started_ms,
            completed_ms: None,
            message,
        };
        put(
            &mut d.update_status,
            &self.update_status,
            Some(status),
            true,
            at,
        );
        if exact {
            d.restamp(at);
        }
        Ok(d)
    }
}

impl DesiredState {
    /// `docker service rollback NAME` (`service update --rollback`): returns the service to its
    /// previous spec (the one before the last version-changing command; a rollback's previous
    /// spec is the spec it rolled back from, so rolling back twice returns to where it started).
    /// The version moves on, so every replica is replaced, paced by `rollback_config`; the status
    /// becomes `rollback_started`. The replica count is left alone.
    pub fn rollback_service(&mut self, name: &str, hlc: Hlc) -> Result<DesiredState, DesiredError> {
        let entry = match self.services.get(name) {
            Some(e) if e.is_live() => e,
            _ => return Err(DesiredError::UnknownService(name.to_string())),
        };
        let d = entry.rollback(
            name,
            hlc,
            false,
            "manually requested rollback".into(),
            hlc.wall_ms,
        )?;
        let mut delta = DesiredState::default();
        delta.services.insert(name.to_string(), d);
        self.merge_delta(delta.clone());
        Ok(delta)
    }

    /// The spec `rollback_service` would return `name` to.
    pub fn previous_spec(&self, name: &str) -> Option<ServiceSpec> {
        let entry = self.services.get(name).filter(|e| e.is_live())?;
        entry.previous().map(|p| p.spec)
    }

    /// Applies an automatic rollout write (see the module docs for its stamp). Returns the
    /// registers that changed, to spread like any delta; an empty delta when there is nothing to
    /// do: the service is gone, its version is no longer `write.version`, or this write (or a
    /// later one) is already held.
    pub fn apply_auto(&mut self, write: &AutoWrite) -> Result<DesiredState, DesiredError> {
        let Some(entry) = self.services.get(&write.service).filter(|e| e.is_live()) else {
            return Ok(DesiredState::default());
        };
        if entry.version() != Some(write.version) {
            return Ok(DesiredState::default());
        }
        let v = write.version;
        let at = auto_stamp(v, write.outcome.step());
        let current = entry.update_status().filter(|s| s.version == v);
        let started_ms = current.as_ref().map_or(v.wall_ms, |s| s.started_ms);
        let status = |state, completed_ms, message: String| UpdateStatus {
            state,
            version: v,
            started_ms,
            completed_ms,
            message,
        };
        let mut d = ServiceEntry::default();
        let set = match &write.outcome {
            AutoOutcome::Completed { at_ms } => Some(status(
                UpdateState::Completed,
                Some(*at_ms),
                "update completed".into(),
            )),
            AutoOutcome::Paused { message } => {
                Some(status(UpdateState::Paused, None, message.clone()))
            }
            AutoOutcome::RollbackCompleted { at_ms } => Some(status(
                UpdateState::RollbackCompleted,
                Some(*at_ms),
                "rollback completed".into(),
            )),
            AutoOutcome::RollbackPaused { message } => {
                Some(status(UpdateState::RollbackPaused, None, message.clone()))
            }
            AutoOutcome::RollBack { message, at_ms } => {
                match entry.rollback(&write.service, at, true, message.clone(), *at_ms) {
                    Ok(rollback) => {
                        d = rollback;
                        None
                    }
                    // Nothing to go back to: hold where it is, as a pause would.
                    Err(_) => Some(status(
                        UpdateState::Paused,
                        None,
                        format!("{message}; no previous spec to roll back to"),
                    )),
                }
            }
        };
        if let Some(status) = set {
            d.update_status = Some(Reg {
                val: Some(status),
                marker: at,
            });
        }
        let mut delta = DesiredState::default();
        delta.services.insert(write.service.clone(), d);
        if self.merge_delta(delta.clone()) {
            Ok(delta)
        } else {
            Ok(DesiredState::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{hlc::Clock, spec::ServiceDef, state::ServiceUpdate};

    fn at(wall_ms: u64, node: u128) -> Hlc {
        Hlc {
            wall_ms,
            counter: 0,
            node: NodeId(node),
        }
    }

    fn def(image: &str) -> ServiceDef {
        ServiceDef {
            name: "web_api".into(),
            stack: "web".into(),
            replicas: 3,
            spec: ServiceSpec {
                image: image.into(),
                ..ServiceSpec::default()
            },
        }
    }

    fn image(state: &DesiredState) -> String {
        state.service("web_api").unwrap().spec.image
    }

    fn update_image(state: &mut DesiredState, image: &str, hlc: Hlc) {
        let update = ServiceUpdate {
            image: Some(image.into()),
            ..ServiceUpdate::default()
        };
        state.update_service("web_api", update, hlc).unwrap();
    }

    /// Deployed with v1, then updated to v2 at wall time 2.
    fn updated() -> DesiredState {
        let mut s = DesiredState::default();
        s.deploy_stack("web", vec![def("api:1")], at(1, 1)).unwrap();
        update_image(&mut s, "api:2", at(2, 1));
        s
    }

    #[test]
    fn a_version_change_records_the_previous_spec_and_updating() {
        let mut s = DesiredState::default();
        s.deploy_stack("web", vec![def("api:1")], at(1, 1)).unwrap();
        let view = s.service("web_api").unwrap();
        assert_eq!((view.update_status, view.can_roll_back), (None, false));
        // A scale changes no version: no rollout.
        s.scale("web_api", 5, at(2, 1)).unwrap();
        assert_eq!(s.service("web_api").unwrap().update_status, None);
        // A redeploy with a new image does.
        s.deploy_stack("web", vec![def("api:2")], at(3, 1)).unwrap();
        let view = s.service("web_api").unwrap();
        let status = view.rollout().expect("a rollout of the new version");
        assert_eq!(status.state, UpdateState::Updating);
        assert_eq!(status.started_ms, 3);
        assert_eq!(s.previous_spec("web_api").unwrap().image, "api:1");
        // So does `service update`; the previous spec is the one it replaces.
        update_image(&mut s, "api:3", at(4, 1));
        assert_eq!(s.previous_spec("web_api").unwrap().image, "api:2");
        assert_eq!(
            s.service("web_api").unwrap().rollout().unwrap().version,
            at(4, 1)
        );
    }

    #[test]
    fn rollback_returns_to_the_previous_spec_and_back() {
        let mut s = updated();
        s.scale("web_api", 7, at(3, 1)).unwrap();
        let before = s.service("web_api").unwrap().version;
        s.rollback_service("web_api", at(4, 2)).unwrap();
        let view = s.service("web_api").unwrap();
        assert_eq!(view.spec.image, "api:1");
        assert_eq!(view.replicas, 7, "a rollback never undoes a scale");
        assert!(view.version > before);
        let status = view.rollout().unwrap();
        assert_eq!(status.state, UpdateState::RollbackStarted);
        assert_eq!(status.message, "manually requested rollback");
        // A rollback of the rollback returns to the spec rolled back from.
        s.rollback_service("web_api", at(5, 2)).unwrap();
        assert_eq!(image(&s), "api:2");
        let mut fresh = DesiredState::default();
        fresh
            .deploy_stack("web", vec![def("api:1")], at(1, 1))
            .unwrap();
        assert_eq!(
            fresh.rollback_service("web_api", at(2, 1)),
            Err(DesiredError::NothingToRollBack("web_api".into()))
        );
    }

    #[test]
    fn a_rollback_of_a_forced_update_still_replaces_every_replica() {
        let mut s = DesiredState::default();
        s.deploy_stack("web", vec![def("api:1")], at(1, 1)).unwrap();
        let force = ServiceUpdate {
            force: true,
            ..ServiceUpdate::default()
        };
        s.update_service("web_api", force, at(2, 1)).unwrap();
        let forced = s.service("web_api").unwrap();
        s.rollback_service("web_api", at(3, 1)).unwrap();
        let back = s.service("web_api").unwrap();
        assert!(back.version > forced.version);
        assert_eq!(back.force, 0);
    }

    /// Two nodes see the same failure and write the rollback independently: their states are
    /// identical, merged either way, and merging the other's delta changes nothing.
    #[test]
    fn concurrent_automatic_writes_agree() {
        let state = updated();
        let version = state.service("web_api").unwrap().version;
        let write = AutoWrite {
            service: "web_api".into(),
            version,
            outcome: AutoOutcome::RollBack {
                message: "update rolled back due to failure or early termination of task t1".into(),
                at_ms: 2_500,
            },
        };
        let (mut a, mut b) = (state.clone(), state.clone());
        let da = a.apply_auto(&write).unwrap();
        let db = b.apply_auto(&write).unwrap();
        assert_eq!(da, db);
        assert_eq!(a.digest(), b.digest());
        assert!(
            !a.merge_delta(db),
            "the other writer's delta is already held"
        );
        assert!(
            a.apply_auto(&write).unwrap().is_empty(),
            "applying twice is a no-op"
        );
        let view = a.service("web_api").unwrap();
        assert_eq!(view.spec.image, "api:1");
        assert_eq!(view.version, auto_stamp(version, 3));
        assert_eq!(view.rollout().unwrap().state, UpdateState::RollbackStarted);

        // One node pauses while another, not having seen the failure, completes: the pause
        // wins on both.
        let pause = AutoWrite {
            outcome: AutoOutcome::Paused {
                message: "update paused".into(),
            },
            ..write.clone()
        };
        let done = AutoWrite {
            outcome: AutoOutcome::Completed { at_ms: 9_000 },
            ..write
        };
        let (mut a, mut b) = (state.clone(), state.clone());
        let da = a.apply_auto(&pause).unwrap();
        let db = b.apply_auto(&done).unwrap();
        a.merge_delta(db);
        b.merge_delta(da);
        assert_eq!(a.digest(), b.digest());
        assert!(a.service("web_api").unwrap().is_paused());
    }

    /// An automatic write about a version that is no longer current is dropped; a command issued
    /// after an automatic write wins over it.
    #[test]
    fn later_commands_win_and_stale_writes_are_dropped() {
        let mut s = updated();
        let v2 = s.service("web_api").unwrap().version;
        let pause = AutoWrite {
            service: "web_api".into(),
            version: v2,
            outcome: AutoOutcome::Paused {
                message: "update paused due to failure or early termination of task t1".into(),
            },
        };
        let mut clock = Clock::new(NodeId(3));
        // The operator's node has seen v2 (at wall time 2) and its wall clock still says 2.
        clock.observe(&s.max_hlc().unwrap(), 2);
        let mut other = s.clone();
        s.apply_auto(&pause).unwrap();
        assert!(s.service("web_api").unwrap().is_paused());
        clock.observe(&s.max_hlc().unwrap(), 2);
        update_image(&mut s, "api:3", clock.tick(2));
        let view = s.service("web_api").unwrap();
        assert_eq!(view.spec.image, "api:3");
        assert_eq!(view.rollout().unwrap().state, UpdateState::Updating);
        // The pause, written concurrently elsewhere and merged afterwards, is about v2: stale.
        let delta = other.apply_auto(&pause).unwrap();
        s.merge_delta(delta);
        assert_eq!(
            s.service("web_api").unwrap().rollout().unwrap().state,
            UpdateState::Updating
        );
        assert!(s.apply_auto(&pause).unwrap().is_empty());
    }

    #[test]
    fn an_automatic_rollback_with_nothing_to_go_back_to_pauses() {
        let mut s = DesiredState::default();
        s.deploy_stack("web", vec![def("api:1")], at(1, 1)).unwrap();
        // An old state: a version without a previous spec recorded.
        let version = s.service("web_api").unwrap().version;
        let write = AutoWrite {
            service: "web_api".into(),
            version,
            outcome: AutoOutcome::RollBack {
                message: "update rolled back".into(),
                at_ms: 5,
            },
        };
        s.apply_auto(&write).unwrap();
        let status = s.service("web_api").unwrap().update_status.unwrap();
        assert_eq!(status.state, UpdateState::Paused);
        assert!(status.message.ends_with("no previous spec to roll back to"));
    }
}
