//! Reading `desired.bin` files of earlier releases, into their old shapes, then converted, so a
//! data dir keeps its stacks and services across an upgrade:
//! - v0, written before the versioned envelope (`crate::format`): raw bincode of a state whose
//!   service entries lacked the rollout registers (update status, previous spec);
//! - v1: the envelope's first version, whose service entries lacked the container-option
//!   registers (user, stop grace period, capabilities...) and the network attachments and
//!   endpoint mode, whose healthchecks lacked `start_interval`, and whose state had no networks,
//!   node address slots or cluster entry.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    entry::{NodeEntry, ServiceEntry},
    reg::{Reg, RegMap},
    status::{PreviousSpec, UpdateStatus},
    DesiredState,
};
use crate::{
    desired::spec::*,
    identity::NodeId,
    wire::{self, WireError},
};

/// A service entry as the previous release wrote it: every field of today's, in the same order,
/// without the two that came after.
#[derive(Deserialize)]
struct ServiceEntryV0 {
    stack: Option<Reg<String>>,
    image: Option<Reg<String>>,
    command: Option<Reg<Option<Vec<String>>>>,
    entrypoint: Option<Reg<Option<Vec<String>>>>,
    env: RegMap,
    container_labels: RegMap,
    labels: RegMap,
    mode: Option<Reg<Mode>>,
    replicas: Option<Reg<u64>>,
    ports: Option<Reg<Vec<PortSpec>>>,
    healthcheck: Option<Reg<Option<HealthcheckSpecV1>>>,
    placement: Option<Reg<PlacementSpec>>,
    update_config: Option<Reg<UpdateConfig>>,
    rollback_config: Option<Reg<UpdateConfig>>,
    restart_policy: Option<Reg<RestartPolicy>>,
    resources: Option<Reg<Resources>>,
    networks: Option<Reg<Vec<String>>>,
    mounts: Option<Reg<Vec<MountSpec>>>,
    force: Option<Reg<u64>>,
    deleted: Option<Reg<bool>>,
}

#[derive(Deserialize)]
struct DesiredStateV0 {
    services: BTreeMap<String, ServiceEntryV0>,
    nodes: BTreeMap<NodeId, NodeEntryV1>,
}

/// A node entry of v0 and v1: without `removed`.
#[derive(Deserialize)]
struct NodeEntryV1 {
    availability: Option<Reg<Availability>>,
    labels: RegMap,
}

impl From<NodeEntryV1> for NodeEntry {
    fn from(v: NodeEntryV1) -> Self {
        NodeEntry {
            availability: v.availability,
            labels: v.labels,
        }
    }
}

/// A service entry of v1: v0's fields, then the rollout registers.
#[derive(Deserialize)]
struct ServiceEntryV1 {
    stack: Option<Reg<String>>,
    image: Option<Reg<String>>,
    command: Option<Reg<Option<Vec<String>>>>,
    entrypoint: Option<Reg<Option<Vec<String>>>>,
    env: RegMap,
    container_labels: RegMap,
    labels: RegMap,
    mode: Option<Reg<Mode>>,
    replicas: Option<Reg<u64>>,
    ports: Option<Reg<Vec<PortSpec>>>,
    healthcheck: Option<Reg<Option<HealthcheckSpecV1>>>,
    placement: Option<Reg<PlacementSpec>>,
    update_config: Option<Reg<UpdateConfig>>,
    rollback_config: Option<Reg<UpdateConfig>>,
    restart_policy: Option<Reg<RestartPolicy>>,
    resources: Option<Reg<Resources>>,
    networks: Option<Reg<Vec<String>>>,
    mounts: Option<Reg<Vec<MountSpec>>>,
    force: Option<Reg<u64>>,
    deleted: Option<Reg<bool>>,
    update_status: Option<Reg<Option<UpdateStatus>>>,
    previous: Option<Reg<Option<PreviousSpecV1>>>,
}

/// A healthcheck of v0 and v1: without `start_interval_ms`.
#[derive(Deserialize)]
struct HealthcheckSpecV1 {
    test: Option<Vec<String>>,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    retries: Option<u64>,
    start_period_ms: Option<u64>,
    disable: bool,
}

impl From<HealthcheckSpecV1> for HealthcheckSpec {
    fn from(v: HealthcheckSpecV1) -> Self {
        HealthcheckSpec {
            test: v.test,
            interval_ms: v.interval_ms,
            timeout_ms: v.timeout_ms,
            retries: v.retries,
            start_period_ms: v.start_period_ms,
            disable: v.disable,
            start_interval_ms: None,
        }
    }
}

/// A spec of v1, as kept in the previous-spec register.
#[derive(Deserialize)]
struct ServiceSpecV1 {
    image: String,
    command: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    container_labels: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    mode: Mode,
    ports: Vec<PortSpec>,
    healthcheck: Option<HealthcheckSpecV1>,
    placement: PlacementSpec,
    update_config: UpdateConfig,
    rollback_config: UpdateConfig,
    restart_policy: RestartPolicy,
    resources: Resources,
    networks: Vec<String>,
    mounts: Vec<MountSpec>,
}

impl From<ServiceSpecV1> for ServiceSpec {
    fn from(v: ServiceSpecV1) -> Self {
        ServiceSpec {
            image: v.image,
            command: v.command,
            entrypoint: v.entrypoint,
            env: v.env,
            container_labels: v.container_labels,
            labels: v.labels,
            mode: v.mode,
            ports: v.ports,
            healthcheck: v.healthcheck.map(Into::into),
            placement: v.placement,
            update_config: v.update_config,
            rollback_config: v.rollback_config,
            restart_policy: v.restart_policy,
            resources: v.resources,
            networks: v.networks,
            mounts: v.mounts,
            ..ServiceSpec::default()
        }
    }
}

#[derive(Deserialize)]
struct PreviousSpecV1 {
    spec: ServiceSpecV1,
    force: u64,
}

fn healthcheck_reg(
    r: Option<Reg<Option<HealthcheckSpecV1>>>,
) -> Option<Reg<Option<HealthcheckSpec>>> {
    r.map(|r| Reg {
        val: r.val.map(Into::into),
        marker: r.marker,
    })
}

impl From<ServiceEntryV1> for ServiceEntry {
    fn from(v: ServiceEntryV1) -> Self {
        ServiceEntry {
            stack: v.stack,
            image: v.image,
            command: v.command,
            entrypoint: v.entrypoint,
            env: v.env,
            container_labels: v.container_labels,
            labels: v.labels,
            mode: v.mode,
            replicas: v.replicas,
            ports: v.ports,
            healthcheck: healthcheck_reg(v.healthcheck),
            placement: v.placement,
            update_config: v.update_config,
            rollback_config: v.rollback_config,
            restart_policy: v.restart_policy,
            resources: v.resources,
            networks: v.networks,
            mounts: v.mounts,
            force: v.force,
            deleted: v.deleted,
            update_status: v.update_status,
            previous: v.previous.map(|r| Reg {
                val: r.val.map(|p| PreviousSpec {
                    spec: p.spec.into(),
                    force: p.force,
                }),
                marker: r.marker,
            }),
            ..ServiceEntry::default()
        }
    }
}

#[derive(Deserialize)]
struct DesiredStateV1 {
    services: BTreeMap<String, ServiceEntryV1>,
    nodes: BTreeMap<NodeId, NodeEntryV1>,
}

impl From<ServiceEntryV0> for ServiceEntry {
    fn from(v: ServiceEntryV0) -> Self {
        ServiceEntry {
            stack: v.stack,
            image: v.image,
            command: v.command,
            entrypoint: v.entrypoint,
            env: v.env,
            container_labels: v.container_labels,
            labels: v.labels,
            mode: v.mode,
            replicas: v.replicas,
            ports: v.ports,
            healthcheck: healthcheck_reg(v.healthcheck),
            placement: v.placement,
            update_config: v.update_config,
            rollback_config: v.rollback_config,
            restart_policy: v.restart_policy,
            resources: v.resources,
            networks: v.networks,
            mounts: v.mounts,
            force: v.force,
            deleted: v.deleted,
            // No rollout was ever recorded: nothing to report, nothing to roll back to.
            update_status: None,
            previous: None,
            ..ServiceEntry::default()
        }
    }
}

impl DesiredState {
    /// Decodes a `desired.bin` of the previous release (no envelope).
    pub fn decode_legacy(bytes: &[u8]) -> Result<DesiredState, WireError> {
        let old: DesiredStateV0 = wire::decode(bytes)?;
        Ok(DesiredState {
            services: old
                .services
                .into_iter()
                .map(|(name, e)| (name, e.into()))
                .collect(),
            nodes: old
                .nodes
                .into_iter()
                .map(|(id, n)| (id, n.into()))
                .collect(),
            ..DesiredState::default()
        })
    }

    /// Decodes the body of a `desired.bin` of format version 1.
    pub fn decode_v1(bytes: &[u8]) -> Result<DesiredState, WireError> {
        let old: DesiredStateV1 = wire::decode(bytes)?;
        Ok(DesiredState {
            services: old
                .services
                .into_iter()
                .map(|(name, e)| (name, e.into()))
                .collect(),
            nodes: old
                .nodes
                .into_iter()
                .map(|(id, n)| (id, n.into()))
                .collect(),
            ..DesiredState::default()
        })
    }
}
