//! The CLI as docker users type it, against agents on loopback running real replicas: `service
//! create` outside any stack, `--format` templates, the progress that waits for convergence,
//! `service update`/`rollback`, a paused update's non-zero exit, container options seen by
//! `docker inspect`, Traefik routers through an entry point, and `node rm`.

mod common;

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{docker_ready, http_request, self_id, tasks, wait_for, Agent, ContainerGuard};
use serde_json::Value;

const HOSTS: [&str; 2] = ["127.0.11.1", "127.0.11.2"];

/// The guard comes first so that a `let (_guard, agents)` drops the agents before it.
fn cluster(root: &Path, entry_port: u16) -> (ContainerGuard, Vec<Agent>) {
    let entry = format!("web=:{entry_port}");
    let agents = common::agents_on(root, &HOSTS, "c")
        .into_iter()
        .map(|a| a.with_docker().with_args(&["--entrypoint", &entry]))
        .collect();
    let agents = common::start_cluster(agents, Duration::from_secs(10));
    let guard = ContainerGuard(agents.iter().map(self_id).collect());
    (guard, agents)
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs the CLI against `agent`, killing it after `limit` (the progress waits for convergence).
fn cli_within(agent: &Agent, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(common::BIN)
        .arg("--data-dir")
        .arg(&agent.data_dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("{args:?} still waiting after {limit:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

fn inspect_container(id: &str) -> Value {
    let out = Command::new("docker")
        .args(["inspect", id])
        .output()
        .unwrap();
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.into_iter().next().unwrap()
}

fn running_containers(agent: &Agent, service: &str) -> Vec<String> {
    tasks(agent, service)
        .iter()
        .filter(|t| t["history"] == false && t["state"] == "running")
        .map(|t| t["container_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn docker_verbs_against_real_replicas() {
    if !docker_ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let entry_port = common::free_tcp_port(&HOSTS);
    let (_guard, mut agents) = cluster(root.path(), entry_port);
    let port = common::free_tcp_port(&HOSTS).to_string();
    let publish = format!("{port}:8080");
    let a = &agents[0];

    // What the brief asks to show, with the progress docker prints.
    let out = ok(cli_within(
        a,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "-p",
            &publish,
            "shoal-demo:v1",
        ],
        Duration::from_secs(60),
    ));
    assert!(out.contains("verify: Service converged"), "{out}");
    assert!(
        out.contains("1/2: running") && out.contains("2/2: running"),
        "{out}"
    );
    let ls = ok(a.cli(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"]));
    assert_eq!(ls, "web 2/2\n");
    let table = ok(a.cli(&["service", "ls"]));
    assert!(table.starts_with("ID "), "no leading space: {table:?}");
    assert!(table.lines().nth(1).unwrap().contains("web"), "{table}");
    let quiet = ok(a.cli(&["service", "ls", "-q"]));
    assert_eq!(quiet.lines().count(), 1);
    // It answers through the ingress of either node.
    for host in HOSTS {
        let addr = format!("{host}:{port}").parse().unwrap();
        let got = wait_for(Duration::from_secs(10), || {
            http_request(addr, "GET", "/", &[], "").is_ok_and(|a| a.status == 200)
        });
        assert!(got.is_some(), "no answer through {addr}");
    }

    // An update waits until converged; a rollback returns to v1.
    ok(cli_within(
        a,
        &[
            "service",
            "update",
            "--image",
            "shoal-demo:v2",
            "--update-parallelism",
            "2",
            "web",
        ],
        Duration::from_secs(90),
    ));
    let image = ok(a.cli(&["service", "inspect", "web", "--format", "{{.image}}"]));
    assert_eq!(image.trim(), "shoal-demo:v2");
    let out = ok(cli_within(
        a,
        &["service", "rollback", "web"],
        Duration::from_secs(90),
    ));
    assert!(out.contains("verify: Service converged"), "{out}");
    let inspected: Vec<Value> =
        serde_json::from_str(&ok(a.cli(&["service", "inspect", "web"]))).unwrap();
    assert_eq!(inspected[0]["image"], "shoal-demo:v1");

    // An update to an image that never runs pauses, and the CLI says so with a failure.
    let out = cli_within(
        a,
        &[
            "service",
            "update",
            "--image",
            "shoal-demo:broken",
            "--update-monitor",
            "2s",
            "--update-failure-action",
            "pause",
            "web",
        ],
        Duration::from_secs(120),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("update paused"),
        "{}",
        text(&out)
    );
    ok(a.cli(&["service", "rm", "web"]));

    // Container options, as the engine sees them.
    ok(cli_within(
        a,
        &[
            "service",
            "create",
            "--name",
            "opts",
            "--user",
            "1000:1000",
            "--workdir",
            "/",
            "--hostname",
            "opts-host",
            "--stop-grace-period",
            "3s",
            "--stop-signal",
            "SIGINT",
            "--cap-add",
            "NET_ADMIN",
            "--read-only",
            "--init",
            "--ulimit",
            "nofile=1000:2000",
            "--host",
            "db:10.9.9.9",
            "--dns",
            "10.9.9.53",
            "--log-opt",
            "max-size=1m",
            "shoal-demo:v1",
        ],
        Duration::from_secs(60),
    ));
    let ids = running_containers(a, "opts");
    assert_eq!(ids.len(), 1);
    let c = inspect_container(&ids[0]);
    assert_eq!(c["Config"]["User"], "1000:1000");
    assert_eq!(c["Config"]["WorkingDir"], "/");
    assert_eq!(c["Config"]["Hostname"], "opts-host");
    assert_eq!(c["Config"]["StopSignal"], "SIGINT");
    assert_eq!(c["Config"]["StopTimeout"], 3);
    let host = &c["HostConfig"];
    assert_eq!(host["CapAdd"][0], "NET_ADMIN");
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["Init"], true);
    assert_eq!(host["Ulimits"][0]["Hard"], 2000);
    assert_eq!(host["ExtraHosts"][0], "db:10.9.9.9");
    assert_eq!(host["Dns"][0], "10.9.9.53");
    assert_eq!(host["LogConfig"]["Config"]["max-size"], "1m");
    ok(a.cli(&["service", "rm", "opts"]));

    // A service reached only through a Traefik router: no `ports:`, served on the entry point.
    ok(cli_within(
        a,
        &[
            "service",
            "create",
            "--name",
            "routed",
            "--replicas",
            "2",
            "--label",
            "traefik.http.routers.r.rule=PathPrefix(`/`)",
            "--label",
            "traefik.http.services.r.loadbalancer.server.port=8080",
            "shoal-demo:v1",
        ],
        Duration::from_secs(60),
    ));
    for host in HOSTS {
        let addr = format!("{host}:{entry_port}").parse().unwrap();
        let got = wait_for(Duration::from_secs(10), || {
            http_request(addr, "GET", "/", &[], "").is_ok_and(|a| a.status == 200)
        });
        assert!(got.is_some(), "no answer through the entry point {addr}");
    }
    ok(a.cli(&["service", "rm", "routed"]));

    // node rm: refused while the node is up, then it leaves the listing once it is down.
    let out = agents[0].cli(&["node", "rm", "c2"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{}",
        text(&out)
    );
    agents[1].kill9();
    let down = wait_for(Duration::from_secs(20), || {
        agents[0].status_of("c2").as_deref() == Some("down")
    });
    assert!(down.is_some(), "c2 never seen down");
    ok(agents[0].cli(&["node", "rm", "c2"]));
    let names = ok(agents[0].cli(&["node", "ls", "--format", "{{.Hostname}}"]));
    assert_eq!(names, "c1\n");
}
