//! The ingress on real agents and real replicas: every node serves every published port and
//! balances it over ready replicas wherever they run; a sticky service keeps a browser on the
//! replica that issued its form; an unhealthy replica gets no traffic; a dead one loses its
//! sticky clients to another. Two agents on loopback share the local Docker engine.

mod common;

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use common::{docker_ready, http_request, tasks, wait_for, Agent, ContainerGuard, HttpAnswer};
use serde_json::Value;

const HOSTS: [&str; 2] = ["127.0.5.1", "127.0.5.2"];

fn stack(plain: u16, sticky: u16) -> String {
    format!(
        r#"
services:
  plain:
    image: shoal-demo:v1
    ports: ["{plain}:8080"]
    healthcheck: {{interval: 1s, retries: 1, start_period: 2s}}
    deploy:
      replicas: 2
      restart_policy: {{condition: any, delay: 0s}}
  sticky:
    image: shoal-demo:v1
    ports: ["{sticky}:8080"]
    # Two failed checks before unhealthy: a replica replaced on one slow check under a loaded
    # engine would (rightly) move its sticky clients and fail the check below for no fault.
    healthcheck: {{interval: 1s, retries: 2, start_period: 2s}}
    deploy:
      replicas: 2
      restart_policy: {{condition: any, delay: 0s}}
      labels:
        traefik.http.services.sticky.loadbalancer.sticky.cookie: "true"
        traefik.http.services.sticky.loadbalancer.sticky.cookie.name: demo_sticky
"#
    )
}

/// Container ids (12 digits, the demo's host name) of the service's ready replicas.
fn ready_replicas(agent: &Agent, service: &str) -> BTreeSet<String> {
    tasks(agent, service)
        .iter()
        .filter(|t| {
            t["history"] == false
                && t["state"] == "running"
                && t["desired_state"] == "running"
                && t["health"] == "healthy"
        })
        .filter_map(|t| t["container_id"].as_str().map(|id| id[..12].to_string()))
        .collect()
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    http_request(addr, "GET", path, headers, "").unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"))
}

/// The replica that answered `GET /` (the first word of the demo's answer).
fn replica_of(answer: &HttpAnswer) -> String {
    answer
        .body
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The sign-up form's anti-forgery token.
fn token(form: &HttpAnswer) -> String {
    let start = form.body.find("name=\"token\" value=\"").expect("a token") + 20;
    form.body[start..].split('"').next().unwrap().to_string()
}

/// `NAME=VALUE` of the sticky cookie the answer sets, if it sets one.
fn sticky_cookie(answer: &HttpAnswer) -> Option<String> {
    answer
        .header_values("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("demo_sticky="))
        .map(|c| c.split(';').next().unwrap().to_string())
}

#[test]
fn ingress_balances_keeps_sticky_sessions_and_skips_unready_replicas() {
    if !docker_ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let agents: Vec<Agent> = common::agents_on(root.path(), &HOSTS, "i")
        .into_iter()
        .map(Agent::with_docker)
        .collect();
    let agents = common::start_cluster(agents, Duration::from_secs(10));
    let _guard = ContainerGuard(agents.iter().map(common::self_id).collect());
    let agents = agents; // dropped before the guard: agents stop before their containers go

    let (plain_port, sticky_port) = (common::free_tcp_port(&HOSTS), common::free_tcp_port(&HOSTS));
    let file = root.path().join("stack.yml");
    std::fs::write(&file, stack(plain_port, sticky_port)).unwrap();
    let out = agents[0].cli(&["stack", "deploy", "-c", file.to_str().unwrap(), "in"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let up = wait_for(Duration::from_secs(30), || {
        ready_replicas(&agents[1], "in_plain").len() == 2
            && ready_replicas(&agents[1], "in_sticky").len() == 2
    });
    assert!(
        up.is_some(),
        "replicas not healthy: {:?}",
        tasks(&agents[1], "in_plain")
    );
    let plain = ready_replicas(&agents[0], "in_plain");
    let ingress = |node: usize, port: u16| SocketAddr::new(HOSTS[node].parse().unwrap(), port);

    // Layer 4, from either node: both replicas answer, wherever they run.
    for node in 0..2 {
        let mut seen = BTreeSet::new();
        let spread = wait_for(Duration::from_secs(10), || {
            if let Ok(answer) = http_request(ingress(node, plain_port), "GET", "/", &[], "") {
                seen.insert(replica_of(&answer));
            }
            seen == plain
        });
        assert!(
            spread.is_some(),
            "node {node}'s ingress reached {seen:?}, not {plain:?}"
        );
    }
    println!("layer 4: both replicas answer through either node's ingress");

    // Without sticky sessions the form's POST lands on the other replica: it is refused.
    let mut refused = 0;
    for _ in 0..4 {
        let form = get(ingress(0, plain_port), "/signup", &[]);
        let body = format!("token={}&email=a%40b.c", token(&form));
        let post = http_request(ingress(0, plain_port), "POST", "/signup", &[], &body).unwrap();
        if post.status == 400 {
            refused += 1;
        }
    }
    assert!(refused > 0, "no POST was refused without sticky sessions");
    println!("without sticky sessions: {refused} of 4 sign-ups refused");

    // Sticky: the first answer sets the cookie; with it, every request reaches that replica and
    // every sign-up succeeds, through either node.
    let form = get(ingress(0, sticky_port), "/signup", &[]);
    let cookie = sticky_cookie(&form).expect("the sticky cookie is set");
    let pinned = form
        .body
        .split("Served by ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    for node in [0, 1, 0, 1, 0, 1] {
        let again = get(ingress(node, sticky_port), "/", &[("Cookie", &cookie)]);
        assert_eq!(
            replica_of(&again),
            pinned,
            "cookie {cookie} did not stick through node {node}; tasks: {:?}",
            tasks(&agents[0], "in_sticky")
        );
        assert!(sticky_cookie(&again).is_none(), "a hit sets no new cookie");
        let form = get(
            ingress(node, sticky_port),
            "/signup",
            &[("Cookie", &cookie)],
        );
        let body = format!("token={}&email=a%40b.c", token(&form));
        let post = http_request(
            ingress(node, sticky_port),
            "POST",
            "/signup",
            &[("Cookie", &cookie)],
            &body,
        )
        .unwrap();
        assert_eq!(post.status, 200, "sticky sign-up refused: {}", post.body);
    }
    println!("sticky sessions: 6 of 6 sign-ups accepted, through both nodes");

    // An unhealthy replica gets no traffic (shoal replaces it; its replacement may serve).
    let sick = plain.iter().next().unwrap().clone();
    let sick_task = tasks(&agents[0], "in_plain")
        .into_iter()
        .find(|t| {
            t["container_id"]
                .as_str()
                .is_some_and(|c| c.starts_with(&sick))
        })
        .unwrap();
    let direct: SocketAddr = sick_task["endpoint"][0].as_str().unwrap().parse().unwrap();
    let told = http_request(direct, "POST", "/admin/unhealthy", &[], "").unwrap();
    assert_eq!(told.status, 200);
    let out_of_rotation = wait_for(Duration::from_secs(10), || {
        !ready_replicas(&agents[0], "in_plain").contains(&sick)
            && !ready_replicas(&agents[1], "in_plain").contains(&sick)
    });
    assert!(out_of_rotation.is_some(), "{sick} never reported unhealthy");
    for node in [0, 1, 0, 1, 0, 1, 0, 1] {
        if let Ok(answer) = http_request(ingress(node, plain_port), "GET", "/", &[], "") {
            assert_ne!(
                replica_of(&answer),
                sick,
                "an unhealthy replica got traffic"
            );
        }
    }
    println!("unhealthy replica {sick}: no traffic once reported (after {out_of_rotation:?})");

    // The pinned replica dies: its sticky clients go to another one and get a new cookie.
    let pinned_task: Value = tasks(&agents[0], "in_sticky")
        .into_iter()
        .find(|t| {
            t["container_id"]
                .as_str()
                .is_some_and(|c| c.starts_with(&pinned))
        })
        .unwrap();
    let killed = std::process::Command::new("docker")
        .args(["rm", "-f", pinned_task["container_id"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(killed.status.success());
    let answer = get(ingress(1, sticky_port), "/", &[("Cookie", &cookie)]);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_ne!(replica_of(&answer), pinned);
    let renewed = sticky_cookie(&answer).expect("a new cookie for the new replica");
    assert_ne!(renewed, cookie);
    println!(
        "pinned replica removed: the next request went to {} with a new cookie",
        replica_of(&answer)
    );
}
