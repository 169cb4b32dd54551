//! The registers of one service and of one node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    error::{check_keys, check_name, check_replicas, MAX_ENTRIES},
    reg::{
        check_map, check_reg, map_marker, map_value, marker, merge_map, merge_reg, put, put_map,
        value, Reg, RegMap,
    },
    status::{PreviousSpec, UpdateStatus},
    DesiredError, MergeConflict,
};
use crate::desired::{hlc::Hlc, spec::*};

/// The container ports a service's Traefik routers lead to. Replicas bind them for the ingress of
/// every node when they are created, so a change of this set (a router label added or changed)
/// replaces the replicas, although labels alone never do.
pub(super) fn router_ports(labels: &BTreeMap<String, String>, ports: &[PortSpec]) -> Vec<u16> {
    crate::routing::routers::from_labels("", labels, ports)
        .map(|r| r.ports())
        .unwrap_or_default()
}

/// Every register of one service. `None` means never written (on this replica, or in a delta:
/// not part of it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ServiceEntry {
    pub stack: Option<Reg<String>>,
    pub image: Option<Reg<String>>,
    pub command: Option<Reg<Option<Vec<String>>>>,
    pub entrypoint: Option<Reg<Option<Vec<String>>>>,
    pub env: RegMap,
    pub container_labels: RegMap,
    pub labels: RegMap,
    pub mode: Option<Reg<Mode>>,
    pub replicas: Option<Reg<u64>>,
    pub ports: Option<Reg<Vec<PortSpec>>>,
    pub healthcheck: Option<Reg<Option<HealthcheckSpec>>>,
    pub placement: Option<Reg<PlacementSpec>>,
    pub update_config: Option<Reg<UpdateConfig>>,
    pub rollback_config: Option<Reg<UpdateConfig>>,
    pub restart_policy: Option<Reg<RestartPolicy>>,
    pub resources: Option<Reg<Resources>>,
    pub networks: Option<Reg<Vec<String>>>,
    pub mounts: Option<Reg<Vec<MountSpec>>>,
    pub force: Option<Reg<u64>>,
    pub deleted: Option<Reg<bool>>,
    /// The rollout's status (`super::status`).
    pub update_status: Option<Reg<Option<UpdateStatus>>>,
    /// What a rollback returns to (`super::status`).
    pub previous: Option<Reg<Option<PreviousSpec>>>,
    // Container options (P7), one register each; see `container_fields!`.
    pub user: Option<Reg<Option<String>>>,
    pub working_dir: Option<Reg<Option<String>>>,
    pub hostname: Option<Reg<Option<String>>>,
    pub stop_signal: Option<Reg<Option<String>>>,
    pub stop_grace_ms: Option<Reg<Option<u64>>>,
    pub init: Option<Reg<Option<bool>>>,
    pub tty: Option<Reg<bool>>,
    pub read_only: Option<Reg<bool>>,
    pub cap_add: Option<Reg<Vec<String>>>,
    pub cap_drop: Option<Reg<Vec<String>>>,
    pub sysctls: Option<Reg<BTreeMap<String, String>>>,
    pub ulimits: Option<Reg<Vec<Ulimit>>>,
    pub logging: Option<Reg<Option<LoggingSpec>>>,
    pub dns: Option<Reg<Vec<String>>>,
    pub dns_search: Option<Reg<Vec<String>>>,
    pub extra_hosts: Option<Reg<Vec<String>>>,
    /// Network attachments with aliases (`ServiceSpec::attachments`).
    pub attachments: Option<Reg<Vec<NetworkAttachment>>>,
    /// `deploy.endpoint_mode`.
    pub endpoint_mode: Option<Reg<EndpointMode>>,
}

/// Applies `$m!(field)` to every single-register field of [`ServiceEntry`], so merge, validation
/// and the "latest write" query cannot forget one.
macro_rules! scalar_fields {
    ($m:ident) => {
        $m!(stack);
        $m!(image);
        $m!(command);
        $m!(entrypoint);
        $m!(mode);
        $m!(replicas);
        $m!(ports);
        $m!(healthcheck);
        $m!(placement);
        $m!(update_config);
        $m!(rollback_config);
        $m!(restart_policy);
        $m!(resources);
        $m!(networks);
        $m!(mounts);
        $m!(force);
        $m!(deleted);
        $m!(update_status);
        $m!(previous);
        $m!(attachments);
        $m!(endpoint_mode);
        container_fields!($m);
    };
}

/// Applies `$m!(field)` to every container-option register: single registers that a deploy
/// writes from the spec field of the same name and that shape the containers (so they count in
/// the spec version).
macro_rules! container_fields {
    ($m:ident) => {
        $m!(user);
        $m!(working_dir);
        $m!(hostname);
        $m!(stop_signal);
        $m!(stop_grace_ms);
        $m!(init);
        $m!(tty);
        $m!(read_only);
        $m!(cap_add);
        $m!(cap_drop);
        $m!(sysctls);
        $m!(ulimits);
        $m!(logging);
        $m!(dns);
        $m!(dns_search);
        $m!(extra_hosts);
    };
}

impl ServiceEntry {
    /// Checks what the entry holds against the rules of a local write: its name, its replica
    /// count, its keys and values, and the length of each of its lists. A local write checks
    /// the entry it leaves (merged); a peer's delta is checked entry by entry before it is
    /// merged, so that a member that does not apply them (an older or broken one) cannot grow
    /// every node's state past them.
    pub fn check_limits(&self, name: &str) -> Result<(), DesiredError> {
        check_name("service", name)?;
        if let Some(r) = &self.replicas {
            check_replicas(name, r.val)?;
        }
        let too_many = |what: &'static str, count: usize| -> Result<(), DesiredError> {
            if count > MAX_ENTRIES {
                return Err(DesiredError::TooManyEntries {
                    service: name.to_string(),
                    what,
                    count,
                });
            }
            Ok(())
        };
        for (what, plural, map) in [
            ("env var", "env vars", &self.env),
            ("label", "labels", &self.labels),
            (
                "container label",
                "container labels",
                &self.container_labels,
            ),
        ] {
            too_many(plural, map.values().filter(|r| r.val.is_some()).count())?;
            check_keys(
                what,
                map.iter().map(|(k, r)| (k.as_str(), r.val.as_deref())),
            )?;
        }
        let len = |r: &Option<Reg<Vec<_>>>| r.as_ref().map_or(0, |r| r.val.len());
        too_many(
            "published ports",
            self.ports.as_ref().map_or(0, |r| r.val.len()),
        )?;
        too_many("mounts", self.mounts.as_ref().map_or(0, |r| r.val.len()))?;
        too_many("networks", len(&self.networks))?;
        too_many(
            "network attachments",
            self.attachments.as_ref().map_or(0, |r| r.val.len()),
        )?;
        too_many("added capabilities", len(&self.cap_add))?;
        too_many("dropped capabilities", len(&self.cap_drop))?;
        too_many("dns servers", len(&self.dns))?;
        too_many("dns search domains", len(&self.dns_search))?;
        too_many("extra hosts", len(&self.extra_hosts))?;
        too_many("sysctls", self.sysctls.as_ref().map_or(0, |r| r.val.len()))?;
        too_many("ulimits", self.ulimits.as_ref().map_or(0, |r| r.val.len()))?;
        for (what, args) in [("command", &self.command), ("entrypoint", &self.entrypoint)] {
            let n = args
                .as_ref()
                .and_then(|r| r.val.as_ref())
                .map_or(0, Vec::len);
            too_many(what, n)?;
        }
        Ok(())
    }

    /// Live means a deploy created it and no later remove won: `deleted` holds false. An entry
    /// that has only an update's registers (its create not merged yet) is not live.
    pub fn is_live(&self) -> bool {
        matches!(&self.deleted, Some(r) if !r.val)
    }

    pub fn is_empty(&self) -> bool {
        *self == ServiceEntry::default()
    }

    pub fn stack(&self) -> String {
        value(&self.stack)
    }

    pub fn replicas(&self) -> u64 {
        value(&self.replicas)
    }

    pub fn force(&self) -> u64 {
        value(&self.force)
    }

    pub fn spec(&self) -> ServiceSpec {
        ServiceSpec {
            image: value(&self.image),
            command: value(&self.command),
            entrypoint: value(&self.entrypoint),
            env: map_value(&self.env),
            container_labels: map_value(&self.container_labels),
            labels: map_value(&self.labels),
            mode: value(&self.mode),
            ports: value(&self.ports),
            healthcheck: value(&self.healthcheck),
            placement: value(&self.placement),
            update_config: value(&self.update_config),
            rollback_config: value(&self.rollback_config),
            restart_policy: value(&self.restart_policy),
            resources: value(&self.resources),
            networks: value(&self.networks),
            mounts: value(&self.mounts),
            attachments: value(&self.attachments),
            endpoint_mode: value(&self.endpoint_mode),
            user: value(&self.user),
            working_dir: value(&self.working_dir),
            hostname: value(&self.hostname),
            stop_signal: value(&self.stop_signal),
            stop_grace_ms: value(&self.stop_grace_ms),
            init: value(&self.init),
            tty: value(&self.tty),
            read_only: value(&self.read_only),
            cap_add: value(&self.cap_add),
            cap_drop: value(&self.cap_drop),
            sysctls: value(&self.sysctls),
            ulimits: value(&self.ulimits),
            logging: value(&self.logging),
            dns: value(&self.dns),
            dns_search: value(&self.dns_search),
            extra_hosts: value(&self.extra_hosts),
        }
    }

    /// When the service was created: the stamp of its `stack` register, which a create writes
    /// and nothing else rewrites while it lives (a service never changes stacks). Orders claims
    /// on virtual addresses.
    pub fn created(&self) -> Option<Hlc> {
        marker(&self.stack)
    }

    /// Latest write to a register that shapes the containers: everything but the stack, the
    /// replica count, the update/rollback configs, deploy labels, the endpoint mode (it changes
    /// what the name resolves to, not the containers) and `deleted`. The force counter counts,
    /// since forcing means replacing every replica.
    pub fn version(&self) -> Option<Hlc> {
        let latest = [
            marker(&self.image),
            marker(&self.command),
            marker(&self.entrypoint),
            map_marker(&self.env),
            map_marker(&self.container_labels),
            marker(&self.mode),
            marker(&self.ports),
            marker(&self.healthcheck),
            marker(&self.placement),
            marker(&self.restart_policy),
            marker(&self.resources),
            marker(&self.networks),
            marker(&self.mounts),
            marker(&self.force),
            marker(&self.attachments),
        ]
        .into_iter()
        .flatten()
        .max();
        let mut latest = latest;
        macro_rules! latest {
            ($f:ident) => {
                latest = latest.max(marker(&self.$f));
            };
        }
        container_fields!(latest);
        latest
    }

    /// Latest write to any register.
    pub fn updated(&self) -> Option<Hlc> {
        let mut latest = map_marker(&self.env)
            .max(map_marker(&self.container_labels))
            .max(map_marker(&self.labels));
        macro_rules! latest {
            ($f:ident) => {
                latest = latest.max(marker(&self.$f));
            };
        }
        scalar_fields!(latest);
        latest
    }

    /// Joins `other` into `self`; true if any register changed.
    pub fn merge(&mut self, other: ServiceEntry) -> bool {
        let mut changed = false;
        macro_rules! join {
            ($f:ident) => {
                changed |= merge_reg(&mut self.$f, other.$f);
            };
        }
        scalar_fields!(join);
        changed |= merge_map(&mut self.env, other.env);
        changed |= merge_map(&mut self.container_labels, other.container_labels);
        changed |= merge_map(&mut self.labels, other.labels);
        changed
    }

    pub fn check(&self, name: &str, other: &ServiceEntry) -> Result<(), MergeConflict> {
        macro_rules! check {
            ($f:ident) => {
                check_reg(
                    &format!("{name}.{}", stringify!($f)),
                    self.$f.as_ref(),
                    other.$f.as_ref(),
                )?;
            };
        }
        scalar_fields!(check);
        check_map(&format!("{name}.env"), &self.env, &other.env)?;
        check_map(
            &format!("{name}.container_labels"),
            &self.container_labels,
            &other.container_labels,
        )?;
        check_map(&format!("{name}.labels"), &self.labels, &other.labels)
    }

    /// The registers a deploy of `def` writes over `self`. A fresh create (`all`) writes every
    /// field, so nothing from before a remove leaks into the new service; an update of a live
    /// service writes only what differs. Both write `deleted = false`, which lets a deploy win
    /// over a concurrent remove that has an earlier stamp.
    pub fn write_def(&self, def: &ServiceDef, all: bool, at: Hlc) -> ServiceEntry {
        let mut d = ServiceEntry::default();
        let s = &def.spec;
        put(&mut d.stack, &self.stack, def.stack.clone(), all, at);
        put(&mut d.image, &self.image, s.image.clone(), all, at);
        put(&mut d.command, &self.command, s.command.clone(), all, at);
        put(
            &mut d.entrypoint,
            &self.entrypoint,
            s.entrypoint.clone(),
            all,
            at,
        );
        put_map(&mut d.env, &self.env, &s.env, all, at);
        let cl = &s.container_labels;
        put_map(&mut d.container_labels, &self.container_labels, cl, all, at);
        put_map(&mut d.labels, &self.labels, &s.labels, all, at);
        put(&mut d.mode, &self.mode, s.mode, all, at);
        put(&mut d.replicas, &self.replicas, def.replicas, all, at);
        put(&mut d.ports, &self.ports, s.ports.clone(), all, at);
        put(
            &mut d.healthcheck,
            &self.healthcheck,
            s.healthcheck.clone(),
            all,
            at,
        );
        put(
            &mut d.placement,
            &self.placement,
            s.placement.clone(),
            all,
            at,
        );
        let uc = s.update_config.clone();
        put(&mut d.update_config, &self.update_config, uc, all, at);
        let rc = s.rollback_config.clone();
        put(&mut d.rollback_config, &self.rollback_config, rc, all, at);
        let rp = s.restart_policy.clone();
        put(&mut d.restart_policy, &self.restart_policy, rp, all, at);
        put(
            &mut d.resources,
            &self.resources,
            s.resources.clone(),
            all,
            at,
        );
        put(&mut d.networks, &self.networks, s.networks.clone(), all, at);
        put(&mut d.mounts, &self.mounts, s.mounts.clone(), all, at);
        let att = s.attachments.clone();
        put(&mut d.attachments, &self.attachments, att, all, at);
        let em = s.endpoint_mode;
        put(&mut d.endpoint_mode, &self.endpoint_mode, em, all, at);
        // A fresh create overwrites only the options this entry ever held (from before a
        // remove): one never written reads as its default already, and leaving it out keeps
        // the deltas of services that set none as small as before these options existed.
        macro_rules! container {
            ($f:ident) => {
                put(
                    &mut d.$f,
                    &self.$f,
                    s.$f.clone(),
                    all && self.$f.is_some(),
                    at,
                );
            };
        }
        container_fields!(container);
        if !all && self.is_live() {
            let before = router_ports(&map_value(&self.labels), &value(&self.ports));
            if before != router_ports(&s.labels, &s.ports) {
                self.bump_force(&mut d, at);
            }
        }
        put(&mut d.deleted, &self.deleted, false, true, at);
        if all {
            // A fresh service has no rollout and nothing to roll back to.
            put(&mut d.update_status, &self.update_status, None, true, at);
            put(&mut d.previous, &self.previous, None, true, at);
        } else {
            self.record_rollout(&mut d, at);
        }
        d
    }

    /// Writes a force bump into `d`: every replica is replaced.
    pub fn bump_force(&self, d: &mut ServiceEntry, at: Hlc) {
        let bumped = self.force().saturating_add(1);
        put(&mut d.force, &self.force, bumped, true, at);
    }

    /// The registers that set every field of `spec` (not the stack, replica count, force counter
    /// or `deleted`), written whatever they hold now: a rollback.
    pub fn write_spec(&self, s: &ServiceSpec, at: Hlc) -> ServiceEntry {
        let mut d = ServiceEntry::default();
        put(&mut d.image, &self.image, s.image.clone(), true, at);
        put(&mut d.command, &self.command, s.command.clone(), true, at);
        let ep = s.entrypoint.clone();
        put(&mut d.entrypoint, &self.entrypoint, ep, true, at);
        put_map(&mut d.env, &self.env, &s.env, true, at);
        let cl = &s.container_labels;
        put_map(
            &mut d.container_labels,
            &self.container_labels,
            cl,
            true,
            at,
        );
        put_map(&mut d.labels, &self.labels, &s.labels, true, at);
        put(&mut d.mode, &self.mode, s.mode, true, at);
        put(&mut d.ports, &self.ports, s.ports.clone(), true, at);
        let hc = s.healthcheck.clone();
        put(&mut d.healthcheck, &self.healthcheck, hc, true, at);
        let pl = s.placement.clone();
        put(&mut d.placement, &self.placement, pl, true, at);
        let uc = s.update_config.clone();
        put(&mut d.update_config, &self.update_config, uc, true, at);
        let rc = s.rollback_config.clone();
        put(&mut d.rollback_config, &self.rollback_config, rc, true, at);
        let rp = s.restart_policy.clone();
        put(&mut d.restart_policy, &self.restart_policy, rp, true, at);
        let res = s.resources.clone();
        put(&mut d.resources, &self.resources, res, true, at);
        put(
            &mut d.networks,
            &self.networks,
            s.networks.clone(),
            true,
            at,
        );
        put(&mut d.mounts, &self.mounts, s.mounts.clone(), true, at);
        let att = s.attachments.clone();
        put(&mut d.attachments, &self.attachments, att, true, at);
        let em = s.endpoint_mode;
        put(&mut d.endpoint_mode, &self.endpoint_mode, em, true, at);
        macro_rules! container {
            ($f:ident) => {
                put(&mut d.$f, &self.$f, s.$f.clone(), true, at);
            };
        }
        container_fields!(container);
        d
    }

    /// Gives every register of this delta the stamp `at`, for writes that must be the same on
    /// every node that makes them.
    pub fn restamp(&mut self, at: Hlc) {
        macro_rules! stamp {
            ($f:ident) => {
                if let Some(r) = self.$f.as_mut() {
                    r.marker = at;
                }
            };
        }
        scalar_fields!(stamp);
        for map in [&mut self.env, &mut self.container_labels, &mut self.labels] {
            for r in map.values_mut() {
                r.marker = at;
            }
        }
    }

    /// The delta that removes this service.
    pub fn tombstone(&self, at: Hlc) -> ServiceEntry {
        let mut d = ServiceEntry::default();
        put(&mut d.deleted, &self.deleted, true, true, at);
        d
    }
}

/// Operator settings of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct NodeEntry {
    pub availability: Option<Reg<Availability>>,
    pub labels: RegMap,
}

impl NodeEntry {
    pub fn is_empty(&self) -> bool {
        *self == NodeEntry::default()
    }

    pub fn availability(&self) -> Availability {
        value(&self.availability)
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        map_value(&self.labels)
    }

    pub fn updated(&self) -> Option<Hlc> {
        marker(&self.availability).max(map_marker(&self.labels))
    }

    pub fn merge(&mut self, other: NodeEntry) -> bool {
        merge_reg(&mut self.availability, other.availability)
            | merge_map(&mut self.labels, other.labels)
    }

    pub fn check(&self, name: &str, other: &NodeEntry) -> Result<(), MergeConflict> {
        let what = format!("node {name}.availability");
        check_reg(
            &what,
            self.availability.as_ref(),
            other.availability.as_ref(),
        )?;
        check_map(&format!("node {name}.labels"), &self.labels, &other.labels)
    }
}
