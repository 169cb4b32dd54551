//! Deterministic simulation of SWIM membership: many nodes in one thread, virtual clock, seeds.

use shoal_core::{
    membership::NodeStatus,
    sim::{Sim, SimConfig},
};

fn boot(n: usize, seed: u64, loss: f64) -> Sim {
    let mut sim = Sim::new(
        n,
        SimConfig {
            seed,
            loss,
            ..SimConfig::default()
        },
    );
    sim.start(0, &[]);
    for i in 1..n {
        // Everyone joins through one seed, a few at a time, as operators start nodes.
        sim.start(i, &[0]);
        if i % 10 == 0 {
            sim.run_for(50);
        }
    }
    sim
}

#[test]
fn hundred_and_twenty_members_join_crash_and_rejoin() {
    let n = 120;
    let mut sim = boot(n, 7, 0.0);
    let joined = sim.run_until(30_000, 100, |s| s.converged(NodeStatus::Down));
    assert!(joined.is_some(), "membership did not converge after joins");

    // Crash a tenth of the cluster without a goodbye.
    let victims: Vec<usize> = (0..n).filter(|i| i % 10 == 3).collect();
    for &v in &victims {
        sim.crash(v);
    }
    let detected = sim.run_until(60_000, 100, |s| s.converged(NodeStatus::Down));
    assert!(detected.is_some(), "crashes were not detected everywhere");

    // Restart them with their remembered peers only (no seed), as an agent restarts with its
    // data dir: same id, next generation.
    for &v in &victims {
        sim.start(v, &[]);
    }
    let rejoined = sim.run_until(30_000, 100, |s| s.converged(NodeStatus::Down));
    assert!(
        rejoined.is_some(),
        "restarted members did not rejoin everywhere"
    );
    assert!(sim.rejected() < sim.report.packets_sent / 100);
}

#[test]
fn graceful_stop_shows_left_not_down() {
    let mut sim = boot(20, 3, 0.0);
    assert!(sim
        .run_until(20_000, 100, |s| s.converged(NodeStatus::Down))
        .is_some());
    sim.stop(5);
    let took = sim.run_until(5_000, 10, |s| s.all_see(5, NodeStatus::Left));
    assert!(took.is_some(), "a graceful stop was not seen as left");
    // And it stays left: the failure detector must not turn it into down later.
    sim.run_for(30_000);
    assert!(sim.all_see(5, NodeStatus::Left));
}

#[test]
fn converges_under_loss_for_many_seeds() {
    for seed in 0..20 {
        let mut sim = boot(30, seed, 0.05);
        let joined = sim.run_until(60_000, 200, |s| s.converged(NodeStatus::Down));
        assert!(
            joined.is_some(),
            "seed {seed}: no convergence under 5% loss"
        );
        sim.crash(7);
        let detected = sim.run_until(60_000, 200, |s| s.converged(NodeStatus::Down));
        assert!(
            detected.is_some(),
            "seed {seed}: crash not detected under loss"
        );
    }
}

#[test]
fn partition_heals_by_itself() {
    let mut sim = boot(10, 11, 0.0);
    assert!(sim
        .run_until(20_000, 100, |s| s.converged(NodeStatus::Down))
        .is_some());
    split_and_heal(&mut sim, &[&[0, 1, 2, 3], &[4, 5, 6, 7, 8, 9]], "seed 11");
}

/// A partition after which every node renews its identity at once (both sides tell the other
/// it is down in the same instant, as some seeds make them) must heal too: then no peer
/// addresses anyone's new identity, and only the renewed nodes' own announces reconnect them.
#[test]
fn partitions_heal_for_many_seeds() {
    // Seed 178 is one where every node renews at once.
    for seed in 160..200 {
        let mut sim = boot(5, seed, 0.0);
        assert!(sim
            .run_until(20_000, 100, |s| s.converged(NodeStatus::Down))
            .is_some());
        split_and_heal(&mut sim, &[&[0, 1], &[2, 3, 4]], &format!("seed {seed}"));
    }
}

fn split_and_heal(sim: &mut Sim, sides: &[&[usize]], what: &str) {
    let other_side = sides[1].len();
    sim.partition(sides);
    // Each side declares the other down.
    let split = sim.run_until(60_000, 200, |s| {
        s.view(sides[0][0])
            .iter()
            .filter(|v| v.status == NodeStatus::Down)
            .count()
            == other_side
    });
    assert!(
        split.is_some(),
        "{what}: the sides did not see each other down"
    );
    sim.heal();
    let merged = sim.run_until(60_000, 200, |s| s.converged(NodeStatus::Down));
    assert!(
        merged.is_some(),
        "{what}: the partition did not heal by itself"
    );
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut sim = boot(25, seed, 0.02);
        sim.run_for(10_000);
        sim.crash(4);
        sim.run_for(10_000);
        (
            sim.report.packets_sent,
            sim.report.bytes_sent,
            sim.view(1)
                .iter()
                .map(|v| (v.identity.id, v.status))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(run(42), run(42));
}
