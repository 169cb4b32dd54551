//! Real agents on loopback sharing desired state: deploy anywhere, read anywhere, concurrent
//! changes, a node that was down, full restarts, and stack files that must be refused.

mod common;

use std::{path::Path, time::Duration};

use common::{free_port_pair, free_ports, wait_for, Agent};

const STACK: &str = r#"
version: "3.8"
services:
  web:
    image: shoal-demo:v1
    ports:
      - "8080:8080"
    environment:
      GREETING: hello
    deploy:
      replicas: 2
      labels:
        traefik.backend.loadbalancer.stickiness: "true"
  worker:
    image: shoal-demo:v1
    deploy:
      mode: global
"#;

fn five(root: &Path) -> Vec<Agent> {
    common::start_cluster(
        common::agents_on(root, &common::FIVE_HOSTS, "n"),
        Duration::from_secs(10),
    )
}

fn write(root: &Path, name: &str, text: &str) -> String {
    let path = root.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn deploy_anywhere_read_everywhere_and_survive_restarts() {
    let root = tempfile::tempdir().unwrap();
    let mut agents = five(root.path());
    let file = write(root.path(), "stack.yml", STACK);

    let out = ok(agents[0].cli(&["stack", "deploy", "-c", &file, "app"]));
    assert!(out.contains("Creating service app_web"), "{out}");
    let seen = wait_for(Duration::from_secs(1) * 2, || {
        agents[4].replicas_of("app_web") == Some(2)
    });
    assert!(seen.is_some(), "deploy on n1 not visible on n5");
    println!("deploy on n1 visible on n5 after {seen:?}");

    let services = agents[4].services().unwrap();
    let web = services.iter().find(|s| s["name"] == "app_web").unwrap();
    assert_eq!(web["stack"], "app");
    assert_eq!(web["mode"], "replicated");
    assert_eq!(web["image"], "shoal-demo:v1");
    assert_eq!(web["running"], 0);
    assert_eq!(web["ports"][0], "*:8080->8080/tcp");

    // Concurrent scales on two nodes: everyone ends on one value.
    let (a, b) = (agents[1].data_dir.clone(), agents[3].data_dir.clone());
    let t1 = std::thread::spawn(move || {
        std::process::Command::new(common::BIN)
            .arg("--data-dir")
            .arg(a)
            .args(["service", "scale", "-d", "app_web=3"])
            .output()
            .unwrap()
    });
    let t2 = std::thread::spawn(move || {
        std::process::Command::new(common::BIN)
            .arg("--data-dir")
            .arg(b)
            .args(["service", "scale", "-d", "app_web=7"])
            .output()
            .unwrap()
    });
    ok(t1.join().unwrap());
    ok(t2.join().unwrap());
    let agreed = wait_for(Duration::from_secs(2) * 2, || {
        let values: Vec<_> = agents.iter().map(|a| a.replicas_of("app_web")).collect();
        values.iter().all(|v| *v == values[0]) && matches!(values[0], Some(3) | Some(7))
    });
    assert!(agreed.is_some(), "concurrent scales did not converge");

    // Node settings too.
    ok(agents[2].cli(&[
        "node",
        "update",
        "n2",
        "--availability",
        "drain",
        "--label-add",
        "zone=a",
    ]));
    let settled = wait_for(Duration::from_secs(2), || {
        agents.iter().all(|a| {
            a.nodes().is_some_and(|nodes| {
                nodes.iter().any(|n| {
                    n["name"] == "n2" && n["availability"] == "drain" && n["labels"]["zone"] == "a"
                })
            })
        })
    });
    assert!(settled.is_some(), "node update did not spread");

    // A node that is down during a deploy gets it when it returns, without any command.
    agents[4].kill9();
    let other = write(
        root.path(),
        "other.yml",
        "services:\n  db:\n    image: shoal-demo:v1\n",
    );
    ok(agents[0].cli(&["stack", "deploy", "-c", &other, "late"]));
    agents[4].start();
    let caught_up = wait_for(Duration::from_secs(15), || {
        agents[4].replicas_of("late_db") == Some(1)
    });
    assert!(caught_up.is_some(), "returning node did not catch up");

    // Everyone killed and restarted: every stack and setting is still there.
    for a in agents.iter_mut() {
        a.kill9();
    }
    for a in agents.iter_mut() {
        a.start();
    }
    for a in &agents {
        let back = wait_for(Duration::from_secs(5), || {
            a.replicas_of("late_db") == Some(1) && a.replicas_of("app_web").is_some()
        });
        assert!(
            back.is_some(),
            "{} lost desired state across restart",
            a.name
        );
    }
    let stacks = ok(agents[3].cli(&["stack", "ls", "--format", "json"]));
    assert!(
        stacks.contains("\"app\"") && stacks.contains("\"late\""),
        "{stacks}"
    );

    // Removing a stack spreads too.
    ok(agents[1].cli(&["stack", "rm", "late"]));
    let gone = wait_for(Duration::from_secs(2), || {
        agents.iter().all(|a| {
            a.services()
                .is_some_and(|s| s.iter().all(|s| s["stack"] != "late"))
        })
    });
    assert!(gone.is_some(), "stack rm did not spread");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let port = free_ports(&["127.0.0.1"], 1);
    let mut agent = Agent::new(
        root.path(),
        "solo",
        format!("127.0.0.1:{port}").parse().unwrap(),
        &[],
    );
    agent.start();
    assert!(wait_for(Duration::from_secs(5), || agent.services().is_some()).is_some());
    let good = write(root.path(), "good.yml", STACK);
    ok(agent.cli(&["stack", "deploy", "-c", &good, "app"]));
    let before = agent.services().unwrap();

    let cases: Vec<(&str, String, &str)> = vec![
        ("types.yml", "services:\n  web:\n    image: x\n    deploy:\n      replicas: three\n".into(), "replicas"),
        ("duration.yml", "services:\n  web:\n    image: x\n    healthcheck:\n      interval: 10 parsecs\n".into(), "interval"),
        ("toplevel.yml", "services:\n  web:\n    image: x\nfrobnicate: 1\n".into(), "frobnicate"),
        ("constraint.yml", "services:\n  web:\n    image: x\n    deploy:\n      placement:\n        constraints: [\"node.labels.zone = a\"]\n".into(), "constraint"),
        ("syntax.yml", "services:\n  web:\n    image: \"x\n".into(), "syntax.yml"),
    ];
    for (name, text, needle) in cases {
        let path = write(root.path(), name, &text);
        let out = agent.cli(&["stack", "deploy", "-c", &path, "app"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} accepted");
        assert!(
            stderr.contains(name),
            "{name}: error does not name the file: {stderr}"
        );
        assert!(
            stderr.contains(needle),
            "{name}: error does not name {needle:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A 50 MB file is refused before it is read.
    let big = root.path().join("big.yml");
    std::fs::write(&big, vec![b'#'; 50 * 1024 * 1024]).unwrap();
    let out = agent.cli(&["stack", "deploy", "-c", big.to_str().unwrap(), "app"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limited to"));

    // Unknown names.
    for args in [
        vec!["service", "scale", "nope=3"],
        vec!["service", "inspect", "nope"],
        vec!["service", "rm", "nope"],
        vec!["stack", "rm", "nope"],
        vec!["node", "update", "nope", "--availability", "drain"],
        vec!["service", "update", "nope", "--image", "x"],
    ] {
        let out = agent.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr.contains("nope"), "{args:?}: {stderr}");
    }
    assert_eq!(
        agent.services().unwrap(),
        before,
        "bad input changed the state"
    );
}

#[test]
fn a_data_dir_of_the_previous_release_keeps_its_services() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port_pair(&["127.0.0.1"]);
    let mut agent = Agent::new(
        root.path(),
        "old",
        format!("127.0.0.1:{port}").parse().unwrap(),
        &[],
    );
    // desired.bin as the release before the versioned envelope wrote it.
    std::fs::create_dir_all(&agent.data_dir).unwrap();
    let legacy = std::fs::read("tests/fixtures/wire/legacy_desired_v0.bin").unwrap();
    std::fs::write(agent.data_dir.join("desired.bin"), &legacy).unwrap();
    agent.start();
    let services = wait_for(Duration::from_secs(10), || agent.services().is_some())
        .and_then(|_| agent.services())
        .expect("the agent answers");
    let names: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["demo_api", "demo_web"]);
    assert_eq!(agent.replicas_of("demo_web"), Some(3));
    let migrated = std::fs::read(agent.data_dir.join("desired.bin")).unwrap();
    assert!(
        migrated.starts_with(b"SHLF"),
        "rewritten in the versioned format"
    );
}
