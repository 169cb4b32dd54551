//! The operations: each validates, then writes registers stamped with the caller's HLC and
//! returns them as a delta (already merged into the state).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    entry::{NodeEntry, ServiceEntry},
    error::{check_keys, check_name, check_replicas},
    reg::{put, put_map},
    DesiredError, DesiredState,
};
use crate::{
    desired::{
        hlc::Hlc,
        spec::{
            Availability, Constraint, HealthcheckSpec, Mode, RestartPolicy, ServiceDef,
            UpdateConfig,
        },
    },
    identity::NodeId,
};

/// Changes to one service, in the manner of `docker service update` flags. Unset fields are left
/// alone; a field set to its current value writes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceUpdate {
    /// `--image`.
    pub image: Option<String>,
    /// `--replicas` (replicated services only).
    pub replicas: Option<u64>,
    /// `--env-add KEY=VALUE`.
    pub env_add: Vec<(String, String)>,
    /// `--env-rm KEY`; applied before `env_add`, so a key in both ends up set.
    pub env_rm: Vec<String>,
    /// `--label-add` (deploy labels, e.g. ingress stickiness).
    pub label_add: Vec<(String, String)>,
    /// `--label-rm`; applied before `label_add`.
    pub label_rm: Vec<String>,
    /// `--container-label-add`.
    pub container_label_add: Vec<(String, String)>,
    /// `--container-label-rm`; applied before `container_label_add`.
    pub container_label_rm: Vec<String>,
    /// `--constraint-add`.
    pub constraint_add: Vec<Constraint>,
    /// `--constraint-rm`; applied before `constraint_add`.
    pub constraint_rm: Vec<Constraint>,
    /// Replaces the healthcheck override.
    pub healthcheck: Option<HealthcheckSpec>,
    /// Replaces the update config.
    pub update_config: Option<UpdateConfig>,
    /// Replaces the rollback config.
    pub rollback_config: Option<UpdateConfig>,
    /// Replaces the restart policy.
    pub restart_policy: Option<RestartPolicy>,
    /// `--force`: replace every replica even if nothing else changes.
    pub force: bool,
}

type Delta = Result<DesiredState, DesiredError>;

fn pairs(v: &[(String, String)]) -> impl Iterator<Item = (&str, Option<&str>)> {
    v.iter().map(|(k, v)| (k.as_str(), Some(v.as_str())))
}

fn entries(m: &BTreeMap<String, String>) -> impl Iterator<Item = (&str, Option<&str>)> {
    m.iter().map(|(k, v)| (k.as_str(), Some(v.as_str())))
}

fn keys(v: &[String]) -> impl Iterator<Item = (&str, Option<&str>)> {
    v.iter().map(|k| (k.as_str(), None))
}

/// `current` with `rm` removed, then `add` set.
fn edited(
    mut current: BTreeMap<String, String>,
    add: &[(String, String)],
    rm: &[String],
) -> BTreeMap<String, String> {
    for key in rm {
        current.remove(key);
    }
    current.extend(add.iter().cloned());
    current
}

impl DesiredState {
    /// `docker stack deploy`: creates the services in `services`, updates the live ones in place
    /// (writing only fields that differ), and removes live services of `stack` that the list
    /// lacks. Each service's `name` must be `STACK_...` and its `stack` must be `stack`.
    pub fn deploy_stack(&mut self, stack: &str, services: Vec<ServiceDef>, hlc: Hlc) -> Delta {
        check_name("stack", stack)?;
        if services.is_empty() {
            return Err(DesiredError::EmptyStack(stack.to_string()));
        }
        let mut names = BTreeSet::new();
        for def in &services {
            self.check_def(stack, def)?;
            if !names.insert(def.name.as_str()) {
                return Err(DesiredError::DuplicateService(def.name.clone()));
            }
        }
        let mut delta = DesiredState::default();
        let absent = ServiceEntry::default();
        for def in &services {
            let current = self.services.get(&def.name).unwrap_or(&absent);
            let written = current.write_def(def, !current.is_live(), hlc);
            delta.services.insert(def.name.clone(), written);
        }
        for (name, entry) in &self.services {
            if entry.is_live() && entry.stack() == stack && !names.contains(name.as_str()) {
                delta.services.insert(name.clone(), entry.tombstone(hlc));
            }
        }
        Ok(self.apply(delta))
    }

    fn check_def(&self, stack: &str, def: &ServiceDef) -> Result<(), DesiredError> {
        check_name("service", &def.name)?;
        let in_stack = def
            .name
            .strip_prefix(stack)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|rest| !rest.is_empty());
        if def.stack != stack || !in_stack {
            return Err(DesiredError::WrongStack {
                service: def.name.clone(),
                stack: stack.to_string(),
            });
        }
        if def.spec.image.is_empty() {
            return Err(DesiredError::EmptyImage(def.name.clone()));
        }
        check_replicas(&def.name, def.replicas)?;
        let spec = &def.spec;
        check_keys("env var", entries(&spec.env))?;
        check_keys("label", entries(&spec.labels))?;
        check_keys("container label", entries(&spec.container_labels))?;
        match self.services.get(&def.name) {
            Some(e) if e.is_live() && e.stack() != stack => Err(DesiredError::NameTaken {
                service: def.name.clone(),
                stack: e.stack(),
            }),
            _ => Ok(()),
        }
    }

    /// `docker stack rm`: removes every live service of `stack`.
    pub fn remove_stack(&mut self, stack: &str, hlc: Hlc) -> Delta {
        let mut delta = DesiredState::default();
        for (name, entry) in &self.services {
            if entry.is_live() && entry.stack() == stack {
                delta.services.insert(name.clone(), entry.tombstone(hlc));
            }
        }
        if delta.is_empty() {
            return Err(DesiredError::UnknownStack(stack.to_string()));
        }
        Ok(self.apply(delta))
    }

    /// `docker service rm`.
    pub fn remove_service(&mut self, name: &str, hlc: Hlc) -> Delta {
        let entry = self.live(name)?;
        let mut delta = DesiredState::default();
        delta
            .services
            .insert(name.to_string(), entry.tombstone(hlc));
        Ok(self.apply(delta))
    }

    /// `docker service scale NAME=REPLICAS`. Writes nothing if the count is already `replicas`.
    pub fn scale(&mut self, name: &str, replicas: u64, hlc: Hlc) -> Delta {
        self.update_service(
            name,
            ServiceUpdate {
                replicas: Some(replicas),
                ..ServiceUpdate::default()
            },
            hlc,
        )
    }

    /// `docker service update`: applies `update`'s changes to a live service, writing only the
    /// registers whose value changes (plus the force counter when `update.force`).
    pub fn update_service(&mut self, name: &str, update: ServiceUpdate, hlc: Hlc) -> Delta {
        let current = self.live(name)?;
        let spec = current.spec();
        if let Some(replicas) = update.replicas {
            if spec.mode == Mode::Global {
                return Err(DesiredError::NotReplicated(name.to_string()));
            }
            check_replicas(name, replicas)?;
        }
        if update.image.as_deref() == Some("") {
            return Err(DesiredError::EmptyImage(name.to_string()));
        }
        check_keys(
            "env var",
            pairs(&update.env_add).chain(keys(&update.env_rm)),
        )?;
        check_keys(
            "label",
            pairs(&update.label_add).chain(keys(&update.label_rm)),
        )?;
        let (cl_add, cl_rm) = (&update.container_label_add, &update.container_label_rm);
        check_keys("container label", pairs(cl_add).chain(keys(cl_rm)))?;

        let c = current;
        let mut d = ServiceEntry::default();
        if let Some(image) = update.image {
            put(&mut d.image, &c.image, image, false, hlc);
        }
        if let Some(replicas) = update.replicas {
            put(&mut d.replicas, &c.replicas, replicas, false, hlc);
        }
        let env = edited(spec.env, &update.env_add, &update.env_rm);
        put_map(&mut d.env, &c.env, &env, false, hlc);
        let labels = edited(spec.labels, &update.label_add, &update.label_rm);
        put_map(&mut d.labels, &c.labels, &labels, false, hlc);
        let cl = edited(spec.container_labels, cl_add, cl_rm);
        put_map(
            &mut d.container_labels,
            &c.container_labels,
            &cl,
            false,
            hlc,
        );
        let mut placement = spec.placement;
        placement
            .constraints
            .retain(|k| !update.constraint_rm.contains(k));
        for k in update.constraint_add {
            if !placement.constraints.contains(&k) {
                placement.constraints.push(k);
            }
        }
        put(&mut d.placement, &c.placement, placement, false, hlc);
        if let Some(h) = update.healthcheck {
            put(&mut d.healthcheck, &c.healthcheck, Some(h), false, hlc);
        }
        if let Some(u) = update.update_config {
            put(&mut d.update_config, &c.update_config, u, false, hlc);
        }
        if let Some(r) = update.rollback_config {
            put(&mut d.rollback_config, &c.rollback_config, r, false, hlc);
        }
        if let Some(r) = update.restart_policy {
            put(&mut d.restart_policy, &c.restart_policy, r, false, hlc);
        }
        if update.force {
            let bumped = c.force().saturating_add(1);
            put(&mut d.force, &c.force, bumped, true, hlc);
        }
        c.record_rollout(&mut d, hlc);
        let mut delta = DesiredState::default();
        if !d.is_empty() {
            delta.services.insert(name.to_string(), d);
        }
        Ok(self.apply(delta))
    }

    /// `docker node update`: sets availability and labels of `node` (`label_rm` first, then
    /// `label_add`). Any id is accepted; checking that the node exists is the caller's job.
    pub fn update_node(
        &mut self,
        node: NodeId,
        availability: Option<Availability>,
        label_add: Vec<(String, String)>,
        label_rm: Vec<String>,
        hlc: Hlc,
    ) -> Delta {
        check_keys("node label", pairs(&label_add).chain(keys(&label_rm)))?;
        let absent = NodeEntry::default();
        let current = self.nodes.get(&node).unwrap_or(&absent);
        let mut d = NodeEntry::default();
        if let Some(a) = availability {
            put(&mut d.availability, &current.availability, a, false, hlc);
        }
        let labels = edited(current.labels(), &label_add, &label_rm);
        put_map(&mut d.labels, &current.labels, &labels, false, hlc);
        let mut delta = DesiredState::default();
        if !d.is_empty() {
            delta.nodes.insert(node, d);
        }
        Ok(self.apply(delta))
    }

    fn live(&self, name: &str) -> Result<&ServiceEntry, DesiredError> {
        match self.services.get(name) {
            Some(e) if e.is_live() => Ok(e),
            _ => Err(DesiredError::UnknownService(name.to_string())),
        }
    }

    fn apply(&mut self, delta: DesiredState) -> DesiredState {
        self.merge_delta(delta.clone());
        delta
    }
}
