//! The hashes placement ranks with. They are part of the cluster's protocol: every node must
//! compute bit-identical scores, across platforms and agent versions, so they are spelled out here
//! (SplitMix64's finaliser, SHA-256 for the service name) instead of borrowing `std`'s hasher, whose
//! output is neither stable across releases nor the same on every machine.

use sha2::{Digest, Sha256};

use crate::identity::NodeId;

/// SplitMix64's finaliser: a bijection on `u64` with full avalanche, cheap enough to call ten
/// million times per recompute.
pub(super) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Per-service seed, so that services spread independently of one another.
pub(super) fn service_seed(service: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"shoal/placement/v1\0")
        .chain_update(service.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// A node's key in the rankings (the same for every service; the slot key carries the service).
pub(super) fn node_key(id: NodeId) -> u64 {
    mix((id.0 as u64) ^ mix((id.0 >> 64) as u64))
}

/// A spread group's key: the label value (or its absence) at one depth of the preference list.
pub(super) fn group_key(depth: usize, value: Option<&str>) -> u64 {
    // FNV-1a: stable, and group keys are few, so its weakness as a hash does not matter once mixed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value.map(str::as_bytes).unwrap_or(b"\xff<missing>") {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h ^ mix(depth as u64 ^ 0x5eed))
}

/// A replica slot's key within its service.
pub(super) fn slot_key(seed: u64, slot: u64) -> u64 {
    mix(seed ^ mix(slot))
}

/// Rendezvous score of (slot, node-or-group): the higher, the more the slot wants it.
pub(super) fn score(slot: u64, item: u64) -> u64 {
    mix(slot ^ item)
}
