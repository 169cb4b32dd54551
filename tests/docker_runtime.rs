//! The Docker runtime against the real engine, with the demo image (`shoal-demo:v1`, built by
//! `testnet/build-images` if missing). Without an engine the tests print why and pass, except
//! with `CI=true`, where they fail. Each test uses a node id of its own, so tests running at once
//! never see each other's containers, and removes its containers when it ends, even on failure.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    sync::Once,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use shoal::runtime::{
    docker::Docker, labels, ContainerRuntime, ContainerStatus, LocalContainer, TaskSpec,
};
use shoal_core::{
    desired::{
        hlc::Hlc,
        spec::{
            HealthcheckSpec, MountKind, MountSpec, PortSpec, Protocol, PublishMode,
            ResourceAmounts, ServiceSpec,
        },
    },
    identity::NodeId,
    observed::{Health, SlotKey},
};

const IMAGE: &str = "shoal-demo:v1";

/// The engine, or `None` (after saying why) when there is none; with `CI=true` a missing engine
/// fails the test instead. Makes sure the demo image exists.
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
        panic!("CI=true and no Docker engine answers: {reason}");
    }
    eprintln!("skipping: no Docker engine answers ({reason})");
    None
}

/// Builds the test images once if `shoal-demo:v1` is missing (a lock file keeps test binaries
/// running at once from building together; the script is idempotent).
fn ensure_images() {
    static BUILD: Once = Once::new();
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
        assert!(
            image_exists(IMAGE),
            "{IMAGE} still missing after build-images"
        );
    });
}

fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A node of its own for one test; removes every container labelled with it when dropped.
struct TestNode {
    id: NodeId,
}

impl TestNode {
    fn new() -> Self {
        TestNode {
            id: NodeId(uuid::Uuid::new_v4().as_u128()),
        }
    }

    /// Container `id` of this node, once it runs.
    async fn running(&self, docker: &Docker, id: &str) -> LocalContainer {
        let within = Duration::from_secs(10);
        wait_until(docker, self.id, id, within, "running", |c| {
            c.status == ContainerStatus::Running
        })
        .await
    }

    /// Container `id` of this node, once its healthcheck passes.
    async fn healthy(&self, docker: &Docker, id: &str) -> LocalContainer {
        let within = Duration::from_secs(15);
        wait_until(docker, self.id, id, within, "healthy", |c| {
            c.health == Health::Healthy
        })
        .await
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let filter = format!("label={}={}", labels::NODE, self.id);
        let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn demo_spec() -> ServiceSpec {
    ServiceSpec {
        image: IMAGE.to_string(),
        ports: vec![PortSpec {
            target: 8080,
            published: Some(18080),
            protocol: Protocol::Tcp,
            mode: PublishMode::Ingress,
        }],
        ..Default::default()
    }
}

fn task(service: &str, slot: SlotKey, spec: ServiceSpec) -> TaskSpec {
    let task_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    TaskSpec {
        service: service.to_string(),
        slot,
        task_id,
        version: Hlc {
            wall_ms: 1_700_000_000_123,
            counter: 4,
            node: NodeId(0xfeed_0000_0000_0000_0000_0000_0000_beef),
        },
        force: 2,
        spec,
    }
}

/// The container of `id` in `node`'s list, once `pred` holds for it (polls every 100 ms).
async fn wait_until(
    docker: &Docker,
    node: NodeId,
    id: &str,
    within: Duration,
    what: &str,
    pred: impl Fn(&LocalContainer) -> bool,
) -> LocalContainer {
    let deadline = Instant::now() + within;
    loop {
        let list = docker.list(node).await.expect("list");
        let found = list.into_iter().find(|c| c.id == id);
        if let Some(c) = &found {
            if pred(c) {
                return c.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "not {what} within {within:?}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn endpoint_8080(c: &LocalContainer) -> SocketAddr {
    c.endpoints
        .iter()
        .find(|e| e.port == 8080 && e.protocol == Protocol::Tcp)
        .map(|e| e.addr)
        .unwrap_or_else(|| panic!("no endpoint for 8080: {:?}", c.endpoints))
}

/// A tiny HTTP/1.1 exchange; returns the status code and the body. Retries connecting for a few
/// seconds: a container is running a moment before its app listens.
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stream = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `docker inspect -f FORMAT ID`.
fn inspect(id: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, id])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn create_lists_running_with_labels_endpoints_and_becomes_healthy() {
    let Some(docker) = engine().await else { return };
    let node = TestNode::new();
    let mut spec = demo_spec();
    // A UDP port too: the demo does not listen on it, but Docker binds it all the same.
    spec.ports.push(PortSpec {
        target: 9053,
        published: Some(19053),
        protocol: Protocol::Udp,
        mode: PublishMode::Ingress,
    });
    let t = task("dt_web", SlotKey::Replica(3), spec);
    let start = Instant::now();
    let id = docker.create(node.id, &t).await.expect("create");

    let c = node.running(&docker, &id).await;
    let to_running = start.elapsed();
    assert_eq!(c.service, "dt_web");
    assert_eq!(c.slot, SlotKey::Replica(3));
    assert_eq!(c.task_id, t.task_id);
    assert_eq!(c.version, t.version);
    assert_eq!(c.force, 2);
    assert_eq!(c.image, IMAGE);
    assert!(c.created_ms > 0 && c.created_ms.abs_diff(now_ms()) < 60_000);
    // The image's healthcheck has not passed yet (interval 2 s).
    assert_eq!(c.health, Health::Starting, "{c:?}");
    let addr = endpoint_8080(&c);
    assert_eq!(c.endpoints.len(), 2, "{:?}", c.endpoints);
    let udp = c
        .endpoints
        .iter()
        .find(|e| e.protocol == Protocol::Udp)
        .unwrap();
    assert_eq!((udp.port, udp.addr.ip()), (9053, addr.ip()), "{udp:?}");
    // The ingress port is bound to an ephemeral port of the host address (127.0.0.1 unless the
    // agent says otherwise), which is where other nodes' ingress reaches it.
    let host_port = inspect(
        &id,
        "{{(index (index .NetworkSettings.Ports \"8080/tcp\") 0).HostPort}}",
    );
    assert_eq!(
        addr,
        SocketAddr::from(([127, 0, 0, 1], host_port.parse::<u16>().unwrap()))
    );

    // Named as Swarm names tasks, restart policy `no`, shoal's env.
    assert_eq!(
        inspect(&id, "{{.Name}}"),
        format!("/{}", t.container_name())
    );
    let bindings = inspect(&id, "{{json .HostConfig.PortBindings}}");
    assert_eq!(
        bindings,
        r#"{"8080/tcp":[{"HostIp":"127.0.0.1","HostPort":""}],"9053/udp":[{"HostIp":"127.0.0.1","HostPort":""}]}"#
    );
    assert_eq!(inspect(&id, "{{.HostConfig.RestartPolicy.Name}}"), "no");
    let env = inspect(&id, "{{json .Config.Env}}");
    for var in [
        format!("SHOAL_TASK_ID={}", t.task_id),
        "SHOAL_SERVICE=dt_web".to_string(),
        "SHOAL_SLOT=3".to_string(),
    ] {
        assert!(env.contains(&var), "{var} not in {env}");
    }

    let c = node.healthy(&docker, &id).await;
    let to_healthy = start.elapsed();
    let (status, _) = http(endpoint_8080(&c), "GET", "/health");
    assert_eq!(status, 200);
    eprintln!("create→running {to_running:?}, create→healthy {to_healthy:?}");

    docker.remove(&id, 5).await.expect("remove");
    assert!(docker.list(node.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn interval_override_keeps_the_image_test() {
    let Some(docker) = engine().await else { return };
    let node = TestNode::new();
    let mut spec = demo_spec();
    spec.healthcheck = Some(HealthcheckSpec {
        interval_ms: Some(1_000),
        ..Default::default()
    });
    let t = task("dt_fast", SlotKey::Replica(1), spec);
    let start = Instant::now();
    let id = docker.create(node.id, &t).await.expect("create");
    // Docker merged the override with the image's healthcheck: its test, our interval.
    assert_eq!(
        inspect(&id, "{{json .Config.Healthcheck.Test}}"),
        r#"["CMD","/shoal-demo","healthcheck"]"#
    );
    assert_eq!(inspect(&id, "{{.Config.Healthcheck.Interval}}"), "1s");
    node.healthy(&docker, &id).await;
    eprintln!("create→healthy with a 1 s interval: {:?}", start.elapsed());
    let log = inspect(&id, "{{range .State.Health.Log}}{{.ExitCode}} {{end}}");
    assert!(log.starts_with('0'), "health log: {log}");
}

#[tokio::test]
async fn spec_settings_reach_the_container() {
    let Some(docker) = engine().await else { return };
    let node = TestNode::new();
    let mut spec = demo_spec();
    spec.healthcheck = Some(HealthcheckSpec {
        disable: true,
        ..Default::default()
    });
    spec.env.insert("GREETING".into(), "hello world".into());
    spec.container_labels
        .insert("com.example.team".into(), "blue".into());
    spec.resources.limits = ResourceAmounts {
        cpus_milli: Some(500),
        memory_bytes: Some(64 << 20),
    };
    spec.mounts = vec![
        MountSpec {
            source: String::new(),
            target: "/scratch".into(),
            kind: MountKind::Tmpfs,
            read_only: true,
        },
        MountSpec {
            source: String::new(),
            target: "/data".into(),
            kind: MountKind::Volume,
            // (Docker refuses a read-only anonymous volume.)
            read_only: false,
        },
    ];
    let t = task("dt_settings", SlotKey::Replica(1), spec);
    let id = docker.create(node.id, &t).await.expect("create");
    let c = node.running(&docker, &id).await;
    // A disabled healthcheck: no health at all, not even the image's.
    assert_eq!(c.health, Health::None);
    assert!(inspect(&id, "{{json .Config.Env}}").contains("GREETING=hello world"));
    assert_eq!(
        inspect(&id, r#"{{index .Config.Labels "com.example.team"}}"#),
        "blue"
    );
    assert_eq!(inspect(&id, "{{.HostConfig.NanoCpus}}"), "500000000");
    assert_eq!(
        inspect(&id, "{{.HostConfig.Memory}}"),
        (64u64 << 20).to_string()
    );
    let mounts = inspect(
        &id,
        "{{range .Mounts}}{{.Type}}:{{.Destination}}:{{.RW}} {{end}}",
    );
    assert!(mounts.contains("tmpfs:/scratch:false"), "{mounts}");
    assert!(mounts.contains("volume:/data:true"), "{mounts}");
    let volume = inspect(
        &id,
        r#"{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}}{{end}}{{end}}"#,
    );
    assert!(!volume.is_empty());

    // Removing it removes its anonymous volume too.
    docker.remove(&id, 5).await.expect("remove");
    let gone = Command::new("docker")
        .args(["volume", "inspect", &volume])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "volume {volume} left behind");
}

/// Forwards connections on the unix socket `path` to Docker's own socket until aborted (which
/// drops every forwarded connection too): an engine that can be made to go away and come back.
fn engine_proxy(path: &std::path::Path) -> tokio::task::JoinHandle<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).expect("bind the proxy socket");
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            connections.spawn(async move {
                if let Ok(mut outbound) = tokio::net::UnixStream::connect(DOCKER_SOCKET).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

const DOCKER_SOCKET: &str = "/var/run/docker.sock";

#[tokio::test]
async fn watch_survives_the_engine_going_away() {
    let Some(_) = engine().await else { return };
    if std::env::var("DOCKER_HOST").is_ok_and(|h| h != format!("unix://{DOCKER_SOCKET}")) {
        eprintln!("skipping: the engine is not at {DOCKER_SOCKET}");
        return;
    }
    let node = TestNode::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let proxy = engine_proxy(&socket);
    let docker = Docker::connect_to(&format!("unix://{}", socket.display())).unwrap();
    docker.ping().await.expect("ping through the proxy");

    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let watcher = {
        let docker = docker.clone();
        let node = node.id;
        tokio::spawn(async move {
            docker
                .watch_every(node, tx, Duration::from_millis(200))
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("initial wake-up")
        .unwrap();

    // The engine goes away: no wake-ups, and no busy loop (the test would not notice one, but
    // the backoff keeps the attempts to a handful).
    proxy.abort();
    let _ = proxy.await;
    std::fs::remove_file(&socket).unwrap();
    assert!(docker.ping().await.is_err());
    assert!(
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .is_err(),
        "a wake-up while the engine is away"
    );

    // It comes back: the watcher notices (within its backoff) and wakes the agent up to re-list.
    let proxy = engine_proxy(&socket);
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a wake-up once the engine answers again")
        .unwrap();
    eprintln!("wake-up {:?} after the engine came back", start.elapsed());
    docker
        .list(node.id)
        .await
        .expect("list after the engine came back");

    drop(rx);
    tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("watch ends when nobody listens")
        .unwrap();
    proxy.abort();
}

#[tokio::test]
async fn exit_from_inside_shows_exited_with_code_and_time() {
    let Some(docker) = engine().await else { return };
    let node = TestNode::new();
    let t = task("dt_exit", SlotKey::Replica(1), demo_spec());
    let id = docker.create(node.id, &t).await.expect("create");
    // Healthy, not just running: a running container may not listen yet, and Docker's proxy
    // then accepts the connection and closes it without an answer.
    let c = node.healthy(&docker, &id).await;
    let before = now_ms();
    let (status, _) = http(endpoint_8080(&c), "POST", "/admin/exit");
    assert_eq!(status, 200);
    let c = wait_until(
        &docker,
        node.id,
        &id,
        Duration::from_secs(10),
        "exited",
        |c| matches!(c.status, ContainerStatus::Exited { .. }),
    )
    .await;
    let ContainerStatus::Exited {
        code, finished_ms, ..
    } = c.status
    else {
        unreachable!()
    };
    assert_ne!(code, 0);
    assert!(
        finished_ms + 1_000 >= before && finished_ms <= now_ms() + 1_000,
        "finished {finished_ms}, exit asked at {before}"
    );
    assert!(c.endpoints.is_empty(), "{:?}", c.endpoints);
}

#[tokio::test]
async fn switched_off_health_becomes_unhealthy() {
    let Some(docker) = engine().await else { return };
    let node = TestNode::new();
    let t = task("dt_sick", SlotKey::Replica(1), demo_spec());
    let id = docker.create(node.id, &t).await.expect("create");
    let c = node.healthy(&docker, &id).await;
    let (status, _) = http(endpoint_8080(&c), "POST", "/admin/unhealthy");
    assert_eq!(status, 200);
    let start = Instant::now();
    // Interval 2 s, retries 2: unhealthy after about 4 s.
    wait_until(
        &docker,
        node.id,
        &id,
        Duration::from_secs(15),
        "unhealthy",
        |c| c.health == Health::Unhealthy && c.status == ContainerStatus::Running,
    )
    .await;
    eprintln!("unhealthy {:?} after /admin/unhealthy", start.elapsed());
}

#[tokio::test]
async fn missing_image_fails_fast_and_leaves_nothing() {
    let Some(docker) = engine().await else { return };
    let node = TestNode::new();
    let mut spec = demo_spec();
    spec.image = "shoal-demo:v9".to_string();
    let t = task("dt_missing", SlotKey::Replica(1), spec);
    let start = Instant::now();
    let err = docker.create(node.id, &t).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(
        err.to_string(),
        "no such image: shoal-demo:v9 (images must be on the node; shoal never pulls)"
    );
    assert!(docker.list(node.id).await.unwrap().is_empty());
    assert_eq!(inspect(&t.container_name(), "{{.Id}}"), "");
}

#[tokio::test]
async fn failed_start_leaves_nothing() {
    let Some(docker) = engine().await else { return };
    let node = TestNode::new();
    let mut spec = demo_spec();
    spec.entrypoint = Some(vec!["/no-such-program".to_string()]);
    let t = task("dt_nostart", SlotKey::Replica(1), spec);
    let err = docker.create(node.id, &t).await.unwrap_err();
    assert!(
        err.to_string().contains("no-such-program"),
        "Docker's message should say what failed: {err}"
    );
    assert!(docker.list(node.id).await.unwrap().is_empty());
    assert_eq!(inspect(&t.container_name(), "{{.Id}}"), "");
}

#[tokio::test]
async fn remove_is_idempotent() {
    let Some(docker) = engine().await else { return };
    let node = TestNode::new();
    let t = task("dt_rm", SlotKey::Replica(1), demo_spec());
    let id = docker.create(node.id, &t).await.expect("create");
    let start = Instant::now();
    docker.remove(&id, 10).await.expect("remove");
    // The demo ends on SIGTERM at once: no waiting for the stop timeout.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(docker.list(node.id).await.unwrap().is_empty());
    docker.remove(&id, 10).await.expect("remove again");
    docker
        .remove("shoal-test-no-such-container", 1)
        .await
        .expect("remove what never existed");
}

#[tokio::test]
async fn list_sees_only_its_own_node() {
    let Some(docker) = engine().await else { return };
    let (a, b) = (TestNode::new(), TestNode::new());
    let ta = task("dt_own", SlotKey::Node(a.id), demo_spec());
    let tb = task("dt_own", SlotKey::Node(b.id), demo_spec());
    let ia = docker.create(a.id, &ta).await.expect("create a");
    let ib = docker.create(b.id, &tb).await.expect("create b");
    let la = docker.list(a.id).await.unwrap();
    let lb = docker.list(b.id).await.unwrap();
    assert_eq!(la.iter().map(|c| &c.id).collect::<Vec<_>>(), [&ia]);
    assert_eq!(lb.iter().map(|c| &c.id).collect::<Vec<_>>(), [&ib]);
    // A global service's slot (a full node id) round-trips through the label.
    assert_eq!(la[0].slot, SlotKey::Node(a.id));
    assert_eq!(lb[0].slot, SlotKey::Node(b.id));
}

/// Asks the container `c` of `node` to exit, then waits at most `limit_s` for a wake-up on `rx`
/// after which the listing shows it exited; the time that took.
async fn exit_and_wait_for_the_wake_up(
    docker: &Docker,
    node: &TestNode,
    c: &LocalContainer,
    rx: &mut tokio::sync::mpsc::Receiver<()>,
    limit_s: u64,
) -> Duration {
    let (status, _) = http(endpoint_8080(c), "POST", "/admin/exit");
    assert_eq!(status, 200);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(limit_s);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, rx.recv())
            .await
            .expect("a wake-up after which the listing shows the container exited")
            .expect("the watcher runs");
        let list = docker.list(node.id).await.unwrap();
        if matches!(list[0].status, ContainerStatus::Exited { .. }) {
            return start.elapsed();
        }
    }
}

#[tokio::test]
async fn watch_wakes_up_when_a_container_dies() {
    let Some(docker) = engine().await else { return };
    let node = TestNode::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let watcher = {
        let docker = docker.clone();
        let node = node.id;
        tokio::spawn(async move { docker.watch(node, tx).await })
    };
    // One wake-up when it starts.
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("initial wake-up")
        .expect("watch running");

    let t = task("dt_watch", SlotKey::Replica(1), demo_spec());
    let id = docker.create(node.id, &t).await.expect("create");
    let c = node.running(&docker, &id).await;
    // Let the watcher see it running, then forget the wake-ups so far.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    while rx.try_recv().is_ok() {}

    // Other wake-ups may come first (the healthcheck passing).
    let took = exit_and_wait_for_the_wake_up(&docker, &node, &c, &mut rx, 5).await;
    eprintln!("wake-up {took:?} after the exit request");

    // It ends when the receiver goes away.
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("watch ends when nobody listens")
        .unwrap();
}

/// The event stream alone (no poll under it) wakes the agent when a container dies, and a wake-up
/// follows once the engine's listing shows the container exited (the listing lags `die`). Without
/// events getting through the filter no wake-up would come at all.
#[tokio::test]
async fn engine_events_alone_wake_on_a_death_once_the_listing_shows_it() {
    let Some(docker) = engine().await else { return };
    let node = TestNode::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let follower = {
        let docker = docker.clone();
        let node = node.id;
        tokio::spawn(async move { docker.follow_events(node, tx).await })
    };
    let t = task("dt_events", SlotKey::Replica(1), demo_spec());
    let id = docker.create(node.id, &t).await.expect("create");
    let c = node.running(&docker, &id).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    while rx.try_recv().is_ok() {}

    exit_and_wait_for_the_wake_up(&docker, &node, &c, &mut rx, 20).await;
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("the follower ends when nobody listens")
        .unwrap();
}
