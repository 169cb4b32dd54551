//! The agent: a thin tokio shell around the pure core's [`Node`]. It binds the sockets, loads the
//! data dir, and runs the event loop ([`shell`]) that feeds the node its inputs and carries out
//! its effects; the other tasks only move bytes: datagrams ([`run`]'s receiver), peer calls
//! ([`quic`]), CLI requests ([`local_api`]), container actions and listings ([`engine`]),
//! snapshots to disk ([`persist`]), published ports ([`ingress`]).

pub mod datadir;
pub mod dns;
pub mod engine;
pub mod framing;
pub mod ingress;
pub mod local_api;
#[cfg(target_os = "linux")]
pub mod netplane;
pub mod network;
pub mod persist;
pub mod quic;
pub mod shell;
pub mod tls;
pub mod trust;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use rand::RngExt;
use tokio::{net::UdpSocket, sync::mpsc};
use tracing::{info, info_span, warn, Instrument};

use shoal_core::{
    desired::state::DesiredState,
    format,
    identity::{NodeId, NodeIdentity, NodeMeta},
    join::JoinPlan,
    membership::Settings,
    node::{Node, NodeConfig, NodeError},
    wire,
};

/// How an agent is started (`shoal agent` flags).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the node keeps its id, peers, TLS material and API socket.
    pub data_dir: PathBuf,
    /// UDP address for gossip; QUIC binds the next port.
    pub listen: SocketAddr,
    /// Address peers should use, when it differs from `listen` (NAT, 0.0.0.0).
    pub advertise: Option<SocketAddr>,
    /// Seeds to join through (`host:port`); empty starts or resumes a cluster.
    pub join: Vec<String>,
    /// Node name; defaults to the host name.
    pub name: Option<String>,
    /// Engine labels.
    pub labels: BTreeMap<String, String>,
    /// How long to keep trying the seeds before giving up.
    pub join_timeout: Duration,
    /// Failure-detector settings.
    pub settings: Settings,
    /// Which container engine runs this node's replicas.
    pub runtime: RuntimeKind,
    /// Where the ingress listens for published ports: `None` is the `listen` address's IP (so
    /// several agents on 127.0.0.x each have their own), `Some(0.0.0.0)` every interface.
    pub ingress_addr: Option<IpAddr>,
    /// Run no ingress at all (published ports are served by the other nodes).
    pub no_ingress: bool,
    /// The cluster's join token, for a node that is not a member yet.
    pub token: Option<String>,
    /// Program the kernel's routes and firewall rules for the service networks (off when
    /// several agents share one host).
    pub netplane: bool,
    /// Entry points for HTTP routers (Traefik's static configuration), each listened on once a
    /// router serves there.
    pub entrypoints: Vec<ingress::EntryPoint>,
}

/// Which container engine an agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// The local Docker Engine (`DOCKER_HOST` or its Unix socket).
    Docker,
    /// None: the node takes part in membership and desired state but runs no replicas.
    None,
}

impl AgentConfig {
    /// Defaults that fit a single host.
    pub fn new(data_dir: PathBuf) -> Self {
        AgentConfig {
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 7946)),
            advertise: None,
            join: Vec::new(),
            name: None,
            labels: BTreeMap::new(),
            join_timeout: Duration::from_secs(10),
            settings: Settings::default(),
            runtime: RuntimeKind::Docker,
            ingress_addr: None,
            no_ingress: false,
            token: None,
            netplane: true,
            entrypoints: vec![ingress::EntryPoint::default_web()],
        }
    }
}

/// Why the agent could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data dir could not be opened, read or written.
    #[error("data dir {path}")]
    DataDir {
        /// The data dir.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A socket could not be bound.
    #[error("cannot bind {what} on {addr}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// TLS material could not be made.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The QUIC endpoint could not start.
    #[error("quic: {0}")]
    Quic(String),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The node has no trust material and could not get it (no token, a refused token, an
    /// unreachable seed), or its trust material is unusable.
    #[error("{0}")]
    Trust(String),
    /// A seed address does not resolve.
    #[error("seed {seed:?}: {reason}")]
    Seed {
        /// The address as given.
        seed: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The node stopped on its own.
    #[error(transparent)]
    Node(#[from] NodeError),
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "shoal".to_string())
}

/// For an agent listening on 0.0.0.0 without `--advertise` (the usual case in a container): the
/// first non-loopback address the host name resolves to, as Docker's /etc/hosts provides.
async fn guess_advertise(listen: SocketAddr) -> Result<SocketAddr, AgentError> {
    let name = host_name();
    let found = tokio::net::lookup_host((name.as_str(), listen.port()))
        .await
        .ok()
        .and_then(|mut addrs| addrs.find(|a| a.is_ipv4() && !a.ip().is_loopback()));
    found.ok_or_else(|| {
        AgentError::Config(format!(
            "listening on {listen} needs --advertise with an address peers can reach \
             (host name {name:?} resolves to no usable address)"
        ))
    })
}

async fn resolve_seeds(seeds: &[String]) -> Result<Vec<SocketAddr>, AgentError> {
    let mut out = Vec::new();
    for seed in seeds {
        let mut addrs =
            tokio::net::lookup_host(seed.as_str())
                .await
                .map_err(|e| AgentError::Seed {
                    seed: seed.clone(),
                    reason: e.to_string(),
                })?;
        let addr = addrs.next().ok_or_else(|| AgentError::Seed {
            seed: seed.clone(),
            reason: "resolves to no address".into(),
        })?;
        out.push(addr);
    }
    Ok(out)
}

/// Runs an agent until `shutdown` resolves, then leaves the cluster gracefully.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let data_err = |source| AgentError::DataDir {
        path: config.data_dir.clone(),
        source,
    };
    let data = datadir::DataDir::open(&config.data_dir).map_err(data_err)?;
    let state = data
        .start_generation(shell::now_ms(), || NodeId(rand::rng().random::<u128>() | 1))
        .map_err(data_err)?;
    let span = info_span!("node", node = %state.id.short());

    async move {
        let advertise = match config.advertise {
            Some(addr) => addr,
            None if config.listen.ip().is_unspecified() => guess_advertise(config.listen).await?,
            None => config.listen,
        };
        let quic_port = config.listen.port().checked_add(1).ok_or_else(|| {
            AgentError::Config("the gossip port must leave room for QUIC on port+1".into())
        })?;
        let quic_listen = SocketAddr::new(config.listen.ip(), quic_port);
        let quic_advertise = SocketAddr::new(advertise.ip(), advertise.port() + 1);

        let seeds = resolve_seeds(&config.join).await?;
        let remembered = data.load_peers();
        let trust = Arc::new(
            trust::establish(
                &data,
                trust::Start {
                    id: state.id,
                    token: config.token.as_deref(),
                    seeds: &seeds,
                    has_peers: !remembered.is_empty(),
                    timeout: config.join_timeout,
                },
            )
            .await?,
        );
        let meta = NodeMeta {
            name: config.name.clone().unwrap_or_else(host_name),
            labels: config.labels.clone(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            quic_addr: quic_advertise,
            cert_sha256: tls::fingerprint(&trust.material.node_cert_der),
            runs_containers: config.runtime == RuntimeKind::Docker,
        };
        meta.validate().map_err(AgentError::Config)?;
        let identity = NodeIdentity {
            addr: advertise,
            id: state.id,
            generation: state.generation,
            meta: Arc::new(meta),
        };

        // First, so that a second agent on the same data dir says so rather than failing to bind.
        let api = local_api::bind(&data.socket_path()).map_err(|source| AgentError::Bind {
            what: "api socket",
            addr: data.socket_path().display().to_string(),
            source,
        })?;

        let socket = UdpSocket::bind(config.listen)
            .await
            .map_err(|source| AgentError::Bind {
                what: "gossip (udp)",
                addr: config.listen.to_string(),
                source,
            })?;
        let socket = Arc::new(socket);
        let endpoint = quic::bind(quic_listen, &trust.cluster, &trust.identity)
            .map_err(|e| AgentError::Quic(format!("binding {quic_listen}: {e:#}")))?;
        let peers = quic::Peers::new(endpoint.clone(), &trust.cluster, &trust.identity)
            .map_err(|e| AgentError::Quic(format!("{e:#}")))?;
        let mut targets = seeds;
        targets.extend(remembered.iter().copied());
        targets.retain(|t| *t != advertise && *t != config.listen);
        targets.sort();
        targets.dedup();
        let join = JoinPlan::new(targets, !config.join.is_empty(), config.join_timeout);
        info!(
            name = %identity.meta.name, gossip = %advertise, quic = %quic_advertise,
            generation = identity.generation, data_dir = %config.data_dir.display(),
            seeds = ?config.join, remembered = remembered.len(), "agent starting"
        );
        let desired = load_desired(&data.desired_path()).map_err(|e| AgentError::DataDir {
            path: config.data_dir.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        info!(services = desired.services().len(), "desired state loaded");

        let (datagrams_tx, datagrams_rx) = mpsc::channel(1024);
        let (commands_tx, commands_rx) = mpsc::channel(256);
        let engine = match config.runtime {
            RuntimeKind::None => None,
            RuntimeKind::Docker => match crate::runtime::docker::Docker::connect() {
                Ok(docker) => {
                    info!("running replicas on the local Docker engine");
                    let docker = docker.with_host_address(advertise.ip());
                    Some(engine::Engine::start(state.id, docker, commands_tx.clone()))
                }
                Err(e) => {
                    return Err(AgentError::Config(format!(
                        "cannot reach Docker ({e}); start the engine, or run with --runtime none"
                    )))
                }
            },
        };
        let receiver = tokio::spawn(receive(socket.clone(), datagrams_tx).in_current_span());
        let api_task = tokio::spawn(local_api::serve(api, commands_tx.clone()).in_current_span());
        let accepted = quic::Accepted::default();
        let quic_task = tokio::spawn(
            quic::serve(
                endpoint.clone(),
                trust.cluster.clone(),
                accepted.clone(),
                commands_tx.clone(),
            )
            .in_current_span(),
        );
        let (routes_tx, routes_rx) = tokio::sync::watch::channel(Arc::default());
        let ingress_task = (!config.no_ingress).then(|| {
            let ip = config.ingress_addr.unwrap_or(config.listen.ip());
            let entrypoints = config.entrypoints.clone();
            tokio::spawn(ingress::run_with(ip, routes_rx, entrypoints).in_current_span())
        });
        let (node, first) = Node::new(
            NodeConfig {
                identity,
                settings: config.settings.clone(),
                join,
                desired,
                no_runtime: (config.runtime == RuntimeKind::None)
                    .then(|| "this agent runs no containers (--runtime none)".to_string()),
                seed: rand::rng().random(),
                keyring: trust.material.keyring.clone(),
                ca_digest: Some(trust.ca.digest()),
                init_trust: trust.init.clone(),
            },
            shell::now_ms(),
        );
        let outlets = shell::Outlets {
            socket,
            peers,
            engine,
            persister: persist::Persister::start(data.desired_path(), commands_tx.clone()),
            data: data.clone(),
            node_id: state.id,
            trust: trust.clone(),
            accepted,
            networks: network::Networks::start(state.id, config.netplane),
            routes: routes_tx,
            commands: commands_tx,
        };
        let result = shell::run(node, first, outlets, datagrams_rx, commands_rx, shutdown).await;
        receiver.abort();
        api_task.abort();
        quic_task.abort();
        if let Some(task) = ingress_task {
            // The node loop dropped the table's sender: the ingress stops its listeners and ends.
            // (Aborting it instead would leave the listener tasks it spawned running.)
            if tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .is_err()
            {
                warn!("the ingress did not stop within 1 s");
            }
        }
        let _ = std::fs::remove_file(data.socket_path());
        // Give QUIC a moment to tell peers the connection is closed.
        endpoint.close(0u32.into(), b"leaving");
        let _ = tokio::time::timeout(Duration::from_millis(200), endpoint.wait_idle()).await;
        match &result {
            Ok(()) => info!("agent stopped"),
            Err(e) => warn!(error = %e, "agent stopped"),
        }
        result.map_err(AgentError::from)
    }
    .instrument(span)
    .await
}

/// Loads the desired state from the data dir, or starts empty. A file of the release before the
/// versioned envelope is migrated and written back in the current format.
fn load_desired(path: &std::path::Path) -> Result<DesiredState, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DesiredState::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let file = format::decode_desired(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if file.legacy {
        let bytes = format::encode_desired(&file.value).map_err(|e| e.to_string())?;
        datadir::write_atomic(path, &bytes, true)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        info!(path = %path.display(), "desired state migrated to the versioned format");
    }
    Ok(file.value)
}

/// Moves datagrams from the socket to the node loop; oversized ones are dropped here.
async fn receive(socket: Arc<UdpSocket>, datagrams: mpsc::Sender<Vec<u8>>) {
    // One byte more than we accept, so that an oversized datagram is recognisable as such.
    let mut buf = vec![0u8; wire::MAX_DATAGRAM_BYTES + 64];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, from)) => {
                if len > wire::MAX_DATAGRAM_BYTES + 4 {
                    tracing::debug!(%from, len, "dropped oversized datagram");
                    continue;
                }
                if datagrams.send(buf[..len].to_vec()).await.is_err() {
                    return;
                }
            }
            // ICMP errors surface here on some platforms; they say nothing about our socket.
            Err(e) => tracing::trace!(error = %e, "recv failed"),
        }
    }
}
