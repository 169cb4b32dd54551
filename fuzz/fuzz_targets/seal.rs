//! Arbitrary bytes into the sealed-datagram opener: as they come, and spliced behind a genuine
//! header (so the tag check and the replay guard see them). Opening must refuse them without
//! panicking or allocating more than the packet, and a forgery must never enter the guard.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_core::seal::{self, GossipKey, Keyring, ReplayGuard};

fuzz_target!(|data: &[u8]| {
    let ring = Keyring::new(1, GossipKey([3; 32]));
    let mut guard = ReplayGuard::new(8);
    let _ = seal::open_checked(&ring, &mut guard, data);

    // A genuine packet with its body replaced by the input: the tag must catch it.
    let genuine = seal::seal(&ring, 1, 1, 0, [0; seal::NONCE_BYTES], b"x").unwrap();
    let mut spliced = genuine[..seal::HEADER_BYTES].to_vec();
    spliced.extend_from_slice(data);
    if spliced.len() >= seal::SEAL_OVERHEAD && spliced != genuine {
        let refused = seal::open_checked(&ring, &mut guard, &spliced);
        assert!(refused.is_err());
    }
    assert!(guard.is_empty() || data == &genuine[..]);

    // And the inputs that do decode (none should) go on to the plain envelope.
    if let Ok(opened) = seal::open(&ring, data) {
        let _ = shoal_core::wire::open(&opened.plaintext);
    }
});
