//! Published-port conflicts, end to end: stack files parsed as the CLI parses them, deployed into
//! the desired state, and through a real agent and its CLI. A port that one live service
//! publishes cannot be published by another, in another stack or in the same file; the refusal
//! names the port and the service holding it, and changes nothing.

mod common;

use std::{collections::BTreeMap, path::Path, time::Duration};

use common::{free_ports, wait_for, Agent};
use shoal::compose::parse_stack;
use shoal_core::desired::{
    hlc::Hlc,
    spec::{Protocol, ServiceDef},
    state::{DesiredError, DesiredState},
};
use shoal_core::identity::NodeId;

const SHOP: &str = include_str!("fixtures/compose/ports/shop.yml");
const BLOG: &str = include_str!("fixtures/compose/ports/blog.yml");
const SELF_CLASH: &str = include_str!("fixtures/compose/ports/self-clash.yml");
const SHOP_MOVED: &str = include_str!("fixtures/compose/ports/shop-moved.yml");

fn services(stack: &str, text: &str) -> Vec<ServiceDef> {
    let files = vec![(format!("{stack}.yml"), text.to_string())];
    parse_stack(stack, &files, &BTreeMap::new())
        .expect("fixture parses")
        .services
}

fn at(wall_ms: u64) -> Hlc {
    Hlc {
        wall_ms,
        counter: 0,
        node: NodeId(1),
    }
}

#[test]
fn desired_state_refuses_a_second_publisher() {
    let mut state = DesiredState::default();
    state
        .deploy_stack("shop", services("shop", SHOP), at(1))
        .unwrap();
    let before = state.clone();

    let e = state
        .deploy_stack("blog", services("blog", BLOG), at(2))
        .unwrap_err();
    assert_eq!(
        e,
        DesiredError::PortTaken {
            service: "blog_front".into(),
            port: 8080,
            protocol: Protocol::Tcp,
            holder: "shop_web".into(),
        }
    );
    assert_eq!(state, before, "a refused deploy changed the state");

    // The CLI's parser refuses the file with its line (see below); the desired state refuses
    // the same services from any other path.
    let mut clash = services(
        "clash",
        &SELF_CLASH.replace("published: 7000", "published: 7001"),
    );
    clash[1].spec.ports[0].published = Some(7000);
    let e = state.deploy_stack("clash", clash, at(3)).unwrap_err();
    assert!(
        matches!(&e, DesiredError::PortTaken { port: 7000, holder, .. } if holder == "clash_a"),
        "{e}"
    );
    assert_eq!(state, before);

    // The shop stack moves 8080 from web to api and gives up 9000/udp in one deploy; once shop
    // is removed, blog may have 8080.
    state
        .deploy_stack("shop", services("shop", SHOP_MOVED), at(4))
        .unwrap();
    let api = state.service("shop_api").unwrap();
    assert_eq!(api.spec.ports[0].published, Some(8080));
    state.remove_stack("shop", at(5)).unwrap();
    state
        .deploy_stack("blog", services("blog", BLOG), at(6))
        .unwrap();
}

fn write(root: &Path, name: &str, text: &str) -> String {
    let path = root.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn cli_reports_the_conflict_and_exits_non_zero() {
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

    let shop = write(root.path(), "shop.yml", SHOP);
    let out = agent.cli(&["stack", "deploy", "-c", &shop, "shop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = agent.services().unwrap();

    for (file, text, stack, needles) in [
        ("blog.yml", BLOG, "blog", ["8080/tcp", "shop_web"]),
        (
            "clash.yml",
            SELF_CLASH,
            "clash",
            ["clash.yml:9:9: services.b.ports[0]", "7000/tcp"],
        ),
    ] {
        let path = write(root.path(), file, text);
        let out = agent.cli(&["stack", "deploy", "-c", &path, stack]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} was accepted");
        for needle in needles {
            assert!(stderr.contains(needle), "{file}: no {needle:?} in {stderr}");
        }
    }
    assert_eq!(
        agent.services().unwrap(),
        before,
        "a refused deploy changed the state"
    );

    // `service update --publish-add` goes through the same check.
    let out = agent.cli(&[
        "service",
        "update",
        "-d",
        "shop_api",
        "--publish-add",
        "8080:81",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--publish-add of a taken port accepted"
    );
    assert!(
        stderr.contains("8080/tcp") && stderr.contains("shop_web"),
        "{stderr}"
    );
    assert_eq!(agent.services().unwrap(), before);

    let ports = |agent: &Agent| {
        let out = agent.cli(&["service", "inspect", "shop_api", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["published"].as_u64(), p["target"].as_u64().unwrap()))
            .collect::<Vec<_>>()
    };
    let out = agent.cli(&[
        "service",
        "update",
        "-d",
        "shop_api",
        "--publish-add",
        "9100:81",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ports(&agent), [(Some(9000), 9000), (Some(9100), 81)]);
    let out = agent.cli(&[
        "service",
        "update",
        "-d",
        "shop_api",
        "--publish-rm",
        "9000/udp",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ports(&agent), [(Some(9100), 81)]);
}
