//! The operations: each validates, then writes registers stamped with the caller's HLC and
//! returns them as a delta (already merged into the state).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    entry::{router_ports, NodeEntry, ServiceEntry},
    error::{check_keys, check_name, check_replicas, MAX_SERVICES},
    reg::{put, put_map},
    DesiredError, DesiredState,
};
use crate::{
    desired::{
        hlc::Hlc,
        spec::{
            Availability, Constraint, HealthcheckSpec, Mode, NetworkDef, PortSpec, Protocol,
            RestartPolicy, ServiceDef, UpdateConfig,
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
    /// Replaces the ports (`--publish-add`/`--publish-rm`, applied by the caller to the current
    /// list). Refused if it would publish a port another live service publishes.
    pub ports: Option<Vec<PortSpec>>,
    /// `--force`: replace every replica even if nothing else changes.
    pub force: bool,
}

type Delta = Result<DesiredState, DesiredError>;

/// A published port as the ingress keys it.
type PortKey = (Protocol, u16);

/// The published ports of `ports`.
fn published(ports: &[PortSpec]) -> impl Iterator<Item = PortKey> + '_ {
    ports
        .iter()
        .filter_map(|p| p.published.map(|n| (p.protocol, n)))
}

/// Records the published ports of `service` in `held`, or refuses one that another service holds
/// or that `ports` lists twice. `own` are the ports the service publishes now: if a concurrent
/// write elsewhere gave one of them to another service too (both sides of a partition may accept
/// a port), keeping it does not make that worse, and the ingress already routes it to one agreed
/// winner; refusing would only block every redeploy of the stack.
fn claim_ports(
    held: &mut BTreeMap<PortKey, String>,
    service: &str,
    ports: &[PortSpec],
    own: &BTreeSet<PortKey>,
) -> Result<(), DesiredError> {
    let mut seen = BTreeSet::new();
    for key @ (protocol, port) in published(ports) {
        if !seen.insert(key) {
            return Err(DesiredError::PortTwice {
                service: service.to_string(),
                port,
                protocol,
            });
        }
        match held.get(&key) {
            Some(holder) if holder != service && !own.contains(&key) => {
                return Err(DesiredError::PortTaken {
                    service: service.to_string(),
                    port,
                    protocol,
                    holder: holder.clone(),
                })
            }
            Some(_) => {}
            None => {
                held.insert(key, service.to_string());
            }
        }
    }
    Ok(())
}

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
    /// `docker stack deploy --prune` of a stack that declares no networks: see
    /// [`DesiredState::deploy_stack_with`].
    pub fn deploy_stack(&mut self, stack: &str, services: Vec<ServiceDef>, hlc: Hlc) -> Delta {
        self.deploy_stack_with(stack, Vec::new(), services, true, hlc)
    }

    /// `docker stack deploy --prune` with the stack's declared networks.
    pub fn deploy_stack_with_networks(
        &mut self,
        stack: &str,
        networks: Vec<NetworkDef>,
        services: Vec<ServiceDef>,
        hlc: Hlc,
    ) -> Delta {
        self.deploy_stack_with(stack, networks, services, true, hlc)
    }

    /// `docker stack deploy [--prune]`: creates the services in `services`, updates the live
    /// ones in place (writing only fields that differ), and, when `prune` is set, removes live
    /// services of `stack` that the list lacks (Docker's default keeps them). Each service's
    /// `name` must be `STACK_...` and its `stack` must be `stack`.
    ///
    /// `networks` are the stack's declared networks. A service that names no network is attached
    /// to `STACK_default`; the networks the services use are created if they do not exist
    /// (external ones must), and each service claims a virtual address on each (see
    /// `network.rs`).
    pub fn deploy_stack_with(
        &mut self,
        stack: &str,
        networks: Vec<NetworkDef>,
        mut services: Vec<ServiceDef>,
        prune: bool,
        hlc: Hlc,
    ) -> Delta {
        check_name("stack", stack)?;
        if services.is_empty() {
            return Err(DesiredError::EmptyStack(stack.to_string()));
        }
        let mut delta = DesiredState::default();
        self.deploy_networks(stack, &networks, &mut services, &mut delta, hlc)?;
        let mut names = BTreeSet::new();
        for def in &services {
            self.check_def(stack, def)?;
            if !names.insert(def.name.as_str()) {
                return Err(DesiredError::DuplicateService(def.name.clone()));
            }
        }
        // Every live service of the stack is either in the file, removed by this deploy or kept
        // as it is (no prune): the file's services claim their ports in order over the others'.
        let kept = |name: &str| !prune && !names.contains(name);
        let mut held = self.port_holders(|name, e| e.stack() != stack || kept(name));
        for def in &services {
            let own = self.own_ports(&def.name);
            claim_ports(&mut held, &def.name, &def.spec.ports, &own)?;
        }
        let absent = ServiceEntry::default();
        for def in &services {
            let current = self.services.get(&def.name).unwrap_or(&absent);
            let written = current.write_def(def, !current.is_live(), hlc);
            delta.services.insert(def.name.clone(), written);
        }
        for (name, entry) in &self.services {
            let gone = entry.is_live() && entry.stack() == stack && !names.contains(name.as_str());
            if gone && prune {
                delta.services.insert(name.clone(), entry.tombstone(hlc));
            }
        }
        self.apply(delta)
    }

    /// `docker service create`: a service of no stack (`def.stack` empty). Refused if a live
    /// service has the name, a port it publishes is taken, or a network it names does not
    /// exist.
    pub fn create_service(&mut self, def: ServiceDef, hlc: Hlc) -> Delta {
        check_name("service", &def.name)?;
        if !def.stack.is_empty() {
            return Err(DesiredError::WrongStack {
                service: def.name.clone(),
                stack: String::new(),
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
        if self.live(&def.name).is_ok() {
            return Err(DesiredError::ServiceExists(def.name.clone()));
        }
        // A service of no stack has nothing that would create its networks (Docker refuses it
        // the same way): attached to a missing one, it would run cut off from it.
        for a in spec.network_attachments() {
            if !self.networks.get(&a.network).is_some_and(|e| e.is_live()) {
                return Err(DesiredError::UnknownNetwork(a.network));
            }
        }
        let mut held = self.port_holders(|_, _| true);
        claim_ports(&mut held, &def.name, &def.spec.ports, &BTreeSet::new())?;
        let absent = ServiceEntry::default();
        let current = self.services.get(&def.name).unwrap_or(&absent);
        let written = current.write_def(&def, true, hlc);
        let mut delta = DesiredState::default();
        delta.services.insert(def.name.clone(), written);
        self.apply(delta)
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

    /// `docker stack rm`: removes every live service of `stack`, and the networks the stack
    /// created that no other stack's live service uses.
    pub fn remove_stack(&mut self, stack: &str, hlc: Hlc) -> Delta {
        let mut delta = DesiredState::default();
        let mut leaving = BTreeSet::new();
        for (name, entry) in &self.services {
            if entry.is_live() && entry.stack() == stack {
                delta.services.insert(name.clone(), entry.tombstone(hlc));
                leaving.insert(name.clone());
            }
        }
        if delta.is_empty() {
            return Err(DesiredError::UnknownStack(stack.to_string()));
        }
        self.stack_network_tombstones(stack, &leaving, &mut delta, hlc);
        self.apply(delta)
    }

    /// `docker service rm`.
    pub fn remove_service(&mut self, name: &str, hlc: Hlc) -> Delta {
        let entry = self.live(name)?;
        let mut delta = DesiredState::default();
        delta
            .services
            .insert(name.to_string(), entry.tombstone(hlc));
        self.apply(delta)
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
        if let Some(ports) = &update.ports {
            let mut held = self.port_holders(|other, _| other != name);
            claim_ports(&mut held, name, ports, &self.own_ports(name))?;
        }

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
        let labels = edited(spec.labels.clone(), &update.label_add, &update.label_rm);
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
        if let Some(p) = update.ports {
            put(&mut d.ports, &c.ports, p, false, hlc);
        }
        let new_ports = d.ports.as_ref().map_or(&spec.ports, |r| &r.val);
        let routed_changed =
            router_ports(&spec.labels, &spec.ports) != router_ports(&labels, new_ports);
        if update.force || routed_changed {
            c.bump_force(&mut d, hlc);
        }
        c.record_rollout(&mut d, hlc);
        let mut delta = DesiredState::default();
        if !d.is_empty() {
            delta.services.insert(name.to_string(), d);
        }
        self.apply(delta)
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
        self.apply(delta)
    }

    /// Who publishes each port, among the live services that `counted` selects. Host-mode ports
    /// are included: two host-mode services on one port would fail to start side by side on any
    /// node placement put both on (placement does not know ports), and a host-mode port equal to
    /// an ingress port collides with the ingress listener on every node. Where services publish
    /// the same port already (concurrent writes), the first by name is named.
    fn port_holders(
        &self,
        counted: impl Fn(&str, &ServiceEntry) -> bool,
    ) -> BTreeMap<PortKey, String> {
        let mut held = BTreeMap::new();
        for (name, entry) in &self.services {
            if entry.is_live() && counted(name, entry) {
                for key in published(&entry.spec().ports) {
                    held.entry(key).or_insert_with(|| name.clone());
                }
            }
        }
        held
    }

    /// The ports `name` publishes now, if it is live.
    fn own_ports(&self, name: &str) -> BTreeSet<PortKey> {
        match self.services.get(name) {
            Some(e) if e.is_live() => published(&e.spec().ports).collect(),
            _ => BTreeSet::new(),
        }
    }

    fn live(&self, name: &str) -> Result<&ServiceEntry, DesiredError> {
        match self.services.get(name) {
            Some(e) if e.is_live() => Ok(e),
            _ => Err(DesiredError::UnknownService(name.to_string())),
        }
    }

    /// Merges a write after checking what it leaves: every service it touches within the
    /// limits a write must keep (`ServiceEntry::check_limits`), and no more than
    /// [`MAX_SERVICES`] live services. A refused write changes nothing.
    pub(super) fn apply(&mut self, delta: DesiredState) -> Delta {
        let (mut created, mut removed) = (0, 0);
        for (name, theirs) in &delta.services {
            let mut after = self.services.get(name).cloned().unwrap_or_default();
            let was_live = after.is_live();
            after.merge(theirs.clone());
            if after.is_live() {
                after.check_limits(name)?;
            }
            created += usize::from(!was_live && after.is_live());
            removed += usize::from(was_live && !after.is_live());
        }
        if created > removed {
            let live = self.services.values().filter(|e| e.is_live()).count();
            let count = live + created - removed;
            if count > MAX_SERVICES {
                return Err(DesiredError::TooManyServices { count });
            }
        }
        self.merge_delta(delta.clone());
        Ok(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{
        spec::{PublishMode, ServiceSpec},
        state::error::{MAX_ENTRIES, MAX_REPLICAS},
    };

    fn at(wall_ms: u64) -> Hlc {
        Hlc {
            wall_ms,
            counter: 0,
            node: NodeId(1),
        }
    }

    fn port(published: Option<u16>, protocol: Protocol, mode: PublishMode) -> PortSpec {
        PortSpec {
            target: 80,
            published,
            protocol,
            mode,
        }
    }

    fn tcp(published: u16) -> PortSpec {
        port(Some(published), Protocol::Tcp, PublishMode::Ingress)
    }

    fn def(stack: &str, svc: &str, ports: Vec<PortSpec>) -> ServiceDef {
        ServiceDef {
            name: format!("{stack}_{svc}"),
            stack: stack.into(),
            replicas: 1,
            spec: ServiceSpec {
                image: "demo:1".into(),
                ports,
                ..ServiceSpec::default()
            },
        }
    }

    fn solo(name: &str) -> ServiceDef {
        ServiceDef {
            name: name.into(),
            stack: String::new(),
            replicas: 1,
            spec: ServiceSpec {
                image: "demo:1".into(),
                ..ServiceSpec::default()
            },
        }
    }

    #[test]
    fn the_cluster_holds_at_most_max_services_live_services() {
        let mut s = DesiredState::default();
        // Filled without the per-write checks (the state a cluster at its limit holds).
        let mut full = DesiredState::default();
        for i in 0..MAX_SERVICES {
            let name = format!("s{i}");
            let entry = ServiceEntry::default().write_def(&solo(&name), true, at(1));
            full.services.insert(name, entry);
        }
        s.merge_delta(full);
        refused(
            &mut s,
            |s| s.create_service(solo("one-more"), at(2)),
            DesiredError::TooManyServices {
                count: MAX_SERVICES + 1,
            },
        );
        // Removing one makes room; updating one at the limit is fine.
        s.remove_service("s0", at(3)).unwrap();
        s.create_service(solo("one-more"), at(4)).unwrap();
        s.scale("s1", 3, at(5)).unwrap();
    }

    #[test]
    fn a_service_list_longer_than_max_entries_is_refused() {
        let mut s = DesiredState::default();
        let mut big = solo("big");
        big.spec.env = (0..=MAX_ENTRIES)
            .map(|i| (format!("K{i}"), "v".to_string()))
            .collect();
        refused(
            &mut s,
            |s| s.create_service(big, at(1)),
            DesiredError::TooManyEntries {
                service: "big".into(),
                what: "env vars",
                count: MAX_ENTRIES + 1,
            },
        );
        // Nor can updates grow one past it, a few at a time.
        let mut ok = solo("ok");
        ok.spec.env = (0..MAX_ENTRIES)
            .map(|i| (format!("K{i}"), "v".to_string()))
            .collect();
        s.create_service(ok, at(2)).unwrap();
        refused(
            &mut s,
            |s| {
                s.update_service(
                    "ok",
                    ServiceUpdate {
                        env_add: vec![("ONE_MORE".into(), "v".into())],
                        ..ServiceUpdate::default()
                    },
                    at(3),
                )
            },
            DesiredError::TooManyEntries {
                service: "ok".into(),
                what: "env vars",
                count: MAX_ENTRIES + 1,
            },
        );
    }

    #[test]
    fn a_peer_entry_that_breaks_the_rules_is_left_out() {
        let mut bad = DesiredState::default();
        let mut def = solo("huge");
        def.replicas = MAX_REPLICAS + 1;
        bad.services.insert(
            "huge".into(),
            ServiceEntry::default().write_def(&def, true, at(1)),
        );
        bad.services.insert(
            "bad name!".into(),
            ServiceEntry::default().write_def(&solo("bad name!"), true, at(1)),
        );
        bad.services.insert(
            "fine".into(),
            ServiceEntry::default().write_def(&solo("fine"), true, at(1)),
        );
        let (kept, refused) = bad.without_invalid();
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert_eq!(kept.services.keys().collect::<Vec<_>>(), ["fine"]);
    }

    /// Asserts that `op` fails with `expected` and leaves the state as it was.
    #[track_caller]
    fn refused(
        state: &mut DesiredState,
        op: impl FnOnce(&mut DesiredState) -> Delta,
        expected: DesiredError,
    ) {
        let before = state.clone();
        assert_eq!(op(state), Err(expected));
        assert_eq!(*state, before, "a refused operation changed the state");
    }

    fn taken(service: &str, port: u16, protocol: Protocol, holder: &str) -> DesiredError {
        DesiredError::PortTaken {
            service: service.into(),
            port,
            protocol,
            holder: holder.into(),
        }
    }

    #[test]
    fn another_stack_cannot_take_a_published_port() {
        let mut s = DesiredState::default();
        s.deploy_stack("shop", vec![def("shop", "web", vec![tcp(8080)])], at(1))
            .unwrap();
        refused(
            &mut s,
            |s| s.deploy_stack("blog", vec![def("blog", "web", vec![tcp(8080)])], at(2)),
            taken("blog_web", 8080, Protocol::Tcp, "shop_web"),
        );
        let e = taken("blog_web", 8080, Protocol::Tcp, "shop_web").to_string();
        assert!(e.contains("8080/tcp") && e.contains("shop_web"), "{e}");
        // Another number, or the same number over UDP, is free.
        s.deploy_stack("blog", vec![def("blog", "web", vec![tcp(8081)])], at(3))
            .unwrap();
        let udp = port(Some(8080), Protocol::Udp, PublishMode::Ingress);
        s.deploy_stack("dns", vec![def("dns", "srv", vec![udp])], at(4))
            .unwrap();
    }

    #[test]
    fn two_services_of_one_deploy_cannot_share_a_port() {
        let mut s = DesiredState::default();
        let both = vec![
            def("shop", "web", vec![tcp(80)]),
            def("shop", "api", vec![tcp(81), tcp(80)]),
        ];
        refused(
            &mut s,
            |s| s.deploy_stack("shop", both, at(1)),
            taken("shop_api", 80, Protocol::Tcp, "shop_web"),
        );
        let twice = vec![def("shop", "web", vec![tcp(80), tcp(80)])];
        refused(
            &mut s,
            |s| s.deploy_stack("shop", twice, at(2)),
            DesiredError::PortTwice {
                service: "shop_web".into(),
                port: 80,
                protocol: Protocol::Tcp,
            },
        );
    }

    #[test]
    fn a_stack_keeps_and_moves_its_own_ports() {
        let mut s = DesiredState::default();
        let first = vec![
            def("shop", "web", vec![tcp(80)]),
            def("shop", "api", vec![]),
        ];
        s.deploy_stack("shop", first.clone(), at(1)).unwrap();
        s.deploy_stack("shop", first, at(2)).unwrap();
        // The port moves from web to api in one deploy: web gives it up in the same write.
        let moved = vec![
            def("shop", "web", vec![]),
            def("shop", "api", vec![tcp(80)]),
        ];
        s.deploy_stack("shop", moved, at(3)).unwrap();
        // ...or web leaves the stack and the new service takes its port.
        let renamed = vec![def("shop", "front", vec![tcp(80)])];
        s.deploy_stack("shop", renamed, at(4)).unwrap();
        assert_eq!(s.service("shop_front").unwrap().spec.ports, [tcp(80)]);
        assert!(s.service("shop_api").is_none());
    }

    #[test]
    fn removal_frees_the_port() {
        let mut s = DesiredState::default();
        s.deploy_stack("shop", vec![def("shop", "web", vec![tcp(80)])], at(1))
            .unwrap();
        s.remove_stack("shop", at(2)).unwrap();
        s.deploy_stack("blog", vec![def("blog", "web", vec![tcp(80)])], at(3))
            .unwrap();
        s.remove_service("blog_web", at(4)).unwrap();
        s.deploy_stack("wiki", vec![def("wiki", "web", vec![tcp(80)])], at(5))
            .unwrap();
    }

    #[test]
    fn host_mode_ports_conflict_too() {
        let host = |n| port(Some(n), Protocol::Tcp, PublishMode::Host);
        let mut s = DesiredState::default();
        s.deploy_stack("shop", vec![def("shop", "web", vec![host(443)])], at(1))
            .unwrap();
        refused(
            &mut s,
            |s| s.deploy_stack("blog", vec![def("blog", "web", vec![tcp(443)])], at(2)),
            taken("blog_web", 443, Protocol::Tcp, "shop_web"),
        );
        refused(
            &mut s,
            |s| s.deploy_stack("blog", vec![def("blog", "web", vec![host(443)])], at(3)),
            taken("blog_web", 443, Protocol::Tcp, "shop_web"),
        );
    }

    #[test]
    fn unpublished_ports_never_conflict() {
        let exposed = || port(None, Protocol::Tcp, PublishMode::Ingress);
        let mut s = DesiredState::default();
        let two = vec![
            def("shop", "web", vec![exposed()]),
            def("shop", "api", vec![exposed(), exposed()]),
        ];
        s.deploy_stack("shop", two, at(1)).unwrap();
    }

    #[test]
    fn update_cannot_take_a_port() {
        let mut s = DesiredState::default();
        s.deploy_stack("shop", vec![def("shop", "web", vec![tcp(80)])], at(1))
            .unwrap();
        s.deploy_stack("blog", vec![def("blog", "web", vec![tcp(81)])], at(2))
            .unwrap();
        let publish = |ports| ServiceUpdate {
            ports: Some(ports),
            image: Some("demo:2".into()),
            ..ServiceUpdate::default()
        };
        refused(
            &mut s,
            |s| s.update_service("blog_web", publish(vec![tcp(81), tcp(80)]), at(3)),
            taken("blog_web", 80, Protocol::Tcp, "shop_web"),
        );
        let delta = s
            .update_service("blog_web", publish(vec![tcp(81), tcp(82)]), at(4))
            .unwrap();
        assert!(!delta.is_empty());
        assert_eq!(
            s.service("blog_web").unwrap().spec.ports,
            [tcp(81), tcp(82)]
        );
        // Its own ports again: nothing to refuse.
        s.update_service("blog_web", publish(vec![tcp(82)]), at(5))
            .unwrap();
    }

    #[test]
    fn a_port_both_sides_of_a_partition_took_stays_with_both_but_no_third() {
        let mut a = DesiredState::default();
        let mut b = DesiredState::default();
        a.deploy_stack("shop", vec![def("shop", "web", vec![tcp(80)])], at(1))
            .unwrap();
        b.deploy_stack("blog", vec![def("blog", "web", vec![tcp(80)])], at(2))
            .unwrap();
        a.merge_delta(b.clone());
        // Either stack can still be redeployed with its port (the ingress routes it to one
        // agreed winner); the conflict is not made worse, and nobody else may join it.
        a.deploy_stack(
            "shop",
            vec![def("shop", "web", vec![tcp(80), tcp(81)])],
            at(3),
        )
        .unwrap();
        a.deploy_stack("blog", vec![def("blog", "web", vec![tcp(80)])], at(4))
            .unwrap();
        refused(
            &mut a,
            |s| s.deploy_stack("wiki", vec![def("wiki", "web", vec![tcp(80)])], at(5)),
            taken("wiki_web", 80, Protocol::Tcp, "blog_web"),
        );
    }

    #[test]
    fn deploy_keeps_missing_services_unless_pruned() {
        let mut s = DesiredState::default();
        let two = vec![
            def("shop", "web", vec![tcp(80)]),
            def("shop", "api", vec![tcp(81)]),
        ];
        s.deploy_stack_with("shop", vec![], two, false, at(1))
            .unwrap();
        s.deploy_stack_with(
            "shop",
            vec![],
            vec![def("shop", "web", vec![])],
            false,
            at(2),
        )
        .unwrap();
        assert!(s.service("shop_api").is_some(), "kept without --prune");
        // A kept service's port stays taken, even for its own stack.
        refused(
            &mut s,
            |s| {
                s.deploy_stack_with(
                    "shop",
                    vec![],
                    vec![def("shop", "web", vec![tcp(81)])],
                    false,
                    at(3),
                )
            },
            taken("shop_web", 81, Protocol::Tcp, "shop_api"),
        );
        s.deploy_stack_with(
            "shop",
            vec![],
            vec![def("shop", "web", vec![tcp(81)])],
            true,
            at(4),
        )
        .unwrap();
        assert!(s.service("shop_api").is_none(), "removed with --prune");
    }

    #[test]
    fn a_created_service_has_no_stack_and_its_own_name() {
        let mut s = DesiredState::default();
        let mut solo = def("x", "y", vec![tcp(8080)]);
        solo.name = "web".into();
        solo.stack = String::new();
        s.create_service(solo.clone(), at(1)).unwrap();
        let view = s.service("web").unwrap();
        assert_eq!((view.stack.as_str(), view.replicas), ("", 1));
        refused(
            &mut s,
            |s| s.create_service(solo.clone(), at(2)),
            DesiredError::ServiceExists("web".into()),
        );
        let mut other = solo.clone();
        other.name = "web2".into();
        refused(
            &mut s,
            |s| s.create_service(other, at(3)),
            taken("web2", 8080, Protocol::Tcp, "web"),
        );
        // A stack cannot deploy over it, nor list it among its services.
        refused(
            &mut s,
            |s| s.deploy_stack("shop", vec![def("shop", "web", vec![tcp(8080)])], at(4)),
            taken("shop_web", 8080, Protocol::Tcp, "web"),
        );
        s.remove_service("web", at(5)).unwrap();
        s.create_service(solo, at(6)).unwrap();
    }

    #[test]
    fn a_removed_node_stays_removed() {
        let mut s = DesiredState::default();
        assert!(!s.node_settings(NodeId(7)).removed);
        let delta = s.remove_node(NodeId(7));
        assert!(!delta.is_empty());
        assert!(s.node_settings(NodeId(7)).removed);
        let mut other = DesiredState::default();
        other.merge_delta(delta);
        assert!(other.node_settings(NodeId(7)).removed);
    }

    #[test]
    fn a_change_of_routed_ports_replaces_the_replicas() {
        let mut s = DesiredState::default();
        s.deploy_stack("shop", vec![def("shop", "web", vec![])], at(1))
            .unwrap();
        let v1 = s.service("shop_web").unwrap().version;
        let route = |port: &str| ServiceUpdate {
            label_add: vec![
                (
                    "traefik.http.routers.w.rule".into(),
                    "PathPrefix(`/`)".into(),
                ),
                (
                    "traefik.http.services.w.loadbalancer.server.port".into(),
                    port.into(),
                ),
            ],
            ..ServiceUpdate::default()
        };
        s.update_service("shop_web", route("8080"), at(2)).unwrap();
        let v2 = s.service("shop_web").unwrap().version;
        assert!(v2 > v1, "a new routed port: replicas must bind it");
        s.update_service("shop_web", route("8080"), at(3)).unwrap();
        assert_eq!(
            s.service("shop_web").unwrap().version,
            v2,
            "same port: no change"
        );
        // Other labels never replace replicas.
        let sticky = ServiceUpdate {
            label_add: vec![("shoal.ingress.sticky".into(), "true".into())],
            ..ServiceUpdate::default()
        };
        s.update_service("shop_web", sticky, at(4)).unwrap();
        assert_eq!(s.service("shop_web").unwrap().version, v2);
        // A redeploy that drops the router changes the routed ports too.
        s.deploy_stack("shop", vec![def("shop", "web", vec![])], at(5))
            .unwrap();
        assert!(s.service("shop_web").unwrap().version > v2);
    }
}
