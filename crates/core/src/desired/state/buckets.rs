//! The desired state cut into a fixed number of buckets by key, each with its own digest, so
//! that two replicas that differ find out where with one exchange of [`BUCKETS`] short digests
//! and then trade only the entries of the buckets that differ, not their whole states.
//!
//! Every entry (a service, a node's settings, a network, a node's address slot, the cluster's
//! own entry) falls in the bucket its kind and key hash to, the same on every node and build. A
//! bucket's digest covers its entries in the maps' order, so equal buckets have equal digests;
//! the root, a digest of the bucket digests, is what an anti-entropy round compares first.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::DesiredState;

/// How many buckets the state is cut into: 256 digests of 8 bytes are 2 KiB, sent only when
/// the roots differ; with a few thousand services a bucket holds a few dozen.
pub const BUCKETS: usize = 256;

/// A bucket's digest: the first 8 bytes of a SHA-256. Two buckets that differ collide with
/// probability 2^-64, and a collision only delays repair until either side changes again.
pub type BucketDigest = [u8; 8];

/// A state's bucket digests and their root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buckets {
    pub root: [u8; 32],
    pub digests: Vec<BucketDigest>,
}

impl Buckets {
    /// The buckets whose digests differ from `theirs`. A list of another length (a peer that
    /// cuts its state differently) differs everywhere.
    pub fn differing(&self, theirs: &[BucketDigest]) -> BTreeSet<u16> {
        if theirs.len() != self.digests.len() {
            return (0..self.digests.len() as u16).collect();
        }
        self.digests
            .iter()
            .zip(theirs)
            .enumerate()
            .filter(|(_, (mine, theirs))| mine != theirs)
            .map(|(i, _)| i as u16)
            .collect()
    }
}

/// What kind of entry a key names: part of what is hashed, so that a service and a network of
/// the same name fall in unrelated buckets.
#[derive(Clone, Copy)]
enum Kind {
    Service = 1,
    Node = 2,
    Network = 3,
    Host = 4,
    Cluster = 5,
}

/// The bucket of an entry: FNV-1a of its kind and key. Not a digest, only a spread: it must be
/// the same on every node and build (it is part of the protocol) and cheap, since refreshing a
/// bucket runs it over every key of the state.
fn bucket_of(kind: Kind, key: &[u8]) -> u16 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in std::iter::once(kind as u8).chain(key.iter().copied()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    (hash % BUCKETS as u64) as u16
}

/// Feeds one entry into its bucket's hasher, if that bucket is being computed.
fn feed(hashers: &mut BTreeMap<u16, Sha256>, kind: Kind, key: &[u8], entry: &impl Serialize) {
    let Some(hasher) = hashers.get_mut(&bucket_of(kind, key)) else {
        return;
    };
    hasher.update([kind as u8]);
    hasher.update((key.len() as u32).to_be_bytes());
    hasher.update(key);
    bincode::serde::encode_into_std_write(entry, hasher, bincode::config::standard())
        .expect("writing to a hasher cannot fail");
}

fn root_of(digests: &[BucketDigest]) -> [u8; 32] {
    let mut root = Sha256::new();
    for digest in digests {
        root.update(digest);
    }
    root.finalize().into()
}

impl Buckets {
    /// Replaces the digests of some buckets (see [`DesiredState::bucket_digests`]) and
    /// recomputes the root.
    pub fn update(&mut self, fresh: BTreeMap<u16, BucketDigest>) {
        for (bucket, digest) in fresh {
            self.digests[bucket as usize] = digest;
        }
        self.root = root_of(&self.digests);
    }
}

impl DesiredState {
    /// The state's bucket digests and root.
    pub fn buckets(&self) -> Buckets {
        let all: BTreeSet<u16> = (0..BUCKETS as u16).collect();
        let digests: Vec<BucketDigest> = self.bucket_digests(&all).into_values().collect();
        Buckets {
            root: root_of(&digests),
            digests,
        }
    }

    /// The digests of `which` buckets only: what a change to a few entries needs recomputed.
    /// Costs one cheap hash per key of the state, and a digest of the entries in `which`.
    pub fn bucket_digests(&self, which: &BTreeSet<u16>) -> BTreeMap<u16, BucketDigest> {
        let mut hashers: BTreeMap<u16, Sha256> =
            which.iter().map(|&b| (b, Sha256::new())).collect();
        for (name, entry) in &self.services {
            feed(&mut hashers, Kind::Service, name.as_bytes(), entry);
        }
        for (node, entry) in &self.nodes {
            feed(&mut hashers, Kind::Node, &node.0.to_be_bytes(), entry);
        }
        for (name, entry) in &self.networks {
            feed(&mut hashers, Kind::Network, name.as_bytes(), entry);
        }
        for (node, slot) in &self.hosts {
            feed(&mut hashers, Kind::Host, &node.0.to_be_bytes(), slot);
        }
        if !self.cluster.is_empty() {
            feed(&mut hashers, Kind::Cluster, &[], &self.cluster);
        }
        hashers
            .into_iter()
            .map(|(bucket, hasher)| {
                let full = hasher.finalize();
                let mut short = [0; 8];
                short.copy_from_slice(&full[..8]);
                (bucket, short)
            })
            .collect()
    }

    /// The buckets that this state's entries fall in: for a delta, the buckets whose digests
    /// merging it may change.
    pub fn touched_buckets(&self) -> BTreeSet<u16> {
        let services = self
            .services
            .keys()
            .map(|name| bucket_of(Kind::Service, name.as_bytes()));
        let nodes = self
            .nodes
            .keys()
            .map(|node| bucket_of(Kind::Node, &node.0.to_be_bytes()));
        let networks = self
            .networks
            .keys()
            .map(|name| bucket_of(Kind::Network, name.as_bytes()));
        let hosts = self
            .hosts
            .keys()
            .map(|node| bucket_of(Kind::Host, &node.0.to_be_bytes()));
        let cluster = (!self.cluster.is_empty()).then(|| bucket_of(Kind::Cluster, &[]));
        services
            .chain(nodes)
            .chain(networks)
            .chain(hosts)
            .chain(cluster)
            .collect()
    }

    /// The entries that fall in `buckets`: what a peer whose buckets differ there is sent.
    pub fn in_buckets(&self, buckets: &BTreeSet<u16>) -> DesiredState {
        if buckets.is_empty() {
            return DesiredState::default();
        }
        let has = |kind, key: &[u8]| buckets.contains(&bucket_of(kind, key));
        DesiredState {
            services: self
                .services
                .iter()
                .filter(|(name, _)| has(Kind::Service, name.as_bytes()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            nodes: self
                .nodes
                .iter()
                .filter(|(node, _)| has(Kind::Node, &node.0.to_be_bytes()))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            networks: self
                .networks
                .iter()
                .filter(|(name, _)| has(Kind::Network, name.as_bytes()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            hosts: self
                .hosts
                .iter()
                .filter(|(node, _)| has(Kind::Host, &node.0.to_be_bytes()))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            cluster: if has(Kind::Cluster, &[]) {
                self.cluster.clone()
            } else {
                Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        desired::{
            hlc::Hlc,
            spec::{ServiceDef, ServiceSpec},
        },
        identity::NodeId,
    };

    fn at(wall_ms: u64) -> Hlc {
        Hlc {
            wall_ms,
            counter: 0,
            node: NodeId(1),
        }
    }

    fn state(services: usize) -> DesiredState {
        let defs = (0..services)
            .map(|i| ServiceDef {
                name: format!("app_s{i}"),
                stack: "app".into(),
                replicas: 1,
                spec: ServiceSpec {
                    image: "demo:1".into(),
                    ..ServiceSpec::default()
                },
            })
            .collect();
        let mut s = DesiredState::default();
        s.deploy_stack("app", defs, at(1)).unwrap();
        s
    }

    #[test]
    fn equal_states_have_equal_buckets_and_one_change_touches_one_bucket() {
        let a = state(200);
        let mut b = a.clone();
        assert_eq!(a.buckets(), b.buckets());
        b.scale("app_s7", 3, at(2)).unwrap();
        let (ours, theirs) = (a.buckets(), b.buckets());
        assert_ne!(ours.root, theirs.root);
        let differing = ours.differing(&theirs.digests);
        assert_eq!(differing.len(), 1);
        // What the other side sends for that bucket repairs this one.
        let mut repaired = a.clone();
        repaired.merge_delta(b.in_buckets(&differing));
        assert_eq!(repaired, b);
        assert_eq!(repaired.buckets(), theirs);
    }

    #[test]
    fn refreshing_the_buckets_a_delta_touches_gives_the_full_digests() {
        let mut s = state(50);
        let mut buckets = s.buckets();
        let delta = s.scale("app_s3", 4, at(2)).unwrap();
        buckets.update(s.bucket_digests(&delta.touched_buckets()));
        assert_eq!(buckets, s.buckets());
        let delta = s.remove_stack("app", at(3)).unwrap();
        buckets.update(s.bucket_digests(&delta.touched_buckets()));
        assert_eq!(buckets, s.buckets());
    }

    #[test]
    fn every_entry_is_in_exactly_one_bucket() {
        let s = state(200);
        let all: BTreeSet<u16> = (0..BUCKETS as u16).collect();
        assert_eq!(s.in_buckets(&all), s);
        let mut union = DesiredState::default();
        let mut total = 0;
        for b in 0..BUCKETS as u16 {
            let part = s.in_buckets(&BTreeSet::from([b]));
            total += part.stored_services();
            union.merge_delta(part);
        }
        assert_eq!(total, 200);
        assert_eq!(union, s);
    }

    #[test]
    fn a_list_of_another_length_differs_everywhere() {
        let s = state(3).buckets();
        assert_eq!(s.differing(&[[0; 8]; 4]).len(), BUCKETS);
        assert!(s.differing(&s.digests).is_empty());
    }
}
