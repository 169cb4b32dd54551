//! Gossip under attack, in deterministic simulation: from outside the cluster (no key), random
//! datagrams, bit-flipped and truncated copies of captured real packets, exact replays of them,
//! and forged goodbyes (in the clear, or sealed with a key that is not the cluster's). The
//! cluster must not notice: no membership change, no desired-state change, every refusal
//! counted by reason.

use rand::{rngs::StdRng, RngExt, SeedableRng};
use shoal_core::{
    desired::spec::{ServiceDef, ServiceSpec},
    identity::NodeId,
    membership::NodeStatus,
    seal::{self, GossipKey, Keyring},
    sim::{Sim, SimConfig},
    wire::{self, PacketKind},
};

fn formed(n: usize, seed: u64) -> Sim {
    Sim::formed(
        n,
        SimConfig {
            seed,
            ..SimConfig::default()
        },
    )
}

/// Every node's view of every node: (id, generation, status).
fn views(sim: &Sim) -> Vec<Vec<(NodeId, u64, NodeStatus)>> {
    (0..sim.len())
        .map(|i| {
            sim.view(i)
                .into_iter()
                .map(|v| (v.identity.id, v.identity.generation, v.status))
                .collect()
        })
        .collect()
}

/// A goodbye for node `id`, as a member would send it: the plain datagram.
fn goodbye(id: NodeId, generation: u64) -> Vec<u8> {
    wire::seal(
        PacketKind::Leave,
        &wire::encode(&(id, generation)).expect("encodes"),
    )
}

#[test]
fn an_outsider_cannot_change_membership_or_desired_state() {
    let n = 5;
    let mut sim = formed(n, 7);
    let def = ServiceDef {
        name: "app_web".into(),
        stack: "app".into(),
        replicas: 3,
        spec: ServiceSpec {
            image: "shoal-demo:v1".into(),
            ..ServiceSpec::default()
        },
    };
    sim.change(0, |s, hlc| s.deploy_stack("app", vec![def], hlc))
        .unwrap();
    sim.run_for(3_000);
    sim.capture(4_000);
    sim.run_for(20_000);
    let captured = sim.captured();
    assert!(captured.len() > 300, "captured {}", captured.len());
    let before = views(&sim);
    assert!(before
        .iter()
        .all(|v| v.len() == n && v.iter().all(|m| m.2 == NodeStatus::Ready)));
    let digest = sim.desired(0).digest();

    let mut rng = StdRng::seed_from_u64(99);
    let outsider = Keyring::new(1, GossipKey(rng.random()));
    let mut injected = 0u64;
    let mut watch_downs = 0;
    // Over 10 s: 100,000 random datagrams, 20,000 altered captures, every capture replayed,
    // forged goodbyes for every node.
    for step in 0..1_000 {
        for _ in 0..100 {
            let len = rng.random_range(0..1_500);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if rng.random_bool(0.5) && bytes.len() > 3 {
                // Past the first check: the sealed magic and version.
                bytes[..3].copy_from_slice(b"SS\x01");
            }
            sim.inject(rng.random_range(0..n), bytes);
        }
        for _ in 0..20 {
            let (to, packet) = &captured[rng.random_range(0..captured.len())];
            let mut packet = packet.clone();
            if rng.random_bool(0.5) {
                let bit = rng.random_range(0..packet.len() * 8);
                packet[bit / 8] ^= 1 << (bit % 8);
            } else {
                packet.truncate(rng.random_range(0..packet.len()));
            }
            sim.inject(*to, packet);
        }
        for (to, packet) in captured.iter().skip(step * 4).take(4) {
            sim.inject(*to, packet.clone());
        }
        if step % 100 == 0 {
            for target in 0..n {
                let id = sim.node_id(target);
                let generation = sim.view(target)[0].identity.generation;
                for to in 0..n {
                    sim.inject(to, goodbye(id, generation));
                    let sealed = seal::seal(
                        &outsider,
                        id.0,
                        u64::MAX,
                        step as u64,
                        [0; 24],
                        &goodbye(id, generation),
                    )
                    .expect("seals");
                    sim.inject(to, sealed);
                }
            }
        }
        injected += 124;
        sim.run_for(10);
        if views(&sim)
            .iter()
            .flatten()
            .any(|m| m.2 != NodeStatus::Ready)
        {
            watch_downs += 1;
        }
    }
    sim.run_for(20_000);
    assert_eq!(watch_downs, 0, "a node was seen not ready during the storm");
    assert_eq!(views(&sim), before, "membership changed");
    for i in 0..n {
        assert_eq!(
            sim.desired(i).digest(),
            digest,
            "node {i}'s desired state changed"
        );
    }
    let mut refused = std::collections::BTreeMap::new();
    for i in 0..n {
        for (reason, count) in sim.node(i).unwrap().counters().sealed_refused {
            *refused.entry(reason).or_insert(0u64) += count;
        }
    }
    let total: u64 = refused.values().sum();
    println!("injected about {injected} datagrams; refused {total}: {refused:?}");
    assert!(total >= 100_000 + 20_000, "refusals counted: {refused:?}");
    for reason in ["unsealed", "forged", "replay", "unknown_key"] {
        assert!(
            refused.get(reason).copied().unwrap_or(0) > 0,
            "no {reason} refusal: {refused:?}"
        );
    }
}

#[test]
fn a_node_away_during_a_key_rotation_catches_up() {
    use shoal_core::api::Request;
    let n = 5;
    let mut sim = formed(n, 11);
    sim.crash(4);
    assert!(sim
        .run_until(20_000, 50, |s| (0..4)
            .all(|i| s.view(i).iter().any(|v| v.status == NodeStatus::Down)))
        .is_some());
    sim.ask(0, Request::ClusterRotateKey);
    // Every live node switches to the new key and the old one is retired.
    let retired = sim.run_until(60_000, 100, |s| {
        (0..4).all(|i| {
            s.desired(i)
                .gossip_keys()
                .keys()
                .copied()
                .collect::<Vec<_>>()
                == [2]
        })
    });
    assert!(retired.is_some(), "the old key was not retired");
    // Node 4 comes back holding only the retired key: its datagrams are refused, but it gets
    // the new key over QUIC from the peers it remembers, and rejoins.
    sim.start(4, &[]);
    let back = sim.run_until(30_000, 100, |s| {
        s.converged(NodeStatus::Down) && s.desired_converged()
    });
    assert!(back.is_some(), "node 4 did not catch up after the rotation");
    println!("rotation retired after {retired:?}; node 4 back after {back:?}");
}

#[test]
fn a_removed_node_stays_out() {
    use shoal_core::api::{Request, Response};
    let n = 5;
    let mut sim = formed(n, 13);
    let victim = sim.node_id(4);
    let id = sim.ask(
        0,
        Request::NodeRemove {
            node: victim.to_string(),
            force: true,
        },
    );
    sim.run_for(1_000);
    assert!(matches!(sim.answer(0, id), Some(Response::Changed(_))));
    // The others forget it, rotate the key and retire the one it holds; it keeps running and
    // trying (gossip, QUIC), and stays out.
    let out = sim.run_until(60_000, 100, |s| {
        (0..4).all(|i| {
            s.view(i).iter().all(|v| v.identity.id != victim)
                && s.desired(i).gossip_keys().len() == 1
        })
    });
    assert!(
        out.is_some(),
        "the removed node is still listed, or the key was not retired"
    );
    sim.run_for(30_000);
    for i in 0..4 {
        assert!(
            sim.view(i).iter().all(|v| v.identity.id != victim),
            "node {i} lists the removed node again"
        );
    }
    let refused: u64 = (0..4)
        .map(|i| {
            let c = sim.node(i).unwrap().counters().sealed_refused;
            c.get("removed").copied().unwrap_or(0) + c.get("unknown_key").copied().unwrap_or(0)
        })
        .sum();
    assert!(refused > 0, "nothing from the removed node was refused");
}
