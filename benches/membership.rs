//! Membership benchmark: prints how long it takes until every member sees a join and a crash, in
//! simulation (100 and 1,000 members, virtual time) and with 5 real agents on loopback (wall
//! time), plus the agents' idle RSS and CPU, the part of that CPU that sealing takes, and how
//! long a new node takes to join with a token. Run with `cargo bench --bench membership`.
//! `SHOAL_BENCH_SIM_SIZES=50,100,1000` (the default) picks the simulated sizes.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "shared/seal_cost.rs"]
mod seal_cost;

use std::time::{Duration, Instant};

use shoal_core::{
    membership::NodeStatus,
    sim::{Sim, SimConfig},
};

fn sim_figures(n: usize, seed: u64) {
    let wall = Instant::now();
    let mut sim = Sim::new(
        n + 1,
        SimConfig {
            seed,
            ..SimConfig::default()
        },
    );
    sim.start(0, &[]);
    for i in 1..n {
        sim.start(i, &[0]);
        if i % 20 == 0 {
            sim.run_for(100);
        }
    }
    let boot = sim
        .run_until(600_000, 100, |s| s.converged(NodeStatus::Down))
        .expect("cluster converges");
    // Idle: once the bootstrap's gossip backlog has drained (30 s), over 30 s.
    sim.run_for(30_000);
    let packets_before = sim.report.packets_sent;
    let bytes_before = sim.report.bytes_sent;
    let calls_before = sim.report.call_bytes;
    sim.run_for(30_000);
    let idle_pkts = (sim.report.packets_sent - packets_before) as f64 / 30.0 / n as f64;
    let idle_bytes = (sim.report.bytes_sent - bytes_before) as f64 / 30.0 / n as f64;
    let idle_calls = (sim.report.call_bytes - calls_before) as f64 / 30.0 / n as f64;

    // One more node joins through member 0.
    sim.start(n, &[0]);
    let join = sim
        .run_until(600_000, 50, |s| s.all_see(n, NodeStatus::Ready))
        .expect("join seen everywhere");
    sim.run_for(5_000);
    // And crashes without a goodbye.
    sim.crash(n);
    let crash = sim
        .run_until(600_000, 50, |s| s.all_see(n, NodeStatus::Down))
        .expect("crash seen everywhere");
    println!(
        "sim n={n:>5} seed={seed}: bootstrap converged {:>6} ms | join seen by all {:>5} ms | \
         crash seen by all {:>6} ms | idle gossip {:.1} pkt/s/node, {:.0} B/s/node; QUIC \
         messages {:.0} B/s/node | wall {:.1}s",
        boot,
        join,
        crash,
        idle_pkts,
        idle_bytes,
        idle_calls,
        wall.elapsed().as_secs_f64()
    );
}

fn real_figures() {
    let root = tempfile::tempdir().unwrap();
    let mut agents = common::agents_on(root.path(), &common::FIVE_HOSTS, "n");
    let start = Instant::now();
    for a in agents.iter_mut() {
        a.start();
    }
    let boot = common::wait_for(Duration::from_secs(30), || common::all_ready(&agents, 5))
        .expect("5 agents converge");
    println!(
        "real 5 agents: all 5 ready everywhere {:>5} ms after the first start ({:?} after the last)",
        boot.as_millis(),
        start.elapsed().saturating_sub(boot)
    );

    // Join: restart-free measurement of a fresh 5th member.
    agents[4].kill9();
    common::wait_for(Duration::from_secs(30), || {
        (0..4).all(|i| agents[i].status_of("n5").as_deref() == Some("down"))
    })
    .expect("n5 down");
    agents[4].start();
    let join = common::wait_for(Duration::from_secs(30), || common::all_ready(&agents, 5))
        .expect("rejoin");
    println!(
        "real 5 agents: restarted member ready everywhere {:>5} ms",
        join.as_millis()
    );

    std::thread::sleep(Duration::from_secs(2));
    let before: Vec<(u64, u64)> = agents.iter().map(|a| common::proc_stat(a.pid())).collect();
    let udp_before = udp_out_datagrams();
    let idle = Duration::from_secs(10);
    std::thread::sleep(idle);
    let after: Vec<(u64, u64)> = agents.iter().map(|a| common::proc_stat(a.pid())).collect();
    let udp_after = udp_out_datagrams();
    let hz = 100.0; // USER_HZ on Linux
    let mut cpu_sum = 0.0;
    for (i, (b, a)) in before.iter().zip(after.iter()).enumerate() {
        let cpu = (a.1 - b.1) as f64 / hz / idle.as_secs_f64() * 100.0;
        cpu_sum += cpu;
        println!(
            "real 5 agents: n{} idle RSS {:>6} KiB, CPU {:.2}% of one core",
            i + 1,
            a.0,
            cpu
        );
    }
    // Sealing's share of that idle CPU, same run: every datagram is sealed once by its sender
    // and opened once by its receiver, so each agent pays (seal + open) per datagram it sends,
    // on average. The cost is of a full 1,200-byte datagram (an upper bound: idle probes are
    // ~200 bytes). The host's UDP counter also counts the few datagrams of other processes.
    if let (Some(b), Some(a)) = (udp_before, udp_after) {
        let per_agent = (a - b) as f64 / idle.as_secs_f64() / agents.len() as f64;
        let cost = seal_cost::measure(1_200, 50_000);
        let sealing = per_agent * (cost.seal_ns + cost.open_ns) / 1e9 * 100.0;
        let with = cpu_sum / agents.len() as f64;
        println!(
            "real 5 agents: {per_agent:.1} datagrams/s sent per agent; sealing costs \
             {:.0} + {:.0} ns each, {sealing:.4}% of one core per agent; idle CPU \
             {with:.2}% with sealing, {:.2}% without",
            cost.seal_ns,
            cost.open_ns,
            (with - sealing).max(0.0)
        );
    }

    // A new node joins with a token: the token handshake (CA check, secret proof, certificate
    // signing over QUIC) and the first gossip, until every member sees it ready.
    let host6 = ["127.0.0.6"];
    let port6 = common::free_ports(&host6, 1);
    let addr6 = format!("{}:{port6}", host6[0]).parse().unwrap();
    let mut joiner = common::Agent::new(root.path(), "n6", addr6, &[agents[0].addr]);
    let token = common::token_of(agents[0].addr);
    let start6 = Instant::now();
    joiner.start_with_token(Some(&token));
    agents.push(joiner);
    common::wait_for(Duration::from_secs(30), || common::all_ready(&agents, 6)).expect("n6 joins");
    println!(
        "real 5 agents: a 6th node joining with a token ready everywhere {:>5} ms after its start",
        start6.elapsed().as_millis()
    );
    // It leaves at once, so that the crash below is the only failure.
    agents.pop().expect("pushed above").sigterm();

    agents[2].kill9();
    let crash = common::wait_for(Duration::from_secs(60), || {
        [0, 1, 3, 4]
            .iter()
            .all(|&i| agents[i].status_of("n3").as_deref() == Some("down"))
    })
    .expect("crash detected");
    println!(
        "real 5 agents: kill -9 seen as down by all {:>5} ms",
        crash.as_millis()
    );
    agents[3].sigterm();
    let left = common::wait_for(Duration::from_secs(10), || {
        [0, 1, 4]
            .iter()
            .all(|&i| agents[i].status_of("n4").as_deref() == Some("left"))
    })
    .expect("leave seen");
    println!(
        "real 5 agents: SIGTERM seen as left by all {:>5} ms",
        left.as_millis()
    );
}

/// The host's count of UDP datagrams sent (`/proc/net/snmp`).
fn udp_out_datagrams() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let at = names.iter().position(|n| *n == "OutDatagrams")?;
    values.get(at)?.parse().ok()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run a quick version.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("SHOAL_BENCH_SIM_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| if full { vec![50, 100, 1000] } else { vec![20] });
    for n in sizes {
        sim_figures(n, 1);
    }
    if full {
        real_figures();
    }
}
