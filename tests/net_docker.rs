//! Service networks on the real engine: the node's bridge for a shoal network (created,
//! idempotent, moved only when unused), and replicas attached to their service's networks with
//! the gateway as DNS server, reporting their addresses. Without an engine the tests print why
//! and pass, except with `CI=true`, where they fail. Names start with `p6test-`; every network
//! and container a test makes is removed when it ends, even on failure.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use shoal::runtime::{
    docker::{engine_network_name, Docker, Ensured, NetworkError},
    labels, ContainerRuntime, ContainerStatus, LocalContainer, TaskSpec,
};
use shoal_core::{
    desired::{
        hlc::Hlc,
        spec::{NetworkAttachment, ServiceSpec},
    },
    identity::NodeId,
    net::{Ipv4Net, LocalNetwork},
    observed::SlotKey,
};

const IMAGE: &str = "shoal-demo:v1";

async fn engine() -> Option<Docker> {
    let reason = match Docker::connect() {
        Ok(docker) => match docker.ping().await {
            Ok(()) => {
                ensure_images();
                return Some(docker);
            }
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and no usable Docker engine: {reason}");
    }
    eprintln!("skipping: {reason}");
    None
}

/// Builds the test images once if the demo image is missing, as `tests/docker_runtime.rs` does
/// (a lock keeps test binaries from building together; the script is idempotent).
fn ensure_images() {
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        if image_exists(IMAGE) {
            return;
        }
        let root = env!("CARGO_MANIFEST_DIR");
        eprintln!("{IMAGE} is missing: running testnet/build-images");
        let status = Command::new("flock")
            .arg(std::env::temp_dir().join("shoal-build-images.lock"))
            .arg("bash")
            .arg(format!("{root}/testnet/build-images"))
            .current_dir(root)
            .status()
            .expect("run testnet/build-images");
        assert!(status.success(), "testnet/build-images failed");
    });
}

fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A node of its own, with a random /16 to carve from; removes its containers and networks
/// when dropped.
struct TestNode {
    id: NodeId,
    third: u8,
}

impl TestNode {
    fn new() -> Self {
        let id = NodeId(uuid::Uuid::new_v4().as_u128());
        TestNode {
            id,
            // 10.252.0.0/16 to 10.252.250.0: unlikely to meet another test's.
            third: (id.0 % 250) as u8,
        }
    }

    fn local(&self, network: &str, offset: u8) -> LocalNetwork {
        let subnet: Ipv4Net = format!("10.252.{}.0/24", self.third.wrapping_add(offset))
            .parse()
            .unwrap();
        LocalNetwork {
            network: network.to_string(),
            subnet,
            gateway: subnet.nth(1).unwrap(),
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let filter = format!("label={}={}", labels::NODE, self.id);
        for what in [&["ps", "-aq"][..], &["network", "ls", "-q"][..]] {
            let Ok(out) = Command::new("docker")
                .args(what)
                .args(["--filter", &filter])
                .output()
            else {
                continue;
            };
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let rm: &[&str] = if what[0] == "ps" {
                &["rm", "-f", "-v"]
            } else {
                &["network", "rm"]
            };
            let _ = Command::new("docker").args(rm).args(&ids).output();
        }
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "p6test-{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

fn task(service: &str, networks: &[&str]) -> TaskSpec {
    TaskSpec {
        service: service.to_string(),
        slot: SlotKey::Replica(1),
        task_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        version: Hlc {
            wall_ms: 1,
            counter: 0,
            node: NodeId(1),
        },
        force: 0,
        spec: ServiceSpec {
            image: IMAGE.to_string(),
            attachments: networks
                .iter()
                .map(|n| NetworkAttachment {
                    network: n.to_string(),
                    aliases: vec!["ignored-by-the-engine".into()],
                })
                .collect(),
            ..Default::default()
        },
    }
}

async fn running(docker: &Docker, node: NodeId, id: &str) -> LocalContainer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = docker.list(node).await.expect("list");
        if let Some(c) = list.into_iter().find(|c| c.id == id) {
            if c.status == ContainerStatus::Running && !c.addresses.is_empty() {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "{id} not running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn inspect(id: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, id])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn the_bridge_is_created_once_and_moved_only_when_unused() {
    let Some(docker) = engine().await else { return };
    let node = TestNode::new();
    let name = unique("net");
    let net = node.local(&name, 0);
    assert_eq!(
        docker.ensure_network(node.id, &net).await,
        Ok(Ensured::Created)
    );
    assert_eq!(
        docker.ensure_network(node.id, &net).await,
        Ok(Ensured::Present)
    );
    let engine_name = engine_network_name(&name, node.id);
    assert_eq!(
        inspect(
            &engine_name,
            "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}"
        ),
        format!("{} {}", net.subnet, net.gateway)
    );
    assert_eq!(
        inspect(
            &engine_name,
            "{{index .Options \"com.docker.network.bridge.enable_ip_masquerade\"}}"
        ),
        "false"
    );
    let listed = docker.list_networks(node.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].network, name);

    // A container on it: the bridge cannot move.
    let id = docker
        .create(node.id, &task("p6test_web", &[&name]))
        .await
        .unwrap();
    let c = running(&docker, node.id, &id).await;
    let moved = node.local(&name, 1);
    match docker.ensure_network(node.id, &moved).await {
        Err(NetworkError::InUse { containers, .. }) => {
            assert_eq!(containers, std::slice::from_ref(&id))
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(docker.remove_network(node.id, &name).await.is_err());
    docker.remove(&c.id, 1).await.unwrap();
    assert_eq!(
        docker.ensure_network(node.id, &moved).await,
        Ok(Ensured::Recreated {
            was: net.subnet.to_string()
        })
    );
    // Reconciling to nothing removes it.
    assert!(docker.reconcile_networks(node.id, &[]).await.is_empty());
    assert!(docker.list_networks(node.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn replicas_attach_in_order_and_report_their_addresses() {
    let Some(docker) = engine().await else { return };
    let node = TestNode::new();
    let (front, back) = (unique("front"), unique("back"));
    let nets = [node.local(&front, 0), node.local(&back, 1)];
    assert!(docker.reconcile_networks(node.id, &nets).await.is_empty());

    let id = docker
        .create(node.id, &task("p6test_api", &[&front, &back]))
        .await
        .unwrap();
    let c = running(&docker, node.id, &id).await;
    assert_eq!(c.addresses.len(), 2, "{:?}", c.addresses);
    for net in &nets {
        let found = c
            .addresses
            .iter()
            .find(|(n, _)| *n == net.network)
            .unwrap_or_else(|| panic!("no address on {}: {:?}", net.network, c.addresses));
        match found.1 {
            std::net::IpAddr::V4(v4) => assert!(net.subnet.contains(v4), "{v4} in {}", net.subnet),
            other => panic!("{other}"),
        }
    }
    // Its resolver is the first network's gateway (the engine's embedded DNS forwards there).
    assert_eq!(
        inspect(&id, "{{.HostConfig.Dns}}"),
        format!("[{}]", nets[0].gateway)
    );
    // The engine got no aliases (its DNS would answer them with this node's replicas alone).
    let aliases = inspect(
        &id,
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").Aliases}}}}",
            engine_network_name(&front, node.id)
        ),
    );
    assert!(!aliases.contains("ignored-by-the-engine"), "{aliases}");

    // A service whose network is not on the node fails at once, leaving nothing behind.
    let err = docker
        .create(node.id, &task("p6test_x", &["p6test-nowhere"]))
        .await
        .unwrap_err();
    assert!(err.0.contains("not on this node"), "{err}");
    docker.remove(&id, 1).await.unwrap();
}

/// An image with busybox only (its `nslookup`), imported from the host's static busybox;
/// `None` when the host has none.
fn busybox_image() -> Option<String> {
    let image = "p6test-busybox:latest".to_string();
    if image_exists(&image) {
        return Some(image);
    }
    let busybox = std::path::Path::new("/bin/busybox");
    if !busybox.exists() {
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).ok()?;
    std::fs::copy(busybox, bin.join("busybox")).ok()?;
    let tar = dir.path().join("rootfs.tar");
    let ok = Command::new("tar")
        .args(["-C", dir.path().to_str()?, "-cf", tar.to_str()?, "bin"])
        .status()
        .ok()?
        .success()
        && Command::new("docker")
            .args(["import", tar.to_str()?, &image])
            .output()
            .ok()?
            .status
            .success();
    ok.then_some(image)
}

// Multi-threaded: the test blocks on `docker exec` while the server's tasks answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_resolves_service_names_through_the_node_dns() {
    use std::{collections::BTreeMap, sync::Arc};

    use shoal::agent::dns::DnsServer;
    use shoal_core::net::services::{Membership, NetView, ServiceNet};

    let Some(docker) = engine().await else { return };
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true and not root"
        );
        eprintln!("skipping: port 53 needs root");
        return;
    }
    let Some(image) = busybox_image() else {
        // testnet/build-images (run by `engine` when images are missing) installs it.
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and no /bin/busybox to make a client image from");
        }
        eprintln!("skipping: no /bin/busybox to make a client image from");
        return;
    };
    let node = TestNode::new();
    let name = unique("dns");
    let net = node.local(&name, 0);
    docker.ensure_network(node.id, &net).await.unwrap();

    // The node's DNS server on the bridge's address, answering for the network.
    let vip = net.subnet.nth(250).unwrap();
    let mut view = NetView::default();
    view.services.insert(
        "p6_web".into(),
        ServiceNet {
            name: "p6_web".into(),
            short: "web".into(),
            mode: shoal_core::desired::spec::EndpointMode::Vip,
            networks: BTreeMap::from([(
                name.clone(),
                Membership {
                    aliases: vec!["www".into()],
                    vip: Some(vip),
                    ready: vec![],
                },
            )]),
        },
    );
    let server = DnsServer::new(vec![]);
    let listen = std::net::SocketAddr::new(net.gateway.into(), 53);
    let failed = server.listen_on(&[listen]).await;
    assert!(failed.is_empty(), "cannot listen on {listen}: {failed:?}");

    let mut t = task("p6test_client", &[&name]);
    t.spec.image = image;
    t.spec.command = Some(vec!["/bin/busybox".into(), "sleep".into(), "60".into()]);
    let id = docker.create(node.id, &t).await.unwrap();
    let c = running(&docker, node.id, &id).await;
    // The network's range is left out of the view: only the replica's own address (as its
    // node reports it) puts the asker on the network. A question relayed from anywhere else
    // (the gateway, the host) would get NXDOMAIN.
    let std::net::IpAddr::V4(own) = c.addresses[0].1 else {
        panic!("{:?}", c.addresses)
    };
    view.owners.insert(own, "p6_web".into());
    server.set_view(Arc::new(view));
    let lookup = |what: &str| {
        let out = Command::new("docker")
            .args(["exec", &id, "/bin/busybox", "nslookup", what])
            .output()
            .expect("docker exec");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // Through the engine's embedded DNS, which forwards to the gateway from the replica's own
    // address: the server sees the asker on the network and answers.
    let answer = lookup("web");
    assert!(answer.contains(&vip.to_string()), "{answer}");
    let answer = lookup("www");
    assert!(answer.contains(&vip.to_string()), "{answer}");
    docker.remove(&id, 1).await.unwrap();
    let _ = Command::new("docker")
        .args(["rmi", "p6test-busybox:latest"])
        .output();
}
