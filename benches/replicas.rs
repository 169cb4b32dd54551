//! Replica benchmark on the local Docker engine: one agent runs 100 replicas of the demo image;
//! prints the time until all are healthy, the agent's RSS with them, and the reconcile loop's CPU
//! at idle; then the time from a container exit to its replacement being healthy.
//!
//! The 100 replicas check their health every 10 s: with the image's 2 s, a 2-core machine whose
//! engine stores images through fuse-overlayfs spends its time in healthcheck processes, checks
//! time out, and replicas are replaced as unhealthy, which measures the machine rather than the
//! agent. The replacement timings use a second service of 5 replicas that checks every second (the
//! testnet's demo stack), each kill in another slot, so that no crash-loop backoff applies.
//! Run with `cargo bench --bench replicas` on an otherwise idle machine (skips without a Docker
//! engine).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches`: nothing quick to run here.
    }
    if !common::docker_ready() {
        return;
    }
    let replicas: u64 = std::env::var("SHOAL_BENCH_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let root = tempfile::tempdir().unwrap();
    let port = common::free_ports(&["127.0.4.1"], 1);
    let mut agent = common::Agent::new(
        root.path(),
        "bench",
        format!("127.0.4.1:{port}").parse().unwrap(),
        &[],
    )
    .with_docker();
    agent.start();
    common::wait_for(Duration::from_secs(10), || agent.nodes().is_some()).expect("agent up");
    let _guard = common::ContainerGuard(vec![common::self_id(&agent)]);
    let file = root.path().join("stack.yml");
    std::fs::write(
        &file,
        format!(
            "services:\n  web:\n    image: shoal-demo:v1\n    healthcheck: {{interval: 10s}}\n    deploy:\n      replicas: {replicas}\n      restart_policy: {{delay: 0s}}\n  probe:\n    image: shoal-demo:v1\n    healthcheck: {{interval: 1s, retries: 2, start_period: 2s}}\n    deploy:\n      replicas: 5\n      restart_policy: {{delay: 0s}}\n"
        ),
    )
    .unwrap();
    let t = Instant::now();
    assert!(agent
        .cli(&["stack", "deploy", "-c", file.to_str().unwrap(), "b"])
        .status
        .success());
    common::wait_for(Duration::from_secs(600), || {
        agent.services().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == "b_web" && s["running"] == replicas)
                && s.iter()
                    .any(|s| s["name"] == "b_probe" && s["running"] == 5)
        })
    })
    .unwrap_or_else(|| panic!("not all replicas healthy: {:?}", agent.services()));
    println!(
        "replicas: {replicas} replicas healthy {:.1} s after the deploy",
        t.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    let pid = agent.pid();
    let (_, before) = common::proc_stat(pid);
    let idle = Duration::from_secs(20);
    std::thread::sleep(idle);
    let (rss, after) = common::proc_stat(pid);
    println!(
        "replicas: agent RSS with {replicas} replicas {:.1} MiB; CPU at idle {:.2}% of one core",
        rss as f64 / 1024.0,
        (after - before) as f64 / 100.0 / idle.as_secs_f64() * 100.0
    );

    // Exit → replacement healthy, five times, each in another slot: a second failure of the
    // same slot soon after the first is a crash loop, which backs off on purpose.
    let mut killed = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let tasks = common::tasks(&agent, "b_probe");
        let victim = tasks
            .iter()
            .find(|t| {
                t["history"] == false
                    && t["state"] == "running"
                    && !killed.contains(&t["slot"].to_string())
            })
            .expect("a running task");
        killed.insert(victim["slot"].to_string());
        let id = victim["container_id"].as_str().unwrap().to_string();
        let slot = victim["slot"].as_str().unwrap().to_string();
        let t = Instant::now();
        std::process::Command::new("docker")
            .args(["kill", &id])
            .output()
            .unwrap();
        common::wait_for(Duration::from_secs(30), || {
            common::tasks(&agent, "b_probe").iter().any(|t| {
                t["slot"] == slot.as_str()
                    && t["history"] == false
                    && t["state"] == "running"
                    && t["container_id"] != id.as_str()
            })
        })
        .unwrap_or_else(|| {
            let log = agent.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tasks = common::tasks(&agent, "b_probe");
            let slot_tasks: Vec<_> = tasks.iter().filter(|t| t["slot"] == slot.as_str()).collect();
            panic!(
                "slot {slot} not replaced within 30 s; its tasks: {slot_tasks:#?}\nthe agent's log, last lines first:\n{}",
                tail.join("\n")
            )
        });
        println!(
            "replicas: container killed -> replacement healthy {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }
    // The agent goes before the guard: alive, it would replace what the guard removes.
    drop(agent);
}
