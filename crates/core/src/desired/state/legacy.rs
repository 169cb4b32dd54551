//! Reading `desired.bin` files written before the versioned envelope (`crate::format`): raw
//! bincode of the desired state as it was then, whose service entries lacked the rollout
//! registers (update status, previous spec). They are read into that old shape and converted,
//! so a data dir of the previous release keeps its stacks and services across the upgrade.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    entry::{NodeEntry, ServiceEntry},
    reg::{Reg, RegMap},
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
            cluster: Default::default(),
        })
    }
}
