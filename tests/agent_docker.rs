//! Agents on loopback running real replicas on the local Docker engine: they claim their slots,
//! replace containers that die, re-adopt them across restarts, and take over the slots of a lost
//! node. Several agents share one engine here; each touches only its own containers.

mod common;

use std::{path::Path, time::Duration};

use common::{docker_ready, self_id, tasks, wait_for, Agent, ContainerGuard};
use serde_json::Value;

const STACK: &str = r#"
services:
  web:
    image: shoal-demo:v1
    deploy:
      replicas: 2
      restart_policy: {condition: any, delay: 0s}
  nowhere:
    image: shoal-demo:v1
    deploy:
      replicas: 1
      placement:
        constraints: ["node.labels.zone == mars"]
"#;

/// The guard comes first so that a `let (_guard, agents)` drops the agents before it.
fn cluster(root: &Path, n: usize) -> (ContainerGuard, Vec<Agent>) {
    let hosts: Vec<String> = (1..=n).map(|i| format!("127.0.3.{i}")).collect();
    let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let agents = common::agents_on(root, &host_refs, "d")
        .into_iter()
        .map(Agent::with_docker)
        .collect();
    let agents = common::start_cluster(agents, Duration::from_secs(10));
    let guard = ContainerGuard(agents.iter().map(self_id).collect());
    (guard, agents)
}

fn running(tasks: &[Value]) -> Vec<&Value> {
    tasks
        .iter()
        .filter(|t| t["history"] == false && t["state"] == "running")
        .collect()
}

fn container_ids(agents: &[Agent], service: &str) -> Vec<String> {
    let mut ids: Vec<String> = running(&tasks(&agents[0], service))
        .iter()
        .map(|t| t["container_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn replicas_are_claimed_healed_readopted_and_taken_over() {
    if !docker_ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (_guard, mut agents) = cluster(root.path(), 3);
    let file = root.path().join("stack.yml");
    std::fs::write(&file, STACK).unwrap();
    let out = agents[0].cli(&["stack", "deploy", "-c", file.to_str().unwrap(), "t"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let up = wait_for(Duration::from_secs(20), || {
        running(&tasks(&agents[1], "t_web")).len() == 2
            && agents[2]
                .services()
                .is_some_and(|s| s.iter().any(|s| s["name"] == "t_web" && s["running"] == 2))
    });
    assert!(
        up.is_some(),
        "replicas did not start: {:?}",
        tasks(&agents[1], "t_web")
    );
    println!("2 replicas running and healthy after {up:?}");

    // Unsatisfiable constraints: pending with the reason, and no container at all.
    let nowhere = tasks(&agents[2], "t_nowhere");
    assert_eq!(nowhere.len(), 1, "{nowhere:?}");
    assert_eq!(nowhere[0]["state"], "pending");
    assert!(
        nowhere[0]["error"].as_str().unwrap().contains("zone"),
        "{nowhere:?}"
    );

    // A replica removed behind shoal's back: a NEW container takes its slot.
    let before = container_ids(&agents, "t_web");
    let victim = before[0].clone();
    let status = std::process::Command::new("docker")
        .args(["rm", "-f", &victim])
        .output()
        .unwrap();
    assert!(status.status.success());
    let healed = wait_for(Duration::from_secs(10), || {
        let now = container_ids(&agents, "t_web");
        now.len() == 2 && !now.contains(&victim)
    });
    assert!(healed.is_some(), "removed replica was not replaced");
    println!("docker rm -f of a replica: new replica healthy after {healed:?}");
    let history = tasks(&agents[0], "t_web");
    assert!(
        history
            .iter()
            .any(|t| t["history"] == true && t["container_id"] == victim),
        "service ps does not show the replaced task: {history:?}"
    );

    // An agent restarted with kill -9 re-adopts its containers: nothing is recreated.
    let before = container_ids(&agents, "t_web");
    agents[1].kill9();
    agents[1].start();
    assert!(wait_for(Duration::from_secs(10), || common::all_ready(&agents, 3)).is_some());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        container_ids(&agents, "t_web"),
        before,
        "restart recreated replicas"
    );

    // A node lost with its containers: its slots run elsewhere.
    let lost = &agents[2];
    let lost_id = self_id(lost);
    let held: usize = running(&tasks(&agents[0], "t_web"))
        .iter()
        .filter(|t| t["node"] == "d3")
        .count();
    agents[2].kill9();
    let _ = ContainerGuard(vec![lost_id]);
    let took_over = wait_for(Duration::from_secs(20), || {
        let t = tasks(&agents[0], "t_web");
        let live = running(&t).iter().filter(|t| t["node"] != "d3").count();
        live == 2
    });
    assert!(
        took_over.is_some(),
        "slots of the lost node ({held}) were not taken over"
    );
    println!("node lost: its {held} slot(s) running elsewhere after {took_over:?}");
}
