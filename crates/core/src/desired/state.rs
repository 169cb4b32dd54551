//! The desired state as a state-based CRDT ([`DesiredState`]): services and node settings as maps
//! of last-writer-wins registers stamped with [`Hlc`]s, merged field by field.
//!
//! # What survives concurrent writes
//!
//! Stated for an operator who runs commands on different nodes while they cannot talk
//! (a partition), or simply at the same time; once every node has merged every write:
//!
//! 1. **Registers.** A service has one register per field group (stack, image, command,
//!    entrypoint, mode, replicas, ports, healthcheck, placement, update config, rollback config,
//!    restart policy, resources, networks, mounts), one per environment variable, per container
//!    label and per deploy label, a `force` counter and a `deleted` flag. A node has an
//!    availability register and one per label. A removed env var or label is a register holding
//!    "removed", not a missing one, so it too wins or loses by its stamp.
//! 2. **Same register, concurrent writes: the greater HLC wins,** on every node, whatever the order
//!    or number of times the writes arrive. HLC order follows the writers' wall clocks, so "later"
//!    can be wrong by up to the clock skew between the two writers; equal wall times fall back to
//!    the counter and then the node id, an arbitrary but agreed order. The losing write is gone:
//!    no error is reported for it.
//! 3. **Different registers never conflict.** `service update --image` on A and `service scale` on
//!    B: both take effect. A register that one side never wrote keeps the other side's value.
//! 4. **Only changes are written.** An operation writes just the registers whose value it changes,
//!    as seen by the node running it. Re-deploying an unchanged stack file therefore does not undo
//!    a concurrent `scale`, and setting a field to the value it already has cannot override a
//!    concurrent change elsewhere. Two exceptions: a deploy always writes `deleted = false` for
//!    each service in the file (see 6), and `update --force` always bumps the force counter.
//! 5. **Compound fields are one register.** Ports, networks, mounts, placement (all constraints
//!    together), healthcheck, restart policy and update/rollback configs are each replaced whole:
//!    two concurrent `--constraint-add`s of different constraints keep only the later one's list.
//!    Two concurrent `--force`s may raise the counter by one, not two; the service version still
//!    changes (it includes the counter's stamp), so replicas are replaced at least once.
//! 6. **Removal.** A service is live while its `deleted` register holds false. Remove writes true;
//!    only `stack deploy` writes false. Consequences:
//!    - A remove covers the services the node running it knows of: a service created
//!      concurrently elsewhere is not removed by a concurrent `stack rm` of its stack.
//!    - `stack rm S` concurrent with `stack deploy S`: per service, the greater HLC wins. A service
//!      in the deployed file is live if the deploy's stamp is the greater, else removed; a
//!      service only the remove touched stays removed.
//!    - `service scale`/`update` concurrent with a remove: the service stays removed whatever the
//!      stamps, since neither writes `deleted`.
//!    - Tombstones are kept forever (no garbage collection), so merging an old state, or a
//!      delayed delta, never brings a removed service back. The cost is its registers, a few
//!      hundred bytes per removed service.
//!    - Re-creating a removed service by a deploy writes every field and a "removed" register for
//!      each env var or label the deploying node still holds, so the new service starts from the
//!      file. A key that a concurrent update added on another node, unseen by the deploying node,
//!      is not overwritten and survives into the re-created service.
//! 7. **Stacks** are not stored: a stack exists while at least one live service names it.
//!    **Networks** are (a spec, a claimed range, virtual-address claims, a `deleted` flag, and
//!    each node's address-slot claim beside them): see `network.rs` for what deploys and removals
//!    do to them and `crate::net::layout` for how claims become addresses.
//! 8. **Clock trouble.** An operation's writes carry the HLC the caller passes. If a register
//!    already holds a stamp at least that large (a node with a clock far in the future wrote it,
//!    and `Clock::observe` refused to follow; or a stamp was reused), the write carries the
//!    successor of that stamp instead: an acknowledged command always takes effect where it ran,
//!    and beats everything that node had seen. That register then stays ahead of real time, so a
//!    concurrent write elsewhere loses to it until real time catches up.
//!
//! Every operation validates first and returns an error with the state unchanged, or applies
//! its writes and returns them as a delta (a `DesiredState` holding only the written registers)
//! to gossip. Merging deltas and full states is the same join, so deltas may be lost, reordered or
//! duplicated: anti-entropy with full states repairs anything missed.

mod buckets;
mod cluster;
mod entry;
mod error;
mod legacy;
mod network;
mod ops;
mod reg;
mod status;
mod view;

use std::collections::BTreeMap;

use crdts::CvRDT;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use self::{
    buckets::{BucketDigest, Buckets, BUCKETS},
    error::{DesiredError, MergeConflict, MAX_ENTRIES, MAX_REPLICAS, MAX_SERVICES},
    network::NetworkView,
    ops::ServiceUpdate,
    status::{auto_stamp, AutoOutcome, AutoWrite, PreviousSpec, UpdateState, UpdateStatus},
    view::{NodeSettings, ServiceView, StackView},
};
use self::{
    entry::{NodeEntry, ServiceEntry},
    network::{merge_hosts, NetworkEntry},
    reg::Reg,
};
use super::hlc::Hlc;
use crate::identity::NodeId;

/// Services and node settings, each a set of HLC-stamped registers. Also the type of a delta.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// By full service name, removed services included (their tombstones).
    services: BTreeMap<String, ServiceEntry>,
    /// Nodes that ever had a setting written.
    nodes: BTreeMap<NodeId, NodeEntry>,
    /// Networks by full name, removed ones included (`network`).
    networks: BTreeMap<String, NetworkEntry>,
    /// Every node's address-slot claim (`None`: forgotten), see `crate::net::layout`.
    hosts: BTreeMap<NodeId, Reg<Option<u16>>>,
    /// The cluster's secrets and removed nodes ([`cluster`]).
    cluster: cluster::ClusterEntry,
}

impl DesiredState {
    /// A peer's delta without the service entries that break the rules of a local write
    /// (`ServiceEntry::check_limits`), and why each was left out. A node's own writes keep
    /// those rules, so this drops only what a member that does not apply them sent.
    pub fn without_invalid(mut self) -> (DesiredState, Vec<DesiredError>) {
        let mut refused = Vec::new();
        self.services
            .retain(|name, entry| match entry.check_limits(name) {
                Ok(()) => true,
                Err(e) => {
                    refused.push(e);
                    false
                }
            });
        (self, refused)
    }

    /// Joins `delta` (or a whole state) into `self`. Returns true if any register changed, i.e.
    /// `delta` held something new worth passing on.
    pub fn merge_delta(&mut self, delta: DesiredState) -> bool {
        let mut changed = false;
        // Empty entries are skipped so that "absent" and "present but empty" cannot make two
        // replicas with the same registers differ in their digests.
        for (name, entry) in delta.services {
            if !entry.is_empty() {
                changed |= self.services.entry(name).or_default().merge(entry);
            }
        }
        for (node, entry) in delta.nodes {
            if !entry.is_empty() {
                changed |= self.nodes.entry(node).or_default().merge(entry);
            }
        }
        for (name, entry) in delta.networks {
            if !entry.is_empty() {
                changed |= self.networks.entry(name).or_default().merge(entry);
            }
        }
        changed |= merge_hosts(&mut self.hosts, delta.hosts);
        changed |= self.cluster.merge(delta.cluster);
        changed
    }

    /// SHA-256 of the canonical encoding (the bytes `wire::encode` produces). Registers live in
    /// ordered maps, so equal states have equal digests on every node and build.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        // Streams into the hasher: no copy of the state, and no size limit to fail on.
        bincode::serde::encode_into_std_write(self, &mut hasher, bincode::config::standard())
            .expect("writing to a hasher cannot fail");
        hasher.finalize().into()
    }

    /// The greatest stamp in the state, for `Clock::observe` after a merge or a restart.
    pub fn max_hlc(&self) -> Option<Hlc> {
        let services = self.services.values().filter_map(ServiceEntry::updated);
        let nodes = self.nodes.values().filter_map(NodeEntry::updated);
        let networks = self.networks.values().filter_map(NetworkEntry::updated);
        let hosts = self.hosts.values().map(|r| r.marker);
        services
            .chain(nodes)
            .chain(networks)
            .chain(hosts)
            .chain(self.cluster.updated())
            .max()
    }

    /// Whether no register is held (an empty delta: nothing to gossip).
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.nodes.is_empty()
            && self.networks.is_empty()
            && self.hosts.is_empty()
            && self.cluster.is_empty()
    }

    /// Bytes of the wire encoding, to decide whether a delta fits a gossip datagram.
    pub fn encoded_len(&self) -> usize {
        let mut size = bincode::enc::write::SizeWriter::default();
        bincode::serde::encode_into_writer(self, &mut size, bincode::config::standard())
            .expect("counting bytes cannot fail");
        size.bytes_written
    }

    /// How many services are stored, tombstones included (the state's growth).
    pub fn stored_services(&self) -> usize {
        self.services.len()
    }
}

impl CvRDT for DesiredState {
    type Validation = MergeConflict;

    /// Reports a register that holds different values under the same stamp on the two sides
    /// (a stamp was issued twice). Merging anyway is safe: such ties resolve the same on every
    /// node, but one of the two writes is lost.
    fn validate_merge(&self, other: &Self) -> Result<(), MergeConflict> {
        for (name, theirs) in &other.services {
            if let Some(mine) = self.services.get(name) {
                mine.check(name, theirs)?;
            }
        }
        for (node, theirs) in &other.nodes {
            if let Some(mine) = self.nodes.get(node) {
                mine.check(&node.short(), theirs)?;
            }
        }
        for (name, theirs) in &other.networks {
            if let Some(mine) = self.networks.get(name) {
                mine.check(name, theirs)?;
            }
        }
        reg::check_map("hosts", &self.hosts, &other.hosts)?;
        self.cluster.check(&other.cluster)
    }

    fn merge(&mut self, other: Self) {
        self.merge_delta(other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{desired::spec::ServiceDef, wire};

    fn at(wall_ms: u64, node: u128) -> Hlc {
        Hlc {
            wall_ms,
            counter: 0,
            node: NodeId(node),
        }
    }

    fn def(name: &str, replicas: u64) -> ServiceDef {
        ServiceDef {
            name: format!("web_{name}"),
            stack: "web".into(),
            replicas,
            spec: crate::desired::spec::ServiceSpec {
                image: "demo:1".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn digest_is_sha256_of_the_wire_encoding() {
        let mut s = DesiredState::default();
        s.deploy_stack("web", vec![def("a", 2), def("b", 1)], at(1, 1))
            .unwrap();
        let bytes = wire::encode(&s).unwrap();
        assert_eq!(s.digest(), <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert_eq!(s.encoded_len(), bytes.len());
        assert_eq!(wire::decode::<DesiredState>(&bytes).unwrap(), s);
    }

    #[test]
    fn delta_applied_to_the_old_state_gives_the_new_one() {
        let mut s = DesiredState::default();
        s.deploy_stack("web", vec![def("a", 2)], at(1, 1)).unwrap();
        let before = s.clone();
        let delta = s.scale("web_a", 5, at(2, 1)).unwrap();
        let mut replayed = before;
        assert!(replayed.merge_delta(delta.clone()));
        assert_eq!(replayed, s);
        assert!(!replayed.merge_delta(delta), "a duplicate changes nothing");
    }

    #[test]
    fn max_hlc_covers_services_and_nodes() {
        let mut s = DesiredState::default();
        assert_eq!(s.max_hlc(), None);
        s.deploy_stack("web", vec![def("a", 2)], at(1, 1)).unwrap();
        assert_eq!(s.max_hlc(), Some(at(1, 1)));
        let labels = vec![("zone".to_string(), "a".to_string())];
        s.update_node(NodeId(7), None, labels, vec![], at(3, 2))
            .unwrap();
        assert_eq!(s.max_hlc(), Some(at(3, 2)));
    }

    #[test]
    fn empty_entries_do_not_change_the_digest() {
        let mut s = DesiredState::default();
        let mut junk = DesiredState::default();
        junk.services.insert("x_y".into(), ServiceEntry::default());
        junk.nodes.insert(NodeId(3), NodeEntry::default());
        assert!(!s.merge_delta(junk));
        assert_eq!(s.digest(), DesiredState::default().digest());
    }
}
