//! Constraint evaluation, with Swarm's semantics so that stack files behave as they do there.

use crate::desired::spec::{Constraint, ConstraintKey, ConstraintOp, ServiceSpec};

use super::NodeFacts;

/// Whether `node` satisfies every placement constraint of `spec`; on failure, the first
/// constraint (in the spec's order) that does not hold, as the operator wrote it
/// (`node.labels.zone == a`).
///
/// Semantics, as in Swarm:
/// - values compare case-insensitively (`node.platform.os == Linux` matches `linux`);
/// - a constraint on a label the node lacks: `==` fails, `!=` holds;
/// - `node.role` is both `manager` and `worker` on every shoal node, so `== manager` and
///   `== worker` both hold and `!=` either fails;
/// - `node.id` takes the full 32-hex-digit id; a prefix does not match (a prefix that is unique
///   today may stop being unique when a node joins, and placement must not change meaning then).
///
/// Availability (`pause`, `drain`) is not a constraint and is not checked here; [`super::place`]
/// applies it.
pub fn eligible(spec: &ServiceSpec, node: &NodeFacts) -> Result<(), String> {
    match spec.placement.constraints.iter().find(|c| !holds(c, node)) {
        Some(failing) => Err(failing.to_string()),
        None => Ok(()),
    }
}

/// Whether one constraint holds on one node.
pub(super) fn holds(c: &Constraint, node: &NodeFacts) -> bool {
    let matched = match &c.key {
        ConstraintKey::NodeId => same(&node.id.to_string(), &c.value),
        ConstraintKey::NodeHostname => same(&node.hostname, &c.value),
        ConstraintKey::NodeRole => same("manager", &c.value) || same("worker", &c.value),
        ConstraintKey::NodeLabel(key) => {
            node.node_labels.get(key).is_some_and(|v| same(v, &c.value))
        }
        ConstraintKey::EngineLabel(key) => node
            .engine_labels
            .get(key)
            .is_some_and(|v| same(v, &c.value)),
        ConstraintKey::PlatformOs => same(&node.os, &c.value),
        ConstraintKey::PlatformArch => same(&node.arch, &c.value),
    };
    match c.op {
        ConstraintOp::Eq => matched,
        ConstraintOp::Ne => !matched,
    }
}

/// Case-insensitive equality (Swarm uses Go's `strings.EqualFold`), without allocating: this runs
/// for every node and constraint of every service on each recompute.
fn same(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{desired::spec::Availability, identity::NodeId};

    fn node() -> NodeFacts {
        NodeFacts {
            id: NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            hostname: "web-1".into(),
            engine_labels: BTreeMap::from([("disk".into(), "ssd".into())]),
            node_labels: BTreeMap::from([("zone".into(), "a".into())]),
            os: "linux".into(),
            arch: "x86_64".into(),
            availability: Availability::Active,
        }
    }

    fn c(key: ConstraintKey, op: ConstraintOp, value: &str) -> Constraint {
        Constraint {
            key,
            op,
            value: value.into(),
        }
    }

    fn check(key: ConstraintKey, value: &str) -> (bool, bool) {
        let n = node();
        (
            holds(&c(key.clone(), ConstraintOp::Eq, value), &n),
            holds(&c(key, ConstraintOp::Ne, value), &n),
        )
    }

    #[test]
    fn node_labels() {
        let zone = || ConstraintKey::NodeLabel("zone".into());
        assert_eq!(check(zone(), "a"), (true, false));
        assert_eq!(check(zone(), "b"), (false, true));
        assert_eq!(
            check(zone(), "A"),
            (true, false),
            "values compare case-insensitively"
        );
        // Engine labels are a separate namespace.
        assert_eq!(
            check(ConstraintKey::NodeLabel("disk".into()), "ssd"),
            (false, true)
        );
    }

    #[test]
    fn missing_label_fails_eq_and_satisfies_ne() {
        let rack = || ConstraintKey::NodeLabel("rack".into());
        assert_eq!(check(rack(), "r1"), (false, true));
        assert_eq!(check(rack(), ""), (false, true));
        assert_eq!(
            check(ConstraintKey::EngineLabel("gpu".into()), "yes"),
            (false, true)
        );
    }

    #[test]
    fn engine_labels() {
        let disk = || ConstraintKey::EngineLabel("disk".into());
        assert_eq!(check(disk(), "ssd"), (true, false));
        assert_eq!(check(disk(), "hdd"), (false, true));
        assert_eq!(
            check(ConstraintKey::EngineLabel("zone".into()), "a"),
            (false, true)
        );
    }

    #[test]
    fn hostname_id_and_platform() {
        assert_eq!(check(ConstraintKey::NodeHostname, "web-1"), (true, false));
        assert_eq!(check(ConstraintKey::NodeHostname, "WEB-1"), (true, false));
        assert_eq!(check(ConstraintKey::NodeHostname, "web-2"), (false, true));
        let id = node().id.to_string();
        assert_eq!(check(ConstraintKey::NodeId, &id), (true, false));
        assert_eq!(
            check(ConstraintKey::NodeId, &id.to_uppercase()),
            (true, false)
        );
        assert_eq!(
            check(ConstraintKey::NodeId, &id[..12]),
            (false, true),
            "no prefixes"
        );
        assert_eq!(check(ConstraintKey::PlatformOs, "linux"), (true, false));
        assert_eq!(check(ConstraintKey::PlatformOs, "windows"), (false, true));
        assert_eq!(check(ConstraintKey::PlatformArch, "x86_64"), (true, false));
        assert_eq!(check(ConstraintKey::PlatformArch, "aarch64"), (false, true));
    }

    #[test]
    fn every_node_is_manager_and_worker() {
        assert_eq!(check(ConstraintKey::NodeRole, "manager"), (true, false));
        assert_eq!(check(ConstraintKey::NodeRole, "worker"), (true, false));
        assert_eq!(check(ConstraintKey::NodeRole, "Manager"), (true, false));
        assert_eq!(check(ConstraintKey::NodeRole, "leader"), (false, true));
    }

    #[test]
    fn eligible_names_the_first_failing_constraint() {
        let mut spec = ServiceSpec::default();
        assert_eq!(eligible(&spec, &node()), Ok(()));
        spec.placement.constraints = vec![
            c(ConstraintKey::PlatformOs, ConstraintOp::Eq, "linux"),
            c(
                ConstraintKey::NodeLabel("zone".into()),
                ConstraintOp::Eq,
                "b",
            ),
            c(ConstraintKey::NodeHostname, ConstraintOp::Eq, "db"),
        ];
        assert_eq!(
            eligible(&spec, &node()),
            Err("node.labels.zone == b".into())
        );
        spec.placement.constraints.remove(1);
        assert_eq!(eligible(&spec, &node()), Err("node.hostname == db".into()));
        spec.placement.constraints.pop();
        assert_eq!(eligible(&spec, &node()), Ok(()));
    }

    #[test]
    fn unicode_values_fold() {
        assert!(same("Zürich", "zÜRICH"));
        assert!(!same("zurich", "zürich"));
    }
}
