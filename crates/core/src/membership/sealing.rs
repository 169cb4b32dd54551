//! Every gossip datagram sealed under the cluster's keyring ([`crate::seal`]), on the way out
//! and on the way in, with the replay guard and the count of what was refused.
//!
//! A datagram that fails here never reaches foca: an outsider without the key cannot join,
//! forge a goodbye, edit a captured packet or plant a phantom member, and a captured packet
//! replayed is refused as a replay. The sealed header also names the sender, authenticated; the
//! membership code checks that the message inside speaks for that same node.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::{
    identity::NodeId,
    seal::{self, Keyring, OpenError, ReplayGuard, SealError, Sealer, NONCE_BYTES},
};

/// Refusals by reason ([`OpenError::reason`], plus `impostor` for a sealed datagram whose
/// message speaks for another node than the one that sealed it).
pub type Refusals = BTreeMap<&'static str, u64>;

/// Seals and opens this node's gossip.
pub struct GossipSeal {
    keyring: Keyring,
    sealer: Sealer,
    guard: ReplayGuard,
    refused: Refusals,
}

impl GossipSeal {
    /// Node `me` in boot `generation` (it grows with every start: see `seal::Sealer`).
    pub fn new(keyring: Keyring, me: NodeId, generation: u64) -> Self {
        GossipSeal {
            keyring,
            sealer: Sealer::new(me.0, generation),
            guard: ReplayGuard::default(),
            refused: Refusals::new(),
        }
    }

    /// Seals a plain datagram (`wire::seal`'s output).
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = self.nonce();
        self.sealer.seal(&self.keyring, plaintext, nonce)
    }

    /// Opens a received datagram; the sender it names is authentic when this succeeds.
    pub fn open(&mut self, packet: &[u8]) -> Result<(NodeId, Vec<u8>), OpenError> {
        match seal::open_checked(&self.keyring, &mut self.guard, packet) {
            Ok(opened) => Ok((NodeId(opened.header.sender), opened.plaintext)),
            Err(e) => {
                self.refuse(e.reason());
                Err(e)
            }
        }
    }

    /// Counts a refusal decided after opening (an impostor).
    pub fn refuse(&mut self, reason: &'static str) {
        *self.refused.entry(reason).or_default() += 1;
    }

    /// What was refused so far, by reason.
    pub fn refused(&self) -> &Refusals {
        &self.refused
    }

    /// The keyring in use.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Replaces the keyring (a rotation reached this node).
    pub fn set_keyring(&mut self, keyring: Keyring) {
        self.keyring = keyring;
    }

    /// Forgets a sender's replay window (it left for good, or was removed).
    pub fn forget(&mut self, sender: NodeId) {
        self.guard.forget(sender.0);
    }

    /// The nonce of the next datagram: derived from the sealed header's own fields (sender,
    /// boot generation, counter), which never repeat, so no two datagrams under one key share
    /// a nonce and no randomness is needed in the pure core. XChaCha20 needs a nonce unique per
    /// key, not a secret one.
    fn nonce(&self) -> [u8; NONCE_BYTES] {
        let mut h = Sha256::new();
        h.update(b"shoal gossip nonce");
        h.update(self.sealer.sender().to_be_bytes());
        h.update(self.sealer.generation().to_be_bytes());
        h.update(self.sealer.next_counter().to_be_bytes());
        let digest = h.finalize();
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&digest[..NONCE_BYTES]);
        nonce
    }
}
