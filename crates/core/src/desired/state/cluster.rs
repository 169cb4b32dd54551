//! The cluster's own secrets and its revocations, replicated with the desired state.
//!
//! - **Gossip keys** by id (the keyring every datagram is sealed with) and the **join secret**
//!   a token proves: last-writer-wins registers, so `cluster rotate-key` and
//!   `cluster join-token --rotate` on any node reach every node.
//! - **Removed nodes**: a grow-only set (union on merge), so a removal made anywhere sticks
//!   everywhere and nothing brings the node back.
//!
//! None of it ever rides on UDP gossip, not even sealed: a node removed from the cluster still
//! holds the current gossip key until the rotation that its removal starts completes, and must
//! not read the new key. These registers travel only over mutually authenticated QUIC (pushes
//! and anti-entropy), where a removed node's certificate is refused, and
//! `Replica::receive_gossip` drops any that a gossip item would carry. No API answer shows
//! them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    reg::{check_reg, marker, merge_reg, Reg},
    DesiredState, MergeConflict,
};
use crate::{desired::hlc::Hlc, identity::NodeId, seal::GossipKey, trust::token::JoinSecret};

/// The cluster entry's registers; `None` means never written (on this replica, or in a delta:
/// not part of it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ClusterEntry {
    /// Gossip keys by id. Each node seals with the newest one every live member holds.
    pub gossip_keys: Option<Reg<BTreeMap<u32, GossipKey>>>,
    /// What a join token's secret must be.
    pub join_secret: Option<Reg<JoinSecret>>,
    /// Nodes removed from the cluster (`node rm`): their certificates are refused for good.
    pub removed: BTreeSet<NodeId>,
}

impl ClusterEntry {
    pub fn is_empty(&self) -> bool {
        *self == ClusterEntry::default()
    }

    pub fn updated(&self) -> Option<Hlc> {
        marker(&self.gossip_keys).max(marker(&self.join_secret))
    }

    pub fn merge(&mut self, other: ClusterEntry) -> bool {
        let before = self.removed.len();
        self.removed.extend(other.removed);
        merge_reg(&mut self.gossip_keys, other.gossip_keys)
            | merge_reg(&mut self.join_secret, other.join_secret)
            | (self.removed.len() != before)
    }

    pub fn check(&self, other: &ClusterEntry) -> Result<(), MergeConflict> {
        check_reg(
            "cluster.gossip_keys",
            self.gossip_keys.as_ref(),
            other.gossip_keys.as_ref(),
        )?;
        check_reg(
            "cluster.join_secret",
            self.join_secret.as_ref(),
            other.join_secret.as_ref(),
        )
    }
}

impl DesiredState {
    /// The cluster's gossip keys by id (empty before the cluster's trust was written).
    pub fn gossip_keys(&self) -> BTreeMap<u32, GossipKey> {
        self.cluster
            .gossip_keys
            .as_ref()
            .map(|r| r.val.clone())
            .unwrap_or_default()
    }

    /// The secret join tokens must prove, once written.
    pub fn join_secret(&self) -> Option<JoinSecret> {
        self.cluster.join_secret.as_ref().map(|r| r.val.clone())
    }

    /// Nodes removed from the cluster.
    pub fn removed_nodes(&self) -> &BTreeSet<NodeId> {
        &self.cluster.removed
    }

    /// Whether this state (a delta) carries any of the cluster's secrets or revocations: such a
    /// delta travels over QUIC only.
    pub fn has_cluster_entry(&self) -> bool {
        !self.cluster.is_empty()
    }

    /// Only the cluster entry (to pass it on over QUIC, where gossip may not carry it).
    pub fn cluster_part(&self) -> DesiredState {
        DesiredState {
            cluster: self.cluster.clone(),
            ..DesiredState::default()
        }
    }

    /// Drops the cluster entry (from a gossip item, where it never belongs).
    pub fn without_cluster_entry(mut self) -> DesiredState {
        self.cluster = ClusterEntry::default();
        self
    }

    /// Writes the cluster's first trust: its gossip key (id 1) and join secret. Done once, by
    /// the node that starts a new cluster; a no-op on a state that has them.
    pub fn init_trust(&mut self, key: GossipKey, secret: JoinSecret, hlc: Hlc) -> DesiredState {
        let mut delta = DesiredState::default();
        if self.cluster.gossip_keys.is_none() {
            let keys = Reg {
                val: BTreeMap::from([(1, key)]),
                marker: hlc,
            };
            self.cluster.gossip_keys = Some(keys.clone());
            delta.cluster.gossip_keys = Some(keys);
        }
        if self.cluster.join_secret.is_none() {
            let reg = Reg {
                val: secret,
                marker: hlc,
            };
            self.cluster.join_secret = Some(reg.clone());
            delta.cluster.join_secret = Some(reg);
        }
        delta
    }

    /// Adds a gossip key with the next id: nodes start sealing with it once every live member
    /// holds it, and older keys are retired after that ([`DesiredState::retire_gossip_keys`]).
    pub fn add_gossip_key(&mut self, key: GossipKey, hlc: Hlc) -> DesiredState {
        let mut keys = self.gossip_keys();
        let id = keys.keys().next_back().map_or(1, |id| id + 1);
        keys.insert(id, key);
        self.write_keys(keys, hlc)
    }

    /// Keeps only the gossip keys from id `newest` on: the older ones stop opening datagrams.
    pub fn retire_gossip_keys(&mut self, newest: u32, hlc: Hlc) -> DesiredState {
        let keys: BTreeMap<u32, GossipKey> = self
            .gossip_keys()
            .into_iter()
            .filter(|(id, _)| *id >= newest)
            .collect();
        self.write_keys(keys, hlc)
    }

    fn write_keys(&mut self, keys: BTreeMap<u32, GossipKey>, hlc: Hlc) -> DesiredState {
        let reg = Reg {
            val: keys,
            marker: hlc,
        };
        self.cluster.gossip_keys = Some(reg.clone());
        let mut delta = DesiredState::default();
        delta.cluster.gossip_keys = Some(reg);
        delta
    }

    /// Replaces the join secret: tokens with the old one stop working at once, as Swarm's
    /// `join-token --rotate` does.
    pub fn rotate_join_secret(&mut self, secret: JoinSecret, hlc: Hlc) -> DesiredState {
        let reg = Reg {
            val: secret,
            marker: hlc,
        };
        self.cluster.join_secret = Some(reg.clone());
        let mut delta = DesiredState::default();
        delta.cluster.join_secret = Some(reg);
        delta
    }

    /// Removes node `id` from the cluster for good.
    pub fn remove_node(&mut self, id: NodeId) -> DesiredState {
        self.cluster.removed.insert(id);
        let mut delta = DesiredState::default();
        delta.cluster.removed.insert(id);
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(wall_ms: u64) -> Hlc {
        Hlc {
            wall_ms,
            counter: 0,
            node: NodeId(1),
        }
    }

    #[test]
    fn rotation_adds_the_next_id_and_retirement_keeps_the_newest() {
        let mut s = DesiredState::default();
        s.init_trust(GossipKey([1; 32]), JoinSecret([9; 16]), at(1));
        assert_eq!(s.gossip_keys().keys().copied().collect::<Vec<_>>(), [1]);
        let delta = s.add_gossip_key(GossipKey([2; 32]), at(2));
        assert!(delta.has_cluster_entry());
        assert_eq!(s.gossip_keys().keys().copied().collect::<Vec<_>>(), [1, 2]);
        s.retire_gossip_keys(2, at(3));
        assert_eq!(s.gossip_keys().keys().copied().collect::<Vec<_>>(), [2]);
        // A second init changes nothing.
        assert!(!s
            .init_trust(GossipKey([7; 32]), JoinSecret([7; 16]), at(4))
            .has_cluster_entry());
    }

    #[test]
    fn removals_are_a_grow_only_set() {
        let mut a = DesiredState::default();
        let mut b = DesiredState::default();
        let da = a.remove_node(NodeId(5));
        let db = b.remove_node(NodeId(6));
        a.merge_delta(db);
        b.merge_delta(da);
        assert_eq!(a.removed_nodes(), b.removed_nodes());
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.removed_nodes().len(), 2);
    }

    #[test]
    fn gossip_items_never_carry_the_cluster_entry() {
        let mut s = DesiredState::default();
        let delta = s.init_trust(GossipKey([1; 32]), JoinSecret([9; 16]), at(1));
        assert!(!delta.without_cluster_entry().has_cluster_entry());
    }
}
