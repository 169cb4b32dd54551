//! The shell's side of the service networks: the DNS server the replicas ask, and the kernel's
//! routes, VXLAN device and rules, kept in line with what the node hands over (`NetState`).
//! One task owns both; it coalesces bursts of changes and retries what failed (a DNS listener on
//! a bridge the engine has not made yet) every few seconds. The engine's bridges themselves are
//! the executor's (`engine.rs`), made before the creates that need them.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use super::{dns::DnsServer, netplane::Netplane};
use shoal_core::{
    identity::NodeId,
    net::plane::{self, Peer},
    node::NetState,
};

/// How often what failed is tried again.
const RETRY: Duration = Duration::from_secs(3);
/// Port of the replicas' DNS server (on each bridge's gateway address).
const DNS_PORT: u16 = 53;

/// Handle to the networks task.
pub struct Networks {
    state: watch::Sender<Option<NetState>>,
}

impl Networks {
    /// Starts the task for node `me`; `kernel`: whether to program routes and rules (off when
    /// several agents share one host, as the loopback tests do).
    pub fn start(me: NodeId, kernel: bool) -> Self {
        let upstreams = std::fs::read_to_string("/etc/resolv.conf")
            .map(|text| super::dns::host_resolvers(&text))
            .unwrap_or_default();
        let (state, rx) = watch::channel(None);
        let netplane = kernel.then(|| Arc::new(Netplane::new()));
        tokio::spawn(run(me, DnsServer::new(upstreams), netplane, rx).in_current_span());
        Networks { state }
    }

    /// The node's latest networks.
    pub fn set(&self, state: NetState) {
        self.state.send_replace(Some(state));
    }
}

async fn run(
    me: NodeId,
    dns: DnsServer,
    netplane: Option<Arc<Netplane>>,
    mut rx: watch::Receiver<Option<NetState>>,
) {
    let mut pending = false;
    let mut kernel_warned = false;
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                pending = true;
            }
            _ = tokio::time::sleep(RETRY), if pending => {}
        }
        let Some(state) = rx.borrow_and_update().clone() else {
            continue;
        };
        dns.set_view(state.view.clone());
        let gateways: Vec<SocketAddr> = state
            .local
            .iter()
            .map(|n| SocketAddr::new(IpAddr::V4(n.gateway), DNS_PORT))
            .collect();
        let failed = dns.listen_on(&gateways).await;
        pending = !failed.is_empty();
        if let Some(netplane) = &netplane {
            let netplane = netplane.clone();
            let applied = tokio::task::spawn_blocking(move || apply(&netplane, me, &state)).await;
            match applied {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    pending = true;
                    if !kernel_warned {
                        warn!(error = %e, "networks: the kernel's routes and rules could not be set \
                            (retrying; agents need root and the `ip` and `iptables` tools)");
                        kernel_warned = true;
                    }
                }
                Err(e) => warn!(error = %e, "networks: the kernel task failed"),
            }
        }
    }
    if let Some(netplane) = netplane {
        let _ = tokio::task::spawn_blocking(move || netplane.clear()).await;
    }
}

/// Routes to every live peer's subnets (direct on a shared link, VXLAN otherwise), the
/// isolation rules and the virtual addresses.
fn apply(netplane: &Netplane, me: NodeId, state: &NetState) -> Result<(), String> {
    // Peers on this very host (agents sharing it) reach its bridges without a route.
    let addrs: Vec<(NodeId, std::net::Ipv4Addr)> = state
        .peers
        .iter()
        .filter_map(|(id, ip)| match ip {
            IpAddr::V4(v4) if !v4.is_loopback() => Some((*id, *v4)),
            _ => None,
        })
        .collect();
    let ips: Vec<std::net::Ipv4Addr> = addrs.iter().map(|(_, a)| *a).collect();
    let links = super::netplane::links(netplane, &ips);
    let peers: Vec<Peer> = addrs
        .iter()
        .map(|(node, addr)| Peer {
            node: *node,
            addr: *addr,
            link: links[addr],
        })
        .collect();
    let plan = plane::plan(&state.layout, &state.view, me, &peers);
    let applied = netplane.apply(&plan).map_err(|e| e.to_string())?;
    if applied.rules_changed {
        info!(
            routes = plan.routes.len(),
            "networks: kernel routes and rules updated"
        );
    }
    Ok(())
}
