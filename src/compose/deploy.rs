//! `services.NAME.deploy`: mode, replicas, placement, update/rollback, restart policy, resources
//! and service labels. Anything absent keeps the `Default` of spec.rs, which is Swarm's.

use shoal_core::desired::spec::{
    FailureAction, Mode, ResourceAmounts, RestartPolicy, ServiceSpec, UpdateConfig,
};

use super::constraint::{parse_constraint, parse_spread};
use super::convert::pairs;
use super::error::{Failure, KeyPath};
use super::model::{
    Lenient, RawAmounts, RawDeploy, RawPlacement, RawRestartPolicy, RawUpdateConfig, Scalar,
};
use super::units;

/// Fills the deploy fields of `spec` and returns the replica count (1 unless given).
pub(crate) fn apply(
    path: &KeyPath,
    raw: RawDeploy,
    spec: &mut ServiceSpec,
) -> Result<u64, Failure> {
    spec.mode = raw.mode.unwrap_or_default();
    spec.endpoint_mode = raw.endpoint_mode.unwrap_or_default();
    let global = spec.mode == Mode::Global;
    let replicas =
        match raw.replicas {
            Some(_) if global => return Err(Failure::at(
                &path.key("replicas"),
                "replicas cannot be set for mode: global (one replica runs on every eligible node)",
            )),
            Some(Lenient(n)) => n,
            None => 1,
        };
    if let Some(p) = raw.placement {
        placement(&path.key("placement"), p, global, spec)?;
    }
    if let Some(u) = raw.update_config {
        spec.update_config = update_config(&path.key("update_config"), u, false)?;
    }
    if let Some(u) = raw.rollback_config {
        spec.rollback_config = update_config(&path.key("rollback_config"), u, true)?;
    }
    if let Some(r) = raw.restart_policy {
        spec.restart_policy = restart_policy(&path.key("restart_policy"), r)?;
    }
    if let Some(r) = raw.resources {
        let rpath = path.key("resources");
        if let Some(a) = r.limits {
            spec.resources.limits = amounts(&rpath.key("limits"), a)?;
        }
        if let Some(a) = r.reservations {
            spec.resources.reservations = amounts(&rpath.key("reservations"), a)?;
        }
    }
    if let Some(labels) = raw.labels {
        spec.labels = pairs(&path.key("labels"), labels)?
            .into_iter()
            .map(|(k, v, _)| (k, v.unwrap_or_default()))
            .collect();
        // Labels every node reads (sticky sessions, rebalancing): a bad one fails here.
        shoal_core::routing::sticky::from_labels("", &spec.labels)
            .and_then(|_| shoal_core::reconcile::placement::rebalance_label(&spec.labels))
            .map_err(|e| Failure::at(&path.key("labels"), e))?;
    }
    Ok(replicas)
}

fn placement(
    path: &KeyPath,
    raw: RawPlacement,
    global: bool,
    spec: &mut ServiceSpec,
) -> Result<(), Failure> {
    let cpath = path.key("constraints");
    for (i, c) in raw.constraints.unwrap_or_default().iter().enumerate() {
        let constraint = parse_constraint(c).map_err(|e| Failure::at(&cpath.index(i), e))?;
        spec.placement.constraints.push(constraint);
    }
    let ppath = path.key("preferences");
    for (i, p) in raw.preferences.unwrap_or_default().into_iter().enumerate() {
        let at = ppath.index(i);
        let Some(spread) = p.spread else {
            return Err(Failure::at(&at, "expected `spread: node.labels.KEY`"));
        };
        let label = parse_spread(&spread).map_err(|e| Failure::at(&at.key("spread"), e))?;
        spec.placement.spread.push(label);
    }
    // 0 means no limit in Swarm.
    match raw.max_replicas_per_node {
        Some(Lenient(n)) if n > 0 && global => {
            return Err(Failure::at(
                &path.key("max_replicas_per_node"),
                "cannot be set for mode: global",
            ))
        }
        Some(Lenient(n)) if n > 0 => spec.placement.max_replicas_per_node = Some(n),
        _ => {}
    }
    Ok(())
}

fn duration(path: &KeyPath, key: &str, value: Option<Scalar>) -> Result<Option<u64>, Failure> {
    value
        .map(|Scalar(s)| units::duration_ms(&s).map_err(|e| Failure::at(&path.key(key), e)))
        .transpose()
}

fn update_config(
    path: &KeyPath,
    raw: RawUpdateConfig,
    rollback: bool,
) -> Result<UpdateConfig, Failure> {
    let d = UpdateConfig::default();
    if rollback && raw.failure_action == Some(FailureAction::Rollback) {
        return Err(Failure::at(
            &path.key("failure_action"),
            "a rollback cannot roll back (use pause or continue)",
        ));
    }
    let ratio = match raw.max_failure_ratio {
        None => d.max_failure_ratio_milli,
        Some(Scalar(s)) => {
            let at = path.key("max_failure_ratio");
            let milli = units::thousandths(&s).map_err(|e| Failure::at(&at, e))?;
            if milli > 1000 {
                return Err(Failure::at(&at, format!("{s} is more than 1")));
            }
            milli
        }
    };
    Ok(UpdateConfig {
        parallelism: raw.parallelism.map_or(d.parallelism, |Lenient(n)| n),
        delay_ms: duration(path, "delay", raw.delay)?.unwrap_or(d.delay_ms),
        failure_action: raw.failure_action.unwrap_or(d.failure_action),
        monitor_ms: duration(path, "monitor", raw.monitor)?.unwrap_or(d.monitor_ms),
        max_failure_ratio_milli: ratio,
        order: raw.order.unwrap_or(d.order),
    })
}

fn restart_policy(path: &KeyPath, raw: RawRestartPolicy) -> Result<RestartPolicy, Failure> {
    let d = RestartPolicy::default();
    Ok(RestartPolicy {
        condition: raw.condition.unwrap_or(d.condition),
        delay_ms: duration(path, "delay", raw.delay)?.unwrap_or(d.delay_ms),
        // 0 means "never give up" in Swarm.
        max_attempts: raw.max_attempts.map(|Lenient(n)| n).filter(|n| *n > 0),
        window_ms: duration(path, "window", raw.window)?.unwrap_or(d.window_ms),
    })
}

/// CPUs and memory; 0 means no limit/reservation, as in Docker. A non-zero CPU amount below a
/// thousandth would round to "no limit", so it is an error instead.
fn amounts(path: &KeyPath, raw: RawAmounts) -> Result<ResourceAmounts, Failure> {
    let cpus_milli = match raw.cpus {
        None => None,
        Some(Scalar(s)) => {
            let at = path.key("cpus");
            let milli = units::thousandths(&s).map_err(|e| Failure::at(&at, e))?;
            let nonzero_text = s.bytes().any(|b| (b'1'..=b'9').contains(&b));
            if milli == 0 && nonzero_text {
                return Err(Failure::at(
                    &at,
                    format!("{s} CPUs is below the 0.001 minimum"),
                ));
            }
            Some(milli).filter(|m| *m > 0)
        }
    };
    let memory_bytes = match raw.memory {
        None => None,
        Some(Scalar(s)) => units::memory_bytes(&s)
            .map_err(|e| Failure::at(&path.key("memory"), e))
            .map(|b| Some(b).filter(|b| *b > 0))?,
    };
    Ok(ResourceAmounts {
        cpus_milli,
        memory_bytes,
    })
}
