//! The node's side of the cluster's trust: which gossip key it seals with, the rotation of that
//! key with no downtime, removed nodes, and what a member needs to admit a joiner.
//!
//! # Key rotation
//! 1. `cluster rotate-key` (or `node rm`) adds a key with the next id to the desired state's
//!    cluster entry; it spreads over authenticated QUIC only.
//! 2. Every node opens datagrams with every key the entry holds, and reports which keys it holds
//!    (ids and fingerprints, never the bytes).
//! 3. A node seals with the newest key that every live member reports holding, so nobody ever
//!    seals with a key a live peer cannot open yet: no datagram is refused during a rotation,
//!    hence no false downs.
//! 4. Once every live member holds the newest key, and [`RETIRE_AFTER`] has passed (so that
//!    every node has switched), any node writes the older keys' retirement; datagrams sealed with
//!    them are refused from then on. A removed node, which cannot fetch the new key over QUIC,
//!    is locked out of gossip at that moment.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::{Node, RequestId};
use crate::{
    identity::NodeId,
    membership::NodeStatus,
    observed::KeyMark,
    seal::{GossipKey, Keyring, MAX_KEYS},
    trust::{
        token::{CaDigest, JoinSecret, JoinToken},
        IdStatus,
    },
};

/// How long after every live member holds the newest key the older ones are retired.
pub const RETIRE_AFTER: Duration = Duration::from_secs(10);

/// What the shell needs to decide a join request (it holds the CA key and signs).
#[derive(Clone, Debug)]
pub struct Admission {
    /// What this node knows of the id the joiner claims.
    pub status: IdStatus,
    /// The secret the joiner's proof must be made with (None: this cluster has none yet).
    pub secret: Option<JoinSecret>,
    /// The keyring to hand the new member.
    pub keyring: Keyring,
}

/// A key's mark: its id and a fingerprint of its bytes.
pub fn mark(id: u32, key: &GossipKey) -> KeyMark {
    let digest = Sha256::digest(key.0);
    let mut fingerprint = [0u8; 8];
    fingerprint.copy_from_slice(&digest[..8]);
    KeyMark { id, fingerprint }
}

impl Node {
    /// The marks of the keys this node opens gossip with, for its report.
    pub(super) fn key_marks(&self) -> Vec<KeyMark> {
        let keys = self.replica.state().gossip_keys();
        keys.iter().map(|(id, key)| mark(*id, key)).collect()
    }

    /// Brings the keyring in line with the desired state and the members' reports (see the
    /// module doc), and retires old keys when their time has come.
    pub(super) fn refresh_keyring(&mut self, now_ms: u64) {
        let keys = self.replica.state().gossip_keys();
        if keys.is_empty() {
            // A cluster whose trust was not written yet keeps the keyring it was started with.
            return;
        }
        let me = self.me();
        let live: Vec<NodeId> = self
            .membership
            .nodes()
            .iter()
            .filter(|v| !v.is_self && matches!(v.status, NodeStatus::Ready | NodeStatus::Suspect))
            .map(|v| v.identity.id)
            .collect();
        let observed = &self.workload.observed;
        let held_by_all = |id: u32, key: &GossipKey| {
            let m = mark(id, key);
            live.iter()
                .all(|n| *n == me || observed.get(*n).is_some_and(|r| r.gossip_keys.contains(&m)))
        };
        let current = self.membership.keyring().primary_id();
        let newest = *keys.keys().next_back().expect("not empty");
        let primary = keys
            .iter()
            .rev()
            .find(|(id, key)| held_by_all(**id, key))
            .map(|(id, _)| *id)
            .or_else(|| keys.contains_key(&current).then_some(current))
            .unwrap_or(newest);
        let mut ring = Keyring::new(primary, keys[&primary].clone());
        for (id, key) in keys
            .iter()
            .filter(|(id, _)| **id != primary)
            .take(MAX_KEYS - 1)
        {
            let _ = ring.add(*id, key.clone());
        }
        if ring != *self.membership.keyring() {
            if ring.primary_id() != current {
                info!(key = ring.primary_id(), "gossip: sealing with a new key");
            }
            self.membership.set_keyring(ring);
        }
        // Retirement: the older keys go once everyone has had time to switch to the newest.
        let everyone = keys.len() > 1 && primary == newest && held_by_all(newest, &keys[&newest]);
        match (everyone, self.retire_ready_ms) {
            (false, _) => self.retire_ready_ms = None,
            (true, None) => self.retire_ready_ms = Some(now_ms),
            (true, Some(since)) if now_ms >= since + RETIRE_AFTER.as_millis() as u64 => {
                self.retire_ready_ms = None;
                info!(keep = newest, "gossip: retiring the older keys");
                self.apply_own_change(now_ms, |s, hlc| Ok(s.retire_gossip_keys(newest, hlc)));
            }
            (true, Some(_)) => {}
        }
    }

    /// What the shell needs to decide a join request for `node`.
    pub(super) fn admission(&mut self, id: RequestId, node: NodeId) {
        let status = if self.replica.state().removed_nodes().contains(&node) {
            IdStatus::Revoked
        } else if self.membership.nodes().iter().any(|v| {
            v.identity.id == node && matches!(v.status, NodeStatus::Ready | NodeStatus::Suspect)
        }) {
            IdStatus::Member
        } else {
            IdStatus::Free
        };
        let admission = Admission {
            status,
            secret: self.replica.state().join_secret(),
            keyring: self.membership.keyring().clone(),
        };
        self.effects.admissions.push((id, admission));
    }

    /// The join token of this cluster, as `cluster join-token` prints it.
    pub(super) fn join_token(&self) -> Option<String> {
        let ca: CaDigest = self.ca_digest?;
        let secret = self.replica.state().join_secret()?;
        Some(JoinToken { ca, secret }.reveal())
    }

    /// Notes a change of the removed nodes: they leave the membership and their certificates
    /// are refused.
    pub(super) fn refresh_removed(&mut self, now_ms: u64) {
        let removed = self.replica.state().removed_nodes().clone();
        if removed == self.removed {
            return;
        }
        for id in removed.difference(&self.removed) {
            warn!(node = %id.short(), "node removed from the cluster");
            self.membership.remove(*id, now_ms);
        }
        self.removed = removed.clone();
        self.effects.removed = Some(removed);
    }
}
