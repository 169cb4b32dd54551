//! The network verbs against real agents on loopback, with no container runtime: a network
//! created on one node is listed and inspected on the other, `network rm` is refused while a
//! service uses it (naming the service), and goes everywhere once the service is gone; the
//! remote CLI (QUIC) has the same verbs.

mod common;

use std::{path::Path, time::Duration};

use common::{wait_for, Agent};
use serde_json::Value;

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "accepted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// `network ls --format json` on `agent`: the networks' names.
fn names(agent: &Agent) -> Option<Vec<String>> {
    let out = agent.cli(&["network", "ls", "--format", "json"]);
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        list.iter()
            .filter_map(|n| n["name"].as_str().map(str::to_string))
            .collect(),
    )
}

/// `network inspect NAME` on `agent`: its one object.
fn inspect(agent: &Agent, name: &str) -> Value {
    let out = ok(agent.cli(&["network", "inspect", name]));
    let mut all: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(all.len(), 1, "{out}");
    all.remove(0)
}

fn pair(root: &Path) -> Vec<Agent> {
    common::start_cluster(
        common::agents_on(root, &["127.0.0.1", "127.0.0.2"], "n"),
        Duration::from_secs(10),
    )
}

#[test]
fn create_on_one_node_use_and_remove_from_the_other() {
    let root = tempfile::tempdir().unwrap();
    let agents = pair(root.path());
    let (a, b) = (&agents[0], &agents[1]);

    let id = ok(a.cli(&[
        "network",
        "create",
        "--driver",
        "overlay",
        "--subnet",
        "10.50.0.0/16",
        "--attachable",
        "--label",
        "team=a",
        "shared",
    ]));
    let id = id.trim().to_string();
    assert_eq!(id.len(), 12, "docker prints the new id: {id:?}");

    // Node B lists it.
    let seen = wait_for(Duration::from_secs(5), || {
        names(b).is_some_and(|n| n == ["shared"])
    });
    assert!(seen.is_some(), "the network did not reach node B");
    println!("network created on n1 listed on n2 after {seen:?}");
    assert_eq!(ok(b.cli(&["network", "ls", "-q"])).trim(), id);
    let table = ok(b.cli(&["network", "ls"]));
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("NETWORK ID") && header.contains("SCOPE"),
        "{table}"
    );
    assert!(
        table.contains("shared") && table.contains("swarm"),
        "{table}"
    );

    // Node B inspects it, by name and by id, in Docker's shape; both nodes hold an address slot.
    let peers_known = wait_for(Duration::from_secs(10), || {
        inspect(b, "shared")["Peers"]
            .as_array()
            .is_some_and(|p| p.len() == 2)
    });
    assert!(peers_known.is_some(), "{}", inspect(b, "shared"));
    let net = inspect(b, &id);
    assert_eq!(net["Name"], "shared");
    assert_eq!(net["Id"], id.as_str());
    assert_eq!(net["Driver"], "overlay");
    assert_eq!(net["Scope"], "swarm");
    assert_eq!(net["Attachable"], true);
    assert_eq!(net["IPAM"]["Config"][0]["Subnet"], "10.50.0.0/16");
    assert_eq!(net["Labels"]["team"], "a");
    let mut peer_names: Vec<&str> = net["Peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Name"].as_str().unwrap())
        .collect();
    peer_names.sort_unstable();
    assert_eq!(peer_names, ["n1", "n2"]);
    for p in net["Peers"].as_array().unwrap() {
        assert!(p["Subnet"].as_str().unwrap().starts_with("10.50."), "{p}");
    }
    let template = ok(b.cli(&[
        "network",
        "inspect",
        "-f",
        "{{.Name}} {{.Driver}}",
        "shared",
    ]));
    assert_eq!(template.trim(), "shared overlay");

    // Refusals, each naming what is wrong, and changing nothing.
    let e = refused(b.cli(&["network", "create", "shared"]));
    assert!(e.contains("network with name shared already exists"), "{e}");
    let e = refused(b.cli(&["network", "create", "--subnet", "10.60.0.1/16", "x"]));
    assert!(e.contains("10.60.0.1/16"), "{e}");
    let e = refused(b.cli(&["network", "create", "--subnet", "10.60.0.0/24", "x"]));
    assert!(e.contains("10.60.0.0/24"), "{e}");
    let e = refused(b.cli(&["network", "create", "--driver", "bridge", "x"]));
    assert!(e.contains("bridge"), "{e}");
    let e = refused(a.cli(&["network", "inspect", "nope"]));
    assert!(e.contains("network nope not found"), "{e}");
    let e = refused(a.cli(&[
        "service",
        "create",
        "-d",
        "--name",
        "x",
        "--network",
        "nope",
        "img:1",
    ]));
    assert!(e.contains("network nope not found"), "{e}");
    assert_eq!(names(a).unwrap(), ["shared"]);

    // A service on it, created on node B: node A refuses to remove the network, naming it.
    ok(b.cli(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--network",
        "shared",
        "shoal-demo:v1",
    ]));
    let known = wait_for(Duration::from_secs(5), || a.replicas_of("web").is_some());
    assert!(known.is_some(), "the service did not reach node A");
    let e = refused(a.cli(&["network", "rm", "shared"]));
    assert!(e.contains("in use by service web"), "{e}");
    assert!(inspect(a, "shared")["Services"]["web"].is_object());
    assert_eq!(
        ok(a.cli(&["network", "ls", "-q", "--filter", "dangling=true"])),
        ""
    );

    // Once the service is gone, node A removes it; node B no longer has it.
    ok(b.cli(&["service", "rm", "web"]));
    let gone = wait_for(Duration::from_secs(5), || a.replicas_of("web").is_none());
    assert!(gone.is_some(), "the service removal did not reach node A");
    assert_eq!(ok(a.cli(&["network", "rm", "shared"])).trim(), "shared");
    let removed = wait_for(Duration::from_secs(5), || {
        names(b).is_some_and(|n| n.is_empty())
    });
    assert!(removed.is_some(), "the removal did not reach node B");
    let e = refused(b.cli(&["network", "rm", "shared"]));
    assert!(e.contains("network shared not found"), "{e}");
    // The name is free again; the unused network goes by its id, as Docker's idiom
    // `network rm $(network ls -q --filter dangling=true)` does it.
    ok(b.cli(&["network", "create", "shared"]));
    let dangling = ok(b.cli(&["network", "ls", "-q", "--filter", "dangling=true"]));
    assert_eq!(dangling.trim(), id, "the same name gives the same id");
    assert_eq!(ok(b.cli(&["network", "rm", &id])).trim(), id);
    assert_eq!(names(b).unwrap(), Vec::<String>::new());
}

#[test]
fn a_stacks_networks_are_listed_and_guarded_like_others() {
    let root = tempfile::tempdir().unwrap();
    let agents = pair(root.path());
    let (a, b) = (&agents[0], &agents[1]);
    let file = root.path().join("stack.yml");
    std::fs::write(
        &file,
        "services:\n  web:\n    image: shoal-demo:v1\n    networks: [front]\n\
         networks:\n  front:\n    labels:\n      tier: web\n",
    )
    .unwrap();
    ok(a.cli(&["stack", "deploy", "-c", file.to_str().unwrap(), "app"]));
    let seen = wait_for(Duration::from_secs(5), || {
        names(b).is_some_and(|n| n == ["app_front"])
    });
    assert!(seen.is_some(), "the stack's network did not reach node B");
    // Docker's stack label is there to filter on.
    let filtered = ok(b.cli(&[
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        "label=com.docker.stack.namespace=app",
    ]));
    assert_eq!(filtered.trim(), "app_front");
    let e = refused(b.cli(&["network", "rm", "app_front"]));
    assert!(e.contains("in use by service app_web"), "{e}");
    // `stack rm` takes its networks along.
    ok(b.cli(&["stack", "rm", "app"]));
    let gone = wait_for(Duration::from_secs(5), || {
        names(a).is_some_and(|n| n.is_empty())
    });
    assert!(gone.is_some(), "stack rm left its network on node A");

    // The remote CLI (QUIC, client bundle) has the same verbs.
    let bundle = root.path().join("ops.pem");
    std::fs::write(&bundle, ok(a.cli(&["cluster", "client-bundle", "ops"]))).unwrap();
    let remote = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .arg("--data-dir")
            .arg(root.path().join("nowhere"))
            .args(["--host", &b.addr.to_string(), "--bundle"])
            .arg(&bundle)
            .args(args)
            .output()
            .unwrap()
    };
    ok(remote(&[
        "network", "create", "--label", "via=quic", "remote",
    ]));
    let seen = wait_for(Duration::from_secs(5), || {
        names(a).is_some_and(|n| n == ["remote"])
    });
    assert!(
        seen.is_some(),
        "a network created over QUIC did not reach node A"
    );
    let net = ok(remote(&[
        "network",
        "inspect",
        "-f",
        "{{json .Labels}}",
        "remote",
    ]));
    assert_eq!(net.trim(), r#"{"via":"quic"}"#);
    assert_eq!(ok(remote(&["network", "rm", "remote"])).trim(), "remote");
}
