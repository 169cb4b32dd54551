//! Real agents on loopback: join through one seed, crash and restart, graceful leave, a seed that
//! does not exist, and garbage on the gossip port. No Docker needed.

mod common;

use shoal_core::trust::token::{CaDigest, JoinToken};

use std::{net::SocketAddr, process::Command, time::Duration};

use common::{all_ready, free_port_pair, free_ports, wait_for, Agent, BIN};

/// The bound, with headroom for a loaded CI machine; `testnet/bench-membership` measures
/// the real figure.
const SLACK: u32 = 2;

fn cluster(addrs: Vec<SocketAddr>, root: &std::path::Path) -> Vec<Agent> {
    let seed = addrs[0];
    let mut agents: Vec<Agent> = addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| {
            let join = if i == 0 { vec![] } else { vec![seed] };
            Agent::new(root, &format!("n{}", i + 1), addr, &join)
        })
        .collect();
    for a in agents.iter_mut() {
        a.start();
    }
    agents
}

#[test]
fn five_agents_on_five_addresses_see_each_other() {
    let hosts = common::FIVE_HOSTS;
    let port = free_port_pair(&hosts);
    let root = tempfile::tempdir().unwrap();
    let addrs = hosts
        .iter()
        .map(|h| format!("{h}:{port}").parse().unwrap())
        .collect();
    let agents = cluster(addrs, root.path());
    let took = wait_for(Duration::from_secs(3) * SLACK, || all_ready(&agents, 5));
    assert!(
        took.is_some(),
        "not all 5 ready everywhere; n1 log:\n{}",
        agents[0].log()
    );
    println!("5 agents on 5 addresses all ready after {took:?}");
}

#[test]
fn five_agents_on_one_address_crash_restart_and_leave() {
    let root = tempfile::tempdir().unwrap();
    let base = free_ports(&["127.0.0.1"], 5);
    let addrs: Vec<SocketAddr> = (0..5)
        .map(|i| format!("127.0.0.1:{}", base + 2 * i).parse().unwrap())
        .collect();
    let mut agents = cluster(addrs, root.path());
    assert!(
        wait_for(Duration::from_secs(3) * SLACK, || all_ready(&agents, 5)).is_some(),
        "5 agents on one address did not converge"
    );

    // kill -9: the others must see it down (suspect first is fine) within 10 s.
    let id_before = agents[2]
        .nodes()
        .unwrap()
        .into_iter()
        .find(|n| n["self"] == true)
        .unwrap()["id"]
        .clone();
    agents[2].kill9();
    let down = wait_for(Duration::from_secs(10) * SLACK, || {
        [0, 1, 3, 4]
            .iter()
            .all(|&i| agents[i].status_of("n3").as_deref() == Some("down"))
    });
    assert!(down.is_some(), "crash of n3 not detected as down");
    println!("kill -9 detected as down everywhere after {down:?}");

    // Restart with the same data dir and no --join flag needed beyond its original ones: ready
    // again everywhere, same id.
    agents[2].start();
    let back = wait_for(Duration::from_secs(3) * SLACK, || all_ready(&agents, 5));
    assert!(back.is_some(), "restarted n3 did not come back ready");
    println!("restart ready everywhere after {back:?}");
    let id_after = agents[0]
        .nodes()
        .unwrap()
        .into_iter()
        .find(|n| n["name"] == "n3")
        .unwrap()["id"]
        .clone();
    assert_eq!(id_before, id_after, "node id changed across restart");

    // SIGTERM: left everywhere within 2 s.
    agents[4].sigterm();
    let left = wait_for(Duration::from_secs(2) * SLACK, || {
        (0..4).all(|i| agents[i].status_of("n5").as_deref() == Some("left"))
    });
    assert!(left.is_some(), "graceful stop not seen as left");
    println!("SIGTERM seen as left everywhere after {left:?}");
    assert!(agents[4].log().contains("leaving the cluster"));
}

#[test]
fn restart_without_join_flag_rejoins_remembered_peers() {
    let root = tempfile::tempdir().unwrap();
    let p1 = free_ports(&["127.0.0.1", "127.0.0.2"], 1);
    let p2 = p1;
    let a: SocketAddr = format!("127.0.0.1:{p1}").parse().unwrap();
    let b: SocketAddr = format!("127.0.0.2:{p2}").parse().unwrap();
    let mut seed = Agent::new(root.path(), "seed", a, &[]);
    let mut other = Agent::new(root.path(), "other", b, &[a]);
    seed.start();
    other.start();
    let both = [seed, other];
    assert!(wait_for(Duration::from_secs(6), || all_ready(&both, 2)).is_some());
    let [seed, mut other] = both;
    other.kill9();
    // Same data dir, no --join: it must find the seed from its remembered peers.
    let mut restarted = Agent::new(root.path(), "other", b, &[]);
    restarted.start();
    let both = [seed, restarted];
    assert!(
        wait_for(Duration::from_secs(6), || all_ready(&both, 2)).is_some(),
        "restart without --join did not rejoin"
    );
}

#[test]
fn join_to_nowhere_fails_clearly() {
    let root = tempfile::tempdir().unwrap();
    let port = free_ports(&["127.0.0.1"], 2);
    let dead = port + 2;
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(root.path().join("lonely"))
        .args([
            "agent",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--join",
            &format!("127.0.0.1:{dead}"),
            "--join-timeout",
            "2",
        ])
        // A well-formed token of some cluster: the join gets as far as looking for the seed.
        .env(
            "SHOAL_TOKEN",
            JoinToken::new(CaDigest([1; 32]), [2; 16]).reveal(),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("could not join the cluster") && stderr.contains(&dead.to_string()),
        "unclear error: {stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn unresolvable_seed_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(root.path().join("x"))
        .args([
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--join",
            "no-such-host.invalid:7946",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no-such-host.invalid"), "{stderr}");
}

#[test]
fn cli_without_agent_says_so() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(root.path())
        .args(["node", "ls"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot reach the agent"), "{stderr}");
}

#[test]
fn garbage_on_the_gossip_port_changes_nothing() {
    use rand::{RngExt, SeedableRng};
    let hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let port = free_port_pair(&hosts);
    let root = tempfile::tempdir().unwrap();
    let addrs: Vec<SocketAddr> = hosts
        .iter()
        .map(|h| format!("{h}:{port}").parse().unwrap())
        .collect();
    let agents = cluster(addrs.clone(), root.path());
    assert!(wait_for(Duration::from_secs(6), || all_ready(&agents, 3)).is_some());
    let before = agents[1].nodes().unwrap();

    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let target = addrs[0];
    let quic = SocketAddr::new(target.ip(), target.port() + 1);
    for round in 0..2_000u32 {
        let len = rng.random_range(0..1_500usize);
        let mut pkt: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        match round % 5 {
            // A valid envelope with a random body: reaches the SWIM and leave decoders.
            0 if pkt.len() >= 4 => pkt[..4].copy_from_slice(&[b'S', b'H', 1, 1]),
            1 if pkt.len() >= 4 => pkt[..4].copy_from_slice(&[b'S', b'H', 1, 2]),
            // Truncated envelope.
            2 => pkt = vec![b'S', b'H'],
            _ => {}
        }
        let _ = sock.send_to(&pkt, target);
        let _ = sock.send_to(&pkt, quic);
    }
    // Oversized datagrams.
    for _ in 0..20 {
        let _ = sock.send_to(&vec![0xAB; 60_000], target);
    }
    // A real SWIM header from a stranger with a huge claimed update count, truncated.
    let _ = sock.send_to(&[b'S', b'H', 1, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F], target);

    std::thread::sleep(Duration::from_millis(500));
    assert!(all_ready(&agents, 3), "garbage disturbed the cluster");
    let after = agents[1].nodes().unwrap();
    let names = |v: &Vec<serde_json::Value>| v.iter().map(|n| n["id"].clone()).collect::<Vec<_>>();
    assert_eq!(names(&before), names(&after));
    assert!(!agents[0].log().contains("panicked"));
}
