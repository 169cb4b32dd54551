//! Placement, remembered between reconcile rounds.
//!
//! A node reconciles every time a container changes, a report arrives or a timer fires, yet the
//! inputs of placement (the live members, and each service's mode, placement spec and replica
//! count) change only on a deploy, a scale or a membership change. Recomputing every service's
//! placement each round was most of an idle node's CPU and of the simulator's time, so the
//! reconciler keeps the last answer per service and reuses it while its inputs compare equal.
//!
//! The key is the inputs themselves, not a stamp such as the service's last-write HLC: a merge can
//! bring in a field written earlier than the newest one, changing the spec without changing that
//! stamp.

use std::collections::BTreeMap;

use super::placement::{place, NodeFacts, Placement};
use crate::{
    desired::{
        spec::{Mode, PlacementSpec},
        state::ServiceView,
    },
    identity::NodeId,
    observed::SlotKey,
};

/// What one service's placement was computed from, besides the node list.
#[derive(Debug, PartialEq)]
struct Key {
    mode: Mode,
    placement: PlacementSpec,
    replicas: u64,
    keep: BTreeMap<SlotKey, NodeId>,
}

/// Last placement per service, valid for one node list.
#[derive(Debug, Default)]
pub struct PlacementMemo {
    nodes: Vec<NodeFacts>,
    services: BTreeMap<String, (Key, Placement)>,
}

impl PlacementMemo {
    /// Starts a round over `nodes`: a different node list invalidates every placement.
    pub fn set_nodes(&mut self, nodes: &[NodeFacts]) {
        if self.nodes != nodes {
            self.nodes = nodes.to_vec();
            self.services.clear();
        }
    }

    /// Placement of `service` on the round's nodes given the slots paused nodes `keep`;
    /// computed only when an input differs from the last call for this service.
    pub fn get(&mut self, service: &ServiceView, keep: BTreeMap<SlotKey, NodeId>) -> &Placement {
        let key = Key {
            mode: service.spec.mode,
            placement: service.spec.placement.clone(),
            replicas: service.replicas,
            keep,
        };
        let fresh = self
            .services
            .get(&service.name)
            .is_some_and(|(k, _)| *k == key);
        if !fresh {
            let placement = place(
                &service.name,
                &service.spec,
                service.replicas,
                &self.nodes,
                &key.keep,
            );
            self.services.insert(service.name.clone(), (key, placement));
        }
        &self.services[&service.name].1
    }

    /// Whether the last placement of `service` gives `slot` an owner.
    pub fn owns(&self, service: &str, slot: &SlotKey) -> bool {
        self.services
            .get(service)
            .is_some_and(|(_, p)| p.owners.contains_key(slot))
    }

    /// Forgets services that are no longer desired.
    pub fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.services.retain(|name, _| live(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{
        hlc::Hlc,
        spec::{Availability, ServiceSpec},
    };

    fn service(replicas: u64) -> ServiceView {
        ServiceView {
            name: "app_web".into(),
            stack: "app".into(),
            replicas,
            spec: ServiceSpec::default(),
            version: Hlc::ZERO,
            force: 0,
            updated: Hlc::ZERO,
            update_status: None,
            can_roll_back: false,
        }
    }

    /// Whatever the order of changes, the memo answers what `place` answers.
    #[test]
    fn always_agrees_with_place() {
        let mut memo = PlacementMemo::default();
        let mut nodes = vec![
            NodeFacts::plain(1),
            NodeFacts::plain(2),
            NodeFacts::plain(3),
        ];
        let mut svc = service(5);
        let check = |memo: &mut PlacementMemo, svc: &ServiceView, nodes: &[NodeFacts]| {
            let want = place(&svc.name, &svc.spec, svc.replicas, nodes, &BTreeMap::new());
            memo.set_nodes(nodes);
            assert_eq!(memo.get(svc, BTreeMap::new()), &want);
        };
        check(&mut memo, &svc, &nodes);
        check(&mut memo, &svc, &nodes);
        svc.replicas = 9;
        check(&mut memo, &svc, &nodes);
        nodes.push(NodeFacts::plain(4));
        check(&mut memo, &svc, &nodes);
        nodes[0].availability = Availability::Drain;
        check(&mut memo, &svc, &nodes);
        svc.spec.placement.max_replicas_per_node = Some(2);
        check(&mut memo, &svc, &nodes);
        svc.spec.mode = Mode::Global;
        check(&mut memo, &svc, &nodes);
    }
}
