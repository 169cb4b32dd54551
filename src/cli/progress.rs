//! Waiting for a service to converge after a change, as `docker service create|update|scale|
//! rollback` do without `--detach`: a line per slot whenever its state changes, then `verify:
//! Service converged`, or the rollout's pause or rollback message and a failure.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::bail;

use super::client;
use shoal_core::{
    api::{Request, Response, ServiceDetail, TaskInfo},
    desired::state::{UpdateState, UpdateStatus},
};

/// What the change was, which decides how a rollback reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A create, update or scale: a rollback means the update failed.
    Update,
    /// `service rollback`: a completed rollback is the success.
    Rollback,
}

/// How often the agent is asked.
const POLL: Duration = Duration::from_millis(500);

fn inspect(data_dir: &Path, name: &str) -> anyhow::Result<ServiceDetail> {
    match client::call(
        data_dir,
        Request::ServiceInspect {
            name: name.to_string(),
        },
    )? {
        Response::Service(detail) => Ok(*detail),
        other => bail!("unexpected answer from the agent: {other:?}"),
    }
}

fn tasks(data_dir: &Path, name: &str) -> anyhow::Result<Vec<TaskInfo>> {
    match client::call(
        data_dir,
        Request::ServicePs {
            name: name.to_string(),
        },
    )? {
        Response::Tasks(tasks) => Ok(tasks),
        other => bail!("unexpected answer from the agent: {other:?}"),
    }
}

/// The state of one slot as a progress line shows it.
fn slot_state(t: &TaskInfo) -> String {
    match (t.state.as_str(), t.health.as_str()) {
        ("running", "none") => "running".into(),
        ("running", health) => format!("running ({health})"),
        (state, _) if !t.error.is_empty() && state != "pending" => {
            format!("{state}: {}", t.error)
        }
        (state, _) => state.to_string(),
    }
}

/// The rollout status of `name` now (None if it has none or cannot be read): taken before a
/// change, so that [`converge`] tells a status the change caused from one it found.
pub fn status_before(data_dir: &Path, name: &str) -> Option<UpdateStatus> {
    inspect(data_dir, name).ok().and_then(|d| d.update_status)
}

/// Polls `name` until it converges (`Ok`) or its rollout pauses or rolls back (`Err`), printing
/// progress unless `quiet`. `before` is the status before the change ([`status_before`]): a
/// status still equal to it is not this change's (a scale after a rollback did not roll back).
pub fn converge(
    data_dir: &Path,
    name: &str,
    expect: Expect,
    quiet: bool,
    before: Option<UpdateStatus>,
) -> anyhow::Result<()> {
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let mut overall = None;
    let mut rollback_said = false;
    loop {
        let detail = inspect(data_dir, name)?;
        let desired = detail.info.replicas;
        // A status about an older version is history: a newer command replaced that rollout.
        let status = detail
            .update_status
            .as_ref()
            .filter(|s| s.version.to_string() == detail.version)
            .filter(|s| before.as_ref() != Some(*s));
        if let Some(s) = status {
            match (s.state, expect) {
                (UpdateState::Paused, _) => bail!("update paused: {}", s.message),
                (UpdateState::RollbackPaused, _) => bail!("rollback paused: {}", s.message),
                (UpdateState::RollbackStarted, Expect::Update) if !rollback_said => {
                    if !quiet {
                        println!("rollback: {}", s.message);
                    }
                    rollback_said = true;
                }
                _ => {}
            }
        }
        let mut current: Vec<TaskInfo> = tasks(data_dir, name)?
            .into_iter()
            .filter(|t| !t.history && t.desired_state == "running")
            .collect();
        current.sort_by(|a, b| a.slot.cmp(&b.slot));
        if !quiet {
            let ready = detail.info.updated.min(desired);
            if overall != Some((ready, desired)) {
                println!("overall progress: {ready} out of {desired} tasks");
                overall = Some((ready, desired));
            }
            for t in &current {
                let label = match t.slot.parse::<u64>() {
                    Ok(n) => format!("{n}/{desired}"),
                    Err(_) => t.node.clone(),
                };
                let state = slot_state(t);
                if shown.get(&label) != Some(&state) {
                    println!("{label}: {state}");
                    shown.insert(label, state);
                }
            }
        }
        let settled = matches!(
            status.map(|s| s.state),
            None | Some(UpdateState::Completed | UpdateState::RollbackCompleted)
        );
        let served = detail.info.updated >= desired
            && detail.info.running >= desired
            && detail.rollout.changing == 0;
        if settled && served {
            if let (Some(s), Expect::Update) = (status, expect) {
                if s.state == UpdateState::RollbackCompleted {
                    bail!("service rolled back: {}", s.message);
                }
            }
            if !quiet {
                println!("verify: Service converged");
            }
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}
