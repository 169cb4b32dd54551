//! Trust on real agents (design §7, docs/security.md): joining needs the cluster's token, a
//! wrong one or another cluster's is refused and changes nothing; the token rotates; the remote
//! CLI works with a client bundle and is refused without one; the gossip key rotates with no
//! false down; a storm of datagrams from outside (random ones, forged goodbyes) changes nothing
//! and is counted.

mod common;

use std::{
    collections::BTreeSet,
    net::{SocketAddr, UdpSocket},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{all_ready, free_ports, token_of, wait_for, Agent, BIN};
use rand::{rngs::StdRng, RngExt, SeedableRng};

/// `n` agents on 127.0.7.1.., joined through the first.
fn cluster(root: &std::path::Path, n: usize) -> (u16, Vec<Agent>) {
    let hosts: Vec<String> = (1..=n).map(|i| format!("127.0.7.{i}")).collect();
    let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let port = free_ports(&host_refs, 1);
    let first: SocketAddr = format!("{}:{port}", hosts[0]).parse().unwrap();
    let mut agents: Vec<Agent> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let join = if i == 0 { vec![] } else { vec![first] };
            Agent::new(
                root,
                &format!("t{}", i + 1),
                format!("{h}:{port}").parse().unwrap(),
                &join,
            )
        })
        .collect();
    for a in &mut agents {
        a.start();
    }
    assert!(
        wait_for(Duration::from_secs(15), || all_ready(&agents, n)).is_some(),
        "cluster of {n} did not form"
    );
    (port, agents)
}

/// Node names every agent lists, sorted.
fn listed(agents: &[Agent]) -> Vec<BTreeSet<String>> {
    agents
        .iter()
        .map(|a| {
            a.nodes()
                .unwrap_or_default()
                .iter()
                .map(|n| {
                    format!(
                        "{}={}",
                        n["name"].as_str().unwrap(),
                        n["status"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .collect()
}

/// Runs an agent that tries to join `seed` with `token` and must give up; its stderr.
fn refused_join(
    root: &std::path::Path,
    addr: &str,
    seed: SocketAddr,
    token: Option<&str>,
) -> String {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(root.join(format!("joiner-{}", addr.replace([':', '.'], "-"))))
        .args([
            "agent",
            "--runtime",
            "none",
            "--listen",
            addr,
            "--join",
            &seed.to_string(),
        ])
        .args(["--join-timeout", "3"])
        .env_remove("SHOAL_TOKEN");
    if let Some(token) = token {
        command.env("SHOAL_TOKEN", token);
    }
    let out = command.output().unwrap();
    assert!(!out.status.success(), "the joiner was admitted");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn joining_needs_the_clusters_token() {
    let root = tempfile::tempdir().unwrap();
    let (port, agents) = cluster(root.path(), 3);
    let seed = agents[0].addr;
    let before = listed(&agents);
    let joiner = format!("127.0.7.9:{port}");

    let no_token = refused_join(root.path(), &joiner, seed, None);
    assert!(no_token.contains("--token"), "{no_token}");

    // The right CA, a wrong secret: the seed refuses.
    let token = token_of(seed);
    let mut wrong = token.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let bad_secret = refused_join(root.path(), &joiner, seed, Some(&wrong));
    assert!(
        bad_secret.contains("not valid for this cluster"),
        "{bad_secret}"
    );

    // Another cluster's token: the joiner refuses the seed (its CA is not the token's).
    let other_root = tempfile::tempdir().unwrap();
    let other_port = free_ports(&["127.0.7.20"], 1);
    let mut other = Agent::new(
        other_root.path(),
        "other",
        format!("127.0.7.20:{other_port}").parse().unwrap(),
        &[],
    );
    other.start();
    let foreign = token_of(other.addr);
    let foreign_refused = refused_join(root.path(), &joiner, seed, Some(&foreign));
    assert!(
        foreign_refused.contains("could not join"),
        "{foreign_refused}"
    );

    // Nothing changed anywhere.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(listed(&agents), before);

    // Rotating the token: the old one stops admitting, the new one admits.
    let out = agents[1].cli(&["cluster", "join-token", "--rotate", "-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_ne!(rotated, token);
    let stale = wait_for(Duration::from_secs(10), || token_of(seed) == rotated);
    assert!(stale.is_some(), "the rotated token did not reach the seed");
    let old_refused = refused_join(root.path(), &joiner, seed, Some(&token));
    assert!(
        old_refused.contains("not valid for this cluster"),
        "{old_refused}"
    );
    let mut newcomer = Agent::new(root.path(), "t9", joiner.parse().unwrap(), &[seed]);
    newcomer.start_with_token(Some(&rotated));
    let mut all = agents;
    all.push(newcomer);
    assert!(
        wait_for(Duration::from_secs(15), || all_ready(&all, 4)).is_some(),
        "the new token did not admit"
    );
}

#[test]
fn the_remote_cli_needs_a_bundle() {
    let root = tempfile::tempdir().unwrap();
    let (_, agents) = cluster(root.path(), 2);
    let out = agents[0].cli(&["cluster", "client-bundle", "ops"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = root.path().join("ops.pem");
    std::fs::write(&bundle, &out.stdout).unwrap();
    let host = agents[1].addr.to_string();
    let remote = |args: &[&str], bundle: Option<&std::path::Path>| {
        let mut command = Command::new(BIN);
        // No local agent here: everything must go through --host.
        command.arg("--data-dir").arg(root.path().join("nowhere"));
        command.args(["--host", &host]);
        if let Some(b) = bundle {
            command.arg("--bundle").arg(b);
        }
        command.args(args).output().unwrap()
    };
    let nodes = remote(&["node", "ls", "--format", "json"], Some(&bundle));
    assert!(
        nodes.status.success(),
        "{}",
        String::from_utf8_lossy(&nodes.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&nodes.stdout).unwrap();
    assert_eq!(list.len(), 2);
    let file = root.path().join("stack.yml");
    std::fs::write(&file, "services:\n  web:\n    image: shoal-demo:v1\n").unwrap();
    let deploy = remote(
        &["stack", "deploy", "-c", file.to_str().unwrap(), "rc"],
        Some(&bundle),
    );
    assert!(
        deploy.status.success(),
        "{}",
        String::from_utf8_lossy(&deploy.stderr)
    );
    assert!(wait_for(Duration::from_secs(5), || agents[0]
        .replicas_of("rc_web")
        .is_some())
    .is_some());

    let without = remote(&["node", "ls"], None);
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("--bundle"));

    // A bundle of another cluster is refused by the node's TLS.
    let other_root = tempfile::tempdir().unwrap();
    let other_port = free_ports(&["127.0.7.21"], 1);
    let mut other = Agent::new(
        other_root.path(),
        "other",
        format!("127.0.7.21:{other_port}").parse().unwrap(),
        &[],
    );
    other.start();
    assert!(wait_for(Duration::from_secs(10), || other.nodes().is_some()).is_some());
    let foreign = other.cli(&["cluster", "client-bundle", "intruder"]);
    let foreign_bundle = root.path().join("foreign.pem");
    std::fs::write(&foreign_bundle, &foreign.stdout).unwrap();
    let refused = remote(&["node", "ls"], Some(&foreign_bundle));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cannot reach a shoal node"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn rotating_the_gossip_key_causes_no_false_down() {
    let root = tempfile::tempdir().unwrap();
    let (_, agents) = cluster(root.path(), 5);
    let downs = Arc::new(Mutex::new(Vec::new()));
    let out = agents[2].cli(&["cluster", "rotate-key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Watch every node's view while the key changes hands and the old one is retired.
    let retired = wait_for(Duration::from_secs(40), || {
        for a in &agents {
            for n in a.nodes().unwrap_or_default() {
                if n["status"] != "ready" {
                    downs
                        .lock()
                        .unwrap()
                        .push(format!("{} sees {}", a.name, n["name"]));
                }
            }
        }
        agents
            .iter()
            .all(|a| a.log().contains("sealing with a new key"))
            && agents
                .iter()
                .any(|a| a.log().contains("retiring the older keys"))
    });
    assert!(retired.is_some(), "the rotation did not complete");
    std::thread::sleep(Duration::from_secs(3));
    assert!(all_ready(&agents, 5));
    let downs = downs.lock().unwrap();
    assert!(
        downs.is_empty(),
        "false downs during the rotation: {downs:?}"
    );
    println!("gossip key rotated and the old key retired after {retired:?}");
}

#[test]
fn a_storm_from_outside_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (_, agents) = cluster(root.path(), 5);
    let before = listed(&agents);
    let rss_before: Vec<u64> = agents.iter().map(|a| rss_kib(a.pid())).collect();
    let lines_before: Vec<usize> = agents.iter().map(|a| a.log().lines().count()).collect();

    // From a non-member address: 100,000 random datagrams, half of them with the sealed
    // header's magic and version so they get as far as the tag check, then forged goodbyes in
    // the clear. (Altered and replayed captures of real packets are in tests/sim_security.rs,
    // where the simulator records the wire.)
    let attacker = UdpSocket::bind("127.0.7.30:0").unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let targets: Vec<SocketAddr> = agents.iter().map(|a| a.addr).collect();
    for i in 0..100_000u32 {
        let len = rng.random_range(1..1_400);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if i % 2 == 0 && len > 3 {
            bytes[..3].copy_from_slice(b"SS\x01");
        }
        let _ = attacker.send_to(&bytes, targets[i as usize % targets.len()]);
        if i % 2_000 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Forged goodbyes in the clear: magic "SH", version, kind Leave, then any body.
    for a in &agents {
        for target in &targets {
            let mut goodbye = b"SH\x01\x02".to_vec();
            goodbye.extend_from_slice(a.name.as_bytes());
            let _ = attacker.send_to(&goodbye, target);
        }
    }
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(
        listed(&agents),
        before,
        "membership changed under the storm"
    );
    for (i, a) in agents.iter().enumerate() {
        let rss = rss_kib(a.pid());
        assert!(
            rss < rss_before[i] + 64 * 1024,
            "{}: RSS {} KiB -> {rss} KiB",
            a.name,
            rss_before[i]
        );
        let lines = a.log().lines().count() - lines_before[i];
        assert!(lines < 50, "{}: {lines} log lines during the storm", a.name);
        let me = a
            .nodes()
            .unwrap()
            .into_iter()
            .find(|n| n["self"] == true)
            .unwrap();
        let refused: u64 = me["gossip_refused"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|v| v.as_u64())
            .sum();
        assert!(
            refused >= 19_000,
            "{}: refused {refused}: {}",
            a.name,
            me["gossip_refused"]
        );
        println!("{}: refused {} ({})", a.name, refused, me["gossip_refused"]);
    }
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
