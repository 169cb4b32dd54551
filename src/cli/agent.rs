//! `shoal agent`: run a node in the foreground until SIGTERM or SIGINT.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use anyhow::Context;
use clap::Args;

use crate::agent::{self, AgentConfig};

/// Flags of `shoal agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// UDP address for gossip; QUIC uses the next port.
    #[arg(long, default_value = "127.0.0.1:7946", env = "SHOAL_LISTEN")]
    listen: SocketAddr,
    /// Address peers should use to reach this node (defaults to --listen).
    #[arg(long, env = "SHOAL_ADVERTISE")]
    advertise: Option<SocketAddr>,
    /// A member to join through (HOST:PORT); repeat to give several.
    #[arg(long = "join", value_name = "SEED:PORT")]
    join: Vec<String>,
    /// Node name (defaults to the host name).
    #[arg(long)]
    name: Option<String>,
    /// Engine label KEY=VALUE for placement constraints; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    labels: Vec<(String, String)>,
    /// Container engine for this node's replicas: `docker`, or `none` to take part in membership
    /// and desired state only.
    #[arg(long, default_value = "docker", value_parser = ["docker", "none"], env = "SHOAL_RUNTIME")]
    runtime: String,
    /// Seconds to keep trying the --join seeds before giving up.
    #[arg(long, default_value_t = 10)]
    join_timeout: u64,
    /// Address the ingress listens on for published ports (defaults to the --listen address's IP;
    /// 0.0.0.0 for every interface).
    #[arg(long, env = "SHOAL_INGRESS_ADDR", conflicts_with = "no_ingress")]
    ingress_addr: Option<IpAddr>,
    /// Serve no published ports on this node.
    #[arg(long)]
    no_ingress: bool,
    /// Program no kernel routes or firewall rules for service networks: for several agents
    /// sharing one host (their bridges are all local), or a host whose network is managed
    /// otherwise. Names still resolve; replicas on other hosts are not reachable.
    #[arg(long)]
    no_netplane: bool,
    /// The cluster's join token (`shoal cluster join-token` on a member prints it); needed only
    /// the first time a node joins.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Entry point for HTTP routers (Traefik's `traefik.http.routers.*` labels), `NAME=:PORT`
    /// or `NAME=IP:PORT`; repeatable. Default: `web=:80`.
    #[arg(long = "entrypoint", value_name = "NAME=:PORT", value_parser = agent::ingress::EntryPoint::parse)]
    entrypoints: Vec<agent::ingress::EntryPoint>,
}

/// Runs the agent with `args`.
pub fn run(data_dir: &Path, args: AgentArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let mut config = AgentConfig::new(data_dir.to_path_buf());
    config.listen = args.listen;
    config.advertise = args.advertise;
    config.join = args.join;
    config.name = args.name;
    config.labels = args.labels.into_iter().collect::<BTreeMap<_, _>>();
    config.join_timeout = Duration::from_secs(args.join_timeout);
    config.ingress_addr = args.ingress_addr;
    config.no_ingress = args.no_ingress;
    config.netplane = !args.no_netplane;
    config.token = args.token.filter(|t| !t.trim().is_empty());
    if !args.entrypoints.is_empty() {
        let (mut ports, mut names) = (
            std::collections::BTreeSet::new(),
            std::collections::BTreeSet::new(),
        );
        for e in &args.entrypoints {
            if !ports.insert(e.port) {
                anyhow::bail!("--entrypoint: two entry points on port {}", e.port);
            }
            if !names.insert(e.name.clone()) {
                anyhow::bail!("--entrypoint: entry point {} given twice", e.name);
            }
        }
        config.entrypoints = args.entrypoints;
    }
    config.runtime = if args.runtime == "none" {
        agent::RuntimeKind::None
    } else {
        agent::RuntimeKind::Docker
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        agent::run(config, shutdown_signal())
            .await
            .context("shoal agent")
    })
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
