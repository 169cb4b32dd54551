//! What sealing a gossip datagram costs, measured in the calling process: shared by the seal
//! benchmark and the membership benchmark (which weighs it against the agents' idle traffic).

use std::time::Instant;

use shoal_core::seal::{self, GossipKey, Keyring, ReplayGuard, Sealer};

/// Nanoseconds per datagram of `bytes` bytes.
pub struct SealCost {
    /// Seal (encrypt and tag).
    pub seal_ns: f64,
    /// Open: tag check, decrypt and replay window.
    pub open_ns: f64,
    /// Refuse a forged datagram (tag check fails; the window is untouched).
    #[allow(dead_code)] // printed by the seal benchmark only
    pub forged_ns: f64,
}

pub fn measure(bytes: usize, iterations: u64) -> SealCost {
    let ring = Keyring::new(1, GossipKey([0x5a; 32]));
    let payload = vec![0xabu8; bytes];
    let mut sealer = Sealer::new(7, 1);

    // Nonces vary per packet as in the agent; deriving them from the counter keeps the CSPRNG's
    // cost out of the figure (the agent pays it separately).
    let nonce = |i: u64| {
        let mut n = [0u8; seal::NONCE_BYTES];
        n[..8].copy_from_slice(&i.to_le_bytes());
        n
    };

    let start = Instant::now();
    let mut packets = Vec::with_capacity(iterations as usize);
    for i in 0..iterations {
        packets.push(sealer.seal(&ring, &payload, nonce(i)).expect("fits"));
    }
    let seal_ns = start.elapsed().as_nanos() as f64 / iterations as f64;

    let mut guard = ReplayGuard::default();
    let start = Instant::now();
    let mut opened = 0usize;
    for packet in &packets {
        opened += seal::open_checked(&ring, &mut guard, packet)
            .expect("authentic")
            .plaintext
            .len();
    }
    let open_ns = start.elapsed().as_nanos() as f64 / iterations as f64;
    assert_eq!(opened, payload.len() * iterations as usize);

    let mut forged = packets[0].clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let start = Instant::now();
    for _ in 0..iterations {
        assert!(seal::open_checked(&ring, &mut guard, &forged).is_err());
    }
    let forged_ns = start.elapsed().as_nanos() as f64 / iterations as f64;
    SealCost {
        seal_ns,
        open_ns,
        forged_ns,
    }
}
