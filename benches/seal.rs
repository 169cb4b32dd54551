//! Gossip sealing benchmark: nanoseconds per seal and per open (tag check, decrypt and replay
//! window) of a 1,200-byte datagram, the size of a full foca packet. `cargo bench --bench seal`;
//! under `cargo test --benches` it runs a few iterations as a smoke test.

use std::time::Instant;

use shoal_core::seal::{self, GossipKey, Keyring, ReplayGuard, Sealer};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let iterations: u64 = if full { 200_000 } else { 1_000 };
    let ring = Keyring::new(1, GossipKey([0x5a; 32]));
    let payload = vec![0xabu8; 1_200];
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
    let mut bytes = 0usize;
    for packet in &packets {
        bytes += seal::open_checked(&ring, &mut guard, packet)
            .expect("authentic")
            .plaintext
            .len();
    }
    let open_ns = start.elapsed().as_nanos() as f64 / iterations as f64;
    assert_eq!(bytes, payload.len() * iterations as usize);

    // What an outsider's garbage costs: refused at the tag, the window untouched.
    let mut forged = packets[0].clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let start = Instant::now();
    for _ in 0..iterations {
        assert!(seal::open_checked(&ring, &mut guard, &forged).is_err());
    }
    let forged_ns = start.elapsed().as_nanos() as f64 / iterations as f64;

    println!(
        "seal 1200 B: {seal_ns:.0} ns/packet | open+replay check: {open_ns:.0} ns/packet | \
         forged refused: {forged_ns:.0} ns/packet | overhead {} B | {iterations} iterations",
        seal::SEAL_OVERHEAD
    );
}
