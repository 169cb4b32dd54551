//! Arbitrary bytes into every decoder that reads from the network or the API socket: gossip
//! datagrams (envelope, SWIM, leave notices), desired-state gossip items, and framed API and peer
//! messages. Each must return an error, never panic, hang or allocate without bound. Datagrams
//! are also sealed under the node's own keyring first, so the bytes reach the decoders behind
//! the seal, as a member's would.
#![no_main]

use std::{net::SocketAddr, sync::Arc};

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use shoal_core::{api::{self, PeerRequest, PeerResponse, Request, Response}, desired::state::DesiredState, identity::{NodeId, NodeIdentity, NodeMeta}, membership::{sealing::GossipSeal, Membership, Settings}, replica::Replica, seal::{GossipKey, Keyring}, wire};

fuzz_target!(|data: &[u8]| {
    let addr: SocketAddr = "127.0.0.1:7946".parse().unwrap();
    let identity = NodeIdentity {
        addr,
        id: NodeId(1),
        generation: 1,
        meta: Arc::new(NodeMeta::unknown(addr)),
    };
    let keyring = Keyring::new(1, GossipKey([7; 32]));
    let mut membership = Membership::new(
        identity,
        Settings::default(),
        rand::rngs::StdRng::seed_from_u64(1),
        keyring.clone(),
    );
    let _ = membership.handle_packet(data, 0);
    // The same bytes sealed by another member, bare and behind a valid envelope, reach the
    // SWIM and leave decoders.
    let mut peer = GossipSeal::new(keyring, NodeId(2), 1);
    for plain in [
        data.to_vec(),
        wire::seal(wire::PacketKind::Swim, data),
        wire::seal(wire::PacketKind::Leave, data),
    ] {
        if let Ok(sealed) = peer.seal(&plain) {
            let _ = membership.handle_packet(&sealed, 0);
        }
    }

    let mut replica = Replica::new(NodeId(1), DesiredState::default(), 0);
    let _ = replica.receive_gossip(data, 0);
    let _ = wire::decode::<DesiredState>(data);
    let _ = api::unframe::<Request>(data);
    let _ = api::unframe::<Response>(data);
    let _ = api::unframe::<PeerRequest>(data);
    let _ = api::unframe::<PeerResponse>(data);
});
