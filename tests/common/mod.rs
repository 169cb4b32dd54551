//! Helpers for tests that run real `shoal` agents on loopback.
#![allow(dead_code)]

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_shoal");

/// A UDP port `p` such that `p` and `p + 1` are free on every address we use.
pub fn free_port_pair(hosts: &[&str]) -> u16 {
    free_ports(hosts, 1)
}

/// A base port `p` such that `p .. p + 2 * count` are free on every host: `count` agents, each
/// with its gossip port and QUIC port. Randomised so that tests running at once rarely collide.
pub fn free_ports(hosts: &[&str], count: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let offset = NEXT.fetch_add(64, Ordering::Relaxed);
    let mut candidate =
        20_000 + (((std::process::id() ^ nanos) % 18_000) as u16 * 2 + offset) % 36_000;
    loop {
        let free = hosts.iter().all(|h| {
            (0..count * 2).all(|k| UdpSocket::bind(format!("{h}:{}", candidate + k)).is_ok())
        });
        if free {
            return candidate;
        }
        candidate = 20_000 + (candidate - 20_000 + 2 * count) % 36_000;
    }
}

/// One agent process and its data dir.
pub struct Agent {
    pub name: String,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
    /// The first `--join` seed: a first start asks it for the cluster's join token.
    seed: Option<SocketAddr>,
}

/// Data dirs of the agents of this test process by gossip address, so that a joining agent can
/// ask its seed for the join token, as an operator would with `cluster join-token`.
static DATA_DIRS: std::sync::Mutex<Vec<(SocketAddr, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// The join token of the cluster whose member listens on `seed`, waiting (up to 15 s) for that
/// member to answer.
pub fn token_of(seed: SocketAddr) -> String {
    let dir = DATA_DIRS
        .lock()
        .unwrap()
        .iter()
        .find(|(addr, _)| *addr == seed)
        .map(|(_, dir)| dir.clone())
        .unwrap_or_else(|| panic!("no agent of this test listens on {seed}"));
    let start = Instant::now();
    loop {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(&dir)
            .args(["cluster", "join-token", "-q"])
            .output()
            .expect("run shoal cli");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the seed at {seed} gave no join token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Agent {
    pub fn new(root: &Path, name: &str, addr: SocketAddr, join: &[SocketAddr]) -> Self {
        let data_dir = root.join(name);
        let mut args = vec![
            "agent".to_string(),
            "--listen".into(),
            addr.to_string(),
            "--name".into(),
            name.into(),
            // Membership and desired-state tests run no containers; Docker tests opt in.
            "--runtime".into(),
            "none".into(),
            // Several agents share this host: their bridges are all local, and no agent may
            // rewrite the host's routes and rules for the others.
            "--no-netplane".into(),
        ];
        for seed in join {
            args.push("--join".into());
            args.push(seed.to_string());
        }
        DATA_DIRS.lock().unwrap().push((addr, data_dir.clone()));
        Agent {
            name: name.into(),
            addr,
            log: root.join(format!("{name}.log")),
            data_dir,
            child: None,
            args,
            seed: join.first().copied(),
        }
    }

    /// Makes this agent run replicas on the local Docker engine.
    pub fn with_docker(mut self) -> Self {
        if let Some(i) = self.args.iter().position(|a| a == "none") {
            self.args[i] = "docker".into();
        }
        self
    }

    /// Starts (or restarts) the process with the same data dir. A first start with a seed asks
    /// the seed for the join token; a restart needs none.
    /// Adds agent flags (`--entrypoint web=:8081`...).
    pub fn with_args(mut self, extra: &[&str]) -> Self {
        self.args.extend(extra.iter().map(|a| a.to_string()));
        self
    }

    /// Starts (or restarts) the process with the same data dir.
    pub fn start(&mut self) {
        let member = self.data_dir.join("trust").join("node.crt").exists();
        let token = match self.seed {
            Some(seed) if !member => Some(token_of(seed)),
            _ => None,
        };
        self.start_with_token(token.as_deref());
    }

    /// Starts the process with `token` (or none) as its join token.
    pub fn start_with_token(&mut self, token: Option<&str>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(BIN);
        if let Some(token) = token {
            command.env("SHOAL_TOKEN", token);
        }
        let child = command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env("SHOAL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn shoal agent");
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn sigterm(&mut self) {
        if let Some(mut c) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()
                .unwrap();
            let status = c.wait().unwrap();
            assert!(status.success(), "agent exited with {status} after SIGTERM");
        }
    }

    /// `node ls --format json` through this agent, or None if it does not answer.
    pub fn nodes(&self) -> Option<Vec<Value>> {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["node", "ls", "--format", "json"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Status of the node called `name`, as this agent sees it.
    pub fn status_of(&self, name: &str) -> Option<String> {
        self.nodes()?
            .into_iter()
            .find(|n| n["name"] == name)
            .map(|n| n["status"].as_str().unwrap_or_default().to_string())
    }

    /// Runs `shoal --data-dir DIR ARGS...` against this agent.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .output()
            .expect("run shoal cli")
    }

    /// `service ls --format json`, or None if the agent does not answer.
    pub fn services(&self) -> Option<Vec<Value>> {
        let out = self.cli(&["service", "ls", "--format", "json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Desired replicas of `service` as this agent sees it.
    pub fn replicas_of(&self, service: &str) -> Option<u64> {
        self.services()?
            .into_iter()
            .find(|s| s["name"] == service)
            .and_then(|s| s["replicas"].as_u64())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns the time it took.
pub fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Whether every agent in `agents` sees exactly `expected` nodes, all ready.
pub fn all_ready(agents: &[Agent], expected: usize) -> bool {
    agents.iter().all(|a| {
        a.nodes().is_some_and(|nodes| {
            nodes.len() == expected && nodes.iter().all(|n| n["status"] == "ready")
        })
    })
}

/// Whether a Docker engine answers, with the images the tests use. Without one the test should
/// return early (skip) — except under `CI=true`, where a missing engine is a failure.
pub fn docker_ready() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and no Docker engine answers (`docker info` failed)");
        }
        eprintln!("skipping: no Docker engine answers (`docker info` failed)");
        return false;
    }
    let have = |image: &str| {
        Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !have("shoal-demo:v1") || !have("shoal-demo:v2") {
        let root = env!("CARGO_MANIFEST_DIR");
        let status = Command::new("flock")
            .arg(std::env::temp_dir().join("shoal-build-images.lock"))
            .arg("bash")
            .arg(format!("{root}/testnet/build-images"))
            .current_dir(root)
            .status()
            .expect("run testnet/build-images");
        assert!(status.success(), "testnet/build-images failed");
    }
    true
}

/// Removes every container labelled with one of `node_ids` when dropped, so a failing Docker
/// test leaves nothing behind. Drop it after the agents (declare it before them, or drop them
/// first): a live agent replaces what the guard removes. A create the engine was still carrying
/// out when its agent died shows up late, so the guard looks again until a look finds nothing.
pub struct ContainerGuard(pub Vec<String>);

impl ContainerGuard {
    /// Removes the containers now listed; how many there were.
    fn sweep(&self) -> usize {
        // (One `ps` per node: several label filters would have to match together.)
        let ids: Vec<String> = self
            .0
            .iter()
            .filter_map(|id| {
                Command::new("docker")
                    .args([
                        "ps",
                        "-aq",
                        "--filter",
                        &format!("label=io.shoal.node={id}"),
                    ])
                    .output()
                    .ok()
            })
            .flat_map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&ids)
                .output();
        }
        ids.len()
    }
}

impl ContainerGuard {
    /// Removes the engine networks of the guarded nodes (once their containers are gone): the
    /// next test's cluster allocates the same subnets, which the engine refuses to overlap.
    fn sweep_networks(&self) {
        for id in &self.0 {
            let filter = format!("label=io.shoal.node={id}");
            let Ok(out) = Command::new("docker")
                .args(["network", "ls", "-q", "--filter", &filter])
                .output()
            else {
                return;
            };
            for net in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["network", "rm", net]).output();
            }
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        for _ in 0..10 {
            if self.sweep() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        self.sweep_networks();
    }
}

/// Full node id of this agent (from `node ls`).
pub fn self_id(agent: &Agent) -> String {
    agent
        .nodes()
        .and_then(|nodes| nodes.into_iter().find(|n| n["self"] == true))
        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
        .expect("agent answers node ls")
}

/// `service ps SERVICE --format json` through `agent`.
pub fn tasks(agent: &Agent, service: &str) -> Vec<Value> {
    let out = agent.cli(&["service", "ps", service, "--format", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Five loopback addresses, for a five-agent cluster on one machine.
pub const FIVE_HOSTS: [&str; 5] = [
    "127.0.0.1",
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
    "127.0.0.5",
];

/// Starts `agents` and waits (at most `within`) until every one sees all of them ready.
pub fn start_cluster(mut agents: Vec<Agent>, within: Duration) -> Vec<Agent> {
    for a in agents.iter_mut() {
        a.start();
    }
    let n = agents.len();
    assert!(
        wait_for(within, || all_ready(&agents, n)).is_some(),
        "the cluster of {n} did not form; first agent's log:\n{}",
        agents[0].log()
    );
    agents
}

/// Agents (not started) on `hosts`, one port for all, each joining through the first; named
/// `{prefix}1`, `{prefix}2`, ...
pub fn agents_on(root: &Path, hosts: &[&str], prefix: &str) -> Vec<Agent> {
    let port = free_ports(hosts, 1);
    let addrs: Vec<SocketAddr> = hosts
        .iter()
        .map(|h| format!("{h}:{port}").parse().unwrap())
        .collect();
    addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let join = if i == 0 { vec![] } else { vec![addrs[0]] };
            Agent::new(root, &format!("{prefix}{}", i + 1), a, &join)
        })
        .collect()
}

/// Resident memory (KiB) and CPU time (clock ticks, user + system) of process `pid`.
pub fn proc_stat(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    (rss_kb, ticks)
}

/// An HTTP answer read off the wire.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    /// Every value of header `name` (case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), with `headers` and a form
/// `body`; the whole answer, or the IO error.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<HttpAnswer> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not HTTP: {text:?}"),
        )
    })?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, head.to_string()))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// A TCP port free on every one of `hosts` right now.
pub fn free_tcp_port(hosts: &[&str]) -> u16 {
    loop {
        let port = std::net::TcpListener::bind(format!("{}:0", hosts[0]))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if hosts
            .iter()
            .all(|h| std::net::TcpListener::bind(format!("{h}:{port}")).is_ok())
        {
            return port;
        }
    }
}
