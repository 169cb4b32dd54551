//! Desired-state benchmark: how long one change takes to reach every node (5 real agents; 100 and
//! 1,000 simulated), what it costs on the wire, and what anti-entropy costs with 1,000 services.
//! Run with `cargo bench --bench desired`; `SHOAL_BENCH_SIM_SIZES=100,1000` picks the sizes.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use shoal_core::{
    desired::{
        hlc::Hlc,
        spec::{PortSpec, ServiceDef, ServiceSpec},
        state::DesiredState,
    },
    identity::NodeId,
    membership::NodeStatus,
    sim::{Sim, SimConfig},
    wire,
};

fn service(stack: &str, name: &str, replicas: u64) -> ServiceDef {
    let mut spec = ServiceSpec {
        image: "shoal-demo:v1".into(),
        ..ServiceSpec::default()
    };
    spec.env.insert("GREETING".into(), "hello".into());
    spec.labels.insert(
        "traefik.backend.loadbalancer.stickiness".into(),
        "true".into(),
    );
    // Every service publishes a port of its own: two services may not share one.
    static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(10_000);
    let published = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    spec.ports.push(PortSpec {
        target: 8080,
        published: Some(published),
        protocol: Default::default(),
        mode: Default::default(),
    });
    ServiceDef {
        name: format!("{stack}_{name}"),
        stack: stack.into(),
        replicas,
        spec,
    }
}

fn sim_figures(n: usize) {
    let wall = Instant::now();
    let mut sim = Sim::new(n, SimConfig::default());
    sim.start(0, &[]);
    for i in 1..n {
        sim.start(i, &[0]);
        if i % 20 == 0 {
            sim.run_for(100);
        }
    }
    sim.run_until(600_000, 250, |s| s.converged(NodeStatus::Down))
        .expect("membership converges");
    // Let the join backlog drain so the bytes below are the change's own.
    sim.run_for(60_000);
    let idle_start = sim.report.bytes_sent;
    sim.run_for(5_000);
    let idle_rate = (sim.report.bytes_sent - idle_start) as f64 / 5.0;

    let bytes_before = sim.report.bytes_sent;
    let t0 = sim.now_ms();
    sim.change(0, |s, hlc| {
        s.deploy_stack("app", vec![service("app", "web", 3)], hlc)
    })
    .expect("deploy");
    let took = sim
        .run_until(60_000, 5, |s| {
            (0..s.len()).all(|i| s.desired(i).service("app_web").is_some())
        })
        .expect("change reaches everyone");
    let window = (sim.now_ms() - t0) as f64 / 1000.0;
    let extra = (sim.report.bytes_sent - bytes_before) as f64 - idle_rate * window;
    let delta = sim.desired(0).clone();
    let delta_bytes = wire::encode(&delta).map(|b| b.len()).unwrap_or(0);
    println!(
        "sim n={n:>5}: one deploy seen by all in {took:>5} ms | delta {delta_bytes} B | \
         gossip bytes above idle for the change: {:.0} B total, {:.0} B/node | wall {:.1}s",
        extra.max(0.0),
        extra.max(0.0) / n as f64,
        wall.elapsed().as_secs_f64()
    );
}

fn anti_entropy_figures() {
    let mut state = DesiredState::default();
    let node = NodeId(7);
    // Ten stacks of a hundred: each stack has a default network, and the default address pool
    // holds 16 of them.
    for stack in 0..10 {
        let services = (0..100)
            .map(|i| service(&format!("s{stack}"), &format!("svc{i}"), 3))
            .collect();
        let hlc = Hlc {
            wall_ms: 1_000 + stack,
            counter: 0,
            node,
        };
        state
            .deploy_stack(&format!("s{stack}"), services, hlc)
            .expect("deploy");
    }
    let bytes = wire::encode(&state).expect("encode");
    let t = Instant::now();
    let rounds = 100;
    for _ in 0..rounds {
        std::hint::black_box(state.digest());
    }
    let digest_us = t.elapsed().as_micros() as f64 / rounds as f64;
    let t = Instant::now();
    let mut copy = DesiredState::default();
    copy.merge_delta(state.clone());
    let merge_empty = t.elapsed();
    let t = Instant::now();
    let mut same = state.clone();
    let changed = same.merge_delta(state.clone());
    let merge_same = t.elapsed();
    assert!(!changed);
    let t = Instant::now();
    let decoded: DesiredState = wire::decode(&bytes).expect("decode");
    let decode = t.elapsed();
    assert_eq!(decoded.digest(), state.digest());
    println!(
        "anti-entropy, 1,000 services: full state {:.1} KiB | digest {:.0} us | decode {:?} | \
         merge into empty {:?} | merge into equal {:?} | in-sync round: 32 B digest + membership",
        bytes.len() as f64 / 1024.0,
        digest_us,
        decode,
        merge_empty,
        merge_same
    );
}

fn real_figures() {
    let root = tempfile::tempdir().unwrap();
    let agents = common::start_cluster(
        common::agents_on(root.path(), &common::FIVE_HOSTS, "n"),
        Duration::from_secs(30),
    );
    let file = root.path().join("stack.yml");
    let mut samples = Vec::new();
    for round in 0..5 {
        std::fs::write(
            &file,
            format!(
                "services:\n  web:\n    image: shoal-demo:v1\n    deploy:\n      replicas: {}\n",
                round + 1
            ),
        )
        .unwrap();
        let t = Instant::now();
        let out = agents[0].cli(&["stack", "deploy", "-c", file.to_str().unwrap(), "app"]);
        assert!(out.status.success());
        let cli = t.elapsed();
        common::wait_for(Duration::from_secs(10), || {
            agents[4].replicas_of("app_web") == Some(round + 1)
        })
        .expect("seen on n5");
        samples.push((cli, t.elapsed()));
    }
    for (cli, seen) in &samples {
        println!(
            "real 5 agents: stack deploy on n1 returned after {:>4} ms; visible on n5 after {:>4} ms",
            cli.as_millis(),
            seen.as_millis()
        );
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("SHOAL_BENCH_SIM_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| if full { vec![100, 1000] } else { vec![10] });
    anti_entropy_figures();
    for n in sizes {
        sim_figures(n);
    }
    if full {
        real_figures();
    }
}
