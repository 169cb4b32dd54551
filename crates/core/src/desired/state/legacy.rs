//! Reading `desired.bin` files of earlier formats, each into its old shape and converted, so a
//! data dir of a previous release keeps its stacks and services across the upgrade:
//!
//! - before the versioned envelope (`crate::format`): raw bincode of a state whose service
//!   entries lacked the rollout registers (update status, previous spec);
//! - format version 1: no networks or node slots, and service specs (also inside a previous
//!   spec) without network attachments and endpoint mode.

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
    healthcheck: Option<Reg<Option<HealthcheckSpec>>>,
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
    nodes: BTreeMap<NodeId, NodeEntry>,
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
            healthcheck: v.healthcheck,
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
            attachments: None,
            endpoint_mode: None,
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
            nodes: old.nodes,
            networks: BTreeMap::new(),
            hosts: BTreeMap::new(),
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
            nodes: old.nodes,
            networks: BTreeMap::new(),
            hosts: BTreeMap::new(),
        })
    }
}

/// A service spec of format version 1: today's without the two last fields.
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
    healthcheck: Option<HealthcheckSpec>,
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
            healthcheck: v.healthcheck,
            placement: v.placement,
            update_config: v.update_config,
            rollback_config: v.rollback_config,
            restart_policy: v.restart_policy,
            resources: v.resources,
            // Attachments fall back to these names (`ServiceSpec::network_attachments`).
            networks: v.networks,
            mounts: v.mounts,
            attachments: Vec::new(),
            endpoint_mode: EndpointMode::Vip,
        }
    }
}

#[derive(Deserialize)]
struct PreviousSpecV1 {
    spec: ServiceSpecV1,
    force: u64,
}

/// A service entry of format version 1: today's without the two last registers.
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
    healthcheck: Option<Reg<Option<HealthcheckSpec>>>,
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

#[derive(Deserialize)]
struct DesiredStateV1 {
    services: BTreeMap<String, ServiceEntryV1>,
    nodes: BTreeMap<NodeId, NodeEntry>,
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
            healthcheck: v.healthcheck,
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
            attachments: None,
            endpoint_mode: None,
        }
    }
}
